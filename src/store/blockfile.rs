//! `DATA/blocks.log`: sealed blocks of the log, appended and never rewritten.
//!
//! Why not in sled: sled 0.34's cache evicts only after 64 page-ins to one of its 256
//! shards, so a log stored as a few thousand large pages was never evicted, and one
//! catch-up left the whole log (500 MB for 1M entries) resident whatever
//! `storage_cache_mb` said (heaptrack). Read with `pread`, sealed blocks cost the
//! process nothing once read; the OS page cache keeps what it likes.
//!
//! The file is a sequence of records `[payload length u32 LE][payload]`, the payload a
//! block ([`super::block`]); the k-th record is block k. sled's `meta` records how many
//! blocks and bytes are committed: that is the commit point, written in the same sled
//! transaction that drops the blocks' entries from the waiting tree, after this file
//! was fsynced. Bytes past it (a seal that crashed before its commit) are ignored and
//! cut when the store is opened for writing.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use crate::ledger::log::{StoreError, StoreResult};
use crate::private_fs;

/// Offsets of the committed blocks (8 bytes per block of 32 entries: 250 KB per
/// million entries).
pub struct BlockFile {
    path: PathBuf,
    /// `None` only for a read-only open of a store that has sealed nothing yet.
    file: Option<File>,
    /// `offsets[k]` is where block k's record starts; the last element is the end of
    /// the readable committed records.
    offsets: RwLock<Vec<u64>>,
    /// Blocks committed in sled's `meta`.
    committed: RwLock<u64>,
    /// Why blocks from `offsets.len() - 1` on cannot be read, when some committed ones
    /// cannot: they stay committed, and reading them names the damage.
    damage: Option<String>,
    /// Blocks whose record is damaged but whose successors were found again.
    bad: Vec<u64>,
}

/// How far past `from` a damaged record is searched for the next whole one.
const RESYNC_WINDOW: u64 = 4 << 20;

/// The offset of the first plausible record at or after `from`: its header says a
/// full block, and its slots' body lengths add up to its length.
fn resync(f: &File, from: u64, end: u64) -> Option<u64> {
    use super::block::{BLOCK, FORMAT};
    let slots = 2 + BLOCK as usize * 36;
    let to = end.min(from + RESYNC_WINDOW);
    let mut buf = vec![0u8; to.checked_sub(from)? as usize];
    f.read_exact_at(&mut buf, from).ok()?;
    (0..buf.len().saturating_sub(4 + slots)).find_map(|q| {
        let len = u32::from_le_bytes([buf[q], buf[q + 1], buf[q + 2], buf[q + 3]]) as usize;
        let p = &buf[q + 4..q + 4 + slots];
        if p[0] != FORMAT || u64::from(p[1]) != BLOCK || from + (q + 4 + len) as u64 > end {
            return None;
        }
        let bodies: usize = (0..BLOCK as usize)
            .map(|i| {
                let s = &p[2 + i * 36 + 32..2 + i * 36 + 36];
                u32::from_le_bytes([s[0], s[1], s[2], s[3]]) as usize
            })
            .sum();
        (slots + bodies == len).then_some(from + q as u64)
    })
}

fn damaged(path: &Path, block: u64, reason: impl std::fmt::Display) -> StoreError {
    StoreError::Damaged {
        seq: super::block::first_seq(block),
        reason: format!("{}: block {block}: {reason}", path.display()),
    }
}

fn cannot(path: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError::CannotWrite {
        reason: format!("{}: {e}", path.display()),
    }
}

impl BlockFile {
    /// Opens the file with `blocks` committed blocks ending at byte `len`; with
    /// `writable`, creates it if missing and cuts what lies past `len`. Damage is not
    /// an error here: the blocks before it stay readable (a forensic open serves them),
    /// and start-up refuses when it reads the damaged one.
    pub fn open(path: &Path, blocks: u64, len: u64, writable: bool) -> StoreResult<BlockFile> {
        let file = match private_fs::open_existing_nofollow(path, writable) {
            Ok(f) => Some(f),
            Err(e) if e.io_error().map(|e| e.kind()) == Some(std::io::ErrorKind::NotFound) => {
                if blocks == 0 && writable {
                    let f = private_fs::create_new_private(path).map_err(|e| cannot(path, e))?;
                    private_fs::sync_parent(path).map_err(|e| cannot(path, e))?;
                    Some(f)
                } else {
                    None
                }
            }
            Err(e) => {
                return Err(StoreError::Read {
                    reason: e.to_string(),
                })
            }
        };
        let mut offsets = vec![0u64];
        let mut damage = None;
        let mut bad = Vec::new();
        if let Some(f) = &file {
            let size = f
                .metadata()
                .map_err(|e| StoreError::Read {
                    reason: format!("{}: {e}", path.display()),
                })?
                .len();
            let end = len.min(size);
            let mut at = 0u64;
            let mut k = 0;
            while k < blocks {
                // A record starts with its length, then the block's format byte and
                // its entry count (always a full block): six bytes that a misaligned
                // offset almost never matches.
                let mut h = [0u8; 6];
                let next = f.read_exact_at(&mut h, at).map(|()| {
                    let n = at + 4 + u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as u64;
                    (
                        n,
                        h[4] == super::block::FORMAT && u64::from(h[5]) == super::block::BLOCK,
                    )
                });
                let why = match next {
                    Ok((n, true)) if n <= end => {
                        at = n;
                        offsets.push(at);
                        k += 1;
                        continue;
                    }
                    Ok(_) => format!("block {k}: the record header is damaged"),
                    Err(e) => format!("block {k}: record header: {e}"),
                };
                // Skip the damaged record: the next one starts where a whole
                // plausible record does.
                match resync(f, at + 1, end) {
                    Some(next) if k + 1 < blocks => {
                        tracing::error!(block = k, "blocks.log: {why}; later blocks stay readable");
                        bad.push(k);
                        at = next;
                        offsets.push(at);
                        k += 1;
                    }
                    _ => {
                        damage = Some(why);
                        break;
                    }
                }
            }
            if damage.is_none() && at != len {
                damage = Some(format!(
                    "the committed records end at byte {at}, but {len} are committed ({size} in the file)"
                ));
            }
            if writable && damage.is_none() && size > len {
                f.set_len(len).map_err(|e| cannot(path, e))?;
                f.sync_all().map_err(|e| cannot(path, e))?;
            }
        } else if blocks > 0 {
            damage = Some("the file is missing".into());
        }
        Ok(BlockFile {
            path: path.to_path_buf(),
            file,
            offsets: RwLock::new(offsets),
            committed: RwLock::new(blocks),
            damage,
            bad,
        })
    }

    fn file(&self) -> StoreResult<&File> {
        self.file.as_ref().ok_or(StoreError::ReadOnly)
    }

    /// Committed blocks (readable or not).
    pub fn blocks(&self) -> u64 {
        *self.committed.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends encoded blocks after the committed ones and fsyncs them; returns the
    /// new (blocks, length) to commit. Until [`BlockFile::committed`] they are not
    /// visible to readers.
    pub fn write(&self, blocks: &[Vec<u8>]) -> StoreResult<(u64, u64)> {
        if let Some(d) = &self.damage {
            return Err(cannot(&self.path, format!("damaged: {d}")));
        }
        let mut at = *self
            .offsets
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .last()
            .unwrap_or(&0);
        let n = self.blocks();
        let mut buf = Vec::with_capacity(blocks.iter().map(|b| b.len() + 4).sum());
        for b in blocks {
            buf.extend_from_slice(&(b.len() as u32).to_le_bytes());
            buf.extend_from_slice(b);
        }
        let file = self.file()?;
        file.write_all_at(&buf, at)
            .map_err(|e| cannot(&self.path, e))?;
        file.sync_data().map_err(|e| cannot(&self.path, e))?;
        at += buf.len() as u64;
        Ok((n + blocks.len() as u64, at))
    }

    /// Makes blocks written by [`BlockFile::write`] visible, once their commit is durable.
    pub fn committed(&self, blocks: &[Vec<u8>]) {
        let mut offsets = self.offsets.write().unwrap_or_else(|p| p.into_inner());
        for b in blocks {
            let end = *offsets.last().unwrap_or(&0) + 4 + b.len() as u64;
            offsets.push(end);
        }
        *self.committed.write().unwrap_or_else(|p| p.into_inner()) += blocks.len() as u64;
    }

    /// Forgets blocks from `keep` on (their commit was cut); the bytes are cut at the
    /// next writable open.
    pub fn cut(&self, keep: u64) {
        // The count first: a reader never sees a committed block without its offset.
        {
            let mut committed = self.committed.write().unwrap_or_else(|p| p.into_inner());
            *committed = (*committed).min(keep);
        }
        let mut offsets = self.offsets.write().unwrap_or_else(|p| p.into_inner());
        offsets.truncate(keep as usize + 1);
    }

    /// The end of the committed records after `keep` blocks.
    pub fn end_of(&self, keep: u64) -> u64 {
        let offsets = self.offsets.read().unwrap_or_else(|p| p.into_inner());
        offsets
            .get(keep as usize)
            .copied()
            .unwrap_or_else(|| *offsets.last().unwrap_or(&0))
    }

    /// Blocks `from..to` (clamped to the committed ones), each as (block, payload),
    /// read with one `pread`; fewer when damage stops the read after the first.
    pub fn read(&self, from: u64, to: u64) -> StoreResult<Vec<(u64, bytes::Bytes)>> {
        let offsets = self.offsets.read().unwrap_or_else(|p| p.into_inner());
        let readable = offsets.len() as u64 - 1;
        let to = to.min(self.blocks());
        if from >= to {
            return Ok(Vec::new());
        }
        if from >= readable {
            let why = self.damage.as_deref().unwrap_or("unreadable");
            return Err(damaged(&self.path, readable, why));
        }
        if let Some(b) = self.bad.iter().find(|b| (from..to).contains(b)) {
            if *b == from {
                return Err(damaged(&self.path, from, "the record header is damaged"));
            }
            return self.read_clean(&offsets, from, *b);
        }
        self.read_clean(&offsets, from, to.min(readable))
    }

    fn read_clean(
        &self,
        offsets: &[u64],
        from: u64,
        to: u64,
    ) -> StoreResult<Vec<(u64, bytes::Bytes)>> {
        let (start, end) = (offsets[from as usize], offsets[to as usize]);
        let mut buf = vec![0u8; (end - start) as usize];
        self.file()?
            .read_exact_at(&mut buf, start)
            .map_err(|e| StoreError::Read {
                reason: format!("{}: {e}", self.path.display()),
            })?;
        let buf = bytes::Bytes::from(buf);
        let mut out = Vec::with_capacity((to - from) as usize);
        for k in from..to {
            let (a, b) = (
                (offsets[k as usize] - start) as usize,
                (offsets[k as usize + 1] - start) as usize,
            );
            let len = u32::from_le_bytes([buf[a], buf[a + 1], buf[a + 2], buf[a + 3]]) as usize;
            if a + 4 + len != b {
                return Err(damaged(&self.path, k, "the record's length changed"));
            }
            out.push((k, buf.slice(a + 4..b)));
        }
        Ok(out)
    }
}
