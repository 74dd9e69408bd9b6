//! `report access`: access intervals as a table a person reads, JSON, or CSV for a
//! spreadsheet (one row per span, RFC 3339 times, the grants and groups behind it).

use std::io::Write;
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};

use super::args::Format;
use super::client::CliError;
use super::output::{self, ago, mode, socket, ts};
use crate::pb;
use crate::safe_text::escape;

/// The access a span held at its strongest: `raw:rw`, `limited`, `+ privileged`.
fn access_text(i: &pb::AccessInterval) -> String {
    let mut parts = Vec::new();
    match socket(i.socket) {
        "raw" => parts.push(format!("raw:{}", mode(i.socket_mode))),
        "none" => {}
        s => parts.push(s.to_string()),
    }
    if i.privileged {
        parts.push("privileged".into());
    }
    parts.join(" + ")
}

/// `7 (direct)`, `12 via docker-privileged`.
fn grant_text(c: &pb::Contribution) -> String {
    if c.via_group.is_empty() {
        format!("{} (direct)", c.grant_id)
    } else {
        format!("{} via {}", c.grant_id, c.via_group)
    }
}

fn groups(i: &pb::AccessInterval) -> Vec<String> {
    let mut g: Vec<String> = i
        .grants
        .iter()
        .filter(|c| !c.via_group.is_empty())
        .map(|c| c.via_group.clone())
        .collect();
    g.sort();
    g.dedup();
    g
}

fn nanos(t: &Option<prost_types::Timestamp>) -> Option<i128> {
    t.as_ref()
        .map(|t| i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanos))
}

/// How long the span lasted within the window, rounded for reading.
fn length(i: &pb::AccessInterval, window_end: &Option<prost_types::Timestamp>) -> String {
    let (Some(a), Some(b)) = (
        nanos(&i.from),
        nanos(if i.to.is_some() { &i.to } else { window_end }),
    ) else {
        return String::new();
    };
    let secs = u64::try_from((b - a).max(0) / 1_000_000_000).unwrap_or(u64::MAX);
    let rounded = match secs {
        s if s >= 86_400 => s / 3600 * 3600,
        s if s >= 3600 => s / 60 * 60,
        s => s,
    };
    humantime::format_duration(Duration::from_secs(rounded)).to_string()
}

fn interval_json(i: &pb::AccessInterval) -> Value {
    json!({
        "user": i.user,
        "from_seq": i.from_seq, "from": output::ts_json(&i.from), "began_before": i.began_before,
        "to_seq": i.to_seq, "to": output::ts_json(&i.to), "ongoing": i.to_seq.is_none(),
        "socket": socket(i.socket), "socket_mode": mode(i.socket_mode), "privileged": i.privileged,
        "grants": i.grants.iter().map(|c| json!({
            "grant_id": c.grant_id,
            "via_group": if c.via_group.is_empty() { Value::Null } else { Value::String(c.via_group.clone()) },
            "spec": output::spec_json(&c.spec), "expires_at": output::ts_json(&c.expires_at), "reason": c.reason,
        })).collect::<Vec<_>>(),
        "groups": groups(i),
        "held": i.held,
        "containers": i.containers.iter().map(|c| json!({"id": c.id, "name": c.name})).collect::<Vec<_>>(),
    })
}

/// Writes the report; a reader that stops early (`| head`) ends it quietly.
pub(super) fn access(r: &pb::AccessIntervalsResponse, format: Format) -> Result<(), CliError> {
    let stdout = std::io::stdout();
    let mut w = stdout.lock();
    let written = match format {
        Format::Json => writeln!(
            w,
            "{}",
            json!({
                "from_seq": r.from_seq, "from": output::ts_json(&r.from),
                "to_seq": r.to_seq, "to": output::ts_json(&r.to),
                "intervals": r.intervals.iter().map(interval_json).collect::<Vec<_>>(),
            })
        ),
        Format::Csv => csv_rows(r, &mut w),
        Format::Table => table(r, &mut w),
    };
    match written.and_then(|()| w.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

fn csv_rows(r: &pb::AccessIntervalsResponse, w: &mut dyn Write) -> std::io::Result<()> {
    let mut c = csv::Writer::from_writer(w);
    let header = [
        "user",
        "from",
        "from_seq",
        "to",
        "to_seq",
        "began_before_window",
        "ongoing_at_window_end",
        "access",
        "grants",
        "groups",
        "grant_reasons",
        "held_by_container",
        "containers",
    ];
    c.write_record(header).map_err(std::io::Error::other)?;
    for i in &r.intervals {
        let row = [
            i.user.clone(),
            ts(&i.from),
            i.from_seq.to_string(),
            ts(&i.to),
            i.to_seq.map(|s| s.to_string()).unwrap_or_default(),
            i.began_before.to_string(),
            i.to_seq.is_none().to_string(),
            access_text(i),
            i.grants
                .iter()
                .map(grant_text)
                .collect::<Vec<_>>()
                .join("; "),
            groups(i).join("; "),
            i.grants
                .iter()
                .map(|c| c.reason.clone())
                .collect::<Vec<_>>()
                .join("; "),
            if i.held { "yes" } else { "no" }.to_string(),
            i.containers
                .iter()
                .map(|c| c.name.trim_start_matches('/').to_string())
                .collect::<Vec<_>>()
                .join("; "),
        ];
        // A cell a spreadsheet would run as a formula is quoted as text.
        let row: Vec<String> = row.into_iter().map(defuse_formula).collect();
        c.write_record(&row).map_err(std::io::Error::other)?;
    }
    c.flush()
}

/// Spreadsheets run a cell that starts with `=`, `+`, `-` or `@` as a formula; a
/// user name or reason may start so (CSV injection). A leading apostrophe makes it
/// text, as OWASP advises.
fn defuse_formula(s: String) -> String {
    match s.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{s}"),
        _ => s,
    }
}

fn table(r: &pb::AccessIntervalsResponse, w: &mut dyn Write) -> std::io::Result<()> {
    let now = SystemTime::now();
    let start = if r.from_seq == 0 {
        "the beginning".to_string()
    } else {
        format!("seq {} ({})", r.from_seq, ts(&r.from))
    };
    writeln!(w, "window: {start} to seq {} ({})", r.to_seq, ts(&r.to))?;
    if r.intervals.is_empty() {
        return writeln!(w, "no user held the asked access in this window");
    }
    let mut t = output::table(&[
        "user", "from", "to", "lasted", "access", "through", "held by",
    ]);
    for i in &r.intervals {
        let from = if i.began_before {
            format!("since before {}", ts(&i.from))
        } else {
            format!("{} (seq {})", ts(&i.from), i.from_seq)
        };
        let to = match i.to_seq {
            Some(s) => format!("{} (seq {}, {})", ts(&i.to), s, ago(&i.to, now)),
            None => "still held at the window's end".into(),
        };
        t.add_row(vec![
            escape(&i.user).into_owned(),
            from,
            to,
            length(i, &r.to),
            access_text(i),
            i.grants
                .iter()
                .map(|c| escape(&grant_text(c)).into_owned())
                .collect::<Vec<_>>()
                .join("\n"),
            if i.containers.is_empty() {
                "no container".into()
            } else {
                i.containers
                    .iter()
                    .map(|c| escape(c.name.trim_start_matches('/')).into_owned())
                    .collect::<Vec<_>>()
                    .join("\n")
            },
        ]);
    }
    writeln!(w, "{t}")
}

/// One image a user made through their limited socket.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageHeld {
    pub id: String,
    /// The entry that recorded it (the latest, when made again).
    pub seq: u64,
    pub time: Option<prost_types::Timestamp>,
    /// The call that made it (`POST /build`) and the name it was given.
    pub call: String,
    pub name: String,
}

/// The images a user made and has not removed, folded over their `proxy_call`
/// entries in order: `completed` entries add their `images` and drop their `removed`.
#[derive(Debug, Default)]
pub struct ImagesHeld {
    pub images: Vec<ImageHeld>,
}

impl ImagesHeld {
    pub fn add(&mut self, user: &str, e: &pb::Entry) {
        let Ok(v) = serde_json::from_slice::<Value>(&e.body) else {
            return;
        };
        let ev = &v["event"];
        if ev["user"] != user || ev["outcome"] != "completed" {
            return;
        }
        let ids = |k: &str| -> Vec<String> {
            ev[k]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        };
        for gone in ids("removed") {
            self.images.retain(|i| i.id != gone);
        }
        for id in ids("images") {
            self.images.retain(|i| i.id != id);
            self.images.push(ImageHeld {
                id,
                seq: e.seq,
                time: e.time,
                call: format!(
                    "{} {}",
                    ev["method"].as_str().unwrap_or(""),
                    ev["path"].as_str().unwrap_or("")
                ),
                name: ev["resource"].as_str().unwrap_or("").to_string(),
            });
        }
    }

    pub fn print(&self, user: &str, format: Format) -> Result<(), CliError> {
        let mut out = std::io::stdout().lock();
        let r = match format {
            Format::Json => {
                let v: Vec<Value> = self
                    .images
                    .iter()
                    .map(|i| {
                        json!({
                            "image": i.id, "seq": i.seq, "time": output::ts_json(&i.time),
                            "call": i.call, "name": i.name,
                        })
                    })
                    .collect();
                writeln!(out, "{}", json!({ "user": user, "images": v }))
            }
            Format::Csv => {
                let mut w = csv::Writer::from_writer(out);
                let mut rows = vec![["image", "seq", "time", "call", "name"].map(String::from)];
                for i in &self.images {
                    rows.push([
                        i.id.clone(),
                        i.seq.to_string(),
                        ts(&i.time),
                        i.call.clone(),
                        defuse_formula(i.name.clone()),
                    ]);
                }
                for r in rows {
                    w.write_record(&r).map_err(|e| CliError::Io(e.into()))?;
                }
                w.flush()
            }
            Format::Table if self.images.is_empty() => writeln!(
                out,
                "the ledger records no image that {} made through a limited socket and still holds",
                escape(user)
            ),
            Format::Table => {
                let mut t = output::table(&["image", "made at", "by", "name"]);
                for i in &self.images {
                    t.add_row(vec![
                        i.id.clone(),
                        format!("{} (seq {})", ts(&i.time), i.seq),
                        escape(&i.call).into_owned(),
                        escape(&i.name).into_owned(),
                    ]);
                }
                writeln!(out, "{t}")
            }
        };
        match r {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            r => r.map_err(CliError::Io),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_held_fold_made_and_removed_in_order() {
        let entry = |seq: u64, ev: Value| pb::Entry {
            seq,
            kind: "proxy_call".into(),
            body: serde_json::to_vec(&json!({ "event": ev })).unwrap().into(),
            ..Default::default()
        };
        let mut h = ImagesHeld::default();
        let made = |id: &str| json!({"user": "a", "outcome": "completed", "method": "POST", "path": "/build", "images": [id]});
        h.add("a", &entry(1, made("sha256:1")));
        h.add("a", &entry(2, made("sha256:2")));
        h.add(
            "a",
            &entry(
                3,
                json!({"user": "b", "outcome": "completed", "images": ["sha256:9"]}),
            ),
        );
        h.add(
            "a",
            &entry(
                4,
                json!({"user": "a", "outcome": "forwarded", "images": ["sha256:8"]}),
            ),
        );
        h.add(
            "a",
            &entry(
                5,
                json!({"user": "a", "outcome": "completed", "removed": ["sha256:1"]}),
            ),
        );
        let ids: Vec<&str> = h.images.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids, vec!["sha256:2"]);
        assert_eq!(h.images[0].call, "POST /build");
    }

    #[test]
    fn cells_a_spreadsheet_would_run_are_made_text() {
        for bad in ["=HYPERLINK(\"x\")", "+1", "-2+3", "@SUM(A1)", "\t=1"] {
            assert!(defuse_formula(bad.into()).starts_with('\''), "{bad}");
        }
        assert_eq!(defuse_formula("alice".into()), "alice");
        assert_eq!(defuse_formula(String::new()), "");
    }
}
