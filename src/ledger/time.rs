//! Ledger time: unix nanoseconds, and their RFC 3339 rendering.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::event::UnixNanos;

pub fn now_ns() -> UnixNanos {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// RFC 3339 rendering of a unix-ns time (UTC).
pub fn format_time(ns: UnixNanos) -> String {
    let t = if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        UNIX_EPOCH
    };
    humantime::format_rfc3339_nanos(t).to_string()
}
