//! Endpoint configuration, its defaults and their reasons.

use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};

use crate::error::ConfigError;

/// Largest value any byte limit may take: length prefixes are 32-bit, and a
/// single buffer of more than 1 GiB is never what a node wants.
pub const LIMIT_BYTES_CEILING: usize = 1 << 30;

/// The STOQ port used in examples and tests.
pub const DEFAULT_PORT: u16 = 4433;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoqConfig {
    /// IPv6 only. Inside the simulator bind the node's exact address (madsim
    /// does not route to `[::]`); on a host `[::]:port` is fine.
    pub bind_addr: SocketAddr,
    /// Largest single framed message, request or response. A peer announcing
    /// more gets its connection closed. Default 16 MiB.
    pub frame_bytes_max: usize,
    /// Largest message `send_large` sends or the receiver reassembles.
    /// Default 64 MiB.
    pub large_message_bytes_max: usize,
    /// Chunk size `send_large` cuts messages into (one QUIC stream each).
    /// Default 1 MiB.
    pub large_chunk_bytes: usize,
    /// A large message must be complete this long after its first chunk
    /// arrived, or the connection is closed (its memory would be stuck).
    pub large_message_timeout_ms: u64,
    /// Per-connection budget for received bytes not yet taken by the
    /// application (queued messages, requests, reassemblies). Readers wait
    /// for budget, which back-pressures the peer through QUIC flow control.
    /// Must be at least `frame_bytes_max` and `large_message_bytes_max`.
    /// Default 96 MiB.
    pub receive_buffer_bytes_max: usize,
    /// QUIC idle timeout: a silent peer is dropped after this. Default 30 s.
    pub idle_timeout_ms: u64,
    /// Keep-alive PING interval, 0 = off. Must be below `idle_timeout_ms`.
    pub keep_alive_interval_ms: u64,
    /// QUIC handshake plus identity binding, each way. Default 10 s.
    pub handshake_timeout_ms: u64,
    /// Reading one whole frame from a stream; a slower peer has that stream
    /// stopped (not the connection). Default 30 s.
    pub stream_timeout_ms: u64,
    /// Streams the peer may open concurrently, per direction kind.
    pub max_concurrent_bidi_streams: u32,
    pub max_concurrent_uni_streams: u32,
    /// Unreliable datagrams (RFC 9221) on or off.
    pub datagrams_enabled: bool,
    /// Received datagrams quinn buffers before dropping the oldest.
    pub datagram_receive_buffer_bytes: usize,
    /// Offer only X25519MLKEM768 (true, default): no downgrade to a classical
    /// key exchange is possible. False also offers X25519 after it.
    pub post_quantum_only: bool,
    /// Bytes signed and sent along with our identity (e.g. a certificate).
    pub identity_extra: Vec<u8>,
    /// Application protocols (TLS ALPN ids) this endpoint serves; a dialer
    /// picks one per connection ([`crate::Endpoint::connect_protocol`]) and
    /// the acceptor reads it from [`crate::Connection::protocol`], so
    /// independent services share one port. The first is the default for
    /// [`crate::Endpoint::connect`].
    pub protocols: Vec<Vec<u8>>,
    /// Largest UDP payload this endpoint sends and accepts. 1,472 fits a
    /// 1,500-byte Ethernet MTU (and quinn's path-MTU discovery only ever
    /// climbs to it); links with jumbo frames (9,000) or loopback (65,536)
    /// carry far more per datagram, which cuts per-packet work for bulk
    /// transfers several times over. Both ends of a path must fit it.
    pub max_udp_payload_bytes: u16,
}

/// The payload quinn is limited to by default (a 1,500-byte MTU).
pub const UDP_PAYLOAD_BYTES_DEFAULT: u16 = 1_472;
/// The smallest payload QUIC allows (RFC 9000 §14).
pub const UDP_PAYLOAD_BYTES_MIN: u16 = 1_200;

/// Protocols one endpoint serves.
pub const PROTOCOLS_MAX: usize = 8;
/// Length of one protocol id (TLS allows 255; ours are short names).
pub const PROTOCOL_BYTES_MAX: usize = 32;

impl StoqConfig {
    /// Defaults for an endpoint bound to `bind_addr`.
    pub fn new(bind_addr: impl Into<SocketAddr>) -> Self {
        Self {
            bind_addr: bind_addr.into(),
            frame_bytes_max: 16 << 20,
            large_message_bytes_max: 64 << 20,
            large_chunk_bytes: 1 << 20,
            large_message_timeout_ms: 60_000,
            receive_buffer_bytes_max: 96 << 20,
            idle_timeout_ms: 30_000,
            keep_alive_interval_ms: 10_000,
            handshake_timeout_ms: 10_000,
            stream_timeout_ms: 30_000,
            max_concurrent_bidi_streams: 64,
            max_concurrent_uni_streams: 64,
            datagrams_enabled: true,
            datagram_receive_buffer_bytes: 1 << 20,
            post_quantum_only: true,
            identity_extra: Vec::new(),
            protocols: vec![crate::tls::ALPN.to_vec()],
            max_udp_payload_bytes: UDP_PAYLOAD_BYTES_DEFAULT,
        }
    }

    /// Checks every field; the error names the field and the rule.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_ipv6(self.bind_addr)?;
        let bytes = |field, value: usize, min: usize, reason| {
            if value < min || value > LIMIT_BYTES_CEILING {
                Err(ConfigError::OutOfRange {
                    field,
                    value: value as u64,
                    reason,
                })
            } else {
                Ok(())
            }
        };
        bytes(
            "frame_bytes_max",
            self.frame_bytes_max,
            1024,
            "between 1 KiB and 1 GiB",
        )?;
        bytes(
            "large_message_bytes_max",
            self.large_message_bytes_max,
            1,
            "between 1 byte and 1 GiB",
        )?;
        bytes(
            "large_chunk_bytes",
            self.large_chunk_bytes,
            crate::frame::LARGE_CHUNK_BYTES_MIN,
            "between LARGE_CHUNK_BYTES_MIN (16 KiB) and 1 GiB",
        )?;
        bytes(
            "receive_buffer_bytes_max",
            self.receive_buffer_bytes_max,
            1024,
            "between 1 KiB and 1 GiB",
        )?;
        if self.max_udp_payload_bytes < UDP_PAYLOAD_BYTES_MIN
            || usize::from(self.max_udp_payload_bytes) > hm_env::net::DATAGRAM_BYTES_MAX
        {
            return Err(ConfigError::OutOfRange {
                field: "max_udp_payload_bytes",
                value: u64::from(self.max_udp_payload_bytes),
                reason: "between 1200 (QUIC's minimum) and 65527",
            });
        }
        if self.large_chunk_bytes > self.frame_bytes_max {
            return Err(ConfigError::OutOfRange {
                field: "large_chunk_bytes",
                value: self.large_chunk_bytes as u64,
                reason: "must not exceed frame_bytes_max",
            });
        }
        if self.frame_bytes_max > self.receive_buffer_bytes_max
            || self.large_message_bytes_max > self.receive_buffer_bytes_max
        {
            return Err(ConfigError::OutOfRange {
                field: "receive_buffer_bytes_max",
                value: self.receive_buffer_bytes_max as u64,
                reason: "must hold at least one frame and one large message, or receiving one would wait forever",
            });
        }
        let millis = |field, value: u64| {
            if value == 0 || value > 24 * 3600 * 1000 {
                Err(ConfigError::OutOfRange {
                    field,
                    value,
                    reason: "between 1 ms and one day",
                })
            } else {
                Ok(())
            }
        };
        if self.protocols.is_empty() || self.protocols.len() > PROTOCOLS_MAX {
            return Err(ConfigError::OutOfRange {
                field: "protocols",
                value: self.protocols.len() as u64,
                reason: "between 1 and PROTOCOLS_MAX (8) protocol ids",
            });
        }
        for (position, protocol) in self.protocols.iter().enumerate() {
            if protocol.is_empty() || protocol.len() > PROTOCOL_BYTES_MAX {
                return Err(ConfigError::OutOfRange {
                    field: "protocols",
                    value: protocol.len() as u64,
                    reason: "each protocol id must be 1..=32 bytes",
                });
            }
            if self.protocols[..position].contains(protocol) {
                return Err(ConfigError::OutOfRange {
                    field: "protocols",
                    value: position as u64,
                    reason: "protocol ids must be distinct",
                });
            }
        }
        millis("idle_timeout_ms", self.idle_timeout_ms)?;
        millis("handshake_timeout_ms", self.handshake_timeout_ms)?;
        millis("stream_timeout_ms", self.stream_timeout_ms)?;
        millis("large_message_timeout_ms", self.large_message_timeout_ms)?;
        if self.keep_alive_interval_ms >= self.idle_timeout_ms {
            return Err(ConfigError::OutOfRange {
                field: "keep_alive_interval_ms",
                value: self.keep_alive_interval_ms,
                reason: "must be below idle_timeout_ms (0 turns keep-alive off)",
            });
        }
        for (field, value) in [
            (
                "max_concurrent_bidi_streams",
                self.max_concurrent_bidi_streams,
            ),
            (
                "max_concurrent_uni_streams",
                self.max_concurrent_uni_streams,
            ),
        ] {
            if value == 0 || value > 10_000 {
                return Err(ConfigError::OutOfRange {
                    field,
                    value: u64::from(value),
                    reason: "between 1 and 10000",
                });
            }
        }
        if self.identity_extra.len() > crate::frame::IDENTITY_EXTRA_BYTES_MAX {
            return Err(ConfigError::OutOfRange {
                field: "identity_extra",
                value: self.identity_extra.len() as u64,
                reason: "at most IDENTITY_EXTRA_BYTES_MAX (16 KiB)",
            });
        }
        Ok(())
    }
}

/// Refuses IPv4 and IPv4-mapped addresses; returns the IPv6 address.
pub fn check_ipv6(addr: SocketAddr) -> Result<SocketAddrV6, ConfigError> {
    match addr {
        SocketAddr::V4(_) => Err(ConfigError::Ipv4NotSupported { addr }),
        SocketAddr::V6(v6) if v6.ip().to_ipv4_mapped().is_some() => {
            Err(ConfigError::Ipv4MappedNotSupported { addr })
        }
        SocketAddr::V6(v6) => Ok(v6),
    }
}

/// Like [`check_ipv6`], and the address must name a peer.
pub fn check_dialable(addr: SocketAddr) -> Result<SocketAddrV6, ConfigError> {
    let v6 = check_ipv6(addr)?;
    if v6.port() == 0 || *v6.ip() == Ipv6Addr::UNSPECIFIED {
        return Err(ConfigError::UndialableAddress { addr });
    }
    Ok(v6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_and_mapped_addresses_are_config_errors_with_a_hint() {
        let v4: SocketAddr = "127.0.0.1:4433".parse().expect("addr");
        let error = StoqConfig::new(v4).validate().expect_err("v4 refused");
        assert_eq!(error, ConfigError::Ipv4NotSupported { addr: v4 });
        assert!(error.to_string().contains("IPv6 only"), "{error}");
        let mapped: SocketAddr = "[::ffff:10.0.0.1]:4433".parse().expect("addr");
        assert_eq!(
            check_dialable(mapped),
            Err(ConfigError::Ipv4MappedNotSupported { addr: mapped })
        );
        let unspecified: SocketAddr = "[::]:4433".parse().expect("addr");
        assert!(StoqConfig::new(unspecified).validate().is_ok());
        assert!(check_dialable(unspecified).is_err());
    }

    #[test]
    fn limits_that_could_deadlock_are_refused() {
        let addr: SocketAddr = "[fd00::1]:4433".parse().expect("addr");
        let mut config = StoqConfig::new(addr);
        assert_eq!(config.validate(), Ok(()));
        config.large_message_bytes_max = config.receive_buffer_bytes_max + 1;
        assert!(matches!(
            config.validate(),
            Err(ConfigError::OutOfRange {
                field: "receive_buffer_bytes_max",
                ..
            })
        ));
        let mut config = StoqConfig::new(addr);
        config.keep_alive_interval_ms = config.idle_timeout_ms;
        assert!(config.validate().is_err());
    }
}
