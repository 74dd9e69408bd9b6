//! The watcher: attaches to a [`DockerSource`], replays from the stored cursor,
//! reconciles, then follows events and the ledger's revocations until either fails.
//!
//! Resume: every event's entry carries the event's identity as its idempotency key,
//! so replaying from the stored cursor records nothing twice. The daemon keeps only
//! its last 256 events, in memory: when the replay no longer contains the cursor's
//! own event (the window overflowed, or the daemon restarted), events may have been
//! lost, and a `docker_event_gap` alert names the window. A reconcile against the
//! full container listing then records what changed unseen.
//!
//! The cursor is written with the entry of the event it names (one batch, no flush
//! of its own); an event that records nothing moves it only when the stream goes
//! quiet, so a burst of noise costs no write per event.

use std::collections::HashSet;
use std::future::Future;
use std::time::Duration;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::{info, warn};

use super::backoff::Backoff;
use super::daemon::Daemon;
use super::events::RawEvent;
use super::observe::{observation, Seen};
use super::source::DockerSource;
use super::{Error, StaleAction, WatcherConfig, WatcherStatus};
use crate::ledger::correlate;
use crate::ledger::event::{Alert, AlertKind, ContainerObserved, Lifecycle, ObservedVia, Seq};
use crate::ledger::{format_time, now_ns, policy, Command, Ledger, StreamFilter, ACTOR_DOCKER};

/// Key of the watcher's cursor in the ledger's metadata.
pub(super) const CURSOR_KEY: &str = "docker_cursor";
/// The daemon's in-memory event window.
pub(super) const DAEMON_EVENT_WINDOW: usize = 256;

/// The events of a replay that follow the cursor's own event; `None` when the
/// replay no longer holds it. By position, not time: see [`ORDER_SLACK_NS`].
pub(super) fn after_cursor<'a>(events: &'a [RawEvent], c: &Cursor) -> Option<&'a [RawEvent]> {
    let at = events.iter().position(|ev| ev.key() == c.key)?;
    Some(&events[at + 1..])
}

/// How far out of time order the daemon may publish events: it stamps an event when
/// it is made and publishes it after, so under load neighbours swap, and its replay
/// walks back from the newest event only to the first one older than `since`.
/// Replays start this much earlier; keys tell what was seen.
pub(super) const ORDER_SLACK_NS: i64 = 5_000_000_000;

/// The last daemon event the watcher has handled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Cursor {
    pub time_nano: i64,
    pub key: String,
}

impl Cursor {
    pub(super) fn of(ev: &RawEvent) -> Cursor {
        Cursor {
            time_nano: ev.time_nano,
            key: ev.key(),
        }
    }

    pub(super) fn encode(&self) -> Vec<u8> {
        // A number and a string: serializing cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub(super) fn stored(ledger: &Ledger) -> Result<Option<Cursor>, Error> {
        Ok(ledger
            .meta_get(CURSOR_KEY)?
            .and_then(|b| serde_json::from_slice(&b).ok()))
    }
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
            let daemon = Daemon::connect(&cfg.endpoint).await?;
            backoff.reset();
            session(&ledger, &cfg, &daemon, &status).await
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
        if *status.borrow() != WatcherStatus::Connecting(Some(msg.clone())) {
            warn!(error = %msg, "docker watcher not attached; retrying");
        }
        status.send_replace(WatcherStatus::Connecting(Some(msg)));
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tokio::time::sleep(backoff.next()) => {}
        }
    }
}

/// One attachment to the daemon: replay, reconcile, then follow events and ledger
/// revocations until either stream fails.
pub async fn session<S: DockerSource>(
    ledger: &Ledger,
    cfg: &WatcherConfig,
    docker: &S,
    status: &watch::Sender<WatcherStatus>,
) -> Result<(), Error> {
    let api_version = docker.api_version();
    let cursor = Cursor::stored(ledger)?;
    let replay_until = now_ns();
    let mut w = Watcher {
        ledger,
        cfg,
        docker,
        pending: None,
        restored: HashSet::new(),
    };
    // Every event the replay held (handled now, or before): the live stream's
    // overlap with it is not handled again.
    let mut replayed = HashSet::new();
    if let Some(c) = &cursor {
        // From a little before the cursor (see `ORDER_SLACK_NS`), handled from
        // just after the cursor's own event (or, when it is gone, from its time).
        let mut replay = docker.events(c.time_nano - ORDER_SLACK_NS, Some(replay_until));
        let mut events = Vec::new();
        while let Some(ev) = replay.next().await {
            events.push(ev?);
        }
        let count = events.len();
        replayed.extend(events.iter().map(RawEvent::key));
        let after = after_cursor(&events, c);
        let saw_cursor = after.is_some();
        let rest: Vec<&RawEvent> = match after {
            Some(rest) => rest.iter().collect(),
            None => events
                .iter()
                .filter(|ev| ev.time_nano >= c.time_nano)
                .collect(),
        };
        for ev in rest {
            w.handle(ev).await?;
        }
        w.flush_cursor().await?;
        if !saw_cursor {
            let details = format!(
                "the daemon no longer holds the last event privledger recorded ({count} in the replay; it keeps {DAEMON_EVENT_WINDOW}): \
                 events between {} and {} may have been lost (event window overflowed or the daemon restarted); reconciling",
                format_time(c.time_nano),
                format_time(replay_until)
            );
            warn!("{details}");
            w.alert(
                Alert {
                    window_from_ns: Some(c.time_nano),
                    window_to_ns: Some(replay_until),
                    ..Alert::new(AlertKind::DockerEventGap, details)
                },
                // Once per lost cursor event: attaching again before the daemon has
                // a newer event to hold says nothing new.
                Some(format!("gap:{}", c.key)),
            )
            .await?;
        }
    }
    w.reconcile().await?;
    w.check_stale(None).await?;
    info!(api_version = %api_version, "docker watcher attached");
    crate::metrics::docker_attached(true);
    status.send_replace(WatcherStatus::Watching { api_version });

    // After a replay, from a little before its end; a first attach from now (what
    // came before is the listing's).
    let since = if cursor.is_some() {
        replay_until - ORDER_SLACK_NS
    } else {
        replay_until
    };
    let mut live = docker.events(since, None);
    let mut revocations = ledger.stream(
        ledger.snapshot().seq + 1,
        true,
        StreamFilter::access_changes(),
        2,
    )?;
    loop {
        tokio::select! {
            // Events first; only when none is ready does a pending cursor get written.
            biased;
            m = live.next() => match m {
                Some(ev) => {
                    let ev = ev?;
                    if !replayed.remove(&ev.key()) {
                        w.handle(&ev).await?;
                    }
                }
                None => {
                    w.flush_cursor().await?;
                    return Err(Error::StreamEnded);
                }
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
            r = async {}, if w.pending.is_some() => {
                let () = r;
                w.flush_cursor().await?;
            }
        }
    }
}

struct Watcher<'a, S> {
    ledger: &'a Ledger,
    cfg: &'a WatcherConfig,
    docker: &'a S,
    /// The cursor of an event that recorded nothing, not yet stored.
    pending: Option<Cursor>,
    /// Containers alerted as stale whose user has since had the privilege again: a
    /// new loss is a new situation and gets its own alert.
    restored: HashSet<String>,
}

impl<S: DockerSource> Watcher<'_, S> {
    /// Records `o`, storing `cursor` with it.
    async fn record(
        &self,
        o: ContainerObserved,
        key: Option<String>,
        cursor: Option<&Cursor>,
    ) -> Result<Seq, crate::ledger::Error> {
        let (from_event, daemon_ns) = (o.source == ObservedVia::Events, o.daemon_time_ns);
        let meta = cursor.map(|c| (CURSOR_KEY, c.encode()));
        let c = self
            .ledger
            .submit_with_meta(ACTOR_DOCKER, key, Command::RecordContainer(o), meta)
            .await?;
        if from_event && !c.replayed && daemon_ns > 0 {
            let lag = c.entry.time_ns.saturating_sub(daemon_ns).max(0);
            crate::metrics::docker_event_recorded(Duration::from_nanos(lag as u64));
        }
        Ok(c.entry.seq)
    }

    async fn alert(&self, a: Alert, key: Option<String>) -> Result<(), Error> {
        let (kind, details) = (a.alert, a.details.clone());
        let c = self
            .ledger
            .submit(ACTOR_DOCKER, key, Command::RaiseAlert(a))
            .await?;
        if !c.replayed {
            warn!(alert = %kind, details = %details, seq = c.entry.seq, "alert");
        }
        Ok(())
    }

    async fn flush_cursor(&mut self) -> Result<(), Error> {
        if let Some(c) = self.pending.take() {
            self.ledger.meta_put(CURSOR_KEY, &c.encode()).await?;
        }
        Ok(())
    }

    /// Records one daemon event (if it is a lifecycle step that matters) with the
    /// cursor, and raises the alerts it calls for.
    async fn handle(&mut self, ev: &RawEvent) -> Result<(), Error> {
        let cursor = Cursor::of(ev);
        let Some(step) = ev.lifecycle() else {
            self.pending = Some(cursor);
            return Ok(());
        };
        let st = self.ledger.snapshot();
        let known = st.container(&ev.id);
        // Exec matters only into a container that holds a privilege.
        if step == Lifecycle::ExecStart && !known.is_some_and(|k| k.holds_privilege()) {
            self.pending = Some(cursor);
            return Ok(());
        }
        let facts = match step {
            // Inspect at once: DockerSpawner removes containers on stop, so a late
            // inspect can miss them.
            Lifecycle::Create | Lifecycle::Start => self.docker.inspect(&ev.id).await,
            _ => None,
        };
        let o = observation(
            &self.cfg.observe,
            Seen::event(ev, ObservedVia::Events),
            facts.as_ref(),
            known,
        );
        self.pending = None;
        let seq = match self.record(o.clone(), Some(ev.key()), Some(&cursor)).await {
            Ok(seq) => seq,
            // What the daemon reported does not fit the ledger's input rules even
            // fitted (an empty id or action): skip it rather than retry it forever.
            Err(e @ crate::ledger::Error::InvalidText { .. }) => {
                warn!(container = %ev.id, action = %ev.action, error = %e, "docker event not recorded");
                self.pending = Some(cursor);
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        if matches!(step, Lifecycle::Create | Lifecycle::Start) {
            self.correlate(&o, seq).await?;
        }
        Ok(())
    }

    /// Alerts (once per container and kind) when the container holds a privilege its
    /// decision label does not vouch for.
    async fn correlate(&self, o: &ContainerObserved, seq: Seq) -> Result<(), Error> {
        for (alert, key) in unvouched(self.ledger, o, seq)? {
            self.alert(alert, Some(key)).await?;
        }
        Ok(())
    }

    /// Records containers that appeared, changed state or vanished without an event.
    /// Returns how many changes it found.
    async fn reconcile(&self) -> Result<usize, Error> {
        let ids = self.docker.list().await?;
        let now = now_ns();
        let mut seen = HashSet::new();
        let mut changes = 0;
        for id in ids {
            seen.insert(id.clone());
            let Some(f) = self.docker.inspect(&id).await else {
                continue; // removed meanwhile: the event stream will say so
            };
            let st = self.ledger.snapshot();
            let known = st.container(&id);
            if known.is_some_and(|k| k.running == f.running) {
                continue;
            }
            changes += 1;
            let o = observation(
                &self.cfg.observe,
                Seen::reconcile(Lifecycle::Reconciled, &id, now),
                Some(&f),
                known,
            );
            let seq = self.record(o.clone(), None, None).await?;
            if known.is_none() {
                self.correlate(&o, seq).await?;
            }
        }
        let st = self.ledger.snapshot();
        for k in st.containers().filter(|k| !seen.contains(&k.id)) {
            changes += 1;
            let mut o = observation(
                &self.cfg.observe,
                Seen::reconcile(Lifecycle::Vanished, &k.id, now),
                None,
                Some(k),
            );
            o.running = Some(false);
            self.record(o, None, None).await?;
        }
        if changes > 0 {
            info!(changes, "reconcile recorded changes no event reported");
        }
        Ok(changes)
    }

    /// After a revocation (or at attach): every running container of a user who no
    /// longer has what it holds gets a `stale_grant` alert, and is stopped when so
    /// configured. One alert per container and lost privilege (DESIGN §5): later,
    /// unrelated changes raise nothing until the situation changes (the container
    /// restarts, loses something else, or its user regains and loses it again).
    async fn check_stale(&mut self, trigger: Option<Seq>) -> Result<(), Error> {
        // This daemon's containers: an agent's are checked by the ledger (`stale`).
        let judged = judged_at(self.ledger, trigger).await?;
        let found = stale(self.ledger, trigger, &judged, &mut self.restored, |c| {
            c.host.is_none()
        });
        for Stale {
            container: c,
            user,
            details,
            alert,
            key,
        } in found
        {
            self.alert(alert, Some(key)).await?;
            if self.cfg.on_stale_grant == StaleAction::Stop {
                let error = self.docker.stop(&c.id).await.err();
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

/// The alerts a container's creation or start calls for when it holds a privilege its
/// decision label does not vouch for, each with its idempotency key (once per
/// container and kind). `seq` is the observation's entry.
pub(super) fn unvouched(
    ledger: &Ledger,
    o: &ContainerObserved,
    seq: Seq,
) -> Result<Vec<(Alert, String)>, Error> {
    if o.socket_mounts.is_empty() && !o.privileged {
        return Ok(Vec::new());
    }
    let decision = match &o.decision_id {
        Some(id) => ledger.decision(id)?,
        None => None,
    };
    Ok(correlate::judge(o, decision.as_ref())
        .into_iter()
        .map(|(kind, details)| {
            let key = format!("alert:{}:{}", kind.as_str(), o.container_id);
            let alert = Alert {
                container_id: Some(o.container_id.clone()),
                name: Some(o.name.clone()),
                user: o.user.clone(),
                decision_id: o.decision_id.clone(),
                trigger_seq: Some(seq),
                host: o.host.clone(),
                ..Alert::new(kind, details)
            };
            (alert, key)
        })
        .collect())
}

/// A running container that holds a privilege its user no longer has, with the
/// alert (and its idempotency key) that says so.
pub(super) struct Stale {
    pub container: crate::ledger::state::ContainerRecord,
    pub user: String,
    pub details: String,
    pub alert: Alert,
    pub key: String,
}

/// The state a change of access is judged at: its own position when the ledger has
/// already moved past it, so that a regain and a loss queued one behind the other
/// are each seen (judged at the head, the regain would look like no access at all);
/// otherwise the head, now.
pub(super) async fn judged_at(
    ledger: &Ledger,
    trigger: Option<Seq>,
) -> Result<
    (
        std::sync::Arc<crate::ledger::State>,
        crate::ledger::event::UnixNanos,
    ),
    crate::ledger::Error,
> {
    let head = ledger.snapshot();
    match trigger {
        Some(t) if t < head.seq => ledger.state_at(crate::ledger::At::Seq(t)).await,
        _ => Ok((head, now_ns())),
    }
}

/// The running containers `which` selects whose user lost a privilege they hold,
/// each once per loss: `restored` remembers containers alerted whose user has since
/// had the privilege again (a new loss is then a new situation). `trigger` is the
/// entry that changed access (`None` at attach: the head names the check).
///
/// Containers (running, alerted) are the head's; each user's access is judged at
/// `judged` ([`judged_at`]).
pub(super) fn stale(
    ledger: &Ledger,
    trigger: Option<Seq>,
    judged: &(
        std::sync::Arc<crate::ledger::State>,
        crate::ledger::event::UnixNanos,
    ),
    restored: &mut HashSet<String>,
    which: impl Fn(&crate::ledger::state::ContainerRecord) -> bool,
) -> Vec<Stale> {
    let st = ledger.snapshot();
    let running: Vec<_> = st
        .containers()
        .filter(|c| c.running && c.holds_privilege() && !c.exempt && which(c))
        .cloned()
        .collect();
    restored.retain(|id| running.iter().any(|c| &c.id == id));
    let mut out = Vec::new();
    for c in running {
        let Some(user) = c.user.clone() else { continue };
        let access = policy::evaluate(&judged.0, &user, judged.1);
        let Some(lost) = correlate::lost_privileges(&c, &access) else {
            if c.stale.is_some() {
                restored.insert(c.id.clone());
            }
            continue;
        };
        let again = restored.remove(&c.id);
        if c.stale.as_deref() == Some(lost.as_str()) && !again {
            continue;
        }
        let on = c
            .host
            .as_ref()
            .map(|h| format!(" on host {h}"))
            .unwrap_or_default();
        let details = format!(
            "container {}{on} of user {user:?} still holds {lost}, which the user no longer has",
            c.name
        );
        // One alert per container and triggering entry (at attach: per head).
        let key = format!("stale:{}:{}", c.id, trigger.unwrap_or(st.seq));
        let alert = Alert {
            container_id: Some(c.id.clone()),
            name: Some(c.name.clone()),
            user: Some(user.clone()),
            decision_id: c.decision_id.clone(),
            trigger_seq: trigger,
            lost: Some(lost.clone()),
            host: c.host.clone(),
            ..Alert::new(AlertKind::StaleGrant, details.clone())
        };
        out.push(Stale {
            container: c,
            user,
            details,
            alert,
            key,
        });
    }
    out
}
