//! Logging setup: human-readable lines on stderr, filtered by `PRIVLEDGER_LOG`
//! (tracing's env-filter syntax; default `info`).

use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter = EnvFilter::try_from_env(crate::config::ENV_LOG)
        .unwrap_or_else(|_| EnvFilter::new("info,sled=warn,h2=warn,tower=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}
