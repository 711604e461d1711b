//! Merkle trees exactly as RFC 9162 §2.1 (= RFC 6962 §2.1) defines them, so
//! proofs interoperate with Certificate Transparency tooling:
//!
//! * empty tree: `SHA-256("")`
//! * leaf: `SHA-256(0x00 || leaf)`
//! * node: `SHA-256(0x01 || left || right)`
//! * a tree of `n > 1` leaves splits at `k`, the largest power of two `< n`.
//!
//! No domain tag is added here (that would break the RFC); our own
//! domain-separated hashes start with `0xFF` and so never collide with these
//! inputs (see [`crate::hash`](mod@crate::hash)).
//!
//! Proof generation works over any source of subtree hashes: a slice of leaf
//! hashes (O(n) per proof) or a [`MerkleLog`], which keeps every complete
//! subtree and answers in O(log² n). Verification follows the RFC 9162
//! algorithms (§2.1.3.2 and §2.1.4.2) step for step, with every loop bounded
//! by the 64 bits of the tree size.

use crate::hash::sha256_raw;
use crate::{Hash, WireError};

/// Longest proof any tree of up to `2^64 - 1` leaves needs: an inclusion
/// proof has at most 64 hashes, a consistency proof at most 2 per level.
pub const PROOF_HASHES_MAX: usize = 128;

/// Most leaves a [`MerkleLog`] holds in memory: it keeps ~2 hashes (64 B)
/// per leaf, so this is 1 GiB. A bigger log must page its tree through Disk.
pub const MERKLE_LOG_LEAVES_MAX: u64 = 1 << 24;

const LEAF_PREFIX: u8 = 0x00;
const NODE_PREFIX: u8 = 0x01;

/// `SHA-256(0x00 || leaf)`.
pub fn leaf_hash(leaf: &[u8]) -> Hash {
    sha256_raw(&[&[LEAF_PREFIX], leaf])
}

/// `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    sha256_raw(&[&[NODE_PREFIX], &left.0, &right.0])
}

/// Root of the empty tree, `SHA-256("")`.
pub fn empty_root() -> Hash {
    sha256_raw(&[])
}

/// Root of the tree over `leaves` (raw leaf data, hashed here).
pub fn root(leaves: &[&[u8]]) -> Hash {
    root_from_leaf_hashes(&leaf_hashes(leaves))
}

/// Root of the tree whose leaves have these leaf hashes.
pub fn root_from_leaf_hashes(leaf_hashes: &[Hash]) -> Hash {
    if leaf_hashes.is_empty() {
        return empty_root();
    }
    Slice(leaf_hashes).range_hash(0, leaf_hashes.len() as u64)
}

/// Audit path (RFC 9162 `PATH`) for leaf `index` in the tree over all of
/// `leaves`, ordered from the leaf's sibling up to the root's child.
pub fn inclusion_proof(leaves: &[&[u8]], index: u64) -> Result<Vec<Hash>, WireError> {
    inclusion_proof_from_leaf_hashes(&leaf_hashes(leaves), index)
}

/// [`inclusion_proof`] over precomputed leaf hashes.
pub fn inclusion_proof_from_leaf_hashes(
    leaf_hashes: &[Hash],
    index: u64,
) -> Result<Vec<Hash>, WireError> {
    let tree_size = leaf_hashes.len() as u64;
    check_index(index, tree_size)?;
    let mut proof = Vec::new();
    path(&Slice(leaf_hashes), index, 0, tree_size, &mut proof);
    Ok(proof)
}

/// Consistency proof (RFC 9162 `PROOF`) that the tree over the first
/// `old_size` leaves is a prefix of the tree over the first `new_size`.
/// Needs `0 < old_size <= new_size <= leaves.len()`; equal sizes give an
/// empty proof.
pub fn consistency_proof(
    leaves: &[&[u8]],
    old_size: u64,
    new_size: u64,
) -> Result<Vec<Hash>, WireError> {
    consistency_proof_from_leaf_hashes(&leaf_hashes(leaves), old_size, new_size)
}

/// [`consistency_proof`] over precomputed leaf hashes.
pub fn consistency_proof_from_leaf_hashes(
    leaf_hashes: &[Hash],
    old_size: u64,
    new_size: u64,
) -> Result<Vec<Hash>, WireError> {
    check_sizes(old_size, new_size, leaf_hashes.len() as u64)?;
    let mut proof = Vec::new();
    if old_size < new_size {
        subproof(&Slice(leaf_hashes), old_size, 0, new_size, true, &mut proof);
    }
    Ok(proof)
}

/// Checks that `proof` proves the leaf with hash `leaf_hash` sits at
/// `index` in the tree of `tree_size` leaves whose root is `root`
/// (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(
    leaf_hash: &Hash,
    index: u64,
    tree_size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), WireError> {
    if index >= tree_size {
        return Err(WireError::ProofInvalid(format!(
            "leaf index {index} is not inside a tree of {tree_size} leaves"
        )));
    }
    check_proof_len(proof)?;
    let mut f_n = index;
    let mut s_n = tree_size - 1;
    let mut r = *leaf_hash;
    for p in proof {
        if s_n == 0 {
            return Err(WireError::ProofInvalid(format!(
                "proof has {} hashes, more than the path in a tree of {tree_size} leaves",
                proof.len()
            )));
        }
        if f_n & 1 == 1 || f_n == s_n {
            r = node_hash(p, &r);
            if f_n & 1 == 0 {
                // Skip levels where the node has no right sibling; at most
                // 64 shifts.
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    if s_n != 0 {
        return Err(WireError::ProofInvalid(format!(
            "proof has {} hashes, fewer than the path in a tree of {tree_size} leaves",
            proof.len()
        )));
    }
    if r != *root {
        return Err(WireError::ProofInvalid(format!(
            "inclusion proof leads to root {r}, not the expected {root}"
        )));
    }
    Ok(())
}

/// Checks that the tree of `old_size` leaves with root `old_root` is a
/// prefix of the tree of `new_size` leaves with root `new_root`
/// (RFC 9162 §2.1.4.2). `old_size == 0` is refused: every tree extends the
/// empty one, so such a proof proves nothing.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), WireError> {
    if old_size > new_size {
        return Err(WireError::ProofInvalid(format!(
            "old tree size {old_size} is larger than new tree size {new_size}"
        )));
    }
    if old_size == 0 {
        return Err(WireError::ProofInvalid(
            "consistency with the empty tree proves nothing; check the old size".into(),
        ));
    }
    check_proof_len(proof)?;
    if old_size == new_size {
        if !proof.is_empty() {
            return Err(WireError::ProofInvalid(format!(
                "sizes are equal ({old_size}) so the proof must be empty, it has {} hashes",
                proof.len()
            )));
        }
        if old_root != new_root {
            return Err(WireError::ProofInvalid(format!(
                "trees of equal size {old_size} have different roots {old_root} and {new_root}"
            )));
        }
        return Ok(());
    }
    let (seed, rest) = if old_size.is_power_of_two() {
        // The old tree is a complete subtree; the RFC prepends its root.
        (*old_root, proof)
    } else {
        match proof.split_first() {
            Some((first, rest)) => (*first, rest),
            None => {
                return Err(WireError::ProofInvalid(format!(
                    "empty consistency proof between sizes {old_size} and {new_size}"
                )));
            }
        }
    };
    let mut f_n = old_size - 1;
    let mut s_n = new_size - 1;
    while f_n & 1 == 1 {
        f_n >>= 1;
        s_n >>= 1;
    }
    let mut f_r = seed;
    let mut s_r = seed;
    for c in rest {
        if s_n == 0 {
            return Err(WireError::ProofInvalid(format!(
                "consistency proof has {} hashes, more than sizes {old_size} and {new_size} need",
                proof.len()
            )));
        }
        if f_n & 1 == 1 || f_n == s_n {
            f_r = node_hash(c, &f_r);
            s_r = node_hash(c, &s_r);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            s_r = node_hash(&s_r, c);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    if s_n != 0 {
        return Err(WireError::ProofInvalid(format!(
            "consistency proof has {} hashes, fewer than sizes {old_size} and {new_size} need",
            proof.len()
        )));
    }
    if f_r != *old_root {
        return Err(WireError::ProofInvalid(format!(
            "consistency proof leads to old root {f_r}, not the expected {old_root}"
        )));
    }
    if s_r != *new_root {
        return Err(WireError::ProofInvalid(format!(
            "consistency proof leads to new root {s_r}, not the expected {new_root}"
        )));
    }
    Ok(())
}

/// An append-only Merkle log kept in memory: leaf hashes plus the hash of
/// every complete (power-of-two, aligned) subtree, so roots and proofs for
/// any earlier size cost O(log² n) hashes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MerkleLog {
    /// `levels[h][i]` is the root of the complete subtree over leaves
    /// `[i * 2^h, (i + 1) * 2^h)`; `levels[0]` are the leaf hashes.
    levels: Vec<Vec<Hash>>,
}

impl MerkleLog {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of leaves.
    pub fn len(&self) -> u64 {
        self.levels.first().map_or(0, |leaves| leaves.len() as u64)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends raw leaf data; returns its index.
    pub fn append(&mut self, leaf: &[u8]) -> Result<u64, WireError> {
        self.append_leaf_hash(leaf_hash(leaf))
    }

    /// Appends a precomputed leaf hash; returns its index.
    pub fn append_leaf_hash(&mut self, hash: Hash) -> Result<u64, WireError> {
        let index = self.len();
        if index >= MERKLE_LOG_LEAVES_MAX {
            return Err(WireError::TooLarge {
                what: "in-memory Merkle log (leaves)",
                len: usize::try_from(index).unwrap_or(usize::MAX),
                max: usize::try_from(MERKLE_LOG_LEAVES_MAX).unwrap_or(usize::MAX),
            });
        }
        let mut level = 0;
        let mut node = hash;
        loop {
            if self.levels.len() == level {
                self.levels.push(Vec::new());
            }
            self.levels[level].push(node);
            let count = self.levels[level].len();
            // A level completes a parent whenever it holds an even count.
            if !count.is_multiple_of(2) {
                break;
            }
            node = node_hash(
                &self.levels[level][count - 2],
                &self.levels[level][count - 1],
            );
            level += 1;
        }
        debug_assert!(self.levels.len() <= 65);
        Ok(index)
    }

    /// Hash of leaf `index`, if present.
    pub fn leaf_hash(&self, index: u64) -> Option<Hash> {
        let index = usize::try_from(index).ok()?;
        self.levels.first()?.get(index).copied()
    }

    /// Root of the current tree.
    pub fn root(&self) -> Hash {
        self.root_at(self.len()).unwrap_or_else(|_| empty_root())
    }

    /// Root of the tree as it was when it had `tree_size` leaves.
    pub fn root_at(&self, tree_size: u64) -> Result<Hash, WireError> {
        if tree_size > self.len() {
            return Err(WireError::ProofInvalid(format!(
                "tree size {tree_size} is beyond the log's {} leaves",
                self.len()
            )));
        }
        if tree_size == 0 {
            return Ok(empty_root());
        }
        Ok(self.range_hash(0, tree_size))
    }

    /// Inclusion proof for leaf `index` in the tree of `tree_size` leaves.
    pub fn inclusion_proof(&self, index: u64, tree_size: u64) -> Result<Vec<Hash>, WireError> {
        if tree_size > self.len() {
            return Err(WireError::ProofInvalid(format!(
                "tree size {tree_size} is beyond the log's {} leaves",
                self.len()
            )));
        }
        check_index(index, tree_size)?;
        let mut proof = Vec::new();
        path(self, index, 0, tree_size, &mut proof);
        Ok(proof)
    }

    /// Consistency proof between two sizes of this log.
    pub fn consistency_proof(&self, old_size: u64, new_size: u64) -> Result<Vec<Hash>, WireError> {
        check_sizes(old_size, new_size, self.len())?;
        let mut proof = Vec::new();
        if old_size < new_size {
            subproof(self, old_size, 0, new_size, true, &mut proof);
        }
        Ok(proof)
    }
}

/// Something that can produce `MTH(D[lo..hi])` for the node ranges the RFC
/// recursion visits (`lo` is always aligned to the largest power of two
/// `<= hi - lo`).
trait Subtrees {
    fn range_hash(&self, lo: u64, hi: u64) -> Hash;
}

struct Slice<'a>(&'a [Hash]);

impl Subtrees for Slice<'_> {
    fn range_hash(&self, lo: u64, hi: u64) -> Hash {
        assert!(
            lo < hi && hi <= self.0.len() as u64,
            "range outside the leaves"
        );
        let n = hi - lo;
        if n == 1 {
            return self.0[lo as usize];
        }
        let k = split(n);
        node_hash(&self.range_hash(lo, lo + k), &self.range_hash(lo + k, hi))
    }
}

impl Subtrees for MerkleLog {
    fn range_hash(&self, lo: u64, hi: u64) -> Hash {
        assert!(lo < hi && hi <= self.len(), "range outside the log");
        let n = hi - lo;
        if n.is_power_of_two() && lo.is_multiple_of(n) {
            let level = n.trailing_zeros() as usize;
            return self.levels[level][(lo >> level) as usize];
        }
        let k = split(n);
        node_hash(&self.range_hash(lo, lo + k), &self.range_hash(lo + k, hi))
    }
}

/// Largest power of two strictly smaller than `n` (`n >= 2`).
fn split(n: u64) -> u64 {
    assert!(n >= 2, "only trees of two or more leaves split");
    1 << (63 - (n - 1).leading_zeros())
}

/// RFC 9162 `PATH(m, D[lo..hi])`, appended to `out` leaf-side first.
fn path<S: Subtrees>(tree: &S, m: u64, lo: u64, hi: u64, out: &mut Vec<Hash>) {
    let n = hi - lo;
    if n <= 1 {
        return;
    }
    let k = split(n);
    if m - lo < k {
        path(tree, m, lo, lo + k, out);
        out.push(tree.range_hash(lo + k, hi));
    } else {
        path(tree, m, lo + k, hi, out);
        out.push(tree.range_hash(lo, lo + k));
    }
}

/// RFC 9162 `SUBPROOF(m, D[lo..hi], b)`, where `m` counts leaves from `lo`.
fn subproof<S: Subtrees>(tree: &S, m: u64, lo: u64, hi: u64, complete: bool, out: &mut Vec<Hash>) {
    let n = hi - lo;
    if m == n {
        if !complete {
            out.push(tree.range_hash(lo, hi));
        }
        return;
    }
    let k = split(n);
    if m <= k {
        subproof(tree, m, lo, lo + k, complete, out);
        out.push(tree.range_hash(lo + k, hi));
    } else {
        subproof(tree, m - k, lo + k, hi, false, out);
        out.push(tree.range_hash(lo, lo + k));
    }
}

fn leaf_hashes(leaves: &[&[u8]]) -> Vec<Hash> {
    leaves.iter().map(|leaf| leaf_hash(leaf)).collect()
}

fn check_index(index: u64, tree_size: u64) -> Result<(), WireError> {
    if index >= tree_size {
        return Err(WireError::ProofInvalid(format!(
            "leaf index {index} is not inside a tree of {tree_size} leaves"
        )));
    }
    Ok(())
}

fn check_sizes(old_size: u64, new_size: u64, available: u64) -> Result<(), WireError> {
    if old_size == 0 || old_size > new_size || new_size > available {
        return Err(WireError::ProofInvalid(format!(
            "consistency needs 0 < old size <= new size <= {available} leaves, got {old_size} and {new_size}"
        )));
    }
    Ok(())
}

fn check_proof_len(proof: &[Hash]) -> Result<(), WireError> {
    if proof.len() > PROOF_HASHES_MAX {
        return Err(WireError::ProofInvalid(format!(
            "proof has {} hashes; no tree needs more than {PROOF_HASHES_MAX}",
            proof.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn leaves_of(count: usize) -> Vec<Vec<u8>> {
        (0..count)
            .map(|i| format!("leaf {i}").into_bytes())
            .collect()
    }

    fn refs(leaves: &[Vec<u8>]) -> Vec<&[u8]> {
        leaves.iter().map(Vec::as_slice).collect()
    }

    /// Expected inclusion proof length (transparency-dev's decomposition).
    fn inclusion_len(index: u64, size: u64) -> usize {
        let inner = 64 - (index ^ (size - 1)).leading_zeros();
        inner as usize + (index >> inner).count_ones() as usize
    }

    #[test]
    fn empty_and_single() {
        assert_eq!(root(&[]), sha256_raw(&[]));
        assert_eq!(root(&[b"x"]), leaf_hash(b"x"));
        assert!(inclusion_proof(&[], 0).is_err());
        assert_eq!(inclusion_proof(&[b"x"], 0), Ok(vec![]));
        assert!(consistency_proof(&[b"x"], 0, 1).is_err());
        assert!(consistency_proof(&[b"x"], 1, 2).is_err());
    }

    #[test]
    fn proofs_longer_than_any_tree_are_refused() {
        let long = vec![Hash::ZERO; PROOF_HASHES_MAX + 1];
        assert!(verify_inclusion(&Hash::ZERO, 0, u64::MAX, &long, &Hash::ZERO).is_err());
        assert!(verify_consistency(1, u64::MAX, &Hash::ZERO, &Hash::ZERO, &long).is_err());
    }

    #[test]
    fn log_refuses_sizes_beyond_its_leaves() {
        let mut log = MerkleLog::new();
        log.append(b"a").expect("room");
        assert!(log.root_at(2).is_err());
        assert!(log.inclusion_proof(0, 2).is_err());
        assert!(log.consistency_proof(1, 2).is_err());
        assert_eq!(log.leaf_hash(0), Some(leaf_hash(b"a")));
        assert_eq!(log.leaf_hash(1), None);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn every_inclusion_proof_verifies_and_tampering_fails(
            count in 1usize..70,
            pick in any::<prop::sample::Index>(),
            flip in any::<(prop::sample::Index, u8)>(),
        ) {
            let data = leaves_of(count);
            let leaves = refs(&data);
            let size = count as u64;
            let tree_root = root(&leaves);
            let index = pick.index(count) as u64;
            let leaf = leaf_hash(leaves[index as usize]);
            let proof = inclusion_proof(&leaves, index).expect("index inside");
            prop_assert_eq!(proof.len(), inclusion_len(index, size));
            prop_assert_eq!(verify_inclusion(&leaf, index, size, &proof, &tree_root), Ok(()));

            // A flipped bit anywhere in the proof.
            if !proof.is_empty() {
                let mut bad = proof.clone();
                let at = flip.0.index(bad.len());
                bad[at].0[usize::from(flip.1 % 32)] ^= 1 << (flip.1 % 8);
                prop_assert!(verify_inclusion(&leaf, index, size, &bad, &tree_root).is_err());
            }
            // A flipped bit in the leaf or the root.
            let mut bad_leaf = leaf;
            bad_leaf.0[0] ^= 1;
            prop_assert!(verify_inclusion(&bad_leaf, index, size, &proof, &tree_root).is_err());
            let mut bad_root = tree_root;
            bad_root.0[31] ^= 0x80;
            prop_assert!(verify_inclusion(&leaf, index, size, &proof, &bad_root).is_err());
            // Every other index fails.
            for other in 0..size {
                if other != index {
                    prop_assert!(verify_inclusion(&leaf, other, size, &proof, &tree_root).is_err());
                }
            }
            // Index at or past the size fails.
            prop_assert!(verify_inclusion(&leaf, size, size, &proof, &tree_root).is_err());
            // A wrong size fails whenever it implies a path of another length
            // (sizes whose path has the same shape cannot be told apart by
            // the path alone; the root binds the size).
            for other in 1..=(2 * size + 1) {
                if other != size && index < other && inclusion_len(index, other) != proof.len() {
                    prop_assert!(verify_inclusion(&leaf, index, other, &proof, &tree_root).is_err());
                }
            }
            prop_assert!(verify_inclusion(&leaf, index, size * 2, &proof, &tree_root).is_err());
        }

        #[test]
        fn every_consistency_proof_verifies_and_tampering_fails(
            count in 1usize..70,
            pick in any::<prop::sample::Index>(),
            flip in any::<(prop::sample::Index, u8)>(),
        ) {
            let data = leaves_of(count);
            let leaves = refs(&data);
            let new_size = count as u64;
            let old_size = pick.index(count) as u64 + 1;
            let old_root = root(&leaves[..old_size as usize]);
            let new_root = root(&leaves);
            let proof = consistency_proof(&leaves, old_size, new_size).expect("sizes valid");
            prop_assert_eq!(verify_consistency(old_size, new_size, &old_root, &new_root, &proof), Ok(()));

            if !proof.is_empty() {
                let mut bad = proof.clone();
                let at = flip.0.index(bad.len());
                bad[at].0[usize::from(flip.1 % 32)] ^= 1 << (flip.1 % 8);
                prop_assert!(verify_consistency(old_size, new_size, &old_root, &new_root, &bad).is_err());
                // Dropping or adding a hash fails.
                prop_assert!(verify_consistency(old_size, new_size, &old_root, &new_root, &proof[1..]).is_err());
                let mut longer = proof.clone();
                longer.push(new_root);
                prop_assert!(verify_consistency(old_size, new_size, &old_root, &new_root, &longer).is_err());
            }
            let mut bad_old = old_root;
            bad_old.0[5] ^= 4;
            prop_assert!(verify_consistency(old_size, new_size, &bad_old, &new_root, &proof).is_err());
            let mut bad_new = new_root;
            bad_new.0[7] ^= 2;
            prop_assert!(verify_consistency(old_size, new_size, &old_root, &bad_new, &proof).is_err());
            // Claiming another old size (with that size's true root) fails.
            for other in 1..=new_size {
                if other != old_size {
                    let other_root = root(&leaves[..other as usize]);
                    prop_assert!(verify_consistency(other, new_size, &other_root, &new_root, &proof).is_err());
                }
            }
        }

        #[test]
        fn log_agrees_with_slices(count in 1usize..80) {
            let data = leaves_of(count);
            let leaves = refs(&data);
            let mut log = MerkleLog::new();
            for (i, leaf) in leaves.iter().enumerate() {
                prop_assert_eq!(log.append(leaf), Ok(i as u64));
            }
            prop_assert_eq!(log.len(), count as u64);
            prop_assert_eq!(log.root(), root(&leaves));
            for size in 1..=count {
                let prefix = &leaves[..size];
                prop_assert_eq!(log.root_at(size as u64), Ok(root(prefix)));
                for index in 0..size {
                    prop_assert_eq!(
                        log.inclusion_proof(index as u64, size as u64),
                        inclusion_proof(prefix, index as u64)
                    );
                }
                prop_assert_eq!(
                    log.consistency_proof(size as u64, count as u64),
                    consistency_proof(&leaves, size as u64, count as u64)
                );
            }
        }

        #[test]
        fn random_proofs_never_panic(
            leaf in any::<[u8; 32]>(),
            root_bytes in any::<[u8; 32]>(),
            index in any::<u64>(),
            size in any::<u64>(),
            old_size in any::<u64>(),
            proof in proptest::collection::vec(any::<[u8; 32]>(), 0..80),
        ) {
            let proof: Vec<Hash> = proof.into_iter().map(Hash).collect();
            let _ = verify_inclusion(&Hash(leaf), index, size, &proof, &Hash(root_bytes));
            let _ = verify_consistency(old_size, size, &Hash(leaf), &Hash(root_bytes), &proof);
            let _ = verify_inclusion(&Hash(leaf), index % size.max(1), size, &proof, &Hash(root_bytes));
        }
    }
}
