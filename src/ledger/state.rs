//! The current state (groups, members, grants, tokens), derived purely from the log.
//!
//! `State` uses persistent maps (imbl) so that the single writer can clone the
//! published state in O(1), apply a batch to the clone, and publish it only after the
//! batch is durable; readers keep whatever `Arc<State>` they loaded, lock-free.
//! [`State::prepare`] validates a command against the state it will apply to and
//! turns it into an event; [`State::apply`] is the only way state changes, and replay
//! uses the very same function.

use std::sync::Arc;

use imbl::{shared_ptr::DefaultSharedPtr, GenericHashMap, HashMap, OrdMap, OrdSet, Vector};
use serde::{Deserialize, Serialize};

use super::event::{
    Alert, ContainerObserved, Event, GrantSpec, Role, Seq, SocketAccess, SocketMode, Subject,
    UnixNanos,
};
use super::{names, policy, Error, SpawnConfig};

/// A name-keyed persistent map hashed with foldhash: every query hashes a name, and
/// SipHash costs more than the rest of an evaluation. The per-process random seed keeps
/// crafted names from colliding on purpose.
type NameMap<V> = GenericHashMap<Arc<str>, V, foldhash::fast::RandomState, DefaultSharedPtr>;

/// Index of an interned user or group name. Names are interned on first use and never
/// forgotten, so an index is stable for the life of the ledger; checkpoints keep the
/// order. Memberships are held as indices: 100k users in 20 groups each would
/// otherwise hold 4M name copies in sets (DESIGN §7 memory target).
pub type Ix = u32;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupState {
    pub builtin: bool,
    pub created_seq: Seq,
    /// Members by user index; [`State::members`] gives their names.
    pub members: Members,
}

/// A group's members by user index. A sorted array while the group is small (4 bytes
/// a member; a persistent set's smallest node is 800 bytes), a persistent set once it
/// is large (an insert then costs O(log n), not a copy of the array).
#[derive(Debug, Clone)]
pub enum Members {
    Small(Arc<[Ix]>),
    Large(OrdSet<Ix>),
}

/// Above this many members a group's array becomes a persistent set.
const SMALL_GROUP: usize = 256;

impl Default for Members {
    fn default() -> Members {
        Members::Small(Arc::from([]))
    }
}

impl PartialEq for Members {
    fn eq(&self, o: &Members) -> bool {
        self.len() == o.len() && self.iter().eq(o.iter())
    }
}

impl Eq for Members {}

impl FromIterator<Ix> for Members {
    fn from_iter<I: IntoIterator<Item = Ix>>(iter: I) -> Members {
        let mut v: Vec<Ix> = iter.into_iter().collect();
        v.sort_unstable();
        v.dedup();
        if v.len() > SMALL_GROUP {
            Members::Large(v.into_iter().collect())
        } else {
            Members::Small(Arc::from(v))
        }
    }
}

impl Members {
    pub fn len(&self) -> usize {
        match self {
            Members::Small(a) => a.len(),
            Members::Large(s) => s.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn contains(&self, ix: Ix) -> bool {
        match self {
            Members::Small(a) => a.binary_search(&ix).is_ok(),
            Members::Large(s) => s.contains(&ix),
        }
    }

    /// Member indices, ascending.
    pub fn iter(&self) -> impl Iterator<Item = Ix> + '_ {
        let (small, large) = match self {
            Members::Small(a) => (Some(a.iter()), None),
            Members::Large(s) => (None, Some(s.iter())),
        };
        small
            .into_iter()
            .flatten()
            .chain(large.into_iter().flatten())
            .copied()
    }

    fn insert(&mut self, ix: Ix) {
        match self {
            Members::Small(a) if a.len() < SMALL_GROUP => {
                if let Err(at) = a.binary_search(&ix) {
                    let mut v = a.to_vec();
                    v.insert(at, ix);
                    *a = Arc::from(v);
                }
            }
            Members::Small(a) => {
                let mut set: OrdSet<Ix> = a.iter().copied().collect();
                set.insert(ix);
                *self = Members::Large(set);
            }
            Members::Large(s) => {
                s.insert(ix);
            }
        }
    }

    fn remove(&mut self, ix: Ix) {
        match self {
            Members::Small(a) => {
                if let Ok(at) = a.binary_search(&ix) {
                    let mut v = a.to_vec();
                    v.remove(at);
                    *a = Arc::from(v);
                }
            }
            Members::Large(s) => {
                s.remove(&ix);
            }
        }
    }
}

/// Everything the state keeps about one user name.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct UserSlot {
    pub(super) name: Arc<str>,
    /// The groups the user is in, by group index, sorted.
    pub(super) groups: Arc<[Ix]>,
    /// Grants to the user directly, not ended by an entry.
    pub(super) grants: Option<Arc<GrantSet>>,
}

/// Everything the state keeps about one group name.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct GroupSlot {
    pub(super) name: Arc<str>,
    /// `None` while no group of this name exists (deleted since).
    pub(super) group: Option<GroupState>,
    /// Grants to the group, not ended by an entry.
    pub(super) grants: Option<Arc<GrantSet>>,
}

/// The grants of one subject not ended by an entry, with their combination computed
/// once when the set changes: evaluation folds one value per group the user is in,
/// not one per grant (DESIGN §7: evaluation ≤ 1 µs).
#[derive(Debug, Clone, PartialEq)]
pub struct GrantSet {
    /// By id; shared with `State::grants`.
    grants: Vec<Arc<GrantState>>,
    /// The combination of every grant in the set.
    all: policy::Fold,
    summary: policy::Summary,
}

impl GrantSet {
    /// The set of `grants`, or `None` when there are none.
    fn of(grants: Vec<Arc<GrantState>>) -> Option<Arc<GrantSet>> {
        if grants.is_empty() {
            return None;
        }
        let mut all = policy::Fold::default();
        for g in &grants {
            all.add(&g.spec);
        }
        let first_expiry = grants.iter().filter_map(|g| g.expires_at_ns).min();
        let summary = policy::Summary::new(&all, first_expiry);
        Some(Arc::new(GrantSet {
            grants,
            all,
            summary,
        }))
    }

    fn with(set: Option<&GrantSet>, grant: Arc<GrantState>) -> Option<Arc<GrantSet>> {
        let mut grants = set.map(|s| s.grants.clone()).unwrap_or_default();
        let at = grants.partition_point(|g| g.id < grant.id);
        grants.insert(at, grant);
        GrantSet::of(grants)
    }

    fn without(set: Option<&GrantSet>, id: Seq) -> Option<Arc<GrantSet>> {
        let mut grants = set.map(|s| s.grants.clone()).unwrap_or_default();
        grants.retain(|g| g.id != id);
        GrantSet::of(grants)
    }

    /// Every grant in the set, by id.
    pub fn grants(&self) -> impl Iterator<Item = &GrantState> {
        self.grants.iter().map(|g| &**g)
    }

    /// The grants not past their expiry at `at_ns`.
    pub fn active_at(&self, at_ns: UnixNanos) -> impl Iterator<Item = &GrantState> {
        self.grants
            .iter()
            .map(|g| &**g)
            .filter(move |g| g.is_active_at(at_ns))
    }

    /// The combination of the grants active at `at_ns`.
    pub fn fold_at(&self, at_ns: UnixNanos) -> policy::Fold {
        if self.summary.holds_at(at_ns) {
            return self.all;
        }
        let mut f = policy::Fold::default();
        for g in self.active_at(at_ns) {
            f.add(&g.spec);
        }
        f
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndKind {
    Revoked,
    Expired,
    GroupDeleted,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GrantEnd {
    pub seq: Seq,
    pub kind: EndKind,
    pub reason: String,
    pub time_ns: UnixNanos,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GrantState {
    pub id: Seq,
    pub subject: Subject,
    pub spec: GrantSpec,
    pub expires_at_ns: Option<UnixNanos>,
    pub reason: String,
    pub issued_by: String,
    pub issued_at_ns: UnixNanos,
    pub builtin: bool,
    pub ended: Option<GrantEnd>,
}

impl GrantState {
    /// Not revoked or expired by an entry, and not past its expiry at `at_ns`.
    pub fn is_active_at(&self, at_ns: UnixNanos) -> bool {
        self.ended.is_none() && self.expires_at_ns.is_none_or(|e| e > at_ns)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenState {
    pub name: String,
    pub role: Role,
    pub secret_sha256: String,
    pub created_seq: Seq,
    pub created_by: String,
    pub revoked_seq: Option<Seq>,
}

/// A container privledger knows of (not destroyed), from `docker_container` entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub name: String,
    pub user: Option<String>,
    pub decision_id: Option<String>,
    /// The socket mode it holds, if it mounts the socket.
    pub socket: Option<SocketMode>,
    pub privileged: bool,
    pub running: bool,
    pub exempt: bool,
}

impl ContainerRecord {
    /// Holds the socket or runs privileged.
    pub fn holds_privilege(&self) -> bool {
        self.socket.is_some() || self.privileged
    }
}

/// A state-changing request, before validation.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    CreateGroup {
        group: String,
    },
    DeleteGroup {
        group: String,
    },
    AddMember {
        group: String,
        user: String,
    },
    RemoveMember {
        group: String,
        user: String,
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
    RecordStop {
        container_id: String,
        name: String,
        user: Option<String>,
        reason: String,
        error: Option<String>,
    },
}

impl Command {
    /// The event kind this command appends, to detect a request_id reused for a
    /// different operation.
    pub fn kind(&self) -> &'static str {
        match self {
            Command::CreateGroup { .. } => "group_created",
            Command::DeleteGroup { .. } => "group_deleted",
            Command::AddMember { .. } => "member_added",
            Command::RemoveMember { .. } => "member_removed",
            Command::IssueGrant { .. } | Command::IssueBuiltinGrant { .. } => "grant_issued",
            Command::RevokeGrant { .. } | Command::ReplaceBuiltinGrant { .. } => "grant_revoked",
            Command::ExpireGrant { .. } => "grant_expired",
            Command::CreateToken { .. } => "token_issued",
            Command::RevokeToken { .. } => "token_revoked",
            Command::AuthorizeSpawn { .. } => "spawn_decided",
            Command::RestoreBuiltinGroup { .. } => "builtin_group_restored",
            Command::ServerStarted { .. } => "server_started",
            Command::RecordContainer(_) => "docker_container",
            Command::RaiseAlert(_) => "alert",
            Command::RecordStop { .. } => "container_stopped",
            Command::RecordCheckpoint { .. } => "state_checkpointed",
        }
    }
}

/// The derived state as of `seq`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct State {
    pub seq: Seq,
    pub hash: [u8; 32],
    /// The hash of entry 1: identifies this ledger (decision ids carry its prefix, so
    /// a label written by another ledger is never mistaken for one of ours).
    pub genesis: [u8; 32],
    pub time_ns: UnixNanos,
    /// Users by index, and their index by name.
    users: Vector<UserSlot>,
    user_ix: NameMap<Ix>,
    /// Groups by index, and their index by name.
    groups: Vector<GroupSlot>,
    group_ix: NameMap<Ix>,
    /// The summary of each group's grants, by group index: evaluating a user in 20
    /// groups reads 20 of these small records, which stay in cache, rather than
    /// chasing 20 pointers (DESIGN §7: ≤ 1 µs).
    group_summaries: Vector<policy::Summary>,
    /// Every grant ever issued, including ended ones. Behind `Arc` so that open
    /// grants are shared with their subject's set, and the map's nodes stay small.
    grants: OrdMap<Seq, Arc<GrantState>>,
    /// (expires_at, grant id) of grants not ended by an entry that carry an expiry.
    expiring: OrdSet<(UnixNanos, Seq)>,
    tokens: HashMap<String, TokenState>,
    /// secret hash → token name, for tokens not revoked.
    token_hashes: HashMap<String, String>,
    /// Containers seen and not destroyed, by id.
    containers: HashMap<String, ContainerRecord>,
    /// The digest recorded for each checkpoint written (hex SHA-256 by seq).
    checkpoints: OrdMap<Seq, Arc<str>>,
}

fn not_found(msg: String) -> Error {
    Error::NotFound(msg)
}

impl State {
    // === queries ===

    /// Short id of this ledger: the first 8 hex digits of entry 1's hash.
    pub fn ledger_id(&self) -> String {
        hex::encode(&self.genesis[..4])
    }

    /// Records the hash of the entry just applied.
    pub fn commit_hash(&mut self, hash: [u8; 32]) {
        self.hash = hash;
        if self.seq == 1 {
            self.genesis = hash;
        }
    }

    pub fn group(&self, name: &str) -> Option<&GroupState> {
        let ix = *self.group_ix.get(name)?;
        self.groups[ix as usize].group.as_ref()
    }

    /// Every existing group with its name, in order of first creation.
    pub fn groups(&self) -> impl Iterator<Item = (&str, &GroupState)> {
        self.groups
            .iter()
            .filter_map(|s| s.group.as_ref().map(|g| (&*s.name, g)))
    }

    /// The names of `group`'s members, in order of first appearance.
    pub fn members<'a>(&'a self, group: &'a GroupState) -> impl Iterator<Item = &'a str> {
        group.members.iter().map(|ix| self.user_name(ix))
    }

    /// The names of `group`'s members, sorted.
    pub fn members_sorted(&self, group: &GroupState) -> Vec<String> {
        let mut names: Vec<String> = self.members(group).map(str::to_string).collect();
        names.sort_unstable();
        names
    }

    pub fn is_member(&self, group: &GroupState, user: &str) -> bool {
        self.user_ix
            .get(user)
            .is_some_and(|&ix| group.members.contains(ix))
    }

    pub fn grant(&self, id: Seq) -> Option<&GrantState> {
        self.grants.get(&id).map(|g| &**g)
    }

    pub fn grants(&self) -> impl Iterator<Item = &GrantState> {
        self.grants.values().map(|g| &**g)
    }

    /// Grants not ended by an entry whose subject is exactly `subject`, by id.
    pub fn open_grants_of(&self, subject: &Subject) -> impl Iterator<Item = &GrantState> {
        let set = match subject {
            Subject::User(u) => self.user_slot(u).and_then(|s| s.grants.as_deref()),
            Subject::Group(g) => self
                .group_ix
                .get(g.as_str())
                .and_then(|&ix| self.groups[ix as usize].grants.as_deref()),
        };
        set.into_iter().flat_map(|s| s.grants())
    }

    pub(super) fn user_slot(&self, name: &str) -> Option<&UserSlot> {
        let ix = *self.user_ix.get(name)?;
        Some(&self.users[ix as usize])
    }

    pub(super) fn user_slots(&self) -> impl Iterator<Item = &UserSlot> {
        self.users.iter()
    }

    pub(super) fn user_name(&self, ix: Ix) -> &str {
        &self.users[ix as usize].name
    }

    pub(super) fn group_slot(&self, ix: Ix) -> &GroupSlot {
        &self.groups[ix as usize]
    }

    pub(super) fn group_slots(&self) -> impl Iterator<Item = &GroupSlot> {
        self.groups.iter()
    }

    /// The earliest expiry among grants not yet ended by an entry.
    /// The digest recorded for the checkpoint at `seq`, if one was recorded.
    pub fn checkpoint_digest(&self, seq: Seq) -> Option<&str> {
        self.checkpoints.get(&seq).map(|d| &**d)
    }

    pub fn next_expiry(&self) -> Option<(UnixNanos, Seq)> {
        self.expiring.get_min().copied()
    }

    pub fn container(&self, id: &str) -> Option<&ContainerRecord> {
        self.containers.get(id)
    }

    pub fn containers(&self) -> impl Iterator<Item = &ContainerRecord> {
        self.containers.values()
    }

    pub fn token(&self, name: &str) -> Option<&TokenState> {
        self.tokens.get(name)
    }

    pub fn tokens(&self) -> impl Iterator<Item = &TokenState> {
        self.tokens.values()
    }

    /// The active token whose secret hashes to `secret_sha256`.
    pub fn token_by_hash(&self, secret_sha256: &str) -> Option<&TokenState> {
        self.token_hashes
            .get(secret_sha256)
            .and_then(|n| self.tokens.get(n))
    }

    // === validation ===

    /// Validates `cmd` against this state and turns it into the event to append at
    /// `seq`, `time_ns`. Changes nothing.
    pub fn prepare(
        &self,
        cmd: &Command,
        seq: Seq,
        time_ns: UnixNanos,
        spawn: &SpawnConfig,
    ) -> Result<Event, Error> {
        match cmd {
            Command::CreateGroup { group } => {
                names::group(group)?;
                if self.group(group).is_some() {
                    return Err(Error::AlreadyExists(format!(
                        "group {group:?} already exists"
                    )));
                }
                Ok(Event::GroupCreated {
                    group: group.clone(),
                })
            }
            Command::DeleteGroup { group } => {
                names::group(group)?;
                let g = self
                    .group(group)
                    .ok_or_else(|| not_found(format!("no group {group:?}")))?;
                if g.builtin {
                    return Err(Error::FailedPrecondition(format!(
                        "group {group:?} is built in (from configuration) and cannot be deleted"
                    )));
                }
                Ok(Event::GroupDeleted {
                    group: group.clone(),
                    removed_members: self.members_sorted(g),
                    ended_grants: self
                        .open_grants_of(&Subject::Group(group.clone()))
                        .map(|g| g.id)
                        .collect(),
                })
            }
            Command::AddMember { group, user } => {
                names::group(group)?;
                names::user(user)?;
                let g = self
                    .group(group)
                    .ok_or_else(|| not_found(format!("no group {group:?}")))?;
                if self.is_member(g, user) {
                    return Err(Error::AlreadyExists(format!(
                        "user {user:?} is already a member of group {group:?}"
                    )));
                }
                Ok(Event::MemberAdded {
                    group: group.clone(),
                    user: user.clone(),
                })
            }
            Command::RemoveMember { group, user } => {
                names::group(group)?;
                names::user(user)?;
                let g = self
                    .group(group)
                    .ok_or_else(|| not_found(format!("no group {group:?}")))?;
                if !self.is_member(g, user) {
                    return Err(not_found(format!(
                        "user {user:?} is not a member of group {group:?}"
                    )));
                }
                Ok(Event::MemberRemoved {
                    group: group.clone(),
                    user: user.clone(),
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
                        names::group(g)?;
                        if self.group(g).is_none() {
                            return Err(not_found(format!("no group {g:?}")));
                        }
                    }
                }
                names::reason(reason)?;
                validate_spec(spec)?;
                if let Some(exp) = expires_at_ns {
                    if *exp <= time_ns {
                        return Err(Error::InvalidArgument(format!(
                            "expiry {} is not in the future",
                            super::format_time(*exp)
                        )));
                    }
                }
                Ok(Event::GrantIssued {
                    subject: subject.clone(),
                    spec: *spec,
                    expires_at_ns: *expires_at_ns,
                    reason: reason.clone(),
                    builtin: false,
                })
            }
            Command::RevokeGrant { grant_id, reason } => {
                names::reason(reason)?;
                let g = self.open_grant(*grant_id)?;
                if g.builtin {
                    return Err(Error::FailedPrecondition(format!(
                        "grant {grant_id} belongs to a built-in group; change it in the configuration"
                    )));
                }
                Ok(Event::GrantRevoked {
                    grant_id: *grant_id,
                    reason: reason.clone(),
                })
            }
            Command::ExpireGrant { grant_id } => {
                let g = self.open_grant(*grant_id)?;
                match g.expires_at_ns {
                    Some(exp) if exp <= time_ns => Ok(Event::GrantExpired {
                        grant_id: *grant_id,
                        expired_at_ns: exp,
                    }),
                    _ => Err(Error::FailedPrecondition(format!(
                        "grant {grant_id} has not expired"
                    ))),
                }
            }
            Command::CreateToken {
                name,
                role,
                secret_sha256,
            } => {
                names::token_name(name)?;
                if let Some(t) = self.tokens.get(name) {
                    return Err(Error::AlreadyExists(format!(
                        "a token named {name:?} was created at seq {}{}; names are never reused",
                        t.created_seq,
                        if t.revoked_seq.is_some() {
                            " (since revoked)"
                        } else {
                            ""
                        }
                    )));
                }
                Ok(Event::TokenIssued {
                    name: name.clone(),
                    role: *role,
                    secret_sha256: secret_sha256.clone(),
                })
            }
            Command::RevokeToken { name } => {
                names::token_name(name)?;
                let t = self
                    .tokens
                    .get(name)
                    .ok_or_else(|| not_found(format!("no token named {name:?}")))?;
                if let Some(s) = t.revoked_seq {
                    return Err(Error::FailedPrecondition(format!(
                        "token {name:?} was already revoked at seq {s}"
                    )));
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
                    self,
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
                let existed = match self.group(group) {
                    Some(g) if g.builtin => {
                        return Err(Error::AlreadyExists(format!(
                            "built-in group {group:?} exists"
                        )))
                    }
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
                if !self.group(group).is_some_and(|g| g.builtin) {
                    return Err(not_found(format!("no built-in group {group:?}")));
                }
                Ok(Event::GrantIssued {
                    subject: Subject::Group(group.clone()),
                    spec: *spec,
                    expires_at_ns: None,
                    reason: format!("built-in group {group:?} from configuration"),
                    builtin: true,
                })
            }
            Command::ReplaceBuiltinGrant { grant_id } => {
                self.open_grant(*grant_id)?;
                Ok(Event::GrantRevoked {
                    grant_id: *grant_id,
                    reason: "the configured grant of this built-in group changed".into(),
                })
            }
            Command::ServerStarted { version } => Ok(Event::ServerStarted {
                version: version.clone(),
            }),
            Command::RecordContainer(o) => {
                check_docker_text("container id", &o.container_id, 128, false)?;
                check_docker_text("container name", &o.name, 256, true)?;
                check_docker_text("image", &o.image, 512, true)?;
                check_docker_text("action", &o.action, 512, false)?;
                for v in o.user.iter().chain(o.decision_id.iter()) {
                    check_docker_text("label", v, 256, true)?;
                }
                Ok(Event::DockerContainer(o.clone()))
            }
            Command::RaiseAlert(a) => Ok(Event::Alert(a.clone())),
            Command::RecordCheckpoint { at_seq, sha256 } => {
                if *at_seq == 0 || *at_seq >= seq {
                    return Err(Error::InvalidArgument(format!(
                        "a checkpoint at seq {at_seq} cannot be recorded at seq {seq}"
                    )));
                }
                if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(Error::InvalidArgument(
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

    fn open_grant(&self, id: Seq) -> Result<&GrantState, Error> {
        let g = self
            .grants
            .get(&id)
            .ok_or_else(|| not_found(format!("no grant {id}")))?;
        if let Some(end) = &g.ended {
            let how = match end.kind {
                EndKind::Revoked => "revoked",
                EndKind::Expired => "expired",
                EndKind::GroupDeleted => "ended by deleting its group",
            };
            return Err(Error::FailedPrecondition(format!(
                "grant {id} was already {how} at seq {}",
                end.seq
            )));
        }
        Ok(g)
    }

    // === application ===

    /// Applies an event appended at `seq`. Events were validated by `prepare` (or come
    /// from the verified log), so application does not fail; an event that no longer
    /// fits (impossible through `prepare`) is applied as far as it makes sense.
    pub fn apply(&mut self, seq: Seq, time_ns: UnixNanos, actor: &str, event: &Event) {
        self.seq = seq;
        self.time_ns = time_ns;
        match event {
            Event::ServerStarted { .. }
            | Event::SpawnDecided(_)
            | Event::Alert(_)
            | Event::ContainerStopped { .. } => {}
            Event::StateCheckpointed { at_seq, sha256 } => {
                self.checkpoints.insert(*at_seq, Arc::from(sha256.as_str()));
            }
            Event::DockerContainer(o) => self.observe(o),
            Event::GroupCreated { group } => {
                let ix = self.intern_group(group);
                self.groups[ix as usize].group = Some(GroupState {
                    builtin: false,
                    created_seq: seq,
                    members: Members::default(),
                });
            }
            Event::BuiltinGroupRestored { group, .. } => {
                let ix = self.intern_group(group);
                let slot = &mut self.groups[ix as usize];
                slot.group
                    .get_or_insert_with(|| GroupState {
                        builtin: true,
                        created_seq: seq,
                        members: Members::default(),
                    })
                    .builtin = true;
            }
            Event::GroupDeleted { group, .. } => {
                let Some(&gix) = self.group_ix.get(group.as_str()) else {
                    return;
                };
                if let Some(g) = self.groups[gix as usize].group.take() {
                    for uix in g.members.iter() {
                        self.link_member(gix, uix, false);
                    }
                }
                let ids: Vec<Seq> = self
                    .open_grants_of(&Subject::Group(group.clone()))
                    .map(|g| g.id)
                    .collect();
                for id in ids {
                    self.end_grant(
                        id,
                        GrantEnd {
                            seq,
                            kind: EndKind::GroupDeleted,
                            reason: format!("group {group:?} deleted"),
                            time_ns,
                        },
                    );
                }
            }
            Event::MemberAdded { group, user } => {
                if let Some(&gix) = self.group_ix.get(group.as_str()) {
                    if self.groups[gix as usize].group.is_some() {
                        let uix = self.intern_user(user);
                        self.link_member(gix, uix, true);
                    }
                }
            }
            Event::MemberRemoved { group, user } => {
                if let (Some(&gix), Some(&uix)) = (
                    self.group_ix.get(group.as_str()),
                    self.user_ix.get(user.as_str()),
                ) {
                    self.link_member(gix, uix, false);
                }
            }
            Event::GrantIssued {
                subject,
                spec,
                expires_at_ns,
                reason,
                builtin,
            } => {
                let grant = GrantState {
                    id: seq,
                    subject: subject.clone(),
                    spec: *spec,
                    expires_at_ns: *expires_at_ns,
                    reason: reason.clone(),
                    issued_by: actor.to_string(),
                    issued_at_ns: time_ns,
                    builtin: *builtin,
                    ended: None,
                };
                let grant = Arc::new(grant);
                self.index_grant(&grant);
                self.grants.insert(seq, grant);
            }
            Event::GrantRevoked { grant_id, reason } => self.end_grant(
                *grant_id,
                GrantEnd {
                    seq,
                    kind: EndKind::Revoked,
                    reason: reason.clone(),
                    time_ns,
                },
            ),
            Event::GrantExpired {
                grant_id,
                expired_at_ns,
            } => self.end_grant(
                *grant_id,
                GrantEnd {
                    seq,
                    kind: EndKind::Expired,
                    reason: "expired".into(),
                    time_ns: *expired_at_ns,
                },
            ),
            Event::TokenIssued {
                name,
                role,
                secret_sha256,
            } => {
                self.token_hashes
                    .insert(secret_sha256.clone(), name.clone());
                self.tokens.insert(
                    name.clone(),
                    TokenState {
                        name: name.clone(),
                        role: *role,
                        secret_sha256: secret_sha256.clone(),
                        created_seq: seq,
                        created_by: actor.to_string(),
                        revoked_seq: None,
                    },
                );
            }
            Event::TokenRevoked { name } => {
                if let Some(t) = self.tokens.get_mut(name) {
                    t.revoked_seq = Some(seq);
                    let h = t.secret_sha256.clone();
                    self.token_hashes.remove(&h);
                }
            }
        }
    }

    fn observe(&mut self, o: &ContainerObserved) {
        let base = o.action.split(':').next().unwrap_or("").trim();
        match base {
            "destroy" | "vanished" => {
                self.containers.remove(&o.container_id);
            }
            "create" | "start" | "die" | "reconciled" => {
                let running = o.running.unwrap_or(base == "start");
                let rec = match self.containers.get(&o.container_id) {
                    // Without an inspect the event says less than what we knew.
                    Some(k) if !o.inspected => ContainerRecord {
                        running,
                        ..k.clone()
                    },
                    _ => ContainerRecord {
                        id: o.container_id.clone(),
                        name: o.name.clone(),
                        user: o.user.clone(),
                        decision_id: o.decision_id.clone(),
                        socket: o.socket_mode(),
                        privileged: o.privileged,
                        running,
                        exempt: o.exempt,
                    },
                };
                self.containers.insert(o.container_id.clone(), rec);
            }
            _ => {}
        }
    }

    fn intern_user(&mut self, name: &str) -> Ix {
        match self.user_ix.get(name) {
            Some(&ix) => ix,
            None => self.intern_user_arc(Arc::from(name)),
        }
    }

    fn intern_user_arc(&mut self, name: Arc<str>) -> Ix {
        if let Some(&ix) = self.user_ix.get(&*name) {
            return ix;
        }
        let ix = self.users.len() as Ix;
        self.users.push_back(UserSlot {
            name: name.clone(),
            groups: Arc::from([]),
            grants: None,
        });
        self.user_ix.insert(name, ix);
        ix
    }

    fn intern_group(&mut self, name: &str) -> Ix {
        match self.group_ix.get(name) {
            Some(&ix) => ix,
            None => self.intern_group_arc(Arc::from(name)),
        }
    }

    fn intern_group_arc(&mut self, name: Arc<str>) -> Ix {
        if let Some(&ix) = self.group_ix.get(&*name) {
            return ix;
        }
        let ix = self.groups.len() as Ix;
        self.groups.push_back(GroupSlot {
            name: name.clone(),
            group: None,
            grants: None,
        });
        self.group_summaries.push_back(policy::Summary::default());
        self.group_ix.insert(name, ix);
        ix
    }

    /// Adds (`member`) or removes user `uix` to or from group `gix`, on both sides.
    fn link_member(&mut self, gix: Ix, uix: Ix, member: bool) {
        if let Some(g) = self.groups[gix as usize].group.as_mut() {
            if member {
                g.members.insert(uix);
            } else {
                g.members.remove(uix);
            }
        }
        let slot = &mut self.users[uix as usize];
        let at = slot.groups.binary_search(&gix);
        let mut groups = slot.groups.to_vec();
        match (at, member) {
            (Err(i), true) => groups.insert(i, gix),
            (Ok(i), false) => {
                groups.remove(i);
            }
            _ => return,
        }
        slot.groups = Arc::from(groups);
    }

    /// Replaces the open-grant set of `subject` by `f` of it, interning its name.
    fn update_grants(
        &mut self,
        subject: &Subject,
        f: impl FnOnce(Option<&GrantSet>) -> Option<Arc<GrantSet>>,
    ) {
        match subject {
            Subject::User(u) => {
                let ix = self.intern_user(u);
                let slot = &mut self.users[ix as usize];
                slot.grants = f(slot.grants.as_deref());
            }
            Subject::Group(g) => {
                let ix = self.intern_group(g);
                self.set_group_grants(ix, f(self.groups[ix as usize].grants.as_deref()));
            }
        }
    }

    fn set_group_grants(&mut self, ix: Ix, set: Option<Arc<GrantSet>>) {
        self.group_summaries[ix as usize] = set.as_deref().map(|s| s.summary).unwrap_or_default();
        self.groups[ix as usize].grants = set;
    }

    /// The summary of group `ix`'s grants.
    pub(super) fn group_summary(&self, ix: Ix) -> &policy::Summary {
        &self.group_summaries[ix as usize]
    }

    fn index_grant(&mut self, g: &Arc<GrantState>) {
        if g.ended.is_some() {
            return;
        }
        self.update_grants(&g.subject, |set| GrantSet::with(set, g.clone()));
        if let Some(exp) = g.expires_at_ns {
            self.expiring.insert((exp, g.id));
        }
    }

    fn end_grant(&mut self, id: Seq, end: GrantEnd) {
        let Some(g) = self.grants.get_mut(&id) else {
            return;
        };
        if g.ended.is_some() {
            return;
        }
        // The set still shares the grant; it drops it just below.
        let g = Arc::make_mut(g);
        g.ended = Some(end);
        let (subject, exp) = (g.subject.clone(), g.expires_at_ns);
        self.update_grants(&subject, |set| GrantSet::without(set, id));
        if let Some(exp) = exp {
            self.expiring.remove(&(exp, id));
        }
    }

    // === checkpoints ===

    /// The checkpoint encoding (JSON; every map key is a string, so it cannot fail
    /// short of running out of memory, which aborts).
    pub fn to_checkpoint(&self) -> Result<Vec<u8>, String> {
        let cp = Checkpoint {
            version: CHECKPOINT_VERSION,
            seq: self.seq,
            hash: hex::encode(self.hash),
            genesis: hex::encode(self.genesis),
            time_ns: self.time_ns,
            users: self.users.iter().map(|u| u.name.clone()).collect(),
            group_names: self.groups.iter().map(|g| g.name.clone()).collect(),
            groups: self
                .groups
                .iter()
                .enumerate()
                .filter_map(|(ix, slot)| {
                    slot.group.as_ref().map(|g| CheckpointGroup {
                        ix: ix as Ix,
                        builtin: g.builtin,
                        created_seq: g.created_seq,
                        members: g.members.iter().collect(),
                    })
                })
                .collect(),
            grants: self.grants.values().cloned().collect(),
            tokens: self.tokens.values().cloned().collect(),
            containers: self.containers.values().cloned().collect(),
            checkpoints: self
                .checkpoints
                .iter()
                .map(|(s, d)| (*s, d.clone()))
                .collect(),
        };
        serde_json::to_vec(&cp).map_err(|e| e.to_string())
    }

    /// Reads a checkpoint. It is decoded from the reader, names and grants straight
    /// into their final allocations: a whole-file buffer and intermediate copies would
    /// be tens of megabytes the allocator keeps after start-up.
    pub fn from_checkpoint(reader: impl std::io::Read) -> Result<State, String> {
        let cp: Checkpoint = serde_json::from_reader(reader).map_err(|e| e.to_string())?;
        if cp.version != CHECKPOINT_VERSION {
            return Err(format!(
                "checkpoint version {} (this build reads {CHECKPOINT_VERSION})",
                cp.version
            ));
        }
        let mut st = State {
            seq: cp.seq,
            time_ns: cp.time_ns,
            ..State::default()
        };
        hex::decode_to_slice(&cp.hash, &mut st.hash).map_err(|e| e.to_string())?;
        hex::decode_to_slice(&cp.genesis, &mut st.genesis).map_err(|e| e.to_string())?;
        // Interned in the order they were, so indices equal those of a full replay.
        let (n_users, n_groups) = (cp.users.len(), cp.group_names.len());
        for u in cp.users {
            st.intern_user_arc(u);
        }
        for g in cp.group_names {
            st.intern_group_arc(g);
        }
        if st.users.len() != n_users || st.groups.len() != n_groups {
            return Err("checkpoint repeats a name".into());
        }
        let mut user_groups: Vec<Vec<Ix>> = vec![Vec::new(); n_users];
        for g in cp.groups {
            if g.ix as usize >= n_groups {
                return Err(format!("checkpoint group index {} out of range", g.ix));
            }
            for &m in &g.members {
                user_groups
                    .get_mut(m as usize)
                    .ok_or_else(|| format!("checkpoint member index {m} out of range"))?
                    .push(g.ix);
            }
            st.groups[g.ix as usize].group = Some(GroupState {
                builtin: g.builtin,
                created_seq: g.created_seq,
                members: g.members.into_iter().collect(),
            });
        }
        for (ix, mut groups) in user_groups.into_iter().enumerate() {
            if !groups.is_empty() {
                groups.sort_unstable();
                st.users[ix].groups = Arc::from(groups);
            }
        }
        // Each subject's set built once (inserting one by one copies it every time).
        type Sets = std::collections::HashMap<Ix, Vec<Arc<GrantState>>>;
        let (mut user_sets, mut group_sets) = (Sets::default(), Sets::default());
        for g in cp.grants {
            if g.ended.is_none() {
                if let Some(exp) = g.expires_at_ns {
                    st.expiring.insert((exp, g.id));
                }
                let set = match &g.subject {
                    Subject::User(u) => user_sets.entry(st.intern_user(u)).or_default(),
                    Subject::Group(n) => group_sets.entry(st.intern_group(n)).or_default(),
                };
                set.push(g.clone());
            }
            st.grants.insert(g.id, g);
        }
        for (ix, mut grants) in user_sets {
            grants.sort_unstable_by_key(|g| g.id);
            st.users[ix as usize].grants = GrantSet::of(grants);
        }
        for (ix, mut grants) in group_sets {
            grants.sort_unstable_by_key(|g| g.id);
            st.set_group_grants(ix, GrantSet::of(grants));
        }
        for c in cp.containers {
            st.containers.insert(c.id.clone(), c);
        }
        st.checkpoints = cp.checkpoints.into_iter().collect();
        for t in cp.tokens {
            if t.revoked_seq.is_none() {
                st.token_hashes
                    .insert(t.secret_sha256.clone(), t.name.clone());
            }
            st.tokens.insert(t.name.clone(), t);
        }
        Ok(st)
    }
}

/// Text that comes from the Docker daemon or an imported file: bounded, no control
/// characters.
fn check_docker_text(what: &str, v: &str, max: usize, allow_empty: bool) -> Result<(), Error> {
    if (v.is_empty() && !allow_empty) || v.len() > max || v.chars().any(char::is_control) {
        return Err(Error::InvalidArgument(format!(
            "{what} {:?} is empty, longer than {max} bytes, or has control characters",
            v.chars().take(80).collect::<String>()
        )));
    }
    Ok(())
}

pub fn validate_spec(spec: &GrantSpec) -> Result<(), Error> {
    let bad = |m: &str| Err(Error::InvalidArgument(m.to_string()));
    if spec.socket != SocketAccess::Raw && spec.socket_mode != SocketMode::Rw {
        return bad("socket_mode ro applies only to a raw socket grant");
    }
    if spec.socket != SocketAccess::Limited && !spec.limits.is_empty() {
        return bad("limits apply only to a limited socket grant");
    }
    if spec.socket == SocketAccess::None && !spec.privileged {
        return bad("the grant gives nothing: set a socket (raw or limited) or privileged");
    }
    for (name, v) in [
        ("max_storage_gb", spec.limits.max_storage_gb),
        ("cpu_cap_cores", spec.limits.cpu_cap_cores),
        ("mem_cap_gb", spec.limits.mem_cap_gb),
    ] {
        if let Some(v) = v {
            if !v.is_finite() || !(0.0..=1_000_000.0).contains(&v) {
                return Err(Error::InvalidArgument(format!(
                    "{name} must be a number from 0 to 1000000, not {v}"
                )));
            }
        }
    }
    Ok(())
}

/// Version 2 keeps names interned: members are user indices (version 1 repeated every
/// member's name); version 3 adds the recorded checkpoint digests. A checkpoint of
/// another version is skipped; start-up then replays from an older one or the start.
const CHECKPOINT_VERSION: u32 = 3;

#[derive(Serialize, Deserialize)]
struct CheckpointGroup {
    ix: Ix,
    builtin: bool,
    created_seq: Seq,
    members: Vec<Ix>,
}

#[derive(Serialize, Deserialize)]
struct Checkpoint {
    version: u32,
    seq: Seq,
    hash: String,
    genesis: String,
    time_ns: UnixNanos,
    /// Every user name ever interned, in index order.
    users: Vec<Arc<str>>,
    /// Every group name ever interned, in index order.
    group_names: Vec<Arc<str>>,
    /// The groups that exist.
    groups: Vec<CheckpointGroup>,
    grants: Vec<Arc<GrantState>>,
    tokens: Vec<TokenState>,
    containers: Vec<ContainerRecord>,
    checkpoints: Vec<(Seq, Arc<str>)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_grow_past_the_small_form_and_compare_by_content() {
        let mut m = Members::default();
        for ix in (0..(SMALL_GROUP as Ix + 10)).rev() {
            m.insert(ix);
            m.insert(ix); // twice: a set
        }
        assert!(matches!(m, Members::Large(_)));
        assert_eq!(m.len(), SMALL_GROUP + 10);
        for ix in 0..20 {
            m.remove(ix);
        }
        assert!(!m.contains(5) && m.contains(20));
        let same: Members = (20..(SMALL_GROUP as Ix + 10)).collect();
        assert!(matches!(same, Members::Small(_)));
        assert_eq!(m, same, "equal whatever the form");
        assert!(m.iter().eq(20..(SMALL_GROUP as Ix + 10)), "ascending");
        let mut small = Members::default();
        small.insert(3);
        small.insert(1);
        small.remove(3);
        assert_eq!(small.iter().collect::<Vec<_>>(), vec![1]);
    }
}
