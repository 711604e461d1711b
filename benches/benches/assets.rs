//! The asset scheduler at 10,000 assets: how many lease decisions a node
//! makes per second, and the tail latency of one decision.
//! `cargo bench -p hm-benches --bench assets`
//!
//! The market: 2,500 provider nodes, each offering CPU, memory, network
//! and storage or (every fifth) GPUs, with model, region and VRAM labels
//! and the four privacy levels spread over the nodes. The request: a colocated or spread gang of CPU,
//! memory and a GPU with a VRAM constraint, from a certified member.

// Benchmark inputs are our own; unwrap is fine.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use hm_assets::{
    Asset, AssetKind, Attributes, Constraint, LeaseRequest, Privacy, PrivacyLevel, RequestItem,
    Scheduler, Standing, Tenant,
};
use hm_wire::Hash;

const NODES: u64 = 2_500;
const GIB: u64 = 1 << 30;

fn id(tag: &str, n: u64) -> Hash {
    hm_wire::hash_parts("hm/assets-bench", &[tag.as_bytes(), &n.to_le_bytes()])
}

fn market() -> Scheduler {
    let mut scheduler = Scheduler::new();
    let mut n = 0;
    for node in 0..NODES {
        let privacy = match node % 4 {
            0 => Privacy::Private,
            1 => Privacy::Peers(BTreeSet::from([id("tenant", 1), id("tenant", 2)])),
            2 => Privacy::Network,
            _ => Privacy::Public,
        };
        let region = ["eu", "us", "ap"][(node % 3) as usize];
        let mut offer = |kind: AssetKind, capacity: u64, price: u64, extra: &[(&str, String)]| {
            let mut attributes: Attributes = extra
                .iter()
                .map(|(key, value)| (key.to_string(), value.clone()))
                .collect();
            attributes.insert("region".into(), region.into());
            scheduler
                .register(Asset {
                    id: id("asset", n),
                    owner: id("owner", node),
                    node: id("node", node),
                    kind,
                    capacity,
                    attributes,
                    privacy: privacy.clone(),
                    price_per_quantum_hour: price + node % 17,
                })
                .unwrap();
            n += 1;
        };
        offer(AssetKind::Cpu, 16_000 + (node % 4) * 16_000, 40, &[]);
        offer(AssetKind::Memory, (64 + (node % 4) * 64) * GIB, 5, &[]);
        if node % 5 == 0 {
            let (model, vram) = [("a100", 80), ("l4", 24), ("t4", 16)][(node % 3) as usize];
            offer(
                AssetKind::Gpu,
                4,
                900,
                &[("model", model.into()), ("vram_gb", vram.to_string())],
            );
        } else {
            offer(AssetKind::Storage, 2_000 * GIB, 1, &[]);
        }
        // Every node also offers network bandwidth; with the three above
        // the market holds 4 × 2,500 = 10,000 assets.
        offer(AssetKind::Network, 1_000_000, 2, &[]);
    }
    assert_eq!(scheduler.assets_len(), 10_000);
    scheduler
}

fn request(colocate: bool) -> LeaseRequest {
    LeaseRequest {
        tenant: id("tenant", 1),
        items: vec![
            RequestItem {
                kind: AssetKind::Gpu,
                amount: 2,
                constraints: vec![Constraint::AtLeast {
                    key: "vram_gb".into(),
                    min: 24,
                }],
            },
            RequestItem {
                kind: AssetKind::Cpu,
                amount: 8_000,
                constraints: vec![Constraint::OneOf {
                    key: "region".into(),
                    values: vec!["eu".into(), "us".into()],
                }],
            },
            RequestItem {
                kind: AssetKind::Memory,
                amount: 32 * GIB,
                constraints: Vec::new(),
            },
        ],
        widest_privacy: PrivacyLevel::Public,
        colocate,
        max_price_per_hour: u64::MAX,
        duration_ms: 3_600_000,
    }
}

fn assets(c: &mut Criterion) {
    let scheduler = market();
    let tenant = Tenant {
        id: id("tenant", 1),
        standing: Standing::Member,
    };
    let mut group = c.benchmark_group("assets");
    group.measurement_time(Duration::from_secs(5));
    for (name, colocate) in [("place_spread_10k", false), ("place_colocated_10k", true)] {
        let request = request(colocate);
        assert!(scheduler.place(&request, &tenant).is_ok());
        group.bench_function(name, |b| {
            b.iter(|| scheduler.place(std::hint::black_box(&request), &tenant))
        });
    }
    group.finish();
    tail_latency(&scheduler, &tenant);
}

/// p50/p99 of single decisions in a busy market: each placement is
/// reserved, and the oldest lease is released once 200 are held, so the
/// decisions measured are (almost all) successful ones on a market that
/// stays partly full. Printed for BENCHMARKS.md.
#[allow(clippy::disallowed_methods)] // a benchmark measures wall time
fn tail_latency(scheduler: &Scheduler, tenant: &Tenant) {
    use std::time::Instant;
    let mut scheduler = scheduler.clone();
    for (name, colocate) in [("spread", false), ("colocated", true)] {
        let request = request(colocate);
        let mut micros: Vec<f64> = Vec::new();
        let mut held: std::collections::VecDeque<Hash> = std::collections::VecDeque::new();
        let mut refused = 0;
        let started = Instant::now();
        for lease in 0..2_000u64 {
            let begun = Instant::now();
            let placed = scheduler.place(&request, tenant);
            micros.push(begun.elapsed().as_secs_f64() * 1e6);
            match placed {
                Ok(placement) => {
                    scheduler.reserve(id(name, lease), &placement).unwrap();
                    held.push_back(id(name, lease));
                }
                Err(_) => refused += 1,
            }
            if held.len() > 200 {
                let oldest = held.pop_front().unwrap();
                scheduler.release(&oldest).unwrap();
            }
        }
        let total = started.elapsed().as_secs_f64();
        micros.sort_by(f64::total_cmp);
        let at = |q: f64| micros[((micros.len() as f64 * q) as usize).min(micros.len() - 1)];
        println!(
            "assets/{name}: {} decisions ({refused} refused) in {total:.3} s: {:.0}/s, p50 {:.1} µs, p99 {:.1} µs",
            micros.len(),
            micros.len() as f64 / total,
            at(0.50),
            at(0.99)
        );
    }
}

criterion_group!(benches, assets);
criterion_main!(benches);
