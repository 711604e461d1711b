//! The chain in a scenario: genesis and validator identities made from the
//! seed, each node's chain configuration, and the chain's checkers —
//! agreement (no two honest nodes commit different blocks at a height),
//! validity (every committed block's certificate and four proofs verify,
//! and its state root is what executing it gives), and liveness (commits
//! resume after the last fault, every honest node reaches a height).

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
use hm_node::{ChainConfig, StatusHandle};
use hm_wire::{Hash, SigningKey};

use crate::net::node_ip;
use crate::runner::{NODE_PORT, NOT_EXERCISED, PropertyResult};
use crate::scenario::{ChainScenario, DEFAULT_STAKE, Scenario};

/// Agreement violations listed in the report (the first ones tell the story).
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
}

/// Watches the chain while the run goes on.
#[derive(Default)]
pub struct ChainChecker {
    /// The block hash at each height, as first committed by an honest node.
    canonical: Vec<Hash>,
    /// Per node, how much of its committed list has been compared.
    compared: Vec<usize>,
    violations: Vec<String>,
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
            if self.compared.len() <= view.index {
                self.compared.resize(view.index + 1, 0);
            }
            if !view.honest {
                continue;
            }
            let (height, fresh) = view.status.with(|status| {
                let committed = &status.chain.committed;
                let from = self.compared[view.index].min(committed.len());
                (committed.len() as u64, committed[from..].to_vec())
            });
            let from = self.compared[view.index];
            for (offset, hash) in fresh.iter().enumerate() {
                let height_index = from + offset;
                match self.canonical.get(height_index) {
                    Some(canonical) if canonical != hash => {
                        if self.violations.len() < VIOLATIONS_SHOWN_MAX {
                            self.violations.push(format!(
                                "n{} committed {} at height {}, others {}",
                                view.index,
                                hash,
                                height_index + 1,
                                canonical
                            ));
                        }
                    }
                    Some(_) => {}
                    None => {
                        debug_assert_eq!(self.canonical.len(), height_index);
                        self.canonical.push(*hash);
                    }
                }
            }
            self.compared[view.index] = from + fresh.len();
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
        let mut properties = vec![
            PropertyResult {
                name: "chain-agreement".into(),
                passed: self.violations.is_empty() && !self.canonical.is_empty(),
                detail: if !self.violations.is_empty() {
                    self.violations.join("; ")
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
            },
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
        ];
        if with_equivocators {
            properties.push(PropertyResult {
                name: "chain-evidence".into(),
                passed: evidence.0,
                detail: evidence.1,
            });
        }
        properties
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
    let trust = SharedTrust::new(hm_node::app::trust_app_for(genesis, zone.clone())?);
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
        for evidence in &block.body.evidence {
            if let Some(validator) = validators.get(evidence.validator()) {
                audit.offenders.insert(validator.id);
            }
        }
        parent = ParentInfo::of(&block.header);
    }
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
}
