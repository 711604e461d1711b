//! Tests of the core driven by hand (one validator, the others' messages
//! signed directly) and properties of whole committees in the simulator.

use std::sync::OnceLock;

use hm_wire::Hash;
use proptest::prelude::*;

use crate::block::{CommitCertificate, Height, Round, SignedProposal, SignedVote, VoteKind};
use crate::validators::ValidatorIndex;

use super::sim::{self, Behaviour, Scenario};
use super::testkit::{Fixture, TestCore};
use super::*;

const X: Hash = Hash([0xAA; 32]);
const Y: Hash = Hash([0xBB; 32]);

/// Four equal validators; `me` is one that does not propose round 0 or 1
/// of height 1 (so tests control the proposals).
struct Bench {
    fixture: Fixture,
    disk: hm_env::mem::MemDisk,
    me: ValidatorIndex,
    core: TestCore,
}

impl Bench {
    fn new() -> Bench {
        let fixture = Fixture::new(&[1, 1, 1, 1]);
        let proposers =
            [0, 1].map(|round| proposer(&fixture.chain_id, &fixture.validators, 1, round));
        let me = (0..4)
            .find(|index| !proposers.contains(index))
            .expect("some validator proposes neither round");
        let disk = Fixture::disk();
        let core = fixture.core(me, &disk, 1);
        Bench {
            fixture,
            disk,
            me,
            core,
        }
    }

    fn proposer(&self, height: Height, round: Round) -> ValidatorIndex {
        proposer(
            &self.fixture.chain_id,
            &self.fixture.validators,
            height,
            round,
        )
    }

    /// Validators other than me (and other than `also_not`).
    fn others(&self, also_not: Option<ValidatorIndex>) -> Vec<ValidatorIndex> {
        (0..4)
            .filter(|index| *index != self.me && Some(*index) != also_not)
            .collect()
    }

    fn propose(
        &mut self,
        round: Round,
        pol: Option<Round>,
        block: Hash,
        valid: bool,
    ) -> Vec<Output> {
        let proposer = self.proposer(1, round);
        let signed = self.fixture.proposal(proposer, 1, round, pol, block);
        self.core.handle(Input::Proposal { signed, valid })
    }

    fn votes(
        &mut self,
        from: &[ValidatorIndex],
        kind: VoteKind,
        round: Round,
        block: Option<Hash>,
    ) -> Vec<Output> {
        votes_into(&self.fixture, &mut self.core, from, kind, round, block)
    }

    fn timeout(&mut self, round: Round, kind: TimeoutKind) -> Vec<Output> {
        self.core.handle(Input::Timeout(Timeout {
            height: self.core.height(),
            round,
            kind,
        }))
    }
}

fn my_votes(outputs: &[Output]) -> Vec<(VoteKind, Round, Option<Hash>)> {
    outputs
        .iter()
        .filter_map(|output| match output {
            Output::Broadcast(ConsensusMessage::Vote(signed)) => {
                Some((signed.vote.kind, signed.vote.round, signed.vote.block_hash))
            }
            _ => None,
        })
        .collect()
}

fn evidence(outputs: &[Output]) -> Vec<&Evidence> {
    outputs
        .iter()
        .filter_map(|output| match output {
            Output::Evidence(evidence) => Some(evidence),
            _ => None,
        })
        .collect()
}

fn decided(outputs: &[Output]) -> Option<(Height, Hash, CommitCertificate)> {
    outputs.iter().find_map(|output| match output {
        Output::Decided {
            height,
            block_hash,
            certificate,
            ..
        } => Some((*height, *block_hash, certificate.clone())),
        _ => None,
    })
}

// ------------------------------------------------------------ proposer & params

#[test]
fn proposer_rotation_is_stake_weighted_and_deterministic() {
    let fixture = Fixture::new(&[1, 2, 1, 4]);
    let mut counts = [0u32; 4];
    for height in 1..=8_000u64 {
        let index = proposer(&fixture.chain_id, &fixture.validators, height, 0);
        assert_eq!(
            index,
            proposer(&fixture.chain_id, &fixture.validators, height, 0)
        );
        counts[usize::from(index)] += 1;
    }
    for (index, validator) in fixture.validators.iter() {
        let expected = 8_000.0 * validator.stake as f64 / 8.0;
        let got = f64::from(counts[usize::from(index)]);
        assert!(
            (got - expected).abs() < expected * 0.12,
            "validator {index} with stake {} proposed {got} times, expected about {expected}",
            validator.stake
        );
    }
    // Rounds of one height rotate too.
    let round_proposers: std::collections::BTreeSet<_> = (0..40)
        .map(|round| proposer(&fixture.chain_id, &fixture.validators, 1, round))
        .collect();
    assert_eq!(round_proposers.len(), 4);
}

#[test]
fn timeouts_grow_with_the_round() {
    let params = ConsensusParams::default();
    for kind in [
        TimeoutKind::Propose,
        TimeoutKind::Prevote,
        TimeoutKind::Precommit,
        TimeoutKind::Rebroadcast,
    ] {
        assert!(params.timeout_ms(kind, 1) > params.timeout_ms(kind, 0));
        assert!(params.timeout_ms(kind, 10) > params.timeout_ms(kind, 1));
        assert!(params.timeout_ms(kind, Round::MAX) >= params.timeout_ms(kind, 10));
    }
    assert_eq!(params.timeout_ms(TimeoutKind::Propose, 2), 3_000 + 2 * 500);
}

// ------------------------------------------------------------ one height by hand

#[test]
fn a_height_runs_propose_prevote_precommit_decide() {
    let mut bench = Bench::new();
    let start = bench.core.start();
    assert!(start.iter().any(|o| matches!(
        o,
        Output::ScheduleTimeout {
            timeout: Timeout {
                kind: TimeoutKind::Propose,
                round: 0,
                ..
            },
            ..
        }
    )));
    let out = bench.propose(0, None, X, true);
    assert_eq!(my_votes(&out), vec![(VoteKind::Prevote, 0, Some(X))]);
    let others = bench.others(None);
    let out = bench.votes(&others[..2], VoteKind::Prevote, 0, Some(X));
    assert_eq!(my_votes(&out), vec![(VoteKind::Precommit, 0, Some(X))]);
    assert_eq!(bench.core.locked(), Some((0, X)));
    let out = bench.votes(&others[..1], VoteKind::Precommit, 0, Some(X));
    assert!(
        decided(&out).is_none(),
        "two of four precommits are not a quorum"
    );
    let out = bench.votes(&others[1..2], VoteKind::Precommit, 0, Some(X));
    let (height, block, certificate) = decided(&out).expect("decides");
    assert_eq!((height, block), (1, X));
    certificate
        .verify(&bench.fixture.chain_id, &bench.fixture.validators)
        .expect("certificate verifies");
    assert_eq!(bench.core.height(), 2);
    assert_eq!(bench.core.locked(), None);
}

#[test]
fn votes_are_counted_once_and_only_when_signed_by_a_member() {
    let mut bench = Bench::new();
    bench.core.start();
    bench.propose(0, None, X, true);
    let others = bench.others(None);
    let (a, b) = (others[0], others[1]);
    let first = bench.fixture.vote(a, VoteKind::Prevote, 1, 0, Some(X));
    assert!(my_votes(&bench.core.handle(Input::Vote(first.clone()))).is_empty());
    // The identical vote again, and a vote that claims `b` but is signed by
    // `a`: neither may complete the quorum.
    assert!(my_votes(&bench.core.handle(Input::Vote(first.clone()))).is_empty());
    let mut forged = first.clone();
    forged.vote.validator = b;
    let out = bench.core.handle(Input::Vote(forged));
    assert!(out.contains(&Output::Rejected {
        validator: Some(b),
        reason: Reject::BadSignature
    }));
    let mut stranger = first;
    stranger.vote.validator = 77;
    let out = bench.core.handle(Input::Vote(stranger));
    assert!(out.contains(&Output::Rejected {
        validator: Some(77),
        reason: Reject::NotMember
    }));
    assert!(my_votes(&out).is_empty());
    let out = bench.votes(&[b], VoteKind::Prevote, 0, Some(X));
    assert_eq!(my_votes(&out), vec![(VoteKind::Precommit, 0, Some(X))]);
}

#[test]
fn a_conflicting_vote_is_evidence_once_and_is_not_counted() {
    let mut bench = Bench::new();
    bench.core.start();
    bench.propose(0, None, X, true);
    let others = bench.others(None);
    let a = others[0];
    bench.votes(&[a], VoteKind::Prevote, 0, Some(Y));
    let out = bench.votes(&[a], VoteKind::Prevote, 0, Some(X));
    let found = evidence(&out);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].validator(), a);
    found[0]
        .verify(&bench.fixture.chain_id, &bench.fixture.validators)
        .expect("evidence verifies");
    assert!(my_votes(&out).is_empty(), "a's X prevote must not count");
    let out = bench.votes(&[a], VoteKind::Prevote, 0, None);
    assert!(evidence(&out).is_empty(), "one report per offence");
    // Precommits are a separate offence.
    bench.votes(&[a], VoteKind::Precommit, 0, Some(Y));
    let out = bench.votes(&[a], VoteKind::Precommit, 0, None);
    assert_eq!(evidence(&out).len(), 1);
}

#[test]
fn proposals_from_others_are_rejected_and_conflicting_ones_are_evidence() {
    let mut bench = Bench::new();
    bench.core.start();
    let proposer = bench.proposer(1, 0);
    let impostor = bench.others(Some(proposer))[0];
    let signed = bench.fixture.proposal(impostor, 1, 0, None, X);
    let out = bench.core.handle(Input::Proposal {
        signed,
        valid: true,
    });
    assert!(out.contains(&Output::Rejected {
        validator: Some(impostor),
        reason: Reject::WrongProposer
    }));
    assert!(my_votes(&out).is_empty());
    let out = bench.propose(0, None, X, true);
    assert_eq!(my_votes(&out), vec![(VoteKind::Prevote, 0, Some(X))]);
    let out = bench.propose(0, None, Y, true);
    let found = evidence(&out);
    assert_eq!(found.len(), 1);
    assert!(matches!(found[0], Evidence::DuplicateProposal { .. }));
    assert_eq!(found[0].validator(), proposer);
}

#[test]
fn an_invalid_proposal_is_reported_and_prevoted_nil() {
    let mut bench = Bench::new();
    bench.core.start();
    let out = bench.propose(0, None, X, false);
    assert!(out.iter().any(|o| matches!(
        o,
        Output::InvalidProposal { round: 0, block_hash, .. } if *block_hash == X
    )));
    assert_eq!(my_votes(&out), vec![(VoteKind::Prevote, 0, None)]);
    // Even 2f+1 precommits for it do not make us decide an invalid block.
    let out = bench.votes(&bench.others(None), VoteKind::Precommit, 0, Some(X));
    assert!(decided(&out).is_none());
}

#[test]
fn messages_beyond_the_round_window_are_ignored_and_f_plus_one_skips() {
    let mut bench = Bench::new();
    bench.core.start();
    let others = bench.others(None);
    let far = ROUNDS_AHEAD_MAX + 1;
    bench.votes(&others[..2], VoteKind::Prevote, far, None);
    assert_eq!(bench.core.round(), 0, "too far ahead: not even counted");
    bench.votes(&others[..1], VoteKind::Prevote, ROUNDS_AHEAD_MAX, None);
    assert_eq!(
        bench.core.round(),
        0,
        "one of four is not more than a third"
    );
    bench.votes(&others[1..2], VoteKind::Prevote, ROUNDS_AHEAD_MAX, None);
    assert_eq!(bench.core.round(), ROUNDS_AHEAD_MAX, "line 55: f+1 skip");
}

#[cfg(not(feature = "broken-skip-lock-check"))]
#[test]
fn a_locked_validator_prevotes_only_its_lock_or_a_newer_polka() {
    let mut bench = Bench::new();
    bench.core.start();
    bench.propose(0, None, X, true);
    let others = bench.others(None);
    bench.votes(&others[..2], VoteKind::Prevote, 0, Some(X));
    assert_eq!(bench.core.locked(), Some((0, X)));
    bench.votes(&others, VoteKind::Precommit, 0, None);
    let out = bench.timeout(0, TimeoutKind::Precommit);
    assert_eq!(bench.core.round(), 1);
    // Round 1's proposer is someone else (Bench picks `me` so); a fresh
    // proposal for Y must get a nil prevote (line 23).
    assert!(
        !out.iter()
            .any(|o| matches!(o, Output::BuildProposal { .. }))
    );
    let out = bench.propose(1, None, Y, true);
    assert_eq!(my_votes(&out), vec![(VoteKind::Prevote, 1, None)]);
}

#[test]
fn a_proof_of_lock_round_unlocks_a_lower_lock() {
    let mut bench = Bench::new();
    bench.core.start();
    // Round 0: locked on X.
    bench.propose(0, None, X, true);
    let others = bench.others(None);
    bench.votes(&others[..2], VoteKind::Prevote, 0, Some(X));
    bench.votes(&others, VoteKind::Precommit, 0, None);
    bench.timeout(0, TimeoutKind::Precommit);
    // Round 1: the others saw a polka for Y in round 1 that we missed, and
    // round 2's proposer re-proposes Y with pol_round 1 (line 28–30).
    bench.votes(&others, VoteKind::Prevote, 1, Some(Y));
    bench.votes(&others, VoteKind::Precommit, 1, None);
    assert_eq!(bench.core.round(), 1);
    bench.timeout(1, TimeoutKind::Prevote);
    bench.timeout(1, TimeoutKind::Precommit);
    assert_eq!(bench.core.round(), 2);
    let proposer = bench.proposer(1, 2);
    if proposer == bench.me {
        // Our own proposal would be X again; this seed tests the other case.
        return;
    }
    let signed = bench.fixture.proposal(proposer, 1, 2, Some(1), Y);
    let out = bench.core.handle(Input::Proposal {
        signed,
        valid: true,
    });
    assert_eq!(my_votes(&out), vec![(VoteKind::Prevote, 2, Some(Y))]);
}

#[test]
fn a_restarted_validator_resumes_its_round_keeps_its_lock_and_cannot_double_sign() {
    let mut bench = Bench::new();
    bench.core.start();
    let mut signed_before = bench.propose(0, None, X, true);
    let others = bench.others(None);
    signed_before.extend(bench.votes(&others[..2], VoteKind::Prevote, 0, Some(X)));
    assert_eq!(bench.core.locked(), Some((0, X)));
    assert_eq!(
        my_votes(&signed_before),
        vec![
            (VoteKind::Prevote, 0, Some(X)),
            (VoteKind::Precommit, 0, Some(X))
        ]
    );
    // Power loss; the new process starts from what the disk kept.
    bench.disk.crash(0);
    let mut restarted = bench.fixture.core(bench.me, &bench.disk, 1);
    assert_eq!(restarted.round(), 0);
    assert_eq!(restarted.locked(), Some((0, X)));
    // It sends again exactly what it signed in the round (its peers may
    // never have got it), and goes on from the step after it.
    let resumed = restarted.start();
    let again: Vec<_> = resumed
        .iter()
        .filter_map(|o| match o {
            Output::Broadcast(ConsensusMessage::Vote(signed)) => Some(signed.clone()),
            _ => None,
        })
        .collect();
    let before: Vec<_> = signed_before
        .iter()
        .filter_map(|o| match o {
            Output::Broadcast(ConsensusMessage::Vote(signed)) => Some(signed.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(again, before, "the same statements, the same signatures");
    assert_eq!(restarted.step(), Step::Precommit);
    // The propose timeout of the round it already voted in does nothing.
    let out = restarted.handle(Input::Timeout(Timeout {
        height: 1,
        round: 0,
        kind: TimeoutKind::Propose,
    }));
    assert!(my_votes(&out).is_empty());
    assert!(!out.iter().any(|o| matches!(o, Output::SignFailed(_))));
    // Its own precommit counts: one more from the others completes the
    // round's precommits, and the round moves on after its timeout.
    let out = votes_into(
        &bench.fixture,
        &mut restarted,
        &others[..2],
        VoteKind::Precommit,
        0,
        None,
    );
    assert!(out.iter().any(|o| matches!(
        o,
        Output::ScheduleTimeout {
            timeout: Timeout {
                kind: TimeoutKind::Precommit,
                round: 0,
                ..
            },
            ..
        }
    )));
    // And the signer still refuses anything conflicting in that round.
    let mut signer = Signer::open(
        bench.fixture.key(bench.me),
        bench.fixture.chain_id,
        bench.disk.clone(),
        hm_env::mem::SeededEntropy::new(9, b"second-process"),
    )
    .expect("signer opens");
    let conflicting = signer.sign_vote(crate::block::Vote {
        kind: VoteKind::Prevote,
        height: 1,
        round: 0,
        block_hash: None,
        validator: bench.me,
    });
    assert!(matches!(
        conflicting,
        Err(SignerError::WouldDoubleSign { .. })
    ));
}

/// Votes of height 1 from `from`, signed with their keys, into `core`.
fn votes_into(
    fixture: &Fixture,
    core: &mut TestCore,
    from: &[ValidatorIndex],
    kind: VoteKind,
    round: Round,
    block: Option<Hash>,
) -> Vec<Output> {
    let mut out = Vec::new();
    for &validator in from {
        let signed = fixture.vote(validator, kind, 1, round, block);
        out.extend(core.handle(Input::Vote(signed)));
    }
    out
}

#[test]
fn a_validator_restarted_from_an_old_signer_state_moves_to_the_next_round() {
    // A disk written before the round's statements were kept holds only
    // the last statement's digest: the core cannot send it again, so it
    // does not wait in that round.
    let mut bench = Bench::new();
    bench.core.start();
    bench.propose(0, None, X, true);
    let old_state = super::signer::tests_support::downgrade_to_v1(&bench.disk);
    assert!(old_state, "the test wrote a v2 state to downgrade");
    let mut restarted = bench.fixture.core(bench.me, &bench.disk, 1);
    assert_eq!(restarted.round(), 1);
    let out = restarted.start();
    assert!(out.iter().any(|o| matches!(
        o,
        Output::ScheduleTimeout {
            timeout: Timeout {
                kind: TimeoutKind::Propose,
                round: 1,
                ..
            },
            ..
        }
    )));
}

#[test]
fn future_height_messages_are_replayed_after_the_decision() {
    let mut bench = Bench::new();
    bench.core.start();
    let next_proposer = bench.proposer(2, 0);
    if next_proposer == bench.me {
        return;
    }
    // Height 2's proposal arrives early.
    let early = bench.fixture.proposal(next_proposer, 2, 0, None, Y);
    let out = bench.core.handle(Input::Proposal {
        signed: early,
        valid: true,
    });
    assert!(my_votes(&out).is_empty());
    bench.propose(0, None, X, true);
    let others = bench.others(None);
    bench.votes(&others[..2], VoteKind::Prevote, 0, Some(X));
    let out = bench.votes(&others[..2], VoteKind::Precommit, 0, Some(X));
    assert_eq!(decided(&out).map(|d| d.0), Some(1));
    let height2: Vec<_> = out
        .iter()
        .filter_map(|o| match o {
            Output::Broadcast(ConsensusMessage::Vote(v)) if v.vote.height == 2 => {
                Some(v.vote.block_hash)
            }
            _ => None,
        })
        .collect();
    assert_eq!(height2, vec![Some(Y)], "prevotes the buffered proposal");
}

#[test]
fn a_lagging_peer_is_reported_once_and_a_certificate_catches_up() {
    let mut bench = Bench::new();
    bench.core.start();
    bench.propose(0, None, X, true);
    let others = bench.others(None);
    bench.votes(&others[..2], VoteKind::Prevote, 0, Some(X));
    let out = bench.votes(&others[..2], VoteKind::Precommit, 0, Some(X));
    let (_, _, certificate) = decided(&out).expect("decides");
    let late = others[2];
    let out = bench.votes(&[late], VoteKind::Prevote, 0, None);
    assert!(out.contains(&Output::PeerBehind {
        validator: late,
        height: 1
    }));
    let out = bench.votes(&[late], VoteKind::Precommit, 0, None);
    assert!(!out.iter().any(|o| matches!(o, Output::PeerBehind { .. })));

    // A fresh validator at height 1 adopts the certificate; a tampered one
    // is rejected.
    let mut fresh = Bench::new();
    fresh.core.start();
    let mut forged = certificate.clone();
    forged.block_hash = Y;
    let out = fresh.core.handle(Input::Commit(forged));
    assert!(out.contains(&Output::Rejected {
        validator: None,
        reason: Reject::BadCertificate
    }));
    let out = fresh.core.handle(Input::Commit(certificate));
    assert_eq!(decided(&out).map(|d| (d.0, d.1)), Some((1, X)));
    assert_eq!(fresh.core.height(), 2);
}

// ------------------------------------------------------------ hostile input, one core

/// Pre-signed messages over a small space (signing is the slow part), plus
/// mis-attributed copies whose signatures do not verify.
fn message_pool() -> &'static (Vec<SignedVote>, Vec<SignedProposal>) {
    static POOL: OnceLock<(Vec<SignedVote>, Vec<SignedProposal>)> = OnceLock::new();
    POOL.get_or_init(|| {
        let fixture = Fixture::new(&[1, 1, 1, 1]);
        let blocks = [Some(X), Some(Y), None];
        let mut votes = Vec::new();
        let mut proposals = Vec::new();
        for height in 1..=2 {
            for round in 0..3 {
                for validator in 0..4 {
                    for kind in [VoteKind::Prevote, VoteKind::Precommit] {
                        for block in blocks {
                            votes.push(fixture.vote(validator, kind, height, round, block));
                        }
                    }
                    for (block, pol) in [(X, None), (Y, None), (X, Some(0)), (Y, Some(1))] {
                        proposals.push(fixture.proposal(validator, height, round, pol, block));
                    }
                }
            }
        }
        let mut forged = votes[0].clone();
        forged.vote.validator = 1;
        votes.push(forged);
        (votes, proposals)
    })
}

#[derive(Debug, Clone)]
enum Action {
    Vote(usize),
    Proposal(usize, bool),
    Timeout(Height, Round, u8),
    Built(Height, Round, bool),
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        4 => any::<usize>().prop_map(Action::Vote),
        2 => (any::<usize>(), any::<bool>()).prop_map(|(i, v)| Action::Proposal(i, v)),
        2 => (1..3u64, 0..4u32, 0..4u8).prop_map(|(h, r, k)| Action::Timeout(h, r, k)),
        1 => (1..3u64, 0..4u32, any::<bool>()).prop_map(|(h, r, x)| Action::Built(h, r, x)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Arbitrary sequences of well-formed messages and timers never panic
    /// the core, and it never signs two different votes (or proposals) for
    /// one height, round and step.
    #[test]
    fn arbitrary_inputs_never_panic_or_make_the_core_equivocate(
        me in 0..4u16,
        actions in proptest::collection::vec(action(), 1..80),
    ) {
        let (votes, proposals) = message_pool();
        let fixture = Fixture::new(&[1, 1, 1, 1]);
        let mut core = fixture.core(me, &Fixture::disk(), 1);
        let mut signed: std::collections::BTreeMap<(Height, Round, u8), Option<Hash>> = Default::default();
        let mut outputs = core.start();
        for action in actions {
            let input = match action {
                Action::Vote(i) => Input::Vote(votes[i % votes.len()].clone()),
                Action::Proposal(i, valid) => Input::Proposal {
                    signed: proposals[i % proposals.len()].clone(),
                    valid,
                },
                Action::Timeout(height, round, kind) => Input::Timeout(Timeout {
                    height,
                    round,
                    kind: [TimeoutKind::Propose, TimeoutKind::Prevote, TimeoutKind::Precommit, TimeoutKind::Rebroadcast][usize::from(kind)],
                }),
                Action::Built(height, round, x) => Input::ProposalBuilt {
                    height,
                    round,
                    block_hash: if x { X } else { Y },
                },
            };
            outputs.extend(core.handle(input));
            for output in outputs.drain(..) {
                // Relays of pool messages (some claim to be `me`, as a second
                // instance with the same key would send) are not our signing.
                let (key, value) = match output {
                    Output::Broadcast(ConsensusMessage::Vote(v)) if votes.contains(&v) => continue,
                    Output::Broadcast(ConsensusMessage::Proposal(p)) if proposals.contains(&p) => continue,
                    Output::Broadcast(ConsensusMessage::Vote(v)) if v.vote.validator == me => (
                        (v.vote.height, v.vote.round, 1 + (v.vote.kind == VoteKind::Precommit) as u8),
                        v.vote.block_hash,
                    ),
                    Output::Broadcast(ConsensusMessage::Proposal(p)) if p.proposal.proposer == me => (
                        (p.proposal.height, p.proposal.round, 0),
                        Some(p.proposal.block_hash),
                    ),
                    _ => continue,
                };
                let previous = signed.insert(key, value);
                prop_assert!(previous.is_none() || previous == Some(value), "signed twice at {key:?}");
            }
            prop_assert!(core.height() <= 3);
        }
    }
}

// ------------------------------------------------------------ committees in the simulator

fn assert_ok(result: Result<(), String>) {
    if let Err(message) = result {
        panic!("{message}");
    }
}

#[test]
fn committees_of_4_7_10_with_uneven_stake_decide_several_heights() {
    for stakes in [
        &[1, 2, 3, 4][..],
        &[1, 1, 2, 2, 3, 5, 8][..],
        &[3, 1, 4, 1, 5, 9, 2, 6, 5, 3][..],
    ] {
        let report = sim::run(&Scenario::new(stakes.len() as u64, stakes));
        assert_ok(report.check_all());
        assert!(
            report.end_ms < 2_000,
            "a calm network decides fast: {} ms",
            report.end_ms
        );
    }
}

#[test]
fn an_invalid_proposer_is_reported_and_its_blocks_never_decided() {
    let stakes = [2, 2, 2, 2, 1];
    let fixture = Fixture::new(&stakes);
    // The proposer of height 1, round 0 builds invalid blocks.
    let bad = proposer(&fixture.chain_id, &fixture.validators, 1, 0);
    let mut scenario = Scenario::new(11, &stakes);
    scenario.faulty = vec![(bad, Behaviour::InvalidProposer)];
    let report = sim::run(&scenario);
    assert_ok(report.check_all());
    assert!(report.invalid_reports > 0);
    for block in report.decisions.values() {
        assert!(!report.invalid_blocks.contains(block));
    }
}

/// Byzantine validators with less than a third of the stake, chosen by the
/// seed: the lowest-stake validators in index order while they stay below.
fn faulty_minority(
    stakes: &[u64],
    behaviour: Behaviour,
    count_max: usize,
) -> Vec<(ValidatorIndex, Behaviour)> {
    let fixture = Fixture::new(stakes);
    let total = fixture.validators.total_stake();
    let mut by_stake: Vec<_> = fixture
        .validators
        .iter()
        .map(|(i, v)| (v.stake, i))
        .collect();
    by_stake.sort();
    let mut faulty = Vec::new();
    let mut stake = 0;
    for (validator_stake, index) in by_stake {
        if faulty.len() == count_max || 3 * (stake + validator_stake) >= total {
            break;
        }
        stake += validator_stake;
        faulty.push((index, behaviour));
    }
    faulty
}

fn stakes_strategy() -> impl Strategy<Value = Vec<u64>> {
    prop_oneof![
        proptest::collection::vec(1..6u64, 4),
        proptest::collection::vec(1..6u64, 7),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    /// Safety phase with 20 % loss, delays up to 300 ms and 10 % of messages
    /// up to 2 s late (reordering),
    /// a silent validator, then a calm network: agreement, validity, and
    /// every honest validator decides every height.
    #[test]
    fn agreement_validity_and_liveness_under_loss_and_reordering(
        seed in any::<u64>(),
        stakes in stakes_strategy(),
    ) {
        let mut scenario = Scenario::new(seed, &stakes);
        scenario.faulty = faulty_minority(&stakes, Behaviour::Silent, 1);
        scenario.drop_per_mille = 200;
        scenario.delay_ms_max = 300;
        scenario.slow_per_mille = 100;
        scenario.slow_delay_ms_max = 2_000;
        scenario.gst_ms = 3_000;
        scenario.time_ms_max = 40_000;
        let report = sim::run(&scenario);
        prop_assert!(report.check_all().is_ok(), "{:?}", report.check_all());
    }

    /// Honest validators crash (losing their core and every message in
    /// flight to them) and restart from their signer's disk, 6 times in
    /// the safety phase, up to 1.5 s down, often two or more at once, with
    /// loss and reordering: afterwards every validator decides every
    /// height. A validator that restarts must send again what it signed in
    /// its round; one that cannot (it may not sign a second statement)
    /// left its peers waiting on a quorum for good — a 4-validator devnet
    /// stalled at one height that way after overlapping kills.
    #[test]
    fn crashes_and_restarts_mid_round_never_stall_the_committee(
        seed in any::<u64>(),
        stakes in stakes_strategy(),
    ) {
        let mut scenario = Scenario::new(seed, &stakes);
        scenario.heights = 4;
        scenario.crashes = 6;
        scenario.restart_ms_max = 1_500;
        scenario.drop_per_mille = 50;
        scenario.delay_ms_max = 150;
        scenario.slow_per_mille = 50;
        scenario.slow_delay_ms_max = 800;
        scenario.gst_ms = 6_000;
        scenario.time_ms_max = 60_000;
        let report = sim::run(&scenario);
        prop_assert!(report.check_all().is_ok(), "{:?}", report.check_all());
    }

    /// Equivocating validators (double votes, double proposals) under
    /// reordering: safety holds and each one is caught by some honest node.
    #[test]
    fn equivocators_cannot_split_the_committee_and_are_reported(
        seed in any::<u64>(),
        stakes in stakes_strategy(),
    ) {
        let mut scenario = Scenario::new(seed, &stakes);
        scenario.faulty = faulty_minority(&stakes, Behaviour::Equivocator, 2);
        scenario.delay_ms_max = 250;
        scenario.slow_per_mille = 150;
        scenario.slow_delay_ms_max = 2_000;
        scenario.gst_ms = 3_000;
        scenario.time_ms_max = 40_000;
        let report = sim::run(&scenario);
        prop_assert!(!report.equivocated.is_empty() || scenario.faulty.is_empty());
        prop_assert!(report.check_all().is_ok(), "{:?}", report.check_all());
    }

    /// A validator sending arbitrary well-formed messages (any height, round,
    /// block, pol round; own, mis-signed or non-member) cannot panic anyone
    /// or split the honest validators.
    #[test]
    fn hostile_messages_never_panic_or_split_the_committee(seed in any::<u64>()) {
        let stakes = [2, 2, 2, 2, 1];
        let mut scenario = Scenario::new(seed, &stakes);
        scenario.faulty = faulty_minority(&stakes, Behaviour::Fuzzer, 1);
        scenario.hostile_messages = 60;
        scenario.delay_ms_max = 100;
        scenario.gst_ms = 1_000;
        let report = sim::run(&scenario);
        prop_assert!(report.agreement().is_ok(), "{:?}", report.agreement());
        prop_assert!(report.validity().is_ok(), "{:?}", report.validity());
        prop_assert!(report.liveness().is_ok(), "{:?}", report.liveness());
    }
}

/// Two equivocators whose only witness was each other, three times in a
/// row: found by `equivocators_cannot_split_the_committee_and_are_reported`
/// (the witness now stands for an honest validator's gossip).
#[test]
fn equivocators_are_reported_when_they_could_witness_each_other() {
    let stakes = [4, 5, 2, 1];
    let mut scenario = Scenario::new(2_598_769_939_853_498_692, &stakes);
    scenario.faulty = faulty_minority(&stakes, Behaviour::Equivocator, 2);
    assert_eq!(scenario.faulty.len(), 2, "two equivocators");
    scenario.delay_ms_max = 250;
    scenario.slow_per_mille = 150;
    scenario.slow_delay_ms_max = 2_000;
    scenario.gst_ms = 3_000;
    scenario.time_ms_max = 40_000;
    let report = sim::run(&scenario);
    assert_eq!(report.equivocated.len(), 2);
    assert!(report.check_all().is_ok(), "{:?}", report.check_all());
}

/// Beyond the fault bound safety is not guaranteed, but it is
/// accountable: a coalition of two double-signers of four (half the stake)
/// splits the two honest validators onto different blocks; from the two
/// conflicting certificates `accountability::convict` convicts only
/// coalition members, and when both certificates are of one round, members
/// holding more than a third of the stake, with evidence anyone can verify.
#[test]
fn a_fork_beyond_a_third_names_only_byzantine_culprits() {
    let stakes = [1, 1, 1, 1];
    let fixture = Fixture::new(&stakes);
    let mut forks = 0;
    let mut same_round_forks = 0;
    for seed in 0..60u64 {
        let mut scenario = Scenario::new(seed, &stakes);
        scenario.faulty = vec![(0, Behaviour::Coalition), (1, Behaviour::Coalition)];
        scenario.delay_ms_max = 200;
        scenario.slow_per_mille = 200;
        scenario.slow_delay_ms_max = 1_500;
        scenario.gst_ms = 3_000;
        scenario.time_ms_max = 20_000;
        let report = sim::run(&scenario);
        if report.agreement().is_ok() {
            continue;
        }
        // Two honest decisions that differ at one height.
        let fork = report
            .certificates
            .iter()
            .find_map(|(&(node, height), first)| {
                report
                    .certificates
                    .iter()
                    .find(|((other, h), second)| {
                        *other != node && *h == height && second.block_hash != first.block_hash
                    })
                    .map(|(_, second)| (first.clone(), second.clone()))
            });
        let Some((first, second)) = fork else {
            continue;
        };
        forks += 1;
        let conviction =
            crate::accountability::convict(&first, &second, &fixture.chain_id, &fixture.validators)
                .expect("two valid conflicting certificates");
        assert!(fixture.validators.is_one_third(conviction.stake));
        for (index, _) in &conviction.convicted {
            assert!(
                scenario.faulty.iter().any(|(faulty, _)| faulty == index),
                "seed {seed}: honest validator {index} convicted"
            );
        }
        if first.round == second.round {
            // Proven double-signers, more than a third of the stake.
            let stake: u64 = conviction
                .convicted
                .iter()
                .filter_map(|(index, _)| fixture.validators.get(*index).map(|v| v.stake))
                .sum();
            assert!(fixture.validators.is_one_third(stake), "seed {seed}");
            same_round_forks += 1;
        } else {
            // Across rounds the intersection are suspects (an honest
            // validator may have been unlocked by a forged polka).
            assert!(!conviction.suspects.is_empty(), "seed {seed}");
        }
    }
    assert!(
        same_round_forks > 0,
        "no seed of 60 forked within one round: the test judged nothing"
    );
    assert!(forks >= same_round_forks);
    eprintln!("{forks} of 60 seeds forked, {same_round_forks} within one round");
}

/// Sweeps many seeds over every scenario kind and prints failures:/// Sweeps many seeds over every scenario kind and prints failures:
/// `SIM_SEED=<n>` runs one seed, `SIM_TRACE=1` prints equivocations and
/// evidence as they happen.
#[test]
#[ignore]
fn seed_sweep() {
    let sets: [&[u64]; 3] = [
        &[1, 2, 3, 4],
        &[1, 1, 2, 2, 3, 5, 8],
        &[3, 1, 4, 1, 5, 9, 2, 6, 5, 3],
    ];
    let seeds: Vec<u64> = match std::env::var("SIM_SEED") {
        Ok(seed) => vec![seed.parse().expect("SIM_SEED is a number")],
        Err(_) => (1000..1100).collect(),
    };
    let (mut failures, mut runs) = (0, 0);
    for seed in seeds {
        for stakes in sets {
            for kind in 0..3 {
                let mut scenario = Scenario::new(seed, stakes);
                scenario.slow_per_mille = 100;
                scenario.slow_delay_ms_max = 2_000;
                scenario.gst_ms = 3_000;
                scenario.time_ms_max = 40_000;
                match kind {
                    0 => {
                        scenario.faulty = faulty_minority(stakes, Behaviour::Silent, 1);
                        scenario.drop_per_mille = 200;
                        scenario.delay_ms_max = 300;
                    }
                    1 => {
                        scenario.faulty = faulty_minority(stakes, Behaviour::Equivocator, 2);
                        scenario.delay_ms_max = 250;
                    }
                    _ => {
                        scenario.faulty = faulty_minority(stakes, Behaviour::Fuzzer, 1);
                        scenario.hostile_messages = 60;
                        scenario.delay_ms_max = 100;
                    }
                }
                runs += 1;
                let report = sim::run(&scenario);
                let result = if kind == 2 {
                    report
                        .agreement()
                        .and(report.validity())
                        .and(report.liveness())
                } else {
                    report.check_all()
                };
                if let Err(error) = result {
                    failures += 1;
                    println!("kind {kind} n {}: {error}", stakes.len());
                }
            }
        }
    }
    println!("{failures} failures of {runs}");
}

/// The schedule the `broken-skip-lock-check` build fails on: stakes 1, 2, 3,
/// 4 with the stake-1 validator equivocating, 15 % of messages delayed up to
/// 2 s before GST. Found by `zz_broken_search` (seeds 0..300, one hit). A
/// change to the simulator's RNG use moves it: search again.
const LOCK_BREAKING_SEED: u64 = 211;
const LOCK_BREAKING_STAKES: [u64; 4] = [1, 2, 3, 4];

fn lock_breaking_scenario(seed: u64, stakes: &[u64], behaviour: Behaviour) -> Scenario {
    let mut scenario = Scenario::new(seed, stakes);
    scenario.faulty = faulty_minority(stakes, behaviour, 1);
    scenario.delay_ms_max = 150;
    scenario.slow_per_mille = 150;
    scenario.slow_delay_ms_max = 2_000;
    scenario.gst_ms = 6_000;
    scenario.heights = 4;
    scenario.time_ms_max = 30_000;
    scenario
}

/// With the lock, the schedule that splits the broken build is safe (and
/// live, and the equivocator is caught).
#[cfg(not(feature = "broken-skip-lock-check"))]
#[test]
fn the_lock_breaking_schedule_is_harmless_with_the_lock() {
    let report = sim::run(&lock_breaking_scenario(
        LOCK_BREAKING_SEED,
        &LOCK_BREAKING_STAKES,
        Behaviour::Equivocator,
    ));
    assert_ok(report.check_all());
}

/// The broken build (lines 23/29 without their lock conditions): the
/// simulator finds two honest validators deciding different blocks.
#[cfg(feature = "broken-skip-lock-check")]
#[test]
fn without_the_lock_check_the_committee_splits() {
    let report = sim::run(&lock_breaking_scenario(
        LOCK_BREAKING_SEED,
        &LOCK_BREAKING_STAKES,
        Behaviour::Equivocator,
    ));
    let violation = report
        .agreement()
        .expect_err("the broken build must lose agreement");
    assert!(
        violation.contains("decided different blocks"),
        "{violation}"
    );
}

/// Sweeps seeds for agreement violations (run with the broken feature).
#[test]
#[ignore]
fn zz_broken_search() {
    let sets: [&[u64]; 2] = [&[1, 1, 1, 1], &[1, 2, 3, 4]];
    let mut found = 0;
    for seed in 0..300u64 {
        for stakes in sets {
            for behaviour in [Behaviour::Equivocator, Behaviour::Silent] {
                let report = sim::run(&lock_breaking_scenario(seed, stakes, behaviour));
                if let Err(violation) = report.agreement() {
                    found += 1;
                    println!("FOUND stakes {stakes:?} {behaviour:?}: {violation}");
                }
            }
        }
        if found >= 3 {
            break;
        }
    }
    println!("{found} violations");
}
