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
use std::sync::{Arc, LazyLock, Mutex, Weak};

use sha2::{Digest, Sha256};

/// Values shorter than this are copied, not shared: the bookkeeping would
/// cost more than it saves.
pub const INTERN_BYTES_MIN: usize = 256;
/// How often dead entries are removed from the pool.
pub const SWEEP_EVERY_INSERTS: usize = 4_096;

#[derive(Default)]
struct Pool {
    by_digest: BTreeMap<[u8; 32], Weak<[u8]>>,
    inserts_since_sweep: usize,
}

static POOL: LazyLock<Mutex<Pool>> = LazyLock::new(|| Mutex::new(Pool::default()));

/// The SHA-256 of `bytes` and a shared allocation holding them.
pub fn intern_with_digest(bytes: &[u8]) -> (Arc<[u8]>, [u8; 32]) {
    let digest = digest(bytes);
    if bytes.len() < INTERN_BYTES_MIN {
        return (Arc::from(bytes), digest);
    }
    let mut pool = POOL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(shared) = pool.by_digest.get(&digest).and_then(Weak::upgrade)
        && *shared == *bytes
    {
        return (shared, digest);
    }
    let shared: Arc<[u8]> = Arc::from(bytes);
    pool.by_digest.insert(digest, Arc::downgrade(&shared));
    pool.inserts_since_sweep += 1;
    if pool.inserts_since_sweep >= SWEEP_EVERY_INSERTS {
        pool.inserts_since_sweep = 0;
        pool.by_digest.retain(|_, weak| weak.strong_count() > 0);
    }
    (shared, digest)
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
    let pool = POOL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    pool.by_digest
        .values()
        .filter(|weak| weak.strong_count() > 0)
        .count()
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
