//! Deny by default: the endpoints the limited socket serves, matched on the
//! canonical path. Everything not on this list is refused, never forwarded.

use super::path::CanonicalPath;

/// The kinds of resource a user can own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Container,
    Volume,
    Network,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Container => "container",
            Kind::Volume => "volume",
            Kind::Network => "network",
        }
    }

    /// The daemon's path for inspecting one (`/containers/{id}/json`, ...).
    pub fn inspect_path(self, id: &str) -> String {
        let id = super::path::segment(id);
        match self {
            Kind::Container => format!("/containers/{id}/json"),
            Kind::Volume => format!("/volumes/{id}"),
            Kind::Network => format!("/networks/{id}"),
        }
    }
}

/// What a request does, as far as the rules care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/_ping`, `/version`: nothing to own.
    Public,
    /// Image list and inspect: images are shared and read-only here.
    ImageRead,
    /// `GET /containers/json`, `/volumes`, `/networks`: filtered to the owner.
    List(Kind),
    /// `GET /events`: filtered to the owner.
    Events,
    /// `POST /{kind}/create` (the body is checked).
    Create(Kind),
    /// Reads of one owned resource (inspect, logs, top, stats, wait...).
    Read(Kind, String),
    /// A state change of one owned resource (start, stop, kill, ...).
    Act(Kind, String, &'static str),
    /// `DELETE` of one owned resource.
    Remove(Kind, String),
    /// `POST /containers/{id}/update` (the body is checked).
    Update(String),
    /// `POST /containers/{id}/attach`: an upgrade to the container's streams.
    Attach(String),
    /// `POST /containers/{id}/exec` (the body is checked).
    ExecCreate(String),
    /// `POST /exec/{id}/start` (an upgrade unless detached), resize, inspect.
    Exec(String, &'static str),
    /// `POST /networks/{id}/connect|disconnect` (the body names a container).
    Connect(String, &'static str),
    /// `POST /{kind}/prune`: filtered to the owner.
    Prune(Kind),
}

impl Route {
    /// Whether the call changes something (and is recorded in the ledger).
    pub fn mutates(&self) -> bool {
        !matches!(
            self,
            Route::Public
                | Route::ImageRead
                | Route::List(_)
                | Route::Events
                | Route::Read(..)
                | Route::Exec(_, "inspect")
        )
    }

    /// The resource the call names on its path, if any.
    pub fn resource(&self) -> Option<(Kind, &str)> {
        match self {
            Route::Read(k, id) | Route::Act(k, id, _) | Route::Remove(k, id) => Some((*k, id)),
            Route::Update(id) | Route::Attach(id) | Route::ExecCreate(id) => {
                Some((Kind::Container, id))
            }
            Route::Connect(id, _) => Some((Kind::Network, id)),
            _ => None,
        }
    }
}

/// Why a request is not served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotServed {
    #[error("BuildKit sessions are not served by the limited socket; build images elsewhere")]
    BuildKit,
    #[error("image builds, pushes, imports and deletes are not allowed on the limited socket")]
    Images,
    #[error("{method} {path} is not on the limited socket's list of endpoints")]
    NotListed { method: String, path: String },
}

/// The route of `method` on `path`, or why it is not served.
pub fn classify(method: &str, path: &CanonicalPath) -> Result<Route, NotServed> {
    use Kind::*;
    let s = path.segments();
    let one = |k: Kind, id: &str| (k, id.to_string());
    let route = match (method, s.as_slice()) {
        ("GET" | "HEAD", ["_ping"]) | ("GET", ["version"]) => Route::Public,
        ("GET", ["images", "json"]) => Route::ImageRead,
        ("GET", ["images", name @ .., "json"]) if !name.is_empty() => Route::ImageRead,
        (_, ["session"] | ["grpc"]) => return Err(NotServed::BuildKit),
        (_, ["build"] | ["build", ..]) | (_, ["images", ..]) => return Err(NotServed::Images),
        ("GET", ["events"]) => Route::Events,

        ("GET", ["containers", "json"]) => Route::List(Container),
        ("POST", ["containers", "create"]) => Route::Create(Container),
        ("POST", ["containers", "prune"]) => Route::Prune(Container),
        ("GET", ["containers", id, "json" | "logs" | "top" | "stats" | "changes"]) => {
            let (k, id) = one(Container, id);
            Route::Read(k, id)
        }
        ("POST", ["containers", id, "wait"]) => Route::Read(Container, id.to_string()),
        (
            "POST",
            ["containers", id, a @ ("start" | "stop" | "restart" | "kill" | "pause" | "unpause" | "resize" | "rename")],
        ) => Route::Act(Container, id.to_string(), static_word(a)),
        ("POST", ["containers", id, "attach"]) => Route::Attach(id.to_string()),
        ("POST", ["containers", id, "update"]) => Route::Update(id.to_string()),
        ("POST", ["containers", id, "exec"]) => Route::ExecCreate(id.to_string()),
        ("DELETE", ["containers", id]) => Route::Remove(Container, id.to_string()),

        ("POST", ["exec", id, "start"]) => Route::Exec(id.to_string(), "start"),
        ("POST", ["exec", id, "resize"]) => Route::Exec(id.to_string(), "resize"),
        ("GET", ["exec", id, "json"]) => Route::Exec(id.to_string(), "inspect"),

        ("GET", ["volumes"]) => Route::List(Volume),
        ("POST", ["volumes", "create"]) => Route::Create(Volume),
        ("POST", ["volumes", "prune"]) => Route::Prune(Volume),
        ("GET", ["volumes", name]) => Route::Read(Volume, name.to_string()),
        ("DELETE", ["volumes", name]) => Route::Remove(Volume, name.to_string()),

        ("GET", ["networks"]) => Route::List(Network),
        ("POST", ["networks", "create"]) => Route::Create(Network),
        ("POST", ["networks", "prune"]) => Route::Prune(Network),
        ("GET", ["networks", id]) => Route::Read(Network, id.to_string()),
        ("DELETE", ["networks", id]) => Route::Remove(Network, id.to_string()),
        ("POST", ["networks", id, a @ ("connect" | "disconnect")]) => {
            Route::Connect(id.to_string(), static_word(a))
        }
        _ => {
            return Err(NotServed::NotListed {
                method: method.to_string(),
                path: format!("/{}", s.join("/")),
            })
        }
    };
    Ok(route)
}

fn static_word(a: &str) -> &'static str {
    const WORDS: &[&str] = &[
        "start",
        "stop",
        "restart",
        "kill",
        "pause",
        "unpause",
        "resize",
        "rename",
        "connect",
        "disconnect",
    ];
    WORDS.iter().find(|w| **w == a).copied().unwrap_or("act")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(method: &str, p: &str) -> Result<Route, NotServed> {
        classify(method, &CanonicalPath::parse(p).unwrap())
    }

    #[test]
    fn the_list_table() {
        let c = |id: &str| id.to_string();
        let table: &[(&str, &str, Route)] = &[
            ("GET", "/_ping", Route::Public),
            ("HEAD", "/v1.41/_ping", Route::Public),
            ("GET", "/v1.41.0/version", Route::Public),
            ("GET", "/images/json", Route::ImageRead),
            (
                "GET",
                "/images/library/busybox:latest/json",
                Route::ImageRead,
            ),
            ("GET", "/containers/json", Route::List(Kind::Container)),
            (
                "POST",
                "/v1.41/containers/create",
                Route::Create(Kind::Container),
            ),
            (
                "GET",
                "/containers/abc/json",
                Route::Read(Kind::Container, c("abc")),
            ),
            (
                "GET",
                "/containers/abc/logs",
                Route::Read(Kind::Container, c("abc")),
            ),
            (
                "POST",
                "/containers/abc/wait",
                Route::Read(Kind::Container, c("abc")),
            ),
            (
                "POST",
                "/containers/abc/start",
                Route::Act(Kind::Container, c("abc"), "start"),
            ),
            (
                "POST",
                "/containers/abc/kill",
                Route::Act(Kind::Container, c("abc"), "kill"),
            ),
            ("POST", "/containers/abc/attach", Route::Attach(c("abc"))),
            ("POST", "/containers/abc/exec", Route::ExecCreate(c("abc"))),
            ("POST", "/containers/abc/update", Route::Update(c("abc"))),
            (
                "DELETE",
                "/containers/abc",
                Route::Remove(Kind::Container, c("abc")),
            ),
            ("POST", "/exec/e1/start", Route::Exec(c("e1"), "start")),
            ("GET", "/exec/e1/json", Route::Exec(c("e1"), "inspect")),
            ("GET", "/volumes", Route::List(Kind::Volume)),
            ("POST", "/volumes/create", Route::Create(Kind::Volume)),
            (
                "DELETE",
                "/volumes/data",
                Route::Remove(Kind::Volume, c("data")),
            ),
            ("GET", "/networks", Route::List(Kind::Network)),
            (
                "POST",
                "/networks/n1/connect",
                Route::Connect(c("n1"), "connect"),
            ),
            ("POST", "/containers/prune", Route::Prune(Kind::Container)),
            ("GET", "/events", Route::Events),
        ];
        for (m, p, want) in table {
            assert_eq!(route(m, p).as_ref(), Ok(want), "{m} {p}");
        }
    }

    #[test]
    fn everything_else_is_refused() {
        for (m, p) in [
            ("GET", "/info"),
            ("GET", "/system/df"),
            ("POST", "/containers/abc/copy"),
            ("PUT", "/containers/abc/archive"),
            ("GET", "/containers/abc/export"),
            ("POST", "/containers/abc/commit"),
            ("POST", "/commit"),
            ("GET", "/containers/abc/attach/ws"),
            ("POST", "/containers/json"),
            ("DELETE", "/containers/abc/json"),
            ("POST", "/images/create"),
            ("DELETE", "/images/busybox"),
            ("POST", "/build"),
            ("POST", "/session"),
            ("POST", "/grpc"),
            ("POST", "/swarm/init"),
            ("GET", "/plugins"),
            ("POST", "/plugins/pull"),
            ("GET", "/secrets"),
            ("POST", "/auth"),
            ("GET", "/distribution/busybox/json"),
            ("POST", "/volumes/data"),
            ("PATCH", "/containers/abc/start"),
        ] {
            assert!(route(m, p).is_err(), "{m} {p} must not be served");
        }
        assert_eq!(route("POST", "/v1.41/session"), Err(NotServed::BuildKit));
    }

    #[test]
    fn mutating_routes_are_the_recorded_ones() {
        assert!(route("POST", "/containers/create").unwrap().mutates());
        assert!(route("DELETE", "/volumes/x").unwrap().mutates());
        assert!(route("POST", "/exec/e/start").unwrap().mutates());
        assert!(!route("GET", "/containers/x/json").unwrap().mutates());
        assert!(!route("GET", "/containers/json").unwrap().mutates());
        assert!(!route("GET", "/exec/e/json").unwrap().mutates());
    }
}
