//! FALCON-1024 signatures (the `fn-dsa` crate, pure Rust), with all
//! randomness taken from [`hm_env::Entropy`] so simulated runs replay.
//!
//! **What is signed.** [`SigningKey::sign`] signs `message` under a domain
//! tag (1..=255 bytes) using FN-DSA's context string: the message
//! representative is `mu = SHAKE256(SHAKE256(vk)[64] || 0x00 || len(domain)
//! || domain || message)` (fn-dsa 0.4, the FIPS 206 draft), and the
//! signature is a Falcon signature over `mu`. The domain keeps a signature
//! made for one purpose (a block vote) from being replayed as another (a
//! certificate).
//!
//! **Formats** (all fixed size, so sizes never vary):
//! * verifying key: 1793 bytes, the Falcon round-3 public key format
//!   (`0x0A || 14-bit packed h`), identical to `pqcrypto-falcon`'s;
//! * signing key: 2369 bytes, fn-dsa's format: the Falcon round-3 private
//!   key (`0x5A || f || g || F`, 2305 bytes, identical to PQClean's)
//!   followed by `SHAKE256(verifying key)` (64 bytes);
//! * signature: 1280 bytes, Falcon's *padded* format (`0x3A || 40-byte
//!   nonce || compressed s2 || zero padding`), as PQClean's
//!   `falcon-padded-1024`.
//!
//! **Compatibility with `pqcrypto-falcon` (round-3 Falcon, PQClean C).**
//! fn-dsa 0.4 implements the FN-DSA *draft* (FIPS 206), which differs from
//! round-3 Falcon in three places, so signatures do **not** cross-verify:
//!
//! 1. encodings pack bit fields least-significant bit first (round 3: most
//!    significant first) — keys and the compressed signature alike;
//! 2. the verifying key stores `h` in the NTT domain (round 3: coefficients);
//! 3. hashing: the message is first reduced to `mu` (above), and
//!    hash-to-point reads SHAKE256 output as little-endian 16-bit words
//!    (round 3: big-endian), so the challenge polynomial differs.
//!
//! What does match is the lattice: the same `(f, g, F)` secret and `h = g/f`
//! public key, the same sizes (1793 / 1280 bytes, 2305 + 64 for the secret)
//! and the same signature layout. The tests transcode keys both ways (bit
//! order + NTT) and show that a key pair from either implementation is a
//! valid key pair in the other, and that untranscoded bytes or signatures
//! are refused across implementations (so a change in fn-dsa toward either
//! side would be noticed).

use crate::rng::FnDsaRng;
use crate::{Hash, WireError, hash};
use fn_dsa::{
    DomainContext, FN_DSA_LOGN_1024, HASH_ID_RAW, KeyPairGenerator, KeyPairGenerator1024,
    SigningKey as _, SigningKey1024, VerifyingKey as _, VerifyingKey1024,
};
use hm_env::Entropy;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::sync::Mutex;
use zeroize::Zeroizing;

/// Signing key size in bytes (see the module doc for the layout).
pub const SIGNING_KEY_BYTES: usize = fn_dsa::sign_key_size(FN_DSA_LOGN_1024);
/// Verifying key size in bytes.
pub const VERIFYING_KEY_BYTES: usize = fn_dsa::vrfy_key_size(FN_DSA_LOGN_1024);
/// Signature size in bytes (padded format: always this size).
pub const SIGNATURE_BYTES: usize = fn_dsa::signature_size(FN_DSA_LOGN_1024);
/// Longest domain tag: FN-DSA encodes the context length in one byte.
pub const SIGN_DOMAIN_BYTES_MAX: usize = 255;
/// Domain of [`VerifyingKey::fingerprint`], the node id.
pub const NODE_ID_DOMAIN: &str = "hm/node-id/v1";

const SIGNATURE_HEADER: u8 = 0x30 + FN_DSA_LOGN_1024 as u8;
const SIGNATURE_NONCE_BYTES: usize = 40;

/// A FALCON-1024 signing key.
///
/// Holds the decoded key (≈ 116 KB of precomputed basis and scratch space,
/// on the heap) behind a mutex because fn-dsa signs through `&mut`; signing
/// from several tasks at once serializes on it. [`SigningKey::generate`] and
/// [`SigningKey::from_bytes`] use up to ≈ 250 KB of stack transiently (the
/// fn-dsa structures are built by value), well inside a 2 MiB task stack.
pub struct SigningKey {
    encoded: Zeroizing<Vec<u8>>,
    expanded: Mutex<Box<SigningKey1024>>,
    verifying: VerifyingKey,
}

impl SigningKey {
    /// Generates a key pair from `entropy` (same entropy stream, same key).
    pub fn generate<E: Entropy + ?Sized>(entropy: &E) -> SigningKey {
        let mut generator = Box::<KeyPairGenerator1024>::default();
        let mut signing = Zeroizing::new(vec![0u8; SIGNING_KEY_BYTES]);
        let mut verifying = vec![0u8; VERIFYING_KEY_BYTES];
        generator.keygen(
            FN_DSA_LOGN_1024,
            &mut FnDsaRng(entropy),
            &mut signing,
            &mut verifying,
        );
        match SigningKey::from_bytes(&signing) {
            Ok(key) => {
                assert_eq!(
                    key.verifying.bytes[..],
                    verifying[..],
                    "keygen pair mismatch"
                );
                key
            }
            Err(error) => panic!("fn-dsa generated a key it cannot decode: {error}"),
        }
    }

    /// The matching verifying key.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.verifying.clone()
    }

    /// Signs `message` under `domain` (see the module doc), with the
    /// signature's random nonce drawn from `entropy`.
    ///
    /// # Panics
    ///
    /// If `domain` is empty or longer than [`SIGN_DOMAIN_BYTES_MAX`]
    /// (domains are constants in our code).
    pub fn sign<E: Entropy + ?Sized>(
        &self,
        domain: &str,
        message: &[u8],
        entropy: &E,
    ) -> Signature {
        assert!(
            !domain.is_empty() && domain.len() <= SIGN_DOMAIN_BYTES_MAX,
            "signature domain must be 1..={SIGN_DOMAIN_BYTES_MAX} bytes, got {domain:?}"
        );
        let mut signature = Box::new([0u8; SIGNATURE_BYTES]);
        let mut expanded = hm_env::sync::lock(&self.expanded);
        let signed = expanded.sign(
            &mut FnDsaRng(entropy),
            &DomainContext(domain.as_bytes()),
            &HASH_ID_RAW,
            message,
            &mut signature[..],
        );
        // fn-dsa fails only for a key that does not decode, and this one did.
        assert!(signed.is_some(), "fn-dsa refused to sign with a valid key");
        debug_assert_eq!(signature[0], SIGNATURE_HEADER);
        Signature(signature)
    }

    /// The encoded signing key ([`SIGNING_KEY_BYTES`] bytes). Secret: keep
    /// it in a keystore, never log it.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.encoded.to_vec()
    }

    /// A second handle on the same key, for components that each own one
    /// (the consensus signer, the block key, the TrustChain agent).
    /// Infallible: this key's encoding decoded once already.
    pub fn duplicate(&self) -> SigningKey {
        match SigningKey::from_bytes(&self.encoded) {
            Ok(key) => key,
            Err(error) => panic!("a signing key that decoded once failed to decode again: {error}"),
        }
    }

    /// Decodes and validates a signing key: right size and header, `f`
    /// invertible, and the embedded hash of the verifying key matches the
    /// key actually derived (a corrupted key would otherwise sign
    /// signatures that never verify).
    pub fn from_bytes(bytes: &[u8]) -> Result<SigningKey, WireError> {
        if bytes.len() != SIGNING_KEY_BYTES {
            return Err(WireError::BadKey);
        }
        let expanded = SigningKey1024::decode(bytes)
            .map(Box::new)
            .ok_or(WireError::BadKey)?;
        let mut verifying = vec![0u8; VERIFYING_KEY_BYTES];
        expanded.to_verifying_key(&mut verifying);
        let embedded = &bytes[SIGNING_KEY_BYTES - 64..];
        if fn_dsa::hashed_vrfykey_from_vrfykey(&verifying)[..] != embedded[..] {
            return Err(WireError::BadKey);
        }
        Ok(SigningKey {
            encoded: Zeroizing::new(bytes.to_vec()),
            expanded: Mutex::new(expanded),
            verifying: VerifyingKey::from_bytes(&verifying)?,
        })
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({})", self.verifying.fingerprint)
    }
}

/// A FALCON-1024 verifying (public) key. Its [`fingerprint`] is the node id.
///
/// [`fingerprint`]: VerifyingKey::fingerprint
#[derive(Clone)]
pub struct VerifyingKey {
    bytes: Box<[u8]>,
    expanded: Box<VerifyingKey1024>,
    fingerprint: Hash,
}

impl VerifyingKey {
    /// Checks `signature` over `message` under `domain`.
    pub fn verify(
        &self,
        domain: &str,
        message: &[u8],
        signature: &Signature,
    ) -> Result<(), WireError> {
        if domain.is_empty() || domain.len() > SIGN_DOMAIN_BYTES_MAX {
            return Err(WireError::Malformed(format!(
                "signature domain must be 1..={SIGN_DOMAIN_BYTES_MAX} bytes, got {}",
                domain.len()
            )));
        }
        let check = || {
            self.expanded.verify(
                &signature.0[..],
                &DomainContext(domain.as_bytes()),
                &HASH_ID_RAW,
                message,
            )
        };
        let valid = verify_cache::verified(&self.fingerprint, domain, message, signature, check);
        if valid {
            Ok(())
        } else {
            Err(WireError::BadSignature)
        }
    }

    /// The encoded key ([`VERIFYING_KEY_BYTES`] bytes).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.bytes.to_vec()
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Decodes a verifying key: exact size, FALCON-1024 header, every
    /// coefficient below q (so the encoding is canonical).
    pub fn from_bytes(bytes: &[u8]) -> Result<VerifyingKey, WireError> {
        if bytes.len() != VERIFYING_KEY_BYTES {
            return Err(WireError::BadKey);
        }
        let expanded = VerifyingKey1024::decode(bytes).ok_or(WireError::BadKey)?;
        Ok(VerifyingKey {
            bytes: bytes.into(),
            expanded: Box::new(expanded),
            fingerprint: hash(NODE_ID_DOMAIN, bytes),
        })
    }

    /// `hash("hm/node-id/v1", key bytes)`: the node id.
    pub fn fingerprint(&self) -> Hash {
        self.fingerprint
    }
}

impl PartialEq for VerifyingKey {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}

impl Eq for VerifyingKey {}

impl PartialOrd for VerifyingKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for VerifyingKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.bytes.cmp(&other.bytes)
    }
}

impl std::hash::Hash for VerifyingKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.bytes.hash(state);
    }
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VerifyingKey({})", self.fingerprint)
    }
}

impl Serialize for VerifyingKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.bytes)
    }
}

impl<'de> Deserialize<'de> for VerifyingKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        crate::serde_bytes::deserialize(
            deserializer,
            "a FALCON-1024 verifying key",
            VERIFYING_KEY_BYTES,
            VerifyingKey::from_bytes,
        )
    }
}

/// A FALCON-1024 signature in the padded, fixed-size format
/// ([`SIGNATURE_BYTES`] bytes).
#[derive(Clone, PartialEq, Eq)]
pub struct Signature(Box<[u8; SIGNATURE_BYTES]>);

impl Signature {
    pub fn to_bytes(&self) -> Vec<u8> {
        self.0.to_vec()
    }

    pub fn as_bytes(&self) -> &[u8; SIGNATURE_BYTES] {
        &self.0
    }

    /// Accepts exactly [`SIGNATURE_BYTES`] bytes with the FALCON-1024
    /// header. The rest is checked by [`VerifyingKey::verify`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Signature, WireError> {
        let array = <[u8; SIGNATURE_BYTES]>::try_from(bytes).map_err(|_| {
            WireError::Malformed(format!(
                "a FALCON-1024 signature is {SIGNATURE_BYTES} bytes, got {}",
                bytes.len()
            ))
        })?;
        if array[0] != SIGNATURE_HEADER {
            return Err(WireError::Malformed(format!(
                "signature header is {:#04x}, FALCON-1024 padded signatures start with {SIGNATURE_HEADER:#04x}",
                array[0]
            )));
        }
        Ok(Signature(Box::new(array)))
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The nonce is enough to tell signatures apart in logs.
        let nonce = &self.0[1..1 + 8];
        write!(f, "Signature(nonce ")?;
        for byte in nonce {
            write!(f, "{byte:02x}")?;
        }
        write!(f, "…)")
    }
}

impl Serialize for Signature {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0[..])
    }
}

impl<'de> Deserialize<'de> for Signature {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        crate::serde_bytes::deserialize(
            deserializer,
            "a FALCON-1024 signature",
            SIGNATURE_BYTES,
            Signature::from_bytes,
        )
    }
}

const _: () = assert!(SIGNATURE_NONCE_BYTES + 1 < SIGNATURE_BYTES);

#[cfg(test)]
mod tests {
    use super::*;
    use hm_env::mem::SeededEntropy;
    use pqcrypto_falcon::falconpadded1024 as pq;
    use pqcrypto_traits::sign::{DetachedSignature as _, PublicKey as _, SecretKey as _};
    use proptest::prelude::*;
    use std::sync::OnceLock;

    const DOMAIN: &str = "hm/test/v1";

    /// One key for the tests that do not care which (keygen costs ms).
    fn shared_key() -> &'static SigningKey {
        static KEY: OnceLock<SigningKey> = OnceLock::new();
        KEY.get_or_init(|| SigningKey::generate(&SeededEntropy::new(7, b"shared")))
    }

    #[test]
    fn sizes_are_the_falcon_1024_ones() {
        assert_eq!(VERIFYING_KEY_BYTES, 1793);
        assert_eq!(SIGNATURE_BYTES, 1280);
        assert_eq!(SIGNING_KEY_BYTES, 2305 + 64);
        assert_eq!(VERIFYING_KEY_BYTES, pq::public_key_bytes());
        assert_eq!(SIGNATURE_BYTES, pq::signature_bytes());
        assert_eq!(SIGNING_KEY_BYTES - 64, pq::secret_key_bytes());
    }

    #[test]
    fn same_seed_same_key_and_signature() {
        let a = SigningKey::generate(&SeededEntropy::new(1, b"node-a"));
        let b = SigningKey::generate(&SeededEntropy::new(1, b"node-a"));
        let c = SigningKey::generate(&SeededEntropy::new(2, b"node-a"));
        assert_eq!(a.to_bytes(), b.to_bytes());
        assert_eq!(a.verifying_key(), b.verifying_key());
        assert_ne!(a.to_bytes(), c.to_bytes());
        let sig_a = a.sign(DOMAIN, b"m", &SeededEntropy::new(9, b"sign"));
        let sig_b = b.sign(DOMAIN, b"m", &SeededEntropy::new(9, b"sign"));
        assert_eq!(sig_a, sig_b);
        let sig_c = a.sign(DOMAIN, b"m", &SeededEntropy::new(10, b"sign"));
        assert_ne!(sig_a, sig_c);
        assert_eq!(a.verifying_key().verify(DOMAIN, b"m", &sig_c), Ok(()));
    }

    #[test]
    fn sign_verify_and_rejections() {
        let key = shared_key();
        let other = SigningKey::generate(&SeededEntropy::new(8, b"other"));
        let entropy = SeededEntropy::new(3, b"sig");
        let signature = key.sign(DOMAIN, b"hello", &entropy);
        let vk = key.verifying_key();
        assert_eq!(vk.verify(DOMAIN, b"hello", &signature), Ok(()));
        assert_eq!(
            vk.verify(DOMAIN, b"hellp", &signature),
            Err(WireError::BadSignature)
        );
        assert_eq!(
            vk.verify("hm/other/v1", b"hello", &signature),
            Err(WireError::BadSignature)
        );
        assert_eq!(
            other.verifying_key().verify(DOMAIN, b"hello", &signature),
            Err(WireError::BadSignature)
        );
        assert!(matches!(
            vk.verify("", b"hello", &signature),
            Err(WireError::Malformed(_))
        ));
        assert!(matches!(
            vk.verify(&"d".repeat(256), b"hello", &signature),
            Err(WireError::Malformed(_))
        ));
    }

    #[test]
    fn fingerprint_is_the_node_id_hash() {
        let vk = shared_key().verifying_key();
        assert_eq!(vk.fingerprint(), hash("hm/node-id/v1", &vk.to_bytes()));
        assert!(format!("{vk:?}").contains(&vk.fingerprint().to_hex()));
        assert!(format!("{:?}", shared_key()).contains(&vk.fingerprint().to_hex()));
    }

    #[test]
    fn bytes_round_trip() {
        let key = shared_key();
        let again = SigningKey::from_bytes(&key.to_bytes()).expect("own key decodes");
        assert_eq!(again.verifying_key(), key.verifying_key());
        let vk = VerifyingKey::from_bytes(&key.verifying_key().to_bytes()).expect("decodes");
        assert_eq!(vk, key.verifying_key());
        let signature = again.sign(DOMAIN, b"x", &SeededEntropy::new(4, b""));
        assert_eq!(
            Signature::from_bytes(&signature.to_bytes()),
            Ok(signature.clone())
        );
        assert_eq!(signature.to_bytes().len(), SIGNATURE_BYTES);
    }

    #[test]
    fn corrupted_signing_key_is_refused() {
        let mut bytes = shared_key().to_bytes();
        // The embedded hash of the verifying key.
        bytes[SIGNING_KEY_BYTES - 1] ^= 1;
        assert!(matches!(
            SigningKey::from_bytes(&bytes),
            Err(WireError::BadKey)
        ));
        let mut bytes = shared_key().to_bytes();
        bytes[0] = 0x59; // FALCON-512 header
        assert!(matches!(
            SigningKey::from_bytes(&bytes),
            Err(WireError::BadKey)
        ));
        assert!(matches!(
            SigningKey::from_bytes(&[]),
            Err(WireError::BadKey)
        ));
    }

    #[test]
    fn serde_through_the_wire_codec() {
        let key = shared_key();
        let vk = key.verifying_key();
        let signature = key.sign(DOMAIN, b"serde", &SeededEntropy::new(5, b""));
        let encoded = crate::encode(&(vk.clone(), signature.clone()));
        assert_eq!(encoded.len(), 8 + VERIFYING_KEY_BYTES + 8 + SIGNATURE_BYTES);
        let (vk2, sig2): (VerifyingKey, Signature) =
            crate::decode(&encoded, encoded.len()).expect("decodes");
        assert_eq!(vk2, vk);
        assert_eq!(sig2, signature);
        // A truncated key inside the encoding is refused by from_bytes.
        let short = crate::encode(&vk.to_bytes()[..100].to_vec());
        assert!(crate::decode::<VerifyingKey>(&short, 4096).is_err());
        // Self-describing formats carry bytes as a sequence.
        let json = serde_json::to_string(&vk).expect("json");
        assert_eq!(
            serde_json::from_str::<VerifyingKey>(&json).expect("json back"),
            vk
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        #[test]
        fn signatures_verify_and_flips_fail(
            message in proptest::collection::vec(any::<u8>(), 0..200),
            seed in any::<u64>(),
            flip in any::<(prop::sample::Index, u8)>(),
        ) {
            let key = shared_key();
            let vk = key.verifying_key();
            let signature = key.sign(DOMAIN, &message, &SeededEntropy::new(seed, b"p"));
            prop_assert_eq!(vk.verify(DOMAIN, &message, &signature), Ok(()));
            let mut bytes = signature.to_bytes();
            let at = flip.0.index(bytes.len());
            bytes[at] ^= 1 << (flip.1 % 8);
            match Signature::from_bytes(&bytes) {
                Ok(bad) => prop_assert!(vk.verify(DOMAIN, &message, &bad).is_err()),
                Err(_) => prop_assert_eq!(at, 0),
            }
            let mut bad_message = message.clone();
            bad_message.push(0);
            prop_assert!(vk.verify(DOMAIN, &bad_message, &signature).is_err());
        }

        #[test]
        fn random_bytes_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..3000),
            exact_vk in proptest::collection::vec(any::<u8>(), VERIFYING_KEY_BYTES),
            exact_sig in proptest::collection::vec(any::<u8>(), SIGNATURE_BYTES),
        ) {
            let vk = shared_key().verifying_key();
            for candidate in [&bytes, &exact_vk, &exact_sig] {
                let _ = VerifyingKey::from_bytes(candidate);
                let _ = SigningKey::from_bytes(candidate);
                if let Ok(signature) = Signature::from_bytes(candidate) {
                    prop_assert!(vk.verify(DOMAIN, b"m", &signature).is_err());
                }
                let _ = crate::decode::<Signature>(candidate, 4096);
                let _ = crate::decode::<VerifyingKey>(candidate, 4096);
            }
            let mut with_header = exact_sig.clone();
            with_header[0] = SIGNATURE_HEADER;
            let signature = Signature::from_bytes(&with_header).expect("header and size right");
            prop_assert_eq!(vk.verify(DOMAIN, b"m", &signature), Err(WireError::BadSignature));
            let mut with_key_header = exact_vk.clone();
            with_key_header[0] = 0x0A;
            if let Ok(random_key) = VerifyingKey::from_bytes(&with_key_header) {
                prop_assert!(random_key.verify(DOMAIN, b"m", &signature).is_err());
            }
        }
    }

    /// `mu` for (key, domain, message), as fn-dsa computes it.
    fn mu(vk: &VerifyingKey, domain: &str, message: &[u8]) -> [u8; 64] {
        fn_dsa::compute_mu(
            &fn_dsa::hashed_vrfykey_from_vrfykey(vk.as_bytes()),
            &DomainContext(domain.as_bytes()),
            &HASH_ID_RAW,
            message,
        )
    }

    /// Test-only transcoding between fn-dsa's encodings (bit fields packed
    /// least-significant bit first) and round-3 Falcon's (most-significant
    /// bit first). Same fields, same order, same widths; only the bit order
    /// differs, so each value is read in one order and written in the other.
    mod transcode {
        use super::super::{SIGNATURE_BYTES, SIGNATURE_NONCE_BYTES, VERIFYING_KEY_BYTES};

        #[derive(Clone, Copy, PartialEq)]
        pub(super) enum Order {
            LsbFirst,
            MsbFirst,
        }

        struct Reader<'a> {
            bytes: &'a [u8],
            bit: usize,
            order: Order,
        }

        impl Reader<'_> {
            fn bit(&mut self) -> u32 {
                let byte = self.bytes[self.bit / 8];
                let shift = match self.order {
                    Order::LsbFirst => self.bit % 8,
                    Order::MsbFirst => 7 - self.bit % 8,
                };
                self.bit += 1;
                u32::from((byte >> shift) & 1)
            }

            /// An `n`-bit field; its first bit is the least significant
            /// (LSB-first) or the most significant (MSB-first).
            fn field(&mut self, n: u32) -> u32 {
                let mut value = 0;
                for i in 0..n {
                    let bit = self.bit();
                    match self.order {
                        Order::LsbFirst => value |= bit << i,
                        Order::MsbFirst => value = (value << 1) | bit,
                    }
                }
                value
            }
        }

        struct Writer {
            bytes: Vec<u8>,
            bit: usize,
            order: Order,
        }

        impl Writer {
            fn bit(&mut self, value: u32) {
                if self.bit.is_multiple_of(8) {
                    self.bytes.push(0);
                }
                let shift = match self.order {
                    Order::LsbFirst => self.bit % 8,
                    Order::MsbFirst => 7 - self.bit % 8,
                };
                let last = self.bytes.len() - 1;
                self.bytes[last] |= ((value & 1) as u8) << shift;
                self.bit += 1;
            }

            fn field(&mut self, value: u32, n: u32) {
                for i in 0..n {
                    match self.order {
                        Order::LsbFirst => self.bit(value >> i),
                        Order::MsbFirst => self.bit(value >> (n - 1 - i)),
                    }
                }
            }
        }

        fn fields(bytes: &[u8], widths: &[(u32, usize)], from: Order, to: Order) -> Vec<u8> {
            let mut reader = Reader {
                bytes,
                bit: 0,
                order: from,
            };
            let mut writer = Writer {
                bytes: Vec::new(),
                bit: 0,
                order: to,
            };
            for &(width, count) in widths {
                for _ in 0..count {
                    writer.field(reader.field(width), width);
                }
            }
            assert_eq!(reader.bit, bytes.len() * 8, "fields must cover the input");
            writer.bytes
        }

        /// Verifying key: header byte, then 1024 values of 14 bits. fn-dsa
        /// stores h in the NTT domain, round-3 Falcon as plain coefficients,
        /// so the values are also carried across the NTT.
        pub(super) fn public_key(bytes: &[u8], from: Order, to: Order) -> Vec<u8> {
            use fn_dsa_comm::mq;
            assert_eq!(bytes.len(), VERIFYING_KEY_BYTES);
            let mut reader = Reader {
                bytes: &bytes[1..],
                bit: 0,
                order: from,
            };
            let mut h: Vec<u16> = (0..1024).map(|_| reader.field(14) as u16).collect();
            mq::mqpoly_ext_to_int(10, &mut h);
            if from == Order::LsbFirst {
                mq::mqpoly_NTT_to_int(10, &mut h);
            } else {
                mq::mqpoly_int_to_NTT(10, &mut h);
            }
            mq::mqpoly_int_to_ext(10, &mut h);
            let mut writer = Writer {
                bytes: vec![bytes[0]],
                bit: 8,
                order: to,
            };
            for value in h {
                writer.field(u32::from(value), 14);
            }
            writer.bytes
        }

        /// Round-3 private key body: f and g (5 bits each), F (8 bits).
        pub(super) fn secret_key(bytes: &[u8], from: Order, to: Order) -> Vec<u8> {
            let mut out = vec![bytes[0]];
            out.extend(fields(
                &bytes[1..],
                &[(5, 1024), (5, 1024), (8, 1024)],
                from,
                to,
            ));
            out
        }

        /// Padded signature: header, nonce, then per coefficient a sign bit,
        /// the low 7 bits of |s|, and |s| >> 7 in unary (zeros, then a one).
        pub(super) fn signature(bytes: &[u8], from: Order, to: Order) -> Vec<u8> {
            assert_eq!(bytes.len(), SIGNATURE_BYTES);
            let body = 1 + SIGNATURE_NONCE_BYTES;
            let mut reader = Reader {
                bytes: &bytes[body..],
                bit: 0,
                order: from,
            };
            let mut writer = Writer {
                bytes: bytes[..body].to_vec(),
                bit: body * 8,
                order: to,
            };
            for _ in 0..1024 {
                writer.field(reader.field(1), 1);
                writer.field(reader.field(7), 7);
                loop {
                    let bit = reader.field(1);
                    writer.field(bit, 1);
                    if bit == 1 {
                        break;
                    }
                }
            }
            writer.bytes.resize(SIGNATURE_BYTES, 0);
            writer.bytes
        }
    }

    use transcode::Order::{LsbFirst, MsbFirst};

    #[test]
    fn our_key_pairs_are_round3_key_pairs() {
        // Our key, transcoded to round-3 encodings, signs and verifies in
        // the C implementation: same secret lattice, same public key.
        let key = shared_key();
        let sk = transcode::secret_key(
            &key.to_bytes()[..pq::secret_key_bytes()],
            LsbFirst,
            MsbFirst,
        );
        let pk = transcode::public_key(key.verifying_key().as_bytes(), LsbFirst, MsbFirst);
        let their_sk = pq::SecretKey::from_bytes(&sk).expect("size");
        let their_pk = pq::PublicKey::from_bytes(&pk).expect("size");
        let m = [0x5au8; 64];
        let theirs = pq::detached_sign(&m, &their_sk);
        assert_eq!(theirs.as_bytes().len(), SIGNATURE_BYTES);
        assert!(pq::verify_detached_signature(&theirs, &m, &their_pk).is_ok());
        // The transcodings are inverse maps.
        assert_eq!(
            transcode::public_key(&pk, MsbFirst, LsbFirst),
            key.verifying_key().as_bytes()
        );
        let ours = transcode::signature(theirs.as_bytes(), MsbFirst, LsbFirst);
        assert_eq!(
            transcode::signature(&ours, LsbFirst, MsbFirst),
            theirs.as_bytes()
        );

        // Untranscoded, the C implementation refuses our secret key (it
        // signs nothing: an empty signature comes back).
        let raw_sk =
            pq::SecretKey::from_bytes(&key.to_bytes()[..pq::secret_key_bytes()]).expect("size");
        assert!(pq::detached_sign(&m, &raw_sk).as_bytes().is_empty());
    }

    #[test]
    fn round3_key_pairs_are_our_key_pairs() {
        // A key pair made by the C implementation, transcoded and completed
        // to fn-dsa's format by appending SHAKE256(verifying key).
        let (pk, sk) = pq::keypair();
        let our_pk = transcode::public_key(pk.as_bytes(), MsbFirst, LsbFirst);
        let mut bytes = transcode::secret_key(sk.as_bytes(), MsbFirst, LsbFirst);
        bytes.extend_from_slice(&fn_dsa::hashed_vrfykey_from_vrfykey(&our_pk));
        // from_bytes re-derives h from (f, g) and checks the embedded hash:
        // it equals the C implementation's public key.
        let key = SigningKey::from_bytes(&bytes).expect("a round-3 key is an fn-dsa key");
        assert_eq!(key.verifying_key().as_bytes(), &our_pk[..]);
        let signature = key.sign(DOMAIN, b"m", &SeededEntropy::new(12, b""));
        assert_eq!(key.verifying_key().verify(DOMAIN, b"m", &signature), Ok(()));
    }

    #[test]
    fn signatures_do_not_cross_verify() {
        // Documented incompatibility (module doc, point 3): even with keys
        // and signature transcoded, hash-to-point differs.
        let key = shared_key();
        let vk = key.verifying_key();
        let pk =
            pq::PublicKey::from_bytes(&transcode::public_key(vk.as_bytes(), LsbFirst, MsbFirst))
                .expect("size");
        let message = b"a block vote";
        let signature = key.sign(DOMAIN, message, &SeededEntropy::new(11, b"x"));
        let theirs = transcode::signature(signature.as_bytes(), LsbFirst, MsbFirst);
        let detached = pq::DetachedSignature::from_bytes(&theirs).expect("padded");
        assert!(pq::verify_detached_signature(&detached, message, &pk).is_err());
        assert!(pq::verify_detached_signature(&detached, &mu(&vk, DOMAIN, message), &pk).is_err());

        // And a C signature (transcoded) is a well-formed fn-dsa signature
        // that does not verify, in either message-hashing mode.
        let sk = transcode::secret_key(
            &key.to_bytes()[..pq::secret_key_bytes()],
            LsbFirst,
            MsbFirst,
        );
        let their_sk = pq::SecretKey::from_bytes(&sk).expect("size");
        let m = mu(&vk, DOMAIN, message);
        let c_signature = pq::detached_sign(&m, &their_sk);
        let ours = Signature::from_bytes(&transcode::signature(
            c_signature.as_bytes(),
            MsbFirst,
            LsbFirst,
        ))
        .expect("well-formed");
        assert!(!vk.expanded.verify(
            &ours.0[..],
            &fn_dsa::DOMAIN_NONE,
            &fn_dsa::HASH_ID_EXTMU,
            &m
        ));
        assert_eq!(
            vk.verify(DOMAIN, message, &ours),
            Err(WireError::BadSignature)
        );
    }
}

/// Process-wide memo of signature checks, used when memos are on (see
/// [`hm_env::memo`]): a check is a pure function of (key, domain, message,
/// signature), so its verdict can be shared by every simulated node that
/// makes it.
mod verify_cache {
    use hm_env::memo::{Memo, memo_id};

    use super::{Hash, Signature};

    /// Verdicts remembered (~100 bytes each).
    pub const ENTRIES_MAX: usize = 1 << 18;

    static VERDICTS: Memo<bool> = Memo::new(ENTRIES_MAX, usize::MAX);

    pub fn verified(
        key: &Hash,
        domain: &str,
        message: &[u8],
        signature: &Signature,
        check: impl FnOnce() -> bool,
    ) -> bool {
        let id = || {
            memo_id(
                "hm/memo/verify",
                &[key.as_bytes(), domain.as_bytes(), message, &signature.0[..]],
            )
        };
        VERDICTS.get_or_compute(id, |_| 0, check)
    }
}
