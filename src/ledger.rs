//! The ledger: an append-only, hash-chained log of events with the state derived
//! from it.
//!
//! One writer thread owns appends ([`writer`]). Callers send commands over a bounded
//! channel; the writer batches them, appends each batch durably through the
//! [`log::LogStore`] it was given, and only then publishes the new state and answers
//! every caller (group commit: concurrent writers share one flush). Readers load the
//! published `Arc<State>` without taking any lock. Start-up ([`load`]) refuses a store
//! that is not whole unless it was opened read-only for forensics.

mod command;
mod config;
pub mod correlate;
mod entry;
pub mod error;
pub mod event;
mod fold;
mod handle;
pub mod image_ref;
pub mod intervals;
pub mod limited;
mod load;
pub mod log;
pub mod names;
pub mod policy;
mod secret;
pub mod state;
mod stream;
mod text_enum;
mod time;
mod upkeep;
mod verify;
mod writer;

pub use command::{fit_docker_text, validate_spec, Command};
pub use config::{
    LedgerConfig, SpawnConfig, ACTOR_DOCKER, ACTOR_SYSTEM, LABEL_DECISION, LABEL_OWNER, LABEL_USER,
};
pub use entry::{chain_hash, Entry, EntryRecord};
pub use error::Error;
pub use handle::{At, Committed, Head, Ledger};
pub use policy::Access;
pub use secret::{hash_secret, new_secret};
pub use state::State;
pub use stream::StreamFilter;
pub use time::{format_time, now_ns};
pub use verify::{verify_export, VerifyReport};
pub use writer::WriteStatus;

#[cfg(test)]
pub(crate) mod decode_fuzz;
#[cfg(test)]
mod intervals_tests;
#[cfg(test)]
pub(crate) mod tests;
