//! Per-round bookkeeping: the round's proposal, stake tallies of prevotes
//! and precommits per block hash (and nil), who sent anything in the round
//! (for the f+1 round skip), and the "for the first time" flags of
//! Algorithm 1. Only verified messages from members get here, at most one
//! per validator per kind: a vote is never counted twice.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};

use hm_wire::Hash;

use crate::block::{SignedProposal, SignedVote, VoteKind};
use crate::validators::ValidatorIndex;

use super::CONFLICTING_VOTES_PER_ROUND_MAX;

#[derive(Debug, Clone)]
pub(super) struct ProposalEntry {
    pub signed: SignedProposal,
    pub valid: bool,
}

/// One kind of vote in one round.
///
/// Each validator's first vote counts towards the total and its value. A
/// later, conflicting vote is evidence; it also counts towards its own value
/// when the caller allows it (nil, or a block actually proposed at this
/// height). Tendermint's liveness needs that: an equivocator can show a
/// polka to one honest validator and nil to the rest, and the rest must be
/// able to count the polka when the locked validator relays it with its
/// proposal (CometBFT counts conflicting votes for a block a peer claims a
/// +2/3 majority for, for the same reason). Counting a Byzantine validator
/// for two values is harmless to safety: it could have sent either to
/// anyone.
#[derive(Debug, Clone, Default)]
pub(super) struct VoteTally {
    /// Counted votes by (validator, value).
    votes: BTreeMap<(ValidatorIndex, Option<Hash>), SignedVote>,
    /// The value of each validator's first vote.
    first: BTreeMap<ValidatorIndex, Option<Hash>>,
    stake_by_value: BTreeMap<Option<Hash>, u64>,
    /// Each validator once.
    stake_total: u64,
}

pub(super) enum Lookup<'a> {
    /// This validator's vote for this value is already counted.
    Counted,
    /// The validator voted for another value first.
    Conflict(&'a SignedVote),
    New,
}

impl VoteTally {
    pub fn lookup(&self, validator: ValidatorIndex, value: &Option<Hash>) -> Lookup<'_> {
        if self.votes.contains_key(&(validator, *value)) {
            return Lookup::Counted;
        }
        match self.first.get(&validator) {
            Some(first) => match self.votes.get(&(validator, *first)) {
                Some(vote) => Lookup::Conflict(vote),
                None => {
                    debug_assert!(false, "a first vote is always counted");
                    Lookup::Counted
                }
            },
            None => Lookup::New,
        }
    }

    /// Counts a verified vote: a validator's first, or (if `allow_conflict`
    /// and within CONFLICTING_VOTES_PER_ROUND_MAX) a conflicting one.
    /// Returns whether it was counted.
    pub fn insert(&mut self, signed: SignedVote, stake: u64, allow_conflict: bool) -> bool {
        let validator = signed.vote.validator;
        let value = signed.vote.block_hash;
        if self.votes.contains_key(&(validator, value)) {
            return false;
        }
        let conflicting = self.votes.len() - self.first.len();
        match self.first.entry(validator) {
            Entry::Occupied(_) => {
                if !allow_conflict || conflicting >= CONFLICTING_VOTES_PER_ROUND_MAX {
                    return false;
                }
            }
            Entry::Vacant(entry) => {
                entry.insert(value);
                self.stake_total += stake;
            }
        }
        *self.stake_by_value.entry(value).or_default() += stake;
        self.votes.insert((validator, value), signed);
        true
    }

    pub fn stake_for(&self, value: &Option<Hash>) -> u64 {
        self.stake_by_value.get(value).copied().unwrap_or(0)
    }

    pub fn stake_total(&self) -> u64 {
        self.stake_total
    }

    /// Every counted vote (first and conflicting).
    pub fn votes(&self) -> impl Iterator<Item = &SignedVote> {
        self.votes.values()
    }

    pub fn votes_for<'a>(
        &'a self,
        value: &'a Option<Hash>,
    ) -> impl Iterator<Item = &'a SignedVote> {
        self.votes
            .iter()
            .filter(move |((_, voted), _)| voted == value)
            .map(|(_, vote)| vote)
    }
}

#[derive(Debug, Clone, Default)]
pub(super) struct RoundState {
    pub proposal: Option<ProposalEntry>,
    pub prevotes: VoteTally,
    pub precommits: VoteTally,
    senders: BTreeSet<ValidatorIndex>,
    sender_stake: u64,
    /// Line 34 fired (timeoutPrevote scheduled).
    pub prevote_timeout_scheduled: bool,
    /// Line 36 fired (lock / valid value updated for this round).
    pub polka_seen: bool,
    /// Line 47 fired (timeoutPrecommit scheduled).
    pub precommit_timeout_scheduled: bool,
    /// The proposal was reported invalid.
    pub invalid_reported: bool,
}

impl RoundState {
    pub fn tally(&self, kind: VoteKind) -> &VoteTally {
        match kind {
            VoteKind::Prevote => &self.prevotes,
            VoteKind::Precommit => &self.precommits,
        }
    }

    pub fn tally_mut(&mut self, kind: VoteKind) -> &mut VoteTally {
        match kind {
            VoteKind::Prevote => &mut self.prevotes,
            VoteKind::Precommit => &mut self.precommits,
        }
    }

    /// Records that `validator` sent something in this round; its stake is
    /// counted once however many messages it sends.
    pub fn add_sender(&mut self, validator: ValidatorIndex, stake: u64) {
        if self.senders.insert(validator) {
            self.sender_stake += stake;
        }
    }

    pub fn sender_stake(&self) -> u64 {
        self.sender_stake
    }

    /// Every message held for this round, for rebroadcast.
    pub fn messages(&self) -> impl Iterator<Item = super::ConsensusMessage> + '_ {
        let proposal = self
            .proposal
            .iter()
            .map(|entry| super::ConsensusMessage::Proposal(entry.signed.clone()));
        let votes = self
            .prevotes
            .votes()
            .chain(self.precommits.votes())
            .map(|signed| super::ConsensusMessage::Vote(signed.clone()));
        proposal.chain(votes)
    }
}
