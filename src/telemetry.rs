//! Logging setup: human-readable lines on stderr, filtered by `PRIVLEDGER_LOG`
//! (tracing's env-filter syntax; default `info`).

use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter = EnvFilter::try_from_env(crate::config::ENV_LOG)
        .unwrap_or_else(|_| EnvFilter::new("info,sled=warn,h2=warn,tower=warn"));
    let _ = tracing_subscriber::fmt()
        .fmt_fields(safe_fields())
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

/// Field values are written through [`crate::safe_text::escape`]: a user name or a
/// reason with a newline or a bidi override cannot forge a log line or hide text.
fn safe_fields() -> impl for<'w> tracing_subscriber::fmt::FormatFields<'w> + 'static {
    use tracing_subscriber::field::MakeExt;
    tracing_subscriber::fmt::format::debug_fn(|w, field, value| {
        let text = format!("{value:?}");
        let text = crate::safe_text::escape(&text);
        if field.name() == "message" {
            write!(w, "{text}")
        } else {
            write!(w, "{field}={text}")
        }
    })
    .delimited(" ")
}
