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

fn verify_range(
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
        // The stored log may end before what was acknowledged.
        match store.witness() {
            Ok(Some(w)) if w.seq > head => {
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
