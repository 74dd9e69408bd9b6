//! Runs the service: opens the store, loads the ledger, restores built-in groups,
//! makes sure an admin token exists, serves gRPC (TCP and/or a Unix socket) until
//! shutdown, then drains with a deadline and stops the writer.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::service::interceptor::InterceptedService;
use tonic::service::Routes;
use tonic::transport::Server;
use tower::util::MapResponseLayer;
use tracing::{info, warn, Instrument};

use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::HealthReporter;

use crate::api::{auth::Authenticator, layers, Api};
use crate::config::Config;
use crate::docker::ObserveConfig;
use crate::docker::{StaleAction, WatcherConfig, WatcherStatus};
use crate::ledger::event::Role;
use crate::ledger::log::LogStore;
use crate::ledger::WriteStatus;
use crate::ledger::{hash_secret, Command, Ledger, ACTOR_SYSTEM};
use crate::pb;
use crate::store::{OpenOptions, SledStore};

mod cluster;
mod listen;
mod tls;
mod unix_socket;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Health `Watch` streams open at once (they need no token).
const MAX_HEALTH_WATCHES: usize = 64;

/// The header list HTTP/2 accepts before it would end the connection (at least).
const HTTP2_HEADER_LIST_BYTES: u32 = 512 * 1024;

/// Largest health request accepted (a service name).
const MAX_HEALTH_REQUEST_BYTES: usize = 1024;

/// How long in-flight requests (and followed audit streams) get to finish after a
/// shutdown signal before connections are dropped.
const DRAIN_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot open the ledger in {dir}: {source}")]
    Store {
        dir: String,
        source: crate::ledger::log::StoreError,
    },
    #[error(transparent)]
    Ledger(#[from] crate::ledger::Error),
    #[error(transparent)]
    Fs(#[from] crate::private_fs::FsError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error(transparent)]
    Metrics(#[from] crate::metrics::Error),
    #[error(transparent)]
    UnixSocket(#[from] unix_socket::UnixSocketError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("cluster mode: {0}")]
    Cluster(String),
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}

/// Serves until `shutdown` resolves. `listener` is the bound TCP listener for
/// `cfg.listen` (bound by the caller, so tests can use port 0 without races).
pub async fn run(
    cfg: Config,
    listener: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let metrics = match cfg.metrics_listen {
        Some(addr) => match crate::metrics::install(addr) {
            Ok(exporter) => {
                info!(%addr, "serving Prometheus metrics over HTTP");
                Some(tokio::spawn(exporter))
            }
            Err(crate::metrics::Error::AlreadyInstalled) => {
                warn!(%addr, "metrics already exported by this process; not serving them again");
                None
            }
            Err(e) => return Err(e.into()),
        },
        None => None,
    };
    let opts = OpenOptions {
        cache_bytes: cfg.storage_cache_bytes,
        read_only: cfg.read_only,
        allow_unsafe_dir: cfg.allow_unsafe_data_dir,
    };
    let dir = cfg.data_dir.clone();
    let store = tokio::task::spawn_blocking(move || SledStore::open_with(&dir, &opts))
        .await
        .map_err(|e| Error::Io {
            context: "opening the store".into(),
            source: std::io::Error::other(e.to_string()),
        })?
        .map_err(|source| Error::Store {
            dir: cfg.data_dir.display().to_string(),
            source,
        })?;
    let local: std::sync::Arc<dyn LogStore> = std::sync::Arc::new(store);
    let node = match &cfg.cluster {
        Some(s) => {
            let advertise = match (&s.advertise_url, &listener) {
                (Some(u), _) => u.clone(),
                (None, Some(l)) => {
                    let addr = l.local_addr().map_err(io("listener address"))?;
                    let scheme = if cfg.net.tls.is_some() {
                        "https"
                    } else {
                        "http"
                    };
                    format!("{scheme}://{addr}")
                }
                (None, None) => {
                    return Err(Error::Cluster(
                        "the other nodes need a URL to reach this one: set --advertise-url".into(),
                    ))
                }
            };
            let c = cluster::connect(s, advertise.clone())
                .map_err(|e| Error::Cluster(e.to_string()))?;
            info!(
                node = %s.node_id,
                cluster = %s.cluster_name,
                etcd = %s.etcd_endpoints.join(","),
                advertise = %advertise,
                "cluster mode: following the log in etcd, campaigning for the writer's lease"
            );
            Some(c)
        }
        None => None,
    };
    let store: std::sync::Arc<dyn LogStore> = match &node {
        Some(c) => std::sync::Arc::new(c.store(local)),
        None => local,
    };
    let ledger = {
        let lcfg = cfg.ledger.clone();
        tokio::task::spawn_blocking(move || Ledger::open(store, lcfg))
            .await
            .map_err(|e| Error::Io {
                context: "loading the ledger".into(),
                source: std::io::Error::other(e.to_string()),
            })??
    };
    if cfg.read_only {
        warn!(
            dir = %cfg.data_dir.display(),
            "serving read-only for forensics: every write is refused and nothing in the \
             data directory is changed"
        );
    } else if node.is_none() {
        ledger.start_up(&cfg.builtin_groups, VERSION).await?;
        ensure_admin_token(&ledger, &cfg.admin_token_path()).await?;
    }

    // Fans the one shutdown signal out to every server and task.
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });

    // Agents' hosts: revocations under their running containers are the ledger's to
    // see.
    let remote_stale = (!cfg.read_only).then(|| {
        let ledger = ledger.clone();
        let stop = stop_rx.clone();
        tokio::spawn(
            crate::docker::remote::check_hosts(ledger, stopped(stop))
                .instrument(tracing::info_span!("agents")),
        )
    });
    let expiry = (!cfg.read_only).then(|| {
        let ledger = ledger.clone();
        let stop = stop_rx.clone();
        tokio::spawn(
            async move { ledger.run_expiry(stopped(stop)).await }
                .instrument(tracing::info_span!("expiry")),
        )
    });

    // A cluster node's start-up writes (built-in groups, the first admin token) are
    // made by whichever node is elected writer, once it has caught up.
    let node_task = node.clone().map(|c| {
        let writer = ledger.clone();
        let builtins = cfg.builtin_groups.clone();
        let token = cfg.admin_token_path();
        let elected = move || {
            let (ledger, builtins, token) = (writer.clone(), builtins.clone(), token.clone());
            async move {
                if let Err(e) = ledger.start_up(&builtins, VERSION).await {
                    warn!(error = %e, "start-up writes of the new writer");
                }
                if let Err(e) = ensure_admin_token(&ledger, &token).await {
                    warn!(error = %e, "the first admin token");
                }
            }
        };
        tokio::spawn(
            c.run(ledger.clone(), elected, stopped(stop_rx.clone()))
                .instrument(tracing::info_span!("cluster")),
        )
    });

    let observe = observe_config(&cfg);
    let (health_reporter, health) = tonic_health::server::health_reporter();
    let (watcher, proxy) = if node.is_some() {
        // The Docker watcher and the limited sockets write from the host they serve;
        // on a cluster node whose writes may be forwarded, they are not started.
        info!("cluster mode: the Docker watcher and the limited sockets are not started on ledger nodes");
        (None, None)
    } else {
        let watcher = spawn_watcher(
            &ledger,
            &cfg,
            observe.clone(),
            health_reporter.clone(),
            &stop_rx,
        )
        .await;
        (watcher, start_proxy(&ledger, &cfg, &stop_rx).await)
    };
    let view: Option<std::sync::Arc<dyn crate::api::cluster::ClusterView>> =
        node.as_ref().map(|c| {
            let peer_ca = cfg.cluster.as_ref().and_then(|s| s.peer_ca.clone());
            std::sync::Arc::new(cluster::NodeView::new(c.clone(), peer_ca)) as _
        });
    let mut auth = Authenticator::new(ledger.clone());
    if cfg.read_only {
        auth = auth.with_forensic_admin(&cfg.admin_token_path());
    }
    let mut api =
        Api::new(ledger.clone(), observe).with_limits(crate::api::ApiLimits::from(&cfg.net.limits));
    if let Some((p, _)) = &proxy {
        api = api.with_limited_sockets(p.clone());
    }
    if let Some(v) = &view {
        api = api.with_cluster(v.clone());
    }
    let forward = crate::api::cluster::ForwardLayer::new(view);
    mirror_write_status(
        &ledger,
        health_reporter.clone(),
        node.as_ref().map(|c| c.watch_stale()),
    )
    .await;
    let routes = routes(api, auth, cfg.max_request_bytes, health_reporter, health).await;
    let limits = cfg.net.limits;
    let tls = match &cfg.net.tls {
        Some(files) => {
            let t = tls::Tls::load(files)?;
            let watched = t.clone();
            tokio::spawn(watched.watch(stopped(stop_rx.clone())));
            Some(t)
        }
        None => {
            // SIGHUP is the reload signal (`systemctl reload`); with nothing to reload
            // it must not end the server, as its default action would.
            // Registered here, before anything listens, so that no SIGHUP in between
            // takes the default action.
            let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
            tokio::spawn(ignore_hangups(hup.ok(), stopped(stop_rx.clone())));
            None
        }
    };
    let admission =
        crate::api::admission::AdmissionLayer::new(crate::api::admission::AdmissionLimits {
            max_header_bytes: limits.max_header_bytes as usize,
            max_concurrent_requests: limits.max_concurrent_requests,
            max_health_watches: MAX_HEALTH_WATCHES,
        });
    // One stack for every listener, so that the limits are the same on each.
    let serve =
        |incoming: tokio_stream::wrappers::ReceiverStream<std::io::Result<listen::Conn>>| {
            Server::builder()
                // Excess requests on one connection are refused at once, not queued.
                .concurrency_limit_per_connection(limits.per_connection_requests)
                .load_shed(true)
                .timeout(limits.request_timeout)
                .max_concurrent_streams(limits.max_concurrent_streams)
                .http2_keepalive_interval(Some(limits.keepalive_interval))
                .http2_keepalive_timeout(Some(limits.keepalive_timeout))
                // HTTP/2 itself takes header blocks well beyond the limit, so that an
                // oversized one fails its request (admission) instead of the connection.
                .http2_max_header_list_size(
                    HTTP2_HEADER_LIST_BYTES.max(limits.max_header_bytes.saturating_mul(4)),
                )
                .layer(layers::RpcMetricsLayer)
                .layer(MapResponseLayer::new(layers::request_faults_are_named))
                .layer(admission.clone())
                .layer(forward.clone())
                .add_routes(routes.clone())
                .serve_with_incoming_shutdown(incoming, stopped(stop_rx.clone()))
        };
    let mut servers = Vec::new();
    if let Some(l) = listener {
        let addr = l.local_addr().map_err(io("listener address"))?;
        info!(%addr, tls = tls.is_some(), mutual_tls = tls.as_ref().is_some_and(|t| t.mutual()), "serving gRPC on TCP");
        let incoming = listen::incoming(listen::Listener::Tcp(l), limits, tls.clone());
        servers.push(tokio::spawn(serve(incoming)));
    }
    let mut unix = None;
    if let Some(path) = &cfg.unix_socket {
        let (listener, file) = unix_socket::bind(
            path,
            cfg.net.unix_socket_mode,
            cfg.net.unix_socket_group.as_deref(),
        )?;
        info!(path = %path.display(), mode = %format!("{:04o}", cfg.net.unix_socket_mode), "serving gRPC on a Unix socket");
        let incoming = listen::incoming(listen::Listener::Unix(listener), limits, None);
        unix = Some(file);
        servers.push(tokio::spawn(serve(incoming)));
    }

    stopped(stop_rx.clone()).await;
    info!("shutting down");
    let drain = async {
        for s in servers {
            match s.await {
                Ok(Err(e)) => warn!(error = %e, "server ended with an error"),
                Err(e) => warn!(error = %e, "server task failed"),
                Ok(Ok(())) => {}
            }
        }
    };
    if tokio::time::timeout(DRAIN_GRACE, drain).await.is_err() {
        warn!(grace = ?DRAIN_GRACE, "drain deadline passed; dropping open connections");
    }
    if let Some(e) = expiry {
        let _ = e.await;
    }
    if let Some(r) = remote_stale {
        let _ = r.await;
    }
    if let Some(w) = watcher {
        let _ = w.await;
    }
    if let Some((_, task)) = proxy {
        let _ = task.await;
    }
    if let Some(t) = node_task {
        let _ = t.await;
    }
    ledger.shutdown().await;
    if let Some(m) = metrics {
        m.abort();
    }
    if let Some(b) = &unix {
        b.remove();
    }
    info!("stopped");
    Ok(())
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// Every gRPC service: the three privledger services behind bearer-token
/// authentication, plus health checking and reflection (which carry no ledger data
/// and stay open so probes and grpcurl's schema discovery work without a token).
async fn routes(
    api: Api,
    auth: Authenticator,
    max_request_bytes: usize,
    health_reporter: HealthReporter,
    health: HealthServer<impl tonic_health::pb::health_server::Health>,
) -> Routes {
    health_reporter
        .set_serving::<pb::audit_server::AuditServer<Api>>()
        .await;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect("descriptor sets are valid");
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .expect("descriptor sets are valid");
    Routes::new(InterceptedService::new(
        pb::admin_server::AdminServer::new(api.clone())
            .max_decoding_message_size(max_request_bytes),
        auth.clone(),
    ))
    .add_service(InterceptedService::new(
        pb::authorizer_server::AuthorizerServer::new(api.clone())
            .max_decoding_message_size(max_request_bytes),
        auth.clone(),
    ))
    .add_service(InterceptedService::new(
        pb::audit_server::AuditServer::new(api).max_decoding_message_size(max_request_bytes),
        auth,
    ))
    .add_service(health.max_decoding_message_size(MAX_HEALTH_REQUEST_BYTES))
    .add_service(reflection_v1)
    .add_service(reflection_v1alpha)
}

/// Admin and Authorizer carry the write paths (AuthorizeSpawn records its decision),
/// and the overall service ("") stands for all of them: each reports SERVING only while
/// the ledger takes writes. On a cluster node that answers no access question (out of
/// touch with etcd, or stuck behind it, past its bound: `stale`), Authorizer and the
/// overall service report NOT_SERVING too, so that a load balancer or a probe passes
/// it over. Audit, which only reads, stays SERVING.
async fn mirror_write_status(
    ledger: &Ledger,
    health: HealthReporter,
    stale: Option<watch::Receiver<bool>>,
) {
    async fn set(health: &HealthReporter, status: &WriteStatus, stale: bool) {
        let serving = |ok: bool| {
            if ok {
                tonic_health::ServingStatus::Serving
            } else {
                tonic_health::ServingStatus::NotServing
            }
        };
        let writable = *status == WriteStatus::Writable;
        let admin = <pb::admin_server::AdminServer<Api> as tonic::server::NamedService>::NAME;
        let authorizer =
            <pb::authorizer_server::AuthorizerServer<Api> as tonic::server::NamedService>::NAME;
        health
            .set_service_status("", serving(writable && !stale))
            .await;
        health.set_service_status(admin, serving(writable)).await;
        health
            .set_service_status(authorizer, serving(writable && !stale))
            .await;
    }
    let mut rx = ledger.watch_write_status();
    let mut stale = stale;
    let is_stale = |s: &Option<watch::Receiver<bool>>| s.as_ref().is_some_and(|r| *r.borrow());
    let first = rx.borrow_and_update().clone();
    set(&health, &first, is_stale(&stale)).await;
    tokio::spawn(async move {
        loop {
            let stale_changed = async {
                match stale.as_mut() {
                    Some(s) => s.changed().await.is_ok(),
                    None => std::future::pending().await,
                }
            };
            let node_alive = tokio::select! {
                r = rx.changed() => if r.is_err() { return } else { true },
                alive = stale_changed => alive,
            };
            if !node_alive {
                stale = None;
            }
            let status = rx.borrow_and_update().clone();
            set(&health, &status, is_stale(&stale)).await;
        }
    });
}

/// Health service name under which the Docker watcher reports.
pub const WATCHER_SERVICE: &str = "privledger.v1.DockerWatcher";

fn observe_config(cfg: &Config) -> ObserveConfig {
    let mut o = ObserveConfig::new(&cfg.ledger.spawn.host_socket);
    o.allow_names = cfg.docker.allow_names.clone();
    o.allow_labels = cfg.docker.allow_labels.clone();
    o
}

/// Starts the Docker watcher (unless disabled) and mirrors its status into health
/// checking under [`WATCHER_SERVICE`]. Docker being down never stops authorization:
/// the watcher retries in the background.
async fn spawn_watcher(
    ledger: &Ledger,
    cfg: &Config,
    observe: ObserveConfig,
    health: HealthReporter,
    stop: &watch::Receiver<bool>,
) -> Option<tokio::task::JoinHandle<()>> {
    if !cfg.docker.enabled || cfg.read_only {
        info!("docker watcher disabled");
        return None;
    }
    health
        .set_service_status(WATCHER_SERVICE, tonic_health::ServingStatus::NotServing)
        .await;
    let (status_tx, mut status_rx) = watch::channel(WatcherStatus::Connecting(None));
    tokio::spawn(async move {
        while status_rx.changed().await.is_ok() {
            let serving = matches!(
                *status_rx.borrow_and_update(),
                WatcherStatus::Watching { .. }
            );
            health
                .set_service_status(
                    WATCHER_SERVICE,
                    if serving {
                        tonic_health::ServingStatus::Serving
                    } else {
                        tonic_health::ServingStatus::NotServing
                    },
                )
                .await;
        }
    });
    let wcfg = WatcherConfig {
        endpoint: cfg.docker.endpoint.clone(),
        on_stale_grant: if cfg.docker.stop_on_stale_grant {
            StaleAction::Stop
        } else {
            StaleAction::Alert
        },
        observe,
    };
    let ledger = ledger.clone();
    let stop = stop.clone();
    Some(tokio::spawn(
        async move { crate::docker::run(ledger, wcfg, status_tx, stopped(stop)).await }
            .instrument(tracing::info_span!("docker_watcher")),
    ))
}

/// Starts the limited-socket proxy when it is on and the watcher runs (it forwards to
/// the watcher's endpoint, which must be a Unix socket).
async fn start_proxy(
    ledger: &Ledger,
    cfg: &Config,
    stop: &watch::Receiver<bool>,
) -> Option<(
    std::sync::Arc<crate::proxy::Proxy>,
    tokio::task::JoinHandle<()>,
)> {
    if !cfg.docker.proxy || !cfg.docker.enabled || cfg.read_only {
        info!("limited-socket proxy off");
        return None;
    }
    let e = &cfg.docker.endpoint;
    let Some(socket) = e
        .strip_prefix("unix://")
        .or(e.starts_with('/').then_some(e.as_str()))
    else {
        warn!(endpoint = %e, "the limited-socket proxy needs a unix:// Docker endpoint; proxy off");
        return None;
    };
    let proxy = crate::proxy::Proxy::new(
        ledger.clone(),
        crate::proxy::ProxyConfig {
            dir: cfg.ledger.spawn.limited_host_dir.clone().into(),
            daemon_socket: socket.into(),
            settings: cfg.docker.proxy_settings.clone(),
        },
    );
    proxy.restore().await;
    let p = proxy.clone();
    let stop = stop.clone();
    let task = tokio::spawn(
        async move { p.run(stopped(stop)).await }.instrument(tracing::info_span!("proxy")),
    );
    Some((proxy, task))
}

/// A fresh server has no open door: when the ledger holds no token at all, create an
/// admin token and write its secret to `path`, readable only by its owner.
async fn ensure_admin_token(ledger: &Ledger, path: &Path) -> Result<(), Error> {
    if ledger.snapshot().tokens().next().is_some() {
        return Ok(());
    }
    let secret = crate::ledger::new_secret()?;
    write_private(path, &format!("{secret}\n"))?;
    ledger
        .submit(
            ACTOR_SYSTEM,
            None,
            Command::CreateToken {
                name: "admin".into(),
                role: Role::Admin,
                secret_sha256: hash_secret(&secret),
                expires_at_ns: None,
            },
        )
        .await?;
    info!(path = %path.display(), "created the first admin token; its secret is in this file (mode 0600)");
    Ok(())
}

/// Writes `text` to `path`, mode 0600, through a new file renamed into place: a
/// symlink planted at `path` is replaced, never followed, and no existing file is
/// truncated.
pub fn write_private(path: &Path, text: &str) -> Result<(), Error> {
    Ok(crate::private_fs::write_private_atomic(
        path,
        text.as_bytes(),
    )?)
}

/// Takes SIGHUP (logging it) until `stop`, so that a reload request without TLS
/// files to re-read leaves the server running.
async fn ignore_hangups(
    hup: Option<tokio::signal::unix::Signal>,
    stop: impl std::future::Future<Output = ()>,
) {
    let Some(mut hup) = hup else { return };
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            r = hup.recv() => match r {
                Some(()) => info!("SIGHUP: nothing to reload (no TLS files); still serving"),
                None => return,
            },
        }
    }
}
