//! The opt-in Prometheus endpoint: RPCs, decisions, head and writer batches show up,
//! and, with a Docker daemon, the watcher's state and event lag. One test: a process
//! has one metrics recorder.

mod common;

use common::{
    docker, docker_available, ensure_test_image, entries_until, free_port, has, wait_watching,
    Containers, TestServer, TEST_IMAGE,
};
use privledger::config::Config;
use privledger::pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn scrape(addr: std::net::SocketAddr) -> String {
    get(addr, "/metrics").await
}

/// `GET path` on the metrics listener: the whole answer, status line included.
async fn get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

/// One raw HTTP call on a Unix socket (a limited socket): the answer's text.
async fn unix_get(sock: &std::path::Path, path: &str) -> String {
    let mut s = tokio::net::UnixStream::connect(sock)
        .await
        .expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test]
async fn metrics_endpoint_reports_rpcs_decisions_and_writer() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config::with_data_dir(dir.path());
    let maddr: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    cfg.metrics_listen = Some(maddr);
    let with_docker = docker_available();
    cfg.docker.enabled = with_docker;
    let users = tempfile::tempdir().unwrap();
    cfg.ledger.spawn.limited_host_dir = users.path().display().to_string();
    let server = TestServer::start_with(cfg).await;
    let mut c = server.admin().await;
    let containers = Containers::new("metrics");
    if with_docker {
        wait_watching(&server).await;
        ensure_test_image();
        let name = containers.name("lag");
        // It mounts the daemon's socket with no decision behind it: an alert.
        let id = docker(&[
            "create",
            "--name",
            &name,
            "-v",
            "/var/run/docker.sock:/var/run/docker.sock",
            TEST_IMAGE,
            "true",
        ]);
        entries_until(&mut c, &id, |ev| {
            has(ev, "alert", "alert", "unauthorized_socket_mount")
        })
        .await;
        // A limited user's socket, and a call it refuses.
        c.admin
            .issue_grant(pb::IssueGrantRequest {
                subject: common::user("mallory-metrics"),
                spec: Some(pb::GrantSpec {
                    socket: pb::SocketAccess::Limited.into(),
                    ..Default::default()
                }),
                reason: "metrics test".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        c.authz
            .authorize_spawn(pb::AuthorizeSpawnRequest {
                user: "mallory-metrics".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        let sock = users.path().join("mallory-metrics").join("docker.sock");
        let answer = unix_get(&sock, "/system/df").await;
        assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    }
    c.authz
        .check_access(pb::CheckAccessRequest {
            user: "alice".into(),
            at: None,
            ..Default::default()
        })
        .await
        .unwrap();
    c.authz
        .authorize_spawn(pb::AuthorizeSpawnRequest {
            user: "alice".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let bad = c
        .admin
        .get_group(pb::GetGroupRequest {
            name: "nope".into(),
        })
        .await;
    assert!(bad.is_err());
    let text = scrape(maddr).await;
    for want in [
        r#"privledger_rpc_requests_total{method="/privledger.v1.Authorizer/CheckAccess",status="OK"} 1"#,
        r#"privledger_rpc_requests_total{method="/privledger.v1.Admin/GetGroup",status="NOT_FOUND"} 1"#,
        r#"privledger_decisions_total{outcome="denied"} 1"#,
        r#"privledger_spawn_decisions_total{socket="none"} 1"#,
        "privledger_users_raw_socket 0",
        "privledger_users_privileged 0",
        "privledger_rpc_duration_seconds_bucket{",
        "privledger_writer_batch_entries_bucket{",
        "privledger_writer_flush_seconds_count",
        "privledger_ledger_head_seq ",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    // Only /metrics answers.
    for path in ["/", "/other", "/metrics/x"] {
        let answer = get(maddr, path).await;
        assert!(answer.starts_with("HTTP/1.1 404"), "{path}: {answer}");
    }
    if with_docker {
        assert!(text.contains("privledger_docker_attached 1"), "{text}");
        for want in [
            r#"privledger_alerts_total{kind="unauthorized_socket_mount"} "#,
            r#"privledger_proxy_calls_total{outcome="refused",rule="endpoint"} 1"#,
            r#"privledger_spawn_decisions_total{socket="limited"} 1"#,
            "privledger_users_limited_socket 1",
        ] {
            assert!(text.contains(want), "missing {want:?} in:\n{text}");
        }
        let lags: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("privledger_docker_event_lag_seconds_count "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no event lag count in:\n{text}"));
        assert!(lags >= 1.0, "{text}");
    }
    server.stop().await;
}
