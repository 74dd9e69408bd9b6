//! Rendering of answers: human tables (comfy-table) or JSON (`--json`).

use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use serde_json::{json, Value};

use crate::ledger::format_time;
use crate::pb;
use crate::safe_text::escape;

/// Text from the server, as shown to a person: what could forge a line or hide
/// itself is escaped ([`crate::safe_text`]). JSON output needs no such care (its
/// strings are quoted and escaped by the encoder).
fn safe(s: &str) -> String {
    escape(s).into_owned()
}

pub struct Out {
    pub json: bool,
}

pub fn ts(t: &Option<prost_types::Timestamp>) -> String {
    t.as_ref()
        .map(|t| format_time(t.seconds * 1_000_000_000 + i64::from(t.nanos)))
        .unwrap_or_default()
}

pub fn ts_json(t: &Option<prost_types::Timestamp>) -> Value {
    match t {
        Some(_) => Value::String(ts(t)),
        None => Value::Null,
    }
}

/// `3 days ago`, `in 2h 5m`: how far `t` is from `now`, rounded for reading.
pub fn ago(t: &Option<prost_types::Timestamp>, now: std::time::SystemTime) -> String {
    let Some(t) = t else { return String::new() };
    let at = std::time::UNIX_EPOCH
        + std::time::Duration::new(t.seconds.max(0) as u64, t.nanos.max(0) as u32);
    let (d, past) = match now.duration_since(at) {
        Ok(d) => (d, true),
        Err(e) => (e.duration(), false),
    };
    let s = d.as_secs();
    let text = match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86_399 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{} days", s / 86_400),
    };
    if past {
        format!("{text} ago")
    } else {
        format!("in {text}")
    }
}

pub fn socket(v: i32) -> &'static str {
    match pb::SocketAccess::try_from(v) {
        Ok(pb::SocketAccess::Raw) => "raw",
        Ok(pb::SocketAccess::Limited) => "limited",
        _ => "none",
    }
}

pub fn mode(v: i32) -> &'static str {
    match pb::SocketMode::try_from(v) {
        Ok(pb::SocketMode::Ro) => "ro",
        _ => "rw",
    }
}

fn role(v: i32) -> &'static str {
    match pb::Role::try_from(v) {
        Ok(pb::Role::Admin) => "admin",
        Ok(pb::Role::Spawner) => "spawner",
        Ok(pb::Role::Auditor) => "auditor",
        Ok(pb::Role::Sync) => "sync",
        Ok(pb::Role::Watcher) => "watcher",
        _ => "unspecified",
    }
}

fn status(v: i32) -> &'static str {
    match pb::GrantStatus::try_from(v) {
        Ok(pb::GrantStatus::Active) => "active",
        Ok(pb::GrantStatus::Revoked) => "revoked",
        Ok(pb::GrantStatus::Expired) => "expired",
        _ => "unknown",
    }
}

fn subject(s: &Option<pb::Subject>) -> (String, String) {
    match s.as_ref().and_then(|s| s.kind.as_ref()) {
        Some(pb::subject::Kind::User(u)) => ("user".into(), safe(u)),
        Some(pb::subject::Kind::Group(g)) => ("group".into(), safe(g)),
        None => (String::new(), String::new()),
    }
}

fn spec_text(s: &Option<pb::GrantSpec>) -> String {
    let Some(s) = s else { return String::new() };
    let mut parts = Vec::new();
    match socket(s.socket) {
        "raw" => parts.push(format!("raw:{}", mode(s.socket_mode))),
        "limited" => parts.push("limited".into()),
        _ => {}
    }
    if s.privileged {
        parts.push("privileged".into());
    }
    parts.join(" + ")
}

/// A limited grant's limits as a person reads them: the ones set, then whether the
/// rest take their defaults (DESIGN §2: 10 containers, 10 volumes, 3 networks, 50 GB,
/// 2 cores, 8 GB).
fn limits_text(l: &Option<pb::Limits>) -> String {
    let l = l.clone().unwrap_or_default();
    let set: Vec<String> = [
        l.max_containers.map(|v| format!("{v} containers")),
        l.max_volumes.map(|v| format!("{v} volumes")),
        l.max_networks.map(|v| format!("{v} networks")),
        l.max_storage_gb.map(|v| format!("{v} GB storage")),
        l.cpu_cap_cores.map(|v| format!("{v} cores")),
        l.mem_cap_gb.map(|v| format!("{v} GB memory")),
        (l.allow_dangerous_flags == Some(true)).then(|| "dangerous flags".to_string()),
        l.max_pids.map(|v| format!("{v} pids")),
        l.publish.as_ref().map(|v| format!("ports {v}")),
        (l.allow_build == Some(true)).then(|| "builds".to_string()),
        (!l.pull_allow.is_empty()).then(|| format!("pull {}", l.pull_allow.join(" "))),
        (!l.push_allow.is_empty()).then(|| format!("push {}", l.push_allow.join(" "))),
    ]
    .into_iter()
    .flatten()
    .collect();
    let unset = [
        l.max_containers.is_none(),
        l.max_volumes.is_none(),
        l.max_networks.is_none(),
        l.max_storage_gb.is_none(),
        l.cpu_cap_cores.is_none(),
        l.mem_cap_gb.is_none(),
        l.max_pids.is_none(),
        l.publish.is_none(),
    ]
    .iter()
    .any(|u| *u);
    match (set.is_empty(), unset) {
        (true, _) => "defaults".into(),
        (false, true) => format!("{}, rest default", set.join(", ")),
        (false, false) => set.join(", "),
    }
}

fn limits_json(l: &Option<pb::Limits>) -> Value {
    match l {
        None => Value::Null,
        Some(l) => json!({
            "max_containers": l.max_containers, "max_volumes": l.max_volumes,
            "max_networks": l.max_networks, "max_storage_gb": l.max_storage_gb,
            "cpu_cap_cores": l.cpu_cap_cores, "mem_cap_gb": l.mem_cap_gb,
            "allow_dangerous_flags": l.allow_dangerous_flags,
            "max_pids": l.max_pids, "publish": l.publish,
            "allow_build": l.allow_build, "pull_allow": l.pull_allow,
            "push_allow": l.push_allow,
        }),
    }
}

pub fn spec_json(s: &Option<pb::GrantSpec>) -> Value {
    let Some(s) = s else { return Value::Null };
    json!({
        "socket": socket(s.socket), "socket_mode": mode(s.socket_mode),
        "privileged": s.privileged, "limits": limits_json(&s.limits),
    })
}

fn grant_json(g: &pb::Grant) -> Value {
    let (kind, name) = subject(&g.subject);
    json!({
        "id": g.id, "subject": {kind: name}, "spec": spec_json(&g.spec),
        "expires_at": ts_json(&g.expires_at), "reason": g.reason, "issued_by": g.issued_by,
        "issued_at": ts_json(&g.issued_at), "status": status(g.status),
        "ended_seq": g.ended_seq, "ended_reason": g.ended_reason, "builtin": g.builtin,
    })
}

fn effective_limits_json(l: &Option<pb::EffectiveLimits>) -> Value {
    let l = l.clone().unwrap_or_default();
    json!({
        "max_containers": l.max_containers, "max_volumes": l.max_volumes,
        "max_networks": l.max_networks, "max_storage_gb": l.max_storage_gb,
        "cpu_cap_cores": l.cpu_cap_cores, "mem_cap_gb": l.mem_cap_gb,
        "allow_dangerous_flags": l.allow_dangerous_flags,
        "max_pids": l.max_pids, "publish": l.publish,
        "allow_build": l.allow_build, "pull_allow": l.pull_allow,
        "push_allow": l.push_allow,
    })
}

pub fn access_json(a: &pb::Access) -> Value {
    let grants: Vec<Value> = a
        .provenance
        .iter()
        .map(|c| {
            json!({
                "grant_id": c.grant_id,
                "via_group": if c.via_group.is_empty() { Value::Null } else { Value::String(c.via_group.clone()) },
                "spec": spec_json(&c.spec), "expires_at": ts_json(&c.expires_at), "reason": c.reason,
            })
        })
        .collect();
    json!({
        "user": a.user, "socket": socket(a.socket), "socket_mode": mode(a.socket_mode),
        "privileged": a.privileged, "limits": effective_limits_json(&a.limits),
        "grants": grants, "seq": a.seq, "evaluated_at": ts_json(&a.evaluated_at),
    })
}

pub fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header(header.to_vec());
    t
}

/// The entry as JSON: metadata, the parsed event, and the exact hashed body text.
pub fn entry_json(e: &pb::Entry) -> Value {
    let body = String::from_utf8_lossy(&e.body).into_owned();
    let event = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|mut v| v.get_mut("event").map(Value::take))
        .unwrap_or(Value::Null);
    json!({
        "seq": e.seq, "time": ts_json(&e.time), "time_unix_nanos": e.time_unix_nanos,
        "actor": e.actor,
        "request_id": if e.request_id.is_empty() { Value::Null } else { Value::String(e.request_id.clone()) },
        "kind": e.kind, "event": event, "prev_hash": hex::encode(&e.prev_hash),
        "hash": hex::encode(&e.hash), "body": body,
    })
}

/// The fields that matter for each kind, in the order a person reads them.
fn short_fields(kind: &str) -> Vec<&'static str> {
    match kind {
        "group_created" | "builtin_group_restored" => vec!["group"],
        "group_deleted" => vec!["group", "removed_members", "ended_grants", "reason"],
        "member_added" | "member_removed" => vec!["group", "user", "reason"],
        "group_sync_changed" => vec!["group", "synced", "reason"],
        "grant_issued" => vec!["subject", "spec", "expires_at_ns", "reason"],
        "grant_revoked" => vec!["grant_id", "reason"],
        "grant_expired" => vec!["grant_id"],
        "token_issued" => vec!["name", "role", "expires_at_ns"],
        "token_revoked" => vec!["name"],
        "spawn_decided" => vec!["user", "allowed", "socket", "privileged", "decision_id"],
        "docker_container" => vec!["action", "name", "user", "privileged", "socket_mounts"],
        "alert" => vec!["alert", "name", "user", "details"],
        "container_stopped" => vec!["name", "user", "ok", "reason"],
        "proxy_call" => vec!["user", "method", "path", "outcome", "reason"],
        "state_checkpointed" => vec!["at_seq"],
        "server_started" => vec!["version"],
        _ => vec![],
    }
}

/// A field's value, shortened: times as RFC 3339, specs as `raw:rw + privileged`.
fn short_value(key: &str, v: &Value) -> Option<String> {
    Some(match (key, v) {
        (_, Value::Null) => return None,
        (k, Value::Number(n)) if k.ends_with("_ns") => format_time(n.as_i64()?),
        ("spec", Value::Object(o)) => {
            let mut parts = Vec::new();
            match o.get("socket").and_then(Value::as_str) {
                Some("raw") => parts.push(format!(
                    "raw:{}",
                    o.get("socket_mode").and_then(Value::as_str).unwrap_or("rw")
                )),
                Some("limited") => parts.push("limited".into()),
                _ => {}
            }
            if o.get("privileged").and_then(Value::as_bool) == Some(true) {
                parts.push("privileged".into());
            }
            parts.join("+")
        }
        ("subject", Value::Object(o)) => o
            .iter()
            .map(|(k, v)| format!("{k}:{}", v.as_str().unwrap_or_default()))
            .collect::<Vec<_>>()
            .join(","),
        ("socket_mounts", Value::Array(a)) if a.is_empty() => return None,
        ("socket_mounts", Value::Array(a)) => format!("{} socket mount(s)", a.len()),
        (_, Value::String(s)) if s.chars().count() > 60 => {
            format!("{}…", s.chars().take(59).collect::<String>())
        }
        (_, Value::String(s)) => s.clone(),
        (_, other) => other.to_string(),
    })
}

/// One short line per entry: seq, time, actor, kind and the fields that matter for
/// the kind (`--wide` prints every field).
pub fn entry_short(e: &pb::Entry) -> String {
    let event = serde_json::from_slice::<Value>(&e.body)
        .ok()
        .and_then(|mut v| v.get_mut("event").map(Value::take))
        .unwrap_or(Value::Null);
    let details: Vec<String> = short_fields(&e.kind)
        .into_iter()
        .filter_map(|k| {
            let v = short_value(k, event.get(k)?)?;
            let k = k.strip_suffix("_ns").unwrap_or(k);
            Some(format!("{}={}", safe(k), safe(&v)))
        })
        .collect();
    format!(
        "{:>6}  {}  {:<10}  {:<18}  {}",
        e.seq,
        ts(&e.time),
        safe(&e.actor),
        safe(&e.kind),
        details.join(" ")
    )
}

/// One line per entry with every field of its event.
pub fn entry_line(e: &pb::Entry) -> String {
    let mut event = serde_json::from_slice::<Value>(&e.body)
        .ok()
        .and_then(|mut v| v.get_mut("event").map(Value::take))
        .unwrap_or(Value::Null);
    if let Some(o) = event.as_object_mut() {
        o.remove("kind");
    }
    let details = match &event {
        Value::Object(o) => o
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => format!("{}={}", safe(k), safe(s)),
                // Nested values print as JSON, whose strings are escaped.
                other => format!("{}={}", safe(k), safe(&other.to_string())),
            })
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    };
    format!(
        "{:>6}  {}  {:<10}  {:<22}  {}",
        e.seq,
        ts(&e.time),
        safe(&e.actor),
        safe(&e.kind),
        details
    )
}

impl Out {
    fn print(&self, v: Value) {
        println!("{v}");
    }

    pub fn receipt(&self, what: &str, r: &pb::MutationReceipt) {
        let first = if r.first_seq == 0 { r.seq } else { r.first_seq };
        let seqs = if first < r.seq {
            format!("seqs {first}-{}", r.seq)
        } else {
            format!("seq {}", r.seq)
        };
        if self.json {
            self.print(json!({"seq": r.seq, "first_seq": first, "replayed": r.replayed}));
        } else if r.replayed {
            println!(
                "{} (already recorded at {seqs}; nothing appended)",
                safe(what)
            );
        } else {
            println!("{} ({seqs})", safe(what));
        }
    }

    pub fn group(&self, g: &pb::Group) {
        if self.json {
            self.print(json!({
                "name": g.name, "builtin": g.builtin, "synced": g.synced, "members": g.members,
                "grants": g.grants.iter().map(grant_json).collect::<Vec<_>>(),
                "created_seq": g.created_seq, "seq": g.seq, "replayed": g.replayed,
            }));
            return;
        }
        println!(
            "group {}{}{} (created at seq {})",
            safe(&g.name),
            if g.builtin { " [built-in]" } else { "" },
            if g.synced {
                " [synced from JupyterHub]"
            } else {
                ""
            },
            g.created_seq
        );
        println!(
            "members: {}",
            if g.members.is_empty() {
                "(none)".into()
            } else {
                g.members
                    .iter()
                    .map(|m| safe(m))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        );
        if !g.grants.is_empty() {
            self.grants(&g.grants, false);
        }
    }

    pub fn groups(&self, r: &pb::ListGroupsResponse) {
        if self.json {
            let gs: Vec<Value> = r
                .groups
                .iter()
                .map(|g| json!({"name": g.name, "builtin": g.builtin, "synced": g.synced, "members": g.member_count, "active_grants": g.active_grant_count, "created_seq": g.created_seq}))
                .collect();
            self.print(json!({"groups": gs, "seq": r.seq}));
            return;
        }
        let mut t = table(&[
            "group",
            "built-in",
            "synced",
            "members",
            "active grants",
            "created at seq",
        ]);
        for g in &r.groups {
            t.add_row(vec![
                safe(&g.name),
                if g.builtin {
                    "yes".into()
                } else {
                    String::new()
                },
                if g.synced {
                    "from JupyterHub".into()
                } else {
                    String::new()
                },
                g.member_count.to_string(),
                g.active_grant_count.to_string(),
                g.created_seq.to_string(),
            ]);
        }
        println!("{t}");
    }

    pub fn grants(&self, gs: &[pb::Grant], single: bool) {
        if self.json {
            if single && gs.len() == 1 {
                self.print(grant_json(&gs[0]));
            } else {
                self.print(json!({"grants": gs.iter().map(grant_json).collect::<Vec<_>>()}));
            }
            return;
        }
        let now = std::time::SystemTime::now();
        let mut t = table(&[
            "id", "subject", "gives", "limits", "expires", "status", "reason", "by",
        ]);
        for g in gs {
            let (k, n) = subject(&g.subject);
            let limited = g
                .spec
                .as_ref()
                .is_some_and(|s| socket(s.socket) == "limited");
            t.add_row(vec![
                g.id.to_string(),
                format!("{k}:{n}"),
                spec_text(&g.spec),
                if limited {
                    limits_text(&g.spec.as_ref().and_then(|s| s.limits.clone()))
                } else {
                    String::new()
                },
                match &g.expires_at {
                    Some(_) => format!("{}\n({})", ts(&g.expires_at), ago(&g.expires_at, now)),
                    None => "never".into(),
                },
                match g.ended_seq {
                    Some(s) if g.ended_reason.is_empty() => {
                        format!("{} at seq {s}", status(g.status))
                    }
                    Some(s) => format!(
                        "{} at seq {s}:\n{}",
                        status(g.status),
                        safe(&g.ended_reason)
                    ),
                    None => status(g.status).to_string(),
                },
                safe(&g.reason),
                safe(&g.issued_by),
            ]);
        }
        println!("{t}");
    }

    pub fn access(&self, a: &pb::Access) {
        if self.json {
            self.print(access_json(a));
            return;
        }
        println!(
            "user {}: socket {}{}{} (as of seq {}, {})",
            safe(&a.user),
            socket(a.socket),
            if socket(a.socket) == "raw" {
                format!(" ({})", mode(a.socket_mode))
            } else {
                String::new()
            },
            if a.privileged { ", privileged" } else { "" },
            a.seq,
            ts(&a.evaluated_at)
        );
        if socket(a.socket) == "limited" {
            let l = a.limits.clone().unwrap_or_default();
            println!(
                "limits: {} containers, {} volumes, {} networks, {} GB storage, {} cores, {} GB memory, {} pids, ports {}, dangerous flags {}, builds {}",
                l.max_containers, l.max_volumes, l.max_networks, l.max_storage_gb,
                l.cpu_cap_cores, l.mem_cap_gb, l.max_pids, l.publish,
                if l.allow_dangerous_flags { "allowed" } else { "not allowed" },
                if l.allow_build { "allowed" } else { "not allowed" }
            );
            if !l.pull_allow.is_empty() {
                println!("pull: {}", l.pull_allow.join(" "));
            }
            if !l.push_allow.is_empty() {
                println!("push: {}", l.push_allow.join(" "));
            }
        }
        if a.provenance.is_empty() {
            println!("no active grant reaches this user");
            return;
        }
        let mut t = table(&["grant", "via", "gives", "expires", "reason"]);
        for c in &a.provenance {
            t.add_row(vec![
                c.grant_id.to_string(),
                if c.via_group.is_empty() {
                    "(direct)".into()
                } else {
                    format!("group {}", safe(&c.via_group))
                },
                spec_text(&c.spec),
                ts(&c.expires_at),
                safe(&c.reason),
            ]);
        }
        println!("{t}");
    }

    pub fn decision(&self, d: &pb::Decision) {
        let f = d.fragments.clone().unwrap_or_default();
        if self.json {
            let mut labels: Vec<_> = f.labels.iter().collect();
            labels.sort();
            let mut env: Vec<_> = f.env.iter().collect();
            env.sort();
            self.print(json!({
                "decision_id": d.decision_id, "seq": d.seq, "evaluated_at_seq": d.evaluated_at_seq,
                "allowed": d.allowed, "reason": d.reason, "replayed": d.replayed,
                "access": d.access.as_ref().map(access_json),
                "fragments": {
                    "binds": f.binds, "privileged": f.privileged,
                    "labels": labels.into_iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect::<serde_json::Map<_, _>>(),
                    "env": env.into_iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect::<serde_json::Map<_, _>>(),
                },
            }));
            return;
        }
        println!(
            "decision {} (seq {}): {}",
            safe(&d.decision_id),
            d.seq,
            if d.allowed {
                "privileges granted"
            } else {
                "no privileges"
            }
        );
        println!("reason: {}", safe(&d.reason));
        for b in &f.binds {
            println!("bind: {}", safe(b));
        }
        if f.privileged {
            println!("privileged: true");
        }
        let mut env: Vec<_> = f.env.iter().collect();
        env.sort();
        for (k, v) in env {
            println!("env: {}={}", safe(k), safe(v));
        }
        let mut labels: Vec<_> = f.labels.iter().collect();
        labels.sort();
        for (k, v) in labels {
            println!("label: {}={}", safe(k), safe(v));
        }
    }

    pub fn who(&self, r: &pb::WhoHasAccessResponse) {
        if self.json {
            self.print(
                json!({"users": r.users.iter().map(access_json).collect::<Vec<_>>(), "seq": r.seq}),
            );
            return;
        }
        let mut t = table(&["user", "socket", "privileged", "through"]);
        for a in &r.users {
            t.add_row(vec![
                safe(&a.user),
                match socket(a.socket) {
                    "raw" => format!("raw ({})", mode(a.socket_mode)),
                    s => s.to_string(),
                },
                if a.privileged {
                    "yes".into()
                } else {
                    String::new()
                },
                a.provenance
                    .iter()
                    .map(|c| {
                        if c.via_group.is_empty() {
                            format!("grant {}", c.grant_id)
                        } else {
                            format!("grant {} via {}", c.grant_id, safe(&c.via_group))
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
            ]);
        }
        println!("{t}");
        println!("as of seq {}", r.seq);
    }

    pub fn head(&self, h: &pb::HeadResponse) {
        if self.json {
            self.print(json!({"seq": h.seq, "hash": hex::encode(&h.hash), "earliest_seq": h.earliest_seq, "time": ts_json(&h.time), "writable": h.writable, "write_problem": h.write_problem}));
        } else {
            println!(
                "head seq {} hash {} at {} (earliest retained seq {})",
                h.seq,
                hex::encode(&h.hash),
                ts(&h.time),
                h.earliest_seq
            );
            if !h.writable {
                println!("writes refused: {}", safe(&h.write_problem));
            }
        }
    }

    pub fn verify(&self, r: &pb::VerifyResponse) {
        if self.json {
            self.print(json!({
                "ok": r.ok, "checked": r.checked, "first_bad_seq": r.first_bad_seq,
                "problem": r.problem, "from_seq": r.from_seq, "to_seq": r.to_seq,
                "head_hash": hex::encode(&r.head_hash),
            }));
        } else if r.ok {
            println!(
                "ok: {} entries verified (seq {}..={}), last hash {}",
                r.checked,
                r.from_seq,
                r.to_seq,
                hex::encode(&r.head_hash)
            );
        } else {
            println!(
                "FAILED at seq {}: {} ({} entries checked before it)",
                r.first_bad_seq.unwrap_or_default(),
                safe(&r.problem),
                r.checked.saturating_sub(1)
            );
        }
    }

    pub fn token_created(&self, r: &pb::CreateTokenResponse) {
        if self.json {
            self.print(json!({"name": r.name, "role": role(r.role), "secret": r.secret, "seq": r.seq, "replayed": r.replayed}));
        } else if r.replayed {
            println!(
                "token {} was already created at seq {}; its secret is shown only once",
                safe(&r.name),
                r.seq
            );
        } else {
            println!(
                "token {} ({}) created at seq {}",
                safe(&r.name),
                role(r.role),
                r.seq
            );
            println!("secret (shown once; only its hash is stored):");
            println!("{}", r.secret);
        }
    }

    pub fn tokens(&self, r: &pb::ListTokensResponse) {
        if self.json {
            let ts: Vec<Value> = r.tokens.iter().map(|t| json!({"name": t.name, "role": role(t.role), "created_seq": t.created_seq, "created_by": t.created_by, "revoked": t.revoked, "revoked_seq": t.revoked_seq, "expires_at": ts_json(&t.expires_at), "expired": t.expired})).collect();
            self.print(json!({"tokens": ts}));
            return;
        }
        let now = std::time::SystemTime::now();
        let mut t = table(&["name", "role", "created at seq", "by", "expires", "revoked"]);
        for k in &r.tokens {
            t.add_row(vec![
                safe(&k.name),
                role(k.role).to_string(),
                k.created_seq.to_string(),
                safe(&k.created_by),
                match &k.expires_at {
                    None => "never".into(),
                    Some(_) if k.expired => format!("expired {}", ago(&k.expires_at, now)),
                    Some(_) => format!("{} ({})", ts(&k.expires_at), ago(&k.expires_at, now)),
                },
                k.revoked_seq
                    .map(|s| format!("at seq {s}"))
                    .unwrap_or_default(),
            ]);
        }
        println!("{t}");
    }
}
