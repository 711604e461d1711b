//! WorkProof (what/how): a hashcash nonce over the block hash, and the
//! executed state root.
//!
//! `hash("hm/work/v1", block_hash, nonce_le)` must have at least
//! `header.difficulty` leading zero bits, and the header's difficulty must
//! be the chain's. The "what" half is the header's `state_root`: every
//! validator executes the block itself and compares.

use hm_wire::{Hash, hash_parts};

use super::WorkProof;
use crate::block::BlockHeader;
use crate::genesis::ProofParams;

pub const WORK_DOMAIN: &str = "hm/work/v1";

/// The nonce search gives up after `2^(difficulty + slack)` attempts. Each
/// attempt succeeds with probability `2^-difficulty`, so an honest search
/// fails with probability about `e^-(2^slack)` = e^-256: never, in practice,
/// while a bug (say, a difficulty no hash can meet) still ends.
pub const WORK_ATTEMPTS_SLACK_LOG2: u32 = 8;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkError {
    #[error(
        "header difficulty is {header} bits, but the chain requires {required}; the proposer uses other parameters"
    )]
    DifficultyMismatch { header: u8, required: u8 },
    #[error(
        "work hash for nonce {nonce} has {bits} leading zero bits, fewer than the {required} required"
    )]
    InsufficientWork { nonce: u64, bits: u32, required: u8 },
    #[error(
        "header state root {header} differs from {recomputed}, the root this node computed by executing the block"
    )]
    StateRootMismatch { header: Hash, recomputed: Hash },
    #[error("no nonce met difficulty {difficulty} within {attempts} attempts")]
    AttemptsExhausted { difficulty: u8, attempts: u64 },
}

pub fn work_hash(block_hash: &Hash, nonce: u64) -> Hash {
    hash_parts(WORK_DOMAIN, &[block_hash.as_bytes(), &nonce.to_le_bytes()])
}

pub fn leading_zero_bits(value: &Hash) -> u32 {
    let mut bits = 0;
    for byte in value.as_bytes() {
        bits += byte.leading_zeros();
        if *byte != 0 {
            break;
        }
    }
    bits
}

/// Searches nonces from 0 for one meeting `difficulty`.
pub fn prove_work(block_hash: &Hash, difficulty: u8) -> Result<WorkProof, WorkError> {
    let attempts = 1u64 << (u32::from(difficulty) + WORK_ATTEMPTS_SLACK_LOG2).min(63);
    (0..attempts)
        .find(|nonce| leading_zero_bits(&work_hash(block_hash, *nonce)) >= u32::from(difficulty))
        .map(|nonce| WorkProof { nonce })
        .ok_or(WorkError::AttemptsExhausted {
            difficulty,
            attempts,
        })
}

/// Checks the header's difficulty, the nonce, and — when the caller has
/// executed the block — the state root.
pub fn verify_work(
    proof: &WorkProof,
    header: &BlockHeader,
    block_hash: &Hash,
    params: &ProofParams,
    recomputed_state_root: Option<&Hash>,
) -> Result<(), WorkError> {
    if header.difficulty != params.work_difficulty_bits {
        return Err(WorkError::DifficultyMismatch {
            header: header.difficulty,
            required: params.work_difficulty_bits,
        });
    }
    let bits = leading_zero_bits(&work_hash(block_hash, proof.nonce));
    if bits < u32::from(header.difficulty) {
        return Err(WorkError::InsufficientWork {
            nonce: proof.nonce,
            bits,
            required: header.difficulty,
        });
    }
    if let Some(recomputed) = recomputed_state_root
        && header.state_root != *recomputed
    {
        return Err(WorkError::StateRootMismatch {
            header: header.state_root,
            recomputed: *recomputed,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hm_wire::hash;
    use proptest::prelude::*;

    #[test]
    fn counts_leading_zero_bits() {
        let mut value = Hash::ZERO;
        assert_eq!(leading_zero_bits(&value), 256);
        value.0[0] = 0x80;
        assert_eq!(leading_zero_bits(&value), 0);
        value.0[0] = 0;
        value.0[1] = 0x10;
        assert_eq!(leading_zero_bits(&value), 11);
        value.0[2] = 0xFF;
        assert_eq!(leading_zero_bits(&value), 11);
    }

    #[test]
    fn found_nonce_is_the_first_that_meets_the_difficulty() {
        let block = hash("test", b"block");
        let proof = prove_work(&block, 10).expect("found");
        assert!(leading_zero_bits(&work_hash(&block, proof.nonce)) >= 10);
        for nonce in 0..proof.nonce {
            assert!(leading_zero_bits(&work_hash(&block, nonce)) < 10);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn found_nonces_meet_the_difficulty(block in any::<[u8; 32]>(), difficulty in 0u8..8) {
            let block = Hash(block);
            let proof = prove_work(&block, difficulty).expect("found");
            prop_assert!(leading_zero_bits(&work_hash(&block, proof.nonce)) >= u32::from(difficulty));
        }
    }
}
