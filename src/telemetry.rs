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

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    /// Collects what the subscriber writes.
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_logged_value_cannot_forge_a_line_or_hide_text() {
        let buf = Buf::default();
        let out = buf.clone();
        let sub = tracing_subscriber::fmt()
            .fmt_fields(super::safe_fields())
            .with_ansi(false)
            .with_writer(move || out.clone())
            .finish();
        tracing::subscriber::with_default(sub, || {
            let user = "mallory\n2026-12-01T00:00:00Z  INFO grant revoked";
            let group = "docker\u{200b}-privileged\u{202e}";
            tracing::info!(%user, %group, "member added");
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.contains("user=mallory\\n2026"), "{text}");
        assert!(
            text.contains("group=docker\\u{200b}-privileged\\u{202e}"),
            "{text}"
        );
    }
}
