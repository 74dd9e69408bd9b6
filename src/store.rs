//! Durable storage of the ledger in sled; the only module that knows sled.
//!
//! Trees:
//! - `entries`: big-endian seq → `[format version][32-byte hash][body bytes]`, so a
//!   range scan is a replay in log order;
//! - `idempotency`: `actor \0 request_id` → big-endian seq of the first result;
//! - `meta`: small named values (the Docker watcher's cursor, the ledger id).
//!
//! Checkpoints (the serialized state as of a seq, megabytes each) are files in
//! `checkpoints/` beside the sled directory, not sled values: sled materializes a
//! whole leaf of values into its cache, so a few large checkpoints there cost hundreds
//! of megabytes of memory and slowed start-up (DESIGN §7 memory target).
//!
//! An append batch and its idempotency keys commit in one transaction, and
//! [`Store::append`] returns only after sled's flush returned: nothing is acknowledged
//! before it is durable. Only the ledger's single writer calls `append`, which keeps
//! flushes from running concurrently (sled 0.34's `flush_async` hangs with many
//! concurrent callers, sled issue 1308).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};

const FORMAT_V1: u8 = 1;
const HEADER_LEN: usize = 1 + 32;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("storage error: {0}")]
    Sled(#[from] sled::Error),
    #[error("storage I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("stored entry at key {key} is malformed: {reason}")]
    Malformed { key: String, reason: String },
}

pub type Result<T> = std::result::Result<T, Error>;

/// `dir/checkpoints`, created if missing, with stale temporary files removed.
fn checkpoint_dir(dir: &Path) -> Result<PathBuf> {
    let cp = dir.join("checkpoints");
    std::fs::create_dir_all(&cp)?;
    for f in std::fs::read_dir(&cp)? {
        let path = f?.path();
        if path.extension().is_some_and(|e| e == "tmp") {
            std::fs::remove_file(path)?;
        }
    }
    Ok(cp)
}

/// One entry as stored: its hash and the exact body bytes the hash covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEntry {
    pub seq: u64,
    pub hash: [u8; 32],
    /// Shares the storage's buffer: streaming the log copies no body.
    pub body: bytes::Bytes,
}

impl RawEntry {
    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(HEADER_LEN + self.body.len());
        v.push(FORMAT_V1);
        v.extend_from_slice(&self.hash);
        v.extend_from_slice(&self.body);
        v
    }

    fn decode(key: &[u8], value: sled::IVec) -> Result<RawEntry> {
        let seq = decode_seq(key)?;
        if value.len() < HEADER_LEN || value[0] != FORMAT_V1 {
            return Err(Error::Malformed {
                key: seq.to_string(),
                reason: "bad header".into(),
            });
        }
        let mut hash = [0u8; 32];
        hash.copy_from_slice(&value[1..HEADER_LEN]);
        Ok(RawEntry {
            seq,
            hash,
            body: bytes::Bytes::from_owner(value).slice(HEADER_LEN..),
        })
    }
}

fn decode_seq(key: &[u8]) -> Result<u64> {
    let arr: [u8; 8] = key.try_into().map_err(|_| Error::Malformed {
        key: hex::encode(key),
        reason: "key is not a big-endian u64".into(),
    })?;
    Ok(u64::from_be_bytes(arr))
}

/// Handle to the on-disk ledger. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    entries: sled::Tree,
    idempotency: sled::Tree,
    meta: sled::Tree,
    checkpoint_dir: PathBuf,
}

const CHECKPOINT_SUFFIX: &str = ".checkpoint";

/// The default page cache: enough for the recent log and the trees' inner nodes. sled
/// counts serialized sizes, and its decoded nodes take about twice that; a larger cache
/// did not make the audit catch-up (a sequential read) or appends faster (BENCHMARKS.md).
pub const DEFAULT_CACHE_BYTES: u64 = 16 * 1024 * 1024;

impl Store {
    pub fn open(dir: &Path) -> Result<Store> {
        Store::open_with_cache(dir, DEFAULT_CACHE_BYTES)
    }

    /// Opens with a page cache of `cache_bytes` (a target, not a hard cap, in sled).
    pub fn open_with_cache(dir: &Path, cache_bytes: u64) -> Result<Store> {
        std::fs::create_dir_all(dir)?;
        let config = sled::Config::new()
            .path(dir.join("ledger.sled"))
            .cache_capacity(cache_bytes);
        // sled's background threads can keep the file lock for a moment after the last
        // handle in this process is dropped (an in-process restart); another process
        // holding it keeps it, and gets a clear error after the grace period.
        let mut tries = 0;
        let db = loop {
            match config.open() {
                Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") => {
                    tries += 1;
                    if tries == 50 {
                        return Err(Error::Sled(sled::Error::Io(std::io::Error::other(
                            format!("{} is in use by another process ({e})", dir.display()),
                        ))));
                    }
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                r => break r?,
            }
        };
        // Earlier builds kept checkpoints in sled; they are only an optimization.
        db.drop_tree("checkpoints")?;
        Ok(Store {
            entries: db.open_tree("entries")?,
            idempotency: db.open_tree("idempotency")?,
            checkpoint_dir: checkpoint_dir(dir)?,
            meta: db.open_tree("meta")?,
            db,
        })
    }

    /// Atomically writes a batch of entries and their idempotency keys, then flushes.
    /// Returns only once the data is durable.
    pub fn append(&self, entries: &[RawEntry], idempotency: &[(Vec<u8>, u64)]) -> Result<()> {
        let encoded: Vec<([u8; 8], Vec<u8>)> = entries
            .iter()
            .map(|e| (e.seq.to_be_bytes(), e.encode()))
            .collect();
        (&self.entries, &self.idempotency)
            .transaction(|(tx_entries, tx_idem)| {
                for (k, v) in &encoded {
                    tx_entries.insert(&k[..], v.as_slice())?;
                }
                for (k, seq) in idempotency {
                    tx_idem.insert(k.as_slice(), &seq.to_be_bytes()[..])?;
                }
                Ok::<(), ConflictableTransactionError<()>>(())
            })
            .map_err(|e| match e {
                TransactionError::Storage(e) => Error::Sled(e),
                TransactionError::Abort(()) => Error::Malformed {
                    key: "transaction".into(),
                    reason: "aborted".into(),
                },
            })?;
        self.db.flush()?;
        Ok(())
    }

    pub fn get(&self, seq: u64) -> Result<Option<RawEntry>> {
        let key = seq.to_be_bytes();
        match self.entries.get(key)? {
            Some(v) => Ok(Some(RawEntry::decode(&key, v)?)),
            None => Ok(None),
        }
    }

    /// Up to `limit` entries with seq in `[from, to]`, in order.
    pub fn range(&self, from: u64, to: u64, limit: usize) -> Result<Vec<RawEntry>> {
        if from > to {
            return Ok(Vec::new());
        }
        self.entries
            .range(from.to_be_bytes()..=to.to_be_bytes())
            .take(limit)
            .map(|kv| {
                let (k, v) = kv?;
                RawEntry::decode(&k, v)
            })
            .collect()
    }

    /// Every entry from `from` on, lazily.
    pub fn iter_from(&self, from: u64) -> impl Iterator<Item = Result<RawEntry>> + '_ {
        self.entries.range(from.to_be_bytes()..).map(|kv| {
            let (k, v) = kv?;
            RawEntry::decode(&k, v)
        })
    }

    pub fn last(&self) -> Result<Option<RawEntry>> {
        match self.entries.last()? {
            Some((k, v)) => Ok(Some(RawEntry::decode(&k, v)?)),
            None => Ok(None),
        }
    }

    pub fn first_seq(&self) -> Result<Option<u64>> {
        match self.entries.first()? {
            Some((k, _)) => Ok(Some(decode_seq(&k)?)),
            None => Ok(None),
        }
    }

    pub fn idempotency_get(&self, key: &[u8]) -> Result<Option<u64>> {
        match self.idempotency.get(key)? {
            Some(v) => Ok(Some(decode_seq(&v)?)),
            None => Ok(None),
        }
    }

    /// Stores a checkpoint. It is an optimization only (the log is the truth), so it is
    /// made durable by the next append's flush or by [`Store::flush`].
    /// Writes the checkpoint for `seq` durably: a temporary file, fsync, then rename,
    /// so a crash leaves either no checkpoint or a whole one.
    pub fn put_checkpoint(&self, seq: u64, bytes: &[u8]) -> Result<()> {
        let path = self.checkpoint_path(seq);
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(&self.checkpoint_dir)?.sync_all()?;
        Ok(())
    }

    fn checkpoint_path(&self, seq: u64) -> PathBuf {
        self.checkpoint_dir
            .join(format!("{seq:020}{CHECKPOINT_SUFFIX}"))
    }

    /// The seqs that have a checkpoint, ascending.
    fn checkpoint_seqs(&self) -> Result<Vec<u64>> {
        let mut seqs = Vec::new();
        for f in std::fs::read_dir(&self.checkpoint_dir)? {
            let name = f?.file_name();
            let seq = name
                .to_str()
                .and_then(|n| n.strip_suffix(CHECKPOINT_SUFFIX))
                .and_then(|n| n.parse::<u64>().ok());
            seqs.extend(seq);
        }
        seqs.sort_unstable();
        Ok(seqs)
    }

    /// Deletes old checkpoints, keeping the newest `newest` and the oldest one in each
    /// window of `window` seqs.
    pub fn prune_checkpoints(&self, newest: usize, window: u64) -> Result<()> {
        let seqs = self.checkpoint_seqs()?;
        let keep_from = seqs.len().saturating_sub(newest);
        let mut last_window = None;
        for (i, seq) in seqs.into_iter().enumerate() {
            let w = seq / window.max(1);
            if i >= keep_from || last_window != Some(w) {
                last_window = Some(w);
                continue;
            }
            std::fs::remove_file(self.checkpoint_path(seq))?;
        }
        Ok(())
    }

    /// Checkpoints at or before `seq`, newest first, each opened when reached.
    pub fn checkpoints_at_or_before(
        &self,
        seq: u64,
    ) -> impl Iterator<Item = Result<(u64, std::io::BufReader<std::fs::File>)>> + '_ {
        let (seqs, err) = match self.checkpoint_seqs() {
            Ok(s) => (s, None),
            Err(e) => (Vec::new(), Some(Err(e))),
        };
        let open = seqs.into_iter().rev().filter(move |s| *s <= seq).map(|s| {
            let f = std::fs::File::open(self.checkpoint_path(s))?;
            Ok((s, std::io::BufReader::with_capacity(1 << 16, f)))
        });
        err.into_iter().chain(open)
    }

    pub fn meta_get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.meta.get(key)?.map(|v| v.to_vec()))
    }

    /// Writes a metadata value and flushes it.
    pub fn meta_put(&self, key: &str, value: &[u8]) -> Result<()> {
        self.meta.insert(key, value)?;
        self.db.flush()?;
        Ok(())
    }

    pub fn flush(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: u64) -> RawEntry {
        RawEntry {
            seq,
            hash: [seq as u8; 32],
            body: format!("{{\"seq\":{seq}}}").into_bytes().into(),
        }
    }

    #[test]
    fn append_then_read_back_in_order_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            s.append(&[entry(1), entry(2)], &[(b"a\0r".to_vec(), 2)])
                .unwrap();
            s.append(&[entry(3)], &[]).unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.first_seq().unwrap(), Some(1));
        assert_eq!(s.last().unwrap().unwrap(), entry(3));
        let all: Vec<_> = s.iter_from(1).map(|e| e.unwrap().seq).collect();
        assert_eq!(all, vec![1, 2, 3]);
        assert_eq!(s.range(2, 3, 10).unwrap(), vec![entry(2), entry(3)]);
        assert_eq!(s.idempotency_get(b"a\0r").unwrap(), Some(2));
        assert_eq!(s.get(2).unwrap().unwrap(), entry(2));
    }

    #[test]
    fn newest_checkpoint_at_or_before() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        s.put_checkpoint(10, b"ten").unwrap();
        s.put_checkpoint(20, b"twenty").unwrap();
        let (seq, mut r) = s.checkpoints_at_or_before(15).next().unwrap().unwrap();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut r, &mut bytes).unwrap();
        assert_eq!((seq, bytes), (10, b"ten".to_vec()));
        assert!(s.checkpoints_at_or_before(5).next().is_none());
    }

    #[test]
    fn pruning_keeps_the_newest_and_one_per_window() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        for seq in (10..=250).step_by(10) {
            s.put_checkpoint(seq, b"cp").unwrap();
        }
        s.prune_checkpoints(2, 100).unwrap();
        let kept: Vec<u64> = s
            .checkpoints_at_or_before(u64::MAX)
            .map(|c| c.unwrap().0)
            .collect();
        assert_eq!(kept, vec![250, 240, 200, 100, 10]);
    }
}
