//! Writes the seed inputs in `fuzz/seeds/<target>/`: real, valid encodings
//! (a block with real proofs and a commit certificate, a sealed private
//! block, every chain message kind, membership messages), so the fuzzers
//! start from deep inside the decoders instead of at the first length
//! prefix.
//!
//! `cargo run --manifest-path fuzz/Cargo.toml --example seed_corpus`
#![allow(clippy::disallowed_methods)] // a developer tool writing files

use std::net::{Ipv6Addr, SocketAddrV6};
use std::path::Path;

use hm_env::mem::SeededEntropy;
use hm_kernel::app::{Application, BlockContext, KvApp, KvWorkload};
use hm_kernel::block::{
    BLOCK_VERSION, Block, BlockBody, BlockHeader, CommitCertificate, Evidence, Proposal,
    ProposedBlock, SignedProposal, SignedVote, Vote, VoteKind, updates_root,
};
use hm_kernel::chain::{PrivateBlock, SealedBlock};
use hm_kernel::genesis::{Genesis, ProofParams};
use hm_kernel::proof::{BlockProver, ParentInfo, compute_time};
use hm_kernel::replica::ChainMessage;
use hm_node::membership::Message;
use hm_wire::{KemSecretKey, SigningKey};

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("seeds")
        .join(target);
    std::fs::create_dir_all(&dir).expect("create the seed directory");
    std::fs::write(dir.join(name), bytes).expect("write a seed");
}

fn main() {
    let entropy = SeededEntropy::new(1, b"fuzz-seeds");
    let keys: Vec<SigningKey> = (0..4).map(|_| SigningKey::generate(&entropy)).collect();
    let params = ProofParams::for_simulation();
    let members: Vec<_> = keys.iter().map(|key| (key.verifying_key(), 10)).collect();
    let (genesis, plots) =
        Genesis::with_plots("fuzz", 0, &members, params.clone()).expect("small plots");
    let chain_id = genesis.chain_id();
    let validators = genesis.validator_set().expect("valid genesis");
    let proposer_id = keys[0].verifying_key().fingerprint();
    let proposer_index = validators.index_of(&proposer_id).expect("member");
    let proposer_plot = &plots[0];

    // Height 1 with a few key-value transactions, really executed and proved.
    let app = KvApp::new();
    let mut workload = KvWorkload::new(8, 16, 0);
    let transactions = (0..5)
        .map(|_| workload.next_tx(&entropy))
        .collect::<Vec<_>>();
    let execution = app.execute_block(BlockContext::new(1, 0), &transactions);
    let body = BlockBody {
        transactions: transactions.clone(),
        evidence: Vec::new(),
    };
    let parent = ParentInfo::genesis(&genesis);
    let time = compute_time(&parent, &params);
    let header = BlockHeader {
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
        time_output: time.time_output,
        time_ticks: time.time_ticks,
        proposer: proposer_id,
        validators_hash: validators.hash(),
        next_validators_hash: validators.hash(),
    };
    let proof = BlockProver::new(proposer_plot, &keys[0])
        .expect("own plot")
        .prove(&header, time.proof, &validators, &params, &entropy)
        .expect("proves");
    let block_hash = header.hash();
    let precommits: Vec<SignedVote> = keys
        .iter()
        .map(|key| {
            let index = validators
                .index_of(&key.verifying_key().fingerprint())
                .expect("member");
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
    let commit = CommitCertificate::from_precommits(1, 0, block_hash, &precommits, &validators)
        .expect("all four precommitted");
    let block = Block {
        header: header.clone(),
        body: body.clone(),
        proof: proof.clone(),
        commit,
    };
    block
        .verify_commit(&chain_id, &validators)
        .expect("the seed block is valid");
    write("decode_block", "block-1.bin", &block.encode());
    write(
        "decode_block",
        "block-1.stored",
        &hm_kernel::chain::encode_stored(&block),
    );

    // Chain messages of every kind.
    let proposal = SignedProposal::sign(
        &chain_id,
        Proposal {
            height: 1,
            round: 0,
            pol_round: None,
            block_hash,
            proposer: proposer_index,
        },
        &keys[0],
        &entropy,
    );
    let nil_vote = SignedVote::sign(
        &chain_id,
        Vote {
            block_hash: None,
            ..precommits[0].vote.clone()
        },
        &keys[0],
        &entropy,
    );
    let evidence = Evidence::DuplicateVote {
        first: precommits[0].clone(),
        second: nil_vote,
    };
    evidence
        .verify(&chain_id, &validators)
        .expect("the seed evidence is valid");
    let messages = [
        (
            "proposal",
            ChainMessage::Proposal {
                signed: proposal,
                block: Box::new(ProposedBlock {
                    header,
                    body,
                    proof,
                }),
            },
        ),
        ("vote", ChainMessage::Vote(precommits[1].clone())),
        ("evidence", ChainMessage::Evidence(evidence)),
        ("transactions", ChainMessage::Transactions(transactions)),
        ("status", ChainMessage::Status { height: 7 }),
        ("get-blocks", ChainMessage::GetBlocks { from: 1, count: 16 }),
        ("blocks", ChainMessage::Blocks(vec![block])),
    ];
    for (name, message) in messages {
        write(
            "decode_consensus_message",
            &format!("{name}.bin"),
            &message.encode(),
        );
    }

    // A sealed private block, sealed to the key the fuzz target opens with.
    let owner = KemSecretKey::generate(&SeededEntropy::new(1, b"fuzz-owner"));
    let private = PrivateBlock::new(
        hm_wire::hash("fuzz", b"asset"),
        None,
        vec![b"allocated 4 cores".to_vec(), b"used 12 s".to_vec()],
        5,
    );
    let sealed = SealedBlock::seal(&private, &owner.public_key(), &entropy).expect("seals");
    write(
        "decode_sealed_block",
        "sealed-1.bin",
        &hm_wire::encode(&sealed),
    );

    // Membership messages.
    let join = Message::Join {
        addr: SocketAddrV6::new(Ipv6Addr::LOCALHOST, 7000, 0, 0),
        incarnation: 3,
    };
    let digest = Message::Digest {
        hash: 0x1234_5678,
        members: 40,
        buckets: (0..32).collect(),
    };
    write(
        "decode_membership_message",
        "join.bin",
        &hm_wire::encode(&join),
    );
    write(
        "decode_membership_message",
        "digest.bin",
        &hm_wire::encode(&digest),
    );
    println!("seeds written under fuzz/seeds/");
}
