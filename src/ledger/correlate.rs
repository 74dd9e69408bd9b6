//! Pure rules tying what Docker ran to what the ledger granted: which alerts a
//! container observation raises, and which privileges a running container holds that
//! its user no longer has.

use super::event::{AlertKind, ContainerObserved, SocketAccess, SocketMode, SpawnDecision};
use super::policy::Access;
use super::state::ContainerRecord;

/// Alerts for a container that holds the socket or runs privileged, judged against
/// the decision its `privledger.decision` label names (`None` when there is no label
/// or it names no recorded decision). Empty for exempt containers and containers
/// that hold nothing.
pub fn judge(o: &ContainerObserved, decision: Option<&SpawnDecision>) -> Vec<(AlertKind, String)> {
    let mut alerts = Vec::new();
    if o.exempt {
        return alerts;
    }
    // The decision that vouches for this container, or why none can.
    let vouching: Result<&SpawnDecision, String> = match (decision, &o.decision_id) {
        (None, None) => Err("it carries no privledger.decision label".to_string()),
        (None, Some(id)) => Err(format!(
            "its label names decision {id:?}, which the ledger does not hold"
        )),
        (Some(d), _) => match &o.user {
            None => Err(format!(
                "decision {} is for user {:?}, but the container's user is unknown",
                d.decision_id, d.user
            )),
            Some(u) if *u != d.user => Err(format!(
                "decision {} is for user {:?}, but the container is for user {u:?}",
                d.decision_id, d.user
            )),
            Some(_) => Ok(d),
        },
    };
    if let Some(mode) = o.socket_mode() {
        let why = match &vouching {
            Err(why) => Some(why.clone()),
            Ok(d) if d.socket != SocketAccess::Raw => Some(format!(
                "decision {} did not grant the raw socket",
                d.decision_id
            )),
            Ok(d) if mode == SocketMode::Rw && d.socket_mode != SocketMode::Rw => Some(format!(
                "decision {} granted the socket read-only, but it is mounted rw",
                d.decision_id
            )),
            Ok(_) => None,
        };
        if let Some(why) = why {
            let sources: Vec<&str> = o.socket_mounts.iter().map(|m| m.source.as_str()).collect();
            alerts.push((
                AlertKind::UnauthorizedSocketMount,
                format!(
                    "container {} mounts the Docker socket ({}, {}) but {why}",
                    o.name,
                    sources.join(", "),
                    mode.as_str()
                ),
            ));
        }
    }
    if o.privileged {
        let why = match &vouching {
            Err(why) => Some(why.clone()),
            Ok(d) => (!d.privileged)
                .then(|| format!("decision {} did not grant privileged", d.decision_id)),
        };
        if let Some(why) = why {
            alerts.push((
                AlertKind::UnauthorizedPrivileged,
                format!("container {} runs privileged but {why}", o.name),
            ));
        }
    }
    alerts
}

/// The privileges `c` holds that `access` (its user's current access) no longer
/// gives, described; `None` when everything it holds is still granted.
pub fn lost_privileges(c: &ContainerRecord, access: &Access) -> Option<String> {
    let mut lost = Vec::new();
    match c.socket {
        Some(_) if access.socket != SocketAccess::Raw => lost.push("the raw Docker socket"),
        Some(SocketMode::Rw) if access.socket_mode != SocketMode::Rw => {
            lost.push("read-write access to the Docker socket")
        }
        _ => {}
    }
    if c.privileged && !access.privileged {
        lost.push("privileged mode");
    }
    if c.via_limited_socket && access.socket == SocketAccess::None {
        lost.push("the limited Docker socket it was created through");
    }
    (!lost.is_empty()).then(|| lost.join(" and "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::event::{EffectiveLimits, SocketMount};

    fn obs(
        user: Option<&str>,
        decision: Option<&str>,
        rw: Option<bool>,
        privileged: bool,
    ) -> ContainerObserved {
        ContainerObserved {
            decision_id: decision.map(Into::into),
            socket_mounts: rw
                .map(|rw| {
                    vec![SocketMount {
                        source: "/var/run/docker.sock".into(),
                        destination: "/var/run/docker.sock".into(),
                        rw,
                    }]
                })
                .unwrap_or_default(),
            privileged,
            ..ContainerObserved::created("c1", "jupyter-alice", user)
        }
    }

    fn decision(
        user: &str,
        socket: SocketAccess,
        mode: SocketMode,
        privileged: bool,
    ) -> SpawnDecision {
        SpawnDecision {
            decision_id: "7".into(),
            user: user.into(),
            server_name: String::new(),
            image: String::new(),
            evaluated_at_seq: 6,
            allowed: true,
            reason: String::new(),
            socket,
            socket_mode: mode,
            privileged,
            limits: EffectiveLimits::default(),
            grants: vec![],
            binds: vec![],
            env: vec![],
            labels: vec![],
        }
    }

    #[test]
    fn authorized_socket_container_raises_nothing() {
        let d = decision("alice", SocketAccess::Raw, SocketMode::Rw, false);
        assert!(judge(&obs(Some("alice"), Some("7"), Some(true), false), Some(&d)).is_empty());
        // ro mount under an rw decision is fine too.
        assert!(judge(&obs(Some("alice"), Some("7"), Some(false), false), Some(&d)).is_empty());
    }

    #[test]
    fn unlabeled_other_user_and_socketless_decisions_alert() {
        let kinds = |o: ContainerObserved, d: Option<&SpawnDecision>| -> Vec<AlertKind> {
            judge(&o, d).into_iter().map(|a| a.0).collect()
        };
        let mount = vec![AlertKind::UnauthorizedSocketMount];
        let alice_rw = || obs(Some("alice"), Some("7"), Some(true), false);
        assert_eq!(kinds(obs(None, None, Some(true), false), None), mount);
        let bob = decision("bob", SocketAccess::Raw, SocketMode::Rw, false);
        assert_eq!(
            kinds(alice_rw(), Some(&bob)),
            mount,
            "another user's decision"
        );
        let none = decision("alice", SocketAccess::None, SocketMode::Ro, false);
        assert_eq!(kinds(alice_rw(), Some(&none)), mount, "no socket granted");
        let ro = decision("alice", SocketAccess::Raw, SocketMode::Ro, false);
        assert_eq!(kinds(alice_rw(), Some(&ro)), mount, "granted read-only");
        assert_eq!(
            kinds(obs(Some("alice"), Some("7"), None, true), Some(&ro)),
            vec![AlertKind::UnauthorizedPrivileged]
        );
        let mut exempt = obs(None, None, Some(true), true);
        exempt.exempt = true;
        assert!(judge(&exempt, None).is_empty());
        assert!(
            judge(&obs(None, None, None, false), None).is_empty(),
            "nothing held"
        );
    }
}
