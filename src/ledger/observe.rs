//! Turning Docker facts into ledger observations, independent of how they were
//! obtained (the live daemon, a reconcile, or an imported `docker events` file):
//! socket detection, the container's user, the allowlist, and event identity.

use std::collections::BTreeMap;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::event::{ContainerObserved, SocketMount, UnixNanos};
use super::state::ContainerRecord;
use super::LABEL_DECISION;
use super::LABEL_USER;

/// One daemon event (type, action, actor id and attributes, time).
#[derive(Debug, Clone, PartialEq)]
pub struct RawEvent {
    pub typ: String,
    pub action: String,
    pub id: String,
    pub time_nano: UnixNanos,
    pub attributes: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct JsonEvent {
    #[serde(rename = "Type", default)]
    typ: String,
    #[serde(rename = "Action", default)]
    action: String,
    #[serde(rename = "Actor", default)]
    actor: JsonActor,
    #[serde(default)]
    id: String,
    #[serde(default)]
    time: i64,
    #[serde(rename = "timeNano", default)]
    time_nano: i64,
}

#[derive(Deserialize, Default)]
struct JsonActor {
    #[serde(rename = "ID", default)]
    id: String,
    #[serde(rename = "Attributes", default)]
    attributes: BTreeMap<String, String>,
}

impl RawEvent {
    /// Parses one line of `docker events --format '{{json .}}'`.
    pub fn from_json_line(line: &str) -> Result<RawEvent, String> {
        let e: JsonEvent = serde_json::from_str(line).map_err(|e| e.to_string())?;
        let id = if e.actor.id.is_empty() {
            e.id
        } else {
            e.actor.id
        };
        if id.is_empty() || e.action.is_empty() {
            return Err("not a docker event (no Actor.ID or Action)".into());
        }
        let time_nano = if e.time_nano != 0 {
            e.time_nano
        } else {
            e.time.saturating_mul(1_000_000_000)
        };
        Ok(RawEvent {
            typ: e.typ,
            action: e.action,
            id,
            time_nano,
            attributes: e.actor.attributes,
        })
    }

    /// The lifecycle step this event records, if it is one privledger records:
    /// `create`, `start`, `die`, `destroy` or `exec_start` (the rest is noise).
    pub fn lifecycle(&self) -> Option<&'static str> {
        if !self.typ.is_empty() && self.typ != "container" {
            return None;
        }
        match self.action.split(':').next().unwrap_or("").trim() {
            "create" => Some("create"),
            "start" => Some("start"),
            "die" => Some("die"),
            "destroy" => Some("destroy"),
            "exec_start" => Some("exec_start"),
            _ => None,
        }
    }

    /// A stable identity for the event, used as the idempotency key of its entry so
    /// that replays and imports never record it twice.
    pub fn key(&self) -> String {
        let mut h = Sha256::new();
        h.update(self.id.as_bytes());
        h.update([0]);
        h.update(self.action.as_bytes());
        h.update([0]);
        h.update(self.time_nano.to_be_bytes());
        format!("docker:{}", &hex::encode(h.finalize())[..40])
    }
}

/// What an inspect says about a container.
#[derive(Debug, Clone, PartialEq, Default)]
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

/// The user a container is for: label `privledger.user`, else DockerSpawner's default
/// name `jupyter-<escaped username>` (optionally `--<server name>`).
pub fn user_of(labels: &BTreeMap<String, String>, name: &str) -> Option<String> {
    if let Some(u) = labels.get(LABEL_USER) {
        return Some(u.clone());
    }
    let escaped = name.trim_start_matches('/').strip_prefix("jupyter-")?;
    // An escaped username never contains "--" ("-" itself is escaped as "-2D").
    let escaped = escaped.split("--").next()?;
    unescape_dockerspawner(escaped)
}

/// Reverses escapism's escaping as DockerSpawner uses it (escape char `-`, each unsafe
/// byte as `-XX`).
pub fn unescape_dockerspawner(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'-' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    let u = String::from_utf8(out).ok()?;
    (!u.is_empty()).then_some(u)
}

/// Builds the observation of `action` from what is known: an inspect (`facts`), the
/// event's attributes, and what the ledger already knew of the container (`known`).
#[allow(clippy::too_many_arguments)] // each is a distinct fact; a struct would only rename them
pub fn observation(
    cfg: &ObserveConfig,
    action: &str,
    id: &str,
    time_ns: UnixNanos,
    attributes: &BTreeMap<String, String>,
    facts: Option<&ContainerFacts>,
    known: Option<&ContainerRecord>,
    source: &str,
) -> ContainerObserved {
    let exit_code = attributes.get("exitCode").and_then(|c| c.parse().ok());
    match facts {
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
            source: source.to_string(),
            exit_code,
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
                running: match action {
                    "die" | "destroy" => Some(false),
                    _ => None,
                },
                inspected: false,
                exempt: known.is_some_and(|k| k.exempt) || cfg.is_exempt(&name, attributes),
                source: source.to_string(),
                exit_code,
                name,
            }
        }
    }
}

/// Records imported `docker events` lines (marked `source: import`), skipping what
/// the ledger already holds; returns (recorded, already held, ignored as noise).
pub async fn import(
    ledger: &super::Ledger,
    cfg: &ObserveConfig,
    events: &[RawEvent],
) -> Result<(u64, u64, u64), super::Error> {
    let (mut recorded, mut held, mut ignored) = (0, 0, 0);
    for ev in events {
        if ev.lifecycle().is_none() {
            ignored += 1;
            continue;
        }
        let st = ledger.snapshot();
        let o = observation(
            cfg,
            &ev.action,
            &ev.id,
            ev.time_nano,
            &ev.attributes,
            None,
            st.container(&ev.id),
            "import",
        );
        let c = ledger
            .submit(
                super::ACTOR_DOCKER,
                Some(ev.key()),
                super::Command::RecordContainer(o),
            )
            .await?;
        if c.replayed {
            held += 1;
        } else {
            recorded += 1;
        }
    }
    Ok((recorded, held, ignored))
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
        ] {
            assert!(!c.is_socket_source(no), "{no}");
        }
    }

    #[test]
    fn users_come_from_the_label_or_dockerspawner_names() {
        let mut labels = BTreeMap::new();
        assert_eq!(user_of(&labels, "/jupyter-alice").as_deref(), Some("alice"));
        assert_eq!(
            user_of(&labels, "jupyter-a-2Eb-40x").as_deref(),
            Some("a.b@x")
        );
        assert_eq!(user_of(&labels, "jupyter-bob--gpu").as_deref(), Some("bob"));
        assert_eq!(user_of(&labels, "web"), None);
        assert_eq!(user_of(&labels, "jupyter-bad-zz"), None);
        labels.insert(LABEL_USER.to_string(), "carol".to_string());
        assert_eq!(user_of(&labels, "jupyter-alice").as_deref(), Some("carol"));
    }

    #[test]
    fn parses_docker_events_json_and_keys_are_stable() {
        let line = r#"{"status":"create","id":"abc","from":"img","Type":"container","Action":"create","Actor":{"ID":"abc","Attributes":{"image":"img","name":"jupyter-alice","privledger.decision":"9"}},"scope":"local","time":1795460646,"timeNano":1795460646820744826}"#;
        let e = RawEvent::from_json_line(line).unwrap();
        assert_eq!(e.lifecycle(), Some("create"));
        assert_eq!(e.time_nano, 1795460646820744826);
        assert_eq!(e.key(), RawEvent::from_json_line(line).unwrap().key());
        assert!(e.key().len() <= 128);
        let exec = RawEvent {
            action: "exec_start: sh -c true".into(),
            ..e.clone()
        };
        assert_eq!(exec.lifecycle(), Some("exec_start"));
        assert_ne!(exec.key(), e.key());
        let noise = RawEvent {
            action: "resize".into(),
            ..e
        };
        assert_eq!(noise.lifecycle(), None);
        assert!(RawEvent::from_json_line("{}").is_err());
        assert!(RawEvent::from_json_line("not json").is_err());
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
