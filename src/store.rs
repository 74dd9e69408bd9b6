//! The ledger's log store on sled, the embedded default; the only module that knows
//! sled, and none of sled's errors leave it.
//!
//! Layout of a data directory:
//! - `ledger.sled/`: sled, with trees `log` (blocks of entries, [`block`]), `idem`
//!   (bucketed idempotency keys, [`idem`]) and `meta` (small named values, and the
//!   store's `format`);
//! - `ledger.head`: the head witness ([`witness`]);
//! - `checkpoints/`: state checkpoints ([`checkpoints`]).
//!
//! Durability: sled's `flush` writes its log with `sync_file_range`, which commits
//! neither the file's metadata nor the device's write cache; an append therefore also
//! `fdatasync`s sled's file, then records the new head in the witness and fsyncs that,
//! and only then returns. Only the ledger's single writer appends, so flushes never run
//! concurrently (sled 0.34's `flush_async` hangs with many concurrent callers, sled
//! issue 1308).
//!
//! After an I/O error sled refuses every later write until it is opened again, and its
//! memory may hold the failed batch; [`SledStore::append`] therefore refuses writes
//! after a failure until [`LogStore::recover`] has probed the disk, opened sled afresh
//! and cut anything beyond the last acknowledged head.

pub mod block;
pub mod checkpoints;
pub mod idem;
mod upgrade;
pub mod witness;

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};

use crate::ledger::event::Seq;
use crate::ledger::log::{
    AppendBatch, LogStore, RawEntry, StoreError, StoreResult, StoredCheckpoint, Witness,
};
use crate::private_fs;
use checkpoints::CheckpointDir;
use witness::WitnessFile;

/// The default page cache: enough for the recent log and the trees' inner nodes. sled
/// counts serialized sizes, and its decoded nodes take about twice that; a larger cache
/// did not make the audit catch-up (a sequential read) or appends faster (BENCHMARKS.md).
pub const DEFAULT_CACHE_BYTES: u64 = 16 * 1024 * 1024;

/// The layout this build writes. 1: one sled key per entry (upgraded at start).
const FORMAT: u8 = 2;
const FORMAT_KEY: &str = "format";

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

/// sled's handles, replaced whole when the store is opened again after a failure.
struct Parts {
    db: sled::Db,
    log: sled::Tree,
    idem: sled::Tree,
    meta: sled::Tree,
    /// sled's data file, for the `fdatasync` sled itself does not do.
    file: File,
}

/// What only the writer changes.
struct WriterState {
    head: Witness,
    /// The entries of the last block while it is not full: the next append rewrites
    /// that block with them, without reading it back.
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
        sled::Error::Corruption { at, .. } => StoreError::Damaged {
            seq: 0,
            reason: format!("sled reports corruption at {at:?}"),
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

/// Opens sled at `dir`. sled's background threads can keep the file lock for a moment
/// after the last handle in this process is dropped (an in-process restart, a reopen
/// after a failure); another process holding it keeps it, and gets a clear error after
/// the grace period.
fn open_parts(dir: &Path, cache_bytes: u64) -> StoreResult<Parts> {
    let config = sled::Config::new().path(dir).cache_capacity(cache_bytes);
    let mut tries = 0;
    let db = loop {
        match config.open() {
            Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") => {
                tries += 1;
                if tries == 100 {
                    return Err(cannot(format!(
                        "{} is in use by another process ({e})",
                        dir.display()
                    )));
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(sled::Error::Io(e)) => {
                return Err(StoreError::Read {
                    reason: format!("{}: {e}", dir.display()),
                })
            }
            r => break r.map_err(read_error)?,
        }
    };
    let file = File::open(dir.join("db")).map_err(|e| StoreError::Read {
        reason: format!("{}: {e}", dir.join("db").display()),
    })?;
    Ok(Parts {
        log: db.open_tree("log").map_err(read_error)?,
        idem: db.open_tree("idem").map_err(read_error)?,
        meta: db.open_tree("meta").map_err(read_error)?,
        db,
        file,
    })
}

fn ivec_bytes(v: sled::IVec) -> bytes::Bytes {
    bytes::Bytes::from_owner(v)
}

/// The last block's entries, or none.
fn last_block(p: &Parts) -> StoreResult<Vec<RawEntry>> {
    match p.log.last().map_err(read_error)? {
        Some((k, v)) => block::decode(block::decode_key(&k)?, ivec_bytes(v)),
        None => Ok(Vec::new()),
    }
}

fn writer_state(p: &Parts) -> StoreResult<WriterState> {
    let last = last_block(p)?;
    let head = last.last().map_or(Witness::default(), |e| Witness {
        seq: e.seq,
        hash: e.hash,
    });
    let tail = if last.len() as u64 == block::BLOCK {
        Vec::new()
    } else {
        last
    };
    Ok(WriterState {
        head,
        tail,
        broken: None,
    })
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
        let (sled_dir, scratch) = if opts.read_only {
            if !original.is_dir() {
                return Err(StoreError::Read {
                    reason: format!("{} does not exist", original.display()),
                });
            }
            let mut r = [0u8; 8];
            getrandom::fill(&mut r).map_err(|e| StoreError::Read {
                reason: e.to_string(),
            })?;
            let scratch =
                std::env::temp_dir().join(format!("privledger-forensic-{}", hex::encode(r)));
            private_fs::ensure_private_dir(&scratch, false).map_err(|e| StoreError::Read {
                reason: e.to_string(),
            })?;
            let copy = scratch.join("ledger.sled");
            copy_tree(&original, &copy).map_err(|e| StoreError::Read {
                reason: format!(
                    "copying {} to {} for a read-only open: {e}",
                    original.display(),
                    copy.display()
                ),
            })?;
            (copy, Some(scratch))
        } else {
            private_fs::ensure_private_dir(dir, opts.allow_unsafe_dir).map_err(cannot)?;
            (original, None)
        };
        let parts = open_parts(&sled_dir, opts.cache_bytes)?;
        let witness = WitnessFile::new(dir.join("ledger.head"));
        match parts.meta.get(FORMAT_KEY).map_err(read_error)? {
            Some(v) if v.as_ref() == [FORMAT] => {}
            Some(v) => {
                return Err(StoreError::Damaged {
                    seq: 0,
                    reason: format!(
                        "the store has format {v:?}; this build reads format {FORMAT} (a newer \
                         privledger wrote it?)"
                    ),
                })
            }
            None => upgrade::to_current(&parts, &witness, opts.read_only)?,
        }
        let state = writer_state(&parts)?;
        if !opts.read_only && state.head.seq == 0 && witness.read()?.is_none() {
            witness.reset(&state.head)?;
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
            scratch,
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

    /// A probe that the filesystem takes writes again: a file of real data, fsynced.
    fn probe_writable(&self) -> StoreResult<()> {
        let mut r = [0u8; 8];
        getrandom::fill(&mut r).map_err(cannot)?;
        let path = self
            .data_dir
            .join(format!(".write-probe-{}", hex::encode(r)));
        let result = (|| {
            use std::io::Write as _;
            let mut f = private_fs::create_new_private(&path).map_err(cannot)?;
            f.write_all(&vec![0u8; 1 << 20]).map_err(cannot)?;
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

        // Whole blocks from the unfilled tail block onwards.
        let mut blocks: Vec<([u8; 8], Vec<u8>)> = Vec::new();
        let mut cur: Vec<RawEntry> = if batch.entries.is_empty() {
            Vec::new()
        } else {
            w.tail.clone()
        };
        for e in batch.entries {
            if cur
                .first()
                .is_some_and(|c| block::block_of(c.seq) != block::block_of(e.seq))
            {
                blocks.push((block::key(block::block_of(cur[0].seq)), block::encode(&cur)));
                cur.clear();
            }
            cur.push(e.clone());
        }
        if let Some(c) = cur.first() {
            blocks.push((block::key(block::block_of(c.seq)), block::encode(&cur)));
        }
        let new_tail = if cur.len() as u64 == block::BLOCK {
            Vec::new()
        } else {
            cur
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

        let tx = (&p.log, &p.idem, &p.meta).transaction(|(log, idm, meta)| {
            for (k, v) in &blocks {
                log.insert(&k[..], v.as_slice())?;
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
            return Err(Self::fail(&mut w, e));
        }
        if let Err(e) = p.db.flush() {
            return Err(Self::fail(&mut w, write_error(e)));
        }
        if let Err(e) = p.file.sync_data() {
            return Err(Self::fail(
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
                return Err(Self::fail(&mut w, e));
            }
            w.head = head;
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
        let p = open_parts(&self.sled_dir, self.cache_bytes)?;
        let found = writer_state(&p)?;
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
            upgrade::cut_after(&p, head.seq)?;
        }
        p.db.flush().map_err(write_error)?;
        p.file.sync_data().map_err(cannot)?;
        self.witness.write(&head)?;
        let state = writer_state(&p)?;
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
        if seq == 0 {
            return Ok(None);
        }
        let b = block::block_of(seq);
        self.with(|p| match p.log.get(block::key(b)).map_err(read_error)? {
            Some(v) => Ok(block::decode(b, ivec_bytes(v))?
                .into_iter()
                .nth((seq - block::first_seq(b)) as usize)),
            None => Ok(None),
        })
    }

    fn range(&self, from: Seq, to: Seq, limit: usize) -> StoreResult<Vec<RawEntry>> {
        if from > to || limit == 0 {
            return Ok(Vec::new());
        }
        let from = from.max(1);
        self.with(|p| {
            let mut out = Vec::new();
            let keys = block::key(block::block_of(from))..=block::key(block::block_of(to));
            for kv in p.log.range(keys) {
                let (k, v) = kv.map_err(read_error)?;
                let b = block::decode_key(&k)?;
                for e in block::decode(b, ivec_bytes(v))? {
                    if e.seq > to || out.len() == limit {
                        return Ok(out);
                    }
                    if e.seq >= from {
                        out.push(e);
                    }
                }
            }
            Ok(out)
        })
    }

    fn last(&self) -> StoreResult<Option<RawEntry>> {
        self.with(|p| Ok(last_block(p)?.pop()))
    }

    fn earliest(&self) -> StoreResult<Option<Seq>> {
        self.with(|p| match p.log.first().map_err(read_error)? {
            Some((k, _)) => Ok(Some(block::first_seq(block::decode_key(&k)?))),
            None => Ok(None),
        })
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

    fn entry(seq: u64) -> RawEntry {
        RawEntry {
            seq,
            hash: [seq as u8; 32],
            body: format!("{{\"seq\":{seq}}}").into_bytes().into(),
        }
    }

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
