//! A connected gRPC client for all three services, with the bearer token attached to
//! every call. Shared by the CLI, the integration tests and the load generator.

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
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
        let endpoint = Endpoint::from_shared(server.to_string())
            .map_err(|e| ClientError::BadAddress(server.to_string(), e.to_string()))?;
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| ClientError::Connect(server.to_string(), source_chain(&e)))?;
        Clients::new(channel, token)
    }
}

/// An error and its causes on one line.
pub fn source_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
