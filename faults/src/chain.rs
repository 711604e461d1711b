//! Byzantine validators as decorators over what an honest replica sends.
//!
//! The node runs the honest replica unchanged; with a [`ChainFault`] its
//! shell passes every outgoing chain message through
//! [`ByzantineValidator::rewrite`], which sends something else instead. The
//! validator signs with its real key and bypasses the double-sign guard on
//! purpose: this is the behaviour the honest nodes must survive and expose.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use std::sync::Arc;

use hm_env::Entropy;
use hm_env::mem::SeededEntropy;
use hm_kernel::block::{
    Height, Proposal, ProposedBlock, Round, SignedProposal, SignedVote, Vote, VoteKind,
};
use hm_kernel::replica::{ChainMessage, Destination};
use hm_kernel::validators::{ValidatorIndex, ValidatorSet};
use hm_node::conduct::{ChainConduct, ChainConductFactory, ChainContext};
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
    /// Colluding validators split the honest ones without ever signing two
    /// things for one round (so there is no evidence to find). In a round a
    /// colluder proposes, they agree on a *chosen* set of honest validators
    /// just large enough that it and the colluders hold a quorum: the
    /// proposal and the colluders' prevotes reach only the chosen set (and
    /// the colluders), so the chosen lock on the block while everyone else
    /// sees nothing; the colluders' precommits are *held back* (from
    /// everyone, so not even a colluder commits), so nobody commits and the
    /// round times out. In a later round of that height, a proposer that never saw the
    /// polka proposes a fresh block. Validators that honour their lock
    /// prevote nil, so it cannot pass; the colluders release their held
    /// precommits after two rounds and the first chosen member commits the
    /// locked block, the rest catch up by sync. Validators that ignore
    /// their lock (colluders included) prevote the fresh block — and the
    /// moment a colluder does, it releases the held precommits: the first
    /// chosen member commits the old block while the others commit the new
    /// one. A fork that only the lock prevents.
    Split,
    /// A coalition that double-signs, for scenarios beyond the fault bound
    /// (more than a third of the stake): whenever a member is to propose a
    /// fresh block, it proposes two valid blocks for the round, the lower
    /// hash to one half of the honest validators and the higher to the
    /// other; every member then prevotes and precommits each block to its
    /// half (and nothing else in that round). Each half sees the coalition
    /// and itself holding a quorum for its block and commits it: a fork,
    /// whose two certificates convict the coalition
    /// (`hm_kernel::accountability`). Within the fault bound it cannot
    /// fork honest validators: their halves are too small.
    DoubleSign,
}

impl ChainFault {
    /// The behaviours a scenario gets when it names none.
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
    /// `Split`: the committee with stakes, and the colluders (us included).
    split: Option<SplitPlan>,
    /// `DoubleSign`: the coalition and its attacks in progress.
    coalition: Option<CoalitionPlan>,
    /// Messages rewritten (for reports).
    pub rewrites: u64,
    /// Our index in the committee (validators are indexed in node-id
    /// order): only our own statements are ours to double.
    own_index: Option<ValidatorIndex>,
}

/// Precommits a `Split` colluder holds back: at most one attack at a time.
pub const SPLIT_HELD_MAX: usize = 16;
/// Rounds after the attack round at which held precommits are released
/// anyway, so a committee that honours its locks stays live.
pub const SPLIT_RELEASE_AFTER_ROUNDS: Round = 2;

/// What `Split` colluders share: the committee and who colludes; and what
/// this colluder holds back.
struct SplitPlan {
    chain_id: Hash,
    committee: ValidatorSet,
    colluders: BTreeSet<Hash>,
    /// The attack in progress: (height, round, value, first chosen member)
    /// and the precommits held for that member.
    held: Option<HeldPrecommits>,
}

struct HeldPrecommits {
    height: Height,
    round: Round,
    value: Hash,
    target: Hash,
    messages: Vec<ChainMessage>,
}

impl SplitPlan {
    /// Whether a colluder proposes in (height, round): the rounds the
    /// colluders attack.
    fn attacks(&self, height: Height, round: Round) -> bool {
        let index = hm_kernel::consensus::proposer(&self.chain_id, &self.committee, height, round);
        self.committee
            .get(index)
            .is_some_and(|validator| self.colluders.contains(&validator.id))
    }

    /// The honest validators chosen for (height, round), first member
    /// first: a rotation of the honest ones picked by the round's hash,
    /// taken until they and the colluders hold a quorum. Every colluder
    /// computes the same set.
    fn chosen(&self, height: Height, round: Round) -> Vec<Hash> {
        let honest: Vec<(Hash, u64)> = self
            .committee
            .iter()
            .filter(|(_, validator)| !self.colluders.contains(&validator.id))
            .map(|(_, validator)| (validator.id, validator.stake))
            .collect();
        if honest.is_empty() {
            return Vec::new();
        }
        let colluding_stake: u64 = self
            .committee
            .iter()
            .filter(|(_, validator)| self.colluders.contains(&validator.id))
            .map(|(_, validator)| validator.stake)
            .sum();
        let mut seed = [0u8; 12];
        seed[..8].copy_from_slice(&height.to_le_bytes());
        seed[8..].copy_from_slice(&round.to_le_bytes());
        let pick = hm_wire::hash("hm/byzantine/split", &seed);
        let offset = u64::from_le_bytes(pick.0[..8].try_into().unwrap_or([0; 8]));
        let start = (offset % honest.len() as u64) as usize;
        let mut stake = colluding_stake;
        let mut chosen = Vec::new();
        for k in 0..honest.len() {
            let (id, validator_stake) = honest[(start + k) % honest.len()];
            chosen.push(id);
            stake += validator_stake;
            if self.committee.is_quorum(stake) {
                break;
            }
        }
        chosen
    }
}

/// Rounds a `DoubleSign` coalition remembers attacks of.
pub const COALITION_ATTACKS_KEPT_MAX: usize = 16;

/// What a `DoubleSign` coalition shares: the committee and its members
/// (the halves of the honest validators follow from them), and the attacks
/// this member has seen.
struct CoalitionPlan {
    chain_id: Hash,
    committee: ValidatorSet,
    members: BTreeSet<Hash>,
    attacks: BTreeMap<(Height, Round), Attack>,
}

/// One attacked round: the two blocks, as their proposals (the lower hash
/// first, once both are known), and whether our double votes went out.
#[derive(Default)]
struct Attack {
    proposals: Vec<ChainMessage>,
    voted: bool,
}

impl Attack {
    fn values(&self) -> Vec<Hash> {
        self.proposals
            .iter()
            .filter_map(|message| match message {
                ChainMessage::Proposal { signed, .. } => Some(signed.proposal.block_hash),
                _ => None,
            })
            .collect()
    }

    /// Adds a proposal (at most two distinct blocks), keeping the lower
    /// block hash first.
    fn add(&mut self, message: ChainMessage) {
        let ChainMessage::Proposal { signed, .. } = &message else {
            return;
        };
        let values = self.values();
        if values.len() >= 2 || values.contains(&signed.proposal.block_hash) {
            return;
        }
        self.proposals.push(message);
        self.proposals.sort_by_key(|message| match message {
            ChainMessage::Proposal { signed, .. } => signed.proposal.block_hash,
            _ => Hash::default(),
        });
    }
}

impl CoalitionPlan {
    fn is_member(&self, index: hm_kernel::validators::ValidatorIndex) -> bool {
        self.committee
            .get(index)
            .is_some_and(|validator| self.members.contains(&validator.id))
    }

    /// The two halves of the honest validators (by id order: alternate
    /// members), the lower block's half first. Every member computes the
    /// same halves.
    fn halves(&self) -> [Vec<Hash>; 2] {
        let mut halves = [Vec::new(), Vec::new()];
        let honest = self
            .committee
            .iter()
            .map(|(_, validator)| validator.id)
            .filter(|id| !self.members.contains(id));
        for (position, id) in honest.enumerate() {
            halves[position % 2].push(id);
        }
        halves
    }

    fn attack(&mut self, height: Height, round: Round) -> &mut Attack {
        if !self.attacks.contains_key(&(height, round))
            && self.attacks.len() >= COALITION_ATTACKS_KEPT_MAX
        {
            self.attacks.pop_first();
        }
        self.attacks.entry((height, round)).or_default()
    }
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
        let mut sorted = validators.clone();
        sorted.sort();
        sorted.dedup();
        let own_index = sorted
            .iter()
            .position(|id| *id == me)
            .and_then(|position| ValidatorIndex::try_from(position).ok());
        ByzantineValidator {
            fault,
            key,
            chain_id,
            validators: validators.into_iter().filter(|id| *id != me).collect(),
            entropy,
            history: VecDeque::new(),
            split: None,
            coalition: None,
            rewrites: 0,
            own_index,
        }
    }

    /// A `Split` colluder: it needs the committee's stakes and the other
    /// colluders to choose the same honest validators as they do.
    pub fn splitting(
        key: SigningKey,
        chain_id: Hash,
        committee: ValidatorSet,
        colluders: BTreeSet<Hash>,
        entropy: E,
    ) -> Self {
        let validators = committee.iter().map(|(_, v)| v.id).collect();
        let mut colluders = colluders;
        colluders.insert(key.verifying_key().fingerprint());
        let mut byzantine = Self::new(ChainFault::Split, key, chain_id, validators, entropy);
        byzantine.split = Some(SplitPlan {
            chain_id,
            committee,
            colluders,
            held: None,
        });
        byzantine
    }

    pub fn fault(&self) -> ChainFault {
        self.fault
    }

    /// A `DoubleSign` coalition member: it needs the committee and the
    /// other members to split the honest validators as they do.
    pub fn double_signing(
        key: SigningKey,
        chain_id: Hash,
        committee: ValidatorSet,
        members: BTreeSet<Hash>,
        entropy: E,
    ) -> Self {
        let validators = committee.iter().map(|(_, v)| v.id).collect();
        let mut members = members;
        members.insert(key.verifying_key().fingerprint());
        let mut byzantine = Self::new(ChainFault::DoubleSign, key, chain_id, validators, entropy);
        byzantine.coalition = Some(CoalitionPlan {
            chain_id,
            committee,
            members,
            attacks: BTreeMap::new(),
        });
        byzantine
    }

    /// Whether `message`, on its way out, is a proposal of ours that the
    /// fault doubles: the shell then builds a twin block (the replica can
    /// prove one, the rewriter cannot) and passes it to
    /// [`ByzantineValidator::rewrite_with_twin`].
    pub fn wants_twin<'m>(&self, message: &'m ChainMessage) -> Option<&'m ProposedBlock> {
        match message {
            ChainMessage::Proposal { signed, block }
                if self.fault == ChainFault::DoubleSign
                    && Some(signed.proposal.proposer) == self.own_index
                    && signed.proposal.pol_round.is_none() =>
            {
                Some(block)
            }
            _ => None,
        }
    }

    /// [`ByzantineValidator::rewrite`] for an own fresh proposal with its
    /// twin block (`None` when the shell could not build one: the proposal
    /// goes out as it is).
    pub fn rewrite_with_twin(
        &mut self,
        to: Destination,
        message: ChainMessage,
        twin: Option<ProposedBlock>,
    ) -> Vec<(Destination, ChainMessage)> {
        let (Some(twin), ChainMessage::Proposal { signed, .. }) = (twin, &message) else {
            return self.rewrite(to, message);
        };
        let proposal = Proposal {
            block_hash: twin.hash(),
            ..signed.proposal.clone()
        };
        let (height, round) = (proposal.height, proposal.round);
        let twin_message = ChainMessage::Proposal {
            signed: SignedProposal::sign(&self.chain_id, proposal, &self.key, &self.entropy),
            block: Box::new(twin),
        };
        let Some(plan) = self.coalition.as_mut() else {
            return vec![(to, message)];
        };
        let attack = plan.attack(height, round);
        attack.add(message);
        attack.add(twin_message);
        self.rewrites += 1;
        self.double_propose(height, round)
    }

    /// What a coalition member does with a message it received (before its
    /// core sees it): a fresh proposal from a member is half of an attack;
    /// once both blocks are known, the double votes go out.
    pub fn observe(&mut self, message: &ChainMessage) -> Vec<(Destination, ChainMessage)> {
        let Some(plan) = self.coalition.as_mut() else {
            return Vec::new();
        };
        let ChainMessage::Proposal { signed, .. } = message else {
            return Vec::new();
        };
        let proposal = &signed.proposal;
        if proposal.pol_round.is_some() || !plan.is_member(proposal.proposer) {
            return Vec::new();
        }
        plan.attack(proposal.height, proposal.round)
            .add(message.clone());
        self.double_vote(proposal.height, proposal.round)
    }

    /// What to send instead of `message` to `to`.
    pub fn rewrite(
        &mut self,
        to: Destination,
        message: ChainMessage,
    ) -> Vec<(Destination, ChainMessage)> {
        match (self.fault, message) {
            // Relays of other validators' votes go out unchanged: a twin
            // signed with our key in their name would only be refused as a
            // bad signature, and blamed on them.
            (ChainFault::Equivocate, ChainMessage::Vote(signed))
                if Some(signed.vote.validator) == self.own_index =>
            {
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
            (ChainFault::Split, message) => self.split(to, message),
            (ChainFault::DoubleSign, message) => self.double_sign(to, message),
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

    fn split(
        &mut self,
        to: Destination,
        message: ChainMessage,
    ) -> Vec<(Destination, ChainMessage)> {
        let me = self.key.verifying_key().fingerprint();
        let Some(plan) = self.split.as_mut() else {
            return vec![(to, message)];
        };
        if to != Destination::Validators {
            return vec![(to, message)];
        }
        let (height, round) = match &message {
            ChainMessage::Proposal { signed, .. } => {
                (signed.proposal.height, signed.proposal.round)
            }
            ChainMessage::Vote(signed) => (signed.vote.height, signed.vote.round),
            _ => return vec![(to, message)],
        };
        let mut out = Vec::new();
        // Release held precommits when our own core moves on to another
        // value at that height (only a lock-ignoring core does), after
        // enough rounds, or at a later height.
        if let Some(held) = &plan.held {
            let other_value = matches!(&message, ChainMessage::Vote(signed)
                if signed.vote.height == held.height
                    && signed.vote.round > held.round
                    && signed.vote.block_hash.is_some_and(|value| value != held.value));
            let late = height > held.height
                || (height == held.height
                    && round >= held.round.saturating_add(SPLIT_RELEASE_AFTER_ROUNDS));
            if (other_value || late)
                && let Some(held) = plan.held.take()
            {
                out.extend(
                    held.messages
                        .into_iter()
                        .map(|held_message| (Destination::Peer(held.target), held_message)),
                );
            }
        }
        let colluders: Vec<Hash> = plan
            .colluders
            .iter()
            .filter(|id| **id != me)
            .copied()
            .collect();
        if !plan.attacks(height, round) {
            out.push((to, message));
            return out;
        }
        self.rewrites += 1;
        let chosen = plan.chosen(height, round);
        match &message {
            ChainMessage::Vote(signed)
                if signed.vote.kind == VoteKind::Precommit && signed.vote.block_hash.is_some() =>
            {
                // Only the first chosen member sees it, and only later.
                if let (Some(target), Some(value)) = (chosen.first(), signed.vote.block_hash) {
                    let same_attack = plan.held.as_ref().is_some_and(|held| {
                        held.height == height && held.round == round && held.value == value
                    });
                    if !same_attack && let Some(previous) = plan.held.take() {
                        out.extend(previous.messages.into_iter().map(|held_message| {
                            (Destination::Peer(previous.target), held_message)
                        }));
                    }
                    let held = plan.held.get_or_insert_with(|| HeldPrecommits {
                        height,
                        round,
                        value,
                        target: *target,
                        messages: Vec::new(),
                    });
                    if held.messages.len() < SPLIT_HELD_MAX {
                        held.messages.push(message.clone());
                    }
                }
                // Held from everyone, colluders included: a colluder that
                // committed would lead the others to the block by sync.
            }
            _ => {
                // The proposal and prevotes: the chosen and the colluders.
                out.extend(
                    chosen
                        .into_iter()
                        .chain(colluders)
                        .map(|peer| (Destination::Peer(peer), message.clone())),
                );
            }
        }
        out
    }

    /// `DoubleSign` on the way out: our own votes in an attacked round are
    /// replaced by the double votes (held until both blocks are known);
    /// everything else goes out as it is.
    fn double_sign(
        &mut self,
        to: Destination,
        message: ChainMessage,
    ) -> Vec<(Destination, ChainMessage)> {
        let (height, round) = match &message {
            ChainMessage::Vote(signed) if Some(signed.vote.validator) == self.own_index => {
                (signed.vote.height, signed.vote.round)
            }
            ChainMessage::Proposal { signed, .. }
                if Some(signed.proposal.proposer) == self.own_index =>
            {
                // A rebroadcast of our attacked proposal: both, again.
                let (height, round) = (signed.proposal.height, signed.proposal.round);
                let attacked = self
                    .coalition
                    .as_ref()
                    .and_then(|plan| plan.attacks.get(&(height, round)))
                    .is_some_and(|attack| attack.proposals.len() == 2);
                if attacked {
                    return self.double_propose(height, round);
                }
                return vec![(to, message)];
            }
            _ => return vec![(to, message)],
        };
        let attacked = self
            .coalition
            .as_ref()
            .is_some_and(|plan| plan.attacks.contains_key(&(height, round)));
        if !attacked {
            return vec![(to, message)];
        }
        // Our core's own vote never leaves in an attacked round.
        self.rewrites += 1;
        self.double_vote(height, round)
    }

    /// Both proposals of an attack, each to its half and both to the other
    /// members; then our double votes.
    fn double_propose(&mut self, height: Height, round: Round) -> Vec<(Destination, ChainMessage)> {
        let me = self.key.verifying_key().fingerprint();
        let Some(plan) = self.coalition.as_ref() else {
            return Vec::new();
        };
        let Some(attack) = plan.attacks.get(&(height, round)) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let halves = plan.halves();
        for (half, proposal) in halves.iter().zip(&attack.proposals) {
            out.extend(
                half.iter()
                    .chain(plan.members.iter().filter(|id| **id != me))
                    .map(|peer| (Destination::Peer(*peer), proposal.clone())),
            );
        }
        out.extend(self.double_vote(height, round));
        out
    }

    /// Once both blocks of the attack on (height, round) are known and we
    /// have not voted yet: a prevote and a precommit for each block, to its
    /// half of the honest validators.
    fn double_vote(&mut self, height: Height, round: Round) -> Vec<(Destination, ChainMessage)> {
        let Some(plan) = self.coalition.as_mut() else {
            return Vec::new();
        };
        let (Some(validator), Some(attack)) =
            (self.own_index, plan.attacks.get_mut(&(height, round)))
        else {
            return Vec::new();
        };
        let values = attack.values();
        if values.len() < 2 || attack.voted {
            return Vec::new();
        }
        attack.voted = true;
        let halves = plan.halves();
        let mut out = Vec::new();
        for (half, value) in halves.iter().zip(values) {
            for kind in [VoteKind::Prevote, VoteKind::Precommit] {
                let vote = SignedVote::sign(
                    &plan.chain_id,
                    Vote {
                        kind,
                        height,
                        round,
                        block_hash: Some(value),
                        validator,
                    },
                    &self.key,
                    &self.entropy,
                );
                out.extend(
                    half.iter()
                        .map(|peer| (Destination::Peer(*peer), ChainMessage::Vote(vote.clone()))),
                );
            }
        }
        out
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

impl<E: Entropy + Send> ChainConduct for ByzantineValidator<E> {
    fn outgoing(
        &mut self,
        to: Destination,
        message: ChainMessage,
        twin: &mut dyn FnMut(&ProposedBlock) -> Option<ProposedBlock>,
    ) -> Vec<(Destination, ChainMessage)> {
        let twin = self.wants_twin(&message).and_then(twin);
        self.rewrite_with_twin(to, message, twin)
    }

    fn incoming(&mut self, message: &ChainMessage) -> Vec<(Destination, ChainMessage)> {
        self.observe(message)
    }
}

/// The conduct factory of a validator with `fault`, for
/// `hm_node::conduct::Conduct::chain`. `colluders`: the other validators
/// with the same coordinated fault (`Split`, `DoubleSign`).
pub fn chain_conduct(fault: ChainFault, colluders: BTreeSet<Hash>) -> ChainConductFactory {
    Arc::new(move |context: ChainContext| {
        tracing::warn!(?fault, "byzantine: this validator misbehaves");
        let ChainContext {
            key,
            chain_id,
            committee,
            entropy,
        } = context;
        let validator: Box<ByzantineValidator<SeededEntropy>> = Box::new(match fault {
            ChainFault::Split => {
                ByzantineValidator::splitting(key, chain_id, committee, colluders.clone(), entropy)
            }
            ChainFault::DoubleSign => ByzantineValidator::double_signing(
                key,
                chain_id,
                committee,
                colluders.clone(),
                entropy,
            ),
            _ => {
                let validators = committee.iter().map(|(_, v)| v.id).collect();
                ByzantineValidator::new(fault, key, chain_id, validators, entropy)
            }
        });
        validator
    })
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
        let key = keys[0].duplicate();
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
        // Another validator's vote it relays goes out as it came: no twin
        // in someone else's name.
        let other_index = (0..4u16)
            .find(|index| *index != honest_index(&byzantine, &set))
            .expect("four validators");
        let relayed = SignedVote {
            vote: Vote {
                validator: other_index,
                ..honest_vote_of(&out)
            },
            signature: conflicting.signature.clone(),
        };
        let out = byzantine.rewrite(Destination::Validators, ChainMessage::Vote(relayed.clone()));
        assert_eq!(
            out,
            vec![(Destination::Validators, ChainMessage::Vote(relayed))]
        );
    }

    fn honest_index(byzantine: &ByzantineValidator<SeededEntropy>, set: &ValidatorSet) -> u16 {
        set.index_of(&byzantine.key.verifying_key().fingerprint())
            .expect("member")
    }

    fn honest_vote_of(out: &[(Destination, ChainMessage)]) -> Vote {
        match &out[0].1 {
            ChainMessage::Vote(signed) => signed.vote.clone(),
            other => panic!("a vote, not {other:?}"),
        }
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

    #[test]
    fn split_colluders_lock_the_chosen_hold_their_precommits_and_release_them_on_a_lock_break() {
        let entropy = SeededEntropy::new(2, b"split-test");
        let keys: Vec<SigningKey> = (0..7).map(|_| SigningKey::generate(&entropy)).collect();
        let set = ValidatorSet::new(keys.iter().map(|k| (k.verifying_key(), 10))).expect("set");
        let chain_id = hm_wire::hash("test", b"chain");
        let ids: Vec<Hash> = keys
            .iter()
            .map(|k| k.verifying_key().fingerprint())
            .collect();
        let colluders: BTreeSet<Hash> = ids[5..].iter().copied().collect();
        let mut splitters: Vec<ByzantineValidator<SeededEntropy>> = keys[5..]
            .iter()
            .map(|key| {
                ByzantineValidator::splitting(
                    key.duplicate(),
                    chain_id,
                    set.clone(),
                    colluders.clone(),
                    SeededEntropy::new(3, b"split"),
                )
            })
            .collect();
        let attacked = |height: Height, round: Round| {
            let index = hm_kernel::consensus::proposer(&chain_id, &set, height, round);
            colluders.contains(&set.get(index).expect("member").id)
        };
        // A height whose round 0 a colluder proposes and whose round 1 an
        // honest validator proposes.
        let height = (1..200)
            .find(|height| attacked(*height, 0) && !attacked(*height, 1))
            .expect("such a height among 200");
        let block = hm_wire::hash("test", b"block");
        let fresh = hm_wire::hash("test", b"fresh block");
        let vote_of = |splitter: &ByzantineValidator<SeededEntropy>, kind, round, value| {
            let index = set
                .index_of(&splitter.key.verifying_key().fingerprint())
                .expect("member");
            ChainMessage::Vote(SignedVote::sign(
                &chain_id,
                Vote {
                    kind,
                    height,
                    round,
                    block_hash: Some(value),
                    validator: index,
                },
                &splitter.key,
                &splitter.entropy,
            ))
        };
        let peers = |out: &[(Destination, ChainMessage)]| -> Vec<Hash> {
            out.iter()
                .map(|(to, _)| match to {
                    Destination::Peer(peer) => *peer,
                    other => panic!("sent to {other:?}"),
                })
                .collect()
        };
        let mut chosen_sets = Vec::new();
        for splitter in &mut splitters {
            let prevote = vote_of(splitter, VoteKind::Prevote, 0, block);
            let to = peers(&splitter.rewrite(Destination::Validators, prevote));
            // 2 colluders (20 of 70) need 3 honest (30) for a quorum (50 >
            // 46.7); the other colluder hears it too.
            assert_eq!(to.len(), 3 + 1, "{to:?}");
            let chosen: Vec<Hash> = to[..3].to_vec();
            assert!(chosen.iter().all(|peer| !colluders.contains(peer)));
            assert!(colluders.contains(&to[3]));
            // The precommit reaches nobody for now: it is held.
            let precommit = vote_of(splitter, VoteKind::Precommit, 0, block);
            assert!(
                splitter
                    .rewrite(Destination::Validators, precommit.clone())
                    .is_empty()
            );
            // Round 1 is not attacked: messages go to every validator.
            let honest_round = vote_of(splitter, VoteKind::Precommit, 1, block);
            assert_eq!(
                splitter.rewrite(Destination::Validators, honest_round.clone()),
                vec![(Destination::Validators, honest_round)]
            );
            // A lock-ignoring core prevotes a fresh block in round 1: the
            // held precommit goes to the first chosen member first.
            let lock_break = vote_of(splitter, VoteKind::Prevote, 1, fresh);
            let out = splitter.rewrite(Destination::Validators, lock_break.clone());
            assert_eq!(out.len(), 2, "{out:?}");
            assert_eq!(out[0], (Destination::Peer(chosen[0]), precommit));
            assert_eq!(out[1], (Destination::Validators, lock_break));
            chosen_sets.push(chosen);
        }
        assert_eq!(
            chosen_sets[0], chosen_sets[1],
            "colluders choose the same honest validators"
        );
        // With the lock honoured, held precommits go out after two rounds.
        let splitter = &mut splitters[0];
        let precommit = vote_of(splitter, VoteKind::Precommit, 0, block);
        splitter.rewrite(Destination::Validators, precommit.clone());
        let nil_later = ChainMessage::Status { height: 1 };
        assert_eq!(
            splitter.rewrite(Destination::Validators, nil_later.clone()),
            vec![(Destination::Validators, nil_later)],
            "messages without a round leave held precommits alone"
        );
        let round_two = vote_of(splitter, VoteKind::Prevote, 2, block);
        let out = splitter.rewrite(Destination::Validators, round_two);
        assert_eq!(out[0], (Destination::Peer(chosen_sets[0][0]), precommit));
    }
}
