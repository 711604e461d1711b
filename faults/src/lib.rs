#![doc = include_str!("../README.md")]

mod byzantine;
pub mod chain;
pub mod liar;
pub mod trust;

pub use byzantine::{GarbageEnv, GarbageNet, GarbageSocket, GarbageStats};

/// An impersonator's STOQ identity bindings: signed over the exporter value
/// of the other end's role, a valid signature over a value this session
/// never had, which every correct peer must refuse.
#[derive(Debug, Clone, Copy, Default)]
pub struct ForgedBinding;

impl hm_stoq::Presenter for ForgedBinding {
    fn signed_role(&self, own: hm_stoq::Role) -> hm_stoq::Role {
        own.peer()
    }
}

use serde::{Deserialize, Serialize};

/// Longest fault schedule a scenario may list.
pub const FAULTS_MAX: usize = 10_000;
/// Latest time, in seconds, a fault may start or end (one simulated week).
pub const FAULT_TIME_S_MAX: f64 = 7.0 * 24.0 * 3600.0;

/// One scheduled fault. Times are simulated seconds from the start of the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Fault {
    /// Split the nodes into groups of the given fractions (in node order:
    /// the first `fractions[0]` of nodes form group 0, ...). With `one_way`,
    /// only traffic from group 0 to group 1 is dropped.
    Partition {
        at_s: f64,
        duration_s: f64,
        fractions: Vec<f64>,
        #[serde(default)]
        one_way: bool,
    },
    /// Kill a fraction of nodes (chosen by the seed), losing unsynced disk
    /// writes; restart them after `restart_after_s` unless it is absent.
    Crash {
        at_s: f64,
        fraction: f64,
        #[serde(default)]
        restart_after_s: Option<f64>,
    },
    /// Change the loss probability of every link for a while.
    Loss {
        at_s: f64,
        duration_s: f64,
        rate: f64,
    },
    /// Change latency and jitter of every link for a while.
    Latency {
        at_s: f64,
        duration_s: f64,
        latency_ms: f64,
        #[serde(default)]
        jitter_ms: f64,
    },
    /// Hold all traffic of a fraction of nodes for a while (delivered later).
    Clog {
        at_s: f64,
        duration_s: f64,
        fraction: f64,
    },
    /// FoundationDB's swizzle: clog a fraction of nodes one by one, every
    /// `step_s`, then unclog them in reverse order.
    Swizzle {
        at_s: f64,
        fraction: f64,
        step_s: f64,
    },
    /// Wall-clock faults on a fraction of nodes: a step, a drift and a
    /// periodic swing (monotonic time is unaffected).
    Clock {
        at_s: f64,
        fraction: f64,
        #[serde(default)]
        step_ms: i64,
        #[serde(default)]
        drift_ppm: i64,
        #[serde(default)]
        periodic_amplitude_ms: i64,
        #[serde(default)]
        periodic_period_s: f64,
    },
    /// The next `count` disk operations of a fraction of nodes fail; with
    /// `duration_s`, only those within that time (a burst: a node that
    /// barely touches its disk is not left holding errors for later).
    DiskErrors {
        at_s: f64,
        fraction: f64,
        count: u32,
        #[serde(default)]
        duration_s: Option<f64>,
    },
}

/// A fault that does not make sense, named by its position in the schedule.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("faults[{index}] ({kind}): {problem}")]
pub struct FaultError {
    pub index: usize,
    pub kind: &'static str,
    pub problem: String,
}

impl Fault {
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Partition { .. } => "partition",
            Fault::Crash { .. } => "crash",
            Fault::Loss { .. } => "loss",
            Fault::Latency { .. } => "latency",
            Fault::Clog { .. } => "clog",
            Fault::Swizzle { .. } => "swizzle",
            Fault::Clock { .. } => "clock",
            Fault::DiskErrors { .. } => "disk-errors",
        }
    }

    pub fn at_s(&self) -> f64 {
        match self {
            Fault::Partition { at_s, .. }
            | Fault::Crash { at_s, .. }
            | Fault::Loss { at_s, .. }
            | Fault::Latency { at_s, .. }
            | Fault::Clog { at_s, .. }
            | Fault::Swizzle { at_s, .. }
            | Fault::Clock { at_s, .. }
            | Fault::DiskErrors { at_s, .. } => *at_s,
        }
    }

    /// When the fault stops acting (for the liveness phase that follows).
    /// Clock faults persist: a skewed clock is a condition the system must
    /// live with, so they end when they start.
    pub fn end_s(&self, node_count: usize) -> f64 {
        match self {
            Fault::Partition {
                at_s, duration_s, ..
            }
            | Fault::Loss {
                at_s, duration_s, ..
            }
            | Fault::Latency {
                at_s, duration_s, ..
            }
            | Fault::Clog {
                at_s, duration_s, ..
            } => at_s + duration_s,
            Fault::Crash {
                at_s,
                restart_after_s,
                ..
            } => at_s + restart_after_s.unwrap_or(0.0),
            Fault::Swizzle {
                at_s,
                fraction,
                step_s,
            } => {
                let nodes = (fraction * node_count as f64).ceil();
                at_s + 2.0 * nodes * step_s
            }
            Fault::DiskErrors {
                at_s, duration_s, ..
            } => at_s + duration_s.unwrap_or(0.0),
            Fault::Clock { at_s, .. } => *at_s,
        }
    }

    /// Checks ranges; `index` names the fault in the error.
    pub fn validate(&self, index: usize) -> Result<(), FaultError> {
        let problem = |text: String| FaultError {
            index,
            kind: self.kind(),
            problem: text,
        };
        let time = |name: &str, value: f64| {
            if value.is_finite() && (0.0..=FAULT_TIME_S_MAX).contains(&value) {
                Ok(())
            } else {
                Err(problem(format!(
                    "`{name}` = {value} must be between 0 and {FAULT_TIME_S_MAX} seconds"
                )))
            }
        };
        let unit = |name: &str, value: f64| {
            if value.is_finite() && (0.0..=1.0).contains(&value) {
                Ok(())
            } else {
                Err(problem(format!(
                    "`{name}` = {value} must be between 0 and 1"
                )))
            }
        };
        time("at_s", self.at_s())?;
        match self {
            Fault::Partition {
                duration_s,
                fractions,
                one_way,
                ..
            } => {
                time("duration_s", *duration_s)?;
                if fractions.len() < 2 || fractions.len() > 16 {
                    return Err(problem("`fractions` needs 2 to 16 groups".into()));
                }
                for fraction in fractions {
                    unit("fractions[]", *fraction)?;
                }
                let total: f64 = fractions.iter().sum();
                if (total - 1.0).abs() > 1e-6 {
                    return Err(problem(format!("`fractions` sum to {total}, not 1")));
                }
                if *one_way && fractions.len() != 2 {
                    return Err(problem("a one-way partition has exactly 2 groups".into()));
                }
            }
            Fault::Crash {
                fraction,
                restart_after_s,
                ..
            } => {
                unit("fraction", *fraction)?;
                if let Some(after) = restart_after_s {
                    time("restart_after_s", *after)?;
                }
            }
            Fault::Loss {
                duration_s, rate, ..
            } => {
                time("duration_s", *duration_s)?;
                unit("rate", *rate)?;
            }
            Fault::Latency {
                duration_s,
                latency_ms,
                jitter_ms,
                ..
            } => {
                time("duration_s", *duration_s)?;
                time("latency_ms", *latency_ms / 1000.0)?;
                time("jitter_ms", *jitter_ms / 1000.0)?;
            }
            Fault::Clog {
                duration_s,
                fraction,
                ..
            } => {
                time("duration_s", *duration_s)?;
                unit("fraction", *fraction)?;
            }
            Fault::Swizzle {
                fraction, step_s, ..
            } => {
                unit("fraction", *fraction)?;
                time("step_s", *step_s)?;
            }
            Fault::Clock {
                fraction,
                periodic_period_s,
                ..
            } => {
                unit("fraction", *fraction)?;
                time("periodic_period_s", *periodic_period_s)?;
            }
            Fault::DiskErrors {
                fraction,
                duration_s,
                ..
            } => {
                unit("fraction", *fraction)?;
                if let Some(duration_s) = duration_s {
                    time("duration_s", *duration_s)?;
                }
            }
        }
        Ok(())
    }
}

/// Validates a whole schedule.
pub fn validate_schedule(faults: &[Fault]) -> Result<(), FaultError> {
    if faults.len() > FAULTS_MAX {
        return Err(FaultError {
            index: FAULTS_MAX,
            kind: "schedule",
            problem: format!("{} faults exceed the limit of {FAULTS_MAX}", faults.len()),
        });
    }
    faults
        .iter()
        .enumerate()
        .try_for_each(|(index, fault)| fault.validate(index))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Schedule {
        faults: Vec<Fault>,
    }

    #[test]
    fn a_schedule_parses_from_toml_and_validates() {
        let schedule: Schedule = toml::from_str(
            r#"
            [[faults]]
            kind = "partition"
            at_s = 10
            duration_s = 60
            fractions = [0.6, 0.4]

            [[faults]]
            kind = "crash"
            at_s = 20.5
            fraction = 0.05
            restart_after_s = 30
            "#,
        )
        .expect("parse");
        assert_eq!(schedule.faults.len(), 2);
        validate_schedule(&schedule.faults).expect("valid");
        assert_eq!(schedule.faults[0].end_s(100), 70.0);
        assert_eq!(schedule.faults[1].end_s(100), 50.5);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let error = toml::from_str::<Schedule>(
            "[[faults]]\nkind = \"loss\"\nat_s = 1\nduration_s = 2\nrate = 0.1\nbogus = 3\n",
        )
        .expect_err("unknown key");
        assert!(error.to_string().contains("bogus"), "{error}");

        let faults = vec![Fault::Partition {
            at_s: 0.0,
            duration_s: 1.0,
            fractions: vec![0.5, 0.6],
            one_way: false,
        }];
        let error = validate_schedule(&faults).expect_err("bad sum");
        assert!(
            error.to_string().contains("faults[0] (partition)"),
            "{error}"
        );
        let faults = vec![Fault::Loss {
            at_s: -1.0,
            duration_s: 1.0,
            rate: 0.1,
        }];
        assert!(validate_schedule(&faults).is_err());
    }
}
