//! The proxy's side of the daemon: HTTP/1 over the daemon's Unix socket on pooled
//! connections, upgrades kept, and the JSON reads the rules need (inspect, counts).

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use hyperlocal::UnixConnector;
use serde_json::Value;

use super::Error;

/// The daemon's socket, with a pool of kept-alive connections to it: a new
/// connection and handshake per call would add a quarter of a millisecond to every
/// list and inspect.
pub struct Daemon {
    socket: PathBuf,
    /// The socket path hex-encoded, as hyperlocal's connector reads it from a URI.
    host: String,
    client: Client<UnixConnector, super::serve::Body>,
}

impl Daemon {
    pub fn new(socket: impl Into<PathBuf>) -> Daemon {
        let socket = socket.into();
        Daemon {
            host: hex::encode(socket.as_os_str().as_encoded_bytes()),
            socket,
            client: Client::builder(TokioExecutor::new()).build(UnixConnector),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sends `req` (its URI holding the path and query) on a pooled connection;
    /// upgrades are kept.
    pub async fn send(&self, req: Request<Full<Bytes>>) -> Result<Response<Incoming>, Error> {
        self.send_body(req.map(|b| b.map_err(|e| match e {}).boxed()))
            .await
    }

    /// Sends `req` with a body of any kind (a build context or an archive streamed
    /// as it arrives).
    pub async fn send_body(
        &self,
        req: Request<super::serve::Body>,
    ) -> Result<Response<Incoming>, Error> {
        let (mut parts, body) = req.into_parts();
        let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        parts.uri = format!("unix://{}:0{pq}", self.host)
            .parse()
            .map_err(|e| Error::Daemon(format!("{pq}: {e}")))?;
        self.client
            .request(Request::from_parts(parts, body))
            .await
            .map_err(|e| {
                Error::Daemon(format!(
                    "cannot reach the daemon at {}: {e}",
                    self.socket.display()
                ))
            })
    }

    /// `GET path` answered as JSON: the status and the value (`Null` for no body).
    pub async fn get_json(&self, path_and_query: &str) -> Result<(StatusCode, Value), Error> {
        let req = Request::get(path_and_query)
            .header(hyper::header::HOST, "docker")
            .body(Full::new(Bytes::new()))
            .map_err(|e| Error::Daemon(e.to_string()))?;
        let resp = self.send(req).await?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| Error::Daemon(e.to_string()))?
            .to_bytes();
        let v = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body)
                .map_err(|e| Error::Daemon(format!("{path_and_query}: {e}")))?
        };
        Ok((status, v))
    }
}
