//! On a network (issue 13, DESIGN §4): TLS and mutual TLS end to end through the API
//! and the real CLI, with certificates generated here and reloaded without dropping
//! the listener; plaintext and TLS mismatches fail cleanly; plaintext off loopback is
//! refused at start; the Unix socket's mode and a live socket's refusal.

mod common;

use std::path::{Path, PathBuf};

use common::pki::Pki;
use common::*;
use privledger::client::ConnectOptions;
use privledger::config::net::TlsConfig;
use privledger::pb;
use tonic::Code;

/// A TLS server (no client certificates) with a certificate from a fresh CA.
struct TlsServer {
    pki: Pki,
    cert: PathBuf,
    key: PathBuf,
    s: TestServer,
    _data: tempfile::TempDir,
}

async fn tls_server(ca: &str) -> TlsServer {
    let pki = Pki::new(ca);
    let (cert, key) = pki.issue("server", "privledger", true);
    let data = tempfile::tempdir().unwrap();
    let s = TestServer::start_tls(tls_cfg(data.path(), &cert, &key, None), pki.trusted()).await;
    TlsServer {
        pki,
        cert,
        key,
        s,
        _data: data,
    }
}

fn tls_cfg(
    data: &Path,
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> privledger::config::Config {
    let mut cfg = test_cfg(data);
    cfg.net.tls = Some(TlsConfig {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        client_ca: client_ca.map(Path::to_path_buf),
    });
    cfg
}

/// The CLI against `url` with `tls` flags; (exit code, stdout, stderr). Run off the
/// test's runtime, which also runs the server.
async fn cli(url: &str, token_file: &Path, tls: &[&str], args: &[&str]) -> (i32, String, String) {
    let mut cmd = std::process::Command::new(binary());
    cmd.arg("--server")
        .arg(url)
        .arg("--token-file")
        .arg(token_file)
        .args(tls)
        .args(args)
        .env_remove("PRIVLEDGER_TOKEN");
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn mutual_tls_end_to_end_with_the_cli_records_the_client_certificate() {
    let pki = Pki::new("privledger test CA");
    let (scert, skey) = pki.issue("server", "privledger", true);
    let (ccert, ckey) = pki.issue("hub", "jupyterhub-hub", false);
    let data = tempfile::tempdir().unwrap();
    let connect = ConnectOptions {
        tls_ca: Some(pki.ca_file()),
        tls_cert: Some(ccert.clone()),
        tls_key: Some(ckey.clone()),
        timeout: Some(std::time::Duration::from_secs(30)),
    };
    let cfg = tls_cfg(data.path(), &scert, &skey, Some(&pki.ca_file()));
    let token_file = cfg.admin_token_path();
    let s = TestServer::start_tls(cfg, connect.clone()).await;
    let mut c = s.admin().await;
    let g = ok(c.admin.create_group(create_group("over-mtls"))).await;

    // The entry names the certificate the client presented.
    let (entries, _) = stream_all(&mut c).await;
    let e = entries.iter().find(|e| e.seq == g.seq).unwrap();
    let body: serde_json::Value = serde_json::from_slice(&e.body).unwrap();
    let cert = body["actor_cert"].as_str().unwrap_or_default();
    assert!(cert.starts_with("cn=jupyterhub-hub sha256="), "{body}");
    assert_eq!(body["actor"], "admin");

    // The real CLI, with its client certificate.
    let ca = pki.ca_file();
    let with_cert = [
        "--tls-ca",
        ca.to_str().unwrap(),
        "--tls-cert",
        ccert.to_str().unwrap(),
        "--tls-key",
        ckey.to_str().unwrap(),
    ];
    let (code, out, err) = cli(
        &s.url,
        &token_file,
        &with_cert,
        &["group", "create", "from-cli"],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, _) = cli(
        &s.url,
        &token_file,
        &with_cert,
        &["audit", "tail", "--kind", "group_created"],
    )
    .await;
    assert_eq!(code, 0);
    assert!(out.contains("from-cli"), "{out}");

    // Without a client certificate, or trusting another CA: refused, one clear line.
    let (code, _, err) = cli(
        &s.url,
        &token_file,
        &["--tls-ca", ca.to_str().unwrap()],
        &["group", "list"],
    )
    .await;
    assert_ne!(code, 0);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let other = Pki::new("another CA");
    let (code, _, err) = cli(
        &s.url,
        &token_file,
        &[
            "--tls-ca",
            other.ca_file().to_str().unwrap(),
            "--tls-cert",
            ccert.to_str().unwrap(),
            "--tls-key",
            ckey.to_str().unwrap(),
        ],
        &["group", "list"],
    )
    .await;
    assert_ne!(code, 0);
    assert!(err.starts_with("privledger: "), "{err}");
    // A client certificate from another CA is refused by the server.
    let (oc, ok_) = other.issue("rogue", "rogue", false);
    let (code, _, _) = cli(
        &s.url,
        &token_file,
        &[
            "--tls-ca",
            ca.to_str().unwrap(),
            "--tls-cert",
            oc.to_str().unwrap(),
            "--tls-key",
            ok_.to_str().unwrap(),
        ],
        &["group", "list"],
    )
    .await;
    assert_ne!(code, 0);
    // Plaintext to the TLS port fails cleanly too.
    let plain = s.url.replace("https://localhost", "http://127.0.0.1");
    let (code, _, err) = cli(&plain, &token_file, &[], &["group", "list"]).await;
    assert_ne!(code, 0);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    // And after all that, the server answers a fresh request.
    ok(c.admin.create_group(create_group("still-serving"))).await;
    assert!(verify_all(&mut c).await.ok);
    s.stop().await;
}

#[tokio::test]
async fn tls_without_client_certificates_and_a_tls_client_on_a_plaintext_port() {
    let TlsServer { pki, s, _data, .. } = tls_server("ca").await;
    let mut c = s.admin().await;
    let g = ok(c.admin.create_group(create_group("tls"))).await;
    let (entries, _) = stream_all(&mut c).await;
    let body: serde_json::Value =
        serde_json::from_slice(&entries.iter().find(|e| e.seq == g.seq).unwrap().body).unwrap();
    assert!(
        body.get("actor_cert").is_none(),
        "no client certificate: {body}"
    );
    s.stop().await;

    // TLS to a plaintext server: a clean error, and the server is unharmed.
    let (p, mut pc) = TestServer::start_admin().await;
    let https = p.url.replace("http://127.0.0.1", "https://localhost");
    let r = privledger::client::Clients::connect_with(
        &https,
        Some(&p.admin_token),
        &ConnectOptions {
            tls_ca: Some(pki.ca_file()),
            timeout: Some(std::time::Duration::from_secs(10)),
            ..Default::default()
        },
    )
    .await;
    match r {
        Err(e) => assert!(e.to_string().contains("cannot reach"), "{e}"),
        Ok(mut c) => {
            let r = c.audit.head(pb::HeadRequest {}).await;
            assert_eq!(code(r), Code::Unavailable);
        }
    }
    // https without a CA is refused before connecting, naming the flag.
    let e = privledger::client::Clients::connect_with(&https, None, &ConnectOptions::default())
        .await
        .err()
        .unwrap();
    assert!(e.to_string().contains("--tls-ca"), "{e}");
    ok(pc.admin.create_group(create_group("unharmed"))).await;
    p.stop().await;
}

/// Waits (bounded) until a new connection with `opts` is served: the certificate the
/// server presents is the one `opts` trusts.
async fn served_with(s: &TestServer, opts: &ConnectOptions, never: &str) {
    let bound = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let c = privledger::client::Clients::connect_with(&s.url, Some(&s.admin_token), opts).await;
        if let Ok(mut c) = c {
            if c.audit.head(pb::HeadRequest {}).await.is_ok() {
                return;
            }
        }
        assert!(std::time::Instant::now() < bound, "{never}");
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn a_changed_certificate_is_served_to_new_connections_without_dropping_the_listener() {
    let TlsServer {
        pki,
        cert: scert,
        key: skey,
        s,
        _data,
    } = tls_server("first CA").await;
    let first = pki.trusted();
    let mut old = s.admin().await;
    ok(old.audit.head(pb::HeadRequest {})).await;

    // A half-written certificate is not taken: the old one keeps being served.
    std::fs::write(&scert, "-----BEGIN CERTIFICATE-----\ngarbage\n").unwrap();
    // A new certificate from a new CA, written whole over the old files.
    let next = Pki::new("second CA");
    let (ncert, nkey) = next.issue("server", "privledger", true);
    std::fs::rename(&ncert, &scert).unwrap();
    std::fs::rename(&nkey, &skey).unwrap();
    let second = next.trusted();
    // New connections get the new certificate once the change is seen (polled).
    served_with(&s, &second, "the new certificate was never served").await;
    // The connection made before the change still works.
    ok(old.audit.head(pb::HeadRequest {})).await;
    // And the old CA no longer verifies new connections.
    let r = privledger::client::Clients::connect_with(&s.url, Some(&s.admin_token), &first).await;
    assert!(r.is_err(), "the old certificate is still served");
    s.stop().await;
}

#[tokio::test]
async fn sighup_reloads_the_certificate_even_when_the_files_look_unchanged() {
    // The CA's directory holds the certificate files: kept to the end.
    let TlsServer {
        pki: _pki,
        cert: scert,
        key: skey,
        s,
        _data,
    } = tls_server("first CA").await;
    // New files, with the old modification times: only the signal can tell.
    let stamp = |p: &Path| std::fs::metadata(p).unwrap().modified().unwrap();
    let (c0, k0) = (stamp(&scert), stamp(&skey));
    let next = Pki::new("second CA");
    let (ncert, nkey) = next.issue("server", "privledger", true);
    std::fs::rename(&ncert, &scert).unwrap();
    std::fs::rename(&nkey, &skey).unwrap();
    for (p, t) in [(&scert, c0), (&skey, k0)] {
        std::fs::File::options()
            .write(true)
            .open(p)
            .unwrap()
            .set_modified(t)
            .unwrap();
    }
    let second = next.trusted();
    // SIGHUP to this process: the server in it reloads.
    rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::HUP).unwrap();
    served_with(&s, &second, "SIGHUP did not reload the certificate").await;
    s.stop().await;
}

#[test]
fn plaintext_on_a_non_loopback_address_is_refused_at_start_unless_asked_for() {
    let data = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(binary())
        .args([
            "serve",
            "--listen",
            "0.0.0.0:0",
            "--docker",
            "off",
            "--data",
        ])
        .arg(data.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refusing to serve plaintext gRPC on 0.0.0.0:0"),
        "{err}"
    );
    assert!(
        err.contains("--tls-cert") && err.contains("--insecure-listen"),
        "{err}"
    );
    assert!(
        !data.path().join("ledger.sled").exists(),
        "nothing was opened"
    );
}

#[tokio::test]
async fn plaintext_off_loopback_serves_with_insecure_listen() {
    let data = tempfile::tempdir().unwrap();
    let log = data.path().join("serve.log");
    let d = data.path().join("d");
    let mut cmd = std::process::Command::new(binary());
    cmd.arg("serve").arg("--data").arg(&d).args([
        "--listen",
        "0.0.0.0:0",
        "--insecure-listen",
        "--docker",
        "off",
    ]);
    let p = ServeProcess::spawn(cmd, &d, &log, "privledger.v1.Authorizer").await;
    drop(p);
}

#[tokio::test]
async fn the_unix_socket_has_its_mode_and_a_live_one_is_never_taken_over() {
    use std::os::unix::fs::PermissionsExt;
    let sockdir = tempfile::tempdir().unwrap();
    let sock = sockdir.path().join("privledger.sock");
    let a = tempfile::tempdir().unwrap();
    let mut cfg = test_cfg(a.path());
    cfg.unix_socket = Some(sock.clone());
    let s = TestServer::start_with(cfg).await;
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660, "the default mode");

    // A second server with another data directory must not take the path.
    let b = tempfile::tempdir().unwrap();
    let mut cfg = test_cfg(b.path());
    cfg.unix_socket = Some(sock.clone());
    let e = TestServer::start_refused(cfg).await;
    assert!(
        e.contains(&sock.display().to_string()) && e.contains("running server"),
        "{e}"
    );

    // The first still answers gRPC over its socket.
    let path = sock.clone();
    let channel = tonic::transport::Endpoint::from_static("http://unix.invalid")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                let s = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
            }
        }))
        .await
        .unwrap();
    let mut c = privledger::client::Clients::new(channel, Some(&s.admin_token)).unwrap();
    ok(c.audit.head(pb::HeadRequest {})).await;
    let (_, dir) = s.stop().await;
    assert!(!sock.exists(), "removed at shutdown");
    drop(dir);

    // A stale socket (its server gone) is replaced, with the mode asked for.
    let stale = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    drop(stale);
    let mut cfg = test_cfg(b.path());
    cfg.unix_socket = Some(sock.clone());
    cfg.net.unix_socket_mode = 0o600;
    let s = TestServer::start_with(cfg).await;
    assert_eq!(
        std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777,
        0o600
    );
    s.stop().await;
}
