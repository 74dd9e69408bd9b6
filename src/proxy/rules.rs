//! What a limited user may ask of the daemon in a body (DESIGN §6): the checks the
//! field tables of [`super::fields`] name, the caps on the resulting values (memory,
//! CPU, pids, shared memory), the owner labels stamped, and the resources a body
//! names, to be resolved to ids and checked for ownership. Pure: the proxy does the
//! daemon calls.

use std::net::IpAddr;

use serde_json::{Map, Value};

use super::classify::Kind;
use super::fields::{self, set, At, Ctx, Ref, Step};
use super::refusal::{refuse, Refusal};

pub use crate::ledger::LABEL_OWNER;
/// Every label under this prefix is privledger's to set.
const RESERVED_PREFIX: &str = "privledger.";

/// How published ports may be bound on the host (the grant's `publish`).
pub use crate::ledger::event::PublishPorts as Publish;

/// What the user's current access, and the operator's settings, allow.
#[derive(Debug, Clone, PartialEq)]
pub struct Allowance {
    pub dangerous: bool,
    pub privileged: bool,
    pub cpu_cores: f64,
    pub mem_bytes: i64,
    /// The most processes a container may hold (the grant's `max_pids`).
    pub pids: i64,
    pub publish: Publish,
    /// Networks anyone may join (the hub's, say): named, never owned.
    pub shared_networks: Vec<String>,
    /// Address pools a user's network may take its subnet from (none: the
    /// daemon's own pools only).
    pub network_pools: Vec<Ipv4Net>,
    /// Image builds (the classic builder).
    pub build: bool,
    /// The grant's pull and push allowlists (image reference patterns).
    pub pull_allow: Vec<String>,
    pub push_allow: Vec<String>,
}

/// An IPv4 network in CIDR form (`10.250.0.0/16`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Net {
    pub addr: std::net::Ipv4Addr,
    pub prefix: u8,
}

impl Ipv4Net {
    fn mask(self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix))
        }
    }

    /// Whether `other` lies wholly inside this network.
    pub fn covers(self, other: Ipv4Net) -> bool {
        other.prefix >= self.prefix && (u32::from(other.addr) & self.mask()) == u32::from(self.addr)
    }

    pub fn holds(self, ip: std::net::Ipv4Addr) -> bool {
        (u32::from(ip) & self.mask()) == u32::from(self.addr)
    }
}

impl std::str::FromStr for Ipv4Net {
    type Err = String;
    fn from_str(s: &str) -> Result<Ipv4Net, String> {
        let (a, p) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not a.b.c.d/len"))?;
        let addr: std::net::Ipv4Addr = a
            .parse()
            .map_err(|_| format!("{s:?}: {a:?} is not an IPv4 address"))?;
        let prefix: u8 = p
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| format!("{s:?}: the length must be 0 to 32"))?;
        let net = Ipv4Net { addr, prefix };
        if u32::from(addr) & !net.mask() != 0 {
            return Err(format!("{s:?} has host bits set"));
        }
        Ok(net)
    }
}

impl std::fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Who the created resource is stamped as.
#[derive(Debug, Clone, PartialEq)]
pub struct Stamp {
    pub owner: String,
    pub decision: Option<String>,
}

/// A body that passed: what to forward, the resources it names that the caller
/// must own (or that are shared), and the anonymous volumes it asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    pub body: Value,
    pub refs: Vec<Ref>,
    pub anonymous: usize,
}

type Outcome = Result<(), Refusal>;

fn checked(body: Value, ctx: Ctx<'_>) -> Checked {
    Checked {
        body,
        refs: ctx.refs,
        anonymous: ctx.anonymous,
    }
}

fn obj(v: &mut Value) -> &mut Map<String, Value> {
    if !v.is_object() {
        *v = Value::Object(Map::new());
    }
    match v {
        Value::Object(m) => m,
        _ => unreachable!("made an object just above"),
    }
}

/// A list of strings, each checked by `each` with its own pointer.
fn each_string(ctx: &mut Ctx<'_>, v: &Value, each: fn(&mut Ctx<'_>, &str) -> Outcome) -> Outcome {
    let Some(items) = v.as_array() else {
        return ctx.refuse("must be a list of strings");
    };
    for (i, item) in items.iter().enumerate() {
        let Some(s) = item.as_str() else {
            return ctx.within(Step::Index(i), |c| c.refuse("must be a string"));
        };
        ctx.within(Step::Index(i), |c| each(c, s))?;
    }
    Ok(())
}

/// A map of string values, each checked by `each(key, value)`.
fn each_entry(
    ctx: &mut Ctx<'_>,
    v: &Value,
    each: fn(&mut Ctx<'_>, &str, &str) -> Outcome,
) -> Outcome {
    let Some(m) = v.as_object() else {
        return ctx.refuse("must be an object of strings");
    };
    for (k, val) in m {
        let Some(s) = val.as_str() else {
            return ctx.within(Step::Key(k), |c| c.refuse("must be a string"));
        };
        ctx.within(Step::Key(k), |c| each(c, k, s))?;
    }
    Ok(())
}

/// Whether `s` could be taken for an id or an id prefix by whoever reads it.
pub fn looks_like_id(s: &str) -> bool {
    s.len() >= 12 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

// --- the checks the tables name -------------------------------------------------

pub fn cpuset(ctx: &mut Ctx<'_>, v: &mut Value) -> Outcome {
    match v.as_str() {
        Some(s)
            if s.len() <= 256
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || b == b',' || b == b'-') =>
        {
            Ok(())
        }
        _ => ctx.refuse("must be a list of CPU or memory node numbers such as \"0-3,5\""),
    }
}

/// `Ulimits`: only limits that bound the container itself, within bounds.
pub fn ulimits(ctx: &mut Ctx<'_>, v: &mut Value) -> Outcome {
    if ctx.allowance.dangerous {
        return Ok(());
    }
    let Some(items) = v.as_array() else {
        return ctx.refuse("must be a list");
    };
    let (pids, mem) = (ctx.allowance.pids, ctx.allowance.mem_bytes);
    for (i, u) in items.iter().enumerate() {
        ctx.within(Step::Index(i), |c| {
            let m = match u.as_object() {
                Some(m)
                    if m.keys()
                        .all(|k| matches!(k.as_str(), "Name" | "Soft" | "Hard")) =>
                {
                    m
                }
                _ => return c.refuse("a ulimit is {\"Name\", \"Soft\", \"Hard\"}"),
            };
            let name = m.get("Name").and_then(Value::as_str).unwrap_or("");
            let max = match name {
                "nofile" => 1 << 20,
                "nproc" => pids,
                "core" | "stack" | "fsize" => mem,
                _ => {
                    return c.refuse(format!(
                    "ulimit {name:?} is not allowed (allowed: nofile, nproc, core, stack, fsize)"
                ))
                }
            };
            let soft = m.get("Soft").and_then(Value::as_i64);
            let hard = m.get("Hard").and_then(Value::as_i64);
            match (soft, hard) {
                (Some(s), Some(h)) if 0 <= s && s <= h && h <= max => Ok(()),
                _ => c.refuse(format!(
                    "ulimit {name}: Soft and Hard must be integers with 0 <= Soft <= Hard <= {max}"
                )),
            }
        })?;
    }
    Ok(())
}

/// `Binds`: named volumes only (`volume:/path[:ro|rw|nocopy|z|Z]`).
pub fn binds(ctx: &mut Ctx<'_>, v: &mut Value) -> Outcome {
    each_string(ctx, v, |c, b| {
        let mut parts = b.split(':');
        let src = parts.next().unwrap_or("");
        let host_path = src.starts_with('/')
            || src.starts_with('.')
            || src.starts_with('~')
            || src.contains('\\');
        if host_path || parts.clone().next().is_none() {
            if c.allowance.dangerous {
                return Ok(());
            }
            return c.refuse(format!("bind mount of host path {src:?} is not allowed"));
        }
        let target = parts.next().unwrap_or("");
        if !target.starts_with('/') {
            return c.refuse(format!("the target {target:?} must be an absolute path"));
        }
        for opt in parts.flat_map(|o| o.split(',')) {
            if !matches!(opt, "ro" | "rw" | "nocopy" | "z" | "Z") && !c.allowance.dangerous {
                return c.refuse(format!(
                    "volume option {opt:?} is not allowed (ro, rw, nocopy, z, Z)"
                ));
            }
        }
        c.refs.push(Ref {
            kind: Kind::Volume,
            name: src.to_string(),
            at: At::Keep,
        });
        Ok(())
    })
}

/// Logging: drivers that keep logs on the daemon's disk, bounded; any other driver
/// sends the container's output from the host's network namespace.
pub fn log_config(ctx: &mut Ctx<'_>, v: &mut Value) -> Outcome {
    if ctx.allowance.dangerous {
        return Ok(());
    }
    let m = match v.as_object_mut() {
        Some(m) if m.keys().all(|k| k == "Type" || k == "Config") => m,
        _ => return ctx.refuse("LogConfig is {\"Type\", \"Config\"}"),
    };
    let mut typ = m
        .get("Type")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if typ.is_empty() {
        // The daemon's default driver may be one that connects out: name a safe one.
        typ = "local".into();
        m.insert("Type".into(), Value::from("local"));
    }
    if !matches!(typ.as_str(), "json-file" | "local" | "none") {
        return ctx.within(Step::Key("Type"), |c| {
            c.refuse(format!(
                "logging driver {typ:?} is not allowed (json-file, local or none: other drivers connect out from the host)"
            ))
        });
    }
    let config = obj(m.entry("Config").or_insert(Value::Null));
    for (k, val) in config.iter() {
        let s = val.as_str().unwrap_or("\u{0}");
        let ok = match k.as_str() {
            "max-size" => size_bytes(s).is_some_and(|n| n > 0 && n <= 1 << 30),
            "max-file" => s.parse::<u32>().is_ok_and(|n| (1..=20).contains(&n)),
            "compress" => matches!(s, "true" | "false"),
            _ => {
                return ctx.within(Step::Key("Config"), |c| {
                    c.refuse(format!(
                        "log option {k:?} is not allowed (max-size, max-file, compress)"
                    ))
                })
            }
        };
        if !ok {
            return ctx.within(Step::Key("Config"), |c| {
                c.refuse(format!(
                    "log option {k}={s:?} is out of bounds (max-size up to 1g, max-file 1 to 20, compress true or false)"
                ))
            });
        }
    }
    // json-file keeps everything by default: the host's disk is not the user's.
    if typ == "json-file" && !config.contains_key("max-size") {
        config.insert("max-size".into(), Value::from("100m"));
    }
    Ok(())
}

/// `10m`, `1g`, `512k`, `4096`: bytes.
fn size_bytes(s: &str) -> Option<u64> {
    let lower = s.to_ascii_lowercase();
    let t = lower.trim_end_matches('b');
    let (num, mult) = match t.char_indices().last()? {
        (i, 'k') => (&t[..i], 1u64 << 10),
        (i, 'm') => (&t[..i], 1 << 20),
        (i, 'g') => (&t[..i], 1 << 30),
        _ => (t, 1),
    };
    num.parse::<u64>().ok()?.checked_mul(mult)
}

/// A namespace mode: the given words, or `container:<owned>` (rewritten to its id).
fn namespace(ctx: &mut Ctx<'_>, v: &Value, words: &[&str], container: bool) -> Outcome {
    let Some(mode) = v.as_str() else {
        return ctx.refuse("must be a string");
    };
    if words.contains(&mode) {
        return Ok(());
    }
    if let (Some(target), true) = (mode.strip_prefix("container:"), container) {
        ctx.name_here(Kind::Container, target, "container:", "");
        return Ok(());
    }
    if ctx.allowance.dangerous {
        return Ok(());
    }
    ctx.refuse(format!(
        "{mode:?} is not allowed ({}{})",
        words
            .iter()
            .filter(|w| !w.is_empty())
            .map(|w| format!("{w:?}"))
            .collect::<Vec<_>>()
            .join(", "),
        if container {
            ", or container:<one of yours>"
        } else {
            ""
        }
    ))
}

pub fn ipc_mode(ctx: &mut Ctx<'_>, v: &mut Value) -> Outcome {
    namespace(ctx, v, &["", "none", "private", "shareable"], true)
}

pub fn pid_mode(ctx: &mut Ctx<'_>, v: &mut Value) -> Outcome {
    namespace(ctx, v, &[""], true)
}

pub fn cgroupns_mode(ctx: &mut Ctx<'_>, v: &mut Value) -> Outcome {
    namespace(ctx, v, &["", "private"], false)
}

/// `UTSMode`, `UsernsMode`: their only other value is the host's.
pub fn host_only_namespace(ctx: &mut Ctx<'_>, v: &mut Value) -> Outcome {
    namespace(ctx, v, &[""], false)
}

pub fn network_mode(ctx: &mut Ctx<'_>, v: &mut Value) -> Outcome {
    let mode = v.as_str().unwrap_or("").to_string();
    if matches!(mode.as_str(), "" | "default" | "bridge" | "none" | "host")
        || mode.starts_with("container:")
    {
        return namespace(ctx, v, &["", "default", "bridge", "none"], true);
    }
    // A network of the user's (or a shared one), written as its id.
    ctx.name_here(Kind::Network, &mode, "", "");
    Ok(())
}

/// Published ports: none, unless the operator allows them on loopback.
pub fn port_bindings(ctx: &mut Ctx<'_>, v: &mut Value) -> Outcome {
    if ctx.allowance.dangerous || !set(v) {
        return Ok(());
    }
    if ctx.allowance.publish == Publish::Off {
        return ctx.refuse("publishing ports on the host is not allowed (a grant may allow them on loopback: --publish loopback)");
    }
    let Some(ports) = v.as_object_mut() else {
        return ctx.refuse("must be an object");
    };
    for (port, bindings) in ports.iter_mut() {
        let Some(list) = bindings.as_array_mut() else {
            continue;
        };
        for b in list.iter_mut() {
            let m = match b.as_object_mut() {
                Some(m) if m.keys().all(|k| k == "HostIp" || k == "HostPort") => m,
                _ => {
                    return ctx.refuse(format!("{port}: a binding is {{\"HostIp\", \"HostPort\"}}"))
                }
            };
            match m.get("HostIp").and_then(Value::as_str).unwrap_or("") {
                "" => {
                    m.insert("HostIp".into(), Value::from("127.0.0.1"));
                }
                "127.0.0.1" => {}
                other => {
                    return ctx.refuse(format!(
                        "{port}: host address {other:?} is not allowed (ports are published on 127.0.0.1 only)"
                    ))
                }
            }
            let hp = m.get("HostPort").and_then(Value::as_str).unwrap_or("");
            let ok = hp.is_empty()
                || hp
                    .split('-')
                    .all(|p| p.parse::<u16>().is_ok_and(|n| n >= 1024));
            if !ok {
                return ctx.refuse(format!("{port}: host port {hp:?} must be 1024 or above"));
            }
        }
    }
    Ok(())
}

/// `VolumesFrom`: `container[:ro|:rw]`, owned, rewritten to its id.
pub fn volumes_from(ctx: &mut Ctx<'_>, v: &mut Value) -> Outcome {
    each_string(ctx, v, |c, s| {
        let (name, mode) = match s.rsplit_once(':') {
            Some((n, m @ ("ro" | "rw"))) => (n, format!(":{m}")),
            _ => (s, String::new()),
        };
        c.name_here(Kind::Container, name, "", &mode);
        Ok(())
    })
}

/// `Links`: `container[:alias]`, owned; written `id:alias` (the alias defaults to
/// the name the caller gave, as Docker's would).
pub fn links(ctx: &mut Ctx<'_>, v: &mut Value) -> Outcome {
    each_string(ctx, v, |c, s| {
        let (name, alias) = s.split_once(':').unwrap_or((s, s));
        let name = name.trim_start_matches('/');
        let alias = alias.trim_start_matches('/');
        c.name_here(Kind::Container, name, "", &format!(":{alias}"));
        Ok(())
    })
}

pub fn privileged(ctx: &mut Ctx<'_>, v: &mut Value) -> Outcome {
    let a = ctx.allowance;
    if set(v) && !(a.dangerous && a.privileged) {
        return ctx.refuse("privileged needs a privileged grant that allows dangerous flags");
    }
    if !v.is_boolean() {
        return ctx.refuse("must be true or false");
    }
    Ok(())
}

pub fn security_opt(ctx: &mut Ctx<'_>, v: &mut Value) -> Outcome {
    each_string(ctx, v, |c, opt| {
        let plain = opt.replace(':', "=");
        if matches!(
            plain.as_str(),
            "no-new-privileges" | "no-new-privileges=true"
        ) || c.allowance.dangerous
        {
            return Ok(());
        }
        c.refuse(format!("{opt:?} is not allowed (only no-new-privileges)"))
    })
}

/// `Tmpfs`: `{"/path": "size=64m,noexec"}` with plain mount options.
pub fn tmpfs(ctx: &mut Ctx<'_>, v: &mut Value) -> Outcome {
    each_entry(ctx, v, |c, path, opts| {
        if !path.starts_with('/') {
            return c.refuse("must be an absolute path");
        }
        for o in opts.split(',').filter(|o| !o.is_empty()) {
            let (k, val) = o.split_once('=').unwrap_or((o, ""));
            let ok = match k {
                "rw" | "ro" | "noexec" | "exec" | "nosuid" | "suid" | "nodev" => val.is_empty(),
                "size" => size_bytes(val).is_some(),
                "mode" => u32::from_str_radix(val, 8).is_ok(),
                "uid" | "gid" | "nr_inodes" => val.parse::<u64>().is_ok(),
                _ => false,
            };
            if !ok && !c.allowance.dangerous {
                return c.refuse(format!("tmpfs option {o:?} is not allowed"));
            }
        }
        Ok(())
    })
}

pub fn runtime(ctx: &mut Ctx<'_>, v: &mut Value) -> Outcome {
    match v.as_str() {
        Some("" | "runc") => Ok(()),
        Some(_) if ctx.allowance.dangerous => Ok(()),
        _ => ctx.refuse(format!("runtime {v} is not allowed (runc)")),
    }
}

pub fn present_is_dangerous(ctx: &mut Ctx<'_>, _v: &mut Value) -> Outcome {
    // Reached only when not null.
    if ctx.allowance.dangerous {
        return Ok(());
    }
    ctx.refuse("not allowed unless the grant allows dangerous flags (an empty list unmasks /proc)")
}

/// `Dns`: servers the container queries from its own namespace; loopback and
/// link-local servers would be the host's.
pub fn dns(ctx: &mut Ctx<'_>, v: &mut Value) -> Outcome {
    each_string(ctx, v, |c, s| match s.parse::<IpAddr>() {
        Ok(ip) if !(ip.is_loopback() || ip.is_unspecified() || link_local(&ip)) => Ok(()),
        _ if c.allowance.dangerous => Ok(()),
        _ => c.refuse(format!(
            "{s:?} is not a DNS server address the limited socket allows"
        )),
    })
}

fn link_local(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    }
}

static MOUNT: fields::Table = fields::Table {
    name: "a mount",
    fields: &[
        (
            "Type",
            fields::Rule::OneOf(&["volume", "tmpfs", "bind", "npipe", "cluster", "image"]),
        ),
        ("Source", fields::Rule::Text),
        ("Target", fields::Rule::Text),
        ("ReadOnly", fields::Rule::Bool),
        ("Consistency", fields::Rule::Text),
        ("BindOptions", fields::Rule::Dangerous),
        ("VolumeOptions", fields::Rule::Object(&VOLUME_OPTIONS)),
        ("ImageOptions", fields::Rule::Dangerous),
        ("TmpfsOptions", fields::Rule::Object(&TMPFS_OPTIONS)),
        ("ClusterOptions", fields::Rule::Dangerous),
    ],
};
static VOLUME_OPTIONS: fields::Table = fields::Table {
    name: "VolumeOptions",
    fields: &[
        ("NoCopy", fields::Rule::Bool),
        ("Labels", fields::Rule::Own(labels)),
        ("Subpath", fields::Rule::Own(subpath)),
        ("DriverConfig", fields::Rule::Dangerous),
    ],
};
static TMPFS_OPTIONS: fields::Table = fields::Table {
    name: "TmpfsOptions",
    fields: &[
        ("SizeBytes", fields::Rule::Int(0, i64::MAX)),
        ("Mode", fields::Rule::Int(0, 0o7777)),
        ("Options", fields::Rule::Dangerous),
    ],
};

pub fn subpath(ctx: &mut Ctx<'_>, v: &mut Value) -> Outcome {
    match v.as_str() {
        Some(s) if !s.starts_with('/') && !s.split('/').any(|p| p == "..") => Ok(()),
        _ => ctx.refuse("must be a relative path inside the volume"),
    }
}

/// `Mounts`: volumes (owned, or anonymous and counted) and tmpfs; anything else
/// reaches the host.
pub fn mounts(ctx: &mut Ctx<'_>, v: &mut Value) -> Outcome {
    let Some(items) = v.as_array_mut() else {
        return ctx.refuse("must be a list");
    };
    for (i, m) in items.iter_mut().enumerate() {
        ctx.within(Step::Index(i), |c| {
            fields::walk(c, &MOUNT, m)?;
            let typ = m
                .get("Type")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let source = m
                .get("Source")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let target = m.get("Target").and_then(Value::as_str).unwrap_or("");
            if !target.starts_with('/') {
                return c.refuse("Target must be an absolute path");
            }
            match typ.as_str() {
                "volume" if source.is_empty() => c.anonymous += 1,
                "volume" => c.refs.push(Ref {
                    kind: Kind::Volume,
                    name: source,
                    at: At::Keep,
                }),
                "tmpfs" if source.is_empty() => {}
                "tmpfs" => return c.refuse("a tmpfs mount has no Source"),
                _ if c.allowance.dangerous => {}
                other => {
                    return c.refuse(format!(
                        "a {other:?} mount is not allowed (volume or tmpfs)"
                    ))
                }
            }
            Ok(())
        })?;
    }
    Ok(())
}

/// `Aliases`: names other containers resolve; on a shared network they could take
/// a service's name (the hub's), so only on the user's own networks.
pub fn aliases(ctx: &mut Ctx<'_>, v: &mut Value) -> Outcome {
    if !v.as_array().is_some_and(|a| a.iter().all(Value::is_string)) {
        return ctx.refuse("must be a list of strings");
    }
    if set(v) && ctx.shared_endpoint && !ctx.allowance.dangerous {
        return ctx.refuse("aliases on a shared network are not allowed");
    }
    Ok(())
}

/// `NetworkingConfig.EndpointsConfig`: `{network: EndpointSettings}`; each network
/// owned or shared, rewritten to its id.
pub fn endpoints_config(ctx: &mut Ctx<'_>, v: &mut Value) -> Outcome {
    let Some(eps) = v.as_object_mut() else {
        return ctx.refuse("must be an object");
    };
    for (name, ep) in eps.iter_mut() {
        ctx.shared_endpoint = ctx.allowance.shared_networks.iter().any(|n| n == name);
        let r = ctx.within(Step::Key(name), |c| fields::walk(c, &fields::ENDPOINT, ep));
        ctx.shared_endpoint = false;
        r?;
        // After what the endpoint names: their pointers pass through this key,
        // which the rewrite renames.
        if !matches!(name.as_str(), "bridge" | "none" | "default") {
            ctx.refs.push(Ref {
                kind: Kind::Network,
                name: name.clone(),
                at: At::Key {
                    pointer: ctx.pointer.clone(),
                },
            });
        }
    }
    Ok(())
}

/// `Volumes`: `{"/path": {}}`, one anonymous volume each.
pub fn anonymous_volumes(ctx: &mut Ctx<'_>, v: &mut Value) -> Outcome {
    let Some(m) = v.as_object() else {
        return ctx.refuse("must be an object");
    };
    for k in m.keys() {
        if !k.starts_with('/') {
            return ctx.within(Step::Key(k), |c| c.refuse("must be an absolute path"));
        }
    }
    ctx.anonymous += m.len();
    Ok(())
}

/// Labels: strings, none of privledger's.
pub fn labels(ctx: &mut Ctx<'_>, v: &mut Value) -> Outcome {
    each_entry(ctx, v, |c, k, _| {
        if k.to_ascii_lowercase().starts_with(RESERVED_PREFIX) {
            return c.refuse(format!("label {k:?} is privledger's to set"));
        }
        Ok(())
    })
}

/// A volume's or network's name: not one that reads as an id.
pub fn resource_name(ctx: &mut Ctx<'_>, v: &mut Value) -> Outcome {
    match v.as_str() {
        Some(s) if looks_like_id(s) => ctx.refuse(format!(
            "{s:?} could be taken for an id; choose a name that is not 12 or more hex digits"
        )),
        Some(_) => Ok(()),
        None => ctx.refuse("must be a string"),
    }
}

/// `IPAM`: the default driver with the daemon's own pools; a subnet of the caller's
/// choosing could be the host's own.
pub fn ipam(ctx: &mut Ctx<'_>, v: &mut Value) -> Outcome {
    if ctx.allowance.dangerous {
        return Ok(());
    }
    let Some(m) = v.as_object() else {
        return ctx.refuse("must be an object");
    };
    for (k, val) in m {
        let ok = match k.as_str() {
            "Driver" => matches!(val.as_str(), Some("" | "default")) || val.is_null(),
            "Config" if !ctx.allowance.network_pools.is_empty() => {
                return ctx.within(Step::Key(k), |c| ipam_config(c, val));
            }
            "Config" | "Options" => !set(val),
            _ => false,
        };
        if !ok {
            return ctx.within(Step::Key(k), |c| {
                c.refuse("IPAM configuration is not allowed: networks take the daemon's own address pools")
            });
        }
    }
    Ok(())
}

/// `IPAM.Config` under operator pools: each subnet inside one of them, a range and
/// gateway inside the subnet, nothing else.
fn ipam_config(ctx: &mut Ctx<'_>, v: &Value) -> Outcome {
    let Some(items) = v.as_array() else {
        return ctx.refuse("must be a list");
    };
    let pools = ctx.allowance.network_pools.clone();
    let shown = pools
        .iter()
        .map(Ipv4Net::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    for (i, item) in items.iter().enumerate() {
        ctx.within(Step::Index(i), |c| {
            let m =
                match item.as_object() {
                    Some(m)
                        if m.keys()
                            .all(|k| matches!(k.as_str(), "Subnet" | "IPRange" | "Gateway")) =>
                    {
                        m
                    }
                    _ => return c.refuse(
                        "a pool is {\"Subnet\", \"IPRange\", \"Gateway\"} (no AuxiliaryAddresses)",
                    ),
                };
            let text = |k: &str| m.get(k).and_then(Value::as_str).unwrap_or("");
            let subnet: Ipv4Net = match text("Subnet").parse() {
                Ok(n) if pools.iter().any(|p| p.covers(n)) => n,
                _ => {
                    return c.refuse(format!(
                        "subnet {:?} is not inside the pools the operator allows ({shown})",
                        text("Subnet")
                    ))
                }
            };
            let range = text("IPRange");
            if !range.is_empty() && !range.parse::<Ipv4Net>().is_ok_and(|r| subnet.covers(r)) {
                return c.refuse(format!("IPRange {range:?} is not inside {subnet}"));
            }
            let gw = text("Gateway");
            if !gw.is_empty() && !gw.parse().is_ok_and(|ip| subnet.holds(ip)) {
                return c.refuse(format!("Gateway {gw:?} is not inside {subnet}"));
            }
            Ok(())
        })?;
    }
    Ok(())
}

pub fn connect_container(ctx: &mut Ctx<'_>, v: &mut Value) -> Outcome {
    match v.as_str() {
        Some(s) if !s.is_empty() => {
            ctx.name_here(Kind::Container, s, "", "");
            Ok(())
        }
        _ => ctx.refuse("the request names no container"),
    }
}

// --- caps on the resulting values -------------------------------------------------

fn int(h: &Map<String, Value>, k: &str) -> i64 {
    h.get(k).and_then(Value::as_i64).unwrap_or(0)
}

/// Memory, CPU, pids and shared memory within the grant's caps. At create
/// (`current` is `None`) an absent memory, CPU or pids limit is set to the cap; at
/// update only what the body sends changes (Docker keeps a field sent as 0), and the
/// caps are checked on the values the container will have.
fn caps(
    h: &mut Map<String, Value>,
    a: &Allowance,
    current: Option<&Map<String, Value>>,
) -> Outcome {
    if a.dangerous {
        // Dangerous flags lift the field rules, not the resource caps.
    }
    let now = |k: &str| {
        let sent = int(h, k);
        if sent != 0 || current.is_none() {
            sent
        } else {
            current.map_or(0, |c| int(c, k))
        }
    };
    let sent = |k: &str| int(h, k) != 0;
    let (mem, swap, reservation) = (now("Memory"), now("MemorySwap"), now("MemoryReservation"));
    let (nano, quota, period) = (now("NanoCpus"), now("CpuQuota"), now("CpuPeriod"));
    let (pids, shm) = (now("PidsLimit"), int(h, "ShmSize"));
    let cap_nano = (a.cpu_cores * 1e9) as i64;
    let creating = current.is_none();

    if mem > a.mem_bytes {
        return refuse(
            "memory cap",
            format!("Memory {mem} exceeds the cap of {} bytes", a.mem_bytes),
        );
    }
    if swap != 0 && (swap < mem.max(1) || swap > a.mem_bytes.saturating_mul(2)) {
        return refuse(
            "memory cap",
            format!(
                "MemorySwap {swap} must lie between Memory and twice the memory cap ({})",
                a.mem_bytes.saturating_mul(2)
            ),
        );
    }
    if reservation > a.mem_bytes {
        return refuse(
            "memory cap",
            format!("MemoryReservation {reservation} exceeds the memory cap"),
        );
    }
    if shm > a.mem_bytes {
        return refuse(
            "memory cap",
            format!(
                "ShmSize {shm} exceeds the memory cap of {} bytes",
                a.mem_bytes
            ),
        );
    }
    if quota != 0 && (sent("CpuQuota") || sent("CpuPeriod")) {
        let p = if period == 0 { 100_000 } else { period };
        if quota as f64 / p as f64 > a.cpu_cores {
            return refuse(
                "cpu cap",
                format!("CpuQuota/CpuPeriod exceed {} cores", a.cpu_cores),
            );
        }
    } else if (sent("CpuQuota") || sent("CpuPeriod")) && creating {
        return refuse("cpu cap", "CpuPeriod without CpuQuota");
    }
    if nano > cap_nano {
        return refuse(
            "cpu cap",
            format!("NanoCpus {nano} exceeds {} cores", a.cpu_cores),
        );
    }
    if pids > a.pids {
        return refuse(
            "pids cap",
            format!("PidsLimit {pids} exceeds the cap of {}", a.pids),
        );
    }
    if creating {
        if mem == 0 {
            h.insert("Memory".into(), Value::from(a.mem_bytes));
        }
        if nano == 0 && quota == 0 {
            h.insert("NanoCpus".into(), Value::from(cap_nano));
        }
        if pids == 0 {
            h.insert("PidsLimit".into(), Value::from(a.pids));
        }
    }
    Ok(())
}

/// Stamps owner and decision labels (the caller's were checked by `labels`).
fn stamp_labels(labels: &mut Value, stamp: &Stamp) {
    let m = obj(labels);
    m.insert(LABEL_OWNER.into(), Value::String(stamp.owner.clone()));
    if let Some(d) = &stamp.decision {
        m.insert(
            crate::ledger::LABEL_DECISION.into(),
            Value::String(d.clone()),
        );
    }
}

// --- the bodies -------------------------------------------------------------------

/// `POST /containers/create`.
/// A commit's config (`container.Config`, nothing of the host's): the create table's
/// fields but `HostConfig` and `NetworkingConfig`, the owner stamped on its labels.
/// No body keeps the container's own config, which already carries them.
pub fn commit_config(mut body: Value, a: &Allowance, stamp: &Stamp) -> Result<Checked, Refusal> {
    let mut ctx = Ctx::new(a);
    if body.is_null() {
        return Ok(checked(body, ctx));
    }
    for k in ["HostConfig", "NetworkingConfig"] {
        if body.get(k).is_some() {
            return refuse(k, "a commit's config holds no host settings");
        }
    }
    fields::walk(&mut ctx, &fields::CONTAINER_CREATE, &mut body)?;
    stamp_labels(obj(&mut body).entry("Labels").or_insert(Value::Null), stamp);
    Ok(checked(body, ctx))
}

pub fn container_create(mut body: Value, a: &Allowance, stamp: &Stamp) -> Result<Checked, Refusal> {
    let mut ctx = Ctx::new(a);
    fields::walk(&mut ctx, &fields::CONTAINER_CREATE, &mut body)?;
    let root = obj(&mut body);
    stamp_labels(root.entry("Labels").or_insert(Value::Null), stamp);
    caps(
        obj(root.entry("HostConfig").or_insert(Value::Null)),
        a,
        None,
    )?;
    Ok(checked(body, ctx))
}

/// `POST /containers/{id}/update`, against the container's current `HostConfig`.
pub fn container_update(
    mut body: Value,
    a: &Allowance,
    current: &Value,
) -> Result<Checked, Refusal> {
    let mut ctx = Ctx::new(a);
    fields::walk(&mut ctx, &fields::CONTAINER_UPDATE, &mut body)?;
    let empty = Map::new();
    let cur = current.as_object().unwrap_or(&empty);
    caps(obj(&mut body), a, Some(cur))?;
    Ok(checked(body, ctx))
}

/// `POST /containers/{id}/exec`.
pub fn exec_create(mut body: Value, a: &Allowance) -> Result<Checked, Refusal> {
    let mut ctx = Ctx::new(a);
    fields::walk(&mut ctx, &fields::EXEC_CREATE, &mut body)?;
    Ok(checked(body, ctx))
}

/// `POST /exec/{id}/start`.
pub fn exec_start(mut body: Value, a: &Allowance) -> Result<Checked, Refusal> {
    let mut ctx = Ctx::new(a);
    fields::walk(&mut ctx, &fields::EXEC_START, &mut body)?;
    Ok(checked(body, ctx))
}

/// `POST /volumes/create`.
pub fn volume_create(mut body: Value, a: &Allowance, stamp: &Stamp) -> Result<Checked, Refusal> {
    let mut ctx = Ctx::new(a);
    fields::walk(&mut ctx, &fields::VOLUME_CREATE, &mut body)?;
    stamp_labels(obj(&mut body).entry("Labels").or_insert(Value::Null), stamp);
    Ok(checked(body, ctx))
}

/// `POST /networks/create`: a duplicate name is always refused by the daemon, so
/// that a name keeps meaning one network.
pub fn network_create(mut body: Value, a: &Allowance, stamp: &Stamp) -> Result<Checked, Refusal> {
    let mut ctx = Ctx::new(a);
    fields::walk(&mut ctx, &fields::NETWORK_CREATE, &mut body)?;
    let m = obj(&mut body);
    let name = m.get("Name").and_then(Value::as_str).unwrap_or("");
    if name.is_empty() {
        return refuse("Name", "a network needs a name");
    }
    if a.shared_networks.iter().any(|n| n == name) {
        return refuse("Name", format!("{name:?} is a shared network's name"));
    }
    m.insert("CheckDuplicate".into(), Value::Bool(true));
    stamp_labels(m.entry("Labels").or_insert(Value::Null), stamp);
    Ok(checked(body, ctx))
}

/// `POST /networks/{id}/connect|disconnect`: the container must be owned; `shared`
/// says whether the network is a shared one rather than the caller's own.
pub fn network_connect(mut body: Value, a: &Allowance, shared: bool) -> Result<Checked, Refusal> {
    let mut ctx = Ctx::new(a);
    ctx.shared_endpoint = shared;
    if !body.get("Container").is_some_and(set) {
        return refuse("Container", "the request names no container");
    }
    fields::walk(&mut ctx, &fields::CONNECT, &mut body)?;
    Ok(checked(body, ctx))
}

/// A container's new name (create's `name=`, rename's): not one that reads as an
/// id, and not another user's spawner name (`jupyter-<user>`), which the watcher and
/// raw-socket users would take for that user's.
pub fn container_name(name: &str, user: &str) -> Outcome {
    let n = name.trim_start_matches('/');
    if looks_like_id(n) {
        return refuse("name", format!("{n:?} could be taken for a container id; choose a name that is not 12 or more hex digits"));
    }
    let labels = std::collections::BTreeMap::new();
    if let Some(other) = crate::docker::spawner_names::user_of(&labels, n) {
        if other != user {
            return refuse(
                "name",
                format!("{n:?} is the name JupyterHub gives {other:?}'s server"),
            );
        }
    }
    Ok(())
}

/// Writes `id` where `r` says the name was.
pub fn rewrite(body: &mut Value, r: &Ref, id: &str) {
    match &r.at {
        At::Keep => {}
        At::Str {
            pointer,
            prefix,
            suffix,
        } => {
            if let Some(v) = body.pointer_mut(pointer) {
                *v = Value::String(format!("{prefix}{id}{suffix}"));
            }
        }
        At::Key { pointer } => {
            if let Some(Value::Object(m)) = body.pointer_mut(pointer) {
                if let Some(v) = m.remove(&r.name) {
                    m.insert(id.to_string(), v);
                }
            }
        }
    }
    // NetworkMode names the same network as its endpoint's key: one id for both.
    if r.kind == Kind::Network {
        if let Some(v) = body.pointer_mut("/HostConfig/NetworkMode") {
            if v.as_str() == Some(r.name.as_str()) {
                *v = Value::String(id.to_string());
            }
        }
    }
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
            pids: 1024,
            publish: Publish::Off,
            shared_networks: vec!["hub".into()],
            network_pools: Vec::new(),
            build: false,
            pull_allow: Vec::new(),
            push_allow: Vec::new(),
        }
    }

    fn stamp() -> Stamp {
        Stamp {
            owner: "alice".into(),
            decision: Some("abcd1234-7".into()),
        }
    }

    fn create(body: Value) -> Result<Checked, Refusal> {
        container_create(body, &limited(), &stamp())
    }

    fn host(h: Value) -> Result<Checked, Refusal> {
        create(json!({"Image": "busybox", "HostConfig": h}))
    }

    #[test]
    fn a_plain_create_is_stamped_and_capped() {
        let c = host(json!({"AutoRemove": true})).unwrap();
        assert_eq!(c.body["Labels"][LABEL_OWNER], "alice");
        assert_eq!(c.body["Labels"]["privledger.decision"], "abcd1234-7");
        assert_eq!(c.body["HostConfig"]["Memory"], 8i64 << 30);
        assert_eq!(c.body["HostConfig"]["NanoCpus"], 2_000_000_000i64);
        assert_eq!(c.body["HostConfig"]["PidsLimit"], 1024);
        assert!(c.refs.is_empty());
        let c = create(json!({"Image": "busybox", "HostConfig": null})).unwrap();
        assert_eq!(c.body["HostConfig"]["Memory"], 8i64 << 30);
    }

    /// What the docker CLI sends for `docker run busybox` (API 1.41, zeros and
    /// nulls everywhere) passes.
    #[test]
    fn the_docker_clis_own_create_passes() {
        let body: Value = serde_json::from_str(
            r#"{
            "Hostname": "", "Domainname": "", "User": "", "AttachStdin": false,
            "AttachStdout": true, "AttachStderr": true, "Tty": false, "OpenStdin": false,
            "StdinOnce": false, "Env": null, "Cmd": ["true"], "Image": "busybox",
            "Volumes": {}, "WorkingDir": "", "Entrypoint": null, "OnBuild": null, "Labels": {},
            "HostConfig": {
                "Binds": null, "ContainerIDFile": "", "LogConfig": {"Type": "", "Config": {}},
                "NetworkMode": "default", "PortBindings": {}, "RestartPolicy": {"Name": "no", "MaximumRetryCount": 0},
                "AutoRemove": false, "VolumeDriver": "", "VolumesFrom": null, "CapAdd": null, "CapDrop": null,
                "CgroupnsMode": "", "Dns": [], "DnsOptions": [], "DnsSearch": [], "ExtraHosts": null,
                "GroupAdd": null, "IpcMode": "", "Cgroup": "", "Links": null, "OomScoreAdj": 0, "PidMode": "",
                "Privileged": false, "PublishAllPorts": false, "ReadonlyRootfs": false, "SecurityOpt": null,
                "UTSMode": "", "UsernsMode": "", "ShmSize": 0, "ConsoleSize": [0, 0], "Isolation": "",
                "CpuShares": 0, "Memory": 0, "NanoCpus": 0, "CgroupParent": "", "BlkioWeight": 0,
                "BlkioWeightDevice": [], "BlkioDeviceReadBps": null, "BlkioDeviceWriteBps": null,
                "BlkioDeviceReadIOps": null, "BlkioDeviceWriteIOps": null, "CpuPeriod": 0, "CpuQuota": 0,
                "CpuRealtimePeriod": 0, "CpuRealtimeRuntime": 0, "CpusetCpus": "", "CpusetMems": "",
                "Devices": [], "DeviceCgroupRules": null, "DeviceRequests": null, "KernelMemory": 0,
                "KernelMemoryTCP": 0, "MemoryReservation": 0, "MemorySwap": 0, "MemorySwappiness": null,
                "OomKillDisable": false, "PidsLimit": null, "Ulimits": null, "CpuCount": 0, "CpuPercent": 0,
                "IOMaximumIOps": 0, "IOMaximumBandwidth": 0, "MaskedPaths": null, "ReadonlyPaths": null
            },
            "NetworkingConfig": {"EndpointsConfig": {}}
        }"#,
        )
        .unwrap();
        let c = create(body).unwrap();
        assert_eq!(c.anonymous, 0);
        assert_eq!(c.body["HostConfig"]["PidsLimit"], 1024);
    }

    /// The finding's classes: every field that reaches the host, and every value of
    /// a bounded field outside its bounds, refused naming the field.
    #[test]
    fn every_host_escaping_setting_is_refused_naming_its_field() {
        let cases = [
            (json!({"Privileged": true}), "HostConfig.Privileged"),
            (json!({"Binds": ["/etc:/host-etc"]}), "HostConfig.Binds[0]"),
            (json!({"Binds": ["/data"]}), "HostConfig.Binds[0]"),
            (json!({"Binds": ["v:/d:rshared"]}), "HostConfig.Binds[0]"),
            (
                json!({"Mounts": [{"Type": "bind", "Source": "/", "Target": "/h"}]}),
                "HostConfig.Mounts[0]",
            ),
            (
                json!({"Mounts": [{"Type": "npipe", "Source": "x", "Target": "/h"}]}),
                "HostConfig.Mounts[0]",
            ),
            (
                json!({"Mounts": [{"Type": "image", "Source": "x", "Target": "/h"}]}),
                "HostConfig.Mounts[0]",
            ),
            (
                json!({"Mounts": [{"Type": "volume", "Source": "v", "Target": "/h", "VolumeOptions": {"DriverConfig": {"Name": "local", "Options": {"o": "bind", "device": "/"}}}}]}),
                "HostConfig.Mounts[0].VolumeOptions.DriverConfig",
            ),
            (
                json!({"Mounts": [{"Type": "volume", "Source": "v", "Target": "/h", "VolumeOptions": {"Subpath": "../../etc"}}]}),
                "HostConfig.Mounts[0].VolumeOptions.Subpath",
            ),
            (
                json!({"Mounts": [{"Type": "volume", "Source": "v", "Target": "/h", "BindOptions": {"Propagation": "rshared"}}]}),
                "HostConfig.Mounts[0].BindOptions",
            ),
            (json!({"NetworkMode": "host"}), "HostConfig.NetworkMode"),
            (json!({"PidMode": "host"}), "HostConfig.PidMode"),
            (json!({"IpcMode": "host"}), "HostConfig.IpcMode"),
            (json!({"UTSMode": "host"}), "HostConfig.UTSMode"),
            (json!({"UsernsMode": "host"}), "HostConfig.UsernsMode"),
            (json!({"CgroupnsMode": "host"}), "HostConfig.CgroupnsMode"),
            (json!({"Cgroup": "container:x"}), "HostConfig.Cgroup"),
            (json!({"CapAdd": ["SYS_ADMIN"]}), "HostConfig.CapAdd"),
            (
                json!({"Capabilities": ["CAP_SYS_ADMIN"]}),
                "HostConfig.Capabilities",
            ),
            (
                json!({"Devices": [{"PathOnHost": "/dev/sda", "PathInContainer": "/dev/sda", "CgroupPermissions": "rwm"}]}),
                "HostConfig.Devices",
            ),
            (
                json!({"DeviceRequests": [{"Count": -1, "Capabilities": [["gpu"]]}]}),
                "HostConfig.DeviceRequests",
            ),
            (
                json!({"DeviceCgroupRules": ["a *:* rwm"]}),
                "HostConfig.DeviceCgroupRules",
            ),
            (
                json!({"SecurityOpt": ["seccomp=unconfined"]}),
                "HostConfig.SecurityOpt[0]",
            ),
            (
                json!({"SecurityOpt": ["apparmor:unconfined"]}),
                "HostConfig.SecurityOpt[0]",
            ),
            (
                json!({"SecurityOpt": ["label=disable"]}),
                "HostConfig.SecurityOpt[0]",
            ),
            (
                json!({"SecurityOpt": ["systempaths=unconfined"]}),
                "HostConfig.SecurityOpt[0]",
            ),
            (json!({"CgroupParent": "/"}), "HostConfig.CgroupParent"),
            (json!({"Runtime": "kata"}), "HostConfig.Runtime"),
            (
                json!({"Sysctls": {"kernel.shm_rmid_forced": "1"}}),
                "HostConfig.Sysctls",
            ),
            (json!({"VolumeDriver": "rexray"}), "HostConfig.VolumeDriver"),
            (json!({"MaskedPaths": []}), "HostConfig.MaskedPaths"),
            (json!({"ReadonlyPaths": []}), "HostConfig.ReadonlyPaths"),
            (
                json!({"Annotations": {"io.kubernetes.cri-o.Devices": "/dev/sda"}}),
                "HostConfig.Annotations",
            ),
            (
                json!({"StorageOpt": {"size": "1T"}}),
                "HostConfig.StorageOpt",
            ),
            (
                json!({"ContainerIDFile": "/etc/passwd"}),
                "HostConfig.ContainerIDFile",
            ),
            // Logging drivers that connect out from the host's namespace.
            (
                json!({"LogConfig": {"Type": "syslog", "Config": {"syslog-address": "tcp://127.0.0.1:55999"}}}),
                "HostConfig.LogConfig.Type",
            ),
            (
                json!({"LogConfig": {"Type": "syslog", "Config": {"syslog-address": "unixgram:///dev/log"}}}),
                "HostConfig.LogConfig.Type",
            ),
            (
                json!({"LogConfig": {"Type": "splunk", "Config": {"splunk-url": "http://10.0.0.1"}}}),
                "HostConfig.LogConfig.Type",
            ),
            (
                json!({"LogConfig": {"Type": "gelf"}}),
                "HostConfig.LogConfig.Type",
            ),
            (
                json!({"LogConfig": {"Type": "fluentd"}}),
                "HostConfig.LogConfig.Type",
            ),
            (
                json!({"LogConfig": {"Type": "journald"}}),
                "HostConfig.LogConfig.Type",
            ),
            (
                json!({"LogConfig": {"Type": "json-file", "Config": {"tag": "{{.ID}}"}}}),
                "HostConfig.LogConfig.Config",
            ),
            (
                json!({"LogConfig": {"Type": "json-file", "Config": {"max-size": "1t"}}}),
                "HostConfig.LogConfig.Config",
            ),
            (
                json!({"LogConfig": {"Type": "local", "Config": {"max-file": "100000"}}}),
                "HostConfig.LogConfig.Config",
            ),
            (
                json!({"LogConfig": {"Type": "json-file", "Other": 1}}),
                "HostConfig.LogConfig",
            ),
            // Unbounded fields.
            (json!({"PidsLimit": -1}), "HostConfig.PidsLimit"),
            (json!({"PidsLimit": 5000}), "pids cap"),
            (json!({"OomScoreAdj": -1000}), "HostConfig.OomScoreAdj"),
            (json!({"OomKillDisable": true}), "HostConfig.OomKillDisable"),
            (
                json!({"Ulimits": [{"Name": "memlock", "Soft": -1, "Hard": -1}]}),
                "HostConfig.Ulimits[0]",
            ),
            (
                json!({"Ulimits": [{"Name": "nofile", "Soft": -1, "Hard": -1}]}),
                "HostConfig.Ulimits[0]",
            ),
            (
                json!({"Ulimits": [{"Name": "nofile", "Soft": 10, "Hard": 5}]}),
                "HostConfig.Ulimits[0]",
            ),
            (
                json!({"Ulimits": [{"Name": "rtprio", "Soft": 99, "Hard": 99}]}),
                "HostConfig.Ulimits[0]",
            ),
            (json!({"ShmSize": 1i64 << 40}), "memory cap"),
            (
                json!({"CpuRealtimeRuntime": 950000}),
                "HostConfig.CpuRealtimeRuntime",
            ),
            (
                json!({"CpuRealtimePeriod": 1000000}),
                "HostConfig.CpuRealtimePeriod",
            ),
            (
                json!({"BlkioDeviceReadBps": [{"Path": "/dev/sda", "Rate": 1}]}),
                "HostConfig.BlkioDeviceReadBps",
            ),
            (
                json!({"BlkioWeightDevice": [{"Path": "/dev/sda", "Weight": 10}]}),
                "HostConfig.BlkioWeightDevice",
            ),
            (json!({"BlkioWeight": 5000}), "HostConfig.BlkioWeight"),
            (json!({"CpuShares": -1}), "HostConfig.CpuShares"),
            (
                json!({"MemorySwappiness": 1000}),
                "HostConfig.MemorySwappiness",
            ),
            (json!({"KernelMemory": 1}), "HostConfig.KernelMemory"),
            (
                json!({"CpusetCpus": "0-3; rm -rf"}),
                "HostConfig.CpusetCpus",
            ),
            (json!({"Memory": 1.5}), "HostConfig.Memory"),
            (json!({"Memory": "1g"}), "HostConfig.Memory"),
            (
                json!({"Memory": 18446744073709551615u64}),
                "HostConfig.Memory",
            ),
            // Published ports: off by default; PublishAllPorts always.
            (
                json!({"PortBindings": {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}]}}),
                "HostConfig.PortBindings",
            ),
            (
                json!({"PortBindings": {"80/tcp": [{"HostPort": "8080"}]}}),
                "HostConfig.PortBindings",
            ),
            (
                json!({"PublishAllPorts": true}),
                "HostConfig.PublishAllPorts",
            ),
            (json!({"Dns": ["127.0.0.53"]}), "HostConfig.Dns[0]"),
            (json!({"Dns": ["169.254.169.254"]}), "HostConfig.Dns[0]"),
            (
                json!({"Tmpfs": {"/t": "size=1m,dev"}}),
                "HostConfig.Tmpfs./t",
            ),
            (
                json!({"RestartPolicy": {"Name": "sometimes"}}),
                "HostConfig.RestartPolicy.Name",
            ),
            (json!({"Isolation": "hyperv"}), "HostConfig.Isolation"),
            (json!({"SomethingNew": 1}), "HostConfig.SomethingNew"),
        ];
        let mut dangerous = limited();
        dangerous.dangerous = true;
        for (h, field) in cases {
            let Err(e) = host(h.clone()) else {
                panic!("{h} must be refused")
            };
            assert_eq!(e.rule, field, "{h}: {e}");
            assert!(
                e.to_string().starts_with("refused by the limited socket ("),
                "{e}"
            );
            if h.get("Privileged").is_some() {
                let allowed =
                    container_create(json!({"HostConfig": h.clone()}), &dangerous, &stamp());
                assert!(allowed.is_err(), "privileged also needs a privileged grant");
                let mut both = dangerous.clone();
                both.privileged = true;
                container_create(json!({"HostConfig": h}), &both, &stamp()).unwrap();
            }
        }
        // Dangerous flags lift the host rules, not the caps or the table.
        for h in [
            json!({"Binds": ["/etc:/e"]}),
            json!({"NetworkMode": "host"}),
            json!({"LogConfig": {"Type": "syslog"}}),
            json!({"CapAdd": ["NET_ADMIN"]}),
        ] {
            container_create(json!({"HostConfig": h.clone()}), &dangerous, &stamp())
                .unwrap_or_else(|e| panic!("{h}: {e}"));
        }
        assert!(container_create(
            json!({"HostConfig": {"Memory": 9i64 << 30}}),
            &dangerous,
            &stamp()
        )
        .is_err());
        assert!(
            container_create(json!({"HostConfig": {"Nope": 1}}), &dangerous, &stamp()).is_err()
        );
    }

    #[test]
    fn the_config_and_endpoints_refuse_what_could_take_anothers_place() {
        for (body, field) in [
            (json!({"MacAddress": "02:42:ac:11:00:02"}), "MacAddress"),
            (
                json!({"Labels": {"privledger.owner": "bob"}}),
                "Labels.privledger.owner",
            ),
            (
                json!({"Labels": {"PRIVLEDGER.decision": "x"}}),
                "Labels.PRIVLEDGER.decision",
            ),
            (json!({"image": "busybox"}), "image"),
            (
                json!({"HostConfig": {"privileged": true}}),
                "HostConfig.privileged",
            ),
            (
                json!({"HostConfig": {"Privıleged": true}}),
                "HostConfig.Privıleged",
            ),
            (json!({"Volumes": {"data": {}}}), "Volumes.data"),
            (
                json!({"NetworkingConfig": {"EndpointsConfig": {"hub": {"IPAMConfig": {"IPv4Address": "172.17.0.2"}}}}}),
                "NetworkingConfig.EndpointsConfig.hub.IPAMConfig",
            ),
            (
                json!({"NetworkingConfig": {"EndpointsConfig": {"hub": {"Aliases": ["jupyterhub"]}}}}),
                "NetworkingConfig.EndpointsConfig.hub.Aliases",
            ),
            (
                json!({"NetworkingConfig": {"EndpointsConfig": {"mine": {"MacAddress": "02:42:ac:11:00:02"}}}}),
                "NetworkingConfig.EndpointsConfig.mine.MacAddress",
            ),
            (
                json!({"NetworkingConfig": {"EndpointsConfig": {"n": {"aliases": []}}}}),
                "NetworkingConfig.EndpointsConfig.n.aliases",
            ),
        ] {
            let e = create(body.clone()).expect_err(&body.to_string());
            assert_eq!(e.rule, field, "{body}: {e}");
        }
        let e = create(json!({"HostConfig": {"privileged": true}})).unwrap_err();
        assert!(
            e.reason.contains("\"Privileged\""),
            "a near miss names the field Docker would read: {e}"
        );
        // Aliases on one's own network are fine.
        create(json!({"NetworkingConfig": {"EndpointsConfig": {"mine": {"Aliases": ["db"]}}}}))
            .unwrap();
    }

    #[test]
    fn resources_named_in_the_body_are_returned_and_rewritten_to_ids() {
        let mut c = create(json!({
            "Image": "busybox",
            "HostConfig": {
                "Binds": ["data:/data:ro"],
                "Mounts": [{"Type": "volume", "Source": "cache", "Target": "/c"}, {"Type": "tmpfs", "Target": "/t"}],
                "VolumesFrom": ["other:ro"],
                "Links": ["/db:db", "web"],
                "NetworkMode": "mynet",
                "PidMode": "container:peer2",
                "IpcMode": "container:peer3",
            },
            "NetworkingConfig": {"EndpointsConfig": {"mynet": {"Aliases": ["a"], "Links": ["peer4:p"]}}}
        }))
        .unwrap();
        let mut names: Vec<(Kind, String)> =
            c.refs.iter().map(|r| (r.kind, r.name.clone())).collect();
        names.sort_by(|a, b| a.1.cmp(&b.1));
        assert_eq!(
            names,
            vec![
                (Kind::Volume, "cache".into()),
                (Kind::Volume, "data".into()),
                (Kind::Container, "db".into()),
                (Kind::Network, "mynet".into()),
                (Kind::Network, "mynet".into()),
                (Kind::Container, "other".into()),
                (Kind::Container, "peer2".into()),
                (Kind::Container, "peer3".into()),
                (Kind::Container, "peer4".into()),
                (Kind::Container, "web".into()),
            ]
        );
        for r in c.refs.clone() {
            let id = format!("ID-{}", r.name);
            rewrite(&mut c.body, &r, &id);
        }
        let h = &c.body["HostConfig"];
        assert_eq!(h["VolumesFrom"], json!(["ID-other:ro"]));
        assert_eq!(h["Links"], json!(["ID-db:db", "ID-web:web"]));
        assert_eq!(h["PidMode"], "container:ID-peer2");
        assert_eq!(h["IpcMode"], "container:ID-peer3");
        assert_eq!(h["NetworkMode"], "ID-mynet");
        assert_eq!(
            h["Binds"],
            json!(["data:/data:ro"]),
            "volumes are named by their id"
        );
        assert_eq!(
            c.body["NetworkingConfig"]["EndpointsConfig"]["ID-mynet"]["Links"],
            json!(["ID-peer4:p"]),
            "a link inside an endpoint is rewritten before its network's key"
        );
        assert!(c.body["NetworkingConfig"]["EndpointsConfig"]
            .get("mynet")
            .is_none());

        let mut c = network_connect(json!({"Container": "web"}), &limited(), false).unwrap();
        assert_eq!(c.refs.len(), 1);
        let r = c.refs[0].clone();
        rewrite(&mut c.body, &r, "full-id");
        assert_eq!(c.body["Container"], "full-id");
        assert!(network_connect(json!({}), &limited(), false).is_err());
        assert!(network_connect(
            json!({"Container": "w", "EndpointConfig": {"Aliases": ["hub"]}}),
            &limited(),
            true
        )
        .is_err());
    }

    #[test]
    fn anonymous_volumes_are_counted() {
        let c = create(json!({
            "Volumes": {"/a": {}, "/b": {}},
            "HostConfig": {"Mounts": [{"Type": "volume", "Target": "/c"}, {"Type": "volume", "Source": "named", "Target": "/d"}]}
        }))
        .unwrap();
        assert_eq!(c.anonymous, 3);
    }

    #[test]
    fn logs_stay_on_disk_and_bounded() {
        let c = host(json!({"LogConfig": {"Type": "json-file", "Config": {}}})).unwrap();
        assert_eq!(
            c.body["HostConfig"]["LogConfig"]["Config"]["max-size"],
            "100m"
        );
        let c = host(json!({"LogConfig": {"Type": "local", "Config": {"max-size": "10m", "max-file": "3", "compress": "true"}}})).unwrap();
        assert_eq!(c.body["HostConfig"]["LogConfig"]["Config"]["max-file"], "3");
        host(json!({"LogConfig": {"Type": "none"}})).unwrap();
        let c = host(json!({"LogConfig": {"Type": "", "Config": {}}})).unwrap();
        assert_eq!(
            c.body["HostConfig"]["LogConfig"]["Type"], "local",
            "not the daemon's default"
        );
    }

    #[test]
    fn ports_are_published_on_loopback_only_when_allowed() {
        let mut a = limited();
        a.publish = Publish::Loopback;
        let c = container_create(json!({"HostConfig": {"PortBindings": {"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}}}), &a, &stamp()).unwrap();
        assert_eq!(
            c.body["HostConfig"]["PortBindings"]["80/tcp"][0]["HostIp"],
            "127.0.0.1"
        );
        for bad in [
            json!({"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}]}),
            json!({"80/tcp": [{"HostIp": "::", "HostPort": "8080"}]}),
            json!({"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "22"}]}),
        ] {
            assert!(
                container_create(
                    json!({"HostConfig": {"PortBindings": bad.clone()}}),
                    &a,
                    &stamp()
                )
                .is_err(),
                "{bad}"
            );
        }
        assert!(container_create(
            json!({"HostConfig": {"PublishAllPorts": true}}),
            &a,
            &stamp()
        )
        .is_err());
    }

    #[test]
    fn caps_are_enforced_at_create() {
        assert!(host(json!({"Memory": (9i64 << 30)})).is_err());
        assert!(host(json!({"NanoCpus": 3_000_000_000i64})).is_err());
        assert!(host(json!({"CpuQuota": 300_000, "CpuPeriod": 100_000})).is_err());
        assert!(host(json!({"CpuQuota": -1})).is_err());
        assert!(host(json!({"MemorySwap": -1})).is_err());
        assert!(host(json!({"Memory": 1 << 30, "MemorySwap": 1 << 20})).is_err());
        let ok = host(json!({"CpuQuota": 100_000, "CpuPeriod": 100_000, "Memory": 1024})).unwrap();
        assert!(
            ok.body["HostConfig"].get("NanoCpus").is_none(),
            "quota and nano cpus conflict"
        );
        assert_eq!(ok.body["HostConfig"]["Memory"], 1024);
    }

    /// An update changes what it sends and nothing else; its caps hold on the
    /// values the container ends with.
    #[test]
    fn updates_inject_nothing_and_are_checked_on_the_result() {
        let current = json!({"Memory": 256 << 20, "NanoCpus": 0, "CpuQuota": 50_000, "CpuPeriod": 100_000, "PidsLimit": 1024});
        // docker update --restart unless-stopped: every resource sent as 0.
        let body = json!({"CpuShares": 0, "Memory": 0, "NanoCpus": 0, "CpuQuota": 0, "CpuPeriod": 0, "MemorySwap": 0, "PidsLimit": null, "RestartPolicy": {"Name": "unless-stopped", "MaximumRetryCount": 0}});
        let c = container_update(body.clone(), &limited(), &current).unwrap();
        assert_eq!(c.body, body, "nothing injected");
        // docker update --memory 200m --memory-swap 400m
        let body = json!({"Memory": 200 << 20, "MemorySwap": 400 << 20, "NanoCpus": 0});
        let c = container_update(body.clone(), &limited(), &current).unwrap();
        assert_eq!(c.body, body);
        // The result is checked: swap below the container's memory, quota past the cap.
        assert!(container_update(json!({"MemorySwap": 1 << 20}), &limited(), &current).is_err());
        assert!(
            container_update(json!({"CpuPeriod": 10_000}), &limited(), &current).is_err(),
            "50000/10000 = 5 cores"
        );
        assert!(container_update(json!({"Memory": (9i64 << 30)}), &limited(), &current).is_err());
        assert!(container_update(json!({"PidsLimit": -1}), &limited(), &current).is_err());
        assert!(container_update(
            json!({"Devices": [{"PathOnHost": "/dev/mem"}]}),
            &limited(),
            &current
        )
        .is_err());
        assert!(
            container_update(json!({"memory": 1}), &limited(), &current).is_err(),
            "case-folded"
        );
        assert!(container_update(json!({"CpuRealtimeRuntime": 1}), &limited(), &current).is_err());
    }

    #[test]
    fn volumes_networks_and_execs() {
        let v = volume_create(json!({"Name": "data"}), &limited(), &stamp()).unwrap();
        assert_eq!(v.body["Labels"][LABEL_OWNER], "alice");
        for bad in [
            json!({"Name": "d", "DriverOpts": {"o": "bind", "device": "/"}}),
            json!({"Name": "d", "Driver": "nfs"}),
            json!({"name": "d"}),
            json!({"Name": "0123456789abcdef"}),
            json!({"Name": "d", "Labels": {"privledger.owner": "bob"}}),
        ] {
            assert!(
                volume_create(bad.clone(), &limited(), &stamp()).is_err(),
                "{bad}"
            );
        }
        let n = network_create(
            json!({"Name": "n", "Driver": "bridge"}),
            &limited(),
            &stamp(),
        )
        .unwrap();
        assert_eq!(n.body["CheckDuplicate"], true);
        for (bad, field) in [
            (json!({"Name": "n", "Driver": "macvlan"}), "Driver"),
            (
                json!({"Name": "n", "Options": {"com.docker.network.bridge.name": "docker0"}}),
                "Options",
            ),
            (
                json!({"Name": "n", "IPAM": {"Config": [{"Subnet": "10.0.2.0/24"}]}}),
                "IPAM.Config",
            ),
            (
                json!({"Name": "n", "IPAM": {"Driver": "dhcp"}}),
                "IPAM.Driver",
            ),
            (
                json!({"Name": "n", "IPAM": {"Options": {"x": "y"}}}),
                "IPAM.Options",
            ),
            (json!({"Name": "n", "EnableIPv6": true}), "EnableIPv6"),
            (
                json!({"Name": "n", "ConfigFrom": {"Network": "host"}}),
                "ConfigFrom",
            ),
            (json!({"Name": "hub"}), "Name"),
            (json!({"Name": "abcdefabcdef"}), "Name"),
            (json!({"Driver": "bridge"}), "Name"),
        ] {
            let e = network_create(bad.clone(), &limited(), &stamp()).expect_err(&bad.to_string());
            assert_eq!(e.rule, field, "{bad}: {e}");
        }
        network_create(
            json!({"Name": "n", "IPAM": {"Driver": "default", "Config": [], "Options": {}}}),
            &limited(),
            &stamp(),
        )
        .unwrap();
        assert!(exec_create(json!({"Cmd": ["sh"], "Privileged": true}), &limited()).is_err());
        exec_create(
            json!({"Cmd": ["sh"], "AttachStdin": true, "Tty": true}),
            &limited(),
        )
        .unwrap();
        assert!(exec_start(
            json!({"Detach": false, "Tty": true, "Other": 1}),
            &limited()
        )
        .is_err());
    }

    #[test]
    fn subnets_come_from_the_operators_pools_only() {
        let mut a = limited();
        let ipam = |c: Value| json!({"Name": "n", "IPAM": {"Driver": "default", "Config": c}});
        assert!(
            network_create(ipam(json!([{"Subnet": "10.250.1.0/24"}])), &a, &stamp()).is_err(),
            "no pools: none"
        );
        a.network_pools = vec!["10.250.0.0/16".parse().unwrap()];
        network_create(ipam(json!([{"Subnet": "10.250.1.0/24", "Gateway": "10.250.1.1", "IPRange": "10.250.1.128/25"}])), &a, &stamp()).unwrap();
        for bad in [
            json!([{"Subnet": "10.0.2.0/24"}]),
            json!([{"Subnet": "10.250.0.0/15"}]),
            json!([{"Subnet": "10.250.1.0/24", "Gateway": "192.168.1.1"}]),
            json!([{"Subnet": "10.250.1.0/24", "IPRange": "10.250.2.0/24"}]),
            json!([{"Subnet": "10.250.1.0/24", "AuxiliaryAddresses": {"host": "10.250.1.2"}}]),
            json!([{"Subnet": "fd00::/64"}]),
            json!([{"Subnet": "10.250.1.1/24"}]),
        ] {
            let e = network_create(ipam(bad.clone()), &a, &stamp()).expect_err(&bad.to_string());
            assert!(e.rule.starts_with("IPAM.Config"), "{bad}: {e}");
        }
        assert!("10.0.0.0/33".parse::<Ipv4Net>().is_err());
        assert!("10.0.0.1/8".parse::<Ipv4Net>().is_err());
    }

    #[test]
    fn names_that_read_as_ids_or_as_anothers_server_are_refused() {
        for bad in [
            "0123456789ab",
            "/0123456789abcdef0123",
            "jupyter-bob",
            "jupyter-bob--gpu",
            "/jupyter-b-40x",
        ] {
            assert!(container_name(bad, "alice").is_err(), "{bad}");
        }
        for ok in [
            "web",
            "0123456789a",
            "jupyter-alice",
            "jupyter-alice--lab",
            "cafe-db",
            "0123456789abz",
        ] {
            container_name(ok, "alice").unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
    }

    /// Every field of moby's `Config`, `HostConfig` (with `Resources`) and
    /// `UpdateConfig` (api/types/container, v28.5.2 and master b985e231) is in the
    /// tables, with a rule: none falls through to "unknown", none is missed.
    #[test]
    fn the_tables_name_every_field_of_mobys_types() {
        let resources = [
            "CpuShares",
            "Memory",
            "NanoCpus",
            "CgroupParent",
            "BlkioWeight",
            "BlkioWeightDevice",
            "BlkioDeviceReadBps",
            "BlkioDeviceWriteBps",
            "BlkioDeviceReadIOps",
            "BlkioDeviceWriteIOps",
            "CpuPeriod",
            "CpuQuota",
            "CpuRealtimePeriod",
            "CpuRealtimeRuntime",
            "CpusetCpus",
            "CpusetMems",
            "Devices",
            "DeviceCgroupRules",
            "DeviceRequests",
            "KernelMemory",
            "KernelMemoryTCP",
            "MemoryReservation",
            "MemorySwap",
            "MemorySwappiness",
            "OomKillDisable",
            "PidsLimit",
            "Ulimits",
            "CpuCount",
            "CpuPercent",
            "IOMaximumIOps",
            "IOMaximumBandwidth",
        ];
        let host_config = [
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
            "Mounts",
            "MaskedPaths",
            "ReadonlyPaths",
            "Init",
            "Capabilities",
        ];
        let config = [
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
            "OnBuild",
            "Labels",
            "StopSignal",
            "StopTimeout",
            "Shell",
            "MacAddress",
            "HostConfig",
            "NetworkingConfig",
        ];
        let endpoint = [
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
        ];
        let network = [
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
        ];
        let tables: [(&fields::Table, Vec<&str>); 6] = [
            (
                &fields::HOST_CONFIG,
                resources.iter().chain(&host_config).copied().collect(),
            ),
            (
                &fields::CONTAINER_UPDATE,
                resources
                    .iter()
                    .chain(&["RestartPolicy"])
                    .copied()
                    .collect(),
            ),
            (&fields::CONTAINER_CREATE, config.to_vec()),
            (&fields::ENDPOINT, endpoint.to_vec()),
            (&fields::NETWORK_CREATE, network.to_vec()),
            (
                &fields::VOLUME_CREATE,
                vec![
                    "Name",
                    "Driver",
                    "DriverOpts",
                    "Labels",
                    "ClusterVolumeSpec",
                ],
            ),
        ];
        for (table, moby) in tables {
            for f in &moby {
                assert!(
                    table.rule(f).is_some(),
                    "{}: moby's {f} has no rule",
                    table.name
                );
            }
            for (f, _) in table.fields {
                assert!(
                    moby.contains(f),
                    "{}: {f} is not a field of moby's type",
                    table.name
                );
            }
        }
    }
}
