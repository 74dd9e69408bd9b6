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
        let mut cfg = Config::with_data_dir(dir.path());
        // Tests that need the Docker watcher turn it on themselves.
        cfg.docker.enabled = false;
        let mut s = TestServer::start_with(cfg).await;
        s.dir = Some(dir);
        s
    }

    /// A server with `cfg` (its data directory is kept by the caller).
    pub async fn start_with(cfg: Config) -> TestServer {
        TestServer::start_checking(cfg, "privledger.v1.Authorizer").await
    }

    /// A forensic server (`--read-only`) on `cfg`'s data directory: only the read
    /// paths report SERVING.
    pub async fn start_read_only(mut cfg: Config) -> TestServer {
        cfg.read_only = true;
        TestServer::start_checking(cfg, "privledger.v1.Audit").await
    }

    /// Starts a server on `cfg` that must refuse to serve; returns its error message.
    pub async fn start_refused(cfg: Config) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let run = privledger::server::run(cfg, Some(listener), std::future::pending());
        let served = async {
            let channel = Channel::from_shared(url).unwrap().connect().await;
            if let Ok(ch) = channel {
                let mut health = tonic_health::pb::health_client::HealthClient::new(ch);
                let _ = health
                    .check(tonic_health::pb::HealthCheckRequest {
                        service: String::new(),
                    })
                    .await;
            }
        };
        tokio::select! {
            r = run => match r {
                Err(e) => e.to_string(),
                Ok(()) => panic!("the server ended without an error"),
            },
            () = served => panic!("the server served a ledger it should have refused"),
        }
    }

    async fn start_checking(cfg: Config, service: &str) -> TestServer {
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
                service: service.into(),
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

/// Whether a Docker daemon answers. Without one, Docker tests skip with a printed
/// reason, unless `PRIVLEDGER_REQUIRE_DOCKER=1` (CI), which makes them fail.
pub fn docker_available() -> bool {
    let ok = std::process::Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        if std::env::var("PRIVLEDGER_REQUIRE_DOCKER").as_deref() == Ok("1") {
            panic!("PRIVLEDGER_REQUIRE_DOCKER=1 but no Docker daemon is reachable");
        }
        eprintln!("skipping: no Docker daemon is reachable (set PRIVLEDGER_REQUIRE_DOCKER=1 to fail instead)");
    }
    ok
}

/// Waits (through health's Watch stream, no polling) until the watcher is attached.
pub async fn wait_watching(s: &TestServer) {
    let c = s.client(None).await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(c.channel.clone());
    let mut w = health
        .watch(tonic_health::pb::HealthCheckRequest {
            service: "privledger.v1.DockerWatcher".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let r = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        while let Some(st) = w.message().await.unwrap() {
            if st.status == 1 {
                return;
            }
        }
    })
    .await;
    assert!(r.is_ok(), "the watcher did not attach");
}

pub const TEST_IMAGE: &str = "privledger-test-busybox:latest";

/// Builds the `FROM scratch` busybox test image when it is missing (no registry is
/// needed: the static busybox comes from the host, Debian's busybox-static).
pub fn ensure_test_image() {
    static ONCE: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
    let mut done = ONCE.lock().unwrap_or_else(|e| e.into_inner());
    if *done {
        return;
    }
    let present = std::process::Command::new("docker")
        .args(["image", "inspect", TEST_IMAGE])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !present {
        let ctx = tempfile::tempdir().unwrap();
        std::fs::copy("/bin/busybox", ctx.path().join("busybox"))
            .expect("/bin/busybox (install Debian's busybox-static)");
        std::fs::write(
            ctx.path().join("Dockerfile"),
            "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\nCMD [\"/bin/sh\"]\n",
        )
        .unwrap();
        let st = std::process::Command::new("docker")
            .args(["build", "-q", "-t", TEST_IMAGE])
            .arg(ctx.path())
            .status()
            .unwrap();
        assert!(st.success(), "building the test image failed");
    }
    *done = true;
}

/// Runs `docker ARGS`, returning trimmed stdout; panics with stderr on failure.
pub fn docker(args: &[&str]) -> String {
    let out = std::process::Command::new("docker")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Containers a test creates, removed (forcibly) when the guard drops, also when
/// the test fails.
pub struct Containers {
    pub prefix: String,
    names: std::sync::Mutex<Vec<String>>,
}

impl Containers {
    pub fn new(test: &str) -> Containers {
        let mut b = [0u8; 4];
        getrandom::fill(&mut b).unwrap();
        Containers {
            prefix: format!("plt-{test}-{}", hex::encode(b)),
            names: std::sync::Mutex::new(Vec::new()),
        }
    }

    pub fn name(&self, n: &str) -> String {
        let name = format!("{}-{n}", self.prefix);
        self.names.lock().unwrap().push(name.clone());
        name
    }
}

impl Drop for Containers {
    fn drop(&mut self) {
        let names = self.names.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for chunk in names.chunks(50) {
            let _ = std::process::Command::new("docker")
                .args(["rm", "-f"])
                .args(chunk)
                .output();
        }
    }
}

/// Follows the audit stream until `pred` holds for the entries seen so far about
/// `subject` (a container id); returns them. The 60 s bound only keeps a broken run
/// from hanging; it is not a speed assertion.
pub async fn entries_until(
    c: &mut Clients,
    subject: &str,
    pred: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let mut s = c
        .audit
        .stream(pb::StreamRequest {
            from_seq: 1,
            follow: true,
            kinds: vec![],
            subject: subject.to_string(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut seen = Vec::new();
    let r = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        loop {
            if pred(&seen) {
                return;
            }
            let e = s.message().await.unwrap().expect("stream open");
            let body: serde_json::Value = serde_json::from_slice(&e.body).unwrap();
            seen.push(body["event"].clone());
        }
    })
    .await;
    assert!(r.is_ok(), "timed out waiting; entries so far: {seen:#?}");
    seen
}

pub fn has(events: &[serde_json::Value], kind: &str, field: &str, value: &str) -> bool {
    events
        .iter()
        .any(|e| e["kind"] == kind && e[field].as_str() == Some(value))
}
