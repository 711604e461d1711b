//! StakeProof (who): the proposer is a validator of the parent height's
//! set, with the stake that set gives it, and it signed the block.
//!
//! The signature is over the block hash, which covers the whole header
//! (chain id, height, round, parent, roots, time output, proposer), under
//! its own domain so it can never be replayed as a vote or a proposal.

use hm_env::Entropy;
use hm_wire::{Hash, SigningKey};

use super::StakeProof;
use crate::validators::{ValidatorIndex, ValidatorSet};

pub const STAKE_SIGN_DOMAIN: &str = "hm/stake-proof/v1";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StakeError {
    #[error("node {id} is not in the validator set at the parent height, so it cannot propose")]
    NotAValidator { id: Hash },
    #[error("stake proof names validator index {index}, which is not in the validator set")]
    UnknownValidator { index: ValidatorIndex },
    #[error("validator {index} is node {validator}, but the header's proposer is {proposer}")]
    ProposerMismatch {
        index: ValidatorIndex,
        validator: Hash,
        proposer: Hash,
    },
    #[error(
        "stake proof claims stake {claimed} for validator {index}, but the set at the parent height gives it {actual}"
    )]
    StakeMismatch {
        index: ValidatorIndex,
        claimed: u64,
        actual: u64,
    },
    #[error("the stake signature of validator {index} over the block hash does not verify")]
    BadSignature { index: ValidatorIndex },
}

/// Signs `block_hash` as the validator whose key is `key`.
pub fn prove_stake<E: Entropy + ?Sized>(
    block_hash: &Hash,
    key: &SigningKey,
    validators: &ValidatorSet,
    entropy: &E,
) -> Result<StakeProof, StakeError> {
    let id = key.verifying_key().fingerprint();
    let index = validators
        .index_of(&id)
        .ok_or(StakeError::NotAValidator { id })?;
    let stake = validators
        .get(index)
        .map(|validator| validator.stake)
        .ok_or(StakeError::UnknownValidator { index })?;
    Ok(StakeProof {
        validator: index,
        stake,
        signature: key.sign(STAKE_SIGN_DOMAIN, block_hash.as_bytes(), entropy),
    })
}

/// Checks that `proof` comes from `proposer`, a member of `validators` (the
/// set at the parent height) with the stake it claims, and that its
/// signature over `block_hash` verifies.
pub fn verify_stake(
    proof: &StakeProof,
    block_hash: &Hash,
    proposer: &Hash,
    validators: &ValidatorSet,
) -> Result<(), StakeError> {
    let index = proof.validator;
    let validator = validators
        .get(index)
        .ok_or(StakeError::UnknownValidator { index })?;
    if validator.id != *proposer {
        return Err(StakeError::ProposerMismatch {
            index,
            validator: validator.id,
            proposer: *proposer,
        });
    }
    if validator.stake != proof.stake {
        return Err(StakeError::StakeMismatch {
            index,
            claimed: proof.stake,
            actual: validator.stake,
        });
    }
    validator
        .key
        .verify(STAKE_SIGN_DOMAIN, block_hash.as_bytes(), &proof.signature)
        .map_err(|_| StakeError::BadSignature { index })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hm_env::mem::SeededEntropy;
    use hm_wire::hash;

    struct Fixture {
        keys: Vec<SigningKey>,
        set: ValidatorSet,
        entropy: SeededEntropy,
    }

    fn fixture() -> Fixture {
        let entropy = SeededEntropy::new(11, b"stake-tests");
        let keys: Vec<SigningKey> = (0..3).map(|_| SigningKey::generate(&entropy)).collect();
        let set = ValidatorSet::new(keys.iter().map(|k| k.verifying_key()).zip([5, 7, 9]))
            .expect("valid set");
        Fixture { keys, set, entropy }
    }

    #[test]
    fn valid_proof_verifies_and_tampering_fails() {
        let f = fixture();
        let block = hash("test", b"block");
        let key = &f.keys[1];
        let id = key.verifying_key().fingerprint();
        let proof = prove_stake(&block, key, &f.set, &f.entropy).expect("a validator");
        assert_eq!(proof.stake, 7);
        assert_eq!(verify_stake(&proof, &block, &id, &f.set), Ok(()));

        let other_block = hash("test", b"other block");
        assert!(matches!(
            verify_stake(&proof, &other_block, &id, &f.set),
            Err(StakeError::BadSignature { .. })
        ));
        let mut stake = proof.clone();
        stake.stake += 1;
        assert!(matches!(
            verify_stake(&stake, &block, &id, &f.set),
            Err(StakeError::StakeMismatch {
                claimed: 8,
                actual: 7,
                ..
            })
        ));
        let mut index = proof.clone();
        index.validator = (index.validator + 1) % 3;
        assert!(matches!(
            verify_stake(&index, &block, &id, &f.set),
            Err(StakeError::ProposerMismatch { .. })
        ));
        let mut unknown = proof.clone();
        unknown.validator = 3;
        assert!(matches!(
            verify_stake(&unknown, &block, &id, &f.set),
            Err(StakeError::UnknownValidator { index: 3 })
        ));
        // Another validator's signature under this validator's index.
        let mut forged = proof.clone();
        forged.signature = f.keys[0].sign(STAKE_SIGN_DOMAIN, block.as_bytes(), &f.entropy);
        assert!(matches!(
            verify_stake(&forged, &block, &id, &f.set),
            Err(StakeError::BadSignature { .. })
        ));
        // The right key, but a signature for another purpose.
        let mut domain = proof;
        domain.signature = key.sign("hm/consensus-vote/v1", block.as_bytes(), &f.entropy);
        assert!(matches!(
            verify_stake(&domain, &block, &id, &f.set),
            Err(StakeError::BadSignature { .. })
        ));
    }

    #[test]
    fn outsiders_cannot_prove_stake() {
        let f = fixture();
        let outsider = SigningKey::generate(&f.entropy);
        assert!(matches!(
            prove_stake(&hash("test", b"block"), &outsider, &f.set, &f.entropy),
            Err(StakeError::NotAValidator { .. })
        ));
    }
}
