//! What the API needs of cluster mode, without knowing etcd: this node's role, the
//! writer's channel, whether this node may answer access questions; and the layer
//! that forwards each write RPC a follower receives to the writer, as it came (the
//! writer authenticates the caller's token itself).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::codegen::http;
use tonic::transport::Channel;
use tonic::Status;

/// How long a write waits for an election under way before it is refused: about a
/// lease, the time a dead writer's key takes to go.
pub const WAIT_FOR_WRITER: std::time::Duration = std::time::Duration::from_secs(3);

/// Marks a forwarded request: a node that is not the writer either does not forward it
/// again (no loop between two nodes that each believe the other writes).
pub const FORWARDED_BY: &str = "privledger-forwarded-by";

/// The RPCs that append to the ledger: a follower sends them to the writer.
pub const WRITE_METHODS: &[&str] = &[
    "/privledger.v1.Admin/CreateGroup",
    "/privledger.v1.Admin/DeleteGroup",
    "/privledger.v1.Admin/AddMember",
    "/privledger.v1.Admin/RemoveMember",
    "/privledger.v1.Admin/IssueGrant",
    "/privledger.v1.Admin/RevokeGrant",
    "/privledger.v1.Admin/CreateToken",
    "/privledger.v1.Admin/RevokeToken",
    "/privledger.v1.Admin/SetGroupSync",
    "/privledger.v1.Admin/ImportDockerEvents",
    "/privledger.v1.Admin/RecordHostEvents",
    "/privledger.v1.Authorizer/AuthorizeSpawn",
];

/// This node's place in the cluster, as the API sees it.
pub trait ClusterView: Send + Sync + 'static {
    fn node_id(&self) -> &str;
    /// "leader" or "follower".
    fn role(&self) -> &'static str;
    fn is_writer(&self) -> bool;
    /// The writer's node id, when one is known.
    fn writer_id(&self) -> Option<String>;
    /// A channel to the writer (cached), or why there is none.
    fn writer_channel(&self) -> Result<Channel, String>;
    /// Resolves once a writer is known (this node or another).
    fn writer_known(&self) -> Pin<Box<dyn std::future::Future<Output = ()> + Send>>;
    /// Why this node, whose state is at seq `head`, must not answer access questions
    /// now (out of touch with etcd, or stuck behind it, for longer than its bound), if
    /// it must not.
    fn stale(&self, head: u64) -> Option<String>;
    /// The cluster's head seq, as this node last read it from etcd.
    fn cluster_head(&self) -> u64;
}

/// Forwards write RPCs to the writer when this node is not it (without a cluster,
/// every request passes through).
#[derive(Clone)]
pub struct ForwardLayer {
    view: Option<Arc<dyn ClusterView>>,
}

impl ForwardLayer {
    pub fn new(view: Option<Arc<dyn ClusterView>>) -> ForwardLayer {
        ForwardLayer { view }
    }
}

impl<S> tower::Layer<S> for ForwardLayer {
    type Service = Forward<S>;
    fn layer(&self, inner: S) -> Forward<S> {
        Forward {
            inner,
            view: self.view.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Forward<S> {
    inner: S,
    view: Option<Arc<dyn ClusterView>>,
}

type BoxFuture<T, E> = Pin<Box<dyn std::future::Future<Output = Result<T, E>> + Send>>;

fn refuse(status: Status) -> http::Response<Body> {
    status.into_http()
}

impl<S, B> tower::Service<http::Request<B>> for Forward<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<http::Response<Body>, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let view = match &self.view {
            Some(v) if !v.is_writer() && WRITE_METHODS.contains(&req.uri().path()) => v.clone(),
            _ => return Box::pin(self.inner.call(req)),
        };
        if let Some(by) = req.headers().get(FORWARDED_BY) {
            let by = String::from_utf8_lossy(by.as_bytes()).into_owned();
            let me = view.node_id().to_string();
            return Box::pin(async move {
                Ok(refuse(Status::unavailable(format!(
                    "node {me} is no longer the cluster's writer (node {by} forwarded this \
                     write to it); nothing was recorded: retry"
                ))))
            });
        }
        if let Ok(v) = http::HeaderValue::from_str(view.node_id()) {
            req.headers_mut().insert(FORWARDED_BY, v);
        }
        let req = req.map(Body::new);
        Box::pin(async move {
            // An election under way: wait (briefly) for its outcome rather than refuse.
            if view.writer_channel().is_err() {
                let _ = tokio::time::timeout(WAIT_FOR_WRITER, view.writer_known()).await;
            }
            let channel = match view.writer_channel() {
                Ok(c) => c,
                Err(why) => {
                    return Ok(refuse(Status::unavailable(format!(
                        "{why}; nothing was recorded: retry"
                    ))))
                }
            };
            let writer = view.writer_id().unwrap_or_default();
            match tower::ServiceExt::oneshot(channel, req).await {
                Ok(res) => Ok(res),
                // Sent or not, the caller cannot tell: as for any lost answer, a retry
                // with the same request_id returns the first result.
                Err(e) => Ok(refuse(Status::unavailable(format!(
                    "the cluster's writer (node {writer}) did not answer: {e}; retry with the \
                     same request_id"
                )))),
            }
        })
    }
}
