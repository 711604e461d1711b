//! Scenario tests on the in-memory world (`harness.rs`), direct unit tests of
//! the core, and hostile-input property tests. Bounds are virtual time.

use std::net::{Ipv6Addr, SocketAddrV6};

use proptest::prelude::*;

use super::harness::{World, WorldConfig, node_addr, node_id};
use super::*;

/// Join of 50 nodes started within 1 s from one seed.
const JOIN_BOUND_MS: u64 = 30_000;
/// After a crash with the transport noticing within 1 s: notice (1 s) +
/// suspicion timeout (5 s) + dissemination, with margin.
const CRASH_BOUND_MS: u64 = 15_000;
const RESTART_BOUND_MS: u64 = 15_000;
/// After a partition heals: a dead retry happens cluster-wide about every
/// `dead_retry_interval / dead_retry_cluster_attempts` (2.5 s), then JOIN
/// merges the overlays, refutations spread, anti-entropy mops up.
const HEAL_BOUND_MS: u64 = 45_000;
/// Liveness mode of the random-fault property test, after faults stop.
const LIVENESS_BOUND_MS: u64 = 90_000;

fn world(n: usize, seed: u64) -> World {
    World::new(
        n,
        &[0],
        WorldConfig::default(),
        MembershipConfig::default(),
        seed,
    )
}

fn joined_world(n: usize, seed: u64) -> World {
    let mut w = world(n, seed);
    w.start_all(1_000);
    let took = w.run_until_converged(JOIN_BOUND_MS);
    assert!(took.is_some(), "join did not converge: {}", w.divergence());
    w
}

fn assert_converges(w: &mut World, bound_ms: u64, what: &str) -> u64 {
    match w.run_until_converged(bound_ms) {
        Some(took) => took,
        None => panic!(
            "{what}: not converged within {bound_ms} ms: {}",
            w.divergence()
        ),
    }
}

#[test]
fn fifty_nodes_from_one_seed_converge() {
    let mut w = world(50, 1);
    w.start_all(1_000);
    let took = assert_converges(&mut w, JOIN_BOUND_MS, "join");
    println!(
        "join: 50 nodes converged {took} ms after start, {} messages",
        w.messages_sent()
    );
    assert!(w.max_active_seen <= MembershipConfig::default().active_view_max);
    // The overlay holds everyone: no live node is left without neighbours.
    for node in w.live_nodes() {
        let core = w.core(node).expect("live");
        assert!(
            !core.active_peers().is_empty(),
            "node {node} has no active peers"
        );
    }
}

#[test]
fn crash_three_then_restart_them() {
    let mut w = joined_world(50, 2);
    w.run_for(10_000);
    let crashed = [7, 23, 41];
    for node in crashed {
        w.crash(node);
    }
    let took = assert_converges(&mut w, CRASH_BOUND_MS, "crash of 3");
    println!("crash: views dropped the 3 crashed nodes after {took} ms");
    for node in w.live_nodes() {
        let core = w.core(node).expect("live");
        for dead in crashed {
            let state = core
                .member(&node_id(dead))
                .expect("the dead stay in the table");
            assert_eq!(state.status, Status::Dead);
        }
    }
    w.run_for(5_000);
    for node in crashed {
        w.restart(node);
    }
    let took = assert_converges(&mut w, RESTART_BOUND_MS, "restart of 3");
    println!("restart: everyone sees the 3 restarted nodes after {took} ms");
    for node in crashed {
        let core = w.core(node).expect("restarted");
        assert!(
            core.incarnation() >= 1,
            "restarted with persisted incarnation + 1"
        );
    }
}

#[test]
fn partition_sixty_forty_for_a_minute_then_heal() {
    let mut w = joined_world(50, 3);
    w.run_for(5_000);
    let groups: Vec<u32> = (0..50).map(|i| u32::from(i >= 30)).collect();
    w.partition(groups);
    w.run_for(60_000);
    // During the partition each side has declared (part of) the other dead.
    let side_a = w.core(0).expect("live");
    let dead_seen = (30..50)
        .filter(|i| {
            side_a
                .member(&node_id(*i))
                .is_some_and(|s| s.status == Status::Dead)
        })
        .count();
    assert!(dead_seen > 0, "side A noticed nothing of the partition");
    w.heal();
    let took = assert_converges(&mut w, HEAL_BOUND_MS, "partition heal");
    println!(
        "partition: 60/40 for 60 s, views converged {took} ms after heal ({dead_seen}/20 of side B were dead at node 0)"
    );
}

#[test]
fn silent_crash_is_found_by_probes() {
    // The transport never reports the dead connections: only Ping/Pong does.
    let config = WorldConfig {
        down_notice_ms: None,
        ..WorldConfig::default()
    };
    let membership = MembershipConfig::default();
    let mut w = World::new(30, &[0], config, membership.clone(), 4);
    w.start_all(1_000);
    assert_converges(&mut w, JOIN_BOUND_MS, "join");
    w.crash(11);
    w.crash(12);
    let silence_ms = membership.probe_interval_ms * 3 / 2 + membership.probe_timeout_ms;
    let bound = silence_ms + membership.suspicion_timeout_ms + 5_000;
    let took = assert_converges(&mut w, bound, "silent crash");
    println!("silent crash: found by probes after {took} ms (bound {bound})");
    let timeouts: u64 = w
        .live_nodes()
        .iter()
        .map(|i| w.core(*i).expect("live").stats().probe_timeouts)
        .sum();
    assert!(
        timeouts > 0,
        "the probes, not the transport, found the crash"
    );
}

#[test]
fn random_connection_loss_is_survived() {
    let mut w = joined_world(40, 5);
    for _ in 0..40 {
        w.drop_random_link();
        w.run_for(500);
    }
    let took = assert_converges(&mut w, CRASH_BOUND_MS, "after connection losses");
    let refutations: u64 = w
        .live_nodes()
        .iter()
        .map(|i| w.core(*i).expect("live").stats().refutations)
        .sum();
    println!(
        "connection loss: 40 links killed, converged {took} ms later, {refutations} refutations"
    );
    assert!(
        refutations > 0,
        "false suspicions were refuted, not silently ignored"
    );
}

#[test]
fn same_seed_same_run() {
    let run = |seed| {
        let mut w = world(20, seed);
        w.start_all(1_000);
        w.run_for(20_000);
        w.crash(5);
        w.run_for(10_000);
        let digests: Vec<u64> = w
            .live_nodes()
            .iter()
            .map(|i| w.core(*i).expect("live").digest())
            .collect();
        (w.sent, digests)
    };
    assert_eq!(run(9), run(9));
    assert_ne!(
        run(9).0,
        run(10).0,
        "a different seed gives a different schedule"
    );
}

/// Quiet steady state: no news, so no gossip and no table syncs; only probes
/// of silent links, anti-entropy digests, shuffles and rare repair attempts.
///
/// Bound per node per second, from the protocol rules (A = active_view_max):
/// * Ping/Pong: a side pings a link silent for a probe interval (the larger
///   id of the pair waits 1.5 intervals, so normally only one side pings);
///   bound with both sides pinging: 2·A messages per probe interval.
/// * Digest: one per jittered anti-entropy interval (≥ interval/2).
/// * Shuffle + reply: 2 per jittered shuffle interval (≥ interval/2).
/// * Repair of a short active view: NEIGHBOR + reply (+ DISCONNECT) per
///   attempt, attempts spaced by a doubling backoff: ≤ 8 attempts a minute.
fn quiet_bound_per_node_per_s(c: &MembershipConfig) -> f64 {
    let a = c.active_view_max as f64;
    2.0 * a * 1_000.0 / c.probe_interval_ms as f64
        + 2_000.0 / c.anti_entropy_interval_ms as f64
        + 4_000.0 / c.shuffle_interval_ms as f64
        + 3.0 * 8.0 / 60.0
}

fn measure_steady_state(n: usize, seed: u64, check_invariants: bool) -> (f64, String, World) {
    let config = WorldConfig {
        check_invariants,
        ..WorldConfig::default()
    };
    let mut w = World::new(n, &[0, 1, 2], config, MembershipConfig::default(), seed);
    w.start_all(2_000);
    let took = w.run_until_converged(120_000);
    assert!(
        took.is_some(),
        "{n} nodes did not converge: {}",
        w.divergence()
    );
    let join_messages = w.messages_sent();
    println!(
        "{n} nodes: converged after {} ms, {join_messages} messages during join",
        w.now_ms
    );
    // Let repair backoffs and the first shuffles settle.
    w.run_for(60_000);
    let before = w.sent;
    let window_ms = 60_000;
    w.run_for(window_ms);
    let sent = w.sent.total() - before.total();
    let per_node_per_s = sent as f64 / n as f64 / (window_ms as f64 / 1_000.0);
    let breakdown = w.kind_breakdown(&before);
    (per_node_per_s, breakdown, w)
}

#[test]
fn quiet_steady_state_sends_only_probes_and_digests() {
    let (per_node_per_s, breakdown, w) = measure_steady_state(50, 6, true);
    let bound = quiet_bound_per_node_per_s(&MembershipConfig::default());
    println!(
        "50 nodes steady state: {per_node_per_s:.3} messages/node/s (bound {bound:.3}): {breakdown}"
    );
    assert!(
        per_node_per_s <= bound,
        "{per_node_per_s} > {bound}: {breakdown}"
    );
    assert!(
        !breakdown.contains("gossip="),
        "gossip sent with nothing new: {breakdown}"
    );
    assert!(
        !breakdown.contains("sync="),
        "tables synced although they agree: {breakdown}"
    );
    assert!(breakdown.contains("ping="), "links are probed");
    assert!(w.converged());
    assert!(w.max_active_seen <= MembershipConfig::default().active_view_max);
}

#[test]
#[ignore = "1,000 nodes: about a minute in the dev profile; run with --ignored --nocapture"]
fn thousand_nodes_message_cost() {
    let (per_node_per_s, breakdown, w) = measure_steady_state(1_000, 7, false);
    let bound = quiet_bound_per_node_per_s(&MembershipConfig::default());
    println!(
        "1000 nodes steady state: {per_node_per_s:.3} messages/node/s (bound {bound:.3}): {breakdown}"
    );
    println!("1000 nodes: {} ticks total", w.ticks);
    assert!(per_node_per_s <= bound);
    let mut w = w;
    for node in (100..1_000).step_by(30) {
        w.crash(node);
    }
    let before = w.messages_sent();
    let took = assert_converges(&mut w, 30_000, "1000 nodes, 30 crashed");
    println!(
        "1000 nodes: 30 crashes converged after {took} ms, {} messages",
        w.messages_sent() - before
    );
    let groups: Vec<u32> = (0..1_000).map(|i| u32::from(i >= 600)).collect();
    w.partition(groups);
    w.run_for(60_000);
    w.heal();
    let before = w.messages_sent();
    let took = assert_converges(&mut w, 120_000, "1000 nodes, 60/40 partition healed");
    println!(
        "1000 nodes: 60/40 partition healed, converged after {took} ms, {} messages",
        w.messages_sent() - before
    );
}

/// Liveness over many seeds with a random schedule (a fixed sweep, so the
/// worst case is reported and regressions show as a larger number).
#[test]
fn liveness_sweep_reports_worst_case() {
    let mut times = Vec::new();
    for seed in 0..16u64 {
        let mut rng = super::rng::SplitMix64::new(seed);
        let n = 8 + rng.below(23);
        let mut w = World::new(
            n,
            &[0, 1, 2],
            WorldConfig::default(),
            MembershipConfig::default(),
            seed,
        );
        w.start_all(1_000);
        w.run_for(15_000);
        for _ in 0..20 {
            w.run_for(2_000);
            match rng.below(5) {
                0 => w.crash(rng.below(n)),
                1 => w.restart(rng.below(n)),
                2 => {
                    let mask = rng.next_u64();
                    w.partition((0..n).map(|i| ((mask >> i) & 1) as u32).collect());
                }
                3 => w.heal(),
                _ => w.drop_random_link(),
            }
        }
        w.heal();
        for i in 0..n {
            w.restart(i);
        }
        times.push(assert_converges(
            &mut w,
            LIVENESS_BOUND_MS,
            "liveness sweep",
        ));
    }
    times.sort();
    println!(
        "liveness sweep (16 seeds, 8-30 nodes, 20 faults in 40 s): converged after median {} ms, worst {} ms",
        times[times.len() / 2],
        times[times.len() - 1]
    );
}

// ----- the random fault schedule (liveness mode) --------------------------------

#[derive(Clone, Debug)]
enum Fault {
    Crash(usize),
    Restart(usize),
    /// Split by a random bitmask over node indexes.
    Partition(u64),
    Heal,
    DropLink,
}

fn fault() -> impl Strategy<Value = Fault> {
    prop_oneof![
        (0usize..64).prop_map(Fault::Crash),
        (0usize..64).prop_map(Fault::Restart),
        any::<u64>().prop_map(Fault::Partition),
        Just(Fault::Heal),
        Just(Fault::DropLink),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]

    /// Safety phase: random crashes, restarts, partitions and connection
    /// losses for 40 s (invariants checked after every event). Liveness
    /// phase: faults stop, everything heals and restarts, and every view must
    /// equal the live set within `LIVENESS_BOUND_MS`.
    #[test]
    fn random_faults_then_convergence(
        n in 8usize..30,
        seed in any::<u64>(),
        faults in proptest::collection::vec((0u64..40_000, fault()), 0..24),
        down_notice_ms in prop_oneof![Just(None), Just(Some(200)), Just(Some(1_000)), Just(Some(4_000))],
        latency_ms_max in 5u64..120,
    ) {
        let config = WorldConfig { down_notice_ms, latency_ms_max, ..WorldConfig::default() };
        let mut w = World::new(n, &[0, 1, 2], config, MembershipConfig::default(), seed);
        w.start_all(1_000);
        w.run_for(15_000);
        let mut faults = faults;
        faults.sort_by_key(|(at, _)| *at);
        let start = w.now_ms;
        for (at, fault) in faults {
            w.run_until(start + at);
            match fault {
                Fault::Crash(i) => w.crash(i % n),
                Fault::Restart(i) => w.restart(i % n),
                Fault::Partition(mask) => w.partition((0..n).map(|i| ((mask >> (i % 64)) & 1) as u32).collect()),
                Fault::Heal => w.heal(),
                Fault::DropLink => w.drop_random_link(),
            }
        }
        w.run_until(start + 40_000);
        w.heal();
        for i in 0..n {
            w.restart(i);
        }
        let took = w.run_until_converged(LIVENESS_BOUND_MS);
        prop_assert!(took.is_some(), "{}", w.divergence());
    }
}

// ----- direct tests of one core ------------------------------------------------

fn core(index: usize) -> Membership {
    Membership::new(
        MembershipConfig::default(),
        node_id(index),
        node_addr(index),
        0,
        vec![node_addr(0)],
        42,
        0,
    )
}

fn drain(core: &mut Membership) -> Vec<Action> {
    std::iter::from_fn(|| core.poll_action()).collect()
}

/// Make `peer` an active neighbour of `core` through a high-priority
/// NEIGHBOR request (which must be accepted, evicting if the view is full).
fn befriend(core: &mut Membership, peer: usize, now_ms: u64) {
    core.handle_connection_up(now_ms, node_id(peer), node_addr(peer), false);
    core.handle_message(
        now_ms,
        node_id(peer),
        Message::Neighbor {
            high_priority: true,
            addr: node_addr(peer),
            incarnation: 0,
        },
    );
}

/// Neighbours 1..=k, then let the introductions' gossip go out.
fn core_with_neighbours(index: usize, k: usize) -> Membership {
    let mut c = core(index);
    for peer in 1..=k {
        befriend(&mut c, peer, 0);
    }
    c.handle_tick(1_000);
    drain(&mut c);
    c
}

/// A peer that answers a dial only to refuse our identity is alive: no
/// suspicion (which every member would gossip, and the peer refute) starts.
/// A dial that got no answer, or the shell never made, is another matter:
/// only the first is evidence against the peer.
#[test]
fn a_dial_refused_by_the_peer_does_not_suspect_it() {
    let mut c = core_with_neighbours(0, 2);
    c.handle_message(
        1_000,
        node_id(1),
        Message::Gossip {
            updates: vec![
                Update::Alive {
                    id: node_id(7),
                    addr: node_addr(7),
                    incarnation: 0,
                },
                Update::Alive {
                    id: node_id(8),
                    addr: node_addr(8),
                    incarnation: 0,
                },
            ],
        },
    );
    drain(&mut c);
    let status = |c: &Membership, index: usize| c.member(&node_id(index)).map(|state| state.status);

    c.handle_connect_refused(2_000, node_addr(7));
    c.handle_connect_deferred(2_000, node_addr(8));
    c.handle_tick(3_000);
    let actions = drain(&mut c);
    assert_eq!(status(&c, 7), Some(Status::Alive));
    assert_eq!(status(&c, 8), Some(Status::Alive));
    let suspicions: Vec<Update> = [node_id(1), node_id(2)]
        .iter()
        .flat_map(|peer| gossip_to(&actions, *peer))
        .filter(|update| matches!(update, Update::Suspect { .. }))
        .collect();
    assert!(suspicions.is_empty(), "{suspicions:?}");
    assert!(!c.passive_peers().contains(&node_id(7)));

    c.handle_connect_failed(4_000, node_addr(7));
    assert_eq!(status(&c, 7), Some(Status::Suspect));
}

fn gossip_to(actions: &[Action], to: NodeId) -> Vec<Update> {
    actions
        .iter()
        .filter_map(|action| match action {
            Action::Send {
                to: t,
                message: Message::Gossip { updates },
            } if *t == to => Some(updates.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

#[test]
fn suspicion_of_self_is_refuted_with_a_higher_incarnation() {
    let mut c = core_with_neighbours(5, 2);
    let accusation = Update::Suspect {
        id: node_id(5),
        addr: node_addr(5),
        incarnation: 0,
        by: node_id(1),
    };
    c.handle_message(
        2_000,
        node_id(1),
        Message::Gossip {
            updates: vec![accusation],
        },
    );
    assert_eq!(c.incarnation(), 1);
    let actions = drain(&mut c);
    let refutation = Update::Alive {
        id: node_id(5),
        addr: node_addr(5),
        incarnation: 1,
    };
    assert_eq!(
        gossip_to(&actions, node_id(1)),
        vec![refutation],
        "the accuser hears the refutation"
    );
    assert_eq!(gossip_to(&actions, node_id(2)), vec![refutation]);
    // An old accusation is old news.
    c.handle_message(
        2_010,
        node_id(1),
        Message::Gossip {
            updates: vec![accusation],
        },
    );
    assert_eq!(c.incarnation(), 1);
    assert_eq!(c.stats().refutations, 1);
}

#[test]
fn gossip_is_batched_paced_and_never_echoed() {
    let mut c = core_with_neighbours(5, 3);
    let news = |i: usize| Update::Alive {
        id: node_id(i),
        addr: node_addr(i),
        incarnation: 0,
    };
    let t = 2_000;
    c.handle_message(
        t + 100,
        node_id(1),
        Message::Gossip {
            updates: vec![news(10), news(11)],
        },
    );
    let actions = drain(&mut c);
    assert!(
        gossip_to(&actions, node_id(1)).is_empty(),
        "not echoed to the sender"
    );
    assert_eq!(gossip_to(&actions, node_id(2)), vec![news(10), news(11)]);
    assert_eq!(gossip_to(&actions, node_id(3)), vec![news(10), news(11)]);
    // More news within the gossip interval waits for the next batch.
    c.handle_message(
        t + 200,
        node_id(1),
        Message::Gossip {
            updates: vec![news(12)],
        },
    );
    c.handle_message(
        t + 300,
        node_id(2),
        Message::Gossip {
            updates: vec![news(13), news(10)],
        },
    );
    let actions = drain(&mut c);
    assert!(
        gossip_to(&actions, node_id(2)).is_empty() && gossip_to(&actions, node_id(3)).is_empty()
    );
    assert_eq!(
        gossip_to(&actions, node_id(1)),
        vec![news(13)],
        "1 was not paced: nothing went to it yet"
    );
    let due = c.poll_timeout().expect("gossip pending");
    assert!(
        due <= t + 600,
        "the batch is due at the end of the interval, got {due}"
    );
    c.handle_tick(t + 600);
    let actions = drain(&mut c);
    assert!(
        gossip_to(&actions, node_id(1)).is_empty(),
        "10 and 12 came from 1, 13 was sent"
    );
    assert_eq!(gossip_to(&actions, node_id(2)), vec![news(12)]);
    assert_eq!(gossip_to(&actions, node_id(3)), vec![news(12), news(13)]);
    // Nothing new: nothing sent, however often we tick.
    for dt in (700..1_500).step_by(100) {
        c.handle_tick(t + dt);
    }
    assert!(drain(&mut c).iter().all(|a| !matches!(
        a,
        Action::Send {
            message: Message::Gossip { .. },
            ..
        }
    )));
}

#[test]
fn duplicate_connection_up_is_harmless_and_active_view_is_bounded() {
    let mut c = core(0);
    for peer in 1..=8 {
        befriend(&mut c, peer, 0);
        c.handle_connection_up(1, node_id(peer), node_addr(peer), true);
        c.handle_connection_up(2, node_id(peer), node_addr(peer), false);
        c.check_invariants();
    }
    assert_eq!(
        c.active_peers().len(),
        MembershipConfig::default().active_view_max
    );
    let actions = drain(&mut c);
    let disconnects = actions
        .iter()
        .filter(|a| {
            matches!(
                a,
                Action::Send {
                    message: Message::Disconnect,
                    ..
                }
            )
        })
        .count();
    assert_eq!(disconnects, 3, "each eviction is announced");
    // An evicted peer's clean close is not a failure.
    let evicted: Vec<NodeId> = (1..=8)
        .map(node_id)
        .filter(|id| !c.active_peers().contains(id))
        .collect();
    for id in &evicted {
        c.handle_connection_down(3, *id);
    }
    assert_eq!(c.stats().suspicions_raised, 0);
}

#[test]
fn lost_neighbour_is_suspected_then_dead_and_replaced() {
    let mut c = core(0);
    for peer in 1..=3 {
        befriend(&mut c, peer, 0);
    }
    c.handle_message(
        0,
        node_id(1),
        Message::Gossip {
            updates: vec![Update::Alive {
                id: node_id(9),
                addr: node_addr(9),
                incarnation: 0,
            }],
        },
    );
    drain(&mut c);
    c.handle_connection_down(100, node_id(2));
    assert_eq!(
        c.member(&node_id(2)).map(|s| s.status),
        Some(Status::Suspect)
    );
    assert_eq!(c.poll_timeout(), Some(100), "repair is due at once");
    c.handle_tick(100);
    let actions = drain(&mut c);
    assert!(
        actions.iter().any(|a| matches!(a, Action::Connect { .. })),
        "a replacement is sought at once: {actions:?}"
    );
    let timeout = MembershipConfig::default().suspicion_timeout_ms;
    assert!(c.poll_timeout().expect("timers") <= 100 + timeout);
    c.handle_tick(100 + timeout);
    assert_eq!(c.member(&node_id(2)).map(|s| s.status), Some(Status::Dead));
    assert!(!c.alive_members().contains(&node_id(2)));
    // A refutation from the member itself revives it.
    c.handle_message(
        100 + timeout + 1,
        node_id(1),
        Message::Gossip {
            updates: vec![Update::Alive {
                id: node_id(2),
                addr: node_addr(2),
                incarnation: 1,
            }],
        },
    );
    assert!(c.alive_members().contains(&node_id(2)));
}

#[test]
fn digest_mismatch_syncs_both_ways() {
    let mut a = core(1);
    let mut b = core(2);
    let now = 10;
    a.handle_connection_up(now, node_id(2), node_addr(2), true);
    b.handle_connection_up(now, node_id(1), node_addr(1), false);
    for i in 10..20 {
        a.handle_message(
            now,
            node_id(2),
            Message::SyncDiff {
                updates: vec![Update::Alive {
                    id: node_id(i),
                    addr: node_addr(i),
                    incarnation: 0,
                }],
            },
        );
    }
    drain(&mut a);
    b.handle_message(
        now,
        node_id(1),
        Message::Digest {
            hash: a.digest(),
            members: 12,
            buckets: a.table.bucket_digests().to_vec(),
        },
    );
    // Shuttle messages until quiet.
    let mut rounds = 0;
    loop {
        let from_b = drain(&mut b);
        let from_a = drain(&mut a);
        if from_a.is_empty() && from_b.is_empty() {
            break;
        }
        for action in from_b {
            if let Action::Send { message, .. } = action {
                a.handle_message(now, node_id(2), message);
            }
        }
        for action in from_a {
            if let Action::Send { message, .. } = action {
                b.handle_message(now, node_id(1), message);
            }
        }
        rounds += 1;
        assert!(rounds < 10, "sync must terminate");
    }
    assert_eq!(a.digest(), b.digest());
    assert_eq!(a.alive_members(), b.alive_members());
    assert_eq!(a.alive_members().len(), 12);
}

#[test]
fn a_digest_mismatch_ships_only_the_differing_buckets() {
    let mut a = core(1);
    let mut b = core(2);
    let now = 10;
    a.handle_connection_up(now, node_id(2), node_addr(2), true);
    b.handle_connection_up(now, node_id(1), node_addr(1), false);
    // Both learn the same 200 members; then only `a` learns one more.
    let shared: Vec<Update> = (10..210)
        .map(|i| Update::Alive {
            id: node_id(i),
            addr: node_addr(i),
            incarnation: 0,
        })
        .collect();
    for (core, from) in [(&mut a, node_id(2)), (&mut b, node_id(1))] {
        core.handle_message(
            now,
            from,
            Message::SyncDiff {
                updates: shared.clone(),
            },
        );
    }
    a.handle_message(
        now,
        node_id(2),
        Message::SyncDiff {
            updates: vec![Update::Alive {
                id: node_id(500),
                addr: node_addr(500),
                incarnation: 0,
            }],
        },
    );
    drain(&mut a);
    drain(&mut b);
    a.handle_message(
        now,
        node_id(2),
        Message::Digest {
            hash: b.digest(),
            members: 202,
            buckets: b.table.bucket_digests().to_vec(),
        },
    );
    let shipped: usize = drain(&mut a)
        .into_iter()
        .map(|action| match action {
            Action::Send {
                message:
                    Message::Sync {
                        updates,
                        buckets_mask,
                        ..
                    },
                ..
            } => {
                // The extra member's bucket, plus at most the buckets of the
                // two cores themselves (each knows its own entry best).
                assert!(
                    (1..=3).contains(&buckets_mask.count_ones()),
                    "{buckets_mask:#b}"
                );
                updates.len()
            }
            _ => 0,
        })
        .sum();
    assert!(shipped >= 1, "the differing bucket is shipped");
    assert!(
        shipped < 203 / 4,
        "{shipped} entries shipped: only the differing bucket should go, not the table"
    );
}

// ----- hostile input --------------------------------------------------------------

fn arb_id() -> impl Strategy<Value = NodeId> {
    prop_oneof![
        (0usize..12).prop_map(node_id),
        any::<[u8; 32]>().prop_map(NodeId)
    ]
}

fn arb_addr() -> impl Strategy<Value = SocketAddrV6> {
    prop_oneof![
        (0usize..12).prop_map(node_addr),
        (any::<u128>(), any::<u16>()).prop_map(|(ip, port)| SocketAddrV6::new(
            Ipv6Addr::from(ip),
            port,
            0,
            0
        )),
    ]
}

fn arb_incarnation() -> impl Strategy<Value = u64> {
    prop_oneof![
        0u64..4,
        Just(INCARNATION_MAX - 1),
        Just(INCARNATION_MAX),
        Just(u64::MAX),
        any::<u64>()
    ]
}

fn arb_update() -> impl Strategy<Value = Update> {
    (arb_id(), arb_addr(), arb_incarnation(), 0u8..3, arb_id()).prop_map(
        |(id, addr, incarnation, kind, by)| match kind {
            0 => Update::Alive {
                id,
                addr,
                incarnation,
            },
            1 => Update::Suspect {
                id,
                addr,
                incarnation,
                by,
            },
            _ => Update::Dead {
                id,
                addr,
                incarnation,
                by,
            },
        },
    )
}

fn arb_peer() -> impl Strategy<Value = Peer> {
    (arb_id(), arb_addr()).prop_map(|(id, addr)| Peer { id, addr })
}

fn arb_message() -> impl Strategy<Value = Message> {
    let updates = || proptest::collection::vec(arb_update(), 0..40);
    let peers = || proptest::collection::vec(arb_peer(), 0..12);
    prop_oneof![
        (arb_addr(), arb_incarnation())
            .prop_map(|(addr, incarnation)| Message::Join { addr, incarnation }),
        (arb_peer(), any::<u8>()).prop_map(|(joiner, ttl)| Message::ForwardJoin { joiner, ttl }),
        (any::<bool>(), arb_addr(), arb_incarnation()).prop_map(
            |(high_priority, addr, incarnation)| Message::Neighbor {
                high_priority,
                addr,
                incarnation
            }
        ),
        any::<bool>().prop_map(|accepted| Message::NeighborReply { accepted }),
        Just(Message::Disconnect),
        peers().prop_map(|peers| Message::Shuffle { peers }),
        peers().prop_map(|peers| Message::ShuffleReply { peers }),
        updates().prop_map(|updates| Message::Gossip { updates }),
        Just(Message::Ping),
        Just(Message::Pong),
        (
            any::<u64>(),
            any::<u32>(),
            prop::collection::vec(any::<u64>(), 0..40)
        )
            .prop_map(|(hash, members, buckets)| Message::Digest {
                hash,
                members,
                buckets
            }),
        (updates(), any::<bool>(), any::<u32>()).prop_map(|(updates, last, buckets_mask)| {
            Message::Sync {
                updates,
                last,
                buckets_mask,
            }
        }),
        updates().prop_map(|updates| Message::SyncDiff { updates }),
    ]
}

#[derive(Clone, Debug)]
enum Input {
    Message { from: NodeId, message: Message },
    Up { peer: NodeId, outbound: bool },
    Down { peer: NodeId },
    ConnectFailed { addr: SocketAddrV6 },
    ConnectRefused { addr: SocketAddrV6 },
    ConnectDeferred { addr: SocketAddrV6 },
    Tick,
}

fn arb_input() -> impl Strategy<Value = Input> {
    prop_oneof![
        6 => (arb_id(), arb_message()).prop_map(|(from, message)| Input::Message { from, message }),
        2 => (arb_id(), any::<bool>()).prop_map(|(peer, outbound)| Input::Up { peer, outbound }),
        1 => arb_id().prop_map(|peer| Input::Down { peer }),
        1 => arb_addr().prop_map(|addr| Input::ConnectFailed { addr }),
        1 => arb_addr().prop_map(|addr| Input::ConnectRefused { addr }),
        1 => arb_addr().prop_map(|addr| Input::ConnectDeferred { addr }),
        1 => Just(Input::Tick),
    ]
}

proptest! {
    /// Random peers sending random messages (absurd incarnations, forged
    /// ids, self-references, walks with huge ttl) interleaved with random
    /// connection events never panic, keep every invariant, and make the
    /// core send only over connections it was told about.
    #[test]
    fn hostile_inputs_never_panic(inputs in proptest::collection::vec((0u64..3_000, arb_input()), 1..60)) {
        let config = MembershipConfig { members_max: 24, ..MembershipConfig::default() };
        let mut c = Membership::new(config, node_id(0), node_addr(0), 0, vec![node_addr(1)], 3, 0);
        let mut connected = std::collections::BTreeSet::new();
        let mut now = 0;
        for (dt, input) in inputs {
            now += dt;
            match input {
                Input::Message { from, message } => c.handle_message(now, from, message),
                Input::Up { peer, outbound } => {
                    c.handle_connection_up(now, peer, node_addr(3), outbound);
                    if peer != node_id(0) {
                        connected.insert(peer);
                    }
                }
                Input::Down { peer } => {
                    c.handle_connection_down(now, peer);
                    connected.remove(&peer);
                }
                Input::ConnectFailed { addr } => c.handle_connect_failed(now, addr),
                Input::ConnectRefused { addr } => c.handle_connect_refused(now, addr),
                Input::ConnectDeferred { addr } => c.handle_connect_deferred(now, addr),
                Input::Tick => c.handle_tick(now),
            }
            c.check_invariants();
            prop_assert!(c.poll_timeout().is_some());
            for action in drain(&mut c) {
                match action {
                    Action::Send { to, .. } => prop_assert!(connected.contains(&to), "sent to unconnected {to:?}"),
                    Action::Disconnect { peer } => {
                        connected.remove(&peer);
                    }
                    Action::Connect { addr } => prop_assert_ne!(addr, node_addr(0)),
                }
            }
            prop_assert!(c.incarnation() <= INCARNATION_MAX);
            prop_assert!(c.alive_members().len() <= 24);
        }
    }
}

#[test]
fn oversized_and_flooding_batches_are_bounded() {
    let config = MembershipConfig {
        members_max: 64,
        ..MembershipConfig::default()
    };
    let batch_max = config.gossip_batch_updates_max;
    let sync_max = config.sync_entries_max;
    let mut c = Membership::new(config, node_id(0), node_addr(0), 0, vec![], 3, 0);
    befriend(&mut c, 1, 0);
    let fake = |i: usize| Update::Alive {
        id: node_id(1_000 + i),
        addr: node_addr(1_000 + i),
        incarnation: 0,
    };
    let huge: Vec<Update> = (0..batch_max + 1).map(fake).collect();
    let before = c.stats().rejected;
    c.handle_message(1, node_id(1), Message::Gossip { updates: huge });
    assert_eq!(
        c.stats().rejected,
        before + 1,
        "an oversized batch is rejected whole"
    );
    assert_eq!(c.alive_members().len(), 2);
    let huge_sync: Vec<Update> = (0..sync_max + 1).map(fake).collect();
    c.handle_message(
        2,
        node_id(1),
        Message::Sync {
            updates: huge_sync,
            last: true,
            buckets_mask: u32::MAX,
        },
    );
    assert_eq!(c.alive_members().len(), 2);
    // Many well-sized chunks of made-up members cannot grow the table past its bound.
    for chunk in 0..20 {
        let updates: Vec<Update> = (0..sync_max).map(|i| fake(chunk * sync_max + i)).collect();
        c.handle_message(
            3,
            node_id(1),
            Message::Sync {
                updates,
                last: false,
                buckets_mask: u32::MAX,
            },
        );
    }
    assert_eq!(c.alive_members().len(), 64);
    assert!(c.stats().rejected > before + 1);
    c.check_invariants();
    // A Digest loop gets at most one full table per second.
    drain(&mut c);
    for t in 0..10 {
        c.handle_message(
            10 + t,
            node_id(1),
            Message::Digest {
                hash: t,
                members: 1,
                buckets: Vec::new(),
            },
        );
    }
    let syncs = drain(&mut c)
        .iter()
        .filter(|a| {
            matches!(
                a,
                Action::Send {
                    message: Message::Sync { last: true, .. },
                    ..
                }
            )
        })
        .count();
    assert_eq!(syncs, 1);
}

#[test]
fn config_validation_names_the_field() {
    assert_eq!(MembershipConfig::default().validate(), Ok(()));
    let bad = MembershipConfig {
        active_view_max: 0,
        ..MembershipConfig::default()
    };
    let err = bad.clone().validate().expect_err("zero active view");
    assert!(err.to_string().contains("active_view_max"), "{err}");
    assert_eq!(bad.clamped().validate(), Ok(()));
}
