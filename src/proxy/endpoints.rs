//! The endpoint table (DESIGN §6): every endpoint the limited socket serves, one row
//! each: its method and path, the route it is, the rule its body is checked by, and
//! whether a call is recorded before it is made. Anything not in the table is
//! refused, never forwarded. Adding an endpoint is a row here, plus a body rule in
//! `rules` when it takes one.

use super::classify::{Kind, Route};

/// One segment of a path pattern.
#[derive(Debug, Clone, Copy)]
pub enum Seg {
    /// This word.
    Lit(&'static str),
    /// Any one segment: the resource's name or id, handed to the route.
    Id,
    /// One or more segments, slashes kept: an image's name (`host:5000/a/b:tag`), as
    /// the daemon's router reads `{name:.*}`.
    Name,
}

/// The rule a body is checked by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyRule {
    /// No body may be sent.
    None,
    ContainerCreate,
    VolumeCreate,
    NetworkCreate,
    /// Checked against the container's current `HostConfig`.
    ContainerUpdate,
    ExecCreate,
    ExecStart,
    /// A network connect or disconnect (the network may be a shared one).
    Connect,
    /// A tar forwarded as it arrives (a copy into a container, an import).
    Stream,
    /// A build's context: read (bounded) for its Dockerfile, then forwarded.
    BuildContext,
    /// A commit's container config.
    Commit,
}

pub struct Endpoint {
    pub methods: &'static [&'static str],
    pub path: &'static [Seg],
    /// The route, from the segments `Seg::Id` matched.
    pub route: fn(&[String]) -> Route,
    pub body: BodyRule,
    /// Recorded in the ledger before it is forwarded (every call that changes
    /// something); reads are not.
    pub recorded: bool,
}

use BodyRule as B;
use Kind::*;
use Seg::{Id, Lit, Name};

fn id(ids: &[String]) -> String {
    ids.first().map(|s| s.to_string()).unwrap_or_default()
}

macro_rules! row {
    ($methods:expr, [$($seg:expr),*], $route:expr, $body:expr, $recorded:expr) => {
        Endpoint { methods: $methods, path: &[$($seg),*], route: $route, body: $body, recorded: $recorded }
    };
}

const GET: &[&str] = &["GET"];
const POST: &[&str] = &["POST"];
const DELETE: &[&str] = &["DELETE"];
const READ: &[&str] = &["GET", "HEAD"];

// One row per line: the table reads as a table.
#[rustfmt::skip]
pub static ENDPOINTS: &[Endpoint] = &[
    row!(&["GET", "HEAD"], [Lit("_ping")], |_| Route::Public, B::None, false),
    row!(GET, [Lit("version")], |_| Route::Public, B::None, false),
    row!(GET, [Lit("info")], |_| Route::Info, B::None, false),
    // Host-level objects a limited user cannot see: answered as not found, so that
    // `docker inspect <name>` ends with the daemon's "No such object".
    row!(GET, [Lit("plugins"), Name, Lit("json")], |i| Route::Hidden("plugin", id(i)), B::None, false),
    // Images: the literals first, then the names (which may hold slashes).
    row!(GET, [Lit("images"), Lit("json")], |_| Route::ImageRead, B::None, false),
    row!(GET, [Lit("images"), Lit("get")], |_| Route::ImageSave(None), B::None, false),
    row!(POST, [Lit("images"), Lit("create")], |_| Route::ImageCreate, B::Stream, true),
    row!(POST, [Lit("images"), Lit("prune")], |_| Route::ImagePrune, B::None, true),
    row!(GET, [Lit("images"), Name, Lit("json")], |_| Route::ImageRead, B::None, false),
    row!(GET, [Lit("images"), Name, Lit("history")], |_| Route::ImageRead, B::None, false),
    row!(GET, [Lit("images"), Name, Lit("get")], |i| Route::ImageSave(Some(id(i))), B::None, false),
    row!(POST, [Lit("images"), Name, Lit("tag")], |i| Route::ImageTag(id(i)), B::None, true),
    row!(POST, [Lit("images"), Name, Lit("push")], |i| Route::ImagePush(id(i)), B::None, true),
    row!(DELETE, [Lit("images"), Name], |i| Route::ImageRemove(id(i)), B::None, true),
    row!(POST, [Lit("build")], |_| Route::Build, B::BuildContext, true),
    row!(POST, [Lit("commit")], |_| Route::Commit, B::Commit, true),
    row!(GET, [Lit("events")], |_| Route::Events, B::None, false),
    // Containers.
    row!(GET, [Lit("containers"), Lit("json")], |_| Route::List(Container), B::None, false),
    row!(POST, [Lit("containers"), Lit("create")], |_| Route::Create(Container), B::ContainerCreate, true),
    row!(POST, [Lit("containers"), Lit("prune")], |_| Route::Prune(Container), B::None, true),
    row!(GET, [Lit("containers"), Id, Lit("json")], |i| Route::Read(Container, id(i)), B::None, false),
    row!(GET, [Lit("containers"), Id, Lit("logs")], |i| Route::Read(Container, id(i)), B::None, false),
    row!(GET, [Lit("containers"), Id, Lit("top")], |i| Route::Read(Container, id(i)), B::None, false),
    row!(GET, [Lit("containers"), Id, Lit("stats")], |i| Route::Read(Container, id(i)), B::None, false),
    row!(GET, [Lit("containers"), Id, Lit("changes")], |i| Route::Read(Container, id(i)), B::None, false),
    row!(POST, [Lit("containers"), Id, Lit("wait")], |i| Route::Read(Container, id(i)), B::None, false),
    row!(READ, [Lit("containers"), Id, Lit("archive")], |i| Route::Read(Container, id(i)), B::None, false),
    row!(GET, [Lit("containers"), Id, Lit("export")], |i| Route::Read(Container, id(i)), B::None, false),
    row!(&["PUT"], [Lit("containers"), Id, Lit("archive")], |i| Route::Act(Container, id(i), "archive"), B::Stream, true),
    row!(POST, [Lit("containers"), Id, Lit("start")], |i| Route::Act(Container, id(i), "start"), B::None, true),
    row!(POST, [Lit("containers"), Id, Lit("stop")], |i| Route::Act(Container, id(i), "stop"), B::None, true),
    row!(POST, [Lit("containers"), Id, Lit("restart")], |i| Route::Act(Container, id(i), "restart"), B::None, true),
    row!(POST, [Lit("containers"), Id, Lit("kill")], |i| Route::Act(Container, id(i), "kill"), B::None, true),
    row!(POST, [Lit("containers"), Id, Lit("pause")], |i| Route::Act(Container, id(i), "pause"), B::None, true),
    row!(POST, [Lit("containers"), Id, Lit("unpause")], |i| Route::Act(Container, id(i), "unpause"), B::None, true),
    row!(POST, [Lit("containers"), Id, Lit("resize")], |i| Route::Act(Container, id(i), "resize"), B::None, true),
    row!(POST, [Lit("containers"), Id, Lit("rename")], |i| Route::Act(Container, id(i), "rename"), B::None, true),
    row!(POST, [Lit("containers"), Id, Lit("attach")], |i| Route::Attach(id(i)), B::None, true),
    row!(POST, [Lit("containers"), Id, Lit("update")], |i| Route::Update(id(i)), B::ContainerUpdate, true),
    row!(POST, [Lit("containers"), Id, Lit("exec")], |i| Route::ExecCreate(id(i)), B::ExecCreate, true),
    row!(DELETE, [Lit("containers"), Id], |i| Route::Remove(Container, id(i)), B::None, true),
    // Execs (the exec's container must be the caller's).
    row!(POST, [Lit("exec"), Id, Lit("start")], |i| Route::Exec(id(i), "start"), B::ExecStart, true),
    row!(POST, [Lit("exec"), Id, Lit("resize")], |i| Route::Exec(id(i), "resize"), B::None, true),
    row!(GET, [Lit("exec"), Id, Lit("json")], |i| Route::Exec(id(i), "inspect"), B::None, false),
    // Volumes.
    row!(GET, [Lit("volumes")], |_| Route::List(Volume), B::None, false),
    row!(POST, [Lit("volumes"), Lit("create")], |_| Route::Create(Volume), B::VolumeCreate, true),
    row!(POST, [Lit("volumes"), Lit("prune")], |_| Route::Prune(Volume), B::None, true),
    row!(GET, [Lit("volumes"), Id], |i| Route::Read(Volume, id(i)), B::None, false),
    row!(DELETE, [Lit("volumes"), Id], |i| Route::Remove(Volume, id(i)), B::None, true),
    // Networks.
    row!(GET, [Lit("networks")], |_| Route::List(Network), B::None, false),
    row!(POST, [Lit("networks"), Lit("create")], |_| Route::Create(Network), B::NetworkCreate, true),
    row!(POST, [Lit("networks"), Lit("prune")], |_| Route::Prune(Network), B::None, true),
    row!(GET, [Lit("networks"), Id], |i| Route::Read(Network, id(i)), B::None, false),
    row!(DELETE, [Lit("networks"), Id], |i| Route::Remove(Network, id(i)), B::None, true),
    row!(POST, [Lit("networks"), Id, Lit("connect")], |i| Route::Connect(id(i), "connect"), B::Connect, true),
    row!(POST, [Lit("networks"), Id, Lit("disconnect")], |i| Route::Connect(id(i), "disconnect"), B::Connect, true),
];

impl Endpoint {
    /// The captured segments if `method` and `segs` match this row (a `Name`
    /// captures every segment between the literals around it, joined by slashes).
    fn matches(&self, method: &str, segs: &[&str]) -> Option<Vec<String>> {
        if !self.methods.contains(&method) {
            return None;
        }
        let segs: Vec<String> = match self.path.iter().position(|p| matches!(p, Name)) {
            Some(at) => {
                let after = self.path.len() - at - 1;
                if segs.len() < self.path.len() {
                    return None;
                }
                let mut v: Vec<String> = segs[..at].iter().map(|s| s.to_string()).collect();
                v.push(segs[at..segs.len() - after].join("/"));
                v.extend(segs[segs.len() - after..].iter().map(|s| s.to_string()));
                v
            }
            None => segs.iter().map(|s| s.to_string()).collect(),
        };
        if segs.len() != self.path.len() {
            return None;
        }
        let mut ids = Vec::new();
        for (pat, seg) in self.path.iter().zip(segs) {
            match pat {
                Lit(w) if *w == seg => {}
                Lit(_) => return None,
                Id | Name => ids.push(seg),
            }
        }
        Some(ids)
    }
}

/// The row serving `method` on `segs`, and its route. A literal beats an id
/// (`/containers/create` is not the container "create"): rows with literals come
/// first where both could match.
pub fn find(method: &str, segs: &[&str]) -> Option<(&'static Endpoint, Route)> {
    ENDPOINTS
        .iter()
        .find_map(|e| e.matches(method, segs).map(|ids| (e, (e.route)(&ids))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_that_changes_something_is_recorded_and_bodies_go_with_their_rows() {
        for e in ENDPOINTS {
            let writes = e.methods.iter().any(|m| matches!(*m, "POST" | "DELETE"));
            let read_like = matches!(
                (e.route)(&["x".to_string()]),
                Route::Read(..) | Route::Exec(_, "inspect")
            );
            if writes && !read_like {
                assert!(
                    e.recorded,
                    "{:?} {:?} changes something: it must be recorded",
                    e.methods, e.path
                );
            }
            if e.body != BodyRule::None {
                assert!(
                    e.methods == POST || e.methods == ["PUT"],
                    "{:?}: only a POST or a PUT takes a body",
                    e.path
                );
            }
        }
    }

    #[test]
    fn a_literal_is_not_taken_for_an_id() {
        let (_, r) = find("POST", &["containers", "create"]).unwrap();
        assert_eq!(r, Route::Create(Container));
        let (_, r) = find("POST", &["volumes", "prune"]).unwrap();
        assert_eq!(r, Route::Prune(Volume));
        let (_, r) = find("GET", &["containers", "json"]).unwrap();
        assert_eq!(r, Route::List(Container));
        let (_, r) = find("POST", &["images", "create"]).unwrap();
        assert_eq!(r, Route::ImageCreate);
        let (_, r) = find("GET", &["images", "get"]).unwrap();
        assert_eq!(r, Route::ImageSave(None));
    }

    #[test]
    fn an_image_name_keeps_its_slashes() {
        let (_, r) = find("POST", &["images", "127.0.0.1:5000", "a", "b:1", "tag"]).unwrap();
        assert_eq!(r, Route::ImageTag("127.0.0.1:5000/a/b:1".into()));
        let (_, r) = find("DELETE", &["images", "alice", "x"]).unwrap();
        assert_eq!(r, Route::ImageRemove("alice/x".into()));
        let (_, r) = find("GET", &["images", "foo", "json", "history"]).unwrap();
        assert_eq!(
            r,
            Route::ImageRead,
            "the history of foo/json, as the daemon reads it"
        );
        let (_, r) = find("GET", &["images", "a", "b", "get"]).unwrap();
        assert_eq!(r, Route::ImageSave(Some("a/b".into())));
        assert!(
            find("POST", &["images", "tag"]).is_none(),
            "a name is one segment or more"
        );
    }
}
