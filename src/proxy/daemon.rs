//! The proxy's side of the daemon: one HTTP/1 connection per call over the daemon's
//! Unix socket, upgrades kept, and the JSON reads the rules need (inspect, counts).

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::UnixStream;

use super::Error;

#[derive(Debug, Clone)]
pub struct Daemon {
    socket: PathBuf,
}

impl Daemon {
    pub fn new(socket: impl Into<PathBuf>) -> Daemon {
        Daemon {
            socket: socket.into(),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sends `req` on a fresh connection (kept alive for an upgrade).
    pub async fn send<B>(&self, req: Request<B>) -> Result<Response<Incoming>, Error>
    where
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let stream = UnixStream::connect(&self.socket).await.map_err(|e| {
            Error::Daemon(format!(
                "cannot reach the daemon at {}: {e}",
                self.socket.display()
            ))
        })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| Error::Daemon(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        sender
            .send_request(req)
            .await
            .map_err(|e| Error::Daemon(e.to_string()))
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
