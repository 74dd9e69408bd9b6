//! The Docker watcher: follows the daemon's container events (bollard), records each
//! lifecycle step that matters, raises alerts for privileges no decision granted and
//! for grants revoked under running containers, and resumes after either side
//! restarts without recording anything twice. The only module that knows bollard.
//!
//! Resume: every event's entry carries the event's identity as its idempotency key,
//! so replaying from the stored cursor records nothing twice. The daemon keeps only
//! its last 256 events, in memory: when the replay no longer contains the cursor's
//! own event (the window overflowed, or the daemon restarted), events may have been
//! lost, and a `docker_event_gap` alert names the window. A reconcile against the
//! full container listing then records what changed unseen.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::time::Duration;

use bollard::models::{ContainerInspectResponse, EventMessage};
use bollard::query_parameters::{
    EventsOptions, InspectContainerOptions, ListContainersOptions, StopContainerOptions,
};
use bollard::{Docker, API_DEFAULT_VERSION};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::ledger::correlate;
use crate::ledger::event::{Alert, AlertKind, ContainerObserved, EventKind, KindFilter, Seq};
use crate::ledger::observe::{self, ContainerFacts, ObserveConfig, RawEvent};
use crate::ledger::{now_ns, Command, Ledger, StreamFilter, ACTOR_DOCKER};

/// Key of the watcher's cursor in the ledger's metadata.
const CURSOR_KEY: &str = "docker_cursor";
/// The daemon's in-memory event window.
const DAEMON_EVENT_WINDOW: usize = 256;

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

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Cursor {
    time_nano: i64,
    key: String,
}

/// Runs until `shutdown`: connects (retrying with jittered exponential backoff while
/// the daemon is absent), replays, reconciles, follows.
pub async fn run(
    ledger: Ledger,
    cfg: WatcherConfig,
    status: watch::Sender<WatcherStatus>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut backoff = Backoff::new();
    loop {
        let attempt = async {
            let docker = connect(&cfg.endpoint).await?;
            backoff.reset();
            session(&ledger, &cfg, &docker, &status).await
        };
        let err = tokio::select! {
            _ = &mut shutdown => return,
            r = attempt => match r {
                Ok(()) => continue,
                Err(e) => e,
            },
        };
        crate::metrics::docker_attached(false);
        let msg = err.to_string();
        if status.borrow().clone() != WatcherStatus::Connecting(Some(msg.clone())) {
            warn!(error = %msg, "docker watcher not attached; retrying");
        }
        status.send_replace(WatcherStatus::Connecting(Some(msg)));
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tokio::time::sleep(backoff.next()) => {}
        }
    }
}

async fn connect(endpoint: &str) -> Result<Docker, Error> {
    let docker = if let Some(path) = endpoint.strip_prefix("unix://") {
        Docker::connect_with_unix(path, 120, API_DEFAULT_VERSION)?
    } else if endpoint.starts_with('/') {
        Docker::connect_with_unix(endpoint, 120, API_DEFAULT_VERSION)?
    } else {
        Docker::connect_with_http(endpoint, 120, API_DEFAULT_VERSION)?
    };
    // bollard speaks its newest API by default; the daemon may be older (this
    // machine's speaks 1.41), so agree on the daemon's version.
    Ok(docker.negotiate_version().await?)
}

fn since_arg(ns: i64) -> String {
    format!(
        "{}.{:09}",
        ns.div_euclid(1_000_000_000),
        ns.rem_euclid(1_000_000_000)
    )
}

fn events_options(since: i64, until: Option<i64>) -> EventsOptions {
    EventsOptions {
        since: Some(since_arg(since)),
        until: until.map(since_arg),
        filters: Some(HashMap::from([(
            "type".to_string(),
            vec!["container".to_string()],
        )])),
    }
}

fn raw_event(m: EventMessage) -> Option<RawEvent> {
    let actor = m.actor?;
    Some(RawEvent {
        typ: m.typ.map(|t| t.to_string()).unwrap_or_default(),
        action: m.action?,
        id: actor.id?,
        time_nano: m
            .time_nano
            .or(m.time.map(|t| t.saturating_mul(1_000_000_000)))?,
        attributes: actor.attributes.unwrap_or_default().into_iter().collect(),
    })
}

fn facts(i: ContainerInspectResponse) -> ContainerFacts {
    let config = i.config.unwrap_or_default();
    ContainerFacts {
        id: i.id.unwrap_or_default(),
        name: i
            .name
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_string(),
        image: config.image.unwrap_or_default(),
        labels: config.labels.unwrap_or_default().into_iter().collect(),
        mounts: i
            .mounts
            .unwrap_or_default()
            .into_iter()
            .map(|m| {
                (
                    m.source.unwrap_or_default(),
                    m.destination.unwrap_or_default(),
                    m.rw.unwrap_or(true),
                )
            })
            .collect(),
        privileged: i.host_config.and_then(|h| h.privileged).unwrap_or(false),
        running: i.state.and_then(|s| s.running).unwrap_or(false),
    }
}

async fn inspect(docker: &Docker, id: &str) -> Option<ContainerFacts> {
    match docker
        .inspect_container(id, None::<InspectContainerOptions>)
        .await
    {
        Ok(i) => Some(facts(i)),
        Err(e) => {
            debug!(container = id, error = %e, "inspect failed; using event attributes");
            None
        }
    }
}

/// One attachment to the daemon: replay, reconcile, then follow events and ledger
/// revocations until either stream fails.
async fn session(
    ledger: &Ledger,
    cfg: &WatcherConfig,
    docker: &Docker,
    status: &watch::Sender<WatcherStatus>,
) -> Result<(), Error> {
    let api_version = docker.client_version().to_string();
    let cursor: Option<Cursor> = ledger
        .meta_get(CURSOR_KEY)?
        .and_then(|b| serde_json::from_slice(&b).ok());
    let replay_until = now_ns();
    let w = Watcher {
        ledger,
        cfg,
        docker,
    };
    if let Some(c) = &cursor {
        let mut replay = docker.events(Some(events_options(c.time_nano, Some(replay_until))));
        let (mut count, mut saw_cursor) = (0usize, false);
        while let Some(m) = replay.next().await {
            let Some(ev) = raw_event(m?) else { continue };
            count += 1;
            saw_cursor |= ev.key() == c.key;
            w.handle(&ev, "events").await?;
        }
        if !saw_cursor {
            let details = format!(
                "the daemon no longer holds the last event privledger recorded ({} in the replay; it keeps {DAEMON_EVENT_WINDOW}): \
                 events between {} and {} may have been lost (event window overflowed or the daemon restarted); reconciling",
                count,
                crate::ledger::format_time(c.time_nano),
                crate::ledger::format_time(replay_until)
            );
            warn!("{details}");
            w.alert(
                Alert {
                    alert: AlertKind::DockerEventGap,
                    container_id: None,
                    name: None,
                    user: None,
                    decision_id: None,
                    trigger_seq: None,
                    window_from_ns: Some(c.time_nano),
                    window_to_ns: Some(replay_until),
                    details,
                },
                None,
            )
            .await?;
        }
    }
    w.reconcile().await?;
    w.check_stale(None).await?;
    info!(api_version = %api_version, "docker watcher attached");
    crate::metrics::docker_attached(true);
    status.send_replace(WatcherStatus::Watching { api_version });

    let mut live = docker.events(Some(events_options(replay_until, None)));
    let head = ledger.snapshot().seq;
    let mut revocations = ledger.stream(
        head + 1,
        true,
        StreamFilter {
            kinds: [
                EventKind::GrantRevoked,
                EventKind::GrantExpired,
                EventKind::MemberRemoved,
                EventKind::GroupDeleted,
            ]
            .map(KindFilter::Entry)
            .to_vec(),
            subject: None,
        },
        2,
    )?;
    loop {
        tokio::select! {
            m = live.next() => match m {
                Some(m) => if let Some(ev) = raw_event(m?) {
                    w.handle(&ev, "events").await?;
                },
                None => return Err(Error::StreamEnded),
            },
            e = revocations.recv() => match e {
                Some(Ok(entries)) => {
                    for e in entries {
                        w.check_stale(Some(e.seq)).await?;
                    }
                }
                Some(Err(e)) => return Err(e.into()),
                None => return Err(Error::StreamEnded),
            },
        }
    }
}

struct Watcher<'a> {
    ledger: &'a Ledger,
    cfg: &'a WatcherConfig,
    docker: &'a Docker,
}

impl Watcher<'_> {
    async fn record(&self, o: ContainerObserved, key: Option<String>) -> Result<Seq, Error> {
        let (from_event, daemon_ns) = (o.source == "events", o.daemon_time_ns);
        let c = self
            .ledger
            .submit(ACTOR_DOCKER, key, Command::RecordContainer(o))
            .await?;
        if from_event && !c.replayed && daemon_ns > 0 {
            let lag = c.entry.time_ns.saturating_sub(daemon_ns).max(0);
            crate::metrics::docker_event_recorded(Duration::from_nanos(lag as u64));
        }
        Ok(c.entry.seq)
    }

    async fn alert(&self, a: Alert, key: Option<String>) -> Result<(), Error> {
        let (kind, details) = (a.alert.as_str(), a.details.clone());
        let c = self
            .ledger
            .submit(ACTOR_DOCKER, key, Command::RaiseAlert(a))
            .await?;
        if !c.replayed {
            warn!(alert = kind, details = %details, seq = c.entry.seq, "alert");
        }
        Ok(())
    }

    /// Records one daemon event (if it is a lifecycle step that matters) and raises
    /// the alerts it calls for; then advances the cursor.
    async fn handle(&self, ev: &RawEvent, source: &str) -> Result<(), Error> {
        if let Some(step) = ev.lifecycle() {
            let st = self.ledger.snapshot();
            let known = st.container(&ev.id);
            let facts = match step {
                // Inspect at once: DockerSpawner removes containers on stop, so a late
                // inspect can miss them.
                "create" | "start" => inspect(self.docker, &ev.id).await,
                _ => None,
            };
            let record = match step {
                // Exec matters only into a container that holds a privilege.
                "exec_start" => known.is_some_and(|k| k.holds_privilege()),
                _ => true,
            };
            if record {
                let o = observe::observation(
                    &self.cfg.observe,
                    &ev.action,
                    &ev.id,
                    ev.time_nano,
                    &ev.attributes,
                    facts.as_ref(),
                    known,
                    source,
                );
                let seq = self.record(o.clone(), Some(ev.key())).await?;
                if matches!(step, "create" | "start") {
                    self.correlate(&o, seq).await?;
                }
            }
        }
        let cursor = Cursor {
            time_nano: ev.time_nano,
            key: ev.key(),
        };
        // A struct of a number and a string always serializes.
        let bytes = serde_json::to_vec(&cursor).unwrap_or_default();
        self.ledger.meta_put(CURSOR_KEY, &bytes).await?;
        Ok(())
    }

    /// Alerts (once per container and kind) when the container holds a privilege its
    /// decision label does not vouch for.
    async fn correlate(&self, o: &ContainerObserved, seq: Seq) -> Result<(), Error> {
        if o.socket_mounts.is_empty() && !o.privileged {
            return Ok(());
        }
        let decision = match &o.decision_id {
            Some(id) => self.ledger.decision(id)?,
            None => None,
        };
        for (kind, details) in correlate::judge(o, decision.as_ref()) {
            let key = format!("alert:{}:{}", kind.as_str(), o.container_id);
            self.alert(
                Alert {
                    alert: kind,
                    container_id: Some(o.container_id.clone()),
                    name: Some(o.name.clone()),
                    user: o.user.clone(),
                    decision_id: o.decision_id.clone(),
                    trigger_seq: Some(seq),
                    window_from_ns: None,
                    window_to_ns: None,
                    details,
                },
                Some(key),
            )
            .await?;
        }
        Ok(())
    }

    /// Records containers that appeared, changed state or vanished without an event.
    /// Returns how many changes it found.
    async fn reconcile(&self) -> Result<usize, Error> {
        let list = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                ..Default::default()
            }))
            .await?;
        let now = now_ns();
        let mut seen = HashSet::new();
        let mut changes = 0;
        for c in list {
            let Some(id) = c.id else { continue };
            seen.insert(id.clone());
            let Some(f) = inspect(self.docker, &id).await else {
                continue; // removed meanwhile: the event stream will say so
            };
            let st = self.ledger.snapshot();
            let known = st.container(&id);
            if known.is_some_and(|k| k.running == f.running) {
                continue;
            }
            changes += 1;
            let o = observe::observation(
                &self.cfg.observe,
                "reconciled",
                &id,
                now,
                &BTreeMap::new(),
                Some(&f),
                known,
                "reconcile",
            );
            let seq = self.record(o.clone(), None).await?;
            if known.is_none() {
                self.correlate(&o, seq).await?;
            }
        }
        let st = self.ledger.snapshot();
        for k in st.containers().filter(|k| !seen.contains(&k.id)) {
            changes += 1;
            let mut o = observe::observation(
                &self.cfg.observe,
                "vanished",
                &k.id,
                now,
                &BTreeMap::new(),
                None,
                Some(k),
                "reconcile",
            );
            o.running = Some(false);
            self.record(o, None).await?;
        }
        if changes > 0 {
            info!(changes, "reconcile recorded changes no event reported");
        }
        Ok(changes)
    }

    /// After a revocation (or at attach): every running container of a user who no
    /// longer has what it holds gets a `stale_grant` alert, and is stopped when so
    /// configured.
    async fn check_stale(&self, trigger: Option<Seq>) -> Result<(), Error> {
        let st = self.ledger.snapshot();
        let running: Vec<_> = st
            .containers()
            .filter(|c| c.running && c.holds_privilege() && !c.exempt)
            .cloned()
            .collect();
        for c in running {
            let Some(user) = &c.user else { continue };
            let access = crate::ledger::policy::evaluate(&st, user, now_ns());
            let Some(lost) = correlate::lost_privileges(&c, &access) else {
                continue;
            };
            let details = format!(
                "container {} of user {user:?} still holds {lost}, which the user no longer has",
                c.name
            );
            // One alert per container and triggering entry (at attach: per head).
            let key = format!("stale:{}:{}", c.id, trigger.unwrap_or(st.seq));
            self.alert(
                Alert {
                    alert: AlertKind::StaleGrant,
                    container_id: Some(c.id.clone()),
                    name: Some(c.name.clone()),
                    user: Some(user.clone()),
                    decision_id: c.decision_id.clone(),
                    trigger_seq: trigger,
                    window_from_ns: None,
                    window_to_ns: None,
                    details: details.clone(),
                },
                Some(key),
            )
            .await?;
            if self.cfg.on_stale_grant == StaleAction::Stop {
                let r = self
                    .docker
                    .stop_container(
                        &c.id,
                        Some(StopContainerOptions {
                            t: Some(10),
                            signal: None,
                        }),
                    )
                    .await;
                let error = r.err().map(|e| e.to_string());
                info!(container = %c.name, ok = error.is_none(), "stopped a container holding a revoked privilege");
                self.ledger
                    .submit(
                        ACTOR_DOCKER,
                        None,
                        Command::RecordStop {
                            container_id: c.id.clone(),
                            name: c.name.clone(),
                            user: Some(user.clone()),
                            reason: details,
                            error,
                        },
                    )
                    .await?;
            }
        }
        Ok(())
    }
}

/// Jittered exponential backoff, 100 ms doubling to 30 s.
struct Backoff {
    next: Duration,
}

impl Backoff {
    const MIN: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(30);

    fn new() -> Self {
        Backoff { next: Self::MIN }
    }

    fn reset(&mut self) {
        self.next = Self::MIN;
    }

    fn next(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        let mut b = [0u8; 2];
        let _ = getrandom::fill(&mut b);
        // 50%..100% of the step, so many watchers do not retry in lockstep.
        let frac = 0.5 + f64::from(u16::from_le_bytes(b)) / f64::from(u16::MAX) / 2.0;
        base.mul_f64(frac)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let mut b = Backoff::new();
        let first = b.next();
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
        for _ in 0..20 {
            b.next();
        }
        let capped = b.next();
        assert!(capped <= Backoff::MAX && capped >= Backoff::MAX / 2);
        b.reset();
        assert!(b.next() <= Duration::from_millis(100));
    }

    #[test]
    fn since_argument_has_nanoseconds() {
        assert_eq!(since_arg(1_795_460_649_405_692_940), "1795460649.405692940");
        assert_eq!(since_arg(5), "0.000000005");
    }
}
