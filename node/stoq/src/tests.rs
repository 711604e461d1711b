//! End-to-end tests: real quinn + rustls endpoints over `hm_env::mem::MemNet`.

use std::collections::BTreeSet;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hm_env::mem::{MemNet, TestEnv};
use hm_env::{Clock, Entropy, Env, Net, RuntimeClock};
use quinn::ConnectionError;

use crate::frame::{
    ChunkHeader, KIND_MESSAGE, KIND_REAUTH, REAUTH_VERSION, ReauthFrame, encode_prefixed_header,
};

use crate::keys::SigningKey;
use crate::{
    AllowListVerifier, ConfigError, Connection, Endpoint, IdentityError, PeerIdentity, PeerRefused,
    PeerVerifier, SelfSignedVerifier, StoqConfig, StoqError, close_code,
};

const SEED: u64 = 42;
const PATIENCE: Duration = Duration::from_secs(10);

fn addr(host: u16) -> SocketAddr {
    SocketAddr::V6(SocketAddrV6::new(
        Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, host),
        4433,
        0,
        0,
    ))
}

struct Node {
    env: TestEnv,
    endpoint: Endpoint<TestEnv>,
}

fn node_with(
    net: &MemNet,
    host: u16,
    configure: impl FnOnce(&mut StoqConfig),
    verifier: Arc<dyn PeerVerifier>,
) -> Node {
    let env = TestEnv::new(net, SEED, &format!("node-{host}"));
    let key = SigningKey::generate(env.entropy());
    let mut config = StoqConfig::new(addr(host));
    configure(&mut config);
    let endpoint = Endpoint::bind(&env, key, config, verifier).expect("bind");
    Node { env, endpoint }
}

fn node(net: &MemNet, host: u16) -> Node {
    node_with(net, host, |_| {}, Arc::new(SelfSignedVerifier))
}

/// Bounds every await in a test so a bug shows as a failure, not a hang.
async fn soon<F: std::future::Future>(future: F) -> F::Output {
    hm_env::timeout(&RuntimeClock, PATIENCE, future)
        .await
        .expect("test step took too long")
}

/// Dials `to` from `from`; returns (dialer's connection, acceptor's connection).
async fn pair(from: &Node, to: &Node) -> (Connection, Connection) {
    let (dialed, accepted) = soon(async {
        tokio::join!(
            from.endpoint
                .connect(SocketAddr::V6(to.endpoint.local_addr())),
            to.endpoint.accept()
        )
    })
    .await;
    (dialed.expect("connect"), accepted.expect("accept"))
}

fn application_close(error: &StoqError) -> Option<(u64, String)> {
    match error {
        StoqError::Connection(ConnectionError::ApplicationClosed(close)) => Some((
            close.error_code.into_inner(),
            String::from_utf8_lossy(&close.reason).into_owned(),
        )),
        _ => None,
    }
}

#[tokio::test]
async fn identities_are_verified_both_ways_and_match_the_keys() {
    let net = MemNet::new();
    let client_env = TestEnv::new(&net, SEED, "client");
    let client_key = SigningKey::generate(client_env.entropy());
    let client_id = client_key.verifying_key().fingerprint();
    let mut config = StoqConfig::new(addr(1));
    config.identity_extra = b"phase-0".to_vec();
    let client = Endpoint::bind(
        &client_env,
        client_key,
        config,
        Arc::new(SelfSignedVerifier),
    )
    .expect("bind");
    let server = node(&net, 2);

    let (dialed, accepted) =
        soon(async { tokio::join!(client.connect(addr(2)), server.endpoint.accept()) }).await;
    let (dialed, accepted) = (dialed.expect("connect"), accepted.expect("accept"));

    assert_eq!(client.node_id(), client_id);
    assert_eq!(accepted.peer().node_id, client_id);
    assert_eq!(accepted.peer().public_key.fingerprint(), client_id);
    assert_eq!(accepted.peer().extra, b"phase-0");
    assert_eq!(dialed.peer().node_id, server.endpoint.node_id());
    assert_ne!(client_id, server.endpoint.node_id());
    assert_eq!(SocketAddr::V6(dialed.remote_addr()), addr(2));
    assert_eq!(SocketAddr::V6(accepted.remote_addr()), addr(1));
    assert_eq!(client.stats().connections_dialed_total, 1);
    assert_eq!(server.endpoint.stats().connections_accepted_total, 1);
    assert_eq!(server.endpoint.stats().identity_failures_total, 0);
}

#[tokio::test]
async fn messages_flow_both_ways_and_are_counted() {
    let net = MemNet::new();
    let (a, b) = (node(&net, 1), node(&net, 2));
    let (ab, ba) = pair(&a, &b).await;
    let sent: BTreeSet<Vec<u8>> = (0..20u8).map(|i| vec![i; usize::from(i) * 100]).collect();
    for message in &sent {
        soon(ab.send_message(message)).await.expect("send");
    }
    let mut got = BTreeSet::new();
    for _ in 0..sent.len() {
        got.insert(soon(ba.recv_message()).await.expect("recv"));
    }
    assert_eq!(got, sent);
    soon(ba.send_message(b"back")).await.expect("send back");
    assert_eq!(soon(ab.recv_message()).await.expect("recv"), b"back");

    let stats = ab.stats();
    assert_eq!(stats.messages_sent, 20);
    assert_eq!(stats.messages_received, 1);
    assert!(stats.udp_bytes_sent > stats.message_bytes_sent);
    assert!(stats.stream_frames_sent >= 20);
    assert_eq!(ba.stats().messages_received, 20);
}

#[tokio::test]
async fn requests_are_answered_and_deadlines_expire() {
    let net = MemNet::new();
    let (a, b) = (node(&net, 1), node(&net, 2));
    let (ab, ba) = pair(&a, &b).await;

    let serving = ba.clone();
    let server = tokio::spawn(async move {
        let ba = serving;
        // First request: answered. Second: held past the deadline. Third:
        // dropped unanswered.
        let mut request = ba.accept_request().await.expect("request 1");
        let mut answer = request.take_payload();
        answer.reverse();
        request.respond(&answer).await.expect("respond");
        let held = ba.accept_request().await.expect("request 2");
        let dropped = ba.accept_request().await.expect("request 3");
        drop(dropped);
        held
    });

    let response = soon(ab.request(b"ping", Duration::from_secs(5)))
        .await
        .expect("round trip");
    assert_eq!(response, b"gnip");

    let slow = soon(ab.request(b"slow", Duration::from_millis(200))).await;
    assert!(
        matches!(slow, Err(StoqError::Timeout { timeout_ms: 200 })),
        "{slow:?}"
    );
    let refused = soon(ab.request(b"drop me", Duration::from_secs(5))).await;
    assert!(matches!(refused, Err(StoqError::NoResponse)), "{refused:?}");

    let held = soon(server).await.expect("server task");
    assert_eq!(held.payload(), b"slow");
    assert_eq!(ab.stats().requests_sent, 3);
}

#[tokio::test]
async fn datagrams_are_delivered() {
    let net = MemNet::new();
    let (a, b) = (node(&net, 1), node(&net, 2));
    let (ab, ba) = pair(&a, &b).await;
    let max = ab.max_datagram_bytes().expect("datagrams enabled");
    assert!(max >= 1000, "max datagram {max}");
    ab.send_datagram(Bytes::from_static(b"unreliable"))
        .expect("send");
    assert_eq!(
        soon(ba.recv_datagram()).await.expect("recv"),
        Bytes::from_static(b"unreliable")
    );
    // Larger than any path MTU (the limit itself grows as quinn discovers
    // the path MTU, so `max + 1` would race with it).
    assert!(matches!(
        ab.send_datagram(Bytes::from(vec![0u8; 70_000])),
        Err(StoqError::Datagram(_))
    ));
    assert_eq!(
        (ab.stats().datagrams_sent, ba.stats().datagrams_received),
        (1, 1)
    );
}

#[tokio::test]
async fn a_five_mib_message_is_sharded_and_reassembled() {
    let net = MemNet::new();
    let (a, b) = (node(&net, 1), node(&net, 2));
    let (ab, ba) = pair(&a, &b).await;
    let message: Vec<u8> = (0..5 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let (sent, received) =
        soon(async { tokio::join!(ab.send_large(&message), ba.recv_message()) }).await;
    sent.expect("send_large");
    let received = received.expect("reassembled");
    assert_eq!(received.len(), message.len());
    assert!(received == message, "content differs");
    // Six 1 MiB chunks, one stream each.
    assert!(ba.stats().stream_frames_received >= 6);

    let too_big = vec![0u8; StoqConfig::new(addr(1)).large_message_bytes_max + 1];
    assert!(matches!(
        ab.send_large(&too_big).await,
        Err(StoqError::MessageTooLarge { .. })
    ));
}

#[tokio::test]
async fn an_oversized_frame_closes_the_connection_with_a_reason() {
    let net = MemNet::new();
    let (a, b) = (node(&net, 1), node(&net, 2));
    let (ab, ba) = pair(&a, &b).await;
    let limit = StoqConfig::new(addr(1)).frame_bytes_max;

    // The API refuses to send it...
    assert!(matches!(
        ab.send_message(&vec![0u8; limit + 1]).await,
        Err(StoqError::MessageTooLarge { .. })
    ));
    // ...so announce it by hand, as a broken or hostile peer would.
    let mut raw = soon(ab.quic().open_uni()).await.expect("open");
    raw.write_all(&encode_prefixed_header(KIND_MESSAGE, limit + 1))
        .await
        .expect("write");

    let closed = soon(ab.closed()).await;
    let (code, reason) = application_close(&closed).expect("application close");
    assert_eq!(code, u64::from(close_code::FRAME_TOO_LARGE));
    assert!(reason.contains("exceeds"), "{reason}");
    assert!(ba.close_reason().expect("closed").contains("exceeds"));
    assert!(soon(ba.recv_message()).await.is_err());
    assert_eq!(b.endpoint.stats().protocol_violations_total, 1);
}

#[tokio::test]
async fn garbage_on_a_stream_closes_that_connection_only() {
    let net = MemNet::new();
    let (a, b) = (node(&net, 1), node(&net, 2));
    let (ab, _ba) = pair(&a, &b).await;
    let (other, _other_b) = pair(&a, &b).await;

    let mut raw = soon(ab.quic().open_uni()).await.expect("open");
    raw.write_all(b"\xEEGET / HTTP/1.1\r\n")
        .await
        .expect("write");
    raw.finish().expect("finish");
    let closed = soon(ab.closed()).await;
    let (code, reason) = application_close(&closed).expect("application close");
    assert_eq!(code, u64::from(close_code::PROTOCOL_VIOLATION));
    assert!(reason.contains("unknown stream kind"), "{reason}");

    // A stream that stops inside a frame header is garbage too.
    let (cd, _dc) = pair(&a, &b).await;
    let mut raw = soon(cd.quic().open_uni()).await.expect("open");
    raw.write_all(&[KIND_MESSAGE, 0]).await.expect("write");
    raw.finish().expect("finish");
    let (code, _) = application_close(&soon(cd.closed()).await).expect("close");
    assert_eq!(code, u64::from(close_code::PROTOCOL_VIOLATION));

    // The other connection is untouched.
    soon(other.send_message(b"still here")).await.expect("send");
    assert!(other.close_reason().is_none());
}

#[tokio::test]
async fn an_incomplete_large_message_times_out_and_closes() {
    let net = MemNet::new();
    let a = node(&net, 1);
    let b = node_with(
        &net,
        2,
        |config| config.large_message_timeout_ms = 300,
        Arc::new(SelfSignedVerifier),
    );
    let (ab, _ba) = pair(&a, &b).await;
    let header = ChunkHeader {
        message_id: 9,
        total_len: 64 * 1024,
        offset: 0,
        chunk_len: 32 * 1024,
    };
    let mut raw = soon(ab.quic().open_uni()).await.expect("open");
    raw.write_all(&header.encode()).await.expect("header");
    raw.write_all(&[1u8; 32 * 1024]).await.expect("payload");
    raw.finish().expect("finish");
    let (code, reason) = application_close(&soon(ab.closed()).await).expect("close");
    assert_eq!(code, u64::from(close_code::LARGE_MESSAGE_TIMEOUT));
    assert!(reason.contains("incomplete"), "{reason}");
}

#[tokio::test]
async fn a_forged_binding_is_refused_counted_and_never_accepted() {
    let net = MemNet::new();
    // Mallory's presenter signs the exporter value of the other role (the
    // hm-faults impersonator does the same in the simulator).
    struct Forger;
    impl crate::Presenter for Forger {
        fn signed_role(&self, own: crate::Role) -> crate::Role {
            own.peer()
        }
    }
    let mallory = {
        let env = TestEnv::new(&net, SEED, "node-1");
        let key = SigningKey::generate(env.entropy());
        let endpoint = Endpoint::bind_presenting(
            &env,
            key,
            StoqConfig::new(addr(1)),
            Arc::new(SelfSignedVerifier),
            Arc::new(Forger),
        )
        .expect("bind");
        Node { env, endpoint }
    };
    let honest = node(&net, 2);

    // Mallory signs the exporter value of the wrong role: a valid FALCON
    // signature, over a value this session's client never had.
    let refused = soon(mallory.endpoint.connect(addr(2))).await;
    let error = refused.expect_err("forged identity must be refused");
    let (code, reason) = application_close(&error).expect("application close");
    assert_eq!(code, u64::from(close_code::IDENTITY_FAILED));
    assert!(reason.contains("does not verify"), "{reason}");
    assert_eq!(honest.endpoint.stats().identity_failures_total, 1);

    // The refused connection never reached `accept`: the next accepted one
    // is an honest node's.
    let carol = node(&net, 3);
    let (_, accepted) = pair(&carol, &honest).await;
    assert_eq!(accepted.peer().node_id, carol.endpoint.node_id());
    assert_eq!(honest.endpoint.stats().connections_accepted_total, 1);

    // A forging server is refused by the dialing client just the same.
    let result = soon(carol.endpoint.connect(addr(1))).await;
    assert!(!result.as_ref().is_err_and(StoqError::refused_by_peer));
    assert!(
        matches!(
            result,
            Err(StoqError::Identity {
                source: IdentityError::BadSignature(_),
                ..
            })
        ),
        "{result:?}"
    );
    assert_eq!(carol.endpoint.stats().identity_failures_total, 1);
}

#[tokio::test]
async fn the_verifier_and_expected_node_id_can_refuse_a_valid_key() {
    let net = MemNet::new();
    let client = node(&net, 1);
    let picky = node_with(&net, 2, |_| {}, Arc::new(AllowListVerifier::default()));
    let error = soon(client.endpoint.connect(addr(2)))
        .await
        .expect_err("not on the allow list");
    assert!(error.refused_by_peer(), "{error}");
    let (code, reason) = application_close(&error).expect("application close");
    assert_eq!(code, u64::from(close_code::IDENTITY_FAILED));
    assert!(reason.contains("allow list"), "{reason}");
    assert_eq!(picky.endpoint.stats().identity_failures_total, 1);

    let other = node(&net, 3);
    let wrong = picky.endpoint.node_id();
    let result = soon(client.endpoint.connect_expecting(addr(3), wrong)).await;
    assert!(
        matches!(
            result,
            Err(StoqError::Identity {
                source: IdentityError::UnexpectedNode { .. },
                ..
            })
        ),
        "{result:?}"
    );
    assert_eq!(client.endpoint.stats().identity_failures_total, 1);
    let right = other.endpoint.node_id();
    let (ok, _) = soon(async {
        tokio::join!(
            client.endpoint.connect_expecting(addr(3), right),
            other.endpoint.accept()
        )
    })
    .await;
    assert_eq!(ok.expect("expected node").peer().node_id, right);
}

#[tokio::test]
async fn a_thousand_garbage_datagrams_leave_the_endpoint_working() {
    let net = MemNet::new();
    let (a, b) = (node(&net, 1), node(&net, 2));
    let (ab, ba) = pair(&a, &b).await;
    let attacker = net
        .bind(SocketAddrV6::new(
            Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 66),
            9999,
            0,
            0,
        ))
        .expect("bind attacker");
    let entropy = &a.env.entropy;
    for i in 0..1000u32 {
        let len = 1 + entropy.below(1500) as usize;
        let mut datagram = vec![0u8; len];
        entropy.fill_bytes(&mut datagram);
        // Every fourth one looks like a QUIC long-header Initial.
        if i % 4 == 0 {
            datagram[0] = 0xc0 | (datagram[0] & 0x0f);
            if len >= 5 {
                datagram[1..5].copy_from_slice(&1u32.to_be_bytes());
            }
        }
        soon(hm_env::send_to(
            &attacker,
            b.endpoint.local_addr(),
            &datagram,
        ))
        .await
        .expect("send garbage");
    }
    // The existing connection and new handshakes both still work.
    let serving = ba.clone();
    let server = tokio::spawn(async move {
        let request = serving.accept_request().await.expect("request");
        request.respond(b"fine").await.expect("respond");
    });
    assert_eq!(
        soon(ab.request(b"ok?", Duration::from_secs(5)))
            .await
            .expect("request after garbage"),
        b"fine"
    );
    soon(server).await.expect("server");
    let c = node(&net, 3);
    let (cb, _) = pair(&c, &b).await;
    assert!(cb.close_reason().is_none());
    assert_eq!(b.endpoint.stats().identity_failures_total, 0);
}

#[tokio::test]
async fn ipv4_addresses_are_config_errors() {
    let net = MemNet::new();
    let env = TestEnv::new(&net, SEED, "v4");
    let v4: SocketAddr = "127.0.0.1:4433".parse().expect("addr");
    let error = Endpoint::bind(
        &env,
        SigningKey::generate(env.entropy()),
        StoqConfig::new(v4),
        Arc::new(SelfSignedVerifier),
    )
    .expect_err("v4 bind");
    assert!(matches!(
        error,
        StoqError::Config(ConfigError::Ipv4NotSupported { .. })
    ));
    assert!(error.to_string().contains("IPv6 only"), "{error}");

    let a = node(&net, 1);
    assert!(matches!(
        a.endpoint.connect(v4).await,
        Err(StoqError::Config(ConfigError::Ipv4NotSupported { .. }))
    ));
    let mapped: SocketAddr = "[::ffff:127.0.0.1]:4433".parse().expect("addr");
    assert!(matches!(
        a.endpoint.connect(mapped).await,
        Err(StoqError::Config(
            ConfigError::Ipv4MappedNotSupported { .. }
        ))
    ));
}

#[tokio::test]
async fn dialing_nobody_times_out_within_the_handshake_deadline() {
    let net = MemNet::new();
    let a = node_with(
        &net,
        1,
        |config| config.handshake_timeout_ms = 300,
        Arc::new(SelfSignedVerifier),
    );
    let started = a.env.clock().now();
    let result = soon(a.endpoint.connect(addr(9))).await;
    assert!(
        matches!(
            result,
            Err(StoqError::HandshakeTimeout {
                timeout_ms: 300,
                ..
            })
        ),
        "{result:?}"
    );
    assert!(a.env.clock().now() - started >= Duration::from_millis(300));
    assert_eq!(a.endpoint.stats().handshake_failures_total, 1);
}

#[tokio::test]
async fn closing_or_dropping_a_connection_is_seen_by_the_peer() {
    let net = MemNet::new();
    let (a, b) = (node(&net, 1), node(&net, 2));
    let (ab, ba) = pair(&a, &b).await;
    ab.close("maintenance");
    let (code, reason) = application_close(&soon(ba.closed()).await).expect("close");
    assert_eq!((code, reason.as_str()), (0, "maintenance"));
    assert!(soon(ba.recv_message()).await.is_err());
    assert!(soon(ba.accept_request()).await.is_none());

    let (cd, dc) = pair(&a, &b).await;
    drop(cd);
    let (code, _) = application_close(&soon(dc.closed()).await).expect("close");
    assert_eq!(code, u64::from(close_code::NORMAL));

    // Closing the endpoint ends accept and closes what is left.
    let (ef, _fe) = pair(&a, &b).await;
    b.endpoint.close();
    assert!(soon(b.endpoint.accept()).await.is_none());
    let (code, _) = application_close(&soon(ef.closed()).await).expect("close");
    assert_eq!(code, u64::from(close_code::ENDPOINT_CLOSED));
}

#[tokio::test]
async fn services_share_one_port_through_alpn() {
    let net = MemNet::new();
    let protocols = |config: &mut StoqConfig| {
        config.protocols = vec![b"hm/membership/1".to_vec(), b"hm/chain/1".to_vec()];
    };
    let a = node_with(&net, 1, protocols, Arc::new(SelfSignedVerifier));
    let b = node_with(&net, 2, protocols, Arc::new(SelfSignedVerifier));
    let only_default = node(&net, 3);
    let to_b = SocketAddr::V6(b.endpoint.local_addr());
    for protocol in [&b"hm/chain/1"[..], b"hm/membership/1"] {
        let (dialed, accepted) = soon(async {
            tokio::join!(
                a.endpoint.connect_protocol(to_b, protocol, None),
                b.endpoint.accept()
            )
        })
        .await;
        let dialed = dialed.expect("connect");
        let accepted = accepted.expect("accept");
        assert_eq!(dialed.protocol(), protocol);
        assert_eq!(accepted.protocol(), protocol);
        assert_eq!(accepted.peer().node_id, a.endpoint.node_id());
    }
    // A protocol the dialer does not serve is a local error...
    let unknown = a
        .endpoint
        .connect_protocol(to_b, b"hm/other/1", None)
        .await
        .expect_err("not configured");
    assert!(matches!(unknown, StoqError::Connect { .. }));
    // ...and one the acceptor does not serve fails the handshake.
    let refused = soon(a.endpoint.connect_protocol(
        SocketAddr::V6(only_default.endpoint.local_addr()),
        b"hm/chain/1",
        None,
    ))
    .await;
    assert!(refused.is_err(), "ALPN mismatch must fail the handshake");
    // The default protocol is the first one.
    let config = StoqConfig::new(addr(9));
    assert_eq!(config.protocols, vec![crate::tls::ALPN.to_vec()]);
    let mut duplicate = StoqConfig::new(addr(9));
    duplicate.protocols = vec![b"x".to_vec(), b"x".to_vec()];
    assert!(matches!(
        duplicate.validate(),
        Err(ConfigError::OutOfRange {
            field: "protocols",
            ..
        })
    ));
}

// ---------------------------------------------------------------------------
// Re-authentication: new identity bytes on live connections.

/// Waits until `done` holds, yielding to the runtime between checks (MemNet
/// has no latency, so progress needs only the other tasks to run); bounded
/// by [`soon`]. For outcomes that change no watched value (stale frames).
async fn until(mut done: impl FnMut() -> bool) {
    soon(async {
        while !done() {
            tokio::task::yield_now().await;
        }
    })
    .await;
}

/// Writes `body` as one re-authentication stream, bypassing `present`.
async fn send_raw_reauth(connection: &Connection, body: &[u8]) {
    let mut raw = soon(connection.quic().open_uni()).await.expect("open");
    soon(raw.write_all(&encode_prefixed_header(KIND_REAUTH, body.len())))
        .await
        .expect("header");
    soon(raw.write_all(body)).await.expect("body");
    raw.finish().expect("finish");
}

/// A re-authentication frame as the endpoint would send it.
fn reauth(generation: u64, extra: &[u8]) -> ReauthFrame {
    ReauthFrame {
        generation,
        extra: extra.to_vec(),
    }
}

/// Refuses identity bytes starting with `bad` (a revoked certificate).
struct RefusesBad;

#[derive(Debug, thiserror::Error)]
#[error("certificate {0:?} is revoked")]
struct Revoked(String);

impl PeerVerifier for RefusesBad {
    fn verify(&self, peer: &PeerIdentity) -> Result<(), PeerRefused> {
        if peer.extra.starts_with(b"bad") {
            Err(PeerRefused::new(Revoked(
                String::from_utf8_lossy(&peer.extra).into_owned(),
            )))
        } else {
            Ok(())
        }
    }
}

#[tokio::test]
async fn presenting_a_certificate_reauthenticates_without_dropping_a_large_message() {
    let net = MemNet::new();
    let (a, b) = (node(&net, 1), node(&net, 2));
    let (ab, ba) = pair(&a, &b).await;
    assert_eq!(
        (a.endpoint.identity_generation(), ba.peer_generation()),
        (0, 0)
    );
    assert!(ba.peer_extra().is_empty());

    let message: Vec<u8> = (0..5 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    // `join!` polls in order: send_large has opened its first chunk streams
    // (5 MiB cannot go out in one poll) when `present` runs.
    let (sent, received, presented) = soon(async {
        tokio::join!(ab.send_large(&message), ba.recv_message(), async {
            let generation = a.endpoint.present(b"cert-1".to_vec());
            (generation, ba.wait_peer_generation(1).await)
        })
    })
    .await;
    sent.expect("send_large");
    let received = received.expect("reassembled");
    assert!(received == message, "the in-flight message arrived damaged");
    let (generation, seen) = presented;
    assert_eq!(generation.expect("present"), 1);
    assert_eq!(seen, 1);
    assert_eq!(ba.peer_generation(), 1);
    assert_eq!(ba.peer_extra().as_slice(), b"cert-1");
    // `peer()` stays the handshake identity.
    assert!(ba.peer().extra.is_empty());
    assert_eq!(ba.peer().node_id, a.endpoint.node_id());
    // Only the presenting side changed.
    assert_eq!((ab.peer_generation(), ab.peer_extra().len()), (0, 0));
    assert!(ab.close_reason().is_none() && ba.close_reason().is_none());
    assert_eq!(ab.stats().reauths_sent, 1);
    assert_eq!(ba.stats().reauths_accepted, 1);
    let (a_stats, b_stats) = (a.endpoint.stats(), b.endpoint.stats());
    assert_eq!(a_stats.reauths_sent_total, 1);
    assert_eq!(a_stats.reauth_send_failures_total, 0);
    assert_eq!(b_stats.reauths_accepted_total, 1);
    assert_eq!(
        b_stats.reauths_refused_total + b_stats.reauths_stale_total,
        0
    );
    assert_eq!(b_stats.identity_failures_total, 0);

    // The connection keeps working.
    soon(ab.send_message(b"after")).await.expect("send");
    assert_eq!(soon(ba.recv_message()).await.expect("recv"), b"after");

    // A connection dialed afterwards carries the bytes at the handshake.
    let (_ab2, ba2) = pair(&a, &b).await;
    assert_eq!(ba2.peer().extra, b"cert-1");
    assert_eq!(ba2.peer_extra().as_slice(), b"cert-1");
    assert_eq!(ba2.peer_generation(), 0);

    // Over the limit: a config-style error, nothing changes.
    let too_big = vec![0u8; crate::frame::IDENTITY_EXTRA_BYTES_MAX + 1];
    assert!(matches!(
        a.endpoint.present(too_big),
        Err(StoqError::Config(ConfigError::OutOfRange {
            field: "identity_extra",
            ..
        }))
    ));
    assert_eq!(a.endpoint.identity_generation(), 1);
}

#[tokio::test]
async fn both_ends_present_on_every_live_connection_of_every_protocol() {
    let net = MemNet::new();
    let protocols = |config: &mut StoqConfig| {
        config.protocols = vec![b"hm/membership/1".to_vec(), b"hm/chain/1".to_vec()];
    };
    let a = node_with(&net, 1, protocols, Arc::new(SelfSignedVerifier));
    let b = node_with(&net, 2, protocols, Arc::new(SelfSignedVerifier));
    let (to_a, to_b) = (
        SocketAddr::V6(a.endpoint.local_addr()),
        SocketAddr::V6(b.endpoint.local_addr()),
    );
    // a dials b on one protocol, b dials a on the other.
    let (ab, ba) = soon(async {
        tokio::join!(
            a.endpoint.connect_protocol(to_b, b"hm/chain/1", None),
            b.endpoint.accept()
        )
    })
    .await;
    let (ab, ba) = (ab.expect("connect"), ba.expect("accept"));
    let (ba_dialed, ab_accepted) = soon(async {
        tokio::join!(
            b.endpoint.connect_protocol(to_a, b"hm/membership/1", None),
            a.endpoint.accept()
        )
    })
    .await;
    let (ba_dialed, ab_accepted) = (ba_dialed.expect("connect"), ab_accepted.expect("accept"));

    // The acceptor of the first connection presents: both of a's
    // connections to b see it, whichever end dialed.
    assert_eq!(b.endpoint.present(b"cert-b".to_vec()).expect("present"), 1);
    assert_eq!(soon(ab.wait_peer_generation(1)).await, 1);
    assert_eq!(soon(ab_accepted.wait_peer_generation(1)).await, 1);
    assert_eq!(ab.peer_extra().as_slice(), b"cert-b");
    assert_eq!(ab_accepted.peer_extra().as_slice(), b"cert-b");
    // The dialer presents: both of b's connections see it.
    assert_eq!(a.endpoint.present(b"cert-a".to_vec()).expect("present"), 1);
    assert_eq!(soon(ba.wait_peer_generation(1)).await, 1);
    assert_eq!(soon(ba_dialed.wait_peer_generation(1)).await, 1);
    assert_eq!(ba.peer_extra().as_slice(), b"cert-a");
    assert_eq!(ba_dialed.peer_extra().as_slice(), b"cert-a");

    // A renewal replaces the bytes again.
    assert_eq!(b.endpoint.present(b"cert-b2".to_vec()).expect("present"), 2);
    assert_eq!(soon(ab.wait_peer_generation(2)).await, 2);
    assert_eq!(soon(ab_accepted.wait_peer_generation(2)).await, 2);
    assert_eq!(ab.peer_extra().as_slice(), b"cert-b2");
    assert_eq!(ab_accepted.peer_extra().as_slice(), b"cert-b2");

    assert_eq!(b.endpoint.stats().reauths_sent_total, 4);
    assert_eq!(a.endpoint.stats().reauths_accepted_total, 4);
    assert_eq!(a.endpoint.stats().reauths_sent_total, 2);
    assert_eq!(b.endpoint.stats().reauths_accepted_total, 2);
    for connection in [&ab, &ba, &ba_dialed, &ab_accepted] {
        assert!(connection.close_reason().is_none());
    }
}

#[tokio::test]
async fn closed_connections_are_skipped_and_pruned() {
    let net = MemNet::new();
    let (a, b) = (node(&net, 1), node(&net, 2));
    let (ab, ba) = pair(&a, &b).await;
    let (closed, closed_b) = pair(&a, &b).await;
    closed.close("done");
    soon(closed_b.closed()).await;
    drop(closed);
    assert_eq!(a.endpoint.present(b"cert-1".to_vec()).expect("present"), 1);
    assert_eq!(soon(ba.wait_peer_generation(1)).await, 1);
    assert_eq!(closed_b.peer_generation(), 0);
    assert_eq!(ab.stats().reauths_sent, 1);
    assert_eq!(a.endpoint.stats().reauths_sent_total, 1);
}

#[tokio::test]
async fn a_handshake_that_signed_the_old_bytes_is_reauthenticated_after_it() {
    let net = MemNet::new();
    let (a, b) = (node(&net, 1), node(&net, 2));
    let to_b = SocketAddr::V6(b.endpoint.local_addr());
    // a's dial is held after both bindings were exchanged (a's signed the
    // configured bytes) and before it joins a's live registry; `present`
    // runs in that gap, so only the registration can catch it up.
    let (reached, release) = a.endpoint.hold_next_dial();
    let (dialed, accepted, generation) = soon(async {
        tokio::join!(a.endpoint.connect(to_b), b.endpoint.accept(), async {
            reached.await.expect("the dial reached the gate");
            let generation = a.endpoint.present(b"cert-1".to_vec());
            release.send(()).expect("release the dial");
            generation
        })
    })
    .await;
    let (_ab, ba) = (dialed.expect("connect"), accepted.expect("accept"));
    assert_eq!(generation.expect("present"), 1);
    assert!(
        ba.peer().extra.is_empty(),
        "the handshake carried the old bytes"
    );
    assert_eq!(soon(ba.wait_peer_generation(1)).await, 1);
    assert_eq!(ba.peer_extra().as_slice(), b"cert-1");
    assert_eq!(a.endpoint.stats().reauths_sent_total, 1);
    assert_eq!(b.endpoint.stats().reauths_accepted_total, 1);
}

#[tokio::test]
async fn a_refused_certificate_closes_the_connection_with_the_verifiers_reason() {
    let net = MemNet::new();
    let a = node(&net, 1);
    let b = node_with(&net, 2, |_| {}, Arc::new(RefusesBad));
    let (ab, ba) = pair(&a, &b).await;
    a.endpoint.present(b"bad-cert".to_vec()).expect("present");

    // The presenting side sees why.
    let (code, reason) = application_close(&soon(ab.closed()).await).expect("close");
    assert_eq!(code, u64::from(close_code::IDENTITY_FAILED));
    assert!(reason.contains("\"bad-cert\" is revoked"), "{reason}");
    assert!(reason.contains("re-authentication"), "{reason}");
    assert!(ab.close_reason().expect("closed").contains("is revoked"));
    // The refusing side closed with the same reason and kept the old bytes.
    assert!(ba.close_reason().expect("closed").contains("is revoked"));
    assert_eq!(ba.peer_generation(), 0);
    assert!(ba.peer_extra().is_empty());
    let stats = b.endpoint.stats();
    assert_eq!(stats.identity_failures_total, 1);
    assert_eq!(stats.reauths_refused_total, 1);
    assert_eq!(stats.reauths_accepted_total, 0);
    assert_eq!(ba.stats().reauths_refused, 1);

    // A new handshake with the same bytes is refused by the same verifier.
    let error = soon(a.endpoint.connect(addr(2)))
        .await
        .expect_err("refused at the handshake");
    let (code, reason) = application_close(&error).expect("application close");
    assert_eq!(code, u64::from(close_code::IDENTITY_FAILED));
    assert!(reason.contains("is revoked"), "{reason}");
    assert_eq!(b.endpoint.stats().identity_failures_total, 2);
}

#[tokio::test]
async fn stale_and_replayed_reauthentications_are_ignored_and_counted() {
    let net = MemNet::new();
    let a = node(&net, 1);
    let b = node(&net, 2);
    let (ab, ba) = pair(&a, &b).await;
    assert_eq!(a.endpoint.present(b"cert-1".to_vec()).expect("present"), 1);
    assert_eq!(a.endpoint.present(b"cert-2".to_vec()).expect("present"), 2);
    assert_eq!(soon(ba.wait_peer_generation(2)).await, 2);
    assert_eq!(ba.peer_extra().as_slice(), b"cert-2");

    // Frames for an older or the same generation (replays, or streams
    // that arrived late): ignored, counted, not fatal.
    let older = reauth(1, b"cert-1");
    send_raw_reauth(&ab, &older.encode()).await;
    let same = reauth(2, b"cert-2-again");
    send_raw_reauth(&ab, &same.encode()).await;
    until(|| ba.stats().reauths_stale >= 2).await;
    assert_eq!(ba.peer_generation(), 2);
    assert_eq!(ba.peer_extra().as_slice(), b"cert-2");

    // Two new generations on two streams, in either arrival order: the
    // newest wins (the older is accepted first or ignored after).
    let seen = |stats: crate::ConnectionStats| stats.reauths_accepted + stats.reauths_stale;
    let seen_before = seen(ba.stats());
    send_raw_reauth(&ab, &reauth(5, b"cert-5").encode()).await;
    send_raw_reauth(&ab, &reauth(4, b"cert-4").encode()).await;
    assert_eq!(soon(ba.wait_peer_generation(5)).await, 5);
    until(|| seen(ba.stats()) == seen_before + 2).await;
    assert_eq!(ba.peer_extra().as_slice(), b"cert-5");
    let stats = b.endpoint.stats();
    assert!(stats.reauths_stale_total >= 2, "{stats:?}");
    assert_eq!(stats.reauths_refused_total, 0);
    assert_eq!(stats.identity_failures_total, 0);
    assert!(ab.close_reason().is_none() && ba.close_reason().is_none());
    soon(ab.send_message(b"still open")).await.expect("send");
    assert_eq!(soon(ba.recv_message()).await.expect("recv"), b"still open");
}

#[tokio::test]
async fn malformed_reauthentications_are_refused() {
    let net = MemNet::new();
    let a = node(&net, 1);
    let b = node(&net, 2);

    // Another frame version: a protocol violation.
    let (ab, _ba) = pair(&a, &b).await;
    let mut malformed = reauth(1, b"cert-1").encode();
    malformed[0] = REAUTH_VERSION + 1;
    send_raw_reauth(&ab, &malformed).await;
    let (code, reason) = application_close(&soon(ab.closed()).await).expect("close");
    assert_eq!(code, u64::from(close_code::PROTOCOL_VIOLATION));
    assert!(reason.contains("malformed re-authentication"), "{reason}");

    // Generation 0 (the handshake's) and bytes after the frame, likewise.
    let (ab, _ba) = pair(&a, &b).await;
    let mut zero = reauth(1, b"cert-1").encode();
    zero[1..9].copy_from_slice(&0u64.to_be_bytes());
    send_raw_reauth(&ab, &zero).await;
    let (code, _) = application_close(&soon(ab.closed()).await).expect("close");
    assert_eq!(code, u64::from(close_code::PROTOCOL_VIOLATION));
    let (ab, _ba) = pair(&a, &b).await;
    let mut trailing = reauth(1, b"cert-1").encode();
    trailing.push(0);
    send_raw_reauth(&ab, &trailing).await;
    let (code, _) = application_close(&soon(ab.closed()).await).expect("close");
    assert_eq!(code, u64::from(close_code::PROTOCOL_VIOLATION));

    let stats = b.endpoint.stats();
    assert_eq!(stats.identity_failures_total, 3);
    assert_eq!(stats.reauths_refused_total, 3);
    assert_eq!(stats.reauths_accepted_total, 0);
}

/// Records what each verification saw: (protocol, re-authentication).
#[derive(Default)]
struct Recorder(std::sync::Mutex<Vec<(Vec<u8>, bool)>>);

impl PeerVerifier for Recorder {
    fn verify(&self, peer: &PeerIdentity) -> Result<(), PeerRefused> {
        self.0
            .lock()
            .expect("recorder lock")
            .push((peer.protocol.clone(), peer.reauthentication));
        Ok(())
    }
}

#[tokio::test]
async fn the_verifier_learns_the_protocol_and_whether_it_is_a_reauthentication() {
    let net = MemNet::new();
    let protocols = |config: &mut StoqConfig| {
        config.protocols = vec![b"hm/membership/1".to_vec(), b"hm/api/1".to_vec()];
    };
    let recorder = Arc::new(Recorder::default());
    let a = node_with(&net, 1, protocols, Arc::new(SelfSignedVerifier));
    let b = node_with(&net, 2, protocols, recorder.clone());
    let to_b = SocketAddr::V6(b.endpoint.local_addr());
    let (dialed, accepted) = soon(async {
        tokio::join!(
            a.endpoint.connect_protocol(to_b, b"hm/api/1", None),
            b.endpoint.accept()
        )
    })
    .await;
    let (_dialed, accepted) = (dialed.expect("connect"), accepted.expect("accept"));
    assert_eq!(
        recorder.0.lock().expect("lock").clone(),
        vec![(b"hm/api/1".to_vec(), false)]
    );
    a.endpoint.present(b"cert".to_vec()).expect("present");
    soon(accepted.wait_peer_generation(1)).await;
    assert_eq!(
        recorder.0.lock().expect("lock").last().cloned(),
        Some((b"hm/api/1".to_vec(), true))
    );
}

/// Sends one 256 KiB message from a new pair whose endpoints carry UDP
/// payloads up to `payload`; returns the datagrams the sender used.
async fn datagrams_for_a_bulk_message(payload: u16) -> u64 {
    let net = MemNet::new();
    let configure = |config: &mut StoqConfig| config.max_udp_payload_bytes = payload;
    let a = node_with(&net, 1, configure, Arc::new(SelfSignedVerifier));
    let b = node_with(&net, 2, configure, Arc::new(SelfSignedVerifier));
    let (ab, ba) = pair(&a, &b).await;
    let message = vec![7u8; 256 << 10];
    soon(ab.send_message(&message)).await.expect("send");
    assert_eq!(soon(ba.recv_message()).await.expect("recv"), message);
    ab.stats().udp_datagrams_sent
}

#[tokio::test]
async fn jumbo_payloads_carry_bulk_data_in_far_fewer_datagrams() {
    let ethernet = datagrams_for_a_bulk_message(crate::config::UDP_PAYLOAD_BYTES_DEFAULT).await;
    let jumbo = datagrams_for_a_bulk_message(8_952).await;
    // 256 KiB is ~180 full Ethernet-sized datagrams and ~30 jumbo ones.
    assert!(ethernet >= 170, "{ethernet} datagrams at 1472 bytes");
    assert!(
        jumbo * 4 < ethernet,
        "{jumbo} datagrams at 8952 bytes against {ethernet} at 1472"
    );
    let mut out_of_range = StoqConfig::new(addr(9));
    out_of_range.max_udp_payload_bytes = 1_000;
    assert!(matches!(
        out_of_range.validate(),
        Err(ConfigError::OutOfRange {
            field: "max_udp_payload_bytes",
            ..
        })
    ));
}
