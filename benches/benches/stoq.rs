//! STOQ versus plain quinn: bulk stream throughput on loopback `[::1]`, both
//! in the same run so BENCHMARKS.md can report their ratio (acceptance: STOQ
//! ≥ 0.8× plain quinn). `cargo bench -p hm-benches --bench stoq`
//!
//! Each iteration moves [`TOTAL_BYTES`] over a connection set up once,
//! outside the timed loop; the clock stops when the receiver holds every byte.
//! - `stoq`: two `hm_stoq::Endpoint`s on `hm_host::HostEnv` (real UDP sockets
//!   with GSO/GRO through quinn-udp, real clock), [`MESSAGES`] ×
//!   [`MESSAGE_BYTES`] with `send_message` / `recv_message`.
//! - `quinn`: plain quinn 0.11 on its own tokio runtime glue and OS socket,
//!   the same stream pattern as `send_message` (one uni stream per message,
//!   finished, the next opened at once), each read concurrently with
//!   `read_to_end` as STOQ's per-stream reader tasks do.
//!
//! Matched so the difference is STOQ's layers (Env glue, framing, identity)
//! rather than tuning: the same rustls `CryptoProvider`
//! (`hm_stoq::tls::provider(true)`: aws-lc-rs, TLS 1.3 suites only,
//! X25519MLKEM768), hence the same AEAD; and the same `TransportConfig` knobs
//! hm-stoq sets (idle timeout, keep-alive interval, concurrent bidi/uni
//! streams, datagram receive buffer), taken from `StoqConfig::new`'s defaults.
//! Everything else (stream/connection receive windows, send window,
//! congestion control, MTU discovery) is quinn's default on both sides, as
//! hm-stoq does not override it.

// A benchmark of the real OS: wall-clock `Instant`, OS sockets, a temp dir
// for the host Env's RocksDB. The inputs are our own, so unwrap is fine.
#![allow(
    clippy::disallowed_methods,
    clippy::disallowed_types,
    clippy::unwrap_used
)]

use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use hm_host::{HostEnv, OsEntropy};
use hm_stoq::{Endpoint, SelfSignedVerifier, StoqConfig};
use hm_wire::SigningKey;
use tokio::runtime::Runtime;

/// One STOQ message: the default `frame_bytes_max`, the largest that
/// `send_message` takes without `send_large`'s chunking.
const MESSAGE_BYTES: usize = 16 << 20;
/// Messages per iteration.
const MESSAGES: usize = 4;
/// Bytes per iteration, on both sides.
const TOTAL_BYTES: usize = MESSAGE_BYTES * MESSAGES;

const LOOPBACK: SocketAddr = SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::LOCALHOST, 0, 0, 0));

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn payload() -> Vec<u8> {
    (0..MESSAGE_BYTES).map(|i| (i * 31 % 251) as u8).collect()
}

/// The knobs `hm_stoq::endpoint::transport_config` sets, from the same config.
fn matched_transport(config: &StoqConfig) -> Arc<quinn::TransportConfig> {
    let mut transport = quinn::TransportConfig::default();
    let idle_ms = u32::try_from(config.idle_timeout_ms).unwrap();
    transport
        .max_idle_timeout(Some(quinn::VarInt::from_u32(idle_ms).into()))
        .keep_alive_interval(
            (config.keep_alive_interval_ms > 0)
                .then(|| Duration::from_millis(config.keep_alive_interval_ms)),
        )
        .max_concurrent_bidi_streams(config.max_concurrent_bidi_streams.into())
        .max_concurrent_uni_streams(config.max_concurrent_uni_streams.into())
        .datagram_receive_buffer_size(
            config
                .datagrams_enabled
                .then_some(config.datagram_receive_buffer_bytes),
        );
    Arc::new(transport)
}

struct QuinnPair {
    // The endpoints must outlive the connections.
    _server: quinn::Endpoint,
    _client: quinn::Endpoint,
    sender: quinn::Connection,
    receiver: quinn::Connection,
}

async fn quinn_pair() -> QuinnPair {
    let provider = hm_stoq::tls::provider(true);
    let transport = matched_transport(&StoqConfig::new(LOOPBACK));

    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert = certified.cert.der().clone();
    let key = rustls::pki_types::PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der());

    let server_tls = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key.into())
        .unwrap();
    let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(
        quinn::crypto::rustls::QuicServerConfig::try_from(server_tls).unwrap(),
    ));
    server_config.transport_config(transport.clone());
    let server = quinn::Endpoint::server(server_config, LOOPBACK).unwrap();

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let client_tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut client_config = quinn::ClientConfig::new(Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(client_tls).unwrap(),
    ));
    client_config.transport_config(transport);
    let mut client = quinn::Endpoint::client(LOOPBACK).unwrap();
    client.set_default_client_config(client_config);

    let server_addr = server.local_addr().unwrap();
    let (sender, receiver) = tokio::join!(
        async { client.connect(server_addr, "localhost").unwrap().await },
        async { server.accept().await.unwrap().await },
    );
    QuinnPair {
        _server: server,
        _client: client,
        sender: sender.unwrap(),
        receiver: receiver.unwrap(),
    }
}

async fn quinn_transfer(pair: &QuinnPair, payload: &[u8]) {
    // The same stream pattern as `send_message`: one uni stream per message,
    // each written then finished, the next opened without waiting for acks.
    let send = async {
        for _ in 0..MESSAGES {
            let mut stream = pair.sender.open_uni().await.unwrap();
            stream.write_all(payload).await.unwrap();
            stream.finish().unwrap();
        }
    };
    // STOQ's connection reads every incoming stream in its own task, so the
    // baseline reads its streams concurrently too.
    let receive = async {
        let mut readers = tokio::task::JoinSet::new();
        for _ in 0..MESSAGES {
            let mut stream = pair.receiver.accept_uni().await.unwrap();
            readers.spawn(async move { stream.read_to_end(MESSAGE_BYTES).await.unwrap().len() });
        }
        let mut received = 0;
        while let Some(bytes) = readers.join_next().await {
            received += bytes.unwrap();
        }
        assert_eq!(received, TOTAL_BYTES);
    };
    tokio::join!(send, receive);
}

struct StoqPair {
    // The temp dir holds both Envs' RocksDB; removed when the bench ends.
    _data_dir: tempfile::TempDir,
    _endpoints: [Endpoint<HostEnv>; 2],
    sender: hm_stoq::Connection,
    receiver: hm_stoq::Connection,
}

async fn stoq_pair() -> StoqPair {
    let data_dir = tempfile::tempdir().unwrap();
    let bind = |name: &str| {
        let env = HostEnv::open(&data_dir.path().join(name), &["default"]).unwrap();
        let config = StoqConfig::new(LOOPBACK);
        // The defaults already take 16 MiB messages; say so, so a change of
        // defaults fails here rather than in the timed loop.
        assert!(config.frame_bytes_max >= MESSAGE_BYTES);
        assert!(config.receive_buffer_bytes_max >= TOTAL_BYTES);
        Endpoint::bind(
            &env,
            SigningKey::generate(&OsEntropy),
            config,
            Arc::new(SelfSignedVerifier),
        )
        .unwrap()
    };
    let dialer = bind("dialer");
    let listener = bind("listener");
    let (sender, receiver) = tokio::join!(
        dialer.connect(SocketAddr::V6(listener.local_addr())),
        listener.accept(),
    );
    StoqPair {
        _data_dir: data_dir,
        _endpoints: [dialer, listener],
        sender: sender.unwrap(),
        receiver: receiver.unwrap(),
    }
}

async fn stoq_transfer(pair: &StoqPair, payload: &[u8]) {
    let send = async {
        for _ in 0..MESSAGES {
            pair.sender.send_message(payload).await.unwrap();
        }
    };
    let receive = async {
        for _ in 0..MESSAGES {
            let message = pair.receiver.recv_message().await.unwrap();
            assert_eq!(message.len(), MESSAGE_BYTES);
        }
    };
    tokio::join!(send, receive);
}

fn stoq_vs_quinn(c: &mut Criterion) {
    let runtime = runtime();
    let payload = payload();
    let quinn = runtime.block_on(quinn_pair());
    let stoq = runtime.block_on(stoq_pair());

    let mut group = c.benchmark_group("stoq_vs_quinn");
    group
        .throughput(Throughput::Bytes(TOTAL_BYTES as u64))
        .sample_size(10)
        // Every iteration is a 64 MiB transfer: equal iteration counts per
        // sample keep the run short.
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(15));
    group.bench_function("quinn", |b| {
        b.iter_custom(|iterations| {
            runtime.block_on(async {
                let start = Instant::now();
                for _ in 0..iterations {
                    quinn_transfer(&quinn, &payload).await;
                }
                start.elapsed()
            })
        })
    });
    group.bench_function("stoq", |b| {
        b.iter_custom(|iterations| {
            runtime.block_on(async {
                let start = Instant::now();
                for _ in 0..iterations {
                    stoq_transfer(&stoq, &payload).await;
                }
                start.elapsed()
            })
        })
    });
    group.finish();
}

criterion_group!(benches, stoq_vs_quinn);
criterion_main!(benches);
