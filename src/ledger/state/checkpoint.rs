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
    /// short of running out of memory, which aborts).
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
            tokens: self.tokens.values().cloned().collect(),
            containers: self.containers.values().cloned().collect(),
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
