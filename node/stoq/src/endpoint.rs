//! The STOQ endpoint: one quinn endpoint on one Env socket, dialing and
//! accepting connections whose FALCON identity is checked before anyone sees
//! them.

use std::fmt;
use std::net::{SocketAddr, SocketAddrV6};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use hm_env::{Clock, Entropy, Env, Net};
use quinn::{RecvStream, SendStream, VarInt};
use tokio::sync::mpsc;

use crate::config::{StoqConfig, check_dialable, check_ipv6};
use crate::connection::{Connection, close_code};
use crate::error::{IdentityError, StoqError};
use crate::frame::{
    IDENTITY_FRAME_BYTES_MAX, IdentityBinding, KIND_IDENTITY, LENGTH_BYTES, StreamKind,
    decode_length, encode_prefixed_header,
};
use crate::glue::{EnvClock, EnvRuntime, EnvSocket};
use crate::identity::{
    NodeId, PeerIdentity, PeerVerifier, Role, check_binding, exporter, make_binding, node_id_hex,
};
use crate::keys::SigningKey;
use crate::tls::{SERVER_NAME, TlsIdentity, rustls_client_config, rustls_server_config};

/// Verified connections waiting for `accept`. When full, new ones are closed
/// with `BUSY` rather than queued without bound.
pub const ACCEPT_QUEUE_MAX: usize = 128;
/// Inbound handshakes in progress at once; more are refused at the QUIC
/// level (cheap), which bounds the signing/verifying work a flood can cause.
pub const HANDSHAKES_IN_FLIGHT_MAX: usize = 256;

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
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EndpointStats {
    /// Inbound connections verified and queued for `accept`.
    pub connections_accepted_total: u64,
    /// Outbound connections verified and returned by `connect`.
    pub connections_dialed_total: u64,
    /// Peers whose identity binding failed or whose key the verifier refused
    /// (both directions). None of them was ever handed to the application.
    pub identity_failures_total: u64,
    /// Handshakes that failed for other reasons: TLS, timeout, lost packets.
    pub handshake_failures_total: u64,
    /// Inbound handshakes refused because too many were in flight or the
    /// accept queue was full.
    pub handshakes_refused_total: u64,
    /// Connections closed because the peer broke the framing rules.
    pub protocol_violations_total: u64,
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
    /// Byzantine fault for tests and the simulator: sign an exporter value
    /// of the wrong role, which a correct peer must refuse.
    #[cfg(any(test, feature = "byzantine"))]
    forge_binding: std::sync::atomic::AtomicBool,
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
        let endpoint_config = quinn::EndpointConfig::new(Arc::new(reset_key));

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
        let context = Arc::new(Context {
            env: env.clone(),
            clock,
            key: identity,
            node_id,
            verifier,
            config,
            counters: Arc::new(EndpointCounters::default()),
            handshakes_in_flight: AtomicUsize::new(0),
            #[cfg(any(test, feature = "byzantine"))]
            forge_binding: std::sync::atomic::AtomicBool::new(false),
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
                Ok(peer) => Ok((quic, peer)),
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
            Ok(Ok((quic, peer))) => {
                context
                    .counters
                    .connections_dialed
                    .fetch_add(1, Ordering::Relaxed);
                Ok(Connection::start(
                    quic,
                    peer,
                    context.clock.clone(),
                    &context.config,
                    context.counters.clone(),
                ))
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
        }
    }

    /// Closes every connection and stops accepting. Dialing afterwards fails.
    pub fn close(&self) {
        self.inner.quic.close(
            VarInt::from_u32(close_code::ENDPOINT_CLOSED),
            b"endpoint closed",
        );
    }

    /// Makes this endpoint a Byzantine impersonator: every identity binding
    /// it sends from now on is forged (signed over the wrong exporter
    /// value), so correct peers refuse every connection with it. Exists only
    /// with the `byzantine` feature, which production builds leave off.
    #[cfg(any(test, feature = "byzantine"))]
    pub fn forge_bindings(&self) {
        self.inner
            .context
            .forge_binding
            .store(true, Ordering::Relaxed);
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

fn own_binding<E: Env>(
    context: &Context<E>,
    quic: &quinn::Connection,
    role: Role,
) -> Result<Vec<u8>, ExchangeFailure> {
    #[cfg(any(test, feature = "byzantine"))]
    let role = if context.forge_binding.load(Ordering::Relaxed) {
        match role {
            Role::Client => Role::Server,
            Role::Server => Role::Client,
        }
    } else {
        role
    };
    let exporter = exporter(quic, role)?;
    let binding = make_binding(
        &context.key,
        &exporter,
        &context.config.identity_extra,
        context.env.entropy(),
    );
    Ok(binding.encode())
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
    let peer = check_binding(&binding, &exporter(quic, peer_role)?)?;
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
) -> Result<PeerIdentity, ExchangeFailure> {
    let (mut send, mut recv) = quic.open_bi().await?;
    let body = own_binding(context, quic, Role::Client)?;
    write_binding(&mut send, Some(KIND_IDENTITY), &body).await?;
    read_peer(context, quic, &mut recv, Role::Server, expected).await
}

/// Server side: the client's first bidirectional stream must be its identity.
async fn server_exchange<E: Env>(
    context: &Context<E>,
    quic: &quinn::Connection,
) -> Result<PeerIdentity, ExchangeFailure> {
    let (mut send, mut recv) = quic.accept_bi().await?;
    let mut kind = [0u8; 1];
    recv.read_exact(&mut kind).await.map_err(read_error)?;
    if StreamKind::decode(kind[0]).map_err(IdentityError::from)? != StreamKind::Identity {
        return Err(
            IdentityError::Malformed(crate::frame::FrameError::UnknownKind(kind[0])).into(),
        );
    }
    let peer = read_peer(context, quic, &mut recv, Role::Client, None).await?;
    let body = own_binding(context, quic, Role::Server)?;
    write_binding(&mut send, None, &body).await?;
    Ok(peer)
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
            serve_handshake(&context, incoming, &accepted).await;
            context.handshakes_in_flight.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

async fn serve_handshake<E: Env>(
    context: &Context<E>,
    incoming: quinn::Incoming,
    accepted: &mpsc::Sender<Connection>,
) {
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
            Ok(peer) => Some((quic, peer)),
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
    let Ok(Some((quic, peer))) = outcome else {
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
        &context.config,
        context.counters.clone(),
    );
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
            connection.close("busy: accept queue full");
        }
        Err(mpsc::error::TrySendError::Closed(connection)) => {
            connection.close("endpoint closed");
        }
    }
}
