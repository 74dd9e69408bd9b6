//! The command line's grammar: every command, flag, default and example, as clap
//! definitions (help, completions and the man page are generated from them).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{self, cluster, Overrides};

/// Exit codes, shown in `--help` and the man page (see [`super::Exit`]); the
/// README's table is this one, row for row (a test checks).
pub const EXIT_CODES: &str = "\
Exit codes:
  0   success
  1   the server refused or could not do the request (its message says why), or a local file could not be read or written
  2   verify: an entry does not verify (the first bad seq is printed)
  64  usage: the command line is wrong (unknown flag, missing or malformed value); nothing was sent
  69  the server could not be reached, or is unavailable (a retry may succeed);
      serve: its listen address is taken by another process
  77  not allowed: no token, an unknown, revoked or expired one, or its role may not do this

Environment: every flag with [env: NAME] can be set by that variable. With --json, output and errors are JSON (errors on stderr).";

#[derive(Debug, Parser)]
#[command(
    name = "privledger",
    version,
    about = "Decide which Docker privileges a user's container gets, and keep a tamper-evident ledger of why",
    long_about = "Decide which Docker privileges a user's container gets, and keep a tamper-evident ledger of why.\n\n\
                  `privledger serve` runs the service; every other command is a client of a running server \
                  (by default http://127.0.0.1:50051 with the admin token of the default data directory).",
    after_help = EXIT_CODES,
    propagate_version = true,
    disable_help_subcommand = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Cmd,
}

/// How client commands reach the server (offered on client commands only).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Connection")]
pub struct Connection {
    /// Server address: http://HOST:PORT, https://HOST:PORT, or HOST:PORT (plaintext).
    #[arg(long, global = true, env = config::ENV_SERVER, default_value = "http://127.0.0.1:50051", value_name = "URL")]
    pub server: String,
    /// Bearer token secret (prefer --token-file: arguments are visible to other users).
    #[arg(long, global = true, env = config::ENV_TOKEN, hide_env_values = true, value_name = "SECRET")]
    pub token: Option<String>,
    /// File holding the bearer token [default: admin.token in the default data
    /// directory, when readable].
    #[arg(long, global = true, env = config::ENV_TOKEN_FILE, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Print JSON instead of tables (errors too, on stderr).
    #[arg(long, global = true)]
    pub json: bool,
    /// The CA that signed an https:// server's certificate (PEM).
    #[arg(long, global = true, env = config::ENV_TLS_CA, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// A client certificate chain (PEM), for a server that requires one.
    #[arg(long, global = true, env = config::ENV_CLIENT_CERT, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, global = true, env = config::ENV_CLIENT_KEY, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Give up on a call the server has not answered within this long (30s, 2m).
    #[arg(long, global = true, default_value = "30s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub timeout: std::time::Duration,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Run the ledger service.
    #[command(after_help = "Examples:\n  \
        privledger serve\n  \
        privledger serve --config /etc/privledger/privledger.toml\n  \
        privledger serve --listen 0.0.0.0:50051 --tls-cert server.pem --tls-key server.key\n\n\
        Settings come from the flags, then PRIVLEDGER_* variables, then the --config file, then the defaults.")]
    Serve(Box<ServeArgs>),
    /// Run the Docker agent of this host for a remote ledger (DESIGN §8): follow the
    /// daemon into a local outbox and ship it, so nothing is lost while the ledger is
    /// away.
    #[command(after_help = "Examples:\n  \
        privledger token create docker-host-1 --role watcher   # on the ledger, once\n  \
        privledger watch --server https://ledger:50051 --token-file /etc/privledger/watcher.token --host-id docker-host-1\n\n\
        The token's name is the host id it may report for.")]
    Watch {
        #[command(flatten)]
        args: WatchArgs,
        #[command(flatten)]
        conn: Connection,
    },
    /// Groups and their members.
    Group {
        #[command(subcommand)]
        cmd: GroupCmd,
        #[command(flatten)]
        conn: Connection,
    },
    /// Issue, revoke and list grants.
    Grant {
        #[command(subcommand)]
        cmd: GrantCmd,
        #[command(flatten)]
        conn: Connection,
    },
    /// A user's effective access, now or at a past position, and the grants behind it.
    #[command(after_help = "Examples:\n  \
        privledger check alice\n  \
        privledger check alice --at 4410\n  \
        privledger check alice --at 2026-03-01T14:00:00+01:00")]
    Check {
        /// The user (a JupyterHub username, exactly as given).
        user: String,
        /// A seq, or an RFC 3339 time (2026-03-01T14:00:00Z, or with an offset).
        #[arg(long, value_name = "SEQ|TIME")]
        at: Option<String>,
        #[command(flatten)]
        conn: Connection,
    },
    /// Ask for (and record) a spawn decision, as JupyterHub's pre-spawn hook does.
    #[command(
        after_help = "Example:\n  privledger authorize alice --server-name gpu --image jupyter/base"
    )]
    Authorize {
        /// The user to spawn for.
        user: String,
        /// The JupyterHub named server (empty: the default server).
        #[arg(long, default_value = "")]
        server_name: String,
        /// The image to spawn (recorded with the decision).
        #[arg(long, default_value = "")]
        image: String,
        /// Idempotency key: a retry with the same key returns the first answer.
        #[arg(long)]
        request_id: Option<String>,
        #[command(flatten)]
        conn: Connection,
    },
    /// Everyone with any Docker privilege, now or at a past position.
    Who {
        /// A seq, or an RFC 3339 time.
        #[arg(long, value_name = "SEQ|TIME")]
        at: Option<String>,
        #[command(flatten)]
        conn: Connection,
    },
    /// Reports for auditors.
    Report {
        #[command(subcommand)]
        cmd: ReportCmd,
        #[command(flatten)]
        conn: Connection,
    },
    /// Read and export the audit trail.
    Audit {
        #[command(subcommand)]
        cmd: AuditCmd,
        #[command(flatten)]
        conn: Connection,
    },
    /// Recompute the hash chain, on the server or over an export file, and report the
    /// first entry that does not match (exit 2).
    #[command(after_help = "Examples:\n  \
        privledger verify\n  \
        privledger verify --from 1000 --to 2000\n  \
        privledger verify --file ledger.jsonl        # offline: no server needed")]
    Verify {
        /// First seq [default: the earliest retained].
        #[arg(long, default_value_t = 0, hide_default_value = true)]
        from: u64,
        /// Last seq [default: the head].
        #[arg(long, default_value_t = 0, hide_default_value = true)]
        to: u64,
        /// Verify an `audit export` file offline instead of asking the server.
        #[arg(long, value_name = "EXPORT.jsonl", conflicts_with_all = ["from", "to"])]
        file: Option<PathBuf>,
        #[command(flatten)]
        conn: Connection,
    },
    /// API tokens (their secrets are shown once; only hashes are stored).
    Token {
        #[command(subcommand)]
        cmd: TokenCmd,
        #[command(flatten)]
        conn: Connection,
    },
    /// Docker: import a captured events file.
    Docker {
        #[command(subcommand)]
        cmd: DockerCmd,
        #[command(flatten)]
        conn: Connection,
    },
    /// Health of the server's services, its Docker watcher and its storage.
    Status {
        #[command(flatten)]
        conn: Connection,
    },
    /// Offline recovery, with the server stopped: record a new admin token in the
    /// ledger of a data directory you own and write its secret to admin.token there.
    AdminToken {
        /// TOML configuration file (for its data directory).
        #[arg(long, env = config::ENV_CONFIG, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Data directory [default: $XDG_DATA_HOME/privledger, else
        /// ~/.local/share/privledger].
        #[arg(long = "data", env = config::ENV_DATA, value_name = "DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Print a shell completion script.
    #[command(after_help = "Examples:\n  \
        privledger completions bash > /etc/bash_completion.d/privledger\n  \
        privledger completions zsh > \"${fpath[1]}/_privledger\"\n  \
        privledger completions fish > ~/.config/fish/completions/privledger.fish")]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), or write one page per command into a directory.
    #[command(after_help = "Examples:\n  \
        privledger man | man -l -\n  \
        privledger man --out /usr/local/share/man/man1")]
    Man {
        /// Write privledger.1 and a page per command (privledger-grant-issue.1, ...)
        /// into this directory.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
}

impl Cmd {
    /// The connection flags of a client command.
    pub fn connection(&self) -> Option<&Connection> {
        match self {
            Cmd::Group { conn, .. }
            | Cmd::Grant { conn, .. }
            | Cmd::Check { conn, .. }
            | Cmd::Authorize { conn, .. }
            | Cmd::Who { conn, .. }
            | Cmd::Report { conn, .. }
            | Cmd::Audit { conn, .. }
            | Cmd::Verify { conn, .. }
            | Cmd::Token { conn, .. }
            | Cmd::Docker { conn, .. }
            | Cmd::Watch { conn, .. }
            | Cmd::Status { conn } => Some(conn),
            Cmd::Serve(_) | Cmd::AdminToken { .. } | Cmd::Completions { .. } | Cmd::Man { .. } => {
                None
            }
        }
    }
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Agent")]
pub struct WatchArgs {
    /// This Docker host's id: the name of the watcher token.
    #[arg(long, env = "PRIVLEDGER_HOST_ID", value_name = "ID")]
    pub host_id: String,
    /// The agent's data directory (its outbox) [default: $XDG_DATA_HOME/privledger-watch,
    /// else ~/.local/share/privledger-watch].
    #[arg(long = "data", env = "PRIVLEDGER_WATCH_DATA", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// The Docker daemon [default: unix:///var/run/docker.sock].
    #[arg(long, env = config::ENV_DOCKER_ENDPOINT, value_name = "URL")]
    pub docker_endpoint: Option<String>,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Server")]
pub struct ServeArgs {
    /// TOML configuration file (examples/privledger.toml lists every setting).
    #[arg(long, env = config::ENV_CONFIG, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory: the ledger and admin.token [default: $XDG_DATA_HOME/privledger,
    /// else ~/.local/share/privledger].
    #[arg(long = "data", env = config::ENV_DATA, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Forensics: serve the stored ledger (reads, audit stream, verify) and refuse every
    /// write; nothing in the data directory is changed, even when it is damaged.
    #[arg(long)]
    pub read_only: bool,
    /// Accept a data directory owned by another user or writable by group or others.
    #[arg(long)]
    pub allow_unsafe_data_dir: bool,
    /// TCP address to listen on, or "none" [default: 127.0.0.1:50051].
    #[arg(long, env = config::ENV_LISTEN, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Also listen on this Unix socket.
    #[arg(long, env = config::ENV_UNIX_SOCKET, value_name = "PATH")]
    pub unix_socket: Option<PathBuf>,
    /// The Unix socket's mode, octal [default: 660].
    #[arg(long, env = config::ENV_UNIX_SOCKET_MODE, value_name = "MODE")]
    pub unix_socket_mode: Option<String>,
    /// Group given the Unix socket (a name in /etc/group or a numeric gid).
    #[arg(long, env = config::ENV_UNIX_SOCKET_GROUP, value_name = "GROUP")]
    pub unix_socket_group: Option<String>,
    /// The server's certificate chain (PEM): serve TLS. Re-read on SIGHUP and when the
    /// file changes.
    #[arg(long, env = config::ENV_TLS_CERT, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, env = config::ENV_TLS_KEY, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Require client certificates signed by this CA (PEM); the certificate's
    /// identity is recorded with the actor of what the client does.
    #[arg(long, env = config::ENV_TLS_CLIENT_CA, value_name = "FILE")]
    pub tls_client_ca: Option<PathBuf>,
    /// Serve plaintext on a non-loopback address (refused without it: tokens would
    /// cross the network in the clear).
    #[arg(long)]
    pub insecure_listen: bool,
    /// Entries between state checkpoints [default: 10000].
    #[arg(long, env = config::ENV_CHECKPOINT_INTERVAL, value_name = "N")]
    pub checkpoint_interval: Option<u64>,
    /// Storage page cache, in MiB [default: 16].
    #[arg(long, env = config::ENV_STORAGE_CACHE_MB, value_name = "MIB")]
    pub storage_cache_mb: Option<u64>,
    /// Largest accepted request, in bytes [default: 65536].
    #[arg(long, env = config::ENV_MAX_REQUEST_BYTES, value_name = "BYTES")]
    pub max_request_bytes: Option<usize>,
    /// Docker socket on the host, bound for raw grants [default: /var/run/docker.sock].
    #[arg(long, env = config::ENV_HOST_SOCKET, value_name = "PATH")]
    pub host_socket: Option<String>,
    /// Where the socket appears in the container [default: /var/run/docker.sock].
    #[arg(long, env = config::ENV_CONTAINER_SOCKET, value_name = "PATH")]
    pub container_socket: Option<String>,
    /// Host directory of per-user limited sockets [default: /run/privledger/users].
    #[arg(long, env = config::ENV_LIMITED_HOST_DIR, value_name = "DIR")]
    pub limited_host_dir: Option<String>,
    /// Where the limited socket appears in the container [default:
    /// /run/privledger/docker.sock].
    #[arg(long, env = config::ENV_LIMITED_CONTAINER_SOCKET, value_name = "PATH")]
    pub limited_container_socket: Option<String>,
    /// Built-in groups, NAME=SOCKET[:MODE][:privileged] separated by ";" [default:
    /// docker-privileged=raw:rw].
    #[arg(long, env = config::ENV_BUILTIN_GROUPS, value_name = "SPEC")]
    pub builtin_groups: Option<String>,
    /// Serve Prometheus metrics over HTTP on this address [default: off].
    #[arg(long, env = config::ENV_METRICS_LISTEN, value_name = "ADDR")]
    pub metrics_listen: Option<String>,
    /// Follow the Docker daemon: on or off [default: on].
    #[arg(long, env = config::ENV_DOCKER, value_name = "on|off")]
    pub docker: Option<String>,
    /// Serve each limited user's Docker socket (needs the watcher): on or off
    /// [default: on].
    #[arg(long, env = config::ENV_PROXY, value_name = "on|off")]
    pub proxy: Option<String>,
    /// Docker endpoint [default: unix:///var/run/docker.sock].
    #[arg(long, env = config::ENV_DOCKER_ENDPOINT, value_name = "URL")]
    pub docker_endpoint: Option<String>,
    /// When a running container's user loses the privilege it holds: alert or stop
    /// [default: alert].
    #[arg(long, env = config::ENV_ON_STALE_GRANT, value_name = "alert|stop")]
    pub on_stale_grant: Option<String>,
    /// Container names exempt from correlation, comma-separated.
    #[arg(long, env = config::ENV_DOCKER_ALLOW_NAMES, value_name = "NAMES")]
    pub docker_allow_names: Option<String>,
    /// Labels (key or key=value) that exempt a container, comma-separated.
    #[arg(long, env = config::ENV_DOCKER_ALLOW_LABELS, value_name = "LABELS")]
    pub docker_allow_labels: Option<String>,
    /// Networks every limited user may join (the hub's), comma-separated.
    #[arg(long, env = config::ENV_PROXY_ALLOW_NETWORKS, value_name = "NETWORKS")]
    pub proxy_allow_networks: Option<String>,
    /// Host uids admitted on a limited socket besides the user's own containers,
    /// comma-separated [default: 0].
    #[arg(long, env = config::ENV_PROXY_PEER_UIDS, value_name = "UIDS")]
    pub proxy_peer_uids: Option<String>,
    /// How long a revoked user's socket answers "revoked" before it closes
    /// [default: 30s].
    #[arg(long, env = config::ENV_PROXY_REVOKE_GRACE, value_name = "DURATION")]
    pub proxy_revoke_grace: Option<String>,
    /// IPv4 pools (CIDR, comma-separated) limited users' networks may take a subnet
    /// from [default: none: the daemon's own pools only].
    #[arg(long, env = config::ENV_PROXY_NETWORK_POOLS, value_name = "CIDRS")]
    pub proxy_network_pools: Option<String>,
    /// Where a limited user's image tags live: `{user}/` (the default) or one that
    /// names a registry, `registry.example/{user}/`.
    #[arg(long, env = config::ENV_PROXY_IMAGE_NAMESPACE, value_name = "TEMPLATE")]
    pub proxy_image_namespace: Option<String>,
    /// The largest build context the limited socket reads [default: 512MiB].
    #[arg(long, env = config::ENV_PROXY_MAX_BUILD_CONTEXT, value_name = "SIZE")]
    pub proxy_max_build_context: Option<String>,
    /// Cluster mode: etcd's client URLs, comma-separated [default: none, one node on
    /// its own store].
    #[arg(long, env = cluster::ENV_ETCD_ENDPOINTS, value_name = "URL[,URL...]")]
    pub etcd_endpoints: Option<String>,
    /// This node's id, unique in the cluster (cluster mode).
    #[arg(long, env = cluster::ENV_NODE_ID, value_name = "ID")]
    pub node_id: Option<String>,
    /// The cluster's name: several ledgers can share one etcd [default: privledger].
    #[arg(long, env = cluster::ENV_CLUSTER_NAME, value_name = "NAME")]
    pub cluster_name: Option<String>,
    /// Where the other nodes reach this one [default: http(s)://LISTEN].
    #[arg(long, env = cluster::ENV_ADVERTISE_URL, value_name = "URL")]
    pub advertise_url: Option<String>,
    /// The writer's lease in etcd, whole seconds [default: 2s].
    #[arg(long, env = cluster::ENV_LEASE_TTL, value_name = "DURATION")]
    pub lease_ttl: Option<String>,
    /// Without etcd for longer, a node answers no access question [default: 10s].
    #[arg(long, env = cluster::ENV_STALE_AFTER, value_name = "DURATION")]
    pub stale_after: Option<String>,
    /// The CA of etcd's members (PEM), for https:// endpoints.
    #[arg(long, env = cluster::ENV_ETCD_CA, value_name = "FILE")]
    pub etcd_ca: Option<PathBuf>,
    /// This node's client certificate and key for etcd (PEM).
    #[arg(long, env = cluster::ENV_ETCD_CERT, value_name = "FILE")]
    pub etcd_cert: Option<PathBuf>,
    /// The private key of --etcd-cert (PEM).
    #[arg(long, env = cluster::ENV_ETCD_KEY, value_name = "FILE")]
    pub etcd_key: Option<PathBuf>,
    /// The CA of the other nodes' certificates, for writes forwarded over TLS.
    #[arg(long, env = cluster::ENV_PEER_CA, value_name = "FILE")]
    pub peer_ca: Option<PathBuf>,
    /// The archive of sealed segments: a directory every node reads; the writer seals
    /// the oldest batches out of etcd into it [default: none, nothing is sealed].
    #[arg(long, env = cluster::ENV_ARCHIVE_DIR, value_name = "DIR")]
    pub archive_dir: Option<PathBuf>,
    /// Entries etcd holds before the writer seals the oldest half [default: 500000].
    #[arg(long, env = cluster::ENV_SEAL_AFTER, value_name = "N")]
    pub seal_after: Option<u64>,
}

impl ServeArgs {
    pub fn overrides(&self) -> Overrides {
        Overrides {
            listen: self.listen.clone(),
            unix_socket: self.unix_socket.clone(),
            data_dir: self.data_dir.clone(),
            read_only: self.read_only,
            allow_unsafe_data_dir: self.allow_unsafe_data_dir,
            checkpoint_interval: self.checkpoint_interval,
            storage_cache_mb: self.storage_cache_mb,
            max_request_bytes: self.max_request_bytes,
            host_socket: self.host_socket.clone(),
            container_socket: self.container_socket.clone(),
            limited_host_dir: self.limited_host_dir.clone(),
            limited_container_socket: self.limited_container_socket.clone(),
            builtin_groups: self.builtin_groups.clone(),
            metrics_listen: self.metrics_listen.clone(),
            docker: self.docker.clone(),
            docker_endpoint: self.docker_endpoint.clone(),
            proxy: self.proxy.clone(),
            on_stale_grant: self.on_stale_grant.clone(),
            docker_allow_names: self.docker_allow_names.clone(),
            docker_allow_labels: self.docker_allow_labels.clone(),
            proxy_allow_networks: self.proxy_allow_networks.clone(),
            proxy_peer_uids: self.proxy_peer_uids.clone(),
            proxy_revoke_grace: self.proxy_revoke_grace.clone(),
            proxy_network_pools: self.proxy_network_pools.clone(),
            proxy_image_namespace: self.proxy_image_namespace.clone(),
            proxy_max_build_context: self.proxy_max_build_context.clone(),
            cluster: cluster::ClusterOverrides {
                etcd_endpoints: self.etcd_endpoints.clone(),
                node_id: self.node_id.clone(),
                cluster_name: self.cluster_name.clone(),
                advertise_url: self.advertise_url.clone(),
                lease_ttl: self.lease_ttl.clone(),
                stale_after: self.stale_after.clone(),
                etcd_ca: self.etcd_ca.clone(),
                etcd_cert: self.etcd_cert.clone(),
                etcd_key: self.etcd_key.clone(),
                peer_ca: self.peer_ca.clone(),
                archive_dir: self.archive_dir.clone(),
                seal_after: self.seal_after,
            },
            net: config::net::NetOverrides {
                tls_cert: self.tls_cert.clone(),
                tls_key: self.tls_key.clone(),
                tls_client_ca: self.tls_client_ca.clone(),
                insecure_listen: self.insecure_listen,
                unix_socket_mode: self.unix_socket_mode.clone(),
                unix_socket_group: self.unix_socket_group.clone(),
            },
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum DockerCmd {
    /// Record a `docker events --format '{{json .}}'` capture (JSON lines); what the
    /// ledger already holds is skipped, so importing twice records nothing new.
    #[command(after_help = "Example:\n  \
        docker events --since 24h --until 0s --format '{{json .}}' > events.jsonl\n  \
        privledger docker import events.jsonl")]
    Import {
        /// The capture file.
        file: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum GroupCmd {
    /// Create a group.
    #[command(after_help = "Example:\n  privledger group create gpu-users")]
    Create {
        /// Group name.
        name: String,
        /// Idempotency key: a retry with the same key returns the first answer.
        #[arg(long)]
        request_id: Option<String>,
    },
    /// Delete a group: its memberships and grants end (built-in groups cannot be).
    #[command(
        after_help = "Example:\n  privledger group delete ml-infra --reason \"team dissolved (ticket OPS-31)\" --yes\n\n\
        On a terminal, --yes is needed: every member loses what the group's grants give."
    )]
    Delete {
        /// Group name.
        name: String,
        /// Why (mandatory; recorded in the ledger).
        #[arg(long)]
        reason: String,
        /// Delete without asking (needed on a terminal).
        #[arg(long)]
        yes: bool,
        /// Idempotency key.
        #[arg(long)]
        request_id: Option<String>,
    },
    /// List groups with their member and grant counts.
    List,
    /// A group's members and grants.
    Show {
        /// Group name.
        name: String,
    },
    /// Add users to a group: one entry each, all or nothing.
    #[command(
        after_help = "Example:\n  privledger group add-member docker-privileged alice bob carol"
    )]
    AddMember {
        /// Group name.
        group: String,
        /// The users to add.
        #[arg(required = true, num_args = 1..)]
        users: Vec<String>,
        /// Why (recorded with each entry).
        #[arg(long)]
        reason: Option<String>,
        /// Idempotency key.
        #[arg(long)]
        request_id: Option<String>,
    },
    /// Mark a group as synced from JupyterHub (its members then change through a sync
    /// token only), or end that.
    #[command(after_help = "Examples:\n  \
        privledger group sync docker-privileged on --reason \"membership is managed in the hub's admin panel\"\n  \
        privledger group sync docker-privileged off --reason \"managed here again\"")]
    Sync {
        /// Group name.
        group: String,
        /// on: follow JupyterHub; off: admins manage the members again.
        #[arg(value_parser = ["on", "off"])]
        state: String,
        /// Why (mandatory; recorded in the ledger).
        #[arg(long)]
        reason: String,
        /// Idempotency key.
        #[arg(long)]
        request_id: Option<String>,
    },
    /// Remove a user from a group.
    #[command(
        after_help = "Example:\n  privledger group remove-member docker-privileged bob --reason \"left the project\""
    )]
    RemoveMember {
        /// Group name.
        group: String,
        /// The user.
        user: String,
        /// Why (recorded; mandatory for a built-in group, whose members hold the raw
        /// socket).
        #[arg(long)]
        reason: Option<String>,
        /// Idempotency key.
        #[arg(long)]
        request_id: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum GrantCmd {
    /// Give a user or group Docker privileges.
    Issue(Box<IssueArgs>),
    /// End a grant now (its id is the seq it was issued at).
    #[command(
        after_help = "Example:\n  privledger grant revoke 7 --reason \"project ended (ticket OPS-12)\""
    )]
    Revoke {
        /// Grant id.
        id: u64,
        /// Why (mandatory; recorded in the ledger).
        #[arg(long)]
        reason: String,
        /// Idempotency key.
        #[arg(long)]
        request_id: Option<String>,
    },
    /// Active grants, or every grant with --all.
    List {
        /// Only grants to this user (not those through a group: see `check`).
        #[arg(long, conflicts_with = "group")]
        user: Option<String>,
        /// Only grants to this group.
        #[arg(long)]
        group: Option<String>,
        /// Include revoked and expired grants, with why they ended.
        #[arg(long)]
        all: bool,
    },
}

/// The socket a grant gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SocketArg {
    /// No socket (e.g. --privileged alone).
    None,
    /// The Docker daemon's socket itself: root on the host.
    Raw,
    /// A per-user filtered socket with quotas.
    Limited,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// Read-write.
    Rw,
    /// Read-only (the daemon still allows much through a read-only mount).
    Ro,
}

#[derive(Debug, Args)]
#[command(
    group(clap::ArgGroup::new("subject").required(true).args(["user", "group"])),
    after_help = "Limits (limited socket only; an unset limit takes its default):\n  \
        --max-containers 10, --max-volumes 10, --max-networks 3 (whole numbers),\n  \
        --max-storage-gb 50, --cpu-cap-cores 2, --mem-cap-gb 8 (per container; may be fractional).\n\n\
        Dangerous flags, refused through a limited socket unless --allow-dangerous-flags\n\
        (docs/limited-socket.md lists them exactly): Privileged (also needs --privileged),\n\
        CapAdd, devices and cgroups, runtimes other than runc, Sysctls, MaskedPaths and\n\
        ReadonlyPaths, SecurityOpt other than no-new-privileges, host namespaces (network,\n\
        PID, IPC, UTS, user, cgroup), bind mounts, volume and network drivers and options.\n\n\
        Examples:\n  \
        privledger grant issue --group docker-privileged --socket raw --mode rw --reason \"platform admins\"\n  \
        privledger grant issue --user alice --socket limited --max-containers 4 --mem-cap-gb 16 \\\n      \
        --expires 30d --reason \"course DS-101, spring term\""
)]
pub struct IssueArgs {
    /// Grant to this user.
    #[arg(long)]
    pub user: Option<String>,
    /// Grant to every member of this group.
    #[arg(long)]
    pub group: Option<String>,
    /// The Docker socket given.
    #[arg(long, value_enum, default_value = "none")]
    pub socket: SocketArg,
    /// Raw socket only: read-write or read-only [default: rw].
    #[arg(long, value_enum)]
    pub mode: Option<ModeArg>,
    /// Run the user's container with --privileged (root on the host).
    #[arg(long)]
    pub privileged: bool,
    /// Limited socket: most containers at once [default: 10].
    #[arg(long, value_name = "N")]
    pub max_containers: Option<u32>,
    /// Limited socket: most volumes [default: 10].
    #[arg(long, value_name = "N")]
    pub max_volumes: Option<u32>,
    /// Limited socket: most networks [default: 3].
    #[arg(long, value_name = "N")]
    pub max_networks: Option<u32>,
    /// Limited socket: storage across volumes, in GB [default: 50].
    #[arg(long, value_name = "GB")]
    pub max_storage_gb: Option<f64>,
    /// Limited socket: CPU per container, in cores [default: 2].
    #[arg(long, value_name = "CORES")]
    pub cpu_cap_cores: Option<f64>,
    /// Limited socket: memory per container, in GB [default: 8].
    #[arg(long, value_name = "GB")]
    pub mem_cap_gb: Option<f64>,
    /// Limited socket: allow the dangerous flags listed below.
    #[arg(long)]
    pub allow_dangerous_flags: bool,
    /// Limited socket: most processes per container [default: 4096].
    #[arg(long, value_name = "N")]
    pub max_pids: Option<u32>,
    /// Limited socket: published ports, off or loopback (127.0.0.1 only)
    /// [default: off].
    #[arg(long, value_name = "off|loopback")]
    pub publish: Option<String>,
    /// Limited socket: allow image builds (the classic builder).
    #[arg(long)]
    pub allow_build: bool,
    /// Limited socket: images the user may pull, a pattern over the normalized
    /// reference `registry/repo[:tag]` (`*` within a segment, `**` across; repeatable).
    #[arg(long, value_name = "PATTERN")]
    pub pull_allow: Vec<String>,
    /// Limited socket: where the user may push images of their own namespace, a
    /// pattern as --pull-allow (repeatable).
    #[arg(long, value_name = "PATTERN")]
    pub push_allow: Vec<String>,
    /// When it ends by itself: a duration from now (30d, 12h) or an RFC 3339 time
    /// [default: never].
    #[arg(long, value_name = "DURATION|TIME")]
    pub expires: Option<String>,
    /// Why (mandatory; recorded in the ledger).
    #[arg(long)]
    pub reason: String,
    /// Idempotency key: a retry with the same key returns the first answer.
    #[arg(long)]
    pub request_id: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ReportCmd {
    /// Who held access, from when to when, through which grant, and whether a
    /// container held it: the spans of a window during which each user's effective
    /// access was at least the asked level.
    #[command(
        after_help = "A span is [from, to): `check --at` any position inside it meets the level. \
        A span marked `since before` already held at the window's start; one without an end still held at its end.\n\n\
        Examples:\n  \
        # who could become root on this host last quarter (raw socket or --privileged), as CSV\n  \
        privledger report access --from 2026-07-01T00:00:00Z --to 2026-10-01T00:00:00Z --socket raw --format csv > q3-raw.csv\n  \
        privledger report access --from 2026-07-01T00:00:00Z --to 2026-10-01T00:00:00Z --privileged --format csv > q3-privileged.csv\n  \
        privledger report access --user alice"
    )]
    Access {
        /// Start of the window: a seq or an RFC 3339 time [default: the beginning].
        #[arg(long, value_name = "SEQ|TIME")]
        from: Option<String>,
        /// End of the window: a seq or an RFC 3339 time [default: now].
        #[arg(long, value_name = "SEQ|TIME")]
        to: Option<String>,
        /// Only this user.
        #[arg(long)]
        user: Option<String>,
        /// At least this socket (raw > limited) [default: any access].
        #[arg(long, value_enum)]
        socket: Option<LevelSocket>,
        /// Only while the user could run privileged containers.
        #[arg(long)]
        privileged: bool,
        /// Output format (--json means --format json).
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// The images a user made through their limited socket (built, pulled,
    /// imported, committed or tagged) and has not removed through it, from the
    /// ledger's `proxy_call` entries.
    #[command(after_help = "Example:\n  privledger report images --user alice --json")]
    Images {
        /// The user.
        #[arg(long)]
        user: String,
        /// Output format (--json means --format json).
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LevelSocket {
    /// The daemon's own socket.
    Raw,
    /// A limited socket, or the raw one.
    Limited,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
    Csv,
}

#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// Print entries, one short line each (and keep following with --follow).
    #[command(after_help = "Examples:\n  \
        privledger audit tail --from 1 --kind grant_issued --kind grant_revoked\n  \
        privledger audit tail --follow --subject alice\n  \
        privledger audit tail --kind alert --wide\n  \
        privledger audit tail -n 50 --exclude-kind docker\n  \
        privledger audit tail --since 2026-12-01T08:00:00Z --kind proxy_call\n\n\
        Without --from or -n, a terminal is shown the last 20 entries; a pipe or a file\n\
        gets every entry from seq 1.")]
    Tail {
        /// First seq [default: the last 20 on a terminal, seq 1 otherwise].
        #[arg(long)]
        from: Option<u64>,
        /// The last N entries (of those the other filters keep).
        #[arg(short = 'n', long = "lines", value_name = "N")]
        lines: Option<usize>,
        /// Only entries at or after this RFC 3339 time.
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        /// Keep the stream open and print new entries as they are appended.
        #[arg(long)]
        follow: bool,
        /// Only entries of this kind, or alerts of this kind (repeatable; `docker` is
        /// the containers' churn: docker_container and container_stopped).
        #[arg(long = "kind", value_name = "KIND", value_parser = kind_values())]
        kinds: Vec<String>,
        /// Leave out entries of this kind, or alerts of this kind (repeatable; `docker`
        /// as for --kind).
        #[arg(long = "exclude-kind", value_name = "KIND", value_parser = kind_values())]
        exclude_kinds: Vec<String>,
        /// Only entries concerning this user, group, token or grant id.
        #[arg(long)]
        subject: Option<String>,
        /// Every field of each entry, not only those that matter for its kind.
        #[arg(long)]
        wide: bool,
    },
    /// Write entries as JSON lines with their exact hashed bodies (for `verify --file`),
    /// or keep shipping them as they are appended (--follow).
    #[command(after_help = "Examples:\n  \
        privledger audit export --out ledger.jsonl\n  \
        privledger audit export --out - | gzip > ledger.jsonl.gz\n  \
        privledger audit export --follow --cursor /var/lib/shipper/privledger.cursor --out /var/log/privledger.jsonl\n\n\
        With --follow and --cursor, the export resumes after the last entry the cursor file\n\
        records, appending to --out; the cursor is saved only after what it names is on disk,\n\
        so after a crash an entry may be written twice (at least once; dedupe by seq), never lost.")]
    Export {
        /// The file to write, or - for standard output. An existing file is kept
        /// unless --force.
        #[arg(long, value_name = "FILE|-", required_unless_present = "syslog")]
        out: Option<PathBuf>,
        /// First seq.
        #[arg(long, default_value_t = 1)]
        from: u64,
        /// Replace an existing file.
        #[arg(long)]
        force: bool,
        /// Keep the stream open and write entries as they are appended.
        #[arg(long)]
        follow: bool,
        /// With --follow: a file recording the last seq written; the export resumes after
        /// it and appends to --out.
        #[arg(long, value_name = "FILE", requires = "follow")]
        cursor: Option<PathBuf>,
        /// With --follow: send each entry to syslog (RFC 5424, facility local0, the JSON
        /// line as the message) instead of --out.
        #[arg(long, requires = "follow", conflicts_with = "out")]
        syslog: bool,
        /// The syslog socket.
        #[arg(
            long,
            value_name = "PATH",
            default_value = "/dev/log",
            requires = "syslog"
        )]
        syslog_socket: PathBuf,
    },
    /// The chain head: seq, hash and time (record it to compare with a later export).
    Head,
}

/// Every entry kind and alert kind, for `--kind`'s help and completion.
/// `--kind docker`: the entries of containers coming and going.
pub const DOCKER_KINDS_WORD: &str = "docker";
pub const DOCKER_KINDS: &[&str] = &["docker_container", "container_stopped"];

/// The kinds a `--kind` list names, `docker` spelled out.
pub fn expand_kinds(kinds: Vec<String>) -> Vec<String> {
    let mut out = Vec::new();
    for k in kinds {
        if k == DOCKER_KINDS_WORD {
            out.extend(DOCKER_KINDS.iter().map(|s| s.to_string()));
        } else {
            out.push(k);
        }
    }
    out
}

fn kind_values() -> clap::builder::PossibleValuesParser {
    use crate::ledger::event::{AlertKind, EventKind};
    let words: Vec<&'static str> = EventKind::ALL
        .iter()
        .map(|k| k.as_str())
        .chain(AlertKind::ALL.iter().map(|k| k.as_str()))
        .chain(std::iter::once(DOCKER_KINDS_WORD))
        .collect();
    clap::builder::PossibleValuesParser::new(words)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RoleArg {
    /// Everything.
    Admin,
    /// AuthorizeSpawn and CheckAccess (JupyterHub's hook).
    Spawner,
    /// Reads: groups, grants, access, reports, the audit stream, verify.
    Auditor,
    /// JupyterHub group sync: reads groups, changes the members of synced groups only.
    Sync,
    /// A `privledger watch` agent: records the Docker observations of the host the
    /// token is named after, nothing else.
    Watcher,
}

#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// Create a token and print its secret (once).
    #[command(after_help = "Examples:\n  \
        privledger token create jupyterhub --role spawner\n  \
        privledger token create q3-audit --role auditor --expires 30d")]
    Create {
        /// Token name: the actor recorded for what it does; never reused.
        name: String,
        /// What it may do.
        #[arg(long, value_enum)]
        role: RoleArg,
        /// It stops working then: a duration from now (30d, 12h) or an RFC 3339 time
        /// [default: until revoked].
        #[arg(long, value_name = "DURATION|TIME")]
        expires: Option<String>,
        /// Idempotency key.
        #[arg(long)]
        request_id: Option<String>,
    },
    /// Tokens with their roles, expiry and revocation.
    List,
    /// Revoke a token now; its open audit streams end.
    Revoke {
        /// Token name.
        name: String,
        /// Idempotency key.
        #[arg(long)]
        request_id: Option<String>,
    },
}

#[cfg(test)]
mod exit_code_table {
    /// `(code, meaning)` rows of [`super::EXIT_CODES`], continuation lines joined.
    fn rows() -> Vec<(String, String)> {
        let mut rows: Vec<(String, String)> = Vec::new();
        for line in super::EXIT_CODES.lines().skip(1) {
            if line.trim().is_empty() {
                break;
            }
            let t = line.trim();
            match t.split_once(char::is_whitespace) {
                Some((code, text)) if code.bytes().all(|b| b.is_ascii_digit()) => {
                    rows.push((code.to_string(), text.trim().to_string()))
                }
                _ => {
                    if let Some(last) = rows.last_mut() {
                        last.1 = format!("{} {t}", last.1);
                    }
                }
            }
        }
        rows
    }

    #[test]
    fn the_readme_shows_the_same_exit_codes_as_help_and_the_man_page() {
        let readme = include_str!("../../README.md");
        let table: Vec<(String, String)> = readme
            .lines()
            .skip_while(|l| *l != "| code | meaning |")
            .skip(2)
            .take_while(|l| l.starts_with('|'))
            .map(|l| {
                let cells: Vec<&str> = l.trim_matches('|').split(" | ").collect();
                (cells[0].trim().to_string(), cells[1].trim().to_string())
            })
            .collect();
        assert_eq!(table, rows());
        let codes: Vec<u8> = rows().iter().map(|(c, _)| c.parse().unwrap()).collect();
        assert_eq!(codes, vec![0, 1, 2, 64, 69, 77], "every super::Exit code");
    }
}
