//! Four real `hm-node` validators on [::1] commit blocks under a
//! transaction workload submitted through the node's API (`hm-node
//! submit`), read back through it (`hm-node get`); SIGKILL one → the others keep committing; restart
//! it → it catches up from its disk and its peers; SIGKILL two → commits
//! stop (no quorum) without any node committing alone; restart them →
//! commits resume. Every node's committed hashes agree throughout.
#![allow(
    clippy::disallowed_methods,
    clippy::disallowed_types,
    clippy::unwrap_used
)] // a test driving real processes

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long the cluster gets to reach each state.
const PHASE_TIMEOUT: Duration = Duration::from_secs(90);
const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// How long commits are watched while two of four validators are down.
const NO_QUORUM_WATCH: Duration = Duration::from_secs(6);
const VALIDATORS: usize = 4;

struct Node {
    /// API address, e.g. "[::1]:31234".
    addr: String,
    config: PathBuf,
    status: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Node {
    fn start(&mut self) {
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_hm-node"))
            .arg("--config")
            .arg(&self.config)
            .env("HM_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start hm-node");
        self.child = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap(); // SIGKILL on unix
            child.wait().unwrap();
        }
        let _ = std::fs::remove_file(&self.status);
    }

    fn status(&self) -> Option<serde_json::Value> {
        let text = std::fs::read_to_string(&self.status).ok()?;
        serde_json::from_str(&text).ok()
    }

    fn height(&self) -> Option<u64> {
        self.status()?["chain"]["height"].as_u64()
    }

    fn committed(&self) -> Vec<String> {
        self.status()
            .and_then(|status| {
                status["chain"]["committed"].as_array().map(|hashes| {
                    hashes
                        .iter()
                        .map(|hash| hash.to_string())
                        .collect::<Vec<_>>()
                })
            })
            .unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

fn hm_node(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_hm-node"))
        .args(args)
        .output()
        .expect("run hm-node");
    assert!(
        output.status.success(),
        "hm-node {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn field<'a>(output: &'a str, name: &str) -> &'a str {
    output
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("`{name}` missing from {output:?}"))
}

impl Node {
    /// Submits `KEY=VALUE` and `random` more puts through the node's API.
    fn submit(&self, put: &str, random: usize) {
        let random = random.to_string();
        let out = hm_node(&[
            "submit", "--to", &self.addr, "--put", put, "--random", &random,
        ]);
        assert!(
            out.lines().all(|line| line.starts_with("submitted ")),
            "{out}"
        );
    }

    /// A key of the node's committed state, through its API.
    fn get(&self, key: &str) -> Option<String> {
        let output = Command::new(env!("CARGO_BIN_EXE_hm-node"))
            .args(["get", "--to", &self.addr, "--key", key])
            .output()
            .ok()?;
        if !output.status.success() {
            return None; // not up yet
        }
        let out = String::from_utf8(output.stdout).ok()?;
        Some(field(&out, "value").to_string())
    }
}

fn wait_until(nodes: &[Node], what: &str, mut done: impl FnMut(&[Node]) -> bool) {
    let start = Instant::now();
    while !done(nodes) {
        if start.elapsed() > PHASE_TIMEOUT {
            let heights: Vec<Option<u64>> = nodes.iter().map(Node::height).collect();
            panic!("{what}: not reached within {PHASE_TIMEOUT:?}; heights {heights:?}");
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

fn height_of(nodes: &[Node], index: usize) -> u64 {
    nodes[index].height().unwrap_or(0)
}

/// Every pair of nodes agrees on every height both have committed.
fn assert_agreement(nodes: &[Node]) {
    let lists: Vec<Vec<String>> = nodes.iter().map(Node::committed).collect();
    for a in &lists {
        for b in &lists {
            let common = a.len().min(b.len());
            assert_eq!(
                a[..common],
                b[..common],
                "two validators committed different blocks"
            );
        }
    }
}

fn setup(dir: &Path) -> Vec<Node> {
    let base = 30_000 + (std::process::id() % 20_000) as u16;
    let mut ids = Vec::new();
    let mut keys = Vec::new();
    for index in 0..VALIDATORS {
        let data_dir = dir.join(format!("node{index}"));
        let out = hm_node(&["init", "--data-dir", data_dir.to_str().unwrap()]);
        ids.push(field(&out, "node_id").to_string());
        keys.push(format!("{}:10", field(&out, "public_key")));
    }
    let genesis = dir.join("genesis.bin");
    let mut args = vec![
        "genesis",
        "--out",
        genesis.to_str().unwrap(),
        "--chain-name",
        "chain-cluster-test",
        "--params",
        "simulation",
    ];
    for key in &keys {
        args.push("--validator");
        args.push(key);
    }
    hm_node(&args);
    let validators: String = ids
        .iter()
        .enumerate()
        .map(|(index, id)| {
            format!(
                "{{ id = \"{id}\", addr = \"[::1]:{}\" }}",
                base + index as u16
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    (0..VALIDATORS)
        .map(|index| {
            let data_dir = dir.join(format!("node{index}"));
            let status = data_dir.join("status.json");
            let config = dir.join(format!("node{index}.toml"));
            let seeds = if index == 0 {
                String::new()
            } else {
                format!("\"[::1]:{base}\"")
            };
            std::fs::write(
                &config,
                format!(
                    "data_dir = \"{}\"\nlisten = \"[::1]:{}\"\nseeds = [{seeds}]\n\n[chain]\ngenesis = \"genesis.bin\"\nvalidators = [{validators}]\nworkload_interval_ms = 0\nblock_interval_ms = 200\npropose_timeout_ms = 1500\n",
                    data_dir.display(),
                    base + index as u16
                ),
            )
            .unwrap();
            Node {
                addr: format!("[::1]:{}", base + index as u16),
                config,
                status,
                log: dir.join(format!("node{index}.log")),
                child: None,
            }
        })
        .collect()
}

#[test]
fn four_validators_commit_survive_crashes_and_stop_safely_without_quorum() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = setup(dir.path());
    for node in &mut nodes {
        node.start();
    }
    wait_until(&nodes, "all four commit a block", |nodes| {
        (0..VALIDATORS).all(|index| height_of(nodes, index) >= 1)
    });
    nodes[1].submit("phase=all-up", 40);
    wait_until(
        &nodes,
        "the submitted puts are committed everywhere",
        |nodes| {
            nodes
                .iter()
                .all(|node| node.get("phase").as_deref() == Some("all-up"))
        },
    );
    // The status file trails the API by up to half a second.
    wait_until(
        &nodes,
        "all 41 submitted transactions are counted",
        |nodes| {
            nodes[0].status().is_some_and(|status| {
                status["chain"]["transactions_committed"]
                    .as_u64()
                    .is_some_and(|committed| committed >= 41)
            })
        },
    );

    // One of four down: 30 of 40 stake is still a quorum.
    nodes[3].kill();
    let before = height_of(&nodes, 0);
    nodes[0].submit("phase=one-down", 20);
    wait_until(&nodes, "three keep committing", |nodes| {
        (0..3).all(|index| height_of(nodes, index) >= before + 3)
            && (0..3).all(|index| nodes[index].get("phase").as_deref() == Some("one-down"))
    });
    nodes[3].start();
    let target = height_of(&nodes, 0);
    wait_until(&nodes, "the restarted validator catches up", |nodes| {
        height_of(nodes, 3) >= target
    });
    // The status file may trail the put's block: wait for the state itself.
    wait_until(
        &nodes,
        "the restarted validator serves the state it missed",
        |nodes| nodes[3].get("phase").as_deref() == Some("one-down"),
    );
    assert_agreement(&nodes);

    // Two of four down: 20 of 40 is no quorum.
    nodes[2].kill();
    nodes[3].kill();
    // A block may have been mid-commit when they died.
    std::thread::sleep(Duration::from_secs(1));
    let stalled = height_of(&nodes, 0).max(height_of(&nodes, 1));
    // Accepted into the mempool, but nobody can commit it yet.
    nodes[0].submit("phase=no-quorum", 0);
    std::thread::sleep(NO_QUORUM_WATCH);
    for index in 0..2 {
        assert!(
            height_of(&nodes, index) <= stalled,
            "validator {index} committed without a quorum"
        );
        assert_eq!(nodes[index].get("phase").as_deref(), Some("one-down"));
    }
    nodes[2].start();
    nodes[3].start();
    wait_until(&nodes, "commits resume after the restarts", |nodes| {
        (0..VALIDATORS).all(|index| height_of(nodes, index) >= stalled + 2)
    });
    wait_until(
        &nodes,
        "the put held through the outage is committed",
        |nodes| {
            nodes
                .iter()
                .all(|node| node.get("phase").as_deref() == Some("no-quorum"))
        },
    );
    assert_agreement(&nodes);
}
