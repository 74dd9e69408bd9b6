//! DESIGN §4, the API: every RPC's happy path and error statuses (refusals append
//! nothing), request size limits, the role matrix, and health without a token.

mod common;

use common::*;
use pb::{SocketAccess as S, SocketMode as M};
use privledger::pb;
use tonic::Code;

#[tokio::test]
async fn admin_happy_paths_and_every_error_status_append_nothing() {
    let (s, mut c) = TestServer::start_admin().await;
    let g = ok(c.admin.create_group(create_group("builders"))).await;
    assert_eq!(g.name, "builders");
    ok(c.admin.add_member(member("builders", "alice"))).await;
    let list = ok(c.admin.list_groups(pb::ListGroupsRequest {})).await;
    let names: Vec<_> = list
        .groups
        .iter()
        .map(|g| (g.name.as_str(), g.builtin))
        .collect();
    assert_eq!(
        names,
        vec![("builders", false), ("docker-privileged", true)]
    );
    let got = ok(c.admin.get_group(get_group("builders"))).await;
    assert_eq!(got.members, vec!["alice".to_string()]);

    let before = head(&mut c).await;
    let member = |g: &str, u: &str| member(g, u);
    let mut a = c.admin.clone();
    let cases: Vec<(&str, Code, Code)> = vec![
        (
            "duplicate group",
            code(a.create_group(create_group("builders")).await),
            Code::AlreadyExists,
        ),
        (
            "empty group name",
            code(a.create_group(create_group("")).await),
            Code::InvalidArgument,
        ),
        (
            "oversized name",
            code(a.create_group(create_group(&"x".repeat(129))).await),
            Code::InvalidArgument,
        ),
        (
            "control character",
            code(a.create_group(create_group("a\u{1b}b")).await),
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
            code(a.delete_group(delete_group("docker-privileged")).await),
            Code::FailedPrecondition,
        ),
        (
            "delete missing",
            code(a.delete_group(delete_group("nope")).await),
            Code::NotFound,
        ),
        (
            "get missing",
            code(a.get_group(get_group("nope")).await),
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
            "limits.publish that is not off or loopback",
            code(
                a.issue_grant(grant_req(
                    user("bob"),
                    Some(pb::GrantSpec {
                        limits: Some(pb::Limits {
                            publish: Some("everywhere".into()),
                            ..Default::default()
                        }),
                        ..spec(S::Limited, M::Rw, false).unwrap()
                    }),
                ))
                .await,
            ),
            Code::InvalidArgument,
        ),
        (
            "limits.max_pids below 16",
            code(
                a.issue_grant(grant_req(
                    user("bob"),
                    Some(pb::GrantSpec {
                        limits: Some(pb::Limits {
                            max_pids: Some(1),
                            ..Default::default()
                        }),
                        ..spec(S::Limited, M::Rw, false).unwrap()
                    }),
                ))
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
            code(a.revoke_grant(revoke(9999, "x")).await),
            Code::NotFound,
        ),
        (
            "revoke built-in grant",
            code(a.revoke_grant(revoke(2, "x")).await),
            Code::FailedPrecondition,
        ),
        (
            "token without role",
            code(
                a.create_token(pb::CreateTokenRequest {
                    name: "t".into(),
                    role: 0,
                    request_id: String::new(),
                    expires_at: None,
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
                    expires_at: None,
                })
                .await,
            ),
            Code::AlreadyExists,
        ),
        (
            "check a bad user name",
            code(c.authz.check_access(check("a/b")).await),
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
    let g = ok(c
        .admin
        .issue_grant(grant_req(user("bob"), spec(S::Raw, M::Rw, false))))
    .await;
    let revoke = revoke(g.id, "done");
    let r = ok(c.admin.revoke_grant(revoke.clone())).await;
    assert_eq!(r.status, pb::GrantStatus::Revoked as i32);
    assert_eq!(
        code(c.admin.revoke_grant(revoke).await),
        Code::FailedPrecondition
    );
    s.stop().await;
}

#[tokio::test]
async fn oversized_request_is_resource_exhausted() {
    let (s, mut c) = TestServer::start_admin().await;
    let before = head(&mut c).await;
    let r = c
        .admin
        .create_group(create_group(&"x".repeat(200_000)))
        .await;
    assert_eq!(code(r), Code::ResourceExhausted);
    assert_eq!(head(&mut c).await, before);
    s.stop().await;
}

/// Sends `body` as the raw request body of `path` and returns the gRPC status code
/// and message the server answered with.
async fn raw_call(url: &str, path: &str, token: &str, body: Vec<u8>) -> (String, String) {
    use http_body_util::BodyExt;
    use tonic::codegen::http;
    use tower::ServiceExt;
    let channel = tonic::transport::Endpoint::from_shared(url.to_string())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let req = http::Request::builder()
        .method("POST")
        .uri(path)
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("authorization", format!("Bearer {token}"))
        .body(tonic::body::Body::new(http_body_util::Full::new(
            bytes::Bytes::from(body),
        )))
        .unwrap();
    let res = channel.oneshot(req).await.unwrap();
    let (parts, body) = res.into_parts();
    let trailers = body
        .collect()
        .await
        .ok()
        .and_then(|c| c.trailers().cloned());
    let get = |k: &str| {
        parts
            .headers
            .get(k)
            .or_else(|| trailers.as_ref().and_then(|t| t.get(k)))
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    let message = get("grpc-message");
    let mut decoded = Vec::new();
    let b = message.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            decoded.push(u8::from_str_radix(&message[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            decoded.push(b[i]);
            i += 1;
        }
    }
    (get("grpc-status"), String::from_utf8(decoded).unwrap())
}

/// A gRPC frame: flag, big-endian length, payload.
fn frame(flag: u8, len: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![flag];
    f.extend_from_slice(&len.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// Malformed protobuf, invalid UTF-8 in a string field and bad framing are the
/// client's fault: INVALID_ARGUMENT, with nothing of the server's inside in the
/// message, and nothing appended — for every RPC.
#[tokio::test]
async fn malformed_requests_are_invalid_argument_for_every_rpc_and_change_nothing() {
    let (s, mut c) = TestServer::start_admin().await;
    let before = head(&mut c).await;
    let full = |p: &[u8]| frame(0, p.len() as u32, p);
    let bodies: Vec<(&str, Vec<u8>)> = vec![
        ("truncated varint", full(&[0x08, 0xff])),
        ("invalid tag", full(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff])),
        ("field 0", full(&[0x00, 0x01])),
        ("length beyond the message", full(&[0x0a, 0x7f, b'a'])),
        ("invalid UTF-8 in field 1", full(&[0x0a, 0x02, 0xc3, 0x28])),
        (
            "invalid UTF-8 in field 2",
            full(&[0x12, 0x03, 0xed, 0xa0, 0x80]),
        ),
        (
            "compressed flag without an encoding",
            frame(1, 2, &[0x0a, 0x00]),
        ),
        ("unknown frame flag", frame(7, 2, &[0x0a, 0x00])),
        ("frame shorter than its length", frame(0, 10, &[0x0a, 0x00])),
        ("half a frame header", vec![0, 0, 0]),
        ("no message at all", vec![]),
    ];
    let rpcs = [
        "CreateGroup",
        "DeleteGroup",
        "ListGroups",
        "GetGroup",
        "AddMember",
        "RemoveMember",
        "IssueGrant",
        "RevokeGrant",
        "ListGrants",
        "CreateToken",
        "ListTokens",
        "RevokeToken",
        "ImportDockerEvents",
    ]
    .iter()
    .map(|m| format!("/privledger.v1.Admin/{m}"))
    .chain(
        ["AuthorizeSpawn", "CheckAccess", "WhoHasAccess"]
            .iter()
            .map(|m| format!("/privledger.v1.Authorizer/{m}")),
    )
    .chain(
        ["Stream", "Head", "Verify"]
            .iter()
            .map(|m| format!("/privledger.v1.Audit/{m}")),
    );
    for path in rpcs {
        for (what, body) in &bodies {
            let (code, msg) = raw_call(&s.url, &path, &s.admin_token, body.clone()).await;
            // Invalid UTF-8 in a field the message does not have as a string is an
            // unknown field, skipped: then the request is valid or refused on its
            // content. Everything else is malformed for every message.
            if what.starts_with("invalid UTF-8") {
                assert!(
                    ["0", "3", "5", "9"].contains(&code.as_str()),
                    "{path} with {what}: status {code} {msg}"
                );
            } else {
                assert_eq!(code, "3", "{path} with {what}: {msg}");
                assert!(
                    msg.starts_with("the request is not a valid message"),
                    "{path} with {what}: {msg}"
                );
            }
            assert!(!msg.to_lowercase().contains("panic"), "{msg}");
        }
    }
    // A string field with invalid UTF-8 is always refused.
    let (code, _) = raw_call(
        &s.url,
        "/privledger.v1.Admin/CreateGroup",
        &s.admin_token,
        bodies[4].1.clone(),
    )
    .await;
    assert_eq!(code, "3");
    assert_eq!(head(&mut c).await, before, "nothing appended");
    // And the server still answers a fresh, valid request.
    ok(c.admin.create_group(create_group("after"))).await;
    s.stop().await;
}

#[tokio::test]
async fn role_matrix_every_rpc_refuses_a_missing_token_and_a_wrong_role() {
    let s = TestServer::start().await;
    let mut admin = s.admin().await;
    let mut secrets = std::collections::HashMap::new();
    for role in ["spawner", "auditor", "sync"] {
        let r = ok(admin.admin.create_token(pb::CreateTokenRequest {
            name: format!("{role}-token"),
            role: match role {
                "spawner" => pb::Role::Spawner,
                "auditor" => pb::Role::Auditor,
                _ => pb::Role::Sync,
            }
            .into(),
            request_id: String::new(),
            expires_at: None,
        }))
        .await;
        assert!(r.secret.starts_with("plg_"));
        secrets.insert(role, r.secret);
    }
    let clients = [
        ("admin", Some(s.admin_token.clone())),
        ("spawner", Some(secrets["spawner"].clone())),
        ("auditor", Some(secrets["auditor"].clone())),
        ("sync", Some(secrets["sync"].clone())),
        ("none", None),
        ("wrong", Some("plg_not-a-real-token".to_string())),
    ];
    // rpc → roles allowed
    let matrix: &[(&str, &[&str])] = &[
        ("CreateGroup", &["admin"]),
        ("DeleteGroup", &["admin"]),
        ("ListGroups", &["admin", "auditor", "sync"]),
        ("GetGroup", &["admin", "auditor", "sync"]),
        // The sync may change synced groups only; docker-privileged is not one.
        ("AddMember", &["admin"]),
        ("RemoveMember", &["admin"]),
        ("SetGroupSync", &["admin"]),
        ("AccessIntervals", &["admin", "auditor"]),
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
                        .create_group(create_group(&format!("g-{who}")))
                        .await,
                ),
                "DeleteGroup" => code(c.admin.delete_group(delete_group("none")).await),
                "ListGroups" => code(c.admin.list_groups(pb::ListGroupsRequest {}).await),
                "GetGroup" => code(c.admin.get_group(get_group("docker-privileged")).await),
                "AddMember" => code(
                    c.admin
                        .add_member(member("docker-privileged", &format!("m-{who}")))
                        .await,
                ),
                "RemoveMember" => code(
                    c.admin
                        .remove_member(member("docker-privileged", "nobody"))
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
                "RevokeGrant" => code(c.admin.revoke_grant(revoke(9999, "r")).await),
                "SetGroupSync" => code(
                    c.admin
                        .set_group_sync(pb::SetGroupSyncRequest {
                            group: "none".into(),
                            synced: true,
                            reason: "r".into(),
                            request_id: String::new(),
                        })
                        .await,
                ),
                "AccessIntervals" => code(
                    c.authz
                        .access_intervals(pb::AccessIntervalsRequest::default())
                        .await,
                ),
                "ListGrants" => code(c.admin.list_grants(pb::ListGrantsRequest::default()).await),
                "CreateToken" => code(
                    c.admin
                        .create_token(pb::CreateTokenRequest {
                            name: format!("t-{who}"),
                            role: 3,
                            request_id: String::new(),
                            expires_at: None,
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
                "CheckAccess" => code(c.authz.check_access(check("u")).await),
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
        code(c.authz.check_access(check("u")).await),
        Code::Unauthenticated
    );
    let tokens = ok(admin.admin.list_tokens(pb::ListTokensRequest {}))
        .await
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
    let r = ok(health.check(tonic_health::pb::HealthCheckRequest {
        service: "privledger.v1.Audit".into(),
    }))
    .await;
    assert_eq!(
        r.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    s.stop().await;
}

/// JupyterHub group sync (issue 15): a `sync` token changes the members of synced
/// groups only, one at a time and always saying why; admins change every other group
/// and are told that a synced group's members are the hub's to change.
#[tokio::test]
async fn a_sync_token_changes_only_synced_groups_and_admins_only_the_others() {
    let s = TestServer::start().await;
    let mut admin = s.admin().await;
    let secret = ok(admin.admin.create_token(pb::CreateTokenRequest {
        name: "hub-sync".into(),
        role: pb::Role::Sync.into(),
        request_id: String::new(),
        expires_at: None,
    }))
    .await
    .secret;
    let mut sync = s.client(Some(&secret)).await;
    ok(admin.admin.create_group(create_group("hub-users"))).await;
    let set = |synced: bool| pb::SetGroupSyncRequest {
        group: "hub-users".into(),
        synced,
        reason: "membership is managed in the hub's admin panel".into(),
        request_id: String::new(),
    };
    let changed = |user: &str, reason: &str| pb::MemberRequest {
        reason: reason.into(),
        ..member("hub-users", user)
    };
    // Before it is marked, the sync may not touch it.
    let e = admin_err(
        sync.admin
            .add_member(changed(
                "alice",
                "jupyterhub sync: added in hub group hub-users",
            ))
            .await,
    );
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let g = ok(admin.admin.set_group_sync(set(true))).await;
    assert!(g.synced);
    assert_eq!(
        admin_err(admin.admin.set_group_sync(set(true)).await).code(),
        Code::FailedPrecondition
    );
    // The sync adds with a reason, recorded under its own name; a retry appends nothing.
    let why = "jupyterhub sync: added in hub group hub-users";
    let req = pb::MemberRequest {
        request_id: "hub:add:hub-users:alice".into(),
        ..changed("alice", why)
    };
    let first = ok(sync.admin.add_member(req.clone())).await;
    let again = ok(sync.admin.add_member(req)).await;
    assert!(again.replayed && again.seq == first.seq);
    let mut stream = ok(admin.audit.stream(stream_from(first.seq, false))).await;
    let e = stream.message().await.unwrap().unwrap();
    let body: serde_json::Value = serde_json::from_slice(&e.body).unwrap();
    assert_eq!(body["actor"], "hub-sync");
    assert_eq!(body["event"]["reason"], why);
    // Without a reason, with several users, or on another group: refused.
    assert_eq!(
        admin_err(sync.admin.add_member(changed("bob", "")).await).code(),
        Code::InvalidArgument
    );
    let several = pb::MemberRequest {
        users: vec!["bob".into(), "carol".into()],
        ..changed("", why)
    };
    assert_eq!(
        admin_err(sync.admin.add_member(several).await).code(),
        Code::InvalidArgument
    );
    let other = pb::MemberRequest {
        reason: why.into(),
        ..member("docker-privileged", "bob")
    };
    assert_eq!(
        admin_err(sync.admin.add_member(other).await).code(),
        Code::PermissionDenied
    );
    // Nothing else: no grants, no groups, no decisions.
    assert_eq!(
        code(
            sync.admin
                .issue_grant(grant_req(user("bob"), spec(S::Raw, M::Rw, false)))
                .await
        ),
        Code::PermissionDenied
    );
    assert_eq!(
        code(sync.admin.create_group(create_group("mine")).await),
        Code::PermissionDenied
    );
    // An admin is told the hub owns the membership, with or without a reason.
    let e = admin_err(admin.admin.add_member(member("hub-users", "mallory")).await);
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(
        e.message().contains("synced from JupyterHub"),
        "{}",
        e.message()
    );
    let e = admin_err(
        admin
            .admin
            .remove_member(member("hub-users", "alice"))
            .await,
    );
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert_eq!(
        admin_err(admin.admin.add_member(changed("x", "why")).await).code(),
        Code::FailedPrecondition
    );
    // The sync removes; after the sync is ended, admins manage the group again.
    ok(sync.admin.remove_member(changed(
        "alice",
        "jupyterhub sync: removed from hub group hub-users",
    )))
    .await;
    let g = ok(admin.admin.set_group_sync(set(false))).await;
    assert!(!g.synced);
    ok(admin.admin.add_member(member("hub-users", "dave"))).await;
    assert_eq!(
        admin_err(sync.admin.add_member(changed("erin", why)).await).code(),
        Code::PermissionDenied
    );
}

fn admin_err<T: std::fmt::Debug>(r: Result<tonic::Response<T>, tonic::Status>) -> tonic::Status {
    r.expect_err("refused")
}
