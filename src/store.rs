//! Durable storage of the ledger in sled; the only module that knows sled.
//!
//! Trees:
//! - `entries`: big-endian seq → `[format version][32-byte hash][body bytes]`, so a
//!   range scan is a replay in log order;
//! - `idempotency`: `actor \0 request_id` → big-endian seq of the first result;
//! - `checkpoints`: big-endian seq → serialized state as of that seq;
//! - `meta`: small named values (the Docker watcher's cursor, the ledger id).
//!
//! An append batch and its idempotency keys commit in one transaction, and
//! [`Store::append`] returns only after sled's flush returned: nothing is acknowledged
//! before it is durable. Only the ledger's single writer calls `append`, which keeps
//! flushes from running concurrently (sled 0.34's `flush_async` hangs with many
//! concurrent callers, sled issue 1308).

use std::path::Path;

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

/// One entry as stored: its hash and the exact body bytes the hash covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEntry {
    pub seq: u64,
    pub hash: [u8; 32],
    pub body: Vec<u8>,
}

impl RawEntry {
    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(HEADER_LEN + self.body.len());
        v.push(FORMAT_V1);
        v.extend_from_slice(&self.hash);
        v.extend_from_slice(&self.body);
        v
    }

    fn decode(key: &[u8], value: &[u8]) -> Result<RawEntry> {
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
            body: value[HEADER_LEN..].to_vec(),
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
    checkpoints: sled::Tree,
    meta: sled::Tree,
}

impl Store {
    pub fn open(dir: &Path) -> Result<Store> {
        std::fs::create_dir_all(dir)?;
        let config = sled::Config::new().path(dir.join("ledger.sled"));
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
        Ok(Store {
            entries: db.open_tree("entries")?,
            idempotency: db.open_tree("idempotency")?,
            checkpoints: db.open_tree("checkpoints")?,
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
            Some(v) => Ok(Some(RawEntry::decode(&key, &v)?)),
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
                RawEntry::decode(&k, &v)
            })
            .collect()
    }

    /// Every entry from `from` on, lazily.
    pub fn iter_from(&self, from: u64) -> impl Iterator<Item = Result<RawEntry>> + '_ {
        self.entries.range(from.to_be_bytes()..).map(|kv| {
            let (k, v) = kv?;
            RawEntry::decode(&k, &v)
        })
    }

    pub fn last(&self) -> Result<Option<RawEntry>> {
        match self.entries.last()? {
            Some((k, v)) => Ok(Some(RawEntry::decode(&k, &v)?)),
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
    pub fn put_checkpoint(&self, seq: u64, bytes: &[u8]) -> Result<()> {
        self.checkpoints.insert(seq.to_be_bytes(), bytes)?;
        Ok(())
    }

    /// Deletes old checkpoints, keeping the newest `newest` and the oldest one in each
    /// window of `window` seqs.
    pub fn prune_checkpoints(&self, newest: usize, window: u64) -> Result<()> {
        let mut seqs = Vec::new();
        for k in self.checkpoints.iter().keys() {
            seqs.push(decode_seq(&k?)?);
        }
        let keep_from = seqs.len().saturating_sub(newest);
        let mut last_window = None;
        for (i, seq) in seqs.into_iter().enumerate() {
            let w = seq / window.max(1);
            if i >= keep_from || last_window != Some(w) {
                last_window = Some(w);
                continue;
            }
            self.checkpoints.remove(seq.to_be_bytes())?;
        }
        Ok(())
    }

    /// Checkpoints at or before `seq`, newest first.
    pub fn checkpoints_at_or_before(
        &self,
        seq: u64,
    ) -> impl Iterator<Item = Result<(u64, Vec<u8>)>> + '_ {
        self.checkpoints
            .range(..=seq.to_be_bytes())
            .rev()
            .map(|kv| {
                let (k, v) = kv?;
                Ok((decode_seq(&k)?, v.to_vec()))
            })
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
            body: format!("{{\"seq\":{seq}}}").into_bytes(),
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
        let first = s.checkpoints_at_or_before(15).next().unwrap().unwrap();
        assert_eq!(first, (10, b"ten".to_vec()));
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
