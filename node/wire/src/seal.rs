//! Sealing: public-key encryption to a node's ML-KEM-1024 key.
//!
//! `KEM encapsulate → HKDF-SHA256 → AES-256-GCM`, randomness from
//! [`hm_env::Entropy`] (KEM message and nonce), so simulated runs replay.
//!
//! Envelope, version 1 (fixed overhead [`SEAL_OVERHEAD_BYTES`]):
//!
//! ```text
//! 0x01 || ML-KEM-1024 ciphertext (1568) || nonce (12) || AES-GCM ciphertext || tag (16)
//! ```
//!
//! * key = HKDF-SHA256(ikm = KEM shared secret, salt = KEM ciphertext,
//!   info = `"hm/seal/v1"`), 32 bytes: the salt ties the key to this
//!   encapsulation.
//! * nonce: 96 random bits per envelope; the key is fresh per envelope too,
//!   so a nonce never repeats under a key.
//! * AAD = version byte || caller's associated data: the header and the
//!   caller's context (e.g. a sender id or purpose) are authenticated; the
//!   KEM ciphertext is bound through the key derivation.
//!
//! A wrong recipient key, altered bytes and different associated data all
//! end as [`WireError::DecryptionFailed`]: ML-KEM's implicit rejection hands
//! back a pseudo-random secret instead of an error, and GCM then refuses.
//!
//! Keys: the secret key is stored as its 64-byte FIPS 203 seed `d || z`; the
//! public key as the 1568-byte FIPS 203 encapsulation key (checked on decode).

use crate::rng::KemRng;
use crate::{WireError, hash};
use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit};
use hm_env::Entropy;
use ml_kem::{Decapsulate, Encapsulate, KeyExport, MlKem1024};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use zeroize::Zeroizing;

type DecapsulationKey = ml_kem::DecapsulationKey<MlKem1024>;
type EncapsulationKey = ml_kem::EncapsulationKey<MlKem1024>;
type KemCiphertext = ml_kem::Ciphertext<MlKem1024>;

/// Version byte of the envelope format described in the module doc.
pub const SEAL_VERSION: u8 = 1;
/// Encoded public (encapsulation) key size.
pub const KEM_PUBLIC_KEY_BYTES: usize = 1568;
/// Encoded secret key size: the FIPS 203 seed `d || z`.
pub const KEM_SECRET_KEY_BYTES: usize = 64;
/// ML-KEM-1024 ciphertext size.
pub const KEM_CIPHERTEXT_BYTES: usize = 1568;
/// AES-GCM nonce size (96 bits).
pub const SEAL_NONCE_BYTES: usize = 12;
/// AES-GCM tag size.
pub const SEAL_TAG_BYTES: usize = 16;
/// Bytes an envelope adds to its plaintext.
pub const SEAL_OVERHEAD_BYTES: usize = 1 + KEM_CIPHERTEXT_BYTES + SEAL_NONCE_BYTES + SEAL_TAG_BYTES;
/// Largest plaintext [`seal`] accepts and [`open`] will produce. What we
/// seal is small (keys, credentials, a manifest); bulk data is chunked and
/// encrypted under a key that is itself sealed. The cap bounds the memory a
/// hostile envelope can make [`open`] use.
pub const SEALED_PLAINTEXT_BYTES_MAX: usize = 16 << 20;

const HKDF_INFO: &[u8] = b"hm/seal/v1";
const KEM_KEY_FINGERPRINT_DOMAIN: &str = "hm/kem-key/v1";

/// An ML-KEM-1024 secret (decapsulation) key.
pub struct KemSecretKey {
    seed: Zeroizing<[u8; KEM_SECRET_KEY_BYTES]>,
    key: Box<DecapsulationKey>,
}

impl KemSecretKey {
    /// Draws a 64-byte seed from `entropy` (same stream, same key).
    pub fn generate<E: Entropy + ?Sized>(entropy: &E) -> KemSecretKey {
        let mut seed = Zeroizing::new([0u8; KEM_SECRET_KEY_BYTES]);
        entropy.fill_bytes(&mut seed[..]);
        KemSecretKey::from_seed(seed)
    }

    fn from_seed(seed: Zeroizing<[u8; KEM_SECRET_KEY_BYTES]>) -> KemSecretKey {
        let key = Box::new(DecapsulationKey::from_seed((*seed).into()));
        KemSecretKey { seed, key }
    }

    /// The matching public key.
    pub fn public_key(&self) -> KemPublicKey {
        let encoded = self.key.encapsulation_key().to_bytes();
        match KemPublicKey::from_bytes(&encoded) {
            Ok(public) => public,
            Err(error) => panic!("ml-kem derived a public key it cannot decode: {error}"),
        }
    }

    /// The 64-byte seed. Secret: keep it in a keystore, never log it.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.seed.to_vec()
    }

    /// Any 64 bytes are a valid seed.
    pub fn from_bytes(bytes: &[u8]) -> Result<KemSecretKey, WireError> {
        let seed = <[u8; KEM_SECRET_KEY_BYTES]>::try_from(bytes).map_err(|_| WireError::BadKey)?;
        Ok(KemSecretKey::from_seed(Zeroizing::new(seed)))
    }

    fn decapsulate(&self, ciphertext: &KemCiphertext) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.key.decapsulate(ciphertext).into())
    }
}

impl fmt::Debug for KemSecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "KemSecretKey(public {})",
            self.public_key().fingerprint()
        )
    }
}

impl Serialize for KemSecretKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.seed[..])
    }
}

impl<'de> Deserialize<'de> for KemSecretKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        crate::serde_bytes::deserialize(
            deserializer,
            "an ML-KEM-1024 secret key seed",
            KEM_SECRET_KEY_BYTES,
            KemSecretKey::from_bytes,
        )
    }
}

/// An ML-KEM-1024 public (encapsulation) key.
#[derive(Clone)]
pub struct KemPublicKey {
    bytes: Box<[u8]>,
    key: Box<EncapsulationKey>,
}

impl KemPublicKey {
    pub fn to_bytes(&self) -> Vec<u8> {
        self.bytes.to_vec()
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Decodes and validates (FIPS 203 modulus check) an encapsulation key.
    pub fn from_bytes(bytes: &[u8]) -> Result<KemPublicKey, WireError> {
        let array =
            ml_kem::Key::<EncapsulationKey>::try_from(bytes).map_err(|_| WireError::BadKey)?;
        let key = EncapsulationKey::new(&array).map_err(|_| WireError::BadKey)?;
        Ok(KemPublicKey {
            bytes: bytes.into(),
            key: Box::new(key),
        })
    }

    /// `hash("hm/kem-key/v1", key bytes)`, for logs and key directories.
    pub fn fingerprint(&self) -> crate::Hash {
        hash(KEM_KEY_FINGERPRINT_DOMAIN, &self.bytes)
    }
}

impl PartialEq for KemPublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}

impl Eq for KemPublicKey {}

impl fmt::Debug for KemPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KemPublicKey({})", self.fingerprint())
    }
}

impl Serialize for KemPublicKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.bytes)
    }
}

impl<'de> Deserialize<'de> for KemPublicKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        crate::serde_bytes::deserialize(
            deserializer,
            "an ML-KEM-1024 public key",
            KEM_PUBLIC_KEY_BYTES,
            KemPublicKey::from_bytes,
        )
    }
}

/// Encrypts `plaintext` to `recipient`, authenticating `associated_data`
/// (which is not included in the envelope: the opener must supply the same).
pub fn seal<E: Entropy + ?Sized>(
    recipient: &KemPublicKey,
    associated_data: &[u8],
    plaintext: &[u8],
    entropy: &E,
) -> Result<Vec<u8>, WireError> {
    if plaintext.len() > SEALED_PLAINTEXT_BYTES_MAX {
        return Err(WireError::TooLarge {
            what: "plaintext to seal",
            len: plaintext.len(),
            max: SEALED_PLAINTEXT_BYTES_MAX,
        });
    }
    let (ciphertext, shared) = recipient.key.encapsulate_with_rng(&mut KemRng(entropy));
    let shared = Zeroizing::new(<[u8; 32]>::from(shared));
    let mut nonce = [0u8; SEAL_NONCE_BYTES];
    entropy.fill_bytes(&mut nonce);

    let cipher = cipher_for(&shared, &ciphertext)?;
    let aad = aad(associated_data);
    let body = cipher
        .encrypt(
            &nonce.into(),
            Payload {
                msg: plaintext,
                aad: &aad,
            },
        )
        // GCM refuses only plaintexts over 64 GiB, far above our cap.
        .map_err(|_| WireError::TooLarge {
            what: "plaintext for AES-GCM",
            len: plaintext.len(),
            max: SEALED_PLAINTEXT_BYTES_MAX,
        })?;

    let mut envelope = Vec::with_capacity(SEAL_OVERHEAD_BYTES + plaintext.len());
    envelope.push(SEAL_VERSION);
    envelope.extend_from_slice(ciphertext.as_slice());
    envelope.extend_from_slice(&nonce);
    envelope.extend_from_slice(&body);
    assert_eq!(envelope.len(), SEAL_OVERHEAD_BYTES + plaintext.len());
    Ok(envelope)
}

/// Opens an envelope made by [`seal`] for `secret`'s public key with the
/// same `associated_data`.
pub fn open(
    secret: &KemSecretKey,
    associated_data: &[u8],
    envelope: &[u8],
) -> Result<Vec<u8>, WireError> {
    if envelope.len() < SEAL_OVERHEAD_BYTES {
        return Err(WireError::Malformed(format!(
            "sealed envelope is {} bytes, shorter than the {SEAL_OVERHEAD_BYTES}-byte header and tag; it was truncated",
            envelope.len()
        )));
    }
    if envelope.len() > SEAL_OVERHEAD_BYTES + SEALED_PLAINTEXT_BYTES_MAX {
        return Err(WireError::TooLarge {
            what: "sealed envelope",
            len: envelope.len(),
            max: SEAL_OVERHEAD_BYTES + SEALED_PLAINTEXT_BYTES_MAX,
        });
    }
    let (version, rest) = (envelope[0], &envelope[1..]);
    if version != SEAL_VERSION {
        return Err(WireError::UnsupportedVersion {
            what: "sealed envelope",
            version,
        });
    }
    let (kem_bytes, rest) = rest.split_at(KEM_CIPHERTEXT_BYTES);
    let (nonce, body) = rest.split_at(SEAL_NONCE_BYTES);
    let ciphertext = KemCiphertext::try_from(kem_bytes)
        .map_err(|_| WireError::Malformed("KEM ciphertext has the wrong size".into()))?;
    let nonce = <[u8; SEAL_NONCE_BYTES]>::try_from(nonce)
        .map_err(|_| WireError::Malformed("nonce has the wrong size".into()))?;

    let shared = secret.decapsulate(&ciphertext);
    let cipher = cipher_for(&shared, &ciphertext)?;
    let aad = aad(associated_data);
    cipher
        .decrypt(
            &nonce.into(),
            Payload {
                msg: body,
                aad: &aad,
            },
        )
        .map_err(|_| WireError::DecryptionFailed)
}

fn aad(associated_data: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(1 + associated_data.len());
    aad.push(SEAL_VERSION);
    aad.extend_from_slice(associated_data);
    aad
}

fn cipher_for(shared: &[u8; 32], ciphertext: &KemCiphertext) -> Result<Aes256Gcm, WireError> {
    let hkdf = hkdf::Hkdf::<sha2_hkdf::Sha256>::new(Some(ciphertext.as_slice()), shared);
    let mut key = Zeroizing::new([0u8; 32]);
    // HKDF-SHA256 refuses only outputs over 8160 bytes.
    hkdf.expand(HKDF_INFO, &mut key[..])
        .map_err(|_| WireError::Malformed("HKDF output length refused".into()))?;
    Ok(Aes256Gcm::new(&(*key).into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hm_env::mem::SeededEntropy;
    use pqcrypto_mlkem::mlkem1024 as pq;
    use pqcrypto_traits::kem::{Ciphertext as _, PublicKey as _, SharedSecret as _};
    use proptest::prelude::*;
    use std::sync::OnceLock;

    fn shared_key() -> &'static KemSecretKey {
        static KEY: OnceLock<KemSecretKey> = OnceLock::new();
        KEY.get_or_init(|| KemSecretKey::generate(&SeededEntropy::new(1, b"kem")))
    }

    #[test]
    fn sizes_match_fips_203() {
        assert_eq!(KEM_PUBLIC_KEY_BYTES, pq::public_key_bytes());
        assert_eq!(KEM_CIPHERTEXT_BYTES, pq::ciphertext_bytes());
        assert_eq!(
            shared_key().public_key().to_bytes().len(),
            KEM_PUBLIC_KEY_BYTES
        );
    }

    #[test]
    fn same_seed_same_key_and_envelope() {
        let a = KemSecretKey::generate(&SeededEntropy::new(5, b"n"));
        let b = KemSecretKey::generate(&SeededEntropy::new(5, b"n"));
        let c = KemSecretKey::generate(&SeededEntropy::new(6, b"n"));
        assert_eq!(a.to_bytes(), b.to_bytes());
        assert_eq!(a.public_key(), b.public_key());
        assert_ne!(a.public_key(), c.public_key());
        let one = seal(&a.public_key(), b"ad", b"pt", &SeededEntropy::new(7, b"s")).expect("seals");
        let two = seal(&a.public_key(), b"ad", b"pt", &SeededEntropy::new(7, b"s")).expect("seals");
        let three =
            seal(&a.public_key(), b"ad", b"pt", &SeededEntropy::new(8, b"s")).expect("seals");
        assert_eq!(one, two);
        assert_ne!(one, three);
    }

    #[test]
    fn typed_failures() {
        let key = shared_key();
        let other = KemSecretKey::generate(&SeededEntropy::new(2, b"other"));
        let entropy = SeededEntropy::new(3, b"e");
        let envelope = seal(&key.public_key(), b"purpose", b"secret", &entropy).expect("seals");
        assert_eq!(envelope[0], SEAL_VERSION);
        assert_eq!(envelope.len(), SEAL_OVERHEAD_BYTES + 6);
        assert_eq!(open(key, b"purpose", &envelope), Ok(b"secret".to_vec()));
        assert_eq!(
            open(&other, b"purpose", &envelope),
            Err(WireError::DecryptionFailed)
        );
        assert_eq!(
            open(key, b"purpos", &envelope),
            Err(WireError::DecryptionFailed)
        );
        assert!(matches!(
            open(key, b"purpose", &envelope[..100]),
            Err(WireError::Malformed(_))
        ));
        let mut versioned = envelope.clone();
        versioned[0] = 2;
        assert_eq!(
            open(key, b"purpose", &versioned),
            Err(WireError::UnsupportedVersion {
                what: "sealed envelope",
                version: 2
            })
        );
        let too_big = vec![0u8; SEALED_PLAINTEXT_BYTES_MAX + 1];
        assert!(matches!(
            seal(&key.public_key(), b"", &too_big, &entropy),
            Err(WireError::TooLarge { .. })
        ));
        let mut huge_envelope = envelope.clone();
        huge_envelope.resize(SEAL_OVERHEAD_BYTES + SEALED_PLAINTEXT_BYTES_MAX + 1, 0);
        assert!(matches!(
            open(key, b"", &huge_envelope),
            Err(WireError::TooLarge { .. })
        ));
    }

    #[test]
    fn keys_round_trip_and_bad_keys_are_refused() {
        let key = shared_key();
        let again = KemSecretKey::from_bytes(&key.to_bytes()).expect("64 bytes");
        assert_eq!(again.public_key(), key.public_key());
        let public = KemPublicKey::from_bytes(&key.public_key().to_bytes()).expect("decodes");
        assert_eq!(public, key.public_key());
        assert!(matches!(
            KemSecretKey::from_bytes(&[0; 63]),
            Err(WireError::BadKey)
        ));
        assert!(matches!(
            KemPublicKey::from_bytes(&[0; 100]),
            Err(WireError::BadKey)
        ));
        // Coefficients >= q fail the FIPS 203 modulus check.
        assert!(matches!(
            KemPublicKey::from_bytes(&[0xff; KEM_PUBLIC_KEY_BYTES]),
            Err(WireError::BadKey)
        ));
        let encoded = crate::encode(&(key.public_key(), again));
        let (public2, secret2): (KemPublicKey, KemSecretKey) =
            crate::decode(&encoded, encoded.len()).expect("decodes");
        assert_eq!(public2, key.public_key());
        assert_eq!(secret2.to_bytes(), key.to_bytes());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn seal_open_round_trips_and_any_flip_fails(
            plaintext in proptest::collection::vec(any::<u8>(), 0..300),
            associated in proptest::collection::vec(any::<u8>(), 0..40),
            seed in any::<u64>(),
            flip in any::<(prop::sample::Index, u8)>(),
        ) {
            let key = shared_key();
            let envelope = seal(&key.public_key(), &associated, &plaintext, &SeededEntropy::new(seed, b"p"))
                .expect("seals");
            prop_assert_eq!(open(key, &associated, &envelope), Ok(plaintext.clone()));
            let mut bad = envelope.clone();
            let at = flip.0.index(bad.len());
            bad[at] ^= 1 << (flip.1 % 8);
            prop_assert!(open(key, &associated, &bad).is_err());
            prop_assert!(open(key, &associated, &envelope[..envelope.len() - 1]).is_err());
        }

        #[test]
        fn random_bytes_never_open(
            bytes in proptest::collection::vec(any::<u8>(), 0..2000),
            key_bytes in proptest::collection::vec(any::<u8>(), 0..1600),
        ) {
            prop_assert!(open(shared_key(), b"", &bytes).is_err());
            let mut versioned = bytes.clone();
            versioned.insert(0, SEAL_VERSION);
            prop_assert!(open(shared_key(), b"", &versioned).is_err());
            let _ = KemPublicKey::from_bytes(&key_bytes);
            let _ = crate::decode::<KemPublicKey>(&key_bytes, 4096);
            let _ = crate::decode::<KemSecretKey>(&key_bytes, 4096);
        }
    }

    #[test]
    fn cross_check_with_pqcrypto_mlkem() {
        // pqcrypto encapsulates to our public key; ml-kem decapsulates.
        let key = shared_key();
        let pk = pq::PublicKey::from_bytes(key.public_key().as_bytes()).expect("same format");
        let (their_secret, their_ct) = pq::encapsulate(&pk);
        let ct = KemCiphertext::try_from(their_ct.as_bytes()).expect("same size");
        assert_eq!(&key.decapsulate(&ct)[..], their_secret.as_bytes());

        // ml-kem encapsulates to a pqcrypto key; pqcrypto decapsulates.
        let (pk, sk) = pq::keypair();
        let ours = KemPublicKey::from_bytes(pk.as_bytes()).expect("same format");
        let (ct, secret) = ours
            .key
            .encapsulate_with_rng(&mut KemRng(&SeededEntropy::new(4, b"x")));
        let their_ct = pq::Ciphertext::from_bytes(ct.as_slice()).expect("same size");
        assert_eq!(
            pq::decapsulate(&their_ct, &sk).as_bytes(),
            secret.as_slice()
        );
    }

    #[test]
    fn envelope_built_from_a_pqcrypto_encapsulation_opens() {
        // The envelope format does not depend on which implementation
        // encapsulated: build one by hand around pqcrypto's output.
        let key = shared_key();
        let pk = pq::PublicKey::from_bytes(key.public_key().as_bytes()).expect("same format");
        let (secret, ct) = pq::encapsulate(&pk);
        let ct_array = KemCiphertext::try_from(ct.as_bytes()).expect("same size");
        let shared = <[u8; 32]>::try_from(secret.as_bytes()).expect("32 bytes");
        let cipher = cipher_for(&shared, &ct_array).expect("hkdf");
        let nonce = [9u8; SEAL_NONCE_BYTES];
        let body = cipher
            .encrypt(
                &nonce.into(),
                Payload {
                    msg: b"hand made",
                    aad: &aad(b"ad"),
                },
            )
            .expect("encrypts");
        let mut envelope = vec![SEAL_VERSION];
        envelope.extend_from_slice(ct.as_bytes());
        envelope.extend_from_slice(&nonce);
        envelope.extend_from_slice(&body);
        assert_eq!(open(key, b"ad", &envelope), Ok(b"hand made".to_vec()));
    }
}
