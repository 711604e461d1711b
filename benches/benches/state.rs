//! The authenticated state at a million keys: proof size, proof
//! verification, proving, and the cost of a block's write set.
//! `cargo bench -p hm-benches --bench state`

// Benchmark inputs are our own; unwrap is fine.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use hm_kernel::state::{StateProof, StateTree, TreeWrite, key_hash, sorted_writes, value_digest};

/// Keys in the benchmarked tree.
const KEYS: u64 = 1_000_000;

fn key(index: u64) -> Vec<u8> {
    format!("bench/key/{index}").into_bytes()
}

fn value(index: u64, version: u64) -> Vec<u8> {
    format!("value {index} version {version}").into_bytes()
}

/// A write set of `count` puts spread over the tree (half new keys, half
/// overwrites), as a block's would be.
fn block_writes(count: u64, version: u64) -> Vec<TreeWrite> {
    sorted_writes(
        (0..count)
            .map(|n| {
                let index = if n % 2 == 0 {
                    n * 7_919 % KEYS
                } else {
                    KEYS + version * count + n
                };
                (
                    key_hash(&key(index)),
                    Some(value_digest(&value(index, version))),
                )
            })
            .collect(),
    )
}

fn state(c: &mut Criterion) {
    let tree = StateTree::new().updated(&sorted_writes(
        (0..KEYS)
            .map(|index| (key_hash(&key(index)), Some(value_digest(&value(index, 0)))))
            .collect(),
    ));
    let root = tree.root();

    // Proof sizes over a sample of present and absent keys: printed for
    // BENCHMARKS.md (criterion measures time only).
    let sizes: Vec<usize> = (0..1_000u64)
        .flat_map(|n| [key(n * 997), key(KEYS + n)])
        .map(|key| tree.prove(&key).encode().len())
        .collect();
    let mean = sizes.iter().sum::<usize>() as f64 / sizes.len() as f64;
    let max = sizes.iter().max().copied().unwrap_or(0);
    println!(
        "state proof at {KEYS} keys: mean {mean:.0} bytes, max {max} bytes over {} proofs",
        sizes.len()
    );

    let mut group = c.benchmark_group("state");
    group.measurement_time(Duration::from_secs(5));
    let present = key(123_457);
    let present_value = value(123_457, 0);
    let proof = tree.prove(&present);
    group.bench_function("verify membership proof (1M keys)", |b| {
        b.iter(|| proof.verify(&root, &present, Some(&present_value)).unwrap())
    });
    let absent = key(KEYS + 42);
    let absence = tree.prove(&absent);
    group.bench_function("verify non-membership proof (1M keys)", |b| {
        b.iter(|| absence.verify(&root, &absent, None).unwrap())
    });
    group.bench_function("prove (1M keys)", |b| b.iter(|| tree.prove(&present)));
    let encoded = proof.encode();
    group.bench_function("decode + verify proof (1M keys)", |b| {
        b.iter(|| {
            StateProof::decode(&encoded)
                .unwrap()
                .verify(&root, &present, Some(&present_value))
                .unwrap()
        })
    });
    for count in [100u64, 1_000] {
        let writes = block_writes(count, 1);
        group.bench_function(format!("update: block of {count} writes (1M keys)"), |b| {
            b.iter_batched(
                || writes.clone(),
                |writes| tree.updated(&writes),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, state);
criterion_main!(benches);
