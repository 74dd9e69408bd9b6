//! Pure policy: a user's effective access at a state and time, and spawn decisions.
//!
//! No I/O and no locks: callers pass the `State` snapshot to evaluate. The default is
//! deny: a user with no active grant gets no socket, no privileged flag and zero
//! limits. Combination rules (DESIGN §2): socket raw > limited > none; mode rw if any
//! raw grant is rw; privileged ORs; limits take the per-field maximum over limited
//! grants and are all zero unless the effective socket is limited.

use std::fmt;
use std::sync::Arc;

use super::event::{EffectiveLimits, Seq, SocketAccess, SocketMode, SpawnDecision, UnixNanos};
use super::fold::Fold;
use super::state::{GrantState, State};
use super::SpawnConfig;

/// One grant that reaches the user.
#[derive(Debug, Clone, Copy)]
pub struct Contribution<'a> {
    pub grant: &'a GrantState,
    /// The group the grant reaches the user through; `None` for a direct grant.
    pub via_group: Option<&'a str>,
}

/// A user's effective access. It keeps the state it was evaluated against, so the
/// provenance is walked only when somebody reads it.
#[derive(Clone)]
pub struct Access {
    pub user: String,
    pub socket: SocketAccess,
    pub socket_mode: SocketMode,
    pub privileged: bool,
    pub limits: EffectiveLimits,
    /// The ledger position evaluated at.
    pub seq: Seq,
    /// The time expiry was judged at.
    pub evaluated_at_ns: UnixNanos,
    state: Arc<State>,
}

impl Access {
    /// True when any privilege is granted.
    pub fn any(&self) -> bool {
        self.socket != SocketAccess::None || self.privileged
    }

    /// The grants that reach the user: direct grants first, then by group in order of
    /// the group's creation, each by grant id.
    pub fn provenance(&self) -> impl Iterator<Item = Contribution<'_>> {
        contributions(&self.state, &self.user, self.evaluated_at_ns)
    }
}

impl fmt::Debug for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Access")
            .field("user", &self.user)
            .field("socket", &self.socket)
            .field("socket_mode", &self.socket_mode)
            .field("privileged", &self.privileged)
            .field("limits", &self.limits)
            .field("seq", &self.seq)
            .field("evaluated_at_ns", &self.evaluated_at_ns)
            .field(
                "provenance",
                &self
                    .provenance()
                    .map(|c| (c.grant.id, c.via_group))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// Effective access of `user` in `state`, judging expiry at `at_ns`.
pub fn evaluate(state: &Arc<State>, user: &str, at_ns: UnixNanos) -> Access {
    let f = fold(state, user, at_ns);
    Access {
        user: user.to_string(),
        socket: f.socket,
        socket_mode: f.socket_mode(),
        privileged: f.privileged,
        limits: f.effective_limits(),
        seq: state.seq,
        evaluated_at_ns: at_ns,
        state: state.clone(),
    }
}

/// The combination of every grant reaching `user`: one user lookup, then one
/// precomputed fold per source.
pub(super) fn fold(state: &State, user: &str, at_ns: UnixNanos) -> Fold {
    let mut f = Fold::default();
    let Some(slot) = state.user_slot(user) else {
        return f;
    };
    if let Some(set) = &slot.grants {
        f.merge(&set.fold_at(at_ns));
    }
    let mut limited_groups = false;
    for &g in slot.groups.iter() {
        let s = state.group_summary(g);
        if !s.any {
            continue;
        }
        if s.holds_at(at_ns) {
            f.merge_summary(s);
            limited_groups |= s.socket == SocketAccess::Limited;
        } else if let Some(set) = &state.group_slot(g).grants {
            // Some grant of the group has expired by `at_ns` (no entry says so yet,
            // or this is a point-in-time query): fold its grants one by one.
            f.merge(&set.fold_at(at_ns));
        }
    }
    // Limits count only when the answer is a limited socket; only then are the
    // limited groups' sets read.
    if limited_groups && f.socket == SocketAccess::Limited {
        for &g in slot.groups.iter() {
            let s = state.group_summary(g);
            if s.any && s.holds_at(at_ns) && s.socket == SocketAccess::Limited {
                if let Some(set) = &state.group_slot(g).grants {
                    f.merge(&set.fold_at(at_ns));
                }
            }
        }
    }
    f
}

/// Every grant that reaches `user` in `state` and is active at `at_ns`.
pub(super) fn contributions<'a>(
    state: &'a State,
    user: &str,
    at_ns: UnixNanos,
) -> impl Iterator<Item = Contribution<'a>> + 'a {
    let slot = state.user_slot(user);
    let direct = slot
        .and_then(|s| s.grants.as_deref())
        .into_iter()
        .flat_map(move |set| set.active_at(at_ns))
        .map(|grant| Contribution {
            grant,
            via_group: None,
        });
    let via = slot
        .into_iter()
        .flat_map(|s| s.groups.iter())
        .flat_map(move |&g| {
            let gs = state.group_slot(g);
            gs.grants
                .as_deref()
                .into_iter()
                .flat_map(move |set| set.active_at(at_ns))
                .map(move |grant| Contribution {
                    grant,
                    via_group: Some(&*gs.name),
                })
        });
    direct.chain(via)
}

/// Every user with any access, sorted by name.
pub fn who_has_access(state: &Arc<State>, at_ns: UnixNanos) -> Vec<Access> {
    let mut users: Vec<&str> = state
        .user_slots()
        .filter(|u| u.grants.is_some())
        .map(|u| &*u.name)
        .collect();
    for g in state.group_slots() {
        if let (Some(group), Some(_)) = (&g.group, &g.grants) {
            users.extend(state.members(group));
        }
    }
    users.sort_unstable();
    users.dedup();
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
    let f = fold(state, user, time_ns);
    let socket_mode = f.socket_mode();
    // `<ledger id>-<seq>`: unique across ledgers sharing one Docker daemon.
    let decision_id = format!("{}-{seq}", state.ledger_id());
    let mut binds = Vec::new();
    let mut env = Vec::new();
    match f.socket {
        SocketAccess::Raw => binds.push(format!(
            "{}:{}:{}",
            cfg.host_socket,
            cfg.container_socket,
            socket_mode.as_str()
        )),
        SocketAccess::Limited => {
            // The user's directory, not the socket file: the proxy re-creates the
            // file when it restarts, and a bind of the file would keep the dead inode.
            binds.push(format!(
                "{}:{}:rw",
                limited_user_dir(&cfg.limited_host_dir, user),
                parent_dir(&cfg.limited_container_socket)
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
    let provenance: Vec<Contribution<'_>> = contributions(state, user, time_ns).collect();
    let reason = describe(user, &f, provenance.iter().copied());
    SpawnDecision {
        decision_id,
        user: user.to_string(),
        server_name: server_name.to_string(),
        image: image.to_string(),
        evaluated_at_seq: state.seq,
        allowed: f.any(),
        reason,
        socket: f.socket,
        socket_mode,
        privileged: f.privileged,
        limits: f.effective_limits(),
        grants: provenance
            .iter()
            .map(|c| (c.grant.id, c.via_group.unwrap_or_default().to_string()))
            .collect(),
        binds,
        env,
        labels,
    }
}

/// How many grants a decision's reason names.
const REASON_GRANTS: usize = 3;

/// A one-line human explanation of an access answer.
fn describe<'a>(
    user: &str,
    f: &Fold,
    provenance: impl Iterator<Item = Contribution<'a>>,
) -> String {
    if !f.any() {
        return format!("no active grant gives user {user:?} Docker privileges");
    }
    let mut what = Vec::new();
    match f.socket {
        SocketAccess::Raw => what.push(format!("raw socket ({})", f.socket_mode().as_str())),
        SocketAccess::Limited => what.push("limited socket".to_string()),
        SocketAccess::None => {}
    }
    if f.privileged {
        what.push("privileged".to_string());
    }
    // The decision lists every grant; the reason names the first few, so a user
    // reached by dozens of grants does not get a kilobyte of prose in every entry.
    let mut via = Vec::new();
    let mut more = 0;
    for c in provenance {
        if via.len() == REASON_GRANTS {
            more += 1;
            continue;
        }
        via.push(match c.via_group {
            Some(g) => format!("grant {} via group {g:?}", c.grant.id),
            None => format!("grant {} to the user", c.grant.id),
        });
    }
    if more > 0 {
        via.push(format!("{more} more"));
    }
    format!("{} from {}", what.join(" + "), via.join(", "))
}

/// The host directory holding `user`'s limited socket (`DIR/USER`, escaped).
pub fn limited_user_dir(limited_host_dir: &str, user: &str) -> String {
    format!(
        "{}/{}",
        limited_host_dir.trim_end_matches('/'),
        escape_path_component(user)
    )
}

/// `/run/privledger` of `/run/privledger/docker.sock`.
fn parent_dir(path: &str) -> &str {
    match path.rsplit_once('/') {
        Some(("", _)) | None => "/",
        Some((dir, _)) => dir,
    }
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
