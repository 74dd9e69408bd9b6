//! Damaged, forged and old stores: a flipped byte anywhere in a stopped store is
//! refused or found (never served as a shorter or different history), an edited
//! checkpoint never changes an answer, and a format-1 store from the previous release
//! is upgraded at start and served whole.

mod common;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use pb::{SocketAccess as S, SocketMode as M};
use privledger::client::Clients;
use privledger::pb;
use sha2::Digest;

const AUTHORIZER: &str = "privledger.v1.Authorizer";
const AUDIT: &str = "privledger.v1.Audit";
const CHECKPOINT_INTERVAL: u64 = 50;
/// Bounds a broken run; not a speed assertion.
const BOUND: Duration = Duration::from_secs(60);

// === building a store ===

fn ok<T>(r: Result<tonic::Response<T>, tonic::Status>) -> T {
    r.expect("request").into_inner()
}

/// A few hundred entries of every common kind, written one by one (so sled rewrites
/// each block many times and writes several checkpoints).
async fn fill(c: &mut Clients) {
    let mut grants = Vec::new();
    for i in 0..30 {
        let g = format!("team-{i:02}");
        ok(c.admin
            .create_group(pb::CreateGroupRequest {
                name: g.clone(),
                request_id: format!("cg-{i}"),
            })
            .await);
        for k in 0..4 {
            ok(c.admin
                .add_member(member(&g, &format!("user-{:02}", (i * 3 + k) % 40)))
                .await);
        }
        let spec = match i % 3 {
            0 => spec(S::Raw, M::Ro, false),
            _ => spec(S::Limited, M::Unspecified, false),
        };
        grants.push(ok(c.admin.issue_grant(grant_req(group(&g), spec)).await).id);
    }
    for u in 0..5 {
        let user_name = format!("user-{:02}", 30 + u);
        ok(c.admin
            .add_member(member("docker-privileged", &user_name))
            .await);
        grants.push(
            ok(c.admin
                .issue_grant(grant_req(
                    user(&format!("solo-{u}")),
                    spec(S::Limited, M::Unspecified, u % 2 == 0),
                ))
                .await)
            .id,
        );
    }
    for id in grants.iter().step_by(6) {
        ok(c.admin
            .revoke_grant(pb::RevokeGrantRequest {
                grant_id: *id,
                reason: "rotated".into(),
                request_id: String::new(),
            })
            .await);
    }
    for n in 0..60 {
        ok(c.authz
            .authorize_spawn(pb::AuthorizeSpawnRequest {
                user: format!("user-{:02}", n % 40),
                server_name: format!("s{n}"),
                image: "jupyter/base".into(),
                request_id: format!("spawn-{n}"),
            })
            .await);
    }
    for (name, role) in [("hub", pb::Role::Spawner), ("auditor", pb::Role::Auditor)] {
        ok(c.admin
            .create_token(pb::CreateTokenRequest {
                name: name.into(),
                role: role.into(),
                request_id: String::new(),
                expires_at: None,
            })
            .await);
    }
    for i in 0..5 {
        ok(c.admin
            .remove_member(member(
                &format!("team-{i:02}"),
                &format!("user-{:02}", i * 3 % 40),
            ))
            .await);
    }
}

/// Checkpoint files in `data`, by seq.
fn checkpoint_seqs(data: &Path) -> Vec<u64> {
    let mut v: Vec<u64> = std::fs::read_dir(data.join("checkpoints"))
        .map(|d| {
            d.filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                name.strip_suffix(".checkpoint")?.parse().ok()
            })
            .collect()
        })
        .unwrap_or_default();
    v.sort_unstable();
    v
}

fn checkpoint_path(data: &Path, seq: u64) -> PathBuf {
    data.join("checkpoints")
        .join(format!("{seq:020}.checkpoint"))
}

/// Waits until the newest checkpoint file is recorded in the chain
/// (`state_checkpointed` with its seq) and fewer than an interval of entries follow
/// it, so that no checkpoint is in flight when the server stops (nothing else
/// writes) and the newest one on disk is a trusted one.
async fn settle_checkpoints(s: &TestServer, c: &mut Clients) {
    let mut stream = c
        .audit
        .stream(pb::StreamRequest {
            kinds: vec!["state_checkpointed".into()],
            ..stream_from(1, true)
        })
        .await
        .unwrap()
        .into_inner();
    let mut recorded = Vec::new();
    let r = tokio::time::timeout(BOUND, async {
        loop {
            let newest = checkpoint_seqs(s.data_dir()).last().copied().unwrap_or(0);
            if newest > 0
                && recorded.contains(&newest)
                && head(c).await < newest + CHECKPOINT_INTERVAL
            {
                return;
            }
            let e = stream.message().await.unwrap().expect("stream open");
            let body: serde_json::Value = serde_json::from_slice(&e.body).unwrap();
            recorded.push(body["event"]["at_seq"].as_u64().unwrap());
        }
    })
    .await;
    assert!(
        r.is_ok(),
        "the newest checkpoint was never recorded (recorded: {recorded:?}, on disk: {:?})",
        checkpoint_seqs(s.data_dir())
    );
}

/// A store of a few hundred entries with several checkpoints, stopped cleanly, then
/// started and stopped once more (sled writes its snapshot file when it opens a
/// store with a log to recover).
async fn build_store(data: &Path) {
    let s = TestServer::start_with(storage_cfg(data, CHECKPOINT_INTERVAL)).await;
    let mut c = s.admin().await;
    fill(&mut c).await;
    settle_checkpoints(&s, &mut c).await;
    drop(c);
    let s = s.restart().await;
    let mut c = s.admin().await;
    settle_checkpoints(&s, &mut c).await;
    drop(c);
    s.stop().await;
    assert!(
        checkpoint_seqs(data).len() >= 2,
        "{:?}",
        checkpoint_seqs(data)
    );
}

/// What a read-only server on (a copy of) a pristine store serves.
struct Pristine {
    entries: Vec<pb::Entry>,
    head_seq: u64,
    head_hash: Vec<u8>,
    who: Vec<pb::Access>,
    /// WhoHasAccess at each checkpoint's seq (point-in-time starts from checkpoints).
    who_at: Vec<(u64, Vec<pb::Access>)>,
    answers: Answers,
}

async fn record_pristine(data: &Path, scratch: &Path) -> Pristine {
    copy_tree(data, scratch);
    let s = TestServer::start_read_only(storage_cfg(scratch, CHECKPOINT_INTERVAL)).await;
    let mut c = s.admin().await;
    let h = ok(c.audit.head(pb::HeadRequest {}).await);
    let (entries, err) = stream_all(&mut c).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(entries.len() as u64, h.seq);
    let v = verify_all(&mut c).await;
    assert!(v.ok, "{v:?}");
    let who = who_timeless(&mut c, None).await;
    let mut who_at = Vec::new();
    for seq in checkpoint_seqs(data) {
        who_at.push((seq, who_timeless(&mut c, Some(seq)).await));
    }
    let answers = answers(&mut c).await;
    drop(c);
    s.stop().await;
    Pristine {
        entries,
        head_seq: h.seq,
        head_hash: h.hash,
        who,
        who_at,
        answers,
    }
}

// === a. flipped bytes ===

/// How one flipped byte was handled.
enum Outcome {
    /// Served; the history through the pristine head is byte-identical, the head is
    /// the pristine one, and it verifies.
    Whole {
        new_entries: usize,
    },
    /// Served; Verify names the first entry that differs.
    Found {
        seq: u64,
        problem: String,
    },
    /// Start-up refused; `--read-only` serves it.
    RefusedReadOnlyServes {
        refusal: String,
        read_only_verify: String,
    },
    /// Start-up refused, and sled cannot open the files even for forensics.
    SledCannotOpen {
        refusal: String,
        read_only: String,
        /// Forensic copies the failed read-only open left in the temporary directory
        /// (removed by the test).
        leaked: usize,
    },
    Failure(String),
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Whole { new_entries } => write!(
                f,
                "served whole (same head, every entry identical; {new_entries} start-up entries appended)"
            ),
            Outcome::Found { seq, problem } => {
                write!(f, "served; Verify: first_bad_seq {seq} ({problem})")
            }
            Outcome::RefusedReadOnlyServes {
                refusal,
                read_only_verify,
            } => write!(
                f,
                "refused [{refusal}]; --read-only serves it (Verify: {read_only_verify})"
            ),
            Outcome::SledCannotOpen {
                refusal,
                read_only,
                leaked,
            } => {
                write!(
                    f,
                    "refused [{refusal}]; sled cannot open it even read-only [{read_only}]"
                )?;
                if *leaked > 0 {
                    write!(f, " (and left {leaked} forensic copy in the temp dir)")?;
                }
                Ok(())
            }
            Outcome::Failure(why) => write!(f, "FAILURE: {why}"),
        }
    }
}

/// The part of a refusal worth a table cell: from "refusing to serve" on (when it
/// says so), the data directory's path as DATA, the `--read-only` hint abbreviated.
fn short(msg: &str, data: &Path) -> String {
    let m = msg.replace(&data.display().to_string(), "DATA");
    let m = match m.find("refusing to serve") {
        Some(i) => m[i..].to_string(),
        None => m,
    };
    m.replace(
        ". Nothing was changed; `privledger serve --read-only` opens it for forensics",
        " [--read-only hint]",
    )
}

const STARTUP_KINDS: &[&str] = &["server_started", "state_checkpointed"];

/// Runs a server on `data` (a damaged copy) and classifies what it does.
async fn judge(data: &Path, p: &Pristine, is_checkpoint: bool) -> Outcome {
    let started = tokio::time::timeout(
        BOUND,
        TestServer::try_start(storage_cfg(data, CHECKPOINT_INTERVAL), AUTHORIZER),
    )
    .await
    .unwrap_or_else(|_| Err("panicked: start-up hung".into()));
    match started {
        Ok(s) => {
            let o = judge_served(&s, p, is_checkpoint).await;
            s.stop().await;
            o
        }
        Err(refusal) if refusal.starts_with("panicked") => {
            Outcome::Failure(format!("start-up {}", short(&refusal, data)))
        }
        Err(refusal) => {
            let refused_cleanly = refusal.contains("refusing to serve this ledger: at seq ")
                && refusal.contains("--read-only");
            let mut cfg = storage_cfg(data, CHECKPOINT_INTERVAL);
            cfg.read_only = true;
            let ro = tokio::time::timeout(BOUND, TestServer::try_start(cfg, AUDIT))
                .await
                .unwrap_or_else(|_| Err("panicked: read-only start-up hung".into()));
            // sled's own files do not open: no seq can be named before they do, but the
            // refusal must say so and point to --read-only, which must then serve the
            // ledger as far as it survives, judged like any served ledger.
            let sled_damaged =
                refusal.contains("sled's files are damaged") && refusal.contains("--read-only");
            match ro {
                Ok(s) if !refused_cleanly && sled_damaged => {
                    let o = judge_served(&s, p, is_checkpoint).await;
                    s.stop().await;
                    match o {
                        Outcome::Failure(why) => Outcome::Failure(format!(
                            "refused [{}]; read-only: {why}",
                            short(&refusal, data)
                        )),
                        o => Outcome::RefusedReadOnlyServes {
                            refusal: short(&refusal, data),
                            read_only_verify: o.to_string(),
                        },
                    }
                }
                Ok(s) => {
                    let mut c = s.admin().await;
                    let v = match c.audit.verify(pb::VerifyRequest::default()).await {
                        Ok(v) => {
                            let v = v.into_inner();
                            match v.first_bad_seq {
                                None => format!("ok, {} checked", v.checked),
                                Some(b) => format!("first_bad_seq {b}: {}", v.problem),
                            }
                        }
                        Err(e) => format!("{:?}: {}", e.code(), e.message()),
                    };
                    let problem = match c.audit.head(pb::HeadRequest {}).await {
                        Ok(h) => h.into_inner().write_problem,
                        Err(e) => format!("Head failed: {e}"),
                    };
                    let health = health_status(&c.channel, AUTHORIZER).await;
                    drop(c);
                    s.stop().await;
                    if !refused_cleanly {
                        return Outcome::Failure(format!(
                            "refused without naming the seq and --read-only: {}",
                            short(&refusal, data)
                        ));
                    }
                    let seq: String = refusal
                        .split("refusing to serve this ledger: at seq ")
                        .nth(1)
                        .unwrap_or_default()
                        .chars()
                        .take_while(|c| c.is_ascii_digit())
                        .collect();
                    if !problem.contains(&format!("damaged at seq {seq}: ")) {
                        return Outcome::Failure(format!(
                            "refused at seq {seq}, but read-only Head does not report that \
                             damage: {problem:?}"
                        ));
                    }
                    if health.as_ref().ok() != Some(&2) {
                        return Outcome::Failure(format!(
                            "read-only: Authorizer health {health:?}, not NOT_SERVING"
                        ));
                    }
                    Outcome::RefusedReadOnlyServes {
                        refusal: short(&refusal, data),
                        read_only_verify: v,
                    }
                }
                Err(ro) if ro.starts_with("panicked") => Outcome::Failure(format!(
                    "refused [{}], then the read-only start-up {}",
                    short(&refusal, data),
                    short(&ro, data)
                )),
                Err(ro) => {
                    let leaked = remove_leaked_forensic_copies(data);
                    // sled cannot open what it wrote: the message must say that it is
                    // the store that cannot be opened, and where.
                    let clear =
                        |m: &str| m.contains("cannot open the ledger in") && m.contains("sled");
                    if clear(&refusal) && clear(&ro) {
                        Outcome::SledCannotOpen {
                            refusal: short(&refusal, data),
                            read_only: short(&ro, data),
                            leaked,
                        }
                    } else {
                        Outcome::Failure(format!(
                            "refused [{}] and read-only refused [{}], without saying clearly \
                             that sled cannot open the store",
                            short(&refusal, data),
                            short(&ro, data)
                        ))
                    }
                }
            }
        }
    }
}

/// Removes the forensic copies (`privledger-forensic-*` in the temporary directory)
/// of `data`'s sled directory, recognised by a byte-identical `ledger.sled/db`, and
/// returns how many there were. A read-only open copies sled there first, and when
/// sled then cannot open the copy, src/store.rs (`SledStore::open_with`) returns
/// without removing it; without this every run would leave megabytes behind.
fn remove_leaked_forensic_copies(data: &Path) -> usize {
    let ours = std::fs::read(data.join("ledger.sled/db")).unwrap_or_default();
    let mut n = 0;
    for e in std::fs::read_dir(std::env::temp_dir()).unwrap().flatten() {
        if !e
            .file_name()
            .to_string_lossy()
            .starts_with("privledger-forensic-")
        {
            continue;
        }
        let db = e.path().join("ledger.sled/db");
        let same_len = std::fs::metadata(&db).is_ok_and(|m| m.len() == ours.len() as u64);
        if same_len && std::fs::read(&db).is_ok_and(|b| b == ours) {
            let _ = std::fs::remove_dir_all(e.path());
            n += 1;
        }
    }
    n
}

/// A damaged store that a server started on: what it serves must be the pristine
/// history, or Verify must name where it is not.
async fn judge_served(s: &TestServer, p: &Pristine, is_checkpoint: bool) -> Outcome {
    let mut c = s.admin().await;
    let (entries, stream_err) = stream_all(&mut c).await;
    let verify = match c.audit.verify(pb::VerifyRequest::default()).await {
        Ok(v) => v.into_inner(),
        Err(e) => return Outcome::Failure(format!("served, but Verify failed: {e}")),
    };
    let first_diff = (1..=p.head_seq).find(|seq| {
        let i = *seq as usize - 1;
        entries.get(i) != p.entries.get(i)
    });
    let mut same_state = who_timeless(&mut c, None).await == p.who;
    // A forensic server stops its state before the damage: past positions beyond it
    // are refused, and then the answers differ.
    let state_head = c
        .audit
        .head(pb::HeadRequest {})
        .await
        .map(|h| h.into_inner().seq)
        .unwrap_or(0);
    for (seq, who) in &p.who_at {
        // A past position whose replay crosses the damage cannot be answered.
        same_state &= *seq <= state_head
            && try_who_timeless(&mut c, Some(*seq)).await.as_ref().ok() == Some(who);
    }
    same_state &= answers(&mut c).await == p.answers;
    match (first_diff, verify.first_bad_seq) {
        (None, None) => {
            let extra = &entries[p.head_seq as usize..];
            if let Some(e) = extra
                .iter()
                .find(|e| !STARTUP_KINDS.contains(&e.kind.as_str()))
            {
                return Outcome::Failure(format!(
                    "served whole but with an unexpected entry {} {}",
                    e.seq, e.kind
                ));
            }
            if entries[p.head_seq as usize - 1].hash != p.head_hash {
                return Outcome::Failure("the head entry's hash changed".into());
            }
            if let Some(e) = stream_err {
                return Outcome::Failure(format!("the stream failed: {e}"));
            }
            if !same_state {
                return Outcome::Failure(
                    "served the whole history but answers differ from the pristine store".into(),
                );
            }
            Outcome::Whole {
                new_entries: extra.len(),
            }
        }
        (Some(d), None) => Outcome::Failure(format!(
            "served a different history (first difference at seq {d} of {}; {} entries \
             served, stream error {:?}) and Verify says ok",
            p.head_seq,
            entries.len(),
            stream_err.map(|e| e.message().to_string())
        )),
        (d, Some(bad)) if d != Some(bad) => Outcome::Failure(format!(
            "Verify names seq {bad} ({}), but the first entry that differs is {d:?}",
            verify.problem
        )),
        (_, Some(bad)) => {
            if is_checkpoint && !same_state {
                return Outcome::Failure("a damaged checkpoint changed the answers".into());
            }
            let state = if same_state {
                "answers as pristine"
            } else {
                "answers differ"
            };
            Outcome::Found {
                seq: bad,
                problem: format!("{}; {state}", verify.problem),
            }
        }
    }
}

/// Offsets to flip in a file of `len` bytes: the first, 25%, 50%, 75% and the last;
/// in sled's data file also inside the first and the last stored copy of a mid-log
/// entry's body.
fn offsets(file: &Path, bytes: &[u8], p: &Pristine) -> Vec<(String, usize)> {
    let len = bytes.len();
    let mut v = vec![
        ("start".to_string(), 0),
        ("25%".to_string(), len / 4),
        ("50%".to_string(), len / 2),
        ("75%".to_string(), len * 3 / 4),
        ("last".to_string(), len - 1),
    ];
    if file.ends_with("ledger.sled/db") {
        let mid = &p.entries[p.entries.len() / 2];
        let needle = &mid.body[..48.min(mid.body.len())];
        let hits: Vec<usize> = bytes
            .windows(needle.len())
            .enumerate()
            .filter(|(_, w)| *w == needle)
            .map(|(i, _)| i)
            .collect();
        assert!(!hits.is_empty(), "seq {}'s body is not in db", mid.seq);
        v.push((format!("seq {} body, 1st copy", mid.seq), hits[0] + 30));
        if hits.len() > 1 {
            v.push((
                format!("seq {} body, last copy of {}", mid.seq, hits.len()),
                hits[hits.len() - 1] + 30,
            ));
        }
    }
    v.dedup_by_key(|(_, o)| *o);
    v
}

#[tokio::test]
async fn a_flipped_byte_anywhere_is_refused_or_found_never_served_as_whole() {
    let t0 = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let pristine_dir = dir.path().join("pristine");
    build_store(&pristine_dir).await;
    let p = record_pristine(&pristine_dir, &dir.path().join("pristine-view")).await;
    let files: Vec<PathBuf> = files_under(&pristine_dir)
        .into_iter()
        .filter(|f| !f.ends_with("admin.token"))
        .collect();
    println!(
        "pristine store: head {} ({}), {} checkpoints, files {:?}",
        p.head_seq,
        hex::encode(&p.head_hash[..6]),
        checkpoint_seqs(&pristine_dir).len(),
        files
    );
    assert!(files.iter().any(|f| f.ends_with("ledger.sled/db")));
    assert!(files.iter().any(|f| f.ends_with("ledger.sled/conf")));
    assert!(files.iter().any(|f| f.ends_with("ledger.head")));
    assert!(
        files
            .iter()
            .any(|f| f.to_string_lossy().starts_with("ledger.sled/snap.")),
        "sled wrote no snapshot file to damage"
    );

    let mut table = String::new();
    let mut failures = Vec::new();
    let mut trial = 0;
    for f in &files {
        let bytes = std::fs::read(pristine_dir.join(f)).unwrap();
        if bytes.is_empty() {
            println!("{}: empty, nothing to flip", f.display());
            continue;
        }
        let is_checkpoint = f.starts_with("checkpoints");
        for (label, off) in offsets(f, &bytes, &p) {
            trial += 1;
            let data = dir.path().join(format!("trial-{trial}"));
            copy_tree(&pristine_dir, &data);
            let mut damaged = bytes.clone();
            damaged[off] ^= 0xff;
            std::fs::write(data.join(f), &damaged).unwrap();
            let outcome = judge(&data, &p, is_checkpoint).await;
            let line = format!(
                "{} @ {off}/{} ({label}): {outcome}",
                f.display(),
                bytes.len()
            );
            println!("{line}");
            writeln!(table, "{line}").unwrap();
            if let Outcome::Failure(_) = outcome {
                failures.push(line);
            }
            std::fs::remove_dir_all(&data).unwrap();
        }
    }
    println!(
        "{trial} flipped bytes in {} files, {:.1} s",
        files.len(),
        t0.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "{} of {trial} flipped bytes were mishandled:\n{}\n\nall outcomes:\n{table}",
        failures.len(),
        failures.join("\n")
    );
}

// === b. a forged checkpoint ===

#[tokio::test]
async fn a_forged_checkpoint_changes_no_answer() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    build_store(&data).await;

    // Answers before the edit, and the proof that the newest checkpoint is trusted.
    let cfg = storage_cfg(&data, CHECKPOINT_INTERVAL);
    let s = TestServer::start_with(cfg.clone()).await;
    let mut c = s.admin().await;
    settle_checkpoints(&s, &mut c).await;
    let newest = *checkpoint_seqs(&data).last().unwrap();
    let file = checkpoint_path(&data, newest);
    let digest = hex::encode(sha2::Sha256::digest(std::fs::read(&file).unwrap()));
    let (entries, err) = stream_all(&mut c).await;
    assert!(err.is_none());
    assert!(
        entries.iter().any(|e| {
            let b: serde_json::Value = serde_json::from_slice(&e.body).unwrap();
            b["event"]["kind"] == "state_checkpointed"
                && b["event"]["at_seq"] == newest
                && b["event"]["sha256"] == digest.as_str()
        }),
        "the newest checkpoint ({newest}) is recorded in the chain with its digest"
    );
    let before = answers(&mut c).await;
    let who_at = who_timeless(&mut c, Some(newest)).await;
    let mallory = check_timeless(&mut c, "mallory").await;
    assert_eq!(mallory.socket(), S::None);
    let dave = check_timeless(&mut c, "user-30").await;
    assert_eq!(dave.socket(), S::Raw, "docker-privileged gives raw");
    drop(c);
    s.stop().await;
    assert_eq!(*checkpoint_seqs(&data).last().unwrap(), newest);

    // The edit: still valid JSON, still a well-formed checkpoint, mallory a member of
    // docker-privileged.
    let mut cp: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    let users = cp["users"].as_array_mut().expect("users");
    assert!(!users.iter().any(|u| u == "mallory"));
    users.push("mallory".into());
    let mallory_ix = users.len() - 1;
    let group_ix = cp["group_names"]
        .as_array()
        .unwrap()
        .iter()
        .position(|g| g == "docker-privileged")
        .expect("docker-privileged in group_names");
    let group = cp["groups"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|g| g["ix"] == group_ix)
        .expect("docker-privileged in groups");
    group["members"]
        .as_array_mut()
        .unwrap()
        .push(mallory_ix.into());
    let forged = serde_json::to_vec(&cp).unwrap();
    let st = privledger::ledger::State::from_checkpoint(&forged[..])
        .expect("the forged checkpoint is well-formed");
    let reread: serde_json::Value = serde_json::from_slice(&st.to_checkpoint().unwrap()).unwrap();
    assert_eq!(reread["users"][mallory_ix], "mallory");
    std::fs::write(&file, &forged).unwrap();

    let s = TestServer::start_with(cfg).await;
    let mut c = s.admin().await;
    let m = check_timeless(&mut c, "mallory").await;
    assert_eq!(m.socket(), S::None, "{m:?}");
    assert!(m.provenance.is_empty());
    let who = who_timeless(&mut c, None).await;
    assert!(!who.iter().any(|a| a.user == "mallory"), "{who:?}");
    let past = c
        .authz
        .check_access(pb::CheckAccessRequest {
            user: "mallory".into(),
            at: Some(pb::Position {
                at: Some(pb::position::At::Seq(newest)),
            }),
            omit_provenance: false,
            min_seq: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(past.socket(), S::None, "at the forged checkpoint's seq");
    assert_eq!(who_timeless(&mut c, Some(newest)).await, who_at);
    assert_eq!(answers(&mut c).await, before);
    let v = verify_all(&mut c).await;
    assert!(v.ok, "{v:?}");
    drop(c);
    s.stop().await;
}

// === c. the format-1 store of the previous release ===

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/store-v1.tar.gz"
);
const FIXTURE_HEAD: u64 = 44;
const FIXTURE_HEAD_HASH: &str = "21f2f6832717f3fd68cfc00c1a8421c141f459e582209cb745cedfeebf581a0b";

/// Gives the fixture store (whose admin secret is not part of it) an admin token the
/// test knows, appended by the library on the stopped store as an operator with the
/// data directory could; and, since only the library can act as the token named
/// "admin" that made the fixture's requests, checks there that a request_id of the
/// previous release still replays.
async fn library_token_and_replay(data: &Path) -> String {
    use privledger::ledger::{event::Role, hash_secret, log::LogStore, Command, Ledger};
    let store: Arc<dyn LogStore> = Arc::new(privledger::store::SledStore::open(data).unwrap());
    let ledger = Ledger::open(store, privledger::ledger::LedgerConfig::default()).unwrap();
    let head = ledger.head().unwrap().seq;
    assert_eq!(
        hex::encode(ledger.entry(FIXTURE_HEAD).unwrap().unwrap().hash),
        FIXTURE_HEAD_HASH
    );
    let r = ledger
        .submit(
            "admin",
            Some("spawn-5".into()),
            Command::AuthorizeSpawn {
                user: "alice".into(),
                server_name: "s5".into(),
                image: String::new(),
            },
        )
        .await
        .unwrap();
    assert!(r.replayed, "spawn-5 replays");
    assert_eq!(r.entry.seq, 16, "the original decision");
    assert_eq!(ledger.head().unwrap().seq, head, "nothing appended");
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).unwrap();
    let secret = hex::encode(b);
    ledger
        .submit(
            "storage-test",
            None,
            Command::CreateToken {
                name: "storage-test".into(),
                role: Role::Admin,
                secret_sha256: hash_secret(&secret),
                expires_at_ns: None,
            },
        )
        .await
        .unwrap();
    ledger.shutdown().await;
    secret
}

fn contribution(a: &pb::Access) -> Vec<(u64, String)> {
    a.provenance
        .iter()
        .map(|p| (p.grant_id, p.via_group.clone()))
        .collect()
}

async fn check_fixture_state(c: &mut Clients) {
    let who = who_timeless(c, None).await;
    let find = |u: &str| who.iter().find(|a| a.user == u);
    for u in ["alice", "bob", "carol"] {
        let a = find(u).unwrap_or_else(|| panic!("{u} has access: {who:?}"));
        assert_eq!(a.socket(), S::Limited, "{u}");
        assert_eq!(contribution(a), vec![(10, "builders".to_string())], "{u}");
    }
    let dave = find("dave").expect("dave");
    assert_eq!(dave.socket(), S::Raw);
    assert_eq!(
        contribution(dave),
        vec![(2, "docker-privileged".to_string())]
    );
    assert!(find("erin").is_none(), "grant 11 was revoked: {who:?}");
    assert_eq!(check_timeless(c, "erin").await.socket(), S::None);
    let grants = ok(c
        .admin
        .list_grants(pb::ListGrantsRequest {
            subject: None,
            include_inactive: true,
        })
        .await)
    .grants;
    let g11 = grants.iter().find(|g| g.id == 11).expect("grant 11");
    assert_eq!(g11.status(), pb::GrantStatus::Revoked);
}

#[tokio::test]
async fn a_format_1_store_is_upgraded_at_start_and_served_whole() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let out = std::process::Command::new("tar")
        .arg("-xzf")
        .arg(FIXTURE)
        .arg("-C")
        .arg(&data)
        .output()
        .expect("tar");
    assert!(
        out.status.success(),
        "tar: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!data.join("ledger.head").exists() && !data.join("admin.token").exists());

    // The first start upgrades, and serves.
    let p = ServeProcess::start(&data, &[], &dir.path().join("start-1.log"), AUTHORIZER).await;
    let log1 = p.log_text();
    p.terminate().await;
    assert!(
        log1.contains("upgrading the store from format 1") && log1.contains("store upgraded"),
        "{log1}"
    );
    assert!(
        data.join("ledger.head").exists(),
        "the upgrade wrote the witness"
    );
    assert!(!data.join("admin.token").exists(), "the ledger has tokens");

    let secret = library_token_and_replay(&data).await;

    let check_start = |log: &str| {
        assert!(!log.contains("upgrading"), "upgraded again:\n{log}");
        assert!(log.contains("ledger loaded"), "{log}");
    };
    let p = ServeProcess::start(&data, &[], &dir.path().join("start-2.log"), AUTHORIZER).await;
    check_start(&p.log_text());
    let mut c = p.client(&secret).await;
    let (entries, err) = stream_all(&mut c).await;
    assert!(err.is_none(), "{err:?}");
    let h = FIXTURE_HEAD as usize;
    assert_eq!(hex::encode(&entries[h - 1].hash), FIXTURE_HEAD_HASH);
    assert_eq!(entries[h - 1].seq, FIXTURE_HEAD);
    let kinds: Vec<&str> = entries[h..].iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        ["server_started", "token_issued", "server_started"],
        "after the fixture's 44: the upgrading start, the test's token, this start"
    );
    assert_eq!(entries[h].prev_hash, entries[h - 1].hash);
    let v = verify_all(&mut c).await;
    assert!(v.ok, "{v:?}");
    assert_eq!((v.from_seq, v.checked), (1, entries.len() as u64));
    check_fixture_state(&mut c).await;
    let before = answers(&mut c).await;
    drop(c);
    p.terminate().await;

    // Another start serves the same, without upgrading again.
    let p = ServeProcess::start(&data, &[], &dir.path().join("start-3.log"), AUTHORIZER).await;
    check_start(&p.log_text());
    let mut c = p.client(&secret).await;
    let (again, err) = stream_all(&mut c).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(again[..entries.len()], entries[..]);
    assert_eq!(again.len(), entries.len() + 1);
    assert_eq!(again.last().unwrap().kind, "server_started");
    let v = verify_all(&mut c).await;
    assert!(v.ok, "{v:?}");
    check_fixture_state(&mut c).await;
    assert_eq!(answers(&mut c).await, before);
    drop(c);
    p.terminate().await;
}
