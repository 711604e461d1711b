//! The chain service: runs an `hm_kernel::replica::Replica` over STOQ
//! connections of its own protocol (`hm/chain/1`) on the node's endpoint.
//!
//! Only plumbing lives here. Validators keep a link to every other
//! validator (consensus needs all-to-all); every node also keeps links to a
//! few peers of the membership overlay, over which block announcements and
//! sync travel. Like the membership shell: one event loop, and per link one
//! reader and one writer task with bounded queues.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddrV6;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hm_env::{Clock, Env, EnvDisk, EnvEntropy};
use hm_kernel::app::{KvApp, KvWorkload};
use hm_kernel::consensus::Signer;
use hm_kernel::genesis::Genesis;
use hm_kernel::proof::{GENESIS_PLOT_NONCE, SpacePlot};
use hm_kernel::replica::{
    ChainMessage, Destination, Now, Replica, ReplicaConfig, ReplicaOutput, ValidatorIdentity,
};
use hm_stoq::{Connection, Endpoint};
use hm_wire::{Hash, SigningKey};
use tokio::sync::mpsc;

use crate::api::{ApiCall, ApiRequest, ApiResponse};
use crate::link::Link;
use crate::node::NodeError;
use crate::status::StatusHandle;

/// ALPN id of chain connections.
pub const CHAIN_PROTOCOL: &[u8] = b"hm/chain/1";
/// Events waiting for the chain loop.
pub const CHAIN_EVENT_QUEUE_MAX: usize = 4_096;
/// Messages waiting to be written to one chain peer; more are dropped and
/// counted (consensus rebroadcasts, sync retries).
pub const CHAIN_SEND_QUEUE_MAX: usize = 1_024;
/// Chain dials in flight at once.
pub const CHAIN_DIALS_IN_FLIGHT_MAX: usize = 32;
/// How often links are reconciled with the wanted set.
pub const RECONCILE_INTERVAL_MS: u64 = 1_000;
/// Committed block hashes kept in the status for the checkers.
pub const STATUS_COMMITTED_MAX: usize = 100_000;

/// The overlay's current peers `(node id, address)`, shared by the
/// membership shell so followers know whom to sync with.
pub type OverlayPeers = Arc<Mutex<Vec<(Hash, SocketAddrV6)>>>;

#[derive(Debug, Clone)]
pub struct ChainConfig {
    pub genesis: Genesis,
    pub replica: ReplicaConfig,
    /// Where each validator listens (node id, address).
    pub validator_addrs: Vec<(Hash, SocketAddrV6)>,
    /// Overlay peers this node keeps chain links with.
    pub sync_peers_max: usize,
    /// Generate a key-value transaction every this many ms (0: none).
    pub workload_interval_ms: u64,
    pub connect_timeout_ms: u64,
    /// Byzantine validator behaviour (simulator only).
    #[cfg(feature = "byzantine")]
    pub byzantine: Option<hm_faults::chain::ChainFault>,
    /// The validators colluding with this one (`Split` needs to know them).
    #[cfg(feature = "byzantine")]
    pub byzantine_colluders: Vec<Hash>,
}

impl ChainConfig {
    pub fn new(genesis: Genesis, validator_addrs: Vec<(Hash, SocketAddrV6)>) -> ChainConfig {
        ChainConfig {
            genesis,
            replica: ReplicaConfig::default(),
            validator_addrs,
            sync_peers_max: 3,
            workload_interval_ms: 0,
            connect_timeout_ms: 5_000,
            #[cfg(feature = "byzantine")]
            byzantine: None,
            #[cfg(feature = "byzantine")]
            byzantine_colluders: Vec::new(),
        }
    }
}

pub(crate) enum ChainEvent {
    Connected {
        connection: Connection,
        outbound: bool,
    },
    DialFailed {
        peer: Hash,
    },
    Message {
        peer: Hash,
        link_id: u64,
        bytes: Vec<u8>,
    },
    Closed {
        peer: Hash,
        link_id: u64,
    },
    Api(ApiCall),
}

#[derive(Debug, Clone, Default)]
struct ChainCounters {
    /// Message kind → (messages, bytes) handed to links.
    sent_by_kind: BTreeMap<&'static str, (u64, u64)>,
    transactions_committed: u64,
    evidence_committed: u64,
    misbehaviour_reports: u64,
    messages_sent: u64,
    messages_received: u64,
    messages_dropped: u64,
    own_commits: u64,
    own_commit_latency_ms_total: u64,
    commit_intervals: u64,
    commit_interval_ms_total: u64,
    /// When the previous commit happened (ms since the shell started).
    last_commit_ms: Option<u64>,
}

type NodeReplica<E> = Replica<EnvDisk<E>, KvApp, Signer<EnvDisk<E>, EnvEntropy<E>>, EnvEntropy<E>>;

struct ChainShell<E: Env> {
    env: E,
    me: Hash,
    start: Instant,
    endpoint: Endpoint<E>,
    replica: NodeReplica<E>,
    config: ChainConfig,
    validators: BTreeSet<Hash>,
    links: BTreeMap<Hash, Link<Hash>>,
    dialing: BTreeSet<Hash>,
    events: mpsc::Sender<ChainEvent>,
    overlay: OverlayPeers,
    status: StatusHandle,
    next_link_id: u64,
    committed: Vec<Hash>,
    counters: ChainCounters,
    workload: KvWorkload,
    #[cfg(feature = "byzantine")]
    byzantine: Option<hm_faults::chain::ByzantineValidator<EnvEntropy<E>>>,
}

impl<E: Env> ChainShell<E> {
    fn now(&self) -> Now {
        let elapsed = self.env.clock().now().saturating_duration_since(self.start);
        Now {
            mono_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
            wall_ms: self.env.clock().wall_ms(),
        }
    }

    fn drain(&mut self) {
        while let Some(output) = self.replica.poll_output() {
            match output {
                ReplicaOutput::Send { to, message } => self.send(to, &message),
                ReplicaOutput::Committed {
                    height,
                    block_hash,
                    transactions,
                    evidence,
                    proposal_to_commit_ms,
                    ..
                } => {
                    let now_ms = self.now().mono_ms;
                    if let Some(last) = self.counters.last_commit_ms.replace(now_ms) {
                        self.counters.commit_intervals += 1;
                        self.counters.commit_interval_ms_total += now_ms.saturating_sub(last);
                    }
                    if let Some(latency_ms) = proposal_to_commit_ms {
                        self.counters.own_commits += 1;
                        self.counters.own_commit_latency_ms_total += latency_ms;
                    }
                    debug_assert_eq!(height as usize, self.committed.len() + 1);
                    if self.committed.len() < STATUS_COMMITTED_MAX {
                        self.committed.push(block_hash);
                    }
                    self.counters.transactions_committed += transactions as u64;
                    self.counters.evidence_committed += evidence as u64;
                }
                ReplicaOutput::Misbehaviour { peer, what } => {
                    self.counters.misbehaviour_reports += 1;
                    tracing::debug!(?peer, %what, "chain: misbehaviour");
                }
            }
        }
    }

    fn send(&mut self, to: Destination, message: &ChainMessage) {
        #[cfg(feature = "byzantine")]
        if let Some(byzantine) = self.byzantine.as_mut() {
            for (to, message) in byzantine.rewrite(to, message.clone()) {
                self.send_raw(to, &message);
            }
            return;
        }
        self.send_raw(to, message);
    }

    fn send_raw(&mut self, to: Destination, message: &ChainMessage) {
        let targets: Vec<Hash> = match to {
            Destination::Peer(peer) => vec![peer],
            Destination::Peers => self.links.keys().copied().collect(),
            Destination::Followers => self
                .links
                .keys()
                .filter(|peer| !self.validators.contains(peer))
                .copied()
                .collect(),
            Destination::Validators => {
                let linked: Vec<Hash> = self
                    .links
                    .keys()
                    .filter(|peer| self.validators.contains(peer))
                    .copied()
                    .collect();
                // A follower without validator links reaches them through
                // its peers (which forward transactions on).
                if linked.is_empty() && !self.replica.is_validator() {
                    self.links.keys().copied().collect()
                } else {
                    linked
                }
            }
        };
        if targets.is_empty() {
            return;
        }
        let bytes = message.encode();
        for target in targets {
            match self.links.get(&target) {
                Some(link) if link.outbox.try_send(bytes.clone()).is_ok() => {
                    self.counters.messages_sent += 1;
                    let kind = self
                        .counters
                        .sent_by_kind
                        .entry(message.kind())
                        .or_default();
                    kind.0 += 1;
                    kind.1 += bytes.len() as u64;
                }
                _ => self.counters.messages_dropped += 1,
            }
        }
    }

    /// The links this node wants: every validator (if it is one) and a few
    /// overlay peers.
    fn wanted(&self) -> Vec<(Hash, SocketAddrV6)> {
        let mut wanted: Vec<(Hash, SocketAddrV6)> = Vec::new();
        if self.replica.is_validator() {
            wanted.extend(
                self.config
                    .validator_addrs
                    .iter()
                    .filter(|(id, _)| *id != self.me)
                    .copied(),
            );
        }
        let overlay = self
            .overlay
            .lock()
            .map(|peers| peers.clone())
            .unwrap_or_default();
        wanted.extend(
            overlay
                .into_iter()
                .filter(|(id, _)| *id != self.me)
                .take(self.config.sync_peers_max),
        );
        wanted
    }

    fn reconcile(&mut self) {
        for (peer, addr) in self.wanted() {
            if self.links.contains_key(&peer)
                || self.dialing.contains(&peer)
                || self.dialing.len() >= CHAIN_DIALS_IN_FLIGHT_MAX
            {
                continue;
            }
            // Between two validators only the smaller id dials, so they do
            // not race to two connections.
            if self.validators.contains(&peer) && self.replica.is_validator() && peer < self.me {
                continue;
            }
            self.dialing.insert(peer);
            let endpoint = self.endpoint.clone();
            let events = self.events.clone();
            let env = self.env.clone();
            let timeout = Duration::from_millis(self.config.connect_timeout_ms);
            tokio::spawn(async move {
                let dial = endpoint.connect_protocol(
                    std::net::SocketAddr::V6(addr),
                    CHAIN_PROTOCOL,
                    Some(peer),
                );
                let event = match hm_env::timeout(env.clock(), timeout, dial).await {
                    Ok(Ok(connection)) => ChainEvent::Connected {
                        connection,
                        outbound: true,
                    },
                    _ => ChainEvent::DialFailed { peer },
                };
                let _ = events.send(event).await;
            });
        }
    }

    fn on_connected(&mut self, connection: Connection, outbound: bool) {
        let peer = connection.peer().node_id;
        if outbound {
            self.dialing.remove(&peer);
        }
        if peer == self.me {
            connection.close("chain: connected to itself");
            return;
        }
        let initiator = if outbound { self.me } else { peer };
        if let Some(existing) = self.links.get(&peer) {
            if initiator < existing.initiator {
                if let Some(old) = self.links.remove(&peer) {
                    old.connection.close("chain: duplicate connection");
                }
            } else {
                connection.close("chain: duplicate connection");
                return;
            }
        }
        let id = self.next_link_id;
        self.next_link_id += 1;
        let outbox = crate::link::spawn_link(
            &connection,
            CHAIN_SEND_QUEUE_MAX,
            self.events.clone(),
            move |bytes| ChainEvent::Message {
                peer,
                link_id: id,
                bytes,
            },
            ChainEvent::Closed { peer, link_id: id },
        );
        self.links.insert(
            peer,
            Link {
                id,
                connection,
                initiator,
                outbox,
            },
        );
        // Tell the new peer where we are, so either side can start syncing.
        let status = ChainMessage::Status {
            height: self.replica.height(),
        };
        self.send(Destination::Peer(peer), &status);
    }

    fn on_event(&mut self, event: ChainEvent) {
        match event {
            ChainEvent::Connected {
                connection,
                outbound,
            } => self.on_connected(connection, outbound),
            ChainEvent::DialFailed { peer } => {
                self.dialing.remove(&peer);
            }
            ChainEvent::Message {
                peer,
                link_id,
                bytes,
            } => {
                if self.links.get(&peer).is_none_or(|link| link.id != link_id) {
                    return;
                }
                self.counters.messages_received += 1;
                match ChainMessage::decode(&bytes) {
                    Ok(message) => {
                        let now = self.now();
                        self.replica.handle_message(now, peer, message);
                    }
                    Err(error) => {
                        tracing::warn!(?peer, %error, "malformed chain message; closing the link");
                        self.counters.misbehaviour_reports += 1;
                        if let Some(link) = self.links.remove(&peer) {
                            link.connection.close("malformed chain message");
                        }
                    }
                }
            }
            ChainEvent::Closed { peer, link_id } => {
                if self.links.get(&peer).is_some_and(|link| link.id == link_id) {
                    self.links.remove(&peer);
                }
            }
            ChainEvent::Api(call) => {
                let response = self.answer(call.request);
                // The client may have gone; nothing to do then.
                let _ = call.reply.send(response);
            }
        }
    }

    fn answer(&mut self, request: ApiRequest) -> ApiResponse {
        match request {
            ApiRequest::Submit(transactions) => {
                let now = self.now();
                let outcomes = self
                    .replica
                    .submit_transactions(now, transactions)
                    .into_iter()
                    .map(|outcome| outcome.map_err(|error| error.to_string()))
                    .collect();
                ApiResponse::Submitted(outcomes)
            }
            ApiRequest::Get { key } => ApiResponse::Value {
                height: self.replica.height(),
                value: self.replica.app().get(&key).map(<[u8]>::to_vec),
            },
            ApiRequest::Head => ApiResponse::Head {
                height: self.replica.height(),
                head: (self.replica.height() > 0).then(|| self.replica.head_hash()),
                validator: self.replica.is_validator(),
            },
        }
    }

    fn publish_status(&mut self) {
        let replica = &self.replica;
        let counters = &self.counters;
        let committed = &self.committed;
        let links = self.links.len();
        self.status.update(|status| {
            let chain = &mut status.chain;
            chain.enabled = true;
            chain.validator = replica.is_validator();
            chain.height = replica.height();
            chain.head = (replica.height() > 0).then(|| replica.head_hash());
            chain.round = replica.round();
            chain.mempool = replica.mempool_len();
            chain.links = links;
            chain.transactions_committed = counters.transactions_committed;
            chain.evidence_committed = counters.evidence_committed;
            chain.misbehaviour_reports = counters.misbehaviour_reports;
            chain.messages_sent = counters.messages_sent;
            chain.messages_received = counters.messages_received;
            chain.messages_dropped = counters.messages_dropped;
            chain.own_commits = counters.own_commits;
            chain.own_commit_latency_ms_total = counters.own_commit_latency_ms_total;
            chain.commit_intervals = counters.commit_intervals;
            chain.commit_interval_ms_total = counters.commit_interval_ms_total;
            chain.sent_by_kind = counters
                .sent_by_kind
                .iter()
                .map(|(kind, (messages, bytes))| (kind.to_string(), *messages, *bytes))
                .collect();
            let known = chain.committed.len();
            if known < committed.len() {
                chain.committed.extend_from_slice(&committed[known..]);
            }
        });
    }
}

/// What reaches the chain service from outside its own links.
pub(crate) struct ChainInbound {
    /// Connections of [`CHAIN_PROTOCOL`] the node's endpoint accepted.
    pub(crate) accepted: mpsc::Receiver<Connection>,
    /// Client API calls (see `crate::api`).
    pub(crate) api_calls: mpsc::Receiver<ApiCall>,
}

/// Runs the chain service until the endpoint closes.
pub(crate) async fn run_chain<E: Env>(
    env: E,
    endpoint: Endpoint<E>,
    signing_key: &SigningKey,
    config: ChainConfig,
    inbound: ChainInbound,
    overlay: OverlayPeers,
    status: StatusHandle,
) -> Result<(), NodeError> {
    let me = signing_key.verifying_key().fingerprint();
    let genesis = config.genesis.clone();
    let chain_id = genesis.chain_id();
    let validator_set = genesis
        .validator_set()
        .map_err(|error| NodeError::Config(format!("genesis: {error}")))?;
    let validators: BTreeSet<Hash> = validator_set.iter().map(|(_, v)| v.id).collect();
    let identity = if validators.contains(&me) {
        let plot = SpacePlot::generate(&me, GENESIS_PLOT_NONCE, genesis.proof.space_leaves_log2)
            .map_err(|error| NodeError::Config(format!("space plot: {error}")))?;
        let key = |what| {
            SigningKey::from_bytes(&signing_key.to_bytes())
                .map_err(|error| NodeError::Identity(format!("{what}: {error}")))
        };
        let signer = Signer::open(
            key("consensus signer")?,
            chain_id,
            EnvDisk(env.clone()),
            EnvEntropy(env.clone()),
        )
        .map_err(|error| NodeError::Config(format!("consensus signer: {error}")))?;
        Some(ValidatorIdentity {
            signer,
            block_key: key("block key")?,
            plot,
        })
    } else {
        None
    };
    let start = env.clock().now();
    let now = Now {
        mono_ms: 0,
        wall_ms: env.clock().wall_ms(),
    };
    let replica = Replica::new(
        genesis,
        EnvDisk(env.clone()),
        KvApp::new(),
        identity,
        config.replica.clone(),
        EnvEntropy(env.clone()),
        now,
    )
    .map_err(|error| NodeError::Config(format!("chain: {error}")))?;
    let (events, mut inbox) = mpsc::channel(CHAIN_EVENT_QUEUE_MAX);
    let ChainInbound {
        mut accepted,
        mut api_calls,
    } = inbound;
    {
        let events = events.clone();
        tokio::spawn(async move {
            while let Some(connection) = accepted.recv().await {
                let event = ChainEvent::Connected {
                    connection,
                    outbound: false,
                };
                if events.send(event).await.is_err() {
                    break;
                }
            }
        });
    }
    {
        let events = events.clone();
        tokio::spawn(async move {
            while let Some(call) = api_calls.recv().await {
                if events.send(ChainEvent::Api(call)).await.is_err() {
                    break;
                }
            }
        });
    }
    let nonce_base = u64::from_le_bytes(me.0[..8].try_into().unwrap_or([0; 8]));
    let mut shell = ChainShell {
        env: env.clone(),
        me,
        start,
        endpoint,
        replica,
        config,
        validators,
        links: BTreeMap::new(),
        dialing: BTreeSet::new(),
        events,
        overlay,
        status,
        next_link_id: 0,
        committed: Vec::new(),
        counters: ChainCounters::default(),
        workload: KvWorkload::new(64, 32, nonce_base),
        #[cfg(feature = "byzantine")]
        byzantine: None,
    };
    #[cfg(feature = "byzantine")]
    if let Some(fault) = shell.config.byzantine {
        let key = SigningKey::from_bytes(&signing_key.to_bytes())
            .map_err(|error| NodeError::Identity(error.to_string()))?;
        tracing::warn!(?fault, "byzantine: this validator misbehaves");
        shell.byzantine = Some(if fault == hm_faults::chain::ChainFault::Split {
            hm_faults::chain::ByzantineValidator::splitting(
                key,
                chain_id,
                validator_set.clone(),
                shell.config.byzantine_colluders.iter().copied().collect(),
                EnvEntropy(env.clone()),
            )
        } else {
            hm_faults::chain::ByzantineValidator::new(
                fault,
                key,
                chain_id,
                shell.validators.iter().copied().collect(),
                EnvEntropy(env.clone()),
            )
        });
    }
    // Blocks already on disk count as committed for the checkers.
    for height in 1..=shell.replica.height() {
        if let Ok(Some(block)) = shell.replica.store().block(height) {
            shell.committed.push(block.hash());
        }
    }
    shell.drain();
    let status_interval = Duration::from_millis(500);
    let mut next_status = start;
    let mut next_reconcile = start;
    let mut next_workload = start + Duration::from_millis(shell.config.workload_interval_ms);
    loop {
        let now = env.clock().now();
        if now >= next_reconcile {
            shell.reconcile();
            next_reconcile = now + Duration::from_millis(RECONCILE_INTERVAL_MS);
        }
        if shell.config.workload_interval_ms > 0 && now >= next_workload {
            let tx = shell.workload.next_tx(env.entropy());
            let at = shell.now();
            let _ = shell.replica.submit_transaction(at, tx);
            next_workload = now + Duration::from_millis(shell.config.workload_interval_ms);
        }
        shell.drain();
        if now >= next_status {
            shell.publish_status();
            next_status = now + status_interval;
        }
        let replica_at = start + Duration::from_millis(shell.replica.poll_timeout());
        let mut wake = replica_at.min(next_status).min(next_reconcile);
        if shell.config.workload_interval_ms > 0 {
            wake = wake.min(next_workload);
        }
        let wake = wake.max(now);
        tokio::select! {
            event = inbox.recv() => match event {
                Some(event) => shell.on_event(event),
                None => return Ok(()),
            },
            () = env.clock().sleep_until(wake) => {
                let at = shell.now();
                shell.replica.handle_tick(at);
            }
        }
        shell.drain();
    }
}
