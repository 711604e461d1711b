//! The light node's core (`NodeRole::Light`, sans-I/O): follows the chain
//! by headers and climbs the bootstrap phases on proven answers only.
//!
//! A light node stores no blocks. It starts a [`LightClient`] from the
//! chain's first header, verified against the genesis validators; polls a
//! full node for the head every [`HEAD_POLL_MS`] and verifies each anchor
//! header as the chain passes it (`crate::anchors`), which keeps the chain
//! live in its eyes and gives it log heads to check peers' certificates
//! against. Everything it needs of the state it asks full nodes for with
//! proofs ([`ProvenQuery`]), several keys at one height:
//!
//! * **phase 0 → 1**: like a replica, a certificate from a genesis
//!   authority and its inclusion proof under a head the authority signed;
//! * **1 → 2**: the certificate's standing (`cert/`, `revoked-subject/`,
//!   `revoked-authority/`) proven usable in a header at most
//!   `chain_live_window_ms` old;
//! * **2 → 3**: a certificate the chain issued (its `request/` entry names
//!   the log index, the `log/` entry is the certificate, then its
//!   standing), its own name's record proven to point at it, and validators
//!   holding more than 2/3 of the stake proven to hold chain-issued
//!   certificates (a full node hints which, the proofs decide).
//!
//! An answer that fails its proof is refused and counted by reason, and the
//! next call goes to another full node (the shell turns over them). Two
//! validly certified conflicting headers freeze the client; the evidence is
//! kept for the shell to hand to full nodes.
//!
//! Owns: the calls to make and what their answers mean. Must not know:
//! connections, which full node is asked (the shell turns over them),
//! clocks (times are passed in) and disks (it asks the shell to persist).

use std::collections::BTreeMap;
use std::net::SocketAddrV6;
use std::sync::Arc;

use hm_env::Entropy;
use hm_kernel::block::{Height, LogHead};
use hm_kernel::light::{LightClient, LightError, Misbehaviour, TrustParams, TrustRoot};
use hm_kernel::validators::ValidatorSet;
use hm_trustchain::cert::{Authorities, Certificate, Issuer, SignedRequest};
use hm_trustchain::dns::DnsRecord;
use hm_trustchain::log::{InclusionProof, SignedTreeHead};
use hm_trustchain::name::DnsName;
use hm_trustchain::proven::{self as facts, ProvenCertificate};
use hm_trustchain::tx::TrustTx;
use hm_wire::{Hash, KemPublicKey, SigningKey};

use crate::anchors::{ANCHOR_BLOCKS, AnchorHeads, SharedAnchors, is_anchor};
use crate::api::{API_PROVE_KEYS_MAX, ApiRequest, ApiResponse, CertifiedHeader, ProvedEntry};
use crate::app::{MODULE_TRUST, trust_tx};
use crate::bootstrap::{Conditions, Phase, PhaseMachine, Transition};
use crate::conduct::PresentationConduct;
use crate::proven::{ProvenQuery, ProvenRefusal, Step};
use crate::status::{
    AcceptedAnswer, LIGHT_ANSWERS_SHOWN_MAX, LIGHT_HEADERS_SHOWN_MAX, LightStatus,
};
use crate::trust::{
    AgentNow, AgentStatus, CA_LOG_DEADLINE_MS, CA_REQUEST_TIMEOUT_MS, CertificateBundle,
    ClaimInFlight, Claimant, InFlight, PROOF_POLL_INTERVAL_MS, Resend, TrustSettings, next_claim,
    sign_request, with_phases,
};

/// How often the chain's head is asked for.
pub const HEAD_POLL_MS: u64 = 2_000;
/// A call not answered by then is given up (and asked again later).
pub const LIGHT_CALL_TIMEOUT_MS: u64 = 4_000;
/// Calls in flight at once.
pub const LIGHT_CALLS_IN_FLIGHT_MAX: usize = 8;
/// How often the node's own standing and name are proven again.
pub const OWN_RECHECK_MS: u64 = 2_000;
/// How often they are proven again in phase 3.
pub const OWN_RECHECK_FEDERATED_MS: u64 = 10_000;
/// How often the chain is asked whether it issued a requested certificate.
pub const ISSUED_POLL_MS: u64 = 2_000;
/// How often the validators' certificates are proven again until they hold
/// a quorum (then never: phases do not go back).
pub const VALIDATORS_RECHECK_MS: u64 = 5_000;
/// Client requests (proven resolutions) in flight beyond the agent's own.
pub const LIGHT_CLIENT_CALLS_MAX: usize = 32;
/// Names resolved the status keeps.
pub const LIGHT_NAMES_SHOWN_MAX: usize = 64;
/// Anchor headers fetched per head poll (a node that was away catches up
/// over a few polls).
pub const ANCHORS_PER_POLL_MAX: u64 = 4;
/// How far back a node that was away fetches anchors: proofs older than a
/// refresh period are not presented any more.
pub const ANCHORS_BACKFILL_BLOCKS: u64 = crate::anchors::ANCHOR_REFRESH_BLOCKS + ANCHOR_BLOCKS;
/// A light client verifies from a trusted header this long (no validator
/// set changes on chain yet; the genesis set stays trusted).
pub const LIGHT_TRUSTING_PERIOD_MS: u64 = 30 * 24 * 3_600_000;
/// How far a header's time may run ahead of the local clock.
pub const LIGHT_MAX_CLOCK_DRIFT_MS: u64 = 10_000;

/// Whom a call goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallTo {
    /// Any full node (the shell turns over them).
    FullNode,
    /// A genesis authority's API.
    Authority { id: Hash, addr: SocketAddrV6 },
}

/// What the agent asks its shell to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LightAction {
    /// Send `request` and hand the answer (or the failure) back with `call`.
    Call {
        call: u64,
        to: CallTo,
        request: ApiRequest,
    },
    /// Present these identity bytes on every connection.
    Present(Vec<u8>),
    /// The phase changed: persist it before acting on it.
    PersistPhase(Phase),
    /// The anchor heads changed: persist them (encoded).
    PersistAnchors(Vec<u8>),
    /// The answer to the client request `ticket` (see
    /// [`LightAgent::resolve`]).
    Reply { ticket: u64, answer: ApiResponse },
    /// The answer to `call` was refused (a lie, or a faulty node): ask
    /// other full nodes from now on.
    Distrust { call: u64 },
}

/// Full nodes a light node asks at a time (a few, so full nodes share the
/// light nodes and a liar is one of several).
pub const FULL_NODES_ASKED: usize = 3;

/// Full nodes a frozen light client hands its misbehaviour evidence to
/// (each pools the double signers' votes and gossips them to the
/// validators; several, so one liar cannot bury it), and the most calls it
/// spends trying.
pub const EVIDENCE_REPORTS_WANTED: u32 = FULL_NODES_ASKED as u32;
pub const EVIDENCE_REPORT_ATTEMPTS_MAX: u32 = 4 * EVIDENCE_REPORTS_WANTED;

/// Which full node to ask next: calls turn over a window of
/// [`FULL_NODES_ASKED`] full nodes, placed by the node's own id; one that
/// failed or lied moves the window past it.
#[derive(Debug, Clone)]
pub struct FullNodes {
    all: Vec<SocketAddrV6>,
    start: usize,
    turn: usize,
}

impl FullNodes {
    /// `all` must not be empty; `place` spreads light nodes over them.
    pub fn new(all: Vec<SocketAddrV6>, place: u64) -> FullNodes {
        assert!(!all.is_empty(), "a light node needs full nodes");
        let start = (place % all.len() as u64) as usize;
        FullNodes {
            all,
            start,
            turn: 0,
        }
    }

    fn window(&self) -> usize {
        FULL_NODES_ASKED.min(self.all.len())
    }

    /// The full node to send the next call to.
    pub fn pick(&mut self) -> SocketAddrV6 {
        let at = (self.start + self.turn % self.window()) % self.all.len();
        self.turn = self.turn.wrapping_add(1);
        self.all[at]
    }

    /// `addr` failed or lied: the window moves past it.
    pub fn distrust(&mut self, addr: SocketAddrV6) {
        let window: Vec<usize> = (0..self.window())
            .map(|k| (self.start + k) % self.all.len())
            .collect();
        if let Some(at) = window.into_iter().find(|at| self.all[*at] == addr) {
            self.start = (at + 1) % self.all.len();
            self.turn = 0;
        }
    }
}

/// What a call was for.
#[derive(Debug, Clone)]
enum Purpose {
    Root,
    Head,
    Anchor(Height),
    Certificate {
        authority: usize,
    },
    CaProof {
        authority: usize,
    },
    Submit,
    ValidatorHints,
    Inclusion {
        fingerprint: Hash,
        anchor: Height,
        head: LogHead,
    },
    Query(Box<ProvenQuery>, Asked),
    /// Misbehaviour evidence handed to a full node.
    Report,
}

/// What a proven query asked, to read its values.
#[derive(Debug, Clone)]
enum Asked {
    /// The standing of `certificate` (and, with a name, its record).
    Own { certificate: Box<Certificate> },
    /// Which log index the chain gave our certificate request.
    Issued { request_id: Hash },
    /// The logged certificate at `index`.
    LogEntry { index: u64 },
    /// Validators' certificates: (validator index, fingerprint) per pair
    /// of keys.
    Validators { round: u64, pairs: Vec<(u16, Hash)> },
    /// A name a client asked to resolve, answered to `ticket`.
    Resolve { name: DnsName, ticket: u64 },
}

#[derive(Debug, Clone)]
struct PendingCall {
    purpose: Purpose,
    deadline_ms: u64,
}

#[derive(Debug, Clone)]
enum CaProgress {
    Idle,
    Asking { authority: usize, since_ms: u64 },
    Issued(Box<CaIssued>),
}

#[derive(Debug, Clone)]
struct CaIssued {
    certificate: Certificate,
    authority: usize,
    issued_at_ms: u64,
    /// The authority's inclusion proof, once verified.
    inclusion: Option<InclusionProof>,
    proof_asked_at_ms: Option<u64>,
}

/// The node's own certificate as last proven.
#[derive(Debug, Clone)]
struct Own {
    certificate: Certificate,
    standing: ProvenCertificate,
    proven_at_ms: u64,
    /// The height and header the standing was proven against.
    proven_at: (Height, Hash),
}

/// The light node of one node.
pub struct LightAgent<E: Entropy> {
    me: Hash,
    key: SigningKey,
    kem_key: KemPublicKey,
    entropy: E,
    settings: TrustSettings,
    listen: SocketAddrV6,
    chain_id: Hash,
    validators: ValidatorSet,
    authorities_keys: Authorities,
    authorities: Vec<(Hash, SocketAddrV6)>,
    presentation: Arc<dyn PresentationConduct>,
    machine: PhaseMachine,
    client: Option<LightClient>,
    anchors: SharedAnchors,
    calls: BTreeMap<u64, PendingCall>,
    next_call: u64,
    /// The highest head a full node claimed (not trusted: it only says
    /// which anchors to ask for).
    head_seen: Height,
    next_head_poll_ms: u64,
    ca: CaProgress,
    ca_attempts: u64,
    own: Option<Own>,
    /// A chain-issued certificate learned but not yet proven usable.
    issued: Option<Certificate>,
    /// Our certificates proven usable, by fingerprint → not_after_ms.
    proven_own: BTreeMap<Hash, u64>,
    own_query_at_ms: Option<u64>,
    issued_polled_at_ms: Option<u64>,
    renewal: Option<InFlight<SignedRequest>>,
    claim: ClaimInFlight,
    name_record: Option<DnsRecord>,
    name_resolves: bool,
    validators_certified: bool,
    validators_round: u64,
    validators_checked_ms: Option<u64>,
    /// Stake proven chain-certified in the current round, by validator.
    certified_in_round: BTreeMap<u16, u64>,
    /// What is presented: (fingerprint, anchor height of its proof).
    presented: Option<(Hash, Option<Height>)>,
    /// Until when the presented certificate is valid (wall ms).
    presented_until_ms: u64,
    /// Calls spent handing the misbehaviour evidence to full nodes.
    evidence_report_attempts: u32,
    status: AgentStatus,
    light: LightStatus,
}

impl<E: Entropy> LightAgent<E> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        key: SigningKey,
        kem_key: KemPublicKey,
        entropy: E,
        settings: TrustSettings,
        listen: SocketAddrV6,
        chain_id: Hash,
        validators: ValidatorSet,
        authorities: Vec<(Hash, SocketAddrV6)>,
        persisted: Phase,
        anchors: SharedAnchors,
        presentation: Arc<dyn PresentationConduct>,
        now: AgentNow,
    ) -> LightAgent<E> {
        let me = key.verifying_key().fingerprint();
        let authorities = presentation.authorities(authorities);
        LightAgent {
            me,
            key,
            kem_key,
            entropy,
            settings,
            listen,
            chain_id,
            authorities_keys: Authorities::from_validators(&validators),
            validators,
            authorities,
            presentation,
            machine: PhaseMachine::new(persisted, now.mono_ms),
            client: None,
            anchors,
            calls: BTreeMap::new(),
            next_call: 0,
            head_seen: 0,
            next_head_poll_ms: 0,
            ca: CaProgress::Idle,
            ca_attempts: 0,
            own: None,
            issued: None,
            proven_own: BTreeMap::new(),
            own_query_at_ms: None,
            issued_polled_at_ms: None,
            renewal: None,
            claim: None,
            name_record: None,
            name_resolves: false,
            validators_certified: false,
            validators_round: 0,
            validators_checked_ms: None,
            certified_in_round: BTreeMap::new(),
            presented: None,
            presented_until_ms: 0,
            evidence_report_attempts: 0,
            status: AgentStatus {
                phase: persisted,
                ..AgentStatus::default()
            },
            light: LightStatus::default(),
        }
    }

    pub fn phase(&self) -> Phase {
        self.machine.phase()
    }

    /// The trust agent's view (phase, certificate, counters).
    pub fn status(&self) -> AgentStatus {
        with_phases(&self.status, &self.machine)
    }

    /// What the light client verified and refused.
    pub fn light_status(&self) -> &LightStatus {
        &self.light
    }

    /// The latest trusted header's log head.
    pub fn log_head(&self) -> Option<LogHead> {
        self.client
            .as_ref()
            .and_then(LightClient::latest)
            .map(|latest| latest.header().log_head)
    }

    /// The evidence that froze the client, for the shell to hand on.
    pub fn misbehaviour(&self) -> Option<&Misbehaviour> {
        self.client.as_ref().and_then(LightClient::misbehaviour)
    }

    fn call(
        &mut self,
        now_ms: u64,
        to: CallTo,
        request: ApiRequest,
        purpose: Purpose,
    ) -> LightAction {
        let call = self.next_call;
        self.next_call += 1;
        self.calls.insert(
            call,
            PendingCall {
                purpose,
                deadline_ms: now_ms.saturating_add(LIGHT_CALL_TIMEOUT_MS),
            },
        );
        LightAction::Call { call, to, request }
    }

    fn has_room(&self) -> bool {
        self.calls.len() < LIGHT_CALLS_IN_FLIGHT_MAX
    }

    fn in_flight(&self, matches: impl Fn(&Purpose) -> bool) -> bool {
        self.calls.values().any(|pending| matches(&pending.purpose))
    }

    fn chain_live(&self, now_ms: u64) -> bool {
        let latest = self
            .client
            .as_ref()
            .and_then(LightClient::latest)
            .map(|latest| latest.timestamp_ms());
        self.settings.chain_is_live(latest, now_ms)
    }

    /// One step: give up late calls, move phases, decide what to ask.
    pub fn tick(&mut self, now: AgentNow) -> Vec<LightAction> {
        let mut actions = Vec::new();
        self.calls
            .retain(|_, pending| now.mono_ms < pending.deadline_ms);

        // Follow the chain.
        if self.client.is_none() {
            if !self.in_flight(|p| matches!(p, Purpose::Root)) && self.has_room() {
                let request = ApiRequest::Headers { from: 1, count: 1 };
                actions.push(self.call(now.mono_ms, CallTo::FullNode, request, Purpose::Root));
            }
        } else if now.mono_ms >= self.next_head_poll_ms
            && !self.in_flight(|p| matches!(p, Purpose::Head))
            && self.has_room()
        {
            self.next_head_poll_ms = now.mono_ms.saturating_add(HEAD_POLL_MS);
            actions.push(self.call(
                now.mono_ms,
                CallTo::FullNode,
                ApiRequest::Head,
                Purpose::Head,
            ));
        }
        self.fetch_anchors(now, &mut actions);
        self.report_misbehaviour(now, &mut actions);

        // Phases.
        let own_usable = self
            .own
            .as_ref()
            .is_some_and(|own| own.standing.is_usable_at(now.wall_ms));
        let chain_issued = own_usable
            && self
                .own
                .as_ref()
                .is_some_and(|own| matches!(own.certificate.issuer, Issuer::Chain { .. }));
        let ca_proven =
            matches!(&self.ca, CaProgress::Issued(issued) if issued.inclusion.is_some());
        let conditions = Conditions {
            certificate_logged: own_usable || ca_proven,
            certificate_committed: own_usable,
            chain_live: self.chain_live(now.wall_ms),
            chain_issued_certificate: chain_issued,
            validators_certified: self.validators_certified,
            own_name_resolves: own_usable && (self.settings.name.is_none() || self.name_resolves),
        };
        for Transition { to, .. } in self.machine.observe(now.mono_ms, &conditions) {
            actions.push(LightAction::PersistPhase(to));
        }
        let phase = self.machine.phase();
        self.status.missing = conditions.missing_for(phase);
        let policy = phase.policy();

        if self.client.is_some() {
            self.prove_own(now, &mut actions);
        }
        if !own_usable && self.presentation.asks_at(now.mono_ms) {
            if policy.renew_through_chain {
                self.request_from_chain(now, &mut actions);
            } else if policy.request_ca_certificate {
                self.drive_authority(now, &mut actions);
            }
        }
        if let Some(own) = self.own.clone().filter(|_| own_usable) {
            if policy.register_name
                && let Some(name) = self.settings.name.clone()
                && !self.name_resolves
            {
                self.drive_name(now, &name, &own.certificate, &mut actions);
            }
            if policy.renew_through_chain {
                let lifetime = own
                    .standing
                    .not_after_ms
                    .saturating_sub(own.standing.not_before_ms);
                let renew_at = own.standing.not_before_ms.saturating_add(
                    lifetime.saturating_mul(self.settings.renew_at_per_mille) / 1_000,
                );
                let chain_made = matches!(own.certificate.issuer, Issuer::Chain { .. });
                if (!chain_made || now.wall_ms >= renew_at)
                    && self.presentation.asks_at(now.mono_ms)
                {
                    self.request_from_chain(now, &mut actions);
                }
            }
        }
        if phase >= Phase::PartialFederation && !self.validators_certified {
            self.check_validators(now, &mut actions);
        }
        self.present(now, &mut actions);
        actions
    }

    /// Once frozen, hands the evidence to [`EVIDENCE_REPORTS_WANTED`] full
    /// nodes, one call at a time (calls turn over the window, so each goes
    /// to another full node), within [`EVIDENCE_REPORT_ATTEMPTS_MAX`] calls.
    fn report_misbehaviour(&mut self, now: AgentNow, actions: &mut Vec<LightAction>) {
        let Some(evidence) = self.misbehaviour().map(Misbehaviour::encode) else {
            return;
        };
        if self.light.misbehaviour_reported >= EVIDENCE_REPORTS_WANTED
            || self.evidence_report_attempts >= EVIDENCE_REPORT_ATTEMPTS_MAX
            || self.in_flight(|p| matches!(p, Purpose::Report))
            || !self.has_room()
        {
            return;
        }
        self.evidence_report_attempts += 1;
        actions.push(self.call(
            now.mono_ms,
            CallTo::FullNode,
            ApiRequest::ReportMisbehaviour { evidence },
            Purpose::Report,
        ));
    }

    /// Asks for the anchor headers between the last one known and the head.
    fn fetch_anchors(&mut self, now: AgentNow, actions: &mut Vec<LightAction>) {
        if self.client.is_none() || self.head_seen < ANCHOR_BLOCKS {
            return;
        }
        let latest_known = hm_env::sync::lock(&self.anchors)
            .latest_height()
            .unwrap_or(0);
        let floor = self.head_seen.saturating_sub(ANCHORS_BACKFILL_BLOCKS);
        let mut next = latest_known.max(floor) / ANCHOR_BLOCKS * ANCHOR_BLOCKS + ANCHOR_BLOCKS;
        let mut asked = 0;
        while next <= self.head_seen && asked < ANCHORS_PER_POLL_MAX && self.has_room() {
            let height = next;
            next += ANCHOR_BLOCKS;
            if self.in_flight(|p| matches!(p, Purpose::Anchor(h) if *h == height)) {
                continue;
            }
            asked += 1;
            let request = ApiRequest::Headers {
                from: height,
                count: 1,
            };
            actions.push(self.call(
                now.mono_ms,
                CallTo::FullNode,
                request,
                Purpose::Anchor(height),
            ));
        }
    }

    /// Proves the node's current certificate (or the one just issued) and
    /// its name, every [`OWN_RECHECK_MS`].
    fn prove_own(&mut self, now: AgentNow, actions: &mut Vec<LightAction>) {
        let candidate = match (&self.issued, &self.own, &self.ca) {
            (Some(issued), _, _) => issued.clone(),
            (None, Some(own), _) => own.certificate.clone(),
            (None, None, CaProgress::Issued(issued)) if issued.inclusion.is_some() => {
                issued.certificate.clone()
            }
            _ => return,
        };
        // Climbing, the standing and the name are watched closely; in
        // phase 3 only expiry, revocation and renewals change them (a
        // renewal proves its certificate at once).
        let recheck_ms = if self.machine.phase() == Phase::FullFederation {
            OWN_RECHECK_FEDERATED_MS
        } else {
            OWN_RECHECK_MS
        };
        let due = self
            .own_query_at_ms
            .is_none_or(|at| now.mono_ms >= at.saturating_add(recheck_ms));
        if !due
            || !self.has_room()
            || self.in_flight(|p| matches!(p, Purpose::Query(_, Asked::Own { .. })))
        {
            return;
        }
        self.own_query_at_ms = Some(now.mono_ms);
        let mut keys =
            facts::certificate_keys(&candidate.fingerprint(), &self.me, &candidate.issuer);
        if let Some(name) = &self.settings.name {
            keys.push(facts::name_key(name));
        }
        let asked = Asked::Own {
            certificate: Box::new(candidate),
        };
        self.start_query(now, keys, asked, actions);
    }

    fn start_query(
        &mut self,
        now: AgentNow,
        keys: Vec<Vec<u8>>,
        asked: Asked,
        actions: &mut Vec<LightAction>,
    ) {
        debug_assert!(keys.len() <= API_PROVE_KEYS_MAX);
        let (query, step) =
            ProvenQuery::new(MODULE_TRUST, keys, self.settings.chain_live_window_ms);
        if let Step::Ask(request) = step {
            let purpose = Purpose::Query(Box::new(query), asked);
            actions.push(self.call(now.mono_ms, CallTo::FullNode, request, purpose));
        }
    }

    fn drive_authority(&mut self, now: AgentNow, actions: &mut Vec<LightAction>) {
        match &mut self.ca {
            CaProgress::Idle => {}
            CaProgress::Asking { since_ms, .. } => {
                if now.mono_ms < since_ms.saturating_add(CA_REQUEST_TIMEOUT_MS) {
                    return;
                }
                self.ca_attempts += 1;
                self.ca = CaProgress::Idle;
            }
            CaProgress::Issued(issued) => {
                if issued.inclusion.is_some() {
                    // Proven by the authority: the standing query takes
                    // over, unless the chain never shows it usable.
                    if now.mono_ms < issued.issued_at_ms.saturating_add(2 * CA_LOG_DEADLINE_MS) {
                        return;
                    }
                    self.ca_attempts += 1;
                    self.ca = CaProgress::Idle;
                    return self.ask_authority(now, actions);
                }
                if now.mono_ms >= issued.issued_at_ms.saturating_add(CA_LOG_DEADLINE_MS) {
                    self.ca_attempts += 1;
                    self.ca = CaProgress::Idle;
                } else {
                    if issued
                        .proof_asked_at_ms
                        .is_none_or(|at| now.mono_ms >= at.saturating_add(PROOF_POLL_INTERVAL_MS))
                    {
                        issued.proof_asked_at_ms = Some(now.mono_ms);
                        let authority = issued.authority;
                        let fingerprint = issued.certificate.fingerprint();
                        let (id, addr) = self.authorities[authority];
                        let request = ApiRequest::CertificateProof { fingerprint };
                        let purpose = Purpose::CaProof { authority };
                        actions.push(self.call(
                            now.mono_ms,
                            CallTo::Authority { id, addr },
                            request,
                            purpose,
                        ));
                    }
                    return;
                }
            }
        }
        self.ask_authority(now, actions);
    }

    /// Sends a new certificate request to the next authority.
    fn ask_authority(&mut self, now: AgentNow, actions: &mut Vec<LightAction>) {
        let others: Vec<usize> = (0..self.authorities.len())
            .filter(|index| self.authorities[*index].0 != self.me)
            .collect();
        if others.is_empty() {
            return;
        }
        let base = u64::from_le_bytes(self.me.0[..8].try_into().unwrap_or([0; 8]));
        let authority =
            others[(base.wrapping_add(self.ca_attempts) % others.len() as u64) as usize];
        let request = self.certificate_request(now);
        let (id, addr) = self.authorities[authority];
        self.ca = CaProgress::Asking {
            authority,
            since_ms: now.mono_ms,
        };
        self.status.certificate_requests += 1;
        actions.push(self.call(
            now.mono_ms,
            CallTo::Authority { id, addr },
            ApiRequest::RequestCertificate(Box::new(request)),
            Purpose::Certificate { authority },
        ));
    }

    fn certificate_request(&mut self, now: AgentNow) -> SignedRequest {
        sign_request(&self.key, &self.kem_key, &self.entropy, &self.settings, now)
    }

    /// Submits `IssueCertificate` (resent unchanged, replaced when stale),
    /// and polls which log index the chain gave it.
    fn request_from_chain(&mut self, now: AgentNow, actions: &mut Vec<LightAction>) {
        let resend = self
            .renewal
            .as_mut()
            .map(|flight| flight.resend(now.mono_ms));
        let request = match resend {
            Some(Resend::Wait) => None,
            Some(Resend::Same(request)) => Some(request),
            Some(Resend::Exhausted) | None => {
                let request = self.certificate_request(now);
                self.renewal = Some(InFlight::new(request.clone(), now.mono_ms));
                Some(request)
            }
        };
        if let Some(request) = request {
            self.status.renewals += 1;
            self.submit(now, TrustTx::IssueCertificate(request), actions);
        }
        // Poll for the issued certificate (the standing query proves it).
        let poll_due = self
            .issued_polled_at_ms
            .is_none_or(|at| now.mono_ms >= at.saturating_add(ISSUED_POLL_MS));
        if self.issued.is_none()
            && poll_due
            && let Some(flight) = &self.renewal
            && self.has_room()
            && !self.in_flight(|p| {
                matches!(
                    p,
                    Purpose::Query(_, Asked::Issued { .. } | Asked::LogEntry { .. })
                )
            })
        {
            let request_id = flight.tx().id();
            self.issued_polled_at_ms = Some(now.mono_ms);
            self.start_query(
                now,
                vec![facts::request_key(&request_id)],
                Asked::Issued { request_id },
                actions,
            );
        }
    }

    fn submit(&mut self, now: AgentNow, tx: TrustTx, actions: &mut Vec<LightAction>) {
        if !self.has_room() {
            return;
        }
        let request = ApiRequest::Submit(vec![trust_tx(&tx)]);
        actions.push(self.call(now.mono_ms, CallTo::FullNode, request, Purpose::Submit));
    }

    fn drive_name(
        &mut self,
        now: AgentNow,
        name: &hm_trustchain::name::DnsName,
        certificate: &Certificate,
        actions: &mut Vec<LightAction>,
    ) {
        let fingerprint = certificate.fingerprint();
        if self
            .name_record
            .as_ref()
            .is_some_and(|record| record.owner != self.me)
        {
            return; // someone else holds the name
        }
        let sequence = self
            .name_record
            .as_ref()
            .map_or(1, |record| record.sequence + 1);
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
        self.submit(now, TrustTx::RegisterName(signed), actions);
    }

    /// Asks which certificates the validators hold (a hint), every
    /// [`VALIDATORS_RECHECK_MS`] until a quorum is proven.
    fn check_validators(&mut self, now: AgentNow, actions: &mut Vec<LightAction>) {
        let due = self
            .validators_checked_ms
            .is_none_or(|at| now.mono_ms >= at.saturating_add(VALIDATORS_RECHECK_MS));
        if !due || !self.has_room() {
            return;
        }
        self.validators_checked_ms = Some(now.mono_ms);
        self.validators_round += 1;
        self.certified_in_round.clear();
        let subjects = self.validators.iter().map(|(_, v)| v.id).collect();
        actions.push(self.call(
            now.mono_ms,
            CallTo::FullNode,
            ApiRequest::CurrentCertificates { subjects },
            Purpose::ValidatorHints,
        ));
    }

    /// Presents the best certificate held, with a proof against an anchor
    /// once one holds it.
    fn present(&mut self, now: AgentNow, actions: &mut Vec<LightAction>) {
        let own = self
            .own
            .as_ref()
            .filter(|own| own.standing.is_usable_at(now.wall_ms));
        if let Some(own) = own {
            let fingerprint = own.certificate.fingerprint();
            let log_index = own.standing.log_index;
            let anchor = hm_env::sync::lock(&self.anchors).anchor_for(log_index, self.head_seen);
            let presented_anchor = match self.presented {
                Some((presented, anchor)) if presented == fingerprint => Some(anchor),
                _ => None,
            };
            // The renewal's anchored proof, once fetched, is presented by
            // `on_inclusion`: until then it is not anchored here.
            let keep = crate::anchors::keep_presenting(
                self.presented.is_some_and(|(_, anchor)| anchor.is_some()),
                false,
                || now.wall_ms < self.presented_until_ms,
            );
            if presented_anchor.is_none() && !keep {
                // A new certificate: presented at once (replicas check it
                // against their log), proven to an anchor for light nodes
                // as soon as one holds it. A renewal waits for its proof
                // while the presented certificate serves (`keep_presenting`).
                let bundle = CertificateBundle {
                    certificate: own.certificate.clone(),
                    inclusion: None,
                };
                self.mark_presented(&bundle.certificate, None);
                actions.push(LightAction::Present(bundle.encode()));
            }
            let current_anchor = presented_anchor.flatten();
            if let Some((height, head)) = anchor
                && AnchorHeads::should_refresh(current_anchor, height)
                && !self.in_flight(|p| matches!(p, Purpose::Inclusion { .. }))
                && self.has_room()
            {
                let request = ApiRequest::InclusionAt {
                    fingerprint,
                    tree_size: head.size,
                };
                let purpose = Purpose::Inclusion {
                    fingerprint,
                    anchor: height,
                    head,
                };
                actions.push(self.call(now.mono_ms, CallTo::FullNode, request, purpose));
            }
            return;
        }
        if let CaProgress::Issued(issued) = &self.ca
            && (issued.inclusion.is_some() || self.presentation.presents_unproven())
        {
            let fingerprint = issued.certificate.fingerprint();
            if self
                .presented
                .is_some_and(|(presented, _)| presented == fingerprint)
            {
                return;
            }
            let bundle = CertificateBundle {
                certificate: issued.certificate.clone(),
                inclusion: issued.inclusion.clone(),
            };
            self.mark_presented(&bundle.certificate, None);
            actions.push(LightAction::Present(bundle.encode()));
        }
    }

    /// `certificate` is what the node presents now, proven against
    /// `anchor` (if any).
    fn mark_presented(&mut self, certificate: &Certificate, anchor: Option<Height>) {
        let fingerprint = certificate.fingerprint();
        self.presented = Some((fingerprint, anchor));
        self.presented_until_ms = certificate.not_after_ms;
        self.status.certificate = Some(fingerprint);
        self.status.chain_issued = matches!(certificate.issuer, Issuer::Chain { .. });
    }

    /// Resolves `name` with a proof, for a client: the answer comes as
    /// [`LightAction::Reply`] with `ticket` (an error when the node cannot
    /// prove it now).
    pub fn resolve(&mut self, now: AgentNow, name: DnsName, ticket: u64) -> Vec<LightAction> {
        let mut actions = Vec::new();
        if self.client.is_none() {
            actions.push(LightAction::Reply {
                ticket,
                answer: ApiResponse::Error(
                    "this light node trusts no header yet (it is starting); retry shortly".into(),
                ),
            });
            return actions;
        }
        if self.calls.len() >= LIGHT_CALLS_IN_FLIGHT_MAX + LIGHT_CLIENT_CALLS_MAX {
            actions.push(LightAction::Reply {
                ticket,
                answer: ApiResponse::Error("this light node is busy; retry shortly".into()),
            });
            return actions;
        }
        let keys = vec![facts::name_key(&name)];
        self.start_query(now, keys, Asked::Resolve { name, ticket }, &mut actions);
        actions
    }

    /// A call failed (no answer, a transport error): forgotten; the flow
    /// that made it asks again on a later tick (a client's request is
    /// answered with the failure).
    pub fn on_failed(&mut self, call: u64) -> Vec<LightAction> {
        let mut actions = Vec::new();
        if let Some(pending) = self.calls.remove(&call) {
            self.forget(&pending.purpose, &mut actions);
        }
        actions
    }

    fn forget(&mut self, purpose: &Purpose, actions: &mut Vec<LightAction>) {
        match purpose {
            Purpose::Certificate { .. } => {
                self.ca_attempts += 1;
                self.ca = CaProgress::Idle;
            }
            Purpose::Query(_, Asked::Resolve { name, ticket }) => {
                actions.push(LightAction::Reply {
                    ticket: *ticket,
                    answer: ApiResponse::Error(format!(
                        "no full node answered for {name} in time; retry"
                    )),
                });
            }
            _ => {}
        }
    }

    fn refuse(&mut self, reason: &str) {
        tracing::debug!(node = %self.listen, reason, "light: an answer refused");
        self.light.answers_refused += 1;
        match self
            .light
            .refused_by_reason
            .iter_mut()
            .find(|(kind, _)| kind == reason)
        {
            Some((_, count)) => *count += 1,
            None => self.light.refused_by_reason.push((reason.to_string(), 1)),
        }
    }

    /// An answer to call `call`.
    pub fn on_answer(&mut self, now: AgentNow, call: u64, answer: ApiResponse) -> Vec<LightAction> {
        let refused_before = self.light.answers_refused;
        let mut actions = self.judge_answer(now, call, answer);
        if self.light.answers_refused > refused_before {
            actions.push(LightAction::Distrust { call });
        }
        actions
    }

    fn judge_answer(&mut self, now: AgentNow, call: u64, answer: ApiResponse) -> Vec<LightAction> {
        let mut actions = Vec::new();
        let Some(pending) = self.calls.remove(&call) else {
            return actions; // late: given up already
        };
        match pending.purpose {
            Purpose::Root => self.on_root(now, answer),
            Purpose::Head => {
                if let ApiResponse::Head { height, .. } = answer {
                    self.head_seen = self.head_seen.max(height);
                }
            }
            Purpose::Anchor(height) => self.on_anchor(now, height, answer, &mut actions),
            Purpose::Certificate { authority } => self.on_certificate(now, authority, answer),
            Purpose::CaProof { authority } => self.on_ca_proof(authority, answer),
            Purpose::Submit => {}
            Purpose::Report => match answer {
                ApiResponse::MisbehaviourTaken {
                    conflict,
                    convicted,
                    suspects,
                    ..
                } => {
                    self.light.misbehaviour_reported += 1;
                    tracing::warn!(
                        node = %self.listen,
                        %conflict,
                        convicted = convicted.len(),
                        suspects = suspects.len(),
                        "light: a full node took the evidence that froze this client"
                    );
                }
                // Valid evidence checks out on any full node of this chain:
                // one that refuses it is lying or broken.
                _ => self.refuse("misbehaviour evidence refused"),
            },
            Purpose::ValidatorHints => self.on_validator_hints(now, answer, &mut actions),
            Purpose::Inclusion {
                fingerprint,
                anchor,
                head,
            } => self.on_inclusion(fingerprint, anchor, head, answer, &mut actions),
            Purpose::Query(mut query, asked) => {
                let Some(client) = self.client.as_mut() else {
                    return actions;
                };
                let step = query.on_answer(client, &self.validators, answer, now.wall_ms);
                match step {
                    Step::Ask(request) => {
                        let purpose = Purpose::Query(query, asked);
                        actions.push(self.call(now.mono_ms, CallTo::FullNode, request, purpose));
                    }
                    Step::Done(Ok(proven)) => self.on_proven(now, asked, proven, &mut actions),
                    Step::Done(Err(refusal)) => {
                        self.on_refused(&refusal);
                        if let Asked::Resolve { name, ticket } = asked {
                            actions.push(LightAction::Reply {
                                ticket,
                                answer: ApiResponse::Error(format!(
                                    "{name} could not be proven: {refusal}"
                                )),
                            });
                        }
                    }
                }
                self.note_headers();
            }
        }
        actions
    }

    fn on_refused(&mut self, refusal: &ProvenRefusal) {
        let reason = match refusal {
            ProvenRefusal::Refused(_) => "refused",
            ProvenRefusal::Unexpected { .. } => "unexpected",
            ProvenRefusal::WrongModule { .. } => "wrong-module",
            ProvenRefusal::WrongCount { .. } => "wrong-count",
            ProvenRefusal::Stale { .. } => "stale",
            ProvenRefusal::TooOld { .. } => "too-old",
            ProvenRefusal::MissingHeader { .. } => "missing-header",
            ProvenRefusal::UnknownValidators { .. } => "unknown-validators",
            ProvenRefusal::Header { .. } => "bad-header",
            ProvenRefusal::Proof(_) => "bad-proof",
        };
        // A full node that has not committed what we ask about yet says so:
        // not a lie, not counted as one.
        if reason != "refused" {
            tracing::debug!(node = %self.listen, %refusal, "light: answer refused");
            self.refuse(reason);
        }
    }

    fn on_root(&mut self, now: AgentNow, answer: ApiResponse) {
        let ApiResponse::Headers(headers) = answer else {
            return;
        };
        let Some(CertifiedHeader { header, commit }) = headers
            .into_iter()
            .find(|certified| certified.header.height == 1)
        else {
            self.refuse("missing-header");
            return;
        };
        let root = TrustRoot {
            header,
            certificate: commit,
            validators: self.validators.clone(),
            next_validators: None,
        };
        let params = TrustParams {
            trusting_period_ms: LIGHT_TRUSTING_PERIOD_MS,
            max_clock_drift_ms: LIGHT_MAX_CLOCK_DRIFT_MS,
        };
        match LightClient::new(self.chain_id, root, params) {
            Ok(client) => {
                self.client = Some(client);
                self.note_headers();
                // Ask for the head at once.
                self.next_head_poll_ms = now.mono_ms;
            }
            Err(error) => {
                tracing::debug!(node = %self.listen, %error, "light: a full node's first header is not the genesis chain's");
                self.refuse("bad-header");
            }
        }
    }

    fn on_anchor(
        &mut self,
        now: AgentNow,
        height: Height,
        answer: ApiResponse,
        actions: &mut Vec<LightAction>,
    ) {
        let ApiResponse::Headers(headers) = answer else {
            return;
        };
        let Some(CertifiedHeader { header, commit }) = headers
            .into_iter()
            .find(|certified| certified.header.height == height)
        else {
            self.refuse("missing-header");
            return;
        };
        let Some(client) = self.client.as_mut() else {
            return;
        };
        let known = self.validators.hash();
        let next = (header.next_validators_hash == known).then_some(&self.validators);
        let verified = client.verify(&header, &commit, &self.validators, next, now.wall_ms);
        let frozen = client.misbehaviour().is_some();
        match verified {
            Ok(_) => {
                let mut anchors = hm_env::sync::lock(&self.anchors);
                anchors.insert(height, header.log_head);
                actions.push(LightAction::PersistAnchors(anchors.encode()));
            }
            Err(LightError::Frozen { .. }) => self.light.frozen = true,
            Err(error) => {
                tracing::debug!(node = %self.listen, %error, height, "light: anchor header refused");
                self.refuse("bad-header");
            }
        }
        self.light.frozen |= frozen;
        self.note_headers();
    }

    fn on_certificate(&mut self, now: AgentNow, authority: usize, answer: ApiResponse) {
        let CaProgress::Asking {
            authority: asked, ..
        } = self.ca
        else {
            return;
        };
        if asked != authority {
            return;
        }
        let id = self.authorities[authority].0;
        match answer {
            ApiResponse::Certificate(certificate)
                if certificate.subject() == self.me && certificate.authority() == Some(id) =>
            {
                self.ca = CaProgress::Issued(Box::new(CaIssued {
                    certificate: *certificate,
                    authority,
                    issued_at_ms: now.mono_ms,
                    inclusion: None,
                    proof_asked_at_ms: None,
                }));
            }
            _ => {
                self.ca_attempts += 1;
                self.ca = CaProgress::Idle;
            }
        }
    }

    fn on_ca_proof(&mut self, authority: usize, answer: ApiResponse) {
        let CaProgress::Issued(issued) = &mut self.ca else {
            return;
        };
        if issued.authority != authority {
            return;
        }
        let ApiResponse::Proof { proof, head } = answer else {
            return; // not logged yet: polled again
        };
        let head: SignedTreeHead = *head;
        if head.signer != self.authorities[authority].0
            || head.verify(&self.authorities_keys).is_err()
        {
            return;
        }
        if proof.verify(&issued.certificate, &head.head).is_ok() {
            issued.inclusion = Some(*proof);
        }
    }

    fn on_validator_hints(
        &mut self,
        now: AgentNow,
        answer: ApiResponse,
        actions: &mut Vec<LightAction>,
    ) {
        let ApiResponse::CurrentCertificates(hints) = answer else {
            return;
        };
        if hints.len() != self.validators.len() {
            self.refuse("wrong-count");
            return;
        }
        let pairs: Vec<(u16, Hash)> = hints
            .iter()
            .enumerate()
            .filter_map(|(index, hint)| Some((u16::try_from(index).ok()?, (*hint)?)))
            .collect();
        let per_query = API_PROVE_KEYS_MAX / 2;
        let round = self.validators_round;
        for chunk in pairs.chunks(per_query) {
            let mut keys = Vec::with_capacity(chunk.len() * 2);
            for (index, fingerprint) in chunk {
                let Some(validator) = self.validators.get(*index) else {
                    continue;
                };
                keys.extend(facts::certificate_keys(
                    fingerprint,
                    &validator.id,
                    &Issuer::Chain { height: 0 },
                ));
            }
            let asked = Asked::Validators {
                round,
                pairs: chunk.to_vec(),
            };
            self.start_query(now, keys, asked, actions);
        }
    }

    fn on_inclusion(
        &mut self,
        fingerprint: Hash,
        anchor: Height,
        head: LogHead,
        answer: ApiResponse,
        actions: &mut Vec<LightAction>,
    ) {
        let ApiResponse::Inclusion(proof) = answer else {
            return;
        };
        let Some(own) = &self.own else {
            return;
        };
        if own.certificate.fingerprint() != fingerprint {
            return;
        }
        if proof.verify(&own.certificate, &head).is_err() {
            self.refuse("bad-proof");
            return;
        }
        let bundle = CertificateBundle {
            certificate: own.certificate.clone(),
            inclusion: Some(*proof),
        };
        self.mark_presented(&bundle.certificate, Some(anchor));
        actions.push(LightAction::Present(bundle.encode()));
    }

    fn on_proven(
        &mut self,
        now: AgentNow,
        asked: Asked,
        proven: crate::proven::Proven,
        actions: &mut Vec<LightAction>,
    ) {
        self.record_accepted(&asked, &proven);
        let values = proven.values();
        match asked {
            Asked::Own { certificate } => {
                let fingerprint = certificate.fingerprint();
                let standing_len =
                    facts::certificate_keys(&fingerprint, &self.me, &certificate.issuer).len();
                let standing = facts::certificate_standing(
                    &fingerprint,
                    &self.me,
                    &certificate.issuer,
                    &values[..standing_len.min(values.len())],
                );
                match standing {
                    Ok(Some(standing)) if standing.is_usable_at(now.wall_ms) => {
                        self.proven_own.insert(fingerprint, standing.not_after_ms);
                        self.proven_own
                            .retain(|_, not_after| now.wall_ms < *not_after);
                        let replaces = self
                            .own
                            .as_ref()
                            .is_none_or(|own| own.certificate.fingerprint() != fingerprint);
                        if replaces {
                            // A renewal is done once its certificate is ours.
                            if matches!(certificate.issuer, Issuer::Chain { .. }) {
                                self.renewal = None;
                            }
                        }
                        if self
                            .issued
                            .as_ref()
                            .is_some_and(|issued| issued.fingerprint() == fingerprint)
                        {
                            self.issued = None;
                        }
                        self.own = Some(Own {
                            certificate: *certificate,
                            standing,
                            proven_at_ms: now.mono_ms,
                            proven_at: (proven.height, proven.header_hash),
                        });
                    }
                    Ok(standing) => {
                        // Not logged (yet), or no longer usable.
                        if self
                            .own
                            .as_ref()
                            .is_some_and(|own| own.certificate.fingerprint() == fingerprint)
                        {
                            self.own = None;
                        }
                        // An authority's certificate that is logged but
                        // unusable (the authority was revoked since): ask
                        // another authority.
                        let ca_issued = matches!(&self.ca, CaProgress::Issued(issued)
                            if issued.certificate.fingerprint() == fingerprint);
                        if standing.is_some() && ca_issued {
                            self.ca_attempts += 1;
                            self.ca = CaProgress::Idle;
                        }
                    }
                    Err(error) => {
                        tracing::debug!(%error, "light: own certificate's state is malformed");
                        self.refuse("malformed");
                    }
                }
                if let Some(name_value) = values.get(standing_len) {
                    let record = name_value
                        .as_deref()
                        .and_then(|bytes| DnsRecord::decode(bytes).ok());
                    self.name_resolves = record.as_ref().is_some_and(|record| {
                        record.owner == self.me
                            && record.addrs == [*self.listen.ip()]
                            && self.proven_own.contains_key(&record.certificate)
                    });
                    if self.name_resolves {
                        self.claim = None;
                    }
                    self.name_record = record;
                }
            }
            Asked::Issued { request_id } => {
                let index = values
                    .first()
                    .and_then(|value| value.as_deref())
                    .and_then(facts::request_log_index);
                let current = self
                    .renewal
                    .as_ref()
                    .is_some_and(|flight| flight.tx().id() == request_id);
                if let (Some(index), true) = (index, current) {
                    self.start_query(
                        now,
                        vec![facts::log_entry_key(index)],
                        Asked::LogEntry { index },
                        actions,
                    );
                }
            }
            Asked::LogEntry { .. } => {
                let certificate = values
                    .first()
                    .and_then(|value| value.as_deref())
                    .and_then(|bytes| facts::log_entry(bytes).ok());
                match certificate {
                    Some(certificate)
                        if certificate.subject() == self.me
                            && matches!(certificate.issuer, Issuer::Chain { .. }) =>
                    {
                        self.issued = Some(certificate);
                        // Prove its standing at once.
                        self.own_query_at_ms = None;
                    }
                    _ => self.refuse("malformed"),
                }
            }
            Asked::Resolve { name, ticket } => {
                let record = match values.first().cloned().flatten() {
                    None => None,
                    Some(bytes) => match DnsRecord::decode(&bytes) {
                        Ok(record) if record.name == name => Some(record),
                        _ => {
                            self.refuse("malformed");
                            actions.push(LightAction::Reply {
                                ticket,
                                answer: ApiResponse::Error(format!(
                                    "the state holds no valid record under {name}'s key; ask another full node"
                                )),
                            });
                            return;
                        }
                    },
                };
                if self.light.names_resolved.len() >= LIGHT_NAMES_SHOWN_MAX {
                    self.light.names_resolved.remove(0);
                }
                self.light.names_resolved.push((
                    name.to_string(),
                    record
                        .as_ref()
                        .and_then(|record| record.addrs.first().copied()),
                ));
                actions.push(LightAction::Reply {
                    ticket,
                    answer: ApiResponse::ProvenRecord {
                        record: record.map(Box::new),
                        height: proven.height,
                        header_hash: proven.header_hash,
                    },
                });
            }
            Asked::Validators { round, pairs } => {
                if round != self.validators_round {
                    return;
                }
                for (pair, (index, fingerprint)) in pairs.iter().enumerate() {
                    let Some(validator) = self.validators.get(*index) else {
                        continue;
                    };
                    let Some(values) = values.get(pair * 2..pair * 2 + 2) else {
                        continue;
                    };
                    let chain = Issuer::Chain { height: 0 };
                    if let Ok(Some(standing)) =
                        facts::certificate_standing(fingerprint, &validator.id, &chain, values)
                        && standing.is_usable_at(now.wall_ms)
                        && matches!(standing.issuer, Issuer::Chain { .. })
                    {
                        self.certified_in_round.insert(*index, validator.stake);
                    }
                }
                let stake: u64 = self.certified_in_round.values().sum();
                if self.validators.is_quorum(stake) {
                    self.validators_certified = true;
                }
            }
        }
    }

    /// Keeps an accepted answer (and its proof) in the status, so a checker
    /// can verify it again against the audited chain.
    fn record_accepted(&mut self, asked: &Asked, proven: &crate::proven::Proven) {
        let keys: Vec<Vec<u8>> = match asked {
            Asked::Own { certificate } => {
                let mut keys = facts::certificate_keys(
                    &certificate.fingerprint(),
                    &self.me,
                    &certificate.issuer,
                );
                if let Some(name) = &self.settings.name {
                    keys.push(facts::name_key(name));
                }
                keys
            }
            Asked::Issued { request_id } => vec![facts::request_key(request_id)],
            Asked::Resolve { name, .. } => vec![facts::name_key(name)],
            Asked::LogEntry { index } => vec![facts::log_entry_key(*index)],
            Asked::Validators { pairs, .. } => pairs
                .iter()
                .flat_map(|(index, fingerprint)| {
                    let id = self.validators.get(*index).map_or(Hash::ZERO, |v| v.id);
                    facts::certificate_keys(fingerprint, &id, &Issuer::Chain { height: 0 })
                })
                .collect(),
        };
        self.light.answers_accepted += proven.entries.len() as u64;
        for (key, ProvedEntry { value, proof }) in keys.into_iter().zip(&proven.entries) {
            if self.light.accepted.len() >= LIGHT_ANSWERS_SHOWN_MAX {
                self.light.accepted.remove(0);
            }
            self.light.accepted.push(AcceptedAnswer {
                height: proven.height,
                header_hash: proven.header_hash,
                module: MODULE_TRUST,
                key,
                value: value.clone(),
                proof: proof.clone(),
            });
        }
    }

    /// Copies the client's trusted headers into the status.
    fn note_headers(&mut self) {
        let Some(client) = &self.client else {
            return;
        };
        let Some(latest) = client.latest() else {
            return;
        };
        self.light.trusted_height = latest.height();
        self.light.trusted_hash = Some(latest.hash());
        self.light.frozen |= client.misbehaviour().is_some();
        let last_listed = self.light.verified_headers.last().map_or(0, |(h, _)| *h);
        for height in (last_listed + 1)..=latest.height() {
            if let Some(trusted) = client.trusted(height) {
                self.light.headers_verified += 1;
                if self.light.verified_headers.len() >= LIGHT_HEADERS_SHOWN_MAX {
                    self.light.verified_headers.remove(0);
                }
                self.light.verified_headers.push((height, trusted.hash()));
            }
        }
    }

    /// Whether `height` is an anchor this node has verified.
    pub fn knows_anchor(&self, height: Height) -> bool {
        is_anchor(height) && hm_env::sync::lock(&self.anchors).contains(height)
    }

    /// The node's own name, once proven to resolve to it.
    pub fn proven_name(&self) -> Option<&DnsName> {
        self.settings.name.as_ref().filter(|_| self.name_resolves)
    }

    /// The node's own certificate as last proven, for its clients (`hm
    /// cert show`); `None` before one is proven.
    pub fn own_certificate(&self) -> Option<crate::api::CertificateSummary> {
        let own = self.own.as_ref()?;
        let (authority, issued_at_height) = match own.certificate.issuer {
            Issuer::Authority(id) => (Some(id), None),
            Issuer::Chain { height } => (None, Some(height)),
        };
        Some(crate::api::CertificateSummary {
            fingerprint: own.certificate.fingerprint(),
            subject: own.certificate.subject(),
            names: own
                .certificate
                .dns_names()
                .iter()
                .map(ToString::to_string)
                .collect(),
            not_before_ms: own.certificate.not_before_ms,
            not_after_ms: own.certificate.not_after_ms,
            authority,
            issued_at_height,
            log_index: own.standing.log_index,
            revoked: own.standing.status.revoked,
            issuer_revoked: own.standing.status.issuer_revoked,
            proven_at: Some(own.proven_at),
        })
    }

    /// When the node's own certificate was last proven (monotone ms).
    pub fn own_proven_at_ms(&self) -> Option<u64> {
        self.own.as_ref().map(|own| own.proven_at_ms)
    }
}

#[cfg(test)]
#[path = "light_agent_tests.rs"]
mod tests;
