//! Verification: recomputing the hash chain over a range of the stored log.

use super::entry::check_one;
use super::event::Seq;
use super::log::{self, LogStore};
use super::{Error, Ledger};

#[derive(Debug, Clone, PartialEq)]
pub struct VerifyReport {
    pub from_seq: Seq,
    pub to_seq: Seq,
    pub checked: u64,
    /// The first seq that fails, and why.
    pub first_bad: Option<(Seq, String)>,
    pub last_hash: [u8; 32],
}

impl Ledger {
    /// Recomputes the chain over `[from, to]` (0 = earliest / head).
    pub async fn verify(&self, from: Seq, to: Seq) -> Result<VerifyReport, Error> {
        let store = self.inner.store.clone();
        let head = *self.inner.head.borrow();
        tokio::task::spawn_blocking(move || verify_range(&*store, from, to, head))
            .await
            .map_err(Error::task("verify"))?
    }
}

/// Entries read from the store per step of a verify.
const VERIFY_CHUNK: usize = 4096;

pub(crate) fn verify_range(
    store: &dyn LogStore,
    from: Seq,
    to: Seq,
    head: Seq,
) -> Result<VerifyReport, Error> {
    let earliest = store.earliest()?.unwrap_or(1);
    let from = if from == 0 { earliest } else { from };
    let to = if to == 0 { head } else { to };
    if from > to && to != 0 {
        return Err(Error::ReversedRange { from, to });
    }
    if to > head {
        return Err(Error::BeyondHead { seq: to, head });
    }
    if from < earliest {
        return Err(Error::BeforeEarliest { from, earliest });
    }
    let mut prev: [u8; 32] = if from <= 1 {
        [0u8; 32]
    } else {
        match store.get(from - 1)? {
            Some(e) => e.hash,
            None => [0u8; 32],
        }
    };
    let mut report = VerifyReport {
        from_seq: from,
        to_seq: to,
        checked: 0,
        first_bad: None,
        last_hash: prev,
    };
    if head == 0 {
        return Ok(report);
    }
    let mut expect = from;
    while expect <= to {
        let chunk = match store.range(expect, to, VERIFY_CHUNK) {
            Ok(c) => c,
            Err(log::StoreError::Damaged { seq, reason }) => {
                report.first_bad = Some((seq.max(expect), reason));
                return Ok(report);
            }
            Err(e) => {
                report.first_bad = Some((expect, e.to_string()));
                return Ok(report);
            }
        };
        if chunk.is_empty() {
            break;
        }
        for raw in chunk {
            if raw.seq != expect {
                report.first_bad = Some((expect, format!("missing (next is {})", raw.seq)));
                return Ok(report);
            }
            let problem = check_one(&raw, &prev);
            report.checked += 1;
            if let Some(p) = problem {
                report.first_bad = Some((raw.seq, p));
                return Ok(report);
            }
            prev = raw.hash;
            report.last_hash = raw.hash;
            expect += 1;
        }
    }
    if expect <= to {
        report.first_bad = Some((expect, "missing".into()));
    } else if to == head {
        // The stored log may end before what was acknowledged. `head` was read when
        // the verify began; a write since then has put its entries in the log
        // before it moved the witness, so a witness past `head` is a loss only if
        // the log does not hold its seq.
        match store.witness() {
            Ok(Some(w)) if w.seq > head && !matches!(store.get(w.seq), Ok(Some(_))) => {
                report.first_bad = Some((
                    head + 1,
                    format!(
                        "missing: the log ends at seq {head} but its head witness records seq {}",
                        w.seq
                    ),
                ))
            }
            Err(e) => report.first_bad = Some((head + 1, e.to_string())),
            _ => {}
        }
    }
    Ok(report)
}

/// One line of an `audit export` file: what the verifier reads of it.
#[derive(serde::Deserialize)]
struct ExportLine {
    seq: Seq,
    prev_hash: String,
    hash: String,
    body: String,
    #[serde(default)]
    actor: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    time_unix_nanos: Option<i64>,
    #[serde(default)]
    request_id: Option<String>,
}

fn hash_of(field: &str, hex_text: &str) -> Result<[u8; 32], String> {
    let mut h = [0u8; 32];
    hex::decode_to_slice(hex_text, &mut h)
        .map_err(|e| format!("{field} is not a 64-digit hex SHA-256: {e}"))?;
    Ok(h)
}

/// Recomputes the chain of an `audit export` file without a server: seqs dense and
/// rising, each `hash = SHA-256(prev_hash || body)`, each body naming its own seq and
/// predecessor, and the line's readable fields (actor, kind, time, request_id) the
/// ones its hashed body holds. An export that starts after seq 1 is anchored on its
/// first `prev_hash`, which only the ledger itself can vouch for.
pub fn verify_export(
    lines: impl Iterator<Item = std::io::Result<String>>,
) -> std::io::Result<VerifyReport> {
    let mut report = VerifyReport {
        from_seq: 0,
        to_seq: 0,
        checked: 0,
        first_bad: None,
        last_hash: [0u8; 32],
    };
    let mut prev: Option<[u8; 32]> = None;
    let mut expect: Option<Seq> = None;
    for (n, line) in lines.enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let at = expect.unwrap_or(1);
        let fail = |report: &mut VerifyReport, seq: Seq, why: String| {
            report.first_bad = Some((seq, format!("line {}: {why}", n + 1)));
        };
        let rec: ExportLine = match serde_json::from_str(&line) {
            Ok(r) => r,
            Err(e) => {
                fail(&mut report, at, format!("not an export record: {e}"));
                return Ok(report);
            }
        };
        let seq = rec.seq;
        if let Some(x) = expect {
            if seq != x {
                fail(&mut report, x, format!("seq {seq} where {x} was expected"));
                return Ok(report);
            }
        }
        let (stated_prev, hash) = match hash_of("prev_hash", &rec.prev_hash)
            .and_then(|p| Ok((p, hash_of("hash", &rec.hash)?)))
        {
            Ok(h) => h,
            Err(why) => {
                fail(&mut report, seq, why);
                return Ok(report);
            }
        };
        let prev_hash = match prev {
            Some(p) => p,
            None if seq <= 1 => [0u8; 32],
            // The anchor: nothing in the file can check it.
            None => stated_prev,
        };
        if report.checked == 0 {
            report.from_seq = seq;
        }
        if stated_prev != prev_hash {
            fail(
                &mut report,
                seq,
                "prev_hash is not the previous entry's hash".into(),
            );
            return Ok(report);
        }
        let raw = log::RawEntry {
            seq,
            hash,
            body: bytes::Bytes::from(rec.body.into_bytes()),
        };
        report.checked += 1;
        if let Some(p) = check_one(&raw, &prev_hash) {
            fail(&mut report, seq, p);
            return Ok(report);
        }
        let e = match super::Entry::decode(raw) {
            Ok(e) => e,
            Err(err) => {
                fail(&mut report, seq, err.to_string());
                return Ok(report);
            }
        };
        let kind = e.event.kind();
        let mismatch = [
            ("actor", rec.actor.is_some_and(|a| a != e.actor)),
            ("kind", rec.kind.is_some_and(|k| k != kind.as_str())),
            (
                "time_unix_nanos",
                rec.time_unix_nanos.is_some_and(|t| t != e.time_ns),
            ),
            (
                "request_id",
                rec.request_id.is_some_and(|r| Some(r) != e.request_id),
            ),
        ]
        .into_iter()
        .find(|(_, differs)| *differs);
        if let Some((field, _)) = mismatch {
            fail(
                &mut report,
                seq,
                format!("the line's {field} is not the one its hashed body holds"),
            );
            return Ok(report);
        }
        report.to_seq = seq;
        report.last_hash = hash;
        prev = Some(hash);
        expect = Some(seq + 1);
    }
    Ok(report)
}
