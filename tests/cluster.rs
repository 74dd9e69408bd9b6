//! Cluster mode, end to end: three etcd members and three `privledger serve` nodes on
//! loopback (the real binary, real etcd, real sled on disk). Skipped with a printed
//! reason when there is no etcd binary, unless PRIVLEDGER_REQUIRE_ETCD=1.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::etcd::EtcdCluster;
use common::ServeProcess;
use privledger::client::Clients;
use privledger::pb;
use rustix::process::Signal;

/// A bound on a broken run, never a speed assertion.
const BOUND: Duration = Duration::from_secs(60);

struct Nodes {
    etcd: EtcdCluster,
    nodes: Vec<Option<ServeProcess>>,
    dirs: Vec<PathBuf>,
    token: String,
    /// More flags for every node.
    extra: Vec<String>,
    _tmp: tempfile::TempDir,
}

impl Nodes {
    /// Three etcd members and three nodes; node 0 starts first, so it is the first
    /// writer and writes the admin token every node then accepts.
    async fn start() -> Option<Nodes> {
        Nodes::start_with(Vec::new()).await
    }

    async fn start_with(extra: Vec<String>) -> Option<Nodes> {
        let etcd = EtcdCluster::start(3).await?;
        let tmp = tempfile::tempdir().unwrap();
        let dirs: Vec<PathBuf> = (0..3).map(|i| tmp.path().join(format!("n{i}"))).collect();
        for d in &dirs {
            std::fs::create_dir(d).unwrap();
            std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o700))
                .unwrap();
        }
        let mut n = Nodes {
            etcd,
            nodes: Vec::new(),
            dirs,
            token: String::new(),
            extra,
            _tmp: tmp,
        };
        let first = n.spawn(0).await;
        assert!(
            first
                .wait_for_log("created the first admin token", BOUND)
                .await,
            "{}",
            first.log_tail()
        );
        n.token = first.admin_token();
        n.nodes.push(Some(first));
        for i in 1..3 {
            let p = n.spawn(i).await;
            n.nodes.push(Some(p));
        }
        Some(n)
    }

    async fn spawn(&self, i: usize) -> ServeProcess {
        self.spawn_on(i, &self.etcd.endpoints()).await
    }

    /// Node `i`, talking to the etcd members at `endpoints` only.
    async fn spawn_on(&self, i: usize, endpoints: &str) -> ServeProcess {
        self.spawn_in(&self.dirs[i], &format!("n{i}"), endpoints, &self.extra)
            .await
    }

    /// A node `id` on `dir`, with `extra` flags.
    async fn spawn_in(
        &self,
        dir: &std::path::Path,
        id: &str,
        endpoints: &str,
        extra: &[String],
    ) -> ServeProcess {
        let log = self._tmp.path().join(format!("{id}.{}.log", now_tag()));
        let mut args = vec![
            "--etcd-endpoints",
            endpoints,
            "--node-id",
            id,
            "--stale-after",
            "2s",
        ];
        args.extend(extra.iter().map(String::as_str));
        ServeProcess::start(dir, &args, &log, "privledger.v1.Audit").await
    }

    /// A new node on an empty data directory.
    async fn spawn_fresh(&self, id: &str, extra: &[String]) -> ServeProcess {
        let dir = self._tmp.path().join(id);
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .unwrap();
        self.spawn_in(&dir, id, &self.etcd.endpoints(), extra).await
    }

    fn node(&self, i: usize) -> &ServeProcess {
        self.nodes[i].as_ref().expect("node running")
    }

    fn node_mut(&mut self, i: usize) -> &mut ServeProcess {
        self.nodes[i].as_mut().expect("node running")
    }

    fn alive(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|i| self.nodes[*i].is_some())
            .collect()
    }

    async fn client(&self, i: usize) -> Clients {
        self.node(i).client(&self.token).await
    }

    async fn head(&self, i: usize) -> pb::HeadResponse {
        self.client(i)
            .await
            .audit
            .head(pb::HeadRequest {})
            .await
            .expect("head")
            .into_inner()
    }

    /// The node that holds the writer's lease now.
    async fn writer(&self) -> usize {
        self.writer_among(&self.alive()).await
    }

    /// Waits until every running node has applied `seq` (following its audit head).
    async fn all_reach(&self, seq: u64) {
        for i in self.alive() {
            let mut c = self.client(i).await;
            let deadline = Instant::now() + BOUND;
            let mut s = loop {
                match c.audit.stream(common::stream_from(seq.max(1), true)).await {
                    Ok(s) => break s.into_inner(),
                    // A node just started may not have applied the admin token's entry
                    // yet: it knows the token once it has caught up that far.
                    Err(s)
                        if s.code() == tonic::Code::Unauthenticated
                            && Instant::now() < deadline => {}
                    Err(s) => panic!("node {i}: stream: {s:?}"),
                }
            };
            let got = tokio::time::timeout(BOUND, s.message()).await;
            assert!(
                matches!(got, Ok(Ok(Some(_)))),
                "node {i} did not reach seq {seq}: {got:?}\n{}",
                self.node(i).log_tail()
            );
        }
    }

    /// Every running node: the same head, and the chain verifies.
    async fn agree_and_verify(&self) -> pb::HeadResponse {
        let w = self.writer().await;
        let head = self.head(w).await;
        self.all_reach(head.seq).await;
        for i in self.alive() {
            let mut c = self.client(i).await;
            let h = c.audit.head(pb::HeadRequest {}).await.unwrap().into_inner();
            // A node may be ahead of what was read a moment ago; compare at that seq.
            let at = c
                .audit
                .stream(common::stream_from(head.seq, false))
                .await
                .unwrap()
                .into_inner()
                .message()
                .await
                .unwrap()
                .expect("the entry at the head");
            assert_eq!(at.hash, head.hash, "node {i} forked at seq {}", head.seq);
            assert!(h.seq >= head.seq);
            let v = common::verify_all(&mut c).await;
            assert!(v.ok, "node {i} does not verify: {v:?}");
        }
        head
    }
}

fn now_tag() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// Creates group `name` (request_id = name) through the nodes in `order`, moving on
/// to the next after an error, until one acknowledges it; returns its seq.
async fn create_anywhere(n: &Nodes, order: &[usize], name: &str) -> u64 {
    let deadline = Instant::now() + BOUND;
    let mut k = 0;
    loop {
        let i = order[k % order.len()];
        k += 1;
        let mut c = n.client(i).await;
        let req = pb::CreateGroupRequest {
            name: name.into(),
            request_id: name.into(),
        };
        match tokio::time::timeout(Duration::from_secs(5), c.admin.create_group(req)).await {
            Ok(Ok(g)) => return g.into_inner().seq,
            Ok(Err(s)) => assert!(
                s.code() == tonic::Code::Unavailable || s.code() == tonic::Code::DeadlineExceeded,
                "{name} through node {i}: {s:?}"
            ),
            Err(_) => {}
        }
        assert!(Instant::now() < deadline, "{name} was never acknowledged");
    }
}

/// The groups every node lists, by name, with their creating seq.
async fn groups(n: &Nodes, i: usize) -> BTreeMap<String, u64> {
    let mut c = n.client(i).await;
    c.admin
        .list_groups(pb::ListGroupsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .groups
        .into_iter()
        .map(|g| (g.name, g.created_seq))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_through_every_node_reach_every_node_and_one_etcd_member_may_go() {
    let Some(mut n) = Nodes::start().await else {
        return;
    };
    let w = n.writer().await;
    for round in 0..4 {
        for i in 0..3 {
            let name = format!("g{i}-{round}");
            let seq = create_anywhere(&n, &[i], &name).await;
            // Read your write through another node: it waits for the seq, or asks
            // the writer.
            let other = (i + 1) % 3;
            let mut c = n.client(other).await;
            let access = c
                .authz
                .check_access(pb::CheckAccessRequest {
                    user: "alice".into(),
                    min_seq: seq,
                    ..Default::default()
                })
                .await
                .expect("check with min_seq")
                .into_inner();
            assert!(
                access.seq >= seq,
                "node {other} answered at {} < {seq}",
                access.seq
            );
        }
    }
    let head = n.agree_and_verify().await;
    let all = groups(&n, w).await;
    for i in 0..3 {
        assert_eq!(groups(&n, i).await, all, "node {i} lists other groups");
    }
    // Roles, as `privledger status --json` shows them.
    let mut leaders = 0;
    for i in 0..3 {
        let out = std::process::Command::new(common::binary())
            .args(["status", "--json", "--server", &n.node(i).url])
            .env("PRIVLEDGER_TOKEN", &n.token)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let c = &v["cluster"];
        assert_eq!(c["node_id"], format!("n{i}"));
        assert_eq!(c["writer_id"], format!("n{w}"), "{v}");
        assert!(c["applied_seq"].as_u64().unwrap() >= head.seq);
        if c["role"] == "leader" {
            leaders += 1;
        } else {
            assert_eq!(c["role"], "follower");
        }
    }
    assert_eq!(leaders, 1);

    // One etcd member down: writes go on, through every node.
    n.etcd.kill(0);
    for i in 0..3 {
        create_anywhere(&n, &[i], &format!("after-member-down-{i}")).await;
    }
    n.agree_and_verify().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_writer_loses_no_acknowledged_write_and_a_restarted_node_catches_up() {
    let Some(n) = Nodes::start().await else {
        return;
    };
    let w = n.writer().await;
    let n = std::sync::Arc::new(tokio::sync::RwLock::new(n));
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(String, u64)>::new()));
    let (killed_tx, killed_rx) = tokio::sync::watch::channel(false);
    // How many writes were acknowledged so far.
    let (count_tx, mut count_rx) = tokio::sync::watch::channel(0usize);
    let count_tx = std::sync::Arc::new(count_tx);
    let mut writers = Vec::new();
    for t in 0..3usize {
        let (n, acked, killed) = (n.clone(), acked.clone(), killed_rx.clone());
        let count = count_tx.clone();
        writers.push(tokio::spawn(async move {
            // Each writer keeps going until well after the kill.
            let mut after_kill = 0;
            for k in 0.. {
                let name = format!("w{t}-{k}");
                let order: Vec<usize> = (0..3).map(|j| (t + j) % 3).collect();
                let seq = {
                    let g = n.read().await;
                    let order: Vec<usize> = order
                        .into_iter()
                        .filter(|i| g.alive().contains(i))
                        .collect();
                    create_anywhere(&g, &order, &name).await
                };
                let done = {
                    let mut a = acked.lock().unwrap();
                    a.push((name, seq));
                    a.len()
                };
                count.send_replace(done);
                if *killed.borrow() {
                    after_kill += 1;
                    if after_kill >= 10 {
                        return;
                    }
                }
            }
        }));
    }
    // Kill the writer once writes are flowing.
    tokio::time::timeout(BOUND, count_rx.wait_for(|n| *n >= 30))
        .await
        .expect("writes did not flow")
        .unwrap();
    {
        let mut g = n.write().await;
        g.node_mut(w).kill();
        g.nodes[w] = None;
    }
    killed_tx.send_replace(true);
    for t in writers {
        t.await.expect("writer task");
    }
    let n = std::sync::Arc::try_unwrap(n).ok().unwrap().into_inner();
    let head = n.agree_and_verify().await;
    let acked = acked.lock().unwrap().clone();
    let mut seqs = BTreeSet::new();
    for i in n.alive() {
        let listed = groups(&n, i).await;
        for (name, seq) in &acked {
            assert_eq!(
                listed.get(name),
                Some(seq),
                "node {i}: acknowledged {name} at seq {seq} is not there"
            );
        }
    }
    for (name, seq) in &acked {
        assert!(seqs.insert(*seq), "{name}: seq {seq} acknowledged twice");
    }
    // The killed node comes back on its data directory and catches up.
    let mut n = n;
    let back = n.spawn(w).await;
    n.nodes[w] = Some(back);
    n.all_reach(head.seq).await;
    let again = n.agree_and_verify().await;
    assert!(again.seq >= head.seq);
    assert_eq!(groups(&n, w).await, groups(&n, (w + 1) % 3).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_stopped_past_its_lease_is_fenced_and_the_chain_does_not_fork() {
    let Some(mut n) = Nodes::start().await else {
        return;
    };
    let w = n.writer().await;
    create_anywhere(&n, &[w], "before-stop").await;
    n.node_mut(w).signal(Signal::STOP);
    // A write sent to the stopped writer waits in its queue while another node is
    // elected and writes.
    let stuck = {
        let url = n.node(w).url.clone();
        let token = n.token.clone();
        tokio::spawn(async move {
            let mut c = Clients::connect(&url, Some(&token)).await.unwrap();
            c.admin
                .create_group(pb::CreateGroupRequest {
                    name: "from-the-stopped-writer".into(),
                    request_id: "from-the-stopped-writer".into(),
                })
                .await
        })
    };
    let others: Vec<usize> = (0..3).filter(|i| *i != w).collect();
    for k in 0..5 {
        create_anywhere(&n, &others, &format!("while-stopped-{k}")).await;
    }
    let new_writer = n.writer_among(&others).await;
    assert_ne!(new_writer, w);
    n.node_mut(w).signal(Signal::CONT);
    // Whatever became of the queued write, it is recorded at most once and on every
    // node alike: the old writer could not append past the fence.
    let r = tokio::time::timeout(BOUND, stuck)
        .await
        .expect("the queued write ends");
    match r.unwrap() {
        Ok(_) => {}
        Err(s) => assert_eq!(s.code(), tonic::Code::Unavailable, "{s:?}"),
    }
    create_anywhere(&n, &[w], "after-cont").await;
    n.agree_and_verify().await;
    let listed = groups(&n, w).await;
    assert_eq!(listed, groups(&n, new_writer).await);
    assert!(listed.contains_key("after-cont"));
    assert!(
        n.node(w)
            .log_text()
            .contains("no longer the cluster's writer")
            || n.node(w).log_text().contains("the writer's lease was lost")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_paused_while_etcd_compacts_its_history_catches_up_and_verifies() {
    let Some(mut n) = Nodes::start().await else {
        return;
    };
    let w = n.writer().await;
    let f = (w + 1) % 3;
    n.node_mut(f).signal(Signal::STOP);
    for k in 0..40 {
        create_anywhere(&n, &[w], &format!("c{k}")).await;
    }
    // Compact etcd's history up to now: the paused follower's watch is from before.
    let etcd = n.etcd.client();
    let (_, rev) = etcd.get(b"/privledger/privledger/head").await.unwrap();
    etcd.compact(rev).await.unwrap();
    n.node_mut(f).signal(Signal::CONT);
    let head = n.agree_and_verify().await;
    assert!(head.seq > 40);
    assert_eq!(groups(&n, f).await, groups(&n, w).await);
}

impl Nodes {
    /// The writer, one of `among`. When none says it is (an election under way), a
    /// write through them waits for one: acknowledged, it was made by the writer.
    async fn writer_among(&self, among: &[usize]) -> usize {
        for probe in [false, true] {
            if probe {
                create_anywhere(self, among, &format!("probe-{}", now_tag())).await;
            }
            for &i in among {
                if self.head(i).await.role == "leader" {
                    return i;
                }
            }
        }
        panic!("none of {among:?} is the writer after a write through them");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_etcd_past_its_bound_answers_no_access_question() {
    let Some(mut n) = Nodes::start().await else {
        return;
    };
    // Node 2 talks to etcd member 2 only; the writer is node 0 (it started first).
    n.node_mut(2).kill();
    let only = n.etcd.members[2].client_url.clone();
    let p = n.spawn_on(2, &only).await;
    n.nodes[2] = Some(p);
    let w = n.writer().await;
    assert_ne!(w, 2);
    let seq = create_anywhere(&n, &[w], "seen-by-all").await;
    n.all_reach(seq).await;
    n.etcd.kill(2);
    let mut c = n.client(2).await;
    // Past its bound the node says so in health (NOT_SERVING), and refuses.
    common::wait_health(&c.channel, "privledger.v1.Authorizer", 2).await;
    let refusal = c
        .authz
        .check_access(common::check("alice"))
        .await
        .expect_err("a node cut off from etcd answers no access question");
    assert_eq!(refusal.code(), tonic::Code::Unavailable);
    assert!(
        refusal.message().contains("has not heard from etcd"),
        "{}",
        refusal.message()
    );
    let who = c
        .authz
        .who_has_access(pb::WhoHasAccessRequest::default())
        .await;
    assert_eq!(common::code(who), tonic::Code::Unavailable);
    // The past does not change: a point-in-time answer is still given.
    c.authz
        .check_access(common::check_at_seq("alice", seq))
        .await
        .expect("a past position is answered");
    // The other nodes go on; node 2 answers again once its member is back.
    create_anywhere(&n, &[0, 1], "while-cut-off").await;
    n.etcd.restart(2).await;
    common::wait_health(&c.channel, "privledger.v1.Authorizer", 1).await;
    c.authz
        .check_access(common::check("alice"))
        .await
        .expect("node 2 answers again");
    n.agree_and_verify().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_out_of_etcds_reach_answers_no_access_question_from_its_disk() {
    let Some(mut n) = Nodes::start().await else {
        return;
    };
    let w = n.writer().await;
    let seq = create_anywhere(&n, &[w], "before-the-restart").await;
    n.all_reach(seq).await;
    let f = (0..3).find(|i| *i != w).unwrap();
    n.node_mut(f).kill();
    // Back on an address where no member answers: what its disk holds may be long
    // out of date, and it has nothing to tell it otherwise.
    let nobody = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let p = n.spawn_on(f, &nobody).await;
    n.nodes[f] = Some(p);
    let mut c = n.client(f).await;
    let refusal = c
        .authz
        .check_access(common::check("alice"))
        .await
        .expect_err("a node that never reached etcd answers no access question");
    assert_eq!(refusal.code(), tonic::Code::Unavailable);
    assert!(
        refusal
            .message()
            .contains("has not reached etcd since it started"),
        "{}",
        refusal.message()
    );
    common::wait_health(&c.channel, "privledger.v1.Authorizer", 2).await;
    // The past is answered from its disk; and once it reaches etcd, the present too.
    c.authz
        .check_access(common::check_at_seq("alice", seq))
        .await
        .expect("a past position is answered");
    n.node_mut(f).kill();
    let p = n.spawn(f).await;
    n.nodes[f] = Some(p);
    let mut c = n.client(f).await;
    common::wait_health(&c.channel, "privledger.v1.Authorizer", 1).await;
    c.authz
        .check_access(common::check("alice"))
        .await
        .expect("answers once in touch with etcd");
}

/// Waits until the election has `n` candidates (each node's key under its name).
async fn candidates(etcd: &privledger::etcd::client::Etcd, n: usize) {
    let start = b"/privledger/privledger/writer/".to_vec();
    let end = b"/privledger/privledger/writer0".to_vec();
    let r = etcd.range(&start, &end, 0).await.unwrap();
    let mut have = r.kvs.len();
    let rev = r.header.map_or(0, |h| h.revision);
    let mut w = etcd.watch(&start, &end, rev + 1).await.unwrap();
    while have < n {
        let r = tokio::time::timeout(BOUND, w.events.message())
            .await
            .expect("the candidates never campaigned")
            .unwrap()
            .expect("the watch is open");
        for e in r.events {
            if e.r#type == 0 {
                have += 1;
            } else {
                have -= 1;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_candidate_whose_campaign_waits_on_a_paused_member_learns_it_won_through_another() {
    let Some(mut n) = Nodes::start().await else {
        return;
    };
    let w = n.writer().await;
    let others: Vec<usize> = (0..3).filter(|i| *i != w).collect();
    let head = n.head(w).await.seq;
    n.all_reach(head).await;
    // The other two campaign through member 2 (their first endpoint).
    let m = &n.etcd.members;
    let order = format!(
        "{},{},{}",
        m[2].client_url, m[0].client_url, m[1].client_url
    );
    for &i in &others {
        n.node_mut(i).kill();
        n.nodes[i] = Some(n.spawn_on(i, &order).await);
    }
    candidates(&n.etcd.client(), 3).await;
    n.all_reach(head).await;
    // Member 2 stops answering with both campaigns waiting on it; then the writer
    // dies. Their leases live on through the other members, so one of them is now
    // the oldest candidate: it must learn so without member 2 (a read through
    // another member says so within a lease; the connection's keep-alive would also
    // end the campaign, later — a member cut off from its peers but not from this
    // node answers keep-alives, and then the read is all there is).
    n.etcd.signal(2, Signal::STOP);
    n.node_mut(w).kill();
    n.nodes[w] = None;
    let seq = create_anywhere(&n, &others, "with-member-2-paused").await;
    n.etcd.signal(2, Signal::CONT);
    n.all_reach(seq).await;
    n.agree_and_verify().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_seals_old_batches_into_the_archive_and_a_new_node_bootstraps_from_it() {
    let archive = tempfile::tempdir().unwrap();
    let archive_dir = archive.path().to_str().unwrap().to_string();
    let flags = vec![
        "--archive-dir".to_string(),
        archive_dir.clone(),
        "--seal-after".to_string(),
        "40".to_string(),
    ];
    let Some(n) = Nodes::start_with(flags.clone()).await else {
        return;
    };
    let w = n.writer().await;
    let first = create_anywhere(&n, &[w], "s0").await;
    for k in 1..120 {
        create_anywhere(&n, &[w], &format!("s{k}")).await;
    }
    // The writer seals once etcd holds more than 40 entries.
    let etcd = n.etcd.client();
    let earliest_key = b"/privledger/privledger/earliest";
    let (kv, rev) = etcd.get(earliest_key).await.unwrap();
    let value = match kv {
        Some(kv) => kv.value,
        None => {
            // Watch the key from the revision read: its first put is the seal.
            let mut w = etcd.watch(earliest_key, &[], rev + 1).await.unwrap();
            loop {
                let r = tokio::time::timeout(BOUND, w.events.message())
                    .await
                    .expect("nothing was sealed")
                    .unwrap()
                    .expect("the watch is open");
                if let Some(kv) = r.events.into_iter().find_map(|e| e.kv) {
                    break kv.value;
                }
            }
        }
    };
    let earliest = privledger::etcd::keys::SeqValue::decode_value(&value).unwrap();
    assert!(earliest > 40, "earliest {earliest}");
    // The sealed batches left etcd; their segments verify offline.
    let keys = privledger::etcd::keys::Keys::new("privledger");
    let gone = etcd
        .range(&keys.batch(1), &keys.batch(earliest), 0)
        .await
        .unwrap();
    assert!(gone.kvs.is_empty(), "sealed batches are still in etcd");
    let segments: Vec<_> = std::fs::read_dir(archive.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    assert!(!segments.is_empty());
    for s in &segments {
        let out = std::process::Command::new(common::binary())
            .args(["verify", "--file"])
            .arg(s)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    // A new node bootstraps from the archive plus etcd, verifying as it goes.
    let mut n = n;
    let fresh = n.spawn_fresh("n9", &flags).await;
    n.nodes.push(Some(fresh));
    let head = n.agree_and_verify().await;
    assert_eq!(groups(&n, 3).await, groups(&n, w).await);
    assert!(n.node(3).log_text().contains("applied an archived segment"));
    // Without the archive, a new node says what it lacks.
    let lost = n.spawn_fresh("n10", &[]).await;
    assert!(
        lost.wait_for_log("it needs the archive", BOUND).await,
        "{}",
        lost.log_tail()
    );
    assert!(head.seq > 120);
    drop(lost);
    // The bootstrapped node alone: it becomes the writer, and a retry of a request
    // sealed long ago is still answered with its first result.
    for i in 0..3 {
        n.node_mut(i).kill();
        n.nodes[i] = None;
    }
    assert_eq!(n.writer().await, 3, "the only node left writes");
    let mut c = n.client(3).await;
    let again = c
        .admin
        .create_group(pb::CreateGroupRequest {
            name: "s0".into(),
            request_id: "s0".into(),
        })
        .await
        .expect("a retry of an archived request")
        .into_inner();
    assert!(again.replayed && again.seq == first, "{again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_reach_etcd_with_client_certificates_and_forward_writes_over_tls() {
    let pki = common::pki::Pki::new("cluster test CA");
    let (member_cert, member_key) = pki.issue("etcd", "etcd member", true);
    let (node_etcd_cert, node_etcd_key) = pki.issue("node-etcd", "ledger node", false);
    let (node_cert, node_key) = pki.issue("node", "ledger node", true);
    let tls = common::etcd::EtcdTls {
        ca: pki.ca_file(),
        cert: member_cert,
        key: member_key,
        client_cert: node_etcd_cert.clone(),
        client_key: node_etcd_key.clone(),
    };
    let Some(etcd) = EtcdCluster::start_with(3, Some(tls)).await else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let p = |s: &std::path::Path| s.to_str().unwrap().to_string();
    let mut nodes = Vec::new();
    for i in 0..2 {
        let dir = tmp.path().join(format!("n{i}"));
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .unwrap();
        let cmd = ServeProcess::command(
            &dir,
            &[
                "--etcd-endpoints",
                &etcd.endpoints(),
                "--node-id",
                &format!("n{i}"),
                "--etcd-ca",
                &p(&pki.ca_file()),
                "--etcd-cert",
                &p(&node_etcd_cert),
                "--etcd-key",
                &p(&node_etcd_key),
                "--tls-cert",
                &p(&node_cert),
                "--tls-key",
                &p(&node_key),
                "--peer-ca",
                &p(&pki.ca_file()),
            ],
        );
        let node = ServeProcess::spawn_connecting(
            cmd,
            &dir,
            &tmp.path().join(format!("n{i}.log")),
            "privledger.v1.Audit",
            Some(pki.trusted()),
        )
        .await;
        if i == 0 {
            assert!(
                node.wait_for_log("created the first admin token", BOUND)
                    .await,
                "{}",
                node.log_tail()
            );
        }
        nodes.push(node);
    }
    assert!(nodes[0].url.starts_with("https://"));
    let token = nodes[0].admin_token();
    // Node 1 follows; its write goes to node 0 over TLS (trusted by --peer-ca).
    let mut c1 = nodes[1].client(&token).await;
    // (A node that does not know the writer yet waits for it to be known.)
    let g = c1
        .admin
        .create_group(common::create_group("over-tls"))
        .await
        .expect("a write forwarded over TLS")
        .into_inner();
    let mut c0 = nodes[0].client(&token).await;
    let access = c1
        .authz
        .check_access(pb::CheckAccessRequest {
            user: "alice".into(),
            min_seq: g.seq,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(access.seq >= g.seq);
    for c in [&mut c0, &mut c1] {
        let v = common::verify_all(c).await;
        assert!(v.ok && v.to_seq >= g.seq, "{v:?}");
    }
    let head = c1
        .audit
        .head(pb::HeadRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(head.role, "follower");
    assert_eq!(head.writer_id, "n0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etcd_member_paused_under_the_nodes_is_left_for_another_and_everyone_catches_up() {
    let Some(n) = Nodes::start().await else {
        return;
    };
    create_anywhere(&n, &[0, 1, 2], "before-pause").await;
    // Every node talks to member 0 first: its watch and its calls there go silent.
    n.etcd.signal(0, Signal::STOP);
    for k in 0..10 {
        create_anywhere(&n, &[0, 1, 2], &format!("paused-{k}")).await;
    }
    let head = n.agree_and_verify().await;
    for i in 0..3 {
        let mut c = n.client(i).await;
        let a = c
            .authz
            .check_access(common::check("alice"))
            .await
            .expect("a node in touch with the cluster answers");
        assert!(a.into_inner().seq >= head.seq.min(1));
    }
    n.etcd.signal(0, Signal::CONT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_stopped_gracefully_resigns_and_the_others_write_on() {
    let Some(mut n) = Nodes::start().await else {
        return;
    };
    let w = n.writer().await;
    let seq = create_anywhere(&n, &[w], "before-stop").await;
    let old = n.nodes[w].take().expect("the writer runs");
    let log = old.log.clone();
    old.terminate().await;
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("stopping: resigning the writer's lease"),
        "{text}"
    );
    let others: Vec<usize> = (0..3).filter(|i| *i != w).collect();
    let after = create_anywhere(&n, &others, "after-stop").await;
    assert!(after > seq);
    assert_ne!(n.writer_among(&others).await, w);
    n.agree_and_verify().await;
}

/// The checkpoint files in a node's data directory, by seq.
fn checkpoint_files(data: &std::path::Path) -> BTreeMap<u64, Vec<u8>> {
    let Ok(dir) = std::fs::read_dir(data.join("checkpoints")) else {
        return BTreeMap::new();
    };
    dir.filter_map(|e| {
        let path = e.ok()?.path();
        let seq = path.file_name()?.to_str()?.strip_suffix(".checkpoint")?;
        Some((seq.parse().ok()?, std::fs::read(&path).ok()?))
    })
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_keep_the_writers_checkpoints_and_restart_from_them() {
    let extra = vec!["--checkpoint-interval".to_string(), "20".to_string()];
    let Some(mut n) = Nodes::start_with(extra).await else {
        return;
    };
    let w = n.writer().await;
    // The follower's own interval is never reached: what it keeps is the writer's.
    let f = (w + 1) % 3;
    n.nodes[f]
        .take()
        .expect("the follower runs")
        .terminate()
        .await;
    let late = ["--checkpoint-interval".to_string(), "100000".to_string()];
    let endpoints = n.etcd.endpoints();
    let again = n
        .spawn_in(&n.dirs[f], &format!("n{f}"), &endpoints, &late)
        .await;
    n.nodes[f] = Some(again);
    for k in 0..100 {
        create_anywhere(&n, &[w], &format!("cp-{k}")).await;
    }
    let head = n.agree_and_verify().await;
    // A graceful stop waits for the checkpoint being written.
    let stopped = n.nodes[f].take().expect("the follower runs");
    let log = stopped.log_tail();
    stopped.terminate().await;
    let (kept, written) = (checkpoint_files(&n.dirs[f]), checkpoint_files(&n.dirs[w]));
    assert!(
        !kept.is_empty(),
        "the follower kept none of the writer's checkpoints {:?}\n{log}",
        written.keys()
    );
    // Each file kept is the writer's own, byte for byte (both prune to their newest).
    for (seq, bytes) in &kept {
        if let Some(theirs) = written.get(seq) {
            assert!(
                theirs == bytes,
                "checkpoint {seq} differs from the writer's"
            );
        }
    }
    // Restarted, it loads from the newest it kept (the chain vouches for it), and
    // replays only what came after.
    let back = n.spawn(f).await;
    let from = common::loaded_from_checkpoint(&back.log_text());
    assert_eq!(
        Some(from),
        kept.keys().last().copied(),
        "{}",
        back.log_text()
    );
    n.nodes[f] = Some(back);
    n.all_reach(head.seq).await;
    n.agree_and_verify().await;
    // A past position on the follower is answered from the kept checkpoints.
    let past = common::who_timeless(&mut n.client(f).await, Some(from)).await;
    let on_writer = common::who_timeless(&mut n.client(w).await, Some(from)).await;
    assert_eq!(past, on_writer);
}
