//! The audit stream: which entries a reader wants ([`StreamFilter`]) and the
//! producer that reads them from the store in chunks, history then live.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::entry::{Entry, EntryRecord};
use super::event::{AlertKind, EventKind, KindFilter, Seq};
use super::log::RawEntry;
use super::{names, Error, Ledger};

/// Which entries a stream delivers.
#[derive(Debug, Clone, Default)]
pub struct StreamFilter {
    /// Only entries of these kinds (an alert kind selects alerts of that kind); all
    /// when empty.
    pub kinds: Vec<KindFilter>,
    pub subject: Option<String>,
}

impl StreamFilter {
    /// The entries after which someone may have less access than before: followed by
    /// the watcher (stale grants) and the proxy (closing sockets).
    pub fn access_losses() -> StreamFilter {
        StreamFilter {
            kinds: [
                EventKind::GrantRevoked,
                EventKind::GrantExpired,
                EventKind::MemberRemoved,
                EventKind::GroupDeleted,
            ]
            .map(KindFilter::Entry)
            .to_vec(),
            subject: None,
        }
    }

    /// Every entry that may change someone's access: the losses, and the gains after
    /// which a stale container is covered again (the watcher's one-alert rule).
    pub fn access_changes() -> StreamFilter {
        let mut f = StreamFilter::access_losses();
        f.kinds
            .extend([EventKind::GrantIssued, EventKind::MemberAdded].map(KindFilter::Entry));
        f
    }

    /// A filter from the words a client sent; an unknown kind is refused.
    pub fn parse(kinds: &[String], subject: Option<String>) -> Result<StreamFilter, Error> {
        let kinds = kinds
            .iter()
            .map(|k| k.parse().map_err(Error::UnknownKind))
            .collect::<Result<_, _>>()?;
        if let Some(s) = &subject {
            names::check_subject_filter(s)?;
        }
        Ok(StreamFilter { kinds, subject })
    }

    /// Whether an entry of `kind` (an alert: also of `alert` kind) passes the kinds.
    pub(super) fn wants_kind(&self, kind: EventKind, alert: Option<AlertKind>) -> bool {
        self.kinds.is_empty()
            || self.kinds.iter().any(|k| match *k {
                KindFilter::Entry(e) => e == kind,
                KindFilter::Alert(a) => Some(a) == alert,
            })
    }

    pub(super) fn matches(&self, e: &Entry) -> bool {
        self.wants_kind(e.event.kind(), e.event.alert_kind())
            && self
                .subject
                .as_deref()
                .is_none_or(|s| e.event.concerns(e.seq, s))
    }
}

impl Ledger {
    /// Streams entries from `from` (history, then live when `follow`) into a bounded
    /// channel of chunks (in log order, each up to 1024 entries; `buffer` chunks are
    /// held at most). The producer reads from the store in chunks and waits for the
    /// head to move, so there is no gap and no duplicate, and a consumer that stops
    /// reading only stops the producer (memory stays bounded by the channel). The
    /// producer ends when the receiver is dropped.
    pub fn stream(
        &self,
        from: Seq,
        follow: bool,
        filter: StreamFilter,
        buffer: usize,
    ) -> Result<mpsc::Receiver<Result<Vec<Entry>, Error>>, Error> {
        self.stream_with(from, follow, filter, buffer, None, |raw, filter| {
            let e = Entry::decode(raw)?;
            Ok(filter.matches(&e).then_some(e))
        })
    }

    /// Like [`Ledger::stream`], but decodes only what the audit stream sends: the
    /// consumer gets the exact body, so the event itself is decoded only when a
    /// subject filter needs it (DESIGN §7: catch-up ≥ 200k entries/s).
    ///
    /// With `stall`, a consumer that takes nothing for that long ends the stream: the
    /// last item is then [`Error::StreamStalled`], naming the seq to resume from.
    pub fn stream_records(
        &self,
        from: Seq,
        follow: bool,
        filter: StreamFilter,
        buffer: usize,
        stall: Option<std::time::Duration>,
    ) -> Result<mpsc::Receiver<Result<Vec<EntryRecord>, Error>>, Error> {
        self.stream_with(from, follow, filter, buffer, stall, EntryRecord::decode)
    }

    fn stream_with<T: Send + 'static>(
        &self,
        from: Seq,
        follow: bool,
        filter: StreamFilter,
        buffer: usize,
        stall: Option<std::time::Duration>,
        decode: fn(RawEntry, &StreamFilter) -> Result<Option<T>, Error>,
    ) -> Result<mpsc::Receiver<Result<Vec<T>, Error>>, Error> {
        let filter = Arc::new(filter);
        // One slot more than the buffer, held back for the last word on a stall.
        let (tx, rx) = mpsc::channel(buffer.max(1) + 1);
        let ledger = self.clone();
        let mut head = self.inner.head.clone();
        let span = tracing::info_span!("audit_stream", from, follow);
        tokio::spawn(tracing::Instrument::instrument(
            async move {
                let Ok(last_word) = tx.clone().reserve_owned().await else {
                    return;
                };
                let mut last_word = Some(last_word);
                let mut next = from.max(1);
                loop {
                    let target = *head.borrow_and_update();
                    while next <= target {
                        let store = ledger.inner.store.clone();
                        let f = filter.clone();
                        let chunk = tokio::task::spawn_blocking(move || {
                            let raws = store
                                .range(next, target, STREAM_CHUNK)
                                .map_err(|e| (Vec::new(), Error::from(e)))?;
                            let last = raws.last().map(|r| r.seq);
                            let mut out = Vec::with_capacity(raws.len());
                            for raw in raws {
                                match decode(raw, &f) {
                                    Ok(e) => out.extend(e),
                                    // The entries before a damaged one are still sent.
                                    Err(e) => return Err((out, e)),
                                }
                            }
                            Ok::<_, (Vec<T>, Error)>((last, out))
                        })
                        .await;
                        let (last, chunk) = match chunk {
                            Ok(Ok(c)) => c,
                            Ok(Err((good, e))) => {
                                if good.is_empty() || tx.send(Ok(good)).await.is_ok() {
                                    let _ = tx.send(Err(e)).await;
                                }
                                return;
                            }
                            Err(e) => {
                                let _ = tx.send(Err(Error::task("stream")(e))).await;
                                return;
                            }
                        };
                        let Some(last) = last else {
                            // Entries below the earliest retained seq: skip to it.
                            match ledger.inner.store.earliest() {
                                Ok(Some(f)) if f > next => {
                                    next = f;
                                    continue;
                                }
                                _ => break,
                            }
                        };
                        // One send per chunk, not per entry (DESIGN §7 catch-up rate).
                        if !chunk.is_empty() {
                            let sent = match stall {
                                None => tx.send(Ok(chunk)).await.map_err(|_| None),
                                Some(d) => {
                                    match tokio::time::timeout(d, tx.send(Ok(chunk))).await {
                                        Ok(r) => r.map_err(|_| None),
                                        Err(_) => Err(Some(d)),
                                    }
                                }
                            };
                            match sent {
                                Ok(()) => {}
                                Err(None) => return, // the consumer went away
                                Err(Some(d)) => {
                                    // Everything before `next` is in the channel; the
                                    // chunk that did not fit is not.
                                    if let Some(p) = last_word.take() {
                                        p.send(Err(Error::StreamStalled {
                                            after: d,
                                            resume_from: next,
                                        }));
                                    }
                                    return;
                                }
                            }
                        }
                        next = last + 1;
                    }
                    if !follow {
                        return;
                    }
                    tokio::select! {
                        changed = head.changed() => if changed.is_err() { return },
                        _ = tx.closed() => return,
                    }
                }
            },
            span,
        ));
        Ok(rx)
    }
}

/// Entries read from the store per step of a stream.
const STREAM_CHUNK: usize = 1024;
