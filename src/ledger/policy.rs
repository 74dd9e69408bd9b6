//! Pure policy: a user's effective access at a state and time, and spawn decisions.
//!
//! No I/O and no locks: callers pass the `State` snapshot to evaluate. The default is
//! deny: a user with no active grant gets no socket, no privileged flag and zero
//! limits. Combination rules (DESIGN §2): socket raw > limited > none; mode rw if any
//! raw grant is rw; privileged ORs; limits take the per-field maximum over limited
//! grants and are all zero unless the effective socket is limited.

use std::collections::BTreeSet;

use super::event::{
    EffectiveLimits, GrantSpec, Seq, SocketAccess, SocketMode, SpawnDecision, UnixNanos,
};
use super::state::State;
use super::SpawnConfig;

/// One grant that reaches the user.
#[derive(Debug, Clone, PartialEq)]
pub struct Contribution {
    pub grant_id: Seq,
    /// The group the grant reaches the user through; `None` for a direct grant.
    pub via_group: Option<String>,
    pub spec: GrantSpec,
    pub expires_at_ns: Option<UnixNanos>,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Access {
    pub user: String,
    pub socket: SocketAccess,
    pub socket_mode: SocketMode,
    pub privileged: bool,
    pub limits: EffectiveLimits,
    pub provenance: Vec<Contribution>,
    /// The ledger position evaluated at.
    pub seq: Seq,
    /// The time expiry was judged at.
    pub evaluated_at_ns: UnixNanos,
}

impl Access {
    /// True when any privilege is granted.
    pub fn any(&self) -> bool {
        self.socket != SocketAccess::None || self.privileged
    }
}

/// Effective access of `user` in `state`, judging expiry at `at_ns`.
pub fn evaluate(state: &State, user: &str, at_ns: UnixNanos) -> Access {
    let mut provenance = Vec::new();
    let mut push = |ids: Option<&imbl::OrdSet<Seq>>, via: Option<&String>| {
        for id in ids.into_iter().flat_map(|s| s.iter()) {
            if let Some(g) = state.grant(*id) {
                if g.is_active_at(at_ns) {
                    provenance.push(Contribution {
                        grant_id: g.id,
                        via_group: via.cloned(),
                        spec: g.spec,
                        expires_at_ns: g.expires_at_ns,
                        reason: g.reason.clone(),
                    });
                }
            }
        }
    };
    push(state.open_user_grant_ids(user), None);
    if let Some(groups) = state.groups_of(user) {
        for g in groups.iter() {
            push(state.open_group_grant_ids(g), Some(g));
        }
    }
    combine(user, provenance, state.seq, at_ns)
}

fn combine(user: &str, provenance: Vec<Contribution>, seq: Seq, at_ns: UnixNanos) -> Access {
    let mut socket = SocketAccess::None;
    let mut rw = false;
    let mut privileged = false;
    let mut limits: Option<EffectiveLimits> = None;
    for c in &provenance {
        socket = socket.max(c.spec.socket);
        privileged |= c.spec.privileged;
        match c.spec.socket {
            SocketAccess::Raw => rw |= c.spec.socket_mode == SocketMode::Rw,
            SocketAccess::Limited => {
                let l = c.spec.limits.resolved();
                limits = Some(limits.map_or(l, |acc| acc.max(l)));
            }
            SocketAccess::None => {}
        }
    }
    Access {
        user: user.to_string(),
        socket,
        socket_mode: if rw { SocketMode::Rw } else { SocketMode::Ro },
        privileged,
        limits: if socket == SocketAccess::Limited {
            limits.unwrap_or_default()
        } else {
            EffectiveLimits::default()
        },
        provenance,
        seq,
        evaluated_at_ns: at_ns,
    }
}

/// Every user with any access, sorted by name.
pub fn who_has_access(state: &State, at_ns: UnixNanos) -> Vec<Access> {
    let mut users: BTreeSet<&String> = state.users_with_direct_grants().collect();
    for g in state.groups_with_grants() {
        if let Some(gs) = state.group(g) {
            users.extend(gs.members.iter());
        }
    }
    users
        .into_iter()
        .map(|u| evaluate(state, u, at_ns))
        .filter(Access::any)
        .collect()
}

/// The decision for a spawn, to be recorded at `seq` (evaluated against `state`,
/// which is the ledger as of `seq - 1`).
pub fn decide(
    state: &State,
    user: &str,
    server_name: &str,
    image: &str,
    seq: Seq,
    time_ns: UnixNanos,
    cfg: &SpawnConfig,
) -> SpawnDecision {
    let access = evaluate(state, user, time_ns);
    // `<ledger id>-<seq>`: unique across ledgers sharing one Docker daemon.
    let decision_id = format!("{}-{seq}", state.ledger_id());
    let mut binds = Vec::new();
    let mut env = Vec::new();
    match access.socket {
        SocketAccess::Raw => binds.push(format!(
            "{}:{}:{}",
            cfg.host_socket,
            cfg.container_socket,
            access.socket_mode.as_str()
        )),
        SocketAccess::Limited => {
            binds.push(format!(
                "{}/{}/docker.sock:{}:rw",
                cfg.limited_host_dir.trim_end_matches('/'),
                escape_path_component(user),
                cfg.limited_container_socket
            ));
            env.push((
                "DOCKER_HOST".to_string(),
                format!("unix://{}", cfg.limited_container_socket),
            ));
        }
        SocketAccess::None => {}
    }
    let labels = vec![
        (
            crate::ledger::LABEL_DECISION.to_string(),
            decision_id.clone(),
        ),
        (crate::ledger::LABEL_USER.to_string(), user.to_string()),
    ];
    let reason = describe(&access);
    SpawnDecision {
        decision_id,
        user: user.to_string(),
        server_name: server_name.to_string(),
        image: image.to_string(),
        evaluated_at_seq: state.seq,
        allowed: access.any(),
        reason,
        socket: access.socket,
        socket_mode: access.socket_mode,
        privileged: access.privileged,
        limits: access.limits,
        grants: access
            .provenance
            .iter()
            .map(|c| (c.grant_id, c.via_group.clone().unwrap_or_default()))
            .collect(),
        binds,
        env,
        labels,
    }
}

/// A one-line human explanation of an access answer.
pub fn describe(a: &Access) -> String {
    if !a.any() {
        return format!("no active grant gives user {:?} Docker privileges", a.user);
    }
    let mut what = Vec::new();
    match a.socket {
        SocketAccess::Raw => what.push(format!("raw socket ({})", a.socket_mode.as_str())),
        SocketAccess::Limited => what.push("limited socket".to_string()),
        SocketAccess::None => {}
    }
    if a.privileged {
        what.push("privileged".to_string());
    }
    let via: Vec<String> = a
        .provenance
        .iter()
        .map(|c| match &c.via_group {
            Some(g) => format!("grant {} via group {g:?}", c.grant_id),
            None => format!("grant {} to the user", c.grant_id),
        })
        .collect();
    format!("{} from {}", what.join(" + "), via.join(", "))
}

/// Makes a username safe as one path component: keeps `[A-Za-z0-9._@-]`, writes any
/// other byte as `%XX`.
pub fn escape_path_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b'-') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out == "." || out == ".." {
        out = out.replace('.', "%2E");
    }
    out
}
