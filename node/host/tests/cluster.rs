//! Four real `hm-node` processes on [::1]: they converge on membership; a
//! SIGKILLed node is removed from every view; restarted on the same data dir
//! it rejoins with the same identity.
#![allow(
    clippy::disallowed_methods,
    clippy::disallowed_types,
    clippy::unwrap_used
)] // a test driving real processes

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::Node;

/// How long the cluster gets to converge after each change.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(60);
/// How often status files are read while waiting.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

fn free_port_base() -> u16 {
    // Spread concurrent test runs apart; the test checks binding succeeded.
    20_000 + (std::process::id() % 20_000) as u16
}

fn write_config(dir: &Path, index: usize, base: u16) -> (PathBuf, PathBuf) {
    let data_dir = dir.join(format!("node{index}"));
    std::fs::create_dir_all(&data_dir).unwrap();
    let status = data_dir.join("status.json");
    let config = dir.join(format!("node{index}.toml"));
    let seed = format!("[::1]:{base}");
    let seeds = if index == 0 {
        String::new()
    } else {
        format!("\"{seed}\"")
    };
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\nlisten = \"[::1]:{}\"\nseeds = [{seeds}]\nstatus_file = \"{}\"\n",
            data_dir.display(),
            base + index as u16,
            status.display()
        ),
    )
    .unwrap();
    (config, status)
}

/// Waits until every running node's view has exactly `expected` members and
/// all running nodes agree.
fn wait_for_views(nodes: &[Node], running: &[usize], expected: usize, what: &str) {
    let deadline = Instant::now() + CONVERGE_TIMEOUT;
    loop {
        let views: Vec<Option<Vec<serde_json::Value>>> = running
            .iter()
            .map(|&i| {
                nodes[i]
                    .status()
                    .and_then(|s| s["alive_members"].as_array().cloned())
            })
            .collect();
        let agreed = views.iter().all(|view| {
            view.as_ref().is_some_and(|members| {
                members.len() == expected && Some(members) == views[0].as_ref()
            })
        });
        if agreed {
            return;
        }
        if Instant::now() > deadline {
            let logs: Vec<String> = nodes
                .iter()
                .map(|node| std::fs::read_to_string(&node.log).unwrap_or_default())
                .map(|log| log.lines().rev().take(15).collect::<Vec<_>>().join("\n"))
                .collect();
            panic!(
                "{what}: views did not converge to {expected} members within {CONVERGE_TIMEOUT:?}: {views:?}\nlogs (latest first):\n{}",
                logs.join("\n---\n")
            );
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

#[test]
fn four_nodes_converge_lose_a_killed_node_and_take_it_back() {
    let dir = std::env::temp_dir().join(format!("hm-cluster-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let base = free_port_base();
    let mut nodes: Vec<Node> = (0..4)
        .map(|index| {
            let (config, status) = write_config(&dir, index, base);
            let addr = format!("[::1]:{}", base + index as u16);
            Node::new(addr, config, status, dir.join(format!("node{index}.log")))
        })
        .collect();
    for node in &mut nodes {
        node.start();
    }
    wait_for_views(&nodes, &[0, 1, 2, 3], 4, "boot");
    let identity_before = nodes[3].node_id().unwrap();

    nodes[3].kill();
    wait_for_views(&nodes, &[0, 1, 2], 3, "after SIGKILL of node 3");

    nodes[3].start();
    wait_for_views(&nodes, &[0, 1, 2, 3], 4, "after restarting node 3");
    assert_eq!(
        nodes[3].node_id().unwrap(),
        identity_before,
        "a restarted node must keep its persisted identity"
    );
    // The restart bumps the persisted incarnation from 1 to 2. A peer whose
    // probe of the restarting node timed out may then suspect it at
    // incarnation 2, which the node refutes by moving to 3 (SWIM): so at
    // least 2, and never the pre-restart 1.
    let incarnation = nodes[3].status().unwrap()["incarnation"].as_u64().unwrap();
    assert!(
        incarnation >= 2,
        "the restart must bump the persisted incarnation (got {incarnation})"
    );
    drop(nodes);
    let _ = std::fs::remove_dir_all(&dir);
}
