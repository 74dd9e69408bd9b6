//! Growth: sealing the oldest batches out of etcd into a segment file of the archive
//! (a directory every node can read), anchored by its hash in etcd; and bootstrapping
//! a node whose head is before etcd's earliest batch from the archive, verifying the
//! chain as it goes.
//!
//! A segment is JSON lines in the `audit export` format (`seq`, `prev_hash`, `hash`,
//! `body`), so `privledger verify --file` checks it offline. Sealing is one fenced etcd
//! transaction: only the writer seals, and the anchor, the new earliest seq and the
//! removal of the sealed batch keys happen together.

use std::io::Write;
use std::path::{Path, PathBuf};

use prost::Message;
use sha2::{Digest, Sha256};
use tracing::info;

use super::client::{delete_range, equal, put, Etcd, EtcdError};
use super::keys::{Anchor, Batch, Keys, SeqValue};
use super::pb::etcdserverpb as rpc;
use crate::ledger::chain_hash;
use crate::ledger::event::Seq;
use crate::ledger::log::{IdempotencyKey, RawEntry};

/// Batches read per range while sealing.
const PAGE: i64 = 256;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error(transparent)]
    Etcd(#[from] EtcdError),
    #[error("the archive {path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("segment {file} does not match its anchor: {reason}")]
    Mismatch { file: String, reason: String },
    #[error(
        "this node's head (seq {head}) is before the earliest seq etcd holds ({earliest}): it \
         needs the archive (--archive-dir) to catch up"
    )]
    NoArchive { head: Seq, earliest: Seq },
    #[error("the cluster's log at {0} does not decode")]
    Undecodable(String),
    #[error("fenced: this node is no longer the writer, nothing was sealed")]
    Fenced,
}

/// The first seq etcd still holds under `log/`.
pub async fn earliest(etcd: &Etcd, keys: &Keys) -> Result<Seq, ArchiveError> {
    let (kv, _) = etcd.get(&keys.earliest()).await?;
    match kv {
        None => Ok(1),
        Some(kv) => SeqValue::decode_value(&kv.value)
            .map_err(|e| ArchiveError::Undecodable(format!("earliest: {e}"))),
    }
}

/// The segment's bytes: one export line per entry, with the idempotency keys that
/// name it (a retry of a request older than the archive is still recognized on a node
/// that bootstraps from it).
fn segment(entries: &[RawEntry], idem: &[IdempotencyKey], mut prev: [u8; 32]) -> Vec<u8> {
    let mut keys: std::collections::HashMap<Seq, Vec<&IdempotencyKey>> = Default::default();
    for k in idem {
        keys.entry(k.seq).or_default().push(k);
    }
    let mut out = Vec::new();
    for e in entries {
        let mut line = serde_json::json!({
            "seq": e.seq,
            "prev_hash": hex::encode(prev),
            "hash": hex::encode(e.hash),
            "body": String::from_utf8_lossy(&e.body),
        });
        if let Some(ks) = keys.get(&e.seq) {
            line["idempotency"] = ks
                .iter()
                .map(|k| serde_json::json!({"key": hex::encode(&k.key), "time_ns": k.time_ns}))
                .collect();
        }
        let _ = serde_json::to_writer(&mut out, &line);
        out.push(b'\n');
        prev = e.hash;
    }
    out
}

#[derive(serde::Deserialize)]
struct Line {
    seq: Seq,
    hash: String,
    body: String,
    #[serde(default)]
    idempotency: Vec<LineKey>,
}

#[derive(serde::Deserialize)]
struct LineKey {
    key: String,
    time_ns: i64,
}

/// A segment's entries and the idempotency keys that name them.
pub struct Segment {
    pub entries: Vec<RawEntry>,
    pub idempotency: Vec<IdempotencyKey>,
}

/// The entries of a segment file, checked against its anchor: the file's hash, dense
/// seqs from the anchor's first, each hash the chain's, ending at the anchor's last.
pub fn read_segment(dir: &Path, anchor: &Anchor) -> Result<Segment, ArchiveError> {
    let mismatch = |reason: &str| ArchiveError::Mismatch {
        file: anchor.file.clone(),
        reason: reason.into(),
    };
    // The anchor names a file of the archive itself: never a path out of it.
    let plain = Path::new(&anchor.file).components().collect::<Vec<_>>();
    if !matches!(plain.as_slice(), [std::path::Component::Normal(_)]) {
        return Err(mismatch("the anchor's file is not a plain file name"));
    }
    if anchor.first_seq == 0 || anchor.last_seq < anchor.first_seq || anchor.last_seq == Seq::MAX {
        return Err(mismatch("the anchor's seqs make no range"));
    }
    let path = dir.join(&anchor.file);
    let bytes = std::fs::read(&path).map_err(|e| ArchiveError::File {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    let bad = |reason: String| ArchiveError::Mismatch {
        file: anchor.file.clone(),
        reason,
    };
    if Sha256::digest(&bytes).as_slice() != anchor.sha256.as_slice() {
        return Err(bad("its SHA-256 is not the anchor's".into()));
    }
    let mut prev: [u8; 32] = anchor
        .prev_hash
        .as_slice()
        .try_into()
        .map_err(|_| bad("the anchor's previous hash is not 32 bytes".into()))?;
    let mut out = Vec::new();
    let mut idem = Vec::new();
    let mut seq = anchor.first_seq;
    for (n, line) in bytes.split(|b| *b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        if seq > anchor.last_seq {
            return Err(bad(format!("line {}: past the anchor's last seq", n + 1)));
        }
        let l: Line =
            serde_json::from_slice(line).map_err(|e| bad(format!("line {}: {e}", n + 1)))?;
        let body = bytes::Bytes::from(l.body.into_bytes());
        let hash = chain_hash(&prev, &body);
        if l.seq != seq || hex::encode(hash) != l.hash {
            return Err(bad(format!("line {}: seq {} does not chain", n + 1, l.seq)));
        }
        for k in l.idempotency {
            let key = hex::decode(&k.key)
                .map_err(|e| bad(format!("line {}: an idempotency key: {e}", n + 1)))?;
            idem.push(IdempotencyKey {
                key,
                seq,
                time_ns: k.time_ns,
            });
        }
        out.push(RawEntry { seq, hash, body });
        prev = hash;
        seq += 1;
    }
    if seq != anchor.last_seq + 1 || prev.as_slice() != anchor.last_hash.as_slice() {
        return Err(bad("it does not end at the anchor's last entry".into()));
    }
    Ok(Segment {
        entries: out,
        idempotency: idem,
    })
}

/// Seals every batch wholly at or before `upto` that etcd still holds into one
/// segment in `dir`, fenced on the writer's election key (`key`, `rev`). Returns the
/// anchor, or `None` when nothing is old enough.
pub async fn seal(
    etcd: &Etcd,
    keys: &Keys,
    dir: &Path,
    upto: Seq,
    key: &[u8],
    rev: i64,
) -> Result<Option<Anchor>, ArchiveError> {
    let from = earliest(etcd, keys).await?;
    if upto < from {
        return Ok(None);
    }
    let (_, log_end) = keys.log_range();
    let mut entries: Vec<RawEntry> = Vec::new();
    let mut idem: Vec<IdempotencyKey> = Vec::new();
    let mut prev_hash: Option<Vec<u8>> = None;
    let mut next = keys.batch(from);
    'pages: loop {
        let r = etcd.range(&next, &log_end, PAGE).await?;
        for kv in &r.kvs {
            let b = Batch::decode_value(&kv.value)
                .map_err(|e| ArchiveError::Undecodable(e.to_string()))?;
            if b.last_seq() > upto {
                break 'pages;
            }
            let (raws, batch_keys) = b
                .entries()
                .map_err(|e| ArchiveError::Undecodable(e.to_string()))?;
            prev_hash.get_or_insert_with(|| b.prev_hash.clone());
            entries.extend(raws);
            idem.extend(batch_keys);
            next = keys.batch(b.last_seq() + 1);
        }
        if !r.more {
            break;
        }
    }
    let (Some(first), Some(last), Some(prev_hash)) = (entries.first(), entries.last(), prev_hash)
    else {
        return Ok(None);
    };
    let (first_seq, last_seq, last_hash) = (first.seq, last.seq, last.hash);
    let prev: [u8; 32] = prev_hash.as_slice().try_into().unwrap_or([0; 32]);
    let bytes = segment(&entries, &idem, prev);
    let file = format!("segment-{first_seq:020}-{last_seq:020}.jsonl");
    write_durably(dir, &file, &bytes)?;
    let anchor = Anchor {
        first_seq,
        last_seq,
        prev_hash,
        last_hash: last_hash.to_vec(),
        file,
        sha256: Sha256::digest(&bytes).to_vec(),
    };
    use rpc::compare::{CompareTarget, TargetUnion};
    let earliest_is = if from == 1 {
        equal(
            keys.earliest(),
            CompareTarget::Version,
            TargetUnion::Version(0),
        )
    } else {
        equal(
            keys.earliest(),
            CompareTarget::Value,
            TargetUnion::Value(SeqValue { seq: from }.encode_to_vec()),
        )
    };
    let txn = rpc::TxnRequest {
        compare: vec![
            equal(
                key.to_vec(),
                CompareTarget::Create,
                TargetUnion::CreateRevision(rev),
            ),
            earliest_is,
        ],
        success: vec![
            put(keys.anchor(first_seq), anchor.encode_to_vec()),
            put(
                keys.earliest(),
                SeqValue { seq: last_seq + 1 }.encode_to_vec(),
            ),
            delete_range(keys.batch(first_seq), keys.batch(last_seq + 1)),
        ],
        failure: vec![],
    };
    if !etcd.txn(txn).await?.succeeded {
        return Err(ArchiveError::Fenced);
    }
    info!(
        first = first_seq,
        last = last_seq,
        file = %anchor.file,
        "sealed the oldest batches into the archive; etcd now holds the log from seq {}",
        last_seq + 1
    );
    Ok(Some(anchor))
}

/// Writes `name` in `dir` whole or not at all: a temporary file, fsynced, renamed,
/// the directory fsynced.
fn write_durably(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), ArchiveError> {
    let err = |path: &Path, e: std::io::Error| ArchiveError::File {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    std::fs::create_dir_all(dir).map_err(|e| err(dir, e))?;
    let tmp = dir.join(format!(".{name}.tmp"));
    let path = dir.join(name);
    let mut f = std::fs::File::create(&tmp).map_err(|e| err(&tmp, e))?;
    f.write_all(bytes).map_err(|e| err(&tmp, e))?;
    f.sync_all().map_err(|e| err(&tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| err(&path, e))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| err(dir, e))
}

/// The anchors etcd holds, oldest first.
pub async fn anchors(etcd: &Etcd, keys: &Keys) -> Result<Vec<Anchor>, ArchiveError> {
    let (start, end) = keys.anchor_range();
    let r = etcd.range(&start, &end, 0).await?;
    r.kvs
        .iter()
        .map(|kv| {
            Anchor::decode_value(&kv.value).map_err(|e| ArchiveError::Undecodable(e.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A segment of `n` entries after seq 0 written into `dir`, and its anchor.
    fn sealed(dir: &Path, n: u64) -> (Anchor, Vec<u8>) {
        let mut prev = [0u8; 32];
        let entries: Vec<RawEntry> = (1..=n)
            .map(|seq| {
                let body = bytes::Bytes::from(format!("{{\"seq\":{seq}}}"));
                let hash = chain_hash(&prev, &body);
                prev = hash;
                RawEntry { seq, hash, body }
            })
            .collect();
        let bytes = segment(&entries, &[], [0u8; 32]);
        let file = "segment-1.jsonl".to_string();
        std::fs::write(dir.join(&file), &bytes).unwrap();
        let anchor = Anchor {
            first_seq: 1,
            last_seq: n,
            prev_hash: vec![0; 32],
            last_hash: prev.to_vec(),
            file,
            sha256: Sha256::digest(&bytes).to_vec(),
        };
        (anchor, bytes)
    }

    #[test]
    fn a_segment_reads_back_against_its_anchor() {
        let dir = tempfile::tempdir().unwrap();
        let (anchor, _) = sealed(dir.path(), 5);
        let s = read_segment(dir.path(), &anchor).unwrap();
        let seqs: Vec<Seq> = s.entries.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
    }

    #[test]
    fn an_anchor_naming_a_path_out_of_the_archive_is_refused_before_any_read() {
        let root = tempfile::tempdir().unwrap();
        let archive = root.path().join("archive");
        std::fs::create_dir(&archive).unwrap();
        // A valid segment just outside the archive: reading it would even match.
        let (anchor, _) = sealed(root.path(), 3);
        let outside = root.path().join(&anchor.file);
        for file in [
            format!("../{}", anchor.file),
            outside.display().to_string(),
            format!("./{}", anchor.file),
            "sub/segment.jsonl".into(),
            "..".into(),
            String::new(),
        ] {
            let a = Anchor {
                file: file.clone(),
                ..anchor.clone()
            };
            match read_segment(&archive, &a) {
                Err(ArchiveError::Mismatch { reason, .. }) => {
                    assert!(reason.contains("plain file name"), "{file}: {reason}")
                }
                other => panic!("{file}: {:?}", other.map(|s| s.entries.len())),
            }
        }
    }

    #[test]
    fn an_anchor_whose_range_or_length_is_not_the_files_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (anchor, _) = sealed(dir.path(), 4);
        let cases = [
            Anchor {
                first_seq: 0,
                ..anchor.clone()
            },
            Anchor {
                last_seq: 0,
                ..anchor.clone()
            },
            Anchor {
                first_seq: 3,
                last_seq: 2,
                ..anchor.clone()
            },
            Anchor {
                last_seq: Seq::MAX,
                ..anchor.clone()
            },
            // Fewer entries named than the file holds, and more.
            Anchor {
                last_seq: 3,
                ..anchor.clone()
            },
            Anchor {
                last_seq: 5,
                ..anchor.clone()
            },
            Anchor {
                first_seq: Seq::MAX - 1,
                last_seq: Seq::MAX - 1,
                ..anchor.clone()
            },
        ];
        for a in cases {
            let r = read_segment(dir.path(), &a);
            assert!(
                matches!(r, Err(ArchiveError::Mismatch { .. })),
                "{}..={}: {:?}",
                a.first_seq,
                a.last_seq,
                r.map(|s| s.entries.len())
            );
        }
    }
}
