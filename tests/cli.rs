//! Drives the real `privledger` binary: `serve` as a process, and the client
//! commands against it, the way an operator would.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use common::binary;
use serde_json::Value;

struct Served {
    child: Child,
    url: String,
    token_file: std::path::PathBuf,
    dir: Option<tempfile::TempDir>,
}

impl Served {
    /// `privledger serve` on port 0; the address is read from its log.
    fn start() -> Served {
        Served::start_in(tempfile::tempdir().unwrap(), &[])
    }

    /// `privledger serve ARGS` on port 0 with `dir` as its data directory.
    fn start_in(dir: tempfile::TempDir, args: &[&str]) -> Served {
        let mut child = Command::new(binary())
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(dir.path())
            .args(args)
            .env("PRIVLEDGER_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let addr = loop {
            let line = lines
                .next()
                .expect("server log ended before serving")
                .unwrap();
            if let Some(i) = line.find("addr=") {
                break line[i + 5..].split_whitespace().next().unwrap().to_string();
            }
        };
        // Keep draining the log so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Served {
            child,
            url: format!("http://{addr}"),
            token_file: dir.path().join("admin.token"),
            dir: Some(dir),
        }
    }

    /// Stops the server (SIGTERM) and keeps its data directory.
    fn stop(mut self) -> tempfile::TempDir {
        self.dir.take().unwrap()
    }

    fn cli(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(binary())
            .arg("--server")
            .arg(&self.url)
            .arg("--token-file")
            .arg(&self.token_file)
            .args(args)
            .env_remove("PRIVLEDGER_TOKEN")
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `args` with this server's address and token after them.
    fn args(&self, args: &[&str]) -> Vec<String> {
        let mut a: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        a.extend([
            "--server".to_string(),
            self.url.clone(),
            "--token-file".to_string(),
            self.token_file.display().to_string(),
        ]);
        a
    }

    fn ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.cli(args);
        assert_eq!(code, 0, "{args:?} failed: {err}");
        out
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.push("--json");
        serde_json::from_str(&self.ok(&a)).unwrap()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        // SIGTERM for a graceful stop; the process must exit on its own.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let status = self.child.wait().unwrap();
        assert!(
            status.success() || std::thread::panicking(),
            "serve exited with {status}"
        );
    }
}

#[test]
fn a_read_only_server_refuses_writes_and_status_says_why() {
    let s = Served::start();
    s.ok(&["group", "create", "forensics"]);
    let dir = s.stop();
    let s = Served::start_in(dir, &["--read-only"]);
    let st = s.json(&["status"]);
    assert!(
        st["writes"]
            .as_str()
            .is_some_and(|w| w.starts_with("refused: read-only for forensics")),
        "{st}"
    );
    assert_eq!(
        st["services"]["privledger.v1.Authorizer"], "not serving",
        "{st}"
    );
    assert_eq!(st["services"]["privledger.v1.Audit"], "serving", "{st}");
    let out = s.ok(&["status"]);
    assert!(out.contains("writes refused: read-only"), "{out}");
    let (code, _, err) = s.cli(&["group", "create", "more"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("UNAVAILABLE") && err.contains("read-only"),
        "{err}"
    );
    assert_eq!(s.json(&["group", "show", "forensics"])["name"], "forensics");
    assert_eq!(s.json(&["verify"])["ok"], true);
}

#[test]
fn operator_walkthrough_through_the_cli() {
    let s = Served::start();
    let mode = std::fs::metadata(&s.token_file).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600
    );
    s.ok(&["group", "create", "data-science"]);
    let g = s.json(&[
        "grant",
        "issue",
        "--group",
        "data-science",
        "--socket",
        "limited",
        "--max-containers",
        "5",
        "--mem-cap-gb",
        "16",
        "--expires",
        "30d",
        "--reason",
        "builds images",
    ]);
    assert_eq!(g["status"], "active");
    assert_eq!(g["spec"]["socket"], "limited");
    s.ok(&["group", "add-member", "data-science", "alice"]);
    let a = s.json(&["check", "alice"]);
    assert_eq!(a["user"], "alice");
    assert_eq!(a["socket"], "limited");
    assert_eq!(a["socket_mode"], "ro");
    assert_eq!(a["privileged"], false);
    assert_eq!(a["limits"]["max_containers"], 5);
    assert_eq!(a["limits"]["mem_cap_gb"], 16.0);
    assert_eq!(a["limits"]["max_volumes"], 10);
    assert_eq!(a["limits"]["allow_dangerous_flags"], false);
    assert_eq!(a["grants"][0]["via_group"], "data-science");
    let seq_before = a["seq"].as_u64().unwrap();
    s.ok(&["group", "add-member", "docker-privileged", "alice"]);
    let a = s.json(&["check", "alice"]);
    assert_eq!(a["socket"], "raw");
    assert_eq!(a["socket_mode"], "rw");
    assert_eq!(a["limits"]["max_containers"], 0, "raw zeroes limits");
    let past = s.json(&["check", "alice", "--at", &seq_before.to_string()]);
    assert_eq!(past["socket"], "limited");

    let d = s.json(&[
        "authorize",
        "alice",
        "--image",
        "jupyter/base",
        "--server-name",
        "gpu",
    ]);
    assert_eq!(d["allowed"], true);
    assert_eq!(
        d["fragments"]["binds"][0],
        "/var/run/docker.sock:/var/run/docker.sock:rw"
    );
    assert_eq!(d["fragments"]["labels"]["privledger.user"], "alice");
    let who = s.json(&["who"]);
    assert_eq!(who["users"][0]["user"], "alice");
    let human = s.ok(&["check", "alice"]);
    assert!(human.contains("socket raw (rw)"), "{human}");

    let tail = s.ok(&["audit", "tail", "--kind", "spawn_decided"]);
    assert_eq!(tail.lines().count(), 1, "{tail}");
    assert!(tail.contains("spawn_decided") && tail.contains("user=alice"));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("audit.jsonl");
    s.ok(&["audit", "export", "--out", out.to_str().unwrap()]);
    let lines: Vec<Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let head = s.json(&["audit", "head"]);
    assert_eq!(lines.len() as u64, head["seq"].as_u64().unwrap());
    // The export carries the exact hashed bodies: the chain re-verifies offline.
    use sha2::Digest;
    let mut prev = [0u8; 32].to_vec();
    for l in &lines {
        assert_eq!(l["prev_hash"], hex::encode(&prev));
        let mut h = sha2::Sha256::new();
        h.update(&prev);
        h.update(l["body"].as_str().unwrap().as_bytes());
        prev = h.finalize().to_vec();
        assert_eq!(l["hash"], hex::encode(&prev));
    }
    let v = s.json(&["verify"]);
    assert_eq!(v["ok"], true);

    let t = s.json(&["token", "create", "hub", "--role", "spawner"]);
    let secret = t["secret"].as_str().unwrap();
    let out = Command::new(binary())
        .args([
            "--server", &s.url, "--token", secret, "group", "create", "nope",
        ])
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("privledger: PERMISSION_DENIED"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one clear line");

    // Errors: one line, non-zero, nothing appended.
    let before = s.json(&["audit", "head"])["seq"].clone();
    let (code, _, err) = s.cli(&["group", "delete", "docker-privileged", "--reason", "x"]);
    assert_ne!(code, 0);
    assert!(err.contains("FAILED_PRECONDITION"), "{err}");
    // Reasons on every change of access (issue 27, point 2): a deletion needs one,
    // and so does removing a member of a built-in group; both are recorded.
    let (code, _, err) = s.cli(&["group", "delete", "nope"]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("--reason"), "{err}");
    let (code, _, err) = s.cli(&["group", "remove-member", "docker-privileged", "alice"]);
    assert_ne!(code, 0);
    assert!(err.contains("a reason is required"), "{err}");
    let (code, _, err) = s.cli(&[
        "grant", "issue", "--user", "bob", "--socket", "root", "--reason", "x",
    ]);
    assert_eq!(code, 64);
    assert!(err.contains("invalid value 'root' for '--socket"), "{err}");
    let (code, _, err) = s.cli(&["group", "add-member", "missing", "bob"]);
    assert_ne!(code, 0);
    assert!(err.contains("NOT_FOUND"), "{err}");
    assert_eq!(s.json(&["audit", "head"])["seq"], before);
}

#[test]
fn invalid_configuration_is_refused_before_binding_and_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("privledger.toml");
    std::fs::write(&cfg, "checkpoint_interval = 0\n").unwrap();
    let out = Command::new(binary())
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&cfg)
        .arg("--data")
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("checkpoint_interval"), "{err}");
    assert!(!dir.path().join("data").exists(), "nothing created");
}

#[test]
fn unreachable_server_is_one_clear_line() {
    let out = Command::new(binary())
        .args([
            "--server",
            "http://127.0.0.1:1",
            "--token",
            "x",
            "check",
            "alice",
        ])
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot reach the server"), "{err}");
    assert_eq!(err.trim().lines().count(), 1);
    // Each cause once ("tcp connect error: tcp connect error: ..." before).
    let parts: Vec<&str> = err.trim().split(": ").collect();
    for (i, p) in parts.iter().enumerate() {
        assert!(!parts[i + 1..].contains(p), "{p:?} said twice: {err}");
    }
    // A bare HOST:PORT means http://, not an invalid URL.
    let out = Command::new(binary())
        .args(["--server", "127.0.0.1:1", "--token", "x", "check", "alice"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot reach the server at http://127.0.0.1:1"),
        "{err}"
    );
}

/// `audit tail` for a busy host (issue 27, point 3): the last N, from a time, kinds
/// left out, `docker` as the containers' churn; a pipe still gets everything from 1.
#[test]
fn audit_tail_the_last_n_since_a_time_and_kinds_left_out() {
    // No watcher: the daemon's containers would add entries while the test counts.
    let s = Served::start_in(tempfile::tempdir().unwrap(), &["--docker", "off"]);
    for g in ["g1", "g2", "g3", "g4", "g5"] {
        s.ok(&["group", "create", g]);
    }
    let seqs = |out: &str| -> Vec<u64> {
        out.lines()
            .map(|l| l.split_whitespace().next().unwrap().parse().unwrap())
            .collect()
    };
    let all = seqs(&s.ok(&["audit", "tail"]));
    assert_eq!(all[0], 1, "a pipe gets every entry from seq 1");
    let head = *all.last().unwrap();
    assert_eq!(
        seqs(&s.ok(&["audit", "tail", "-n", "3"])),
        vec![head - 2, head - 1, head]
    );
    let created = s.ok(&["audit", "tail", "-n", "2", "--kind", "group_created"]);
    assert_eq!(created.lines().count(), 2, "{created}");
    assert!(
        created.contains("group=g4") && created.contains("group=g5"),
        "{created}"
    );
    let without = s.ok(&["audit", "tail", "--exclude-kind", "group_created"]);
    assert!(!without.contains("group_created"), "{without}");
    assert!(!without.is_empty());
    let docker = s.ok(&["audit", "tail", "--kind", "docker"]);
    assert!(docker.is_empty(), "no container here: {docker}");
    // --since: a time after every entry leaves none; one before all leaves all.
    let later = s.ok(&["audit", "tail", "--since", "2999-01-01T00:00:00Z"]);
    assert!(later.is_empty(), "{later}");
    let since = s.ok(&["audit", "tail", "--since", "2000-01-01T00:00:00Z"]);
    assert_eq!(seqs(&since), all);
    let (code, _, err) = s.cli(&["audit", "tail", "--since", "yesterday"]);
    assert_eq!(code, 64, "{err}");
    // Strict times (point 4): a zone is needed, and the future is not answered.
    for args in [
        &["check", "alice", "--at", "2026-12-01T08:00:00"][..],
        &["audit", "tail", "--since", "2026-12-01 08:00:00"][..],
        &["report", "access", "--from", "2026-12-01T08:00:00"][..],
    ] {
        let (code, _, err) = s.cli(args);
        assert_eq!(code, 64, "{args:?}: {err}");
        assert!(err.contains("add Z (UTC) or an offset"), "{args:?}: {err}");
    }
    let (code, _, err) = s.cli(&["check", "alice", "--at", "2999-01-01T00:00:00Z"]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("in the future"), "{err}");
}

/// Small defects a first week of use tripped over (issue 27, point 7): a completion
/// piped into `head` ends quietly, an empty `PRIVLEDGER_SERVER` is unset, and a port
/// in use exits 69 naming the address.
#[test]
fn completions_into_head_an_empty_server_variable_and_a_taken_port() {
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "'{}' completions {shell} | head -1 >/dev/null; echo \"${{PIPESTATUS:-}}\"",
                binary().display()
            ))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{shell}: {err}");
    }
    let out = Command::new(binary())
        .env("PRIVLEDGER_SERVER", "")
        .args(["--token", "x", "check", "alice"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("invalid server address"), "{err}");
    assert!(
        err.contains("127.0.0.1:50051") || out.status.success(),
        "{err}"
    );

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = Command::new(binary())
        .args(["serve", "--listen", &addr.to_string(), "--data"])
        .arg(&data)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(69), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&addr.to_string()), "{err}");
}

/// `--at` takes RFC 3339 times with a numeric offset, meaning the same instant as in
/// UTC (only `Z` was accepted before).
#[test]
fn check_at_a_time_with_an_offset_is_the_same_instant_as_in_utc() {
    let s = Served::start();
    s.ok(&[
        "grant", "issue", "--user", "bob", "--socket", "raw", "--reason", "r",
    ]);
    let head = s.json(&["audit", "head"]);
    let z = head["time"].as_str().unwrap().to_string();
    // The head's time in UTC, and the same instant written at +01:00 and -05:30.
    let t = z.trim_end_matches('Z');
    let (date, clock) = t.split_once('T').unwrap();
    let hms: Vec<u32> = clock[..8].split(':').map(|p| p.parse().unwrap()).collect();
    let frac = &clock[8..];
    let secs = hms[0] * 3600 + hms[1] * 60 + hms[2];
    let shifted = |off: i64| {
        let s = (secs as i64 + off).rem_euclid(86_400) as u32;
        format!("{:02}:{:02}:{:02}{frac}", s / 3600, s / 60 % 60, s % 60)
    };
    // Only when the shifted clock stays on the same date (keeps the test simple).
    let base = s.json(&["check", "bob", "--at", &z]);
    assert_eq!(base["socket"], "raw", "{base}");
    for (off, suffix) in [(3600, "+01:00"), (-19_800, "-05:30")] {
        if (secs as i64 + off) < 0 || (secs as i64 + off) >= 86_400 {
            continue;
        }
        let at = format!("{date}T{}{suffix}", shifted(off));
        let got = s.json(&["check", "bob", "--at", &at]);
        assert_eq!(got["seq"], base["seq"], "{at}: {got}");
        assert_eq!(got["socket"], "raw", "{at}: {got}");
    }
}

/// Text a hostile admin or hub puts in a reason, a name or a server name cannot forge
/// an `audit tail` line or a table row, and names that would display like another
/// are refused (DESIGN §4; issue 13).
#[test]
fn forged_lines_and_lookalike_names_are_rendered_harmless_or_refused() {
    let s = Served::start();
    let forged =
        "ok\n    99  2026-12-01T00:00:00Z  admin       grant_revoked           grant_id=31";
    s.ok(&[
        "grant", "issue", "--user", "mallory", "--socket", "raw", "--reason", forged,
    ]);
    let tail = s.ok(&["audit", "tail"]);
    assert!(
        !tail.lines().any(|l| l.trim_start().starts_with("99 ")),
        "a forged line was printed:\n{tail}"
    );
    let line = tail
        .lines()
        .find(|l| l.contains("grant_issued") && l.contains("mallory"))
        .unwrap();
    assert!(line.contains("reason=ok\\n    99"), "{line}");
    let grants = s.ok(&["grant", "list"]);
    assert!(
        !grants.lines().any(|l| l.trim_start().starts_with("99 ")),
        "{grants}"
    );
    // The JSON keeps the exact text.
    let j = s.json(&["grant", "list", "--user", "mallory"]);
    assert_eq!(j["grants"][0]["reason"], forged);

    // A server name or image the spawner passes is escaped too.
    s.ok(&[
        "authorize",
        "mallory",
        "--server-name",
        "x",
        "--image",
        "img",
    ]);
    let (code, _, err) = s.cli(&["authorize", "mallory", "--image", "img\u{2028}forged"]);
    assert_ne!(code, 0);
    assert!(err.contains("U+2028") && !err.contains('\u{2028}'), "{err}");

    // Names that hide characters or reorder text are refused, and nothing is appended.
    let head = s.json(&["audit", "head"])["seq"].as_u64().unwrap();
    for bad in [
        "docker\u{200b}-privileged",
        "docker-privileged\u{200d}",
        "\u{feff}docker-privileged",
        "\u{202e}degelivirp-rekcod",
        "docker\u{2066}-privileged\u{2069}",
        "docker\u{2028}privileged",
        "docker-privile\u{301}ged", // NFD: one name, one spelling
    ] {
        let (code, _, err) = s.cli(&["group", "create", bad]);
        assert_ne!(code, 0, "{bad:?} was accepted");
        assert!(
            err.contains("INVALID_ARGUMENT") || err.contains("could be mistaken"),
            "{bad:?}: {err}"
        );
        assert!(err.lines().count() == 1, "{err}");
    }
    // Lookalikes of an existing group (Greek omicron, Cyrillic е, case) are refused.
    for like in [
        "d\u{3bf}cker-privileged",
        "dock\u{435}r-privileged",
        "Docker-Privileged",
    ] {
        let (code, _, err) = s.cli(&["group", "create", like]);
        assert_ne!(code, 0, "{like:?} was accepted");
        assert!(
            err.contains("could be mistaken for the existing group \"docker-privileged\""),
            "{err}"
        );
    }
    assert_eq!(s.json(&["audit", "head"])["seq"].as_u64().unwrap(), head);
    // Ordinary international names are fine.
    s.ok(&["group", "create", "équipe-données"]);
    s.ok(&["group", "add-member", "équipe-données", "jörg"]);
}

/// One exit-code scheme (`privledger --help` lists it): each class of failure, from
/// clap's own usage errors to the server's refusals, exits with its documented code,
/// and under `--json` says so as a JSON object on stderr (DESIGN §7; issue 14).
#[test]
fn every_class_of_failure_exits_with_its_documented_code_in_text_and_json() {
    let s = Served::start();
    s.ok(&["group", "create", "g"]);
    let auditor = s.json(&["token", "create", "aud", "--role", "auditor"]);
    let auditor = auditor["secret"].as_str().unwrap().to_string();
    let url = s.url.clone();
    let cases: Vec<(&str, Vec<String>, i32, Option<&str>)> = vec![
        (
            "unknown flag",
            s.args(&["check", "bob", "--bogus"]),
            64,
            Some("USAGE"),
        ),
        (
            "missing --reason",
            s.args(&["grant", "issue", "--user", "bob", "--socket", "raw"]),
            64,
            Some("USAGE"),
        ),
        (
            "bad value",
            s.args(&["token", "create", "t", "--role", "root"]),
            64,
            Some("USAGE"),
        ),
        ("no subcommand", s.args(&["group"]), 64, None),
        (
            "bad --at",
            s.args(&["check", "bob", "--at", "yesterday"]),
            64,
            Some("USAGE"),
        ),
        (
            "bad --expires",
            s.args(&[
                "grant",
                "issue",
                "--user",
                "b",
                "--expires",
                "soon",
                "--reason",
                "r",
            ]),
            64,
            Some("USAGE"),
        ),
        (
            "refused",
            s.args(&["group", "show", "missing"]),
            1,
            Some("NOT_FOUND"),
        ),
        (
            "exists",
            s.args(&["group", "create", "g"]),
            1,
            Some("ALREADY_EXISTS"),
        ),
        (
            "unreachable",
            vec![
                "check".into(),
                "bob".into(),
                "--server".into(),
                "127.0.0.1:1".into(),
                "--token".into(),
                "x".into(),
            ],
            69,
            Some("UNAVAILABLE"),
        ),
        (
            "unknown token",
            vec![
                "check".into(),
                "bob".into(),
                "--server".into(),
                url.clone(),
                "--token".into(),
                "nope".into(),
            ],
            77,
            Some("UNAUTHENTICATED"),
        ),
        (
            "role may not",
            vec![
                "group".into(),
                "create".into(),
                "x".into(),
                "--server".into(),
                url.clone(),
                "--token".into(),
                auditor.clone(),
            ],
            77,
            Some("PERMISSION_DENIED"),
        ),
    ];
    let head = s.json(&["audit", "head"])["seq"].clone();
    for (what, args, code, name) in cases {
        let run = |json: bool| {
            let mut cmd = Command::new(binary());
            cmd.args(&args).env_remove("PRIVLEDGER_TOKEN");
            if json {
                cmd.arg("--json");
            }
            cmd.output().unwrap()
        };
        let out = run(false);
        assert_eq!(out.status.code(), Some(code), "{what}: {out:?}");
        assert!(out.stdout.is_empty(), "{what}: nothing on stdout");
        let out = run(true);
        assert_eq!(out.status.code(), Some(code), "{what} --json: {out:?}");
        if let Some(name) = name {
            let err = String::from_utf8_lossy(&out.stderr);
            let v: Value = serde_json::from_str(err.trim())
                .unwrap_or_else(|e| panic!("{what}: stderr is not JSON ({e}): {err}"));
            assert_eq!(v["error"]["exit"], code, "{what}: {v}");
            assert_eq!(v["error"]["code"], name, "{what}: {v}");
            assert!(!v["error"]["message"].as_str().unwrap().is_empty(), "{v}");
        }
    }
    assert_eq!(
        s.json(&["audit", "head"])["seq"],
        head,
        "nothing was appended"
    );
    // Help and version are answers, not errors.
    for a in [
        &["--help"][..],
        &["--version"],
        &["grant", "issue", "--help"],
    ] {
        let out = Command::new(binary()).args(a).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{a:?}");
        assert!(!out.stdout.is_empty());
    }
}

/// Connection flags belong to client commands: `serve --help` does not offer them,
/// client commands take them after the command (and, as before, in front of it).
#[test]
fn client_flags_are_offered_on_client_commands_only() {
    let help = |a: &[&str]| {
        let out = Command::new(binary())
            .args(a)
            .arg("--help")
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let serve = help(&["serve"]);
    for client_only in [
        "--server",
        "--token ",
        "--token-file",
        "--json",
        "--tls-ca",
        "--timeout",
    ] {
        assert!(
            !serve.contains(client_only),
            "serve offers {client_only}:\n{serve}"
        );
    }
    assert!(serve.contains("--tls-cert") && serve.contains("--tls-client-ca"));
    let check = help(&["check"]);
    for server_only in ["--listen", "--data", "--tls-client-ca", "--insecure-listen"] {
        assert!(!check.contains(server_only), "check offers {server_only}");
    }
    // Environment hints read `[env: NAME]`, never `NAME=` with nothing after it.
    for h in [&serve, &check, &help(&["audit", "tail"])] {
        assert!(!h.contains("=]"), "{h}");
    }
    let s = Served::start();
    let token = s.token_file.to_str().unwrap().to_string();
    for args in [
        vec!["who", "--server", &s.url, "--token-file", &token, "--json"],
        vec!["--server", &s.url, "--json", "who", "--token-file", &token],
    ] {
        let out = Command::new(binary()).args(&args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(v["users"].is_array(), "{v}");
    }
}

/// Completions for bash, zsh and fish and the man page come from the same grammar:
/// they name every command.
#[test]
fn completions_and_man_pages_are_generated_from_the_grammar() {
    let commands = [
        "serve", "group", "grant", "report", "audit", "verify", "token",
    ];
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(binary())
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell}");
        let text = String::from_utf8_lossy(&out.stdout);
        for c in commands {
            assert!(text.contains(c), "{shell} completion lacks {c}");
        }
        assert!(
            text.contains("add-member") && text.contains("reason"),
            "{shell}"
        );
    }
    let bad = Command::new(binary())
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(64));
    let out = Command::new(binary()).arg("man").output().unwrap();
    assert!(out.status.success());
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(
        page.starts_with(".ie") || page.contains(".TH privledger"),
        "{page:.200}"
    );
    assert!(
        page.contains("Exit codes"),
        "the exit codes are in the man page"
    );
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(binary())
        .args(["man", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    for page in [
        "privledger.1",
        "privledger-grant-issue.1",
        "privledger-report-access.1",
    ] {
        let text = std::fs::read_to_string(dir.path().join(page)).unwrap();
        assert!(text.contains(".TH"), "{page}");
    }
    let issue = std::fs::read_to_string(dir.path().join("privledger-grant-issue.1")).unwrap();
    assert!(issue.contains("max\\-containers") && issue.contains("Dangerous flags"));
}

/// `audit export` writes a file only once whole, never replaces one without
/// --force, writes to stdout with `--out -`, and ends quietly when the reader stops
/// (`| head`); the export re-verifies offline, and an edit anywhere is found with its
/// seq (DESIGN §3, §7).
#[test]
fn export_to_a_file_or_stdout_and_verify_it_offline() {
    let s = Served::start();
    for g in ["a", "b", "c"] {
        s.ok(&["group", "create", g]);
    }
    s.ok(&["group", "add-member", "a", "u1", "u2", "u3"]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ledger.jsonl");
    let f = file.to_str().unwrap();
    s.ok(&["audit", "export", "--out", f]);
    let first = std::fs::read_to_string(&file).unwrap();
    let head = s.json(&["audit", "head"]);
    assert_eq!(first.lines().count() as u64, head["seq"].as_u64().unwrap());
    assert!(
        std::fs::read_dir(dir.path()).unwrap().count() == 1,
        "no partial file is left beside the export"
    );
    // An existing file is kept.
    s.ok(&["group", "create", "d"]);
    let (code, _, err) = s.cli(&["audit", "export", "--out", f]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("--force"), "{err}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), first);
    s.ok(&["audit", "export", "--out", f, "--force"]);
    assert!(std::fs::read_to_string(&file).unwrap().len() > first.len());
    // `-` is stdout, not a file named "-", and the summary goes to stderr.
    let out = Command::new(binary())
        .args(["audit", "export", "--out", "-"])
        .args(["--server", &s.url, "--token-file"])
        .arg(&s.token_file)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(!dir.path().join("-").exists());
    assert_eq!(out.stdout, std::fs::read(&file).unwrap());
    assert!(String::from_utf8_lossy(&out.stderr).contains("exported"));
    // A reader that stops early: no "Broken pipe", success.
    let mut child = Command::new(binary())
        .args([
            "audit",
            "export",
            "--out",
            "-",
            "--server",
            &s.url,
            "--token-file",
        ])
        .arg(&s.token_file)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.to_lowercase().contains("broken pipe"), "{err}");
    assert!(out.status.success(), "{out:?}");

    // Offline: no server is asked (none is named; the default would not answer).
    let verify = |path: &std::path::Path| {
        let out = Command::new(binary())
            .args(["verify", "--json", "--server", "127.0.0.1:1", "--file"])
            .arg(path)
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        (out.status.code().unwrap(), v)
    };
    let (code, v) = verify(&file);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["ok"], true);
    assert_eq!(v["last_hash"], s.json(&["audit", "head"])["hash"]);
    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    // Every kind of edit, on a middle line: the body, the hash, a readable field the
    // hash does not cover, a dropped line, swapped lines, a line that is not JSON.
    let mid = lines.len() / 2;
    let seq = mid as u64 + 1;
    let edit = |f: &dyn Fn(&mut Value)| {
        let mut v: Value = serde_json::from_str(lines[mid]).unwrap();
        f(&mut v);
        let mut ls: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        ls[mid] = v.to_string();
        ls
    };
    let cases: Vec<(&str, Vec<String>, u64)> = vec![
        (
            "body",
            edit(&|v| {
                let b = v["body"]
                    .as_str()
                    .unwrap()
                    .replacen("\"seq\"", "\"seq\" ", 1);
                v["body"] = Value::String(b);
            }),
            seq,
        ),
        (
            "hash",
            edit(&|v| v["hash"] = Value::String("00".repeat(32))),
            seq,
        ),
        (
            "actor",
            edit(&|v| v["actor"] = Value::String("nobody".into())),
            seq,
        ),
        (
            "kind",
            edit(&|v| v["kind"] = Value::String("group_deleted".into())),
            seq,
        ),
        (
            "dropped",
            lines
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != mid)
                .map(|(_, l)| l.to_string())
                .collect(),
            seq,
        ),
        (
            "swapped",
            {
                let mut ls: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
                ls.swap(mid, mid + 1);
                ls
            },
            seq,
        ),
        (
            "garbage",
            {
                let mut ls: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
                ls[mid] = "{not json".into();
                ls
            },
            seq,
        ),
    ];
    for (what, ls, bad_seq) in cases {
        let p = dir.path().join(format!("{what}.jsonl"));
        std::fs::write(&p, ls.join("\n") + "\n").unwrap();
        let (code, v) = verify(&p);
        assert_eq!(code, 2, "{what}: {v}");
        assert_eq!(v["ok"], false, "{what}");
        assert_eq!(v["first_bad_seq"], bad_seq, "{what}: {v}");
    }
    // A missing file is a usage error, not a verification failure.
    let (code, _) = {
        let out = Command::new(binary())
            .args(["verify", "--file", "/nonexistent/x.jsonl"])
            .output()
            .unwrap();
        (out.status.code().unwrap(), ())
    };
    assert_eq!(code, 64);
}

/// `report access` through the real binary: spans begin and end at the entries (and
/// the expiry instant) that changed access, `check --at` agrees at both ends, the
/// window clips spans, and CSV and JSON say the same (DESIGN §2, §7; issue 14).
#[test]
fn report_access_spans_end_where_access_ended_and_check_at_agrees() {
    let s = Served::start();
    s.ok(&["group", "create", "g"]);
    let added = s.json(&["group", "add-member", "g", "alice", "bob"]);
    let grant = s.json(&[
        "grant", "issue", "--group", "g", "--socket", "raw", "--reason", "ops",
    ]);
    let gid = grant["id"].as_u64().unwrap();
    let carol = s.json(&[
        "grant",
        "issue",
        "--user",
        "carol",
        "--privileged",
        "--expires",
        "1s",
        "--reason",
        "once",
    ]);
    let expires = carol["expires_at"].as_str().unwrap().to_string();
    let bob_out = s.json(&[
        "group",
        "remove-member",
        "g",
        "bob",
        "--reason",
        "left the team",
    ])["seq"]
        .as_u64()
        .unwrap();
    // Carol's grant ends by itself: wait (bounded) until check says so.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while s.json(&["check", "carol"])["privileged"] == true {
        assert!(
            std::time::Instant::now() < deadline,
            "carol's grant never expired"
        );
        std::thread::yield_now();
    }
    let deleted = s.json(&["group", "delete", "g", "--reason", "project over"])["seq"]
        .as_u64()
        .unwrap();
    let removed = s.ok(&["audit", "tail", "--kind", "member_removed"]);
    assert!(removed.contains("left the team"), "{removed}");
    let gone = s.ok(&["audit", "tail", "--kind", "group_deleted", "--wide"]);
    assert!(gone.contains("project over"), "{gone}");

    let raw = s.json(&["report", "access", "--socket", "raw"]);
    let spans = raw["intervals"].as_array().unwrap();
    let of = |user: &str| spans.iter().find(|i| i["user"] == user).cloned().unwrap();
    let a = of("alice");
    assert_eq!(a["from_seq"], gid);
    assert_eq!(a["to_seq"], deleted);
    assert_eq!(a["grants"][0]["via_group"], "g");
    assert_eq!(a["held"], false);
    let b = of("bob");
    assert_eq!(
        (b["from_seq"].as_u64(), b["to_seq"].as_u64()),
        (Some(gid), Some(bob_out))
    );
    assert!(
        spans.iter().all(|i| i["user"] != "carol"),
        "carol never had the socket"
    );
    let _ = added;
    // Carol's privileged span ends at the expiry instant itself, between entries.
    let p = s.json(&["report", "access", "--privileged"]);
    let c = p["intervals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["user"] == "carol")
        .cloned()
        .unwrap();
    assert_eq!(c["to"], expires, "{c}");
    // check --at agrees at both ends of every span.
    for i in spans.iter().chain(std::iter::once(&c)) {
        let user = i["user"].as_str().unwrap();
        let from = i["from_seq"].to_string();
        let at_from = s.json(&["check", user, "--at", &from]);
        let meets = |v: &Value| {
            if i["user"] == "carol" {
                v["privileged"] == true
            } else {
                v["socket"] == "raw"
            }
        };
        assert!(meets(&at_from), "{user} at {from}: {at_from}");
        let to = i["to"].as_str().unwrap();
        let at_to = s.json(&["check", user, "--at", to]);
        assert!(!meets(&at_to), "{user} at {to}: {at_to}");
    }
    // CSV: one row per span, the same spans.
    let csv = s.ok(&["report", "access", "--socket", "raw", "--format", "csv"]);
    let rows: Vec<&str> = csv.lines().collect();
    assert!(
        rows[0].starts_with("user,from,from_seq,to,to_seq,"),
        "{csv}"
    );
    assert_eq!(rows.len() - 1, spans.len(), "{csv}");
    assert!(
        rows.iter().any(|r| r.starts_with("alice,")
            && r.contains(&format!(",{gid},"))
            && r.contains(&format!(",{deleted},"))),
        "{csv}"
    );
    // A window from after alice's span began: clipped, marked as begun before.
    let mid = s.json(&["check", "alice", "--at", &bob_out.to_string()])["evaluated_at"]
        .as_str()
        .unwrap()
        .to_string();
    let w = s.json(&[
        "report", "access", "--socket", "raw", "--from", &mid, "--user", "alice",
    ]);
    let ws = w["intervals"].as_array().unwrap();
    assert_eq!(ws.len(), 1, "{w}");
    assert_eq!(ws[0]["began_before"], true);
    assert_eq!(ws[0]["to_seq"], deleted);
    // The table is for people: the same spans, and an empty window says so.
    let t = s.ok(&["report", "access", "--socket", "raw"]);
    assert!(t.contains("alice") && t.contains("via g"), "{t}");
    let empty = s.ok(&["report", "access", "--user", "nobody"]);
    assert!(empty.contains("no user held"), "{empty}");
    // A window that ends before it starts, or a malformed time, is refused.
    let (code, _, err) = s.cli(&["report", "access", "--from", "5", "--to", "2"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("INVALID_ARGUMENT"), "{err}");
    let (code, _, err) = s.cli(&["report", "access", "--from", "last tuesday"]);
    assert_eq!(code, 64, "{err}");
}

/// `audit export --follow --cursor`: every entry reaches the output at least once,
/// across a `kill -9` of the exporter and new entries meanwhile; the cursor never
/// names an entry that is not on disk (issue 16, export).
#[test]
fn a_followed_export_resumes_from_its_cursor_and_loses_nothing_across_a_kill() {
    let s = Served::start();
    let dir = tempfile::tempdir().unwrap();
    let (out, cursor) = (
        dir.path().join("ship.jsonl"),
        dir.path().join("ship.cursor"),
    );
    let spawn = || {
        Command::new(binary())
            .args(["audit", "export", "--follow", "--out"])
            .arg(&out)
            .arg("--cursor")
            .arg(&cursor)
            .args(["--server", &s.url, "--token-file"])
            .arg(&s.token_file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let seqs = || -> Vec<u64> {
        std::fs::read_to_string(&out)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter_map(|v| v["seq"].as_u64())
            .collect()
    };
    let head = || s.json(&["audit", "head"])["seq"].as_u64().unwrap();
    let until_shipped = |want: u64| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            if seqs().contains(&want) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "seq {want} never shipped"
            );
            std::thread::yield_now();
        }
    };
    for g in ["a", "b"] {
        s.ok(&["group", "create", g]);
    }
    let mut child = spawn();
    until_shipped(head());
    s.ok(&["group", "add-member", "a", "u1", "u2"]);
    until_shipped(head());
    // The cursor names only what is on disk.
    let saved: u64 = std::fs::read_to_string(&cursor)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(seqs().contains(&saved));
    child.kill().unwrap();
    child.wait().unwrap();
    // Entries appended while no exporter runs arrive after the restart.
    s.ok(&["group", "create", "c"]);
    s.ok(&["group", "add-member", "b", "u3"]);
    let mut child = spawn();
    until_shipped(head());
    child.kill().unwrap();
    child.wait().unwrap();
    let got = seqs();
    let mut unique = got.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(
        unique,
        (1..=head()).collect::<Vec<_>>(),
        "every seq, none missing"
    );
    // Deduplicated by seq, the shipped lines verify offline.
    let text = std::fs::read_to_string(&out).unwrap();
    let mut seen = std::collections::HashSet::new();
    let deduped: Vec<&str> = text
        .lines()
        .filter(|l| seen.insert(serde_json::from_str::<Value>(l).unwrap()["seq"].as_u64()))
        .collect();
    let clean = dir.path().join("clean.jsonl");
    std::fs::write(&clean, deduped.join("\n") + "\n").unwrap();
    let v = Command::new(binary())
        .args(["verify", "--file"])
        .arg(&clean)
        .output()
        .unwrap();
    assert!(v.status.success(), "{v:?}");
    // Without a cursor, an existing file is not appended to or replaced silently.
    let (code, _, err) = s.cli(&[
        "audit",
        "export",
        "--follow",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("--cursor"), "{err}");
}

/// `audit export --follow --syslog`: each entry is one RFC 5424 datagram whose
/// message is the entry's JSON line (issue 16, export).
#[test]
fn a_followed_export_to_syslog_sends_one_datagram_per_entry() {
    let s = Served::start();
    s.ok(&["group", "create", "shipped"]);
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("log.sock");
    let rx = std::os::unix::net::UnixDatagram::bind(&sock).unwrap();
    rx.set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    let mut child = Command::new(binary())
        .args(["audit", "export", "--follow", "--syslog", "--syslog-socket"])
        .arg(&sock)
        .args(["--server", &s.url, "--token-file"])
        .arg(&s.token_file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let head = s.json(&["audit", "head"])["seq"].as_u64().unwrap();
    let mut buf = vec![0u8; 1 << 16];
    for want in 1..=head {
        let n = rx.recv(&mut buf).expect("a datagram per entry");
        let text = std::str::from_utf8(&buf[..n]).unwrap();
        assert!(text.starts_with("<134>1 "), "{text}");
        let json = &text[text.find(" - {").expect("the JSON message") + 3..];
        let v: Value = serde_json::from_str(json).unwrap();
        assert_eq!(v["seq"], want, "{text}");
        assert!(text.contains(&format!(" privledger - {} - ", v["kind"].as_str().unwrap())));
        assert!(v["hash"].as_str().is_some_and(|h| h.len() == 64));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // --syslog without --follow, or with --out, is a usage error.
    for args in [
        &["audit", "export", "--syslog"][..],
        &["audit", "export", "--follow", "--syslog", "--out", "x"],
    ] {
        let (code, _, err) = s.cli(args);
        assert_eq!(code, 64, "{args:?}: {err}");
    }
}
