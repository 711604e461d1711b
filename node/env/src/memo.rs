//! Process-wide memos of pure functions, shared by every node in a process.
//!
//! A simulator runs a thousand nodes in one process, and each repeats the
//! same deterministic work on the same inputs: it verifies the same
//! signatures, compresses and decompresses the same blocks, executes the
//! same block on the same parent state. For a pure function, computing once
//! and handing every caller the same answer changes nothing a node can
//! observe — only how often the process does the work.
//!
//! Memos are off unless the process turns them on. Whoever runs many nodes
//! in one process (`hm-sim`) calls [`enable`] at startup; a real node,
//! alone in its process, gains nothing from sharing and never does, and
//! neither do the tests of the node crates, so the build that ships is the
//! build that is tested. The switch is a run-time capability, not a cargo
//! feature: the code is the same in every build, and a [`Memo`] that is
//! off computes every answer without hashing a key or keeping anything.
//! Tests that need memos on enable them in their own test binary (an
//! integration test: one process), since the switch is process-wide and
//! never turns off.
//!
//! Entries are keyed by a SHA-256 over everything the answer depends on
//! ([`memo_id`]): a wrong hit would need a hash collision. Each memo is
//! bounded by an entry count and a total weight (bytes, as the caller
//! measures them); the oldest entries are evicted first.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use sha2::{Digest, Sha256};

/// Whether every [`Memo`] in this process remembers (see the module doc).
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Turns every memo in this process on, for the rest of the process: call
/// it once at startup, before any node runs. Only a process running many
/// nodes that repeat the same pure work gains from it (the simulator).
pub fn enable() {
    // Relaxed: the switch orders nothing. A memo answers what its function
    // computes, so a caller that sees the switch late only does the work.
    ENABLED.store(true, Ordering::Relaxed);
}

/// Whether [`enable`] was called in this process.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The key of a memo entry: SHA-256 over a domain and length-prefixed parts,
/// so `("ab", "c")` and `("a", "bc")` differ.
pub fn memo_id(domain: &str, parts: &[&[u8]]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update((domain.len() as u64).to_le_bytes());
    hasher.update(domain.as_bytes());
    for part in parts {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    hasher.finalize().into()
}

struct Entries<V> {
    values: BTreeMap<[u8; 32], (V, usize)>,
    order: VecDeque<[u8; 32]>,
    weight: usize,
    hits: u64,
    misses: u64,
}

/// A bounded, thread-safe map from [`memo_id`]s to computed values, used
/// only when memos are [`enabled`].
pub struct Memo<V> {
    entries_max: usize,
    weight_max: usize,
    inner: Mutex<Entries<V>>,
}

impl<V: Clone> Memo<V> {
    /// An empty memo keeping at most `entries_max` values and at most
    /// `weight_max` total weight (a single heavier value is not kept).
    pub const fn new(entries_max: usize, weight_max: usize) -> Memo<V> {
        assert!(entries_max > 0, "a memo must hold at least one entry");
        Memo {
            entries_max,
            weight_max,
            inner: Mutex::new(Entries {
                values: BTreeMap::new(),
                order: VecDeque::new(),
                weight: 0,
                hits: 0,
                misses: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries<V>> {
        // A panic while holding the lock leaves the maps consistent (every
        // mutation below is completed before anything that can panic).
        crate::sync::lock(&self.inner)
    }

    /// The value for the key `id` returns, computing it with `compute`
    /// (outside the lock) when it is not remembered. `weight` measures a
    /// value for the bound. When memos are off (see [`enable`]) this is
    /// `compute()`: neither `id` nor `weight` runs and nothing is counted.
    pub fn get_or_compute(
        &self,
        id: impl FnOnce() -> [u8; 32],
        weight: impl FnOnce(&V) -> usize,
        compute: impl FnOnce() -> V,
    ) -> V {
        if !enabled() {
            return compute();
        }
        let id = id();
        {
            let mut entries = self.lock();
            if let Some((value, _)) = entries.values.get(&id) {
                let value = value.clone();
                entries.hits += 1;
                return value;
            }
            entries.misses += 1;
        }
        let value = compute();
        let value_weight = weight(&value);
        if value_weight > self.weight_max {
            return value;
        }
        let mut entries = self.lock();
        if entries
            .values
            .insert(id, (value.clone(), value_weight))
            .is_none()
        {
            entries.order.push_back(id);
            entries.weight += value_weight;
        } else {
            // Computed concurrently by another caller: same value, same weight.
            return value;
        }
        while entries.order.len() > self.entries_max || entries.weight > self.weight_max {
            let Some(oldest) = entries.order.pop_front() else {
                break;
            };
            if let Some((_, oldest_weight)) = entries.values.remove(&oldest) {
                entries.weight -= oldest_weight;
            }
        }
        value
    }

    /// (hits, misses) so far, for statistics and tests.
    pub fn hits_and_misses(&self) -> (u64, u64) {
        let entries = self.lock();
        (entries.hits, entries.misses)
    }

    /// Values currently remembered.
    pub fn len(&self) -> usize {
        self.lock().values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test binary of this crate never enables memos (those that need
    /// them on live in `tests/memo.rs`, their own process).
    #[test]
    fn memos_are_off_by_default_and_compute_every_time() {
        assert!(!enabled(), "nothing in hm-env's unit tests enables memos");
        let memo: Memo<u32> = Memo::new(4, 100);
        let mut calls = 0;
        for _ in 0..2 {
            let value = memo.get_or_compute(
                || unreachable!("no key is computed when memos are off"),
                |_| unreachable!("nothing is weighed when memos are off"),
                || {
                    calls += 1;
                    7
                },
            );
            assert_eq!(value, 7);
        }
        assert_eq!(calls, 2);
        assert_eq!(memo.hits_and_misses(), (0, 0));
        assert!(memo.is_empty());
    }

    #[test]
    fn ids_separate_parts_and_domains() {
        assert_ne!(memo_id("d", &[b"ab", b"c"]), memo_id("d", &[b"a", b"bc"]));
        assert_ne!(memo_id("d", &[b"x"]), memo_id("e", &[b"x"]));
        assert_eq!(memo_id("d", &[b"x"]), memo_id("d", &[b"x"]));
    }
}
