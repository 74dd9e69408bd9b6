//! The [`Ledger`] handle: opening a store, handing writes to the writer thread, and
//! the lock-free reads (current state, point in time, entries, metadata).

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{info, warn};

use super::entry::Entry;
use super::event::{self, Event, Seq, UnixNanos};
use super::intervals::{Decided, Level, Report};
use super::log::{IdempotencyKey, LogStore, RawEntry};
use super::time::now_ns;
use super::writer::{
    self, Checkpointer, MetaRequest, Msg, ReplicateRequest, WriteRequest, WriteStatus, Writer,
};
use super::{load, names, policy, Access, Command, Error, LedgerConfig, State};

/// The result of a mutation.
#[derive(Debug, Clone)]
pub struct Committed {
    /// The appended entry, or the original one when `replayed`.
    pub entry: Arc<Entry>,
    /// True when the request_id was seen before and nothing was appended.
    pub replayed: bool,
    /// The published state right after the batch (at least as new as `entry`).
    pub state: Arc<State>,
}

/// A past position to evaluate at.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum At {
    Seq(Seq),
    /// The last entry at or before this time; expiry judged at this time.
    Time(UnixNanos),
}

/// The chain head.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Head {
    pub seq: Seq,
    pub hash: [u8; 32],
    pub time_ns: UnixNanos,
    pub earliest_seq: Seq,
}

/// Handle to the ledger. Cheap to clone.
#[derive(Clone)]
pub struct Ledger {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    /// The state as of the durable head; replaced whole by the writer after each
    /// flushed batch, loaded lock-free by readers.
    pub(super) state: Arc<ArcSwap<State>>,
    /// Commands for the writer thread. Bounded: when the writer falls behind,
    /// callers wait instead of queueing without limit.
    pub(super) tx: mpsc::Sender<Msg>,
    /// The durable head seq, for followers of the audit stream.
    pub(super) head: watch::Receiver<Seq>,
    /// Whether writes are taken; the writer updates it, health mirrors it.
    pub(super) status: watch::Receiver<WriteStatus>,
    pub(super) store: Arc<dyn LogStore>,
    /// The writer thread, joined on shutdown.
    pub(super) writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Ledger {
    /// Loads the state from the store (refusing a store that is not whole, unless it
    /// was opened read-only) and starts the writer thread.
    pub fn open(store: Arc<dyn LogStore>, cfg: LedgerConfig) -> Result<Ledger, Error> {
        let read_only = store.read_only();
        let loaded = load::at_start(&*store, read_only)?;
        let (state, from_checkpoint) = (loaded.state, loaded.from_checkpoint);
        let head = state.seq;
        info!(
            head,
            checkpoint = from_checkpoint,
            replayed = head - from_checkpoint,
            "ledger loaded"
        );
        let initial = if read_only {
            let reason = loaded
                .damage
                .map(|(seq, why)| format!("damaged at seq {seq}: {why}"));
            if let Some(r) = &reason {
                warn!(problem = %r, "serving a damaged ledger read-only, as of seq {head}");
            }
            WriteStatus::ReadOnly { reason }
        } else {
            WriteStatus::Writable
        };
        let state = Arc::new(ArcSwap::from_pointee(state));
        let (tx, rx) = mpsc::channel(writer::WRITE_QUEUE);
        // Streams and verify cover every stored entry; read-only on a damaged store,
        // that is beyond the state, which stops before the damage.
        let stored = if read_only {
            store
                .last()
                .ok()
                .flatten()
                .map_or(head, |e| e.seq.max(head))
        } else {
            head
        };
        let (head_tx, head_rx) = watch::channel(stored);
        let (status_tx, status_rx) = watch::channel(initial);
        let checkpointer = if read_only {
            None
        } else {
            Some(Checkpointer::start(
                store.clone(),
                cfg.checkpoint_interval,
                tx.downgrade(),
            )?)
        };
        let writer = Writer {
            rx,
            store: store.clone(),
            published: state.clone(),
            head: head_tx,
            status: status_tx,
            cfg: cfg.clone(),
            since_checkpoint: head - from_checkpoint,
            checkpointer,
            recent: std::collections::VecDeque::new(),
        };
        let handle = std::thread::Builder::new()
            .name("ledger-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| Error::ThreadNotStarted {
                thread: "writer",
                reason: e.to_string(),
            })?;
        Ok(Ledger {
            inner: Arc::new(Inner {
                state,
                tx,
                head: head_rx,
                status: status_rx,
                store,
                writer: Mutex::new(Some(handle)),
            }),
        })
    }

    /// Whether writes are taken now, and if not, why.
    pub fn write_status(&self) -> WriteStatus {
        self.inner.status.borrow().clone()
    }

    /// The durable head seq, changing after each flushed batch.
    pub fn watch_head(&self) -> watch::Receiver<Seq> {
        self.inner.head.clone()
    }

    /// Follows [`Ledger::write_status`].
    pub fn watch_write_status(&self) -> watch::Receiver<WriteStatus> {
        self.inner.status.clone()
    }

    /// Appends the event `cmd` produces, durably, and returns it. With a request_id
    /// seen before from the same actor, returns the original entry and appends nothing.
    pub async fn submit(
        &self,
        actor: &str,
        request_id: Option<String>,
        cmd: Command,
    ) -> Result<Committed, Error> {
        self.submit_with_meta(actor, request_id, cmd, None).await
    }

    /// Like [`Ledger::submit`], and stores the named value `meta` in the same batch
    /// (unless the command is refused): no flush of its own.
    pub async fn submit_with_meta(
        &self,
        actor: &str,
        request_id: Option<String>,
        cmd: Command,
        meta: Option<(&str, Vec<u8>)>,
    ) -> Result<Committed, Error> {
        self.submit_full(actor, None, request_id, cmd, meta).await
    }

    /// Like [`Ledger::submit`], recording the client certificate `actor_cert` the
    /// actor presented with the entry.
    pub async fn submit_from(
        &self,
        actor: &str,
        actor_cert: Option<&str>,
        request_id: Option<String>,
        cmd: Command,
    ) -> Result<Committed, Error> {
        self.submit_full(actor, actor_cert, request_id, cmd, None)
            .await
    }

    async fn submit_full(
        &self,
        actor: &str,
        actor_cert: Option<&str>,
        request_id: Option<String>,
        cmd: Command,
        meta: Option<(&str, Vec<u8>)>,
    ) -> Result<Committed, Error> {
        if let Some(r) = &request_id {
            names::request_id(r)?;
        }
        let (reply, rx) = oneshot::channel();
        let req = WriteRequest {
            actor: actor.to_string(),
            actor_cert: actor_cert.map(str::to_string),
            request_id,
            cmd,
            meta: meta.map(|(k, v)| (k.to_string(), v)),
            reply,
        };
        self.ask(Msg::Write(req), rx).await
    }

    /// Stores and applies a batch of the cluster's shared log that another node (or
    /// this one, as writer) appended; returns the head after it. A batch this node has
    /// already is acknowledged; one that does not follow the head is refused
    /// ([`Error::ReplicaGap`]), as is any entry that does not chain.
    pub async fn replicate(
        &self,
        entries: Vec<RawEntry>,
        idempotency: Vec<IdempotencyKey>,
    ) -> Result<Seq, Error> {
        let (reply, rx) = oneshot::channel();
        let req = ReplicateRequest {
            entries,
            idempotency,
            reply,
        };
        self.ask(Msg::Replicate(req), rx).await
    }

    /// Hands `msg` to the writer and waits for its answer on `rx`.
    async fn ask<T>(&self, msg: Msg, rx: oneshot::Receiver<Result<T, Error>>) -> Result<T, Error> {
        if let WriteStatus::ReadOnly { .. } = *self.inner.status.borrow() {
            return Err(Error::ReadOnly);
        }
        self.inner
            .tx
            .send(msg)
            .await
            .map_err(|_| Error::ShuttingDown)?;
        rx.await.map_err(|_| Error::WriterStopped)?
    }

    /// The current state (as of the durable head).
    pub fn snapshot(&self) -> Arc<State> {
        self.inner.state.load_full()
    }

    pub fn head(&self) -> Result<Head, Error> {
        let st = self.snapshot();
        let earliest = self.inner.store.earliest()?.unwrap_or(0);
        Ok(Head {
            seq: st.seq,
            hash: st.hash,
            time_ns: st.time_ns,
            earliest_seq: earliest,
        })
    }

    /// Effective access now, from memory.
    pub fn check_access(&self, user: &str) -> Result<Access, Error> {
        names::user(user)?;
        Ok(policy::evaluate(&self.snapshot(), user, now_ns()))
    }

    /// The state at a past position and the time to judge expiry at.
    pub async fn state_at(&self, at: At) -> Result<(Arc<State>, UnixNanos), Error> {
        let current = self.snapshot();
        match at {
            At::Seq(s) if s >= current.seq => {
                if s > current.seq {
                    return Err(Error::BeyondHead {
                        seq: s,
                        head: current.seq,
                    });
                }
                let t = current.time_ns;
                Ok((current, t))
            }
            At::Time(t) if t >= current.time_ns => Ok((current, t)),
            _ => {
                let store = self.inner.store.clone();
                tokio::task::spawn_blocking(move || load::past_state(&*store, &current, at))
                    .await
                    .map_err(Error::task("point-in-time"))?
            }
        }
    }

    /// Effective access at a past position.
    pub async fn check_access_at(&self, user: &str, at: At) -> Result<Access, Error> {
        names::user(user)?;
        let (st, t) = self.state_at(at).await?;
        Ok(policy::evaluate(&st, user, t))
    }

    pub async fn who_has_access(&self, at: Option<At>) -> Result<(Vec<Access>, Seq), Error> {
        let (st, t) = match at {
            None => (self.snapshot(), now_ns()),
            Some(at) => self.state_at(at).await?,
        };
        Ok((policy::who_has_access(&st, t), st.seq))
    }

    /// The access intervals of a window (DESIGN §2): from `from` (default: the
    /// beginning) to `to` (default: now), for one user or everyone, at least `level`.
    pub async fn access_intervals(
        &self,
        from: Option<At>,
        to: Option<At>,
        user: Option<String>,
        level: Level,
    ) -> Result<Report, Error> {
        if let Some(u) = &user {
            names::user(u)?;
        }
        let current = self.snapshot();
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut decide = |id: &str| {
                me.decision(id).ok().flatten().map(|d| Decided {
                    socket: d.socket,
                    privileged: d.privileged,
                })
            };
            load::intervals(
                &*me.inner.store,
                &current,
                from.unwrap_or(At::Seq(0)),
                to.unwrap_or(At::Time(now_ns())),
                level,
                user,
                &mut decide,
            )
        })
        .await
        .map_err(Error::task("access intervals"))?
    }

    /// A small named value kept beside the log (e.g. the Docker watcher's cursor).
    pub fn meta_get(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.inner.store.meta_get(key)?)
    }

    /// Stores a small named value durably, through the writer (with the next batch).
    pub async fn meta_put(&self, key: &str, value: &[u8]) -> Result<(), Error> {
        let (reply, rx) = oneshot::channel();
        let req = MetaRequest {
            key: key.to_string(),
            value: value.to_vec(),
            reply,
        };
        self.ask(Msg::Meta(req), rx).await
    }

    /// The recorded spawn decision a `privledger.decision` label names, if any.
    pub fn decision(&self, decision_id: &str) -> Result<Option<event::SpawnDecision>, Error> {
        let Some((ledger, seq)) = decision_id.split_once('-') else {
            return Ok(None);
        };
        let Ok(seq) = seq.parse::<Seq>() else {
            return Ok(None);
        };
        if ledger != self.snapshot().ledger_id() {
            return Ok(None);
        }
        Ok(match self.entry(seq)? {
            Some(Entry {
                event: Event::SpawnDecided(d),
                ..
            }) if d.decision_id == decision_id => Some(d),
            _ => None,
        })
    }

    /// One entry, decoded.
    pub fn entry(&self, seq: Seq) -> Result<Option<Entry>, Error> {
        match self.inner.store.get(seq)? {
            Some(raw) => Ok(Some(Entry::decode(raw)?)),
            None => Ok(None),
        }
    }
    /// Stops the writer after it has answered everything queued (every acknowledged
    /// write is already durable).
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.inner.tx.send(Msg::Stop(tx)).await.is_ok() {
            let _ = rx.await;
        }
        let handle = self
            .inner
            .writer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(h) = handle {
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
    }
}
