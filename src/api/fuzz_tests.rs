//! Fuzzing the request-conversion layer: every RPC's request decoded from arbitrary
//! bytes and from mutations of valid requests (the committed corpus in
//! `fuzz/corpus/requests`, plus seeds made here), then handled as an admin would be.
//! The property: an answer or a status, never a panic, and a refused request appends
//! nothing.

use proptest::prelude::*;
use prost::Message;
use tonic::Request;

use super::auth::Caller;
use super::Api;
use crate::docker::ObserveConfig;
use crate::ledger::event::Role;
use crate::ledger::{Ledger, LedgerConfig};
use crate::pb;
use crate::pb::admin_server::Admin;
use crate::pb::audit_server::Audit;
use crate::pb::authorizer_server::Authorizer;

struct Fixture {
    rt: tokio::runtime::Runtime,
    api: Api,
    ledger: Ledger,
    _dir: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(crate::store::SledStore::open(dir.path()).unwrap());
    let ledger = Ledger::open(store, LedgerConfig::default()).unwrap();
    rt.block_on(ledger.start_up(
        &crate::config::Config::with_data_dir("/x").builtin_groups,
        "fuzz",
    ))
    .unwrap();
    let api = Api::new(ledger.clone(), ObserveConfig::new("/var/run/docker.sock"));
    Fixture {
        rt,
        api,
        ledger,
        _dir: dir,
    }
}

fn admin<T>(msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    r.extensions_mut().insert(Caller {
        name: "admin".into(),
        role: Role::Admin,
        cert: None,
        ledger_token: false,
    });
    r
}

/// Valid requests of every RPC, encoded: the seeds of the mutations.
fn seeds() -> Vec<(u8, Vec<u8>)> {
    let subject = Some(pb::Subject {
        kind: Some(pb::subject::Kind::User("alice".into())),
    });
    let spec = Some(pb::GrantSpec {
        socket: pb::SocketAccess::Limited as i32,
        socket_mode: 0,
        privileged: false,
        limits: Some(pb::Limits {
            max_containers: Some(2),
            ..Default::default()
        }),
    });
    let at = Some(pb::Position {
        at: Some(pb::position::At::Seq(1)),
    });
    let enc = |rpc: u8, m: &dyn Fn() -> Vec<u8>| (rpc, m());
    vec![
        enc(0, &|| {
            pb::CreateGroupRequest {
                name: "g".into(),
                request_id: "r".into(),
            }
            .encode_to_vec()
        }),
        enc(1, &|| {
            pb::DeleteGroupRequest {
                name: "g".into(),
                request_id: String::new(),
                reason: "r".into(),
            }
            .encode_to_vec()
        }),
        enc(2, &|| {
            pb::GetGroupRequest {
                name: "docker-privileged".into(),
            }
            .encode_to_vec()
        }),
        enc(3, &|| {
            pb::MemberRequest {
                group: "docker-privileged".into(),
                user: "bob".into(),
                request_id: "m".into(),
                users: vec!["carol".into(), "dave".into()],
                reason: String::new(),
            }
            .encode_to_vec()
        }),
        enc(4, &|| {
            pb::MemberRequest {
                group: "docker-privileged".into(),
                user: "bob".into(),
                request_id: String::new(),
                users: vec![],
                reason: String::new(),
            }
            .encode_to_vec()
        }),
        enc(5, &|| {
            pb::IssueGrantRequest {
                subject: subject.clone(),
                spec: spec.clone(),
                expires_at: None,
                reason: "why".into(),
                request_id: String::new(),
            }
            .encode_to_vec()
        }),
        enc(6, &|| {
            pb::RevokeGrantRequest {
                grant_id: 2,
                reason: "done".into(),
                request_id: String::new(),
            }
            .encode_to_vec()
        }),
        enc(7, &|| {
            pb::ListGrantsRequest {
                subject: subject.clone(),
                include_inactive: true,
            }
            .encode_to_vec()
        }),
        enc(8, &|| {
            pb::CreateTokenRequest {
                name: "t".into(),
                role: pb::Role::Auditor as i32,
                request_id: String::new(),
                expires_at: None,
            }
            .encode_to_vec()
        }),
        enc(9, &|| {
            pb::RevokeTokenRequest {
                name: "t".into(),
                request_id: String::new(),
            }
            .encode_to_vec()
        }),
        enc(10, &|| {
            pb::AuthorizeSpawnRequest {
                user: "alice".into(),
                server_name: "s".into(),
                image: "i".into(),
                request_id: String::new(),
            }
            .encode_to_vec()
        }),
        enc(11, &|| {
            pb::CheckAccessRequest {
                user: "alice".into(),
                at,
                omit_provenance: false,
                min_seq: 0,
            }
            .encode_to_vec()
        }),
        enc(12, &|| pb::WhoHasAccessRequest { at }.encode_to_vec()),
        enc(13, &|| {
            pb::StreamRequest {
                from_seq: 1,
                follow: false,
                kinds: vec!["grant_issued".into()],
                subject: "alice".into(),
            }
            .encode_to_vec()
        }),
        enc(14, &|| {
            pb::VerifyRequest {
                from_seq: 1,
                to_seq: 0,
            }
            .encode_to_vec()
        }),
        enc(15, &|| {
            pb::ImportDockerEventsRequest {
                events: vec![pb::DockerEvent {
                    r#type: "container".into(),
                    action: "create".into(),
                    id: "abc".into(),
                    time_nano: 1,
                    attributes: Default::default(),
                }],
            }
            .encode_to_vec()
        }),
        enc(16, &|| {
            pb::AccessIntervalsRequest {
                from: at,
                to: None,
                user: "alice".into(),
                socket: pb::SocketAccess::Raw.into(),
                privileged: true,
            }
            .encode_to_vec()
        }),
    ]
}

const RPCS: u8 = 17;

/// Decodes `bytes` as RPC `rpc`'s request and handles it; whether it was answered.
async fn handle(api: &Api, rpc: u8, bytes: &[u8]) -> Option<bool> {
    macro_rules! call {
        ($ty:ty, $method:ident) => {{
            let m = <$ty>::decode(bytes).ok()?;
            api.$method(admin(m)).await.is_ok()
        }};
    }
    Some(match rpc % RPCS {
        0 => call!(pb::CreateGroupRequest, create_group),
        1 => call!(pb::DeleteGroupRequest, delete_group),
        2 => call!(pb::GetGroupRequest, get_group),
        3 => call!(pb::MemberRequest, add_member),
        4 => call!(pb::MemberRequest, remove_member),
        5 => call!(pb::IssueGrantRequest, issue_grant),
        6 => call!(pb::RevokeGrantRequest, revoke_grant),
        7 => call!(pb::ListGrantsRequest, list_grants),
        8 => call!(pb::CreateTokenRequest, create_token),
        9 => call!(pb::RevokeTokenRequest, revoke_token),
        10 => call!(pb::AuthorizeSpawnRequest, authorize_spawn),
        11 => call!(pb::CheckAccessRequest, check_access),
        12 => call!(pb::WhoHasAccessRequest, who_has_access),
        16 => call!(pb::AccessIntervalsRequest, access_intervals),
        13 => {
            let m = pb::StreamRequest::decode(bytes).ok()?;
            // Never follow: the case must end.
            let m = pb::StreamRequest { follow: false, ..m };
            match api.stream(admin(m)).await {
                Ok(s) => {
                    let mut s = s.into_inner();
                    while tokio_stream::StreamExt::next(&mut s).await.is_some() {}
                    true
                }
                Err(_) => false,
            }
        }
        14 => call!(pb::VerifyRequest, verify),
        _ => call!(pb::ImportDockerEventsRequest, import_docker_events),
    })
}

fn check(f: &Fixture, rpc: u8, bytes: &[u8]) -> Result<(), TestCaseError> {
    let before = f.ledger.snapshot().seq;
    let answered = f.rt.block_on(handle(&f.api, rpc, bytes));
    if answered == Some(false) {
        prop_assert_eq!(
            f.ledger.snapshot().seq,
            before,
            "a refused request appended"
        );
    }
    Ok(())
}

fn all_seeds() -> Vec<(u8, Vec<u8>)> {
    let fresh = seeds();
    crate::ledger::decode_fuzz::maybe_write_corpus(
        "requests",
        &fresh
            .iter()
            .map(|(r, b)| [&[*r][..], b].concat())
            .collect::<Vec<_>>(),
    );
    let mut all: Vec<(u8, Vec<u8>)> = crate::ledger::decode_fuzz::corpus("requests")
        .into_iter()
        .filter_map(|b| b.split_first().map(|(r, rest)| (*r, rest.to_vec())))
        .collect();
    all.extend(fresh);
    all
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_as_any_request_never_panic_and_refusals_append_nothing(
        rpc in 0..RPCS,
        bytes in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        thread_local!(static F: Fixture = fixture());
        F.with(|f| check(f, rpc, &bytes))?;
    }

    #[test]
    fn mutated_requests_never_panic_and_refusals_append_nothing(
        pick in any::<proptest::sample::Index>(),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
        cut in proptest::option::of(any::<usize>()),
    ) {
        thread_local!(static F: (Fixture, Vec<(u8, Vec<u8>)>) = (fixture(), all_seeds()));
        F.with(|(f, seeds)| {
            let (rpc, seed) = pick.get(seeds);
            check(f, *rpc, &crate::ledger::decode_fuzz::mutate(seed, &flips, cut))
        })?;
    }
}
