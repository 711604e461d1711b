//! Shared fixtures for the tests: keys come from hm-testkit (generated once
//! per process), everything else is built from them deterministically.

use std::sync::OnceLock;

use hm_env::mem::SeededEntropy;
use hm_kernel::block::{Evidence, SignedVote, Vote, VoteKind};
use hm_kernel::validators::ValidatorSet;
use hm_wire::{Hash, SigningKey};

use crate::app::TrustConfig;
use crate::cert::{Authorities, Certificate, CertificateRequest, SignedRequest};
use crate::dns::{NameClaim, SignedNameClaim};
use crate::log::{LogHead, SignedTreeHead};
use crate::name::DnsName;
use crate::tx::{Report, Revocation, SignedRevocation, TrustTx};

/// Validity the test requests ask for: one day.
pub(crate) const VALIDITY_MS: u64 = 24 * 60 * 60 * 1000;

pub(crate) const CHAIN_ID: Hash = Hash([0xc1; 32]);

const AUTHORITIES: usize = 4;
const SUBJECTS: usize = 4;

pub(crate) fn entropy(seed: u64) -> SeededEntropy {
    SeededEntropy::new(seed, b"trustchain-test")
}

pub(crate) fn authority_key(i: usize) -> &'static SigningKey {
    assert!(i < AUTHORITIES, "at most {AUTHORITIES} test authorities");
    hm_testkit::signing_key("authority", i as u64)
}

pub(crate) fn authority_id(i: usize) -> Hash {
    authority_key(i).verifying_key().fingerprint()
}

pub(crate) fn subject_key(i: usize) -> &'static SigningKey {
    assert!(i < SUBJECTS, "at most {SUBJECTS} test subjects");
    hm_testkit::signing_key("subject", i as u64)
}

pub(crate) fn subject_id(i: usize) -> Hash {
    subject_key(i).verifying_key().fingerprint()
}

pub(crate) fn validators() -> ValidatorSet {
    ValidatorSet::new((0..AUTHORITIES).map(|i| (authority_key(i).verifying_key(), 1)))
        .expect("test validator set is valid")
}

pub(crate) fn authorities() -> Authorities {
    Authorities::from_validators(&validators())
}

pub(crate) fn name(text: &str) -> DnsName {
    DnsName::parse(text).expect("test name is valid")
}

pub(crate) fn config() -> TrustConfig {
    TrustConfig {
        zone: name("hm"),
        authorities: authorities(),
        chain_id: CHAIN_ID,
        validators: validators(),
    }
}

pub(crate) fn unsigned_request(key: &SigningKey, names: &[&str], nonce: u64) -> CertificateRequest {
    CertificateRequest {
        subject_key: key.verifying_key(),
        kem_key: hm_testkit::kem_public_key("kem", 0).clone(),
        dns_names: names.iter().map(|text| name(text)).collect(),
        validity_ms: VALIDITY_MS,
        requested_at_ms: 0,
        nonce,
    }
}

pub(crate) fn request(key: &SigningKey, names: &[&str], nonce: u64) -> SignedRequest {
    SignedRequest::sign(unsigned_request(key, names, nonce), key, &entropy(nonce))
}

pub(crate) fn authority_cert(
    authority: usize,
    key: &SigningKey,
    names: &[&str],
    nonce: u64,
    not_before_ms: u64,
) -> Certificate {
    Certificate::issue_by_authority(
        request(key, names, nonce),
        authority_key(authority),
        not_before_ms,
        &entropy(nonce + 1_000),
    )
}

/// A certificate authority `authority` really signed over a request for
/// subject `subject` that the subject did not sign (another key did).
pub(crate) fn forged_cert(
    authority: usize,
    subject: usize,
    nonce: u64,
    not_before_ms: u64,
) -> Certificate {
    let impostor = subject_key((subject + 1) % SUBJECTS);
    let signed = SignedRequest::sign(
        unsigned_request(subject_key(subject), &[], nonce),
        impostor,
        &entropy(nonce),
    );
    Certificate::issue_by_authority(
        signed,
        authority_key(authority),
        not_before_ms,
        &entropy(nonce + 2_000),
    )
}

pub(crate) fn claim(
    owner: usize,
    text: &str,
    certificate: Hash,
    sequence: u64,
    last: u16,
) -> SignedNameClaim {
    let claim = NameClaim {
        name: name(text),
        owner_key: subject_key(owner).verifying_key(),
        addrs: vec![std::net::Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, last)],
        certificate,
        sequence,
    };
    SignedNameClaim::sign(claim, subject_key(owner), &entropy(sequence + 3_000))
}

pub(crate) fn revocation(owner: usize, certificate: Hash) -> SignedRevocation {
    SignedRevocation::sign(
        Revocation {
            certificate,
            subject_key: subject_key(owner).verifying_key(),
        },
        subject_key(owner),
        &entropy(4_000),
    )
}

pub(crate) fn tree_head(authority: usize, head: LogHead) -> SignedTreeHead {
    SignedTreeHead::sign(head, authority_key(authority), &entropy(5_000 + head.size))
}

/// Two conflicting prevotes of authority `authority` (a validator).
pub(crate) fn equivocation(authority: usize, height: u64) -> Evidence {
    let index = validators()
        .index_of(&authority_id(authority))
        .expect("authorities are validators");
    let vote = |block: u8| Vote {
        kind: VoteKind::Prevote,
        height,
        round: 0,
        block_hash: Some(Hash([block; 32])),
        validator: index,
    };
    let key = authority_key(authority);
    Evidence::DuplicateVote {
        first: SignedVote::sign(&CHAIN_ID, vote(1), key, &entropy(6_000)),
        second: SignedVote::sign(&CHAIN_ID, vote(2), key, &entropy(6_001)),
    }
}

/// One transaction of every kind (not necessarily valid in any state).
pub(crate) fn sample_txs() -> &'static [TrustTx] {
    static TXS: OnceLock<Vec<TrustTx>> = OnceLock::new();
    TXS.get_or_init(|| {
        let certificate = authority_cert(0, subject_key(0), &["a.hm"], 1, 0);
        vec![
            TrustTx::LogCertificate(certificate.clone()),
            TrustTx::IssueCertificate(request(subject_key(1), &["b.hm", "c.hm"], 2)),
            TrustTx::Revoke(revocation(0, certificate.fingerprint())),
            TrustTx::RegisterName(claim(0, "a.hm", certificate.fingerprint(), 1, 1)),
            TrustTx::Report(Report::ForgedCertificate(forged_cert(1, 0, 3, 0))),
            TrustTx::Report(Report::UnloggedCertificate(certificate)),
            TrustTx::Report(Report::FalseTreeHead(tree_head(2, LogHead::empty()))),
            TrustTx::Report(Report::Equivocation(equivocation(3, 5))),
        ]
    })
}

/// Executes and commits one block of `txs` at `now_ms`.
pub(crate) fn run_block(
    app: &mut crate::app::TrustApp,
    txs: &[TrustTx],
    now_ms: u64,
) -> Vec<Result<(), hm_kernel::app::TxError>> {
    use hm_kernel::app::{Application, BlockContext};
    let transactions: Vec<_> = txs.iter().map(TrustTx::to_transaction).collect();
    let height = app.committed_height() + 1;
    let execution = app.execute_block(BlockContext::new(height, now_ms), &transactions);
    app.commit(height, &execution.updates).expect("in order");
    execution.results
}
