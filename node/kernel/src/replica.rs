//! One node's part in the chain, as a sans-I/O state machine: the
//! consensus core (validators only), block building and validation with the
//! four proofs, execution through the [`Application`], the mempool, the
//! evidence pool, committed storage and block sync.
//!
//! The shell feeds it messages from peers and the time; it answers with
//! messages to send and events to report ([`ReplicaOutput`]). Followers run
//! the same code without a core: they learn blocks by sync and check each
//! block's commit certificate, proofs and execution before appending it.
//!
//! Block propagation is announce-then-pull: a node that commits or appends a
//! block tells its height (`Status`) to the peers not known to hold it, and
//! peers behind ask for the blocks they miss (`GetBlocks`), one request at a
//! time. Nodes never push
//! whole blocks unasked, so a block crosses each link at most once.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use hm_env::{Disk, Entropy, WriteBatch};
use hm_wire::{Hash, SigningKey};
use serde::{Deserialize, Serialize};

use crate::accountability;
use crate::app::{Application, BlockContext, Execution};
use crate::block::{
    self, BLOCK_BYTES_MAX, BLOCK_TRANSACTION_BYTES_MAX, BLOCK_VERSION, Block, BlockBody,
    BlockHeader, CommitCertificate, EVIDENCE_PER_BLOCK_MAX, Evidence, Height, ProposedBlock, Round,
    SignedProposal, SignedVote, TRANSACTIONS_PER_BLOCK_MAX, Transaction,
};
use crate::chain::{CHAIN_COLUMN_FAMILIES, ChainError, ChainStore};
use crate::consensus::{
    ConsensusMessage, ConsensusParams, ConsensusSigner, Core, CoreError, Input, Output, Timeout,
};
use crate::genesis::Genesis;
use crate::light::{Conflict, LightError, Misbehaviour};
use crate::mempool::{Mempool, MempoolError};
use crate::proof::{self, BlockProver, ParentInfo, ProofContext, SpacePlot};
use crate::validators::{ValidatorIndex, ValidatorSet};

/// Column family of the committed-evidence index.
pub const EVIDENCE_CF: &str = "evidence";
/// Column families the replica needs on its disk (the chain's, the
/// evidence index, and the consensus signer's).
pub const REPLICA_COLUMN_FAMILIES: &[&str] = &[
    crate::chain::BLOCKS_CF,
    crate::chain::BLOCK_COMMITS_CF,
    crate::chain::CHAIN_META_CF,
    crate::chain::PRIVATE_BLOCKS_CF,
    EVIDENCE_CF,
    crate::consensus::SIGNER_COLUMN_FAMILY,
];
const _: () = assert!(CHAIN_COLUMN_FAMILIES.len() == 4);

/// A chain message on the wire: a block plus sync overhead.
pub const CHAIN_MESSAGE_BYTES_MAX: usize = BLOCK_BYTES_MAX + (1 << 20);
/// Transactions in one gossip message.
pub const TRANSACTIONS_PER_MESSAGE_MAX: usize = 256;
/// A validator hands a transaction that reached it from outside the
/// committee to the round-0 proposers of this many upcoming heights.
/// Validators do not gossip transactions among themselves, and the draw
/// makes any one validator the proposer of 1/n of the heights: a
/// transaction that reached two or three of 64 validators waited ~20
/// heights for one of them to propose (longer when those were Byzantine).
pub const TX_PROPOSERS_AHEAD: u64 = 3;
/// Peers a follower linked to no validator relays someone else's
/// transactions to ([`Destination::TowardValidators`]). Its own go to all
/// its peers; a relayed one goes on as a few random walks until a node
/// linked to a validator takes it there. Flooding every relayed
/// transaction to every peer could put a copy of it in most followers'
/// mempools (in the 1,000-node headline, after the crash: 1.04 M
/// transaction messages instead of 0.43 M).
pub const TX_RELAY_PEERS: usize = 2;
/// Blocks in one sync response, and their total encoded bytes.
pub const SYNC_BLOCKS_MAX: usize = 16;
pub const SYNC_RESPONSE_BYTES_MAX: usize = 8 << 20;
/// The newest committed blocks kept decoded in memory to serve sync
/// requests: followers a block or two behind ask for exactly these, and
/// reading them back from the store means decompressing and decoding the
/// same block once per asking peer.
pub const RECENT_BLOCKS_KEPT: usize = 2;
/// Blocks kept for heights not yet committed (proposals of the current and
/// next height, from every proposer and round).
pub const PENDING_BLOCKS_MAX: usize = 64;
/// Proposals for the next height kept until the core gets there.
pub const DEFERRED_PROPOSALS_MAX: usize = 16;
/// Key prefix, in the signer's column family, of the proposed blocks a
/// validator may vote for, kept until their height commits; then the
/// height (8 bytes, big-endian) and the block hash. A validator that
/// locked on a block and crashed must still hold the block afterwards, or
/// it could neither propose it again nor commit it, and a committee locked
/// on a block none of them holds any more stalls for good.
const PENDING_BLOCK_PREFIX: &[u8] = b"pending-block/";
/// Key prefix, in the signer's column family, of transactions a client
/// submitted here, kept (synced) before the submission is acknowledged and
/// until they commit, then the transaction id: an acknowledged transaction
/// survives a crash of the node that acknowledged it, which sends it to
/// the validators again when it restarts.
const CLIENT_TX_PREFIX: &[u8] = b"client-tx/";
/// Client transactions kept on disk at once; past it, submissions are
/// refused until some commit.
pub const CLIENT_TXS_KEPT_MAX: usize = 10_000;
/// Proposed blocks kept on disk at once (a few rounds' proposals; a
/// Byzantine proposer's extra ones beyond this are not kept, and voted for
/// only if the signer's write makes them durable anyway).
pub const PENDING_BLOCKS_ON_DISK_MAX: usize = 16;
/// Verified evidence waiting for a block.
pub const EVIDENCE_POOL_MAX: usize = 256;
/// Peers whose announced height is remembered.
pub const PEER_HEIGHTS_MAX: usize = 1_024;
/// Outputs queued before the shell drains them; the replica asserts it
/// never needs more (every input produces a bounded number).
pub const OUTPUTS_MAX: usize = 4_096;
/// Misbehaviour descriptions are cut to this length.
const REPORT_BYTES_MAX: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChainMessage {
    /// A proposal with its block (validators to validators).
    Proposal {
        signed: SignedProposal,
        block: Box<ProposedBlock>,
    },
    Vote(SignedVote),
    Evidence(Evidence),
    Transactions(Vec<Transaction>),
    /// "My committed height is this": sent after every new block and
    /// periodically; a peer behind answers with `GetBlocks`.
    Status {
        height: Height,
    },
    GetBlocks {
        from: Height,
        count: u16,
    },
    Blocks(Vec<Block>),
}

impl ChainMessage {
    /// Decodes a message from a peer: bounded, canonical, counts checked.
    pub fn decode(bytes: &[u8]) -> Result<ChainMessage, hm_wire::WireError> {
        let message: ChainMessage = hm_wire::decode(bytes, CHAIN_MESSAGE_BYTES_MAX)?;
        let too_many = |what, len, max| Err(hm_wire::WireError::TooLarge { what, len, max });
        match &message {
            ChainMessage::Transactions(txs) if txs.len() > TRANSACTIONS_PER_MESSAGE_MAX => {
                too_many(
                    "transactions in a message",
                    txs.len(),
                    TRANSACTIONS_PER_MESSAGE_MAX,
                )
            }
            ChainMessage::Blocks(blocks) if blocks.len() > SYNC_BLOCKS_MAX => {
                too_many("blocks in a message", blocks.len(), SYNC_BLOCKS_MAX)
            }
            _ => Ok(message),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        hm_wire::encode(self)
    }

    /// Short name for logs and counters.
    pub fn kind(&self) -> &'static str {
        match self {
            ChainMessage::Proposal { .. } => "proposal",
            ChainMessage::Vote(_) => "vote",
            ChainMessage::Evidence(_) => "evidence",
            ChainMessage::Transactions(_) => "transactions",
            ChainMessage::Status { .. } => "status",
            ChainMessage::GetBlocks { .. } => "get_blocks",
            ChainMessage::Blocks(_) => "blocks",
        }
    }
}

/// Where a message goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// Every validator (but us) the node is linked to; a follower linked
    /// to none sends to all its peers, which relay.
    Validators,
    /// Like `Validators` for a transaction the node relays for someone
    /// else: a follower linked to no validator sends it to at most
    /// [`TX_RELAY_PEERS`] of its peers, not back to `from`.
    TowardValidators { from: Hash },
    /// The peers the shell is connected to (the membership overlay).
    Peers,
    /// The connected peers that are not validators. Validators learn of
    /// each other's commits through consensus, so news meant for block
    /// sync skips them.
    Followers,
    /// The `Followers` not known to hold `height` yet: news of a commit
    /// skips the peers that announced it (or more) to us first. On a link
    /// between two followers only the one that got there first speaks,
    /// instead of both, once per height.
    FollowersBehind { height: Height },
    /// The `Peers` not known to hold `height` yet (the periodic
    /// announcement, for peers that missed the news).
    PeersBehind { height: Height },
    /// One node.
    Peer(Hash),
}

/// What a replica made of a light client's misbehaviour evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MisbehaviourVerdict {
    pub conflict: Conflict,
    /// Node ids of the validators proven to have double-signed (a fork
    /// within one round): their duplicate votes go on chain.
    pub convicted: Vec<Hash>,
    /// Node ids of the validators that signed both headers of a fork
    /// across rounds (amnesia suspects: see [`crate::accountability`]).
    pub suspects: Vec<Hash>,
    /// Duplicate votes newly pooled for the chain to commit (those already
    /// pooled or committed add none).
    pub pooled: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicaOutput {
    Send {
        to: Destination,
        message: ChainMessage,
    },
    /// A block was committed (by consensus or sync) and is durable.
    Committed {
        height: Height,
        round: Round,
        block_hash: Hash,
        transactions: usize,
        /// The block's evidence, for the node's monitor.
        evidence: Vec<Evidence>,
        /// When this block is our own proposal, the time from deciding to
        /// propose it to committing it (the latency consensus adds).
        proposal_to_commit_ms: Option<u64>,
        /// The certificate-log head after this block (its header's).
        log_head: crate::block::LogHead,
    },
    /// A peer or validator did something wrong; for logs and peer scoring.
    Misbehaviour { peer: Option<Hash>, what: String },
    /// This replica cannot go on (a decided block could not be made
    /// durable or applied): its memory is ahead of its disk. The shell must
    /// stop it; started again, it recovers from its disk and syncs the rest.
    Failed { reason: String },
}

/// Tuning of one replica (the consensus parameters must match across
/// validators for liveness, not for safety).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaConfig {
    pub consensus: ConsensusParams,
    /// Transactions a proposer puts in one block.
    pub block_transactions_max: usize,
    /// Threads the time-proof check may use (1 in the simulator).
    pub verify_parallelism: usize,
    /// Period of the `Status` announcement to peers.
    pub status_interval_ms: u64,
    /// A sync request unanswered for this long is given up.
    pub sync_timeout_ms: u64,
    /// A proposer waits this long after the previous commit before building
    /// its block (Tendermint's `timeout_commit`): transactions gather into
    /// fewer, fuller blocks instead of a stream of near-empty ones. Keep it
    /// below the propose timeout so others wait for the proposal.
    pub block_interval_ms: u64,
    /// Committed transactions remembered by id (for
    /// [`Replica::transaction_status`]: a client waiting for its commit),
    /// newest blocks first; 0 keeps none (the simulator's thousands of
    /// nodes need no receipts).
    pub committed_index_max: usize,
}

impl Default for ReplicaConfig {
    fn default() -> Self {
        ReplicaConfig {
            consensus: ConsensusParams::default(),
            block_transactions_max: 1_000,
            verify_parallelism: 1,
            status_interval_ms: 5_000,
            sync_timeout_ms: 3_000,
            block_interval_ms: 1_000,
            committed_index_max: COMMITTED_INDEX_DEFAULT,
        }
    }
}

/// [`ReplicaConfig::committed_index_max`] by default: ~7 MB of ids, hours
/// of a busy chain.
pub const COMMITTED_INDEX_DEFAULT: usize = 100_000;

/// Where a transaction stands on this node ([`Replica::transaction_status`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TransactionStatus {
    /// In a committed block at this height: final.
    Committed { height: Height },
    /// In this node's mempool: admitted, not committed, and not durable (a
    /// restart of this node forgets it unless another node holds it).
    Pending,
    /// Neither: never seen here, dropped from the mempool, or committed
    /// longer ago than the index remembers.
    Unknown,
}

/// A validator's secrets: its consensus signer (double-sign protected), a
/// key for block (stake-proof) signatures and its space plot.
pub struct ValidatorIdentity<S: ConsensusSigner> {
    pub signer: S,
    pub block_key: SigningKey,
    pub plot: SpacePlot,
}

/// The time as the replica sees it: a monotone clock for timers and the
/// wall clock for block timestamps and drift checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    pub mono_ms: u64,
    pub wall_ms: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error(transparent)]
    Chain(#[from] ChainError),
    #[error("the genesis is invalid: {0}")]
    Genesis(#[from] crate::genesis::GenesisError),
    #[error(transparent)]
    Core(#[from] CoreError),
    #[error(
        "committed block {height} is missing below the head {head} on this node's disk; \
         restore the data directory from a backup, or move it aside so the node syncs the chain \
         from its peers"
    )]
    MissingBelowHead { height: Height, head: Height },
    #[error(
        "replaying committed block {height} into the application failed: {reason}; \
         restore the data directory from a backup, or move it aside so the node syncs the chain \
         from its peers"
    )]
    ReplayFailed { height: Height, reason: String },
    /// Re-executing a committed block gave other state than its header
    /// commits to: the disk or the application's code differs from what
    /// committed it.
    #[error(
        "replaying committed block {height} gives {what} {replayed}, but the block commits to \
         {committed}; this node's chain on disk, or the build running it, differs from the one \
         that committed it: run the network's release, or move the data directory aside so the \
         node syncs the chain from its peers"
    )]
    ReplayMismatch {
        height: Height,
        /// Which root: "write-set root", "state root" or "log head root".
        what: &'static str,
        committed: Hash,
        replayed: Hash,
    },
    #[error("the validator's space plot does not belong to its key: {0}")]
    Plot(String),
}

/// A block seen for a height not yet committed, with the verdict once
/// judged.
struct PendingBlock {
    block: ProposedBlock,
    /// `Some(Ok)` once validated (with its execution), `Some(Err)` when
    /// invalid.
    verdict: Option<Result<Validated, String>>,
}

/// What validating a block worked out that committing it uses.
struct Validated {
    execution: Execution,
    /// [`Transaction::id`] of each transaction (the mempool forgets them).
    transaction_ids: Vec<Hash>,
}

struct SyncRequest {
    peer: Hash,
    sent_at_ms: u64,
}

pub struct Replica<D: Disk, A: Application, S: ConsensusSigner, E: Entropy> {
    genesis: Genesis,
    chain_id: Hash,
    validators: ValidatorSet,
    /// `validators.hash()`, which every header names as its validator set
    /// and the next one (the set is fixed by genesis).
    validators_hash: Hash,
    config: ReplicaConfig,
    store: ChainStore<D>,
    /// The head block's header (for the next block's proofs).
    head_header: Option<BlockHeader>,
    app: A,
    mempool: Mempool,
    entropy: E,
    core: Option<Core<S>>,
    block_key: Option<SigningKey>,
    plot: Option<SpacePlot>,
    pending: BTreeMap<Hash, PendingBlock>,
    deferred: VecDeque<SignedProposal>,
    evidence_pool: BTreeMap<Hash, Evidence>,
    timers: BTreeMap<Timeout, u64>,
    next_status_ms: u64,
    peer_heights: BTreeMap<Hash, Height>,
    sync: Option<SyncRequest>,
    outputs: VecDeque<ReplicaOutput>,
    /// The newest committed blocks and their encoded sizes, oldest first,
    /// consecutive and ending at the head (see [`RECENT_BLOCKS_KEPT`]).
    recent: VecDeque<(Block, usize)>,
    now: Now,
    /// When the head was committed (monotone ms).
    head_committed_ms: u64,
    /// A proposal to build once the block interval has passed.
    build_at: Option<(Height, Round, u64)>,
    /// Our latest proposal (height, block hash, when built), for the
    /// latency figure in [`ReplicaOutput::Committed`].
    own_proposal: Option<(Height, Hash, u64)>,
    /// Pending blocks written under [`PENDING_BLOCK_PREFIX`] (validators).
    pending_on_disk: BTreeSet<(Height, Hash)>,
    /// Committed transaction id → height, at most
    /// `config.committed_index_max`, evicted oldest block first.
    committed_index: BTreeMap<Hash, Height>,
    committed_order: VecDeque<(Height, Vec<Hash>)>,
    /// Ids of client transactions kept under [`CLIENT_TX_PREFIX`].
    client_txs: BTreeSet<Hash>,
    /// Where the next re-send of client transactions starts (they are
    /// re-sent in turns of [`TRANSACTIONS_PER_MESSAGE_MAX`]).
    client_resend_after: Option<Hash>,
}

impl<D: Disk, A: Application, S: ConsensusSigner, E: Entropy> Replica<D, A, S, E> {
    /// Opens the chain on `disk`, replays committed blocks into `app`, and
    /// with `validator` starts consensus at the next height.
    pub fn new(
        genesis: Genesis,
        disk: D,
        mut app: A,
        validator: Option<ValidatorIdentity<S>>,
        config: ReplicaConfig,
        entropy: E,
        now: Now,
    ) -> Result<Self, ReplicaError> {
        genesis.check()?;
        let chain_id = genesis.chain_id();
        let validators = genesis.validator_set()?;
        let store = ChainStore::open(disk, chain_id)?;
        // Recovery: the chain is the source of truth; the application's
        // state is its blocks re-executed in order, each write set checked
        // against its header.
        let mut head_header = None;
        let mut replayed_ids = Vec::new();
        let mut client_txs = load_client_transactions(store.disk())?;
        let mut committed_client_txs = WriteBatch::new();
        for height in 1..=store.height() {
            let block = store.block(height)?.ok_or(ReplicaError::MissingBelowHead {
                height,
                head: store.height(),
            })?;
            let execution = app.execute_block(
                BlockContext::new(height, block.header.timestamp_ms),
                &block.body.transactions,
            );
            let mismatch = |what, committed: Hash, replayed: Hash| {
                (committed != replayed).then_some(ReplicaError::ReplayMismatch {
                    height,
                    what,
                    committed,
                    replayed,
                })
            };
            if let Some(error) = mismatch(
                "write-set root",
                block.header.updates_root,
                execution.updates_root(),
            ) {
                return Err(error);
            }
            app.commit_execution(height, &execution).map_err(|error| {
                ReplicaError::ReplayFailed {
                    height,
                    reason: error.to_string(),
                }
            })?;
            if let Some(error) = mismatch("state root", block.header.state_root, app.state_root()) {
                return Err(error);
            }
            let log_head = app.log_head();
            if log_head != block.header.log_head {
                return Err(ReplicaError::ReplayMismatch {
                    height,
                    what: "log head root",
                    committed: block.header.log_head.root,
                    replayed: log_head.root,
                });
            }
            if config.committed_index_max > 0 || !client_txs.is_empty() {
                let ids = block.body.transaction_ids();
                for id in &ids {
                    if client_txs.remove(id).is_some() {
                        committed_client_txs
                            .delete(crate::consensus::SIGNER_COLUMN_FAMILY, client_tx_key(id));
                    }
                }
                if config.committed_index_max > 0 {
                    replayed_ids.push((height, ids));
                }
            }
            head_header = Some(block.header);
        }
        let (core, block_key, plot) = match validator {
            Some(identity) => {
                if identity.plot.node_id() != identity.block_key.verifying_key().fingerprint() {
                    return Err(ReplicaError::Plot(format!(
                        "plot of {} for key {}",
                        identity.plot.node_id(),
                        identity.block_key.verifying_key().fingerprint()
                    )));
                }
                let core = Core::new(
                    chain_id,
                    validators.clone(),
                    config.consensus.clone(),
                    identity.signer,
                    store.height() + 1,
                )?;
                (Some(core), Some(identity.block_key), Some(identity.plot))
            }
            None => (None, None, None),
        };
        let mut replica = Replica {
            genesis,
            chain_id,
            validators_hash: validators.hash(),
            validators,
            next_status_ms: now.mono_ms,
            config,
            store,
            head_header,
            app,
            mempool: Mempool::new(),
            entropy,
            core,
            block_key,
            plot,
            pending: BTreeMap::new(),
            deferred: VecDeque::new(),
            evidence_pool: BTreeMap::new(),
            timers: BTreeMap::new(),
            peer_heights: BTreeMap::new(),
            sync: None,
            outputs: VecDeque::new(),
            recent: VecDeque::new(),
            now,
            head_committed_ms: now.mono_ms,
            build_at: None,
            own_proposal: None,
            pending_on_disk: BTreeSet::new(),
            committed_index: BTreeMap::new(),
            committed_order: VecDeque::new(),
            client_txs: BTreeSet::new(),
            client_resend_after: None,
        };
        replica.resume_client_transactions(client_txs, committed_client_txs)?;
        for (height, ids) in replayed_ids {
            replica.index_committed(height, ids);
        }
        if replica.core.is_some() {
            replica.load_pending_blocks()?;
        }
        if let Some(core) = replica.core.as_mut() {
            let outputs = core.start();
            replica.perform(outputs);
        }
        Ok(replica)
    }

    pub fn chain_id(&self) -> Hash {
        self.chain_id
    }

    pub fn validators(&self) -> &ValidatorSet {
        &self.validators
    }

    pub fn is_validator(&self) -> bool {
        self.core.is_some()
    }

    /// Whether `peer` announced `height` or more (and has not failed to
    /// serve since): it needs no news of that height from us.
    pub fn peer_holds(&self, peer: &Hash, height: Height) -> bool {
        self.peer_heights
            .get(peer)
            .is_some_and(|announced| *announced >= height)
    }

    /// Committed height.
    pub fn height(&self) -> Height {
        self.store.height()
    }

    pub fn head_hash(&self) -> Hash {
        self.store.head_hash()
    }

    pub fn store(&self) -> &ChainStore<D> {
        &self.store
    }

    pub fn app(&self) -> &A {
        &self.app
    }

    pub fn mempool_len(&self) -> usize {
        self.mempool.len()
    }

    /// The consensus round this validator is in (None for followers).
    pub fn round(&self) -> Option<Round> {
        self.core.as_ref().map(Core::round)
    }

    /// Evidence committed against the validator with node id `validator`
    /// (the query slashing uses).
    pub fn committed_evidence(&self, validator: &Hash) -> Result<Vec<Evidence>, ChainError> {
        let entries = self.store.disk().scan_prefix(
            EVIDENCE_CF,
            validator.as_bytes(),
            EVIDENCE_POOL_MAX * 16,
        )?;
        entries
            .iter()
            .map(|(key, value)| {
                hm_wire::decode::<Evidence>(value, BLOCK_BYTES_MAX).map_err(|source| {
                    ChainError::Corrupted {
                        what: format!("evidence record {}", hex(key)),
                        source,
                    }
                })
            })
            .collect()
    }

    /// Evidence a light client sent: checked against this chain's
    /// validators (never sets that came with it). A fork names its
    /// validators ([`accountability::convict`]); each convicted double
    /// signer's two precommits are pooled as a duplicate vote and gossiped
    /// to the validators, who commit it like any double vote. Conflicts
    /// between heights name nobody by themselves.
    pub fn report_misbehaviour(
        &mut self,
        now: Now,
        evidence: &Misbehaviour,
    ) -> Result<MisbehaviourVerdict, LightError> {
        self.now = now;
        let conflict = evidence.verify(&self.chain_id, &self.validators, &self.validators)?;
        let conviction = match conflict {
            Conflict::Fork { .. } => accountability::convict(
                &evidence.certificate_a,
                &evidence.certificate_b,
                &self.chain_id,
                &self.validators,
            )
            .ok(),
            Conflict::BrokenLink { .. } | Conflict::TimeReversal { .. } => None,
        };
        let Some(conviction) = conviction else {
            return Ok(MisbehaviourVerdict {
                conflict,
                convicted: Vec::new(),
                suspects: Vec::new(),
                pooled: 0,
            });
        };
        let ids = |indices: &mut dyn Iterator<Item = ValidatorIndex>| -> Vec<Hash> {
            indices
                .filter_map(|index| self.validators.get(index).map(|validator| validator.id))
                .collect()
        };
        let convicted = ids(&mut conviction.convicted.iter().map(|(index, _)| *index));
        let suspects = ids(&mut conviction.suspects.iter().copied());
        let pooled_before = self.evidence_pool.len();
        for (_, vote) in conviction.convicted {
            self.on_evidence(None, vote);
        }
        Ok(MisbehaviourVerdict {
            conflict,
            convicted,
            suspects,
            pooled: self.evidence_pool.len() - pooled_before,
        })
    }

    /// Whether transaction `id` committed (and where), waits in the
    /// mempool, or is unknown here.
    pub fn transaction_status(&self, id: &Hash) -> TransactionStatus {
        if let Some(&height) = self.committed_index.get(id) {
            TransactionStatus::Committed { height }
        } else if self.mempool.contains(id) {
            TransactionStatus::Pending
        } else {
            TransactionStatus::Unknown
        }
    }

    /// Remembers block `height`'s transaction ids, forgetting the oldest
    /// blocks' beyond `committed_index_max`.
    fn index_committed(&mut self, height: Height, ids: Vec<Hash>) {
        let max = self.config.committed_index_max;
        if max == 0 || ids.is_empty() {
            return;
        }
        for id in &ids {
            self.committed_index.insert(*id, height);
        }
        self.committed_order.push_back((height, ids));
        while self.committed_index.len() > max {
            let Some((old_height, old_ids)) = self.committed_order.pop_front() else {
                break;
            };
            for id in old_ids {
                // A transaction committed twice (not possible with a nonce,
                // but cheap to respect) keeps its newer entry.
                if self.committed_index.get(&id) == Some(&old_height) {
                    self.committed_index.remove(&id);
                }
            }
        }
    }

    /// Next output for the shell.
    pub fn poll_output(&mut self) -> Option<ReplicaOutput> {
        self.outputs.pop_front()
    }

    /// When `handle_tick` should next run (monotone ms).
    pub fn poll_timeout(&self) -> u64 {
        let timer = self.timers.values().min().copied().unwrap_or(u64::MAX);
        let sync = self.sync.as_ref().map_or(u64::MAX, |sync| {
            sync.sent_at_ms + self.config.sync_timeout_ms
        });
        let build = self.build_at.map_or(u64::MAX, |(_, _, at)| at);
        timer.min(sync).min(self.next_status_ms).min(build)
    }

    /// A client submits a batch: each admitted to our mempool (or refused
    /// with the reason), and the admitted ones sent to the validators (who
    /// do not forward them again).
    pub fn submit_transactions(
        &mut self,
        now: Now,
        transactions: Vec<Transaction>,
    ) -> Vec<Result<Hash, MempoolError>> {
        self.now = now;
        let mut admitted = Vec::new();
        let mut outcomes: Vec<Result<Hash, MempoolError>> = transactions
            .into_iter()
            .map(|tx| {
                if self.client_txs.len() >= CLIENT_TXS_KEPT_MAX {
                    return Err(MempoolError::TooManyUnsaved {
                        count: self.client_txs.len(),
                    });
                }
                self.admit_from_client(tx, &mut admitted)
            })
            .collect();
        // Durable before acknowledged (the caller answers the client with
        // `outcomes`): one synced write for the batch.
        let mut batch = WriteBatch::new();
        let mut saved = Vec::new();
        for tx in &admitted {
            let id = tx.id();
            if !self.client_txs.contains(&id) {
                batch.put(
                    crate::consensus::SIGNER_COLUMN_FAMILY,
                    client_tx_key(&id),
                    tx.0.clone(),
                );
                saved.push(id);
            }
        }
        if !batch.is_empty() {
            let disk = self.store.disk();
            match disk.write(batch).and_then(|()| disk.sync()) {
                Ok(()) => self.client_txs.extend(saved),
                Err(error) => {
                    for outcome in &mut outcomes {
                        if let Ok(id) = outcome
                            && saved.contains(id)
                        {
                            *outcome = Err(MempoolError::Unsaved {
                                id: *id,
                                reason: error.to_string(),
                            });
                        }
                    }
                }
            }
        }
        self.send_transactions(Destination::Validators, &admitted);
        outcomes
    }

    /// At start: client transactions kept on disk and not committed go
    /// back into the mempool and to the validators; those committed (found
    /// in the replay, `committed`) or no longer admissible are deleted.
    fn resume_client_transactions(
        &mut self,
        kept: BTreeMap<Hash, Transaction>,
        mut delete: WriteBatch,
    ) -> Result<(), ReplicaError> {
        let mut admitted = Vec::new();
        for (id, tx) in kept {
            match self.admit(tx, &mut admitted) {
                Ok(_) | Err(MempoolError::Duplicate { .. }) => {
                    self.client_txs.insert(id);
                }
                Err(_) => delete.delete(crate::consensus::SIGNER_COLUMN_FAMILY, client_tx_key(&id)),
            }
        }
        if !delete.is_empty() {
            self.store.disk().write(delete).map_err(ChainError::Disk)?;
        }
        self.send_transactions(Destination::Validators, &admitted);
        Ok(())
    }

    /// Sends the next turn of acknowledged, not yet committed client
    /// transactions to the validators again. Sent once, such a transaction
    /// is lost whenever that message is: no link to a validator yet, or
    /// validators that admitted it crashed (a relayed transaction lives
    /// only in their memory). Only this node holds it durably, so only
    /// this node can make sure it commits. Duplicates cost the receivers
    /// a mempool lookup.
    fn resend_client_transactions(&mut self) {
        if self.client_txs.is_empty() {
            return;
        }
        use std::ops::Bound::{Excluded, Unbounded};
        let start = self.client_resend_after.map_or(Unbounded, Excluded);
        let mut turn: Vec<Hash> = self
            .client_txs
            .range((start, Unbounded))
            .take(TRANSACTIONS_PER_MESSAGE_MAX)
            .copied()
            .collect();
        if turn.len() < TRANSACTIONS_PER_MESSAGE_MAX {
            // Wrap around to the start.
            let more = TRANSACTIONS_PER_MESSAGE_MAX - turn.len();
            turn.extend(
                self.client_txs
                    .iter()
                    .take(more)
                    .filter(|id| !turn.contains(id))
                    .copied()
                    .collect::<Vec<_>>(),
            );
        }
        self.client_resend_after = turn.last().copied();
        let disk = self.store.disk();
        let transactions: Vec<Transaction> = turn
            .iter()
            .filter_map(|id| match self.mempool.get(id) {
                Some(tx) => Some(tx.clone()),
                // Not pooled (the pool was full at restart): from disk.
                None => disk
                    .get(crate::consensus::SIGNER_COLUMN_FAMILY, &client_tx_key(id))
                    .ok()
                    .flatten()
                    .map(Transaction)
                    .filter(|tx| tx.id() == *id),
            })
            .collect();
        self.send_transactions(Destination::Validators, &transactions);
    }

    /// [`Replica::submit_transactions`] for one transaction.
    pub fn submit_transaction(&mut self, now: Now, tx: Transaction) -> Result<Hash, MempoolError> {
        self.now = now;
        let mut admitted = Vec::new();
        let outcome = self.admit_from_client(tx, &mut admitted);
        self.send_transactions(Destination::Validators, &admitted);
        outcome
    }

    /// [`Replica::admit`] for a client's submission: a transaction already
    /// pending here is sent to the validators again. A client resubmits
    /// because its transaction has not committed, and the copy it sent
    /// first may have been lost on the way (a partition, a crashed or
    /// Byzantine validator); refusing it as a duplicate would make every
    /// retry of an idempotent transaction a no-op.
    fn admit_from_client(
        &mut self,
        tx: Transaction,
        admitted: &mut Vec<Transaction>,
    ) -> Result<Hash, MempoolError> {
        match self.admit(tx.clone(), admitted) {
            Err(MempoolError::Duplicate { id }) => {
                admitted.push(tx);
                Ok(id)
            }
            outcome => outcome,
        }
    }

    /// Puts `tx` into the mempool; on success also into `admitted`.
    fn admit(
        &mut self,
        tx: Transaction,
        admitted: &mut Vec<Transaction>,
    ) -> Result<Hash, MempoolError> {
        let id = self.mempool.insert(&self.app, tx.clone())?;
        admitted.push(tx);
        Ok(id)
    }

    /// Sends transactions to `to`, one message per
    /// [`TRANSACTIONS_PER_MESSAGE_MAX`] (none when there are none).
    fn send_transactions(&mut self, to: Destination, transactions: &[Transaction]) {
        for chunk in transactions.chunks(TRANSACTIONS_PER_MESSAGE_MAX) {
            self.emit(ReplicaOutput::Send {
                to: to.clone(),
                message: ChainMessage::Transactions(chunk.to_vec()),
            });
        }
    }

    /// Sends transactions to the round-0 proposers of the next
    /// [`TX_PROPOSERS_AHEAD`] heights (other than this validator).
    fn send_to_next_proposers(&mut self, transactions: &[Transaction]) {
        if transactions.is_empty() {
            return;
        }
        let me = self.core.as_ref().map(Core::validator_index);
        let mut targets = BTreeSet::new();
        for ahead in 1..=TX_PROPOSERS_AHEAD {
            let height = self.height() + ahead;
            let index = crate::consensus::proposer(&self.chain_id, &self.validators, height, 0);
            if Some(index) != me
                && let Some(validator) = self.validators.get(index)
            {
                targets.insert(validator.id);
            }
        }
        for target in targets {
            self.send_transactions(Destination::Peer(target), transactions);
        }
    }

    pub fn handle_tick(&mut self, now: Now) {
        self.now = now;
        let due: Vec<Timeout> = self
            .timers
            .iter()
            .filter(|(_, at)| **at <= now.mono_ms)
            .map(|(timeout, _)| *timeout)
            .collect();
        for timeout in due {
            self.timers.remove(&timeout);
            self.feed_core(Input::Timeout(timeout));
        }
        if let Some((height, round, at)) = self.build_at
            && at <= now.mono_ms
        {
            self.build_at = None;
            self.build_proposal(height, round);
        }
        if let Some(sync) = self
            .sync
            .take_if(|sync| now.mono_ms >= sync.sent_at_ms + self.config.sync_timeout_ms)
        {
            // A peer that announced a height and does not serve it (gone,
            // slow or lying) is forgotten until it announces again, so the
            // next best peer gets the request.
            self.peer_heights.remove(&sync.peer);
            self.request_sync();
        }
        if now.mono_ms >= self.next_status_ms {
            self.next_status_ms = now.mono_ms + self.config.status_interval_ms;
            let height = self.height();
            self.emit(ReplicaOutput::Send {
                to: Destination::PeersBehind { height },
                message: ChainMessage::Status { height },
            });
            self.resend_client_transactions();
            // Evidence is gossiped once when learned, and later offences of
            // the same validator are not gossiped at all: re-send what is
            // still pooled, in case that one message was dropped.
            if self.is_validator() {
                let pooled: Vec<Evidence> = self
                    .evidence_pool
                    .values()
                    .take(EVIDENCE_PER_BLOCK_MAX)
                    .cloned()
                    .collect();
                for evidence in pooled {
                    self.emit(ReplicaOutput::Send {
                        to: Destination::Validators,
                        message: ChainMessage::Evidence(evidence),
                    });
                }
            }
        }
    }

    pub fn handle_message(&mut self, now: Now, from: Hash, message: ChainMessage) {
        self.now = now;
        match message {
            ChainMessage::Proposal { signed, block } => self.on_proposal(from, signed, *block),
            ChainMessage::Vote(vote) => self.feed_core(Input::Vote(vote)),
            ChainMessage::Evidence(evidence) => self.on_evidence(Some(from), evidence),
            ChainMessage::Transactions(txs) => {
                let mut admitted = Vec::new();
                for tx in txs.into_iter().take(TRANSACTIONS_PER_MESSAGE_MAX) {
                    // Duplicates and a full pool are normal under gossip.
                    let _ = self.admit(tx, &mut admitted);
                }
                // A follower passes what it newly admitted on towards the
                // validators; a validator hands what came from outside the
                // committee to the next proposers. The mempool's duplicate
                // check ends every forwarding chain.
                if !self.is_validator() {
                    self.send_transactions(Destination::TowardValidators { from }, &admitted);
                } else if self.validators.index_of(&from).is_none() {
                    self.send_to_next_proposers(&admitted);
                }
            }
            ChainMessage::Status { height } => {
                if self.peer_heights.len() < PEER_HEIGHTS_MAX
                    || self.peer_heights.contains_key(&from)
                {
                    self.peer_heights.insert(from, height);
                }
                if height > self.height() {
                    self.request_sync();
                }
            }
            ChainMessage::GetBlocks { from: start, count } => self.serve_blocks(from, start, count),
            ChainMessage::Blocks(blocks) => self.on_blocks(from, blocks),
        }
    }

    // ------------------------------------------------------------ internals

    fn emit(&mut self, output: ReplicaOutput) {
        assert!(
            self.outputs.len() < OUTPUTS_MAX,
            "replica outputs not drained: the shell must poll_output after every call"
        );
        self.outputs.push_back(output);
    }

    fn report(&mut self, peer: Option<Hash>, what: String) {
        let mut what = what;
        if what.len() > REPORT_BYTES_MAX {
            let mut cut = REPORT_BYTES_MAX;
            while !what.is_char_boundary(cut) {
                cut -= 1;
            }
            what.truncate(cut);
        }
        self.emit(ReplicaOutput::Misbehaviour { peer, what });
    }

    fn feed_core(&mut self, input: Input) {
        let Some(core) = self.core.as_mut() else {
            return;
        };
        let outputs = core.handle(input);
        self.perform(outputs);
    }

    fn perform(&mut self, outputs: Vec<Output>) {
        for output in outputs {
            match output {
                Output::Broadcast(ConsensusMessage::Vote(vote)) => self.emit(ReplicaOutput::Send {
                    to: Destination::Validators,
                    message: ChainMessage::Vote(vote),
                }),
                Output::Broadcast(ConsensusMessage::Proposal(signed)) => {
                    match self.pending.get(&signed.proposal.block_hash) {
                        Some(pending) => {
                            let block = Box::new(pending.block.clone());
                            self.emit(ReplicaOutput::Send {
                                to: Destination::Validators,
                                message: ChainMessage::Proposal { signed, block },
                            });
                        }
                        None => self.report(
                            None,
                            format!(
                                "own proposal for {} has no block to send",
                                signed.proposal.block_hash
                            ),
                        ),
                    }
                }
                Output::ScheduleTimeout {
                    timeout,
                    duration_ms,
                } => {
                    self.timers
                        .insert(timeout, self.now.mono_ms.saturating_add(duration_ms));
                }
                Output::BuildProposal { height, round } => {
                    let at = self
                        .head_committed_ms
                        .saturating_add(self.config.block_interval_ms);
                    if round == 0 && at > self.now.mono_ms {
                        self.build_at = Some((height, round, at));
                    } else {
                        self.build_proposal(height, round);
                    }
                }
                Output::Decided {
                    height,
                    round,
                    block_hash,
                    certificate,
                } => self.on_decided(height, round, block_hash, certificate),
                Output::Evidence(evidence) => self.on_evidence(None, evidence),
                Output::InvalidProposal {
                    height,
                    round,
                    proposer,
                    block_hash,
                } => {
                    let peer = self.validators.get(proposer).map(|v| v.id);
                    self.report(
                        peer,
                        format!("invalid proposal {block_hash} at height {height} round {round}"),
                    );
                }
                Output::PeerBehind { validator, .. } => {
                    // Tell it our height rather than push blocks: a lagging
                    // validator hears this from every validator but pulls
                    // from one, and a replayed old vote cannot make all of
                    // us send it megabytes.
                    if let Some(peer) = self.validators.get(validator).map(|v| v.id) {
                        self.emit(ReplicaOutput::Send {
                            to: Destination::Peer(peer),
                            message: ChainMessage::Status {
                                height: self.height(),
                            },
                        });
                    }
                }
                Output::Rejected { validator, reason } => {
                    let peer = validator.and_then(|index| self.validators.get(index).map(|v| v.id));
                    self.report(peer, format!("consensus message rejected: {reason:?}"));
                }
                Output::SignFailed(error) => {
                    self.report(None, format!("signer refused: {error}"));
                }
            }
        }
    }

    fn parent_info(&self) -> ParentInfo {
        match &self.head_header {
            Some(header) => ParentInfo::of(header),
            None => ParentInfo::genesis(&self.genesis),
        }
    }

    fn build_proposal(&mut self, height: Height, round: Round) {
        if height != self.height() + 1 {
            return;
        }
        if self.block_key.is_none() || self.plot.is_none() {
            return;
        }
        let parent = self.parent_info();
        let transactions = self.mempool.reap(
            self.config
                .block_transactions_max
                .min(TRANSACTIONS_PER_BLOCK_MAX),
            BLOCK_TRANSACTION_BYTES_MAX,
        );
        let evidence: Vec<Evidence> = self
            .evidence_pool
            .values()
            .take(EVIDENCE_PER_BLOCK_MAX)
            .cloned()
            .collect();
        let timestamp_ms = self.now.wall_ms.max(parent.timestamp_ms + 1);
        let body = BlockBody {
            transactions,
            evidence,
        };
        let (block, validated) = match self.build_block(height, round, body, timestamp_ms) {
            Ok(built) => built,
            Err(error) => {
                self.report(None, format!("cannot prove our own block: {error}"));
                return;
            }
        };
        let block_hash = block.hash();
        self.own_proposal = Some((height, block_hash, self.now.mono_ms));
        self.insert_pending(
            block_hash,
            PendingBlock {
                block,
                verdict: Some(Ok(validated)),
            },
        );
        if !self.persist_pending(&block_hash) {
            // Not proposing a block we could lose; the propose timeout
            // moves the round on.
            return;
        }
        self.feed_core(Input::ProposalBuilt {
            height,
            round,
            block_hash,
        });
    }

    /// Executes `body` on our head and proves the block (height, round,
    /// timestamp) with our plot and key.
    fn build_block(
        &mut self,
        height: Height,
        round: Round,
        body: BlockBody,
        timestamp_ms: u64,
    ) -> Result<(ProposedBlock, Validated), String> {
        let (Some(key), Some(plot)) = (self.block_key.as_ref(), self.plot.as_ref()) else {
            return Err("this replica holds no block key or plot".into());
        };
        let params = &self.genesis.proof;
        let parent = self.parent_info();
        let transaction_ids = body.transaction_ids();
        let transactions_root = hm_wire::merkle::root_from_leaf_hashes(&transaction_ids);
        let execution = self.app.execute_block(
            BlockContext::new(height, timestamp_ms).with_transactions_root(transactions_root),
            &body.transactions,
        );
        let time = proof::compute_time(&parent, params);
        let header = BlockHeader {
            version: BLOCK_VERSION,
            chain_id: self.chain_id,
            height,
            round,
            previous_hash: parent.hash,
            transactions_root,
            updates_root: execution.updates_root(),
            evidence_root: body.evidence_root(),
            state_root: execution.state_root,
            log_head: execution.log_head,
            timestamp_ms,
            difficulty: params.work_difficulty_bits,
            time_output: time.time_output,
            time_ticks: time.time_ticks,
            proposer: key.verifying_key().fingerprint(),
            validators_hash: self.validators_hash,
            next_validators_hash: self.validators_hash,
        };
        let proof = BlockProver::new(plot, key)
            .and_then(|prover| {
                prover.prove(&header, time.proof, &self.validators, params, &self.entropy)
            })
            .map_err(|error| error.to_string())?;
        Ok((
            ProposedBlock {
                header,
                body,
                proof,
            },
            Validated {
                execution,
                transaction_ids,
            },
        ))
    }

    /// Another valid block for `block`'s height and round: the same body,
    /// one millisecond later, proved afresh. An honest replica never
    /// proposes two blocks for one round; this is for tests and for the
    /// fault injectors that model a proposer who does (`hm-faults`), so
    /// that they need not rebuild the proofs themselves. `None` when
    /// `block` is not for the height we would build, or proving fails.
    pub fn build_twin(&mut self, block: &ProposedBlock) -> Option<ProposedBlock> {
        let header = &block.header;
        if header.height != self.height() + 1 {
            return None;
        }
        self.build_block(
            header.height,
            header.round,
            block.body.clone(),
            header.timestamp_ms.saturating_add(1),
        )
        .ok()
        .map(|(twin, _)| twin)
    }

    /// Writes the pending block `hash` under [`PENDING_BLOCK_PREFIX`]
    /// (validators only; unsynced: the signer syncs before any vote leaves).
    /// False when the write failed: the block must not be voted for yet (a
    /// lock on a block this validator could lose in a crash can stall the
    /// committee); it is tried again when the proposal comes round again.
    fn persist_pending(&mut self, hash: &Hash) -> bool {
        let Some(pending) = self.pending.get(hash) else {
            return false;
        };
        let height = pending.block.header.height;
        if self.core.is_none()
            || self.pending_on_disk.contains(&(height, *hash))
            || self.pending_on_disk.len() >= PENDING_BLOCKS_ON_DISK_MAX
        {
            return true;
        }
        let mut batch = WriteBatch::new();
        batch.put(
            crate::consensus::SIGNER_COLUMN_FAMILY,
            pending_block_key(height, hash),
            hm_wire::encode(&pending.block),
        );
        match self.store.disk().write(batch) {
            Ok(()) => {
                self.pending_on_disk.insert((height, *hash));
                true
            }
            Err(error) => {
                self.report(
                    None,
                    format!("cannot keep proposed block {hash} at {height} on disk: {error}"),
                );
                false
            }
        }
    }

    /// At start: the kept proposed blocks of the next height back into
    /// `pending` (judged again when needed); those of committed heights,
    /// or unreadable ones, are deleted.
    fn load_pending_blocks(&mut self) -> Result<(), ReplicaError> {
        let next = self.height() + 1;
        let disk = self.store.disk();
        let entries = disk
            .scan_prefix(
                crate::consensus::SIGNER_COLUMN_FAMILY,
                PENDING_BLOCK_PREFIX,
                PENDING_BLOCKS_MAX,
            )
            .map_err(ChainError::Disk)?;
        let mut stale = WriteBatch::new();
        let mut loaded = Vec::new();
        for (key, value) in entries {
            let parsed = parse_pending_block_key(&key);
            let block = hm_wire::decode::<ProposedBlock>(&value, BLOCK_BYTES_MAX).ok();
            match (parsed, block) {
                (Some((height, hash)), Some(block))
                    if height == next && block.header.height == next && block.hash() == hash =>
                {
                    loaded.push((hash, block));
                }
                _ => stale.delete(crate::consensus::SIGNER_COLUMN_FAMILY, key),
            }
        }
        if !stale.is_empty() {
            disk.write(stale).map_err(ChainError::Disk)?;
        }
        for (hash, block) in loaded {
            self.pending_on_disk.insert((next, hash));
            self.insert_pending(
                hash,
                PendingBlock {
                    block,
                    verdict: None,
                },
            );
        }
        Ok(())
    }

    fn insert_pending(&mut self, hash: Hash, pending: PendingBlock) {
        if self.pending.len() >= PENDING_BLOCKS_MAX && !self.pending.contains_key(&hash) {
            // Drop the block of the highest height (furthest from being
            // needed); ties by hash, so every node drops alike.
            let victim = self
                .pending
                .iter()
                .max_by_key(|(hash, pending)| (pending.block.header.height, **hash))
                .map(|(hash, _)| *hash);
            if let Some(victim) = victim {
                self.pending.remove(&victim);
            }
        }
        self.pending.insert(hash, pending);
    }

    fn on_proposal(&mut self, from: Hash, signed: SignedProposal, block: ProposedBlock) {
        let Some(core_height) = self.core.as_ref().map(Core::height) else {
            return; // followers learn blocks by sync
        };
        let hash = block.hash();
        if hash != signed.proposal.block_hash || block.header.height != signed.proposal.height {
            self.report(
                Some(from),
                "proposal names another block than the one attached".into(),
            );
            return;
        }
        let height = signed.proposal.height;
        if height < core_height || height > core_height + 1 {
            return;
        }
        if !self.pending.contains_key(&hash) {
            self.insert_pending(
                hash,
                PendingBlock {
                    block,
                    verdict: None,
                },
            );
        }
        if height == core_height {
            self.submit_proposal(signed);
        } else if self.deferred.len() < DEFERRED_PROPOSALS_MAX {
            self.deferred.push_back(signed);
        }
    }

    fn submit_proposal(&mut self, signed: SignedProposal) {
        let hash = signed.proposal.block_hash;
        let proposer_id = self.validators.get(signed.proposal.proposer).map(|v| v.id);
        // The block's own proposer field names who built it, which is not
        // the round's proposer when a locked/valid block is proposed again
        // in a later round (Algorithm 1 line 16); its stake proof is
        // checked with the block.
        let valid = match self.judge(&hash) {
            Some(Ok(())) => {
                // Before the core may vote for it (the signer's synced
                // write then makes it durable too). Not kept: judged when
                // the proposal is rebroadcast.
                if !self.persist_pending(&hash) {
                    return;
                }
                true
            }
            Some(Err(reason)) => {
                self.report(proposer_id, format!("block {hash} is invalid: {reason}"));
                false
            }
            None => return,
        };
        self.feed_core(Input::Proposal { signed, valid });
    }

    /// Validates a pending block against the current head (once; the
    /// verdict is kept). `None` when the block is unknown.
    fn judge(&mut self, hash: &Hash) -> Option<Result<(), String>> {
        let pending = self.pending.get(hash)?;
        if let Some(verdict) = &pending.verdict {
            return Some(verdict.as_ref().map(|_| ()).map_err(Clone::clone));
        }
        let verdict = self.validate_block(
            &pending.block.header,
            &pending.block.body,
            &pending.block.proof,
            self.now.wall_ms,
            None,
        );
        let result = verdict.as_ref().map(|_| ()).map_err(Clone::clone);
        if let Some(pending) = self.pending.get_mut(hash) {
            pending.verdict = Some(verdict);
        }
        Some(result)
    }

    /// Everything a block must satisfy to extend our head: structure, the
    /// validator set it names, linkage, evidence, execution and the four
    /// proofs.
    /// A synced block's `certificate` is checked right after the structure
    /// (before the costly execution).
    fn validate_block(
        &self,
        header: &BlockHeader,
        body: &BlockBody,
        proof: &crate::proof::ConsensusProof,
        local_now_ms: u64,
        certificate: Option<&Block>,
    ) -> Result<Validated, String> {
        let transaction_ids = block::check_structure(header, body, &self.chain_id)
            .map_err(|error| error.to_string())?;
        header
            .check_fixed_validators(&self.validators_hash)
            .map_err(|error| error.to_string())?;
        if let Some(block) = certificate {
            block
                .verify_certificate(&self.chain_id, &self.validators)
                .map_err(|error| error.to_string())?;
        }
        if header.height != self.height() + 1 {
            return Err(format!(
                "height {} does not follow our head {}",
                header.height,
                self.height()
            ));
        }
        if header.previous_hash != self.head_hash() {
            return Err("previous hash is not our head".into());
        }
        let mut seen = BTreeSet::new();
        for evidence in &body.evidence {
            evidence
                .verify(&self.chain_id, &self.validators)
                .map_err(|error| format!("evidence: {error}"))?;
            if !seen.insert(evidence.id()) || self.evidence_committed(evidence) {
                return Err("evidence repeated or already committed".into());
            }
        }
        // check_structure proved the header's root is these transactions'.
        let execution = self.app.execute_block(
            BlockContext::new(header.height, header.timestamp_ms)
                .with_transactions_root(header.transactions_root),
            &body.transactions,
        );
        if execution.updates_root() != header.updates_root {
            return Err("the header's updates root differs from executing its transactions".into());
        }
        block::check_write_set(&execution.updates)
            .map_err(|error| format!("executing the block: {error}"))?;
        if execution.log_head != header.log_head {
            return Err(format!(
                "the header's log head (size {}) differs from executing the block (size {})",
                header.log_head.size, execution.log_head.size
            ));
        }
        let ctx = ProofContext {
            params: &self.genesis.proof,
            validators: &self.validators,
            parent: self.parent_info(),
            space_registry: &self.genesis,
            local_now_ms,
            recomputed_state_root: Some(execution.state_root),
            parallelism: self.config.verify_parallelism,
        };
        let result = proof::validate(header, proof, &ctx);
        if !result.is_valid() {
            return Err(format!("proofs: {result}"));
        }
        Ok(Validated {
            execution,
            transaction_ids,
        })
    }

    fn evidence_key(evidence: &Evidence, validators: &ValidatorSet) -> Option<Vec<u8>> {
        let validator = validators.get(evidence.validator())?;
        let mut key = validator.id.as_bytes().to_vec();
        key.extend_from_slice(&evidence.height().to_be_bytes());
        key.extend_from_slice(evidence.id().as_bytes());
        Some(key)
    }

    fn evidence_committed(&self, evidence: &Evidence) -> bool {
        Self::evidence_key(evidence, &self.validators)
            .is_some_and(|key| matches!(self.store.disk().get(EVIDENCE_CF, &key), Ok(Some(_))))
    }

    /// Whether evidence against validator `index` is already pooled or on
    /// chain. One proven double-sign is enough to slash a validator (it is
    /// "tombstoned", as in Cosmos), so later offences by the same validator
    /// are neither gossiped nor put into blocks: an equivocator that signs
    /// twice at every height would otherwise cost every validator a flood
    /// of evidence per block.
    fn offender_recorded(&self, index: ValidatorIndex) -> bool {
        if self
            .evidence_pool
            .values()
            .any(|pooled| pooled.validator() == index)
        {
            return true;
        }
        let Some(validator) = self.validators.get(index) else {
            return false;
        };
        matches!(
            self.store
                .disk()
                .scan_prefix(EVIDENCE_CF, validator.id.as_bytes(), 1),
            Ok(entries) if !entries.is_empty()
        )
    }

    fn on_evidence(&mut self, from: Option<Hash>, evidence: Evidence) {
        let id = evidence.id();
        if self.evidence_pool.contains_key(&id) || self.offender_recorded(evidence.validator()) {
            return;
        }
        if let Err(error) = evidence.verify(&self.chain_id, &self.validators) {
            self.report(from, format!("invalid evidence: {error}"));
            return;
        }
        if self.evidence_pool.len() >= EVIDENCE_POOL_MAX {
            return;
        }
        self.evidence_pool.insert(id, evidence.clone());
        // Gossip once, when first learned: validators include it in blocks.
        self.emit(ReplicaOutput::Send {
            to: Destination::Validators,
            message: ChainMessage::Evidence(evidence),
        });
    }

    fn on_decided(
        &mut self,
        height: Height,
        round: Round,
        block_hash: Hash,
        certificate: CommitCertificate,
    ) {
        if height != self.height() + 1 {
            return; // already appended by sync
        }
        let Some(pending) = self.pending.remove(&block_hash) else {
            // We saw the votes but not the block: fetch it from the
            // validators once they have committed it.
            self.report(
                None,
                format!("decided block {block_hash} at {height} is unknown; syncing"),
            );
            self.request_sync_from_validators();
            return;
        };
        let validated = match pending.verdict {
            Some(Ok(validated)) => validated,
            _ => match self.validate_block(
                &pending.block.header,
                &pending.block.body,
                &pending.block.proof,
                u64::MAX / 2,
                None,
            ) {
                Ok(validated) => validated,
                Err(reason) => {
                    // Two thirds of the stake committed a block we find
                    // invalid: our state diverged or they are Byzantine
                    // beyond the bound. Stop rather than fork.
                    self.report(
                        None,
                        format!("decided block {block_hash} fails our validation: {reason}"),
                    );
                    return;
                }
            },
        };
        let ProposedBlock {
            header,
            body,
            proof,
        } = pending.block;
        let block = Block {
            header,
            body,
            proof,
            commit: certificate,
        };
        self.append(block, validated, round);
    }

    /// Makes `block` durable, applies it and tells peers.
    fn append(&mut self, block: Block, validated: Validated, round: Round) {
        let Validated {
            execution,
            transaction_ids,
        } = validated;
        let height = block.header.height;
        if let Err(error) = self.store.append(&block) {
            self.emit(ReplicaOutput::Failed {
                reason: format!("cannot store committed block {height}: {error}"),
            });
            return;
        }
        if let Err(error) = self.app.commit_execution(height, &execution) {
            self.emit(ReplicaOutput::Failed {
                reason: format!(
                    "the application could not apply committed block {height}: {error}"
                ),
            });
            return;
        }
        debug_assert_eq!(self.app.state_root(), block.header.state_root);
        self.mempool.remove_committed(&transaction_ids);
        let mut batch = WriteBatch::new();
        if !self.client_txs.is_empty() {
            for id in &transaction_ids {
                if self.client_txs.remove(id) {
                    batch.delete(crate::consensus::SIGNER_COLUMN_FAMILY, client_tx_key(id));
                }
            }
        }
        while let Some(&(pending_height, hash)) = self.pending_on_disk.first()
            && pending_height <= height
        {
            self.pending_on_disk.pop_first();
            batch.delete(
                crate::consensus::SIGNER_COLUMN_FAMILY,
                pending_block_key(pending_height, &hash),
            );
        }
        self.index_committed(height, transaction_ids);
        for evidence in &block.body.evidence {
            // Pooled evidence against a validator now on record is redundant.
            let offender = evidence.validator();
            self.evidence_pool
                .retain(|_, pooled| pooled.validator() != offender);
            if let Some(key) = Self::evidence_key(evidence, &self.validators) {
                batch.put(EVIDENCE_CF, key, hm_wire::encode(evidence));
            }
        }
        if !batch.is_empty() {
            // The evidence index is derived from blocks: losing it in a
            // crash is repaired by re-indexing (not yet), never unsafe.
            if let Err(error) = self.store.disk().write(batch) {
                self.report(None, format!("cannot index evidence: {error}"));
            }
        }
        self.pending
            .retain(|_, pending| pending.block.header.height > height);
        // Verdicts were judged against the old head.
        for pending in self.pending.values_mut() {
            pending.verdict = None;
        }
        let block_hash = block.hash();
        self.head_committed_ms = self.now.mono_ms;
        if self
            .build_at
            .is_some_and(|(build_height, _, _)| build_height <= height)
        {
            self.build_at = None;
        }
        let proposal_to_commit_ms = self
            .own_proposal
            .filter(|(own_height, own_hash, _)| *own_height == height && *own_hash == block_hash)
            .map(|(_, _, built_ms)| self.now.mono_ms.saturating_sub(built_ms));
        if self
            .own_proposal
            .is_some_and(|(own_height, _, _)| own_height <= height)
        {
            self.own_proposal = None;
        }
        self.emit(ReplicaOutput::Committed {
            height,
            round,
            block_hash,
            transactions: block.body.transactions.len(),
            evidence: block.body.evidence.clone(),
            proposal_to_commit_ms,
            log_head: block.header.log_head,
        });
        let encoded_len = hm_wire::encoded_len(&block);
        self.head_header = Some(block.header.clone());
        if self.recent.len() == RECENT_BLOCKS_KEPT {
            self.recent.pop_front();
        }
        self.recent.push_back((block, encoded_len));
        self.emit(ReplicaOutput::Send {
            to: Destination::FollowersBehind { height },
            message: ChainMessage::Status { height },
        });
        // Proposals that arrived early for this height can be judged now.
        let core_height = self.core.as_ref().map(Core::height);
        if core_height == Some(height + 1) {
            let deferred: Vec<SignedProposal> = self.deferred.drain(..).collect();
            for signed in deferred {
                if signed.proposal.height == height + 1 {
                    self.submit_proposal(signed);
                }
            }
        }
    }

    fn serve_blocks(&mut self, to: Hash, from: Height, count: u16) {
        let count = usize::from(count).min(SYNC_BLOCKS_MAX);
        if from == 0 || from > self.height() || count == 0 {
            return;
        }
        // The kept recent blocks are consecutive up to the head: a range
        // starting at or after the oldest of them is served from memory.
        let recent_from = self
            .recent
            .front()
            .map_or(Height::MAX, |(block, _)| block.header.height);
        let sized: Vec<(Block, usize)> = if from >= recent_from {
            let skip = usize::try_from(from - recent_from).unwrap_or(usize::MAX);
            self.recent.iter().skip(skip).take(count).cloned().collect()
        } else {
            match self.store.blocks(from, count) {
                Ok(blocks) => blocks
                    .into_iter()
                    .map(|block| {
                        let size = hm_wire::encoded_len(&block);
                        (block, size)
                    })
                    .collect(),
                Err(error) => {
                    self.report(None, format!("cannot read blocks for sync: {error}"));
                    return;
                }
            }
        };
        let mut response = Vec::new();
        let mut bytes = 0;
        for (block, size) in sized {
            if !response.is_empty() && bytes + size > SYNC_RESPONSE_BYTES_MAX {
                break;
            }
            bytes += size;
            response.push(block);
        }
        self.emit(ReplicaOutput::Send {
            to: Destination::Peer(to),
            message: ChainMessage::Blocks(response),
        });
    }

    /// Asks the peer with the highest announced height for what we miss.
    fn request_sync(&mut self) {
        if self.sync.is_some() {
            return;
        }
        let ours = self.height();
        let best = self
            .peer_heights
            .iter()
            .filter(|(_, height)| **height > ours)
            .max_by_key(|(peer, height)| (**height, **peer))
            .map(|(peer, _)| *peer);
        if let Some(peer) = best {
            self.sync = Some(SyncRequest {
                peer,
                sent_at_ms: self.now.mono_ms,
            });
            self.emit(ReplicaOutput::Send {
                to: Destination::Peer(peer),
                message: ChainMessage::GetBlocks {
                    from: ours + 1,
                    count: SYNC_BLOCKS_MAX as u16,
                },
            });
        }
    }

    fn request_sync_from_validators(&mut self) {
        self.emit(ReplicaOutput::Send {
            to: Destination::Validators,
            message: ChainMessage::GetBlocks {
                from: self.height() + 1,
                count: 1,
            },
        });
    }

    fn on_blocks(&mut self, from: Hash, blocks: Vec<Block>) {
        if self.sync.as_ref().is_some_and(|sync| sync.peer == from) {
            self.sync = None;
        }
        let progress_from = self.height();
        for block in blocks.into_iter().take(SYNC_BLOCKS_MAX) {
            let height = block.header.height;
            if height <= self.height() {
                continue;
            }
            if height != self.height() + 1 {
                break;
            }
            // A certified block's timestamp was checked against the clocks
            // of the two thirds that committed it; ours may lag behind.
            match self.validate_block(
                &block.header,
                &block.body,
                &block.proof,
                u64::MAX / 2,
                Some(&block),
            ) {
                Ok(validated) => {
                    let certificate = block.commit.clone();
                    let round = block.commit.round;
                    self.append(block, validated, round);
                    // A validator that fell behind moves its core along.
                    if self.core.as_ref().map(Core::height) == Some(height) {
                        self.feed_core(Input::Commit(certificate));
                    }
                }
                Err(reason) => {
                    self.report(
                        Some(from),
                        format!("synced block {height} is invalid: {reason}"),
                    );
                    break;
                }
            }
        }
        if self.height() == progress_from {
            // Nothing usable: do not ask this peer again until it announces.
            self.peer_heights.remove(&from);
        }
        let best = self.peer_heights.values().max().copied().unwrap_or(0);
        if best > self.height() {
            self.request_sync();
        }
    }
}

fn client_tx_key(id: &Hash) -> Vec<u8> {
    let mut key = Vec::with_capacity(CLIENT_TX_PREFIX.len() + 32);
    key.extend_from_slice(CLIENT_TX_PREFIX);
    key.extend_from_slice(id.as_bytes());
    key
}

/// The client transactions kept on disk, by id (entries whose bytes do not
/// hash to their key are ignored: a torn or foreign value).
fn load_client_transactions<D: Disk>(
    disk: &D,
) -> Result<BTreeMap<Hash, Transaction>, ReplicaError> {
    let entries = disk
        .scan_prefix(
            crate::consensus::SIGNER_COLUMN_FAMILY,
            CLIENT_TX_PREFIX,
            CLIENT_TXS_KEPT_MAX,
        )
        .map_err(ChainError::Disk)?;
    Ok(entries
        .into_iter()
        .filter_map(|(key, value)| {
            let tx = Transaction(value);
            let id = tx.id();
            (tx.0.len() <= BLOCK_TRANSACTION_BYTES_MAX && key == client_tx_key(&id))
                .then_some((id, tx))
        })
        .collect())
}

fn pending_block_key(height: Height, hash: &Hash) -> Vec<u8> {
    let mut key = Vec::with_capacity(PENDING_BLOCK_PREFIX.len() + 8 + 32);
    key.extend_from_slice(PENDING_BLOCK_PREFIX);
    key.extend_from_slice(&height.to_be_bytes());
    key.extend_from_slice(hash.as_bytes());
    key
}

fn parse_pending_block_key(key: &[u8]) -> Option<(Height, Hash)> {
    let rest = key.strip_prefix(PENDING_BLOCK_PREFIX)?;
    let (height, hash) = rest.split_at_checked(8)?;
    let height = Height::from_be_bytes(height.try_into().ok()?);
    let hash: [u8; 32] = hash.try_into().ok()?;
    Some((height, Hash(hash)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
#[path = "replica_tests.rs"]
mod tests;
