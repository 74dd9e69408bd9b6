//! Checkpoint files (`checkpoints/<seq>.checkpoint`): the serialized state as of a
//! seq, kept beside sled rather than in it (sled materializes whole leaves of values in
//! its cache, and checkpoints are megabytes). Any log store on a node can keep its
//! checkpoints here; they are a cache the ledger proves against the chain before use.

use std::path::{Path, PathBuf};

use crate::ledger::event::Seq;
use crate::ledger::log::{StoreError, StoreResult, StoredCheckpoint};
use crate::private_fs;

const SUFFIX: &str = ".checkpoint";

pub struct CheckpointDir {
    dir: PathBuf,
}

fn cannot(e: impl std::fmt::Display) -> StoreError {
    StoreError::CannotWrite {
        reason: e.to_string(),
    }
}

fn read_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Read {
        reason: e.to_string(),
    }
}

impl CheckpointDir {
    /// `dir`, created if missing; with `writable`, stale temporary files are removed.
    pub fn open(dir: &Path, writable: bool) -> StoreResult<CheckpointDir> {
        if writable {
            private_fs::ensure_subdir(dir).map_err(cannot)?;
            for f in std::fs::read_dir(dir).map_err(read_err)? {
                let path = f.map_err(read_err)?.path();
                let is_tmp = path
                    .extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| e.starts_with("tmp"));
                if is_tmp {
                    std::fs::remove_file(&path).map_err(cannot)?;
                }
            }
        }
        Ok(CheckpointDir {
            dir: dir.to_path_buf(),
        })
    }

    fn path(&self, seq: Seq) -> PathBuf {
        self.dir.join(format!("{seq:020}{SUFFIX}"))
    }

    pub fn put(&self, seq: Seq, bytes: &[u8]) -> StoreResult<()> {
        private_fs::write_private_atomic(&self.path(seq), bytes).map_err(cannot)
    }

    pub fn seqs(&self) -> StoreResult<Vec<Seq>> {
        let mut seqs = Vec::new();
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(seqs),
            Err(e) => return Err(read_err(format!("{}: {e}", self.dir.display()))),
        };
        for f in entries {
            let name = f.map_err(read_err)?.file_name();
            let seq = name
                .to_str()
                .and_then(|n| n.strip_suffix(SUFFIX))
                .and_then(|n| n.parse::<u64>().ok());
            seqs.extend(seq);
        }
        seqs.sort_unstable();
        Ok(seqs)
    }

    pub fn open_one(&self, seq: Seq) -> StoreResult<StoredCheckpoint> {
        let path = self.path(seq);
        let f = private_fs::open_existing_nofollow(&path, false).map_err(read_err)?;
        Ok(StoredCheckpoint {
            seq,
            reader: Box::new(std::io::BufReader::with_capacity(1 << 16, f)),
        })
    }

    pub fn prune(&self, newest: usize, window: u64) -> StoreResult<()> {
        let seqs = self.seqs()?;
        let keep_from = seqs.len().saturating_sub(newest);
        let mut last_window = None;
        for (i, seq) in seqs.into_iter().enumerate() {
            let w = seq / window.max(1);
            if i >= keep_from || last_window != Some(w) {
                last_window = Some(w);
                continue;
            }
            std::fs::remove_file(self.path(seq)).map_err(cannot)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pruning_keeps_the_newest_and_one_per_window() {
        let dir = tempfile::tempdir().unwrap();
        let c = CheckpointDir::open(&dir.path().join("cp"), true).unwrap();
        for seq in (10..=250).step_by(10) {
            c.put(seq, b"cp").unwrap();
        }
        c.prune(2, 100).unwrap();
        assert_eq!(c.seqs().unwrap(), vec![10, 100, 200, 240, 250]);
        let mut r = c.open_one(240).unwrap().reader;
        let mut s = String::new();
        std::io::Read::read_to_string(&mut r, &mut s).unwrap();
        assert_eq!(s, "cp");
    }
}
