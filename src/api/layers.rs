//! Tower middleware for the gRPC server: status rewriting and RPC metrics.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use tonic::codegen::http;

/// tonic answers a request over the decoding limit with OUT_OF_RANGE; DESIGN §4
/// promises RESOURCE_EXHAUSTED for oversized requests. This rewrites exactly that
/// status (tonic's message names the limit), leaving every other one alone.
pub fn oversized_is_resource_exhausted<B>(mut res: http::Response<B>) -> http::Response<B> {
    let headers = res.headers_mut();
    let is_oversize = headers.get("grpc-status").is_some_and(|v| v == "11")
        && headers
            .get("grpc-message")
            .and_then(|m| m.to_str().ok())
            .is_some_and(|m| {
                m.contains("message%20length%20too%20large")
                    || m.contains("message length too large")
            });
    if is_oversize {
        headers.insert("grpc-status", http::HeaderValue::from_static("8"));
    }
    res
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
