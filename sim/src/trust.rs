//! TrustChain and bootstrap checkers, the minority-side checker, and the
//! timeline the HTML report draws.
//!
//! * `phase-3` — every live honest node is in bootstrap phase 3 by the
//!   scenario's bound (phases never go back; restarted nodes fast-forward).
//! * `ct-consistent` — every honest node's committed certificate-log head is
//!   the audited log's head at that size (one log, no forks, no rewrites),
//!   and no node ever committed a head that did not extend its previous one.
//! * `only-logged-certificates` — every certificate an honest node accepted
//!   from a peer is in the audited log.
//! * `names-resolve` — every honest node's name is registered in the
//!   audited state, points at its address and one of its certificates, and
//!   every live honest node has committed the height that registered it.
//! * `minority-commits-nothing` — while a partition lasts, nodes on a side
//!   whose validators hold no quorum commit no block beyond the highest
//!   height committed anywhere when it began.

use std::collections::BTreeSet;

use hm_kernel::validators::ValidatorSet;
use hm_node::StatusHandle;
use hm_node::app::SharedTrust;
use hm_trustchain::name::DnsName;
use hm_wire::Hash;

use crate::html::{
    GroupSample, Timeline, TimelineBand, TimelineGroup, TimelineMarker, TimelineSample,
};
use crate::net::node_ip;
use crate::runner::{NOT_EXERCISED, PropertyResult};
use crate::scenario::Scenario;

/// Nodes named in a failed property's detail.
const SHOWN_MAX: usize = 6;

/// One node as the trust checkers see it.
pub struct TrustView<'a> {
    pub index: usize,
    pub status: &'a StatusHandle,
    pub alive: bool,
    pub honest: bool,
    /// Timeline group (see [`groups`]).
    pub group: usize,
}

/// The report's node groups: validators, followers, Byzantine nodes.
pub fn groups(scenario: &Scenario, byzantine: &[bool]) -> (Vec<TimelineGroup>, Vec<usize>) {
    let validators = scenario.chain.as_ref().map_or(0, |chain| chain.validators);
    let group_of: Vec<usize> = (0..scenario.nodes.count)
        .map(|index| {
            if byzantine.get(index as usize).copied().unwrap_or(false) {
                2
            } else if index < validators {
                0
            } else {
                1
            }
        })
        .collect();
    let names = ["validators", "followers", "byzantine"];
    let groups = names
        .iter()
        .enumerate()
        .map(|(group, name)| TimelineGroup {
            name: (*name).to_string(),
            nodes: group_of.iter().filter(|of| **of == group).count() as u32,
        })
        .collect();
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

/// Watches phases, heights and partitions while the run goes on.
#[derive(Default)]
pub struct TrustChecker {
    pub timeline: Timeline,
    /// First time every live honest node was in phase 3 (all booted).
    all_phase3_at_ms: Option<u64>,
    /// Live honest nodes not in phase 3 at the last observation.
    behind: Vec<String>,
    /// Per partition in progress: (nodes on the minority side, the highest
    /// height committed anywhere when it began).
    partition: Option<(Vec<usize>, u64)>,
    minority_violations: Vec<String>,
    partitions_checked: u32,
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
            let (running, phase, height, missing, requests) = view.status.with(|status| {
                (
                    status.running,
                    status.trust.phase,
                    status.chain.height,
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
                        "n{} in phase {phase} at height {height} ({} certificate requests; missing {})",
                        view.index,
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

    /// A partition began: remember the side without a validator quorum.
    pub fn partition_began(
        &mut self,
        group_of: &[u16],
        validators: &ValidatorSet,
        validator_ids: &[Hash],
        heights: &[u64],
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
        let highest = heights.iter().copied().max().unwrap_or(0);
        self.partition = Some((minority, highest));
    }

    /// A partition healed: nobody on the minority side may have gone
    /// beyond the height committed anywhere when it began.
    pub fn partition_ended(&mut self, heights: &[u64], honest: &[bool]) {
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
                self.minority_violations.push(format!(
                    "n{index} on the minority side reached height {height} (highest before the partition {highest})"
                ));
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
                    "over {} partition(s), no node on a side without a validator quorum committed a new block",
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
    /// an honest node's chain.
    pub fn properties(
        &self,
        scenario: &Scenario,
        nodes: &[TrustView<'_>],
        audited: Result<&SharedTrust, String>,
        held: Result<&SharedTrust, String>,
        byzantine_authorities: &[(usize, Hash)],
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

        // One log: every node's head is the audited log's head at its size.
        let mut inconsistent = Vec::new();
        let mut heads = BTreeSet::new();
        for view in nodes.iter().filter(|view| view.honest) {
            let (head, seen) = view
                .status
                .with(|status| (status.trust.log_head, status.trust.head_inconsistencies));
            if seen > 0 && inconsistent.len() < SHOWN_MAX {
                inconsistent.push(format!("n{} saw {seen} inconsistent heads", view.index));
            }
            let Some(head) = head else { continue };
            heads.insert(head.size);
            match log.head_at(head.size) {
                Ok(ours) if ours == head => {}
                _ if inconsistent.len() < SHOWN_MAX => inconsistent.push(format!(
                    "n{}'s head (size {}) is not the audited log's",
                    view.index, head.size
                )),
                _ => {}
            }
        }
        properties.push(PropertyResult {
            name: "ct-consistent".into(),
            passed: inconsistent.is_empty() && !heads.is_empty(),
            detail: if inconsistent.is_empty() && heads.is_empty() {
                format!("{NOT_EXERCISED}: no honest node reported a log head")
            } else if inconsistent.is_empty() {
                format!(
                    "{} distinct heads across honest nodes, all prefixes of one log of {} certificates",
                    heads.len(),
                    log.len()
                )
            } else {
                inconsistent.join("; ")
            },
        });

        // Accepted certificates are logged.
        let mut accepted = 0usize;
        let mut unlogged = Vec::new();
        for view in nodes.iter().filter(|view| view.honest) {
            view.status.with(|status| {
                for fingerprint in &status.trust.accepted_certificates {
                    accepted += 1;
                    if trust.certificate(fingerprint).is_none() && unlogged.len() < SHOWN_MAX {
                        unlogged.push(format!("n{} accepted {fingerprint}", view.index));
                    }
                }
            });
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
        let held = match held {
            Ok(held) => held.read(),
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
        properties.push(PropertyResult {
            name: "names-resolve".into(),
            passed: missing.is_empty(),
            detail: if missing.is_empty() {
                format!(
                    "all {registered} honest names resolve to their node's address and certificate in the state every live honest node holds"
                )
            } else {
                format!("names that do not resolve on every node: {}", missing.join("; "))
            },
        });
        properties
    }
}
