//! Light nodes on real processes: `hm-node devnet --nodes 4 --light 2`
//! starts four validators and two light nodes (`role = "light"`, the
//! validators as their `full_nodes`) on [::1] and returns once every node
//! is in bootstrap phase 3. A light node stores no blocks: it gets there on
//! headers verified by their commit certificates and on proven answers
//! from the full nodes. The test then checks what an operator sees of a
//! light node:
//!
//! * its API `Status` (polled until phase 3, with a deadline): phase 3, a
//!   chain-issued certificate, nothing missing, trusted height > 0;
//! * `hm status` (the `hm` CLI, in-process): phase 3 and HEIGHT > 0;
//!   `hm chain head`: its latest verified header; `hm kv get`: refused,
//!   saying to ask a full node;
//! * its status file: answers accepted with proofs, headers verified, not
//!   frozen; and a validator resolves each light node's name.
//!
//! Also: a genesis validator configured as a light node is refused at
//! start (exit 2), saying a validator must replicate.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // a test driving real processes

mod common;

use std::net::{Ipv6Addr, SocketAddrV6};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hm_node::ApiRequest;
use hm_node::ApiResponse;
use hm_node::api::NodeSummary;

const VALIDATORS: usize = 4;
const LIGHT_NODES: usize = 2;
/// How long devnet gets to bring every node, light ones included, to
/// phase 3 (a few seconds on an idle machine; generous for CI).
const DEVNET_TIMEOUT_S: u64 = 120;
/// How long a light node's API gets to answer phase 3 once devnet saw it.
const API_TIMEOUT: Duration = Duration::from_secs(30);
const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// Devnet's port layout: STOQ at BASE+i, HTTP API at BASE+100+i, DNS at
/// BASE+200+i.
const PORTS_SPAN: u16 = 200 + (VALIDATORS + LIGHT_NODES) as u16;

fn local(port: u16) -> SocketAddrV6 {
    SocketAddrV6::new(Ipv6Addr::LOCALHOST, port, 0, 0)
}

/// A base port whose devnet ports are all free right now, from a
/// per-process range, skipping ranges with a taken port.
fn free_base_port() -> u16 {
    let mut base = 21_000 + (std::process::id() % 1_000) as u16 * 8;
    loop {
        let free = (0..=PORTS_SPAN).all(|offset| {
            let port = base + offset;
            std::net::UdpSocket::bind((Ipv6Addr::LOCALHOST, port)).is_ok()
                && std::net::TcpListener::bind((Ipv6Addr::LOCALHOST, port)).is_ok()
        });
        if free {
            return base;
        }
        base = base
            .checked_add(PORTS_SPAN + 1)
            .filter(|base| *base < 65_535 - PORTS_SPAN)
            .expect("ran out of ports for a devnet");
    }
}

/// A devnet directory whose nodes are stopped when the test ends, however
/// it ends.
struct Devnet {
    dir: PathBuf,
}

impl Devnet {
    fn command(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_hm-node"));
        command.arg("devnet").arg("--dir").arg(&self.dir);
        command
    }

    fn status_file(&self, index: usize) -> serde_json::Value {
        let path = self.dir.join(format!("node{index}")).join("status.json");
        std::fs::read_to_string(&path)
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or(serde_json::Value::Null)
    }

    /// What a light node's status says about its climb, for a failure
    /// message.
    fn light_report(&self, index: usize) -> String {
        let status = self.status_file(index);
        let light = &status["chain"]["light"];
        format!(
            "node{index} (light): phase {} missing_for_next_phase {} error {} trusted_height {} headers_verified {} answers_accepted {} answers_refused {} refused_by_reason {} frozen {}",
            status["trust"]["phase"],
            status["trust"]["missing_for_next_phase"],
            status["error"],
            light["trusted_height"],
            light["headers_verified"],
            light["answers_accepted"],
            light["answers_refused"],
            light["refused_by_reason"],
            light["frozen"],
        )
    }
}

impl Drop for Devnet {
    fn drop(&mut self) {
        let _ = self
            .command()
            .arg("--stop")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Runs the `hm` CLI in-process; whether it succeeded, its output and its
/// error.
fn hm(args: &[&str]) -> (bool, String, String) {
    let mut out = Vec::new();
    let mut argv = vec!["hm"];
    argv.extend_from_slice(args);
    let result = hm_cli::run(argv, &mut out);
    let error = result.as_ref().err().map(ToString::to_string);
    (
        result.is_ok(),
        String::from_utf8(out).expect("hm prints UTF-8"),
        error.unwrap_or_default(),
    )
}

/// Polls each light node's API `Status` until all report phase 3 and a
/// trusted height above 0; panics after [`API_TIMEOUT`] with the last
/// answers and the light nodes' status files.
fn wait_for_light_phase3(devnet: &Devnet, addrs: &[SocketAddrV6]) -> Vec<NodeSummary> {
    let start = Instant::now();
    let polled = hm_host::client::with_api_endpoint(|endpoint| async move {
        let mut last = Vec::new();
        loop {
            last.clear();
            let mut summaries = Vec::new();
            for addr in addrs {
                let answer = async {
                    let client = endpoint.connect(*addr).await.ok()?;
                    let status = client.call(&ApiRequest::Status).await.ok();
                    client.close();
                    match status? {
                        ApiResponse::Status(summary) => Some(*summary),
                        _ => None,
                    }
                }
                .await;
                match answer {
                    Some(summary) => {
                        last.push(format!(
                            "{addr}: phase {} height {} missing {:?}",
                            summary.phase, summary.height, summary.missing_for_next_phase
                        ));
                        summaries.push(summary);
                    }
                    None => last.push(format!("{addr}: no answer")),
                }
            }
            if summaries.len() == addrs.len()
                && summaries
                    .iter()
                    .all(|summary| summary.phase == 3 && summary.height > 0)
            {
                return Ok(Ok(summaries));
            }
            if start.elapsed() > API_TIMEOUT {
                return Ok(Err(last.join("\n")));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    })
    .map_err(|error: hm_host::client::ClientError| error.to_string());
    match polled {
        Ok(Ok(summaries)) => summaries,
        Ok(Err(last)) | Err(last) => {
            let reports: Vec<String> = (VALIDATORS..VALIDATORS + LIGHT_NODES)
                .map(|index| devnet.light_report(index))
                .collect();
            panic!(
                "the light nodes' API did not show phase 3 with a trusted height within {API_TIMEOUT:?}:\n{last}\n{}",
                reports.join("\n")
            );
        }
    }
}

#[test]
fn light_nodes_reach_phase3_on_proven_answers() {
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let devnet = Devnet {
        dir: dir.path().join("devnet"),
    };
    let base = free_base_port();
    let output = devnet
        .command()
        .args(["--nodes", &VALIDATORS.to_string()])
        .args(["--light", &LIGHT_NODES.to_string()])
        .args(["--base-port", &base.to_string()])
        .args(["--timeout-s", &DEVNET_TIMEOUT_S.to_string()])
        .arg("--detach")
        .output()
        .expect("run hm-node devnet");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        let reports: Vec<String> = (VALIDATORS..VALIDATORS + LIGHT_NODES)
            .map(|index| devnet.light_report(index))
            .collect();
        panic!(
            "hm-node devnet --light {LIGHT_NODES} did not bring every node to phase 3 ({}):\n{}\n{stdout}\n{stderr}",
            output.status,
            reports.join("\n")
        );
    }
    eprintln!(
        "devnet: every node in phase 3 after {:?}\n{stdout}",
        started.elapsed()
    );
    // The summary names the roles.
    let light_rows = stdout
        .lines()
        .filter(|line| line.split_whitespace().nth(1) == Some("light"))
        .count();
    assert_eq!(light_rows, LIGHT_NODES, "{stdout}");

    let light: Vec<SocketAddrV6> = (VALIDATORS..VALIDATORS + LIGHT_NODES)
        .map(|index| local(base + index as u16))
        .collect();
    let summaries = wait_for_light_phase3(&devnet, &light);
    for summary in &summaries {
        assert!(!summary.validator, "{summary:?}");
        assert_eq!(summary.phase, 3, "{summary:?}");
        assert!(summary.height > 0, "{summary:?}");
        assert!(summary.head.is_some(), "{summary:?}");
        assert!(summary.certificate_chain_issued, "{summary:?}");
        assert_eq!(summary.missing_for_next_phase, None, "{summary:?}");
    }

    // `hm status` against the light nodes: phase 3, a verified height.
    let addrs: Vec<String> = light.iter().map(ToString::to_string).collect();
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
    assert_eq!(rows.len(), LIGHT_NODES, "{table}");
    for (row, addr) in rows.iter().zip(&addrs) {
        // ADDRESS NODE ROLE PHASE HEIGHT CERTIFICATE (chain) NAME MISSING
        assert_eq!(row[0], addr, "{table}");
        assert_eq!(row[2], "light", "{table}");
        assert_eq!(row[3], "3", "{table}");
        let height: u64 = row[4].parse().expect("a height");
        assert!(height > 0, "{table}");
        assert_eq!(row[6], "(chain)", "{table}");
    }

    // `hm chain head`: the latest header the light node verified.
    let (ok, out, error) = hm(&["chain", "head", "--to", &addrs[0], "--json"]);
    assert!(ok, "hm chain head: {error}");
    let head: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert!(
        head["height"].as_u64().is_some_and(|height| height > 0),
        "{out}"
    );
    // State needs a full node.
    let (ok, out, error) = hm(&["kv", "get", "--key", "any", "--to", &addrs[0]]);
    assert!(
        !ok && error.contains("light node") && error.contains("full node"),
        "hm kv get on a light node: {out}{error}"
    );

    // What the light nodes verified, from their status files.
    for index in VALIDATORS..VALIDATORS + LIGHT_NODES {
        let status = devnet.status_file(index);
        let light = &status["chain"]["light"];
        eprintln!("{}", devnet.light_report(index));
        assert!(
            light["answers_accepted"].as_u64().is_some_and(|n| n > 0),
            "{}",
            devnet.light_report(index)
        );
        assert!(
            light["headers_verified"].as_u64().is_some_and(|n| n > 0),
            "{}",
            devnet.light_report(index)
        );
        assert_eq!(light["frozen"], false, "{}", devnet.light_report(index));
        assert_eq!(status["chain"]["validator"], false);
        // Its name, claimed with proofs, is in the validators' state.
        let name = format!("node{index}.mesh");
        let validator = local(base).to_string();
        let (ok, out, error) = hm(&["dns", "resolve", &name, "--to", &validator]);
        assert!(ok, "hm dns resolve {name}: {error}");
        assert!(out.starts_with(&format!("{name} AAAA ::1\n")), "{out}");
    }
    // Asked of a light node, a name and its own certificate come proven,
    // and say against which header.
    let other = format!("node{}.mesh", VALIDATORS + 1);
    let (ok, out, error) = hm(&["dns", "resolve", &other, "--to", &addrs[0]]);
    assert!(ok, "hm dns resolve {other} on a light node: {error}");
    assert!(out.starts_with(&format!("{other} AAAA ::1\n")), "{out}");
    assert!(out.contains("proven by the light node"), "{out}");
    let (ok, out, error) = hm(&["cert", "show", "--to", &addrs[0]]);
    assert!(ok, "hm cert show on a light node: {error}");
    assert!(
        out.contains("issuer the chain") && out.contains("proven by the light node"),
        "{out}"
    );
    drop(devnet);
    eprintln!("done after {:?}", started.elapsed());
}

/// Writes a one-validator genesis for `data_dir`'s identity and a config
/// running that validator as a light node; returns the config's path.
fn light_validator_config(dir: &Path) -> PathBuf {
    let data_dir = dir.join("node0");
    let data_dir_text = data_dir.to_str().expect("a UTF-8 path");
    let out = common::hm_node(&["init", "--data-dir", data_dir_text]);
    let id = common::field(&out, "node_id").to_string();
    let key = format!("{}:1", common::field(&out, "public_key"));
    let genesis = dir.join("genesis.bin");
    common::hm_node(&[
        "genesis",
        "--out",
        genesis.to_str().expect("a UTF-8 path"),
        "--chain-name",
        "light-validator-test",
        "--params",
        "simulation",
        "--validator",
        &key,
    ]);
    let config = dir.join("node0.toml");
    std::fs::write(
        &config,
        format!(
            r#"data_dir = "{data_dir_text}"
listen = "[::1]:0"

[chain]
genesis = "genesis.bin"
role = "light"
validators = [{{ id = "{id}", addr = "[::1]:7000" }}]

[chain.trust]
zone = "mesh"
"#
        ),
    )
    .expect("write the config");
    config
}

#[test]
fn a_genesis_validator_is_refused_as_a_light_node() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let config = light_validator_config(dir.path());
    let mut child = Command::new(env!("CARGO_BIN_EXE_hm-node"))
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start hm-node");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("poll hm-node") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("hm-node ran a genesis validator as a light node for 30 s instead of refusing");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(
        &mut child.stderr.take().expect("stderr is piped"),
        &mut stderr,
    )
    .expect("read stderr");
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("a validator must replicate") && stderr.contains("role = \"replica\""),
        "{stderr}"
    );
}
