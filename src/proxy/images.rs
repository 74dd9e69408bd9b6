//! Images on the limited socket (DESIGN §6): the user's namespace of tags, the
//! grant's pull and push allowlists, who owns an image (its `privledger.owner`
//! label, written at build, commit and import), and the checks of every image call
//! (build, pull, import, tag, push, save, delete, commit). Pure where it can be;
//! what needs the daemon's view takes the image as the daemon showed it.

use std::collections::HashMap;

use serde_json::Value;

use super::daemon::Daemon;
use super::query::Query;
use super::refusal::{refuse, Refusal};
use super::rules::{Allowance, LABEL_OWNER};
use super::Error;
use crate::ledger::image_ref::{Namespace, Pattern, Reference};

/// An image as the daemon shows it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Image {
    pub id: String,
    pub owner: Option<String>,
    pub tags: Vec<String>,
    pub digests: Vec<String>,
    pub size: u64,
    /// `ONBUILD` triggers it would run in a build from it.
    pub onbuild: Vec<String>,
}

impl Image {
    fn from_inspect(v: &Value) -> Image {
        let strs = |p: &str| -> Vec<String> {
            v.pointer(p)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        };
        Image {
            id: v
                .get("Id")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            owner: v
                .pointer("/Config/Labels")
                .and_then(|l| l.get(LABEL_OWNER))
                .and_then(Value::as_str)
                .map(str::to_string),
            tags: strs("/RepoTags"),
            digests: strs("/RepoDigests"),
            size: v.get("Size").and_then(Value::as_u64).unwrap_or(0),
            onbuild: strs("/Config/OnBuild"),
        }
    }
}

/// The daemon's path for an image name (which may hold slashes): each segment
/// escaped, the slashes kept, as the daemon's router reads `{name:.*}`.
pub fn image_path(name: &str, suffix: &str) -> String {
    let segs: Vec<String> = name.split('/').map(super::path::segment).collect();
    format!("/images/{}{suffix}", segs.join("/"))
}

/// The image `name` resolves to on the daemon, if any.
pub async fn inspect(d: &Daemon, name: &str) -> Result<Option<Image>, Error> {
    let (status, v) = d.get_json(&image_path(name, "/json")).await?;
    Ok(status.is_success().then(|| Image::from_inspect(&v)))
}

/// An image a user may run or build from: theirs, or one no user owns (the hub's,
/// a pulled one); never another user's.
pub fn usable(user: &str, asked: &str, img: &Image) -> Result<(), Refusal> {
    match img.owner.as_deref() {
        Some(o) if o != user => refuse("image owner", format!("{asked} is another user's image")),
        _ => Ok(()),
    }
}

/// The image rules of one user's grant.
pub struct Policy<'a> {
    pub user: &'a str,
    pub namespace: &'a Namespace,
    pub pull: Vec<Pattern>,
    pub push: Vec<Pattern>,
    pub build: bool,
}

impl<'a> Policy<'a> {
    pub fn new(user: &'a str, namespace: &'a Namespace, a: &Allowance) -> Policy<'a> {
        // The grant's patterns were checked when it was issued; one that no longer
        // parses allows nothing.
        let parse = |l: &[String]| l.iter().filter_map(|p| Pattern::parse(p).ok()).collect();
        Policy {
            user,
            namespace,
            pull: parse(&a.pull_allow),
            push: parse(&a.push_allow),
            build: a.build,
        }
    }

    fn ns_hint(&self) -> String {
        match self.namespace.prefix(self.user) {
            Some(p) => format!("your images are tagged {p}<name>[:tag]"),
            None => format!(
                "your user name {:?} cannot begin an image name, so you have no tags of your own",
                self.user
            ),
        }
    }

    /// A tag the user may write (build `-t`, tag, commit, import): in their namespace.
    pub fn own_tag(&self, name: &str) -> Result<Reference, Refusal> {
        let r = Reference::parse(name).map_err(|e| Refusal::new("image namespace", e))?;
        if r.digest.is_some() {
            return refuse("image namespace", format!("{name}: a tag, not a digest"));
        }
        if !self.namespace.holds(self.user, &r) {
            return refuse(
                "image namespace",
                format!("{name} is not yours to tag: {}", self.ns_hint()),
            );
        }
        Ok(r.with_default_tag())
    }

    /// Whether `r` may be pulled.
    pub fn pullable(&self, r: &Reference) -> bool {
        self.pull.iter().any(|p| p.matches(r))
    }

    pub fn pull_refusal(&self, r: &Reference) -> Refusal {
        Refusal::new(
            "pull",
            if self.pull.is_empty() {
                format!("{r} is not pulled: your grant allows no pulls (--pull-allow)")
            } else {
                format!(
                    "{r} is not on your grant's pull list ({})",
                    self.pull
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            },
        )
    }

    /// An image the user may read whole (save, tag from): their own, or one their
    /// pull list names (by the name it was asked for, or by a tag it carries).
    pub fn readable(&self, asked: &str, img: &Image) -> bool {
        if img.owner.as_deref() == Some(self.user) {
            return true;
        }
        std::iter::once(asked)
            .chain(img.tags.iter().map(String::as_str))
            .filter_map(|n| Reference::parse(n).ok())
            .any(|r| self.pullable(&r.with_default_tag()))
    }

    /// A push: the name is the user's and its registry is on the push list.
    pub fn push(&self, name: &str, tag: Option<&str>) -> Result<Reference, Refusal> {
        let full = match tag.filter(|t| !t.is_empty()) {
            Some(t) => format!("{name}:{t}"),
            None => name.to_string(),
        };
        let r = Reference::parse(&full).map_err(|e| Refusal::new("push", e))?;
        if !self.namespace.holds(self.user, &r) {
            return refuse(
                "push",
                format!("{full} is not yours to push: {}", self.ns_hint()),
            );
        }
        if !self.push.iter().any(|p| p.matches(&r)) {
            return refuse(
                "push",
                format!("{r} is not on your grant's push list (--push-allow)"),
            );
        }
        Ok(r)
    }

    /// A pull (`fromImage` and `tag`): the reference, normalized, if allowed; a pull of
    /// every tag (no tag given) is refused.
    pub fn pull_ref(&self, from: &str, tag: Option<&str>) -> Result<Reference, Refusal> {
        let from = from.trim_end_matches(':');
        let full = match tag.filter(|t| !t.is_empty()) {
            Some(t) if t.starts_with("sha256:") => format!("{from}@{t}"),
            Some(t) => format!("{from}:{t}"),
            None => from.to_string(),
        };
        let r = Reference::parse(&full).map_err(|e| Refusal::new("pull", e))?;
        if r.tag.is_none() && r.digest.is_none() {
            return refuse(
                "pull",
                format!("{full}: name a tag (a pull of every tag is not served)"),
            );
        }
        if !self.pullable(&r) {
            return Err(self.pull_refusal(&r));
        }
        Ok(r)
    }
}

/// A pull may refresh a tag that came from its registry, never replace one that was
/// built, tagged or imported here under another user's or the hub's name: the tag,
/// if it exists and is not the user's, must carry a digest of that repository.
pub fn pull_keeps_tags(
    policy: &Policy<'_>,
    r: &Reference,
    existing: Option<&Image>,
) -> Result<(), Refusal> {
    let Some(img) = existing else { return Ok(()) };
    if policy.namespace.holds(policy.user, r) || r.digest.is_some() {
        return Ok(());
    }
    let pulled = img.digests.iter().any(|d| {
        d.split_once('@')
            .and_then(|(n, _)| Reference::parse(n).ok())
            .is_some_and(|n| n.name() == r.name())
    });
    if pulled {
        Ok(())
    } else {
        refuse(
            "image namespace",
            format!("{r} exists here and was not pulled from its registry: a pull would replace it for everyone"),
        )
    }
}

/// The parameters a classic build takes, and what each may hold.
const BUILD_PARAMS: &[&str] = &[
    "dockerfile",
    "t",
    "extrahosts",
    "remote",
    "q",
    "nocache",
    "rm",
    "forcerm",
    "pull",
    "memory",
    "memswap",
    "cpushares",
    "cpuperiod",
    "cpuquota",
    "cpusetcpus",
    "cpusetmems",
    "shmsize",
    "buildargs",
    "labels",
    "cachefrom",
    "networkmode",
    "platform",
    "target",
    "version",
    "ulimits",
    "isolation",
    "cgroupparent",
    "squash",
    "session",
    "buildid",
    "outputs",
    "securityopt",
];

/// A build's query, checked: what to forward, and what the context must then show.
#[derive(Debug, PartialEq)]
pub struct Build {
    pub query: Query,
    pub tags: Vec<Reference>,
    pub dockerfile: String,
    pub build_args: HashMap<String, String>,
    /// Every base image is pulled afresh (`pull=1`).
    pub pull: bool,
    /// Images the build may take cached steps from.
    pub cache_from: Vec<String>,
}

pub const BUILDKIT: &str = "BuildKit is not served by the limited socket: build with the classic builder (DOCKER_BUILDKIT=0 docker build ...)";

fn int(q: &Query, key: &str) -> Result<Option<i64>, Refusal> {
    match q.one(key)? {
        None | Some("") => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| Refusal::new(format!("query {key}"), format!("{v:?} is not a number"))),
    }
}

/// Checks a build's query as a container create is checked (the build's `RUN` steps
/// are containers): no host network, no cgroup parent, resources within the grant's
/// caps (set to them when absent), tags in the user's namespace, the owner label.
pub fn build(
    q: Query,
    policy: &Policy<'_>,
    a: &Allowance,
    stamp: &super::rules::Stamp,
) -> Result<Build, Refusal> {
    let mut q = q;
    if !policy.build {
        return refuse(
            "build",
            "your grant does not allow image builds (--allow-build)",
        );
    }
    match q.one("version")? {
        None | Some("") | Some("1") => {}
        Some(_) => return refuse("build", BUILDKIT),
    }
    for k in ["session", "buildid", "outputs"] {
        if q.one(k)?.is_some_and(|v| !v.is_empty()) {
            return refuse("build", BUILDKIT);
        }
    }
    q.only(BUILD_PARAMS)?;
    let field = |k: &str, why: &str| refuse::<()>(format!("query {k}"), why.to_string());
    if q.one("remote")?.is_some_and(|v| !v.is_empty()) {
        field("remote", "the daemon would fetch the context itself from the host's network; send the context instead")?;
    }
    match q.one("networkmode")? {
        None | Some("" | "default" | "bridge" | "none") => {}
        Some(m) => field(
            "networkmode",
            &format!("{m:?}: a build's steps run on the default bridge or none"),
        )?,
    }
    if q.one("cgroupparent")?.is_some_and(|v| !v.is_empty()) {
        field("cgroupparent", "a build runs in the daemon's own cgroup")?;
    }
    if q.one("isolation")?
        .is_some_and(|v| !v.is_empty() && !v.eq_ignore_ascii_case("default"))
    {
        field("isolation", "only the default isolation")?;
    }
    if q.flag("squash")? == Some(true) {
        field("squash", "squashed builds are not served")?;
    }
    if !q.all("securityopt").iter().all(|v| v.is_empty()) {
        field(
            "securityopt",
            "a build's steps run with the daemon's default security options",
        )?;
    }
    for k in ["cpusetcpus", "cpusetmems"] {
        if let Some(v) = q.one(k)? {
            if !v
                .bytes()
                .all(|b| b.is_ascii_digit() || b == b',' || b == b'-')
            {
                field(k, "a list of numbers and ranges, like 0-1,3")?;
            }
        }
    }
    if let Some(u) = q.one("ulimits")? {
        let mut v: Value = serde_json::from_str(u)
            .map_err(|e| Refusal::new("query ulimits", format!("not JSON: {e}")))?;
        let mut ctx = super::fields::Ctx::new(a);
        ctx.path = "ulimits".into();
        super::rules::ulimits(&mut ctx, &mut v)
            .map_err(|r| Refusal::new("query ulimits", r.reason))?;
    }
    // Resources: the grant's caps, set when absent.
    let mem_cap = a.mem_bytes;
    let memory = int(&q, "memory")?.filter(|m| *m != 0);
    if memory.is_some_and(|m| m < 0 || m > mem_cap) {
        field(
            "memory",
            &format!("at most your memory cap, {mem_cap} bytes"),
        )?;
    }
    let memory = memory.unwrap_or(mem_cap);
    q.set("memory", memory.to_string());
    match int(&q, "memswap")? {
        None | Some(0) => q.set("memswap", memory.to_string()),
        Some(s) if s < memory || s > mem_cap => field(
            "memswap",
            &format!(
                "from memory to your memory cap, {mem_cap} bytes (-1, unlimited swap, is refused)"
            ),
        )?,
        Some(_) => {}
    }
    if int(&q, "shmsize")?.is_some_and(|s| s < 0 || s > mem_cap) {
        field(
            "shmsize",
            &format!("at most your memory cap, {mem_cap} bytes"),
        )?;
    }
    if int(&q, "cpushares")?.is_some_and(|s| !(0..=262_144).contains(&s)) {
        field("cpushares", "from 2 to 262144")?;
    }
    let period = int(&q, "cpuperiod")?.filter(|p| *p != 0);
    let quota = int(&q, "cpuquota")?.filter(|p| *p != 0);
    let cap = (a.cpu_cores * 100_000.0) as i64;
    match (period, quota) {
        (None, None) => {
            q.set("cpuperiod", "100000");
            q.set("cpuquota", cap.max(1000).to_string());
        }
        (p, Some(quota)) => {
            let p = p.unwrap_or(100_000);
            if !(1000..=1_000_000).contains(&p)
                || quota < 1000
                || quota as f64 / p as f64 > a.cpu_cores + 1e-9
            {
                field(
                    "cpuquota",
                    &format!("at most {} cores (cpuquota / cpuperiod)", a.cpu_cores),
                )?;
            }
            q.set("cpuperiod", p.to_string());
        }
        (Some(_), None) => field("cpuperiod", "give cpuquota with it")?,
    }
    // Tags.
    let mut tags = Vec::new();
    for t in q.all("t") {
        tags.push(policy.own_tag(t)?);
    }
    // Labels: the caller's, never privledger's; the owner's stamped last.
    let mut labels: serde_json::Map<String, Value> = match q.one("labels")? {
        None | Some("") => serde_json::Map::new(),
        Some(l) => serde_json::from_str(l)
            .map_err(|e| Refusal::new("query labels", format!("a JSON object of strings: {e}")))?,
    };
    if labels
        .keys()
        .any(|k| k.to_ascii_lowercase().starts_with("privledger."))
    {
        field(
            "labels",
            "privledger.* labels are written by the limited socket",
        )?;
    }
    if labels.values().any(|v| !v.is_string()) {
        field("labels", "a JSON object of strings")?;
    }
    labels.insert(LABEL_OWNER.into(), Value::String(stamp.owner.clone()));
    if let Some(d) = &stamp.decision {
        labels.insert(
            crate::ledger::LABEL_DECISION.into(),
            Value::String(d.clone()),
        );
    }
    q.set("labels", Value::Object(labels).to_string());
    let build_args: HashMap<String, String> = match q.one("buildargs")? {
        None | Some("") => HashMap::new(),
        Some(b) => serde_json::from_str::<HashMap<String, Option<String>>>(b)
            .map_err(|e| Refusal::new("query buildargs", format!("a JSON object of strings: {e}")))?
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .collect(),
    };
    let cache_from = match q.one("cachefrom")? {
        None | Some("") => Vec::new(),
        Some(c) => serde_json::from_str::<Vec<String>>(c).map_err(|e| {
            Refusal::new(
                "query cachefrom",
                format!("a JSON list of image names: {e}"),
            )
        })?,
    };
    // Intermediate containers are nobody's: they go, whatever the build's outcome.
    q.set("rm", "1");
    q.set("forcerm", "1");
    let dockerfile = q
        .one("dockerfile")?
        .filter(|d| !d.is_empty())
        .unwrap_or("Dockerfile")
        .to_string();
    let pull = q.flag("pull")?.unwrap_or(false);
    Ok(Build {
        query: q,
        tags,
        dockerfile,
        build_args,
        pull,
        cache_from,
    })
}

/// The Dockerfile in a build context (a tar, maybe gzipped), read as the daemon
/// would find it once extracted: the last entry at its path, a regular file. A path
/// through a symlink of the context, which could put another file in its place on
/// extraction, is refused.
pub fn dockerfile_in(context: &[u8], name: &str) -> Result<String, Refusal> {
    let bad = |why: String| Refusal::new("build context", why);
    let gz = context.starts_with(&[0x1f, 0x8b, 0x08]);
    if context.starts_with(b"BZh") || context.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        return Err(bad("send the context as a plain or gzipped tar".into()));
    }
    let reader: Box<dyn std::io::Read> = if gz {
        Box::new(flate2::read::GzDecoder::new(context))
    } else {
        Box::new(context)
    };
    let want = super::build_context::normalize(name);
    let mut archive = tar::Archive::new(reader);
    let mut links: Vec<String> = Vec::new();
    let mut paths: Vec<String> = Vec::new();
    let mut found: Option<Result<String, String>> = None;
    let entries = archive
        .entries()
        .map_err(|e| bad(format!("not a tar: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| bad(format!("not a tar: {e}")))?;
        let path = entry
            .path()
            .map_err(|e| bad(format!("a path in the tar: {e}")))?;
        let path = super::build_context::normalize(&path.to_string_lossy());
        let kind = entry.header().entry_type();
        if kind.is_symlink() {
            links.push(path.clone());
        }
        paths.push(path.clone());
        if path == want {
            found = Some(if kind.is_file() {
                let mut s = String::new();
                let mut limited = std::io::Read::take(&mut entry, 1 << 20);
                std::io::Read::read_to_string(&mut limited, &mut s)
                    .map_err(|e| format!("the Dockerfile is not text: {e}"))
                    .map(|_| s)
            } else {
                Err("the Dockerfile must be a regular file in the context".into())
            });
        }
    }
    if let Some(p) = paths.iter().find(|p| {
        links.iter().any(|l| {
            p.len() > l.len() && p.starts_with(l.as_str()) && p.as_bytes()[l.len()] == b'/'
        })
    }) {
        return Err(bad(format!("{p} is under a symlink of the context")));
    }
    match found {
        Some(r) => r.map_err(bad),
        None if want == "Dockerfile" => dockerfile_in(context, "dockerfile")
            .map_err(|_| bad("no Dockerfile in the context".into())),
        None => Err(bad(format!("no {name} in the context"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::rules::{Publish, Stamp};

    fn allowance() -> Allowance {
        Allowance {
            dangerous: false,
            privileged: false,
            cpu_cores: 1.0,
            mem_bytes: 1 << 30,
            pids: 100,
            publish: Publish::Off,
            shared_networks: vec![],
            network_pools: vec![],
            build: true,
            pull_allow: vec!["127.0.0.1:5000/**".into(), "busybox:1.*".into()],
            push_allow: vec!["127.0.0.1:5000/**".into()],
        }
    }

    fn stamp() -> Stamp {
        Stamp {
            owner: "alice".into(),
            decision: Some("d1".into()),
        }
    }

    fn check(q: &str) -> Result<Build, Refusal> {
        let a = allowance();
        let ns = Namespace::default();
        let p = Policy::new("alice", &ns, &a);
        build(Query::parse(Some(q)).unwrap(), &p, &a, &stamp())
    }

    #[test]
    fn a_build_s_query_is_checked_like_a_create() {
        let b = check("t=alice/x:1&t=alice/y").unwrap();
        assert_eq!(b.tags.len(), 2);
        assert_eq!(b.query.one("memory").unwrap(), Some("1073741824"));
        assert_eq!(b.query.one("cpuquota").unwrap(), Some("100000"));
        assert_eq!(b.query.one("rm").unwrap(), Some("1"));
        let labels: Value = serde_json::from_str(b.query.one("labels").unwrap().unwrap()).unwrap();
        assert_eq!(labels["privledger.owner"], "alice");
        for (q, rule) in [
            ("networkmode=host", "query networkmode"),
            ("networkmode=container:abc", "query networkmode"),
            ("cgroupparent=/", "query cgroupparent"),
            ("isolation=hyperv", "query isolation"),
            ("remote=http://127.0.0.1:1/ctx.tar", "query remote"),
            ("memory=2147483648", "query memory"),
            ("memswap=-1", "query memswap"),
            ("cpuquota=200000", "query cpuquota"),
            ("shmsize=4294967296", "query shmsize"),
            ("t=hub/notebook:latest", "image namespace"),
            ("t=busybox", "image namespace"),
            ("t=alicex/x", "image namespace"),
            ("version=2", "build"),
            ("session=abc", "build"),
            ("labels={\"privledger.owner\":\"bob\"}", "query labels"),
            (
                "ulimits=[{\"Name\":\"rtprio\",\"Soft\":1,\"Hard\":1}]",
                "query ulimits",
            ),
            ("securityopt=seccomp=unconfined", "query securityopt"),
            ("frobnicate=1", "query frobnicate"),
            ("networkmode=bridge&networkmode=host", "query networkmode"),
        ] {
            assert_eq!(check(q).unwrap_err().rule, rule, "{q}");
        }
        let a = Allowance {
            build: false,
            ..allowance()
        };
        let ns = Namespace::default();
        let p = Policy::new("alice", &ns, &a);
        assert_eq!(
            build(Query::default(), &p, &a, &stamp()).unwrap_err().rule,
            "build"
        );
    }

    #[test]
    fn pulls_pushes_and_tags_follow_the_grant() {
        let a = allowance();
        let ns = Namespace::default();
        let p = Policy::new("alice", &ns, &a);
        assert!(p.pull_ref("127.0.0.1:5000/any/thing", Some("v1")).is_ok());
        assert!(p.pull_ref("busybox", Some("1.36")).is_ok());
        assert!(p.pull_ref("busybox", Some("latest")).is_err());
        assert!(p.pull_ref("127.0.0.1:5000/x", None).is_err(), "every tag");
        assert!(p.push("127.0.0.1:5000/alice/x", Some("1")).is_ok());
        assert!(p.push("127.0.0.1:5000/bob/x", Some("1")).is_err());
        assert!(
            p.push("alice/x", None).is_err(),
            "docker.io is not on the push list"
        );
        assert!(p.own_tag("alice/x").is_ok());
        assert!(p.own_tag("127.0.0.1:5000/hub/notebook").is_err());
        let shared = Image {
            tags: vec!["127.0.0.1:5000/hub/nb:1".into()],
            ..Default::default()
        };
        let r = Reference::parse("127.0.0.1:5000/hub/nb:1").unwrap();
        assert!(
            pull_keeps_tags(&p, &r, Some(&shared)).is_err(),
            "a tag made here"
        );
        let pulled = Image {
            digests: vec![format!("127.0.0.1:5000/hub/nb@sha256:{}", "a".repeat(64))],
            ..shared.clone()
        };
        assert!(pull_keeps_tags(&p, &r, Some(&pulled)).is_ok());
        assert!(pull_keeps_tags(&p, &r, None).is_ok());
        let mine = Image {
            owner: Some("alice".into()),
            ..Default::default()
        };
        assert!(p.readable("sha256:abc", &mine));
        assert!(!p.readable("sha256:abc", &Image::default()));
        assert!(p.readable("busybox:1.36", &Image::default()));
    }

    fn tar_of(entries: &[(&str, &[u8], tar::EntryType, Option<&str>)]) -> Vec<u8> {
        crate::proxy::build_context::tar_of(entries, true)
    }

    #[test]
    fn the_dockerfile_is_found_as_the_daemon_would_find_it() {
        use tar::EntryType as T;
        let ctx = tar_of(&[
            ("Dockerfile", b"FROM a", T::Regular, None),
            ("sub/Dockerfile.x", b"FROM b", T::Regular, None),
            ("Dockerfile", b"FROM c", T::Regular, None),
        ]);
        assert_eq!(
            dockerfile_in(&ctx, "Dockerfile").unwrap(),
            "FROM c",
            "the last entry wins"
        );
        assert_eq!(
            dockerfile_in(&ctx, "./sub/../sub/Dockerfile.x").unwrap(),
            "FROM b"
        );
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &ctx).unwrap();
        assert_eq!(
            dockerfile_in(&gz.finish().unwrap(), "Dockerfile").unwrap(),
            "FROM c"
        );
        let lower = tar_of(&[("dockerfile", b"FROM d", T::Regular, None)]);
        assert_eq!(dockerfile_in(&lower, "Dockerfile").unwrap(), "FROM d");
        for bad in [
            tar_of(&[("Dockerfile", b"", T::Symlink, Some("/etc/x"))]),
            tar_of(&[
                ("Dockerfile", b"FROM a", T::Regular, None),
                ("d", b"", T::Symlink, Some(".")),
                ("d/Dockerfile", b"FROM evil", T::Regular, None),
            ]),
            tar_of(&[("other", b"FROM a", T::Regular, None)]),
            b"BZh91AY".to_vec(),
        ] {
            assert!(dockerfile_in(&bad, "Dockerfile").is_err());
        }
    }
}
