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
use tokio::sync::watch;
use tracing::{debug, warn};

use super::books::Books;
use super::classify::{endpoint, Kind, Route};
use super::daemon::Daemon;
use super::endpoints::BodyRule;
use super::filters::with_owner_filter;
use super::owner::{exec_container, resolve, volume_use};
use super::path::CanonicalPath;
use super::peer::Admission;
use super::refusal::Refusal;
use super::rules::{self, Allowance, Stamp};
use super::{Error, Settings};
use crate::ledger::event::{ProxyCall, ProxyOutcome, SocketAccess};

/// Largest request body read (a container config is a few kB).
const MAX_BODY: usize = 1 << 20;

/// An error of a body, the caller's or the daemon's: a body ending in one is not a
/// whole body (a refused build's upstream body ends so).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub type Body = BoxBody<Bytes, BoxError>;

/// A body from hyper, as a [`Body`].
pub fn boxed(b: Incoming) -> Body {
    b.map_err(BoxError::from).boxed()
}

/// What every user's socket shares.
pub struct Shared {
    /// The ledger, as the executor sees it: access and the record.
    pub books: Arc<dyn Books>,
    pub daemon: Daemon,
    pub settings: Settings,
    /// One lock per user: counting and creating are serialized, so parallel creates
    /// cannot race past a quota.
    quotas: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    pub budget: super::budget::Budget,
}

impl Shared {
    pub fn new(books: Arc<dyn Books>, daemon: Daemon, settings: Settings) -> Shared {
        Shared {
            books,
            daemon,
            settings,
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
    /// Who is on the other end, and whether it may speak for the user.
    pub peer: Admission,
    /// The seq at which the user's access ended, once it has: every call is then
    /// refused saying so, and streams and sessions still open end.
    pub ended: watch::Receiver<Option<u64>>,
}

/// A call refused or failed before or instead of the daemon's answer.
pub struct Answer {
    pub status: StatusCode,
    pub message: String,
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

impl From<Refusal> for Answer {
    fn from(r: Refusal) -> Answer {
        Answer::refused(r.to_string())
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
                    peer: Some(c.peer.peer.clone()),
                    images: Vec::new(),
                    removed: Vec::new(),
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

pub(super) async fn record(c: &Caller, call: ProxyCall) -> Result<(), Error> {
    c.shared
        .books
        .record(call)
        .await
        .map_err(Error::NotRecorded)
}

/// The query's `name` parameter, decoded.
fn query_name(q: Option<&str>) -> Option<String> {
    q?.split('&').find_map(|p| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        (k == "name").then(|| super::filters::decode(v).unwrap_or_else(|_| v.to_string()))
    })
}

/// The query with `v=1`: a container removed through the socket takes its
/// anonymous volumes with it (they are counted against the user's quota).
fn with_volumes_removed(q: Option<&str>) -> String {
    let mut out: Vec<&str> = q
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("v="))
        .collect();
    out.push("v=1");
    out.join("&")
}

async fn serve(c: &Caller, mut req: Request<Incoming>) -> Result<Response<Body>, Failure> {
    let on_upgrade = hyper::upgrade::on(&mut req);
    let (parts, body) = req.into_parts();
    // Whatever is refused before the body is taken, the caller still reads why.
    let mut body = Unread::new(body);
    let fail = |a: Answer| (a, None, None);
    if let Some(seq) = *c.ended.borrow() {
        return Err(fail(Answer::refused(format!(
            "refused by the limited socket (access): your access to the limited Docker socket was revoked at seq {seq}"
        ))));
    }
    let access = c
        .shared
        .books
        .access(&c.user)
        .map_err(|e| fail(Answer::refused(e)))?;
    if access.socket != SocketAccess::Limited {
        return Err(fail(Answer::refused(format!(
            "refused by the limited socket (access): user {:?} no longer has a limited Docker socket",
            c.user
        ))));
    }
    if let Some(why) = &c.peer.refused {
        return Err(fail(Refusal::new("caller", why).into()));
    }
    let path = CanonicalPath::parse(parts.uri.path()).map_err(|e| {
        fail(Answer::refused(format!(
            "refused by the limited socket (path): {e}"
        )))
    })?;
    let shown = path.to_string();
    let failp = |a: Answer, res: Option<String>| (a, Some(shown.clone()), res);
    let method = parts.method.to_string();
    let (row, route) = endpoint(&method, &path).map_err(|e| {
        failp(
            Answer::refused(format!("refused by the limited socket (endpoint): {e}")),
            None,
        )
    })?;
    let settings = &c.shared.settings;
    let allowance = Allowance {
        dangerous: access.limits.allow_dangerous_flags,
        privileged: access.privileged,
        cpu_cores: access.limits.cpu_cap_cores,
        mem_bytes: (access.limits.mem_cap_gb * (1u64 << 30) as f64) as i64,
        pids: i64::from(access.limits.max_pids),
        publish: access.limits.publish,
        shared_networks: settings.allow_networks.clone(),
        network_pools: settings.network_pools.clone(),
        build: access.limits.allow_build,
        pull_allow: access.limits.pull_allow.clone(),
        push_allow: access.limits.push_allow.clone(),
    };
    let stamp = Stamp {
        owner: c.user.clone(),
        decision: c.decision.clone(),
    };
    if matches!(
        route,
        Route::Build
            | Route::ImageCreate
            | Route::ImageTag(_)
            | Route::ImagePush(_)
            | Route::ImageRemove(_)
            | Route::ImageSave(_)
            | Route::ImagePrune
            | Route::Commit
    ) {
        let call = super::image_calls::Call {
            c,
            method: method.clone(),
            shown: shown.clone(),
            route: route.clone(),
            version: path.version,
            allowance: &allowance,
            limits: &access.limits,
            stamp: &stamp,
        };
        return super::image_calls::serve(call, parts, body)
            .await
            .map_err(|(a, res)| failp(a, res));
    }
    // A tar streamed into a container is forwarded as it arrives; JSON bodies are read.
    let (mut streamed, body) = if row.body == BodyRule::Stream {
        (Some(body), Bytes::new())
    } else {
        let b = Limited::new(
            body.take()
                .ok_or_else(|| fail(Answer::refused("no body")))?,
            MAX_BODY,
        )
        .collect()
        .await
        .map_err(|e| {
            failp(
                Answer::refused(format!("refused by the limited socket (body): {e}")),
                None,
            )
        })?
        .to_bytes();
        (None, b)
    };
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
    let refused = |e: Refusal| failp(e.into(), None);
    let d = &c.shared.daemon;

    // A new container name must not read as an id or as another user's server.
    if matches!(
        route,
        Route::Create(Kind::Container) | Route::Act(Kind::Container, _, "rename")
    ) {
        if let Some(n) = query_name(parts.uri.query()) {
            rules::container_name(&n, &c.user).map_err(refused)?;
        }
    }

    if let Route::Hidden(kind, name) = &route {
        return Err(failp(
            Answer {
                status: StatusCode::NOT_FOUND,
                message: format!("No such {kind}: {name}"),
            },
            Some(name.clone()),
        ));
    }

    // The resource on the path, resolved to its full id and checked for ownership;
    // the id, never the name, is forwarded.
    let mut segments = path.segments.clone();
    let mut resource = None;
    let mut shared_network = false;
    // An inspect is checked on the daemon's own answer: one call, not two.
    let inspect = match (&route, segments.as_slice()) {
        (Route::Read(Kind::Container, _), [_, _, last]) => method == "GET" && last == "json",
        (Route::Read(Kind::Volume | Kind::Network, _), [_, _]) => method == "GET",
        _ => false,
    };
    if let Some((kind, name)) = route.resource().filter(|_| !inspect) {
        let r = match (&route, shared_id(c, kind, name).await) {
            // Joining and leaving a shared network: its containers stay their own.
            (Route::Connect(..), Ok(Some(id))) => {
                shared_network = true;
                id
            }
            (_, Err(e)) => return Err(failp(e, Some(name.to_string()))),
            _ => owned(c, kind, name)
                .await
                .map_err(|a| failp(a, Some(name.to_string())))?,
        };
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

    // Bodies: every field on the table's terms, stamped, capped.
    let current = if row.body == BodyRule::ContainerUpdate {
        let id = resource.clone().unwrap_or_default();
        let (status, current) = d
            .get_json(&Kind::Container.inspect_path(&id))
            .await
            .map_err(|e| failp(e.into(), resource.clone()))?;
        if !status.is_success() {
            return Err(failp(
                Answer::not_found(Kind::Container, &id),
                resource.clone(),
            ));
        }
        current.get("HostConfig").cloned().unwrap_or(Value::Null)
    } else {
        Value::Null
    };
    let cx = super::plan::Context {
        allowance: &allowance,
        stamp: &stamp,
        current: &current,
        shared_network,
    };
    let checked = super::plan::body(row.body, json, &cx).map_err(|mut e| {
        if e.rule == "body" {
            e.reason = format!("{method} {shown} takes no body");
        }
        refused(e)
    })?;
    // What the body names: resolved once, owned (or shared), forwarded as ids.
    let mut checked = checked;
    if let Some(ch) = checked.as_mut() {
        for r in ch.refs.clone() {
            let id = body_ref(c, r.kind, &r.name)
                .await
                .map_err(|a| match a.status {
                    StatusCode::FORBIDDEN => failp(a, None),
                    _ => failp(a, Some(r.name.clone())),
                })?;
            rules::rewrite(&mut ch.body, &r, &id);
        }
        // A container runs an image that is the user's or nobody's (the hub's, a
        // pulled one), never another user's.
        if route == Route::Create(Kind::Container) {
            if let Some(image) = ch.body.get("Image").and_then(Value::as_str) {
                let img = super::images::inspect(d, image)
                    .await
                    .map_err(|e| failp(e.into(), None))?;
                if let Some(img) = img {
                    super::images::usable(&c.user, image, &img).map_err(refused)?;
                }
            }
        }
    }

    // Quotas: counted and created under the user's lock.
    let mut volumes_before = None;
    let _quota = match &route {
        Route::Create(kind) => {
            let lock = c.shared.quota_lock(&c.user);
            let guard = lock.lock_owned().await;
            let (cap, what) = match kind {
                Kind::Container => (access.limits.max_containers, "containers"),
                Kind::Volume => (access.limits.max_volumes, "volumes"),
                Kind::Network => (access.limits.max_networks, "networks"),
            };
            let n = super::owner::count(d, *kind, &c.user)
                .await
                .map_err(|e| failp(e.into(), None))?;
            if n >= cap as usize {
                return Err(refused(Refusal::new(
                    "quota",
                    format!("you have {n} {what} and your grant allows {cap}; remove one first"),
                )));
            }
            if *kind != Kind::Network {
                // Volumes: named ones, and the anonymous ones of the user's containers.
                let vols = volume_use(d, &c.user)
                    .await
                    .map_err(|e| failp(e.into(), None))?;
                let asked = match (kind, &checked) {
                    (Kind::Volume, _) => 1,
                    (_, Some(ch)) => ch.anonymous,
                    _ => 0,
                };
                let cap = access.limits.max_volumes as usize;
                if asked > 0 && vols.total() + asked > cap {
                    return Err(refused(Refusal::new(
                        "quota",
                        format!(
                            "you have {} volumes ({} of them anonymous), this asks for {asked} more, and your grant allows {cap}; remove some first",
                            vols.total(),
                            vols.anonymous.len()
                        ),
                    )));
                }
                volumes_before = Some(vols);
                let used = c.shared.budget.used(&c.user);
                let budget = (access.limits.max_storage_gb * 1e9) as u64;
                if used > budget {
                    return Err(refused(Refusal::new(
                        "storage",
                        format!(
                            "your containers and volumes use {:.1} GB and your grant allows {} GB; remove some first",
                            used as f64 / 1e9,
                            access.limits.max_storage_gb
                        ),
                    )));
                }
            }
            Some(guard)
        }
        _ => None,
    };

    // The query: lists, events and prune see only the caller's own.
    let query = match &route {
        Route::List(_) | Route::Events | Route::Prune(_) => Some(
            with_owner_filter(parts.uri.query(), &c.user)
                .map_err(|e| refused(Refusal::new("filters", e)))?,
        ),
        Route::Remove(Kind::Container, _) => Some(with_volumes_removed(parts.uri.query())),
        _ => parts.uri.query().map(str::to_string),
    };

    if row.recorded {
        let call = ProxyCall {
            user: c.user.clone(),
            decision_id: c.decision.clone(),
            method: method.clone(),
            path: shown.clone(),
            resource: resource
                .clone()
                .or_else(|| query_name(parts.uri.query()).map(|n| n.chars().take(256).collect())),
            outcome: ProxyOutcome::Forwarded,
            reason: String::new(),
            peer: Some(c.peer.peer.clone()),
            images: Vec::new(),
            removed: Vec::new(),
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
    let (body, len, content_type): (Body, Option<usize>, Option<&'static str>) =
        match (streamed.as_mut().and_then(Unread::take), &checked) {
            (Some(incoming), _) => (boxed(incoming), None, Some("application/x-tar")),
            (None, Some(ch)) if !ch.body.is_null() => {
                let b = Bytes::from(ch.body.to_string());
                let n = b.len();
                (full(b), Some(n), Some("application/json"))
            }
            (None, _) => (full(body.clone()), Some(body.len()), None),
        };
    let fwd = forward_request(&parts, &target, body, len, content_type)
        .map_err(|e| failp(e.into(), None))?;
    debug!(user = %c.user, %method, path = %target, "forwarding");
    // A container prune leaves the pruned containers' anonymous volumes behind,
    // no longer counted: they are removed after it (they were the user's alone).
    let pruning = match route {
        Route::Prune(Kind::Container) => volume_use(d, &c.user).await.ok(),
        _ => None,
    };
    let mut resp = d
        .send_body(fwd)
        .await
        .map_err(|e| failp(e.into(), resource.clone()))?;
    if let (Some(before), true) = (pruning, resp.status().is_success()) {
        let (rparts, bytes) = whole(resp).await.map_err(|e| failp(e.into(), None))?;
        if let Ok(after) = volume_use(d, &c.user).await {
            for v in before.anonymous.difference(&after.anonymous) {
                remove_volume(d, v).await;
            }
        }
        return Ok(Response::from_parts(rparts, full(bytes)));
    }
    if route == Route::Info && resp.status().is_success() {
        let (rparts, bytes) = whole(resp).await.map_err(|e| failp(e.into(), None))?;
        let v: Value = serde_json::from_slice(&bytes)
            .map_err(|e| failp(Error::Daemon(e.to_string()).into(), None))?;
        let mut rparts = rparts;
        rparts.headers.remove(header::CONTENT_LENGTH);
        return Ok(Response::from_parts(
            rparts,
            full(Bytes::from(super::info::filtered(&v).to_string())),
        ));
    }
    if let (true, Route::Read(kind, name)) = (inspect && resp.status().is_success(), &route) {
        let (rparts, bytes) = whole(resp).await.map_err(|e| failp(e.into(), None))?;
        let v: Value = serde_json::from_slice(&bytes)
            .map_err(|e| failp(Error::Daemon(e.to_string()).into(), None))?;
        if super::owner::of_inspect(*kind, &v, name).owner.as_deref() != Some(c.user.as_str()) {
            return Err(failp(Answer::not_found(*kind, name), Some(name.clone())));
        }
        return Ok(Response::from_parts(rparts, full(bytes)));
    }
    if let (Route::Create(Kind::Container), Some(before)) = (&route, &volumes_before) {
        if resp.status().is_success() {
            let (rparts, bytes) = whole(resp).await.map_err(|e| failp(e.into(), None))?;
            let id = serde_json::from_slice::<Value>(&bytes)
                .ok()
                .and_then(|v| v.get("Id").and_then(Value::as_str).map(str::to_string))
                .unwrap_or_default();
            after_create(
                c,
                &id,
                before,
                access.limits.max_volumes as usize,
                &allowance,
            )
            .await
            .map_err(|a| failp(a, Some(id.clone())))?;
            return Ok(Response::from_parts(rparts, full(bytes)));
        }
    }
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let daemon_side = hyper::upgrade::on(&mut resp);
        let user = c.user.clone();
        let mut ended = c.ended.clone();
        tokio::spawn(async move {
            match (on_upgrade.await, daemon_side.await) {
                (Ok(u), Ok(dm)) => {
                    let (mut u, mut dm) = (TokioIo::new(u), TokioIo::new(dm));
                    // Half-close is carried: EOF on one side shuts down the other's
                    // write. A revocation ends the session.
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut u, &mut dm) => {}
                        _ = revoked(&mut ended) => {
                            debug!(user = %user, "a session ended by a revocation");
                        }
                    }
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
    // The classic builder is the one served: a CLI that reads the daemon's default
    // from `/_ping` builds with it, with no DOCKER_BUILDKIT=0 needed.
    if route == Route::Public && shown.ends_with("/_ping") {
        resp.headers_mut()
            .insert("builder-version", header::HeaderValue::from_static("1"));
    }
    // What can stream for as long as the caller likes (events, logs or stats
    // followed, wait) ends with the access; lists and the rest are finite.
    let streams = matches!(route, Route::Events | Route::Read(Kind::Container, _));
    if !streams || resp.headers().contains_key(header::CONTENT_LENGTH) {
        return Ok(resp.map(boxed));
    }
    Ok(resp.map(|b| revocable(b, c.ended.clone())))
}

/// The request forwarded to the daemon: the caller's headers but those that frame
/// the body or name its kind, which the proxy sets itself. A caller's
/// `Content-Type: application/x-www-form-urlencoded` would have the daemon read
/// parameters out of the body, past every check of the query.
pub(super) fn forward_request(
    parts: &hyper::http::request::Parts,
    target: &str,
    body: Body,
    len: Option<usize>,
    content_type: Option<&'static str>,
) -> Result<Request<Body>, Error> {
    let mut fwd = Request::builder().method(parts.method.clone()).uri(target);
    for (k, v) in &parts.headers {
        if k != header::CONTENT_LENGTH
            && k != header::TRANSFER_ENCODING
            && k != header::HOST
            && k != header::CONTENT_TYPE
        {
            fwd = fwd.header(k, v);
        }
    }
    fwd = fwd.header(header::HOST, "docker");
    if let Some(n) = len {
        fwd = fwd.header(header::CONTENT_LENGTH, n);
    }
    if let Some(ct) = content_type {
        fwd = fwd.header(header::CONTENT_TYPE, ct);
    }
    fwd.body(body).map_err(|e| Error::Daemon(e.to_string()))
}

/// A request body not (yet) forwarded. Dropped unread, it is drained in the
/// background (bounded): a refusal answered while the caller is still sending a
/// tar would otherwise reach it as a broken pipe instead of the reason.
pub struct Unread(Option<Incoming>);

/// The most of a refused call's body drained, and for how long.
const DRAIN_BYTES: usize = 1 << 30;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(60);

impl Unread {
    pub(super) fn new(body: Incoming) -> Unread {
        Unread(Some(body))
    }

    /// The body, to forward or read; it is then the taker's.
    pub(super) fn take(&mut self) -> Option<Incoming> {
        self.0.take()
    }
}

impl Drop for Unread {
    fn drop(&mut self) {
        if let Some(body) = self.0.take() {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let drain = Limited::new(body, DRAIN_BYTES).collect();
                    let _ = tokio::time::timeout(DRAIN_TIME, drain).await;
                });
            }
        }
    }
}

/// Removes an anonymous volume nothing mounts any more (the daemon refuses one in use).
async fn remove_volume(d: &Daemon, name: &str) {
    let rm = Request::delete(format!("/volumes/{}", super::path::segment(name)))
        .header(header::HOST, "docker")
        .body(Full::new(Bytes::new()));
    if let Ok(rm) = rm {
        if let Err(e) = d.send(rm).await {
            debug!(volume = name, error = %e, "an orphaned anonymous volume was not removed");
        }
    }
}

/// The daemon's answer read whole.
pub(super) async fn whole(
    resp: Response<Incoming>,
) -> Result<(hyper::http::response::Parts, Bytes), Error> {
    let (parts, b) = resp.into_parts();
    let bytes = b
        .collect()
        .await
        .map_err(|e| Error::Daemon(e.to_string()))?
        .to_bytes();
    Ok((parts, bytes))
}

pub(super) fn full(bytes: Bytes) -> Body {
    Full::new(bytes).map_err(|e| match e {}).boxed()
}

/// Resolves once the user's access has ended (never, if the socket closes first).
pub async fn revoked(ended: &mut watch::Receiver<Option<u64>>) {
    loop {
        if ended.borrow_and_update().is_some() {
            return;
        }
        if ended.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// A streamed answer that ends when the user's access does.
pub(super) fn revocable(mut body: Incoming, mut ended: watch::Receiver<Option<u64>>) -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                f = body.frame() => match f {
                    Some(f) => if tx.send(f).await.is_err() { break },
                    None => break,
                },
                _ = revoked(&mut ended) => break,
            }
        }
    });
    http_body_util::StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx))
        .map_err(BoxError::from)
        .boxed()
}

/// After a create: the container is the caller's, and its anonymous volumes (the
/// body's and the image's `VOLUME`s) fit the quota; otherwise it is removed with
/// them and the call refused.
async fn after_create(
    c: &Caller,
    id: &str,
    before: &super::owner::VolumeUse,
    cap: usize,
    a: &Allowance,
) -> Result<(), Answer> {
    let d = &c.shared.daemon;
    let (status, v) = d.get_json(&Kind::Container.inspect_path(id)).await?;
    let problem = if !status.is_success() {
        Some(format!(
            "the daemon does not show the container it created ({status})"
        ))
    } else if super::owner::of_inspect(Kind::Container, &v, id)
        .owner
        .as_deref()
        != Some(c.user.as_str())
    {
        Some("the created container is not labelled as yours".to_string())
    } else if v.pointer("/HostConfig/Privileged") == Some(&Value::Bool(true))
        && !(a.dangerous && a.privileged)
    {
        Some("the created container is privileged".to_string())
    } else {
        let mut fresh = 0;
        let mut foreign = None;
        for m in v
            .get("Mounts")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if m.get("Type").and_then(Value::as_str) != Some("volume") {
                continue;
            }
            let name = m.get("Name").and_then(Value::as_str).unwrap_or("");
            if before.named.contains(name) || before.anonymous.contains(name) {
                continue;
            }
            if name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
                fresh += 1;
            } else {
                foreign = Some(name.to_string());
            }
        }
        if let Some(f) = foreign {
            Some(format!(
                "the created container mounts volume {f:?}, which is not yours"
            ))
        } else if fresh > 0 && before.total() + fresh > cap {
            Some(format!(
                "the container would add {fresh} anonymous volumes (its image declares them) to your {}, and your grant allows {cap}",
                before.total()
            ))
        } else {
            None
        }
    };
    let Some(why) = problem else { return Ok(()) };
    let rm = Request::delete(format!(
        "/containers/{}?force=1&v=1",
        super::path::segment(id)
    ))
    .header(header::HOST, "docker")
    .body(Full::new(Bytes::new()))
    .map_err(|e| Error::Daemon(e.to_string()))?;
    if let Err(e) = d.send(rm).await {
        warn!(user = %c.user, container = id, error = %e, "a refused container could not be removed");
    }
    Err(Refusal::new("after create", format!("{why}; it was removed")).into())
}

/// The full id of a network shared with everyone (`proxy.allow_networks`), named
/// exactly; `None` when `name` is not one.
async fn shared_id(c: &Caller, kind: Kind, name: &str) -> Result<Option<String>, Answer> {
    if kind != Kind::Network {
        return Ok(None);
    }
    let (status, v) = c.shared.daemon.get_json(&kind.inspect_path(name)).await?;
    if !status.is_success() {
        return Ok(None);
    }
    let real = v.get("Name").and_then(Value::as_str).unwrap_or("");
    let id = v.get("Id").and_then(Value::as_str).unwrap_or("");
    let shared = c.shared.settings.allow_networks.iter().any(|n| n == real);
    // Named by its own name or its id, not by a prefix another could mimic.
    Ok((shared && (name == real || name == id)).then(|| id.to_string()))
}

/// A resource named in a body: the full id of the caller's own (or of a shared
/// network); a 403, not the daemon's 404, when it is neither (the docker CLI answers
/// a 404 at create by pulling the image), worded the same whether it exists or not.
async fn body_ref(c: &Caller, kind: Kind, name: &str) -> Result<String, Answer> {
    if let Some(id) = shared_id(c, kind, name).await? {
        return Ok(id);
    }
    match owned(c, kind, name).await {
        Ok(id) => Ok(id),
        Err(a) if a.status == StatusCode::NOT_FOUND && kind == Kind::Volume => Err(Refusal::new(
            "volumes",
            format!("volume {name:?} does not exist or is not yours; create it first with `docker volume create {name}`"),
        )
        .into()),
        Err(a) if a.status == StatusCode::NOT_FOUND => Err(Refusal::new(
            "ownership",
            format!("there is no {} {name:?} of yours", kind.as_str()),
        )
        .into()),
        Err(a) => Err(a),
    }
}

/// The full id of `name`, if the caller owns it; 404 otherwise.
pub(super) async fn owned(c: &Caller, kind: Kind, name: &str) -> Result<String, Answer> {
    match resolve(&c.shared.daemon, kind, name).await? {
        Some(r) if r.owner.as_deref() == Some(c.user.as_str()) => Ok(r.id),
        _ => Err(Answer::not_found(kind, name)),
    }
}
