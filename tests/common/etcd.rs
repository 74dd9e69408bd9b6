//! A real etcd cluster on loopback for the cluster tests: members started from the
//! `etcd` binary (Debian's `etcd-server`), each in a temporary data directory.

use std::path::{Path, PathBuf};
use std::time::Duration;

use privledger::client::ConnectOptions;
use privledger::etcd::{Etcd, EtcdOptions};

/// The etcd binary (`PRIVLEDGER_ETCD_BIN`, else `etcd` on the PATH), or `None` after
/// printing why the test is skipped; with `PRIVLEDGER_REQUIRE_ETCD=1` a missing
/// binary fails the test instead.
pub fn etcd_binary() -> Option<PathBuf> {
    let found = std::env::var_os("PRIVLEDGER_ETCD_BIN")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("PATH").and_then(|p| {
                std::env::split_paths(&p)
                    .map(|d| d.join("etcd"))
                    .find(|f| f.is_file())
            })
        });
    if found.is_none() {
        if std::env::var("PRIVLEDGER_REQUIRE_ETCD").as_deref() == Ok("1") {
            panic!(
                "PRIVLEDGER_REQUIRE_ETCD=1 but no etcd binary was found (apt install etcd-server)"
            );
        }
        eprintln!(
            "skipping: no etcd binary (install Debian's etcd-server, or set PRIVLEDGER_ETCD_BIN; \
             PRIVLEDGER_REQUIRE_ETCD=1 fails instead)"
        );
    }
    found
}

pub struct Member {
    pub name: String,
    pub client_url: String,
    peer_url: String,
    data: PathBuf,
    log: PathBuf,
    child: Option<std::process::Child>,
    /// Turns true when the running process logs that it serves clients (it has joined
    /// the cluster); its sender is dropped when the process ends.
    ready: tokio::sync::watch::Receiver<bool>,
}

/// What etcd logs once it has joined its cluster and serves clients (3.4 and later).
const READY_LINE: &str = "ready to serve client requests";

/// TLS for the members' client side: their certificate and key, the CA clients'
/// certificates must chain to, and a client certificate the tests use.
#[derive(Clone)]
pub struct EtcdTls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

/// Members of one etcd cluster, killed when dropped.
pub struct EtcdCluster {
    bin: PathBuf,
    pub members: Vec<Member>,
    initial: String,
    token: String,
    tls: Option<EtcdTls>,
    _dir: tempfile::TempDir,
}

impl EtcdCluster {
    /// `n` members on loopback ports, healthy; `None` when there is no etcd (skip).
    pub async fn start(n: usize) -> Option<EtcdCluster> {
        EtcdCluster::start_with(n, None).await
    }

    /// Members that serve clients over TLS and require client certificates.
    pub async fn start_with(n: usize, tls: Option<EtcdTls>) -> Option<EtcdCluster> {
        let bin = etcd_binary()?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let dir = tempfile::tempdir().expect("tempdir");
        let members: Vec<Member> = (0..n)
            .map(|i| Member {
                name: format!("e{i}"),
                client_url: format!("{scheme}://127.0.0.1:{}", super::free_port()),
                peer_url: format!("http://127.0.0.1:{}", super::free_port()),
                data: dir.path().join(format!("e{i}")),
                log: dir.path().join(format!("e{i}.log")),
                child: None,
                ready: tokio::sync::watch::channel(false).1,
            })
            .collect();
        let initial = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url))
            .collect::<Vec<_>>()
            .join(",");
        let token = format!("t{}", std::process::id());
        let mut c = EtcdCluster {
            bin,
            members,
            initial,
            token,
            tls,
            _dir: dir,
        };
        for i in 0..n {
            c.spawn(i, "new");
        }
        for i in 0..n {
            c.wait_healthy(i).await;
        }
        Some(c)
    }

    fn spawn(&mut self, i: usize, state: &str) {
        let m = &self.members[i];
        let log = std::fs::File::create(&m.log).expect("etcd log");
        let mut cmd = std::process::Command::new(&self.bin);
        if let Some(tls) = &self.tls {
            cmd.arg("--cert-file")
                .arg(&tls.cert)
                .arg("--key-file")
                .arg(&tls.key)
                .arg("--trusted-ca-file")
                .arg(&tls.ca)
                .arg("--client-cert-auth");
        }
        let mut child = cmd
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(&m.data)
            .args(["--listen-client-urls", &m.client_url])
            .args(["--advertise-client-urls", &m.client_url])
            .args(["--listen-peer-urls", &m.peer_url])
            .args(["--initial-advertise-peer-urls", &m.peer_url])
            .args(["--initial-cluster", &self.initial])
            .args(["--initial-cluster-state", state])
            .args(["--initial-cluster-token", &self.token])
            // Fast elections on loopback (etcd's defaults are for networks).
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            // Info: the line that says it serves clients.
            .args(["--log-level", "info"])
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn etcd");
        let (ready_tx, ready) = tokio::sync::watch::channel(false);
        let stderr = child.stderr.take().expect("piped stderr");
        // Copies its log to the file and says when it is ready.
        std::thread::spawn(move || {
            use std::io::{BufRead, Write};
            let mut log = log;
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let _ = writeln!(log, "{line}");
                if line.contains(READY_LINE) {
                    ready_tx.send_replace(true);
                }
            }
        });
        self.members[i].child = Some(child);
        self.members[i].ready = ready;
    }

    /// Every member's client URL, comma-separated (`--etcd-endpoints`).
    pub fn endpoints(&self) -> String {
        self.members
            .iter()
            .map(|m| m.client_url.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// A client of the whole cluster.
    pub fn client(&self) -> Etcd {
        self.client_of(self.members.iter().map(|m| m.client_url.clone()).collect())
    }

    fn client_of(&self, endpoints: Vec<String>) -> Etcd {
        let tls = match &self.tls {
            Some(t) => ConnectOptions {
                tls_ca: Some(t.ca.clone()),
                tls_cert: Some(t.client_cert.clone()),
                tls_key: Some(t.client_key.clone()),
                timeout: None,
            },
            None => ConnectOptions::default(),
        };
        Etcd::connect(&EtcdOptions {
            endpoints,
            tls,
            call_timeout: Duration::from_secs(2),
        })
        .expect("etcd client")
    }

    /// Waits (bounded: a broken run) until member `i` has joined the cluster and
    /// serves clients, as it logs.
    pub async fn wait_healthy(&self, i: usize) {
        let mut ready = self.members[i].ready.clone();
        let ok = tokio::time::timeout(Duration::from_secs(60), ready.wait_for(|r| *r)).await;
        assert!(
            matches!(ok, Ok(Ok(_))),
            "etcd member {i} did not become ready (or ended):\n{}",
            self.log(i)
        );
    }

    /// SIGKILL of member `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGSTOP (`pause`) or SIGCONT of member `i`: it holds its connections open and
    /// answers nothing.
    pub fn signal(&self, i: usize, sig: rustix::process::Signal) {
        let child = self.members[i].child.as_ref().expect("member running");
        let pid = rustix::process::Pid::from_child(child);
        rustix::process::kill_process(pid, sig).expect("signal");
    }

    /// Starts member `i` again on its data directory.
    pub async fn restart(&mut self, i: usize) {
        self.spawn(i, "existing");
        self.wait_healthy(i).await;
    }

    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.members[i].log).unwrap_or_default()
    }

    pub fn data(&self, i: usize) -> &Path {
        &self.members[i].data
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}
