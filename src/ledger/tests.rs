//! Unit tests of the ledger: combine rules, validation, idempotency, replay.

use std::sync::Arc;

use proptest::prelude::*;
use tokio::sync::oneshot;

use super::event::*;
use super::log::LogStore;
use super::*;

pub(crate) fn open(dir: &std::path::Path, interval: u64) -> Ledger {
    let store = Arc::new(crate::store::SledStore::open(dir).unwrap());
    Ledger::open(
        store,
        LedgerConfig {
            checkpoint_interval: interval,
            spawn: SpawnConfig::default(),
        },
    )
    .unwrap()
}

fn grant(subject: Subject, socket: SocketAccess, mode: SocketMode, privileged: bool) -> Command {
    Command::IssueGrant {
        subject,
        spec: GrantSpec {
            socket,
            socket_mode: mode,
            privileged,
            limits: Limits::default(),
        },
        expires_at_ns: None,
        reason: "test".into(),
    }
}

fn user(u: &str) -> Subject {
    Subject::User(u.into())
}
fn group(g: &str) -> Subject {
    Subject::Group(g.into())
}

async fn ok(l: &Ledger, cmd: Command) -> Committed {
    l.submit("tester", None, cmd).await.unwrap()
}

/// Creates `group` with `user` in it.
async fn group_with(l: &Ledger, group: &str, user: &str) {
    let group = group.to_string();
    ok(
        l,
        Command::CreateGroup {
            group: group.clone(),
        },
    )
    .await;
    let user = user.into();
    ok(
        l,
        Command::AddMember {
            group,
            user,
            reason: None,
        },
    )
    .await;
}

#[tokio::test]
async fn raw_supersedes_limited_and_zeroes_limits_rw_wins_privileged_ors() {
    let dir = tempfile::tempdir().unwrap();
    let l = open(dir.path(), 1000);
    group_with(&l, "g", "alice").await;
    ok(
        &l,
        Command::IssueGrant {
            subject: user("alice"),
            spec: GrantSpec {
                socket: SocketAccess::Limited,
                socket_mode: SocketMode::Rw,
                privileged: false,
                limits: Limits {
                    max_containers: Some(20),
                    ..Limits::default()
                },
            },
            expires_at_ns: None,
            reason: "limited".into(),
        },
    )
    .await;
    let a = l.check_access("alice").unwrap();
    assert_eq!(a.socket, SocketAccess::Limited);
    assert_eq!(a.limits.max_containers, 20);
    assert_eq!(a.limits.max_volumes, 10, "default applies");
    ok(
        &l,
        grant(group("g"), SocketAccess::Raw, SocketMode::Ro, false),
    )
    .await;
    let a = l.check_access("alice").unwrap();
    assert_eq!(a.socket, SocketAccess::Raw);
    assert_eq!(a.socket_mode, SocketMode::Ro);
    assert_eq!(a.limits, EffectiveLimits::default(), "raw zeroes limits");
    assert!(!a.privileged);
    ok(
        &l,
        grant(user("alice"), SocketAccess::Raw, SocketMode::Rw, false),
    )
    .await;
    ok(
        &l,
        grant(group("g"), SocketAccess::None, SocketMode::Rw, true),
    )
    .await;
    let a = l.check_access("alice").unwrap();
    assert_eq!(a.socket_mode, SocketMode::Rw, "rw wins");
    assert!(a.privileged, "privileged ORs");
    assert_eq!(a.provenance().count(), 4);
    assert_eq!(
        a.provenance().filter(|c| c.via_group == Some("g")).count(),
        2
    );
    let bob = l.check_access("bob").unwrap();
    assert!(!bob.any());
    l.shutdown().await;
}

#[tokio::test]
async fn validation_refuses_and_appends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let l = open(dir.path(), 1000);
    let head = l.snapshot().seq;
    let cases = vec![
        Command::AddMember {
            group: "missing".into(),
            user: "a".into(),
            reason: None,
        },
        Command::RevokeGrant {
            grant_id: 99,
            reason: "x".into(),
        },
        Command::DeleteGroup {
            group: "nope".into(),
            reason: Some("test".into()),
        },
        grant(user("a"), SocketAccess::None, SocketMode::Rw, false),
        grant(user("a"), SocketAccess::Limited, SocketMode::Ro, false),
        Command::IssueGrant {
            subject: user("a"),
            spec: GrantSpec {
                socket: SocketAccess::Raw,
                ..GrantSpec::default()
            },
            expires_at_ns: Some(1),
            reason: "past".into(),
        },
        Command::CreateGroup {
            group: "bad\u{0}".into(),
        },
    ];
    for c in cases {
        assert!(l.submit("t", None, c.clone()).await.is_err(), "{c:?}");
    }
    assert_eq!(l.snapshot().seq, head);
    l.shutdown().await;
}

#[tokio::test]
async fn idempotent_retry_appends_once_and_different_op_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let l = open(dir.path(), 1000);
    let c1 = l
        .submit(
            "t",
            Some("r1".into()),
            Command::CreateGroup { group: "g".into() },
        )
        .await
        .unwrap();
    let c2 = l
        .submit(
            "t",
            Some("r1".into()),
            Command::CreateGroup { group: "g".into() },
        )
        .await
        .unwrap();
    assert!(!c1.replayed && c2.replayed);
    assert_eq!(c1.entry.seq, c2.entry.seq);
    assert_eq!(l.snapshot().seq, c1.entry.seq);
    let e = l
        .submit(
            "t",
            Some("r1".into()),
            Command::DeleteGroup {
                group: "g".into(),
                reason: Some("test".into()),
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(e, Error::RequestIdReused { .. }), "{e}");
    // Another actor's request ids are its own.
    let c3 = l
        .submit(
            "u",
            Some("r1".into()),
            Command::CreateGroup { group: "h".into() },
        )
        .await
        .unwrap();
    assert!(!c3.replayed);
    l.shutdown().await;
}

#[tokio::test]
async fn concurrent_writers_share_batches_and_every_ack_is_durable() {
    let dir = tempfile::tempdir().unwrap();
    let l = open(dir.path(), 100);
    ok(&l, Command::CreateGroup { group: "g".into() }).await;
    let mut tasks = Vec::new();
    for i in 0..500 {
        let l = l.clone();
        tasks.push(tokio::spawn(async move {
            l.submit(
                "t",
                None,
                Command::AddMember {
                    group: "g".into(),
                    user: format!("u{i}"),
                    reason: None,
                },
            )
            .await
            .unwrap()
            .entry
            .seq
        }));
    }
    let mut seqs = Vec::new();
    for t in tasks {
        seqs.push(t.await.unwrap());
    }
    seqs.sort();
    seqs.dedup();
    assert_eq!(seqs.len(), 500);
    l.shutdown().await;
    // After the stop: a checkpoint record may have been appended meanwhile.
    let before = l.snapshot();
    drop(l);
    let l = open(dir.path(), 100);
    assert_eq!(*l.snapshot(), *before, "restart restores the same state");
    let report = l.verify(0, 0).await.unwrap();
    assert!(report.first_bad.is_none(), "{report:?}");
    assert_eq!(report.checked, before.seq);
    l.shutdown().await;
}

#[tokio::test]
async fn point_in_time_sees_the_past() {
    let dir = tempfile::tempdir().unwrap();
    let l = open(dir.path(), 3);
    ok(&l, Command::CreateGroup { group: "g".into() }).await;
    ok(
        &l,
        grant(group("g"), SocketAccess::Raw, SocketMode::Rw, false),
    )
    .await;
    let joined = ok(
        &l,
        Command::AddMember {
            group: "g".into(),
            user: "alice".into(),
            reason: None,
        },
    )
    .await;
    for i in 0..10 {
        ok(
            &l,
            Command::CreateGroup {
                group: format!("x{i}"),
            },
        )
        .await;
    }
    ok(
        &l,
        Command::RemoveMember {
            group: "g".into(),
            user: "alice".into(),
            reason: Some("test".into()),
        },
    )
    .await;
    assert!(!l.check_access("alice").unwrap().any());
    let s = joined.entry.seq;
    assert!(l.check_access_at("alice", At::Seq(s)).await.unwrap().any());
    assert!(!l
        .check_access_at("alice", At::Seq(s - 1))
        .await
        .unwrap()
        .any());
    let t = joined.entry.time_ns;
    assert!(l.check_access_at("alice", At::Time(t)).await.unwrap().any());
    assert!(!l
        .check_access_at("alice", At::Time(t - 1))
        .await
        .unwrap()
        .any());
    l.shutdown().await;
}

#[tokio::test]
async fn expiry_is_applied_at_query_time_and_then_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let l = open(dir.path(), 1000);
    let exp = now_ns() + 200_000_000;
    let c = ok(
        &l,
        Command::IssueGrant {
            subject: user("alice"),
            spec: GrantSpec {
                socket: SocketAccess::Raw,
                ..GrantSpec::default()
            },
            expires_at_ns: Some(exp),
            reason: "short".into(),
        },
    )
    .await;
    assert!(l.check_access("alice").unwrap().any());
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let l2 = l.clone();
    let task = tokio::spawn(async move {
        l2.run_expiry(async {
            let _ = stop_rx.await;
        })
        .await
    });
    let mut head = l.inner.head.clone();
    loop {
        let st = l.snapshot();
        if st.grant(c.entry.seq).unwrap().ended.is_some() {
            break;
        }
        head.changed().await.unwrap();
    }
    assert!(!l.check_access("alice").unwrap().any());
    let last = l.entry(l.snapshot().seq).unwrap().unwrap();
    assert_eq!(last.event.kind(), EventKind::GrantExpired);
    stop_tx.send(()).unwrap();
    task.await.unwrap();
    l.shutdown().await;
}

#[tokio::test]
async fn a_decision_lists_every_grant_and_its_reason_names_a_few() {
    let dir = tempfile::tempdir().unwrap();
    let l = open(dir.path(), 1000);
    for g in 0..5 {
        let group = format!("g{g}");
        group_with(&l, &group, "alice").await;
        ok(
            &l,
            grant(
                Subject::Group(group),
                SocketAccess::Raw,
                SocketMode::Ro,
                false,
            ),
        )
        .await;
    }
    let c = ok(
        &l,
        Command::AuthorizeSpawn {
            user: "alice".into(),
            server_name: String::new(),
            image: "img".into(),
        },
    )
    .await;
    let Event::SpawnDecided(d) = &c.entry.event else {
        panic!("not a decision: {:?}", c.entry.event)
    };
    assert_eq!(d.grants.len(), 5);
    assert!(
        d.reason
            .starts_with("raw socket (ro) from grant 3 via group \"g0\""),
        "{}",
        d.reason
    );
    assert!(d.reason.ends_with(", 2 more"), "{}", d.reason);
    l.shutdown().await;
}

#[tokio::test]
async fn records_decode_like_entries() {
    let dir = tempfile::tempdir().unwrap();
    let l = open(dir.path(), 1000);
    group_with(&l, "g", "alice").await;
    l.submit(
        "spawner",
        Some("r-1".into()),
        Command::AuthorizeSpawn {
            user: "alice".into(),
            server_name: String::new(),
            image: "img".into(),
        },
    )
    .await
    .unwrap();
    ok(
        &l,
        Command::RaiseAlert(Alert {
            alert: AlertKind::StaleGrant,
            container_id: None,
            name: None,
            user: Some("alice".into()),
            decision_id: None,
            trigger_seq: None,
            window_from_ns: None,
            window_to_ns: None,
            details: "test".into(),
            lost: None,
            host: None,
            host_seq: None,
        }),
    )
    .await;
    let head = l.snapshot().seq;
    let all = StreamFilter::default();
    for raw in l.inner.store.range(1, head, 1000).unwrap() {
        let entry = Entry::decode(raw.clone()).unwrap();
        let full = EntryRecord::from(entry.clone());
        let light = EntryRecord::decode(raw.clone(), &all).unwrap().unwrap();
        assert_eq!(light, full);
        // The kinds filter passes the same entries either way (an alert also by its
        // own kind).
        for kinds in [
            vec!["member_added"],
            vec!["alert"],
            vec!["stale_grant"],
            vec!["unauthorized_privileged", "spawn_decided"],
        ] {
            let words: Vec<String> = kinds.iter().map(|k| k.to_string()).collect();
            let f = StreamFilter::parse(&words, None).unwrap();
            let got = EntryRecord::decode(raw.clone(), &f).unwrap();
            assert_eq!(
                got.is_some(),
                f.matches(&entry),
                "{kinds:?} on {}",
                full.kind
            );
        }
    }
    assert_eq!(head, 4, "group, member, decision and alert");
    l.shutdown().await;
}

#[derive(Debug, Clone)]
pub(super) enum Op {
    Create(u8),
    Delete(u8),
    Add(u8, u8),
    Remove(u8, u8),
    GrantUser(u8, GrantSpec),
    GrantGroup(u8, GrantSpec),
    /// A grant to a group that expires this many seconds from now.
    GrantGroupExpiring(u8, GrantSpec, u8),
    Revoke(u8),
}

/// Every socket kind and mode, privileged with and without a socket, and limited
/// grants whose limits are set or left to their default field by field, with
/// varied values (so "rw if any raw grant is rw" and the per-field maximum are both
/// exercised).
pub(super) fn spec() -> impl Strategy<Value = GrantSpec> {
    let mode = prop_oneof![Just(SocketMode::Rw), Just(SocketMode::Ro)];
    let raw = (mode, any::<bool>()).prop_map(|(socket_mode, privileged)| GrantSpec {
        socket: SocketAccess::Raw,
        socket_mode,
        privileged,
        limits: Limits::default(),
    });
    let only_privileged = Just(GrantSpec {
        socket: SocketAccess::None,
        socket_mode: SocketMode::Rw,
        privileged: true,
        limits: Limits::default(),
    });
    let count = proptest::option::of(0u32..40);
    // Quarter steps: exact in binary, so maxima compare exactly.
    let amount = proptest::option::of((0u32..400).prop_map(|q| f64::from(q) / 4.0));
    let limits = (
        (count.clone(), count.clone(), count),
        (amount.clone(), amount.clone(), amount),
        (
            proptest::option::of(any::<bool>()),
            proptest::option::of(16u32..5000),
            proptest::option::of(any::<bool>()),
        ),
    )
        .prop_map(|((c, v, n), (s, cpu, mem), (d, pids, publish))| Limits {
            max_containers: c,
            max_volumes: v,
            max_networks: n,
            max_storage_gb: s,
            cpu_cap_cores: cpu,
            mem_cap_gb: mem,
            allow_dangerous_flags: d,
            max_pids: pids,
            publish: publish.map(|l| {
                if l {
                    PublishPorts::Loopback
                } else {
                    PublishPorts::Off
                }
            }),
            allow_build: d.map(|x| !x),
            pull_allow: match pids.map(|p| p % 3) {
                Some(0) => vec!["busybox".into()],
                Some(1) => vec!["busybox".into(), "127.0.0.1:5000/**".into()],
                _ => vec![],
            },
            push_allow: vec![],
        });
    let limited = (limits, any::<bool>()).prop_map(|(limits, privileged)| GrantSpec {
        socket: SocketAccess::Limited,
        socket_mode: SocketMode::Rw,
        privileged,
        limits,
    });
    prop_oneof![3 => raw, 1 => only_privileged, 3 => limited]
}

pub(super) fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..4).prop_map(Op::Create),
        (0u8..4).prop_map(Op::Delete),
        (0u8..4, 0u8..6).prop_map(|(g, u)| Op::Add(g, u)),
        (0u8..4, 0u8..6).prop_map(|(g, u)| Op::Remove(g, u)),
        (0u8..6, spec()).prop_map(|(u, s)| Op::GrantUser(u, s)),
        (0u8..4, spec()).prop_map(|(g, s)| Op::GrantGroup(g, s)),
        (0u8..4, spec(), 1u8..8).prop_map(|(g, s, e)| Op::GrantGroupExpiring(g, s, e)),
        (0u8..40).prop_map(Op::Revoke),
    ]
}

pub(super) fn to_cmd(op: &Op) -> Command {
    match op {
        Op::Create(g) => Command::CreateGroup {
            group: format!("g{g}"),
        },
        Op::Delete(g) => Command::DeleteGroup {
            group: format!("g{g}"),
            reason: Some("test".into()),
        },
        Op::Add(g, u) => Command::AddMember {
            group: format!("g{g}"),
            user: format!("u{u}"),
            reason: None,
        },
        Op::Remove(g, u) => Command::RemoveMember {
            group: format!("g{g}"),
            user: format!("u{u}"),
            reason: Some("test".into()),
        },
        Op::GrantUser(u, s) => Command::IssueGrant {
            subject: Subject::User(format!("u{u}")),
            spec: s.clone(),
            expires_at_ns: None,
            reason: "p".into(),
        },
        Op::GrantGroup(g, s) => Command::IssueGrant {
            subject: Subject::Group(format!("g{g}")),
            spec: s.clone(),
            expires_at_ns: None,
            reason: "p".into(),
        },
        Op::GrantGroupExpiring(g, s, e) => Command::IssueGrant {
            subject: Subject::Group(format!("g{g}")),
            spec: s.clone(),
            expires_at_ns: Some(now_ns() + i64::from(*e) * 1_000_000_000),
            reason: "p".into(),
        },
        Op::Revoke(id) => Command::RevokeGrant {
            grant_id: *id as u64,
            reason: "p".into(),
        },
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    /// A full replay from seq 1, a replay from any checkpoint, and the incrementally
    /// built state all agree, whatever the sequence of (valid or refused) operations.
    #[test]
    fn replay_equals_incremental(ops in proptest::collection::vec(op(), 1..60), interval in 1u64..20) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let l = open(dir.path(), interval);
            for o in &ops {
                let _ = l.submit("p", None, to_cmd(o)).await;
            }
            l.shutdown().await;
            // After the stop: checkpoint records appended meanwhile are included.
            let incremental = l.snapshot();
            drop(l);
            let store = crate::store::SledStore::open(dir.path()).unwrap();
            let loaded = load::at_start(&store, false).unwrap();
            prop_assert_eq!(&loaded.state, &*incremental);
            // A past position, from the checkpoints the current state vouches for.
            let mid = incremental.seq / 2;
            let past = load::at_seq(&store, &incremental, mid).unwrap();
            prop_assert_eq!(past.seq, mid);
            // Full replay, ignoring checkpoints.
            let mut full = State::default();
            for raw in store.range(1, incremental.seq, usize::MAX).unwrap() {
                let e = Entry::decode(raw).unwrap();
                full.apply(e.seq, e.time_ns, &e.actor, &e.event);
                full.commit_hash(e.hash);
            }
            prop_assert_eq!(&full, &*incremental);
            // The checkpoint encoding round-trips.
            let rt = State::from_checkpoint(&incremental.to_checkpoint().unwrap()[..]).unwrap();
            prop_assert_eq!(&rt, &*incremental);
            Ok(())
        })?;
    }

    /// The indexed, precombined evaluation gives what a plain scan of every grant gives,
    /// at any time (so also past some grants' expiry).
    #[test]
    fn evaluation_equals_scan(ops in proptest::collection::vec(op(), 1..60)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let l = open(dir.path(), 1000);
            for o in &ops {
                let _ = l.submit("p", None, to_cmd(o)).await;
            }
            let st = l.snapshot();
            let t0 = st.time_ns;
            for u in 0..6 {
                let user = format!("u{u}");
                for secs in 0..9i64 {
                    let at = t0 + secs * 1_000_000_000;
                    let a = policy::evaluate(&st, &user, at);
                    let (socket, mode, privileged, limits, mut ids) = scan(&st, &user, at);
                    prop_assert_eq!(a.socket, socket);
                    prop_assert_eq!(a.privileged, privileged);
                    prop_assert_eq!(&a.limits, &limits);
                    if socket == SocketAccess::Raw {
                        prop_assert_eq!(a.socket_mode, mode);
                    }
                    let mut got: Vec<Seq> = a.provenance().map(|c| c.grant.id).collect();
                    got.sort_unstable();
                    ids.sort_unstable();
                    prop_assert_eq!(got, ids);
                }
            }
            l.shutdown().await;
            Ok(())
        })?;
    }
}

/// Effective access by the definition (DESIGN §2), scanning every grant ever issued.
fn scan(
    st: &State,
    user: &str,
    at: UnixNanos,
) -> (SocketAccess, SocketMode, bool, EffectiveLimits, Vec<Seq>) {
    let (mut socket, mut rw, mut privileged, mut limits, mut ids) = (
        SocketAccess::None,
        false,
        false,
        None::<EffectiveLimits>,
        Vec::new(),
    );
    for g in st.grants().filter(|g| g.is_active_at(at)) {
        let reaches = match &g.subject {
            Subject::User(u) => u == user,
            Subject::Group(n) => st
                .group(n)
                .is_some_and(|gs| st.members(gs).any(|m| m == user)),
        };
        if !reaches {
            continue;
        }
        ids.push(g.id);
        socket = socket.max(g.spec.socket);
        privileged |= g.spec.privileged;
        rw |= g.spec.socket == SocketAccess::Raw && g.spec.socket_mode == SocketMode::Rw;
        if g.spec.socket == SocketAccess::Limited {
            let l = g.spec.limits.resolved();
            limits = Some(match limits.take() {
                Some(a) => a.max(l),
                None => l,
            });
        }
    }
    let limits = match (socket, limits) {
        (SocketAccess::Limited, Some(l)) => l,
        _ => EffectiveLimits::default(),
    };
    let mode = if rw { SocketMode::Rw } else { SocketMode::Ro };
    (socket, mode, privileged, limits, ids)
}

/// A store whose appends fail as `fault` says.
struct FaultyAppend(crate::store::SledStore, Fault);

enum Fault {
    /// The writer thread dies mid-batch.
    Panic,
    /// The cluster's log cannot say whether it took the batch (an etcd member that
    /// timed out after the commit).
    Unconfirmed,
}

impl LogStore for FaultyAppend {
    fn append(&self, _: log::AppendBatch<'_>) -> log::StoreResult<()> {
        match self.1 {
            Fault::Panic => panic!("injected: the writer dies in an append"),
            Fault::Unconfirmed => Err(log::StoreError::Unconfirmed {
                reason: "injected: etcd did not answer".into(),
                local_failed: false,
            }),
        }
    }
    fn recover(&self, head: log::Witness) -> log::StoreResult<()> {
        self.0.recover(head)
    }
    fn get(&self, seq: Seq) -> log::StoreResult<Option<log::RawEntry>> {
        self.0.get(seq)
    }
    fn range(&self, from: Seq, to: Seq, limit: usize) -> log::StoreResult<Vec<log::RawEntry>> {
        self.0.range(from, to, limit)
    }
    fn last(&self) -> log::StoreResult<Option<log::RawEntry>> {
        self.0.last()
    }
    fn earliest(&self) -> log::StoreResult<Option<Seq>> {
        self.0.earliest()
    }
    fn witness(&self) -> log::StoreResult<Option<log::Witness>> {
        self.0.witness()
    }
    fn idempotency_get(&self, key: &[u8]) -> log::StoreResult<Option<Seq>> {
        self.0.idempotency_get(key)
    }
    fn meta_get(&self, key: &str) -> log::StoreResult<Option<Vec<u8>>> {
        self.0.meta_get(key)
    }
    fn put_checkpoint(&self, seq: Seq, bytes: &[u8]) -> log::StoreResult<()> {
        self.0.put_checkpoint(seq, bytes)
    }
    fn prune_checkpoints(&self, newest: usize, window: u64) -> log::StoreResult<()> {
        self.0.prune_checkpoints(newest, window)
    }
    fn checkpoint_seqs(&self) -> log::StoreResult<Vec<Seq>> {
        self.0.checkpoint_seqs()
    }
    fn open_checkpoint(&self, seq: Seq) -> log::StoreResult<log::StoredCheckpoint> {
        self.0.open_checkpoint(seq)
    }
    fn read_only(&self) -> bool {
        false
    }
}

#[tokio::test]
async fn a_writer_that_dies_stops_claiming_writes_and_every_write_is_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let store = FaultyAppend(
        crate::store::SledStore::open(dir.path()).unwrap(),
        Fault::Panic,
    );
    let l = Ledger::open(Arc::new(store), LedgerConfig::default()).unwrap();
    let mut status = l.watch_write_status();
    assert_eq!(*status.borrow(), WriteStatus::Writable);
    let create = Command::CreateGroup { group: "g".into() };
    let e = l.submit("t", None, create.clone()).await.unwrap_err();
    assert!(matches!(e, Error::WriterStopped), "{e}");
    assert!(e.is_unavailable());
    status
        .wait_for(|s| *s == WriteStatus::Stopped)
        .await
        .unwrap();
    let again = l.submit("t", None, create).await.unwrap_err();
    assert!(again.is_unavailable(), "{again}");
    assert_eq!(l.snapshot().seq, 0, "nothing was published");
    assert!(l.check_access("alice").is_ok(), "reads go on");
}

#[tokio::test]
async fn a_write_whose_outcome_is_unknown_says_so_and_storage_does_not_stall() {
    let dir = tempfile::tempdir().unwrap();
    let store = FaultyAppend(
        crate::store::SledStore::open(dir.path()).unwrap(),
        Fault::Unconfirmed,
    );
    let l = Ledger::open(Arc::new(store), LedgerConfig::default()).unwrap();
    let create = Command::CreateGroup { group: "g".into() };
    let e = l.submit("t", Some("r1".into()), create).await.unwrap_err();
    assert!(matches!(e, Error::OutcomeUnknown(_)), "{e}");
    assert!(e.is_unavailable());
    let status = tonic::Status::from(e);
    assert_eq!(status.code(), tonic::Code::Unavailable);
    let msg = status.message();
    assert!(
        msg.contains("may have been recorded") && msg.contains("same request_id"),
        "{msg}"
    );
    assert!(!msg.contains("nothing was recorded"), "{msg}");
    assert_eq!(*l.watch_write_status().borrow(), WriteStatus::Writable);
}

/// Every client mutation, and a variant of it that differs in one field the client
/// chose: the same request_id with the variant must be refused, naming the first seq.
fn mutations_and_variants() -> Vec<(Command, Command)> {
    let token =
        |name: &str, role: Role, secret: &str, exp: Option<UnixNanos>| Command::CreateToken {
            name: name.into(),
            role,
            secret_sha256: secret.into(),
            expires_at_ns: exp,
        };
    let far = now_ns() + 3_600_000_000_000;
    vec![
        (
            Command::CreateGroup { group: "g1".into() },
            Command::CreateGroup { group: "g2".into() },
        ),
        (
            Command::AddMember {
                group: "g1".into(),
                user: "alice".into(),
                reason: None,
            },
            Command::AddMember {
                group: "g1".into(),
                user: "bob".into(),
                reason: None,
            },
        ),
        (
            Command::RemoveMember {
                group: "g1".into(),
                user: "alice".into(),
                reason: Some("test".into()),
            },
            Command::RemoveMember {
                group: "g1".into(),
                user: "bob".into(),
                reason: Some("test".into()),
            },
        ),
        (
            grant(user("alice"), SocketAccess::Raw, SocketMode::Rw, false),
            grant(user("bob"), SocketAccess::Raw, SocketMode::Rw, false),
        ),
        (
            Command::AuthorizeSpawn {
                user: "alice".into(),
                server_name: "".into(),
                image: "i".into(),
            },
            Command::AuthorizeSpawn {
                user: "bob".into(),
                server_name: "".into(),
                image: "i".into(),
            },
        ),
        (
            token("t1", Role::Spawner, "aa", None),
            token("t1", Role::Admin, "bb", None),
        ),
        (
            token("t2", Role::Auditor, "cc", None),
            token("t2", Role::Auditor, "dd", Some(far)),
        ),
        (
            Command::RevokeToken { name: "t1".into() },
            Command::RevokeToken { name: "t2".into() },
        ),
        (
            Command::DeleteGroup {
                group: "g1".into(),
                reason: Some("test".into()),
            },
            Command::DeleteGroup {
                group: "g2".into(),
                reason: Some("test".into()),
            },
        ),
    ]
}

#[tokio::test]
async fn a_request_id_is_bound_to_its_request_not_just_its_kind() {
    let dir = tempfile::tempdir().unwrap();
    let l = open(dir.path(), 1000);
    ok(&l, Command::CreateGroup { group: "g2".into() }).await;
    let mut firsts = Vec::new();
    for (i, (first, variant)) in mutations_and_variants().into_iter().enumerate() {
        let rid = format!("r{i}");
        let c = l
            .submit("t", Some(rid.clone()), first.clone())
            .await
            .unwrap();
        assert!(!c.replayed);
        let head = l.snapshot().seq;
        let e = l
            .submit("t", Some(rid.clone()), variant.clone())
            .await
            .unwrap_err();
        match &e {
            Error::RequestIdReused { seq, .. } => assert_eq!(*seq, c.entry.seq, "{e}"),
            _ => panic!("{first:?} then {variant:?}: {e}"),
        }
        assert_eq!(e.cause(), error::Cause::NotAllowed);
        assert_eq!(l.snapshot().seq, head, "nothing appended");
        // The same request again is a replay of the first answer.
        let again = l.submit("t", Some(rid), first.clone()).await.unwrap();
        assert!(again.replayed);
        assert_eq!(again.entry.seq, c.entry.seq);
        firsts.push((c.entry.seq, first, variant));
    }
    // After a restart, the digests come from the stored entries.
    l.shutdown().await;
    drop(l);
    let l = open(dir.path(), 1000);
    for (i, (seq, first, variant)) in firsts.into_iter().enumerate() {
        let rid = format!("r{i}");
        let e = l.submit("t", Some(rid.clone()), variant).await.unwrap_err();
        assert!(
            matches!(e, Error::RequestIdReused { seq: s, .. } if s == seq),
            "{e}"
        );
        let again = l.submit("t", Some(rid), first).await.unwrap();
        assert!(again.replayed && again.entry.seq == seq);
    }
}

#[tokio::test]
async fn a_request_id_reused_within_one_batch_is_bound_too() {
    let dir = tempfile::tempdir().unwrap();
    let l = open(dir.path(), 1000);
    let a = Command::CreateGroup { group: "a".into() };
    let b = Command::CreateGroup { group: "b".into() };
    let (ra, rb) = tokio::join!(
        l.submit("t", Some("same".into()), a),
        l.submit("t", Some("same".into()), b)
    );
    // Whichever came first is recorded; the other is refused, never answered with it.
    assert!(ra.is_ok() != rb.is_ok(), "{ra:?} {rb:?}");
    assert_eq!(l.snapshot().groups().count(), 1);
}

#[tokio::test]
async fn the_last_usable_admin_token_cannot_be_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let l = open(dir.path(), 1000);
    let token = |name: &str, role: Role, exp: Option<UnixNanos>| Command::CreateToken {
        name: name.into(),
        role,
        secret_sha256: format!("hash-of-{name}"),
        expires_at_ns: exp,
    };
    ok(&l, token("admin", Role::Admin, None)).await;
    ok(&l, token("auditor", Role::Auditor, None)).await;
    let last = |e: Error| matches!(e, Error::LastAdmin(n) if n == "admin");
    let e = l
        .submit(
            "t",
            None,
            Command::RevokeToken {
                name: "admin".into(),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.cause(), error::Cause::NotAllowed);
    assert!(last(e));
    // An admin that expires soon does not count once it has expired; one that is
    // still valid does.
    ok(
        &l,
        token("admin2", Role::Admin, Some(now_ns() + 3_600_000_000_000)),
    )
    .await;
    ok(
        &l,
        Command::RevokeToken {
            name: "admin".into(),
        },
    )
    .await;
    let e = l
        .submit(
            "t",
            None,
            Command::RevokeToken {
                name: "admin2".into(),
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(e, Error::LastAdmin(n) if n == "admin2"));
    // Non-admin tokens are never the last admin.
    ok(
        &l,
        Command::RevokeToken {
            name: "auditor".into(),
        },
    )
    .await;
    // An expiry in the past is refused.
    let e = l
        .submit("t", None, token("old", Role::Auditor, Some(now_ns() - 1)))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::ExpiryNotInFuture(_)), "{e}");
}

/// Appends `n` entries from 64 concurrent submitters (group commit batches them).
async fn append_many(l: &Ledger, n: usize) {
    let per = n / 64;
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let l = l.clone();
            tokio::spawn(async move {
                for _ in 0..per {
                    l.submit(
                        "load",
                        None,
                        Command::ServerStarted {
                            version: "x".into(),
                        },
                    )
                    .await
                    .unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

/// A follower that takes nothing for the stall timeout is ended with the seq to
/// resume from, after the entries it was already given.
#[tokio::test]
async fn a_stream_whose_consumer_stalls_ends_naming_where_to_resume() {
    let dir = tempfile::tempdir().unwrap();
    let l = open(dir.path(), 100_000);
    append_many(&l, 64 * 40).await;
    let stall = std::time::Duration::from_millis(50);
    let mut rx = l
        .stream_records(1, true, StreamFilter::default(), 1, Some(stall))
        .unwrap();
    // The channel holds one chunk and, only once the producer has given up, its last
    // word: wait (bounded) until both are there.
    let bound = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while rx.len() < 2 {
        assert!(
            std::time::Instant::now() < bound,
            "the stream never stalled"
        );
        // The producer runs on this runtime: let it, without reading.
        tokio::task::yield_now().await;
    }
    let first = rx.recv().await.unwrap().unwrap();
    assert_eq!(first.first().unwrap().seq, 1);
    let resume = first.last().unwrap().seq + 1;
    match rx.recv().await.unwrap() {
        Err(Error::StreamStalled { resume_from, .. }) => assert_eq!(resume_from, resume),
        other => panic!("{other:?}"),
    }
    assert!(rx.recv().await.is_none(), "nothing after the last word");
}

/// A verify that began before a write it did not wait for (its head is older than
/// the witness the write then moved) does not take that write for a loss.
#[tokio::test]
async fn a_write_during_a_verify_is_not_taken_for_a_lost_entry() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(crate::store::SledStore::open(dir.path()).unwrap());
    let l = Ledger::open(store.clone(), LedgerConfig::default()).unwrap();
    for g in ["g1", "g2", "g3"] {
        let create = Command::CreateGroup { group: g.into() };
        l.submit("admin", None, create).await.unwrap();
    }
    let head = l.snapshot().seq;
    // As the verify saw it when it began: one entry behind the witness.
    let w = store.witness().unwrap().map(|w| w.seq);
    assert_eq!(w, Some(head), "the witness records the head");
    let r = super::verify::verify_range(&*store, 0, head - 1, head - 1).unwrap();
    assert_eq!(r.first_bad, None, "{r:?}");
    assert_eq!(r.checked, head - 1);
    l.shutdown().await;
}
