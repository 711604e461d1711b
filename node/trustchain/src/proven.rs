//! What a light client proves about TrustChain: which state keys answer a
//! question, and what their values mean. Pure: the caller hands in only
//! values (or absences) it has already proven against a trusted header's
//! state root (`hm_kernel::light`); this module never sees a proof, a
//! connection or a clock.
//!
//! A certificate's standing takes three keys — its `cert/` record, the
//! subject's `revoked-subject/` entry (equivocation cuts every earlier
//! certificate) and, for an authority's certificate, the authority's
//! `revoked-authority/` entry — the same reads [`crate::TrustApp`] makes
//! for a replica, so a light client and a replica reach the same verdict
//! from the same state.

use hm_wire::{Hash, WireError};

use crate::app::CertStatus;
use crate::cert::{Certificate, Issuer};
use crate::keys::{self, CertRecord, SubjectRevocation};
use crate::name::DnsName;

/// The keys whose proven values give a certificate's standing, in the
/// order [`certificate_standing`] takes them.
pub fn certificate_keys(fingerprint: &Hash, subject: &Hash, issuer: &Issuer) -> Vec<Vec<u8>> {
    let mut keys = vec![keys::cert(fingerprint), keys::revoked_subject(subject)];
    if let Issuer::Authority(authority) = issuer {
        keys.push(keys::revoked_authority(authority));
    }
    keys
}

/// A logged certificate's record and status, as proven.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvenCertificate {
    pub fingerprint: Hash,
    pub subject: Hash,
    pub issuer: Issuer,
    pub log_index: u64,
    pub not_before_ms: u64,
    pub not_after_ms: u64,
    pub status: CertStatus,
}

impl ProvenCertificate {
    /// Usable (nothing revoked) and inside its validity window at `now_ms`.
    pub fn is_usable_at(&self, now_ms: u64) -> bool {
        self.status.is_usable() && self.not_before_ms <= now_ms && now_ms < self.not_after_ms
    }
}

/// Why proven values do not describe a certificate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProvenError {
    #[error("expected {expected} proven values for a certificate's standing, got {got}")]
    WrongCount { expected: usize, got: usize },
    #[error("the state holds a malformed record under {key}: {error}")]
    Malformed { key: &'static str, error: WireError },
    #[error("the record under cert/{fingerprint} is for subject {recorded}, not {expected}")]
    WrongSubject {
        fingerprint: Hash,
        recorded: Hash,
        expected: Hash,
    },
}

/// A certificate's standing from the proven values of
/// [`certificate_keys`]`(fingerprint, subject, issuer)`, in that order;
/// `Ok(None)`: not logged.
pub fn certificate_standing(
    fingerprint: &Hash,
    subject: &Hash,
    issuer: &Issuer,
    values: &[Option<Vec<u8>>],
) -> Result<Option<ProvenCertificate>, ProvenError> {
    let expected = certificate_keys(fingerprint, subject, issuer).len();
    if values.len() != expected {
        return Err(ProvenError::WrongCount {
            expected,
            got: values.len(),
        });
    }
    let Some(record_bytes) = &values[0] else {
        return Ok(None);
    };
    let record: CertRecord =
        keys::decode_record(record_bytes).map_err(|error| ProvenError::Malformed {
            key: "cert/",
            error,
        })?;
    if record.subject != *subject {
        return Err(ProvenError::WrongSubject {
            fingerprint: *fingerprint,
            recorded: record.subject,
            expected: *subject,
        });
    }
    let cut = match &values[1] {
        Some(bytes) => {
            let revocation: SubjectRevocation =
                keys::decode_record(bytes).map_err(|error| ProvenError::Malformed {
                    key: "revoked-subject/",
                    error,
                })?;
            record.log_index < revocation.log_size
        }
        None => false,
    };
    // The record names its issuer; an authority's revocation is read only
    // when the caller asked with that authority.
    let issuer_revoked = match (&record.issuer, issuer, values.get(2)) {
        (Issuer::Authority(recorded), Issuer::Authority(asked), Some(value))
            if recorded == asked =>
        {
            value.is_some()
        }
        (Issuer::Chain { .. }, _, _) => false,
        // Recorded by another authority than the caller named: the
        // caller's proof says nothing about it, so it is not usable.
        _ => true,
    };
    Ok(Some(ProvenCertificate {
        fingerprint: *fingerprint,
        subject: record.subject,
        issuer: record.issuer,
        log_index: record.log_index,
        not_before_ms: record.not_before_ms,
        not_after_ms: record.not_after_ms,
        status: CertStatus {
            log_index: record.log_index,
            revoked: record.revoked || cut,
            issuer_revoked,
        },
    }))
}

/// `request/<id>`: the log index of the certificate the chain issued for a
/// certificate request (`SignedRequest::id`).
pub fn request_key(request_id: &Hash) -> Vec<u8> {
    keys::request(request_id)
}

/// The log index a proven `request/` value names.
pub fn request_log_index(value: &[u8]) -> Option<u64> {
    keys::parse_u64(value)
}

/// `log/<index>`: the logged certificate itself.
pub fn log_entry_key(index: u64) -> Vec<u8> {
    keys::log(index)
}

/// The certificate a proven `log/` value holds.
pub fn log_entry(value: &[u8]) -> Result<Certificate, crate::cert::CertError> {
    Certificate::decode(value)
}

/// `name/<H(name)>`: a name's DNS record.
pub fn name_key(name: &DnsName) -> Vec<u8> {
    keys::name(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{Revoked, encode_record};

    fn record(issuer: Issuer, revoked: bool) -> Vec<u8> {
        encode_record(&CertRecord {
            log_index: 5,
            subject: Hash([1; 32]),
            issuer,
            not_before_ms: 100,
            not_after_ms: 200,
            revoked,
        })
    }

    fn standing(issuer: Issuer, values: &[Option<Vec<u8>>]) -> Option<ProvenCertificate> {
        certificate_standing(&Hash([9; 32]), &Hash([1; 32]), &issuer, values)
            .expect("well-formed values")
    }

    #[test]
    fn an_absent_record_is_not_logged() {
        let chain = Issuer::Chain { height: 3 };
        assert_eq!(standing(chain, &[None, None]), None);
    }

    #[test]
    fn a_logged_certificate_is_usable_only_inside_its_window() {
        let chain = Issuer::Chain { height: 3 };
        let proven = standing(chain, &[Some(record(chain, false)), None]).expect("logged");
        assert!(proven.is_usable_at(150));
        assert!(!proven.is_usable_at(99));
        assert!(!proven.is_usable_at(200));
    }

    #[test]
    fn revocations_make_it_unusable() {
        let chain = Issuer::Chain { height: 3 };
        let revoked = standing(chain, &[Some(record(chain, true)), None]).expect("logged");
        assert!(!revoked.is_usable_at(150));
        let cut = encode_record(&SubjectRevocation {
            height: 9,
            log_size: 6,
            finding: 0,
        });
        let cut = standing(chain, &[Some(record(chain, false)), Some(cut)]).expect("logged");
        assert!(cut.status.revoked);
        let later = encode_record(&SubjectRevocation {
            height: 9,
            log_size: 5,
            finding: 0,
        });
        let later = standing(chain, &[Some(record(chain, false)), Some(later)]).expect("logged");
        assert!(
            !later.status.revoked,
            "only certificates logged before the cut"
        );
        let authority = Issuer::Authority(Hash([7; 32]));
        let gone = encode_record(&Revoked {
            height: 4,
            finding: 1,
        });
        let gone = standing(
            authority,
            &[Some(record(authority, false)), None, Some(gone)],
        )
        .expect("logged");
        assert!(gone.status.issuer_revoked);
        let fine =
            standing(authority, &[Some(record(authority, false)), None, None]).expect("logged");
        assert!(fine.is_usable_at(150));
    }

    #[test]
    fn mismatched_values_are_errors_not_verdicts() {
        let chain = Issuer::Chain { height: 3 };
        let wrong_count = certificate_standing(&Hash([9; 32]), &Hash([1; 32]), &chain, &[None]);
        assert!(matches!(wrong_count, Err(ProvenError::WrongCount { .. })));
        let other_subject = certificate_standing(
            &Hash([9; 32]),
            &Hash([2; 32]),
            &chain,
            &[Some(record(chain, false)), None],
        );
        assert!(matches!(
            other_subject,
            Err(ProvenError::WrongSubject { .. })
        ));
        let garbage = certificate_standing(
            &Hash([9; 32]),
            &Hash([1; 32]),
            &chain,
            &[Some(vec![0xff; 3]), None],
        );
        assert!(matches!(garbage, Err(ProvenError::Malformed { .. })));
        // An authority certificate recorded under another authority than
        // the one asked about is never usable.
        let asked = Issuer::Authority(Hash([8; 32]));
        let recorded = Issuer::Authority(Hash([7; 32]));
        let other = standing(asked, &[Some(record(recorded, false)), None, None]).expect("logged");
        assert!(!other.status.is_usable());
    }
}
