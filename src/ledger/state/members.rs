//! Group membership held as interned indices: a group's members, and what the state
//! keeps per user and per group name.

use std::sync::Arc;

use imbl::OrdSet;

use super::grants::GrantSet;
use crate::ledger::event::Seq;

/// Index of an interned user or group name. Names are interned on first use and never
/// forgotten, so an index is stable for the life of the ledger; checkpoints keep the
/// order. Memberships are held as indices: 100k users in 20 groups each would
/// otherwise hold 4M name copies in sets (DESIGN §7 memory target).
pub type Ix = u32;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupState {
    pub builtin: bool,
    /// Its membership follows a JupyterHub group (changed by `sync` tokens only).
    pub synced: bool,
    pub created_seq: Seq,
    /// Members by user index; [`State::members`] gives their names.
    pub members: Members,
}

/// A group's members by user index. A sorted array while the group is small (4 bytes
/// a member; a persistent set's smallest node is 800 bytes), a persistent set once it
/// is large (an insert then costs O(log n), not a copy of the array).
#[derive(Debug, Clone)]
pub enum Members {
    Small(Arc<[Ix]>),
    Large(OrdSet<Ix>),
}

/// Above this many members a group's array becomes a persistent set.
const SMALL_GROUP: usize = 256;

impl Default for Members {
    fn default() -> Members {
        Members::Small(Arc::from([]))
    }
}

impl PartialEq for Members {
    fn eq(&self, o: &Members) -> bool {
        self.len() == o.len() && self.iter().eq(o.iter())
    }
}

impl Eq for Members {}

impl FromIterator<Ix> for Members {
    fn from_iter<I: IntoIterator<Item = Ix>>(iter: I) -> Members {
        let mut v: Vec<Ix> = iter.into_iter().collect();
        v.sort_unstable();
        v.dedup();
        if v.len() > SMALL_GROUP {
            Members::Large(v.into_iter().collect())
        } else {
            Members::Small(Arc::from(v))
        }
    }
}

impl Members {
    pub fn len(&self) -> usize {
        match self {
            Members::Small(a) => a.len(),
            Members::Large(s) => s.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn contains(&self, ix: Ix) -> bool {
        match self {
            Members::Small(a) => a.binary_search(&ix).is_ok(),
            Members::Large(s) => s.contains(&ix),
        }
    }

    /// Member indices, ascending.
    pub fn iter(&self) -> impl Iterator<Item = Ix> + '_ {
        let (small, large) = match self {
            Members::Small(a) => (Some(a.iter()), None),
            Members::Large(s) => (None, Some(s.iter())),
        };
        small
            .into_iter()
            .flatten()
            .chain(large.into_iter().flatten())
            .copied()
    }

    pub(in crate::ledger) fn insert(&mut self, ix: Ix) {
        match self {
            Members::Small(a) if a.len() < SMALL_GROUP => {
                if let Err(at) = a.binary_search(&ix) {
                    let mut v = a.to_vec();
                    v.insert(at, ix);
                    *a = Arc::from(v);
                }
            }
            Members::Small(a) => {
                let mut set: OrdSet<Ix> = a.iter().copied().collect();
                set.insert(ix);
                *self = Members::Large(set);
            }
            Members::Large(s) => {
                s.insert(ix);
            }
        }
    }

    pub(in crate::ledger) fn remove(&mut self, ix: Ix) {
        match self {
            Members::Small(a) => {
                if let Ok(at) = a.binary_search(&ix) {
                    let mut v = a.to_vec();
                    v.remove(at);
                    *a = Arc::from(v);
                }
            }
            Members::Large(s) => {
                s.remove(&ix);
            }
        }
    }
}

/// Everything the state keeps about one user name.
#[derive(Debug, Clone, PartialEq)]
pub(in crate::ledger) struct UserSlot {
    pub(in crate::ledger) name: Arc<str>,
    /// The groups the user is in, by group index, sorted.
    pub(in crate::ledger) groups: Arc<[Ix]>,
    /// Grants to the user directly, not ended by an entry.
    pub(in crate::ledger) grants: Option<Arc<GrantSet>>,
}

/// Everything the state keeps about one group name.
#[derive(Debug, Clone, PartialEq)]
pub(in crate::ledger) struct GroupSlot {
    pub(in crate::ledger) name: Arc<str>,
    /// `None` while no group of this name exists (deleted since).
    pub(in crate::ledger) group: Option<GroupState>,
    /// Grants to the group, not ended by an entry.
    pub(in crate::ledger) grants: Option<Arc<GrantSet>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_grow_past_the_small_form_and_compare_by_content() {
        let mut m = Members::default();
        for ix in (0..(SMALL_GROUP as Ix + 10)).rev() {
            m.insert(ix);
            m.insert(ix); // twice: a set
        }
        assert!(matches!(m, Members::Large(_)));
        assert_eq!(m.len(), SMALL_GROUP + 10);
        for ix in 0..20 {
            m.remove(ix);
        }
        assert!(!m.contains(5) && m.contains(20));
        let same: Members = (20..(SMALL_GROUP as Ix + 10)).collect();
        assert!(matches!(same, Members::Small(_)));
        assert_eq!(m, same, "equal whatever the form");
        assert!(m.iter().eq(20..(SMALL_GROUP as Ix + 10)), "ascending");
        let mut small = Members::default();
        small.insert(3);
        small.insert(1);
        small.remove(3);
        assert_eq!(small.iter().collect::<Vec<_>>(), vec![1]);
    }
}
