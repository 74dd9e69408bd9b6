//! Request builders shared by the tests: one line per request, the defaults filled in
//! (no request_id, reason "test"), so a test reads as the calls it makes.

use privledger::client::Clients;
use privledger::pb;
use tonic::Code;

pub fn user(u: &str) -> Option<pb::Subject> {
    Some(pb::Subject {
        kind: Some(pb::subject::Kind::User(u.into())),
    })
}

pub fn group(g: &str) -> Option<pb::Subject> {
    Some(pb::Subject {
        kind: Some(pb::subject::Kind::Group(g.into())),
    })
}

pub fn spec(
    socket: pb::SocketAccess,
    mode: pb::SocketMode,
    privileged: bool,
) -> Option<pb::GrantSpec> {
    Some(pb::GrantSpec {
        socket: socket.into(),
        socket_mode: mode.into(),
        privileged,
        limits: None,
    })
}

pub fn grant_req(
    subject: Option<pb::Subject>,
    spec: Option<pb::GrantSpec>,
) -> pb::IssueGrantRequest {
    pb::IssueGrantRequest {
        subject,
        spec,
        expires_at: None,
        reason: "test".into(),
        request_id: String::new(),
    }
}

/// Adds `u` to group `g` (no request_id).
/// A member change, with a reason (required to remove a member of a built-in group).
pub fn member(g: &str, u: &str) -> pb::MemberRequest {
    pb::MemberRequest {
        group: g.into(),
        user: u.into(),
        request_id: String::new(),
        users: vec![],
        reason: "test".into(),
    }
}

/// The audit stream from `from_seq`, every kind and subject; `follow` keeps it open
/// for the entries still to come.
pub fn stream_from(from_seq: u64, follow: bool) -> pb::StreamRequest {
    pb::StreamRequest {
        from_seq,
        follow,
        kinds: vec![],
        subject: String::new(),
    }
}

pub fn create_group(name: &str) -> pb::CreateGroupRequest {
    pb::CreateGroupRequest {
        name: name.into(),
        request_id: String::new(),
    }
}

pub fn delete_group(name: &str) -> pb::DeleteGroupRequest {
    pb::DeleteGroupRequest {
        name: name.into(),
        request_id: String::new(),
        reason: "test".into(),
    }
}

pub fn get_group(name: &str) -> pb::GetGroupRequest {
    pb::GetGroupRequest { name: name.into() }
}

pub fn revoke(grant_id: u64, reason: &str) -> pb::RevokeGrantRequest {
    pb::RevokeGrantRequest {
        grant_id,
        reason: reason.into(),
        request_id: String::new(),
    }
}

pub fn token(name: &str, role: pb::Role) -> pb::CreateTokenRequest {
    pb::CreateTokenRequest {
        name: name.into(),
        role: role.into(),
        request_id: String::new(),
        expires_at: None,
    }
}

/// CheckAccess now, with provenance.
pub fn check(user: &str) -> pb::CheckAccessRequest {
    pb::CheckAccessRequest {
        user: user.into(),
        at: None,
        ..Default::default()
    }
}

/// CheckAccess as of `seq`.
pub fn check_at_seq(user: &str, seq: u64) -> pb::CheckAccessRequest {
    pb::CheckAccessRequest {
        at: Some(pb::Position {
            at: Some(pb::position::At::Seq(seq)),
        }),
        ..check(user)
    }
}

pub fn authorize(user: &str, server_name: &str, image: &str) -> pb::AuthorizeSpawnRequest {
    pb::AuthorizeSpawnRequest {
        user: user.into(),
        server_name: server_name.into(),
        image: image.into(),
        ..Default::default()
    }
}

/// The status code of a call (`Ok` when it succeeded).
pub fn code<T: std::fmt::Debug>(r: Result<tonic::Response<T>, tonic::Status>) -> Code {
    match r {
        Ok(_) => Code::Ok,
        Err(s) => s.code(),
    }
}

/// The caller's view of `u`'s access now.
pub async fn access(c: &mut Clients, u: &str) -> pb::Access {
    c.authz.check_access(check(u)).await.unwrap().into_inner()
}

/// The answer of a call that must succeed.
pub async fn ok<T>(
    call: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> T {
    match call.await {
        Ok(r) => r.into_inner(),
        Err(s) => panic!("call failed: {s:?}"),
    }
}
