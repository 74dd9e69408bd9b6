//! The ledger: an append-only, hash-chained log of events with the state derived
//! from it.
//!
//! One writer thread owns appends ([`writer`]). Callers send commands over a bounded
//! channel; the writer batches them, appends each batch durably through the
//! [`log::LogStore`] it was given, and only then publishes the new state and answers
//! every caller (group commit: concurrent writers share one flush). Readers load the
//! published `Arc<State>` without taking any lock. Start-up ([`load`]) refuses a store
//! that is not whole unless it was opened read-only for forensics.

pub mod correlate;
pub mod error;
pub mod event;
mod load;
pub mod log;
pub mod names;
pub mod observe;
pub mod policy;
pub mod state;
mod writer;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{info, warn};

pub use error::Error;
use event::{EntryBody, Event, GrantSpec, Seq, UnixNanos};
use log::{LogStore, RawEntry};
pub use policy::Access;
pub use state::{Command, State};
pub use writer::WriteStatus;
use writer::{Checkpointer, MetaRequest, Msg, WriteRequest, Writer};

/// Container label naming the decision a container was spawned under.
pub const LABEL_DECISION: &str = "privledger.decision";
/// Container label naming the user a container is for.
pub const LABEL_USER: &str = "privledger.user";
/// Actor of entries that record what the Docker daemon did.
pub const ACTOR_DOCKER: &str = "docker";
/// Actor of entries the server appends on its own.
pub const ACTOR_SYSTEM: &str = "system";

/// Paths used in the spawner fragments of a decision.
#[derive(Debug, Clone, PartialEq)]
pub struct SpawnConfig {
    /// The daemon socket on the host, bound for raw grants.
    pub host_socket: String,
    /// Where it appears in the container.
    pub container_socket: String,
    /// Host directory holding the per-user limited proxy sockets (`DIR/USER/docker.sock`).
    pub limited_host_dir: String,
    /// Where the limited socket appears in the container (and `DOCKER_HOST` points).
    pub limited_container_socket: String,
}

impl Default for SpawnConfig {
    fn default() -> Self {
        SpawnConfig {
            host_socket: "/var/run/docker.sock".into(),
            container_socket: "/var/run/docker.sock".into(),
            limited_host_dir: "/run/privledger/users".into(),
            limited_container_socket: "/run/privledger/docker.sock".into(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct LedgerConfig {
    /// Write a state checkpoint every this many entries (start-up replays at most this
    /// many; point-in-time queries replay at most this many).
    pub checkpoint_interval: u64,
    pub spawn: SpawnConfig,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        LedgerConfig {
            checkpoint_interval: 10_000,
            spawn: SpawnConfig::default(),
        }
    }
}

/// One decoded entry, with its exact stored body.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub seq: Seq,
    pub time_ns: UnixNanos,
    pub actor: String,
    pub request_id: Option<String>,
    pub event: Event,
    pub prev_hash: [u8; 32],
    pub hash: [u8; 32],
    /// The exact stored bytes; `hash = SHA-256(prev_hash || body)`.
    pub body: bytes::Bytes,
}

impl Entry {
    fn decode(raw: RawEntry) -> Result<Entry, Error> {
        let body: EntryBody = serde_json::from_slice(&raw.body).map_err(|e| Error::Corrupt {
            seq: raw.seq,
            reason: format!("body does not decode: {e}"),
        })?;
        let mut prev_hash = [0u8; 32];
        hex::decode_to_slice(&body.prev_hash, &mut prev_hash).map_err(|e| Error::Corrupt {
            seq: raw.seq,
            reason: format!("prev_hash: {e}"),
        })?;
        Ok(Entry {
            seq: raw.seq,
            time_ns: body.time_ns,
            actor: body.actor,
            request_id: body.request_id,
            event: body.event,
            prev_hash,
            hash: raw.hash,
            body: raw.body,
        })
    }
}

/// An entry as the audit stream sends it: the header fields from its body, and the
/// exact body, without decoding the event.
#[derive(Debug, Clone, PartialEq)]
pub struct EntryRecord {
    pub seq: Seq,
    pub time_ns: UnixNanos,
    pub actor: String,
    pub request_id: Option<String>,
    pub kind: &'static str,
    pub prev_hash: [u8; 32],
    pub hash: [u8; 32],
    pub body: bytes::Bytes,
}

/// The fields of a stored body the stream needs; serde skips the rest unparsed.
#[derive(serde::Deserialize)]
struct RecordHead<'a> {
    time_ns: UnixNanos,
    #[serde(borrow)]
    actor: std::borrow::Cow<'a, str>,
    #[serde(default, borrow)]
    request_id: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    prev_hash: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    event: RecordKind<'a>,
}

#[derive(serde::Deserialize)]
struct RecordKind<'a> {
    #[serde(borrow)]
    kind: std::borrow::Cow<'a, str>,
    /// An alert's own kind.
    #[serde(default, borrow)]
    alert: Option<std::borrow::Cow<'a, str>>,
}

impl EntryRecord {
    /// The record of `raw` if it passes `filter`.
    fn decode(raw: RawEntry, filter: &StreamFilter) -> Result<Option<EntryRecord>, Error> {
        if filter.subject.is_some() {
            // Whether an entry concerns a subject depends on the whole event.
            let e = Entry::decode(raw)?;
            return Ok(filter.matches(&e).then(|| EntryRecord::from(e)));
        }
        let corrupt = |reason: String| Error::Corrupt {
            seq: raw.seq,
            reason,
        };
        let head: RecordHead<'_> = serde_json::from_slice(&raw.body)
            .map_err(|e| corrupt(format!("body does not decode: {e}")))?;
        let kind = Event::KINDS
            .iter()
            .find(|k| **k == head.event.kind)
            .ok_or_else(|| corrupt(format!("unknown event kind {:?}", head.event.kind)))?;
        if !filter.wants_kind(kind, head.event.alert.as_deref()) {
            return Ok(None);
        }
        let mut prev_hash = [0u8; 32];
        hex::decode_to_slice(&*head.prev_hash, &mut prev_hash)
            .map_err(|e| corrupt(format!("prev_hash: {e}")))?;
        let (time_ns, actor, request_id) = (
            head.time_ns,
            head.actor.into_owned(),
            head.request_id.map(|r| r.into_owned()),
        );
        Ok(Some(EntryRecord {
            seq: raw.seq,
            time_ns,
            actor,
            request_id,
            kind,
            prev_hash,
            hash: raw.hash,
            body: raw.body,
        }))
    }
}

impl From<Entry> for EntryRecord {
    fn from(e: Entry) -> EntryRecord {
        EntryRecord {
            seq: e.seq,
            time_ns: e.time_ns,
            actor: e.actor,
            request_id: e.request_id,
            kind: e.event.kind(),
            prev_hash: e.prev_hash,
            hash: e.hash,
            body: e.body,
        }
    }
}

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

#[derive(Debug, Clone, PartialEq)]
pub struct VerifyReport {
    pub from_seq: Seq,
    pub to_seq: Seq,
    pub checked: u64,
    /// The first seq that fails, and why.
    pub first_bad: Option<(Seq, String)>,
    pub last_hash: [u8; 32],
}

/// Which entries a stream delivers.
#[derive(Debug, Clone, Default)]
pub struct StreamFilter {
    pub kinds: Vec<String>,
    pub subject: Option<String>,
}

impl StreamFilter {
    pub fn validate(&self) -> Result<(), Error> {
        for k in &self.kinds {
            if !Event::KINDS.contains(&k.as_str()) {
                return Err(Error::InvalidArgument(format!(
                    "unknown entry kind {k:?}; known kinds: {}",
                    Event::KINDS.join(", ")
                )));
            }
        }
        if let Some(s) = &self.subject {
            names::check_subject_filter(s)?;
        }
        Ok(())
    }

    /// Whether an entry of `kind` (an alert: also of `alert` kind) passes the kinds.
    fn wants_kind(&self, kind: &str, alert: Option<&str>) -> bool {
        self.kinds.is_empty()
            || self
                .kinds
                .iter()
                .any(|k| k == kind || Some(k.as_str()) == alert)
    }

    fn matches(&self, e: &Entry) -> bool {
        self.wants_kind(e.event.kind(), e.event.alert_kind())
            && self
                .subject
                .as_deref()
                .is_none_or(|s| e.event.concerns(e.seq, s))
    }
}

/// Handle to the ledger. Cheap to clone.
#[derive(Clone)]
pub struct Ledger {
    inner: Arc<Inner>,
}

struct Inner {
    /// The state as of the durable head; replaced whole by the writer after each
    /// flushed batch, loaded lock-free by readers.
    state: Arc<ArcSwap<State>>,
    /// Commands for the writer thread. Bounded: when the writer falls behind,
    /// callers wait instead of queueing without limit.
    tx: mpsc::Sender<Msg>,
    /// The durable head seq, for followers of the audit stream.
    head: watch::Receiver<Seq>,
    /// Whether writes are taken; the writer updates it, health mirrors it.
    status: watch::Receiver<WriteStatus>,
    store: Arc<dyn LogStore>,
    /// The writer thread, joined on shutdown.
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

pub fn now_ns() -> UnixNanos {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// RFC 3339 rendering of a unix-ns time (UTC).
pub fn format_time(ns: UnixNanos) -> String {
    let t = if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        UNIX_EPOCH
    };
    humantime::format_rfc3339_nanos(t).to_string()
}

/// SHA-256 of a token secret, hex, as stored.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A fresh bearer secret: 32 random bytes, URL-safe base64, with a recognizable prefix
/// (so secret scanners can find leaked ones). Only its [`hash_secret`] is ever stored.
pub fn new_secret() -> Result<String, Error> {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| Error::Unavailable(format!("no randomness available: {e}")))?;
    Ok(format!(
        "plg_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    ))
}

fn chain_hash(prev: &[u8; 32], body: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(body);
    h.finalize().into()
}

fn idempotency_key(actor: &str, request_id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(actor.len() + 1 + request_id.len());
    k.extend_from_slice(actor.as_bytes());
    k.push(0);
    k.extend_from_slice(request_id.as_bytes());
    k
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
        };
        let handle = std::thread::Builder::new()
            .name("ledger-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| Error::Unavailable(format!("cannot start the writer: {e}")))?;
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
        if let Some(r) = &request_id {
            names::request_id(r)?;
        }
        let (reply, rx) = oneshot::channel();
        let req = WriteRequest {
            actor: actor.to_string(),
            request_id,
            cmd,
            reply,
        };
        self.ask(Msg::Write(req), rx).await
    }

    /// Hands `msg` to the writer and waits for its answer on `rx`.
    async fn ask<T>(&self, msg: Msg, rx: oneshot::Receiver<Result<T, Error>>) -> Result<T, Error> {
        if let WriteStatus::ReadOnly { .. } = *self.inner.status.borrow() {
            return Err(Error::Unavailable(
                "the ledger is open read-only for forensics: nothing can be written".into(),
            ));
        }
        self.inner
            .tx
            .send(msg)
            .await
            .map_err(|_| Error::Unavailable("the ledger is shutting down".into()))?;
        rx.await
            .map_err(|_| Error::Unavailable("the ledger writer stopped".into()))?
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
                    return Err(Error::InvalidArgument(format!(
                        "seq {s} is beyond the head ({})",
                        current.seq
                    )));
                }
                let t = current.time_ns;
                Ok((current, t))
            }
            At::Time(t) if t >= current.time_ns => Ok((current, t)),
            _ => {
                let store = self.inner.store.clone();
                tokio::task::spawn_blocking(move || load::past_state(&*store, &current, at))
                    .await
                    .map_err(|e| Error::Unavailable(format!("point-in-time task: {e}")))?
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

    /// Streams entries from `from` (history, then live when `follow`) into a bounded
    /// channel of chunks (in log order, each up to 1024 entries; `buffer` chunks are
    /// held at most). The producer reads from the store in chunks and waits for the
    /// head to move, so there is no gap and no duplicate, and a consumer that stops
    /// reading only stops the producer (memory stays bounded by the channel). The
    /// producer ends when the receiver is dropped.
    pub fn stream(
        &self,
        from: Seq,
        follow: bool,
        filter: StreamFilter,
        buffer: usize,
    ) -> Result<mpsc::Receiver<Result<Vec<Entry>, Error>>, Error> {
        self.stream_with(from, follow, filter, buffer, |raw, filter| {
            let e = Entry::decode(raw)?;
            Ok(filter.matches(&e).then_some(e))
        })
    }

    /// Like [`Ledger::stream`], but decodes only what the audit stream sends: the
    /// consumer gets the exact body, so the event itself is decoded only when a
    /// subject filter needs it (DESIGN §7: catch-up ≥ 200k entries/s).
    pub fn stream_records(
        &self,
        from: Seq,
        follow: bool,
        filter: StreamFilter,
        buffer: usize,
    ) -> Result<mpsc::Receiver<Result<Vec<EntryRecord>, Error>>, Error> {
        self.stream_with(from, follow, filter, buffer, EntryRecord::decode)
    }

    fn stream_with<T: Send + 'static>(
        &self,
        from: Seq,
        follow: bool,
        filter: StreamFilter,
        buffer: usize,
        decode: fn(RawEntry, &StreamFilter) -> Result<Option<T>, Error>,
    ) -> Result<mpsc::Receiver<Result<Vec<T>, Error>>, Error> {
        filter.validate()?;
        let filter = Arc::new(filter);
        let (tx, rx) = mpsc::channel(buffer.max(1));
        let ledger = self.clone();
        let mut head = self.inner.head.clone();
        let span = tracing::info_span!("audit_stream", from, follow);
        tokio::spawn(tracing::Instrument::instrument(
            async move {
                let mut next = from.max(1);
                loop {
                    let target = *head.borrow_and_update();
                    while next <= target {
                        let store = ledger.inner.store.clone();
                        let f = filter.clone();
                        let chunk = tokio::task::spawn_blocking(move || {
                            let raws = store.range(next, target, STREAM_CHUNK)?;
                            let last = raws.last().map(|r| r.seq);
                            let mut out = Vec::with_capacity(raws.len());
                            for raw in raws {
                                out.extend(decode(raw, &f)?);
                            }
                            Ok::<_, Error>((last, out))
                        })
                        .await;
                        let (last, chunk) = match chunk {
                            Ok(Ok(c)) => c,
                            Ok(Err(e)) => {
                                let _ = tx.send(Err(e)).await;
                                return;
                            }
                            Err(e) => {
                                let _ = tx
                                    .send(Err(Error::Unavailable(format!("stream task: {e}"))))
                                    .await;
                                return;
                            }
                        };
                        let Some(last) = last else {
                            // Entries below the earliest retained seq: skip to it.
                            match ledger.inner.store.earliest() {
                                Ok(Some(f)) if f > next => {
                                    next = f;
                                    continue;
                                }
                                _ => break,
                            }
                        };
                        next = last + 1;
                        // One send per chunk, not per entry (DESIGN §7 catch-up rate).
                        if !chunk.is_empty() && tx.send(Ok(chunk)).await.is_err() {
                            return; // the consumer went away
                        }
                    }
                    if !follow {
                        return;
                    }
                    tokio::select! {
                        changed = head.changed() => if changed.is_err() { return },
                        _ = tx.closed() => return,
                    }
                }
            },
            span,
        ));
        Ok(rx)
    }

    /// Recomputes the chain over `[from, to]` (0 = earliest / head).
    pub async fn verify(&self, from: Seq, to: Seq) -> Result<VerifyReport, Error> {
        let store = self.inner.store.clone();
        let head = *self.inner.head.borrow();
        tokio::task::spawn_blocking(move || verify_range(&*store, from, to, head))
            .await
            .map_err(|e| Error::Unavailable(format!("verify task: {e}")))?
    }

    /// Makes the configured built-in groups exist with their configured grants, and
    /// records that the server started. Appends only what is missing or changed.
    pub async fn start_up(
        &self,
        builtins: &[(String, GrantSpec)],
        version: &str,
    ) -> Result<(), Error> {
        for (name, spec) in builtins {
            let st = self.snapshot();
            if !st.group(name).is_some_and(|g| g.builtin) {
                warn!(group = %name, "built-in group missing; restoring it");
                self.submit(
                    ACTOR_SYSTEM,
                    None,
                    Command::RestoreBuiltinGroup {
                        group: name.clone(),
                    },
                )
                .await?;
            }
            let st = self.snapshot();
            let current: Vec<_> = st
                .open_grants_of(&event::Subject::Group(name.clone()))
                .filter(|g| g.builtin)
                .map(|g| (g.id, g.spec))
                .collect();
            if current.iter().any(|(_, s)| s == spec) && current.len() == 1 {
                continue;
            }
            for (id, _) in current {
                self.submit(
                    ACTOR_SYSTEM,
                    None,
                    Command::ReplaceBuiltinGrant { grant_id: id },
                )
                .await?;
            }
            self.submit(
                ACTOR_SYSTEM,
                None,
                Command::IssueBuiltinGrant {
                    group: name.clone(),
                    spec: *spec,
                },
            )
            .await?;
        }
        self.submit(
            ACTOR_SYSTEM,
            None,
            Command::ServerStarted {
                version: version.to_string(),
            },
        )
        .await?;
        Ok(())
    }

    /// Appends `grant_expired` for every grant whose expiry has passed, then waits
    /// for the next expiry (or a new grant) until `shutdown` resolves.
    pub async fn run_expiry(&self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut head = self.inner.head.clone();
        loop {
            let now = now_ns();
            let st = self.snapshot();
            let mut wait = Duration::from_secs(60);
            if let Some((exp, id)) = st.next_expiry() {
                if exp <= now {
                    match self
                        .submit(ACTOR_SYSTEM, None, Command::ExpireGrant { grant_id: id })
                        .await
                    {
                        Ok(c) => info!(grant = id, seq = c.entry.seq, "grant expired"),
                        Err(Error::Unavailable(e)) => {
                            warn!(error = %e, "cannot record an expiry now");
                            wait = Duration::from_secs(1);
                        }
                        Err(e) => warn!(grant = id, error = %e, "expiry refused"),
                    }
                    if wait != Duration::from_secs(1) {
                        continue;
                    }
                } else {
                    wait = wait.min(Duration::from_nanos((exp - now) as u64));
                }
            }
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(wait) => {}
                r = head.changed() => if r.is_err() { return },
            }
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

/// Entries read from the store per step of a stream.
const STREAM_CHUNK: usize = 1024;
/// Entries read from the store per step of a verify.
const VERIFY_CHUNK: usize = 4096;

fn verify_range(
    store: &dyn LogStore,
    from: Seq,
    to: Seq,
    head: Seq,
) -> Result<VerifyReport, Error> {
    let earliest = store.earliest()?.unwrap_or(1);
    let from = if from == 0 { earliest } else { from };
    let to = if to == 0 { head } else { to };
    if from > to && to != 0 {
        return Err(Error::InvalidArgument(format!(
            "from_seq {from} is after to_seq {to}"
        )));
    }
    if to > head {
        return Err(Error::InvalidArgument(format!(
            "to_seq {to} is beyond the head ({head})"
        )));
    }
    if from < earliest {
        return Err(Error::InvalidArgument(format!(
            "from_seq {from} is before the earliest retained entry ({earliest})"
        )));
    }
    let mut prev: [u8; 32] = if from <= 1 {
        [0u8; 32]
    } else {
        match store.get(from - 1)? {
            Some(e) => e.hash,
            None => [0u8; 32],
        }
    };
    let mut report = VerifyReport {
        from_seq: from,
        to_seq: to,
        checked: 0,
        first_bad: None,
        last_hash: prev,
    };
    if head == 0 {
        return Ok(report);
    }
    let mut expect = from;
    while expect <= to {
        let chunk = match store.range(expect, to, VERIFY_CHUNK) {
            Ok(c) => c,
            Err(log::StoreError::Damaged { seq, reason }) => {
                report.first_bad = Some((seq.max(expect), reason));
                return Ok(report);
            }
            Err(e) => {
                report.first_bad = Some((expect, e.to_string()));
                return Ok(report);
            }
        };
        if chunk.is_empty() {
            break;
        }
        for raw in chunk {
            if raw.seq != expect {
                report.first_bad = Some((expect, format!("missing (next is {})", raw.seq)));
                return Ok(report);
            }
            let problem = check_one(&raw, &prev);
            report.checked += 1;
            if let Some(p) = problem {
                report.first_bad = Some((raw.seq, p));
                return Ok(report);
            }
            prev = raw.hash;
            report.last_hash = raw.hash;
            expect += 1;
        }
    }
    if expect <= to {
        report.first_bad = Some((expect, "missing".into()));
    } else if to == head {
        // The stored log may end before what was acknowledged.
        match store.witness() {
            Ok(Some(w)) if w.seq > head => {
                report.first_bad = Some((
                    head + 1,
                    format!(
                        "missing: the log ends at seq {head} but its head witness records seq {}",
                        w.seq
                    ),
                ))
            }
            Err(e) => report.first_bad = Some((head + 1, e.to_string())),
            _ => {}
        }
    }
    Ok(report)
}

/// Why a stored entry does not fit the chain, if it does not.
fn check_one(raw: &RawEntry, prev: &[u8; 32]) -> Option<String> {
    if chain_hash(prev, &raw.body) != raw.hash {
        return Some("stored hash does not match SHA-256(prev_hash || body)".into());
    }
    #[derive(serde::Deserialize)]
    struct Link<'a> {
        seq: Seq,
        #[serde(borrow)]
        prev_hash: &'a str,
    }
    match serde_json::from_slice::<Link<'_>>(&raw.body) {
        Ok(l) if l.seq != raw.seq => Some(format!("body says seq {}", l.seq)),
        Ok(l) if l.prev_hash != hex::encode(prev) => {
            Some("body's prev_hash is not the previous entry's hash".into())
        }
        Ok(_) => None,
        Err(e) => Some(format!("body does not decode: {e}")),
    }
}

#[cfg(test)]
mod tests;
