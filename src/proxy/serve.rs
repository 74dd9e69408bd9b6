//! One call on a user's limited socket: classify, check, resolve ownership, count
//! quotas, record, forward (upgrades included), answer. A refusal is a Docker-style
//! `{"message": ...}` the docker CLI prints, and is recorded like every mutating call.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{header, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tracing::{debug, warn};

use super::classify::{classify, Kind, Route};
use super::daemon::Daemon;
use super::filters::with_owner_filter;
use super::owner::{count, exec_container, resolve};
use super::path::CanonicalPath;
use super::rules::{self, Allowance, Checked, Stamp};
use super::Error;
use crate::ledger::event::{ProxyCall, ProxyOutcome, SocketAccess};
use crate::ledger::{Command, Ledger};

/// Largest request body read (a container config is a few kB).
const MAX_BODY: usize = 1 << 20;
/// Actor of proxy entries.
pub const ACTOR_PROXY: &str = "proxy";

pub type Body = BoxBody<Bytes, hyper::Error>;

/// What every user's socket shares.
pub struct Shared {
    pub ledger: Ledger,
    pub daemon: Daemon,
    /// Networks anyone may name (the hub's own network, say).
    pub allow_networks: Vec<String>,
    /// One lock per user: counting and creating are serialized, so parallel creates
    /// cannot race past a quota.
    quotas: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    pub budget: super::budget::Budget,
}

impl Shared {
    pub fn new(ledger: Ledger, daemon: Daemon, allow_networks: Vec<String>) -> Shared {
        Shared {
            ledger,
            daemon,
            allow_networks,
            quotas: Mutex::new(HashMap::new()),
            budget: super::budget::Budget::default(),
        }
    }

    fn quota_lock(&self, user: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut m = self.quotas.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(user.to_string()).or_default().clone()
    }
}

/// The caller of one socket.
#[derive(Clone)]
pub struct Caller {
    pub user: String,
    pub decision: Option<String>,
    pub shared: Arc<Shared>,
}

/// A call refused or failed before or instead of the daemon's answer.
struct Answer {
    status: StatusCode,
    message: String,
}

impl Answer {
    fn refused(message: impl Into<String>) -> Answer {
        Answer {
            status: StatusCode::FORBIDDEN,
            message: message.into(),
        }
    }
    fn not_found(kind: Kind, name: &str) -> Answer {
        // The daemon's own wording: another user's resource is indistinguishable
        // from one that does not exist.
        Answer {
            status: StatusCode::NOT_FOUND,
            message: format!("No such {}: {name}", kind.as_str()),
        }
    }
}

impl From<Error> for Answer {
    fn from(e: Error) -> Answer {
        Answer {
            status: match e {
                Error::Daemon(_) => StatusCode::BAD_GATEWAY,
                Error::NotRecorded(_) => StatusCode::SERVICE_UNAVAILABLE,
                Error::Io(_) => StatusCode::INTERNAL_SERVER_ERROR,
            },
            message: e.to_string(),
        }
    }
}

fn json_response(status: StatusCode, message: &str) -> Response<Body> {
    let body = serde_json::json!({ "message": message }).to_string();
    let mut r = Response::new(Full::new(Bytes::from(body)).map_err(|e| match e {}).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

/// The service function of a user's socket.
pub async fn handle(c: Caller, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let (method, raw_path) = (req.method().to_string(), req.uri().path().to_string());
    match serve(&c, req).await {
        Ok(r) => Ok(r),
        Err((answer, path, resource)) => {
            // A rule's refusal, or a resource that is not the caller's (answered as
            // not found): both are refusals an auditor must see. The daemon's own
            // answers never come this way.
            if matches!(answer.status, StatusCode::FORBIDDEN | StatusCode::NOT_FOUND) {
                let call = ProxyCall {
                    user: c.user.clone(),
                    decision_id: c.decision.clone(),
                    method,
                    path: path.unwrap_or(raw_path).chars().take(1024).collect(),
                    resource,
                    outcome: ProxyOutcome::Refused,
                    reason: answer.message.chars().take(1024).collect(),
                };
                if let Err(e) = record(&c, call).await {
                    warn!(user = %c.user, error = %e, "a refusal could not be recorded");
                }
            }
            Ok(json_response(answer.status, &answer.message))
        }
    }
}

type Failure = (Answer, Option<String>, Option<String>);

async fn record(c: &Caller, call: ProxyCall) -> Result<(), Error> {
    c.shared
        .ledger
        .submit(ACTOR_PROXY, None, Command::RecordProxyCall(call))
        .await
        .map(|_| ())
        .map_err(|e| Error::NotRecorded(e.to_string()))
}

async fn serve(c: &Caller, mut req: Request<Incoming>) -> Result<Response<Body>, Failure> {
    let fail = |a: Answer| (a, None, None);
    let access = c
        .shared
        .ledger
        .check_access(&c.user)
        .map_err(|e| fail(Answer::refused(e.to_string())))?;
    if access.socket != SocketAccess::Limited {
        return Err(fail(Answer::refused(format!(
            "refused by the limited socket (access): user {:?} no longer has a limited Docker socket",
            c.user
        ))));
    }
    let path = CanonicalPath::parse(req.uri().path()).map_err(|e| {
        fail(Answer::refused(format!(
            "refused by the limited socket (path): {e}"
        )))
    })?;
    let shown = path.to_string();
    let failp = |a: Answer, res: Option<String>| (a, Some(shown.clone()), res);
    let method = req.method().to_string();
    let route = classify(&method, &path).map_err(|e| {
        failp(
            Answer::refused(format!("refused by the limited socket (endpoint): {e}")),
            None,
        )
    })?;
    let on_upgrade = hyper::upgrade::on(&mut req);
    let (parts, body) = req.into_parts();
    let body = Limited::new(body, MAX_BODY)
        .collect()
        .await
        .map_err(|e| {
            failp(
                Answer::refused(format!("refused by the limited socket (body): {e}")),
                None,
            )
        })?
        .to_bytes();
    let json = if body.is_empty() {
        Value::Null
    } else {
        super::strict_json::parse(&body).map_err(|e| {
            failp(
                Answer::refused(format!("refused by the limited socket (strict body): {e}")),
                None,
            )
        })?
    };
    let allowance = Allowance {
        dangerous: access.limits.allow_dangerous_flags,
        privileged: access.privileged,
        cpu_cores: access.limits.cpu_cap_cores,
        mem_bytes: (access.limits.mem_cap_gb * (1u64 << 30) as f64) as i64,
    };
    let stamp = Stamp {
        owner: c.user.clone(),
        decision: c.decision.clone(),
    };
    let refused = |e: String| failp(Answer::refused(e), None);
    let d = &c.shared.daemon;

    // The resource on the path, resolved to its full id and checked for ownership.
    let mut segments = path.segments.clone();
    let mut resource = None;
    // An inspect is checked on the daemon's own answer: one call, not two.
    let inspect = match (&route, segments.as_slice()) {
        (Route::Read(Kind::Container, _), [_, _, last]) => method == "GET" && last == "json",
        (Route::Read(Kind::Volume | Kind::Network, _), [_, _]) => method == "GET",
        _ => false,
    };
    if let Some((kind, name)) = route.resource().filter(|_| !inspect) {
        let r = owned(c, kind, name)
            .await
            .map_err(|a| failp(a, Some(name.to_string())))?;
        // Every route that names a resource names it second (`/containers/{id}/...`).
        segments[1] = r.clone();
        resource = Some(r);
    }
    if let Route::Exec(id, _) = &route {
        let container = exec_container(d, id)
            .await
            .map_err(|e| failp(e.into(), Some(id.clone())))?;
        match container {
            Some(cid) => {
                owned(c, Kind::Container, &cid)
                    .await
                    .map_err(|_| failp(Answer::not_found(Kind::Container, id), Some(id.clone())))?;
            }
            None => {
                return Err(failp(
                    Answer {
                        status: StatusCode::NOT_FOUND,
                        message: format!("No such exec instance: {id}"),
                    },
                    Some(id.clone()),
                ))
            }
        }
        resource = Some(id.clone());
    }

    // Bodies: checked, stamped, capped; what they name must be owned.
    let checked: Option<Checked> = match &route {
        Route::Create(Kind::Container) => {
            Some(rules::container_create(json, &allowance, &stamp).map_err(refused)?)
        }
        Route::Create(Kind::Volume) => {
            Some(rules::volume_create(json, &allowance, &stamp).map_err(refused)?)
        }
        Route::Create(Kind::Network) => {
            Some(rules::network_create(json, &allowance, &stamp).map_err(refused)?)
        }
        Route::Update(_) => Some(rules::container_update(json, &allowance).map_err(refused)?),
        Route::ExecCreate(_) => Some(rules::exec_create(json, &allowance).map_err(refused)?),
        Route::Exec(_, "start") => Some(rules::exec_start(json).map_err(refused)?),
        Route::Connect(..) => Some(rules::network_connect(json).map_err(refused)?),
        _ if !json.is_null() => {
            return Err(refused(format!(
                "refused by the limited socket (body): {method} {shown} takes no body"
            )))
        }
        _ => None,
    };
    if let Some(ch) = &checked {
        for (kind, name) in &ch.refs {
            if *kind == Kind::Network && c.shared.allow_networks.iter().any(|n| n == name) {
                continue;
            }
            match owned(c, *kind, name).await {
                Ok(_) => {}
                Err(a) if a.status == StatusCode::NOT_FOUND && *kind == Kind::Volume => {
                    return Err(refused(format!(
                        "refused by the limited socket (volumes): volume {name:?} does not exist or is not yours; create it first with `docker volume create {name}`"
                    )))
                }
                // A 403, not the daemon's 404: the docker CLI answers a 404 at create
                // by pulling the image. Worded the same whether it exists or not.
                Err(a) if a.status == StatusCode::NOT_FOUND => {
                    return Err(refused(format!(
                        "refused by the limited socket (ownership): there is no {} {name:?} of yours",
                        kind.as_str()
                    )))
                }
                Err(a) => return Err(failp(a, Some(name.clone()))),
            }
        }
    }

    // Quotas: counted and created under the user's lock.
    let _quota = match &route {
        Route::Create(kind) => {
            let lock = c.shared.quota_lock(&c.user);
            let guard = lock.lock_owned().await;
            let (cap, what) = match kind {
                Kind::Container => (access.limits.max_containers, "containers"),
                Kind::Volume => (access.limits.max_volumes, "volumes"),
                Kind::Network => (access.limits.max_networks, "networks"),
            };
            let n = count(d, *kind, &c.user)
                .await
                .map_err(|e| failp(e.into(), None))?;
            if n >= cap as usize {
                return Err(refused(format!(
                    "refused by the limited socket (quota): you have {n} {what} and your grant allows {cap}; remove one first"
                )));
            }
            let used = c.shared.budget.used(&c.user);
            let budget = (access.limits.max_storage_gb * 1e9) as u64;
            if *kind != Kind::Network && used > budget {
                return Err(refused(format!(
                    "refused by the limited socket (storage): your containers and volumes use {:.1} GB and your grant allows {} GB; remove some first",
                    used as f64 / 1e9,
                    access.limits.max_storage_gb
                )));
            }
            Some(guard)
        }
        _ => None,
    };

    // The query: lists, events and prune see only the caller's own.
    let query = match &route {
        Route::List(_) | Route::Events | Route::Prune(_) => Some(
            with_owner_filter(parts.uri.query(), &c.user)
                .map_err(|e| refused(format!("refused by the limited socket (filters): {e}")))?,
        ),
        _ => parts.uri.query().map(str::to_string),
    };

    if route.mutates() {
        let call = ProxyCall {
            user: c.user.clone(),
            decision_id: c.decision.clone(),
            method: method.clone(),
            path: shown.clone(),
            resource: resource
                .clone()
                .or_else(|| parts.uri.query().and_then(name_param)),
            outcome: ProxyOutcome::Forwarded,
            reason: String::new(),
        };
        // Fail closed: a call the ledger cannot record does not happen.
        record(c, call)
            .await
            .map_err(|e| failp(e.into(), resource.clone()))?;
    }

    let forwarded_path = CanonicalPath {
        version: path.version,
        segments,
    };
    let mut target = forwarded_path.to_string();
    if let Some(q) = &query {
        target.push('?');
        target.push_str(q);
    }
    let body = match &checked {
        Some(ch) if !ch.body.is_null() => Bytes::from(ch.body.to_string()),
        _ => body,
    };
    let mut fwd = Request::builder().method(parts.method.clone()).uri(&target);
    for (k, v) in &parts.headers {
        if k != header::CONTENT_LENGTH && k != header::TRANSFER_ENCODING && k != header::HOST {
            fwd = fwd.header(k, v);
        }
    }
    let fwd = fwd
        .header(header::HOST, "docker")
        .header(header::CONTENT_LENGTH, body.len())
        .body(Full::new(body))
        .map_err(|e| failp(Answer::refused(e.to_string()), None))?;
    debug!(user = %c.user, %method, path = %target, "forwarding");
    let mut resp = d
        .send(fwd)
        .await
        .map_err(|e| failp(e.into(), resource.clone()))?;
    if let (true, Route::Read(kind, name)) = (inspect && resp.status().is_success(), &route) {
        let (rparts, b) = resp.into_parts();
        let bytes = b
            .collect()
            .await
            .map_err(|e| failp(Error::Daemon(e.to_string()).into(), None))?
            .to_bytes();
        let v: Value = serde_json::from_slice(&bytes)
            .map_err(|e| failp(Error::Daemon(e.to_string()).into(), None))?;
        if super::owner::of_inspect(*kind, &v, name).owner.as_deref() != Some(c.user.as_str()) {
            return Err(failp(Answer::not_found(*kind, name), Some(name.clone())));
        }
        return Ok(Response::from_parts(
            rparts,
            Full::new(bytes).map_err(|e| match e {}).boxed(),
        ));
    }
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let daemon_side = hyper::upgrade::on(&mut resp);
        let user = c.user.clone();
        tokio::spawn(async move {
            match (on_upgrade.await, daemon_side.await) {
                (Ok(u), Ok(dm)) => {
                    let (mut u, mut dm) = (TokioIo::new(u), TokioIo::new(dm));
                    // Half-close is carried: EOF on one side shuts down the other's write.
                    let _ = tokio::io::copy_bidirectional(&mut u, &mut dm).await;
                }
                (a, b) => {
                    warn!(user = %user, caller = ?a.err(), daemon = ?b.err(), "upgrade failed")
                }
            }
        });
        let (rparts, _) = resp.into_parts();
        return Ok(Response::from_parts(
            rparts,
            Full::new(Bytes::new()).map_err(|e| match e {}).boxed(),
        ));
    }
    Ok(resp.map(|b| b.boxed()))
}

/// `name=` of a create's query, for the record.
fn name_param(q: &str) -> Option<String> {
    q.split('&')
        .find_map(|p| p.strip_prefix("name="))
        .map(|n| n.chars().take(256).collect())
}

/// The full id of `name`, if the caller owns it; 404 otherwise.
async fn owned(c: &Caller, kind: Kind, name: &str) -> Result<String, Answer> {
    match resolve(&c.shared.daemon, kind, name).await? {
        Some(r) if r.owner.as_deref() == Some(c.user.as_str()) => Ok(r.id),
        _ => Err(Answer::not_found(kind, name)),
    }
}
