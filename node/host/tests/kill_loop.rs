//! Crash safety and liveness on a real disk: four `hm-node` validators on
//! [::1] commit blocks under a steady write load (each submits a key-value
//! transaction every 20 ms) while validators are SIGKILLed at random
//! moments — mid-commit, mid-vote, mid-sync, again while still replaying
//! their disk — and restarted, at least 50 times. Kills overlap: every few
//! kills a second validator dies while the first is still down (two of
//! four: no quorum, commits stop), and restarts come while the others are
//! still recovering, so validators come back in the middle of a round
//! they had signed in.
//!
//! Between kills a client submits a put through a random live node's HTTP
//! API; every put a node acknowledged must be committed within
//! [`COMMIT_BOUND`] after the last restart (an acknowledged transaction is
//! on the acknowledging node's disk). After every awaited restart the
//! victim must still hold, unchanged, every block it had reported
//! committed; no node may ever commit equivocation evidence (a validator
//! that forgot what it signed would vote twice in one round); and the
//! chain must move again after the last restart.
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

use common::{Node, assert_agreement, height_of, setup_validators};

const VALIDATORS: usize = 4;
const KILLS_MIN: usize = 50;
/// A kill comes up to this long after the previous one.
const KILL_DELAY_MS_MAX: u64 = 1_000;
/// A killed validator restarts up to this long after its kill.
const RESTART_DELAY_MS_MAX: u64 = 2_000;
/// Every this many kills, a second validator dies while the first is down.
const OVERLAP_EVERY: usize = 3;
/// Every this many kills, the loop waits until the victim committed past
/// what it had reported (and checks those blocks); in between, the next
/// kill may hit while nodes are still recovering.
const AWAIT_EVERY: usize = 4;
/// Every acknowledged put is committed within this after the last restart.
const COMMIT_BOUND: Duration = Duration::from_secs(90);
const STEP_TIMEOUT: Duration = Duration::from_secs(90);

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

/// A validator's HTTP API: address and bearer token.
struct Api {
    addr: String,
    token: String,
}

impl Api {
    /// POSTs one put; the transaction id when the node acknowledged it
    /// (`None` when the node is down or refused).
    fn submit(&self, key: &str, value: &str) -> Option<String> {
        let body = format!(r#"{{"puts": [{{"key": "{key}", "value": "{value}"}}]}}"#);
        let (code, answer) = common::http_post(&self.addr, "/v1/tx", &self.token, &body)?;
        if code != 200 {
            return None;
        }
        let outcomes: serde_json::Value = serde_json::from_str(&answer).ok()?;
        outcomes[0]["id"].as_str().map(str::to_string)
    }

    /// The committed height of transaction `id`, if this node knows it
    /// committed.
    fn committed_at(&self, id: &str) -> Option<u64> {
        let (code, answer) =
            common::http_get(&self.addr, &format!("/v1/tx/{id}"), Some(&self.token))?;
        if code != 200 {
            return None;
        }
        let state: serde_json::Value = serde_json::from_str(&answer).ok()?;
        (state["status"] == "committed").then(|| state["height"].as_u64())?
    }
}

fn free_tcp_port() -> String {
    let listener = std::net::TcpListener::bind("[::1]:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

/// Kills `index` (reading its counters first: they cover only its current
/// life) and returns what it had reported committed.
fn kill(nodes: &mut [Node], index: usize, seen: &mut Counters) -> Vec<String> {
    let reported = nodes[index].committed();
    seen.add(index, &nodes[index]);
    nodes[index].kill();
    reported
}

/// Evidence and transactions each node reported, summed over its lives.
#[derive(Default)]
struct Counters {
    evidence: [u64; VALIDATORS],
    transactions: [u64; VALIDATORS],
}

impl Counters {
    fn add(&mut self, index: usize, node: &Node) {
        if let Some(status) = node.status() {
            let count = |field: &str| status["chain"][field].as_u64().unwrap_or(0);
            self.evidence[index] += count("evidence_committed");
            self.transactions[index] += count("transactions_committed");
        }
    }
}

#[test]
fn validators_killed_at_random_and_overlapping_lose_nothing_never_double_sign_and_commit_every_acknowledged_put()
 {
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
    let mut apis = Vec::new();
    for (index, node) in nodes.iter().enumerate() {
        let addr = free_tcp_port();
        let config = std::fs::read_to_string(&node.config).unwrap();
        std::fs::write(&node.config, format!("api_listen = \"{addr}\"\n{config}")).unwrap();
        let token = std::fs::read_to_string(dir.path().join(format!("node{index}/api-token")))
            .unwrap()
            .trim()
            .to_string();
        apis.push(Api { addr, token });
    }
    for node in &mut nodes {
        node.start();
    }
    common::wait_until(&nodes, "all four commit a block", STEP_TIMEOUT, |nodes| {
        (0..VALIDATORS).all(|index| height_of(nodes, index) >= 1)
    });
    let started = Instant::now();
    let mut seen = Counters::default();
    let mut blocks_checked = 0;
    let mut overlaps = 0;
    let mut acknowledged: Vec<(String, String)> = Vec::new();
    let mut refused = 0;
    // Restarts due: (when, validator).
    let mut restarts: Vec<(Instant, usize)> = Vec::new();
    for kill_number in 0..kills {
        std::thread::sleep(Duration::from_millis(rng.below(KILL_DELAY_MS_MAX)));
        restart_due(&mut nodes, &mut restarts);
        while !nodes.iter().any(Node::is_running) {
            // Everyone is down (kills outran restarts): wait for one.
            std::thread::sleep(Duration::from_millis(50));
            restart_due(&mut nodes, &mut restarts);
        }
        // A client's put through a live node.
        let live: Vec<usize> = (0..VALIDATORS).filter(|i| nodes[*i].is_running()).collect();
        let via = live[rng.below(live.len() as u64) as usize];
        let key = format!("kill-{kill_number}");
        match apis[via].submit(&key, &format!("v{kill_number}")) {
            Some(id) => acknowledged.push((key, id)),
            None => refused += 1,
        }
        let victim = live[rng.below(live.len() as u64) as usize];
        let reported = kill(&mut nodes, victim, &mut seen);
        restarts.push((
            Instant::now() + Duration::from_millis(rng.below(RESTART_DELAY_MS_MAX)),
            victim,
        ));
        let others: Vec<usize> = (0..VALIDATORS).filter(|i| nodes[*i].is_running()).collect();
        if kill_number % OVERLAP_EVERY == OVERLAP_EVERY - 1 && !others.is_empty() {
            // A second one goes down while the first is still away.
            let second = others[rng.below(others.len() as u64) as usize];
            kill(&mut nodes, second, &mut seen);
            overlaps += 1;
            restarts.push((
                Instant::now() + Duration::from_millis(rng.below(RESTART_DELAY_MS_MAX)),
                second,
            ));
        }
        if kill_number % AWAIT_EVERY == AWAIT_EVERY - 1 {
            // Everyone back; the victim must keep what it had reported and
            // commit past it.
            while !restarts.is_empty() {
                std::thread::sleep(Duration::from_millis(50));
                restart_due(&mut nodes, &mut restarts);
            }
            let what = format!(
                "kill {}/{kills}: validator {victim} restarts and commits past the {} blocks it had reported",
                kill_number + 1,
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
                    kill_number + 1,
                    height + 1,
                    reported.len()
                );
            }
            blocks_checked += reported.len();
        }
        assert_agreement(&nodes);
    }
    while !restarts.is_empty() {
        std::thread::sleep(Duration::from_millis(50));
        restart_due(&mut nodes, &mut restarts);
    }
    let last_restart = Instant::now();
    common::wait_until(&nodes, "all four up and reporting", STEP_TIMEOUT, |nodes| {
        nodes.iter().all(|node| node.status().is_some())
    });
    let height_after = height_of(&nodes, 0);
    common::wait_until(
        &nodes,
        "the chain moves after the last restart",
        STEP_TIMEOUT,
        |nodes| (0..VALIDATORS).all(|index| height_of(nodes, index) > height_after + 2),
    );
    // Every acknowledged put commits within the bound.
    let mut pending: Vec<&(String, String)> = acknowledged.iter().collect();
    while !pending.is_empty() {
        pending.retain(|(_, id)| !apis.iter().any(|api| api.committed_at(id).is_some()));
        if pending.is_empty() {
            break;
        }
        assert!(
            last_restart.elapsed() < COMMIT_BOUND,
            "{} of {} acknowledged puts not committed {COMMIT_BOUND:?} after the last restart: {:?}",
            pending.len(),
            acknowledged.len(),
            pending.iter().take(5).collect::<Vec<_>>()
        );
        std::thread::sleep(common::POLL_INTERVAL);
    }
    let committed_within = last_restart.elapsed();
    assert_agreement(&nodes);
    for (index, node) in nodes.iter().enumerate() {
        seen.add(index, node);
        assert_eq!(
            seen.evidence[index], 0,
            "validator {index} committed equivocation evidence: someone signed twice"
        );
    }
    let transactions = seen.transactions.iter().max().copied().unwrap_or(0);
    assert!(
        transactions >= kills as u64,
        "only {transactions} transactions committed under a write load of 200/s"
    );
    assert!(
        acknowledged.len() * 2 >= kills,
        "only {} of {kills} client puts were acknowledged ({refused} refused or unanswered)",
        acknowledged.len()
    );
    eprintln!(
        "kill loop: {kills} kills ({overlaps} with two validators down at once) in {:.0?}, \
         {blocks_checked} reported blocks re-checked after restarts, final height {}, \
         {transactions} transactions committed, {} acknowledged client puts all committed \
         {committed_within:.1?} after the last restart ({refused} not acknowledged), no evidence",
        started.elapsed(),
        height_of(&nodes, 0),
        acknowledged.len(),
    );
}

/// Starts the validators whose restart time has come.
fn restart_due(nodes: &mut [Node], restarts: &mut Vec<(Instant, usize)>) {
    let now = Instant::now();
    restarts.retain(|(at, index)| {
        if *at <= now {
            if !nodes[*index].is_running() {
                nodes[*index].start();
            }
            false
        } else {
            true
        }
    });
}
