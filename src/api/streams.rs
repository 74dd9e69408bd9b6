//! Open audit streams: how many there may be (per token and in all), and their end
//! when the token that opened them is revoked or expires.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use tokio_stream::Stream;
use tonic::Status;

use super::auth::Caller;
use super::error::{AuthError, LimitError};
use crate::ledger::{now_ns, Ledger};

/// Limits on open audit streams.
#[derive(Debug, Clone, Copy)]
pub struct StreamLimits {
    /// Open streams per token.
    pub per_token: usize,
    /// Open streams in all.
    pub total: usize,
}

/// Counts open streams; a [`Slot`] is one of them, given back when dropped.
#[derive(Clone)]
pub struct Streams {
    limits: StreamLimits,
    open: Arc<Mutex<Open>>,
}

#[derive(Default)]
struct Open {
    total: usize,
    per_token: HashMap<String, usize>,
}

/// One open stream, counted until dropped.
pub struct Slot {
    token: String,
    open: Arc<Mutex<Open>>,
}

impl Streams {
    pub fn new(limits: StreamLimits) -> Streams {
        Streams {
            limits,
            open: Arc::default(),
        }
    }

    /// A slot for a stream of `token`, if both limits allow one more.
    pub fn take(&self, token: &str) -> Result<Slot, LimitError> {
        // A poisoned lock only means another stream panicked while counting; the
        // counts themselves are still whole numbers.
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if open.total >= self.limits.total {
            return Err(LimitError::Streams(self.limits.total));
        }
        let n = open.per_token.get(token).copied().unwrap_or(0);
        if n >= self.limits.per_token {
            return Err(LimitError::StreamsPerToken {
                token: token.to_string(),
                limit: self.limits.per_token,
            });
        }
        open.total += 1;
        open.per_token.insert(token.to_string(), n + 1);
        Ok(Slot {
            token: token.to_string(),
            open: self.open.clone(),
        })
    }

    #[cfg(test)]
    fn total(&self) -> usize {
        self.open.lock().unwrap().total
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.per_token.get_mut(&self.token) {
            *n -= 1;
            if *n == 0 {
                open.per_token.remove(&self.token);
            }
        }
    }
}

pub type Boxed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// `s`, holding `slot` while it is open, and ended with UNAUTHENTICATED as soon as
/// the caller's token is no longer usable (revoked, or past its expiry).
pub fn guarded<T: Send + 'static>(
    s: Boxed<T>,
    ledger: &Ledger,
    caller: &Caller,
    slot: Slot,
) -> Boxed<T> {
    if !caller.ledger_token {
        return Box::pin(s.map(move |item| {
            let _held = &slot;
            item
        }));
    }
    let name = caller.name.clone();
    let ended = token_unusable(ledger.clone(), name.clone());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let ended = async move {
        ended.await;
        let _ = tx.send(());
    };
    let last = futures_util::stream::once(async move {
        // Sent only when the token ended the stream (not when it ran out).
        rx.await
            .ok()
            .map(|()| Err(Status::from(AuthError::TokenEnded(name))))
    })
    .filter_map(futures_util::future::ready);
    Box::pin(s.take_until(ended).chain(last).map(move |item| {
        let _held = &slot;
        item
    }))
}

/// Resolves once token `name` is revoked, gone, or past its expiry.
async fn token_unusable(ledger: Ledger, name: String) {
    let mut head = ledger.watch_head();
    loop {
        let expires = match ledger.snapshot().token(&name) {
            Some(t) if t.usable_at(now_ns()) => t.expires_at_ns,
            _ => return,
        };
        let wait_expiry = async {
            match expires {
                Some(at) => {
                    let left = u64::try_from(at.saturating_sub(now_ns())).unwrap_or(0);
                    tokio::time::sleep(std::time::Duration::from_nanos(left)).await
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = head.changed() => {
                if changed.is_err() {
                    // The ledger is shutting down: the stream ends with the server.
                    return std::future::pending().await;
                }
            }
            () = wait_expiry => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_limited_per_token_and_in_all_and_given_back() {
        let s = Streams::new(StreamLimits {
            per_token: 2,
            total: 3,
        });
        let a1 = s.take("a").unwrap();
        let _a2 = s.take("a").unwrap();
        assert!(matches!(
            s.take("a"),
            Err(LimitError::StreamsPerToken { limit: 2, .. })
        ));
        let _b1 = s.take("b").unwrap();
        assert!(matches!(s.take("c"), Err(LimitError::Streams(3))));
        drop(a1);
        assert_eq!(s.total(), 2);
        let _a3 = s.take("a").unwrap();
        assert_eq!(s.total(), 3);
    }
}
