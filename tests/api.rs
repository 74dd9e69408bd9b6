//! Integration tests of the gRPC API against a real server on an ephemeral port.

mod common;

use common::*;
use pb::{SocketAccess as S, SocketMode as M};
use privledger::pb;
use tonic::Code;

fn code<T: std::fmt::Debug>(r: Result<tonic::Response<T>, tonic::Status>) -> Code {
    match r {
        Ok(_) => Code::Ok,
        Err(s) => s.code(),
    }
}

#[tokio::test]
async fn admin_happy_paths_and_every_error_status_append_nothing() {
    let s = TestServer::start().await;
    let mut c = s.admin().await;
    let g = c
        .admin
        .create_group(pb::CreateGroupRequest {
            name: "builders".into(),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(g.name, "builders");
    c.admin
        .add_member(pb::MemberRequest {
            group: "builders".into(),
            user: "alice".into(),
            request_id: String::new(),
        })
        .await
        .unwrap();
    let list = c
        .admin
        .list_groups(pb::ListGroupsRequest {})
        .await
        .unwrap()
        .into_inner();
    let names: Vec<_> = list
        .groups
        .iter()
        .map(|g| (g.name.as_str(), g.builtin))
        .collect();
    assert_eq!(
        names,
        vec![("builders", false), ("docker-privileged", true)]
    );
    let got = c
        .admin
        .get_group(pb::GetGroupRequest {
            name: "builders".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.members, vec!["alice".to_string()]);

    let before = head(&mut c).await;
    let member = |g: &str, u: &str| pb::MemberRequest {
        group: g.into(),
        user: u.into(),
        request_id: String::new(),
    };
    let mut a = c.admin.clone();
    let cases: Vec<(&str, Code, Code)> = vec![
        (
            "duplicate group",
            code(
                a.create_group(pb::CreateGroupRequest {
                    name: "builders".into(),
                    request_id: String::new(),
                })
                .await,
            ),
            Code::AlreadyExists,
        ),
        (
            "empty group name",
            code(
                a.create_group(pb::CreateGroupRequest {
                    name: String::new(),
                    request_id: String::new(),
                })
                .await,
            ),
            Code::InvalidArgument,
        ),
        (
            "oversized name",
            code(
                a.create_group(pb::CreateGroupRequest {
                    name: "x".repeat(129),
                    request_id: String::new(),
                })
                .await,
            ),
            Code::InvalidArgument,
        ),
        (
            "control character",
            code(
                a.create_group(pb::CreateGroupRequest {
                    name: "a\u{1b}b".into(),
                    request_id: String::new(),
                })
                .await,
            ),
            Code::InvalidArgument,
        ),
        (
            "member of missing group",
            code(a.add_member(member("nope", "bob")).await),
            Code::NotFound,
        ),
        (
            "duplicate member",
            code(a.add_member(member("builders", "alice")).await),
            Code::AlreadyExists,
        ),
        (
            "remove non-member",
            code(a.remove_member(member("builders", "bob")).await),
            Code::NotFound,
        ),
        (
            "delete built-in",
            code(
                a.delete_group(pb::DeleteGroupRequest {
                    name: "docker-privileged".into(),
                    request_id: String::new(),
                })
                .await,
            ),
            Code::FailedPrecondition,
        ),
        (
            "delete missing",
            code(
                a.delete_group(pb::DeleteGroupRequest {
                    name: "nope".into(),
                    request_id: String::new(),
                })
                .await,
            ),
            Code::NotFound,
        ),
        (
            "get missing",
            code(
                a.get_group(pb::GetGroupRequest {
                    name: "nope".into(),
                })
                .await,
            ),
            Code::NotFound,
        ),
        (
            "grant to missing group",
            code(
                a.issue_grant(grant_req(group("nope"), spec(S::Raw, M::Rw, false)))
                    .await,
            ),
            Code::NotFound,
        ),
        (
            "grant without subject",
            code(
                a.issue_grant(grant_req(None, spec(S::Raw, M::Rw, false)))
                    .await,
            ),
            Code::InvalidArgument,
        ),
        (
            "grant without reason",
            code(
                a.issue_grant(pb::IssueGrantRequest {
                    reason: String::new(),
                    ..grant_req(user("bob"), spec(S::Raw, M::Rw, false))
                })
                .await,
            ),
            Code::InvalidArgument,
        ),
        (
            "unknown socket enum",
            code(
                a.issue_grant(grant_req(
                    user("bob"),
                    Some(pb::GrantSpec {
                        socket: 42,
                        socket_mode: 0,
                        privileged: false,
                        limits: None,
                    }),
                ))
                .await,
            ),
            Code::InvalidArgument,
        ),
        (
            "ro on limited",
            code(
                a.issue_grant(grant_req(user("bob"), spec(S::Limited, M::Ro, false)))
                    .await,
            ),
            Code::InvalidArgument,
        ),
        (
            "grant giving nothing",
            code(
                a.issue_grant(grant_req(user("bob"), spec(S::None, M::Rw, false)))
                    .await,
            ),
            Code::InvalidArgument,
        ),
        (
            "expiry in the past",
            code(
                a.issue_grant(pb::IssueGrantRequest {
                    expires_at: Some(prost_types::Timestamp {
                        seconds: 1_000_000,
                        nanos: 0,
                    }),
                    ..grant_req(user("bob"), spec(S::Raw, M::Rw, false))
                })
                .await,
            ),
            Code::InvalidArgument,
        ),
        (
            "revoke unknown grant",
            code(
                a.revoke_grant(pb::RevokeGrantRequest {
                    grant_id: 9999,
                    reason: "x".into(),
                    request_id: String::new(),
                })
                .await,
            ),
            Code::NotFound,
        ),
        (
            "revoke built-in grant",
            code(
                a.revoke_grant(pb::RevokeGrantRequest {
                    grant_id: 2,
                    reason: "x".into(),
                    request_id: String::new(),
                })
                .await,
            ),
            Code::FailedPrecondition,
        ),
        (
            "token without role",
            code(
                a.create_token(pb::CreateTokenRequest {
                    name: "t".into(),
                    role: 0,
                    request_id: String::new(),
                })
                .await,
            ),
            Code::InvalidArgument,
        ),
        (
            "token named like the admin",
            code(
                a.create_token(pb::CreateTokenRequest {
                    name: "admin".into(),
                    role: 1,
                    request_id: String::new(),
                })
                .await,
            ),
            Code::AlreadyExists,
        ),
        (
            "check a bad user name",
            code(
                c.authz
                    .check_access(pb::CheckAccessRequest {
                        user: "a/b".into(),
                        at: None,
                        ..Default::default()
                    })
                    .await,
            ),
            Code::InvalidArgument,
        ),
        (
            "stream an unknown kind",
            code(
                c.audit
                    .stream(pb::StreamRequest {
                        from_seq: 1,
                        follow: false,
                        kinds: vec!["nope".into()],
                        subject: String::new(),
                    })
                    .await,
            ),
            Code::InvalidArgument,
        ),
        (
            "point in time beyond the head",
            code(
                c.authz
                    .check_access(pb::CheckAccessRequest {
                        user: "a".into(),
                        at: Some(pb::Position {
                            at: Some(pb::position::At::Seq(1_000_000)),
                        }),
                        ..Default::default()
                    })
                    .await,
            ),
            Code::InvalidArgument,
        ),
    ];
    for (what, got, want) in cases {
        assert_eq!(got, want, "{what}");
    }
    assert_eq!(
        head(&mut c).await,
        before,
        "refused requests append nothing"
    );

    // Revoking twice: the second is a failed precondition.
    let g = c
        .admin
        .issue_grant(grant_req(user("bob"), spec(S::Raw, M::Rw, false)))
        .await
        .unwrap()
        .into_inner();
    let revoke = pb::RevokeGrantRequest {
        grant_id: g.id,
        reason: "done".into(),
        request_id: String::new(),
    };
    let r = c
        .admin
        .revoke_grant(revoke.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status, pb::GrantStatus::Revoked as i32);
    assert_eq!(
        code(c.admin.revoke_grant(revoke).await),
        Code::FailedPrecondition
    );
    s.stop().await;
}

#[tokio::test]
async fn oversized_request_is_resource_exhausted() {
    let s = TestServer::start().await;
    let mut c = s.admin().await;
    let before = head(&mut c).await;
    let r = c
        .admin
        .create_group(pb::CreateGroupRequest {
            name: "x".repeat(200_000),
            request_id: String::new(),
        })
        .await;
    assert_eq!(code(r), Code::ResourceExhausted);
    assert_eq!(head(&mut c).await, before);
    s.stop().await;
}

async fn access(c: &mut privledger::client::Clients, u: &str) -> pb::Access {
    c.authz
        .check_access(pb::CheckAccessRequest {
            user: u.into(),
            at: None,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test]
async fn combine_rules_defaults_expiry_revocation_and_leaving_a_group() {
    let s = TestServer::start().await;
    let mut c = s.admin().await;
    for g in ["a", "b"] {
        c.admin
            .create_group(pb::CreateGroupRequest {
                name: g.into(),
                request_id: String::new(),
            })
            .await
            .unwrap();
        c.admin
            .add_member(pb::MemberRequest {
                group: g.into(),
                user: "alice".into(),
                request_id: String::new(),
            })
            .await
            .unwrap();
    }
    let limited = |limits: pb::Limits| {
        Some(pb::GrantSpec {
            socket: S::Limited.into(),
            socket_mode: 0,
            privileged: false,
            limits: Some(limits),
        })
    };
    c.admin
        .issue_grant(grant_req(
            group("a"),
            limited(pb::Limits {
                max_containers: Some(20),
                mem_cap_gb: Some(1.5),
                ..Default::default()
            }),
        ))
        .await
        .unwrap();
    c.admin
        .issue_grant(grant_req(
            group("b"),
            limited(pb::Limits {
                max_containers: Some(4),
                max_volumes: Some(30),
                allow_dangerous_flags: Some(true),
                ..Default::default()
            }),
        ))
        .await
        .unwrap();
    let a = access(&mut c, "alice").await;
    assert_eq!(a.socket, S::Limited as i32);
    let l = a.limits.unwrap();
    assert_eq!(l.max_containers, 20, "max over grants");
    assert_eq!(l.max_volumes, 30);
    assert_eq!(l.max_networks, 3, "default");
    assert_eq!(l.max_storage_gb, 50.0, "default");
    assert_eq!(l.cpu_cap_cores, 2.0, "default");
    assert_eq!(l.mem_cap_gb, 8.0, "default beats a smaller explicit value");
    assert!(l.allow_dangerous_flags, "dangerous flags OR");
    assert_eq!(a.provenance.len(), 2);
    let answer = c
        .authz
        .check_access(pb::CheckAccessRequest {
            user: "alice".into(),
            omit_provenance: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
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
    let ro = c
        .admin
        .issue_grant(grant_req(user("alice"), spec(S::Raw, M::Ro, false)))
        .await
        .unwrap()
        .into_inner();
    let a = access(&mut c, "alice").await;
    assert_eq!((a.socket, a.socket_mode), (S::Raw as i32, M::Ro as i32));
    assert_eq!(a.limits.unwrap(), pb::EffectiveLimits::default());
    // rw wins through the built-in group; privileged ORs in from another grant.
    c.admin
        .add_member(pb::MemberRequest {
            group: "docker-privileged".into(),
            user: "alice".into(),
            request_id: String::new(),
        })
        .await
        .unwrap();
    c.admin
        .issue_grant(grant_req(group("b"), spec(S::None, M::Rw, true)))
        .await
        .unwrap();
    let a = access(&mut c, "alice").await;
    assert_eq!(a.socket_mode, M::Rw as i32);
    assert!(a.privileged);
    let via: Vec<_> = a.provenance.iter().map(|p| p.via_group.as_str()).collect();
    assert!(via.contains(&"docker-privileged") && via.contains(&""));

    // Leaving a group removes what came through it.
    c.admin
        .remove_member(pb::MemberRequest {
            group: "docker-privileged".into(),
            user: "alice".into(),
            request_id: String::new(),
        })
        .await
        .unwrap();
    c.admin
        .remove_member(pb::MemberRequest {
            group: "b".into(),
            user: "alice".into(),
            request_id: String::new(),
        })
        .await
        .unwrap();
    let a = access(&mut c, "alice").await;
    assert_eq!(a.socket_mode, M::Ro as i32);
    assert!(!a.privileged);
    // Revocation removes the direct grant: back to limited from group a.
    c.admin
        .revoke_grant(pb::RevokeGrantRequest {
            grant_id: ro.id,
            reason: "done".into(),
            request_id: String::new(),
        })
        .await
        .unwrap();
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
    c.admin
        .issue_grant(pb::IssueGrantRequest {
            expires_at: Some(exp),
            ..grant_req(user("carol"), spec(S::Raw, M::Rw, false))
        })
        .await
        .unwrap();
    assert_eq!(access(&mut c, "carol").await.socket, S::Raw as i32);
    let later = pb::Position {
        at: Some(pb::position::At::Time(prost_types::Timestamp {
            seconds: exp.seconds + 1,
            nanos: 0,
        })),
    };
    let a = c
        .authz
        .check_access(pb::CheckAccessRequest {
            user: "carol".into(),
            at: Some(later),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(a.socket, S::None as i32, "expired at query time");
    let bob = access(&mut c, "bob").await;
    assert_eq!(bob.socket, S::None as i32);
    assert!(bob.provenance.is_empty());
    s.stop().await;
}

#[tokio::test]
async fn authorize_spawn_records_the_decision_with_fragments() {
    let s = TestServer::start().await;
    let mut c = s.admin().await;
    c.admin
        .add_member(pb::MemberRequest {
            group: "docker-privileged".into(),
            user: "alice".into(),
            request_id: String::new(),
        })
        .await
        .unwrap();
    c.admin
        .issue_grant(grant_req(user("alice"), spec(S::None, M::Rw, true)))
        .await
        .unwrap();
    c.admin
        .issue_grant(grant_req(user("lim"), spec(S::Limited, M::Rw, false)))
        .await
        .unwrap();
    let before = head(&mut c).await;
    let d = c
        .authz
        .authorize_spawn(pb::AuthorizeSpawnRequest {
            user: "alice".into(),
            server_name: "gpu".into(),
            image: "jupyter/base".into(),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
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
    let last = c
        .audit
        .stream(stream_from(d.seq, false))
        .await
        .unwrap()
        .into_inner()
        .message()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(last.kind, "spawn_decided");
    let body: serde_json::Value = serde_json::from_slice(&last.body).unwrap();
    assert_eq!(body["event"]["decision_id"], d.decision_id);
    assert_eq!(body["event"]["server_name"], "gpu");

    let d = c
        .authz
        .authorize_spawn(pb::AuthorizeSpawnRequest {
            user: "lim".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let f = d.fragments.unwrap();
    assert_eq!(f.env["DOCKER_HOST"], "unix:///run/privledger/docker.sock");
    assert_eq!(
        f.binds,
        vec!["/run/privledger/users/lim/docker.sock:/run/privledger/docker.sock:rw".to_string()]
    );

    // A denial is an answer, recorded too.
    let d = c
        .authz
        .authorize_spawn(pb::AuthorizeSpawnRequest {
            user: "bob".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!d.allowed);
    let f = d.fragments.unwrap();
    assert!(f.binds.is_empty() && !f.privileged);
    assert_eq!(f.labels["privledger.user"], "bob");
    assert!(d.reason.contains("no active grant"));
    s.stop().await;
}

#[tokio::test]
async fn idempotent_retry_appends_once() {
    let s = TestServer::start().await;
    let mut c = s.admin().await;
    let req = pb::AuthorizeSpawnRequest {
        user: "alice".into(),
        request_id: "spawn-42".into(),
        ..Default::default()
    };
    let d1 = c
        .authz
        .authorize_spawn(req.clone())
        .await
        .unwrap()
        .into_inner();
    let after = head(&mut c).await;
    let d2 = c.authz.authorize_spawn(req).await.unwrap().into_inner();
    assert_eq!(head(&mut c).await, after);
    assert_eq!(d1.decision_id, d2.decision_id);
    assert!(!d1.replayed && d2.replayed);
    let g = pb::IssueGrantRequest {
        request_id: "g-1".into(),
        ..grant_req(user("x"), spec(S::Raw, M::Rw, false))
    };
    let g1 = c.admin.issue_grant(g.clone()).await.unwrap().into_inner();
    let g2 = c.admin.issue_grant(g).await.unwrap().into_inner();
    assert_eq!(g1.id, g2.id);
    let m = pb::MemberRequest {
        group: "docker-privileged".into(),
        user: "z".into(),
        request_id: "m-1".into(),
    };
    let r1 = c.admin.add_member(m.clone()).await.unwrap().into_inner();
    let r2 = c.admin.add_member(m).await.unwrap().into_inner();
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
    assert_eq!(code(r), Code::InvalidArgument);
    s.stop().await;
}

#[tokio::test]
async fn restart_keeps_every_acknowledged_entry_and_the_same_state() {
    let s = TestServer::start().await;
    let mut c = s.admin().await;
    c.admin
        .create_group(pb::CreateGroupRequest {
            name: "g".into(),
            request_id: String::new(),
        })
        .await
        .unwrap();
    for i in 0..40 {
        c.admin
            .add_member(pb::MemberRequest {
                group: "g".into(),
                user: format!("u{i}"),
                request_id: String::new(),
            })
            .await
            .unwrap();
    }
    c.admin
        .issue_grant(grant_req(group("g"), spec(S::Raw, M::Ro, true)))
        .await
        .unwrap();
    let head1 = c.audit.head(pb::HeadRequest {}).await.unwrap().into_inner();
    let who1 = c
        .authz
        .who_has_access(pb::WhoHasAccessRequest { at: None })
        .await
        .unwrap()
        .into_inner();
    let grants1 = c
        .admin
        .list_grants(pb::ListGrantsRequest {
            subject: None,
            include_inactive: true,
        })
        .await
        .unwrap()
        .into_inner();
    drop(c);
    let s = s.restart().await;
    let mut c = s.admin().await;
    let head2 = c.audit.head(pb::HeadRequest {}).await.unwrap().into_inner();
    // The restart appends exactly one entry (server_started); everything before is intact.
    assert_eq!(head2.seq, head1.seq + 1);
    let who2 = c
        .authz
        .who_has_access(pb::WhoHasAccessRequest {
            at: Some(pb::Position {
                at: Some(pb::position::At::Seq(head1.seq)),
            }),
        })
        .await
        .unwrap()
        .into_inner();
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
    let grants2 = c
        .admin
        .list_grants(pb::ListGrantsRequest {
            subject: None,
            include_inactive: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(grants1.grants, grants2.grants);
    let v = c
        .audit
        .verify(pb::VerifyRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(v.ok, "{v:?}");
    assert_eq!(v.checked, head2.seq);
    s.stop().await;
}

#[tokio::test]
async fn point_in_time_answers_before_and_after_a_change() {
    let s = TestServer::start().await;
    let mut c = s.admin().await;
    let before = head(&mut c).await;
    let added = c
        .admin
        .add_member(pb::MemberRequest {
            group: "docker-privileged".into(),
            user: "alice".into(),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let removed = c
        .admin
        .remove_member(pb::MemberRequest {
            group: "docker-privileged".into(),
            user: "alice".into(),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let at = |seq| pb::CheckAccessRequest {
        user: "alice".into(),
        at: Some(pb::Position {
            at: Some(pb::position::At::Seq(seq)),
        }),
        ..Default::default()
    };
    let sock = |a: pb::Access| a.socket;
    assert_eq!(
        sock(c.authz.check_access(at(before)).await.unwrap().into_inner()),
        S::None as i32
    );
    let a = c
        .authz
        .check_access(at(added.seq))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(a.socket, S::Raw as i32);
    assert_eq!(a.seq, added.seq);
    assert_eq!(a.provenance[0].via_group, "docker-privileged");
    assert_eq!(
        sock(
            c.authz
                .check_access(at(removed.seq))
                .await
                .unwrap()
                .into_inner()
        ),
        S::None as i32
    );
    // By time: the entry's own time sees the membership.
    let e = c
        .audit
        .stream(stream_from(added.seq, false))
        .await
        .unwrap()
        .into_inner()
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
    assert_eq!(
        sock(c.authz.check_access(by_time).await.unwrap().into_inner()),
        S::Raw as i32
    );
    let who = c
        .authz
        .who_has_access(pb::WhoHasAccessRequest {
            at: Some(pb::Position {
                at: Some(pb::position::At::Seq(added.seq)),
            }),
        })
        .await
        .unwrap()
        .into_inner();
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
    let s = TestServer::start().await;
    let mut c = s.admin().await;
    let start = head(&mut c).await;
    let mut stream = c
        .audit
        .stream(stream_from(1, true))
        .await
        .unwrap()
        .into_inner();
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
    let mut cps = c
        .audit
        .stream(pb::StreamRequest {
            from_seq: 1,
            follow: false,
            kinds: vec!["state_checkpointed".into()],
            subject: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut recorded = 0;
    while let Some(e) = cps.message().await.unwrap() {
        recorded += u64::from(e.seq <= h);
    }
    assert_eq!(h, target + recorded);
    // Filters: only decisions of one user.
    let mut f = c
        .audit
        .stream(pb::StreamRequest {
            from_seq: 1,
            follow: false,
            kinds: vec!["spawn_decided".into()],
            subject: "u3-7".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let e = f.message().await.unwrap().unwrap();
    assert_eq!(e.kind, "spawn_decided");
    assert!(f.message().await.unwrap().is_none());
    s.stop().await;
}

#[tokio::test]
async fn verify_finds_a_flipped_byte_and_names_its_seq() {
    let s = TestServer::start().await;
    let mut c = s.admin().await;
    for i in 0..20 {
        c.admin
            .create_group(pb::CreateGroupRequest {
                name: format!("group-{i:02}"),
                request_id: String::new(),
            })
            .await
            .unwrap();
    }
    let victim = c
        .admin
        .get_group(pb::GetGroupRequest {
            name: "group-11".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .created_seq;
    assert!(
        c.audit
            .verify(pb::VerifyRequest::default())
            .await
            .unwrap()
            .into_inner()
            .ok
    );
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
    let v = c
        .audit
        .verify(pb::VerifyRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(!v.ok);
    assert_eq!(v.first_bad_seq, Some(victim));
    assert!(v.problem.contains("hash"), "{}", v.problem);
    // A range that ends before the damage verifies.
    let v = c
        .audit
        .verify(pb::VerifyRequest {
            from_seq: 1,
            to_seq: victim - 1,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(v.ok);
    s.stop().await;
}

#[tokio::test]
async fn role_matrix_every_rpc_refuses_a_missing_token_and_a_wrong_role() {
    let s = TestServer::start().await;
    let mut admin = s.admin().await;
    let mut secrets = std::collections::HashMap::new();
    for role in ["spawner", "auditor"] {
        let r = admin
            .admin
            .create_token(pb::CreateTokenRequest {
                name: format!("{role}-token"),
                role: if role == "spawner" {
                    pb::Role::Spawner
                } else {
                    pb::Role::Auditor
                }
                .into(),
                request_id: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(r.secret.starts_with("plg_"));
        secrets.insert(role, r.secret);
    }
    let clients = [
        ("admin", Some(s.admin_token.clone())),
        ("spawner", Some(secrets["spawner"].clone())),
        ("auditor", Some(secrets["auditor"].clone())),
        ("none", None),
        ("wrong", Some("plg_not-a-real-token".to_string())),
    ];
    // rpc → roles allowed
    let matrix: &[(&str, &[&str])] = &[
        ("CreateGroup", &["admin"]),
        ("DeleteGroup", &["admin"]),
        ("ListGroups", &["admin", "auditor"]),
        ("GetGroup", &["admin", "auditor"]),
        ("AddMember", &["admin"]),
        ("RemoveMember", &["admin"]),
        ("IssueGrant", &["admin"]),
        ("RevokeGrant", &["admin"]),
        ("ListGrants", &["admin", "auditor"]),
        ("CreateToken", &["admin"]),
        ("ListTokens", &["admin"]),
        ("RevokeToken", &["admin"]),
        ("AuthorizeSpawn", &["admin", "spawner"]),
        ("CheckAccess", &["admin", "spawner", "auditor"]),
        ("WhoHasAccess", &["admin", "auditor"]),
        ("Stream", &["admin", "auditor"]),
        ("Head", &["admin", "auditor"]),
        ("Verify", &["admin", "auditor"]),
    ];
    for (who, token) in &clients {
        let mut c = s.client(token.as_deref()).await;
        for (rpc, allowed) in matrix {
            let got = match *rpc {
                "CreateGroup" => code(
                    c.admin
                        .create_group(pb::CreateGroupRequest {
                            name: format!("g-{who}"),
                            request_id: String::new(),
                        })
                        .await,
                ),
                "DeleteGroup" => code(
                    c.admin
                        .delete_group(pb::DeleteGroupRequest {
                            name: "none".into(),
                            request_id: String::new(),
                        })
                        .await,
                ),
                "ListGroups" => code(c.admin.list_groups(pb::ListGroupsRequest {}).await),
                "GetGroup" => code(
                    c.admin
                        .get_group(pb::GetGroupRequest {
                            name: "docker-privileged".into(),
                        })
                        .await,
                ),
                "AddMember" => code(
                    c.admin
                        .add_member(pb::MemberRequest {
                            group: "docker-privileged".into(),
                            user: format!("m-{who}"),
                            request_id: String::new(),
                        })
                        .await,
                ),
                "RemoveMember" => code(
                    c.admin
                        .remove_member(pb::MemberRequest {
                            group: "docker-privileged".into(),
                            user: "nobody".into(),
                            request_id: String::new(),
                        })
                        .await,
                ),
                "IssueGrant" => code(
                    c.admin
                        .issue_grant(grant_req(
                            user(&format!("x-{who}")),
                            spec(S::Raw, M::Rw, false),
                        ))
                        .await,
                ),
                "RevokeGrant" => code(
                    c.admin
                        .revoke_grant(pb::RevokeGrantRequest {
                            grant_id: 9999,
                            reason: "r".into(),
                            request_id: String::new(),
                        })
                        .await,
                ),
                "ListGrants" => code(c.admin.list_grants(pb::ListGrantsRequest::default()).await),
                "CreateToken" => code(
                    c.admin
                        .create_token(pb::CreateTokenRequest {
                            name: format!("t-{who}"),
                            role: 3,
                            request_id: String::new(),
                        })
                        .await,
                ),
                "ListTokens" => code(c.admin.list_tokens(pb::ListTokensRequest {}).await),
                "RevokeToken" => code(
                    c.admin
                        .revoke_token(pb::RevokeTokenRequest {
                            name: "nope".into(),
                            request_id: String::new(),
                        })
                        .await,
                ),
                "AuthorizeSpawn" => code(
                    c.authz
                        .authorize_spawn(pb::AuthorizeSpawnRequest {
                            user: "u".into(),
                            ..Default::default()
                        })
                        .await,
                ),
                "CheckAccess" => code(
                    c.authz
                        .check_access(pb::CheckAccessRequest {
                            user: "u".into(),
                            at: None,
                            ..Default::default()
                        })
                        .await,
                ),
                "WhoHasAccess" => code(
                    c.authz
                        .who_has_access(pb::WhoHasAccessRequest { at: None })
                        .await,
                ),
                "Stream" => code(c.audit.stream(stream_from(1, false)).await),
                "Head" => code(c.audit.head(pb::HeadRequest {}).await),
                "Verify" => code(c.audit.verify(pb::VerifyRequest::default()).await),
                other => unreachable!("{other}"),
            };
            let expected_refusal = match *who {
                "none" | "wrong" => Some(Code::Unauthenticated),
                role if !allowed.contains(&role) => Some(Code::PermissionDenied),
                _ => None,
            };
            match expected_refusal {
                Some(want) => assert_eq!(got, want, "{who} → {rpc}"),
                None => assert!(
                    got != Code::PermissionDenied && got != Code::Unauthenticated,
                    "{who} → {rpc}: {got:?}"
                ),
            }
        }
    }
    // A revoked token stops working at once; the revocation names the actor.
    admin
        .admin
        .revoke_token(pb::RevokeTokenRequest {
            name: "spawner-token".into(),
            request_id: String::new(),
        })
        .await
        .unwrap();
    let mut c = s.client(Some(&secrets["spawner"])).await;
    assert_eq!(
        code(
            c.authz
                .check_access(pb::CheckAccessRequest {
                    user: "u".into(),
                    at: None,
                    ..Default::default()
                })
                .await
        ),
        Code::Unauthenticated
    );
    let tokens = admin
        .admin
        .list_tokens(pb::ListTokensRequest {})
        .await
        .unwrap()
        .into_inner()
        .tokens;
    assert!(tokens
        .iter()
        .any(|t| t.name == "spawner-token" && t.revoked));
    s.stop().await;
}

#[tokio::test]
async fn health_answers_without_a_token() {
    let s = TestServer::start().await;
    let c = s.client(None).await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(c.channel.clone());
    let r = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "privledger.v1.Audit".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        r.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    s.stop().await;
}
