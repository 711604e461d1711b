//! TrustChain and bootstrap checkers, the minority-side checker, and the
//! timeline the HTML report draws.
//!
//! * `phase-3` — every live honest node is in bootstrap phase 3 by the
//!   scenario's bound (phases never go back; restarted nodes fast-forward).
//! * `ct-consistent` — every committed certificate-log head an honest node
//!   reported, in any of its lives, is the audited log's head at that size
//!   (one log, no forks, no rewrites), and no node ever committed a head
//!   that did not extend its previous one.
//!
//! A restarted node's status starts again from nothing; the checker keeps
//! what each life reported (acceptances, inconsistent heads, log heads), so
//! the verdict at the end covers every life.
//! * `only-logged-certificates` — every certificate an honest node accepted
//!   from a peer, in any of its lives, is in the audited log.
//! * `names-resolve` — every honest node's name is registered in the
//!   audited state, points at its address and one of its certificates, and
//!   every live honest node has committed (a light node: trusts a header
//!   at) the height that registered it; every address an honest light node
//!   resolved a name to is in the audited record for that name.
//! * `minority-commits-nothing` — while a partition lasts, nodes on a side
//!   whose validators hold no quorum commit no block (light nodes trust no
//!   header) beyond the highest height committed anywhere when it began.
//!
//! Light nodes commit nothing: wherever a height is read, theirs is the
//! height of the latest header they trust ([`reached_height`]).

use std::collections::{BTreeMap, BTreeSet};

use hm_kernel::block::LogHead;
use hm_kernel::validators::ValidatorSet;
use hm_node::app::SharedTrust;
use hm_node::{NodeStatus, StatusHandle};
use hm_trustchain::name::DnsName;
use hm_wire::Hash;

use crate::html::{
    GroupSample, Timeline, TimelineBand, TimelineGroup, TimelineMarker, TimelineSample,
};
use crate::light::ResolvedName;
use crate::net::node_ip;
use crate::outcome::{NOT_EXERCISED, PropertyResult};
use crate::scenario::{Role, Scenario};

/// Nodes named in a failed property's detail.
const SHOWN_MAX: usize = 6;

/// One node as the trust checkers see it.
pub struct TrustView<'a> {
    pub index: usize,
    pub status: &'a StatusHandle,
    pub alive: bool,
    pub honest: bool,
    /// A light node (see [`reached_height`]).
    pub light: bool,
    /// Timeline group (see [`groups`]).
    pub group: usize,
}

/// How far a node has come along the chain: a replica's committed height,
/// or the height of the latest header a light node trusts (it commits
/// nothing; 0 until its light client reports).
pub fn reached_height(status: &NodeStatus, light: bool) -> u64 {
    if light {
        status
            .chain
            .light
            .as_ref()
            .map_or(0, |light| light.trusted_height)
    } else {
        status.chain.height
    }
}

/// The report's node groups, in this order and only those with nodes:
/// validators, full replicas ("nodes" without a chain), light nodes,
/// Byzantine nodes (of any role). Returns the groups and each node's group.
pub fn groups(scenario: &Scenario, byzantine: &[bool]) -> (Vec<TimelineGroup>, Vec<usize>) {
    let full = if scenario.chain.is_some() {
        "full"
    } else {
        "nodes"
    };
    let names = ["validators", full, "light", "byzantine"];
    let kind_of: Vec<usize> = (0..scenario.nodes.count)
        .map(|index| {
            if byzantine.get(index as usize).copied().unwrap_or(false) {
                3
            } else {
                match scenario.role_of(index) {
                    Role::Validator => 0,
                    Role::Full => 1,
                    Role::Light => 2,
                }
            }
        })
        .collect();
    let mut sizes = [0u32; 4];
    for kind in &kind_of {
        sizes[*kind] += 1;
    }
    // Kind → group, skipping the kinds without nodes.
    let mut group_of_kind = [0usize; 4];
    let mut groups = Vec::new();
    for (kind, name) in names.iter().enumerate() {
        group_of_kind[kind] = groups.len();
        if sizes[kind] > 0 {
            groups.push(TimelineGroup {
                name: (*name).to_string(),
                nodes: sizes[kind],
            });
        }
    }
    let group_of = kind_of.iter().map(|kind| group_of_kind[*kind]).collect();
    (groups, group_of)
}

/// Fault bands for the report, from the scenario's schedule.
pub fn bands(scenario: &Scenario) -> Vec<TimelineBand> {
    let n = scenario.nodes.count as usize;
    scenario
        .faults
        .iter()
        .map(|fault| {
            let start_ms = (fault.at_s() * 1000.0) as u64;
            let end_ms = ((fault.end_s(n) * 1000.0) as u64).max(start_ms + 200);
            let label = match fault {
                hm_faults::Fault::Partition { fractions, .. } => format!(
                    "partition {}",
                    fractions
                        .iter()
                        .map(|f| format!("{:.0}", f * 100.0))
                        .collect::<Vec<_>>()
                        .join("/")
                ),
                hm_faults::Fault::Crash { fraction, .. } => {
                    format!("crash {:.0} % of nodes", fraction * 100.0)
                }
                hm_faults::Fault::Loss { rate, .. } => format!("loss {:.0} %", rate * 100.0),
                other => other.kind().to_string(),
            };
            TimelineBand {
                kind: fault.kind().to_string(),
                label,
                start_ms,
                end_ms,
            }
        })
        .collect()
}

/// Certificates one node is remembered to have accepted, over all its
/// lives: a few lives' worth of what a node keeps
/// (`hm_node::trust::ACCEPTED_CERTIFICATES_MAX` per life).
const ACCEPTED_PER_NODE_MAX: usize = 4 * hm_node::trust::ACCEPTED_CERTIFICATES_MAX;
/// Distinct certificate-log heads remembered from honest nodes' reports (a
/// consistent log has one per size a node was seen at).
const HEADS_KEPT_MAX: usize = 100_000;

/// What one honest node reported over all its lives: a restarted node's
/// status starts again from nothing, so what an earlier life accepted or
/// saw is judged from here, not from its last status.
#[derive(Default)]
struct NodeTrust {
    /// The life observed last (`ChainStatus::boots`).
    boots: u32,
    /// Certificates accepted in any life.
    accepted: BTreeSet<Hash>,
    /// How many of the current life's acceptances are in `accepted`
    /// (a life's set only grows).
    accepted_merged: usize,
    /// Inconsistent heads counted by the lives that ended, and by the
    /// current one so far.
    inconsistencies_ended: u64,
    inconsistencies_now: u64,
}

impl NodeTrust {
    fn inconsistencies(&self) -> u64 {
        self.inconsistencies_ended + self.inconsistencies_now
    }
}

/// Watches phases, heights and partitions while the run goes on.
#[derive(Default)]
pub struct TrustChecker {
    pub timeline: Timeline,
    /// First time every live honest node was in phase 3 (all booted).
    all_phase3_at_ms: Option<u64>,
    /// Live honest nodes not in phase 3 at the last observation.
    behind: Vec<String>,
    /// Per partition in progress: (nodes on the minority side, the highest
    /// height committed anywhere when it began, by replicas).
    partition: Option<(Vec<usize>, u64)>,
    minority_violations: Vec<String>,
    partitions_checked: u32,
    /// Per node, what it reported over its lives (honest nodes only).
    nodes: Vec<NodeTrust>,
    /// Every distinct certificate-log head an honest node reported, with
    /// the first node that did (at most [`HEADS_KEPT_MAX`]).
    heads: BTreeMap<LogHead, usize>,
}

impl TrustChecker {
    pub fn new(timeline: Timeline) -> TrustChecker {
        TrustChecker {
            timeline,
            ..TrustChecker::default()
        }
    }

    pub fn observe<'a>(&mut self, now_ms: u64, nodes: impl Iterator<Item = TrustView<'a>>) {
        let mut samples = vec![GroupSample::default(); self.timeline.groups.len()];
        for sample in &mut samples {
            sample.height_min = u64::MAX;
        }
        let mut live_honest = 0;
        let mut in_phase3 = 0;
        let mut behind = Vec::new();
        for view in nodes {
            if view.honest {
                self.remember(&view);
            }
            let (running, phase, height, missing, requests) = view.status.with(|status| {
                (
                    status.running,
                    status.trust.phase,
                    reached_height(status, view.light),
                    status.trust.missing_for_next_phase.clone(),
                    status.trust.certificate_requests,
                )
            });
            let Some(sample) = samples.get_mut(view.group) else {
                continue;
            };
            if !view.alive {
                sample.down += 1;
                continue;
            }
            sample.phase_counts[usize::from(phase.min(3))] += 1;
            sample.height_min = sample.height_min.min(height);
            sample.height_max = sample.height_max.max(height);
            if view.honest {
                live_honest += 1;
                if running && phase >= 3 {
                    in_phase3 += 1;
                } else if behind.len() < SHOWN_MAX {
                    behind.push(format!(
                        "n{}{} in phase {phase} at height {height} ({} certificate requests; missing {})",
                        view.index,
                        if view.light { " (light)" } else { "" },
                        requests,
                        missing.as_deref().unwrap_or("nothing")
                    ));
                }
            }
        }
        for sample in &mut samples {
            if sample.height_min == u64::MAX {
                sample.height_min = 0;
            }
        }
        if live_honest > 0 && in_phase3 == live_honest && self.all_phase3_at_ms.is_none() {
            self.all_phase3_at_ms = Some(now_ms);
            self.timeline.markers.push(TimelineMarker {
                at_ms: now_ms,
                label: "all honest nodes in phase 3".into(),
            });
        }
        self.behind = behind;
        self.timeline.samples.push(TimelineSample {
            at_ms: now_ms,
            groups: samples,
        });
    }

    /// Adds what honest node `view` reports now to what it reported in
    /// this and earlier lives.
    fn remember(&mut self, view: &TrustView<'_>) {
        if self.nodes.len() <= view.index {
            self.nodes.resize_with(view.index + 1, NodeTrust::default);
        }
        let node = &mut self.nodes[view.index];
        let heads = &mut self.heads;
        view.status.with(|status| {
            if status.chain.boots == 0 {
                // No chain service (which publishes the trust status) has
                // started in this process yet: nothing reported.
                return;
            }
            let trust = &status.trust;
            if status.chain.boots != node.boots {
                node.boots = status.chain.boots;
                node.inconsistencies_ended += node.inconsistencies_now;
                node.inconsistencies_now = 0;
                node.accepted_merged = 0;
            }
            node.inconsistencies_now = node.inconsistencies_now.max(trust.head_inconsistencies);
            if trust.accepted_certificates.len() != node.accepted_merged {
                node.accepted_merged = trust.accepted_certificates.len();
                for fingerprint in &trust.accepted_certificates {
                    if node.accepted.len() >= ACCEPTED_PER_NODE_MAX {
                        break;
                    }
                    node.accepted.insert(*fingerprint);
                }
            }
            if let Some(head) = trust.log_head
                && heads.len() < HEADS_KEPT_MAX
            {
                heads.entry(head).or_insert(view.index);
            }
        });
    }

    /// A partition began: remember the side without a validator quorum.
    /// `heights` are [`reached_height`]s, `light` marks the light nodes
    /// (their trusted heights do not count as committed).
    pub fn partition_began(
        &mut self,
        group_of: &[u16],
        validators: &ValidatorSet,
        validator_ids: &[Hash],
        heights: &[u64],
        light: &[bool],
    ) {
        let groups = group_of.iter().copied().max().map_or(0, |max| max + 1);
        let mut minority = Vec::new();
        for group in 0..groups {
            let stake: u64 = validator_ids
                .iter()
                .enumerate()
                .filter(|(index, _)| group_of.get(*index) == Some(&group))
                .filter_map(|(_, id)| validators.index_of(id))
                .filter_map(|index| validators.get(index))
                .map(|validator| validator.stake)
                .sum();
            if !validators.is_quorum(stake) {
                minority.extend(
                    group_of
                        .iter()
                        .enumerate()
                        .filter(|(_, of)| **of == group)
                        .map(|(index, _)| index),
                );
            }
        }
        let highest = heights
            .iter()
            .enumerate()
            .filter(|(index, _)| !light.get(*index).copied().unwrap_or(false))
            .map(|(_, height)| *height)
            .max()
            .unwrap_or(0);
        self.partition = Some((minority, highest));
    }

    /// A partition healed: nobody on the minority side may have gone
    /// beyond the height committed anywhere when it began — a replica by
    /// committing, a light node by trusting a header above it.
    pub fn partition_ended(&mut self, heights: &[u64], honest: &[bool], light: &[bool]) {
        let Some((minority, highest)) = self.partition.take() else {
            return;
        };
        self.partitions_checked += 1;
        for index in minority {
            let height = heights.get(index).copied().unwrap_or(0);
            if height > highest
                && honest.get(index).copied().unwrap_or(false)
                && self.minority_violations.len() < SHOWN_MAX
            {
                self.minority_violations
                    .push(if light.get(index).copied().unwrap_or(false) {
                        format!(
                            "light node n{index} on the minority side came to trust a header at height {height} (highest committed before the partition {highest})"
                        )
                    } else {
                        format!(
                            "n{index} on the minority side reached height {height} (highest before the partition {highest})"
                        )
                    });
            }
        }
    }

    pub fn all_phase3_at_ms(&self) -> Option<u64> {
        self.all_phase3_at_ms
    }

    /// Every live honest node has been in phase 3, and is now.
    pub fn phase3_holds(&self) -> bool {
        self.all_phase3_at_ms.is_some() && self.behind.is_empty()
    }

    /// The minority checker's verdict.
    pub fn minority_property(&self) -> PropertyResult {
        PropertyResult {
            name: "minority-commits-nothing".into(),
            passed: self.minority_violations.is_empty() && self.partitions_checked > 0,
            detail: if !self.minority_violations.is_empty() {
                self.minority_violations.join("; ")
            } else if self.partitions_checked == 0 {
                format!(
                    "{NOT_EXERCISED}: no partition was observed, so no minority side was judged"
                )
            } else {
                format!(
                    "over {} partition(s), no node on a side without a validator quorum committed a new block or trusted a new header",
                    self.partitions_checked
                )
            },
        }
    }

    /// Every live honest node in phase 3 within the scenario's bound, and
    /// still there at the end.
    pub fn phase3_property(&self, scenario: &Scenario) -> PropertyResult {
        let bound_s = scenario.properties.phase3_within_s;
        let reached = self.all_phase3_at_ms.map(|at| at as f64 / 1000.0);
        PropertyResult {
            name: "phase-3".into(),
            passed: reached.is_some_and(|at| at <= bound_s) && self.behind.is_empty(),
            detail: match (reached, self.behind.is_empty()) {
                (Some(at), true) => format!(
                    "every live honest node reached bootstrap phase 3 by {at:.1} s (bound {bound_s} s) and stayed"
                ),
                (Some(at), false) => format!(
                    "all were in phase 3 at {at:.1} s, but at the end: {}",
                    self.behind.join(", ")
                ),
                (None, _) => format!(
                    "not every live honest node reached phase 3 (bound {bound_s} s): {}",
                    self.behind.join(", ")
                ),
            },
        }
    }

    /// The trust properties, judged against TrustChain's state rebuilt from
    /// an honest node's chain: `audited` all of it, `held` up to the lowest
    /// height every live honest node reached (and that height). `resolved` are the names
    /// honest light nodes resolved (see [`crate::light::LightChecker`]).
    pub fn properties(
        &self,
        scenario: &Scenario,
        nodes: &[TrustView<'_>],
        audited: Result<&SharedTrust, String>,
        held: Result<(&SharedTrust, u64), String>,
        byzantine_authorities: &[(usize, Hash)],
        resolved: &[ResolvedName],
    ) -> Vec<PropertyResult> {
        let mut properties = Vec::new();
        properties.push(self.phase3_property(scenario));
        let trust = match audited {
            Ok(trust) => trust,
            Err(error) => {
                for name in ["ct-consistent", "only-logged-certificates", "names-resolve"] {
                    properties.push(PropertyResult {
                        name: name.into(),
                        passed: false,
                        detail: format!("no audited chain to judge against: {error}"),
                    });
                }
                return properties;
            }
        };
        let trust = trust.read();
        let log = trust.log();

        if !byzantine_authorities.is_empty() {
            let mut uncaught = Vec::new();
            let mut caught = Vec::new();
            for (index, id) in byzantine_authorities {
                let findings = trust.findings_against(id);
                if trust.is_authority_revoked(id) && !findings.is_empty() {
                    let kinds: Vec<String> = findings
                        .iter()
                        .map(|finding| format!("{:?}", finding.kind))
                        .collect();
                    caught.push(format!("n{index} ({})", kinds.join(", ")));
                } else {
                    uncaught.push(format!("n{index}"));
                }
            }
            properties.push(PropertyResult {
                name: "byzantine-authorities-revoked".into(),
                passed: uncaught.is_empty(),
                detail: if uncaught.is_empty() {
                    format!(
                        "every Byzantine authority has findings on chain and is revoked: {}",
                        caught.join("; ")
                    )
                } else {
                    format!(
                        "Byzantine authorities not caught: {} (caught: {})",
                        uncaught.join(", "),
                        caught.join("; ")
                    )
                },
            });
        }

        // One log: every head an honest node held, in any of its lives, is
        // the audited log's head at its size.
        let mut inconsistent = Vec::new();
        for view in nodes.iter().filter(|view| view.honest) {
            let seen = self
                .nodes
                .get(view.index)
                .map_or(0, NodeTrust::inconsistencies);
            if seen > 0 && inconsistent.len() < SHOWN_MAX {
                inconsistent.push(format!("n{} saw {seen} inconsistent heads", view.index));
            }
        }
        for (head, index) in &self.heads {
            match log.head_at(head.size) {
                Ok(ours) if ours == *head => {}
                _ if inconsistent.len() < SHOWN_MAX => inconsistent.push(format!(
                    "n{index}'s head (size {}) is not the audited log's",
                    head.size
                )),
                _ => {}
            }
        }
        properties.push(PropertyResult {
            name: "ct-consistent".into(),
            passed: inconsistent.is_empty() && !self.heads.is_empty(),
            detail: if inconsistent.is_empty() && self.heads.is_empty() {
                format!("{NOT_EXERCISED}: no honest node reported a log head")
            } else if inconsistent.is_empty() {
                format!(
                    "{} distinct heads held by honest nodes over the run, all prefixes of one log of {} certificates",
                    self.heads.len(),
                    log.len()
                )
            } else {
                inconsistent.join("; ")
            },
        });

        // Accepted certificates are logged, whichever life accepted them.
        let mut accepted = 0usize;
        let mut unlogged = Vec::new();
        for view in nodes.iter().filter(|view| view.honest) {
            let Some(node) = self.nodes.get(view.index) else {
                continue;
            };
            for fingerprint in &node.accepted {
                accepted += 1;
                if trust.certificate(fingerprint).is_none() && unlogged.len() < SHOWN_MAX {
                    unlogged.push(format!("n{} accepted {fingerprint}", view.index));
                }
            }
        }
        properties.push(PropertyResult {
            name: "only-logged-certificates".into(),
            passed: unlogged.is_empty() && accepted > 0,
            detail: if unlogged.is_empty() && accepted == 0 {
                format!("{NOT_EXERCISED}: no honest node accepted a certificate")
            } else if unlogged.is_empty() {
                format!("all {accepted} certificate acceptances by honest nodes were of logged certificates")
            } else {
                format!("certificates absent from the log were accepted: {}", unlogged.join("; "))
            },
        });

        // Names resolve, in the state every live honest node holds.
        let zone = scenario
            .trust
            .as_ref()
            .map_or("mesh", |trust| trust.zone.as_str())
            .to_string();
        let register = scenario
            .trust
            .as_ref()
            .is_some_and(|trust| trust.register_names);
        if !register {
            return properties;
        }
        let (held, held_height) = match held {
            Ok((held, height)) => (held.read(), height),
            Err(error) => {
                properties.push(PropertyResult {
                    name: "names-resolve".into(),
                    passed: false,
                    detail: format!("no state held by every node to judge against: {error}"),
                });
                return properties;
            }
        };
        let mut missing = Vec::new();
        let mut registered = 0;
        for view in nodes.iter().filter(|view| view.honest) {
            let Ok(name) = DnsName::parse(&format!("n{}.{zone}", view.index)) else {
                continue;
            };
            let owner = view
                .status
                .with(|status| status.node_id.map(|id| Hash(id.0)));
            match (held.record(&name), owner) {
                (Some(record), Some(owner))
                    if record.owner == owner
                        && record.addrs.contains(&node_ip(view.index as u32))
                        && held
                            .certificate(&record.certificate)
                            .is_some_and(|(certificate, _)| certificate.subject() == owner) =>
                {
                    registered += 1;
                }
                (record, _) if missing.len() < SHOWN_MAX => missing.push(format!(
                    "{name}: {}",
                    if record.is_some() {
                        "wrong record"
                    } else {
                        "not registered"
                    }
                )),
                _ => {}
            }
        }
        // What light nodes resolved names to is what the chain says. An
        // address is judged against the audited record (addresses do not
        // move in the simulator); "no such name" is not judged here, as it
        // depends on the height it was resolved at (`light-proven` checks
        // the proof of every kept answer, absent or not).
        let mut misresolved = Vec::new();
        let mut resolved_judged = 0usize;
        for resolved in resolved {
            let Some(addr) = resolved.addr else {
                continue;
            };
            resolved_judged += 1;
            let record = DnsName::parse(&resolved.name)
                .ok()
                .and_then(|name| trust.record(&name));
            let wrong = match &record {
                Some(record) if record.addrs.contains(&addr) => continue,
                Some(record) => format!(
                    "the audited record says {}",
                    record
                        .addrs
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                None => "the audited state has no such name".to_string(),
            };
            if misresolved.len() < SHOWN_MAX {
                misresolved.push(format!(
                    "light node n{} resolved {} to {addr}, but {wrong}",
                    resolved.node, resolved.name
                ));
            }
        }
        let light_detail = if resolved_judged == 0 {
            String::new()
        } else if misresolved.is_empty() {
            format!(
                "; the {resolved_judged} addresses honest light nodes resolved names to are the audited records'"
            )
        } else {
            format!(
                "; light nodes resolved names wrongly: {}",
                misresolved.join("; ")
            )
        };
        properties.push(PropertyResult {
            name: "names-resolve".into(),
            passed: missing.is_empty() && misresolved.is_empty() && registered > 0,
            detail: if missing.is_empty() && registered == 0 {
                format!("{NOT_EXERCISED}: no honest node's name was judged{light_detail}")
            } else if missing.is_empty() {
                format!(
                    "all {registered} honest names resolve to their node's address and certificate in the state every live honest node holds{light_detail}"
                )
            } else {
                format!(
                    "names that do not resolve on every node (in the state at height {held_height}, the lowest a live honest node reached): {}{light_detail}",
                    missing.join("; ")
                )
            },
        });
        properties
    }
}

#[cfg(test)]
mod tests {
    use hm_env::mem::SeededEntropy;
    use hm_kernel::app::{Application, BlockContext};
    use hm_node::app::{NodeApp, trust_app_for, trust_tx};
    use hm_node::{NodeId, NodeStatus};
    use hm_trustchain::cert::{Certificate, CertificateRequest, SignedRequest};
    use hm_trustchain::dns::{NameClaim, SignedNameClaim};
    use hm_trustchain::tx::TrustTx;
    use hm_wire::{KemSecretKey, SigningKey};

    use super::*;
    use crate::testkit::{assert_fails, assert_passes, one_validator_chain, property};

    /// Block times of the crafted chain.
    const TIME_MS: u64 = 1_000_000;

    /// Two nodes (n0 and n1), one genesis validator (n0), names registered.
    const TRUST: &str = r#"
        [nodes]
        count = 2
        seeds = 1
        [chain]
        validators = 1
        [trust]
        zone = "mesh"
        [properties]
        phase3_within_s = 60
    "#;

    fn scenario() -> Scenario {
        Scenario::parse("test.toml", TRUST).expect("a valid scenario")
    }

    /// TrustChain's state after two crafted blocks: height 1 logs a
    /// certificate the chain issued to n0, height 2 registers n0.mesh
    /// (n0's address, that certificate).
    struct Logged {
        trust: SharedTrust,
        validators: ValidatorSet,
        validator: Hash,
        /// n0's identity and its logged certificate.
        owner: Hash,
        certificate: Hash,
        head: LogHead,
    }

    fn logged() -> Logged {
        let (validator, genesis, zone) = one_validator_chain("trust-test");
        let trust = SharedTrust::new(trust_app_for(&genesis, zone).expect("a valid genesis"));
        let mut app = NodeApp::new(trust.clone());
        let commit = |app: &mut NodeApp, height: u64, tx: TrustTx| {
            let block = BlockContext::new(height, TIME_MS + height);
            let execution = app.execute_block(block, &[trust_tx(&tx)]);
            assert!(
                execution.results.iter().all(Result::is_ok),
                "{:?}",
                execution.results
            );
            app.commit(height, &execution.updates).expect("in order");
        };
        let subject = SigningKey::generate(&SeededEntropy::new(2, b"trust-test-subject"));
        let entropy = SeededEntropy::new(3, b"trust-test");
        let request = SignedRequest::sign(
            CertificateRequest {
                subject_key: subject.verifying_key(),
                kem_key: KemSecretKey::generate(&entropy).public_key(),
                dns_names: Vec::new(),
                validity_ms: 3_600_000,
                requested_at_ms: TIME_MS,
                nonce: 1,
            },
            &subject,
            &entropy,
        );
        commit(&mut app, 1, TrustTx::IssueCertificate(request.clone()));
        let certificate = Certificate::issue_by_chain(request, 1, TIME_MS + 1).fingerprint();
        let claim = NameClaim {
            name: DnsName::parse("n0.mesh").expect("a valid name"),
            owner_key: subject.verifying_key(),
            addrs: vec![node_ip(0)],
            certificate,
            sequence: 1,
        };
        commit(
            &mut app,
            2,
            TrustTx::RegisterName(SignedNameClaim::sign(claim, &subject, &entropy)),
        );
        let head = trust.read().log_head();
        assert_eq!(head.size, 1);
        assert!(trust.read().certificate(&certificate).is_some());
        Logged {
            trust,
            validators: genesis.validator_set().expect("a valid genesis"),
            validator: validator.verifying_key().fingerprint(),
            owner: subject.verifying_key().fingerprint(),
            certificate,
            head,
        }
    }

    fn checker() -> TrustChecker {
        let (groups, _) = groups(&scenario(), &[false, false]);
        TrustChecker::new(Timeline {
            interval_ms: 1_000,
            groups,
            ..Timeline::default()
        })
    }

    /// A running node in bootstrap phase `phase`, in its `boots`-th life.
    fn node(boots: u32, phase: u8) -> StatusHandle {
        let status = StatusHandle::default();
        set(&status, boots, phase);
        status
    }

    fn set(status: &StatusHandle, boots: u32, phase: u8) {
        status.update(|status| {
            status.running = true;
            status.chain.boots = boots;
            status.trust.phase = phase;
        });
    }

    /// A new life: the node's status starts again from nothing.
    fn restart(status: &StatusHandle, boots: u32, phase: u8) {
        status.update(|status| *status = NodeStatus::default());
        set(status, boots, phase);
    }

    fn with_head(status: &StatusHandle, head: LogHead) {
        status.update(|status| status.trust.log_head = Some(head));
    }

    fn accepting(status: &StatusHandle, certificate: Hash) {
        status.update(|status| {
            status.trust.accepted_certificates.insert(certificate);
        });
    }

    /// A head of size 1 that is not the crafted log's.
    const FORKED: LogHead = LogHead {
        size: 1,
        root: Hash([7; 32]),
    };

    /// `(status, honest)` per node, all alive.
    fn views<'a>(nodes: &[(&'a StatusHandle, bool)]) -> Vec<TrustView<'a>> {
        nodes
            .iter()
            .enumerate()
            .map(|(index, (status, honest))| TrustView {
                index,
                status,
                alive: true,
                honest: *honest,
                light: false,
                group: if *honest { usize::from(index > 0) } else { 2 },
            })
            .collect()
    }

    fn observe(checker: &mut TrustChecker, now_ms: u64, nodes: &[(&StatusHandle, bool)]) {
        checker.observe(now_ms, views(nodes).into_iter());
    }

    /// Property `name`, judged over `nodes` against the crafted chain.
    fn verdict(
        checker: &TrustChecker,
        logged: &Logged,
        nodes: &[(&StatusHandle, bool)],
        name: &str,
    ) -> PropertyResult {
        resolved_verdict(checker, logged, nodes, &[], name)
    }

    /// Property `name`, as [`verdict`], with names light nodes resolved.
    fn resolved_verdict(
        checker: &TrustChecker,
        logged: &Logged,
        nodes: &[(&StatusHandle, bool)],
        resolved: &[ResolvedName],
        name: &str,
    ) -> PropertyResult {
        let properties = checker.properties(
            &scenario(),
            &views(nodes),
            Ok(&logged.trust),
            Ok((&logged.trust, 2)),
            &[],
            resolved,
        );
        property(&properties, name)
    }

    #[test]
    fn no_property_passes_over_an_empty_history() {
        let logged = logged();
        let checker = checker();
        assert_fails(
            &verdict(&checker, &logged, &[], "phase-3"),
            "not every live honest node reached phase 3",
        );
        for name in ["ct-consistent", "only-logged-certificates", "names-resolve"] {
            assert_fails(&verdict(&checker, &logged, &[], name), NOT_EXERCISED);
        }
        assert_fails(&checker.minority_property(), NOT_EXERCISED);
        // Nothing to judge against: everything fails, none passes.
        let unaudited = checker.properties(
            &scenario(),
            &[],
            Err("no honest node to audit".into()),
            Err("no honest node to audit".into()),
            &[],
            &[],
        );
        assert!(unaudited.iter().all(|property| !property.passed));
    }

    #[test]
    fn phase_3_fails_for_a_node_behind_at_the_end() {
        let logged = logged();
        let (a, b) = (node(1, 3), node(1, 3));
        let mut checker = checker();
        observe(&mut checker, 30_000, &[(&a, true), (&b, true)]);
        assert_passes(&verdict(&checker, &logged, &[], "phase-3"));
        // n1 restarts and comes back in phase 2, to stay.
        restart(&b, 2, 2);
        observe(&mut checker, 40_000, &[(&a, true), (&b, true)]);
        assert_fails(
            &verdict(&checker, &logged, &[], "phase-3"),
            "all were in phase 3 at 30.0 s, but at the end: n1 in phase 2",
        );
    }

    #[test]
    fn phase_3_fails_when_reached_after_the_bound() {
        let logged = logged();
        let (a, b) = (node(1, 3), node(1, 2));
        let mut checker = checker();
        observe(&mut checker, 30_000, &[(&a, true), (&b, true)]);
        set(&b, 1, 3);
        observe(&mut checker, 61_000, &[(&a, true), (&b, true)]);
        assert_fails(
            &verdict(&checker, &logged, &[], "phase-3"),
            "by 61.0 s (bound 60 s)",
        );
    }

    #[test]
    fn a_node_on_the_minority_side_that_commits_fails_minority_commits_nothing() {
        let logged = logged();
        // n0, the only validator, alone on side 0; n1 on side 1, without stake.
        let partition = |checker: &mut TrustChecker, before: [u64; 2], after: [u64; 2], honest| {
            let validators = [logged.validator];
            let light = [false, false];
            checker.partition_began(&[0, 1], &logged.validators, &validators, &before, &light);
            checker.partition_ended(&after, &[true, honest], &light);
        };
        let mut checker = checker();
        partition(&mut checker, [5, 5], [9, 5], true);
        assert_passes(&checker.minority_property());
        partition(&mut checker, [9, 5], [12, 10], true);
        assert_fails(
            &checker.minority_property(),
            "n1 on the minority side reached height 10 (highest before the partition 9)",
        );
        // A Byzantine node there is not judged.
        let mut checker = self::checker();
        partition(&mut checker, [9, 5], [12, 10], false);
        assert_passes(&checker.minority_property());
    }

    #[test]
    fn ct_consistent_fails_on_a_head_that_is_not_the_logs() {
        let logged = logged();
        let (a, b) = (node(1, 3), node(1, 3));
        let both = [(&a, true), (&b, true)];
        with_head(&a, logged.head);
        with_head(&b, logged.head);
        let mut checker = checker();
        observe(&mut checker, 1_000, &both);
        assert_passes(&verdict(&checker, &logged, &both, "ct-consistent"));
        with_head(&b, FORKED);
        observe(&mut checker, 2_000, &both);
        assert_fails(
            &verdict(&checker, &logged, &both, "ct-consistent"),
            "n1's head (size 1) is not the audited log's",
        );
    }

    #[test]
    fn ct_consistent_fails_on_a_head_an_earlier_life_held() {
        let logged = logged();
        let a = node(1, 3);
        with_head(&a, FORKED);
        let mut checker = checker();
        observe(&mut checker, 1_000, &[(&a, true)]);
        restart(&a, 2, 3);
        with_head(&a, logged.head);
        observe(&mut checker, 2_000, &[(&a, true)]);
        assert_fails(
            &verdict(&checker, &logged, &[(&a, true)], "ct-consistent"),
            "n0's head (size 1) is not the audited log's",
        );
    }

    #[test]
    fn ct_consistent_counts_inconsistent_heads_of_every_life() {
        let logged = logged();
        let a = node(1, 3);
        with_head(&a, logged.head);
        a.update(|status| status.trust.head_inconsistencies = 2);
        let mut checker = checker();
        observe(&mut checker, 1_000, &[(&a, true)]);
        // A real node's new process, polled before its chain service
        // started, reports nothing yet.
        restart(&a, 0, 0);
        observe(&mut checker, 1_500, &[(&a, true)]);
        // The next life counts from zero, and saw one more (seen twice).
        restart(&a, 2, 3);
        with_head(&a, logged.head);
        a.update(|status| status.trust.head_inconsistencies = 1);
        observe(&mut checker, 2_000, &[(&a, true)]);
        observe(&mut checker, 3_000, &[(&a, true)]);
        assert_fails(
            &verdict(&checker, &logged, &[(&a, true)], "ct-consistent"),
            "n0 saw 3 inconsistent heads",
        );
    }

    #[test]
    fn accepting_an_unlogged_certificate_fails_only_logged_certificates() {
        let logged = logged();
        let (a, b) = (node(1, 3), node(1, 3));
        let unlogged = Hash([5; 32]);
        accepting(&a, logged.certificate);
        let mut checker = checker();
        observe(&mut checker, 1_000, &[(&a, true), (&b, true)]);
        let name = "only-logged-certificates";
        assert_passes(&verdict(&checker, &logged, &[(&a, true), (&b, true)], name));
        accepting(&b, unlogged);
        observe(&mut checker, 2_000, &[(&a, true), (&b, true)]);
        assert_fails(
            &verdict(&checker, &logged, &[(&a, true), (&b, true)], name),
            &format!("certificates absent from the log were accepted: n1 accepted {unlogged}"),
        );
        // A Byzantine node's acceptances are its own business.
        let mut checker = self::checker();
        observe(&mut checker, 1_000, &[(&a, true), (&b, false)]);
        assert_passes(&verdict(
            &checker,
            &logged,
            &[(&a, true), (&b, false)],
            name,
        ));
    }

    #[test]
    fn an_unlogged_certificate_accepted_in_an_earlier_life_still_fails() {
        let logged = logged();
        let a = node(1, 3);
        let unlogged = Hash([5; 32]);
        accepting(&a, unlogged);
        let mut checker = checker();
        observe(&mut checker, 1_000, &[(&a, true)]);
        // The restarted node's status no longer shows it.
        restart(&a, 2, 3);
        accepting(&a, logged.certificate);
        observe(&mut checker, 2_000, &[(&a, true)]);
        assert_fails(
            &verdict(&checker, &logged, &[(&a, true)], "only-logged-certificates"),
            &format!("n0 accepted {unlogged}"),
        );
    }

    #[test]
    fn an_acceptance_made_in_an_earlier_life_counts_as_exercised() {
        let logged = logged();
        let a = node(1, 3);
        let name = "only-logged-certificates";
        let mut checker = checker();
        observe(&mut checker, 1_000, &[(&a, true)]);
        assert_fails(
            &verdict(&checker, &logged, &[(&a, true)], name),
            NOT_EXERCISED,
        );
        accepting(&a, logged.certificate);
        observe(&mut checker, 2_000, &[(&a, true)]);
        restart(&a, 2, 3);
        observe(&mut checker, 3_000, &[(&a, true)]);
        let verdict = verdict(&checker, &logged, &[(&a, true)], name);
        assert_passes(&verdict);
        assert!(
            verdict.detail.starts_with("all 1 certificate"),
            "{}",
            verdict.detail
        );
    }

    #[test]
    fn a_name_that_does_not_resolve_fails_names_resolve() {
        let logged = logged();
        let (a, b) = (node(1, 3), node(1, 3));
        a.update(|status| status.node_id = Some(NodeId(logged.owner.0)));
        let checker = checker();
        assert_passes(&verdict(&checker, &logged, &[(&a, true)], "names-resolve"));
        // n1 never registered its name.
        assert_fails(
            &verdict(
                &checker,
                &logged,
                &[(&a, true), (&b, true)],
                "names-resolve",
            ),
            "names that do not resolve on every node (in the state at height 2, the lowest a live honest node reached): n1.mesh: not registered",
        );
        // n0's name is registered, but to another identity than n0's.
        a.update(|status| status.node_id = Some(NodeId([9; 32])));
        assert_fails(
            &verdict(&checker, &logged, &[(&a, true)], "names-resolve"),
            "n0.mesh: wrong record",
        );
    }

    #[test]
    fn a_byzantine_authority_without_findings_fails_revocation() {
        let logged = logged();
        let properties = checker().properties(
            &scenario(),
            &[],
            Ok(&logged.trust),
            Ok((&logged.trust, 2)),
            &[(0, logged.validator)],
            &[],
        );
        assert_fails(
            &property(&properties, "byzantine-authorities-revoked"),
            "Byzantine authorities not caught: n0",
        );
    }

    #[test]
    fn a_light_node_on_the_minority_side_that_trusts_a_new_header_fails() {
        let logged = logged();
        let validators = [logged.validator];
        // n0, the only validator, alone on side 0; n1, a light node, on side 1.
        let light = [false, true];
        let mut checker = checker();
        // The light node's trusted height does not count as committed: the
        // highest committed height is n0's 5, not n1's 6.
        checker.partition_began(&[0, 1], &logged.validators, &validators, &[5, 6], &light);
        checker.partition_ended(&[9, 6], &[true, true], &light);
        assert_fails(
            &checker.minority_property(),
            "light node n1 on the minority side came to trust a header at height 6 (highest committed before the partition 5)",
        );
        let mut checker = self::checker();
        checker.partition_began(&[0, 1], &logged.validators, &validators, &[5, 4], &light);
        checker.partition_ended(&[9, 5], &[true, true], &light);
        assert_passes(&checker.minority_property());
    }

    #[test]
    fn a_light_nodes_reached_height_is_its_trusted_height() {
        let status = StatusHandle::default();
        status.update(|status| {
            status.chain.height = 0;
            status.chain.light = Some(hm_node::LightStatus {
                trusted_height: 7,
                ..Default::default()
            });
        });
        assert_eq!(status.with(|status| reached_height(status, true)), 7);
        assert_eq!(status.with(|status| reached_height(status, false)), 0);
        // A light node whose client has not reported: nothing trusted.
        let quiet = StatusHandle::default();
        assert_eq!(quiet.with(|status| reached_height(status, true)), 0);
    }

    #[test]
    fn a_light_node_resolving_a_name_wrongly_fails_names_resolve() {
        let logged = logged();
        let a = node(1, 3);
        a.update(|status| status.node_id = Some(NodeId(logged.owner.0)));
        let resolved = |name: &str, addr: Option<std::net::Ipv6Addr>| ResolvedName {
            node: 1,
            name: name.into(),
            addr,
        };
        let nodes = [(&a, true)];
        let judged = |names: &[ResolvedName]| {
            resolved_verdict(&checker(), &logged, &nodes, names, "names-resolve")
        };
        let right = judged(&[resolved("n0.mesh", Some(node_ip(0)))]);
        assert_passes(&right);
        assert!(
            right.detail.contains(
                "the 1 addresses honest light nodes resolved names to are the audited records'"
            ),
            "{}",
            right.detail
        );
        // "Not registered" is not judged here (it depends on the height).
        assert_passes(&judged(&[resolved("n0.mesh", None)]));
        assert_fails(
            &judged(&[resolved("n0.mesh", Some(node_ip(5)))]),
            &format!(
                "light node n1 resolved n0.mesh to {}, but the audited record says {}",
                node_ip(5),
                node_ip(0)
            ),
        );
        assert_fails(
            &judged(&[resolved("n9.mesh", Some(node_ip(9)))]),
            "light node n1 resolved n9.mesh to",
        );
    }

    #[test]
    fn the_groups_are_validators_full_light_and_byzantine_when_they_have_nodes() {
        let scenario = Scenario::parse(
            "g.toml",
            "[nodes]\ncount = 8\nseeds = 1\nlight = 3\n[chain]\nvalidators = 2\n[trust]\n",
        )
        .expect("a scenario with light nodes");
        let byzantine = [false, false, false, false, false, false, false, true];
        let (rows, group_of) = groups(&scenario, &byzantine);
        let shown: Vec<(&str, u32)> = rows
            .iter()
            .map(|group| (group.name.as_str(), group.nodes))
            .collect();
        assert_eq!(
            shown,
            [
                ("validators", 2),
                ("full", 3),
                ("light", 2),
                ("byzantine", 1)
            ]
        );
        assert_eq!(group_of, [0, 0, 1, 1, 1, 2, 2, 3]);
        // Without light or Byzantine nodes, no empty rows.
        let (rows, group_of) = groups(&self::scenario(), &[false, false]);
        let names: Vec<&str> = rows.iter().map(|group| group.name.as_str()).collect();
        assert_eq!(names, ["validators", "full"]);
        assert_eq!(group_of, [0, 1]);
        // Without a chain, every node is just a node.
        let membership =
            Scenario::parse("m.toml", "[nodes]\ncount = 3\nseeds = 1\n").expect("membership only");
        let (rows, _) = groups(&membership, &[false, false, true]);
        let names: Vec<&str> = rows.iter().map(|group| group.name.as_str()).collect();
        assert_eq!(names, ["nodes", "byzantine"]);
    }
}
