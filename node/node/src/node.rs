//! The async shell: connects the membership core to STOQ and the Env.
//!
//! Only plumbing lives here — every decision (whom to connect to, what to
//! send, whom to suspect) is the core's. The shell owns one event loop task
//! per node plus, per connection, one reader and one writer task with bounded
//! queues, and one task per outbound connect attempt.

use std::collections::BTreeSet;
use std::net::SocketAddrV6;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hm_env::{Clock, Disk, DiskError, Entropy, Env, WriteBatch};
use hm_stoq::{Connection, Endpoint, SelfSignedVerifier, StoqConfig};
use hm_wire::sign::SigningKey;
use tokio::sync::mpsc;

use crate::api::{API_CALL_QUEUE_MAX, API_PROTOCOL, ApiServer};
use crate::chain::{ChainConfig, ChainInbound, OverlayPeers};
use crate::conduct::Conduct;
pub use crate::error::NodeError;
use crate::ids::{
    CF_IDENTITY, CF_MEMBERSHIP, CHAIN_PROTOCOL, KEY_INCARNATION, KEY_PRESENTED, KEY_SIGNING_KEY,
    TRUST_CF,
};
pub use crate::ids::{COLUMN_FAMILIES, MEMBERSHIP_PROTOCOL};
use crate::link::Links;
use crate::membership::{Action, Membership, MembershipConfig, Message, NodeId};
use crate::status::StatusHandle;

/// Chain connections queued for the chain service.
const CHAIN_ACCEPT_QUEUE_MAX: usize = 256;

/// Largest membership message accepted (a full-table sync chunk is far smaller).
pub const MEMBERSHIP_MESSAGE_BYTES_MAX: usize = 1 << 20;
/// Events (connections, messages) waiting for the event loop; readers wait
/// when it is full, which back-pressures the peers through QUIC flow control.
pub const EVENT_QUEUE_MAX: usize = 4_096;
/// Messages waiting to be written to one peer; more are dropped and counted
/// (membership tolerates loss: anti-entropy repairs it).
pub const PEER_SEND_QUEUE_MAX: usize = 256;
/// Outbound connection attempts at once.
pub const CONNECTS_IN_FLIGHT_MAX: usize = 16;
/// Attempts at a boot-time disk operation before the node gives up.
pub const BOOT_DISK_ATTEMPTS_MAX: u32 = 5;

#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Where STOQ listens (and dials from). IPv6 only.
    pub listen: SocketAddrV6,
    /// Phase-0 peers: a static list.
    pub seeds: Vec<SocketAddrV6>,
    pub membership: MembershipConfig,
    /// A connection silent for this long is dead (QUIC idle timeout).
    pub idle_timeout_ms: u64,
    pub keep_alive_interval_ms: u64,
    pub connect_timeout_ms: u64,
    /// How often the status snapshot is refreshed.
    pub status_interval_ms: u64,
    /// The chain to run (None: membership only).
    pub chain: Option<ChainConfig>,
    /// Largest UDP payload STOQ sends (see `StoqConfig::max_udp_payload_bytes`).
    pub max_udp_payload_bytes: u16,
}

impl NodeConfig {
    pub fn new(listen: SocketAddrV6, seeds: Vec<SocketAddrV6>) -> Self {
        Self {
            listen,
            seeds,
            membership: MembershipConfig::default(),
            // The membership core pings quiet links every 2-3 s, so QUIC
            // keep-alives would only double the datagrams.
            idle_timeout_ms: 10_000,
            keep_alive_interval_ms: 0,
            connect_timeout_ms: 5_000,
            status_interval_ms: 500,
            chain: None,
            max_udp_payload_bytes: hm_stoq::config::UDP_PAYLOAD_BYTES_DEFAULT,
        }
    }
}

/// Runs the disk operation `op` a few times: transient I/O errors at boot
/// should not kill a node, persistent ones must.
fn with_retries<T>(mut op: impl FnMut() -> Result<T, DiskError>) -> Result<T, DiskError> {
    let mut attempt = 1;
    loop {
        match op() {
            Err(DiskError::Io(error)) if attempt < BOOT_DISK_ATTEMPTS_MAX => {
                tracing::warn!(attempt, %error, "disk error at boot; retrying");
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// The node's long-lived FALCON key: read from disk, or created and synced.
pub fn load_or_create_identity<E: Env>(env: &E) -> Result<SigningKey, NodeError> {
    let disk = env.disk();
    if let Some(bytes) = with_retries(|| disk.get(CF_IDENTITY, KEY_SIGNING_KEY))? {
        return SigningKey::from_bytes(&bytes)
            .map_err(|error| NodeError::Identity(error.to_string()));
    }
    let key = SigningKey::generate(env.entropy());
    with_retries(|| disk.put_synced(CF_IDENTITY, KEY_SIGNING_KEY, &key.to_bytes()))?;
    Ok(key)
}

/// Writes `key` as the node's identity before its first boot, so a node
/// whose key is named in a genesis (simulator, provisioning tools) boots as
/// that identity.
pub fn provision_identity<D: Disk>(disk: &D, key: &SigningKey) -> Result<(), DiskError> {
    disk.put_synced(CF_IDENTITY, KEY_SIGNING_KEY, &key.to_bytes())
}

/// TrustChain's state for a node running `chain`: empty until the chain
/// service replays its committed blocks into it.
fn trust_shared(chain: &ChainConfig) -> Result<crate::trust::TrustShared, NodeError> {
    let zone = match &chain.trust {
        Some(settings) => settings.zone.clone(),
        None => hm_trustchain::name::DnsName::parse(DEFAULT_ZONE).map_err(NodeError::Zone)?,
    };
    let app = crate::app::trust_app_for(&chain.genesis, zone)?;
    Ok(crate::trust::TrustShared::new(
        crate::app::SharedTrust::new(app),
        crate::bootstrap::Phase::Traditional,
    ))
}

/// The DNS zone of a chain whose config names none.
pub const DEFAULT_ZONE: &str = "mesh";

/// Bumps and syncs the incarnation, so this life outranks every earlier one.
fn next_incarnation<E: Env>(env: &E) -> Result<u64, NodeError> {
    let disk = env.disk();
    let previous = with_retries(|| disk.get(CF_MEMBERSHIP, KEY_INCARNATION))?
        .and_then(|bytes| <[u8; 8]>::try_from(bytes.as_slice()).ok())
        .map(u64::from_le_bytes)
        .unwrap_or(0);
    let incarnation = previous.saturating_add(1);
    with_retries(|| {
        let mut batch = WriteBatch::new();
        batch.put(
            CF_MEMBERSHIP,
            KEY_INCARNATION.to_vec(),
            incarnation.to_le_bytes().to_vec(),
        );
        disk.write(batch)?;
        disk.sync()
    })?;
    Ok(incarnation)
}

enum Event {
    Connected {
        connection: Connection,
        outbound: bool,
    },
    ConnectFailed {
        addr: SocketAddrV6,
        /// The peer answered and refused our identity (it is alive).
        refused_by_peer: bool,
    },
    Message {
        peer: NodeId,
        link_id: u64,
        bytes: Vec<u8>,
    },
    Closed {
        peer: NodeId,
        link_id: u64,
    },
    /// The chain service ended with this error: the node ends too (a node
    /// without its chain must not look alive to its supervisor).
    ChainStopped(String),
}

fn node_id_of(connection: &Connection) -> NodeId {
    NodeId(connection.peer().node_id.0)
}

struct Shell<E: Env> {
    env: E,
    me: NodeId,
    start: Instant,
    endpoint: Endpoint<E>,
    core: Membership,
    links: Links<NodeId>,
    connecting: BTreeSet<SocketAddrV6>,
    events: mpsc::Sender<Event>,
    status: StatusHandle,
    config: NodeConfig,
    messages_sent: u64,
    messages_received: u64,
    messages_dropped: u64,
    /// Table digest at the last status refresh.
    published_digest: Option<u64>,
    /// Active peers and their addresses, for the chain service.
    overlay: OverlayPeers,
}

impl<E: Env> Shell<E> {
    fn now_ms(&self) -> u64 {
        let elapsed = self.env.clock().now().saturating_duration_since(self.start);
        u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
    }

    fn perform(&mut self, action: Action) {
        match action {
            Action::Connect { addr } => {
                if self.connecting.len() >= CONNECTS_IN_FLIGHT_MAX || !self.connecting.insert(addr)
                {
                    // Already dialling it, or too many at once: the core
                    // retries on its own schedule.
                    let now = self.now_ms();
                    if !self.connecting.contains(&addr) {
                        self.core.handle_connect_deferred(now, addr);
                    }
                    return;
                }
                let endpoint = self.endpoint.clone();
                let events = self.events.clone();
                let timeout = Duration::from_millis(self.config.connect_timeout_ms);
                let clock = self.env.clone();
                tokio::spawn(async move {
                    let attempt =
                        hm_env::timeout(clock.clock(), timeout, endpoint.connect(addr.into()))
                            .await;
                    let event = match attempt {
                        Ok(Ok(connection)) => Event::Connected {
                            connection,
                            outbound: true,
                        },
                        Ok(Err(error)) => {
                            tracing::debug!(%addr, %error, "connect failed");
                            Event::ConnectFailed {
                                addr,
                                refused_by_peer: error.refused_by_peer(),
                            }
                        }
                        Err(_) => Event::ConnectFailed {
                            addr,
                            refused_by_peer: false,
                        },
                    };
                    let _ = events.send(event).await;
                });
            }
            Action::Send { to, message } => {
                let bytes = bytes::Bytes::from(hm_wire::encode(&message));
                match self.links.get(&to) {
                    Some(link) if link.outbox.try_send(bytes).is_ok() => self.messages_sent += 1,
                    _ => self.messages_dropped += 1,
                }
            }
            Action::Disconnect { peer } => {
                if let Some(link) = self.links.remove(&peer) {
                    link.connection.close("membership: disconnect");
                }
            }
        }
    }

    fn on_connected(&mut self, connection: Connection, outbound: bool) {
        let peer = node_id_of(&connection);
        if peer == self.me {
            connection.close("connected to itself");
            return;
        }
        if outbound {
            self.connecting.remove(&connection.remote_addr());
        }
        let Some((initiator, replaced)) =
            self.links.offer(self.me, peer, outbound, &connection, "")
        else {
            return;
        };
        self.attach(peer, connection.clone(), initiator);
        if replaced {
            // Replaced silently: for the core the peer never went away.
            return;
        }
        self.status.update(|status| {
            status.peers_accepted.insert(peer);
        });
        let now = self.now_ms();
        self.core
            .handle_connection_up(now, peer, connection.remote_addr(), outbound);
    }

    fn attach(&mut self, peer: NodeId, connection: Connection, initiator: NodeId) {
        self.links.attach(
            peer,
            connection,
            initiator,
            self.events.clone(),
            |link_id| {
                move |bytes| Event::Message {
                    peer,
                    link_id,
                    bytes,
                }
            },
            |link_id| Event::Closed { peer, link_id },
        );
    }

    fn on_event(&mut self, event: Event) {
        let now = self.now_ms();
        match event {
            Event::Connected {
                connection,
                outbound,
            } => self.on_connected(connection, outbound),
            Event::ConnectFailed {
                addr,
                refused_by_peer,
            } => {
                self.connecting.remove(&addr);
                if refused_by_peer {
                    self.core.handle_connect_refused(now, addr);
                } else {
                    self.core.handle_connect_failed(now, addr);
                }
            }
            Event::Message {
                peer,
                link_id,
                bytes,
            } => {
                if self.links.current(&peer, link_id).is_none() {
                    return; // from a connection already replaced or closed
                }
                self.messages_received += 1;
                match hm_wire::decode::<Message>(&bytes, MEMBERSHIP_MESSAGE_BYTES_MAX) {
                    Ok(message) => self.core.handle_message(now, peer, message),
                    Err(error) => {
                        tracing::warn!(peer = ?peer, %error, "malformed membership message; closing the connection");
                        if let Some(link) = self.links.remove(&peer) {
                            link.connection.close("malformed membership message");
                        }
                        self.core.handle_connection_down(now, peer);
                    }
                }
            }
            Event::Closed { peer, link_id } => {
                if self.links.current(&peer, link_id).is_some() {
                    self.links.remove(&peer);
                    self.core.handle_connection_down(now, peer);
                }
            }
            // The run loop ends the node on it before it gets here.
            Event::ChainStopped(_) => {}
        }
    }

    fn publish_status(&mut self) {
        // Rebuilding the member list is O(members); do it only when the
        // table changed (its digest is maintained incrementally).
        let digest = self.core.digest();
        let view = if self.published_digest == Some(digest) {
            None
        } else {
            self.published_digest = Some(digest);
            Some((self.core.alive_members(), self.core.active_peers()))
        };
        let rejections = self.endpoint.stats().identity_failures_total;
        let (sent, received, dropped) = (
            self.messages_sent,
            self.messages_received,
            self.messages_dropped,
        );
        let overlay: Vec<(hm_wire::Hash, SocketAddrV6)> = self
            .core
            .active_peers()
            .iter()
            .filter_map(|peer| {
                self.links
                    .get(peer)
                    .map(|link| (hm_wire::Hash(peer.0), link.connection.remote_addr()))
            })
            .collect();
        if let Ok(mut shared) = self.overlay.lock() {
            *shared = overlay;
        }
        let incarnation = self.core.incarnation();
        let stats = self.core.stats();
        let dialed = self.endpoint.stats().connections_dialed_total;
        self.status.update(|status| {
            status.membership_sent_by_kind = stats.sent.0.to_vec();
            status.membership_updates_sent = stats.updates_sent;
            status.connections_dialed = dialed;
            status.running = true;
            if let Some((alive, active)) = view {
                status.alive_members = alive;
                status.active_peers = active;
            }
            status.identity_rejections = rejections;
            status.incarnation = incarnation;
            status.messages_sent = sent;
            status.messages_received = received;
            status.messages_dropped = dropped;
        });
    }
}

/// Runs an honest node until its endpoint closes. Boot: identity,
/// incarnation, endpoint; then the event loop.
pub async fn run<E: Env>(
    env: E,
    config: NodeConfig,
    status: StatusHandle,
) -> Result<(), NodeError> {
    run_with_conduct(env, config, status, Conduct::default()).await
}

/// [`run`] with the given conduct at the points where a node could
/// misbehave (the simulator injects misbehaving ones; see
/// [`crate::conduct`]).
pub async fn run_with_conduct<E: Env>(
    env: E,
    config: NodeConfig,
    status: StatusHandle,
    conduct: Conduct,
) -> Result<(), NodeError> {
    config.membership.validate()?;
    let signing_key = load_or_create_identity(&env)?;
    let incarnation = next_incarnation(&env)?;
    let me = NodeId(signing_key.verifying_key().fingerprint().0);

    let light = config
        .chain
        .as_ref()
        .is_some_and(|chain| chain.role == crate::chain::NodeRole::Light);
    let mut stoq_config = StoqConfig::new(config.listen);
    // A light node takes no chain links: replicas dialling it fail at once
    // and sync from others.
    stoq_config.protocols = if light {
        vec![MEMBERSHIP_PROTOCOL.to_vec(), API_PROTOCOL.to_vec()]
    } else {
        vec![
            MEMBERSHIP_PROTOCOL.to_vec(),
            CHAIN_PROTOCOL.to_vec(),
            API_PROTOCOL.to_vec(),
        ]
    };
    stoq_config.idle_timeout_ms = config.idle_timeout_ms;
    stoq_config.max_udp_payload_bytes = config.max_udp_payload_bytes;
    // A node that held a certificate presents it from its first handshake
    // (phase-3 peers refuse uncertified members); the chain service
    // re-presents whatever it holds once it has replayed its chain.
    if config
        .chain
        .as_ref()
        .is_some_and(|chain| chain.trust.is_some())
        && let Some(bundle) = with_retries(|| env.disk().get(TRUST_CF, KEY_PRESENTED))?
        && bundle.len() <= hm_stoq::frame::IDENTITY_EXTRA_BYTES_MAX
    {
        stoq_config.identity_extra = bundle;
    }
    stoq_config.keep_alive_interval_ms = config.keep_alive_interval_ms;
    let chain_key = signing_key.duplicate();
    // With a chain, TrustChain's committed state decides which certificates
    // peers may present (phase-aware); without one, phase 0 for good.
    let trust = match &config.chain {
        Some(chain) => {
            let mut shared = trust_shared(chain)?;
            shared.light = light;
            Some(shared)
        }
        None => None,
    };
    if let Some(shared) = &trust {
        status.set_trust(shared.trust.clone());
    }
    let verifier: Arc<dyn hm_stoq::PeerVerifier> = match &trust {
        Some(shared) => Arc::new(crate::trust::HybridCertValidator::new(
            env.clone(),
            shared.clone(),
        )),
        None => Arc::new(SelfSignedVerifier),
    };
    let endpoint = Endpoint::bind_presenting(
        &env,
        signing_key,
        stoq_config,
        verifier,
        conduct.presenter.clone(),
    )?;
    let start = env.clock().now();
    let core = Membership::new(
        config.membership.clone(),
        me,
        config.listen,
        incarnation,
        config.seeds.clone(),
        env.entropy().next_u64(),
        0,
    );
    let (events, mut inbox) = mpsc::channel(EVENT_QUEUE_MAX);
    let overlay = OverlayPeers::default();
    let (chain_accepted, chain_inbox) = mpsc::channel(CHAIN_ACCEPT_QUEUE_MAX);
    let (api_calls, api_inbox) = mpsc::channel(API_CALL_QUEUE_MAX);
    if config.chain.is_some() {
        status.set_api(api_calls.clone());
    }
    let api = ApiServer::new(config.chain.is_some().then_some(api_calls));
    {
        let endpoint = endpoint.clone();
        let events = events.clone();
        tokio::spawn(async move {
            while let Some(connection) = endpoint.accept().await {
                if connection.protocol() == API_PROTOCOL {
                    api.serve(connection);
                    continue;
                }
                if connection.protocol() == CHAIN_PROTOCOL {
                    // Without a chain service nobody reads them: refuse.
                    if chain_accepted.try_send(connection.clone()).is_err() {
                        connection.close("chain service not running or busy");
                    }
                    continue;
                }
                let event = Event::Connected {
                    connection,
                    outbound: false,
                };
                if events.send(event).await.is_err() {
                    break;
                }
            }
        });
    }
    if let (Some(chain), Some(trust)) = (config.chain.clone(), trust) {
        let (env, endpoint, overlay, status, events) = (
            env.clone(),
            endpoint.clone(),
            overlay.clone(),
            status.clone(),
            events.clone(),
        );
        tokio::spawn(async move {
            let inbound = ChainInbound {
                accepted: chain_inbox,
                api_calls: api_inbox,
            };
            let result = if light {
                crate::light_service::run_light(
                    env,
                    endpoint,
                    &chain_key,
                    chain,
                    inbound,
                    status.clone(),
                    trust,
                    conduct,
                )
                .await
            } else {
                crate::chain::run_chain(
                    env,
                    endpoint,
                    &chain_key,
                    chain,
                    inbound,
                    overlay,
                    status.clone(),
                    trust,
                    conduct,
                )
                .await
            };
            if let Err(error) = result {
                tracing::warn!(%error, "chain service stopped");
                status.set_error(error.to_string());
                let _ = events.send(Event::ChainStopped(error.to_string())).await;
            }
        });
    } else {
        drop(chain_inbox);
        drop(api_inbox);
    }
    status.update(|status| {
        status.running = true;
        status.node_id = Some(me);
        status.listen = Some(config.listen);
        status.incarnation = incarnation;
        status.error = None;
    });
    tracing::info!(node = ?me, listen = %config.listen, incarnation, "node booted");

    let status_interval = Duration::from_millis(config.status_interval_ms.max(1));
    let mut shell = Shell {
        env: env.clone(),
        me,
        start,
        endpoint,
        core,
        links: Links::new(PEER_SEND_QUEUE_MAX),
        connecting: BTreeSet::new(),
        events,
        status,
        config,
        messages_sent: 0,
        messages_received: 0,
        messages_dropped: 0,
        published_digest: None,
        overlay,
    };
    let mut next_status = start;
    loop {
        while let Some(action) = shell.core.poll_action() {
            shell.perform(action);
        }
        let now = env.clock().now();
        if now >= next_status {
            shell.publish_status();
            next_status = now + status_interval;
        }
        let wake = shell
            .core
            .poll_timeout()
            .map(|at_ms| start + Duration::from_millis(at_ms))
            .unwrap_or(next_status)
            .min(next_status)
            .max(now);
        tokio::select! {
            event = inbox.recv() => match event {
                Some(Event::ChainStopped(error)) => return Err(NodeError::ChainStopped(error)),
                Some(event) => shell.on_event(event),
                None => return Ok(()),
            },
            () = env.clock().sleep_until(wake) => {
                let now_ms = shell.now_ms();
                shell.core.handle_tick(now_ms);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Membership messages arrive as bytes from peers: any bytes decode
        /// to an error or to a message that re-encodes to exactly them.
        #[test]
        fn random_bytes_never_panic_the_membership_decoder(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
            if let Ok(message) = hm_wire::decode::<Message>(&bytes, MEMBERSHIP_MESSAGE_BYTES_MAX) {
                prop_assert_eq!(hm_wire::encode(&message), bytes);
            }
        }
    }

    #[test]
    fn a_valid_message_round_trips_and_a_truncated_one_is_refused() {
        let message = Message::Digest {
            hash: 7,
            members: 3,
            buckets: vec![1, 2, 3],
        };
        let bytes = hm_wire::encode(&message);
        assert_eq!(
            hm_wire::decode::<Message>(&bytes, MEMBERSHIP_MESSAGE_BYTES_MAX).ok(),
            Some(message)
        );
        assert!(
            hm_wire::decode::<Message>(&bytes[..bytes.len() - 1], MEMBERSHIP_MESSAGE_BYTES_MAX)
                .is_err()
        );
    }
}
