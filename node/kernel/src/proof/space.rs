//! SpaceProof (where): the proposer holds a plot of labels it committed to.
//!
//! A plot of `n = 2^leaves_log2` labels is built from a seed that binds it to
//! its owner (`hash("hm/space-seed/v1", node id, plot nonce)`), as a
//! depth-robust-graph labelling:
//!
//! ```text
//! label_0 = H^m(seed, 0)
//! label_i = H^m(seed, i, label_{i-1}, label_{parent(i)})      (i >= 1)
//! ```
//!
//! where `parent(i) < i` is a pseudo-random earlier index fixed by
//! `(seed, i)` (DRSample-style: a random power-of-two distance band, then a
//! random distance in it, so both near and far edges occur) and `H^m` is
//! [`SPACE_LABEL_HASH_ITERATIONS`] SHA-256 iterations. Label `i` therefore
//! depends on every earlier label through the `i-1` chain: a prover that
//! keeps only the seed must recompute the whole prefix — about `n * m`
//! sequential hashes — to answer a challenge near the end, while a verifier
//! checks one label from its two opened parents with `m` hashes.
//!
//! The commitment is the RFC 9162 Merkle root over the labels (each label's
//! 32 bytes is one leaf). It is registered on chain ([`SpaceCommitment`]).
//! For a block, `k` challenge indices follow from the parent block hash and
//! the proposer's id; each challenge opens `label_i`, `label_{i-1}` and
//! `label_{parent(i)}` with inclusion paths.
//!
//! Soundness is statistical: a prover missing a fraction `f` of correct
//! labels passes one block with probability about `(1 - f)^k`. Challenges
//! may repeat (they are a pure function of public data, so no one can
//! grind them); with production plots repeats are rare and cost nothing.
//!
//! Memory: the plot keeps the labels (32 B/leaf) and every internal tree
//! node (32 B/leaf), about 64 B per leaf; leaf hashes are recomputed from
//! labels when a path needs one.

use hm_wire::{Hash, hash, hash_parts, merkle};

use super::{
    SPACE_CHALLENGES_MAX, SPACE_PATH_HASHES_MAX, SpaceChallengeOpening, SpaceCommitment,
    SpaceOpening, SpaceProof,
};

pub const SPACE_SEED_DOMAIN: &str = "hm/space-seed/v1";
pub const SPACE_LABEL_DOMAIN: &str = "hm/space-label/v1";
pub const SPACE_CHALLENGE_DOMAIN: &str = "hm/space-challenge/v1";
/// Domain of the label's extra iterations. Short on purpose: with it one
/// iteration is one SHA-256 compression (0xFF, len, 9 bytes, 8-byte length,
/// 32-byte value = 51 bytes, under the 55 that fit one block).
const SPACE_LABEL_ITERATE_DOMAIN: &str = "hm/spi/v1";

/// SHA-256 evaluations per label. Raises the cost of regenerating a plot
/// from its seed (and of plotting, once) by this factor, and the cost of
/// verifying a challenge by this many hashes per label — a few
/// microseconds. See `ProofParams::production` for the resulting figures.
pub const SPACE_LABEL_HASH_ITERATIONS: u32 = 64;

/// Largest plot this node builds in memory: 2^26 leaves × 64 B = 4 GiB.
/// Verification has no such limit (it needs no plot); genesis allows up to
/// 2^32 leaves for plots kept on disk later.
pub const SPACE_PLOT_LEAVES_LOG2_MAX: u8 = 26;

/// Which of a challenge's three openings a [`SpaceError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpeningRole {
    Challenged,
    Previous,
    Parent,
}

impl std::fmt::Display for OpeningRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OpeningRole::Challenged => "challenged label",
            OpeningRole::Previous => "previous label",
            OpeningRole::Parent => "parent label",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpaceError {
    #[error(
        "proposer {proposer} has no registered space commitment; it must register one before proposing"
    )]
    NotRegistered { proposer: Hash },
    #[error(
        "space proof names commitment root {claimed}, but the proposer registered {registered}"
    )]
    RootMismatch { claimed: Hash, registered: Hash },
    #[error("space proof has {got} challenge openings; the parameters require {expected}")]
    ChallengeCount { got: usize, expected: usize },
    #[error(
        "challenge {challenge}: the {role} path has {len} hashes, more than the limit of {SPACE_PATH_HASHES_MAX}"
    )]
    PathTooLong {
        challenge: usize,
        role: OpeningRole,
        len: usize,
    },
    #[error(
        "challenge {challenge}: the {role} opening is for leaf {got}, expected leaf {expected}"
    )]
    OpeningIndex {
        challenge: usize,
        role: OpeningRole,
        expected: u64,
        got: u64,
    },
    #[error(
        "challenge {challenge}: the {role} opening must be {} for leaf {index}",
        if *present_expected { "present" } else { "absent" }
    )]
    OpeningShape {
        challenge: usize,
        role: OpeningRole,
        index: u64,
        present_expected: bool,
    },
    #[error(
        "challenge {challenge}: the {role} (leaf {index}) is not in the registered commitment: {reason}"
    )]
    Inclusion {
        challenge: usize,
        role: OpeningRole,
        index: u64,
        reason: String,
    },
    #[error(
        "challenge {challenge}: label {index} does not follow from its parents and the plot seed (the prover does not hold a correctly plotted space)"
    )]
    LabelMismatch { challenge: usize, index: u64 },
    #[error(
        "a plot of 2^{leaves_log2} leaves is larger than this node builds in memory (2^{SPACE_PLOT_LEAVES_LOG2_MAX}); lower space_leaves_log2"
    )]
    PlotTooLarge { leaves_log2: u8 },
    #[error(
        "the plot has 2^{plot} leaves but the chain's parameters say 2^{params}; re-plot with the genesis parameters"
    )]
    PlotSizeMismatch { plot: u8, params: u8 },
    #[error("the plot belongs to node {plot}, but the block's proposer is {proposer}")]
    PlotOwner { plot: Hash, proposer: Hash },
}

/// The seed a node's plot is built from: binds the plot to its owner, so two
/// validators cannot present one plot.
pub fn plot_seed(node_id: &Hash, plot_nonce: u64) -> Hash {
    hash_parts(
        SPACE_SEED_DOMAIN,
        &[node_id.as_bytes(), &plot_nonce.to_le_bytes()],
    )
}

/// The earlier label `index` depends on besides `index - 1`.
///
/// DRSample-style edge: pick a band `g` in `1..=floor(log2 index)` and a
/// distance in `[2^(g-1), min(2^g, index)]`. The graph is public and fixed
/// by the seed; a cheap integer mixer is enough because nothing here needs
/// unpredictability, only a spread of edge lengths.
pub fn parent_index(seed: &Hash, index: u64) -> u64 {
    if index < 2 {
        return 0;
    }
    let mut seed_word = [0u8; 8];
    seed_word.copy_from_slice(&seed.as_bytes()[..8]);
    let first = mix64(u64::from_le_bytes(seed_word) ^ index);
    let second = mix64(first);
    let bands = u64::from(index.ilog2());
    let band = 1 + first % bands;
    let low = 1u64 << (band - 1);
    let high = (1u64 << band).min(index);
    let distance = low + second % (high - low + 1);
    debug_assert!((1..=index).contains(&distance));
    index - distance
}

/// splitmix64's finaliser.
fn mix64(value: u64) -> u64 {
    let mut z = value.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Label `index` from its parents (`None` for label 0, which has none).
pub fn compute_label(seed: &Hash, index: u64, parents: Option<(&Hash, &Hash)>) -> Hash {
    let index_bytes = index.to_le_bytes();
    let mut value = match parents {
        None => hash_parts(SPACE_LABEL_DOMAIN, &[seed.as_bytes(), &index_bytes]),
        Some((previous, parent)) => hash_parts(
            SPACE_LABEL_DOMAIN,
            &[
                seed.as_bytes(),
                &index_bytes,
                previous.as_bytes(),
                parent.as_bytes(),
            ],
        ),
    };
    for _ in 1..SPACE_LABEL_HASH_ITERATIONS {
        value = hash(SPACE_LABEL_ITERATE_DOMAIN, value.as_bytes());
    }
    value
}

/// The `k` leaves a block's space proof must open: a pure function of the
/// parent block hash and the proposer, so neither can be ground.
pub fn challenge_indices(
    previous_hash: &Hash,
    proposer: &Hash,
    challenges: u32,
    leaves_log2: u8,
) -> Vec<u64> {
    assert!(leaves_log2 < 64, "plots have fewer than 2^64 leaves");
    let mask = (1u64 << leaves_log2) - 1;
    (0..challenges)
        .map(|j| {
            let digest = hash_parts(
                SPACE_CHALLENGE_DOMAIN,
                &[
                    previous_hash.as_bytes(),
                    proposer.as_bytes(),
                    &j.to_le_bytes(),
                ],
            );
            let mut word = [0u8; 8];
            word.copy_from_slice(&digest.as_bytes()[..8]);
            // The plot size is a power of two, so masking is unbiased.
            u64::from_le_bytes(word) & mask
        })
        .collect()
}

/// A node's plotted space, held in memory.
#[derive(Clone)]
pub struct SpacePlot {
    node_id: Hash,
    plot_nonce: u64,
    seed: Hash,
    leaves_log2: u8,
    labels: Vec<Hash>,
    /// `levels[0]` has the `n/2` parents of the leaf hashes, each next level
    /// half as many, the last is `[root]`.
    levels: Vec<Vec<Hash>>,
}

impl std::fmt::Debug for SpacePlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpacePlot")
            .field("node_id", &self.node_id)
            .field("plot_nonce", &self.plot_nonce)
            .field("leaves_log2", &self.leaves_log2)
            .field("root", &self.root())
            .finish()
    }
}

impl SpacePlot {
    /// Plots `2^leaves_log2` labels for `node_id` and builds their Merkle
    /// tree: `n * (SPACE_LABEL_HASH_ITERATIONS + 2)` hashes, sequential.
    pub fn generate(
        node_id: &Hash,
        plot_nonce: u64,
        leaves_log2: u8,
    ) -> Result<SpacePlot, SpaceError> {
        if leaves_log2 > SPACE_PLOT_LEAVES_LOG2_MAX {
            return Err(SpaceError::PlotTooLarge { leaves_log2 });
        }
        let seed = plot_seed(node_id, plot_nonce);
        let leaves = 1usize << leaves_log2;
        let mut labels: Vec<Hash> = Vec::with_capacity(leaves);
        for index in 0..leaves as u64 {
            let label = if index == 0 {
                compute_label(&seed, 0, None)
            } else {
                let previous = &labels[(index - 1) as usize];
                let parent = &labels[parent_index(&seed, index) as usize];
                compute_label(&seed, index, Some((previous, parent)))
            };
            labels.push(label);
        }
        let mut levels: Vec<Vec<Hash>> = Vec::with_capacity(usize::from(leaves_log2));
        if leaves_log2 > 0 {
            let bottom: Vec<Hash> = labels
                .chunks_exact(2)
                .map(|pair| {
                    merkle::node_hash(
                        &merkle::leaf_hash(pair[0].as_bytes()),
                        &merkle::leaf_hash(pair[1].as_bytes()),
                    )
                })
                .collect();
            levels.push(bottom);
            while levels.last().is_some_and(|level| level.len() > 1) {
                let next: Vec<Hash> = levels
                    .last()
                    .map(|level| {
                        level
                            .chunks_exact(2)
                            .map(|pair| merkle::node_hash(&pair[0], &pair[1]))
                            .collect()
                    })
                    .unwrap_or_default();
                levels.push(next);
            }
        }
        assert_eq!(levels.len(), usize::from(leaves_log2));
        Ok(SpacePlot {
            node_id: *node_id,
            plot_nonce,
            seed,
            leaves_log2,
            labels,
            levels,
        })
    }

    /// The RFC 9162 root over the labels: what the node registers.
    pub fn root(&self) -> Hash {
        match self.levels.last() {
            Some(top) => top[0],
            None => merkle::leaf_hash(self.labels[0].as_bytes()),
        }
    }

    /// What to register on chain for this plot.
    pub fn commitment(&self) -> SpaceCommitment {
        SpaceCommitment {
            root: self.root(),
            plot_nonce: self.plot_nonce,
        }
    }

    pub fn node_id(&self) -> Hash {
        self.node_id
    }

    pub fn leaves_log2(&self) -> u8 {
        self.leaves_log2
    }

    pub fn leaves(&self) -> u64 {
        1u64 << self.leaves_log2
    }

    pub fn label(&self, index: u64) -> Option<Hash> {
        usize::try_from(index)
            .ok()
            .and_then(|index| self.labels.get(index))
            .copied()
    }

    /// Opens leaf `index` (which must be inside the plot): its label and
    /// its RFC 9162 inclusion path, sibling first.
    pub fn open(&self, index: u64) -> SpaceOpening {
        assert!(index < self.leaves(), "leaf {index} is outside the plot");
        let position = index as usize;
        let mut path = Vec::with_capacity(usize::from(self.leaves_log2));
        if self.leaves_log2 > 0 {
            path.push(merkle::leaf_hash(self.labels[position ^ 1].as_bytes()));
            for (depth, level) in self.levels[..self.levels.len() - 1].iter().enumerate() {
                path.push(level[(position >> (depth + 1)) ^ 1]);
            }
        }
        SpaceOpening {
            index,
            label: self.labels[position],
            path,
        }
    }

    /// The space proof for a block whose parent is `previous_hash`,
    /// proposed by this plot's owner, with `challenges` openings.
    pub fn prove(&self, previous_hash: &Hash, challenges: u32) -> SpaceProof {
        let openings =
            challenge_indices(previous_hash, &self.node_id, challenges, self.leaves_log2)
                .into_iter()
                .map(|index| {
                    let (previous, parent) = if index == 0 {
                        (None, None)
                    } else {
                        let parent = parent_index(&self.seed, index);
                        let parent_opening = (parent != index - 1).then(|| self.open(parent));
                        (Some(self.open(index - 1)), parent_opening)
                    };
                    SpaceChallengeOpening {
                        challenged: self.open(index),
                        previous,
                        parent,
                    }
                })
                .collect();
        SpaceProof {
            commitment_root: self.root(),
            openings,
        }
    }
}

/// Count limits, checked before any hashing (and by the decoder).
pub fn check_space_limits(proof: &SpaceProof) -> Result<(), SpaceError> {
    if proof.openings.len() > SPACE_CHALLENGES_MAX {
        return Err(SpaceError::ChallengeCount {
            got: proof.openings.len(),
            expected: SPACE_CHALLENGES_MAX,
        });
    }
    for (challenge, opening) in proof.openings.iter().enumerate() {
        let roles = [
            (OpeningRole::Challenged, Some(&opening.challenged)),
            (OpeningRole::Previous, opening.previous.as_ref()),
            (OpeningRole::Parent, opening.parent.as_ref()),
        ];
        for (role, part) in roles {
            if let Some(part) = part
                && part.path.len() > SPACE_PATH_HASHES_MAX
            {
                return Err(SpaceError::PathTooLong {
                    challenge,
                    role,
                    len: part.path.len(),
                });
            }
        }
    }
    Ok(())
}

/// Checks a space proof for a block with parent `previous_hash` proposed
/// by `proposer`, against the proposer's registered commitment.
pub fn verify_space(
    proof: &SpaceProof,
    previous_hash: &Hash,
    proposer: &Hash,
    registered: &SpaceCommitment,
    challenges: u32,
    leaves_log2: u8,
) -> Result<(), SpaceError> {
    check_space_limits(proof)?;
    if proof.commitment_root != registered.root {
        return Err(SpaceError::RootMismatch {
            claimed: proof.commitment_root,
            registered: registered.root,
        });
    }
    let expected = challenge_indices(previous_hash, proposer, challenges, leaves_log2);
    if proof.openings.len() != expected.len() {
        return Err(SpaceError::ChallengeCount {
            got: proof.openings.len(),
            expected: expected.len(),
        });
    }
    let seed = plot_seed(proposer, registered.plot_nonce);
    let tree_size = 1u64 << leaves_log2;
    let root = &registered.root;
    for (challenge, (opening, index)) in proof.openings.iter().zip(expected).enumerate() {
        let check = |role: OpeningRole, part: &SpaceOpening, expected_index: u64| {
            if part.index != expected_index {
                return Err(SpaceError::OpeningIndex {
                    challenge,
                    role,
                    expected: expected_index,
                    got: part.index,
                });
            }
            let leaf = merkle::leaf_hash(part.label.as_bytes());
            merkle::verify_inclusion(&leaf, part.index, tree_size, &part.path, root).map_err(
                |error| SpaceError::Inclusion {
                    challenge,
                    role,
                    index: part.index,
                    reason: error.to_string(),
                },
            )
        };
        let shape = |role: OpeningRole, present_expected: bool| SpaceError::OpeningShape {
            challenge,
            role,
            index,
            present_expected,
        };
        check(OpeningRole::Challenged, &opening.challenged, index)?;
        let label = if index == 0 {
            if opening.previous.is_some() {
                return Err(shape(OpeningRole::Previous, false));
            }
            if opening.parent.is_some() {
                return Err(shape(OpeningRole::Parent, false));
            }
            compute_label(&seed, 0, None)
        } else {
            let previous = opening
                .previous
                .as_ref()
                .ok_or_else(|| shape(OpeningRole::Previous, true))?;
            check(OpeningRole::Previous, previous, index - 1)?;
            let parent_at = parent_index(&seed, index);
            // When the parent is the previous leaf it is opened once.
            let parent = if parent_at == index - 1 {
                if opening.parent.is_some() {
                    return Err(shape(OpeningRole::Parent, false));
                }
                previous
            } else {
                let parent = opening
                    .parent
                    .as_ref()
                    .ok_or_else(|| shape(OpeningRole::Parent, true))?;
                check(OpeningRole::Parent, parent, parent_at)?;
                parent
            };
            compute_label(&seed, index, Some((&previous.label, &parent.label)))
        };
        if label != opening.challenged.label {
            return Err(SpaceError::LabelMismatch { challenge, index });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LOG2: u8 = 8;
    const K: u32 = 16;

    fn node() -> Hash {
        hash("test", b"node")
    }

    fn plot() -> SpacePlot {
        SpacePlot::generate(&node(), 7, LOG2).expect("small plot")
    }

    fn parent_block() -> Hash {
        hash("test", b"parent")
    }

    fn verify(proof: &SpaceProof, registered: &SpaceCommitment) -> Result<(), SpaceError> {
        verify_space(proof, &parent_block(), &node(), registered, K, LOG2)
    }

    #[test]
    fn root_is_the_rfc9162_root_and_paths_match_the_reference() {
        let plot = plot();
        let leaf_hashes: Vec<Hash> = (0..plot.leaves())
            .map(|i| merkle::leaf_hash(plot.label(i).expect("inside").as_bytes()))
            .collect();
        assert_eq!(plot.root(), merkle::root_from_leaf_hashes(&leaf_hashes));
        for index in [0, 1, 2, 77, plot.leaves() - 1] {
            let opening = plot.open(index);
            let reference =
                merkle::inclusion_proof_from_leaf_hashes(&leaf_hashes, index).expect("inside");
            assert_eq!(opening.path, reference);
        }
    }

    #[test]
    fn labels_follow_the_equation() {
        let plot = plot();
        let seed = plot_seed(&node(), 7);
        assert_eq!(plot.label(0), Some(compute_label(&seed, 0, None)));
        for index in 1..plot.leaves() {
            let parent = parent_index(&seed, index);
            assert!(parent < index);
            let expected = compute_label(
                &seed,
                index,
                Some((
                    &plot.label(index - 1).expect("inside"),
                    &plot.label(parent).expect("inside"),
                )),
            );
            assert_eq!(plot.label(index), Some(expected));
        }
    }

    #[test]
    fn parents_spread_over_near_and_far_edges() {
        let seed = plot_seed(&node(), 0);
        let index = 1u64 << 20;
        let distances: Vec<u64> = (index..index + 2_000)
            .map(|i| i - parent_index(&seed, i))
            .collect();
        assert!(distances.iter().any(|d| *d <= 4), "some near edges");
        assert!(distances.iter().any(|d| *d >= 1 << 18), "some far edges");
        assert!(distances.iter().all(|d| *d >= 1));
    }

    #[test]
    fn honest_plot_passes() {
        let plot = plot();
        let proof = plot.prove(&parent_block(), K);
        assert_eq!(proof.openings.len(), K as usize);
        assert_eq!(verify(&proof, &plot.commitment()), Ok(()));
    }

    #[test]
    fn challenges_depend_on_parent_and_proposer() {
        let a = challenge_indices(&parent_block(), &node(), K, LOG2);
        let b = challenge_indices(&hash("test", b"other parent"), &node(), K, LOG2);
        let c = challenge_indices(&parent_block(), &hash("test", b"other"), K, LOG2);
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert!(a.iter().all(|i| *i < 1 << LOG2));
    }

    #[test]
    fn wrong_registered_root_fails() {
        let plot = plot();
        let proof = plot.prove(&parent_block(), K);
        let other = SpacePlot::generate(&node(), 8, LOG2).expect("plot");
        assert!(matches!(
            verify(&proof, &other.commitment()),
            Err(SpaceError::RootMismatch { .. })
        ));
        // Claiming the registered root does not help: the paths lead
        // elsewhere.
        let mut claimed = proof.clone();
        claimed.commitment_root = other.root();
        assert!(matches!(
            verify(&claimed, &other.commitment()),
            Err(SpaceError::Inclusion { .. })
        ));
    }

    #[test]
    fn seed_only_prover_with_random_labels_fails() {
        // Keeps only the seed and makes up labels: cheap, but the root it
        // can register is over labels that break the label equation.
        let honest = plot();
        let mut forged = honest.clone();
        for (index, label) in forged.labels.iter_mut().enumerate() {
            *label = hash("forged", &(index as u64).to_le_bytes());
        }
        let forged = rebuild(forged);
        let proof = forged.prove(&parent_block(), K);
        // Against the honest registration the paths fail …
        assert!(matches!(
            verify(&proof, &honest.commitment()),
            Err(SpaceError::RootMismatch { .. })
        ));
        // … and against its own registration the labels fail.
        assert!(matches!(
            verify(&proof, &forged.commitment()),
            Err(SpaceError::LabelMismatch { .. })
        ));
    }

    #[test]
    fn right_root_with_wrong_labels_fails() {
        let plot = plot();
        let mut proof = plot.prove(&parent_block(), K);
        proof.openings[3].challenged.label = hash("forged", b"label");
        assert!(matches!(
            verify(&proof, &plot.commitment()),
            Err(SpaceError::Inclusion {
                challenge: 3,
                role: OpeningRole::Challenged,
                ..
            })
        ));
    }

    #[test]
    fn prover_storing_half_the_plot_is_caught() {
        // Keeps the first half honestly and fills the rest with cheap
        // labels: each challenge in the second half exposes it.
        let honest = plot();
        let mut cheat = honest.clone();
        let half = cheat.labels.len() / 2;
        for label in cheat.labels[half..].iter_mut() {
            *label = hash("cheap", label.as_bytes());
        }
        let cheat = rebuild(cheat);
        let proof = cheat.prove(&parent_block(), K);
        let result = verify(&proof, &cheat.commitment());
        assert!(
            matches!(result, Err(SpaceError::LabelMismatch { .. })),
            "{result:?}"
        );
    }

    #[test]
    fn tampered_path_and_shape_fail() {
        let plot = plot();
        let proof = plot.prove(&parent_block(), K);
        let mut path = proof.clone();
        path.openings[0].challenged.path[2].0[5] ^= 1;
        assert!(matches!(
            verify(&path, &plot.commitment()),
            Err(SpaceError::Inclusion { challenge: 0, .. })
        ));
        let mut short = proof.clone();
        short.openings.pop();
        assert!(matches!(
            verify(&short, &plot.commitment()),
            Err(SpaceError::ChallengeCount { .. })
        ));
        let mut wrong_index = proof.clone();
        let position = wrong_index
            .openings
            .iter()
            .position(|o| o.previous.is_some())
            .expect("a challenge above leaf 0");
        let previous_index = proof.openings[position]
            .previous
            .as_ref()
            .map(|o| o.index)
            .expect("previous opening");
        // A genuine opening, but of the wrong leaf.
        wrong_index.openings[position].previous =
            Some(plot.open((previous_index + 1) % plot.leaves()));
        assert!(matches!(
            verify(&wrong_index, &plot.commitment()),
            Err(SpaceError::OpeningIndex {
                role: OpeningRole::Previous,
                ..
            })
        ));
        let mut missing = proof.clone();
        missing.openings[position].previous = None;
        assert!(matches!(
            verify(&missing, &plot.commitment()),
            Err(SpaceError::OpeningShape { .. })
        ));
        let mut long = proof;
        long.openings[0].challenged.path = vec![Hash::ZERO; SPACE_PATH_HASHES_MAX + 1];
        assert!(matches!(
            verify(&long, &plot.commitment()),
            Err(SpaceError::PathTooLong { .. })
        ));
    }

    #[test]
    fn another_nodes_plot_fails() {
        // The seed binds the plot to its owner: node B cannot present A's
        // plot even with A's root registered as its own.
        let plot = plot();
        let proof = plot.prove(&parent_block(), K);
        let other = hash("test", b"node B");
        let result = verify_space(&proof, &parent_block(), &other, &plot.commitment(), K, LOG2);
        assert!(result.is_err());
    }

    #[test]
    fn plot_size_is_bounded() {
        assert!(matches!(
            SpacePlot::generate(&node(), 0, SPACE_PLOT_LEAVES_LOG2_MAX + 1),
            Err(SpaceError::PlotTooLarge { .. })
        ));
    }

    /// Recomputes the tree over the (possibly forged) labels.
    fn rebuild(mut plot: SpacePlot) -> SpacePlot {
        let leaf_hashes: Vec<Hash> = plot
            .labels
            .iter()
            .map(|label| merkle::leaf_hash(label.as_bytes()))
            .collect();
        let mut levels = Vec::new();
        let mut current = leaf_hashes;
        while current.len() > 1 {
            current = current
                .chunks_exact(2)
                .map(|pair| merkle::node_hash(&pair[0], &pair[1]))
                .collect();
            levels.push(current.clone());
        }
        plot.levels = levels;
        plot
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn honest_proofs_verify_for_any_parent(parent in any::<[u8; 32]>(), nonce in any::<u64>()) {
            let plot = SpacePlot::generate(&node(), nonce, 5).expect("tiny plot");
            let proof = plot.prove(&Hash(parent), 8);
            prop_assert_eq!(
                verify_space(&proof, &Hash(parent), &node(), &plot.commitment(), 8, 5),
                Ok(())
            );
        }
    }
}
