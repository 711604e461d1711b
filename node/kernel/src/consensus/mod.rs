//! Tendermint consensus (Buchman, Kwon, Milosevic, "The latest gossip on
//! BFT consensus", arXiv:1807.04938, Algorithm 1) as a sans-I/O core.
//!
//! [`Core`] decides on **block hashes**. It owns the protocol state of the
//! current height — round, step, lock, valid value, the per-round vote
//! tallies — and nothing else: no sockets, no clock, no blocks. The driver
//! (the node) feeds it [`Input`]s and carries out its [`Output`]s:
//!
//! * it gossips `Output::Broadcast` messages and hands received ones back as
//!   `Input::Proposal` / `Input::Vote`. For a proposal it says whether the
//!   block arrived and its structure, four proofs and execution check out
//!   (`valid`); the core checks every signature itself before counting it;
//! * it arms timers for `Output::ScheduleTimeout` and returns them as
//!   `Input::Timeout` when they fire (stale ones are ignored);
//! * on `Output::BuildProposal` it builds a block and answers
//!   `Input::ProposalBuilt` with its hash;
//! * on `Output::Decided` it commits the block with the certificate; the core
//!   has already moved to the next height (Algorithm 1 lines 51–54), so the
//!   next outputs belong to height + 1;
//! * `Output::Evidence` goes to the evidence pool, so a later proposer puts
//!   it in a block; `Output::InvalidProposal` is reported to the operator;
//!   `Output::PeerBehind` asks the driver to send that validator the block and
//!   certificate of the height it is stuck at (it answers with
//!   `Input::Commit`).
//!
//! The core must not know about blocks' contents, the proofs, peers'
//! addresses or wall-clock time. Signing goes through a [`ConsensusSigner`]
//! that persists before it signs ([`signer`]).

mod core;
mod round;
pub mod signer;

#[cfg(test)]
mod sim;
#[cfg(test)]
pub(crate) mod testkit;
#[cfg(test)]
mod tests;

use hm_wire::Hash;
use serde::{Deserialize, Serialize};

use crate::block::{CommitCertificate, Evidence, Height, Round, SignedProposal, SignedVote};
use crate::validators::{ValidatorIndex, ValidatorSet};

pub use self::core::{Core, CoreError};
pub use signer::{ConsensusSigner, Lock, SIGNER_COLUMN_FAMILY, Signer, SignerError};

/// How many rounds past the current one a message may be for. Messages from
/// later rounds are dropped: a Byzantine validator could otherwise make us
/// keep state for arbitrarily many rounds. Honest validators more than this
/// far ahead are caught up with by our own timeouts (which are shorter in
/// lower rounds) or by the commit certificate once they decide.
pub const ROUNDS_AHEAD_MAX: Round = 16;
/// Rounds of one height whose messages are kept. Beyond it the lowest round
/// that holds neither the lock nor the valid value is forgotten (it can no
/// longer produce a decision here; the certificate sync covers it).
pub const ROUNDS_KEPT_MAX: usize = 32;
const _: () = assert!(ROUNDS_KEPT_MAX >= ROUNDS_AHEAD_MAX as usize + 4);
/// Buffered messages for the next height per validator: a proposal and two
/// votes for a couple of rounds is what an honest validator slightly ahead
/// sends before we catch up.
pub const FUTURE_MESSAGES_PER_VALIDATOR_MAX: usize = 8;
/// Conflicting votes counted per round and vote kind (see `round.rs`): a
/// Byzantine validator's second vote for nil or for a proposed block. Beyond
/// this they are still evidence but no longer counted; that can only cost
/// liveness, and only while more than that many statements are equivocated.
pub const CONFLICTING_VOTES_PER_ROUND_MAX: usize = crate::block::VALIDATORS_MAX;
/// Rule evaluations per input. Every firing changes the step, the round or
/// the height, so the loop ends well before this; the cap only guarantees
/// the core returns.
pub const RULE_FIRINGS_PER_INPUT_MAX: usize = 4 * ROUNDS_KEPT_MAX + 64;

/// Domain of the proposer draw.
pub const PROPOSER_DOMAIN: &str = "hm/consensus-proposer/v1";

/// The step of a round (Algorithm 1 line 4), ordered as a round runs. Also
/// names the kind of statement a validator signs in that step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Step {
    Propose,
    Prevote,
    Precommit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum TimeoutKind {
    /// `timeoutPropose` (line 21): no proposal came in time.
    Propose,
    /// `timeoutPrevote` (line 35): 2f+1 prevotes, but for no single value.
    Prevote,
    /// `timeoutPrecommit` (line 48): 2f+1 precommits without a decision.
    Precommit,
    /// Not in Algorithm 1: the paper assumes gossip eventually delivers every
    /// message a correct process received to all correct processes. Over a
    /// lossy network the core re-sends what it holds for the round (and the
    /// previous round's precommits, the justification for being in this
    /// round) each time this fires, which gives that property.
    Rebroadcast,
}

/// A timer the core asked for; the driver hands it back when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Timeout {
    pub height: Height,
    pub round: Round,
    pub kind: TimeoutKind,
}

/// Timeouts grow linearly with the round, so after the network stabilises
/// some round is long enough for every honest message to arrive (the
/// paper's partial-synchrony argument).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsensusParams {
    pub propose_timeout_base_ms: u64,
    pub propose_timeout_delta_ms: u64,
    pub prevote_timeout_base_ms: u64,
    pub prevote_timeout_delta_ms: u64,
    pub precommit_timeout_base_ms: u64,
    pub precommit_timeout_delta_ms: u64,
    pub rebroadcast_timeout_base_ms: u64,
    pub rebroadcast_timeout_delta_ms: u64,
}

impl Default for ConsensusParams {
    /// CometBFT's defaults for the three steps; a rebroadcast after a round
    /// has made no progress for as long as all three together.
    fn default() -> Self {
        ConsensusParams {
            propose_timeout_base_ms: 3_000,
            propose_timeout_delta_ms: 500,
            prevote_timeout_base_ms: 1_000,
            prevote_timeout_delta_ms: 500,
            precommit_timeout_base_ms: 1_000,
            precommit_timeout_delta_ms: 500,
            rebroadcast_timeout_base_ms: 5_000,
            rebroadcast_timeout_delta_ms: 1_500,
        }
    }
}

impl ConsensusParams {
    /// Duration of `kind`'s timeout in `round`: base + delta × round.
    pub fn timeout_ms(&self, kind: TimeoutKind, round: Round) -> u64 {
        let (base, delta) = match kind {
            TimeoutKind::Propose => (self.propose_timeout_base_ms, self.propose_timeout_delta_ms),
            TimeoutKind::Prevote => (self.prevote_timeout_base_ms, self.prevote_timeout_delta_ms),
            TimeoutKind::Precommit => (
                self.precommit_timeout_base_ms,
                self.precommit_timeout_delta_ms,
            ),
            TimeoutKind::Rebroadcast => (
                self.rebroadcast_timeout_base_ms,
                self.rebroadcast_timeout_delta_ms,
            ),
        };
        base.saturating_add(delta.saturating_mul(u64::from(round)))
    }
}

/// What validators gossip.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConsensusMessage {
    Proposal(SignedProposal),
    Vote(SignedVote),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A proposal and the driver's verdict on its block (arrived, structure,
    /// the four proofs and execution all check out). `valid` must be judged
    /// against the chain at `height - 1`; a driver that cannot judge a block
    /// of a height it has not reached keeps the block and submits the
    /// proposal once the core is at that height ([`Core::height`]).
    Proposal {
        signed: SignedProposal,
        valid: bool,
    },
    Vote(SignedVote),
    /// A timer from `Output::ScheduleTimeout` fired.
    Timeout(Timeout),
    /// Reply to `Output::BuildProposal`: the block this validator proposes.
    ProposalBuilt {
        height: Height,
        round: Round,
        block_hash: Hash,
    },
    /// A commit certificate for the current height learned by block sync
    /// (the driver holds or fetches the block). The core checks it.
    Commit(CommitCertificate),
}

/// Why a message was not counted (for peer scoring and logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// The validator index is not in the set.
    NotMember,
    /// The signature does not verify.
    BadSignature,
    /// A proposal from someone who is not the round's proposer.
    WrongProposer,
    /// A proposal whose proof-of-lock round is not below its round.
    BadPolRound,
    /// A certificate for our height that does not verify.
    BadCertificate,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Broadcast(ConsensusMessage),
    ScheduleTimeout {
        timeout: Timeout,
        duration_ms: u64,
    },
    /// This validator proposes in `round`: build a block, answer
    /// `Input::ProposalBuilt`.
    BuildProposal {
        height: Height,
        round: Round,
    },
    /// The block is final (Algorithm 1 line 51). The core is now at
    /// `height + 1`.
    Decided {
        height: Height,
        round: Round,
        block_hash: Hash,
        certificate: CommitCertificate,
    },
    /// A validator signed two conflicting statements; emitted once per
    /// offence (validator, height, round, step).
    Evidence(Evidence),
    /// The round's proposer proposed a block the driver found invalid
    /// (reported once per round).
    InvalidProposal {
        height: Height,
        round: Round,
        proposer: ValidatorIndex,
        block_hash: Hash,
    },
    /// `validator` signed a message for `height`, below ours: send it that
    /// height's block and certificate. At most once per validator per
    /// rebroadcast period.
    PeerBehind {
        validator: ValidatorIndex,
        height: Height,
    },
    /// A message was not counted.
    Rejected {
        validator: Option<ValidatorIndex>,
        reason: Reject,
    },
    /// The signer refused or could not persist; this validator stays silent
    /// for that step (safe; it only costs liveness if it keeps happening).
    SignFailed(SignerError),
}

/// The proposer of `(height, round)`: a stake-weighted draw from
/// `hash(chain_id, height, round)`.
///
/// Why not Tendermint's proposer-priority rotation: the draw is stateless, so
/// any node — a restarted one, one that skipped rounds, a light client —
/// computes the proposer of any round from the validator set alone, with no
/// accumulated priorities to keep in sync across heights and skipped rounds.
/// A validator with twice the stake is drawn twice as often in expectation
/// (not in every window, which the priority algorithm would give). The draw
/// is 128 bits reduced modulo the total stake (< 2^62), so the modulo bias is
/// below 2^-66.
pub fn proposer(
    chain_id: &Hash,
    validators: &ValidatorSet,
    height: Height,
    round: Round,
) -> ValidatorIndex {
    let seed = hm_wire::hash_parts(
        PROPOSER_DOMAIN,
        &[
            chain_id.as_bytes(),
            &height.to_le_bytes(),
            &round.to_le_bytes(),
        ],
    );
    let mut head = [0u8; 16];
    head.copy_from_slice(&seed.as_bytes()[..16]);
    let total = u128::from(validators.total_stake());
    assert!(total > 0, "a validator set has stake");
    let mut draw = u128::from_le_bytes(head) % total;
    let mut last = 0;
    for (index, validator) in validators.iter() {
        let stake = u128::from(validator.stake);
        if draw < stake {
            return index;
        }
        draw -= stake;
        last = index;
    }
    // Unreachable: the draw is below the total stake.
    debug_assert!(false, "proposer draw beyond total stake");
    last
}
