//! Client commands: connect with a bearer token, call the RPC, print the answer.

use std::io::Write;
use std::process::ExitCode;
use std::time::SystemTime;

use serde_json::json;
use tonic::Status;

use super::output::{self, Out};
use super::{AuditCmd, Cmd, Connection, DockerCmd, GrantCmd, GroupCmd, IssueArgs, TokenCmd};
use crate::api::convert::timestamp;
use crate::client::{ClientError, Clients};
use crate::pb;

/// A client-side failure, printed as one line.
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{}: {}", crate::api::status::code_name(.0.code()), .0.message())]
    Rpc(Status),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl From<Status> for CliError {
    fn from(s: Status) -> Self {
        CliError::Rpc(s)
    }
}

fn token(conn: &Connection) -> Result<Option<String>, CliError> {
    if let Some(t) = &conn.token {
        return Ok(Some(t.trim().to_string()));
    }
    let (path, explicit) = match &conn.token_file {
        Some(p) => (p.clone(), true),
        None => {
            let data = std::env::var_os(crate::config::ENV_DATA)
                .map(Into::into)
                .unwrap_or_else(crate::config::default_data_dir);
            (data.join(crate::config::ADMIN_TOKEN_FILE), false)
        }
    };
    match std::fs::read_to_string(&path) {
        Ok(s) => Ok(Some(s.trim().to_string())),
        Err(e) if explicit => Err(CliError::Usage(format!(
            "cannot read token file {}: {e}",
            path.display()
        ))),
        Err(_) => Ok(None),
    }
}

async fn connect(conn: &Connection) -> Result<Clients, CliError> {
    let token = token(conn)?;
    let opts = crate::client::ConnectOptions {
        tls_ca: conn.tls_ca.clone(),
        tls_cert: conn.tls_cert.clone(),
        tls_key: conn.tls_key.clone(),
        timeout: Some(conn.timeout),
    };
    Ok(Clients::connect_with(&conn.server, token.as_deref(), &opts).await?)
}

/// Runs a client command; prints one error line and exits non-zero on failure.
pub async fn run(conn: Connection, cmd: Cmd) -> ExitCode {
    let out = Out { json: conn.json };
    match dispatch(&conn, cmd, &out).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("privledger: {}", crate::safe_text::escape(&e.to_string()));
            match e {
                CliError::Usage(_) => ExitCode::from(64),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

fn rid(r: Option<String>) -> String {
    r.unwrap_or_default()
}

fn parse_position(at: Option<String>) -> Result<Option<pb::Position>, CliError> {
    let Some(at) = at else { return Ok(None) };
    let at_pos = if let Ok(seq) = at.parse::<u64>() {
        pb::position::At::Seq(seq)
    } else {
        let t = parse_rfc3339(&at).map_err(|e| {
            CliError::Usage(format!(
                "--at {at:?} is neither a seq nor an RFC 3339 time: {e}"
            ))
        })?;
        pb::position::At::Time(system_time(t))
    };
    Ok(Some(pb::Position { at: Some(at_pos) }))
}

/// An RFC 3339 time: `Z`, a numeric offset (`+01:00`, `-0530`) or none (UTC).
fn parse_rfc3339(s: &str) -> Result<SystemTime, String> {
    let s = s.trim();
    // humantime reads `Z` and zone-less times; an offset is taken off by hand.
    let (base, offset_secs) = match split_offset(s) {
        Some((base, secs)) => (base, secs),
        None => (s, 0),
    };
    let t = humantime::parse_rfc3339_weak(base).map_err(|e| e.to_string())?;
    let shift = std::time::Duration::from_secs(offset_secs.unsigned_abs());
    // 08:00+01:00 is 07:00Z.
    Ok(if offset_secs >= 0 {
        t - shift
    } else {
        t + shift
    })
}

/// `s` without a trailing `±HH:MM` or `±HHMM` offset, and the offset in seconds.
fn split_offset(s: &str) -> Option<(&str, i64)> {
    let tail_at = s.rfind(['+', '-'])?;
    // The date's own dashes come before the `T` (or space) of the time.
    let time_at = s.find(['T', 't', ' '])?;
    if tail_at < time_at {
        return None;
    }
    let (base, tail) = s.split_at(tail_at);
    let sign = if tail.starts_with('-') { -1 } else { 1 };
    let digits: String = tail[1..].chars().filter(|c| *c != ':').collect();
    if digits.len() != 4 || !digits.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let (h, m): (i64, i64) = (digits[..2].parse().ok()?, digits[2..].parse().ok()?);
    if h > 23 || m > 59 {
        return None;
    }
    Some((base, sign * (h * 3600 + m * 60)))
}

fn system_time(t: SystemTime) -> prost_types::Timestamp {
    let ns = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0);
    timestamp(ns)
}

fn parse_expiry(s: &str) -> Result<prost_types::Timestamp, CliError> {
    if let Ok(d) = humantime::parse_duration(s) {
        return Ok(system_time(SystemTime::now() + d));
    }
    parse_rfc3339(s).map(system_time).map_err(|_| {
        CliError::Usage(format!(
            "--expires {s:?} is neither a duration (30d, 12h) nor an RFC 3339 time"
        ))
    })
}

fn socket_value(s: &str) -> Result<i32, CliError> {
    let v: crate::ledger::event::SocketAccess = s.parse().map_err(CliError::Usage)?;
    Ok(match v {
        crate::ledger::event::SocketAccess::None => pb::SocketAccess::None,
        crate::ledger::event::SocketAccess::Raw => pb::SocketAccess::Raw,
        crate::ledger::event::SocketAccess::Limited => pb::SocketAccess::Limited,
    }
    .into())
}

fn issue_request(a: IssueArgs) -> Result<pb::IssueGrantRequest, CliError> {
    let subject = match (a.user, a.group) {
        (Some(u), None) => pb::subject::Kind::User(u),
        (None, Some(g)) => pb::subject::Kind::Group(g),
        _ => {
            return Err(CliError::Usage(
                "give exactly one of --user or --group".into(),
            ))
        }
    };
    let mode = match a.mode.as_deref() {
        None => pb::SocketMode::Unspecified,
        Some("rw") => pb::SocketMode::Rw,
        Some("ro") => pb::SocketMode::Ro,
        Some(m) => return Err(CliError::Usage(format!("--mode {m:?}: expected rw or ro"))),
    };
    let limits = pb::Limits {
        max_containers: a.max_containers,
        max_volumes: a.max_volumes,
        max_networks: a.max_networks,
        max_storage_gb: a.max_storage_gb,
        cpu_cap_cores: a.cpu_cap_cores,
        mem_cap_gb: a.mem_cap_gb,
        allow_dangerous_flags: a.allow_dangerous_flags.then_some(true),
    };
    let has_limits = limits != pb::Limits::default();
    Ok(pb::IssueGrantRequest {
        subject: Some(pb::Subject {
            kind: Some(subject),
        }),
        spec: Some(pb::GrantSpec {
            socket: socket_value(&a.socket)?,
            socket_mode: mode.into(),
            privileged: a.privileged,
            limits: has_limits.then_some(limits),
        }),
        expires_at: a.expires.as_deref().map(parse_expiry).transpose()?,
        reason: a.reason,
        request_id: rid(a.request_id),
    })
}

async fn dispatch(conn: &Connection, cmd: Cmd, out: &Out) -> Result<ExitCode, CliError> {
    let mut c = connect(conn).await?;
    match cmd {
        Cmd::Serve(_) | Cmd::AdminToken { .. } => {
            unreachable!("serve and admin-token are handled by the caller")
        }
        Cmd::Group(g) => match g {
            GroupCmd::Create { name, request_id } => {
                let g = c
                    .admin
                    .create_group(pb::CreateGroupRequest {
                        name,
                        request_id: rid(request_id),
                    })
                    .await?
                    .into_inner();
                out.group(&g);
            }
            GroupCmd::Delete { name, request_id } => {
                let r = c
                    .admin
                    .delete_group(pb::DeleteGroupRequest {
                        name: name.clone(),
                        request_id: rid(request_id),
                    })
                    .await?
                    .into_inner();
                out.receipt(&format!("deleted group {name}"), &r);
            }
            GroupCmd::List => {
                let r = c
                    .admin
                    .list_groups(pb::ListGroupsRequest {})
                    .await?
                    .into_inner();
                out.groups(&r);
            }
            GroupCmd::Show { name } => {
                let g = c
                    .admin
                    .get_group(pb::GetGroupRequest { name })
                    .await?
                    .into_inner();
                out.group(&g);
            }
            GroupCmd::AddMember {
                group,
                user,
                request_id,
            } => {
                let r = c
                    .admin
                    .add_member(pb::MemberRequest {
                        group: group.clone(),
                        user: user.clone(),
                        request_id: rid(request_id),
                    })
                    .await?
                    .into_inner();
                out.receipt(&format!("added {user} to {group}"), &r);
            }
            GroupCmd::RemoveMember {
                group,
                user,
                request_id,
            } => {
                let r = c
                    .admin
                    .remove_member(pb::MemberRequest {
                        group: group.clone(),
                        user: user.clone(),
                        request_id: rid(request_id),
                    })
                    .await?
                    .into_inner();
                out.receipt(&format!("removed {user} from {group}"), &r);
            }
        },
        Cmd::Grant(g) => match g {
            GrantCmd::Issue(a) => {
                let g = c.admin.issue_grant(issue_request(a)?).await?.into_inner();
                out.grants(&[g], true);
            }
            GrantCmd::Revoke {
                id,
                reason,
                request_id,
            } => {
                let g = c
                    .admin
                    .revoke_grant(pb::RevokeGrantRequest {
                        grant_id: id,
                        reason,
                        request_id: rid(request_id),
                    })
                    .await?
                    .into_inner();
                out.grants(&[g], true);
            }
            GrantCmd::List { user, group, all } => {
                let subject = match (user, group) {
                    (Some(u), _) => Some(pb::Subject {
                        kind: Some(pb::subject::Kind::User(u)),
                    }),
                    (_, Some(g)) => Some(pb::Subject {
                        kind: Some(pb::subject::Kind::Group(g)),
                    }),
                    _ => None,
                };
                let r = c
                    .admin
                    .list_grants(pb::ListGrantsRequest {
                        subject,
                        include_inactive: all,
                    })
                    .await?
                    .into_inner();
                out.grants(&r.grants, false);
            }
        },
        Cmd::Check { user, at } => {
            let a = c
                .authz
                .check_access(pb::CheckAccessRequest {
                    user,
                    at: parse_position(at)?,
                    ..Default::default()
                })
                .await?
                .into_inner();
            out.access(&a);
        }
        Cmd::Authorize {
            user,
            server_name,
            image,
            request_id,
        } => {
            let d = c
                .authz
                .authorize_spawn(pb::AuthorizeSpawnRequest {
                    user,
                    server_name,
                    image,
                    request_id: rid(request_id),
                })
                .await?
                .into_inner();
            out.decision(&d);
        }
        Cmd::Who { at } => {
            let r = c
                .authz
                .who_has_access(pb::WhoHasAccessRequest {
                    at: parse_position(at)?,
                })
                .await?
                .into_inner();
            out.who(&r);
        }
        Cmd::Audit(a) => match a {
            AuditCmd::Tail {
                from,
                follow,
                kinds,
                subject,
            } => {
                let mut s = c
                    .audit
                    .stream(pb::StreamRequest {
                        from_seq: from,
                        follow,
                        kinds,
                        subject: subject.unwrap_or_default(),
                    })
                    .await?
                    .into_inner();
                let stdout = std::io::stdout();
                while let Some(e) = s.message().await? {
                    let mut lock = stdout.lock();
                    let line = if out.json {
                        output::entry_json(&e).to_string()
                    } else {
                        output::entry_line(&e)
                    };
                    if writeln!(lock, "{line}")
                        .and_then(|()| lock.flush())
                        .is_err()
                    {
                        break; // stdout closed (e.g. piped into head)
                    }
                }
            }
            AuditCmd::Export { out: path, from } => {
                let head = c.audit.head(pb::HeadRequest {}).await?.into_inner();
                let total = head
                    .seq
                    .saturating_sub(from.max(1).max(head.earliest_seq) - 1);
                let file = std::fs::File::create(&path)?;
                let mut w = std::io::BufWriter::new(file);
                let bar = indicatif::ProgressBar::new(total);
                bar.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{bar:40} {pos}/{len} entries ({per_sec}, eta {eta})",
                    )
                    .expect("valid template"),
                );
                let mut s = c
                    .audit
                    .stream(pb::StreamRequest {
                        from_seq: from,
                        follow: false,
                        kinds: vec![],
                        subject: String::new(),
                    })
                    .await?
                    .into_inner();
                let mut n = 0u64;
                while let Some(e) = s.message().await? {
                    if e.seq > head.seq {
                        break;
                    }
                    serde_json::to_writer(&mut w, &output::entry_json(&e))
                        .map_err(std::io::Error::other)?;
                    w.write_all(b"\n")?;
                    n += 1;
                    if n % 1024 == 0 {
                        bar.set_position(n);
                    }
                }
                w.flush()?;
                w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
                bar.finish_and_clear();
                if out.json {
                    println!(
                        "{}",
                        json!({"exported": n, "out": path, "head_seq": head.seq})
                    );
                } else {
                    println!(
                        "exported {n} entries to {} (through seq {})",
                        path.display(),
                        head.seq
                    );
                }
            }
            AuditCmd::Head => {
                let h = c.audit.head(pb::HeadRequest {}).await?.into_inner();
                out.head(&h);
            }
        },
        Cmd::Verify { from, to } => {
            let r = c
                .audit
                .verify(pb::VerifyRequest {
                    from_seq: from,
                    to_seq: to,
                })
                .await?
                .into_inner();
            out.verify(&r);
            if !r.ok {
                return Ok(ExitCode::from(2));
            }
        }
        Cmd::Docker(DockerCmd::Import { file }) => {
            let text = std::fs::read_to_string(&file)?;
            let mut batches: Vec<Vec<pb::DockerEvent>> = vec![Vec::new()];
            let mut size = 0usize;
            for (i, line) in text.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                let e = crate::docker::RawEvent::from_json_line(line)
                    .map_err(|e| CliError::Usage(format!("{}:{}: {e}", file.display(), i + 1)))?;
                let ev = pb::DockerEvent {
                    r#type: e.typ,
                    action: e.action,
                    id: e.id,
                    time_nano: e.time_nano,
                    attributes: e.attributes.into_iter().collect(),
                };
                let n = prost::Message::encoded_len(&ev);
                // Keep each request well under the server's request size limit.
                match batches.last_mut() {
                    Some(b) if size + n <= 32 * 1024 || b.is_empty() => b.push(ev),
                    _ => {
                        batches.push(vec![ev]);
                        size = 0;
                    }
                }
                size += n;
            }
            let (mut rec, mut held, mut ign) = (0, 0, 0);
            for events in batches.into_iter().filter(|b| !b.is_empty()) {
                let r = c
                    .admin
                    .import_docker_events(pb::ImportDockerEventsRequest { events })
                    .await?
                    .into_inner();
                rec += r.recorded;
                held += r.already_held;
                ign += r.ignored;
            }
            if out.json {
                println!(
                    "{}",
                    json!({"recorded": rec, "already_held": held, "ignored": ign})
                );
            } else {
                println!("recorded {rec} events, skipped {held} already in the ledger, ignored {ign} that privledger does not record");
            }
        }
        Cmd::Status => {
            let mut health = tonic_health::pb::health_client::HealthClient::new(c.channel.clone());
            let mut rows = Vec::new();
            for svc in [
                "privledger.v1.Admin",
                "privledger.v1.Authorizer",
                "privledger.v1.Audit",
                "privledger.v1.DockerWatcher",
            ] {
                let st = match health
                    .check(tonic_health::pb::HealthCheckRequest {
                        service: svc.into(),
                    })
                    .await
                {
                    Ok(r) => match r.into_inner().status {
                        1 => "serving",
                        2 => "not serving",
                        _ => "unknown",
                    },
                    Err(s) if s.code() == tonic::Code::NotFound => "disabled",
                    Err(s) => return Err(s.into()),
                };
                rows.push((svc, st));
            }
            let head_resp = c
                .audit
                .head(pb::HeadRequest {})
                .await
                .ok()
                .map(|h| h.into_inner());
            let head = head_resp.as_ref().map(|h| h.seq);
            let writes = head_resp.as_ref().map(|h| {
                if h.writable {
                    "accepted".to_string()
                } else {
                    format!("refused: {}", h.write_problem)
                }
            });
            if out.json {
                let services: serde_json::Map<String, serde_json::Value> = rows
                    .iter()
                    .map(|(k, v)| (k.to_string(), json!(v)))
                    .collect();
                println!(
                    "{}",
                    json!({"server": conn.server, "services": services, "head_seq": head, "writes": writes})
                );
            } else {
                println!("server {}", conn.server);
                for (svc, st) in &rows {
                    let what = match *svc {
                        "privledger.v1.DockerWatcher" => match *st {
                            "serving" => "attached to the Docker daemon, following events",
                            "not serving" => "not attached (daemon unreachable; retrying)",
                            _ => "disabled (--docker off)",
                        },
                        _ => "",
                    };
                    println!("  {svc:<28} {st:<12} {what}");
                }
                if let Some(h) = head {
                    println!("  ledger head seq {h}");
                }
                if let Some(w) = writes {
                    println!("  writes {}", crate::safe_text::escape(&w.to_string()));
                }
            }
        }
        Cmd::Token(t) => match t {
            TokenCmd::Create {
                name,
                role,
                expires,
                request_id,
            } => {
                let role = match role.as_str() {
                    "admin" => pb::Role::Admin,
                    "spawner" => pb::Role::Spawner,
                    "auditor" => pb::Role::Auditor,
                    r => {
                        return Err(CliError::Usage(format!(
                            "--role {r:?}: expected admin, spawner or auditor"
                        )))
                    }
                };
                let r = c
                    .admin
                    .create_token(pb::CreateTokenRequest {
                        name,
                        role: role.into(),
                        request_id: rid(request_id),
                        expires_at: expires.as_deref().map(parse_expiry).transpose()?,
                    })
                    .await?
                    .into_inner();
                out.token_created(&r);
            }
            TokenCmd::List => {
                let r = c
                    .admin
                    .list_tokens(pb::ListTokensRequest {})
                    .await?
                    .into_inner();
                out.tokens(&r);
            }
            TokenCmd::Revoke { name, request_id } => {
                let r = c
                    .admin
                    .revoke_token(pb::RevokeTokenRequest {
                        name: name.clone(),
                        request_id: rid(request_id),
                    })
                    .await?
                    .into_inner();
                out.receipt(&format!("revoked token {name}"), &r);
            }
        },
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_times_with_an_offset_mean_the_same_instant_as_in_utc() {
        let z = parse_rfc3339("2026-12-01T06:58:30Z").unwrap();
        for same in [
            "2026-12-01T07:58:30+01:00",
            "2026-12-01T07:58:30+0100",
            "2026-12-01T01:28:30-05:30",
            "2026-12-01T06:58:30+00:00",
            "2026-12-01 07:58:30+01:00",
            "2026-12-01T06:58:30",
        ] {
            assert_eq!(parse_rfc3339(same).unwrap(), z, "{same}");
        }
        assert_eq!(
            parse_rfc3339("2026-12-01T07:58:30.5+01:00").unwrap(),
            z + std::time::Duration::from_millis(500)
        );
        for bad in [
            "2026-12-01T07:58:30+1",
            "2026-12-01T07:58:30+25:00",
            "yesterday",
        ] {
            assert!(parse_rfc3339(bad).is_err(), "{bad}");
        }
    }
}
