//! Docker facts turned into ledger observations, however they were obtained (the
//! live daemon, a reconcile, or an imported events file): socket detection, the
//! allowlist, and what an observation says when the container could not be inspected.

use std::collections::BTreeMap;

use super::events::RawEvent;
use super::spawner_names::user_of;
use crate::ledger::event::{ContainerObserved, Lifecycle, ObservedVia, SocketMount, UnixNanos};
use crate::ledger::state::ContainerRecord;
use crate::ledger::{LABEL_DECISION, LABEL_OWNER};

/// What an inspect says about a container.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct ContainerFacts {
    pub id: String,
    pub name: String,
    pub image: String,
    pub labels: BTreeMap<String, String>,
    /// (source, destination, rw) of every mount, `-v` and `--mount` alike.
    pub mounts: Vec<(String, String, bool)>,
    pub privileged: bool,
    pub running: bool,
}

/// How observations are judged.
#[derive(Debug, Clone, PartialEq)]
pub struct ObserveConfig {
    /// Paths at which the daemon socket can be reached on the host.
    pub socket_paths: Vec<String>,
    /// Container names exempt from correlation (the platform's own containers).
    pub allow_names: Vec<String>,
    /// Labels (`key` or `key=value`) that exempt a container.
    pub allow_labels: Vec<(String, Option<String>)>,
}

impl ObserveConfig {
    /// The configured socket path plus the well-known aliases.
    pub fn new(host_socket: &str) -> ObserveConfig {
        let mut socket_paths = vec![host_socket.to_string()];
        for alias in ["/var/run/docker.sock", "/run/docker.sock"] {
            if !socket_paths.iter().any(|p| p == alias) {
                socket_paths.push(alias.to_string());
            }
        }
        ObserveConfig {
            socket_paths,
            allow_names: Vec::new(),
            allow_labels: Vec::new(),
        }
    }

    /// Whether a mount source gives the socket: the socket itself, or a directory
    /// holding it (`/run`, `/var/run`, `/`). Sources are compared as written; symlinks
    /// are not resolved (the daemon resolves them on the host, which we cannot see).
    pub fn is_socket_source(&self, source: &str) -> bool {
        // A mount without a source (tmpfs, an anonymous volume as some daemons show
        // it) is no path on the host: "" is not "/".
        if source.is_empty() {
            return false;
        }
        let src = source.trim_end_matches('/');
        self.socket_paths.iter().any(|p| {
            p == source
                || src.is_empty()
                || p.strip_prefix(src)
                    .is_some_and(|rest| rest.starts_with('/'))
        })
    }

    pub fn socket_mounts(&self, mounts: &[(String, String, bool)]) -> Vec<SocketMount> {
        mounts
            .iter()
            .filter(|(src, _, _)| self.is_socket_source(src))
            .map(|(source, destination, rw)| SocketMount {
                source: source.clone(),
                destination: destination.clone(),
                rw: *rw,
            })
            .collect()
    }

    pub fn is_exempt(&self, name: &str, labels: &BTreeMap<String, String>) -> bool {
        self.allow_names.iter().any(|n| n == name)
            || self
                .allow_labels
                .iter()
                .any(|(k, v)| match (labels.get(k), v) {
                    (Some(_), None) => true,
                    (Some(have), Some(want)) => have == want,
                    (None, _) => false,
                })
    }
}

/// What was seen of a container, before inspect and history are added.
#[derive(Debug, Clone, Copy)]
pub struct Seen<'a> {
    /// The daemon's action, or `reconciled` / `vanished`.
    pub action: &'a str,
    pub id: &'a str,
    pub time_ns: UnixNanos,
    /// The event's attributes (empty for a reconcile).
    pub attributes: &'a BTreeMap<String, String>,
    pub source: ObservedVia,
}

impl<'a> Seen<'a> {
    /// What a daemon event (live, replayed or imported) shows.
    pub fn event(ev: &'a RawEvent, source: ObservedVia) -> Seen<'a> {
        Seen {
            action: &ev.action,
            id: &ev.id,
            time_ns: ev.time_nano,
            attributes: &ev.attributes,
            source,
        }
    }

    /// What a reconcile finds: no event, so no attributes.
    pub fn reconcile(step: Lifecycle, id: &'a str, time_ns: UnixNanos) -> Seen<'a> {
        static NONE: BTreeMap<String, String> = BTreeMap::new();
        Seen {
            action: step.as_str(),
            id,
            time_ns,
            attributes: &NONE,
            source: ObservedVia::Reconcile,
        }
    }
}

/// Builds the observation of `action` from what is known: an inspect (`facts`), the
/// event's attributes, and what the ledger already knew of the container (`known`).
pub fn observation(
    cfg: &ObserveConfig,
    seen: Seen<'_>,
    facts: Option<&ContainerFacts>,
    known: Option<&ContainerRecord>,
) -> ContainerObserved {
    let Seen {
        action,
        id,
        time_ns,
        attributes,
        source,
    } = seen;
    let exit_code = attributes.get("exitCode").and_then(|c| c.parse().ok());
    let mut o = match facts {
        Some(f) => ContainerObserved {
            container_id: id.to_string(),
            name: f.name.trim_start_matches('/').to_string(),
            image: f.image.clone(),
            action: action.to_string(),
            daemon_time_ns: time_ns,
            user: user_of(&f.labels, &f.name),
            decision_id: f.labels.get(LABEL_DECISION).cloned(),
            socket_mounts: cfg.socket_mounts(&f.mounts),
            privileged: f.privileged,
            running: Some(f.running),
            inspected: true,
            exempt: cfg.is_exempt(f.name.trim_start_matches('/'), &f.labels),
            via_limited_socket: f.labels.contains_key(LABEL_OWNER),
            source,
            exit_code,
            host: None,
            host_seq: None,
        },
        None => {
            // Attributes carry the name, the image and every label.
            let name = attributes
                .get("name")
                .cloned()
                .or_else(|| known.map(|k| k.name.clone()))
                .unwrap_or_default();
            let user = known
                .and_then(|k| k.user.clone())
                .or_else(|| user_of(attributes, &name));
            let decision_id = known
                .and_then(|k| k.decision_id.clone())
                .or_else(|| attributes.get(LABEL_DECISION).cloned());
            ContainerObserved {
                container_id: id.to_string(),
                image: attributes.get("image").cloned().unwrap_or_default(),
                action: action.to_string(),
                daemon_time_ns: time_ns,
                user,
                decision_id,
                socket_mounts: Vec::new(),
                privileged: known.is_some_and(|k| k.privileged),
                running: match Lifecycle::of_action(action) {
                    Some(Lifecycle::Die | Lifecycle::Destroy) => Some(false),
                    _ => None,
                },
                inspected: false,
                exempt: known.is_some_and(|k| k.exempt) || cfg.is_exempt(&name, attributes),
                via_limited_socket: known.is_some_and(|k| k.via_limited_socket)
                    || attributes.contains_key(LABEL_OWNER),
                source,
                exit_code,
                host: None,
                host_seq: None,
                name,
            }
        }
    };
    crate::ledger::fit_docker_text(&mut o);
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_sources_include_aliases_and_parent_directories() {
        let c = ObserveConfig::new("/srv/docker.sock");
        for yes in [
            "/srv/docker.sock",
            "/var/run/docker.sock",
            "/run/docker.sock",
            "/run",
            "/var/run",
            "/var/run/",
            "/",
            "/srv",
            "/var",
        ] {
            assert!(c.is_socket_source(yes), "{yes}");
        }
        for no in [
            "/home/alice",
            "/run/user",
            "/var/run/docker.sock.bak",
            "/srv/docker",
            "/ru",
            // A tmpfs mount has no source: it is not "/".
            "",
        ] {
            assert!(!c.is_socket_source(no), "{no}");
        }
    }

    #[test]
    fn allowlist_by_name_or_label() {
        let mut c = ObserveConfig::new("/var/run/docker.sock");
        c.allow_names = vec!["jupyterhub".into()];
        c.allow_labels = vec![
            ("platform".into(), None),
            ("tier".into(), Some("infra".into())),
        ];
        let mut l = BTreeMap::new();
        assert!(c.is_exempt("jupyterhub", &l));
        assert!(!c.is_exempt("other", &l));
        l.insert("tier".into(), "user".into());
        assert!(!c.is_exempt("other", &l));
        l.insert("tier".into(), "infra".into());
        assert!(c.is_exempt("other", &l));
    }
}
