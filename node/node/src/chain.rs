//! The chain service: runs an `hm_kernel::replica::Replica` over STOQ
//! connections of its own protocol (`hm/chain/1`) on the node's endpoint.
//!
//! Only plumbing lives here. Validators keep a link to every other
//! validator (consensus needs all-to-all); every node also keeps links to a
//! few peers of the membership overlay, over which block announcements and
//! sync travel. Like the membership shell: one event loop, and per link one
//! reader and one writer task with bounded queues.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddrV6;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hm_env::mem::SeededEntropy;
use hm_env::{Clock, Disk, Entropy, Env, EnvDisk, EnvEntropy};
use hm_kernel::app::{Application, KvWorkload};
use hm_kernel::consensus::Signer;
use hm_kernel::genesis::Genesis;
use hm_kernel::proof::{GENESIS_PLOT_NONCE, SpacePlot};
use hm_kernel::replica::{
    ChainMessage, Destination, Now, Replica, ReplicaConfig, ReplicaOutput, ValidatorIdentity,
};
use hm_stoq::{Connection, Endpoint};
use hm_wire::{Hash, SigningKey};
use tokio::sync::mpsc;

use crate::answer::{ApiNode, KnownPeers};
use crate::api::{ApiCall, ApiClient, ApiRequest, ApiResponse};
use crate::app::{NodeApp, kv_tx, trust_tx};
use crate::bootstrap::Phase;
use crate::conduct::{
    AuthorityConduct, AuthorityContext, AuthorityError, ChainConduct, ChainContext, Conduct,
    HonestAuthority, IssuanceDecision, IssuanceFacts, ProvedCertificate,
};
use crate::error::NodeError;
pub use crate::ids::{CHAIN_PROTOCOL, TRUST_CF};
use crate::ids::{KEY_KEM_SECRET, KEY_PHASE, KEY_PRESENTED};
use crate::link::Links;
use crate::links;
use crate::status::{COMMIT_LATENCY_BUCKETS_MS, StatusHandle};
use crate::trust::{AgentNow, AgentStatus, TrustAction, TrustAgent, TrustSettings, TrustShared};

/// Events waiting for the chain loop.
pub const CHAIN_EVENT_QUEUE_MAX: usize = 4_096;
/// Messages waiting to be written to one chain peer; more are dropped and
/// counted (consensus rebroadcasts, sync retries).
pub const CHAIN_SEND_QUEUE_MAX: usize = 1_024;
/// Chain dials in flight at once.
pub const CHAIN_DIALS_IN_FLIGHT_MAX: usize = 32;
/// An overlay peer whose chain dial failed is not dialled again for this
/// long (light nodes take no chain links; a peer that is down gets time).
pub const DIAL_BACKOFF_MS: u64 = 30_000;
/// Failed dials remembered (the oldest are forgotten).
pub const DIAL_FAILURES_KEPT_MAX: usize = 4_096;
/// How often links are reconciled with the wanted set.
pub const RECONCILE_INTERVAL_MS: u64 = 1_000;
/// Committed block hashes kept in the status for the checkers.
pub const STATUS_COMMITTED_MAX: usize = 100_000;
/// How often the TrustChain agent looks at the committed state.
pub const TRUST_TICK_MS: u64 = 500;
/// Encoded sync responses a shell keeps to send again.
pub const ENCODED_SYNC_RESPONSES_KEPT: usize = 4;
/// Certified headers kept for API answers (the head and recent anchors
/// light nodes ask for).
pub const CERTIFIED_HEADERS_KEPT: usize = 16;
/// Authority API calls (certificate requests, proofs) in flight at once.
pub const TRUST_CALLS_IN_FLIGHT_MAX: usize = 4;
/// An authority API call is abandoned after this long.
pub const TRUST_CALL_TIMEOUT_MS: u64 = 4_000;

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
    /// TrustChain and the bootstrap phases (None: the node stays in phase
    /// 0 and presents no certificate).
    pub trust: Option<TrustSettings>,
    /// Whether the node replicates the chain or follows it as a light client.
    pub role: NodeRole,
    /// Full nodes a light node asks (their API addresses); empty: the
    /// validators.
    pub full_nodes: Vec<SocketAddrV6>,
}

/// How a node takes part in the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeRole {
    /// Stores and executes every block, serves blocks and proofs; a
    /// validator when the genesis names its key, a full node otherwise.
    #[default]
    Replica,
    /// Keeps trusted headers only (verifying commit certificates) and asks
    /// full nodes for what it needs, with proofs.
    Light,
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
            trust: None,
            role: NodeRole::Replica,
            full_nodes: Vec::new(),
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
    /// An authority answered (or did not) a certificate request.
    CertificateAnswer {
        authority: Hash,
        answer: Result<hm_trustchain::cert::Certificate, String>,
    },
    /// An authority answered (or did not) a head request.
    HeadAnswer {
        authority: Hash,
        answer: Result<hm_trustchain::log::SignedTreeHead, String>,
    },
    /// An authority answered (or did not) a proof request.
    ProofAnswer {
        authority: Hash,
        answer: Result<ProvedCertificate, String>,
    },
}

#[derive(Debug, Clone, Default)]
struct ChainCounters {
    /// Message kind → (messages, bytes) handed to links.
    sent_by_kind: BTreeMap<&'static str, (u64, u64)>,
    transactions_committed: u64,
    evidence_committed: u64,
    misbehaviour_reports: u64,
    /// Light clients' misbehaviour evidence that checked out.
    light_evidence_taken: u64,
    messages_sent: u64,
    messages_received: u64,
    messages_dropped: u64,
    own_commits: u64,
    own_commit_latency_ms_total: u64,
    /// See `ChainStatus::own_commit_latency_buckets`.
    own_commit_latency_buckets: [u64; COMMIT_LATENCY_BUCKETS_MS.len() + 1],
    commit_intervals: u64,
    commit_interval_ms_total: u64,
    /// When the previous commit happened (ms since the shell started).
    last_commit_ms: Option<u64>,
}

type NodeReplica<E> =
    Replica<EnvDisk<E>, NodeApp, Signer<EnvDisk<E>, EnvEntropy<E>>, EnvEntropy<E>>;

struct ChainShell<E: Env> {
    env: E,
    me: Hash,
    start: Instant,
    endpoint: Endpoint<E>,
    replica: NodeReplica<E>,
    config: ChainConfig,
    validators: BTreeSet<Hash>,
    links: Links<Hash>,
    /// Turns the choice of peers a relayed transaction goes to.
    relay_turn: u64,
    /// The last few sync responses sent, encoded, by the hashes of their
    /// blocks: followers one block behind all ask for the newest block.
    /// A committed block never changes on this node, so its header hash
    /// names the whole of it (commit certificate included).
    encoded_blocks: VecDeque<(Vec<Hash>, bytes::Bytes)>,
    /// The last few certified headers served over the API, by height: light
    /// nodes poll the head every few seconds, and a committed height's
    /// header never changes, so the block is not decompressed and decoded
    /// again for each of them. At most [`CERTIFIED_HEADERS_KEPT`].
    certified_headers: Mutex<VecDeque<crate::api::CertifiedHeader>>,
    dialing: BTreeSet<Hash>,
    /// Overlay peers whose chain dial failed, and when (mono ms): not
    /// dialled again for [`DIAL_BACKOFF_MS`].
    dial_failed_at: BTreeMap<Hash, u64>,
    events: mpsc::Sender<ChainEvent>,
    overlay: OverlayPeers,
    status: StatusHandle,
    committed: Vec<Hash>,
    /// The height the status shows.
    published_height: hm_kernel::block::Height,
    counters: ChainCounters,
    /// The replica said it cannot go on (`ReplicaOutput::Failed`).
    failed: Option<String>,
    workload: KvWorkload,
    /// This node's key (authority signatures, certificate requests).
    key: SigningKey,
    trust: TrustShared,
    agent: Option<TrustAgent<EnvEntropy<E>>>,
    trust_calls_in_flight: usize,
    /// How chain messages leave (`None`: as the replica made them).
    chain_conduct: Option<Box<dyn ChainConduct>>,
    /// The certificate authority's policy, heads and proofs.
    authority: Box<dyn AuthorityConduct>,
    /// What the API answers instead of the honest answers (`None`: honest).
    api_conduct: Option<Box<dyn crate::conduct::ApiConduct>>,
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
                    log_head,
                    ..
                } => {
                    {
                        let mut anchors = hm_env::sync::lock(&self.trust.anchors);
                        anchors.note_height(height);
                        anchors.insert(height, log_head);
                    }
                    let now_ms = self.now().mono_ms;
                    if let Some(last) = self.counters.last_commit_ms.replace(now_ms) {
                        self.counters.commit_intervals += 1;
                        self.counters.commit_interval_ms_total += now_ms.saturating_sub(last);
                    }
                    if let Some(latency_ms) = proposal_to_commit_ms {
                        self.counters.own_commits += 1;
                        self.counters.own_commit_latency_ms_total += latency_ms;
                        let bucket =
                            COMMIT_LATENCY_BUCKETS_MS.partition_point(|bound| *bound < latency_ms);
                        self.counters.own_commit_latency_buckets[bucket] += 1;
                    }
                    debug_assert_eq!(height as usize, self.committed.len() + 1);
                    if self.committed.len() < STATUS_COMMITTED_MAX {
                        self.committed.push(block_hash);
                    }
                    self.counters.transactions_committed += transactions as u64;
                    self.counters.evidence_committed += evidence.len() as u64;
                    if !evidence.is_empty() {
                        let mut monitor = self.trust.monitor();
                        for evidence in &evidence {
                            monitor.on_committed_evidence(evidence);
                        }
                    }
                }
                ReplicaOutput::Misbehaviour { peer, what } => {
                    self.counters.misbehaviour_reports += 1;
                    tracing::debug!(me = %self.me, ?peer, %what, "chain: misbehaviour");
                }
                ReplicaOutput::Failed { reason } => {
                    tracing::error!(%reason, "chain: the replica cannot go on; stopping");
                    self.failed.get_or_insert(reason);
                }
            }
        }
    }

    /// The replica's failure, if it reported one: the service stops.
    fn check_failed(&mut self) -> Result<(), NodeError> {
        match self.failed.take() {
            Some(reason) => Err(NodeError::ReplicaFailed(reason)),
            None => Ok(()),
        }
    }

    fn send(&mut self, to: Destination, message: &ChainMessage) {
        if let Some(conduct) = self.chain_conduct.as_mut() {
            let replica = &mut self.replica;
            let out = conduct.outgoing(to, message.clone(), &mut |block| replica.build_twin(block));
            for (to, message) in out {
                self.send_raw(to, &message);
            }
            return;
        }
        self.send_raw(to, message);
    }

    fn encode(&mut self, message: &ChainMessage) -> bytes::Bytes {
        let ChainMessage::Blocks(blocks) = message else {
            return bytes::Bytes::from(message.encode());
        };
        if self.chain_conduct.is_some() {
            // It may have rewritten the blocks: nothing to share.
            return bytes::Bytes::from(message.encode());
        }
        let key: Vec<Hash> = blocks.iter().map(hm_kernel::block::Block::hash).collect();
        if let Some((_, bytes)) = self.encoded_blocks.iter().find(|(kept, _)| *kept == key) {
            return bytes.clone();
        }
        let bytes = bytes::Bytes::from(message.encode());
        if self.encoded_blocks.len() >= ENCODED_SYNC_RESPONSES_KEPT {
            self.encoded_blocks.pop_front();
        }
        self.encoded_blocks.push_back((key, bytes.clone()));
        bytes
    }

    fn send_raw(&mut self, to: Destination, message: &ChainMessage) {
        let linked: Vec<Hash> = self.links.peers().copied().collect();
        let replica = &self.replica;
        let targets = links::resolve(
            &to,
            &linked,
            &self.validators,
            replica.is_validator(),
            |peer, height| replica.peer_holds(peer, height),
            &mut self.relay_turn,
        );
        if targets.is_empty() {
            return;
        }
        let bytes = self.encode(message);
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

    /// The links this node wants (see [`links::wanted`]).
    fn wanted(&self) -> Vec<(Hash, SocketAddrV6)> {
        let now_ms = self.now().mono_ms;
        let overlay: Vec<(Hash, SocketAddrV6)> = self
            .overlay
            .lock()
            .map(|peers| peers.clone())
            .unwrap_or_default()
            .into_iter()
            .filter(|(peer, _)| {
                self.dial_failed_at
                    .get(peer)
                    .is_none_or(|at| now_ms >= at.saturating_add(DIAL_BACKOFF_MS))
            })
            .collect();
        links::wanted(
            &links::LinkPolicy {
                me: self.me,
                is_validator: self.replica.is_validator(),
                validator_addrs: &self.config.validator_addrs,
                sync_peers_max: self.config.sync_peers_max,
            },
            overlay,
        )
    }

    fn reconcile(&mut self) {
        for (peer, addr) in self.wanted() {
            if self.links.contains(&peer)
                || self.dialing.contains(&peer)
                || self.dialing.len() >= CHAIN_DIALS_IN_FLIGHT_MAX
            {
                continue;
            }
            if !links::dials(
                self.me,
                self.replica.is_validator(),
                peer,
                self.validators.contains(&peer),
            ) {
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
        let Some((initiator, _replaced)) =
            self.links
                .offer(self.me, peer, outbound, &connection, "chain: ")
        else {
            return;
        };
        self.links.attach(
            peer,
            connection,
            initiator,
            self.events.clone(),
            |link_id| {
                move |bytes| ChainEvent::Message {
                    peer,
                    link_id,
                    bytes,
                }
            },
            |link_id| ChainEvent::Closed { peer, link_id },
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
                if !self.validators.contains(&peer) {
                    // A light node (it takes no chain links) or one that is
                    // down: other overlay peers are tried meanwhile.
                    let now_ms = self.now().mono_ms;
                    if self.dial_failed_at.len() >= DIAL_FAILURES_KEPT_MAX {
                        self.dial_failed_at.pop_first();
                    }
                    self.dial_failed_at.insert(peer, now_ms);
                }
            }
            ChainEvent::Message {
                peer,
                link_id,
                bytes,
            } => {
                if self.links.current(&peer, link_id).is_none() {
                    return; // from a connection already replaced or closed
                }
                self.counters.messages_received += 1;
                match ChainMessage::decode(&bytes) {
                    Ok(message) => {
                        if let Some(conduct) = self.chain_conduct.as_mut() {
                            for (to, out) in conduct.incoming(&message) {
                                self.send_raw(to, &out);
                            }
                        }
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
                if self.links.current(&peer, link_id).is_some() {
                    self.links.remove(&peer);
                }
            }
            ChainEvent::Api(call) => {
                let request = self.api_conduct.is_some().then(|| call.request.clone());
                let mut response = crate::answer::answer(self, call.request);
                if let (Some(conduct), Some(request)) = (self.api_conduct.as_mut(), request) {
                    response = conduct.answer(&request, response);
                }
                // The client may have gone; nothing to do then.
                let _ = call.reply.send(response);
            }
            ChainEvent::CertificateAnswer { authority, answer } => {
                self.trust_calls_in_flight = self.trust_calls_in_flight.saturating_sub(1);
                tracing::debug!(node = %self.endpoint.local_addr(), %authority, ok = answer.is_ok(), error = ?answer.as_ref().err(), "trust: certificate answer");
                let now = self.agent_now();
                if let Some(agent) = self.agent.as_mut() {
                    agent.on_certificate(now, authority, answer);
                }
            }
            ChainEvent::HeadAnswer { authority, answer } => {
                self.trust_calls_in_flight = self.trust_calls_in_flight.saturating_sub(1);
                if let Some(agent) = self.agent.as_mut() {
                    let trust = self.trust.trust.read();
                    let mut monitor = self.trust.monitor();
                    agent.on_head(authority, answer, &trust, &mut monitor);
                }
            }
            ChainEvent::ProofAnswer { authority, answer } => {
                self.trust_calls_in_flight = self.trust_calls_in_flight.saturating_sub(1);
                tracing::debug!(node = %self.endpoint.local_addr(), %authority, ok = answer.is_ok(), error = ?answer.as_ref().err(), "trust: proof answer");
                if let Some(agent) = self.agent.as_mut() {
                    let trust = self.trust.trust.read();
                    let mut monitor = self.trust.monitor();
                    agent.on_proof(authority, answer, &trust, &mut monitor);
                }
            }
        }
    }

    fn agent_now(&self) -> AgentNow {
        let now = self.now();
        AgentNow {
            mono_ms: now.mono_ms,
            wall_ms: now.wall_ms,
        }
    }

    /// Runs the TrustChain agent once and performs what it asks.
    fn trust_tick(&mut self) {
        // An agent runs only with [chain.trust] settings.
        let (Some(_), Some(settings)) = (&self.agent, &self.config.trust) else {
            return;
        };
        let now_ms = self.now().mono_ms;
        let live = settings.chain_is_live(self.counters.last_commit_ms, now_ms);
        let now = AgentNow {
            mono_ms: now_ms,
            wall_ms: self.env.clock().wall_ms(),
        };
        let actions = {
            let trust = self.trust.trust.read();
            let mut monitor = self.trust.monitor();
            match self.agent.as_mut() {
                Some(agent) => agent.tick(now, &trust, live, &mut monitor),
                None => Vec::new(),
            }
        };
        for action in actions {
            self.perform_trust(action);
        }
    }

    fn perform_trust(&mut self, action: TrustAction) {
        tracing::debug!(node = %self.endpoint.local_addr(), action = action.kind(), "trust: action");
        match action {
            TrustAction::Submit(tx) => {
                if let hm_trustchain::tx::TrustTx::Report(report) = tx.as_ref() {
                    tracing::info!(kind = ?report.kind(), "trust: reporting misbehaviour");
                }
                let now = self.now();
                if let Err(error) = self.replica.submit_transaction(now, trust_tx(&tx)) {
                    tracing::debug!(%error, "trust: transaction not admitted");
                }
            }
            TrustAction::Present(bytes) => {
                // Kept on disk, so a restarted node presents it from its
                // first handshake on.
                if let Err(error) = self.env.disk().put_synced(TRUST_CF, KEY_PRESENTED, &bytes) {
                    tracing::warn!(%error, "trust: cannot persist the presented certificate");
                }
                if let Err(error) = self.endpoint.present(bytes) {
                    tracing::warn!(%error, "trust: cannot present the certificate");
                }
            }
            TrustAction::PersistPhase(phase) => {
                if let Err(error) =
                    self.env
                        .disk()
                        .put_synced(TRUST_CF, KEY_PHASE, &[phase.number()])
                {
                    tracing::warn!(%error, "trust: cannot persist the phase");
                }
                self.trust.set_phase(phase);
                tracing::info!(%phase, "bootstrap phase reached");
            }
            TrustAction::AskCertificate {
                authority,
                addr,
                request,
            } => {
                if authority == self.me {
                    let answer = self
                        .issue_as_authority(*request)
                        .map_err(|error| error.to_string());
                    let now = self.agent_now();
                    if let Some(agent) = self.agent.as_mut() {
                        agent.on_certificate(now, authority, answer);
                    }
                    return;
                }
                self.call_authority(
                    addr,
                    ApiRequest::RequestCertificate(request),
                    move |response| ChainEvent::CertificateAnswer {
                        authority,
                        answer: expect_answer(response, |answer| match answer {
                            ApiResponse::Certificate(certificate) => Some(*certificate),
                            _ => None,
                        }),
                    },
                );
            }
            TrustAction::AskHead { authority, addr } => {
                self.call_authority(addr, ApiRequest::TreeHead, move |response| {
                    ChainEvent::HeadAnswer {
                        authority,
                        answer: expect_answer(response, |answer| match answer {
                            ApiResponse::TreeHead(head) => Some(*head),
                            _ => None,
                        }),
                    }
                });
            }
            TrustAction::AskProof {
                authority,
                addr,
                fingerprint,
            } => {
                if authority == self.me {
                    let answer = self
                        .prove_as_authority(&fingerprint)
                        .map_err(|error| error.to_string());
                    if let Some(agent) = self.agent.as_mut() {
                        let trust = self.trust.trust.read();
                        let mut monitor = self.trust.monitor();
                        agent.on_proof(authority, answer, &trust, &mut monitor);
                    }
                    return;
                }
                self.call_authority(
                    addr,
                    ApiRequest::CertificateProof { fingerprint },
                    move |response| ChainEvent::ProofAnswer {
                        authority,
                        answer: expect_answer(response, |answer| match answer {
                            ApiResponse::Proof { proof, head } => Some((*proof, *head)),
                            _ => None,
                        }),
                    },
                );
            }
        }
    }

    /// One API call to an authority, answered into the event loop.
    fn call_authority(
        &mut self,
        addr: SocketAddrV6,
        request: ApiRequest,
        into_event: impl FnOnce(Result<ApiResponse, String>) -> ChainEvent + Send + 'static,
    ) {
        if self.trust_calls_in_flight >= TRUST_CALLS_IN_FLIGHT_MAX {
            // Dropped: the agent asks again after its timeout.
            return;
        }
        self.trust_calls_in_flight += 1;
        let endpoint = self.endpoint.clone();
        let events = self.events.clone();
        let env = self.env.clone();
        tokio::spawn(async move {
            let timeout = Duration::from_millis(TRUST_CALL_TIMEOUT_MS);
            let call = async {
                let client = ApiClient::connect(&endpoint, std::net::SocketAddr::V6(addr), timeout)
                    .await
                    .map_err(|error| error.to_string())?;
                let response = client
                    .call(&request)
                    .await
                    .map_err(|error| error.to_string());
                client.close();
                response
            };
            let response = match hm_env::timeout(env.clock(), timeout, call).await {
                Ok(response) => response,
                Err(_) => Err("the authority did not answer in time".into()),
            };
            let _ = events.send(into_event(response)).await;
        });
    }

    /// Acting as a certificate authority (genesis validators): checks the
    /// request, signs a certificate and submits it to the log.
    fn issue_as_authority(
        &mut self,
        request: hm_trustchain::cert::SignedRequest,
    ) -> Result<hm_trustchain::cert::Certificate, AuthorityError> {
        let (revoked, stolen) = {
            let trust = self.trust.trust.read();
            if !trust.authorities().contains(&self.me) {
                return Err(AuthorityError::NotAnAuthority);
            }
            request.verify()?;
            let subject = request.subject();
            let stolen = request.request.dns_names.iter().find(|name| {
                trust
                    .record(name)
                    .is_some_and(|record| record.owner != subject)
            });
            (
                trust.is_authority_revoked(&self.me),
                stolen.map(ToString::to_string),
            )
        };
        let facts = IssuanceFacts {
            revoked,
            stolen_name: stolen,
        };
        let log = match self.authority.decide(&facts) {
            IssuanceDecision::Refuse(reason) => return Err(reason.into()),
            IssuanceDecision::Issue { log } => log,
        };
        let certificate = hm_trustchain::cert::Certificate::issue_by_authority(
            request,
            &self.key,
            self.env.clock().wall_ms(),
            self.env.entropy(),
        );
        if log {
            let now = self.now();
            let log = hm_trustchain::tx::TrustTx::LogCertificate(certificate.clone());
            self.replica.submit_transaction(now, trust_tx(&log))?;
        }
        Ok(certificate)
    }

    /// This authority's signed head of its committed certificate log.
    fn head_as_authority(&mut self) -> Result<hm_trustchain::log::SignedTreeHead, AuthorityError> {
        let trust = self.trust.trust.read();
        if !trust.authorities().contains(&self.me) {
            return Err(AuthorityError::NotAnAuthority);
        }
        let head = hm_trustchain::log::SignedTreeHead::sign(
            trust.log_head(),
            &self.key,
            self.env.entropy(),
        );
        drop(trust);
        Ok(self.authority.tree_head(head))
    }

    /// A certificate's inclusion proof at the committed head, with the
    /// head signed by this authority.
    fn prove_as_authority(
        &mut self,
        fingerprint: &Hash,
    ) -> Result<ProvedCertificate, AuthorityError> {
        let proof =
            self.trust
                .trust
                .read()
                .inclusion_proof(fingerprint)
                .ok_or(AuthorityError::NotLogged {
                    fingerprint: *fingerprint,
                });
        let honest = proof.and_then(|proof| self.head_as_authority().map(|head| (proof, head)));
        self.authority.proof(fingerprint, honest)
    }

    /// Shows new commits in the status at once (the full status follows
    /// every `status_interval`): a status that lags its node's height by
    /// up to half a second misleads operators, and a checker deciding
    /// which side of a partition committed what.
    fn publish_new_commits(&mut self) {
        let height = self.replica.height();
        if self.published_height == height {
            return;
        }
        let head = (height > 0).then(|| self.replica.head_hash());
        let committed = &self.committed;
        self.status.update(|status| {
            let chain = &mut status.chain;
            chain.height = height;
            chain.head = head;
            let known = chain.committed.len();
            if known < committed.len() {
                chain.committed.extend_from_slice(&committed[known..]);
            }
        });
        self.published_height = height;
    }

    /// Starts this life's chain status from what the disk held at boot:
    /// the committed list is replaced, not extended, and the life counted.
    fn publish_boot(&mut self, boot_height: hm_kernel::block::Height) {
        debug_assert_eq!(boot_height, self.replica.height());
        let head = (boot_height > 0).then(|| self.replica.head_hash());
        let committed = self.committed.clone();
        self.status.update(|status| {
            let chain = &mut status.chain;
            chain.boots += 1;
            chain.boot_height = boot_height;
            chain.height = boot_height;
            chain.head = head;
            chain.committed = committed;
        });
        self.published_height = boot_height;
    }

    fn publish_status(&mut self) {
        self.publish_new_commits();
        let replica = &self.replica;
        let counters = &self.counters;
        let links = self.links.len();
        let agent = self.agent.as_ref().map(TrustAgent::status);
        let record = self.trust.record();
        let (log_head, findings) = {
            let trust = self.trust.trust.read();
            (trust.log_head(), trust.findings())
        };
        let monitor = self.trust.monitor().stats();
        self.status.update(|status| {
            if let Some(agent) = agent {
                let trust = &mut status.trust;
                trust.enabled = true;
                trust.phase = agent.phase.number();
                trust.phase_entered_ms = agent.phase_entered_ms;
                trust.missing_for_next_phase = agent.missing.map(str::to_string);
                trust.certificate = agent.certificate;
                trust.certificate_chain_issued = agent.chain_issued;
                trust.certificate_requests = agent.certificate_requests;
                trust.renewals = agent.renewals;
                trust.name_claims = agent.name_claims;
                trust.reports_submitted = agent.reports_submitted;
                trust.head_inconsistencies = agent.head_inconsistencies;
                trust.false_heads_seen = agent.false_heads;
                trust.log_head = Some(log_head);
                trust.findings = findings;
                trust.accepted_certificates = record.accepted;
                trust.refused_certificates = record.refused;
                trust.pending_certificates = record.pending;
                trust.uncertified_refused = record.uncertified_refused;
                trust.monitor_reports_queued = monitor.reports_queued;
            }
        });
        self.status.update(|status| {
            let chain = &mut status.chain;
            chain.enabled = true;
            chain.validator = replica.is_validator();
            chain.round = replica.round();
            chain.mempool = replica.mempool_len();
            chain.links = links;
            chain.transactions_committed = counters.transactions_committed;
            chain.evidence_committed = counters.evidence_committed;
            chain.misbehaviour_reports = counters.misbehaviour_reports;
            chain.light_evidence_taken = counters.light_evidence_taken;
            chain.messages_sent = counters.messages_sent;
            chain.messages_received = counters.messages_received;
            chain.messages_dropped = counters.messages_dropped;
            chain.own_commits = counters.own_commits;
            chain.own_commit_latency_ms_total = counters.own_commit_latency_ms_total;
            chain.own_commit_latency_buckets = counters.own_commit_latency_buckets.to_vec();
            chain.commit_intervals = counters.commit_intervals;
            chain.commit_interval_ms_total = counters.commit_interval_ms_total;
            chain.sent_by_kind = counters
                .sent_by_kind
                .iter()
                .map(|(kind, (messages, bytes))| (kind.to_string(), *messages, *bytes))
                .collect();
        });
    }
}

/// The chain service as the API sees it (`answer.rs` decides the answers).
impl<E: Env> ApiNode for ChainShell<E> {
    fn node_id(&self) -> Hash {
        self.me
    }

    fn height(&self) -> hm_kernel::block::Height {
        self.replica.height()
    }

    fn head_hash(&self) -> Hash {
        self.replica.head_hash()
    }

    fn is_validator(&self) -> bool {
        self.replica.is_validator()
    }

    fn phase(&self) -> u8 {
        self.trust.phase().number()
    }

    fn name(&self) -> Option<String> {
        let settings = self.config.trust.as_ref()?;
        settings.name.as_ref().map(ToString::to_string)
    }

    fn value(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.replica.app().kv().get(key).map(<[u8]>::to_vec)
    }

    fn block(
        &self,
        height: hm_kernel::block::Height,
    ) -> Result<Option<hm_kernel::block::Block>, hm_kernel::chain::ChainError> {
        self.replica.store().block(height)
    }

    fn certified_header(
        &self,
        height: hm_kernel::block::Height,
    ) -> Result<Option<crate::api::CertifiedHeader>, hm_kernel::chain::ChainError> {
        let kept = |headers: &VecDeque<crate::api::CertifiedHeader>| {
            headers
                .iter()
                .find(|certified| certified.header.height == height)
                .cloned()
        };
        if let Some(certified) = kept(&hm_env::sync::lock(&self.certified_headers)) {
            return Ok(Some(certified));
        }
        let Some(block) = self.replica.store().block(height)? else {
            return Ok(None);
        };
        let certified = crate::api::CertifiedHeader {
            header: block.header,
            commit: block.commit,
        };
        let mut headers = hm_env::sync::lock(&self.certified_headers);
        if headers.len() >= CERTIFIED_HEADERS_KEPT {
            headers.pop_front();
        }
        headers.push_back(certified.clone());
        Ok(Some(certified))
    }

    fn prove_state(
        &self,
        module: u8,
        key: &[u8],
    ) -> Option<(Option<Vec<u8>>, hm_kernel::state::ModuleProof)> {
        self.replica.app().prove(module, key)
    }

    fn transaction_status(&self, id: &Hash) -> hm_kernel::replica::TransactionStatus {
        self.replica.transaction_status(id)
    }

    fn current_certificate(&self, subject: &Hash) -> Option<Hash> {
        let now_ms = self.env.clock().wall_ms();
        self.trust
            .trust
            .read()
            .current_certificate(subject, now_ms)
            .map(|(certificate, _)| certificate.fingerprint())
    }

    fn inclusion_at(
        &self,
        fingerprint: &Hash,
        tree_size: u64,
    ) -> Result<hm_trustchain::log::InclusionProof, String> {
        self.trust
            .trust
            .read()
            .inclusion_proof_at(fingerprint, tree_size)
    }

    fn certificate(
        &self,
        fingerprint: &Hash,
    ) -> Option<(
        hm_trustchain::cert::Certificate,
        hm_trustchain::app::CertStatus,
    )> {
        self.trust.trust.read().certificate(fingerprint)
    }

    fn record(&self, name: &hm_trustchain::name::DnsName) -> Option<hm_trustchain::dns::DnsRecord> {
        self.trust.trust.read().record(name)
    }

    fn log_size(&self) -> u64 {
        self.trust.trust.read().log_head().size
    }

    fn agent(&self) -> Option<AgentStatus> {
        self.agent.as_ref().map(TrustAgent::status)
    }

    fn peers(&self) -> KnownPeers {
        let (members, overlay) = self.status.with(|status| {
            let ids = |list: &[crate::membership::NodeId]| -> BTreeSet<Hash> {
                list.iter().map(|id| Hash::from(id.0)).collect()
            };
            (ids(&status.alive_members), ids(&status.active_peers))
        });
        KnownPeers {
            members,
            overlay,
            chain_links: self.links.peers().copied().collect(),
            validators: self.validators.iter().copied().collect(),
        }
    }

    fn submit(
        &mut self,
        transactions: Vec<hm_kernel::block::Transaction>,
    ) -> Vec<Result<Hash, String>> {
        let now = self.now();
        self.replica
            .submit_transactions(now, transactions)
            .into_iter()
            .map(|outcome| outcome.map_err(|error| error.to_string()))
            .collect()
    }

    fn issue_certificate(
        &mut self,
        request: hm_trustchain::cert::SignedRequest,
    ) -> Result<hm_trustchain::cert::Certificate, AuthorityError> {
        self.issue_as_authority(request)
    }

    fn prove_certificate(
        &mut self,
        fingerprint: &Hash,
    ) -> Result<ProvedCertificate, AuthorityError> {
        self.prove_as_authority(fingerprint)
    }

    fn signed_head(&mut self) -> Result<hm_trustchain::log::SignedTreeHead, AuthorityError> {
        self.head_as_authority()
    }

    fn renew_certificate(&mut self) -> Option<Result<Hash, &'static str>> {
        self.agent.as_mut().map(TrustAgent::renew_now)
    }

    fn report_misbehaviour(
        &mut self,
        evidence: &hm_kernel::light::Misbehaviour,
    ) -> Result<hm_kernel::replica::MisbehaviourVerdict, String> {
        let now = self.now();
        let verdict = self
            .replica
            .report_misbehaviour(now, evidence)
            .map_err(|error| format!("misbehaviour evidence refused: {error}"))?;
        self.counters.light_evidence_taken += 1;
        tracing::warn!(
            me = %self.me,
            conflict = %verdict.conflict,
            convicted = verdict.convicted.len(),
            suspects = verdict.suspects.len(),
            pooled = verdict.pooled,
            "chain: a light client proved that validators signed conflicting headers; \
             their duplicate votes go on chain where the fork was in one round. \
             More than a third of the stake misbehaved: stop trusting new headers \
             and re-check the validator set out of band"
        );
        Ok(verdict)
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
#[allow(clippy::too_many_arguments)] // the service's wiring, passed once
pub(crate) async fn run_chain<E: Env>(
    env: E,
    endpoint: Endpoint<E>,
    signing_key: &SigningKey,
    config: ChainConfig,
    inbound: ChainInbound,
    overlay: OverlayPeers,
    status: StatusHandle,
    trust: TrustShared,
    conduct: Conduct,
) -> Result<(), NodeError> {
    let me = signing_key.verifying_key().fingerprint();
    let genesis = config.genesis.clone();
    let chain_id = genesis.chain_id();
    let validator_set = genesis.validator_set()?;
    let validators: BTreeSet<Hash> = validator_set.iter().map(|(_, v)| v.id).collect();
    let identity = if validators.contains(&me) {
        let plot = SpacePlot::generate(&me, GENESIS_PLOT_NONCE, genesis.proof.space_leaves_log2)?;
        let signer = Signer::open(
            signing_key.duplicate(),
            chain_id,
            EnvDisk(env.clone()),
            EnvEntropy(env.clone()),
        )?;
        Some(ValidatorIdentity {
            signer,
            block_key: signing_key.duplicate(),
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
        NodeApp::new(trust.trust.clone()),
        identity,
        config.replica.clone(),
        EnvEntropy(env.clone()),
        now,
    )?;
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
    let key = signing_key.duplicate();
    let agent = match config.trust.clone() {
        Some(settings) => {
            let kem = load_or_create_kem_key(&env)?;
            let persisted = load_phase(&env)?;
            trust.set_phase(persisted);
            Some(
                TrustAgent::new(
                    signing_key.duplicate(),
                    kem.public_key(),
                    EnvEntropy(env.clone()),
                    settings,
                    endpoint.local_addr(),
                    config.validator_addrs.clone(),
                    validator_set.clone(),
                    persisted,
                    conduct.presentation.clone(),
                    AgentNow {
                        mono_ms: 0,
                        wall_ms: env.clock().wall_ms(),
                    },
                )
                .with_anchors(trust.anchors.clone()),
            )
        }
        None => None,
    };
    let mut shell = ChainShell {
        env: env.clone(),
        me,
        start,
        endpoint,
        replica,
        config,
        validators,
        links: Links::new(CHAIN_SEND_QUEUE_MAX),
        relay_turn: 0,
        encoded_blocks: VecDeque::new(),
        certified_headers: Mutex::new(VecDeque::new()),
        dialing: BTreeSet::new(),
        dial_failed_at: BTreeMap::new(),
        events,
        overlay,
        status,
        committed: Vec::new(),
        published_height: 0,
        counters: ChainCounters::default(),
        failed: None,
        workload: KvWorkload::new(64, 32, nonce_base),
        key,
        trust,
        agent,
        trust_calls_in_flight: 0,
        chain_conduct: None,
        authority: Box::new(HonestAuthority),
        api_conduct: conduct.api.as_ref().map(|factory| factory()),
    };
    // The injected conduct (honest unless the caller says otherwise); each
    // gets entropy of its own, drawn from the node's.
    if let Some(factory) = &conduct.authority {
        shell.authority = factory(AuthorityContext {
            key: signing_key.duplicate(),
            entropy: SeededEntropy::new(env.entropy().next_u64(), b"authority-conduct"),
        });
    }
    if let Some(factory) = &conduct.chain {
        shell.chain_conduct = Some(factory(ChainContext {
            key: signing_key.duplicate(),
            chain_id,
            committee: validator_set.clone(),
            entropy: SeededEntropy::new(env.entropy().next_u64(), b"chain-conduct"),
        }));
    }
    // Blocks already on disk count as committed: this life's status starts
    // from them, not from what an earlier life published, so a checker
    // sees a committed block that a crash lost or replaced.
    let boot_height = shell.replica.height();
    for height in 1..=boot_height.min(STATUS_COMMITTED_MAX as u64) {
        let block = shell
            .replica
            .store()
            .block(height)
            .map_err(|error| error.to_string())
            .and_then(|block| block.ok_or_else(|| "it is missing".to_string()))
            .map_err(|error| {
                NodeError::ChainStopped(format!(
                    "committed block {height} of {boot_height} cannot be read at boot: {error}"
                ))
            })?;
        shell.committed.push(block.hash());
    }
    shell.publish_boot(boot_height);
    shell.drain();
    shell.check_failed()?;
    let status_interval = Duration::from_millis(500);
    let mut next_status = start;
    let mut next_reconcile = start;
    let mut next_workload = start + Duration::from_millis(shell.config.workload_interval_ms);
    let mut next_trust = start;
    loop {
        let now = env.clock().now();
        if shell.agent.is_some() && now >= next_trust {
            shell.trust_tick();
            next_trust = now + Duration::from_millis(TRUST_TICK_MS);
        }
        if now >= next_reconcile {
            shell.reconcile();
            next_reconcile = now + Duration::from_millis(RECONCILE_INTERVAL_MS);
        }
        if shell.config.workload_interval_ms > 0 && now >= next_workload {
            let tx = kv_tx(shell.workload.next_tx(env.entropy()));
            let at = shell.now();
            let _ = shell.replica.submit_transaction(at, tx);
            next_workload = now + Duration::from_millis(shell.config.workload_interval_ms);
        }
        shell.drain();
        shell.check_failed()?;
        if now >= next_status {
            shell.publish_status();
            next_status = now + status_interval;
        } else {
            shell.publish_new_commits();
        }
        let replica_at = start + Duration::from_millis(shell.replica.poll_timeout());
        let mut wake = replica_at.min(next_status).min(next_reconcile);
        if shell.agent.is_some() {
            wake = wake.min(next_trust);
        }
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
        shell.check_failed()?;
    }
}

/// An authority's API answer as what was asked for, or why not.
fn expect_answer<T>(
    response: Result<ApiResponse, String>,
    wanted: impl FnOnce(ApiResponse) -> Option<T>,
) -> Result<T, String> {
    match response? {
        ApiResponse::Error(error) => Err(error),
        other => wanted(other).ok_or_else(|| "the authority answered something else".into()),
    }
}

/// How an authority issues one certificate (a Byzantine decorator may
/// change it in the simulator).
/// The node's ML-KEM-1024 key (what certificates bind for sealing to it):
/// read from disk, or created and synced.
pub(crate) fn load_or_create_kem_key<E: Env>(env: &E) -> Result<hm_wire::KemSecretKey, NodeError> {
    let disk = env.disk();
    if let Some(bytes) = disk.get(TRUST_CF, KEY_KEM_SECRET)? {
        return hm_wire::KemSecretKey::from_bytes(&bytes)
            .map_err(|error| NodeError::Identity(format!("the stored ML-KEM key: {error}")));
    }
    let key = hm_wire::KemSecretKey::generate(env.entropy());
    disk.put_synced(TRUST_CF, KEY_KEM_SECRET, &key.to_bytes())?;
    Ok(key)
}

/// The bootstrap phase this node last persisted (phase 0 when none).
pub(crate) fn load_phase<E: Env>(env: &E) -> Result<Phase, NodeError> {
    Ok(env
        .disk()
        .get(TRUST_CF, KEY_PHASE)?
        .and_then(|bytes| bytes.first().copied())
        .and_then(Phase::from_number)
        .unwrap_or_default())
}
