//! TrustChain in the node: the bootstrap driver ([`TrustAgent`], sans-I/O),
//! the phase-aware certificate validator every STOQ handshake consults
//! ([`HybridCertValidator`], the seed's `HybridCertValidator`), and what
//! a node presents on its connections ([`CertificateBundle`]).
//!
//! The agent climbs the phases of `crate::bootstrap`: in phase 0 it asks a
//! genesis validator acting as a CA for a certificate and polls that CA for
//! an inclusion proof under a tree head the CA signs (PKI trust); once the
//! certificate is in its own committed chain state and the chain is live it
//! is in phase 2 and renews through the chain (`IssueCertificate`); with a
//! chain-issued certificate, its own name registered and validators holding
//! 2/3 of the stake certified by the chain, phase 3. Whatever certificate it
//! holds is presented on every live connection (STOQ re-authentication).
//!
//! The validator judges a presented certificate against the node's own
//! committed log (a node never accepts a certificate absent from the log):
//! provably bad ones close the connection and are reported by the monitor;
//! ones merely not yet in the log (the judging node may be behind) leave the
//! peer uncertified, which phases 0–2 tolerate and phase 3 does not on the
//! membership overlay (the API, where newcomers ask for their first
//! certificate, and chain links, whose messages prove themselves, stay
//! open). Phase 3 also drops the PKI fallback: authority-issued
//! certificates no longer count, only chain-issued ones.

use std::collections::BTreeSet;
use std::net::SocketAddrV6;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use hm_env::{Clock, Entropy, Env};
use hm_kernel::app::Application;
use hm_kernel::validators::ValidatorSet;
use hm_stoq::{PeerIdentity, PeerRefused, PeerVerifier};
use hm_trustchain::app::TrustApp;
use hm_trustchain::cert::{Certificate, CertificateRequest, Issuer, SignedRequest};
use hm_trustchain::dns::{NameClaim, SignedNameClaim, StaticTable};
use hm_trustchain::error::{CertificateFault, Lapsed, NotLogged};
use hm_trustchain::log::{HeadWitness, InclusionProof, SignedTreeHead};
use hm_trustchain::monitor::{HeadVerdict, Monitor, Verdict};
use hm_trustchain::name::DnsName;
use hm_trustchain::tx::{TrustTx, UNLOGGED_GRACE_MS};
use hm_wire::{Hash, KemPublicKey, SigningKey};
use serde::{Deserialize, Serialize};

use crate::anchors::{AnchorHeads, SharedAnchors};
use crate::api::API_PROTOCOL;
use crate::app::SharedTrust;
use crate::bootstrap::{Conditions, Phase, PhaseMachine, Transition};
use crate::conduct::PresentationConduct;

/// An unanswered certificate request is given up after this long and the
/// next authority is asked.
pub const CA_REQUEST_TIMEOUT_MS: u64 = 5_000;
/// How often an issued certificate's inclusion proof is asked for.
pub const PROOF_POLL_INTERVAL_MS: u64 = 1_000;
/// An authority that has not logged what it issued by then is given up;
/// the certificate is kept and reported once the grace has passed.
pub const CA_LOG_DEADLINE_MS: u64 = 15_000;
/// Certificates authorities issued but never logged, kept for the report.
pub const UNLOGGED_KEPT_MAX: usize = 4;
/// How long the stake of chain-certified validators is trusted without a
/// new log head (certificates also expire with time).
pub const CERTIFIED_RECHECK_MS: u64 = 5_000;
/// How long the agent trusts what it read of its own certificate and name
/// from an unchanged committed state (the state changes with every block,
/// which invalidates it at once; this bounds how late an expiry is seen).
pub const OWN_STATE_RECHECK_MS: u64 = 2_000;
/// How often a certified node asks one authority (in turn) for its signed
/// log head and checks it against its own log (CT auditing).
pub const HEAD_AUDIT_INTERVAL_MS: u64 = 10_000;
/// A submitted renewal or name claim not committed by then is sent again.
pub const TX_RETRY_MS: u64 = 10_000;
/// Times the same signed certificate request or name claim is sent before
/// a fresh one replaces it. Resending the identical transaction keeps a
/// retry idempotent: the chain certifies a request id once, so a congested
/// chain that commits both the original and its retry issues one
/// certificate, not two (a fresh nonce per retry made every retry a new
/// certificate and fed the congestion).
pub const TX_SENDS_MAX: u32 = 6;
/// Certificates the validator remembers having accepted (for the status).
pub const ACCEPTED_CERTIFICATES_MAX: usize = 4_096;
/// Monitor reports submitted per tick.
pub const REPORTS_PER_TICK_MAX: usize = 8;
/// Authority-signed heads beyond this node's log, kept to judge once the
/// log has grown that far.
pub const PENDING_HEADS_MAX: usize = 16;
/// Reports kept until their finding is on chain (resubmitted meanwhile:
/// a transaction can be lost on its way to the validators).
pub const PENDING_REPORTS_MAX: usize = 16;
/// Times one report is submitted before it is given up.
pub const REPORT_ATTEMPTS_MAX: u32 = 6;
/// Largest encoded bundle (a certificate plus an inclusion proof).
pub const BUNDLE_BYTES_MAX: usize = hm_trustchain::cert::CERTIFICATE_BYTES_MAX + (4 << 10);
pub const BUNDLE_DOMAIN: &str = "hm/node/certificate-bundle/v1";

/// How a node takes part in TrustChain.
#[derive(Debug, Clone)]
pub struct TrustSettings {
    /// The network's DNS zone.
    pub zone: DnsName,
    /// The node's own name (registered once certified); `None`: no name.
    pub name: Option<DnsName>,
    /// Lifetime asked for in certificate requests.
    pub certificate_validity_ms: u64,
    /// Renew once this share (per mille) of the lifetime has passed.
    pub renew_at_per_mille: u64,
    /// The traditional resolver's table (seed list / scenario table).
    pub traditional: StaticTable,
    /// The chain counts as live while the last commit is at most this old.
    pub chain_live_window_ms: u64,
}

impl TrustSettings {
    pub fn new(zone: DnsName) -> TrustSettings {
        TrustSettings {
            zone,
            name: None,
            certificate_validity_ms: 24 * 3_600_000,
            renew_at_per_mille: 500,
            traditional: StaticTable::new(),
            chain_live_window_ms: 30_000,
        }
    }

    /// Whether the chain is live at `now_ms` (the node's monotone clock):
    /// it committed within the last `chain_live_window_ms`. The agent asks
    /// the chain for certificates only while it is.
    pub fn chain_is_live(&self, last_commit_ms: Option<u64>, now_ms: u64) -> bool {
        last_commit_ms.is_some_and(|at| now_ms.saturating_sub(at) <= self.chain_live_window_ms)
    }
}

/// What a node presents on its connections: its certificate and, when it
/// has one, the certificate's inclusion proof.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateBundle {
    pub certificate: Certificate,
    pub inclusion: Option<InclusionProof>,
}

impl CertificateBundle {
    pub fn encode(&self) -> Vec<u8> {
        hm_wire::encode(self)
    }

    pub fn decode(bytes: &[u8]) -> Result<CertificateBundle, BundleError> {
        let bundle: CertificateBundle =
            hm_wire::decode(bytes, BUNDLE_BYTES_MAX).map_err(BundleError::Decode)?;
        bundle
            .certificate
            .check_limits()
            .map_err(BundleError::Limits)?;
        Ok(bundle)
    }
}

/// Why presented identity bytes are not a certificate bundle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    #[error("malformed certificate bundle: {0}")]
    Decode(hm_wire::WireError),
    #[error("malformed certificate: {0}")]
    Limits(hm_trustchain::cert::CertError),
}

/// Why a peer's presented certificate (or its lack of one) is refused;
/// the peer is shown the sentence as the close reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertificateRefusal {
    #[error(
        "phase 3 accepts only peers with a chain-issued certificate in its log ({why}); ask for one over hm/api/1"
    )]
    Uncertified { why: UncertifiedWhy },
    #[error(transparent)]
    Malformed(#[from] BundleError),
    #[error("the certificate is for {subject}, not for the connection's key {peer}")]
    WrongSubject { subject: Hash, peer: Hash },
    /// TrustChain's monitor refused the certificate as provably bad, with
    /// its reason.
    #[error(transparent)]
    Refused(CertificateFault),
}

/// Why a peer counts as uncertified: it presented no certificate, or one
/// that certifies nothing here now. Phases 0–2 let such a peer in; phase 3
/// refuses it on the membership overlay
/// ([`CertificateRefusal::Uncertified`], which shows this text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UncertifiedWhy {
    #[error("none presented")]
    NonePresented,
    /// A logged, current certificate of `authority` (PKI trust), which
    /// phase 3 no longer accepts: only chain-issued ones count.
    #[error("authority-issued certificates need the PKI fallback")]
    AuthorityIssued { authority: Hash },
    /// Not (yet) in this node's committed log; this node may be behind.
    #[error(transparent)]
    NotLogged(#[from] NotLogged),
    /// Logged, but outside its validity window: the peer renews it
    /// through the chain.
    #[error(transparent)]
    Lapsed(#[from] Lapsed),
    /// Logged, but revoked (or its issuer is): the peer needs a new one.
    #[error(transparent)]
    Revoked(CertificateFault),
}

/// What the node's certificate exchange saw, for the status and checkers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustRecord {
    /// Fingerprints of certificates this node accepted from peers.
    pub accepted: BTreeSet<Hash>,
    /// Peers refused for a provably bad certificate.
    pub refused: u64,
    /// Peers let in uncertified because their certificate was not (yet) in
    /// this node's log.
    pub pending: u64,
    /// Uncertified peers refused (phase 3).
    pub uncertified_refused: u64,
}

/// State the validator and the agent share.
#[derive(Clone)]
pub struct TrustShared {
    pub trust: SharedTrust,
    /// Anchor heads: learnt from committed blocks (replicas, to choose what
    /// to prove their certificate against) or verified headers (light
    /// nodes, to judge peers' certificates by).
    pub anchors: SharedAnchors,
    /// The node is light: it judges peers by [`judge_light`].
    pub light: bool,
    phase: Arc<AtomicU8>,
    monitor: Arc<Mutex<Monitor>>,
    record: Arc<Mutex<TrustRecord>>,
}

use hm_env::sync::lock;

impl TrustShared {
    pub fn new(trust: SharedTrust, phase: Phase) -> TrustShared {
        TrustShared {
            trust,
            anchors: SharedAnchors::default(),
            light: false,
            phase: Arc::new(AtomicU8::new(phase.number())),
            monitor: Arc::new(Mutex::new(Monitor::new(Default::default()))),
            record: Arc::new(Mutex::new(TrustRecord::default())),
        }
    }

    pub fn phase(&self) -> Phase {
        Phase::from_number(self.phase.load(Ordering::Acquire)).unwrap_or_default()
    }

    pub fn set_phase(&self, phase: Phase) {
        self.phase.store(phase.number(), Ordering::Release);
    }

    pub fn monitor(&self) -> MutexGuard<'_, Monitor> {
        lock(&self.monitor)
    }

    pub fn record(&self) -> TrustRecord {
        lock(&self.record).clone()
    }
}

/// The seed's `HybridCertValidator`: decides, by phase, whether a peer's
/// presented certificate (STOQ identity bytes) is welcome.
pub struct HybridCertValidator<E: Env> {
    env: E,
    shared: TrustShared,
}

impl<E: Env> HybridCertValidator<E> {
    pub fn new(env: E, shared: TrustShared) -> HybridCertValidator<E> {
        HybridCertValidator { env, shared }
    }
}

/// What judging a peer's identity bytes concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Judgement {
    /// The certificate is accepted (recorded as such).
    Certified(Hash),
    /// Let in without a certificate.
    Uncertified,
    Refused(CertificateRefusal),
}

/// Judges identity bytes `extra` from `peer` on `protocol` in `phase`.
pub fn judge(
    phase: Phase,
    peer: &Hash,
    protocol: &[u8],
    extra: &[u8],
    trust: &TrustApp,
    monitor: &mut Monitor,
    now_ms: u64,
) -> Judgement {
    judge_by(phase, peer, protocol, extra, |bundle| {
        monitor.check_presented(
            &bundle.certificate,
            bundle.inclusion.as_ref(),
            trust,
            now_ms,
        )
    })
}

/// Judges identity bytes as a light node does: it holds no log, so a
/// certificate counts only with an inclusion proof against an anchor head
/// the node verified (`crate::anchors`); one without (or against a head it
/// does not know) leaves the peer uncertified, and a proof that fails
/// against a trusted head is refused.
pub fn judge_light(
    phase: Phase,
    peer: &Hash,
    protocol: &[u8],
    extra: &[u8],
    anchors: &AnchorHeads,
    now_ms: u64,
) -> Judgement {
    judge_by(phase, peer, protocol, extra, |bundle| {
        let certificate = &bundle.certificate;
        let fingerprint = certificate.fingerprint();
        let proven = bundle.inclusion.as_ref().and_then(|inclusion| {
            anchors
                .head_of_size(inclusion.tree_size)
                .map(|head| inclusion.verify(certificate, &head))
        });
        match proven {
            None => return Verdict::Pending(NotLogged { fingerprint }),
            Some(Err(source)) => {
                return Verdict::Refuse(CertificateFault::InclusionProof { source });
            }
            Some(Ok(())) => {}
        }
        if !certificate.is_current(now_ms) {
            return Verdict::Lapsed(Lapsed {
                fingerprint,
                not_before_ms: certificate.not_before_ms,
                not_after_ms: certificate.not_after_ms,
                now_ms,
            });
        }
        Verdict::Accept
    })
}

/// The checks every judge makes (presence, shape, subject, phase policy)
/// around `verdict`, which says what the node knows of the certificate.
fn judge_by(
    phase: Phase,
    peer: &Hash,
    protocol: &[u8],
    extra: &[u8],
    verdict: impl FnOnce(&CertificateBundle) -> Verdict,
) -> Judgement {
    let policy = phase.policy();
    // Phase 3 demands certificates on the membership overlay. The API is
    // where newcomers ask for their first certificate, and chain links
    // carry only messages that prove themselves (signed votes, blocks with
    // commit certificates), so neither needs the peer's certificate.
    let exempt = protocol == API_PROTOCOL || protocol == crate::ids::CHAIN_PROTOCOL;
    let uncertified = |why: UncertifiedWhy| {
        if policy.accept_uncertified_peers || exempt {
            Judgement::Uncertified
        } else {
            Judgement::Refused(CertificateRefusal::Uncertified { why })
        }
    };
    if extra.is_empty() {
        return uncertified(UncertifiedWhy::NonePresented);
    }
    let bundle = match CertificateBundle::decode(extra) {
        Ok(bundle) => bundle,
        Err(error) => return Judgement::Refused(error.into()),
    };
    let certificate = &bundle.certificate;
    if certificate.subject() != *peer {
        return Judgement::Refused(CertificateRefusal::WrongSubject {
            subject: certificate.subject(),
            peer: *peer,
        });
    }
    match verdict(&bundle) {
        Verdict::Accept => {
            if !policy.pki_fallback
                && let Issuer::Authority(authority) = certificate.issuer
            {
                return uncertified(UncertifiedWhy::AuthorityIssued { authority });
            }
            Judgement::Certified(certificate.fingerprint())
        }
        Verdict::Pending(not_logged) => uncertified(not_logged.into()),
        // An expired certificate is no offence: the peer counts as
        // uncertified, so chain links still carry the votes and blocks that
        // renew it. Refusing it there deadlocked a devnet that had been
        // stopped past its certificates' lifetime: renewal needs commits,
        // and commits needed links the expired certificates closed.
        Verdict::Lapsed(lapsed) => uncertified(lapsed.into()),
        // A revoked certificate (its issuer was caught, or a finding or its
        // subject revoked it) certifies nothing, but presenting one is no
        // offence now: the peer counts as uncertified, so it can still
        // reach the API for a new certificate. Refusing it there locked
        // light nodes holding a revoked authority's certificate out of
        // every full node, the only place they could learn of it.
        Verdict::Refuse(
            fault @ (CertificateFault::Revoked { .. } | CertificateFault::IssuerRevoked { .. }),
        ) => uncertified(UncertifiedWhy::Revoked(fault)),
        Verdict::Refuse(fault) => Judgement::Refused(CertificateRefusal::Refused(fault)),
    }
}

impl<E: Env> PeerVerifier for HybridCertValidator<E> {
    fn verify(&self, peer: &PeerIdentity) -> Result<(), PeerRefused> {
        let phase = self.shared.phase();
        let now_ms = self.env.clock().wall_ms();
        let judgement = if self.shared.light {
            let anchors = lock(&self.shared.anchors);
            judge_light(
                phase,
                &peer.node_id,
                &peer.protocol,
                &peer.extra,
                &anchors,
                now_ms,
            )
        } else {
            let trust = self.shared.trust.read();
            let mut monitor = self.shared.monitor();
            judge(
                phase,
                &peer.node_id,
                &peer.protocol,
                &peer.extra,
                &trust,
                &mut monitor,
                now_ms,
            )
        };
        let mut record = lock(&self.shared.record);
        match judgement {
            Judgement::Certified(fingerprint) => {
                if record.accepted.len() < ACCEPTED_CERTIFICATES_MAX {
                    record.accepted.insert(fingerprint);
                }
                Ok(())
            }
            Judgement::Uncertified => {
                if !peer.extra.is_empty() {
                    record.pending += 1;
                }
                Ok(())
            }
            Judgement::Refused(reason) => {
                if peer.extra.is_empty() {
                    record.uncertified_refused += 1;
                } else {
                    record.refused += 1;
                }
                Err(PeerRefused::new(reason))
            }
        }
    }
}

/// What the agent asks its shell to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustAction {
    /// Send a certificate request to an authority (its API).
    AskCertificate {
        authority: Hash,
        addr: SocketAddrV6,
        request: Box<SignedRequest>,
    },
    /// Ask an authority for its signed log head (auditing).
    AskHead { authority: Hash, addr: SocketAddrV6 },
    /// Ask an authority for a certificate's inclusion proof and a tree
    /// head it signs.
    AskProof {
        authority: Hash,
        addr: SocketAddrV6,
        fingerprint: Hash,
    },
    /// Submit a transaction to the chain.
    Submit(Box<TrustTx>),
    /// Present these identity bytes on every connection.
    Present(Vec<u8>),
    /// The phase changed: persist it before acting on it.
    PersistPhase(Phase),
}

impl TrustAction {
    /// Short name for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            TrustAction::AskCertificate { .. } => "ask-certificate",
            TrustAction::AskProof { .. } => "ask-proof",
            TrustAction::AskHead { .. } => "ask-head",
            TrustAction::Submit(_) => "submit",
            TrustAction::Present(_) => "present",
            TrustAction::PersistPhase(_) => "persist-phase",
        }
    }
}

/// A certificate obtained from an authority, waiting to be logged.
#[derive(Debug, Clone)]
struct AuthorityCertificate {
    certificate: Certificate,
    authority: usize,
    issued_at_ms: u64,
    /// The authority's proof verified (PKI trust in the log entry).
    proven: bool,
    proof_asked_at_ms: Option<u64>,
}

#[derive(Debug, Clone)]
enum CaProgress {
    Idle,
    Asking { authority: usize, since_ms: u64 },
    Issued(Box<AuthorityCertificate>),
}

/// The time as the agent sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentNow {
    /// Monotone ms (timers).
    pub mono_ms: u64,
    /// Wall-clock ms (certificate validity).
    pub wall_ms: u64,
}

/// What the agent reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentStatus {
    pub phase: Phase,
    /// When each phase was entered (monotone ms of the node).
    pub phase_entered_ms: [Option<u64>; 4],
    pub missing: Option<&'static str>,
    /// The certificate presented, and whether the chain issued it.
    pub certificate: Option<Hash>,
    pub chain_issued: bool,
    pub certificate_requests: u64,
    pub renewals: u64,
    pub name_claims: u64,
    pub reports_submitted: u64,
    pub head_inconsistencies: u64,
    pub false_heads: u64,
}

/// The bootstrap driver of one node.
pub struct TrustAgent<E: Entropy> {
    me: Hash,
    key: SigningKey,
    kem_key: KemPublicKey,
    entropy: E,
    settings: TrustSettings,
    listen: SocketAddrV6,
    /// Authorities (genesis validators) and where their APIs listen.
    authorities: Vec<(Hash, SocketAddrV6)>,
    validators: ValidatorSet,
    /// How it seeks and presents certificates (honest unless injected).
    presentation: Arc<dyn PresentationConduct>,
    machine: PhaseMachine,
    ca: CaProgress,
    attempts: u64,
    /// The certificate request in flight to the chain.
    renewal: Option<InFlight<SignedRequest>>,
    /// The name claim in flight: its sequence, the certificate it names
    /// and the signed claim.
    claim: ClaimInFlight,
    presented: Option<Hash>,
    /// The anchor the presented certificate's proof is against.
    presented_anchor: Option<hm_kernel::block::Height>,
    /// Anchor heads from the node's committed blocks.
    anchors: SharedAnchors,
    witness: HeadWitness,
    /// The last head the witness saw.
    witnessed: Option<hm_kernel::block::LogHead>,
    /// Stake of chain-certified validators: (at head, when, stake).
    certified: Option<(hm_kernel::block::LogHead, u64, u64)>,
    /// What the committed state says of this node (its current certificate
    /// and whether its name resolves to it), read at a state root.
    own: Option<OwnView>,
    /// Authority-signed heads not judged yet (our log was shorter).
    pending_heads: Vec<SignedTreeHead>,
    /// When to audit the next authority's head, and whose turn it is.
    next_head_audit_ms: u64,
    head_audit_turn: usize,
    /// Certificates an authority issued to us and never logged, waiting for
    /// the grace to pass before they are reported.
    unlogged: Vec<Certificate>,
    /// Reports submitted whose finding is not on chain yet: (report,
    /// offender, last submitted, attempts).
    pending_reports: Vec<(hm_trustchain::tx::Report, Hash, u64, u32)>,
    /// An operator asked to renew the certificate with this fingerprint
    /// now (`hm cert renew`); done once another one is current.
    renew_requested_for: Option<Hash>,
    status: AgentStatus,
}

impl<E: Entropy> TrustAgent<E> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        key: SigningKey,
        kem_key: KemPublicKey,
        entropy: E,
        settings: TrustSettings,
        listen: SocketAddrV6,
        authorities: Vec<(Hash, SocketAddrV6)>,
        validators: ValidatorSet,
        persisted: Phase,
        presentation: Arc<dyn PresentationConduct>,
        now: AgentNow,
    ) -> TrustAgent<E> {
        let me = key.verifying_key().fingerprint();
        let machine = PhaseMachine::new(persisted, now.mono_ms);
        let authorities = presentation.authorities(authorities);
        TrustAgent {
            me,
            key,
            kem_key,
            entropy,
            settings,
            listen,
            authorities,
            validators,
            presentation,
            machine,
            ca: CaProgress::Idle,
            attempts: 0,
            renewal: None,
            claim: None,
            presented: None,
            presented_anchor: None,
            anchors: SharedAnchors::default(),
            witness: HeadWitness::new(),
            witnessed: None,
            certified: None,
            own: None,
            pending_heads: Vec::new(),
            pending_reports: Vec::new(),
            unlogged: Vec::new(),
            next_head_audit_ms: HEAD_AUDIT_INTERVAL_MS,
            head_audit_turn: usize::from(me.0[0]),
            renew_requested_for: None,
            status: AgentStatus {
                phase: persisted,
                ..AgentStatus::default()
            },
        }
    }

    /// Proves the presented certificate against these anchor heads (the
    /// node's chain service keeps them).
    pub fn with_anchors(mut self, anchors: SharedAnchors) -> TrustAgent<E> {
        self.anchors = anchors;
        self
    }

    pub fn phase(&self) -> Phase {
        self.machine.phase()
    }

    /// Renews the current certificate through the chain at the next tick,
    /// whatever its renewal point (an operator's `hm cert renew`); returns
    /// the fingerprint to be replaced.
    pub fn renew_now(&mut self) -> Result<Hash, &'static str> {
        if self.machine.phase() < Phase::PartialFederation {
            return Err(
                "renewal goes through the chain, from bootstrap phase 2 on; wait until the node reaches it",
            );
        }
        let current = self
            .status
            .certificate
            .ok_or("this node holds no certificate yet; it will get one without being asked")?;
        self.renew_requested_for = Some(current);
        Ok(current)
    }

    pub fn status(&self) -> AgentStatus {
        with_phases(&self.status, &self.machine)
    }

    fn request(&mut self, now: AgentNow) -> SignedRequest {
        sign_request(&self.key, &self.kem_key, &self.entropy, &self.settings, now)
    }

    /// The authority to ask on attempt `attempt`: spread by node id so the
    /// authorities share the load, skipping this node itself.
    fn authority_for(&self, attempt: u64, trust: &TrustApp) -> Option<usize> {
        let others: Vec<usize> = (0..self.authorities.len())
            .filter(|index| self.authorities[*index].0 != self.me)
            .filter(|index| !trust.is_authority_revoked(&self.authorities[*index].0))
            .collect();
        if others.is_empty() {
            return None;
        }
        let base = u64::from_le_bytes(self.me.0[..8].try_into().unwrap_or([0; 8]));
        let pick = base.wrapping_add(attempt) % others.len() as u64;
        Some(others[pick as usize])
    }

    /// One step: observe the committed state, move phases, and decide what
    /// to ask, submit and present.
    pub fn tick(
        &mut self,
        now: AgentNow,
        trust: &TrustApp,
        chain_live: bool,
        monitor: &mut Monitor,
    ) -> Vec<TrustAction> {
        let mut actions = Vec::new();
        // Every head the node commits must extend the ones before it.
        let head = trust.log_head();
        if self.witnessed != Some(head) {
            self.witnessed = Some(head);
            if self.witness.observe_with_log(head, trust.log()).is_err() {
                self.status.head_inconsistencies += 1;
            }
        }
        // Heads an authority signed beyond our log are judged once the log
        // has grown that far (a false one is reported by the monitor).
        let before = self.pending_heads.len();
        self.pending_heads.retain(|head| {
            matches!(
                monitor.check_tree_head(head, trust),
                HeadVerdict::Ahead { .. }
            )
        });
        if self.pending_heads.len() < before {
            self.status.false_heads = monitor.stats().false_heads;
        }
        // Certificates an authority never logged become reports once the
        // grace has passed (the monitor checks and queues them).
        self.unlogged.retain(|certificate| {
            if now.wall_ms <= certificate.not_before_ms.saturating_add(UNLOGGED_GRACE_MS) {
                return true;
            }
            let _ = monitor.check_presented(certificate, None, trust, now.wall_ms);
            false
        });
        // Decoding our certificate and name record from the state is the
        // costly part of a tick: done again only when a block changed the
        // state, our certificate expired, or the recheck interval passed.
        let state_root = trust.state_root();
        let own = match self.own.take() {
            Some(own) if own.still_valid(state_root, now.wall_ms) => own,
            _ => self.read_own(trust, state_root, now.wall_ms),
        };
        let current = own.current.clone();
        let own_name_resolves = own.name_resolves;
        self.own = Some(own);
        let chain_issued = current
            .as_ref()
            .is_some_and(|(certificate, _)| matches!(certificate.issuer, Issuer::Chain { .. }));
        let ca_proven = matches!(&self.ca, CaProgress::Issued(issued) if issued.proven);
        // Which validators the chain certified changes with the state (a new
        // head) and with time (expiry): recomputed on either, not per tick.
        let certified_stake = match self.certified {
            Some((at_head, at_ms, stake))
                if at_head == head && now.mono_ms < at_ms.saturating_add(CERTIFIED_RECHECK_MS) =>
            {
                stake
            }
            _ => {
                let stake: u64 = trust
                    .certified_validators(now.wall_ms)
                    .iter()
                    .filter_map(|id| self.validators.index_of(id))
                    .filter_map(|index| self.validators.get(index))
                    .map(|validator| validator.stake)
                    .sum();
                self.certified = Some((head, now.mono_ms, stake));
                stake
            }
        };
        let conditions = Conditions {
            certificate_logged: current.is_some() || ca_proven,
            certificate_committed: current.is_some(),
            chain_live,
            chain_issued_certificate: chain_issued,
            validators_certified: self.validators.is_quorum(certified_stake),
            own_name_resolves,
        };
        for transition in self.machine.observe(now.mono_ms, &conditions) {
            let Transition { to, .. } = transition;
            actions.push(TrustAction::PersistPhase(to));
        }
        let phase = self.machine.phase();
        self.status.missing = conditions.missing_for(phase);
        let policy = phase.policy();

        // Without a usable certificate: before phase 2 from an authority,
        // from phase 2 on from the chain (an authority's certificate may
        // also have been revoked with its authority since).
        if current.is_none() && self.presentation.asks_at(now.mono_ms) {
            if policy.renew_through_chain {
                self.request_from_chain(now, &mut actions);
            } else if policy.request_ca_certificate {
                self.drive_authority(now, trust, &mut actions);
            }
        }

        // Present the best certificate held (built only when it changed).
        let best = match (&current, &self.ca) {
            (Some((certificate, _)), _) => Some((certificate, true)),
            (None, CaProgress::Issued(issued))
                if issued.proven || self.presentation.presents_unproven() =>
            {
                Some((&issued.certificate, false))
            }
            _ => None,
        };
        if let Some((certificate, logged)) = best {
            let fingerprint = certificate.fingerprint();
            // Proven against an anchor once one holds it, so light nodes
            // can check it (`crate::anchors`); refreshed when that anchor
            // grows old.
            let log_index = current
                .as_ref()
                .filter(|_| logged)
                .map(|(_, status)| status.log_index);
            let anchor = log_index.and_then(|index| {
                let anchors = lock(&self.anchors);
                anchors.anchor_for(index, anchors.chain_height())
            });
            let fresh = self.presented != Some(fingerprint);
            let refresh = anchor.is_some_and(|(height, _)| {
                AnchorHeads::should_refresh(self.presented_anchor, height)
            });
            let keep = fresh
                && crate::anchors::keep_presenting(
                    self.presented_anchor.is_some(),
                    anchor.is_some(),
                    || {
                        self.presented.is_some_and(|presented| {
                            trust
                                .certificate(&presented)
                                .is_some_and(|(certificate, standing)| {
                                    standing.is_usable() && certificate.is_current(now.wall_ms)
                                })
                        })
                    },
                );
            if (fresh || refresh) && !keep {
                let inclusion = match (anchor, log_index) {
                    (Some((_, head)), Some(index)) => {
                        trust.log().inclusion_proof(index, head.size).ok()
                    }
                    _ => logged
                        .then(|| trust.inclusion_proof(&fingerprint))
                        .flatten(),
                };
                let bundle = CertificateBundle {
                    inclusion,
                    certificate: certificate.clone(),
                };
                self.presented = Some(fingerprint);
                self.presented_anchor = anchor.map(|(height, _)| height);
                self.status.certificate = Some(fingerprint);
                self.status.chain_issued = matches!(certificate.issuer, Issuer::Chain { .. });
                actions.push(TrustAction::Present(bundle.encode()));
            }
        }

        if let Some((certificate, _)) = &current {
            // Register or update the node's name.
            if policy.register_name
                && let Some(name) = self.settings.name.clone()
            {
                if own_name_resolves {
                    self.claim = None;
                } else {
                    self.drive_name(now, trust, &name, certificate, &mut actions);
                }
            }
            // Renew through the chain: replace an authority's certificate,
            // and any certificate past its renewal point.
            if policy.renew_through_chain {
                let lifetime = certificate
                    .not_after_ms
                    .saturating_sub(certificate.not_before_ms);
                let renew_at = certificate.not_before_ms.saturating_add(
                    lifetime.saturating_mul(self.settings.renew_at_per_mille) / 1_000,
                );
                // Hashing the certificate only when an operator asked.
                let asked = match self.renew_requested_for {
                    Some(asked) if asked == certificate.fingerprint() => true,
                    Some(_) => {
                        self.renew_requested_for = None;
                        false
                    }
                    None => false,
                };
                let due = !chain_issued || now.wall_ms >= renew_at || asked;
                if due {
                    self.request_from_chain(now, &mut actions);
                } else {
                    self.renewal = None;
                }
            }
        }

        // CT auditing: a node with a certificate asks one authority in turn
        // for its signed head; the monitor reports a false one.
        if current.is_some()
            && now.mono_ms >= self.next_head_audit_ms
            && !self.authorities.is_empty()
        {
            self.next_head_audit_ms = now.mono_ms.saturating_add(HEAD_AUDIT_INTERVAL_MS);
            self.head_audit_turn = self.head_audit_turn.wrapping_add(1);
            let (authority, addr) = self.authorities[self.head_audit_turn % self.authorities.len()];
            if authority != self.me {
                actions.push(TrustAction::AskHead { authority, addr });
            }
        }

        // Reports: new ones from the monitor, and again those whose
        // finding has not reached the chain.
        let validators = &self.validators;
        self.pending_reports
            .retain(|(report, offender, _, attempts)| {
                !trust.has_finding(offender, report.kind()) && *attempts < REPORT_ATTEMPTS_MAX
            });
        for (report, _, submitted_ms, attempts) in &mut self.pending_reports {
            if now.mono_ms >= submitted_ms.saturating_add(TX_RETRY_MS) {
                *submitted_ms = now.mono_ms;
                *attempts += 1;
                actions.push(TrustAction::Submit(Box::new(TrustTx::Report(
                    report.clone(),
                ))));
            }
        }
        for tx in monitor.take_reports(REPORTS_PER_TICK_MAX) {
            self.status.reports_submitted += 1;
            if let TrustTx::Report(report) = &tx
                && let Some(offender) = offender_of(report, validators)
                && self.pending_reports.len() < PENDING_REPORTS_MAX
            {
                self.pending_reports
                    .push((report.clone(), offender, now.mono_ms, 1));
            }
            actions.push(TrustAction::Submit(Box::new(tx)));
        }
        actions
    }

    /// Reads this node's current certificate and whether its name
    /// resolves to it from the committed state.
    fn read_own(&self, trust: &TrustApp, state_root: Hash, now_ms: u64) -> OwnView {
        let current = trust.current_certificate(&self.me, now_ms);
        let name_resolves = match (&self.settings.name, &current) {
            (Some(name), Some(_)) => trust
                .record(name)
                .is_some_and(|record| self.record_is_ours(trust, &record, now_ms)),
            // A node without a name has nothing to resolve.
            (None, Some(_)) => true,
            _ => false,
        };
        OwnView {
            state_root,
            read_at_ms: now_ms,
            current,
            name_resolves,
        }
    }

    fn drive_authority(&mut self, now: AgentNow, trust: &TrustApp, actions: &mut Vec<TrustAction>) {
        match &mut self.ca {
            CaProgress::Idle => {}
            CaProgress::Asking { since_ms, .. } => {
                if now.mono_ms < since_ms.saturating_add(CA_REQUEST_TIMEOUT_MS) {
                    return;
                }
                self.attempts += 1;
                self.ca = CaProgress::Idle;
            }
            CaProgress::Issued(issued) => {
                let fingerprint = issued.certificate.fingerprint();
                match trust.certificate(&fingerprint) {
                    // Logged and usable: `current` takes over next tick.
                    Some((_, status)) if status.is_usable() => return,
                    // Logged, but it or its authority was revoked since:
                    // start over with another authority.
                    Some(_) => {
                        self.attempts += 1;
                        self.ca = CaProgress::Idle;
                    }
                    None => {}
                }
                let CaProgress::Issued(issued) = &mut self.ca else {
                    // Given up above: ask the next authority below.
                    return self.ask_authority(now, trust, actions);
                };
                if now.mono_ms >= issued.issued_at_ms.saturating_add(CA_LOG_DEADLINE_MS) {
                    // The authority did not log it: another authority is
                    // asked, and the certificate itself is kept as evidence
                    // (reported once the grace has passed).
                    if self.unlogged.len() < UNLOGGED_KEPT_MAX {
                        self.unlogged.push(issued.certificate.clone());
                    }
                    self.attempts += 1;
                    self.ca = CaProgress::Idle;
                } else {
                    if !issued.proven
                        && issued.proof_asked_at_ms.is_none_or(|at| {
                            now.mono_ms >= at.saturating_add(PROOF_POLL_INTERVAL_MS)
                        })
                    {
                        issued.proof_asked_at_ms = Some(now.mono_ms);
                        let (authority, addr) = self.authorities[issued.authority];
                        actions.push(TrustAction::AskProof {
                            authority,
                            addr,
                            fingerprint,
                        });
                    }
                    return;
                }
            }
        }
        self.ask_authority(now, trust, actions);
    }

    /// Asks the chain for a certificate (`IssueCertificate`), at most once
    /// per retry interval.
    fn request_from_chain(&mut self, now: AgentNow, actions: &mut Vec<TrustAction>) {
        let request = match self
            .renewal
            .as_mut()
            .map(|flight| flight.resend(now.mono_ms))
        {
            Some(Resend::Wait) => return,
            Some(Resend::Same(request)) => request,
            Some(Resend::Exhausted) | None => {
                let request = self.request(now);
                self.renewal = Some(InFlight::new(request.clone(), now.mono_ms));
                request
            }
        };
        self.status.renewals += 1;
        actions.push(TrustAction::Submit(Box::new(TrustTx::IssueCertificate(
            request,
        ))));
    }

    /// Sends a new certificate request to the next authority.
    fn ask_authority(&mut self, now: AgentNow, trust: &TrustApp, actions: &mut Vec<TrustAction>) {
        let Some(authority) = self.authority_for(self.attempts, trust) else {
            return;
        };
        let request = self.request(now);
        let (id, addr) = self.authorities[authority];
        self.ca = CaProgress::Asking {
            authority,
            since_ms: now.mono_ms,
        };
        self.status.certificate_requests += 1;
        actions.push(TrustAction::AskCertificate {
            authority: id,
            addr,
            request: Box::new(request),
        });
    }

    fn drive_name(
        &mut self,
        now: AgentNow,
        trust: &TrustApp,
        name: &DnsName,
        certificate: &Certificate,
        actions: &mut Vec<TrustAction>,
    ) {
        let fingerprint = certificate.fingerprint();
        let record = trust.record(name);
        // A record stays good while it points at any usable certificate of
        // ours: renewals need no name update until that one expires.
        let up_to_date = record
            .as_ref()
            .is_some_and(|record| self.record_is_ours(trust, record, now.wall_ms));
        if up_to_date {
            self.claim = None;
            return;
        }
        if record
            .as_ref()
            .is_some_and(|record| record.owner != self.me)
        {
            return; // someone else holds the name: nothing to claim
        }
        let sequence = record.map_or(1, |record| record.sequence + 1);
        let claimant = Claimant {
            key: &self.key,
            entropy: &self.entropy,
            addr: *self.listen.ip(),
        };
        let Some(signed) = next_claim(&mut self.claim, &claimant, name, fingerprint, sequence, now)
        else {
            return;
        };
        self.status.name_claims += 1;
        actions.push(TrustAction::Submit(Box::new(TrustTx::RegisterName(signed))));
    }

    /// Whether `record` names this node at its address, backed by one of
    /// its certificates that is usable and current.
    fn record_is_ours(
        &self,
        trust: &TrustApp,
        record: &hm_trustchain::dns::DnsRecord,
        now_ms: u64,
    ) -> bool {
        record.owner == self.me
            && record.addrs == [*self.listen.ip()]
            && trust
                .certificate(&record.certificate)
                .is_some_and(|(certificate, status)| {
                    certificate.subject() == self.me
                        && status.is_usable()
                        && certificate.is_current(now_ms)
                })
    }

    /// An authority answered a certificate request.
    pub fn on_certificate(
        &mut self,
        now: AgentNow,
        authority: Hash,
        answer: Result<Certificate, String>,
    ) {
        let CaProgress::Asking {
            authority: asked, ..
        } = self.ca
        else {
            return;
        };
        if self.authorities[asked].0 != authority {
            return;
        }
        match answer {
            Ok(certificate)
                if certificate.subject() == self.me
                    && certificate.authority() == Some(authority) =>
            {
                self.ca = CaProgress::Issued(Box::new(AuthorityCertificate {
                    certificate,
                    authority: asked,
                    issued_at_ms: now.mono_ms,
                    proven: false,
                    proof_asked_at_ms: None,
                }));
            }
            Ok(_) | Err(_) => {
                // Wrong certificate or a refusal: the next authority.
                self.attempts += 1;
                self.ca = CaProgress::Idle;
            }
        }
    }

    /// An authority answered a head request (auditing).
    pub fn on_head(
        &mut self,
        authority: Hash,
        answer: Result<SignedTreeHead, String>,
        trust: &TrustApp,
        monitor: &mut Monitor,
    ) {
        let Ok(head) = answer else {
            return;
        };
        if head.signer != authority || head.verify(trust.authorities()).is_err() {
            return;
        }
        match monitor.check_tree_head(&head, trust) {
            HeadVerdict::Refuse(_) => self.status.false_heads += 1,
            HeadVerdict::Ahead { .. } if self.pending_heads.len() < PENDING_HEADS_MAX => {
                self.pending_heads.push(head);
            }
            HeadVerdict::Ahead { .. } | HeadVerdict::Consistent => {}
        }
    }

    /// An authority answered a proof request with an inclusion proof and a
    /// tree head it signed: PKI trust that the certificate is logged.
    pub fn on_proof(
        &mut self,
        authority: Hash,
        answer: Result<(InclusionProof, SignedTreeHead), String>,
        trust: &TrustApp,
        monitor: &mut Monitor,
    ) {
        let CaProgress::Issued(issued) = &mut self.ca else {
            return;
        };
        if self.authorities[issued.authority].0 != authority {
            return;
        }
        let Ok((proof, head)) = answer else {
            return; // not logged yet: poll again
        };
        if head.signer != authority || head.verify(trust.authorities()).is_err() {
            return;
        }
        // A head our own log contradicts is false: reported, not trusted;
        // one beyond our log is judged later.
        match monitor.check_tree_head(&head, trust) {
            HeadVerdict::Refuse(_) => {
                self.status.false_heads += 1;
                return;
            }
            HeadVerdict::Ahead { .. } if self.pending_heads.len() < PENDING_HEADS_MAX => {
                self.pending_heads.push(head.clone());
            }
            HeadVerdict::Ahead { .. } | HeadVerdict::Consistent => {}
        }
        if proof.verify(&issued.certificate, &head.head).is_ok() {
            issued.proven = true;
        }
    }
}

/// `status` with the phase machine's phase and entry times.
pub(crate) fn with_phases(status: &AgentStatus, machine: &PhaseMachine) -> AgentStatus {
    let mut status = status.clone();
    status.phase = machine.phase();
    for phase in Phase::ALL {
        status.phase_entered_ms[usize::from(phase.number())] = machine.entered_at_ms(phase);
    }
    status
}

/// A fresh certificate request for this node (a new nonce each time).
pub(crate) fn sign_request<E: Entropy>(
    key: &SigningKey,
    kem_key: &KemPublicKey,
    entropy: &E,
    settings: &TrustSettings,
    now: AgentNow,
) -> SignedRequest {
    let request = CertificateRequest {
        subject_key: key.verifying_key(),
        kem_key: kem_key.clone(),
        dns_names: settings.name.iter().cloned().collect(),
        validity_ms: settings.certificate_validity_ms,
        requested_at_ms: now.wall_ms,
        nonce: entropy.next_u64(),
    };
    SignedRequest::sign(request, key, entropy)
}

/// A name claim in flight: its sequence, the certificate it names and the
/// signed claim.
pub(crate) type ClaimInFlight = Option<(u64, Hash, InFlight<SignedNameClaim>)>;

/// Who claims a name, and where it is reached.
pub(crate) struct Claimant<'a, E: Entropy> {
    pub(crate) key: &'a SigningKey,
    pub(crate) entropy: &'a E,
    pub(crate) addr: std::net::Ipv6Addr,
}

/// The claim to submit now for `name` at `sequence` naming `fingerprint`:
/// the one in flight again when its resend is due, a fresh one when the
/// certificate changed (replaced at once) or it was sent too often; `None`
/// while the one in flight waits.
pub(crate) fn next_claim<E: Entropy>(
    claim: &mut ClaimInFlight,
    claimant: &Claimant<'_, E>,
    name: &DnsName,
    fingerprint: Hash,
    sequence: u64,
    now: AgentNow,
) -> Option<SignedNameClaim> {
    let resend = match claim {
        Some((claimed, named, flight)) if *claimed == sequence && *named == fingerprint => {
            flight.resend(now.mono_ms)
        }
        _ => Resend::Exhausted,
    };
    match resend {
        Resend::Wait => None,
        Resend::Same(signed) => Some(signed),
        Resend::Exhausted => {
            let request = NameClaim {
                name: name.clone(),
                owner_key: claimant.key.verifying_key(),
                addrs: vec![claimant.addr],
                certificate: fingerprint,
                sequence,
            };
            let signed = SignedNameClaim::sign(request, claimant.key, claimant.entropy);
            *claim = Some((
                sequence,
                fingerprint,
                InFlight::new(signed.clone(), now.mono_ms),
            ));
            Some(signed)
        }
    }
}

/// Who a report accuses (its finding is recorded against them).
/// What the committed state said of this node when last read.
#[derive(Debug, Clone)]
struct OwnView {
    state_root: Hash,
    read_at_ms: u64,
    current: Option<(Certificate, hm_trustchain::app::CertStatus)>,
    name_resolves: bool,
}

impl OwnView {
    /// Still what the state says: the same state, our certificate not
    /// expired, and read less than [`OWN_STATE_RECHECK_MS`] ago.
    fn still_valid(&self, state_root: Hash, now_ms: u64) -> bool {
        self.state_root == state_root
            && now_ms < self.read_at_ms.saturating_add(OWN_STATE_RECHECK_MS)
            && now_ms >= self.read_at_ms
            && self
                .current
                .as_ref()
                .is_none_or(|(certificate, _)| now_ms < certificate.not_after_ms)
    }
}

/// A transaction submitted to the chain and not committed yet: resent
/// unchanged every [`TX_RETRY_MS`], replaced after [`TX_SENDS_MAX`] sends
/// (it may have been rejected, or have gone stale).
#[derive(Debug, Clone)]
pub(crate) struct InFlight<T> {
    tx: T,
    sent_at_ms: u64,
    sends: u32,
}

/// What to do with an [`InFlight`] transaction now.
pub(crate) enum Resend<T> {
    /// Sent recently: wait for the chain.
    Wait,
    /// Send the same transaction again.
    Same(T),
    /// Sent too often: build a fresh one.
    Exhausted,
}

impl<T: Clone> InFlight<T> {
    pub(crate) fn new(tx: T, now_ms: u64) -> InFlight<T> {
        InFlight {
            tx,
            sent_at_ms: now_ms,
            sends: 1,
        }
    }

    pub(crate) fn tx(&self) -> &T {
        &self.tx
    }

    pub(crate) fn resend(&mut self, now_ms: u64) -> Resend<T> {
        if now_ms < self.sent_at_ms.saturating_add(TX_RETRY_MS) {
            return Resend::Wait;
        }
        if self.sends >= TX_SENDS_MAX {
            return Resend::Exhausted;
        }
        self.sent_at_ms = now_ms;
        self.sends += 1;
        Resend::Same(self.tx.clone())
    }
}

fn offender_of(report: &hm_trustchain::tx::Report, validators: &ValidatorSet) -> Option<Hash> {
    use hm_trustchain::tx::Report;
    match report {
        Report::ForgedCertificate(certificate) | Report::UnloggedCertificate(certificate) => {
            certificate.authority()
        }
        Report::FalseTreeHead(head) => Some(head.signer),
        Report::Equivocation(evidence) => validators.get(evidence.validator()).map(|v| v.id),
    }
}

#[cfg(test)]
mod tests;
