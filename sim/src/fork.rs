//! The fork checker's second half: when honest nodes committed different
//! blocks at one height, read both blocks' commit certificates from the
//! nodes' disks and name the validators behind the fork
//! (`hm_kernel::accountability::convict`), then check that every one of
//! them was really Byzantine and that together they hold more than a third
//! of the stake — Tendermint's accountable safety, judged on the run.
//!
//! Owns no state: it reads disks at the end of a run. It must not know how
//! the culprits misbehaved (which fault injector ran); only who they were.

use std::collections::BTreeMap;

use hm_env::mem::MemDisk;
use hm_kernel::accountability::{Conviction, convict};
use hm_kernel::block::CommitCertificate;
use hm_kernel::chain::ChainStore;
use hm_kernel::genesis::Genesis;
use hm_kernel::validators::ValidatorIndex;
use hm_wire::Hash;

use crate::outcome::PropertyResult;

/// Heights compared per node (a fork in a simulated run happens early;
/// this bounds the auditor's reads on long runs).
pub const FORK_SEARCH_HEIGHTS_MAX: u64 = 100_000;

/// Two honest nodes' conflicting commits at one height, and who they name.
pub struct Fork {
    pub height: u64,
    /// (node index, block hash) on each side.
    pub sides: [(usize, Hash); 2],
    pub conviction: Conviction,
}

/// One honest node's disk, as the fork search reads it.
pub struct NodeDisk<'a> {
    pub index: usize,
    pub disk: &'a MemDisk,
}

/// The lowest height at which two honest nodes' disks hold different
/// committed blocks, with the conviction their certificates give. `Ok(None)`
/// when every honest disk agrees.
pub fn find_fork(genesis: &Genesis, disks: &[NodeDisk<'_>]) -> Result<Option<Fork>, String> {
    let chain_id = genesis.chain_id();
    let validators = genesis
        .validator_set()
        .map_err(|error| format!("genesis: {error}"))?;
    let mut stores = Vec::new();
    for node in disks {
        // A disk that cannot be read is not a fork; the validity checker
        // reports what it could not audit.
        if !ChainStore::exists(node.disk).unwrap_or(false) {
            continue;
        }
        if let Ok(store) = ChainStore::open(node.disk.clone(), chain_id) {
            stores.push((node.index, store));
        }
    }
    let top = stores
        .iter()
        .map(|(_, store)| store.height())
        .max()
        .unwrap_or(0)
        .min(FORK_SEARCH_HEIGHTS_MAX);
    for height in 1..=top {
        // Block hash → (first node holding it, its certificate).
        let mut seen: BTreeMap<Hash, (usize, CommitCertificate)> = BTreeMap::new();
        for (index, store) in &stores {
            if let Ok(Some(block)) = store.block(height) {
                seen.entry(block.hash())
                    .or_insert_with(|| (*index, block.commit.clone()));
            }
        }
        let mut sides = seen.into_iter();
        if let (
            Some((first_hash, (first_node, first))),
            Some((second_hash, (second_node, second))),
        ) = (sides.next(), sides.next())
        {
            let conviction = convict(&first, &second, &chain_id, &validators)
                .map_err(|error| format!("height {height}: {error}"))?;
            return Ok(Some(Fork {
                height,
                sides: [(first_node, first_hash), (second_node, second_hash)],
                conviction,
            }));
        }
    }
    Ok(None)
}

/// `fork-accountable`: the fork's culprits are named, every one of them is
/// a Byzantine validator, and together they hold more than a third of the
/// stake. `node_of` maps a validator index to its node, `byzantine` says
/// which nodes were Byzantine.
pub fn accountable_property(
    fork: &Result<Option<Fork>, String>,
    genesis: &Genesis,
    node_of: &dyn Fn(ValidatorIndex) -> Option<usize>,
    byzantine: &dyn Fn(usize) -> bool,
) -> PropertyResult {
    let name = "fork-accountable".to_string();
    let fork = match fork {
        Ok(Some(fork)) => fork,
        Ok(None) => {
            return PropertyResult {
                name,
                passed: false,
                detail: "the scenario expects a fork, and the honest nodes' disks hold none".into(),
            };
        }
        Err(error) => {
            return PropertyResult {
                name,
                passed: false,
                detail: format!("the fork's certificates cannot be judged: {error}"),
            };
        }
    };
    let Ok(validators) = genesis.validator_set() else {
        return PropertyResult {
            name,
            passed: false,
            detail: "the genesis has no valid validator set".into(),
        };
    };
    let conviction = &fork.conviction;
    let named: Vec<(ValidatorIndex, &str)> = conviction
        .convicted
        .iter()
        .map(|(index, _)| (*index, "double-signed"))
        .chain(conviction.suspects.iter().map(|index| (*index, "suspect")))
        .collect();
    let mut shown = Vec::new();
    let mut honest_named = Vec::new();
    let mut convicted_stake = 0u64;
    for (index, how) in &named {
        let stake = validators.get(*index).map_or(0, |v| v.stake);
        let node = node_of(*index);
        let label = match node {
            Some(node) => format!("n{node} ({how}, stake {stake})"),
            None => format!("validator {index} ({how}, stake {stake})"),
        };
        if node.is_none_or(|node| !byzantine(node)) {
            honest_named.push(label.clone());
        }
        if *how == "double-signed" {
            convicted_stake += stake;
        }
        shown.push(label);
    }
    let third = validators.is_one_third(convicted_stake);
    let [(first_node, first_hash), (second_node, second_hash)] = &fork.sides;
    let at = format!(
        "fork at height {}: n{first_node} committed {}, n{second_node} committed {}",
        fork.height,
        &first_hash.to_hex()[..12],
        &second_hash.to_hex()[..12]
    );
    let passed = honest_named.is_empty() && third && !conviction.convicted.is_empty();
    PropertyResult {
        name,
        passed,
        detail: if passed {
            format!(
                "{at}; its two certificates convict {} — all Byzantine, {convicted_stake} of {} stake (more than a third), with duplicate-vote evidence anyone can verify",
                shown.join(", "),
                validators.total_stake()
            )
        } else if !honest_named.is_empty() {
            format!(
                "{at}; honest validators named as culprits: {} (named: {})",
                honest_named.join(", "),
                shown.join(", ")
            )
        } else {
            format!(
                "{at}; the double-signers proven hold only {convicted_stake} of {} stake, not more than a third (named: {})",
                validators.total_stake(),
                shown.join(", ")
            )
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{assert_fails, assert_passes};
    use hm_env::mem::SeededEntropy;
    use hm_kernel::block::{Evidence, SignedVote, Vote, VoteKind};
    use hm_kernel::genesis::ProofParams;
    use hm_wire::SigningKey;

    /// Four validators of stake 10; validator index → node index is the
    /// identity here.
    fn committee() -> (Vec<SigningKey>, Genesis) {
        let entropy = SeededEntropy::new(3, b"fork-test");
        let keys: Vec<SigningKey> = (0..4).map(|_| SigningKey::generate(&entropy)).collect();
        let members: Vec<_> = keys.iter().map(|key| (key.verifying_key(), 10)).collect();
        let (genesis, _) =
            Genesis::with_plots("fork-test", 0, &members, ProofParams::for_simulation())
                .expect("small plots");
        (keys, genesis)
    }

    /// A duplicate precommit by validator `index` (the key at its position
    /// in the validator set).
    fn evidence(keys: &[SigningKey], genesis: &Genesis, index: ValidatorIndex) -> Evidence {
        let set = genesis.validator_set().expect("set");
        let id = set.get(index).expect("member").id;
        let key = keys
            .iter()
            .find(|key| key.verifying_key().fingerprint() == id)
            .expect("its key");
        let entropy = SeededEntropy::new(4, b"fork-test-votes");
        let vote = |block: u8| {
            SignedVote::sign(
                &genesis.chain_id(),
                Vote {
                    kind: VoteKind::Precommit,
                    height: 5,
                    round: 0,
                    block_hash: Some(Hash([block; 32])),
                    validator: index,
                },
                key,
                &entropy,
            )
        };
        Evidence::DuplicateVote {
            first: vote(1),
            second: vote(2),
        }
    }

    fn fork(convicted: Vec<(ValidatorIndex, Evidence)>, suspects: Vec<ValidatorIndex>) -> Fork {
        let stake = 10 * (convicted.len() + suspects.len()) as u64;
        Fork {
            height: 5,
            sides: [(0, Hash([1; 32])), (3, Hash([2; 32]))],
            conviction: Conviction {
                convicted,
                suspects,
                stake,
            },
        }
    }

    fn judge(
        fork: Result<Option<Fork>, String>,
        genesis: &Genesis,
        byzantine: &[usize],
    ) -> PropertyResult {
        accountable_property(&fork, genesis, &|index| Some(usize::from(index)), &|node| {
            byzantine.contains(&node)
        })
    }

    #[test]
    fn a_fork_convicting_only_byzantine_validators_with_over_a_third_passes() {
        let (keys, genesis) = committee();
        let convicted = vec![
            (1, evidence(&keys, &genesis, 1)),
            (2, evidence(&keys, &genesis, 2)),
        ];
        let verdict = judge(Ok(Some(fork(convicted, Vec::new()))), &genesis, &[1, 2]);
        assert_passes(&verdict);
        assert!(verdict.detail.contains("n1") && verdict.detail.contains("n2"));
    }

    #[test]
    fn an_honest_validator_named_fails() {
        let (keys, genesis) = committee();
        let convicted = vec![
            (1, evidence(&keys, &genesis, 1)),
            (2, evidence(&keys, &genesis, 2)),
        ];
        let verdict = judge(Ok(Some(fork(convicted, Vec::new()))), &genesis, &[1]);
        assert_fails(&verdict, "honest validators named as culprits: n2");
    }

    #[test]
    fn proven_double_signers_under_a_third_fail() {
        let (keys, genesis) = committee();
        // One proven (10 of 40), the others only suspects (different rounds).
        let verdict = judge(
            Ok(Some(fork(vec![(1, evidence(&keys, &genesis, 1))], vec![2]))),
            &genesis,
            &[1, 2],
        );
        assert_fails(&verdict, "not more than a third");
    }

    #[test]
    fn no_fork_and_an_unreadable_fork_fail() {
        let (_, genesis) = committee();
        assert_fails(&judge(Ok(None), &genesis, &[]), "hold none");
        assert_fails(
            &judge(Err("height 5: bad certificate".into()), &genesis, &[]),
            "cannot be judged",
        );
    }

    #[test]
    fn agreeing_honest_disks_hold_no_fork() {
        let (_, genesis) = committee();
        let disks = [
            MemDisk::new(hm_node::COLUMN_FAMILIES),
            MemDisk::new(hm_node::COLUMN_FAMILIES),
        ];
        let views: Vec<NodeDisk<'_>> = disks
            .iter()
            .enumerate()
            .map(|(index, disk)| NodeDisk { index, disk })
            .collect();
        assert!(matches!(find_fork(&genesis, &views), Ok(None)));
    }
}
