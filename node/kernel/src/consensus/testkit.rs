//! Test fixtures: validator keys (from hm-testkit, generated once per
//! process), validator sets with given stakes,
//! cores on crash-aware disks, and directly signed messages (what a
//! Byzantine validator can send without going through its signer).

use hm_env::mem::{MemDisk, SeededEntropy};
use hm_wire::{Hash, SigningKey};

use crate::block::{Height, Proposal, Round, SignedProposal, SignedVote, Vote, VoteKind};
use crate::validators::{ValidatorIndex, ValidatorSet};

use super::{ConsensusParams, Core, SIGNER_COLUMN_FAMILY, Signer};

/// Keys generated for tests; scenarios use at most this many validators.
pub(crate) const TEST_KEYS_MAX: usize = 10;

pub(crate) type TestCore = Core<Signer<MemDisk, SeededEntropy>>;

/// The `position`-th test key (not the validator index).
pub(crate) fn signing_key(position: usize) -> SigningKey {
    assert!(
        position < TEST_KEYS_MAX,
        "at most {TEST_KEYS_MAX} test keys"
    );
    hm_testkit::signing_key("consensus-test-keys", position as u64).duplicate()
}

/// Timeouts for simulations: short, so many rounds fit in virtual time.
pub(crate) fn test_params() -> ConsensusParams {
    ConsensusParams {
        propose_timeout_base_ms: 200,
        propose_timeout_delta_ms: 50,
        prevote_timeout_base_ms: 100,
        prevote_timeout_delta_ms: 50,
        precommit_timeout_base_ms: 100,
        precommit_timeout_delta_ms: 50,
        rebroadcast_timeout_base_ms: 500,
        rebroadcast_timeout_delta_ms: 100,
    }
}

pub(crate) struct Fixture {
    pub chain_id: Hash,
    pub validators: ValidatorSet,
    /// Signing keys by validator index.
    keys: Vec<&'static SigningKey>,
}

impl Fixture {
    /// A set of `stakes.len()` validators; the i-th test key gets
    /// `stakes[i]`, and validator indices follow node-id order.
    pub fn new(stakes: &[u64]) -> Fixture {
        assert!(stakes.len() <= TEST_KEYS_MAX, "not that many test keys");
        let keys: Vec<&'static SigningKey> = (0..stakes.len())
            .map(|position| hm_testkit::signing_key("consensus-test-keys", position as u64))
            .collect();
        let validators = ValidatorSet::new(
            keys.iter()
                .map(|key| key.verifying_key())
                .zip(stakes.iter().copied()),
        )
        .expect("valid test set");
        let mut by_index = keys.clone();
        for (position, key) in keys.iter().enumerate() {
            let index = validators
                .index_of(&key.verifying_key().fingerprint())
                .expect("member");
            by_index[usize::from(index)] = keys[position];
        }
        Fixture {
            chain_id: Hash([7; 32]),
            validators,
            keys: by_index,
        }
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn key(&self, index: ValidatorIndex) -> SigningKey {
        self.keys[usize::from(index)].duplicate()
    }

    pub fn disk() -> MemDisk {
        MemDisk::new(&[SIGNER_COLUMN_FAMILY])
    }

    /// Validator `index`'s core at `height`, signing through a signer on
    /// `disk` (state already on the disk is loaded, as after a restart).
    pub fn core(&self, index: ValidatorIndex, disk: &MemDisk, height: Height) -> TestCore {
        let signer = Signer::open(
            self.key(index),
            self.chain_id,
            disk.clone(),
            SeededEntropy::new(u64::from(index), b"consensus-test-signer"),
        )
        .expect("signer opens");
        Core::new(
            self.chain_id,
            self.validators.clone(),
            test_params(),
            signer,
            height,
        )
        .expect("validator core")
    }

    /// A vote signed directly with the key (no double-sign protection).
    pub fn vote(
        &self,
        index: ValidatorIndex,
        kind: VoteKind,
        height: Height,
        round: Round,
        block_hash: Option<Hash>,
    ) -> SignedVote {
        let vote = Vote {
            kind,
            height,
            round,
            block_hash,
            validator: index,
        };
        let entropy = SeededEntropy::new(u64::from(index), b"raw-vote");
        SignedVote::sign(&self.chain_id, vote, &self.key(index), &entropy)
    }

    pub fn proposal(
        &self,
        index: ValidatorIndex,
        height: Height,
        round: Round,
        pol_round: Option<Round>,
        block_hash: Hash,
    ) -> SignedProposal {
        let proposal = Proposal {
            height,
            round,
            pol_round,
            block_hash,
            proposer: index,
        };
        let entropy = SeededEntropy::new(u64::from(index), b"raw-proposal");
        SignedProposal::sign(&self.chain_id, proposal, &self.key(index), &entropy)
    }
}
