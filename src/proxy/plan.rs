//! The pure half of a call: from the endpoint's body rule, what the user's access
//! allows and the body sent, what will be forwarded (and what it names, to be
//! resolved to ids) or the refusal. No I/O: the executor (`serve`) resolves, counts,
//! records, forwards and checks the daemon's answer.

use serde_json::Value;

use super::endpoints::BodyRule;
use super::refusal::{refuse, Refusal};
use super::rules::{self, Allowance, Checked, Stamp};

/// What a body is checked against besides itself.
pub struct Context<'a> {
    pub allowance: &'a Allowance,
    pub stamp: &'a Stamp,
    /// The container's current `HostConfig`, for an update.
    pub current: &'a Value,
    /// Whether the network on the path is a shared one, for a connect.
    pub shared_network: bool,
}

/// The checked body to forward (`None`: the call has no body).
pub fn body(rule: BodyRule, json: Value, cx: &Context<'_>) -> Result<Option<Checked>, Refusal> {
    let a = cx.allowance;
    let checked = match rule {
        BodyRule::None if json.is_null() => return Ok(None),
        BodyRule::None => return refuse("body", "this call takes no body"),
        BodyRule::ContainerCreate => rules::container_create(json, a, cx.stamp)?,
        BodyRule::VolumeCreate => rules::volume_create(json, a, cx.stamp)?,
        BodyRule::NetworkCreate => rules::network_create(json, a, cx.stamp)?,
        BodyRule::ContainerUpdate => rules::container_update(json, a, cx.current)?,
        BodyRule::ExecCreate => rules::exec_create(json, a)?,
        BodyRule::ExecStart => rules::exec_start(json, a)?,
        BodyRule::Connect => rules::network_connect(json, a, cx.shared_network)?,
        BodyRule::Commit => rules::commit_config(json, a, cx.stamp)?,
        // Not JSON: read (a build's context) or streamed by the executor.
        BodyRule::Stream | BodyRule::BuildContext => return Ok(None),
    };
    Ok(Some(checked))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::classify::endpoint;
    use crate::proxy::path::CanonicalPath;
    use serde_json::json;

    /// The whole decision for a call, as a table, without a daemon.
    #[test]
    fn calls_planned_as_a_table() {
        let a = Allowance {
            dangerous: false,
            privileged: false,
            cpu_cores: 1.0,
            mem_bytes: 1 << 30,
            pids: 100,
            publish: rules::Publish::Off,
            shared_networks: vec![],
            network_pools: vec![],
            build: false,
            pull_allow: vec![],
            push_allow: vec![],
        };
        let stamp = Stamp {
            owner: "alice".into(),
            decision: None,
        };
        let cx = Context {
            allowance: &a,
            stamp: &stamp,
            current: &Value::Null,
            shared_network: false,
        };
        let table: &[(&str, &str, Value, Result<(), &str>)] = &[
            ("POST", "/containers/create", json!({"Image": "x"}), Ok(())),
            (
                "POST",
                "/v1.41/containers/create",
                json!({"Image": "x", "HostConfig": {"LogConfig": {"Type": "syslog"}}}),
                Err("HostConfig.LogConfig.Type"),
            ),
            (
                "POST",
                "/networks/create",
                json!({"Name": "n", "IPAM": {"Config": [{"Subnet": "10.0.0.0/8"}]}}),
                Err("IPAM.Config"),
            ),
            (
                "POST",
                "/volumes/create",
                json!({"Name": "v", "DriverOpts": {"device": "/"}}),
                Err("DriverOpts"),
            ),
            (
                "POST",
                "/containers/abc/start",
                json!({"x": 1}),
                Err("body"),
            ),
            ("POST", "/containers/abc/start", Value::Null, Ok(())),
            (
                "POST",
                "/containers/abc/exec",
                json!({"Cmd": ["sh"], "Privileged": true}),
                Err("Privileged"),
            ),
            ("POST", "/exec/e/start", json!({"Detach": true}), Ok(())),
            (
                "POST",
                "/networks/n/connect",
                json!({"Container": "c"}),
                Ok(()),
            ),
            (
                "POST",
                "/containers/abc/update",
                json!({"PidsLimit": 1000}),
                Err("pids cap"),
            ),
        ];
        for (m, p, body_in, want) in table {
            let (row, _) = endpoint(m, &CanonicalPath::parse(p).unwrap()).unwrap();
            let got = body(row.body, body_in.clone(), &cx)
                .map(|_| ())
                .map_err(|r| r.rule);
            match want {
                Ok(()) => assert!(got.is_ok(), "{m} {p}: {got:?}"),
                Err(rule) => assert_eq!(got.unwrap_err(), *rule, "{m} {p}"),
            }
        }
    }
}
