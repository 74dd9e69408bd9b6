//! [`State::apply`]: the only way the state changes, for new entries and replay alike.

use std::sync::Arc;

use super::grants::{EndKind, GrantEnd, GrantSet, GrantState};
use super::members::{GroupSlot, GroupState, Ix, Members, UserSlot};
use super::{State, TokenState};
use crate::ledger::event::{Event, Seq, Subject, UnixNanos};
use crate::ledger::fold::Summary;

impl State {
    // === application ===

    /// Applies an event appended at `seq`. Events were validated by `prepare` (or come
    /// from the verified log), so application does not fail; an event that no longer
    /// fits (impossible through `prepare`) is applied as far as it makes sense.
    pub fn apply(&mut self, seq: Seq, time_ns: UnixNanos, actor: &str, event: &Event) {
        self.seq = seq;
        self.time_ns = time_ns;
        match event {
            Event::Alert(a) => {
                self.alerted(a);
                self.host_reported(a.host.as_deref(), a.host_seq);
            }
            Event::ServerStarted { .. }
            | Event::SpawnDecided(_)
            | Event::ContainerStopped { .. }
            | Event::ProxyCall(_) => {}
            Event::StateCheckpointed { at_seq, sha256 } => {
                self.checkpoints.insert(*at_seq, Arc::from(sha256.as_str()));
            }
            Event::DockerContainer(o) => {
                self.observe(o);
                self.host_reported(o.host.as_deref(), o.host_seq);
            }
            Event::GroupSyncChanged { group, synced, .. } => {
                if let Some(g) = self
                    .group_ix
                    .get(group.as_str())
                    .and_then(|&ix| self.groups[ix as usize].group.as_mut())
                {
                    g.synced = *synced;
                }
            }
            Event::GroupCreated { group } => {
                let ix = self.intern_group(group.as_str());
                self.groups[ix as usize].group = Some(GroupState {
                    builtin: false,
                    synced: false,
                    created_seq: seq,
                    members: Members::default(),
                });
            }
            Event::BuiltinGroupRestored { group, .. } => {
                let ix = self.intern_group(group.as_str());
                let slot = &mut self.groups[ix as usize];
                slot.group
                    .get_or_insert_with(|| GroupState {
                        builtin: true,
                        synced: false,
                        created_seq: seq,
                        members: Members::default(),
                    })
                    .builtin = true;
            }
            Event::GroupDeleted { group, .. } => {
                let Some(&gix) = self.group_ix.get(group.as_str()) else {
                    return;
                };
                if let Some(g) = self.groups[gix as usize].group.take() {
                    for uix in g.members.iter() {
                        self.link_member(gix, uix, false);
                    }
                }
                let ids: Vec<Seq> = self
                    .open_grants_of(&Subject::Group(group.clone()))
                    .map(|g| g.id)
                    .collect();
                for id in ids {
                    self.end_grant(
                        id,
                        GrantEnd {
                            seq,
                            kind: EndKind::GroupDeleted,
                            reason: format!("group {group:?} deleted"),
                            time_ns,
                        },
                    );
                }
            }
            Event::MemberAdded { group, user, .. } => {
                if let Some(&gix) = self.group_ix.get(group.as_str()) {
                    if self.groups[gix as usize].group.is_some() {
                        let uix = self.intern_user(user.as_str());
                        self.link_member(gix, uix, true);
                    }
                }
            }
            Event::MemberRemoved { group, user, .. } => {
                if let (Some(&gix), Some(&uix)) = (
                    self.group_ix.get(group.as_str()),
                    self.user_ix.get(user.as_str()),
                ) {
                    self.link_member(gix, uix, false);
                }
            }
            Event::GrantIssued {
                subject,
                spec,
                expires_at_ns,
                reason,
                builtin,
            } => {
                let grant = GrantState {
                    id: seq,
                    subject: subject.clone(),
                    spec: spec.clone(),
                    expires_at_ns: *expires_at_ns,
                    reason: reason.clone(),
                    issued_by: actor.to_string(),
                    issued_at_ns: time_ns,
                    builtin: *builtin,
                    ended: None,
                };
                let grant = Arc::new(grant);
                self.index_grant(&grant);
                self.grants.insert(seq, grant);
            }
            Event::GrantRevoked { grant_id, reason } => self.end_grant(
                *grant_id,
                GrantEnd {
                    seq,
                    kind: EndKind::Revoked,
                    reason: reason.clone(),
                    time_ns,
                },
            ),
            Event::GrantExpired {
                grant_id,
                expired_at_ns,
            } => self.end_grant(
                *grant_id,
                GrantEnd {
                    seq,
                    kind: EndKind::Expired,
                    reason: "expired".into(),
                    time_ns: *expired_at_ns,
                },
            ),
            Event::TokenIssued {
                name,
                role,
                secret_sha256,
                expires_at_ns,
            } => {
                self.token_hashes
                    .insert(secret_sha256.clone(), name.clone());
                self.tokens.insert(
                    name.clone(),
                    TokenState {
                        name: name.clone(),
                        role: *role,
                        secret_sha256: secret_sha256.clone(),
                        created_seq: seq,
                        created_by: actor.to_string(),
                        revoked_seq: None,
                        expires_at_ns: *expires_at_ns,
                    },
                );
            }
            Event::TokenRevoked { name } => {
                if let Some(t) = self.tokens.get_mut(name) {
                    t.revoked_seq = Some(seq);
                    let h = t.secret_sha256.clone();
                    self.token_hashes.remove(&h);
                }
            }
        }
    }

    /// The index of user `name`, interned now if it is new.
    pub(in crate::ledger) fn intern_user(&mut self, name: impl AsRef<str> + Into<Arc<str>>) -> Ix {
        intern(&mut self.user_ix, &mut self.users, name, |name| UserSlot {
            name,
            groups: Arc::from([]),
            grants: None,
        })
    }

    /// The index of group name `name`, interned now if it is new.
    pub(in crate::ledger) fn intern_group(&mut self, name: impl AsRef<str> + Into<Arc<str>>) -> Ix {
        let before = self.groups.len();
        let ix = intern(&mut self.group_ix, &mut self.groups, name, |name| {
            GroupSlot {
                name,
                group: None,
                grants: None,
            }
        });
        if self.groups.len() > before {
            self.group_summaries.push_back(Summary::default());
        }
        ix
    }

    /// Adds (`member`) or removes user `uix` to or from group `gix`, on both sides.
    pub(in crate::ledger) fn link_member(&mut self, gix: Ix, uix: Ix, member: bool) {
        if let Some(g) = self.groups[gix as usize].group.as_mut() {
            if member {
                g.members.insert(uix);
            } else {
                g.members.remove(uix);
            }
        }
        let slot = &mut self.users[uix as usize];
        let at = slot.groups.binary_search(&gix);
        let mut groups = slot.groups.to_vec();
        match (at, member) {
            (Err(i), true) => groups.insert(i, gix),
            (Ok(i), false) => {
                groups.remove(i);
            }
            _ => return,
        }
        slot.groups = Arc::from(groups);
    }

    /// Replaces the open-grant set of `subject` by `f` of it, interning its name.
    pub(in crate::ledger) fn update_grants(
        &mut self,
        subject: &Subject,
        f: impl FnOnce(Option<&GrantSet>) -> Option<Arc<GrantSet>>,
    ) {
        match subject {
            Subject::User(u) => {
                let ix = self.intern_user(u.as_str());
                let slot = &mut self.users[ix as usize];
                slot.grants = f(slot.grants.as_deref());
            }
            Subject::Group(g) => {
                let ix = self.intern_group(g.as_str());
                self.set_group_grants(ix, f(self.groups[ix as usize].grants.as_deref()));
            }
        }
    }

    pub(in crate::ledger) fn set_group_grants(&mut self, ix: Ix, set: Option<Arc<GrantSet>>) {
        self.group_summaries[ix as usize] = set.as_deref().map(|s| s.summary).unwrap_or_default();
        self.groups[ix as usize].grants = set;
    }

    pub(in crate::ledger) fn index_grant(&mut self, g: &Arc<GrantState>) {
        if g.ended.is_some() {
            return;
        }
        self.update_grants(&g.subject, |set| GrantSet::with(set, g.clone()));
        if let Some(exp) = g.expires_at_ns {
            self.expiring.insert((exp, g.id));
        }
    }

    pub(in crate::ledger) fn end_grant(&mut self, id: Seq, end: GrantEnd) {
        let Some(g) = self.grants.get_mut(&id) else {
            return;
        };
        if g.ended.is_some() {
            return;
        }
        // The set still shares the grant; it drops it just below.
        let g = Arc::make_mut(g);
        g.ended = Some(end);
        let (subject, exp) = (g.subject.clone(), g.expires_at_ns);
        self.update_grants(&subject, |set| GrantSet::without(set, id));
        if let Some(exp) = exp {
            self.expiring.remove(&(exp, id));
        }
    }
}

/// The index of `name` in `ix`, or a new slot for it at the end of `slots`.
fn intern<S: Clone>(
    ix: &mut super::NameMap<Ix>,
    slots: &mut imbl::Vector<S>,
    name: impl AsRef<str> + Into<Arc<str>>,
    slot: impl FnOnce(Arc<str>) -> S,
) -> Ix {
    if let Some(&i) = ix.get(name.as_ref()) {
        return i;
    }
    let (name, i) = (name.into(), slots.len() as Ix);
    slots.push_back(slot(Arc::clone(&name)));
    ix.insert(name, i);
    i
}
