//! Why the limited socket refuses a call: the rule (a field path such as
//! `HostConfig.LogConfig.Type`, or a word such as `quota`) and the reason, so that
//! what the caller reads and what the ledger records name the same rule.

use std::fmt;

/// A call the limited socket will not make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub rule: String,
    pub reason: String,
}

impl Refusal {
    pub fn new(rule: impl Into<String>, reason: impl fmt::Display) -> Refusal {
        Refusal {
            rule: rule.into(),
            reason: reason.to_string(),
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "refused by the limited socket ({}): {}",
            self.rule, self.reason
        )
    }
}

/// `Err(Refusal)` in one call.
pub fn refuse<T>(rule: impl Into<String>, reason: impl fmt::Display) -> Result<T, Refusal> {
    Err(Refusal::new(rule, reason))
}
