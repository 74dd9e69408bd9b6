//! Policy evaluation in process over the DESIGN §7 population (100k users, 10k
//! groups, 20 groups per user, 50k grants), state built by `State::apply` directly.

mod common;

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use common::{user_name, Population};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use privledger::ledger::policy;

fn evaluate(c: &mut Criterion) {
    // The DESIGN population: about 80 active grants reach each user (20 groups with
    // 4 or 5 grants each). A sparser one (about 4 per user) shows the cost per
    // contributing grant.
    let sparse = Population {
        grants: 2_000,
        ..Population::DESIGN
    };
    for pop in [Population::DESIGN, sparse] {
        evaluate_population(c, pop);
    }
}

fn evaluate_population(c: &mut Criterion, pop: Population) {
    let t0 = Instant::now();
    let st = Arc::new(pop.state());
    let reach: usize = (0..1000)
        .map(|i| {
            policy::evaluate(&st, &user_name(i * 97), 0)
                .provenance()
                .count()
        })
        .sum();
    eprintln!(
        "population {} built in {:.1?}; {:.1} grants reach a user on average",
        pop.label(),
        t0.elapsed(),
        reach as f64 / 1000.0
    );
    let at = 2_000_000_000;
    let mut g = c.benchmark_group("policy");
    g.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    g.bench_function(format!("evaluate/{}", pop.label()), |b| {
        b.iter_batched(
            || {
                i = (i + 7919) % pop.users;
                user_name(i)
            },
            |u| black_box(policy::evaluate(&st, &u, at)),
            BatchSize::SmallInput,
        )
    });
    // The answer plus a walk over its provenance (what CheckAccess sends).
    g.bench_function(format!("evaluate_with_provenance/{}", pop.label()), |b| {
        b.iter_batched(
            || {
                i = (i + 7919) % pop.users;
                user_name(i)
            },
            |u| {
                let a = policy::evaluate(&st, &u, at);
                black_box(a.provenance().map(|c| c.grant.id).sum::<u64>())
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function(format!("evaluate_unknown_user/{}", pop.label()), |b| {
        b.iter_batched(
            || "nobody".to_string(),
            |u| black_box(policy::evaluate(&st, &u, at)),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, evaluate);
criterion_main!(benches);
