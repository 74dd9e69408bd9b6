//! Tower middleware for the gRPC server: status rewriting and RPC metrics.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use tonic::codegen::http;

/// tonic answers a request it cannot read with a status that blames the server or
/// the wrong thing; DESIGN §4 promises RESOURCE_EXHAUSTED for an oversized request and
/// INVALID_ARGUMENT for a malformed one. This rewrites exactly those statuses (tonic's
/// decoder words them as below; the request never reached a handler), leaving every
/// other one alone, INTERNAL from the ledger included.
pub fn request_faults_are_named<B>(mut res: http::Response<B>) -> http::Response<B> {
    let headers = res.headers_mut();
    // An answer carries its status in the trailers; only a trailers-only error (the
    // kind tonic's decoder gives) has it here.
    if !headers.contains_key("grpc-status") {
        return res;
    }
    let Some(status) = tonic::Status::from_header_map(headers) else {
        return res;
    };
    let named = match status.code() {
        tonic::Code::OutOfRange if status.message().contains("message length too large") => {
            tonic::Status::resource_exhausted(status.message())
        }
        tonic::Code::Internal if is_decode_failure(status.message()) => {
            tonic::Status::invalid_argument(format!(
                "the request is not a valid message: {}",
                status.message()
            ))
        }
        _ => return res,
    };
    // Replaces grpc-status and grpc-message (encoded as gRPC wants).
    let _ = named.add_header(headers);
    res
}

/// tonic's and prost's words for a request body that does not decode: bad protobuf
/// (invalid UTF-8 included), bad gRPC framing, a body cut short or missing.
fn is_decode_failure(message: &str) -> bool {
    [
        "failed to decode Protobuf message",
        "protocol error: received message with",
        "Unexpected EOF decoding stream",
        "Missing request message",
        "Error decompressing",
    ]
    .iter()
    .any(|p| message.starts_with(p))
}

// === impl RpcMetrics ===

/// Counts every RPC and times it (request headers to end of response, i.e. to the
/// trailers), by method and gRPC status. Does nothing unless [`crate::metrics`] has an
/// exporter installed. Only routed methods get their own label; UNIMPLEMENTED paths
/// are counted as `other`, so clients cannot grow the label set.
#[derive(Debug, Clone, Copy, Default)]
pub struct RpcMetricsLayer;

impl<S> tower::Layer<S> for RpcMetricsLayer {
    type Service = RpcMetrics<S>;
    fn layer(&self, inner: S) -> RpcMetrics<S> {
        RpcMetrics { inner }
    }
}

#[derive(Debug, Clone)]
pub struct RpcMetrics<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for RpcMetrics<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: http_body::Body,
{
    type Response = http::Response<MeteredBody<ResBody>>;
    type Error = S::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, S::Error>> + Send>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let probe = crate::metrics::enabled().then(|| Probe {
            method: req.uri().path().to_string(),
            start: Instant::now(),
        });
        let fut = self.inner.call(req);
        Box::pin(async move {
            let res = fut.await?;
            let (parts, body) = res.into_parts();
            let mut probe = probe;
            // A trailers-only response (errors, usually) carries the status in the
            // headers and has no trailers to wait for.
            if let Some(code) = parts.headers.get("grpc-status") {
                if let Some(p) = probe.take() {
                    p.finish(Some(code));
                }
            }
            Ok(http::Response::from_parts(
                parts,
                MeteredBody { inner: body, probe },
            ))
        })
    }
}

/// What is known about an RPC in flight.
struct Probe {
    method: String,
    start: Instant,
}

impl Probe {
    fn finish(self, status: Option<&http::HeaderValue>) {
        let code = status
            .map(|v| tonic::Code::from_bytes(v.as_bytes()))
            .unwrap_or(tonic::Code::Unknown);
        let method = if code == tonic::Code::Unimplemented {
            "other".to_string()
        } else {
            self.method
        };
        crate::metrics::rpc(method, super::status::code_name(code), self.start.elapsed());
    }
}

pin_project_lite::pin_project! {
    /// A response body that records its RPC when the trailers (or the end) arrive.
    pub struct MeteredBody<B> {
        #[pin]
        inner: B,
        probe: Option<Probe>,
    }

    impl<B> PinnedDrop for MeteredBody<B> {
        fn drop(this: Pin<&mut Self>) {
            // The client went away before the end (a cancelled stream, for example).
            if let Some(p) = this.project().probe.take() {
                p.finish(Some(&http::HeaderValue::from_static("1")));
            }
        }
    }
}

impl<B: http_body::Body> http_body::Body for MeteredBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let r = this.inner.poll_frame(cx);
        if this.probe.is_some() {
            match &r {
                Poll::Ready(Some(Ok(f))) => {
                    if let Some(t) = f.trailers_ref() {
                        if let Some(p) = this.probe.take() {
                            p.finish(t.get("grpc-status"));
                        }
                    }
                }
                Poll::Ready(None) | Poll::Ready(Some(Err(_))) => {
                    if let Some(p) = this.probe.take() {
                        p.finish(None);
                    }
                }
                Poll::Pending => {}
            }
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
