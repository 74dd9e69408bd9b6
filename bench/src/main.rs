//! `privledger-bench`: a load generator and measuring tool for a running privledger
//! server (see BENCHMARKS.md).
//!
//! - `run`: fixed-concurrency closed-loop load on one or more RPCs (`check`,
//!   `authorize`, `noop`, `health`) with warm-up, an HDR histogram per RPC, and the
//!   ratio of each to `noop` measured in the same run. `noop` is a real unary tonic
//!   RPC: the standard `grpc.health.v1.Health/Check` (a map lookup), served by this
//!   tool in-process on 127.0.0.1:0 on its own 2-thread runtime, like the server's.
//!   `health` is the same RPC answered by the privledger server itself.
//! - `populate`: fills a server with users, groups, memberships, grants and spawn
//!   decisions, up to a number of entries.
//! - `catchup`: the audit stream's catch-up rate from seq 1 (no follow).
//! - `docker-lag`: Docker event to ledger entry lag, when Docker and the watcher are
//!   there.
//! - `proxy`: the limited socket against the daemon's socket (list, inspect,
//!   create+start+remove), p50/p99 and the ratio.
//! - `rss`: a process's resident memory (VmRSS).

mod proxy_lag;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use clap::{Parser, Subcommand, ValueEnum};
use hdrhistogram::Histogram;
use privledger::client::Clients;
use privledger::pb;
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// The service name the no-op health server reports as serving.
const NOOP_SERVICE: &str = "privledger.bench.Noop";

#[derive(Debug, Parser)]
#[command(name = "privledger-bench", about = "Load generator for privledger")]
struct Cli {
    /// Server address.
    #[arg(
        long,
        global = true,
        env = "PRIVLEDGER_SERVER",
        default_value = "http://127.0.0.1:50051"
    )]
    server: String,
    /// Bearer token secret.
    #[arg(long, global = true, env = "PRIVLEDGER_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// File holding the bearer token.
    #[arg(long, global = true, env = "PRIVLEDGER_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    /// The CA that signed an https:// server's certificate (PEM).
    #[arg(long, global = true, env = "PRIVLEDGER_TLS_CA")]
    tls_ca: Option<PathBuf>,
    /// A client certificate (PEM), for a server that requires one.
    #[arg(long, global = true, env = "PRIVLEDGER_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// The key of --tls-cert (PEM).
    #[arg(long, global = true, env = "PRIVLEDGER_TLS_KEY")]
    tls_key: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Rpc {
    /// Authorizer/CheckAccess for a user of the populated set, with provenance.
    Check,
    /// The same with `omit_provenance` (the answer only).
    CheckAnswer,
    /// Authorizer/AuthorizeSpawn (each call appends a durable decision).
    Authorize,
    /// grpc.health.v1.Health/Check served by this tool (the no-op baseline).
    Noop,
    /// grpc.health.v1.Health/Check answered by the privledger server.
    Health,
}

impl Rpc {
    fn name(self) -> &'static str {
        match self {
            Rpc::Check => "check",
            Rpc::CheckAnswer => "check-answer",
            Rpc::Authorize => "authorize",
            Rpc::Noop => "noop",
            Rpc::Health => "health",
        }
    }
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Closed-loop load at fixed concurrency; RPCs run one after another, `rounds`
    /// times, and medians over the rounds are reported.
    Run {
        /// RPCs to measure, in order (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "noop,check")]
        rpc: Vec<Rpc>,
        /// Concurrent callers (each waits for its answer before the next call).
        #[arg(long, default_value_t = 1)]
        concurrency: usize,
        /// HTTP/2 connections the callers share.
        #[arg(long, default_value_t = 1)]
        connections: usize,
        /// Warm-up before each measurement, discarded (e.g. 2s).
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        warmup: Duration,
        /// Measured duration per RPC and round (e.g. 10s).
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Times to repeat the whole list.
        #[arg(long, default_value_t = 1)]
        rounds: usize,
        /// Users are named `u000000`..; calls cycle over this many of them.
        #[arg(long, default_value_t = 1000)]
        users: usize,
        /// Also report this process's RSS (the server's) at the end.
        #[arg(long)]
        server_pid: Option<u32>,
    },
    /// Fills the server: groups, users with memberships, grants, then spawn decisions
    /// until the ledger holds `entries` entries.
    Populate {
        #[arg(long, default_value_t = 100_000)]
        users: usize,
        #[arg(long, default_value_t = 10_000)]
        groups: usize,
        #[arg(long, default_value_t = 8)]
        groups_per_user: usize,
        #[arg(long, default_value_t = 50_000)]
        grants: usize,
        /// Total entries to reach (0: no filling with decisions).
        #[arg(long, default_value_t = 1_000_000)]
        entries: u64,
        #[arg(long, default_value_t = 128)]
        concurrency: usize,
    },
    /// Audit.Stream from seq 1 without follow: entries/s to one consumer.
    Catchup,
    /// Docker event → ledger entry lag (needs Docker and the server's watcher).
    DockerLag {
        #[arg(long, default_value = "busybox")]
        image: String,
        #[arg(long, default_value_t = 20)]
        samples: usize,
    },
    /// The limited socket against the daemon's socket: list, inspect and
    /// create+start+remove, p50/p99 and the ratio (needs a limited user's socket).
    Proxy {
        /// The daemon's own socket.
        #[arg(long, default_value = "/var/run/docker.sock")]
        direct: std::path::PathBuf,
        /// A limited user's socket.
        #[arg(long)]
        via: std::path::PathBuf,
        #[arg(long, default_value = "busybox")]
        image: String,
        #[arg(long, default_value_t = 200)]
        samples: usize,
    },
    /// VmRSS of a process.
    Rss {
        #[arg(long)]
        server_pid: u32,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        match &cli.cmd {
            Cmd::Run { .. } => run(&cli).await,
            Cmd::Populate { .. } => populate(&cli).await,
            Cmd::Catchup => catchup(&cli).await,
            Cmd::DockerLag { image, samples } => docker_lag(&cli, image, *samples).await,
            Cmd::Proxy {
                direct,
                via,
                image,
                samples,
            } => proxy_lag::proxy_lag(direct, via, image, *samples, cli.json).await,
            Cmd::Rss { server_pid } => {
                let kb = rss_kb(*server_pid)?;
                if cli.json {
                    println!("{}", serde_json::json!({"pid": server_pid, "rss_kb": kb}));
                } else {
                    println!("pid {server_pid}: VmRSS {:.1} MB", kb as f64 / 1024.0);
                }
                Ok(())
            }
        }
    })
}

fn token(cli: &Cli) -> Result<Option<String>> {
    if let Some(t) = &cli.token {
        return Ok(Some(t.clone()));
    }
    match &cli.token_file {
        Some(p) => Ok(Some(
            std::fs::read_to_string(p)
                .with_context(|| format!("read {}", p.display()))?
                .trim()
                .to_string(),
        )),
        None => Ok(None),
    }
}

fn connect_options(cli: &Cli) -> privledger::client::ConnectOptions {
    privledger::client::ConnectOptions {
        tls_ca: cli.tls_ca.clone(),
        tls_cert: cli.tls_cert.clone(),
        tls_key: cli.tls_key.clone(),
        timeout: None,
    }
}

async fn clients(cli: &Cli) -> Result<Clients> {
    Ok(Clients::connect_with(&cli.server, token(cli)?.as_deref(), &connect_options(cli)).await?)
}

/// A channel to `url`: the server under test with the TLS options given, or the
/// tool's own no-op server (plaintext).
async fn channel(url: &str, opts: &privledger::client::ConnectOptions) -> Result<Channel> {
    opts.endpoint(url)?
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| format!("connect {url}"))
}

fn user_name(i: usize) -> String {
    format!("u{i:06}")
}

fn group_name(i: usize) -> String {
    format!("g{i:05}")
}

// === the no-op server ===

/// Serves grpc.health.v1 on 127.0.0.1:0 on a dedicated 2-thread runtime (the server's
/// runtime size on this machine), and returns its URL.
fn start_noop_server() -> Result<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("noop-server".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("noop runtime");
            rt.block_on(async move {
                let (reporter, service) = tonic_health::server::health_reporter();
                reporter
                    .set_service_status(NOOP_SERVICE, tonic_health::ServingStatus::Serving)
                    .await;
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind");
                let addr = listener.local_addr().expect("addr");
                let _ = tx.send(format!("http://{addr}"));
                let incoming =
                    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
                let _ = tonic::transport::Server::builder()
                    .add_service(service)
                    .serve_with_incoming(incoming)
                    .await;
            });
        })?;
    rx.recv()
        .map_err(|_| anyhow!("the no-op server did not start"))
}

// === run ===

#[derive(Debug, Clone, serde::Serialize)]
struct Measured {
    rpc: &'static str,
    concurrency: usize,
    requests: u64,
    errors: u64,
    rps: f64,
    p50_us: f64,
    p90_us: f64,
    p99_us: f64,
    p999_us: f64,
}

/// What one caller calls.
#[derive(Clone)]
enum Caller {
    Check(Clients, bool),
    Authorize(Clients),
    Health(HealthClient<Channel>, &'static str),
}

impl Caller {
    async fn call(&mut self, i: usize, users: usize) -> Result<(), tonic::Status> {
        match self {
            Caller::Check(c, omit_provenance) => c
                .authz
                .check_access(pb::CheckAccessRequest {
                    user: user_name(i % users),
                    at: None,
                    omit_provenance: *omit_provenance,
                    min_seq: 0,
                })
                .await
                .map(drop),
            Caller::Authorize(c) => c
                .authz
                .authorize_spawn(pb::AuthorizeSpawnRequest {
                    user: user_name(i % users),
                    server_name: String::new(),
                    image: "jupyter/base-notebook".into(),
                    request_id: String::new(),
                })
                .await
                .map(drop),
            Caller::Health(h, service) => h
                .check(HealthCheckRequest {
                    service: service.to_string(),
                })
                .await
                .map(drop),
        }
    }
}

async fn run(cli: &Cli) -> Result<()> {
    let Cmd::Run {
        rpc,
        concurrency,
        connections,
        warmup,
        duration,
        rounds,
        users,
        server_pid,
    } = &cli.cmd
    else {
        unreachable!()
    };
    let tok = token(cli)?;
    let noop_url = if rpc.contains(&Rpc::Noop) {
        Some(start_noop_server()?)
    } else {
        None
    };
    let mut callers: Vec<(Rpc, Vec<Caller>)> = Vec::new();
    for &r in rpc {
        let mut per_conn = Vec::new();
        for _ in 0..(*connections).max(1) {
            let c = match r {
                Rpc::Check | Rpc::CheckAnswer | Rpc::Authorize => {
                    let ch = channel(&cli.server, &connect_options(cli)).await?;
                    let c = Clients::new(ch, tok.as_deref())?;
                    match r {
                        Rpc::Check => Caller::Check(c, false),
                        Rpc::CheckAnswer => Caller::Check(c, true),
                        _ => Caller::Authorize(c),
                    }
                }
                Rpc::Noop => Caller::Health(
                    HealthClient::new(
                        channel(noop_url.as_deref().expect("started"), &Default::default()).await?,
                    ),
                    NOOP_SERVICE,
                ),
                Rpc::Health => Caller::Health(
                    HealthClient::new(channel(&cli.server, &connect_options(cli)).await?),
                    "privledger.v1.Authorizer",
                ),
            };
            per_conn.push(c);
        }
        callers.push((r, per_conn));
    }
    let mut all: Vec<Vec<Measured>> = vec![Vec::new(); callers.len()];
    for round in 0..*rounds {
        for (k, (r, conns)) in callers.iter().enumerate() {
            let m = measure(*r, conns, *concurrency, *warmup, *duration, *users).await?;
            if !cli.json {
                eprintln!(
                    "round {}/{rounds}: {:<9} {:>10.0} req/s  p50 {:>7.1} µs  p99 {:>7.1} µs",
                    round + 1,
                    m.rpc,
                    m.rps,
                    m.p50_us,
                    m.p99_us
                );
            }
            all[k].push(m);
        }
    }
    let med: Vec<Measured> = all.iter().map(|ms| median_of(ms)).collect();
    let noop = med.iter().find(|m| m.rpc == "noop").cloned();
    let rss = server_pid.map(rss_kb).transpose()?;
    let ratio = |m: &Measured, f: fn(&Measured) -> f64| -> Option<f64> {
        noop.as_ref().map(|n| f(m) / f(n))
    };
    if cli.json {
        let rows: Vec<_> = med
            .iter()
            .map(|m| {
                serde_json::json!({
                    "rpc": m.rpc,
                    "concurrency": m.concurrency,
                    "requests": m.requests,
                    "errors": m.errors,
                    "rps": m.rps,
                    "p50_us": m.p50_us,
                    "p90_us": m.p90_us,
                    "p99_us": m.p99_us,
                    "p999_us": m.p999_us,
                    "vs_noop": noop.as_ref().map(|_| serde_json::json!({
                        "rps": ratio(m, |m| m.rps),
                        "p50": ratio(m, |m| m.p50_us),
                        "p99": ratio(m, |m| m.p99_us),
                    })),
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "server": cli.server,
                "rounds": rounds,
                "warmup_s": warmup.as_secs_f64(),
                "duration_s": duration.as_secs_f64(),
                "results": rows,
                "server_rss_kb": rss,
            }))?
        );
    } else {
        println!(
            "{:<9} {:>4} {:>10} {:>7} {:>10} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8} {:>8}",
            "rpc",
            "conc",
            "requests",
            "errors",
            "req/s",
            "p50 µs",
            "p90 µs",
            "p99 µs",
            "p99.9 µs",
            "rps/noop",
            "p50/noop",
            "p99/noop"
        );
        let fmt_ratio = |r: Option<f64>| r.map_or("-".to_string(), |r| format!("{r:.2}"));
        for m in &med {
            println!(
                "{:<9} {:>4} {:>10} {:>7} {:>10.0} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>8} {:>8} {:>8}",
                m.rpc,
                m.concurrency,
                m.requests,
                m.errors,
                m.rps,
                m.p50_us,
                m.p90_us,
                m.p99_us,
                m.p999_us,
                fmt_ratio(ratio(m, |m| m.rps)),
                fmt_ratio(ratio(m, |m| m.p50_us)),
                fmt_ratio(ratio(m, |m| m.p99_us)),
            );
        }
        if rounds > &1 {
            println!("(medians of {rounds} rounds)");
        }
        if let Some(kb) = rss {
            println!("server VmRSS: {:.1} MB", kb as f64 / 1024.0);
        }
    }
    Ok(())
}

/// The per-field median over rounds.
fn median_of(ms: &[Measured]) -> Measured {
    let med = |f: fn(&Measured) -> f64| {
        let mut v: Vec<f64> = ms.iter().map(f).collect();
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    Measured {
        rpc: ms[0].rpc,
        concurrency: ms[0].concurrency,
        requests: ms.iter().map(|m| m.requests).sum(),
        errors: ms.iter().map(|m| m.errors).sum(),
        rps: med(|m| m.rps),
        p50_us: med(|m| m.p50_us),
        p90_us: med(|m| m.p90_us),
        p99_us: med(|m| m.p99_us),
        p999_us: med(|m| m.p999_us),
    }
}

async fn measure(
    rpc: Rpc,
    conns: &[Caller],
    concurrency: usize,
    warmup: Duration,
    duration: Duration,
    users: usize,
) -> Result<Measured> {
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + duration;
    let counter = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for w in 0..concurrency.max(1) {
        let mut caller = conns[w % conns.len()].clone();
        let counter = counter.clone();
        let users = users.max(1);
        tasks.push(tokio::spawn(async move {
            let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("bounds");
            let mut errors = 0u64;
            let mut first_error = None;
            loop {
                let i = counter.fetch_add(1, Ordering::Relaxed) as usize;
                let t0 = Instant::now();
                if t0 >= end {
                    break;
                }
                let r = caller.call(i, users).await;
                let t1 = Instant::now();
                if t0 >= measure_from {
                    match r {
                        Ok(()) => {
                            h.saturating_record((t1 - t0).as_nanos() as u64);
                        }
                        Err(e) => {
                            errors += 1;
                            first_error.get_or_insert(e);
                        }
                    }
                }
            }
            (h, errors, first_error)
        }));
    }
    let mut total = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
    let mut errors = 0;
    for t in tasks {
        let (h, e, first) = t.await?;
        total.add(&h)?;
        errors += e;
        if let Some(s) = first {
            if errors == e {
                eprintln!("{}: first error: {s}", rpc.name());
            }
        }
    }
    if total.is_empty() {
        bail!("{}: no successful request", rpc.name());
    }
    let us = |q: f64| total.value_at_quantile(q) as f64 / 1000.0;
    Ok(Measured {
        rpc: rpc.name(),
        concurrency,
        requests: total.len(),
        errors,
        rps: total.len() as f64 / duration.as_secs_f64(),
        p50_us: us(0.5),
        p90_us: us(0.9),
        p99_us: us(0.99),
        p999_us: us(0.999),
    })
}

// === populate ===

async fn populate(cli: &Cli) -> Result<()> {
    let Cmd::Populate {
        users,
        groups,
        groups_per_user,
        grants,
        entries,
        concurrency,
    } = &cli.cmd
    else {
        unreachable!()
    };
    let (users, groups, gpu) = (*users, (*groups).max(1), *groups_per_user);
    let c = clients(cli).await?;
    let t0 = Instant::now();
    step(
        "groups",
        groups,
        *concurrency,
        &c,
        move |mut c, i| async move {
            c.admin
                .create_group(pb::CreateGroupRequest {
                    name: group_name(i),
                    request_id: format!("pop-g-{i}"),
                })
                .await
                .map(drop)
        },
    )
    .await?;
    step("memberships", users * gpu, *concurrency, &c, move |c, k| {
        let (u, j) = (k / gpu.max(1), k % gpu.max(1));
        // Spread each user's groups over the whole range.
        let g = (u * 7919 + j * (groups / gpu.max(1)).max(1)) % groups;
        let mut c = c;
        async move {
            c.admin
                .add_member(pb::MemberRequest {
                    group: group_name(g),
                    user: user_name(u),
                    request_id: format!("pop-m-{k}"),
                    users: vec![],
                    reason: String::new(),
                })
                .await
                .map(drop)
        }
    })
    .await?;
    step(
        "grants",
        *grants,
        *concurrency,
        &c,
        move |mut c, i| async move {
            // Four in five grants go to groups, one in five to users; the sockets vary.
            let subject = if i % 5 == 4 {
                pb::subject::Kind::User(user_name(i % users.max(1)))
            } else {
                pb::subject::Kind::Group(group_name(i % groups))
            };
            let (socket, privileged) = match i % 3 {
                0 => (pb::SocketAccess::Limited, false),
                1 => (pb::SocketAccess::Raw, false),
                _ => (pb::SocketAccess::None, true),
            };
            c.admin
                .issue_grant(pb::IssueGrantRequest {
                    subject: Some(pb::Subject {
                        kind: Some(subject),
                    }),
                    spec: Some(pb::GrantSpec {
                        socket: socket.into(),
                        socket_mode: pb::SocketMode::Rw.into(),
                        privileged,
                        limits: None,
                    }),
                    expires_at: None,
                    reason: "benchmark population".into(),
                    request_id: format!("pop-x-{i}"),
                })
                .await
                .map(drop)
        },
    )
    .await?;
    let head = c
        .audit
        .clone()
        .head(pb::HeadRequest {})
        .await?
        .into_inner()
        .seq;
    if *entries > head {
        let n = (*entries - head) as usize;
        step(
            "decisions",
            n,
            *concurrency,
            &c,
            move |mut c, i| async move {
                c.authz
                    .authorize_spawn(pb::AuthorizeSpawnRequest {
                        user: user_name(i % users.max(1)),
                        server_name: String::new(),
                        image: "jupyter/base-notebook".into(),
                        request_id: format!("pop-d-{head}-{i}"),
                    })
                    .await
                    .map(drop)
            },
        )
        .await?;
    }
    let head = c
        .audit
        .clone()
        .head(pb::HeadRequest {})
        .await?
        .into_inner()
        .seq;
    let secs = t0.elapsed().as_secs_f64();
    if cli.json {
        println!("{}", serde_json::json!({"head": head, "seconds": secs}));
    } else {
        println!("populated: head seq {head} in {secs:.1} s");
    }
    Ok(())
}

/// Runs `n` calls of `f(clients, i)` with `concurrency` callers; request ids make a
/// re-run idempotent.
async fn step<F, Fut>(what: &str, n: usize, concurrency: usize, c: &Clients, f: F) -> Result<()>
where
    F: Fn(Clients, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), tonic::Status>> + Send,
{
    if n == 0 {
        return Ok(());
    }
    let t0 = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let f = Arc::new(f);
    let mut tasks = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (next, f, c) = (next.clone(), f.clone(), c.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                if i >= n {
                    return Ok::<(), tonic::Status>(());
                }
                f(c.clone(), i).await?;
            }
        }));
    }
    for t in tasks {
        t.await?.map_err(|s| anyhow!("{what}: {s}"))?;
    }
    let s = t0.elapsed().as_secs_f64();
    eprintln!("{what}: {n} in {s:.1} s ({:.0}/s)", n as f64 / s);
    Ok(())
}

// === catchup ===

async fn catchup(cli: &Cli) -> Result<()> {
    let mut c = clients(cli).await?;
    let t0 = Instant::now();
    let mut stream = c
        .audit
        .stream(pb::StreamRequest {
            from_seq: 1,
            follow: false,
            kinds: Vec::new(),
            subject: String::new(),
        })
        .await?
        .into_inner();
    let first = t0.elapsed();
    let (mut n, mut bytes) = (0u64, 0u64);
    while let Some(e) = stream.next().await {
        let e = e?;
        n += 1;
        bytes += e.body.len() as u64;
    }
    let secs = t0.elapsed().as_secs_f64();
    let rate = n as f64 / secs;
    if cli.json {
        println!(
            "{}",
            serde_json::json!({"entries": n, "body_bytes": bytes, "seconds": secs,
                "entries_per_s": rate, "first_response_ms": first.as_secs_f64() * 1e3})
        );
    } else {
        println!(
            "catch-up: {n} entries ({:.1} MB of bodies) in {secs:.2} s = {rate:.0} entries/s",
            bytes as f64 / 1e6
        );
    }
    Ok(())
}

// === docker-lag ===

async fn docker_lag(cli: &Cli, image: &str, samples: usize) -> Result<()> {
    let docker_ok = std::process::Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !docker_ok {
        println!("docker-lag: skipped: no reachable Docker daemon");
        return Ok(());
    }
    let mut c = clients(cli).await?;
    let head = c.audit.head(pb::HeadRequest {}).await?.into_inner().seq;
    let mut stream = c
        .audit
        .stream(pb::StreamRequest {
            from_seq: head + 1,
            follow: true,
            kinds: Vec::new(),
            subject: String::new(),
        })
        .await?
        .into_inner();
    let mut lags = Histogram::<u64>::new_with_bounds(1, 600_000_000_000, 3)?;
    for i in 0..samples {
        let name = format!("privledger-bench-{}-{i}", std::process::id());
        let out = std::process::Command::new("docker")
            .args(["create", "--name", &name, "--label"])
            .arg("privledger.user=bench")
            .arg(image)
            .arg("true")
            .output()?;
        if !out.status.success() {
            println!(
                "docker-lag: skipped: docker create {image} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return Ok(());
        }
        // The entry for this container's create: its server time minus the daemon's
        // event time is the lag from the event to the durable entry (both clocks are
        // this machine's).
        let lag = tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(e) = stream.next().await {
                let Ok(e) = e else { return None };
                if e.kind != "docker_container" {
                    continue;
                }
                let body: serde_json::Value = serde_json::from_slice(&e.body).ok()?;
                let ev = &body["event"];
                if ev["name"] == name.as_str() && ev["action"] == "create" {
                    let daemon = ev["daemon_time_ns"].as_i64()?;
                    return Some(e.time_unix_nanos.saturating_sub(daemon).max(0) as u64);
                }
            }
            None
        })
        .await
        .ok()
        .flatten();
        let _ = std::process::Command::new("docker")
            .args(["rm", "-f", &name])
            .output();
        let Some(lag) = lag else {
            println!(
                "docker-lag: not available: no docker_container entry for {name} within 5 s \
                 (this server has no Docker watcher)"
            );
            return Ok(());
        };
        lags.saturating_record(lag.max(1));
    }
    let ms = |q: f64| lags.value_at_quantile(q) as f64 / 1e6;
    println!(
        "docker-lag ({} samples, daemon event time to durable entry): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        lags.len(),
        ms(0.5),
        ms(0.99),
        lags.max() as f64 / 1e6
    );
    Ok(())
}

// === rss ===

fn rss_kb(pid: u32) -> Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("read /proc/{pid}/status"))?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow!("no VmRSS in /proc/{pid}/status"))
}
