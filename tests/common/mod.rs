//! Test harness: a real server on an ephemeral port with a temporary data directory.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use privledger::client::Clients;
use privledger::config::Config;
use privledger::pb;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

pub struct TestServer {
    pub addr: SocketAddr,
    pub url: String,
    pub admin_token: String,
    pub cfg: Config,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<Result<(), privledger::server::Error>>>,
    dir: Option<tempfile::TempDir>,
}

impl TestServer {
    /// A server with default configuration on a fresh data directory.
    pub async fn start() -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = Config::with_data_dir(dir.path());
        let mut s = TestServer::start_with(cfg).await;
        s.dir = Some(dir);
        s
    }

    /// A server with `cfg` (its data directory is kept by the caller).
    pub async fn start_with(cfg: Config) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let run_cfg = cfg.clone();
        let handle = tokio::spawn(async move {
            privledger::server::run(run_cfg, Some(listener), async {
                let _ = rx.await;
            })
            .await
        });
        let url = format!("http://{addr}");
        // The listener is bound, so the connection succeeds at once; the health
        // check answers once the server serves, which is after start-up wrote the
        // admin token.
        let channel = Channel::from_shared(url.clone())
            .unwrap()
            .connect()
            .await
            .expect("connect");
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
        let resp = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: "privledger.v1.Authorizer".into(),
            })
            .await
            .expect("health check");
        assert_eq!(resp.into_inner().status, 1, "SERVING");
        let admin_token = std::fs::read_to_string(cfg.admin_token_path())
            .expect("admin token written")
            .trim()
            .to_string();
        TestServer {
            addr,
            url,
            admin_token,
            cfg,
            shutdown: Some(tx),
            handle: Some(handle),
            dir: None,
        }
    }

    pub fn data_dir(&self) -> &Path {
        &self.cfg.data_dir
    }

    pub async fn client(&self, token: Option<&str>) -> Clients {
        Clients::connect(&self.url, token).await.expect("connect")
    }

    pub async fn admin(&self) -> Clients {
        self.client(Some(&self.admin_token)).await
    }

    /// Stops the server, waits for it, re-raises its panic; keeps the data directory
    /// (returned) for a restart.
    pub async fn stop(mut self) -> (Config, Option<tempfile::TempDir>) {
        self.shutdown.take().unwrap().send(()).ok();
        let h = self.handle.take().unwrap();
        match h.await {
            Ok(r) => r.expect("server ended with an error"),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => panic!("server task: {e}"),
        }
        (self.cfg.clone(), self.dir.take())
    }

    /// Stops and starts again on the same data directory (a new port).
    pub async fn restart(self) -> TestServer {
        let (cfg, dir) = self.stop().await;
        let mut s = TestServer::start_with(cfg).await;
        s.dir = dir;
        s
    }
}

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

pub async fn head(c: &mut Clients) -> u64 {
    c.audit
        .head(pb::HeadRequest {})
        .await
        .unwrap()
        .into_inner()
        .seq
}

pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_privledger"))
}
