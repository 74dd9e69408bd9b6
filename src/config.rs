//! Server configuration: a TOML file, overridden by flags and environment variables,
//! validated as a whole before any port is bound. Errors name the offending key.

pub mod cluster;
pub mod net;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::ledger::event::{GrantSpec, Limits, SocketAccess, SocketMode};
use crate::ledger::{LedgerConfig, SpawnConfig};

pub const ENV_CONFIG: &str = "PRIVLEDGER_CONFIG";
pub const ENV_DATA: &str = "PRIVLEDGER_DATA";
pub const ENV_LISTEN: &str = "PRIVLEDGER_LISTEN";
pub const ENV_UNIX_SOCKET: &str = "PRIVLEDGER_UNIX_SOCKET";
pub const ENV_CHECKPOINT_INTERVAL: &str = "PRIVLEDGER_CHECKPOINT_INTERVAL";
pub const ENV_STORAGE_CACHE_MB: &str = "PRIVLEDGER_STORAGE_CACHE_MB";
pub const ENV_MAX_REQUEST_BYTES: &str = "PRIVLEDGER_MAX_REQUEST_BYTES";
pub const ENV_HOST_SOCKET: &str = "PRIVLEDGER_HOST_SOCKET";
pub const ENV_CONTAINER_SOCKET: &str = "PRIVLEDGER_CONTAINER_SOCKET";
pub const ENV_LIMITED_HOST_DIR: &str = "PRIVLEDGER_LIMITED_HOST_DIR";
pub const ENV_LIMITED_CONTAINER_SOCKET: &str = "PRIVLEDGER_LIMITED_CONTAINER_SOCKET";
pub const ENV_BUILTIN_GROUPS: &str = "PRIVLEDGER_BUILTIN_GROUPS";
pub const ENV_DOCKER: &str = "PRIVLEDGER_DOCKER";
pub const ENV_DOCKER_ENDPOINT: &str = "PRIVLEDGER_DOCKER_ENDPOINT";
pub const ENV_PROXY: &str = "PRIVLEDGER_PROXY";
pub const ENV_PROXY_ALLOW_NETWORKS: &str = "PRIVLEDGER_PROXY_ALLOW_NETWORKS";
pub const ENV_PROXY_PEER_UIDS: &str = "PRIVLEDGER_PROXY_PEER_UIDS";
pub const ENV_PROXY_REVOKE_GRACE: &str = "PRIVLEDGER_PROXY_REVOKE_GRACE";
pub const ENV_PROXY_NETWORK_POOLS: &str = "PRIVLEDGER_PROXY_NETWORK_POOLS";
pub const ENV_PROXY_IMAGE_NAMESPACE: &str = "PRIVLEDGER_PROXY_IMAGE_NAMESPACE";
pub const ENV_PROXY_MAX_BUILD_CONTEXT: &str = "PRIVLEDGER_PROXY_MAX_BUILD_CONTEXT";
pub const ENV_ON_STALE_GRANT: &str = "PRIVLEDGER_ON_STALE_GRANT";
pub const ENV_DOCKER_ALLOW_NAMES: &str = "PRIVLEDGER_DOCKER_ALLOW_NAMES";
pub const ENV_DOCKER_ALLOW_LABELS: &str = "PRIVLEDGER_DOCKER_ALLOW_LABELS";
pub const ENV_SERVER: &str = "PRIVLEDGER_SERVER";
pub const ENV_TOKEN: &str = "PRIVLEDGER_TOKEN";
pub const ENV_TOKEN_FILE: &str = "PRIVLEDGER_TOKEN_FILE";
pub const ENV_LOG: &str = "PRIVLEDGER_LOG";
pub const ENV_METRICS_LISTEN: &str = "PRIVLEDGER_METRICS_LISTEN";
pub const ENV_TLS_CERT: &str = "PRIVLEDGER_TLS_CERT";
pub const ENV_TLS_KEY: &str = "PRIVLEDGER_TLS_KEY";
pub const ENV_TLS_CLIENT_CA: &str = "PRIVLEDGER_TLS_CLIENT_CA";
pub const ENV_TLS_CA: &str = "PRIVLEDGER_TLS_CA";
/// A client command's own certificate and key (for a server that requires one).
pub const ENV_CLIENT_CERT: &str = "PRIVLEDGER_CLIENT_CERT";
pub const ENV_CLIENT_KEY: &str = "PRIVLEDGER_CLIENT_KEY";
pub const ENV_UNIX_SOCKET_MODE: &str = "PRIVLEDGER_UNIX_SOCKET_MODE";
pub const ENV_UNIX_SOCKET_GROUP: &str = "PRIVLEDGER_UNIX_SOCKET_GROUP";

pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";
/// The port of [`DEFAULT_LISTEN`].
pub const DEFAULT_PORT: u16 = 50051;
pub const DEFAULT_BUILTIN_GROUP: &str = "docker-privileged";
/// Name of the admin token file written in the data directory on first start.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("configuration file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid configuration: `{key}`: {message}")]
    Invalid { key: String, message: String },
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        message: message.into(),
    }
}

/// The validated server configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// TCP address to serve on; `None` when disabled (`listen = "none"`).
    pub listen: Option<SocketAddr>,
    pub unix_socket: Option<PathBuf>,
    pub data_dir: PathBuf,
    /// Forensics: serve the stored ledger without writing anything (`--read-only`).
    pub read_only: bool,
    /// Accept a data directory owned by another user or writable by others.
    pub allow_unsafe_data_dir: bool,
    /// sled's page cache, in bytes. sled's own default (1 GiB) would let a full read of
    /// a large log (an audit catch-up) grow the process by a gigabyte.
    pub storage_cache_bytes: u64,
    pub ledger: LedgerConfig,
    pub builtin_groups: Vec<(String, GrantSpec)>,
    /// Largest request message accepted; larger ones get RESOURCE_EXHAUSTED.
    pub max_request_bytes: usize,
    /// Where to serve Prometheus metrics over HTTP; `None` (the default) disables them.
    pub metrics_listen: Option<SocketAddr>,
    pub docker: DockerConfig,
    /// TLS, the Unix socket's permissions, and client limits.
    pub net: net::NetConfig,
    /// Cluster mode on etcd; `None` (the default) is one node on its own store.
    pub cluster: Option<cluster::ClusterSettings>,
}

/// The Docker watcher's settings (`[docker]`).
#[derive(Debug, Clone, PartialEq)]
pub struct DockerConfig {
    /// Follow the daemon (on by default; it attaches whenever the endpoint answers).
    pub enabled: bool,
    pub endpoint: String,
    /// Stop a running container whose user lost the privilege it holds.
    pub stop_on_stale_grant: bool,
    /// Container names exempt from correlation (the hub, the ledger, ...).
    pub allow_names: Vec<String>,
    /// Labels (`key` or `key=value`) that exempt a container.
    pub allow_labels: Vec<(String, Option<String>)>,
    /// Serve the limited users' sockets (the Docker API proxy, DESIGN §6).
    pub proxy: bool,
    /// The limited sockets' settings (`[proxy]`).
    pub proxy_settings: crate::proxy::Settings,
}

impl Default for DockerConfig {
    fn default() -> Self {
        DockerConfig {
            enabled: true,
            endpoint: "unix:///var/run/docker.sock".into(),
            stop_on_stale_grant: false,
            allow_names: Vec::new(),
            allow_labels: Vec::new(),
            proxy: true,
            proxy_settings: crate::proxy::Settings::default(),
        }
    }
}

impl Config {
    /// The defaults, rooted at `data_dir` (for tests and embedding).
    pub fn with_data_dir(data_dir: impl Into<PathBuf>) -> Config {
        Config {
            listen: Some(std::net::SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT))),
            unix_socket: None,
            data_dir: data_dir.into(),
            read_only: false,
            allow_unsafe_data_dir: false,
            storage_cache_bytes: crate::store::DEFAULT_CACHE_BYTES,
            ledger: LedgerConfig::default(),
            builtin_groups: vec![(
                DEFAULT_BUILTIN_GROUP.to_string(),
                GrantSpec {
                    socket: SocketAccess::Raw,
                    socket_mode: SocketMode::Rw,
                    privileged: false,
                    limits: Limits::default(),
                },
            )],
            max_request_bytes: 64 * 1024,
            metrics_listen: None,
            docker: DockerConfig::default(),
            net: net::NetConfig::default(),
            cluster: None,
        }
    }

    pub fn admin_token_path(&self) -> PathBuf {
        self.data_dir.join(ADMIN_TOKEN_FILE)
    }

    /// Reads the file (when given) and applies the overrides on top.
    pub fn load(file: Option<&Path>, o: &Overrides) -> Result<Config, ConfigError> {
        let f = match file {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.to_path_buf(),
                    source,
                })?;
                Self::parse_file(p, &text)?
            }
            None => FileConfig::default(),
        };
        let mut cfg = Config::with_data_dir(default_data_dir());
        let listen = o.listen.clone().or(f.listen);
        if let Some(l) = listen {
            cfg.listen = parse_listen(&l)?;
        }
        cfg.unix_socket = o.unix_socket.clone().or(f.unix_socket);
        if let Some(d) = o.data_dir.clone().or(f.data_dir) {
            cfg.data_dir = d;
        }
        cfg.read_only = o.read_only;
        cfg.allow_unsafe_data_dir =
            o.allow_unsafe_data_dir || f.allow_unsafe_data_dir.unwrap_or(false);
        if let Some(n) = o.checkpoint_interval.or(f.checkpoint_interval) {
            if n == 0 {
                return Err(invalid("checkpoint_interval", "must be at least 1"));
            }
            cfg.ledger.checkpoint_interval = n;
        }
        if let Some(n) = o.storage_cache_mb.or(f.storage_cache_mb) {
            if !(1..=1024 * 1024).contains(&n) {
                return Err(invalid("storage_cache_mb", "must be from 1 to 1048576"));
            }
            cfg.storage_cache_bytes = n * 1024 * 1024;
        }
        if let Some(n) = o.max_request_bytes.or(f.max_request_bytes) {
            if !(1024..=64 * 1024 * 1024).contains(&n) {
                return Err(invalid(
                    "max_request_bytes",
                    "must be from 1024 to 67108864",
                ));
            }
            cfg.max_request_bytes = n;
        }
        if let Some(m) = o.metrics_listen.clone().or(f.metrics_listen) {
            cfg.metrics_listen = parse_metrics_listen(&m)?;
        }
        let fs = f.sockets.unwrap_or_default();
        let spawn = &mut cfg.ledger.spawn;
        let pick = |o: &Option<String>, f: Option<String>, d: &str| {
            o.clone().or(f).unwrap_or_else(|| d.to_string())
        };
        let d = SpawnConfig::default();
        spawn.host_socket = pick(&o.host_socket, fs.host_socket, &d.host_socket);
        spawn.container_socket = pick(
            &o.container_socket,
            fs.container_socket,
            &d.container_socket,
        );
        spawn.limited_host_dir = pick(
            &o.limited_host_dir,
            fs.limited_host_dir,
            &d.limited_host_dir,
        );
        spawn.limited_container_socket = pick(
            &o.limited_container_socket,
            fs.limited_container_socket,
            &d.limited_container_socket,
        );
        for (key, v) in [
            ("sockets.host_socket", &spawn.host_socket),
            ("sockets.container_socket", &spawn.container_socket),
            ("sockets.limited_host_dir", &spawn.limited_host_dir),
            (
                "sockets.limited_container_socket",
                &spawn.limited_container_socket,
            ),
        ] {
            check_path(key, v)?;
        }
        if let Some(spec) = &o.builtin_groups {
            cfg.builtin_groups = parse_builtin_spec(spec)?;
        } else if let Some(groups) = f.builtin_groups {
            cfg.builtin_groups = groups
                .into_iter()
                .enumerate()
                .map(|(i, g)| g.into_domain(i))
                .collect::<Result<_, _>>()?;
        }
        let mut seen = std::collections::HashSet::new();
        for (name, _) in &cfg.builtin_groups {
            if !seen.insert(name.clone()) {
                return Err(invalid(
                    "builtin_groups",
                    format!("group {name:?} is listed twice"),
                ));
            }
        }
        let fd = f.docker.unwrap_or_default();
        let d = &mut cfg.docker;
        if let Some(v) = o.docker.clone().or(fd.enabled) {
            d.enabled = word("docker.enabled", &v, ON_OFF, "on or off")?;
        }
        if let Some(e) = o.docker_endpoint.clone().or(fd.endpoint) {
            if !(e.starts_with("unix://")
                || e.starts_with('/')
                || e.starts_with("tcp://")
                || e.starts_with("http://"))
            {
                return Err(invalid(
                    "docker.endpoint",
                    format!(
                        "{e:?}: expected unix:///path, /path, tcp://host:port or http://host:port"
                    ),
                ));
            }
            d.endpoint = e;
        }
        if let Some(v) = o.proxy.clone().or(fd.proxy) {
            d.proxy = word("docker.proxy", &v, ON_OFF, "on or off")?;
        }
        if let Some(v) = o.on_stale_grant.clone().or(fd.on_stale_grant) {
            d.stop_on_stale_grant = word(
                "docker.on_stale_grant",
                &v,
                &[("alert", false), ("stop", true)],
                "alert or stop",
            )?;
        }
        let split = |v: &str| -> Vec<String> {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        };
        if let Some(n) = o
            .docker_allow_names
            .as_deref()
            .map(split)
            .or(fd.allow_names)
        {
            d.allow_names = n;
        }
        if let Some(l) = o
            .docker_allow_labels
            .as_deref()
            .map(split)
            .or(fd.allow_labels)
        {
            d.allow_labels = l
                .into_iter()
                .map(|l| match l.split_once('=') {
                    Some((k, v)) => (k.to_string(), Some(v.to_string())),
                    None => (l, None),
                })
                .collect();
        }
        let fp = f.proxy.unwrap_or_default();
        let ps = &mut cfg.docker.proxy_settings;
        if let Some(n) = o
            .proxy_allow_networks
            .as_deref()
            .map(split)
            .or(fp.allow_networks)
        {
            ps.allow_networks = n;
        }
        if let Some(u) = o
            .proxy_peer_uids
            .as_deref()
            .map(split)
            .or(fp.peer_uids.map(|v| v.iter().map(u32::to_string).collect()))
        {
            ps.peer_uids = u
                .iter()
                .map(|x| {
                    x.parse::<u32>()
                        .map_err(|_| invalid("proxy.peer_uids", format!("{x:?} is not a uid")))
                })
                .collect::<Result<_, _>>()?;
        }
        if let Some(g) = o.proxy_revoke_grace.clone().or(fp.revoke_grace) {
            let d = humantime::parse_duration(&g)
                .map_err(|e| invalid("proxy.revoke_grace", format!("{g:?}: {e}")))?;
            if d > std::time::Duration::from_secs(3600) {
                return Err(invalid("proxy.revoke_grace", format!("{g:?}: at most 1h")));
            }
            ps.revoke_grace = d;
        }
        if let Some(p) = o
            .proxy_network_pools
            .as_deref()
            .map(split)
            .or(fp.network_pools)
        {
            ps.network_pools = p
                .iter()
                .map(|x| {
                    x.parse()
                        .map_err(|e: String| invalid("proxy.network_pools", e))
                })
                .collect::<Result<_, _>>()?;
        }
        if let Some(t) = o.proxy_image_namespace.clone().or(fp.image_namespace) {
            ps.image_namespace = crate::ledger::image_ref::Namespace::parse(&t)
                .map_err(|e| invalid("proxy.image_namespace", e))?;
        }
        if let Some(m) = o.proxy_max_build_context.clone().or(fp.max_build_context) {
            ps.max_build_context = parse_size(&m)
                .filter(|n| (1 << 20..=1 << 40).contains(n))
                .ok_or_else(|| {
                    invalid(
                        "proxy.max_build_context",
                        format!("{m:?}: a size from 1MiB to 1TiB, like 512MiB or 2GiB"),
                    )
                })?;
        }
        cfg.net = net::load(
            net::FileNet {
                tls: f.tls,
                insecure_listen: f.insecure_listen,
                unix_socket_mode: f.unix_socket_mode,
                unix_socket_group: f.unix_socket_group,
                limits: f.limits,
            },
            &o.net,
        )?;
        if let Some(why) = cfg.listen.and_then(|a| net::plaintext_refusal(a, &cfg.net)) {
            return Err(invalid("listen", why));
        }
        cfg.cluster = cluster::load(f.cluster, &o.cluster, cfg.listen)?;
        if cfg.cluster.is_some() && cfg.read_only {
            return Err(invalid(
                "cluster.etcd_endpoints",
                "a read-only (forensic) server serves its own copy alone: leave out the cluster",
            ));
        }
        if cfg.listen.is_none() && cfg.unix_socket.is_none() {
            return Err(invalid(
                "listen",
                "nothing to listen on: set listen or unix_socket",
            ));
        }
        Ok(cfg)
    }

    fn parse_file(path: &Path, text: &str) -> Result<FileConfig, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }
}

/// The words a switch takes (`auto` is the watcher's old spelling of `on`).
const ON_OFF: &[(&str, bool)] = &[
    ("on", true),
    ("auto", true),
    ("true", true),
    ("off", false),
    ("false", false),
];

/// `v` as one of `words`, or an error naming `key` and what was `expected`.
fn word<T: Copy>(
    key: &str,
    v: &str,
    words: &[(&str, T)],
    expected: &str,
) -> Result<T, ConfigError> {
    words
        .iter()
        .find(|(w, _)| *w == v)
        .map(|(_, t)| *t)
        .ok_or_else(|| invalid(key, format!("{v:?}: expected {expected}")))
}

/// Settings given as flags or environment variables; they win over the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub listen: Option<String>,
    pub unix_socket: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
    pub read_only: bool,
    pub allow_unsafe_data_dir: bool,
    pub checkpoint_interval: Option<u64>,
    pub storage_cache_mb: Option<u64>,
    pub max_request_bytes: Option<usize>,
    pub host_socket: Option<String>,
    pub container_socket: Option<String>,
    pub limited_host_dir: Option<String>,
    pub limited_container_socket: Option<String>,
    /// `NAME=SOCKET[:MODE][:privileged]`, separated by `;` (e.g. `docker-privileged=raw:rw`).
    pub builtin_groups: Option<String>,
    pub metrics_listen: Option<String>,
    /// `on` or `off`.
    pub docker: Option<String>,
    pub docker_endpoint: Option<String>,
    pub proxy: Option<String>,
    /// `alert` or `stop`.
    pub on_stale_grant: Option<String>,
    /// Comma-separated container names.
    pub docker_allow_names: Option<String>,
    /// Comma-separated `key` or `key=value`.
    pub docker_allow_labels: Option<String>,
    pub proxy_allow_networks: Option<String>,
    pub proxy_peer_uids: Option<String>,
    pub proxy_revoke_grace: Option<String>,
    pub proxy_network_pools: Option<String>,
    pub proxy_image_namespace: Option<String>,
    pub proxy_max_build_context: Option<String>,
    pub net: net::NetOverrides,
    pub cluster: cluster::ClusterOverrides,
}

/// `$XDG_DATA_HOME/privledger`, else `$HOME/.local/share/privledger`, else
/// `./privledger-data`.
pub fn default_data_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("privledger");
    }
    if let Some(h) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(h).join(".local/share/privledger");
    }
    PathBuf::from("privledger-data")
}

fn parse_listen(s: &str) -> Result<Option<SocketAddr>, ConfigError> {
    if s == "none" {
        return Ok(None);
    }
    s.parse().map(Some).map_err(|_| {
        invalid(
            "listen",
            format!("{s:?} is not an address like 127.0.0.1:50051 (or \"none\")"),
        )
    })
}

fn parse_metrics_listen(s: &str) -> Result<Option<SocketAddr>, ConfigError> {
    if s == "none" || s.is_empty() {
        return Ok(None);
    }
    s.parse().map(Some).map_err(|_| {
        invalid(
            "metrics_listen",
            format!("{s:?} is not an address like 127.0.0.1:9464 (or \"none\")"),
        )
    })
}

fn check_path(key: &str, v: &str) -> Result<(), ConfigError> {
    if !v.starts_with('/') {
        return Err(invalid(key, format!("{v:?} must be an absolute path")));
    }
    if v.contains(':') || v.chars().any(char::is_control) {
        return Err(invalid(
            key,
            format!("{v:?} must not contain ':' or control characters"),
        ));
    }
    Ok(())
}

fn parse_builtin_spec(s: &str) -> Result<Vec<(String, GrantSpec)>, ConfigError> {
    const KEY: &str = "builtin_groups";
    let mut out = Vec::new();
    for part in s.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, rest) = part.split_once('=').ok_or_else(|| {
            invalid(
                KEY,
                format!("{part:?}: expected NAME=SOCKET[:MODE][:privileged]"),
            )
        })?;
        let mut spec = GrantSpec::default();
        for (i, tok) in rest.split(':').enumerate() {
            match (i, tok) {
                (0, t) => spec.socket = t.parse().map_err(|e: String| invalid(KEY, e))?,
                (_, "privileged") => spec.privileged = true,
                (_, t) => spec.socket_mode = t.parse().map_err(|e: String| invalid(KEY, e))?,
            }
        }
        let name = name.trim().to_string();
        validate_builtin(KEY, &name, &spec)?;
        out.push((name, spec));
    }
    Ok(out)
}

fn validate_builtin(key: &str, name: &str, spec: &GrantSpec) -> Result<(), ConfigError> {
    crate::ledger::names::group(name).map_err(|e| invalid(key, e.to_string()))?;
    crate::ledger::validate_spec(spec).map_err(|e| invalid(key, format!("group {name:?}: {e}")))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    unix_socket: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    allow_unsafe_data_dir: Option<bool>,
    checkpoint_interval: Option<u64>,
    storage_cache_mb: Option<u64>,
    max_request_bytes: Option<usize>,
    metrics_listen: Option<String>,
    sockets: Option<FileSockets>,
    builtin_groups: Option<Vec<FileBuiltin>>,
    docker: Option<FileDocker>,
    proxy: Option<FileProxy>,
    tls: Option<net::FileTls>,
    insecure_listen: Option<bool>,
    unix_socket_mode: Option<String>,
    unix_socket_group: Option<String>,
    limits: Option<net::FileLimits>,
    cluster: Option<cluster::FileCluster>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDocker {
    enabled: Option<String>,
    endpoint: Option<String>,
    on_stale_grant: Option<String>,
    proxy: Option<String>,
    allow_names: Option<Vec<String>>,
    allow_labels: Option<Vec<String>>,
}

/// `512MiB`, `2GiB`, `1048576`: a size in bytes.
fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let n: u64 = s[..digits].parse().ok()?;
    let unit: u64 = match s[digits..].trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(unit)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileProxy {
    allow_networks: Option<Vec<String>>,
    peer_uids: Option<Vec<u32>>,
    revoke_grace: Option<String>,
    network_pools: Option<Vec<String>>,
    image_namespace: Option<String>,
    max_build_context: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSockets {
    host_socket: Option<String>,
    container_socket: Option<String>,
    limited_host_dir: Option<String>,
    limited_container_socket: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileBuiltin {
    name: String,
    socket: String,
    socket_mode: Option<String>,
    #[serde(default)]
    privileged: bool,
    #[serde(default)]
    limits: FileLimits,
}

/// A built-in group's limits as the file gives them: unlike stored entries (which
/// must read fields of later versions), a key the server does not know is refused,
/// so a misspelt limit is not silently left at its default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLimits {
    max_containers: Option<u32>,
    max_volumes: Option<u32>,
    max_networks: Option<u32>,
    max_storage_gb: Option<f64>,
    cpu_cap_cores: Option<f64>,
    mem_cap_gb: Option<f64>,
    allow_dangerous_flags: Option<bool>,
    max_pids: Option<u32>,
    publish: Option<crate::ledger::event::PublishPorts>,
    allow_build: Option<bool>,
    #[serde(default)]
    pull_allow: Vec<String>,
    #[serde(default)]
    push_allow: Vec<String>,
}

impl From<FileLimits> for Limits {
    fn from(l: FileLimits) -> Limits {
        Limits {
            max_containers: l.max_containers,
            max_volumes: l.max_volumes,
            max_networks: l.max_networks,
            max_storage_gb: l.max_storage_gb,
            cpu_cap_cores: l.cpu_cap_cores,
            mem_cap_gb: l.mem_cap_gb,
            allow_dangerous_flags: l.allow_dangerous_flags,
            max_pids: l.max_pids,
            publish: l.publish,
            allow_build: l.allow_build,
            pull_allow: l.pull_allow,
            push_allow: l.push_allow,
        }
    }
}

impl FileBuiltin {
    fn into_domain(self, i: usize) -> Result<(String, GrantSpec), ConfigError> {
        let key = |k: &str| format!("builtin_groups[{i}].{k}");
        let spec = GrantSpec {
            socket: self
                .socket
                .parse()
                .map_err(|e: String| invalid(&key("socket"), e))?,
            socket_mode: match self.socket_mode {
                Some(m) => m
                    .parse()
                    .map_err(|e: String| invalid(&key("socket_mode"), e))?,
                None => SocketMode::Rw,
            },
            privileged: self.privileged,
            limits: self.limits.into(),
        };
        validate_builtin(&format!("builtin_groups[{i}]"), &self.name, &spec)?;
        Ok((self.name, spec))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(text: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, text).unwrap();
        Config::load(Some(&p), &Overrides::default())
    }

    #[test]
    fn a_builtin_groups_limits_are_read_and_a_misspelt_one_is_refused() {
        let ok = load_text(
            "[[builtin_groups]]\nname = \"builders\"\nsocket = \"limited\"\n\
             limits = { max_containers = 4, mem_cap_gb = 2.5 }\n",
        )
        .unwrap();
        let (_, spec) = &ok.builtin_groups[0];
        assert_eq!(spec.limits.max_containers, Some(4));
        assert_eq!(spec.limits.mem_cap_gb, Some(2.5));
        let e = load_text(
            "[[builtin_groups]]\nname = \"builders\"\nsocket = \"limited\"\n\
             limits = { max_contaners = 5 }\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("max_contaners"), "{e}");
    }

    #[test]
    fn full_file_parses_and_overrides_win() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(
            &p,
            r#"
listen = "127.0.0.1:7000"
data_dir = "/tmp/x"
checkpoint_interval = 50
storage_cache_mb = 32
[sockets]
host_socket = "/run/docker.sock"
[[builtin_groups]]
name = "docker-privileged"
socket = "raw"
socket_mode = "ro"
[[builtin_groups]]
name = "builders"
socket = "limited"
limits = { max_containers = 4, mem_cap_gb = 1.5 }
"#,
        )
        .unwrap();
        let o = Overrides {
            listen: Some("127.0.0.1:7001".into()),
            ..Overrides::default()
        };
        let c = Config::load(Some(&p), &o).unwrap();
        assert_eq!(c.listen.unwrap().port(), 7001);
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.ledger.checkpoint_interval, 50);
        assert_eq!(c.storage_cache_bytes, 32 * 1024 * 1024);
        assert_eq!(c.ledger.spawn.host_socket, "/run/docker.sock");
        assert_eq!(c.builtin_groups.len(), 2);
        assert_eq!(c.builtin_groups[0].1.socket_mode, SocketMode::Ro);
        assert_eq!(c.builtin_groups[1].1.limits.max_containers, Some(4));
        assert_eq!(c.metrics_listen, None, "metrics are opt-in");
    }

    #[test]
    fn metrics_listen_is_opt_in_and_checked() {
        let c = load_text("metrics_listen = \"127.0.0.1:9464\"").unwrap();
        assert_eq!(c.metrics_listen.unwrap().port(), 9464);
        let e = load_text("metrics_listen = \"nope\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`metrics_listen`"), "{e}");
    }

    #[test]
    fn the_limited_sockets_settings_are_read_and_checked() {
        let c = load_text(
            "[proxy]\nallow_networks = [\"jupyterhub\"]\npeer_uids = [0, 1000]\n\
             revoke_grace = \"5s\"\n\
             network_pools = [\"10.250.0.0/16\"]",
        )
        .unwrap();
        let p = &c.docker.proxy_settings;
        assert_eq!(p.allow_networks, vec!["jupyterhub".to_string()]);
        assert_eq!(p.peer_uids, vec![0, 1000]);
        assert_eq!(p.revoke_grace, std::time::Duration::from_secs(5));
        assert_eq!(p.network_pools[0].to_string(), "10.250.0.0/16");
        let d = load_text("").unwrap().docker.proxy_settings;
        assert_eq!(d, crate::proxy::Settings::default());
        assert_eq!(d.peer_uids, vec![0], "root alone by default");
        for (text, key) in [
            ("[proxy]\npublish = \"loopback\"", "publish"),
            (
                "[[builtin_groups]]\nname = \"g\"\nsocket = \"limited\"\nlimits = { publish = \"everywhere\" }",
                "expected `off` or `loopback`",
            ),
            ("[proxy]\nrevoke_grace = \"soon\"", "proxy.revoke_grace"),
            ("[proxy]\nrevoke_grace = \"2h\"", "proxy.revoke_grace"),
            ("[proxy]\nallow_network = []", "allow_network"),
            (
                "[proxy]\nnetwork_pools = [\"10.0.0.1/8\"]",
                "proxy.network_pools",
            ),
        ] {
            let e = load_text(text).unwrap_err().to_string();
            assert!(e.contains(key), "{text}: {e}");
        }
    }

    #[test]
    fn errors_name_the_key() {
        let e = load_text("lisen = \"x\"").unwrap_err().to_string();
        assert!(e.contains("lisen"), "{e}");
        let e = load_text("listen = \"nonsense\"").unwrap_err().to_string();
        assert!(e.contains("`listen`"), "{e}");
        for (text, key) in [
            ("checkpoint_interval = 0", "checkpoint_interval"),
            (
                "[[builtin_groups]]\nname = \"g\"\nsocket = \"root\"",
                "builtin_groups[0].socket",
            ),
            (
                "[docker]\non_stale_grant = \"kill\"",
                "docker.on_stale_grant",
            ),
            ("[docker]\nproxy = \"maybe\"", "docker.proxy"),
            (
                "[sockets]\nhost_socket = \"relative.sock\"",
                "sockets.host_socket",
            ),
        ] {
            let e = load_text(text).unwrap_err().to_string();
            assert!(e.contains(key), "{text}: {e}");
        }
    }

    #[test]
    fn tls_limits_and_the_unix_socket_are_checked_and_name_the_key() {
        let c = load_text(
            "listen = \"0.0.0.0:7000\"\n[tls]\ncert = \"/c.pem\"\nkey = \"/k.pem\"\n\
             [limits]\nrequest_timeout = \"5s\"\nstreams_per_token = 2",
        )
        .unwrap();
        assert_eq!(c.net.tls.as_ref().unwrap().key, PathBuf::from("/k.pem"));
        assert_eq!(
            c.net.limits.request_timeout,
            std::time::Duration::from_secs(5)
        );
        assert_eq!(c.net.limits.streams_per_token, 2);
        assert_eq!(c.net.unix_socket_mode, 0o660);
        for (text, key) in [
            (
                "listen = \"0.0.0.0:7000\"",
                "`listen`: refusing to serve plaintext",
            ),
            (
                "listen = \"[::]:7000\"",
                "`listen`: refusing to serve plaintext",
            ),
            ("[tls]\ncert = \"/c.pem\"", "`tls.key`"),
            ("[tls]\nclient_ca = \"/ca.pem\"", "`tls.client_ca`"),
            ("unix_socket_mode = \"999\"", "`unix_socket_mode`"),
            (
                "[limits]\nrequest_timeout = \"soon\"",
                "`limits.request_timeout`",
            ),
            ("[limits]\nmax_streams = 0", "`limits.max_streams`"),
            ("[limits]\nidle_timeout = \"1s\"", "`limits.idle_timeout`"),
            (
                "[limits]\nmax_header_bytes = 10",
                "`limits.max_header_bytes`",
            ),
        ] {
            let e = load_text(text).unwrap_err().to_string();
            assert!(e.contains(key), "{text}: {e}");
        }
        // Plaintext off loopback with the explicit opt-out, and on loopback, is fine.
        load_text("listen = \"0.0.0.0:7000\"\ninsecure_listen = true").unwrap();
        load_text("listen = \"127.0.0.2:7000\"").unwrap();
        load_text("listen = \"[::1]:7000\"").unwrap();
    }

    #[test]
    fn builtin_spec_from_flag_or_env() {
        let g = parse_builtin_spec("docker-privileged=raw:rw; gpu=none:privileged").unwrap();
        assert_eq!(g[0].1.socket, SocketAccess::Raw);
        assert!(g[1].1.privileged);
        assert!(
            parse_builtin_spec("x=none").is_err(),
            "a grant giving nothing"
        );
    }
}
