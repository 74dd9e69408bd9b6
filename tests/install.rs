//! What an operator installs and runs: the annotated example configuration starts a
//! server as it is, the systemd unit is hardened and parses, the Dockerfile and the
//! compose example hold what the README says, and `systemctl reload` (SIGHUP) leaves
//! a server without TLS running.

mod common;

use std::path::{Path, PathBuf};

use common::{binary, ServeProcess};

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(name)
}

fn read(name: &str) -> String {
    std::fs::read_to_string(example(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// `serve --config examples/privledger.toml` starts, serves and answers the CLI; the
/// file names every section the configuration takes.
#[tokio::test]
async fn the_example_configuration_starts_a_server() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = example("examples/privledger.toml");
    let mut s = ServeProcess::start(
        &data,
        &["--config", config.to_str().unwrap()],
        &dir.path().join("log"),
        "privledger.v1.Admin",
    )
    .await;
    let url = s.url.clone();
    let token = data.join("admin.token");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(binary())
            .args(["status", "--json", "--server", &url, "--token-file"])
            .arg(&token)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{out:?}\n{}", s.log_tail());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["writes"], "accepted", "{v}");
    // SIGHUP (ExecReload) with nothing to reload: the server keeps serving.
    s.signal(rustix::process::Signal::HUP);
    assert!(
        s.wait_for_log("nothing to reload", std::time::Duration::from_secs(30))
            .await,
        "{}",
        s.log_tail()
    );
    let mut c = s.admin().await;
    common::head(&mut c).await;
    s.terminate().await;

    let text = read("examples/privledger.toml");
    for section in [
        "[sockets]",
        "[docker]",
        "[tls]",
        "[limits]",
        "[cluster]",
        "[[builtin_groups]]",
    ] {
        assert!(text.contains(section), "the example lacks {section}");
    }
    for key in [
        "listen",
        "data_dir",
        "checkpoint_interval",
        "on_stale_grant",
        "max_connections",
        "etcd_endpoints",
        "archive_dir",
    ] {
        assert!(text.contains(key), "the example lacks {key}");
    }
}

/// A key the configuration does not have is refused by name (so the example cannot
/// drift into keys the server ignores).
#[test]
fn a_misspelt_key_in_the_example_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    let text =
        read("examples/privledger.toml").replacen("checkpoint_interval", "checkpoint_intervall", 1);
    std::fs::write(&cfg, text).unwrap();
    let out = std::process::Command::new(binary())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--docker",
            "off",
            "--config",
        ])
        .arg(&cfg)
        .arg("--data")
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("checkpoint_intervall"));
}

/// The unit runs the server hardened: its own user, its state directory, a read-only
/// system, the Docker socket through its group, no capabilities; and systemd parses
/// it (when systemd-analyze is installed).
#[test]
fn the_systemd_unit_is_hardened_and_parses() {
    let unit = read("examples/privledger.service");
    let directives: Vec<(&str, &str)> = unit
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && l.contains('='))
        .filter_map(|l| l.split_once('='))
        .collect();
    let value = |k: &str| {
        directives
            .iter()
            .find(|(key, _)| *key == k)
            .map(|(_, v)| v.trim())
            .unwrap_or_else(|| panic!("the unit lacks {k}="))
    };
    assert_eq!(value("DynamicUser"), "yes");
    assert_eq!(value("StateDirectory"), "privledger");
    assert_eq!(value("ProtectSystem"), "strict");
    assert_eq!(value("NoNewPrivileges"), "yes");
    assert_eq!(value("SupplementaryGroups"), "docker");
    assert_eq!(value("CapabilityBoundingSet"), "");
    assert!(value("ExecStart").contains("serve --config /etc/privledger/privledger.toml"));
    assert!(value("ExecReload").contains("-HUP"));
    // A configuration error (exit 64) is not retried in a loop.
    assert!(value("RestartPreventExitStatus")
        .split_whitespace()
        .any(|c| c == "64"));

    analyze("privledger.service", &unit);
}

/// `systemd-analyze verify` of `unit` as installed (ExecStart naming the binary just
/// built), when systemd-analyze runs here.
fn analyze(name: &str, unit: &str) {
    let Ok(out) = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
    else {
        println!("skipped systemd-analyze verify: systemd-analyze is not installed");
        return;
    };
    if !out.status.success() {
        println!("skipped systemd-analyze verify: systemd-analyze does not run here");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/privledger", binary().to_str().unwrap()),
    )
    .unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let problems: Vec<&str> = err.lines().filter(|l| l.contains(name)).collect();
    assert!(out.status.success() && problems.is_empty(), "{err}");
}

/// The agent's unit: its own user and state directory (the outbox), the Docker
/// socket through its group, the token as a credential; systemd parses it.
#[test]
fn the_agents_systemd_unit_is_hardened_and_parses() {
    let unit = read("examples/privledger-watch.service");
    for line in [
        "DynamicUser=yes",
        "StateDirectory=privledger-watch",
        "SupplementaryGroups=docker",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=",
        "LoadCredential=watcher.token:/etc/privledger/watcher.token",
        "RestartPreventExitStatus=64",
    ] {
        assert!(
            unit.lines().any(|l| l.trim() == line),
            "the unit lacks {line}"
        );
    }
    assert!(unit.contains("privledger watch --data /var/lib/privledger-watch"));
    analyze("privledger-watch.service", &unit);
}

/// The Dockerfile builds in one stage and runs in another as a non-root user, with
/// the data directory a volume; the compose example shares privledger's Unix socket
/// with JupyterHub. (Neither can be built or run here: no registry is reachable.)
#[test]
fn the_dockerfile_and_compose_example_say_what_the_readme_says() {
    let d = read("Dockerfile");
    let froms: Vec<&str> = d.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert!(froms.len() >= 2, "multi-stage: {froms:?}");
    assert!(d.contains("cargo build --release --locked"));
    assert!(d.contains("COPY --from="));
    let user = d
        .lines()
        .rfind(|l| l.starts_with("USER "))
        .expect("the runtime stage names a user");
    assert!(!user.contains("root") && user.trim() != "USER 0", "{user}");
    assert!(d.contains("VOLUME"));
    let ignore = read(".dockerignore");
    assert!(ignore
        .lines()
        .any(|l| l.trim().trim_start_matches('/') == "target" || l.trim() == "target/"));
    let compose = read("examples/compose.yaml");
    assert!(
        compose.contains("--unix-socket"),
        "privledger listens on a shared socket"
    );
    assert!(
        compose.contains("PRIVLEDGER_SERVER"),
        "the hub is told where it is"
    );
    assert!(compose.contains("/var/run/docker.sock"));
}

/// The example's commented `[cluster]` section, uncommented, is a valid cluster
/// configuration (the example cannot drift into keys the server does not have).
#[test]
fn the_examples_cluster_section_uncommented_loads() {
    let text = read("examples/privledger.toml");
    let mut out = String::new();
    let mut inside = false;
    for line in text.lines() {
        if line == "# [cluster]" {
            inside = true;
        } else if inside && !line.starts_with("# ") {
            inside = false;
        }
        match line.strip_prefix("# ") {
            Some(l) if inside => out.push_str(l),
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("privledger.toml");
    std::fs::write(&file, out).unwrap();
    let cfg = privledger::config::Config::load(Some(&file), &Default::default())
        .expect("the uncommented cluster section loads");
    let c = cfg.cluster.expect("a cluster");
    assert_eq!(c.node_id, "ledger-1");
    assert_eq!(c.etcd_endpoints.len(), 3);
    assert_eq!(c.seal_after, 500_000);
}
