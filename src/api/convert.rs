//! Conversions between protobuf messages and ledger types; the only file that knows
//! both. Requests are checked here (`TryFrom`-style functions returning
//! `RequestError`, which is INVALID_ARGUMENT); responses are built with plain functions.

use prost_types::Timestamp;

use super::error::RequestError;

use crate::ledger::event::{
    EffectiveLimits, GrantSpec, Limits, PublishPorts, Role, Seq, SocketAccess, SocketMode,
    SpawnDecision, Subject, UnixNanos,
};
use crate::ledger::intervals::{Report, Span};
use crate::ledger::policy::{Access, Contribution};
use crate::ledger::state::{EndKind, GrantState, State, TokenState};
use crate::ledger::{At, EntryRecord};
use crate::pb;

// === requests ===

/// A protobuf enum value, or the error naming `field` when it is not one.
fn known<E: TryFrom<i32>>(field: &'static str, v: i32) -> Result<E, RequestError> {
    E::try_from(v).map_err(|_| RequestError::UnknownEnum { field, value: v })
}

pub fn socket_access(v: i32) -> Result<SocketAccess, RequestError> {
    Ok(match known("socket access", v)? {
        pb::SocketAccess::Unspecified | pb::SocketAccess::None => SocketAccess::None,
        pb::SocketAccess::Raw => SocketAccess::Raw,
        pb::SocketAccess::Limited => SocketAccess::Limited,
    })
}

pub fn socket_mode(v: i32) -> Result<SocketMode, RequestError> {
    Ok(match known("socket mode", v)? {
        pb::SocketMode::Unspecified | pb::SocketMode::Rw => SocketMode::Rw,
        pb::SocketMode::Ro => SocketMode::Ro,
    })
}

pub fn role(v: i32) -> Result<Role, RequestError> {
    match known("role", v)? {
        pb::Role::Admin => Ok(Role::Admin),
        pb::Role::Spawner => Ok(Role::Spawner),
        pb::Role::Auditor => Ok(Role::Auditor),
        pb::Role::Sync => Ok(Role::Sync),
        pb::Role::Watcher => Ok(Role::Watcher),
        pb::Role::Unspecified => Err(RequestError::Missing("a role (admin, spawner or auditor)")),
    }
}

pub fn subject(s: Option<pb::Subject>) -> Result<Subject, RequestError> {
    match s.and_then(|s| s.kind) {
        Some(pb::subject::Kind::User(u)) => Ok(Subject::User(u)),
        Some(pb::subject::Kind::Group(g)) => Ok(Subject::Group(g)),
        None => Err(RequestError::Missing("a subject (user or group)")),
    }
}

pub fn grant_spec(s: Option<pb::GrantSpec>) -> Result<GrantSpec, RequestError> {
    let s = s.ok_or(RequestError::Missing("a grant spec"))?;
    let l = s.limits.unwrap_or_default();
    Ok(GrantSpec {
        socket: socket_access(s.socket)?,
        socket_mode: socket_mode(s.socket_mode)?,
        privileged: s.privileged,
        limits: Limits {
            max_containers: l.max_containers,
            max_volumes: l.max_volumes,
            max_networks: l.max_networks,
            max_storage_gb: l.max_storage_gb,
            cpu_cap_cores: l.cpu_cap_cores,
            mem_cap_gb: l.mem_cap_gb,
            allow_dangerous_flags: l.allow_dangerous_flags,
            max_pids: l.max_pids,
            publish: l
                .publish
                .map(|p| {
                    p.parse::<PublishPorts>().map_err(|_| {
                        RequestError::Invalid(format!(
                            "limits.publish {p:?}: expected {}",
                            PublishPorts::expected()
                        ))
                    })
                })
                .transpose()?,
            allow_build: l.allow_build,
            pull_allow: l.pull_allow,
            push_allow: l.push_allow,
        },
    })
}

pub fn time_ns(t: &Timestamp) -> Result<UnixNanos, RequestError> {
    if !(0..1_000_000_000).contains(&t.nanos) {
        return Err(RequestError::NanosOutOfRange(t.nanos));
    }
    t.seconds
        .checked_mul(1_000_000_000)
        .and_then(|s| s.checked_add(i64::from(t.nanos)))
        .ok_or(RequestError::SecondsOutOfRange(t.seconds))
}

pub fn position(p: Option<pb::Position>) -> Result<Option<At>, RequestError> {
    match p.and_then(|p| p.at) {
        None => Ok(None),
        Some(pb::position::At::Seq(s)) => Ok(Some(At::Seq(s))),
        Some(pb::position::At::Time(t)) => Ok(Some(At::Time(time_ns(&t)?))),
    }
}

/// An optional request_id: empty means none.
pub fn request_id(r: String) -> Option<String> {
    (!r.is_empty()).then_some(r)
}

// === responses ===

/// Whether writes are taken, and why not (for HeadResponse).
pub fn write_status(s: &crate::ledger::WriteStatus) -> (bool, String) {
    use crate::ledger::WriteStatus;
    match s {
        WriteStatus::Writable => (true, String::new()),
        WriteStatus::Stalled { reason, since_ns } => (
            false,
            format!(
                "storage cannot write since {}: {reason}; retrying by itself",
                crate::ledger::format_time(*since_ns)
            ),
        ),
        WriteStatus::ReadOnly { reason } => (
            false,
            match reason {
                Some(r) => format!("read-only for forensics; the store is {r}"),
                None => "read-only for forensics".into(),
            },
        ),
        WriteStatus::Stopped => (false, "the ledger is shutting down".into()),
    }
}

pub fn timestamp(ns: UnixNanos) -> Timestamp {
    Timestamp {
        seconds: ns.div_euclid(1_000_000_000),
        nanos: ns.rem_euclid(1_000_000_000) as i32,
    }
}

fn pb_socket(s: SocketAccess) -> i32 {
    match s {
        SocketAccess::None => pb::SocketAccess::None,
        SocketAccess::Raw => pb::SocketAccess::Raw,
        SocketAccess::Limited => pb::SocketAccess::Limited,
    }
    .into()
}

fn pb_mode(m: SocketMode) -> i32 {
    match m {
        SocketMode::Rw => pb::SocketMode::Rw,
        SocketMode::Ro => pb::SocketMode::Ro,
    }
    .into()
}

pub fn pb_role(r: Role) -> i32 {
    match r {
        Role::Admin => pb::Role::Admin,
        Role::Spawner => pb::Role::Spawner,
        Role::Auditor => pb::Role::Auditor,
        Role::Sync => pb::Role::Sync,
        Role::Watcher => pb::Role::Watcher,
    }
    .into()
}

pub fn pb_subject(s: &Subject) -> pb::Subject {
    pb::Subject {
        kind: Some(match s {
            Subject::User(u) => pb::subject::Kind::User(u.clone()),
            Subject::Group(g) => pb::subject::Kind::Group(g.clone()),
        }),
    }
}

pub fn pb_spec(s: &GrantSpec) -> pb::GrantSpec {
    let l = &s.limits;
    pb::GrantSpec {
        socket: pb_socket(s.socket),
        socket_mode: pb_mode(s.socket_mode),
        privileged: s.privileged,
        limits: (!l.is_empty()).then_some(pb::Limits {
            max_containers: l.max_containers,
            max_volumes: l.max_volumes,
            max_networks: l.max_networks,
            max_storage_gb: l.max_storage_gb,
            cpu_cap_cores: l.cpu_cap_cores,
            mem_cap_gb: l.mem_cap_gb,
            allow_dangerous_flags: l.allow_dangerous_flags,
            max_pids: l.max_pids,
            publish: l.publish.map(|p| p.as_str().to_string()),
            allow_build: l.allow_build,
            pull_allow: l.pull_allow.clone(),
            push_allow: l.push_allow.clone(),
        }),
    }
}

pub fn pb_limits(l: &EffectiveLimits) -> pb::EffectiveLimits {
    pb::EffectiveLimits {
        max_containers: l.max_containers,
        max_volumes: l.max_volumes,
        max_networks: l.max_networks,
        max_storage_gb: l.max_storage_gb,
        cpu_cap_cores: l.cpu_cap_cores,
        mem_cap_gb: l.mem_cap_gb,
        allow_dangerous_flags: l.allow_dangerous_flags,
        max_pids: l.max_pids,
        publish: if *l == EffectiveLimits::default() {
            String::new()
        } else {
            l.publish.as_str().to_string()
        },
        allow_build: l.allow_build,
        pull_allow: l.pull_allow.clone(),
        push_allow: l.push_allow.clone(),
    }
}

pub fn pb_grant(g: &GrantState) -> pb::Grant {
    let (status, ended_seq, ended_reason) = match &g.ended {
        None => (pb::GrantStatus::Active, None, String::new()),
        Some(e) => (
            match e.kind {
                EndKind::Expired => pb::GrantStatus::Expired,
                EndKind::Revoked | EndKind::GroupDeleted => pb::GrantStatus::Revoked,
            },
            Some(e.seq),
            e.reason.clone(),
        ),
    };
    pb::Grant {
        id: g.id,
        subject: Some(pb_subject(&g.subject)),
        spec: Some(pb_spec(&g.spec)),
        expires_at: g.expires_at_ns.map(timestamp),
        reason: g.reason.clone(),
        issued_by: g.issued_by.clone(),
        issued_at: Some(timestamp(g.issued_at_ns)),
        status: status.into(),
        ended_seq,
        ended_reason,
        builtin: g.builtin,
        replayed: false,
    }
}

fn pb_contribution(c: Contribution<'_>) -> pb::Contribution {
    pb_contribution_of(c.grant, c.via_group.unwrap_or_default())
}

fn pb_contribution_of(g: &GrantState, via_group: &str) -> pb::Contribution {
    pb::Contribution {
        grant_id: g.id,
        via_group: via_group.to_string(),
        spec: Some(pb_spec(&g.spec)),
        expires_at: g.expires_at_ns.map(timestamp),
        reason: g.reason.clone(),
    }
}

pub fn pb_intervals(r: &Report) -> pb::AccessIntervalsResponse {
    pb::AccessIntervalsResponse {
        intervals: r.spans.iter().map(pb_interval).collect(),
        from_seq: r.from_seq,
        from: Some(timestamp(r.from_ns)),
        to_seq: r.to_seq,
        to: Some(timestamp(r.to_ns)),
    }
}

fn pb_interval(s: &Span) -> pb::AccessInterval {
    pb::AccessInterval {
        user: s.user.clone(),
        from_seq: s.from_seq,
        from: Some(timestamp(s.from_ns)),
        began_before: s.began_before,
        to_seq: s.to.map(|(seq, _)| seq),
        to: s.to.map(|(_, ns)| timestamp(ns)),
        socket: pb_socket(s.socket),
        socket_mode: pb_mode(if s.rw { SocketMode::Rw } else { SocketMode::Ro }),
        privileged: s.privileged,
        grants: s
            .grants
            .iter()
            .map(|g| pb_contribution_of(&g.grant, g.via_group.as_deref().unwrap_or_default()))
            .collect(),
        held: !s.containers.is_empty(),
        containers: s
            .containers
            .iter()
            .map(|c| pb::HeldContainer {
                id: c.id.clone(),
                name: c.name.clone(),
            })
            .collect(),
    }
}

pub fn pb_access(a: &Access) -> pb::Access {
    pb_access_with(a, true)
}

pub fn pb_access_with(a: &Access, provenance: bool) -> pb::Access {
    pb::Access {
        user: a.user.clone(),
        socket: pb_socket(a.socket),
        socket_mode: pb_mode(a.socket_mode),
        privileged: a.privileged,
        limits: Some(pb_limits(&a.limits)),
        provenance: if provenance {
            a.provenance().map(pb_contribution).collect()
        } else {
            Vec::new()
        },
        seq: a.seq,
        evaluated_at: Some(timestamp(a.evaluated_at_ns)),
    }
}

/// A recorded decision as an answer; provenance details come from `state`, which
/// keeps every grant ever issued.
pub fn pb_decision(
    d: &SpawnDecision,
    seq: Seq,
    time_ns: UnixNanos,
    state: &State,
    replayed: bool,
) -> pb::Decision {
    let provenance = d
        .grants
        .iter()
        .filter_map(|(id, via)| state.grant(*id).map(|g| pb_contribution_of(g, via)))
        .collect();
    pb::Decision {
        decision_id: d.decision_id.clone(),
        seq,
        evaluated_at_seq: d.evaluated_at_seq,
        allowed: d.allowed,
        reason: d.reason.clone(),
        access: Some(pb::Access {
            user: d.user.clone(),
            socket: pb_socket(d.socket),
            socket_mode: pb_mode(d.socket_mode),
            privileged: d.privileged,
            limits: Some(pb_limits(&d.limits)),
            provenance,
            seq: d.evaluated_at_seq,
            evaluated_at: Some(timestamp(time_ns)),
        }),
        fragments: Some(pb::SpawnFragments {
            binds: d.binds.clone(),
            privileged: d.privileged,
            labels: d.labels.iter().cloned().collect(),
            env: d.env.iter().cloned().collect(),
        }),
        replayed,
    }
}

pub fn pb_token(t: &TokenState) -> pb::TokenInfo {
    pb::TokenInfo {
        name: t.name.clone(),
        role: pb_role(t.role),
        created_seq: t.created_seq,
        created_by: t.created_by.clone(),
        revoked: t.revoked_seq.is_some(),
        revoked_seq: t.revoked_seq,
        expires_at: t.expires_at_ns.map(timestamp),
        expired: !t.usable_at(crate::ledger::now_ns()),
    }
}

pub fn pb_group(state: &State, name: &str, seq: Seq, replayed: bool) -> pb::Group {
    match state.group(name) {
        Some(g) => pb::Group {
            name: name.to_string(),
            builtin: g.builtin,
            synced: g.synced,
            members: state.members_sorted(g),
            grants: state
                .open_grants_of(&Subject::Group(name.to_string()))
                .map(pb_grant)
                .collect(),
            created_seq: g.created_seq,
            seq,
            replayed,
        },
        // Deleted since (only on a replayed create).
        None => pb::Group {
            name: name.to_string(),
            created_seq: seq,
            seq,
            replayed,
            ..pb::Group::default()
        },
    }
}

pub fn pb_entry(e: EntryRecord) -> pb::Entry {
    pb::Entry {
        seq: e.seq,
        time: Some(timestamp(e.time_ns)),
        time_unix_nanos: e.time_ns,
        actor: e.actor,
        request_id: e.request_id.unwrap_or_default(),
        kind: e.kind.to_string(),
        prev_hash: e.prev_hash.to_vec(),
        hash: e.hash.to_vec(),
        body: e.body,
    }
}
