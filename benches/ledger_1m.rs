//! A ledger of 1M entries (the `populate` shape: 10k groups, 100k users in 8 groups
//! each, 50k grants, then spawn decisions up to 1M), written once through the writer
//! by many concurrent submitters; then start-up (`Ledger::open`: sled recovery, newest
//! checkpoint, tail replay), a state checkpoint round trip, and verify of all 1M
//! entries. Small sample sizes: each iteration takes seconds.

mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use common::{decisions, open, runtime, submit_all, Population};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use privledger::ledger::State;

const ENTRIES: u64 = 1_000_000;

fn ledger_1m(c: &mut Criterion) {
    let rt = runtime();
    let pop = Population {
        groups_per_user: 8,
        ..Population::DESIGN
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let t0 = Instant::now();
    let (state, head) = rt.block_on(async {
        let l = open(dir.path());
        submit_all(&l, pop.commands(), 256).await;
        let have = l.snapshot().seq;
        submit_all(&l, decisions(&pop, (ENTRIES - have) as usize), 256).await;
        let st = l.snapshot();
        l.shutdown().await;
        (st, ENTRIES)
    });
    let secs = t0.elapsed().as_secs_f64();
    eprintln!(
        "wrote {head} entries through the writer (256 submitters) in {secs:.1} s = {:.0}/s",
        head as f64 / secs
    );

    let mut g = c.benchmark_group("ledger_1m");
    g.sample_size(10);
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(20));

    g.bench_function(format!("startup/entries={ENTRIES}"), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t0 = Instant::now();
                let l = open(dir.path());
                total += t0.elapsed();
                assert_eq!(l.snapshot().seq, ENTRIES);
                rt.block_on(l.shutdown());
            }
            total
        })
    });

    g.bench_function(format!("checkpoint_encode/users={}", pop.users), |b| {
        b.iter(|| black_box(state.to_checkpoint()))
    });
    let cp = state.to_checkpoint().expect("encodes");
    eprintln!("checkpoint: {:.1} MB", cp.len() as f64 / 1e6);
    g.bench_function(format!("checkpoint_decode/users={}", pop.users), |b| {
        b.iter_batched(
            || cp.clone(),
            |cp| black_box(State::from_checkpoint(&cp[..]).expect("decodes")),
            BatchSize::LargeInput,
        )
    });

    let l = open(dir.path());
    g.throughput(Throughput::Elements(ENTRIES));
    g.bench_function(format!("verify/entries={ENTRIES}"), |b| {
        b.iter(|| {
            let r = rt.block_on(l.verify(0, 0)).expect("verify");
            assert!(r.first_bad.is_none());
            r.checked
        })
    });
    rt.block_on(l.shutdown());
    g.finish();
}

criterion_group!(benches, ledger_1m);
criterion_main!(benches);
