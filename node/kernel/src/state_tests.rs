use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

/// Sorted tree writes for `(key, value)` pairs (`None` deletes).
fn writes(pairs: &[(&[u8], Option<&[u8]>)]) -> Vec<TreeWrite> {
    let map: BTreeMap<Hash, Option<Hash>> = pairs
        .iter()
        .map(|(key, value)| (key_hash(key), value.map(value_digest)))
        .collect();
    map.into_iter().collect()
}

/// The root computed from scratch by the definition: the compact trie over
/// the entries' key hashes, built recursively from the whole map.
fn reference_root(entries: &BTreeMap<Vec<u8>, Vec<u8>>) -> Hash {
    fn subtree(leaves: &[(Hash, Hash)], depth: usize) -> Hash {
        match leaves {
            [] => EMPTY,
            [(key_hash, digest)] => leaf_hash(key_hash, digest),
            _ => {
                let split = leaves.partition_point(|(key_hash, _)| !bit(key_hash, depth));
                internal_hash(
                    &subtree(&leaves[..split], depth + 1),
                    &subtree(&leaves[split..], depth + 1),
                )
            }
        }
    }
    let mut leaves: Vec<(Hash, Hash)> = entries
        .iter()
        .map(|(key, value)| (key_hash(key), value_digest(value)))
        .collect();
    leaves.sort();
    subtree(&leaves, 0)
}

fn tree_of(entries: &BTreeMap<Vec<u8>, Vec<u8>>) -> StateTree {
    let pairs: Vec<(&[u8], Option<&[u8]>)> = entries
        .iter()
        .map(|(key, value)| (key.as_slice(), Some(value.as_slice())))
        .collect();
    StateTree::new().updated(&writes(&pairs))
}

#[test]
fn the_empty_tree_has_the_empty_root_and_proves_absence() {
    let tree = StateTree::new();
    assert_eq!(tree.root(), EMPTY);
    assert!(tree.is_empty());
    let proof = tree.prove(b"k");
    assert_eq!(proof.verify(&EMPTY, b"k", None), Ok(()));
    assert_eq!(
        proof.verify(&EMPTY, b"k", Some(b"v")),
        Err(ProofError::ClaimsAbsentKey)
    );
}

#[test]
fn a_single_entry_is_the_root_leaf() {
    let tree = StateTree::new().updated(&writes(&[(b"k", Some(b"v"))]));
    assert_eq!(tree.root(), leaf_hash(&key_hash(b"k"), &value_digest(b"v")));
    assert_eq!(tree.len(), 1);
    assert_eq!(tree.get(&key_hash(b"k")), Some(value_digest(b"v")));
    let proof = tree.prove(b"k");
    assert!(proof.siblings.is_empty());
    assert_eq!(proof.verify(&tree.root(), b"k", Some(b"v")), Ok(()));
    // Another key's path ends at the same leaf: absent.
    assert_eq!(
        tree.prove(b"other").verify(&tree.root(), b"other", None),
        Ok(())
    );
}

#[test]
fn deleting_every_entry_returns_to_the_empty_root_and_collapses_leaves() {
    let mut tree = StateTree::new();
    tree.apply(&writes(&[
        (b"a", Some(b"1")),
        (b"b", Some(b"2")),
        (b"c", Some(b"3")),
    ]));
    tree.apply(&writes(&[(b"a", None), (b"b", None)]));
    // One entry left: the root is its leaf again, not an internal node
    // over empty sides.
    assert_eq!(tree.root(), leaf_hash(&key_hash(b"c"), &value_digest(b"3")));
    assert_eq!(tree.len(), 1);
    tree.apply(&writes(&[(b"c", None), (b"never-there", None)]));
    assert_eq!(tree.root(), EMPTY);
    assert_eq!(tree.len(), 0);
}

#[test]
fn updated_leaves_the_old_tree_intact() {
    let old = StateTree::new().updated(&writes(&[(b"a", Some(b"1")), (b"b", Some(b"2"))]));
    let old_root = old.root();
    let new = old.updated(&writes(&[(b"a", Some(b"changed")), (b"c", Some(b"3"))]));
    assert_eq!(old.root(), old_root);
    assert_eq!(old.get(&key_hash(b"a")), Some(value_digest(b"1")));
    assert_ne!(new.root(), old_root);
    assert_eq!(new.len(), 3);
    assert_eq!(old.prove(b"a").verify(&old_root, b"a", Some(b"1")), Ok(()));
    assert_eq!(
        new.prove(b"a").verify(&new.root(), b"a", Some(b"changed")),
        Ok(())
    );
}

#[test]
fn a_proof_for_one_root_does_not_verify_against_another() {
    let old = StateTree::new().updated(&writes(&[(b"a", Some(b"1")), (b"b", Some(b"2"))]));
    let new = old.updated(&writes(&[(b"b", Some(b"3"))]));
    let stale = old.prove(b"b");
    assert!(matches!(
        stale.verify(&new.root(), b"b", Some(b"2")),
        Err(ProofError::WrongRoot { .. })
    ));
}

#[test]
fn answers_that_contradict_the_proof_are_named() {
    let tree = StateTree::new().updated(&writes(&[(b"a", Some(b"1")), (b"b", Some(b"2"))]));
    let root = tree.root();
    assert_eq!(
        tree.prove(b"a").verify(&root, b"a", Some(b"2")),
        Err(ProofError::ValueMismatch)
    );
    assert_eq!(
        tree.prove(b"a").verify(&root, b"a", None),
        Err(ProofError::HidesPresentKey)
    );
    // A's proof presented as B's absence: the leaf is not on B's path.
    let a_proof = tree.prove(b"a");
    let b_path_depth = a_proof.siblings.len();
    assert!(b_path_depth >= 1);
    assert!(matches!(
        a_proof.verify(&root, b"b", None),
        Err(ProofError::LeafOffPath { .. } | ProofError::WrongRoot { .. })
    ));
}

#[test]
fn a_padded_proof_is_not_canonical() {
    let tree = StateTree::new().updated(&writes(&[(b"a", Some(b"1")), (b"b", Some(b"2"))]));
    let mut proof = tree.prove(b"a");
    proof.siblings.push(EMPTY);
    assert!(matches!(
        proof.verify(&tree.root(), b"a", Some(b"1")),
        Err(ProofError::NotCanonical(_))
    ));
}

#[test]
fn decoding_is_bounded() {
    let oversized = StateProof {
        siblings: vec![Hash([1; 32]); PROOF_SIBLINGS_MAX + 1],
        leaf: None,
    };
    assert!(StateProof::decode(&oversized.encode()).is_err());
    assert!(matches!(
        oversized.verify(&EMPTY, b"k", None),
        Err(ProofError::TooLong { .. })
    ));
    assert!(matches!(
        StateProof::decode(&[0xff; 40]),
        Err(ProofError::Malformed(_))
    ));
    let tree = StateTree::new().updated(&writes(&[(b"a", Some(b"1")), (b"b", Some(b"2"))]));
    let proof = tree.prove(b"a");
    assert_eq!(StateProof::decode(&proof.encode()), Ok(proof));
}

#[test]
fn a_module_proof_binds_the_key_to_its_module_and_the_application_root() {
    let kv = StateTree::new().updated(&writes(&[(b"k", Some(b"v")), (b"j", Some(b"w"))]));
    let trust = StateTree::new().updated(&writes(&[(b"k", Some(b"other"))]));
    let roots = vec![kv.root(), trust.root()];
    let root = modules_root(&roots);
    let proof = ModuleProof {
        module: 0,
        module_roots: roots.clone(),
        proof: kv.prove(b"k"),
    };
    assert_eq!(proof.verify(&root, 0, b"k", Some(b"v")), Ok(()));
    assert_eq!(ModuleProof::decode(&proof.encode()), Ok(proof.clone()));
    // The same key in another module is another statement.
    assert_eq!(
        proof.verify(&root, 1, b"k", Some(b"v")),
        Err(ProofError::OtherModule {
            asked: 1,
            proved: 0
        })
    );
    let mut relabelled = proof.clone();
    relabelled.module = 1;
    assert!(relabelled.verify(&root, 1, b"k", Some(b"v")).is_err());
    // A swapped module root, or a root of another height, is refused.
    let mut swapped = proof.clone();
    swapped.module_roots.reverse();
    assert!(swapped.verify(&root, 0, b"k", Some(b"v")).is_err());
    let mut forged_other = proof.clone();
    forged_other.module_roots[1] = Hash([9; 32]);
    assert!(matches!(
        forged_other.verify(&root, 0, b"k", Some(b"v")),
        Err(ProofError::WrongRoot { .. })
    ));
    let mut short = proof;
    short.module_roots.truncate(0);
    assert_eq!(
        short.verify(&root, 0, b"k", Some(b"v")),
        Err(ProofError::NoSuchModule {
            module: 0,
            modules: 0
        })
    );
}

/// A map of up to 60 small keys to values.
fn entries() -> impl Strategy<Value = BTreeMap<Vec<u8>, Vec<u8>>> {
    proptest::collection::btree_map(
        proptest::collection::vec(any::<u8>(), 0..6),
        proptest::collection::vec(any::<u8>(), 0..8),
        0..60,
    )
}

/// A write set: puts and deletes over a small key space, so it hits
/// existing keys.
fn write_set() -> impl Strategy<Value = BTreeMap<Vec<u8>, Option<Vec<u8>>>> {
    proptest::collection::btree_map(
        proptest::collection::vec(any::<u8>(), 0..6),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..8)),
        0..30,
    )
}

fn tree_writes(set: &BTreeMap<Vec<u8>, Option<Vec<u8>>>) -> Vec<TreeWrite> {
    let map: BTreeMap<Hash, Option<Hash>> = set
        .iter()
        .map(|(key, value)| (key_hash(key), value.as_deref().map(value_digest)))
        .collect();
    map.into_iter().collect()
}

proptest! {
    /// Incremental updates reach the root the definition gives for the
    /// resulting map, whatever the history.
    #[test]
    fn incremental_updates_match_the_definition(
        base in entries(),
        batches in proptest::collection::vec(write_set(), 1..5),
    ) {
        let mut tree = tree_of(&base);
        let mut model = base;
        prop_assert_eq!(tree.root(), reference_root(&model));
        for batch in &batches {
            tree.apply(&tree_writes(batch));
            for (key, value) in batch {
                match value {
                    Some(value) => model.insert(key.clone(), value.clone()),
                    None => model.remove(key),
                };
            }
            prop_assert_eq!(tree.root(), reference_root(&model));
            prop_assert_eq!(tree.len(), model.len());
        }
    }

    /// Every present key proves its value, every absent key proves its
    /// absence, and neither proves the opposite.
    #[test]
    fn proofs_show_exactly_what_the_tree_holds(
        map in entries(),
        probes in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..6), 1..20),
    ) {
        let tree = tree_of(&map);
        let root = tree.root();
        for key in map.keys().chain(probes.iter()) {
            let proof = tree.prove(key);
            match map.get(key) {
                Some(value) => {
                    prop_assert_eq!(proof.verify(&root, key, Some(value)), Ok(()));
                    prop_assert!(proof.verify(&root, key, None).is_err());
                    let mut other = value.clone();
                    other.push(0);
                    prop_assert!(proof.verify(&root, key, Some(&other)).is_err());
                }
                None => {
                    prop_assert_eq!(proof.verify(&root, key, None), Ok(()));
                    prop_assert!(proof.verify(&root, key, Some(b"x")).is_err());
                }
            }
            let decoded = StateProof::decode(&proof.encode());
            prop_assert_eq!(decoded, Ok(proof));
        }
    }

    /// Changing any byte of a proof's encoding, or the root, makes it fail
    /// (or not decode).
    #[test]
    fn tampered_proofs_and_wrong_roots_are_rejected(
        map in entries(),
        key in proptest::collection::vec(any::<u8>(), 0..6),
        position in any::<prop::sample::Index>(),
        flip in 1u8..=255,
        root_flip in 0usize..32,
    ) {
        let tree = tree_of(&map);
        let root = tree.root();
        let value = map.get(&key).map(Vec::as_slice);
        let proof = tree.prove(&key);
        let mut wrong_root = root;
        wrong_root.0[root_flip] ^= 1;
        prop_assert!(proof.verify(&wrong_root, &key, value).is_err());
        let mut bytes = proof.encode();
        let at = position.index(bytes.len());
        bytes[at] ^= flip;
        if let Ok(tampered) = StateProof::decode(&bytes) {
            prop_assert!(tampered.verify(&root, &key, value).is_err());
        }
    }
}
