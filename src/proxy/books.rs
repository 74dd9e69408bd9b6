//! What a call on a limited socket needs of the ledger, and nothing more: the
//! user's access at this moment, and the call recorded (durably, before it is
//! made). The executor sees the ledger only through this trait, so the same
//! executor can serve against this process's ledger or, in an agent on another
//! Docker host, against a remote one.

use std::future::Future;
use std::pin::Pin;

use crate::ledger::event::ProxyCall;
use crate::ledger::policy::Access;
use crate::ledger::{Command, Ledger};

/// Actor of proxy entries.
pub const ACTOR_PROXY: &str = "proxy";

/// A recording under way: `Err` says why the call cannot be recorded (and so must
/// not be made).
pub type Recording<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

pub trait Books: Send + Sync {
    /// The user's effective access now.
    fn access(&self, user: &str) -> Result<Access, String>;
    /// Records one call (forwarded or refused).
    fn record(&self, call: ProxyCall) -> Recording<'_>;
}

impl Books for Ledger {
    fn access(&self, user: &str) -> Result<Access, String> {
        self.check_access(user).map_err(|e| e.to_string())
    }

    fn record(&self, call: ProxyCall) -> Recording<'_> {
        Box::pin(async move {
            self.submit(ACTOR_PROXY, None, Command::RecordProxyCall(call))
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    }
}
