//! `hm-node devnet`: a development cluster on `[::1]` in one command.
//!
//! Creates N validators (identities, API tokens, a `simulation`-parameter
//! genesis, configs with `[chain.trust]`, `api_listen` and `dns_listen`) in
//! one directory, and L light nodes (`--light`: `role = "light"`, the
//! validators as their `full_nodes`, `[chain.trust]` and `api_listen`, no
//! DNS: they hold no zone state), starts each as its own `hm-node run`
//! process, waits until every node is in bootstrap phase 3 and every
//! validator holds every node's name, and prints how to reach each node.
//! In the foreground it then supervises the nodes until Ctrl-C or SIGTERM
//! and stops them (SIGTERM, so each flushes and syncs); with `--detach` it
//! returns and leaves them running until `--stop`.
//!
//! Ports: node `i` listens for STOQ on `BASE+i` (UDP), serves its HTTP API
//! on `BASE+100+i` (TCP) and, a validator, DNS on `BASE+200+i` (UDP and
//! TCP). The light nodes are numbered after the validators.
//!
//! A directory that already holds a devnet is started again as it is (same
//! identities, genesis and data): nodes replay their disks and go on.

use std::fmt::Write as _;
use std::net::{Ipv6Addr, SocketAddrV6};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hm_kernel::genesis::ProofParams;
use hm_wire::VerifyingKey;
use serde::{Deserialize, Serialize};

/// Most validators one devnet runs (each is a full process with its own RocksDB).
pub const NODES_MAX: usize = 16;
/// Most light nodes one devnet runs (each is a process with its own RocksDB).
pub const LIGHT_NODES_MAX: usize = 8;
/// Offsets from `--base-port` of the API and DNS port ranges.
const API_PORT_OFFSET: u16 = 100;
const DNS_PORT_OFFSET: u16 = 200;
/// How often the nodes' status files are read while waiting.
const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// How long a node gets to stop after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// The file in the devnet directory that records its shape.
const MANIFEST_FILE: &str = "devnet.json";
/// Largest manifest or status file read.
const FILE_BYTES_MAX: u64 = 4 << 20;
/// Log lines shown of a node that failed.
const LOG_TAIL_LINES: usize = 20;

/// `println!` that survives a closed stdout (`devnet | head`): a panic
/// there would leave the nodes running with nobody to stop them.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// What `hm-node devnet` was asked to do.
pub struct DevnetArgs {
    pub nodes: usize,
    /// Light nodes, after the validators.
    pub light: usize,
    pub dir: PathBuf,
    pub base_port: u16,
    pub detach: bool,
    pub timeout_s: u64,
    /// Passed on to every node (`human` or `json`).
    pub log_format: &'static str,
}

/// The shape of a devnet, kept in `<dir>/devnet.json` so a second start
/// (and `--stop`) finds the same nodes.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Manifest {
    /// Validators.
    nodes: usize,
    /// Light nodes (none in a devnet made before they existed).
    #[serde(default)]
    light: usize,
    base_port: u16,
}

impl Manifest {
    fn total(&self) -> usize {
        self.nodes + self.light
    }
}

/// One node's files and addresses.
struct NodeFiles {
    index: usize,
    /// A light node (`role = "light"`); a validator otherwise.
    light: bool,
    config: PathBuf,
    data_dir: PathBuf,
    log: PathBuf,
    pid: PathBuf,
    listen: SocketAddrV6,
    api: SocketAddrV6,
    dns: SocketAddrV6,
}

impl NodeFiles {
    fn new(dir: &Path, base_port: u16, index: usize, light: bool) -> NodeFiles {
        let offset = index as u16;
        let local = |port: u16| SocketAddrV6::new(Ipv6Addr::LOCALHOST, port, 0, 0);
        NodeFiles {
            index,
            light,
            config: dir.join(format!("node{index}.toml")),
            data_dir: dir.join(format!("node{index}")),
            log: dir.join(format!("node{index}.log")),
            pid: dir.join(format!("node{index}.pid")),
            listen: local(base_port + offset),
            api: local(base_port + API_PORT_OFFSET + offset),
            dns: local(base_port + DNS_PORT_OFFSET + offset),
        }
    }

    fn name(&self) -> String {
        format!("node{}.mesh", self.index)
    }

    fn role(&self) -> &'static str {
        if self.light { "light" } else { "validator" }
    }

    fn token_file(&self) -> PathBuf {
        self.data_dir.join(hm_host::http::TOKEN_FILE)
    }

    /// The node's last status snapshot, if it wrote one.
    fn status(&self) -> Option<serde_json::Value> {
        let path = self.data_dir.join("status.json");
        let text = read_bounded(&path).ok()?;
        serde_json::from_str(&text).ok()
    }

    fn log_tail(&self) -> String {
        let text = read_bounded(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }
}

fn read_bounded(path: &Path) -> anyhow::Result<String> {
    use std::io::{Read, Seek, SeekFrom};
    let cannot = || format!("cannot read {}", path.display());
    let mut file = std::fs::File::open(path).with_context(cannot)?;
    let len = file.metadata().with_context(cannot)?.len();
    // Logs grow without bound: read only their last FILE_BYTES_MAX.
    file.seek(SeekFrom::Start(len.saturating_sub(FILE_BYTES_MAX)))
        .with_context(cannot)?;
    let mut bytes = Vec::new();
    file.take(FILE_BYTES_MAX)
        .read_to_end(&mut bytes)
        .with_context(cannot)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The validators, then the light nodes.
fn nodes_of(dir: &Path, manifest: &Manifest) -> Vec<NodeFiles> {
    (0..manifest.total())
        .map(|index| NodeFiles::new(dir, manifest.base_port, index, index >= manifest.nodes))
        .collect()
}

fn read_manifest(dir: &Path) -> anyhow::Result<Option<Manifest>> {
    let path = dir.join(MANIFEST_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let manifest: Manifest = serde_json::from_str(&read_bounded(&path)?).with_context(|| {
        format!(
            "{} is not a devnet manifest; remove the directory or pick another --dir",
            path.display()
        )
    })?;
    if manifest.nodes == 0 || manifest.nodes > NODES_MAX {
        bail!(
            "{} names {} nodes; a devnet has 1 to {NODES_MAX}",
            path.display(),
            manifest.nodes
        );
    }
    if manifest.light > LIGHT_NODES_MAX {
        bail!(
            "{} names {} light nodes; a devnet has 0 to {LIGHT_NODES_MAX}",
            path.display(),
            manifest.light
        );
    }
    Ok(Some(manifest))
}

/// The port range `[base, base + 200 + nodes + light)` must fit below 65536.
fn check_args(args: &DevnetArgs) -> anyhow::Result<()> {
    if args.nodes == 0 || args.nodes > NODES_MAX {
        bail!(
            "--nodes {}: a devnet has 1 to {NODES_MAX} nodes",
            args.nodes
        );
    }
    if args.light > LIGHT_NODES_MAX {
        bail!(
            "--light {}: a devnet has 0 to {LIGHT_NODES_MAX} light nodes",
            args.light
        );
    }
    let total = (args.nodes + args.light) as u32;
    let last = u32::from(args.base_port) + u32::from(DNS_PORT_OFFSET) + total;
    if args.base_port < 1024 || last > u32::from(u16::MAX) {
        bail!(
            "--base-port {}: the devnet uses ports BASE..BASE+{} and needs BASE between 1024 and {}",
            args.base_port,
            u32::from(DNS_PORT_OFFSET) + total,
            u32::from(u16::MAX) - u32::from(DNS_PORT_OFFSET) - total
        );
    }
    if args.timeout_s == 0 {
        bail!("--timeout-s 0: give the cluster at least a second");
    }
    Ok(())
}

/// Fails naming the first port another process holds.
fn check_ports_free(nodes: &[NodeFiles], base_port: u16) -> anyhow::Result<()> {
    for node in nodes {
        let checks = [
            ("STOQ (UDP)", node.listen, true, false),
            ("HTTP API (TCP)", node.api, false, true),
            // Light nodes serve no DNS.
            ("DNS (UDP and TCP)", node.dns, !node.light, !node.light),
        ];
        for (what, addr, udp, tcp) in checks {
            let udp_free = !udp || std::net::UdpSocket::bind(addr).is_ok();
            let tcp_free = !tcp || std::net::TcpListener::bind(addr).is_ok();
            if !(udp_free && tcp_free) {
                bail!(
                    "port {} (node{}'s {what}) is taken; stop what uses it or pick other ports with --base-port (now {base_port})",
                    addr.port(),
                    node.index
                );
            }
        }
    }
    Ok(())
}

/// Writes identities, the genesis and the configs for a new devnet.
fn create(dir: &Path, manifest: &Manifest, nodes: &[NodeFiles]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    // Absolute, so `hm-node run --config <dir>/node0.toml` works from anywhere.
    let absolute = dir
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", dir.display()))?;
    let mut members = Vec::with_capacity(nodes.len());
    let mut ids = Vec::with_capacity(nodes.len());
    for node in nodes {
        let identity = crate::create_identity(&node.data_dir)?;
        // Light nodes have identities too (they get certificates and
        // names), but no stake: a validator must replicate.
        if !node.light {
            let key =
                VerifyingKey::from_bytes(&crate::hex_decode("public key", &identity.public_key)?)
                    .context("the identity just created has no valid public key")?;
            members.push((key, 1));
        }
        ids.push(identity.node_id);
    }
    crate::write_genesis(
        &dir.join("genesis.bin"),
        "devnet",
        &members,
        ProofParams::for_simulation(),
    )?;
    let validators = nodes
        .iter()
        .zip(&ids)
        .filter(|(node, _)| !node.light)
        .map(|(node, id)| format!("{{ id = \"{id}\", addr = \"{}\" }}", node.listen))
        .collect::<Vec<_>>()
        .join(",\n    ");
    let full_nodes = nodes
        .iter()
        .filter(|node| !node.light)
        .map(|node| format!("\"{}\"", node.listen))
        .collect::<Vec<_>>()
        .join(", ");
    for node in nodes {
        let seeds = if node.index == 0 {
            String::new()
        } else {
            format!("\"{}\"", nodes[0].listen)
        };
        let data_dir = absolute.join(format!("node{}", node.index));
        let config = if node.light {
            light_config(node, &data_dir, &seeds, &validators, &full_nodes)
        } else {
            validator_config(node, &data_dir, &seeds, &validators)
        };
        std::fs::write(&node.config, config)
            .with_context(|| format!("cannot write {}", node.config.display()))?;
    }
    let manifest_json = serde_json::to_string_pretty(manifest)?;
    std::fs::write(dir.join(MANIFEST_FILE), manifest_json)
        .with_context(|| format!("cannot write the manifest in {}", dir.display()))?;
    Ok(())
}

/// A validator's config: consensus timing for a quick devnet, a name and
/// the zone's DNS.
fn validator_config(node: &NodeFiles, data_dir: &Path, seeds: &str, validators: &str) -> String {
    format!(
        r#"# node{index} of a devnet made by `hm-node devnet` (see `hm-node run --help`).
data_dir = "{data_dir}"
listen = "{listen}"          # STOQ (QUIC over UDP)
seeds = [{seeds}]
api_listen = "{api}"        # HTTP API: JSON under /v1, /metrics; token in node{index}/api-token

[chain]
genesis = "genesis.bin"
validators = [
    {validators},
]
block_interval_ms = 200
propose_timeout_ms = 1500

[chain.trust]
zone = "mesh"
name = "{name}"
certificate_validity_s = 3600   # short-lived certificates, renewed at half their life
renew_at = 0.5
dns_listen = "{dns}"        # standard DNS for the zone, UDP and TCP
"#,
        index = node.index,
        data_dir = data_dir.display(),
        listen = node.listen,
        api = node.api,
        dns = node.dns,
        name = node.name(),
    )
}

/// A light node's config: the validators as its full nodes (and as the
/// authorities it asks for its first certificate), a name, no DNS.
fn light_config(
    node: &NodeFiles,
    data_dir: &Path,
    seeds: &str,
    validators: &str,
    full_nodes: &str,
) -> String {
    format!(
        r#"# node{index} of a devnet made by `hm-node devnet` (see `hm-node run --help`):
# a light node. It keeps verified headers only (commit certificates checked
# against the genesis validators) and asks the full nodes for TrustChain
# state, accepting proven answers only.
data_dir = "{data_dir}"
listen = "{listen}"          # STOQ (QUIC over UDP)
seeds = [{seeds}]
api_listen = "{api}"        # HTTP API: JSON under /v1, /metrics; token in node{index}/api-token

[chain]
genesis = "genesis.bin"
role = "light"
full_nodes = [{full_nodes}]   # their STOQ addresses, where they serve hm/api/1
validators = [
    {validators},
]

[chain.trust]
zone = "mesh"
name = "{name}"
certificate_validity_s = 3600   # short-lived certificates, renewed at half their life
renew_at = 0.5
"#,
        index = node.index,
        data_dir = data_dir.display(),
        listen = node.listen,
        api = node.api,
        name = node.name(),
    )
}

/// The pid recorded for a node, if that process is still an `hm-node`.
fn running_pid(node: &NodeFiles) -> Option<i32> {
    let pid: i32 = read_bounded(&node.pid).ok()?.trim().parse().ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let cmdline = String::from_utf8_lossy(&cmdline);
    let config = node.config.file_name()?.to_string_lossy();
    (cmdline.contains("hm-node") && cmdline.contains(&*config)).then_some(pid)
}

#[allow(unsafe_code)]
fn signal(pid: i32, signal: libc::c_int) -> bool {
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    unsafe { libc::kill(pid, signal) == 0 }
}

/// Starts one node as `hm-node run` in its own process group (so a
/// terminal's Ctrl-C reaches devnet, which stops the nodes in order).
fn spawn(dir: &Path, node: &NodeFiles, log_format: &str) -> anyhow::Result<Child> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().context("cannot find the hm-node executable")?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&node.log)
        .with_context(|| format!("cannot open {}", node.log.display()))?;
    let config = node
        .config
        .file_name()
        .context("a node config has no file name")?;
    // A status file left by the node's last life would read as progress.
    let status_file = node.data_dir.join("status.json");
    if status_file.exists() {
        std::fs::remove_file(&status_file)
            .with_context(|| format!("cannot remove the old {}", status_file.display()))?;
    }
    let child = Command::new(exe)
        .arg("run")
        .arg("--config")
        .arg(config)
        .args(["--log-format", log_format])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot start node{}", node.index))?;
    std::fs::write(&node.pid, child.id().to_string())
        .with_context(|| format!("cannot write {}", node.pid.display()))?;
    Ok(child)
}

/// Where every node stands, from its status file.
#[derive(Default, Clone, PartialEq)]
struct Progress {
    phases: Vec<Option<u64>>,
    /// Committed height (a validator) or trusted header height (a light node).
    heights: Vec<Option<u64>>,
    /// Which nodes are light nodes.
    light: Vec<bool>,
}

impl Progress {
    fn read(nodes: &[NodeFiles]) -> Progress {
        let statuses: Vec<Option<serde_json::Value>> =
            nodes.iter().map(NodeFiles::status).collect();
        Progress {
            phases: statuses
                .iter()
                .map(|status| status.as_ref()?["trust"]["phase"].as_u64())
                .collect(),
            heights: nodes
                .iter()
                .zip(&statuses)
                .map(|(node, status)| {
                    let chain = &status.as_ref()?["chain"];
                    if node.light {
                        chain["light"]["trusted_height"].as_u64()
                    } else {
                        chain["height"].as_u64()
                    }
                })
                .collect(),
            light: nodes.iter().map(|node| node.light).collect(),
        }
    }

    /// The validators' committed heights (unknown: 0).
    fn validator_heights(&self) -> Vec<u64> {
        self.heights
            .iter()
            .zip(&self.light)
            .filter(|(_, light)| !**light)
            .map(|(height, _)| height.unwrap_or(0))
            .collect()
    }

    fn in_phase3(&self) -> usize {
        self.phases
            .iter()
            .filter(|phase| **phase == Some(3))
            .count()
    }

    fn line(&self) -> String {
        // Validators' values, then " | light " and the light nodes'.
        let show = |values: &[Option<u64>]| {
            let mut text = String::new();
            for (index, (value, light)) in values.iter().zip(&self.light).enumerate() {
                if *light && (index == 0 || !self.light[index - 1]) {
                    text.push_str(if index == 0 { "light " } else { " | light " });
                } else if index > 0 {
                    text.push(' ');
                }
                text.push_str(&value.map_or("-".to_string(), |value| value.to_string()));
            }
            text
        };
        format!(
            "{}/{} in phase 3 (phases {}; heights {})",
            self.in_phase3(),
            self.phases.len(),
            show(&self.phases),
            show(&self.heights)
        )
    }
}

/// Stops every running node of the devnet: SIGTERM, then SIGKILL after
/// the grace period. Returns how many were running.
fn stop_nodes(nodes: &[NodeFiles], children: &mut [Option<Child>]) -> usize {
    let mut stopping = Vec::new();
    for (index, node) in nodes.iter().enumerate() {
        let child_pid = children
            .get_mut(index)
            .and_then(Option::as_mut)
            .and_then(|child| match child.try_wait() {
                Ok(None) => Some(child.id() as i32),
                _ => None,
            });
        if let Some(pid) = child_pid.or_else(|| running_pid(node))
            && signal(pid, libc::SIGTERM)
        {
            stopping.push((index, pid));
        }
    }
    let deadline = Instant::now() + STOP_GRACE;
    for &(index, pid) in &stopping {
        loop {
            let gone = match children.get_mut(index).and_then(Option::as_mut) {
                Some(child) => !matches!(child.try_wait(), Ok(None)),
                None => !signal(pid, 0),
            };
            if gone {
                break;
            }
            if Instant::now() > deadline {
                eprintln!("devnet: node{index} did not stop within {STOP_GRACE:?}; killing it");
                signal(pid, libc::SIGKILL);
                if let Some(child) = children.get_mut(index).and_then(Option::as_mut) {
                    let _ = child.wait();
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = std::fs::remove_file(&nodes[index].pid);
    }
    stopping.len()
}

/// `hm-node devnet --stop`.
pub fn stop(dir: &Path) -> anyhow::Result<()> {
    let manifest = read_manifest(dir)?.with_context(|| {
        format!(
            "{} holds no devnet ({MANIFEST_FILE} is missing); nothing to stop",
            dir.display()
        )
    })?;
    let nodes = nodes_of(dir, &manifest);
    let stopped = stop_nodes(&nodes, &mut []);
    say!("devnet: stopped {stopped} of {} nodes", nodes.len());
    Ok(())
}

/// `hm-node devnet`.
pub fn devnet(args: &DevnetArgs) -> anyhow::Result<()> {
    check_args(args)?;
    let dir = &args.dir;
    let wanted = Manifest {
        nodes: args.nodes,
        light: args.light,
        base_port: args.base_port,
    };
    let existing = read_manifest(dir)?;
    let is_new = existing.is_none();
    let manifest = match existing {
        Some(manifest) if manifest != wanted => bail!(
            "{} holds a devnet of {} validators and {} light nodes on base port {}; run it with --nodes {} --light {} --base-port {}, or remove the directory for a new one",
            dir.display(),
            manifest.nodes,
            manifest.light,
            manifest.base_port,
            manifest.nodes,
            manifest.light,
            manifest.base_port
        ),
        Some(manifest) => manifest,
        None => wanted,
    };
    let nodes = nodes_of(dir, &manifest);
    if let Some((node, pid)) = nodes
        .iter()
        .find_map(|node| running_pid(node).map(|pid| (node, pid)))
    {
        bail!(
            "node{} of the devnet in {} is already running (pid {pid}); stop it with `hm-node devnet --dir {} --stop`",
            node.index,
            dir.display(),
            dir.display()
        );
    }
    check_ports_free(&nodes, manifest.base_port)?;
    if is_new {
        if dir.exists()
            && std::fs::read_dir(dir)
                .with_context(|| format!("cannot read {}", dir.display()))?
                .next()
                .is_some()
        {
            bail!(
                "{} exists and is not empty; pick a new --dir (devnet creates it)",
                dir.display()
            );
        }
        say!(
            "devnet: creating {} validators and {} light nodes in {}",
            manifest.nodes,
            manifest.light,
            dir.display()
        );
        create(dir, &manifest, &nodes)?;
    } else {
        say!(
            "devnet: starting the {} nodes in {} again",
            manifest.total(),
            dir.display()
        );
    }

    let mut children: Vec<Option<Child>> = Vec::with_capacity(nodes.len());
    for node in &nodes {
        match spawn(dir, node, args.log_format) {
            Ok(child) => children.push(Some(child)),
            Err(error) => {
                stop_nodes(&nodes, &mut children);
                return Err(error);
            }
        }
    }
    let started = Instant::now();
    if let Err(error) = wait_for_phase3(&nodes, &mut children, args.timeout_s, started) {
        stop_nodes(&nodes, &mut children);
        return Err(error);
    }
    say!("{}", summary(dir, &nodes, started.elapsed()).trim_end());
    if args.detach {
        say!(
            "devnet: the nodes run on in the background; stop them with `hm-node devnet --dir {} --stop`",
            dir.display()
        );
        return Ok(());
    }
    say!("devnet: running; Ctrl-C stops every node");
    let outcome = supervise(&nodes, &mut children);
    let stopped = stop_nodes(&nodes, &mut children);
    say!("devnet: stopped {stopped} nodes");
    outcome
}

/// Fails, with its log's end, when a started node has exited.
fn check_alive(
    nodes: &[NodeFiles],
    children: &mut [Option<Child>],
    when: &str,
) -> anyhow::Result<()> {
    for (node, child) in nodes.iter().zip(children.iter_mut()) {
        if let Some(child) = child
            && let Ok(Some(exit)) = child.try_wait()
        {
            bail!(
                "node{} exited ({exit}){when}; its log ({}) ends:\n{}",
                node.index,
                node.log.display(),
                node.log_tail()
            );
        }
    }
    Ok(())
}

/// Waits until every node is in phase 3 and every validator at least at
/// the height the last one had when all first were (so every validator
/// holds every name; a light node holds no state, and its own name was
/// proven committed before it entered phase 3).
fn wait_for_phase3(
    nodes: &[NodeFiles],
    children: &mut [Option<Child>],
    timeout_s: u64,
    started: Instant,
) -> anyhow::Result<()> {
    let timeout = Duration::from_secs(timeout_s);
    let mut shown = Progress::default();
    let mut target_height: Option<u64> = None;
    loop {
        check_alive(nodes, children, " before phase 3")?;
        let progress = Progress::read(nodes);
        if progress != shown {
            say!(
                "devnet: {} after {:.1} s",
                progress.line(),
                started.elapsed().as_secs_f64()
            );
            shown = progress.clone();
        }
        if progress.in_phase3() == nodes.len() {
            let heights = progress.validator_heights();
            let target = *target_height.get_or_insert(heights.iter().copied().max().unwrap_or(0));
            if heights.iter().all(|height| *height >= target) {
                return Ok(());
            }
        }
        if started.elapsed() > timeout {
            let mut tails = String::new();
            for (node, phase) in nodes.iter().zip(&progress.phases) {
                if *phase != Some(3) {
                    let _ = write!(
                        tails,
                        "\n--- node{} ({}, {}){}:\n{}",
                        node.index,
                        node.role(),
                        node.log.display(),
                        node.status().map_or(String::new(), |status| stuck(&status)),
                        node.log_tail()
                    );
                }
            }
            bail!(
                "not every node reached phase 3 within {timeout_s} s ({}); raise --timeout-s on a slow machine, or read the logs:{tails}",
                progress.line()
            );
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Why a node is not in phase 3 yet, from its status: what it misses for
/// the next phase, its last error and, a light node, what it verified and
/// refused.
fn stuck(status: &serde_json::Value) -> String {
    let mut out = String::new();
    if let Some(missing) = status["trust"]["missing_for_next_phase"].as_str() {
        let _ = write!(out, "; missing for the next phase: {missing}");
    }
    if let Some(error) = status["error"].as_str() {
        let _ = write!(out, "; error: {error}");
    }
    let light = &status["chain"]["light"];
    if light.is_object() {
        let _ = write!(
            out,
            "; light: trusted height {}, answers accepted {}, refused {} (by reason {})",
            light["trusted_height"],
            light["answers_accepted"],
            light["answers_refused"],
            light["refused_by_reason"]
        );
    }
    out
}

/// What to print once the cluster is up: the addresses and how to use them.
fn summary(dir: &Path, nodes: &[NodeFiles], elapsed: Duration) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "devnet: {} nodes in phase 3 after {:.1} s\n",
        nodes.len(),
        elapsed.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "{:<7} {:<10} {:<14} {:<22} {:<14} {:<14} TOKEN",
        "NODE", "ROLE", "STOQ", "API", "DNS", "NAME"
    );
    for node in nodes {
        let _ = writeln!(
            out,
            "{:<7} {:<10} {:<14} {:<22} {:<14} {:<14} {}",
            format!("node{}", node.index),
            node.role(),
            node.listen.to_string(),
            format!("http://{}", node.api),
            if node.light {
                "-".to_string()
            } else {
                node.dns.to_string()
            },
            node.name(),
            node.token_file().display()
        );
    }
    let to: Vec<String> = nodes
        .iter()
        .map(|node| format!("--to {}", node.listen))
        .collect();
    let first = &nodes[0];
    let _ = writeln!(out, "\ntry:");
    let _ = writeln!(out, "  hm status {}", to.join(" "));
    let _ = writeln!(
        out,
        "  curl -H \"Authorization: Bearer $(cat {})\" http://{}/metrics",
        first.token_file().display(),
        first.api
    );
    let last = nodes.iter().rfind(|node| !node.light).unwrap_or(first);
    let _ = writeln!(
        out,
        "  dig @::1 -p {} {} AAAA +short",
        first.dns.port(),
        last.name()
    );
    if let Some(light) = nodes.iter().find(|node| node.light) {
        let _ = writeln!(
            out,
            "  hm chain head --to {}   # a light node: its latest verified header",
            light.listen
        );
    }
    let _ = writeln!(
        out,
        "  logs: {}/node<i>.log   configs: {}/node<i>.toml",
        dir.display(),
        dir.display()
    );
    out
}

/// Runs until Ctrl-C / SIGTERM (Ok) or until a node exits (Err).
fn supervise(nodes: &[NodeFiles], children: &mut [Option<Child>]) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the signal handler")?;
    runtime.block_on(async {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .context("cannot listen for SIGTERM")?;
        loop {
            check_alive(nodes, children, "")?;
            tokio::select! {
                _ = tokio::signal::ctrl_c() => return Ok(()),
                _ = terminate.recv() => return Ok(()),
                () = tokio::time::sleep(POLL_INTERVAL) => {}
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(nodes: usize, base_port: u16) -> DevnetArgs {
        DevnetArgs {
            nodes,
            light: 0,
            dir: PathBuf::from("unused"),
            base_port,
            detach: true,
            timeout_s: 60,
            log_format: "human",
        }
    }

    #[test]
    fn arguments_are_bounded_with_a_reason() {
        assert!(check_args(&args(4, 7000)).is_ok());
        let error = check_args(&args(0, 7000))
            .expect_err("no nodes")
            .to_string();
        assert!(error.contains("1 to 16"), "{error}");
        let error = check_args(&args(NODES_MAX + 1, 7000))
            .expect_err("too many")
            .to_string();
        assert!(error.contains("--nodes 17"), "{error}");
        let error = check_args(&args(4, 65_400))
            .expect_err("ports overflow")
            .to_string();
        assert!(error.contains("--base-port 65400"), "{error}");
        let error = check_args(&args(4, 80))
            .expect_err("privileged")
            .to_string();
        assert!(error.contains("between 1024"), "{error}");
        let mut light = args(4, 7000);
        light.light = LIGHT_NODES_MAX;
        assert!(check_args(&light).is_ok());
        light.light = LIGHT_NODES_MAX + 1;
        let error = check_args(&light)
            .expect_err("too many light nodes")
            .to_string();
        assert!(
            error.contains("--light 9") && error.contains("0 to 8"),
            "{error}"
        );
        // The light nodes' ports count too.
        let mut light = args(4, 65_535 - 200 - 4);
        assert!(check_args(&light).is_ok());
        light.light = 1;
        let error = check_args(&light).expect_err("ports overflow").to_string();
        assert!(error.contains("--base-port"), "{error}");
    }

    /// The configs devnet writes are valid node configs: validators are
    /// replicas with DNS, light nodes ask the validators and serve no DNS.
    #[test]
    fn light_nodes_come_after_the_validators_and_ask_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let manifest = Manifest {
            nodes: 2,
            light: 1,
            base_port: 7000,
        };
        let nodes = nodes_of(dir.path(), &manifest);
        assert_eq!(
            nodes.iter().map(|node| node.light).collect::<Vec<_>>(),
            [false, false, true]
        );
        create(dir.path(), &manifest, &nodes).expect("create");
        let validators: Vec<SocketAddrV6> = nodes[..2].iter().map(|node| node.listen).collect();
        for node in &nodes {
            let loaded = crate::load_config(&node.config).expect("a valid config");
            let chain = loaded.node.chain.expect("a chain");
            assert!(chain.trust.is_some(), "node{}", node.index);
            assert_eq!(chain.validator_addrs.len(), 2, "node{}", node.index);
            if node.light {
                assert_eq!(chain.role, hm_node::NodeRole::Light);
                assert_eq!(chain.full_nodes, validators);
                assert!(loaded.dns.is_none(), "a light node serves no DNS");
            } else {
                assert_eq!(chain.role, hm_node::NodeRole::Replica);
                assert!(chain.full_nodes.is_empty());
                assert_eq!(loaded.dns.map(|dns| dns.listen), Some(node.dns));
            }
        }
        // The light node is no genesis validator: only the two validators
        // have stake.
        let genesis = &crate::load_config(&nodes[0].config)
            .expect("valid")
            .node
            .chain
            .expect("a chain")
            .genesis;
        let stakes = genesis.validator_set().expect("validators");
        assert_eq!(stakes.len(), 2);
        // A manifest from before light nodes reads as none.
        std::fs::write(
            dir.path().join(MANIFEST_FILE),
            "{\"nodes\": 4, \"base_port\": 7000}",
        )
        .expect("write");
        let old = read_manifest(dir.path())
            .expect("readable")
            .expect("present");
        assert_eq!(old.light, 0);
    }

    #[test]
    fn ports_follow_the_documented_layout() {
        let node = NodeFiles::new(Path::new("d"), 7000, 3, false);
        assert_eq!(node.listen.to_string(), "[::1]:7003");
        assert_eq!(node.api.to_string(), "[::1]:7103");
        assert_eq!(node.dns.to_string(), "[::1]:7203");
        assert_eq!(node.config, Path::new("d/node3.toml"));
        assert_eq!(node.name(), "node3.mesh");
    }

    #[test]
    fn a_foreign_manifest_is_refused_with_what_to_do() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(read_manifest(dir.path()).expect("no manifest").is_none());
        std::fs::write(
            dir.path().join(MANIFEST_FILE),
            "{\"nodes\": 99, \"base_port\": 7000}",
        )
        .expect("write");
        let error = read_manifest(dir.path()).expect_err("too many").to_string();
        assert!(error.contains("1 to 16"), "{error}");
        std::fs::write(dir.path().join(MANIFEST_FILE), "not json").expect("write");
        let error = format!("{:#}", read_manifest(dir.path()).expect_err("garbage"));
        assert!(error.contains("remove the directory"), "{error}");
    }
}
