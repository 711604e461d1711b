//! The certificate-transparency log (RFC 9162 Merkle tree over encoded
//! certificates), its proofs, signed tree heads and the per-node witness
//! that refuses a log that rewrites its history.
//!
//! The chain commits the log's head in every block header
//! (`Execution::log_head`), which with the block's commit certificate
//! anchors every entry in consensus. Before a node verifies consensus
//! (phase 1) it learns heads from [`SignedTreeHead`]s, an authority's
//! signed statement "the log had this head" — which is evidence against
//! the authority if the statement is false.

use std::collections::BTreeMap;

use hm_env::Entropy;
use hm_wire::{Hash, Signature, SigningKey, WireError, merkle};
use serde::{Deserialize, Serialize};

pub use hm_kernel::block::LogHead;

use crate::cert::{Authorities, Certificate, TREE_HEAD_SIGN_DOMAIN};

/// Most hashes in an inclusion proof: one per level of a tree of up to
/// `2^64` leaves.
pub const PROOF_HASHES_MAX: usize = 64;

/// Most hashes in a consistency proof: up to two per level (RFC 9162
/// §2.1.4; the same bound hm-wire's verifier enforces).
pub const CONSISTENCY_PROOF_HASHES_MAX: usize = merkle::PROOF_HASHES_MAX;

/// Heads a [`HeadWitness`] remembers besides the latest: enough to answer
/// "is this old head one I saw?" for recent heads without a proof, bounded
/// so a peer sending endless heads cannot grow memory.
pub const WITNESS_HEADS_MAX: usize = 64;

/// Largest encoded proof or signed head (a consistency proof of 128 hashes
/// and two heads is ≈ 4.2 KB).
pub const LOG_MESSAGE_BYTES_MAX: usize = 8 << 10;

/// What was wrong with a proof, a head or the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogError {
    #[error("log message does not decode: {0}")]
    Decode(#[from] WireError),
    #[error("the proof has {len} hashes, more than the {max} any tree needs")]
    ProofTooLong { len: usize, max: usize },
    #[error(
        "the inclusion proof is for a tree of {proof_size} entries but the head has {head_size}"
    )]
    SizeMismatch { proof_size: u64, head_size: u64 },
    #[error(
        "the inclusion proof for entry {index} in a tree of {tree_size} does not verify: {reason}"
    )]
    InclusionInvalid {
        index: u64,
        tree_size: u64,
        reason: String,
    },
    #[error(
        "the consistency proof from size {old_size} to size {new_size} does not verify: {reason}"
    )]
    ConsistencyInvalid {
        old_size: u64,
        new_size: u64,
        reason: String,
    },
    #[error(
        "log heads of size {size} disagree: accepted root {accepted}, now offered root {offered}; the log forked"
    )]
    Inconsistent {
        size: u64,
        accepted: Hash,
        offered: Hash,
    },
    #[error(
        "a head of size {offered_size} needs a consistency proof with the accepted head of size {accepted_size}; none was given"
    )]
    ProofRequired {
        offered_size: u64,
        accepted_size: u64,
    },
    #[error(
        "the consistency proof is between sizes {proof_old}..{proof_new}, but sizes {want_old}..{want_new} (with their roots) need proving"
    )]
    ProofForOtherHeads {
        proof_old: u64,
        proof_new: u64,
        want_old: u64,
        want_new: u64,
    },
    #[error("the log has {log_size} entries; size {size} is beyond it")]
    BeyondLog { size: u64, log_size: u64 },
    #[error("the log is full at {size} entries")]
    Full { size: u64 },
    #[error("tree head signer {signer} is not one of the authorities")]
    UnknownSigner { signer: Hash },
    #[error("the tree head signature of {signer} does not verify")]
    BadSignature { signer: Hash },
}

/// An authority's signed statement that the log had `head`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedTreeHead {
    pub head: LogHead,
    /// Node id of the signing authority.
    pub signer: Hash,
    /// Over `encode(head)` under [`TREE_HEAD_SIGN_DOMAIN`].
    pub signature: Signature,
}

impl SignedTreeHead {
    pub fn sign<E: Entropy + ?Sized>(
        head: LogHead,
        key: &SigningKey,
        entropy: &E,
    ) -> SignedTreeHead {
        SignedTreeHead {
            head,
            signer: key.verifying_key().fingerprint(),
            signature: key.sign(TREE_HEAD_SIGN_DOMAIN, &hm_wire::encode(&head), entropy),
        }
    }

    /// The signer is an authority and the signature is theirs.
    pub fn verify(&self, authorities: &Authorities) -> Result<(), LogError> {
        let key = authorities
            .get(&self.signer)
            .ok_or(LogError::UnknownSigner {
                signer: self.signer,
            })?;
        key.verify(
            TREE_HEAD_SIGN_DOMAIN,
            &hm_wire::encode(&self.head),
            &self.signature,
        )
        .map_err(|_| LogError::BadSignature {
            signer: self.signer,
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        hm_wire::encode(self)
    }

    pub fn decode(bytes: &[u8]) -> Result<SignedTreeHead, LogError> {
        Ok(hm_wire::decode(bytes, LOG_MESSAGE_BYTES_MAX)?)
    }
}

/// Proof that a certificate is entry `leaf_index` of the log of
/// `tree_size` entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InclusionProof {
    pub leaf_index: u64,
    pub tree_size: u64,
    /// RFC 9162 audit path, leaf side first.
    pub path: Vec<Hash>,
}

impl InclusionProof {
    /// Checks that `certificate` is in the log whose head is `head`.
    pub fn verify(&self, certificate: &Certificate, head: &LogHead) -> Result<(), LogError> {
        self.check_limits()?;
        if self.tree_size != head.size {
            return Err(LogError::SizeMismatch {
                proof_size: self.tree_size,
                head_size: head.size,
            });
        }
        merkle::verify_inclusion(
            &certificate.fingerprint(),
            self.leaf_index,
            self.tree_size,
            &self.path,
            &head.root,
        )
        .map_err(|error| LogError::InclusionInvalid {
            index: self.leaf_index,
            tree_size: self.tree_size,
            reason: error.to_string(),
        })
    }

    fn check_limits(&self) -> Result<(), LogError> {
        if self.path.len() > PROOF_HASHES_MAX {
            return Err(LogError::ProofTooLong {
                len: self.path.len(),
                max: PROOF_HASHES_MAX,
            });
        }
        Ok(())
    }

    pub fn encode(&self) -> Vec<u8> {
        hm_wire::encode(self)
    }

    pub fn decode(bytes: &[u8]) -> Result<InclusionProof, LogError> {
        let proof: InclusionProof = hm_wire::decode(bytes, LOG_MESSAGE_BYTES_MAX)?;
        proof.check_limits()?;
        Ok(proof)
    }
}

/// Proof that the log at `old` is a prefix of the log at `new`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsistencyProof {
    pub old: LogHead,
    pub new: LogHead,
    /// RFC 9162 consistency proof.
    pub path: Vec<Hash>,
}

impl ConsistencyProof {
    /// Checks the proof. Every log extends the empty one, so an `old` of
    /// size 0 needs the empty root and an empty path, nothing more.
    pub fn verify(&self) -> Result<(), LogError> {
        self.check_limits()?;
        let invalid = |reason: String| LogError::ConsistencyInvalid {
            old_size: self.old.size,
            new_size: self.new.size,
            reason,
        };
        if self.old.size == 0 {
            if self.old.root != merkle::empty_root() || !self.path.is_empty() {
                return Err(invalid(
                    "the empty log has the empty root and needs no proof hashes".into(),
                ));
            }
            return Ok(());
        }
        merkle::verify_consistency(
            self.old.size,
            self.new.size,
            &self.old.root,
            &self.new.root,
            &self.path,
        )
        .map_err(|error| invalid(error.to_string()))
    }

    fn check_limits(&self) -> Result<(), LogError> {
        if self.path.len() > CONSISTENCY_PROOF_HASHES_MAX {
            return Err(LogError::ProofTooLong {
                len: self.path.len(),
                max: CONSISTENCY_PROOF_HASHES_MAX,
            });
        }
        Ok(())
    }

    pub fn encode(&self) -> Vec<u8> {
        hm_wire::encode(self)
    }

    pub fn decode(bytes: &[u8]) -> Result<ConsistencyProof, LogError> {
        let proof: ConsistencyProof = hm_wire::decode(bytes, LOG_MESSAGE_BYTES_MAX)?;
        proof.check_limits()?;
        Ok(proof)
    }
}

/// The right edge of an RFC 9162 tree: the roots of its maximal complete
/// subtrees, largest (leftmost) first. Enough to append and to compute the
/// root in O(log n), and small enough (≤ 64 hashes) to copy, which is how
/// block execution appends to the log without touching the committed one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Frontier {
    size: u64,
    /// `(height, root)` of each complete subtree; heights strictly decrease.
    nodes: Vec<(u32, Hash)>,
}

impl Frontier {
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    pub(crate) fn push(&mut self, leaf_hash: Hash) {
        let mut node = (0u32, leaf_hash);
        while let Some(&(height, left)) = self.nodes.last() {
            if height != node.0 {
                break;
            }
            self.nodes.pop();
            node = (height + 1, merkle::node_hash(&left, &node.1));
        }
        self.nodes.push(node);
        self.size += 1;
        debug_assert_eq!(self.nodes.len(), self.size.count_ones() as usize);
    }

    /// RFC 9162 root: the subtrees folded right to left.
    pub(crate) fn root(&self) -> Hash {
        let mut nodes = self.nodes.iter().rev();
        let Some(&(_, mut root)) = nodes.next() else {
            return merkle::empty_root();
        };
        for (_, left) in nodes {
            root = merkle::node_hash(left, &root);
        }
        root
    }

    pub(crate) fn head(&self) -> LogHead {
        LogHead {
            size: self.size,
            root: self.root(),
        }
    }
}

/// The log of certificates: leaf hashes and every complete subtree (via
/// [`merkle::MerkleLog`]), so heads and proofs for any size cost
/// O(log² n). It holds hashes only; the certificates live in the
/// application state.
#[derive(Debug, Clone, Default)]
pub struct CertificateLog {
    tree: merkle::MerkleLog,
    frontier: Frontier,
}

impl CertificateLog {
    pub fn new() -> CertificateLog {
        CertificateLog::default()
    }

    /// Appends `certificate`; returns its index. Refused only when the
    /// in-memory log is full ([`merkle::MERKLE_LOG_LEAVES_MAX`]).
    pub fn append(&mut self, certificate: &Certificate) -> Result<u64, LogError> {
        self.append_leaf_hash(certificate.fingerprint())
    }

    /// Appends an entry by its leaf hash (the certificate's fingerprint).
    pub fn append_leaf_hash(&mut self, leaf_hash: Hash) -> Result<u64, LogError> {
        let index = self
            .tree
            .append_leaf_hash(leaf_hash)
            .map_err(|_| LogError::Full { size: self.len() })?;
        self.frontier.push(leaf_hash);
        debug_assert_eq!(self.frontier.size(), self.tree.len());
        Ok(index)
    }

    pub fn len(&self) -> u64 {
        self.tree.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }

    /// Whether one more entry fits.
    pub fn has_room(&self) -> bool {
        self.len() < merkle::MERKLE_LOG_LEAVES_MAX
    }

    pub fn head(&self) -> LogHead {
        self.frontier.head()
    }

    /// The head the log had at `size` entries.
    pub fn head_at(&self, size: u64) -> Result<LogHead, LogError> {
        let root = self.tree.root_at(size).map_err(|_| LogError::BeyondLog {
            size,
            log_size: self.len(),
        })?;
        Ok(LogHead { size, root })
    }

    /// Fingerprint of entry `index`.
    pub fn leaf_hash(&self, index: u64) -> Option<Hash> {
        self.tree.leaf_hash(index)
    }

    /// Proof that entry `index` is in the log of `tree_size` entries.
    pub fn inclusion_proof(&self, index: u64, tree_size: u64) -> Result<InclusionProof, LogError> {
        if tree_size > self.len() {
            return Err(LogError::BeyondLog {
                size: tree_size,
                log_size: self.len(),
            });
        }
        let path = self
            .tree
            .inclusion_proof(index, tree_size)
            .map_err(|error| LogError::InclusionInvalid {
                index,
                tree_size,
                reason: error.to_string(),
            })?;
        Ok(InclusionProof {
            leaf_index: index,
            tree_size,
            path,
        })
    }

    /// Proof that the log at `old_size` is a prefix of the log at
    /// `new_size` (`old_size <= new_size <= len`; an `old_size` of 0 gives
    /// the trivial proof from the empty log).
    pub fn consistency_proof(
        &self,
        old_size: u64,
        new_size: u64,
    ) -> Result<ConsistencyProof, LogError> {
        let old = self.head_at(old_size)?;
        let new = self.head_at(new_size)?;
        if old_size > new_size {
            return Err(LogError::ConsistencyInvalid {
                old_size,
                new_size,
                reason: "the old size is larger than the new size".into(),
            });
        }
        let path = if old_size == 0 {
            Vec::new()
        } else {
            self.tree
                .consistency_proof(old_size, new_size)
                .map_err(|error| LogError::ConsistencyInvalid {
                    old_size,
                    new_size,
                    reason: error.to_string(),
                })?
        };
        Ok(ConsistencyProof { old, new, path })
    }

    pub(crate) fn frontier(&self) -> &Frontier {
        &self.frontier
    }
}

/// Counters of a [`HeadWitness`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WitnessStats {
    /// Heads offered to `observe`.
    pub heads_seen: u64,
    /// Heads accepted.
    pub heads_accepted: u64,
    /// Heads proven to contradict an accepted one (a forked log).
    pub inconsistencies: u64,
    /// Heads refused for a missing, mismatched or invalid proof (not
    /// proof of a fork: the proof may just be bad).
    pub unproven: u64,
}

/// What a node keeps of the log's history: the latest accepted head and a
/// bounded set of recent ones. A new head is accepted only if it is
/// provably consistent with what was accepted, so a log that shows
/// different histories to different nodes is caught.
#[derive(Debug, Clone)]
pub struct HeadWitness {
    latest: LogHead,
    /// Size → root of recently accepted heads (at most
    /// [`WITNESS_HEADS_MAX`]; the smallest sizes are forgotten first).
    recent: BTreeMap<u64, Hash>,
    stats: WitnessStats,
}

impl Default for HeadWitness {
    fn default() -> Self {
        HeadWitness::new()
    }
}

impl HeadWitness {
    /// A witness that has seen only the empty log (which every log extends).
    pub fn new() -> HeadWitness {
        HeadWitness::starting_at(LogHead::empty())
    }

    /// A witness that trusts `head` (e.g. from a block whose commit
    /// certificate the caller verified).
    pub fn starting_at(head: LogHead) -> HeadWitness {
        HeadWitness {
            latest: head,
            recent: BTreeMap::new(),
            stats: WitnessStats::default(),
        }
    }

    pub fn latest(&self) -> LogHead {
        self.latest
    }

    pub fn stats(&self) -> WitnessStats {
        self.stats
    }

    /// Offers `head`, with a consistency proof where one is needed:
    ///
    /// * same size as the latest: the roots must be equal;
    /// * smaller: it must equal a remembered head of that size, or `proof`
    ///   must prove it a prefix of the latest;
    /// * larger: `proof` must prove the latest a prefix of it (from the
    ///   empty log no proof is needed); it becomes the latest.
    pub fn observe(
        &mut self,
        head: LogHead,
        proof: Option<&ConsistencyProof>,
    ) -> Result<(), LogError> {
        self.stats.heads_seen += 1;
        let result = self.check(head, proof);
        match &result {
            Ok(()) => {
                self.stats.heads_accepted += 1;
                if head.size > self.latest.size {
                    let previous = self.latest;
                    self.remember(previous);
                    self.latest = head;
                } else {
                    self.remember(head);
                }
            }
            Err(LogError::Inconsistent { .. }) => self.stats.inconsistencies += 1,
            Err(_) => self.stats.unproven += 1,
        }
        result
    }

    /// [`HeadWitness::observe`] for a node that holds the log itself: the
    /// head must match `log` at its size, and the proof against the latest
    /// accepted head is computed from `log`.
    pub fn observe_with_log(
        &mut self,
        head: LogHead,
        log: &CertificateLog,
    ) -> Result<(), LogError> {
        let ours = match log.head_at(head.size) {
            Ok(ours) => ours,
            Err(error) => {
                self.stats.heads_seen += 1;
                self.stats.unproven += 1;
                return Err(error);
            }
        };
        if ours.root != head.root {
            self.stats.heads_seen += 1;
            self.stats.inconsistencies += 1;
            return Err(LogError::Inconsistent {
                size: head.size,
                accepted: ours.root,
                offered: head.root,
            });
        }
        let (old, new) = if head.size >= self.latest.size {
            (self.latest.size, head.size)
        } else {
            (head.size, self.latest.size)
        };
        if new > log.len() {
            // The latest accepted head is beyond our log: we cannot prove
            // anything about it from here.
            self.stats.heads_seen += 1;
            self.stats.unproven += 1;
            return Err(LogError::BeyondLog {
                size: new,
                log_size: log.len(),
            });
        }
        match log.consistency_proof(old, new) {
            // The proof is over our log's roots; `observe` checks that the
            // latest accepted head is consistent with them.
            Ok(proof) => self.observe(head, Some(&proof)),
            Err(error) => {
                self.stats.heads_seen += 1;
                self.stats.unproven += 1;
                Err(error)
            }
        }
    }

    fn check(&self, head: LogHead, proof: Option<&ConsistencyProof>) -> Result<(), LogError> {
        let latest = self.latest;
        if head.size == latest.size {
            if head.root != latest.root {
                return Err(LogError::Inconsistent {
                    size: head.size,
                    accepted: latest.root,
                    offered: head.root,
                });
            }
            return Ok(());
        }
        if head.size < latest.size {
            if let Some(root) = self.recent.get(&head.size) {
                if *root != head.root {
                    return Err(LogError::Inconsistent {
                        size: head.size,
                        accepted: *root,
                        offered: head.root,
                    });
                }
                return Ok(());
            }
            if head.size == 0 {
                return empty_head(head);
            }
            return Self::proven(head, latest, proof, Offered::Old);
        }
        if latest.size == 0 {
            // Every log extends the empty one.
            return Ok(());
        }
        Self::proven(latest, head, proof, Offered::New)
    }

    /// `proof` must prove `old` a prefix of `new`, naming exactly those
    /// heads. A tree has one prefix of each size (but many extensions), so
    /// a valid proof that `new` has another root at `old.size` proves the
    /// two heads inconsistent; a proof about another `new` proves nothing.
    fn proven(
        old: LogHead,
        new: LogHead,
        proof: Option<&ConsistencyProof>,
        offered: Offered,
    ) -> Result<(), LogError> {
        let (offered_size, accepted_size) = match offered {
            Offered::Old => (old.size, new.size),
            Offered::New => (new.size, old.size),
        };
        let proof = proof.ok_or(LogError::ProofRequired {
            offered_size,
            accepted_size,
        })?;
        if proof.old.size != old.size || proof.new.size != new.size || proof.new.root != new.root {
            return Err(LogError::ProofForOtherHeads {
                proof_old: proof.old.size,
                proof_new: proof.new.size,
                want_old: old.size,
                want_new: new.size,
            });
        }
        proof.verify()?;
        if proof.old.root != old.root {
            let (accepted, offered_root) = match offered {
                // Our history says `proof.old.root`, the offered head `old.root`.
                Offered::Old => (proof.old.root, old.root),
                // We accepted `old.root`; the offered head implies another.
                Offered::New => (old.root, proof.old.root),
            };
            return Err(LogError::Inconsistent {
                size: old.size,
                accepted,
                offered: offered_root,
            });
        }
        Ok(())
    }

    fn remember(&mut self, head: LogHead) {
        if head.size == 0 {
            return;
        }
        self.recent.insert(head.size, head.root);
        while self.recent.len() > WITNESS_HEADS_MAX {
            self.recent.pop_first();
        }
    }
}

/// Which side of a consistency check the offered head is on.
#[derive(Clone, Copy)]
enum Offered {
    Old,
    New,
}

fn empty_head(head: LogHead) -> Result<(), LogError> {
    let empty = merkle::empty_root();
    if head.root != empty {
        return Err(LogError::Inconsistent {
            size: 0,
            accepted: empty,
            offered: head.root,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit;
    use proptest::prelude::*;

    fn leaf(i: u64) -> Hash {
        merkle::leaf_hash(&i.to_le_bytes())
    }

    fn log_of(leaves: impl IntoIterator<Item = Hash>) -> CertificateLog {
        let mut log = CertificateLog::new();
        for hash in leaves {
            log.append_leaf_hash(hash).expect("room");
        }
        log
    }

    #[test]
    fn inclusion_proofs_bind_certificate_index_and_head() {
        let certificates: Vec<Certificate> = (0..3)
            .map(|i| testkit::authority_cert(0, testkit::subject_key(i), &[], 100 + i as u64, 0))
            .collect();
        let mut log = CertificateLog::new();
        for (i, certificate) in certificates.iter().enumerate() {
            assert_eq!(log.append(certificate), Ok(i as u64));
        }
        assert_eq!(log.leaf_hash(1), Some(certificates[1].fingerprint()));
        let head = log.head();
        assert_eq!(head.size, 3);
        let proof = log.inclusion_proof(1, 3).expect("inside");
        assert_eq!(proof.verify(&certificates[1], &head), Ok(()));
        assert!(matches!(
            proof.verify(&certificates[0], &head),
            Err(LogError::InclusionInvalid {
                index: 1,
                tree_size: 3,
                ..
            })
        ));
        let old = log.head_at(2).expect("inside");
        assert_eq!(
            proof.verify(&certificates[1], &old),
            Err(LogError::SizeMismatch {
                proof_size: 3,
                head_size: 2
            })
        );
        let at_two = log.inclusion_proof(1, 2).expect("inside");
        assert_eq!(at_two.verify(&certificates[1], &old), Ok(()));
        let mut long = proof.clone();
        long.path = vec![Hash::ZERO; PROOF_HASHES_MAX + 1];
        assert!(matches!(
            long.verify(&certificates[1], &head),
            Err(LogError::ProofTooLong { .. })
        ));
        assert!(matches!(
            InclusionProof::decode(&long.encode()),
            Err(LogError::ProofTooLong { .. })
        ));
        assert_eq!(InclusionProof::decode(&proof.encode()), Ok(proof));
        assert_eq!(
            log.inclusion_proof(0, 4),
            Err(LogError::BeyondLog {
                size: 4,
                log_size: 3
            })
        );
        assert!(log.inclusion_proof(3, 3).is_err());
        assert_eq!(
            log.head_at(4),
            Err(LogError::BeyondLog {
                size: 4,
                log_size: 3
            })
        );
        assert_eq!(log.head_at(0), Ok(LogHead::empty()));
    }

    #[test]
    fn consistency_proofs_for_every_pair() {
        let log = log_of((0..9).map(leaf));
        for old in 0..=9 {
            for new in old..=9 {
                let proof = log.consistency_proof(old, new).expect("sizes valid");
                assert_eq!(proof.verify(), Ok(()), "{old}..{new}");
                assert_eq!(ConsistencyProof::decode(&proof.encode()), Ok(proof.clone()));
                if old > 0 && old < new {
                    let mut bad = proof.clone();
                    bad.old.root.0[0] ^= 1;
                    assert!(bad.verify().is_err());
                }
            }
        }
        assert!(log.consistency_proof(5, 4).is_err());
        assert!(log.consistency_proof(1, 10).is_err());
        // From the empty log: only the empty root, only an empty path.
        let mut fake_empty = log.consistency_proof(0, 9).expect("valid");
        fake_empty.old.root = leaf(0);
        assert!(matches!(
            fake_empty.verify(),
            Err(LogError::ConsistencyInvalid { old_size: 0, .. })
        ));
    }

    #[test]
    fn signed_tree_heads_need_an_authority() {
        let authorities = testkit::authorities();
        let head = log_of((0..3).map(leaf)).head();
        let signed = testkit::tree_head(1, head);
        assert_eq!(signed.signer, testkit::authority_id(1));
        assert_eq!(signed.verify(&authorities), Ok(()));
        assert_eq!(SignedTreeHead::decode(&signed.encode()), Ok(signed.clone()));
        let mut altered = signed.clone();
        altered.head.size = 2;
        assert_eq!(
            altered.verify(&authorities),
            Err(LogError::BadSignature {
                signer: signed.signer
            })
        );
        let outsider = SignedTreeHead::sign(head, testkit::subject_key(0), &testkit::entropy(1));
        assert!(matches!(
            outsider.verify(&authorities),
            Err(LogError::UnknownSigner { .. })
        ));
    }

    #[test]
    fn witness_follows_one_history() {
        let log = log_of((0..20).map(leaf));
        let mut witness = HeadWitness::new();
        // From the empty log anything larger is consistent.
        let h5 = log.head_at(5).expect("inside");
        assert_eq!(witness.observe(h5, None), Ok(()));
        // Larger needs a proof from the latest.
        let h9 = log.head_at(9).expect("inside");
        assert_eq!(
            witness.observe(h9, None),
            Err(LogError::ProofRequired {
                offered_size: 9,
                accepted_size: 5
            })
        );
        let wrong_pair = log.consistency_proof(4, 9).expect("valid");
        assert!(matches!(
            witness.observe(h9, Some(&wrong_pair)),
            Err(LogError::ProofForOtherHeads { .. })
        ));
        assert_eq!(
            witness.observe(h9, Some(&log.consistency_proof(5, 9).expect("valid"))),
            Ok(())
        );
        assert_eq!(witness.latest(), h9);
        // Same size: same root or a fork.
        assert_eq!(witness.observe(h9, None), Ok(()));
        let forged = LogHead {
            size: 9,
            root: leaf(99),
        };
        assert!(matches!(
            witness.observe(forged, None),
            Err(LogError::Inconsistent { size: 9, .. })
        ));
        // Smaller: a remembered head is checked directly ...
        assert_eq!(witness.observe(h5, None), Ok(()));
        let forged5 = LogHead {
            size: 5,
            root: leaf(98),
        };
        assert!(matches!(
            witness.observe(forged5, None),
            Err(LogError::Inconsistent { size: 5, .. })
        ));
        // ... another one needs a proof that it is a prefix of the latest.
        let h7 = log.head_at(7).expect("inside");
        assert!(matches!(
            witness.observe(h7, None),
            Err(LogError::ProofRequired { .. })
        ));
        assert_eq!(
            witness.observe(h7, Some(&log.consistency_proof(7, 9).expect("valid"))),
            Ok(())
        );
        // The empty head is a prefix of everything; a fake one is not.
        assert_eq!(witness.observe(LogHead::empty(), None), Ok(()));
        assert!(
            witness
                .observe(
                    LogHead {
                        size: 0,
                        root: leaf(1)
                    },
                    None
                )
                .is_err()
        );
        // A garbage proof is refused without claiming a fork.
        let h12 = log.head_at(12).expect("inside");
        let mut garbage = log.consistency_proof(9, 12).expect("valid");
        garbage.path[0].0[3] ^= 8;
        assert!(matches!(
            witness.observe(h12, Some(&garbage)),
            Err(LogError::ConsistencyInvalid { .. })
        ));
        let stats = witness.stats();
        assert_eq!(stats.inconsistencies, 3);
        assert_eq!(stats.heads_accepted, 6);
        assert_eq!(stats.heads_seen, 13);
        assert_eq!(stats.unproven, 4);
    }

    #[test]
    fn witness_proves_a_fork_from_the_other_side_proof() {
        // Two logs share 4 entries, then differ.
        let honest = log_of((0..10).map(leaf));
        let fork = log_of((0..4).map(leaf).chain((100..110).map(leaf)));
        let mut witness = HeadWitness::starting_at(honest.head_at(6).expect("inside"));
        // The fork's head at 12 with the fork's own, valid proof from 6:
        // the proof shows the fork's tree has another root at size 6.
        let proof = fork.consistency_proof(6, 12).expect("valid");
        assert_eq!(proof.verify(), Ok(()));
        let result = witness.observe(fork.head_at(12).expect("inside"), Some(&proof));
        assert!(
            matches!(result, Err(LogError::Inconsistent { size: 6, .. })),
            "{result:?}"
        );
        assert_eq!(witness.stats().inconsistencies, 1);
        // A smaller head of the fork, proven against the honest latest.
        let mut witness = HeadWitness::starting_at(honest.head_at(9).expect("inside"));
        let mut claim = honest.consistency_proof(5, 9).expect("valid");
        let forked5 = fork.head_at(5).expect("inside");
        assert!(matches!(
            witness.observe(forked5, Some(&claim)),
            Err(LogError::Inconsistent { size: 5, .. })
        ));
        // The proof must be about our latest, not about the fork's.
        claim = fork.consistency_proof(5, 9).expect("valid");
        assert!(matches!(
            witness.observe(forked5, Some(&claim)),
            Err(LogError::ProofForOtherHeads { .. })
        ));
    }

    #[test]
    fn witness_with_log_computes_its_own_proofs() {
        let log = log_of((0..10).map(leaf));
        let mut witness = HeadWitness::new();
        for size in [3, 8, 4, 8, 10] {
            assert_eq!(
                witness.observe_with_log(log.head_at(size).expect("inside"), &log),
                Ok(()),
                "{size}"
            );
        }
        assert_eq!(witness.latest().size, 10);
        let fake = LogHead {
            size: 6,
            root: leaf(77),
        };
        assert!(matches!(
            witness.observe_with_log(fake, &log),
            Err(LogError::Inconsistent { size: 6, .. })
        ));
        let ahead = LogHead {
            size: 11,
            root: leaf(78),
        };
        assert_eq!(
            witness.observe_with_log(ahead, &log),
            Err(LogError::BeyondLog {
                size: 11,
                log_size: 10
            })
        );
        // A witness whose accepted head is not in this log cannot use it.
        let other = log_of((50..60).map(leaf));
        let result = witness.observe_with_log(other.head_at(4).expect("inside"), &other);
        assert!(result.is_err(), "{result:?}");
        assert_eq!(witness.stats().heads_seen, 8);
    }

    #[test]
    fn witness_memory_is_bounded() {
        let log = log_of((0..(WITNESS_HEADS_MAX as u64 + 20)).map(leaf));
        let mut witness = HeadWitness::new();
        for size in 1..=log.len() {
            assert_eq!(
                witness.observe_with_log(log.head_at(size).expect("inside"), &log),
                Ok(())
            );
        }
        assert_eq!(witness.recent.len(), WITNESS_HEADS_MAX);
        // Forgotten heads need a proof again; remembered ones do not.
        assert!(
            witness
                .observe(log.head_at(1).expect("inside"), None)
                .is_err()
        );
        assert_eq!(
            witness.observe(log.head_at(log.len() - 1).expect("inside"), None),
            Ok(())
        );
    }

    proptest! {
        #[test]
        fn frontier_agrees_with_the_merkle_log(count in 0u64..300) {
            let mut tree = merkle::MerkleLog::new();
            let mut frontier = Frontier::default();
            prop_assert_eq!(frontier.root(), tree.root());
            for i in 0..count {
                tree.append_leaf_hash(leaf(i)).expect("room");
                frontier.push(leaf(i));
                prop_assert_eq!(frontier.root(), tree.root());
            }
            prop_assert_eq!(frontier.size(), tree.len());
        }

        #[test]
        fn log_messages_never_panic_and_decode_canonically(
            bytes in proptest::collection::vec(any::<u8>(), 0..600),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
            pick in 0usize..3,
        ) {
            let log = log_of((0..13).map(leaf));
            let consistency = log.consistency_proof(6, 13).expect("valid");
            let head = testkit::tree_head(0, log.head());
            for candidate in [bytes.clone(), {
                let mut encoded = match pick {
                    0 => log.inclusion_proof(5, 13).expect("inside").encode(),
                    1 => consistency.encode(),
                    _ => head.encode(),
                };
                for (at, value) in &flips {
                    let at = at.index(encoded.len());
                    encoded[at] = *value;
                }
                encoded
            }] {
                if let Ok(value) = InclusionProof::decode(&candidate) {
                    prop_assert_eq!(value.encode(), candidate.clone());
                }
                if let Ok(value) = ConsistencyProof::decode(&candidate) {
                    prop_assert_eq!(value.encode(), candidate.clone());
                    // Random or mutated proofs do not verify; the original does.
                    let verified = value.verify();
                    prop_assert_eq!(verified.is_ok(), value == consistency, "{:?}", verified);
                }
                if let Ok(value) = SignedTreeHead::decode(&candidate) {
                    prop_assert_eq!(value.encode(), candidate.clone());
                    let verified = value.verify(&testkit::authorities());
                    prop_assert_eq!(verified.is_ok(), value == head, "{:?}", verified);
                }
            }
        }
    }
}
