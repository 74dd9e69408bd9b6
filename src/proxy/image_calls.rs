//! The executor of image calls on a limited socket: build, pull, import, tag, push,
//! save, delete, prune and commit. Each is checked ([`super::images`]), counted
//! against the storage budget where it adds images, recorded before it is made,
//! forwarded, and recorded again once the daemon says which images it made or
//! removed (`proxy_call` with outcome `completed`).

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::http::request::Parts;
use hyper::{Response, StatusCode};
use serde_json::Value;
use tracing::warn;

use super::classify::{Kind, Route};
use super::dockerfile;
use super::images::{self, Policy};
use super::query::Query;
use super::refusal::{refuse, Refusal};
use super::rules::{Allowance, Stamp};
use super::serve::{full, owned, record, revoked, whole, Answer, Body, Caller, Unread};
use super::Error;
use crate::ledger::event::{EffectiveLimits, ProxyCall, ProxyOutcome};
use crate::ledger::image_ref::Reference;

/// What the generic part of the executor hands over.
pub struct Call<'a> {
    pub c: &'a Caller,
    pub method: String,
    /// The canonical path, as recorded.
    pub shown: String,
    pub route: Route,
    pub version: Option<(u32, u32)>,
    pub allowance: &'a Allowance,
    pub limits: &'a EffectiveLimits,
    pub stamp: &'a Stamp,
}

/// A refusal or a failure, with the resource it concerned (for the record).
pub type Failed = (Answer, Option<String>);

fn refused(r: Refusal) -> Failed {
    (r.into(), None)
}

fn no_such_image(name: &str) -> Failed {
    (
        Answer {
            status: StatusCode::NOT_FOUND,
            message: format!("No such image: {name}"),
        },
        Some(name.chars().take(256).collect()),
    )
}

fn daemon(e: Error) -> Failed {
    (e.into(), None)
}

impl Call<'_> {
    fn policy(&self) -> Policy<'_> {
        Policy::new(
            &self.c.user,
            &self.c.shared.settings.image_namespace,
            self.allowance,
        )
    }

    fn path(&self, p: &str) -> String {
        match &self.version {
            Some((a, b)) => format!("/v{a}.{b}{p}"),
            None => p.to_string(),
        }
    }

    fn call(&self, resource: Option<String>, outcome: ProxyOutcome) -> ProxyCall {
        ProxyCall {
            user: self.c.user.clone(),
            decision_id: self.c.decision.clone(),
            method: self.method.clone(),
            path: self.shown.clone(),
            resource: resource.map(|r| r.chars().take(256).collect()),
            outcome,
            reason: String::new(),
            peer: Some(self.c.peer.peer.clone()),
            images: Vec::new(),
            removed: Vec::new(),
        }
    }

    /// Recorded before it is made: a call the ledger cannot record does not happen.
    async fn record_forwarded(&self, resource: Option<String>) -> Result<(), Failed> {
        record(self.c, self.call(resource.clone(), ProxyOutcome::Forwarded))
            .await
            .map_err(|e| (e.into(), resource))
    }

    /// What the daemon made or removed. The call already happened: a record that
    /// fails is logged, not turned into a failure of the call.
    async fn record_completed(
        &self,
        resource: Option<String>,
        made: Vec<String>,
        removed: Vec<String>,
    ) {
        if made.is_empty() && removed.is_empty() {
            return;
        }
        let mut call = self.call(resource, ProxyOutcome::Completed);
        call.images = made;
        call.removed = removed;
        if let Err(e) = record(self.c, call).await {
            warn!(user = %self.c.user, error = %e, "a completed image call could not be recorded");
        }
    }

    /// The budget (the user's images, containers and volumes at the last refresh): a
    /// call that adds images is refused while the user is past it.
    fn storage(&self) -> Result<(), Failed> {
        let used = self.c.shared.budget.used(&self.c.user);
        let budget = (self.limits.max_storage_gb * 1e9) as u64;
        if used > budget {
            return Err(refused(Refusal::new(
                "storage",
                format!(
                    "your images, containers and volumes use {:.2} GB and your grant allows {} GB; remove some first",
                    used as f64 / 1e9,
                    self.limits.max_storage_gb
                ),
            )));
        }
        Ok(())
    }

    async fn inspect(&self, name: &str) -> Result<Option<images::Image>, Failed> {
        images::inspect(&self.c.shared.daemon, name)
            .await
            .map_err(daemon)
    }

    async fn send(
        &self,
        parts: &Parts,
        path: String,
        query: Option<String>,
        body: Body,
        len: Option<usize>,
        content_type: Option<&'static str>,
    ) -> Result<Response<Incoming>, Failed> {
        let mut target = self.path(&path);
        if let Some(q) = query.filter(|q| !q.is_empty()) {
            target.push('?');
            target.push_str(&q);
        }
        let req = super::serve::forward_request(parts, &target, body, len, content_type)
            .map_err(daemon)?;
        self.c.shared.daemon.send_body(req).await.map_err(daemon)
    }
}

impl Call<'_> {
    /// A call without a body whose whole answer is read (tag, delete, prune).
    async fn ask(
        &self,
        parts: &Parts,
        path: String,
        query: String,
    ) -> Result<(hyper::http::response::Parts, Bytes), Failed> {
        let resp = self
            .send(parts, path, Some(query), empty(), Some(0), None)
            .await?;
        whole(resp).await.map_err(daemon)
    }
}

fn empty() -> Body {
    Full::new(Bytes::new()).map_err(|e| match e {}).boxed()
}

/// Serves one image call.
pub async fn serve(call: Call<'_>, parts: Parts, body: Unread) -> Result<Response<Body>, Failed> {
    let q = Query::parse(parts.uri.query()).map_err(refused)?;
    let policy = call.policy();
    match call.route.clone() {
        Route::Build => build(&call, &policy, q, parts, body).await,
        Route::ImageCreate => match (
            q.one("fromImage").map_err(refused)?,
            q.one("fromSrc").map_err(refused)?,
        ) {
            (Some(f), None) if !f.is_empty() => pull(&call, &policy, q.clone(), parts, body).await,
            (None, Some(_)) => import(&call, &policy, q.clone(), parts, body).await,
            _ => Err(refused(Refusal::new(
                "images",
                "give fromImage (a pull) or fromSrc=- (an import), not both",
            ))),
        },
        Route::ImageTag(name) => tag(&call, &policy, q, &name, parts).await,
        Route::ImagePush(name) => {
            q.only(&["tag"]).map_err(refused)?;
            let r = policy
                .push(&name, q.one("tag").map_err(refused)?)
                .map_err(refused)?;
            call.record_forwarded(Some(r.to_string())).await?;
            let resp = call
                .send(
                    &parts,
                    images::image_path(&name, "/push"),
                    Some(q.encoded()),
                    empty(),
                    Some(0),
                    None,
                )
                .await?;
            Ok(streamed(&call, resp))
        }
        Route::ImageRemove(name) => remove(&call, q, &name, parts).await,
        Route::ImageSave(name) => save(&call, &policy, q, name, parts).await,
        Route::ImagePrune => {
            let query = super::filters::with_owner_filter(parts.uri.query(), &call.c.user)
                .map_err(|e| refused(Refusal::new("filters", e)))?;
            call.record_forwarded(None).await?;
            let (rparts, bytes) = call.ask(&parts, "/images/prune".into(), query).await?;
            if rparts.status.is_success() {
                let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                let removed = deleted(v.get("ImagesDeleted").unwrap_or(&Value::Null));
                if let Some(n) = v.get("SpaceReclaimed").and_then(Value::as_u64) {
                    call.c.shared.budget.sub(&call.c.user, n);
                }
                call.record_completed(None, Vec::new(), removed).await;
            }
            Ok(Response::from_parts(rparts, full(bytes)))
        }
        Route::Commit => commit(&call, &policy, q, parts, body).await,
        _ => Err(refused(Refusal::new("endpoint", "not an image call"))),
    }
}

/// `Deleted` ids of a daemon's delete or prune answer.
fn deleted(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i.get("Deleted").and_then(Value::as_str).map(str::to_string))
        .collect()
}

fn tag_of(r: &Reference) -> (String, String) {
    (r.name(), r.tag.clone().unwrap_or_else(|| "latest".into()))
}

async fn build(
    call: &Call<'_>,
    policy: &Policy<'_>,
    q: Query,
    parts: Parts,
    mut body: Unread,
) -> Result<Response<Body>, Failed> {
    let b = images::build(q, policy, call.allowance, call.stamp).map_err(refused)?;
    let Some(mut incoming) = body.take() else {
        return Err(refused(Refusal::new("body", "no build context")));
    };
    // The upstream call starts at once and its context streams as it arrives; the
    // archive's end waits for the checks (`build_context`).
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let upstream_body =
        http_body_util::StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx)).boxed();
    let target = call.path(&format!("/build?{}", b.query.encoded()));
    tracing::debug!(user = %call.c.user, %target, "a build forwarded");
    let req = super::serve::forward_request(
        &parts,
        &target,
        upstream_body,
        None,
        Some("application/x-tar"),
    )
    .map_err(daemon)?;
    let shared = call.c.shared.clone();
    let upstream = tokio::spawn(async move { shared.daemon.send_body(req).await });
    let mut up = Upstream { tx: Some(tx) };
    let streamed = stream_context(call, &b, &mut incoming, &mut up).await;
    // What the caller still sends of a refused context is drained (so they read why).
    drop(Unread::new(incoming));
    let checked = match streamed {
        Ok((text, held)) => check_build(call, policy, &b, &text)
            .await
            .map(|r| (r, held)),
        Err(e) => Err(e),
    };
    let (resource, held) = match checked {
        Ok(v) => v,
        Err(e) => {
            // Never a clean end: the daemon must not read a whole archive.
            up.abort().await;
            upstream.abort();
            return Err(e);
        }
    };
    if !held.is_empty() {
        up.send(Bytes::from(held)).await;
    }
    up.finish();
    let resp = match upstream.await {
        Ok(r) => r.map_err(daemon)?,
        Err(e) => {
            return Err(daemon(Error::Daemon(format!(
                "the build did not complete: {e}"
            ))))
        }
    };
    Ok(observed(call, resp, resource, Watch::AuxId))
}

/// The upstream body of a streamed build.
struct Upstream {
    tx: Option<
        tokio::sync::mpsc::Sender<Result<hyper::body::Frame<Bytes>, super::serve::BoxError>>,
    >,
}

impl Upstream {
    /// Forwards `bytes`; once the daemon stops reading (it answered early), nothing.
    async fn send(&mut self, bytes: Bytes) {
        if bytes.is_empty() {
            return;
        }
        if let Some(tx) = &self.tx {
            if tx.send(Ok(hyper::body::Frame::data(bytes))).await.is_err() {
                self.tx = None;
            }
        }
    }

    /// Ends the body with an error: the connection is cut before the body's end.
    async fn abort(&mut self) {
        if let Some(tx) = self.tx.take() {
            let cut: super::serve::BoxError = "the build was refused".into();
            let _ = tx.send(Err(cut)).await;
        }
    }

    /// Ends the body cleanly.
    fn finish(&mut self) {
        self.tx = None;
    }
}

/// Reads the caller's context, forwarding what may go as it arrives: a plain tar up
/// to its end marker; a compressed one not at all (it is read whole first). The
/// Dockerfile's text and what is held back.
async fn stream_context(
    call: &Call<'_>,
    b: &images::Build,
    incoming: &mut Incoming,
    up: &mut Upstream,
) -> Result<(String, Vec<u8>), Failed> {
    let max = call.c.shared.settings.max_build_context;
    let mut watch = super::build_context::TarWatch::new(&b.dockerfile);
    // None until the first bytes say whether the tar is compressed.
    let mut plain: Option<bool> = None;
    let mut held: Vec<u8> = Vec::new();
    let mut total: u64 = 0;
    let too_big = || {
        refused(Refusal::new(
            "build context",
            format!(
                "the limited socket reads at most {max} bytes of context (proxy.max_build_context)"
            ),
        ))
    };
    loop {
        let (data, last) = match incoming.frame().await {
            Some(Ok(f)) => match f.into_data() {
                Ok(d) => (d, false),
                Err(_) => continue, // trailers
            },
            Some(Err(e)) => return Err(refused(Refusal::new("build context", e))),
            None => (Bytes::new(), true),
        };
        total += data.len() as u64;
        if total > max {
            return Err(too_big());
        }
        if plain.is_none() {
            held.extend_from_slice(&data);
            if held.len() < 6 && !last {
                continue;
            }
            let compressed = held.starts_with(&[0x1f, 0x8b, 0x08]);
            if held.starts_with(b"BZh") || held.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
                return Err(refused(Refusal::new(
                    "build context",
                    "send the context as a plain or gzipped tar",
                )));
            }
            plain = Some(!compressed);
            if !compressed {
                let first = std::mem::take(&mut held);
                let n = watch.feed(&first).map_err(refused)?;
                up.send(Bytes::copy_from_slice(&first[..n])).await;
                held.extend_from_slice(&first[n..]);
            }
        } else if plain == Some(true) {
            let n = watch.feed(&data).map_err(refused)?;
            up.send(data.slice(..n)).await;
            held.extend_from_slice(&data[n..]);
        } else {
            held.extend_from_slice(&data);
        }
        if last {
            break;
        }
    }
    let text = if plain == Some(true) {
        watch.finish().map_err(refused)?
    } else {
        images::dockerfile_in(&held, &b.dockerfile).map_err(refused)?
    };
    Ok((text, held))
}

/// The Dockerfile's rules, its base images, the budget, then the record: the
/// resource recorded (the tags), once the build may go.
async fn check_build(
    call: &Call<'_>,
    policy: &Policy<'_>,
    b: &images::Build,
    text: &str,
) -> Result<Option<String>, Failed> {
    let scan = dockerfile::scan(text, &b.build_args).map_err(refused)?;
    for name in &scan.images {
        let r = Reference::parse(name)
            .map_err(|e| refused(Refusal::new("dockerfile", e)))?
            .with_default_tag();
        let present = if b.pull {
            None
        } else {
            call.inspect(name).await?
        };
        match present {
            Some(img) => {
                images::usable(&call.c.user, name, &img).map_err(refused)?;
                // Its ONBUILD triggers run in this build: they pass the same rules.
                if !img.onbuild.is_empty() {
                    let text = format!("FROM scratch\n{}", img.onbuild.join("\n"));
                    dockerfile::scan(&text, &b.build_args).map_err(|r| {
                        refused(Refusal::new(
                            "dockerfile",
                            format!("{name}'s ONBUILD triggers: {}", r.reason),
                        ))
                    })?;
                }
            }
            None if policy.pullable(&r) => {}
            None => {
                return Err(refused(Refusal::new(
                    "pull",
                    format!(
                        "the build would pull {r} ({}): {}",
                        if b.pull { "pull=1" } else { "it is not here" },
                        policy.pull_refusal(&r).reason
                    ),
                )))
            }
        }
    }
    for name in &b.cache_from {
        if let Some(img) = call.inspect(name).await? {
            images::usable(&call.c.user, name, &img).map_err(refused)?;
        }
    }
    call.storage()?;
    let tags: Vec<String> = b.tags.iter().map(ToString::to_string).collect();
    let resource = (!tags.is_empty()).then(|| tags.join(" "));
    call.record_forwarded(resource.clone()).await?;
    Ok(resource)
}

async fn pull(
    call: &Call<'_>,
    policy: &Policy<'_>,
    q: Query,
    parts: Parts,
    mut body: Unread,
) -> Result<Response<Body>, Failed> {
    q.only(&["fromImage", "tag", "platform"]).map_err(refused)?;
    if let Some(b) = body.take() {
        no_body(b).await?;
    }
    let from = q.one("fromImage").map_err(refused)?.unwrap_or("");
    let r = policy
        .pull_ref(from, q.one("tag").map_err(refused)?)
        .map_err(refused)?;
    let existing = call.inspect(&r.to_string()).await?;
    images::pull_keeps_tags(policy, &r, existing.as_ref()).map_err(refused)?;
    call.storage()?;
    call.record_forwarded(Some(r.to_string())).await?;
    let mut fwd = Query::default();
    fwd.set("fromImage", r.name());
    fwd.set(
        "tag",
        r.digest.clone().or(r.tag.clone()).unwrap_or_default(),
    );
    if let Some(p) = q.one("platform").map_err(refused)? {
        fwd.set("platform", p);
    }
    let resp = call
        .send(
            &parts,
            "/images/create".into(),
            Some(fwd.encoded()),
            empty(),
            Some(0),
            None,
        )
        .await?;
    Ok(observed(
        call,
        resp,
        Some(r.to_string()),
        Watch::Pulled(r.to_string()),
    ))
}

async fn import(
    call: &Call<'_>,
    policy: &Policy<'_>,
    q: Query,
    parts: Parts,
    mut body: Unread,
) -> Result<Response<Body>, Failed> {
    q.only(&["fromSrc", "repo", "tag", "message", "changes", "platform"])
        .map_err(refused)?;
    if q.one("fromSrc").map_err(refused)? != Some("-") {
        return Err(refused(Refusal::new(
            "import",
            "fromSrc must be - (the archive sent with the call): the daemon would fetch a URL from the host's network",
        )));
    }
    let mut fwd = q.clone();
    let target = new_image(call, policy, &q, &mut fwd)?;
    call.storage()?;
    call.record_forwarded(target.clone()).await?;
    let Some(body) = body.take() else {
        return Err(refused(Refusal::new("body", "no archive")));
    };
    let resp = call
        .send(
            &parts,
            "/images/create".into(),
            Some(fwd.encoded()),
            super::serve::boxed(body),
            None,
            Some("application/x-tar"),
        )
        .await?;
    Ok(observed(call, resp, target, Watch::Status))
}

/// An import's or a commit's new image: its `repo` and `tag` (when given) in the
/// user's namespace, written normalized into `fwd`; its `changes` checked, and the
/// owner's label appended to them. The name it will carry, if any.
fn new_image(
    call: &Call<'_>,
    policy: &Policy<'_>,
    q: &Query,
    fwd: &mut Query,
) -> Result<Option<String>, Failed> {
    let target = match repo_tag(q)? {
        Some(full) => {
            let r = policy.own_tag(&full).map_err(refused)?;
            let (name, tag) = tag_of(&r);
            fwd.set("repo", name);
            fwd.set("tag", tag);
            Some(r.to_string())
        }
        None => None,
    };
    let changes: Vec<String> = q.all("changes").iter().map(|s| s.to_string()).collect();
    dockerfile::check_changes(&changes).map_err(refused)?;
    fwd.push("changes", owner_label(call.stamp));
    Ok(target)
}

/// `repo[:tag]` of a tag, import or commit query; `None` without a `repo`.
fn repo_tag(q: &Query) -> Result<Option<String>, Failed> {
    let Some(repo) = q.one("repo").map_err(refused)?.filter(|r| !r.is_empty()) else {
        return Ok(None);
    };
    Ok(Some(
        match q.one("tag").map_err(refused)?.filter(|t| !t.is_empty()) {
            Some(t) => format!("{repo}:{t}"),
            None => repo.to_string(),
        },
    ))
}

/// The image `name` names, if the user may read it whole (save it, tag it).
async fn readable(
    call: &Call<'_>,
    policy: &Policy<'_>,
    name: &str,
) -> Result<images::Image, Failed> {
    let Some(img) = call.inspect(name).await? else {
        return Err(no_such_image(name));
    };
    if !policy.readable(name, &img) {
        let why = format!("{name} is neither yours nor on your grant's pull list");
        return Err((Refusal::new("image owner", why).into(), Some(img.id)));
    }
    Ok(img)
}

/// The change that makes an imported or committed image the user's.
fn owner_label(stamp: &Stamp) -> String {
    format!(
        "LABEL {}={}",
        super::rules::LABEL_OWNER,
        serde_json::Value::String(stamp.owner.clone())
    )
}

async fn tag(
    call: &Call<'_>,
    policy: &Policy<'_>,
    q: Query,
    name: &str,
    parts: Parts,
) -> Result<Response<Body>, Failed> {
    q.only(&["repo", "tag"]).map_err(refused)?;
    let asked = repo_tag(&q)?.unwrap_or_default();
    let target = policy.own_tag(&asked).map_err(refused)?;
    let img = readable(call, policy, name).await?;
    call.record_forwarded(Some(img.id.clone())).await?;
    let (n, t) = tag_of(&target);
    let mut fwd = Query::default();
    fwd.set("repo", n);
    fwd.set("tag", t);
    // The image as checked, by its id: not whatever the name means a moment later.
    let (rparts, bytes) = call
        .ask(&parts, images::image_path(&img.id, "/tag"), fwd.encoded())
        .await?;
    if rparts.status.is_success() {
        call.record_completed(Some(target.to_string()), vec![img.id.clone()], Vec::new())
            .await;
    }
    Ok(Response::from_parts(rparts, full(bytes)))
}

async fn remove(
    call: &Call<'_>,
    q: Query,
    name: &str,
    parts: Parts,
) -> Result<Response<Body>, Failed> {
    q.only(&["force", "noprune"]).map_err(refused)?;
    let Some(img) = call.inspect(name).await? else {
        return Err(no_such_image(name));
    };
    let user = call.c.user.as_str();
    let ns = &call.c.shared.settings.image_namespace;
    let mine = img.owner.as_deref() == Some(user);
    let by_tag = Reference::parse(name).ok().filter(|r| ns.holds(user, r));
    let foreign_tags: Vec<&String> = img
        .tags
        .iter()
        .filter(|t| Reference::parse(t).map_or(true, |r| !ns.holds(user, &r)))
        .collect();
    let by_id = {
        let hex = name.strip_prefix("sha256:").unwrap_or(name);
        hex.len() >= 12 && img.id.trim_start_matches("sha256:").starts_with(hex)
    };
    let force = q.flag("force").map_err(refused)?.unwrap_or(false);
    let allowed = match (&by_tag, by_id) {
        // A tag of the user's own namespace: theirs to remove (the image goes with
        // its last tag).
        (Some(_), _) => !force || (mine && foreign_tags.is_empty()),
        // By id: the user's image, carrying no tag but theirs.
        (None, true) => mine && foreign_tags.is_empty(),
        _ => false,
    };
    if !allowed {
        let why = if !mine && by_tag.is_none() {
            format!("{name} is not yours to remove")
        } else if !foreign_tags.is_empty() {
            format!(
                "{name} also carries {}, which is not yours",
                foreign_tags
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        } else {
            format!("{name}: remove your tags of it, or name it by id")
        };
        return Err((
            Refusal::new("image owner", why).into(),
            Some(img.id.clone()),
        ));
    }
    call.record_forwarded(Some(img.id.clone())).await?;
    let path = match by_tag {
        Some(r) => images::image_path(&r.with_default_tag().to_string(), ""),
        None => images::image_path(&img.id, ""),
    };
    let (rparts, bytes) = call.ask(&parts, path, q.encoded()).await?;
    if rparts.status.is_success() {
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let removed = deleted(&v);
        if mine && removed.contains(&img.id) {
            call.c.shared.budget.sub(user, img.size);
        }
        call.record_completed(Some(img.id.clone()), Vec::new(), removed)
            .await;
    }
    Ok(Response::from_parts(rparts, full(bytes)))
}

async fn save(
    call: &Call<'_>,
    policy: &Policy<'_>,
    q: Query,
    name: Option<String>,
    parts: Parts,
) -> Result<Response<Body>, Failed> {
    let names: Vec<String> = match &name {
        Some(n) => {
            q.only(&[]).map_err(refused)?;
            vec![n.clone()]
        }
        None => {
            q.only(&["names"]).map_err(refused)?;
            q.all("names").iter().map(|s| s.to_string()).collect()
        }
    };
    if names.is_empty() {
        return Err(refused(Refusal::new("images", "name the images to save")));
    }
    for n in &names {
        readable(call, policy, n).await?;
    }
    let (path, query) = match name {
        Some(n) => (images::image_path(&n, "/get"), None),
        None => (
            "/images/get".to_string(),
            Some(
                names
                    .iter()
                    .map(|n| format!("names={}", super::filters::encode(n)))
                    .collect::<Vec<_>>()
                    .join("&"),
            ),
        ),
    };
    let resp = call
        .send(&parts, path, query, empty(), Some(0), None)
        .await?;
    Ok(streamed(call, resp))
}

async fn commit(
    call: &Call<'_>,
    policy: &Policy<'_>,
    q: Query,
    parts: Parts,
    mut body: Unread,
) -> Result<Response<Body>, Failed> {
    q.only(&[
        "container",
        "repo",
        "tag",
        "comment",
        "author",
        "pause",
        "changes",
    ])
    .map_err(refused)?;
    let name = q
        .one("container")
        .map_err(refused)?
        .unwrap_or("")
        .to_string();
    let id = owned(call.c, Kind::Container, &name)
        .await
        .map_err(|a| (a, Some(name.clone())))?;
    let mut fwd = q.clone();
    fwd.set("container", id.clone());
    let target = new_image(call, policy, &q, &mut fwd)?;
    let bytes = match body.take() {
        Some(b) => Limited::new(b, 1 << 20)
            .collect()
            .await
            .map_err(|e| refused(Refusal::new("body", e)))?
            .to_bytes(),
        None => Bytes::new(),
    };
    let json = if bytes.is_empty() {
        Value::Null
    } else {
        super::strict_json::parse(&bytes).map_err(|e| refused(Refusal::new("strict body", e)))?
    };
    let checked = super::rules::commit_config(json, call.allowance, call.stamp).map_err(refused)?;
    call.storage()?;
    call.record_forwarded(target.clone().or(Some(id.clone())))
        .await?;
    let (body, len, ct): (Body, usize, Option<&'static str>) = if checked.body.is_null() {
        (empty(), 0, None)
    } else {
        let b = Bytes::from(checked.body.to_string());
        let n = b.len();
        (
            Full::new(b).map_err(|e| match e {}).boxed(),
            n,
            Some("application/json"),
        )
    };
    let resp = call
        .send(
            &parts,
            "/commit".into(),
            Some(fwd.encoded()),
            body,
            Some(len),
            ct,
        )
        .await?;
    let (rparts, bytes) = whole(resp).await.map_err(daemon)?;
    if rparts.status.is_success() {
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if let Some(made) = v.get("Id").and_then(Value::as_str) {
            if let Ok(Some(img)) = images::inspect(&call.c.shared.daemon, made).await {
                call.c.shared.budget.add(&call.c.user, img.size);
            }
            call.record_completed(target.or(Some(id)), vec![made.to_string()], Vec::new())
                .await;
        }
    }
    Ok(Response::from_parts(rparts, full(bytes)))
}

async fn no_body(body: Incoming) -> Result<(), Failed> {
    let b = Limited::new(body, 1 << 16)
        .collect()
        .await
        .map_err(|e| refused(Refusal::new("body", e)))?
        .to_bytes();
    if b.is_empty() {
        Ok(())
    } else {
        refuse("body", "a pull takes no body").map_err(refused)
    }
}

/// What to watch a streamed answer for.
#[derive(Clone)]
enum Watch {
    /// A build's `{"aux":{"ID":"sha256:..."}}` (the last one is the image).
    AuxId,
    /// An import's `{"status":"sha256:..."}`.
    Status,
    /// A pull: the image the reference names once it ends.
    Pulled(String),
}

/// A streamed answer (a push, a save) passed through as it comes, ending with the
/// access.
fn streamed(call: &Call<'_>, resp: Response<Incoming>) -> Response<Body> {
    let ended = call.c.ended.clone();
    resp.map(|b| super::serve::revocable(b, ended))
}

/// A streamed answer that makes an image (a build, a pull, an import), passed through
/// as it comes and read on the way for the image's id: once it ends well, the image
/// is counted against the user's budget (before the caller sees the end) and recorded
/// as `completed`. It ends with the access, too.
fn observed(
    call: &Call<'_>,
    resp: Response<Incoming>,
    resource: Option<String>,
    watch: Watch,
) -> Response<Body> {
    if !resp.status().is_success() {
        return resp.map(super::serve::boxed);
    }
    let (parts, mut body) = resp.into_parts();
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let mut ended = call.c.ended.clone();
    let c = call.c.clone();
    let record_as = call.call(resource.clone(), ProxyOutcome::Completed);
    tokio::spawn(async move {
        let mut line = Vec::new();
        let mut made: Option<String> = None;
        let mut failed = false;
        loop {
            tokio::select! {
                f = body.frame() => match f {
                    Some(Ok(f)) => {
                        if let Some(data) = f.data_ref() {
                            for &b in data.iter() {
                                if b == b'\n' {
                                    scan_line(&line, &watch, &mut made, &mut failed);
                                    line.clear();
                                } else if line.len() < 1 << 16 {
                                    line.push(b);
                                }
                            }
                        }
                        if tx.send(Ok(f)).await.is_err() { break }
                    }
                    Some(Err(e)) => { let _ = tx.send(Err(e)).await; break }
                    None => { scan_line(&line, &watch, &mut made, &mut failed); break }
                },
                _ = revoked(&mut ended) => break,
            }
        }
        if failed {
            return;
        }
        // Before the caller sees the end: the image it made counts against its budget
        // from the next call on (the background refresh would see it only later).
        let d = &c.shared.daemon;
        if let Some(img) = match &made {
            Some(id) => images::inspect(d, id).await.ok().flatten(),
            None => None,
        } {
            if img.owner.as_deref() == Some(c.user.as_str()) {
                c.shared.budget.add(&c.user, img.size);
            }
        }
        drop(tx);
        // A pulled image is nobody's (not counted): its id is looked up for the record.
        if let Watch::Pulled(r) = &watch {
            made = images::inspect(d, r).await.ok().flatten().map(|i| i.id);
        }
        if let Some(id) = made {
            let mut call = record_as;
            call.images = vec![id];
            if let Err(e) = record(&c, call).await {
                warn!(user = %c.user, error = %e, "a completed image call could not be recorded");
            }
        }
    });
    let body = http_body_util::StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx))
        .map_err(super::serve::BoxError::from)
        .boxed();
    Response::from_parts(parts, body)
}

fn scan_line(line: &[u8], watch: &Watch, made: &mut Option<String>, failed: &mut bool) {
    let Ok(v) = serde_json::from_slice::<Value>(line) else {
        return;
    };
    if v.get("error").is_some() || v.get("errorDetail").is_some() {
        *failed = true;
    }
    let id = match watch {
        // `-q` buffers the output: the id comes alone, as the stream's text.
        Watch::AuxId => v
            .pointer("/aux/ID")
            .or_else(|| v.get("stream"))
            .and_then(Value::as_str),
        Watch::Status => v.get("status").and_then(Value::as_str),
        Watch::Pulled(_) => None,
    };
    if let Some(id) = id.map(str::trim).filter(|s| {
        s.len() == 71 && s.starts_with("sha256:") && s[7..].bytes().all(|b| b.is_ascii_hexdigit())
    }) {
        *made = Some(id.to_string());
    }
}
