//! The STOQ endpoint: one quinn endpoint on one Env socket, dialing and
//! accepting connections whose FALCON identity is checked before anyone sees
//! them.
//!
//! The endpoint also owns its identity bytes (`extra`, e.g. a certificate):
//! [`Endpoint::present`] replaces them for future handshakes and
//! re-authenticates every live connection with them, which it finds in a
//! bounded registry of weak references.

use std::fmt;
use std::net::{SocketAddr, SocketAddrV6};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use hm_env::{Clock, Entropy, Env, Net};
use quinn::{RecvStream, SendStream, VarInt};
use tokio::sync::mpsc;

use crate::config::{StoqConfig, check_dialable, check_ipv6};
use crate::connection::{Connection, Shared, close_code, lock};
use crate::error::{ConfigError, IdentityError, StoqError};
use crate::frame::{
    IDENTITY_EXTRA_BYTES_MAX, IDENTITY_FRAME_BYTES_MAX, IdentityBinding, KIND_IDENTITY,
    LENGTH_BYTES, ReauthFrame, StreamKind, decode_length, encode_prefixed_header,
};
use crate::glue::{EnvClock, EnvRuntime, EnvSocket};
use crate::identity::{
    HonestPresenter, NodeId, PeerIdentity, PeerVerifier, Presenter, Role, check_binding, exporter,
    make_binding, node_id_hex,
};
use crate::keys::SigningKey;
use crate::tls::{SERVER_NAME, TlsIdentity, rustls_client_config, rustls_server_config};

/// Verified connections waiting for `accept`. When full, new ones are closed
/// with `BUSY` rather than queued without bound.
pub const ACCEPT_QUEUE_MAX: usize = 128;
/// Inbound handshakes in progress at once; more are refused at the QUIC
/// level (cheap), which bounds the signing/verifying work a flood can cause.
pub const HANDSHAKES_IN_FLIGHT_MAX: usize = 256;
/// Live connections (dialed plus accepted, every protocol) one endpoint
/// tracks so [`Endpoint::present`] can re-authenticate them. Far above any
/// node's fan-out (a thousand peers times a few protocols, both directions),
/// and each entry is one weak pointer (512 KiB at the limit) while each live
/// connection costs quinn far more, so this only stops a leak of connection
/// handles from growing the registry without bound. A connection beyond it
/// is closed with `BUSY`: one that could not be re-authenticated would keep
/// showing its peer stale identity bytes.
pub const LIVE_CONNECTIONS_MAX: usize = 65_536;
/// The registry is pruned of closed connections when it reaches twice its
/// size after the last pruning, but never below this, so pruning costs O(1)
/// per registered connection on average.
const LIVE_CONNECTIONS_PRUNE_MIN: usize = 64;

/// Endpoint-wide counters. `identity_failures_total` is what the simulator
/// checks: an honest node must never hand out a connection whose identity
/// check failed, and every failure is counted here.
#[derive(Debug, Default)]
pub struct EndpointCounters {
    pub(crate) connections_accepted: AtomicU64,
    pub(crate) connections_dialed: AtomicU64,
    pub(crate) identity_failures: AtomicU64,
    pub(crate) handshake_failures: AtomicU64,
    pub(crate) handshakes_refused: AtomicU64,
    pub(crate) protocol_violations: AtomicU64,
    pub(crate) reauths_sent: AtomicU64,
    pub(crate) reauth_send_failures: AtomicU64,
    pub(crate) reauths_accepted: AtomicU64,
    pub(crate) reauths_refused: AtomicU64,
    pub(crate) reauths_stale: AtomicU64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EndpointStats {
    /// Inbound connections verified and queued for `accept`.
    pub connections_accepted_total: u64,
    /// Outbound connections verified and returned by `connect`.
    pub connections_dialed_total: u64,
    /// Peers whose identity binding failed or whose key the verifier refused
    /// (both directions), at the handshake (none of them was ever handed to
    /// the application) or in a re-authentication (that connection was
    /// closed).
    pub identity_failures_total: u64,
    /// Handshakes that failed for other reasons: TLS, timeout, lost packets.
    pub handshake_failures_total: u64,
    /// Inbound handshakes refused because too many were in flight or the
    /// accept queue was full.
    pub handshakes_refused_total: u64,
    /// Connections closed because the peer broke the framing rules.
    pub protocol_violations_total: u64,
    /// Re-authentications sent on live connections by [`Endpoint::present`].
    pub reauths_sent_total: u64,
    /// Re-authentications that could not be signed or sent (the connection
    /// closed, the peer gave no stream credit in time); never fatal.
    pub reauth_send_failures_total: u64,
    /// Peers' re-authentications accepted (signature, key and verifier).
    pub reauths_accepted_total: u64,
    /// Peers' re-authentications refused; each closed its connection and is
    /// also in `identity_failures_total`.
    pub reauths_refused_total: u64,
    /// Peers' re-authentications ignored as older than (or as old as) one
    /// already accepted on the same connection.
    pub reauths_stale_total: u64,
}

/// This endpoint's identity bytes and the live connections that must hear
/// when they change.
struct Presence {
    /// Signed into every handshake binding, sent in every re-authentication.
    extra: Arc<Vec<u8>>,
    /// 0 for the configured bytes; [`Endpoint::present`] adds one.
    generation: u64,
    /// At most [`LIVE_CONNECTIONS_MAX`]; weak so it never keeps a
    /// connection open.
    live: Vec<Weak<Shared>>,
    /// Prune when `live` reaches this length.
    prune_at: usize,
}

impl Presence {
    fn new(extra: Vec<u8>) -> Self {
        Self {
            extra: Arc::new(extra),
            generation: 0,
            live: Vec::new(),
            prune_at: LIVE_CONNECTIONS_PRUNE_MIN,
        }
    }

    /// Drops closed and freed connections.
    fn prune(&mut self) {
        self.live.retain(|weak| {
            weak.strong_count() > 0 && weak.upgrade().is_some_and(|shared| !shared.is_closed())
        });
        self.prune_at =
            (self.live.len() * 2).clamp(LIVE_CONNECTIONS_PRUNE_MIN, LIVE_CONNECTIONS_MAX);
        debug_assert!(self.live.len() <= LIVE_CONNECTIONS_MAX);
    }
}

/// What the accept loop and handshakes share.
struct Context<E: Env> {
    env: E,
    clock: Arc<dyn Clock>,
    key: SigningKey,
    node_id: NodeId,
    verifier: Arc<dyn PeerVerifier>,
    config: StoqConfig,
    counters: Arc<EndpointCounters>,
    handshakes_in_flight: AtomicUsize,
    presence: Mutex<Presence>,
    /// Whose exporter value our identity binding signs (ours, unless a
    /// misbehaving presenter was injected).
    presenter: Arc<dyn Presenter>,
    /// Test hook: hold the next successful dial between its identity
    /// exchange and its registration.
    #[cfg(test)]
    dial_gate: Mutex<Option<DialGate>>,
}

/// See [`Endpoint::hold_next_dial`].
#[cfg(test)]
pub(crate) struct DialGate {
    reached: tokio::sync::oneshot::Sender<()>,
    release: tokio::sync::oneshot::Receiver<()>,
}

struct Inner<E: Env> {
    quic: quinn::Endpoint,
    /// `(protocol, config)` in `StoqConfig::protocols` order.
    client_configs: Vec<(Vec<u8>, quinn::ClientConfig)>,
    context: Arc<Context<E>>,
    accepted: tokio::sync::Mutex<mpsc::Receiver<Connection>>,
    local_addr: SocketAddrV6,
}

impl<E: Env> Drop for Inner<E> {
    fn drop(&mut self) {
        self.quic.close(
            VarInt::from_u32(close_code::ENDPOINT_CLOSED),
            b"endpoint dropped",
        );
    }
}

/// A STOQ endpoint: dials and accepts identity-verified connections. Cheap to
/// clone; closes (with all its connections) when the last clone is dropped.
pub struct Endpoint<E: Env> {
    inner: Arc<Inner<E>>,
}

impl<E: Env> Clone for Endpoint<E> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<E: Env> fmt::Debug for Endpoint<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("local_addr", &self.inner.local_addr)
            .field("node_id", &node_id_hex(&self.inner.context.node_id))
            .finish_non_exhaustive()
    }
}

fn transport_config(config: &StoqConfig) -> quinn::TransportConfig {
    let mut transport = quinn::TransportConfig::default();
    // Validated to at most one day, far below VarInt's 2^62.
    let idle = quinn::IdleTimeout::from(VarInt::from_u32(
        u32::try_from(config.idle_timeout_ms).unwrap_or(u32::MAX),
    ));
    transport
        .max_idle_timeout(Some(idle))
        .keep_alive_interval(
            (config.keep_alive_interval_ms > 0)
                .then(|| Duration::from_millis(config.keep_alive_interval_ms)),
        )
        .max_concurrent_bidi_streams(VarInt::from_u32(config.max_concurrent_bidi_streams))
        .max_concurrent_uni_streams(VarInt::from_u32(config.max_concurrent_uni_streams))
        .datagram_receive_buffer_size(
            config
                .datagrams_enabled
                .then_some(config.datagram_receive_buffer_bytes),
        );
    if config.max_udp_payload_bytes > crate::config::UDP_PAYLOAD_BYTES_DEFAULT {
        // Start at the configured size and let discovery search up to it.
        let mut discovery = quinn::MtuDiscoveryConfig::default();
        discovery.upper_bound(config.max_udp_payload_bytes);
        transport
            .initial_mtu(config.max_udp_payload_bytes)
            .mtu_discovery_config(Some(discovery));
    }
    transport
}

fn tls_failure(error: impl fmt::Display) -> StoqError {
    StoqError::Config(crate::error::ConfigError::Tls(error.to_string()))
}

impl<E: Env> Endpoint<E> {
    /// Binds `config.bind_addr` on `env`'s network and starts accepting.
    /// Must run inside the node's runtime (it spawns quinn's driver task).
    /// The TLS certificate key and QUIC secrets come from `env`'s entropy.
    pub fn bind(
        env: &E,
        identity: SigningKey,
        config: StoqConfig,
        verifier: Arc<dyn PeerVerifier>,
    ) -> Result<Self, StoqError> {
        Self::bind_presenting(env, identity, config, verifier, Arc::new(HonestPresenter))
    }

    /// [`Endpoint::bind`] with the given [`Presenter`] of identity
    /// bindings (the simulator injects a misbehaving one; nodes use
    /// [`HonestPresenter`]).
    pub fn bind_presenting(
        env: &E,
        identity: SigningKey,
        config: StoqConfig,
        verifier: Arc<dyn PeerVerifier>,
        presenter: Arc<dyn Presenter>,
    ) -> Result<Self, StoqError> {
        config.validate()?;
        let bind_addr = check_ipv6(config.bind_addr)?;
        let socket = env.net().bind(bind_addr).map_err(|error| StoqError::Bind {
            addr: config.bind_addr,
            reason: error.to_string(),
        })?;
        let local_addr = hm_env::DatagramSocket::local_addr(&socket);
        let clock = Arc::new(EnvClock(env.clone()));
        let entropy = env.entropy();

        let tls = TlsIdentity::generate(entropy)?;
        let server_tls = rustls_server_config(
            &tls,
            config.post_quantum_only,
            clock.clone(),
            &config.protocols,
        )?;
        let transport = Arc::new(transport_config(&config));

        let server_crypto =
            quinn::crypto::rustls::QuicServerConfig::try_from(server_tls).map_err(tls_failure)?;
        let mut token_secret = [0u8; 64];
        entropy.fill_bytes(&mut token_secret);
        let token_key =
            aws_lc_rs::hkdf::Salt::new(aws_lc_rs::hkdf::HKDF_SHA256, &[]).extract(&token_secret);
        let mut server_config =
            quinn::ServerConfig::new(Arc::new(server_crypto), Arc::new(token_key));
        server_config.transport_config(transport.clone());

        // One client config per protocol: ALPN is fixed per TLS config.
        let mut client_configs = Vec::with_capacity(config.protocols.len());
        for protocol in &config.protocols {
            let client_tls =
                rustls_client_config(&tls, config.post_quantum_only, clock.clone(), protocol)?;
            let client_crypto = quinn::crypto::rustls::QuicClientConfig::try_from(client_tls)
                .map_err(tls_failure)?;
            let mut client_config = quinn::ClientConfig::new(Arc::new(client_crypto));
            client_config.transport_config(transport.clone());
            client_configs.push((protocol.clone(), client_config));
        }

        let mut reset_secret = [0u8; 64];
        entropy.fill_bytes(&mut reset_secret);
        let reset_key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &reset_secret);
        let mut endpoint_config = quinn::EndpointConfig::new(Arc::new(reset_key));
        endpoint_config
            .max_udp_payload_size(config.max_udp_payload_bytes)
            .map_err(|_| {
                StoqError::Config(crate::error::ConfigError::OutOfRange {
                    field: "max_udp_payload_bytes",
                    value: u64::from(config.max_udp_payload_bytes),
                    reason: "between 1200 and 65527",
                })
            })?;

        let quic = quinn::Endpoint::new_with_abstract_socket(
            endpoint_config,
            Some(server_config),
            Arc::new(EnvSocket::new(socket)),
            Arc::new(EnvRuntime::new(clock.clone())),
        )
        .map_err(|error| StoqError::Bind {
            addr: config.bind_addr,
            reason: error.to_string(),
        })?;

        let node_id = identity.verifying_key().fingerprint();
        let presence = Mutex::new(Presence::new(config.identity_extra.clone()));
        let context = Arc::new(Context {
            env: env.clone(),
            clock,
            key: identity,
            node_id,
            verifier,
            config,
            counters: Arc::new(EndpointCounters::default()),
            handshakes_in_flight: AtomicUsize::new(0),
            presence,
            presenter,
            #[cfg(test)]
            dial_gate: Mutex::new(None),
        });
        let (accepted_tx, accepted_rx) = mpsc::channel(ACCEPT_QUEUE_MAX);
        tokio::spawn(accept_loop(quic.clone(), context.clone(), accepted_tx));
        tracing::debug!(%local_addr, node_id = %node_id_hex(&node_id), "stoq endpoint bound");
        Ok(Self {
            inner: Arc::new(Inner {
                quic,
                client_configs,
                context,
                accepted: tokio::sync::Mutex::new(accepted_rx),
                local_addr,
            }),
        })
    }

    pub fn local_addr(&self) -> SocketAddrV6 {
        self.inner.local_addr
    }

    /// This endpoint's node id (fingerprint of its FALCON public key).
    pub fn node_id(&self) -> NodeId {
        self.inner.context.node_id
    }

    /// Dials `addr` and proves identities both ways; the peer is checked by
    /// this endpoint's verifier.
    pub async fn connect(&self, addr: SocketAddr) -> Result<Connection, StoqError> {
        self.dial(addr, None, 0).await
    }

    /// Like [`Endpoint::connect`] for the application protocol `protocol`
    /// (one of `StoqConfig::protocols`); the peer must serve it too.
    pub async fn connect_protocol(
        &self,
        addr: SocketAddr,
        protocol: &[u8],
        expected: Option<NodeId>,
    ) -> Result<Connection, StoqError> {
        let index = self
            .inner
            .client_configs
            .iter()
            .position(|(known, _)| known == protocol)
            .ok_or_else(|| StoqError::Connect {
                addr,
                reason: format!(
                    "protocol {:?} is not in this endpoint's StoqConfig::protocols",
                    String::from_utf8_lossy(protocol)
                ),
            })?;
        self.dial(addr, expected, index).await
    }

    /// Like [`Endpoint::connect`], and the peer must be node `expected`.
    pub async fn connect_expecting(
        &self,
        addr: SocketAddr,
        expected: NodeId,
    ) -> Result<Connection, StoqError> {
        self.dial(addr, Some(expected), 0).await
    }

    async fn dial(
        &self,
        addr: SocketAddr,
        expected: Option<NodeId>,
        protocol_index: usize,
    ) -> Result<Connection, StoqError> {
        let target = check_dialable(addr)?;
        let context = &self.inner.context;
        let connecting = self
            .inner
            .quic
            .connect_with(
                self.inner.client_configs[protocol_index].1.clone(),
                SocketAddr::V6(target),
                SERVER_NAME,
            )
            .map_err(|error| StoqError::Connect {
                addr,
                reason: error.to_string(),
            })?;
        let timeout_ms = context.config.handshake_timeout_ms;
        let handshake = async {
            let quic = connecting.await?;
            match client_exchange(context, &quic, expected).await {
                Ok((peer, signed)) => Ok((quic, peer, signed)),
                Err(failure) => {
                    refuse(context, &quic, addr, &failure);
                    Err(failure.into_error(addr))
                }
            }
        };
        let outcome = hm_env::timeout(
            &*context.clock,
            Duration::from_millis(timeout_ms),
            handshake,
        )
        .await;
        match outcome {
            Ok(Ok((quic, peer, signed))) => {
                #[cfg(test)]
                {
                    let gate = lock(&context.dial_gate).take();
                    if let Some(gate) = gate {
                        let _ = gate.reached.send(());
                        let _ = gate.release.await;
                    }
                }
                let connection = Connection::start(
                    quic,
                    peer,
                    context.clock.clone(),
                    context.verifier.clone(),
                    &context.config,
                    context.counters.clone(),
                );
                if !register(context, &connection, signed) {
                    return Err(StoqError::Connect {
                        addr,
                        reason: format!(
                            "this endpoint already has LIVE_CONNECTIONS_MAX ({LIVE_CONNECTIONS_MAX}) live connections; close some first"
                        ),
                    });
                }
                context
                    .counters
                    .connections_dialed
                    .fetch_add(1, Ordering::Relaxed);
                Ok(connection)
            }
            Ok(Err(error)) => {
                if !matches!(error, StoqError::Identity { .. }) {
                    context
                        .counters
                        .handshake_failures
                        .fetch_add(1, Ordering::Relaxed);
                }
                Err(error)
            }
            Err(_) => {
                context
                    .counters
                    .handshake_failures
                    .fetch_add(1, Ordering::Relaxed);
                Err(StoqError::HandshakeTimeout { addr, timeout_ms })
            }
        }
    }

    /// The next inbound connection, identity already verified. `None` after
    /// [`Endpoint::close`].
    pub async fn accept(&self) -> Option<Connection> {
        self.inner.accepted.lock().await.recv().await
    }

    /// Makes `extra` (e.g. a newly obtained or renewed certificate) this
    /// endpoint's identity bytes: every future handshake signs and sends
    /// them, and every live connection (dialed or accepted, any protocol) is
    /// re-authenticated with them on a new uni stream, so in-flight streams
    /// are unaffected. Returns the new identity generation (the configured
    /// `identity_extra` is generation 0).
    ///
    /// Does not wait: each connection is re-authenticated by a spawned task
    /// (so call it inside the node's runtime). A connection that closes or
    /// stalls first just misses it (counted in
    /// [`EndpointStats::reauth_send_failures_total`]); a peer whose verifier
    /// refuses the bytes closes its connection with `IDENTITY_FAILED` and the
    /// reason, which [`Connection::close_reason`] shows here.
    pub fn present(&self, extra: Vec<u8>) -> Result<u64, StoqError> {
        if extra.len() > IDENTITY_EXTRA_BYTES_MAX {
            return Err(ConfigError::OutOfRange {
                field: "identity_extra",
                value: extra.len() as u64,
                reason: "at most IDENTITY_EXTRA_BYTES_MAX (16 KiB)",
            }
            .into());
        }
        let context = &self.inner.context;
        let (generation, extra, live) = {
            let mut presence = lock(&context.presence);
            presence.prune();
            presence.generation += 1;
            presence.extra = Arc::new(extra);
            (
                presence.generation,
                presence.extra.clone(),
                presence.live.clone(),
            )
        };
        tracing::debug!(
            generation,
            extra_bytes = extra.len(),
            connections = live.len(),
            "presenting new identity bytes"
        );
        // One frame for every connection: it is not bound to any of them.
        let frame = encoded_reauth(generation, &extra);
        for shared in live {
            tokio::spawn(reauthenticate(
                context.clone(),
                shared,
                generation,
                frame.clone(),
            ));
        }
        Ok(generation)
    }

    /// The generation of this endpoint's identity bytes: 0 for the
    /// configured `identity_extra`, then one more per [`Endpoint::present`].
    pub fn identity_generation(&self) -> u64 {
        lock(&self.inner.context.presence).generation
    }

    pub fn stats(&self) -> EndpointStats {
        let counters = &self.inner.context.counters;
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        EndpointStats {
            connections_accepted_total: get(&counters.connections_accepted),
            connections_dialed_total: get(&counters.connections_dialed),
            identity_failures_total: get(&counters.identity_failures),
            handshake_failures_total: get(&counters.handshake_failures),
            handshakes_refused_total: get(&counters.handshakes_refused),
            protocol_violations_total: get(&counters.protocol_violations),
            reauths_sent_total: get(&counters.reauths_sent),
            reauth_send_failures_total: get(&counters.reauth_send_failures),
            reauths_accepted_total: get(&counters.reauths_accepted),
            reauths_refused_total: get(&counters.reauths_refused),
            reauths_stale_total: get(&counters.reauths_stale),
        }
    }

    /// Closes every connection and stops accepting. Dialing afterwards fails.
    pub fn close(&self) {
        self.inner.quic.close(
            VarInt::from_u32(close_code::ENDPOINT_CLOSED),
            b"endpoint closed",
        );
    }

    /// Holds the next dial that passes its identity exchange before it is
    /// registered: the first receiver fires when it got there, and dropping
    /// or sending on the sender lets it go on.
    #[cfg(test)]
    pub(crate) fn hold_next_dial(
        &self,
    ) -> (
        tokio::sync::oneshot::Receiver<()>,
        tokio::sync::oneshot::Sender<()>,
    ) {
        let (reached, reached_rx) = tokio::sync::oneshot::channel();
        let (release_tx, release) = tokio::sync::oneshot::channel();
        *lock(&self.inner.context.dial_gate) = Some(DialGate { reached, release });
        (reached_rx, release_tx)
    }
}

/// Why an identity exchange failed, before it becomes a [`StoqError`].
enum ExchangeFailure {
    Identity(IdentityError),
    Other(StoqError),
}

impl ExchangeFailure {
    fn into_error(self, addr: SocketAddr) -> StoqError {
        match self {
            Self::Identity(source) => StoqError::Identity { addr, source },
            Self::Other(error) => error,
        }
    }
}

impl From<IdentityError> for ExchangeFailure {
    fn from(error: IdentityError) -> Self {
        Self::Identity(error)
    }
}

impl<T: Into<StoqError>> From<T> for ExchangeFailure {
    fn from(error: T) -> Self {
        Self::Other(error.into())
    }
}

/// A lost connection keeps its cause (e.g. the peer's close reason).
fn read_error(error: quinn::ReadExactError) -> StoqError {
    match error {
        quinn::ReadExactError::ReadError(quinn::ReadError::ConnectionLost(error)) => {
            StoqError::Connection(error)
        }
        other => StoqError::stream(other),
    }
}

/// Closes a connection whose identity exchange failed; identity failures are
/// logged and counted.
fn refuse<E: Env>(
    context: &Context<E>,
    quic: &quinn::Connection,
    addr: SocketAddr,
    failure: &ExchangeFailure,
) {
    match failure {
        ExchangeFailure::Identity(error) => {
            context
                .counters
                .identity_failures
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(remote = %addr, reason = %error, "refusing peer: identity check failed");
            let reason = error.to_string();
            let end = (0..=reason.len().min(crate::connection::CLOSE_REASON_BYTES_MAX))
                .rev()
                .find(|at| reason.is_char_boundary(*at))
                .unwrap_or(0);
            quic.close(
                VarInt::from_u32(close_code::IDENTITY_FAILED),
                &reason.as_bytes()[..end],
            );
        }
        ExchangeFailure::Other(error) => {
            tracing::debug!(remote = %addr, %error, "identity exchange failed");
            quic.close(
                VarInt::from_u32(close_code::PROTOCOL_VIOLATION),
                b"identity exchange failed",
            );
        }
    }
}

/// The role whose exporter value we sign: ours, unless a misbehaving
/// presenter was injected.
fn signing_role<E: Env>(context: &Context<E>, role: Role) -> Role {
    context.presenter.signed_role(role)
}

/// Our encoded handshake binding, and the generation of the identity bytes
/// it carries.
fn own_binding<E: Env>(
    context: &Context<E>,
    quic: &quinn::Connection,
    role: Role,
) -> Result<(Vec<u8>, u64), ExchangeFailure> {
    let exporter = exporter(quic, signing_role(context, role))?;
    let (extra, generation) = {
        let presence = lock(&context.presence);
        (presence.extra.clone(), presence.generation)
    };
    let binding = make_binding(&context.key, &exporter, &extra, context.env.entropy());
    Ok((binding.encode(), generation))
}

/// Adds a verified connection to the live registry. If the identity bytes
/// changed since its handshake binding was signed (a `present` raced with
/// the handshake), it is re-authenticated at once; `present` itself only
/// sees registered connections, and both happen under the same lock, so no
/// connection misses a generation. `false`: the registry is full and the
/// connection was closed.
fn register<E: Env>(
    context: &Arc<Context<E>>,
    connection: &Connection,
    signed_generation: u64,
) -> bool {
    let shared = connection.downgrade();
    let newer = {
        let mut presence = lock(&context.presence);
        if presence.live.len() >= presence.prune_at {
            presence.prune();
        }
        if presence.live.len() >= LIVE_CONNECTIONS_MAX {
            None
        } else {
            presence.live.push(shared.clone());
            debug_assert!(presence.generation >= signed_generation);
            Some(
                (presence.generation > signed_generation)
                    .then(|| (presence.generation, presence.extra.clone())),
            )
        }
    };
    match newer {
        None => {
            context
                .counters
                .handshakes_refused
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                remote = %connection.remote_addr(),
                LIVE_CONNECTIONS_MAX,
                "too many live connections; closing a new one"
            );
            connection.close_busy("busy: too many live connections");
            false
        }
        Some(Some((generation, extra))) => {
            let frame = encoded_reauth(generation, &extra);
            tokio::spawn(reauthenticate(context.clone(), shared, generation, frame));
            true
        }
        Some(None) => true,
    }
}

/// The encoded re-authentication frame for identity bytes `extra` as
/// generation `generation`.
fn encoded_reauth(generation: u64, extra: &[u8]) -> Arc<Vec<u8>> {
    let frame = ReauthFrame {
        generation,
        extra: extra.to_vec(),
    };
    Arc::new(frame.encode())
}

/// Sends the encoded re-authentication `frame` of generation `generation`
/// on one connection. Skipped when the connection is gone or a newer
/// generation exists (its own task sends that one, and the peer would
/// ignore this).
async fn reauthenticate<E: Env>(
    context: Arc<Context<E>>,
    shared: Weak<Shared>,
    generation: u64,
    frame: Arc<Vec<u8>>,
) {
    let Some(shared) = shared.upgrade() else {
        return;
    };
    if shared.is_closed() || lock(&context.presence).generation > generation {
        return;
    }
    shared.send_reauth(generation, &frame).await;
}

/// Reads a length-prefixed identity binding (the kind byte, if any, is
/// already consumed) and checks it against `peer_role`'s exporter value and
/// the verifier.
async fn read_peer<E: Env>(
    context: &Context<E>,
    quic: &quinn::Connection,
    recv: &mut RecvStream,
    peer_role: Role,
    expected: Option<NodeId>,
) -> Result<PeerIdentity, ExchangeFailure> {
    let mut prefix = [0u8; LENGTH_BYTES];
    recv.read_exact(&mut prefix).await.map_err(read_error)?;
    let len = decode_length(prefix, IDENTITY_FRAME_BYTES_MAX).map_err(IdentityError::from)?;
    let mut body = vec![0u8; len];
    recv.read_exact(&mut body).await.map_err(read_error)?;
    let binding = IdentityBinding::decode(&body).map_err(IdentityError::from)?;
    let mut peer = check_binding(&binding, &exporter(quic, peer_role)?)?;
    peer.protocol = crate::connection::negotiated_protocol(quic);
    if let Some(expected) = expected
        && peer.node_id != expected
    {
        return Err(IdentityError::UnexpectedNode {
            expected: node_id_hex(&expected),
            got: node_id_hex(&peer.node_id),
        }
        .into());
    }
    context
        .verifier
        .verify(&peer)
        .map_err(|reason| IdentityError::Refused {
            node_id: node_id_hex(&peer.node_id),
            reason,
        })?;
    Ok(peer)
}

async fn write_binding(
    send: &mut SendStream,
    first: Option<u8>,
    body: &[u8],
) -> Result<(), StoqError> {
    let header = encode_prefixed_header(first.unwrap_or(0), body.len());
    let header = if first.is_some() {
        &header[..]
    } else {
        &header[1..]
    };
    send.write_all(header)
        .await
        .map_err(crate::connection::write_error)?;
    send.write_all(body)
        .await
        .map_err(crate::connection::write_error)?;
    send.finish().map_err(StoqError::stream)
}

/// Client side: open the identity stream, send ours, then read and check the
/// server's (the server only answers once it accepted us).
async fn client_exchange<E: Env>(
    context: &Context<E>,
    quic: &quinn::Connection,
    expected: Option<NodeId>,
) -> Result<(PeerIdentity, u64), ExchangeFailure> {
    let (mut send, mut recv) = quic.open_bi().await?;
    let (body, signed) = own_binding(context, quic, Role::Client)?;
    write_binding(&mut send, Some(KIND_IDENTITY), &body).await?;
    let peer = read_peer(context, quic, &mut recv, Role::Server, expected).await?;
    Ok((peer, signed))
}

/// Server side: the client's first bidirectional stream must be its identity.
async fn server_exchange<E: Env>(
    context: &Context<E>,
    quic: &quinn::Connection,
) -> Result<(PeerIdentity, u64), ExchangeFailure> {
    let (mut send, mut recv) = quic.accept_bi().await?;
    let mut kind = [0u8; 1];
    recv.read_exact(&mut kind).await.map_err(read_error)?;
    if StreamKind::decode(kind[0]).map_err(IdentityError::from)? != StreamKind::Identity {
        return Err(
            IdentityError::Malformed(crate::frame::FrameError::UnknownKind(kind[0])).into(),
        );
    }
    let peer = read_peer(context, quic, &mut recv, Role::Client, None).await?;
    let (body, signed) = own_binding(context, quic, Role::Server)?;
    write_binding(&mut send, None, &body).await?;
    Ok((peer, signed))
}

async fn accept_loop<E: Env>(
    quic: quinn::Endpoint,
    context: Arc<Context<E>>,
    accepted: mpsc::Sender<Connection>,
) {
    // `accept` yields `None` once the endpoint is closed.
    while let Some(incoming) = quic.accept().await {
        if context.handshakes_in_flight.load(Ordering::Relaxed) >= HANDSHAKES_IN_FLIGHT_MAX {
            context
                .counters
                .handshakes_refused
                .fetch_add(1, Ordering::Relaxed);
            incoming.refuse();
            continue;
        }
        context.handshakes_in_flight.fetch_add(1, Ordering::Relaxed);
        let context = context.clone();
        let accepted = accepted.clone();
        tokio::spawn(async move {
            serve_handshake(context.clone(), incoming, &accepted).await;
            context.handshakes_in_flight.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

async fn serve_handshake<E: Env>(
    context: Arc<Context<E>>,
    incoming: quinn::Incoming,
    accepted: &mpsc::Sender<Connection>,
) {
    let context = &context;
    let addr = incoming.remote_address();
    let timeout_ms = context.config.handshake_timeout_ms;
    let handshake = async {
        let quic = match incoming.await {
            Ok(quic) => quic,
            Err(error) => {
                tracing::debug!(remote = %addr, %error, "inbound handshake failed");
                return None;
            }
        };
        match server_exchange(context, &quic).await {
            Ok((peer, signed)) => Some((quic, peer, signed)),
            Err(failure) => {
                refuse(context, &quic, addr, &failure);
                if matches!(failure, ExchangeFailure::Other(_)) {
                    context
                        .counters
                        .handshake_failures
                        .fetch_add(1, Ordering::Relaxed);
                }
                None
            }
        }
    };
    let outcome = hm_env::timeout(
        &*context.clock,
        Duration::from_millis(timeout_ms),
        handshake,
    )
    .await;
    let Ok(Some((quic, peer, signed))) = outcome else {
        if outcome.is_err() {
            tracing::debug!(remote = %addr, timeout_ms, "inbound handshake timed out");
            context
                .counters
                .handshake_failures
                .fetch_add(1, Ordering::Relaxed);
        }
        return;
    };
    let connection = Connection::start(
        quic,
        peer,
        context.clock.clone(),
        context.verifier.clone(),
        &context.config,
        context.counters.clone(),
    );
    if !register(context, &connection, signed) {
        return;
    }
    match accepted.try_send(connection) {
        Ok(()) => {
            context
                .counters
                .connections_accepted
                .fetch_add(1, Ordering::Relaxed);
        }
        Err(mpsc::error::TrySendError::Full(connection)) => {
            context
                .counters
                .handshakes_refused
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(remote = %addr, "accept queue full; closing new connection");
            connection.close_busy("busy: accept queue full");
        }
        Err(mpsc::error::TrySendError::Closed(connection)) => {
            connection.close("endpoint closed");
        }
    }
}
