//! DESIGN §3, the ledger: idempotent retries, restarts that keep every acknowledged
//! entry, point-in-time answers, the followed audit stream, and verify.

mod common;

use common::*;
use pb::{SocketAccess as S, SocketMode as M};
use privledger::pb;
use tonic::Code;

#[tokio::test]
async fn idempotent_retry_appends_once() {
    let (s, mut c) = TestServer::start_admin().await;
    let req = pb::AuthorizeSpawnRequest {
        user: "alice".into(),
        request_id: "spawn-42".into(),
        ..Default::default()
    };
    let d1 = ok(c.authz.authorize_spawn(req.clone())).await;
    let after = head(&mut c).await;
    let d2 = ok(c.authz.authorize_spawn(req)).await;
    assert_eq!(head(&mut c).await, after);
    assert_eq!(d1.decision_id, d2.decision_id);
    assert!(!d1.replayed && d2.replayed);
    let g = pb::IssueGrantRequest {
        request_id: "g-1".into(),
        ..grant_req(user("x"), spec(S::Raw, M::Rw, false))
    };
    let g1 = ok(c.admin.issue_grant(g.clone())).await;
    let g2 = ok(c.admin.issue_grant(g)).await;
    assert_eq!(g1.id, g2.id);
    assert!(!g1.replayed && g2.replayed);
    let m = pb::MemberRequest {
        group: "docker-privileged".into(),
        user: "z".into(),
        request_id: "m-1".into(),
        users: vec![],
        reason: String::new(),
    };
    let r1 = ok(c.admin.add_member(m.clone())).await;
    let r2 = ok(c.admin.add_member(m)).await;
    assert_eq!(r1.seq, r2.seq);
    assert!(r2.replayed);
    // The same request_id for another operation is refused.
    let r = c
        .admin
        .create_group(pb::CreateGroupRequest {
            name: "q".into(),
            request_id: "m-1".into(),
        })
        .await;
    assert_eq!(code(r), Code::FailedPrecondition);
    s.stop().await;
}

#[tokio::test]
async fn restart_keeps_every_acknowledged_entry_and_the_same_state() {
    let (s, mut c) = TestServer::start_admin().await;
    ok(c.admin.create_group(create_group("g"))).await;
    for i in 0..40 {
        ok(c.admin.add_member(member("g", &format!("u{i}")))).await;
    }
    ok(c.admin
        .issue_grant(grant_req(group("g"), spec(S::Raw, M::Ro, true))))
    .await;
    let head1 = ok(c.audit.head(pb::HeadRequest {})).await;
    let who1 = ok(c.authz.who_has_access(pb::WhoHasAccessRequest { at: None })).await;
    let grants1 = ok(c.admin.list_grants(pb::ListGrantsRequest {
        subject: None,
        include_inactive: true,
    }))
    .await;
    drop(c);
    let s = s.restart().await;
    let mut c = s.admin().await;
    let head2 = ok(c.audit.head(pb::HeadRequest {})).await;
    // The restart appends exactly one entry (server_started); everything before is intact.
    assert_eq!(head2.seq, head1.seq + 1);
    let who2 = ok(c.authz.who_has_access(pb::WhoHasAccessRequest {
        at: Some(pb::Position {
            at: Some(pb::position::At::Seq(head1.seq)),
        }),
    }))
    .await;
    assert_eq!(who1.users.len(), 40);
    assert_eq!(
        who1.users
            .iter()
            .map(|a| (&a.user, a.socket, a.privileged))
            .collect::<Vec<_>>(),
        who2.users
            .iter()
            .map(|a| (&a.user, a.socket, a.privileged))
            .collect::<Vec<_>>()
    );
    let grants2 = ok(c.admin.list_grants(pb::ListGrantsRequest {
        subject: None,
        include_inactive: true,
    }))
    .await;
    assert_eq!(grants1.grants, grants2.grants);
    let v = ok(c.audit.verify(pb::VerifyRequest::default())).await;
    assert!(v.ok, "{v:?}");
    assert_eq!(v.checked, head2.seq);
    s.stop().await;
}

#[tokio::test]
async fn point_in_time_answers_before_and_after_a_change() {
    let (s, mut c) = TestServer::start_admin().await;
    let before = head(&mut c).await;
    let added = ok(c.admin.add_member(member("docker-privileged", "alice"))).await;
    let removed = ok(c.admin.remove_member(member("docker-privileged", "alice"))).await;
    let at = |seq| pb::CheckAccessRequest {
        user: "alice".into(),
        at: Some(pb::Position {
            at: Some(pb::position::At::Seq(seq)),
        }),
        ..Default::default()
    };
    let sock = |a: pb::Access| a.socket;
    assert_eq!(
        sock(ok(c.authz.check_access(at(before))).await),
        S::None as i32
    );
    let a = ok(c.authz.check_access(at(added.seq))).await;
    assert_eq!(a.socket, S::Raw as i32);
    assert_eq!(a.seq, added.seq);
    assert_eq!(a.provenance[0].via_group, "docker-privileged");
    assert_eq!(
        sock(ok(c.authz.check_access(at(removed.seq))).await),
        S::None as i32
    );
    // By time: the entry's own time sees the membership.
    let e = ok(c.audit.stream(stream_from(added.seq, false)))
        .await
        .message()
        .await
        .unwrap()
        .unwrap();
    let t = e.time.unwrap();
    let by_time = pb::CheckAccessRequest {
        user: "alice".into(),
        at: Some(pb::Position {
            at: Some(pb::position::At::Time(t)),
        }),
        ..Default::default()
    };
    assert_eq!(sock(ok(c.authz.check_access(by_time)).await), S::Raw as i32);
    let who = ok(c.authz.who_has_access(pb::WhoHasAccessRequest {
        at: Some(pb::Position {
            at: Some(pb::position::At::Seq(added.seq)),
        }),
    }))
    .await;
    assert_eq!(
        who.users
            .iter()
            .map(|u| u.user.as_str())
            .collect::<Vec<_>>(),
        vec!["alice"]
    );
    s.stop().await;
}

#[tokio::test]
async fn stream_follow_while_10000_entries_are_appended_has_no_gap_and_no_duplicate() {
    let (s, mut c) = TestServer::start_admin().await;
    let start = head(&mut c).await;
    let mut stream = ok(c.audit.stream(stream_from(1, true))).await;
    const N: u64 = 10_000;
    const WRITERS: u64 = 32;
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let mut authz = c.authz.clone();
        writers.push(tokio::spawn(async move {
            for i in 0..N / WRITERS + u64::from(w < N % WRITERS) {
                authz
                    .authorize_spawn(pb::AuthorizeSpawnRequest {
                        user: format!("u{w}-{i}"),
                        ..Default::default()
                    })
                    .await
                    .unwrap();
            }
        }));
    }
    let target = start + N;
    let mut expect = 1;
    while expect <= target {
        let e = stream.message().await.unwrap().expect("stream stays open");
        assert_eq!(e.seq, expect, "no gap, no duplicate");
        expect += 1;
    }
    for w in writers {
        w.await.unwrap();
    }
    // Besides the decisions, the ledger records each checkpoint it writes (on its own
    // time: count those up to the head read first).
    let h = head(&mut c).await;
    let mut cps = ok(c.audit.stream(pb::StreamRequest {
        from_seq: 1,
        follow: false,
        kinds: vec!["state_checkpointed".into()],
        subject: String::new(),
    }))
    .await;
    let mut recorded = 0;
    while let Some(e) = cps.message().await.unwrap() {
        recorded += u64::from(e.seq <= h);
    }
    assert_eq!(h, target + recorded);
    // Filters: only decisions of one user.
    let mut f = ok(c.audit.stream(pb::StreamRequest {
        from_seq: 1,
        follow: false,
        kinds: vec!["spawn_decided".into()],
        subject: "u3-7".into(),
    }))
    .await;
    let e = f.message().await.unwrap().unwrap();
    assert_eq!(e.kind, "spawn_decided");
    assert!(f.message().await.unwrap().is_none());
    s.stop().await;
}

#[tokio::test]
async fn verify_finds_a_flipped_byte_and_names_its_seq() {
    let (s, mut c) = TestServer::start_admin().await;
    for i in 0..20 {
        ok(c.admin.create_group(create_group(&format!("group-{i:02}")))).await;
    }
    let victim = ok(c.admin.get_group(get_group("group-11")))
        .await
        .created_seq;
    assert!(ok(c.audit.verify(pb::VerifyRequest::default())).await.ok);
    drop(c);
    let (cfg, dir) = s.stop().await;
    {
        // Tamper with the stored body: group-11 becomes group-12 (still valid JSON).
        // The entry is in its sealed block, or still waiting for the block to fill.
        let db = sled::open(cfg.data_dir.join("ledger.sled")).unwrap();
        let block = ((victim - 1) / privledger::store::block::BLOCK).to_be_bytes();
        let (t, key) = match db.open_tree("log").unwrap().get(block).unwrap() {
            Some(_) => (db.open_tree("log").unwrap(), block),
            None => (db.open_tree("tail").unwrap(), victim.to_be_bytes()),
        };
        let mut v = t.get(key).unwrap().unwrap().to_vec();
        let pos = v.windows(8).position(|w| w == b"group-11").unwrap() + 7;
        v[pos] = b'2';
        t.insert(key, v).unwrap();
        db.flush().unwrap();
    }
    let _keep = dir;
    // The chain no longer holds: start-up refuses, naming the entry.
    let refused = TestServer::start_refused(cfg.clone()).await;
    assert!(
        refused.contains(&format!("at seq {victim}")) && refused.contains("--read-only"),
        "{refused}"
    );
    // Opened for forensics, verify finds it at that seq.
    let s = TestServer::start_read_only(cfg).await;
    let mut c = s.admin().await;
    let v = ok(c.audit.verify(pb::VerifyRequest::default())).await;
    assert!(!v.ok);
    assert_eq!(v.first_bad_seq, Some(victim));
    assert!(v.problem.contains("hash"), "{}", v.problem);
    // A range that ends before the damage verifies.
    let v = ok(c.audit.verify(pb::VerifyRequest {
        from_seq: 1,
        to_seq: victim - 1,
    }))
    .await;
    assert!(v.ok);
    s.stop().await;
}
