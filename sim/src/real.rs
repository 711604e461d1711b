//! `hm-sim run --real`: a scenario's faults against real `hm-node`
//! processes on this machine, judged by the simulator's own checkers.
//!
//! Each node runs in its own network namespace, joined to the others by a
//! veth pair on one bridge, with an address from a private ULA prefix
//! (`fd68:6d00:<tag>::/64`); nothing is routed anywhere else. Faults map to
//! the kernel:
//!
//! * a partition is a policy-routing rule per cut link in the receiving
//!   node's namespace (`ip -6 rule add from <sender> blackhole`, ahead of
//!   the local table), so datagrams vanish silently as on a cut cable —
//!   the sender sees no error;
//! * a crash is SIGKILL of the node's process, a restart starts it again on
//!   the same data dir;
//! * loss and latency faults need `tc netem`, which this machine's kernel
//!   lacks; a scenario using them is refused with that reason (so are
//!   clogs, clock, disk faults and Byzantine actors, which only the
//!   simulator can inject).
//!
//! Time is real: a scenario's seconds are wall seconds. Every
//! [`CHECK_INTERVAL_MS`] the runner reads each live node's `/v1/status`
//! over its HTTP API (bearer token from the data dir), loads it into a
//! [`StatusHandle`] and feeds the same [`ChainChecker`] and [`TrustChecker`]
//! the simulator uses: chain agreement and liveness, bootstrap phase 3,
//! nothing committed by a side without quorum. Chain validity (re-auditing
//! every block) needs the nodes' databases and is left to the nodes, which
//! audit every block they commit.
//!
//! Needs root and `ip` (iproute2); without them the run is skipped with the
//! reason. Namespaces, bridge and processes are removed on every exit path
//! of the runner (a `Drop` guard); names carry the runner's pid, and stale
//! ones from killed runners are removed at the next start.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // drives real processes and real time

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{Ipv6Addr, SocketAddrV6, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hm_faults::Fault;
use hm_node::{NodeStatus, StatusHandle};
use serde::Serialize;

use crate::chain::{ChainChecker, ChainView};
use crate::html::Timeline;
use crate::net::Partition;
use crate::outcome::PropertyResult;
use crate::runner::CHECK_INTERVAL_MS;
use crate::scenario::Scenario;
use crate::timeline::{Action, seconds_to_ms, timeline};
use crate::trust::{TrustChecker, TrustView};

/// Most nodes a real run starts (each is a process with its own RocksDB).
pub const REAL_NODES_MAX: u32 = 16;
/// Ports inside every namespace.
const NODE_PORT: u16 = 7000;
const API_PORT: u16 = 8080;
/// Priority of the partition rules: ahead of the local table, which the
/// runner moves from 0 to [`LOCAL_TABLE_PREF`].
const PARTITION_RULE_PREF: u32 = 10;
const LOCAL_TABLE_PREF: u32 = 100;
/// Largest status answer read from a node.
const STATUS_BYTES_MAX: u64 = 16 << 20;
const STATUS_TIMEOUT: Duration = Duration::from_millis(1_500);
/// How long nodes get to stop on SIGTERM at the end before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Log lines shown of a node that died on its own.
const LOG_TAIL_LINES: usize = 15;

/// How a real run ended.
pub enum RealOutcome {
    /// The run could not happen here; the reason says why.
    Skipped(String),
    Ran(Box<RealReport>),
}

/// What a real run measured; serialised as its JSON report.
#[derive(Debug, Serialize)]
pub struct RealReport {
    pub scenario: String,
    pub scenario_path: String,
    pub seed: u64,
    pub passed: bool,
    pub properties: Vec<PropertyResult>,
    pub nodes: u32,
    pub wall_s: f64,
    pub figures: Figures,
    /// Data dirs, configs and node logs (kept).
    pub work_dir: String,
}

/// The figures the sim-vs-real table compares.
#[derive(Debug, Default, Serialize)]
pub struct Figures {
    /// When every live node was first in phase 3 (s after the first boot).
    pub phase3_s: Option<f64>,
    /// Validators' own proposals: mean time from deciding to propose to commit.
    pub commit_latency_ms: Option<f64>,
    /// The same by histogram bucket (`hm_node::COMMIT_LATENCY_BUCKETS_MS`),
    /// summed over nodes; the median's bucket bound.
    pub commit_latency_buckets: Vec<u64>,
    pub commit_latency_median_ms: Option<u64>,
    /// Mean time between commits seen by a node.
    pub commit_interval_ms: Option<f64>,
    /// From the end of the last fault until every live node committed above
    /// the height held then.
    pub resumed_after_faults_s: Option<f64>,
    /// Messages sent, summed over nodes (membership + chain), as last read
    /// (a restarted node's counters start again from zero).
    pub membership_messages_sent: u64,
    pub chain_messages_sent: u64,
    pub height_max: u64,
}

/// What a scenario uses that real processes here cannot do.
pub fn unsupported(scenario: &Scenario) -> Vec<String> {
    let mut reasons = Vec::new();
    if scenario.nodes.count > REAL_NODES_MAX {
        reasons.push(format!(
            "{} nodes; a real run starts at most {REAL_NODES_MAX} processes on one machine",
            scenario.nodes.count
        ));
    }
    match &scenario.chain {
        None => reasons.push(
            "no [chain]: hm-node's membership-only mode has no status API to check views against"
                .into(),
        ),
        Some(chain) => {
            if chain.byzantine_validators > 0 {
                reasons.push("Byzantine validators (simulator-only behaviours)".into());
            }
            if chain.validators > REAL_NODES_MAX {
                reasons.push(format!("{} validators", chain.validators));
            }
        }
    }
    if let Some(trust) = &scenario.trust {
        if trust.byzantine_authorities > 0 || trust.forged_presenters > 0 {
            reasons.push("Byzantine authorities or forged presenters (simulator-only)".into());
        }
        if !trust.register_names {
            reasons.push("trust.register_names = false (hm-node always registers its name)".into());
        }
    }
    if scenario.byzantine.garbage_senders > 0 || scenario.byzantine.identity_forgers > 0 {
        reasons.push("garbage senders or identity forgers (simulator-only)".into());
    }
    if scenario.light_count() > 0 {
        reasons.push("light nodes (the real runner configures replicas only)".into());
    }
    if scenario.membership != Default::default() {
        reasons.push("[membership] tuning (hm-node's config does not expose it)".into());
    }
    let network = &scenario.network;
    if network.loss > 0.0 || network.duplicate > 0.0 || network.reorder > 0.0 {
        reasons.push(
            "network loss/duplicate/reorder need tc netem, which this kernel does not have".into(),
        );
    }
    for fault in &scenario.faults {
        let what = match fault {
            Fault::Partition { .. } | Fault::Crash { .. } => continue,
            Fault::Loss { .. } | Fault::Latency { .. } => {
                "loss and latency faults need tc netem, which this kernel does not have"
            }
            Fault::Clog { .. } | Fault::Swizzle { .. } => "clogs hold datagrams (simulator-only)",
            Fault::Clock { .. } => "clock faults (simulator-only)",
            Fault::DiskErrors { .. } => "disk error injection (simulator-only)",
        };
        if !reasons.iter().any(|reason| reason == what) {
            reasons.push(what.into());
        }
    }
    reasons
}

/// Why this machine cannot run namespaces, if it cannot.
fn environment_problem() -> Option<String> {
    #[allow(unsafe_code)]
    // SAFETY: geteuid has no arguments and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        return Some(
            "network namespaces need root (run as root, e.g. sudo -E hm-sim run --real …)".into(),
        );
    }
    let probe = format!("hmr{}probe", std::process::id());
    match ip(&["netns", "add", &probe]) {
        Ok(()) => {
            let _ = ip(&["netns", "del", &probe]);
            None
        }
        Err(error) => Some(format!("cannot create a network namespace: {error}")),
    }
}

/// Runs `ip ARGS`; the error carries its stderr.
fn ip(args: &[&str]) -> Result<(), String> {
    let output = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|error| format!("cannot run `ip` (iproute2): {error}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// The namespaces, bridge and veths of one run; removed on drop.
struct RealNet {
    /// The runner's pid: in every name, so runs never collide.
    pid: u32,
    nodes: usize,
    /// Partition rules in place: (receiver, sender).
    rules: Vec<(usize, usize)>,
}

impl RealNet {
    fn namespace(&self, index: usize) -> String {
        format!("hmr{}-{index}", self.pid)
    }

    fn bridge(&self) -> String {
        format!("hmr{}br", self.pid)
    }

    fn veth(&self, index: usize) -> String {
        format!("hmr{}v{index}", self.pid)
    }

    fn addr(&self, index: usize) -> Ipv6Addr {
        Ipv6Addr::new(
            0xfd68,
            0x6d00,
            self.pid as u16,
            0,
            0,
            0,
            0,
            index as u16 + 1,
        )
    }

    /// Removes namespaces and bridges left by runners that no longer run.
    fn remove_stale() {
        let Ok(output) = Command::new("ip").args(["netns", "list"]).output() else {
            return;
        };
        let listing = String::from_utf8_lossy(&output.stdout).into_owned();
        for name in listing
            .lines()
            .filter_map(|line| line.split_whitespace().next())
        {
            let Some(rest) = name.strip_prefix("hmr") else {
                continue;
            };
            let Some(pid) = rest
                .split('-')
                .next()
                .and_then(|pid| pid.parse::<u32>().ok())
            else {
                continue;
            };
            if !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = ip(&["netns", "del", name]);
                let _ = ip(&["link", "del", &format!("hmr{pid}br")]);
            }
        }
    }

    fn create(nodes: usize) -> Result<RealNet, String> {
        Self::remove_stale();
        let mut net = RealNet {
            pid: std::process::id(),
            nodes: 0,
            rules: Vec::new(),
        };
        ip(&["link", "add", &net.bridge(), "type", "bridge"])?;
        ip(&["link", "set", &net.bridge(), "up"])?;
        let bridge_addr = format!(
            "{}/64",
            Ipv6Addr::new(0xfd68, 0x6d00, net.pid as u16, 0, 0, 0, 0, 0xfffe)
        );
        ip(&["addr", "add", &bridge_addr, "dev", &net.bridge(), "nodad"])?;
        for index in 0..nodes {
            let namespace = net.namespace(index);
            ip(&["netns", "add", &namespace])?;
            net.nodes = index + 1;
            let veth = net.veth(index);
            ip(&[
                "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &namespace,
            ])?;
            ip(&["link", "set", &veth, "master", &net.bridge(), "up"])?;
            ip(&["-n", &namespace, "link", "set", "lo", "up"])?;
            ip(&["-n", &namespace, "link", "set", "eth0", "up"])?;
            let addr = format!("{}/64", net.addr(index));
            ip(&[
                "-n", &namespace, "addr", "add", &addr, "dev", "eth0", "nodad",
            ])?;
            // Partition rules must come before the local table's lookup.
            let local = LOCAL_TABLE_PREF.to_string();
            ip(&[
                "-n", &namespace, "-6", "rule", "add", "pref", &local, "table", "local",
            ])?;
            ip(&["-n", &namespace, "-6", "rule", "del", "pref", "0"])?;
        }
        Ok(net)
    }

    /// Adds or deletes the rule that drops, in `receiver`'s namespace,
    /// everything from `sender`.
    fn blackhole(&self, add_or_del: &str, receiver: usize, sender: usize) -> Result<(), String> {
        let pref = PARTITION_RULE_PREF.to_string();
        let from = self.addr(sender).to_string();
        let namespace = self.namespace(receiver);
        ip(&[
            "-n",
            &namespace,
            "-6",
            "rule",
            add_or_del,
            "pref",
            &pref,
            "from",
            &from,
            "blackhole",
        ])
    }

    fn set_partition(&mut self, partition: Option<&Partition>) -> Result<(), String> {
        for (receiver, sender) in std::mem::take(&mut self.rules) {
            self.blackhole("del", receiver, sender)?;
        }
        let Some(partition) = partition else {
            return Ok(());
        };
        let group = |index: usize| partition.group_of.get(index).copied().unwrap_or(0);
        for receiver in 0..self.nodes {
            for sender in 0..self.nodes {
                let cut = match partition.one_way {
                    None => group(sender) != group(receiver),
                    Some((from, to)) => group(sender) == from && group(receiver) == to,
                };
                if sender == receiver || !cut {
                    continue;
                }
                self.blackhole("add", receiver, sender)?;
                self.rules.push((receiver, sender));
            }
        }
        Ok(())
    }
}

impl Drop for RealNet {
    fn drop(&mut self) {
        for index in 0..self.nodes {
            let _ = ip(&["netns", "del", &self.namespace(index)]);
        }
        let _ = ip(&["link", "del", &self.bridge()]);
    }
}

/// One real node: its files, its process, and the status last read.
struct RealNode {
    index: usize,
    namespace: String,
    addr: Ipv6Addr,
    config: PathBuf,
    log: PathBuf,
    token: String,
    child: Option<Child>,
    /// Should be running (booted and not crashed by the schedule).
    alive: bool,
    /// Exited without being told to; the log tail says why.
    died: Option<String>,
    /// Whether `/v1/status` ever answered, and why it last did not.
    answered: bool,
    last_poll_error: Option<String>,
    status: StatusHandle,
    /// Processes started for this node (its lives).
    starts: u32,
}

#[allow(unsafe_code)]
fn signal(pid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    unsafe {
        libc::kill(pid as libc::pid_t, signal);
    }
}

impl RealNode {
    fn api(&self) -> SocketAddrV6 {
        SocketAddrV6::new(self.addr, API_PORT, 0, 0)
    }

    fn start(&mut self, hm_node: &Path) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|error| format!("cannot open {}: {error}", self.log.display()))?;
        let child = Command::new("ip")
            .args(["netns", "exec", &self.namespace])
            .arg(hm_node)
            .arg("run")
            .arg("--config")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|error| format!("cannot start n{}: {error}", self.index))?;
        self.child = Some(child);
        self.alive = true;
        self.starts += 1;
        Ok(())
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.alive = false;
        self.status.mark_down();
    }

    /// Notes a process that exited although the schedule had it running.
    fn check_exit(&mut self) {
        let exited = match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(Some(exit))) => Some(exit),
            _ => None,
        };
        if let Some(exit) = exited {
            self.child = None;
            self.alive = false;
            self.status.mark_down();
            if self.died.is_none() {
                self.died = Some(format!(
                    "n{} exited on its own ({exit}); {} ends:\n{}",
                    self.index,
                    self.log.display(),
                    log_tail(&self.log)
                ));
            }
        }
    }

    /// Reads `/v1/status` into the status handle; false when the node did
    /// not answer (booting, restarting, or unreachable).
    fn poll(&mut self) -> bool {
        match get_status(self.api(), &self.token) {
            Ok(mut status) => {
                // A process counts only its own life (its chain service
                // starts once); the checkers tell a node's lives apart by
                // `boots`, so number them by the processes started.
                if status.chain.boots > 0 {
                    status.chain.boots = self.starts;
                }
                self.status.update(|held| *held = status);
                self.answered = true;
                true
            }
            Err(error) => {
                self.last_poll_error = Some(error);
                false
            }
        }
    }
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}

/// `GET /v1/status` over HTTP/1.1 with the bearer token, bounded in time
/// and size.
fn get_status(api: SocketAddrV6, token: &str) -> Result<NodeStatus, String> {
    let mut stream = TcpStream::connect_timeout(&api.into(), STATUS_TIMEOUT)
        .map_err(|error| format!("connect {api}: {error}"))?;
    stream
        .set_read_timeout(Some(STATUS_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(STATUS_TIMEOUT)))
        .map_err(|error| format!("{api}: {error}"))?;
    write!(
        stream,
        "GET /v1/status HTTP/1.1\r\nHost: {api}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|error| format!("{api}: {error}"))?;
    let mut answer = Vec::new();
    stream
        .take(STATUS_BYTES_MAX)
        .read_to_end(&mut answer)
        .map_err(|error| format!("{api}: {error}"))?;
    let split = answer
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .ok_or_else(|| format!("{api}: no HTTP header end"))?;
    let head = String::from_utf8_lossy(&answer[..split]);
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!(
            "{api}: {}",
            head.lines().next().unwrap_or("no status line")
        ));
    }
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Err(format!("{api}: chunked answer (expected a plain body)"));
    }
    serde_json::from_slice(&answer[split + 4..])
        .map_err(|error| format!("{api}: the status is not a NodeStatus: {error}"))
}

/// Runs `hm-node ARGS` and returns its stdout.
fn hm_node_output(hm_node: &Path, args: &[&str]) -> Result<String, String> {
    let output = Command::new(hm_node)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|error| format!("cannot run {}: {error}", hm_node.display()))?;
    if !output.status.success() {
        return Err(format!(
            "`hm-node {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn field<'a>(output: &'a str, name: &str) -> Result<&'a str, String> {
    output
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .map(str::trim)
        .ok_or_else(|| format!("`hm-node init` printed no `{name}`"))
}

/// Identities, genesis and configs for every node of `scenario`.
fn prepare(
    scenario: &Scenario,
    net: &RealNet,
    work_dir: &Path,
    hm_node: &Path,
) -> Result<(Vec<RealNode>, Vec<hm_wire::Hash>), String> {
    let chain = scenario
        .chain
        .as_ref()
        .ok_or("the scenario has no [chain]")?;
    std::fs::create_dir_all(work_dir)
        .map_err(|error| format!("cannot create {}: {error}", work_dir.display()))?;
    let count = scenario.nodes.count as usize;
    let mut ids = Vec::with_capacity(count);
    let mut keys = Vec::with_capacity(count);
    for index in 0..count {
        let data_dir = work_dir.join(format!("n{index}"));
        let data_dir_text = data_dir.display().to_string();
        let output = hm_node_output(hm_node, &["init", "--data-dir", &data_dir_text])?;
        ids.push(field(&output, "node_id")?.to_string());
        keys.push(field(&output, "public_key")?.to_string());
    }
    let validators = chain.validators as usize;
    let genesis = work_dir.join("genesis.bin");
    let genesis_text = genesis.display().to_string();
    let mut args = vec![
        "genesis".to_string(),
        "--out".into(),
        genesis_text,
        "--chain-name".into(),
        scenario.name.clone(),
        "--params".into(),
        "simulation".into(),
    ];
    for (index, key) in keys.iter().take(validators).enumerate() {
        let stake = chain.stakes.get(index).copied().unwrap_or(10);
        args.push("--validator".into());
        args.push(format!("{key}:{stake}"));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    hm_node_output(hm_node, &args)?;

    let validator_list = (0..validators)
        .map(|index| {
            format!(
                "{{ id = \"{}\", addr = \"[{}]:{NODE_PORT}\" }}",
                ids[index],
                net.addr(index)
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    let seeds = (0..scenario.nodes.seeds as usize)
        .map(|index| format!("\"[{}]:{NODE_PORT}\"", net.addr(index)))
        .collect::<Vec<_>>()
        .join(", ");
    let mut nodes = Vec::with_capacity(count);
    for index in 0..count {
        let data_dir = work_dir.join(format!("n{index}"));
        let config = work_dir.join(format!("n{index}.toml"));
        let addr = net.addr(index);
        let workload = if (index as u32) < chain.workload_nodes {
            chain.workload_interval_ms
        } else {
            0
        };
        let mut text = format!(
            "data_dir = \"{}\"\nlisten = \"[{addr}]:{NODE_PORT}\"\nseeds = [{seeds}]\napi_listen = \"[{addr}]:{API_PORT}\"\n\n[chain]\ngenesis = \"genesis.bin\"\nvalidators = [{validator_list}]\nworkload_interval_ms = {workload}\nblock_interval_ms = {}\npropose_timeout_ms = {}\n",
            data_dir.display(),
            chain.block_interval_ms,
            chain.propose_timeout_ms,
        );
        if let Some(trust) = &scenario.trust {
            let _ = write!(
                text,
                "\n[chain.trust]\nzone = \"{zone}\"\nname = \"n{index}.{zone}\"\ncertificate_validity_s = {}\nrenew_at = {}\nchain_live_window_s = {}\n",
                trust.certificate_validity_s.round().max(1.0) as u64,
                trust.renew_at,
                trust.chain_live_window_s.round().max(1.0) as u64,
                zone = trust.zone,
            );
        }
        std::fs::write(&config, text)
            .map_err(|error| format!("cannot write {}: {error}", config.display()))?;
        let token_path = data_dir.join("api-token");
        let token = std::fs::read_to_string(&token_path)
            .map_err(|error| format!("cannot read {}: {error}", token_path.display()))?
            .trim()
            .to_string();
        nodes.push(RealNode {
            index,
            namespace: net.namespace(index),
            addr,
            config,
            log: work_dir.join(format!("n{index}.log")),
            token,
            child: None,
            alive: false,
            died: None,
            answered: false,
            last_poll_error: None,
            status: StatusHandle::default(),
            starts: 0,
        });
    }
    let validator_ids = ids
        .iter()
        .take(validators)
        .map(|id| hm_wire::Hash::from_hex(id).map_err(|error| format!("node id {id}: {error}")))
        .collect::<Result<Vec<_>, String>>()?;
    Ok((nodes, validator_ids))
}

/// Every live node's committed height, read now (the last one held for a
/// node that does not answer).
fn fresh_heights(nodes: &mut [RealNode]) -> Vec<u64> {
    nodes
        .iter_mut()
        .map(|node| {
            if node.alive {
                node.poll();
            }
            node.status.with(|status| status.chain.height)
        })
        .collect()
}

/// Stops every node: SIGTERM (the graceful path), SIGKILL after the grace.
fn stop_all(nodes: &mut [RealNode]) {
    for node in nodes.iter() {
        if let Some(child) = &node.child {
            signal(child.id(), libc::SIGTERM);
        }
    }
    let deadline = Instant::now() + STOP_GRACE;
    for node in nodes.iter_mut() {
        if let Some(mut child) = node.child.take() {
            loop {
                if !matches!(child.try_wait(), Ok(None)) {
                    break;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// Kills every node process still running when the runner unwinds.
struct Processes<'a>(&'a mut Vec<RealNode>);

impl Drop for Processes<'_> {
    fn drop(&mut self) {
        stop_all(self.0);
    }
}

/// Runs `scenario` on real processes (see the module docs).
pub fn run_real(
    scenario: &Scenario,
    scenario_path: &str,
    seed: u64,
    hm_node: &Path,
    work_dir: &Path,
    progress: bool,
) -> Result<RealOutcome, String> {
    let reasons = unsupported(scenario);
    if !reasons.is_empty() {
        return Ok(RealOutcome::Skipped(format!(
            "{scenario_path} cannot run on real processes: {}",
            reasons.join("; ")
        )));
    }
    if let Some(problem) = environment_problem() {
        return Ok(RealOutcome::Skipped(problem));
    }
    if !hm_node.is_file() {
        return Err(format!(
            "no hm-node at {}; build it with `cargo build --bin hm-node` or pass --hm-node PATH",
            hm_node.display()
        ));
    }
    let hm_node = hm_node
        .canonicalize()
        .map_err(|error| format!("{}: {error}", hm_node.display()))?;
    // The same seeded choices (which nodes crash) as the simulated run.
    let actions = madsim::runtime::Runtime::with_seed_and_config(seed, madsim::Config::default())
        .block_on(async { timeline(scenario) });
    let count = scenario.nodes.count as usize;
    let mut net = RealNet::create(count)?;
    let (mut nodes, validator_ids) = prepare(scenario, &net, work_dir, &hm_node)?;
    let genesis_bytes = std::fs::read(work_dir.join("genesis.bin"))
        .map_err(|error| format!("cannot read the genesis: {error}"))?;
    let validator_set = hm_kernel::genesis::Genesis::decode(&genesis_bytes)
        .and_then(|genesis| genesis.validator_set())
        .map_err(|error| format!("the genesis hm-node wrote is unusable: {error}"))?;
    let processes = Processes(&mut nodes);
    let nodes = &mut *processes.0;

    let faults_end_ms = seconds_to_ms(scenario.faults_end_s());
    let bound_ms = seconds_to_ms(scenario.properties.chain_resumes_within_s);
    let mut settle_ms = faults_end_ms + bound_ms;
    if scenario.trust.is_some() {
        settle_ms = settle_ms.max(seconds_to_ms(scenario.properties.phase3_within_s));
    }
    let deadline_ms = seconds_to_ms(scenario.duration_s).min(settle_ms);
    let boot_at_ms: Vec<u64> = (0..count)
        .map(|index| seconds_to_ms(scenario.nodes.boot_spread_s * index as f64 / count as f64))
        .collect();
    let honest = vec![true; count];
    // Light nodes are refused above: every node is a replica.
    let light = vec![false; count];
    let (groups, group_of) = crate::trust::groups(scenario, &vec![false; count]);
    let mut chain_checker = ChainChecker::default();
    let mut trust_checker = TrustChecker::new(Timeline {
        interval_ms: CHECK_INTERVAL_MS,
        groups,
        samples: Vec::new(),
        bands: crate::trust::bands(scenario),
        markers: Vec::new(),
    });
    let mut next_action = 0;
    let mut booted = 0;
    let mut errors: Vec<String> = Vec::new();
    let start = Instant::now();
    let mut last_progress_ms = 0;
    loop {
        let now_ms = start.elapsed().as_millis() as u64;
        while booted < count && boot_at_ms[booted] <= now_ms {
            nodes[booted].start(&hm_node)?;
            booted += 1;
        }
        while let Some((at_ms, action)) = actions.get(next_action) {
            if *at_ms > now_ms {
                break;
            }
            next_action += 1;
            match action {
                // Heights are read fresh, from the side of the cut where
                // nothing can be in flight: right after the rules take
                // effect when a partition begins, right before they go
                // when it ends (the last poll may be a second old, and a
                // block commits every few hundred milliseconds).
                Action::SetPartition(Some(partition)) => {
                    net.set_partition(Some(partition))?;
                    let heights = fresh_heights(nodes);
                    trust_checker.partition_began(
                        &partition.group_of,
                        &validator_set,
                        &validator_ids,
                        &heights,
                        &light,
                    );
                }
                Action::SetPartition(None) => {
                    let heights = fresh_heights(nodes);
                    trust_checker.partition_ended(&heights, &honest, &light);
                    net.set_partition(None)?;
                }
                Action::Kill(index) => nodes[*index as usize].kill(),
                Action::Restart(index) => {
                    let node = &mut nodes[*index as usize];
                    if !node.alive && node.died.is_none() {
                        node.start(&hm_node)?;
                    }
                }
                other => errors.push(format!("action {other:?} has no real counterpart")),
            }
        }
        for node in nodes.iter_mut() {
            node.check_exit();
            if node.alive {
                node.poll();
            }
        }
        let quiet = now_ms >= faults_end_ms && next_action >= actions.len();
        chain_checker.observe(
            nodes.iter().map(|node| ChainView {
                index: node.index,
                status: &node.status,
                alive: node.alive,
                honest: true,
                light: false,
            }),
            now_ms,
            quiet,
        );
        trust_checker.observe(
            now_ms,
            nodes.iter().map(|node| TrustView {
                index: node.index,
                status: &node.status,
                alive: node.alive,
                honest: true,
                light: false,
                group: group_of[node.index],
            }),
        );
        let trust_settled = scenario.trust.is_none() || trust_checker.phase3_holds();
        let settled = quiet && chain_checker.settled(scenario) && trust_settled;
        if progress && (now_ms >= last_progress_ms + 5_000 || settled) {
            last_progress_ms = now_ms;
            let phases: Vec<String> = nodes
                .iter()
                .map(|node| {
                    if node.alive {
                        node.status.with(|status| status.trust.phase.to_string())
                    } else {
                        "x".into()
                    }
                })
                .collect();
            eprintln!(
                "[{:>5.1}/{:.0} s real] {booted}/{count} started · heights {}..{} · phases {}",
                now_ms as f64 / 1000.0,
                deadline_ms as f64 / 1000.0,
                chain_checker.min_height(),
                chain_checker.max_height(),
                phases.join(" ")
            );
        }
        if settled || now_ms >= deadline_ms {
            break;
        }
        let next_ms = (now_ms / CHECK_INTERVAL_MS + 1) * CHECK_INTERVAL_MS;
        std::thread::sleep(Duration::from_millis(
            next_ms.saturating_sub(start.elapsed().as_millis() as u64),
        ));
    }
    let wall_s = start.elapsed().as_secs_f64();

    let mut properties: Vec<PropertyResult> = chain_checker
        .properties(
            scenario,
            faults_end_ms,
            &Err("not audited on real processes".into()),
            &[],
        )
        .into_iter()
        .filter(|property| property.name != "chain-validity")
        .collect();
    if scenario.trust.is_some() {
        properties.push(trust_checker.phase3_property(scenario));
    }
    if scenario.properties.minority_commits_nothing {
        properties.push(trust_checker.minority_property());
    }
    let died: Vec<String> = nodes.iter().filter_map(|node| node.died.clone()).collect();
    errors.extend(died);
    // A node whose API never answered leaves every checker blind: say why.
    for node in nodes.iter().filter(|node| !node.answered) {
        errors.push(format!(
            "n{} never answered /v1/status ({}); is --hm-node the same version as hm-sim?",
            node.index,
            node.last_poll_error.as_deref().unwrap_or("never polled")
        ));
    }
    properties.push(PropertyResult {
        name: "processes".into(),
        passed: errors.is_empty(),
        detail: if errors.is_empty() {
            format!("all {count} hm-node processes ran as scheduled (crashes only when the scenario said) and answered /v1/status")
        } else {
            errors.join("\n")
        },
    });
    let mut figures = Figures {
        phase3_s: trust_checker
            .all_phase3_at_ms()
            .map(|at| at as f64 / 1000.0),
        resumed_after_faults_s: chain_checker
            .resumed_at_ms()
            .map(|at| at.saturating_sub(faults_end_ms) as f64 / 1000.0),
        height_max: chain_checker.max_height(),
        ..Figures::default()
    };
    let (mut own_commits, mut latency_total, mut intervals, mut interval_total) = (0, 0, 0, 0);
    for node in nodes.iter() {
        node.status.with(|status| {
            figures.membership_messages_sent += status.messages_sent;
            figures.chain_messages_sent += status.chain.messages_sent;
            own_commits += status.chain.own_commits;
            latency_total += status.chain.own_commit_latency_ms_total;
            crate::outcome::add_buckets(
                &mut figures.commit_latency_buckets,
                &status.chain.own_commit_latency_buckets,
            );
            intervals += status.chain.commit_intervals;
            interval_total += status.chain.commit_interval_ms_total;
        });
    }
    figures.commit_latency_ms =
        (own_commits > 0).then(|| latency_total as f64 / own_commits as f64);
    figures.commit_interval_ms = (intervals > 0).then(|| interval_total as f64 / intervals as f64);
    figures.commit_latency_median_ms =
        hm_node::latency_quantile_ms(&figures.commit_latency_buckets, 0.5);
    drop(processes);
    drop(net);
    crate::outcome::accept_expected_not_exercised(
        &mut properties,
        &scenario.properties.not_exercised_ok,
    );
    Ok(RealOutcome::Ran(Box::new(RealReport {
        scenario: scenario.name.clone(),
        scenario_path: scenario_path.to_string(),
        seed,
        passed: properties.iter().all(|property| property.passed),
        properties,
        nodes: scenario.nodes.count,
        wall_s,
        figures,
        work_dir: work_dir.display().to_string(),
    })))
}

/// The one-screen summary of a real run.
pub fn real_summary(report: &RealReport) -> String {
    let mut out = String::new();
    crate::report::verdict_lines(
        &mut out,
        "hm-sim --real",
        &report.scenario,
        report.seed,
        report.passed,
        &report.properties,
    );
    let show = |value: Option<f64>, unit: &str| {
        value.map_or("-".to_string(), |value| format!("{value:.1} {unit}"))
    };
    let figures = &report.figures;
    let _ = writeln!(
        out,
        "  {} hm-node processes · {:.1} s wall · phase 3 at {} · commit latency {} mean (median {}) · commit interval {} · resumed {} after the last fault · height {} · messages sent: membership {}, chain {}",
        report.nodes,
        report.wall_s,
        show(figures.phase3_s, "s"),
        show(figures.commit_latency_ms, "ms"),
        crate::report::bucket_bound(figures.commit_latency_median_ms),
        show(figures.commit_interval_ms, "ms"),
        show(figures.resumed_after_faults_s, "s"),
        figures.height_max,
        figures.membership_messages_sent,
        figures.chain_messages_sent,
    );
    let _ = writeln!(out, "  node logs and data: {}", report.work_dir);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_only_the_simulator_can_do_is_refused_with_reasons() {
        let scenario = Scenario::parse(
            "x.toml",
            r#"
            [nodes]
            count = 40
            [network]
            loss = 0.01
            [[faults]]
            kind = "clog"
            at_s = 1.0
            duration_s = 1.0
            fraction = 0.1
            [[faults]]
            kind = "partition"
            at_s = 1.0
            duration_s = 1.0
            fractions = [0.5, 0.5]
            "#,
        )
        .expect("scenario");
        let reasons = unsupported(&scenario).join("\n");
        assert!(reasons.contains("40 nodes"), "{reasons}");
        assert!(reasons.contains("no [chain]"), "{reasons}");
        assert!(reasons.contains("tc netem"), "{reasons}");
        assert!(reasons.contains("clogs"), "{reasons}");
        assert!(!reasons.contains("partition"), "{reasons}");
    }

    #[test]
    fn the_real_partition_scenario_is_runnable() {
        let scenario = Scenario::load(Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../scenarios/partition-7.toml"
        )))
        .expect("scenario");
        assert_eq!(unsupported(&scenario), Vec::<String>::new());
    }
}
