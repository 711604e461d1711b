//! The genesis document: the chain's name, its first validators and the
//! parameters every node must agree on. Its hash is the chain id.

use hm_wire::{Hash, VerifyingKey, WireError, hash};
use serde::{Deserialize, Serialize};

use crate::block::VALIDATORS_MAX;
use crate::validators::{ValidatorSet, ValidatorSetError};

pub const GENESIS_DOMAIN: &str = "hm/genesis/v1";
/// An encoded genesis (256 validators × ~1.8 KiB keys, plus parameters).
pub const GENESIS_BYTES_MAX: usize = 1 << 20;
/// Chain name length.
pub const CHAIN_NAME_BYTES_MAX: usize = 64;

/// Parameters of the four proofs. The simulator picks small values; the
/// real node's defaults are [`ProofParams::production`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProofParams {
    /// Leaves challenged per space proof (k).
    pub space_challenges: u32,
    /// log2 of the leaves in each validator's space plot.
    pub space_leaves_log2: u8,
    /// Leading zero bits the work hash must have.
    pub work_difficulty_bits: u8,
    /// Minimum sequential SHA-256 iterations per block's time chain.
    pub time_min_ticks: u64,
    /// Ticks between time-chain checkpoints (verification parallelism).
    pub time_checkpoint_interval_ticks: u64,
    /// How far a block's timestamp may be ahead of a validator's clock.
    pub max_drift_ms: u64,
}

/// One genesis validator: its FALCON-1024 key, stake and the root of its
/// registered space commitment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenesisValidator {
    pub key: VerifyingKey,
    pub stake: u64,
    pub space_root: Hash,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Genesis {
    pub chain_name: String,
    /// Timestamp of the (virtual) block 0, milliseconds since the Unix epoch.
    pub genesis_time_ms: u64,
    pub validators: Vec<GenesisValidator>,
    pub proof: ProofParams,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GenesisError {
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error(transparent)]
    Validators(#[from] ValidatorSetError),
    #[error("chain_name must be 1..={CHAIN_NAME_BYTES_MAX} bytes")]
    ChainName,
    #[error("genesis has {count} validators, more than {VALIDATORS_MAX}")]
    TooManyValidators { count: usize },
    #[error("proof parameter {name} is {value}; expected {expected}")]
    BadParam {
        name: &'static str,
        value: u64,
        expected: &'static str,
    },
}

impl Genesis {
    /// The chain id: hash of the canonical encoding.
    pub fn chain_id(&self) -> Hash {
        hash(GENESIS_DOMAIN, &hm_wire::encode(self))
    }

    pub fn validator_set(&self) -> Result<ValidatorSet, GenesisError> {
        Ok(ValidatorSet::new(
            self.validators.iter().map(|v| (v.key.clone(), v.stake)),
        )?)
    }

    /// The registered space root of the validator with node id `id`.
    pub fn space_root(&self, id: &Hash) -> Option<Hash> {
        self.validators
            .iter()
            .find(|v| v.key.fingerprint() == *id)
            .map(|v| v.space_root)
    }

    /// Checks every field; run on a genesis read from a file or the network.
    pub fn check(&self) -> Result<(), GenesisError> {
        if self.chain_name.is_empty() || self.chain_name.len() > CHAIN_NAME_BYTES_MAX {
            return Err(GenesisError::ChainName);
        }
        if self.validators.len() > VALIDATORS_MAX {
            return Err(GenesisError::TooManyValidators {
                count: self.validators.len(),
            });
        }
        self.validator_set()?;
        self.proof.check()
    }

    pub fn decode(bytes: &[u8]) -> Result<Genesis, GenesisError> {
        let genesis: Genesis = hm_wire::decode(bytes, GENESIS_BYTES_MAX)?;
        genesis.check()?;
        Ok(genesis)
    }
}

impl ProofParams {
    fn check(&self) -> Result<(), GenesisError> {
        let bad = |name, value: u64, expected| {
            Err(GenesisError::BadParam {
                name,
                value,
                expected,
            })
        };
        let challenges = u64::from(self.space_challenges);
        if challenges == 0 || challenges > crate::proof::SPACE_CHALLENGES_MAX as u64 {
            return bad("space_challenges", challenges, "1..=64");
        }
        if self.space_leaves_log2 < 4 || self.space_leaves_log2 > 32 {
            return bad("space_leaves_log2", self.space_leaves_log2.into(), "4..=32");
        }
        if self.work_difficulty_bits > 40 {
            return bad(
                "work_difficulty_bits",
                self.work_difficulty_bits.into(),
                "0..=40",
            );
        }
        if self.time_checkpoint_interval_ticks == 0 {
            return bad("time_checkpoint_interval_ticks", 0, "at least 1");
        }
        let checkpoints = self
            .time_min_ticks
            .div_ceil(self.time_checkpoint_interval_ticks);
        if self.time_min_ticks == 0 || checkpoints > crate::proof::TIME_CHECKPOINTS_MAX as u64 {
            return bad(
                "time_min_ticks",
                self.time_min_ticks,
                "at least 1 and at most 4096 checkpoint intervals",
            );
        }
        Ok(())
    }
}

impl Genesis {
    /// A genesis for `validators` (key, stake), plotting each validator's
    /// space at the genesis nonce and registering its root. Returns the
    /// plots in `validators` order (each validator keeps its own). Used by
    /// genesis tooling, the simulator and tests.
    pub fn with_plots(
        chain_name: &str,
        genesis_time_ms: u64,
        validators: &[(VerifyingKey, u64)],
        proof: ProofParams,
    ) -> Result<(Genesis, Vec<crate::proof::SpacePlot>), crate::proof::SpaceError> {
        let plots = validators
            .iter()
            .map(|(key, _)| {
                crate::proof::SpacePlot::generate(
                    &key.fingerprint(),
                    crate::proof::GENESIS_PLOT_NONCE,
                    proof.space_leaves_log2,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        let genesis = Genesis {
            chain_name: chain_name.to_string(),
            genesis_time_ms,
            validators: validators
                .iter()
                .zip(&plots)
                .map(|((key, stake), plot)| GenesisValidator {
                    key: key.clone(),
                    stake: *stake,
                    space_root: plot.root(),
                })
                .collect(),
            proof,
        };
        Ok((genesis, plots))
    }
}
