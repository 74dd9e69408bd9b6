//! `proxy`: the limited socket against the daemon's own socket, same client, same
//! calls: container list, container inspect, and create + start + remove.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

/// One HTTP call on a fresh connection (as each docker CLI run makes): status, body.
async fn call(sock: &Path, method: &str, path: &str, body: Option<&str>) -> Result<(u16, Bytes)> {
    let stream = UnixStream::connect(sock)
        .await
        .with_context(|| format!("connect {}", sock.display()))?;
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let b = body.unwrap_or("").to_string();
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "docker")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(b)))?;
    let resp = tx.send_request(req).await?;
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await?.to_bytes();
    Ok((status, bytes))
}

async fn ok(sock: &Path, method: &str, path: &str, body: Option<&str>) -> Result<Bytes> {
    let (s, b) = call(sock, method, path, body).await?;
    if !(200..300).contains(&s) {
        bail!(
            "{method} {path} on {}: {s} {}",
            sock.display(),
            String::from_utf8_lossy(&b)
        );
    }
    Ok(b)
}

async fn create_start_remove(sock: &Path, image: &str) -> Result<()> {
    let body = serde_json::json!({"Image": image, "Cmd": ["true"]}).to_string();
    let b = ok(sock, "POST", "/v1.41/containers/create", Some(&body)).await?;
    let id = serde_json::from_slice::<serde_json::Value>(&b)?["Id"]
        .as_str()
        .context("create answered no Id")?
        .to_string();
    ok(sock, "POST", &format!("/v1.41/containers/{id}/start"), None).await?;
    ok(
        sock,
        "DELETE",
        &format!("/v1.41/containers/{id}?force=1"),
        None,
    )
    .await?;
    Ok(())
}

struct Figures {
    p50: Duration,
    p99: Duration,
}

async fn sample<F, Fut>(n: usize, mut f: F) -> Result<Figures>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for _ in 0..n.max(1) / 10 {
        f().await?; // warm-up, discarded
    }
    for _ in 0..n.max(1) {
        let t = Instant::now();
        f().await?;
        h.record(t.elapsed().as_micros().max(1) as u64)?;
    }
    Ok(Figures {
        p50: Duration::from_micros(h.value_at_quantile(0.5)),
        p99: Duration::from_micros(h.value_at_quantile(0.99)),
    })
}

pub async fn proxy_lag(
    direct: &Path,
    via: &Path,
    image: &str,
    samples: usize,
    json: bool,
) -> Result<()> {
    // A container of the limited user's, for inspect through both sockets.
    let body = serde_json::json!({"Image": image, "Cmd": ["sleep", "600"]}).to_string();
    let b = ok(via, "POST", "/v1.41/containers/create", Some(&body)).await?;
    let id = serde_json::from_slice::<serde_json::Value>(&b)?["Id"]
        .as_str()
        .context("create answered no Id")?
        .to_string();
    let inspect = format!("/v1.41/containers/{id}/json");
    let mut rows = Vec::new();
    for (what, n) in [
        ("list", samples),
        ("inspect", samples),
        ("create+start+remove", samples / 5),
    ] {
        let mut pair = Vec::new();
        for sock in [direct, via] {
            let sock: PathBuf = sock.to_path_buf();
            let f = match what {
                "list" => {
                    sample(n, || {
                        let s = sock.clone();
                        async move {
                            ok(&s, "GET", "/v1.41/containers/json?all=1", None)
                                .await
                                .map(|_| ())
                        }
                    })
                    .await?
                }
                "inspect" => {
                    sample(n, || {
                        let (s, p) = (sock.clone(), inspect.clone());
                        async move { ok(&s, "GET", &p, None).await.map(|_| ()) }
                    })
                    .await?
                }
                _ => {
                    sample(n, || {
                        let s = sock.clone();
                        let image = image.to_string();
                        async move { create_start_remove(&s, &image).await }
                    })
                    .await?
                }
            };
            pair.push(f);
        }
        rows.push((what, n, pair.remove(0), pair.remove(0)));
    }
    let _ = ok(
        via,
        "DELETE",
        &format!("/v1.41/containers/{id}?force=1"),
        None,
    )
    .await;
    for (what, n, d, v) in &rows {
        let r50 = v.p50.as_secs_f64() / d.p50.as_secs_f64();
        let r99 = v.p99.as_secs_f64() / d.p99.as_secs_f64();
        if json {
            println!(
                "{}",
                serde_json::json!({"call": what, "samples": n,
                    "direct_p50_us": d.p50.as_micros(), "direct_p99_us": d.p99.as_micros(),
                    "proxy_p50_us": v.p50.as_micros(), "proxy_p99_us": v.p99.as_micros(),
                    "ratio_p50": r50, "ratio_p99": r99})
            );
        } else {
            println!(
                "{what:<20} n={n:<5} direct p50 {:>8.2?} p99 {:>8.2?}   proxy p50 {:>8.2?} p99 {:>8.2?}   ratio p50 {r50:.2} p99 {r99:.2}",
                d.p50, d.p99, v.p50, v.p99
            );
        }
    }
    Ok(())
}
