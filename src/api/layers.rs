//! Tower middleware for the gRPC server.

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
