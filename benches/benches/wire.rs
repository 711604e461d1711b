//! hm-wire: encoding, hashing, Merkle proofs, FALCON-1024, ML-KEM-1024 sealing,
//! Brotli. `cargo bench -p hm-benches --bench wire`
#![allow(clippy::unwrap_used)] // benchmark inputs are our own

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use hm_env::mem::SeededEntropy;
use hm_wire::{KemSecretKey, SigningKey, merkle};

#[derive(serde::Serialize, serde::Deserialize)]
struct Sample {
    height: u64,
    parent: [u8; 32],
    names: Vec<String>,
    payload: Vec<u8>,
}

fn sample(payload_bytes: usize) -> Sample {
    Sample {
        height: 42,
        parent: [7; 32],
        names: (0..16).map(|i| format!("node-{i}.mesh")).collect(),
        payload: (0..payload_bytes).map(|i| (i * 31 % 251) as u8).collect(),
    }
}

fn codec(c: &mut Criterion) {
    let mut group = c.benchmark_group("codec");
    for bytes in [1 << 10, 1 << 20] {
        let value = sample(bytes);
        let encoded = hm_wire::encode(&value);
        group.throughput(Throughput::Bytes(encoded.len() as u64));
        group.bench_with_input(BenchmarkId::new("encode", bytes), &value, |b, v| {
            b.iter(|| hm_wire::encode(black_box(v)))
        });
        group.bench_with_input(BenchmarkId::new("decode", bytes), &encoded, |b, e| {
            b.iter(|| hm_wire::decode::<Sample>(black_box(e), 4 << 20).unwrap())
        });
    }
    group.finish();
}

fn hashing(c: &mut Criterion) {
    let mut group = c.benchmark_group("sha256");
    let data = vec![0xa5u8; 1 << 20];
    group.throughput(Throughput::Bytes(data.len() as u64));
    group.bench_function("1MiB", |b| {
        b.iter(|| hm_wire::hash("bench", black_box(&data)))
    });
    group.finish();
}

fn merkle_proofs(c: &mut Criterion) {
    let mut group = c.benchmark_group("merkle");
    let mut log = merkle::MerkleLog::new();
    for i in 0u32..100_000 {
        log.append(&i.to_le_bytes()).unwrap();
    }
    let size = log.len();
    let root = log.root();
    let index = 31_337;
    let proof = log.inclusion_proof(index, size).unwrap();
    let leaf = merkle::leaf_hash(&(index as u32).to_le_bytes());
    group.bench_function("inclusion_proof/100k", |b| {
        b.iter(|| log.inclusion_proof(black_box(index), size).unwrap())
    });
    group.bench_function("verify_inclusion/100k", |b| {
        b.iter(|| merkle::verify_inclusion(&leaf, index, size, black_box(&proof), &root).unwrap())
    });
    let old_size = 60_000;
    let old_root = log.root_at(old_size).unwrap();
    let consistency = log.consistency_proof(old_size, size).unwrap();
    group.bench_function("verify_consistency/60k-100k", |b| {
        b.iter(|| {
            merkle::verify_consistency(old_size, size, &old_root, &root, black_box(&consistency))
                .unwrap()
        })
    });
    group.finish();
}

fn falcon(c: &mut Criterion) {
    let mut group = c.benchmark_group("falcon1024");
    let entropy = SeededEntropy::new(1, b"bench");
    let key = SigningKey::generate(&entropy);
    let public = key.verifying_key();
    let message = [0x42u8; 64];
    let signature = key.sign("bench", &message, &entropy);
    group.bench_function("sign", |b| {
        b.iter(|| key.sign("bench", black_box(&message), &entropy))
    });
    group.bench_function("verify", |b| {
        b.iter(|| {
            public
                .verify("bench", black_box(&message), &signature)
                .unwrap()
        })
    });
    group.sample_size(10);
    group.bench_function("keygen", |b| b.iter(|| SigningKey::generate(&entropy)));
    group.finish();
}

fn sealing(c: &mut Criterion) {
    let mut group = c.benchmark_group("mlkem1024_seal");
    let entropy = SeededEntropy::new(1, b"bench");
    let secret = KemSecretKey::generate(&entropy);
    let public = secret.public_key();
    // A 32-byte seal is dominated by the KEM: encapsulate (seal) and
    // decapsulate (open).
    let small = hm_wire::seal(&public, b"header", &[1u8; 32], &entropy).unwrap();
    group.bench_function("encaps+seal/32B", |b| {
        b.iter(|| hm_wire::seal(&public, b"header", black_box(&[1u8; 32]), &entropy).unwrap())
    });
    group.bench_function("decaps+open/32B", |b| {
        b.iter(|| hm_wire::open(&secret, b"header", black_box(&small)).unwrap())
    });
    let mib = vec![0x5au8; 1 << 20];
    let sealed = hm_wire::seal(&public, b"header", &mib, &entropy).unwrap();
    group.throughput(Throughput::Bytes(mib.len() as u64));
    group.bench_function("seal/1MiB", |b| {
        b.iter(|| hm_wire::seal(&public, b"header", black_box(&mib), &entropy).unwrap())
    });
    group.bench_function("open/1MiB", |b| {
        b.iter(|| hm_wire::open(&secret, b"header", black_box(&sealed)).unwrap())
    });
    group.finish();
}

fn brotli(c: &mut Criterion) {
    let mut group = c.benchmark_group("brotli");
    let text: Vec<u8> = (0..(1 << 20))
        .map(|i: usize| b"hypermesh block payload "[i % 24])
        .collect();
    let compressed = hm_wire::compress::compress(&text);
    group.throughput(Throughput::Bytes(text.len() as u64));
    group.bench_function("compress/1MiB", |b| {
        b.iter(|| hm_wire::compress::compress(black_box(&text)))
    });
    group.bench_function("decompress/1MiB", |b| {
        b.iter(|| hm_wire::compress::decompress(black_box(&compressed), 2 << 20).unwrap())
    });
    group.finish();
}

criterion_group!(
    benches,
    codec,
    hashing,
    merkle_proofs,
    falcon,
    sealing,
    brotli
);
criterion_main!(benches);
