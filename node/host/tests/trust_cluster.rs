//! Four real `hm-node` validators on [::1], each with `[chain.trust]` and a
//! name `node<i>.mesh`, bootstrap from phase 0 (self-signed) to phase 3
//! (chain-issued certificates, names registered): the test polls every
//! node's API (`ApiRequest::Status`) until all four report phase 3, then
//! checks what an operator sees:
//!
//! * `hm status --to …` (the `hm` CLI, run in-process: cargo builds only
//!   this package's binaries for its tests) shows all four in phase 3 with
//!   chain-issued certificates and their names;
//! * `hm dns resolve` finds `node2.mesh` and not `node9.mesh`, also as a
//!   light client (`--genesis`: headers and a state proof verified);
//! * every node's DNS front-end (`dns_listen`) answers `node2.mesh AAAA`
//!   with `::1`, NXDOMAIN for `node9.mesh` and REFUSED outside the zone —
//!   asked with a built-in UDP query, and with `dig` (UDP and TCP) too when
//!   `dig` is on PATH.
#![allow(
    clippy::disallowed_methods,
    clippy::disallowed_types,
    clippy::unwrap_used
)] // a test driving real processes

mod common;

use std::net::{Ipv6Addr, SocketAddrV6};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hm_faults::liar::{Liar, Lie};
use hm_host::dns::{RecordType, ResponseCode, ask};
use hm_node::api::NodeSummary;
use hm_node::{ApiRequest, ApiResponse};

/// How long the cluster gets to reach phase 3 everywhere.
const PHASE3_TIMEOUT: Duration = Duration::from_secs(60);
const POLL_INTERVAL: Duration = Duration::from_millis(250);
const DNS_TIMEOUT: Duration = Duration::from_secs(5);
const VALIDATORS: usize = 4;

/// A validator of this test: the shared process handle plus its addresses.
struct Node {
    process: common::Node,
    /// API (STOQ listen) address.
    addr: SocketAddrV6,
    dns: SocketAddrV6,
}

/// A port free for UDP and TCP on [::1] right now, from a per-process
/// range (as `chain_cluster` picks), skipping taken ones.
fn free_port(next: &mut u16) -> u16 {
    loop {
        let port = *next;
        *next = next.checked_add(1).expect("ran out of ports");
        let udp = std::net::UdpSocket::bind((Ipv6Addr::LOCALHOST, port));
        let tcp = std::net::TcpListener::bind((Ipv6Addr::LOCALHOST, port));
        if udp.is_ok() && tcp.is_ok() {
            return port;
        }
    }
}

fn local(port: u16) -> SocketAddrV6 {
    SocketAddrV6::new(Ipv6Addr::LOCALHOST, port, 0, 0)
}

fn setup(dir: &Path) -> Vec<Node> {
    let mut next_port = 20_000 + (std::process::id() % 10_000) as u16 * 4;
    let ids = common::init_validators(dir, VALIDATORS, "trust-cluster-test");
    let ports: Vec<(u16, u16)> = (0..VALIDATORS)
        .map(|_| (free_port(&mut next_port), free_port(&mut next_port)))
        .collect();
    let validators: String = ids
        .iter()
        .zip(&ports)
        .map(|(id, (port, _))| format!("{{ id = \"{id}\", addr = \"[::1]:{port}\" }}"))
        .collect::<Vec<_>>()
        .join(", ");
    (0..VALIDATORS)
        .map(|index| {
            let data_dir = dir.join(format!("node{index}"));
            let config = dir.join(format!("node{index}.toml"));
            let (port, dns_port) = ports[index];
            let seeds = if index == 0 {
                String::new()
            } else {
                format!("\"[::1]:{}\"", ports[0].0)
            };
            std::fs::write(
                &config,
                format!(
                    r#"data_dir = "{data_dir}"
listen = "[::1]:{port}"
seeds = [{seeds}]

[chain]
genesis = "genesis.bin"
validators = [{validators}]
block_interval_ms = 200
propose_timeout_ms = 1500

[chain.trust]
zone = "mesh"
name = "node{index}.mesh"
certificate_validity_s = 3600
renew_at = 0.5
chain_live_window_s = 30
dns_listen = "[::1]:{dns_port}"
"#,
                    data_dir = data_dir.display(),
                ),
            )
            .unwrap();
            Node {
                process: common::Node::new(
                    local(port).to_string(),
                    config,
                    data_dir.join("status.json"),
                    dir.join(format!("node{index}.log")),
                ),
                addr: local(port),
                dns: local(dns_port),
            }
        })
        .collect()
}

/// Polls every node's status through its API until all are in phase 3 and
/// every node's committed state holds every node's name (a node may report
/// phase 3 while another still trails the block that registered its name);
/// returns the last status answers.
fn wait_for_phase3(nodes: &[Node]) -> Vec<NodeSummary> {
    let addrs: Vec<SocketAddrV6> = nodes.iter().map(|node| node.addr).collect();
    let start = Instant::now();
    let result = hm_host::client::with_api_endpoint(|endpoint| async move {
        let mut last: Vec<String> = Vec::new();
        loop {
            let mut summaries = Vec::new();
            last.clear();
            for addr in &addrs {
                let answer = async {
                    let client = endpoint.connect(*addr).await.ok()?;
                    let status = client.call(&ApiRequest::Status).await.ok();
                    let mut names = 0;
                    for index in 0..VALIDATORS {
                        let name = format!("node{index}.mesh");
                        if let Ok(ApiResponse::Record(Some(_))) =
                            client.call(&ApiRequest::Resolve { name }).await
                        {
                            names += 1;
                        }
                    }
                    client.close();
                    match status? {
                        ApiResponse::Status(summary) => Some((*summary, names)),
                        _ => None,
                    }
                }
                .await;
                match answer {
                    Some((summary, names)) => {
                        last.push(format!(
                            "{addr}: phase {} height {} names {names}/{VALIDATORS} missing {:?}",
                            summary.phase, summary.height, summary.missing_for_next_phase
                        ));
                        if names == VALIDATORS {
                            summaries.push(summary);
                        }
                    }
                    None => last.push(format!("{addr}: no answer")),
                }
            }
            if summaries.len() == addrs.len() && summaries.iter().all(|summary| summary.phase == 3)
            {
                return Ok(Ok(summaries));
            }
            if start.elapsed() > PHASE3_TIMEOUT {
                return Ok(Err(last.join("\n")));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    })
    .map_err(|error: hm_host::client::ClientError| error.to_string())
    .and_then(|polled| polled);
    match result {
        Ok(summaries) => summaries,
        Err(last) => {
            let logs: Vec<String> = nodes
                .iter()
                .map(|node| format!("--- {}:\n{}", node.addr, node.process.log_tail()))
                .collect();
            panic!(
                "not all nodes reached phase 3 with every name within {PHASE3_TIMEOUT:?}:\n{last}\n{}",
                logs.join("\n")
            );
        }
    }
}

/// Runs the `hm` CLI in-process; its output and whether it succeeded.
fn local_port(addr: &str) -> SocketAddrV6 {
    addr.parse().expect("a node address")
}

/// A lying full node: a STOQ endpoint serving `hm/api/1` on `[::1]` that
/// relays each request to `upstream` (an honest node) and answers with
/// [`Liar`]'s version. Runs on its own thread until dropped.
struct LyingProxy {
    addr: SocketAddrV6,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LyingProxy {
    fn start(upstream: SocketAddrV6, lie: Lie) -> LyingProxy {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let env = hm_client::ClientEnv::new();
                let key = hm_wire::SigningKey::generate(&hm_client::OsEntropy);
                let mut config = hm_stoq::StoqConfig::new(local(0));
                config.protocols = vec![hm_node::API_PROTOCOL.to_vec()];
                let endpoint = hm_stoq::Endpoint::bind(
                    &env,
                    key,
                    config,
                    std::sync::Arc::new(hm_stoq::SelfSignedVerifier),
                )
                .unwrap();
                ready_tx.send(endpoint.local_addr()).unwrap();
                let upstream = hm_node::ApiClient::connect(
                    &endpoint,
                    upstream.into(),
                    Duration::from_secs(10),
                )
                .await
                .unwrap();
                let liar = std::sync::Arc::new(std::sync::Mutex::new(Liar::new(lie)));
                let upstream = std::sync::Arc::new(upstream);
                let serve = async {
                    while let Some(connection) = endpoint.accept().await {
                        let (liar, upstream) = (liar.clone(), upstream.clone());
                        tokio::spawn(async move {
                            while let Some(mut incoming) = connection.accept_request().await {
                                let request: ApiRequest =
                                    hm_wire::decode(&incoming.take_payload(), 1 << 20).unwrap();
                                let honest = upstream.call(&request).await.unwrap();
                                let answer = liar.lock().unwrap().answer(&request, honest);
                                if incoming.respond(&hm_wire::encode(&answer)).await.is_err() {
                                    break;
                                }
                            }
                        });
                    }
                };
                tokio::select! {
                    () = serve => {}
                    _ = stopped => {}
                }
                endpoint.close();
            });
        });
        let addr = ready_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        LyingProxy {
            addr: local(addr.port()),
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for LyingProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn hm(args: &[&str]) -> (bool, String, String) {
    let mut out = Vec::new();
    let mut argv = vec!["hm"];
    argv.extend_from_slice(args);
    let result = hm_cli::run(argv, &mut out);
    let error = result.as_ref().err().map(ToString::to_string);
    (
        result.is_ok(),
        String::from_utf8(out).unwrap(),
        error.unwrap_or_default(),
    )
}

fn dig_on_path() -> bool {
    Command::new("dig")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

fn dig(server: SocketAddrV6, args: &[&str]) -> String {
    let port = server.port().to_string();
    let mut command = Command::new("dig");
    command.args(["@::1", "-p", &port, "+time=2", "+tries=2"]);
    command.args(args);
    let output = command.output().expect("run dig");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn four_validators_bootstrap_to_phase3_and_answer_dns() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = setup(dir.path());
    for node in &mut nodes {
        node.process.start();
    }
    let summaries = wait_for_phase3(&nodes);
    eprintln!("phase 3 everywhere after {:?}", started.elapsed());
    for (index, summary) in summaries.iter().enumerate() {
        assert!(summary.validator);
        assert!(summary.certificate_chain_issued, "{summary:?}");
        assert_eq!(summary.name.as_deref(), Some(&*format!("node{index}.mesh")));
        assert_eq!(summary.missing_for_next_phase, None, "{summary:?}");
    }

    // What an operator sees: `hm status`.
    let addrs: Vec<String> = nodes.iter().map(|node| node.addr.to_string()).collect();
    let mut args = vec!["status"];
    for addr in &addrs {
        args.extend(["--to", addr]);
    }
    let (ok, table, error) = hm(&args);
    assert!(ok, "hm status failed: {error}\n{table}");
    eprintln!("hm status:\n{table}");
    let rows: Vec<Vec<&str>> = table
        .lines()
        .skip(1)
        .map(|line| line.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), VALIDATORS, "{table}");
    for (index, row) in rows.iter().enumerate() {
        // ADDRESS NODE ROLE PHASE HEIGHT CERTIFICATE (chain) NAME MISSING
        assert_eq!(row[0], addrs[index], "{table}");
        assert_eq!(row[2], "validator", "{table}");
        assert_eq!(row[3], "3", "{table}");
        assert_eq!(row[6], "(chain)", "{table}");
        assert_eq!(row[7], format!("node{index}.mesh"), "{table}");
        assert_eq!(row[8], "-", "{table}");
    }
    let mut json_args = args.clone();
    json_args.push("--json");
    let (ok, json, error) = hm(&json_args);
    assert!(ok, "hm status --json failed: {error}");
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(
        json.as_array()
            .unwrap()
            .iter()
            .all(|node| node["phase"] == 3 && node["certificate_chain_issued"] == true),
        "{json:#}"
    );

    // `hm dns resolve` through the API.
    let (ok, out, error) = hm(&["dns", "resolve", "node2.mesh", "--to", &addrs[0]]);
    assert!(ok, "{error}");
    assert!(out.starts_with("node2.mesh AAAA ::1\n"), "{out}");
    let (ok, _, error) = hm(&["dns", "resolve", "node9.mesh", "--to", &addrs[0]]);
    assert!(!ok && error.contains("has no committed record"), "{error}");
    // As a light client trusting only the genesis: the same record, proven
    // against a header verified by its commit certificate; the absent name
    // proven absent.
    let genesis = dir.path().join("genesis.bin");
    let genesis = genesis.to_str().unwrap();
    let (ok, out, error) = hm(&[
        "dns",
        "resolve",
        "node2.mesh",
        "--to",
        &addrs[1],
        "--genesis",
        genesis,
    ]);
    assert!(ok, "{error}");
    assert!(out.starts_with("node2.mesh AAAA ::1\n"), "{out}");
    assert!(out.contains("proven: state proof against header"), "{out}");
    let (ok, _, error) = hm(&[
        "dns",
        "resolve",
        "node9.mesh",
        "--to",
        &addrs[1],
        "--genesis",
        genesis,
    ]);
    assert!(!ok && error.contains("proven absent at height"), "{error}");

    // A lying full node in front of node 1: each lie is refused, saying
    // what was wrong, and nothing it says is printed as an answer.
    for (lie, why) in [
        (Lie::ForgedRecord, "not proven"),
        (Lie::ForgedHeader, "the certificate is for block"),
        (Lie::StaleState, "stale"),
    ] {
        let proxy = LyingProxy::start(local_port(&addrs[1]), lie);
        let to = proxy.addr.to_string();
        let resolve = || {
            hm(&[
                "dns",
                "resolve",
                "node2.mesh",
                "--to",
                &to,
                "--genesis",
                genesis,
                "--max-age-s",
                "2",
            ])
        };
        if lie == Lie::StaleState {
            // The liar keeps the first state it relays and serves it again
            // once it is older than the client accepts (the chain commits
            // every 200 ms meanwhile): waiting is the point here.
            let (ok, _, error) = resolve();
            assert!(ok, "the first answer is current: {error}");
            std::thread::sleep(Duration::from_secs(3));
        }
        let (ok, out, error) = resolve();
        assert!(!ok, "{lie:?} accepted: {out}");
        assert!(
            out.is_empty()
                && error.contains("is not proven, so it was not accepted")
                && error.contains(why),
            "{lie:?}: {error}"
        );
        drop(proxy);
    }

    // The one-node commands, against node 0.
    let (ok, out, error) = hm(&["peers", "--to", &addrs[0], "--json"]);
    assert!(ok, "hm peers: {error}");
    let peers: serde_json::Value = serde_json::from_str(&out).unwrap();
    let peers = peers.as_array().unwrap();
    assert_eq!(peers.len(), VALIDATORS - 1, "{out}");
    assert!(
        peers
            .iter()
            .all(|peer| peer["validator"] == true && peer["member"] == true),
        "{out}"
    );
    let (ok, out, error) = hm(&["chain", "head", "--to", &addrs[0], "--json"]);
    assert!(ok, "hm chain head: {error}");
    let head: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(head["height"].as_u64().unwrap() >= 1, "{out}");
    let (ok, out, error) = hm(&["chain", "block", "1", "--to", &addrs[1], "--json"]);
    assert!(ok, "hm chain block: {error}");
    let block: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(block["height"], 1, "{out}");
    assert_eq!(block["hash"].as_str().unwrap().len(), 64, "{out}");
    let (ok, _, error) = hm(&["chain", "block", "100000000", "--to", &addrs[0]]);
    assert!(!ok && error.contains("no block at height"), "{error}");
    let (ok, out, error) = hm(&["tx", "submit", "--put", "cli=yes", "--to", &addrs[2]]);
    assert!(
        ok && out.starts_with("submitted "),
        "hm tx submit: {error}\n{out}"
    );
    let (ok, out, error) = hm(&[
        "tx",
        "submit",
        "--put",
        "waited=yes",
        "--to",
        &addrs[1],
        "--wait",
    ]);
    assert!(
        ok && out.starts_with("committed "),
        "hm tx submit --wait: {error}\n{out}"
    );
    // Read where it was waited for: another node may not have committed it yet.
    let (ok, out, error) = hm(&["kv", "get", "--key", "waited", "--to", &addrs[1], "--json"]);
    assert!(ok, "hm kv get: {error}");
    let value: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        value["value"], "yes",
        "committed on node 1, read on node 0: {out}"
    );
    assert!(value["height"].as_u64().unwrap() >= 1, "{out}");
    let (ok, out, error) = hm(&["kv", "get", "--key", "never-written", "--to", &addrs[0]]);
    assert!(
        ok && out.starts_with("value (none)\n"),
        "hm kv get: {error}\n{out}"
    );
    let (ok, out, error) = hm(&["cert", "show", "--to", &addrs[3], "--json"]);
    assert!(ok, "hm cert show: {error}");
    let certificate: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(certificate["names"][0], "node3.mesh", "{out}");
    assert_eq!(certificate["subject"], json[3]["node_id"], "{out}");
    assert!(
        certificate["issued_at_height"].as_u64().is_some(),
        "chain-issued: {out}"
    );
    assert_eq!(certificate["revoked"], false, "{out}");
    // An operator's renewal: the chain replaces node 3's certificate.
    let (ok, out, error) = hm(&["cert", "renew", "--to", &addrs[3], "--json"]);
    assert!(ok, "hm cert renew: {error}");
    let renewal: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(renewal["replacing"], certificate["fingerprint"], "{out}");
    let deadline = Instant::now() + PHASE3_TIMEOUT;
    let renewed = loop {
        let (ok, out, error) = hm(&["cert", "show", "--to", &addrs[3], "--json"]);
        assert!(ok, "hm cert show: {error}");
        let current: serde_json::Value = serde_json::from_str(&out).unwrap();
        if current["fingerprint"] != certificate["fingerprint"] {
            break current;
        }
        assert!(
            Instant::now() < deadline,
            "the renewal did not land within {PHASE3_TIMEOUT:?}"
        );
        std::thread::sleep(POLL_INTERVAL);
    };
    assert_eq!(renewed["names"][0], "node3.mesh", "{renewed}");
    assert!(
        renewed["issued_at_height"].as_u64() > certificate["issued_at_height"].as_u64(),
        "the renewal was issued by a later block: {renewed}"
    );

    // Standard DNS on every node's `dns_listen`.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for node in &nodes {
        let (found, missing, outside) = runtime.block_on(async {
            (
                ask(node.dns, "node2.mesh", RecordType::AAAA, DNS_TIMEOUT).await,
                ask(node.dns, "node9.mesh", RecordType::AAAA, DNS_TIMEOUT).await,
                ask(node.dns, "example.com", RecordType::AAAA, DNS_TIMEOUT).await,
            )
        });
        let found = found.unwrap();
        assert_eq!(found.response_code, ResponseCode::NoError);
        assert!(found.authoritative);
        assert_eq!(found.addrs, vec![Ipv6Addr::LOCALHOST]);
        let missing = missing.unwrap();
        assert_eq!(missing.response_code, ResponseCode::NXDomain);
        assert!(missing.soa, "NXDOMAIN carries the zone's SOA");
        assert_eq!(outside.unwrap().response_code, ResponseCode::Refused);
    }
    if dig_on_path() {
        let server = nodes[0].dns;
        let short = dig(server, &["node2.mesh", "AAAA", "+short"]);
        assert_eq!(short.trim(), "::1", "dig: {short}");
        let tcp = dig(server, &["node3.mesh", "AAAA", "+short", "+tcp"]);
        assert_eq!(tcp.trim(), "::1", "dig +tcp: {tcp}");
        let nx = dig(server, &["node9.mesh", "AAAA"]);
        assert!(nx.contains("status: NXDOMAIN"), "dig: {nx}");
        eprintln!("DNS checked with the built-in UDP query and with dig (UDP and TCP)");
    } else {
        eprintln!("DNS checked with the built-in UDP query only: dig is not on PATH");
    }
    eprintln!("done after {:?}", started.elapsed());
}
