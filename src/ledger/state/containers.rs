//! Containers and tokens as the state holds them, and how a container observation
//! changes what the state knows of the container.

use serde::{Deserialize, Serialize};

use super::State;
use crate::ledger::event::{ContainerObserved, Lifecycle, Role, Seq, SocketMode, UnixNanos};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenState {
    pub name: String,
    pub role: Role,
    pub secret_sha256: String,
    pub created_seq: Seq,
    pub created_by: String,
    pub revoked_seq: Option<Seq>,
    /// When it stops authenticating, if ever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_ns: Option<UnixNanos>,
}

impl TokenState {
    /// Not revoked and not expired at `now_ns`.
    pub fn usable_at(&self, now_ns: UnixNanos) -> bool {
        self.revoked_seq.is_none() && self.expires_at_ns.is_none_or(|e| now_ns < e)
    }
}

/// A container privledger knows of (not destroyed), from `docker_container` entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub name: String,
    pub user: Option<String>,
    pub decision_id: Option<String>,
    /// The socket mode it holds, if it mounts the socket.
    pub socket: Option<SocketMode>,
    pub privileged: bool,
    pub running: bool,
    pub exempt: bool,
    #[serde(default)]
    pub via_limited_socket: bool,
    /// What the last `stale_grant` alert for this run of the container said it still
    /// holds without a grant; a start begins a new run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale: Option<String>,
    /// The Docker host whose `privledger watch` agent reported it (`None`: the
    /// server's own watcher).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

impl ContainerRecord {
    /// Holds the socket or runs privileged.
    pub fn holds_privilege(&self) -> bool {
        self.socket.is_some() || self.privileged || self.via_limited_socket
    }
}

impl State {
    /// A `stale_grant` alert about a container: remember what it said is held.
    pub(in crate::ledger) fn alerted(&mut self, a: &crate::ledger::event::Alert) {
        use crate::ledger::event::AlertKind;
        if a.alert != AlertKind::StaleGrant {
            return;
        }
        if let Some(c) = a
            .container_id
            .as_ref()
            .and_then(|id| self.containers.get_mut(id))
        {
            c.stale = a.lost.clone();
        }
    }

    pub(in crate::ledger) fn observe(&mut self, o: &ContainerObserved) {
        let Some(step) = o.lifecycle() else { return };
        match step {
            Lifecycle::Destroy | Lifecycle::Vanished => {
                self.containers.remove(&o.container_id);
            }
            Lifecycle::Create | Lifecycle::Start | Lifecycle::Die | Lifecycle::Reconciled => {
                let running = o.running.unwrap_or(step == Lifecycle::Start);
                let known = self.containers.get(&o.container_id);
                // A start (or create) begins a run: what was alerted belongs to the
                // previous one; later events of the same run keep it.
                let stale = match step {
                    Lifecycle::Start | Lifecycle::Create => None,
                    _ => known.and_then(|k| k.stale.clone()),
                };
                let rec = match known {
                    // Without an inspect the event says less than what we knew.
                    Some(k) if !o.inspected => ContainerRecord {
                        running,
                        stale,
                        ..k.clone()
                    },
                    _ => ContainerRecord {
                        id: o.container_id.clone(),
                        name: o.name.clone(),
                        user: o.user.clone(),
                        decision_id: o.decision_id.clone(),
                        socket: o.socket_mode(),
                        privileged: o.privileged,
                        running,
                        exempt: o.exempt,
                        via_limited_socket: o.via_limited_socket,
                        stale,
                        host: o.host.clone(),
                    },
                };
                self.containers.insert(o.container_id.clone(), rec);
            }
            Lifecycle::ExecStart => {}
        }
    }
}
