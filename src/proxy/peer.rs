//! Who is on the other end of a user's socket: the kernel's word for the peer
//! (`SO_PEERCRED`: pid, uid, gid) and, when the process runs in a container, which
//! one (its cgroup names it), checked through the daemon to be the user's own. A
//! process in one of the user's containers is the user; a process on the host is
//! admitted only if its uid is on the operator's list (root by default); anyone
//! else — another account on the host, another user's container — is not.
//!
//! The pid is that of the process that connected, in the server's PID namespace;
//! when the server runs in a PID namespace of its own, peers outside it have none
//! and are judged by uid alone.

use serde_json::Value;

use super::daemon::Daemon;
use crate::ledger::event::ProxyPeer;
use crate::ledger::{LABEL_DECISION, LABEL_OWNER, LABEL_USER};

/// A connection's peer, and whether it may speak for the socket's user.
#[derive(Debug, Clone, PartialEq)]
pub struct Admission {
    pub peer: ProxyPeer,
    /// Why the peer is not the user, if it is not.
    pub refused: Option<String>,
    /// The spawn decision the peer's container was started under, if it names one.
    pub decision: Option<String>,
}

/// The container a process runs in, from its `/proc/<pid>/cgroup`: the outermost
/// path segment that names one (`docker-<id>.scope` under systemd, `docker/<id>`
/// under cgroupfs). The outermost, because a process may make child cgroups of its
/// own with any name below its container's.
pub fn container_of_cgroup(text: &str) -> Option<String> {
    for line in text.lines() {
        let path = line.splitn(3, ':').nth(2).unwrap_or("");
        let segs: Vec<&str> = path.split('/').collect();
        for (i, seg) in segs.iter().enumerate() {
            let id = seg
                .strip_prefix("docker-")
                .and_then(|s| s.strip_suffix(".scope"))
                .or_else(|| (i > 0 && segs[i - 1] == "docker").then_some(*seg));
            if let Some(id) =
                id.filter(|id| id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()))
            {
                return Some(id.to_string());
            }
        }
    }
    None
}

/// Decides who the peer of `stream` is, for `user`'s socket.
pub async fn admit(
    stream: &tokio::net::UnixStream,
    user: &str,
    daemon: &Daemon,
    host_uids: &[u32],
) -> Admission {
    let cred = match stream.peer_cred() {
        Ok(c) => c,
        Err(e) => {
            return Admission {
                peer: ProxyPeer {
                    pid: None,
                    uid: u32::MAX,
                    gid: u32::MAX,
                    container: None,
                },
                refused: Some(format!("the kernel did not say who connected: {e}")),
                decision: None,
            }
        }
    };
    let pid = cred.pid().filter(|p| *p > 0);
    let mut peer = ProxyPeer {
        pid,
        uid: cred.uid(),
        gid: cred.gid(),
        container: None,
    };
    let cgroup = match pid {
        Some(p) => std::fs::read_to_string(format!("/proc/{p}/cgroup")).ok(),
        None => None,
    };
    if let Some(id) = cgroup.as_deref().and_then(container_of_cgroup) {
        peer.container = Some(id.clone());
        let labels = match daemon.get_json(&format!("/containers/{id}/json")).await {
            Ok((s, v)) if s.is_success() => {
                v.pointer("/Config/Labels").cloned().unwrap_or(Value::Null)
            }
            _ => Value::Null,
        };
        let label = |k: &str| labels.get(k).and_then(Value::as_str).map(str::to_string);
        let theirs = label(LABEL_USER).or_else(|| label(LABEL_OWNER));
        return if theirs.as_deref() == Some(user) {
            Admission {
                peer,
                refused: None,
                decision: label(LABEL_DECISION),
            }
        } else {
            Admission {
                refused: Some(format!(
                    "the caller runs in container {} which is not one of {user:?}'s",
                    &id[..12]
                )),
                peer,
                decision: None,
            }
        };
    }
    if host_uids.contains(&peer.uid) {
        return Admission {
            peer,
            refused: None,
            decision: None,
        };
    }
    Admission {
        refused: Some(format!(
            "the caller (uid {}, pid {}) is neither in one of {user:?}'s containers nor a host account the operator admits (proxy.peer_uids)",
            peer.uid,
            pid.map_or("unknown".into(), |p| p.to_string())
        )),
        peer,
        decision: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_container_is_read_from_the_cgroup_path() {
        let id = "a".repeat(64);
        let other = "b".repeat(64);
        for (text, want) in [
            (format!("0::/system.slice/docker-{id}.scope\n"), Some(&id)),
            (
                format!("12:memory:/docker/{id}\n11:cpu:/docker/{id}\n"),
                Some(&id),
            ),
            (format!("0::/docker/{id}/child\n"), Some(&id)),
            // A child cgroup named like another container's does not make it that one.
            (
                format!("0::/system.slice/docker-{id}.scope/docker-{other}.scope\n"),
                Some(&id),
            ),
            (
                "0::/user.slice/user-0.slice/session-3.scope\n".to_string(),
                None,
            ),
            ("0::/\n".to_string(), None),
            (
                format!("0::/system.slice/docker-{}.scope\n", &id[..12]),
                None,
            ),
            (format!("0::/mydocker/{id}\n"), None),
        ] {
            assert_eq!(container_of_cgroup(&text).as_ref(), want, "{text}");
        }
    }

    #[tokio::test]
    async fn a_host_peer_is_admitted_by_uid() {
        let (a, _b) = tokio::net::UnixStream::pair().unwrap();
        let me = rustix::process::geteuid().as_raw();
        let d = Daemon::new("/nonexistent/docker.sock");
        let ok = admit(&a, "alice", &d, &[me]).await;
        assert_eq!(ok.refused, None, "{ok:?}");
        assert_eq!(ok.peer.uid, me);
        assert_eq!(ok.peer.pid, Some(std::process::id() as i32));
        let no = admit(&a, "alice", &d, &[me.wrapping_add(1)]).await;
        assert!(no.refused.unwrap().contains(&format!("uid {me}")));
    }
}
