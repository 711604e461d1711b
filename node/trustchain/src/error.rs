//! Typed reasons, so callers (the monitor, hm-node, tests, tools) tell
//! refusals apart without matching text:
//!
//! - [`RuleError`]: why TrustApp refuses a transaction.
//! - [`NotLogged`], [`Lapsed`], [`CertificateFault`] and [`HeadFault`]: why
//!   the monitor ([`crate::monitor`]) does not accept a presented
//!   certificate or a signed tree head; they are what its `Verdict` and
//!   `HeadVerdict` carry.
//!
//! One variant per refusal, with the values that decided it. The kernel
//! records a rejection as text (`TxError::Rejected`, its generic
//! application boundary), and hm-node shows a refused peer the monitor's
//! reason as the close reason; that text is these types' `Display`, so the
//! wording here is what a client or peer reads, and says what to do next
//! where it can act.
//!
//! A leaf: it names types of the crate but no rule, so every module may
//! use it.

use hm_kernel::block::{BlockError, Height};
use hm_kernel::validators::ValidatorIndex;
use hm_wire::{Hash, WireError};

use crate::cert::CertError;
use crate::dns::DnsError;
use crate::log::LogError;
use crate::name::DnsName;
use crate::tx::FindingKind;

/// Why a TrustApp rule refused a transaction (or a report would be).
///
/// Limits travel as fields (`max`, `grace_ms`) rather than being named
/// here, so this module depends on no rule and the text shows the limit
/// that applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    // ---------------------------------------------------------- names
    // (`check_names`, `register_name`, and `check_tx` before execution)
    /// The chain only certifies and registers names under its zone.
    #[error("{name} is not under the zone {zone}")]
    NotInZone { name: DnsName, zone: DnsName },

    /// A certificate names a name registered to another subject; only the
    /// owner may be certified for it.
    #[error("{name} is owned by {owner}, not by the subject {subject}")]
    NameOwnedByOther {
        name: DnsName,
        owner: Hash,
        subject: Hash,
    },

    // ---------------------------------------------------------- check_loggable
    // (both ways into the log: `LogCertificate` and `IssueCertificate`)
    /// The log holds each certificate once.
    #[error("certificate {fingerprint} is already logged at index {log_index}")]
    AlreadyLogged { fingerprint: Hash, log_index: u64 },

    /// A certificate a finding put on the revocation list (forged or
    /// unlogged) never enters the log.
    #[error("certificate {fingerprint} is on the revocation list")]
    Blocklisted { fingerprint: Hash },

    /// One certificate per request, so a signed request cannot be replayed
    /// into a second certificate.
    #[error(
        "request {request_id} is already certified by log entry {log_index}; ask again with a new nonce"
    )]
    RequestAlreadyCertified { request_id: Hash, log_index: u64 },

    /// The subject reached `CERTIFICATES_PER_SUBJECT_MAX`; the log is
    /// append-only, so one key must not grow it without bound.
    #[error(
        "subject {subject} already has {count} logged certificates, the most one key may have ({max}); use a new key"
    )]
    SubjectCertificatesFull { subject: Hash, count: u64, max: u64 },

    /// The Merkle log holds no more leaves.
    #[error("the certificate log is full at {size} entries")]
    LogFull { size: u64 },

    /// A signature of the certificate or its request does not verify
    /// (`LogCertificate`: request and issuer; `IssueCertificate`: the
    /// request's proof of possession).
    #[error(transparent)]
    Certificate(#[from] CertError),

    // ---------------------------------------------------------- log_certificate
    /// Chain certificates are made by executing `IssueCertificate`, at the
    /// block's height and time; they are not submitted ready-made.
    #[error(
        "a chain-issued certificate enters the log only through IssueCertificate; submit its signed request as IssueCertificate"
    )]
    ChainIssuedLogged,

    /// A revoked authority's certificates are no longer trusted.
    #[error(
        "authority {authority} was revoked at height {height} and can no longer issue; have another authority or the chain certify the request"
    )]
    AuthorityRevoked { authority: Hash, height: Height },

    /// Expired certificates are not logged.
    #[error(
        "the certificate expired at {not_after_ms} ms, before the block's {block_ms} ms; request a new one"
    )]
    Expired { not_after_ms: u64, block_ms: u64 },

    // ---------------------------------------------------------- revoke
    // (also `register_name`: the claim's certificate must be logged)
    /// Only logged certificates can be revoked or back a name.
    #[error("certificate {fingerprint} is not in the log")]
    NotLogged { fingerprint: Hash },

    /// Only the certificate's subject revokes it.
    #[error("certificate {fingerprint} belongs to {subject}, not to the revoking key {signer}")]
    NotRevokersCertificate {
        fingerprint: Hash,
        subject: Hash,
        signer: Hash,
    },

    /// Revocation happens once.
    #[error("certificate {fingerprint} is already revoked")]
    AlreadyRevoked { fingerprint: Hash },

    /// The revocation carries the subject key but not its signature.
    #[error("the revocation of {fingerprint} is not signed by its subject key")]
    RevocationUnsigned {
        fingerprint: Hash,
        #[source]
        source: WireError,
    },

    // ---------------------------------------------------------- register_name
    /// A registered name stays with its first owner.
    #[error("{name} is owned by {owner}; names are first come, first served")]
    NameTaken { name: DnsName, owner: Hash },

    /// Updates need a higher sequence, so an old claim cannot be replayed.
    #[error(
        "an update of {name} needs a sequence above {sequence}, got {got}; sign the claim again with a higher sequence"
    )]
    StaleSequence {
        name: DnsName,
        sequence: u64,
        got: u64,
    },

    /// The owner reached `NAMES_PER_OWNER_MAX` (bounds the per-owner scan).
    #[error("{owner} already holds {max} names, the most one owner may")]
    OwnerNamesFull { owner: Hash, max: usize },

    /// The claim's certificate is another subject's.
    #[error("certificate {fingerprint} belongs to {subject}, not to the owner {owner}")]
    NotOwnersCertificate {
        fingerprint: Hash,
        subject: Hash,
        owner: Hash,
    },

    /// The claim's certificate, or its issuer, is revoked.
    #[error("certificate {fingerprint} or its issuer is revoked; claim with a usable certificate")]
    CertificateUnusable { fingerprint: Hash },

    /// The claim's certificate is not valid at the block's time.
    #[error(
        "certificate {fingerprint} is valid {not_before_ms}..{not_after_ms} ms, not at the block's {block_ms} ms"
    )]
    CertificateNotCurrent {
        fingerprint: Hash,
        not_before_ms: u64,
        not_after_ms: u64,
        block_ms: u64,
    },

    /// The claim is malformed or not signed by its owner key.
    #[error(transparent)]
    Claim(#[from] DnsError),

    // ---------------------------------------------------------- unlogged_offender
    // (`Report::UnloggedCertificate`, and `TrustApp::check_unlogged`)
    /// The chain logs what it issues, so only authorities can fail to log.
    #[error("a chain-issued certificate is never unlogged")]
    ChainIssuedUnlogged,

    /// Without valid signatures the certificate proves nothing against its
    /// authority (a forged request is reported as `ForgedCertificate`).
    #[error("not a valid authority certificate: {source}")]
    NotAuthorityCertificate {
        #[source]
        source: CertError,
    },

    /// The certificate is in the log after all.
    #[error("certificate {fingerprint} is logged at index {log_index}")]
    UnloggedIsLogged { fingerprint: Hash, log_index: u64 },

    /// The authority still has time to log it.
    #[error(
        "certificate {fingerprint} (not before {not_before_ms} ms) is still within the {grace_ms} ms logging grace at {now_ms} ms; report it again after the grace"
    )]
    WithinGrace {
        fingerprint: Hash,
        not_before_ms: u64,
        grace_ms: u64,
        now_ms: u64,
    },

    /// The subject had the request certified another way, which may have
    /// kept the authority's certificate out: not the authority's doing.
    #[error("its request {request_id} was certified otherwise, which may have kept it out")]
    RequestCertifiedOtherwise { request_id: Hash },

    /// A name of the certificate kept it out of the log (a name rule
    /// failed: [`RuleError::NotInZone`] or [`RuleError::NameOwnedByOther`]).
    #[error("it could not be logged: {source}")]
    Unloggable {
        #[source]
        source: Box<RuleError>,
    },

    // ---------------------------------------------------------- report
    /// A chain-issued certificate has no authority a finding could revoke.
    #[error("a chain-issued certificate has no authority to blame")]
    NoAuthorityToBlame,

    /// The equivocation evidence names an index outside the validator set.
    #[error("validator {index} is not in the set")]
    UnknownValidator { index: ValidatorIndex },

    /// One finding per offender and kind: the first already revoked it.
    #[error("{offender} already has a {kind:?} finding; one per offender and kind")]
    DuplicateFinding { offender: Hash, kind: FindingKind },

    /// A forgery report must carry the authority's valid signature, or
    /// nothing is attributable to it.
    #[error("the authority signature does not hold: {source}")]
    IssuerSignatureInvalid {
        #[source]
        source: CertError,
    },

    /// The subject signed the request and no name was stolen: no forgery.
    #[error(
        "the certificate is not forged: its subject signed the request and it binds no name another subject owned"
    )]
    NotForged,

    /// The reported tree head is not signed by the authority it names.
    #[error(transparent)]
    TreeHead(#[from] LogError),

    /// The head is of a log longer than ours, so it cannot be compared yet.
    #[error(
        "the head has size {size}, beyond the log's {log_size}: it cannot be judged yet; report it again once the log has {size} entries"
    )]
    HeadBeyondLog { size: u64, log_size: u64 },

    /// The head matches the log: signing it is no offence.
    #[error("the head of size {size} is the log's: it is true")]
    TrueHead { size: u64 },

    /// The equivocation evidence does not verify against the chain.
    #[error("the evidence does not hold: {source}")]
    EvidenceInvalid {
        #[source]
        source: BlockError,
    },
}

// ============================================================== the monitor
// (`Monitor::check_presented` and `Monitor::check_tree_head`)

/// A certificate absent from the committed log, and nothing proves it bad:
/// the judging node may simply be behind (`Verdict::Pending`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("certificate {fingerprint} is not in the log")]
pub struct NotLogged {
    pub fingerprint: Hash,
}

/// A genuine, logged certificate outside its validity window at `now_ms`
/// (expired, or not yet valid): no offence of its holder, who renews it
/// through the chain, but it certifies nothing now (`Verdict::Lapsed`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "certificate {fingerprint} is valid {not_before_ms}..{not_after_ms} ms, not at {now_ms} ms"
)]
pub struct Lapsed {
    pub fingerprint: Hash,
    pub not_before_ms: u64,
    pub not_after_ms: u64,
    pub now_ms: u64,
}

/// Why the monitor refuses a presented certificate as provably bad
/// (`Verdict::Refuse`), in the order it checks. The two forgeries queue a
/// `ForgedCertificate` report against the authority.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertificateFault {
    /// The certificate breaks a structural limit
    /// (`Certificate::check_limits`).
    #[error("malformed certificate: {source}")]
    Malformed {
        #[source]
        source: CertError,
    },

    /// An authority-issued certificate whose issuer is not an authority or
    /// whose issuer signature does not verify: nothing is attributable to
    /// anyone, so nothing is reported.
    #[error(transparent)]
    IssuerSignature(CertError),

    /// The authority's signature holds but the subject did not sign the
    /// request (no proof of possession): the authority forged it.
    #[error("forged by authority {authority}: {source}")]
    ForgedRequest {
        authority: Hash,
        #[source]
        source: CertError,
    },

    /// The authority certified `name`, which another subject owned: a
    /// forgery too (`TrustApp::stolen_name`).
    #[error("forged by authority {authority}: it binds {name}, owned by another subject")]
    StolenName { authority: Hash, name: DnsName },

    /// A chain-issued certificate whose request its subject did not sign.
    #[error(transparent)]
    RequestSignature(CertError),

    /// Not in the log, and a finding put it on the revocation list (forged
    /// or unlogged): refused everywhere.
    #[error("certificate {fingerprint} is on the revocation list")]
    Blocklisted { fingerprint: Hash },

    /// The log has no head at the presented inclusion proof's size. The
    /// proof is only checked when its size is within the log, so this is
    /// not expected; it is refused rather than trusted.
    #[error(transparent)]
    ProofHead(LogError),

    /// The presented inclusion proof does not verify against the log's
    /// head at its size.
    #[error("the inclusion proof does not verify: {source}")]
    InclusionProof {
        #[source]
        source: LogError,
    },

    /// Its subject revoked it, or a finding did.
    #[error("certificate {fingerprint} is revoked")]
    Revoked { fingerprint: Hash },

    /// Logged, but the authority that issued it has been revoked.
    #[error("the issuer of certificate {fingerprint} is revoked")]
    IssuerRevoked { fingerprint: Hash },
}

/// Why the monitor refuses a signed tree head (`HeadVerdict::Refuse`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadFault {
    /// Not signed by an authority, or the signature does not verify
    /// (`SignedTreeHead::verify`): nothing is attributable, nothing
    /// reported.
    #[error(transparent)]
    Signature(LogError),

    /// `authority` signed `signed_root` for a log of `size` entries, but
    /// the committed log's root at that size is `log_root`: a false head,
    /// reported as `FalseTreeHead`.
    #[error(
        "authority {authority} signed root {signed_root} for size {size}; the log's root there is {log_root}"
    )]
    FalseRoot {
        authority: Hash,
        size: u64,
        signed_root: Hash,
        log_root: Hash,
    },
}
