//! Test fixtures: validator keys (FALCON key generation is slow, so a fixed
//! set is generated once per test binary), validator sets with given stakes,
//! cores on crash-aware disks, and directly signed messages (what a
//! Byzantine validator can send without going through its signer).

use std::sync::OnceLock;

use hm_env::mem::{MemDisk, SeededEntropy};
use hm_wire::{Hash, SigningKey};

use crate::block::{Height, Proposal, Round, SignedProposal, SignedVote, Vote, VoteKind};
use crate::validators::{ValidatorIndex, ValidatorSet};

use super::{ConsensusParams, Core, SIGNER_COLUMN_FAMILY, Signer};

/// Keys generated for tests; scenarios use at most this many validators.
pub(crate) const TEST_KEYS_MAX: usize = 10;

pub(crate) type TestCore = Core<Signer<MemDisk, SeededEntropy>>;

fn key_bytes() -> &'static [Vec<u8>] {
    static KEYS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    KEYS.get_or_init(|| {
        let entropy = SeededEntropy::new(42, b"consensus-test-keys");
        (0..TEST_KEYS_MAX)
            .map(|_| SigningKey::generate(&entropy).to_bytes())
            .collect()
    })
}

/// The `position`-th test key (not the validator index).
pub(crate) fn signing_key(position: usize) -> SigningKey {
    SigningKey::from_bytes(&key_bytes()[position]).expect("test key decodes")
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
    /// Signing keys' bytes by validator index.
    keys: Vec<Vec<u8>>,
}

impl Fixture {
    /// A set of `stakes.len()` validators; the i-th test key gets
    /// `stakes[i]`, and validator indices follow node-id order.
    pub fn new(stakes: &[u64]) -> Fixture {
        assert!(stakes.len() <= TEST_KEYS_MAX, "not that many test keys");
        let bytes = key_bytes();
        let keys: Vec<SigningKey> = (0..stakes.len()).map(signing_key).collect();
        let validators = ValidatorSet::new(
            keys.iter()
                .map(SigningKey::verifying_key)
                .zip(stakes.iter().copied()),
        )
        .expect("valid test set");
        let mut by_index = vec![Vec::new(); stakes.len()];
        for (position, key) in keys.iter().enumerate() {
            let index = validators
                .index_of(&key.verifying_key().fingerprint())
                .expect("member");
            by_index[usize::from(index)] = bytes[position].clone();
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
        SigningKey::from_bytes(&self.keys[usize::from(index)]).expect("test key decodes")
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
