//! Driving real `hm-node` processes from a test: a chain cluster on [::1]
//! (keys, genesis, configs), starting and SIGKILLing nodes, reading their
//! status files, and the checks every cluster test makes.
#![allow(
    clippy::disallowed_methods,
    clippy::disallowed_types,
    clippy::unwrap_used,
    dead_code // each test binary uses its own subset
)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const POLL_INTERVAL: Duration = Duration::from_millis(200);

pub struct Node {
    /// API address, e.g. "[::1]:31234".
    pub addr: String,
    pub config: PathBuf,
    pub status: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
}

impl Node {
    /// A node not started yet; its log is appended to across restarts.
    pub fn new(addr: String, config: PathBuf, status: PathBuf, log: PathBuf) -> Node {
        Node {
            addr,
            config,
            status,
            log,
            child: None,
        }
    }

    pub fn start(&mut self) {
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_hm-node"))
            .arg("--config")
            .arg(&self.config)
            .env("HM_LOG", "info,hickory_server=warn,hickory_net=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start hm-node");
        self.child = Some(child);
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// SIGKILL (no chance to flush anything), then forget the status file
    /// so a reader cannot mistake the dead process's last words for news.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap(); // SIGKILL on unix
            child.wait().unwrap();
        }
        let _ = std::fs::remove_file(&self.status);
    }

    pub fn status(&self) -> Option<serde_json::Value> {
        let text = std::fs::read_to_string(&self.status).ok()?;
        serde_json::from_str(&text).ok()
    }

    pub fn node_id(&self) -> Option<serde_json::Value> {
        self.status().map(|status| status["node_id"].clone())
    }

    pub fn height(&self) -> Option<u64> {
        self.status()?["chain"]["height"].as_u64()
    }

    /// The committed block hashes, by height - 1, as the status file says.
    pub fn committed(&self) -> Vec<String> {
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

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Submits `KEY=VALUE` and `random` more puts through the node's API.
    pub fn submit(&self, put: &str, random: usize) {
        let random = random.to_string();
        let out = hm_node(&[
            "submit", "--to", &self.addr, "--put", put, "--random", &random,
        ]);
        assert!(
            out.lines().all(|line| line.starts_with("submitted")),
            "{out}"
        );
    }

    /// A key of the node's committed state, through its API.
    pub fn get(&self, key: &str) -> Option<String> {
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

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn hm_node(args: &[&str]) -> String {
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

/// The value of a `name value` line of a command's output.
pub fn field<'a>(output: &'a str, name: &str) -> &'a str {
    output
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("`{name}` missing from {output:?}"))
}

/// One HTTP/1.1 GET to `addr` (e.g. "[::1]:8080"), with `Authorization:
/// Bearer <token>` when given; returns the status code and the body.
pub fn http_get(addr: &str, path: &str, token: Option<&str>) -> Option<(u16, String)> {
    http_request(addr, "GET", path, token, None)
}

/// POSTs `json` (Content-Type: application/json).
pub fn http_post(addr: &str, path: &str, token: &str, json: &str) -> Option<(u16, String)> {
    http_request(addr, "POST", path, Some(token), Some(json))
}

fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    json: Option<&str>,
) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let auth = token.map_or(String::new(), |token| {
        format!("Authorization: Bearer {token}\r\n")
    });
    let body = json.map_or(String::new(), |json| {
        format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{json}",
            json.len()
        )
    });
    let end = if json.is_some() { "" } else { "\r\n" };
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n{body}{end}"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let code = head.split(' ').nth(1)?.parse().ok()?;
    Some((code, body.to_string()))
}

/// Polls `done` until it holds; after `timeout` panics with `what`, every
/// node's height and the log tail of each node that is not up.
pub fn wait_until(
    nodes: &[Node],
    what: &str,
    timeout: Duration,
    mut done: impl FnMut(&[Node]) -> bool,
) {
    let start = Instant::now();
    while !done(nodes) {
        if start.elapsed() > timeout {
            let heights: Vec<Option<u64>> = nodes.iter().map(Node::height).collect();
            let logs: Vec<String> = nodes
                .iter()
                .enumerate()
                .filter(|(_, node)| node.height().is_none())
                .map(|(index, node)| format!("node {index}:\n{}", node.log_tail()))
                .collect();
            panic!(
                "{what}: not reached within {timeout:?}; heights {heights:?}\n{}",
                logs.join("\n")
            );
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

pub fn height_of(nodes: &[Node], index: usize) -> u64 {
    nodes[index].height().unwrap_or(0)
}

/// Every pair of nodes agrees on every height both have committed.
pub fn assert_agreement(nodes: &[Node]) {
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

/// Identities for `count` validators of stake 10 each under `dir/node<i>`,
/// and `dir/genesis.bin` naming them for chain `chain_name`; returns their
/// node ids.
pub fn init_validators(dir: &Path, count: usize, chain_name: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut keys = Vec::new();
    for index in 0..count {
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
        chain_name,
        "--params",
        "simulation",
    ];
    for key in &keys {
        args.push("--validator");
        args.push(key);
    }
    hm_node(&args);
    ids
}

/// `count` validators of equal stake on [::1] ([`init_validators`]) and
/// one config each, with `chain_extra` appended to every node's `[chain]`
/// section. Nothing is started.
pub fn setup_validators(
    dir: &Path,
    count: usize,
    chain_name: &str,
    chain_extra: &str,
) -> Vec<Node> {
    let base = 30_000 + (std::process::id() % 20_000) as u16;
    let ids = init_validators(dir, count, chain_name);
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
    (0..count)
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
                    "data_dir = \"{}\"\nlisten = \"[::1]:{}\"\nseeds = [{seeds}]\n\n[chain]\ngenesis = \"genesis.bin\"\nvalidators = [{validators}]\n{chain_extra}",
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
