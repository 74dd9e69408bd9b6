//! Tokens that mean what they say (issue 13): a revoked or expired token is out at
//! once, including its open streams; the last admin cannot be revoked; an admin
//! token can be recovered offline; a request_id is bound to its request.

mod common;

use common::*;
use pb::{SocketAccess as S, SocketMode as M};
use privledger::client::Clients;
use privledger::pb;
use tonic::Code;

/// The bound for a broken run, not a speed assertion.
const BOUND: std::time::Duration = std::time::Duration::from_secs(30);

async fn secret_of(c: &mut Clients, name: &str, role: pb::Role, expires_in: Option<u64>) -> String {
    let mut req = token(name, role);
    req.expires_at = expires_in.map(|s| {
        let t = std::time::SystemTime::now() + std::time::Duration::from_secs(s);
        prost_types::Timestamp::from(t)
    });
    ok(c.admin.create_token(req)).await.secret
}

/// Reads `s` until it ends; the status that ended it.
async fn end_of(mut s: tonic::Streaming<pb::Entry>) -> Option<tonic::Status> {
    tokio::time::timeout(BOUND, async {
        loop {
            match s.message().await {
                Ok(Some(_)) => {}
                Ok(None) => return None,
                Err(e) => return Some(e),
            }
        }
    })
    .await
    .expect("the stream ended")
}

#[tokio::test]
async fn revoking_a_token_ends_its_open_follow_stream_and_nothing_after_is_sent() {
    let (s, mut admin) = TestServer::start_admin().await;
    let secret = secret_of(&mut admin, "reader", pb::Role::Auditor, None).await;
    let mut reader = s.client(Some(&secret)).await;
    let mut st = reader
        .audit
        .stream(stream_from(1, true))
        .await
        .unwrap()
        .into_inner();
    // The history arrives, then the stream waits for new entries.
    let head = head(&mut admin).await;
    loop {
        let e = st.message().await.unwrap().unwrap();
        if e.seq == head {
            break;
        }
    }
    let revoked = ok(admin.admin.revoke_token(pb::RevokeTokenRequest {
        name: "reader".into(),
        request_id: String::new(),
    }))
    .await;
    // A grant issued after the revocation must never reach the revoked reader.
    let g = ok(admin
        .admin
        .issue_grant(grant_req(user("x"), spec(S::Raw, M::Rw, false))))
    .await;
    let mut seen = Vec::new();
    let end = tokio::time::timeout(BOUND, async {
        loop {
            match st.message().await {
                Ok(Some(e)) => seen.push(e.seq),
                Ok(None) => return None,
                Err(e) => return Some(e),
            }
        }
    })
    .await
    .expect("the stream ended");
    let end = end.expect("ended with a status, not as if complete");
    assert_eq!(end.code(), Code::Unauthenticated, "{end:?}");
    assert!(end.message().contains("reader"), "{}", end.message());
    assert!(seen.iter().all(|&q| q <= revoked.seq), "{seen:?}");
    assert!(!seen.contains(&g.id));
    // And the token is refused for anything new.
    assert_eq!(
        code(reader.audit.head(pb::HeadRequest {}).await),
        Code::Unauthenticated
    );
    s.stop().await;
}

#[tokio::test]
async fn an_expiring_token_works_until_its_expiry_then_is_refused_and_its_stream_ends() {
    let (s, mut admin) = TestServer::start_admin().await;
    let secret = secret_of(&mut admin, "brief", pb::Role::Auditor, Some(2)).await;
    let mut c = s.client(Some(&secret)).await;
    ok(c.audit.head(pb::HeadRequest {})).await;
    let listed = ok(admin.admin.list_tokens(pb::ListTokensRequest {})).await;
    let t = listed.tokens.iter().find(|t| t.name == "brief").unwrap();
    assert!(t.expires_at.is_some() && !t.expired);
    let st = c
        .audit
        .stream(stream_from(1, true))
        .await
        .unwrap()
        .into_inner();
    // Nothing is appended meanwhile: the expiry alone must end the stream.
    let end = end_of(st).await.expect("ended with a status");
    assert_eq!(end.code(), Code::Unauthenticated, "{end:?}");
    let r = c.audit.head(pb::HeadRequest {}).await;
    assert_eq!(code(r), Code::Unauthenticated);
    let listed = ok(admin.admin.list_tokens(pb::ListTokensRequest {})).await;
    assert!(
        listed
            .tokens
            .iter()
            .find(|t| t.name == "brief")
            .unwrap()
            .expired
    );
    // An expiry in the past is refused, and nothing is appended.
    let before = head(&mut admin).await;
    let mut req = token("late", pb::Role::Auditor);
    req.expires_at = Some(prost_types::Timestamp {
        seconds: 1,
        nanos: 0,
    });
    assert_eq!(
        code(admin.admin.create_token(req).await),
        Code::InvalidArgument
    );
    assert_eq!(head(&mut admin).await, before);
    s.stop().await;
}

#[tokio::test]
async fn the_last_admin_cannot_be_revoked_and_offline_recovery_issues_a_new_one() {
    let (s, mut admin) = TestServer::start_admin().await;
    let revoke = |name: &str| pb::RevokeTokenRequest {
        name: name.into(),
        request_id: String::new(),
    };
    let before = head(&mut admin).await;
    let r = admin.admin.revoke_token(revoke("admin")).await;
    let e = r.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("last usable admin"), "{}", e.message());
    assert_eq!(head(&mut admin).await, before, "nothing appended");
    // With a second admin the first may go; the second is then the last.
    let second = secret_of(&mut admin, "second", pb::Role::Admin, None).await;
    ok(admin.admin.revoke_token(revoke("admin"))).await;
    let mut admin2 = s.client(Some(&second)).await;
    assert_eq!(
        code(admin2.admin.revoke_token(revoke("second")).await),
        Code::FailedPrecondition
    );

    // Offline recovery refuses while the server holds the directory...
    let data = s.data_dir().to_path_buf();
    let out = std::process::Command::new(binary())
        .args(["admin-token", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use") || err.contains("running"), "{err}");

    // ... and, the server stopped, records a new admin token and writes its secret.
    let (cfg, dir) = s.stop().await;
    let out = std::process::Command::new(binary())
        .args(["admin-token", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("admin-recovered-1"), "{said}");
    let s = TestServer::start_owning(cfg, dir.unwrap()).await;
    let mut recovered = s.admin().await;
    let listed = ok(recovered.admin.list_tokens(pb::ListTokensRequest {})).await;
    let t = listed
        .tokens
        .iter()
        .find(|t| t.name == "admin-recovered-1")
        .unwrap();
    assert_eq!(t.role, pb::Role::Admin as i32);
    assert_eq!(t.created_by, "system");
    assert!(verify_all(&mut recovered).await.ok);
    s.stop().await;
}

#[tokio::test]
async fn offline_recovery_refuses_a_directory_without_a_ledger_or_owned_by_another_user() {
    let empty = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(binary())
        .args(["admin-token", "--data"])
        .arg(empty.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no ledger"));
    assert!(!empty.path().join("admin.token").exists());

    if rustix_uid() != 0 {
        println!("skipped the foreign-owner case: it needs root to chown");
        return;
    }
    let s = TestServer::start().await;
    let (_, dir) = s.stop().await;
    let dir = dir.unwrap();
    let before = std::fs::read_to_string(dir.path().join("admin.token")).unwrap();
    std::os::unix::fs::chown(dir.path(), Some(65534), None).unwrap();
    let out = std::process::Command::new(binary())
        .args(["admin-token", "--data"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("owned by uid 65534"), "{err}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("admin.token")).unwrap(),
        before
    );
}

fn rustix_uid() -> u32 {
    // SAFETY-free: reading our own uid through /proc avoids another dev-dependency.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u.parse().unwrap_or(1)))
        })
        .unwrap_or(1)
}

/// Each mutation the API offers, then the same request_id with a different request:
/// FAILED_PRECONDITION naming the first seq, nothing appended, and the first request
/// again is a replay that says so.
#[tokio::test]
async fn a_request_id_reused_for_a_different_request_is_refused_for_every_mutation() {
    let (s, mut c) = TestServer::start_admin().await;
    ok(c.admin.create_group(create_group("team"))).await;
    ok(c.admin.add_member(member("team", "carol"))).await;
    let g1 = ok(c
        .admin
        .issue_grant(grant_req(user("alice"), spec(S::Raw, M::Rw, false))))
    .await;
    let g2 = ok(c
        .admin
        .issue_grant(grant_req(user("bob"), spec(S::Raw, M::Rw, false))))
    .await;
    let rid = |n: &str| format!("rid-{n}");
    let assert_refused = |st: tonic::Status, first: u64| {
        assert_eq!(st.code(), Code::FailedPrecondition, "{st:?}");
        assert!(
            st.message().contains(&format!("seq {first}")),
            "{}",
            st.message()
        );
    };

    // AuthorizeSpawn: bob must not get alice's decision.
    let mut a = authorize("alice", "", "img");
    a.request_id = rid("spawn");
    let d1 = ok(c.authz.authorize_spawn(a.clone())).await;
    let mut b = authorize("bob", "", "img");
    b.request_id = rid("spawn");
    let before = head(&mut c).await;
    assert_refused(c.authz.authorize_spawn(b).await.unwrap_err(), d1.seq);
    assert_eq!(head(&mut c).await, before);
    let again = ok(c.authz.authorize_spawn(a)).await;
    assert!(again.replayed && again.decision_id == d1.decision_id);

    // IssueGrant.
    let mut gi = grant_req(user("dave"), spec(S::Raw, M::Rw, false));
    gi.request_id = rid("grant");
    let first = ok(c.admin.issue_grant(gi.clone())).await;
    let mut other = grant_req(user("erin"), spec(S::Raw, M::Rw, false));
    other.request_id = rid("grant");
    assert_refused(c.admin.issue_grant(other).await.unwrap_err(), first.id);
    let again = ok(c.admin.issue_grant(gi)).await;
    assert!(again.replayed && again.id == first.id);

    // RevokeGrant: revoking g2 with g1's request_id must not answer "g1 revoked".
    let mut r1 = revoke(g1.id, "done");
    r1.request_id = rid("revoke");
    let first = ok(c.admin.revoke_grant(r1.clone())).await;
    let mut r2 = revoke(g2.id, "done");
    r2.request_id = rid("revoke");
    assert_refused(
        c.admin.revoke_grant(r2).await.unwrap_err(),
        first.ended_seq.unwrap(),
    );
    let grants = ok(c.admin.list_grants(pb::ListGrantsRequest {
        subject: user("bob"),
        include_inactive: false,
    }))
    .await;
    assert_eq!(grants.grants.len(), 1, "bob's grant stays active");
    let again = ok(c.admin.revoke_grant(r1)).await;
    assert!(again.replayed);

    // CreateToken: another name or role with the same request_id.
    let mut t1 = token("t1", pb::Role::Auditor);
    t1.request_id = rid("token");
    let first = ok(c.admin.create_token(t1.clone())).await;
    let mut t2 = token("t1", pb::Role::Admin);
    t2.request_id = rid("token");
    assert_refused(c.admin.create_token(t2).await.unwrap_err(), first.seq);
    let again = ok(c.admin.create_token(t1)).await;
    assert!(again.replayed && again.secret.is_empty());

    // The group and membership mutations, and RevokeToken.
    let mut m1 = member("team", "frank");
    m1.request_id = rid("member");
    let first = ok(c.admin.add_member(m1)).await;
    let mut m2 = member("team", "gina");
    m2.request_id = rid("member");
    assert_refused(c.admin.add_member(m2).await.unwrap_err(), first.seq);
    let mut rm1 = member("team", "carol");
    rm1.request_id = rid("remove");
    let first = ok(c.admin.remove_member(rm1)).await;
    let mut rm2 = member("team", "frank");
    rm2.request_id = rid("remove");
    assert_refused(c.admin.remove_member(rm2).await.unwrap_err(), first.seq);
    let mut cg = create_group("g-a");
    cg.request_id = rid("group");
    let first = ok(c.admin.create_group(cg)).await;
    let mut cg2 = create_group("g-b");
    cg2.request_id = rid("group");
    assert_refused(c.admin.create_group(cg2).await.unwrap_err(), first.seq);
    let mut dg = delete_group("g-a");
    dg.request_id = rid("delete");
    let first = ok(c.admin.delete_group(dg)).await;
    let mut dg2 = delete_group("team");
    dg2.request_id = rid("delete");
    assert_refused(c.admin.delete_group(dg2).await.unwrap_err(), first.seq);
    let mut rt = pb::RevokeTokenRequest {
        name: "t1".into(),
        request_id: rid("rt"),
    };
    let first = ok(c.admin.revoke_token(rt.clone())).await;
    rt.name = "admin".into();
    assert_refused(c.admin.revoke_token(rt).await.unwrap_err(), first.seq);
    assert!(verify_all(&mut c).await.ok);
    s.stop().await;
}
