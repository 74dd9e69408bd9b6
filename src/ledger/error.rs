//! The ledger's error type. A denial is not an error: see `policy::Access`.

use super::event::Seq;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Malformed or out-of-bounds input.
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    /// Valid input that the current state does not allow (e.g. deleting a built-in
    /// group, revoking a revoked grant).
    #[error("{0}")]
    FailedPrecondition(String),
    /// Storage cannot write, or the ledger is shutting down: nothing was acknowledged.
    #[error("ledger unavailable: {0}")]
    Unavailable(String),
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
    #[error(transparent)]
    Store(#[from] super::log::StoreError),
}
