//! `privledger watch`, end to end: the real agent binary against a real Docker daemon
//! and a real ledger server, the ledger killed and restarted under it, the agent
//! `kill -9`ed. Skipped with a printed reason without Docker (unless
//! PRIVLEDGER_REQUIRE_DOCKER=1).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Containers, ServeProcess, TEST_IMAGE};
use privledger::client::Clients;
use privledger::pb;

const BOUND: Duration = Duration::from_secs(120);

/// The agent as a child process, killed when dropped.
struct Agent {
    child: Option<std::process::Child>,
    log: PathBuf,
}

impl Agent {
    fn start(server: &str, token_file: &Path, host: &str, data: &Path, log: &Path) -> Agent {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = std::process::Command::new(common::binary())
            .args(["watch", "--server", server, "--host-id", host])
            .arg("--token-file")
            .arg(token_file)
            .arg("--data")
            .arg(data)
            .env("PRIVLEDGER_LOG", "info")
            .stdin(std::process::Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .expect("spawn privledger watch");
        Agent {
            child: Some(child),
            log: log.to_path_buf(),
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The secret of a new watcher token named `host`.
async fn watcher_secret(admin: &mut Clients, host: &str) -> String {
    admin
        .admin
        .create_token(common::token(host, pb::Role::Watcher))
        .await
        .expect("watcher token")
        .into_inner()
        .secret
}

/// A watcher token named `host`, its secret in a file.
async fn watcher_token(admin: &mut Clients, host: &str, dir: &Path) -> PathBuf {
    let secret = watcher_secret(admin, host).await;
    let path = dir.join(format!("{host}.token"));
    std::fs::write(&path, format!("{secret}\n")).unwrap();
    path
}

/// A client of `s` with a watcher token named `host`.
async fn watcher(s: &common::TestServer, admin: &mut Clients, host: &str) -> Clients {
    s.client(Some(&watcher_secret(admin, host).await)).await
}

/// The ledger's entries reported from `host`, as (kind, event body).
async fn from_host(c: &mut Clients, host: &str) -> Vec<serde_json::Value> {
    let (entries, err) = common::stream_all(c).await;
    assert!(err.is_none(), "{err:?}");
    entries
        .iter()
        .map(|e| serde_json::from_slice::<serde_json::Value>(&e.body).unwrap()["event"].clone())
        .filter(|ev| ev["host"] == host)
        .collect()
}

/// Follows the audit stream until `pred` holds for the entries reported from
/// `host`; returns them. The bound only keeps a broken run from hanging.
async fn until_reported(
    c: &mut Clients,
    host: &str,
    what: &str,
    log: &Path,
    pred: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let mut s = c
        .audit
        .stream(common::stream_from(1, true))
        .await
        .expect("stream")
        .into_inner();
    let mut evs = Vec::new();
    let done = tokio::time::timeout(BOUND, async {
        while !pred(&evs) {
            let e = s.message().await.expect("stream").expect("stream open");
            let ev = serde_json::from_slice::<serde_json::Value>(&e.body).unwrap()["event"].clone();
            if ev["host"] == host {
                evs.push(ev);
            }
        }
    })
    .await;
    assert!(
        done.is_ok(),
        "never reported: {what} ({} entries from the host); the agent's log:\n{}",
        evs.len(),
        std::fs::read_to_string(log).unwrap_or_default()
    );
    evs
}

/// (container id, action) → how many entries record it.
fn counts(evs: &[serde_json::Value]) -> BTreeMap<(String, String), usize> {
    let mut m = BTreeMap::new();
    for e in evs.iter().filter(|e| e["kind"] == "docker_container") {
        let key = (
            e["container_id"].as_str().unwrap_or_default().to_string(),
            e["action"].as_str().unwrap_or_default().to_string(),
        );
        *m.entry(key).or_insert(0) += 1;
    }
    m
}

fn private_dir(p: &Path) -> PathBuf {
    std::fs::create_dir_all(p).unwrap();
    std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    p.to_path_buf()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_token_reports_for_its_own_host_only() {
    let (_s, mut admin) = common::TestServer::start_admin().await;
    let mut w = watcher(&_s, &mut admin, "host-a").await;
    let report = |host: &str, number: u64| pb::RecordHostEventsRequest {
        host_id: host.into(),
        events: vec![pb::HostEvent {
            number,
            what: Some(pb::host_event::What::Event(pb::DockerEvent {
                r#type: "container".into(),
                action: "create".into(),
                id: "c0ffee".into(),
                time_nano: 1,
                attributes: [("name".to_string(), "jupyter-alice".to_string())].into(),
            })),
            facts: None,
        }],
    };
    let other = w.admin.record_host_events(report("host-b", 1)).await;
    assert_eq!(common::code(other), tonic::Code::PermissionDenied);
    // Not the next number: refused, naming the one expected; nothing recorded.
    let gap = w.admin.record_host_events(report("host-a", 2)).await;
    let gap = gap.unwrap_err();
    assert_eq!(gap.code(), tonic::Code::FailedPrecondition);
    assert!(
        gap.message().contains("expected report 1"),
        "{}",
        gap.message()
    );
    let r = w
        .admin
        .record_host_events(report("host-a", 1))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.last_number, r.recorded, r.duplicates), (1, 1, 0));
    let again = w
        .admin
        .record_host_events(report("host-a", 1))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (again.last_number, again.recorded, again.duplicates),
        (1, 0, 1)
    );
    // A watcher does nothing else.
    let grant = w.admin.create_group(common::create_group("g")).await;
    assert_eq!(common::code(grant), tonic::Code::PermissionDenied);
    let evs = from_host(&mut admin, "host-a").await;
    assert_eq!(evs.len(), 1, "{evs:#?}");
    assert_eq!(evs[0]["host_seq"], 1);
    assert_eq!(evs[0]["source"], "agent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_the_ledger_cannot_take_as_it_came_is_fitted_or_recorded_as_a_gap_and_never_holds_the_host_back(
) {
    let (_s, mut admin) = common::TestServer::start_admin().await;
    let mut w = watcher(&_s, &mut admin, "host-a").await;
    let event = |action: &str, id: &str| {
        Some(pb::host_event::What::Event(pb::DockerEvent {
            r#type: "container".into(),
            action: action.into(),
            id: id.into(),
            time_nano: 1,
            attributes: Default::default(),
        }))
    };
    let crafted = |id: &str, user: String| pb::ContainerFacts {
        id: id.into(),
        name: format!("/{id}"),
        image: "busybox".into(),
        labels: [("privledger.user".to_string(), user)].into(),
        mounts: vec![],
        privileged: true,
        running: false,
    };
    let events = vec![
        // A label a container's creator chose, beyond the ledger's rules.
        pb::HostEvent {
            number: 1,
            what: event("create", "c1"),
            facts: Some(crafted("c1", format!("dave\n{}", "x".repeat(400)))),
        },
        // What no agent forwards (a buggy or hostile one): its number is a gap.
        pb::HostEvent {
            number: 2,
            what: event("vanished", "c1"),
            facts: None,
        },
        pb::HostEvent {
            number: 3,
            what: Some(pb::host_event::What::Reconciled(crafted(
                "c2",
                "\u{7}".repeat(300),
            ))),
            facts: None,
        },
        pb::HostEvent {
            number: 4,
            what: event("destroy", "c1"),
            facts: None,
        },
    ];
    let r = w
        .admin
        .record_host_events(pb::RecordHostEventsRequest {
            host_id: "host-a".into(),
            events,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.last_number, r.recorded, r.duplicates), (4, 4, 0));
    let evs = from_host(&mut admin, "host-a").await;
    // One entry per report, in order (the privileged containers' alerts besides).
    let reports: Vec<_> = evs
        .iter()
        .filter(|e| e["kind"] == "docker_container" || e["alert"] == "docker_event_gap")
        .map(|e| e["host_seq"].as_u64())
        .collect();
    assert_eq!(reports, [1, 2, 3, 4].map(Some), "{evs:#?}");
    let c1 = evs
        .iter()
        .find(|e| e["kind"] == "docker_container")
        .unwrap();
    let user = c1["user"].as_str().unwrap();
    assert!(
        user.len() <= 256 && user.starts_with("dave\u{fffd}x"),
        "{user:?}"
    );
    let gap = evs.iter().find(|e| e["host_seq"] == 2).unwrap();
    assert_eq!(gap["alert"], "docker_event_gap", "{gap:#?}");
    assert!(
        gap["details"]
            .as_str()
            .unwrap()
            .contains("report 2 was refused"),
        "{gap:#?}"
    );
    for id in ["c1", "c2"] {
        assert!(
            evs.iter()
                .any(|e| e["alert"] == "unauthorized_privileged" && e["container_id"] == id),
            "{id}: {evs:#?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_under_a_remote_hosts_running_container_raises_a_stale_grant_naming_it() {
    let (s, mut admin) = common::TestServer::start_admin().await;
    let t = admin
        .admin
        .create_token(common::token("host-b", pb::Role::Watcher))
        .await
        .unwrap()
        .into_inner();
    let grant = admin
        .admin
        .issue_grant(common::grant_req(
            common::user("alice"),
            common::spec(pb::SocketAccess::Raw, pb::SocketMode::Rw, false),
        ))
        .await
        .unwrap()
        .into_inner();
    let mut w = s.client(Some(&t.secret)).await;
    let id = "b0b0".repeat(16);
    w.admin
        .record_host_events(pb::RecordHostEventsRequest {
            host_id: "host-b".into(),
            events: vec![pb::HostEvent {
                number: 1,
                what: Some(pb::host_event::What::Reconciled(pb::ContainerFacts {
                    id: id.clone(),
                    name: "/jupyter-alice".into(),
                    image: "busybox".into(),
                    labels: [("privledger.user".to_string(), "alice".to_string())].into(),
                    mounts: vec![pb::Mount {
                        source: "/var/run/docker.sock".into(),
                        destination: "/var/run/docker.sock".into(),
                        rw: true,
                    }],
                    privileged: false,
                    running: true,
                })),
                facts: None,
            }],
        })
        .await
        .expect("reconciled report");
    admin
        .admin
        .revoke_grant(common::revoke(grant.id, "left the project"))
        .await
        .unwrap();
    let evs = common::entries_until(&mut admin, &id, |evs| {
        evs.iter().any(|e| e["alert"] == "stale_grant")
    })
    .await;
    let alert = evs.iter().find(|e| e["alert"] == "stale_grant").unwrap();
    assert_eq!(alert["host"], "host-b", "{alert}");
    assert!(alert["details"]
        .as_str()
        .unwrap()
        .contains("on host host-b"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_outbox_for_a_known_host_resumes_its_numbers_and_reports_the_gap() {
    let (s, mut admin) = common::TestServer::start_admin().await;
    let tmp = tempfile::tempdir().unwrap();
    let token = watcher_token(&mut admin, "host-c", tmp.path()).await;
    let secret = std::fs::read_to_string(&token).unwrap();
    let mut w = s.client(Some(secret.trim())).await;
    // An earlier outbox reported 1..=3.
    let events = (1..=3)
        .map(|n| pb::HostEvent {
            number: n,
            what: Some(pb::host_event::What::Event(pb::DockerEvent {
                r#type: "container".into(),
                action: "create".into(),
                id: format!("{n:064}"),
                time_nano: n as i64,
                attributes: Default::default(),
            })),
            facts: None,
        })
        .collect();
    w.admin
        .record_host_events(pb::RecordHostEventsRequest {
            host_id: "host-c".into(),
            events,
        })
        .await
        .unwrap();
    // A new agent on an empty data directory (no Docker needed for this).
    let log = tmp.path().join("agent.log");
    let mut cmd_agent = Agent::start(&s.url, &token, "host-c", &tmp.path().join("fresh"), &log);
    let evs = until_reported(
        &mut admin,
        "host-c",
        "the new outbox's gap report",
        &log,
        |evs| evs.iter().any(|e| e["alert"] == "docker_event_gap"),
    )
    .await;
    let gap = evs
        .iter()
        .find(|e| e["alert"] == "docker_event_gap")
        .unwrap();
    assert_eq!(gap["host_seq"], 4, "{gap}");
    cmd_agent.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_loses_nothing_while_the_ledger_is_down_and_reports_nothing_twice_after_a_kill() {
    if !common::docker_available() {
        return;
    }
    common::ensure_test_image();
    let tmp = tempfile::tempdir().unwrap();
    let data = private_dir(&tmp.path().join("ledger"));
    let port = common::free_port();
    let listen = format!("127.0.0.1:{port}");
    // The agent needs the ledger back at the same address after a restart.
    let serve = |data: &Path| {
        let mut c = std::process::Command::new(common::binary());
        c.arg("serve").arg("--data").arg(data).args([
            "--listen",
            listen.as_str(),
            "--docker",
            "off",
        ]);
        c
    };
    let ledger_log = tmp.path().join("ledger.log");
    let ledger = ServeProcess::spawn(serve(&data), &data, &ledger_log, "").await;
    let mut admin = ledger.admin().await;
    let host = "docker-host-1";
    let token = watcher_token(&mut admin, host, tmp.path()).await;
    let agent_data = tmp.path().join("agent");
    let agent_log = tmp.path().join("agent.log");
    let mut agent = Agent::start(&ledger.url, &token, host, &agent_data, &agent_log);

    // Alerts from the remote host name it: a socket mount no decision vouches for.
    let names = Containers::new("agent");
    let rogue = names.name("rogue");
    let rogue_id = common::docker(&[
        "create",
        "--name",
        &rogue,
        "-v",
        "/var/run/docker.sock:/var/run/docker.sock",
        TEST_IMAGE,
    ]);
    let evs = until_reported(
        &mut admin,
        host,
        "the rogue container's alert",
        &agent_log,
        |evs| {
            evs.iter()
                .any(|e| e["kind"] == "alert" && e["container_id"] == rogue_id.as_str())
        },
    )
    .await;
    let alert = evs
        .iter()
        .find(|e| e["kind"] == "alert" && e["container_id"] == rogue_id.as_str())
        .unwrap();
    assert_eq!(alert["alert"], "unauthorized_socket_mount", "{alert}");
    assert_eq!(alert["host"], host);
    common::docker(&["rm", "-f", &rogue]);

    // The ledger goes away; 300 containers come and go meanwhile.
    let (cfg_data, ledger_log_path) = (ledger.data.clone(), ledger.log.clone());
    ledger.terminate().await;
    let ids = churn(&names, "down", 300);
    // The agent kept draining the daemon: everything waits in its outbox.
    // The ledger comes back on the same address.
    let ledger = ServeProcess::spawn(serve(&cfg_data), &cfg_data, &ledger_log_path, "").await;
    let mut admin = ledger.admin().await;
    let evs = until_reported(
        &mut admin,
        host,
        "every event of the 300 containers",
        &agent_log,
        |evs| {
            let c = counts(evs);
            ids.iter().all(|id| {
                c.contains_key(&(id.clone(), "create".into()))
                    && c.contains_key(&(id.clone(), "destroy".into()))
            })
        },
    )
    .await;
    assert!(
        !evs.iter().any(|e| e["alert"] == "docker_event_gap"),
        "a gap was reported: {}",
        agent.log()
    );

    // kill -9 of the agent in the middle of a burst, and a restart: nothing twice.
    let more = std::thread::spawn({
        let prefix = names.prefix.clone();
        move || churn_named(&prefix, "burst", 60)
    });
    // Let the burst begin, then kill.
    until_reported(
        &mut admin,
        host,
        "the burst's first container",
        &agent_log,
        |evs| {
            evs.iter()
                .any(|e| e["name"].as_str().is_some_and(|n| n.contains("-burst-")))
        },
    )
    .await;
    agent.kill();
    let burst_ids = more.join().unwrap();
    let mut agent = Agent::start(&ledger.url, &token, host, &agent_data, &agent_log);
    let evs = until_reported(
        &mut admin,
        host,
        "every event of the burst",
        &agent_log,
        |evs| {
            let c = counts(evs);
            burst_ids.iter().all(|id| {
                c.contains_key(&(id.clone(), "create".into()))
                    && c.contains_key(&(id.clone(), "destroy".into()))
            })
        },
    )
    .await;
    for ((id, action), n) in counts(&evs) {
        if action == "reconciled" {
            continue;
        }
        assert_eq!(n, 1, "{id} {action} recorded {n} times");
    }
    // Dense numbers, each once.
    let mut numbers: Vec<u64> = evs.iter().filter_map(|e| e["host_seq"].as_u64()).collect();
    let n = numbers.len();
    numbers.sort_unstable();
    numbers.dedup();
    assert_eq!(numbers.len(), n, "a number was recorded twice");
    assert_eq!(
        numbers,
        (1..=n as u64).collect::<Vec<_>>(),
        "numbers are not dense"
    );
    let v = common::verify_all(&mut admin).await;
    assert!(v.ok, "{v:?}");
    agent.kill();
}

/// Creates and removes `n` containers (four at a time); returns their ids.
fn churn(names: &Containers, tag: &str, n: usize) -> Vec<String> {
    for i in 0..n {
        names.name(&format!("{tag}-{i}"));
    }
    churn_named(&names.prefix, tag, n)
}

fn churn_named(prefix: &str, tag: &str, n: usize) -> Vec<String> {
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let prefix = prefix.to_string();
            let tag = tag.to_string();
            std::thread::spawn(move || {
                let mut ids = Vec::new();
                for i in (w..n).step_by(4) {
                    let name = format!("{prefix}-{tag}-{i}");
                    let id = common::docker(&["create", "--name", &name, TEST_IMAGE]);
                    common::docker(&["rm", &name]);
                    ids.push(id);
                }
                ids
            })
        })
        .collect();
    workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect()
}
