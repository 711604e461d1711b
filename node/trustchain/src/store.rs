//! The committed key-value state and its incremental root.
//!
//! **Root.** Every key falls into one of [`BUCKETS`] buckets by the first
//! byte of its domain-separated hash. A bucket's root is the hash of its
//! entries' hashes, ordered by key hash; the state root is the hash of the
//! 256 bucket roots. Entry hashes are cached, and a write set re-hashes
//! only the buckets it touches: per block the cost is the block's writes
//! plus, for each touched bucket, one pass over that bucket's cached
//! entry hashes (32 bytes each, streamed through SHA-256), i.e. roughly
//! `writes × n / 256 × 40` bytes hashed. Never the whole state.
//!
//! ```text
//! entry  = H("hm/trustchain/state-entry/v2",  key, SHA-256(value))
//! bucket = H("hm/trustchain/state-bucket/v1", [i], entry…)   (entries by key hash)
//! root   = H("hm/trustchain/state-root/v1",   bucket_0 … bucket_255)
//! ```

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use hm_kernel::block::StateUpdate;
use hm_wire::Hash;

/// Number of buckets the state root is split into (one per value of the
/// key hash's first byte). 256 roots of 32 bytes: 8 KiB per node.
pub(crate) const BUCKETS: usize = 256;

const STATE_KEY_DOMAIN: &str = "hm/trustchain/state-key/v1";
const STATE_ENTRY_DOMAIN: &str = "hm/trustchain/state-entry/v2";
const STATE_BUCKET_DOMAIN: &str = "hm/trustchain/state-bucket/v1";
const STATE_ROOT_DOMAIN: &str = "hm/trustchain/state-root/v1";

fn key_hash(key: &[u8]) -> Hash {
    hm_wire::hash(STATE_KEY_DOMAIN, key)
}

/// An entry's hash commits to the value through its plain SHA-256: the
/// digest [`hm_env::intern`] computes anyway when the committed value is
/// stored, so committing a write set reads each value once, not twice.
#[cfg(test)]
fn entry_hash(key: &[u8], value: &[u8]) -> Hash {
    entry_hash_of_digest(key, &hm_env::intern::digest(value))
}

fn entry_hash_of_digest(key: &[u8], value_digest: &[u8; 32]) -> Hash {
    hm_wire::hash_parts(STATE_ENTRY_DOMAIN, &[key, value_digest])
}

fn bucket_of(key_hash: &Hash) -> usize {
    usize::from(key_hash.0[0])
}

/// Root of bucket `index` over its entry hashes in key-hash order.
fn bucket_root<'a>(index: usize, entries: impl Iterator<Item = &'a Hash>) -> Hash {
    let tag = [index as u8];
    let mut parts: Vec<&[u8]> = vec![&tag];
    parts.extend(entries.map(|hash| &hash.0[..]));
    hm_wire::hash_parts(STATE_BUCKET_DOMAIN, &parts)
}

fn state_root(bucket_roots: impl Iterator<Item = Hash>) -> Hash {
    let roots: Vec<Hash> = bucket_roots.collect();
    debug_assert_eq!(roots.len(), BUCKETS);
    let parts: Vec<&[u8]> = roots.iter().map(|root| &root.0[..]).collect();
    hm_wire::hash_parts(STATE_ROOT_DOMAIN, &parts)
}

/// One write of a [`PreparedWrites`].
#[derive(Debug)]
struct PreparedWrite {
    key: Vec<u8>,
    key_hash: Hash,
    /// The shared value and its entry hash; `None` deletes.
    value: Option<(Arc<[u8]>, Hash)>,
}

/// A write set hashed against the state it was executed on
/// ([`Store::prepare`]).
#[derive(Debug)]
pub(crate) struct PreparedWrites {
    /// Root of the state the writes were hashed against.
    base_root: Hash,
    /// In key order, as the write set.
    writes: Vec<PreparedWrite>,
    /// New root of every bucket the writes touch.
    bucket_roots: Vec<(usize, Hash)>,
    /// The state root after the writes.
    pub(crate) root: Hash,
}

#[derive(Debug, Clone)]
struct Bucket {
    /// Key hash → entry hash.
    entries: BTreeMap<Hash, Hash>,
    root: Hash,
}

/// A write set grouped by bucket: key hash → new entry hash (`None`:
/// deleted).
type BucketChanges = BTreeMap<usize, BTreeMap<Hash, Option<Hash>>>;

/// The committed state: ordered entries (for reads and prefix scans) and
/// the bucketed hashes behind the root.
#[derive(Debug, Clone)]
pub(crate) struct Store {
    /// Values are shared allocations (`hm_env::intern`): a simulator's
    /// thousand nodes hold one copy of each certificate, not a thousand.
    entries: BTreeMap<Vec<u8>, Arc<[u8]>>,
    buckets: Vec<Bucket>,
    root: Hash,
}

impl Default for Store {
    fn default() -> Self {
        Store::new()
    }
}

impl Store {
    pub(crate) fn new() -> Store {
        let buckets: Vec<Bucket> = (0..BUCKETS)
            .map(|index| Bucket {
                entries: BTreeMap::new(),
                root: bucket_root(index, std::iter::empty()),
            })
            .collect();
        let root = state_root(buckets.iter().map(|bucket| bucket.root));
        Store {
            entries: BTreeMap::new(),
            buckets,
            root,
        }
    }

    pub(crate) fn root(&self) -> Hash {
        self.root
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.entries.get(key).map(|value| &**value)
    }

    pub(crate) fn prefix_range<'a>(
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
    pub(crate) fn prepare(&self, writes: &BTreeMap<Vec<u8>, Option<Vec<u8>>>) -> PreparedWrites {
        let prepared: Vec<PreparedWrite> = writes
            .iter()
            .map(|(key, value)| PreparedWrite {
                key: key.clone(),
                key_hash: key_hash(key),
                value: value.as_deref().map(|value| {
                    let (shared, digest) = hm_env::intern::intern_with_digest(value);
                    (shared, entry_hash_of_digest(key, &digest))
                }),
            })
            .collect();
        let changes = group(prepared.iter().map(|write| {
            (
                write.key_hash,
                write.value.as_ref().map(|(_, entry)| *entry),
            )
        }));
        let mut roots: Vec<Hash> = self.buckets.iter().map(|bucket| bucket.root).collect();
        let mut bucket_roots = Vec::with_capacity(changes.len());
        for (index, bucket_changes) in &changes {
            let root = merged_root(*index, &self.buckets[*index].entries, bucket_changes);
            roots[*index] = root;
            bucket_roots.push((*index, root));
        }
        PreparedWrites {
            base_root: self.root,
            writes: prepared,
            bucket_roots,
            root: state_root(roots.into_iter()),
        }
    }

    /// Applies a write set and re-hashes the buckets it touched.
    pub(crate) fn apply(&mut self, updates: &[StateUpdate]) {
        let changes = group(updates.iter().map(|update| {
            let entry = match &update.value {
                Some(value) => {
                    let (shared, digest) = hm_env::intern::intern_with_digest(value);
                    self.entries.insert(update.key.clone(), shared);
                    Some(entry_hash_of_digest(&update.key, &digest))
                }
                None => {
                    self.entries.remove(&update.key);
                    None
                }
            };
            (key_hash(&update.key), entry)
        }));
        for (index, bucket_changes) in changes {
            let bucket = &mut self.buckets[index];
            for (key_hash, entry) in bucket_changes {
                match entry {
                    Some(entry) => bucket.entries.insert(key_hash, entry),
                    None => bucket.entries.remove(&key_hash),
                };
            }
            bucket.root = bucket_root(index, bucket.entries.values());
        }
        self.root = state_root(self.buckets.iter().map(|bucket| bucket.root));
    }

    /// Applies `updates` using what [`Store::prepare`] computed for them,
    /// hashing nothing. Returns `false`, changing nothing, when `prepared`
    /// was not made for these updates on this state (the caller then uses
    /// [`Store::apply`]).
    pub(crate) fn apply_prepared(
        &mut self,
        updates: &[StateUpdate],
        prepared: &PreparedWrites,
    ) -> bool {
        let matches = prepared.base_root == self.root
            && prepared.writes.len() == updates.len()
            && updates.iter().zip(&prepared.writes).all(|(update, write)| {
                update.key == write.key
                    && match (&update.value, &write.value) {
                        (Some(value), Some((shared, _))) => value.len() == shared.len(),
                        (None, None) => true,
                        _ => false,
                    }
            });
        if !matches {
            return false;
        }
        for write in &prepared.writes {
            let bucket = &mut self.buckets[bucket_of(&write.key_hash)];
            match &write.value {
                Some((shared, entry)) => {
                    self.entries.insert(write.key.clone(), Arc::clone(shared));
                    bucket.entries.insert(write.key_hash, *entry);
                }
                None => {
                    self.entries.remove(&write.key);
                    bucket.entries.remove(&write.key_hash);
                }
            }
        }
        for (index, root) in &prepared.bucket_roots {
            self.buckets[*index].root = *root;
        }
        self.root = prepared.root;
        true
    }

    /// The root recomputed from the entries alone, hashing everything: the
    /// reference the incremental root is tested against.
    #[cfg(test)]
    pub(crate) fn root_from_scratch(&self) -> Hash {
        let mut buckets: Vec<BTreeMap<Hash, Hash>> = vec![BTreeMap::new(); BUCKETS];
        for (key, value) in &self.entries {
            let hash = key_hash(key);
            buckets[bucket_of(&hash)].insert(hash, entry_hash(key, value));
        }
        state_root(
            buckets
                .iter()
                .enumerate()
                .map(|(index, entries)| bucket_root(index, entries.values())),
        )
    }
}

/// Groups writes — (key hash, new entry hash, or `None` for a delete) — by
/// bucket.
fn group(writes: impl Iterator<Item = (Hash, Option<Hash>)>) -> BucketChanges {
    let mut changes = BucketChanges::new();
    for (hash, entry) in writes {
        changes
            .entry(bucket_of(&hash))
            .or_default()
            .insert(hash, entry);
    }
    changes
}

/// Root of bucket `index` with `changes` merged over `committed`.
fn merged_root(
    index: usize,
    committed: &BTreeMap<Hash, Hash>,
    changes: &BTreeMap<Hash, Option<Hash>>,
) -> Hash {
    let mut merged: Vec<&Hash> = Vec::with_capacity(committed.len() + changes.len());
    let mut base = committed.iter().peekable();
    let mut over = changes.iter().peekable();
    loop {
        match (base.peek(), over.peek()) {
            (None, None) => break,
            (Some((_, entry)), None) => {
                merged.push(entry);
                base.next();
            }
            (None, Some((_, change))) => {
                if let Some(entry) = change {
                    merged.push(entry);
                }
                over.next();
            }
            (Some((base_key, entry)), Some((over_key, change))) => {
                if base_key < over_key {
                    merged.push(entry);
                    base.next();
                } else {
                    if base_key == over_key {
                        base.next();
                    }
                    if let Some(entry) = change {
                        merged.push(entry);
                    }
                    over.next();
                }
            }
        }
    }
    bucket_root(index, merged.into_iter())
}

/// Bounds of every key starting with `prefix`.
pub(crate) fn prefix_bounds(prefix: &[u8]) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
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
pub(crate) fn merge_scan<'b>(
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
