//! DESIGN §2, concepts: how grants combine (defaults, expiry, revocation, leaving a
//! group) and what a spawn decision records and returns.

mod common;

use common::*;
use pb::{SocketAccess as S, SocketMode as M};
use privledger::pb;

#[tokio::test]
async fn combine_rules_defaults_expiry_revocation_and_leaving_a_group() {
    let (s, mut c) = TestServer::start_admin().await;
    for g in ["a", "b"] {
        ok(c.admin.create_group(create_group(g))).await;
        ok(c.admin.add_member(member(g, "alice"))).await;
    }
    let limited = |limits: pb::Limits| {
        Some(pb::GrantSpec {
            socket: S::Limited.into(),
            socket_mode: 0,
            privileged: false,
            limits: Some(limits),
        })
    };
    ok(c.admin.issue_grant(grant_req(
        group("a"),
        limited(pb::Limits {
            max_containers: Some(20),
            mem_cap_gb: Some(1.5),
            ..Default::default()
        }),
    )))
    .await;
    ok(c.admin.issue_grant(grant_req(
        group("b"),
        limited(pb::Limits {
            max_containers: Some(4),
            max_volumes: Some(30),
            allow_dangerous_flags: Some(true),
            ..Default::default()
        }),
    )))
    .await;
    let a = access(&mut c, "alice").await;
    assert_eq!(a.socket, S::Limited as i32);
    let l = a.limits.clone().unwrap();
    assert_eq!(l.max_containers, 20, "max over grants");
    assert_eq!(l.max_volumes, 30);
    assert_eq!(l.max_networks, 3, "default");
    assert_eq!(l.max_storage_gb, 50.0, "default");
    assert_eq!(l.cpu_cap_cores, 2.0, "default");
    assert_eq!(l.mem_cap_gb, 8.0, "default beats a smaller explicit value");
    assert!(l.allow_dangerous_flags, "dangerous flags OR");
    assert_eq!(l.max_pids, 4096, "default");
    assert_eq!(l.publish, "off", "default");
    assert_eq!(a.provenance.len(), 2);
    let answer = ok(c.authz.check_access(pb::CheckAccessRequest {
        user: "alice".into(),
        omit_provenance: true,
        ..Default::default()
    }))
    .await;
    assert!(answer.provenance.is_empty(), "omit_provenance");
    assert_eq!(
        pb::Access {
            provenance: a.provenance.clone(),
            evaluated_at: a.evaluated_at,
            ..answer
        },
        a,
        "the same answer without provenance"
    );

    // Raw supersedes limited and zeroes every limit; ro alone stays ro.
    let ro = ok(c
        .admin
        .issue_grant(grant_req(user("alice"), spec(S::Raw, M::Ro, false))))
    .await;
    let a = access(&mut c, "alice").await;
    assert_eq!((a.socket, a.socket_mode), (S::Raw as i32, M::Ro as i32));
    assert_eq!(a.limits.unwrap(), pb::EffectiveLimits::default());
    // rw wins through the built-in group; privileged ORs in from another grant.
    c.admin
        .add_member(member("docker-privileged", "alice"))
        .await
        .unwrap();
    ok(c.admin
        .issue_grant(grant_req(group("b"), spec(S::None, M::Rw, true))))
    .await;
    let a = access(&mut c, "alice").await;
    assert_eq!(a.socket_mode, M::Rw as i32);
    assert!(a.privileged);
    let via: Vec<_> = a.provenance.iter().map(|p| p.via_group.as_str()).collect();
    assert!(via.contains(&"docker-privileged") && via.contains(&""));

    // Leaving a group removes what came through it.
    c.admin
        .remove_member(member("docker-privileged", "alice"))
        .await
        .unwrap();
    ok(c.admin.remove_member(member("b", "alice"))).await;
    let a = access(&mut c, "alice").await;
    assert_eq!(a.socket_mode, M::Ro as i32);
    assert!(!a.privileged);
    // Revocation removes the direct grant: back to limited from group a.
    c.admin.revoke_grant(revoke(ro.id, "done")).await.unwrap();
    let a = access(&mut c, "alice").await;
    assert_eq!(a.socket, S::Limited as i32);
    assert_eq!(a.limits.unwrap().max_containers, 20);

    // Expiry applies at query time: judged after the expiry, the grant is gone.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let exp = prost_types::Timestamp {
        seconds: now.as_secs() as i64 + 3600,
        nanos: 0,
    };
    ok(c.admin.issue_grant(pb::IssueGrantRequest {
        expires_at: Some(exp),
        ..grant_req(user("carol"), spec(S::Raw, M::Rw, false))
    }))
    .await;
    assert_eq!(access(&mut c, "carol").await.socket, S::Raw as i32);
    let later = pb::Position {
        at: Some(pb::position::At::Time(prost_types::Timestamp {
            seconds: exp.seconds + 1,
            nanos: 0,
        })),
    };
    let a = ok(c.authz.check_access(pb::CheckAccessRequest {
        user: "carol".into(),
        at: Some(later),
        ..Default::default()
    }))
    .await;
    assert_eq!(a.socket, S::None as i32, "expired at query time");
    let bob = access(&mut c, "bob").await;
    assert_eq!(bob.socket, S::None as i32);
    assert!(bob.provenance.is_empty());
    s.stop().await;
}

#[tokio::test]
async fn authorize_spawn_records_the_decision_with_fragments() {
    let (s, mut c) = TestServer::start_admin().await;
    ok(c.admin.add_member(member("docker-privileged", "alice"))).await;
    ok(c.admin
        .issue_grant(grant_req(user("alice"), spec(S::None, M::Rw, true))))
    .await;
    ok(c.admin
        .issue_grant(grant_req(user("lim"), spec(S::Limited, M::Rw, false))))
    .await;
    let before = head(&mut c).await;
    let d = ok(c.authz.authorize_spawn(pb::AuthorizeSpawnRequest {
        user: "alice".into(),
        server_name: "gpu".into(),
        image: "jupyter/base".into(),
        request_id: String::new(),
    }))
    .await;
    assert!(d.allowed);
    assert_eq!(d.seq, before + 1, "recorded before answering");
    assert_eq!(d.evaluated_at_seq, before);
    let f = d.fragments.unwrap();
    assert_eq!(
        f.binds,
        vec!["/var/run/docker.sock:/var/run/docker.sock:rw".to_string()]
    );
    assert!(f.privileged);
    assert_eq!(f.labels["privledger.decision"], d.decision_id);
    assert_eq!(f.labels["privledger.user"], "alice");
    let last = ok(c.audit.stream(stream_from(d.seq, false)))
        .await
        .message()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(last.kind, "spawn_decided");
    let body: serde_json::Value = serde_json::from_slice(&last.body).unwrap();
    assert_eq!(body["event"]["decision_id"], d.decision_id);
    assert_eq!(body["event"]["server_name"], "gpu");

    let d = ok(c.authz.authorize_spawn(pb::AuthorizeSpawnRequest {
        user: "lim".into(),
        ..Default::default()
    }))
    .await;
    let f = d.fragments.unwrap();
    assert_eq!(f.env["DOCKER_HOST"], "unix:///run/privledger/docker.sock");
    assert_eq!(
        f.binds,
        vec!["/run/privledger/users/lim:/run/privledger:rw".to_string()]
    );

    // A denial is an answer, recorded too.
    let d = ok(c.authz.authorize_spawn(pb::AuthorizeSpawnRequest {
        user: "bob".into(),
        ..Default::default()
    }))
    .await;
    assert!(!d.allowed);
    let f = d.fragments.unwrap();
    assert!(f.binds.is_empty() && !f.privileged);
    assert_eq!(f.labels["privledger.user"], "bob");
    assert!(d.reason.contains("no active grant"));
    s.stop().await;
}
