//! What is let in, decided before any handler runs and answered at once, never by
//! queueing: a request whose headers are too large (RESOURCE_EXHAUSTED, that stream
//! only), one beyond the requests in progress in all (UNAVAILABLE), and a health
//! `Watch` beyond the few that may be open (RESOURCE_EXHAUSTED).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::body::Body;
use tonic::codegen::http;
use tonic::Status;

/// The health service's streaming method: unauthenticated, so its streams are
/// capped on their own.
const HEALTH_WATCH: &str = "/grpc.health.v1.Health/Watch";

/// Limits [`Admission`] applies.
#[derive(Debug, Clone, Copy)]
pub struct AdmissionLimits {
    pub max_header_bytes: usize,
    pub max_concurrent_requests: usize,
    pub max_health_watches: usize,
}

#[derive(Clone)]
pub struct AdmissionLayer {
    limits: AdmissionLimits,
    requests: Arc<Semaphore>,
    watches: Arc<Semaphore>,
}

impl AdmissionLayer {
    /// One layer per server: its counts are shared by every listener.
    pub fn new(limits: AdmissionLimits) -> AdmissionLayer {
        AdmissionLayer {
            limits,
            requests: Arc::new(Semaphore::new(limits.max_concurrent_requests)),
            watches: Arc::new(Semaphore::new(limits.max_health_watches)),
        }
    }
}

impl<S> tower::Layer<S> for AdmissionLayer {
    type Service = Admission<S>;
    fn layer(&self, inner: S) -> Admission<S> {
        Admission {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Admission<S> {
    inner: S,
    layer: AdmissionLayer,
}

type BoxFuture<T, E> = Pin<Box<dyn std::future::Future<Output = Result<T, E>> + Send>>;

impl<S, ReqBody> tower::Service<http::Request<ReqBody>> for Admission<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<http::Response<Body>, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let l = &self.layer;
        let refuse =
            |s: Status| -> Self::Future { Box::pin(std::future::ready(Ok(s.into_http()))) };
        let size = header_bytes(req.headers());
        if size > l.limits.max_header_bytes {
            return refuse(Status::resource_exhausted(format!(
                "the request's headers are {size} bytes; at most {} are accepted",
                l.limits.max_header_bytes
            )));
        }
        let Ok(permit) = l.requests.clone().try_acquire_owned() else {
            crate::metrics::shed("requests");
            return refuse(Status::unavailable(format!(
                "the server is handling its limit of {} requests; retry shortly",
                l.limits.max_concurrent_requests
            )));
        };
        let watch = if req.uri().path() == HEALTH_WATCH {
            match l.watches.clone().try_acquire_owned() {
                Ok(w) => Some(w),
                Err(_) => {
                    crate::metrics::shed("streams");
                    return refuse(Status::resource_exhausted(format!(
                        "{} health watches are open (the limit); use Check, or close one",
                        l.limits.max_health_watches
                    )));
                }
            }
        } else {
            None
        };
        let fut = self.inner.call(req);
        Box::pin(async move {
            let res = fut.await;
            // In progress until the answer begins; a stream's body is bounded apart.
            drop(permit);
            let res = res?;
            Ok(match watch {
                None => res,
                Some(w) => res.map(|b| {
                    Body::new(Holding {
                        inner: b,
                        _permit: w,
                    })
                }),
            })
        })
    }
}

/// HTTP/2's accounting of a header list: name, value and 32 bytes per field.
fn header_bytes(h: &http::HeaderMap) -> usize {
    h.iter()
        .map(|(k, v)| k.as_str().len() + v.as_bytes().len() + 32)
        .sum()
}

pin_project_lite::pin_project! {
    /// A body that holds a permit until it is dropped.
    struct Holding {
        #[pin]
        inner: Body,
        _permit: OwnedSemaphorePermit,
    }
}

impl http_body::Body for Holding {
    type Data = bytes::Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, Status>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
