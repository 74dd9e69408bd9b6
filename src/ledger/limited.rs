//! The seam between spawn decisions and the limited-socket proxy: a limited decision
//! is answered only once the user's socket accepts. The proxy implements it; the
//! API calls it; neither knows the other.

use std::future::Future;
use std::pin::Pin;

pub type Opening<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

pub trait LimitedSockets: Send + Sync {
    /// Makes `user`'s socket exist and accept, under `decision_id`.
    fn open<'a>(&'a self, user: &'a str, decision_id: &'a str) -> Opening<'a>;
}
