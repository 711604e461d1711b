//! SHA-256 with domain separation.
//!
//! Every hash the protocol takes names its purpose, so a hash computed for
//! one purpose (a node id, a block id, a chunk address) can never be passed
//! off as another. The exact input to SHA-256 is
//!
//! ```text
//! 0xFF || u8(len(domain)) || domain || ( u64_le(len(part)) || part )*
//! ```
//!
//! * The leading `0xFF` keeps these inputs disjoint from RFC 9162 Merkle
//!   hashing (whose inputs start with `0x00` or `0x01`, see [`crate::merkle`]).
//! * The domain is 1..=255 bytes of UTF-8; by convention `hm/<purpose>/v<n>`.
//! * Each part is length-prefixed, so the encoding of `(domain, parts)` is
//!   injective: `["ab", "c"]` and `["a", "bc"]` hash differently, and so do
//!   `[]` and `[""]`.

use crate::WireError;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;

/// Longest domain tag, in bytes: its length is encoded in one byte.
pub const DOMAIN_BYTES_MAX: usize = 255;

/// First byte of every domain-separated hash input (see the module doc).
const DOMAIN_HASH_MARKER: u8 = 0xFF;

/// A SHA-256 digest. Encodes on the wire as its 32 bytes (no length prefix).
/// `Debug` and `Display` print lowercase hex, and so do human-readable
/// formats (JSON status files, API answers, reports): 64 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Hash(pub [u8; 32]);

impl Serialize for Hash {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.serialize_str(&self.to_hex())
        } else {
            // The same bytes a derived newtype gives under bincode.
            self.0.serialize(serializer)
        }
    }
}

impl<'de> Deserialize<'de> for Hash {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Hash, D::Error> {
        if deserializer.is_human_readable() {
            let text = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
            Hash::from_hex(&text).map_err(serde::de::Error::custom)
        } else {
            <[u8; 32]>::deserialize(deserializer).map(Hash)
        }
    }
}

impl Hash {
    /// Number of bytes in a digest.
    pub const LEN: usize = 32;

    /// The all-zero value; not the hash of anything, useful as a placeholder.
    pub const ZERO: Hash = Hash([0; 32]);

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lowercase hex, 64 characters.
    pub fn to_hex(&self) -> String {
        let mut out = String::with_capacity(64);
        for byte in self.0 {
            out.push(char::from(HEX_DIGITS[usize::from(byte >> 4)]));
            out.push(char::from(HEX_DIGITS[usize::from(byte & 0x0f)]));
        }
        out
    }

    /// Parses exactly 64 hex digits (either case).
    pub fn from_hex(text: &str) -> Result<Hash, WireError> {
        let digits = text.as_bytes();
        if digits.len() != 64 {
            return Err(WireError::Malformed(format!(
                "a hash is 64 hex digits, got {} characters",
                digits.len()
            )));
        }
        let mut out = [0u8; 32];
        for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
            *byte = (hex_value(pair[0])? << 4) | hex_value(pair[1])?;
        }
        Ok(Hash(out))
    }

    /// Builds a hash from a slice that must be exactly 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Hash, WireError> {
        <[u8; 32]>::try_from(bytes)
            .map(Hash)
            .map_err(|_| WireError::Malformed(format!("a hash is 32 bytes, got {}", bytes.len())))
    }
}

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

fn hex_value(digit: u8) -> Result<u8, WireError> {
    match digit {
        b'0'..=b'9' => Ok(digit - b'0'),
        b'a'..=b'f' => Ok(digit - b'a' + 10),
        b'A'..=b'F' => Ok(digit - b'A' + 10),
        _ => Err(WireError::Malformed(format!(
            "{:?} is not a hex digit",
            char::from(digit)
        ))),
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl AsRef<[u8]> for Hash {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl From<[u8; 32]> for Hash {
    fn from(bytes: [u8; 32]) -> Self {
        Hash(bytes)
    }
}

/// `hash_parts(domain, &[data])`.
///
/// # Panics
///
/// If `domain` is empty or longer than [`DOMAIN_BYTES_MAX`]: domains are
/// constants in our code, so that is a programming error.
pub fn hash(domain: &str, data: &[u8]) -> Hash {
    hash_parts(domain, &[data])
}

/// SHA-256 over the domain tag and the length-prefixed parts (format in the
/// module doc).
///
/// # Panics
///
/// If `domain` is empty or longer than [`DOMAIN_BYTES_MAX`].
pub fn hash_parts(domain: &str, parts: &[&[u8]]) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([DOMAIN_HASH_MARKER, domain_len_byte(domain)]);
    hasher.update(domain.as_bytes());
    for part in parts {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    Hash(hasher.finalize().into())
}

fn domain_len_byte(domain: &str) -> u8 {
    assert!(!domain.is_empty(), "hash domain must not be empty");
    match u8::try_from(domain.len()) {
        Ok(len) => len,
        Err(_) => panic!(
            "hash domain {domain:?} is {} bytes, longer than {DOMAIN_BYTES_MAX}",
            domain.len()
        ),
    }
}

/// Plain SHA-256 with no domain tag, for formats fixed by others (RFC 9162).
pub(crate) fn sha256_raw(parts: &[&[u8]]) -> Hash {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part);
    }
    Hash(hasher.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The documented input format, written out independently.
    fn reference(domain: &str, parts: &[&[u8]]) -> Hash {
        let mut input = vec![0xFF, domain.len() as u8];
        input.extend_from_slice(domain.as_bytes());
        for part in parts {
            input.extend_from_slice(&(part.len() as u64).to_le_bytes());
            input.extend_from_slice(part);
        }
        Hash(Sha256::digest(&input).into())
    }

    #[test]
    fn follows_the_documented_format() {
        assert_eq!(
            hash_parts("hm/test/v1", &[b"ab", b"c"]),
            reference("hm/test/v1", &[b"ab", b"c"])
        );
        assert_eq!(hash("hm/test/v1", b"x"), reference("hm/test/v1", &[b"x"]));
    }

    #[test]
    fn boundaries_and_domains_separate() {
        let ab_c = hash_parts("hm/test/v1", &[b"ab", b"c"]);
        let a_bc = hash_parts("hm/test/v1", &[b"a", b"bc"]);
        assert_ne!(ab_c, a_bc);
        assert_ne!(
            hash_parts("hm/test/v1", &[]),
            hash_parts("hm/test/v1", &[b""])
        );
        assert_ne!(hash("hm/a/v1", b"x"), hash("hm/b/v1", b"x"));
        // Domain/data boundary: ("ab", "c") vs ("a", "bc") as domain+data.
        assert_ne!(hash("ab", b"c"), hash("a", b"bc"));
        assert_eq!(hash("hm/test/v1", b"x"), hash_parts("hm/test/v1", &[b"x"]));
    }

    #[test]
    fn display_is_lowercase_hex() {
        let value = Hash([0xAB; 32]);
        assert_eq!(value.to_string(), "ab".repeat(32));
        assert_eq!(format!("{value:?}"), "ab".repeat(32));
    }

    #[test]
    #[should_panic(expected = "longer than 255")]
    fn overlong_domain_panics() {
        let domain = "d".repeat(256);
        let _ = hash(&domain, b"");
    }

    #[test]
    fn from_hex_rejects_bad_input() {
        assert!(Hash::from_hex("").is_err());
        assert!(Hash::from_hex(&"0".repeat(63)).is_err());
        assert!(Hash::from_hex(&"g".repeat(64)).is_err());
        assert!(Hash::from_hex(&"é".repeat(32)).is_err());
        assert_eq!(Hash::from_hex(&"AB".repeat(32)), Ok(Hash([0xAB; 32])));
    }

    proptest! {
        #[test]
        fn hex_round_trips(bytes in any::<[u8; 32]>()) {
            let value = Hash(bytes);
            prop_assert_eq!(Hash::from_hex(&value.to_hex()), Ok(value));
        }

        #[test]
        fn from_hex_never_panics(text in ".{0,80}") {
            let _ = Hash::from_hex(&text);
        }

        #[test]
        fn wire_form_is_the_32_bytes(bytes in any::<[u8; 32]>()) {
            let encoded = crate::encode(&Hash(bytes));
            prop_assert_eq!(&encoded[..], &bytes[..]);
            prop_assert_eq!(crate::decode::<Hash>(&encoded, 32), Ok(Hash(bytes)));
        }

        #[test]
        fn matches_reference(domain in "[a-z/0-9]{1,40}", parts in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..5)) {
            let slices: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
            prop_assert_eq!(hash_parts(&domain, &slices), reference(&domain, &slices));
        }
    }

    #[test]
    fn json_shows_hex_and_the_wire_keeps_32_bytes() {
        let hash = super::hash("hm/test", b"hm");
        let json = serde_json::to_string(&hash).expect("json");
        assert_eq!(json, format!("\"{}\"", hash.to_hex()));
        let back: Hash = serde_json::from_str(&json).expect("back");
        assert_eq!(back, hash);
        assert!(serde_json::from_str::<Hash>("\"zz\"").is_err());
        let wire = crate::encode(&hash);
        assert_eq!(wire, hash.0.to_vec());
        assert_eq!(crate::decode::<Hash>(&wire, 32).expect("decode"), hash);
    }
}
