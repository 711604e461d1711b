//! The chain's costs at the real node's parameters: block encode/decode and
//! each part of Proof of State (create and validate), so BENCHMARKS.md can
//! check the seed's targets (validation < 100 ms, block creation < 1 s);
//! and a light client verifying one header (target < 10 ms on one core).
//! `cargo bench -p hm-benches --bench kernel` (`-- light` for the latter).

// Benchmark inputs are our own; unwrap is fine.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use hm_env::mem::SeededEntropy;
use hm_kernel::app::{Application, BlockContext, KvApp, KvWorkload};
use hm_kernel::block::{
    BLOCK_VERSION, Block, BlockBody, BlockHeader, CommitCertificate, SignedVote, Vote, VoteKind,
    updates_root,
};
use hm_kernel::genesis::{Genesis, ProofParams};
use hm_kernel::light::{LightClient, TrustParams, TrustRoot, Verification};
use hm_kernel::proof::{self, BlockProver, ParentInfo, ProofContext, compute_time};
use hm_kernel::validators::ValidatorSet;
use hm_wire::{Hash, SigningKey};

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

/// Validators in the light-client benchmark, of equal stake: a quorum is
/// 43 signatures.
const LIGHT_VALIDATORS: usize = 64;

/// A light client trusting height 1 verifies the certified height 2: the
/// set's hash, 43 FALCON-1024 signature checks, the bookkeeping.
fn light(c: &mut Criterion) {
    let entropy = SeededEntropy::new(2, b"light-bench");
    let keys: Vec<SigningKey> = (0..LIGHT_VALIDATORS)
        .map(|_| SigningKey::generate(&entropy))
        .collect();
    let validators = ValidatorSet::new(keys.iter().map(|key| (key.verifying_key(), 10))).unwrap();
    let by_index: Vec<&SigningKey> = validators
        .iter()
        .map(|(_, validator)| {
            keys.iter()
                .find(|key| key.verifying_key().fingerprint() == validator.id)
                .unwrap()
        })
        .collect();
    let chain_id = hm_wire::hash("bench", b"light chain");
    let validators_hash = validators.hash();
    let header_at = |height: u64, previous_hash: Hash| BlockHeader {
        version: BLOCK_VERSION,
        chain_id,
        height,
        round: 0,
        previous_hash,
        transactions_root: hm_wire::merkle::empty_root(),
        updates_root: updates_root(&[]),
        evidence_root: hm_wire::hash("bench", b"evidence"),
        state_root: hm_wire::hash("bench-state", &height.to_le_bytes()),
        log_head: Default::default(),
        timestamp_ms: 1_700_000_000_000 + height * 1_000,
        difficulty: 0,
        time_output: Hash::ZERO,
        time_ticks: 1,
        proposer: by_index[0].verifying_key().fingerprint(),
        validators_hash,
        next_validators_hash: validators_hash,
    };
    let certify = |header: &BlockHeader| {
        let precommits: Vec<SignedVote> = by_index
            .iter()
            .enumerate()
            .map(|(index, key)| {
                let vote = Vote {
                    kind: VoteKind::Precommit,
                    height: header.height,
                    round: 0,
                    block_hash: Some(header.hash()),
                    validator: u16::try_from(index).unwrap(),
                };
                SignedVote::sign(&chain_id, vote, key, &entropy)
            })
            .collect();
        CommitCertificate::from_precommits(
            header.height,
            0,
            header.hash(),
            &precommits,
            &validators,
        )
        .unwrap()
    };
    let root = header_at(1, Hash::ZERO);
    let root_certificate = certify(&root);
    let header = header_at(2, root.hash());
    let certificate = certify(&header);
    assert_eq!(certificate.signatures.len(), 43, "the smallest quorum");
    let client = LightClient::new(
        chain_id,
        TrustRoot {
            header: root,
            certificate: root_certificate,
            validators: validators.clone(),
            next_validators: None,
        },
        TrustParams {
            trusting_period_ms: 14 * 24 * 3_600_000,
            max_clock_drift_ms: 10_000,
        },
    )
    .unwrap();
    let now_ms = header.timestamp_ms + 500;

    let mut group = c.benchmark_group("light");
    group.bench_function("verify_header_64_validators", |b| {
        b.iter_batched(
            || client.clone(),
            |mut client| {
                let verified = client
                    .verify(&header, &certificate, &validators, None, now_ms)
                    .unwrap();
                assert_eq!(verified.verification, Verification::Adjacent { from: 1 });
                client
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, light, kernel);
criterion_main!(benches);
