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

pub mod etcd;
pub mod pki;
pub mod proxy_rig;
pub mod registry;
mod requests;
pub use requests::*;

/// [`TestServer::try_start`]'s error when the server ended, without an error, before
/// it served.
const ENDED_WITHOUT_ERROR: &str = "the server ended without an error before serving";

pub struct TestServer {
    pub addr: SocketAddr,
    pub url: String,
    pub admin_token: String,
    pub cfg: Config,
    /// How clients reach it (TLS files for a TLS server).
    pub connect: privledger::client::ConnectOptions,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<Result<(), privledger::server::Error>>>,
    dir: Option<tempfile::TempDir>,
}

impl TestServer {
    /// A server with default configuration on a fresh data directory.
    pub async fn start() -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = TestServer::start_with(test_cfg(dir.path())).await;
        s.dir = Some(dir);
        s
    }

    /// A started server and an admin's clients of it.
    pub async fn start_admin() -> (TestServer, Clients) {
        let s = TestServer::start().await;
        let c = s.admin().await;
        (s, c)
    }

    /// A server with `cfg` that keeps `dir` (its data directory) until it stops.
    pub async fn start_owning(cfg: Config, dir: tempfile::TempDir) -> TestServer {
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
        match TestServer::try_start(cfg, "").await {
            Ok(s) => {
                s.stop().await;
                panic!("the server served a ledger it should have refused")
            }
            Err(e) if e.starts_with("panicked") || e == ENDED_WITHOUT_ERROR => {
                panic!("the server did not refuse: {e}")
            }
            Err(e) => e,
        }
    }

    /// [`TestServer::try_start`], which must serve and must have written the admin
    /// token.
    async fn start_checking(cfg: Config, service: &str) -> TestServer {
        let s = TestServer::try_start(cfg, service)
            .await
            .unwrap_or_else(|e| panic!("the server did not serve: {e}"));
        assert!(!s.admin_token.is_empty(), "admin token written");
        s
    }

    /// Like [`TestServer::start_with`] (waiting for `service` to report SERVING), but a
    /// refusal to serve is an `Err` with the server's message instead of a panic, and
    /// a missing admin token file leaves `admin_token` empty. A panic in the server
    /// is an `Err` starting with "panicked".
    pub async fn try_start(cfg: Config, service: &str) -> Result<TestServer, String> {
        TestServer::try_start_with(cfg, service, Default::default()).await
    }

    /// A TLS server (`cfg.net.tls` set), reached with `connect` (its CA, and a client
    /// certificate when it requires one) at `https://localhost:PORT`.
    pub async fn start_tls(cfg: Config, connect: privledger::client::ConnectOptions) -> TestServer {
        TestServer::try_start_with(cfg, "privledger.v1.Authorizer", connect)
            .await
            .unwrap_or_else(|e| panic!("the server did not serve: {e}"))
    }

    async fn try_start_with(
        cfg: Config,
        service: &str,
        connect: privledger::client::ConnectOptions,
    ) -> Result<TestServer, String> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let run_cfg = cfg.clone();
        let mut handle = tokio::spawn(async move {
            privledger::server::run(run_cfg, Some(listener), async {
                let _ = rx.await;
            })
            .await
        });
        let url = if cfg.net.tls.is_some() {
            format!("https://localhost:{}", addr.port())
        } else {
            format!("http://{addr}")
        };
        let ended =
            |r: Result<Result<(), privledger::server::Error>, tokio::task::JoinError>| match r {
                Ok(Err(e)) => e.to_string(),
                Ok(Ok(())) => ENDED_WITHOUT_ERROR.to_string(),
                Err(e) if e.is_panic() => {
                    let p = e.into_panic();
                    let msg = p
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    format!("panicked: {msg}")
                }
                Err(e) => format!("server task: {e}"),
            };
        // The listener is bound: the connection succeeds at once, and the health check
        // answers once the server serves, or fails when it gives up (the listener
        // closes).
        let served = async {
            let channel = connect
                .endpoint(&url)
                .map_err(|e| e.to_string())?
                .connect()
                .await
                .map_err(|e| e.to_string())?;
            health_status(&channel, service).await
        };
        let bound = std::time::Duration::from_secs(60);
        let status = tokio::select! {
            r = &mut handle => return Err(ended(r)),
            s = tokio::time::timeout(bound, served) => s,
        };
        match status {
            Ok(Ok(1)) => {}
            other => {
                return match tokio::time::timeout(bound, &mut handle).await {
                    Ok(r) => Err(ended(r)),
                    Err(_) => {
                        handle.abort();
                        panic!("the server neither served nor ended: {other:?}")
                    }
                }
            }
        }
        let admin_token = std::fs::read_to_string(cfg.admin_token_path())
            .map(|t| t.trim().to_string())
            .unwrap_or_default();
        Ok(TestServer {
            addr,
            url,
            admin_token,
            cfg,
            connect,
            shutdown: Some(tx),
            handle: Some(handle),
            dir: None,
        })
    }

    pub fn data_dir(&self) -> &Path {
        &self.cfg.data_dir
    }

    pub async fn client(&self, token: Option<&str>) -> Clients {
        Clients::connect_with(&self.url, token, &self.connect)
            .await
            .expect("connect")
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
        let connect = self.connect.clone();
        let (cfg, dir) = self.stop().await;
        let mut s = if cfg.net.tls.is_some() {
            TestServer::start_tls(cfg, connect).await
        } else {
            TestServer::start_with(cfg).await
        };
        s.dir = dir;
        s
    }
}

/// Verify over the whole chain (the default range).
pub async fn verify_all(c: &mut Clients) -> pb::VerifyResponse {
    c.audit
        .verify(pb::VerifyRequest::default())
        .await
        .expect("Verify")
        .into_inner()
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

/// A config for an in-process server on `data`, the Docker watcher off (tests that
/// need it turn it on themselves).
pub fn test_cfg(data: &Path) -> Config {
    let mut cfg = Config::with_data_dir(data);
    cfg.docker.enabled = false;
    cfg
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
            subject: subject.to_string(),
            ..stream_from(1, true)
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

// === storage tests ===

/// Copies a directory tree (files and directories).
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), &dst).unwrap();
        }
    }
}

/// Every file under `dir`, sorted, as paths relative to it.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                walk(root, &e.path(), out);
            } else {
                out.push(e.path().strip_prefix(root).unwrap().to_path_buf());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// [`test_cfg`] with a checkpoint every `checkpoint_interval` entries.
pub fn storage_cfg(data: &Path, checkpoint_interval: u64) -> Config {
    let mut cfg = test_cfg(data);
    cfg.ledger.checkpoint_interval = checkpoint_interval;
    cfg
}

/// Every entry from seq 1 to the head (no follow), and the error that ended the
/// stream early, if one did.
pub async fn stream_all(c: &mut Clients) -> (Vec<pb::Entry>, Option<tonic::Status>) {
    let mut out = Vec::new();
    let mut s = match c.audit.stream(stream_from(1, false)).await {
        Ok(s) => s.into_inner(),
        Err(e) => return (out, Some(e)),
    };
    loop {
        match s.message().await {
            Ok(Some(e)) => out.push(e),
            Ok(None) => return (out, None),
            Err(e) => return (out, Some(e)),
        }
    }
}

/// What a server answers about access, groups and grants, with the fields that
/// depend on when it was asked (the position, the evaluation time) cleared: two
/// servers holding the same state give equal `Answers`.
#[derive(Debug, Clone, PartialEq)]
pub struct Answers {
    pub who: Vec<pb::Access>,
    pub groups: Vec<pb::GroupSummary>,
    pub members: Vec<pb::Group>,
    pub grants: Vec<pb::Grant>,
}

fn timeless(mut a: pb::Access) -> pb::Access {
    a.seq = 0;
    a.evaluated_at = None;
    a
}

/// WhoHasAccess now (or at `at_seq`), position fields cleared.
pub async fn who_timeless(c: &mut Clients, at_seq: Option<u64>) -> Vec<pb::Access> {
    try_who_timeless(c, at_seq).await.expect("WhoHasAccess")
}

/// Like [`who_timeless`], with the status when the server cannot answer (a past
/// position whose replay crosses damage).
pub async fn try_who_timeless(
    c: &mut Clients,
    at_seq: Option<u64>,
) -> Result<Vec<pb::Access>, tonic::Status> {
    Ok(c.authz
        .who_has_access(pb::WhoHasAccessRequest {
            at: at_seq.map(|s| pb::Position {
                at: Some(pb::position::At::Seq(s)),
            }),
        })
        .await?
        .into_inner()
        .users
        .into_iter()
        .map(timeless)
        .collect())
}

/// CheckAccess for `user` now, position fields cleared.
pub async fn check_timeless(c: &mut Clients, user: &str) -> pb::Access {
    timeless(
        c.authz
            .check_access(pb::CheckAccessRequest {
                user: user.into(),
                at: None,
                omit_provenance: false,
                min_seq: 0,
            })
            .await
            .expect("CheckAccess")
            .into_inner(),
    )
}

pub async fn answers(c: &mut Clients) -> Answers {
    let who = who_timeless(c, None).await;
    let groups = c
        .admin
        .list_groups(pb::ListGroupsRequest {})
        .await
        .expect("ListGroups")
        .into_inner()
        .groups;
    let mut members = Vec::new();
    for g in &groups {
        let mut got = c
            .admin
            .get_group(pb::GetGroupRequest {
                name: g.name.clone(),
            })
            .await
            .expect("GetGroup")
            .into_inner();
        got.members.sort();
        members.push(got);
    }
    let grants = c
        .admin
        .list_grants(pb::ListGrantsRequest {
            subject: None,
            include_inactive: true,
        })
        .await
        .expect("ListGrants")
        .into_inner()
        .grants;
    Answers {
        who,
        groups,
        members,
        grants,
    }
}

// === `privledger serve` as a child process ===
//
// For tests that need the real binary rather than an in-process server: a kill -9,
// a signal, a umask set by a shell, a data directory on a mounted filesystem.

/// A free TCP port on 127.0.0.1, for an address a server binds by itself (the
/// binary's `--listen`, the metrics exporter): bound, read and released, so that the
/// server can bind it again at once.
/// `privledger loaded head=H checkpoint=C`: C, from a server's log (the first start
/// the log holds).
pub fn loaded_from_checkpoint(log: &str) -> u64 {
    let line = log
        .lines()
        .find(|l| l.contains("ledger loaded"))
        .unwrap_or_else(|| panic!("no 'ledger loaded' line in:\n{log}"));
    let v = line.split("checkpoint=").nth(1).expect("checkpoint=");
    v.split_whitespace().next().unwrap().parse().unwrap()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind 127.0.0.1:0")
        .local_addr()
        .unwrap()
        .port()
}

/// One health check of `service` ("" for the whole server) on `channel`: 1 SERVING,
/// 2 NOT_SERVING, or the error as text.
pub async fn health_status(channel: &Channel, service: &str) -> Result<i32, String> {
    let mut h = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    h.check(tonic_health::pb::HealthCheckRequest {
        service: service.into(),
    })
    .await
    .map(|r| r.into_inner().status)
    .map_err(|e| e.to_string())
}

/// Waits until `service` reports `want`, following the standard health Watch stream
/// (each change is pushed; nothing is polled); panics with the last status seen after
/// 60 s, a bound on a broken run.
pub async fn wait_health(channel: &Channel, service: &str, want: i32) {
    let mut h = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let mut last = None;
    let watched = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        let mut stream = h
            .watch(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health watch")
            .into_inner();
        while let Some(r) = stream.message().await.expect("health watch stream") {
            if r.status == want {
                return;
            }
            last = Some(r.status);
        }
    })
    .await;
    assert!(
        watched.is_ok(),
        "health of {service:?} did not become {want}: last {last:?}"
    );
}

/// `privledger serve` as a child process (the real binary), its stdout and stderr
/// in a log file. Killed with SIGKILL when dropped while still running.
pub struct ServeProcess {
    child: Option<std::process::Child>,
    pub url: String,
    /// How clients reach it: TLS files, for a server that serves TLS.
    connect: privledger::client::ConnectOptions,
    pub data: PathBuf,
    pub log: PathBuf,
    /// Lines copied to the log so far (changes with each line).
    lines: tokio::sync::watch::Receiver<u64>,
}

impl ServeProcess {
    /// Runs [`ServeProcess::command`], logging to `log`, and waits until health
    /// reports `service` SERVING.
    pub async fn start(data: &Path, extra: &[&str], log: &Path, service: &str) -> ServeProcess {
        ServeProcess::spawn(ServeProcess::command(data, extra), data, log, service).await
    }

    /// The usual command line: `BINARY serve --data DATA --listen 127.0.0.1:0
    /// --docker off EXTRA`, for a caller that runs it in a wrapper of its own. The
    /// server picks its port; [`ServeProcess::spawn`] reads it from the log.
    pub fn command(data: &Path, extra: &[&str]) -> std::process::Command {
        let mut cmd = std::process::Command::new(binary());
        cmd.arg("serve")
            .arg("--data")
            .arg(data)
            .args(["--listen", "127.0.0.1:0", "--docker", "off"])
            .args(extra);
        cmd
    }

    /// Spawns `cmd`, which must serve `data` on a TCP port it logs, copying its log
    /// (at info) to `log`; waits for the "serving gRPC on TCP" line, then for health
    /// to report `service` SERVING. Panics with the log when the process exits first.
    pub async fn spawn(
        cmd: std::process::Command,
        data: &Path,
        log: &Path,
        service: &str,
    ) -> ServeProcess {
        ServeProcess::spawn_connecting(cmd, data, log, service, None).await
    }

    /// [`ServeProcess::spawn`] for a server that serves TLS: reached with `tls`.
    pub async fn spawn_connecting(
        mut cmd: std::process::Command,
        data: &Path,
        log: &Path,
        service: &str,
        tls: Option<privledger::client::ConnectOptions>,
    ) -> ServeProcess {
        use std::io::{BufRead, Write};
        let mut f = std::fs::File::create(log).expect("log file");
        let mut child = cmd
            .env("PRIVLEDGER_LOG", "info")
            .stdin(std::process::Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn privledger serve");
        let stderr = child.stderr.take().expect("stderr piped");
        let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
        let (lines_tx, lines_rx) = tokio::sync::watch::channel(0u64);
        // Copies the log line by line (so it is readable while the server runs) and
        // hands over the address once the server serves.
        std::thread::spawn(move || {
            let mut addr_tx = Some(addr_tx);
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let _ = writeln!(f, "{line}");
                lines_tx.send_modify(|n| *n += 1);
                if line.contains("serving gRPC on TCP") {
                    if let (Some(tx), Some(i)) = (addr_tx.take(), line.find("addr=")) {
                        let addr = line[i + 5..].split_whitespace().next().unwrap_or("");
                        let _ = tx.send(addr.to_string());
                    }
                }
            }
        });
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut p = ServeProcess {
            child: Some(child),
            url: String::new(),
            connect: tls.unwrap_or_default(),
            data: data.to_path_buf(),
            log: log.to_path_buf(),
            lines: lines_rx,
        };
        // The bound is for a broken run, not a speed assertion.
        match tokio::time::timeout(std::time::Duration::from_secs(60), addr_rx).await {
            Ok(Ok(addr)) => p.url = format!("{scheme}://{addr}"),
            Ok(Err(_)) => {
                let status = p.child().wait().ok();
                panic!(
                    "privledger exited ({status:?}) before serving:\n{}",
                    p.log_tail()
                );
            }
            Err(_) => panic!("privledger did not serve within 60 s:\n{}", p.log_tail()),
        }
        let ch = p
            .connect
            .endpoint(&p.url)
            .unwrap()
            .connect()
            .await
            .expect("connect");
        wait_health(&ch, service, 1).await;
        p
    }

    fn child(&mut self) -> &mut std::process::Child {
        self.child.as_mut().expect("the process was stopped")
    }

    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.data.join("admin.token"))
            .expect("admin token written")
            .trim()
            .to_string()
    }

    pub async fn client(&self, token: &str) -> Clients {
        Clients::connect_with(&self.url, Some(token), &self.connect)
            .await
            .expect("connect")
    }

    pub async fn admin(&self) -> Clients {
        self.client(&self.admin_token()).await
    }

    /// The whole log.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (at most `bound`) until the log contains `needle`; whether it did.
    pub async fn wait_for_log(&self, needle: &str, bound: std::time::Duration) -> bool {
        let mut lines = self.lines.clone();
        tokio::time::timeout(bound, async {
            loop {
                lines.borrow_and_update();
                if self.log_text().contains(needle) {
                    return;
                }
                if lines.changed().await.is_err() {
                    // The process ended; what it wrote is all there is.
                    if self.log_text().contains(needle) {
                        return;
                    }
                    std::future::pending::<()>().await;
                }
            }
        })
        .await
        .is_ok()
    }

    /// The last 60 lines of the log.
    pub fn log_tail(&self) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    /// Sends `sig` to the server.
    pub fn signal(&mut self, sig: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_child(self.child());
        rustix::process::kill_process(pid, sig).expect("signal");
    }

    /// SIGKILL (`Child::kill`), and waits for the process; the log stays readable.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM (a graceful stop), then waits (at most 30 s) for the exit status,
    /// which must be a success.
    pub async fn terminate(mut self) {
        let mut child = self.child.take().expect("the process was stopped");
        let pid = rustix::process::Pid::from_child(&child);
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM");
        let waited = tokio::time::timeout(
            std::time::Duration::from_secs(30),
            tokio::task::spawn_blocking(move || {
                let status = child.wait();
                (child, status)
            }),
        )
        .await;
        match waited {
            Ok(Ok((_, Ok(status)))) => assert!(
                status.success(),
                "serve exited with {status}:\n{}",
                self.log_tail()
            ),
            Ok(Ok((_, Err(e)))) => panic!("waiting for privledger: {e}"),
            Ok(Err(e)) => panic!("waiting for privledger: {e}"),
            Err(_) => panic!(
                "privledger did not stop within 30 s of SIGTERM (left running):\n{}",
                self.log_tail()
            ),
        }
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
