//! The data directory holds the admin secret and the ledger: these tests check that
//! privledger creates it private, refuses one another user could tamper with, never
//! writes through a planted symlink, and names the path when it cannot use it.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use privledger::pb;

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

/// A private directory `data` inside a fresh temporary directory.
fn private_data_dir() -> (tempfile::TempDir, PathBuf) {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    std::fs::create_dir(&data).unwrap();
    chmod(&data, 0o700);
    (root, data)
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

#[tokio::test]
async fn a_symlink_planted_at_admin_token_is_replaced_never_followed() {
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("victim");
    std::fs::write(&victim, "keep").unwrap();
    chmod(&victim, 0o644);
    let victim_before = std::fs::metadata(&victim).unwrap();
    // A link to an existing file, and a dangling one (which must not be created).
    let dangling = outside.path().join("created-through-the-link");
    for target in [&victim, &dangling] {
        let (_root, data) = private_data_dir();
        let token = data.join("admin.token");
        std::os::unix::fs::symlink(target, &token).unwrap();
        let s = TestServer::start_with(test_cfg(&data)).await;

        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
        let victim_now = std::fs::metadata(&victim).unwrap();
        assert_eq!(victim_now.mode(), victim_before.mode(), "victim's mode");
        assert_eq!(victim_now.ino(), victim_before.ino(), "victim not replaced");
        assert!(
            !dangling.exists(),
            "nothing created through the dangling link"
        );

        let meta = std::fs::symlink_metadata(&token).unwrap();
        assert!(
            meta.file_type().is_file(),
            "the link is replaced by a regular file"
        );
        assert_eq!(meta.mode() & 0o777, 0o600);
        assert_eq!(meta.uid(), rustix::process::geteuid().as_raw());
        let secret = std::fs::read_to_string(&token).unwrap();
        assert_eq!(secret.trim(), s.admin_token);
        assert!(s.admin_token.len() >= 16 && !s.admin_token.contains("keep"));
        // The secret written there is the one that works.
        let mut c = s.admin().await;
        c.admin
            .create_group(pb::CreateGroupRequest {
                name: "ops".into(),
                request_id: String::new(),
            })
            .await
            .expect("the admin token in the file works");
        let leftovers: Vec<_> = std::fs::read_dir(&data)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("tmp"))
            .collect();
        assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
        s.stop().await;
    }
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 1);
}

#[tokio::test]
async fn a_data_directory_writable_by_group_or_others_is_refused_unless_allowed() {
    for m in [0o777, 0o770, 0o702] {
        let (_root, data) = private_data_dir();
        chmod(&data, m);
        let msg = TestServer::start_refused(test_cfg(&data)).await;
        assert!(
            msg.contains(&data.display().to_string()),
            "mode {m:o}: names the path: {msg}"
        );
        assert!(
            msg.contains("writable by group or others"),
            "mode {m:o}: {msg}"
        );
        assert!(msg.contains(&format!("{m:04o}")), "names the mode: {msg}");
        assert_eq!(
            std::fs::read_dir(&data).unwrap().count(),
            0,
            "mode {m:o}: nothing written to a refused directory"
        );
        assert_eq!(mode(&data), m, "the directory's mode is left alone");
    }
    let (_root, data) = private_data_dir();
    chmod(&data, 0o777);
    let mut cfg = test_cfg(&data);
    cfg.allow_unsafe_data_dir = true;
    let s = TestServer::start_with(cfg).await;
    assert!(data.join("admin.token").is_file());
    s.stop().await;
}

#[tokio::test]
async fn a_data_directory_owned_by_another_user_is_refused_unless_allowed() {
    if !is_root() {
        eprintln!("skipping: chown to another user needs root");
        return;
    }
    let (_root, data) = private_data_dir();
    std::os::unix::fs::chown(&data, Some(65534), Some(65534)).unwrap();
    let msg = TestServer::start_refused(test_cfg(&data)).await;
    assert!(
        msg.contains(&data.display().to_string()),
        "names the path: {msg}"
    );
    assert!(msg.contains("owned by uid 65534"), "names the owner: {msg}");
    assert!(msg.contains("uid 0"), "names this process's uid: {msg}");
    assert_eq!(std::fs::read_dir(&data).unwrap().count(), 0);
    let mut cfg = test_cfg(&data);
    cfg.allow_unsafe_data_dir = true;
    let s = TestServer::start_with(cfg).await;
    s.stop().await;
}

/// Every path under `dir` (not following links), with its mode.
fn walk(dir: &Path, out: &mut Vec<(PathBuf, u32)>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let meta = std::fs::symlink_metadata(&p).unwrap();
        out.push((p.clone(), meta.mode()));
        if meta.is_dir() {
            walk(&p, out);
        }
    }
}

#[tokio::test]
async fn a_fresh_data_directory_is_private_even_under_umask_0() {
    const UMASK_0_EXEC: &str = "umask 000; exec \"$0\" \"$@\"";
    let root = tempfile::tempdir().unwrap();
    // The control: under this shell line, what a program creates is world-readable.
    let control = root.path().join("control");
    let st = Command::new("sh")
        .args(["-c", UMASK_0_EXEC, "touch"])
        .arg(&control)
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(mode(&control), 0o666, "umask 000 applies");

    let data = root.path().join("parent").join("data");
    let serve = ServeProcess::command(&data, &["--checkpoint-interval", "10"]);
    let mut cmd = Command::new("sh");
    cmd.args(["-c", UMASK_0_EXEC])
        .arg(serve.get_program())
        .args(serve.get_args());
    let log = root.path().join("serve.log");
    let srv = ServeProcess::spawn(cmd, &data, &log, "").await;
    let mut c = srv.admin().await;
    for i in 0..30 {
        ok(c.admin.create_group(pb::CreateGroupRequest {
            name: format!("g{i}"),
            request_id: format!("r{i}"),
        }))
        .await;
    }
    // Checkpoints are written beside the writer, and each one written is then
    // recorded: follow the stream until the first record (bounded).
    let mut records = ok(c.audit.stream(pb::StreamRequest {
        kinds: vec!["state_checkpointed".into()],
        ..stream_from(1, true)
    }))
    .await;
    let found = tokio::time::timeout(Duration::from_secs(30), records.message())
        .await
        .is_ok_and(|m| m.is_ok_and(|e| e.is_some()));
    assert!(found, "no checkpoint written:\n{}", srv.log_tail());
    // Recorded after its file was renamed into place: the file is there for the
    // mode checks below.
    let file = std::fs::read_dir(data.join("checkpoints"))
        .unwrap()
        .any(|e| {
            e.unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".checkpoint")
        });
    assert!(file, "the recorded checkpoint's file is missing");
    drop(c);
    srv.terminate().await;

    assert_eq!(mode(&data), 0o700, "the data directory");
    let mut all = Vec::new();
    walk(&data, &mut all);
    let names: Vec<String> = all
        .iter()
        .map(|(p, m)| {
            format!(
                "{:o} {}",
                m & 0o7777,
                p.strip_prefix(&data).unwrap().display()
            )
        })
        .collect();
    eprintln!("created under the data directory:\n{}", names.join("\n"));
    for expected in [
        "admin.token",
        "ledger.head",
        "checkpoints",
        "ledger.sled",
        "ledger.sled/db",
        "ledger.sled/conf",
    ] {
        assert!(
            all.iter().any(|(p, _)| p == &data.join(expected)),
            "{expected} missing: {names:#?}"
        );
    }
    assert_eq!(mode(&data.join("admin.token")), 0o600);
    let open: Vec<&String> = all
        .iter()
        .zip(&names)
        .filter(|((_, m), _)| m & 0o077 != 0)
        .map(|(_, n)| n)
        .collect();
    assert!(
        open.is_empty(),
        "reachable by group or others under umask 0: {open:#?}"
    );
}

#[tokio::test]
async fn a_data_directory_that_cannot_be_used_is_named_in_the_error() {
    let root = tempfile::tempdir().unwrap();
    // A regular file where the directory should be.
    let data = root.path().join("data");
    std::fs::write(&data, "not a directory").unwrap();
    let msg = TestServer::start_refused(test_cfg(&data)).await;
    assert!(msg.contains(&data.display().to_string()), "{msg}");
    assert!(msg.contains("not a directory"), "{msg}");
    assert_eq!(std::fs::read_to_string(&data).unwrap(), "not a directory");

    // A regular file where a parent should be.
    let under_file = data.join("ledger");
    let msg = TestServer::start_refused(test_cfg(&under_file)).await;
    assert!(msg.contains(&under_file.display().to_string()), "{msg}");
    assert!(msg.to_lowercase().contains("not a directory"), "{msg}");

    // A real permission error: as another user, under a directory only root writes.
    if !is_root() {
        eprintln!("skipping the permission case: switching users needs root");
        return;
    }
    chmod(root.path(), 0o755);
    let locked = root.path().join("locked");
    std::fs::create_dir(&locked).unwrap();
    chmod(&locked, 0o755);
    let denied = locked.join("data");
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(binary())
        .arg("serve")
        .arg("--data")
        .arg(&denied)
        .args(["--listen", "127.0.0.1:0", "--docker", "off"])
        .output();
    let out = match out {
        Ok(o) if o.status.code() != Some(127) => o,
        other => {
            eprintln!("skipping the permission case: setpriv: {other:?}");
            return;
        }
    };
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "served as uid 65534: {err}");
    assert!(err.contains(&denied.display().to_string()), "{err}");
    assert!(err.contains("Permission denied"), "{err}");
    assert!(!denied.exists());
}
