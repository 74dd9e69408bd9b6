//! What a limited user may ask of the daemon in a body: the host-escaping settings
//! refused unless the grant allows dangerous flags (DESIGN §6), resources named
//! inside a body (to be checked for ownership), owner labels stamped, CPU and memory
//! caps injected or enforced. Pure: the proxy does the daemon calls.

use serde_json::{Map, Value};

use super::classify::Kind;
use super::strict_json::{check_shape, Inner, Shape};

pub use crate::ledger::LABEL_OWNER;
/// Every label under this prefix is privledger's to set.
const RESERVED_PREFIX: &str = "privledger.";

/// What the user's current access allows.
#[derive(Debug, Clone, PartialEq)]
pub struct Allowance {
    pub dangerous: bool,
    pub privileged: bool,
    pub cpu_cores: f64,
    pub mem_bytes: i64,
}

/// Who the created resource is stamped as.
#[derive(Debug, Clone, PartialEq)]
pub struct Stamp {
    pub owner: String,
    pub decision: Option<String>,
}

/// A body that passed: what to forward, and the resources it names that the caller
/// must own (or that are allowlisted).
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    pub body: Value,
    pub refs: Vec<(Kind, String)>,
}

impl Checked {
    /// A body that names nothing to check for ownership.
    fn plain(body: Value) -> Checked {
        Checked {
            body,
            refs: Vec::new(),
        }
    }
}

type Rule = Result<(), String>;

/// The body's fields must be spelled exactly as Docker names them.
fn strict(body: &Value, shape: &Shape) -> Rule {
    check_shape(body, shape).or_else(|e| refuse("strict body", e))
}

/// A volume or network driver: only the given plain ones without dangerous flags.
fn plain_driver(m: &Map<String, Value>, rule: &str, plain: &[&str], a: &Allowance) -> Rule {
    let driver = m.get("Driver").and_then(Value::as_str).unwrap_or("");
    if !driver.is_empty() && !plain.contains(&driver) && !a.dangerous {
        return refuse(rule, format!("driver {driver:?} is not allowed"));
    }
    Ok(())
}

fn refuse<T>(rule: &str, why: impl std::fmt::Display) -> Result<T, String> {
    Err(format!("refused by the limited socket ({rule}): {why}"))
}

static DRIVER: Shape = Shape {
    name: "DriverConfig",
    fields: &["Name", "Options"],
    nested: &[],
};
static VOLUME_OPTIONS: Shape = Shape {
    name: "VolumeOptions",
    fields: &["NoCopy", "Labels", "Subpath"],
    nested: &[("DriverConfig", Inner::Object(&DRIVER))],
};
static MOUNT: Shape = Shape {
    name: "Mounts[]",
    fields: &[
        "Type",
        "Source",
        "Target",
        "ReadOnly",
        "Consistency",
        "BindOptions",
        "ImageOptions",
        "TmpfsOptions",
        "ClusterOptions",
    ],
    nested: &[("VolumeOptions", Inner::Object(&VOLUME_OPTIONS))],
};

/// `Resources`, embedded in HostConfig and the body of `update` (every field of
/// every API version, so a case-folded spelling cannot reach one unchecked).
macro_rules! resources {
    ($($more:literal),*) => {
        &[
            "CpuShares", "Memory", "NanoCpus", "CgroupParent", "BlkioWeight",
            "BlkioWeightDevice", "BlkioDeviceReadBps", "BlkioDeviceWriteBps",
            "BlkioDeviceReadIOps", "BlkioDeviceWriteIOps", "CpuPeriod", "CpuQuota",
            "CpuRealtimePeriod", "CpuRealtimeRuntime", "CpusetCpus", "CpusetMems", "Devices",
            "DeviceCgroupRules", "DeviceRequests", "KernelMemory", "KernelMemoryTCP",
            "MemoryReservation", "MemorySwap", "MemorySwappiness", "OomKillDisable",
            "PidsLimit", "Ulimits", "CpuCount", "CpuPercent", "IOMaximumIOps",
            "IOMaximumBandwidth", $($more),*
        ]
    };
}

static HOST_CONFIG: Shape = Shape {
    name: "HostConfig",
    fields: resources!(
        "Binds",
        "ContainerIDFile",
        "LogConfig",
        "NetworkMode",
        "PortBindings",
        "RestartPolicy",
        "AutoRemove",
        "VolumeDriver",
        "VolumesFrom",
        "ConsoleSize",
        "Annotations",
        "CapAdd",
        "CapDrop",
        "Capabilities",
        "CgroupnsMode",
        "Dns",
        "DnsOptions",
        "DnsSearch",
        "ExtraHosts",
        "GroupAdd",
        "IpcMode",
        "Cgroup",
        "Links",
        "OomScoreAdj",
        "PidMode",
        "Privileged",
        "PublishAllPorts",
        "ReadonlyRootfs",
        "SecurityOpt",
        "StorageOpt",
        "Tmpfs",
        "UTSMode",
        "UsernsMode",
        "ShmSize",
        "Sysctls",
        "Runtime",
        "Isolation",
        "MaskedPaths",
        "ReadonlyPaths",
        "Init"
    ),
    nested: &[("Mounts", Inner::ListOf(&MOUNT))],
};
static ENDPOINT: Shape = Shape {
    name: "EndpointSettings",
    fields: &[
        "IPAMConfig",
        "Links",
        "Aliases",
        "DriverOpts",
        "GwPriority",
        "NetworkID",
        "EndpointID",
        "Gateway",
        "IPAddress",
        "MacAddress",
        "IPPrefixLen",
        "IPv6Gateway",
        "GlobalIPv6Address",
        "GlobalIPv6PrefixLen",
        "DNSNames",
    ],
    nested: &[],
};
static NETWORKING: Shape = Shape {
    name: "NetworkingConfig",
    fields: &[],
    nested: &[("EndpointsConfig", Inner::MapOf(&ENDPOINT))],
};
static CREATE_CONTAINER: Shape = Shape {
    name: "the container config",
    fields: &[
        "Hostname",
        "Domainname",
        "User",
        "AttachStdin",
        "AttachStdout",
        "AttachStderr",
        "ExposedPorts",
        "Tty",
        "OpenStdin",
        "StdinOnce",
        "Env",
        "Cmd",
        "Healthcheck",
        "ArgsEscaped",
        "Image",
        "Volumes",
        "WorkingDir",
        "Entrypoint",
        "NetworkDisabled",
        "MacAddress",
        "OnBuild",
        "Labels",
        "StopSignal",
        "StopTimeout",
        "Shell",
    ],
    nested: &[
        ("HostConfig", Inner::Object(&HOST_CONFIG)),
        ("NetworkingConfig", Inner::Object(&NETWORKING)),
    ],
};
static UPDATE: Shape = Shape {
    name: "the update",
    fields: resources!("RestartPolicy"),
    nested: &[],
};
static EXEC_CREATE: Shape = Shape {
    name: "the exec config",
    fields: &[
        "User",
        "Privileged",
        "Tty",
        "ConsoleSize",
        "AttachStdin",
        "AttachStderr",
        "AttachStdout",
        "Detach",
        "DetachKeys",
        "Env",
        "WorkingDir",
        "Cmd",
    ],
    nested: &[],
};
static EXEC_START: Shape = Shape {
    name: "the exec start",
    fields: &["Detach", "Tty", "ConsoleSize"],
    nested: &[],
};
static VOLUME_CREATE: Shape = Shape {
    name: "the volume config",
    fields: &[
        "Name",
        "Driver",
        "DriverOpts",
        "Labels",
        "ClusterVolumeSpec",
    ],
    nested: &[],
};
static NETWORK_CREATE: Shape = Shape {
    name: "the network config",
    fields: &[
        "Name",
        "CheckDuplicate",
        "Driver",
        "Scope",
        "EnableIPv4",
        "EnableIPv6",
        "IPAM",
        "Internal",
        "Attachable",
        "Ingress",
        "ConfigOnly",
        "ConfigFrom",
        "Options",
        "Labels",
    ],
    nested: &[],
};
static CONNECT: Shape = Shape {
    name: "the connect request",
    fields: &["Container", "Force"],
    nested: &[("EndpointConfig", Inner::Object(&ENDPOINT))],
};

fn obj(v: &mut Value) -> &mut Map<String, Value> {
    if !v.is_object() {
        *v = Value::Object(Map::new());
    }
    match v {
        Value::Object(m) => m,
        _ => unreachable!("made an object just above"),
    }
}

fn set(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        Value::Number(n) => n.as_f64() != Some(0.0),
    }
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

/// Stamps owner and decision labels; a caller may set no `privledger.` label.
fn stamp_labels(labels: &mut Value, stamp: &Stamp) -> Rule {
    let m = obj(labels);
    if let Some(k) = m
        .keys()
        .find(|k| k.to_ascii_lowercase().starts_with(RESERVED_PREFIX))
    {
        return refuse("labels", format!("label {k:?} is privledger's to set"));
    }
    m.insert(LABEL_OWNER.into(), Value::String(stamp.owner.clone()));
    if let Some(d) = &stamp.decision {
        m.insert(
            crate::ledger::LABEL_DECISION.into(),
            Value::String(d.clone()),
        );
    }
    Ok(())
}

/// A namespace mode: `host` never, `container:X` only for an owned X.
fn namespace(
    field: &str,
    v: Option<&Value>,
    a: &Allowance,
    refs: &mut Vec<(Kind, String)>,
) -> Rule {
    let Some(mode) = v.and_then(Value::as_str) else {
        return Ok(());
    };
    if mode == "host" && !a.dangerous {
        return refuse(field, "the host's namespace is not allowed");
    }
    if let Some(c) = mode.strip_prefix("container:") {
        refs.push((Kind::Container, c.to_string()));
    }
    Ok(())
}

/// The host-escaping settings of HostConfig (or an update's Resources).
fn resources(h: &mut Map<String, Value>, a: &Allowance) -> Rule {
    for field in [
        "Devices",
        "DeviceRequests",
        "DeviceCgroupRules",
        "CgroupParent",
    ] {
        if h.get(field).is_some_and(set) && !a.dangerous {
            return refuse(field, "host devices and cgroups are not allowed");
        }
    }
    let int = |h: &Map<String, Value>, k: &str| h.get(k).and_then(Value::as_i64).unwrap_or(0);
    let mem = int(h, "Memory");
    if mem < 0 || mem > a.mem_bytes {
        return refuse(
            "memory cap",
            format!("Memory {mem} exceeds the cap of {} bytes", a.mem_bytes),
        );
    }
    if mem == 0 {
        h.insert("Memory".into(), Value::from(a.mem_bytes));
    }
    let swap = int(h, "MemorySwap");
    if swap < 0 || (swap > 0 && swap > a.mem_bytes.saturating_mul(2)) {
        return refuse(
            "memory cap",
            "MemorySwap beyond twice the memory cap (or unlimited)",
        );
    }
    let (quota, period) = (int(h, "CpuQuota"), int(h, "CpuPeriod"));
    let nano = int(h, "NanoCpus");
    let cap_nano = (a.cpu_cores * 1e9) as i64;
    if quota != 0 || period != 0 {
        let period = if period == 0 { 100_000 } else { period };
        if quota <= 0 || (quota as f64 / period as f64) > a.cpu_cores {
            return refuse(
                "cpu cap",
                format!("CpuQuota/CpuPeriod exceed {} cores", a.cpu_cores),
            );
        }
    } else if nano < 0 || nano > cap_nano {
        return refuse(
            "cpu cap",
            format!("NanoCpus {nano} exceeds {} cores", a.cpu_cores),
        );
    } else if nano == 0 {
        h.insert("NanoCpus".into(), Value::from(cap_nano));
    }
    Ok(())
}

/// `POST /containers/create`.
pub fn container_create(mut body: Value, a: &Allowance, stamp: &Stamp) -> Result<Checked, String> {
    strict(&body, &CREATE_CONTAINER)?;
    let mut refs = Vec::new();
    let root = obj(&mut body);
    stamp_labels(root.entry("Labels").or_insert(Value::Null), stamp)?;
    let h = obj(root.entry("HostConfig").or_insert(Value::Null));
    if h.get("Privileged").is_some_and(set) && !(a.dangerous && a.privileged) {
        return refuse(
            "Privileged",
            "privileged containers need a privileged grant that allows dangerous flags",
        );
    }
    for field in [
        "CapAdd",
        "Capabilities",
        "Sysctls",
        "VolumeDriver",
        "MaskedPaths",
        "ReadonlyPaths",
    ] {
        let present = match field {
            // An empty list unmasks /proc paths: presence is what matters.
            "MaskedPaths" | "ReadonlyPaths" => h.get(field).is_some_and(|v| !v.is_null()),
            _ => h.get(field).is_some_and(set),
        };
        if present && !a.dangerous {
            return refuse(field, "not allowed without dangerous flags");
        }
    }
    if let Some(r) = h.get("Runtime").and_then(Value::as_str) {
        if !r.is_empty() && r != "runc" && !a.dangerous {
            return refuse("Runtime", format!("runtime {r:?} is not allowed"));
        }
    }
    for opt in strings(h.get("SecurityOpt")) {
        let plain = opt.replace(':', "=");
        if !matches!(
            plain.as_str(),
            "no-new-privileges" | "no-new-privileges=true"
        ) && !a.dangerous
        {
            return refuse("SecurityOpt", format!("{opt:?} is not allowed"));
        }
    }
    for mode in [
        "PidMode",
        "IpcMode",
        "UTSMode",
        "UsernsMode",
        "CgroupnsMode",
        "NetworkMode",
    ] {
        namespace(mode, h.get(mode), a, &mut refs)?;
    }
    if let Some(n) = h.get("NetworkMode").and_then(Value::as_str) {
        if !matches!(n, "" | "default" | "bridge" | "none" | "host") && !n.starts_with("container:")
        {
            refs.push((Kind::Network, n.to_string()));
        }
    }
    for v in strings(h.get("VolumesFrom")) {
        refs.push((
            Kind::Container,
            v.split(':').next().unwrap_or("").to_string(),
        ));
    }
    for l in strings(h.get("Links")) {
        let target = l.split(':').next().unwrap_or("").trim_start_matches('/');
        refs.push((Kind::Container, target.to_string()));
    }
    for b in strings(h.get("Binds")) {
        let src = b.split(':').next().unwrap_or("");
        if src.starts_with('/') || src.starts_with('.') || src.contains('\\') {
            if !a.dangerous {
                return refuse(
                    "Binds",
                    format!("bind mount of host path {src:?} is not allowed"),
                );
            }
        } else {
            refs.push((Kind::Volume, src.to_string()));
        }
    }
    for m in h
        .get("Mounts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let typ = m.get("Type").and_then(Value::as_str).unwrap_or("");
        let source = m.get("Source").and_then(Value::as_str).unwrap_or("");
        match typ {
            "volume" => {
                let driver = m.pointer("/VolumeOptions/DriverConfig");
                if driver.is_some_and(set) && !a.dangerous {
                    return refuse(
                        "Mounts",
                        "a volume driver or driver options in a mount are not allowed",
                    );
                }
                if !source.is_empty() {
                    refs.push((Kind::Volume, source.to_string()));
                }
            }
            "tmpfs" => {}
            _ if a.dangerous => {}
            other => return refuse("Mounts", format!("a {other:?} mount is not allowed")),
        }
    }
    resources(h, a)?;
    if let Some(eps) = root
        .get("NetworkingConfig")
        .and_then(|n| n.get("EndpointsConfig"))
        .and_then(Value::as_object)
    {
        for (name, ep) in eps {
            if !matches!(name.as_str(), "bridge" | "none" | "default") {
                refs.push((Kind::Network, name.clone()));
            }
            for l in strings(ep.get("Links")) {
                refs.push((
                    Kind::Container,
                    l.split(':').next().unwrap_or("").to_string(),
                ));
            }
        }
    }
    refs.retain(|(_, n)| !n.is_empty());
    Ok(Checked { body, refs })
}

/// `POST /containers/{id}/update`.
pub fn container_update(mut body: Value, a: &Allowance) -> Result<Checked, String> {
    strict(&body, &UPDATE)?;
    resources(obj(&mut body), a)?;
    Ok(Checked::plain(body))
}

/// `POST /containers/{id}/exec`.
pub fn exec_create(body: Value, a: &Allowance) -> Result<Checked, String> {
    strict(&body, &EXEC_CREATE)?;
    if body.get("Privileged").is_some_and(set) && !(a.dangerous && a.privileged) {
        return refuse(
            "Privileged",
            "a privileged exec needs a privileged grant that allows dangerous flags",
        );
    }
    Ok(Checked::plain(body))
}

/// `POST /exec/{id}/start`.
pub fn exec_start(body: Value) -> Result<Checked, String> {
    strict(&body, &EXEC_START)?;
    Ok(Checked::plain(body))
}

/// `POST /volumes/create`.
pub fn volume_create(mut body: Value, a: &Allowance, stamp: &Stamp) -> Result<Checked, String> {
    strict(&body, &VOLUME_CREATE)?;
    let m = obj(&mut body);
    plain_driver(m, "volume driver", &["local"], a)?;
    if m.get("DriverOpts").is_some_and(set) && !a.dangerous {
        return refuse(
            "volume driver options",
            "driver options (o=bind, device=, type=) reach the host",
        );
    }
    if m.get("ClusterVolumeSpec").is_some_and(set) {
        return refuse("volume", "cluster volumes are not allowed");
    }
    stamp_labels(m.entry("Labels").or_insert(Value::Null), stamp)?;
    Ok(Checked::plain(body))
}

/// `POST /networks/create`.
pub fn network_create(mut body: Value, a: &Allowance, stamp: &Stamp) -> Result<Checked, String> {
    strict(&body, &NETWORK_CREATE)?;
    let m = obj(&mut body);
    plain_driver(m, "network driver", &["bridge"], a)?;
    for field in ["Options", "Ingress", "ConfigFrom", "ConfigOnly"] {
        if m.get(field).is_some_and(set) && !a.dangerous {
            return refuse(field, "not allowed without dangerous flags");
        }
    }
    stamp_labels(m.entry("Labels").or_insert(Value::Null), stamp)?;
    Ok(Checked::plain(body))
}

/// `POST /networks/{id}/connect|disconnect`: the container must be owned.
pub fn network_connect(body: Value) -> Result<Checked, String> {
    strict(&body, &CONNECT)?;
    let c = body
        .get("Container")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if c.is_empty() {
        return refuse("connect", "the request names no container");
    }
    Ok(Checked {
        body,
        refs: vec![(Kind::Container, c)],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn limited() -> Allowance {
        Allowance {
            dangerous: false,
            privileged: false,
            cpu_cores: 2.0,
            mem_bytes: 8 << 30,
        }
    }

    fn stamp() -> Stamp {
        Stamp {
            owner: "alice".into(),
            decision: Some("abcd1234-7".into()),
        }
    }

    fn create(body: Value) -> Result<Checked, String> {
        container_create(body, &limited(), &stamp())
    }

    #[test]
    fn a_plain_create_is_stamped_and_capped() {
        let c =
            create(json!({"Image": "busybox", "Cmd": ["sh"], "HostConfig": {"AutoRemove": true}}))
                .unwrap();
        assert_eq!(c.body["Labels"][LABEL_OWNER], "alice");
        assert_eq!(c.body["Labels"]["privledger.decision"], "abcd1234-7");
        assert_eq!(c.body["HostConfig"]["Memory"], 8i64 << 30);
        assert_eq!(c.body["HostConfig"]["NanoCpus"], 2_000_000_000i64);
        assert!(c.refs.is_empty());
        let c = create(json!({"Image": "busybox", "HostConfig": null})).unwrap();
        assert_eq!(c.body["HostConfig"]["Memory"], 8i64 << 30);
    }

    #[test]
    fn every_host_escaping_setting_is_refused_and_allowed_with_dangerous_flags() {
        let cases = [
            json!({"Privileged": true}),
            json!({"Binds": ["/etc:/host-etc"]}),
            json!({"Binds": ["/:/host:ro"]}),
            json!({"Mounts": [{"Type": "bind", "Source": "/", "Target": "/h"}]}),
            json!({"Mounts": [{"Type": "npipe", "Source": "x", "Target": "/h"}]}),
            json!({"Mounts": [{"Type": "volume", "Source": "v", "Target": "/h", "VolumeOptions": {"DriverConfig": {"Name": "local", "Options": {"o": "bind", "device": "/"}}}}]}),
            json!({"NetworkMode": "host"}),
            json!({"PidMode": "host"}),
            json!({"IpcMode": "host"}),
            json!({"UTSMode": "host"}),
            json!({"UsernsMode": "host"}),
            json!({"CgroupnsMode": "host"}),
            json!({"CapAdd": ["SYS_ADMIN"]}),
            json!({"Capabilities": ["CAP_SYS_ADMIN"]}),
            json!({"Devices": [{"PathOnHost": "/dev/sda", "PathInContainer": "/dev/sda", "CgroupPermissions": "rwm"}]}),
            json!({"DeviceRequests": [{"Count": -1, "Capabilities": [["gpu"]]}]}),
            json!({"DeviceCgroupRules": ["a *:* rwm"]}),
            json!({"SecurityOpt": ["seccomp=unconfined"]}),
            json!({"SecurityOpt": ["apparmor:unconfined"]}),
            json!({"SecurityOpt": ["label=disable"]}),
            json!({"SecurityOpt": ["systempaths=unconfined"]}),
            json!({"CgroupParent": "/"}),
            json!({"Runtime": "kata"}),
            json!({"Sysctls": {"kernel.shm_rmid_forced": "1"}}),
            json!({"VolumeDriver": "rexray"}),
            json!({"MaskedPaths": []}),
            json!({"ReadonlyPaths": []}),
        ];
        let mut dangerous = limited();
        dangerous.dangerous = true;
        for h in cases {
            let body = json!({"Image": "busybox", "HostConfig": h.clone()});
            let Err(e) = create(body.clone()) else {
                panic!("{h} must be refused")
            };
            assert!(e.starts_with("refused by the limited socket ("), "{e}");
            let allowed = container_create(body, &dangerous, &stamp());
            if h.get("Privileged").is_some() {
                assert!(allowed.is_err(), "privileged also needs a privileged grant");
                let mut both = dangerous.clone();
                both.privileged = true;
                container_create(json!({"HostConfig": h}), &both, &stamp()).unwrap();
            } else {
                allowed.unwrap_or_else(|e| panic!("{h}: {e}"));
            }
        }
    }

    #[test]
    fn resources_named_in_the_body_are_returned_for_ownership() {
        let c = create(json!({
            "Image": "busybox",
            "HostConfig": {
                "Binds": ["data:/data", "/ok-only-if-dangerous:/x"],
            }
        }));
        assert!(c.is_err(), "a host bind in the same body");
        let c = create(json!({
            "Image": "busybox",
            "HostConfig": {
                "Binds": ["data:/data:ro"],
                "Mounts": [{"Type": "volume", "Source": "cache", "Target": "/c"}, {"Type": "tmpfs", "Target": "/t"}],
                "VolumesFrom": ["other:ro"],
                "Links": ["/db:db"],
                "NetworkMode": "container:peer",
                "PidMode": "container:peer2",
            },
            "NetworkingConfig": {"EndpointsConfig": {"mynet": {"Aliases": ["a"]}}}
        }))
        .unwrap();
        let mut refs = c.refs.clone();
        refs.sort_by(|a, b| a.1.cmp(&b.1));
        assert_eq!(
            refs,
            vec![
                (Kind::Volume, "cache".into()),
                (Kind::Volume, "data".into()),
                (Kind::Container, "db".into()),
                (Kind::Network, "mynet".into()),
                (Kind::Container, "other".into()),
                (Kind::Container, "peer".into()),
                (Kind::Container, "peer2".into()),
            ]
        );
    }

    #[test]
    fn caps_are_enforced_at_create_and_update() {
        assert!(create(json!({"HostConfig": {"Memory": (9i64 << 30)}})).is_err());
        assert!(create(json!({"HostConfig": {"NanoCpus": 3_000_000_000i64}})).is_err());
        assert!(
            create(json!({"HostConfig": {"CpuQuota": 300_000, "CpuPeriod": 100_000}})).is_err()
        );
        assert!(create(json!({"HostConfig": {"CpuQuota": -1}})).is_err());
        assert!(create(json!({"HostConfig": {"MemorySwap": -1}})).is_err());
        let ok = create(
            json!({"HostConfig": {"CpuQuota": 100_000, "CpuPeriod": 100_000, "Memory": 1024}}),
        )
        .unwrap();
        assert!(
            ok.body["HostConfig"].get("NanoCpus").is_none(),
            "quota and nano cpus conflict"
        );
        assert_eq!(ok.body["HostConfig"]["Memory"], 1024);
        assert!(container_update(json!({"Memory": (9i64 << 30)}), &limited()).is_err());
        assert!(
            container_update(json!({"Devices": [{"PathOnHost": "/dev/mem"}]}), &limited()).is_err()
        );
        assert!(
            container_update(json!({"memory": 1}), &limited()).is_err(),
            "case-folded"
        );
        container_update(
            json!({"Memory": 1 << 20, "RestartPolicy": {"Name": "no"}}),
            &limited(),
        )
        .unwrap();
    }

    #[test]
    fn labels_are_privledgers_and_spelling_is_exact() {
        assert!(create(json!({"Labels": {"privledger.owner": "bob"}})).is_err());
        assert!(create(json!({"Labels": {"PRIVLEDGER.decision": "x"}})).is_err());
        for bad in [
            json!({"hostconfig": {"Privileged": true}}),
            json!({"HostConfig": {"privileged": true}}),
            json!({"HostConfig": {"Privıleged": true}}),
            json!({"HostConfig": {"Mounts": [{"type": "bind", "Source": "/", "Target": "/h"}]}}),
            json!({"HostConfig": {"Mounts": [{"Type": "volume", "Source": "v", "Target": "/h", "VolumeOptions": {"driverconfig": {"Name": "x"}}}]}}),
            json!({"NetworkingConfig": {"EndpointsConfig": {"n": {"aliases": []}}}}),
        ] {
            assert!(create(bad.clone()).is_err(), "{bad}");
        }
    }

    #[test]
    fn volumes_networks_and_execs() {
        let v = volume_create(json!({"Name": "data"}), &limited(), &stamp()).unwrap();
        assert_eq!(v.body["Labels"][LABEL_OWNER], "alice");
        assert!(volume_create(
            json!({"Name": "d", "DriverOpts": {"o": "bind", "device": "/"}}),
            &limited(),
            &stamp()
        )
        .is_err());
        assert!(
            volume_create(json!({"Name": "d", "Driver": "nfs"}), &limited(), &stamp()).is_err()
        );
        assert!(volume_create(json!({"name": "d"}), &limited(), &stamp()).is_err());
        network_create(
            json!({"Name": "n", "Driver": "bridge"}),
            &limited(),
            &stamp(),
        )
        .unwrap();
        assert!(network_create(
            json!({"Name": "n", "Driver": "macvlan"}),
            &limited(),
            &stamp()
        )
        .is_err());
        assert!(network_create(
            json!({"Name": "n", "Options": {"com.docker.network.bridge.name": "docker0"}}),
            &limited(),
            &stamp()
        )
        .is_err());
        assert!(exec_create(json!({"Cmd": ["sh"], "Privileged": true}), &limited()).is_err());
        exec_create(
            json!({"Cmd": ["sh"], "AttachStdin": true, "Tty": true}),
            &limited(),
        )
        .unwrap();
        let c = network_connect(json!({"Container": "web"})).unwrap();
        assert_eq!(c.refs, vec![(Kind::Container, "web".into())]);
        assert!(network_connect(json!({})).is_err());
    }
}
