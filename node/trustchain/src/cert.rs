//! Certificates: what a node asks for, what an authority or the chain
//! issues, and how anyone checks them.
//!
//! A [`CertificateRequest`] names the subject's FALCON-1024 verifying key
//! (whose fingerprint is the node id), its ML-KEM-1024 public key, the DNS
//! names it wants and for how long. The subject signs it ([`SignedRequest`]):
//! that signature is the proof of possession of the FALCON key, and it also
//! vouches for the KEM key, because ML-KEM is a key-encapsulation mechanism
//! and cannot sign anything itself.
//!
//! A [`Certificate`] carries the whole signed request, so anyone can check
//! the subject consented to exactly these keys and names: an issuer cannot
//! bind someone's node id to other keys or names. It is issued either by an
//! [`Issuer::Authority`] (a genesis validator acting as a CA in phase 1,
//! which signs the validity window and its own id) or by the
//! [`Issuer::Chain`] (a committed `IssueCertificate` transaction from phase
//! 2 on; no signature: the commit certificate of the block is the proof).

use std::collections::BTreeMap;

use hm_env::Entropy;
use hm_kernel::block::Height;
use hm_kernel::validators::ValidatorSet;
use hm_wire::{Hash, KemPublicKey, Signature, SigningKey, VerifyingKey, WireError, merkle};
use serde::{Deserialize, Serialize};

use crate::name::DnsName;

/// Domain of the subject's signature over its [`CertificateRequest`].
pub const REQUEST_SIGN_DOMAIN: &str = "hm/trustchain/request/v1";
/// Domain of an authority's signature over the issued part of a certificate.
pub const ISSUE_SIGN_DOMAIN: &str = "hm/trustchain/issue/v1";
/// Domain of an authority's signature over a log head.
pub const TREE_HEAD_SIGN_DOMAIN: &str = "hm/trustchain/tree-head/v1";
/// Domain of a name owner's signature over a name claim.
pub const NAME_SIGN_DOMAIN: &str = "hm/trustchain/name/v1";
/// Domain of a subject's signature over a revocation.
pub const REVOKE_SIGN_DOMAIN: &str = "hm/trustchain/revoke/v1";
/// Domain of [`SignedRequest::id`].
pub const REQUEST_ID_DOMAIN: &str = "hm/trustchain/request-id/v1";

/// Most DNS names one certificate binds: a node has a handful of names;
/// more would let one certificate squat a zone.
pub const DNS_NAMES_PER_CERT_MAX: usize = 8;

/// Longest validity of any certificate: 30 days. Short lives keep
/// revocation lists short and force keys to be re-attested.
pub const CERT_VALIDITY_MS_MAX: u64 = 30 * 24 * 60 * 60 * 1000;

/// Largest encoded certificate. A maximal one is ≈ 8.2 KB (two FALCON
/// signatures of 1,280 B, a FALCON key of 1,793 B, an ML-KEM key of 1,568
/// B, eight 253-byte names); 16 KiB leaves room and bounds decoding.
pub const CERTIFICATE_BYTES_MAX: usize = 16 << 10;

/// Largest encoded signed request (it is part of a certificate, so the
/// certificate bound covers it).
pub const SIGNED_REQUEST_BYTES_MAX: usize = CERTIFICATE_BYTES_MAX;

/// Why a request or certificate is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    #[error("certificate bytes do not decode: {0}")]
    Decode(#[from] WireError),
    #[error("the request names {count} DNS names, more than {DNS_NAMES_PER_CERT_MAX}")]
    TooManyNames { count: usize },
    #[error("the request names {name} twice")]
    DuplicateName { name: DnsName },
    #[error(
        "the requested validity is {validity_ms} ms; it must be 1..={CERT_VALIDITY_MS_MAX} ms (30 days)"
    )]
    Validity { validity_ms: u64 },
    #[error(
        "the request of subject {subject} is not signed by its subject key (no proof of possession)"
    )]
    BadRequestSignature { subject: Hash },
    #[error(
        "the validity window {not_before_ms}..{not_after_ms} ms is empty, inverted or longer than the {validity_ms} ms the subject requested"
    )]
    Window {
        not_before_ms: u64,
        not_after_ms: u64,
        validity_ms: u64,
    },
    #[error("issuer {issuer} is not one of the authorities")]
    UnknownAuthority { issuer: Hash },
    #[error("the certificate names authority {issuer} as issuer but carries no issuer signature")]
    MissingIssuerSignature { issuer: Hash },
    #[error(
        "the certificate was issued by the chain at height {height} and must not carry an issuer signature"
    )]
    UnexpectedIssuerSignature { height: Height },
    #[error("the issuer signature of authority {issuer} does not verify")]
    BadIssuerSignature { issuer: Hash },
}

/// What a subject asks to be certified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateRequest {
    /// The subject's FALCON-1024 key; its fingerprint is the node id.
    pub subject_key: VerifyingKey,
    /// The subject's ML-KEM-1024 key, vouched for by the request signature.
    pub kem_key: KemPublicKey,
    /// Names to bind, distinct, at most [`DNS_NAMES_PER_CERT_MAX`].
    pub dns_names: Vec<DnsName>,
    /// Requested lifetime, 1..=[`CERT_VALIDITY_MS_MAX`] ms.
    pub validity_ms: u64,
    /// The subject's clock when it asked (informational).
    pub requested_at_ms: u64,
    /// Makes otherwise equal requests distinct (renewals).
    pub nonce: u64,
}

impl CertificateRequest {
    /// The node id the request is for: the fingerprint of the subject key.
    pub fn subject(&self) -> Hash {
        self.subject_key.fingerprint()
    }

    /// Structural limits: names count and distinctness, validity range.
    pub fn check_limits(&self) -> Result<(), CertError> {
        if self.dns_names.len() > DNS_NAMES_PER_CERT_MAX {
            return Err(CertError::TooManyNames {
                count: self.dns_names.len(),
            });
        }
        for (position, name) in self.dns_names.iter().enumerate() {
            if self.dns_names[..position].contains(name) {
                return Err(CertError::DuplicateName { name: name.clone() });
            }
        }
        if self.validity_ms == 0 || self.validity_ms > CERT_VALIDITY_MS_MAX {
            return Err(CertError::Validity {
                validity_ms: self.validity_ms,
            });
        }
        Ok(())
    }
}

/// A request and the subject's signature over it (proof of possession).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedRequest {
    pub request: CertificateRequest,
    pub signature: Signature,
}

impl SignedRequest {
    /// Signs `request` with `key`, which must be the key the request names
    /// (otherwise [`SignedRequest::verify`] refuses the result).
    pub fn sign<E: Entropy + ?Sized>(
        request: CertificateRequest,
        key: &SigningKey,
        entropy: &E,
    ) -> SignedRequest {
        let signature = key.sign(REQUEST_SIGN_DOMAIN, &hm_wire::encode(&request), entropy);
        SignedRequest { request, signature }
    }

    /// Limits, then the proof of possession: the request is signed by the
    /// subject key it names.
    pub fn verify(&self) -> Result<(), CertError> {
        self.request.check_limits()?;
        self.request
            .subject_key
            .verify(
                REQUEST_SIGN_DOMAIN,
                &hm_wire::encode(&self.request),
                &self.signature,
            )
            .map_err(|_| CertError::BadRequestSignature {
                subject: self.subject(),
            })
    }

    /// Identity of the request: the hash of the request's encoding (not of
    /// the signature, so re-signing the same request or tampering with the
    /// signature bytes never makes a new request). The chain certifies each
    /// id once.
    pub fn id(&self) -> Hash {
        hm_wire::hash(REQUEST_ID_DOMAIN, &hm_wire::encode(&self.request))
    }

    /// The node id: `subject_key.fingerprint()`.
    pub fn subject(&self) -> Hash {
        self.request.subject()
    }

    pub fn encode(&self) -> Vec<u8> {
        hm_wire::encode(self)
    }

    /// Bounded, canonical decoding, then [`CertificateRequest::check_limits`]
    /// (the signature is checked by [`SignedRequest::verify`]).
    pub fn decode(bytes: &[u8]) -> Result<SignedRequest, CertError> {
        let signed: SignedRequest = hm_wire::decode(bytes, SIGNED_REQUEST_BYTES_MAX)?;
        signed.request.check_limits()?;
        Ok(signed)
    }
}

/// Who issued a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Issuer {
    /// A genesis validator acting as a CA; its node id.
    Authority(Hash),
    /// The chain itself, by the `IssueCertificate` transaction committed at
    /// `height`.
    Chain { height: Height },
}

/// The part of a certificate an authority signs.
#[derive(Serialize)]
struct IssuedPart<'a> {
    request_id: Hash,
    not_before_ms: u64,
    not_after_ms: u64,
    issuer: &'a Issuer,
}

/// A certified binding of a node id to its keys and names for a window of
/// time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Certificate {
    /// The subject's signed request, carried whole (consent travels along).
    pub request: SignedRequest,
    /// First millisecond of validity (Unix epoch).
    pub not_before_ms: u64,
    /// First millisecond after validity.
    pub not_after_ms: u64,
    pub issuer: Issuer,
    /// The authority's signature ([`ISSUE_SIGN_DOMAIN`]) over the request id,
    /// the window and the issuer; `None` for chain-issued certificates.
    pub issuer_signature: Option<Signature>,
}

impl Certificate {
    /// An authority issues `request` from `not_before_ms` for the requested
    /// validity (capped at [`CERT_VALIDITY_MS_MAX`]).
    ///
    /// It does not check the request: an honest authority calls
    /// [`SignedRequest::verify`] (and checks name ownership) first. Issuing
    /// over a request that does not verify is provable misbehaviour (see
    /// the `ForgedCertificate` report).
    pub fn issue_by_authority<E: Entropy + ?Sized>(
        request: SignedRequest,
        ca_key: &SigningKey,
        not_before_ms: u64,
        entropy: &E,
    ) -> Certificate {
        let issuer = Issuer::Authority(ca_key.verifying_key().fingerprint());
        let not_after_ms = window_end(not_before_ms, request.request.validity_ms);
        let tbs = issued_part_bytes(&request, not_before_ms, not_after_ms, &issuer);
        let signature = ca_key.sign(ISSUE_SIGN_DOMAIN, &tbs, entropy);
        Certificate {
            request,
            not_before_ms,
            not_after_ms,
            issuer,
            issuer_signature: Some(signature),
        }
    }

    /// The certificate the chain issues for `request` in the block at
    /// `height` with timestamp `timestamp_ms`.
    pub fn issue_by_chain(
        request: SignedRequest,
        height: Height,
        timestamp_ms: u64,
    ) -> Certificate {
        let not_after_ms = window_end(timestamp_ms, request.request.validity_ms);
        Certificate {
            request,
            not_before_ms: timestamp_ms,
            not_after_ms,
            issuer: Issuer::Chain { height },
            issuer_signature: None,
        }
    }

    /// The RFC 9162 leaf hash of the encoding: identifies the certificate
    /// and is exactly its leaf in the log.
    pub fn fingerprint(&self) -> Hash {
        merkle::leaf_hash(&self.encode())
    }

    /// The node id the certificate is for.
    pub fn subject(&self) -> Hash {
        self.request.subject()
    }

    /// The names the certificate binds.
    pub fn dns_names(&self) -> &[DnsName] {
        &self.request.request.dns_names
    }

    pub fn encode(&self) -> Vec<u8> {
        hm_wire::encode(self)
    }

    /// Bounded ([`CERTIFICATE_BYTES_MAX`]), canonical decoding, then
    /// [`Certificate::check_limits`]. Signatures are checked by
    /// [`Certificate::verify_signatures`].
    pub fn decode(bytes: &[u8]) -> Result<Certificate, CertError> {
        let certificate: Certificate = hm_wire::decode(bytes, CERTIFICATE_BYTES_MAX)?;
        certificate.check_limits()?;
        Ok(certificate)
    }

    /// Structure without cryptography: the request's limits, a window of
    /// 1..=requested validity, and an issuer signature exactly when an
    /// authority issued it.
    pub fn check_limits(&self) -> Result<(), CertError> {
        let request = &self.request.request;
        request.check_limits()?;
        let window = self.not_after_ms.checked_sub(self.not_before_ms);
        if !matches!(window, Some(w) if w >= 1 && w <= request.validity_ms) {
            return Err(CertError::Window {
                not_before_ms: self.not_before_ms,
                not_after_ms: self.not_after_ms,
                validity_ms: request.validity_ms,
            });
        }
        match (&self.issuer, &self.issuer_signature) {
            (Issuer::Authority(issuer), None) => {
                Err(CertError::MissingIssuerSignature { issuer: *issuer })
            }
            (Issuer::Chain { height }, Some(_)) => {
                Err(CertError::UnexpectedIssuerSignature { height: *height })
            }
            _ => Ok(()),
        }
    }

    /// Checks the limits, the subject's proof of possession and, for an
    /// authority-issued certificate, that the issuer is one of
    /// `authorities` and its signature verifies. A chain-issued certificate
    /// has no signature to check: it is valid only by being in the log.
    pub fn verify_signatures(&self, authorities: &Authorities) -> Result<(), CertError> {
        self.check_limits()?;
        self.request.verify()?;
        self.verify_issuer_signature(authorities)
    }

    /// Only the authority's signature (and the structure): whether the
    /// issuer really signed this certificate, whatever the request says.
    /// This is what makes a forged certificate attributable.
    pub fn verify_issuer_signature(&self, authorities: &Authorities) -> Result<(), CertError> {
        self.check_limits()?;
        match (&self.issuer, &self.issuer_signature) {
            (Issuer::Authority(issuer), Some(signature)) => {
                let key = authorities
                    .get(issuer)
                    .ok_or(CertError::UnknownAuthority { issuer: *issuer })?;
                let tbs = issued_part_bytes(
                    &self.request,
                    self.not_before_ms,
                    self.not_after_ms,
                    &self.issuer,
                );
                key.verify(ISSUE_SIGN_DOMAIN, &tbs, signature)
                    .map_err(|_| CertError::BadIssuerSignature { issuer: *issuer })
            }
            (Issuer::Authority(issuer), None) => {
                Err(CertError::MissingIssuerSignature { issuer: *issuer })
            }
            (Issuer::Chain { .. }, None) => Ok(()),
            (Issuer::Chain { height }, Some(_)) => {
                Err(CertError::UnexpectedIssuerSignature { height: *height })
            }
        }
    }

    /// The authority that signed it, if any.
    pub fn authority(&self) -> Option<Hash> {
        match self.issuer {
            Issuer::Authority(id) => Some(id),
            Issuer::Chain { .. } => None,
        }
    }

    /// `not_before_ms <= now_ms < not_after_ms`.
    pub fn is_current(&self, now_ms: u64) -> bool {
        self.not_before_ms <= now_ms && now_ms < self.not_after_ms
    }
}

fn window_end(not_before_ms: u64, validity_ms: u64) -> u64 {
    not_before_ms.saturating_add(validity_ms.min(CERT_VALIDITY_MS_MAX))
}

fn issued_part_bytes(
    request: &SignedRequest,
    not_before_ms: u64,
    not_after_ms: u64,
    issuer: &Issuer,
) -> Vec<u8> {
    hm_wire::encode(&IssuedPart {
        request_id: request.id(),
        not_before_ms,
        not_after_ms,
        issuer,
    })
}

/// The genesis validators acting as certificate authorities: node id →
/// verifying key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Authorities {
    keys: BTreeMap<Hash, VerifyingKey>,
}

impl Authorities {
    pub fn new(keys: impl IntoIterator<Item = VerifyingKey>) -> Authorities {
        Authorities {
            keys: keys
                .into_iter()
                .map(|key| (key.fingerprint(), key))
                .collect(),
        }
    }

    /// Every validator of the genesis set is an authority.
    pub fn from_validators(validators: &ValidatorSet) -> Authorities {
        Authorities::new(
            validators
                .iter()
                .map(|(_, validator)| validator.key.clone()),
        )
    }

    pub fn get(&self, id: &Hash) -> Option<&VerifyingKey> {
        self.keys.get(id)
    }

    pub fn contains(&self, id: &Hash) -> bool {
        self.keys.contains_key(id)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Node ids in order.
    pub fn ids(&self) -> impl Iterator<Item = &Hash> {
        self.keys.keys()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{self, entropy};
    use proptest::prelude::*;

    #[test]
    fn request_signature_is_proof_of_possession() {
        let signed = testkit::request(testkit::subject_key(0), &["a.hm"], 1);
        assert_eq!(signed.verify(), Ok(()));
        assert_eq!(
            signed.subject(),
            testkit::subject_key(0).verifying_key().fingerprint()
        );
        // Signed by someone else: the request names key 0 but key 1 signed.
        let stolen =
            SignedRequest::sign(signed.request.clone(), testkit::subject_key(1), &entropy(1));
        assert_eq!(
            stolen.verify(),
            Err(CertError::BadRequestSignature {
                subject: signed.subject()
            })
        );
        // Any change to the request after signing breaks it.
        let mut altered = signed.clone();
        altered.request.validity_ms -= 1;
        assert!(matches!(
            altered.verify(),
            Err(CertError::BadRequestSignature { .. })
        ));
        // The id ignores the signature bytes but not the request.
        let resigned =
            SignedRequest::sign(signed.request.clone(), testkit::subject_key(0), &entropy(2));
        assert_ne!(resigned.signature, signed.signature);
        assert_eq!(resigned.id(), signed.id());
        assert_ne!(altered.id(), signed.id());
    }

    #[test]
    fn request_limits() {
        let key = testkit::subject_key(0);
        let names: Vec<String> = (0..=DNS_NAMES_PER_CERT_MAX)
            .map(|i| format!("n{i}.hm"))
            .collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let too_many = testkit::request(key, &refs, 1);
        assert_eq!(
            too_many.verify(),
            Err(CertError::TooManyNames {
                count: DNS_NAMES_PER_CERT_MAX + 1
            })
        );
        let at_max = testkit::request(key, &refs[..DNS_NAMES_PER_CERT_MAX], 2);
        assert_eq!(at_max.verify(), Ok(()));
        let duplicate = testkit::request(key, &["a.hm", "b.hm", "a.hm"], 3);
        assert!(matches!(
            duplicate.verify(),
            Err(CertError::DuplicateName { .. })
        ));
        for validity_ms in [0, CERT_VALIDITY_MS_MAX + 1] {
            let mut request = testkit::request(key, &[], 4).request;
            request.validity_ms = validity_ms;
            let signed = SignedRequest::sign(request, key, &entropy(3));
            assert_eq!(signed.verify(), Err(CertError::Validity { validity_ms }));
        }
    }

    #[test]
    fn authority_certificate_verifies_and_binds_its_window() {
        let authorities = testkit::authorities();
        let certificate = testkit::authority_cert(0, testkit::subject_key(0), &["a.hm"], 5, 1_000);
        assert_eq!(certificate.verify_signatures(&authorities), Ok(()));
        assert_eq!(certificate.not_before_ms, 1_000);
        assert_eq!(certificate.not_after_ms, 1_000 + testkit::VALIDITY_MS);
        assert!(!certificate.is_current(999));
        assert!(certificate.is_current(1_000));
        assert!(certificate.is_current(1_000 + testkit::VALIDITY_MS - 1));
        assert!(!certificate.is_current(1_000 + testkit::VALIDITY_MS));

        // Moving the window breaks the signature; stretching it past the
        // requested validity breaks the limits.
        let mut moved = certificate.clone();
        moved.not_before_ms += 1;
        assert!(matches!(
            moved.verify_signatures(&authorities),
            Err(CertError::BadIssuerSignature { .. })
        ));
        let mut extended = certificate.clone();
        extended.not_after_ms += 1;
        assert!(matches!(
            extended.check_limits(),
            Err(CertError::Window { .. })
        ));

        // An authority outside the set is unknown; the set decides.
        assert_eq!(
            certificate.verify_signatures(&Authorities::default()),
            Err(CertError::UnknownAuthority {
                issuer: testkit::authority_id(0)
            })
        );
        // Claiming another authority as issuer does not verify.
        let mut reattributed = certificate.clone();
        reattributed.issuer = Issuer::Authority(testkit::authority_id(1));
        assert_eq!(
            reattributed.verify_signatures(&authorities),
            Err(CertError::BadIssuerSignature {
                issuer: testkit::authority_id(1)
            })
        );
    }

    #[test]
    fn issuer_shape_is_checked() {
        let authorities = testkit::authorities();
        let certificate = testkit::authority_cert(0, testkit::subject_key(0), &[], 6, 0);
        let mut unsigned = certificate.clone();
        unsigned.issuer_signature = None;
        assert!(matches!(
            unsigned.verify_signatures(&authorities),
            Err(CertError::MissingIssuerSignature { .. })
        ));
        let chain = Certificate::issue_by_chain(certificate.request.clone(), 7, 50);
        assert_eq!(chain.verify_signatures(&authorities), Ok(()));
        assert_eq!(chain.issuer, Issuer::Chain { height: 7 });
        assert_eq!(chain.not_after_ms, 50 + testkit::VALIDITY_MS);
        let mut signed_chain = chain.clone();
        signed_chain.issuer_signature = certificate.issuer_signature.clone();
        assert_eq!(
            signed_chain.verify_signatures(&authorities),
            Err(CertError::UnexpectedIssuerSignature { height: 7 })
        );
    }

    #[test]
    fn validity_is_capped_at_issue() {
        let key = testkit::subject_key(0);
        let mut request = testkit::request(key, &[], 8).request;
        request.validity_ms = CERT_VALIDITY_MS_MAX;
        let signed = SignedRequest::sign(request, key, &entropy(4));
        let certificate = Certificate::issue_by_chain(signed, 1, u64::MAX - 5);
        // The end saturates rather than wrapping (a shorter window is
        // within what the subject asked for).
        assert_eq!(certificate.not_after_ms, u64::MAX);
        assert_eq!(certificate.check_limits(), Ok(()));
    }

    #[test]
    fn forged_request_still_carries_an_attributable_issuer_signature() {
        let authorities = testkit::authorities();
        let forged = testkit::forged_cert(0, 0, 9, 0);
        assert!(matches!(
            forged.verify_signatures(&authorities),
            Err(CertError::BadRequestSignature { .. })
        ));
        assert_eq!(forged.verify_issuer_signature(&authorities), Ok(()));
    }

    #[test]
    fn encoding_round_trips_and_fingerprint_is_the_log_leaf() {
        let certificate =
            testkit::authority_cert(0, testkit::subject_key(0), &["a.hm", "b.hm"], 10, 0);
        let bytes = certificate.encode();
        assert!(bytes.len() <= CERTIFICATE_BYTES_MAX);
        assert_eq!(Certificate::decode(&bytes), Ok(certificate.clone()));
        assert_eq!(certificate.fingerprint(), merkle::leaf_hash(&bytes));
        let request_bytes = certificate.request.encode();
        assert_eq!(
            SignedRequest::decode(&request_bytes),
            Ok(certificate.request.clone())
        );
        assert!(matches!(
            Certificate::decode(&vec![0u8; CERTIFICATE_BYTES_MAX + 1]),
            Err(CertError::Decode(WireError::TooLarge { .. }))
        ));
    }

    #[test]
    fn maximal_certificate_fits_its_bound() {
        let key = testkit::subject_key(0);
        let label = "a".repeat(63);
        let names: Vec<String> = (0..DNS_NAMES_PER_CERT_MAX)
            .map(|i| format!("{label}.{label}.{label}.{i}{}", "b".repeat(60)))
            .collect();
        assert!(
            names
                .iter()
                .all(|name| name.len() == crate::name::NAME_BYTES_MAX)
        );
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let signed = testkit::request(key, &refs, 11);
        let certificate =
            Certificate::issue_by_authority(signed, testkit::authority_key(0), 0, &entropy(5));
        let len = certificate.encode().len();
        assert!(len <= CERTIFICATE_BYTES_MAX, "{len}");
        assert!(len > 8_000, "{len}: the bound's comment is stale");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn mutated_certificates_never_panic_and_decode_canonically(
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
            cut in any::<prop::sample::Index>(),
            truncate in any::<bool>(),
        ) {
            let original = testkit::authority_cert(0, testkit::subject_key(0), &["a.hm"], 12, 0);
            let mut bytes = original.encode();
            for (at, value) in flips {
                let at = at.index(bytes.len());
                bytes[at] = value;
            }
            if truncate {
                bytes.truncate(cut.index(bytes.len()));
            }
            if let Ok(certificate) = Certificate::decode(&bytes) {
                prop_assert_eq!(certificate.encode(), bytes.clone());
                // Every byte of an authority's certificate is signed: a
                // changed one must not verify, an unchanged one must. (A
                // mutation into a chain-issued certificate carries no
                // signature; the chain's log vouches for those.)
                let verified = certificate.verify_signatures(&testkit::authorities());
                if certificate == original {
                    prop_assert!(verified.is_ok(), "{:?}", verified);
                } else if matches!(certificate.issuer, Issuer::Authority(_)) {
                    prop_assert!(verified.is_err(), "a mutated certificate verified: {:?}", certificate);
                }
            }
            if let Ok(request) = SignedRequest::decode(&bytes) {
                prop_assert_eq!(request.encode(), bytes);
                // A request inside a mutated certificate's bytes is some
                // prefix or part of it: only the original request verifies.
                let verified = request.verify();
                prop_assert_eq!(verified.is_ok(), request == original.request, "{:?}", verified);
            }
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            if let Ok(certificate) = Certificate::decode(&bytes) {
                prop_assert_eq!(certificate.encode(), bytes.clone());
            }
            if let Ok(request) = SignedRequest::decode(&bytes) {
                prop_assert_eq!(request.encode(), bytes);
            }
        }
    }
}
