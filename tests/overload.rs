//! A server that sheds load instead of falling over (issue 13, DESIGN §10): too many
//! connections, silent and half-open ones, requests whose body never comes, a global
//! limit, oversized headers, too many streams, unauthenticated health watches, a
//! stalled consumer, and running out of file descriptors. Every case ends by checking
//! the server still answers a fresh request.

mod common;

use std::time::Duration;

use common::*;
use pb::{SocketAccess as S, SocketMode as M};
use privledger::client::Clients;
use privledger::pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

/// The bound for a broken run, not a speed assertion.
const BOUND: Duration = Duration::from_secs(30);

fn cfg_with(
    data: &std::path::Path,
    f: impl FnOnce(&mut privledger::config::net::Limits),
) -> privledger::config::Config {
    let mut cfg = test_cfg(data);
    f(&mut cfg.net.limits);
    cfg
}

/// Reads until the server closes the connection; true if it did within BOUND.
async fn closed_by_server(s: &mut tokio::net::TcpStream) -> bool {
    let mut buf = [0u8; 256];
    tokio::time::timeout(BOUND, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

#[tokio::test]
async fn excess_silent_and_half_open_connections_are_closed_and_the_server_answers() {
    let data = tempfile::tempdir().unwrap();
    let cfg = cfg_with(data.path(), |l| {
        l.max_connections = 8;
        l.handshake_timeout = Duration::from_millis(500);
        l.keepalive_interval = Duration::from_secs(1);
        l.idle_timeout = Duration::from_secs(3);
    });
    let s = TestServer::start_with(cfg).await;
    // The health client of start-up may still hold a slot for a moment; fill the rest.
    let mut silent = Vec::new();
    for _ in 0..8 {
        silent.push(tokio::net::TcpStream::connect(s.addr).await.unwrap());
    }
    // One beyond the cap is closed at once (or, if a slot was still free, at its
    // handshake deadline): never held open.
    let mut extra = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    assert!(closed_by_server(&mut extra).await);
    // Connections that never send anything are closed at the handshake deadline.
    for c in &mut silent {
        assert!(closed_by_server(c).await, "a silent connection stayed open");
    }
    // Half an HTTP/2 preface, then nothing: closed too.
    let mut half = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    half.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    assert!(
        closed_by_server(&mut half).await,
        "a half-sent preface stayed open"
    );
    // A complete preface and SETTINGS, then silence: keep-alive pings go unanswered
    // and the idle deadline closes it.
    let mut quiet = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    quiet
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    assert!(
        closed_by_server(&mut quiet).await,
        "a client that went quiet stayed open"
    );
    let mut c = s.admin().await;
    ok(c.audit.head(pb::HeadRequest {})).await;
    s.stop().await;
}

/// A unary request whose headers arrive but whose body never does.
fn bodiless_request(token: &str) -> tonic::codegen::http::Request<tonic::body::Body> {
    let never =
        futures_util::stream::pending::<Result<http_body::Frame<bytes::Bytes>, tonic::Status>>();
    tonic::codegen::http::Request::builder()
        .method("POST")
        .uri("/privledger.v1.Audit/Head")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("authorization", format!("Bearer {token}"))
        .body(tonic::body::Body::new(http_body_util::StreamBody::new(
            never,
        )))
        .unwrap()
}

async fn grpc_status(res: tonic::codegen::http::Response<tonic::body::Body>) -> String {
    use http_body_util::BodyExt;
    let (parts, body) = res.into_parts();
    if let Some(s) = parts.headers.get("grpc-status") {
        return s.to_str().unwrap().to_string();
    }
    let t = body
        .collect()
        .await
        .ok()
        .and_then(|c| c.trailers().cloned());
    t.and_then(|t| {
        t.get("grpc-status")
            .map(|v| v.to_str().unwrap().to_string())
    })
    .unwrap_or_default()
}

#[tokio::test]
async fn requests_without_a_body_time_out_and_the_global_limit_answers_unavailable_at_once() {
    use tower::ServiceExt;
    let data = tempfile::tempdir().unwrap();
    let cfg = cfg_with(data.path(), |l| {
        l.max_concurrent_requests = 2;
        l.request_timeout = Duration::from_secs(2);
    });
    let s = TestServer::start_with(cfg).await;
    let channel = tonic::transport::Endpoint::from_shared(s.url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let stuck: Vec<_> = (0..2)
        .map(|_| {
            let ch = channel.clone();
            let req = bodiless_request(&s.admin_token);
            tokio::spawn(async move { grpc_status(ch.oneshot(req).await.unwrap()).await })
        })
        .collect();
    // While both hold the server's two places, a third is refused at once.
    let mut c = s.admin().await;
    let refused = tokio::time::timeout(BOUND, async {
        loop {
            match c.audit.head(pb::HeadRequest {}).await {
                Err(e) if e.code() == Code::Unavailable => return e,
                // The stuck requests may not have arrived yet.
                _ => tokio::task::yield_now().await,
            }
        }
    })
    .await
    .expect("the global limit never refused a request");
    assert!(
        refused.message().contains("limit of 2 requests"),
        "{refused:?}"
    );
    // The bodiless requests end at the request timeout (CANCELLED), not never.
    for t in stuck {
        let code = tokio::time::timeout(BOUND, t).await.unwrap().unwrap();
        assert_eq!(
            code, "1",
            "a request without a body ended with status {code}"
        );
    }
    ok(c.audit.head(pb::HeadRequest {})).await;
    s.stop().await;
}

/// Adds one large header to every call.
#[derive(Clone)]
struct Big(String);

impl tonic::service::Interceptor for Big {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut()
            .insert("x-padding", self.0.parse().unwrap());
        Ok(req)
    }
}

#[tokio::test]
async fn an_oversized_header_fails_that_request_not_the_connection() {
    let (s, mut c) = TestServer::start_admin().await;
    let channel = c.channel.clone();
    let mut big = pb::audit_client::AuditClient::with_interceptor(
        channel.clone(),
        Big("x".repeat(100 * 1024)),
    );
    let e = big.head(pb::HeadRequest {}).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("headers are"), "{e:?}");
    // The same channel (its one connection) still serves.
    let mut same = Clients::new(channel, Some(&s.admin_token)).unwrap();
    ok(same.audit.head(pb::HeadRequest {})).await;
    // A 100 KB authorization header is refused the same way.
    let mut huge_token = s.client(Some(&"t".repeat(100 * 1024))).await;
    assert_eq!(
        code(huge_token.audit.head(pb::HeadRequest {}).await),
        Code::ResourceExhausted
    );
    ok(c.audit.head(pb::HeadRequest {})).await;
    s.stop().await;
}

#[tokio::test]
async fn open_streams_are_capped_per_token_and_in_all_and_a_closed_one_frees_its_place() {
    let data = tempfile::tempdir().unwrap();
    let cfg = cfg_with(data.path(), |l| {
        l.streams_per_token = 2;
        l.max_streams = 3;
    });
    let s = TestServer::start_with(cfg).await;
    let mut admin = s.admin().await;
    let secret = ok(admin.admin.create_token(token("reader", pb::Role::Auditor)))
        .await
        .secret;
    let mut reader = s.client(Some(&secret)).await;
    let follow = || stream_from(1, true);
    let r1 = reader.audit.stream(follow()).await.unwrap().into_inner();
    let _r2 = reader.audit.stream(follow()).await.unwrap().into_inner();
    let e = reader.audit.stream(follow()).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("per token"), "{e:?}");
    let _a1 = admin.audit.stream(follow()).await.unwrap().into_inner();
    let e = admin.audit.stream(follow()).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    // Closing a stream gives its place back (once the server has seen it go).
    drop(r1);
    tokio::time::timeout(BOUND, async {
        while reader.audit.stream(follow()).await.is_err() {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("a closed stream's place was never given back");
    ok(admin.audit.head(pb::HeadRequest {})).await;
    s.stop().await;
}

#[tokio::test]
async fn health_is_bounded_like_the_rest() {
    let (s, mut c) = TestServer::start_admin().await;
    let mut h = tonic_health::pb::health_client::HealthClient::new(c.channel.clone());
    // A 4 MiB service name is refused, not read.
    let r = h
        .check(tonic_health::pb::HealthCheckRequest {
            service: "x".repeat(4 << 20),
        })
        .await;
    assert_eq!(code(r), Code::ResourceExhausted);
    // Watches need no token, so they are few: beyond the cap, refused at once.
    let mut open = Vec::new();
    let refused = loop {
        match h
            .watch(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await
        {
            Ok(w) => open.push(w.into_inner()),
            Err(e) => break e,
        }
        assert!(
            open.len() <= 64,
            "more than 64 health watches were let open"
        );
    };
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert_eq!(open.len(), 64);
    // Check still answers, and so does everything else.
    let r = h
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await;
    assert_eq!(code(r), Code::Ok);
    drop(open);
    ok(c.audit.head(pb::HeadRequest {})).await;
    s.stop().await;
}

#[tokio::test]
async fn a_consumer_that_stops_reading_then_resumes_receives_everything_in_order() {
    let (s, mut c) = TestServer::start_admin().await;
    ok(c.admin
        .issue_grant(grant_req(user("alice"), spec(S::Raw, M::Rw, false))))
    .await;
    let mut st = c
        .audit
        .stream(stream_from(1, true))
        .await
        .unwrap()
        .into_inner();
    // It reads the first entry, then stops while 20,000 decisions are recorded: far
    // more than the stream's buffers and HTTP/2's windows hold.
    assert_eq!(st.message().await.unwrap().unwrap().seq, 1);
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let mut c = c.clone();
            tokio::spawn(async move {
                for _ in 0..625 {
                    ok(c.authz.authorize_spawn(authorize("alice", "", "img"))).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let head = head(&mut c).await;
    assert!(head > 20_000);
    let mut next = 2;
    while next <= head {
        let e = tokio::time::timeout(BOUND, st.message())
            .await
            .expect("the stream went quiet")
            .unwrap()
            .unwrap();
        assert_eq!(e.seq, next, "in order, no gap, no duplicate");
        next += 1;
    }
    ok(c.audit.head(pb::HeadRequest {})).await;
    s.stop().await;
}

#[tokio::test]
async fn out_of_file_descriptors_the_server_backs_off_logs_once_and_recovers() {
    if std::process::Command::new("prlimit")
        .arg("--version")
        .output()
        .is_err()
    {
        println!("skipped: prlimit (util-linux) is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let log = dir.path().join("serve.log");
    let mut cmd = std::process::Command::new("prlimit");
    cmd.arg("--nofile=64:64").arg(binary());
    cmd.arg("serve")
        .arg("--data")
        .arg(&data)
        .args(["--listen", "127.0.0.1:0", "--docker", "off"]);
    let p = ServeProcess::spawn(cmd, &data, &log, "privledger.v1.Authorizer").await;
    let addr = p.url.trim_start_matches("http://").to_string();
    // Far more connections than the process has descriptors.
    let mut held = Vec::new();
    for _ in 0..120 {
        match tokio::net::TcpStream::connect(&addr).await {
            Ok(c) => held.push(c),
            Err(_) => break,
        }
    }
    assert!(
        p.wait_for_log("out of file descriptors", BOUND).await,
        "no warning was logged:\n{}",
        p.log_tail()
    );
    drop(held);
    // Once descriptors are free again, a fresh client is served (the back-off is
    // at most a second).
    let token = p.admin_token();
    let served = tokio::time::timeout(BOUND, async {
        loop {
            // Each attempt waits on the server itself: the kernel holds the
            // connection until the paused accept loop takes it.
            if let Ok(mut c) = Clients::connect(&p.url, Some(token.trim())).await {
                if c.audit.head(pb::HeadRequest {}).await.is_ok() {
                    return;
                }
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(
        served.is_ok(),
        "the server did not recover:\n{}",
        p.log_tail()
    );
    let warnings = p.log_text().matches("out of file descriptors").count();
    assert!(
        warnings <= 3,
        "the warning is not rate limited ({warnings} lines)"
    );
}
