//! The limited socket's test rig: a real server with the Docker watcher and the
//! proxy on, users' sockets in a temporary directory, the docker CLI pointed at them,
//! and everything the test's users made removed at the end.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use super::*;
use privledger::config::Config;
use privledger::pb;
use tokio::io::AsyncWriteExt;

pub struct Rig {
    pub s: TestServer,
    pub c: privledger::client::Clients,
    pub users: tempfile::TempDir,
    pub tag: String,
    pub _cleanup: Cleanup,
}

/// Removes everything this test's users created (it carries their owner label,
/// which ends with the test's tag; other tests run at the same time).
pub struct Cleanup(String);

impl Rig {
    pub async fn start() -> Option<Rig> {
        Rig::start_with(|_| {}).await
    }

    pub async fn start_with(settings: impl FnOnce(&mut Config)) -> Option<Rig> {
        if !docker_available() {
            return None;
        }
        ensure_test_image();
        let data = tempfile::tempdir().unwrap();
        let users = tempfile::tempdir().unwrap();
        let mut cfg = Config::with_data_dir(data.path());
        cfg.docker.enabled = true;
        cfg.ledger.spawn.limited_host_dir = users.path().display().to_string();
        settings(&mut cfg);
        let s = TestServer::start_owning(cfg, data).await;
        wait_watching(&s).await;
        let c = s.admin().await;
        let mut b = [0u8; 3];
        getrandom::fill(&mut b).unwrap();
        Some(Rig {
            s,
            c,
            users,
            tag: hex::encode(b),
            _cleanup: Cleanup(hex::encode(b)),
        })
    }

    /// A user name unique to this run (resources are stamped with it).
    pub fn user(&self, u: &str) -> String {
        format!("{u}-{}", self.tag)
    }

    pub async fn grant_limited(&mut self, user: &str, limits: pb::Limits) -> u64 {
        let g = ok(self.c.admin.issue_grant(pb::IssueGrantRequest {
            subject: super::user(user),
            spec: Some(pb::GrantSpec {
                socket: pb::SocketAccess::Limited.into(),
                socket_mode: 0,
                privileged: false,
                limits: Some(limits),
            }),
            expires_at: None,
            reason: "proxy test".into(),
            request_id: String::new(),
        }))
        .await;
        g.id
    }

    /// AuthorizeSpawn: the answer comes once the socket accepts.
    pub async fn spawn(&mut self, user: &str) -> PathBuf {
        self.spawn_decided(user).await.0
    }

    /// [`Rig::spawn`], with the decision's id.
    pub async fn spawn_decided(&mut self, user: &str) -> (PathBuf, String) {
        let d = ok(self
            .c
            .authz
            .authorize_spawn(authorize(user, "", TEST_IMAGE)))
        .await;
        assert!(d.allowed, "{d:?}");
        let sock = self.users.path().join(user).join("docker.sock");
        assert!(
            std::os::unix::net::UnixStream::connect(&sock).is_ok(),
            "the socket accepts when the decision is answered"
        );
        assert_eq!(
            d.fragments.clone().unwrap_or_default().binds,
            vec![format!(
                "{}:/run/privledger:rw",
                self.users.path().join(user).display()
            )]
        );
        (sock, d.decision_id)
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        // Images first go with their containers below; those labelled by this test's
        // users, and the tags they carry, are removed after.
        let images = std::process::Command::new("docker")
            .args([
                "image",
                "ls",
                "-q",
                "--no-trunc",
                "--filter",
                "label=privledger.owner",
            ])
            .output();
        for (kind, id) in [
            ("container", "{{.ID}}"),
            ("volume", "{{.Name}}"),
            ("network", "{{.ID}}"),
        ] {
            let format = format!("{id} {{{{.Label \"privledger.owner\"}}}}");
            let mut ls = std::process::Command::new("docker");
            ls.args([
                kind,
                "ls",
                "--filter",
                "label=privledger.owner",
                "--format",
                &format,
            ]);
            if kind == "container" {
                ls.arg("-a");
            }
            let Ok(o) = ls.output() else { continue };
            for line in String::from_utf8_lossy(&o.stdout).lines() {
                if let Some((id, owner)) = line.split_once(' ') {
                    if owner.ends_with(&self.0) {
                        let mut rm = std::process::Command::new("docker");
                        rm.args([kind, "rm"]);
                        if kind != "network" {
                            rm.arg("-f");
                        }
                        let _ = rm.arg(id).output();
                    }
                }
            }
        }
        let Ok(images) = images else { return };
        for id in String::from_utf8_lossy(&images.stdout).lines() {
            let owner = std::process::Command::new("docker")
                .args([
                    "image",
                    "inspect",
                    "-f",
                    "{{index .Config.Labels \"privledger.owner\"}}",
                    id,
                ])
                .output();
            if owner.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim().ends_with(&self.0)) {
                let _ = std::process::Command::new("docker")
                    .args(["rmi", "-f", id])
                    .output();
            }
        }
    }
}

/// `docker ARGS` against `sock`: (success, stdout, stderr).
pub async fn as_user(sock: &Path, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    let mut cmd = tokio::process::Command::new("docker");
    cmd.args(args)
        .env("DOCKER_HOST", format!("unix://{}", sock.display()))
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    if let Some(input) = stdin {
        let mut w = child.stdin.take().unwrap();
        w.write_all(input.as_bytes()).await.unwrap();
        drop(w); // EOF: the half-close must reach the container
    }
    let out = child.wait_with_output().await.unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
    )
}

pub async fn must(sock: &Path, args: &[&str]) -> String {
    let (ok, out, err) = as_user(sock, args, None).await;
    assert!(ok, "docker {args:?}: {err}");
    out
}

pub async fn refused(sock: &Path, args: &[&str], why: &str) {
    let (ok, out, err) = as_user(sock, args, None).await;
    assert!(!ok, "docker {args:?} must be refused, printed {out}");
    assert!(
        err.contains(why),
        "docker {args:?}: {err:?} should say {why:?}"
    );
}

/// A raw HTTP call on `sock`: (status, body).
pub async fn raw(sock: &Path, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let mut cmd = tokio::process::Command::new("curl");
    cmd.args(["-s", "-o", "-", "-w", "\n%{http_code}", "--unix-socket"])
        .arg(sock)
        .args(["-X", method, "-H", "Content-Type: application/json"]);
    if let Some(b) = body {
        cmd.args(["--data-binary", b]);
    }
    let out = cmd
        .arg(format!("http://docker{path}"))
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

pub fn limits(containers: u32, volumes: u32, networks: u32) -> pb::Limits {
    pb::Limits {
        max_containers: Some(containers),
        max_volumes: Some(volumes),
        max_networks: Some(networks),
        ..Default::default()
    }
}

/// The proxy_call entries on the record, as JSON.
pub async fn proxy_calls(r: &mut Rig) -> Vec<serde_json::Value> {
    let (entries, _) = stream_all(&mut r.c).await;
    entries
        .iter()
        .filter(|e| e.kind == "proxy_call")
        .map(|e| serde_json::from_slice::<serde_json::Value>(&e.body).unwrap()["event"].clone())
        .collect()
}
