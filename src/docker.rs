//! Docker: what the daemon did, turned into ledger facts. The watcher follows the
//! daemon's container events, records each lifecycle step that matters, raises alerts
//! for privileges no decision granted and for grants revoked under running
//! containers, and resumes after either side restarts without recording anything
//! twice; import records a `docker events` file after the fact.
//!
//! - [`events`]: Docker's event format, lifecycle steps and event identity.
//! - [`observe`]: events and inspects turned into observations (socket detection,
//!   allowlist); [`spawner_names`]: the user a container is for.
//! - [`source`]: the calls the watcher makes of a daemon; [`daemon`] makes them with
//!   bollard (the only file that knows it).
//! - [`watcher`]: replay, gap detection, reconcile, follow, stale grants.
//! - [`import`]: recording an events file.
//! - [`remote`]: what a `privledger watch` agent reports from its host, and how the
//!   ledger records it (numbered per host: nothing twice, no gap unseen);
//!   [`agent`]: the agent's side, following its daemon into a durable outbox.

pub mod agent;
mod backoff;
pub mod daemon;
pub mod events;
pub mod import;
#[cfg(test)]
mod memory;
pub mod observe;
pub mod remote;
pub mod source;
pub mod spawner_names;
pub mod watcher;

pub use events::RawEvent;
pub use observe::ObserveConfig;
pub use watcher::run;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StaleAction {
    /// Record a `stale_grant` alert.
    Alert,
    /// Record the alert, stop the container, and record the stop.
    Stop,
}

#[derive(Debug, Clone)]
pub struct WatcherConfig {
    /// `unix:///var/run/docker.sock`, a socket path, or `tcp://host:port`.
    pub endpoint: String,
    pub on_stale_grant: StaleAction,
    pub observe: ObserveConfig,
}

/// What the watcher is doing, for health and `privledger status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatcherStatus {
    /// Not attached; the last error, if any.
    Connecting(Option<String>),
    /// Attached and following events.
    Watching { api_version: String },
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("docker: {0}")]
    Docker(#[from] bollard::errors::Error),
    #[error(transparent)]
    Ledger(#[from] crate::ledger::Error),
    #[error("the daemon's event stream ended")]
    StreamEnded,
}
