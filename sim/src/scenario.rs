//! Scenario files: what to simulate, as data with good defaults.
//!
//! Every field has a default, so the smallest scenario is an empty file.
//! Unknown keys and out-of-range values are errors that name the file, the
//! line and the key.

use std::path::Path;

use hm_faults::Fault;
use serde::{Deserialize, Serialize};

/// Largest scenario file read, in bytes.
pub const SCENARIO_BYTES_MAX: usize = 1024 * 1024;
/// Most nodes one scenario may ask for.
pub const NODES_MAX: u32 = 20_000;
/// Longest simulated run, in seconds (one simulated day).
pub const DURATION_S_MAX: f64 = 24.0 * 3600.0;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    /// Seed used when the command line gives none.
    pub seed: u64,
    /// Hard stop in simulated seconds; the run ends earlier once every
    /// property has been decided.
    pub duration_s: f64,
    pub nodes: Nodes,
    pub network: Network,
    pub membership: MembershipTuning,
    pub byzantine: Byzantine,
    /// Run a chain on every node (absent: membership only).
    pub chain: Option<ChainScenario>,
    /// TrustChain and the bootstrap phases 0-3 (absent: every node stays
    /// in phase 0 with a self-signed identity). Needs `chain`.
    pub trust: Option<TrustScenario>,
    pub properties: Properties,
    pub faults: Vec<Fault>,
}

impl Default for Scenario {
    fn default() -> Self {
        Self {
            name: "unnamed".into(),
            description: String::new(),
            seed: 1,
            duration_s: 120.0,
            nodes: Nodes::default(),
            network: Network::default(),
            membership: MembershipTuning::default(),
            byzantine: Byzantine::default(),
            chain: None,
            trust: None,
            properties: Properties::default(),
            faults: Vec::new(),
        }
    }
}

/// The nodes, laid out by index: the genesis validators first
/// (`chain.validators`), then `full` full replicas, then `light` light
/// nodes. Without `full` and `light` every node is a replica.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Nodes {
    pub count: u32,
    /// The first `seeds` nodes are everyone's seed list (phase 0: static).
    pub seeds: u32,
    /// Nodes boot uniformly spread over this many simulated seconds.
    pub boot_spread_s: f64,
    pub hardware: HardwareProfile,
    /// Full replicas after the validators. With `light` too, `count` must
    /// be `chain.validators + full + light`; alone, `count` must be
    /// `chain.validators + full` (no light node).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub full: Option<u32>,
    /// Light nodes, the last ones: they keep trusted headers only and ask
    /// full nodes for proven answers. Alone, the full replicas are the
    /// rest: `count - chain.validators - light`. Needs `[chain]` and
    /// `[trust]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub light: Option<u32>,
}

impl Default for Nodes {
    fn default() -> Self {
        Self {
            count: 10,
            seeds: 3,
            boot_spread_s: 5.0,
            hardware: HardwareProfile::default(),
            full: None,
            light: None,
        }
    }
}

/// What a node is, by its index (see [`Nodes`] and [`Scenario::role_of`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A genesis validator (a replica).
    Validator,
    /// A full replica that does not validate (every node of a scenario
    /// without a chain).
    Full,
    /// A light node: trusted headers and proven answers, no blocks.
    Light,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HardwareProfile {
    pub cpu_model: String,
    pub cpu_cores: u32,
    pub memory_gib: u64,
    pub storage_gib: u64,
    pub network_mbps: u64,
}

impl Default for HardwareProfile {
    fn default() -> Self {
        Self {
            cpu_model: "sim-x86-64".into(),
            cpu_cores: 8,
            memory_gib: 32,
            storage_gib: 1024,
            network_mbps: 1000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Network {
    /// Largest UDP payload STOQ sends: 1,472 fits a 1,500-byte Ethernet
    /// MTU (quinn's default); 8,952 fits 9,000-byte jumbo frames.
    pub max_udp_payload_bytes: u32,
    pub latency_ms: f64,
    pub jitter_ms: f64,
    pub loss: f64,
    pub duplicate: f64,
    pub reorder: f64,
}

impl Default for Network {
    fn default() -> Self {
        Self {
            max_udp_payload_bytes: 1_472,
            latency_ms: 5.0,
            jitter_ms: 1.0,
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
        }
    }
}

/// Overrides of the membership protocol's timing (milliseconds).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MembershipTuning {
    pub gossip_interval_ms: Option<u64>,
    pub probe_interval_ms: Option<u64>,
    pub suspicion_timeout_ms: Option<u64>,
    pub anti_entropy_interval_ms: Option<u64>,
    pub active_view_max: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Byzantine {
    /// Nodes (taken from the end of the node list) whose network interface
    /// also sprays malformed datagrams.
    pub garbage_senders: u32,
    /// One garbage datagram after every this many honest ones.
    pub garbage_every_nth: u64,
    /// Nodes (just before the garbage senders) that forge their STOQ
    /// identity binding: every honest node must refuse them, so they are
    /// never members and never in an honest node's accepted peers.
    pub identity_forgers: u32,
}

impl Default for Byzantine {
    fn default() -> Self {
        Self {
            garbage_senders: 0,
            garbage_every_nth: 4,
            identity_forgers: 0,
        }
    }
}

/// The chain every node runs: who validates, the workload, and timing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChainScenario {
    /// The first `validators` nodes are the genesis validators.
    pub validators: u32,
    /// Stake per validator (empty: 10 each); its length must equal
    /// `validators` when given.
    pub stakes: Vec<u64>,
    /// The first `workload_nodes` nodes each submit a key-value transaction
    /// every `workload_interval_ms`.
    pub workload_nodes: u32,
    pub workload_interval_ms: u64,
    pub block_transactions_max: usize,
    /// Consensus step timeouts (base; each grows by half of it per round).
    pub propose_timeout_ms: u64,
    pub vote_timeout_ms: u64,
    /// Overlay peers each node keeps chain links with (block sync).
    pub sync_peers: usize,
    /// Pause after a commit before the next block is proposed.
    pub block_interval_ms: u64,
    /// The last `byzantine_validators` validators misbehave, taking the
    /// behaviours of `byzantine_faults` in turn.
    pub byzantine_validators: u32,
    pub byzantine_faults: Vec<hm_faults::chain::ChainFault>,
    /// A client outside the mesh submits one transaction every this many
    /// ms through the honest nodes' APIs in turn, until the faults stop
    /// (0: no client); `acked-transactions-commit` then checks that every
    /// acknowledged one committed.
    pub client_interval_ms: u64,
}

impl Default for ChainScenario {
    fn default() -> Self {
        Self {
            validators: 4,
            stakes: Vec::new(),
            workload_nodes: 0,
            workload_interval_ms: 500,
            block_transactions_max: 200,
            propose_timeout_ms: 1_000,
            vote_timeout_ms: 500,
            sync_peers: 3,
            block_interval_ms: 500,
            byzantine_validators: 0,
            byzantine_faults: hm_faults::chain::ChainFault::ALL.to_vec(),
            client_interval_ms: 0,
        }
    }
}

/// How nodes take part in TrustChain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrustScenario {
    /// The network's DNS zone; node `i` registers `n<i>.<zone>`.
    pub zone: String,
    /// Lifetime nodes ask for in certificate requests.
    pub certificate_validity_s: f64,
    /// Nodes renew once this share of the lifetime has passed.
    pub renew_at: f64,
    /// Nodes register their names once certified.
    pub register_names: bool,
    /// The chain counts as live while the last commit is at most this old.
    pub chain_live_window_s: f64,
    /// The last `byzantine_authorities` genesis validators misbehave as
    /// certificate authorities, taking `authority_faults` in turn (in
    /// consensus they stay honest unless `chain.byzantine_validators` says
    /// otherwise).
    pub byzantine_authorities: u32,
    pub authority_faults: Vec<hm_faults::trust::AuthorityFault>,
    /// Nodes (just before the identity forgers and garbage senders) that
    /// collude with the first forging authority: each claims an honest
    /// node's name and presents the forged certificate it is given.
    pub forged_presenters: u32,
    /// When the forged presenters ask for their forgeries.
    pub forge_after_s: f64,
    /// Byzantine full nodes: the last full replicas, one per entry, each
    /// answering light nodes with this lie (`forged-record`,
    /// `stale-state`, `forged-header`) while replicating honestly.
    pub lying_full_nodes: Vec<hm_faults::liar::Lie>,
}

impl Default for TrustScenario {
    fn default() -> Self {
        Self {
            zone: "mesh".into(),
            certificate_validity_s: 600.0,
            renew_at: 0.5,
            register_names: true,
            chain_live_window_s: 30.0,
            byzantine_authorities: 0,
            authority_faults: hm_faults::trust::AuthorityFault::ALL.to_vec(),
            forged_presenters: 0,
            forge_after_s: 90.0,
            lying_full_nodes: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Properties {
    /// Liveness: once the last fault has stopped, every live honest node's
    /// membership view must equal the live set within this many seconds.
    pub membership_converges_within_s: f64,
    /// Safety: no honest node ever holds a peer whose identity check failed.
    pub only_verified_peers: bool,
    /// Chain liveness: once the last fault has stopped, every live honest
    /// node commits a block above the highest height committed before,
    /// within this many seconds.
    pub chain_resumes_within_s: f64,
    /// Chain liveness: every live honest node reaches at least this height.
    pub chain_min_height: u64,
    /// With `trust`: every live honest node is in bootstrap phase 3 by this
    /// simulated second (and stays there).
    pub phase3_within_s: f64,
    /// With `chain`: while a partition lasts, the side whose validators
    /// hold no quorum commits nothing new.
    pub minority_commits_nothing: bool,
    /// Properties this scenario expects to judge nothing (e.g. no
    /// certificate is ever accepted); any other property that judged
    /// nothing fails, so a checker cannot pass vacuously.
    pub not_exercised_ok: Vec<String>,
    /// With Byzantine stake at or beyond a third: the scenario is about a
    /// fork. Chain-agreement must fail (and then passes as expected), and
    /// `fork-accountable` must convict only Byzantine validators holding
    /// more than a third of the stake.
    pub expect_fork: bool,
    /// With a client (`chain.client_interval_ms`): every transaction a node
    /// acknowledged is committed within this many seconds of the last
    /// fault.
    pub acked_commit_within_s: f64,
}

impl Default for Properties {
    fn default() -> Self {
        Self {
            membership_converges_within_s: 60.0,
            only_verified_peers: true,
            chain_resumes_within_s: 60.0,
            chain_min_height: 3,
            phase3_within_s: 600.0,
            minority_commits_nothing: false,
            not_exercised_ok: Vec::new(),
            expect_fork: false,
            acked_commit_within_s: 60.0,
        }
    }
}

/// Stake of a validator when the scenario gives none.
pub const DEFAULT_STAKE: u64 = 10;

/// Every property a run can report (`properties.not_exercised_ok` may
/// name only these).
pub const PROPERTY_NAMES: &[&str] = &[
    "membership-converges",
    "only-verified-peers",
    "chain-agreement",
    "chain-durable",
    "chain-validity",
    "chain-liveness",
    "chain-evidence",
    "fork-accountable",
    "acked-transactions-commit",
    "minority-commits-nothing",
    "phase-3",
    "byzantine-authorities-revoked",
    "ct-consistent",
    "only-logged-certificates",
    "names-resolve",
    "light-proven",
    "no-node-errors",
    "no-panic",
    "processes",
];

/// A scenario that could not be loaded, with where and why.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("{path}: cannot read the scenario: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "{path}: {len} bytes is larger than the {SCENARIO_BYTES_MAX}-byte limit for scenario files"
    )]
    TooLarge { path: String, len: u64 },
    #[error("{path}:{line}:{column}: {message}")]
    Syntax {
        path: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

impl Scenario {
    /// Reads and validates a scenario file.
    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        let shown = path.display().to_string();
        #[allow(clippy::disallowed_methods)]
        // the simulator's own input, read before the run starts
        let metadata = std::fs::metadata(path).map_err(|source| ScenarioError::Read {
            path: shown.clone(),
            source,
        })?;
        if metadata.len() > SCENARIO_BYTES_MAX as u64 {
            return Err(ScenarioError::TooLarge {
                path: shown,
                len: metadata.len(),
            });
        }
        #[allow(clippy::disallowed_methods)] // as above
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: shown.clone(),
            source,
        })?;
        Self::parse(&shown, &text)
    }

    /// Parses and validates scenario text; `path` is only used in errors.
    pub fn parse(path: &str, text: &str) -> Result<Self, ScenarioError> {
        let scenario: Scenario = toml::from_str(text).map_err(|error| {
            let (line, column) = error
                .span()
                .map(|span| line_column(text, span.start))
                .unwrap_or((1, 1));
            ScenarioError::Syntax {
                path: path.to_string(),
                line,
                column,
                message: error.message().trim().to_string(),
            }
        })?;
        scenario
            .validate()
            .map_err(|message| ScenarioError::Invalid {
                path: path.to_string(),
                message,
            })?;
        Ok(scenario)
    }

    /// Checks ranges and that the parts fit together (what `parse` checks
    /// after reading); the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        let unit = |name: &str, value: f64| {
            if value.is_finite() && (0.0..=1.0).contains(&value) {
                Ok(())
            } else {
                Err(format!("`{name}` = {value} must be between 0 and 1"))
            }
        };
        let seconds = |name: &str, value: f64, max: f64| {
            if value.is_finite() && (0.0..=max).contains(&value) {
                Ok(())
            } else {
                Err(format!("`{name}` = {value} must be between 0 and {max}"))
            }
        };
        if self.nodes.count == 0 || self.nodes.count > NODES_MAX {
            return Err(format!(
                "`nodes.count` = {} must be between 1 and {NODES_MAX}",
                self.nodes.count
            ));
        }
        if self.nodes.seeds == 0 || self.nodes.seeds > self.nodes.count {
            return Err(format!(
                "`nodes.seeds` = {} must be between 1 and nodes.count ({})",
                self.nodes.seeds, self.nodes.count
            ));
        }
        if self.byzantine.garbage_senders >= self.nodes.count {
            return Err(format!(
                "`byzantine.garbage_senders` = {} leaves no honest node among {}",
                self.byzantine.garbage_senders, self.nodes.count
            ));
        }
        let byzantine_total =
            u64::from(self.byzantine.garbage_senders) + u64::from(self.byzantine.identity_forgers);
        if byzantine_total + u64::from(self.nodes.seeds) > u64::from(self.nodes.count) {
            return Err(format!(
                "`byzantine.garbage_senders` + `byzantine.identity_forgers` = {byzantine_total} \
                 overlap the {} seed nodes among {}; Byzantine nodes are taken from the end of \
                 the node list and must leave the seeds honest",
                self.nodes.seeds, self.nodes.count
            ));
        }
        if let Some(chain) = &self.chain {
            if chain.validators == 0 || chain.validators > self.nodes.count.min(256) {
                return Err(format!(
                    "`chain.validators` = {} must be between 1 and min(nodes.count, 256)",
                    chain.validators
                ));
            }
            if !chain.stakes.is_empty() && chain.stakes.len() != chain.validators as usize {
                return Err(format!(
                    "`chain.stakes` has {} entries; give one per validator ({}) or none",
                    chain.stakes.len(),
                    chain.validators
                ));
            }
            if chain.stakes.contains(&0) {
                return Err("`chain.stakes` entries must be at least 1".into());
            }
            if chain.byzantine_validators > chain.validators {
                return Err("`chain.byzantine_validators` exceeds `chain.validators`".into());
            }
            if chain.byzantine_validators > 0 && chain.byzantine_faults.is_empty() {
                return Err("`chain.byzantine_faults` must name at least one behaviour".into());
            }
            if chain.client_interval_ms > 0 && chain.client_interval_ms < 10 {
                return Err(format!(
                    "`chain.client_interval_ms` = {} is below 10 ms; give 0 for no client, or 10 or more",
                    chain.client_interval_ms
                ));
            }
            if !(0.0..=86_400.0).contains(&self.properties.acked_commit_within_s) {
                return Err(
                    "`properties.acked_commit_within_s` must be between 0 and 86400".into(),
                );
            }
            if chain.workload_nodes > self.nodes.count {
                return Err("`chain.workload_nodes` exceeds `nodes.count`".into());
            }
            if chain.workload_interval_ms == 0
                || chain.propose_timeout_ms == 0
                || chain.vote_timeout_ms == 0
            {
                return Err("`chain` intervals and timeouts must be at least 1 ms".into());
            }
        }
        if let Some(trust) = &self.trust {
            if self.chain.is_none() {
                return Err("`[trust]` needs a `[chain]`: certificates are logged on chain".into());
            }
            hm_trustchain::name::DnsName::parse(&trust.zone)
                .map_err(|error| format!("`trust.zone` = {:?}: {error}", trust.zone))?;
            let max_validity_s = hm_trustchain::cert::CERT_VALIDITY_MS_MAX as f64 / 1000.0;
            if !(trust.certificate_validity_s.is_finite()
                && trust.certificate_validity_s >= 1.0
                && trust.certificate_validity_s <= max_validity_s)
            {
                return Err(format!(
                    "`trust.certificate_validity_s` = {} must be between 1 and {max_validity_s}",
                    trust.certificate_validity_s
                ));
            }
            unit("trust.renew_at", trust.renew_at)?;
            let validators = self.chain.as_ref().map_or(0, |chain| chain.validators);
            if trust.byzantine_authorities > validators {
                return Err("`trust.byzantine_authorities` exceeds `chain.validators`".into());
            }
            if trust.byzantine_authorities > 0 && trust.authority_faults.is_empty() {
                return Err("`trust.authority_faults` must name at least one behaviour".into());
            }
            if trust.forged_presenters > 0 {
                let forging = (0..trust.byzantine_authorities).any(|k| {
                    trust.authority_faults[k as usize % trust.authority_faults.len()]
                        == hm_faults::trust::AuthorityFault::Forge
                });
                if !forging {
                    return Err("`trust.forged_presenters` need a Byzantine authority with the `forge` fault".into());
                }
                let taken = u64::from(trust.forged_presenters)
                    + u64::from(self.byzantine.garbage_senders)
                    + u64::from(self.byzantine.identity_forgers)
                    + u64::from(self.nodes.seeds.max(validators));
                if taken > u64::from(self.nodes.count) {
                    return Err(
                        "`trust.forged_presenters` overlap the seeds or validators; add nodes"
                            .into(),
                    );
                }
            }
            seconds("trust.forge_after_s", trust.forge_after_s, DURATION_S_MAX)?;
            seconds(
                "trust.chain_live_window_s",
                trust.chain_live_window_s,
                DURATION_S_MAX,
            )?;
        }
        self.validate_roles()?;
        seconds(
            "properties.phase3_within_s",
            self.properties.phase3_within_s,
            DURATION_S_MAX,
        )?;
        if self.byzantine.garbage_every_nth == 0 {
            return Err("`byzantine.garbage_every_nth` must be at least 1".into());
        }
        seconds("duration_s", self.duration_s, DURATION_S_MAX)?;
        seconds(
            "nodes.boot_spread_s",
            self.nodes.boot_spread_s,
            DURATION_S_MAX,
        )?;
        if !(1_200..=65_527).contains(&self.network.max_udp_payload_bytes) {
            return Err(format!(
                "`network.max_udp_payload_bytes` = {} must be between 1200 (QUIC's minimum) and 65527",
                self.network.max_udp_payload_bytes
            ));
        }
        seconds("network.latency_ms", self.network.latency_ms / 1000.0, 60.0)?;
        seconds("network.jitter_ms", self.network.jitter_ms / 1000.0, 60.0)?;
        unit("network.loss", self.network.loss)?;
        unit("network.duplicate", self.network.duplicate)?;
        unit("network.reorder", self.network.reorder)?;
        seconds(
            "properties.membership_converges_within_s",
            self.properties.membership_converges_within_s,
            DURATION_S_MAX,
        )?;
        for name in &self.properties.not_exercised_ok {
            if !PROPERTY_NAMES.contains(&name.as_str()) {
                return Err(format!(
                    "`properties.not_exercised_ok` names {name:?}, which is no property; the properties are {}",
                    PROPERTY_NAMES.join(", ")
                ));
            }
        }
        if self.properties.expect_fork && self.fault_bound_warning().is_none() {
            return Err(
                "`properties.expect_fork` needs Byzantine validators holding a third of the stake or more (`chain.byzantine_validators`, `chain.stakes`): within BFT's fault bound a fork is a bug, never an expectation".into(),
            );
        }
        hm_faults::validate_schedule(&self.faults).map_err(|error| error.to_string())?;
        let needed = self.faults_end_s() + self.properties.membership_converges_within_s;
        if needed > self.duration_s {
            return Err(format!(
                "`duration_s` = {} is too short: the last fault ends at {:.1} s and convergence may take {} s more, so at least {needed:.1} s is needed",
                self.duration_s,
                self.faults_end_s(),
                self.properties.membership_converges_within_s
            ));
        }
        Ok(())
    }

    /// Checks `nodes.full` and `nodes.light` against `nodes.count` and the
    /// validators (see [`Nodes`]).
    fn validate_roles(&self) -> Result<(), String> {
        let (full, light) = (self.nodes.full, self.nodes.light);
        if full.is_none() && light.is_none() {
            return Ok(());
        }
        let given = if light.is_some() {
            "nodes.light"
        } else {
            "nodes.full"
        };
        let Some(chain) = &self.chain else {
            return Err(format!(
                "`{given}` needs a `[chain]`: without one there are no replicas to tell apart"
            ));
        };
        let count = u64::from(self.nodes.count);
        let validators = u64::from(chain.validators);
        let light = u64::from(light.unwrap_or(0));
        match full {
            Some(full) => {
                let full = u64::from(full);
                if validators + full + light != count {
                    return Err(format!(
                        "`nodes.count` = {count} must equal chain.validators ({validators}) + \
                         nodes.full ({full}) + nodes.light ({light}) = {}",
                        validators + full + light
                    ));
                }
            }
            None if validators + light > count => {
                return Err(format!(
                    "`nodes.light` = {light} does not fit: chain.validators ({validators}) + \
                         nodes.light ({light}) = {} exceeds nodes.count ({count})",
                    validators + light
                ));
            }
            None => {}
        }
        let lying = self
            .trust
            .as_ref()
            .map_or(0, |trust| trust.lying_full_nodes.len() as u64);
        let full = count.saturating_sub(validators).saturating_sub(light);
        if lying > 0 && lying >= full {
            return Err(format!(
                "`trust.lying_full_nodes` names {lying} liars among {full} full nodes;                  leave at least one honest full node (raise nodes.full)"
            ));
        }
        if light == 0 {
            return Ok(());
        }
        let replicas = count - light;
        if replicas == 0 {
            return Err(format!(
                "`nodes.light` = {light} leaves no replica: light nodes need validators or \
                 full nodes (nodes.full + chain.validators > 0) to serve them"
            ));
        }
        if self.trust.is_none() {
            return Err(format!(
                "`nodes.light` = {light} needs a `[trust]` section: light nodes follow the \
                 chain's certified headers and resolve names through TrustChain"
            ));
        }
        if u64::from(chain.workload_nodes) > replicas {
            return Err(format!(
                "`chain.workload_nodes` = {} reaches into the light nodes (indexes {replicas} \
                 and up); light nodes submit no workload, so give at most {replicas}",
                chain.workload_nodes
            ));
        }
        Ok(())
    }

    /// The number of genesis validators (0 without a chain).
    pub fn validator_count(&self) -> u32 {
        self.chain.as_ref().map_or(0, |chain| chain.validators)
    }

    /// The number of light nodes (the last ones).
    pub fn light_count(&self) -> u32 {
        self.nodes.light.unwrap_or(0)
    }

    /// The number of full replicas that are not validators.
    pub fn full_count(&self) -> u32 {
        self.nodes
            .count
            .saturating_sub(self.validator_count())
            .saturating_sub(self.light_count())
    }

    /// The lie node `index` tells light nodes, if it is one of the lying
    /// full nodes (the last full replicas).
    pub fn lie_of(&self, index: u32) -> Option<hm_faults::liar::Lie> {
        let lies = &self.trust.as_ref()?.lying_full_nodes;
        if self.role_of(index) != Role::Full {
            return None;
        }
        let first_liar = (self.validator_count() + self.full_count())
            .checked_sub(u32::try_from(lies.len()).ok()?)?;
        let k = index.checked_sub(first_liar)?;
        lies.get(k as usize).copied()
    }

    /// What node `index` is: validators first, then the full replicas,
    /// then the light nodes.
    pub fn role_of(&self, index: u32) -> Role {
        if index < self.validator_count() {
            Role::Validator
        } else if index >= self.nodes.count.saturating_sub(self.light_count()) {
            Role::Light
        } else {
            Role::Full
        }
    }

    /// Whether node `index` is a light node.
    pub fn is_light(&self, index: u32) -> bool {
        self.role_of(index) == Role::Light
    }

    /// A warning when the Byzantine validators hold a third of the stake or
    /// more: beyond BFT's fault bound (f < n/3) the chain's safety is not
    /// guaranteed, so a fork there is an expected possibility, not a bug.
    pub fn fault_bound_warning(&self) -> Option<String> {
        let chain = self.chain.as_ref()?;
        let stake_of = |index: u32| {
            chain
                .stakes
                .get(index as usize)
                .copied()
                .unwrap_or(DEFAULT_STAKE)
        };
        let total: u64 = (0..chain.validators).map(stake_of).sum();
        let first_byzantine = chain.validators.saturating_sub(chain.byzantine_validators);
        let byzantine: u64 = (first_byzantine..chain.validators).map(stake_of).sum();
        (total > 0 && byzantine.saturating_mul(3) >= total).then(|| {
            format!(
                "{}: {} of {} validators are Byzantine, holding {:.1} % of the stake: at or beyond \
                 BFT's fault bound (f < n/3), so the chain's safety is not guaranteed in this scenario",
                self.name,
                chain.byzantine_validators,
                chain.validators,
                100.0 * byzantine as f64 / total as f64
            )
        })
    }

    /// Whether the schedule brings nodes back after they went down: a crash
    /// with a restart, or disk errors (a node that stops on them is started
    /// again by its supervisor). `chain-durable` is judged then.
    pub fn restarts_nodes(&self) -> bool {
        self.faults.iter().any(|fault| match fault {
            Fault::Crash {
                restart_after_s, ..
            } => restart_after_s.is_some(),
            Fault::DiskErrors { .. } => true,
            _ => false,
        })
    }

    /// When the last fault (and the boot phase) is over.
    pub fn faults_end_s(&self) -> f64 {
        self.faults
            .iter()
            .map(|fault| fault.end_s(self.nodes.count as usize))
            .fold(self.nodes.boot_spread_s, f64::max)
    }
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map_or(before.len(), |newline| before.len() - newline - 1)
        + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_is_a_valid_scenario() {
        let scenario = Scenario::parse("empty.toml", "").expect("defaults");
        assert_eq!(scenario, Scenario::default());
    }

    #[test]
    fn an_unknown_key_names_file_line_and_key() {
        let text = "name = \"x\"\n[nodes]\ncount = 5\ncuont = 7\n";
        let error = Scenario::parse("s.toml", text).expect_err("typo");
        let shown = error.to_string();
        assert!(shown.starts_with("s.toml:4:"), "{shown}");
        assert!(shown.contains("cuont"), "{shown}");
    }

    #[test]
    fn a_bad_value_is_named() {
        let error = Scenario::parse("s.toml", "[network]\nloss = 1.5\n").expect_err("range");
        assert!(error.to_string().contains("network.loss"), "{error}");
        let error = Scenario::parse("s.toml", "[nodes]\ncount = \"many\"\n").expect_err("type");
        assert!(error.to_string().starts_with("s.toml:2:"), "{error}");
        let error = Scenario::parse(
            "s.toml",
            "duration_s = 30\n[[faults]]\nkind = \"loss\"\nat_s = 10\nduration_s = 10\nrate = 0.5\n",
        )
        .expect_err("too short");
        assert!(error.to_string().contains("too short"), "{error}");
    }

    #[test]
    fn the_shipped_scenarios_load() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
        let mut loaded = 0;
        for dir in [root.clone(), root.join("bench")] {
            #[allow(clippy::disallowed_methods)] // test reads the repo's scenario files
            let entries = std::fs::read_dir(&dir).expect("scenarios dir");
            for entry in entries {
                let path = entry.expect("entry").path();
                if path.extension().is_some_and(|ext| ext == "toml") {
                    Scenario::load(&path).unwrap_or_else(|error| panic!("{error}"));
                    loaded += 1;
                }
            }
        }
        // 5 in scenarios/, 3 in scenarios/bench/.
        assert!(
            loaded >= 8,
            "expected the shipped scenarios, found {loaded}"
        );
    }

    /// A chain with trust: 4 validators among `nodes`, plus `extra` lines
    /// in `[nodes]`.
    fn with_roles(nodes: &str) -> Result<Scenario, ScenarioError> {
        Scenario::parse(
            "roles.toml",
            &format!("[nodes]\n{nodes}\n[chain]\nvalidators = 4\n[trust]\nzone = \"mesh\"\n"),
        )
    }

    #[test]
    fn nodes_are_laid_out_as_validators_then_full_then_light() {
        let scenario = with_roles("count = 10\nlight = 3").expect("only light given");
        assert_eq!(
            (
                scenario.validator_count(),
                scenario.full_count(),
                scenario.light_count()
            ),
            (4, 3, 3)
        );
        let roles: Vec<Role> = (0..10).map(|index| scenario.role_of(index)).collect();
        use Role::{Full, Light, Validator};
        assert_eq!(
            roles,
            [
                Validator, Validator, Validator, Validator, Full, Full, Full, Light, Light, Light
            ]
        );
        let both = with_roles("count = 10\nfull = 3\nlight = 3").expect("both given");
        assert_eq!(both.full_count(), 3);
        assert_eq!(
            (0..10).map(|index| both.role_of(index)).collect::<Vec<_>>(),
            roles
        );
        // `full` alone: no light node, and the count must add up.
        let full_only = with_roles("count = 6\nfull = 2").expect("full alone");
        assert_eq!((full_only.full_count(), full_only.light_count()), (2, 0));
        assert!((0..6).all(|index| !full_only.is_light(index)));
    }

    #[test]
    fn without_full_or_light_every_node_is_a_replica() {
        let scenario = with_roles("count = 10").expect("no roles given");
        assert_eq!((scenario.full_count(), scenario.light_count()), (6, 0));
        assert!((0..10).all(|index| scenario.role_of(index) != Role::Light));
        let membership = Scenario::parse("m.toml", "[nodes]\ncount = 5\n").expect("no chain");
        assert!((0..5).all(|index| membership.role_of(index) == Role::Full));
    }

    #[test]
    fn roles_that_do_not_add_up_are_named() {
        let error = with_roles("count = 10\nfull = 3\nlight = 2").expect_err("9 of 10");
        assert!(
            error.to_string().contains(
                "`nodes.count` = 10 must equal chain.validators (4) + nodes.full (3) + nodes.light (2) = 9"
            ),
            "{error}"
        );
        let error = with_roles("count = 6\nfull = 3").expect_err("7 of 6");
        assert!(error.to_string().contains("`nodes.count` = 6"), "{error}");
        let error = with_roles("count = 6\nlight = 3").expect_err("4 + 3 > 6");
        assert!(
            error.to_string().contains("`nodes.light` = 3 does not fit"),
            "{error}"
        );
        // Exactly validators and light nodes, no full node: allowed.
        assert_eq!(
            with_roles("count = 6\nlight = 2")
                .map(|scenario| scenario.full_count())
                .map_err(|error| error.to_string()),
            Ok(0)
        );
    }

    #[test]
    fn light_nodes_need_a_chain_and_trust() {
        let error =
            Scenario::parse("l.toml", "[nodes]\ncount = 5\nlight = 1\n").expect_err("no chain");
        assert!(
            error
                .to_string()
                .contains("`nodes.light` needs a `[chain]`"),
            "{error}"
        );
        let error = Scenario::parse("f.toml", "[nodes]\ncount = 5\nfull = 1\n")
            .expect_err("no chain either");
        assert!(
            error.to_string().contains("`nodes.full` needs a `[chain]`"),
            "{error}"
        );
        let error = Scenario::parse(
            "l.toml",
            "[nodes]\ncount = 5\nlight = 1\n[chain]\nvalidators = 4\n",
        )
        .expect_err("no trust");
        assert!(
            error
                .to_string()
                .contains("`nodes.light` = 1 needs a `[trust]` section"),
            "{error}"
        );
        // No light node asked for: no `[trust]` needed.
        assert!(
            Scenario::parse(
                "l.toml",
                "[nodes]\ncount = 5\nlight = 0\n[chain]\nvalidators = 4\n"
            )
            .is_ok()
        );
    }

    #[test]
    fn light_nodes_submit_no_workload() {
        let error = Scenario::parse(
            "w.toml",
            "[nodes]\ncount = 6\nlight = 2\n[chain]\nvalidators = 3\nworkload_nodes = 5\n[trust]\n",
        )
        .expect_err("workload on a light node");
        assert!(
            error.to_string().contains(
                "`chain.workload_nodes` = 5 reaches into the light nodes (indexes 4 and up)"
            ),
            "{error}"
        );
    }

    #[test]
    fn byzantine_stake_at_a_third_or_more_is_warned_about() {
        let with = |byzantine: u32| {
            Scenario::parse(
                "s.toml",
                &format!("[nodes]\ncount = 12\n[chain]\nvalidators = 10\nbyzantine_validators = {byzantine}\n"),
            )
            .expect("scenario")
        };
        assert_eq!(with(3).fault_bound_warning(), None);
        let warning = with(4)
            .fault_bound_warning()
            .expect("4 of 10 is beyond the bound");
        assert!(warning.contains("40.0 %"), "{warning}");
        assert!(warning.contains("not guaranteed"), "{warning}");
        assert_eq!(
            Scenario::parse("s.toml", "")
                .expect("empty")
                .fault_bound_warning(),
            None
        );
    }

    #[test]
    fn lying_full_nodes_are_the_last_full_replicas_and_one_stays_honest() {
        let with = |lies: &str, full: u32| {
            Scenario::parse(
                "s.toml",
                &format!(
                    "[nodes]\ncount = {}\nfull = {full}\nlight = 3\n[chain]\nvalidators = 4\n\
                     [trust]\nlying_full_nodes = [{lies}]\n",
                    4 + full + 3
                ),
            )
        };
        let scenario = with("\"forged-record\", \"stale-state\"", 3).expect("valid");
        let lies: Vec<_> = (0..10).map(|index| scenario.lie_of(index)).collect();
        use hm_faults::liar::Lie;
        assert_eq!(
            lies,
            vec![
                None,
                None,
                None,
                None,
                None,
                Some(Lie::ForgedRecord),
                Some(Lie::StaleState),
                None,
                None,
                None
            ]
        );
        let error = with("\"forged-record\", \"stale-state\", \"forged-header\"", 3)
            .expect_err("no honest full node left")
            .to_string();
        assert!(error.contains("lying_full_nodes"), "{error}");
        let error = with("\"lies\"", 3).expect_err("an unknown lie").to_string();
        assert!(error.contains("lies"), "{error}");
    }
}
