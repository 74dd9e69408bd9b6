//! `GET /info` on a limited socket: what the docker CLI needs of the daemon (its OS,
//! architecture, versions, storage and cgroup drivers, security options), never what
//! describes the host or the other users (its name, paths, counts of everyone's
//! containers and images, registry mirrors, plugins, labels). Swarm is reported
//! inactive: the limited socket serves none of it.

use serde_json::{json, Map, Value};

/// The fields kept, as the daemon names them.
const KEPT: &[&str] = &[
    "OSType",
    "Architecture",
    "ServerVersion",
    "KernelVersion",
    "OperatingSystem",
    "OSVersion",
    "NCPU",
    "MemTotal",
    "Driver",
    "CgroupDriver",
    "CgroupVersion",
    "DefaultRuntime",
    "ExperimentalBuild",
    "IndexServerAddress",
    "SecurityOptions",
    "Isolation",
];

/// The daemon's `/info` answer, reduced to [`KEPT`].
pub fn filtered(v: &Value) -> Value {
    let mut out = Map::new();
    for k in KEPT {
        if let Some(x) = v.get(*k) {
            out.insert((*k).to_string(), x.clone());
        }
    }
    out.insert(
        "Swarm".into(),
        json!({"NodeID": "", "NodeAddr": "", "LocalNodeState": "inactive",
               "ControlAvailable": false, "Error": "", "RemoteManagers": null}),
    );
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_the_cli_needs_is_kept() {
        let daemon = json!({
            "ID": "X", "Name": "the-host", "DockerRootDir": "/var/lib/docker",
            "Containers": 40, "Images": 9, "OSType": "linux", "NCPU": 2,
            "ServerVersion": "20.10.24", "RegistryConfig": {"Mirrors": ["m"]},
            "Labels": ["secret=1"], "Plugins": {}, "HttpProxy": "http://u:p@proxy",
            "Swarm": {"LocalNodeState": "active", "ControlAvailable": true, "NodeID": "n"}
        });
        let f = filtered(&daemon);
        assert_eq!(f["OSType"], "linux");
        assert_eq!(f["NCPU"], 2);
        for gone in [
            "ID",
            "Name",
            "DockerRootDir",
            "Containers",
            "Images",
            "RegistryConfig",
            "Labels",
            "Plugins",
            "HttpProxy",
        ] {
            assert!(f.get(gone).is_none(), "{gone}");
        }
        assert_eq!(f["Swarm"]["LocalNodeState"], "inactive");
        assert_eq!(f["Swarm"]["ControlAvailable"], false);
    }
}
