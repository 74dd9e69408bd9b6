//! The ledger's log store on sled, the embedded default; the only module that knows
//! sled, and none of sled's errors leave it.
//!
//! Layout of a data directory:
//! - `blocks.log`: sealed blocks of 32 entries, appended once ([`blockfile`],
//!   [`block`]);
//! - `ledger.sled/`: sled, with trees `tail` (entries not yet sealed into a block),
//!   `idem` (bucketed idempotency keys, [`idem`]) and `meta` (small named values: the
//!   store's `format`, the committed end of `blocks.log`, the Docker cursor). sled is
//!   the commit point: an append is one sled transaction;
//! - `ledger.head`: the head witness ([`witness`]);
//! - `checkpoints/`: state checkpoints ([`checkpoints`]).
//!
//! Durability: sled's `flush` writes its log with `sync_file_range`, which commits
//! neither the file's metadata nor the device's write cache; an append therefore also
//! `fdatasync`s sled's file, then records the new head in the witness and fsyncs that,
//! and only then returns. Once at least [`SEAL_MIN`] full blocks wait, the append also
//! writes them to `blocks.log` and fsyncs it first, and its transaction commits them
//! (the new end of the file) while dropping their entries from `tail`. Only the ledger's single writer appends, so flushes never run
//! concurrently (sled 0.34's `flush_async` hangs with many concurrent callers, sled
//! issue 1308).
//!
//! After an I/O error sled refuses every later write until it is opened again, and its
//! memory may hold the failed batch; [`SledStore::append`] therefore refuses writes
//! after a failure until [`LogStore::recover`] has probed the disk, opened sled afresh
//! and cut anything beyond the last acknowledged head.

pub mod block;
mod blockfile;
pub mod checkpoints;
pub mod idem;
pub mod outbox;
mod upgrade;
pub mod witness;

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};

use crate::ledger::event::Seq;
use crate::ledger::log::{
    AppendBatch, LogStore, RawEntry, StoreError, StoreResult, StoredCheckpoint, Witness,
};
use crate::private_fs;
use blockfile::BlockFile;
use checkpoints::CheckpointDir;
use witness::WitnessFile;

/// The default page cache: enough for the recent log and the trees' inner nodes. sled
/// counts serialized sizes, and its decoded nodes take about twice that; a larger cache
/// did not make the audit catch-up (a sequential read) or appends faster (BENCHMARKS.md).
pub const DEFAULT_CACHE_BYTES: u64 = 16 * 1024 * 1024;

/// The layout this build writes. 1: one sled key per entry (upgraded at start).
const FORMAT: u8 = 2;
const FORMAT_KEY: &str = "format";
/// `meta` key of the committed blocks: `[blocks u64 LE][bytes of blocks.log u64 LE]`.
const SEALED_KEY: &str = "sealed";
/// Full blocks that wait before they are sealed together: one more fsync per this
/// many blocks (256 entries) rather than per block.
pub const SEAL_MIN: usize = 8;
/// The free space a recovery probe asks for before sled is reopened: more than sled
/// writes when it opens (a segment of 512 KiB, a snapshot).
const PROBE_BYTES: usize = 8 << 20;
/// How long a reopen is retried while readers wait for it, before reads fail.
const REOPEN_ATTEMPTS: u32 = 50;

/// How a store is opened.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// sled's page cache (a target, not a hard cap, in sled).
    pub cache_bytes: u64,
    /// Forensics: sled is opened on a private copy of the data (sled's recovery writes
    /// to what it opens), every write is refused, and nothing in the data directory is
    /// changed.
    pub read_only: bool,
    /// Accept a data directory owned by another user or writable by others.
    pub allow_unsafe_dir: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            cache_bytes: DEFAULT_CACHE_BYTES,
            read_only: false,
            allow_unsafe_dir: false,
        }
    }
}

/// The storage handles, replaced whole when the store is opened again after a failure.
struct Parts {
    db: sled::Db,
    blocks: BlockFile,
    tail: sled::Tree,
    /// The acknowledged entries of `tail`, as of the last append: readers use this copy,
    /// since sled refuses reads too once a write failed (disk full) until reopened.
    waiting: arc_swap::ArcSwap<Vec<RawEntry>>,
    idem: sled::Tree,
    meta: sled::Tree,
    /// sled's data file, for the `fdatasync` sled itself does not do.
    file: File,
}

/// What only the writer changes.
struct WriterState {
    head: Witness,
    /// The entries not yet sealed (as in the `tail` tree): the append that seals them
    /// writes their blocks from these, without reading them back.
    tail: Vec<RawEntry>,
    /// Set when a write failed: sled's memory may hold what the disk does not.
    broken: Option<String>,
}

pub struct SledStore {
    data_dir: PathBuf,
    /// Where sled runs: `DATA/ledger.sled`, or the forensic copy.
    sled_dir: PathBuf,
    cache_bytes: u64,
    /// Readers hold the read side for one operation; reopening takes the write side.
    parts: RwLock<Option<Parts>>,
    /// Taken by `append` and `recover` (the writer thread) only.
    writer: Mutex<WriterState>,
    witness: WitnessFile,
    checkpoints: CheckpointDir,
    read_only: bool,
    /// The forensic copy, removed on drop.
    scratch: Option<PathBuf>,
}

fn cannot(e: impl std::fmt::Display) -> StoreError {
    StoreError::CannotWrite {
        reason: e.to_string(),
    }
}

fn read_error(e: sled::Error) -> StoreError {
    match e {
        sled::Error::Corruption { at, .. } => StoreError::Unusable {
            reason: match at {
                Some(at) => format!("sled's files are damaged (sled reports corruption at {at})"),
                None => "sled's files are damaged (sled reports corruption)".into(),
            },
        },
        sled::Error::Unsupported(m) => StoreError::Unusable {
            reason: format!("sled's files are damaged or of another version ({m})"),
        },
        e => StoreError::Read {
            reason: e.to_string(),
        },
    }
}

fn write_error(e: sled::Error) -> StoreError {
    match e {
        e @ sled::Error::Corruption { .. } => read_error(e),
        e => cannot(e),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Why sled did not open.
pub(crate) enum SledOpenError {
    /// Another process holds its lock (still, after the grace period).
    InUse(std::io::Error),
    Other(sled::Error),
}

/// Opens sled with `config`. sled's background threads can keep the file lock for a
/// moment after the last handle in this process is dropped (an in-process restart, a
/// reopen after a failure), so a held lock is retried for 2 s; another process holding
/// it keeps it, and that is [`SledOpenError::InUse`].
pub(crate) fn open_sled(config: &sled::Config) -> Result<sled::Db, SledOpenError> {
    let mut tries = 0;
    loop {
        match config.open() {
            Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") => {
                tries += 1;
                if tries == 100 {
                    return Err(SledOpenError::InUse(e));
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            r => return r.map_err(SledOpenError::Other),
        }
    }
}

/// Opens the ledger's sled at `dir`; another process holding it gets a clear error.
fn open_parts(dir: &Path, cache_bytes: u64, blocks: &Path, writable: bool) -> StoreResult<Parts> {
    let config = sled::Config::new().path(dir).cache_capacity(cache_bytes);
    let db = match open_sled(&config) {
        Ok(db) => db,
        Err(SledOpenError::InUse(e)) => {
            return Err(cannot(format!(
                "{} is in use by another process ({e})",
                dir.display()
            )))
        }
        Err(SledOpenError::Other(sled::Error::Io(e))) => {
            return Err(StoreError::Read {
                reason: format!("{}: {e}", dir.display()),
            })
        }
        Err(SledOpenError::Other(e)) => {
            return Err(match read_error(e) {
                StoreError::Unusable { reason } => StoreError::Unusable {
                    reason: format!("{}: {reason}", dir.display()),
                },
                e => e,
            })
        }
    };
    let file = File::open(dir.join("db")).map_err(|e| StoreError::Read {
        reason: format!("{}: {e}", dir.join("db").display()),
    })?;
    let meta = db.open_tree("meta").map_err(read_error)?;
    let (n, len) = match meta.get(SEALED_KEY).map_err(read_error)? {
        Some(v) if v.len() == 16 => {
            let u = |r: std::ops::Range<usize>| {
                let mut b = [0u8; 8];
                b.copy_from_slice(&v[r]);
                u64::from_le_bytes(b)
            };
            (u(0..8), u(8..16))
        }
        Some(v) => {
            return Err(StoreError::Damaged {
                seq: 0,
                reason: format!(
                    "the committed end of blocks.log is {} bytes, not 16",
                    v.len()
                ),
            })
        }
        None => (0, 0),
    };
    Ok(Parts {
        blocks: BlockFile::open(blocks, n, len, writable)?,
        tail: db.open_tree("tail").map_err(read_error)?,
        waiting: Default::default(),
        idem: db.open_tree("idem").map_err(read_error)?,
        meta,
        db,
        file,
    })
}

fn sealed_value(blocks: u64, len: u64) -> [u8; 16] {
    let mut v = [0u8; 16];
    v[..8].copy_from_slice(&blocks.to_le_bytes());
    v[8..].copy_from_slice(&len.to_le_bytes());
    v
}

impl Parts {
    /// Sealed block `b`, decoded.
    fn block(&self, b: u64) -> StoreResult<Option<Vec<RawEntry>>> {
        match self.blocks.read(b, b + 1)?.pop() {
            Some((b, v)) => Ok(Some(block::decode(b, v)?)),
            None => Ok(None),
        }
    }

    /// The entry at `seq`, looked up again if a seal moved it meanwhile.
    fn entry(&self, seq: Seq) -> StoreResult<Option<RawEntry>> {
        loop {
            let sealed = self.blocks.blocks();
            let e = self.entry_once(seq)?;
            if e.is_some() || self.blocks.blocks() == sealed {
                return Ok(e);
            }
        }
    }

    fn entry_once(&self, seq: Seq) -> StoreResult<Option<RawEntry>> {
        if seq == 0 {
            return Ok(None);
        }
        let b = block::block_of(seq);
        if b < self.blocks.blocks() {
            return Ok(self
                .block(b)?
                .and_then(|es| es.into_iter().find(|e| e.seq == seq)));
        }
        Ok(self.waiting.load().iter().find(|e| e.seq == seq).cloned())
    }

    /// Like [`Parts::range_once`], read again when a seal moved entries from `tail`
    /// into blocks.log between the two halves of a read (the result then skips seqs).
    fn range(&self, from: Seq, to: Seq, limit: usize) -> StoreResult<Vec<RawEntry>> {
        loop {
            let sealed = self.blocks.blocks();
            let out = self.range_once(from, to, limit)?;
            let dense = out
                .iter()
                .enumerate()
                .all(|(i, e)| e.seq == from.max(1) + i as u64);
            if dense || self.blocks.blocks() == sealed {
                return Ok(out);
            }
        }
    }

    fn range_once(&self, from: Seq, to: Seq, limit: usize) -> StoreResult<Vec<RawEntry>> {
        if from > to || limit == 0 {
            return Ok(Vec::new());
        }
        let from = from.max(1);
        let mut out = Vec::new();
        let first = block::block_of(from);
        let last = block::block_of(to) + 1;
        // Enough blocks for `limit` entries, read in one go.
        let span = (limit as u64).div_ceil(block::BLOCK) + 1;
        for (b, v) in self
            .blocks
            .read(first, last.min(first.saturating_add(span)))?
        {
            for e in block::decode(b, v)? {
                if e.seq > to || out.len() == limit {
                    return Ok(out);
                }
                if e.seq >= from {
                    out.push(e);
                }
            }
        }
        if out.len() == limit {
            return Ok(out);
        }
        let next = out.last().map_or(from, |e: &RawEntry| e.seq + 1);
        if !out.is_empty() && block::block_of(next) < self.blocks.blocks() {
            return Ok(out); // more sealed blocks than one read takes; the caller goes on
        }
        let waiting = self.waiting.load();
        let room = limit - out.len();
        out.extend(
            waiting
                .iter()
                .filter(|e| e.seq >= next && e.seq <= to)
                .take(room)
                .cloned(),
        );
        Ok(out)
    }

    fn last(&self) -> StoreResult<Option<RawEntry>> {
        match self.waiting.load().last() {
            Some(e) => Ok(Some(e.clone())),
            None => Ok(last_block(self)?.pop()),
        }
    }

    fn earliest(&self) -> StoreResult<Option<Seq>> {
        if self.blocks.blocks() > 0 {
            return Ok(Some(1));
        }
        Ok(self.waiting.load().first().map(|e| e.seq))
    }
}

fn ivec_bytes(v: sled::IVec) -> bytes::Bytes {
    bytes::Bytes::from_owner(v)
}

/// The last sealed block's entries, or none.
fn last_block(p: &Parts) -> StoreResult<Vec<RawEntry>> {
    match p.blocks.blocks() {
        0 => Ok(Vec::new()),
        n => Ok(p.block(n - 1)?.unwrap_or_default()),
    }
}

/// The waiting entries, checked to continue the sealed blocks.
fn tail_entries(p: &Parts, sealed_head: Seq) -> StoreResult<Vec<RawEntry>> {
    let mut out: Vec<RawEntry> = Vec::new();
    for kv in p.tail.iter() {
        let (k, v) = kv.map_err(read_error)?;
        let e = block::decode_one(&k, ivec_bytes(v))?;
        let expect = out.last().map_or(sealed_head + 1, |l| l.seq + 1);
        if e.seq != expect {
            return Err(StoreError::Damaged {
                seq: expect,
                reason: format!(
                    "the entries waiting for their block do not follow the log (found seq {})",
                    e.seq
                ),
            });
        }
        out.push(e);
    }
    Ok(out)
}

/// The head and the waiting entries as stored. Damage makes the head approximate (the
/// writer never writes to a damaged store: start-up refuses it first).
fn writer_state(p: &Parts) -> StoreResult<WriterState> {
    let n = p.blocks.blocks();
    let sealed_head = match last_block(p) {
        Ok(b) => b.last().map_or(Witness::default(), |e| Witness {
            seq: e.seq,
            hash: e.hash,
        }),
        Err(_) => Witness {
            seq: n * block::BLOCK,
            hash: [0; 32],
        },
    };
    let tail = tail_entries(p, sealed_head.seq).unwrap_or_default();
    let head = match (tail.last(), p.tail.last().map_err(read_error)?) {
        (Some(e), _) => Witness {
            seq: e.seq,
            hash: e.hash,
        },
        // Waiting entries that do not follow: the head is the last stored one.
        (None, Some((k, v))) => {
            let e = block::decode_one(&k, ivec_bytes(v))?;
            Witness {
                seq: e.seq,
                hash: e.hash,
            }
        }
        (None, None) => sealed_head,
    };
    Ok(WriterState {
        head,
        tail,
        broken: None,
    })
}

/// Removes a forensic copy unless the open succeeded (then the store owns it).
struct ScratchGuard(Option<PathBuf>);

impl Drop for ScratchGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_dir_all(p);
        }
    }
}

fn remove_snapshots(dir: &Path) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if e.file_name().to_string_lossy().starts_with("snap.") {
            std::fs::remove_file(e.path())?;
        }
    }
    Ok(())
}

/// The hash of the stored entry at `seq` (sealed or waiting).
fn entry_hash(p: &Parts, seq: Seq) -> StoreResult<Option<[u8; 32]>> {
    if seq == 0 {
        return Ok(Some([0; 32]));
    }
    Ok(p.entry(seq)?.map(|e| e.hash))
}

/// Writes the entries in `(after, to]` to `DATA/unacknowledged-<after+1>.jsonl` (one
/// JSON line each: seq, hash, body), before they are cut.
fn quarantine(dir: &Path, p: &Parts, after: Seq, to: Seq) -> StoreResult<PathBuf> {
    let mut text = String::new();
    let mut next = after + 1;
    while next <= to {
        let chunk = p.range(next, to, 4096)?;
        let Some(last) = chunk.last().map(|e| e.seq) else {
            break;
        };
        for e in chunk {
            let line = serde_json::json!({
                "seq": e.seq,
                "hash": hex::encode(e.hash),
                "body": String::from_utf8_lossy(&e.body),
            });
            text.push_str(&line.to_string());
            text.push('\n');
        }
        next = last + 1;
    }
    let path = dir.join(format!("unacknowledged-{}.jsonl", after + 1));
    private_fs::write_private_atomic(&path, text.as_bytes()).map_err(cannot)?;
    Ok(path)
}

/// Copies a directory tree (files and directories only) for a forensic open.
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let t = e.file_type()?;
        let dst = to.join(e.file_name());
        if t.is_dir() {
            copy_tree(&e.path(), &dst)?;
        } else if t.is_file() {
            std::fs::copy(e.path(), dst)?;
        }
    }
    Ok(())
}

impl SledStore {
    pub fn open(dir: &Path) -> StoreResult<SledStore> {
        SledStore::open_with(dir, &OpenOptions::default())
    }

    pub fn open_with(dir: &Path, opts: &OpenOptions) -> StoreResult<SledStore> {
        let original = dir.join("ledger.sled");
        let mut scratch = ScratchGuard(None);
        let sled_dir = if opts.read_only {
            if !original.is_dir() {
                return Err(StoreError::Read {
                    reason: format!("{} does not exist", original.display()),
                });
            }
            let mut r = [0u8; 8];
            getrandom::fill(&mut r).map_err(|e| StoreError::Read {
                reason: e.to_string(),
            })?;
            let path = std::env::temp_dir().join(format!("privledger-forensic-{}", hex::encode(r)));
            private_fs::ensure_private_dir(&path, false).map_err(|e| StoreError::Read {
                reason: e.to_string(),
            })?;
            scratch.0 = Some(path.clone());
            let copy = path.join("ledger.sled");
            copy_tree(&original, &copy).map_err(|e| StoreError::Read {
                reason: format!(
                    "copying {} to {} for a read-only open: {e}",
                    original.display(),
                    copy.display()
                ),
            })?;
            copy
        } else {
            private_fs::ensure_private_dir(dir, opts.allow_unsafe_dir).map_err(|e| {
                StoreError::Unusable {
                    reason: e.to_string(),
                }
            })?;
            original
        };
        let blocks = dir.join("blocks.log");
        let writable = !opts.read_only;
        let opened =
            open_parts(&sled_dir, opts.cache_bytes, &blocks, writable).map_err(|e| match e {
                StoreError::Unusable { reason } if writable => StoreError::Unusable {
                    reason: format!(
                        "{reason}. The seq cannot be named before sled opens its files; nothing \
                     was changed: `privledger serve --read-only` opens a private copy for \
                     forensics and shows how far the log survives"
                    ),
                },
                e => e,
            });
        let parts = match opened {
            // sled's snapshot is an index of its log, rebuilt when missing. In the
            // private copy it may go, so a damaged snapshot does not hide the log.
            Err(StoreError::Unusable { reason }) if opts.read_only => {
                tracing::warn!(%reason, "sled does not open; retrying without its snapshot");
                remove_snapshots(&sled_dir).map_err(|e| StoreError::Read {
                    reason: e.to_string(),
                })?;
                open_parts(&sled_dir, opts.cache_bytes, &blocks, writable)?
            }
            r => r?,
        };
        if writable {
            // sled creates its files on the first open: their directory entries must
            // survive a machine crash too.
            private_fs::sync_dir(&sled_dir)
                .and_then(|()| private_fs::sync_parent(&sled_dir))
                .map_err(cannot)?;
        }
        let witness = WitnessFile::new(dir.join("ledger.head"));
        match parts.meta.get(FORMAT_KEY).map_err(read_error)? {
            Some(v) if v.as_ref() == [FORMAT] => {}
            Some(v) => {
                return Err(StoreError::Unusable {
                    reason: format!(
                        "the store has format {v:?}; this build reads format {FORMAT} (a newer \
                         privledger wrote it?)"
                    ),
                })
            }
            None => upgrade::to_current(&parts, &witness, opts.read_only)?,
        }
        let mut state = writer_state(&parts)?;
        parts.waiting.store(Arc::new(state.tail.clone()));
        if !opts.read_only {
            if state.head.seq == 0 && witness.read()?.is_none() {
                witness.reset(&state.head)?;
            }
            // Only when both witness slots are intact is the newest one known to be the
            // last written: a damaged slot may have been the newer one, and then entries
            // past the other may have been acknowledged.
            if let Ok(Some((_, w, true))) = witness.read_both() {
                let witnessed = matches!(entry_hash(&parts, w.seq), Ok(Some(h)) if h == w.hash);
                if w.seq < state.head.seq && witnessed {
                    // Past the witness = never acknowledged (a batch whose fsync or
                    // witness write failed, or a crash in between): its callers were told
                    // nothing was recorded. Kept aside for the record, then cut. A
                    // witnessed entry that is missing or differs is left for start-up
                    // to refuse.
                    let cut = quarantine(dir, &parts, w.seq, state.head.seq)?;
                    tracing::warn!(
                        witness = w.seq,
                        log_end = state.head.seq,
                        kept_in = %cut.display(),
                        "entries past the head witness were never acknowledged; cutting them"
                    );
                    upgrade::cut_after(&parts, w.seq)?;
                    parts.db.flush().map_err(write_error)?;
                    parts.file.sync_data().map_err(cannot)?;
                    state = writer_state(&parts)?;
                    parts.waiting.store(Arc::new(state.tail.clone()));
                }
            }
        }
        Ok(SledStore {
            data_dir: dir.to_path_buf(),
            sled_dir,
            cache_bytes: opts.cache_bytes,
            parts: RwLock::new(Some(parts)),
            writer: Mutex::new(state),
            witness,
            checkpoints: CheckpointDir::open(&dir.join("checkpoints"), !opts.read_only)?,
            read_only: opts.read_only,
            scratch: scratch.0.take(),
        })
    }

    /// Runs `f` on sled's handles, holding off a reopen meanwhile.
    fn with<T>(&self, f: impl FnOnce(&Parts) -> StoreResult<T>) -> StoreResult<T> {
        let guard = self.parts.read().unwrap_or_else(|p| p.into_inner());
        match guard.as_ref() {
            Some(p) => f(p),
            None => Err(StoreError::Read {
                reason: "the store is being reopened after a write failure".into(),
            }),
        }
    }

    /// A probe that the filesystem takes writes again: a file of real data, fsynced,
    /// large enough that sled can open again once it succeeds (reads have no store
    /// while sled reopens).
    fn probe_writable(&self) -> StoreResult<()> {
        let mut r = [0u8; 8];
        getrandom::fill(&mut r).map_err(cannot)?;
        let path = self
            .data_dir
            .join(format!(".write-probe-{}", hex::encode(r)));
        let result = (|| {
            use std::io::Write as _;
            let mut f = private_fs::create_new_private(&path).map_err(cannot)?;
            f.write_all(&vec![0u8; PROBE_BYTES]).map_err(cannot)?;
            f.sync_all().map_err(cannot)
        })();
        let _ = std::fs::remove_file(&path);
        result
    }

    fn fail(w: &mut WriterState, e: StoreError) -> StoreError {
        w.broken = Some(e.to_string());
        e
    }
}

impl Drop for SledStore {
    fn drop(&mut self) {
        if let Some(s) = &self.scratch {
            *self.parts.write().unwrap_or_else(|p| p.into_inner()) = None;
            let _ = std::fs::remove_dir_all(s);
        }
    }
}

impl LogStore for SledStore {
    fn append(&self, batch: AppendBatch<'_>) -> StoreResult<()> {
        if self.read_only {
            return Err(StoreError::ReadOnly);
        }
        let mut w = lock(&self.writer);
        if let Some(reason) = &w.broken {
            return Err(cannot(format!(
                "an earlier write failed ({reason}); waiting for storage to recover"
            )));
        }
        if batch.prev != w.head {
            return Err(StoreError::HeadMoved {
                expected: batch.prev.seq,
                found: w.head.seq,
            });
        }
        if let Some((i, e)) = batch
            .entries
            .iter()
            .enumerate()
            .find(|(i, e)| e.seq != w.head.seq + 1 + *i as u64)
        {
            return Err(StoreError::HeadMoved {
                expected: e.seq.saturating_sub(1),
                found: w.head.seq + i as u64,
            });
        }
        let guard = self.parts.read().unwrap_or_else(|p| p.into_inner());
        let Some(p) = guard.as_ref() else {
            return Err(cannot("the store is being reopened"));
        };

        // Entries wait in `tail`; once SEAL_MIN full blocks wait, they are written to
        // blocks.log (fsynced) and this transaction commits them.
        let mut cur: Vec<RawEntry> = w.tail.clone();
        cur.extend(batch.entries.iter().cloned());
        let full = cur.len() / block::BLOCK as usize;
        let (sealed, rest) = if full >= SEAL_MIN {
            cur.split_at(full * block::BLOCK as usize)
        } else {
            cur.split_at(0)
        };
        let sealed_blocks: Vec<Vec<u8>> = sealed
            .chunks(block::BLOCK as usize)
            .map(block::encode)
            .collect();
        let first_new = batch.entries.first().map_or(Seq::MAX, |e| e.seq);
        // Waiting entries that are sealed now leave `tail`; new ones that are not
        // sealed enter it.
        let unwait: Vec<[u8; 8]> = sealed
            .iter()
            .filter(|e| e.seq < first_new)
            .map(|e| e.seq.to_be_bytes())
            .collect();
        let waiting: Vec<([u8; 8], Vec<u8>)> = rest
            .iter()
            .filter(|e| e.seq >= first_new)
            .map(|e| (e.seq.to_be_bytes(), block::encode_one(e)))
            .collect();
        let new_tail = rest.to_vec();
        // Sealed blocks become readable as soon as they are durable in blocks.log,
        // before the transaction drops their entries from `tail`: a reader must never
        // find them in neither place. (Entries not yet acknowledged are never asked
        // for: readers stop at the published head.)
        let before = p.blocks.blocks();
        let commit_sealed = if sealed_blocks.is_empty() {
            None
        } else {
            match p.blocks.write(&sealed_blocks) {
                Ok((n, len)) => {
                    p.blocks.committed(&sealed_blocks);
                    Some(sealed_value(n, len))
                }
                Err(e) => return Err(Self::fail(&mut w, e)),
            }
        };
        let fail = |w: &mut WriterState, e: StoreError| {
            if commit_sealed.is_some() {
                p.blocks.cut(before);
            }
            Self::fail(w, e)
        };

        let mut buckets: HashMap<[u8; 2], Vec<u8>> = HashMap::new();
        for k in batch.idempotency {
            let (b, digest) = idem::locate(&k.key);
            let v = match buckets.entry(b) {
                std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::hash_map::Entry::Vacant(v) => {
                    let old = p.idem.get(b).map_err(read_error)?;
                    v.insert(old.map(|o| o.to_vec()).unwrap_or_default())
                }
            };
            idem::insert(v, &digest, k.seq);
        }

        let trees = (&p.tail, &p.idem, &p.meta);
        let tx = trees.transaction(|(tail, idm, meta)| {
            if let Some(v) = &commit_sealed {
                meta.insert(SEALED_KEY, &v[..])?;
            }
            for k in &unwait {
                tail.remove(&k[..])?;
            }
            for (k, v) in &waiting {
                tail.insert(&k[..], v.as_slice())?;
            }
            for (k, v) in &buckets {
                idm.insert(&k[..], v.as_slice())?;
            }
            for (k, v) in batch.meta {
                meta.insert(k.as_bytes(), *v)?;
            }
            Ok::<(), ConflictableTransactionError<()>>(())
        });
        if let Err(e) = tx {
            let e = match e {
                TransactionError::Storage(e) => write_error(e),
                TransactionError::Abort(()) => cannot("transaction aborted"),
            };
            return Err(fail(&mut w, e));
        }
        if let Err(e) = p.db.flush() {
            return Err(fail(&mut w, write_error(e)));
        }
        if let Err(e) = p.file.sync_data() {
            return Err(fail(
                &mut w,
                cannot(format!("fdatasync {}: {e}", self.sled_dir.display())),
            ));
        }
        if let Some(last) = batch.entries.last() {
            let head = Witness {
                seq: last.seq,
                hash: last.hash,
            };
            if let Err(e) = self.witness.write(&head) {
                return Err(fail(&mut w, e));
            }
            w.head = head;
            p.waiting.store(Arc::new(new_tail.clone()));
            w.tail = new_tail;
        }
        Ok(())
    }

    fn recover(&self, head: Witness) -> StoreResult<()> {
        if self.read_only {
            return Err(StoreError::ReadOnly);
        }
        let mut w = lock(&self.writer);
        self.probe_writable()?;
        let mut guard = self.parts.write().unwrap_or_else(|p| p.into_inner());
        // sled refuses writes for good after an I/O error: only a fresh open clears it.
        *guard = None;
        // Readers wait on the lock meanwhile: retried briefly, so that a reopen that
        // needs a moment (sled's threads letting go of the old handle) is not a
        // failed read.
        let blocks = self.data_dir.join("blocks.log");
        let mut attempt = 0;
        let p = loop {
            match open_parts(&self.sled_dir, self.cache_bytes, &blocks, true) {
                Ok(p) => break p,
                Err(e) if attempt + 1 >= REOPEN_ATTEMPTS => return Err(e),
                Err(_) => {
                    attempt += 1;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
            }
        };
        let found = writer_state(&p)?;
        p.waiting.store(Arc::new(found.tail.clone()));
        if found.head.seq < head.seq {
            return Err(StoreError::Damaged {
                seq: found.head.seq + 1,
                reason: format!(
                    "after reopening, the log ends at seq {} but seq {} was acknowledged",
                    found.head.seq, head.seq
                ),
            });
        }
        if found.head.seq > head.seq {
            // The failed batch reached the disk after all; it was never acknowledged.
            let kept = quarantine(&self.data_dir, &p, head.seq, found.head.seq)?;
            tracing::warn!(kept_in = %kept.display(), "cutting a batch that was never acknowledged");
            upgrade::cut_after(&p, head.seq)?;
        }
        p.db.flush().map_err(write_error)?;
        p.file.sync_data().map_err(cannot)?;
        self.witness.write(&head)?;
        let state = writer_state(&p)?;
        p.waiting.store(Arc::new(state.tail.clone()));
        if state.head != head {
            return Err(StoreError::Damaged {
                seq: head.seq,
                reason: "the entry at the acknowledged head differs after reopening".into(),
            });
        }
        *w = state;
        *guard = Some(p);
        Ok(())
    }

    fn get(&self, seq: Seq) -> StoreResult<Option<RawEntry>> {
        self.with(|p| p.entry(seq))
    }

    fn range(&self, from: Seq, to: Seq, limit: usize) -> StoreResult<Vec<RawEntry>> {
        self.with(|p| p.range(from, to, limit))
    }

    fn last(&self) -> StoreResult<Option<RawEntry>> {
        self.with(|p| p.last())
    }

    fn earliest(&self) -> StoreResult<Option<Seq>> {
        self.with(|p| p.earliest())
    }

    fn witness(&self) -> StoreResult<Option<Witness>> {
        Ok(self.witness.read()?.map(|(_, w)| w))
    }

    fn idempotency_get(&self, key: &[u8]) -> StoreResult<Option<Seq>> {
        let (b, digest) = idem::locate(key);
        self.with(|p| match p.idem.get(b).map_err(read_error)? {
            Some(v) => idem::find(&v, &digest),
            None => Ok(None),
        })
    }

    fn meta_get(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        self.with(|p| Ok(p.meta.get(key).map_err(read_error)?.map(|v| v.to_vec())))
    }

    fn put_checkpoint(&self, seq: Seq, bytes: &[u8]) -> StoreResult<()> {
        if self.read_only {
            return Err(StoreError::ReadOnly);
        }
        self.checkpoints.put(seq, bytes)
    }

    fn prune_checkpoints(&self, newest: usize, window: u64) -> StoreResult<()> {
        if self.read_only {
            return Err(StoreError::ReadOnly);
        }
        self.checkpoints.prune(newest, window)
    }

    fn checkpoint_seqs(&self) -> StoreResult<Vec<Seq>> {
        self.checkpoints.seqs()
    }

    fn open_checkpoint(&self, seq: Seq) -> StoreResult<StoredCheckpoint> {
        self.checkpoints.open_one(seq)
    }

    fn read_only(&self) -> bool {
        self.read_only
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::log::IdempotencyKey;

    use block::tests::entry;

    fn append(s: &SledStore, seqs: std::ops::RangeInclusive<u64>, idem: &[IdempotencyKey]) {
        let prev = s.last().unwrap().map_or(Witness::default(), |e| Witness {
            seq: e.seq,
            hash: e.hash,
        });
        let es: Vec<_> = seqs.map(entry).collect();
        s.append(AppendBatch {
            prev,
            entries: &es,
            idempotency: idem,
            meta: &[],
        })
        .unwrap();
    }

    #[test]
    fn appends_read_back_across_blocks_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SledStore::open(dir.path()).unwrap();
            append(
                &s,
                1..=2,
                &[IdempotencyKey {
                    key: b"a\0r".to_vec(),
                    seq: 2,
                    time_ns: 0,
                }],
            );
            append(&s, 3..=3, &[]);
            append(&s, 4..=70, &[]);
            for one in 71..=100 {
                append(&s, one..=one, &[]);
            }
        }
        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!(s.earliest().unwrap(), Some(1));
        assert_eq!(s.last().unwrap().unwrap(), entry(100));
        assert_eq!(s.witness().unwrap().unwrap().seq, 100);
        let all: Vec<_> = s
            .range(1, 100, 1000)
            .unwrap()
            .into_iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(all, (1..=100).collect::<Vec<_>>());
        assert_eq!(
            s.range(30, 35, 3).unwrap(),
            vec![entry(30), entry(31), entry(32)]
        );
        assert_eq!(s.idempotency_get(b"a\0r").unwrap(), Some(2));
        assert_eq!(s.idempotency_get(b"a\0x").unwrap(), None);
        for seq in [1, 32, 33, 64, 65, 100] {
            assert_eq!(s.get(seq).unwrap().unwrap(), entry(seq));
        }
        assert_eq!(s.get(101).unwrap(), None);
    }

    #[test]
    fn sealed_blocks_read_back_are_cut_and_survive_a_torn_seal() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path()).unwrap();
        let mut next = 1;
        for size in [1, 7, 300, 33, 1, 400, 2, 64] {
            append(&s, next..=next + size - 1, &[]);
            next += size;
        }
        let head = next - 1; // 808: 25 blocks at least partly sealed
        let want: Vec<_> = (1..=head).map(entry).collect();
        assert_eq!(s.range(1, head, usize::MAX).unwrap(), want);
        assert_eq!(
            s.range(250, 270, 5).unwrap(),
            (250..255).map(entry).collect::<Vec<_>>()
        );
        for seq in [1, 32, 33, 256, 257, 700, head] {
            assert_eq!(s.get(seq).unwrap().unwrap(), entry(seq));
        }
        assert!(dir.path().join("blocks.log").metadata().unwrap().len() > 0);
        // Cut inside a sealed block, then go on.
        s.recover(Witness {
            seq: 300,
            hash: [300u64 as u8; 32],
        })
        .unwrap();
        assert_eq!(s.last().unwrap().unwrap(), entry(300));
        append(&s, 301..=600, &[]);
        drop(s);
        // A seal that crashed before its commit leaves bytes past the committed end.
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join("blocks.log"))
            .unwrap();
        f.write_all(b"\x10\0\0\0torn record").unwrap();
        drop(f);
        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!(
            s.range(1, 600, usize::MAX).unwrap(),
            (1..=600).map(entry).collect::<Vec<_>>()
        );
        append(&s, 601..=1000, &[]);
        assert_eq!(s.get(999).unwrap().unwrap(), entry(999));
        drop(s);
        let opts = OpenOptions {
            read_only: true,
            ..OpenOptions::default()
        };
        let s = SledStore::open_with(dir.path(), &opts).unwrap();
        assert_eq!(s.range(1, 1000, usize::MAX).unwrap().len(), 1000);
    }

    #[test]
    fn a_damaged_record_header_costs_only_its_block() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SledStore::open(dir.path()).unwrap();
            append(&s, 1..=300, &[]);
            append(&s, 301..=600, &[]);
        }
        // Flip the length of block 3's record.
        let path = dir.path().join("blocks.log");
        let mut bytes = std::fs::read(&path).unwrap();
        let mut at = 0;
        for _ in 0..3 {
            let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
            at += 4 + len;
        }
        bytes[at + 1] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let opts = OpenOptions {
            read_only: true,
            ..OpenOptions::default()
        };
        let s = SledStore::open_with(dir.path(), &opts).unwrap();
        assert_eq!(s.get(96).unwrap().unwrap(), entry(96));
        let e = s.get(97).unwrap_err();
        assert!(matches!(e, StoreError::Damaged { seq: 97, .. }), "{e}");
        assert_eq!(s.get(129).unwrap().unwrap(), entry(129));
        assert_eq!(s.range(90, 200, 1000).unwrap().last().unwrap().seq, 96);
        assert!(matches!(
            s.range(97, 200, 1000),
            Err(StoreError::Damaged { seq: 97, .. })
        ));
        assert_eq!(s.range(129, 600, 1000).unwrap().len(), 472);
    }

    #[test]
    fn a_batch_that_does_not_extend_the_head_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path()).unwrap();
        append(&s, 1..=3, &[]);
        let es = vec![entry(3)];
        let e = s
            .append(AppendBatch {
                prev: Witness {
                    seq: 2,
                    hash: [2; 32],
                },
                entries: &es,
                idempotency: &[],
                meta: &[],
            })
            .unwrap_err();
        assert!(
            matches!(
                e,
                StoreError::HeadMoved {
                    expected: 2,
                    found: 3
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn recover_cuts_what_was_never_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path()).unwrap();
        append(&s, 1..=40, &[]);
        let acked = Witness {
            seq: 35,
            hash: [35; 32],
        };
        s.recover(acked).unwrap();
        assert_eq!(s.last().unwrap().unwrap(), entry(35));
        assert_eq!(s.witness().unwrap(), Some(acked));
        append(&s, 36..=36, &[]);
        assert_eq!(s.range(30, 40, 100).unwrap().len(), 7);
        // A cut inside a sealed block: its kept part waits again.
        let acked = Witness {
            seq: 20,
            hash: [20; 32],
        };
        s.recover(acked).unwrap();
        assert_eq!(s.last().unwrap().unwrap(), entry(20));
        append(&s, 21..=70, &[]);
        let all: Vec<_> = s.range(1, 70, 100).unwrap();
        assert_eq!(all, (1..=70).map(entry).collect::<Vec<_>>());
        drop(s);
        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!(s.last().unwrap().unwrap(), entry(70));
        assert_eq!(s.get(64).unwrap().unwrap(), entry(64));
        assert_eq!(s.get(65).unwrap().unwrap(), entry(65));
    }

    #[test]
    fn read_only_open_changes_nothing_and_refuses_writes() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SledStore::open(dir.path()).unwrap();
            append(&s, 1..=5, &[]);
        }
        let before = std::fs::read(dir.path().join("ledger.sled/db")).unwrap();
        let opts = OpenOptions {
            read_only: true,
            ..OpenOptions::default()
        };
        let s = SledStore::open_with(dir.path(), &opts).unwrap();
        assert_eq!(s.last().unwrap().unwrap(), entry(5));
        let es = vec![entry(6)];
        let e = s.append(AppendBatch {
            prev: Witness {
                seq: 5,
                hash: [5; 32],
            },
            entries: &es,
            idempotency: &[],
            meta: &[],
        });
        assert!(matches!(e, Err(StoreError::ReadOnly)));
        drop(s);
        assert_eq!(
            std::fs::read(dir.path().join("ledger.sled/db")).unwrap(),
            before
        );
    }
}
