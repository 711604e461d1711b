//! The light agent driven through a whole bootstrap against a simulated
//! network: a real TrustChain state committed block by block, headers
//! certified with real FALCON-1024 precommits of four validators, and full
//! nodes and authorities answering from that state — honestly, or lying.

use std::collections::BTreeMap;
use std::net::{Ipv6Addr, SocketAddrV6};

use hm_env::mem::SeededEntropy;
use hm_kernel::app::{Application, BlockContext};
use hm_kernel::block::{BLOCK_VERSION, BlockHeader, CommitCertificate, Transaction};
use hm_kernel::state::{ModuleProof, StateTree};
use hm_trustchain::app::{TrustApp, TrustConfig};
use hm_trustchain::cert::CertificateRequest;
use hm_trustchain::name::DnsName;

use super::*;
use crate::anchors::{ANCHOR_REFRESH_BLOCKS, SharedAnchors};

const VALIDATORS: usize = 4;
const T0_MS: u64 = 1_700_000_000_000;
const VALIDITY_MS: u64 = 120_000;
const BLOCK_MS: u64 = 1_000;
const CHAIN_ID: Hash = Hash([7; 32]);

fn validator_keys() -> Vec<&'static SigningKey> {
    (0..VALIDATORS as u64)
        .map(|i| hm_testkit::signing_key("validator", i))
        .collect()
}

fn node_key() -> &'static SigningKey {
    hm_testkit::signing_key("node", 0)
}

fn validator_set() -> ValidatorSet {
    ValidatorSet::new(validator_keys().iter().map(|key| (key.verifying_key(), 10))).expect("set")
}

fn zone() -> DnsName {
    DnsName::parse("mesh").expect("zone")
}

fn addr(host: u16) -> SocketAddrV6 {
    SocketAddrV6::new(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, host), 7000, 0, 0)
}

fn authorities() -> Vec<(Hash, SocketAddrV6)> {
    validator_keys()
        .iter()
        .enumerate()
        .map(|(index, key)| (key.verifying_key().fingerprint(), addr(index as u16 + 1)))
        .collect()
}

fn at(ms: u64) -> AgentNow {
    AgentNow {
        mono_ms: ms,
        wall_ms: T0_MS + ms,
    }
}

fn agent(anchors: SharedAnchors) -> LightAgent<SeededEntropy> {
    let mut settings = TrustSettings::new(zone());
    settings.name = Some(DnsName::parse("n9.mesh").expect("name"));
    settings.certificate_validity_ms = VALIDITY_MS;
    LightAgent::new(
        node_key().duplicate(),
        hm_testkit::kem_public_key("kem", 0).clone(),
        SeededEntropy::new(1, b"light"),
        settings,
        addr(9),
        CHAIN_ID,
        validator_set(),
        authorities(),
        Phase::Traditional,
        anchors,
        Arc::new(crate::conduct::HonestPresentation),
        at(0),
    )
}

/// How the full nodes answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Honesty {
    Honest,
    /// Every proven value has a byte flipped (the proofs stay honest).
    ForgedValues,
    /// Headers carry another state root (certificates stay honest).
    ForgedHeaders,
    /// The validators signed two chains: every other `Headers` answer above
    /// the root is a twin with another state root, validly certified.
    CertifiedFork,
}

/// The chain, its validators acting as authorities, and the full nodes.
struct Network {
    app: TrustApp,
    height: Height,
    headers: BTreeMap<Height, CertifiedHeader>,
    queued: Vec<TrustTx>,
    honesty: Honesty,
    entropy: SeededEntropy,
    /// `Headers` answers given (the fork alternates on it).
    headers_answered: u64,
    /// Whether full nodes refuse misbehaviour evidence.
    refuse_evidence: bool,
    /// Misbehaviour evidence the full nodes took, and refused.
    evidence_taken: u32,
    evidence_refused: u32,
}

impl Network {
    fn new(honesty: Honesty) -> Network {
        let validators = validator_set();
        let app = TrustApp::new(TrustConfig {
            zone: zone(),
            authorities: Authorities::from_validators(&validators),
            chain_id: CHAIN_ID,
            validators,
        });
        let mut network = Network {
            app,
            height: 0,
            headers: BTreeMap::new(),
            queued: Vec::new(),
            honesty,
            entropy: SeededEntropy::new(3, b"network"),
            headers_answered: 0,
            refuse_evidence: false,
            evidence_taken: 0,
            evidence_refused: 0,
        };
        // The validators renew through the chain (phase 3 needs 2/3 of
        // the stake certified by it).
        for (index, key) in validator_keys().into_iter().enumerate() {
            let request = CertificateRequest {
                subject_key: key.verifying_key(),
                kem_key: hm_testkit::kem_public_key("kem", index as u64 + 1).clone(),
                dns_names: vec![],
                validity_ms: 3_600_000,
                requested_at_ms: T0_MS,
                nonce: index as u64,
            };
            let signed = SignedRequest::sign(request, key, &network.entropy);
            network.queued.push(TrustTx::IssueCertificate(signed));
        }
        network
    }

    fn now_ms(&self) -> u64 {
        T0_MS + self.height * BLOCK_MS
    }

    /// Commits one block of the queued transactions, with a certified
    /// header (three of four validators sign).
    fn commit(&mut self) {
        let height = self.height + 1;
        let timestamp_ms = T0_MS + height * BLOCK_MS;
        let transactions: Vec<Transaction> = self
            .queued
            .drain(..)
            .map(|tx| tx.to_transaction())
            .collect();
        let execution = self
            .app
            .execute_block(BlockContext::new(height, timestamp_ms), &transactions);
        self.app
            .commit(height, &execution.updates)
            .expect("in order");
        let set = validator_set();
        let header = BlockHeader {
            version: BLOCK_VERSION,
            chain_id: CHAIN_ID,
            height,
            round: 0,
            previous_hash: self
                .headers
                .get(&self.height)
                .map_or(Hash::ZERO, |previous| previous.header.hash()),
            transactions_root: hm_wire::merkle::empty_root(),
            updates_root: hm_kernel::block::updates_root(&[]),
            evidence_root: Hash::ZERO,
            state_root: hm_kernel::state::modules_root(&[
                StateTree::new().root(),
                self.app.state_root(),
            ]),
            log_head: self.app.log_head(),
            validators_hash: set.hash(),
            next_validators_hash: set.hash(),
            timestamp_ms,
            difficulty: 0,
            time_output: Hash::ZERO,
            time_ticks: 1,
            proposer: validator_keys()[0].verifying_key().fingerprint(),
        };
        let commit = certify(&header);
        self.headers
            .insert(height, CertifiedHeader { header, commit });
        self.height = height;
    }

    /// What a full node (or the authority `to`) answers.
    fn answer(&mut self, to: CallTo, request: ApiRequest) -> ApiResponse {
        match request {
            ApiRequest::Head => ApiResponse::Head {
                height: self.height,
                head: None,
                validator: false,
            },
            ApiRequest::Headers { from, .. } => match self.headers.get(&from) {
                Some(certified) => {
                    let mut certified = certified.clone();
                    if self.honesty == Honesty::ForgedHeaders && from > 1 {
                        certified.header.state_root.0[0] ^= 1;
                    }
                    self.headers_answered += 1;
                    if self.honesty == Honesty::CertifiedFork
                        && from > 1
                        && self.headers_answered.is_multiple_of(2)
                    {
                        certified.header.state_root.0[0] ^= 1;
                        certified.commit = certify(&certified.header);
                    }
                    ApiResponse::Headers(vec![certified])
                }
                None => ApiResponse::Error(format!("no header at height {from}")),
            },
            ApiRequest::ProveState { module, keys } => {
                assert_eq!(module, MODULE_TRUST, "a light node asks TrustChain");
                let entries = keys
                    .iter()
                    .map(|key| {
                        let (mut value, proof) = self.app.prove(key);
                        if self.honesty == Honesty::ForgedValues
                            && let Some(bytes) = value.as_mut()
                            && let Some(last) = bytes.last_mut()
                        {
                            *last ^= 1;
                        }
                        ProvedEntry {
                            value,
                            proof: ModuleProof {
                                module,
                                module_roots: vec![StateTree::new().root(), self.app.state_root()],
                                proof,
                            },
                        }
                    })
                    .collect();
                ApiResponse::ProvedState {
                    height: self.height,
                    entries,
                }
            }
            ApiRequest::Submit(transactions) => {
                for transaction in transactions {
                    let (module, inner) = transaction.0.split_first().expect("a module byte");
                    assert_eq!(*module, MODULE_TRUST);
                    self.queued
                        .push(TrustTx::decode(inner).expect("a trust tx"));
                }
                ApiResponse::Submitted(vec![])
            }
            ApiRequest::RequestCertificate(request) => {
                let CallTo::Authority { id, .. } = to else {
                    panic!("certificate requests go to authorities");
                };
                let key = authority_key(&id);
                let certificate =
                    Certificate::issue_by_authority(*request, key, self.now_ms(), &self.entropy);
                // The authority logs what it issued.
                self.queued
                    .push(TrustTx::LogCertificate(certificate.clone()));
                ApiResponse::Certificate(Box::new(certificate))
            }
            ApiRequest::CertificateProof { fingerprint } => {
                let CallTo::Authority { id, .. } = to else {
                    panic!("proofs are asked of authorities");
                };
                match self.app.inclusion_proof(&fingerprint) {
                    Some(proof) => ApiResponse::Proof {
                        proof: Box::new(proof),
                        head: Box::new(SignedTreeHead::sign(
                            self.app.log_head(),
                            authority_key(&id),
                            &self.entropy,
                        )),
                    },
                    None => ApiResponse::Error("not logged yet".into()),
                }
            }
            ApiRequest::CurrentCertificates { subjects } => ApiResponse::CurrentCertificates(
                subjects
                    .iter()
                    .map(|subject| {
                        self.app
                            .current_certificate(subject, self.now_ms())
                            .map(|(certificate, _)| certificate.fingerprint())
                    })
                    .collect(),
            ),
            ApiRequest::InclusionAt {
                fingerprint,
                tree_size,
            } => match self.app.inclusion_proof_at(&fingerprint, tree_size) {
                Ok(proof) => ApiResponse::Inclusion(Box::new(proof)),
                Err(error) => ApiResponse::Error(error),
            },
            ApiRequest::ReportMisbehaviour { evidence } => {
                let evidence =
                    Misbehaviour::decode(&evidence).expect("the agent sends what it kept");
                let set = validator_set();
                let conflict = evidence
                    .verify(&CHAIN_ID, &set, &set)
                    .expect("the agent sends evidence that checks out");
                if self.refuse_evidence {
                    self.evidence_refused += 1;
                    ApiResponse::Error("evidence refused".into())
                } else {
                    self.evidence_taken += 1;
                    ApiResponse::MisbehaviourTaken {
                        conflict: conflict.to_string(),
                        convicted: Vec::new(),
                        suspects: Vec::new(),
                        pooled: 0,
                    }
                }
            }
            other => panic!("a light node does not ask {other:?}"),
        }
    }
}

fn authority_key(id: &Hash) -> &'static SigningKey {
    validator_keys()
        .into_iter()
        .find(|key| key.verifying_key().fingerprint() == *id)
        .expect("an authority")
}

fn certify(header: &BlockHeader) -> CommitCertificate {
    let keys = validator_keys();
    crate::test_chain::certify(&CHAIN_ID, &validator_set(), &keys[..3], header)
}

/// Runs the agent for `duration_ms`, a block every second, answering
/// every call at once; returns the last bundle presented.
fn run(
    agent: &mut LightAgent<SeededEntropy>,
    network: &mut Network,
    from_ms: u64,
    duration_ms: u64,
) -> Option<CertificateBundle> {
    run_presenting(agent, network, from_ms, duration_ms).pop()
}

/// [`run`], returning every bundle presented, in order.
fn run_presenting(
    agent: &mut LightAgent<SeededEntropy>,
    network: &mut Network,
    from_ms: u64,
    duration_ms: u64,
) -> Vec<CertificateBundle> {
    let mut presented = Vec::new();
    let mut ms = from_ms;
    while ms < from_ms + duration_ms {
        if ms.is_multiple_of(BLOCK_MS) {
            network.commit();
        }
        let mut pending: Vec<LightAction> = agent.tick(at(ms));
        let mut handled = 0;
        while let Some(action) = pending.pop() {
            handled += 1;
            assert!(handled < 1_000, "a tick's calls end");
            match action {
                LightAction::Call { call, to, request } => {
                    let answer = network.answer(to, request);
                    pending.extend(agent.on_answer(at(ms), call, answer));
                }
                LightAction::Present(bytes) => {
                    presented.push(CertificateBundle::decode(&bytes).expect("a bundle"));
                }
                LightAction::PersistPhase(_)
                | LightAction::PersistAnchors(_)
                | LightAction::Reply { .. }
                | LightAction::Distrust { .. } => {}
            }
        }
        ms += LIGHT_TICK_STEP_MS;
    }
    presented
}

const LIGHT_TICK_STEP_MS: u64 = 500;

#[test]
fn a_light_node_climbs_to_full_federation_on_proven_answers() {
    let anchors = SharedAnchors::default();
    let mut agent = agent(anchors.clone());
    let mut network = Network::new(Honesty::Honest);
    let presented = run(&mut agent, &mut network, 0, 40_000);
    let status = agent.status();
    assert_eq!(
        agent.phase(),
        Phase::FullFederation,
        "missing: {:?}",
        status.missing
    );
    assert!(
        status.chain_issued,
        "phase 3 presents a chain-issued certificate"
    );
    let light = agent.light_status();
    assert_eq!(light.answers_refused, 0, "{:?}", light.refused_by_reason);
    assert!(light.answers_accepted > 0);
    assert!(!light.frozen);
    // Every accepted answer carries a proof that holds against the header
    // it names.
    for answer in &light.accepted {
        let header = &network.headers[&answer.height].header;
        assert_eq!(header.hash(), answer.header_hash);
        assert_eq!(
            answer.proof.verify(
                &header.state_root,
                answer.module,
                &answer.key,
                answer.value.as_deref()
            ),
            Ok(())
        );
    }
    // Its name resolves to it in the chain's state.
    let record = network
        .app
        .record(&DnsName::parse("n9.mesh").expect("name"))
        .expect("registered");
    assert_eq!(record.owner, node_key().verifying_key().fingerprint());
    // What it presents is proven against an anchor it verified, so other
    // light nodes can check it.
    let bundle = presented.expect("a certificate presented");
    assert_eq!(Some(bundle.certificate.fingerprint()), status.certificate);
    let inclusion = bundle.inclusion.expect("proven against an anchor");
    let head = hm_env::sync::lock(&anchors)
        .head_of_size(inclusion.tree_size)
        .expect("an anchor of that size");
    assert_eq!(inclusion.verify(&bundle.certificate, &head), Ok(()));
    // Verified headers are the chain's.
    for (height, hash) in &light.verified_headers {
        assert_eq!(network.headers[height].header.hash(), *hash);
    }
    // `hm cert show` against it: its own certificate, chain-issued, with
    // the header its standing was proven against.
    let own = agent.own_certificate().expect("a proven certificate");
    assert_eq!(Some(own.fingerprint), status.certificate);
    assert!(own.issued_at_height.is_some() && own.authority.is_none());
    let (height, header_hash) = own.proven_at.expect("proven");
    assert_eq!(network.headers[&height].header.hash(), header_hash);
}

#[test]
fn forged_values_or_headers_are_refused_and_never_climb() {
    for honesty in [Honesty::ForgedValues, Honesty::ForgedHeaders] {
        let mut agent = agent(SharedAnchors::default());
        let mut network = Network::new(honesty);
        run(&mut agent, &mut network, 0, 30_000);
        let light = agent.light_status();
        assert!(
            agent.phase() <= Phase::Trust,
            "{honesty:?}: reached {} on lies",
            agent.phase()
        );
        assert!(light.answers_refused > 0, "{honesty:?}: nothing refused");
        assert!(
            light.accepted.is_empty(),
            "{honesty:?}: accepted {:?}",
            light.accepted
        );
    }
}

#[test]
fn the_presented_proof_is_refreshed_as_anchors_age() {
    let anchors = SharedAnchors::default();
    let mut agent = agent(anchors.clone());
    let mut network = Network::new(Honesty::Honest);
    let first = run(&mut agent, &mut network, 0, 40_000)
        .and_then(|bundle| bundle.inclusion)
        .expect("proven");
    let later = run(
        &mut agent,
        &mut network,
        40_000,
        (ANCHOR_REFRESH_BLOCKS + 2 * ANCHOR_BLOCKS) * BLOCK_MS,
    )
    .and_then(|bundle| bundle.inclusion)
    .expect("proven again");
    assert!(later.tree_size >= first.tree_size);
    assert_ne!(later, first, "a proof against a newer anchor");
}

/// Once a certificate proven against an anchor is presented, a renewal
/// never replaces it with an unproven one: every light peer would refuse
/// that and close the connection it was re-authenticated on. The renewed
/// certificate is presented once an anchor proves it.
#[test]
fn a_renewal_is_presented_only_once_an_anchor_proves_it() {
    let anchors = SharedAnchors::default();
    let mut agent = agent(anchors.clone());
    let mut network = Network::new(Honesty::Honest);
    let presented = run_presenting(&mut agent, &mut network, 0, VALIDITY_MS + 10_000);
    let anchored = |bundle: &CertificateBundle| {
        bundle.inclusion.as_ref().is_some_and(|inclusion| {
            hm_env::sync::lock(&anchors)
                .head_of_size(inclusion.tree_size)
                .is_some_and(|head| inclusion.verify(&bundle.certificate, &head).is_ok())
        })
    };
    let first = presented
        .iter()
        .position(anchored)
        .expect("a certificate proven against an anchor");
    for bundle in &presented[first..] {
        assert!(
            anchored(bundle),
            "certificate {} presented without an anchored proof after an anchored one",
            bundle.certificate.fingerprint()
        );
    }
    let certificates: std::collections::BTreeSet<Hash> = presented[first..]
        .iter()
        .map(|bundle| bundle.certificate.fingerprint())
        .collect();
    assert!(
        certificates.len() >= 2,
        "the certificate was renewed and the renewal presented"
    );
    assert_eq!(
        agent.status().certificate,
        presented
            .last()
            .map(|bundle| bundle.certificate.fingerprint())
    );
}

/// Resolves `name` through the agent, answering its calls from `network`.
fn resolve(
    agent: &mut LightAgent<SeededEntropy>,
    network: &mut Network,
    ms: u64,
    name: &str,
) -> ApiResponse {
    let name = DnsName::parse(name).expect("a name");
    let mut pending = agent.resolve(at(ms), name, 77);
    let mut reply = None;
    while let Some(action) = pending.pop() {
        match action {
            LightAction::Call { call, to, request } => {
                let answer = network.answer(to, request);
                pending.extend(agent.on_answer(at(ms), call, answer));
            }
            LightAction::Reply { ticket, answer } => {
                assert_eq!(ticket, 77);
                assert!(reply.is_none(), "one reply per ticket");
                reply = Some(answer);
            }
            _ => {}
        }
    }
    reply.expect("a reply")
}

#[test]
fn names_resolve_with_proofs_and_lies_are_answered_with_the_reason() {
    let mut agent = agent(SharedAnchors::default());
    let mut network = Network::new(Honesty::Honest);
    run(&mut agent, &mut network, 0, 40_000);
    match resolve(&mut agent, &mut network, 40_000, "n9.mesh") {
        ApiResponse::ProvenRecord {
            record: Some(record),
            height,
            header_hash,
        } => {
            assert_eq!(record.addrs, vec![*addr(9).ip()]);
            assert_eq!(network.headers[&height].header.hash(), header_hash);
        }
        other => panic!("expected a proven record, got {other:?}"),
    }
    assert!(matches!(
        resolve(&mut agent, &mut network, 40_000, "nobody.mesh"),
        ApiResponse::ProvenRecord { record: None, .. }
    ));
    let resolved = &agent.light_status().names_resolved;
    assert_eq!(
        resolved.as_slice(),
        &[
            ("n9.mesh".to_string(), Some(*addr(9).ip())),
            ("nobody.mesh".to_string(), None)
        ]
    );
    // The same node turned liar: the answer is refused, with why.
    network.honesty = Honesty::ForgedValues;
    match resolve(&mut agent, &mut network, 40_000, "n9.mesh") {
        ApiResponse::Error(reason) => assert!(reason.contains("not proven"), "{reason}"),
        other => panic!("a forged record must not be answered: {other:?}"),
    }
    assert_eq!(agent.light_status().names_resolved.len(), 2);
}

#[test]
fn a_frozen_client_hands_its_evidence_to_a_few_full_nodes_and_stops() {
    for refuse_evidence in [false, true] {
        let mut agent = agent(SharedAnchors::default());
        let mut network = Network::new(Honesty::CertifiedFork);
        network.refuse_evidence = refuse_evidence;
        run(&mut agent, &mut network, 0, 30_000);
        let light = agent.light_status().clone();
        assert!(light.frozen, "two certified headers at one height freeze");
        assert!(agent.misbehaviour().is_some());
        if refuse_evidence {
            // Every call a refusal: the agent gives up after its budget,
            // counting each refusal (the shell distrusts each refuser).
            assert_eq!(network.evidence_taken, 0);
            assert_eq!(network.evidence_refused, EVIDENCE_REPORT_ATTEMPTS_MAX);
            assert_eq!(light.misbehaviour_reported, 0);
            let refused = light
                .refused_by_reason
                .iter()
                .find(|(reason, _)| reason == "misbehaviour evidence refused")
                .map(|(_, count)| *count);
            assert_eq!(refused, Some(u64::from(EVIDENCE_REPORT_ATTEMPTS_MAX)));
        } else {
            assert_eq!(network.evidence_taken, EVIDENCE_REPORTS_WANTED);
            assert_eq!(light.misbehaviour_reported, EVIDENCE_REPORTS_WANTED);
        }
        // Once done, it stays quiet.
        let (taken, refused) = (network.evidence_taken, network.evidence_refused);
        run(&mut agent, &mut network, 30_000, 10_000);
        assert_eq!(
            (network.evidence_taken, network.evidence_refused),
            (taken, refused)
        );
    }
}

#[test]
fn calls_turn_over_a_few_full_nodes_and_a_liar_is_left_behind() {
    let all: Vec<SocketAddrV6> = (1..=10).map(addr).collect();
    let mut full = FullNodes::new(all.clone(), 13);
    let asked: Vec<SocketAddrV6> = (0..6).map(|_| full.pick()).collect();
    // Placed at 13 % 10 = 3: the window is nodes 4, 5, 6 (addr is 1-based).
    assert_eq!(
        asked,
        vec![addr(4), addr(5), addr(6), addr(4), addr(5), addr(6)]
    );
    full.distrust(addr(5));
    let asked: Vec<SocketAddrV6> = (0..3).map(|_| full.pick()).collect();
    assert_eq!(asked, vec![addr(6), addr(7), addr(8)]);
    // Distrusting a node outside the window changes nothing.
    full.distrust(addr(1));
    assert_eq!(full.pick(), addr(6));
    // With fewer full nodes than the window, all of them take turns.
    let mut two = FullNodes::new(vec![addr(1), addr(2)], 0);
    assert_eq!(
        (two.pick(), two.pick(), two.pick()),
        (addr(1), addr(2), addr(1))
    );
}

#[test]
fn a_refused_answer_asks_the_shell_to_distrust_its_full_node() {
    let mut agent = agent(SharedAnchors::default());
    let mut network = Network::new(Honesty::ForgedHeaders);
    for _ in 0..10 {
        network.commit();
    }
    // The root comes first, then the head, then an anchor (forged).
    let mut distrusted = 0;
    let mut ms = 0;
    while ms < 10_000 {
        let mut pending = agent.tick(at(ms));
        while let Some(action) = pending.pop() {
            if let LightAction::Call { call, to, request } = action {
                let answer = network.answer(to, request);
                let out = agent.on_answer(at(ms), call, answer);
                distrusted += out
                    .iter()
                    .filter(
                        |action| matches!(action, LightAction::Distrust { call: c } if *c == call),
                    )
                    .count();
                pending.extend(
                    out.into_iter()
                        .filter(|action| !matches!(action, LightAction::Distrust { .. })),
                );
            }
        }
        ms += LIGHT_TICK_STEP_MS;
    }
    assert!(distrusted > 0, "forged anchors are distrusted");
    assert_eq!(
        distrusted as u64,
        agent.light_status().answers_refused,
        "one distrust per refused answer"
    );
}
