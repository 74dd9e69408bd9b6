//! Docker's event format: one daemon event as privledger reads it (from the live
//! stream or a `docker events --format '{{json .}}'` line), the lifecycle step it
//! records, and its identity.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ledger::event::{Lifecycle, UnixNanos};

/// One daemon event (type, action, actor id and attributes, time).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    pub fn lifecycle(&self) -> Option<Lifecycle> {
        if !self.typ.is_empty() && self.typ != "container" {
            return None;
        }
        Lifecycle::of_action(&self.action).filter(|l| l.is_daemon_step())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_events_json_and_keys_are_stable() {
        let line = r#"{"status":"create","id":"abc","from":"img","Type":"container","Action":"create","Actor":{"ID":"abc","Attributes":{"image":"img","name":"jupyter-alice","privledger.decision":"9"}},"scope":"local","time":1795460646,"timeNano":1795460646820744826}"#;
        let e = RawEvent::from_json_line(line).unwrap();
        assert_eq!(e.lifecycle(), Some(Lifecycle::Create));
        assert_eq!(e.time_nano, 1795460646820744826);
        assert_eq!(e.key(), RawEvent::from_json_line(line).unwrap().key());
        assert!(e.key().len() <= 128);
        let exec = RawEvent {
            action: "exec_start: sh -c true".into(),
            ..e.clone()
        };
        assert_eq!(exec.lifecycle(), Some(Lifecycle::ExecStart));
        assert_ne!(exec.key(), e.key());
        let noise = RawEvent {
            action: "resize".into(),
            ..e
        };
        assert_eq!(noise.lifecycle(), None);
        assert!(RawEvent::from_json_line("{}").is_err());
        assert!(RawEvent::from_json_line("not json").is_err());
        let reconcile_word = RawEvent {
            action: "vanished".into(),
            ..RawEvent::from_json_line(line).unwrap()
        };
        assert_eq!(reconcile_word.lifecycle(), None, "not a daemon action");
    }
}
