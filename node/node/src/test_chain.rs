//! Test helpers shared by the light-client tests: commit certificates
//! signed with real FALCON-1024 precommits.

use hm_env::mem::SeededEntropy;
use hm_kernel::block::{BlockHeader, CommitCertificate, SignedVote, Vote, VoteKind};
use hm_kernel::validators::ValidatorSet;
use hm_wire::{Hash, SigningKey};

/// A certificate for `header` with the precommits of `signers` (members of
/// `set`), whether or not they make a quorum.
pub(crate) fn certify(
    chain_id: &Hash,
    set: &ValidatorSet,
    signers: &[&SigningKey],
    header: &BlockHeader,
) -> CommitCertificate {
    let entropy = SeededEntropy::new(header.height, b"test-precommits");
    let mut signatures: Vec<_> = signers
        .iter()
        .map(|key| {
            let validator = set
                .index_of(&key.verifying_key().fingerprint())
                .expect("a member");
            let vote = Vote {
                kind: VoteKind::Precommit,
                height: header.height,
                round: header.round,
                block_hash: Some(header.hash()),
                validator,
            };
            (
                validator,
                SignedVote::sign(chain_id, vote, key, &entropy).signature,
            )
        })
        .collect();
    signatures.sort_by_key(|(index, _)| *index);
    CommitCertificate {
        height: header.height,
        round: header.round,
        block_hash: header.hash(),
        signatures,
    }
}
