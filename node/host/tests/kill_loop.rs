//! Crash safety on a real disk: four `hm-node` validators on [::1] commit
//! blocks under a steady write load (each submits a key-value transaction
//! every 20 ms) while one of them at a time is SIGKILLed at a random
//! moment — mid-commit, mid-vote, mid-sync, and sometimes again while it
//! is still replaying its disk — and restarted, at least 50 times.
//! After every restart the victim must still hold, unchanged, every block
//! it had reported committed before the kill, and agree with the others;
//! no node may ever commit equivocation evidence (a validator that forgot
//! what it signed would vote twice in one round, and its peers would put
//! the pair on chain).
//!
//! `HM_KILLS` raises the number of kills, `HM_KILL_SEED` picks another
//! sequence of victims and moments (the seed is printed).
#![allow(
    clippy::disallowed_methods,
    clippy::disallowed_types,
    clippy::unwrap_used
)] // a test driving real processes

mod common;

use std::time::{Duration, Instant};

use common::{assert_agreement, height_of, setup_validators};

const VALIDATORS: usize = 4;
const KILLS_MIN: usize = 50;
/// A victim dies up to this long after it is back (uniformly at random).
const KILL_DELAY_MS_MAX: u64 = 1_500;
/// Every this many kills, the victim is killed a second time while it is
/// still starting (before it could report anything).
const DOUBLE_KILL_EVERY: usize = 5;
const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// xorshift64*: the test's only randomness, from a printed seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % bound
    }
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|text| {
            text.parse()
                .unwrap_or_else(|_| panic!("{name}={text:?} is not a number"))
        })
        .unwrap_or(default)
}

#[test]
fn validators_killed_at_random_moments_under_load_lose_no_block_and_never_double_sign() {
    let kills = (env_number("HM_KILLS", KILLS_MIN as u64) as usize).max(KILLS_MIN);
    let seed = env_number("HM_KILL_SEED", 0x6b69_6c6c).max(1);
    eprintln!("kill loop: {kills} kills, HM_KILL_SEED={seed}");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = setup_validators(
        dir.path(),
        VALIDATORS,
        "kill-loop-test",
        "workload_interval_ms = 20\nblock_interval_ms = 200\npropose_timeout_ms = 1500\n",
    );
    for node in &mut nodes {
        node.start();
    }
    common::wait_until(&nodes, "all four commit a block", STEP_TIMEOUT, |nodes| {
        (0..VALIDATORS).all(|index| height_of(nodes, index) >= 1)
    });
    let started = Instant::now();
    let mut blocks_checked = 0;
    // A node's counters cover what it committed since it last started
    // (blocks replayed from its own disk are not counted again), so each
    // node's are summed over its lives: read before every kill, and at the
    // end. The ≤ 0.5 s a status file trails is covered by the other three
    // nodes, which commit the same blocks while the victim is down.
    let mut evidence_seen = [0u64; VALIDATORS];
    let mut transactions_seen = [0u64; VALIDATORS];
    let count =
        |status: &serde_json::Value, field: &str| status["chain"][field].as_u64().unwrap_or(0);
    for kill in 0..kills {
        let victim = rng.below(VALIDATORS as u64) as usize;
        std::thread::sleep(Duration::from_millis(rng.below(KILL_DELAY_MS_MAX)));
        // What the victim has reported committed: it may have committed
        // more since (the report trails), never less.
        let reported = nodes[victim].committed();
        if let Some(status) = nodes[victim].status() {
            evidence_seen[victim] += count(&status, "evidence_committed");
            transactions_seen[victim] += count(&status, "transactions_committed");
        }
        nodes[victim].kill();
        nodes[victim].start();
        if kill % DOUBLE_KILL_EVERY == DOUBLE_KILL_EVERY - 1 {
            std::thread::sleep(Duration::from_millis(rng.below(300)));
            nodes[victim].kill();
            nodes[victim].start();
        }
        let what = format!(
            "kill {}/{kills}: validator {victim} restarts and commits past the {} blocks it had reported",
            kill + 1,
            reported.len()
        );
        common::wait_until(&nodes, &what, STEP_TIMEOUT, |nodes| {
            nodes[victim].committed().len() > reported.len()
        });
        let after = nodes[victim].committed();
        for (height, hash) in reported.iter().enumerate() {
            assert_eq!(
                &after[height],
                hash,
                "kill {}: validator {victim} lost or changed its block at height {} (had reported {} blocks)",
                kill + 1,
                height + 1,
                reported.len()
            );
        }
        blocks_checked += reported.len();
        assert_agreement(&nodes);
    }
    common::wait_until(&nodes, "all four up and agreeing", STEP_TIMEOUT, |nodes| {
        nodes.iter().all(|node| node.status().is_some())
    });
    assert_agreement(&nodes);
    for (index, node) in nodes.iter().enumerate() {
        let status = node.status().unwrap();
        evidence_seen[index] += count(&status, "evidence_committed");
        transactions_seen[index] += count(&status, "transactions_committed");
        assert_eq!(
            evidence_seen[index], 0,
            "validator {index} committed equivocation evidence: someone signed twice"
        );
    }
    let transactions = transactions_seen.iter().max().copied().unwrap_or(0);
    assert!(
        transactions >= kills as u64,
        "only {transactions} transactions committed under a write load of 200/s"
    );
    eprintln!(
        "kill loop: {kills} kills in {:.0?}, {blocks_checked} reported blocks re-checked after restarts, final height {}, {transactions} transactions committed, no evidence",
        started.elapsed(),
        height_of(&nodes, 0)
    );
}
