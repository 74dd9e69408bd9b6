//! The combination rules of DESIGN §2 as a value: raw > limited > none, rw if any
//! raw grant is rw, privileged ORs, limits the per-field maximum over limited grants.
//! The state folds each subject's grants once; policy merges the folds.

use super::event::{EffectiveLimits, GrantSpec, SocketAccess, SocketMode, UnixNanos};

/// The combination of some grants under the DESIGN §2 rules. Combining is associative
/// and commutative, so a subject's grants are folded once when they change
/// ([`super::state::GrantSet`]) and an evaluation merges one fold per source.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fold {
    pub(super) socket: SocketAccess,
    pub(super) rw: bool,
    pub(super) privileged: bool,
    /// Per-field maximum over limited grants, `None` without one.
    pub(super) limits: Option<EffectiveLimits>,
}

impl Fold {
    #[inline]
    pub fn add(&mut self, spec: &GrantSpec) {
        self.socket = self.socket.max(spec.socket);
        self.privileged |= spec.privileged;
        match spec.socket {
            SocketAccess::Raw => self.rw |= spec.socket_mode == SocketMode::Rw,
            SocketAccess::Limited => {
                let l = spec.limits.resolved();
                self.limits = Some(match self.limits.take() {
                    Some(acc) => acc.max(l),
                    None => l,
                });
            }
            SocketAccess::None => {}
        }
    }

    #[inline]
    pub fn merge(&mut self, o: &Fold) {
        self.socket = self.socket.max(o.socket);
        self.rw |= o.rw;
        self.privileged |= o.privileged;
        self.limits = match (self.limits.take(), &o.limits) {
            (Some(a), Some(b)) => Some(a.max(b.clone())),
            (a, b) => a.or_else(|| b.clone()),
        };
    }

    /// Merges a summary's combination (everything but limits).
    #[inline]
    pub(super) fn merge_summary(&mut self, s: &Summary) {
        self.socket = self.socket.max(s.socket);
        self.rw |= s.rw;
        self.privileged |= s.privileged;
    }

    #[inline]
    pub(super) fn any(&self) -> bool {
        self.socket != SocketAccess::None || self.privileged
    }

    #[inline]
    pub(super) fn socket_mode(&self) -> SocketMode {
        if self.rw {
            SocketMode::Rw
        } else {
            SocketMode::Ro
        }
    }

    #[inline]
    pub(super) fn effective_limits(&self) -> EffectiveLimits {
        if self.socket == SocketAccess::Limited {
            self.limits.clone().unwrap_or_default()
        } else {
            EffectiveLimits::default()
        }
    }
}

/// A grant set's combination without its limits, and how long it holds: small enough
/// that the summaries of 10k groups stay in cache.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Summary {
    /// The earliest expiry in the set; until then the combination holds.
    pub(super) valid_until: Option<UnixNanos>,
    pub(super) socket: SocketAccess,
    pub(super) rw: bool,
    pub(super) privileged: bool,
    /// False for an empty set.
    pub any: bool,
}

impl Summary {
    #[inline]
    pub fn new(all: &Fold, valid_until: Option<UnixNanos>) -> Summary {
        Summary {
            valid_until,
            socket: all.socket,
            rw: all.rw,
            privileged: all.privileged,
            any: true,
        }
    }

    /// No grant in the set has expired by `at_ns`.
    #[inline]
    pub fn holds_at(&self, at_ns: UnixNanos) -> bool {
        self.valid_until.is_none_or(|e| e > at_ns)
    }
}
