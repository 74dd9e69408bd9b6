//! The stored form of the log: entries in sealed blocks of [`BLOCK`] consecutive seqs,
//! one sled value per block, so the number of keys (and sled's per-page bookkeeping,
//! which stays in memory whatever the cache size) is the log's length divided by the
//! block size. Entries of the block not yet full wait in a small tree of their own, one
//! key per entry, and move into their block when it fills: a block is written once and
//! never rewritten (rewriting one per append made sled keep chains of large deltas).
//!
//! A block value: `[FORMAT][n]`, then `n` times `[hash (32)][body length (u32 LE)]`,
//! then the `n` bodies back to back. Block `b` holds seqs `b*BLOCK+1 ..= b*BLOCK+n`.
//! A waiting entry: key the big-endian seq, value `[hash (32)][body]`.

use crate::ledger::event::Seq;
use crate::ledger::log::{RawEntry, StoreError};

/// Entries per block.
pub const BLOCK: u64 = 32;
pub const FORMAT: u8 = 2;
const SLOT: usize = 32 + 4;

/// The block holding `seq` (seqs start at 1).
pub fn block_of(seq: Seq) -> u64 {
    (seq.max(1) - 1) / BLOCK
}

/// The first seq block `b` holds.
pub fn first_seq(b: u64) -> Seq {
    b * BLOCK + 1
}

pub fn key(b: u64) -> [u8; 8] {
    b.to_be_bytes()
}

pub fn decode_key(k: &[u8]) -> Result<u64, StoreError> {
    let arr: [u8; 8] = k.try_into().map_err(|_| StoreError::Damaged {
        seq: 0,
        reason: format!("block key {} is not a big-endian u64", hex::encode(k)),
    })?;
    Ok(u64::from_be_bytes(arr))
}

/// Encodes consecutive entries that all belong to one block.
pub fn encode(entries: &[RawEntry]) -> Vec<u8> {
    let bodies: usize = entries.iter().map(|e| e.body.len()).sum();
    let mut v = Vec::with_capacity(2 + entries.len() * SLOT + bodies);
    v.push(FORMAT);
    v.push(entries.len() as u8);
    for e in entries {
        v.extend_from_slice(&e.hash);
        v.extend_from_slice(&(e.body.len() as u32).to_le_bytes());
    }
    for e in entries {
        v.extend_from_slice(&e.body);
    }
    v
}

/// A waiting entry's value.
pub fn encode_one(e: &RawEntry) -> Vec<u8> {
    let mut v = Vec::with_capacity(32 + e.body.len());
    v.extend_from_slice(&e.hash);
    v.extend_from_slice(&e.body);
    v
}

/// A waiting entry, sharing `value`'s buffer.
pub fn decode_one(key: &[u8], value: bytes::Bytes) -> Result<RawEntry, StoreError> {
    let seq = decode_key(key)?;
    if value.len() < 32 {
        return Err(StoreError::Damaged {
            seq,
            reason: format!("stored entry of {} bytes has no hash", value.len()),
        });
    }
    let mut hash = [0u8; 32];
    hash.copy_from_slice(&value[..32]);
    Ok(RawEntry {
        seq,
        hash,
        body: value.slice(32..),
    })
}

/// The entries of block `b`, sharing `value`'s buffer.
pub fn decode(b: u64, value: bytes::Bytes) -> Result<Vec<RawEntry>, StoreError> {
    let first = first_seq(b);
    let damaged = |reason: String| StoreError::Damaged { seq: first, reason };
    if value.len() < 2 || value[0] != FORMAT {
        return Err(damaged(format!(
            "block of seqs from {first} has a bad header (format byte {:?})",
            value.first()
        )));
    }
    let n = value[1] as usize;
    if n == 0 || n as u64 > BLOCK || value.len() < 2 + n * SLOT {
        return Err(damaged(format!(
            "block of seqs from {first} claims {n} entries"
        )));
    }
    let mut out = Vec::with_capacity(n);
    let mut at = 2 + n * SLOT;
    for i in 0..n {
        let slot = &value[2 + i * SLOT..2 + (i + 1) * SLOT];
        let mut hash = [0u8; 32];
        hash.copy_from_slice(&slot[..32]);
        let len = u32::from_le_bytes([slot[32], slot[33], slot[34], slot[35]]) as usize;
        let seq = first + i as u64;
        if at + len > value.len() {
            return Err(StoreError::Damaged {
                seq,
                reason: "entry body runs past the end of its block".into(),
            });
        }
        out.push(RawEntry {
            seq,
            hash,
            body: value.slice(at..at + len),
        });
        at += len;
    }
    if at != value.len() {
        return Err(damaged(format!(
            "block of seqs from {first} has {} bytes after its last entry",
            value.len() - at
        )));
    }
    Ok(out)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A small entry whose hash and body name its seq (shared by the store's tests).
    pub(in crate::store) fn entry(seq: Seq) -> RawEntry {
        RawEntry {
            seq,
            hash: [seq as u8; 32],
            body: format!("{{\"seq\":{seq}}}").into_bytes().into(),
        }
    }

    #[test]
    fn round_trip_and_damage_is_named() {
        let es: Vec<_> = (33..=40).map(entry).collect();
        let v = encode(&es);
        assert_eq!(decode(1, v.clone().into()).unwrap(), es);
        for cut in [0, 1, 5, v.len() - 1] {
            let e = decode(1, v[..cut].to_vec().into()).unwrap_err();
            assert!(
                matches!(e, StoreError::Damaged { seq, .. } if (33..=40).contains(&seq)),
                "{e}"
            );
        }
        assert_eq!(block_of(1), 0);
        assert_eq!(block_of(32), 0);
        assert_eq!(block_of(33), 1);
        assert_eq!(first_seq(block_of(100)), 97);
        let one = entry(7);
        let k = 7u64.to_be_bytes();
        assert_eq!(decode_one(&k, encode_one(&one).into()).unwrap(), one);
        assert!(decode_one(&k, vec![1u8; 31].into()).is_err());
    }
}
