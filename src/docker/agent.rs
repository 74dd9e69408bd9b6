//! The Docker side of a `privledger watch` agent: follows the host's daemon into the
//! agent's durable report log (replay from the cursor, a gap report when the daemon
//! no longer holds it, a listing at each attach, then every lifecycle event as it
//! comes), whether or not the ledger answers meanwhile.

use std::future::Future;

use futures_util::StreamExt;
use tokio::sync::Notify;
use tracing::{info, warn};

use super::backoff::Backoff;
use super::daemon::Daemon;
use super::events::RawEvent;
use super::remote::{forwarded, HostItem};
use super::source::DockerSource;
use super::watcher::{after_cursor, Cursor, DAEMON_EVENT_WINDOW, ORDER_SLACK_NS};
use super::Error;
use crate::ledger::event::Lifecycle;
use crate::ledger::{format_time, now_ns};

/// Where the agent keeps what it saw until the ledger has it: each report numbered
/// and stored durably with the cursor it moves.
pub trait ReportLog: Send + Sync {
    fn push(&self, item: &[u8], cursor: Option<&[u8]>) -> Result<u64, String>;
    fn set_cursor(&self, cursor: &[u8]) -> Result<(), String>;
    fn cursor(&self) -> Result<Option<Vec<u8>>, String>;
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Docker(#[from] Error),
    #[error("the agent's report log: {0}")]
    Log(String),
}

/// Follows the daemon at `endpoint` until `shutdown`, reconnecting with backoff while
/// it is away. `reported` is woken after each new report.
pub async fn follow(
    endpoint: &str,
    log: &dyn ReportLog,
    reported: &Notify,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut backoff = Backoff::new();
    loop {
        let attempt = async {
            let daemon = Daemon::connect(endpoint).await.map_err(AgentError::from)?;
            backoff.reset();
            session(&daemon, log, reported).await
        };
        let wait = tokio::select! {
            r = attempt => {
                let wait = backoff.next();
                match r {
                    Err(e) => warn!(error = %e, retry_in = ?wait, "docker: following the daemon"),
                    Ok(()) => warn!(retry_in = ?wait, "docker: the event stream ended"),
                }
                wait
            }
            () = &mut shutdown => return,
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = &mut shutdown => return,
        }
    }
}

/// One attachment: replay, the listing, then live events until the stream fails.
pub async fn session<S: DockerSource>(
    docker: &S,
    log: &dyn ReportLog,
    reported: &Notify,
) -> Result<(), AgentError> {
    let cursor: Option<Cursor> = log
        .cursor()
        .map_err(AgentError::Log)?
        .and_then(|b| serde_json::from_slice(&b).ok());
    let replay_until = now_ns();
    let mut replayed = std::collections::HashSet::new();
    let mut a = Agent {
        docker,
        log,
        reported,
        pending: None,
    };
    if let Some(c) = &cursor {
        // The replay is bounded (`until`): read whole, then handled from just after
        // the cursor's own event. Not by time: the daemon stamps events as they are
        // made but buffers them as they are published, so under load an event
        // published after the cursor's may carry an earlier time, and one published
        // before it a later one (that one was reported already).
        // From a little before the cursor's time: the daemon walks its window
        // back from the newest event and stops at the first one older than `since`,
        // so an out-of-order neighbour would hide the cursor's own event.
        let mut replay = docker.events(c.time_nano - ORDER_SLACK_NS, Some(replay_until));
        let mut events = Vec::new();
        while let Some(ev) = replay.next().await {
            events.push(ev?);
        }
        // Every event of the replay was handled, now or before the restart.
        replayed.extend(events.iter().map(RawEvent::key));
        let count = events.len();
        let after = after_cursor(&events, c);
        let saw = after.is_some();
        let rest: Vec<&RawEvent> = match after {
            Some(rest) => rest.iter().collect(),
            // The cursor's event is gone: whatever is later than it is new.
            None => events
                .iter()
                .filter(|ev| ev.time_nano > c.time_nano)
                .collect(),
        };
        for ev in rest {
            a.handle(ev).await?;
        }
        a.flush_cursor()?;
        if !saw {
            let details = format!(
                "the daemon no longer holds the last event this agent reported ({count} in the \
                 replay; it keeps {DAEMON_EVENT_WINDOW}): events between {} and {} may have been \
                 lost (the event window overflowed or the daemon restarted)",
                format_time(c.time_nano),
                format_time(replay_until)
            );
            warn!("{details}");
            a.report(
                &HostItem::Gap {
                    from_ns: c.time_nano,
                    to_ns: replay_until,
                    details,
                },
                None,
            )?;
        }
    }
    let ids = docker.list().await?;
    let mut listed = 0;
    for id in ids {
        if let Some(f) = docker.inspect(&id).await {
            a.report(&HostItem::Reconciled(f), None)?;
            listed += 1;
        }
    }
    info!(
        api_version = %docker.api_version(),
        containers = listed,
        "docker: attached; following events"
    );
    // Live from a little before the replay's end, for the same reason; what the
    // replay held is not handled twice.
    let since = if cursor.is_some() {
        replay_until - ORDER_SLACK_NS
    } else {
        replay_until
    };
    let mut live = docker.events(since, None);
    loop {
        tokio::select! {
            biased;
            m = live.next() => match m {
                Some(ev) => {
                    let ev = ev?;
                    if !replayed.remove(&ev.key()) {
                        a.handle(&ev).await?;
                    }
                }
                None => {
                    a.flush_cursor()?;
                    return Ok(());
                }
            },
            r = async {}, if a.pending.is_some() => {
                let () = r;
                a.flush_cursor()?;
            }
        }
    }
}

struct Agent<'a, S> {
    docker: &'a S,
    log: &'a dyn ReportLog,
    reported: &'a Notify,
    /// The cursor of an event that reported nothing, not yet stored.
    pending: Option<Cursor>,
}

impl<S: DockerSource> Agent<'_, S> {
    fn report(&mut self, item: &HostItem, cursor: Option<&Cursor>) -> Result<u64, AgentError> {
        let bytes = serde_json::to_vec(item).map_err(|e| AgentError::Log(e.to_string()))?;
        let n = self
            .log
            .push(&bytes, cursor.map(Cursor::encode).as_deref())
            .map_err(AgentError::Log)?;
        if cursor.is_some() {
            self.pending = None;
        }
        self.reported.notify_one();
        Ok(n)
    }

    fn flush_cursor(&mut self) -> Result<(), AgentError> {
        if let Some(c) = self.pending.take() {
            self.log.set_cursor(&c.encode()).map_err(AgentError::Log)?;
        }
        Ok(())
    }

    async fn handle(&mut self, ev: &RawEvent) -> Result<(), AgentError> {
        let cursor = Cursor::of(ev);
        if !forwarded(ev) {
            self.pending = Some(cursor);
            return Ok(());
        }
        // Inspect at once: DockerSpawner removes containers on stop.
        let facts = match ev.lifecycle() {
            Some(Lifecycle::Create | Lifecycle::Start) => self.docker.inspect(&ev.id).await,
            _ => None,
        };
        let item = HostItem::Event {
            event: ev.clone(),
            facts,
        };
        self.report(&item, Some(&cursor))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::docker::memory::MemoryDaemon;

    /// The outbox as a list: reports and the cursor.
    #[derive(Default)]
    struct Log {
        items: Mutex<Vec<Vec<u8>>>,
        cursor: Mutex<Option<Vec<u8>>>,
    }

    impl ReportLog for Log {
        fn push(&self, item: &[u8], cursor: Option<&[u8]>) -> Result<u64, String> {
            let mut items = self.items.lock().unwrap();
            items.push(item.to_vec());
            if let Some(c) = cursor {
                *self.cursor.lock().unwrap() = Some(c.to_vec());
            }
            Ok(items.len() as u64)
        }
        fn set_cursor(&self, cursor: &[u8]) -> Result<(), String> {
            *self.cursor.lock().unwrap() = Some(cursor.to_vec());
            Ok(())
        }
        fn cursor(&self) -> Result<Option<Vec<u8>>, String> {
            Ok(self.cursor.lock().unwrap().clone())
        }
    }

    /// Events published out of time order (as the daemon does under load): after a
    /// restart, the replay resumes just after the cursor's own event, so nothing
    /// reported before it is reported again.
    #[tokio::test]
    async fn a_replay_resumes_after_the_cursors_event_not_after_its_time() {
        let d = MemoryDaemon::new();
        let log = Log::default();
        let notify = Notify::new();
        let base = now_ns();
        let a = d.put_silently(ContainerFactsForTest::facts("a"));
        let b = d.put_silently(ContainerFactsForTest::facts("b"));
        // a's create is stamped later than b's, but published first.
        d.emit_stamped(&a, "create", Some(base + 2_000));
        d.emit_stamped(&b, "create", Some(base + 1_000));
        // The agent had reported both; its cursor is b's (the last handled).
        let ev_b = crate::docker::events::RawEvent {
            typ: "container".into(),
            action: "create".into(),
            id: b.clone(),
            time_nano: base + 1_000,
            attributes: Default::default(),
        };
        let again = restarted_at(&d, &log, &notify, &ev_b).await;
        assert!(again.is_empty(), "reported again: {again:?}");
    }

    /// An event published after the cursor's but stamped earlier hides the cursor
    /// from a replay that starts at the cursor's own time (the daemon stops its walk
    /// back at it): the replay starts earlier, finds the cursor, and reports that
    /// event, with no gap.
    #[tokio::test]
    async fn an_out_of_order_neighbour_does_not_hide_the_cursor() {
        let d = MemoryDaemon::new();
        let log = Log::default();
        let notify = Notify::new();
        let base = now_ns();
        let a = d.put_silently(ContainerFactsForTest::facts("a"));
        let b = d.put_silently(ContainerFactsForTest::facts("b"));
        let cursor = d.emit_stamped(&a, "create", Some(base + 2_000));
        // Published after the cursor's event, stamped before it: not yet reported.
        d.emit_stamped(&b, "create", Some(base + 1_000));
        let reported = restarted_at(&d, &log, &notify, &cursor).await;
        assert_eq!(reported.len(), 1, "{reported:?}");
        assert!(
            reported[0].contains(&b) && !reported[0].contains("Gap"),
            "{reported:?}"
        );
    }

    /// An agent whose cursor is `cursor` attaches once: what it reports (the
    /// listing aside).
    async fn restarted_at(
        d: &MemoryDaemon,
        log: &Log,
        notify: &Notify,
        cursor: &RawEvent,
    ) -> Vec<String> {
        log.push(b"{}", Some(&Cursor::of(cursor).encode())).unwrap();
        log.items.lock().unwrap().clear();
        d.close();
        let _ = session(d, log, notify).await;
        log.items
            .lock()
            .unwrap()
            .iter()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .filter(|s| !s.contains("Reconciled"))
            .collect()
    }

    struct ContainerFactsForTest;
    impl ContainerFactsForTest {
        fn facts(name: &str) -> crate::docker::observe::ContainerFacts {
            crate::docker::observe::ContainerFacts {
                name: name.into(),
                image: "img".into(),
                ..Default::default()
            }
        }
    }
}
