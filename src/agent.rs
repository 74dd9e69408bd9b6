//! `privledger watch`: the Docker agent of one host, a client of a remote ledger. It
//! follows the host's daemon into a durable outbox (numbered reports, each stored with
//! the Docker cursor it moves) and ships the outbox to the ledger, which records the
//! next number, acknowledges repeats and refuses gaps. While the ledger is away the
//! agent keeps draining the daemon, so nothing is lost beyond the daemon's own window.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tracing::{error, info, warn};

use crate::api::host_reports::to_wire;
use crate::client::{Clients, ConnectOptions};
use crate::docker::agent::{follow, ReportLog};
use crate::docker::remote::{HostItem, HostReport};
use crate::pb;
use crate::store::outbox::Outbox;

/// Reports read from the outbox per request, at most.
const SHIP_BATCH: usize = 512;
/// A request's reports stop growing past this many bytes: well under the ledger's
/// smallest accepted request (`max_request_bytes` is at least 1 KiB, 64 KiB by
/// default); a single larger report still goes alone.
const SHIP_BYTES: usize = 32 * 1024;
/// While the ledger does not answer, retries start this far apart and double.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The ledger (any node of a cluster).
    pub server: String,
    pub connect: ConnectOptions,
    /// A watcher token named after `host_id`.
    pub token: String,
    pub host_id: String,
    /// The outbox lives in `DATA/outbox.sled`.
    pub data_dir: PathBuf,
    pub docker_endpoint: String,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{0}")]
    Outbox(#[from] crate::store::outbox::OutboxError),
    #[error("{0}")]
    Fs(#[from] crate::private_fs::FsError),
    #[error("the ledger's address: {0}")]
    Client(#[from] crate::client::ClientError),
    #[error("the host id: {0}")]
    Host(#[from] crate::ledger::Error),
}

impl ReportLog for Outbox {
    fn push(&self, item: &[u8], cursor: Option<&[u8]>) -> Result<u64, String> {
        Outbox::push(self, item, cursor).map_err(|e| e.to_string())
    }
    fn set_cursor(&self, cursor: &[u8]) -> Result<(), String> {
        Outbox::set_cursor(self, cursor).map_err(|e| e.to_string())
    }
    fn cursor(&self) -> Result<Option<Vec<u8>>, String> {
        Outbox::cursor(self).map_err(|e| e.to_string())
    }
}

/// Runs the agent until `shutdown` resolves.
pub async fn run(
    cfg: AgentConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), AgentError> {
    crate::ledger::names::host(&cfg.host_id)?;
    crate::private_fs::ensure_private_dir(&cfg.data_dir, false)?;
    let outbox = Arc::new(Outbox::open(&cfg.data_dir.join("outbox.sled"))?);
    let endpoint = cfg.connect.endpoint(&cfg.server)?;
    let clients = Clients::new(endpoint.connect_lazy(), Some(&cfg.token))?;
    info!(
        host = %cfg.host_id,
        server = %cfg.server,
        waiting = outbox.len(),
        "privledger watch: following the Docker daemon, reporting to the ledger"
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    if outbox.next_number()? == 1 {
        // A new outbox: the ledger may hold this host's reports from an earlier one
        // (a wiped or replaced data directory). Numbering resumes after them, and a
        // gap report says what this agent cannot know; numbering from 1 again would
        // have every report taken for a duplicate and dropped.
        let Some(last) = host_last(&mut clients.clone(), &cfg.host_id, stop_rx.clone()).await
        else {
            return Ok(());
        };
        if last > 0 {
            let details = format!(
                "this agent's outbox is new, while the ledger holds {last} reports of this host: \
                 events since the last one may have been lost (the agent's data directory was \
                 replaced)"
            );
            warn!("{details}");
            let gap = HostItem::Gap {
                from_ns: 0,
                to_ns: crate::ledger::now_ns(),
                details,
            };
            let bytes = serde_json::to_vec(&gap).unwrap_or_default();
            // One write: a crash cannot leave the resumed numbering without the gap
            // report that explains it.
            outbox.push_from(Some(last + 1), &bytes, None)?;
        }
    }
    let reported = Arc::new(Notify::new());
    let ship = tokio::spawn(ship(
        clients,
        cfg.host_id.clone(),
        outbox.clone(),
        reported.clone(),
        stop_rx.clone(),
    ));
    follow(
        &cfg.docker_endpoint,
        &*outbox,
        &reported,
        stopped(stop_rx.clone()),
    )
    .await;
    let _ = ship.await;
    info!(waiting = outbox.len(), "privledger watch: stopped");
    Ok(())
}

/// The host's last recorded number, asked of the ledger until it answers (`None`:
/// stopped first).
async fn host_last(
    clients: &mut Clients,
    host: &str,
    mut stop: watch::Receiver<bool>,
) -> Option<u64> {
    let mut wait = RETRY_FIRST;
    let mut said = false;
    loop {
        let ask = pb::RecordHostEventsRequest {
            host_id: host.to_string(),
            events: Vec::new(),
        };
        match clients.admin.record_host_events(ask).await {
            Ok(r) => return Some(r.into_inner().last_number),
            Err(s) => {
                if !said {
                    warn!(error = %s.message(), "a new outbox: waiting for the ledger to say where this host's reports resume");
                    said = true;
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|s| *s) => return None,
        }
        wait = (wait * 2).min(RETRY_MAX);
    }
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// Sends the outbox in order and forgets what the ledger acknowledged, until stopped.
async fn ship(
    mut clients: Clients,
    host: String,
    outbox: Arc<Outbox>,
    reported: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let mut wait = RETRY_FIRST;
    let mut failing = false;
    loop {
        if *stop.borrow() {
            return;
        }
        let pending = match outbox.pending(SHIP_BATCH) {
            Ok(p) => p,
            Err(e) => {
                error!(error = %e, "reading the outbox");
                Vec::new()
            }
        };
        if pending.is_empty() {
            tokio::select! {
                () = reported.notified() => {}
                // A report pushed between the read and the wait is seen next round.
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            continue;
        }
        let mut events = Vec::with_capacity(pending.len());
        let mut size = 0;
        for (number, bytes) in &pending {
            let item = serde_json::from_slice::<HostItem>(bytes).unwrap_or_else(|e| {
                // Written by this build: cannot happen short of damage. Its number goes
                // as a gap saying so; skipped, it would leave a hole the ledger refuses
                // every later report for.
                error!(number, error = %e, "an outbox report does not decode; reporting a gap in its place");
                HostItem::Gap {
                    from_ns: 0,
                    to_ns: crate::ledger::now_ns(),
                    details: format!(
                        "this agent's outbox report {number} was damaged and does not decode \
                         ({e}): what it said is lost"
                    ),
                }
            });
            let wire = to_wire(&HostReport {
                number: *number,
                item,
            });
            size += prost::Message::encoded_len(&wire) + 4;
            if !events.is_empty() && size > SHIP_BYTES {
                break;
            }
            events.push(wire);
        }
        let sent = events.len();
        let req = pb::RecordHostEventsRequest {
            host_id: host.clone(),
            events,
        };
        match clients.admin.record_host_events(req).await {
            Ok(r) => {
                let r = r.into_inner();
                if failing {
                    info!(
                        last = r.last_number,
                        "the ledger records this host's reports again"
                    );
                    failing = false;
                }
                if let Err(e) = outbox.acknowledged(r.last_number) {
                    error!(error = %e, "forgetting acknowledged reports");
                }
                wait = RETRY_FIRST;
                tracing::debug!(
                    sent,
                    recorded = r.recorded,
                    duplicates = r.duplicates,
                    "shipped"
                );
            }
            Err(s) => {
                if !failing {
                    match s.code() {
                        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => {
                            warn!(error = %s.message(), waiting = outbox.len(), "the ledger does not take this host's reports now; keeping them")
                        }
                        _ => {
                            error!(code = ?s.code(), error = %s.message(), "the ledger refused this host's reports")
                        }
                    }
                    failing = true;
                }
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                wait = (wait * 2).min(RETRY_MAX);
            }
        }
    }
}
