//! The checkpoint codec: the whole state as one JSON document, read back straight
//! into its final allocations.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::grants::{GrantSet, GrantState};
use super::members::{GroupState, Ix};
use super::{ContainerRecord, State, TokenState};
use crate::ledger::event::{Seq, Subject, UnixNanos};

impl State {
    // === checkpoints ===

    /// The checkpoint encoding (JSON; every map key is a string, so it cannot fail
    /// short of running out of memory, which aborts). Equal states encode byte for
    /// byte alike: hash maps are written in key order, so that a cluster's follower can
    /// prove its own encoding of a seq against the digest the writer recorded.
    pub fn to_checkpoint(&self) -> Result<Vec<u8>, String> {
        let cp = Checkpoint {
            version: CHECKPOINT_VERSION,
            seq: self.seq,
            hash: hex::encode(self.hash),
            genesis: hex::encode(self.genesis),
            time_ns: self.time_ns,
            users: self.users.iter().map(|u| u.name.clone()).collect(),
            group_names: self.groups.iter().map(|g| g.name.clone()).collect(),
            groups: self
                .groups
                .iter()
                .enumerate()
                .filter_map(|(ix, slot)| {
                    slot.group.as_ref().map(|g| CheckpointGroup {
                        ix: ix as Ix,
                        builtin: g.builtin,
                        synced: g.synced,
                        created_seq: g.created_seq,
                        members: g.members.iter().collect(),
                    })
                })
                .collect(),
            grants: self.grants.values().cloned().collect(),
            tokens: sorted(self.tokens.values(), |t| &t.name),
            containers: sorted(self.containers.values(), |c| &c.id),
            checkpoints: self
                .checkpoints
                .iter()
                .map(|(s, d)| (*s, d.clone()))
                .collect(),
            hosts: self.hosts.iter().map(|(h, n)| (h.clone(), *n)).collect(),
        };
        serde_json::to_vec(&cp).map_err(|e| e.to_string())
    }

    /// Reads a checkpoint. It is decoded from the reader, names and grants straight
    /// into their final allocations: a whole-file buffer and intermediate copies would
    /// be tens of megabytes the allocator keeps after start-up.
    pub fn from_checkpoint(reader: impl std::io::Read) -> Result<State, String> {
        let cp: Checkpoint = serde_json::from_reader(reader).map_err(|e| e.to_string())?;
        if cp.version != CHECKPOINT_VERSION {
            return Err(format!(
                "checkpoint version {} (this build reads {CHECKPOINT_VERSION})",
                cp.version
            ));
        }
        let mut st = State {
            seq: cp.seq,
            time_ns: cp.time_ns,
            ..State::default()
        };
        hex::decode_to_slice(&cp.hash, &mut st.hash).map_err(|e| e.to_string())?;
        hex::decode_to_slice(&cp.genesis, &mut st.genesis).map_err(|e| e.to_string())?;
        // Interned in the order they were, so indices equal those of a full replay.
        let (n_users, n_groups) = (cp.users.len(), cp.group_names.len());
        for u in cp.users {
            st.intern_user(u);
        }
        for g in cp.group_names {
            st.intern_group(g);
        }
        if st.users.len() != n_users || st.groups.len() != n_groups {
            return Err("checkpoint repeats a name".into());
        }
        let mut user_groups: Vec<Vec<Ix>> = vec![Vec::new(); n_users];
        for g in cp.groups {
            if g.ix as usize >= n_groups {
                return Err(format!("checkpoint group index {} out of range", g.ix));
            }
            for &m in &g.members {
                user_groups
                    .get_mut(m as usize)
                    .ok_or_else(|| format!("checkpoint member index {m} out of range"))?
                    .push(g.ix);
            }
            st.groups[g.ix as usize].group = Some(GroupState {
                builtin: g.builtin,
                synced: g.synced,
                created_seq: g.created_seq,
                members: g.members.into_iter().collect(),
            });
        }
        for (ix, mut groups) in user_groups.into_iter().enumerate() {
            if !groups.is_empty() {
                groups.sort_unstable();
                st.users[ix].groups = Arc::from(groups);
            }
        }
        // Each subject's set built once (inserting one by one copies it every time).
        type Sets = std::collections::HashMap<Ix, Vec<Arc<GrantState>>>;
        let (mut user_sets, mut group_sets) = (Sets::default(), Sets::default());
        for g in cp.grants {
            if g.ended.is_none() {
                if let Some(exp) = g.expires_at_ns {
                    st.expiring.insert((exp, g.id));
                }
                let set = match &g.subject {
                    Subject::User(u) => user_sets.entry(st.intern_user(u.as_str())).or_default(),
                    Subject::Group(n) => group_sets.entry(st.intern_group(n.as_str())).or_default(),
                };
                set.push(g.clone());
            }
            st.grants.insert(g.id, g);
        }
        for (ix, mut grants) in user_sets {
            grants.sort_unstable_by_key(|g| g.id);
            st.users[ix as usize].grants = GrantSet::of(grants);
        }
        for (ix, mut grants) in group_sets {
            grants.sort_unstable_by_key(|g| g.id);
            st.set_group_grants(ix, GrantSet::of(grants));
        }
        for c in cp.containers {
            st.containers.insert(c.id.clone(), c);
        }
        st.checkpoints = cp.checkpoints.into_iter().collect();
        st.hosts = cp.hosts.into_iter().collect();
        for t in cp.tokens {
            if t.revoked_seq.is_none() {
                st.token_hashes
                    .insert(t.secret_sha256.clone(), t.name.clone());
            }
            st.tokens.insert(t.name.clone(), t);
        }
        Ok(st)
    }
}

/// Version 2 keeps names interned: members are user indices (version 1 repeated every
/// member's name); version 3 adds the recorded checkpoint digests. A checkpoint of
/// another version is skipped; start-up then replays from an older one or the start.
const CHECKPOINT_VERSION: u32 = 3;

#[derive(Serialize, Deserialize)]
struct CheckpointGroup {
    ix: Ix,
    builtin: bool,
    #[serde(default)]
    synced: bool,
    created_seq: Seq,
    members: Vec<Ix>,
}

#[derive(Serialize, Deserialize)]
struct Checkpoint {
    version: u32,
    seq: Seq,
    hash: String,
    genesis: String,
    time_ns: UnixNanos,
    /// Every user name ever interned, in index order.
    users: Vec<Arc<str>>,
    /// Every group name ever interned, in index order.
    group_names: Vec<Arc<str>>,
    /// The groups that exist.
    groups: Vec<CheckpointGroup>,
    grants: Vec<Arc<GrantState>>,
    tokens: Vec<TokenState>,
    containers: Vec<ContainerRecord>,
    checkpoints: Vec<(Seq, Arc<str>)>,
    /// Agents' last numbers by host (absent before there were agents).
    #[serde(default)]
    hosts: Vec<(Arc<str>, u64)>,
}

/// Clones of `items` in the order of `key` (hash maps iterate in their hasher's order,
/// which differs between processes).
fn sorted<'a, T: Clone + 'a>(
    items: impl Iterator<Item = &'a T>,
    key: impl Fn(&T) -> &String,
) -> Vec<T> {
    let mut v: Vec<T> = items.cloned().collect();
    v.sort_unstable_by(|a, b| key(a).cmp(key(b)));
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::event::{ContainerObserved, Event, Role};

    /// The state after 40 tokens and 40 containers, built from scratch (each map then
    /// gets a hasher of its own, so its iteration order differs from another's).
    fn built() -> State {
        let mut st = State::default();
        let mut seq = 0;
        let mut next = |st: &mut State, event: Event| {
            seq += 1;
            st.apply(seq, seq as i64 * 1000, "admin", &event);
            st.commit_hash([seq as u8; 32]);
        };
        for i in 0..40 {
            let token = Event::TokenIssued {
                name: format!("t{i}"),
                role: Role::Spawner,
                secret_sha256: format!("{i:064x}"),
                expires_at_ns: None,
            };
            next(&mut st, token);
            let container = Event::DockerContainer(ContainerObserved::created(
                &format!("{i:064x}"),
                &format!("jupyter-u{i}"),
                Some(&format!("u{i}")),
            ));
            next(&mut st, container);
        }
        st
    }

    /// Nodes of a cluster keep the writer's checkpoints by encoding their own state at
    /// the same seq and comparing digests: equal states must encode byte for byte alike.
    #[test]
    fn equal_states_encode_alike() {
        let (a, b) = (built(), built());
        assert_eq!(a, b);
        let bytes = a.to_checkpoint().unwrap();
        assert_eq!(bytes, b.to_checkpoint().unwrap());
        let read = State::from_checkpoint(&bytes[..]).unwrap();
        assert_eq!(read, a);
        assert_eq!(read.to_checkpoint().unwrap(), bytes);
    }
}
