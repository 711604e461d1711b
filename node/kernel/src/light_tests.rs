//! The light client driven directly: chains of headers certified by test
//! committees (real FALCON signatures over precommits, no proofs — the
//! light client never sees a body), honest and Byzantine.

use std::sync::OnceLock;

use hm_env::mem::SeededEntropy;
use hm_wire::{Hash, SigningKey};
use proptest::prelude::*;

use super::*;
use crate::block::{LogHead, SignedVote, Vote, VoteKind};
use crate::validators::ValidatorIndex;

const KEY_LABEL: &str = "light-test-keys";
const START_MS: u64 = 1_700_000_000_000;
const BLOCK_INTERVAL_MS: u64 = 1_000;
const PARAMS: TrustParams = TrustParams {
    trusting_period_ms: 3_600_000,
    max_clock_drift_ms: 5_000,
};

fn chain_id() -> Hash {
    hm_wire::hash("test", b"light chain")
}

/// Validators made of test keys `positions`, each with `stake`.
struct Committee {
    set: ValidatorSet,
    /// Keys by validator index.
    keys: Vec<&'static SigningKey>,
}

impl Committee {
    fn new(positions: &[u64], stake: u64) -> Committee {
        let keys: Vec<&'static SigningKey> = positions
            .iter()
            .map(|position| hm_testkit::signing_key(KEY_LABEL, *position))
            .collect();
        let set = ValidatorSet::new(keys.iter().map(|key| (key.verifying_key(), stake)))
            .expect("valid test set");
        let mut by_index = keys.clone();
        for key in &keys {
            let index = set
                .index_of(&key.verifying_key().fingerprint())
                .expect("member");
            by_index[usize::from(index)] = key;
        }
        Committee {
            set,
            keys: by_index,
        }
    }

    fn hash(&self) -> Hash {
        self.set.hash()
    }

    /// The validator index of test key `position`.
    fn index_of(&self, position: u64) -> ValidatorIndex {
        let id = hm_testkit::signing_key(KEY_LABEL, position)
            .verifying_key()
            .fingerprint();
        self.set.index_of(&id).expect("member")
    }

    fn all(&self) -> Vec<ValidatorIndex> {
        self.set.iter().map(|(index, _)| index).collect()
    }

    /// A certificate for `header` signed by `signers` (validator indices,
    /// any order) under `chain_id`.
    fn certify_on(
        &self,
        chain_id: &Hash,
        header: &BlockHeader,
        signers: &[ValidatorIndex],
    ) -> CommitCertificate {
        let block_hash = header.hash();
        let mut signers = signers.to_vec();
        signers.sort_unstable();
        let entropy = SeededEntropy::new(header.height, b"light-test-precommits");
        let signatures = signers
            .iter()
            .map(|index| {
                let vote = Vote {
                    kind: VoteKind::Precommit,
                    height: header.height,
                    round: header.round,
                    block_hash: Some(block_hash),
                    validator: *index,
                };
                let key = self.keys[usize::from(*index)];
                (
                    *index,
                    SignedVote::sign(chain_id, vote, key, &entropy).signature,
                )
            })
            .collect();
        CommitCertificate {
            height: header.height,
            round: header.round,
            block_hash,
            signatures,
        }
    }

    fn certify(&self, header: &BlockHeader, signers: &[ValidatorIndex]) -> CommitCertificate {
        self.certify_on(&chain_id(), header, signers)
    }

    /// Signed by a smallest quorum of equal stakes (the first indices).
    fn certify_quorum(&self, header: &BlockHeader) -> CommitCertificate {
        let quorum = self.set.len() * 2 / 3 + 1;
        self.certify(header, &self.all()[..quorum])
    }
}

/// A header at `height` on top of `parent`, one block interval later,
/// certified by (and naming) `validators` now and next.
fn header_after(parent: &BlockHeader, height: Height, validators: &Committee) -> BlockHeader {
    BlockHeader {
        height,
        previous_hash: if height == parent.height + 1 {
            parent.hash()
        } else {
            hm_wire::hash("test-unseen-parent", &height.to_le_bytes())
        },
        timestamp_ms: parent.timestamp_ms + (height - parent.height) * BLOCK_INTERVAL_MS,
        state_root: hm_wire::hash("test-state", &height.to_le_bytes()),
        validators_hash: validators.hash(),
        next_validators_hash: validators.hash(),
        ..parent.clone()
    }
}

fn first_header(validators: &Committee) -> BlockHeader {
    BlockHeader {
        version: BLOCK_VERSION,
        chain_id: chain_id(),
        height: 1,
        round: 0,
        previous_hash: Hash::ZERO,
        transactions_root: hm_wire::merkle::empty_root(),
        updates_root: crate::block::updates_root(&[]),
        evidence_root: hm_wire::hash("test", b"evidence"),
        state_root: hm_wire::hash("test-state", &1u64.to_le_bytes()),
        log_head: LogHead::empty(),
        timestamp_ms: START_MS,
        difficulty: 0,
        time_output: Hash::ZERO,
        time_ticks: 1,
        proposer: validators.set.get(0).expect("member").id,
        validators_hash: validators.hash(),
        next_validators_hash: validators.hash(),
    }
}

/// Four validators of stake 10 (test keys 0..4): a quorum is 3.
fn committee() -> &'static Committee {
    static COMMITTEE: OnceLock<Committee> = OnceLock::new();
    COMMITTEE.get_or_init(|| Committee::new(&[0, 1, 2, 3], 10))
}

/// Heights 1..=100 of one honest chain, each certified by a quorum.
fn chain() -> &'static [(BlockHeader, CommitCertificate)] {
    static CHAIN: OnceLock<Vec<(BlockHeader, CommitCertificate)>> = OnceLock::new();
    CHAIN.get_or_init(|| {
        let validators = committee();
        let mut headers = vec![first_header(validators)];
        for height in 2..=100 {
            let next = header_after(&headers[headers.len() - 1], height, validators);
            headers.push(next);
        }
        headers
            .into_iter()
            .map(|header| {
                let certificate = validators.certify_quorum(&header);
                (header, certificate)
            })
            .collect()
    })
}

fn at(height: Height) -> &'static (BlockHeader, CommitCertificate) {
    &chain()[usize::try_from(height - 1).expect("small")]
}

/// A client trusting height `root` of [`chain`].
fn client_at(root: Height) -> LightClient {
    let (header, certificate) = at(root).clone();
    LightClient::new(
        chain_id(),
        TrustRoot {
            header,
            certificate,
            validators: committee().set.clone(),
            next_validators: None,
        },
        PARAMS,
    )
    .expect("a consistent root")
}

/// Shortly after `height` was made.
fn now_at(height: Height) -> u64 {
    at(height).0.timestamp_ms + 500
}

fn verify(client: &mut LightClient, height: Height) -> Result<Verified, LightError> {
    let (header, certificate) = at(height);
    client.verify(header, certificate, &committee().set, None, now_at(height))
}

#[test]
fn headers_are_verified_one_by_one() {
    let mut client = client_at(1);
    for height in 2..=10 {
        let verified = verify(&mut client, height).expect("the next header verifies");
        assert_eq!(
            verified.verification,
            Verification::Adjacent { from: height - 1 }
        );
        assert_eq!(verified.hash, at(height).0.hash());
    }
    let latest = client.latest().expect("active");
    assert_eq!((latest.height(), latest.hash()), (10, at(10).0.hash()));
    for height in 1..=10 {
        assert_eq!(
            client.trusted_state_root(height),
            Some(at(height).0.state_root)
        );
    }
    assert_eq!(client.trusted_state_root(11), None);
    assert_eq!(client.status(now_at(10)), LightStatus::Active);
    // The same header again changes nothing.
    assert_eq!(
        verify(&mut client, 10)
            .expect("already trusted")
            .verification,
        Verification::AlreadyTrusted
    );
}

#[test]
fn headers_are_verified_by_skipping() {
    let mut client = client_at(1);
    let verified = verify(&mut client, 10).expect("skips from 1 to 10");
    assert_eq!(verified.verification, Verification::Skipping { from: 1 });
    assert_eq!(verified.state_root, at(10).0.state_root);
    assert_eq!(
        verify(&mut client, 60).expect("skips on").verification,
        Verification::Skipping { from: 10 }
    );
    assert_eq!(client.trusted_state_root(10), Some(at(10).0.state_root));
    assert_eq!(client.trusted_state_root(5), None, "never verified");
    assert_eq!(client.latest().map(TrustedHeader::height), Some(60));
    // An honest header between two trusted ones is verified from the lower
    // one and taken in; the latest stays the latest.
    assert_eq!(
        verify(&mut client, 30)
            .expect("between 10 and 60")
            .verification,
        Verification::Skipping { from: 10 }
    );
    assert_eq!(client.trusted_state_root(30), Some(at(30).0.state_root));
    assert_eq!(client.latest().map(TrustedHeader::height), Some(60));
    assert!(client.misbehaviour().is_none());
}

#[test]
fn a_header_of_another_chain_is_refused() {
    let mut client = client_at(1);
    let other_chain = hm_wire::hash("test", b"another chain");
    let header = BlockHeader {
        chain_id: other_chain,
        ..at(2).0.clone()
    };
    let certificate = committee().certify_on(&other_chain, &header, &[0, 1, 2]);
    let refused = client.verify(&header, &certificate, &committee().set, None, now_at(2));
    assert!(
        matches!(refused, Err(LightError::WrongChain { got, .. }) if got == other_chain),
        "{refused:?}"
    );
}

#[test]
fn a_certificate_for_another_block_is_refused() {
    let mut client = client_at(1);
    let (header, _) = at(3);
    let (_, other_certificate) = at(4);
    let refused = client.verify(header, other_certificate, &committee().set, None, now_at(4));
    assert!(
        matches!(
            refused,
            Err(LightError::CertificateMismatch { height: 3, .. })
        ),
        "{refused:?}"
    );
    // Same height, other block: a certificate for a twin of header 3.
    let twin = BlockHeader {
        state_root: hm_wire::hash("test", b"twin"),
        ..header.clone()
    };
    let twin_certificate = committee().certify_quorum(&twin);
    let refused = client.verify(header, &twin_certificate, &committee().set, None, now_at(4));
    assert!(
        matches!(refused, Err(LightError::CertificateMismatch { .. })),
        "{refused:?}"
    );
    assert!(client.misbehaviour().is_none());
}

#[test]
fn too_little_stake_is_refused() {
    let mut client = client_at(1);
    let (header, _) = at(2);
    // Two of four equal stakes: half, not more than two thirds.
    let certificate = committee().certify(header, &[0, 1]);
    let refused = client.verify(header, &certificate, &committee().set, None, now_at(2));
    assert!(
        matches!(
            refused,
            Err(LightError::Certificate(BlockError::NoQuorum {
                stake: 20,
                total: 40
            }))
        ),
        "{refused:?}"
    );
    let message = refused.expect_err("refused").to_string();
    assert!(message.contains("another full node"), "{message}");
}

#[test]
fn a_forged_signature_is_refused() {
    let mut client = client_at(1);
    let (header, honest) = at(2);
    // Validator 1's signature presented as validator 0's.
    let mut forged = honest.clone();
    forged.signatures[0].1 = forged.signatures[1].1.clone();
    let refused = client.verify(header, &forged, &committee().set, None, now_at(2));
    assert!(
        matches!(
            refused,
            Err(LightError::Certificate(BlockError::BadSignature {
                index: 0,
                ..
            }))
        ),
        "{refused:?}"
    );
    // A signature over another block, moved into this certificate.
    let mut moved = honest.clone();
    moved.signatures[2].1 = at(3).1.signatures[2].1.clone();
    let refused = client.verify(header, &moved, &committee().set, None, now_at(2));
    assert!(
        matches!(
            refused,
            Err(LightError::Certificate(BlockError::BadSignature { .. }))
        ),
        "{refused:?}"
    );
    // A signer outside the set.
    let mut stranger = honest.clone();
    stranger
        .signatures
        .push((7, honest.signatures[0].1.clone()));
    let refused = client.verify(header, &stranger, &committee().set, None, now_at(2));
    assert!(
        matches!(
            refused,
            Err(LightError::Certificate(BlockError::UnknownValidator {
                index: 7
            }))
        ),
        "{refused:?}"
    );
    verify(&mut client, 2).expect("the honest certificate still verifies");
}

#[test]
fn an_expired_trusted_header_verifies_nothing() {
    let root_time_ms = at(1).0.timestamp_ms;
    let expiry_ms = root_time_ms + PARAMS.trusting_period_ms;
    let (header, certificate) = at(2);
    let mut client = client_at(1);
    let refused = client.verify(header, certificate, &committee().set, None, expiry_ms);
    assert!(
        matches!(refused, Err(LightError::Expired { height: 1, expired_at_ms, .. }) if expired_at_ms == expiry_ms),
        "{refused:?}"
    );
    assert!(
        refused
            .expect_err("expired")
            .to_string()
            .contains("fresh trust root")
    );
    assert_eq!(client.status(expiry_ms), LightStatus::Expired);
    assert_eq!(client.status(expiry_ms - 1), LightStatus::Active);
    client
        .verify(header, certificate, &committee().set, None, expiry_ms - 1)
        .expect("a millisecond earlier it still verifies");
    // Verifying moved the trusting period along with the latest header.
    assert_eq!(client.status(expiry_ms), LightStatus::Active);
}

#[test]
fn a_header_from_the_future_is_refused() {
    let mut client = client_at(1);
    let (header, certificate) = at(5);
    let now_ms = header.timestamp_ms - PARAMS.max_clock_drift_ms - 1;
    let refused = client.verify(header, certificate, &committee().set, None, now_ms);
    assert!(
        matches!(
            refused,
            Err(LightError::FromTheFuture { height: 5, latest_allowed_ms, .. })
                if latest_allowed_ms == header.timestamp_ms - 1
        ),
        "{refused:?}"
    );
    client
        .verify(header, certificate, &committee().set, None, now_ms + 1)
        .expect("exactly at the allowed drift it verifies");
}

#[test]
fn time_must_move_forward_from_the_trusted_header() {
    let mut client = client_at(3);
    for (height, timestamp_ms) in [(4, at(3).0.timestamp_ms), (10, at(3).0.timestamp_ms - 1)] {
        let header = BlockHeader {
            timestamp_ms,
            ..at(height).0.clone()
        };
        let certificate = committee().certify_quorum(&header);
        let refused = client.verify(&header, &certificate, &committee().set, None, now_at(10));
        assert!(
            matches!(
                refused,
                Err(LightError::NonMonotoneTime {
                    trusted_height: 3,
                    ..
                })
            ),
            "{height}: {refused:?}"
        );
    }
    assert!(client.misbehaviour().is_none());
}

#[test]
fn an_adjacent_header_must_be_certified_by_the_announced_next_set() {
    let mut client = client_at(1);
    // Header 2 names (and is certified by) a set header 1 did not announce.
    let others = Committee::new(&[4, 5, 6, 7], 10);
    let header = header_after(&at(1).0, 2, &others);
    let certificate = others.certify_quorum(&header);
    let refused = client.verify(&header, &certificate, &others.set, None, now_at(2));
    assert!(
        matches!(
            refused,
            Err(LightError::NotTheNextSet { height: 2, named, expected })
                if named == others.hash() && expected == committee().hash()
        ),
        "{refused:?}"
    );
    // And a set given that is not the one the header names.
    let (header, certificate) = at(2);
    let refused = client.verify(header, certificate, &others.set, None, now_at(2));
    assert!(
        matches!(
            refused,
            Err(LightError::WrongValidatorSet {
                field: "validators_hash",
                ..
            })
        ),
        "{refused:?}"
    );
    let refused = client.verify(
        header,
        certificate,
        &committee().set,
        Some(&others.set),
        now_at(2),
    );
    assert!(
        matches!(
            refused,
            Err(LightError::WrongValidatorSet {
                field: "next_validators_hash",
                ..
            })
        ),
        "{refused:?}"
    );
}

#[test]
fn skipping_needs_signers_with_more_than_a_third_of_the_trusted_stake() {
    // Trusted: test keys 0, 1, 2 with 10 each (30).
    let trusted = Committee::new(&[0, 1, 2], 10);
    let root = first_header(&trusted);
    let root_certificate = trusted.certify_quorum(&root);
    let client = LightClient::new(
        chain_id(),
        TrustRoot {
            header: root.clone(),
            certificate: root_certificate,
            validators: trusted.set.clone(),
            next_validators: None,
        },
        PARAMS,
    )
    .expect("a consistent root");
    let attempt = |new: &Committee, signers: &[u64]| {
        let header = header_after(&root, 5, new);
        let signers: Vec<ValidatorIndex> = signers
            .iter()
            .map(|position| new.index_of(*position))
            .collect();
        let certificate = new.certify(&header, &signers);
        let mut client = client.clone();
        let result = client.verify(&header, &certificate, &new.set, None, header.timestamp_ms);
        (result, client)
    };
    // Only key 0 carries over: 10 of 30 is exactly a third, not more.
    let (refused, client_after) = attempt(&Committee::new(&[0, 4, 5, 6], 10), &[0, 4, 5, 6]);
    assert!(
        matches!(
            refused,
            Err(LightError::NotEnoughTrust {
                trusted_height: 1,
                signed_stake: 10,
                trusted_stake: 30
            })
        ),
        "{refused:?}"
    );
    assert!(client_after.misbehaviour().is_none());
    assert_eq!(client_after.latest().map(TrustedHeader::height), Some(1));
    // Keys 0 and 1 carry over and both sign: 20 of 30.
    let overlapping = Committee::new(&[0, 1, 4, 5], 10);
    let (verified, client_after) = attempt(&overlapping, &[0, 1, 4, 5]);
    assert_eq!(
        verified.expect("enough trusted stake").verification,
        Verification::Skipping { from: 1 }
    );
    assert_eq!(
        client_after
            .latest()
            .map(|latest| latest.validators().hash()),
        Some(overlapping.hash())
    );
    // The same overlapping set, but only one trusted key among the
    // signers: the signers count, not the set.
    let (refused, _) = attempt(&overlapping, &[0, 4, 5]);
    assert!(
        matches!(
            refused,
            Err(LightError::NotEnoughTrust {
                signed_stake: 10,
                ..
            })
        ),
        "{refused:?}"
    );
    // A stake change is a different member: the trusted stake is what counts.
    let (verified, _) = attempt(&Committee::new(&[0, 1, 4, 5], 1_000), &[0, 1, 4, 5]);
    verified.expect("keys 0 and 1 hold 20 of the trusted 30");
}

#[test]
fn skipping_uses_the_next_set_the_trusted_header_names() {
    let current = committee();
    let next = Committee::new(&[4, 5, 6, 7], 10);
    let root = BlockHeader {
        next_validators_hash: next.hash(),
        ..first_header(current)
    };
    let root_certificate = current.certify_quorum(&root);
    let trust_root = |next_validators: Option<ValidatorSet>| TrustRoot {
        header: root.clone(),
        certificate: root_certificate.clone(),
        validators: current.set.clone(),
        next_validators,
    };
    let header = header_after(&root, 5, &next);
    let certificate = next.certify_quorum(&header);
    let now_ms = header.timestamp_ms;

    let mut client = LightClient::new(chain_id(), trust_root(None), PARAMS).expect("root");
    let refused = client.verify(&header, &certificate, &next.set, None, now_ms);
    assert!(
        matches!(refused, Err(LightError::NextValidatorsUnknown { height: 1, next_validators_hash }) if next_validators_hash == next.hash()),
        "{refused:?}"
    );
    let mut client =
        LightClient::new(chain_id(), trust_root(Some(next.set.clone())), PARAMS).expect("root");
    client
        .verify(&header, &certificate, &next.set, None, now_ms)
        .expect("the announced next set signed it");
    // Adjacent needs no next set: header 2 by the announced set.
    let mut client = LightClient::new(chain_id(), trust_root(None), PARAMS).expect("root");
    let adjacent = header_after(&root, 2, &next);
    assert_eq!(
        client
            .verify(
                &adjacent,
                &next.certify_quorum(&adjacent),
                &next.set,
                None,
                now_ms
            )
            .expect("announced as next")
            .verification,
        Verification::Adjacent { from: 1 }
    );
    // A root naming a next set other than the one given is refused.
    let wrong = LightClient::new(chain_id(), trust_root(Some(current.set.clone())), PARAMS);
    assert!(
        matches!(&wrong, Err(LightError::Root(inner)) if matches!(**inner, LightError::WrongValidatorSet { field: "next_validators_hash", .. })),
        "{wrong:?}"
    );
}

#[test]
fn an_inconsistent_trust_root_is_refused() {
    let (header, certificate) = at(5).clone();
    let root = |header: BlockHeader, certificate: CommitCertificate, validators: ValidatorSet| {
        LightClient::new(
            chain_id(),
            TrustRoot {
                header,
                certificate,
                validators,
                next_validators: None,
            },
            PARAMS,
        )
    };
    let cases = [
        root(header.clone(), at(6).1.clone(), committee().set.clone()),
        root(
            header.clone(),
            certificate.clone(),
            Committee::new(&[4, 5, 6, 7], 10).set,
        ),
        root(
            header.clone(),
            committee().certify(&header, &[0, 1]),
            committee().set.clone(),
        ),
    ];
    for case in cases {
        let error = case.expect_err("inconsistent");
        assert!(matches!(error, LightError::Root(_)), "{error:?}");
        assert!(error.to_string().contains("out of band"), "{error}");
    }
    let zero_period = LightClient::new(
        chain_id(),
        TrustRoot {
            header,
            certificate,
            validators: committee().set.clone(),
            next_validators: None,
        },
        TrustParams {
            trusting_period_ms: 0,
            ..PARAMS
        },
    );
    assert!(matches!(zero_period, Err(LightError::BadParams(_))));
}

/// Header `height` with another state root, certified by `signers`.
fn twin(height: Height, signers: &[ValidatorIndex]) -> (BlockHeader, CommitCertificate) {
    let header = BlockHeader {
        state_root: hm_wire::hash("test-forked-state", &height.to_le_bytes()),
        ..at(height).0.clone()
    };
    let certificate = committee().certify(&header, signers);
    (header, certificate)
}

#[test]
fn two_certified_headers_at_one_height_freeze_the_client() {
    let mut client = client_at(1);
    for height in 2..=4 {
        verify(&mut client, height).expect("honest chain");
    }
    let (fork, fork_certificate) = twin(3, &[1, 2, 3]);
    let frozen = client.verify(&fork, &fork_certificate, &committee().set, None, now_at(4));
    assert!(
        matches!(frozen, Err(LightError::Frozen { height: 3 })),
        "{frozen:?}"
    );
    let evidence = client.misbehaviour().expect("evidence kept").clone();
    assert_eq!(evidence.header_a, at(3).0);
    assert_eq!(evidence.header_b, fork);
    assert_eq!(
        evidence.verify(&chain_id(), &committee().set, &committee().set),
        Ok(Conflict::Fork { height: 3 })
    );
    // Frozen: nothing verifies, nothing is vouched for.
    let later = verify(&mut client, 5);
    assert!(matches!(later, Err(LightError::Frozen { .. })), "{later:?}");
    assert!(
        later
            .expect_err("frozen")
            .to_string()
            .contains("misbehaviour")
    );
    assert_eq!(client.trusted_state_root(2), None);
    assert!(client.latest().is_none());
    assert_eq!(client.status(now_at(5)), LightStatus::Frozen);

    // The evidence survives the wire, and a full node checks it alone.
    let decoded = Misbehaviour::decode(&evidence.encode()).expect("decodes");
    assert_eq!(decoded, evidence);
    let others = Committee::new(&[4, 5, 6, 7], 10);
    assert!(matches!(
        evidence.verify(&chain_id(), &committee().set, &others.set),
        Err(LightError::WrongValidatorSet { .. })
    ));
    assert!(matches!(
        evidence.verify(
            &hm_wire::hash("test", b"other"),
            &committee().set,
            &committee().set
        ),
        Err(LightError::WrongChain { .. })
    ));
    let mut weakened = evidence.clone();
    weakened.certificate_b.signatures.truncate(2);
    assert!(matches!(
        weakened.verify(&chain_id(), &committee().set, &committee().set),
        Err(LightError::Certificate(BlockError::NoQuorum { .. }))
    ));
    let mut same = evidence.clone();
    same.header_b = same.header_a.clone();
    same.certificate_b = same.certificate_a.clone();
    assert_eq!(
        same.verify(&chain_id(), &committee().set, &committee().set),
        Err(LightError::NoConflict)
    );
}

#[test]
fn a_conflicting_header_that_is_not_properly_certified_does_not_freeze() {
    let mut client = client_at(1);
    for height in 2..=4 {
        verify(&mut client, height).expect("honest chain");
    }
    let (fork, honest_certificate) = twin(3, &[1, 2, 3]);
    // Badly signed: one signature belongs to another block.
    let mut forged = honest_certificate.clone();
    forged.signatures[0].1 = at(3).1.signatures[0].1.clone();
    // Too few signers.
    let (_, thin) = twin(3, &[1, 2]);
    // Fully certified, by a set the client never trusted.
    let strangers = Committee::new(&[4, 5, 6, 7], 10);
    let stranger_fork = BlockHeader {
        validators_hash: strangers.hash(),
        next_validators_hash: strangers.hash(),
        ..fork.clone()
    };
    let stranger_certificate = strangers.certify_quorum(&stranger_fork);
    let attempts = [
        (&fork, &forged, &committee().set),
        (&fork, &thin, &committee().set),
        (&stranger_fork, &stranger_certificate, &strangers.set),
    ];
    for (header, certificate, validators) in attempts {
        let refused = client.verify(header, certificate, validators, None, now_at(4));
        assert!(
            matches!(
                refused,
                Err(LightError::Certificate(_) | LightError::NotEnoughTrust { .. })
            ),
            "{refused:?}"
        );
        assert!(client.misbehaviour().is_none(), "not frozen by {refused:?}");
    }
    verify(&mut client, 5).expect("still verifying");
    assert_eq!(client.trusted_state_root(3), Some(at(3).0.state_root));
}

#[test]
fn a_certified_header_between_trusted_ones_with_time_running_backwards_freezes() {
    let mut client = client_at(1);
    verify(&mut client, 6).expect("skips to 6");
    // An honest header in the gap is consistent: taken in, no freeze.
    let taken = verify(&mut client, 3);
    assert!(matches!(taken, Ok(Verified { height: 3, .. })), "{taken:?}");
    assert!(client.misbehaviour().is_none());
    // Header 4 certified with a time at or after header 6's.
    let header = BlockHeader {
        timestamp_ms: at(6).0.timestamp_ms,
        ..at(4).0.clone()
    };
    let certificate = committee().certify_quorum(&header);
    let frozen = client.verify(&header, &certificate, &committee().set, None, now_at(6));
    assert!(
        matches!(frozen, Err(LightError::Frozen { height: 4 })),
        "{frozen:?}"
    );
    let evidence = client.misbehaviour().expect("evidence");
    assert_eq!(evidence.header_a, at(6).0);
    assert_eq!(
        evidence.verify(&chain_id(), &committee().set, &committee().set),
        Ok(Conflict::TimeReversal { lower: 4, upper: 6 })
    );
}

#[test]
fn a_certified_next_header_with_another_parent_freezes() {
    let mut client = client_at(1);
    verify(&mut client, 2).expect("honest");
    let header = BlockHeader {
        previous_hash: hm_wire::hash("test", b"another parent"),
        ..at(3).0.clone()
    };
    let certificate = committee().certify_quorum(&header);
    let frozen = client.verify(&header, &certificate, &committee().set, None, now_at(3));
    assert!(
        matches!(frozen, Err(LightError::Frozen { height: 3 })),
        "{frozen:?}"
    );
    assert_eq!(
        client.misbehaviour().expect("evidence").verify(
            &chain_id(),
            &committee().set,
            &committee().set
        ),
        Ok(Conflict::BrokenLink { height: 2 })
    );
}

#[test]
fn memory_is_bounded_and_the_latest_is_kept() {
    let mut client = client_at(1);
    for height in 2..=100 {
        verify(&mut client, height).expect("honest chain");
        assert!(client.trusted_len() <= TRUSTED_HEADERS_MAX);
        assert_eq!(client.latest().map(TrustedHeader::height), Some(height));
    }
    assert_eq!(client.trusted_len(), TRUSTED_HEADERS_MAX);
    let oldest = 100 - TRUSTED_HEADERS_MAX as Height + 1;
    assert_eq!(client.trusted_state_root(oldest - 1), None, "dropped");
    assert_eq!(
        client.trusted_state_root(oldest),
        Some(at(oldest).0.state_root)
    );
    // One validator set, shared by every header.
    let first = client.trusted(oldest).expect("kept").validators();
    let last = client.latest().expect("kept").validators();
    assert!(std::ptr::eq(first, last), "sets are shared, not copied");
    // A conflicting header below everything kept cannot be judged: refused.
    let (fork, fork_certificate) = twin(2, &[0, 1, 2]);
    let refused = client.verify(
        &fork,
        &fork_certificate,
        &committee().set,
        None,
        now_at(100),
    );
    assert!(
        matches!(refused, Err(LightError::NotNewer { .. })),
        "{refused:?}"
    );
    assert!(client.misbehaviour().is_none());
}

#[test]
fn evidence_of_the_largest_certificates_fits_its_decode_limit() {
    let (header, certificate) = at(2);
    let signature = certificate.signatures[0].1.clone();
    let full = CommitCertificate {
        signatures: (0..VALIDATORS_MAX)
            .map(|index| {
                (
                    ValidatorIndex::try_from(index).expect("small"),
                    signature.clone(),
                )
            })
            .collect(),
        ..certificate.clone()
    };
    let evidence = Misbehaviour {
        header_a: header.clone(),
        certificate_a: full.clone(),
        header_b: header.clone(),
        certificate_b: full,
    };
    let encoded = evidence.encode();
    assert!(encoded.len() <= MISBEHAVIOUR_BYTES_MAX, "{}", encoded.len());
    assert_eq!(Misbehaviour::decode(&encoded).expect("decodes"), evidence);
    assert!(Misbehaviour::decode(&encoded[..encoded.len() - 1]).is_err());
}

proptest! {
    /// Any single byte changed in a certified header or in its certificate
    /// makes it refused (or undecodable), and never freezes the client.
    #[test]
    fn any_single_byte_tamper_is_refused(
        in_certificate in any::<bool>(),
        position in any::<prop::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let mut client = client_at(4);
        let (header, certificate) = at(5);
        let (header, certificate) = if in_certificate {
            let mut bytes = hm_wire::encode(certificate);
            let at = position.index(bytes.len());
            bytes[at] ^= flip;
            match hm_wire::decode::<CommitCertificate>(&bytes, MISBEHAVIOUR_BYTES_MAX) {
                Ok(tampered) => (header.clone(), tampered),
                Err(_) => return Ok(()),
            }
        } else {
            let mut bytes = hm_wire::encode(header);
            let at = position.index(bytes.len());
            bytes[at] ^= flip;
            match hm_wire::decode::<BlockHeader>(&bytes, HEADER_BYTES_MAX) {
                Ok(tampered) => (tampered, certificate.clone()),
                Err(_) => return Ok(()),
            }
        };
        let result = client.verify(&header, &certificate, &committee().set, None, now_at(5));
        prop_assert!(result.is_err(), "tampered input verified: {:?}", result);
        prop_assert!(client.misbehaviour().is_none());
        prop_assert_eq!(client.latest().map(TrustedHeader::height), Some(4));
    }
}

#[test]
fn state_answers_are_accepted_only_when_proven_against_a_trusted_root() {
    use crate::state::{ModuleProof, StateTree, key_hash, modules_root, value_digest};
    let kv = StateTree::new().updated(&[(key_hash(b"name"), Some(value_digest(b"record")))]);
    let trust = StateTree::new();
    let module_roots = vec![kv.root(), trust.root()];
    // Height 5 of the chain, committing to this state.
    let header = BlockHeader {
        state_root: modules_root(&module_roots),
        ..at(5).0.clone()
    };
    let certificate = committee().certify_quorum(&header);
    let mut client = client_at(4);
    let proof = ModuleProof {
        module: 0,
        module_roots,
        proof: kv.prove(b"name"),
    };
    // Not trusted yet: refused, whatever the proof.
    assert_eq!(
        client.verify_state(5, 0, b"name", Some(b"record"), &proof),
        Err(LightError::NotTrusted {
            height: 5,
            latest: 4
        })
    );
    client
        .verify(&header, &certificate, &committee().set, None, now_at(5))
        .expect("height 5 verifies");
    assert_eq!(
        client.verify_state(5, 0, b"name", Some(b"record"), &proof),
        Ok(())
    );
    // A forged value, a hidden key, or the same proof at another trusted
    // height are refused.
    for (height, value) in [
        (5, Some(&b"forged"[..])),
        (5, None),
        (4, Some(&b"record"[..])),
    ] {
        assert!(matches!(
            client.verify_state(height, 0, b"name", value, &proof),
            Err(LightError::Proof { .. })
        ));
    }
}
