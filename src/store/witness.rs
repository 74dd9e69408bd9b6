//! The head witness: a small file beside sled holding the seq and hash of the last
//! acknowledged entry, fsynced after every append and before any acknowledgement.
//! sled's recovery treats a damaged segment as the end of its log and would serve a
//! shorter history as if whole; compared with this file at start, it cannot.
//!
//! Two 64-byte slots written alternately (`[magic][version][pad 3][counter u64]
//! [seq u64][hash 32][first 8 bytes of SHA-256 of the 56 before]`), so a torn write
//! leaves the other slot, one append older, intact.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use crate::ledger::log::{StoreError, Witness};
use crate::private_fs;

const MAGIC: &[u8; 4] = b"PLHD";
const VERSION: u8 = 1;
const SLOT: usize = 64;

pub struct WitnessFile {
    path: PathBuf,
    /// The open file and the counter of the last slot written; only the writer
    /// thread writes, the lock makes that explicit.
    file: Mutex<Option<(File, u64)>>,
}

fn encode(counter: u64, w: &Witness) -> [u8; SLOT] {
    let mut s = [0u8; SLOT];
    s[..4].copy_from_slice(MAGIC);
    s[4] = VERSION;
    s[8..16].copy_from_slice(&counter.to_le_bytes());
    s[16..24].copy_from_slice(&w.seq.to_le_bytes());
    s[24..56].copy_from_slice(&w.hash);
    let check = Sha256::digest(&s[..56]);
    s[56..].copy_from_slice(&check[..8]);
    s
}

fn decode(s: &[u8]) -> Option<(u64, Witness)> {
    if s.len() != SLOT || &s[..4] != MAGIC || s[4] != VERSION {
        return None;
    }
    if Sha256::digest(&s[..56])[..8] != s[56..] {
        return None;
    }
    let u = |r: std::ops::Range<usize>| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&s[r]);
        u64::from_le_bytes(b)
    };
    let mut hash = [0u8; 32];
    hash.copy_from_slice(&s[24..56]);
    Some((
        u(8..16),
        Witness {
            seq: u(16..24),
            hash,
        },
    ))
}

fn damaged(path: &Path, reason: impl std::fmt::Display) -> StoreError {
    StoreError::Damaged {
        seq: 0,
        reason: format!("head witness {}: {reason}", path.display()),
    }
}

impl WitnessFile {
    pub fn new(path: PathBuf) -> WitnessFile {
        WitnessFile {
            path,
            file: Mutex::new(None),
        }
    }

    /// The newest intact slot; `None` when the file does not exist.
    pub fn read(&self) -> Result<Option<(u64, Witness)>, StoreError> {
        Ok(self.read_both()?.map(|(c, w, _)| (c, w)))
    }

    /// Like [`WitnessFile::read`], and whether both slots are intact: only then is the
    /// newest slot known to be the last one written (a damaged slot may have been the
    /// newer one).
    pub fn read_both(&self) -> Result<Option<(u64, Witness, bool)>, StoreError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(damaged(&self.path, e)),
        };
        if bytes.len() != 2 * SLOT {
            return Err(damaged(
                &self.path,
                format!("{} bytes, not {}", bytes.len(), 2 * SLOT),
            ));
        }
        let slots = [decode(&bytes[..SLOT]), decode(&bytes[SLOT..])];
        // A fresh file has one slot written and the other all zeros.
        let unwritten = |s: &[u8]| s.iter().all(|b| *b == 0);
        let intact = slots
            .iter()
            .enumerate()
            .all(|(i, s)| s.is_some() || unwritten(&bytes[i * SLOT..(i + 1) * SLOT]));
        let best = slots.into_iter().flatten().max_by_key(|(c, _)| *c);
        match best {
            Some((c, w)) => Ok(Some((c, w, intact))),
            None => Err(damaged(&self.path, "neither slot is intact")),
        }
    }

    /// Records `w` durably (the caller has made the log durable first).
    pub fn write(&self, w: &Witness) -> Result<(), StoreError> {
        let cannot = |e: &dyn std::fmt::Display| StoreError::CannotWrite {
            reason: format!("head witness {}: {e}", self.path.display()),
        };
        let mut guard = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            let (f, counter) = match self.read() {
                Ok(Some((c, _))) => (
                    private_fs::open_existing_nofollow(&self.path, true).map_err(|e| cannot(&e))?,
                    c,
                ),
                Ok(None) => {
                    let f = private_fs::create_new_private(&self.path).map_err(|e| cannot(&e))?;
                    f.write_all_at(&[0u8; 2 * SLOT], 0)
                        .map_err(|e| cannot(&e))?;
                    f.sync_all().map_err(|e| cannot(&e))?;
                    private_fs::sync_parent(&self.path).map_err(|e| cannot(&e))?;
                    (f, 0)
                }
                // A damaged witness is only ever replaced on purpose (an upgrade or a
                // fresh store write it with `reset`).
                Err(e) => return Err(e),
            };
            *guard = Some((f, counter));
        }
        let Some((f, counter)) = guard.as_mut() else {
            return Err(cannot(&"not open"));
        };
        let next = *counter + 1;
        let slot = (next % 2) * SLOT as u64;
        f.write_all_at(&encode(next, w), slot)
            .map_err(|e| cannot(&e))?;
        if let Err(e) = f.sync_data() {
            // After a failed fsync the page cache may not say what the disk holds:
            // reopen before trusting the file again.
            *guard = None;
            return Err(cannot(&e));
        }
        *counter = next;
        Ok(())
    }

    /// Replaces the file whole with one recording `w` (a new store, an upgrade).
    pub fn reset(&self, w: &Witness) -> Result<(), StoreError> {
        let mut bytes = vec![0u8; 2 * SLOT];
        bytes[SLOT..].copy_from_slice(&encode(1, w));
        private_fs::write_private_atomic(&self.path, &bytes).map_err(|e| {
            StoreError::CannotWrite {
                reason: e.to_string(),
            }
        })?;
        *self.file.lock().unwrap_or_else(|p| p.into_inner()) = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_intact_slot_wins_and_damage_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.head");
        let w = WitnessFile::new(path.clone());
        assert_eq!(w.read().unwrap(), None);
        for seq in 1..=5 {
            w.write(&Witness {
                seq,
                hash: [seq as u8; 32],
            })
            .unwrap();
        }
        assert_eq!(w.read().unwrap().unwrap().1.seq, 5);
        // Tear the newest slot: the other (one write older) remains.
        let mut bytes = std::fs::read(&path).unwrap();
        let newest = SLOT; // write 5 went to slot 5 % 2
        bytes[newest + 20] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(w.read().unwrap().unwrap().1.seq, 4);
        let other = SLOT - newest;
        bytes[other + 30] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        assert!(w.read().is_err());
    }
}
