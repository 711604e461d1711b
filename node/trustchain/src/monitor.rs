//! The Byzantine monitor every node runs: it judges the certificates and
//! tree heads a node is shown against the committed TrustChain state, and
//! when a refusal proves that an authority (or validator) misbehaved, it
//! queues the matching [`Report`] for the node to submit.
//!
//! Sans-I/O: inputs are values and `now_ms`; the output is a verdict and,
//! through [`Monitor::take_reports`], transactions. Memory is bounded: the
//! queue holds at most `reports_queue_max` reports (more are dropped and
//! counted), and the set of offences already reported holds at most
//! `reported_memory_max` entries (when full, one entry is forgotten; a
//! repeated report is harmless, the chain keeps one finding per offender
//! and kind).

use std::collections::{BTreeSet, VecDeque};

use hm_kernel::block::Evidence;
use hm_kernel::validators::ValidatorIndex;
use hm_wire::Hash;

use crate::app::TrustApp;
use crate::cert::{Certificate, Issuer};
use crate::error::{CertificateFault, HeadFault, Lapsed, NotLogged};
use crate::log::{InclusionProof, SignedTreeHead};
use crate::tx::{FindingKind, Report, TrustTx};

/// Default bound of the report queue: reports are rare (one per offender
/// and kind), and a node submits them every block.
pub const REPORTS_QUEUE_MAX: usize = 64;

/// Default bound of the set of offences already reported.
pub const REPORTED_MEMORY_MAX: usize = 1_024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MonitorConfig {
    /// Most reports waiting to be taken.
    pub reports_queue_max: usize,
    /// Most offences remembered as already reported.
    pub reported_memory_max: usize,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        MonitorConfig {
            reports_queue_max: REPORTS_QUEUE_MAX,
            reported_memory_max: REPORTED_MEMORY_MAX,
        }
    }
}

/// Whether to trust a presented certificate. The reasons are typed
/// (`crate::error`); their `Display` is the sentence a peer is shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    /// Not (yet) in this node's committed log, and nothing proves it bad:
    /// the judging node may simply be behind. Not accepted either.
    Pending(NotLogged),
    /// Genuine and logged, but outside its validity window (expired, or
    /// not yet valid): nothing wrong with the holder, who renews it through
    /// the chain — but it certifies nothing now.
    Lapsed(Lapsed),
    /// Refused as provably bad, and why.
    Refuse(CertificateFault),
}

impl Verdict {
    pub fn is_accept(&self) -> bool {
        matches!(self, Verdict::Accept)
    }
}

/// Whether a genuine certificate is in the committed log, and current.
enum Logged {
    Current,
    Lapsed,
    No,
}

/// What a signed tree head says about the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadVerdict {
    /// The log had exactly this head.
    Consistent,
    /// The head is beyond our committed log: we cannot judge it yet.
    Ahead { log_size: u64 },
    /// Refused: unsigned, unknown signer, or false (then reported).
    Refuse(HeadFault),
}

/// Counters for the status report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MonitorStats {
    pub presented: u64,
    pub accepted: u64,
    pub refused: u64,
    pub heads_checked: u64,
    pub false_heads: u64,
    pub evidence_seen: u64,
    pub reports_queued: u64,
    /// Reports not queued because the offence was already reported (by us
    /// or on chain).
    pub reports_duplicate: u64,
    /// Reports dropped because the queue was full.
    pub reports_dropped: u64,
    pub reports_taken: u64,
}

/// Who an offence is by: authorities by node id; validators, for evidence,
/// by their index in the genesis set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Offender {
    Node(Hash),
    Validator(ValidatorIndex),
}

/// The detector.
#[derive(Debug, Clone)]
pub struct Monitor {
    config: MonitorConfig,
    queue: VecDeque<TrustTx>,
    reported: BTreeSet<(FindingKind, Offender)>,
    stats: MonitorStats,
}

impl Monitor {
    pub fn new(config: MonitorConfig) -> Monitor {
        Monitor {
            config,
            queue: VecDeque::new(),
            reported: BTreeSet::new(),
            stats: MonitorStats::default(),
        }
    }

    pub fn stats(&self) -> MonitorStats {
        self.stats
    }

    /// Reports waiting to be taken.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Judges a certificate a peer presented. Accepts only one whose
    /// signatures verify, that is in `app`'s log (a node never accepts a
    /// certificate absent from the log), not revoked, issued by an
    /// authority that is not revoked, and current at `now_ms`. A given
    /// inclusion proof must verify against `app`'s log when it is within
    /// it. Refusals that prove an authority forged a certificate, or did
    /// not log one past the grace, queue the report.
    pub fn check_presented(
        &mut self,
        certificate: &Certificate,
        proof: Option<&InclusionProof>,
        app: &TrustApp,
        now_ms: u64,
    ) -> Verdict {
        self.stats.presented += 1;
        let verdict = self.judge(certificate, proof, app, now_ms);
        match verdict {
            Verdict::Accept => self.stats.accepted += 1,
            Verdict::Pending(_) | Verdict::Lapsed(_) | Verdict::Refuse(_) => {
                self.stats.refused += 1
            }
        }
        verdict
    }

    fn judge(
        &mut self,
        certificate: &Certificate,
        proof: Option<&InclusionProof>,
        app: &TrustApp,
        now_ms: u64,
    ) -> Verdict {
        match self.judge_inner(certificate, proof, app, now_ms) {
            Ok(Logged::Current) => Verdict::Accept,
            Ok(Logged::Lapsed) => Verdict::Lapsed(Lapsed {
                fingerprint: certificate.fingerprint(),
                not_before_ms: certificate.not_before_ms,
                not_after_ms: certificate.not_after_ms,
                now_ms,
            }),
            Ok(Logged::No) => Verdict::Pending(NotLogged {
                fingerprint: certificate.fingerprint(),
            }),
            Err(fault) => Verdict::Refuse(fault),
        }
    }

    fn judge_inner(
        &mut self,
        certificate: &Certificate,
        proof: Option<&InclusionProof>,
        app: &TrustApp,
        now_ms: u64,
    ) -> Result<Logged, CertificateFault> {
        certificate
            .check_limits()
            .map_err(|source| CertificateFault::Malformed { source })?;
        let fingerprint = certificate.fingerprint();
        match certificate.issuer {
            Issuer::Authority(authority) => {
                // Without the authority's signature nothing is attributable.
                certificate
                    .verify_issuer_signature(app.authorities())
                    .map_err(CertificateFault::IssuerSignature)?;
                if let Err(source) = certificate.request.verify() {
                    self.report_forged(authority, certificate, app);
                    return Err(CertificateFault::ForgedRequest { authority, source });
                }
                if let Some(name) = app.stolen_name(certificate) {
                    self.report_forged(authority, certificate, app);
                    return Err(CertificateFault::StolenName { authority, name });
                }
            }
            Issuer::Chain { .. } => {
                certificate
                    .request
                    .verify()
                    .map_err(CertificateFault::RequestSignature)?;
            }
        }
        let Some((_, status)) = app.certificate(&fingerprint) else {
            if app.is_revoked(&fingerprint) {
                return Err(CertificateFault::Blocklisted { fingerprint });
            }
            if let Some(authority) = certificate.authority()
                && app.check_unlogged(certificate, now_ms).is_ok()
            {
                self.queue_report(
                    FindingKind::UnloggedCertificate,
                    Offender::Node(authority),
                    app.has_finding(&authority, FindingKind::UnloggedCertificate),
                    Report::UnloggedCertificate(certificate.clone()),
                );
            }
            return Ok(Logged::No);
        };
        if let Some(proof) = proof
            && proof.tree_size <= app.log().len()
        {
            let head = app
                .log()
                .head_at(proof.tree_size)
                .map_err(CertificateFault::ProofHead)?;
            proof
                .verify(certificate, &head)
                .map_err(|source| CertificateFault::InclusionProof { source })?;
        }
        if status.revoked {
            return Err(CertificateFault::Revoked { fingerprint });
        }
        if status.issuer_revoked {
            return Err(CertificateFault::IssuerRevoked { fingerprint });
        }
        if !certificate.is_current(now_ms) {
            return Ok(Logged::Lapsed);
        }
        Ok(Logged::Current)
    }

    fn report_forged(&mut self, authority: Hash, certificate: &Certificate, app: &TrustApp) {
        self.queue_report(
            FindingKind::ForgedCertificate,
            Offender::Node(authority),
            app.has_finding(&authority, FindingKind::ForgedCertificate),
            Report::ForgedCertificate(certificate.clone()),
        );
    }

    /// Judges a signed tree head against `app`'s committed log; a head an
    /// authority signed that the log never had is reported.
    pub fn check_tree_head(&mut self, head: &SignedTreeHead, app: &TrustApp) -> HeadVerdict {
        self.stats.heads_checked += 1;
        if let Err(error) = head.verify(app.authorities()) {
            return HeadVerdict::Refuse(HeadFault::Signature(error));
        }
        let log = app.log();
        let size = head.head.size;
        let ours = match log.head_at(size) {
            Ok(ours) => ours,
            Err(_) => {
                return HeadVerdict::Ahead {
                    log_size: log.len(),
                };
            }
        };
        if ours.root == head.head.root {
            return HeadVerdict::Consistent;
        }
        self.stats.false_heads += 1;
        self.queue_report(
            FindingKind::FalseTreeHead,
            Offender::Node(head.signer),
            app.has_finding(&head.signer, FindingKind::FalseTreeHead),
            Report::FalseTreeHead(head.clone()),
        );
        HeadVerdict::Refuse(HeadFault::FalseRoot {
            authority: head.signer,
            size,
            signed_root: head.head.root,
            log_root: ours.root,
        })
    }

    /// Evidence the chain committed: report the equivocator to TrustChain
    /// (once per offender).
    pub fn on_committed_evidence(&mut self, evidence: &Evidence) {
        self.stats.evidence_seen += 1;
        self.queue_report(
            FindingKind::Equivocation,
            Offender::Validator(evidence.validator()),
            false,
            Report::Equivocation(evidence.clone()),
        );
    }

    /// Up to `max` queued reports, oldest first, as transactions.
    pub fn take_reports(&mut self, max: usize) -> Vec<TrustTx> {
        let count = max.min(self.queue.len());
        self.stats.reports_taken += count as u64;
        self.queue.drain(..count).collect()
    }

    fn queue_report(
        &mut self,
        kind: FindingKind,
        offender: Offender,
        on_chain: bool,
        report: Report,
    ) {
        if on_chain || self.reported.contains(&(kind, offender)) {
            self.stats.reports_duplicate += 1;
            return;
        }
        if self.queue.len() >= self.config.reports_queue_max {
            // Not remembered as reported: a later sighting may queue it.
            self.stats.reports_dropped += 1;
            return;
        }
        while self.reported.len() >= self.config.reported_memory_max.max(1) {
            self.reported.pop_first();
        }
        self.reported.insert((kind, offender));
        self.queue.push_back(TrustTx::Report(report));
        self.stats.reports_queued += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cert::CertError;
    use crate::log::{LogError, LogHead};
    use crate::testkit::{self, authority_id, run_block, subject_id, subject_key};
    use crate::tx::UNLOGGED_GRACE_MS;

    const NOW: u64 = 1_000_000;

    fn app() -> TrustApp {
        TrustApp::new(testkit::config())
    }

    fn monitor() -> Monitor {
        Monitor::new(MonitorConfig::default())
    }

    /// The fault of a refusal whose text mentions `needle` (the sentence a
    /// peer is shown); panics on any other verdict.
    #[track_caller]
    fn refused(verdict: Verdict, needle: &str) -> CertificateFault {
        match verdict {
            Verdict::Refuse(fault) => {
                let text = fault.to_string();
                assert!(
                    text.contains(needle),
                    "refused for {text:?}, expected {needle:?}"
                );
                fault
            }
            other => panic!("{other:?}, expected a refusal mentioning {needle:?}"),
        }
    }

    /// A refusal for `expected`, whose text mentions `needle`.
    #[track_caller]
    fn refused_for(verdict: Verdict, needle: &str, expected: CertificateFault) {
        assert_eq!(refused(verdict, needle), expected);
    }

    /// Absent from our log and nothing proves it bad: pending, not refused.
    #[track_caller]
    fn pending(verdict: Verdict, certificate: &Certificate) {
        let expected = NotLogged {
            fingerprint: certificate.fingerprint(),
        };
        assert!(
            expected.to_string().contains("not in the log"),
            "{expected}"
        );
        assert_eq!(verdict, Verdict::Pending(expected));
    }

    #[test]
    fn accepts_only_logged_current_usable_certificates() {
        let mut app = app();
        let mut monitor = monitor();
        let first = testkit::authority_cert(0, subject_key(0), &[], 1, 0);
        let second = testkit::authority_cert(1, subject_key(1), &[], 2, 0);
        assert_eq!(
            run_block(
                &mut app,
                &[
                    TrustTx::LogCertificate(first.clone()),
                    TrustTx::LogCertificate(second.clone())
                ],
                NOW
            ),
            vec![Ok(()), Ok(())]
        );
        let proof = app.inclusion_proof(&first.fingerprint()).expect("logged");
        assert_eq!(
            monitor.check_presented(&first, Some(&proof), &app, NOW),
            Verdict::Accept
        );
        assert_eq!(
            monitor.check_presented(&first, None, &app, NOW),
            Verdict::Accept
        );
        // A proof from an older head still verifies; a wrong one does not.
        let old = app.log().inclusion_proof(0, 1).expect("inside");
        assert_eq!(
            monitor.check_presented(&first, Some(&old), &app, NOW),
            Verdict::Accept
        );
        let wrong = app.inclusion_proof(&second.fingerprint()).expect("logged");
        let fault = refused(
            monitor.check_presented(&first, Some(&wrong), &app, NOW),
            "inclusion proof",
        );
        assert!(
            matches!(
                fault,
                CertificateFault::InclusionProof {
                    source: LogError::InclusionInvalid {
                        index: 1,
                        tree_size: 2,
                        ..
                    }
                }
            ),
            "{fault:?}"
        );
        // A proof from a head we do not have yet cannot be checked; the log decides.
        let ahead = InclusionProof {
            leaf_index: 0,
            tree_size: 5,
            path: vec![],
        };
        assert_eq!(
            monitor.check_presented(&first, Some(&ahead), &app, NOW),
            Verdict::Accept
        );
        // Time: a lapsed certificate is not accepted, but it is no offence.
        let lapsed = Lapsed {
            fingerprint: first.fingerprint(),
            not_before_ms: first.not_before_ms,
            not_after_ms: first.not_after_ms,
            now_ms: testkit::VALIDITY_MS,
        };
        assert!(lapsed.to_string().contains("not at"), "{lapsed}");
        assert_eq!(
            monitor.check_presented(&first, None, &app, testkit::VALIDITY_MS),
            Verdict::Lapsed(lapsed)
        );
        // Revoked by its subject.
        assert_eq!(
            run_block(
                &mut app,
                &[TrustTx::Revoke(testkit::revocation(
                    1,
                    second.fingerprint()
                ))],
                NOW
            ),
            vec![Ok(())]
        );
        refused_for(
            monitor.check_presented(&second, None, &app, NOW),
            "is revoked",
            CertificateFault::Revoked {
                fingerprint: second.fingerprint(),
            },
        );
        // Not signed by an authority: refused, nothing to report.
        let outsider = Certificate::issue_by_authority(
            testkit::request(subject_key(2), &[], 3),
            subject_key(3),
            0,
            &testkit::entropy(3),
        );
        refused_for(
            monitor.check_presented(&outsider, None, &app, NOW),
            "not one of the authorities",
            CertificateFault::IssuerSignature(CertError::UnknownAuthority {
                issuer: subject_id(3),
            }),
        );
        let mut resigned = first.clone();
        resigned.issuer_signature = second.issuer_signature.clone();
        refused_for(
            monitor.check_presented(&resigned, None, &app, NOW),
            "does not verify",
            CertificateFault::IssuerSignature(CertError::BadIssuerSignature {
                issuer: authority_id(0),
            }),
        );
        assert_eq!(monitor.queued(), 0);
        let stats = monitor.stats();
        assert_eq!((stats.presented, stats.accepted, stats.refused), (9, 4, 5));
    }

    #[test]
    fn unlogged_certificates_are_refused_and_reported_after_the_grace() {
        let mut app = app();
        let mut monitor = monitor();
        let hidden = testkit::authority_cert(2, subject_key(0), &[], 1, NOW);
        pending(
            monitor.check_presented(&hidden, None, &app, NOW + UNLOGGED_GRACE_MS),
            &hidden,
        );
        assert_eq!(
            monitor.queued(),
            0,
            "within the grace: the authority may still log it"
        );
        let later = NOW + UNLOGGED_GRACE_MS + 1;
        pending(monitor.check_presented(&hidden, None, &app, later), &hidden);
        pending(monitor.check_presented(&hidden, None, &app, later), &hidden);
        assert_eq!(monitor.stats().reports_duplicate, 1);
        let reports = monitor.take_reports(10);
        assert_eq!(
            reports,
            vec![TrustTx::Report(Report::UnloggedCertificate(hidden.clone()))]
        );
        // The chain agrees.
        assert_eq!(run_block(&mut app, &reports, later), vec![Ok(())]);
        assert!(app.is_authority_revoked(&authority_id(2)));
        refused_for(
            monitor.check_presented(&hidden, None, &app, later),
            "revocation list",
            CertificateFault::Blocklisted {
                fingerprint: hidden.fingerprint(),
            },
        );
    }

    #[test]
    fn forgeries_are_refused_and_reported_once() {
        let mut app = app();
        let mut monitor = monitor();
        let forged = testkit::forged_cert(1, 0, 1, 0);
        refused_for(
            monitor.check_presented(&forged, None, &app, NOW),
            "forged by authority",
            CertificateFault::ForgedRequest {
                authority: authority_id(1),
                source: CertError::BadRequestSignature {
                    subject: subject_id(0),
                },
            },
        );
        let reports = monitor.take_reports(1);
        assert_eq!(
            reports,
            vec![TrustTx::Report(Report::ForgedCertificate(forged.clone()))]
        );
        assert_eq!(run_block(&mut app, &reports, NOW), vec![Ok(())]);
        // Another forgery of the same authority: already on chain.
        let other = testkit::forged_cert(1, 2, 2, 0);
        refused_for(
            monitor.check_presented(&other, None, &app, NOW),
            "forged",
            CertificateFault::ForgedRequest {
                authority: authority_id(1),
                source: CertError::BadRequestSignature {
                    subject: subject_id(2),
                },
            },
        );
        assert_eq!(monitor.queued(), 0);
        // Certificates of the revoked authority are refused.
        let earlier = testkit::authority_cert(1, subject_key(3), &[], 3, 0);
        let mut fresh = app_with(&[TrustTx::LogCertificate(earlier.clone())]);
        assert_eq!(fresh.check_presented_in(&earlier), Verdict::Accept);
        assert_eq!(
            run_block(
                &mut fresh.app,
                &[TrustTx::Report(Report::ForgedCertificate(
                    testkit::forged_cert(1, 0, 4, 0)
                ))],
                NOW
            ),
            vec![Ok(())]
        );
        refused_for(
            fresh.check_presented_in(&earlier),
            "issuer",
            CertificateFault::IssuerRevoked {
                fingerprint: earlier.fingerprint(),
            },
        );
    }

    #[test]
    fn a_certificate_for_a_name_owned_by_another_is_a_forgery() {
        let owner_cert = testkit::authority_cert(0, subject_key(1), &[], 1, 0);
        let mut fixture = app_with(&[TrustTx::LogCertificate(owner_cert.clone())]);
        let claim = testkit::claim(1, "bank.hm", owner_cert.fingerprint(), 1, 1);
        assert_eq!(
            run_block(&mut fixture.app, &[TrustTx::RegisterName(claim)], NOW),
            vec![Ok(())]
        );
        let stolen = testkit::authority_cert(
            3,
            subject_key(0),
            &["bank.hm"],
            2,
            NOW + UNLOGGED_GRACE_MS + 1,
        );
        refused_for(
            fixture.check_presented_in(&stolen),
            "owned by another subject",
            CertificateFault::StolenName {
                authority: authority_id(3),
                name: testkit::name("bank.hm"),
            },
        );
        let reports = fixture.monitor.take_reports(8);
        assert_eq!(reports.len(), 1);
        assert_eq!(
            run_block(&mut fixture.app, &reports, NOW + 2 * UNLOGGED_GRACE_MS),
            vec![Ok(())]
        );
        assert!(fixture.app.is_authority_revoked(&authority_id(3)));
    }

    #[test]
    fn tree_heads_are_judged_and_false_ones_reported() {
        let certificate = testkit::authority_cert(0, subject_key(0), &[], 1, 0);
        let mut fixture = app_with(&[TrustTx::LogCertificate(certificate)]);
        let monitor = &mut fixture.monitor;
        let head = fixture.app.log().head();
        assert_eq!(
            monitor.check_tree_head(&testkit::tree_head(1, head), &fixture.app),
            HeadVerdict::Consistent
        );
        let ahead = LogHead {
            size: 4,
            root: hm_wire::Hash([1; 32]),
        };
        assert_eq!(
            monitor.check_tree_head(&testkit::tree_head(1, ahead), &fixture.app),
            HeadVerdict::Ahead { log_size: 1 }
        );
        let mut unknown = testkit::tree_head(1, head);
        unknown.signer = subject_id(0);
        assert_eq!(
            monitor.check_tree_head(&unknown, &fixture.app),
            HeadVerdict::Refuse(HeadFault::Signature(LogError::UnknownSigner {
                signer: subject_id(0)
            }))
        );
        let mut resigned = testkit::tree_head(1, head);
        resigned.signature = testkit::tree_head(2, head).signature;
        assert_eq!(
            monitor.check_tree_head(&resigned, &fixture.app),
            HeadVerdict::Refuse(HeadFault::Signature(LogError::BadSignature {
                signer: authority_id(1)
            }))
        );
        assert_eq!(monitor.queued(), 0);
        let false_head = testkit::tree_head(
            2,
            LogHead {
                size: 1,
                root: hm_wire::Hash([2; 32]),
            },
        );
        let false_root = HeadFault::FalseRoot {
            authority: authority_id(2),
            size: 1,
            signed_root: hm_wire::Hash([2; 32]),
            log_root: head.root,
        };
        assert!(
            false_root.to_string().contains("signed root"),
            "{false_root}"
        );
        for _ in 0..2 {
            assert_eq!(
                monitor.check_tree_head(&false_head, &fixture.app),
                HeadVerdict::Refuse(false_root.clone())
            );
        }
        assert_eq!(monitor.stats().false_heads, 2);
        let reports = monitor.take_reports(8);
        assert_eq!(
            reports,
            vec![TrustTx::Report(Report::FalseTreeHead(false_head))]
        );
        assert_eq!(run_block(&mut fixture.app, &reports, NOW), vec![Ok(())]);
        assert!(fixture.app.is_authority_revoked(&authority_id(2)));
    }

    #[test]
    fn malformed_and_unsigned_chain_certificates_are_refused_unreported() {
        let app = app();
        let mut monitor = monitor();
        let mut inverted = testkit::authority_cert(0, subject_key(0), &[], 1, 0);
        inverted.not_after_ms = inverted.not_before_ms;
        refused_for(
            monitor.check_presented(&inverted, None, &app, NOW),
            "malformed certificate",
            CertificateFault::Malformed {
                source: CertError::Window {
                    not_before_ms: 0,
                    not_after_ms: 0,
                    validity_ms: testkit::VALIDITY_MS,
                },
            },
        );
        // The chain never issues over a request its subject did not sign;
        // such a certificate is made up, and there is no authority to blame.
        let unsigned = testkit::forged_cert(0, 1, 2, 0).request;
        let made_up = Certificate::issue_by_chain(unsigned, 1, 0);
        refused_for(
            monitor.check_presented(&made_up, None, &app, NOW),
            "not signed by its subject key",
            CertificateFault::RequestSignature(CertError::BadRequestSignature {
                subject: subject_id(1),
            }),
        );
        assert_eq!(monitor.queued(), 0);
        assert_eq!(monitor.stats().refused, 2);
    }

    /// The reasons read as the strings the monitor built before they were
    /// typed: peers are shown them as close reasons.
    #[test]
    fn reasons_keep_their_wording() {
        let fingerprint = hm_wire::Hash([7; 32]);
        let authority = authority_id(0);
        let cert_error = CertError::BadRequestSignature {
            subject: subject_id(0),
        };
        let log_error = LogError::BeyondLog {
            size: 3,
            log_size: 2,
        };
        let name = testkit::name("bank.hm");
        let cases: Vec<(String, String)> = vec![
            (
                NotLogged { fingerprint }.to_string(),
                format!("certificate {fingerprint} is not in the log"),
            ),
            (
                Lapsed {
                    fingerprint,
                    not_before_ms: 1,
                    not_after_ms: 2,
                    now_ms: 3,
                }
                .to_string(),
                format!("certificate {fingerprint} is valid 1..2 ms, not at 3 ms"),
            ),
            (
                CertificateFault::Malformed {
                    source: cert_error.clone(),
                }
                .to_string(),
                format!("malformed certificate: {cert_error}"),
            ),
            (
                CertificateFault::IssuerSignature(cert_error.clone()).to_string(),
                cert_error.to_string(),
            ),
            (
                CertificateFault::ForgedRequest {
                    authority,
                    source: cert_error.clone(),
                }
                .to_string(),
                format!("forged by authority {authority}: {cert_error}"),
            ),
            (
                CertificateFault::StolenName {
                    authority,
                    name: name.clone(),
                }
                .to_string(),
                format!(
                    "forged by authority {authority}: it binds {name}, owned by another subject"
                ),
            ),
            (
                CertificateFault::RequestSignature(cert_error.clone()).to_string(),
                cert_error.to_string(),
            ),
            (
                CertificateFault::Blocklisted { fingerprint }.to_string(),
                format!("certificate {fingerprint} is on the revocation list"),
            ),
            (
                CertificateFault::ProofHead(log_error.clone()).to_string(),
                log_error.to_string(),
            ),
            (
                CertificateFault::InclusionProof {
                    source: log_error.clone(),
                }
                .to_string(),
                format!("the inclusion proof does not verify: {log_error}"),
            ),
            (
                CertificateFault::Revoked { fingerprint }.to_string(),
                format!("certificate {fingerprint} is revoked"),
            ),
            (
                CertificateFault::IssuerRevoked { fingerprint }.to_string(),
                format!("the issuer of certificate {fingerprint} is revoked"),
            ),
            (
                HeadFault::Signature(log_error.clone()).to_string(),
                log_error.to_string(),
            ),
            (
                HeadFault::FalseRoot {
                    authority,
                    size: 4,
                    signed_root: fingerprint,
                    log_root: hm_wire::Hash([8; 32]),
                }
                .to_string(),
                format!(
                    "authority {authority} signed root {fingerprint} for size 4; the log's root there is {}",
                    hm_wire::Hash([8; 32])
                ),
            ),
        ];
        for (typed, before) in cases {
            assert_eq!(typed, before);
        }
        // Wrapped errors stay reachable as the source.
        let forged = CertificateFault::ForgedRequest {
            authority,
            source: cert_error.clone(),
        };
        assert_eq!(
            std::error::Error::source(&forged).map(ToString::to_string),
            Some(cert_error.to_string())
        );
    }

    #[test]
    fn committed_evidence_is_reported_once_per_validator() {
        let mut app = app();
        let mut monitor = monitor();
        monitor.on_committed_evidence(&testkit::equivocation(0, 5));
        monitor.on_committed_evidence(&testkit::equivocation(0, 6));
        monitor.on_committed_evidence(&testkit::equivocation(1, 5));
        assert_eq!(monitor.queued(), 2);
        let first = monitor.take_reports(1);
        assert_eq!(monitor.queued(), 1);
        let second = monitor.take_reports(5);
        assert_eq!(monitor.queued(), 0);
        let reports: Vec<TrustTx> = first.into_iter().chain(second).collect();
        assert_eq!(run_block(&mut app, &reports, NOW), vec![Ok(()), Ok(())]);
        assert_eq!(app.findings(), 2);
        let stats = monitor.stats();
        assert_eq!(
            (
                stats.evidence_seen,
                stats.reports_queued,
                stats.reports_duplicate,
                stats.reports_taken
            ),
            (3, 2, 1, 2)
        );
    }

    #[test]
    fn queue_and_memory_are_bounded() {
        let mut monitor = Monitor::new(MonitorConfig {
            reports_queue_max: 2,
            reported_memory_max: 2,
        });
        for validator in 0..4 {
            monitor.on_committed_evidence(&testkit::equivocation(validator, 5));
        }
        assert_eq!(monitor.queued(), 2);
        assert_eq!(monitor.stats().reports_dropped, 2);
        assert_eq!(monitor.take_reports(usize::MAX).len(), 2);
        // Dropped reports were not remembered: they queue when seen again.
        monitor.on_committed_evidence(&testkit::equivocation(2, 5));
        assert_eq!(monitor.queued(), 1);
        // The memory holds two offences; the oldest-in-order is forgotten.
        assert!(monitor.reported.len() <= 2);
        monitor.on_committed_evidence(&testkit::equivocation(3, 5));
        assert!(monitor.reported.len() <= 2);
    }

    /// An app with `txs` committed and a fresh monitor.
    struct Fixture {
        app: TrustApp,
        monitor: Monitor,
    }

    impl Fixture {
        fn check_presented_in(&mut self, certificate: &Certificate) -> Verdict {
            self.monitor
                .check_presented(certificate, None, &self.app, NOW)
        }
    }

    fn app_with(txs: &[TrustTx]) -> Fixture {
        let mut app = app();
        let results = run_block(&mut app, txs, NOW);
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        Fixture {
            app,
            monitor: monitor(),
        }
    }
}
