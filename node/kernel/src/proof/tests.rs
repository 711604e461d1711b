//! The four proofs together: a proposer proves, validators validate, and
//! every single tamper is reported against the right part.

use std::sync::OnceLock;

use hm_env::mem::SeededEntropy;
use hm_wire::{Hash, SigningKey, hash};
use proptest::prelude::*;

use super::*;
use crate::block::{BLOCK_VERSION, LogHead};
use crate::genesis::Genesis;

const VALIDATORS: usize = 4;
const GENESIS_TIME_MS: u64 = 1_700_000_000_000;

struct Fixture {
    keys: Vec<SigningKey>,
    plots: Vec<SpacePlot>,
    genesis: Genesis,
    validators: ValidatorSet,
    params: ProofParams,
    entropy: SeededEntropy,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let entropy = SeededEntropy::new(5, b"proof-tests");
        let params = ProofParams::for_simulation();
        let keys: Vec<SigningKey> = (0..VALIDATORS)
            .map(|_| SigningKey::generate(&entropy))
            .collect();
        let members: Vec<_> = keys
            .iter()
            .enumerate()
            .map(|(position, key)| (key.verifying_key(), 10 + position as u64))
            .collect();
        let (genesis, plots) =
            Genesis::with_plots("proof-tests", GENESIS_TIME_MS, &members, params.clone())
                .expect("small plots");
        genesis.check().expect("valid genesis");
        let validators = genesis.validator_set().expect("valid set");
        Fixture {
            keys,
            plots,
            genesis,
            validators,
            params,
            entropy,
        }
    })
}

/// A proposed block at height 1 by validator `who` (position in `keys`).
struct Proposal {
    header: BlockHeader,
    proof: ConsensusProof,
    /// The time proof as computed, for tests that rebuild the proof.
    time: TimeOutput,
}

fn unsigned_header(f: &Fixture, who: usize, parent: &ParentInfo, time: &TimeOutput) -> BlockHeader {
    BlockHeader {
        version: BLOCK_VERSION,
        chain_id: f.genesis.chain_id(),
        height: 1,
        round: 0,
        previous_hash: parent.hash,
        transactions_root: hash("test", b"transactions"),
        updates_root: hash("test", b"updates"),
        evidence_root: hash("test", b"evidence"),
        state_root: state_root(),
        log_head: LogHead::empty(),
        timestamp_ms: parent.timestamp_ms + 1_000,
        difficulty: f.params.work_difficulty_bits,
        time_output: time.time_output,
        time_ticks: time.time_ticks,
        proposer: f.keys[who].verifying_key().fingerprint(),
        validators_hash: f.validators.hash(),
        next_validators_hash: f.validators.hash(),
    }
}

fn state_root() -> Hash {
    hash("test", b"state after block 1")
}

fn propose(who: usize) -> Proposal {
    let f = fixture();
    let parent = ParentInfo::genesis(&f.genesis);
    let time = compute_time(&parent, &f.params);
    let header = unsigned_header(f, who, &parent, &time);
    let prover = BlockProver::new(&f.plots[who], &f.keys[who]).expect("own plot");
    let proof = prover
        .prove(
            &header,
            time.proof.clone(),
            &f.validators,
            &f.params,
            &f.entropy,
        )
        .expect("proves");
    Proposal {
        header,
        proof,
        time,
    }
}

/// Builds the proof parts directly, skipping the prover's sanity checks:
/// what a dishonest proposer would do for a header of its choosing.
fn assemble_for(who: usize, header: &BlockHeader, time: TimeProof) -> ConsensusProof {
    let f = fixture();
    let block_hash = header.hash();
    let space = f.plots[who].prove(&header.previous_hash, f.params.space_challenges);
    let stake = stake::prove_stake(&block_hash, &f.keys[who], &f.validators, &f.entropy)
        .expect("a validator");
    let work = work::prove_work(&block_hash, header.difficulty).expect("found");
    ConsensusProof::assemble(space, stake, work, time)
}

/// Recomputes the combined hash, so only the tampered part is wrong.
fn reseal(mut proof: ConsensusProof) -> ConsensusProof {
    proof.combined =
        ConsensusProof::combined_hash(&proof.space, &proof.stake, &proof.work, &proof.time);
    proof
}

fn context(f: &'static Fixture) -> ProofContext<'static> {
    ProofContext {
        params: &f.params,
        validators: &f.validators,
        parent: ParentInfo::genesis(&f.genesis),
        space_registry: &f.genesis,
        local_now_ms: GENESIS_TIME_MS + 1_000,
        recomputed_state_root: Some(state_root()),
        parallelism: 2,
    }
}

fn failed_parts(
    header: &BlockHeader,
    proof: &ConsensusProof,
    ctx: &ProofContext<'_>,
) -> Vec<ProofPart> {
    validate(header, proof, ctx).failed_parts()
}

#[test]
fn honest_proposals_validate() {
    let f = fixture();
    for who in 0..VALIDATORS {
        let proposal = propose(who);
        let result = validate(&proposal.header, &proposal.proof, &context(f));
        assert!(result.is_valid(), "{result}");
        assert!(result.state_root_checked);
        assert_eq!(result.clone().into_result(), Ok(()));
        let decoded = ConsensusProof::decode(&proposal.proof.encode()).expect("round trip");
        assert_eq!(decoded, proposal.proof);
    }
}

#[test]
fn a_chain_of_blocks_validates_against_each_parent() {
    let f = fixture();
    let first = propose(0);
    let parent = ParentInfo::of(&first.header);
    let time = compute_time(&parent, &f.params);
    let mut header = unsigned_header(f, 1, &parent, &time);
    header.height = 2;
    let prover = BlockProver::new(&f.plots[1], &f.keys[1]).expect("own plot");
    let proof = prover
        .prove(&header, time.proof, &f.validators, &f.params, &f.entropy)
        .expect("proves");
    let mut ctx = context(f);
    ctx.parent = parent;
    ctx.local_now_ms = header.timestamp_ms;
    assert!(validate(&header, &proof, &ctx).is_valid());
    // Validated against the wrong parent (genesis), it fails in time.
    ctx.parent = ParentInfo::genesis(&f.genesis);
    assert_eq!(failed_parts(&header, &proof, &ctx), vec![ProofPart::Time]);
}

#[test]
fn skipping_the_state_root_says_so() {
    let f = fixture();
    let proposal = propose(0);
    let mut ctx = context(f);
    ctx.recomputed_state_root = None;
    let result = validate(&proposal.header, &proposal.proof, &ctx);
    assert!(result.is_valid());
    assert!(!result.state_root_checked);
    assert!(result.to_string().contains("state root not checked"));
}

type Tamper = Box<dyn Fn(&mut ConsensusProof)>;

#[test]
fn stake_tampers_fail_in_stake() {
    let f = fixture();
    let proposal = propose(2);
    let ctx = context(f);
    let cases: Vec<(&str, Tamper)> = vec![
        (
            "wrong index",
            Box::new(|p| p.stake.validator = (p.stake.validator + 1) % VALIDATORS as u16),
        ),
        ("unknown index", Box::new(|p| p.stake.validator = 200)),
        ("wrong stake", Box::new(|p| p.stake.stake += 1)),
        (
            "bad signature",
            Box::new(|p| {
                p.stake.signature = f.keys[2].sign(
                    stake::STAKE_SIGN_DOMAIN,
                    hash("test", b"another block").as_bytes(),
                    &f.entropy,
                )
            }),
        ),
    ];
    for (name, tamper) in cases {
        let mut proof = proposal.proof.clone();
        tamper(&mut proof);
        let proof = reseal(proof);
        assert_eq!(
            failed_parts(&proposal.header, &proof, &ctx),
            vec![ProofPart::Stake],
            "{name}"
        );
    }
}

#[test]
fn work_tampers_fail_in_work() {
    let f = fixture();
    let proposal = propose(1);
    let ctx = context(f);
    let block_hash = proposal.header.hash();
    // A nonce that does not meet the difficulty.
    let bad_nonce = (0..)
        .find(|nonce| {
            work::leading_zero_bits(&work::work_hash(&block_hash, *nonce))
                < u32::from(f.params.work_difficulty_bits)
        })
        .expect("most nonces miss");
    let mut proof = proposal.proof.clone();
    proof.work.nonce = bad_nonce;
    let result = validate(&proposal.header, &reseal(proof), &ctx);
    assert_eq!(result.failed_parts(), vec![ProofPart::Work]);
    assert!(matches!(
        result.work,
        Err(WorkError::InsufficientWork { .. })
    ));

    // State root mismatch: the header claims a root execution did not give.
    let mut other_state = ctx;
    other_state.recomputed_state_root = Some(hash("test", b"another state"));
    let result = validate(&proposal.header, &proposal.proof, &other_state);
    assert_eq!(result.failed_parts(), vec![ProofPart::Work]);
    assert!(matches!(
        result.work,
        Err(WorkError::StateRootMismatch { .. })
    ));

    // Difficulty changed in the header (and everything re-proved for it).
    for difficulty in [0, f.params.work_difficulty_bits + 1] {
        let mut header = proposal.header.clone();
        header.difficulty = difficulty;
        let proof = assemble_for(1, &header, proposal.time.proof.clone());
        let result = validate(&header, &proof, &ctx);
        assert_eq!(
            result.failed_parts(),
            vec![ProofPart::Work],
            "difficulty {difficulty}"
        );
        assert!(matches!(
            result.work,
            Err(WorkError::DifficultyMismatch { .. })
        ));
    }
}

#[test]
fn time_tampers_fail_in_time() {
    let f = fixture();
    let proposal = propose(3);
    let ctx = context(f);

    // A checkpoint flipped.
    for index in 0..proposal.proof.time.checkpoints.len() {
        let mut proof = proposal.proof.clone();
        proof.time.checkpoints[index].0[7] ^= 0x40;
        assert_eq!(
            failed_parts(&proposal.header, &reseal(proof), &ctx),
            vec![ProofPart::Time],
            "checkpoint {index}"
        );
    }

    // Fewer ticks than the minimum, honestly computed and signed.
    let parent = ParentInfo::genesis(&f.genesis);
    let (output, short) = time::prove_time(
        &parent,
        f.params.time_min_ticks - 1,
        f.params.time_checkpoint_interval_ticks,
    );
    let mut header = proposal.header.clone();
    header.time_output = output;
    header.time_ticks = f.params.time_min_ticks - 1;
    let result = validate(&header, &assemble_for(3, &header, short), &ctx);
    assert_eq!(result.failed_parts(), vec![ProofPart::Time]);
    assert!(matches!(result.time, Err(TimeError::TooFewTicks { .. })));

    // Timestamp not after the parent's.
    let mut header = proposal.header.clone();
    header.timestamp_ms = parent.timestamp_ms;
    let result = validate(
        &header,
        &assemble_for(3, &header, proposal.time.proof.clone()),
        &ctx,
    );
    assert_eq!(result.failed_parts(), vec![ProofPart::Time]);
    assert!(matches!(
        result.time,
        Err(TimeError::TimestampNotAfterParent { .. })
    ));

    // Timestamp beyond this node's clock plus the drift.
    let mut header = proposal.header.clone();
    header.timestamp_ms = ctx.local_now_ms + f.params.max_drift_ms + 1;
    let result = validate(
        &header,
        &assemble_for(3, &header, proposal.time.proof.clone()),
        &ctx,
    );
    assert_eq!(result.failed_parts(), vec![ProofPart::Time]);
    assert!(matches!(
        result.time,
        Err(TimeError::TimestampTooFarAhead { .. })
    ));

    // The header claims another time output than the chain's.
    let mut header = proposal.header.clone();
    header.time_output = hash("test", b"made-up output");
    let result = validate(
        &header,
        &assemble_for(3, &header, proposal.time.proof.clone()),
        &ctx,
    );
    assert_eq!(result.failed_parts(), vec![ProofPart::Time]);
}

#[test]
fn space_tampers_fail_in_space() {
    let f = fixture();
    let proposal = propose(0);
    let ctx = context(f);

    // Wrong registered root: the registry holds another plot's root.
    let mut registry = BTreeMap::new();
    let other = SpacePlot::generate(&proposal.header.proposer, 1, f.params.space_leaves_log2)
        .expect("plot");
    registry.insert(proposal.header.proposer, other.commitment());
    let mut other_root = ctx;
    other_root.space_registry = &registry;
    assert_eq!(
        failed_parts(&proposal.header, &proposal.proof, &other_root),
        vec![ProofPart::Space]
    );

    // Not registered at all.
    let empty: BTreeMap<Hash, SpaceCommitment> = BTreeMap::new();
    let mut unregistered = ctx;
    unregistered.space_registry = &empty;
    let result = validate(&proposal.header, &proposal.proof, &unregistered);
    assert!(matches!(
        result.space,
        Err(SpaceError::NotRegistered { .. })
    ));

    // A tampered path.
    let mut proof = proposal.proof.clone();
    proof.space.openings[1].challenged.path[0].0[0] ^= 1;
    assert_eq!(
        failed_parts(&proposal.header, &reseal(proof), &ctx),
        vec![ProofPart::Space]
    );

    // A forged label with a path that is consistent with it: the root is
    // then wrong, so the forger must also claim a different root.
    let mut proof = proposal.proof.clone();
    proof.space.openings[0].challenged.label = hash("test", b"forged label");
    assert_eq!(
        failed_parts(&proposal.header, &reseal(proof), &ctx),
        vec![ProofPart::Space]
    );

    // Another validator's (valid) space proof.
    let mut proof = proposal.proof.clone();
    proof.space = f.plots[1].prove(&proposal.header.previous_hash, f.params.space_challenges);
    assert_eq!(
        failed_parts(&proposal.header, &reseal(proof), &ctx),
        vec![ProofPart::Space]
    );
}

#[test]
fn combined_hash_tamper_fails_in_combined_only() {
    let f = fixture();
    let proposal = propose(0);
    let mut proof = proposal.proof.clone();
    proof.combined.0[31] ^= 1;
    let result = validate(&proposal.header, &proof, &context(f));
    assert_eq!(result.failed_parts(), vec![ProofPart::Combined]);
    let error = result.into_result().expect_err("invalid");
    assert_eq!(error.part(), Some(ProofPart::Combined));
    // A tampered part without resealing fails in both.
    let mut proof = proposal.proof.clone();
    proof.stake.stake += 1;
    assert_eq!(
        failed_parts(&proposal.header, &proof, &context(f)),
        vec![ProofPart::Stake, ProofPart::Combined]
    );
}

#[test]
fn a_header_signed_by_another_validator_fails_in_stake_and_space() {
    // Validator 1 proposes under validator 0's id: its signature and its
    // plot are its own, so both the stake and the space proof fail.
    let f = fixture();
    let proposal = propose(0);
    let proof = assemble_for(1, &proposal.header, proposal.time.proof.clone());
    let parts = failed_parts(&proposal.header, &proof, &context(f));
    assert_eq!(parts, vec![ProofPart::Space, ProofPart::Stake]);
}

#[test]
fn prover_refuses_inconsistent_inputs() {
    let f = fixture();
    let parent = ParentInfo::genesis(&f.genesis);
    let time = compute_time(&parent, &f.params);
    assert!(matches!(
        BlockProver::new(&f.plots[1], &f.keys[0]),
        Err(ProofError::Space(SpaceError::PlotOwner { .. }))
    ));
    let prover = BlockProver::new(&f.plots[0], &f.keys[0]).expect("own plot");
    let header = unsigned_header(f, 0, &parent, &time);
    let mut wrong_output = header.clone();
    wrong_output.time_output = Hash::ZERO;
    assert!(matches!(
        prover.prove(
            &wrong_output,
            time.proof.clone(),
            &f.validators,
            &f.params,
            &f.entropy
        ),
        Err(ProofError::Time(TimeError::OutputMismatch))
    ));
    let mut wrong_difficulty = header.clone();
    wrong_difficulty.difficulty += 1;
    assert!(matches!(
        prover.prove(
            &wrong_difficulty,
            time.proof.clone(),
            &f.validators,
            &f.params,
            &f.entropy
        ),
        Err(ProofError::Work(WorkError::DifficultyMismatch { .. }))
    ));
    let mut bigger = f.params.clone();
    bigger.space_leaves_log2 += 1;
    assert!(matches!(
        prover.prove(&header, time.proof, &f.validators, &bigger, &f.entropy),
        Err(ProofError::Space(SpaceError::PlotSizeMismatch { .. }))
    ));
}

#[test]
fn both_parameter_sets_pass_the_genesis_check() {
    let f = fixture();
    for params in [ProofParams::production(), ProofParams::for_simulation()] {
        let mut genesis = f.genesis.clone();
        genesis.proof = params.clone();
        assert_eq!(genesis.check(), Ok(()), "{params:?}");
    }
}

#[test]
fn decoder_enforces_count_limits() {
    let proposal = propose(0);
    let mut proof = proposal.proof.clone();
    let opening = proof.space.openings[0].clone();
    proof.space.openings = vec![opening; SPACE_CHALLENGES_MAX + 1];
    assert!(matches!(
        ConsensusProof::decode(&reseal(proof).encode()),
        Err(ProofError::Space(SpaceError::ChallengeCount { .. }))
    ));
    let mut proof = proposal.proof;
    proof.time.checkpoints = vec![Hash::ZERO; TIME_CHECKPOINTS_MAX + 1];
    assert!(matches!(
        ConsensusProof::decode(&reseal(proof).encode()),
        Err(ProofError::Time(TimeError::CheckpointCount { .. }))
    ));
    let oversized = vec![0u8; CONSENSUS_PROOF_BYTES_MAX + 1];
    assert!(matches!(
        ConsensusProof::decode(&oversized),
        Err(ProofError::Wire(WireError::TooLarge { .. }))
    ));
}

fn valid_encoded() -> &'static (BlockHeader, Vec<u8>) {
    static ENCODED: OnceLock<(BlockHeader, Vec<u8>)> = OnceLock::new();
    ENCODED.get_or_init(|| {
        let proposal = propose(2);
        (proposal.header, proposal.proof.encode())
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_bytes_never_panic_the_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..4_096)) {
        let _ = hm_wire::decode::<ConsensusProof>(&bytes, CONSENSUS_PROOF_BYTES_MAX);
        // Random bytes are never a proof (a signature header, option tags
        // and length prefixes would all have to line up).
        prop_assert!(ConsensusProof::decode(&bytes).is_err());
    }

    #[test]
    fn mutated_valid_proofs_never_panic_the_decoder(
        position in any::<prop::sample::Index>(),
        cut in any::<prop::sample::Index>(),
        value in any::<u8>(),
    ) {
        let (_, encoded) = valid_encoded();
        let mut bytes = encoded.clone();
        let at = position.index(bytes.len());
        bytes[at] = value;
        bytes.truncate(cut.index(bytes.len() + 1));
        let _ = ConsensusProof::decode(&bytes);
    }

    #[test]
    fn any_flipped_byte_fails_decoding_or_validation(
        position in any::<prop::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let f = fixture();
        let (header, encoded) = valid_encoded();
        let mut bytes = encoded.clone();
        let at = position.index(bytes.len());
        bytes[at] ^= flip;
        if let Ok(proof) = ConsensusProof::decode(&bytes) {
            let result = validate(header, &proof, &context(f));
            prop_assert!(!result.is_valid(), "byte {} flipped by {:#04x} still validates", at, flip);
        }
    }
}
