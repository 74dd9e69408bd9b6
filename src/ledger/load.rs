//! Deriving state from the stored log: at start (checked against the head witness,
//! from a proven checkpoint, refusing a log that is shorter than acknowledged, has a
//! gap, breaks the chain or does not decode), and at past positions.
//!
//! A checkpoint is only a cache of the log. One is used only when an entry after it
//! (`state_checkpointed`) records the SHA-256 of that very file, and the chain from the
//! checkpoint's own entry to the head verifies; otherwise it is ignored with a warning
//! and the state is rebuilt by replay. An edited checkpoint file never changes an
//! answer: to be believed it would need a matching entry in the chain.

use std::io::Read;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tracing::{info, warn};

use super::entry::chain_hash;
use super::event::{Event, Seq, UnixNanos};
use super::intervals::{Decided, Level, Replayer, Report};
use super::log::{LogStore, StoreError};
use super::{At, Entry, Error, State};

/// Entries read from the store per step of a replay.
const REPLAY_CHUNK: usize = 4096;

/// What start-up found, when the store is opened for forensics and damage is tolerated.
#[derive(Debug, Default)]
pub(super) struct Loaded {
    pub state: State,
    /// The seq of the checkpoint the state was built from (0: replayed from the start).
    pub from_checkpoint: Seq,
    /// The first problem found, when tolerated; the state is as of the entry before it.
    pub damage: Option<(Seq, String)>,
}

/// A reader that hashes what passes through it.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Checkpoint `seq` decoded, and the SHA-256 of its file.
fn read_checkpoint(store: &dyn LogStore, seq: Seq) -> Result<(State, String), String> {
    let cp = store.open_checkpoint(seq).map_err(|e| e.to_string())?;
    let mut r = Hashing {
        inner: cp.reader,
        hasher: Sha256::new(),
    };
    let st = State::from_checkpoint(&mut r)?;
    std::io::copy(&mut r, &mut std::io::sink()).map_err(|e| e.to_string())?;
    if st.seq != seq {
        return Err(format!(
            "the file is named for seq {seq} but holds seq {}",
            st.seq
        ));
    }
    match store.get(seq).map_err(|e| e.to_string())? {
        Some(e) if e.hash == st.hash => {}
        Some(_) => return Err("its hash is not the stored entry's hash".into()),
        None => return Err("the log holds no entry at its seq".into()),
    }
    Ok((st, hex::encode(r.hasher.finalize())))
}

/// Applies `(st.seq, to]` to `st`, checking density, decoding and the chain. Returns
/// the first problem as (seq, reason); the state is then as of the entry before it.
/// `on_entry` sees every applied entry.
fn replay(
    store: &dyn LogStore,
    st: &mut State,
    to: Seq,
    mut on_entry: impl FnMut(&Entry),
) -> Result<Option<(Seq, String)>, Error> {
    let (after, prev) = (st.seq, st.hash);
    verified(store, after, prev, to, |e| {
        st.apply(e.seq, e.time_ns, &e.actor, &e.event);
        st.commit_hash(e.hash);
        on_entry(&e);
    })
}

/// Reads `(after, to]` in order, checking density, decoding and the chain from
/// `prev` (the hash of entry `after`), and hands each entry to `f`. Returns the first
/// problem as (seq, reason); `f` has then seen every entry before it.
fn verified(
    store: &dyn LogStore,
    after: Seq,
    mut prev: [u8; 32],
    to: Seq,
    mut f: impl FnMut(Entry),
) -> Result<Option<(Seq, String)>, Error> {
    let mut seq = after;
    while seq < to {
        let chunk = match store.range(seq + 1, to, REPLAY_CHUNK) {
            Ok(c) => c,
            Err(StoreError::Damaged { seq: bad, reason }) => {
                return Ok(Some((bad.max(seq + 1), reason)))
            }
            Err(e) => return Err(e.into()),
        };
        if chunk.is_empty() {
            return Ok(Some((
                seq + 1,
                format!("missing (the log ends at seq {seq})"),
            )));
        }
        for raw in chunk {
            let expect = seq + 1;
            if raw.seq != expect {
                return Ok(Some((
                    expect,
                    format!("missing (next stored entry is {})", raw.seq),
                )));
            }
            if chain_hash(&prev, &raw.body) != raw.hash {
                return Ok(Some((
                    expect,
                    "stored hash does not match SHA-256(previous hash || body)".into(),
                )));
            }
            let e = match Entry::decode(raw) {
                Ok(e) => e,
                Err(Error::Corrupt { reason, .. }) => return Ok(Some((expect, reason))),
                Err(e) => return Err(e),
            };
            if e.prev_hash != prev {
                return Ok(Some((
                    expect,
                    "body's prev_hash is not the previous entry's hash".into(),
                )));
            }
            seq = e.seq;
            prev = e.hash;
            f(e);
        }
    }
    Ok(None)
}

/// Start-up: the state at the store's head, refusing (or, with `tolerate`, reporting)
/// a log that is not whole.
pub(super) fn at_start(store: &dyn LogStore, tolerate: bool) -> Result<Loaded, Error> {
    let mut problems: Vec<(Seq, String)> = Vec::new();
    let last = match store.last() {
        Ok(l) => l,
        Err(StoreError::Damaged { seq, reason }) if tolerate => {
            problems.push((seq, reason));
            None
        }
        Err(e) => return Err(refusal(e)),
    };
    let head = last.as_ref().map_or(0, |e| e.seq);
    match store.witness() {
        Ok(Some(w)) if w.seq > head => problems.push((
            head + 1,
            format!(
                "the log ends at seq {head} but its head witness records seq {} (hash {}): \
                 acknowledged entries are missing",
                w.seq,
                hex::encode(w.hash)
            ),
        )),
        Ok(Some(w)) if w.seq > 0 => match store.get(w.seq) {
            Ok(Some(e)) if e.hash == w.hash => {}
            Ok(_) => problems.push((
                w.seq,
                format!(
                    "the stored entry is not the one the head witness records (hash {})",
                    hex::encode(w.hash)
                ),
            )),
            Err(e) => problems.push((w.seq, e.to_string())),
        },
        Ok(Some(_)) => {}
        Ok(None) if head > 0 => problems.push((
            head,
            "the head witness is missing, so a lost tail could not be told apart".into(),
        )),
        Ok(None) => {}
        Err(e) => problems.push((0, e.to_string())),
    }
    let checkpoints = store.checkpoint_seqs()?;
    if let Some(beyond) = checkpoints.iter().find(|s| **s > head) {
        problems.push((
            head + 1,
            format!("a checkpoint exists for seq {beyond}, beyond the log's end at seq {head}"),
        ));
    }
    if let Some(first) = problems.first() {
        if !tolerate {
            return Err(Error::Refused {
                seq: first.0,
                reason: first.1.clone(),
            });
        }
    }

    for seq in checkpoints.into_iter().rev().filter(|s| *s <= head) {
        let (mut st, digest) = match read_checkpoint(store, seq) {
            Ok(c) => c,
            Err(e) => {
                warn!(seq, error = %e, "checkpoint not usable; trying an older one");
                continue;
            }
        };
        let mut proven = false;
        let bad = replay(store, &mut st, head, |e| {
            if let Event::StateCheckpointed { at_seq, sha256 } = &e.event {
                if *at_seq == seq && *sha256 == digest {
                    proven = true;
                }
            }
        })?;
        if let Some((seq, reason)) = bad {
            if !tolerate {
                return Err(Error::Refused { seq, reason });
            }
            // Forensics: replay from the start so the state stops at the damage.
            break;
        }
        if !proven {
            warn!(
                seq,
                "checkpoint is not recorded in the chain (edited, or written just before a \
                 crash); ignoring it"
            );
            continue;
        }
        info!(
            checkpoint = seq,
            head, "ledger state loaded from a proven checkpoint"
        );
        return Ok(Loaded {
            state: st,
            from_checkpoint: seq,
            damage: problems.into_iter().next(),
        });
    }
    let mut st = State::default();
    if let Some(bad) = replay(store, &mut st, head, |_| {})? {
        if !tolerate {
            return Err(Error::Refused {
                seq: bad.0,
                reason: bad.1,
            });
        }
        problems.insert(0, bad);
    }
    Ok(Loaded {
        state: st,
        from_checkpoint: 0,
        damage: problems.into_iter().min_by_key(|p| p.0),
    })
}

fn refusal(e: StoreError) -> Error {
    match e {
        StoreError::Damaged { seq, reason } => Error::Refused { seq, reason },
        e => e.into(),
    }
}

/// The state at `target`, from the newest checkpoint at or before it whose digest the
/// trusted state `current` records, plus the replay from there.
pub(super) fn at_seq(store: &dyn LogStore, current: &State, target: Seq) -> Result<State, Error> {
    let mut base = State::default();
    for seq in store
        .checkpoint_seqs()?
        .into_iter()
        .rev()
        .filter(|s| *s <= target)
    {
        let Some(recorded) = current.checkpoint_digest(seq) else {
            continue;
        };
        match read_checkpoint(store, seq) {
            Ok((st, digest)) if digest == recorded => {
                base = st;
                break;
            }
            Ok(_) => warn!(
                seq,
                "checkpoint does not match its recorded digest; ignoring it"
            ),
            Err(e) => warn!(seq, error = %e, "checkpoint not usable; trying an older one"),
        }
    }
    if let Some((seq, reason)) = replay(store, &mut base, target, |_| {})? {
        return Err(Error::Corrupt { seq, reason });
    }
    Ok(base)
}

pub(super) fn past_state(
    store: &dyn LogStore,
    current: &State,
    at: At,
) -> Result<(Arc<State>, UnixNanos), Error> {
    let (seq, t) = position(store, current, at)?;
    Ok((Arc::new(at_seq(store, current, seq)?), t))
}

/// The seq whose state holds at `at`, and the time to judge expiry at.
fn position(store: &dyn LogStore, current: &State, at: At) -> Result<(Seq, UnixNanos), Error> {
    Ok(match at {
        At::Seq(s) if s > current.seq => {
            return Err(Error::BeyondHead {
                seq: s,
                head: current.seq,
            })
        }
        At::Seq(s) if s == current.seq => (s, current.time_ns),
        At::Seq(s) => {
            let t = match store.get(s)? {
                Some(raw) => Entry::decode(raw)?.time_ns,
                None => 0,
            };
            (s, t)
        }
        At::Time(t) if t >= current.time_ns => (current.seq, t),
        At::Time(t) => (seq_at_time(store, t, current.seq)?, t),
    })
}

/// The access intervals of the window `[from, to]` (DESIGN §2), replayed from the
/// state at `from`. `decide` looks up what a decision label's decision gave.
pub(super) fn intervals(
    store: &dyn LogStore,
    current: &State,
    from: At,
    to: At,
    level: Level,
    user: Option<String>,
    decide: &mut dyn FnMut(&str) -> Option<Decided>,
) -> Result<Report, Error> {
    let (from_seq, from_ns) = position(store, current, from)?;
    let (to_seq, to_ns) = position(store, current, to)?;
    if to_seq < from_seq || to_ns < from_ns {
        return Err(Error::ReversedWindow {
            from: describe(from),
            to: describe(to),
        });
    }
    let start = at_seq(store, current, from_seq)?;
    let prev = start.hash;
    let mut r = Replayer::new(start, from_ns, level, user, decide);
    if let Some((seq, reason)) = verified(store, from_seq, prev, to_seq, |e| r.step(&e))? {
        return Err(Error::Corrupt { seq, reason });
    }
    Ok(r.finish(to_ns))
}

fn describe(at: At) -> String {
    match at {
        At::Seq(s) => format!("seq {s}"),
        At::Time(t) => super::time::format_time(t),
    }
}

/// The last seq whose time is at or before `t` (0 when none). Times are
/// non-decreasing with seq, so a binary search over the log finds it.
pub(super) fn seq_at_time(store: &dyn LogStore, t: UnixNanos, head: Seq) -> Result<Seq, Error> {
    let first = store.earliest()?.unwrap_or(1);
    let (mut lo, mut hi) = (first, head); // answer in [first-1, head]
    let mut best = first - 1;
    while lo <= hi {
        let mid = lo + (hi - lo) / 2;
        let time = match store.get(mid)? {
            Some(raw) => Entry::decode(raw)?.time_ns,
            None => break,
        };
        if time <= t {
            best = mid;
            lo = mid + 1;
        } else {
            if mid == 0 {
                break;
            }
            hi = mid - 1;
        }
    }
    Ok(best)
}
