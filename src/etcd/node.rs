//! A cluster node's life on etcd: campaigning for the writer's role on a lease,
//! following the shared log into this node's store and state, and the heartbeat that
//! tells how long this node has been out of touch (past a bound, it refuses to answer
//! privileged questions from a state that may be stale).

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prost::Message;
use tokio::sync::watch;
use tracing::{error, info, warn};

use super::archive;
use super::client::{Etcd, EtcdError};
use super::keys::{Batch, Head, Keys, WriterInfo};
use super::pb::mvccpb;
use super::pb::v3electionpb::LeaderKey;
use super::store::ClusterStore;
use crate::ledger::log::LogStore;
use crate::ledger::{Error as LedgerError, Ledger};

/// Batches read per range while catching up.
const CATCH_UP_PAGE: i64 = 128;
/// Entries of an archived segment handed to the ledger at once.
const REPLICATE_CHUNK: usize = 1024;
/// After a failure, the loops wait this long before trying again (then double it).
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);
/// How often the alarms are read, in heartbeats.
const ALARM_EVERY: u32 = 10;
/// Cluster heads kept while this node is behind them (one a heartbeat at most).
const BEHIND_KEPT: usize = 256;

/// What this node is in the cluster now.
#[derive(Debug, Clone, PartialEq)]
pub enum Role {
    /// Follows the log; the writer, once known.
    Follower { writer: Option<WriterInfo> },
    /// Holds the writer's election key: every append is fenced on `key` having
    /// create revision `rev`.
    Writer { key: Vec<u8>, rev: i64, lease: i64 },
}

impl Role {
    pub fn name(&self) -> &'static str {
        match self {
            Role::Follower { .. } => "follower",
            Role::Writer { .. } => "leader",
        }
    }
}

#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// This node's name in the cluster (unique).
    pub node_id: String,
    /// Several ledgers can share one etcd: each under its own name.
    pub cluster: String,
    /// Where the other nodes reach this one's gRPC API (forwarded writes).
    pub advertise_url: String,
    /// The writer's lease: a writer that stops renewing it for this long is replaced.
    pub lease_ttl: Duration,
    /// A node that has not heard from etcd for longer refuses privileged answers.
    pub stale_after: Duration,
    /// Where sealed segments go and are read from (every node's view of one
    /// directory); without it nothing is sealed and a node can only catch up from etcd.
    pub archive_dir: Option<std::path::PathBuf>,
    /// The writer seals the oldest batches once etcd holds more entries than this,
    /// keeping the newest half.
    pub seal_after: u64,
}

/// One node: its view of the cluster, shared by the loops, the store and the API.
pub struct Cluster {
    etcd: Arc<Etcd>,
    keys: Keys,
    cfg: ClusterConfig,
    roles: Arc<watch::Sender<Role>>,
    /// When etcd last answered a linearizable read of this node (`None`: not since
    /// it started, so its state is only what its disk held).
    contact: Mutex<Option<Instant>>,
    started: Instant,
    /// The cluster's head seq as last read from etcd.
    etcd_head: AtomicU64,
    /// Since when this node's head has been behind the cluster's without catching up
    /// (a watch that brings nothing, a batch it cannot apply).
    lagging: Mutex<Option<(Instant, u64)>>,
    /// Cluster heads this node has not reached yet, each with when etcd first
    /// reported it (rising in both): the oldest says how old this node's state is.
    behind: Mutex<std::collections::VecDeque<(u64, Instant)>>,
    /// Whether this node answers no access question now, as of the last heartbeat
    /// (health mirrors it).
    stale_now: watch::Sender<bool>,
}

#[derive(Debug, thiserror::Error)]
enum FollowError {
    #[error(transparent)]
    Etcd(#[from] EtcdError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("the cluster's log at {key}: {reason}")]
    Log { key: String, reason: String },
    #[error(transparent)]
    Archive(#[from] super::archive::ArchiveError),
}

impl Cluster {
    pub fn new(etcd: Etcd, cfg: ClusterConfig) -> Arc<Cluster> {
        let (roles, _) = watch::channel(Role::Follower { writer: None });
        Arc::new(Cluster {
            etcd: Arc::new(etcd),
            keys: Keys::new(&cfg.cluster),
            cfg,
            roles: Arc::new(roles),
            contact: Mutex::new(None),
            started: Instant::now(),
            etcd_head: AtomicU64::new(0),
            lagging: Mutex::new(None),
            behind: Mutex::new(Default::default()),
            // Stale until etcd has answered: health says so from the first moment.
            stale_now: watch::channel(true).0,
        })
    }

    /// The store the ledger of this node writes through; `local` keeps the node's copy.
    /// Must be called on the runtime the node runs on.
    pub fn store(&self, local: Arc<dyn LogStore>) -> ClusterStore {
        ClusterStore::new(
            local,
            self.etcd.clone(),
            self.keys.clone(),
            self.cfg.node_id.clone(),
            self.roles.clone(),
            tokio::runtime::Handle::current(),
        )
    }

    pub fn node_id(&self) -> &str {
        &self.cfg.node_id
    }

    pub fn role(&self) -> Role {
        self.roles.borrow().clone()
    }

    pub fn watch_role(&self) -> watch::Receiver<Role> {
        self.roles.subscribe()
    }

    /// The writer's node id and URL, when known (this node's own when it writes).
    pub fn writer(&self) -> Option<WriterInfo> {
        match &*self.roles.borrow() {
            Role::Writer { .. } => Some(self.me()),
            Role::Follower { writer } => writer.clone(),
        }
    }

    /// The cluster's head seq as last read from etcd.
    pub fn etcd_head(&self) -> u64 {
        self.etcd_head.load(Ordering::Relaxed)
    }

    /// How long since etcd last answered this node (since it started, if never).
    pub fn silence(&self) -> Duration {
        self.contact
            .lock()
            .map_or(Duration::MAX, |c| c.unwrap_or(self.started).elapsed())
    }

    /// Follows whether this node answers access questions (updated each heartbeat).
    pub fn watch_stale(&self) -> watch::Receiver<bool> {
        self.stale_now.subscribe()
    }

    /// Why this node, whose state is at seq `head`, must not answer a privileged
    /// question now, if it must not.
    pub fn stale(&self, head: u64) -> Option<String> {
        let bound = humantime::format_duration(self.cfg.stale_after);
        let Some(contact) = self.contact.lock().ok().and_then(|c| *c) else {
            return Some(format!(
                "this node ({}) has not reached etcd since it started: its state is what its \
                 disk held, so it answers no access question; ask another node",
                self.cfg.node_id
            ));
        };
        // Behind a head etcd reported longer ago than the bound: whether stuck or
        // catching up too slowly, the state answered from is older than allowed.
        let oldest = self.behind.lock().ok().and_then(|b| {
            b.iter()
                .find(|(seq, _)| *seq > head)
                .map(|(seq, at)| (*seq, at.elapsed()))
        });
        if let Some((seq, age)) = oldest.filter(|(_, age)| *age > self.cfg.stale_after) {
            return Some(format!(
                "this node ({}) is at seq {head}, still short of seq {seq} that etcd reported \
                 {} ago (its bound is {bound}): it answers no access question; ask another node",
                self.cfg.node_id,
                humantime::format_duration(Duration::from_secs(age.as_secs())),
            ));
        }
        let silence = contact.elapsed();
        (silence > self.cfg.stale_after).then(|| {
            format!(
                "this node ({}) has not heard from etcd for {} (its bound is {}): its state \
                 may be stale, so it answers no access question; ask another node",
                self.cfg.node_id,
                humantime::format_duration(Duration::from_secs(silence.as_secs())),
                humantime::format_duration(self.cfg.stale_after)
            )
        })
    }

    fn me(&self) -> WriterInfo {
        WriterInfo {
            node_id: self.cfg.node_id.clone(),
            url: self.cfg.advertise_url.clone(),
        }
    }

    /// Notes this node's head against the cluster's: the cluster heads it has not
    /// reached yet, with when each was first seen (how old its state is), and whether
    /// it is stuck (behind without progress: the watch's member may have gone silent).
    fn note_progress(&self, head: u64) {
        let cluster = self.etcd_head();
        if let Ok(mut b) = self.behind.lock() {
            while b.front().is_some_and(|(seq, _)| *seq <= head) {
                b.pop_front();
            }
            if cluster > head && b.back().is_none_or(|(seq, _)| *seq < cluster) {
                if b.len() < BEHIND_KEPT {
                    b.push_back((cluster, Instant::now()));
                } else if let Some(last) = b.back_mut() {
                    // Full: the newest head is taken as seen as early as the last kept
                    // one, which can only make this node stale sooner.
                    last.0 = cluster;
                }
            }
        }
        let behind = cluster > head;
        if let Ok(mut l) = self.lagging.lock() {
            *l = match *l {
                Some((since, at)) if behind && at == head => Some((since, at)),
                _ if behind => Some((Instant::now(), head)),
                _ => None,
            };
        }
    }

    /// Whether this node has been behind the cluster, without progress, for `d`.
    fn stuck_for(&self, d: Duration) -> bool {
        self.lagging
            .lock()
            .ok()
            .and_then(|l| *l)
            .is_some_and(|(since, _)| since.elapsed() >= d)
    }

    /// etcd answered a linearizable read (a watch's messages prove no such thing: a
    /// member cut off from the others keeps a watch open and sends progress reports).
    fn touch(&self) {
        if let Ok(mut c) = self.contact.lock() {
            *c = Some(Instant::now());
        }
    }

    /// Runs the node until `stop` resolves: following the log, campaigning, and the
    /// heartbeat. `on_elected` runs each time this node becomes the writer, once it
    /// has caught up (the start-up writes: built-in groups, the first admin token).
    pub async fn run<F, Fut>(
        self: Arc<Self>,
        ledger: Ledger,
        on_elected: F,
        stop: impl Future<Output = ()> + Send + 'static,
    ) where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (stop_tx, stop_rx) = watch::channel(false);
        let follow = tokio::spawn(self.clone().follow(ledger.clone(), stop_rx.clone()));
        let beat = tokio::spawn(self.clone().heartbeat(ledger.clone(), stop_rx.clone()));
        let elect = tokio::spawn(self.clone().campaign(ledger, on_elected, stop_rx));
        stop.await;
        let _ = stop_tx.send(true);
        for t in [follow, beat, elect] {
            let _ = t.await;
        }
    }

    // === following the log ===

    /// Catches up by ranges, then watches from the revision the ranges were read at;
    /// a broken or compacted watch, or a gap, starts over with ranges.
    async fn follow(self: Arc<Self>, ledger: Ledger, mut stop: watch::Receiver<bool>) {
        let mut wait = RETRY_FIRST;
        while !*stop.borrow() {
            let result = tokio::select! {
                r = self.follow_once(&ledger) => r,
                _ = stop.wait_for(|s| *s) => return,
            };
            match result {
                Ok(()) => wait = RETRY_FIRST,
                Err(e) => {
                    match &e {
                        FollowError::Ledger(LedgerError::Corrupt { .. })
                        | FollowError::Log { .. }
                        | FollowError::Archive(_) => {
                            error!(error = %e, "the cluster's log does not verify here; not applying it")
                        }
                        _ => warn!(error = %e, retry_in = ?wait, "following the cluster's log"),
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = stop.wait_for(|s| *s) => return,
                    }
                    wait = (wait * 2).min(RETRY_MAX);
                }
            }
        }
    }

    /// One catch-up and one watch, until the watch ends.
    async fn follow_once(&self, ledger: &Ledger) -> Result<(), FollowError> {
        let revision = self.catch_up(ledger).await?;
        let (start, end) = self.keys.log_range();
        let mut w = self.etcd.watch(&start, &end, revision + 1).await?;
        let mut check = tokio::time::interval(self.cfg.lease_ttl / 2);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let next = tokio::select! {
                m = w.events.message() => m,
                _ = check.tick() => {
                    // A member that stopped answering (paused, partitioned) holds a
                    // watch open that brings nothing: watch through another.
                    if self.stuck_for(self.cfg.lease_ttl) {
                        warn!(
                            head = ledger.snapshot().seq,
                            cluster_head = self.etcd_head(),
                            "the log's watch brings nothing new; catching up through another member"
                        );
                        self.etcd.watch_broke();
                        return Ok(());
                    }
                    continue;
                }
            };
            let resp = match next {
                Ok(Some(r)) => r,
                Ok(None) => {
                    self.etcd.watch_broke();
                    return Ok(());
                }
                Err(s) => {
                    self.etcd.watch_broke();
                    return Err(EtcdError::Unreachable {
                        what: "the log's watch",
                        last: s.message().to_string(),
                    }
                    .into());
                }
            };
            if resp.compact_revision > 0 || resp.canceled {
                info!(
                    compacted = resp.compact_revision,
                    reason = %resp.cancel_reason,
                    "the log's watch ended; catching up by ranges"
                );
                return Ok(());
            }
            for ev in resp.events {
                if ev.r#type != mvccpb::event::EventType::Put as i32 {
                    continue;
                }
                let Some(kv) = ev.kv else { continue };
                match self.apply(ledger, &kv).await {
                    Ok(()) => {}
                    // Something was missed between ranges and watch: ranges again.
                    Err(FollowError::Ledger(LedgerError::ReplicaGap { .. })) => return Ok(()),
                    Err(e) => return Err(e),
                }
            }
        }
    }

    /// Reads batches after this node's head until there are none; returns the
    /// revision the last read saw (the watch starts after it).
    async fn catch_up(&self, ledger: &Ledger) -> Result<i64, FollowError> {
        let (_, end) = self.keys.log_range();
        let earliest = archive::earliest(&self.etcd, &self.keys).await?;
        if ledger.snapshot().seq + 1 < earliest {
            self.catch_up_from_archive(ledger, earliest).await?;
        }
        loop {
            let head = ledger.snapshot().seq;
            let r = self
                .etcd
                .range(&self.keys.batch(head + 1), &end, CATCH_UP_PAGE)
                .await?;
            self.touch();
            let revision = r.header.map_or(0, |h| h.revision);
            for kv in &r.kvs {
                self.apply(ledger, kv).await?;
            }
            if !r.more {
                return Ok(revision);
            }
        }
    }

    /// Applies the archived segments up to `earliest - 1` (a new node, or one that was
    /// away while the writer sealed what it had not applied), each checked against its
    /// anchor and, entry by entry, by the ledger.
    async fn catch_up_from_archive(
        &self,
        ledger: &Ledger,
        earliest: u64,
    ) -> Result<(), FollowError> {
        let head = ledger.snapshot().seq;
        let Some(dir) = &self.cfg.archive_dir else {
            return Err(archive::ArchiveError::NoArchive { head, earliest }.into());
        };
        for anchor in archive::anchors(&self.etcd, &self.keys).await? {
            let head = ledger.snapshot().seq;
            if anchor.last_seq <= head {
                continue;
            }
            let segment = archive::read_segment(dir, &anchor)?;
            let entries = &segment.entries;
            let skip = (head + 1).saturating_sub(anchor.first_seq) as usize;
            for chunk in entries[skip.min(entries.len())..].chunks(REPLICATE_CHUNK) {
                let (first, last) = (chunk[0].seq, chunk[chunk.len() - 1].seq);
                let keys = segment
                    .idempotency
                    .iter()
                    .filter(|k| (first..=last).contains(&k.seq))
                    .cloned()
                    .collect();
                ledger.replicate(chunk.to_vec(), keys).await?;
            }
            info!(
                file = %anchor.file,
                head = ledger.snapshot().seq,
                "applied an archived segment"
            );
        }
        let head = ledger.snapshot().seq;
        if head + 1 < earliest {
            return Err(archive::ArchiveError::NoArchive { head, earliest }.into());
        }
        Ok(())
    }

    /// The writer, now and then: when etcd holds more than `seal_after` entries, the
    /// oldest go to the archive (the newest half of the bound stays).
    async fn seal_if_due(&self) {
        let (Some(dir), Role::Writer { key, rev, .. }) = (&self.cfg.archive_dir, self.role())
        else {
            return;
        };
        let head = self.etcd_head();
        let earliest = match archive::earliest(&self.etcd, &self.keys).await {
            Ok(e) => e,
            Err(e) => return warn!(error = %e, "reading the earliest seq in etcd"),
        };
        let held = (head + 1).saturating_sub(earliest);
        if held <= self.cfg.seal_after {
            return;
        }
        let upto = head.saturating_sub(self.cfg.seal_after / 2);
        if let Err(e) = archive::seal(&self.etcd, &self.keys, dir, upto, &key, rev).await {
            warn!(error = %e, "sealing the oldest batches into the archive");
        }
    }

    /// Decodes one batch key and hands it to the ledger, which checks it against its
    /// head and the chain before storing and applying it.
    async fn apply(&self, ledger: &Ledger, kv: &mvccpb::KeyValue) -> Result<(), FollowError> {
        let bad = |reason: String| FollowError::Log {
            key: String::from_utf8_lossy(&kv.key).into_owned(),
            reason,
        };
        let batch = Batch::decode_value(&kv.value).map_err(|e| bad(e.to_string()))?;
        if kv.key != self.keys.batch(batch.first_seq) {
            return Err(bad(format!(
                "holds the batch of seq {}, not its key's",
                batch.first_seq
            )));
        }
        if batch.last_seq() <= ledger.snapshot().seq {
            return Ok(());
        }
        let (entries, idem) = batch.entries().map_err(|e| bad(e.to_string()))?;
        ledger.replicate(entries, idem).await?;
        Ok(())
    }

    // === the writer's election ===

    async fn campaign<F, Fut>(
        self: Arc<Self>,
        ledger: Ledger,
        on_elected: F,
        mut stop: watch::Receiver<bool>,
    ) where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let mut wait = RETRY_FIRST;
        while !*stop.borrow() {
            // The term watches `stop` itself: a writer that stops resigns and revokes
            // its lease, so that another node takes over at once, not a lease later.
            let result = self.term(&ledger, &on_elected, stop.clone()).await;
            self.roles.send_if_modified(|r| {
                let was = matches!(r, Role::Writer { .. });
                if was {
                    *r = Role::Follower { writer: None };
                }
                was
            });
            crate::metrics::cluster_writer(false);
            match result {
                Ok(()) => wait = RETRY_FIRST,
                Err(e) => {
                    warn!(error = %e, retry_in = ?wait, "campaigning for the writer's lease");
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = stop.wait_for(|s| *s) => {}
                    }
                    wait = (wait * 2).min(RETRY_MAX);
                }
            }
        }
    }

    /// One lease: campaign on it, and once elected and caught up, write until the
    /// lease is lost or a fenced append steps this node down. Resigns on the way out.
    async fn term<F, Fut>(
        &self,
        ledger: &Ledger,
        on_elected: &F,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(), FollowError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let ttl = self.cfg.lease_ttl.as_secs().max(1) as i64;
        let (lease, granted) = self.etcd.lease_grant(ttl).await?;
        let (lost_tx, mut lost) = watch::channel(false);
        let keep = tokio::spawn(keep_alive(
            self.etcd.clone(),
            lease,
            Duration::from_secs(granted.max(1) as u64),
            lost_tx,
        ));
        let name = self.keys.election();
        // The campaign runs on its own: a campaign that is given up resigns its key on
        // the member, so it must not end merely because this node learned of its
        // election another way (below). It ends with the term.
        let mut campaign = {
            let (etcd, name, me) = (self.etcd.clone(), name.clone(), self.me().encode_to_vec());
            tokio::spawn(async move { etcd.campaign(&name, lease, me).await })
        };
        let result = async {
            let leader = tokio::select! {
                l = &mut campaign => l.map_err(|e| EtcdError::Unreachable {
                    what: "a campaign",
                    last: e.to_string(),
                })??,
                // A campaign waiting on a member cut off from the others never hears
                // that it won, while this node's lease lives on through the others
                // and every other candidate queues behind its key.
                l = self.elected_meanwhile(&name, lease) => l,
                _ = lost.wait_for(|l| *l) => return Ok(()),
                _ = stop.wait_for(|s| *s) => return Ok(()),
            };
            // Nobody else can append now: read the head linearizably and apply
            // everything up to it before the first write of this term.
            let (kv, _) = self.etcd.get(&self.keys.head()).await?;
            let target = match kv {
                Some(kv) => {
                    Head::decode_value(&kv.value)
                        .map_err(|e| FollowError::Log {
                            key: "head".into(),
                            reason: e.to_string(),
                        })?
                        .seq
                }
                None => 0,
            };
            while ledger.snapshot().seq < target {
                self.catch_up(ledger).await?;
            }
            info!(
                node = %self.cfg.node_id,
                head = target,
                fence = leader.rev,
                "elected the cluster's writer"
            );
            self.roles.send_replace(Role::Writer {
                key: leader.key.clone(),
                rev: leader.rev,
                lease,
            });
            crate::metrics::cluster_writer(true);
            tokio::spawn(on_elected());
            let mut role = self.roles.subscribe();
            tokio::select! {
                _ = lost.wait_for(|l| *l) => warn!("the writer's lease was lost"),
                _ = role.wait_for(|r| !matches!(r, Role::Writer { .. })) => {}
                _ = stop.wait_for(|s| *s) => info!("stopping: resigning the writer's lease"),
            }
            let _ = self.etcd.resign(leader).await;
            Ok(())
        }
        .await;
        campaign.abort();
        keep.abort();
        let _ = self.etcd.lease_revoke(lease).await;
        result
    }

    /// Returns once a linearizable read (through any member) shows this node's key,
    /// on `lease`, as the oldest candidate of the election: elected, whether or not
    /// the member its campaign waits on can say so.
    async fn elected_meanwhile(&self, name: &[u8], lease: i64) -> LeaderKey {
        let mut tick = tokio::time::interval(self.cfg.lease_ttl);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            if let Ok(Some(kv)) = self.etcd.leader(name).await {
                if kv.lease == lease {
                    info!("elected, as a read through another member shows; the campaign's member did not say so");
                    return LeaderKey {
                        name: name.to_vec(),
                        key: kv.key,
                        rev: kv.create_revision,
                        lease,
                    };
                }
            }
        }
    }

    // === the heartbeat ===

    /// Reads the head and the writer's identity every third of the lease, and the
    /// alarms now and then; each answer proves this node in touch with etcd.
    async fn heartbeat(self: Arc<Self>, ledger: Ledger, mut stop: watch::Receiver<bool>) {
        let every = (self.cfg.lease_ttl / 4).max(Duration::from_millis(100));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut n: u32 = 0;
        let mut nospace = false;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            n = n.wrapping_add(1);
            match self.etcd.get(&self.keys.head()).await {
                Ok((kv, _)) => {
                    self.touch();
                    if let Some(h) = kv.and_then(|kv| Head::decode_value(&kv.value).ok()) {
                        self.etcd_head.store(h.seq, Ordering::Relaxed);
                    }
                    self.note_progress(ledger.snapshot().seq);
                }
                Err(e) => warn!(error = %e, silence = ?self.silence(), "etcd heartbeat"),
            }
            crate::metrics::cluster_silence(self.silence());
            let stale = self.stale(ledger.snapshot().seq).is_some();
            self.stale_now
                .send_if_modified(|s| std::mem::replace(s, stale) != stale);
            if matches!(*self.roles.borrow(), Role::Follower { .. }) {
                if let Ok(kv) = self.etcd.leader(&self.keys.election()).await {
                    let writer = kv.and_then(|kv| WriterInfo::decode_value(&kv.value).ok());
                    self.roles.send_if_modified(|r| match r {
                        Role::Follower { writer: w } if *w != writer => {
                            *w = writer.clone();
                            true
                        }
                        _ => false,
                    });
                }
            }
            if n % ALARM_EVERY == 0 {
                self.seal_if_due().await;
            }
            if n % ALARM_EVERY == 1 {
                if let Ok(alarms) = self.etcd.alarms().await {
                    let now = alarms.contains(&super::pb::etcdserverpb::AlarmType::Nospace);
                    if now && !nospace {
                        error!(
                            "etcd's space quota is exhausted (NOSPACE alarm): the cluster takes \
                             no write until the log is sealed and archived, or the quota raised"
                        );
                    }
                    nospace = now;
                    crate::metrics::etcd_alarm("nospace", now);
                }
            }
        }
    }
}

/// Renews the lease every third of its TTL; reports it lost once a renewal says so,
/// or none has succeeded for a whole TTL (etcd may have expired it by then).
async fn keep_alive(etcd: Arc<Etcd>, lease: i64, ttl: Duration, lost: watch::Sender<bool>) {
    let mut last_ok = Instant::now();
    let every = (ttl / 3).max(Duration::from_millis(100));
    loop {
        tokio::time::sleep(every).await;
        match etcd.lease_keep_alive(lease).await {
            Ok(left) if left > 0 => last_ok = Instant::now(),
            Ok(_) => {
                let _ = lost.send(true);
                return;
            }
            Err(e) => {
                warn!(error = %e, "renewing the writer's lease");
                if last_ok.elapsed() >= ttl {
                    let _ = lost.send(true);
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A node's view with no etcd behind it (nothing is called), judging staleness
    /// with `stale_after`.
    fn node(stale_after: Duration) -> Arc<Cluster> {
        let etcd = Etcd::connect(&super::super::client::EtcdOptions {
            endpoints: vec!["http://127.0.0.1:9".into()],
            tls: Default::default(),
            call_timeout: Duration::from_secs(1),
        })
        .unwrap();
        Cluster::new(
            etcd,
            ClusterConfig {
                node_id: "n1".into(),
                cluster: "c".into(),
                advertise_url: "http://127.0.0.1:1".into(),
                lease_ttl: Duration::from_secs(2),
                stale_after,
                archive_dir: None,
                seal_after: 1_000,
            },
        )
    }

    #[tokio::test]
    async fn a_node_is_stale_until_etcd_answers_it() {
        let n = node(Duration::from_secs(3600));
        assert!(*n.watch_stale().borrow());
        let why = n.stale(5).expect("stale before any contact");
        assert!(why.contains("not reached etcd since it started"), "{why}");
        n.touch();
        n.etcd_head.store(5, Ordering::Relaxed);
        n.note_progress(5);
        assert_eq!(n.stale(5), None);
    }

    #[tokio::test]
    async fn a_node_catching_up_is_judged_by_the_oldest_head_it_has_not_reached() {
        // A bound of zero: any head etcd reported that this node has not reached is
        // already too old (no clock needs to pass in the test).
        let n = node(Duration::ZERO);
        n.touch();
        n.etcd_head.store(10, Ordering::Relaxed);
        n.note_progress(5);
        let short = |why: Option<String>| why.is_some_and(|w| w.contains("short of seq 10"));
        assert!(short(n.stale(5)));
        // Progress is not enough: still short of what etcd reported.
        n.note_progress(7);
        assert!(short(n.stale(7)), "{:?}", n.stale(7));
        n.etcd_head.store(12, Ordering::Relaxed);
        n.note_progress(10);
        let why = n.stale(10).unwrap_or_default();
        assert!(why.contains("short of seq 12"), "{why}");
        n.note_progress(12);
        assert!(n.behind.lock().unwrap().is_empty());
        // Caught up, only the silence (a bound of zero) remains to say.
        assert!(!n.stale(12).unwrap_or_default().contains("short of"));
    }

    #[tokio::test]
    async fn the_heads_kept_are_bounded_and_never_younger_than_seen() {
        let n = node(Duration::from_secs(3600));
        n.touch();
        for h in 1..=(BEHIND_KEPT as u64 + 50) {
            n.etcd_head.store(h + 1, Ordering::Relaxed);
            n.note_progress(0);
        }
        let b = n.behind.lock().unwrap();
        assert_eq!(b.len(), BEHIND_KEPT);
        assert_eq!(b.back().unwrap().0, BEHIND_KEPT as u64 + 51);
        assert!(b
            .iter()
            .zip(b.iter().skip(1))
            .all(|(a, z)| a.0 < z.0 && a.1 <= z.1));
    }
}
