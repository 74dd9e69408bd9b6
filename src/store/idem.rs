//! Idempotency keys in a bounded number of sled keys: each key's SHA-256 picks one of
//! [`BUCKETS`] buckets, and a bucket's value lists `[digest (16)][seq (u64 LE)]` pairs.
//! However many keys the log accumulates, sled tracks at most `BUCKETS` keys (its
//! per-page bookkeeping is what grew memory with the log); a lookup reads one small
//! value. The ledger checks the entry a pair names, so a digest collision can never
//! replay the wrong entry.

use sha2::{Digest, Sha256};

use crate::ledger::event::Seq;
use crate::ledger::log::StoreError;

pub const BUCKETS: u32 = 1 << 16;
const PAIR: usize = 16 + 8;

/// The bucket key and the 16-byte digest of an idempotency key.
pub fn locate(key: &[u8]) -> ([u8; 2], [u8; 16]) {
    let h = Sha256::digest(key);
    let mut digest = [0u8; 16];
    digest.copy_from_slice(&h[2..18]);
    ([h[0], h[1]], digest)
}

pub fn find(bucket: &[u8], digest: &[u8; 16]) -> Result<Option<Seq>, StoreError> {
    if bucket.len() % PAIR != 0 {
        return Err(StoreError::Damaged {
            seq: 0,
            reason: format!("idempotency bucket of {} bytes", bucket.len()),
        });
    }
    Ok(bucket.chunks_exact(PAIR).rev().find_map(|p| {
        (p[..16] == digest[..]).then(|| {
            let mut s = [0u8; 8];
            s.copy_from_slice(&p[16..]);
            u64::from_le_bytes(s)
        })
    }))
}

/// `bucket` with `digest → seq` added (the newest pair wins on lookup).
pub fn insert(bucket: &mut Vec<u8>, digest: &[u8; 16], seq: Seq) {
    bucket.extend_from_slice(digest);
    bucket.extend_from_slice(&seq.to_le_bytes());
}

/// `bucket` without pairs naming a seq after `head`.
pub fn retain_upto(bucket: &[u8], head: Seq) -> Vec<u8> {
    bucket
        .chunks_exact(PAIR)
        .filter(|p| {
            let mut s = [0u8; 8];
            s.copy_from_slice(&p[16..]);
            u64::from_le_bytes(s) <= head
        })
        .flatten()
        .copied()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_pair_wins_and_truncation_drops_later_seqs() {
        let (_, d1) = locate(b"alice\0r1");
        let (_, d2) = locate(b"alice\0r2");
        let mut b = Vec::new();
        insert(&mut b, &d1, 5);
        insert(&mut b, &d2, 6);
        insert(&mut b, &d1, 9);
        assert_eq!(find(&b, &d1).unwrap(), Some(9));
        assert_eq!(find(&b, &d2).unwrap(), Some(6));
        let t = retain_upto(&b, 8);
        assert_eq!(find(&t, &d1).unwrap(), Some(5));
        assert!(find(&b[..5], &d1).is_err());
    }
}
