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

mod common;

use std::time::Duration;

use common::{Node, assert_agreement, height_of, setup_validators};

/// How long the cluster gets to reach each state.
const PHASE_TIMEOUT: Duration = Duration::from_secs(90);
/// How long commits are watched while two of four validators are down.
const NO_QUORUM_WATCH: Duration = Duration::from_secs(6);
const VALIDATORS: usize = 4;

fn wait_until(nodes: &[Node], what: &str, done: impl FnMut(&[Node]) -> bool) {
    common::wait_until(nodes, what, PHASE_TIMEOUT, done);
}

fn setup(dir: &std::path::Path) -> Vec<Node> {
    setup_validators(
        dir,
        VALIDATORS,
        "chain-cluster-test",
        "workload_interval_ms = 0\nblock_interval_ms = 200\npropose_timeout_ms = 1500\n",
    )
}

/// A TCP port on [::1] free right now.
fn free_tcp_port() -> String {
    let listener = std::net::TcpListener::bind("[::1]:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

/// The HTTP API refuses requests without the token, serves status and
/// Prometheus metrics with it — checked by `promtool check metrics` too
/// when promtool is installed.
fn check_http_api(api: &str, token_file: &std::path::Path) {
    let token = std::fs::read_to_string(token_file).unwrap();
    let (code, body) = common::http_get(api, "/metrics", None).expect("the API answers");
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("Bearer"), "{body}");
    let (code, body) = common::http_get(api, "/v1/chain/head", Some(token.trim())).unwrap();
    assert_eq!(code, 200, "{body}");
    let head: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(head["height"].as_u64().unwrap() >= 1, "{body}");
    let (code, metrics) = common::http_get(api, "/metrics", Some(token.trim())).unwrap();
    assert_eq!(code, 200, "{metrics}");
    assert!(metrics.contains("hm_chain_height "), "{metrics}");
    assert!(metrics.contains("hm_up 1"), "{metrics}");
    let stoq_bytes_sent = metrics
        .lines()
        .find_map(|line| line.strip_prefix("hm_stoq_bytes_sent_total "))
        .and_then(|value| value.parse::<f64>().ok());
    assert!(
        stoq_bytes_sent.is_some_and(|bytes| bytes > 0.0),
        "a committing validator has sent STOQ bytes: {metrics}"
    );
    if let Ok(mut promtool) = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        use std::io::Write;
        promtool
            .stdin
            .take()
            .unwrap()
            .write_all(metrics.as_bytes())
            .unwrap();
        let output = promtool.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "promtool refused /metrics: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    } else {
        eprintln!("promtool not installed: /metrics checked by format only");
    }
}

#[test]
fn four_validators_commit_survive_crashes_and_stop_safely_without_quorum() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = setup(dir.path());
    // Node 0 also serves the HTTP API.
    let api = free_tcp_port();
    let config = std::fs::read_to_string(&nodes[0].config).unwrap();
    std::fs::write(
        &nodes[0].config,
        format!("api_listen = \"{api}\"\n{config}"),
    )
    .unwrap();
    for node in &mut nodes {
        node.start();
    }
    wait_until(&nodes, "all four commit a block", |nodes| {
        (0..VALIDATORS).all(|index| height_of(nodes, index) >= 1)
    });
    let token_file = dir.path().join("node0").join("api-token");
    check_http_api(&api, &token_file);
    // Writes and chain reads through HTTP: a put, committed everywhere.
    let token = std::fs::read_to_string(&token_file).unwrap();
    let (code, body) = common::http_post(
        &api,
        "/v1/tx",
        token.trim(),
        r#"{"puts": [{"key": "via", "value": "http"}]}"#,
    )
    .unwrap();
    assert_eq!(code, 200, "{body}");
    let outcomes: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(outcomes[0]["id"].as_str().map(str::len), Some(64), "{body}");
    wait_until(
        &nodes,
        "the put sent over HTTP is committed everywhere",
        |nodes| {
            nodes
                .iter()
                .all(|node| node.get("via").as_deref() == Some("http"))
        },
    );
    let (code, body) = common::http_get(&api, "/v1/chain/block/1", Some(token.trim())).unwrap();
    assert_eq!(code, 200, "{body}");
    let block: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(block["height"], 1, "{body}");
    let (code, body) = common::http_get(&api, "/v1/peers", Some(token.trim())).unwrap();
    assert_eq!(code, 200, "{body}");
    let peers: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        peers.as_array().map(Vec::len),
        Some(VALIDATORS - 1),
        "{body}"
    );
    let (code, body) =
        common::http_get(&api, "/v1/chain/block/99999999", Some(token.trim())).unwrap();
    assert_eq!(code, 404, "{body}");
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
