//! Fixtures for the node crates' tests; a dev-dependency only, never in a
//! shipped binary.
//!
//! Key generation is the slow part of most tests (FALCON-1024 keygen takes
//! milliseconds, far more in a debug build), and many tests want the same
//! few keys. [`signing_key`] and [`kem_public_key`] derive a key from a
//! label and an index — `SeededEntropy::new(index, label)`, so the same
//! name gives the same key in every process — and generate each one once
//! per process.

use std::collections::BTreeMap;
use std::sync::Mutex;

use hm_env::mem::SeededEntropy;
use hm_env::sync::lock;
use hm_wire::{KemPublicKey, KemSecretKey, SigningKey};

/// Distinct keys one test process may ask for: far above any test's need,
/// and a bound on what the caches keep for the process's life.
pub const TEST_KEYS_MAX: usize = 1_024;

type Cache<K> = Mutex<BTreeMap<(&'static str, u64), &'static K>>;

static SIGNING_KEYS: Cache<SigningKey> = Mutex::new(BTreeMap::new());
static KEM_KEYS: Cache<KemPublicKey> = Mutex::new(BTreeMap::new());

fn cached<K>(
    cache: &Cache<K>,
    label: &'static str,
    index: u64,
    make: impl FnOnce() -> K,
) -> &'static K {
    let mut keys = lock(cache);
    if let Some(key) = keys.get(&(label, index)) {
        return key;
    }
    assert!(
        keys.len() < TEST_KEYS_MAX,
        "more than {TEST_KEYS_MAX} distinct test keys; reuse labels and indexes"
    );
    // Kept for the process's life: tests hold `&'static` keys.
    let key: &'static K = Box::leak(Box::new(make()));
    keys.insert((label, index), key);
    key
}

/// The FALCON-1024 key named `label`/`index`.
pub fn signing_key(label: &'static str, index: u64) -> &'static SigningKey {
    cached(&SIGNING_KEYS, label, index, || {
        SigningKey::generate(&SeededEntropy::new(index, label.as_bytes()))
    })
}

/// The public half of the ML-KEM-1024 key named `label`/`index`.
pub fn kem_public_key(label: &'static str, index: u64) -> &'static KemPublicKey {
    cached(&KEM_KEYS, label, index, || {
        KemSecretKey::generate(&SeededEntropy::new(index, label.as_bytes())).public_key()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_gives_one_key_generated_once_and_names_differ() {
        let first = signing_key("testkit", 0);
        let again = signing_key("testkit", 0);
        assert!(std::ptr::eq(first, again), "generated once");
        let fresh = SigningKey::generate(&SeededEntropy::new(0, b"testkit"));
        assert_eq!(
            first.verifying_key(),
            fresh.verifying_key(),
            "derived from the name"
        );
        assert_ne!(
            signing_key("testkit", 1).verifying_key(),
            first.verifying_key()
        );
        assert_ne!(
            signing_key("other", 0).verifying_key(),
            first.verifying_key()
        );
        assert!(std::ptr::eq(
            kem_public_key("testkit", 0),
            kem_public_key("testkit", 0)
        ));
    }
}
