//! The state key layout (documented in the README) and the records stored
//! under it. Keys are an ASCII prefix ending in `/` followed by fixed-width
//! binary parts (hashes, big-endian integers), so prefix scans return
//! entries in numeric order. Every key is at most 82 bytes, well under
//! `STATE_KEY_BYTES_MAX`; no prefix is a prefix of another.

use hm_kernel::block::Height;
use hm_wire::{Hash, WireError};
use serde::{Deserialize, Serialize};

use crate::cert::Issuer;
use crate::name::DnsName;
use crate::tx::FindingKind;

pub(crate) const LOG: &[u8] = b"log/";
pub(crate) const CERT: &[u8] = b"cert/";
pub(crate) const SUBJECT: &[u8] = b"subject/";
pub(crate) const REQUEST: &[u8] = b"request/";
pub(crate) const NAME: &[u8] = b"name/";
pub(crate) const OWNER: &[u8] = b"owner/";
pub(crate) const REVOKED: &[u8] = b"revoked/";
pub(crate) const REVOKED_AUTHORITY: &[u8] = b"revoked-authority/";
pub(crate) const REVOKED_SUBJECT: &[u8] = b"revoked-subject/";
pub(crate) const FINDING: &[u8] = b"finding/";
pub(crate) const FINDING_KEY: &[u8] = b"finding-key/";

/// Domain of the hash that stands for a name in keys: a 253-byte name
/// after a prefix would exceed `STATE_KEY_BYTES_MAX` (256).
pub(crate) const NAME_KEY_DOMAIN: &str = "hm/trustchain/name-key/v1";

/// Largest stored record other than certificates and DNS records.
pub(crate) const RECORD_BYTES_MAX: usize = 256;

fn key(prefix: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut key = prefix.to_vec();
    for part in parts {
        key.extend_from_slice(part);
    }
    key
}

/// `log/<index u64 BE>` → encoded certificate.
pub(crate) fn log(index: u64) -> Vec<u8> {
    key(LOG, &[&index.to_be_bytes()])
}

/// The index of a `log/` key, if it is one.
pub(crate) fn log_index(key: &[u8]) -> Option<u64> {
    let rest = key.strip_prefix(LOG)?;
    Some(u64::from_be_bytes(rest.try_into().ok()?))
}

/// `cert/<fingerprint>` → [`CertRecord`].
pub(crate) fn cert(fingerprint: &Hash) -> Vec<u8> {
    key(CERT, &[&fingerprint.0])
}

/// `subject/<subject><n u64 BE>` → fingerprint of the subject's n-th
/// certificate (n counts from 0 per subject).
pub(crate) fn subject(subject: &Hash, n: u64) -> Vec<u8> {
    key(SUBJECT, &[&subject.0, &n.to_be_bytes()])
}

pub(crate) fn subject_prefix(subject: &Hash) -> Vec<u8> {
    key(SUBJECT, &[&subject.0])
}

/// The `n` of a `subject/` key.
pub(crate) fn subject_n(key: &[u8]) -> Option<u64> {
    let tail = key.get(SUBJECT.len() + Hash::LEN..)?;
    Some(u64::from_be_bytes(tail.try_into().ok()?))
}

/// `request/<request id>` → log index (u64 BE) of the certificate that
/// certified it.
pub(crate) fn request(id: &Hash) -> Vec<u8> {
    key(REQUEST, &[&id.0])
}

pub(crate) fn name_hash(name: &DnsName) -> Hash {
    hm_wire::hash(NAME_KEY_DOMAIN, name.as_str().as_bytes())
}

/// `name/<H(name)>` → encoded `DnsRecord`.
pub(crate) fn name(name: &DnsName) -> Vec<u8> {
    key(NAME, &[&name_hash(name).0])
}

/// `owner/<owner><H(name)>` → the name (UTF-8): the names an owner holds.
pub(crate) fn owner(owner: &Hash, name: &DnsName) -> Vec<u8> {
    key(OWNER, &[&owner.0, &name_hash(name).0])
}

pub(crate) fn owner_prefix(owner: &Hash) -> Vec<u8> {
    key(OWNER, &[&owner.0])
}

/// `revoked/<fingerprint>` → [`Revoked`]: a certificate that is not in the
/// log but is refused everywhere (forged or unlogged, by a finding).
pub(crate) fn revoked(fingerprint: &Hash) -> Vec<u8> {
    key(REVOKED, &[&fingerprint.0])
}

/// `revoked-authority/<id>` → [`Revoked`]: the authority may no longer
/// issue or sign heads, and its certificates are refused.
pub(crate) fn revoked_authority(id: &Hash) -> Vec<u8> {
    key(REVOKED_AUTHORITY, &[&id.0])
}

/// `revoked-subject/<id>` → [`SubjectRevocation`]: every certificate of
/// the subject logged before `log_size` is revoked (equivocation).
pub(crate) fn revoked_subject(id: &Hash) -> Vec<u8> {
    key(REVOKED_SUBJECT, &[&id.0])
}

/// `finding/<n u64 BE>` → encoded `Finding`, n counting from 0.
pub(crate) fn finding(n: u64) -> Vec<u8> {
    key(FINDING, &[&n.to_be_bytes()])
}

/// The `n` of a `finding/` key.
pub(crate) fn finding_n(key: &[u8]) -> Option<u64> {
    let rest = key.strip_prefix(FINDING)?;
    Some(u64::from_be_bytes(rest.try_into().ok()?))
}

/// `finding-key/<offender><kind u8>` → n (u64 BE) of the finding: one
/// finding per offender and kind.
pub(crate) fn finding_key(offender: &Hash, kind: FindingKind) -> Vec<u8> {
    key(FINDING_KEY, &[&offender.0, &[kind.tag()]])
}

pub(crate) fn finding_key_prefix(offender: &Hash) -> Vec<u8> {
    key(FINDING_KEY, &[&offender.0])
}

pub(crate) fn u64_value(value: u64) -> Vec<u8> {
    value.to_be_bytes().to_vec()
}

pub(crate) fn parse_u64(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

/// What the state records about a logged certificate (small, so queries
/// need not decode the certificate).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CertRecord {
    pub log_index: u64,
    pub subject: Hash,
    pub issuer: Issuer,
    pub not_before_ms: u64,
    pub not_after_ms: u64,
    /// Revoked by its subject or by a finding.
    pub revoked: bool,
}

impl CertRecord {
    pub(crate) fn is_current(&self, now_ms: u64) -> bool {
        self.not_before_ms <= now_ms && now_ms < self.not_after_ms
    }
}

/// Why and when something was revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Revoked {
    pub height: Height,
    /// The finding that caused it.
    pub finding: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SubjectRevocation {
    pub height: Height,
    /// Certificates of the subject with a log index below this are revoked.
    pub log_size: u64,
    pub finding: u64,
}

pub(crate) fn encode_record<T: Serialize>(record: &T) -> Vec<u8> {
    hm_wire::encode(record)
}

pub(crate) fn decode_record<T: Serialize + serde::de::DeserializeOwned>(
    bytes: &[u8],
) -> Result<T, WireError> {
    hm_wire::decode(bytes, RECORD_BYTES_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hm_kernel::block::STATE_KEY_BYTES_MAX;

    #[test]
    fn keys_are_bounded_and_prefixes_disjoint() {
        let hash = Hash([0xff; 32]);
        let longest = DnsName::parse(&format!("{}.hm", "a".repeat(63))).expect("valid");
        let keys = [
            log(u64::MAX),
            cert(&hash),
            subject(&hash, u64::MAX),
            request(&hash),
            name(&longest),
            owner(&hash, &longest),
            revoked(&hash),
            revoked_authority(&hash),
            revoked_subject(&hash),
            finding(u64::MAX),
            finding_key(&hash, FindingKind::Equivocation),
        ];
        for key in &keys {
            assert!(
                key.len() <= 82 && key.len() <= STATE_KEY_BYTES_MAX,
                "{key:?}"
            );
        }
        let prefixes = [
            LOG,
            CERT,
            SUBJECT,
            REQUEST,
            NAME,
            OWNER,
            REVOKED,
            REVOKED_AUTHORITY,
            REVOKED_SUBJECT,
            FINDING,
            FINDING_KEY,
        ];
        for (i, a) in prefixes.iter().enumerate() {
            for (j, b) in prefixes.iter().enumerate() {
                if i != j {
                    assert!(!b.starts_with(a), "{:?} is a prefix of {:?}", a, b);
                }
            }
        }
        assert_eq!(log_index(&log(7)), Some(7));
        assert_eq!(log_index(b"log/short"), None);
        assert_eq!(subject_n(&subject(&hash, 9)), Some(9));
        assert_eq!(finding_n(&finding(3)), Some(3));
    }

    #[test]
    fn records_fit_their_bound() {
        let record = CertRecord {
            log_index: u64::MAX,
            subject: Hash([1; 32]),
            issuer: Issuer::Authority(Hash([2; 32])),
            not_before_ms: 1,
            not_after_ms: 2,
            revoked: true,
        };
        let bytes = encode_record(&record);
        assert!(bytes.len() <= RECORD_BYTES_MAX);
        assert_eq!(decode_record::<CertRecord>(&bytes), Ok(record));
    }

    proptest::proptest! {
        #[test]
        fn random_record_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..160)) {
            if let Ok(record) = decode_record::<CertRecord>(&bytes) {
                proptest::prop_assert_eq!(encode_record(&record), bytes.clone());
            }
            if let Ok(record) = decode_record::<Revoked>(&bytes) {
                proptest::prop_assert_eq!(encode_record(&record), bytes.clone());
            }
            if let Ok(record) = decode_record::<SubjectRevocation>(&bytes) {
                proptest::prop_assert_eq!(encode_record(&record), bytes);
            }
        }
    }
}
