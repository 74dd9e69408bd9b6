//! The limited socket (DESIGN §6): a Docker API proxy per user whose access is
//! `limited`. Each user's listener is `<limited_host_dir>/<user>/docker.sock`; every
//! call is classified on a canonical path, its body checked strictly, the resources
//! it names checked for ownership, quotas counted under a per-user lock, every
//! mutating call and every refusal recorded in the ledger, and what passes is
//! forwarded to the daemon's socket (upgrades included).
//!
//! - [`path`]: the canonical path; [`endpoints`]: the table of every endpoint served
//!   (route, body rule, recorded or not); [`classify`]: a path to its row, or why not.
//! - [`strict_json`]: duplicate keys refused; [`fields`]: every field a body may hold
//!   and its rule (the positive model); [`rules`]: the checks those rules name, the
//!   caps, the owner labels (pure); [`plan`]: a body planned by its row's rule;
//!   [`refusal`]: why (rule and reason).
//! - [`peer`]: who connected (`SO_PEERCRED`, the caller's container).
//! - [`filters`]: lists, prune and events filtered to the owner.
//! - [`owner`]: ownership, counts and volumes held, through the daemon; [`daemon`]:
//!   its socket; [`budget`]: disk used per owner, refreshed in the background.
//! - [`serve`]: the executor (resolve, count, record through [`books`], forward,
//!   check the answer); this file: the listeners' lives.
//!
//! Ownership and mode: the directory `<limited_host_dir>` is 0711 and owned by the
//! server's user (root), so host users cannot list it; each user's directory is 0755
//! and the socket 0666, because the container's user (any uid) must connect to it
//! through the bind of that one directory. That makes the socket reachable by any
//! host account, so every connection's peer is identified ([`peer`]) and only the
//! user's own containers (and the host uids the operator lists) are served; every
//! call is checked against the user's access at the moment it is made.

pub mod books;
pub mod budget;
pub mod build_context;
pub mod classify;
pub mod daemon;
pub mod dockerfile;
pub mod endpoints;
pub mod fields;
pub mod filters;
pub mod image_calls;
pub mod images;
pub mod info;
pub mod owner;
pub mod path;
pub mod peer;
pub mod plan;
pub mod query;
pub mod refusal;
pub mod rules;
pub mod serve;
pub mod strict_json;

use std::collections::HashMap;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::UnixListener;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::ledger::event::SocketAccess;
use crate::ledger::limited::{LimitedSockets, Opening};
use crate::ledger::policy::limited_user_dir;
use crate::ledger::{Ledger, StreamFilter};
use serve::{Caller, Shared};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("docker daemon: {0}")]
    Daemon(String),
    #[error("the ledger cannot record this call, so it was not made: {0}")]
    NotRecorded(String),
    #[error("{0}")]
    Io(String),
}

#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// `<limited_host_dir>`: one directory per user below it.
    pub dir: PathBuf,
    /// The daemon's Unix socket.
    pub daemon_socket: PathBuf,
    pub settings: Settings,
}

/// The operator's settings of every limited socket (`[proxy]`).
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Networks any user may join and name (the hub's network, say).
    pub allow_networks: Vec<String>,
    /// Host accounts admitted to speak for a user (processes in the user's own
    /// containers always are).
    pub peer_uids: Vec<u32>,
    /// How long a revoked user's socket keeps answering, saying so, before it closes.
    pub revoke_grace: Duration,
    /// Pools a user's network may take a subnet of its choosing from.
    pub network_pools: Vec<rules::Ipv4Net>,
    /// Where a user's image tags live (`{user}/` by default).
    pub image_namespace: crate::ledger::image_ref::Namespace,
    /// The largest build context read (the Dockerfile in it is checked first).
    pub max_build_context: u64,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            allow_networks: Vec::new(),
            peer_uids: vec![0],
            revoke_grace: Duration::from_secs(30),
            network_pools: Vec::new(),
            image_namespace: Default::default(),
            max_build_context: 512 << 20,
        }
    }
}

struct Listener {
    stop: watch::Sender<bool>,
    socket: PathBuf,
    decision: Arc<Mutex<Option<String>>>,
    /// The seq at which the user's access ended, while the socket is in its grace.
    ended: watch::Sender<Option<u64>>,
}

/// Every user's listener.
pub struct Proxy {
    shared: Arc<Shared>,
    /// The ledger as the listeners' lives need it (who is limited, when access
    /// ends, under which decision); a call sees it only as [`books::Books`].
    ledger: Ledger,
    dir: PathBuf,
    listeners: Mutex<HashMap<String, Listener>>,
    /// The users whose socket is open, for whoever waits on a change.
    open: watch::Sender<Vec<String>>,
}

impl Proxy {
    pub fn new(ledger: Ledger, cfg: ProxyConfig) -> Arc<Proxy> {
        Arc::new(Proxy {
            shared: Arc::new(Shared::new(
                Arc::new(ledger.clone()),
                daemon::Daemon::new(cfg.daemon_socket),
                cfg.settings,
            )),
            ledger,
            dir: cfg.dir,
            listeners: Mutex::new(HashMap::new()),
            open: watch::channel(Vec::new()).0,
        })
    }

    /// Follows [`Proxy::open_users`].
    pub fn watch_open(&self) -> watch::Receiver<Vec<String>> {
        self.open.subscribe()
    }

    fn publish_open(&self) {
        self.open.send_replace(self.open_users());
    }

    fn listeners(&self) -> std::sync::MutexGuard<'_, HashMap<String, Listener>> {
        self.listeners.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The users whose socket is open.
    pub fn open_users(&self) -> Vec<String> {
        let mut v: Vec<String> = self.listeners().keys().cloned().collect();
        v.sort();
        v
    }

    /// Makes `user`'s socket exist and accept (it accepts once bound).
    pub fn ensure(&self, user: &str, decision: Option<&str>) -> Result<PathBuf, Error> {
        if let Some(l) = self.listeners().get(user) {
            if let Some(d) = decision {
                *l.decision.lock().unwrap_or_else(|p| p.into_inner()) = Some(d.to_string());
            }
            // Limited again within the grace: the socket stays.
            l.ended.send_replace(None);
            return Ok(l.socket.clone());
        }
        let io = |what: &str, p: &Path, e: std::io::Error| {
            Error::Io(format!("{what} {}: {e}", p.display()))
        };
        std::fs::create_dir_all(&self.dir).map_err(|e| io("cannot create", &self.dir, e))?;
        std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o711))
            .map_err(|e| io("cannot set the mode of", &self.dir, e))?;
        let udir = PathBuf::from(limited_user_dir(&self.dir.to_string_lossy(), user));
        match std::fs::symlink_metadata(&udir) {
            Ok(m) if !m.is_dir() => {
                return Err(Error::Io(format!(
                    "{} exists and is not a directory",
                    udir.display()
                )))
            }
            Ok(_) => {}
            Err(_) => std::fs::create_dir(&udir).map_err(|e| io("cannot create", &udir, e))?,
        }
        std::fs::set_permissions(&udir, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| io("cannot set the mode of", &udir, e))?;
        let socket = udir.join("docker.sock");
        match std::fs::symlink_metadata(&socket) {
            // A socket left by an earlier run: nothing listens on it any more.
            Ok(m) if m.file_type().is_socket() => {
                std::fs::remove_file(&socket).map_err(|e| io("cannot remove", &socket, e))?
            }
            Ok(_) => {
                return Err(Error::Io(format!(
                    "{} exists and is not a socket",
                    socket.display()
                )))
            }
            Err(_) => {}
        }
        let listener =
            UnixListener::bind(&socket).map_err(|e| io("cannot listen on", &socket, e))?;
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666))
            .map_err(|e| io("cannot set the mode of", &socket, e))?;
        let (stop, stopped) = watch::channel(false);
        let (ended, ended_rx) = watch::channel(None);
        let decision = Arc::new(Mutex::new(decision.map(str::to_string)));
        tokio::spawn(accept_loop(
            listener,
            stopped,
            ended_rx,
            user.to_string(),
            decision.clone(),
            self.shared.clone(),
        ));
        info!(user, socket = %socket.display(), "limited socket open");
        self.listeners().insert(
            user.to_string(),
            Listener {
                stop,
                socket: socket.clone(),
                decision,
                ended,
            },
        );
        self.publish_open();
        Ok(socket)
    }

    /// Stops serving `user`'s socket and removes it.
    pub fn close(&self, user: &str) {
        let removed = self.listeners().remove(user);
        if let Some(l) = removed {
            l.stop.send_replace(true);
            let _ = std::fs::remove_file(&l.socket);
            info!(user, "limited socket closed");
            self.publish_open();
        }
    }

    /// Ends the access of every user whose access is no longer limited, as of
    /// `seq`: open sessions and streams end at once; the socket answers that the
    /// access was revoked for the grace period, then closes.
    fn close_ended(self: &Arc<Self>, seq: u64) {
        let users = self.open_users();
        for u in users {
            let limited = self
                .ledger
                .check_access(&u)
                .is_ok_and(|a| a.socket == SocketAccess::Limited);
            if limited {
                continue;
            }
            let grace = self.shared.settings.revoke_grace;
            let newly = self.listeners().get(&u).is_some_and(|l| {
                let was = l.ended.borrow().is_some();
                if !was {
                    l.ended.send_replace(Some(seq));
                }
                !was
            });
            if grace.is_zero() {
                self.close(&u);
            } else if newly {
                info!(user = %u, seq, "limited access ended; the socket says so until it closes");
                // Weak: a server that stops meanwhile is not held open by the wait.
                let me = Arc::downgrade(self);
                tokio::spawn(async move {
                    tokio::time::sleep(grace).await;
                    let Some(me) = me.upgrade() else { return };
                    // Unless the user was given limited access again meanwhile.
                    let still = me
                        .listeners()
                        .get(&u)
                        .is_some_and(|l| l.ended.borrow().is_some());
                    if still {
                        me.close(&u);
                    }
                });
            }
        }
    }

    /// Restores the socket of every user whose access is limited, under the
    /// decision of the user's newest spawned container that names one.
    pub async fn restore(&self) {
        match self.ledger.who_has_access(None).await {
            Ok((users, _)) => {
                for a in users.iter().filter(|a| a.socket == SocketAccess::Limited) {
                    let decision = self.last_decision(&a.user).await;
                    if let Err(e) = self.ensure(&a.user, decision.as_deref()) {
                        warn!(user = %a.user, error = %e, "cannot restore a limited socket");
                    }
                }
            }
            Err(e) => warn!(error = %e, "cannot list who has access; no socket restored"),
        }
    }

    /// The decision label of `user`'s newest container that carries one and that
    /// the ledger recorded as a limited decision for that user.
    async fn last_decision(&self, user: &str) -> Option<String> {
        let filter =
            serde_json::json!({ "label": [format!("{}={user}", crate::ledger::LABEL_USER)] });
        let path = format!(
            "/containers/json?all=1&filters={}",
            path::percent_encode(&filter.to_string(), b"-._~")
        );
        let (status, list) = self.shared.daemon.get_json(&path).await.ok()?;
        if !status.is_success() {
            return None;
        }
        let mut found: Vec<(i64, String)> = list
            .as_array()?
            .iter()
            .filter_map(|c| {
                let d = c.pointer(&format!("/Labels/{}", crate::ledger::LABEL_DECISION))?;
                Some((c.get("Created")?.as_i64()?, d.as_str()?.to_string()))
            })
            .collect();
        found.sort();
        found.into_iter().rev().map(|(_, d)| d).find(|d| {
            self.ledger.decision(d).ok().flatten().is_some_and(|rec| {
                rec.user == user && rec.allowed && rec.socket == SocketAccess::Limited
            })
        })
    }

    /// Closes each socket as its user's access ends (revocation, expiry, leaving a
    /// group), until `shutdown`; then closes them all.
    pub async fn run(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let ledger = self.ledger.clone();
        let filter = StreamFilter::access_losses();
        let budget = {
            let shared = self.shared.clone();
            tokio::spawn(async move {
                loop {
                    shared.budget.refresh(&shared.daemon).await;
                    tokio::time::sleep(budget::REFRESH).await;
                }
            })
        };
        let mut ends = match ledger.stream(ledger.snapshot().seq + 1, true, filter, 2) {
            Ok(rx) => rx,
            Err(e) => {
                warn!(error = %e, "cannot follow the ledger; limited sockets will not close by themselves");
                return;
            }
        };
        // Whatever ended before the stream began is caught here.
        self.close_ended(ledger.snapshot().seq);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                e = ends.recv() => match e {
                    Some(Ok(es)) => self.close_ended(es.last().map_or(0, |e| e.seq)),
                    Some(Err(_)) => self.close_ended(ledger.snapshot().seq),
                    None => break,
                },
            }
        }
        budget.abort();
        for u in self.open_users() {
            self.close(&u);
        }
    }
}

impl LimitedSockets for Proxy {
    fn open<'a>(&'a self, user: &'a str, decision_id: &'a str) -> Opening<'a> {
        Box::pin(async move {
            self.ensure(user, Some(decision_id))
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    }
}

async fn accept_loop(
    listener: UnixListener,
    mut stopped: watch::Receiver<bool>,
    ended: watch::Receiver<Option<u64>>,
    user: String,
    decision: Arc<Mutex<Option<String>>>,
    shared: Arc<Shared>,
) {
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    warn!(user = %user, error = %e, "limited socket accept failed");
                    continue;
                }
            },
            _ = stopped.changed() => return,
        };
        let decision = decision.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let (user, shared, ended) = (user.clone(), shared.clone(), ended.clone());
        let mut stop = stopped.clone();
        tokio::spawn(async move {
            // Who connected: decided once per connection, before its first call.
            let peer =
                peer::admit(&stream, &user, &shared.daemon, &shared.settings.peer_uids).await;
            let caller = Caller {
                decision: decision.or_else(|| peer.decision.clone()),
                user,
                shared,
                peer,
                ended,
            };
            let svc = service_fn(move |req| serve::handle(caller.clone(), req));
            let conn = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .with_upgrades();
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                // A closed socket ends its connections too (after the call in flight).
                _ = stop.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper_util::rt::TokioIo;

    use super::*;
    use crate::ledger::event::{GrantSpec, Limits, SocketMode, Subject};
    use crate::ledger::{Command, LedgerConfig};

    /// One call on `sock`: status and body.
    async fn call(sock: &Path, method: &str, path: &str) -> (u16, String) {
        let s = tokio::net::UnixStream::connect(sock).await.unwrap();
        let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
            .await
            .unwrap();
        tokio::spawn(conn);
        let req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "docker")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let r = tx.send_request(req).await.unwrap();
        let status = r.status().as_u16();
        let body = r.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn a_mutating_call_the_ledger_cannot_record_is_not_made() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(crate::store::SledStore::open(&dir.path().join("data")).unwrap());
        let ledger = Ledger::open(store, LedgerConfig::default()).unwrap();
        let spec = GrantSpec {
            socket: SocketAccess::Limited,
            socket_mode: SocketMode::Rw,
            privileged: false,
            limits: Limits::default(),
        };
        let grant = Command::IssueGrant {
            subject: Subject::User("alice".into()),
            spec: spec.clone(),
            expires_at_ns: None,
            reason: "t".into(),
        };
        let g = ledger.submit("admin", None, grant).await.unwrap().entry.seq;
        // No daemon behind it: a call that reached for one would answer 502.
        let proxy = Proxy::new(
            ledger.clone(),
            ProxyConfig {
                dir: dir.path().join("users"),
                daemon_socket: dir.path().join("no-daemon.sock"),
                settings: Settings {
                    revoke_grace: Duration::ZERO,
                    peer_uids: vec![rustix::process::geteuid().as_raw()],
                    ..Settings::default()
                },
            },
        );
        let sock = proxy.ensure("alice", Some("d-1")).unwrap();
        let (status, body) = call(&sock, "GET", "/system/df").await;
        assert_eq!(status, 403, "{body}");
        let refusals = ledger.snapshot().seq;
        assert_eq!(refusals, 2, "the refusal was recorded");

        // A revocation closes the socket by itself (the run loop follows the ledger).
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let runner = tokio::spawn(proxy.clone().run(async move {
            let _ = stopped.await;
        }));
        let mut open = proxy.watch_open();
        let revoke = Command::RevokeGrant {
            grant_id: g,
            reason: "t".into(),
        };
        ledger.submit("admin", None, revoke).await.unwrap();
        open.wait_for(|users| users.is_empty()).await.unwrap();
        assert!(!sock.exists(), "a closed socket is removed");
        let _ = stop.send(());
        runner.await.unwrap();

        // Limited again: the socket comes back; then the ledger stops writing.
        let grant = Command::IssueGrant {
            subject: Subject::User("alice".into()),
            spec,
            expires_at_ns: None,
            reason: "again".into(),
        };
        ledger.submit("admin", None, grant).await.unwrap();
        let sock = proxy.ensure("alice", Some("d-2")).unwrap();
        ledger.shutdown().await;
        let (status, body) = call(&sock, "POST", "/v1.41/containers/prune").await;
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("cannot record"), "{body}");
        proxy.close("alice");
        assert!(!sock.exists());
    }
}
