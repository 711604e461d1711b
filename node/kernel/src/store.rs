//! A module's committed key-value state under its authenticated root,
//! for any chain application (TrustChain's, the asset registry's).
//!
//! Values live in an ordered map (reads and prefix scans); the root is the
//! kernel's sparse Merkle tree ([`crate::state::StateTree`]) over the
//! keys' hashes and the values' SHA-256 digests, so any key's value, or its
//! absence, has a compact proof ([`Store::prove`]). A write set updates the
//! tree along the written paths only: per block the cost is about
//! `writes × log2(n)` node hashes, never the whole state.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use crate::block::StateUpdate;
use crate::state::{StateProof, StateTree, TreeWrite, sorted_writes};
use hm_wire::Hash;

/// A key and its interned new value (`None`: deleted).
type SharedWrite = (Vec<u8>, Option<Arc<[u8]>>);

/// A write set hashed against the state it was executed on
/// ([`Store::prepare`]).
#[derive(Debug)]
pub struct PreparedWrites {
    /// Root of the state the writes were hashed against.
    base_root: Hash,
    /// In key order, as the write set: each key with its shared value
    /// (`None` deletes).
    writes: Vec<SharedWrite>,
    /// The tree after the writes (shares every untouched node with the
    /// committed one).
    tree: StateTree,
    /// The state root after the writes.
    pub root: Hash,
}

/// The committed state: ordered entries (for reads and prefix scans) and
/// the authenticated tree behind the root.
#[derive(Debug, Clone, Default)]
pub struct Store {
    /// Values are shared allocations (`hm_env::intern`): a simulator's
    /// thousand nodes hold one copy of each certificate, not a thousand.
    entries: BTreeMap<Vec<u8>, Arc<[u8]>>,
    tree: StateTree,
}

impl Store {
    pub fn new() -> Store {
        Store::default()
    }

    pub fn root(&self) -> Hash {
        self.tree.root()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.entries.get(key).map(|value| &**value)
    }

    /// A proof of `key`'s committed value, or of its absence, against
    /// [`Store::root`].
    pub fn prove(&self, key: &[u8]) -> StateProof {
        self.tree.prove(key)
    }

    pub fn prefix_range<'a>(
        &'a self,
        prefix: &[u8],
    ) -> impl DoubleEndedIterator<Item = (&'a Vec<u8>, &'a [u8])> + 'a {
        self.entries
            .range::<Vec<u8>, _>(prefix_bounds(prefix))
            .map(|(key, value)| (key, &**value))
    }

    /// Hashes `writes` against this state without applying them: the root
    /// they lead to, and everything [`Store::apply_prepared`] needs to apply
    /// them without hashing again. Values are interned here.
    pub fn prepare(&self, writes: &BTreeMap<Vec<u8>, Option<Vec<u8>>>) -> PreparedWrites {
        let mut tree_writes: Vec<TreeWrite> = Vec::with_capacity(writes.len());
        let mut shared: Vec<SharedWrite> = Vec::with_capacity(writes.len());
        for (key, value) in writes {
            let interned = value.as_deref().map(hm_env::intern::intern_with_digest);
            let digest = interned.as_ref().map(|(_, digest)| Hash(*digest));
            tree_writes.push((crate::state::key_hash(key), digest));
            shared.push((key.clone(), interned.map(|(value, _)| value)));
        }
        let tree = self.tree.updated(&sorted_writes(tree_writes));
        PreparedWrites {
            base_root: self.root(),
            writes: shared,
            root: tree.root(),
            tree,
        }
    }

    /// Applies a write set and updates the tree along its paths.
    pub fn apply(&mut self, updates: &[StateUpdate]) {
        let mut tree_writes: Vec<TreeWrite> = Vec::with_capacity(updates.len());
        for update in updates {
            let key_hash = crate::state::key_hash(&update.key);
            match &update.value {
                Some(value) => {
                    let (shared, digest) = hm_env::intern::intern_with_digest(value);
                    self.entries.insert(update.key.clone(), shared);
                    tree_writes.push((key_hash, Some(Hash(digest))));
                }
                None => {
                    self.entries.remove(&update.key);
                    tree_writes.push((key_hash, None));
                }
            }
        }
        self.tree.apply(&sorted_writes(tree_writes));
    }

    /// Applies a write set [`Store::prepare`] hashed, if it was prepared
    /// against this very state and is the same write set; returns `false`
    /// (and changes nothing) otherwise.
    pub fn apply_prepared(&mut self, updates: &[StateUpdate], prepared: &PreparedWrites) -> bool {
        let matches = prepared.base_root == self.root()
            && prepared.writes.len() == updates.len()
            && updates
                .iter()
                .zip(&prepared.writes)
                .all(|(update, (key, shared))| {
                    update.key == *key
                        && match (&update.value, shared) {
                            (Some(value), Some(shared)) => value.len() == shared.len(),
                            (None, None) => true,
                            _ => false,
                        }
                });
        if !matches {
            return false;
        }
        for (key, value) in &prepared.writes {
            match value {
                Some(shared) => {
                    self.entries.insert(key.clone(), Arc::clone(shared));
                }
                None => {
                    self.entries.remove(key);
                }
            }
        }
        self.tree = prepared.tree.clone();
        true
    }

    /// The root hashed from every entry again (tests compare it with the
    /// incremental one).
    pub fn root_from_scratch(&self) -> Hash {
        let writes: Vec<TreeWrite> = self
            .entries
            .iter()
            .map(|(key, value)| {
                (
                    crate::state::key_hash(key),
                    Some(crate::state::value_digest(value)),
                )
            })
            .collect();
        StateTree::new().updated(&sorted_writes(writes)).root()
    }
}

pub fn prefix_bounds(prefix: &[u8]) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    (Bound::Included(prefix.to_vec()), prefix_end(prefix))
}

fn prefix_end(prefix: &[u8]) -> Bound<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Bound::Excluded(end);
        }
    }
    Bound::Unbounded
}

/// Merges committed entries with pending writes (which win; `None` hides
/// the key), both ordered in the same direction, keeping at most `limit`
/// live entries.
pub fn merge_scan<'b>(
    base: impl Iterator<Item = (&'b Vec<u8>, &'b [u8])>,
    over: impl Iterator<Item = (&'b Vec<u8>, &'b Option<Vec<u8>>)>,
    reverse: bool,
    limit: usize,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    let mut base = base.peekable();
    let mut over = over.peekable();
    while out.len() < limit {
        let take_base = match (base.peek(), over.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some((base_key, _)), Some((over_key, _))) => {
                if base_key == over_key {
                    base.next();
                    false
                } else {
                    (base_key < over_key) != reverse
                }
            }
        };
        if take_base {
            if let Some((key, value)) = base.next() {
                out.push((key.clone(), value.to_vec()));
            }
        } else if let Some((key, Some(value))) = over.next() {
            out.push((key.clone(), value.clone()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn put(key: &[u8], value: &[u8]) -> StateUpdate {
        StateUpdate {
            key: key.to_vec(),
            value: Some(value.to_vec()),
        }
    }

    fn writes(updates: &[StateUpdate]) -> BTreeMap<Vec<u8>, Option<Vec<u8>>> {
        updates
            .iter()
            .map(|update| (update.key.clone(), update.value.clone()))
            .collect()
    }

    #[test]
    fn root_depends_on_keys_and_values() {
        let mut a = Store::new();
        let empty = a.root();
        a.apply(&[put(b"k", b"v")]);
        let mut b = Store::new();
        b.apply(&[put(b"k", b"w")]);
        let mut c = Store::new();
        c.apply(&[put(b"j", b"v")]);
        assert_ne!(a.root(), empty);
        assert_ne!(a.root(), b.root());
        assert_ne!(a.root(), c.root());
        a.apply(&[StateUpdate {
            key: b"k".to_vec(),
            value: None,
        }]);
        assert_eq!(a.root(), empty);
    }

    #[test]
    fn prefix_end_handles_carries() {
        assert_eq!(prefix_end(b"ab"), Bound::Excluded(b"ac".to_vec()));
        assert_eq!(prefix_end(&[1, 0xff]), Bound::Excluded(vec![2]));
        assert_eq!(prefix_end(&[0xff, 0xff]), Bound::Unbounded);
    }

    #[test]
    fn merge_scan_lets_writes_win_in_both_directions() {
        let mut store = Store::new();
        store.apply(&[
            put(b"p/1", b"a"),
            put(b"p/3", b"c"),
            put(b"p/5", b"e"),
            put(b"q/1", b"x"),
        ]);
        let pending: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::from([
            (b"p/2".to_vec(), Some(b"b".to_vec())),
            (b"p/3".to_vec(), None),
            (b"p/5".to_vec(), Some(b"E".to_vec())),
            (b"q/0".to_vec(), Some(b"y".to_vec())),
        ]);
        let forward = merge_scan(
            store.prefix_range(b"p/"),
            pending.range::<Vec<u8>, _>(prefix_bounds(b"p/")),
            false,
            10,
        );
        let keys: Vec<(&[u8], &[u8])> = forward
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_slice()))
            .collect();
        assert_eq!(
            keys,
            vec![(&b"p/1"[..], &b"a"[..]), (b"p/2", b"b"), (b"p/5", b"E")]
        );
        let backward = merge_scan(
            store.prefix_range(b"p/").rev(),
            pending.range::<Vec<u8>, _>(prefix_bounds(b"p/")).rev(),
            true,
            2,
        );
        let keys: Vec<&[u8]> = backward.iter().map(|(k, _)| k.as_slice()).collect();
        assert_eq!(keys, vec![&b"p/5"[..], b"p/2"]);
    }

    proptest! {
        #[test]
        fn incremental_root_matches_scratch_and_preview(
            blocks in proptest::collection::vec(
                proptest::collection::vec((0u8..40, proptest::option::of(proptest::collection::vec(any::<u8>(), 0..8))), 0..12),
                1..6,
            ),
        ) {
            let mut store = Store::new();
            for block in blocks {
                let pending: BTreeMap<Vec<u8>, Option<Vec<u8>>> = block
                    .into_iter()
                    .map(|(key, value)| (vec![b'k', key], value))
                    .collect();
                let updates: Vec<StateUpdate> = pending
                    .iter()
                    .map(|(key, value)| StateUpdate { key: key.clone(), value: value.clone() })
                    .collect();
                let prepared = store.prepare(&writes(&updates));
                let mut hinted = store.clone();
                store.apply(&updates);
                prop_assert_eq!(store.root(), prepared.root);
                prop_assert_eq!(store.root(), store.root_from_scratch());
                // Applying what prepare worked out gives the same state.
                prop_assert!(hinted.apply_prepared(&updates, &prepared));
                prop_assert_eq!(hinted.root(), store.root());
                prop_assert_eq!(hinted.root_from_scratch(), store.root());
                prop_assert!(hinted.entries == store.entries);
                // Once applied, the same preparation no longer fits.
                prop_assert!(updates.is_empty() || prepared.root == prepared.base_root
                    || !hinted.clone().apply_prepared(&updates, &prepared));
            }
        }
    }
}
