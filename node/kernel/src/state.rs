//! Authenticated state: a compact sparse Merkle tree over key hashes, with
//! membership and non-membership proofs.
//!
//! Owns the tree's shape, its hashing rules, batch updates and proofs. It
//! does not know what a key means (every module's keys share one tree, kept
//! apart by their prefixes), nor where values are stored: a leaf commits to
//! a value's SHA-256 digest, and the caller keeps the values.
//!
//! **Shape.** A binary trie over 256-bit key hashes in which every subtree
//! holding exactly one entry is that entry's leaf (Diem's sparse Merkle
//! tree, the binary form of a Jellyfish tree): a leaf sits at the shortest
//! prefix of its key hash no other key shares, so with `n` random keys the
//! paths are about `log2(n)` long, not 256. The shape depends only on the
//! set of key hashes, so every replica computes the same root.
//!
//! ```text
//! key hash  = H("hm/state-key/v1",  key)
//! leaf      = H("hm/state-leaf/v1", key hash, SHA-256(value))
//! internal  = H("hm/state-node/v1", left, right)     (an empty side is EMPTY)
//! EMPTY     = 32 zero bytes: the root of the empty tree
//! ```
//!
//! **Updates.** The tree is persistent (children are shared `Arc`s): a
//! block's write set is applied in one pass that copies and re-hashes only
//! the nodes on the written paths, and the tree before the block stays
//! valid until it is dropped. Cloning a tree is one reference count.
//!
//! **Proofs.** A [`StateProof`] lists the sibling hashes from the root down
//! to where the key's path ends, and, when it ends at another key's leaf,
//! that leaf. [`StateProof::verify`] is a pure function of the root, the
//! key and the claimed value (or its absence).

use std::sync::Arc;

use hm_wire::Hash;
use serde::{Deserialize, Serialize};

/// Hash domains of the tree.
pub const STATE_KEY_DOMAIN: &str = "hm/state-key/v1";
pub const STATE_LEAF_DOMAIN: &str = "hm/state-leaf/v1";
pub const STATE_NODE_DOMAIN: &str = "hm/state-node/v1";

/// The root of an empty tree, and the hash standing for an empty side.
pub const EMPTY: Hash = Hash::ZERO;

/// Key hashes are 256 bits, so no path is longer.
pub const PROOF_SIBLINGS_MAX: usize = 256;

/// An encoded proof is never larger: 256 siblings and a leaf, with the
/// codec's length prefixes.
pub const PROOF_BYTES_MAX: usize = 16 + (PROOF_SIBLINGS_MAX + 2) * (Hash::LEN + 8);

/// The tree position of `key`.
pub fn key_hash(key: &[u8]) -> Hash {
    hm_wire::hash(STATE_KEY_DOMAIN, key)
}

/// What a leaf commits to for a value: its plain SHA-256 (the digest
/// `hm_env::intern` computes when a value is stored, so it is free there).
pub fn value_digest(value: &[u8]) -> Hash {
    Hash(hm_env::intern::digest(value))
}

fn leaf_hash(key_hash: &Hash, value_digest: &Hash) -> Hash {
    hm_wire::hash_parts(STATE_LEAF_DOMAIN, &[&key_hash.0, &value_digest.0])
}

fn internal_hash(left: &Hash, right: &Hash) -> Hash {
    hm_wire::hash_parts(STATE_NODE_DOMAIN, &[&left.0, &right.0])
}

/// Bit `depth` of a key hash, most significant bit first: 0 goes left.
fn bit(key_hash: &Hash, depth: usize) -> bool {
    debug_assert!(depth < 256);
    key_hash.0[depth / 8] & (0x80 >> (depth % 8)) != 0
}

/// Length of the common prefix of two key hashes, in bits.
fn common_prefix_bits(a: &Hash, b: &Hash) -> usize {
    for (index, (x, y)) in a.0.iter().zip(b.0.iter()).enumerate() {
        let differ = x ^ y;
        if differ != 0 {
            return index * 8 + differ.leading_zeros() as usize;
        }
    }
    256
}

#[derive(Debug)]
enum Node {
    Leaf {
        key_hash: Hash,
        value_digest: Hash,
        hash: Hash,
    },
    /// Has at least two entries below it (otherwise it would be a leaf or
    /// empty).
    Internal {
        left: Option<Arc<Node>>,
        right: Option<Arc<Node>>,
        hash: Hash,
    },
}

impl Node {
    fn hash(&self) -> Hash {
        match self {
            Node::Leaf { hash, .. } | Node::Internal { hash, .. } => *hash,
        }
    }

    fn leaf(key_hash: Hash, value_digest: Hash) -> Arc<Node> {
        Arc::new(Node::Leaf {
            key_hash,
            value_digest,
            hash: leaf_hash(&key_hash, &value_digest),
        })
    }

    /// Joins two subtrees, keeping the tree compact: a side that is empty
    /// next to a single leaf lifts the leaf.
    fn join(left: Option<Arc<Node>>, right: Option<Arc<Node>>) -> Option<Arc<Node>> {
        match (&left, &right) {
            (None, None) => None,
            (Some(only), None) | (None, Some(only)) if matches!(**only, Node::Leaf { .. }) => {
                Some(Arc::clone(only))
            }
            _ => {
                let hash = internal_hash(&hash_of(&left), &hash_of(&right));
                Some(Arc::new(Node::Internal { left, right, hash }))
            }
        }
    }
}

fn hash_of(node: &Option<Arc<Node>>) -> Hash {
    node.as_ref().map_or(EMPTY, |node| node.hash())
}

/// One write of a batch: a key hash and its new value digest (`None`
/// deletes).
pub type TreeWrite = (Hash, Option<Hash>);

/// Puts tree writes in the order [`StateTree::updated`] takes (by key hash;
/// a write set is keyed by key, so no key hash appears twice).
pub fn sorted_writes(mut writes: Vec<TreeWrite>) -> Vec<TreeWrite> {
    writes.sort_unstable_by_key(|(key_hash, _)| *key_hash);
    writes
}

/// The authenticated map from key hashes to value digests.
#[derive(Debug, Clone, Default)]
pub struct StateTree {
    root: Option<Arc<Node>>,
    len: usize,
}

impl StateTree {
    pub fn new() -> StateTree {
        StateTree::default()
    }

    /// The root hash ([`EMPTY`] for an empty tree).
    pub fn root(&self) -> Hash {
        hash_of(&self.root)
    }

    /// Entries in the tree.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The value digest stored for a key hash.
    pub fn get(&self, key_hash: &Hash) -> Option<Hash> {
        let mut node = self.root.as_ref();
        let mut depth = 0;
        while let Some(current) = node {
            match &**current {
                Node::Leaf {
                    key_hash: leaf_key,
                    value_digest,
                    ..
                } => return (leaf_key == key_hash).then_some(*value_digest),
                Node::Internal { left, right, .. } => {
                    node = if bit(key_hash, depth) { right } else { left }.as_ref();
                    depth += 1;
                }
            }
        }
        None
    }

    /// The tree after `writes`, leaving this one unchanged. `writes` must
    /// be sorted by key hash with no key hash twice (a block's write set is
    /// a map); deleting an absent key is a no-op.
    pub fn updated(&self, writes: &[TreeWrite]) -> StateTree {
        debug_assert!(
            writes.windows(2).all(|pair| pair[0].0 < pair[1].0),
            "writes must be sorted by key hash, each key hash once"
        );
        let mut len = self.len;
        let root = update(self.root.as_ref(), 0, writes, &mut len);
        StateTree { root, len }
    }

    /// Applies `writes` (as [`StateTree::updated`]) in place.
    pub fn apply(&mut self, writes: &[TreeWrite]) {
        *self = self.updated(writes);
    }

    /// A proof of what the tree holds for `key`: its value, or that it has
    /// none.
    pub fn prove(&self, key: &[u8]) -> StateProof {
        let key_hash = key_hash(key);
        let mut siblings = Vec::new();
        let mut node = self.root.as_ref();
        let mut depth = 0;
        while let Some(current) = node {
            match &**current {
                Node::Leaf {
                    key_hash,
                    value_digest,
                    ..
                } => {
                    return StateProof {
                        siblings,
                        leaf: Some(ProofLeaf {
                            key_hash: *key_hash,
                            value_digest: *value_digest,
                        }),
                    };
                }
                Node::Internal { left, right, .. } => {
                    let (next, other) = if bit(&key_hash, depth) {
                        (right, left)
                    } else {
                        (left, right)
                    };
                    siblings.push(hash_of(other));
                    node = next.as_ref();
                    depth += 1;
                }
            }
        }
        StateProof {
            siblings,
            leaf: None,
        }
    }
}

/// The subtree at `depth` after `writes`, all of whose key hashes share the
/// subtree's prefix. `len` is adjusted by the entries added and removed.
fn update(
    node: Option<&Arc<Node>>,
    depth: usize,
    writes: &[TreeWrite],
    len: &mut usize,
) -> Option<Arc<Node>> {
    if writes.is_empty() {
        return node.cloned();
    }
    match node.map(|node| &**node) {
        None => build(depth, writes, len),
        Some(Node::Leaf {
            key_hash,
            value_digest,
            ..
        }) => {
            // The leaf's entry joins the writes unless one of them replaces
            // or deletes it; the subtree is then built afresh.
            let overwritten = writes
                .binary_search_by(|(write_key, _)| write_key.cmp(key_hash))
                .is_ok();
            if overwritten {
                *len -= 1;
                build(depth, writes, len)
            } else {
                let position = writes.partition_point(|(write_key, _)| write_key < key_hash);
                let mut merged = Vec::with_capacity(writes.len() + 1);
                merged.extend_from_slice(&writes[..position]);
                merged.push((*key_hash, Some(*value_digest)));
                merged.extend_from_slice(&writes[position..]);
                *len -= 1;
                build(depth, &merged, len)
            }
        }
        Some(Node::Internal { left, right, .. }) => {
            let split = writes.partition_point(|(write_key, _)| !bit(write_key, depth));
            let (to_left, to_right) = writes.split_at(split);
            let left = update(left.as_ref(), depth + 1, to_left, len);
            let right = update(right.as_ref(), depth + 1, to_right, len);
            Node::join(left, right)
        }
    }
}

/// A subtree at `depth` holding the inserts among `writes` (deletes of
/// absent keys fall away).
fn build(depth: usize, writes: &[TreeWrite], len: &mut usize) -> Option<Arc<Node>> {
    let mut inserts = writes.iter().filter(|(_, value)| value.is_some());
    match (inserts.next(), inserts.next()) {
        (None, _) => None,
        (Some((key_hash, Some(value_digest))), None) => {
            *len += 1;
            Some(Node::leaf(*key_hash, *value_digest))
        }
        _ => {
            assert!(depth < 256, "two writes share a 256-bit key hash");
            let split = writes.partition_point(|(write_key, _)| !bit(write_key, depth));
            let (to_left, to_right) = writes.split_at(split);
            let left = build(depth + 1, to_left, len);
            let right = build(depth + 1, to_right, len);
            Node::join(left, right)
        }
    }
}

/// The leaf a proof's path ends at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProofLeaf {
    pub key_hash: Hash,
    pub value_digest: Hash,
}

/// What a tree holds for one key, provable against its root: the sibling
/// hashes from the root down, and the leaf the key's path ends at (`None`:
/// it ends at an empty side). At `n` random keys it is about `log2(n)`
/// hashes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateProof {
    pub siblings: Vec<Hash>,
    pub leaf: Option<ProofLeaf>,
}

/// Why a proof does not show what it was asked to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("the proof has {count} siblings, more than a 256-bit key hash allows")]
    TooLong { count: usize },
    #[error(
        "the proof is not canonical: {0}; a correct full node never sends this, so ask another"
    )]
    NotCanonical(&'static str),
    #[error(
        "the proof's path ends at another key's leaf that does not share the first {depth} bits of this key's hash"
    )]
    LeafOffPath { depth: usize },
    #[error("the proof shows the key holds a different value than the answer claims")]
    ValueMismatch,
    #[error("the proof shows the key is absent, but the answer claims a value")]
    ClaimsAbsentKey,
    #[error("the proof shows the key holds a value, but the answer claims it is absent")]
    HidesPresentKey,
    #[error(
        "the proof leads to root {computed}, not the trusted root {trusted}: the answer is forged or from another height"
    )]
    WrongRoot { computed: Hash, trusted: Hash },
    #[error("the proof names {count} modules, more than the limit of {STATE_MODULES_MAX}")]
    TooManyModules { count: usize },
    #[error("the proof is for module {proved}, but module {asked} was asked about")]
    OtherModule { asked: u8, proved: u8 },
    #[error("the proof names {modules} module roots, so module {module} has none")]
    NoSuchModule { module: u8, modules: usize },
    #[error("the proof does not decode: {0}")]
    Malformed(String),
}

impl StateProof {
    /// Checks that the tree with `root` holds `value` for `key` (`None`:
    /// holds nothing for it). Pure; costs one SHA-256 per sibling.
    pub fn verify(&self, root: &Hash, key: &[u8], value: Option<&[u8]>) -> Result<(), ProofError> {
        let key_hash = key_hash(key);
        let claimed = value.map(value_digest);
        self.verify_digest(root, &key_hash, claimed.as_ref())
    }

    /// [`StateProof::verify`] for a key hash and a value digest.
    pub fn verify_digest(
        &self,
        root: &Hash,
        key_hash: &Hash,
        claimed: Option<&Hash>,
    ) -> Result<(), ProofError> {
        let depth = self.siblings.len();
        if depth > PROOF_SIBLINGS_MAX {
            return Err(ProofError::TooLong { count: depth });
        }
        let start = match (&self.leaf, claimed) {
            (Some(leaf), Some(claimed)) if leaf.key_hash == *key_hash => {
                if leaf.value_digest != *claimed {
                    return Err(ProofError::ValueMismatch);
                }
                leaf_hash(&leaf.key_hash, &leaf.value_digest)
            }
            (Some(leaf), None) if leaf.key_hash == *key_hash => {
                return Err(ProofError::HidesPresentKey);
            }
            (Some(leaf), claimed) => {
                // Another key's leaf where this key's path ends: this key
                // is absent, provided the path really leads there.
                if claimed.is_some() {
                    return Err(ProofError::ClaimsAbsentKey);
                }
                if common_prefix_bits(&leaf.key_hash, key_hash) < depth {
                    return Err(ProofError::LeafOffPath { depth });
                }
                leaf_hash(&leaf.key_hash, &leaf.value_digest)
            }
            (None, Some(_)) => return Err(ProofError::ClaimsAbsentKey),
            (None, None) => EMPTY,
        };
        // In a compact tree a leaf never has an empty sibling (it would sit
        // one level up), and an empty side's sibling is never empty (the
        // parent would not exist): such proofs are rejected so each
        // statement has exactly one proof.
        if self.siblings.last() == Some(&EMPTY) {
            return Err(ProofError::NotCanonical("the deepest sibling is empty"));
        }
        let mut hash = start;
        for (level, sibling) in self.siblings.iter().enumerate().rev() {
            hash = if bit(key_hash, level) {
                internal_hash(sibling, &hash)
            } else {
                internal_hash(&hash, sibling)
            };
        }
        if hash != *root {
            return Err(ProofError::WrongRoot {
                computed: hash,
                trusted: *root,
            });
        }
        Ok(())
    }

    pub fn encode(&self) -> Vec<u8> {
        hm_wire::encode(self)
    }

    /// Decodes a proof from untrusted bytes (bounded, canonical).
    pub fn decode(bytes: &[u8]) -> Result<StateProof, ProofError> {
        let proof: StateProof = hm_wire::decode(bytes, PROOF_BYTES_MAX)
            .map_err(|error| ProofError::Malformed(error.to_string()))?;
        if proof.siblings.len() > PROOF_SIBLINGS_MAX {
            return Err(ProofError::TooLong {
                count: proof.siblings.len(),
            });
        }
        Ok(proof)
    }
}

/// The application's state root over its modules' roots (Cosmos's
/// multistore: each module keeps its own tree; the block commits to this).
pub const STATE_MODULES_DOMAIN: &str = "hm/state-modules/v1";

/// Most modules an application composes (module ids are `0..` this).
pub const STATE_MODULES_MAX: usize = 16;

/// An encoded [`ModuleProof`] is never larger.
pub const MODULE_PROOF_BYTES_MAX: usize =
    PROOF_BYTES_MAX + 16 + STATE_MODULES_MAX * (Hash::LEN + 8);

/// The state root of an application whose module `i` has root
/// `module_roots[i]`.
pub fn modules_root(module_roots: &[Hash]) -> Hash {
    debug_assert!(module_roots.len() <= STATE_MODULES_MAX);
    let parts: Vec<&[u8]> = module_roots.iter().map(|root| &root.0[..]).collect();
    hm_wire::hash_parts(STATE_MODULES_DOMAIN, &parts)
}

/// What an application's state holds for one key of one module, provable
/// against the block's state root: the module's proof and every module's
/// root (a few hashes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleProof {
    pub module: u8,
    pub module_roots: Vec<Hash>,
    pub proof: StateProof,
}

impl ModuleProof {
    /// Checks that the application state with `root` holds `value` for
    /// `key` in `module` (`None`: holds nothing for it).
    pub fn verify(
        &self,
        root: &Hash,
        module: u8,
        key: &[u8],
        value: Option<&[u8]>,
    ) -> Result<(), ProofError> {
        if self.module_roots.len() > STATE_MODULES_MAX {
            return Err(ProofError::TooManyModules {
                count: self.module_roots.len(),
            });
        }
        if self.module != module {
            return Err(ProofError::OtherModule {
                asked: module,
                proved: self.module,
            });
        }
        let Some(module_root) = self.module_roots.get(usize::from(module)) else {
            return Err(ProofError::NoSuchModule {
                module,
                modules: self.module_roots.len(),
            });
        };
        self.proof.verify(module_root, key, value)?;
        let computed = modules_root(&self.module_roots);
        if computed != *root {
            return Err(ProofError::WrongRoot {
                computed,
                trusted: *root,
            });
        }
        Ok(())
    }

    pub fn encode(&self) -> Vec<u8> {
        hm_wire::encode(self)
    }

    /// Decodes a proof from untrusted bytes (bounded, canonical).
    pub fn decode(bytes: &[u8]) -> Result<ModuleProof, ProofError> {
        let proof: ModuleProof = hm_wire::decode(bytes, MODULE_PROOF_BYTES_MAX)
            .map_err(|error| ProofError::Malformed(error.to_string()))?;
        if proof.module_roots.len() > STATE_MODULES_MAX {
            return Err(ProofError::TooManyModules {
                count: proof.module_roots.len(),
            });
        }
        if proof.proof.siblings.len() > PROOF_SIBLINGS_MAX {
            return Err(ProofError::TooLong {
                count: proof.proof.siblings.len(),
            });
        }
        Ok(proof)
    }
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
