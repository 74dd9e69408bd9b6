//! DESIGN §6, the limited socket, against the real daemon with the real docker CLI
//! pointed at two users' sockets: isolation, quotas, refused host escapes, raw
//! bypass attempts, upgrades, the record, and revocation. Skips with a printed reason
//! when no daemon answers, unless `PRIVLEDGER_REQUIRE_DOCKER=1`.

mod common;

use std::path::Path;
use std::process::Stdio;

use common::proxy_rig::*;
use common::*;
use privledger::pb;
use tokio::io::AsyncWriteExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_users_each_see_and_touch_only_their_own() {
    let Some(mut r) = Rig::start().await else {
        return;
    };
    let (alice, bob) = (r.user("alice"), r.user("bob"));
    r.grant_limited(&alice, limits(3, 2, 1)).await;
    r.grant_limited(&bob, limits(3, 2, 1)).await;
    let a = r.spawn(&alice).await;
    let b = r.spawn(&bob).await;

    // Attached run, detached run, ps, logs, exec -i with half-close, inspect, stop, rm.
    let (ok, out, err) = as_user(&a, &["run", "--rm", TEST_IMAGE, "echo", "hello"], None).await;
    assert!(ok && out == "hello", "{out} {err}");
    let web = format!("web-{}", r.tag);
    let id = must(
        &a,
        &["run", "-d", "--name", &web, TEST_IMAGE, "sleep", "300"],
    )
    .await;
    assert_eq!(must(&a, &["ps", "-q", "--no-trunc"]).await, id);
    // Another user's container, or nothing at all, is the daemon's "No such object";
    // `docker info` works and says nothing of the host's name or everyone's counts.
    for name in [web.as_str(), "nothing-here"] {
        let (ok, _, err) = as_user(&b, &["inspect", name], None).await;
        assert!(
            !ok && err.contains("No such object"),
            "inspect {name}: {err}"
        );
    }
    let info = must(&a, &["info", "--format", "{{json .}}"]).await;
    let info: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(info["OSType"], "linux", "{info}");
    assert!(info["Name"].as_str().unwrap_or("").is_empty(), "{info}");
    assert_eq!(info["Swarm"]["LocalNodeState"], "inactive");
    let (ok, out, err) = as_user(&a, &["exec", "-i", &web, "cat"], Some("hi\n")).await;
    assert!(ok && out == "hi", "exec -i: {out:?} {err}");
    must(&a, &["logs", &web]).await;
    assert!(must(
        &a,
        &["container", "inspect", "-f", "{{.Config.Labels}}", &web]
    )
    .await
    .contains(&alice));
    let limited_mem = must(
        &a,
        &["container", "inspect", "-f", "{{.HostConfig.Memory}}", &web],
    )
    .await;
    assert_eq!(
        limited_mem,
        (8u64 << 30).to_string(),
        "the memory cap was injected"
    );

    // Bob sees nothing of alice's, by name, id or prefix, and cannot reach it.
    assert_eq!(must(&b, &["ps", "-aq"]).await, "");
    for name in [web.as_str(), id.as_str(), &id[..12]] {
        refused(&b, &["container", "inspect", name], "No such container").await;
        refused(&b, &["stop", name], "No such container").await;
        refused(&b, &["exec", name, "true"], "No such container").await;
    }
    let peer = format!("container:{web}");
    for flags in [
        ["--volumes-from", &web],
        ["--network", &peer],
        ["--pid", &peer],
    ] {
        let mut args = vec!["run", "--rm"];
        args.extend(flags);
        args.extend([TEST_IMAGE, "true"]);
        refused(&b, &args, "of yours").await;
    }

    // Volumes and networks: created, listed, mounted by the owner only.
    let vol = format!("data-{}", r.tag);
    must(&a, &["volume", "create", &vol]).await;
    assert_eq!(must(&a, &["volume", "ls", "-q"]).await, vol);
    assert_eq!(must(&b, &["volume", "ls", "-q"]).await, "");
    let (ok, out, err) = as_user(
        &a,
        &[
            "run",
            "--rm",
            "-v",
            &format!("{vol}:/d"),
            TEST_IMAGE,
            "sh",
            "-c",
            "echo x > /d/f && cat /d/f",
        ],
        None,
    )
    .await;
    assert!(ok && out == "x", "{out} {err}");
    refused(
        &b,
        &[
            "run",
            "--rm",
            "-v",
            &format!("{vol}:/d"),
            TEST_IMAGE,
            "true",
        ],
        "not yours",
    )
    .await;
    refused(&b, &["volume", "rm", &vol], "No such volume").await;
    let net = format!("net-{}", r.tag);
    must(&a, &["network", "create", &net]).await;
    assert!(must(&a, &["network", "ls", "-q"]).await.lines().count() == 1);
    refused(&b, &["network", "rm", &net], "No such network").await;
    refused(
        &b,
        &["run", "--rm", "--network", &net, TEST_IMAGE, "true"],
        "of yours",
    )
    .await;

    must(&a, &["stop", "-t", "1", &web]).await;
    must(&a, &["rm", &web]).await;
    must(&a, &["volume", "rm", &vol]).await;
    must(&a, &["network", "rm", &net]).await;

    // The record: every mutating call and every refusal, and the chain verifies.
    let (entries, _) = stream_all(&mut r.c).await;
    let calls: Vec<serde_json::Value> = entries
        .iter()
        .filter(|e| e.kind == "proxy_call")
        .map(|e| serde_json::from_slice::<serde_json::Value>(&e.body).unwrap()["event"].clone())
        .collect();
    let forwarded = |u: &str, p: &str| {
        calls.iter().any(|c| {
            c["user"] == u
                && c["outcome"] == "forwarded"
                && c["path"].as_str().unwrap().ends_with(p)
        })
    };
    assert!(forwarded(&alice, "/containers/create"));
    assert!(forwarded(&alice, "/start"));
    assert!(forwarded(&alice, "/volumes/create"));
    assert!(calls
        .iter()
        .any(|c| c["user"] == bob.as_str() && c["outcome"] == "refused"));
    // Reaching for another user's container is a refusal on the record too.
    assert!(calls.iter().any(|c| c["user"] == bob.as_str()
        && c["outcome"] == "refused"
        && c["path"].as_str().unwrap().ends_with("/stop")));
    assert!(verify_all(&mut r.c).await.ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_hold_under_parallel_creates_and_escapes_are_refused() {
    let Some(mut r) = Rig::start().await else {
        return;
    };
    let carol = r.user("carol");
    r.grant_limited(&carol, limits(2, 1, 1)).await;
    let sock = r.spawn(&carol).await;
    let mut creates = tokio::task::JoinSet::new();
    for i in 0..6 {
        let sock = sock.clone();
        let name = format!("q{i}-{}", r.tag);
        creates.spawn(async move {
            as_user(
                &sock,
                &["create", "--name", &name, TEST_IMAGE, "true"],
                None,
            )
            .await
        });
    }
    let results = creates.join_all().await;
    let made = results.iter().filter(|(ok, _, _)| *ok).count();
    assert_eq!(made, 2, "{results:?}");
    assert!(
        results.iter().any(|(_, _, e)| e.contains("quota")),
        "{results:?}"
    );
    must(&sock, &["volume", "create", &format!("v1-{}", r.tag)]).await;
    let v2 = format!("v2-{}", r.tag);
    refused(&sock, &["volume", "create", &v2], "quota").await;

    for (args, why) in [
        (vec!["--privileged"], "Privileged"),
        (vec!["-v", "/:/host"], "Binds"),
        (vec!["--mount", "type=bind,source=/etc,target=/h"], "Mounts"),
        (vec!["--cap-add", "SYS_ADMIN"], "CapAdd"),
        (vec!["--network", "host"], "NetworkMode"),
        (vec!["--pid", "host"], "PidMode"),
        (vec!["--ipc", "host"], "IpcMode"),
        (vec!["--uts", "host"], "UTSMode"),
        (vec!["--userns", "host"], "UsernsMode"),
        (vec!["--security-opt", "seccomp=unconfined"], "SecurityOpt"),
        (vec!["--security-opt", "apparmor=unconfined"], "SecurityOpt"),
        (vec!["--device", "/dev/null:/dev/x"], "Devices"),
        (vec!["--cgroup-parent", "/"], "CgroupParent"),
        (vec!["--sysctl", "net.ipv4.ip_forward=1"], "Sysctls"),
        (vec!["--memory", "64g"], "memory cap"),
        (vec!["--cpus", "64"], "cpu cap"),
        (vec!["--label", "privledger.owner=someone"], "Labels"),
    ] {
        let mut a = vec!["create"];
        a.extend(args.iter().copied());
        a.push(TEST_IMAGE);
        refused(&sock, &a, why).await;
    }
    refused(
        &sock,
        &[
            "volume",
            "create",
            "--opt",
            "o=bind",
            "--opt",
            "device=/",
            "--opt",
            "type=none",
            &v2,
        ],
        "DriverOpts",
    )
    .await;
    refused(
        &sock,
        &["network", "create", "--driver", "macvlan", &v2],
        "Driver",
    )
    .await;
    let n1 = format!("n1-{}", r.tag);
    must(&sock, &["network", "create", &n1]).await;
    refused(
        &sock,
        &["network", "create", &format!("n2-{}", r.tag)],
        "quota",
    )
    .await;
    refused(&sock, &["plugin", "ls"], "not on the limited socket's list").await;
    refused(&sock, &["system", "df"], "not on the limited socket's list").await;

    // Raw requests: version variants, case folds, duplicates, smuggled paths.
    let (code, body) = raw(&sock, "GET", "/v1.41.0/containers/json?all=1", None).await;
    assert_eq!(code, 200, "{body}");
    let listed: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2, "only carol's two");
    for (method, path, body) in [
        (
            "POST",
            "/v1.41/containers/create",
            Some(r#"{"Image":"x","hostconfig":{"Privileged":true}}"#),
        ),
        (
            "POST",
            "/containers/create",
            Some(r#"{"Image":"x","HostConfig":{"privileged":true}}"#),
        ),
        (
            "POST",
            "/containers/create",
            Some("{\"Image\":\"x\",\"HostConfig\":{\"Privıleged\":true}}"),
        ),
        (
            "POST",
            "/containers/create",
            Some(r#"{"Image":"x","HostConfig":{"Privileged":false,"Privileged":true}}"#),
        ),
        (
            "POST",
            "/containers/create",
            Some(r#"{"Image":"x","HostConfig":{"Binds":["/:/h"]}}"#),
        ),
        ("GET", "/containers/%2e%2e/info", None),
        ("GET", "/containers%2fjson", None),
        ("GET", "/v1.41//containers/json", None),
        ("GET", "/v1..41/containers/json", None),
        ("GET", "/v1/containers/json", None),
        ("GET", "/system/df", None),
        ("POST", "/session", None),
        (
            "GET",
            "/containers/json?filters=%7B%7D&filters=%7B%7D",
            None,
        ),
    ] {
        let (code, body) = raw(&sock, method, path, body).await;
        assert_eq!(code, 403, "{method} {path}: {body}");
        assert!(body.contains("\"message\""), "{body}");
    }
    // Chunked bodies are read whole and checked like any other.
    let out = tokio::process::Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}", "--unix-socket"])
        .arg(&sock)
        .args([
            "-H",
            "Transfer-Encoding: chunked",
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            r#"{"Image":"x","HostConfig":{"Privileged":true}}"#,
        ])
        .arg("http://docker/containers/create")
        .output()
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).ends_with("403"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_the_grant_ends_the_socket_and_a_restart_restores_the_others() {
    let Some(mut r) = Rig::start().await else {
        return;
    };
    let (dave, erin) = (r.user("dave"), r.user("erin"));
    let g = r.grant_limited(&dave, limits(2, 1, 1)).await;
    r.grant_limited(&erin, limits(2, 1, 1)).await;
    let d = r.spawn(&dave).await;
    let e = r.spawn(&erin).await;
    must(&d, &["ps"]).await;
    ok(r.c.admin.revoke_grant(revoke(g, "left"))).await;
    // At once, every call is refused (access is checked per call); the socket goes.
    let (ok_after, _, err) = as_user(&d, &["ps"], None).await;
    assert!(!ok_after, "{err}");
    let Rig {
        s, users, _cleanup, ..
    } = r;
    let s = s.restart().await;
    wait_watching(&s).await;
    assert!(
        std::os::unix::net::UnixStream::connect(&e).is_ok(),
        "erin's socket is restored"
    );
    assert!(
        std::os::unix::net::UnixStream::connect(&d).is_err(),
        "dave's is not"
    );
    drop(users);
}

/// `docker ARGS` under a pseudo-terminal (`script`), as `-t` needs: (exit code, output).
async fn in_pty(sock: &Path, args: &str) -> (i32, String) {
    let out = tokio::process::Command::new("script")
        .args(["-qec", &format!("docker {args}"), "/dev/null"])
        .env("DOCKER_HOST", format!("unix://{}", sock.display()))
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).replace('\r', ""),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminals_dangerous_grants_and_stale_proxy_containers() {
    let Some(mut r) = Rig::start().await else {
        return;
    };
    let frank = r.user("frank");
    let g = r
        .grant_limited(
            &frank,
            pb::Limits {
                allow_dangerous_flags: Some(true),
                ..limits(4, 1, 1)
            },
        )
        .await;
    let sock = r.spawn(&frank).await;

    // `docker run -it` and `docker exec -it`: a terminal through the upgrade.
    let (code, out) = in_pty(
        &sock,
        &format!("run --rm -it {TEST_IMAGE} sh -c 'tty; exit 3'"),
    )
    .await;
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("/dev/pts/"), "{out}");
    let name = format!("t-{}", r.tag);
    let id = must(
        &sock,
        &["run", "-d", "--name", &name, TEST_IMAGE, "sleep", "300"],
    )
    .await;
    let (code, out) = in_pty(&sock, &format!("exec -it {name} sh -c 'tty; exit 4'")).await;
    assert_eq!(code, 4, "{out}");
    assert!(out.contains("/dev/pts/"), "{out}");

    // A grant that allows dangerous flags allows host binds, but privileged still
    // needs privileged access.
    let h = format!("h-{}", r.tag);
    must(
        &sock,
        &[
            "create",
            "--name",
            &h,
            "-v",
            "/tmp:/h:ro",
            "--cap-add",
            "NET_ADMIN",
            TEST_IMAGE,
        ],
    )
    .await;
    refused(&sock, &["create", "--privileged", TEST_IMAGE], "Privileged").await;

    // The watcher counts the container as frank's; when his access ends it is stale.
    let seen = entries_until(&mut r.c, &id, |es| {
        es.iter().any(|e| e["action"] == "start")
    })
    .await;
    assert!(
        seen.iter().any(|e| e["user"] == frank.as_str()),
        "{seen:#?}"
    );
    assert!(
        !seen.iter().any(|e| e["kind"] == "alert"),
        "created through his socket: no unauthorized alert"
    );
    ok(r.c.admin.revoke_grant(revoke(g, "course over"))).await;
    let after = entries_until(&mut r.c, &id, |es| {
        es.iter().any(|e| e["alert"] == "stale_grant")
    })
    .await;
    let stale = after.iter().find(|e| e["alert"] == "stale_grant").unwrap();
    assert!(
        stale["details"]
            .as_str()
            .unwrap()
            .contains("limited Docker socket"),
        "{stale}"
    );
}

/// Issue 23, finding 1 and 9: a name in a body is resolved once and forwarded as
/// the id it resolved to; names that read as ids or as another user's server are
/// not given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_are_forwarded_as_ids_and_cannot_be_squatted() {
    let Some(mut r) = Rig::start().await else {
        return;
    };
    let (mallory, bob) = (r.user("mallory"), r.user("bob"));
    r.grant_limited(&mallory, limits(4, 2, 2)).await;
    r.grant_limited(&bob, limits(4, 2, 2)).await;
    let m = r.spawn(&mallory).await;
    let b = r.spawn(&bob).await;
    let victim = must(
        &b,
        &[
            "create",
            "--name",
            &format!("b-{}", r.tag),
            TEST_IMAGE,
            "true",
        ],
    )
    .await;
    let mine = format!("m-{}", r.tag);
    let mine_id = must(&m, &["create", "--name", &mine, TEST_IMAGE, "true"]).await;

    // Renames that would make a name read as the victim's id, or as their server.
    refused(
        &m,
        &["rename", &mine, &victim[..12]],
        "could be taken for a container id",
    )
    .await;
    refused(
        &m,
        &["rename", &mine, &victim],
        "could be taken for a container id",
    )
    .await;
    refused(
        &m,
        &[
            "rename",
            &mine,
            &format!("jupyter-{}", bob.replace('-', "-2D")),
        ],
        "JupyterHub",
    )
    .await;
    refused(
        &m,
        &["create", "--name", &victim[..12], TEST_IMAGE],
        "container id",
    )
    .await;

    // What a body names is forwarded as the id it resolved to.
    let made = must(
        &m,
        &[
            "create",
            "--volumes-from",
            &format!("{mine}:ro"),
            "--pid",
            &format!("container:{mine}"),
            "--ipc",
            &format!("container:{mine}"),
            TEST_IMAGE,
            "true",
        ],
    )
    .await;
    let h = docker(&["inspect", "--format", "{{json .HostConfig}}", &made]);
    let h: serde_json::Value = serde_json::from_str(&h).unwrap();
    assert_eq!(
        h["VolumesFrom"],
        serde_json::json!([format!("{mine_id}:ro")]),
        "{h}"
    );
    assert_eq!(h["PidMode"], format!("container:{mine_id}"));
    assert_eq!(h["IpcMode"], format!("container:{mine_id}"));

    // The victim's container by its short id, in every place a body names one.
    for args in [
        vec!["--volumes-from", &victim[..12]],
        vec!["--pid", &format!("container:{}", &victim[..12])],
        vec!["--ipc", &format!("container:{}", &victim[..12])],
        vec!["--network", &format!("container:{}", &victim[..12])],
        vec!["--link", &format!("{}:db", &victim[..12])],
    ] {
        let args: Vec<String> = args.into_iter().map(String::from).collect();
        let mut a = vec!["create"];
        a.extend(args.iter().map(String::as_str));
        a.push(TEST_IMAGE);
        refused(&m, &a, "ownership").await;
    }
    let net = format!("mn-{}", r.tag);
    must(&m, &["network", "create", &net]).await;
    refused(
        &m,
        &["network", "connect", &net, &victim[..12]],
        "ownership",
    )
    .await;
    // Her own, by name, work as they would on the raw socket: forwarded as ids.
    let linked = must(
        &m,
        &[
            "create",
            "--link",
            &format!("{mine}:db"),
            TEST_IMAGE,
            "true",
        ],
    )
    .await;
    let links = docker(&["inspect", "--format", "{{json .HostConfig.Links}}", &linked]);
    assert!(links.contains("/db"), "{links}");
    let on_net = must(
        &m,
        &[
            "create",
            "--network",
            &net,
            "--network-alias",
            "web",
            TEST_IMAGE,
            "true",
        ],
    )
    .await;
    let nets = docker(&[
        "inspect",
        "--format",
        "{{json .NetworkSettings.Networks}}",
        &on_net,
    ]);
    assert!(nets.contains(&net) && nets.contains("\"web\""), "{nets}");
    for c in [&linked, &on_net, &made] {
        must(&m, &["rm", c]).await;
    }
    refused(
        &m,
        &["network", "create", "abcdef0123456789"],
        "could be taken for an id",
    )
    .await;
    must(&m, &["network", "rm", &net]).await;
}

/// Issue 23, findings 2, 3 and 6: logging drivers, IPAM and unbounded fields.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_reaches_the_host_through_logging_ipam_or_unbounded_fields() {
    let Some(mut r) = Rig::start().await else {
        return;
    };
    let eve = r.user("eve");
    r.grant_limited(&eve, limits(4, 2, 2)).await;
    let e = r.spawn(&eve).await;
    // A listener on the host's loopback, which no container can reach.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    for (args, why) in [
        (
            vec![
                "--log-driver".to_string(),
                "syslog".into(),
                "--log-opt".into(),
                format!("syslog-address=tcp://127.0.0.1:{port}"),
            ],
            "LogConfig.Type",
        ),
        (
            vec![
                "--log-driver".to_string(),
                "syslog".into(),
                "--log-opt".into(),
                "syslog-address=unixgram:///dev/log".into(),
            ],
            "LogConfig.Type",
        ),
        (
            vec![
                "--log-driver".to_string(),
                "splunk".into(),
                "--log-opt".into(),
                format!("splunk-url=http://127.0.0.1:{port}"),
                "--log-opt".into(),
                "splunk-token=x".into(),
            ],
            "LogConfig.Type",
        ),
        (
            vec![
                "--log-driver".to_string(),
                "gelf".into(),
                "--log-opt".into(),
                format!("gelf-address=udp://127.0.0.1:{port}"),
            ],
            "LogConfig.Type",
        ),
        (
            vec!["--log-opt".to_string(), "max-size=10g".into()],
            "LogConfig",
        ),
        (vec!["--pids-limit".to_string(), "-1".into()], "PidsLimit"),
        (
            vec!["--oom-score-adj".to_string(), "-1000".into()],
            "OomScoreAdj",
        ),
        (
            vec!["--ulimit".to_string(), "memlock=-1:-1".into()],
            "Ulimits",
        ),
        (vec!["--shm-size".to_string(), "1t".into()], "ShmSize"),
        (
            vec!["--cpu-rt-runtime".to_string(), "950000".into()],
            "CpuRealtimeRuntime",
        ),
        (
            vec!["--device-read-bps".to_string(), "/dev/sda:1mb".into()],
            "BlkioDeviceReadBps",
        ),
        (vec!["-p".to_string(), "8080:80".into()], "PortBindings"),
        (
            vec!["-p".to_string(), "127.0.0.1:8080:80".into()],
            "PortBindings",
        ),
        (vec!["-P".to_string()], "PublishAllPorts"),
        (vec!["--dns".to_string(), "127.0.0.53".into()], "Dns"),
        (vec!["--oom-kill-disable".to_string()], "OomKillDisable"),
        (
            vec!["--cgroupns".to_string(), "host".into()],
            "CgroupnsMode",
        ),
    ] {
        let mut a = vec!["create"];
        a.extend(args.iter().map(String::as_str));
        a.push(TEST_IMAGE);
        refused(&e, &a, why).await;
    }
    for (args, why) in [
        (
            vec!["network", "create", "--subnet", "10.231.7.0/24"],
            "IPAM",
        ),
        (
            vec![
                "network",
                "create",
                "--gateway",
                "10.231.7.1",
                "--subnet",
                "10.231.7.0/24",
            ],
            "IPAM",
        ),
        (vec!["network", "create", "--ipam-driver", "dhcp"], "IPAM"),
        (vec!["network", "create", "--ipv6"], "EnableIPv6"),
        (
            vec![
                "network",
                "create",
                "-o",
                "com.docker.network.bridge.name=eth0",
            ],
            "Options",
        ),
    ] {
        let mut a = args.clone();
        let name = format!("n-{}", r.tag);
        a.push(&name);
        refused(&e, &a, why).await;
    }
    match listener.accept() {
        Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the daemon connected to the host's loopback: {other:?}"),
    }
    // Each refusal names its rule on the record, with who made the call.
    let calls = proxy_calls(&mut r).await;
    let refusals: Vec<_> = calls
        .iter()
        .filter(|c| c["user"] == eve.as_str() && c["outcome"] == "refused")
        .collect();
    assert!(refusals.len() >= 22, "{}", refusals.len());
    let me = rustix::process::geteuid().as_raw();
    assert!(
        refusals
            .iter()
            .all(|c| c["peer"]["uid"] == me && c["peer"]["pid"].as_i64().is_some()),
        "{refusals:?}"
    );
    assert!(refusals.iter().any(|c| c["reason"]
        .as_str()
        .unwrap()
        .contains("(HostConfig.LogConfig.Type)")));
}

/// Issue 23, finding 4: anonymous volumes count against the quota, the image's
/// own included, and leave with their container.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_volumes_count_and_leave_with_their_container() {
    let Some(mut r) = Rig::start().await else {
        return;
    };
    let fay = r.user("fay");
    r.grant_limited(&fay, limits(5, 2, 1)).await;
    let f = r.spawn(&fay).await;
    refused(
        &f,
        &[
            "create", "-v", "/a", "-v", "/b", "-v", "/c", TEST_IMAGE, "true",
        ],
        "quota",
    )
    .await;
    refused(
        &f,
        &[
            "create",
            "--mount",
            "type=volume,target=/a",
            "-v",
            "/b",
            "-v",
            "/c",
            TEST_IMAGE,
        ],
        "quota",
    )
    .await;
    let c1 = must(&f, &["create", "-v", "/a", TEST_IMAGE, "true"]).await;
    let anon = docker(&[
        "inspect",
        "--format",
        "{{range .Mounts}}{{.Name}}{{end}}",
        &c1,
    ]);
    assert_eq!(anon.len(), 64, "{anon}");
    must(&f, &["volume", "create", &format!("v1-{}", r.tag)]).await;
    refused(
        &f,
        &["volume", "create", &format!("v2-{}", r.tag)],
        "anonymous",
    )
    .await;
    // An image that declares a VOLUME: created, found over the quota, removed.
    let image = "privledger-test-volume:latest";
    if std::process::Command::new("docker")
        .args(["image", "inspect", image])
        .output()
        .map(|o| !o.status.success())
        .unwrap_or(true)
    {
        let ctx = tempfile::tempdir().unwrap();
        std::fs::write(
            ctx.path().join("Dockerfile"),
            format!("FROM {TEST_IMAGE}\nVOLUME /data\n"),
        )
        .unwrap();
        docker(&[
            "build",
            "-q",
            "-t",
            image,
            &ctx.path().display().to_string(),
        ]);
    }
    refused(&f, &["create", image, "true"], "anonymous volumes").await;
    let left = must(&f, &["ps", "-aq"]).await;
    assert_eq!(
        left.lines().count(),
        1,
        "the refused container was removed: {left}"
    );
    // `docker rm` without -v: its anonymous volume goes with it.
    must(&f, &["rm", &c1]).await;
    let vols = docker(&["volume", "ls", "-q"]);
    assert!(!vols.lines().any(|v| v == anon), "{anon} was left behind");
    // `docker container prune` too: no orphan escapes the count.
    let c2 = must(&f, &["create", "-v", "/b", TEST_IMAGE, "true"]).await;
    let anon2 = docker(&[
        "inspect",
        "--format",
        "{{range .Mounts}}{{.Name}}{{end}}",
        &c2,
    ]);
    must(&f, &["container", "prune", "-f"]).await;
    let vols = docker(&["volume", "ls", "-q"]);
    assert!(
        !vols.lines().any(|v| v == anon2),
        "{anon2} was left behind by prune"
    );
    must(&f, &["volume", "create", &format!("v2-{}", r.tag)]).await;
}

/// Issue 23, finding 5: the caller is who the socket says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_host_account_is_not_the_user() {
    let Some(mut r) = Rig::start().await else {
        return;
    };
    if rustix::process::geteuid().as_raw() != 0 || !Path::new("/usr/bin/setpriv").exists() {
        println!("skipped: needs root and setpriv to act as another account");
        return;
    }
    let gus = r.user("gus");
    r.grant_limited(&gus, limits(2, 1, 1)).await;
    let g = r.spawn(&gus).await;
    must(
        &g,
        &[
            "create",
            "--name",
            &format!("g-{}", r.tag),
            TEST_IMAGE,
            "true",
        ],
    )
    .await;
    // The documented modes let any account reach the socket's directory.
    let mut p = g.parent().unwrap().to_path_buf();
    while p != Path::new("/") {
        let mode = std::fs::metadata(&p).unwrap().permissions();
        use std::os::unix::fs::PermissionsExt;
        if mode.mode() & 0o001 == 0 {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode.mode() | 0o711))
                .unwrap();
        }
        p.pop();
    }
    let conf = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        conf.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    for args in [vec!["ps", "-a"], vec!["rm", "-f", &format!("g-{}", r.tag)]] {
        let out = tokio::process::Command::new("setpriv")
            .args([
                "--reuid",
                "65534",
                "--regid",
                "65534",
                "--clear-groups",
                "docker",
            ])
            .args(&args)
            .env("DOCKER_HOST", format!("unix://{}", g.display()))
            .env("DOCKER_CONFIG", conf.path())
            .output()
            .await
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "uid 65534 ran docker {args:?}");
        assert!(
            err.contains("(caller)") && err.contains("uid 65534"),
            "{err}"
        );
    }
    must(&g, &["inspect", &format!("g-{}", r.tag)]).await;
    let calls = proxy_calls(&mut r).await;
    assert!(calls.iter().any(|c| c["user"] == gus.as_str()
        && c["outcome"] == "refused"
        && c["peer"]["uid"] == 65534));
}

/// Issue 23, finding 7: a revocation ends what is open, and the socket says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_ends_sessions_and_streams_and_the_socket_says_why() {
    let Some(mut r) = Rig::start().await else {
        return;
    };
    let hal = r.user("hal");
    let g = r.grant_limited(&hal, limits(2, 1, 1)).await;
    let h = r.spawn(&hal).await;
    let name = format!("h-{}", r.tag);
    must(
        &h,
        &["run", "-d", "--name", &name, TEST_IMAGE, "sleep", "600"],
    )
    .await;
    let docker_as = |args: &[&str]| {
        let mut c = tokio::process::Command::new("docker");
        c.args(args)
            .env("DOCKER_HOST", format!("unix://{}", h.display()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        c.spawn().unwrap()
    };
    let mut exec = docker_as(&["exec", "-i", &name, "sh"]);
    let mut events = docker_as(&["events", "--format", "{{.Action}}"]);
    // The session works before the revocation.
    let mut stdin = exec.stdin.take().unwrap();
    stdin.write_all(b"echo alive\n").await.unwrap();
    let mut out = tokio::io::BufReader::new(exec.stdout.take().unwrap());
    let mut line = String::new();
    tokio::io::AsyncBufReadExt::read_line(&mut out, &mut line)
        .await
        .unwrap();
    assert_eq!(line.trim(), "alive");
    ok(r.c.admin.revoke_grant(revoke(g, "left the project"))).await;
    // Both end by themselves (the bound only keeps a failure from hanging).
    let bound = std::time::Duration::from_secs(20);
    tokio::time::timeout(bound, exec.wait())
        .await
        .expect("the exec session outlived the revocation")
        .unwrap();
    tokio::time::timeout(bound, events.wait())
        .await
        .expect("the events stream outlived the revocation")
        .unwrap();
    drop(stdin);
    refused(&h, &["ps"], "revoked at seq").await;
}

/// Issue 23, finding 8: updates change what they send, nothing else; shared
/// networks can be joined.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_change_only_what_they_send_and_shared_networks_can_be_joined() {
    let hub = format!("hub-{}", hex::encode(rand_bytes()));
    let shared = hub.clone();
    let Some(mut r) = Rig::start_with(move |cfg| {
        cfg.docker.proxy_settings.allow_networks = vec![shared];
        cfg.docker.proxy_settings.network_pools = vec!["10.251.0.0/16".parse().unwrap()];
    })
    .await
    else {
        return;
    };
    docker(&["network", "create", &hub]);
    struct RmNet(String);
    impl Drop for RmNet {
        fn drop(&mut self) {
            let _ = std::process::Command::new("docker")
                .args(["network", "rm", &self.0])
                .output();
        }
    }
    let _net = RmNet(hub.clone());
    let ivy = r.user("ivy");
    r.grant_limited(&ivy, limits(3, 1, 1)).await;
    let i = r.spawn(&ivy).await;
    let name = format!("i-{}", r.tag);
    must(
        &i,
        &[
            "run",
            "-d",
            "--name",
            &name,
            "-m",
            "256m",
            "--cpu-quota",
            "50000",
            TEST_IMAGE,
            "sleep",
            "600",
        ],
    )
    .await;
    let field = |f: &str| {
        docker(&[
            "inspect",
            "--format",
            &format!("{{{{.HostConfig.{f}}}}}"),
            &name,
        ])
    };
    must(&i, &["update", "--restart", "unless-stopped", &name]).await;
    assert_eq!(field("Memory"), (256u64 << 20).to_string());
    assert_eq!(field("NanoCpus"), "0");
    assert_eq!(field("CpuQuota"), "50000");
    assert_eq!(field("RestartPolicy.Name"), "unless-stopped");
    must(
        &i,
        &["update", "--memory", "200m", "--memory-swap", "400m", &name],
    )
    .await;
    assert_eq!(field("Memory"), (200u64 << 20).to_string());
    assert_eq!(field("NanoCpus"), "0", "nothing injected");
    refused(&i, &["update", "--memory", "64g", &name], "memory cap").await;
    refused(&i, &["update", "--pids-limit", "-1", &name], "PidsLimit").await;

    must(&i, &["network", "connect", &hub, &name]).await;
    must(&i, &["network", "disconnect", &hub, &name]).await;
    refused(
        &i,
        &["network", "connect", "--alias", "jupyterhub", &hub, &name],
        "Aliases",
    )
    .await;
    refused(&i, &["network", "create", &hub], "shared network").await;
    must(&i, &["create", "--network", &hub, TEST_IMAGE, "true"]).await;

    // A subnet of the user's choosing, from the operator's pools only.
    let own = format!("own-{}", r.tag);
    refused(
        &i,
        &["network", "create", "--subnet", "10.99.0.0/24", &own],
        "pools",
    )
    .await;
    must(
        &i,
        &[
            "network",
            "create",
            "--subnet",
            "10.251.3.0/24",
            "--gateway",
            "10.251.3.1",
            &own,
        ],
    )
    .await;
    must(&i, &["network", "rm", &own]).await;

    // Per grant: published ports on loopback, and the pids cap.
    let jan = r.user("jan");
    r.grant_limited(
        &jan,
        pb::Limits {
            publish: Some("loopback".into()),
            max_pids: Some(64),
            ..limits(2, 1, 1)
        },
    )
    .await;
    let j = r.spawn(&jan).await;
    let p = must(&j, &["create", "-p", "18080:80", TEST_IMAGE, "true"]).await;
    let bound = docker(&[
        "inspect",
        "--format",
        "{{json .HostConfig.PortBindings}}",
        &p,
    ]);
    assert!(bound.contains("\"HostIp\":\"127.0.0.1\""), "{bound}");
    assert_eq!(
        docker(&["inspect", "--format", "{{.HostConfig.PidsLimit}}", &p]),
        "64"
    );
    refused(
        &j,
        &["create", "-p", "0.0.0.0:18081:80", TEST_IMAGE],
        "127.0.0.1 only",
    )
    .await;
    refused(
        &j,
        &["create", "--pids-limit", "65", TEST_IMAGE],
        "pids cap",
    )
    .await;
    refused(
        &i,
        &["create", "-p", "127.0.0.1:18082:80", TEST_IMAGE],
        "--publish loopback",
    )
    .await;
}

fn rand_bytes() -> [u8; 3] {
    let mut b = [0u8; 3];
    getrandom::fill(&mut b).unwrap();
    b
}

/// Issue 23, finding 1, replayed: mallory's container is named after a prefix of
/// bob's id, and renamed away while creates that name it are in flight. Whatever
/// the interleaving, what was checked (hers) is what the daemon gets: the id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rename_between_check_and_use_changes_nothing() {
    let Some(mut r) = Rig::start().await else {
        return;
    };
    let (mallory, bob) = (r.user("mallory"), r.user("bob"));
    r.grant_limited(&mallory, limits(60, 2, 1)).await;
    r.grant_limited(&bob, limits(2, 2, 1)).await;
    let m = r.spawn(&mallory).await;
    let b = r.spawn(&bob).await;
    let victim = must(&b, &["create", TEST_IMAGE, "true"]).await;
    // A prefix short enough to be a name, long enough to be unique.
    let bait = victim[..10].to_string();
    let mine = must(&m, &["create", "--name", &bait, TEST_IMAGE, "true"]).await;
    let mut made = Vec::new();
    for i in 0..50 {
        let create = {
            let (m, bait) = (m.clone(), bait.clone());
            tokio::spawn(async move {
                as_user(
                    &m,
                    &[
                        "create",
                        "--volumes-from",
                        &bait,
                        "--pid",
                        &format!("container:{bait}"),
                        TEST_IMAGE,
                        "true",
                    ],
                    None,
                )
                .await
            })
        };
        let away = format!("away{i}-{}", r.tag);
        // The rename races the create; sometimes one wins, sometimes the other.
        let rename = ["rename", bait.as_str(), away.as_str()];
        let (renamed, created) = tokio::join!(as_user(&m, &rename, None), create);
        let (ok, id, err) = created.unwrap();
        if ok {
            let h: serde_json::Value = serde_json::from_str(&docker(&[
                "inspect",
                "--format",
                "{{json .HostConfig}}",
                &id,
            ]))
            .unwrap();
            assert_eq!(
                h["VolumesFrom"],
                serde_json::json!([mine.clone()]),
                "round {i}: {h}"
            );
            assert_eq!(h["PidMode"], format!("container:{mine}"), "round {i}");
            made.push(id);
        } else {
            assert!(
                err.contains("ownership") || err.contains("No such"),
                "round {i}: {err}"
            );
        }
        if renamed.0 {
            must(&m, &["rename", &away, &bait]).await;
        }
        if made.len() > 40 {
            for id in made.drain(..) {
                must(&m, &["rm", &id]).await;
            }
        }
    }
    let victims_users = docker(&["ps", "-a", "--filter", &format!("volume={victim}"), "-q"]);
    assert!(victims_users.is_empty(), "{victims_users}");
}

/// Issue 23, finding 5: a process in the user's own container is the user; one in
/// another user's container is not, whatever socket it reaches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_in_the_users_container_is_the_user_and_in_anothers_is_not() {
    let Some(mut r) = Rig::start().await else {
        return;
    };
    let (jo, kim) = (r.user("jo"), r.user("kim"));
    r.grant_limited(&jo, limits(2, 1, 1)).await;
    r.grant_limited(&kim, limits(2, 1, 1)).await;
    let (j, decision) = r.spawn_decided(&jo).await;
    r.spawn(&kim).await;
    // As DockerSpawner would start them: labelled by the hook; curl from the host's
    // tree (chroot), so the process runs in the container's cgroup.
    let ping = |label_user: &str| {
        let sock = j.display().to_string();
        let user_label = format!("privledger.user={label_user}");
        let decision_label = format!("privledger.decision={decision}");
        let out = std::process::Command::new("docker")
            .args([
                "run",
                "--rm",
                "-v",
                "/:/host:ro",
                "--label",
                &user_label,
                "--label",
                &decision_label,
            ])
            .args([
                TEST_IMAGE,
                "chroot",
                "/host",
                "curl",
                "-s",
                "--unix-socket",
                &sock,
                "http://docker/containers/json",
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let own = ping(&jo);
    assert!(own.starts_with('['), "jo's own container is jo: {own}");
    let other = ping(&kim);
    assert!(
        other.contains("(caller)") && other.contains("not one of"),
        "kim's container is not jo: {other}"
    );
    let calls = proxy_calls(&mut r).await;
    let refused = calls
        .iter()
        .find(|c| {
            c["user"] == jo.as_str()
                && c["outcome"] == "refused"
                && c["reason"].as_str().unwrap().contains("(caller)")
        })
        .expect("the refusal is recorded");
    assert_eq!(refused["peer"]["uid"], 0);
    assert_eq!(
        refused["peer"]["container"].as_str().map(str::len),
        Some(64),
        "{refused}"
    );
}

/// Issue 23, finding 11: after a restart, the socket is restored under the decision
/// of the user's spawned container, so what it creates carries that decision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decision_labels_survive_a_restart() {
    let Some(mut r) = Rig::start().await else {
        return;
    };
    let lee = r.user("lee");
    r.grant_limited(&lee, limits(3, 1, 1)).await;
    let (l, decision) = r.spawn_decided(&lee).await;
    // The notebook container, as the hook labels it.
    let notebook = docker(&[
        "create",
        "--label",
        &format!("privledger.user={lee}"),
        "--label",
        &format!("privledger.decision={decision}"),
        "--label",
        &format!("privledger.owner={lee}"),
        TEST_IMAGE,
        "true",
    ]);
    let Rig {
        s,
        users,
        _cleanup,
        c: _,
        tag,
        ..
    } = r;
    let s = s.restart().await;
    wait_watching(&s).await;
    let made = must(&l, &["create", TEST_IMAGE, "true"]).await;
    let label = docker(&[
        "inspect",
        "--format",
        "{{index .Config.Labels \"privledger.decision\"}}",
        &made,
    ]);
    assert_eq!(label, decision);
    let _ = std::process::Command::new("docker")
        .args(["rm", "-f", &notebook])
        .output();
    drop((users, tag));
}
