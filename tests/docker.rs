//! The Docker watcher against the real daemon: what really ran, tied to decisions.
//! Each test skips with a printed reason when no daemon answers, unless
//! `PRIVLEDGER_REQUIRE_DOCKER=1`. Every container a test creates is removed.

mod common;

use common::*;
use privledger::config::Config;
use privledger::pb;
use serde_json::Value;

async fn docker_server(dir: &std::path::Path, stop_on_stale: bool) -> TestServer {
    let mut cfg = Config::with_data_dir(dir);
    cfg.docker.enabled = true;
    cfg.docker.stop_on_stale_grant = stop_on_stale;
    let s = TestServer::start_with(cfg).await;
    wait_watching(&s).await;
    s
}

async fn decide(c: &mut privledger::client::Clients, user: &str) -> pb::Decision {
    ok(c.authz.authorize_spawn(pb::AuthorizeSpawnRequest {
        user: user.into(),
        ..Default::default()
    }))
    .await
}

fn alerts(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["kind"] == "alert")
        .map(|e| e["alert"].as_str().unwrap().to_string())
        .collect()
}

fn actions(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["kind"] == "docker_container")
        .map(|e| e["action"].as_str().unwrap().to_string())
        .collect()
}

/// Runs a container the way a spawner applies a decision's fragments.
fn run_with(
    cs: &Containers,
    n: &str,
    binds: &[String],
    labels: &[(&str, &str)],
    extra: &[&str],
) -> String {
    let name = cs.name(n);
    let mut args = vec!["run".to_string(), "-d".into(), "--name".into(), name];
    for b in binds {
        args.push("-v".into());
        args.push(b.clone());
    }
    for (k, v) in labels {
        args.push("--label".into());
        args.push(format!("{k}={v}"));
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    args.extend([TEST_IMAGE.to_string(), "sleep".into(), "300".into()]);
    docker(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

#[tokio::test]
async fn authorized_and_unauthorized_socket_containers() {
    if !docker_available() {
        return;
    }
    ensure_test_image();
    let dir = tempfile::tempdir().unwrap();
    let s = docker_server(dir.path(), false).await;
    let cs = Containers::new("authz");
    let mut c = s.admin().await;
    ok(c.admin.add_member(pb::MemberRequest {
        group: "docker-privileged".into(),
        user: "alice".into(),
        request_id: String::new(),
        users: vec![],
        reason: String::new(),
    }))
    .await;
    let alice = decide(&mut c, "alice").await;
    let bob = decide(&mut c, "bob").await; // denied: no socket
    let f = alice.fragments.clone().unwrap();
    // Authorized: the decision's bind and labels.
    let ok_id = run_with(
        &cs,
        "ok",
        &f.binds,
        &[
            ("privledger.decision", alice.decision_id.as_str()),
            ("privledger.user", "alice"),
        ],
        &[],
    );
    // Unlabeled socket container.
    let rogue_id = run_with(
        &cs,
        "rogue",
        &["/var/run/docker.sock:/var/run/docker.sock".into()],
        &[],
        &[],
    );
    // A label naming another user's decision.
    let stolen_id = run_with(
        &cs,
        "stolen",
        &f.binds,
        &[
            ("privledger.decision", alice.decision_id.as_str()),
            ("privledger.user", "mallory"),
        ],
        &[],
    );
    // A decision that did not grant the socket.
    let nosock_id = run_with(
        &cs,
        "nosock",
        &["/var/run/docker.sock:/var/run/docker.sock:ro".into()],
        &[
            ("privledger.decision", bob.decision_id.as_str()),
            ("privledger.user", "bob"),
        ],
        &[],
    );
    // --mount of a directory holding the socket.
    let mount_id = run_with(
        &cs,
        "mount",
        &[],
        &[],
        &["--mount", "type=bind,source=/run,target=/hostrun,readonly"],
    );
    // A tmpfs mount has no source: it is not the host's "/" (issue 23, finding 10).
    let tmpfs_id = run_with(&cs, "tmpfs", &[], &[], &["--mount", "type=tmpfs,target=/t"]);

    let good = entries_until(&mut c, &ok_id, |e| {
        actions(e).contains(&"start".to_string())
    })
    .await;
    let created = good
        .iter()
        .find(|e| e["kind"] == "docker_container" && e["action"] == "create")
        .unwrap();
    assert_eq!(created["decision_id"], alice.decision_id, "decision linked");
    assert_eq!(created["user"], "alice");
    assert_eq!(created["socket_mounts"][0]["rw"], true);
    assert_eq!(created["inspected"], true);

    for (id, why) in [
        (&rogue_id, "no privledger.decision label"),
        (&stolen_id, "is for user \"alice\""),
        (&nosock_id, "did not grant the raw socket"),
    ] {
        let ev = entries_until(&mut c, id, |e| {
            alerts(e).contains(&"unauthorized_socket_mount".to_string())
        })
        .await;
        let a = ev.iter().find(|e| e["kind"] == "alert").unwrap();
        assert!(a["details"].as_str().unwrap().contains(why), "{a}");
    }
    let ev = entries_until(&mut c, &mount_id, |e| {
        alerts(e).contains(&"unauthorized_socket_mount".to_string())
    })
    .await;
    let created = ev.iter().find(|e| e["kind"] == "docker_container").unwrap();
    assert_eq!(created["socket_mounts"][0]["source"], "/run");
    assert_eq!(created["socket_mounts"][0]["rw"], false);

    let ev = entries_until(&mut c, &tmpfs_id, |e| {
        actions(e).contains(&"start".to_string())
    })
    .await;
    assert!(
        alerts(&ev).is_empty(),
        "a tmpfs mount is not the socket: {ev:#?}"
    );
    let created = ev.iter().find(|e| e["kind"] == "docker_container").unwrap();
    assert!(
        created["socket_mounts"]
            .as_array()
            .is_none_or(Vec::is_empty),
        "{created}"
    );

    // Removing the authorized container records die and destroy; it never alerted.
    docker(&["rm", "-f", &ok_id]);
    let good = entries_until(&mut c, &ok_id, |e| {
        actions(e).contains(&"destroy".to_string())
    })
    .await;
    assert!(alerts(&good).is_empty(), "{good:#?}");
    let a = actions(&good);
    assert!(
        a.contains(&"die".into()) && a.contains(&"create".into()),
        "{a:?}"
    );
    // Each alert is recorded once per container, though create and start both judge.
    let ev = entries_until(&mut c, &rogue_id, |e| {
        actions(e).contains(&"start".to_string())
    })
    .await;
    assert_eq!(alerts(&ev).len(), 1, "{ev:#?}");
    // Stream filters by the alert kind.
    let mut st = ok(c.audit.stream(pb::StreamRequest {
        from_seq: 1,
        follow: false,
        kinds: vec!["unauthorized_socket_mount".into()],
        subject: rogue_id.clone(),
    }))
    .await;
    assert_eq!(st.message().await.unwrap().unwrap().kind, "alert");
    drop(cs);
    s.stop().await;
}

/// Dave may run privileged containers.
async fn grant_dave_privileged(c: &mut privledger::client::Clients) {
    ok(c.admin.issue_grant(pb::IssueGrantRequest {
        subject: user("dave"),
        spec: spec(pb::SocketAccess::None, pb::SocketMode::Rw, true),
        expires_at: None,
        reason: "gpu drivers".into(),
        request_id: String::new(),
    }))
    .await;
}

#[tokio::test]
async fn privileged_is_judged_at_create() {
    if !docker_available() {
        return;
    }
    ensure_test_image();
    let dir = tempfile::tempdir().unwrap();
    let s = docker_server(dir.path(), false).await;
    let cs = Containers::new("priv");
    let mut c = s.admin().await;
    grant_dave_privileged(&mut c).await;
    let d = decide(&mut c, "dave").await;
    assert!(d.fragments.as_ref().unwrap().privileged);
    // Privileged containers cannot start on these machines: judge them at create.
    let granted = cs.name("granted");
    let granted_id = docker(&[
        "create",
        "--privileged",
        "--name",
        &granted,
        "--label",
        &format!("privledger.decision={}", d.decision_id),
        "--label",
        "privledger.user=dave",
        TEST_IMAGE,
        "true",
    ]);
    let rogue = cs.name("rogue");
    let rogue_id = docker(&[
        "create",
        "--privileged",
        "--name",
        &rogue,
        TEST_IMAGE,
        "true",
    ]);
    let ev = entries_until(&mut c, &rogue_id, |e| {
        alerts(e).contains(&"unauthorized_privileged".to_string())
    })
    .await;
    assert_eq!(
        ev.iter().find(|e| e["kind"] == "docker_container").unwrap()["privileged"],
        true
    );
    let ev = entries_until(&mut c, &granted_id, |e| !actions(e).is_empty()).await;
    // The granted one's observation is recorded; the rogue's alert came after it in
    // the log, so had the granted one alerted, it would be there by now too.
    assert!(alerts(&ev).is_empty(), "{ev:#?}");
    drop(cs);
    s.stop().await;
}

#[tokio::test]
async fn a_label_the_ledger_would_refuse_does_not_keep_a_container_out_of_it() {
    if !docker_available() {
        return;
    }
    ensure_test_image();
    let dir = tempfile::tempdir().unwrap();
    let s = docker_server(dir.path(), false).await;
    let cs = Containers::new("crafted");
    let mut c = s.admin().await;
    // A user granted privileged, whose name a hostile label imitates: a control
    // character and text past the 256 bytes a label may hold.
    grant_dave_privileged(&mut c).await;
    for (tag, label) in [
        ("newline", "dave\nroot".to_string()),
        ("long", format!("dave{}", "é".repeat(200))),
        ("escape", "dave\u{1b}[2K".to_string()),
    ] {
        let name = cs.name(tag);
        let id = docker(&[
            "create",
            "--privileged",
            "--name",
            &name,
            "--label",
            &format!("privledger.user={label}"),
            TEST_IMAGE,
            "true",
        ]);
        let ev = entries_until(&mut c, &id, |e| {
            alerts(e).contains(&"unauthorized_privileged".to_string())
        })
        .await;
        let seen = ev.iter().find(|e| e["kind"] == "docker_container").unwrap();
        let recorded = seen["user"].as_str().unwrap();
        assert!(
            recorded.len() <= 256 && !recorded.chars().any(char::is_control),
            "{tag}: {recorded:?}"
        );
        assert_ne!(recorded, "dave", "{tag}");
        assert_eq!(seen["privileged"], true, "{tag}");
    }
    drop(cs);
    s.stop().await;
}

async fn revoke_while_running(stop: bool) {
    if !docker_available() {
        return;
    }
    ensure_test_image();
    let dir = tempfile::tempdir().unwrap();
    let s = docker_server(dir.path(), stop).await;
    let cs = Containers::new(if stop { "stale-stop" } else { "stale" });
    let mut c = s.admin().await;
    let g = ok(c.admin.issue_grant(pb::IssueGrantRequest {
        subject: user("erin"),
        spec: spec(pb::SocketAccess::Raw, pb::SocketMode::Rw, false),
        expires_at: None,
        reason: "workflow runner".into(),
        request_id: String::new(),
    }))
    .await;
    let d = decide(&mut c, "erin").await;
    let f = d.fragments.unwrap();
    let id = run_with(
        &cs,
        "erin",
        &f.binds,
        &[
            ("privledger.decision", d.decision_id.as_str()),
            ("privledger.user", "erin"),
        ],
        &[],
    );
    entries_until(&mut c, &id, |e| actions(e).contains(&"start".to_string())).await;
    ok(c.admin.revoke_grant(pb::RevokeGrantRequest {
        grant_id: g.id,
        reason: "left the team".into(),
        request_id: String::new(),
    }))
    .await;
    let ev = entries_until(&mut c, &id, |e| {
        alerts(e).contains(&"stale_grant".to_string())
            && (!stop || e.iter().any(|x| x["kind"] == "container_stopped"))
    })
    .await;
    let a = ev.iter().find(|e| e["kind"] == "alert").unwrap();
    assert!(
        a["details"].as_str().unwrap().contains("raw Docker socket"),
        "{a}"
    );
    assert!(a["trigger_seq"].as_u64().is_some());
    let running = docker(&["inspect", "-f", "{{.State.Running}}", &id]);
    if stop {
        let st = ev
            .iter()
            .find(|e| e["kind"] == "container_stopped")
            .unwrap();
        assert_eq!(st["ok"], true, "{st}");
        assert_eq!(running, "false");
        entries_until(&mut c, &id, |e| actions(e).contains(&"die".to_string())).await;
    } else {
        assert_eq!(running, "true", "alert only");
        assert!(!ev.iter().any(|e| e["kind"] == "container_stopped"));
    }
    drop(cs);
    s.stop().await;
}

#[tokio::test]
async fn revoke_while_running_alerts() {
    revoke_while_running(false).await;
}

#[tokio::test]
async fn revoke_while_running_stops_when_configured() {
    revoke_while_running(true).await;
}

#[tokio::test]
async fn watcher_restarted_while_300_containers_come_and_go() {
    if !docker_available() {
        return;
    }
    ensure_test_image();
    let dir = tempfile::tempdir().unwrap();
    let s = docker_server(dir.path(), false).await;
    let cs = Containers::new("gap");
    let mut c = s.admin().await;
    // One container seen live, so the cursor is set.
    let before = cs.name("before");
    let before_id = docker(&["create", "--name", &before, TEST_IMAGE, "true"]);
    entries_until(&mut c, &before_id, |e| !actions(e).is_empty()).await;
    drop(c);
    let (cfg, _keep) = s.stop().await;

    // While privledger is down: 300 containers created and removed (600 events, more
    // than the daemon's 256-event window), two that stay, and one removed that we knew.
    // Removed first, so its destroy event falls out of the window: only the
    // reconcile can notice it.
    docker(&["rm", &before_id]);
    let names: Vec<String> = (0..300).map(|i| cs.name(&format!("churn{i}"))).collect();
    std::thread::scope(|scope| {
        for chunk in names.chunks(38) {
            scope.spawn(move || {
                for n in chunk {
                    docker(&["create", "--name", n, TEST_IMAGE, "true"]);
                    docker(&["rm", n]);
                }
            });
        }
    });
    let stay: Vec<String> = (0..2)
        .map(|i| {
            let n = cs.name(&format!("stay{i}"));
            docker(&["create", "--name", &n, TEST_IMAGE, "true"])
        })
        .collect();

    let mut cfg = cfg;
    cfg.docker.enabled = true;
    let s = TestServer::start_with(cfg).await;
    wait_watching(&s).await;
    let mut c = s.admin().await;
    // Everything after the restart, in one pass.
    let mut st = ok(c.audit.stream(stream_from(1, false))).await;
    let mut all = Vec::new();
    while let Some(e) = st.message().await.unwrap() {
        all.push(serde_json::from_slice::<Value>(&e.body).unwrap()["event"].clone());
    }
    let gap = all
        .iter()
        .find(|e| e["kind"] == "alert" && e["alert"] == "docker_event_gap")
        .expect("gap alert");
    assert!(gap["window_from_ns"].as_i64().unwrap() < gap["window_to_ns"].as_i64().unwrap());
    // Every container that still exists is known, recorded by the reconcile.
    for id in &stay {
        assert!(
            all.iter()
                .any(|e| e["kind"] == "docker_container" && e["container_id"] == id.as_str()),
            "{id} unknown"
        );
    }
    // The container we knew and that vanished unseen is recorded as vanished.
    assert!(all.iter().any(|e| e["kind"] == "docker_container"
        && e["container_id"] == before_id.as_str()
        && e["action"] == "vanished"));
    // No event is recorded twice.
    let mut keys: Vec<(String, String, i64)> = all
        .iter()
        .filter(|e| e["kind"] == "docker_container" && e["source"] == "events")
        .map(|e| {
            (
                e["container_id"].as_str().unwrap().into(),
                e["action"].as_str().unwrap().into(),
                e["daemon_time_ns"].as_i64().unwrap(),
            )
        })
        .collect();
    let n = keys.len();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), n, "duplicates recorded");
    drop(cs);
    s.stop().await;
}

#[tokio::test]
async fn daemon_absent_at_start_then_present() {
    if !docker_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("docker.sock");
    let mut cfg = Config::with_data_dir(dir.path().join("data"));
    cfg.docker.enabled = true;
    cfg.docker.endpoint = format!("unix://{}", sock.display());
    let s = TestServer::start_with(cfg).await;
    let mut c = s.admin().await;
    // Authorization is answered while the daemon is absent.
    let d = decide(&mut c, "alice").await;
    assert!(!d.allowed);
    let mut health = tonic_health::pb::health_client::HealthClient::new(c.channel.clone());
    let st = ok(health.check(tonic_health::pb::HealthCheckRequest {
        service: "privledger.v1.DockerWatcher".into(),
    }))
    .await;
    assert_eq!(st.status, 2, "NOT_SERVING while absent");
    // The daemon appears at the endpoint: a socket forwarding to the real one.
    let listener = tokio::net::UnixListener::bind(&sock).unwrap();
    let proxy = tokio::spawn(async move {
        loop {
            let (mut inbound, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut out = tokio::net::UnixStream::connect("/var/run/docker.sock")
                    .await
                    .unwrap();
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
            });
        }
    });
    wait_watching(&s).await;
    decide(&mut c, "alice").await;
    proxy.abort();
    s.stop().await;
}

// Multi-threaded: the test blocks on the CLI process while the in-process server
// answers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn importing_a_captured_events_file_twice_adds_nothing_the_second_time() {
    if !docker_available() {
        return;
    }
    ensure_test_image();
    let cs = Containers::new("import");
    let t0 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let a = cs.name("a");
    let id = docker(&[
        "create",
        "--name",
        &a,
        "-v",
        "/var/run/docker.sock:/var/run/docker.sock",
        TEST_IMAGE,
        "true",
    ]);
    docker(&["start", "-a", &id]);
    docker(&["rm", &id]);
    let t1 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let capture = docker(&[
        "events",
        "--since",
        &format!("{}.{:09}", t0.as_secs(), t0.subsec_nanos()),
        "--until",
        &format!("{}.{:09}", t1.as_secs(), t1.subsec_nanos()),
        "--filter",
        &format!("container={id}"),
        "--format",
        "{{json .}}",
    ]);
    assert!(capture.lines().count() >= 4, "{capture}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.jsonl");
    std::fs::write(&file, format!("{capture}\n")).unwrap();
    // A ledger that did not watch: the import is its only source.
    let s = TestServer::start().await;
    let run = |args: &[&str]| {
        let out = std::process::Command::new(binary())
            .args([
                "--server",
                &s.url,
                "--token",
                &s.admin_token,
                "--json",
                "docker",
                "import",
            ])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let first = run(&[file.to_str().unwrap()]);
    let recorded = first["recorded"].as_u64().unwrap();
    assert!(recorded >= 4, "{first}"); // create, start, die, destroy
    let second = run(&[file.to_str().unwrap()]);
    assert_eq!(second["recorded"], 0);
    assert_eq!(second["already_held"].as_u64().unwrap(), recorded);
    let mut c = s.admin().await;
    let ev = entries_until(&mut c, &id, |e| actions(e).len() as u64 >= recorded).await;
    assert!(ev
        .iter()
        .all(|e| e["source"] == "import" && e["inspected"] == false));
    // A malformed file is refused with the line number, and records nothing.
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"Type\":\"container\"}\n").unwrap();
    let out = std::process::Command::new(binary())
        .args([
            "--server",
            &s.url,
            "--token",
            &s.admin_token,
            "docker",
            "import",
        ])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad.jsonl:1"));
    drop(cs);
    s.stop().await;
}

/// The auditor's question against a real daemon: who held the raw socket, from when
/// to when, through which grant and group, and did a container hold it (issue 14).
#[tokio::test]
async fn the_access_report_says_which_container_held_the_socket_and_until_when() {
    if !docker_available() {
        return;
    }
    ensure_test_image();
    let dir = tempfile::tempdir().unwrap();
    let s = docker_server(dir.path(), false).await;
    let cs = Containers::new("report");
    let mut c = s.admin().await;
    // Two members in one call.
    let added = ok(c.admin.add_member(pb::MemberRequest {
        group: "docker-privileged".into(),
        user: String::new(),
        request_id: String::new(),
        users: vec!["alice".into(), "bob".into()],
        reason: String::new(),
    }))
    .await;
    assert_eq!(added.seq, added.first_seq + 1);
    let alice = decide(&mut c, "alice").await;
    let f = alice.fragments.clone().unwrap();
    let id = run_with(
        &cs,
        "alice",
        &f.binds,
        &[
            ("privledger.decision", alice.decision_id.as_str()),
            ("privledger.user", "alice"),
        ],
        &[],
    );
    entries_until(&mut c, &id, |e| actions(e).contains(&"start".to_string())).await;
    let removed = ok(c.admin.remove_member(member("docker-privileged", "alice"))).await;
    entries_until(&mut c, &id, |e| {
        alerts(e).contains(&"stale_grant".to_string())
    })
    .await;

    let r = ok(c.authz.access_intervals(pb::AccessIntervalsRequest {
        socket: pb::SocketAccess::Raw.into(),
        ..Default::default()
    }))
    .await;
    let span = |user: &str| {
        r.intervals
            .iter()
            .find(|i| i.user == user)
            .unwrap_or_else(|| panic!("no span for {user}: {r:?}"))
    };
    let a = span("alice");
    assert_eq!(a.from_seq, added.first_seq, "{a:?}");
    assert_eq!(a.to_seq, Some(removed.seq), "{a:?}");
    assert!(a.held, "{a:?}");
    assert!(a.containers.iter().any(|h| h.id == id), "{a:?}");
    assert!(a.grants.iter().all(|g| g.via_group == "docker-privileged"));
    let b = span("bob");
    assert_eq!(
        (b.from_seq, b.to_seq, b.held),
        (added.seq, None, false),
        "{b:?}"
    );
    // The stale container of a user who lost access is not counted for another span.
    assert_eq!(r.intervals.iter().filter(|i| i.user == "alice").count(), 1);
    docker(&["rm", "-f", &id]);
}
