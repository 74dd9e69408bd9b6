//! What cluster mode keeps in etcd, and how: one prefix per cluster, the log as
//! write-once batch keys, the head, the writer's election; values in protobuf.
//!
//! ```text
//! /privledger/<cluster>/log/<first seq, 20 digits>   one group-commit batch (Batch)
//! /privledger/<cluster>/head                         the head after the last batch (Head)
//! /privledger/<cluster>/writer/<lease>               election candidates (WriterInfo)
//! /privledger/<cluster>/earliest                     first seq still under log/ (Seq)
//! /privledger/<cluster>/archive/<first seq>          a sealed segment's anchor (Anchor)
//! ```

use bytes::Bytes;
use prost::Message;

use super::client::prefix_end;
use crate::ledger::chain_hash;
use crate::ledger::event::Seq;
use crate::ledger::log::{IdempotencyKey, RawEntry, Witness};

/// The keys of one cluster.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(cluster: &str) -> Keys {
        Keys {
            prefix: format!("/privledger/{cluster}/"),
        }
    }

    /// The batch whose first entry is `seq`: zero-padded so that key order is seq order.
    pub fn batch(&self, first_seq: Seq) -> Vec<u8> {
        format!("{}log/{first_seq:020}", self.prefix).into_bytes()
    }

    /// Every batch key: `[start, end)`.
    pub fn log_range(&self) -> (Vec<u8>, Vec<u8>) {
        let start = format!("{}log/", self.prefix).into_bytes();
        let end = prefix_end(&start);
        (start, end)
    }

    pub fn head(&self) -> Vec<u8> {
        format!("{}head", self.prefix).into_bytes()
    }

    /// The first seq still held under `log/` (absent: 1).
    pub fn earliest(&self) -> Vec<u8> {
        format!("{}earliest", self.prefix).into_bytes()
    }

    /// The anchor of the archived segment starting at `first_seq`.
    pub fn anchor(&self, first_seq: Seq) -> Vec<u8> {
        format!("{}archive/{first_seq:020}", self.prefix).into_bytes()
    }

    /// Every anchor key: `[start, end)`.
    pub fn anchor_range(&self) -> (Vec<u8>, Vec<u8>) {
        let start = format!("{}archive/", self.prefix).into_bytes();
        let end = prefix_end(&start);
        (start, end)
    }

    /// The election's name (etcd's election API keys candidates under it).
    pub fn election(&self) -> Vec<u8> {
        format!("{}writer", self.prefix).into_bytes()
    }
}

/// One group-commit batch as stored under its `log/` key.
#[derive(Clone, PartialEq, Message)]
pub struct Batch {
    #[prost(uint64, tag = "1")]
    pub first_seq: u64,
    /// The hash of the entry before the first (zero for the first batch).
    #[prost(bytes = "vec", tag = "2")]
    pub prev_hash: Vec<u8>,
    /// The exact bodies the hashes cover, in seq order.
    #[prost(bytes = "bytes", repeated, tag = "3")]
    pub bodies: Vec<Bytes>,
    /// The last entry's hash: what the chain over the bodies must end at.
    #[prost(bytes = "vec", tag = "4")]
    pub last_hash: Vec<u8>,
    /// Idempotency keys the batch's requests carried: a retry through any node, after
    /// a failover, finds the first result.
    #[prost(message, repeated, tag = "5")]
    pub idempotency: Vec<Idempotency>,
    /// The node that wrote it.
    #[prost(string, tag = "6")]
    pub writer: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct Idempotency {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    #[prost(uint64, tag = "2")]
    pub seq: u64,
    #[prost(int64, tag = "3")]
    pub time_ns: i64,
}

/// The head key's value.
#[derive(Clone, PartialEq, Message)]
pub struct Head {
    #[prost(uint64, tag = "1")]
    pub seq: u64,
    #[prost(bytes = "vec", tag = "2")]
    pub hash: Vec<u8>,
}

/// An election candidate's value: who it is and where it takes forwarded writes.
#[derive(Clone, PartialEq, Eq, Message)]
pub struct WriterInfo {
    #[prost(string, tag = "1")]
    pub node_id: String,
    #[prost(string, tag = "2")]
    pub url: String,
}

/// A sealed segment: its batches left etcd for a file in the archive, and this is
/// what proves the file (its hash) and ties it into the chain.
#[derive(Clone, PartialEq, Eq, Message)]
pub struct Anchor {
    #[prost(uint64, tag = "1")]
    pub first_seq: u64,
    #[prost(uint64, tag = "2")]
    pub last_seq: u64,
    /// The hash of the entry before the first, and of the last.
    #[prost(bytes = "vec", tag = "3")]
    pub prev_hash: Vec<u8>,
    #[prost(bytes = "vec", tag = "4")]
    pub last_hash: Vec<u8>,
    /// The segment's file name in the archive directory.
    #[prost(string, tag = "5")]
    pub file: String,
    /// SHA-256 of the whole file.
    #[prost(bytes = "vec", tag = "6")]
    pub sha256: Vec<u8>,
}

/// A seq as a key's value (`earliest`).
#[derive(Clone, PartialEq, Eq, Message)]
pub struct SeqValue {
    #[prost(uint64, tag = "1")]
    pub seq: u64,
}

/// Why a stored value is not what this version writes.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("{what} does not decode: {reason}")]
    Undecodable { what: &'static str, reason: String },
    #[error("batch at seq {seq}: {reason}")]
    BadBatch { seq: Seq, reason: &'static str },
}

impl Batch {
    pub fn new(
        prev: Witness,
        entries: &[RawEntry],
        idempotency: &[IdempotencyKey],
        writer: &str,
    ) -> Batch {
        Batch {
            first_seq: prev.seq + 1,
            prev_hash: prev.hash.to_vec(),
            bodies: entries.iter().map(|e| e.body.clone()).collect(),
            last_hash: entries.last().map_or(prev.hash, |e| e.hash).to_vec(),
            idempotency: idempotency
                .iter()
                .map(|k| Idempotency {
                    key: k.key.clone(),
                    seq: k.seq,
                    time_ns: k.time_ns,
                })
                .collect(),
            writer: writer.to_string(),
        }
    }

    /// A batch as stored, refused unless its seqs make sense: at least one entry, a
    /// first seq of at least 1, and a last seq that fits a `u64` — so that
    /// [`Batch::last_seq`] and the seqs of [`Batch::entries`] are sound for whatever
    /// the key held.
    pub fn decode_value(value: &[u8]) -> Result<Batch, DecodeError> {
        let b = Batch::decode(value).map_err(|e| DecodeError::Undecodable {
            what: "a batch",
            reason: e.to_string(),
        })?;
        let bad = |reason| DecodeError::BadBatch {
            seq: b.first_seq,
            reason,
        };
        if b.bodies.is_empty() || b.first_seq == 0 {
            return Err(bad("no entry, or a first seq of 0"));
        }
        if b.first_seq.checked_add(b.bodies.len() as u64 - 1).is_none() {
            return Err(bad("its seqs run past the largest seq"));
        }
        Ok(b)
    }

    /// The seq of the batch's last entry (its first for a batch with none, which
    /// [`Batch::decode_value`] never returns).
    pub fn last_seq(&self) -> Seq {
        self.first_seq
            .saturating_add((self.bodies.len() as u64).saturating_sub(1))
    }

    /// The entries with their hashes recomputed over the chain from `prev_hash`; the
    /// chain must end at `last_hash`. (That each body names its seq and the previous
    /// hash, the ledger checks as it applies them.)
    pub fn entries(&self) -> Result<(Vec<RawEntry>, Vec<IdempotencyKey>), DecodeError> {
        let bad = |reason| DecodeError::BadBatch {
            seq: self.first_seq,
            reason,
        };
        if self.bodies.is_empty() || self.first_seq == 0 {
            return Err(bad("no entry, or a first seq of 0"));
        }
        if self.last_seq() - self.first_seq != self.bodies.len() as u64 - 1 {
            return Err(bad("its seqs run past the largest seq"));
        }
        let mut prev: [u8; 32] = self
            .prev_hash
            .as_slice()
            .try_into()
            .map_err(|_| bad("previous hash is not 32 bytes"))?;
        let mut raws = Vec::with_capacity(self.bodies.len());
        for (i, body) in self.bodies.iter().enumerate() {
            let hash = chain_hash(&prev, body);
            raws.push(RawEntry {
                seq: self.first_seq + i as u64,
                hash,
                body: body.clone(),
            });
            prev = hash;
        }
        if prev.as_slice() != self.last_hash.as_slice() {
            return Err(bad(
                "the chain over its bodies does not end at its last hash",
            ));
        }
        let idem = self
            .idempotency
            .iter()
            .map(|k| IdempotencyKey {
                key: k.key.clone(),
                seq: k.seq,
                time_ns: k.time_ns,
            })
            .collect();
        Ok((raws, idem))
    }
}

impl Head {
    pub fn of(w: Witness) -> Head {
        Head {
            seq: w.seq,
            hash: w.hash.to_vec(),
        }
    }

    pub fn decode_value(value: &[u8]) -> Result<Head, DecodeError> {
        Head::decode(value).map_err(|e| DecodeError::Undecodable {
            what: "the head",
            reason: e.to_string(),
        })
    }
}

impl Anchor {
    pub fn decode_value(value: &[u8]) -> Result<Anchor, DecodeError> {
        Anchor::decode(value).map_err(|e| DecodeError::Undecodable {
            what: "an archive anchor",
            reason: e.to_string(),
        })
    }
}

impl SeqValue {
    pub fn decode_value(value: &[u8]) -> Result<u64, DecodeError> {
        SeqValue::decode(value)
            .map(|v| v.seq)
            .map_err(|e| DecodeError::Undecodable {
                what: "the earliest seq",
                reason: e.to_string(),
            })
    }
}

impl WriterInfo {
    pub fn decode_value(value: &[u8]) -> Result<WriterInfo, DecodeError> {
        WriterInfo::decode(value).map_err(|e| DecodeError::Undecodable {
            what: "the writer's election value",
            reason: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: usize) -> Vec<RawEntry> {
        let mut prev = [0u8; 32];
        (1..=n as u64)
            .map(|seq| {
                let body = Bytes::from(format!("{{\"seq\":{seq}}}"));
                let hash = chain_hash(&prev, &body);
                prev = hash;
                RawEntry { seq, hash, body }
            })
            .collect()
    }

    #[test]
    fn a_batch_round_trips_and_its_chain_is_recomputed() {
        let all = chain(5);
        let prev = Witness {
            seq: 2,
            hash: all[1].hash,
        };
        let b = Batch::new(prev, &all[2..], &[], "n1");
        let back = Batch::decode_value(&b.encode_to_vec()).unwrap();
        assert_eq!(back.last_seq(), 5);
        let (raws, _) = back.entries().unwrap();
        assert_eq!(raws, all[2..].to_vec());
    }

    #[test]
    fn a_batch_whose_bodies_or_links_were_changed_is_refused() {
        let all = chain(3);
        let good = Batch::new(Witness::default(), &all, &[], "n1");
        let mut body = good.clone();
        body.bodies[1] = Bytes::from_static(b"{\"seq\":2,\"forged\":true}");
        let mut prev = good.clone();
        prev.prev_hash = vec![1; 32];
        let mut short = good.clone();
        short.prev_hash = vec![0; 31];
        let mut empty = good.clone();
        empty.bodies.clear();
        for b in [body, prev, short, empty] {
            assert!(b.entries().is_err(), "{b:?}");
        }
    }

    #[test]
    fn a_stored_batch_whose_seqs_make_no_sense_is_refused_at_decoding() {
        let all = chain(3);
        let good = Batch::new(Witness::default(), &all, &[], "n1");
        let mut empty = good.clone();
        empty.bodies.clear();
        let mut zero = good.clone();
        zero.first_seq = 0;
        let mut past = good.clone();
        past.first_seq = u64::MAX - 1;
        for b in [empty, zero, past] {
            let err = Batch::decode_value(&b.encode_to_vec()).unwrap_err();
            assert!(matches!(err, DecodeError::BadBatch { .. }), "{err}");
        }
        let mut last = good.clone();
        last.first_seq = u64::MAX - 2;
        let back = Batch::decode_value(&last.encode_to_vec()).unwrap();
        assert_eq!(back.last_seq(), u64::MAX);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 1024, ..Default::default() })]

        /// Whatever bytes a log key holds (etcd is trusted, but a value written by
        /// another version, a bad restore or a hand edit is not), decoding answers or
        /// refuses, never panics, and an accepted batch yields dense entries from its
        /// first seq to its last, chained from its previous hash.
        #[test]
        fn any_stored_value_decodes_or_is_refused(
            junk in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256),
            flips in proptest::collection::vec((proptest::prelude::any::<usize>(), proptest::prelude::any::<u8>()), 0..6),
            cut in proptest::option::of(proptest::prelude::any::<usize>()),
            first in proptest::prelude::any::<u64>(),
        ) {
            let all = chain(4);
            let mut seed = Batch::new(Witness::default(), &all, &[], "n1");
            seed.first_seq = first;
            let mut bytes = seed.encode_to_vec();
            for (at, x) in &flips {
                let i = at % bytes.len();
                bytes[i] ^= x;
            }
            if let Some(c) = cut {
                bytes.truncate(c % (bytes.len() + 1));
            }
            for value in [&bytes, &junk] {
                let _ = Head::decode_value(value);
                let _ = Anchor::decode_value(value);
                let _ = SeqValue::decode_value(value);
                let _ = WriterInfo::decode_value(value);
                let Ok(b) = Batch::decode_value(value) else { continue };
                proptest::prop_assert!(b.first_seq >= 1 && b.last_seq() >= b.first_seq);
                if let Ok((raws, _)) = b.entries() {
                    proptest::prop_assert_eq!(raws.len(), b.bodies.len());
                    proptest::prop_assert_eq!(raws[0].seq, b.first_seq);
                    proptest::prop_assert_eq!(raws[raws.len() - 1].seq, b.last_seq());
                    proptest::prop_assert_eq!(chain_hash(b.prev_hash.as_slice().try_into().unwrap(), &raws[0].body), raws[0].hash);
                    proptest::prop_assert_eq!(raws[raws.len() - 1].hash.as_slice(), b.last_hash.as_slice());
                }
            }
        }
    }

    #[test]
    fn batch_keys_sort_as_their_seqs() {
        let k = Keys::new("c");
        assert!(k.batch(9) < k.batch(10));
        assert!(k.batch(99_999) < k.batch(100_000));
        let (start, end) = k.log_range();
        assert!(k.batch(1) > start && k.batch(u64::MAX) < end);
        assert!(k.head() >= end || k.head() < start);
    }
}
