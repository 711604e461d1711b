//! What a run concludes: each property's verdict and the run's outcome,
//! serialised as the JSON report and read by the checkers, the summary and
//! the HTML report.

use serde::{Deserialize, Serialize};

use crate::html::Timeline;
use crate::world::Counters;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PropertyResult {
    pub name: String,
    pub passed: bool,
    pub detail: String,
}

/// How a property's detail starts when it judged nothing (no height, no
/// partition, no certificate to judge): a failure, unless the scenario
/// lists the property in `properties.not_exercised_ok`.
pub const NOT_EXERCISED: &str = "not exercised";

/// Passes the properties that judged nothing when the scenario says that
/// is expected of them (`properties.not_exercised_ok`).
pub fn accept_expected_not_exercised(properties: &mut [PropertyResult], expected: &[String]) {
    for property in properties {
        if !property.passed
            && property.detail.starts_with(NOT_EXERCISED)
            && expected.contains(&property.name)
        {
            property.passed = true;
            property.detail.push_str(" (as the scenario expects)");
        }
    }
}

/// A scenario that declares a fork its expected outcome (Byzantine stake
/// beyond the fault bound): chain-agreement must fail — the fork found —
/// and passes as expected; if it held, the run fails, since the attack the
/// scenario is about did not happen. Whether the fork is accountable is
/// `fork-accountable`'s verdict.
///
/// Liveness is not required after the fork: the side that lost it holds no
/// quorum without the coalition, which may leave it for good. Its verdict
/// stays in the detail.
pub fn expect_fork(properties: &mut [PropertyResult]) {
    for property in properties {
        if property.name == "chain-liveness" && !property.passed {
            property.passed = true;
            property.detail = format!(
                "not required after the expected fork (the losing side holds no quorum without the coalition): {}",
                property.detail
            );
            continue;
        }
        if property.name != "chain-agreement" {
            continue;
        }
        if property.passed {
            property.passed = false;
            property.detail = format!(
                "the scenario expects a fork, and none happened: {}",
                property.detail
            );
        } else {
            property.passed = true;
            property.detail = format!("forked, as the scenario expects: {}", property.detail);
        }
    }
}

/// Everything one run produced; serialised as the JSON report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunOutcome {
    pub scenario: String,
    pub scenario_path: String,
    pub seed: u64,
    pub passed: bool,
    pub properties: Vec<PropertyResult>,
    pub nodes: u32,
    pub simulated_s: f64,
    pub wall_s: f64,
    pub peak_rss_bytes: u64,
    /// The scenario's mean one-way network latency (the unit of "message
    /// delays" in the chain speed figure).
    #[serde(default)]
    pub network_latency_ms: f64,
    pub counters: Counters,
    pub events_total: u64,
    pub events_per_wall_s: f64,
    pub digest: String,
    /// Seconds after the last fault until every view matched (if it did).
    pub converged_after_faults_s: Option<f64>,
    /// Protocol traffic summed over all nodes: where the message count goes.
    pub traffic: Traffic,
    pub panic: Option<String>,
    /// Phases, heights and faults over time (for the HTML report).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<Timeline>,
}

/// Membership messages sent, summed over every node of a run.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Traffic {
    /// Message kind name → messages sent.
    pub membership_sent_by_kind: std::collections::BTreeMap<String, u64>,
    pub membership_updates_sent: u64,
    pub connections_dialed: u64,
    /// Chain message kind → (messages, bytes) sent.
    pub chain_sent_by_kind: std::collections::BTreeMap<String, (u64, u64)>,
    /// Validators' own proposals committed, and the summed time from
    /// deciding to propose each to committing it.
    #[serde(default)]
    pub own_commits: u64,
    #[serde(default)]
    pub own_commit_latency_ms_total: u64,
    /// The same own commits by latency bucket (`hm_node::COMMIT_LATENCY_BUCKETS_MS`).
    #[serde(default)]
    pub own_commit_latency_buckets: Vec<u64>,
    /// Intervals between consecutive commits at validators, and their sum.
    #[serde(default)]
    pub commit_intervals: u64,
    #[serde(default)]
    pub commit_interval_ms_total: u64,
}

/// Adds per-bucket counts into `total`, growing it as needed.
pub(crate) fn add_buckets(total: &mut Vec<u64>, buckets: &[u64]) {
    if total.len() < buckets.len() {
        total.resize(buckets.len(), 0);
    }
    for (sum, count) in total.iter_mut().zip(buckets) {
        *sum += count;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(name: &str, passed: bool) -> PropertyResult {
        PropertyResult {
            name: name.into(),
            passed,
            detail: "detail".into(),
        }
    }

    #[test]
    fn an_expected_fork_must_happen_and_then_excuses_only_liveness() {
        // Forked as expected: agreement's failure passes, liveness is not
        // required, anything else still counts.
        let mut properties = vec![
            verdict("chain-agreement", false),
            verdict("chain-liveness", false),
            verdict("chain-validity", false),
        ];
        expect_fork(&mut properties);
        assert!(properties[0].passed && properties[0].detail.starts_with("forked, as"));
        assert!(properties[1].passed && properties[1].detail.starts_with("not required"));
        assert!(!properties[2].passed, "validity is never excused");
        // No fork: the run fails on agreement.
        let mut properties = vec![verdict("chain-agreement", true)];
        expect_fork(&mut properties);
        assert!(!properties[0].passed);
        assert!(properties[0].detail.contains("none happened"));
    }

    #[test]
    fn a_property_that_judged_nothing_fails_unless_expected() {
        let judged_nothing = || PropertyResult {
            name: "minority-commits-nothing".into(),
            passed: false,
            detail: format!("{NOT_EXERCISED}: no partition was observed"),
        };
        let mut properties = vec![judged_nothing()];
        accept_expected_not_exercised(&mut properties, &[]);
        assert!(!properties[0].passed);
        accept_expected_not_exercised(&mut properties, &["minority-commits-nothing".into()]);
        assert!(properties[0].passed);
        // A real violation is never excused.
        let mut violated = vec![PropertyResult {
            detail: "n3 committed height 7 on the minority side".into(),
            ..judged_nothing()
        }];
        accept_expected_not_exercised(&mut violated, &["minority-commits-nothing".into()]);
        assert!(!violated[0].passed);
    }
}
