//! DESIGN §10: a consumer that stops reading for a million entries and resumes gets
//! all of them in order, with memory bounded meanwhile. Alone in its test binary, so
//! that the process's resident memory is this test's.

use std::sync::Arc;

use privledger::ledger::{Command, Ledger, LedgerConfig, StreamFilter};

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|k| k.parse::<u64>().ok())
            })
        })
        .map_or(0, |kb| kb * 1024)
}

/// A follower that reads nothing while a million entries are appended (64 concurrent
/// submitters, group commit), then resumes, receives every one in order; meanwhile
/// the stream holds one chunk and the rest stays in the store until it is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_follower_during_a_million_appends_resumes_with_everything_in_order() {
    const N: usize = 1_000_000;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(privledger::store::SledStore::open(dir.path()).unwrap());
    let l = Ledger::open(
        store,
        LedgerConfig {
            checkpoint_interval: 250_000,
            ..LedgerConfig::default()
        },
    )
    .unwrap();
    let mut rx = l
        .stream_records(1, true, StreamFilter::default(), 1, None)
        .unwrap();
    let before = rss_bytes();
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let l = l.clone();
            tokio::spawn(async move {
                for _ in 0..N / 64 {
                    l.submit(
                        "load",
                        None,
                        Command::ServerStarted {
                            version: "x".into(),
                        },
                    )
                    .await
                    .unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let grown = rss_bytes().saturating_sub(before);
    // What waits for the reader: one chunk in the channel.
    assert!(rx.len() <= 1, "{} chunks buffered", rx.len());
    // The million bodies alone would be over 150 MB.
    assert!(
        grown < 150 << 20,
        "memory grew by {} MB while stalled",
        grown >> 20
    );
    println!(
        "resident memory grew by {} MB during a million appends",
        grown >> 20
    );
    let head = l.snapshot().seq;
    assert!(head >= N as u64);
    let mut next = 1;
    while next <= head {
        let chunk = rx.recv().await.unwrap().unwrap();
        for e in chunk {
            assert_eq!(e.seq, next, "in order, no gap, no duplicate");
            next += 1;
        }
    }
    l.shutdown().await;
}
