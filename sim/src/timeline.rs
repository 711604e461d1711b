//! The fault schedule: a scenario's fault list expanded into timed actions,
//! with the nodes each fault hits chosen by the run's RNG.

use hm_faults::Fault;
use madsim::rand::Rng;

use crate::env::ClockOffset;
use crate::net::{LinkModel, Partition};
use crate::scenario::Scenario;

/// One scheduled change to the universe.
#[derive(Debug, Clone)]
pub(crate) enum Action {
    SetPartition(Option<Partition>),
    SetLink(LinkModel),
    Kill(u32),
    Restart(u32),
    Clog {
        node: u32,
        duration_ms: u64,
    },
    SetClock {
        node: u32,
        offset: ClockOffset,
    },
    DiskErrors {
        node: u32,
        count: u32,
    },
    /// The end of a disk-error burst: errors not consumed are dropped.
    ClearDiskErrors(u32),
}

pub(crate) fn seconds_to_ms(seconds: f64) -> u64 {
    (seconds * 1000.0).round().max(0.0) as u64
}

pub(crate) fn link_of(scenario: &Scenario) -> LinkModel {
    LinkModel {
        latency_us: (scenario.network.latency_ms * 1000.0) as u64,
        jitter_us: (scenario.network.jitter_ms * 1000.0) as u64,
        loss: scenario.network.loss,
        duplicate: scenario.network.duplicate,
        reorder: scenario.network.reorder,
    }
}

/// `count` distinct nodes out of `0..n`, chosen by the run's RNG.
fn pick_nodes(n: u32, fraction: f64) -> Vec<u32> {
    let count = ((fraction * f64::from(n)).round() as u32).min(n);
    let mut all: Vec<u32> = (0..n).collect();
    let mut rng = madsim::rand::thread_rng();
    for i in 0..count as usize {
        let j = rng.gen_range(i..all.len());
        all.swap(i, j);
    }
    all.truncate(count as usize);
    all.sort_unstable();
    all
}

/// Expands the fault list into timed actions, choosing nodes with the seed.
pub(crate) fn timeline(scenario: &Scenario) -> Vec<(u64, Action)> {
    let n = scenario.nodes.count;
    let base_link = link_of(scenario);
    let mut actions = Vec::new();
    for fault in &scenario.faults {
        let at_ms = seconds_to_ms(fault.at_s());
        match fault {
            Fault::Partition {
                duration_s,
                fractions,
                one_way,
                ..
            } => {
                let mut group_of = Vec::with_capacity(n as usize);
                let mut boundary = 0.0;
                let mut group = 0u16;
                for index in 0..n {
                    while (group as usize) < fractions.len() - 1
                        && f64::from(index) >= (boundary + fractions[group as usize]) * f64::from(n)
                    {
                        boundary += fractions[group as usize];
                        group += 1;
                    }
                    group_of.push(group);
                }
                let partition = Partition {
                    group_of,
                    one_way: one_way.then_some((0, 1)),
                };
                actions.push((at_ms, Action::SetPartition(Some(partition))));
                actions.push((
                    at_ms + seconds_to_ms(*duration_s),
                    Action::SetPartition(None),
                ));
            }
            Fault::Crash {
                fraction,
                restart_after_s,
                ..
            } => {
                for node in pick_nodes(n, *fraction) {
                    actions.push((at_ms, Action::Kill(node)));
                    if let Some(after) = restart_after_s {
                        actions.push((at_ms + seconds_to_ms(*after), Action::Restart(node)));
                    }
                }
            }
            Fault::Loss {
                duration_s, rate, ..
            } => {
                actions.push((
                    at_ms,
                    Action::SetLink(LinkModel {
                        loss: *rate,
                        ..base_link
                    }),
                ));
                actions.push((
                    at_ms + seconds_to_ms(*duration_s),
                    Action::SetLink(base_link),
                ));
            }
            Fault::Latency {
                duration_s,
                latency_ms,
                jitter_ms,
                ..
            } => {
                actions.push((
                    at_ms,
                    Action::SetLink(LinkModel {
                        latency_us: (latency_ms * 1000.0) as u64,
                        jitter_us: (jitter_ms * 1000.0) as u64,
                        ..base_link
                    }),
                ));
                actions.push((
                    at_ms + seconds_to_ms(*duration_s),
                    Action::SetLink(base_link),
                ));
            }
            Fault::Clog {
                duration_s,
                fraction,
                ..
            } => {
                for node in pick_nodes(n, *fraction) {
                    actions.push((
                        at_ms,
                        Action::Clog {
                            node,
                            duration_ms: seconds_to_ms(*duration_s),
                        },
                    ));
                }
            }
            Fault::Swizzle {
                fraction, step_s, ..
            } => {
                // Clog one more node every step; the k-th stays clogged until
                // it is released in reverse order.
                let nodes = pick_nodes(n, *fraction);
                let step_ms = seconds_to_ms(*step_s);
                let total = nodes.len() as u64;
                for (k, node) in nodes.into_iter().enumerate() {
                    let k = k as u64;
                    let start = at_ms + k * step_ms;
                    let end = at_ms + (2 * total - k) * step_ms;
                    actions.push((
                        start,
                        Action::Clog {
                            node,
                            duration_ms: end - start,
                        },
                    ));
                }
            }
            Fault::Clock {
                fraction,
                step_ms,
                drift_ppm,
                periodic_amplitude_ms,
                periodic_period_s,
                ..
            } => {
                for node in pick_nodes(n, *fraction) {
                    actions.push((
                        at_ms,
                        Action::SetClock {
                            node,
                            offset: ClockOffset {
                                step_ms: *step_ms,
                                drift_ppm: *drift_ppm,
                                periodic_amplitude_ms: *periodic_amplitude_ms,
                                periodic_period_ms: seconds_to_ms(*periodic_period_s),
                                since_ms: at_ms,
                            },
                        },
                    ));
                }
            }
            Fault::DiskErrors {
                fraction,
                count,
                duration_s,
                ..
            } => {
                for node in pick_nodes(n, *fraction) {
                    actions.push((
                        at_ms,
                        Action::DiskErrors {
                            node,
                            count: *count,
                        },
                    ));
                    if let Some(duration_s) = duration_s {
                        actions.push((
                            at_ms + seconds_to_ms(*duration_s),
                            Action::ClearDiskErrors(node),
                        ));
                    }
                }
            }
        }
    }
    // Stable: actions at the same time keep schedule order.
    actions.sort_by_key(|(at_ms, _)| *at_ms);
    actions
}
