//! Prometheus metrics, opt-in by `metrics_listen`: names, the exporter, and the
//! recording helpers the RPC layer and the ledger writer call.
//!
//! Recording goes through the `metrics` facade, so it costs an atomic load and does
//! nothing when no exporter is installed (the default). The text format is served over
//! a small HTTP listener of ours: `GET /metrics` answers, every other path is a 404.
//! Only one recorder can exist per process: a second server in the same process
//! (tests) serves without an endpoint of its own and logs a warning.
//!
//! This module knows neither tonic nor sled, so the ledger may call it.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// RPCs finished, by `method` (the gRPC path) and `status` (the gRPC code name).
pub const RPC_REQUESTS: &str = "privledger_rpc_requests_total";
/// RPC latency from request headers to the end of the response (for a stream, the
/// whole stream), by `method` and `status`.
pub const RPC_DURATION: &str = "privledger_rpc_duration_seconds";
/// Recorded spawn decisions, by `outcome` (`allowed` or `denied`).
pub const DECISIONS: &str = "privledger_decisions_total";
/// The durable head seq.
pub const HEAD_SEQ: &str = "privledger_ledger_head_seq";
/// Entries appended per writer batch (group commit).
pub const BATCH_SIZE: &str = "privledger_writer_batch_entries";
/// Time of one batch's transaction plus flush.
pub const FLUSH_DURATION: &str = "privledger_writer_flush_seconds";
/// From a Docker daemon event's time to its durable `docker_container` entry.
pub const DOCKER_LAG: &str = "privledger_docker_event_lag_seconds";
/// Times the Docker watcher lost the daemon or failed to attach, and retried.
pub const DOCKER_RECONNECTS: &str = "privledger_docker_reconnects_total";
/// 1 while the Docker watcher follows the daemon's events, else 0.
pub const DOCKER_ATTACHED: &str = "privledger_docker_attached";
/// 1 while storage takes writes, 0 while the writer is stalled on a storage failure.
pub const STORAGE_WRITABLE: &str = "privledger_storage_writable";
/// Connections and requests turned away by a limit, by `why` (`connections`,
/// `file_descriptors`, `requests`, `streams`).
pub const SHED: &str = "privledger_shed_total";
/// Entries this node applied from the cluster's log (followers).
pub const REPLICATED: &str = "privledger_cluster_replicated_entries_total";
/// 1 while this node holds the writer's lease, 0 otherwise (cluster mode).
pub const CLUSTER_WRITER: &str = "privledger_cluster_writer";
/// Seconds since this node last heard from etcd (cluster mode).
pub const CLUSTER_SILENCE: &str = "privledger_cluster_etcd_silence_seconds";
/// 1 while etcd reports an alarm (NOSPACE: its quota is full), by `alarm`.
pub const ETCD_ALARM: &str = "privledger_cluster_etcd_alarm";
/// Alerts recorded, by `kind` (`unauthorized_socket_mount`, `stale_grant`, ...).
pub const ALERTS: &str = "privledger_alerts_total";
/// Limited-socket calls recorded, by `outcome` (`forwarded`, `refused`,
/// `completed`) and, for a refusal, the `rule` that refused it.
pub const PROXY_CALLS: &str = "privledger_proxy_calls_total";
/// Spawn decisions recorded, by the `socket` they give (`none`, `raw`, `limited`).
pub const SPAWN_DECISIONS: &str = "privledger_spawn_decisions_total";
/// Users holding the raw socket now (as of the last change of access).
pub const HOLDERS_RAW: &str = "privledger_users_raw_socket";
/// Users holding a limited socket now.
pub const HOLDERS_LIMITED: &str = "privledger_users_limited_socket";
/// Users who may run privileged containers now.
pub const HOLDERS_PRIVILEGED: &str = "privledger_users_privileged";

const LATENCY_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0,
];
const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("metrics endpoint on {addr}: {message}")]
    Exporter { addr: SocketAddr, message: String },
    #[error("a metrics recorder is already installed in this process")]
    AlreadyInstalled,
}

/// Set once the process-wide recorder is installed.
static INSTALLED: OnceLock<SocketAddr> = OnceLock::new();

/// Installs the process-wide recorder and returns the metrics HTTP server, to be
/// spawned on the runtime (it runs until aborted). Must be called inside a tokio
/// runtime; the listener is bound before this returns, so a busy port is an error
/// here, not later.
pub fn install(
    addr: SocketAddr,
) -> Result<impl std::future::Future<Output = ()> + Send + 'static, Error> {
    if INSTALLED.get().is_some() {
        return Err(Error::AlreadyInstalled);
    }
    let exporter_err = |e: &dyn std::fmt::Display| Error::Exporter {
        addr,
        message: e.to_string(),
    };
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(RPC_DURATION.into()), LATENCY_BUCKETS)
        .and_then(|b| {
            b.set_buckets_for_metric(Matcher::Full(FLUSH_DURATION.into()), LATENCY_BUCKETS)
        })
        .and_then(|b| b.set_buckets_for_metric(Matcher::Full(BATCH_SIZE.into()), BATCH_BUCKETS))
        .and_then(|b| b.set_buckets_for_metric(Matcher::Full(DOCKER_LAG.into()), LATENCY_BUCKETS))
        .map_err(|e| exporter_err(&e))?
        .build_recorder();
    let handle = recorder.handle();
    let listener = std::net::TcpListener::bind(addr)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .and_then(tokio::net::TcpListener::from_std)
        .map_err(|e| exporter_err(&e))?;
    if INSTALLED.set(addr).is_err() || metrics::set_global_recorder(recorder).is_err() {
        return Err(Error::AlreadyInstalled);
    }
    describe();
    Ok(serve(listener, handle))
}

/// `GET /metrics` (or `HEAD`) answers the text format; anything else is a 404, so a
/// scraper pointed at the wrong path is told so rather than fed metrics.
async fn serve(listener: tokio::net::TcpListener, handle: PrometheusHandle) {
    use http_body_util::Full;
    use hyper::{Method, Response, StatusCode};
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let handle = handle.clone();
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let handle = handle.clone();
                    async move {
                        let (status, body) = match (req.method(), req.uri().path()) {
                            (&Method::GET | &Method::HEAD, "/metrics") => {
                                (StatusCode::OK, handle.render())
                            }
                            _ => (
                                StatusCode::NOT_FOUND,
                                "not found: metrics are at /metrics\n".into(),
                            ),
                        };
                        let mut r = Response::new(Full::new(bytes::Bytes::from(body)));
                        *r.status_mut() = status;
                        if status == StatusCode::OK {
                            r.headers_mut().insert(
                                hyper::header::CONTENT_TYPE,
                                hyper::header::HeaderValue::from_static(
                                    "text/plain; version=0.0.4",
                                ),
                            );
                        }
                        Ok::<_, std::convert::Infallible>(r)
                    }
                });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(RPC_REQUESTS, "gRPC requests finished, by method and status");
    describe_histogram!(
        RPC_DURATION,
        Unit::Seconds,
        "gRPC latency, by method and status"
    );
    describe_counter!(DECISIONS, "spawn decisions recorded, by outcome");
    describe_gauge!(HEAD_SEQ, "durable head seq of the ledger");
    describe_counter!(REPLICATED, "entries applied from the cluster's log");
    describe_gauge!(CLUSTER_WRITER, "1 while this node is the cluster's writer");
    describe_gauge!(
        CLUSTER_SILENCE,
        Unit::Seconds,
        "time since this node last heard from etcd"
    );
    describe_gauge!(
        ETCD_ALARM,
        "1 while etcd reports the alarm (NOSPACE: quota full)"
    );
    describe_histogram!(BATCH_SIZE, "entries per writer batch (group commit)");
    describe_histogram!(
        FLUSH_DURATION,
        Unit::Seconds,
        "writer batch transaction + flush time"
    );
    describe_histogram!(
        DOCKER_LAG,
        Unit::Seconds,
        "Docker daemon event time to its durable ledger entry"
    );
    describe_counter!(
        DOCKER_RECONNECTS,
        "Docker watcher disconnections and failed attaches (each followed by a retry)"
    );
    describe_gauge!(DOCKER_ATTACHED, "1 while the Docker watcher follows events");
    describe_counter!(ALERTS, "alerts recorded, by kind");
    describe_counter!(
        PROXY_CALLS,
        "limited-socket calls recorded, by outcome and (refusals) the refusing rule"
    );
    describe_counter!(
        SPAWN_DECISIONS,
        "spawn decisions recorded, by the socket they give"
    );
    describe_gauge!(HOLDERS_RAW, "users holding the raw Docker socket now");
    describe_gauge!(HOLDERS_LIMITED, "users holding a limited Docker socket now");
    describe_gauge!(
        HOLDERS_PRIVILEGED,
        "users who may run privileged containers now"
    );
    describe_gauge!(
        STORAGE_WRITABLE,
        "1 while storage takes writes, 0 while writes are refused after a storage failure"
    );
}

/// A daemon event recorded `lag` after the daemon's own time for it.
pub fn docker_event_recorded(lag: Duration) {
    metrics::histogram!(DOCKER_LAG).record(lag.as_secs_f64());
}

/// The Docker watcher attached (`true`) or lost the daemon / failed to attach.
pub fn docker_attached(attached: bool) {
    metrics::gauge!(DOCKER_ATTACHED).set(if attached { 1.0 } else { 0.0 });
    if !attached {
        metrics::counter!(DOCKER_RECONNECTS).increment(1);
    }
}

/// One finished RPC. `method` must come from a bounded set (the layer passes only
/// routed gRPC paths).
pub fn rpc(method: String, status: &'static str, elapsed: Duration) {
    let labels = [
        metrics::Label::new("method", method),
        metrics::Label::from_static_parts("status", status),
    ];
    metrics::counter!(RPC_REQUESTS, labels.iter()).increment(1);
    metrics::histogram!(RPC_DURATION, labels.iter()).record(elapsed.as_secs_f64());
}

/// One durable writer batch: entries appended, the flush time, the new head and the
/// spawn decisions it recorded.
pub fn writer_batch(entries: usize, flush: Duration, head: u64, allowed: u64, denied: u64) {
    metrics::histogram!(BATCH_SIZE).record(entries as f64);
    metrics::histogram!(FLUSH_DURATION).record(flush.as_secs_f64());
    metrics::gauge!(HEAD_SEQ).set(head as f64);
    if allowed > 0 {
        metrics::counter!(DECISIONS, "outcome" => "allowed").increment(allowed);
    }
    if denied > 0 {
        metrics::counter!(DECISIONS, "outcome" => "denied").increment(denied);
    }
}

/// An alert of `kind` was recorded.
pub fn alert(kind: &'static str) {
    metrics::counter!(ALERTS, "kind" => kind).increment(1);
}

/// A limited-socket call was recorded: its outcome, and the rule of a refusal
/// (from a bounded set: the endpoint table's and the field tables' names).
pub fn proxy_call(outcome: &'static str, rule: String) {
    metrics::counter!(PROXY_CALLS, "outcome" => outcome, "rule" => rule).increment(1);
}

/// How many users hold the raw socket, a limited one, and `--privileged`.
pub fn access_holders(raw: usize, limited: usize, privileged: usize) {
    metrics::gauge!(HOLDERS_RAW).set(raw as f64);
    metrics::gauge!(HOLDERS_LIMITED).set(limited as f64);
    metrics::gauge!(HOLDERS_PRIVILEGED).set(privileged as f64);
}

/// A spawn decision giving `socket` was recorded.
pub fn spawn_decision(socket: &'static str) {
    metrics::counter!(SPAWN_DECISIONS, "socket" => socket).increment(1);
}

/// A follower applied a batch of the cluster's log.
pub fn replicated_batch(entries: usize, head: u64) {
    metrics::counter!(REPLICATED).increment(entries as u64);
    metrics::gauge!(HEAD_SEQ).set(head as f64);
}

/// Whether this node is the cluster's writer.
pub fn cluster_writer(writer: bool) {
    metrics::gauge!(CLUSTER_WRITER).set(if writer { 1.0 } else { 0.0 });
}

/// How long since this node last heard from etcd.
pub fn cluster_silence(silence: Duration) {
    metrics::gauge!(CLUSTER_SILENCE).set(silence.as_secs_f64());
}

/// An etcd alarm raised (1) or gone (0).
pub fn etcd_alarm(alarm: &'static str, raised: bool) {
    metrics::gauge!(ETCD_ALARM, "alarm" => alarm).set(if raised { 1.0 } else { 0.0 });
}

/// Whether storage takes writes (the writer stalls on a storage failure).
pub fn storage_writable(writable: bool) {
    metrics::gauge!(STORAGE_WRITABLE).set(if writable { 1.0 } else { 0.0 });
}

/// The accept loop paused because the process ran out of file descriptors.
pub fn accept_backoff() {
    metrics::counter!(SHED, "why" => "file_descriptors").increment(1);
}

/// A new connection was closed at once: the connection limit was reached.
pub fn connection_refused() {
    metrics::counter!(SHED, "why" => "connections").increment(1);
}

/// A request was answered at once with UNAVAILABLE or RESOURCE_EXHAUSTED by a limit
/// (`requests`: the global concurrency limit, `streams`: open streams).
pub fn shed(why: &'static str) {
    metrics::counter!(SHED, "why" => why).increment(1);
}

/// Whether this process exports metrics (the RPC layer skips its timing otherwise).
pub fn enabled() -> bool {
    INSTALLED.get().is_some()
}
