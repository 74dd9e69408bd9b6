//! `privledger watch`: the command line of the Docker agent ([`crate::agent`]).

use super::args::{Connection, WatchArgs};
use super::client::CliError;
use super::Exit;
use crate::agent::AgentConfig;
use crate::client::ConnectOptions;

/// `$XDG_DATA_HOME/privledger-watch`, else `~/.local/share/privledger-watch`.
fn default_data_dir() -> std::path::PathBuf {
    let ledger = crate::config::default_data_dir();
    let name = "privledger-watch";
    match ledger.parent() {
        Some(p) if ledger.ends_with("privledger") => p.join(name),
        _ => std::path::PathBuf::from(name),
    }
}

/// Runs the agent until SIGINT or SIGTERM.
pub async fn run(conn: &Connection, args: WatchArgs, token: String) -> Result<Exit, CliError> {
    let cfg = AgentConfig {
        server: conn.server.clone(),
        connect: ConnectOptions {
            tls_ca: conn.tls_ca.clone(),
            tls_cert: conn.tls_cert.clone(),
            tls_key: conn.tls_key.clone(),
            timeout: Some(conn.timeout),
        },
        token,
        host_id: args.host_id,
        data_dir: args.data_dir.unwrap_or_else(default_data_dir),
        docker_endpoint: args
            .docker_endpoint
            .unwrap_or_else(|| crate::config::DockerConfig::default().endpoint),
    };
    crate::telemetry::init();
    crate::private_fs::restrict_umask();
    match crate::agent::run(cfg, crate::signal::shutdown()).await {
        Ok(()) => Ok(Exit::Ok),
        Err(e) => Err(CliError::Usage(e.to_string())),
    }
}
