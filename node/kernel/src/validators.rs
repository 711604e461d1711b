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
