//! The chain in a scenario: genesis and validator identities made from the
//! seed, each node's chain configuration, and the chain's checkers —
//! agreement (no two honest nodes commit different blocks at a height),
//! durability (a node that restarts still holds, unchanged, every block
//! any of its earlier lives committed), validity (every committed block's
//! certificate and four proofs verify, and its state root is what
//! executing it gives), and liveness (commits resume after the last fault,
//! every honest node reaches a height).

use std::net::SocketAddrV6;
use std::sync::Arc;

use std::collections::BTreeSet;

use hm_env::mem::{MemDisk, SeededEntropy};
use hm_faults::chain::ChainFault;
use hm_kernel::app::{Application, BlockContext};
use hm_kernel::chain::ChainStore;
use hm_kernel::genesis::{Genesis, ProofParams};
use hm_kernel::proof::{self, ParentInfo, ProofContext};
use hm_kernel::replica::ReplicaConfig;
use hm_node::app::{NodeApp, SharedTrust};
use hm_node::conduct::Conduct;
use hm_node::{ChainConfig, ChainStatus, StatusHandle};
use hm_wire::{Hash, SigningKey};

use crate::net::{NODE_PORT, node_ip};
use crate::outcome::{NOT_EXERCISED, PropertyResult};
use crate::scenario::{ChainScenario, DEFAULT_STAKE, Scenario};

/// Violations of a property listed in the report (the first ones tell the
/// story; the rest are counted).
const VIOLATIONS_SHOWN_MAX: usize = 8;

/// What every node of a chain scenario shares.
pub struct ChainSetup {
    pub genesis: Genesis,
    /// Validator `i`'s identity key (node `i`).
    pub keys: Vec<SigningKey>,
    pub validator_addrs: Vec<(Hash, SocketAddrV6)>,
}

impl ChainSetup {
    /// Keys, plots and genesis from the seed: the same seed gives the same
    /// chain id, so runs replay.
    pub fn new(scenario: &Scenario, chain: &ChainScenario, seed: u64) -> ChainSetup {
        let entropy = SeededEntropy::new(seed, b"sim-validator-keys");
        let params = ProofParams::for_simulation();
        let keys: Vec<SigningKey> = (0..chain.validators)
            .map(|_| SigningKey::generate(&entropy))
            .collect();
        let members: Vec<_> = keys
            .iter()
            .enumerate()
            .map(|(index, key)| {
                let stake = chain.stakes.get(index).copied().unwrap_or(DEFAULT_STAKE);
                (key.verifying_key(), stake)
            })
            .collect();
        let name: String = scenario.name.chars().take(64).collect();
        let (genesis, _) = Genesis::with_plots(&name, 0, &members, params)
            .expect("the simulation plot size is within limits");
        let validator_addrs = keys
            .iter()
            .enumerate()
            .map(|(index, key)| {
                (
                    key.verifying_key().fingerprint(),
                    SocketAddrV6::new(node_ip(index as u32), NODE_PORT, 0, 0),
                )
            })
            .collect();
        ChainSetup {
            genesis,
            keys,
            validator_addrs,
        }
    }

    /// The Byzantine behaviour of node `index`, if it is a Byzantine
    /// validator (the last `byzantine_validators` validators).
    pub fn fault_of(chain: &ChainScenario, index: u32) -> Option<ChainFault> {
        let first = chain.validators - chain.byzantine_validators;
        if index < first || index >= chain.validators {
            return None;
        }
        let behaviours = &chain.byzantine_faults;
        behaviours
            .get((index - first) as usize % behaviours.len().max(1))
            .copied()
    }

    /// Node `index`'s TrustChain settings, when the scenario has `[trust]`.
    pub fn trust_settings(
        &self,
        scenario: &Scenario,
        index: u32,
    ) -> Option<hm_node::trust::TrustSettings> {
        let trust = scenario.trust.as_ref()?;
        // Validated when the scenario was loaded.
        let zone = hm_trustchain::name::DnsName::parse(&trust.zone).ok()?;
        let mut settings = hm_node::trust::TrustSettings::new(zone);
        if trust.register_names {
            settings.name =
                hm_trustchain::name::DnsName::parse(&format!("n{index}.{}", trust.zone)).ok();
        }
        settings.certificate_validity_ms = (trust.certificate_validity_s * 1000.0) as u64;
        settings.renew_at_per_mille = (trust.renew_at * 1000.0) as u64;
        settings.chain_live_window_ms = (trust.chain_live_window_s * 1000.0) as u64;
        let presenters = Self::forged_presenters(scenario);
        if presenters.contains(&index) {
            // Claim the name of an honest follower (the seeds and validators
            // come first, then the victims).
            let validators = scenario.chain.as_ref().map_or(0, |chain| chain.validators);
            let victim = scenario.nodes.seeds.max(validators) + (index - presenters.start);
            settings.name =
                hm_trustchain::name::DnsName::parse(&format!("n{victim}.{}", trust.zone)).ok();
        }
        for seed in 0..scenario.nodes.seeds {
            if let Ok(name) =
                hm_trustchain::name::DnsName::parse(&format!("seed{seed}.{}", trust.zone))
            {
                settings.traditional.insert(name, vec![node_ip(seed)]);
            }
        }
        Some(settings)
    }

    /// Node `index`'s conduct: honest, or the scenario's misbehaviour for
    /// it, built from `hm-faults` and injected into the honest node.
    pub fn conduct(&self, scenario: &Scenario, index: u32) -> Conduct {
        let mut conduct = Conduct::default();
        if let Some(chain) = &scenario.chain
            && let Some(fault) = Self::fault_of(chain, index)
        {
            // Colluders: the validators with the same coordinated fault.
            let coordinated = matches!(fault, ChainFault::Split | ChainFault::DoubleSign);
            let colluders: BTreeSet<Hash> = (0..chain.validators)
                .filter(|other| coordinated && Self::fault_of(chain, *other) == Some(fault))
                .filter_map(|other| self.keys.get(other as usize))
                .map(|key| key.verifying_key().fingerprint())
                .collect();
            conduct.chain = Some(hm_faults::chain::chain_conduct(fault, colluders));
        }
        if let Some(fault) = Self::authority_fault_of(scenario, index) {
            conduct.authority = Some(hm_faults::trust::authority_conduct(fault));
        }
        if let Some(forged) = self.forged_presentation(scenario, index) {
            conduct.presentation = Arc::new(forged);
        }
        if let Some(lie) = scenario.lie_of(index) {
            conduct.api = Some(Arc::new(move || {
                Box::new(hm_faults::liar::Liar::new(lie)) as Box<dyn hm_node::conduct::ApiConduct>
            }));
        }
        conduct
    }

    /// A forged presenter's plan: ask only the forging authority, after the
    /// scenario's `forge_after_s`, and present what it issues at once.
    fn forged_presentation(
        &self,
        scenario: &Scenario,
        index: u32,
    ) -> Option<hm_faults::trust::ForgedPresentation> {
        let trust = scenario.trust.as_ref()?;
        if !Self::forged_presenters(scenario).contains(&index) {
            return None;
        }
        let validators = scenario.chain.as_ref().map_or(0, |chain| chain.validators);
        let forger = (0..validators).find(|validator| {
            Self::authority_fault_of(scenario, *validator)
                == Some(hm_faults::trust::AuthorityFault::Forge)
        })?;
        Some(hm_faults::trust::ForgedPresentation {
            authority: *self.validator_addrs.get(forger as usize)?,
            after_ms: (trust.forge_after_s * 1000.0) as u64,
        })
    }

    /// The Byzantine authority behaviour of node `index`, if any.
    pub fn authority_fault_of(
        scenario: &Scenario,
        index: u32,
    ) -> Option<hm_faults::trust::AuthorityFault> {
        let trust = scenario.trust.as_ref()?;
        let validators = scenario.chain.as_ref()?.validators;
        let first = validators - trust.byzantine_authorities;
        if index < first || index >= validators {
            return None;
        }
        let faults = &trust.authority_faults;
        faults
            .get((index - first) as usize % faults.len().max(1))
            .copied()
    }

    /// The first node of the forged presenters (they run to just before the
    /// identity forgers and garbage senders).
    pub fn forged_presenters(scenario: &Scenario) -> std::ops::Range<u32> {
        let n = scenario.nodes.count;
        let end = n - scenario.byzantine.garbage_senders - scenario.byzantine.identity_forgers;
        let count = scenario
            .trust
            .as_ref()
            .map_or(0, |trust| trust.forged_presenters);
        end - count..end
    }

    /// The DNS zone of the scenario's chain.
    pub fn zone(scenario: &Scenario) -> hm_trustchain::name::DnsName {
        let text = scenario
            .trust
            .as_ref()
            .map_or(hm_node::DEFAULT_ZONE, |trust| trust.zone.as_str());
        hm_trustchain::name::DnsName::parse(text)
            .or_else(|_| hm_trustchain::name::DnsName::parse(hm_node::DEFAULT_ZONE))
            .expect("the default zone is a valid name")
    }

    /// Node `index`'s chain configuration.
    pub fn config(&self, chain: &ChainScenario, index: u32) -> ChainConfig {
        let mut replica = ReplicaConfig::default();
        let consensus = &mut replica.consensus;
        consensus.propose_timeout_base_ms = chain.propose_timeout_ms;
        consensus.propose_timeout_delta_ms = chain.propose_timeout_ms / 2;
        consensus.prevote_timeout_base_ms = chain.vote_timeout_ms;
        consensus.prevote_timeout_delta_ms = chain.vote_timeout_ms / 2;
        consensus.precommit_timeout_base_ms = chain.vote_timeout_ms;
        consensus.precommit_timeout_delta_ms = chain.vote_timeout_ms / 2;
        replica.block_transactions_max = chain.block_transactions_max;
        replica.block_interval_ms = chain.block_interval_ms;
        // No client waits for receipts in the simulator; a thousand nodes
        // would each keep an index of every transaction.
        replica.committed_index_max = 0;
        let mut config = ChainConfig::new(self.genesis.clone(), self.validator_addrs.clone());
        config.replica = replica;
        config.sync_peers_max = chain.sync_peers;
        if index < chain.workload_nodes {
            config.workload_interval_ms = chain.workload_interval_ms;
        }
        config
    }
}

/// One node as the chain checkers see it.
pub struct ChainView<'a> {
    pub index: usize,
    pub status: &'a StatusHandle,
    pub alive: bool,
    pub honest: bool,
    /// A light node: it commits nothing (its committed list stays empty,
    /// its height 0), so agreement, durability and liveness skip it; the
    /// light checker judges what it trusted.
    pub light: bool,
}

/// One node's chain as the checkers saw it, over all its lives.
#[derive(Default)]
struct NodeChain {
    /// The life observed last (`ChainStatus::boots`; 0: none yet).
    boots: u32,
    /// The block it committed at each height (index height - 1), as first
    /// seen in any of its lives: as long as the longest list it published,
    /// so at most `hm_node::chain::STATUS_COMMITTED_MAX`.
    history: Vec<Hash>,
    /// How much of the current life's committed list has been judged.
    judged: usize,
}

/// A property's violations: the first few in full, the rest counted.
#[derive(Default)]
struct Violations {
    shown: Vec<String>,
    total: usize,
}

impl Violations {
    fn push(&mut self, describe: impl FnOnce() -> String) {
        self.total += 1;
        if self.shown.len() < VIOLATIONS_SHOWN_MAX {
            self.shown.push(describe());
        }
    }

    fn is_empty(&self) -> bool {
        self.total == 0
    }

    fn detail(&self) -> String {
        let mut detail = self.shown.join("; ");
        if self.total > self.shown.len() {
            detail.push_str(&format!("; and {} more", self.total - self.shown.len()));
        }
        detail
    }
}

/// Heights `from..=to` as a reader wants them: "12" or "12..14".
fn heights(from: u64, to: u64) -> String {
    if from == to {
        format!("height {from}")
    } else {
        format!("heights {from}..{to}")
    }
}

/// Watches the chain while the run goes on.
#[derive(Default)]
pub struct ChainChecker {
    /// The block hash at each height, as first committed by an honest node.
    canonical: Vec<Hash>,
    /// Per node, what it committed over its lives.
    nodes: Vec<NodeChain>,
    /// Two honest nodes committed different blocks at a height.
    violations: Violations,
    /// An honest node came back from a restart without a block it had
    /// committed, or with another block at that height.
    durability: Violations,
    /// Restarts of honest nodes that had committed blocks before them.
    restarts_judged: u64,
    /// The highest height any honest node held when the faults stopped.
    height_at_quiet: Option<u64>,
    /// When every live honest node had committed above it.
    resumed_at_ms: Option<u64>,
    /// Lowest height among live honest nodes at the last observation.
    min_height: u64,
    max_height: u64,
}

impl ChainChecker {
    pub fn observe<'a>(
        &mut self,
        nodes: impl Iterator<Item = ChainView<'a>>,
        now_ms: u64,
        quiet: bool,
    ) {
        let mut min_height = u64::MAX;
        let mut max_height = 0;
        let mut all_above = true;
        let mut live_honest = 0;
        for view in nodes {
            if self.nodes.len() <= view.index {
                self.nodes.resize_with(view.index + 1, NodeChain::default);
            }
            if !view.honest || view.light {
                continue;
            }
            let height = view
                .status
                .with(|status| self.judge(view.index, &status.chain));
            max_height = max_height.max(height);
            if view.alive {
                live_honest += 1;
                min_height = min_height.min(height);
                if let Some(before) = self.height_at_quiet
                    && height <= before
                {
                    all_above = false;
                }
            }
        }
        self.min_height = if live_honest == 0 { 0 } else { min_height };
        self.max_height = max_height;
        if quiet && self.height_at_quiet.is_none() {
            self.height_at_quiet = Some(max_height);
            return;
        }
        if self.height_at_quiet.is_some() && all_above && self.resumed_at_ms.is_none() {
            self.resumed_at_ms = Some(now_ms);
        }
    }

    /// Judges honest node `index`'s committed list as its status shows it
    /// now. A new life (its chain service started again) must have found
    /// on its disk every block its earlier lives committed, unchanged: the
    /// store syncs each block before the node commits it. Every block not
    /// judged before must be the one other honest nodes committed at that
    /// height. Returns the node's height.
    fn judge(&mut self, index: usize, chain: &ChainStatus) -> u64 {
        if chain.boots == 0 {
            // No chain service has started in this process yet (a real
            // node polled right after its start): no life to judge.
            return 0;
        }
        let node = &mut self.nodes[index];
        let committed = &chain.committed;
        if chain.boots != node.boots {
            let had = node.history.len() as u64;
            if node.boots != 0 && had > 0 {
                self.restarts_judged += 1;
                if chain.boot_height < had {
                    self.durability.push(|| {
                        format!(
                            "n{index} lost committed {} in a restart (its disk held {})",
                            heights(chain.boot_height + 1, had),
                            chain.boot_height
                        )
                    });
                }
            }
            // The part of the new list that came from the disk and that an
            // earlier life had committed too.
            let held = usize::try_from(chain.boot_height)
                .unwrap_or(usize::MAX)
                .min(node.history.len())
                .min(committed.len());
            if let Some(at) = (0..held).find(|at| committed[*at] != node.history[*at]) {
                self.durability.push(|| {
                    format!(
                        "n{index}'s block at height {} changed in a restart: was {}, now {}",
                        at + 1,
                        node.history[at],
                        committed[at]
                    )
                });
            }
            node.boots = chain.boots;
            node.judged = held;
        }
        let from = node.judged.min(committed.len());
        for (offset, hash) in committed[from..].iter().enumerate() {
            let at = from + offset;
            match node.history.get(at) {
                Some(before) if before != hash => self.durability.push(|| {
                    format!(
                        "n{index} committed {hash} at height {} after a restart, {before} before it",
                        at + 1
                    )
                }),
                Some(_) => {}
                None => {
                    debug_assert_eq!(node.history.len(), at);
                    node.history.push(*hash);
                }
            }
            match self.canonical.get(at) {
                Some(canonical) if canonical != hash => self.violations.push(|| {
                    format!(
                        "n{index} committed {} at height {}, others {}",
                        &hash.to_hex()[..12],
                        at + 1,
                        &canonical.to_hex()[..12]
                    )
                }),
                Some(_) => {}
                None => {
                    debug_assert_eq!(self.canonical.len(), at);
                    self.canonical.push(*hash);
                }
            }
        }
        node.judged = committed.len();
        committed.len() as u64
    }

    /// Liveness is decided (every live honest node committed after the
    /// faults and reached the minimum height).
    pub fn settled(&self, scenario: &Scenario) -> bool {
        self.resumed_at_ms.is_some() && self.min_height >= scenario.properties.chain_min_height
    }

    /// When every live honest node had committed above the height held
    /// when the faults stopped.
    pub fn resumed_at_ms(&self) -> Option<u64> {
        self.resumed_at_ms
    }

    pub fn max_height(&self) -> u64 {
        self.max_height
    }

    pub fn min_height(&self) -> u64 {
        self.min_height
    }

    pub fn properties(
        &self,
        scenario: &Scenario,
        faults_end_ms: u64,
        audit: &Result<Audit, String>,
        equivocators: &[Hash],
    ) -> Vec<PropertyResult> {
        let evidence = match audit {
            Ok(audit) => {
                let missing: Vec<String> = equivocators
                    .iter()
                    .filter(|id| !audit.offenders.contains(id))
                    .map(|id| id.to_hex()[..12].to_string())
                    .collect();
                (
                    missing.is_empty(),
                    if missing.is_empty() {
                        format!(
                            "all {} equivocating validators have evidence on chain ({} offenders recorded)",
                            equivocators.len(),
                            audit.offenders.len()
                        )
                    } else {
                        format!(
                            "no evidence on chain against equivocators {}",
                            missing.join(", ")
                        )
                    },
                )
            }
            Err(error) => (false, format!("chain not auditable: {error}")),
        };
        let validity = audit
            .as_ref()
            .map(|audit| audit.blocks)
            .map_err(Clone::clone);
        let with_equivocators = !equivocators.is_empty();
        let bound_s = scenario.properties.chain_resumes_within_s;
        let resumed_after_s = self
            .resumed_at_ms
            .map(|at| at.saturating_sub(faults_end_ms) as f64 / 1000.0);
        let resumed_in_time = resumed_after_s.is_some_and(|after| after <= bound_s);
        let mut properties = vec![PropertyResult {
            name: "chain-agreement".into(),
            passed: self.violations.is_empty() && !self.canonical.is_empty(),
            detail: if !self.violations.is_empty() {
                self.violations.detail()
            } else if self.canonical.is_empty() {
                format!(
                    "{NOT_EXERCISED}: no honest node committed a block, so agreement judged nothing"
                )
            } else {
                format!(
                    "every honest node committed the same block at each of {} heights",
                    self.canonical.len()
                )
            },
        }];
        // Judged only where nodes come back (a violation always shows).
        if scenario.restarts_nodes() || !self.durability.is_empty() {
            properties.push(self.durable_property());
        }
        properties.extend([
            PropertyResult {
                name: "chain-validity".into(),
                passed: validity.as_ref().is_ok_and(|blocks| *blocks > 0),
                detail: match validity {
                    Ok(0) => format!("{NOT_EXERCISED}: the audited node holds no committed block"),
                    Ok(blocks) => format!(
                        "all {blocks} committed blocks carry a valid certificate, four valid proofs and their executed state root"
                    ),
                    Err(error) => error,
                },
            },
            PropertyResult {
                name: "chain-liveness".into(),
                passed: resumed_in_time && self.min_height >= scenario.properties.chain_min_height,
                detail: match resumed_after_s {
                    Some(after) => format!(
                        "commits resumed {after:.1} s after the last fault (bound {bound_s} s); lowest live honest height {} (need {}), highest {}",
                        self.min_height, scenario.properties.chain_min_height, self.max_height
                    ),
                    None => format!(
                        "commits did not resume on every live honest node within {bound_s} s of the last fault; heights {}..{}",
                        self.min_height, self.max_height
                    ),
                },
            },
        ]);
        if with_equivocators {
            properties.push(PropertyResult {
                name: "chain-evidence".into(),
                passed: evidence.0,
                detail: evidence.1,
            });
        }
        properties
    }

    /// `chain-durable`: every honest node that restarted came back with
    /// every block it had committed, unchanged.
    fn durable_property(&self) -> PropertyResult {
        PropertyResult {
            name: "chain-durable".into(),
            passed: self.durability.is_empty() && self.restarts_judged > 0,
            detail: if !self.durability.is_empty() {
                self.durability.detail()
            } else if self.restarts_judged == 0 {
                format!(
                    "{NOT_EXERCISED}: no honest node that had committed a block was seen to restart, so durability judged nothing"
                )
            } else {
                format!(
                    "over {} restart{} of honest nodes that had committed blocks, each came back with every block it had committed, unchanged",
                    self.restarts_judged,
                    if self.restarts_judged == 1 { "" } else { "s" }
                )
            },
        }
    }
}

/// Re-verifies every block on `disk` as an outside auditor would: the
/// certificate, the four proofs against the genesis, the links, and the
/// state root from replaying execution. Returns how many blocks it checked.
pub fn audit_chain(
    genesis: &Genesis,
    zone: &hm_trustchain::name::DnsName,
    disk: &MemDisk,
    up_to: Option<u64>,
) -> Result<Audit, String> {
    let chain_id = genesis.chain_id();
    let validators = genesis
        .validator_set()
        .map_err(|error| format!("genesis: {error}"))?;
    let mut audit = Audit::default();
    if !ChainStore::exists(disk).map_err(|error| error.to_string())? {
        return Ok(audit);
    }
    let store = ChainStore::open(disk.clone(), chain_id).map_err(|error| error.to_string())?;
    let trust = SharedTrust::new(
        hm_node::app::trust_app_for(genesis, zone.clone()).map_err(|error| error.to_string())?,
    );
    let mut app = NodeApp::new(trust.clone());
    let mut parent = ParentInfo::genesis(genesis);
    let last = up_to.map_or(store.height(), |up_to| up_to.min(store.height()));
    for height in 1..=last {
        let block = store
            .block(height)
            .map_err(|error| format!("block {height}: {error}"))?
            .ok_or_else(|| format!("block {height} is missing below the head"))?;
        block
            .verify_commit(&chain_id, &validators)
            .map_err(|error| format!("block {height}: {error}"))?;
        if block.header.previous_hash != parent.hash {
            return Err(format!("block {height} does not link to its parent"));
        }
        let execution = app.execute_block(
            BlockContext::new(height, block.header.timestamp_ms),
            &block.body.transactions,
        );
        if execution.log_head != block.header.log_head {
            return Err(format!(
                "block {height}: its log head is not what executing it gives"
            ));
        }
        let ctx = ProofContext {
            params: &genesis.proof,
            validators: &validators,
            parent,
            space_registry: genesis,
            // Certified history: the drift check was the committers' job.
            local_now_ms: u64::MAX / 2,
            recomputed_state_root: Some(execution.state_root),
            parallelism: 1,
        };
        let result = proof::validate(&block.header, &block.proof, &ctx);
        if !result.is_valid() {
            return Err(format!("block {height}: {result}"));
        }
        app.commit(height, &execution.updates)
            .map_err(|error| format!("block {height}: {error}"))?;
        audit.headers.push(AuditedHeader {
            hash: block.header.hash(),
            state_root: block.header.state_root,
        });
        for evidence in &block.body.evidence {
            if let Some(validator) = validators.get(evidence.validator()) {
                audit.offenders.insert(validator.id);
            }
        }
        parent = ParentInfo::of(&block.header);
    }
    debug_assert_eq!(audit.headers.len() as u64, last);
    audit.blocks = last;
    audit.trust = Some(trust);
    Ok(audit)
}

/// What auditing one node's chain found.
#[derive(Default)]
pub struct Audit {
    pub blocks: u64,
    /// TrustChain's state rebuilt from the audited blocks.
    pub trust: Option<SharedTrust>,
    /// Validators with evidence committed against them.
    pub offenders: BTreeSet<Hash>,
    /// Each audited block's header hash and state root, by height (index
    /// height - 1): what a light client's trusted headers and proven
    /// answers are judged against. 64 bytes per block.
    pub headers: Vec<AuditedHeader>,
}

impl Audit {
    /// The audited header at `height` (none at 0, nor above the audit).
    pub fn header(&self, height: u64) -> Option<&AuditedHeader> {
        let index = usize::try_from(height.checked_sub(1)?).ok()?;
        self.headers.get(index)
    }
}

/// One audited block's header, as a light client knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditedHeader {
    /// The header hash (the block hash).
    pub hash: Hash,
    /// The application's state root after the block.
    pub state_root: Hash,
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use hm_env::Disk;
    use hm_kernel::chain::{BLOCK_COMMITS_CF, BLOCKS_CF};
    use hm_kernel::consensus::Signer;
    use hm_kernel::proof::{GENESIS_PLOT_NONCE, SpacePlot};
    use hm_kernel::replica::{Now, Replica, ReplicaOutput, ValidatorIdentity};
    use hm_trustchain::name::DnsName;

    use super::*;
    use crate::testkit::{assert_fails, assert_passes, one_validator_chain, property};

    /// A crash-and-restart schedule, so `chain-durable` is judged.
    const RESTARTS: &str = r#"
        [[faults]]
        kind = "crash"
        at_s = 10
        fraction = 0.2
        restart_after_s = 5
    "#;

    /// Commits must resume within 30 s of the last fault, up to height 6.
    const LIVENESS: &str = r#"
        [properties]
        chain_resumes_within_s = 30
        chain_min_height = 6
    "#;

    fn scenario(text: &str) -> Scenario {
        Scenario::parse("test.toml", text).expect("a valid scenario")
    }

    /// A block hash that reads as its number.
    fn block(n: u8) -> Hash {
        Hash([n; 32])
    }

    /// The node's current life, its `boots`-th, found `boot_height` blocks
    /// on its disk and has committed `committed` so far.
    fn life(status: &StatusHandle, boots: u32, boot_height: u64, committed: &[u8]) {
        status.update(|status| {
            let chain = &mut status.chain;
            chain.boots = boots;
            chain.boot_height = boot_height;
            chain.committed = committed.iter().copied().map(block).collect();
            chain.height = committed.len() as u64;
        });
    }

    /// A first life for each node, with these blocks committed.
    fn nodes<const N: usize>(committed: [&[u8]; N]) -> [StatusHandle; N] {
        committed.map(|committed| {
            let status = StatusHandle::default();
            life(&status, 1, 0, committed);
            status
        })
    }

    /// Every node `(status, honest)`, alive, observed at `now_ms`.
    fn observe(checker: &mut ChainChecker, nodes: &[(&StatusHandle, bool)], now_ms: u64) {
        let quiet = now_ms >= FAULTS_END_MS;
        let views = nodes
            .iter()
            .enumerate()
            .map(|(index, (status, honest))| ChainView {
                index,
                status,
                alive: true,
                honest: *honest,
                light: false,
            });
        checker.observe(views, now_ms, quiet);
    }

    /// When the crafted runs' last fault ends.
    const FAULTS_END_MS: u64 = 10_000;

    fn audited(blocks: u64) -> Result<Audit, String> {
        Ok(Audit {
            blocks,
            ..Audit::default()
        })
    }

    fn verdict(checker: &ChainChecker, scenario_text: &str, name: &str) -> PropertyResult {
        let properties =
            checker.properties(&scenario(scenario_text), FAULTS_END_MS, &audited(6), &[]);
        property(&properties, name)
    }

    #[test]
    fn no_property_passes_over_an_empty_history() {
        let checker = ChainChecker::default();
        let equivocator = [block(9)];
        let properties = checker.properties(&scenario(RESTARTS), 0, &audited(0), &equivocator);
        for name in ["chain-agreement", "chain-durable", "chain-validity"] {
            assert_fails(&property(&properties, name), NOT_EXERCISED);
        }
        assert_fails(&property(&properties, "chain-liveness"), "did not resume");
        assert_fails(
            &property(&properties, "chain-evidence"),
            "no evidence on chain",
        );
    }

    #[test]
    fn agreement_fails_when_two_honest_nodes_commit_different_blocks_at_a_height() {
        let [a, b] = nodes([&[1, 2, 3], &[1, 2]]);
        let mut checker = ChainChecker::default();
        observe(&mut checker, &[(&a, true), (&b, true)], 1_000);
        assert_passes(&verdict(&checker, "", "chain-agreement"));
        // A second later n1 has committed a block of its own at height 3.
        life(&b, 1, 0, &[1, 2, 7]);
        observe(&mut checker, &[(&a, true), (&b, true)], 2_000);
        assert_fails(
            &verdict(&checker, "", "chain-agreement"),
            &format!(
                "n1 committed {} at height 3, others {}",
                &block(7).to_hex()[..12],
                &block(3).to_hex()[..12]
            ),
        );
    }

    #[test]
    fn a_byzantine_node_committing_another_block_is_not_an_agreement_violation() {
        let [honest, byzantine] = nodes([&[1, 2, 3], &[1, 8, 9]]);
        let mut checker = ChainChecker::default();
        observe(&mut checker, &[(&honest, true), (&byzantine, false)], 1_000);
        assert_passes(&verdict(&checker, "", "chain-agreement"));
    }

    #[test]
    fn a_restart_that_lost_committed_heights_fails_durability() {
        let [node] = nodes([&[1, 2, 3, 4, 5]]);
        let mut checker = ChainChecker::default();
        observe(&mut checker, &[(&node, true)], 1_000);
        // Killed: its status keeps what it had committed.
        node.mark_down();
        observe(&mut checker, &[(&node, true)], 2_000);
        // The next life found only 3 blocks on its disk, and had synced the
        // same two again from its peers by the time the checker looked.
        life(&node, 2, 3, &[1, 2, 3, 4, 5, 6]);
        observe(&mut checker, &[(&node, true)], 3_000);
        let durable = verdict(&checker, RESTARTS, "chain-durable");
        assert_fails(
            &durable,
            "n0 lost committed heights 4..5 in a restart (its disk held 3)",
        );
        // Agreement alone does not see it: the blocks are the same.
        assert_passes(&verdict(&checker, RESTARTS, "chain-agreement"));
    }

    #[test]
    fn a_block_replaced_in_a_restart_fails_durability() {
        let [node] = nodes([&[1, 2, 3]]);
        let mut checker = ChainChecker::default();
        observe(&mut checker, &[(&node, true)], 1_000);
        life(&node, 2, 3, &[1, 7, 3]);
        observe(&mut checker, &[(&node, true)], 2_000);
        assert_fails(
            &verdict(&checker, RESTARTS, "chain-durable"),
            &format!(
                "n0's block at height 2 changed in a restart: was {}, now {}",
                block(2),
                block(7)
            ),
        );
    }

    #[test]
    fn a_lost_block_committed_again_differently_fails_durability() {
        let [node] = nodes([&[1, 2, 3]]);
        let mut checker = ChainChecker::default();
        observe(&mut checker, &[(&node, true)], 1_000);
        life(&node, 2, 1, &[1, 2, 8]);
        observe(&mut checker, &[(&node, true)], 2_000);
        let durable = verdict(&checker, RESTARTS, "chain-durable");
        assert_fails(&durable, "n0 lost committed heights 2..3 in a restart");
        assert_fails(
            &durable,
            &format!(
                "n0 committed {} at height 3 after a restart, {} before it",
                block(8),
                block(3)
            ),
        );
    }

    #[test]
    fn a_restart_that_kept_every_block_passes_durability() {
        let [node, byzantine] = nodes([&[1, 2, 3], &[1, 2, 3]]);
        let mut checker = ChainChecker::default();
        observe(&mut checker, &[(&node, true), (&byzantine, false)], 1_000);
        life(&node, 2, 3, &[1, 2, 3, 4]);
        // A Byzantine node's disk is its own business.
        life(&byzantine, 2, 0, &[]);
        observe(&mut checker, &[(&node, true), (&byzantine, false)], 2_000);
        let durable = verdict(&checker, RESTARTS, "chain-durable");
        assert_passes(&durable);
        assert!(
            durable.detail.starts_with("over 1 restart of"),
            "{}",
            durable.detail
        );
        // Without restarts in the schedule the property is not reported.
        let properties = checker.properties(&scenario(""), 0, &audited(3), &[]);
        assert!(properties.iter().all(|p| p.name != "chain-durable"));
    }

    #[test]
    fn a_process_whose_chain_service_has_not_started_is_no_life() {
        let [node] = nodes([&[1, 2, 3]]);
        let mut checker = ChainChecker::default();
        observe(&mut checker, &[(&node, true)], 1_000);
        // A real node's new process, polled before its chain service
        // started: its status shows no life and no block yet.
        life(&node, 0, 0, &[]);
        observe(&mut checker, &[(&node, true)], 2_000);
        life(&node, 2, 3, &[1, 2, 3]);
        observe(&mut checker, &[(&node, true)], 3_000);
        assert_passes(&verdict(&checker, RESTARTS, "chain-durable"));
    }

    #[test]
    fn a_restart_of_a_node_without_blocks_judges_nothing() {
        let [node] = nodes([&[]]);
        let mut checker = ChainChecker::default();
        observe(&mut checker, &[(&node, true)], 1_000);
        life(&node, 2, 0, &[1]);
        observe(&mut checker, &[(&node, true)], 2_000);
        assert_fails(&verdict(&checker, RESTARTS, "chain-durable"), NOT_EXERCISED);
    }

    /// Two honest nodes at height 5 when the faults stop, then at these
    /// heights `after_s` seconds later.
    fn liveness(after_s: u64, committed: [&[u8]; 2]) -> ChainChecker {
        let [a, b] = nodes([&[1, 2, 3, 4, 5], &[1, 2, 3, 4, 5]]);
        let mut checker = ChainChecker::default();
        observe(&mut checker, &[(&a, true), (&b, true)], FAULTS_END_MS);
        life(&a, 1, 0, committed[0]);
        life(&b, 1, 0, committed[1]);
        observe(
            &mut checker,
            &[(&a, true), (&b, true)],
            FAULTS_END_MS + after_s * 1000,
        );
        checker
    }

    const HEIGHT_6: &[u8] = &[1, 2, 3, 4, 5, 6];

    #[test]
    fn liveness_holds_when_every_node_commits_again_in_time() {
        let checker = liveness(10, [HEIGHT_6, HEIGHT_6]);
        assert_passes(&verdict(&checker, LIVENESS, "chain-liveness"));
    }

    #[test]
    fn liveness_fails_when_commits_never_resume() {
        // n1 moves on, n0 never does.
        let checker = liveness(10, [&[1, 2, 3, 4, 5], HEIGHT_6]);
        assert_fails(
            &verdict(&checker, LIVENESS, "chain-liveness"),
            "did not resume",
        );
    }

    #[test]
    fn liveness_fails_when_commits_resume_after_the_bound() {
        let checker = liveness(31, [HEIGHT_6, HEIGHT_6]);
        assert_fails(
            &verdict(&checker, LIVENESS, "chain-liveness"),
            "commits resumed 31.0 s after the last fault (bound 30 s)",
        );
    }

    #[test]
    fn liveness_fails_below_the_minimum_height() {
        let checker = liveness(10, [HEIGHT_6, HEIGHT_6]);
        let higher = "[properties]\nchain_resumes_within_s = 30\nchain_min_height = 7";
        assert_fails(
            &verdict(&checker, higher, "chain-liveness"),
            "lowest live honest height 6 (need 7)",
        );
    }

    #[test]
    fn a_light_node_commits_nothing_and_the_chain_checkers_skip_it() {
        let [replica, light] = nodes([&[1, 2, 3, 4, 5], &[]]);
        let observe = |checker: &mut ChainChecker, now_ms: u64| {
            let views = [(&replica, false), (&light, true)].map(|(status, light)| ChainView {
                index: usize::from(light),
                status,
                alive: true,
                honest: true,
                light,
            });
            checker.observe(views.into_iter(), now_ms, now_ms >= FAULTS_END_MS);
        };
        let mut checker = ChainChecker::default();
        observe(&mut checker, FAULTS_END_MS);
        life(&replica, 1, 0, HEIGHT_6);
        observe(&mut checker, FAULTS_END_MS + 10_000);
        // The light node's height 0 is neither the lowest height nor a
        // node that never resumed.
        assert_eq!(checker.min_height(), 6);
        assert_passes(&verdict(&checker, LIVENESS, "chain-liveness"));
        assert_passes(&verdict(&checker, "", "chain-agreement"));
    }

    #[test]
    fn evidence_fails_for_an_equivocator_without_evidence_on_chain() {
        let checker = ChainChecker::default();
        let (caught, missed) = (block(1), block(2));
        let audit = Ok(Audit {
            blocks: 4,
            offenders: [caught].into(),
            ..Audit::default()
        });
        let evidence = |equivocators: &[Hash], audit: &Result<Audit, String>| {
            property(
                &checker.properties(&scenario(""), 0, audit, equivocators),
                "chain-evidence",
            )
        };
        assert_passes(&evidence(&[caught], &audit));
        assert_fails(
            &evidence(&[caught, missed], &audit),
            &format!(
                "no evidence on chain against equivocators {}",
                &missed.to_hex()[..12]
            ),
        );
        assert_fails(
            &evidence(&[caught], &Err("disk gone".into())),
            "chain not auditable",
        );
    }

    #[test]
    fn validity_fails_on_an_audit_without_blocks_or_with_an_error() {
        let checker = ChainChecker::default();
        let validity = |audit: &Result<Audit, String>| {
            property(
                &checker.properties(&scenario(""), 0, audit, &[]),
                "chain-validity",
            )
        };
        assert_passes(&validity(&audited(4)));
        assert_fails(&validity(&audited(0)), NOT_EXERCISED);
        let broken = Err("block 2: the certificate does not verify".to_string());
        assert_fails(
            &validity(&broken),
            "block 2: the certificate does not verify",
        );
    }

    type AuditReplica =
        Replica<MemDisk, NodeApp, Signer<MemDisk, Arc<SeededEntropy>>, Arc<SeededEntropy>>;

    /// A chain of at least `height` blocks, committed by one validator
    /// holding all the stake, on its memory disk (real proofs, certificates
    /// and the node's application).
    fn a_committed_chain(height: u64) -> (Genesis, DnsName, MemDisk) {
        let (key, genesis, zone) = one_validator_chain("audit-test");
        let id = key.verifying_key().fingerprint();
        let disk = MemDisk::new(hm_node::COLUMN_FAMILIES);
        let entropy = Arc::new(SeededEntropy::new(1, b"audit-test-replica"));
        let identity = ValidatorIdentity {
            signer: Signer::open(
                key.duplicate(),
                genesis.chain_id(),
                disk.clone(),
                entropy.clone(),
            )
            .expect("the signer opens"),
            plot: SpacePlot::generate(&id, GENESIS_PLOT_NONCE, genesis.proof.space_leaves_log2)
                .expect("a small plot"),
            block_key: key,
        };
        let app = NodeApp::new(SharedTrust::new(
            hm_node::app::trust_app_for(&genesis, zone.clone()).expect("the genesis is valid"),
        ));
        let at = |mono_ms: u64| Now {
            mono_ms,
            wall_ms: 1_000_000 + mono_ms,
        };
        let mut replica: AuditReplica = Replica::new(
            genesis.clone(),
            disk.clone(),
            app,
            Some(identity),
            ReplicaConfig::default(),
            entropy,
            at(0),
        )
        .expect("the replica opens");
        let mut now_ms = 0;
        while replica.height() < height {
            assert!(
                now_ms < 600_000,
                "no block {height} after 10 simulated minutes"
            );
            now_ms = replica.poll_timeout().max(now_ms + 1);
            replica.handle_tick(at(now_ms));
            while let Some(output) = replica.poll_output() {
                if let ReplicaOutput::Failed { reason } = output {
                    panic!("the replica failed: {reason}");
                }
            }
        }
        (genesis, zone, disk)
    }

    #[test]
    fn the_audit_accepts_a_committed_chain_and_rejects_a_tampered_one() {
        let (genesis, zone, disk) = a_committed_chain(3);
        let audit = |disk: &MemDisk| audit_chain(&genesis, &zone, disk, None);
        let audited = audit(&disk).expect("an untouched chain audits");
        let blocks = audited.blocks;
        assert!(blocks >= 3);
        // Every audited height's header hash and state root, as stored.
        let store = ChainStore::open(disk.clone(), genesis.chain_id()).expect("the store opens");
        assert_eq!(audited.headers.len() as u64, blocks);
        for height in 1..=blocks {
            let block = store
                .block(height)
                .expect("readable")
                .expect("below the head");
            let expected = AuditedHeader {
                hash: block.hash(),
                state_root: block.header.state_root,
            };
            assert_eq!(audited.header(height), Some(&expected));
        }
        assert_eq!(audited.header(0), None);
        assert_eq!(audited.header(blocks + 1), None);
        drop(store);
        let key = |height: u64| height.to_be_bytes().to_vec();
        let stored = |height: u64| {
            [BLOCKS_CF, BLOCK_COMMITS_CF].map(|cf| {
                let bytes = disk
                    .get(cf, &key(height))
                    .expect("readable")
                    .expect("stored");
                (cf, bytes)
            })
        };
        let store_at = |height: u64, parts: &[(&'static str, Vec<u8>); 2]| {
            let mut batch = hm_env::WriteBatch::new();
            for (cf, bytes) in parts {
                batch.put(cf, key(height), bytes.clone());
            }
            disk.write(batch).expect("written");
        };
        let (second, third) = (stored(2), stored(3));

        // A bit flipped in block 2's stored bytes.
        assert!(disk.corrupt(BLOCKS_CF, &key(2), 40));
        let error = audit(&disk).err().expect("a flipped bit fails the audit");
        assert!(error.starts_with("block 2:"), "{error}");
        store_at(2, &second);
        assert_eq!(audit(&disk).map(|audit| audit.blocks), Ok(blocks));

        // Block 3 stored at height 2: well formed, but out of place.
        store_at(2, &third);
        let error = audit(&disk)
            .err()
            .expect("a block out of place fails the audit");
        assert!(error.starts_with("block 2:"), "{error}");
        store_at(2, &second);

        // Block 2 gone from below the head.
        let mut batch = hm_env::WriteBatch::new();
        batch.delete(BLOCKS_CF, key(2));
        batch.delete(BLOCK_COMMITS_CF, key(2));
        disk.write(batch).expect("written");
        let error = audit(&disk).err().expect("a missing block fails the audit");
        assert_eq!(error, "block 2 is missing below the head");
    }
}
