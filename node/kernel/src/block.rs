//! The block format: header, body, consensus proof, commit certificate, and
//! the signed consensus statements (votes, proposals) that certificates and
//! evidence are made of.
//!
//! Everything here has one canonical encoding (`hm_wire::encode`) and a named
//! size limit; decoders refuse anything longer before allocating. The block
//! hash covers the header only; the header commits to the body through
//! Merkle roots, so a header plus proofs is enough to check a body.

use hm_env::Entropy;
use hm_wire::{Hash, Signature, SigningKey, WireError, hash, merkle};
use serde::{Deserialize, Serialize};

use crate::proof::ConsensusProof;
use crate::validators::{ValidatorIndex, ValidatorSet};

/// Block format version this build writes and accepts (3: headers name
/// their validator set and the next one).
pub const BLOCK_VERSION: u16 = 3;
/// One transaction's bytes: large enough for a certificate request or a
/// package manifest, small enough that a block of them stays gossipable.
pub const TRANSACTION_BYTES_MAX: usize = 64 << 10;
/// Transactions in one block.
pub const TRANSACTIONS_PER_BLOCK_MAX: usize = 4_096;
/// Sum of transaction bytes in one block.
pub const BLOCK_TRANSACTION_BYTES_MAX: usize = 4 << 20;
/// State updates in one block (the application's write set).
pub const STATE_UPDATES_PER_BLOCK_MAX: usize = 16_384;
/// A state key.
pub const STATE_KEY_BYTES_MAX: usize = 256;
/// A state value.
pub const STATE_VALUE_BYTES_MAX: usize = 64 << 10;
/// Pieces of evidence in one block.
pub const EVIDENCE_PER_BLOCK_MAX: usize = 64;
/// Validators in a set, hence signatures in a commit certificate. FALCON-1024
/// signatures are 1,280 bytes: 256 of them are 320 KiB per certificate.
pub const VALIDATORS_MAX: usize = 256;
/// A whole encoded block (header, body, proof, certificate).
pub const BLOCK_BYTES_MAX: usize = 12 << 20;
/// A whole encoded header. Every field is fixed-width, so every header
/// encodes to the same size (391 bytes at version 3; a test pins that it
/// fits).
pub const HEADER_BYTES_MAX: usize = 1 << 10;

/// Hash domains (one per kind of hashed object, so no two kinds collide).
pub const HEADER_DOMAIN: &str = "hm/block-header/v1";
pub const EVIDENCE_ROOT_DOMAIN: &str = "hm/block-evidence/v1";
pub const UPDATES_ROOT_DOMAIN: &str = "hm/block-updates/v1";
/// Signature domains.
pub const VOTE_SIGN_DOMAIN: &str = "hm/consensus-vote/v1";
pub const PROPOSAL_SIGN_DOMAIN: &str = "hm/consensus-proposal/v1";

pub type Height = u64;
pub type Round = u32;

/// What the validators agree on. The proposer signs it inside the
/// `StakeProof`; its hash is the block hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockHeader {
    pub version: u16,
    /// Hash of the genesis document: separates networks.
    pub chain_id: Hash,
    pub height: Height,
    /// The consensus round the block was proposed in.
    pub round: Round,
    /// Hash of the parent header (`Hash::default()` at height 1's parent,
    /// the genesis).
    pub previous_hash: Hash,
    /// RFC 9162 Merkle root over the transactions' bytes.
    pub transactions_root: Hash,
    /// Merkle root over the encoded state updates.
    pub updates_root: Hash,
    /// Merkle root over the encoded evidence.
    pub evidence_root: Hash,
    /// The application's state root after executing this block; validators
    /// recompute it (part of the WorkProof).
    pub state_root: Hash,
    /// The head of the application's transparency log (RFC 9162) after
    /// this block; validators recompute it. With the commit certificate it
    /// anchors every log entry in consensus.
    pub log_head: LogHead,
    /// Proposer's clock, milliseconds since the Unix epoch; monotone along
    /// the chain, within the max drift of each validator's clock.
    pub timestamp_ms: u64,
    /// Leading zero bits the WorkProof's hash must have.
    pub difficulty: u8,
    /// Output of this block's sequential time chain (TimeProof), so the next
    /// block's chain starts from it.
    pub time_output: Hash,
    /// Iterations in this block's time chain.
    pub time_ticks: u64,
    /// Node id (FALCON key fingerprint) of the proposer.
    pub proposer: Hash,
    /// [`ValidatorSet::hash`] of the set whose precommits certify this
    /// block (Tendermint's `ValidatorsHash`): a light client holding only
    /// headers learns from it which set to check a certificate against.
    pub validators_hash: Hash,
    /// [`ValidatorSet::hash`] of the set that certifies the next block
    /// (Tendermint's `NextValidatorsHash`). The set is fixed by genesis
    /// today, so both name the genesis set.
    pub next_validators_hash: Hash,
}

impl BlockHeader {
    /// The block hash.
    pub fn hash(&self) -> Hash {
        hash(HEADER_DOMAIN, &hm_wire::encode(self))
    }

    /// Checks that the header names `validators_hash` both as its own
    /// validator set and as the next one: what a replica of a chain whose
    /// set never changes (fixed by genesis) requires of every block.
    pub fn check_fixed_validators(&self, validators_hash: &Hash) -> Result<(), BlockError> {
        let named = [
            ("validators_hash", self.validators_hash),
            ("next_validators_hash", self.next_validators_hash),
        ];
        for (field, named) in named {
            if named != *validators_hash {
                return Err(BlockError::WrongValidatorSet {
                    field,
                    named,
                    expected: *validators_hash,
                });
            }
        }
        Ok(())
    }
}

/// The head of an append-only RFC 9162 Merkle log: how many entries it
/// holds and the root over them. An application without a log reports
/// [`LogHead::empty`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LogHead {
    pub size: u64,
    pub root: Hash,
}

impl LogHead {
    /// The head of a log with no entries (RFC 9162: the hash of nothing).
    pub fn empty() -> LogHead {
        LogHead {
            size: 0,
            root: merkle::empty_root(),
        }
    }
}

impl Default for LogHead {
    fn default() -> Self {
        LogHead::empty()
    }
}

/// An opaque transaction: the application decides what it means.
///
/// Byte fields serialize as one byte string (`serde_bytes`): the same wire
/// bytes as a sequence of `u8`, but copied in one piece instead of one
/// serde call per byte — blocks full of 5 KB certificate transactions are
/// encoded, decoded and re-encoded (the canonical check) on every node.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Transaction(#[serde(with = "serde_bytes")] pub Vec<u8>);

impl Transaction {
    /// Transaction id: the RFC 9162 leaf hash of its bytes (the same value
    /// the block's transactions root is built from).
    pub fn id(&self) -> Hash {
        merkle::leaf_hash(&self.0)
    }
}

/// One write of the application state: `value: None` deletes `key`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateUpdate {
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub value: Option<Vec<u8>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum VoteKind {
    Prevote,
    Precommit,
}

/// A validator's vote for `block_hash` (or for nil: no block) at a height
/// and round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vote {
    pub kind: VoteKind,
    pub height: Height,
    pub round: Round,
    pub block_hash: Option<Hash>,
    pub validator: ValidatorIndex,
}

/// A vote and the validator's signature over `(chain_id, vote)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedVote {
    pub vote: Vote,
    pub signature: Signature,
}

impl SignedVote {
    pub fn sign<E: Entropy + ?Sized>(
        chain_id: &Hash,
        vote: Vote,
        key: &SigningKey,
        entropy: &E,
    ) -> SignedVote {
        let signature = key.sign(VOTE_SIGN_DOMAIN, &signing_bytes(chain_id, &vote), entropy);
        SignedVote { vote, signature }
    }

    /// Checks the signer is in `validators` and the signature is theirs.
    pub fn verify(&self, chain_id: &Hash, validators: &ValidatorSet) -> Result<(), BlockError> {
        let validator =
            validators
                .get(self.vote.validator)
                .ok_or(BlockError::UnknownValidator {
                    index: self.vote.validator,
                })?;
        validator
            .key
            .verify(
                VOTE_SIGN_DOMAIN,
                &signing_bytes(chain_id, &self.vote),
                &self.signature,
            )
            .map_err(|_| BlockError::BadSignature {
                what: "vote",
                index: self.vote.validator,
            })
    }
}

/// The signed part of a proposal: the block it proposes, at which height and
/// round, and the proof-of-lock round (`pol_round`) Tendermint carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    pub height: Height,
    pub round: Round,
    pub pol_round: Option<Round>,
    pub block_hash: Hash,
    pub proposer: ValidatorIndex,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedProposal {
    pub proposal: Proposal,
    pub signature: Signature,
}

impl SignedProposal {
    pub fn sign<E: Entropy + ?Sized>(
        chain_id: &Hash,
        proposal: Proposal,
        key: &SigningKey,
        entropy: &E,
    ) -> SignedProposal {
        let signature = key.sign(
            PROPOSAL_SIGN_DOMAIN,
            &signing_bytes(chain_id, &proposal),
            entropy,
        );
        SignedProposal {
            proposal,
            signature,
        }
    }

    pub fn verify(&self, chain_id: &Hash, validators: &ValidatorSet) -> Result<(), BlockError> {
        let index = self.proposal.proposer;
        let validator = validators
            .get(index)
            .ok_or(BlockError::UnknownValidator { index })?;
        validator
            .key
            .verify(
                PROPOSAL_SIGN_DOMAIN,
                &signing_bytes(chain_id, &self.proposal),
                &self.signature,
            )
            .map_err(|_| BlockError::BadSignature {
                what: "proposal",
                index,
            })
    }
}

fn signing_bytes<T: Serialize>(chain_id: &Hash, statement: &T) -> Vec<u8> {
    hm_wire::encode(&(chain_id, statement))
}

/// Proof that a validator signed two conflicting statements at the same
/// height and round. Valid evidence is committed on chain; slashing is the
/// ledger's job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Evidence {
    /// Two votes of the same kind, height and round for different blocks.
    DuplicateVote {
        first: SignedVote,
        second: SignedVote,
    },
    /// Two proposals for the same height and round with different blocks.
    DuplicateProposal {
        first: SignedProposal,
        second: SignedProposal,
    },
}

impl Evidence {
    /// The offending validator.
    pub fn validator(&self) -> ValidatorIndex {
        match self {
            Evidence::DuplicateVote { first, .. } => first.vote.validator,
            Evidence::DuplicateProposal { first, .. } => first.proposal.proposer,
        }
    }

    pub fn height(&self) -> Height {
        match self {
            Evidence::DuplicateVote { first, .. } => first.vote.height,
            Evidence::DuplicateProposal { first, .. } => first.proposal.height,
        }
    }

    /// Identity of the offence, independent of which of the two statements
    /// came first: the same double-sign reported twice has one id.
    pub fn id(&self) -> Hash {
        let (kind, mut parts): (&str, Vec<Vec<u8>>) = match self {
            Evidence::DuplicateVote { first, second } => (
                "vote",
                vec![hm_wire::encode(first), hm_wire::encode(second)],
            ),
            Evidence::DuplicateProposal { first, second } => (
                "proposal",
                vec![hm_wire::encode(first), hm_wire::encode(second)],
            ),
        };
        parts.sort();
        hm_wire::hash_parts(
            "hm/evidence-id/v1",
            &[kind.as_bytes(), &parts[0], &parts[1]],
        )
    }

    /// Checks that both statements are validly signed by the same
    /// validator, for the same height, round (and vote kind), and differ in
    /// the block they name.
    pub fn verify(&self, chain_id: &Hash, validators: &ValidatorSet) -> Result<(), BlockError> {
        match self {
            Evidence::DuplicateVote { first, second } => {
                let (a, b) = (&first.vote, &second.vote);
                if a.validator != b.validator
                    || a.height != b.height
                    || a.round != b.round
                    || a.kind != b.kind
                {
                    return Err(BlockError::BadEvidence(
                        "the two votes are not from one validator for one height, round and kind",
                    ));
                }
                if a.block_hash == b.block_hash {
                    return Err(BlockError::BadEvidence("the two votes do not conflict"));
                }
                first.verify(chain_id, validators)?;
                second.verify(chain_id, validators)
            }
            Evidence::DuplicateProposal { first, second } => {
                let (a, b) = (&first.proposal, &second.proposal);
                if a.proposer != b.proposer || a.height != b.height || a.round != b.round {
                    return Err(BlockError::BadEvidence(
                        "the two proposals are not from one proposer for one height and round",
                    ));
                }
                if a.block_hash == b.block_hash {
                    return Err(BlockError::BadEvidence("the two proposals do not conflict"));
                }
                first.verify(chain_id, validators)?;
                second.verify(chain_id, validators)
            }
        }
    }
}

/// The transactions and evidence of a block.
///
/// The application's write set is not carried: every node re-executes the
/// transactions (validators to vote, followers to apply), and the header's
/// `updates_root` commits to the write set that execution must produce.
/// Shipping it too doubled a block of certificate transactions (each
/// certificate's log entry repeats it) for nothing any node used.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct BlockBody {
    pub transactions: Vec<Transaction>,
    pub evidence: Vec<Evidence>,
}

impl BlockBody {
    pub fn transactions_root(&self) -> Hash {
        merkle::root_from_leaf_hashes(&self.transaction_ids())
    }

    /// The id of every transaction, in order: the leaves of
    /// [`BlockBody::transactions_root`].
    pub fn transaction_ids(&self) -> Vec<Hash> {
        self.transactions.iter().map(Transaction::id).collect()
    }

    pub fn evidence_root(&self) -> Hash {
        encoded_root(EVIDENCE_ROOT_DOMAIN, &self.evidence)
    }

    /// Checks every limit on the body's contents.
    pub fn check_limits(&self) -> Result<(), BlockError> {
        limit(
            "transactions",
            self.transactions.len(),
            TRANSACTIONS_PER_BLOCK_MAX,
        )?;
        let mut total = 0usize;
        for tx in &self.transactions {
            limit("transaction bytes", tx.0.len(), TRANSACTION_BYTES_MAX)?;
            total += tx.0.len();
        }
        limit(
            "block transaction bytes",
            total,
            BLOCK_TRANSACTION_BYTES_MAX,
        )?;
        limit("evidence", self.evidence.len(), EVIDENCE_PER_BLOCK_MAX)
    }
}

/// The root a header commits to for a block's write set (what executing
/// its transactions changes).
pub fn updates_root(updates: &[StateUpdate]) -> Hash {
    encoded_root(UPDATES_ROOT_DOMAIN, updates)
}

/// Checks the limits on a write set produced by executing a block: a block
/// whose execution exceeds them is invalid.
pub fn check_write_set(updates: &[StateUpdate]) -> Result<(), BlockError> {
    limit("state updates", updates.len(), STATE_UPDATES_PER_BLOCK_MAX)?;
    for update in updates {
        limit("state key bytes", update.key.len(), STATE_KEY_BYTES_MAX)?;
        if let Some(value) = &update.value {
            limit("state value bytes", value.len(), STATE_VALUE_BYTES_MAX)?;
        }
    }
    Ok(())
}

/// Merkle root over the canonical encodings of `items`, tagged with the
/// domain so an updates root can never equal an evidence root.
fn encoded_root<T: Serialize>(domain: &str, items: &[T]) -> Hash {
    let leaves: Vec<Vec<u8>> = items.iter().map(hm_wire::encode).collect();
    let refs: Vec<&[u8]> = leaves.iter().map(Vec::as_slice).collect();
    hm_wire::hash_parts(domain, &[merkle::root(&refs).as_bytes()])
}

fn limit(what: &'static str, len: usize, max: usize) -> Result<(), BlockError> {
    if len > max {
        return Err(BlockError::TooLarge { what, len, max });
    }
    Ok(())
}

/// Precommits for one block at one height and round from more than two
/// thirds of the stake: proof the block is final.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitCertificate {
    pub height: Height,
    pub round: Round,
    pub block_hash: Hash,
    /// `(validator index, signature over its precommit)`, strictly
    /// increasing by index.
    pub signatures: Vec<(ValidatorIndex, Signature)>,
}

impl CommitCertificate {
    /// Builds a certificate from precommits for `block_hash`; the caller
    /// collected them (others are ignored). Returns `None` without a quorum.
    pub fn from_precommits<'a>(
        height: Height,
        round: Round,
        block_hash: Hash,
        precommits: impl IntoIterator<Item = &'a SignedVote>,
        validators: &ValidatorSet,
    ) -> Option<CommitCertificate> {
        let mut signatures: Vec<(ValidatorIndex, Signature)> = precommits
            .into_iter()
            .filter(|signed| {
                let vote = &signed.vote;
                vote.kind == VoteKind::Precommit
                    && vote.height == height
                    && vote.round == round
                    && vote.block_hash == Some(block_hash)
            })
            .map(|signed| (signed.vote.validator, signed.signature.clone()))
            .collect();
        signatures.sort_by_key(|(index, _)| *index);
        signatures.dedup_by_key(|(index, _)| *index);
        // Keep the smallest quorum: the heaviest signers first (ties by
        // index). Every block carries its certificate to every node that
        // syncs it, and each FALCON-1024 signature is 1.3 KB, so the
        // precommits beyond a quorum would only cost bandwidth.
        let stake_of = |index: &ValidatorIndex| validators.get(*index).map_or(0, |v| v.stake);
        signatures.sort_by(|(a, _), (b, _)| stake_of(b).cmp(&stake_of(a)).then(a.cmp(b)));
        let mut stake = 0u64;
        let mut needed = signatures.len();
        for (count, (index, _)) in signatures.iter().enumerate() {
            stake += stake_of(index);
            if validators.is_quorum(stake) {
                needed = count + 1;
                break;
            }
        }
        if !validators.is_quorum(stake) {
            return None;
        }
        signatures.truncate(needed);
        signatures.sort_by_key(|(index, _)| *index);
        Some(CommitCertificate {
            height,
            round,
            block_hash,
            signatures,
        })
    }

    /// Checks every signature and that the signers hold more than two
    /// thirds of the stake.
    pub fn verify(&self, chain_id: &Hash, validators: &ValidatorSet) -> Result<(), BlockError> {
        limit(
            "certificate signatures",
            self.signatures.len(),
            VALIDATORS_MAX,
        )?;
        let mut stake = 0u64;
        let mut previous: Option<ValidatorIndex> = None;
        for (index, signature) in &self.signatures {
            if previous.is_some_and(|p| p >= *index) {
                return Err(BlockError::BadCertificate(
                    "signers are not strictly increasing by validator index",
                ));
            }
            previous = Some(*index);
            let signed = SignedVote {
                vote: Vote {
                    kind: VoteKind::Precommit,
                    height: self.height,
                    round: self.round,
                    block_hash: Some(self.block_hash),
                    validator: *index,
                },
                signature: signature.clone(),
            };
            signed.verify(chain_id, validators)?;
            stake += validators.get(*index).map_or(0, |v| v.stake);
        }
        if !validators.is_quorum(stake) {
            return Err(BlockError::NoQuorum {
                stake,
                total: validators.total_stake(),
            });
        }
        Ok(())
    }
}

/// A proposed block: header, body and the proposer's four proofs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProposedBlock {
    pub header: BlockHeader,
    pub body: BlockBody,
    pub proof: ConsensusProof,
}

impl ProposedBlock {
    pub fn hash(&self) -> Hash {
        self.header.hash()
    }

    /// Checks what can be checked without state: version, body limits, and
    /// that the header's roots commit to this body.
    pub fn check_structure(&self, chain_id: &Hash) -> Result<(), BlockError> {
        check_structure(&self.header, &self.body, chain_id).map(|_| ())
    }

    pub fn decode(bytes: &[u8]) -> Result<ProposedBlock, BlockError> {
        let block: ProposedBlock = hm_wire::decode(bytes, BLOCK_BYTES_MAX)?;
        block.body.check_limits()?;
        block.proof.check_limits().map_err(BlockError::Proof)?;
        Ok(block)
    }
}

/// [`ProposedBlock::check_structure`] of a header and body wherever they
/// are; returns the transaction ids, which the check computes anyway.
pub fn check_structure(
    header: &BlockHeader,
    body: &BlockBody,
    chain_id: &Hash,
) -> Result<Vec<Hash>, BlockError> {
    if header.version != BLOCK_VERSION {
        return Err(BlockError::Version {
            version: header.version,
        });
    }
    if header.chain_id != *chain_id {
        return Err(BlockError::WrongChain);
    }
    body.check_limits()?;
    let ids = body.transaction_ids();
    let roots = [
        (
            "transactions",
            header.transactions_root,
            merkle::root_from_leaf_hashes(&ids),
        ),
        ("evidence", header.evidence_root, body.evidence_root()),
    ];
    for (what, claimed, actual) in roots {
        if claimed != actual {
            return Err(BlockError::RootMismatch { what });
        }
    }
    Ok(ids)
}

/// A committed block: what the chain stores and followers sync.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    pub header: BlockHeader,
    pub body: BlockBody,
    pub proof: ConsensusProof,
    pub commit: CommitCertificate,
}

impl Block {
    pub fn hash(&self) -> Hash {
        self.header.hash()
    }

    pub fn encode(&self) -> Vec<u8> {
        hm_wire::encode(self)
    }

    /// Decodes a block from untrusted bytes: bounded, canonical, limits
    /// checked. Signatures and proofs are checked by the chain.
    pub fn decode(bytes: &[u8]) -> Result<Block, BlockError> {
        let block: Block = hm_wire::decode(bytes, BLOCK_BYTES_MAX)?;
        block.body.check_limits()?;
        block.proof.check_limits().map_err(BlockError::Proof)?;
        if block.commit.signatures.len() > VALIDATORS_MAX {
            return Err(BlockError::TooLarge {
                what: "certificate signatures",
                len: block.commit.signatures.len(),
                max: VALIDATORS_MAX,
            });
        }
        Ok(block)
    }

    /// Checks structure, that the certificate is for this block, and the
    /// certificate's signatures and quorum.
    pub fn verify_commit(
        &self,
        chain_id: &Hash,
        validators: &ValidatorSet,
    ) -> Result<(), BlockError> {
        check_structure(&self.header, &self.body, chain_id)?;
        self.verify_certificate(chain_id, validators)
    }

    /// The certificate half of [`Block::verify_commit`]: that it is for
    /// this block, its signatures and quorum (structure not checked).
    pub fn verify_certificate(
        &self,
        chain_id: &Hash,
        validators: &ValidatorSet,
    ) -> Result<(), BlockError> {
        if self.commit.block_hash != self.hash() || self.commit.height != self.header.height {
            return Err(BlockError::BadCertificate(
                "the certificate is for another block or height",
            ));
        }
        self.commit.verify(chain_id, validators)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("{what} is {len}, more than the limit of {max}; the block is invalid")]
    TooLarge {
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error(
        "block version {version} is not supported (this build speaks {BLOCK_VERSION}); upgrade the node"
    )]
    Version { version: u16 },
    #[error("the block belongs to another chain (chain id differs from our genesis)")]
    WrongChain,
    #[error("the header's {what} root does not match the body")]
    RootMismatch { what: &'static str },
    #[error("validator index {index} is not in the validator set")]
    UnknownValidator { index: ValidatorIndex },
    #[error("the {what} signature of validator {index} does not verify")]
    BadSignature {
        what: &'static str,
        index: ValidatorIndex,
    },
    #[error("invalid evidence: {0}")]
    BadEvidence(&'static str),
    #[error("invalid commit certificate: {0}")]
    BadCertificate(&'static str),
    #[error("consensus proof: {0}")]
    Proof(crate::proof::ProofError),
    #[error("commit certificate signers hold {stake} of {total} stake, not more than two thirds")]
    NoQuorum { stake: u64, total: u64 },
    #[error(
        "the header's {field} is {named}, but this chain's validator set hashes to {expected}; the block was built for another validator set and is invalid"
    )]
    WrongValidatorSet {
        field: &'static str,
        named: Hash,
        expected: Hash,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use hm_env::mem::SeededEntropy;

    #[test]
    fn byte_fields_keep_the_wire_form_of_a_byte_sequence() {
        // The layout before `serde_bytes`: every byte a sequence element.
        #[derive(Serialize)]
        struct PlainUpdate {
            key: Vec<u8>,
            value: Option<Vec<u8>>,
        }
        let key = vec![1, 2, 3, 250];
        for value in [None, Some(Vec::new()), Some(vec![9; 300])] {
            let update = StateUpdate {
                key: key.clone(),
                value: value.clone(),
            };
            let encoded = hm_wire::encode(&update);
            assert_eq!(
                encoded,
                hm_wire::encode(&PlainUpdate {
                    key: key.clone(),
                    value
                })
            );
            assert_eq!(
                hm_wire::decode::<StateUpdate>(&encoded, 1024).expect("decodes"),
                update
            );
        }
        let transaction = Transaction(vec![7; 1000]);
        let encoded = hm_wire::encode(&transaction);
        assert_eq!(encoded, hm_wire::encode(&vec![7u8; 1000]));
        assert_eq!(
            hm_wire::decode::<Transaction>(&encoded, 2048).expect("decodes"),
            transaction
        );
        // A length prefix past the input is refused, not allocated.
        let mut hostile = encoded.clone();
        hostile[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(hm_wire::decode::<Transaction>(&hostile, 2048).is_err());
    }

    #[test]
    fn a_certificate_keeps_the_smallest_quorum_heaviest_first() {
        let entropy = SeededEntropy::new(4, b"certificate-test");
        let keys: Vec<SigningKey> = (0..4).map(|_| SigningKey::generate(&entropy)).collect();
        let stakes = [1, 2, 3, 4];
        let set = ValidatorSet::new(
            keys.iter()
                .zip(stakes)
                .map(|(key, stake)| (key.verifying_key(), stake)),
        )
        .expect("set");
        let chain_id = hash("test", b"chain");
        let block_hash = hash("test", b"block");
        let precommits: Vec<SignedVote> = keys
            .iter()
            .map(|key| {
                let index = set
                    .index_of(&key.verifying_key().fingerprint())
                    .expect("member");
                SignedVote::sign(
                    &chain_id,
                    Vote {
                        kind: VoteKind::Precommit,
                        height: 5,
                        round: 1,
                        block_hash: Some(block_hash),
                        validator: index,
                    },
                    key,
                    &entropy,
                )
            })
            .collect();
        let certificate = CommitCertificate::from_precommits(5, 1, block_hash, &precommits, &set)
            .expect("a quorum");
        // 4 + 3 = 7 of 10 is more than two thirds; nothing else is needed.
        let kept: Vec<u64> = certificate
            .signatures
            .iter()
            .map(|(index, _)| set.get(*index).expect("member").stake)
            .collect();
        let mut sorted = kept.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, [3, 4], "{kept:?}");
        assert!(
            certificate
                .signatures
                .windows(2)
                .all(|pair| pair[0].0 < pair[1].0),
            "signers by index"
        );
        certificate
            .verify(&chain_id, &set)
            .expect("still a valid certificate");
        // Without the two heaviest there is no quorum (1 + 2 = 3 of 10).
        assert!(
            CommitCertificate::from_precommits(5, 1, block_hash, &precommits[..2], &set).is_none()
        );
    }

    fn any_header() -> BlockHeader {
        BlockHeader {
            version: BLOCK_VERSION,
            chain_id: Hash([1; 32]),
            height: u64::MAX,
            round: u32::MAX,
            previous_hash: Hash([2; 32]),
            transactions_root: Hash([3; 32]),
            updates_root: Hash([4; 32]),
            evidence_root: Hash([5; 32]),
            state_root: Hash([6; 32]),
            log_head: LogHead {
                size: u64::MAX,
                root: Hash([7; 32]),
            },
            timestamp_ms: u64::MAX,
            difficulty: u8::MAX,
            time_output: Hash([8; 32]),
            time_ticks: u64::MAX,
            proposer: Hash([9; 32]),
            validators_hash: Hash([10; 32]),
            next_validators_hash: Hash([10; 32]),
        }
    }

    #[test]
    fn every_header_encodes_to_one_size_within_the_limit() {
        let header = any_header();
        let encoded = hm_wire::encode(&header);
        assert_eq!(encoded.len(), 391, "fixed-width fields: one size");
        assert!(encoded.len() <= HEADER_BYTES_MAX);
        let decoded: BlockHeader = hm_wire::decode(&encoded, HEADER_BYTES_MAX).expect("decodes");
        assert_eq!(decoded, header);
    }

    #[test]
    fn a_header_must_name_the_fixed_set_twice() {
        let header = any_header();
        header
            .check_fixed_validators(&Hash([10; 32]))
            .expect("names the set as current and next");
        let error = header
            .check_fixed_validators(&Hash([11; 32]))
            .expect_err("another set");
        assert!(matches!(
            error,
            BlockError::WrongValidatorSet {
                field: "validators_hash",
                ..
            }
        ));
        let mut next_differs = header.clone();
        next_differs.next_validators_hash = Hash([11; 32]);
        assert!(matches!(
            next_differs.check_fixed_validators(&Hash([10; 32])),
            Err(BlockError::WrongValidatorSet {
                field: "next_validators_hash",
                ..
            })
        ));
        assert!(
            error.to_string().contains("another validator set"),
            "{error}"
        );
    }

    #[test]
    fn a_write_set_is_committed_by_its_root_and_bounded() {
        let update = |key: &[u8], value: Option<&[u8]>| StateUpdate {
            key: key.to_vec(),
            value: value.map(<[u8]>::to_vec),
        };
        let set = vec![update(b"a", Some(b"1")), update(b"b", None)];
        assert_eq!(updates_root(&set), updates_root(&set.clone()));
        let mut changed = set.clone();
        changed[1].value = Some(Vec::new());
        assert_ne!(
            updates_root(&set),
            updates_root(&changed),
            "a delete is not an empty value"
        );
        assert_ne!(updates_root(&set), updates_root(&set[..1]));
        // Never equal to an evidence root over the same encodings.
        assert_ne!(updates_root(&[]), BlockBody::default().evidence_root());
        check_write_set(&set).expect("within limits");
        let long_key = vec![update(&[0; STATE_KEY_BYTES_MAX + 1], None)];
        assert!(matches!(
            check_write_set(&long_key),
            Err(BlockError::TooLarge {
                what: "state key bytes",
                ..
            })
        ));
        let big_value = vec![update(b"k", Some(&vec![0; STATE_VALUE_BYTES_MAX + 1]))];
        assert!(check_write_set(&big_value).is_err());
        let many: Vec<StateUpdate> = (0..=STATE_UPDATES_PER_BLOCK_MAX as u32)
            .map(|index| update(&index.to_be_bytes(), None))
            .collect();
        assert!(check_write_set(&many).is_err());
    }

    /// Golden vectors: the bytes every node and every stored block depend
    /// on. A change to any encoding, domain tag or field order changes these
    /// hashes and so forks old chains from new nodes; it must be deliberate
    /// (a new version), never a side effect. Keys come from a fixed seed, so
    /// FALCON key generation is pinned too. Version 3 (the validator-set
    /// hashes in the header) changed the block hash and vote preimage, and
    /// added the validator-set hash.
    #[test]
    fn golden_vectors_pin_the_chain_id_validator_set_block_hash_and_vote_preimage() {
        use crate::genesis::{Genesis, GenesisValidator, ProofParams};
        let key = SigningKey::generate(&SeededEntropy::new(7, b"golden-vector-key"));
        let genesis = Genesis {
            chain_name: "golden".into(),
            genesis_time_ms: 1_700_000_000_000,
            validators: vec![GenesisValidator {
                key: key.verifying_key(),
                stake: 100,
                space_root: Hash([3; 32]),
            }],
            proof: ProofParams {
                space_challenges: 4,
                space_leaves_log2: 8,
                work_difficulty_bits: 2,
                time_min_ticks: 16,
                time_checkpoint_interval_ticks: 4,
                max_drift_ms: 5_000,
            },
        };
        let chain_id = genesis.chain_id();
        let set_hash = genesis.validator_set().expect("set").hash();
        let header = BlockHeader {
            version: BLOCK_VERSION,
            chain_id,
            height: 7,
            round: 2,
            previous_hash: Hash([1; 32]),
            transactions_root: Hash([2; 32]),
            updates_root: Hash([4; 32]),
            evidence_root: Hash([5; 32]),
            state_root: Hash([6; 32]),
            log_head: LogHead {
                size: 9,
                root: Hash([8; 32]),
            },
            timestamp_ms: 1_700_000_000_123,
            difficulty: 2,
            time_output: Hash([10; 32]),
            time_ticks: 16,
            proposer: key.verifying_key().fingerprint(),
            validators_hash: set_hash,
            next_validators_hash: set_hash,
        };
        let vote = Vote {
            kind: VoteKind::Precommit,
            height: 7,
            round: 2,
            block_hash: Some(header.hash()),
            validator: 0,
        };
        let vote_preimage = hm_wire::hash("golden-vector", &signing_bytes(&chain_id, &vote));
        let signed = SignedVote::sign(
            &chain_id,
            vote,
            &key,
            &SeededEntropy::new(7, b"golden-vector-signature"),
        );
        assert!(
            signed
                .verify(&chain_id, &genesis.validator_set().expect("set"))
                .is_ok()
        );
        let got = [
            key.verifying_key().fingerprint().to_string(),
            chain_id.to_string(),
            set_hash.to_string(),
            header.hash().to_string(),
            vote_preimage.to_string(),
        ];
        let want = [
            "7a70f57572fde4ef68a98f91710d065c8af102d89189d26b333b5f1ab1e3943e",
            "b2342e8b7438f6d52f5a6fb7a482228b7f7becb79637a3db5bf15d03744fe7b6",
            "7b69bd0ec682426c6a0dedfdd267f5a4cbc3abe691bac7ae98b63bed82abd850",
            "4fac6db594e652ad6a04c014bc7b612c21aae94a594eb14a8072d985a3930872",
            "db697046ac7c93c1533fd0df13f0a30e574c37d4046ec213c9558eaa7e0c5e41",
        ];
        assert_eq!(got, want);
    }
}
