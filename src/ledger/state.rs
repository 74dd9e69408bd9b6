//! The current state (groups, members, grants, tokens), derived purely from the log.
//!
//! `State` uses persistent maps (imbl) so that the single writer can clone the
//! published state in O(1), apply a batch to the clone, and publish it only after the
//! batch is durable; readers keep whatever `Arc<State>` they loaded, lock-free.
//! [`Command::prepare`](super::Command::prepare) validates a command against the state
//! it will apply to and turns it into an event; [`State::apply`] (in `apply`) is the
//! only way state changes, and replay uses the very same function.

mod apply;
mod checkpoint;
mod containers;
mod grants;
mod members;

use std::sync::Arc;

use imbl::{shared_ptr::DefaultSharedPtr, GenericHashMap, HashMap, OrdMap, OrdSet, Vector};

pub use containers::{ContainerRecord, TokenState};
pub use grants::{EndKind, GrantEnd, GrantSet, GrantState};
pub(super) use members::{GroupSlot, UserSlot};
pub use members::{GroupState, Ix, Members};

use super::event::{Seq, Subject, UnixNanos};
use super::fold::Summary;

/// A name-keyed persistent map hashed with foldhash: every query hashes a name, and
/// SipHash costs more than the rest of an evaluation. The per-process random seed keeps
/// crafted names from colliding on purpose.
pub(super) type NameMap<V> =
    GenericHashMap<Arc<str>, V, foldhash::fast::RandomState, DefaultSharedPtr>;

/// The derived state as of `seq`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct State {
    pub seq: Seq,
    pub hash: [u8; 32],
    /// The hash of entry 1: identifies this ledger (decision ids carry its prefix, so
    /// a label written by another ledger is never mistaken for one of ours).
    pub genesis: [u8; 32],
    pub time_ns: UnixNanos,
    /// Users by index, and their index by name.
    users: Vector<UserSlot>,
    user_ix: NameMap<Ix>,
    /// Groups by index, and their index by name.
    groups: Vector<GroupSlot>,
    group_ix: NameMap<Ix>,
    /// The summary of each group's grants, by group index: evaluating a user in 20
    /// groups reads 20 of these small records, which stay in cache, rather than
    /// chasing 20 pointers (DESIGN §7: ≤ 1 µs).
    group_summaries: Vector<Summary>,
    /// Every grant ever issued, including ended ones. Behind `Arc` so that open
    /// grants are shared with their subject's set, and the map's nodes stay small.
    grants: OrdMap<Seq, Arc<GrantState>>,
    /// (expires_at, grant id) of grants not ended by an entry that carry an expiry.
    expiring: OrdSet<(UnixNanos, Seq)>,
    tokens: HashMap<String, TokenState>,
    /// secret hash → token name, for tokens not revoked.
    token_hashes: HashMap<String, String>,
    /// Containers seen and not destroyed, by id.
    containers: HashMap<String, ContainerRecord>,
    /// The digest recorded for each checkpoint written (hex SHA-256 by seq).
    checkpoints: OrdMap<Seq, Arc<str>>,
    /// The last number recorded from each `privledger watch` agent, by host id.
    hosts: OrdMap<Arc<str>, u64>,
}

impl State {
    // === queries ===

    /// The last number recorded from the agent of `host` (0: none yet).
    pub fn host_last(&self, host: &str) -> u64 {
        self.hosts.get(host).copied().unwrap_or(0)
    }

    /// Every host an agent has reported from, with its last number.
    pub fn hosts(&self) -> impl Iterator<Item = (&str, u64)> {
        self.hosts.iter().map(|(h, n)| (&**h, *n))
    }

    /// An agent's numbered report was applied.
    pub(in crate::ledger) fn host_reported(&mut self, host: Option<&str>, number: Option<u64>) {
        if let (Some(h), Some(n)) = (host, number) {
            self.hosts.insert(Arc::from(h), n);
        }
    }

    /// Short id of this ledger: the first 8 hex digits of entry 1's hash.
    pub fn ledger_id(&self) -> String {
        hex::encode(&self.genesis[..4])
    }

    /// Records the hash of the entry just applied.
    pub fn commit_hash(&mut self, hash: [u8; 32]) {
        self.hash = hash;
        if self.seq == 1 {
            self.genesis = hash;
        }
    }

    pub fn group(&self, name: &str) -> Option<&GroupState> {
        let ix = *self.group_ix.get(name)?;
        self.groups[ix as usize].group.as_ref()
    }

    /// Every existing group with its name, in order of first creation.
    pub fn groups(&self) -> impl Iterator<Item = (&str, &GroupState)> {
        self.groups
            .iter()
            .filter_map(|s| s.group.as_ref().map(|g| (&*s.name, g)))
    }

    /// The names of `group`'s members, in order of first appearance.
    pub fn members<'a>(&'a self, group: &'a GroupState) -> impl Iterator<Item = &'a str> {
        group.members.iter().map(|ix| self.user_name(ix))
    }

    /// The names of `group`'s members, sorted.
    pub fn members_sorted(&self, group: &GroupState) -> Vec<String> {
        let mut names: Vec<String> = self.members(group).map(str::to_string).collect();
        names.sort_unstable();
        names
    }

    pub fn is_member(&self, group: &GroupState, user: &str) -> bool {
        self.user_ix
            .get(user)
            .is_some_and(|&ix| group.members.contains(ix))
    }

    pub fn grant(&self, id: Seq) -> Option<&GrantState> {
        self.grants.get(&id).map(|g| &**g)
    }

    pub fn grants(&self) -> impl Iterator<Item = &GrantState> {
        self.grants.values().map(|g| &**g)
    }

    /// Grants not ended by an entry whose subject is exactly `subject`, by id.
    pub fn open_grants_of(&self, subject: &Subject) -> impl Iterator<Item = &GrantState> {
        let set = match subject {
            Subject::User(u) => self.user_slot(u).and_then(|s| s.grants.as_deref()),
            Subject::Group(g) => self
                .group_ix
                .get(g.as_str())
                .and_then(|&ix| self.groups[ix as usize].grants.as_deref()),
        };
        set.into_iter().flat_map(|s| s.grants())
    }

    /// The summary of group `ix`'s grants.
    #[inline]
    pub(in crate::ledger) fn group_summary(&self, ix: Ix) -> &Summary {
        &self.group_summaries[ix as usize]
    }

    #[inline]
    pub(in crate::ledger) fn user_slot(&self, name: &str) -> Option<&UserSlot> {
        let ix = *self.user_ix.get(name)?;
        Some(&self.users[ix as usize])
    }

    pub(in crate::ledger) fn user_slots(&self) -> impl Iterator<Item = &UserSlot> {
        self.users.iter()
    }

    pub(in crate::ledger) fn user_name(&self, ix: Ix) -> &str {
        &self.users[ix as usize].name
    }

    #[inline]
    pub(in crate::ledger) fn group_slot(&self, ix: Ix) -> &GroupSlot {
        &self.groups[ix as usize]
    }

    pub(in crate::ledger) fn group_slots(&self) -> impl Iterator<Item = &GroupSlot> {
        self.groups.iter()
    }

    /// The digest recorded for the checkpoint at `seq`, if one was recorded.
    pub fn checkpoint_digest(&self, seq: Seq) -> Option<&str> {
        self.checkpoints.get(&seq).map(|d| &**d)
    }

    /// The earliest expiry among grants not yet ended by an entry.
    pub fn next_expiry(&self) -> Option<(UnixNanos, Seq)> {
        self.expiring.get_min().copied()
    }

    /// Expiries of grants not yet ended by an entry, in `(after, until]`, by time.
    pub fn expiries_in(&self, after: UnixNanos, until: UnixNanos) -> Vec<(UnixNanos, Seq)> {
        if until <= after {
            return Vec::new();
        }
        use std::ops::Bound;
        self.expiring
            .range((
                Bound::Excluded((after, Seq::MAX)),
                Bound::Included((until, Seq::MAX)),
            ))
            .copied()
            .collect()
    }

    pub fn container(&self, id: &str) -> Option<&ContainerRecord> {
        self.containers.get(id)
    }

    pub fn containers(&self) -> impl Iterator<Item = &ContainerRecord> {
        self.containers.values()
    }

    pub fn token(&self, name: &str) -> Option<&TokenState> {
        self.tokens.get(name)
    }

    pub fn tokens(&self) -> impl Iterator<Item = &TokenState> {
        self.tokens.values()
    }

    /// The active token whose secret hashes to `secret_sha256`.
    pub fn token_by_hash(&self, secret_sha256: &str) -> Option<&TokenState> {
        self.token_hashes
            .get(secret_sha256)
            .and_then(|n| self.tokens.get(n))
    }
}
