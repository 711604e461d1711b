//! TrustChain's costs at a network of 1,024 certified, named nodes: DNS
//! resolution from the committed state (the seed's target: < 10 ms) and
//! judging a presented certificate with its CT inclusion proof (target:
//! < 50 ms), plus executing a block of certificate transactions.
//! `cargo bench -p hm-benches --bench trust`

// Benchmark inputs are our own; unwrap is fine.
#![allow(clippy::unwrap_used)]

use std::net::Ipv6Addr;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use hm_env::mem::SeededEntropy;
use hm_kernel::app::{Application, BlockContext};
use hm_kernel::validators::ValidatorSet;
use hm_node::bootstrap::Phase;
use hm_node::trust::{CertificateBundle, judge};
use hm_trustchain::app::{TrustApp, TrustConfig};
use hm_trustchain::cert::{Authorities, Certificate, CertificateRequest, SignedRequest};
use hm_trustchain::dns::{AdaptiveResolver, NameClaim, SignedNameClaim, StaticTable};
use hm_trustchain::monitor::Monitor;
use hm_trustchain::name::DnsName;
use hm_trustchain::tx::TrustTx;
use hm_wire::{KemSecretKey, SigningKey};

/// Certified, named nodes in the benchmarked state.
const NODES: usize = 1_024;
/// Certificate transactions per executed block.
const BLOCK_CERTIFICATES: usize = 64;
const T0_MS: u64 = 1_700_000_000_000;

fn trust(c: &mut Criterion) {
    let entropy = SeededEntropy::new(1, b"trust-bench");
    let authority = SigningKey::generate(&entropy);
    let validators = ValidatorSet::new([(authority.verifying_key(), 10)]).unwrap();
    let zone = DnsName::parse("mesh").unwrap();
    let mut app = TrustApp::new(TrustConfig {
        zone: zone.clone(),
        authorities: Authorities::from_validators(&validators),
        chain_id: hm_wire::hash("bench", b"chain"),
        validators,
    });
    let kem = KemSecretKey::generate(&entropy).public_key();
    // FALCON key generation dominates the setup (a few seconds).
    let keys: Vec<SigningKey> = (0..NODES).map(|_| SigningKey::generate(&entropy)).collect();
    let names: Vec<DnsName> = (0..NODES)
        .map(|i| DnsName::parse(&format!("n{i}.mesh")).unwrap())
        .collect();
    let request = |i: usize, nonce: u64| {
        SignedRequest::sign(
            CertificateRequest {
                subject_key: keys[i].verifying_key(),
                kem_key: kem.clone(),
                dns_names: vec![names[i].clone()],
                validity_ms: 24 * 3_600_000,
                requested_at_ms: T0_MS,
                nonce,
            },
            &keys[i],
            &entropy,
        )
    };
    let mut height = 0;
    let mut commit = |app: &mut TrustApp, txs: Vec<TrustTx>| {
        height += 1;
        let transactions: Vec<_> = txs.iter().map(TrustTx::to_transaction).collect();
        let execution = app.execute_block(BlockContext::new(height, T0_MS + height), &transactions);
        assert!(execution.results.iter().all(Result::is_ok));
        app.commit(height, &execution.updates).unwrap();
    };
    let certificates: Vec<Certificate> = (0..NODES)
        .map(|i| Certificate::issue_by_authority(request(i, 0), &authority, T0_MS, &entropy))
        .collect();
    for chunk in certificates.chunks(256) {
        commit(
            &mut app,
            chunk.iter().cloned().map(TrustTx::LogCertificate).collect(),
        );
    }
    let claims: Vec<TrustTx> = (0..NODES)
        .map(|i| {
            TrustTx::RegisterName(SignedNameClaim::sign(
                NameClaim {
                    name: names[i].clone(),
                    owner_key: keys[i].verifying_key(),
                    addrs: vec![Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, i as u16)],
                    certificate: certificates[i].fingerprint(),
                    sequence: 1,
                },
                &keys[i],
                &entropy,
            ))
        })
        .collect();
    for chunk in claims.chunks(256) {
        commit(&mut app, chunk.to_vec());
    }

    let mut group = c.benchmark_group("trust");
    group.measurement_time(Duration::from_secs(5));

    // DNS: the phase-3 path (HyperMesh only) over the committed state.
    let mut resolver = AdaptiveResolver::new();
    let traditional = StaticTable::new();
    let mut next = 0usize;
    group.bench_function("dns_resolve_phase3_1024_names", |b| {
        b.iter(|| {
            next = (next + 7) % NODES;
            resolver
                .resolve(3, &names[next], &app, &traditional)
                .unwrap()
        })
    });

    // A peer presents its certificate with an inclusion proof: signatures,
    // log membership, revocation and the proof against our log.
    let bundles: Vec<Vec<u8>> = (0..16)
        .map(|i| {
            CertificateBundle {
                certificate: certificates[i].clone(),
                inclusion: app.inclusion_proof(&certificates[i].fingerprint()),
            }
            .encode()
        })
        .collect();
    let mut monitor = Monitor::new(Default::default());
    let mut which = 0usize;
    group.bench_function("certificate_validation_with_ct_proof_1024_logged", |b| {
        b.iter(|| {
            which = (which + 1) % bundles.len();
            let peer = certificates[which].subject();
            let verdict = judge(
                Phase::Trust,
                &peer,
                b"hm/membership/1",
                &bundles[which],
                &app,
                &mut monitor,
                T0_MS + 60_000,
            );
            assert!(matches!(verdict, hm_node::trust::Judgement::Certified(_)));
        })
    });

    // A block of chain-issued renewals executed against the 1,024-node state.
    let renewals: Vec<_> = (0..BLOCK_CERTIFICATES)
        .map(|i| TrustTx::IssueCertificate(request(i, 1)).to_transaction())
        .collect();
    group.bench_function("execute_block_of_64_renewals", |b| {
        b.iter(|| {
            let execution = app.execute_block(BlockContext::new(height + 1, T0_MS), &renewals);
            assert!(execution.results.iter().all(Result::is_ok));
            execution
        })
    });
    group.finish();

    dns_over_udp(&names, app);
}

/// The node's DNS front-end as `dig` meets it: hickory-server answering
/// from the committed state on `[::1]`, one query per fresh UDP socket.
/// Every query is timed on its own, and the p50/p99 over all of them are
/// printed (criterion's estimate is a mean over batches).
// A benchmark reads the wall clock and the OS network by definition.
#[allow(clippy::disallowed_methods, clippy::disallowed_types)]
fn dns_over_udp(names: &[DnsName], app: TrustApp) {
    use hm_host::dns::{DnsServer, NameLookup, RecordType, ZoneAuthority, ZoneSource, ask};
    use hm_node::app::SharedTrust;
    use std::time::Instant;

    struct Committed(SharedTrust);
    impl ZoneSource for Committed {
        fn lookup(&self, name: &DnsName) -> NameLookup {
            match self.0.read().record(name) {
                Some(record) => NameLookup::Present(record.addrs),
                None => NameLookup::Absent,
            }
        }
        fn serial(&self) -> u32 {
            1
        }
    }

    const QUERIES: usize = 5_000;
    let zone = app.zone().clone();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut samples_us: Vec<f64> = runtime.block_on(async {
        let authority = ZoneAuthority::new(&zone, None, Committed(SharedTrust::new(app))).unwrap();
        let server = DnsServer::bind("[::1]:0".parse().unwrap(), authority).unwrap();
        let addr = server.local_addr();
        tokio::spawn(server.run());
        let mut samples = Vec::with_capacity(QUERIES);
        for i in 0..QUERIES {
            let name = &names[(i * 7) % names.len()];
            let started = Instant::now();
            let reply = ask(
                addr,
                name.as_str(),
                RecordType::AAAA,
                Duration::from_secs(2),
            )
            .await
            .unwrap();
            samples.push(started.elapsed().as_secs_f64() * 1e6);
            assert_eq!(reply.addrs.len(), 1, "{name} resolves");
        }
        samples
    });
    samples_us.sort_by(f64::total_cmp);
    let at = |q: f64| samples_us[((samples_us.len() - 1) as f64 * q) as usize];
    println!(
        "trust/dns_udp_query_1024_names: {QUERIES} queries over [::1] · p50 {:.0} µs · p99 {:.0} µs · max {:.0} µs",
        at(0.50),
        at(0.99),
        at(1.0)
    );
}

criterion_group!(benches, trust);
criterion_main!(benches);
