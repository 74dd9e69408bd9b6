//! What the ledger is configured with: spawn paths, checkpoint interval, and the
//! fixed names (labels, actors) other modules share.

/// Container label naming the decision a container was spawned under.
pub const LABEL_DECISION: &str = "privledger.decision";
/// Container label naming the user a container is for.
pub const LABEL_USER: &str = "privledger.user";
/// Label the limited socket stamps on everything a user creates through it.
pub const LABEL_OWNER: &str = "privledger.owner";
/// Actor of entries that record what the Docker daemon did.
pub const ACTOR_DOCKER: &str = "docker";
/// Actor of entries the server appends on its own.
pub const ACTOR_SYSTEM: &str = "system";

/// Paths used in the spawner fragments of a decision.
#[derive(Debug, Clone, PartialEq)]
pub struct SpawnConfig {
    /// The daemon socket on the host, bound for raw grants.
    pub host_socket: String,
    /// Where it appears in the container.
    pub container_socket: String,
    /// Host directory holding the per-user limited proxy sockets (`DIR/USER/docker.sock`).
    pub limited_host_dir: String,
    /// Where the limited socket appears in the container (and `DOCKER_HOST` points).
    pub limited_container_socket: String,
}

impl Default for SpawnConfig {
    fn default() -> Self {
        SpawnConfig {
            host_socket: "/var/run/docker.sock".into(),
            container_socket: "/var/run/docker.sock".into(),
            limited_host_dir: "/run/privledger/users".into(),
            limited_container_socket: "/run/privledger/docker.sock".into(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct LedgerConfig {
    /// Write a state checkpoint every this many entries (start-up replays at most this
    /// many; point-in-time queries replay at most this many).
    pub checkpoint_interval: u64,
    pub spawn: SpawnConfig,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        LedgerConfig {
            checkpoint_interval: 10_000,
            spawn: SpawnConfig::default(),
        }
    }
}
