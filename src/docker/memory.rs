//! An in-memory Docker daemon for the watcher's unit tests: containers, the daemon's
//! bounded event window, live followers, restarts, and changes made without events.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use futures_util::stream::{self, StreamExt};
use tokio::sync::{broadcast, watch};

use super::events::RawEvent;
use super::observe::ContainerFacts;
use super::source::{DockerSource, EventStream};
use super::watcher::DAEMON_EVENT_WINDOW;
use super::Error;
use crate::ledger::event::UnixNanos;
use crate::ledger::now_ns;

pub(super) struct MemoryDaemon {
    inner: Mutex<Inner>,
    live: broadcast::Sender<RawEvent>,
    /// Set to end every live stream (as a daemon going away does).
    closed: watch::Sender<bool>,
}

#[derive(Default)]
struct Inner {
    containers: BTreeMap<String, ContainerFacts>,
    window: VecDeque<RawEvent>,
    clock: UnixNanos,
    next_id: u32,
    stopped: Vec<String>,
}

impl MemoryDaemon {
    pub fn new() -> MemoryDaemon {
        MemoryDaemon {
            inner: Mutex::new(Inner::default()),
            live: broadcast::channel(4096).0,
            closed: watch::channel(false).0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends an event to the window and tells the followers.
    pub fn emit(&self, id: &str, action: &str) -> RawEvent {
        self.emit_stamped(id, action, None)
    }

    /// Like [`MemoryDaemon::emit`], stamped `time_nano` (earlier than the last, say):
    /// the real daemon stamps events as they are made and publishes them after, so
    /// under load the window is not in time order.
    pub fn emit_stamped(&self, id: &str, action: &str, time_nano: Option<UnixNanos>) -> RawEvent {
        let mut g = self.lock();
        g.clock = match time_nano {
            Some(t) => t,
            None => now_ns().max(g.clock + 1),
        };
        let mut attributes = BTreeMap::new();
        if let Some(c) = g.containers.get(id) {
            attributes.clone_from(&c.labels);
            attributes.insert("name".into(), c.name.clone());
            attributes.insert("image".into(), c.image.clone());
        }
        let ev = RawEvent {
            typ: "container".into(),
            action: action.into(),
            id: id.into(),
            time_nano: g.clock,
            attributes,
        };
        g.window.push_back(ev.clone());
        if g.window.len() > DAEMON_EVENT_WINDOW {
            g.window.pop_front();
        }
        drop(g);
        let _ = self.live.send(ev.clone());
        ev
    }

    /// A container that exists without any event saying so (seen by a reconcile).
    pub fn put_silently(&self, facts: ContainerFacts) -> String {
        let mut g = self.lock();
        let id = if facts.id.is_empty() {
            g.next_id += 1;
            format!("{:064x}", g.next_id)
        } else {
            facts.id.clone()
        };
        g.containers.insert(
            id.clone(),
            ContainerFacts {
                id: id.clone(),
                ..facts
            },
        );
        id
    }

    pub fn remove_silently(&self, id: &str) {
        self.lock().containers.remove(id);
    }

    pub fn set_running(&self, id: &str, running: bool) {
        if let Some(c) = self.lock().containers.get_mut(id) {
            c.running = running;
        }
    }

    /// `docker create` then `docker start`.
    pub fn run(&self, facts: ContainerFacts) -> String {
        let id = self.put_silently(facts);
        self.emit(&id, "create");
        self.set_running(&id, true);
        self.emit(&id, "start");
        id
    }

    /// A restart forgets the event window (the daemon keeps it only in memory).
    pub fn restart(&self) {
        self.lock().window.clear();
    }

    /// Ends every live stream.
    pub fn close(&self) {
        self.closed.send_replace(true);
    }

    /// Takes new live streams again after [`MemoryDaemon::close`].
    pub fn reopen(&self) {
        self.closed.send_replace(false);
    }

    pub fn stopped(&self) -> Vec<String> {
        self.lock().stopped.clone()
    }
}

impl DockerSource for MemoryDaemon {
    fn api_version(&self) -> String {
        "memory".into()
    }

    fn events(&self, since: UnixNanos, until: Option<UnixNanos>) -> EventStream<'_> {
        // Subscribe before reading the window, so nothing falls between the two.
        let rx = self.live.subscribe();
        let held: Vec<RawEvent> = self
            .lock()
            .window
            .iter()
            .rev()
            // As moby's `loadBufferedEvents`: walked back from the newest, stopping
            // at the first event older than `since` (out-of-order stamps hide what
            // lies before it).
            .take_while(|e| e.time_nano >= since)
            .filter(|e| until.is_none_or(|u| e.time_nano <= u))
            .cloned()
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        let history = stream::iter(held.clone().into_iter().map(Ok));
        if until.is_some() {
            return Box::pin(history);
        }
        let last = held.last().map_or(since - 1, |e| e.time_nano);
        let closed = self.closed.subscribe();
        let live = stream::unfold((rx, closed), move |(mut rx, mut closed)| async move {
            loop {
                if *closed.borrow_and_update() {
                    return None;
                }
                tokio::select! {
                    r = rx.recv() => match r {
                        Ok(e) if e.time_nano > last => return Some((Ok(e), (rx, closed))),
                        Ok(_) => continue,
                        Err(_) => return None,
                    },
                    c = closed.changed() => if c.is_err() { return None },
                }
            }
        });
        Box::pin(history.chain(live))
    }

    async fn inspect(&self, id: &str) -> Option<ContainerFacts> {
        self.lock().containers.get(id).cloned()
    }

    async fn list(&self) -> Result<Vec<String>, Error> {
        Ok(self.lock().containers.keys().cloned().collect())
    }

    async fn stop(&self, id: &str) -> Result<(), String> {
        let known = self.lock().containers.contains_key(id);
        if !known {
            return Err(format!("no such container: {id}"));
        }
        self.set_running(id, false);
        self.lock().stopped.push(id.to_string());
        self.emit(id, "die");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::sync::watch;

    use super::super::watcher::{session, Cursor};
    use super::super::{ObserveConfig, StaleAction, WatcherConfig, WatcherStatus};
    use super::*;
    use crate::ledger::event::{
        AlertKind, Event, GrantSpec, Limits, SocketAccess, SocketMode, Subject,
    };
    use crate::ledger::{
        Command, Entry, Ledger, LedgerConfig, SpawnConfig, StreamFilter, LABEL_DECISION, LABEL_USER,
    };

    struct Rig {
        _dir: tempfile::TempDir,
        ledger: Ledger,
        daemon: Arc<MemoryDaemon>,
        cfg: WatcherConfig,
    }

    impl Rig {
        fn new(on_stale_grant: StaleAction) -> Rig {
            let dir = tempfile::tempdir().unwrap();
            let store = Arc::new(crate::store::SledStore::open(dir.path()).unwrap());
            let ledger = Ledger::open(
                store,
                LedgerConfig {
                    checkpoint_interval: 10_000,
                    spawn: SpawnConfig::default(),
                },
            )
            .unwrap();
            Rig {
                _dir: dir,
                ledger,
                daemon: Arc::new(MemoryDaemon::new()),
                cfg: WatcherConfig {
                    endpoint: String::new(),
                    on_stale_grant,
                    observe: ObserveConfig::new("/var/run/docker.sock"),
                },
            }
        }

        /// Starts a session and waits until it follows live events.
        async fn attach(&self) -> tokio::task::JoinHandle<Result<(), Error>> {
            self.daemon.reopen();
            let (tx, mut rx) = watch::channel(WatcherStatus::Connecting(None));
            let (ledger, cfg, daemon) =
                (self.ledger.clone(), self.cfg.clone(), self.daemon.clone());
            let task = tokio::spawn(async move { session(&ledger, &cfg, &*daemon, &tx).await });
            rx.wait_for(|s| matches!(s, WatcherStatus::Watching { .. }))
                .await
                .unwrap();
            task
        }

        /// Ends the session (the daemon's stream ends) and returns how it ended.
        async fn detach(&self, task: tokio::task::JoinHandle<Result<(), Error>>) -> Error {
            self.daemon.close();
            task.await.unwrap().unwrap_err()
        }

        fn entries(&self) -> Vec<Entry> {
            let head = self.ledger.snapshot().seq;
            (1..=head)
                .filter_map(|s| self.ledger.entry(s).unwrap())
                .collect()
        }

        /// Waits for the first entry from `from` on that `pred` accepts.
        async fn until(&self, from: u64, pred: impl Fn(&Entry) -> bool) -> Entry {
            let mut rx = self
                .ledger
                .stream(from, true, StreamFilter::default(), 4)
                .unwrap();
            while let Some(chunk) = rx.recv().await {
                if let Some(e) = chunk.unwrap().into_iter().find(|e| pred(e)) {
                    return e;
                }
            }
            panic!("the stream ended");
        }

        /// Attaches, runs a container and waits for the entry of its start.
        async fn run_attached(
            &self,
            facts: ContainerFacts,
        ) -> (tokio::task::JoinHandle<Result<(), Error>>, String, Entry) {
            let s = self.attach().await;
            let id = self.daemon.run(facts);
            let start = self
                .until(1, |e| {
                    observed(e).is_some_and(|o| o.container_id == id && o.action == "start")
                })
                .await;
            (s, id, start)
        }

        fn cursor(&self) -> Option<Cursor> {
            Cursor::stored(&self.ledger).unwrap()
        }

        async fn submit(&self, cmd: Command) -> Entry {
            (*self.ledger.submit("admin", None, cmd).await.unwrap().entry).clone()
        }
    }

    fn observed(e: &Entry) -> Option<&crate::ledger::event::ContainerObserved> {
        match &e.event {
            Event::DockerContainer(o) => Some(o),
            _ => None,
        }
    }

    fn alert_of(e: &Entry, kind: AlertKind) -> bool {
        matches!(&e.event, Event::Alert(a) if a.alert == kind)
    }

    fn any_alert(entries: &[Entry], kind: AlertKind) -> bool {
        entries.iter().any(|e| alert_of(e, kind))
    }

    fn container(name: &str) -> ContainerFacts {
        ContainerFacts {
            name: name.into(),
            image: "img".into(),
            ..ContainerFacts::default()
        }
    }

    /// A raw rw socket grant to `subject`.
    fn raw_grant(subject: Subject) -> Command {
        Command::IssueGrant {
            subject,
            spec: GrantSpec {
                socket: SocketAccess::Raw,
                socket_mode: SocketMode::Rw,
                privileged: false,
                limits: Limits::default(),
            },
            expires_at_ns: None,
            reason: "test".into(),
        }
    }

    impl Rig {
        /// `user`'s container as a spawner makes it after an allowed decision: the
        /// decision and user labels, and the daemon socket mounted rw.
        async fn decided_socket_container(&self, user: &str) -> ContainerFacts {
            let d = self
                .submit(Command::AuthorizeSpawn {
                    user: user.into(),
                    server_name: String::new(),
                    image: "img".into(),
                })
                .await;
            let Event::SpawnDecided(decision) = &d.event else {
                panic!("{d:?}")
            };
            assert!(decision.allowed);
            let mut c = container(&format!("jupyter-{user}"));
            c.labels
                .insert(LABEL_DECISION.into(), decision.decision_id.clone());
            c.labels.insert(LABEL_USER.into(), user.into());
            c.mounts = vec![(
                "/var/run/docker.sock".into(),
                "/var/run/docker.sock".into(),
                true,
            )];
            c
        }
    }

    #[tokio::test]
    async fn replay_records_nothing_twice_and_the_cursor_names_the_last_event() {
        let r = Rig::new(StaleAction::Alert);
        let (s, id, start) = r.run_attached(container("jupyter-alice")).await;
        assert!(matches!(r.detach(s).await, Error::StreamEnded));
        let last = r.daemon.emit(&id, "resize"); // noise after the last record
        let cursor = r.cursor().unwrap();
        assert_eq!(
            cursor.key,
            observed(&start).map(|_| cursor.key.clone()).unwrap()
        );
        // Reattach: the replay holds every event since the cursor, the cursor's own
        // included, so there is no gap, and nothing is recorded again.
        let before = r.entries().len();
        let s = r.attach().await;
        r.detach(s).await;
        let after = r.entries();
        assert_eq!(
            after.len(),
            before,
            "nothing recorded twice: {:?}",
            &after[before..]
        );
        assert!(!after.iter().any(|e| alert_of(e, AlertKind::DockerEventGap)));
        assert_eq!(
            r.cursor().unwrap().key,
            last.key(),
            "noise moves the cursor"
        );
        let recorded: Vec<_> = after
            .iter()
            .filter_map(observed)
            .map(|o| o.action.as_str())
            .collect();
        assert_eq!(recorded, ["create", "start"]);
    }

    #[tokio::test]
    async fn the_cursor_is_written_with_the_entry_of_its_event() {
        let r = Rig::new(StaleAction::Alert);
        let (s, id, start) = r.run_attached(container("web")).await;
        // Read before the session ends: no flush of its own was needed.
        let c = r.cursor().unwrap();
        assert_eq!(c.time_nano, observed(&start).unwrap().daemon_time_ns);
        r.detach(s).await;
        assert!(r.daemon.stopped().is_empty());
        assert!(r.ledger.snapshot().container(&id).unwrap().running);
    }

    #[tokio::test]
    async fn a_daemon_restart_is_a_gap_and_reconcile_records_what_changed_unseen() {
        let r = Rig::new(StaleAction::Alert);
        let s = r.attach().await;
        let gone = r.daemon.run(container("jupyter-bob"));
        r.until(1, |e| {
            observed(e).is_some_and(|o| o.container_id == gone && o.action == "start")
        })
        .await;
        r.detach(s).await;
        let cursor = r.cursor().unwrap();
        // While detached the daemon restarts (forgetting its events), one container
        // goes away and a privileged one appears, all without an event we see.
        r.daemon.restart();
        r.daemon.remove_silently(&gone);
        let mut p = container("intruder");
        p.privileged = true;
        p.running = true;
        let new = r.daemon.put_silently(p);
        let from = r.ledger.snapshot().seq + 1;
        let s = r.attach().await;
        r.detach(s).await;
        let got: Vec<Entry> = r.entries().into_iter().filter(|e| e.seq >= from).collect();
        let gap = got
            .iter()
            .find_map(|e| match &e.event {
                Event::Alert(a) if a.alert == AlertKind::DockerEventGap => Some(a.clone()),
                _ => None,
            })
            .expect("a gap alert");
        assert_eq!(gap.window_from_ns, Some(cursor.time_nano));
        let actions: Vec<(&str, &str)> = got
            .iter()
            .filter_map(observed)
            .map(|o| (o.container_id.as_str(), o.action.as_str()))
            .collect();
        assert!(
            actions.contains(&(new.as_str(), "reconciled")),
            "{actions:?}"
        );
        assert!(
            actions.contains(&(gone.as_str(), "vanished")),
            "{actions:?}"
        );
        assert!(got
            .iter()
            .any(|e| alert_of(e, AlertKind::UnauthorizedPrivileged)));
        assert!(r.ledger.snapshot().container(&gone).is_none());
        // A second attach finds nothing new to say.
        let n = r.entries().len();
        let s = r.attach().await;
        r.detach(s).await;
        assert!(
            !any_alert(&r.entries()[n..], AlertKind::DockerEventGap),
            "the replay holds the cursor again"
        );
    }

    #[tokio::test]
    async fn a_revoked_grant_under_a_running_container_alerts_and_stops_it() {
        let r = Rig::new(StaleAction::Stop);
        let g = r.submit(raw_grant(Subject::User("alice".into()))).await;
        let c = r.decided_socket_container("alice").await;
        let s = r.attach().await;
        let id = r.daemon.run(c);
        let start = r
            .until(1, |e| observed(e).is_some_and(|o| o.action == "start"))
            .await;
        let revoke = r
            .submit(Command::RevokeGrant {
                grant_id: g.seq,
                reason: "left the project".into(),
            })
            .await;
        let stop = r
            .until(revoke.seq, |e| {
                matches!(e.event, Event::ContainerStopped { .. })
            })
            .await;
        r.detach(s).await;
        let Event::ContainerStopped {
            container_id, ok, ..
        } = &stop.event
        else {
            unreachable!()
        };
        assert_eq!((container_id.as_str(), *ok), (id.as_str(), true));
        assert_eq!(r.daemon.stopped(), vec![id.clone()]);
        let between: Vec<_> = r
            .entries()
            .into_iter()
            .filter(|e| e.seq > start.seq)
            .collect();
        assert!(between.iter().any(|e| alert_of(e, AlertKind::StaleGrant)));
        assert!(
            !any_alert(&between, AlertKind::UnauthorizedSocketMount),
            "the decision vouched for the mount"
        );
    }

    /// DESIGN §5: one stale-grant alert per container and lost privilege. Later,
    /// unrelated changes (another user's revocation and expiry, another group's
    /// deletion, a membership change elsewhere) raise nothing; the user regaining the
    /// privilege and losing it again is a new situation with its own alert.
    /// A watcher that lags behind the ledger sees a regain and a loss queued one
    /// behind the other: judged each at its own position, the loss is a new one
    /// (judged at the head, the regain looked like no access and the loss went
    /// unalerted; CI under load caught it).
    #[tokio::test]
    async fn a_regain_and_a_loss_queued_behind_each_other_are_each_seen() {
        let r = Rig::new(StaleAction::Alert);
        let revoke = |grant_id| Command::RevokeGrant {
            grant_id,
            reason: "r".into(),
        };
        let g = r.submit(raw_grant(Subject::User("alice".into()))).await;
        let c = r.decided_socket_container("alice").await;
        let (s, id, start) = r.run_attached(c).await;
        let stale = |e: &Entry| {
            matches!(&e.event, Event::Alert(a)
                if a.alert == AlertKind::StaleGrant && a.container_id.as_deref() == Some(id.as_str()))
        };
        r.submit(revoke(g.seq)).await;
        r.until(start.seq, stale).await;
        r.detach(s).await;
        // Both land before the checks run, as when the watcher is behind.
        let again = r.submit(raw_grant(Subject::User("alice".into()))).await;
        let lost_again = r.submit(revoke(again.seq)).await;
        let mut restored = std::collections::HashSet::new();
        let mut found = Vec::new();
        for trigger in [again.seq, lost_again.seq] {
            let judged = crate::docker::watcher::judged_at(&r.ledger, Some(trigger))
                .await
                .unwrap();
            found.extend(crate::docker::watcher::stale(
                &r.ledger,
                Some(trigger),
                &judged,
                &mut restored,
                |_| true,
            ));
        }
        assert_eq!(found.len(), 1, "one new alert for the second loss");
        assert_eq!(found[0].alert.trigger_seq, Some(lost_again.seq));
    }

    #[tokio::test]
    async fn a_stale_container_is_alerted_once_per_loss_not_once_per_later_change() {
        let r = Rig::new(StaleAction::Alert);
        let grant = raw_grant;
        let revoke = |grant_id| Command::RevokeGrant {
            grant_id,
            reason: "r".into(),
        };
        let g = r.submit(grant(Subject::User("alice".into()))).await;
        let c = r.decided_socket_container("alice").await;
        let (s, id, start) = r.run_attached(c).await;
        let stale = |e: &Entry| {
            matches!(&e.event, Event::Alert(a)
                if a.alert == AlertKind::StaleGrant && a.container_id.as_deref() == Some(id.as_str()))
        };
        r.submit(revoke(g.seq)).await;
        r.until(start.seq, stale).await;
        // Five unrelated changes, each followed by the watcher.
        let bob = r.submit(grant(Subject::User("bob".into()))).await;
        r.submit(revoke(bob.seq)).await;
        r.submit(Command::CreateGroup { group: "g".into() }).await;
        r.submit(Command::AddMember {
            group: "g".into(),
            user: "carol".into(),
            reason: None,
        })
        .await;
        let carol = r.submit(grant(Subject::Group("g".into()))).await;
        r.submit(Command::RemoveMember {
            group: "g".into(),
            user: "carol".into(),
            reason: Some("test".into()),
        })
        .await;
        r.submit(revoke(carol.seq)).await;
        r.submit(Command::DeleteGroup {
            group: "g".into(),
            reason: Some("test".into()),
        })
        .await;
        // Alice regains the privilege, then loses it again: one more alert.
        let again = r.submit(grant(Subject::User("alice".into()))).await;
        let lost_again = r.submit(revoke(again.seq)).await;
        // Bounded, so that a watcher that stays silent fails the test instead of
        // hanging it.
        let second = tokio::time::timeout(
            std::time::Duration::from_secs(60),
            r.until(lost_again.seq, stale),
        )
        .await
        .expect("no stale_grant alert after the privilege was regained and lost again");
        // A restart of the watcher says nothing new either.
        r.detach(s).await;
        let s = r.attach().await;
        let marker = r.submit(Command::CreateGroup { group: "m".into() }).await;
        r.detach(s).await;
        let alerts: Vec<u64> = r
            .entries()
            .iter()
            .filter(|e| stale(e))
            .map(|e| e.seq)
            .collect();
        assert_eq!(alerts.len(), 2, "one per loss: {alerts:?}");
        assert_eq!(alerts[1], second.seq);
        assert!(alerts.iter().all(|s| *s < marker.seq));
    }

    #[tokio::test]
    async fn a_label_the_ledger_would_refuse_is_recorded_fitted_and_what_follows_too() {
        let r = Rig::new(StaleAction::Alert);
        let s = r.attach().await;
        let mut bad = container("jupyter-mallory");
        bad.labels.insert(LABEL_USER.into(), "mal\u{7}lory".into());
        let bad = r.daemon.run(bad);
        let good = r.daemon.run(container("web"));
        let e = r
            .until(1, |e| observed(e).is_some_and(|o| o.container_id == good))
            .await;
        r.detach(s).await;
        assert!(observed(&e).is_some());
        let users: Vec<_> = r
            .entries()
            .iter()
            .filter_map(observed)
            .filter(|o| o.container_id == bad)
            .map(|o| o.user.clone())
            .collect();
        assert!(!users.is_empty(), "the crafted container is in the ledger");
        assert!(
            users
                .iter()
                .all(|u| u.as_deref() == Some("mal\u{FFFD}lory")),
            "{users:?}"
        );
    }
}
