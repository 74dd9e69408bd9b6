//! One stored entry: its decoding (whole, or just the header the audit stream sends),
//! the chain hash, and the check that an entry links to the one before it.

use sha2::{Digest, Sha256};

use super::event::{EntryBody, Event, EventKind, Seq, UnixNanos};
use super::log::RawEntry;
use super::stream::StreamFilter;
use super::Error;

/// One decoded entry, with its exact stored body.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub seq: Seq,
    pub time_ns: UnixNanos,
    pub actor: String,
    pub request_id: Option<String>,
    /// What the client asked for, with a request_id ([`EntryBody::request_digest`]).
    pub request_digest: Option<String>,
    pub event: Event,
    pub prev_hash: [u8; 32],
    pub hash: [u8; 32],
    /// The exact stored bytes; `hash = SHA-256(prev_hash || body)`.
    pub body: bytes::Bytes,
}

impl Entry {
    pub(super) fn decode(raw: RawEntry) -> Result<Entry, Error> {
        let body: EntryBody = serde_json::from_slice(&raw.body).map_err(|e| Error::Corrupt {
            seq: raw.seq,
            reason: format!("body does not decode: {e}"),
        })?;
        let mut prev_hash = [0u8; 32];
        hex::decode_to_slice(&body.prev_hash, &mut prev_hash).map_err(|e| Error::Corrupt {
            seq: raw.seq,
            reason: format!("prev_hash: {e}"),
        })?;
        Ok(Entry {
            seq: raw.seq,
            time_ns: body.time_ns,
            actor: body.actor,
            request_id: body.request_id,
            request_digest: body.request_digest,
            event: body.event,
            prev_hash,
            hash: raw.hash,
            body: raw.body,
        })
    }
}

/// An entry as the audit stream sends it: the header fields from its body, and the
/// exact body, without decoding the event.
#[derive(Debug, Clone, PartialEq)]
pub struct EntryRecord {
    pub seq: Seq,
    pub time_ns: UnixNanos,
    pub actor: String,
    pub request_id: Option<String>,
    pub kind: EventKind,
    pub prev_hash: [u8; 32],
    pub hash: [u8; 32],
    pub body: bytes::Bytes,
}

/// The fields of a stored body the stream needs; serde skips the rest unparsed.
#[derive(serde::Deserialize)]
struct RecordHead<'a> {
    time_ns: UnixNanos,
    #[serde(borrow)]
    actor: std::borrow::Cow<'a, str>,
    #[serde(default, borrow)]
    request_id: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    prev_hash: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    event: RecordKind<'a>,
}

#[derive(serde::Deserialize)]
struct RecordKind<'a> {
    #[serde(borrow)]
    kind: std::borrow::Cow<'a, str>,
    /// An alert's own kind.
    #[serde(default, borrow)]
    alert: Option<std::borrow::Cow<'a, str>>,
}

impl EntryRecord {
    /// The record of `raw` if it passes `filter`.
    pub(super) fn decode(
        raw: RawEntry,
        filter: &StreamFilter,
    ) -> Result<Option<EntryRecord>, Error> {
        if filter.subject.is_some() {
            // Whether an entry concerns a subject depends on the whole event.
            let e = Entry::decode(raw)?;
            return Ok(filter.matches(&e).then(|| EntryRecord::from(e)));
        }
        let corrupt = |reason: String| Error::Corrupt {
            seq: raw.seq,
            reason,
        };
        let head: RecordHead<'_> = serde_json::from_slice(&raw.body)
            .map_err(|e| corrupt(format!("body does not decode: {e}")))?;
        let kind: EventKind = head.event.kind.parse().map_err(corrupt)?;
        let alert = match head.event.alert.as_deref() {
            Some(a) => Some(a.parse().map_err(corrupt)?),
            None => None,
        };
        if !filter.wants_kind(kind, alert) {
            return Ok(None);
        }
        let mut prev_hash = [0u8; 32];
        hex::decode_to_slice(&*head.prev_hash, &mut prev_hash)
            .map_err(|e| corrupt(format!("prev_hash: {e}")))?;
        let (time_ns, actor, request_id) = (
            head.time_ns,
            head.actor.into_owned(),
            head.request_id.map(|r| r.into_owned()),
        );
        Ok(Some(EntryRecord {
            seq: raw.seq,
            time_ns,
            actor,
            request_id,
            kind,
            prev_hash,
            hash: raw.hash,
            body: raw.body,
        }))
    }
}

impl From<Entry> for EntryRecord {
    fn from(e: Entry) -> EntryRecord {
        EntryRecord {
            seq: e.seq,
            time_ns: e.time_ns,
            actor: e.actor,
            request_id: e.request_id,
            kind: e.event.kind(),
            prev_hash: e.prev_hash,
            hash: e.hash,
            body: e.body,
        }
    }
}

/// The chain's link: SHA-256(previous hash || body).
pub fn chain_hash(prev: &[u8; 32], body: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(body);
    h.finalize().into()
}

pub(super) fn idempotency_key(actor: &str, request_id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(actor.len() + 1 + request_id.len());
    k.extend_from_slice(actor.as_bytes());
    k.push(0);
    k.extend_from_slice(request_id.as_bytes());
    k
}

/// Why a stored entry does not fit the chain, if it does not.
pub(super) fn check_one(raw: &RawEntry, prev: &[u8; 32]) -> Option<String> {
    if chain_hash(prev, &raw.body) != raw.hash {
        return Some("stored hash does not match SHA-256(prev_hash || body)".into());
    }
    #[derive(serde::Deserialize)]
    struct Link<'a> {
        seq: Seq,
        #[serde(borrow)]
        prev_hash: &'a str,
    }
    match serde_json::from_slice::<Link<'_>>(&raw.body) {
        Ok(l) if l.seq != raw.seq => Some(format!("body says seq {}", l.seq)),
        Ok(l) if l.prev_hash != hex::encode(prev) => {
            Some("body's prev_hash is not the previous entry's hash".into())
        }
        Ok(_) => None,
        Err(e) => Some(format!("body does not decode: {e}")),
    }
}
