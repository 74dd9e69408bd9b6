//! Durable appends through `Ledger::submit` (group commit) on a temp dir, at 1, 8
//! and 64 concurrent writers: a plain mutation (`add_member`) and a recorded spawn
//! decision (`authorize_spawn`), each acknowledged only after its batch's flush.
//!
//! Concurrency needs `iter_custom`: each measured iteration is one acknowledged
//! append, shared among the writers; inputs are built before the clock starts.

mod common;

use std::time::{Duration, Instant};

use common::{decisions, open, runtime, submit_all, user_name, Population};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use privledger::ledger::Command;

fn append(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("append");
    g.throughput(Throughput::Elements(1));
    g.sample_size(10);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(8));
    for kind in ["add_member", "authorize_spawn"] {
        for writers in [1usize, 8, 64] {
            let dir = tempfile::tempdir().expect("tempdir");
            let ledger = open(dir.path());
            let pop = Population {
                users: 1000,
                groups: 10,
                groups_per_user: 0,
                grants: 20,
            };
            rt.block_on(submit_all(&ledger, pop.commands(), 64));
            let mut made = 0usize;
            g.bench_function(format!("{kind}/writers={writers}"), |b| {
                b.iter_custom(|iters| {
                    let n = iters as usize;
                    let cmds: Vec<Command> = match kind {
                        "add_member" => (made..made + n)
                            .map(|i| Command::AddMember {
                                group: common::group_name(i % pop.groups),
                                user: user_name(1_000_000 + i),
                                reason: None,
                            })
                            .collect(),
                        _ => decisions(&pop, n),
                    };
                    made += n;
                    let t0 = Instant::now();
                    rt.block_on(submit_all(&ledger, cmds, writers));
                    t0.elapsed()
                })
            });
            rt.block_on(ledger.shutdown());
        }
    }
    g.finish();
}

criterion_group!(benches, append);
criterion_main!(benches);
