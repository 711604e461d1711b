use super::*;
use crate::cert::CertError;
use crate::dns::{AdaptiveResolver, Resolution, StaticTable};
use crate::testkit::{self, VALIDITY_MS, authority_id, name, subject_id, subject_key};
use hm_kernel::block::{BLOCK_TRANSACTION_BYTES_MAX, Evidence, STATE_UPDATES_PER_BLOCK_MAX};
use proptest::prelude::*;

/// Block timestamps start here, so certificates from time 0 are current.
const T0: u64 = 1_000_000;

/// A TrustApp driven block by block, checking on every block that the
/// executed root and head are what commit produces and that the
/// incremental root equals one computed from scratch.
struct Chain {
    app: TrustApp,
    now_ms: u64,
    /// Every committed write set, for replay.
    history: Vec<Vec<StateUpdate>>,
}

impl Chain {
    fn new() -> Chain {
        Chain {
            app: TrustApp::new(testkit::config()),
            now_ms: T0,
            history: Vec::new(),
        }
    }

    fn height(&self) -> Height {
        self.app.committed_height()
    }

    fn context(&self) -> BlockContext {
        BlockContext::new(self.height() + 1, self.now_ms)
    }

    fn block(&mut self, txs: &[TrustTx]) -> Vec<Result<(), TxError>> {
        let transactions: Vec<Transaction> = txs.iter().map(TrustTx::to_transaction).collect();
        self.block_raw(&transactions)
    }

    fn block_raw(&mut self, transactions: &[Transaction]) -> Vec<Result<(), TxError>> {
        let (root, head) = (self.app.state_root(), self.app.log_head());
        let context = self.context();
        let execution = self.app.execute_block(context, transactions);
        assert_eq!(
            self.app.state_root(),
            root,
            "execution changed the committed root"
        );
        assert_eq!(
            self.app.log_head(),
            head,
            "execution changed the committed log"
        );
        assert_eq!(execution.results.len(), transactions.len());
        assert!(
            execution
                .updates
                .windows(2)
                .all(|pair| pair[0].key < pair[1].key),
            "write set not sorted"
        );
        assert!(execution.updates.len() <= STATE_UPDATES_PER_BLOCK_MAX);
        // Through the execution's hint; `replayed` commits the bare write
        // sets, so every test comparing against it checks both ways agree.
        self.app
            .commit_execution(context.height, &execution)
            .expect("in order");
        assert_eq!(self.app.state_root(), execution.state_root);
        assert_eq!(self.app.log_head(), execution.log_head);
        assert_eq!(self.app.state_root(), self.app.store.root_from_scratch());
        self.history.push(execution.updates);
        self.now_ms += 1_000;
        execution.results
    }

    fn one(&mut self, tx: TrustTx) -> Result<(), TxError> {
        self.block(std::slice::from_ref(&tx)).remove(0)
    }

    /// Logs a certificate of authority `authority` for subject `subject`.
    fn log_cert(
        &mut self,
        authority: usize,
        subject: usize,
        names: &[&str],
        nonce: u64,
    ) -> Certificate {
        let certificate = testkit::authority_cert(authority, subject_key(subject), names, nonce, 0);
        assert_eq!(
            self.one(TrustTx::LogCertificate(certificate.clone())),
            Ok(())
        );
        certificate
    }

    /// Issues a chain certificate for subject `subject`.
    fn issue(&mut self, subject: usize, names: &[&str], nonce: u64) -> Certificate {
        let request = testkit::request(subject_key(subject), names, nonce);
        let height = self.height() + 1;
        let now = self.now_ms;
        assert_eq!(self.one(TrustTx::IssueCertificate(request.clone())), Ok(()));
        Certificate::issue_by_chain(request, height, now)
    }

    fn register(
        &mut self,
        owner: usize,
        text: &str,
        certificate: &Certificate,
        sequence: u64,
    ) -> Result<(), TxError> {
        self.one(TrustTx::RegisterName(testkit::claim(
            owner,
            text,
            certificate.fingerprint(),
            sequence,
            1,
        )))
    }

    fn report(&mut self, report: Report) -> Result<(), TxError> {
        self.one(TrustTx::Report(report))
    }

    /// The typed refusal of `tx` by the rules on the committed state,
    /// checked to be exactly the reason the kernel records when a block
    /// runs it (so a test on the variant also pins the rejection text).
    #[track_caller]
    fn refused(&mut self, tx: TrustTx) -> RuleError {
        let error = State::new(&self.app)
            .execute(self.context(), &tx)
            .expect_err("the rules refuse it");
        assert_eq!(self.one(tx), Err(TxError::Rejected(error.to_string())));
        error
    }

    /// A fresh app that only replays the write sets reaches the same state.
    fn replayed(&self) -> TrustApp {
        let mut app = TrustApp::new(testkit::config());
        for (height, updates) in self.history.iter().enumerate() {
            app.commit(height as Height + 1, updates).expect("in order");
        }
        assert_eq!(app.state_root(), self.app.state_root());
        assert_eq!(app.log_head(), self.app.log_head());
        app
    }
}

#[track_caller]
fn rejected(result: Result<(), TxError>, needle: &str) {
    match result {
        Err(TxError::Rejected(reason)) => {
            assert!(
                reason.contains(needle),
                "rejected for {reason:?}, expected {needle:?}"
            );
        }
        other => panic!("expected a rejection mentioning {needle:?}, got {other:?}"),
    }
}

// ------------------------------------------------------------------ log

#[test]
fn logging_an_authority_certificate() {
    let mut chain = Chain::new();
    let certificate = chain.log_cert(0, 0, &["a.hm"], 1);
    let fingerprint = certificate.fingerprint();
    let (stored, status) = chain.app.certificate(&fingerprint).expect("logged");
    assert_eq!(stored, certificate);
    assert_eq!(
        status,
        CertStatus {
            log_index: 0,
            revoked: false,
            issuer_revoked: false
        }
    );
    assert_eq!(chain.app.log_head().size, 1);
    assert_eq!(chain.app.log().leaf_hash(0), Some(fingerprint));
    let proof = chain.app.inclusion_proof(&fingerprint).expect("logged");
    assert_eq!(proof.verify(&certificate, &chain.app.log_head()), Ok(()));
    assert_eq!(
        chain
            .app
            .current_certificate(&subject_id(0), chain.now_ms)
            .map(|(c, _)| c),
        Some(certificate.clone())
    );
    assert_eq!(
        chain.app.current_certificate(&subject_id(0), VALIDITY_MS),
        None,
        "expired by then"
    );

    // Once only, and once per request.
    rejected(
        chain.one(TrustTx::LogCertificate(certificate.clone())),
        "already logged",
    );
    let again = Certificate::issue_by_authority(
        certificate.request.clone(),
        testkit::authority_key(1),
        5,
        &testkit::entropy(9),
    );
    rejected(
        chain.one(TrustTx::LogCertificate(again)),
        "already certified",
    );
    let reissued = TrustTx::IssueCertificate(certificate.request.clone());
    rejected(chain.one(reissued), "already certified");
}

#[test]
fn committed_state_is_proven_against_the_state_root() {
    let mut chain = Chain::new();
    let certificate = chain.log_cert(0, 0, &["a.hm"], 1);
    let root = chain.app.state_root();
    let record = keys::cert(&certificate.fingerprint());
    let (value, proof) = chain.app.prove(&record);
    let value = value.expect("a logged certificate has a record");
    assert_eq!(proof.verify(&root, &record, Some(&value)), Ok(()));
    // A forged record, or the record of a certificate never logged, is
    // refused against the same root.
    let mut forged = value.clone();
    forged[0] ^= 1;
    assert!(proof.verify(&root, &record, Some(&forged)).is_err());
    let absent = keys::cert(&Hash([7; 32]));
    let (nothing, absence) = chain.app.prove(&absent);
    assert_eq!(nothing, None);
    assert_eq!(absence.verify(&root, &absent, None), Ok(()));
    assert!(absence.verify(&root, &absent, Some(&value)).is_err());
    // A later block changes the root: the old proof no longer verifies
    // against it, and a fresh one does.
    chain.log_cert(1, 0, &["b.hm"], 2);
    assert_ne!(chain.app.state_root(), root);
    assert!(matches!(
        proof.verify(&chain.app.state_root(), &record, Some(&value)),
        Err(hm_kernel::state::ProofError::WrongRoot { .. })
    ));
    let (still, fresh) = chain.app.prove(&record);
    assert_eq!(still.as_deref(), Some(&value[..]));
    assert_eq!(
        fresh.verify(&chain.app.state_root(), &record, Some(&value)),
        Ok(())
    );
}

#[test]
fn logging_refuses_what_an_authority_may_not_issue() {
    let mut chain = Chain::new();
    // Issued by a key that is not an authority.
    let outsider = Certificate::issue_by_authority(
        testkit::request(subject_key(0), &[], 1),
        subject_key(1),
        0,
        &testkit::entropy(1),
    );
    rejected(
        chain.one(TrustTx::LogCertificate(outsider)),
        "not one of the authorities",
    );
    // Chain certificates do not enter this way.
    let chain_issued = Certificate::issue_by_chain(testkit::request(subject_key(0), &[], 2), 1, 0);
    rejected(
        chain.one(TrustTx::LogCertificate(chain_issued)),
        "only through IssueCertificate",
    );
    // Expired at the block's time.
    let old = testkit::authority_cert(0, subject_key(0), &[], 3, 0);
    chain.now_ms = VALIDITY_MS;
    rejected(chain.one(TrustTx::LogCertificate(old)), "expired");
    chain.now_ms = T0;
    // Outside the zone.
    let outside = testkit::authority_cert(0, subject_key(0), &["a.org"], 4, 0);
    rejected(
        chain.one(TrustTx::LogCertificate(outside)),
        "not under the zone",
    );
    // The request's signature is not the subject's.
    let forged = testkit::forged_cert(0, 0, 5, 0);
    rejected(
        chain.one(TrustTx::LogCertificate(forged)),
        "proof of possession",
    );
    // A name another subject owns.
    let owner = chain.log_cert(0, 1, &["taken.hm"], 6);
    assert_eq!(chain.register(1, "taken.hm", &owner, 1), Ok(()));
    let squat = testkit::authority_cert(0, subject_key(0), &["taken.hm"], 7, 0);
    rejected(chain.one(TrustTx::LogCertificate(squat)), "owned by");
    // ... which its owner may certify again.
    chain.log_cert(2, 1, &["taken.hm", "other.hm"], 8);
    assert_eq!(chain.app.log().len(), 2);
}

#[test]
fn chain_issuance() {
    let mut chain = Chain::new();
    let height = chain.height() + 1;
    let issued_at = chain.now_ms;
    let certificate = chain.issue(0, &["node.hm"], 1);
    let (stored, status) = chain
        .app
        .certificate(&certificate.fingerprint())
        .expect("logged");
    assert_eq!(stored.issuer, Issuer::Chain { height });
    assert_eq!(stored.not_before_ms, issued_at);
    assert_eq!(stored.not_after_ms, issued_at + VALIDITY_MS);
    assert_eq!(stored.issuer_signature, None);
    assert!(status.is_usable());
    assert_eq!(stored.verify_signatures(chain.app.authorities()), Ok(()));
    // Not for the same request twice, nor for a request its subject did
    // not sign, nor for names outside the zone or owned by others.
    rejected(
        chain.one(TrustTx::IssueCertificate(certificate.request.clone())),
        "already certified",
    );
    let forged = testkit::forged_cert(0, 1, 2, 0).request;
    rejected(
        chain.one(TrustTx::IssueCertificate(forged)),
        "proof of possession",
    );
    rejected(
        chain.one(TrustTx::IssueCertificate(testkit::request(
            subject_key(1),
            &["x.org"],
            3,
        ))),
        "not under the zone",
    );
    assert_eq!(chain.register(0, "node.hm", &certificate, 1), Ok(()));
    rejected(
        chain.one(TrustTx::IssueCertificate(testkit::request(
            subject_key(1),
            &["node.hm"],
            4,
        ))),
        "owned by",
    );
    // Renewal with a new nonce: the newest current certificate wins.
    let renewed = chain.issue(0, &["node.hm"], 5);
    let (current, _) = chain
        .app
        .current_certificate(&subject_id(0), chain.now_ms)
        .expect("current");
    assert_eq!(current, renewed);
}

#[test]
fn one_key_has_a_bounded_number_of_certificates() {
    let mut chain = Chain::new();
    let txs: Vec<TrustTx> = (0..=CERTIFICATES_PER_SUBJECT_MAX)
        .map(|nonce| {
            TrustTx::IssueCertificate(testkit::request(subject_key(2), &[], 10_000 + nonce))
        })
        .collect();
    let results = chain.block(&txs);
    let accepted = results.iter().filter(|result| result.is_ok()).count();
    assert_eq!(accepted as u64, CERTIFICATES_PER_SUBJECT_MAX);
    rejected(results[results.len() - 1].clone(), "use a new key");
    // The newest one is found by the bounded scan.
    let (current, status) = chain
        .app
        .current_certificate(&subject_id(2), chain.now_ms)
        .expect("current");
    assert_eq!(status.log_index, CERTIFICATES_PER_SUBJECT_MAX - 1);
    assert_eq!(
        current.request.request.nonce,
        10_000 + CERTIFICATES_PER_SUBJECT_MAX - 1
    );
}

// ------------------------------------------------------------------ revoke

#[test]
fn subjects_revoke_their_own_certificates() {
    let mut chain = Chain::new();
    let older = chain.issue(0, &[], 1);
    let newer = chain.issue(0, &[], 2);
    let fingerprint = newer.fingerprint();
    // Someone else cannot, even signing correctly for their own key.
    rejected(
        chain.one(TrustTx::Revoke(testkit::revocation(1, fingerprint))),
        "not to the revoking key",
    );
    // Nor with the subject's key and another's signature.
    let mut stolen = testkit::revocation(0, fingerprint);
    stolen.signature = testkit::revocation(1, fingerprint).signature;
    rejected(
        chain.one(TrustTx::Revoke(stolen)),
        "not signed by its subject key",
    );
    rejected(
        chain.one(TrustTx::Revoke(testkit::revocation(0, Hash([9; 32])))),
        "not in the log",
    );

    assert_eq!(
        chain.one(TrustTx::Revoke(testkit::revocation(0, fingerprint))),
        Ok(())
    );
    assert!(chain.app.is_revoked(&fingerprint));
    assert!(!chain.app.is_revoked(&older.fingerprint()));
    let (_, status) = chain.app.certificate(&fingerprint).expect("still logged");
    assert!(status.revoked && !status.is_usable());
    // The current certificate falls back to the older one.
    let (current, _) = chain
        .app
        .current_certificate(&subject_id(0), chain.now_ms)
        .expect("older");
    assert_eq!(current, older);
    rejected(
        chain.one(TrustTx::Revoke(testkit::revocation(0, fingerprint))),
        "already revoked",
    );
}

// ------------------------------------------------------------------ names

#[test]
fn names_are_first_come_first_served_and_owner_updated() {
    let mut chain = Chain::new();
    let mine = chain.issue(0, &[], 1);
    let theirs = chain.issue(1, &[], 2);
    let registered_at = chain.now_ms;
    let height = chain.height() + 1;
    assert_eq!(chain.register(0, "www.hm", &mine, 1), Ok(()));
    let record = chain.app.record(&name("www.hm")).expect("registered");
    assert_eq!(record.owner, subject_id(0));
    assert_eq!(record.certificate, mine.fingerprint());
    assert_eq!(
        (record.sequence, record.updated_height, record.registered_ms),
        (1, height, registered_at)
    );

    rejected(
        chain.register(1, "www.hm", &theirs, 5),
        "first come, first served",
    );
    rejected(chain.register(0, "www.hm", &mine, 1), "sequence above 1");
    let update = testkit::claim(0, "www.hm", mine.fingerprint(), 2, 42);
    assert_eq!(chain.one(TrustTx::RegisterName(update.clone())), Ok(()));
    let updated = chain.app.record(&name("www.hm")).expect("registered");
    assert_eq!(updated.addrs, update.claim.addrs);
    assert_eq!(updated.sequence, 2);
    assert_eq!(
        updated.registered_ms, registered_at,
        "registration time is kept"
    );
    assert!(updated.updated_height > height);

    // The resolver sees committed records.
    let mut resolver = AdaptiveResolver::new();
    let answer = resolver.resolve(3, &name("www.hm"), &chain.app, &StaticTable::new());
    assert_eq!(answer, Ok(Resolution::HyperMesh(updated)));
}

#[test]
fn a_claim_needs_a_usable_current_certificate_of_its_owner() {
    let mut chain = Chain::new();
    let mine = chain.issue(0, &[], 1);
    let theirs = chain.issue(1, &[], 2);
    rejected(chain.register(0, "a.hm", &theirs, 1), "not to the owner");
    let unlogged = testkit::authority_cert(0, subject_key(0), &[], 3, 0);
    rejected(chain.register(0, "a.hm", &unlogged, 1), "not in the log");
    rejected(chain.register(0, "a.org", &mine, 1), "not under the zone");
    let mut bad_signature = testkit::claim(0, "a.hm", mine.fingerprint(), 1, 1);
    bad_signature.signature = testkit::claim(1, "a.hm", mine.fingerprint(), 1, 1).signature;
    rejected(
        chain.one(TrustTx::RegisterName(bad_signature)),
        "not signed by its owner",
    );
    assert_eq!(
        chain.one(TrustTx::Revoke(testkit::revocation(
            1,
            theirs.fingerprint()
        ))),
        Ok(())
    );
    rejected(chain.register(1, "b.hm", &theirs, 1), "revoked");
    chain.now_ms += VALIDITY_MS;
    rejected(chain.register(0, "a.hm", &mine, 1), "not at the block's");
    assert_eq!(chain.app.record(&name("a.hm")), None);
}

#[test]
fn an_owner_holds_a_bounded_number_of_names() {
    let mut chain = Chain::new();
    let certificate = chain.issue(0, &[], 1);
    let txs: Vec<TrustTx> = (0..=NAMES_PER_OWNER_MAX)
        .map(|i| {
            TrustTx::RegisterName(testkit::claim(
                0,
                &format!("n{i}.hm"),
                certificate.fingerprint(),
                1,
                1,
            ))
        })
        .collect();
    let results = chain.block(&txs);
    assert!(
        results[..NAMES_PER_OWNER_MAX].iter().all(Result::is_ok),
        "{results:?}"
    );
    rejected(
        results[NAMES_PER_OWNER_MAX].clone(),
        "already holds 16 names",
    );
    // Updating a held name is still fine.
    let update = testkit::claim(0, "n0.hm", certificate.fingerprint(), 2, 2);
    assert_eq!(chain.one(TrustTx::RegisterName(update)), Ok(()));
}

// ------------------------------------------------------------------ reports

#[test]
fn a_forged_certificate_revokes_its_authority() {
    let mut chain = Chain::new();
    let honest_earlier = chain.log_cert(1, 2, &[], 1);
    let forged = testkit::forged_cert(1, 0, 2, chain.now_ms);
    let report = Report::ForgedCertificate(forged.clone());
    let height = chain.height() + 1;
    assert_eq!(chain.report(report.clone()), Ok(()));

    let offender = authority_id(1);
    assert_eq!(
        chain.app.findings_against(&offender),
        vec![Finding {
            offender,
            kind: FindingKind::ForgedCertificate,
            height,
            report: report.id()
        }]
    );
    assert!(
        chain
            .app
            .has_finding(&offender, FindingKind::ForgedCertificate)
    );
    assert_eq!(chain.app.findings(), 1);
    assert!(chain.app.is_authority_revoked(&offender));
    assert!(!chain.app.is_authority_revoked(&authority_id(0)));
    assert!(
        chain.app.is_revoked(&forged.fingerprint()),
        "the forgery is on the revocation list"
    );
    // The revoked authority can no longer issue, and what it issued is
    // no longer usable.
    let later = testkit::authority_cert(1, subject_key(3), &[], 3, 0);
    rejected(
        chain.one(TrustTx::LogCertificate(later)),
        "can no longer issue",
    );
    let (_, status) = chain
        .app
        .certificate(&honest_earlier.fingerprint())
        .expect("logged");
    assert!(status.issuer_revoked && !status.revoked);
    assert_eq!(
        chain.app.current_certificate(&subject_id(2), chain.now_ms),
        None
    );
    // One finding per offender and kind.
    let second = testkit::forged_cert(1, 2, 4, 0);
    rejected(
        chain.report(Report::ForgedCertificate(second)),
        "already has",
    );
    assert_eq!(chain.app.findings(), 1);
}

#[test]
fn forgery_reports_must_prove_forgery() {
    let mut chain = Chain::new();
    let genuine = testkit::authority_cert(0, subject_key(0), &["a.hm"], 1, 0);
    rejected(
        chain.report(Report::ForgedCertificate(genuine.clone())),
        "not forged",
    );
    // Without a valid authority signature nothing is attributable.
    let mut unsigned = testkit::forged_cert(0, 0, 2, 0);
    unsigned.issuer_signature = genuine.issuer_signature.clone();
    rejected(
        chain.report(Report::ForgedCertificate(unsigned)),
        "authority signature does not hold",
    );
    let chain_issued = Certificate::issue_by_chain(testkit::request(subject_key(0), &[], 3), 1, 0);
    rejected(
        chain.report(Report::ForgedCertificate(chain_issued)),
        "no authority to blame",
    );
    assert_eq!(chain.app.findings(), 0);
    assert!(!chain.app.is_authority_revoked(&authority_id(0)));
}

#[test]
fn certifying_a_name_owned_by_another_is_forgery_after_the_grace() {
    let mut chain = Chain::new();
    let owner = chain.issue(1, &[], 1);
    let registered_at = chain.now_ms;
    assert_eq!(chain.register(1, "bank.hm", &owner, 1), Ok(()));
    // Issued right after the registration: a race the grace excuses.
    let racing = testkit::authority_cert(
        2,
        subject_key(0),
        &["bank.hm"],
        2,
        registered_at + UNLOGGED_GRACE_MS,
    );
    assert_eq!(chain.app.stolen_name(&racing), None);
    rejected(
        chain.report(Report::ForgedCertificate(racing)),
        "not forged",
    );
    // Issued well after: the authority certified someone else's name.
    let stolen = testkit::authority_cert(
        2,
        subject_key(0),
        &["bank.hm"],
        3,
        registered_at + UNLOGGED_GRACE_MS + 1,
    );
    assert_eq!(chain.app.stolen_name(&stolen), Some(name("bank.hm")));
    assert_eq!(
        chain.report(Report::ForgedCertificate(stolen.clone())),
        Ok(())
    );
    assert!(chain.app.is_authority_revoked(&authority_id(2)));
    assert!(chain.app.is_revoked(&stolen.fingerprint()));
}

#[test]
fn an_unlogged_certificate_is_reportable_after_the_grace() {
    let mut chain = Chain::new();
    let issued_at = chain.now_ms;
    let hidden = testkit::authority_cert(0, subject_key(0), &["h.hm"], 1, issued_at);
    rejected(
        chain.report(Report::UnloggedCertificate(hidden.clone())),
        "within the 60000 ms logging grace",
    );
    chain.now_ms = issued_at + UNLOGGED_GRACE_MS + 1;
    assert_eq!(
        chain.app.check_unlogged(&hidden, chain.now_ms),
        Ok(authority_id(0))
    );
    assert_eq!(
        chain.report(Report::UnloggedCertificate(hidden.clone())),
        Ok(())
    );
    assert!(chain.app.is_authority_revoked(&authority_id(0)));
    assert!(chain.app.is_revoked(&hidden.fingerprint()));
    assert_eq!(
        chain.app.findings_against(&authority_id(0))[0].kind,
        FindingKind::UnloggedCertificate
    );
    // Another kind against the same authority is another finding.
    let forged = testkit::forged_cert(0, 1, 2, 0);
    assert_eq!(chain.report(Report::ForgedCertificate(forged)), Ok(()));
    assert_eq!(chain.app.findings_against(&authority_id(0)).len(), 2);
    assert_eq!(chain.app.findings(), 2);
}

#[test]
fn unlogged_reports_refuse_what_is_logged_or_excused() {
    let mut chain = Chain::new();
    let logged = chain.log_cert(0, 0, &[], 1);
    chain.now_ms += UNLOGGED_GRACE_MS * 2;
    rejected(
        chain.report(Report::UnloggedCertificate(logged.clone())),
        "is logged at index 0",
    );
    // The subject pushed the same request through the chain first: the
    // authority's certificate could not be logged, and is not its fault.
    let request = testkit::request(subject_key(1), &[], 2);
    assert_eq!(
        chain.one(TrustTx::IssueCertificate(request.clone())),
        Ok(())
    );
    let raced = Certificate::issue_by_authority(
        request,
        testkit::authority_key(1),
        0,
        &testkit::entropy(5),
    );
    rejected(
        chain.report(Report::UnloggedCertificate(raced)),
        "certified otherwise",
    );
    // A third party registered a name of the certificate first.
    let squatter = chain.issue(2, &[], 3);
    assert_eq!(chain.register(2, "contested.hm", &squatter, 1), Ok(()));
    let blocked = testkit::authority_cert(1, subject_key(0), &["contested.hm"], 4, 0);
    rejected(
        chain.report(Report::UnloggedCertificate(blocked)),
        "could not be logged",
    );
    // Forgeries are reported as such, not as unlogged.
    rejected(
        chain.report(Report::UnloggedCertificate(testkit::forged_cert(
            1, 0, 5, 0,
        ))),
        "not a valid authority certificate",
    );
    assert_eq!(chain.app.findings(), 0);
}

#[test]
fn a_false_tree_head_revokes_its_signer() {
    let mut chain = Chain::new();
    chain.log_cert(0, 0, &[], 1);
    chain.log_cert(0, 1, &[], 2);
    let true_head = chain.app.log().head_at(1).expect("inside");
    rejected(
        chain.report(Report::FalseTreeHead(testkit::tree_head(2, true_head))),
        "it is true",
    );
    let beyond = LogHead {
        size: 3,
        root: Hash([7; 32]),
    };
    rejected(
        chain.report(Report::FalseTreeHead(testkit::tree_head(2, beyond))),
        "cannot be judged yet",
    );
    let mut unsigned = testkit::tree_head(
        2,
        LogHead {
            size: 1,
            root: Hash([7; 32]),
        },
    );
    unsigned.signer = authority_id(3);
    rejected(
        chain.report(Report::FalseTreeHead(unsigned)),
        "does not verify",
    );

    let false_head = LogHead {
        size: 1,
        root: Hash([7; 32]),
    };
    assert_eq!(
        chain.report(Report::FalseTreeHead(testkit::tree_head(2, false_head))),
        Ok(())
    );
    assert!(chain.app.is_authority_revoked(&authority_id(2)));
    assert_eq!(
        chain.app.findings_against(&authority_id(2))[0].kind,
        FindingKind::FalseTreeHead
    );
}

#[test]
fn tree_heads_are_judged_against_appends_earlier_in_the_block() {
    let mut chain = Chain::new();
    chain.log_cert(0, 0, &[], 1);
    let pending = testkit::authority_cert(0, subject_key(1), &[], 2, 0);
    let mut log = chain.app.log().clone();
    log.append(&pending).expect("room");
    let new_head = log.head();
    let wrong = LogHead {
        size: 2,
        root: Hash([8; 32]),
    };
    let results = chain.block(&[
        TrustTx::Report(Report::FalseTreeHead(testkit::tree_head(1, new_head))),
        TrustTx::LogCertificate(pending),
        TrustTx::Report(Report::FalseTreeHead(testkit::tree_head(1, new_head))),
        TrustTx::Report(Report::FalseTreeHead(testkit::tree_head(3, wrong))),
    ]);
    rejected(results[0].clone(), "beyond the log's 1");
    assert_eq!(results[1], Ok(()));
    rejected(results[2].clone(), "it is true");
    assert_eq!(results[3], Ok(()));
    assert!(chain.app.is_authority_revoked(&authority_id(3)));
    assert_eq!(chain.app.log_head(), new_head);
}

#[test]
fn equivocation_revokes_the_validators_current_certificates() {
    let mut chain = Chain::new();
    let validator = 3;
    let id = authority_id(validator);
    // The validator's own node certificate, chain-issued.
    let request = SignedRequest::sign(
        testkit::unsigned_request(testkit::authority_key(validator), &[], 1),
        testkit::authority_key(validator),
        &testkit::entropy(1),
    );
    assert_eq!(
        chain.one(TrustTx::IssueCertificate(request.clone())),
        Ok(())
    );
    let before = Certificate::issue_by_chain(request, chain.height(), chain.now_ms - 1_000);
    assert_eq!(chain.app.certified_validators(chain.now_ms), vec![id]);

    let mut tampered = testkit::equivocation(validator, 5);
    if let Evidence::DuplicateVote { second, .. } = &mut tampered {
        second.vote.block_hash = Some(Hash([9; 32]));
    }
    rejected(
        chain.report(Report::Equivocation(tampered)),
        "the evidence does not hold",
    );
    let evidence = testkit::equivocation(validator, 5);
    assert_eq!(chain.report(Report::Equivocation(evidence)), Ok(()));
    assert!(chain.app.is_authority_revoked(&id));
    assert!(chain.app.is_revoked(&before.fingerprint()));
    assert_eq!(
        chain.app.certified_validators(chain.now_ms),
        Vec::<Hash>::new()
    );
    assert_eq!(
        chain.app.findings_against(&id)[0].kind,
        FindingKind::Equivocation
    );
    rejected(
        chain.report(Report::Equivocation(testkit::equivocation(validator, 6))),
        "already has",
    );

    // Certificates issued after the finding are not revoked.
    let request = SignedRequest::sign(
        testkit::unsigned_request(testkit::authority_key(validator), &[], 2),
        testkit::authority_key(validator),
        &testkit::entropy(2),
    );
    assert_eq!(chain.one(TrustTx::IssueCertificate(request)), Ok(()));
    assert_eq!(chain.app.certified_validators(chain.now_ms), vec![id]);
}

// ------------------------------------------------------------------ typed refusals

#[test]
fn a_name_outside_the_zone_is_refused_with_the_name_and_the_zone() {
    let mut chain = Chain::new();
    let outside = RuleError::NotInZone {
        name: name("a.org"),
        zone: name("hm"),
    };
    let certificate = testkit::authority_cert(0, subject_key(0), &["a.hm", "a.org"], 1, 0);
    assert_eq!(chain.refused(TrustTx::LogCertificate(certificate)), outside);
    // `check_tx` refuses it before execution, in the same words.
    let request = TrustTx::IssueCertificate(testkit::request(subject_key(0), &["a.org"], 2));
    assert_eq!(
        chain.app.check_tx(&request.to_transaction()),
        Err(TxError::Rejected(outside.to_string()))
    );
    assert_eq!(chain.refused(request), outside);
    let mine = chain.issue(0, &[], 3);
    let claim = testkit::claim(0, "a.org", mine.fingerprint(), 1, 1);
    assert_eq!(chain.refused(TrustTx::RegisterName(claim)), outside);
}

#[test]
fn a_certificate_logged_twice_is_refused_with_its_log_index() {
    let mut chain = Chain::new();
    chain.log_cert(0, 1, &[], 1);
    let certificate = chain.log_cert(0, 0, &["a.hm"], 2);
    assert_eq!(
        chain.refused(TrustTx::LogCertificate(certificate.clone())),
        RuleError::AlreadyLogged {
            fingerprint: certificate.fingerprint(),
            log_index: 1
        }
    );
    // Another authority's certificate over the same request: the request
    // is spent, and the client is told what to do.
    let again = Certificate::issue_by_authority(
        certificate.request.clone(),
        testkit::authority_key(1),
        5,
        &testkit::entropy(9),
    );
    let error = chain.refused(TrustTx::LogCertificate(again));
    assert_eq!(
        error,
        RuleError::RequestAlreadyCertified {
            request_id: certificate.request.id(),
            log_index: 1
        }
    );
    assert!(error.to_string().ends_with("ask again with a new nonce"));
}

#[test]
fn a_revoked_authority_is_refused_with_the_height_of_its_revocation() {
    let mut chain = Chain::new();
    let height = chain.height() + 1;
    let forged = testkit::forged_cert(1, 0, 1, 0);
    assert_eq!(chain.report(Report::ForgedCertificate(forged)), Ok(()));
    let later = testkit::authority_cert(1, subject_key(2), &[], 2, 0);
    assert_eq!(
        chain.refused(TrustTx::LogCertificate(later)),
        RuleError::AuthorityRevoked {
            authority: authority_id(1),
            height
        }
    );
}

#[test]
fn a_library_error_is_carried_typed() {
    let mut chain = Chain::new();
    let forged = testkit::forged_cert(0, 0, 1, 0);
    assert_eq!(
        chain.refused(TrustTx::LogCertificate(forged)),
        RuleError::Certificate(CertError::BadRequestSignature {
            subject: subject_id(0)
        })
    );
}

#[test]
fn a_second_finding_of_a_kind_is_refused_as_a_duplicate() {
    let mut chain = Chain::new();
    let first = testkit::forged_cert(2, 0, 1, 0);
    assert_eq!(chain.report(Report::ForgedCertificate(first)), Ok(()));
    let second = testkit::forged_cert(2, 1, 2, 0);
    assert_eq!(
        chain.refused(TrustTx::Report(Report::ForgedCertificate(second))),
        RuleError::DuplicateFinding {
            offender: authority_id(2),
            kind: FindingKind::ForgedCertificate
        }
    );
    assert_eq!(chain.app.findings(), 1);
}

#[test]
fn a_name_another_owns_is_refused_as_taken() {
    let mut chain = Chain::new();
    let mine = chain.issue(0, &[], 1);
    let theirs = chain.issue(1, &[], 2);
    assert_eq!(chain.register(0, "www.hm", &mine, 1), Ok(()));
    let claim = testkit::claim(1, "www.hm", theirs.fingerprint(), 5, 1);
    assert_eq!(
        chain.refused(TrustTx::RegisterName(claim)),
        RuleError::NameTaken {
            name: name("www.hm"),
            owner: subject_id(0)
        }
    );
    // Nor is it certified to the non-owner.
    let request = testkit::request(subject_key(1), &["www.hm"], 3);
    assert_eq!(
        chain.refused(TrustTx::IssueCertificate(request)),
        RuleError::NameOwnedByOther {
            name: name("www.hm"),
            owner: subject_id(0),
            subject: subject_id(1)
        }
    );
}

#[test]
fn a_true_tree_head_is_refused_with_its_size() {
    let mut chain = Chain::new();
    chain.log_cert(0, 0, &[], 1);
    let true_head = chain.app.log_head();
    let report = |head| TrustTx::Report(Report::FalseTreeHead(testkit::tree_head(2, head)));
    assert_eq!(
        chain.refused(report(true_head)),
        RuleError::TrueHead { size: 1 }
    );
    let beyond = LogHead {
        size: 2,
        root: Hash([7; 32]),
    };
    assert_eq!(
        chain.refused(report(beyond)),
        RuleError::HeadBeyondLog {
            size: 2,
            log_size: 1
        }
    );
    assert_eq!(chain.app.findings(), 0);
}

#[test]
fn check_unlogged_says_why_a_report_would_be_refused() {
    let mut chain = Chain::new();
    let issued_at = chain.now_ms;
    let hidden = testkit::authority_cert(0, subject_key(0), &["h.hm"], 1, issued_at);
    assert_eq!(
        chain.app.check_unlogged(&hidden, issued_at + 5),
        Err(RuleError::WithinGrace {
            fingerprint: hidden.fingerprint(),
            not_before_ms: issued_at,
            grace_ms: UNLOGGED_GRACE_MS,
            now_ms: issued_at + 5
        })
    );
    // A third party registered one of its names: excused, with the name
    // rule that kept it out as the source.
    let squatter = chain.issue(2, &[], 2);
    assert_eq!(chain.register(2, "h.hm", &squatter, 1), Ok(()));
    let after_grace_ms = issued_at + UNLOGGED_GRACE_MS + 1;
    let owned = RuleError::NameOwnedByOther {
        name: name("h.hm"),
        owner: subject_id(2),
        subject: subject_id(0),
    };
    let error = chain
        .app
        .check_unlogged(&hidden, after_grace_ms)
        .expect_err("excused");
    assert_eq!(
        std::error::Error::source(&error).map(ToString::to_string),
        Some(owned.to_string())
    );
    assert_eq!(
        error,
        RuleError::Unloggable {
            source: Box::new(owned)
        }
    );
    assert_eq!(
        chain.app.check_unlogged(&squatter, after_grace_ms),
        Err(RuleError::ChainIssuedUnlogged)
    );
}

// ------------------------------------------------------------------ execution

#[test]
fn a_block_sees_its_own_earlier_writes() {
    let mut chain = Chain::new();
    let request = testkit::request(subject_key(0), &[], 1);
    let certificate =
        Certificate::issue_by_chain(request.clone(), chain.height() + 1, chain.now_ms);
    let results = chain.block(&[
        TrustTx::IssueCertificate(request.clone()),
        TrustTx::IssueCertificate(request),
        TrustTx::RegisterName(testkit::claim(
            0,
            "same-block.hm",
            certificate.fingerprint(),
            1,
            1,
        )),
        TrustTx::RegisterName(testkit::claim(
            0,
            "same-block.hm",
            certificate.fingerprint(),
            1,
            1,
        )),
        TrustTx::Revoke(testkit::revocation(0, certificate.fingerprint())),
    ]);
    assert_eq!(results[0], Ok(()));
    // The same request in the same block is the same certificate.
    rejected(results[1].clone(), "already logged");
    assert_eq!(results[2], Ok(()));
    rejected(results[3].clone(), "sequence above 1");
    assert_eq!(results[4], Ok(()));
    assert!(chain.app.is_revoked(&certificate.fingerprint()));
}

#[test]
fn rejected_and_malformed_transactions_change_nothing() {
    let mut chain = Chain::new();
    chain.log_cert(0, 0, &[], 1);
    let (root, head) = (chain.app.state_root(), chain.app.log_head());
    let transactions = vec![
        Transaction(vec![0xff; 9]),
        Transaction(vec![]),
        TrustTx::Revoke(testkit::revocation(0, Hash([1; 32]))).to_transaction(),
        TrustTx::Report(Report::ForgedCertificate(testkit::authority_cert(
            0,
            subject_key(1),
            &[],
            2,
            0,
        )))
        .to_transaction(),
    ];
    let context = chain.context();
    let execution = chain.app.execute_block(context, &transactions);
    assert!(execution.updates.is_empty());
    assert_eq!(execution.state_root, root);
    assert_eq!(execution.log_head, head);
    assert!(matches!(execution.results[0], Err(TxError::Malformed(_))));
    assert!(matches!(execution.results[1], Err(TxError::Malformed(_))));
    assert!(matches!(execution.results[2], Err(TxError::Rejected(_))));
    assert!(matches!(execution.results[3], Err(TxError::Rejected(_))));
}

#[test]
fn check_tx_decodes_and_checks_the_zone() {
    let app = TrustApp::new(testkit::config());
    for tx in testkit::sample_txs() {
        assert_eq!(app.check_tx(&tx.to_transaction()), Ok(()));
    }
    assert!(matches!(
        app.check_tx(&Transaction(vec![1, 2, 3])),
        Err(TxError::Malformed(_))
    ));
    let outside =
        TrustTx::IssueCertificate(testkit::request(subject_key(0), &["a.hm", "b.example"], 1));
    assert!(matches!(
        app.check_tx(&outside.to_transaction()),
        Err(TxError::Rejected(reason)) if reason.contains("b.example")
    ));
}

#[test]
fn commits_come_in_order_and_replay_reproduces_the_state() {
    let mut chain = Chain::new();
    assert_eq!(
        chain.app.commit(2, &[]),
        Err(CommitError::OutOfOrder {
            committed: 0,
            got: 2
        })
    );
    let certificate = chain.log_cert(0, 0, &["r.hm"], 1);
    assert_eq!(chain.register(0, "r.hm", &certificate, 1), Ok(()));
    assert_eq!(
        chain.report(Report::FalseTreeHead(testkit::tree_head(
            1,
            LogHead {
                size: 1,
                root: Hash([1; 32])
            }
        ))),
        Ok(())
    );
    chain.issue(1, &[], 2);
    let replayed = chain.replayed();
    assert_eq!(replayed.committed_height(), chain.app.committed_height());
    assert_eq!(
        replayed.record(&name("r.hm")),
        chain.app.record(&name("r.hm"))
    );
    assert_eq!(
        replayed.certificate(&certificate.fingerprint()),
        chain.app.certificate(&certificate.fingerprint())
    );
    assert_eq!(replayed.findings(), 1);
    assert_eq!(
        replayed.consistency_proof(1),
        chain.app.consistency_proof(1)
    );
    assert_eq!(replayed.state_len(), chain.app.state_len());
}

#[test]
fn a_commit_hint_made_on_another_state_is_not_used() {
    let mut chain = Chain::new();
    let certificate = chain.log_cert(0, 0, &["r.hm", "s.hm"], 1);
    let claim = |text: &str| {
        TrustTx::RegisterName(testkit::claim(0, text, certificate.fingerprint(), 1, 1))
            .to_transaction()
    };
    // Both executed on the same state; the second is committed after the
    // first, so its hint describes a state that is gone.
    let context = chain.context();
    let first = chain.app.execute_block(context, &[claim("r.hm")]);
    let second = chain.app.execute_block(context, &[claim("s.hm")]);
    assert_eq!(first.results, vec![Ok(())]);
    assert_eq!(second.results, vec![Ok(())]);
    let mut bare = chain.replayed();
    chain
        .app
        .commit_execution(context.height, &first)
        .expect("in order");
    chain
        .app
        .commit_execution(context.height + 1, &second)
        .expect("in order");
    bare.commit(context.height, &first.updates)
        .expect("in order");
    bare.commit(context.height + 1, &second.updates)
        .expect("in order");
    assert_eq!(chain.app.state_root(), bare.state_root());
    assert_eq!(chain.app.state_root(), chain.app.store.root_from_scratch());
    assert_ne!(chain.app.state_root(), second.state_root);
    assert!(chain.app.record(&name("s.hm")).is_some());
    assert_eq!(chain.app.state_len(), bare.state_len());
}

#[test]
#[should_panic(expected = "the log is append-only")]
fn commit_refuses_a_write_set_that_skips_log_entries() {
    let mut app = TrustApp::new(testkit::config());
    let update = StateUpdate {
        key: keys::log(1),
        value: Some(vec![1]),
    };
    let _ = app.commit(1, &[update]);
}

#[test]
fn queries_on_unknown_things_are_empty() {
    let app = TrustApp::new(testkit::config());
    let unknown = Hash([5; 32]);
    assert_eq!(app.certificate(&unknown), None);
    assert_eq!(app.inclusion_proof(&unknown), None);
    assert_eq!(app.current_certificate(&unknown, 0), None);
    assert!(!app.is_revoked(&unknown));
    assert!(!app.is_authority_revoked(&unknown));
    assert!(app.findings_against(&unknown).is_empty());
    assert_eq!(app.findings(), 0);
    assert_eq!(app.record(&name("a.hm")), None);
    assert_eq!(app.consistency_proof(1), None);
    assert_eq!(
        app.consistency_proof(0).map(|proof| proof.new),
        Some(LogHead::empty())
    );
    assert_eq!(app.log_head(), LogHead::empty());
}

#[test]
fn full_blocks_stay_within_the_write_limit() {
    let smallest = testkit::sample_txs()
        .iter()
        .map(|tx| tx.encode().len())
        .min()
        .expect("samples");
    // A false-tree-head report (a head, a signer, a signature) is the
    // smallest transaction that writes.
    assert!(smallest > 1_300, "{smallest}");
    assert!(
        BLOCK_TRANSACTION_BYTES_MAX / smallest * WRITES_PER_TX_MAX <= STATE_UPDATES_PER_BLOCK_MAX
    );
}

// ------------------------------------------------------------------ properties

/// Transactions valid in some orders and not others, built once.
fn pool() -> &'static [TrustTx] {
    static POOL: std::sync::OnceLock<Vec<TrustTx>> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        let mut pool = Vec::new();
        let mut chain_certs = Vec::new();
        for subject in 0..3 {
            let request = testkit::request(
                subject_key(subject),
                &[&format!("s{subject}.hm")],
                50 + subject as u64,
            );
            // The certificate this request gets if issued first in block 1
            // at T0 (the claims below point at it; otherwise they fail).
            chain_certs.push(Certificate::issue_by_chain(request.clone(), 1, T0));
            pool.push(TrustTx::IssueCertificate(request));
        }
        for subject in 0..3 {
            let certificate = testkit::authority_cert(
                subject % 2,
                subject_key(subject),
                &["shared.hm"],
                60 + subject as u64,
                0,
            );
            pool.push(TrustTx::Revoke(testkit::revocation(
                subject,
                certificate.fingerprint(),
            )));
            pool.push(TrustTx::RegisterName(testkit::claim(
                subject,
                "shared.hm",
                certificate.fingerprint(),
                1,
                1,
            )));
            pool.push(TrustTx::LogCertificate(certificate));
        }
        for (subject, certificate) in chain_certs.iter().enumerate() {
            pool.push(TrustTx::RegisterName(testkit::claim(
                subject,
                &format!("s{subject}.hm"),
                certificate.fingerprint(),
                1,
                2,
            )));
            pool.push(TrustTx::RegisterName(testkit::claim(
                subject,
                "shared.hm",
                certificate.fingerprint(),
                2,
                3,
            )));
        }
        pool.push(TrustTx::Report(Report::ForgedCertificate(
            testkit::forged_cert(2, 0, 70, 0),
        )));
        pool.push(TrustTx::Report(Report::UnloggedCertificate(
            testkit::authority_cert(3, subject_key(3), &[], 71, 0),
        )));
        pool.push(TrustTx::Report(Report::FalseTreeHead(testkit::tree_head(
            1,
            LogHead {
                size: 1,
                root: Hash([3; 32]),
            },
        ))));
        pool.push(TrustTx::Report(Report::Equivocation(
            testkit::equivocation(0, 9),
        )));
        pool.extend(testkit::sample_txs().iter().cloned());
        pool
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn execution_is_deterministic_and_replay_reproduces_it(
        picks in proptest::collection::vec(any::<prop::sample::Index>(), 0..24),
        cuts in proptest::collection::vec(1usize..6, 1..8),
        steps in proptest::collection::vec(0u64..(2 * UNLOGGED_GRACE_MS), 1..8),
    ) {
        let pool = pool();
        let txs: Vec<Transaction> = picks.iter().map(|pick| pool[pick.index(pool.len())].to_transaction()).collect();
        let mut one = Chain::new();
        let two = TrustApp::new(testkit::config());
        let mut two = Chain { app: two, now_ms: T0, history: Vec::new() };
        let mut rest = &txs[..];
        let mut block = 0;
        while !rest.is_empty() {
            let take = cuts[block % cuts.len()].min(rest.len());
            let (chunk, tail) = rest.split_at(take);
            let context = one.context();
            let a = one.app.execute_block(context, chunk);
            let b = two.app.execute_block(context, chunk);
            prop_assert_eq!(&a, &b);
            one.block_raw(chunk);
            two.block_raw(chunk);
            one.now_ms += steps[block % steps.len()];
            two.now_ms = one.now_ms;
            rest = tail;
            block += 1;
        }
        let replayed = one.replayed();
        prop_assert_eq!(replayed.state_root(), two.app.state_root());
        prop_assert_eq!(replayed.log_head(), two.app.log_head());
        prop_assert_eq!(replayed.findings(), one.app.findings());
        // The log in the state and the log in memory agree.
        for index in 0..one.app.log().len() {
            let stored = one.app.store.get(&keys::log(index)).expect("entry");
            prop_assert_eq!(Some(merkle::leaf_hash(stored)), one.app.log().leaf_hash(index));
        }
    }

    #[test]
    fn random_transaction_bytes_never_panic(
        raw in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..6),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<prop::sample::Index>(), any::<u8>()), 0..6),
    ) {
        let pool = pool();
        let mut txs: Vec<Transaction> = raw.into_iter().map(Transaction).collect();
        for (pick, at, value) in flips {
            let mut bytes = pool[pick.index(pool.len())].encode();
            let at = at.index(bytes.len());
            bytes[at] = value;
            txs.push(Transaction(bytes));
        }
        let mut chain = Chain::new();
        for tx in &txs {
            let _ = chain.app.check_tx(tx);
        }
        let results = chain.block_raw(&txs);
        prop_assert_eq!(results.len(), txs.len());
    }
}
