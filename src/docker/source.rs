//! The seam between the watcher and a Docker daemon: the few calls the watcher
//! makes. [`super::daemon::Daemon`] implements it with bollard; the tests' in-memory
//! daemon implements it without one, so that dedupe, cursor, gap, reconcile and
//! stale-grant logic are tested on their own.

use std::future::Future;
use std::pin::Pin;

use futures_util::Stream;

use super::events::RawEvent;
use super::observe::ContainerFacts;
use super::Error;
use crate::ledger::event::UnixNanos;

/// Container events in time order.
pub type EventStream<'a> = Pin<Box<dyn Stream<Item = Result<RawEvent, Error>> + Send + 'a>>;

pub trait DockerSource: Send + Sync {
    /// The API version agreed with the daemon, for status.
    fn api_version(&self) -> String;

    /// Container events from `since` (inclusive): up to `until` and then the stream
    /// ends, or, without `until`, the ones held and then every new one as it happens.
    fn events(&self, since: UnixNanos, until: Option<UnixNanos>) -> EventStream<'_>;

    /// What an inspect says now; `None` when the container is gone (or the inspect
    /// failed: the caller then goes by the event's attributes).
    fn inspect(&self, id: &str) -> impl Future<Output = Option<ContainerFacts>> + Send;

    /// The ids of every container, running or not.
    fn list(&self) -> impl Future<Output = Result<Vec<String>, Error>> + Send;

    /// Stops a container (10 s grace); the error as text, for the ledger.
    fn stop(&self, id: &str) -> impl Future<Output = Result<(), String>> + Send;
}
