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

/// Whether to trust a presented certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    /// Not (yet) in this node's committed log, and nothing proves it bad:
    /// the judging node may simply be behind. Not accepted either.
    Pending(String),
    /// Genuine and logged, but outside its validity window (expired, or
    /// not yet valid): nothing wrong with the holder, who renews it through
    /// the chain — but it certifies nothing now.
    Lapsed(String),
    /// Refused, and why.
    Refuse(String),
}

impl Verdict {
    pub fn is_accept(&self) -> bool {
        matches!(self, Verdict::Accept)
    }
}

/// Why `judge` refused: provably bad, or merely absent from our log.
/// Whether a genuine certificate is in the committed log, and current.
enum Logged {
    Current,
    Lapsed,
    No,
}

enum Refusal {
    NotLogged(String),
    Lapsed(String),
    Bad(String),
}

/// What a signed tree head says about the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadVerdict {
    /// The log had exactly this head.
    Consistent,
    /// The head is beyond our committed log: we cannot judge it yet.
    Ahead { log_size: u64 },
    /// Refused: unsigned, unknown signer, or false (then reported).
    Refuse(String),
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
        let verdict = match self.judge(certificate, proof, app, now_ms) {
            Ok(()) => Verdict::Accept,
            Err(Refusal::NotLogged(reason)) => Verdict::Pending(reason),
            Err(Refusal::Lapsed(reason)) => Verdict::Lapsed(reason),
            Err(Refusal::Bad(reason)) => Verdict::Refuse(reason),
        };
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
    ) -> Result<(), Refusal> {
        match self.judge_inner(certificate, proof, app, now_ms) {
            Ok(Logged::Current) => Ok(()),
            Ok(Logged::Lapsed) => Err(Refusal::Lapsed(format!(
                "certificate {} is valid {}..{} ms, not at {now_ms} ms",
                certificate.fingerprint(),
                certificate.not_before_ms,
                certificate.not_after_ms
            ))),
            Ok(Logged::No) => Err(Refusal::NotLogged(format!(
                "certificate {} is not in the log",
                certificate.fingerprint()
            ))),
            Err(reason) => Err(Refusal::Bad(reason)),
        }
    }

    fn judge_inner(
        &mut self,
        certificate: &Certificate,
        proof: Option<&InclusionProof>,
        app: &TrustApp,
        now_ms: u64,
    ) -> Result<Logged, String> {
        certificate
            .check_limits()
            .map_err(|error| format!("malformed certificate: {error}"))?;
        let fingerprint = certificate.fingerprint();
        match certificate.issuer {
            Issuer::Authority(authority) => {
                // Without the authority's signature nothing is attributable.
                certificate
                    .verify_issuer_signature(app.authorities())
                    .map_err(|error| error.to_string())?;
                if let Err(error) = certificate.request.verify() {
                    self.report_forged(authority, certificate, app);
                    return Err(format!("forged by authority {authority}: {error}"));
                }
                if let Some(name) = app.stolen_name(certificate) {
                    self.report_forged(authority, certificate, app);
                    return Err(format!(
                        "forged by authority {authority}: it binds {name}, owned by another subject"
                    ));
                }
            }
            Issuer::Chain { .. } => {
                certificate
                    .request
                    .verify()
                    .map_err(|error| error.to_string())?;
            }
        }
        let Some((_, status)) = app.certificate(&fingerprint) else {
            if app.is_revoked(&fingerprint) {
                return Err(format!(
                    "certificate {fingerprint} is on the revocation list"
                ));
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
                .map_err(|error| error.to_string())?;
            proof
                .verify(certificate, &head)
                .map_err(|error| format!("the inclusion proof does not verify: {error}"))?;
        }
        if status.revoked {
            return Err(format!("certificate {fingerprint} is revoked"));
        }
        if status.issuer_revoked {
            return Err(format!(
                "the issuer of certificate {fingerprint} is revoked"
            ));
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
            return HeadVerdict::Refuse(error.to_string());
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
        HeadVerdict::Refuse(format!(
            "authority {} signed root {} for size {size}; the log's root there is {}",
            head.signer, head.head.root, ours.root
        ))
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
    use crate::log::LogHead;
    use crate::testkit::{self, authority_id, run_block, subject_key};
    use crate::tx::UNLOGGED_GRACE_MS;

    const NOW: u64 = 1_000_000;

    fn app() -> TrustApp {
        TrustApp::new(testkit::config())
    }

    fn monitor() -> Monitor {
        Monitor::new(MonitorConfig::default())
    }

    #[track_caller]
    fn refused(verdict: Verdict, needle: &str) {
        match verdict {
            Verdict::Refuse(reason) => assert!(
                reason.contains(needle),
                "refused for {reason:?}, expected {needle:?}"
            ),
            Verdict::Pending(reason) => {
                panic!("pending ({reason:?}), expected a refusal mentioning {needle:?}")
            }
            Verdict::Lapsed(reason) => {
                panic!("lapsed ({reason:?}), expected a refusal mentioning {needle:?}")
            }
            Verdict::Accept => panic!("accepted, expected a refusal mentioning {needle:?}"),
        }
    }

    /// Absent from our log and nothing proves it bad: pending, not refused.
    #[track_caller]
    fn pending(verdict: Verdict) {
        match verdict {
            Verdict::Pending(reason) => assert!(reason.contains("not in the log"), "{reason}"),
            other => panic!("expected pending, got {other:?}"),
        }
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
        refused(
            monitor.check_presented(&first, Some(&wrong), &app, NOW),
            "inclusion proof",
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
        match monitor.check_presented(&first, None, &app, testkit::VALIDITY_MS) {
            Verdict::Lapsed(reason) => assert!(reason.contains("not at"), "{reason}"),
            other => panic!("expected lapsed, got {other:?}"),
        }
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
        refused(
            monitor.check_presented(&second, None, &app, NOW),
            "is revoked",
        );
        // Not signed by an authority: refused, nothing to report.
        let outsider = Certificate::issue_by_authority(
            testkit::request(subject_key(2), &[], 3),
            subject_key(3),
            0,
            &testkit::entropy(3),
        );
        refused(
            monitor.check_presented(&outsider, None, &app, NOW),
            "not one of the authorities",
        );
        let mut resigned = first.clone();
        resigned.issuer_signature = second.issuer_signature.clone();
        refused(
            monitor.check_presented(&resigned, None, &app, NOW),
            "does not verify",
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
        pending(monitor.check_presented(&hidden, None, &app, NOW + UNLOGGED_GRACE_MS));
        assert_eq!(
            monitor.queued(),
            0,
            "within the grace: the authority may still log it"
        );
        let later = NOW + UNLOGGED_GRACE_MS + 1;
        pending(monitor.check_presented(&hidden, None, &app, later));
        pending(monitor.check_presented(&hidden, None, &app, later));
        assert_eq!(monitor.stats().reports_duplicate, 1);
        let reports = monitor.take_reports(10);
        assert_eq!(
            reports,
            vec![TrustTx::Report(Report::UnloggedCertificate(hidden.clone()))]
        );
        // The chain agrees.
        assert_eq!(run_block(&mut app, &reports, later), vec![Ok(())]);
        assert!(app.is_authority_revoked(&authority_id(2)));
        refused(
            monitor.check_presented(&hidden, None, &app, later),
            "revocation list",
        );
    }

    #[test]
    fn forgeries_are_refused_and_reported_once() {
        let mut app = app();
        let mut monitor = monitor();
        let forged = testkit::forged_cert(1, 0, 1, 0);
        refused(
            monitor.check_presented(&forged, None, &app, NOW),
            "forged by authority",
        );
        let reports = monitor.take_reports(1);
        assert_eq!(
            reports,
            vec![TrustTx::Report(Report::ForgedCertificate(forged.clone()))]
        );
        assert_eq!(run_block(&mut app, &reports, NOW), vec![Ok(())]);
        // Another forgery of the same authority: already on chain.
        let other = testkit::forged_cert(1, 2, 2, 0);
        refused(monitor.check_presented(&other, None, &app, NOW), "forged");
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
        refused(fresh.check_presented_in(&earlier), "issuer");
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
        refused(
            fixture.check_presented_in(&stolen),
            "owned by another subject",
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
        unknown.signer = testkit::subject_key(0).verifying_key().fingerprint();
        assert!(matches!(
            monitor.check_tree_head(&unknown, &fixture.app),
            HeadVerdict::Refuse(_)
        ));
        assert_eq!(monitor.queued(), 0);
        let false_head = testkit::tree_head(
            2,
            LogHead {
                size: 1,
                root: hm_wire::Hash([2; 32]),
            },
        );
        assert!(
            matches!(monitor.check_tree_head(&false_head, &fixture.app), HeadVerdict::Refuse(reason) if reason.contains("signed root"))
        );
        assert!(matches!(
            monitor.check_tree_head(&false_head, &fixture.app),
            HeadVerdict::Refuse(_)
        ));
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
