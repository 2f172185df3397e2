//! Cost of one pick at 1, 10, 100 and 1,000 agents: power of two choices on peak-EWMA ×
//! (outstanding + 1), against a uniform random pick (the floor: a random index and an Arc
//! clone). Both include the `Arc<Agent>` clone and drop the caller pays.
//!
//! `cargo bench -p agent-pool --bench picker -- --warm-up-time 1 --measurement-time 2`

use std::hint::black_box;

use agent_pool::{Endpoint, Pool, PoolConfig, Update};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

fn pool(n: usize) -> Pool {
    let pool = Pool::new(PoolConfig::default());
    let eps = (0..n)
        .map(|i| {
            Endpoint::new(
                format!("10.{}.{}.{}:9999", i / 65536, (i / 256) % 256, i % 256)
                    .parse()
                    .unwrap(),
            )
        })
        .collect();
    pool.apply(Update::Reset(eps));
    // Uneven load, so the comparison has work to do.
    let snap = pool.snapshot();
    for (i, a) in snap.agents().iter().enumerate() {
        for _ in 0..(i % 4) {
            std::mem::forget(a.start());
        }
    }
    pool
}

fn picker(c: &mut Criterion) {
    let mut group = c.benchmark_group("pick");
    for n in [1usize, 10, 100, 1_000] {
        let pool = pool(n);
        let snap = pool.snapshot();
        group.bench_with_input(BenchmarkId::new("p2c_peak_ewma", n), &snap, |b, s| {
            b.iter(|| black_box(s.pick()))
        });
        group.bench_with_input(BenchmarkId::new("uniform_random", n), &snap, |b, s| {
            b.iter(|| black_box(agent_pool::__bench::uniform_pick(s)))
        });
        group.bench_with_input(BenchmarkId::new("snapshot_then_p2c", n), &pool, |b, p| {
            b.iter(|| black_box(p.snapshot().pick()))
        });
    }
    group.finish();
}

criterion_group!(benches, picker);
criterion_main!(benches);
