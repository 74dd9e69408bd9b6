//! The ledger's error type: each variant names a cause, and `api::status` is the one
//! place it becomes a gRPC status. A denial is not an error: see `policy::Access`.

use super::event::{EventKind, Seq};
use super::state::EndKind;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    // === the request itself is wrong ===
    /// A name or text field breaks the input rules (`names`); the message says which.
    #[error("{problem}")]
    InvalidText {
        field: &'static str,
        problem: String,
    },
    /// A grant spec that is contradictory or out of bounds.
    #[error("{0}")]
    InvalidGrant(String),
    #[error("expiry {0} is not in the future")]
    ExpiryNotInFuture(String),
    #[error("{0}")]
    UnknownKind(String),
    #[error("seq {seq} is beyond the head ({head})")]
    BeyondHead { seq: Seq, head: Seq },
    #[error("from_seq {from} is after to_seq {to}")]
    ReversedRange { from: Seq, to: Seq },
    #[error("the window ends ({to}) before it starts ({from})")]
    ReversedWindow { from: String, to: String },
    #[error("from_seq {from} is before the earliest retained entry ({earliest})")]
    BeforeEarliest { from: Seq, earliest: Seq },
    #[error(
        "request_id {request_id:?} was already used for a different request ({kind} at seq \
         {seq}); a retry must repeat the request exactly, a new request needs a new request_id"
    )]
    RequestIdReused {
        request_id: String,
        kind: EventKind,
        seq: Seq,
    },
    /// A checkpoint record that cannot be right (only the checkpointer sends them).
    #[error("{0}")]
    InvalidCheckpointRecord(String),
    #[error("the entry cannot be encoded: {0}")]
    Unencodable(String),

    // === what it names does not exist ===
    #[error("no group {0:?}")]
    NoSuchGroup(String),
    #[error("no built-in group {0:?}")]
    NoSuchBuiltinGroup(String),
    #[error("user {user:?} is not a member of group {group:?}")]
    NotAMember { group: String, user: String },
    #[error("no grant {0}")]
    NoSuchGrant(Seq),
    #[error("no token named {0:?}")]
    NoSuchToken(String),

    // === it exists already ===
    #[error("group {0:?} already exists")]
    GroupExists(String),
    #[error("built-in group {0:?} exists")]
    BuiltinGroupExists(String),
    #[error(
        "group name {group:?} could be mistaken for the existing group {existing:?} \
         (they look alike); choose a name that reads differently"
    )]
    ConfusableGroup { group: String, existing: String },
    #[error("user {user:?} is already a member of group {group:?}")]
    AlreadyAMember { group: String, user: String },
    #[error(
        "a token named {name:?} was created at seq {created_seq}{}; names are never reused",
        if *revoked { " (since revoked)" } else { "" }
    )]
    TokenNameTaken {
        name: String,
        created_seq: Seq,
        revoked: bool,
    },

    // === the state does not allow it ===
    #[error("group {0:?} is built in (from configuration) and cannot be deleted")]
    BuiltinGroup(String),
    #[error("grant {0} belongs to a built-in group; change it in the configuration")]
    BuiltinGrant(Seq),
    #[error("grant {0} has not expired")]
    NotExpired(Seq),
    #[error("grant {id} was already {} at seq {seq}", ended_how(*how))]
    GrantEnded { id: Seq, how: EndKind, seq: Seq },
    #[error("token {name:?} was already revoked at seq {seq}")]
    TokenRevoked { name: String, seq: Seq },
    #[error(
        "token {0:?} is the last usable admin token; create another admin token first \
         (or recover offline with `privledger admin-token --data DIR`)"
    )]
    LastAdmin(String),
    #[error(
        "group {0:?} is synced from JupyterHub: change its members in the hub (admin panel or \
         REST API), or end the sync first (`privledger group sync {0} off --reason ...`)"
    )]
    SyncedGroup(String),
    #[error("group {group:?} is {} synced from JupyterHub", if *synced { "already" } else { "not" })]
    SyncUnchanged { group: String, synced: bool },

    // === the caller may not ===
    #[error(
        "group {0:?} is not synced from JupyterHub: a sync token changes only synced groups \
         (an admin marks one with `privledger group sync {0} on`)"
    )]
    NotSyncedGroup(String),

    // === nothing could be recorded now ===
    #[error(
        "ledger unavailable: the ledger is open read-only for forensics: nothing can be written"
    )]
    ReadOnly,
    #[error("ledger unavailable: the ledger is shutting down")]
    ShuttingDown,
    #[error("ledger unavailable: the ledger writer stopped")]
    WriterStopped,
    /// An agent's report is not its host's next number: a repeat (already recorded)
    /// or a gap (reports were lost between).
    #[error("host {host}: expected report {expected}, got {got}")]
    HostOutOfOrder {
        host: String,
        expected: u64,
        got: u64,
    },
    /// A batch from the cluster's log does not follow this node's head.
    #[error("the cluster's batch at seq {first} does not follow this node's head (seq {head})")]
    ReplicaGap { head: Seq, first: Seq },
    /// The store refused the write (or is stalled after refusing one).
    #[error("ledger unavailable: {0}; nothing was recorded")]
    NotRecorded(String),
    /// The store could not confirm the write: it may have been recorded.
    #[error(
        "ledger unavailable: {0}; it may have been recorded: retry with the same request_id, \
         which returns what was recorded (a retry without one may record it twice)"
    )]
    OutcomeUnknown(String),
    #[error("unavailable: the limited Docker socket could not be opened: {0}")]
    SocketNotOpened(String),
    #[error("ledger unavailable: no randomness available: {0}")]
    NoRandomness(String),
    #[error("ledger unavailable: cannot start the {thread}: {reason}")]
    ThreadNotStarted {
        thread: &'static str,
        reason: String,
    },
    /// A blocking task (a read off the async threads) did not finish.
    #[error("ledger unavailable: {task} task: {reason}")]
    TaskFailed { task: &'static str, reason: String },

    /// A stream's consumer took nothing for `after`: the stream was ended to free
    /// what it held.
    #[error(
        "the stream was ended: nothing was read from it for {}; reopen it from seq {resume_from}",
        humantime::format_duration(*after)
    )]
    StreamStalled {
        after: std::time::Duration,
        resume_from: Seq,
    },

    // === what is stored is not right ===
    /// A stored entry cannot be decoded.
    #[error("stored entry {seq} is corrupt: {reason}")]
    Corrupt { seq: Seq, reason: String },
    /// Start-up found the stored log not whole: serving it would present a shorter or
    /// different history as if it were the ledger.
    #[error(
        "refusing to serve this ledger: at seq {seq}: {reason}. Nothing was changed; \
         `privledger serve --read-only` opens it for forensics"
    )]
    Refused { seq: Seq, reason: String },
    /// An appended entry did not produce what it must have (a bug, not an input).
    #[error("internal inconsistency: {0}")]
    Inconsistent(&'static str),
    #[error(transparent)]
    Store(#[from] super::log::StoreError),
}

/// The kind of cause an error names: all the API needs to choose a status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The request itself is wrong.
    BadInput,
    /// What it names does not exist.
    Missing,
    /// It exists already.
    Exists,
    /// The state does not allow it.
    NotAllowed,
    /// The caller's role may not do this to what it names.
    Forbidden,
    /// Nothing could be recorded now; a retry may succeed.
    Unavailable,
    /// Storage is failing to read or to be used.
    StorageFailing,
    /// What is stored is not right.
    Damaged,
    /// A bug.
    Internal,
}

impl Error {
    pub fn cause(&self) -> Cause {
        use super::log::StoreError;
        match self {
            Error::InvalidText { .. }
            | Error::InvalidGrant(_)
            | Error::ExpiryNotInFuture(_)
            | Error::UnknownKind(_)
            | Error::BeyondHead { .. }
            | Error::ReversedRange { .. }
            | Error::ReversedWindow { .. }
            | Error::BeforeEarliest { .. }
            | Error::InvalidCheckpointRecord(_)
            | Error::Unencodable(_) => Cause::BadInput,
            Error::NoSuchGroup(_)
            | Error::NoSuchBuiltinGroup(_)
            | Error::NotAMember { .. }
            | Error::NoSuchGrant(_)
            | Error::NoSuchToken(_) => Cause::Missing,
            Error::GroupExists(_)
            | Error::BuiltinGroupExists(_)
            | Error::AlreadyAMember { .. }
            | Error::ConfusableGroup { .. }
            | Error::TokenNameTaken { .. } => Cause::Exists,
            Error::BuiltinGroup(_)
            | Error::BuiltinGrant(_)
            | Error::NotExpired(_)
            | Error::GrantEnded { .. }
            | Error::TokenRevoked { .. }
            | Error::LastAdmin(_)
            | Error::SyncedGroup(_)
            | Error::SyncUnchanged { .. }
            | Error::RequestIdReused { .. }
            | Error::HostOutOfOrder { .. } => Cause::NotAllowed,
            Error::NotSyncedGroup(_) => Cause::Forbidden,
            Error::ReadOnly
            | Error::ShuttingDown
            | Error::WriterStopped
            | Error::ReplicaGap { .. }
            | Error::NotRecorded(_)
            | Error::OutcomeUnknown(_)
            | Error::NoRandomness(_)
            | Error::SocketNotOpened(_)
            | Error::ThreadNotStarted { .. }
            | Error::TaskFailed { .. }
            | Error::StreamStalled { .. }
            | Error::Store(
                StoreError::CannotWrite { .. }
                | StoreError::ReadOnly
                | StoreError::NotWriter { .. }
                | StoreError::Unconfirmed { .. },
            ) => Cause::Unavailable,
            Error::Store(
                StoreError::Read { .. }
                | StoreError::HeadMoved { .. }
                | StoreError::Unusable { .. },
            ) => Cause::StorageFailing,
            Error::Corrupt { .. }
            | Error::Refused { .. }
            | Error::Store(StoreError::Damaged { .. }) => Cause::Damaged,
            Error::Inconsistent(_) => Cause::Internal,
        }
    }

    /// Nothing was recorded because the ledger cannot write now; a retry may succeed.
    pub fn is_unavailable(&self) -> bool {
        self.cause() == Cause::Unavailable
    }

    pub(super) fn task(task: &'static str) -> impl FnOnce(tokio::task::JoinError) -> Error {
        move |e| Error::TaskFailed {
            task,
            reason: e.to_string(),
        }
    }
}

fn ended_how(how: EndKind) -> &'static str {
    match how {
        EndKind::Revoked => "revoked",
        EndKind::Expired => "expired",
        EndKind::GroupDeleted => "ended by deleting its group",
    }
}
