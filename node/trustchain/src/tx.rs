//! The transactions TrustApp executes, and the findings reports leave on
//! chain. The rules each transaction must pass are in [`crate::app`] (they
//! need the state); here are the formats and their stateless checks.

use hm_env::Entropy;
use hm_kernel::app::TxError;
use hm_kernel::block::{Evidence, Height, TRANSACTION_BYTES_MAX, Transaction};
use hm_wire::{Hash, Signature, SigningKey, VerifyingKey, WireError};
use serde::{Deserialize, Serialize};

use crate::cert::{Certificate, REVOKE_SIGN_DOMAIN, SignedRequest};
use crate::dns::SignedNameClaim;
use crate::log::SignedTreeHead;

/// Domain of [`Report::id`].
pub const REPORT_ID_DOMAIN: &str = "hm/trustchain/report-id/v1";

/// How long an authority has to log what it issues: a certificate signed by
/// an authority, not in the log, whose `not_before` is more than this
/// before the block timestamp is evidence against the authority. A minute
/// is many block intervals, so an honest authority whose `LogCertificate`
/// waits in a mempool is not caught by it.
pub const UNLOGGED_GRACE_MS: u64 = 60_000;

/// A subject withdraws one of its certificates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    /// Fingerprint of the certificate.
    pub certificate: Hash,
    /// The certificate's subject key (its fingerprint must be the subject).
    pub subject_key: VerifyingKey,
}

/// A revocation signed by the subject key ([`REVOKE_SIGN_DOMAIN`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedRevocation {
    pub revocation: Revocation,
    pub signature: Signature,
}

impl SignedRevocation {
    pub fn sign<E: Entropy + ?Sized>(
        revocation: Revocation,
        key: &SigningKey,
        entropy: &E,
    ) -> SignedRevocation {
        let signature = key.sign(REVOKE_SIGN_DOMAIN, &hm_wire::encode(&revocation), entropy);
        SignedRevocation {
            revocation,
            signature,
        }
    }

    pub fn verify(&self) -> Result<(), WireError> {
        self.revocation.subject_key.verify(
            REVOKE_SIGN_DOMAIN,
            &hm_wire::encode(&self.revocation),
            &self.signature,
        )
    }
}

/// Evidence of misbehaviour, each kind checkable by every node from the
/// report and the state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Report {
    /// An authority signed a certificate whose request the subject did not
    /// sign, or that binds a name another subject owned.
    ForgedCertificate(Certificate),
    /// An authority signed a valid certificate and did not log it within
    /// [`UNLOGGED_GRACE_MS`].
    UnloggedCertificate(Certificate),
    /// An authority signed a head the log never had.
    FalseTreeHead(SignedTreeHead),
    /// A validator signed two conflicting votes or proposals.
    Equivocation(Evidence),
}

impl Report {
    pub fn kind(&self) -> FindingKind {
        match self {
            Report::ForgedCertificate(_) => FindingKind::ForgedCertificate,
            Report::UnloggedCertificate(_) => FindingKind::UnloggedCertificate,
            Report::FalseTreeHead(_) => FindingKind::FalseTreeHead,
            Report::Equivocation(_) => FindingKind::Equivocation,
        }
    }

    /// Hash of the report's encoding.
    pub fn id(&self) -> Hash {
        hm_wire::hash(REPORT_ID_DOMAIN, &hm_wire::encode(self))
    }
}

/// What a finding is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum FindingKind {
    ForgedCertificate,
    UnloggedCertificate,
    FalseTreeHead,
    Equivocation,
}

impl FindingKind {
    pub const ALL: [FindingKind; 4] = [
        FindingKind::ForgedCertificate,
        FindingKind::UnloggedCertificate,
        FindingKind::FalseTreeHead,
        FindingKind::Equivocation,
    ];

    /// One byte per kind, for state keys.
    pub(crate) fn tag(self) -> u8 {
        match self {
            FindingKind::ForgedCertificate => 0,
            FindingKind::UnloggedCertificate => 1,
            FindingKind::FalseTreeHead => 2,
            FindingKind::Equivocation => 3,
        }
    }
}

/// A report the chain accepted: who misbehaved, how, when, and which
/// report proved it (Caesar's slashing reads these).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// Node id of the offender.
    pub offender: Hash,
    pub kind: FindingKind,
    /// Height of the block that accepted the report.
    pub height: Height,
    /// [`Report::id`] of the report.
    pub report: Hash,
}

/// Largest encoded finding (it is ≈ 80 bytes).
pub const FINDING_BYTES_MAX: usize = 256;

impl Finding {
    pub fn encode(&self) -> Vec<u8> {
        hm_wire::encode(self)
    }

    pub fn decode(bytes: &[u8]) -> Result<Finding, WireError> {
        hm_wire::decode(bytes, FINDING_BYTES_MAX)
    }
}

/// A TrustChain transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TrustTx {
    /// Log an authority-issued certificate (phase 1 issuance).
    LogCertificate(Certificate),
    /// The chain issues a certificate for a signed request (phase 2+).
    IssueCertificate(SignedRequest),
    /// The subject withdraws one of its certificates.
    Revoke(SignedRevocation),
    /// Register or update a name.
    RegisterName(SignedNameClaim),
    /// Evidence against an authority or validator.
    Report(Report),
}

impl TrustTx {
    pub fn encode(&self) -> Vec<u8> {
        hm_wire::encode(self)
    }

    pub fn to_transaction(&self) -> Transaction {
        Transaction(self.encode())
    }

    /// Bounded ([`TRANSACTION_BYTES_MAX`]), canonical decoding, then the
    /// stateless limits of the payload (certificate structure, request and
    /// claim limits). Signatures are checked at execution.
    pub fn decode(bytes: &[u8]) -> Result<TrustTx, TxError> {
        if bytes.len() > TRANSACTION_BYTES_MAX {
            return Err(TxError::TooLarge { len: bytes.len() });
        }
        let tx: TrustTx = hm_wire::decode(bytes, TRANSACTION_BYTES_MAX)
            .map_err(|error| TxError::Malformed(error.to_string()))?;
        tx.check_limits()?;
        Ok(tx)
    }

    pub fn from_transaction(tx: &Transaction) -> Result<TrustTx, TxError> {
        TrustTx::decode(&tx.0)
    }

    fn check_limits(&self) -> Result<(), TxError> {
        let malformed = |error: &dyn std::fmt::Display| TxError::Malformed(error.to_string());
        match self {
            TrustTx::LogCertificate(certificate)
            | TrustTx::Report(Report::ForgedCertificate(certificate))
            | TrustTx::Report(Report::UnloggedCertificate(certificate)) => {
                // The limits bound every field, so a certificate that
                // passes them is within CERTIFICATE_BYTES_MAX (tested).
                certificate.check_limits().map_err(|e| malformed(&e))
            }
            TrustTx::IssueCertificate(request) => {
                request.request.check_limits().map_err(|e| malformed(&e))
            }
            TrustTx::RegisterName(claim) => claim.claim.check_limits().map_err(|e| malformed(&e)),
            TrustTx::Revoke(_)
            | TrustTx::Report(Report::FalseTreeHead(_))
            | TrustTx::Report(Report::Equivocation(_)) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{self, entropy};
    use proptest::prelude::*;

    #[test]
    fn every_kind_round_trips() {
        for tx in testkit::sample_txs() {
            let bytes = tx.encode();
            assert!(bytes.len() <= TRANSACTION_BYTES_MAX);
            assert_eq!(TrustTx::decode(&bytes), Ok(tx.clone()));
            assert_eq!(
                TrustTx::from_transaction(&tx.to_transaction()),
                Ok(tx.clone())
            );
        }
    }

    #[test]
    fn oversized_and_malformed_are_refused() {
        assert_eq!(
            TrustTx::decode(&vec![0; TRANSACTION_BYTES_MAX + 1]),
            Err(TxError::TooLarge {
                len: TRANSACTION_BYTES_MAX + 1
            })
        );
        assert!(matches!(
            TrustTx::decode(&[9, 0, 0, 0]),
            Err(TxError::Malformed(_))
        ));
        // A certificate that decodes but breaks the limits (window longer
        // than requested) is refused at decoding, before any signature work.
        let mut certificate = testkit::authority_cert(0, testkit::subject_key(0), &[], 20, 0);
        certificate.not_after_ms += 1;
        let bytes = TrustTx::LogCertificate(certificate).encode();
        assert!(
            matches!(TrustTx::decode(&bytes), Err(TxError::Malformed(m)) if m.contains("window"))
        );
    }

    #[test]
    fn revocation_is_signed_by_the_subject() {
        let revocation = Revocation {
            certificate: Hash([4; 32]),
            subject_key: testkit::subject_key(0).verifying_key(),
        };
        let signed =
            SignedRevocation::sign(revocation.clone(), testkit::subject_key(0), &entropy(1));
        assert_eq!(signed.verify(), Ok(()));
        let forged = SignedRevocation::sign(revocation, testkit::subject_key(1), &entropy(2));
        assert_eq!(forged.verify(), Err(WireError::BadSignature));
    }

    #[test]
    fn finding_round_trips_within_its_bound() {
        let finding = Finding {
            offender: Hash([1; 32]),
            kind: FindingKind::FalseTreeHead,
            height: 9,
            report: Hash([2; 32]),
        };
        let bytes = finding.encode();
        assert!(bytes.len() <= FINDING_BYTES_MAX);
        assert_eq!(Finding::decode(&bytes), Ok(finding));
        let tags: Vec<u8> = FindingKind::ALL.iter().map(|kind| kind.tag()).collect();
        assert_eq!(tags, vec![0, 1, 2, 3]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn mutated_transactions_never_panic_and_decode_canonically(
            pick in any::<prop::sample::Index>(),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
            cut in any::<prop::sample::Index>(),
            truncate in any::<bool>(),
        ) {
            let samples = testkit::sample_txs();
            let mut bytes = samples[pick.index(samples.len())].encode();
            for (at, value) in flips {
                let at = at.index(bytes.len());
                bytes[at] = value;
            }
            if truncate {
                bytes.truncate(cut.index(bytes.len()));
            }
            if let Ok(tx) = TrustTx::decode(&bytes) {
                prop_assert_eq!(tx.encode(), bytes);
            }
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
            if let Ok(tx) = TrustTx::decode(&bytes) {
                prop_assert_eq!(tx.encode(), bytes.clone());
            }
            if let Ok(finding) = Finding::decode(&bytes) {
                prop_assert_eq!(finding.encode(), bytes);
            }
        }
    }
}
