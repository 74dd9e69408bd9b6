//! The ledger's vocabulary: events, grants, subjects and the stored entry body.
//!
//! These types are serialized (JSON) into the exact bytes that the hash chain covers,
//! so renaming a field or a variant changes the on-disk format: add, never rename.

use serde::{Deserialize, Serialize};

use super::text_enum::text_enum;

/// A ledger position. Dense, from 1, never reused.
pub type Seq = u64;

/// Unix time in nanoseconds.
pub type UnixNanos = i64;

/// Who or what a grant is given to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Subject {
    User(String),
    Group(String),
}

impl std::fmt::Display for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Subject::User(u) => write!(f, "user:{u}"),
            Subject::Group(g) => write!(f, "group:{g}"),
        }
    }
}

text_enum! {
    /// Docker socket access, ordered so that `max` combines grants: raw supersedes
    /// limited supersedes none.
    #[derive(PartialOrd, Ord, Default)]
    pub enum SocketAccess: "socket access" {
        #[default]
        None = "none",
        Limited = "limited",
        Raw = "raw",
    }
}

text_enum! {
    #[derive(Default)]
    pub enum SocketMode: "socket mode" {
        #[default]
        Rw = "rw",
        Ro = "ro",
    }
}

text_enum! {
    /// Whether a limited user's containers may publish ports on the host.
    #[derive(Default)]
    pub enum PublishPorts: "publish" {
        /// No port is published.
        #[default]
        Off = "off",
        /// Ports are bound on 127.0.0.1 only.
        Loopback = "loopback",
    }
}

/// Limits of a `limited` grant as issued: an unset field takes its default.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Limits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_containers: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_volumes: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_networks: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_storage_gb: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_cap_cores: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_cap_gb: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_dangerous_flags: Option<bool>,
    /// The most processes one container may hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pids: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish: Option<PublishPorts>,
    /// Image builds (the classic builder) through the limited socket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_build: Option<bool>,
    /// Image references the user may pull (patterns over `registry/repo[:tag]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pull_allow: Vec<String>,
    /// Registries (patterns over `registry/repo[:tag]`) the user may push their own
    /// namespace's images to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub push_allow: Vec<String>,
}

impl Limits {
    pub fn is_empty(&self) -> bool {
        *self == Limits::default()
    }

    /// Every field filled in with DESIGN §2's defaults.
    pub fn resolved(&self) -> EffectiveLimits {
        let d = EffectiveLimits::DEFAULTS;
        EffectiveLimits {
            max_containers: self.max_containers.unwrap_or(d.max_containers),
            max_volumes: self.max_volumes.unwrap_or(d.max_volumes),
            max_networks: self.max_networks.unwrap_or(d.max_networks),
            max_storage_gb: self.max_storage_gb.unwrap_or(d.max_storage_gb),
            cpu_cap_cores: self.cpu_cap_cores.unwrap_or(d.cpu_cap_cores),
            mem_cap_gb: self.mem_cap_gb.unwrap_or(d.mem_cap_gb),
            allow_dangerous_flags: self
                .allow_dangerous_flags
                .unwrap_or(d.allow_dangerous_flags),
            max_pids: self.max_pids.unwrap_or(d.max_pids),
            publish: self.publish.unwrap_or(d.publish),
            allow_build: self.allow_build.unwrap_or(d.allow_build),
            pull_allow: self.pull_allow.clone(),
            push_allow: self.push_allow.clone(),
        }
    }
}

/// Limits after combination; all zero unless the effective socket is `limited`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct EffectiveLimits {
    pub max_containers: u32,
    pub max_volumes: u32,
    pub max_networks: u32,
    pub max_storage_gb: f64,
    pub cpu_cap_cores: f64,
    pub mem_cap_gb: f64,
    pub allow_dangerous_flags: bool,
    /// Absent from decisions recorded before it existed (read as 0).
    #[serde(default)]
    pub max_pids: u32,
    #[serde(default)]
    pub publish: PublishPorts,
    #[serde(default)]
    pub allow_build: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pull_allow: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub push_allow: Vec<String>,
}

impl EffectiveLimits {
    pub const DEFAULTS: EffectiveLimits = EffectiveLimits {
        max_containers: 10,
        max_volumes: 10,
        max_networks: 3,
        max_storage_gb: 50.0,
        cpu_cap_cores: 2.0,
        mem_cap_gb: 8.0,
        allow_dangerous_flags: false,
        max_pids: 4096,
        publish: PublishPorts::Off,
        allow_build: false,
        pull_allow: Vec::new(),
        push_allow: Vec::new(),
    };

    /// Per-field maximum; dangerous flags and builds OR; allowlists unite.
    pub fn max(self, o: EffectiveLimits) -> EffectiveLimits {
        let unite = |a: Vec<String>, b: Vec<String>| {
            let mut v = a;
            for p in b {
                if !v.contains(&p) {
                    v.push(p);
                }
            }
            v
        };
        EffectiveLimits {
            max_containers: self.max_containers.max(o.max_containers),
            max_volumes: self.max_volumes.max(o.max_volumes),
            max_networks: self.max_networks.max(o.max_networks),
            max_storage_gb: self.max_storage_gb.max(o.max_storage_gb),
            cpu_cap_cores: self.cpu_cap_cores.max(o.cpu_cap_cores),
            mem_cap_gb: self.mem_cap_gb.max(o.mem_cap_gb),
            allow_dangerous_flags: self.allow_dangerous_flags || o.allow_dangerous_flags,
            max_pids: self.max_pids.max(o.max_pids),
            publish: if self.publish == PublishPorts::Loopback {
                self.publish
            } else {
                o.publish
            },
            allow_build: self.allow_build || o.allow_build,
            pull_allow: unite(self.pull_allow, o.pull_allow),
            push_allow: unite(self.push_allow, o.push_allow),
        }
    }
}

/// What a grant gives.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct GrantSpec {
    pub socket: SocketAccess,
    /// Meaningful for raw only; stored as rw otherwise.
    pub socket_mode: SocketMode,
    pub privileged: bool,
    #[serde(default, skip_serializing_if = "Limits::is_empty")]
    pub limits: Limits,
}

text_enum! {
    /// API token roles (DESIGN §4).
    pub enum Role: "role" {
        Admin = "admin",
        Spawner = "spawner",
        Auditor = "auditor",
        /// JupyterHub group sync: the membership of synced groups, nothing else.
        Sync = "sync",
        /// A `privledger watch` agent: the Docker observations of the host the token
        /// is named after, nothing else.
        Watcher = "watcher",
    }
}

/// A recorded spawn decision: enough to answer a retry and to correlate containers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpawnDecision {
    pub decision_id: String,
    pub user: String,
    pub server_name: String,
    pub image: String,
    pub evaluated_at_seq: Seq,
    pub allowed: bool,
    pub reason: String,
    pub socket: SocketAccess,
    pub socket_mode: SocketMode,
    pub privileged: bool,
    pub limits: EffectiveLimits,
    /// Contributing grants: (grant id, via group or empty).
    pub grants: Vec<(Seq, String)>,
    pub binds: Vec<String>,
    pub env: Vec<(String, String)>,
    pub labels: Vec<(String, String)>,
}

/// How the daemon socket is mounted into a container, as the inspect shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SocketMount {
    /// The mount's source on the host (the socket itself or a directory holding it).
    pub source: String,
    pub destination: String,
    pub rw: bool,
}

text_enum! {
    /// The lifecycle step a `docker_container` entry records: the daemon's own
    /// actions, and the two a reconcile finds without an event.
    pub enum Lifecycle: "container action" {
        Create = "create",
        Start = "start",
        Die = "die",
        Destroy = "destroy",
        ExecStart = "exec_start",
        /// A reconcile found the container in a state no event reported.
        Reconciled = "reconciled",
        /// A reconcile no longer found a container the ledger knew.
        Vanished = "vanished",
    }
}

impl Lifecycle {
    /// The step an action names: its word before any `:` (`exec_start: sh -c ...`).
    pub fn of_action(action: &str) -> Option<Lifecycle> {
        action.split(':').next()?.trim().parse().ok()
    }

    /// Whether the daemon itself reports this step.
    pub fn is_daemon_step(self) -> bool {
        !matches!(self, Lifecycle::Reconciled | Lifecycle::Vanished)
    }
}

text_enum! {
    /// How privledger learned of a container event.
    pub enum ObservedVia: "observation source" {
        /// The daemon's event stream (live or replayed).
        Events = "events",
        /// A comparison with the daemon's container listing.
        Reconcile = "reconcile",
        /// An imported `docker events` file.
        Import = "import",
        /// A `privledger watch` agent on the host the observation names.
        Agent = "agent",
    }
}

/// A container lifecycle event as privledger saw it (from the daemon's event stream,
/// a reconcile against the container listing, or an imported events file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerObserved {
    pub container_id: String,
    pub name: String,
    pub image: String,
    /// The daemon's action (`create`, `start`, `die`, `destroy`, `exec_start`), or
    /// `reconciled` / `vanished` when a reconcile found a change no event reported.
    pub action: String,
    /// The daemon's event time; the listing time for reconcile entries.
    pub daemon_time_ns: UnixNanos,
    /// The user the container is for: label `privledger.user`, else derived from
    /// DockerSpawner's default name `jupyter-<escaped username>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision_id: Option<String>,
    /// The daemon socket mounts; empty when none (or unknown: see `inspected`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub socket_mounts: Vec<SocketMount>,
    pub privileged: bool,
    /// Whether the container was running after this event, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<bool>,
    /// False when the facts come only from event attributes (the container was gone
    /// before it could be inspected, or the event was imported).
    pub inspected: bool,
    /// Exempted by the configured allowlist (the platform's own containers).
    #[serde(default)]
    pub exempt: bool,
    /// Created through a limited socket (it carries `privledger.owner`): it exists
    /// by its owner's limited grant.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub via_limited_socket: bool,
    pub source: ObservedVia,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    /// The Docker host it was seen on, when a `privledger watch` agent reported it,
    /// and the agent's number for it (dense per host: nothing lost in between).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_seq: Option<u64>,
}

#[cfg(test)]
impl ContainerObserved {
    /// Container `id` named `name` for `user`, just created, as the event stream shows
    /// it: for tests to adjust what they look at.
    pub fn created(id: &str, name: &str, user: Option<&str>) -> ContainerObserved {
        ContainerObserved {
            container_id: id.into(),
            name: name.into(),
            image: "img".into(),
            action: "create".into(),
            daemon_time_ns: 1,
            user: user.map(Into::into),
            decision_id: None,
            socket_mounts: Vec::new(),
            privileged: false,
            running: Some(false),
            inspected: true,
            exempt: false,
            via_limited_socket: false,
            source: ObservedVia::Events,
            exit_code: None,
            host: None,
            host_seq: None,
        }
    }
}

impl ContainerObserved {
    /// The step `action` names, if it is one privledger knows.
    pub fn lifecycle(&self) -> Option<Lifecycle> {
        Lifecycle::of_action(&self.action)
    }

    /// The socket mode the container holds, if any mount gives it the socket.
    pub fn socket_mode(&self) -> Option<SocketMode> {
        if self.socket_mounts.is_empty() {
            None
        } else if self.socket_mounts.iter().any(|m| m.rw) {
            Some(SocketMode::Rw)
        } else {
            Some(SocketMode::Ro)
        }
    }
}

text_enum! {
    pub enum AlertKind: "alert kind" {
        UnauthorizedSocketMount = "unauthorized_socket_mount",
        UnauthorizedPrivileged = "unauthorized_privileged",
        StaleGrant = "stale_grant",
        DockerEventGap = "docker_event_gap",
    }
}

text_enum! {
    /// An entry's kind: the `kind` tag of its event (the variant name of [`Event`]).
    pub enum EventKind: "entry kind" {
        ServerStarted = "server_started",
        GroupCreated = "group_created",
        GroupDeleted = "group_deleted",
        BuiltinGroupRestored = "builtin_group_restored",
        MemberAdded = "member_added",
        MemberRemoved = "member_removed",
        GrantIssued = "grant_issued",
        GrantRevoked = "grant_revoked",
        GrantExpired = "grant_expired",
        TokenIssued = "token_issued",
        TokenRevoked = "token_revoked",
        SpawnDecided = "spawn_decided",
        DockerContainer = "docker_container",
        Alert = "alert",
        ContainerStopped = "container_stopped",
        StateCheckpointed = "state_checkpointed",
        ProxyCall = "proxy_call",
        GroupSyncChanged = "group_sync_changed",
    }
}

/// What a stream filter may name: an entry kind, or an alert's own kind (which
/// selects the alerts of that kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KindFilter {
    Entry(EventKind),
    Alert(AlertKind),
}

impl std::str::FromStr for KindFilter {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        s.parse()
            .map(KindFilter::Entry)
            .or_else(|_| s.parse().map(KindFilter::Alert))
            .map_err(|_| {
                let words: Vec<&str> = EventKind::ALL
                    .iter()
                    .map(|k| k.as_str())
                    .chain(AlertKind::ALL.iter().map(|k| k.as_str()))
                    .collect();
                format!(
                    "unknown entry kind {s:?}; known kinds: {}",
                    words.join(", ")
                )
            })
    }
}

/// Something the ledger's facts say should not be.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub alert: AlertKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision_id: Option<String>,
    /// The entry that made the alert true (a revocation, an observation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger_seq: Option<Seq>,
    /// For gaps: the window in which events may have been lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_from_ns: Option<UnixNanos>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_to_ns: Option<UnixNanos>,
    /// Human-readable evidence.
    pub details: String,
    /// For stale grants: the privileges the container holds that its user lost
    /// (`raw socket (rw)`, `privileged`); the same loss is alerted once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lost: Option<String>,
    /// The Docker host it concerns (a `privledger watch` agent's), and the agent's
    /// number when the agent itself reported it (an event gap).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_seq: Option<u64>,
}

impl Alert {
    /// An alert of `kind` with `details` and nothing else set.
    pub fn new(kind: AlertKind, details: String) -> Alert {
        Alert {
            alert: kind,
            container_id: None,
            name: None,
            user: None,
            decision_id: None,
            trigger_seq: None,
            window_from_ns: None,
            window_to_ns: None,
            lost: None,
            host: None,
            host_seq: None,
            details,
        }
    }
}

text_enum! {
    /// What the limited socket did with a call.
    pub enum ProxyOutcome: "proxy outcome" {
        /// Checked and forwarded to the daemon.
        Forwarded = "forwarded",
        /// Refused by a rule (the reason names it); nothing reached the daemon.
        Refused = "refused",
        /// The daemon's answer to a forwarded call that made or removed images (a
        /// build, pull, import, commit, tag or delete): `images` and `removed` say which.
        Completed = "completed",
    }
}

/// One call through a user's limited socket: every mutating call, and every refusal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProxyCall {
    pub user: String,
    /// The limited decision the socket was opened under, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision_id: Option<String>,
    pub method: String,
    /// The canonical path (or the raw one when it did not parse).
    pub path: String,
    /// The resource the call names (its full id once resolved).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    pub outcome: ProxyOutcome,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// Who was on the other end of the socket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<ProxyPeer>,
    /// A completed call: the image ids it made (or tagged).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<String>,
    /// A completed call: the image ids it deleted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<String>,
}

/// The process that made a call on a limited socket, as the kernel names it
/// (`SO_PEERCRED`), and the container it runs in, when it runs in one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyPeer {
    /// In the server's PID namespace; absent when the peer is outside it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    pub uid: u32,
    pub gid: u32,
    /// The full id of the container the process runs in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
}

/// Everything the ledger records. The variant name (snake_case) is the entry's kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    ServerStarted {
        version: String,
    },
    GroupCreated {
        group: String,
    },
    /// Deleting a group ends its memberships and its grants; both are listed so the
    /// entry reads on its own.
    GroupDeleted {
        group: String,
        removed_members: Vec<String>,
        ended_grants: Vec<Seq>,
        /// Why (required since the reason became mandatory; absent before).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// A built-in group from configuration was missing (or not yet marked built-in)
    /// at start.
    BuiltinGroupRestored {
        group: String,
        existed: bool,
    },
    MemberAdded {
        group: String,
        user: String,
        /// Why, when the caller said (the group sync always does).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    MemberRemoved {
        group: String,
        user: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// An admin marked a group as synced from JupyterHub (its membership then
    /// follows the hub's, through a `sync` token only), or ended that.
    GroupSyncChanged {
        group: String,
        synced: bool,
        reason: String,
    },
    /// The grant's id is this entry's seq.
    GrantIssued {
        subject: Subject,
        spec: GrantSpec,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expires_at_ns: Option<UnixNanos>,
        reason: String,
        #[serde(default)]
        builtin: bool,
    },
    GrantRevoked {
        grant_id: Seq,
        reason: String,
    },
    GrantExpired {
        grant_id: Seq,
        expired_at_ns: UnixNanos,
    },
    /// Only the SHA-256 of the secret is ever recorded.
    TokenIssued {
        name: String,
        role: Role,
        secret_sha256: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expires_at_ns: Option<UnixNanos>,
    },
    TokenRevoked {
        name: String,
    },
    SpawnDecided(SpawnDecision),
    DockerContainer(ContainerObserved),
    Alert(Alert),
    /// A state checkpoint was written: the state as of `at_seq` is the file whose
    /// SHA-256 is `sha256`. Start-up trusts a checkpoint only when an entry after it
    /// records its digest, so an edited checkpoint file never changes an answer.
    StateCheckpointed {
        at_seq: Seq,
        sha256: String,
    },
    /// privledger stopped a container (`on_stale_grant = "stop"`).
    ContainerStopped {
        container_id: String,
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user: Option<String>,
        reason: String,
        ok: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    ProxyCall(ProxyCall),
}

impl Event {
    /// The entry kind as stored (`"kind"` in the body).
    pub fn kind(&self) -> EventKind {
        match self {
            Event::ServerStarted { .. } => EventKind::ServerStarted,
            Event::GroupCreated { .. } => EventKind::GroupCreated,
            Event::GroupDeleted { .. } => EventKind::GroupDeleted,
            Event::BuiltinGroupRestored { .. } => EventKind::BuiltinGroupRestored,
            Event::MemberAdded { .. } => EventKind::MemberAdded,
            Event::MemberRemoved { .. } => EventKind::MemberRemoved,
            Event::GroupSyncChanged { .. } => EventKind::GroupSyncChanged,
            Event::GrantIssued { .. } => EventKind::GrantIssued,
            Event::GrantRevoked { .. } => EventKind::GrantRevoked,
            Event::GrantExpired { .. } => EventKind::GrantExpired,
            Event::TokenIssued { .. } => EventKind::TokenIssued,
            Event::TokenRevoked { .. } => EventKind::TokenRevoked,
            Event::SpawnDecided(_) => EventKind::SpawnDecided,
            Event::DockerContainer(_) => EventKind::DockerContainer,
            Event::Alert(_) => EventKind::Alert,
            Event::ContainerStopped { .. } => EventKind::ContainerStopped,
            Event::StateCheckpointed { .. } => EventKind::StateCheckpointed,
            Event::ProxyCall(_) => EventKind::ProxyCall,
        }
    }

    /// For an alert, its own kind (a stream filter may name it instead of `alert`).
    pub fn alert_kind(&self) -> Option<AlertKind> {
        match self {
            Event::Alert(a) => Some(a.alert),
            _ => None,
        }
    }

    /// Whether the entry concerns `subject`: a user, group, token name, decision id or
    /// grant id (as its decimal seq).
    pub fn concerns(&self, seq: Seq, subject: &str) -> bool {
        let is = |s: &str| s == subject;
        match self {
            Event::ServerStarted { .. } | Event::StateCheckpointed { .. } => false,
            Event::GroupCreated { group }
            | Event::BuiltinGroupRestored { group, .. }
            | Event::GroupSyncChanged { group, .. } => is(group),
            Event::GroupDeleted {
                group,
                removed_members,
                ended_grants,
                ..
            } => {
                is(group)
                    || removed_members.iter().any(|m| is(m))
                    || ended_grants.iter().any(|g| is(&g.to_string()))
            }
            Event::MemberAdded { group, user, .. } | Event::MemberRemoved { group, user, .. } => {
                is(group) || is(user)
            }
            Event::GrantIssued { subject: s, .. } => {
                is(&seq.to_string())
                    || match s {
                        Subject::User(u) => is(u),
                        Subject::Group(g) => is(g),
                    }
            }
            Event::GrantRevoked { grant_id, .. } | Event::GrantExpired { grant_id, .. } => {
                is(&grant_id.to_string())
            }
            Event::TokenIssued { name, .. } | Event::TokenRevoked { name } => is(name),
            Event::SpawnDecided(d) => is(&d.user) || is(&d.decision_id),
            Event::DockerContainer(o) => {
                container_matches(&o.container_id, &o.name, subject)
                    || o.user.as_deref().is_some_and(is)
                    || o.decision_id.as_deref().is_some_and(is)
            }
            Event::Alert(a) => {
                a.container_id
                    .as_deref()
                    .is_some_and(|c| container_matches(c, a.name.as_deref().unwrap_or(""), subject))
                    || a.user.as_deref().is_some_and(is)
                    || a.decision_id.as_deref().is_some_and(is)
            }
            Event::ContainerStopped {
                container_id,
                name,
                user,
                ..
            } => container_matches(container_id, name, subject) || user.as_deref().is_some_and(is),
            Event::ProxyCall(p) => {
                is(&p.user)
                    || p.decision_id.as_deref().is_some_and(is)
                    || p.resource
                        .as_deref()
                        .is_some_and(|r| container_matches(r, "", subject))
                    || p.images
                        .iter()
                        .chain(&p.removed)
                        .any(|i| image_matches(i, subject))
            }
        }
    }
}

/// An image id (`sha256:<hex>`), named in full, by its hex, or by 12 or more of it.
fn image_matches(id: &str, subject: &str) -> bool {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    let s = subject.strip_prefix("sha256:").unwrap_or(subject);
    s.len() >= 12 && hex.starts_with(s)
}

/// A container id (full, or a prefix of at least 12 characters, as `docker ps` shows)
/// or its name.
fn container_matches(id: &str, name: &str, subject: &str) -> bool {
    id == subject
        || (subject.len() >= 12 && id.starts_with(subject))
        || (!name.is_empty() && name == subject)
}

/// The stored, hashed body of one entry. `hash = SHA-256(prev_hash || body bytes)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntryBody {
    pub seq: Seq,
    pub time_ns: UnixNanos,
    pub actor: String,
    /// The client certificate the actor's connection presented (mutual TLS): its
    /// common name, DNS names and SHA-256 fingerprint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor_cert: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// SHA-256 (hex) of what the client asked for ([`super::Command::request_digest`]),
    /// with a request_id: a retry must ask for the same thing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_digest: Option<String>,
    /// Hex of the previous entry's hash (64 zeros for seq 1).
    pub prev_hash: String,
    pub event: Event,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_access_orders_raw_over_limited_over_none() {
        assert!(SocketAccess::Raw > SocketAccess::Limited);
        assert!(SocketAccess::Limited > SocketAccess::None);
    }

    #[test]
    fn a_proxy_call_concerns_its_user_and_the_images_it_made_or_removed() {
        let id = format!("sha256:{}", "ab".repeat(32));
        let call = Event::ProxyCall(ProxyCall {
            user: "alice".into(),
            decision_id: None,
            method: "POST".into(),
            path: "/build".into(),
            resource: Some("alice/app:1".into()),
            outcome: ProxyOutcome::Completed,
            reason: String::new(),
            peer: None,
            images: vec![id.clone()],
            removed: vec![],
        });
        assert!(call.concerns(1, "alice"));
        assert!(call.concerns(1, &id));
        assert!(
            call.concerns(1, &id[7..19]),
            "12 hex digits, as docker images shows"
        );
        assert!(!call.concerns(1, &id[7..15]), "too short to name an image");
        assert!(!call.concerns(1, "bob"));
        let json = serde_json::to_value(&call).unwrap();
        assert_eq!(json["outcome"], "completed");
        assert!(json.get("removed").is_none(), "empty lists are left out");
    }

    #[test]
    fn event_body_is_tagged_json_with_kind() {
        let e = Event::MemberAdded {
            group: "g".into(),
            user: "alice".into(),
            reason: None,
        };
        let json = serde_json::to_string(&e).unwrap();
        assert_eq!(
            json,
            r#"{"kind":"member_added","group":"g","user":"alice"}"#
        );
        assert_eq!(e.kind(), EventKind::MemberAdded);
        assert_eq!(e.kind().as_str(), "member_added");
    }

    #[test]
    fn unset_limits_take_defaults() {
        let l = Limits {
            max_containers: Some(3),
            ..Limits::default()
        }
        .resolved();
        assert_eq!(l.max_containers, 3);
        assert_eq!(l.max_volumes, 10);
        assert_eq!(l.max_networks, 3);
        assert_eq!(l.max_storage_gb, 50.0);
        assert_eq!(l.cpu_cap_cores, 2.0);
        assert_eq!(l.mem_cap_gb, 8.0);
        assert!(!l.allow_dangerous_flags);
    }
}
