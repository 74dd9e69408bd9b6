//! Cluster mode's wiring: connecting to etcd, and the API's view of this node (its
//! role, a channel to the writer, how stale it may be).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tonic::transport::Channel;

use crate::api::cluster::ClusterView;
use crate::client::ConnectOptions;
use crate::config::cluster::ClusterSettings;
use crate::etcd::{Cluster, ClusterConfig, Etcd, EtcdError, EtcdOptions};

/// Each call to one etcd member must be answered within this (a member that does not
/// is skipped for the next): well within the lease, so a renewal can try another.
const ETCD_CALL_TIMEOUT: Duration = Duration::from_millis(1500);

/// The cluster node for these settings (nothing is contacted yet); `advertise_url` is
/// where the other nodes reach this one.
pub fn connect(s: &ClusterSettings, advertise_url: String) -> Result<Arc<Cluster>, EtcdError> {
    let etcd = Etcd::connect(&EtcdOptions {
        endpoints: s.etcd_endpoints.clone(),
        tls: ConnectOptions {
            tls_ca: s.etcd_ca.clone(),
            tls_cert: s.etcd_cert.clone(),
            tls_key: s.etcd_key.clone(),
            timeout: None,
        },
        call_timeout: ETCD_CALL_TIMEOUT.min(s.lease_ttl / 2),
    })?;
    Ok(Cluster::new(
        etcd,
        ClusterConfig {
            node_id: s.node_id.clone(),
            cluster: s.cluster_name.clone(),
            advertise_url,
            lease_ttl: s.lease_ttl,
            stale_after: s.stale_after,
            archive_dir: s.archive_dir.clone(),
            seal_after: s.seal_after,
        },
    ))
}

/// The API's view of a cluster node.
pub struct NodeView {
    cluster: Arc<Cluster>,
    peers: ConnectOptions,
    /// The writer's URL and a channel to it, replaced when the writer changes.
    channel: Mutex<Option<(String, Channel)>>,
}

impl NodeView {
    pub fn new(cluster: Arc<Cluster>, peer_ca: Option<std::path::PathBuf>) -> NodeView {
        NodeView {
            cluster,
            peers: ConnectOptions {
                tls_ca: peer_ca,
                ..Default::default()
            },
            channel: Mutex::new(None),
        }
    }
}

impl ClusterView for NodeView {
    fn node_id(&self) -> &str {
        self.cluster.node_id()
    }

    fn role(&self) -> &'static str {
        self.cluster.role().name()
    }

    fn is_writer(&self) -> bool {
        matches!(self.cluster.role(), crate::etcd::Role::Writer { .. })
    }

    fn writer_id(&self) -> Option<String> {
        self.cluster.writer().map(|w| w.node_id)
    }

    fn writer_channel(&self) -> Result<Channel, String> {
        let w = self
            .cluster
            .writer()
            .ok_or_else(|| "no writer is elected in the cluster now".to_string())?;
        let mut cached = self
            .channel
            .lock()
            .map_err(|_| "the writer's channel is unusable".to_string())?;
        if let Some((url, ch)) = &*cached {
            if *url == w.url {
                return Ok(ch.clone());
            }
        }
        let ch = self
            .peers
            .endpoint(&w.url)
            .map_err(|e| format!("the writer (node {}) at {}: {e}", w.node_id, w.url))?
            .connect_lazy();
        *cached = Some((w.url, ch.clone()));
        Ok(ch)
    }

    fn writer_known(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        let mut roles = self.cluster.watch_role();
        Box::pin(async move {
            let _ = roles
                .wait_for(|r| !matches!(r, crate::etcd::Role::Follower { writer: None }))
                .await;
        })
    }

    fn stale(&self, head: u64) -> Option<String> {
        self.cluster.stale(head)
    }

    fn cluster_head(&self) -> u64 {
        self.cluster.etcd_head()
    }
}
