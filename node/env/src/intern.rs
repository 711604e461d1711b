//! Content-addressed sharing of immutable byte values.
//!
//! A simulator runs a thousand nodes in one process, and each keeps its own
//! copy of every block and every certificate: the same bytes a thousand
//! times. [`intern`] hands out one shared allocation per distinct value
//! (found by its SHA-256), so identical values cost memory once. It changes
//! nothing a node can observe — the bytes are equal — only how many copies
//! the process holds; a real node, alone in its process, simply shares
//! between its own copies (disk cache, state, log).
//!
//! Entries are weak: a value is freed when its last holder drops it, and
//! dead entries are swept every [`SWEEP_EVERY_INSERTS`] insertions.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};

use sha2::{Digest, Sha256};

/// Values shorter than this are copied, not shared: the bookkeeping would
/// cost more than it saves.
pub const INTERN_BYTES_MIN: usize = 256;
/// How often dead entries are removed from the pool.
pub const SWEEP_EVERY_INSERTS: usize = 4_096;

/// Shared values by key. A key only finds candidates: a hit is used only
/// when its bytes are equal, so a key collision costs sharing, never
/// correctness.
struct Pool<K> {
    by_key: BTreeMap<K, Weak<[u8]>>,
    inserts_since_sweep: usize,
}

impl<K: Ord> Pool<K> {
    const fn new() -> Self {
        Self {
            by_key: BTreeMap::new(),
            inserts_since_sweep: 0,
        }
    }

    fn share(&mut self, key: K, bytes: &[u8]) -> Arc<[u8]> {
        if let Some(shared) = self.by_key.get(&key).and_then(Weak::upgrade)
            && *shared == *bytes
        {
            return shared;
        }
        let shared: Arc<[u8]> = Arc::from(bytes);
        self.by_key.insert(key, Arc::downgrade(&shared));
        self.inserts_since_sweep += 1;
        if self.inserts_since_sweep >= SWEEP_EVERY_INSERTS {
            self.inserts_since_sweep = 0;
            self.by_key.retain(|_, weak| weak.strong_count() > 0);
        }
        shared
    }
}

/// Values by SHA-256, for callers that need the digest anyway.
static POOL: Mutex<Pool<[u8; 32]>> = Mutex::new(Pool::new());
/// Values by [`checksum`], for callers that only need sharing and a check.
static CHECKSUM_POOL: Mutex<Pool<u64>> = Mutex::new(Pool::new());

fn locked<K>(pool: &Mutex<Pool<K>>) -> std::sync::MutexGuard<'_, Pool<K>> {
    crate::sync::lock(pool)
}

/// The SHA-256 of `bytes` and a shared allocation holding them.
pub fn intern_with_digest(bytes: &[u8]) -> (Arc<[u8]>, [u8; 32]) {
    let digest = digest(bytes);
    if bytes.len() < INTERN_BYTES_MIN {
        return (Arc::from(bytes), digest);
    }
    (locked(&POOL).share(digest, bytes), digest)
}

/// A shared allocation holding `bytes`, and their [`checksum`]: for stores
/// that keep values and must notice when one changed (the simulated
/// disk), at a fraction of SHA-256's cost per byte.
pub fn intern_with_checksum(bytes: &[u8]) -> (Arc<[u8]>, u64) {
    let checksum = checksum(bytes);
    if bytes.len() < INTERN_BYTES_MIN {
        return (Arc::from(bytes), checksum);
    }
    (locked(&CHECKSUM_POOL).share(checksum, bytes), checksum)
}

/// A fast 64-bit hash of `bytes` (rustc-hash's, fixed seeds, so the same
/// in every process). Not collision resistant against an adversary: a
/// checksum against accidental change (a flipped bit) and a pool key,
/// never an identity.
pub fn checksum(bytes: &[u8]) -> u64 {
    use std::hash::Hasher;
    let mut hasher = rustc_hash::FxHasher::default();
    hasher.write(bytes);
    hasher.write_usize(bytes.len());
    hasher.finish()
}

/// A shared allocation holding `bytes`.
pub fn intern(bytes: &[u8]) -> Arc<[u8]> {
    intern_with_digest(bytes).0
}

/// The digest [`intern_with_digest`] returns for `bytes` (plain SHA-256),
/// for callers that need it without interning.
pub fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Live distinct values in the pool (for tests and statistics).
pub fn pooled_values() -> usize {
    let live = |weak: &&Weak<[u8]>| weak.strong_count() > 0;
    locked(&POOL).by_key.values().filter(live).count()
        + locked(&CHECKSUM_POOL).by_key.values().filter(live).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_values_share_one_allocation_and_small_ones_are_copied() {
        let value = vec![42u8; 4096];
        let first = intern(&value);
        let second = intern(&value.clone());
        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!(&*first, &value[..]);
        let other = intern(&[43u8; 4096]);
        assert!(!Arc::ptr_eq(&first, &other));
        let small = [1u8; 16];
        assert!(!Arc::ptr_eq(&intern(&small), &intern(&small)));
    }

    #[test]
    fn checksummed_values_share_and_a_flipped_bit_changes_the_checksum() {
        let value = vec![9u8; 4096];
        let (first, sum) = intern_with_checksum(&value);
        let (second, again) = intern_with_checksum(&value.clone());
        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!(sum, again);
        for index in [0, 1, 7, 8, 15, 16, 2048, 4095] {
            let mut flipped = value.clone();
            flipped[index] ^= 0x01;
            assert_ne!(checksum(&flipped), sum, "bit flip at {index}");
            let (other, _) = intern_with_checksum(&flipped);
            assert!(!Arc::ptr_eq(&other, &first));
        }
        assert_ne!(checksum(&[]), checksum(&[0]), "the length counts");
    }

    #[test]
    fn a_value_is_freed_with_its_last_holder() {
        let value = vec![7u8; 1024];
        let held = intern(&value);
        let weak = Arc::downgrade(&held);
        drop(held);
        assert!(weak.upgrade().is_none());
        // Interning it again makes a fresh allocation.
        let again = intern(&value);
        assert_eq!(&*again, &value[..]);
    }
}
