//! End-to-end tests: real quinn + rustls endpoints over `hm_env::mem::MemNet`.

use std::collections::BTreeSet;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hm_env::mem::{MemNet, TestEnv};
use hm_env::{Clock, Entropy, Env, Net, RuntimeClock};
use quinn::ConnectionError;

use crate::frame::{ChunkHeader, KIND_MESSAGE, encode_prefixed_header};
use crate::keys::SigningKey;
use crate::{
    AllowListVerifier, ConfigError, Connection, Endpoint, IdentityError, PeerVerifier,
    SelfSignedVerifier, StoqConfig, StoqError, close_code,
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
    let (mallory, honest) = (node(&net, 1), node(&net, 2));
    mallory.endpoint.forge_bindings();

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
