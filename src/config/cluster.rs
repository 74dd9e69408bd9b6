//! Cluster mode's settings (`[cluster]`, `--etcd-endpoints` and the rest): which
//! etcd, who this node is, where the others reach it, and the bounds of its lease and
//! of how stale it may answer. Without etcd endpoints there is no cluster.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{invalid, ConfigError};

pub const ENV_ETCD_ENDPOINTS: &str = "PRIVLEDGER_ETCD_ENDPOINTS";
pub const ENV_NODE_ID: &str = "PRIVLEDGER_NODE_ID";
pub const ENV_CLUSTER_NAME: &str = "PRIVLEDGER_CLUSTER_NAME";
pub const ENV_ADVERTISE_URL: &str = "PRIVLEDGER_ADVERTISE_URL";
pub const ENV_LEASE_TTL: &str = "PRIVLEDGER_LEASE_TTL";
pub const ENV_STALE_AFTER: &str = "PRIVLEDGER_STALE_AFTER";
pub const ENV_ETCD_CA: &str = "PRIVLEDGER_ETCD_CA";
pub const ENV_ETCD_CERT: &str = "PRIVLEDGER_ETCD_CERT";
pub const ENV_ETCD_KEY: &str = "PRIVLEDGER_ETCD_KEY";
pub const ENV_PEER_CA: &str = "PRIVLEDGER_PEER_CA";
pub const ENV_ARCHIVE_DIR: &str = "PRIVLEDGER_ARCHIVE_DIR";
pub const ENV_SEAL_AFTER: &str = "PRIVLEDGER_SEAL_AFTER";

/// The validated cluster settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterSettings {
    pub etcd_endpoints: Vec<String>,
    pub node_id: String,
    pub cluster_name: String,
    /// Where the other nodes send this node the writes it takes as writer; `None`:
    /// `http(s)://` the TCP address the server bound (its port once bound, for 0).
    pub advertise_url: Option<String>,
    /// The writer's lease: a writer that stops renewing it for this long is replaced.
    pub lease_ttl: Duration,
    /// Past this long without etcd, the node answers no privileged question.
    pub stale_after: Duration,
    /// TLS to etcd: the CA of its members, and this node's client certificate.
    pub etcd_ca: Option<PathBuf>,
    pub etcd_cert: Option<PathBuf>,
    pub etcd_key: Option<PathBuf>,
    /// The CA of the other nodes' certificates, for forwarded writes over TLS.
    pub peer_ca: Option<PathBuf>,
    /// The archive of sealed segments (a directory every node reads).
    pub archive_dir: Option<PathBuf>,
    /// Entries etcd holds before the writer seals the oldest.
    pub seal_after: u64,
}

/// About half a gigabyte of etcd at ~1 KB an entry: well inside etcd's default 2 GiB
/// quota, with room for revisions not yet compacted.
pub const DEFAULT_SEAL_AFTER: u64 = 500_000;

pub const DEFAULT_CLUSTER_NAME: &str = "privledger";
/// Short enough that a writer's `kill -9` is followed by a new writer within about
/// three seconds; etcd's own minimum lease is larger than one election timeout.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(2);
pub const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(10);

/// Flags and environment variables; they win over the file.
#[derive(Debug, Clone, Default)]
pub struct ClusterOverrides {
    /// Comma-separated URLs.
    pub etcd_endpoints: Option<String>,
    pub node_id: Option<String>,
    pub cluster_name: Option<String>,
    pub advertise_url: Option<String>,
    /// humantime durations (`2s`, `500ms`).
    pub lease_ttl: Option<String>,
    pub stale_after: Option<String>,
    pub etcd_ca: Option<PathBuf>,
    pub etcd_cert: Option<PathBuf>,
    pub etcd_key: Option<PathBuf>,
    pub peer_ca: Option<PathBuf>,
    pub archive_dir: Option<PathBuf>,
    pub seal_after: Option<u64>,
}

/// `[cluster]` in the configuration file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileCluster {
    etcd_endpoints: Option<Vec<String>>,
    node_id: Option<String>,
    cluster_name: Option<String>,
    advertise_url: Option<String>,
    lease_ttl: Option<String>,
    stale_after: Option<String>,
    etcd_ca: Option<PathBuf>,
    etcd_cert: Option<PathBuf>,
    etcd_key: Option<PathBuf>,
    peer_ca: Option<PathBuf>,
    archive_dir: Option<PathBuf>,
    seal_after: Option<u64>,
}

/// The cluster settings, or `None` without etcd endpoints. Without an advertised URL,
/// `listen` must be one the other nodes can reach.
pub(super) fn load(
    f: Option<FileCluster>,
    o: &ClusterOverrides,
    listen: Option<SocketAddr>,
) -> Result<Option<ClusterSettings>, ConfigError> {
    let f = f.unwrap_or_default();
    let endpoints: Vec<String> = match &o.etcd_endpoints {
        Some(list) => list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
        None => f.etcd_endpoints.clone().unwrap_or_default(),
    };
    if endpoints.is_empty() {
        let given = [
            ("node_id", o.node_id.is_some() || f.node_id.is_some()),
            (
                "advertise_url",
                o.advertise_url.is_some() || f.advertise_url.is_some(),
            ),
        ];
        if let Some((key, _)) = given.iter().find(|(_, g)| *g) {
            return Err(invalid(
                &format!("cluster.{key}"),
                "is a cluster setting: give cluster.etcd_endpoints too (or leave it out)",
            ));
        }
        return Ok(None);
    }
    for e in &endpoints {
        if !(e.starts_with("http://") || e.starts_with("https://")) {
            return Err(invalid(
                "cluster.etcd_endpoints",
                format!("{e:?}: expected a URL like http://127.0.0.1:2379"),
            ));
        }
    }
    let node_id = o.node_id.clone().or(f.node_id).ok_or_else(|| {
        invalid(
            "cluster.node_id",
            "cluster mode needs a node id, unique in the cluster (--node-id)",
        )
    })?;
    // Ids travel in a header (forwarded writes) and name etcd keys: token-name rules.
    crate::ledger::names::host(&node_id)
        .map_err(|e| invalid("cluster.node_id", format!("{node_id:?}: {e}")))?;
    let cluster_name = o
        .cluster_name
        .clone()
        .or(f.cluster_name)
        .unwrap_or_else(|| DEFAULT_CLUSTER_NAME.into());
    crate::ledger::names::host(&cluster_name)
        .map_err(|e| invalid("cluster.cluster_name", format!("{cluster_name:?}: {e}")))?;
    let advertise_url = match o.advertise_url.clone().or(f.advertise_url) {
        Some(u) if u.starts_with("http://") || u.starts_with("https://") => Some(u),
        Some(u) => {
            return Err(invalid(
                "cluster.advertise_url",
                format!("{u:?}: expected a URL like http://10.0.0.5:50051"),
            ))
        }
        None => match listen {
            Some(a) if !a.ip().is_unspecified() => None,
            _ => {
                return Err(invalid(
                    "cluster.advertise_url",
                    "the other nodes cannot reach this one at an unspecified or no TCP \
                     address: set the URL they should use (--advertise-url)",
                ))
            }
        },
    };
    let duration = |key: &str, v: Option<String>, d: Duration| -> Result<Duration, ConfigError> {
        match v {
            None => Ok(d),
            Some(s) => {
                humantime::parse_duration(&s).map_err(|e| invalid(key, format!("{s:?}: {e}")))
            }
        }
    };
    let lease_ttl = duration(
        "cluster.lease_ttl",
        o.lease_ttl.clone().or(f.lease_ttl),
        DEFAULT_LEASE_TTL,
    )?;
    if lease_ttl < Duration::from_secs(2) || lease_ttl.subsec_nanos() != 0 {
        return Err(invalid(
            "cluster.lease_ttl",
            "must be whole seconds, at least 2s (etcd's leases are in seconds, and etcd \
             lengthens shorter ones)",
        ));
    }
    let stale_after = duration(
        "cluster.stale_after",
        o.stale_after.clone().or(f.stale_after),
        DEFAULT_STALE_AFTER,
    )?;
    if stale_after < lease_ttl {
        return Err(invalid(
            "cluster.stale_after",
            "must be at least the lease TTL (a writer is replaced within it)",
        ));
    }
    let etcd_cert = o.etcd_cert.clone().or(f.etcd_cert);
    let etcd_key = o.etcd_key.clone().or(f.etcd_key);
    if etcd_cert.is_some() != etcd_key.is_some() {
        return Err(invalid(
            "cluster.etcd_cert",
            "a client certificate for etcd needs its key, and a key its certificate",
        ));
    }
    let seal_after = o.seal_after.or(f.seal_after).unwrap_or(DEFAULT_SEAL_AFTER);
    if seal_after < 2 {
        return Err(invalid("cluster.seal_after", "must be at least 2"));
    }
    Ok(Some(ClusterSettings {
        etcd_endpoints: endpoints,
        node_id,
        cluster_name,
        advertise_url,
        lease_ttl,
        stale_after,
        etcd_ca: o.etcd_ca.clone().or(f.etcd_ca),
        etcd_cert,
        etcd_key,
        peer_ca: o.peer_ca.clone().or(f.peer_ca),
        archive_dir: o.archive_dir.clone().or(f.archive_dir),
        seal_after,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local() -> Option<SocketAddr> {
        Some("127.0.0.1:50051".parse().unwrap())
    }

    fn with(endpoints: &str, node: Option<&str>) -> ClusterOverrides {
        ClusterOverrides {
            etcd_endpoints: Some(endpoints.into()),
            node_id: node.map(String::from),
            ..Default::default()
        }
    }

    #[test]
    fn without_endpoints_there_is_no_cluster() {
        assert_eq!(
            load(None, &ClusterOverrides::default(), local()).unwrap(),
            None
        );
    }

    #[test]
    fn a_cluster_node_gets_defaults_from_its_listen_address() {
        let c = load(
            None,
            &with("http://a:2379, http://b:2379", Some("n1")),
            local(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(c.etcd_endpoints, ["http://a:2379", "http://b:2379"]);
        assert_eq!(c.advertise_url, None, "the bound address, once bound");
        assert_eq!(c.cluster_name, DEFAULT_CLUSTER_NAME);
        assert_eq!(c.lease_ttl, DEFAULT_LEASE_TTL);
    }

    #[test]
    fn wrong_cluster_settings_name_their_key() {
        let cases: Vec<(ClusterOverrides, Option<SocketAddr>, &str)> = vec![
            (with("http://a:2379", None), local(), "cluster.node_id"),
            (
                with("a:2379", Some("n1")),
                local(),
                "cluster.etcd_endpoints",
            ),
            (
                with("http://a:2379", Some("bad id!")),
                local(),
                "cluster.node_id",
            ),
            (
                with("http://a:2379", Some("n1")),
                Some("0.0.0.0:50051".parse().unwrap()),
                "cluster.advertise_url",
            ),
            (
                ClusterOverrides {
                    lease_ttl: Some("500ms".into()),
                    ..with("http://a:2379", Some("n1"))
                },
                local(),
                "cluster.lease_ttl",
            ),
            (
                ClusterOverrides {
                    stale_after: Some("1s".into()),
                    ..with("http://a:2379", Some("n1"))
                },
                local(),
                "cluster.stale_after",
            ),
            (
                ClusterOverrides {
                    node_id: Some("n1".into()),
                    ..Default::default()
                },
                local(),
                "cluster.node_id",
            ),
        ];
        for (o, listen, key) in cases {
            match load(None, &o, listen) {
                Err(ConfigError::Invalid { key: k, .. }) => assert_eq!(k, key, "{o:?}"),
                other => panic!("{o:?}: {other:?}"),
            }
        }
    }
}
