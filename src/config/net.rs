//! How the server faces the network: TLS, the Unix socket's permissions, and the
//! limits that keep slow, hostile or many clients from exhausting it (`[tls]`,
//! `unix_socket_mode`, `unix_socket_group`, `[limits]`).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{invalid, ConfigError};

/// The server's certificate and key, and (for mutual TLS) the CA client
/// certificates must chain to. All PEM files, re-read on SIGHUP or when they change.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// With a client CA, every client must present a certificate it signed.
    pub client_ca: Option<PathBuf>,
}

/// Limits on what clients may hold (every one bounded; the defaults suit a hub and a
/// few auditors on one host).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Open connections per listener; beyond it a new connection is closed at once.
    pub max_connections: usize,
    /// Requests handled at once in all; beyond it a request gets UNAVAILABLE at once.
    pub max_concurrent_requests: usize,
    /// Requests handled at once per connection; beyond it RESOURCE_EXHAUSTED at once.
    /// At most `max_concurrent_streams` anyway: a client multiplexing more calls over
    /// one connection waits for a free HTTP/2 stream on its own side.
    pub per_connection_requests: usize,
    /// HTTP/2 streams a client may open at once on one connection.
    pub max_concurrent_streams: u32,
    /// A unary request (its body included) must be answered within this.
    pub request_timeout: Duration,
    /// A TLS handshake, and a connection's first request, must arrive within this.
    pub handshake_timeout: Duration,
    /// A connection that sends nothing for this long is closed (a live client answers
    /// the server's keep-alive pings well within it).
    pub idle_timeout: Duration,
    /// HTTP/2 keep-alive pings, and how long an answer may take.
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    /// Largest header block (the authorization header included) of one request;
    /// beyond it that request fails, not the connection.
    pub max_header_bytes: u32,
    /// Open audit streams per token and in all.
    pub streams_per_token: usize,
    pub max_streams: usize,
    /// An audit stream whose consumer takes nothing for this long is ended.
    pub stream_stall_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            max_concurrent_requests: 512,
            per_connection_requests: 128,
            max_concurrent_streams: 128,
            request_timeout: Duration::from_secs(60),
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(20),
            max_header_bytes: 16 * 1024,
            streams_per_token: 16,
            max_streams: 256,
            stream_stall_timeout: Duration::from_secs(600),
        }
    }
}

/// The network settings, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct NetConfig {
    pub tls: Option<TlsConfig>,
    /// Serve plaintext on a non-loopback address (refused without it).
    pub insecure_listen: bool,
    pub unix_socket_mode: u32,
    /// A group name (from /etc/group) or a numeric gid given the Unix socket.
    pub unix_socket_group: Option<String>,
    pub limits: Limits,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            tls: None,
            insecure_listen: false,
            unix_socket_mode: 0o660,
            unix_socket_group: None,
            limits: Limits::default(),
        }
    }
}

/// What flags and environment variables say about the network.
#[derive(Debug, Clone, Default)]
pub struct NetOverrides {
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_client_ca: Option<PathBuf>,
    pub insecure_listen: bool,
    /// Octal, e.g. `660`.
    pub unix_socket_mode: Option<String>,
    pub unix_socket_group: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileTls {
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    client_ca: Option<PathBuf>,
}

/// `[limits]`: durations in humantime (`30s`, `10m`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileLimits {
    max_connections: Option<usize>,
    max_concurrent_requests: Option<usize>,
    per_connection_requests: Option<usize>,
    max_concurrent_streams: Option<u32>,
    request_timeout: Option<String>,
    handshake_timeout: Option<String>,
    idle_timeout: Option<String>,
    keepalive_interval: Option<String>,
    keepalive_timeout: Option<String>,
    max_header_bytes: Option<u32>,
    streams_per_token: Option<usize>,
    max_streams: Option<usize>,
    stream_stall_timeout: Option<String>,
}

/// The parts of the file this module reads.
#[derive(Debug, Default)]
pub(super) struct FileNet {
    pub tls: Option<FileTls>,
    pub insecure_listen: Option<bool>,
    pub unix_socket_mode: Option<String>,
    pub unix_socket_group: Option<String>,
    pub limits: Option<FileLimits>,
}

pub(super) fn load(f: FileNet, o: &NetOverrides) -> Result<NetConfig, ConfigError> {
    let mut n = NetConfig::default();
    let ft = f.tls.unwrap_or_default();
    let cert = o.tls_cert.clone().or(ft.cert);
    let key = o.tls_key.clone().or(ft.key);
    let client_ca = o.tls_client_ca.clone().or(ft.client_ca);
    n.tls = match (cert, key) {
        (Some(cert), Some(key)) => Some(TlsConfig {
            cert,
            key,
            client_ca,
        }),
        (None, None) if client_ca.is_none() => None,
        (None, None) => {
            return Err(invalid(
                "tls.client_ca",
                "a client CA needs the server's own certificate and key (tls.cert, tls.key)",
            ))
        }
        (Some(_), None) => return Err(invalid("tls.key", "tls.cert is set but tls.key is not")),
        (None, Some(_)) => return Err(invalid("tls.cert", "tls.key is set but tls.cert is not")),
    };
    n.insecure_listen = o.insecure_listen || f.insecure_listen.unwrap_or(false);
    if let Some(m) = o.unix_socket_mode.clone().or(f.unix_socket_mode) {
        n.unix_socket_mode = u32::from_str_radix(m.trim_start_matches("0o"), 8)
            .ok()
            .filter(|m| *m <= 0o777)
            .ok_or_else(|| {
                invalid(
                    "unix_socket_mode",
                    format!("{m:?} is not an octal mode such as 660"),
                )
            })?;
    }
    n.unix_socket_group = o.unix_socket_group.clone().or(f.unix_socket_group);
    let fl = f.limits.unwrap_or_default();
    let l = &mut n.limits;
    let count = |key: &str, v: Option<usize>, into: &mut usize| -> Result<(), ConfigError> {
        if let Some(v) = v {
            if v == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
            *into = v;
        }
        Ok(())
    };
    count(
        "limits.max_connections",
        fl.max_connections,
        &mut l.max_connections,
    )?;
    count(
        "limits.max_concurrent_requests",
        fl.max_concurrent_requests,
        &mut l.max_concurrent_requests,
    )?;
    count(
        "limits.per_connection_requests",
        fl.per_connection_requests,
        &mut l.per_connection_requests,
    )?;
    count(
        "limits.streams_per_token",
        fl.streams_per_token,
        &mut l.streams_per_token,
    )?;
    count("limits.max_streams", fl.max_streams, &mut l.max_streams)?;
    if let Some(v) = fl.max_concurrent_streams {
        if v == 0 {
            return Err(invalid(
                "limits.max_concurrent_streams",
                "must be at least 1",
            ));
        }
        l.max_concurrent_streams = v;
    }
    if let Some(v) = fl.max_header_bytes {
        if v < 1024 {
            return Err(invalid("limits.max_header_bytes", "must be at least 1024"));
        }
        l.max_header_bytes = v;
    }
    let dur = |key: &str, v: Option<String>, into: &mut Duration| -> Result<(), ConfigError> {
        if let Some(v) = v {
            let d = humantime::parse_duration(&v)
                .map_err(|e| invalid(key, format!("{v:?}: {e} (e.g. 30s, 10m)")))?;
            if d.is_zero() {
                return Err(invalid(key, "must be longer than zero"));
            }
            *into = d;
        }
        Ok(())
    };
    dur(
        "limits.request_timeout",
        fl.request_timeout,
        &mut l.request_timeout,
    )?;
    dur(
        "limits.handshake_timeout",
        fl.handshake_timeout,
        &mut l.handshake_timeout,
    )?;
    dur("limits.idle_timeout", fl.idle_timeout, &mut l.idle_timeout)?;
    dur(
        "limits.keepalive_interval",
        fl.keepalive_interval,
        &mut l.keepalive_interval,
    )?;
    dur(
        "limits.keepalive_timeout",
        fl.keepalive_timeout,
        &mut l.keepalive_timeout,
    )?;
    dur(
        "limits.stream_stall_timeout",
        fl.stream_stall_timeout,
        &mut l.stream_stall_timeout,
    )?;
    if l.idle_timeout <= l.keepalive_interval {
        return Err(invalid(
            "limits.idle_timeout",
            "must be longer than limits.keepalive_interval (a live client answers a ping \
             only when one is sent)",
        ));
    }
    Ok(n)
}

/// Why a plaintext listener on `addr` is refused, if it is.
pub fn plaintext_refusal(addr: std::net::SocketAddr, net: &NetConfig) -> Option<String> {
    if net.tls.is_some() || net.insecure_listen || addr.ip().is_loopback() {
        return None;
    }
    Some(format!(
        "refusing to serve plaintext gRPC on {addr}, which is not a loopback address: \
         bearer tokens and the audit trail would cross the network readable by anyone on \
         the path. Give --tls-cert and --tls-key (and --tls-client-ca for client \
         certificates), or --insecure-listen if something else (a TLS-terminating proxy, \
         a private network you trust) protects it"
    ))
}
