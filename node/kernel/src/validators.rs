//! The stake-weighted validator set fixed by genesis.
//!
//! Validators are ordered by node id so every node numbers them the same
//! way; votes and certificates name a validator by that index.

use hm_wire::{Hash, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::block::VALIDATORS_MAX;

/// Position of a validator in its set (ordered by node id).
pub type ValidatorIndex = u16;

/// Total stake is kept below this so `3 * stake` never overflows.
pub const TOTAL_STAKE_MAX: u64 = u64::MAX / 4;

/// Hash domain of [`ValidatorSet::hash`], the value block headers name in
/// `validators_hash` and `next_validators_hash`.
pub const VALIDATOR_SET_DOMAIN: &str = "hm/validator-set/v1";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Validator {
    /// Node id: the fingerprint of `key`.
    pub id: Hash,
    pub key: VerifyingKey,
    pub stake: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ValidatorSet {
    validators: Vec<Validator>,
    total_stake: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidatorSetError {
    #[error("a validator set needs at least one validator")]
    Empty,
    #[error("{count} validators is more than the limit of {VALIDATORS_MAX}")]
    TooMany { count: usize },
    #[error("validator {id} has zero stake; give it stake or leave it out")]
    ZeroStake { id: Hash },
    #[error("validator {id} appears twice")]
    Duplicate { id: Hash },
    #[error("total stake exceeds {TOTAL_STAKE_MAX}")]
    StakeOverflow,
}

impl ValidatorSet {
    /// Builds the set from `(key, stake)` pairs in any order.
    pub fn new(
        members: impl IntoIterator<Item = (VerifyingKey, u64)>,
    ) -> Result<ValidatorSet, ValidatorSetError> {
        let mut validators: Vec<Validator> = members
            .into_iter()
            .map(|(key, stake)| Validator {
                id: key.fingerprint(),
                key,
                stake,
            })
            .collect();
        if validators.is_empty() {
            return Err(ValidatorSetError::Empty);
        }
        if validators.len() > VALIDATORS_MAX {
            return Err(ValidatorSetError::TooMany {
                count: validators.len(),
            });
        }
        validators.sort_by_key(|validator| validator.id);
        let mut total_stake = 0u64;
        for (position, validator) in validators.iter().enumerate() {
            if validator.stake == 0 {
                return Err(ValidatorSetError::ZeroStake { id: validator.id });
            }
            if position > 0 && validators[position - 1].id == validator.id {
                return Err(ValidatorSetError::Duplicate { id: validator.id });
            }
            total_stake = total_stake
                .checked_add(validator.stake)
                .filter(|total| *total <= TOTAL_STAKE_MAX)
                .ok_or(ValidatorSetError::StakeOverflow)?;
        }
        Ok(ValidatorSet {
            validators,
            total_stake,
        })
    }

    /// The set's identity, which headers commit to: a domain-separated
    /// hash over the canonical encoding of the `(id, key, stake)` list in
    /// node-id order. Two sets hash alike exactly when they have the same
    /// members with the same keys and stakes (the order is fixed by `new`).
    /// It encodes every key (1.8 KB each): compute it once per set, not per
    /// use.
    pub fn hash(&self) -> Hash {
        hm_wire::hash(VALIDATOR_SET_DOMAIN, &hm_wire::encode(&self.validators))
    }

    pub fn len(&self) -> usize {
        self.validators.len()
    }

    pub fn is_empty(&self) -> bool {
        self.validators.is_empty()
    }

    pub fn total_stake(&self) -> u64 {
        self.total_stake
    }

    pub fn get(&self, index: ValidatorIndex) -> Option<&Validator> {
        self.validators.get(usize::from(index))
    }

    pub fn index_of(&self, id: &Hash) -> Option<ValidatorIndex> {
        self.validators
            .binary_search_by_key(id, |validator| validator.id)
            .ok()
            .and_then(|position| ValidatorIndex::try_from(position).ok())
    }

    pub fn iter(&self) -> impl Iterator<Item = (ValidatorIndex, &Validator)> {
        // `new` caps the set at VALIDATORS_MAX (< u16::MAX), so the cast
        // is exact.
        self.validators
            .iter()
            .enumerate()
            .map(|(position, validator)| (position as ValidatorIndex, validator))
    }

    /// More than two thirds of the total stake: enough to commit.
    pub fn is_quorum(&self, stake: u64) -> bool {
        debug_assert!(stake <= self.total_stake, "stake counted twice");
        stake.saturating_mul(3) > self.total_stake.saturating_mul(2)
    }

    /// More than one third: at least one honest validator among them
    /// (Tendermint's f+1, used to skip to a higher round).
    pub fn is_one_third(&self, stake: u64) -> bool {
        debug_assert!(stake <= self.total_stake, "stake counted twice");
        stake.saturating_mul(3) > self.total_stake
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hm_env::mem::SeededEntropy;
    use hm_wire::SigningKey;

    fn keys(count: usize) -> Vec<VerifyingKey> {
        let entropy = SeededEntropy::new(7, b"validators");
        (0..count)
            .map(|_| SigningKey::generate(&entropy).verifying_key())
            .collect()
    }

    #[test]
    fn orders_by_id_and_finds_indices() {
        let keys = keys(4);
        let set = ValidatorSet::new(keys.iter().cloned().zip([1, 2, 3, 4])).expect("valid set");
        let ids: Vec<Hash> = set.iter().map(|(_, v)| v.id).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
        for key in &keys {
            let index = set.index_of(&key.fingerprint()).expect("member");
            assert_eq!(set.get(index).expect("member").key, *key);
        }
        assert_eq!(set.total_stake(), 10);
    }

    #[test]
    fn quorum_is_strictly_more_than_two_thirds() {
        let set = ValidatorSet::new(keys(3).into_iter().zip([1, 1, 1])).expect("valid set");
        assert!(!set.is_quorum(2));
        assert!(set.is_quorum(3));
        assert!(!set.is_one_third(1));
        assert!(set.is_one_third(2));
    }

    #[test]
    fn the_hash_names_members_keys_and_stakes_not_their_order() {
        let keys = keys(3);
        let set = ValidatorSet::new(keys.iter().cloned().zip([1, 2, 3])).expect("valid set");
        let reordered =
            ValidatorSet::new(keys.iter().cloned().zip([1, 2, 3]).rev()).expect("valid set");
        assert_eq!(
            set.hash(),
            reordered.hash(),
            "node-id order, not input order"
        );
        let restaked = ValidatorSet::new(keys.iter().cloned().zip([1, 2, 4])).expect("valid set");
        assert_ne!(set.hash(), restaked.hash(), "stake is named");
        let smaller = ValidatorSet::new(keys.iter().cloned().zip([1, 2])).expect("valid set");
        assert_ne!(set.hash(), smaller.hash(), "membership is named");
        let other =
            ValidatorSet::new(self::keys(4).into_iter().skip(1).zip([1, 2, 3])).expect("valid set");
        assert_ne!(set.hash(), other.hash(), "keys are named");
    }

    #[test]
    fn rejects_bad_sets() {
        let keys = keys(2);
        assert_eq!(ValidatorSet::new([]), Err(ValidatorSetError::Empty));
        assert!(matches!(
            ValidatorSet::new([(keys[0].clone(), 0)]),
            Err(ValidatorSetError::ZeroStake { .. })
        ));
        assert!(matches!(
            ValidatorSet::new([(keys[0].clone(), 1), (keys[0].clone(), 2)]),
            Err(ValidatorSetError::Duplicate { .. })
        ));
        assert_eq!(
            ValidatorSet::new([(keys[0].clone(), TOTAL_STAKE_MAX), (keys[1].clone(), 1)]),
            Err(ValidatorSetError::StakeOverflow)
        );
    }
}
