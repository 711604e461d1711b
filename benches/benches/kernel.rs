//! The chain's costs at the real node's parameters: block encode/decode and
//! each part of Proof of State (create and validate), so BENCHMARKS.md can
//! check the seed's targets (validation < 100 ms, block creation < 1 s).
//! `cargo bench -p hm-benches --bench kernel`

// Benchmark inputs are our own; unwrap is fine.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hm_env::mem::SeededEntropy;
use hm_kernel::app::{Application, BlockContext, KvApp, KvWorkload};
use hm_kernel::block::{
    BLOCK_VERSION, Block, BlockBody, BlockHeader, CommitCertificate, SignedVote, Vote, VoteKind,
    updates_root,
};
use hm_kernel::genesis::{Genesis, ProofParams};
use hm_kernel::proof::{self, BlockProver, ParentInfo, ProofContext, compute_time};
use hm_wire::SigningKey;

/// Transactions in the benchmarked block (KV puts of 256-byte values).
const BLOCK_TRANSACTIONS: usize = 1_000;

fn kernel(c: &mut Criterion) {
    let entropy = SeededEntropy::new(1, b"kernel-bench");
    let keys: Vec<SigningKey> = (0..4).map(|_| SigningKey::generate(&entropy)).collect();
    let members: Vec<_> = keys.iter().map(|key| (key.verifying_key(), 10)).collect();
    let params = ProofParams::production();
    // Plotting 2^20 labels takes seconds; it happens once per validator.
    let (genesis, plots) = Genesis::with_plots("bench", 0, &members, params.clone()).unwrap();
    let chain_id = genesis.chain_id();
    let validators = genesis.validator_set().unwrap();
    let validators_hash = validators.hash();
    let parent = ParentInfo::genesis(&genesis);
    let app = KvApp::new();
    let mut workload = KvWorkload::new(10_000, 256, 0);
    let transactions: Vec<_> = (0..BLOCK_TRANSACTIONS)
        .map(|_| workload.next_tx(&entropy))
        .collect();
    let execution = app.execute_block(BlockContext::new(1, 0), &transactions);
    let body = BlockBody {
        transactions,
        evidence: Vec::new(),
    };
    let prover = BlockProver::new(&plots[0], &keys[0]).unwrap();
    let header_for = |time_output, time_ticks| BlockHeader {
        version: BLOCK_VERSION,
        chain_id,
        height: 1,
        round: 0,
        previous_hash: parent.hash,
        transactions_root: body.transactions_root(),
        updates_root: updates_root(&execution.updates),
        evidence_root: body.evidence_root(),
        state_root: execution.state_root,
        log_head: execution.log_head,
        timestamp_ms: 1_000,
        difficulty: params.work_difficulty_bits,
        time_output,
        time_ticks,
        proposer: prover.node_id(),
        validators_hash,
        next_validators_hash: validators_hash,
    };

    let mut group = c.benchmark_group("proof_production");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    group.bench_function("create (time chain + space + stake + work)", |b| {
        b.iter(|| {
            let time = compute_time(&parent, &params);
            let header = header_for(time.time_output, time.time_ticks);
            prover
                .prove(&header, time.proof, &validators, &params, &entropy)
                .unwrap()
        })
    });
    let time = compute_time(&parent, &params);
    let header = header_for(time.time_output, time.time_ticks);
    let consensus_proof = prover
        .prove(&header, time.proof, &validators, &params, &entropy)
        .unwrap();
    for parallelism in [1, 2] {
        group.bench_function(format!("validate (parallelism {parallelism})"), |b| {
            b.iter(|| {
                let ctx = ProofContext {
                    params: &params,
                    validators: &validators,
                    parent,
                    space_registry: &genesis,
                    local_now_ms: 2_000,
                    recomputed_state_root: Some(execution.state_root),
                    parallelism,
                };
                let result = proof::validate(&header, &consensus_proof, &ctx);
                assert!(result.is_valid());
            })
        });
    }
    group.finish();

    let block_hash = header.hash();
    let precommits: Vec<SignedVote> = keys
        .iter()
        .map(|key| {
            let index = validators
                .index_of(&key.verifying_key().fingerprint())
                .unwrap();
            SignedVote::sign(
                &chain_id,
                Vote {
                    kind: VoteKind::Precommit,
                    height: 1,
                    round: 0,
                    block_hash: Some(block_hash),
                    validator: index,
                },
                key,
                &entropy,
            )
        })
        .collect();
    let block = Block {
        header,
        body,
        proof: consensus_proof,
        commit: CommitCertificate::from_precommits(1, 0, block_hash, &precommits, &validators)
            .unwrap(),
    };
    let encoded = block.encode();
    let mut group = c.benchmark_group("block");
    group.throughput(Throughput::Bytes(encoded.len() as u64));
    group.bench_function(
        format!(
            "encode ({} KiB, {BLOCK_TRANSACTIONS} txs)",
            encoded.len() >> 10
        ),
        |b| b.iter(|| block.encode()),
    );
    group.bench_function(format!("decode ({} KiB)", encoded.len() >> 10), |b| {
        b.iter(|| Block::decode(&encoded).unwrap())
    });
    group.bench_function("verify commit certificate (4 validators)", |b| {
        b.iter(|| block.verify_commit(&chain_id, &validators).unwrap())
    });
    let compressed = hm_wire::compress::compress(&encoded);
    group.bench_function("store form: brotli compress", |b| {
        b.iter(|| hm_wire::compress::compress(&encoded))
    });
    group.bench_function("store form: decompress + decode", |b| {
        b.iter(|| {
            let bytes =
                hm_wire::compress::decompress(&compressed, hm_kernel::block::BLOCK_BYTES_MAX)
                    .unwrap();
            Block::decode(&bytes).unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, kernel);
criterion_main!(benches);
