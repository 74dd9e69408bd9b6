//! A `privledger watch` agent's outbox on sled: the reports not yet acknowledged by
//! the ledger, numbered densely, each written in one transaction with the Docker
//! cursor it moves and made durable (sled's flush, then `fdatasync` of its file, as
//! for the ledger's own store) before the agent reads the next event.

use std::fs::File;
use std::path::Path;

use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

/// Key of the next number in the meta tree.
const NEXT: &[u8] = b"next";
/// Key of the Docker cursor in the meta tree.
const CURSOR: &[u8] = b"cursor";

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("the outbox in {dir}: {reason}")]
    Storage { dir: String, reason: String },
}

pub struct Outbox {
    dir: String,
    db: sled::Db,
    items: sled::Tree,
    meta: sled::Tree,
    file: File,
}

impl Outbox {
    /// Opens (or creates) the outbox in `dir` (`DATA/outbox.sled`).
    pub fn open(dir: &Path) -> Result<Outbox, OutboxError> {
        let name = dir.display().to_string();
        let err = |e: &dyn std::fmt::Display| OutboxError::Storage {
            dir: name.clone(),
            reason: e.to_string(),
        };
        let config = sled::Config::new()
            .path(dir)
            .cache_capacity(8 * 1024 * 1024);
        let db = match super::open_sled(&config) {
            Ok(db) => db,
            Err(super::SledOpenError::InUse(e)) => {
                return Err(err(&format!(
                    "in use by another process (another agent on this directory?): {e}"
                )))
            }
            Err(super::SledOpenError::Other(e)) => return Err(err(&e)),
        };
        let items = db.open_tree("items").map_err(|e| err(&e))?;
        let meta = db.open_tree("meta").map_err(|e| err(&e))?;
        let file = File::open(dir.join("db")).map_err(|e| err(&e))?;
        Ok(Outbox {
            dir: name,
            db,
            items,
            meta,
            file,
        })
    }

    fn err(&self, e: impl std::fmt::Display) -> OutboxError {
        OutboxError::Storage {
            dir: self.dir.clone(),
            reason: e.to_string(),
        }
    }

    /// Durable: sled's flush writes its log, `fdatasync` commits it to the device.
    fn sync(&self) -> Result<(), OutboxError> {
        self.db.flush().map_err(|e| self.err(e))?;
        self.file.sync_data().map_err(|e| self.err(e))
    }

    /// Appends `item` under the next number, with the cursor it moves, durably;
    /// returns its number.
    pub fn push(&self, item: &[u8], cursor: Option<&[u8]>) -> Result<u64, OutboxError> {
        self.push_from(None, item, cursor)
    }

    /// Appends `item` under the next number, or under `from` if that is higher (a new
    /// outbox for a host the ledger already holds reports of: numbering resumes after
    /// them and never goes back), in one durable transaction with the cursor it moves.
    pub fn push_from(
        &self,
        from: Option<u64>,
        item: &[u8],
        cursor: Option<&[u8]>,
    ) -> Result<u64, OutboxError> {
        let r = (&self.items, &self.meta).transaction(|(items, meta)| {
            let next = meta.get(NEXT)?.map_or(1, |v| {
                u64::from_be_bytes(v.as_ref().try_into().unwrap_or([0; 8]))
            });
            let next = next.max(from.unwrap_or(0));
            items.insert(&next.to_be_bytes(), item)?;
            meta.insert(NEXT, &(next + 1).to_be_bytes())?;
            if let Some(c) = cursor {
                meta.insert(CURSOR, c)?;
            }
            Ok::<u64, ConflictableTransactionError<()>>(next)
        });
        let n = match r {
            Ok(n) => n,
            Err(TransactionError::Storage(e)) => return Err(self.err(e)),
            Err(TransactionError::Abort(())) => return Err(self.err("transaction aborted")),
        };
        self.sync()?;
        Ok(n)
    }

    /// Moves the cursor alone (past events that report nothing), durably.
    pub fn set_cursor(&self, cursor: &[u8]) -> Result<(), OutboxError> {
        self.meta.insert(CURSOR, cursor).map_err(|e| self.err(e))?;
        self.sync()
    }

    pub fn cursor(&self) -> Result<Option<Vec<u8>>, OutboxError> {
        Ok(self
            .meta
            .get(CURSOR)
            .map_err(|e| self.err(e))?
            .map(|v| v.to_vec()))
    }

    /// Up to `limit` unacknowledged reports, oldest first.
    pub fn pending(&self, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, OutboxError> {
        self.items
            .iter()
            .take(limit)
            .map(|kv| {
                let (k, v) = kv.map_err(|e| self.err(e))?;
                let n = u64::from_be_bytes(k.as_ref().try_into().map_err(|_| self.err("bad key"))?);
                Ok((n, v.to_vec()))
            })
            .collect()
    }

    /// How many reports wait.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Forgets every report up to `number` (the ledger has recorded them).
    pub fn acknowledged(&self, number: u64) -> Result<(), OutboxError> {
        let mut batch = sled::Batch::default();
        for kv in self.items.range(..=number.to_be_bytes()) {
            let (k, _) = kv.map_err(|e| self.err(e))?;
            batch.remove(k);
        }
        self.items.apply_batch(batch).map_err(|e| self.err(e))?;
        // Not synced: a report acknowledged but still here after a crash is sent
        // again and acknowledged as a duplicate.
        Ok(())
    }

    /// The number the next report gets.
    pub fn next_number(&self) -> Result<u64, OutboxError> {
        Ok(self
            .meta
            .get(NEXT)
            .map_err(|e| self.err(e))?
            .map_or(1, |v| {
                u64::from_be_bytes(v.as_ref().try_into().unwrap_or([0; 8]))
            }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_are_numbered_densely_and_survive_a_reopen_until_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        {
            let o = Outbox::open(dir.path()).unwrap();
            assert_eq!(o.push(b"a", Some(b"c1")).unwrap(), 1);
            assert_eq!(o.push(b"b", None).unwrap(), 2);
            assert_eq!(o.push(b"c", Some(b"c3")).unwrap(), 3);
            o.acknowledged(1).unwrap();
        }
        let o = Outbox::open(dir.path()).unwrap();
        assert_eq!(o.cursor().unwrap().as_deref(), Some(&b"c3"[..]));
        let p = o.pending(10).unwrap();
        assert_eq!(p, vec![(2, b"b".to_vec()), (3, b"c".to_vec())]);
        // Numbers go on after the highest ever given, acknowledged or not.
        assert_eq!(o.push(b"d", None).unwrap(), 4);
        o.acknowledged(4).unwrap();
        assert!(o.is_empty());
        assert_eq!(o.next_number().unwrap(), 5);
        assert_eq!(o.push_from(Some(3), b"e", None).unwrap(), 5, "never back");
        // The resumed number and its report are one write: there is no outbox that
        // numbers from 40 without report 40 in it.
        assert_eq!(o.push_from(Some(40), b"f", None).unwrap(), 40);
        assert_eq!(o.push(b"g", None).unwrap(), 41);
    }
}
