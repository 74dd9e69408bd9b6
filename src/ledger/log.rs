//! The log-store interface the ledger owns: what any storage engine must do for the
//! ledger, and the errors it may answer with. sled implements it (`crate::store`).
//!
//! The contract, for every implementation:
//! - [`LogStore::append`] writes a batch of entries, their idempotency keys and
//!   metadata atomically and durably: when it returns `Ok`, all of it survives a crash
//!   of the process, the kernel or the machine; when it returns an error, none of it
//!   is visible, now or after a restart, unless the error is a crash-like one the
//!   caller cannot distinguish (then [`LogStore::discard_after`] removes it).
//! - It compares on the head: a batch states the seq and hash it extends, and a store
//!   whose head is different refuses it ([`StoreError::HeadMoved`]). One writer per
//!   ledger is the rule; the check makes a second one (a writer that lost its lease in
//!   a cluster) unable to fork the chain.
//! - Its head is witnessed outside the structure that can lose it
//!   ([`LogStore::witness`]), so that a store that silently lost its tail is told apart
//!   from one that never had it.
//!
//! An etcd implementation fits this shape without touching the ledger's callers: an
//! append is one transaction that compares the writer's election key and the head key,
//! then puts the batch under a write-once `log/<first seq>` key and the new head; the
//! head key is the witness; reads come from the node's local copy of the chain.

use super::event::{Seq, UnixNanos};

/// One entry as stored: its hash and the exact body bytes the hash covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEntry {
    pub seq: Seq,
    pub hash: [u8; 32],
    /// Shares the storage's buffer: streaming the log copies no body.
    pub body: bytes::Bytes,
}

/// The durable head a store recorded outside its log structure (the default: the
/// head of an empty log).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Witness {
    pub seq: Seq,
    pub hash: [u8; 32],
}

/// An idempotency key (`actor \0 request_id`) and the entry it first produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    pub key: Vec<u8>,
    pub seq: Seq,
    pub time_ns: UnixNanos,
}

/// What one append writes, all or nothing.
#[derive(Debug, Clone, Copy)]
pub struct AppendBatch<'a> {
    /// The head this batch extends: seq 0 and the zero hash for an empty log.
    pub prev: Witness,
    /// Dense, starting at `prev.seq + 1`, each chained to the one before.
    pub entries: &'a [RawEntry],
    pub idempotency: &'a [IdempotencyKey],
    /// Small named values kept beside the log (the Docker watcher's cursor).
    pub meta: &'a [(&'a str, &'a [u8])],
}

/// A checkpoint file as found, not yet trusted.
pub struct StoredCheckpoint {
    pub seq: Seq,
    pub reader: Box<dyn std::io::Read + Send>,
}

/// Why a store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store cannot write now (disk full, read-only or failing filesystem, a
    /// storage engine that stopped after an I/O error). Nothing of the batch is
    /// acknowledged; writing may succeed again later ([`LogStore::recover`]).
    #[error("storage cannot write: {reason}")]
    CannotWrite { reason: String },
    /// Reading failed for a reason other than damage (an I/O error).
    #[error("storage read failed: {reason}")]
    Read { reason: String },
    /// What is stored does not decode or does not fit together.
    #[error("stored data is damaged at seq {seq}: {reason}")]
    Damaged { seq: Seq, reason: String },
    /// The batch does not extend the store's head.
    #[error("the log's head is seq {found}, not seq {expected} as this writer believed")]
    HeadMoved { expected: Seq, found: Seq },
    /// The store was opened read-only.
    #[error("the store is open read-only")]
    ReadOnly,
    /// A cluster node that does not hold the writer's lease (now, or any longer):
    /// nothing of the batch was written. Not a storage fault: the writer's node takes
    /// the write, and this node follows it.
    #[error("this node is not the cluster's writer: {reason}")]
    NotWriter { reason: String },
    /// The cluster's log may hold the write, or does, without this node having
    /// confirmed it: whoever writes next reads the head first, so a retry with the
    /// same request id is answered with what was recorded.
    /// `local_failed`: this node's own store refused it (it stalls until writable).
    #[error("the write was not confirmed: {reason}")]
    Unconfirmed { reason: String, local_failed: bool },
    /// The storage files cannot be opened at all (the engine's own files are damaged),
    /// or the data directory is refused.
    #[error("{reason}")]
    Unusable { reason: String },
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Storage of the ledger's log. Implementations are shared between the writer thread
/// and readers (streams, verify, point-in-time), so every method takes `&self`.
pub trait LogStore: Send + Sync + 'static {
    /// Writes the batch atomically and durably; see the module doc for the contract.
    fn append(&self, batch: AppendBatch<'_>) -> StoreResult<()>;

    /// Stores a batch that another node already appended to the shared log (a cluster
    /// follower applying it): the same all-or-nothing, durable write as
    /// [`LogStore::append`], to this node's copy only. A single-node store has no
    /// other copy, so the default is [`LogStore::append`].
    fn store_replicated(&self, batch: AppendBatch<'_>) -> StoreResult<()> {
        self.append(batch)
    }

    /// After a failed append: makes the store writable again if it can (a fresh
    /// handle on the storage, a probe write), with its head at `head`, dropping any
    /// entry beyond it (entries of a failed batch were never acknowledged). Errors
    /// leave the store refusing writes; the caller retries later.
    fn recover(&self, head: Witness) -> StoreResult<()>;

    fn get(&self, seq: Seq) -> StoreResult<Option<RawEntry>>;

    /// Up to `limit` entries with seq in `[from, to]`, in order.
    fn range(&self, from: Seq, to: Seq, limit: usize) -> StoreResult<Vec<RawEntry>>;

    /// The last stored entry.
    fn last(&self) -> StoreResult<Option<RawEntry>>;

    /// The earliest retained seq (`None` for an empty log).
    fn earliest(&self) -> StoreResult<Option<Seq>>;

    /// The durable head recorded outside the log structure, if any.
    fn witness(&self) -> StoreResult<Option<Witness>>;

    /// The seq the key first produced, if recorded.
    fn idempotency_get(&self, key: &[u8]) -> StoreResult<Option<Seq>>;

    fn meta_get(&self, key: &str) -> StoreResult<Option<Vec<u8>>>;

    /// Stores a checkpoint durably (whole or not at all). Checkpoints are a cache of
    /// the log kept on the local node; the ledger trusts one only once it is proven
    /// against the chain.
    fn put_checkpoint(&self, seq: Seq, bytes: &[u8]) -> StoreResult<()>;

    /// Deletes old checkpoints, keeping the newest `newest` and the oldest one in each
    /// window of `window` seqs.
    fn prune_checkpoints(&self, newest: usize, window: u64) -> StoreResult<()>;

    /// The seqs of the stored checkpoints, ascending.
    fn checkpoint_seqs(&self) -> StoreResult<Vec<Seq>>;

    fn open_checkpoint(&self, seq: Seq) -> StoreResult<StoredCheckpoint>;

    /// Whether writes are refused because the store was opened for forensics.
    fn read_only(&self) -> bool;
}
