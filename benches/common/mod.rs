//! Shared by the benches: the synthetic population (the same shape as
//! `privledger-bench populate`), a temp-dir ledger, and concurrent submitters.

#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use privledger::ledger::event::{Event, GrantSpec, SocketAccess, SocketMode, Subject};
use privledger::ledger::{Command, Ledger, LedgerConfig, State};
use privledger::store::SledStore;

/// The population DESIGN §7 names.
#[derive(Debug, Clone, Copy)]
pub struct Population {
    pub users: usize,
    pub groups: usize,
    pub groups_per_user: usize,
    pub grants: usize,
}

impl Population {
    pub const DESIGN: Population = Population {
        users: 100_000,
        groups: 10_000,
        groups_per_user: 20,
        grants: 50_000,
    };

    /// `users=…/groups=…/groups_per_user=…/grants=…`, for case names.
    pub fn label(&self) -> String {
        format!(
            "users={}/groups={}/groups_per_user={}/grants={}",
            self.users, self.groups, self.groups_per_user, self.grants
        )
    }

    /// Every event of the population, in order: groups, memberships (each user's
    /// groups spread over the whole range), then grants (four in five to groups, one
    /// in five to users; limited, raw or privileged in turn).
    pub fn events(&self) -> impl Iterator<Item = Event> + '_ {
        let groups = (0..self.groups).map(|g| Event::GroupCreated {
            group: group_name(g),
        });
        let gpu = self.groups_per_user.max(1);
        let stride = (self.groups / gpu).max(1);
        let members = (0..self.users * self.groups_per_user).map(move |k| {
            let (u, j) = (k / gpu, k % gpu);
            Event::MemberAdded {
                group: group_name((u * 7919 + j * stride) % self.groups),
                user: user_name(u),
                reason: None,
            }
        });
        let grants = (0..self.grants).map(move |i| {
            let subject = if i % 5 == 4 {
                Subject::User(user_name(i % self.users))
            } else {
                Subject::Group(group_name(i % self.groups))
            };
            Event::GrantIssued {
                subject,
                spec: spec(i),
                expires_at_ns: None,
                reason: "benchmark population".into(),
                builtin: false,
            }
        });
        groups.chain(members).chain(grants)
    }

    /// The same events as commands, for the writer.
    pub fn commands(&self) -> Vec<Command> {
        self.events()
            .map(|e| match e {
                Event::GroupCreated { group } => Command::CreateGroup { group },
                Event::MemberAdded { group, user, .. } => Command::AddMember {
                    group,
                    user,
                    reason: None,
                },
                Event::GrantIssued {
                    subject,
                    spec,
                    reason,
                    ..
                } => Command::IssueGrant {
                    subject,
                    spec,
                    expires_at_ns: None,
                    reason,
                },
                _ => unreachable!(),
            })
            .collect()
    }

    /// The state, built by applying the events directly (no writer, no disk).
    pub fn state(&self) -> State {
        let mut st = State::default();
        for (i, e) in self.events().enumerate() {
            st.apply(i as u64 + 1, 1_000_000_000 + i as i64, "bench", &e);
        }
        st
    }
}

fn spec(i: usize) -> GrantSpec {
    let (socket, privileged) = match i % 3 {
        0 => (SocketAccess::Limited, false),
        1 => (SocketAccess::Raw, false),
        _ => (SocketAccess::None, true),
    };
    GrantSpec {
        socket,
        socket_mode: SocketMode::Rw,
        privileged,
        limits: Default::default(),
    }
}

pub fn user_name(i: usize) -> String {
    format!("u{i:06}")
}

pub fn group_name(i: usize) -> String {
    format!("g{i:05}")
}

pub fn open(dir: &std::path::Path) -> Ledger {
    let store = std::sync::Arc::new(SledStore::open(dir).expect("store"));
    Ledger::open(store, LedgerConfig::default()).expect("ledger")
}

/// Submits `cmds` through `ledger` with `writers` concurrent callers; panics on the
/// first refused command.
pub async fn submit_all(ledger: &Ledger, cmds: Vec<Command>, writers: usize) {
    let cmds = Arc::new(cmds);
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..writers.max(1) {
        let (l, cmds, next) = (ledger.clone(), cmds.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(c) = cmds.get(i) else { return };
                l.submit("bench", None, c.clone()).await.expect("submit");
            }
        }));
    }
    for t in tasks {
        t.await.expect("submitter");
    }
}

/// `n` spawn decisions for users of `pop`.
pub fn decisions(pop: &Population, n: usize) -> Vec<Command> {
    (0..n)
        .map(|i| Command::AuthorizeSpawn {
            user: user_name(i % pop.users.max(1)),
            server_name: String::new(),
            image: "jupyter/base-notebook".into(),
        })
        .collect()
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
}
