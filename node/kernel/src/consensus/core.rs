//! The Tendermint state machine. Line numbers in comments refer to
//! Algorithm 1 of arXiv:1807.04938 (v3).
//!
//! Shape: every input first goes through intake (height and round window,
//! membership, duplicate and conflict checks, signature check, then the
//! tallies); afterwards the upon-rules are evaluated until none fires. Each
//! rule's guard includes its "for the first time" flag or a step change, so
//! the loop terminates.
//!
//! The core moves itself to the next height when it decides (lines 51–54):
//! messages for height + 1 are buffered (bounded) meanwhile and replayed
//! then. The previous height's tallies are kept so that a late conflicting
//! vote for it still becomes evidence.

use std::collections::{BTreeMap, BTreeSet};

use hm_wire::Hash;

use crate::block::{
    CommitCertificate, Evidence, Height, Proposal, Round, SignedProposal, SignedVote, Vote,
    VoteKind,
};
use crate::validators::{ValidatorIndex, ValidatorSet};

use super::round::{Lookup, ProposalEntry, RoundState};
use super::{
    ConsensusMessage, ConsensusParams, ConsensusSigner, FUTURE_MESSAGES_PER_VALIDATOR_MAX, Input,
    Output, ROUNDS_AHEAD_MAX, ROUNDS_KEPT_MAX, RULE_FIRINGS_PER_INPUT_MAX, Reject, SignerError,
    Step, Timeout, TimeoutKind, proposer,
};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoreError {
    #[error(
        "the signer's key (node id {id}) is not in the validator set; only validators run \
         consensus, other nodes follow by block sync"
    )]
    NotAValidator { id: Hash },
}

/// One validator's Tendermint instance (see the module doc of
/// [`crate::consensus`]).
pub struct Core<S: ConsensusSigner> {
    chain_id: Hash,
    validators: ValidatorSet,
    params: ConsensusParams,
    signer: S,
    me: ValidatorIndex,
    started: bool,
    /// Lines 2–9: h_p, round_p, step_p, lockedValue/Round, validValue/Round.
    height: Height,
    round: Round,
    step: Step,
    locked: Option<(Round, Hash)>,
    valid: Option<(Round, Hash)>,
    /// The message log of this height, by round (bounded: ROUNDS_KEPT_MAX).
    rounds: BTreeMap<Round, RoundState>,
    /// Rounds below this were forgotten; their messages are ignored.
    round_floor: Round,
    /// The decided height's message log, only for late evidence.
    previous: Option<(Height, BTreeMap<Round, RoundState>)>,
    /// Verified messages for height + 1 (bounded per validator).
    future: Vec<(ConsensusMessage, bool)>,
    /// Validators already sent to block sync this rebroadcast period.
    told_behind: BTreeSet<ValidatorIndex>,
    /// Offences already reported: (height, validator, round, step), for the
    /// current and the previous height of kept rounds.
    evidence_reported: BTreeSet<(Height, ValidatorIndex, Round, Step)>,
    /// What this validator signed in `round` before a restart (from the
    /// signer), taken by `start`: the round resumes after those steps and
    /// the statements go out again.
    resumed: Vec<ConsensusMessage>,
    /// A statement of the current round the signer could not persist (a
    /// disk error: nothing was signed). It is signed again at every
    /// rebroadcast until the disk takes it: a validator that stays silent
    /// in a step leaves its peers short of the quorum that schedules the
    /// step's timeout, and the whole committee waits.
    owed: Option<Owed>,
}

/// A statement the signer failed to persist, to sign again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owed {
    Vote {
        round: Round,
        kind: VoteKind,
        block_hash: Option<Hash>,
    },
    Proposal {
        round: Round,
        block_hash: Hash,
        pol_round: Option<Round>,
    },
}

impl<S: ConsensusSigner> Core<S> {
    /// A core for `height`, not yet started. A validator restarting within a
    /// height resumes in the round it last signed in, past the steps it
    /// signed, with the lock it persisted, and sends what it signed there
    /// again (its peers may never have got it, and may need it for the
    /// round's quorum). When the signer cannot give back everything signed
    /// in that round (a state written before it kept statements), the core
    /// starts the next round instead: it cannot take part in the old one,
    /// and waiting there would stall the peers that wait for it.
    pub fn new(
        chain_id: Hash,
        validators: ValidatorSet,
        params: ConsensusParams,
        signer: S,
        height: Height,
    ) -> Result<Self, CoreError> {
        let id = signer.verifying_key().fingerprint();
        let me = validators
            .index_of(&id)
            .ok_or(CoreError::NotAValidator { id })?;
        let locked = signer
            .lock(height)
            .map(|lock| (lock.round, lock.block_hash));
        let (round, resumed) = match signer.signed_in_round(height) {
            Some((round, statements)) => (round, statements),
            None => match signer.last_signed() {
                Some((last_height, last_round, _)) if last_height == height => {
                    (last_round.saturating_add(1), Vec::new())
                }
                _ => (0, Vec::new()),
            },
        };
        Ok(Core {
            chain_id,
            validators,
            params,
            signer,
            me,
            started: false,
            height,
            round,
            step: Step::Propose,
            locked,
            // validRound >= lockedRound always holds in Algorithm 1.
            valid: locked,
            rounds: BTreeMap::new(),
            round_floor: 0,
            previous: None,
            future: Vec::new(),
            told_behind: BTreeSet::new(),
            evidence_reported: BTreeSet::new(),
            resumed,
            owed: None,
        })
    }

    /// Line 10: `upon start do StartRound(0)`, or the resumed round (see
    /// [`Core::new`]).
    pub fn start(&mut self) -> Vec<Output> {
        let mut out = Vec::new();
        if self.started {
            return out;
        }
        self.started = true;
        let resumed = std::mem::take(&mut self.resumed);
        if resumed.is_empty() {
            self.start_round(self.round, &mut out);
        } else {
            self.resume_round(resumed, &mut out);
        }
        self.run_rules(&mut out);
        out
    }

    /// Re-enters `self.round` after a restart, at the step after the last
    /// statement signed in it: those statements are counted and sent again,
    /// nothing is proposed or voted anew for steps already signed.
    fn resume_round(&mut self, statements: Vec<ConsensusMessage>, out: &mut Vec<Output>) {
        let step = statements
            .iter()
            .map(|message| match message {
                ConsensusMessage::Proposal(_) => Step::Propose,
                ConsensusMessage::Vote(signed) => step_of(signed.vote.kind),
            })
            .max()
            .unwrap_or(Step::Propose);
        self.step = step;
        if step == Step::Propose {
            self.schedule(TimeoutKind::Propose, out);
        }
        self.schedule(TimeoutKind::Rebroadcast, out);
        let stake = self.stake_of(self.me).unwrap_or(0);
        for message in statements {
            debug_assert!(
                sender_and_height(&message) == (self.me, self.height),
                "the signer hands back only this validator's statements at this height"
            );
            match &message {
                ConsensusMessage::Proposal(signed) => {
                    self.record_proposal(signed.clone(), true, stake, out)
                }
                ConsensusMessage::Vote(signed) => self.record_vote(signed.clone(), stake, false),
            }
            out.push(Output::Broadcast(message));
        }
    }

    pub fn handle(&mut self, input: Input) -> Vec<Output> {
        let mut out = Vec::new();
        match input {
            Input::Proposal { signed, valid } => self.on_proposal(signed, valid, &mut out),
            Input::Vote(signed) => self.on_vote(signed, &mut out),
            Input::Timeout(timeout) => self.on_timeout(timeout, &mut out),
            Input::ProposalBuilt {
                height,
                round,
                block_hash,
            } => self.on_proposal_built(height, round, block_hash, &mut out),
            Input::Commit(certificate) => self.on_commit(certificate, &mut out),
        }
        if self.started {
            self.run_rules(&mut out);
        }
        out
    }

    pub fn height(&self) -> Height {
        self.height
    }

    pub fn round(&self) -> Round {
        self.round
    }

    pub fn step(&self) -> Step {
        self.step
    }

    /// This validator's index in the set.
    pub fn validator_index(&self) -> ValidatorIndex {
        self.me
    }

    /// (lockedRound, lockedValue), if locked.
    pub fn locked(&self) -> Option<(Round, Hash)> {
        self.locked
    }

    pub fn validators(&self) -> &ValidatorSet {
        &self.validators
    }

    pub fn signer(&self) -> &S {
        &self.signer
    }

    // ------------------------------------------------------------ intake

    fn on_vote(&mut self, signed: SignedVote, out: &mut Vec<Output>) {
        let vote = &signed.vote;
        let Some(stake) = self.stake_of(vote.validator) else {
            reject(out, Some(vote.validator), Reject::NotMember);
            return;
        };
        if vote.height < self.height {
            self.on_past(ConsensusMessage::Vote(signed), out);
            return;
        }
        if vote.height > self.height {
            self.buffer_future(ConsensusMessage::Vote(signed), true, out);
            return;
        }
        if !self.round_accepted(vote.round) {
            return;
        }
        // None: already counted; Some(first): conflicts with `first`.
        let conflict = match self.rounds.get(&vote.round).map(|state| {
            state
                .tally(vote.kind)
                .lookup(vote.validator, &vote.block_hash)
        }) {
            // The same vote again (a relay or a rebroadcast).
            Some(Lookup::Counted) => return,
            Some(Lookup::Conflict(first)) => Some(first.clone()),
            Some(Lookup::New) | None => None,
        };
        if !self.verify_vote(&signed, out) {
            return;
        }
        match conflict {
            None => self.record_vote(signed, stake, false),
            Some(first) => {
                let step = step_of(signed.vote.kind);
                let allow = signed
                    .vote
                    .block_hash
                    .is_none_or(|block| self.is_proposed(&block));
                self.report(
                    Evidence::DuplicateVote {
                        first,
                        second: signed.clone(),
                    },
                    step,
                    out,
                );
                self.record_vote(signed, stake, allow);
            }
        }
    }

    fn on_proposal(&mut self, signed: SignedProposal, valid: bool, out: &mut Vec<Output>) {
        let proposal = &signed.proposal;
        let Some(stake) = self.stake_of(proposal.proposer) else {
            reject(out, Some(proposal.proposer), Reject::NotMember);
            return;
        };
        if proposal.height < self.height {
            self.on_past(ConsensusMessage::Proposal(signed), out);
            return;
        }
        if proposal.height > self.height {
            self.buffer_future(ConsensusMessage::Proposal(signed), valid, out);
            return;
        }
        if !self.round_accepted(proposal.round) {
            return;
        }
        // Lines 22, 28, 36, 49: only the round's proposer counts.
        if proposal.proposer
            != proposer(
                &self.chain_id,
                &self.validators,
                self.height,
                proposal.round,
            )
        {
            reject(out, Some(proposal.proposer), Reject::WrongProposer);
            return;
        }
        if proposal.pol_round.is_some_and(|pol| pol >= proposal.round) {
            reject(out, Some(proposal.proposer), Reject::BadPolRound);
            return;
        }
        let existing = self
            .rounds
            .get(&proposal.round)
            .and_then(|state| state.proposal.as_ref());
        if let Some(existing) = existing {
            if existing.signed.proposal.block_hash == proposal.block_hash {
                return;
            }
            let first = existing.signed.clone();
            if self.verify_proposal(&signed, out) {
                self.report(
                    Evidence::DuplicateProposal {
                        first,
                        second: signed,
                    },
                    Step::Propose,
                    out,
                );
            }
            return;
        }
        if self.verify_proposal(&signed, out) {
            self.record_proposal(signed, valid, stake, out);
        }
    }

    /// A message for a height we have left: late evidence against the
    /// decided height, and block sync for the sender.
    fn on_past(&mut self, message: ConsensusMessage, out: &mut Vec<Output>) {
        let (validator, height) = sender_and_height(&message);
        if let Some((previous_height, rounds)) = &self.previous
            && *previous_height == height
        {
            let conflict = match &message {
                ConsensusMessage::Vote(signed) => rounds
                    .get(&signed.vote.round)
                    .and_then(|state| {
                        match state
                            .tally(signed.vote.kind)
                            .lookup(validator, &signed.vote.block_hash)
                        {
                            Lookup::Conflict(first) => Some(first),
                            Lookup::Counted | Lookup::New => None,
                        }
                    })
                    .map(|first| {
                        (
                            Evidence::DuplicateVote {
                                first: first.clone(),
                                second: signed.clone(),
                            },
                            step_of(signed.vote.kind),
                        )
                    }),
                ConsensusMessage::Proposal(signed) => rounds
                    .get(&signed.proposal.round)
                    .and_then(|state| state.proposal.as_ref())
                    .filter(|first| {
                        first.signed.proposal.proposer == validator
                            && first.signed.proposal.block_hash != signed.proposal.block_hash
                    })
                    .map(|first| {
                        (
                            Evidence::DuplicateProposal {
                                first: first.signed.clone(),
                                second: signed.clone(),
                            },
                            Step::Propose,
                        )
                    }),
            };
            // A vote the decided height's log has not seen is kept there
            // (in a round it already holds, so the log stays bounded): a
            // later conflicting one is then evidence.
            let unseen_vote = match &message {
                ConsensusMessage::Vote(signed) => {
                    rounds.get(&signed.vote.round).is_some_and(|state| {
                        matches!(
                            state
                                .tally(signed.vote.kind)
                                .lookup(validator, &signed.vote.block_hash),
                            Lookup::New
                        )
                    })
                }
                ConsensusMessage::Proposal(_) => false,
            };
            if conflict.is_some() || unseen_vote {
                if !self.verify_message(&message, out) {
                    return;
                }
                if let Some((evidence, step)) = conflict {
                    self.report(evidence, step, out);
                    return;
                }
                if let (ConsensusMessage::Vote(signed), Some((_, rounds))) =
                    (&message, self.previous.as_mut())
                    && let Some(state) = rounds.get_mut(&signed.vote.round)
                {
                    let stake = self.validators.get(validator).map_or(0, |v| v.stake);
                    state
                        .tally_mut(signed.vote.kind)
                        .insert(signed.clone(), stake, false);
                }
            }
        }
        if validator == self.me || self.told_behind.contains(&validator) {
            return;
        }
        // Verified so a forger cannot make us send blocks around; at most
        // one check per validator per rebroadcast period.
        if self.verify_message(&message, out) {
            self.told_behind.insert(validator);
            out.push(Output::PeerBehind { validator, height });
        }
    }

    fn buffer_future(&mut self, message: ConsensusMessage, valid: bool, out: &mut Vec<Output>) {
        let (validator, height) = sender_and_height(&message);
        if Some(height) != self.height.checked_add(1) {
            return;
        }
        if self.future.iter().any(|(held, _)| *held == message) {
            return;
        }
        let held = self
            .future
            .iter()
            .filter(|(held, _)| sender_and_height(held).0 == validator)
            .count();
        if held >= FUTURE_MESSAGES_PER_VALIDATOR_MAX {
            return;
        }
        // Verified before buffering so forgeries cannot take a validator's
        // slots.
        if self.verify_message(&message, out) {
            self.future.push((message, valid));
        }
    }

    fn on_timeout(&mut self, timeout: Timeout, out: &mut Vec<Output>) {
        if !self.started || timeout.height != self.height || timeout.round != self.round {
            return;
        }
        match timeout.kind {
            // Lines 57–60.
            TimeoutKind::Propose => {
                if self.step == Step::Propose {
                    self.cast_vote(VoteKind::Prevote, None, out);
                    self.step = Step::Prevote;
                }
            }
            // Lines 61–64.
            TimeoutKind::Prevote => {
                if self.step == Step::Prevote {
                    self.cast_vote(VoteKind::Precommit, None, out);
                    self.step = Step::Precommit;
                }
            }
            // Lines 65–67.
            TimeoutKind::Precommit => {
                if let Some(next) = self.round.checked_add(1) {
                    self.start_round(next, out);
                }
            }
            TimeoutKind::Rebroadcast => self.rebroadcast(out),
        }
    }

    fn on_proposal_built(
        &mut self,
        height: Height,
        round: Round,
        block_hash: Hash,
        out: &mut Vec<Output>,
    ) {
        let stale = !self.started
            || height != self.height
            || round != self.round
            || self.step != Step::Propose
            || self.valid.is_some()
            || proposer(&self.chain_id, &self.validators, height, round) != self.me
            || self
                .rounds
                .get(&round)
                .is_some_and(|state| state.proposal.is_some());
        if !stale {
            // Line 18–19: proposal ← getValue(), validRound_p = −1.
            self.broadcast_proposal(block_hash, None, out);
        }
    }

    fn on_commit(&mut self, certificate: CommitCertificate, out: &mut Vec<Output>) {
        if !self.started || certificate.height != self.height {
            return;
        }
        if certificate
            .verify(&self.chain_id, &self.validators)
            .is_err()
        {
            reject(out, None, Reject::BadCertificate);
            return;
        }
        let (round, block_hash) = (certificate.round, certificate.block_hash);
        self.decide(round, block_hash, certificate, out);
    }

    // ------------------------------------------------------------ rules

    fn run_rules(&mut self, out: &mut Vec<Output>) {
        for _ in 0..RULE_FIRINGS_PER_INPUT_MAX {
            let fired = self.rule_decide(out)
                || self.rule_round_skip(out)
                || self.rule_proposal(out)
                || self.rule_prevote_quorum_any(out)
                || self.rule_polka(out)
                || self.rule_prevote_nil(out)
                || self.rule_precommit_quorum_any(out);
            if !fired {
                return;
            }
        }
        tracing::warn!(
            height = self.height,
            round = self.round,
            "consensus rule loop hit its cap; continuing on the next input"
        );
    }

    /// Lines 49–54: a valid proposal of any round with 2f+1 precommits for it.
    fn rule_decide(&mut self, out: &mut Vec<Output>) -> bool {
        let found = self.rounds.iter().find_map(|(&round, state)| {
            let entry = state.proposal.as_ref().filter(|entry| entry.valid)?;
            let value = entry.signed.proposal.block_hash;
            self.validators
                .is_quorum(state.precommits.stake_for(&Some(value)))
                .then_some((round, value))
        });
        let Some((round, value)) = found else {
            return false;
        };
        let certificate = self.rounds.get(&round).and_then(|state| {
            CommitCertificate::from_precommits(
                self.height,
                round,
                value,
                state.precommits.votes(),
                &self.validators,
            )
        });
        let Some(certificate) = certificate else {
            debug_assert!(false, "a counted precommit quorum must make a certificate");
            return false;
        };
        self.decide(round, value, certificate, out);
        true
    }

    /// Lines 55–56: f+1 stake sent messages for a higher round.
    fn rule_round_skip(&mut self, out: &mut Vec<Output>) -> bool {
        let Some(above) = self.round.checked_add(1) else {
            return false;
        };
        let target = self
            .rounds
            .range(above..)
            .filter(|(_, state)| self.validators.is_one_third(state.sender_stake()))
            .map(|(round, _)| *round)
            .next_back();
        match target {
            Some(round) => {
                self.start_round(round, out);
                true
            }
            None => false,
        }
    }

    /// Lines 22–27 (fresh proposal) and 28–33 (proposal with a proof-of-lock
    /// round vr and 2f+1 prevotes for it in vr).
    fn rule_proposal(&mut self, out: &mut Vec<Output>) -> bool {
        if self.step != Step::Propose {
            return false;
        }
        let Some(entry) = self
            .rounds
            .get(&self.round)
            .and_then(|state| state.proposal.as_ref())
        else {
            return false;
        };
        let value = entry.signed.proposal.block_hash;
        let valid = entry.valid;
        let ignore_lock = cfg!(feature = "broken-skip-lock-check");
        let prevote = match entry.signed.proposal.pol_round {
            None => {
                // Line 23: valid(v) ∧ (lockedRound = −1 ∨ lockedValue = v).
                let lock_allows = self.locked.is_none_or(|(_, locked)| locked == value);
                (valid && (lock_allows || ignore_lock)).then_some(value)
            }
            Some(pol_round) => {
                debug_assert!(pol_round < self.round, "intake rejects pol_round >= round");
                if !self.holds_polka(pol_round, value) {
                    return false;
                }
                // Line 29: valid(v) ∧ (lockedRound ≤ vr ∨ lockedValue = v).
                let lock_allows = self.locked.is_none_or(|(locked_round, locked)| {
                    locked_round <= pol_round || locked == value
                });
                (valid && (lock_allows || ignore_lock)).then_some(value)
            }
        };
        // Lines 24/26 and 30/32, then 27/33.
        self.cast_vote(VoteKind::Prevote, prevote, out);
        self.step = Step::Prevote;
        true
    }

    /// Lines 34–35: 2f+1 prevotes of any kind, first time in the round.
    fn rule_prevote_quorum_any(&mut self, out: &mut Vec<Output>) -> bool {
        if self.step != Step::Prevote {
            return false;
        }
        let Some(state) = self.rounds.get_mut(&self.round) else {
            return false;
        };
        if state.prevote_timeout_scheduled
            || !self.validators.is_quorum(state.prevotes.stake_total())
        {
            return false;
        }
        state.prevote_timeout_scheduled = true;
        self.schedule(TimeoutKind::Prevote, out);
        true
    }

    /// Lines 36–43: a valid proposal with 2f+1 prevotes for it in this
    /// round, first time, while in prevote or precommit.
    fn rule_polka(&mut self, out: &mut Vec<Output>) -> bool {
        if self.step < Step::Prevote {
            return false;
        }
        let round = self.round;
        let Some(state) = self.rounds.get_mut(&round) else {
            return false;
        };
        if state.polka_seen {
            return false;
        }
        let Some(value) = state
            .proposal
            .as_ref()
            .filter(|entry| entry.valid)
            .map(|entry| entry.signed.proposal.block_hash)
        else {
            return false;
        };
        if !self
            .validators
            .is_quorum(state.prevotes.stake_for(&Some(value)))
        {
            return false;
        }
        state.polka_seen = true;
        if self.step == Step::Prevote {
            // Lines 38–41.
            self.locked = Some((round, value));
            self.cast_vote(VoteKind::Precommit, Some(value), out);
            self.step = Step::Precommit;
        }
        // Lines 42–43.
        self.valid = Some((round, value));
        true
    }

    /// Lines 44–46: 2f+1 prevotes for nil.
    fn rule_prevote_nil(&mut self, out: &mut Vec<Output>) -> bool {
        if self.step != Step::Prevote {
            return false;
        }
        let nil_quorum = self
            .rounds
            .get(&self.round)
            .is_some_and(|state| self.validators.is_quorum(state.prevotes.stake_for(&None)));
        if !nil_quorum {
            return false;
        }
        self.cast_vote(VoteKind::Precommit, None, out);
        self.step = Step::Precommit;
        true
    }

    /// Lines 47–48: 2f+1 precommits of any kind, first time in the round.
    fn rule_precommit_quorum_any(&mut self, out: &mut Vec<Output>) -> bool {
        let Some(state) = self.rounds.get_mut(&self.round) else {
            return false;
        };
        if state.precommit_timeout_scheduled
            || !self.validators.is_quorum(state.precommits.stake_total())
        {
            return false;
        }
        state.precommit_timeout_scheduled = true;
        self.schedule(TimeoutKind::Precommit, out);
        true
    }

    // ------------------------------------------------------------ actions

    /// Lines 11–21. The propose timeout is armed for the proposer too, so a
    /// driver that never answers `BuildProposal` costs a round, not the
    /// height (for an answering proposer it fires after the step moved on
    /// and is ignored).
    fn start_round(&mut self, round: Round, out: &mut Vec<Output>) {
        debug_assert!(round >= self.round, "rounds only move forward");
        self.round = round;
        self.step = Step::Propose;
        self.schedule(TimeoutKind::Propose, out);
        self.schedule(TimeoutKind::Rebroadcast, out);
        if proposer(&self.chain_id, &self.validators, self.height, round) == self.me {
            match self.valid {
                // Lines 15–16: re-propose the valid value with its round —
                // when we still hold its proof of lock. After a restart the
                // round's prevotes are gone; a proposal naming a round whose
                // polka nobody can show would be ignored by every validator
                // (line 28), and a committee locked on the value would never
                // move. Proposed as a fresh value instead (validRound −1, as
                // any proposer may), it gets the prevotes of those locked on
                // it and of the unlocked ones (line 23); safety never rests
                // on what a proposer proposes.
                Some((valid_round, value)) => {
                    let pol_round = self.holds_polka(valid_round, value).then_some(valid_round);
                    self.broadcast_proposal(value, pol_round, out)
                }
                // Line 18: getValue() is the driver's.
                None => out.push(Output::BuildProposal {
                    height: self.height,
                    round,
                }),
            }
        }
    }

    /// Lines 51–54, then the buffered messages of the new height.
    fn decide(
        &mut self,
        round: Round,
        block_hash: Hash,
        certificate: CommitCertificate,
        out: &mut Vec<Output>,
    ) {
        debug_assert_eq!(certificate.height, self.height);
        debug_assert_eq!(certificate.block_hash, block_hash);
        out.push(Output::Decided {
            height: self.height,
            round,
            block_hash,
            certificate,
        });
        let Some(next_height) = self.height.checked_add(1) else {
            // 2^64 blocks: nothing sensible is left to do.
            return;
        };
        let log = std::mem::take(&mut self.rounds);
        self.previous = Some((self.height, log));
        self.height = next_height;
        self.round = 0;
        self.locked = None;
        self.valid = None;
        self.round_floor = 0;
        self.told_behind.clear();
        let decided_height = next_height - 1;
        self.evidence_reported
            .retain(|(height, ..)| *height >= decided_height);
        self.start_round(0, out);
        for (message, valid) in std::mem::take(&mut self.future) {
            match message {
                ConsensusMessage::Proposal(signed) => self.on_proposal(signed, valid, out),
                ConsensusMessage::Vote(signed) => self.on_vote(signed, out),
            }
        }
    }

    fn rebroadcast(&mut self, out: &mut Vec<Output>) {
        self.told_behind.clear();
        match self.owed.take() {
            Some(Owed::Vote {
                round,
                kind,
                block_hash,
            }) if round == self.round => self.cast_vote(kind, block_hash, out),
            Some(Owed::Proposal {
                round,
                block_hash,
                pol_round,
            }) if round == self.round && self.step == Step::Propose => {
                self.broadcast_proposal(block_hash, pol_round, out)
            }
            _ => {}
        }
        let mut messages: Vec<ConsensusMessage> = self
            .rounds
            .get(&self.round)
            .map(|state| state.messages().collect())
            .unwrap_or_default();
        let pol = self
            .rounds
            .get(&self.round)
            .and_then(|state| state.proposal.as_ref())
            .and_then(|entry| {
                let proposal = &entry.signed.proposal;
                proposal
                    .pol_round
                    .map(|pol_round| (pol_round, proposal.block_hash))
            });
        if let Some((pol_round, block)) = pol {
            messages.extend(self.proof_of_lock(pol_round, block));
        }
        if let Some(previous) = self.round.checked_sub(1)
            && let Some(state) = self.rounds.get(&previous)
        {
            messages.extend(
                state
                    .precommits
                    .votes()
                    .cloned()
                    .map(ConsensusMessage::Vote),
            );
        }
        out.extend(messages.into_iter().map(Output::Broadcast));
        self.schedule(TimeoutKind::Rebroadcast, out);
    }

    fn broadcast_proposal(
        &mut self,
        block_hash: Hash,
        pol_round: Option<Round>,
        out: &mut Vec<Output>,
    ) {
        let proposal = Proposal {
            height: self.height,
            round: self.round,
            pol_round,
            block_hash,
            proposer: self.me,
        };
        match self.signer.sign_proposal(proposal) {
            Ok(signed) => {
                out.push(Output::Broadcast(ConsensusMessage::Proposal(
                    signed.clone(),
                )));
                if let Some(pol_round) = pol_round {
                    let proof = self.proof_of_lock(pol_round, block_hash);
                    out.extend(proof.into_iter().map(Output::Broadcast));
                }
                let stake = self.stake_of(self.me).unwrap_or(0);
                self.record_proposal(signed, true, stake, out);
            }
            Err(error) => {
                if matches!(error, SignerError::Disk(_)) {
                    self.owed = Some(Owed::Proposal {
                        round: self.round,
                        block_hash,
                        pol_round,
                    });
                }
                out.push(Output::SignFailed(error));
            }
        }
    }

    fn cast_vote(&mut self, kind: VoteKind, block_hash: Option<Hash>, out: &mut Vec<Output>) {
        let vote = Vote {
            kind,
            height: self.height,
            round: self.round,
            block_hash,
            validator: self.me,
        };
        match self.signer.sign_vote(vote) {
            Ok(signed) => {
                out.push(Output::Broadcast(ConsensusMessage::Vote(signed.clone())));
                let stake = self.stake_of(self.me).unwrap_or(0);
                self.record_vote(signed, stake, false);
            }
            Err(error) => {
                if matches!(error, SignerError::Disk(_)) {
                    self.owed = Some(Owed::Vote {
                        round: self.round,
                        kind,
                        block_hash,
                    });
                }
                out.push(Output::SignFailed(error));
            }
        }
    }

    fn schedule(&self, kind: TimeoutKind, out: &mut Vec<Output>) {
        out.push(Output::ScheduleTimeout {
            timeout: Timeout {
                height: self.height,
                round: self.round,
                kind,
            },
            duration_ms: self.params.timeout_ms(kind, self.round),
        });
    }

    // ------------------------------------------------------------ helpers

    fn record_vote(&mut self, signed: SignedVote, stake: u64, allow_conflict: bool) {
        let (validator, kind) = (signed.vote.validator, signed.vote.kind);
        if let Some(state) = self.round_state(signed.vote.round)
            && state.tally_mut(kind).insert(signed, stake, allow_conflict)
        {
            state.add_sender(validator, stake);
        }
    }

    fn record_proposal(
        &mut self,
        signed: SignedProposal,
        valid: bool,
        stake: u64,
        out: &mut Vec<Output>,
    ) {
        let proposal = signed.proposal.clone();
        let Some(state) = self.round_state(proposal.round) else {
            return;
        };
        if state.proposal.is_some() {
            return;
        }
        state.proposal = Some(ProposalEntry { signed, valid });
        state.add_sender(proposal.proposer, stake);
        if !valid && !state.invalid_reported {
            state.invalid_reported = true;
            out.push(Output::InvalidProposal {
                height: proposal.height,
                round: proposal.round,
                proposer: proposal.proposer,
                block_hash: proposal.block_hash,
            });
        }
    }

    /// The state of `round`, created if needed. Keeps at most
    /// ROUNDS_KEPT_MAX rounds by forgetting the lowest past round that holds
    /// neither the lock nor the valid value; `None` when `round` itself would
    /// be that one.
    fn round_state(&mut self, round: Round) -> Option<&mut RoundState> {
        if !self.rounds.contains_key(&round) && self.rounds.len() >= ROUNDS_KEPT_MAX {
            let keep = [self.locked.map(|(r, _)| r), self.valid.map(|(r, _)| r)];
            let victim = self
                .rounds
                .keys()
                .copied()
                .find(|r| *r < self.round && !keep.contains(&Some(*r)))?;
            if victim > round {
                return None;
            }
            self.rounds.remove(&victim);
            self.round_floor = self.round_floor.max(victim.saturating_add(1));
            // Messages below the floor are ignored, so the round's offences
            // cannot be reported again: forget them with the round, which
            // bounds this set by ROUNDS_KEPT_MAX × validators × 3 per height.
            let height = self.height;
            self.evidence_reported
                .retain(|(h, _, round, _)| *h != height || *round != victim);
        }
        debug_assert!(self.rounds.len() < ROUNDS_KEPT_MAX || self.rounds.contains_key(&round));
        Some(self.rounds.entry(round).or_default())
    }

    /// Whether `block` is the block of a proposal held at this height.
    fn is_proposed(&self, block: &Hash) -> bool {
        self.rounds.values().any(|state| {
            state
                .proposal
                .as_ref()
                .is_some_and(|entry| entry.signed.proposal.block_hash == *block)
        })
    }

    /// The prevotes of round `pol_round` for `block`: the proof of lock a
    /// re-proposal carries, relayed so validators that missed the polka
    /// (or were shown nil by an equivocator) can accept it (line 28).
    fn proof_of_lock(&self, pol_round: Round, block: Hash) -> Vec<ConsensusMessage> {
        let value = Some(block);
        self.rounds
            .get(&pol_round)
            .map(|state| {
                state
                    .prevotes
                    .votes_for(&value)
                    .cloned()
                    .map(ConsensusMessage::Vote)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether round `round`'s tally holds 2f+1 prevotes for `block`.
    fn holds_polka(&self, round: Round, block: Hash) -> bool {
        self.rounds.get(&round).is_some_and(|state| {
            self.validators
                .is_quorum(state.prevotes.stake_for(&Some(block)))
        })
    }

    fn round_accepted(&self, round: Round) -> bool {
        round >= self.round_floor && round <= self.round.saturating_add(ROUNDS_AHEAD_MAX)
    }

    fn stake_of(&self, validator: ValidatorIndex) -> Option<u64> {
        self.validators.get(validator).map(|v| v.stake)
    }

    fn report(&mut self, evidence: Evidence, step: Step, out: &mut Vec<Output>) {
        let round = match &evidence {
            Evidence::DuplicateVote { first, .. } => first.vote.round,
            Evidence::DuplicateProposal { first, .. } => first.proposal.round,
        };
        let key = (evidence.height(), evidence.validator(), round, step);
        if self.evidence_reported.insert(key) {
            debug_assert!(evidence.verify(&self.chain_id, &self.validators).is_ok());
            out.push(Output::Evidence(evidence));
        }
    }

    fn verify_vote(&self, signed: &SignedVote, out: &mut Vec<Output>) -> bool {
        let ok = signed.verify(&self.chain_id, &self.validators).is_ok();
        if !ok {
            reject(out, Some(signed.vote.validator), Reject::BadSignature);
        }
        ok
    }

    fn verify_proposal(&self, signed: &SignedProposal, out: &mut Vec<Output>) -> bool {
        let ok = signed.verify(&self.chain_id, &self.validators).is_ok();
        if !ok {
            reject(out, Some(signed.proposal.proposer), Reject::BadSignature);
        }
        ok
    }

    fn verify_message(&self, message: &ConsensusMessage, out: &mut Vec<Output>) -> bool {
        match message {
            ConsensusMessage::Vote(signed) => self.verify_vote(signed, out),
            ConsensusMessage::Proposal(signed) => self.verify_proposal(signed, out),
        }
    }
}

fn reject(out: &mut Vec<Output>, validator: Option<ValidatorIndex>, reason: Reject) {
    out.push(Output::Rejected { validator, reason });
}

fn step_of(kind: VoteKind) -> Step {
    match kind {
        VoteKind::Prevote => Step::Prevote,
        VoteKind::Precommit => Step::Precommit,
    }
}

fn sender_and_height(message: &ConsensusMessage) -> (ValidatorIndex, Height) {
    match message {
        ConsensusMessage::Vote(signed) => (signed.vote.validator, signed.vote.height),
        ConsensusMessage::Proposal(signed) => (signed.proposal.proposer, signed.proposal.height),
    }
}
