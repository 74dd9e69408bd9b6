//! Commands: the state-changing requests, and their validation against the state
//! they will apply to ([`Command::prepare`]), which turns each into its event.

use super::event::{
    Alert, ContainerObserved, Event, EventKind, GrantSpec, ProxyCall, Role, Seq, SocketAccess,
    SocketMode, Subject, UnixNanos,
};
use super::state::{GrantState, State};
use super::{names, policy, Error, SpawnConfig};
use sha2::Digest;

/// A state-changing request, before validation.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    CreateGroup {
        group: String,
    },
    /// Why is required: a deletion ends memberships and grants.
    DeleteGroup {
        group: String,
        reason: Option<String>,
    },
    /// Why is optional (the entry keeps it when given).
    AddMember {
        group: String,
        user: String,
        reason: Option<String>,
    },
    /// Several members at once: one `member_added` entry each, all or none.
    AddMembers {
        group: String,
        users: Vec<String>,
        reason: Option<String>,
    },
    /// Why is required to remove a member of a built-in group (one that gives the
    /// raw socket), optional otherwise.
    RemoveMember {
        group: String,
        user: String,
        reason: Option<String>,
    },
    /// The group sync (a `sync` token) adds (`add`) or removes a member of a synced
    /// group, saying why.
    SyncMember {
        group: String,
        user: String,
        add: bool,
        reason: String,
    },
    /// An admin marks a group as synced from JupyterHub, or ends that.
    SetGroupSync {
        group: String,
        synced: bool,
        reason: String,
    },
    IssueGrant {
        subject: Subject,
        spec: GrantSpec,
        expires_at_ns: Option<UnixNanos>,
        reason: String,
    },
    RevokeGrant {
        grant_id: Seq,
        reason: String,
    },
    /// Appended by the server when a grant's expiry passes.
    ExpireGrant {
        grant_id: Seq,
    },
    CreateToken {
        name: String,
        role: Role,
        secret_sha256: String,
        /// The token stops authenticating at this time.
        expires_at_ns: Option<UnixNanos>,
    },
    RevokeToken {
        name: String,
    },
    AuthorizeSpawn {
        user: String,
        server_name: String,
        image: String,
    },
    /// Start-up: make a configured built-in group exist and be marked built-in.
    RestoreBuiltinGroup {
        group: String,
    },
    /// Start-up: give a built-in group its configured grant.
    IssueBuiltinGrant {
        group: String,
        spec: GrantSpec,
    },
    /// Start-up: the configured grant of a built-in group changed.
    ReplaceBuiltinGrant {
        grant_id: Seq,
    },
    ServerStarted {
        version: String,
    },
    RecordContainer(ContainerObserved),
    RaiseAlert(Alert),
    /// The checkpointer wrote the state as of `at_seq` to a file with this digest.
    RecordCheckpoint {
        at_seq: Seq,
        sha256: String,
    },
    /// A call through a user's limited socket.
    RecordProxyCall(ProxyCall),
    RecordStop {
        container_id: String,
        name: String,
        user: Option<String>,
        reason: String,
        error: Option<String>,
    },
}

impl Command {
    /// The SHA-256 (hex) of what a client asked for, kept with the entry a request_id
    /// produced so that the same request_id with a different request is refused
    /// instead of answered with the first one's result. `None` for the server's own
    /// commands (the watcher's keys name a Docker event, whose re-observation may
    /// differ in detail and must still be a replay).
    pub fn request_digest(&self) -> Option<String> {
        use serde_json::json;
        let v = match self {
            Command::CreateGroup { group } => json!(["create_group", group]),
            Command::DeleteGroup { group, .. } => json!(["delete_group", group]),
            Command::AddMember { group, user, .. } => json!(["add_member", group, user]),
            Command::AddMembers { group, users, .. } => json!(["add_members", group, users]),
            Command::RemoveMember { group, user, .. } => json!(["remove_member", group, user]),
            Command::SyncMember {
                group,
                user,
                add,
                reason,
            } => json!(["sync_member", group, user, add, reason]),
            Command::SetGroupSync {
                group,
                synced,
                reason,
            } => json!(["set_group_sync", group, synced, reason]),
            Command::IssueGrant {
                subject,
                spec,
                expires_at_ns,
                reason,
            } => json!(["issue_grant", subject, spec, expires_at_ns, reason]),
            Command::RevokeGrant { grant_id, reason } => {
                json!(["revoke_grant", grant_id, reason])
            }
            // The secret is the server's choice, not part of the request.
            Command::CreateToken {
                name,
                role,
                expires_at_ns,
                ..
            } => json!(["create_token", name, role, expires_at_ns]),
            Command::RevokeToken { name } => json!(["revoke_token", name]),
            Command::AuthorizeSpawn {
                user,
                server_name,
                image,
            } => json!(["authorize_spawn", user, server_name, image]),
            _ => return None,
        };
        // serde_json's maps are ordered, so the text (and its digest) is canonical.
        Some(hex::encode(sha2::Sha256::digest(v.to_string().as_bytes())))
    }

    /// The event kind this command appends, to detect a request_id reused for a
    /// different operation.
    pub fn kind(&self) -> EventKind {
        match self {
            Command::CreateGroup { .. } => EventKind::GroupCreated,
            Command::DeleteGroup { .. } => EventKind::GroupDeleted,
            Command::AddMember { .. } | Command::AddMembers { .. } => EventKind::MemberAdded,
            Command::RemoveMember { .. } => EventKind::MemberRemoved,
            Command::SyncMember { add: true, .. } => EventKind::MemberAdded,
            Command::SyncMember { add: false, .. } => EventKind::MemberRemoved,
            Command::SetGroupSync { .. } => EventKind::GroupSyncChanged,
            Command::IssueGrant { .. } | Command::IssueBuiltinGrant { .. } => {
                EventKind::GrantIssued
            }
            Command::RevokeGrant { .. } | Command::ReplaceBuiltinGrant { .. } => {
                EventKind::GrantRevoked
            }
            Command::ExpireGrant { .. } => EventKind::GrantExpired,
            Command::CreateToken { .. } => EventKind::TokenIssued,
            Command::RevokeToken { .. } => EventKind::TokenRevoked,
            Command::AuthorizeSpawn { .. } => EventKind::SpawnDecided,
            Command::RestoreBuiltinGroup { .. } => EventKind::BuiltinGroupRestored,
            Command::ServerStarted { .. } => EventKind::ServerStarted,
            Command::RecordContainer(_) => EventKind::DockerContainer,
            Command::RaiseAlert(_) => EventKind::Alert,
            Command::RecordStop { .. } => EventKind::ContainerStopped,
            Command::RecordCheckpoint { .. } => EventKind::StateCheckpointed,
            Command::RecordProxyCall(_) => EventKind::ProxyCall,
        }
    }
}

/// Most users one `AddMembers` may name (each is an entry of one batch).
pub const MAX_MEMBERS_PER_CALL: usize = 1000;

impl Command {
    /// The commands a compound command stands for, appended together or not at all
    /// (`None`: the command is one entry).
    pub fn parts(&self) -> Result<Option<Vec<Command>>, Error> {
        let Command::AddMembers {
            group,
            users,
            reason,
        } = self
        else {
            return Ok(None);
        };
        let bad = |problem: String| Error::InvalidText {
            field: "users",
            problem,
        };
        if users.is_empty() {
            return Err(bad("name at least one user to add".into()));
        }
        if users.len() > MAX_MEMBERS_PER_CALL {
            return Err(bad(format!(
                "{} users in one call; at most {MAX_MEMBERS_PER_CALL}",
                users.len()
            )));
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(twice) = users.iter().find(|u| !seen.insert(u.as_str())) {
            return Err(bad(format!("user {twice:?} is listed twice")));
        }
        Ok(Some(
            users
                .iter()
                .map(|u| Command::AddMember {
                    group: group.clone(),
                    user: u.clone(),
                    reason: reason.clone(),
                })
                .collect(),
        ))
    }

    /// Validates the command against `st` (the state it will apply to) and turns it
    /// into the event to append at `seq`, `time_ns`. Changes nothing.
    pub fn prepare(
        &self,
        st: &State,
        seq: Seq,
        time_ns: UnixNanos,
        spawn: &SpawnConfig,
    ) -> Result<Event, Error> {
        let group_named = |group: &str| {
            names::group(group)?;
            st.group(group)
                .ok_or_else(|| Error::NoSuchGroup(group.to_string()))
        };
        match self {
            Command::CreateGroup { group } => {
                names::group(group)?;
                if st.group(group).is_some() {
                    return Err(Error::GroupExists(group.clone()));
                }
                if let Some(like) = names::confusable_with(group, st.groups().map(|(n, _)| n)) {
                    return Err(Error::ConfusableGroup {
                        group: group.clone(),
                        existing: like.to_string(),
                    });
                }
                Ok(Event::GroupCreated {
                    group: group.clone(),
                })
            }
            Command::DeleteGroup { group, reason } => {
                let g = group_named(group)?;
                if g.builtin {
                    return Err(Error::BuiltinGroup(group.clone()));
                }
                names::reason(reason.as_deref().unwrap_or(""))?;
                Ok(Event::GroupDeleted {
                    group: group.clone(),
                    reason: reason.clone(),
                    removed_members: st.members_sorted(g),
                    ended_grants: st
                        .open_grants_of(&Subject::Group(group.clone()))
                        .map(|g| g.id)
                        .collect(),
                })
            }
            Command::AddMembers { .. } => Err(Error::Inconsistent(
                "a compound command is appended through its parts",
            )),
            Command::AddMember {
                group,
                user,
                reason,
            }
            | Command::RemoveMember {
                group,
                user,
                reason,
            } => {
                let add = matches!(self, Command::AddMember { .. });
                let g = group_named(group)?;
                if g.synced {
                    return Err(Error::SyncedGroup(group.clone()));
                }
                match reason {
                    Some(r) => names::reason(r)?,
                    None if !add && g.builtin => {
                        return Err(Error::InvalidText {
                            field: "reason",
                            problem: format!(
                                "removing {user:?} from the built-in group {group:?} takes their Docker socket away: a reason is required"
                            ),
                        })
                    }
                    None => {}
                }
                member_change(st, group, user, add, reason.clone())
            }
            Command::SyncMember {
                group,
                user,
                add,
                reason,
            } => {
                if !group_named(group)?.synced {
                    return Err(Error::NotSyncedGroup(group.clone()));
                }
                names::reason(reason)?;
                member_change(st, group, user, *add, Some(reason.clone()))
            }
            Command::SetGroupSync {
                group,
                synced,
                reason,
            } => {
                let g = group_named(group)?;
                names::reason(reason)?;
                if g.synced == *synced {
                    return Err(Error::SyncUnchanged {
                        group: group.clone(),
                        synced: *synced,
                    });
                }
                Ok(Event::GroupSyncChanged {
                    group: group.clone(),
                    synced: *synced,
                    reason: reason.clone(),
                })
            }
            Command::IssueGrant {
                subject,
                spec,
                expires_at_ns,
                reason,
            } => {
                match subject {
                    Subject::User(u) => names::user(u)?,
                    Subject::Group(g) => {
                        group_named(g)?;
                    }
                }
                names::reason(reason)?;
                validate_spec(spec)?;
                if let Some(exp) = expires_at_ns {
                    if *exp <= time_ns {
                        return Err(Error::ExpiryNotInFuture(super::format_time(*exp)));
                    }
                }
                Ok(Event::GrantIssued {
                    subject: subject.clone(),
                    spec: spec.clone(),
                    expires_at_ns: *expires_at_ns,
                    reason: reason.clone(),
                    builtin: false,
                })
            }
            Command::RevokeGrant { grant_id, reason } => {
                names::reason(reason)?;
                if open_grant(st, *grant_id)?.builtin {
                    return Err(Error::BuiltinGrant(*grant_id));
                }
                Ok(Event::GrantRevoked {
                    grant_id: *grant_id,
                    reason: reason.clone(),
                })
            }
            Command::ExpireGrant { grant_id } => match open_grant(st, *grant_id)?.expires_at_ns {
                Some(exp) if exp <= time_ns => Ok(Event::GrantExpired {
                    grant_id: *grant_id,
                    expired_at_ns: exp,
                }),
                _ => Err(Error::NotExpired(*grant_id)),
            },
            Command::CreateToken {
                name,
                role,
                secret_sha256,
                expires_at_ns,
            } => {
                names::token_name(name)?;
                if let Some(exp) = expires_at_ns {
                    if *exp <= time_ns {
                        return Err(Error::ExpiryNotInFuture(super::format_time(*exp)));
                    }
                }
                if let Some(t) = st.token(name) {
                    return Err(Error::TokenNameTaken {
                        name: name.clone(),
                        created_seq: t.created_seq,
                        revoked: t.revoked_seq.is_some(),
                    });
                }
                Ok(Event::TokenIssued {
                    name: name.clone(),
                    role: *role,
                    secret_sha256: secret_sha256.clone(),
                    expires_at_ns: *expires_at_ns,
                })
            }
            Command::RevokeToken { name } => {
                names::token_name(name)?;
                let t = st
                    .token(name)
                    .ok_or_else(|| Error::NoSuchToken(name.clone()))?;
                if let Some(seq) = t.revoked_seq {
                    return Err(Error::TokenRevoked {
                        name: name.clone(),
                        seq,
                    });
                }
                // Revoking the last admin would lock everyone out of Admin for good.
                if t.role == Role::Admin
                    && !st
                        .tokens()
                        .any(|o| o.name != *name && o.role == Role::Admin && o.usable_at(time_ns))
                {
                    return Err(Error::LastAdmin(name.clone()));
                }
                Ok(Event::TokenRevoked { name: name.clone() })
            }
            Command::AuthorizeSpawn {
                user,
                server_name,
                image,
            } => {
                names::user(user)?;
                names::server_name(server_name)?;
                names::image(image)?;
                Ok(Event::SpawnDecided(policy::decide(
                    st,
                    user,
                    server_name,
                    image,
                    seq,
                    time_ns,
                    spawn,
                )))
            }
            Command::RestoreBuiltinGroup { group } => {
                names::group(group)?;
                let existed = match st.group(group) {
                    Some(g) if g.builtin => return Err(Error::BuiltinGroupExists(group.clone())),
                    Some(_) => true,
                    None => false,
                };
                Ok(Event::BuiltinGroupRestored {
                    group: group.clone(),
                    existed,
                })
            }
            Command::IssueBuiltinGrant { group, spec } => {
                validate_spec(spec)?;
                if !st.group(group).is_some_and(|g| g.builtin) {
                    return Err(Error::NoSuchBuiltinGroup(group.clone()));
                }
                Ok(Event::GrantIssued {
                    subject: Subject::Group(group.clone()),
                    spec: spec.clone(),
                    expires_at_ns: None,
                    reason: format!("built-in group {group:?} from configuration"),
                    builtin: true,
                })
            }
            Command::ReplaceBuiltinGrant { grant_id } => {
                open_grant(st, *grant_id)?;
                Ok(Event::GrantRevoked {
                    grant_id: *grant_id,
                    reason: "the configured grant of this built-in group changed".into(),
                })
            }
            Command::ServerStarted { version } => Ok(Event::ServerStarted {
                version: version.clone(),
            }),
            Command::RecordContainer(o) => {
                check_observation_text(o)?;
                next_from_host(st, o.host.as_deref(), o.host_seq)?;
                Ok(Event::DockerContainer(o.clone()))
            }
            Command::RaiseAlert(a) => {
                next_from_host(st, a.host.as_deref(), a.host_seq)?;
                Ok(Event::Alert(a.clone()))
            }
            Command::RecordProxyCall(p) => {
                names::user(&p.user)?;
                check_docker_text("method", &p.method, 16, false)?;
                check_docker_text("path", &p.path, 1024, false)?;
                let container = p.peer.as_ref().and_then(|x| x.container.as_ref());
                for v in p
                    .decision_id
                    .iter()
                    .chain(p.resource.iter())
                    .chain(container)
                {
                    check_docker_text("resource", v, 256, true)?;
                }
                if p.images.len() + p.removed.len() > 1000 {
                    return Err(Error::InvalidText {
                        field: "images",
                        problem: "a proxy call names at most 1000 images".into(),
                    });
                }
                for i in p.images.iter().chain(&p.removed) {
                    check_docker_text("image", i, 80, false)?;
                }
                names::reason_text(&p.reason)?;
                Ok(Event::ProxyCall(p.clone()))
            }
            Command::RecordCheckpoint { at_seq, sha256 } => {
                if *at_seq == 0 || *at_seq >= seq {
                    return Err(Error::InvalidCheckpointRecord(format!(
                        "a checkpoint at seq {at_seq} cannot be recorded at seq {seq}"
                    )));
                }
                if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(Error::InvalidCheckpointRecord(
                        "a checkpoint digest is 64 hex digits".into(),
                    ));
                }
                Ok(Event::StateCheckpointed {
                    at_seq: *at_seq,
                    sha256: sha256.to_ascii_lowercase(),
                })
            }
            Command::RecordStop {
                container_id,
                name,
                user,
                reason,
                error,
            } => Ok(Event::ContainerStopped {
                container_id: container_id.clone(),
                name: name.clone(),
                user: user.clone(),
                reason: reason.clone(),
                ok: error.is_none(),
                error: error.clone(),
            }),
        }
    }
}

/// The grant `id`, if it exists and no entry has ended it.
fn open_grant(st: &State, id: Seq) -> Result<&GrantState, Error> {
    let g = st.grant(id).ok_or(Error::NoSuchGrant(id))?;
    match &g.ended {
        Some(end) => Err(Error::GrantEnded {
            id,
            how: end.kind,
            seq: end.seq,
        }),
        None => Ok(g),
    }
}

/// Bounds of the text an observation takes from Docker, in bytes.
const CONTAINER_ID_MAX: usize = 128;
const NAME_MAX: usize = 256;
const IMAGE_MAX: usize = 512;
const ACTION_MAX: usize = 512;
const LABEL_MAX: usize = 256;

/// Makes what Docker said of a container fit the ledger's rules for its text (see
/// [`check_docker_text`]): each control character becomes U+FFFD and text past its
/// bound is cut at a character boundary. Whoever can label a container must not be
/// able to keep it out of the ledger with a label the ledger would refuse; a mangled
/// `privledger.user` names no user, so the container is vouched for by nobody.
pub fn fit_docker_text(o: &mut ContainerObserved) {
    fn fit(v: &mut String, max: usize) {
        if v.chars().any(char::is_control) {
            *v = v
                .chars()
                .map(|c| if c.is_control() { '\u{FFFD}' } else { c })
                .collect();
        }
        if v.len() > max {
            let mut end = max;
            while !v.is_char_boundary(end) {
                end -= 1;
            }
            v.truncate(end);
        }
    }
    fit(&mut o.container_id, CONTAINER_ID_MAX);
    fit(&mut o.name, NAME_MAX);
    fit(&mut o.image, IMAGE_MAX);
    fit(&mut o.action, ACTION_MAX);
    for v in o.user.iter_mut().chain(o.decision_id.iter_mut()) {
        fit(v, LABEL_MAX);
    }
}

/// The text of an observation, as [`check_docker_text`] wants it.
fn check_observation_text(o: &ContainerObserved) -> Result<(), Error> {
    check_docker_text("container id", &o.container_id, CONTAINER_ID_MAX, false)?;
    check_docker_text("container name", &o.name, NAME_MAX, true)?;
    check_docker_text("image", &o.image, IMAGE_MAX, true)?;
    check_docker_text("action", &o.action, ACTION_MAX, false)?;
    for v in o.user.iter().chain(o.decision_id.iter()) {
        check_docker_text("label", v, LABEL_MAX, true)?;
    }
    Ok(())
}

/// Text that comes from the Docker daemon or an imported file: bounded, no control
/// characters.
fn check_docker_text(
    field: &'static str,
    v: &str,
    max: usize,
    allow_empty: bool,
) -> Result<(), Error> {
    if (v.is_empty() && !allow_empty) || v.len() > max || v.chars().any(char::is_control) {
        return Err(Error::InvalidText {
            field,
            problem: format!(
                "{field} {:?} is empty, longer than {max} bytes, or has control characters",
                v.chars().take(80).collect::<String>()
            ),
        });
    }
    Ok(())
}

/// A grant spec must give something and be consistent (DESIGN §2).
pub fn validate_spec(spec: &GrantSpec) -> Result<(), Error> {
    let bad = |m: &str| Err(Error::InvalidGrant(m.to_string()));
    if spec.socket != SocketAccess::Raw && spec.socket_mode != SocketMode::Rw {
        return bad("socket_mode ro applies only to a raw socket grant");
    }
    if spec.socket != SocketAccess::Limited && !spec.limits.is_empty() {
        return bad("limits apply only to a limited socket grant");
    }
    if spec.socket == SocketAccess::None && !spec.privileged {
        return bad("the grant gives nothing: set a socket (raw or limited) or privileged");
    }
    if let Some(p) = spec.limits.max_pids {
        if !(16..=1_000_000).contains(&p) {
            return Err(Error::InvalidGrant(format!(
                "max_pids must be from 16 to 1000000, not {p}"
            )));
        }
    }
    for (name, list) in [
        ("pull_allow", &spec.limits.pull_allow),
        ("push_allow", &spec.limits.push_allow),
    ] {
        super::image_ref::patterns(list)
            .map_err(|e| Error::InvalidGrant(format!("{name}: {e}")))?;
    }
    for (name, v) in [
        ("max_storage_gb", spec.limits.max_storage_gb),
        ("cpu_cap_cores", spec.limits.cpu_cap_cores),
        ("mem_cap_gb", spec.limits.mem_cap_gb),
    ] {
        if let Some(v) = v {
            if !v.is_finite() || !(0.0..=1_000_000.0).contains(&v) {
                return Err(Error::InvalidGrant(format!(
                    "{name} must be a number from 0 to 1000000, not {v}"
                )));
            }
        }
    }
    Ok(())
}

/// A member added (`add`) or removed: the names are valid, the group exists and the
/// user is (or is not yet) in it.
fn member_change(
    st: &State,
    group: &str,
    user: &str,
    add: bool,
    reason: Option<String>,
) -> Result<Event, Error> {
    names::group(group)?;
    names::user(user)?;
    let g = st
        .group(group)
        .ok_or_else(|| Error::NoSuchGroup(group.to_string()))?;
    let (group, user) = (group.to_string(), user.to_string());
    match (add, st.is_member(g, &user)) {
        (true, true) => Err(Error::AlreadyAMember { group, user }),
        (true, false) => Ok(Event::MemberAdded {
            group,
            user,
            reason,
        }),
        (false, false) => Err(Error::NotAMember { group, user }),
        (false, true) => Ok(Event::MemberRemoved {
            group,
            user,
            reason,
        }),
    }
}

/// An agent's numbered report must be its host's next: the state as of this entry
/// says which that is (a repeat or a gap is refused here, in the writer, so that no
/// two reports race past the check).
fn next_from_host(st: &State, host: Option<&str>, number: Option<u64>) -> Result<(), Error> {
    let (Some(host), Some(number)) = (host, number) else {
        return Ok(());
    };
    names::host(host)?;
    // Numbers rise by one from 1, so the last is never u64::MAX; saturating keeps a
    // request from ever overflowing it.
    let expected = st.host_last(host).saturating_add(1);
    if number != expected {
        return Err(Error::HostOutOfOrder {
            host: host.to_string(),
            expected,
            got: number,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn fitting_keeps_what_fits_and_cuts_at_a_character() {
        let mut o = ContainerObserved::created("abc", "jupyter-alice", Some("alice"));
        let before = o.clone();
        fit_docker_text(&mut o);
        assert_eq!(o, before);
        o.user = Some(format!("a{}", "é".repeat(200)));
        o.name = "x\ny\u{7}".into();
        fit_docker_text(&mut o);
        assert_eq!(o.user.as_deref().map(str::len), Some(255));
        assert_eq!(o.name, "x\u{FFFD}y\u{FFFD}");
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// Whatever a daemon (or a hostile agent) says of a container, once fitted
        /// the ledger takes it: nothing Docker reports can be refused for its text.
        #[test]
        fn any_fitted_observation_passes_the_ledgers_rules(
            id in "[a-f0-9]{1,64}|\\PC{1,200}",
            name in any::<String>(),
            image in proptest::collection::vec(any::<char>(), 0..700),
            user in proptest::option::of(any::<String>()),
            decision in proptest::option::of(proptest::collection::vec(any::<char>(), 0..400)),
        ) {
            let mut o = ContainerObserved::created(&id, &name, user.as_deref());
            o.image = image.into_iter().collect();
            o.decision_id = decision.map(|d| d.into_iter().collect());
            fit_docker_text(&mut o);
            prop_assert!(check_observation_text(&o).is_ok(), "{:?}", check_observation_text(&o));
        }
    }
}
