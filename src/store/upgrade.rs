//! Changes to the stored layout: the upgrade from format 1 (one sled key per entry,
//! one per idempotency key, no head witness) at start, and cutting an unacknowledged
//! tail after a failed write.

use std::collections::HashMap;

use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};

use super::witness::WitnessFile;
use super::{
    block, idem, read_error, sealed_value, write_error, Parts, FORMAT, FORMAT_KEY, SEALED_KEY,
};
use crate::ledger::event::Seq;
use crate::ledger::log::{RawEntry, StoreError, StoreResult, Witness};

/// Format 1's entry value: `[1][hash (32)][body]`.
const V1_HEADER: usize = 1 + 32;
/// Blocks written to blocks.log per write (and fsync) while upgrading.
const UPGRADE_BATCH: usize = 1024;

fn sync(p: &Parts) -> StoreResult<()> {
    p.db.flush().map_err(write_error)?;
    p.file.sync_data().map_err(|e| StoreError::CannotWrite {
        reason: e.to_string(),
    })
}

/// Brings a store without a format marker to the current format: a new store gets the
/// marker; a format-1 store is rewritten (its old trees are dropped only once the new
/// layout, the witness and the marker are durable, so a crash midway redoes it).
pub(super) fn to_current(p: &Parts, witness: &WitnessFile, read_only: bool) -> StoreResult<()> {
    let names = p.db.tree_names();
    let has_v1 = names.iter().any(|n| n.as_ref() == b"entries");
    let old = p.db.open_tree("entries").map_err(read_error)?;
    if !has_v1 || old.is_empty() {
        if !read_only {
            p.meta.insert(FORMAT_KEY, &[FORMAT]).map_err(write_error)?;
            sync(p)?;
        }
        if has_v1 {
            let _ = p.db.drop_tree("entries");
        }
        return Ok(());
    }
    if read_only {
        return Err(StoreError::Unusable {
            reason: "the store has format 1; start privledger once without --read-only to \
                     upgrade it (the upgrade keeps every entry and its hash)"
                .into(),
        });
    }
    tracing::info!(
        entries = old.len(),
        "upgrading the store from format 1 to format {FORMAT}"
    );
    // A crash in an earlier attempt leaves its blocks uncommitted: blocks.log was
    // opened with nothing committed, so they are overwritten.
    p.tail.clear().map_err(write_error)?;
    p.idem.clear().map_err(write_error)?;
    let mut cur: Vec<RawEntry> = Vec::new();
    let mut pending: Vec<Vec<u8>> = Vec::new();
    let mut last = Witness::default();
    let mut sealed = (0u64, 0u64);
    let mut flush = |pending: &mut Vec<Vec<u8>>| -> StoreResult<()> {
        if !pending.is_empty() {
            sealed = p.blocks.write(pending)?;
            p.blocks.committed(pending);
            pending.clear();
        }
        Ok(())
    };
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
        cur.push(RawEntry { seq, hash, body });
        last = Witness { seq, hash };
        if cur.len() as u64 == block::BLOCK {
            pending.push(block::encode(&cur));
            cur.clear();
            if pending.len() == UPGRADE_BATCH {
                flush(&mut pending)?;
            }
        }
    }
    flush(&mut pending)?;
    let mut waiting = sled::Batch::default();
    for e in &cur {
        waiting.insert(&e.seq.to_be_bytes()[..], block::encode_one(e));
    }
    p.tail.apply_batch(waiting).map_err(write_error)?;

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
    p.meta
        .insert(SEALED_KEY, &sealed_value(sealed.0, sealed.1)[..])
        .map_err(write_error)?;
    sync(p)?;
    witness.reset(&last)?;
    p.meta.insert(FORMAT_KEY, &[FORMAT]).map_err(write_error)?;
    sync(p)?;
    p.db.drop_tree("entries").map_err(write_error)?;
    p.db.drop_tree("idempotency").map_err(write_error)?;
    p.db.flush().map_err(write_error)?;
    tracing::info!(head = last.seq, "store upgraded");
    Ok(())
}

/// Removes every entry after `seq` (and the idempotency keys naming them), in one
/// transaction: the kept part of a sealed block that is cut waits again in `tail`, and
/// the committed end of blocks.log moves back (its bytes are cut at the next open).
pub(super) fn cut_after(p: &Parts, seq: Seq) -> StoreResult<()> {
    let n = p.blocks.blocks();
    let keep_blocks = (seq / block::BLOCK).min(n);
    let mut rewait: Vec<([u8; 8], Vec<u8>)> = Vec::new();
    if keep_blocks < n {
        for e in p.block(keep_blocks)?.unwrap_or_default() {
            if e.seq <= seq {
                rewait.push((e.seq.to_be_bytes(), block::encode_one(&e)));
            }
        }
    }
    let mut drop_waiting = Vec::new();
    for kv in p.tail.range((seq + 1).to_be_bytes()..) {
        drop_waiting.push(kv.map_err(read_error)?.0);
    }
    let sealed = sealed_value(keep_blocks, p.blocks.end_of(keep_blocks));
    (&p.tail, &p.meta)
        .transaction(|(tail, meta)| {
            meta.insert(SEALED_KEY, &sealed[..])?;
            for k in &drop_waiting {
                tail.remove(k)?;
            }
            for (k, v) in &rewait {
                tail.insert(&k[..], v.as_slice())?;
            }
            Ok::<(), ConflictableTransactionError<()>>(())
        })
        .map_err(|e| match e {
            TransactionError::Storage(e) => write_error(e),
            TransactionError::Abort(()) => StoreError::CannotWrite {
                reason: "transaction aborted".into(),
            },
        })?;
    p.blocks.cut(keep_blocks);
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
