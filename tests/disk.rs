//! Storage failures under load on real filesystems: a full disk (tmpfs) stalls writes
//! and recovers without a restart, and an ext4 error (remounted read-only) loses no
//! acknowledged write. Needs root (mount, losetup); skips with a printed reason
//! without, unless `PRIVLEDGER_REQUIRE_DISK_TESTS=1`, which makes it fail instead.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use pb::{SocketAccess as S, SocketMode as M};
use privledger::client::Clients;
use privledger::pb;
use tonic::Code;

const SERVING: i32 = 1;
const NOT_SERVING: i32 = 2;
const ENOSPC: i32 = 28;

/// Prints why a test does not run; fails instead under
/// `PRIVLEDGER_REQUIRE_DISK_TESTS=1`.
fn skip(reason: &str) {
    if std::env::var("PRIVLEDGER_REQUIRE_DISK_TESTS").as_deref() == Ok("1") {
        panic!("PRIVLEDGER_REQUIRE_DISK_TESTS=1 but {reason}");
    }
    eprintln!("skipping: {reason}");
}

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

/// Runs a system command; its stdout, or a message with its stderr.
fn run_cmd(program: &str, args: &[&OsStr]) -> Result<String, String> {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "{program} {args:?}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A filesystem mounted for one test (tmpfs, or ext4 on a loop device); unmounted
/// (lazily when still busy) and its loop device detached when dropped, also when
/// the test fails.
struct Mounted {
    dir: PathBuf,
    /// `/dev/loopN` for ext4.
    device: Option<String>,
    mounted: bool,
    /// Holds the mount point and the image.
    _tmp: tempfile::TempDir,
}

impl Mounted {
    fn tmpfs(size: &str) -> Result<Mounted, String> {
        let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
        let dir = tmp.path().join("mnt");
        std::fs::create_dir(&dir).map_err(|e| e.to_string())?;
        run_cmd(
            "mount",
            &[
                os("-t"),
                os("tmpfs"),
                os("-o"),
                os(&format!("size={size},mode=0755")),
                os("tmpfs"),
                dir.as_os_str(),
            ],
        )
        .map_err(|e| format!("cannot mount a tmpfs: {e}"))?;
        Ok(Mounted {
            dir,
            device: None,
            mounted: true,
            _tmp: tmp,
        })
    }

    /// A fresh ext4 of `mb` MB on a loop device, mounted `errors=remount-ro`.
    fn ext4_loop(mb: u64) -> Result<Mounted, String> {
        let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
        let dir = tmp.path().join("mnt");
        std::fs::create_dir(&dir).map_err(|e| e.to_string())?;
        let image = tmp.path().join("fs.img");
        std::fs::File::create(&image)
            .and_then(|f| f.set_len(mb << 20))
            .map_err(|e| format!("cannot create the image: {e}"))?;
        let device = run_cmd("losetup", &[os("-f"), os("--show"), image.as_os_str()])
            .map_err(|e| format!("no loop device: {e}"))?;
        let mut m = Mounted {
            dir,
            device: Some(device.clone()),
            mounted: false,
            _tmp: tmp,
        };
        run_cmd("mkfs.ext4", &[os("-q"), os(&device)]).map_err(|e| format!("mkfs: {e}"))?;
        m.mount()?;
        Ok(m)
    }

    fn device_name(&self) -> String {
        let d = self.device.as_deref().expect("a loop device");
        d.rsplit('/').next().unwrap().to_string()
    }

    fn mount(&mut self) -> Result<(), String> {
        let dev = self.device.clone().expect("a loop device");
        run_cmd(
            "mount",
            &[
                os("-t"),
                os("ext4"),
                os("-o"),
                os("errors=remount-ro"),
                os(&dev),
                self.dir.as_os_str(),
            ],
        )
        .map_err(|e| format!("cannot mount {dev}: {e}"))?;
        self.mounted = true;
        Ok(())
    }

    /// Unmounts (the caller has stopped whatever used the filesystem; on drop, a
    /// busy one, e.g. sled's threads of an in-process server finishing, is detached
    /// lazily instead).
    fn umount(&mut self) -> Result<(), String> {
        run_cmd("umount", &[self.dir.as_os_str()])?;
        self.mounted = false;
        Ok(())
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if self.mounted && self.umount().is_err() {
            let _ = run_cmd("umount", &[os("-l"), self.dir.as_os_str()]);
        }
        if let Some(d) = &self.device {
            let _ = run_cmd("losetup", &[os("-d"), os(d)]);
        }
    }
}

/// Bytes available on the filesystem holding `path`.
fn available(path: &Path) -> u64 {
    let st = rustix::fs::statvfs(path).expect("statvfs");
    st.f_bavail * st.f_frsize
}

/// Appends zeros to `path` until at most `leave` bytes are available on its
/// filesystem (0: until ENOSPC, down to the last page); returns the bytes added.
fn fill(path: &Path, leave: u64) -> std::io::Result<u64> {
    use std::io::Write as _;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    let zeros = vec![0u8; 1 << 20];
    let mut chunk = zeros.len();
    let mut total = 0;
    loop {
        if leave > 0 {
            let free = available(path);
            if free <= leave {
                break;
            }
            chunk = chunk.min((free - leave) as usize).max(4096);
        }
        match f.write(&zeros[..chunk]) {
            Ok(0) => break,
            Ok(n) => total += n as u64,
            Err(e) if e.raw_os_error() == Some(ENOSPC) => {
                if chunk == 4096 {
                    break;
                }
                chunk /= 2;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(total)
}

async fn fill_async(path: &Path, leave: u64) -> u64 {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || fill(&path, leave))
        .await
        .unwrap()
        .expect("filling the disk")
}

fn create(name: &str) -> pb::CreateGroupRequest {
    pb::CreateGroupRequest {
        name: name.into(),
        request_id: format!("req-{name}"),
    }
}

/// Every entry from 1, in one non-follow stream: their seqs and, for each created
/// group, the seqs of its `group_created` entries.
async fn read_all(c: &mut Clients) -> (Vec<u64>, HashMap<String, Vec<u64>>) {
    let (entries, err) = stream_all(c).await;
    assert!(err.is_none(), "stream: {err:?}");
    let mut seqs = Vec::new();
    let mut created: HashMap<String, Vec<u64>> = HashMap::new();
    for e in entries {
        seqs.push(e.seq);
        if e.kind == "group_created" {
            let body: serde_json::Value = serde_json::from_slice(&e.body).unwrap();
            let g = body["event"]["group"].as_str().unwrap().to_string();
            created.entry(g).or_default().push(e.seq);
        }
    }
    (seqs, created)
}

/// Every group ListGroups returns, with the seq that created it.
async fn listed_groups(c: &mut Clients) -> HashMap<String, u64> {
    c.admin
        .list_groups(pb::ListGroupsRequest {})
        .await
        .expect("ListGroups")
        .into_inner()
        .groups
        .into_iter()
        .map(|g| (g.name, g.created_seq))
        .collect()
}

/// The ledger holds each acknowledged group exactly once, at its acknowledged seq;
/// seqs are dense from 1 and the chain verifies. Returns the head.
async fn check_complete(c: &mut Clients, acked: &BTreeMap<String, u64>) -> u64 {
    let h = head(c).await;
    let (seqs, created) = read_all(c).await;
    assert_eq!(
        seqs,
        (1..=h).collect::<Vec<_>>(),
        "seqs dense from 1 to the head"
    );
    for (name, seqs) in &created {
        assert_eq!(
            seqs.len(),
            1,
            "group {name} created more than once: {seqs:?}"
        );
    }
    for (name, seq) in acked {
        assert_eq!(
            created.get(name),
            Some(&vec![*seq]),
            "acknowledged group {name} (seq {seq})"
        );
    }
    let v = verify_all(c).await;
    assert!(v.ok, "verify: {v:?}");
    assert_eq!(v.checked, h);
    let listed = listed_groups(c).await;
    for name in acked.keys() {
        assert!(listed.contains_key(name), "{name} listed");
    }
    h
}

/// Counts the results writer tasks record, so a test waits for the next one instead
/// of sleeping.
type Progress = Arc<tokio::sync::watch::Sender<u64>>;

fn progress() -> Progress {
    Arc::new(tokio::sync::watch::channel(0).0)
}

/// Waits (at most `bound`, a limit on a broken run) until `done` holds, looking again
/// after each recorded result.
async fn wait_for(progress: &Progress, bound: Duration, mut done: impl FnMut() -> bool) -> bool {
    let mut rx = progress.subscribe();
    let waited = tokio::time::timeout(bound, async {
        while !done() {
            if rx.changed().await.is_err() {
                return;
            }
        }
    })
    .await;
    waited.is_ok() && done()
}

#[derive(Default)]
struct WriteLog {
    acked: Vec<(String, u64)>,
    unavailable: Vec<String>,
    other: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stalls_writes_keeps_reads_and_recovers_without_a_restart() {
    // Big enough for a fresh store (sled needs a few MB to open again), small enough
    // to fill at once.
    let fs = match Mounted::tmpfs("24m") {
        Ok(m) => m,
        Err(reason) => return skip(&reason),
    };
    let s = TestServer::start_with(test_cfg(&fs.dir.join("data"))).await;
    let filler = fs.dir.join("filler");
    tokio::time::timeout(Duration::from_secs(180), full_disk(s, &filler))
        .await
        .expect("the full-disk test did not finish within 180 s");
    drop(fs);
}

async fn full_disk(s: TestServer, filler: &Path) {
    let started = Instant::now();
    let mut c = s.admin().await;
    let ch = c.channel.clone();
    ok(c.admin.create_group(create("team"))).await;
    ok(c.admin.add_member(member("team", "alice"))).await;
    ok(c.admin.issue_grant(grant_req(
        group("team"),
        spec(S::Limited, M::Unspecified, false),
    )))
    .await;

    // Writes in a loop (four clients, so that batches hold several entries) while
    // the filler takes the disk.
    let log = Arc::new(Mutex::new(WriteLog::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let done = progress();
    let mut writers = Vec::new();
    for w in 0..4 {
        let (log, stop, mut admin) = (log.clone(), stop.clone(), c.admin.clone());
        let done = done.clone();
        writers.push(tokio::spawn(async move {
            let mut i = 0u32;
            while !stop.load(Ordering::SeqCst) {
                let name = format!("g{w}-{i:05}");
                i += 1;
                let r = admin.create_group(create(&name)).await;
                {
                    let mut l = log.lock().unwrap();
                    match r {
                        Ok(g) => l.acked.push((name, g.into_inner().seq)),
                        Err(e) if e.code() == Code::Unavailable => l.unavailable.push(name),
                        Err(e) => l.other.push(format!("{name}: {e}")),
                    }
                }
                done.send_modify(|n| *n += 1);
            }
        }));
    }
    let acked_count = || log.lock().unwrap().acked.len();
    let failed_count = || log.lock().unwrap().unavailable.len();
    // Wait (bounded) until `n` writes are acknowledged, or one failed.
    let until_acked = |n: usize| {
        let done = done.clone();
        async move {
            let reached = wait_for(&done, Duration::from_secs(30), || {
                acked_count() >= n || failed_count() > 0
            })
            .await;
            assert!(reached, "only {} writes acknowledged", acked_count());
        }
    };
    until_acked(100).await;
    // Nearly full, while writes go on; then full.
    let mut filled = fill_async(filler, 2 << 20).await;
    let near_full = acked_count();
    until_acked(near_full + 100).await;
    filled += fill_async(filler, 0).await;
    // Keep it full (a probe or sled may free a page) until writes fail: refill after
    // each result the writers record, with a bound.
    let mut full_checks = 0;
    while failed_count() < 20 {
        full_checks += 1;
        assert!(
            full_checks < 3000,
            "writes did not fail on a full disk; acknowledged {}",
            acked_count()
        );
        filled += fill_async(filler, 0).await;
        let mut next = done.subscribe();
        let _ = tokio::time::timeout(Duration::from_secs(5), next.changed()).await;
    }
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.await.unwrap();
    }
    let (mut acked, failed) = {
        let l = log.lock().unwrap();
        assert!(
            l.other.is_empty(),
            "writes failed otherwise than UNAVAILABLE: {:?}",
            l.other
        );
        let acked: BTreeMap<String, u64> = l.acked.iter().cloned().collect();
        assert_eq!(acked.len(), l.acked.len());
        (acked, l.unavailable.clone())
    };
    eprintln!(
        "filled {filled} bytes; {} writes acknowledged ({near_full} before nearly full), \
         {} UNAVAILABLE after {:?}",
        acked.len(),
        failed.len(),
        started.elapsed()
    );

    // Stalled: writes are refused, health says so, every read still answers.
    wait_health(&ch, "", NOT_SERVING).await;
    wait_health(&ch, "privledger.v1.Admin", NOT_SERVING).await;
    wait_health(&ch, "privledger.v1.Authorizer", NOT_SERVING).await;
    assert_eq!(health_status(&ch, "privledger.v1.Audit").await, Ok(SERVING));
    let e = c
        .admin
        .create_group(create("while-full"))
        .await
        .expect_err("a write on a full disk");
    assert_eq!(e.code(), Code::Unavailable, "{e}");
    eprintln!("a write while full: {}", e.message());
    let h = head(&mut c).await;
    let max_acked = acked.values().copied().max().unwrap_or(0);
    assert!(
        h >= max_acked,
        "head {h} below acknowledged seq {max_acked}"
    );
    let a = check_timeless(&mut c, "alice").await;
    assert_eq!(a.socket, S::Limited as i32);
    let who = c
        .authz
        .who_has_access(pb::WhoHasAccessRequest { at: None })
        .await
        .expect("WhoHasAccess while full")
        .into_inner();
    assert!(who.users.iter().any(|u| u.user == "alice"));
    let (seqs, created) = read_all(&mut c).await;
    assert_eq!(seqs, (1..=h).collect::<Vec<_>>(), "stream while full");
    for name in &failed {
        assert!(
            !created.contains_key(name),
            "refused write {name} is in the log"
        );
        let r = c
            .admin
            .get_group(pb::GetGroupRequest { name: name.clone() })
            .await;
        assert_eq!(r.map(|_| ()).unwrap_err().code(), Code::NotFound, "{name}");
    }
    let v = verify_all(&mut c).await;
    assert!(v.ok && v.checked == h, "verify while full: {v:?}");

    // Space again: without a restart, health and writes come back by themselves.
    std::fs::remove_file(filler).unwrap();
    let freed = Instant::now();
    wait_health(&ch, "", SERVING).await;
    wait_health(&ch, "privledger.v1.Admin", SERVING).await;
    eprintln!(
        "serving again {:?} after the filler was removed",
        freed.elapsed()
    );
    // SERVING is reported once storage recovered: the next write succeeds.
    let seq = c
        .admin
        .create_group(create("after-full"))
        .await
        .unwrap_or_else(|e| panic!("write after the disk freed and health said SERVING: {e}"))
        .into_inner()
        .seq;
    acked.insert("after-full".into(), seq);
    // Each refused write, sent again with its request_id, is recorded now, once.
    for name in &failed {
        let g = c
            .admin
            .create_group(create(name))
            .await
            .unwrap_or_else(|e| panic!("retrying {name}: {e}"))
            .into_inner();
        assert!(
            !g.replayed,
            "{name} was refused, yet replayed from seq {}",
            g.seq
        );
        acked.insert(name.clone(), g.seq);
    }
    // Acknowledged ones replay with their seq.
    let sample: Vec<(String, u64)> = acked.iter().take(3).map(|(n, s)| (n.clone(), *s)).collect();
    for (name, seq) in sample {
        let g = ok(c.admin.create_group(create(&name))).await;
        assert!(g.replayed && g.seq == seq, "{name}: {g:?}");
    }
    for i in 0..20 {
        let name = format!("later-{i}");
        let g = ok(c.admin.create_group(create(&name))).await;
        acked.insert(name, g.seq);
    }
    let h = check_complete(&mut c, &acked).await;

    // And all of it after a restart on the same directory.
    let s = s.restart().await;
    let mut c = s.admin().await;
    assert!(check_complete(&mut c, &acked).await >= h);
    s.stop().await;
    eprintln!("full-disk test took {:?}", started.elapsed());
}

#[derive(Default)]
struct LoadLog {
    acked: Vec<(String, u64)>,
    /// Acknowledged although sent after the filesystem error: must stay empty.
    acked_after_error: Vec<(String, u64)>,
    /// Answered UNAVAILABLE ("nothing was recorded").
    unavailable: Vec<String>,
    other: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ext4_error_remounting_read_only_loses_no_acknowledged_write() {
    let mut fs = match Mounted::ext4_loop(64) {
        Ok(m) => m,
        Err(reason) => return skip(&reason),
    };
    let trigger = PathBuf::from(format!(
        "/sys/fs/ext4/{}/trigger_fs_error",
        fs.device_name()
    ));
    if !trigger.exists() {
        return skip(&format!("{} does not exist", trigger.display()));
    }
    let logs = tempfile::tempdir().unwrap();
    tokio::time::timeout(
        Duration::from_secs(180),
        ext4_error(&mut fs, &trigger, logs.path()),
    )
    .await
    .expect("the ext4 error test did not finish within 180 s");
}

async fn ext4_error(fs: &mut Mounted, trigger: &Path, logs: &Path) {
    let started = Instant::now();
    let data = fs.dir.join("data");
    let mut srv = ServeProcess::start(&data, &[], &logs.join("serve-1.log"), "").await;
    let c = srv.admin().await;

    let log = Arc::new(Mutex::new(LoadLog::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let errored = Arc::new(AtomicBool::new(false));
    let refused = Arc::new(AtomicU64::new(0));
    let done = progress();
    let mut tasks = Vec::new();
    for t in 0..8 {
        let (log, stop, errored, refused) =
            (log.clone(), stop.clone(), errored.clone(), refused.clone());
        let done = done.clone();
        let mut admin = c.admin.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = 0u32;
            while !stop.load(Ordering::SeqCst) {
                let name = format!("t{t}-{i:05}");
                i += 1;
                // Read before sending: true means the error was raised before.
                let after = errored.load(Ordering::SeqCst);
                let r = admin.create_group(create(&name)).await;
                {
                    let mut l = log.lock().unwrap();
                    match r {
                        Ok(g) => {
                            let seq = g.into_inner().seq;
                            if after {
                                l.acked_after_error.push((name.clone(), seq));
                            }
                            l.acked.push((name, seq));
                        }
                        Err(e) if e.code() == Code::Unavailable => {
                            l.unavailable.push(name);
                            if after {
                                refused.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                        Err(e) => l.other.push(format!("{name}: {e}")),
                    }
                }
                done.send_modify(|n| *n += 1);
            }
        }));
    }
    // About a second of writes (and some acknowledged) before the error.
    let acked = || log.lock().unwrap().acked.len();
    let warmed = wait_for(&done, Duration::from_secs(30), || {
        started.elapsed() >= Duration::from_secs(1) && acked() >= 50
    })
    .await;
    assert!(
        warmed,
        "only {} writes acknowledged:\n{}",
        acked(),
        srv.log_tail()
    );
    let before = acked();
    std::fs::write(trigger, "1").expect("trigger_fs_error");
    errored.store(true, Ordering::SeqCst);
    // Keep writing briefly: what is sent now must be refused.
    let refusing = wait_for(&done, Duration::from_secs(10), || {
        refused.load(Ordering::SeqCst) >= 200
    })
    .await;
    assert!(
        refusing,
        "writes were not refused after the error:\n{}",
        srv.log_tail()
    );
    wait_health(&c.channel, "", NOT_SERVING).await;
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        t.await.unwrap();
    }
    let (acked, refused): (BTreeMap<String, u64>, Vec<String>) = {
        let l = log.lock().unwrap();
        assert!(
            l.acked_after_error.is_empty(),
            "acknowledged after the filesystem error: {:?}",
            l.acked_after_error
        );
        assert!(l.other.is_empty(), "not UNAVAILABLE: {:?}", l.other);
        eprintln!(
            "{} writes acknowledged ({before} before the error was raised), {} UNAVAILABLE",
            l.acked.len(),
            l.unavailable.len()
        );
        (l.acked.iter().cloned().collect(), l.unavailable.clone())
    };
    let max_acked = acked.values().copied().max().unwrap();
    drop(c);
    srv.kill();
    let first_log = srv.log_tail();
    assert!(
        first_log.contains("storage write failed"),
        "the server logged no storage failure:\n{first_log}"
    );
    for line in first_log.lines().filter(|l| l.contains("storage")).take(3) {
        eprintln!("serve-1: {line}");
    }

    // Repair offline, then start on what the disk holds.
    fs.umount().expect("umount after the error");
    let dev = fs.device.clone().unwrap();
    let out = std::process::Command::new("e2fsck")
        .args(["-fy", &dev])
        .output()
        .unwrap();
    let code = out.status.code().unwrap_or(-1);
    assert!(
        (0..=2).contains(&code),
        "e2fsck exited {code}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    fs.mount().expect("mount after e2fsck");
    let srv = ServeProcess::start(&data, &[], &logs.join("serve-2.log"), "").await;
    let mut c = srv.admin().await;
    let h = head(&mut c).await;
    assert!(
        h >= max_acked,
        "reloaded head {h} is below the acknowledged seq {max_acked}:\n{}",
        srv.log_tail()
    );
    let groups = listed_groups(&mut c).await;
    for (name, seq) in &acked {
        assert_eq!(groups.get(name), Some(seq), "acknowledged group {name}");
    }
    // Writes answered UNAVAILABLE ("nothing was recorded") should not be in the
    // ledger either. Known bug, not asserted yet: when a batch reached the disk but
    // its fdatasync or witness write failed, start-up keeps the entries beyond the
    // head witness (only `recover`, which a killed server never ran, cuts them).
    let mut refused_present: Vec<(u64, &String)> = refused
        .iter()
        .filter_map(|n| groups.get(n).map(|s| (*s, n)))
        .collect();
    refused_present.sort();
    if !refused_present.is_empty() {
        panic!(
            "writes answered UNAVAILABLE are in the ledger after the restart: \
             {refused_present:?}\nserve-1:\n{first_log}\nserve-2:\n{}",
            srv.log_tail()
        );
    }
    let v = verify_all(&mut c).await;
    assert!(v.ok && v.checked == h, "verify after repair: {v:?}");
    drop(c);
    srv.terminate().await;
    eprintln!(
        "ext4 error test took {:?}; e2fsck exited {code}; head {h}, highest acknowledged {max_acked}",
        started.elapsed()
    );
}
