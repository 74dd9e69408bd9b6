//! Changes to the stored layout: the upgrade from format 1 (one sled key per entry,
//! one per idempotency key, no head witness) at start, and cutting an unacknowledged
//! tail after a failed write.

use std::collections::HashMap;

use super::witness::WitnessFile;
use super::{block, idem, read_error, write_error, Parts, FORMAT, FORMAT_KEY};
use crate::ledger::event::Seq;
use crate::ledger::log::{RawEntry, StoreError, StoreResult, Witness};

/// Format 1's entry value: `[1][hash (32)][body]`.
const V1_HEADER: usize = 1 + 32;
/// Blocks written per sled batch while upgrading.
const UPGRADE_BATCH: usize = 256;

/// Brings a store without a format marker to the current format: a new store gets the
/// marker; a format-1 store is rewritten (its old trees are dropped only once the new
/// ones, the witness and the marker are durable, so a crash midway redoes it).
pub(super) fn to_current(p: &Parts, witness: &WitnessFile, read_only: bool) -> StoreResult<()> {
    let names = p.db.tree_names();
    let has_v1 = names.iter().any(|n| n.as_ref() == b"entries");
    let old = p.db.open_tree("entries").map_err(read_error)?;
    if !has_v1 || old.is_empty() {
        if !read_only {
            p.meta.insert(FORMAT_KEY, &[FORMAT]).map_err(write_error)?;
            p.db.flush().map_err(write_error)?;
            p.file.sync_data().map_err(|e| StoreError::CannotWrite {
                reason: e.to_string(),
            })?;
        }
        if has_v1 {
            let _ = p.db.drop_tree("entries");
        }
        return Ok(());
    }
    tracing::info!(
        entries = old.len(),
        "upgrading the store from format 1 to format {FORMAT}"
    );
    p.log.clear().map_err(write_error)?;
    p.idem.clear().map_err(write_error)?;
    let mut cur: Vec<RawEntry> = Vec::new();
    let mut batch = sled::Batch::default();
    let mut in_batch = 0;
    let mut last = Witness::default();
    for kv in old.iter() {
        let (k, v) = kv.map_err(read_error)?;
        let seq = u64::from_be_bytes(k.as_ref().try_into().map_err(|_| StoreError::Damaged {
            seq: last.seq + 1,
            reason: "format-1 entry key is not a big-endian u64".into(),
        })?);
        if seq != last.seq + 1 || v.len() < V1_HEADER || v[0] != 1 {
            return Err(StoreError::Damaged {
                seq: last.seq + 1,
                reason: format!(
                    "format-1 store: the next stored entry is seq {seq} ({} bytes)",
                    v.len()
                ),
            });
        }
        let mut hash = [0u8; 32];
        hash.copy_from_slice(&v[1..V1_HEADER]);
        let body = bytes::Bytes::from_owner(v).slice(V1_HEADER..);
        if cur
            .first()
            .is_some_and(|c| block::block_of(c.seq) != block::block_of(seq))
        {
            batch.insert(
                &block::key(block::block_of(cur[0].seq))[..],
                block::encode(&cur),
            );
            cur.clear();
            in_batch += 1;
            if in_batch == UPGRADE_BATCH {
                p.log
                    .apply_batch(std::mem::take(&mut batch))
                    .map_err(write_error)?;
                in_batch = 0;
            }
        }
        cur.push(RawEntry { seq, hash, body });
        last = Witness { seq, hash };
    }
    if let Some(c) = cur.first() {
        batch.insert(&block::key(block::block_of(c.seq))[..], block::encode(&cur));
    }
    p.log.apply_batch(batch).map_err(write_error)?;

    let old_idem = p.db.open_tree("idempotency").map_err(read_error)?;
    let mut buckets: HashMap<[u8; 2], Vec<u8>> = HashMap::new();
    for kv in old_idem.iter() {
        let (k, v) = kv.map_err(read_error)?;
        let seq = u64::from_be_bytes(v.as_ref().try_into().map_err(|_| StoreError::Damaged {
            seq: 0,
            reason: "format-1 idempotency value is not a big-endian u64".into(),
        })?);
        let (b, digest) = idem::locate(&k);
        idem::insert(buckets.entry(b).or_default(), &digest, seq);
    }
    let mut batch = sled::Batch::default();
    for (b, v) in buckets {
        batch.insert(&b[..], v);
    }
    p.idem.apply_batch(batch).map_err(write_error)?;
    p.db.flush().map_err(write_error)?;
    p.file.sync_data().map_err(|e| StoreError::CannotWrite {
        reason: e.to_string(),
    })?;
    if !read_only {
        witness.reset(&last)?;
    }
    p.meta.insert(FORMAT_KEY, &[FORMAT]).map_err(write_error)?;
    p.db.flush().map_err(write_error)?;
    p.file.sync_data().map_err(|e| StoreError::CannotWrite {
        reason: e.to_string(),
    })?;
    p.db.drop_tree("entries").map_err(write_error)?;
    p.db.drop_tree("idempotency").map_err(write_error)?;
    p.db.flush().map_err(write_error)?;
    tracing::info!(head = last.seq, "store upgraded");
    Ok(())
}

/// Removes every entry after `seq` (and the idempotency keys naming them).
pub(super) fn cut_after(p: &Parts, seq: Seq) -> StoreResult<()> {
    let keep_block = if seq == 0 {
        None
    } else {
        Some(block::block_of(seq))
    };
    let from = keep_block.map_or(0, |b| b + 1);
    let mut batch = sled::Batch::default();
    for kv in p.log.range(block::key(from)..) {
        let (k, _) = kv.map_err(read_error)?;
        batch.remove(k);
    }
    if let Some(b) = keep_block {
        if let Some(v) = p.log.get(block::key(b)).map_err(read_error)? {
            let kept: Vec<RawEntry> = block::decode(b, bytes::Bytes::from_owner(v))?
                .into_iter()
                .filter(|e| e.seq <= seq)
                .collect();
            batch.insert(&block::key(b)[..], block::encode(&kept));
        }
    }
    p.log.apply_batch(batch).map_err(write_error)?;
    let mut batch = sled::Batch::default();
    for kv in p.idem.iter() {
        let (k, v) = kv.map_err(read_error)?;
        let kept = idem::retain_upto(&v, seq);
        if kept.len() != v.len() {
            batch.insert(k, kept);
        }
    }
    p.idem.apply_batch(batch).map_err(write_error)
}
