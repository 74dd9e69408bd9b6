//! `audit tail`: the entries a person asked for, the last N of them, from a time,
//! with kinds left out, and the stream kept open with --follow. The server filters
//! by kind and subject; the count, the time and the kinds left out are applied here.

use std::collections::VecDeque;
use std::io::Write;

use super::client::CliError;
use crate::client::Clients;
use crate::pb;

pub struct Tail {
    pub from: Option<u64>,
    /// The last N entries that pass the filters.
    pub lines: Option<usize>,
    pub since_ns: Option<i64>,
    pub follow: bool,
    pub kinds: Vec<String>,
    pub exclude: Vec<String>,
    pub subject: String,
}

impl Tail {
    /// Whether `e` passes what the server does not filter.
    fn keeps(&self, e: &pb::Entry) -> bool {
        if self.since_ns.is_some_and(|t| e.time_unix_nanos < t) {
            return false;
        }
        if self.exclude.is_empty() {
            return true;
        }
        if self.exclude.contains(&e.kind) {
            return false;
        }
        // An alert's own kind names the alerts of that kind.
        if e.kind == "alert" {
            let alert = serde_json::from_slice::<serde_json::Value>(&e.body)
                .ok()
                .and_then(|v| v["event"]["alert"].as_str().map(str::to_string));
            if alert.is_some_and(|a| self.exclude.contains(&a)) {
                return false;
            }
        }
        true
    }

    /// Whether only the server's filters apply (then the last N start at head - N).
    fn unfiltered(&self) -> bool {
        self.kinds.is_empty()
            && self.exclude.is_empty()
            && self.subject.is_empty()
            && self.since_ns.is_none()
    }
}

/// Prints the entries `t` asks for with `show`, until the stream ends (or forever,
/// with --follow); a closed stdout (`| head`) ends it quietly.
pub async fn run(
    c: &mut Clients,
    t: &Tail,
    show: impl Fn(&pb::Entry) -> String,
) -> Result<(), CliError> {
    let stdout = std::io::stdout();
    let print = |e: &pb::Entry| -> bool {
        let mut lock = stdout.lock();
        writeln!(lock, "{}", show(e))
            .and_then(|()| lock.flush())
            .is_ok()
    };
    let mut from = t.from.unwrap_or(1).max(1);
    if let Some(n) = t.lines {
        let head = c.audit.head(pb::HeadRequest {}).await?.into_inner().seq;
        if t.unfiltered() {
            from = from.max(head.saturating_sub(n as u64).saturating_add(1));
        }
        // The last N of what passes, up to the head as it is now.
        let mut s = c
            .audit
            .stream(pb::StreamRequest {
                from_seq: from,
                follow: false,
                kinds: t.kinds.clone(),
                subject: t.subject.clone(),
            })
            .await?
            .into_inner();
        let mut last: VecDeque<pb::Entry> = VecDeque::with_capacity(n.min(4096));
        let mut seen = from.saturating_sub(1);
        while let Some(e) = s.message().await? {
            seen = seen.max(e.seq);
            if !t.keeps(&e) || n == 0 {
                continue;
            }
            if last.len() == n {
                last.pop_front();
            }
            last.push_back(e);
        }
        for e in &last {
            if !print(e) {
                return Ok(());
            }
        }
        if !t.follow {
            return Ok(());
        }
        from = seen.max(head).saturating_add(1);
    }
    let mut s = c
        .audit
        .stream(pb::StreamRequest {
            from_seq: from,
            follow: t.follow,
            kinds: t.kinds.clone(),
            subject: t.subject.clone(),
        })
        .await?
        .into_inner();
    while let Some(e) = s.message().await? {
        if t.keeps(&e) && !print(&e) {
            break; // stdout closed (e.g. piped into head)
        }
    }
    Ok(())
}
