//! Double-sign protection: the only place a validator's consensus key signs.
//!
//! The [`Signer`] remembers the last statement it signed — height, round,
//! step, a digest of the statement and the signature — and the lock taken by
//! the last non-nil precommit. It writes both to the `consensus` column
//! family with a *synced* write before it hands a signature out, and loads
//! them when opened. It then refuses to sign anything at or below the stored
//! (height, round, step) unless it is the very same statement, for which it
//! returns the stored signature. So a validator that crashes and restarts
//! (or is restored from a stale copy of its keys *with* its disk) never signs
//! two conflicting statements: amnesia would be a Byzantine fault, not an
//! accident.
//!
//! The lock is persisted so a restarted validator does not forget what it
//! precommitted: Tendermint's safety argument needs the lock (Algorithm 1
//! lines 22 and 28), not only the absence of duplicate signatures.
//!
//! Liveness needs one more thing: every statement signed in the current
//! round, whole. A validator that signed a prevote, crashed before it went
//! out and came back must send *that* prevote again — it may not sign
//! another, and its peers may need its vote for the round's quorum. A
//! validator that cannot do so stalls the round for everybody waiting on
//! it (a 4-validator devnet sat at one height for good after overlapping
//! crashes). So the state keeps the round's statements (at most a
//! proposal, a prevote and a precommit) and the core sends them again
//! after a restart ([`ConsensusSigner::signed_in_round`]).
//!
//! Format: `signer-state/v2`. A disk written before it holds only
//! `signer-state/v1` (the last statement's digest and signature, not the
//! statement): it is read, still refuses everything at or below that
//! statement, and reports no round statements, so the core moves on to the
//! next round rather than wait in one it cannot fully take part in.

use std::cmp::Ordering;

use hm_env::{Disk, DiskError, Entropy};
use hm_wire::{Hash, Signature, SigningKey, VerifyingKey, WireError};
use serde::{Deserialize, Serialize};

use crate::block::{Height, Proposal, Round, SignedProposal, SignedVote, Vote, VoteKind};

use super::{ConsensusMessage, Step};

/// Column family holding the signer state; the driver must open its disk
/// with it.
pub const SIGNER_COLUMN_FAMILY: &str = "consensus";
/// Key of the signer state inside [`SIGNER_COLUMN_FAMILY`].
pub const SIGNER_STATE_KEY: &[u8] = b"signer-state/v2";
/// Where disks written before the round's statements were kept hold their
/// state (read when there is no v2 state; never written).
pub const SIGNER_STATE_V1_KEY: &[u8] = b"signer-state/v1";
/// Encoded signer state: a few integers, hashes and at most four FALCON-1024
/// signatures (1,280 bytes each: the last statement's and the round's
/// proposal, prevote and precommit); anything larger is not ours.
pub const SIGNER_STATE_BYTES_MAX: usize = 8 << 10;
/// Domain of the statement digest (what "the identical statement" means).
const STATEMENT_DOMAIN: &str = "hm/consensus-signer-statement/v1";

/// The lock a validator took at a height: the block it precommitted and in
/// which round (Algorithm 1 lines 38–39).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lock {
    pub height: Height,
    pub round: Round,
    pub block_hash: Hash,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct LastSigned {
    height: Height,
    round: Round,
    step: Step,
    statement: Hash,
    signature: Signature,
}

/// The v1 layout (see the module doc), read from old disks only.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct SignerStateV1 {
    last: Option<LastSigned>,
    lock: Option<Lock>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct SignerState {
    last: Option<LastSigned>,
    lock: Option<Lock>,
    /// Everything signed at `last`'s height and round, in step order (at
    /// most one statement per step). Empty after reading a v1 state.
    round: Vec<ConsensusMessage>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignerError {
    #[error(
        "refusing to sign a {step:?} at height {height} round {round}: this validator already signed \
         up to height {last_height} round {last_round} {last_step:?}; signing again could equivocate \
         (is a second copy of this validator running, or was it restarted without its disk?)"
    )]
    WouldDoubleSign {
        height: Height,
        round: Round,
        step: Step,
        last_height: Height,
        last_round: Round,
        last_step: Step,
    },
    #[error(
        "cannot persist the signing state before signing: {0}; nothing was signed — fix the disk \
         before this validator votes again"
    )]
    Disk(#[from] DiskError),
    #[error(
        "the stored signing state is unreadable ({0}); do not delete it while this validator may have \
         signed at the current height — restore it from a backup or wait for a later height"
    )]
    Corrupt(WireError),
}

/// What the consensus core needs from a signer. [`Signer`] is the real one;
/// tests may wrap it.
pub trait ConsensusSigner {
    fn verifying_key(&self) -> VerifyingKey;
    fn sign_vote(&mut self, vote: Vote) -> Result<SignedVote, SignerError>;
    fn sign_proposal(&mut self, proposal: Proposal) -> Result<SignedProposal, SignerError>;
    /// The persisted lock, if it is for `height`.
    fn lock(&self, height: Height) -> Option<Lock>;
    /// The highest (height, round, step) signed so far.
    fn last_signed(&self) -> Option<(Height, Round, Step)>;
    /// Every statement signed at `height` in the last round signed in, in
    /// step order, when all of them are known: `None` when nothing was
    /// signed at `height`, or when the last statement itself is not held
    /// (a state written before statements were kept).
    fn signed_in_round(&self, height: Height) -> Option<(Round, Vec<ConsensusMessage>)>;
}

/// The persisted, refusing signer (see the module doc).
pub struct Signer<D: Disk, E: Entropy> {
    key: SigningKey,
    chain_id: Hash,
    disk: D,
    entropy: E,
    state: SignerState,
}

impl<D: Disk, E: Entropy> Signer<D, E> {
    /// Loads the signing state from `disk` (empty on first start).
    pub fn open(key: SigningKey, chain_id: Hash, disk: D, entropy: E) -> Result<Self, SignerError> {
        let state = match disk.get(SIGNER_COLUMN_FAMILY, SIGNER_STATE_KEY)? {
            Some(bytes) => hm_wire::decode::<SignerState>(&bytes, SIGNER_STATE_BYTES_MAX)
                .map_err(SignerError::Corrupt)?,
            None => match disk.get(SIGNER_COLUMN_FAMILY, SIGNER_STATE_V1_KEY)? {
                None => SignerState::default(),
                Some(bytes) => {
                    let old = hm_wire::decode::<SignerStateV1>(&bytes, SIGNER_STATE_BYTES_MAX)
                        .map_err(SignerError::Corrupt)?;
                    SignerState {
                        last: old.last,
                        lock: old.lock,
                        round: Vec::new(),
                    }
                }
            },
        };
        Ok(Signer {
            key,
            chain_id,
            disk,
            entropy,
            state,
        })
    }

    /// Checks the statement against the stored state, signs it, persists
    /// (synced) and only then returns the signature. `message` wraps the
    /// signature into the statement as sent, which the state keeps for the
    /// rest of the round.
    fn sign_statement(
        &mut self,
        (height, round, step): (Height, Round, Step),
        statement: Hash,
        lock: Option<Lock>,
        sign: impl FnOnce(&SigningKey, &E) -> Signature,
        message: impl FnOnce(Signature) -> ConsensusMessage,
    ) -> Result<Signature, SignerError> {
        if let Some(last) = &self.state.last {
            let order = (height, round, step).cmp(&(last.height, last.round, last.step));
            if order == Ordering::Equal && last.statement == statement {
                return Ok(last.signature.clone());
            }
            if order != Ordering::Greater {
                return Err(SignerError::WouldDoubleSign {
                    height,
                    round,
                    step,
                    last_height: last.height,
                    last_round: last.round,
                    last_step: last.step,
                });
            }
        }
        let signature = sign(&self.key, &self.entropy);
        let mut next = self.state.clone();
        let same_round = next
            .last
            .as_ref()
            .is_some_and(|last| (last.height, last.round) == (height, round));
        if !same_round {
            next.round.clear();
        }
        next.round.push(message(signature.clone()));
        debug_assert!(next.round.len() <= 3, "one statement per step and round");
        next.last = Some(LastSigned {
            height,
            round,
            step,
            statement,
            signature: signature.clone(),
        });
        if lock.is_some() {
            next.lock = lock;
        }
        let bytes = hm_wire::encode(&next);
        assert!(
            bytes.len() <= SIGNER_STATE_BYTES_MAX,
            "signer state outgrew its limit"
        );
        self.disk
            .put_synced(SIGNER_COLUMN_FAMILY, SIGNER_STATE_KEY, &bytes)?;
        self.state = next;
        Ok(signature)
    }
}

fn statement_digest<T: Serialize>(tag: &str, statement: &T) -> Hash {
    hm_wire::hash_parts(
        STATEMENT_DOMAIN,
        &[tag.as_bytes(), &hm_wire::encode(statement)],
    )
}

impl<D: Disk, E: Entropy> ConsensusSigner for Signer<D, E> {
    fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    fn sign_vote(&mut self, vote: Vote) -> Result<SignedVote, SignerError> {
        let step = match vote.kind {
            VoteKind::Prevote => Step::Prevote,
            VoteKind::Precommit => Step::Precommit,
        };
        let lock = match (vote.kind, vote.block_hash) {
            (VoteKind::Precommit, Some(block_hash)) => Some(Lock {
                height: vote.height,
                round: vote.round,
                block_hash,
            }),
            _ => None,
        };
        let digest = statement_digest("vote", &vote);
        let chain_id = self.chain_id;
        let to_sign = vote.clone();
        let to_keep = vote.clone();
        let signature = self.sign_statement(
            (vote.height, vote.round, step),
            digest,
            lock,
            |key, entropy| SignedVote::sign(&chain_id, to_sign, key, entropy).signature,
            |signature| {
                ConsensusMessage::Vote(SignedVote {
                    vote: to_keep,
                    signature,
                })
            },
        )?;
        Ok(SignedVote { vote, signature })
    }

    fn sign_proposal(&mut self, proposal: Proposal) -> Result<SignedProposal, SignerError> {
        let digest = statement_digest("proposal", &proposal);
        let chain_id = self.chain_id;
        let to_sign = proposal.clone();
        let to_keep = proposal.clone();
        let signature = self.sign_statement(
            (proposal.height, proposal.round, Step::Propose),
            digest,
            None,
            |key, entropy| SignedProposal::sign(&chain_id, to_sign, key, entropy).signature,
            |signature| {
                ConsensusMessage::Proposal(SignedProposal {
                    proposal: to_keep,
                    signature,
                })
            },
        )?;
        Ok(SignedProposal {
            proposal,
            signature,
        })
    }

    fn lock(&self, height: Height) -> Option<Lock> {
        self.state.lock.filter(|lock| lock.height == height)
    }

    fn last_signed(&self) -> Option<(Height, Round, Step)> {
        self.state
            .last
            .as_ref()
            .map(|last| (last.height, last.round, last.step))
    }

    fn signed_in_round(&self, height: Height) -> Option<(Round, Vec<ConsensusMessage>)> {
        let last = self
            .state
            .last
            .as_ref()
            .filter(|last| last.height == height)?;
        // The last statement must be among the kept ones (a v1 state keeps
        // none): otherwise the round's statements are not all known.
        let holds_last = self
            .state
            .round
            .last()
            .is_some_and(|message| match message {
                ConsensusMessage::Vote(signed) => {
                    signed.signature == last.signature
                        && (signed.vote.height, signed.vote.round) == (last.height, last.round)
                }
                ConsensusMessage::Proposal(signed) => {
                    signed.signature == last.signature
                        && (signed.proposal.height, signed.proposal.round)
                            == (last.height, last.round)
                }
            });
        holds_last.then(|| (last.round, self.state.round.clone()))
    }
}

/// For tests elsewhere in the crate: turn a v2 state on a disk into the v1
/// state an older build would have written.
#[cfg(test)]
pub(crate) mod tests_support {
    use hm_env::{Disk, WriteBatch};

    use super::*;

    /// Returns false when the disk holds no v2 state.
    pub(crate) fn downgrade_to_v1<D: Disk>(disk: &D) -> bool {
        let Some(bytes) = disk
            .get(SIGNER_COLUMN_FAMILY, SIGNER_STATE_KEY)
            .expect("read")
        else {
            return false;
        };
        let state: SignerState =
            hm_wire::decode(&bytes, SIGNER_STATE_BYTES_MAX).expect("v2 state decodes");
        let old = SignerStateV1 {
            last: state.last,
            lock: state.lock,
        };
        let mut batch = WriteBatch::new();
        batch.delete(SIGNER_COLUMN_FAMILY, SIGNER_STATE_KEY);
        batch.put(
            SIGNER_COLUMN_FAMILY,
            SIGNER_STATE_V1_KEY,
            hm_wire::encode(&old),
        );
        disk.write(batch).expect("write");
        disk.sync().expect("sync");
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consensus::testkit::signing_key;
    use crate::validators::ValidatorSet;
    use hm_env::mem::{MemDisk, SeededEntropy};

    const CHAIN: Hash = Hash([9; 32]);

    fn open(disk: &MemDisk) -> Signer<MemDisk, SeededEntropy> {
        Signer::open(
            signing_key(0),
            CHAIN,
            disk.clone(),
            SeededEntropy::new(1, b"signer-test"),
        )
        .expect("open signer")
    }

    fn vote(kind: VoteKind, height: Height, round: Round, block: Option<u8>) -> Vote {
        Vote {
            kind,
            height,
            round,
            block_hash: block.map(|b| Hash([b; 32])),
            validator: 0,
        }
    }

    #[test]
    fn crash_and_reload_refuses_a_conflicting_vote_and_repeats_the_identical_one() {
        let disk = MemDisk::new(&[SIGNER_COLUMN_FAMILY]);
        let mut signer = open(&disk);
        let first = signer
            .sign_vote(vote(VoteKind::Prevote, 5, 2, Some(1)))
            .expect("first vote signs");
        // Power loss right after the signature left: the synced write must
        // have survived.
        disk.crash(0);
        let mut restarted = open(&disk);
        assert_eq!(restarted.last_signed(), Some((5, 2, Step::Prevote)));
        let conflicting = restarted.sign_vote(vote(VoteKind::Prevote, 5, 2, Some(2)));
        assert!(matches!(
            conflicting,
            Err(SignerError::WouldDoubleSign { .. })
        ));
        let nil = restarted.sign_vote(vote(VoteKind::Prevote, 5, 2, None));
        assert!(matches!(nil, Err(SignerError::WouldDoubleSign { .. })));
        let again = restarted
            .sign_vote(vote(VoteKind::Prevote, 5, 2, Some(1)))
            .expect("identical statement is re-served");
        assert_eq!(again, first);
        // Later steps, rounds and heights still sign.
        restarted
            .sign_vote(vote(VoteKind::Precommit, 5, 2, None))
            .expect("precommit after prevote");
        restarted
            .sign_vote(vote(VoteKind::Prevote, 5, 3, None))
            .expect("next round");
        let set = ValidatorSet::new([(signing_key(0).verifying_key(), 1)]).expect("set");
        first
            .verify(&CHAIN, &set)
            .expect("stored signature is valid");
    }

    #[test]
    fn refuses_anything_below_the_last_signed_step() {
        let disk = MemDisk::new(&[SIGNER_COLUMN_FAMILY]);
        let mut signer = open(&disk);
        signer
            .sign_vote(vote(VoteKind::Precommit, 3, 1, None))
            .expect("signs");
        for (kind, height, round) in [
            (VoteKind::Prevote, 3, 1),
            (VoteKind::Precommit, 3, 0),
            (VoteKind::Prevote, 2, 9),
        ] {
            assert!(signer.sign_vote(vote(kind, height, round, None)).is_err());
        }
        let proposal = Proposal {
            height: 3,
            round: 1,
            pol_round: None,
            block_hash: Hash([4; 32]),
            proposer: 0,
        };
        assert!(signer.sign_proposal(proposal.clone()).is_err());
        let later = Proposal {
            round: 2,
            ..proposal
        };
        signer.sign_proposal(later).expect("next round's proposal");
    }

    #[test]
    fn a_failed_persist_returns_no_signature_and_changes_nothing() {
        let disk = MemDisk::new(&[SIGNER_COLUMN_FAMILY]);
        let mut signer = open(&disk);
        disk.inject_io_errors(1);
        let failed = signer.sign_vote(vote(VoteKind::Prevote, 1, 0, Some(1)));
        assert!(matches!(failed, Err(SignerError::Disk(_))));
        assert_eq!(signer.last_signed(), None);
        // The retry may sign anything for that step: nothing escaped.
        signer
            .sign_vote(vote(VoteKind::Prevote, 1, 0, Some(2)))
            .expect("signs once the disk works");
    }

    #[test]
    fn lock_survives_a_crash_and_is_scoped_to_its_height() {
        let disk = MemDisk::new(&[SIGNER_COLUMN_FAMILY]);
        let mut signer = open(&disk);
        signer
            .sign_vote(vote(VoteKind::Precommit, 7, 4, Some(3)))
            .expect("signs");
        signer
            .sign_vote(vote(VoteKind::Precommit, 7, 5, None))
            .expect("nil precommit keeps the lock");
        disk.crash(0);
        let restarted = open(&disk);
        assert_eq!(
            restarted.lock(7),
            Some(Lock {
                height: 7,
                round: 4,
                block_hash: Hash([3; 32])
            })
        );
        assert_eq!(restarted.lock(8), None);
    }

    #[test]
    fn corrupted_state_is_an_error_not_a_fresh_start() {
        let disk = MemDisk::new(&[SIGNER_COLUMN_FAMILY]);
        let mut signer = open(&disk);
        signer
            .sign_vote(vote(VoteKind::Prevote, 1, 0, None))
            .expect("signs");
        disk.put_synced(SIGNER_COLUMN_FAMILY, SIGNER_STATE_KEY, b"garbage")
            .expect("write");
        let reopened = Signer::open(
            signing_key(0),
            CHAIN,
            disk.clone(),
            SeededEntropy::new(1, b"x"),
        );
        assert!(matches!(reopened, Err(SignerError::Corrupt(_))));
    }
}
