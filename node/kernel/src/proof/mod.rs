//! Proof of State: the four proofs a proposer attaches to a block, and
//! their combined hash.
//!
//! - SpaceProof (where, [`space`]): openings of k challenged labels of the
//!   proposer's registered plot, with the label equation checked, so only a
//!   prover that keeps the plotted labels answers cheaply.
//! - StakeProof (who, [`stake`]): the proposer's validator index and stake
//!   at the parent height, and its signature over the block hash.
//! - WorkProof (what/how, [`work`]): a hashcash nonce meeting the header's
//!   difficulty; the executed state root sits in the header and validators
//!   recompute it.
//! - TimeProof (when, [`time`]): checkpoints of a sequential SHA-256 chain
//!   of `time_ticks` iterations from the parent's output. It proves
//!   sequential work was done after the parent existed, not how much wall
//!   time passed.
//!
//! Proving is two steps, because the header carries the time chain's output
//! and the other proofs sign or hash the finished header:
//!
//! 1. [`compute_time`] after the parent is known → put `time_output` and
//!    `time_ticks` in the header;
//! 2. fill the rest of the header, then [`BlockProver::prove`].
//!
//! [`validate`] checks all four parts and the combined hash and reports each
//! part's outcome in a [`ValidationResult`]. This module is pure: the
//! caller passes the clock reading, the validator set, the registered space
//! commitments and the state root it recomputed.

pub mod space;
pub mod stake;
pub mod time;
pub mod work;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;

use hm_env::Entropy;
use hm_wire::{Hash, Signature, SigningKey, WireError, hash_parts};
use serde::{Deserialize, Serialize};

use crate::block::BlockHeader;
use crate::genesis::{Genesis, ProofParams};
use crate::validators::{ValidatorIndex, ValidatorSet};

pub use space::{SpaceError, SpacePlot, verify_space};
pub use stake::{StakeError, verify_stake};
pub use time::{TimeError, verify_time};
pub use work::{WorkError, verify_work};

/// Openings per space proof, upper bound for decoders.
pub const SPACE_CHALLENGES_MAX: usize = 64;
/// Merkle path length bound (2^48 leaves is far beyond any plot).
pub const SPACE_PATH_HASHES_MAX: usize = 48;
/// Time-chain checkpoints per proof.
pub const TIME_CHECKPOINTS_MAX: usize = 4_096;
/// An encoded consensus proof: 64 challenges × 3 openings × (8 + 32 + 8 +
/// 48 × 32) bytes ≈ 304 KB, 4,096 checkpoints = 128 KiB, a 1,280-byte
/// signature and a few fixed fields: under 448 KiB; 512 KiB leaves room.
pub const CONSENSUS_PROOF_BYTES_MAX: usize = 512 << 10;

pub const COMBINED_DOMAIN: &str = "hm/consensus-proof/v1";
/// Plot nonce of the commitments registered in genesis.
pub const GENESIS_PLOT_NONCE: u64 = 0;

/// One opened leaf of a space commitment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpaceOpening {
    pub index: u64,
    pub label: Hash,
    /// RFC 9162 inclusion path of `label` under the commitment root.
    pub path: Vec<Hash>,
}

/// The openings answering one challenge: the challenged label and the two
/// labels it is computed from (see [`space`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpaceChallengeOpening {
    pub challenged: SpaceOpening,
    /// Label `index - 1`; absent for leaf 0.
    pub previous: Option<SpaceOpening>,
    /// Label `parent(index)`; absent for leaf 0 and when the parent is the
    /// previous leaf (it is opened once).
    pub parent: Option<SpaceOpening>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpaceProof {
    /// Root of the commitment the proposer registered on chain.
    pub commitment_root: Hash,
    /// One entry per challenge, in challenge order.
    pub openings: Vec<SpaceChallengeOpening>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StakeProof {
    pub validator: ValidatorIndex,
    /// The validator's stake at the parent height.
    pub stake: u64,
    /// Signature over the block hash.
    pub signature: Signature,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkProof {
    pub nonce: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeProof {
    /// Chain state after every `checkpoint_interval_ticks` iterations (the
    /// last one is the header's `time_output`).
    pub checkpoints: Vec<Hash>,
}

/// The four proofs and their combined hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsensusProof {
    pub space: SpaceProof,
    pub stake: StakeProof,
    pub work: WorkProof,
    pub time: TimeProof,
    /// Hash over the four parts' encodings.
    pub combined: Hash,
}

/// A space commitment as registered on chain: the plot's Merkle root and
/// the nonce its seed was made with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpaceCommitment {
    pub root: Hash,
    pub plot_nonce: u64,
}

/// Where validation finds a proposer's registered space commitment (the
/// genesis, or the chain's registry once registrations are transactions).
pub trait SpaceRegistry {
    fn space_commitment(&self, node_id: &Hash) -> Option<SpaceCommitment>;
}

impl SpaceRegistry for Genesis {
    fn space_commitment(&self, node_id: &Hash) -> Option<SpaceCommitment> {
        Genesis::space_root(self, node_id).map(|root| SpaceCommitment {
            root,
            plot_nonce: GENESIS_PLOT_NONCE,
        })
    }
}

impl SpaceRegistry for BTreeMap<Hash, SpaceCommitment> {
    fn space_commitment(&self, node_id: &Hash) -> Option<SpaceCommitment> {
        self.get(node_id).copied()
    }
}

/// What a block's proofs need from its parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParentInfo {
    pub hash: Hash,
    pub time_output: Hash,
    pub timestamp_ms: u64,
}

impl ParentInfo {
    pub fn of(parent: &BlockHeader) -> ParentInfo {
        ParentInfo {
            hash: parent.hash(),
            time_output: parent.time_output,
            timestamp_ms: parent.timestamp_ms,
        }
    }

    /// The (virtual) block 0 that height 1 follows: hash `Hash::default()`
    /// as in height 1's `previous_hash`, and the chain id as its time
    /// output, so no two chains share a time chain.
    pub fn genesis(genesis: &Genesis) -> ParentInfo {
        ParentInfo {
            hash: Hash::default(),
            time_output: genesis.chain_id(),
            timestamp_ms: genesis.genesis_time_ms,
        }
    }
}

/// Step 1's result: what goes into the header, and the proof.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeOutput {
    pub time_output: Hash,
    pub time_ticks: u64,
    pub proof: TimeProof,
}

/// Step 1 of proving: runs the time chain after `parent` for
/// `time_min_ticks` (sequential; the bulk of block creation time).
pub fn compute_time(parent: &ParentInfo, params: &ProofParams) -> TimeOutput {
    let ticks = params.time_min_ticks;
    let (time_output, proof) =
        time::prove_time(parent, ticks, params.time_checkpoint_interval_ticks);
    TimeOutput {
        time_output,
        time_ticks: ticks,
        proof,
    }
}

/// A proposer's secrets: its plot and its signing key.
#[derive(Debug, Clone, Copy)]
pub struct BlockProver<'a> {
    plot: &'a SpacePlot,
    key: &'a SigningKey,
}

impl<'a> BlockProver<'a> {
    /// The plot must be the key's node's.
    pub fn new(plot: &'a SpacePlot, key: &'a SigningKey) -> Result<BlockProver<'a>, ProofError> {
        let id = key.verifying_key().fingerprint();
        if plot.node_id() != id {
            return Err(SpaceError::PlotOwner {
                plot: plot.node_id(),
                proposer: id,
            }
            .into());
        }
        Ok(BlockProver { plot, key })
    }

    pub fn node_id(&self) -> Hash {
        self.plot.node_id()
    }

    /// Step 2 of proving: the space, stake and work proofs for the finished
    /// `header` (whose `time_output`/`time_ticks` came from
    /// [`compute_time`], passed here as `time`), and the combined hash.
    pub fn prove<E: Entropy + ?Sized>(
        &self,
        header: &BlockHeader,
        time: TimeProof,
        validators: &ValidatorSet,
        params: &ProofParams,
        entropy: &E,
    ) -> Result<ConsensusProof, ProofError> {
        if header.proposer != self.node_id() {
            return Err(SpaceError::PlotOwner {
                plot: self.node_id(),
                proposer: header.proposer,
            }
            .into());
        }
        if self.plot.leaves_log2() != params.space_leaves_log2 {
            return Err(SpaceError::PlotSizeMismatch {
                plot: self.plot.leaves_log2(),
                params: params.space_leaves_log2,
            }
            .into());
        }
        if header.difficulty != params.work_difficulty_bits {
            return Err(WorkError::DifficultyMismatch {
                header: header.difficulty,
                required: params.work_difficulty_bits,
            }
            .into());
        }
        if time.checkpoints.last() != Some(&header.time_output) {
            return Err(TimeError::OutputMismatch.into());
        }
        let expected = header
            .time_ticks
            .div_ceil(params.time_checkpoint_interval_ticks.max(1));
        if time.checkpoints.len() as u64 != expected {
            return Err(TimeError::CheckpointCount {
                got: time.checkpoints.len(),
                expected,
            }
            .into());
        }
        let block_hash = header.hash();
        let space = self
            .plot
            .prove(&header.previous_hash, params.space_challenges);
        let stake = stake::prove_stake(&block_hash, self.key, validators, entropy)?;
        let work = work::prove_work(&block_hash, header.difficulty)?;
        Ok(ConsensusProof::assemble(space, stake, work, time))
    }
}

impl ConsensusProof {
    /// The hash over the four parts' canonical encodings.
    pub fn combined_hash(
        space: &SpaceProof,
        stake: &StakeProof,
        work: &WorkProof,
        time: &TimeProof,
    ) -> Hash {
        hash_parts(
            COMBINED_DOMAIN,
            &[
                &hm_wire::encode(space),
                &hm_wire::encode(stake),
                &hm_wire::encode(work),
                &hm_wire::encode(time),
            ],
        )
    }

    /// Puts four parts together under their combined hash.
    pub fn assemble(
        space: SpaceProof,
        stake: StakeProof,
        work: WorkProof,
        time: TimeProof,
    ) -> ConsensusProof {
        let combined = ConsensusProof::combined_hash(&space, &stake, &work, &time);
        ConsensusProof {
            space,
            stake,
            work,
            time,
            combined,
        }
    }

    /// Count limits a decoder enforces before any proof is checked.
    pub fn check_limits(&self) -> Result<(), ProofError> {
        space::check_space_limits(&self.space)?;
        time::check_time_limits(&self.time)?;
        Ok(())
    }

    /// Decodes a proof from untrusted bytes: bounded, canonical, limits
    /// checked. Validity is [`validate`]'s job.
    pub fn decode(bytes: &[u8]) -> Result<ConsensusProof, ProofError> {
        let proof: ConsensusProof = hm_wire::decode(bytes, CONSENSUS_PROOF_BYTES_MAX)?;
        proof.check_limits()?;
        Ok(proof)
    }

    pub fn encode(&self) -> Vec<u8> {
        hm_wire::encode(self)
    }
}

/// Everything validation needs besides the header and the proof.
#[derive(Clone, Copy)]
pub struct ProofContext<'a> {
    pub params: &'a ProofParams,
    /// The validator set at the parent height.
    pub validators: &'a ValidatorSet,
    pub parent: ParentInfo,
    pub space_registry: &'a dyn SpaceRegistry,
    /// This node's wall clock (`hm_env::Clock::wall_ms`), read by the caller.
    pub local_now_ms: u64,
    /// The state root this node computed by executing the block; `None`
    /// skips that check (the result's `state_root_checked` says so).
    pub recomputed_state_root: Option<Hash>,
    /// Threads the time-chain check may use (1 in the simulator).
    pub parallelism: usize,
}

/// The parts of a consensus proof, for reporting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ProofPart {
    Space,
    Stake,
    Work,
    Time,
    Combined,
}

impl fmt::Display for ProofPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProofPart::Space => "space",
            ProofPart::Stake => "stake",
            ProofPart::Work => "work",
            ProofPart::Time => "time",
            ProofPart::Combined => "combined hash",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "combined proof hash {claimed} differs from {computed}, the hash of the four parts; a part was altered after proving"
)]
pub struct CombinedMismatch {
    pub claimed: Hash,
    pub computed: Hash,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("space proof: {0}")]
    Space(#[from] SpaceError),
    #[error("stake proof: {0}")]
    Stake(#[from] StakeError),
    #[error("work proof: {0}")]
    Work(#[from] WorkError),
    #[error("time proof: {0}")]
    Time(#[from] TimeError),
    #[error(transparent)]
    Combined(#[from] CombinedMismatch),
    #[error("consensus proof does not decode: {0}")]
    Wire(#[from] WireError),
}

impl ProofError {
    /// The part the error is about (`None` for bytes that do not decode).
    pub fn part(&self) -> Option<ProofPart> {
        match self {
            ProofError::Space(_) => Some(ProofPart::Space),
            ProofError::Stake(_) => Some(ProofPart::Stake),
            ProofError::Work(_) => Some(ProofPart::Work),
            ProofError::Time(_) => Some(ProofPart::Time),
            ProofError::Combined(_) => Some(ProofPart::Combined),
            ProofError::Wire(_) => None,
        }
    }
}

/// Each part's outcome. Every part is checked even when another failed, so
/// the report is complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationResult {
    pub space: Result<(), SpaceError>,
    pub stake: Result<(), StakeError>,
    pub work: Result<(), WorkError>,
    pub time: Result<(), TimeError>,
    pub combined: Result<(), CombinedMismatch>,
    /// Whether the header's state root was compared with a recomputed one.
    /// `false` means the block is valid only up to execution.
    pub state_root_checked: bool,
}

impl ValidationResult {
    pub fn is_valid(&self) -> bool {
        self.failures().is_empty()
    }

    /// The failed parts, in [`ProofPart`] order.
    pub fn failures(&self) -> Vec<(ProofPart, ProofError)> {
        let mut failures = Vec::new();
        if let Err(error) = &self.space {
            failures.push((ProofPart::Space, error.clone().into()));
        }
        if let Err(error) = &self.stake {
            failures.push((ProofPart::Stake, error.clone().into()));
        }
        if let Err(error) = &self.work {
            failures.push((ProofPart::Work, error.clone().into()));
        }
        if let Err(error) = &self.time {
            failures.push((ProofPart::Time, error.clone().into()));
        }
        if let Err(error) = &self.combined {
            failures.push((ProofPart::Combined, error.clone().into()));
        }
        failures
    }

    /// The parts that failed, without their errors.
    pub fn failed_parts(&self) -> Vec<ProofPart> {
        self.failures().into_iter().map(|(part, _)| part).collect()
    }

    /// `Ok` when valid, else the first failure.
    pub fn into_result(self) -> Result<(), ProofError> {
        match self.failures().into_iter().next() {
            Some((_, error)) => Err(error),
            None => Ok(()),
        }
    }
}

impl fmt::Display for ValidationResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let failures = self.failures();
        if failures.is_empty() {
            f.write_str("all four proofs and the combined hash are valid")?;
        } else {
            for (position, (_, error)) in failures.iter().enumerate() {
                if position > 0 {
                    f.write_str("; ")?;
                }
                write!(f, "{error}")?;
            }
        }
        if !self.state_root_checked {
            f.write_str(" (state root not checked: the block was not executed)")?;
        }
        Ok(())
    }
}

/// Checks `proof` for `header`: each part, then the combined hash. Every
/// part is checked so the report is complete; the time chain dominates the
/// cost (see [`ProofParams::production`]). A caller facing floods can call
/// [`verify_stake`] first (one signature check) and drop blocks nobody in
/// the validator set signed before paying for the rest, and should not
/// validate the same block hash twice.
pub fn validate(
    header: &BlockHeader,
    proof: &ConsensusProof,
    ctx: &ProofContext<'_>,
) -> ValidationResult {
    let params = ctx.params;
    let block_hash = header.hash();
    let space = match ctx.space_registry.space_commitment(&header.proposer) {
        None => Err(SpaceError::NotRegistered {
            proposer: header.proposer,
        }),
        Some(commitment) => verify_space(
            &proof.space,
            &header.previous_hash,
            &header.proposer,
            &commitment,
            params.space_challenges,
            params.space_leaves_log2,
        ),
    };
    let stake = verify_stake(&proof.stake, &block_hash, &header.proposer, ctx.validators);
    let work = verify_work(
        &proof.work,
        header,
        &block_hash,
        params,
        ctx.recomputed_state_root.as_ref(),
    );
    let time = verify_time(
        &proof.time,
        header,
        &ctx.parent,
        params,
        ctx.local_now_ms,
        ctx.parallelism,
    );
    let computed =
        ConsensusProof::combined_hash(&proof.space, &proof.stake, &proof.work, &proof.time);
    let combined = if computed == proof.combined {
        Ok(())
    } else {
        Err(CombinedMismatch {
            claimed: proof.combined,
            computed,
        })
    };
    ValidationResult {
        space,
        stake,
        work,
        time,
        combined,
        state_root_checked: ctx.recomputed_state_root.is_some(),
    }
}

impl ProofParams {
    /// The real node's parameters, sized for the seed's targets (proof
    /// validation < 100 ms, block creation < 1 s) on a 2-core machine of
    /// this class:
    ///
    /// - space: 2^20 labels (64 MiB in memory; plotting them once takes
    ///   about 5 s, and so does regenerating them from the seed, which is
    ///   what a prover keeping only the seed would pay per block), 32
    ///   challenges (a prover missing 10% of its labels is caught with
    ///   probability 96.6% per block);
    /// - work: 16 bits (65,536 hashes expected, about 8 ms);
    /// - time: 400,000 ticks (about 27 ms at the ~14.8 M ticks/s one core
    ///   does) with a checkpoint every 4,000 (100 checkpoints, 3.2 KB);
    /// - drift: 2 s, room for honest clocks a few NTP hops apart.
    ///
    /// Measured with a release build over 10 blocks per run, 3 runs, while
    /// other builds kept about one core busy (load average ~3 on 2 cores):
    /// creation 36–38 ms mean (worst block 51 ms; the time chain is 27 ms of
    /// it), validation 27–28 ms mean on one thread (worst 33 ms), plotting
    /// 5.0–6.9 s. With both cores loaded (load ~5) the same work took up to
    /// twice as long. Parallelism 2 gained nothing in these runs — a bare
    /// two-thread hash loop did not either, because no core was free; the
    /// segments are independent, so on idle cores the time chain's share
    /// should divide by the thread count (not measured here). The encoded
    /// proof is about 70 KB. A hostile proposer's chain is capped at twice
    /// the minimum, so validation stays under ~2× these figures.
    pub fn production() -> ProofParams {
        ProofParams {
            space_challenges: 32,
            space_leaves_log2: 20,
            work_difficulty_bits: 16,
            time_min_ticks: 400_000,
            time_checkpoint_interval_ticks: 4_000,
            max_drift_ms: 2_000,
        }
    }

    /// Small values for the simulator: 64 validators × thousands of blocks
    /// stay cheap (a 64-leaf plot, 16 expected work hashes and 64 ticks per
    /// block: about 0.4 ms to create and 0.04 ms to validate a proof in a
    /// release build), while every check still runs for real.
    pub fn for_simulation() -> ProofParams {
        ProofParams {
            space_challenges: 4,
            space_leaves_log2: 6,
            work_difficulty_bits: 4,
            time_min_ticks: 64,
            time_checkpoint_interval_ticks: 16,
            max_drift_ms: 2_000,
        }
    }
}
