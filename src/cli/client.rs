//! Client commands: connect with a bearer token, call the RPC, print the answer.

use std::process::ExitCode;
use std::time::SystemTime;

use serde_json::json;
use tonic::Status;

use super::args::{
    AuditCmd, Cmd, Connection, DockerCmd, GrantCmd, GroupCmd, IssueArgs, ModeArg, ReportCmd,
    RoleArg, SocketArg, TokenCmd,
};
use super::output::{self, Out};
use super::{report_error, Exit};
use crate::api::convert::timestamp;
use crate::client::{ClientError, Clients};
use crate::pb;

/// A client-side failure, printed as one line (or JSON).
#[derive(Debug, thiserror::Error)]
pub(super) enum CliError {
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

impl CliError {
    /// The exit code, and the gRPC code name when the server answered.
    fn classify(&self) -> (Exit, Option<&'static str>) {
        use tonic::Code;
        match self {
            CliError::Usage(_) => (Exit::Usage, Some("USAGE")),
            CliError::Client(ClientError::Connect(..)) => (Exit::Unavailable, Some("UNAVAILABLE")),
            CliError::Client(_) => (Exit::Usage, Some("USAGE")),
            CliError::Rpc(s) => {
                let name = Some(crate::api::status::code_name(s.code()));
                let exit = match s.code() {
                    Code::Unauthenticated | Code::PermissionDenied => Exit::NotAllowed,
                    Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => {
                        Exit::Unavailable
                    }
                    _ => Exit::Failed,
                };
                (exit, name)
            }
            CliError::Io(_) => (Exit::Failed, None),
        }
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

/// Runs a client command; prints one error line (or JSON) and exits with the
/// scheme's code on failure.
pub async fn run(cmd: Cmd) -> ExitCode {
    let Some(conn) = cmd.connection().cloned() else {
        return Exit::Usage.into();
    };
    let out = Out { json: conn.json };
    match dispatch(&conn, cmd, &out).await {
        Ok(code) => code.into(),
        Err(e) => {
            let (exit, code) = e.classify();
            // In JSON the code has its own field; the message is the server's alone.
            let message = match &e {
                CliError::Rpc(s) if conn.json => s.message().to_string(),
                _ => e.to_string(),
            };
            report_error(conn.json, exit, code, &message);
            exit.into()
        }
    }
}

fn rid(r: Option<String>) -> String {
    r.unwrap_or_default()
}

fn parse_position(flag: &str, at: Option<String>) -> Result<Option<pb::Position>, CliError> {
    let Some(at) = at else { return Ok(None) };
    let at_pos = if let Ok(seq) = at.parse::<u64>() {
        pb::position::At::Seq(seq)
    } else {
        let t = parse_rfc3339(&at).map_err(|e| {
            CliError::Usage(format!(
                "{flag} {at:?} is neither a seq nor an RFC 3339 time: {e}"
            ))
        })?;
        // The ledger holds nothing yet of a time to come, as of a seq past its head.
        if t > SystemTime::now() + std::time::Duration::from_secs(1) {
            return Err(CliError::Usage(format!(
                "{flag} {at:?} is in the future; the ledger can answer up to now"
            )));
        }
        pb::position::At::Time(system_time(t))
    };
    Ok(Some(pb::Position { at: Some(at_pos) }))
}

/// An RFC 3339 time: `Z`, a numeric offset (`+01:00`, `-0530`) or none (UTC).
fn parse_rfc3339(s: &str) -> Result<SystemTime, String> {
    let s = s.trim();
    // humantime reads `Z`; an offset is taken off by hand. A time without either is
    // refused: read as UTC by one person and as local time by the next, it would
    // name two instants.
    let (base, offset_secs) = match split_offset(s) {
        Some((base, secs)) => (base, secs),
        None if s.ends_with(['Z', 'z']) => (s, 0),
        None => {
            return Err(format!(
                "{s:?} has no time zone: add Z (UTC) or an offset such as +01:00"
            ))
        }
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
    let mode = match a.mode {
        None => pb::SocketMode::Unspecified,
        Some(ModeArg::Rw) => pb::SocketMode::Rw,
        Some(ModeArg::Ro) => pb::SocketMode::Ro,
    };
    let socket = match a.socket {
        SocketArg::None => pb::SocketAccess::None,
        SocketArg::Raw => pb::SocketAccess::Raw,
        SocketArg::Limited => pb::SocketAccess::Limited,
    };
    let limits = pb::Limits {
        max_containers: a.max_containers,
        max_volumes: a.max_volumes,
        max_networks: a.max_networks,
        max_storage_gb: a.max_storage_gb,
        cpu_cap_cores: a.cpu_cap_cores,
        mem_cap_gb: a.mem_cap_gb,
        allow_dangerous_flags: a.allow_dangerous_flags.then_some(true),
        max_pids: a.max_pids,
        publish: a.publish.clone(),
        allow_build: a.allow_build.then_some(true),
        pull_allow: a.pull_allow.clone(),
        push_allow: a.push_allow.clone(),
    };
    let has_limits = limits != pb::Limits::default();
    Ok(pb::IssueGrantRequest {
        subject: Some(pb::Subject {
            kind: Some(subject),
        }),
        spec: Some(pb::GrantSpec {
            socket: socket.into(),
            socket_mode: mode.into(),
            privileged: a.privileged,
            limits: has_limits.then_some(limits),
        }),
        expires_at: a.expires.as_deref().map(parse_expiry).transpose()?,
        reason: a.reason,
        request_id: rid(a.request_id),
    })
}

async fn dispatch(conn: &Connection, cmd: Cmd, out: &Out) -> Result<Exit, CliError> {
    if let Cmd::Verify {
        file: Some(file), ..
    } = &cmd
    {
        return super::export::verify_file(file, out);
    }
    if let Cmd::Watch { args, .. } = cmd {
        let token = token(conn)?.ok_or_else(|| {
            CliError::Usage("privledger watch needs a watcher token: --token-file FILE".into())
        })?;
        return super::watch::run(conn, args, token).await;
    }
    let mut c = connect(conn).await?;
    match cmd {
        Cmd::Serve(_)
        | Cmd::Watch { .. }
        | Cmd::AdminToken { .. }
        | Cmd::Completions { .. }
        | Cmd::Man { .. } => {
            return Ok(Exit::Usage);
        }
        Cmd::Group { cmd: g, .. } => match g {
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
            GroupCmd::Delete {
                name,
                reason,
                yes,
                request_id,
            } => {
                if !yes && std::io::IsTerminal::is_terminal(&std::io::stdin()) {
                    return Err(CliError::Usage(format!(
                        "deleting group {name:?} ends its memberships and its grants; add --yes to go ahead"
                    )));
                }
                let r = c
                    .admin
                    .delete_group(pb::DeleteGroupRequest {
                        name: name.clone(),
                        request_id: rid(request_id),
                        reason,
                    })
                    .await?
                    .into_inner();
                out.receipt(&format!("deleted group {name}"), &r);
            }
            GroupCmd::Sync {
                group,
                state,
                reason,
                request_id,
            } => {
                let g = c
                    .admin
                    .set_group_sync(pb::SetGroupSyncRequest {
                        group,
                        synced: state == "on",
                        reason,
                        request_id: rid(request_id),
                    })
                    .await?
                    .into_inner();
                out.group(&g);
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
                mut users,
                reason,
                request_id,
            } => {
                // One user goes in `user`, several in `users` (one entry each, all or
                // nothing).
                let (user, more) = if users.len() == 1 {
                    (users.remove(0), Vec::new())
                } else {
                    (String::new(), users.clone())
                };
                let shown = if more.is_empty() {
                    user.clone()
                } else {
                    more.join(", ")
                };
                let r = c
                    .admin
                    .add_member(pb::MemberRequest {
                        group: group.clone(),
                        user,
                        request_id: rid(request_id),
                        users: more,
                        reason: reason.unwrap_or_default(),
                    })
                    .await?
                    .into_inner();
                out.receipt(&format!("added {shown} to {group}"), &r);
            }
            GroupCmd::RemoveMember {
                group,
                user,
                reason,
                request_id,
            } => {
                let r = c
                    .admin
                    .remove_member(pb::MemberRequest {
                        group: group.clone(),
                        user: user.clone(),
                        request_id: rid(request_id),
                        users: Vec::new(),
                        reason: reason.unwrap_or_default(),
                    })
                    .await?
                    .into_inner();
                out.receipt(&format!("removed {user} from {group}"), &r);
            }
        },
        Cmd::Grant { cmd: g, .. } => match g {
            GrantCmd::Issue(a) => {
                let g = c.admin.issue_grant(issue_request(*a)?).await?.into_inner();
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
        Cmd::Check { user, at, .. } => {
            let a = c
                .authz
                .check_access(pb::CheckAccessRequest {
                    user,
                    at: parse_position("--at", at)?,
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
            ..
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
        Cmd::Who { at, .. } => {
            let r = c
                .authz
                .who_has_access(pb::WhoHasAccessRequest {
                    at: parse_position("--at", at)?,
                })
                .await?
                .into_inner();
            out.who(&r);
        }
        Cmd::Report {
            cmd:
                ReportCmd::Access {
                    from,
                    to,
                    user,
                    socket,
                    privileged,
                    format,
                },
            ..
        } => {
            let socket = match socket {
                None => pb::SocketAccess::Unspecified,
                Some(super::args::LevelSocket::Raw) => pb::SocketAccess::Raw,
                Some(super::args::LevelSocket::Limited) => pb::SocketAccess::Limited,
            };
            let r = c
                .authz
                .access_intervals(pb::AccessIntervalsRequest {
                    from: parse_position("--from", from)?,
                    to: parse_position("--to", to)?,
                    user: user.unwrap_or_default(),
                    socket: socket.into(),
                    privileged,
                })
                .await?
                .into_inner();
            let format = if out.json {
                super::args::Format::Json
            } else {
                format
            };
            super::report::access(&r, format)?;
        }
        Cmd::Report {
            cmd: ReportCmd::Images { user, format },
            ..
        } => {
            let mut s = c
                .audit
                .stream(pb::StreamRequest {
                    from_seq: 1,
                    follow: false,
                    kinds: vec!["proxy_call".into()],
                    subject: user.clone(),
                })
                .await?
                .into_inner();
            let mut held = super::report::ImagesHeld::default();
            while let Some(e) = s.message().await? {
                held.add(&user, &e);
            }
            let format = if out.json {
                super::args::Format::Json
            } else {
                format
            };
            held.print(&user, format)?;
        }
        Cmd::Audit { cmd: a, .. } => match a {
            AuditCmd::Tail {
                from,
                lines,
                since,
                follow,
                kinds,
                exclude_kinds,
                subject,
                wide,
            } => {
                let since_ns = since
                    .as_deref()
                    .map(|t| {
                        parse_rfc3339(t)
                            .map_err(|e| {
                                CliError::Usage(format!(
                                    "--since {t:?} is not an RFC 3339 time: {e}"
                                ))
                            })
                            .map(|t| {
                                t.duration_since(SystemTime::UNIX_EPOCH)
                                    .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
                            })
                    })
                    .transpose()?;
                let tail = super::tail::Tail {
                    from,
                    lines: lines.or_else(|| {
                        (from.is_none() && std::io::IsTerminal::is_terminal(&std::io::stdout()))
                            .then_some(20)
                    }),
                    since_ns,
                    follow,
                    kinds: super::args::expand_kinds(kinds),
                    exclude: super::args::expand_kinds(exclude_kinds),
                    subject: subject.unwrap_or_default(),
                };
                let show = |e: &pb::Entry| {
                    if out.json {
                        output::entry_json(e).to_string()
                    } else if wide {
                        output::entry_line(e)
                    } else {
                        output::entry_short(e)
                    }
                };
                super::tail::run(&mut c, &tail, show).await?;
            }
            AuditCmd::Export {
                out: path,
                from,
                force,
                follow: true,
                cursor,
                syslog,
                syslog_socket,
            } => {
                let to = match (syslog, path) {
                    (true, _) => super::export::Shipped::Syslog(syslog_socket),
                    (false, Some(p)) => super::export::Shipped::Path(p),
                    (false, None) => return Err(CliError::Usage("--out or --syslog".into())),
                };
                return super::export::follow(&mut c, to, from, force, cursor.as_deref()).await;
            }
            AuditCmd::Export {
                out: path,
                from,
                force,
                ..
            } => {
                let Some(path) = path else {
                    return Err(CliError::Usage("--syslog needs --follow".into()));
                };
                return super::export::export(&mut c, &path, from, force, out).await;
            }
            AuditCmd::Head => {
                let h = c.audit.head(pb::HeadRequest {}).await?.into_inner();
                out.head(&h);
            }
        },
        Cmd::Verify { from, to, .. } => {
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
                return Ok(Exit::Mismatch);
            }
        }
        Cmd::Docker {
            cmd: DockerCmd::Import { file },
            ..
        } => {
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
        Cmd::Status { .. } => {
            let mut health = tonic_health::pb::health_client::HealthClient::new(c.channel.clone());
            let mut rows = Vec::new();
            for svc in [
                "privledger.v1.Admin",
                "privledger.v1.Authorizer",
                "privledger.v1.Audit",
                crate::server::WATCHER_SERVICE,
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
            // Cluster mode: (role, node, writer, applied seq, the cluster's head).
            let cluster = head_resp.as_ref().filter(|h| !h.role.is_empty()).map(|h| {
                (
                    h.role.as_str(),
                    h.node_id.as_str(),
                    h.writer_id.as_str(),
                    h.seq,
                    h.cluster_head_seq,
                )
            });
            let writes = head_resp.as_ref().map(|h| {
                if h.writable {
                    "accepted".to_string()
                } else {
                    format!("refused: {}", h.write_problem)
                }
            });
            let watcher = rows
                .iter()
                .find(|(svc, _)| *svc == crate::server::WATCHER_SERVICE)
                .map(|(_, st)| *st)
                .unwrap_or("unknown");
            let watcher_detail = match watcher {
                "serving" => "attached to the Docker daemon, following events",
                "not serving" => "not attached: the daemon is unreachable; retrying",
                "disabled" => "disabled (--docker off)",
                _ => "unknown",
            };
            if out.json {
                let services: serde_json::Map<String, serde_json::Value> = rows
                    .iter()
                    .map(|(k, v)| (k.to_string(), json!(v)))
                    .collect();
                println!(
                    "{}",
                    json!({
                        "server": conn.server, "services": services,
                        "watcher": {"status": watcher, "detail": watcher_detail},
                        "head_seq": head, "writes": writes,
                        "cluster": cluster.map(|(role, node, writer, applied, etcd_head)| json!({
                            "role": role, "node_id": node, "writer_id": writer,
                            "applied_seq": applied, "cluster_head_seq": etcd_head,
                        })),
                    })
                );
            } else {
                println!("server {}", conn.server);
                for (svc, st) in &rows {
                    let what = if *svc == crate::server::WATCHER_SERVICE {
                        watcher_detail
                    } else {
                        ""
                    };
                    println!("  {svc:<28} {st:<12} {what}");
                }
                if let Some(h) = head {
                    println!("  ledger head seq {h}");
                }
                if let Some(w) = writes {
                    println!("  writes {}", crate::safe_text::escape(&w.to_string()));
                }
                if let Some((role, node, writer, applied, etcd_head)) = cluster {
                    println!(
                        "  cluster node {} ({role}), writer {}, applied seq {applied} of {etcd_head}",
                        crate::safe_text::escape(node),
                        crate::safe_text::escape(if writer.is_empty() { "unknown" } else { writer }),
                    );
                }
            }
        }
        Cmd::Token { cmd: t, .. } => match t {
            TokenCmd::Create {
                name,
                role,
                expires,
                request_id,
            } => {
                let role = match role {
                    RoleArg::Admin => pb::Role::Admin,
                    RoleArg::Spawner => pb::Role::Spawner,
                    RoleArg::Auditor => pb::Role::Auditor,
                    RoleArg::Sync => pb::Role::Sync,
                    RoleArg::Watcher => pb::Role::Watcher,
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
    Ok(Exit::Ok)
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
            "2026-12-01T06:58:30",
            "2026-12-01 06:58:30",
        ] {
            assert!(parse_rfc3339(bad).is_err(), "{bad}");
        }
        assert!(parse_rfc3339("2026-12-01T06:58:30")
            .unwrap_err()
            .contains("add Z (UTC) or an offset"));
    }
}
