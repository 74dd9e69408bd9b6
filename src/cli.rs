//! The command line: `serve`, and client commands that talk to a running server.

mod client;
mod output;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::config::{self, Config, Overrides};

#[derive(Debug, Parser)]
#[command(
    name = "privledger",
    version,
    about = "Decide which Docker privileges a user's container gets, and keep a tamper-evident ledger of why",
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub conn: Connection,
    #[command(subcommand)]
    pub command: Cmd,
}

/// How client commands reach the server.
#[derive(Debug, Clone, Args)]
pub struct Connection {
    /// Server address.
    #[arg(long, global = true, env = config::ENV_SERVER, default_value = "http://127.0.0.1:50051")]
    pub server: String,
    /// Bearer token secret.
    #[arg(long, global = true, env = config::ENV_TOKEN, hide_env_values = true)]
    pub token: Option<String>,
    /// File holding the bearer token (default: the admin token of the default data
    /// directory, when readable).
    #[arg(long, global = true, env = config::ENV_TOKEN_FILE)]
    pub token_file: Option<PathBuf>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// The CA that signed an https:// server's certificate (PEM).
    #[arg(long, global = true, env = config::ENV_TLS_CA)]
    pub tls_ca: Option<PathBuf>,
    /// This side's certificate chain (PEM): the server's with `serve`, else a client
    /// certificate for a server that requires one.
    #[arg(long, global = true, env = config::ENV_TLS_CERT)]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, global = true, env = config::ENV_TLS_KEY)]
    pub tls_key: Option<PathBuf>,
    /// Give up on a call the server has not answered within this (30s, 2m).
    #[arg(long, global = true, default_value = "30s", value_parser = humantime::parse_duration)]
    pub timeout: std::time::Duration,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Run the ledger service.
    Serve(Box<ServeArgs>),
    /// Manage groups and their members.
    #[command(subcommand)]
    Group(GroupCmd),
    /// Issue, revoke and list grants.
    #[command(subcommand)]
    Grant(GrantCmd),
    /// A user's effective access, now or at a past position.
    Check {
        user: String,
        /// A seq, or an RFC 3339 time such as 2026-03-01T14:00:00Z.
        #[arg(long)]
        at: Option<String>,
    },
    /// Ask for (and record) a spawn decision, as a spawner would.
    Authorize {
        user: String,
        #[arg(long, default_value = "")]
        server_name: String,
        #[arg(long, default_value = "")]
        image: String,
        #[arg(long)]
        request_id: Option<String>,
    },
    /// Everyone with any Docker privilege, now or at a past position.
    Who {
        #[arg(long)]
        at: Option<String>,
    },
    /// Read the audit trail.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Recompute the hash chain and report the first entry that does not match.
    Verify {
        #[arg(long, default_value_t = 0)]
        from: u64,
        #[arg(long, default_value_t = 0)]
        to: u64,
    },
    /// Manage API tokens.
    #[command(subcommand)]
    Token(TokenCmd),
    /// Docker: import a captured events file.
    #[command(subcommand)]
    Docker(DockerCmd),
    /// Health of the server's services and of the Docker watcher.
    Status,
    /// Offline recovery, with the server stopped: record a new admin token in the
    /// ledger of a data directory you own and write its secret to `admin.token` there.
    AdminToken {
        /// TOML configuration file (for its data directory).
        #[arg(long, env = config::ENV_CONFIG)]
        config: Option<PathBuf>,
        /// Data directory.
        #[arg(long = "data", env = config::ENV_DATA)]
        data_dir: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// TOML configuration file.
    #[arg(long, env = config::ENV_CONFIG)]
    pub config: Option<PathBuf>,
    /// Data directory (ledger and admin token).
    #[arg(long = "data", env = config::ENV_DATA)]
    pub data_dir: Option<PathBuf>,
    /// Forensics: serve the stored ledger (reads, audit stream, verify) and refuse every
    /// write; nothing in the data directory is changed, even when it is damaged.
    #[arg(long)]
    pub read_only: bool,
    /// Accept a data directory owned by another user or writable by group or others.
    #[arg(long)]
    pub allow_unsafe_data_dir: bool,
    /// TCP address to listen on, or "none" [default: 127.0.0.1:50051].
    #[arg(long, env = config::ENV_LISTEN)]
    pub listen: Option<String>,
    /// Also listen on this Unix socket.
    #[arg(long, env = config::ENV_UNIX_SOCKET)]
    pub unix_socket: Option<PathBuf>,
    /// The Unix socket's mode, octal [default: 660].
    #[arg(long, env = config::ENV_UNIX_SOCKET_MODE)]
    pub unix_socket_mode: Option<String>,
    /// Group given the Unix socket (a name in /etc/group or a numeric gid).
    #[arg(long, env = config::ENV_UNIX_SOCKET_GROUP)]
    pub unix_socket_group: Option<String>,
    /// Require client certificates signed by this CA (PEM); the certificate's
    /// identity is recorded with the actor of what the client does. (The server's
    /// own certificate and key are --tls-cert and --tls-key, re-read on SIGHUP or
    /// when they change.)
    #[arg(long, env = config::ENV_TLS_CLIENT_CA)]
    pub tls_client_ca: Option<PathBuf>,
    /// Serve plaintext on a non-loopback address (refused without it: tokens would
    /// cross the network in the clear).
    #[arg(long)]
    pub insecure_listen: bool,
    /// Entries between state checkpoints [default: 10000].
    #[arg(long, env = config::ENV_CHECKPOINT_INTERVAL)]
    pub checkpoint_interval: Option<u64>,
    /// Storage page cache, in MiB [default: 16].
    #[arg(long, env = config::ENV_STORAGE_CACHE_MB)]
    pub storage_cache_mb: Option<u64>,
    /// Largest accepted request, in bytes [default: 65536].
    #[arg(long, env = config::ENV_MAX_REQUEST_BYTES)]
    pub max_request_bytes: Option<usize>,
    /// Docker socket on the host, bound for raw grants [default: /var/run/docker.sock].
    #[arg(long, env = config::ENV_HOST_SOCKET)]
    pub host_socket: Option<String>,
    /// Where the socket appears in the container [default: /var/run/docker.sock].
    #[arg(long, env = config::ENV_CONTAINER_SOCKET)]
    pub container_socket: Option<String>,
    /// Host directory of per-user limited sockets [default: /run/privledger/users].
    #[arg(long, env = config::ENV_LIMITED_HOST_DIR)]
    pub limited_host_dir: Option<String>,
    /// Where the limited socket appears in the container [default: /run/privledger/docker.sock].
    #[arg(long, env = config::ENV_LIMITED_CONTAINER_SOCKET)]
    pub limited_container_socket: Option<String>,
    /// Built-in groups, `NAME=SOCKET[:MODE][:privileged]` separated by `;`
    /// [default: docker-privileged=raw:rw].
    #[arg(long, env = config::ENV_BUILTIN_GROUPS)]
    pub builtin_groups: Option<String>,
    /// Serve Prometheus metrics over HTTP on this address [default: off].
    #[arg(long, env = config::ENV_METRICS_LISTEN)]
    pub metrics_listen: Option<String>,
    /// Follow the Docker daemon: on or off [default: on].
    #[arg(long, env = config::ENV_DOCKER)]
    pub docker: Option<String>,
    /// Serve each limited user's Docker socket (needs the watcher): on or off
    /// [default: on].
    #[arg(long, env = config::ENV_PROXY)]
    pub proxy: Option<String>,
    /// Docker endpoint [default: unix:///var/run/docker.sock].
    #[arg(long, env = config::ENV_DOCKER_ENDPOINT)]
    pub docker_endpoint: Option<String>,
    /// When a running container's user loses the privilege it holds: alert or stop
    /// [default: alert].
    #[arg(long, env = config::ENV_ON_STALE_GRANT)]
    pub on_stale_grant: Option<String>,
    /// Container names exempt from correlation, comma-separated.
    #[arg(long, env = config::ENV_DOCKER_ALLOW_NAMES)]
    pub docker_allow_names: Option<String>,
    /// Labels (key or key=value) that exempt a container, comma-separated.
    #[arg(long, env = config::ENV_DOCKER_ALLOW_LABELS)]
    pub docker_allow_labels: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum DockerCmd {
    /// Record a `docker events --format '{{json .}}'` capture (JSON lines); what the
    /// ledger already holds is skipped.
    Import { file: PathBuf },
}

#[derive(Debug, Subcommand)]
pub enum GroupCmd {
    Create {
        name: String,
        #[arg(long)]
        request_id: Option<String>,
    },
    Delete {
        name: String,
        #[arg(long)]
        request_id: Option<String>,
    },
    List,
    Show {
        name: String,
    },
    AddMember {
        group: String,
        user: String,
        #[arg(long)]
        request_id: Option<String>,
    },
    RemoveMember {
        group: String,
        user: String,
        #[arg(long)]
        request_id: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum GrantCmd {
    Issue(IssueArgs),
    Revoke {
        id: u64,
        #[arg(long)]
        reason: String,
        #[arg(long)]
        request_id: Option<String>,
    },
    List {
        #[arg(long, conflicts_with = "group")]
        user: Option<String>,
        #[arg(long)]
        group: Option<String>,
        /// Include revoked and expired grants.
        #[arg(long)]
        all: bool,
    },
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("subject").required(true).args(["user", "group"])))]
pub struct IssueArgs {
    #[arg(long)]
    pub user: Option<String>,
    #[arg(long)]
    pub group: Option<String>,
    /// none, raw or limited.
    #[arg(long, default_value = "none")]
    pub socket: String,
    /// rw or ro (raw only).
    #[arg(long)]
    pub mode: Option<String>,
    #[arg(long)]
    pub privileged: bool,
    #[arg(long)]
    pub max_containers: Option<u32>,
    #[arg(long)]
    pub max_volumes: Option<u32>,
    #[arg(long)]
    pub max_networks: Option<u32>,
    #[arg(long)]
    pub max_storage_gb: Option<f64>,
    #[arg(long)]
    pub cpu_cap_cores: Option<f64>,
    #[arg(long)]
    pub mem_cap_gb: Option<f64>,
    #[arg(long)]
    pub allow_dangerous_flags: bool,
    /// A duration from now (30d, 12h) or an RFC 3339 time.
    #[arg(long)]
    pub expires: Option<String>,
    /// Why (mandatory).
    #[arg(long)]
    pub reason: String,
    #[arg(long)]
    pub request_id: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// Print entries (and keep following with --follow).
    Tail {
        #[arg(long, default_value_t = 1)]
        from: u64,
        #[arg(long)]
        follow: bool,
        /// Only these kinds (repeatable).
        #[arg(long = "kind")]
        kinds: Vec<String>,
        /// Only entries concerning this user, group, token or id.
        #[arg(long)]
        subject: Option<String>,
    },
    /// Write entries as JSON lines, with the exact hashed bodies.
    Export {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 1)]
        from: u64,
    },
    /// The chain head.
    Head,
}

#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    Create {
        name: String,
        /// admin, spawner or auditor.
        #[arg(long)]
        role: String,
        /// The token stops working then: a duration from now (30d, 12h) or an RFC 3339
        /// time. Without it, the token works until revoked.
        #[arg(long)]
        expires: Option<String>,
        #[arg(long)]
        request_id: Option<String>,
    },
    List,
    Revoke {
        name: String,
        #[arg(long)]
        request_id: Option<String>,
    },
}

impl ServeArgs {
    fn overrides(&self, conn: &Connection) -> Overrides {
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
            net: config::net::NetOverrides {
                tls_cert: conn.tls_cert.clone(),
                tls_key: conn.tls_key.clone(),
                tls_client_ca: self.tls_client_ca.clone(),
                insecure_listen: self.insecure_listen,
                unix_socket_mode: self.unix_socket_mode.clone(),
                unix_socket_group: self.unix_socket_group.clone(),
            },
        }
    }
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("privledger: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Cmd::Serve(args) => {
            // Configuration is checked before anything is bound.
            let cfg = match Config::load(args.config.as_deref(), &args.overrides(&cli.conn)) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("privledger: {e}");
                    return ExitCode::from(64); // EX_USAGE
                }
            };
            crate::telemetry::init();
            // Whatever the caller's umask, what the server creates is its user's alone.
            crate::private_fs::restrict_umask();
            rt.block_on(serve(cfg))
        }
        Cmd::AdminToken { config, data_dir } => {
            let o = Overrides {
                data_dir,
                ..Overrides::default()
            };
            let cfg = match Config::load(config.as_deref(), &o) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("privledger: {e}");
                    return ExitCode::from(64);
                }
            };
            crate::private_fs::restrict_umask();
            match rt.block_on(crate::recovery::admin_token(&cfg.data_dir)) {
                Ok(r) => {
                    println!(
                        "recorded admin token {:?} at seq {}; its secret is in {} (mode 0600)",
                        r.name,
                        r.seq,
                        r.secret_file.display()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("privledger: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        command => rt.block_on(client::run(cli.conn, command)),
    }
}

async fn serve(cfg: Config) -> ExitCode {
    let listener = match cfg.listen {
        Some(addr) => match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => Some(l),
            Err(e) => {
                eprintln!("privledger: cannot listen on {addr}: {e}");
                return ExitCode::FAILURE;
            }
        },
        None => None,
    };
    match crate::server::run(cfg, listener, crate::signal::shutdown()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("privledger: {e}");
            ExitCode::FAILURE
        }
    }
}
