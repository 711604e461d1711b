//! Typed errors. Each message says what went wrong and what to do about it.

use std::net::SocketAddr;

use crate::frame::FrameError;

/// A configuration the endpoint refuses to start with (or an address it
/// refuses to dial). Fix the configuration; retrying will not help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "{addr} is an IPv4 address; HyperMesh runs on IPv6 only: use an IPv6 address such as [::1]:{port} or [fd00::1]:{port}",
        port = addr.port()
    )]
    Ipv4NotSupported { addr: SocketAddr },
    #[error(
        "{addr} is an IPv4-mapped IPv6 address (::ffff:a.b.c.d); HyperMesh runs on IPv6 only: use a native IPv6 address"
    )]
    Ipv4MappedNotSupported { addr: SocketAddr },
    #[error("cannot dial {addr}: port 0 and the unspecified address [::] name no peer")]
    UndialableAddress { addr: SocketAddr },
    #[error("{field} = {value} is out of range: {reason}")]
    OutOfRange {
        field: &'static str,
        value: u64,
        reason: &'static str,
    },
    #[error("TLS setup failed: {0}; this is a bug in hm-stoq's TLS configuration")]
    Tls(String),
}

/// The peer's identity could not be established or was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("the peer's identity binding is malformed: {0}")]
    Malformed(#[from] FrameError),
    #[error("the peer's FALCON public key does not decode: {0}")]
    BadPublicKey(String),
    #[error(
        "the peer's identity signature does not verify over this session's exporter value (forged, replayed from another session, or a man in the middle): {0}"
    )]
    BadSignature(String),
    #[error("the peer verifier refused node {node_id}: {reason}")]
    Refused {
        node_id: String,
        #[source]
        reason: crate::identity::PeerRefused,
    },
    #[error("expected node {expected} but the peer proved it is {got}; check the address book")]
    UnexpectedNode { expected: String, got: String },
    #[error("the TLS exporter is unavailable: {0}")]
    Exporter(String),
}

/// Everything an STOQ operation can fail with.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoqError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(
        "binding {addr} failed: {reason}; is another endpoint using it, or is it not this node's address?"
    )]
    Bind { addr: SocketAddr, reason: String },
    #[error("cannot start a connection to {addr}: {reason}")]
    Connect { addr: SocketAddr, reason: String },
    #[error(
        "the handshake with {addr} did not finish within {timeout_ms} ms; the peer is down, unreachable or overloaded"
    )]
    HandshakeTimeout { addr: SocketAddr, timeout_ms: u64 },
    #[error("identity check of {addr} failed: {source}")]
    Identity {
        addr: SocketAddr,
        #[source]
        source: IdentityError,
    },
    #[error("connection lost: {0}")]
    Connection(#[from] quinn::ConnectionError),
    #[error("stream failed: {0}")]
    Stream(String),
    #[error("the peer broke the framing rules: {0}")]
    Frame(#[from] FrameError),
    #[error(
        "message of {len_bytes} bytes exceeds the {len_bytes_max}-byte limit; use send_large or raise the limit"
    )]
    MessageTooLarge { len_bytes: u64, len_bytes_max: u64 },
    #[error("no answer within {timeout_ms} ms")]
    Timeout { timeout_ms: u64 },
    #[error("the peer dropped the request without answering")]
    NoResponse,
    #[error("datagram not sent: {0}")]
    Datagram(String),
    #[error("the endpoint is closed")]
    EndpointClosed,
}

impl StoqError {
    pub(crate) fn stream(error: impl std::fmt::Display) -> Self {
        Self::Stream(error.to_string())
    }

    /// The peer answered and closed the connection because it refused our
    /// identity: it is alive and reachable, it only does not accept us.
    pub fn refused_by_peer(&self) -> bool {
        matches!(
            self,
            Self::Connection(quinn::ConnectionError::ApplicationClosed(close))
                if close.error_code == quinn::VarInt::from_u32(crate::connection::close_code::IDENTITY_FAILED)
        )
    }
}
