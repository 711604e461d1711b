//! The agent driven through a whole bootstrap against real TrustChain state,
//! and the validator's verdicts by phase.

use std::net::{Ipv6Addr, SocketAddrV6};

use hm_env::mem::SeededEntropy;
use hm_kernel::app::{Application, BlockContext};
use hm_kernel::block::Height;
use hm_trustchain::app::TrustConfig;
use hm_trustchain::cert::{Authorities, CertError, Certificate, CertificateRequest};

use super::*;

const VALIDATORS: usize = 4;
const T0_MS: u64 = 1_700_000_000_000;
const VALIDITY_MS: u64 = 600_000;

/// The test's keys, from hm-testkit (generated once per process).
struct Keys {
    validators: Vec<&'static SigningKey>,
    node: &'static SigningKey,
    stranger: &'static SigningKey,
    kem: &'static KemPublicKey,
}

fn keys() -> Keys {
    Keys {
        validators: (0..VALIDATORS as u64)
            .map(|i| hm_testkit::signing_key("validator", i))
            .collect(),
        node: hm_testkit::signing_key("node", 0),
        stranger: hm_testkit::signing_key("stranger", 0),
        kem: hm_testkit::kem_public_key("kem", 0),
    }
}

fn validator_set() -> ValidatorSet {
    ValidatorSet::new(
        keys()
            .validators
            .iter()
            .map(|key| (key.verifying_key(), 10)),
    )
    .expect("set")
}

fn zone() -> DnsName {
    DnsName::parse("mesh").expect("zone")
}

fn app() -> TrustApp {
    let validators = validator_set();
    TrustApp::new(TrustConfig {
        zone: zone(),
        authorities: Authorities::from_validators(&validators),
        chain_id: Hash([7; 32]),
        validators,
    })
}

fn addr(host: u16) -> SocketAddrV6 {
    SocketAddrV6::new(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, host), 7000, 0, 0)
}

fn authorities() -> Vec<(Hash, SocketAddrV6)> {
    keys()
        .validators
        .iter()
        .enumerate()
        .map(|(index, key)| (key.verifying_key().fingerprint(), addr(index as u16 + 1)))
        .collect()
}

fn agent() -> TrustAgent<SeededEntropy> {
    agent_in(Phase::Traditional)
}

fn agent_in(phase: Phase) -> TrustAgent<SeededEntropy> {
    let mut settings = TrustSettings::new(zone());
    settings.name = Some(DnsName::parse("n9.mesh").expect("name"));
    settings.certificate_validity_ms = VALIDITY_MS;
    TrustAgent::new(
        keys().node.duplicate(),
        keys().kem.clone(),
        SeededEntropy::new(1, b"agent"),
        settings,
        addr(9),
        authorities(),
        validator_set(),
        phase,
        std::sync::Arc::new(crate::conduct::HonestPresentation),
        at(0),
    )
}

fn at(ms: u64) -> AgentNow {
    AgentNow {
        mono_ms: ms,
        wall_ms: T0_MS + ms,
    }
}

/// Executes and commits one block of TrustChain transactions.
fn commit(app: &mut TrustApp, height: Height, ms: u64, txs: &[TrustTx]) -> Vec<bool> {
    let transactions: Vec<_> = txs.iter().map(TrustTx::to_transaction).collect();
    let execution = app.execute_block(BlockContext::new(height, T0_MS + ms), &transactions);
    app.commit(height, &execution.updates).expect("in order");
    execution.results.iter().map(Result::is_ok).collect()
}

fn submitted(actions: &[TrustAction]) -> Vec<TrustTx> {
    actions
        .iter()
        .filter_map(|action| match action {
            TrustAction::Submit(tx) => Some((**tx).clone()),
            _ => None,
        })
        .collect()
}

fn phases(actions: &[TrustAction]) -> Vec<Phase> {
    actions
        .iter()
        .filter_map(|action| match action {
            TrustAction::PersistPhase(phase) => Some(*phase),
            _ => None,
        })
        .collect()
}

fn presented(actions: &[TrustAction]) -> Option<CertificateBundle> {
    actions.iter().rev().find_map(|action| match action {
        TrustAction::Present(bytes) => Some(CertificateBundle::decode(bytes).expect("bundle")),
        _ => None,
    })
}

/// The agent's first certificate request, answered by the authority it
/// asked: (that authority, the certificate it issued).
fn issued_by_an_authority(
    agent: &mut TrustAgent<SeededEntropy>,
    own: &TrustApp,
    monitor: &mut Monitor,
) -> (Hash, Certificate) {
    let actions = agent.tick(at(0), own, false, monitor);
    let (authority, request) = match &actions[..] {
        [
            TrustAction::AskCertificate {
                authority, request, ..
            },
        ] => (*authority, (**request).clone()),
        other => panic!(
            "expected one certificate request, got {} actions",
            other.len()
        ),
    };
    assert_ne!(authority, agent.me, "never asks itself");
    let ca_key = keys().validators[validator_index(&authority)];
    let certificate =
        Certificate::issue_by_authority(request, ca_key, T0_MS, &SeededEntropy::new(2, b"ca"));
    agent.on_certificate(at(10), authority, Ok(certificate.clone()));
    (authority, certificate)
}

fn validator_index(authority: &Hash) -> usize {
    authorities()
        .iter()
        .position(|(id, _)| id == authority)
        .expect("an authority")
}

#[test]
fn a_node_climbs_from_self_signed_to_full_federation() {
    let mut agent = agent();
    let mut monitor = Monitor::new(Default::default());
    // The authority's view of the chain, and the node's own (behind).
    let mut chain = app();
    let mut own = app();

    // Phase 0: ask an authority.
    let (authority, certificate) = issued_by_an_authority(&mut agent, &own, &mut monitor);
    let ca_key = keys().validators[validator_index(&authority)];

    // Not logged yet: the agent polls for a proof and stays in phase 0.
    let actions = agent.tick(at(500), &own, false, &mut monitor);
    assert!(
        matches!(actions[..], [TrustAction::AskProof { .. }]),
        "{actions:?}"
    );
    assert_eq!(agent.phase(), Phase::Traditional);

    // The authority logs it; its signed head and proof give PKI trust.
    assert_eq!(
        commit(
            &mut chain,
            1,
            600,
            &[TrustTx::LogCertificate(certificate.clone())]
        ),
        [true]
    );
    let proof = chain
        .inclusion_proof(&certificate.fingerprint())
        .expect("logged");
    let head = SignedTreeHead::sign(chain.log_head(), ca_key, &SeededEntropy::new(3, b"ca"));
    agent.on_proof(authority, Ok((proof, head)), &own, &mut monitor);
    let actions = agent.tick(at(1_000), &own, false, &mut monitor);
    assert_eq!(phases(&actions), [Phase::Trust]);
    let bundle = presented(&actions).expect("presents the certificate");
    assert_eq!(bundle.certificate, certificate);

    // The node's own chain catches up and is live: phase 2, and it renews
    // through the chain and registers its name.
    commit(
        &mut own,
        1,
        600,
        &[TrustTx::LogCertificate(certificate.clone())],
    );
    let actions = agent.tick(at(1_500), &own, true, &mut monitor);
    assert_eq!(phases(&actions), [Phase::PartialFederation]);
    let txs = submitted(&actions);
    assert!(
        txs.iter().any(|tx| matches!(tx, TrustTx::RegisterName(_))),
        "{txs:?}"
    );
    assert!(
        txs.iter()
            .any(|tx| matches!(tx, TrustTx::IssueCertificate(_))),
        "{txs:?}"
    );
    // Submitting again right away would be spam.
    assert!(submitted(&agent.tick(at(2_000), &own, true, &mut monitor)).is_empty());

    // Validators with 2/3 of the stake get chain-issued certificates.
    let mut block: Vec<TrustTx> = txs;
    for (index, key) in keys().validators.iter().take(3).enumerate() {
        let request = CertificateRequest {
            subject_key: key.verifying_key(),
            kem_key: keys().kem.clone(),
            dns_names: vec![],
            validity_ms: VALIDITY_MS,
            requested_at_ms: T0_MS,
            nonce: index as u64,
        };
        block.push(TrustTx::IssueCertificate(SignedRequest::sign(
            request,
            key,
            &SeededEntropy::new(index as u64, b"validator request"),
        )));
    }
    for app in [&mut chain, &mut own] {
        assert!(commit(app, 2, 2_100, &block).iter().all(|ok| *ok));
    }
    // The name still points at the authority's certificate, which stays
    // usable: no update is needed. The chain's certificate is presented and
    // every condition of phase 3 holds.
    let actions = agent.tick(at(2_500), &own, true, &mut monitor);
    let bundle = presented(&actions).expect("presents the renewal");
    assert!(matches!(
        bundle.certificate.issuer,
        Issuer::Chain { height: 2 }
    ));
    assert!(submitted(&actions).is_empty(), "nothing to submit");
    assert_eq!(phases(&actions), [Phase::FullFederation]);
    let status = agent.status();
    assert_eq!(status.phase, Phase::FullFederation);
    assert!(status.chain_issued);
    assert_eq!(status.phase_entered_ms[3], Some(2_500));
    assert_eq!(status.head_inconsistencies, 0);
}

#[test]
fn a_false_tree_head_is_not_trusted_and_is_reported() {
    let mut agent = agent();
    let mut monitor = Monitor::new(Default::default());
    let mut chain = app();
    let (authority, certificate) = issued_by_an_authority(&mut agent, &chain, &mut monitor);
    let ca_key = keys().validators[validator_index(&authority)];
    // The authority never logs it, and signs a head of size 1 whose root
    // is that certificate's leaf: a log that never existed. Our own log
    // already holds another certificate at size 1.
    let other = Certificate::issue_by_authority(
        SignedRequest::sign(
            CertificateRequest {
                subject_key: keys().stranger.verifying_key(),
                kem_key: keys().kem.clone(),
                dns_names: vec![],
                validity_ms: VALIDITY_MS,
                requested_at_ms: T0_MS,
                nonce: 1,
            },
            keys().stranger,
            &SeededEntropy::new(4, b"stranger"),
        ),
        keys().validators[0],
        T0_MS,
        &SeededEntropy::new(5, b"ca"),
    );
    commit(&mut chain, 1, 100, &[TrustTx::LogCertificate(other)]);
    let mut fake = hm_trustchain::log::CertificateLog::new();
    fake.append(&certificate).expect("room");
    let false_head = SignedTreeHead::sign(fake.head(), ca_key, &SeededEntropy::new(6, b"ca"));
    let proof = fake.inclusion_proof(0, 1).expect("proof");
    agent.on_proof(authority, Ok((proof, false_head)), &chain, &mut monitor);
    let actions = agent.tick(at(1_000), &chain, true, &mut monitor);
    assert!(phases(&actions).is_empty(), "a false head gives no trust");
    assert_eq!(agent.status().false_heads, 1);
    let reports = submitted(&actions);
    assert!(
        reports
            .iter()
            .any(|tx| matches!(tx, TrustTx::Report(report) if report.kind() == hm_trustchain::tx::FindingKind::FalseTreeHead)),
        "{reports:?}"
    );
}

#[test]
fn a_silent_or_wrong_authority_is_replaced_by_the_next() {
    let mut agent = agent();
    let mut monitor = Monitor::new(Default::default());
    let own = app();
    let first = match &agent.tick(at(0), &own, false, &mut monitor)[..] {
        [TrustAction::AskCertificate { authority, .. }] => *authority,
        other => panic!("{other:?}"),
    };
    // No answer within the timeout: the next authority.
    let second = match &agent.tick(at(CA_REQUEST_TIMEOUT_MS + 1), &own, false, &mut monitor)[..] {
        [TrustAction::AskCertificate { authority, .. }] => *authority,
        other => panic!("{other:?}"),
    };
    assert_ne!(first, second);
    // An answer for someone else is refused and the next one asked.
    let stranger = Certificate::issue_by_authority(
        SignedRequest::sign(
            CertificateRequest {
                subject_key: keys().stranger.verifying_key(),
                kem_key: keys().kem.clone(),
                dns_names: vec![],
                validity_ms: VALIDITY_MS,
                requested_at_ms: T0_MS,
                nonce: 1,
            },
            keys().stranger,
            &SeededEntropy::new(4, b"stranger"),
        ),
        keys().validators[validator_index(&second)],
        T0_MS,
        &SeededEntropy::new(5, b"ca"),
    );
    agent.on_certificate(at(CA_REQUEST_TIMEOUT_MS + 5), second, Ok(stranger));
    let third = match &agent.tick(at(CA_REQUEST_TIMEOUT_MS + 10), &own, false, &mut monitor)[..] {
        [TrustAction::AskCertificate { authority, .. }] => *authority,
        other => panic!("{other:?}"),
    };
    assert_ne!(third, second);
    assert_eq!(agent.status().certificate_requests, 3);
}

#[test]
fn the_validator_tightens_with_the_phase() {
    let mut monitor = Monitor::new(Default::default());
    let mut chain = app();
    let node = keys().node.verifying_key().fingerprint();
    let request = |nonce| {
        SignedRequest::sign(
            CertificateRequest {
                subject_key: keys().node.verifying_key(),
                kem_key: keys().kem.clone(),
                dns_names: vec![],
                validity_ms: VALIDITY_MS,
                requested_at_ms: T0_MS,
                nonce,
            },
            keys().node,
            &SeededEntropy::new(nonce, b"node"),
        )
    };
    let by_authority = Certificate::issue_by_authority(
        request(1),
        keys().validators[0],
        T0_MS,
        &SeededEntropy::new(1, b"ca"),
    );
    let bundle = |certificate: &Certificate| {
        CertificateBundle {
            certificate: certificate.clone(),
            inclusion: None,
        }
        .encode()
    };
    let now = T0_MS + 1_000;
    let mem = b"hm/membership/1";
    // Not in our log yet: tolerated as uncertified before phase 3, refused in it.
    assert_eq!(
        judge(
            Phase::Trust,
            &node,
            mem,
            &bundle(&by_authority),
            &chain,
            &mut monitor,
            now
        ),
        Judgement::Uncertified
    );
    assert_eq!(
        judge(
            Phase::FullFederation,
            &node,
            mem,
            &bundle(&by_authority),
            &chain,
            &mut monitor,
            now
        ),
        Judgement::Refused(CertificateRefusal::Uncertified {
            why: UncertifiedWhy::NotLogged(NotLogged {
                fingerprint: by_authority.fingerprint()
            })
        })
    );
    // Newcomers may still ask for a certificate over the API.
    assert_eq!(
        judge(
            Phase::FullFederation,
            &node,
            API_PROTOCOL,
            &[],
            &chain,
            &mut monitor,
            now
        ),
        Judgement::Uncertified
    );
    assert_eq!(
        judge(
            Phase::FullFederation,
            &node,
            mem,
            &[],
            &chain,
            &mut monitor,
            now
        ),
        Judgement::Refused(CertificateRefusal::Uncertified {
            why: UncertifiedWhy::NonePresented
        })
    );
    // Logged: accepted by PKI in phases 0-2, not in phase 3.
    commit(
        &mut chain,
        1,
        100,
        &[TrustTx::LogCertificate(by_authority.clone())],
    );
    assert_eq!(
        judge(
            Phase::PartialFederation,
            &node,
            mem,
            &bundle(&by_authority),
            &chain,
            &mut monitor,
            now
        ),
        Judgement::Certified(by_authority.fingerprint())
    );
    assert_eq!(
        judge(
            Phase::FullFederation,
            &node,
            mem,
            &bundle(&by_authority),
            &chain,
            &mut monitor,
            now
        ),
        Judgement::Refused(CertificateRefusal::Uncertified {
            why: UncertifiedWhy::AuthorityIssued {
                authority: keys().validators[0].verifying_key().fingerprint()
            }
        })
    );
    // A chain-issued certificate is accepted in phase 3.
    commit(&mut chain, 2, 200, &[TrustTx::IssueCertificate(request(2))]);
    let (chain_issued, _) = chain
        .current_certificate(&node, now)
        .expect("the chain issued one");
    assert_eq!(
        judge(
            Phase::FullFederation,
            &node,
            mem,
            &bundle(&chain_issued),
            &chain,
            &mut monitor,
            now
        ),
        Judgement::Certified(chain_issued.fingerprint())
    );
    // Once it has lapsed (a cluster stopped past its certificates' life):
    // refused on the phase-3 overlay, but chain links stay open, so the
    // chain can commit the renewal.
    let lapsed_at = chain_issued.not_after_ms;
    assert!(matches!(
        judge(
            Phase::FullFederation,
            &node,
            mem,
            &bundle(&chain_issued),
            &chain,
            &mut monitor,
            lapsed_at
        ),
        Judgement::Refused(CertificateRefusal::Uncertified {
            why: UncertifiedWhy::Lapsed(lapsed)
        }) if lapsed == Lapsed {
            fingerprint: chain_issued.fingerprint(),
            not_before_ms: chain_issued.not_before_ms,
            not_after_ms: chain_issued.not_after_ms,
            now_ms: lapsed_at,
        } && lapsed.to_string().contains("not at")
    ));
    assert_eq!(
        judge(
            Phase::FullFederation,
            &node,
            crate::ids::CHAIN_PROTOCOL,
            &bundle(&chain_issued),
            &chain,
            &mut monitor,
            lapsed_at
        ),
        Judgement::Uncertified
    );
    // Someone else's certificate, or garbage, is refused in any phase.
    let stranger = keys().stranger.verifying_key().fingerprint();
    assert!(matches!(
        judge(Phase::Traditional, &stranger, mem, &bundle(&chain_issued), &chain, &mut monitor, now),
        Judgement::Refused(CertificateRefusal::WrongSubject { subject, peer })
            if subject == node && peer == stranger
    ));
    assert!(matches!(
        judge(
            Phase::Traditional,
            &node,
            mem,
            b"garbage",
            &chain,
            &mut monitor,
            now
        ),
        Judgement::Refused(CertificateRefusal::Malformed(BundleError::Decode(_)))
    ));
    // A certificate the monitor proves bad (here: its issuer is no
    // authority) is refused in any phase, with the monitor's reason.
    let stranger_key = keys().stranger;
    let self_issued = Certificate::issue_by_authority(
        request(3),
        stranger_key,
        T0_MS,
        &SeededEntropy::new(3, b"self"),
    );
    let fault = CertificateFault::IssuerSignature(CertError::UnknownAuthority { issuer: stranger });
    for phase in [Phase::Traditional, Phase::FullFederation] {
        assert_eq!(
            judge(
                phase,
                &node,
                mem,
                &bundle(&self_issued),
                &chain,
                &mut monitor,
                now
            ),
            Judgement::Refused(CertificateRefusal::Refused(fault.clone()))
        );
    }
    // Revoked by its subject: certifies nothing any more, but is no
    // offence — uncertified, so the API (where a new certificate is asked
    // for) stays open and the phase-3 overlay does not.
    commit(
        &mut chain,
        3,
        300,
        &[TrustTx::Revoke(hm_trustchain::tx::SignedRevocation::sign(
            hm_trustchain::tx::Revocation {
                certificate: chain_issued.fingerprint(),
                subject_key: keys().node.verifying_key(),
            },
            keys().node,
            &SeededEntropy::new(4, b"revoke"),
        ))],
    );
    let revoked = CertificateFault::Revoked {
        fingerprint: chain_issued.fingerprint(),
    };
    assert_eq!(
        judge(
            Phase::FullFederation,
            &node,
            API_PROTOCOL,
            &bundle(&chain_issued),
            &chain,
            &mut monitor,
            now
        ),
        Judgement::Uncertified
    );
    assert_eq!(
        judge(
            Phase::FullFederation,
            &node,
            mem,
            &bundle(&chain_issued),
            &chain,
            &mut monitor,
            now
        ),
        Judgement::Refused(CertificateRefusal::Uncertified {
            why: UncertifiedWhy::Revoked(revoked)
        })
    );
}

/// Peers are shown the refusal as the close reason: the typed reasons read
/// as the sentences they replaced.
#[test]
fn certificate_refusals_read_as_before() {
    let fingerprint = Hash([7; 32]);
    let uncertified = |why: UncertifiedWhy| CertificateRefusal::Uncertified { why }.to_string();
    let sentence = |why: &str| {
        format!(
            "phase 3 accepts only peers with a chain-issued certificate in its log ({why}); ask for one over hm/api/1"
        )
    };
    assert_eq!(
        uncertified(UncertifiedWhy::NonePresented),
        sentence("none presented")
    );
    assert_eq!(
        uncertified(UncertifiedWhy::AuthorityIssued {
            authority: Hash([1; 32])
        }),
        sentence("authority-issued certificates need the PKI fallback")
    );
    assert_eq!(
        uncertified(NotLogged { fingerprint }.into()),
        sentence(&format!("certificate {fingerprint} is not in the log"))
    );
    assert_eq!(
        uncertified(
            Lapsed {
                fingerprint,
                not_before_ms: 1,
                not_after_ms: 2,
                now_ms: 3
            }
            .into()
        ),
        sentence(&format!(
            "certificate {fingerprint} is valid 1..2 ms, not at 3 ms"
        ))
    );
    assert_eq!(
        CertificateRefusal::Refused(CertificateFault::Revoked { fingerprint }).to_string(),
        format!("certificate {fingerprint} is revoked")
    );
}

#[test]
fn chain_links_stay_open_to_uncertified_peers_in_phase_3() {
    let mut monitor = Monitor::new(Default::default());
    let chain = app();
    let node = keys().node.verifying_key().fingerprint();
    assert_eq!(
        judge(
            Phase::FullFederation,
            &node,
            crate::ids::CHAIN_PROTOCOL,
            &[],
            &chain,
            &mut monitor,
            T0_MS
        ),
        Judgement::Uncertified
    );
}

#[test]
fn an_authority_that_never_logs_is_reported_and_replaced() {
    let mut agent = agent();
    let mut monitor = Monitor::new(Default::default());
    let own = app();
    let (authority, _certificate) = issued_by_an_authority(&mut agent, &own, &mut monitor);
    // Proofs are asked for, never given; at the deadline the agent turns to
    // another authority, and once the grace has passed it reports the
    // unlogged certificate.
    let deadline = 10 + CA_LOG_DEADLINE_MS;
    let actions = agent.tick(at(deadline), &own, false, &mut monitor);
    let next = actions.iter().find_map(|action| match action {
        TrustAction::AskCertificate { authority, .. } => Some(*authority),
        _ => None,
    });
    assert!(
        next.is_some_and(|next| next != authority),
        "another authority is asked"
    );
    assert!(
        submitted(&actions).is_empty(),
        "within the grace: nothing to report yet"
    );
    let after_grace = UNLOGGED_GRACE_MS + 1_000;
    let actions = agent.tick(at(after_grace), &own, false, &mut monitor);
    let reports = submitted(&actions);
    assert!(
        reports.iter().any(|tx| matches!(tx, TrustTx::Report(report)
            if report.kind() == hm_trustchain::tx::FindingKind::UnloggedCertificate)),
        "the unlogged certificate is reported"
    );
}

#[test]
fn a_false_head_beyond_our_log_is_judged_once_the_log_catches_up() {
    let mut agent = agent();
    let mut monitor = Monitor::new(Default::default());
    let mut own = app();
    let (authority, certificate) = issued_by_an_authority(&mut agent, &own, &mut monitor);
    let ca_key = keys().validators[validator_index(&authority)];
    // The authority's log has the certificate at size 1, but it signs a
    // different root for size 1; our log is still empty: no verdict yet.
    let mut real = app();
    commit(
        &mut real,
        1,
        100,
        &[TrustTx::LogCertificate(certificate.clone())],
    );
    let proof = real
        .inclusion_proof(&certificate.fingerprint())
        .expect("logged");
    let false_head = SignedTreeHead::sign(
        hm_kernel::block::LogHead {
            size: 1,
            root: Hash([0xfa; 32]),
        },
        ca_key,
        &SeededEntropy::new(3, b"ca"),
    );
    agent.on_proof(authority, Ok((proof, false_head)), &own, &mut monitor);
    assert!(
        monitor.take_reports(8).is_empty(),
        "nothing to judge against yet"
    );
    // Our log catches up: the head is judged and reported.
    commit(&mut own, 1, 100, &[TrustTx::LogCertificate(certificate)]);
    let actions = agent.tick(at(1_000), &own, false, &mut monitor);
    assert!(
        submitted(&actions)
            .iter()
            .any(|tx| matches!(tx, TrustTx::Report(report)
            if report.kind() == hm_trustchain::tx::FindingKind::FalseTreeHead)),
        "the false head is reported once judged"
    );
    assert_eq!(agent.status().false_heads, 1);
}

/// The certificate requests among the agent's submissions.
fn chain_requests(actions: &[TrustAction]) -> Vec<TrustTx> {
    submitted(actions)
        .into_iter()
        .filter(|tx| matches!(tx, TrustTx::IssueCertificate(_)))
        .collect()
}

#[test]
fn a_retried_chain_request_is_the_same_transaction_and_certified_once() {
    let mut agent = agent_in(Phase::PartialFederation);
    let mut monitor = Monitor::new(Default::default());
    let mut own = app();
    let first = chain_requests(&agent.tick(at(0), &own, true, &mut monitor));
    assert_eq!(first.len(), 1, "asks the chain for a certificate");
    assert!(chain_requests(&agent.tick(at(TX_RETRY_MS - 1), &own, true, &mut monitor)).is_empty());
    let again = chain_requests(&agent.tick(at(TX_RETRY_MS), &own, true, &mut monitor));
    assert_eq!(again, first, "the retry resends the identical request");
    // A congested chain commits the original and the retry: one certificate.
    let block = [first[0].clone(), again[0].clone()];
    assert_eq!(
        commit(&mut own, 1, TX_RETRY_MS + 100, &block),
        [true, false]
    );
    assert_eq!(own.log_head().size, 1);
    let actions = agent.tick(at(TX_RETRY_MS + 200), &own, true, &mut monitor);
    assert!(
        presented(&actions)
            .is_some_and(|bundle| matches!(bundle.certificate.issuer, Issuer::Chain { height: 1 }))
    );
    assert!(chain_requests(&actions).is_empty());
    assert!(chain_requests(&agent.tick(at(3 * TX_RETRY_MS), &own, true, &mut monitor)).is_empty());
}

#[test]
fn a_chain_request_sent_too_often_is_replaced_by_a_fresh_one() {
    let mut agent = agent_in(Phase::PartialFederation);
    let mut monitor = Monitor::new(Default::default());
    let own = app();
    let first = chain_requests(&agent.tick(at(0), &own, true, &mut monitor));
    for send in 1..u64::from(TX_SENDS_MAX) {
        let now = at(send * TX_RETRY_MS);
        assert_eq!(
            chain_requests(&agent.tick(now, &own, true, &mut monitor)),
            first
        );
    }
    let fresh = chain_requests(&agent.tick(
        at(u64::from(TX_SENDS_MAX) * TX_RETRY_MS),
        &own,
        true,
        &mut monitor,
    ));
    assert_eq!(fresh.len(), 1);
    assert_ne!(fresh, first, "a new nonce after {TX_SENDS_MAX} sends");
}

/// The certificate each submitted name claim names.
fn claimed_certificates(actions: &[TrustAction]) -> Vec<Hash> {
    submitted(actions)
        .into_iter()
        .filter_map(|tx| match tx {
            TrustTx::RegisterName(signed) => Some(signed.claim.certificate),
            _ => None,
        })
        .collect()
}

#[test]
fn a_name_claim_in_flight_follows_a_new_certificate_at_once() {
    let mut agent = agent();
    let mut monitor = Monitor::new(Default::default());
    let mut own = app();
    let (_, certificate) = issued_by_an_authority(&mut agent, &own, &mut monitor);
    commit(
        &mut own,
        1,
        600,
        &[TrustTx::LogCertificate(certificate.clone())],
    );
    // Phase 2: the name is claimed for the authority's certificate, and a
    // chain certificate is asked for.
    let actions = agent.tick(at(1_000), &own, true, &mut monitor);
    assert_eq!(claimed_certificates(&actions), [certificate.fingerprint()]);
    let requests = chain_requests(&actions);
    assert_eq!(requests.len(), 1);
    // The chain certificate commits, the claim does not (yet): the next
    // tick claims the name for the new certificate without waiting out the
    // retry interval.
    assert_eq!(commit(&mut own, 2, 1_100, &requests), [true]);
    let actions = agent.tick(at(1_200), &own, true, &mut monitor);
    let (current, _) = own
        .current_certificate(&agent.me, T0_MS + 1_200)
        .expect("certified");
    assert!(matches!(current.issuer, Issuer::Chain { height: 2 }));
    assert_eq!(claimed_certificates(&actions), [current.fingerprint()]);
    // And that claim is then resent unchanged.
    let again = agent.tick(at(1_200 + TX_RETRY_MS), &own, true, &mut monitor);
    assert_eq!(claimed_certificates(&again), [current.fingerprint()]);
    assert_eq!(
        submitted(&again)
            .iter()
            .filter(|tx| matches!(tx, TrustTx::RegisterName(_)))
            .count(),
        1
    );
}

#[test]
fn the_chain_is_live_while_its_last_commit_is_within_the_window() {
    let mut settings = TrustSettings::new(zone());
    settings.chain_live_window_ms = 1_000;
    assert!(!settings.chain_is_live(None, 0), "nothing committed yet");
    assert!(settings.chain_is_live(Some(5_000), 5_000));
    assert!(
        settings.chain_is_live(Some(5_000), 6_000),
        "the window's edge"
    );
    assert!(!settings.chain_is_live(Some(5_000), 6_001));
    // A commit stamped after `now` (clock steps never go back, but be safe).
    assert!(settings.chain_is_live(Some(7_000), 6_000));
}

/// Commits blocks up to `to` (the first with `txs`), recording each
/// anchor's log head as a replica does and ticking the agent after each;
/// returns what it presented.
fn advance_to(
    own: &mut TrustApp,
    agent: &mut TrustAgent<SeededEntropy>,
    monitor: &mut Monitor,
    anchors: &crate::anchors::SharedAnchors,
    height: &mut Height,
    to: Height,
    txs: &[TrustTx],
) -> Vec<CertificateBundle> {
    let mut txs = txs.to_vec();
    let mut bundles = Vec::new();
    while *height < to {
        *height += 1;
        commit(own, *height, *height * 100, &txs);
        txs.clear();
        {
            let mut heads = hm_env::sync::lock(anchors);
            heads.insert(*height, own.log_head());
            heads.note_height(*height);
        }
        let actions = agent.tick(at(1_000 + *height * 100), own, true, monitor);
        bundles.extend(presented(&actions));
    }
    bundles
}

/// A replica's renewal is presented once an anchor proves it: until then
/// the certificate presented with an anchored proof serves (light peers
/// would refuse the renewal unproven, and close the links it was
/// re-authenticated on).
#[test]
fn a_renewal_is_presented_once_an_anchor_proves_it() {
    let anchors = crate::anchors::SharedAnchors::default();
    let mut agent = agent().with_anchors(anchors.clone());
    let mut monitor = Monitor::new(Default::default());
    let mut own = app();
    let (_, certificate) = issued_by_an_authority(&mut agent, &own, &mut monitor);
    commit(&mut own, 1, 600, &[TrustTx::LogCertificate(certificate)]);
    let requests = chain_requests(&agent.tick(at(1_000), &own, true, &mut monitor));
    assert_eq!(commit(&mut own, 2, 1_100, &requests), [true]);
    let mut height = 2;
    let bundles = advance_to(
        &mut own,
        &mut agent,
        &mut monitor,
        &anchors,
        &mut height,
        16,
        &[],
    );
    let first = bundles.last().cloned().expect("presented");
    let inclusion = first.inclusion.clone().expect("proven");
    assert!(
        hm_env::sync::lock(&anchors)
            .head_of_size(inclusion.tree_size)
            .is_some(),
        "proven against an anchor"
    );

    // A renewal commits at height 17; anchor 24 is settled at height 28.
    agent.renew_now().expect("phase 2 or later");
    let requests = chain_requests(&agent.tick(at(2_700), &own, true, &mut monitor));
    assert_eq!(requests.len(), 1);
    let early = advance_to(
        &mut own,
        &mut agent,
        &mut monitor,
        &anchors,
        &mut height,
        27,
        &requests,
    );
    let (renewed, _) = own
        .current_certificate(&agent.me, T0_MS + 3_700)
        .expect("renewed");
    assert_ne!(renewed.fingerprint(), first.certificate.fingerprint());
    assert!(
        early.is_empty(),
        "nothing presented before an anchor holds the renewal: {:?}",
        early
            .iter()
            .map(|bundle| bundle.certificate.fingerprint())
            .collect::<Vec<_>>()
    );
    let late = advance_to(
        &mut own,
        &mut agent,
        &mut monitor,
        &anchors,
        &mut height,
        28,
        &[],
    );
    let bundle = late.last().expect("the renewal presented");
    assert_eq!(bundle.certificate.fingerprint(), renewed.fingerprint());
    let inclusion = bundle.inclusion.as_ref().expect("proven");
    let head = hm_env::sync::lock(&anchors)
        .head_of_size(inclusion.tree_size)
        .expect("an anchor");
    assert_eq!(inclusion.verify(&bundle.certificate, &head), Ok(()));
}
