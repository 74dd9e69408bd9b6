//! Grants as the state holds them: each grant with how it ended, and a subject's open
//! grants with their combination folded once.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::ledger::event::{GrantSpec, Seq, Subject, UnixNanos};
use crate::ledger::fold::{Fold, Summary};

/// The grants of one subject not ended by an entry, with their combination computed
/// once when the set changes: evaluation folds one value per group the user is in,
/// not one per grant (DESIGN §7: evaluation ≤ 1 µs).
#[derive(Debug, Clone, PartialEq)]
pub struct GrantSet {
    /// By id; shared with `State::grants`.
    grants: Vec<Arc<GrantState>>,
    /// The combination of every grant in the set.
    all: Fold,
    pub(in crate::ledger) summary: Summary,
}

impl GrantSet {
    /// The set of `grants`, or `None` when there are none.
    pub(in crate::ledger) fn of(grants: Vec<Arc<GrantState>>) -> Option<Arc<GrantSet>> {
        if grants.is_empty() {
            return None;
        }
        let mut all = Fold::default();
        for g in &grants {
            all.add(&g.spec);
        }
        let first_expiry = grants.iter().filter_map(|g| g.expires_at_ns).min();
        let summary = Summary::new(&all, first_expiry);
        Some(Arc::new(GrantSet {
            grants,
            all,
            summary,
        }))
    }

    pub(in crate::ledger) fn with(
        set: Option<&GrantSet>,
        grant: Arc<GrantState>,
    ) -> Option<Arc<GrantSet>> {
        let mut grants = set.map(|s| s.grants.clone()).unwrap_or_default();
        let at = grants.partition_point(|g| g.id < grant.id);
        grants.insert(at, grant);
        GrantSet::of(grants)
    }

    pub(in crate::ledger) fn without(set: Option<&GrantSet>, id: Seq) -> Option<Arc<GrantSet>> {
        let mut grants = set.map(|s| s.grants.clone()).unwrap_or_default();
        grants.retain(|g| g.id != id);
        GrantSet::of(grants)
    }

    /// Every grant in the set, by id.
    pub fn grants(&self) -> impl Iterator<Item = &GrantState> {
        self.grants.iter().map(|g| &**g)
    }

    /// The grants not past their expiry at `at_ns`.
    #[inline]
    pub fn active_at(&self, at_ns: UnixNanos) -> impl Iterator<Item = &GrantState> {
        self.grants
            .iter()
            .map(|g| &**g)
            .filter(move |g| g.is_active_at(at_ns))
    }

    /// The combination of the grants active at `at_ns`.
    #[inline]
    pub fn fold_at(&self, at_ns: UnixNanos) -> Fold {
        if self.summary.holds_at(at_ns) {
            return self.all.clone();
        }
        let mut f = Fold::default();
        for g in self.active_at(at_ns) {
            f.add(&g.spec);
        }
        f
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndKind {
    Revoked,
    Expired,
    GroupDeleted,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GrantEnd {
    pub seq: Seq,
    pub kind: EndKind,
    pub reason: String,
    pub time_ns: UnixNanos,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GrantState {
    pub id: Seq,
    pub subject: Subject,
    pub spec: GrantSpec,
    pub expires_at_ns: Option<UnixNanos>,
    pub reason: String,
    pub issued_by: String,
    pub issued_at_ns: UnixNanos,
    pub builtin: bool,
    pub ended: Option<GrantEnd>,
}

impl GrantState {
    /// Not revoked or expired by an entry, and not past its expiry at `at_ns`.
    #[inline]
    pub fn is_active_at(&self, at_ns: UnixNanos) -> bool {
        self.ended.is_none() && self.expires_at_ns.is_none_or(|e| e > at_ns)
    }
}
