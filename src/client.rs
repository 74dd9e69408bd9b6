//! A connected gRPC client for all three services, with the bearer token attached to
//! every call. Shared by the CLI, the integration tests and the load generator.

use std::path::PathBuf;
use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Request, Status};

use crate::pb;

/// Adds `authorization: Bearer …` to every call (nothing when no token is set).
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Bearer {
    pub fn new(token: Option<&str>) -> Result<Bearer, ClientError> {
        token
            .map(|t| {
                format!("Bearer {}", t.trim())
                    .parse()
                    .map_err(|_| ClientError::BadToken)
            })
            .transpose()
            .map(Bearer)
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

pub type Svc = InterceptedService<Channel, Bearer>;

/// Largest response accepted (WhoHasAccess over a large population is big).
const MAX_RESPONSE: usize = 256 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("the token contains characters that cannot be sent in a header")]
    BadToken,
    #[error("invalid server address {0:?}: {1}")]
    BadAddress(String, String),
    #[error("cannot reach the server at {0}: {1}")]
    Connect(String, String),
    #[error("cannot read {what} {path}: {reason}")]
    TlsFile {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("{0}")]
    TlsSetup(String),
}

/// How a client reaches the server: TLS files for an `https://` server, and a
/// deadline for each call.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// The CA that signed the server's certificate (PEM).
    pub tls_ca: Option<PathBuf>,
    /// A client certificate and key (PEM), for a server that requires them.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Each call (a stream: until its first answer) must be answered within this.
    pub timeout: Option<Duration>,
}

impl ConnectOptions {
    /// The endpoint for `server` with these options.
    pub fn endpoint(&self, server: &str) -> Result<Endpoint, ClientError> {
        let server = &*with_scheme(server);
        let bad = |e: String| ClientError::BadAddress(server.to_string(), e);
        let mut e = Endpoint::from_shared(server.to_string()).map_err(|e| bad(e.to_string()))?;
        if let Some(t) = self.timeout {
            e = e.timeout(t).connect_timeout(t);
        }
        let https = server.starts_with("https://");
        if !https {
            if self.tls_ca.is_some() || self.tls_cert.is_some() {
                return Err(bad(
                    "TLS files were given for a plaintext server; use an https:// address".into(),
                ));
            }
            return Ok(e);
        }
        let read = |what: &'static str, p: &PathBuf| {
            std::fs::read(p).map_err(|err| ClientError::TlsFile {
                what,
                path: p.clone(),
                reason: err.to_string(),
            })
        };
        let ca = self.tls_ca.as_ref().ok_or_else(|| {
            ClientError::TlsSetup(format!(
                "{server} is https: give the CA that signed its certificate (--tls-ca FILE)"
            ))
        })?;
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read("CA", ca)?));
        match (&self.tls_cert, &self.tls_key) {
            (Some(c), Some(k)) => {
                tls = tls.identity(Identity::from_pem(read("certificate", c)?, read("key", k)?));
            }
            (None, None) => {}
            _ => {
                return Err(ClientError::TlsSetup(
                    "a client certificate needs both --tls-cert and --tls-key".into(),
                ))
            }
        }
        e.tls_config(tls)
            .map_err(|err| ClientError::TlsSetup(source_chain(&err)))
    }
}

#[derive(Clone)]
pub struct Clients {
    pub admin: pb::admin_client::AdminClient<Svc>,
    pub authz: pb::authorizer_client::AuthorizerClient<Svc>,
    pub audit: pb::audit_client::AuditClient<Svc>,
    pub channel: Channel,
}

impl Clients {
    /// Clients over an existing channel.
    pub fn new(channel: Channel, token: Option<&str>) -> Result<Clients, ClientError> {
        let b = Bearer::new(token)?;
        Ok(Clients {
            admin: pb::admin_client::AdminClient::with_interceptor(channel.clone(), b.clone())
                .max_decoding_message_size(MAX_RESPONSE),
            authz: pb::authorizer_client::AuthorizerClient::with_interceptor(
                channel.clone(),
                b.clone(),
            )
            .max_decoding_message_size(MAX_RESPONSE),
            audit: pb::audit_client::AuditClient::with_interceptor(channel.clone(), b)
                .max_decoding_message_size(MAX_RESPONSE),
            channel,
        })
    }

    /// Connects to `server` (`http://host:port`).
    pub async fn connect(server: &str, token: Option<&str>) -> Result<Clients, ClientError> {
        Clients::connect_with(server, token, &ConnectOptions::default()).await
    }

    /// Connects to `server` (`http://host:port` or, with `opts.tls_ca`,
    /// `https://host:port`).
    pub async fn connect_with(
        server: &str,
        token: Option<&str>,
        opts: &ConnectOptions,
    ) -> Result<Clients, ClientError> {
        let server = &*with_scheme(server);
        let channel = opts
            .endpoint(server)?
            .connect()
            .await
            .map_err(|e| ClientError::Connect(server.to_string(), source_chain(&e)))?;
        Clients::new(channel, token)
    }
}

/// An error and its causes on one line, each said once (many errors already print
/// their cause in their own message).
pub fn source_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !t.is_empty() && !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

/// `server` as a URL: a bare `HOST:PORT` means `http://HOST:PORT`.
fn with_scheme(server: &str) -> std::borrow::Cow<'_, str> {
    if server.contains("://") {
        std::borrow::Cow::Borrowed(server)
    } else {
        std::borrow::Cow::Owned(format!("http://{server}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct E(&'static str, Option<Box<E>>);
    impl std::fmt::Display for E {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl std::error::Error for E {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    #[test]
    fn each_cause_is_said_once() {
        let e = E(
            "tcp connect error",
            Some(Box::new(E(
                "tcp connect error",
                Some(Box::new(E("Connection refused", None))),
            ))),
        );
        assert_eq!(source_chain(&e), "tcp connect error: Connection refused");
    }

    #[test]
    fn a_bare_address_means_http() {
        assert_eq!(with_scheme("127.0.0.1:50051"), "http://127.0.0.1:50051");
        assert_eq!(with_scheme("https://h:1"), "https://h:1");
    }
}
