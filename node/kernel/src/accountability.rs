//! Accountable safety: from two valid commit certificates for different
//! blocks at one height (a fork, possible only when more than a third of
//! the stake is Byzantine), name the validators who caused it.
//!
//! Tendermint's argument (Buchman, Kwon, Milosevic, *The latest gossip on
//! BFT consensus*, §5; accountability as in the Tendermint light-client
//! attack detector): the two certificates each hold more than two thirds of
//! the stake, so the validators that signed both hold more than a third.
//! When both certificates are from the same round, every one of them signed
//! two precommits for different blocks in one (height, round): that pair is
//! [`Evidence::DuplicateVote`], a proof anyone can verify. When the rounds
//! differ, signing both is not by itself a proof (a validator may precommit
//! a new value after a polka unlocked it); those validators are *suspects*
//! who must show the polka that unlocked them — the conviction then needs
//! their prevotes, which certificates do not carry.
//!
//! Pure and sans-I/O: the simulator's fork checker and any node holding two
//! conflicting certificates use it alike.

use std::collections::BTreeSet;

use hm_wire::Hash;

use crate::block::{BlockError, CommitCertificate, Evidence, SignedVote, Vote, VoteKind};
use crate::validators::{ValidatorIndex, ValidatorSet};

/// Who two conflicting certificates name, and with what proof.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conviction {
    /// Validators proven to have double-signed (same round): with the
    /// evidence for each, in validator order.
    pub convicted: Vec<(ValidatorIndex, Evidence)>,
    /// Validators who signed both certificates in different rounds: they
    /// must account for their change of value (amnesia suspects).
    pub suspects: Vec<ValidatorIndex>,
    /// Stake of `convicted` and `suspects` together: more than a third of
    /// the total whenever both certificates hold a quorum.
    pub stake: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccountabilityError {
    #[error("the certificates are for heights {first} and {second}: not a fork")]
    DifferentHeights { first: u64, second: u64 },
    #[error("both certificates commit block {block}: not a fork")]
    SameBlock { block: Hash },
    #[error("the {which} certificate does not verify: {source}")]
    Invalid {
        which: &'static str,
        source: BlockError,
    },
}

/// The precommit a certificate's signature at `index` is over.
fn precommit(certificate: &CommitCertificate, index: ValidatorIndex, at: usize) -> SignedVote {
    SignedVote {
        vote: Vote {
            kind: VoteKind::Precommit,
            height: certificate.height,
            round: certificate.round,
            block_hash: Some(certificate.block_hash),
            validator: index,
        },
        signature: certificate.signatures[at].1.clone(),
    }
}

/// Names the validators behind a fork (see the module doc). Both
/// certificates are verified first; what is returned is provable from them.
pub fn convict(
    first: &CommitCertificate,
    second: &CommitCertificate,
    chain_id: &Hash,
    validators: &ValidatorSet,
) -> Result<Conviction, AccountabilityError> {
    if first.height != second.height {
        return Err(AccountabilityError::DifferentHeights {
            first: first.height,
            second: second.height,
        });
    }
    if first.block_hash == second.block_hash {
        return Err(AccountabilityError::SameBlock {
            block: first.block_hash,
        });
    }
    first
        .verify(chain_id, validators)
        .map_err(|source| AccountabilityError::Invalid {
            which: "first",
            source,
        })?;
    second
        .verify(chain_id, validators)
        .map_err(|source| AccountabilityError::Invalid {
            which: "second",
            source,
        })?;
    let in_second: BTreeSet<ValidatorIndex> =
        second.signatures.iter().map(|(index, _)| *index).collect();
    let mut convicted = Vec::new();
    let mut suspects = Vec::new();
    let mut stake = 0u64;
    for (at, (index, _)) in first.signatures.iter().enumerate() {
        if !in_second.contains(index) {
            continue;
        }
        stake += validators.get(*index).map_or(0, |v| v.stake);
        if first.round == second.round {
            let other_at = second
                .signatures
                .iter()
                .position(|(other, _)| other == index)
                .expect("in both by construction");
            let evidence = Evidence::DuplicateVote {
                first: precommit(first, *index, at),
                second: precommit(second, *index, other_at),
            };
            debug_assert!(
                evidence.verify(chain_id, validators).is_ok(),
                "both precommits verified with their certificates"
            );
            convicted.push((*index, evidence));
        } else {
            suspects.push(*index);
        }
    }
    debug_assert!(
        validators.is_one_third(stake),
        "two quorums intersect in more than a third of the stake"
    );
    Ok(Conviction {
        convicted,
        suspects,
        stake,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consensus::testkit::Fixture;

    const X: Hash = Hash([0xAA; 32]);
    const Y: Hash = Hash([0xBB; 32]);

    fn certificate(
        f: &Fixture,
        round: u32,
        block: Hash,
        signers: &[ValidatorIndex],
    ) -> CommitCertificate {
        let votes: Vec<SignedVote> = signers
            .iter()
            .map(|index| f.vote(*index, VoteKind::Precommit, 5, round, Some(block)))
            .collect();
        CommitCertificate::from_precommits(5, round, block, &votes, &f.validators)
            .expect("a quorum")
    }

    #[test]
    fn a_same_round_fork_convicts_exactly_the_double_signers_with_evidence() {
        let f = Fixture::new(&[1, 1, 1, 1]);
        let first = certificate(&f, 2, X, &[0, 1, 2]);
        let second = certificate(&f, 2, Y, &[1, 2, 3]);
        let conviction = convict(&first, &second, &f.chain_id, &f.validators).expect("a fork");
        let named: Vec<ValidatorIndex> = conviction.convicted.iter().map(|(i, _)| *i).collect();
        assert_eq!(named, vec![1, 2]);
        assert!(conviction.suspects.is_empty());
        assert!(f.validators.is_one_third(conviction.stake));
        for (index, evidence) in &conviction.convicted {
            assert_eq!(evidence.validator(), *index);
            evidence
                .verify(&f.chain_id, &f.validators)
                .expect("verifiable by anyone");
        }
    }

    #[test]
    fn a_fork_across_rounds_names_suspects_not_convicts() {
        let f = Fixture::new(&[3, 1, 1, 1, 1]);
        // Quorum is more than 2/3 of 7: 5 stake, so the heavy validator and
        // two others; it signs both.
        let heavy = (0..5u16)
            .find(|index| f.validators.get(*index).is_some_and(|v| v.stake == 3))
            .expect("the heavy validator");
        let light: Vec<ValidatorIndex> = (0..5u16).filter(|index| *index != heavy).collect();
        let mut first_signers = vec![heavy, light[0], light[1]];
        let mut second_signers = vec![heavy, light[2], light[3]];
        first_signers.sort();
        second_signers.sort();
        let first = certificate(&f, 1, X, &first_signers);
        let second = certificate(&f, 4, Y, &second_signers);
        let conviction = convict(&first, &second, &f.chain_id, &f.validators).expect("a fork");
        assert!(conviction.convicted.is_empty());
        assert_eq!(conviction.suspects, vec![heavy]);
        assert_eq!(conviction.stake, 3);
        assert!(f.validators.is_one_third(conviction.stake));
    }

    #[test]
    fn no_fork_no_conviction() {
        let f = Fixture::new(&[1, 1, 1, 1]);
        let first = certificate(&f, 2, X, &[0, 1, 2]);
        let same = certificate(&f, 3, X, &[1, 2, 3]);
        assert!(matches!(
            convict(&first, &same, &f.chain_id, &f.validators),
            Err(AccountabilityError::SameBlock { .. })
        ));
        let mut forged = certificate(&f, 2, Y, &[1, 2, 3]);
        forged.signatures[0].1 = forged.signatures[1].1.clone();
        assert!(matches!(
            convict(&first, &forged, &f.chain_id, &f.validators),
            Err(AccountabilityError::Invalid {
                which: "second",
                ..
            })
        ));
    }
}
