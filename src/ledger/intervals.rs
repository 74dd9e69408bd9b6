//! Access intervals (DESIGN §2): the spans of ledger time during which a user's
//! effective access met a level, found by replaying the log over a window.
//!
//! A span is half-open twice over: in seqs, `check --at S` meets the level exactly
//! when `from_seq <= S < to_seq`; in time, `check --at T` meets it exactly when
//! `from <= T < to`. Entries change access at their time; a grant's expiry changes it
//! at the expiry instant, between entries, with no entry needed (the `grant_expired`
//! entry that follows changes nothing more). Only the users an entry or an expiry can
//! concern are evaluated again, so a window costs one replay plus a few evaluations
//! per entry.

use std::collections::{BTreeSet, HashMap, HashSet};

use super::entry::Entry;
use super::event::{Event, GrantSpec, Seq, SocketAccess, Subject, UnixNanos};
use super::policy;
use super::state::{ContainerRecord, GrantState, State};

/// The least access a span requires. The default (no socket, not privileged) asks
/// for any access at all.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Level {
    /// At least this socket (`None`: any socket, or none).
    pub socket: SocketAccess,
    /// Privileged containers.
    pub privileged: bool,
}

impl Level {
    fn asks_anything(&self) -> bool {
        self.socket != SocketAccess::None || self.privileged
    }

    /// An effective access meets the level.
    pub fn met_by(&self, socket: SocketAccess, privileged: bool) -> bool {
        let any = socket != SocketAccess::None || privileged;
        any && socket >= self.socket && (privileged || !self.privileged)
    }

    /// A grant gives some part of what the level asks (with no level: anything).
    pub(super) fn served_by(&self, spec: &GrantSpec) -> bool {
        if !self.asks_anything() {
            return spec.socket != SocketAccess::None || spec.privileged;
        }
        (self.socket != SocketAccess::None && spec.socket >= self.socket)
            || (self.privileged && spec.privileged)
    }

    /// A container exercises every part of the level it asks for (with no level:
    /// holds any privilege). A container under a decision is judged by what the
    /// decision gave, since a limited socket's mount is not the daemon's socket.
    pub(super) fn held_by(&self, c: &ContainerRecord, decided: Option<Decided>) -> bool {
        let d = decided.unwrap_or_default();
        if !self.asks_anything() {
            return c.holds_privilege() || d.socket != SocketAccess::None || d.privileged;
        }
        let socket = match self.socket {
            SocketAccess::None => true,
            SocketAccess::Limited => {
                c.socket.is_some() || c.via_limited_socket || d.socket >= SocketAccess::Limited
            }
            SocketAccess::Raw => c.socket.is_some(),
        };
        socket && (!self.privileged || c.privileged)
    }
}

/// What a recorded spawn decision gave, looked up by the decision label.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Decided {
    pub socket: SocketAccess,
    pub privileged: bool,
}

/// One grant behind a span.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanGrant {
    pub grant: GrantState,
    /// The group it reached the user through; `None` for a direct grant.
    pub via_group: Option<String>,
}

/// A container of the user that held the level during the span.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct HeldContainer {
    pub id: String,
    pub name: String,
}

/// A span during which one user's access met the level.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    pub user: String,
    pub from_seq: Seq,
    pub from_ns: UnixNanos,
    /// The level was already met at the window's start (the span may have begun
    /// earlier; `from` is the window's start).
    pub began_before: bool,
    /// The first seq and instant at which it no longer held; `None` when it still
    /// held at the window's end.
    pub to: Option<(Seq, UnixNanos)>,
    /// The strongest access seen during the span.
    pub socket: SocketAccess,
    pub rw: bool,
    pub privileged: bool,
    /// The grants that gave some part of the level during the span, in the order
    /// they first did.
    pub grants: Vec<SpanGrant>,
    /// Containers that held it, by id.
    pub containers: Vec<HeldContainer>,
}

/// Every span of a window, by user then start.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub spans: Vec<Span>,
    pub from_seq: Seq,
    pub from_ns: UnixNanos,
    pub to_seq: Seq,
    pub to_ns: UnixNanos,
}

/// Replays a window: built from the state at its start, fed its entries in order,
/// finished at its end.
pub struct Replayer<'d> {
    st: State,
    level: Level,
    user: Option<String>,
    /// The time access was last evaluated at.
    now: UnixNanos,
    from_seq: Seq,
    from_ns: UnixNanos,
    open: HashMap<String, Span>,
    /// The (grant, group) pairs each open span already names.
    named: HashMap<String, HashSet<(Seq, Option<String>)>>,
    done: Vec<Span>,
    /// Running containers that hold the level, by user (ids).
    holding: HashMap<String, BTreeSet<String>>,
    decisions: HashMap<String, Option<Decided>>,
    decide: &'d mut dyn FnMut(&str) -> Option<Decided>,
}

impl<'d> Replayer<'d> {
    /// Starts at `st` (the state at the window's start), judging expiry at `at_ns`.
    /// `decide` looks up what a decision label's decision gave.
    pub fn new(
        st: State,
        at_ns: UnixNanos,
        level: Level,
        user: Option<String>,
        decide: &'d mut dyn FnMut(&str) -> Option<Decided>,
    ) -> Replayer<'d> {
        let mut r = Replayer {
            from_seq: st.seq,
            from_ns: at_ns,
            st,
            level,
            user,
            now: at_ns,
            open: HashMap::new(),
            named: HashMap::new(),
            done: Vec::new(),
            holding: HashMap::new(),
            decisions: HashMap::new(),
            decide,
        };
        let ids: Vec<String> = r.st.containers().map(|c| c.id.clone()).collect();
        for id in ids {
            r.track_container(&id, None);
        }
        for u in r.candidates() {
            r.eval(&u, r.st.seq, at_ns);
        }
        for s in r.open.values_mut() {
            s.began_before = true;
        }
        r
    }

    /// Every user any grant reaches at the start (the rest cannot meet any level).
    fn candidates(&self) -> Vec<String> {
        if let Some(u) = &self.user {
            return vec![u.clone()];
        }
        let mut users: BTreeSet<String> = BTreeSet::new();
        for g in self.st.grants().filter(|g| g.ended.is_none()) {
            users.extend(self.subject_users(&g.subject));
        }
        users.into_iter().collect()
    }

    /// The users a grant to `subject` reaches in the current state.
    fn subject_users(&self, subject: &Subject) -> Vec<String> {
        match subject {
            Subject::User(u) => vec![u.clone()],
            Subject::Group(g) => self
                .st
                .group(g)
                .map(|gs| self.st.members(gs).map(str::to_string).collect())
                .unwrap_or_default(),
        }
    }

    fn grant_users(&self, id: Seq) -> Vec<String> {
        self.st
            .grant(id)
            .map(|g| self.subject_users(&g.subject))
            .unwrap_or_default()
    }

    /// Feeds the next entry of the window.
    pub fn step(&mut self, e: &Entry) {
        // Expiries before the entry change access on the state before it; those at
        // its very time are judged with it.
        let mut dirty: Vec<String> = Vec::new();
        for (at, id) in self.st.expiries_in(self.now, e.time_ns) {
            if at < e.time_ns {
                for u in self.grant_users(id) {
                    self.eval(&u, self.st.seq + 1, at);
                }
                self.now = at;
            } else {
                dirty.extend(self.grant_users(id));
            }
        }
        let container = match &e.event {
            Event::DockerContainer(o) => Some(o.container_id.as_str()),
            _ => None,
        };
        let before_user = container
            .and_then(|id| self.st.container(id))
            .and_then(|c| c.user.clone());
        match &e.event {
            Event::GrantRevoked { grant_id, .. } | Event::GrantExpired { grant_id, .. } => {
                dirty.extend(self.grant_users(*grant_id));
            }
            Event::GroupDeleted {
                removed_members, ..
            } => dirty.extend(removed_members.iter().cloned()),
            Event::MemberRemoved { user, .. } | Event::MemberAdded { user, .. } => {
                dirty.push(user.clone())
            }
            _ => {}
        }
        self.st.apply(e.seq, e.time_ns, &e.actor, &e.event);
        self.st.commit_hash(e.hash);
        self.now = e.time_ns;
        // A grant issued changes its subject's users by that grant alone.
        let mut granted: Vec<String> = Vec::new();
        match &e.event {
            Event::GrantIssued { subject, .. } => granted = self.subject_users(subject),
            Event::BuiltinGroupRestored { group, .. } => {
                dirty.extend(self.subject_users(&Subject::Group(group.clone())))
            }
            _ => {}
        }
        if let Some(id) = container {
            if let Some(u) = self.track_container(id, before_user.as_deref()) {
                dirty.push(u);
            }
        }
        dirty.sort_unstable();
        dirty.dedup();
        for u in granted {
            if dirty.binary_search(&u).is_err() {
                self.eval_with(&u, e.seq, e.time_ns, Some(e.seq));
            }
        }
        for u in dirty {
            self.eval(&u, e.seq, e.time_ns);
        }
    }

    /// Ends the window at `to_ns` (expiries up to it count).
    pub fn finish(mut self, to_ns: UnixNanos) -> Report {
        for (at, id) in self.st.expiries_in(self.now, to_ns) {
            for u in self.grant_users(id) {
                self.eval(&u, self.st.seq + 1, at);
            }
            self.now = at;
        }
        let mut spans = self.done;
        spans.extend(self.open.into_values());
        spans.sort_by(|a, b| {
            (&a.user, a.from_seq, a.from_ns).cmp(&(&b.user, b.from_seq, b.from_ns))
        });
        Report {
            spans,
            from_seq: self.from_seq,
            from_ns: self.from_ns,
            to_seq: self.st.seq,
            to_ns: to_ns.max(self.from_ns),
        }
    }

    /// Brings the index of holding containers up to date for container `id`; returns
    /// the user to evaluate again if one has an open span.
    fn track_container(&mut self, id: &str, before_user: Option<&str>) -> Option<String> {
        if let Some(u) = before_user {
            if let Some(set) = self.holding.get_mut(u) {
                set.remove(id);
            }
        }
        let c = self.st.container(id)?.clone();
        let user = c.user.clone()?;
        let decided = match &c.decision_id {
            Some(d) => self.decided(d),
            None => None,
        };
        if c.running && !c.exempt && self.level.held_by(&c, decided) {
            self.holding.entry(user.clone()).or_default().insert(c.id);
        } else if let Some(set) = self.holding.get_mut(&user) {
            set.remove(id);
        }
        Some(user)
    }

    fn decided(&mut self, decision_id: &str) -> Option<Decided> {
        if let Some(d) = self.decisions.get(decision_id) {
            return *d;
        }
        let d = (self.decide)(decision_id);
        self.decisions.insert(decision_id.to_string(), d);
        d
    }

    /// Evaluates `user` at position `seq`, time `at`, and opens, extends or closes
    /// their span.
    fn eval(&mut self, user: &str, seq: Seq, at: UnixNanos) {
        self.eval_with(user, seq, at, None);
    }

    /// [`Replayer::eval`], knowing that the only change for `user` is the grant
    /// `issued` (when given): an open span then needs only that grant added, not a
    /// walk of everything that reaches the user.
    fn eval_with(&mut self, user: &str, seq: Seq, at: UnixNanos, issued: Option<Seq>) {
        if self.user.as_deref().is_some_and(|u| u != user) {
            return;
        }
        let f = policy::fold(&self.st, user, at);
        let meets = self.level.met_by(f.socket, f.privileged);
        if !meets {
            if let Some(mut s) = self.open.remove(user) {
                s.to = Some((seq, at));
                self.named.remove(user);
                self.done.push(s);
            }
            return;
        }
        let level = self.level;
        let was_open = self.open.contains_key(user);
        let named = self.named.entry(user.to_string()).or_default();
        let span = self.open.entry(user.to_string()).or_insert_with(|| Span {
            user: user.to_string(),
            from_seq: seq,
            from_ns: at,
            began_before: false,
            to: None,
            socket: SocketAccess::None,
            rw: false,
            privileged: false,
            grants: Vec::new(),
            containers: Vec::new(),
        });
        span.socket = span.socket.max(f.socket);
        span.rw |= f.socket == SocketAccess::Raw && f.rw;
        span.privileged |= f.privileged;
        let mut name = |grant: &GrantState, via: Option<&str>| {
            if !level.served_by(&grant.spec) || !grant.is_active_at(at) {
                return;
            }
            let key = (grant.id, via.map(str::to_string));
            if named.insert(key.clone()) {
                span.grants.push(SpanGrant {
                    grant: grant.clone(),
                    via_group: key.1,
                });
            }
        };
        match issued.and_then(|id| self.st.grant(id)).filter(|_| was_open) {
            Some(g) => {
                let via = match &g.subject {
                    Subject::Group(name) => Some(name.as_str()),
                    Subject::User(_) => None,
                };
                name(g, via);
                // Containers change only with observations, which walk everything.
                return;
            }
            None => {
                for c in policy::contributions(&self.st, user, at) {
                    name(c.grant, c.via_group);
                }
            }
        }
        if let Some(ids) = self.holding.get(user) {
            for id in ids {
                if span.containers.iter().any(|c| &c.id == id) {
                    continue;
                }
                if let Some(c) = self.st.container(id) {
                    span.containers.push(HeldContainer {
                        id: c.id.clone(),
                        name: c.name.clone(),
                    });
                }
            }
            span.containers.sort();
        }
    }
}
