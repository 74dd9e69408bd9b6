//! The writer thread, the only code that appends, and the checkpointer beside it.
//!
//! The writer drains whatever is queued into one batch, validates each command against
//! the state as it will be when the command applies, hands the batch to the log store
//! (one atomic, durable append) and only then publishes the new state and answers every
//! caller: concurrent writers share one flush (group commit).
//!
//! When the store cannot write (disk full, read-only or failing filesystem), the batch
//! is answered UNAVAILABLE with nothing published, the write status turns
//! [`WriteStatus::Stalled`] (health reports NOT_SERVING), and the writer retries the
//! store's recovery with backoff, answering writes UNAVAILABLE meanwhile. Once a write
//! can succeed again it resumes by itself, with the head it last acknowledged.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{error, info, warn};

use super::entry::{chain_hash, idempotency_key};
use super::event::{EntryBody, Event, Seq};
use super::log::{AppendBatch, IdempotencyKey, LogStore, RawEntry, StoreError, Witness};
use super::state::State;
use super::Command;
use super::{now_ns, Committed, Entry, Error, LedgerConfig, ACTOR_SYSTEM};

/// Most commands one batch takes; bounds the latency of the batch's flush.
pub(super) const MAX_BATCH: usize = 1024;
/// Queue of commands waiting for the writer; callers wait (backpressure) beyond it.
pub(super) const WRITE_QUEUE: usize = 8192;
/// Recovery attempts while stalled start this far apart and double up to the maximum.
const RETRY_FIRST: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(2);
/// How often a stalled writer looks at its queue (to refuse writes promptly).
const STALLED_POLL: Duration = Duration::from_millis(10);

/// Whether the ledger takes writes, and if not, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteStatus {
    Writable,
    /// Storage refused a write; the writer retries by itself.
    Stalled {
        reason: String,
        since_ns: i64,
    },
    /// Opened for forensics: nothing is ever written. `reason` says what is wrong with
    /// the store, if anything was found.
    ReadOnly {
        reason: Option<String>,
    },
    /// The writer has stopped (shutdown, or it ended unexpectedly).
    Stopped,
}

#[allow(clippy::large_enum_variant)] // a Stop is sent once per process
pub(super) enum Msg {
    Write(WriteRequest),
    Meta(MetaRequest),
    /// A batch another node appended to the cluster's shared log.
    Replicate(ReplicateRequest),
    Stop(oneshot::Sender<()>),
}

/// A batch from the cluster's log, to check against the head, store and apply.
pub(super) struct ReplicateRequest {
    pub entries: Vec<RawEntry>,
    pub idempotency: Vec<IdempotencyKey>,
    /// The head after it (or already after it: a batch this node has).
    pub reply: oneshot::Sender<Result<Seq, Error>>,
}

pub(super) struct WriteRequest {
    pub actor: String,
    /// The client certificate the actor presented (mutual TLS), if any.
    pub actor_cert: Option<String>,
    pub request_id: Option<String>,
    pub cmd: Command,
    /// A small named value stored in the same batch unless the command is refused
    /// (the Docker cursor rides with the entry of its event).
    pub meta: Option<(String, Vec<u8>)>,
    pub reply: oneshot::Sender<Result<Committed, Error>>,
}

/// A small named value to store with the next batch (the Docker cursor).
pub(super) struct MetaRequest {
    pub key: String,
    pub value: Vec<u8>,
    pub reply: oneshot::Sender<Result<(), Error>>,
}

pub(super) struct Writer {
    pub rx: mpsc::Receiver<Msg>,
    pub store: Arc<dyn LogStore>,
    pub published: Arc<ArcSwap<State>>,
    pub head: watch::Sender<Seq>,
    pub status: watch::Sender<WriteStatus>,
    pub cfg: LedgerConfig,
    pub since_checkpoint: u64,
    pub checkpointer: Option<Checkpointer>,
    /// A follower's states at the end of its latest replicated batches: the writer's
    /// batches end at the same seqs, so when the writer's `state_checkpointed` entry
    /// arrives, the state it describes is here to encode and prove against its digest.
    pub recent: VecDeque<Arc<State>>,
}

/// Replicated batch ends a follower keeps for the writer's checkpoint records, which
/// come a few batches after the state they describe (encoding it takes the writer tens
/// of milliseconds). The states share all but their latest changes.
const RECENT_STATES: usize = 64;

/// One checkpoint to write.
struct Job {
    state: Arc<State>,
    /// `None`: this node's own, recorded in the ledger once written. `Some`: the digest
    /// the cluster's writer recorded for this seq; the file is kept only if this node's
    /// encoding has exactly that digest (then the chain already vouches for it).
    recorded: Option<Arc<str>>,
}

/// Writes checkpoints on its own thread: encoding the state of 100k users takes tens
/// of milliseconds, which the writer would otherwise add to every caller waiting on
/// that batch. The state is a persistent snapshot, so handing it over is O(1). Each
/// checkpoint written is then recorded in the ledger with its digest, which is what
/// makes it trusted at the next start.
pub(super) struct Checkpointer {
    /// Capacity 1: while one checkpoint is being written, the writer retries with a
    /// later state after its next batch rather than queueing stale ones.
    tx: std::sync::mpsc::SyncSender<Job>,
    handle: std::thread::JoinHandle<()>,
}

/// Checkpoints kept besides the newest two: the first in each window of this many
/// intervals, so a point-in-time query replays at most that many entries while old
/// checkpoints do not pile up (each holds the whole state).
const SPARSE_CHECKPOINT_WINDOW: u64 = 10;

impl Checkpointer {
    /// `writer` is weak so that the checkpointer never keeps the writer alive.
    pub fn start(
        store: Arc<dyn LogStore>,
        interval: u64,
        writer: mpsc::WeakSender<Msg>,
    ) -> Result<Checkpointer, Error> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(1);
        let window = interval.max(1).saturating_mul(SPARSE_CHECKPOINT_WINDOW);
        let handle = std::thread::Builder::new()
            .name("ledger-checkpoint".into())
            .spawn(move || {
                for Job { state, recorded } in rx {
                    let bytes = match state.to_checkpoint() {
                        Ok(b) => b,
                        Err(e) => {
                            warn!(seq = state.seq, error = %e, "checkpoint not encoded");
                            continue;
                        }
                    };
                    let sha256 = hex::encode(Sha256::digest(&bytes));
                    if recorded.as_deref().is_some_and(|r| r != sha256) {
                        // Not a failure of this node's copy (the chain verified): the
                        // writer ran another build's encoding, say. Loading replays.
                        warn!(
                            seq = state.seq,
                            "this node's checkpoint differs from the one the writer \
                             recorded; not kept"
                        );
                        continue;
                    }
                    if let Err(e) = store
                        .put_checkpoint(state.seq, &bytes)
                        .and_then(|()| store.prune_checkpoints(2, window))
                    {
                        warn!(seq = state.seq, error = %e, "checkpoint not written");
                        continue;
                    }
                    if recorded.is_some() {
                        continue;
                    }
                    let (reply, _) = oneshot::channel();
                    let record = Msg::Write(WriteRequest {
                        actor: ACTOR_SYSTEM.into(),
                        actor_cert: None,
                        request_id: None,
                        cmd: Command::RecordCheckpoint {
                            at_seq: state.seq,
                            sha256,
                        },
                        meta: None,
                        reply,
                    });
                    // Not recorded (queue full, shutting down): the checkpoint is then
                    // not trusted at start, and a replay covers for it.
                    if let Some(w) = writer.upgrade() {
                        let _ = w.try_send(record);
                    }
                }
            })
            .map_err(|e| Error::ThreadNotStarted {
                thread: "checkpointer",
                reason: e.to_string(),
            })?;
        Ok(Checkpointer { tx, handle })
    }

    /// Hands `state` over; false when a checkpoint is still being written.
    fn offer(&self, state: &Arc<State>) -> bool {
        let job = Job {
            state: state.clone(),
            recorded: None,
        };
        self.tx.try_send(job).is_ok()
    }

    /// Hands over a state whose checkpoint the cluster's writer recorded with
    /// `digest`. Dropped when a checkpoint is being written: a later one will come.
    fn keep(&self, state: Arc<State>, digest: &str) {
        let job = Job {
            state,
            recorded: Some(digest.into()),
        };
        let _ = self.tx.try_send(job);
    }

    /// Waits for the checkpoint in progress.
    fn finish(self) {
        drop(self.tx);
        let _ = self.handle.join();
    }
}

enum Outcome {
    /// Index into this batch's new entries.
    New(usize),
    Replay(Arc<Entry>),
    Err(Error),
}

/// A batch being prepared: its entries, as stored and decoded, and its idempotency keys.
#[derive(Default)]
struct Prepared {
    raws: Vec<RawEntry>,
    entries: Vec<Arc<Entry>>,
    idem: Vec<IdempotencyKey>,
    /// Keys of this batch, to replay a repeat within the same batch.
    batch_idem: HashMap<Vec<u8>, usize>,
}

fn unavailable_store(e: &StoreError) -> Error {
    match e {
        StoreError::Unconfirmed { .. } => Error::OutcomeUnknown(e.to_string()),
        _ => Error::NotRecorded(e.to_string()),
    }
}

impl Writer {
    pub fn run(mut self) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        let mut metas = Vec::new();
        loop {
            let stop = if matches!(*self.status.borrow(), WriteStatus::Stalled { .. }) {
                self.run_stalled()
            } else {
                let Some(first) = self.rx.blocking_recv() else {
                    self.status.send_replace(WriteStatus::Stopped);
                    return;
                };
                let mut stop = None;
                let mut replicated = None;
                let mut next = Some(first);
                while let Some(m) = next.take() {
                    match m {
                        Msg::Write(w) => batch.push(w),
                        Msg::Meta(m) => metas.push(m),
                        Msg::Replicate(r) => replicated = Some(r),
                        Msg::Stop(s) => stop = Some(s),
                    }
                    // A replicated batch ends the gathering: what came before it is
                    // committed first, in arrival order.
                    if stop.is_none() && replicated.is_none() && batch.len() < MAX_BATCH {
                        next = self.rx.try_recv().ok();
                    }
                }
                if !batch.is_empty() || !metas.is_empty() {
                    self.commit(std::mem::take(&mut batch), std::mem::take(&mut metas));
                }
                if let Some(r) = replicated {
                    let result = self.replicate(&r.entries, &r.idempotency);
                    let _ = r.reply.send(result);
                }
                stop
            };
            if let Some(s) = stop {
                if let Some(c) = self.checkpointer.take() {
                    c.finish();
                }
                self.rx.close();
                // Refuse whatever raced in after the stop.
                while let Ok(m) = self.rx.try_recv() {
                    refuse(m, || Error::ShuttingDown);
                }
                self.status.send_replace(WriteStatus::Stopped);
                let _ = s.send(());
                return;
            }
        }
    }

    /// While storage cannot write: refuse writes promptly, retry recovery with
    /// backoff, and return once writable again (`None`) or on a stop.
    fn run_stalled(&mut self) -> Option<oneshot::Sender<()>> {
        let mut wait = RETRY_FIRST;
        let mut next_try = Instant::now() + wait;
        loop {
            loop {
                match self.rx.try_recv() {
                    Ok(Msg::Stop(s)) => return Some(s),
                    // The cluster's log goes on while this node's own writes fail:
                    // following it is what brings this node back (the local store
                    // refusing it too leaves the batch to be fetched again).
                    Ok(Msg::Replicate(r)) => {
                        let result = self.replicate(&r.entries, &r.idempotency);
                        let _ = r.reply.send(result);
                    }
                    Ok(m) => {
                        let reason = match &*self.status.borrow() {
                            WriteStatus::Stalled { reason, .. } => reason.clone(),
                            _ => "storage cannot write".into(),
                        };
                        refuse(m, || Error::NotRecorded(reason.clone()));
                    }
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => return None,
                }
            }
            if Instant::now() >= next_try {
                let st = self.published.load();
                let head = Witness {
                    seq: st.seq,
                    hash: st.hash,
                };
                match self.store.recover(head) {
                    Ok(()) => {
                        info!(head = head.seq, "storage writes again; writes resume");
                        self.status.send_replace(WriteStatus::Writable);
                        crate::metrics::storage_writable(true);
                        return None;
                    }
                    Err(e) => {
                        warn!(error = %e, retry_in = ?wait, "storage still cannot write");
                        self.status.send_modify(|s| {
                            if let WriteStatus::Stalled { reason, .. } = s {
                                *reason = e.to_string();
                            }
                        });
                        wait = (wait * 2).min(RETRY_MAX);
                        next_try = Instant::now() + wait;
                    }
                }
            }
            std::thread::sleep(STALLED_POLL);
        }
    }

    fn stall(&mut self, e: &StoreError) {
        error!(error = %e, "storage write failed; refusing writes until storage recovers");
        crate::metrics::storage_writable(false);
        self.status.send_replace(WriteStatus::Stalled {
            reason: e.to_string(),
            since_ns: now_ns(),
        });
    }

    fn commit(&mut self, batch: Vec<WriteRequest>, metas: Vec<MetaRequest>) {
        let current = self.published.load_full();
        let mut next = (*current).clone();
        let mut p = Prepared::default();
        let mut outcomes = Vec::with_capacity(batch.len());
        for w in &batch {
            outcomes.push(self.prepare_one(w, &mut next, &mut p));
        }
        let meta: Vec<(&str, &[u8])> = batch
            .iter()
            .zip(&outcomes)
            .filter(|(_, o)| !matches!(o, Outcome::Err(_)))
            .filter_map(|(w, _)| w.meta.as_ref())
            .map(|(k, v)| (k.as_str(), v.as_slice()))
            .chain(metas.iter().map(|m| (m.key.as_str(), m.value.as_slice())))
            .collect();
        let flush_start = Instant::now();
        let appended = if p.raws.is_empty() && meta.is_empty() {
            Ok(())
        } else {
            self.store.append(AppendBatch {
                prev: Witness {
                    seq: current.seq,
                    hash: current.hash,
                },
                entries: &p.raws,
                idempotency: &p.idem,
                meta: &meta,
            })
        };
        let flush_time = flush_start.elapsed();
        drop(meta);
        if let Err(e) = appended {
            // Not being the cluster's writer is no storage fault: nothing stalls.
            if !matches!(
                e,
                StoreError::ReadOnly
                    | StoreError::NotWriter { .. }
                    | StoreError::Unconfirmed {
                        local_failed: false,
                        ..
                    }
            ) {
                self.stall(&e);
            }
            for (w, o) in batch.into_iter().zip(outcomes) {
                let r = match o {
                    Outcome::Err(err) => Err(err),
                    _ => Err(unavailable_store(&e)),
                };
                let _ = w.reply.send(r);
            }
            for m in metas {
                let _ = m.reply.send(Err(unavailable_store(&e)));
            }
            return;
        }
        for m in metas {
            let _ = m.reply.send(Ok(()));
        }
        let state = Arc::new(next);
        if !p.raws.is_empty() {
            // This node writes now: states kept as a follower are of no more use.
            self.recent.clear();
            self.since_checkpoint += p.raws.len() as u64;
            self.published.store(state.clone());
            self.head.send_replace(state.seq);
            let (allowed, denied) = p.entries.iter().fold((0, 0), |(a, d), e| match &e.event {
                Event::SpawnDecided(sd) if sd.allowed => (a + 1, d),
                Event::SpawnDecided(_) => (a, d + 1),
                _ => (a, d),
            });
            crate::metrics::writer_batch(p.raws.len(), flush_time, state.seq, allowed, denied);
            if crate::metrics::enabled() {
                for e in &p.entries {
                    count(&e.event);
                }
                if p.entries.iter().any(|e| changes_access(&e.event)) {
                    holders(&state);
                }
            }
            if self.since_checkpoint >= self.cfg.checkpoint_interval.max(1)
                && self.checkpointer.as_ref().is_some_and(|c| c.offer(&state))
            {
                self.since_checkpoint = 0;
            }
        }
        for (w, o) in batch.into_iter().zip(outcomes) {
            let r = match o {
                Outcome::New(i) => Ok(Committed {
                    entry: p.entries[i].clone(),
                    replayed: false,
                    state: state.clone(),
                }),
                Outcome::Replay(entry) => Ok(Committed {
                    entry,
                    replayed: true,
                    state: state.clone(),
                }),
                Outcome::Err(e) => Err(e),
            };
            let _ = w.reply.send(r);
        }
    }

    /// Checks a batch of the cluster's log against this node's head (density, the
    /// chain, every body), stores it in this node's copy and publishes the state after
    /// it. A batch this node already has is acknowledged with the head; one beyond
    /// the head is refused ([`Error::ReplicaGap`]): the caller fetches what is between.
    fn replicate(&mut self, raws: &[RawEntry], idem: &[IdempotencyKey]) -> Result<Seq, Error> {
        let current = self.published.load_full();
        let (Some(first), Some(last)) = (raws.first(), raws.last()) else {
            return Ok(current.seq);
        };
        if last.seq <= current.seq {
            return Ok(current.seq);
        }
        if first.seq != current.seq + 1 {
            return Err(Error::ReplicaGap {
                head: current.seq,
                first: first.seq,
            });
        }
        let mut next = (*current).clone();
        let mut keep = Vec::new();
        for raw in raws {
            let corrupt = |reason: &str| Error::Corrupt {
                seq: raw.seq,
                reason: format!("in the cluster's log: {reason}"),
            };
            if raw.seq != next.seq + 1 {
                return Err(corrupt("entries are not dense"));
            }
            if chain_hash(&next.hash, &raw.body) != raw.hash {
                return Err(corrupt("hash is not SHA-256(previous hash || body)"));
            }
            let e = Entry::decode(raw.clone())?;
            if e.prev_hash != next.hash || e.seq != raw.seq {
                return Err(corrupt("body's seq or prev_hash does not follow the head"));
            }
            if let Event::StateCheckpointed { at_seq, sha256 } = &e.event {
                if let Some(st) = self.recent.iter().find(|st| st.seq == *at_seq) {
                    keep.push((st.clone(), sha256.clone()));
                }
            }
            next.apply(e.seq, e.time_ns, &e.actor, &e.event);
            next.commit_hash(e.hash);
        }
        self.store.store_replicated(AppendBatch {
            prev: Witness {
                seq: current.seq,
                hash: current.hash,
            },
            entries: raws,
            idempotency: idem,
            meta: &[],
        })?;
        let state = Arc::new(next);
        // Counted so that a follower elected writer checkpoints soon; a follower's own
        // checkpoints could never be recorded (only the writer writes), so it keeps
        // the writer's instead.
        self.since_checkpoint += raws.len() as u64;
        self.published.store(state.clone());
        self.head.send_replace(state.seq);
        crate::metrics::replicated_batch(raws.len(), state.seq);
        if let Some(c) = &self.checkpointer {
            for (st, digest) in keep {
                c.keep(st, &digest);
            }
        }
        if self.recent.len() == RECENT_STATES {
            self.recent.pop_front();
        }
        self.recent.push_back(state.clone());
        Ok(state.seq)
    }

    /// The entry a request_id first produced, if the store holds one for this key.
    fn earlier(&self, w: &WriteRequest, key: &[u8]) -> Result<Option<Arc<Entry>>, Error> {
        let Some(seq) = self.store.idempotency_get(key)? else {
            return Ok(None);
        };
        let Some(raw) = self.store.get(seq)? else {
            // The key outlived its entry (a cut unacknowledged tail): not a replay.
            return Ok(None);
        };
        let e = Entry::decode(raw)?;
        // A digest names the bucket pair; the entry itself must be this request's.
        if e.actor != w.actor || e.request_id != w.request_id {
            return Ok(None);
        }
        Ok(Some(Arc::new(e)))
    }

    fn prepare_one(&self, w: &WriteRequest, next: &mut State, p: &mut Prepared) -> Outcome {
        let key = w
            .request_id
            .as_deref()
            .map(|r| idempotency_key(&w.actor, r));
        if let Some(k) = &key {
            let earlier = match p.batch_idem.get(k) {
                Some(&i) => Some(p.entries[i].clone()),
                None => match self.earlier(w, k) {
                    Ok(e) => e,
                    Err(e) => return Outcome::Err(e),
                },
            };
            if let Some(e) = earlier {
                let digest_differs =
                    e.request_digest.is_some() && e.request_digest != w.cmd.request_digest();
                if e.event.kind() != w.cmd.kind() || digest_differs {
                    return Outcome::Err(Error::RequestIdReused {
                        request_id: w.request_id.clone().unwrap_or_default(),
                        kind: e.event.kind(),
                        seq: e.seq,
                    });
                }
                return Outcome::Replay(e);
            }
        }
        let parts = match w.cmd.parts() {
            Ok(p) => p,
            Err(e) => return Outcome::Err(e),
        };
        let last = match &parts {
            None => self.append_one(w, &w.cmd, next, p),
            Some(parts) => {
                // All or nothing: on a refusal, the batch and the state are put back
                // as they were before the first part.
                let (saved, raws, entries) = (next.clone(), p.raws.len(), p.entries.len());
                let mut last = Err(Error::Inconsistent("a compound command with no part"));
                for cmd in parts {
                    last = self.append_one(w, cmd, next, p);
                    if last.is_err() {
                        *next = saved;
                        p.raws.truncate(raws);
                        p.entries.truncate(entries);
                        break;
                    }
                }
                last
            }
        };
        let i = match last {
            Ok(i) => i,
            Err(e) => return Outcome::Err(e),
        };
        if let Some(k) = key {
            // The key names the request's last entry: a replay answers what the first
            // call answered.
            let e = &p.entries[i];
            p.batch_idem.insert(k.clone(), i);
            p.idem.push(IdempotencyKey {
                key: k,
                seq: e.seq,
                time_ns: e.time_ns,
            });
        }
        Outcome::New(i)
    }

    /// Prepares `cmd` (`w`'s command or one of its parts) as the next entry; returns
    /// its index in the batch.
    fn append_one(
        &self,
        w: &WriteRequest,
        cmd: &Command,
        next: &mut State,
        p: &mut Prepared,
    ) -> Result<usize, Error> {
        let seq = next.seq + 1;
        let time_ns = now_ns().max(next.time_ns);
        let event = cmd.prepare(next, seq, time_ns, &self.cfg.spawn)?;
        let body = EntryBody {
            seq,
            time_ns,
            actor: w.actor.clone(),
            actor_cert: w.actor_cert.clone(),
            request_id: w.request_id.clone(),
            request_digest: w.request_id.as_ref().and_then(|_| w.cmd.request_digest()),
            prev_hash: hex::encode(next.hash),
            event,
        };
        let bytes = serde_json::to_vec(&body)
            .map(bytes::Bytes::from)
            .map_err(|e| Error::Unencodable(e.to_string()))?;
        let prev_hash = next.hash;
        let hash = chain_hash(&prev_hash, &bytes);
        next.apply(seq, time_ns, &w.actor, &body.event);
        next.commit_hash(hash);
        p.raws.push(RawEntry {
            seq,
            hash,
            body: bytes.clone(),
        });
        p.entries.push(Arc::new(Entry {
            seq,
            time_ns,
            actor: body.actor,
            request_id: body.request_id,
            request_digest: body.request_digest,
            event: body.event,
            prev_hash,
            hash,
            body: bytes,
        }));
        Ok(p.entries.len() - 1)
    }
}

/// However the writer ends (a stop, or a panic unwinding), the ledger stops claiming
/// it takes writes: health turns NOT_SERVING and writes get UNAVAILABLE.
impl Drop for Writer {
    fn drop(&mut self) {
        self.status.send_if_modified(|s| {
            let changed = *s != WriteStatus::Stopped;
            *s = WriteStatus::Stopped;
            changed
        });
    }
}

fn refuse(m: Msg, why: impl Fn() -> Error) {
    match m {
        Msg::Write(w) => {
            let _ = w.reply.send(Err(why()));
        }
        Msg::Meta(m) => {
            let _ = m.reply.send(Err(why()));
        }
        Msg::Replicate(r) => {
            let _ = r.reply.send(Err(why()));
        }
        Msg::Stop(s) => {
            let _ = s.send(());
        }
    }
}

/// The per-kind counters of one appended event (alerts, limited-socket calls, spawn
/// decisions).
fn count(event: &Event) {
    match event {
        Event::Alert(a) => crate::metrics::alert(a.alert.as_str()),
        Event::SpawnDecided(sd) => crate::metrics::spawn_decision(sd.socket.as_str()),
        Event::ProxyCall(p) => {
            let rule = match p.outcome {
                crate::ledger::event::ProxyOutcome::Refused => refusal_rule(&p.reason),
                _ => String::new(),
            };
            crate::metrics::proxy_call(p.outcome.as_str(), rule)
        }
        _ => {}
    }
}

/// The rule a refusal names (`refused by the limited socket (RULE): ...`); a
/// resource that is not the caller's is answered as not found.
fn refusal_rule(reason: &str) -> String {
    reason
        .strip_prefix("refused by the limited socket (")
        .and_then(|r| r.split_once("):"))
        .map(|(rule, _)| rule.chars().take(64).collect())
        .unwrap_or_else(|| "not found".into())
}

/// Whether an event can change who holds access (and the server's start, so that the
/// gauges are set from the first batch).
fn changes_access(event: &Event) -> bool {
    matches!(
        event,
        Event::ServerStarted { .. }
            | Event::GrantIssued { .. }
            | Event::GrantRevoked { .. }
            | Event::GrantExpired { .. }
            | Event::MemberAdded { .. }
            | Event::MemberRemoved { .. }
            | Event::GroupDeleted { .. }
            | Event::BuiltinGroupRestored { .. }
    )
}

/// The gauges of users holding the raw socket, a limited one, and `--privileged` now.
fn holders(state: &Arc<State>) {
    use crate::ledger::event::SocketAccess;
    let who = super::policy::who_has_access(state, super::time::now_ns());
    let count = |f: &dyn Fn(&super::policy::Access) -> bool| who.iter().filter(|a| f(a)).count();
    crate::metrics::access_holders(
        count(&|a| a.socket == SocketAccess::Raw),
        count(&|a| a.socket == SocketAccess::Limited),
        count(&|a| a.privileged),
    );
}
