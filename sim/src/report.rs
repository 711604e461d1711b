//! The one-screen summary (summary first, details after) and sweep tables.

use std::fmt::Write;

use crate::outcome::RunOutcome;

fn human_count(value: u64) -> String {
    match value {
        0..=9_999 => value.to_string(),
        10_000..=9_999_999 => format!("{:.1}k", value as f64 / 1e3),
        _ => format!("{:.1}M", value as f64 / 1e6),
    }
}

/// The command that replays this exact run.
pub fn reproduce_command(outcome: &RunOutcome) -> String {
    format!(
        "{}cargo sim run {} --seed {}",
        build_prefix(),
        outcome.scenario_path,
        outcome.seed
    )
}

/// `HM_SIM_FEATURES=… ` (with its trailing space) when this build has extra
/// features, else nothing: a deliberately broken build only reproduces as
/// itself. `cargo sim` passes `HM_SIM_FEATURES` on to hm-sim; a binary run
/// directly still knows the feature it was built with.
pub fn build_prefix() -> String {
    let features = std::env::var("HM_SIM_FEATURES")
        .ok()
        .map(|features| features.trim().to_string())
        .filter(|features| !features.is_empty());
    match features {
        Some(features)
            if features
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | ',')) =>
        {
            format!("HM_SIM_FEATURES={features} ")
        }
        Some(features) => format!("HM_SIM_FEATURES='{}' ", features.replace('\'', "")),
        None if cfg!(feature = "broken-skip-lock-check") => {
            "HM_SIM_FEATURES=broken-skip-lock-check ".into()
        }
        None => String::new(),
    }
}

/// The first lines of a run's summary: the verdict, then one line per
/// property. `mode` names the world ("hm-sim" or "hm-sim --real").
pub fn verdict_lines(
    out: &mut String,
    mode: &str,
    scenario: &str,
    seed: u64,
    passed: bool,
    properties: &[crate::outcome::PropertyResult],
) {
    let verdict = if passed { "PASS" } else { "FAIL" };
    let _ = writeln!(out, "{mode} · {scenario} · seed {seed} · {verdict}");
    for property in properties {
        let mark = if property.passed { "pass" } else { "FAIL" };
        let _ = writeln!(out, "  {mark}  {:<22} {}", property.name, property.detail);
    }
}

/// A histogram bucket's bound as text: "≤ 5 ms", "> 30 s", or "-".
pub fn bucket_bound(bound_ms: Option<u64>) -> String {
    match bound_ms {
        None => "-".into(),
        Some(u64::MAX) => "> 30 s".into(),
        Some(bound) => format!("≤ {bound} ms"),
    }
}

pub fn summary(outcome: &RunOutcome) -> String {
    let mut out = String::new();
    verdict_lines(
        &mut out,
        "hm-sim",
        &outcome.scenario,
        outcome.seed,
        outcome.passed,
        &outcome.properties,
    );
    let speedup = outcome.simulated_s / outcome.wall_s.max(1e-9);
    let _ = writeln!(
        out,
        "  {:.1} s simulated in {:.1} s wall ({speedup:.1}x) · {} nodes · {} datagrams ({} lost, {} cut by partitions) · {} events ({}/s) · peak memory {} MiB",
        outcome.simulated_s,
        outcome.wall_s,
        outcome.nodes,
        human_count(outcome.counters.datagrams_delivered),
        human_count(outcome.counters.datagrams_lost),
        human_count(outcome.counters.datagrams_partitioned),
        human_count(outcome.events_total),
        human_count(outcome.events_per_wall_s as u64),
        outcome.peak_rss_bytes >> 20,
    );
    let traffic = &outcome.traffic;
    if !traffic.membership_sent_by_kind.is_empty() {
        let kinds: Vec<String> = traffic
            .membership_sent_by_kind
            .iter()
            .filter(|(_, count)| **count > 0)
            .map(|(kind, count)| format!("{kind} {}", human_count(*count)))
            .collect();
        let _ = writeln!(
            out,
            "  membership messages: {} · {} updates · {} connections dialed",
            kinds.join(", "),
            human_count(traffic.membership_updates_sent),
            human_count(traffic.connections_dialed),
        );
    }
    if !traffic.chain_sent_by_kind.is_empty() {
        let kinds: Vec<String> = traffic
            .chain_sent_by_kind
            .iter()
            .map(|(kind, (messages, bytes))| {
                format!("{kind} {} ({} MiB)", human_count(*messages), bytes >> 20)
            })
            .collect();
        let _ = writeln!(out, "  chain messages: {}", kinds.join(", "));
    }
    if traffic.commit_intervals > 0 && traffic.own_commits > 0 {
        let interval_ms = traffic.commit_interval_ms_total as f64 / traffic.commit_intervals as f64;
        let latency_ms = traffic.own_commit_latency_ms_total as f64 / traffic.own_commits as f64;
        let _ = writeln!(
            out,
            "  chain speed (validators): a commit every {interval_ms:.0} ms ({:.2} commits/s) · own proposal to commit {latency_ms:.1} ms mean (median {}) = {:.1} one-way delays of {} ms",
            1000.0 / interval_ms.max(f64::MIN_POSITIVE),
            bucket_bound(hm_node::latency_quantile_ms(
                &traffic.own_commit_latency_buckets,
                0.5
            )),
            latency_ms / outcome.network_latency_ms.max(f64::MIN_POSITIVE),
            outcome.network_latency_ms,
        );
    }
    let _ = writeln!(out, "  digest {}", outcome.digest);
    if !outcome.passed {
        let _ = writeln!(out, "  reproduce: {}", reproduce_command(outcome));
    }
    out
}

pub fn sweep_summary(outcomes: &[RunOutcome]) -> String {
    let mut out = String::new();
    let failed: Vec<&RunOutcome> = outcomes.iter().filter(|outcome| !outcome.passed).collect();
    let wall_max = outcomes.iter().map(|o| o.wall_s).fold(0.0, f64::max);
    let _ = writeln!(
        out,
        "hm-sim sweep · {} runs · {} passed · {} failed · slowest {:.1} s wall",
        outcomes.len(),
        outcomes.len() - failed.len(),
        failed.len(),
        wall_max
    );
    for outcome in outcomes {
        let mark = if outcome.passed { "pass" } else { "FAIL" };
        let _ = writeln!(
            out,
            "  {mark}  {:<24} seed {:<6} {:>7.1} s sim {:>6.1} s wall  digest {}",
            outcome.scenario,
            outcome.seed,
            outcome.simulated_s,
            outcome.wall_s,
            outcome.digest.get(..16).unwrap_or("-")
        );
    }
    for outcome in failed {
        let reasons: Vec<String> = outcome
            .properties
            .iter()
            .filter(|p| !p.passed)
            .map(|p| format!("{}: {}", p.name, p.detail))
            .collect();
        let _ = writeln!(
            out,
            "  failed seed {}: {}",
            outcome.seed,
            reasons.join("; ")
        );
        let _ = writeln!(out, "    reproduce: {}", reproduce_command(outcome));
    }
    out
}
