//! Byzantine validators as decorators over what an honest replica sends.
//!
//! The node runs the honest replica unchanged; with a [`ChainFault`] its
//! shell passes every outgoing chain message through
//! [`ByzantineValidator::rewrite`], which sends something else instead. The
//! validator signs with its real key and bypasses the double-sign guard on
//! purpose: this is the behaviour the honest nodes must survive and expose.

use std::collections::VecDeque;

use hm_env::Entropy;
use hm_kernel::block::{SignedVote, Vote};
use hm_kernel::replica::{ChainMessage, Destination};
use hm_wire::{Hash, SigningKey};
use serde::{Deserialize, Serialize};

/// Old messages a replaying validator keeps to send again.
pub const REPLAY_HISTORY_MAX: usize = 64;

/// What a Byzantine validator does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChainFault {
    /// Every vote goes to all validators; a conflicting vote (for another
    /// block, or nil) signed by the same key goes to half of them.
    Equivocate,
    /// Never sends a vote (proposes when its turn comes).
    WithholdVotes,
    /// Proposes blocks whose work proof is broken (and so the combined hash).
    InvalidProofs,
    /// Sends, besides each message, one of its old messages again.
    Replay,
}

impl ChainFault {
    pub const ALL: [ChainFault; 4] = [
        ChainFault::Equivocate,
        ChainFault::WithholdVotes,
        ChainFault::InvalidProofs,
        ChainFault::Replay,
    ];
}

/// One Byzantine validator's message rewriter.
pub struct ByzantineValidator<E: Entropy> {
    fault: ChainFault,
    key: SigningKey,
    chain_id: Hash,
    /// Node ids of the other validators.
    validators: Vec<Hash>,
    entropy: E,
    history: VecDeque<ChainMessage>,
    /// Messages rewritten (for reports).
    pub rewrites: u64,
}

impl<E: Entropy> ByzantineValidator<E> {
    pub fn new(
        fault: ChainFault,
        key: SigningKey,
        chain_id: Hash,
        validators: Vec<Hash>,
        entropy: E,
    ) -> Self {
        let me = key.verifying_key().fingerprint();
        ByzantineValidator {
            fault,
            key,
            chain_id,
            validators: validators.into_iter().filter(|id| *id != me).collect(),
            entropy,
            history: VecDeque::new(),
            rewrites: 0,
        }
    }

    pub fn fault(&self) -> ChainFault {
        self.fault
    }

    /// What to send instead of `message` to `to`.
    pub fn rewrite(
        &mut self,
        to: Destination,
        message: ChainMessage,
    ) -> Vec<(Destination, ChainMessage)> {
        match (self.fault, message) {
            (ChainFault::Equivocate, ChainMessage::Vote(signed)) => {
                self.rewrites += 1;
                let conflicting = self.conflicting(&signed.vote);
                let mut out = vec![(to, ChainMessage::Vote(signed))];
                let half = self.validators.len().div_ceil(2);
                for peer in self.validators.iter().take(half) {
                    out.push((
                        Destination::Peer(*peer),
                        ChainMessage::Vote(conflicting.clone()),
                    ));
                }
                out
            }
            (ChainFault::WithholdVotes, ChainMessage::Vote(_)) => {
                self.rewrites += 1;
                Vec::new()
            }
            (ChainFault::InvalidProofs, ChainMessage::Proposal { signed, mut block }) => {
                self.rewrites += 1;
                block.proof.work.nonce = block.proof.work.nonce.wrapping_add(1);
                vec![(to, ChainMessage::Proposal { signed, block })]
            }
            (ChainFault::Replay, message) => {
                let mut out = Vec::with_capacity(2);
                if matches!(
                    message,
                    ChainMessage::Vote(_) | ChainMessage::Proposal { .. }
                ) {
                    if !self.history.is_empty() {
                        self.rewrites += 1;
                        let pick = self.entropy.below(self.history.len() as u64) as usize;
                        out.push((Destination::Validators, self.history[pick].clone()));
                    }
                    if self.history.len() == REPLAY_HISTORY_MAX {
                        self.history.pop_front();
                    }
                    self.history.push_back(message.clone());
                }
                out.push((to, message));
                out
            }
            (_, message) => vec![(to, message)],
        }
    }

    /// A vote of the same kind, height and round for another value.
    fn conflicting(&self, vote: &Vote) -> SignedVote {
        let block_hash = match vote.block_hash {
            Some(_) => None,
            None => Some(hm_wire::hash(
                "hm/byzantine/phantom-block",
                &vote.height.to_le_bytes(),
            )),
        };
        SignedVote::sign(
            &self.chain_id,
            Vote {
                block_hash,
                ..vote.clone()
            },
            &self.key,
            &self.entropy,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hm_env::mem::SeededEntropy;
    use hm_kernel::block::{Evidence, VoteKind};
    use hm_kernel::validators::ValidatorSet;

    fn setup(fault: ChainFault) -> (ByzantineValidator<SeededEntropy>, ValidatorSet, Hash) {
        let entropy = SeededEntropy::new(1, b"byzantine-test");
        let keys: Vec<SigningKey> = (0..4).map(|_| SigningKey::generate(&entropy)).collect();
        let set = ValidatorSet::new(keys.iter().map(|k| (k.verifying_key(), 10))).expect("set");
        let chain_id = hm_wire::hash("test", b"chain");
        let ids = keys
            .iter()
            .map(|k| k.verifying_key().fingerprint())
            .collect();
        let key = SigningKey::from_bytes(&keys[0].to_bytes()).expect("key");
        (
            ByzantineValidator::new(fault, key, chain_id, ids, entropy),
            set,
            chain_id,
        )
    }

    fn vote(
        byzantine: &ByzantineValidator<SeededEntropy>,
        set: &ValidatorSet,
        chain_id: &Hash,
    ) -> SignedVote {
        let index = set
            .index_of(&byzantine.key.verifying_key().fingerprint())
            .expect("member");
        SignedVote::sign(
            chain_id,
            Vote {
                kind: VoteKind::Prevote,
                height: 3,
                round: 0,
                block_hash: Some(hm_wire::hash("test", b"block")),
                validator: index,
            },
            &byzantine.key,
            &byzantine.entropy,
        )
    }

    #[test]
    fn equivocation_produces_verifiable_evidence() {
        let (mut byzantine, set, chain_id) = setup(ChainFault::Equivocate);
        let honest = vote(&byzantine, &set, &chain_id);
        let out = byzantine.rewrite(Destination::Validators, ChainMessage::Vote(honest.clone()));
        assert_eq!(
            out.len(),
            1 + 2,
            "the vote to all, the conflicting one to half of 3 others"
        );
        let ChainMessage::Vote(conflicting) = &out[1].1 else {
            panic!("a vote");
        };
        let evidence = Evidence::DuplicateVote {
            first: honest,
            second: conflicting.clone(),
        };
        evidence
            .verify(&chain_id, &set)
            .expect("real, verifiable equivocation");
    }

    #[test]
    fn withholding_drops_votes_only() {
        let (mut byzantine, set, chain_id) = setup(ChainFault::WithholdVotes);
        let signed = vote(&byzantine, &set, &chain_id);
        assert!(
            byzantine
                .rewrite(Destination::Validators, ChainMessage::Vote(signed))
                .is_empty()
        );
        let status = ChainMessage::Status { height: 1 };
        assert_eq!(
            byzantine.rewrite(Destination::Peers, status.clone()),
            vec![(Destination::Peers, status)]
        );
    }

    #[test]
    fn replay_resends_old_messages() {
        let (mut byzantine, set, chain_id) = setup(ChainFault::Replay);
        let first = ChainMessage::Vote(vote(&byzantine, &set, &chain_id));
        assert_eq!(
            byzantine
                .rewrite(Destination::Validators, first.clone())
                .len(),
            1
        );
        let second = byzantine.rewrite(Destination::Validators, first.clone());
        assert_eq!(second.len(), 2);
        assert_eq!(second[0].1, first);
    }
}
