//! The positive model (DESIGN §6): for every body the limited socket forwards, a
//! table of every field it accepts and what the field may hold. A field not in its
//! table, a value outside its rule, or a near-miss spelling Docker would fold onto a
//! field, is refused naming the field; nothing unlisted reaches the daemon. The
//! tables follow moby's `api/types` (container `Config`, `HostConfig`, `Resources`,
//! `mount.Mount`, network `EndpointSettings`, `CreateRequest`, volume and exec
//! requests); `rules` holds the checks that need more than a table row.

use serde_json::Value;

use super::classify::Kind;
use super::refusal::{refuse, Refusal};
use super::rules::{self, Allowance};

/// A check of one field that a table row cannot say: it may add to `Ctx`.
pub type Check = fn(&mut Ctx<'_>, &mut Value) -> Result<(), Refusal>;

/// What one field may hold. `null` is always accepted: Docker reads it as unset.
#[derive(Clone, Copy)]
pub enum Rule {
    /// Anything: nothing it can say reaches past the user's own container.
    Free,
    Bool,
    /// An integer within the bounds.
    Int(i64, i64),
    Text,
    /// A list of strings.
    Texts,
    /// One of these strings.
    OneOf(&'static [&'static str]),
    /// Unset (false, 0, "", [], {}) unless the grant allows dangerous flags.
    Dangerous,
    /// An object with a table of its own.
    Object(&'static Table),
    /// A list of objects of one table.
    ListOf(&'static Table),
    /// A check of its own.
    Own(Check),
}

/// The fields of one kind of object, spelled exactly as Docker names them.
pub struct Table {
    pub name: &'static str,
    pub fields: &'static [(&'static str, Rule)],
}

impl Table {
    pub fn rule(&self, field: &str) -> Option<Rule> {
        self.fields
            .iter()
            .find(|(f, _)| *f == field)
            .map(|(_, r)| *r)
    }
}

/// Where, in the forwarded body, a resource named by the caller is written: once
/// resolved, its full id is written there instead of the name the caller gave, so
/// the daemon cannot resolve the name to something else between check and use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum At {
    /// Nothing to rewrite: a volume's name is its id.
    Keep,
    /// The string at this JSON pointer becomes `prefix + id + suffix`.
    Str {
        pointer: String,
        prefix: String,
        suffix: String,
    },
    /// The key `name` of the object at this JSON pointer becomes the id.
    Key { pointer: String },
}

/// A resource a body names, which the caller must own (or which is shared).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ref {
    pub kind: Kind,
    pub name: String,
    pub at: At,
}

/// What walking a body learns, and where it is.
pub struct Ctx<'a> {
    pub allowance: &'a Allowance,
    pub refs: Vec<Ref>,
    /// Anonymous volumes the body asks for (`Volumes`, volume mounts without source).
    pub anonymous: usize,
    /// The JSON pointer of the value being checked.
    pub pointer: String,
    /// The same as a field path for messages (`HostConfig.Mounts[0].Type`).
    pub path: String,
    /// Whether the endpoint being checked is on a shared network.
    pub shared_endpoint: bool,
}

impl<'a> Ctx<'a> {
    pub fn new(allowance: &'a Allowance) -> Ctx<'a> {
        Ctx {
            allowance,
            refs: Vec::new(),
            anonymous: 0,
            pointer: String::new(),
            path: String::new(),
            shared_endpoint: false,
        }
    }

    pub fn refuse<T>(&self, reason: impl std::fmt::Display) -> Result<T, Refusal> {
        refuse(self.path.clone(), reason)
    }

    /// A reference whose string at the current pointer is rewritten to the id.
    pub fn name_here(&mut self, kind: Kind, name: &str, prefix: &str, suffix: &str) {
        if name.is_empty() {
            return;
        }
        self.refs.push(Ref {
            kind,
            name: name.to_string(),
            at: At::Str {
                pointer: self.pointer.clone(),
                prefix: prefix.to_string(),
                suffix: suffix.to_string(),
            },
        });
    }

    /// Runs `f` one step deeper (`key` of an object, or `[i]` of a list).
    pub fn within<T>(&mut self, step: Step<'_>, f: impl FnOnce(&mut Self) -> T) -> T {
        let (p, q) = (self.pointer.len(), self.path.len());
        match step {
            Step::Key(k) => {
                self.pointer.push('/');
                self.pointer
                    .push_str(&k.replace('~', "~0").replace('/', "~1"));
                if !self.path.is_empty() {
                    self.path.push('.');
                }
                self.path.push_str(k);
            }
            Step::Index(i) => {
                self.pointer.push_str(&format!("/{i}"));
                self.path.push_str(&format!("[{i}]"));
            }
        }
        let out = f(self);
        self.pointer.truncate(p);
        self.path.truncate(q);
        out
    }
}

pub enum Step<'k> {
    Key(&'k str),
    Index(usize),
}

/// Whether a value says anything (`null`, `false`, `0`, `""`, `[]`, `{}` do not).
pub fn set(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        Value::Number(n) => n.as_f64() != Some(0.0),
    }
}

/// Checks `v` (an object, or null) against `table`.
pub fn walk(ctx: &mut Ctx<'_>, table: &Table, v: &mut Value) -> Result<(), Refusal> {
    let m = match v {
        Value::Null => return Ok(()),
        Value::Object(m) => m,
        _ => return ctx.refuse(format!("{} must be an object", table.name)),
    };
    for (k, val) in m.iter_mut() {
        let Some(rule) = table.rule(k) else {
            let near = table
                .fields
                .iter()
                .find(|(f, _)| super::strict_json::fold(f) == super::strict_json::fold(k))
                .map(|(f, _)| format!(" (Docker would read it as {f:?}; spell it exactly)"))
                .unwrap_or_default();
            return ctx.within(Step::Key(k), |c| {
                c.refuse(format!(
                    "{k:?} is not a field of {} that the limited socket accepts{near}",
                    table.name
                ))
            });
        };
        ctx.within(Step::Key(k), |c| apply(c, rule, val))?;
    }
    Ok(())
}

fn apply(ctx: &mut Ctx<'_>, rule: Rule, v: &mut Value) -> Result<(), Refusal> {
    if v.is_null() {
        return Ok(());
    }
    match rule {
        Rule::Free => Ok(()),
        Rule::Bool if v.is_boolean() => Ok(()),
        Rule::Bool => ctx.refuse("must be true or false"),
        Rule::Int(lo, hi) => match v.as_i64() {
            Some(n) if (lo..=hi).contains(&n) => Ok(()),
            _ => ctx.refuse(format!("{v} is not an integer from {lo} to {hi}")),
        },
        Rule::Text if v.is_string() => Ok(()),
        Rule::Text => ctx.refuse("must be a string"),
        Rule::Texts => {
            let ok = v.as_array().is_some_and(|a| a.iter().all(Value::is_string));
            if ok {
                Ok(())
            } else {
                ctx.refuse("must be a list of strings")
            }
        }
        Rule::OneOf(words) => match v.as_str() {
            Some(s) if words.contains(&s) => Ok(()),
            _ => ctx.refuse(format!("{v} is not one of {words:?}")),
        },
        Rule::Dangerous if ctx.allowance.dangerous || !set(v) => Ok(()),
        Rule::Dangerous => ctx.refuse("not allowed unless the grant allows dangerous flags"),
        Rule::Object(t) => walk(ctx, t, v),
        Rule::ListOf(t) => {
            let Some(items) = v.as_array_mut() else {
                return ctx.refuse("must be a list");
            };
            for (i, item) in items.iter_mut().enumerate() {
                ctx.within(Step::Index(i), |c| walk(c, t, item))?;
            }
            Ok(())
        }
        Rule::Own(check) => check(ctx, v),
    }
}

use Rule::*;

const MAX: i64 = i64::MAX;

/// `Resources`, flattened into HostConfig and an update's body. Caps (memory, CPU,
/// pids, shm) are enforced on the resulting values by `rules::caps`.
macro_rules! resources {
    ($($more:expr),* $(,)?) => {
        &[
            ("CpuShares", Int(0, 262_144)),
            ("Memory", Int(0, MAX)),
            ("NanoCpus", Int(0, MAX)),
            ("CgroupParent", Dangerous),
            // Docker's own range is 10..=1000 (0: unset).
            ("BlkioWeight", Int(0, 1000)),
            // Host device paths.
            ("BlkioWeightDevice", Dangerous),
            ("BlkioDeviceReadBps", Dangerous),
            ("BlkioDeviceWriteBps", Dangerous),
            ("BlkioDeviceReadIOps", Dangerous),
            ("BlkioDeviceWriteIOps", Dangerous),
            ("CpuPeriod", Int(0, 1_000_000)),
            ("CpuQuota", Int(0, MAX)),
            // Real-time scheduling can starve the host.
            ("CpuRealtimePeriod", Dangerous),
            ("CpuRealtimeRuntime", Dangerous),
            ("CpusetCpus", Own(rules::cpuset)),
            ("CpusetMems", Own(rules::cpuset)),
            ("Devices", Dangerous),
            ("DeviceCgroupRules", Dangerous),
            ("DeviceRequests", Dangerous),
            ("KernelMemory", Dangerous),
            ("KernelMemoryTCP", Dangerous),
            ("MemoryReservation", Int(0, MAX)),
            // -1 (unlimited swap) is refused by the range.
            ("MemorySwap", Int(0, MAX)),
            ("MemorySwappiness", Int(-1, 100)),
            ("OomKillDisable", Dangerous),
            ("PidsLimit", Int(0, MAX)),
            ("Ulimits", Own(rules::ulimits)),
            // Windows only.
            ("CpuCount", Dangerous),
            ("CpuPercent", Dangerous),
            ("IOMaximumIOps", Dangerous),
            ("IOMaximumBandwidth", Dangerous),
            $($more),*
        ]
    };
}

pub static RESTART_POLICY: Table = Table {
    name: "RestartPolicy",
    fields: &[
        (
            "Name",
            OneOf(&["", "no", "always", "unless-stopped", "on-failure"]),
        ),
        ("MaximumRetryCount", Int(0, 1000)),
    ],
};

pub static HOST_CONFIG: Table = Table {
    name: "HostConfig",
    fields: resources!(
        ("Binds", Own(rules::binds)),
        ("ContainerIDFile", Dangerous),
        ("LogConfig", Own(rules::log_config)),
        ("NetworkMode", Own(rules::network_mode)),
        ("PortBindings", Own(rules::port_bindings)),
        ("RestartPolicy", Object(&RESTART_POLICY)),
        ("AutoRemove", Bool),
        ("VolumeDriver", Dangerous),
        ("VolumesFrom", Own(rules::volumes_from)),
        ("ConsoleSize", Free),
        // Read by runtimes and their hooks.
        ("Annotations", Dangerous),
        ("CapAdd", Dangerous),
        ("CapDrop", Texts),
        ("Capabilities", Dangerous),
        ("CgroupnsMode", Own(rules::cgroupns_mode)),
        ("Dns", Own(rules::dns)),
        ("DnsOptions", Texts),
        ("DnsSearch", Texts),
        ("ExtraHosts", Texts),
        ("GroupAdd", Texts),
        ("IpcMode", Own(rules::ipc_mode)),
        ("Cgroup", Dangerous),
        ("Links", Own(rules::links)),
        // Negative: the host's OOM killer takes other processes first.
        ("OomScoreAdj", Int(0, 1000)),
        ("PidMode", Own(rules::pid_mode)),
        ("Privileged", Own(rules::privileged)),
        // Binds every exposed port on every host address.
        ("PublishAllPorts", Dangerous),
        ("ReadonlyRootfs", Bool),
        ("SecurityOpt", Own(rules::security_opt)),
        ("StorageOpt", Dangerous),
        ("Tmpfs", Own(rules::tmpfs)),
        ("UTSMode", Own(rules::host_only_namespace)),
        ("UsernsMode", Own(rules::host_only_namespace)),
        ("ShmSize", Int(0, MAX)),
        ("Sysctls", Dangerous),
        ("Runtime", Own(rules::runtime)),
        ("Isolation", OneOf(&["", "default"])),
        ("Mounts", Own(rules::mounts)),
        // An empty list unmasks /proc: presence is what matters.
        ("MaskedPaths", Own(rules::present_is_dangerous)),
        ("ReadonlyPaths", Own(rules::present_is_dangerous)),
        ("Init", Bool),
    ),
};

pub static ENDPOINT: Table = Table {
    name: "EndpointSettings",
    fields: &[
        // A fixed address or MAC on a shared network could take another's.
        ("IPAMConfig", Dangerous),
        ("Links", Own(rules::links)),
        ("Aliases", Own(rules::aliases)),
        ("DriverOpts", Dangerous),
        ("GwPriority", Int(-1000, 1000)),
        ("NetworkID", Dangerous),
        ("EndpointID", Dangerous),
        ("Gateway", Dangerous),
        ("IPAddress", Dangerous),
        ("MacAddress", Dangerous),
        ("IPPrefixLen", Dangerous),
        ("IPv6Gateway", Dangerous),
        ("GlobalIPv6Address", Dangerous),
        ("GlobalIPv6PrefixLen", Dangerous),
        ("DNSNames", Dangerous),
    ],
};

pub static NETWORKING: Table = Table {
    name: "NetworkingConfig",
    fields: &[("EndpointsConfig", Own(rules::endpoints_config))],
};

pub static HEALTHCHECK: Table = Table {
    name: "Healthcheck",
    fields: &[
        ("Test", Free),
        ("Interval", Int(0, MAX)),
        ("Timeout", Int(0, MAX)),
        ("StartPeriod", Int(0, MAX)),
        ("StartInterval", Int(0, MAX)),
        ("Retries", Int(0, 1000)),
    ],
};

/// `POST /containers/create`: `Config` with `HostConfig` and `NetworkingConfig`.
pub static CONTAINER_CREATE: Table = Table {
    name: "the container config",
    fields: &[
        ("Hostname", Text),
        ("Domainname", Text),
        ("User", Text),
        ("AttachStdin", Bool),
        ("AttachStdout", Bool),
        ("AttachStderr", Bool),
        ("ExposedPorts", Free),
        ("Tty", Bool),
        ("OpenStdin", Bool),
        ("StdinOnce", Bool),
        ("Env", Texts),
        ("Cmd", Free),
        ("Healthcheck", Object(&HEALTHCHECK)),
        ("ArgsEscaped", Bool),
        ("Image", Text),
        ("Volumes", Own(rules::anonymous_volumes)),
        ("WorkingDir", Text),
        ("Entrypoint", Free),
        ("NetworkDisabled", Bool),
        ("MacAddress", Dangerous),
        ("OnBuild", Texts),
        ("Labels", Own(rules::labels)),
        ("StopSignal", Text),
        ("StopTimeout", Int(-1, 86_400)),
        ("Shell", Texts),
        ("HostConfig", Object(&HOST_CONFIG)),
        ("NetworkingConfig", Object(&NETWORKING)),
    ],
};

/// `POST /containers/{id}/update`.
pub static CONTAINER_UPDATE: Table = Table {
    name: "the update",
    fields: resources!(("RestartPolicy", Object(&RESTART_POLICY))),
};

/// `POST /containers/{id}/exec`.
pub static EXEC_CREATE: Table = Table {
    name: "the exec config",
    fields: &[
        ("User", Text),
        ("Privileged", Own(rules::privileged)),
        ("Tty", Bool),
        ("ConsoleSize", Free),
        ("AttachStdin", Bool),
        ("AttachStderr", Bool),
        ("AttachStdout", Bool),
        ("Detach", Bool),
        ("DetachKeys", Text),
        ("Env", Texts),
        ("WorkingDir", Text),
        ("Cmd", Free),
    ],
};

/// `POST /exec/{id}/start`.
pub static EXEC_START: Table = Table {
    name: "the exec start",
    fields: &[("Detach", Bool), ("Tty", Bool), ("ConsoleSize", Free)],
};

/// `POST /volumes/create`.
pub static VOLUME_CREATE: Table = Table {
    name: "the volume config",
    fields: &[
        ("Name", Own(rules::resource_name)),
        ("Driver", OneOf(&["", "local"])),
        // local `o=bind`, `device=`, `type=nfs` reach the host or the network.
        ("DriverOpts", Dangerous),
        ("Labels", Own(rules::labels)),
        ("ClusterVolumeSpec", Dangerous),
    ],
};

/// `POST /networks/create`.
pub static NETWORK_CREATE: Table = Table {
    name: "the network config",
    fields: &[
        ("Name", Own(rules::resource_name)),
        ("CheckDuplicate", Bool),
        ("Driver", OneOf(&["", "bridge"])),
        ("Scope", OneOf(&["", "local"])),
        ("EnableIPv4", Bool),
        // IPv6 needs a pool the operator chose.
        ("EnableIPv6", Dangerous),
        ("IPAM", Own(rules::ipam)),
        ("Internal", Bool),
        ("Attachable", Dangerous),
        ("Ingress", Dangerous),
        ("ConfigOnly", Dangerous),
        ("ConfigFrom", Dangerous),
        // Bridge options name host interfaces (`com.docker.network.bridge.name`).
        ("Options", Dangerous),
        ("Labels", Own(rules::labels)),
    ],
};

/// `POST /networks/{id}/connect|disconnect`.
pub static CONNECT: Table = Table {
    name: "the connect request",
    fields: &[
        ("Container", Own(rules::connect_container)),
        ("Force", Bool),
        ("EndpointConfig", Object(&ENDPOINT)),
    ],
};
