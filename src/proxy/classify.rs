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
    /// `GET /info`, answered with what the CLI needs ([`super::info`]).
    Info,
    /// A host-level object no limited user sees (a plugin): not found.
    Hidden(&'static str, String),
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
    /// `POST /build`: a classic build (query, context and Dockerfile checked).
    Build,
    /// `POST /images/create`: a pull (`fromImage`) or an import (`fromSrc=-`).
    ImageCreate,
    /// `POST /images/{name}/tag`.
    ImageTag(String),
    /// `POST /images/{name}/push`.
    ImagePush(String),
    /// `DELETE /images/{name}`.
    ImageRemove(String),
    /// `GET /images/{name}/get`, or `GET /images/get?names=...`.
    ImageSave(Option<String>),
    /// `POST /images/prune`: the user's own images only.
    ImagePrune,
    /// `POST /commit`: a container of the user's, onto the user's namespace.
    Commit,
}

impl Route {
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
    #[error("{}", super::images::BUILDKIT)]
    BuildKit,
    #[error("the limited socket builds with the classic builder, whose cache is your images: use `docker image prune`")]
    BuildPrune,
    #[error("`docker load` would apply the tags in the archive as they stand: use `docker import` onto your own namespace, or pull")]
    Load,
    #[error("{method} {path} is not on the limited socket's list of endpoints")]
    NotListed { method: String, path: String },
}

/// The route of `method` on `path` and its row of the endpoint table, or why it is
/// not served.
pub fn endpoint(
    method: &str,
    path: &CanonicalPath,
) -> Result<(&'static super::endpoints::Endpoint, Route), NotServed> {
    let s = path.segments();
    match (method, s.as_slice()) {
        (_, ["session"] | ["grpc"]) => return Err(NotServed::BuildKit),
        (_, ["build", "prune"]) => return Err(NotServed::BuildPrune),
        (_, ["images", "load"]) => return Err(NotServed::Load),
        _ => {}
    }
    super::endpoints::find(method, &s).ok_or_else(|| NotServed::NotListed {
        method: method.to_string(),
        path: format!("/{}", s.join("/")),
    })
}

/// The route of `method` on `path`, or why it is not served.
pub fn classify(method: &str, path: &CanonicalPath) -> Result<Route, NotServed> {
    endpoint(method, path).map(|(_, r)| r)
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
            ("GET", "/system/df"),
            ("POST", "/containers/abc/copy"),
            ("POST", "/containers/abc/archive"),
            ("POST", "/containers/abc/commit"),
            ("POST", "/images/load"),
            ("GET", "/images/search"),
            ("POST", "/build/prune"),
            ("POST", "/build/cancel"),
            ("GET", "/containers/abc/attach/ws"),
            ("POST", "/containers/json"),
            ("DELETE", "/containers/abc/json"),
            ("POST", "/session"),
            ("POST", "/grpc"),
            ("POST", "/swarm/init"),
            ("GET", "/plugins"),
            ("POST", "/plugins/x/enable"),
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
        let recorded = |m: &str, p: &str| {
            endpoint(m, &CanonicalPath::parse(p).unwrap())
                .unwrap()
                .0
                .recorded
        };
        assert!(recorded("POST", "/containers/create"));
        assert!(recorded("DELETE", "/volumes/x"));
        assert!(recorded("POST", "/exec/e/start"));
        assert!(recorded("POST", "/containers/x/rename"));
        assert!(!recorded("GET", "/containers/x/json"));
        assert!(!recorded("GET", "/containers/json"));
        assert!(!recorded("GET", "/exec/e/json"));
        assert!(!recorded("GET", "/images/library/busybox/json"));
    }
}
