//! `hm-node` — the production HyperMesh node on real backends.
//!
//! ```text
//! hm-node init --data-dir DIR            # create the identity, print node id and public key
//! hm-node genesis --out genesis.bin --chain-name NAME --validator PUBKEY_HEX:STAKE ...
//! hm-node --config node.toml             # run (also: hm-node run --config node.toml)
//! hm-node submit --to [::1]:7001 --put KEY=VALUE [--random N]   # through the node's API
//! hm-node get --to [::1]:7001 --key KEY  # committed key-value state
//! hm-node head --to [::1]:7001           # committed height and head hash
//! hm-node devnet --nodes 4 [--light 1] [--detach]   # a dev cluster on [::1], up to phase 3
//! hm-node devnet --stop                  # stop a detached one
//! ```
//!
//! The config names the data dir, the IPv6 listen address and the seed list,
//! and optionally a `[chain]` section (genesis file, validator addresses,
//! the node's `role`: `replica` by default, or `light` with the
//! `full_nodes` it asks) with a `[chain.trust]` section (zone, the node's name, certificate
//! lifetime and renewal point, the chain's live window, and `dns_listen`,
//! where the node answers standard DNS for its zone from committed state).
//! The node keeps its identity and incarnation in the data dir's RocksDB and
//! writes a status snapshot (JSON) to `status_file` twice a second, which the
//! integration tests and, for now, operators read.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // a binary on the real OS

mod devnet;

use std::net::{SocketAddr, SocketAddrV6};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use hm_env::{Entropy as _, Env as _};
use hm_host::HostEnv;
use hm_host::dns::{DnsServer, ZoneAuthority};
use hm_host::entropy::OsEntropy;
use hm_kernel::genesis::{GENESIS_BYTES_MAX, Genesis, ProofParams};
use hm_node::trust::TrustSettings;
use hm_node::{ChainConfig, NodeConfig, NodeRole, StatusHandle};
use hm_trustchain::name::DnsName;
use hm_wire::{Hash, VerifyingKey};
use serde::Deserialize;

/// Largest config file read.
const CONFIG_BYTES_MAX: u64 = 1 << 20;
/// Most seeds a config may list.
const SEEDS_MAX: usize = 1024;
/// Most full nodes a light node's config may list.
const FULL_NODES_MAX: usize = 64;

#[derive(Parser)]
#[command(name = "hm-node", about = "Run a HyperMesh node")]
struct Cli {
    /// The node's TOML config file (runs the node).
    #[arg(long)]
    config: Option<PathBuf>,
    /// How a running node writes its log to stderr: `human` (colored on a
    /// terminal) or `json` (one object per line, for log collectors).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Create the node's identity in DATA_DIR (kept if it exists) and print
    /// `node_id <hex>` and `public_key <hex>`.
    Init {
        #[arg(long)]
        data_dir: PathBuf,
        /// Also write a commented config for this node here (refused if
        /// the file exists).
        #[arg(long)]
        config: Option<PathBuf>,
        /// The IPv6 address the written config listens on.
        #[arg(long, default_value = "[::1]:7000", requires = "config")]
        listen: String,
    },
    /// Write a genesis file from the validators' public keys and stakes.
    Genesis {
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        chain_name: String,
        /// `PUBLIC_KEY_HEX:STAKE`, once per validator.
        #[arg(
            long = "validator",
            value_name = "PUBLIC_KEY_HEX:STAKE",
            required = true
        )]
        validators: Vec<String>,
        /// Proof parameters: `production` (seconds of plotting per validator)
        /// or `simulation` (tiny, for tests and dev clusters).
        #[arg(long, default_value = "production")]
        params: String,
    },
    /// Run the node.
    Run {
        #[arg(long)]
        config: PathBuf,
    },
    /// Submit key-value transactions through a node's API (`hm/api/1`).
    Submit {
        /// The node's address, e.g. "[::1]:7001".
        #[arg(long)]
        to: String,
        /// `KEY=VALUE` to put (repeatable).
        #[arg(long = "put", value_name = "KEY=VALUE")]
        puts: Vec<String>,
        /// Also submit this many random puts (a test workload).
        #[arg(long, default_value_t = 0)]
        random: usize,
    },
    /// Read a key of the committed key-value state through a node's API.
    Get {
        #[arg(long)]
        to: String,
        #[arg(long)]
        key: String,
    },
    /// Print a node's committed height and head hash.
    Head {
        #[arg(long)]
        to: String,
    },
    /// A development cluster on [::1]: N validators with a fresh genesis,
    /// and L light nodes (`--light`) that ask the validators, each its own
    /// process; waits for bootstrap phase 3 and prints every node's
    /// addresses. Node i uses STOQ port BASE+i, HTTP API BASE+100+i, DNS
    /// BASE+200+i (validators only); the light nodes come after the
    /// validators. A directory holding a devnet starts it again.
    Devnet {
        /// Validators to run (1 to 16).
        #[arg(long, default_value_t = 4)]
        nodes: usize,
        /// Light nodes to run (0 to 8): `role = "light"` in their config,
        /// `full_nodes` = the validators' STOQ (API) addresses. They keep
        /// verified headers only and reach phase 3 on proven answers.
        #[arg(long, default_value_t = 0)]
        light: usize,
        /// Where the genesis, configs, data dirs and logs live.
        #[arg(long, default_value = "devnet")]
        dir: PathBuf,
        /// First port of the three port ranges.
        #[arg(long, default_value_t = 7000)]
        base_port: u16,
        /// Return once every node is in phase 3 and leave the nodes running
        /// (stop them with --stop); without it devnet runs until Ctrl-C.
        #[arg(long)]
        detach: bool,
        /// Stop the nodes of the devnet in --dir (SIGTERM, then SIGKILL after 10 s).
        #[arg(long, conflicts_with = "detach")]
        stop: bool,
        /// Give up (and stop the nodes) when phase 3 is not reached in this long.
        #[arg(long, default_value_t = 180)]
        timeout_s: u64,
    },
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

/// Validators a genesis command line may list.
const GENESIS_VALIDATORS_MAX: usize = 256;

/// The `[chain]` section of a node config.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChainFileConfig {
    /// The genesis file written by `hm-node genesis`.
    genesis: PathBuf,
    /// Where each validator listens.
    validators: Vec<ValidatorAddr>,
    /// Generate a test key-value transaction every this many ms (0: none).
    #[serde(default)]
    workload_interval_ms: u64,
    /// Pause after a commit before the next block (default 1000).
    #[serde(default)]
    block_interval_ms: Option<u64>,
    /// Base propose timeout (default 3000); vote timeouts are a third of it.
    #[serde(default)]
    propose_timeout_ms: Option<u64>,
    /// TrustChain and the bootstrap phases (see `TrustFileConfig`); without
    /// it the node stays in phase 0.
    #[serde(default)]
    trust: Option<TrustFileConfig>,
    /// `"replica"` (default: stores and executes every block; a validator
    /// when the genesis names the node's key) or `"light"` (keeps verified
    /// headers only and asks full nodes for state, with proofs).
    #[serde(default)]
    role: NodeRole,
    /// A light node's full nodes: the STOQ addresses where they serve the
    /// API (`hm/api/1`), e.g. `["[::1]:7000"]`; empty: ask the validators.
    #[serde(default)]
    full_nodes: Vec<String>,
}

/// The `[chain.trust]` section: how the node climbs the bootstrap phases
/// and, optionally, where it answers standard DNS for its zone.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrustFileConfig {
    /// The network's DNS zone (default "mesh"); every node of a chain must
    /// use the same one.
    #[serde(default = "default_zone")]
    zone: String,
    /// This node's DNS name, under the zone (registered once certified).
    #[serde(default)]
    name: Option<String>,
    /// Lifetime asked for in certificate requests (default 86400 s).
    #[serde(default = "default_certificate_validity_s")]
    certificate_validity_s: u64,
    /// Renew once this share of the lifetime has passed (default 0.5).
    #[serde(default = "default_renew_at")]
    renew_at: f64,
    /// The chain counts as live while its last commit is at most this old
    /// (default 30 s).
    #[serde(default = "default_chain_live_window_s")]
    chain_live_window_s: u64,
    /// IPv6 socket address where the node answers standard DNS (UDP and
    /// TCP) for its zone, e.g. "[::1]:5353"; none by default.
    #[serde(default)]
    dns_listen: Option<String>,
}

fn default_zone() -> String {
    hm_node::DEFAULT_ZONE.to_string()
}

fn default_certificate_validity_s() -> u64 {
    24 * 3_600
}

fn default_renew_at() -> f64 {
    0.5
}

fn default_chain_live_window_s() -> u64 {
    30
}

/// Longest chain live window a config may set: a day.
const CHAIN_LIVE_WINDOW_S_MAX: u64 = 24 * 3_600;

/// Checks `[chain.trust]` and turns it into the node's settings and the
/// DNS front-end's address.
fn load_trust(trust: &TrustFileConfig) -> anyhow::Result<(TrustSettings, Option<SocketAddrV6>)> {
    let zone = DnsName::parse(&trust.zone).map_err(|error| {
        anyhow::anyhow!(
            "`chain.trust.zone` = {:?} is not a DNS name: {error}; write e.g. \"mesh\"",
            trust.zone
        )
    })?;
    let mut settings = TrustSettings::new(zone.clone());
    if let Some(name) = &trust.name {
        let name = DnsName::parse(name).map_err(|error| {
            anyhow::anyhow!("`chain.trust.name` = {name:?} is not a DNS name: {error}; write e.g. \"node0.{zone}\"")
        })?;
        if !name.is_under(&zone) {
            bail!(
                "`chain.trust.name` = \"{name}\" is not under the zone \"{zone}\"; write e.g. \"node0.{zone}\""
            );
        }
        settings.name = Some(name);
    }
    let validity_s_max = hm_trustchain::cert::CERT_VALIDITY_MS_MAX / 1_000;
    if !(1..=validity_s_max).contains(&trust.certificate_validity_s) {
        bail!(
            "`chain.trust.certificate_validity_s` = {} must be between 1 and {validity_s_max} (30 days)",
            trust.certificate_validity_s
        );
    }
    settings.certificate_validity_ms = trust.certificate_validity_s * 1_000;
    if !(trust.renew_at.is_finite() && trust.renew_at > 0.0 && trust.renew_at < 1.0) {
        bail!(
            "`chain.trust.renew_at` = {} must be a share of the lifetime strictly between 0 and 1, e.g. 0.5",
            trust.renew_at
        );
    }
    // In (0, 1000): the bounds were checked just above.
    settings.renew_at_per_mille = ((trust.renew_at * 1_000.0).round() as u64).clamp(1, 999);
    if !(1..=CHAIN_LIVE_WINDOW_S_MAX).contains(&trust.chain_live_window_s) {
        bail!(
            "`chain.trust.chain_live_window_s` = {} must be between 1 and {CHAIN_LIVE_WINDOW_S_MAX}",
            trust.chain_live_window_s
        );
    }
    settings.chain_live_window_ms = trust.chain_live_window_s * 1_000;
    let dns_listen = trust
        .dns_listen
        .as_deref()
        .map(|text| parse_v6("chain.trust.dns_listen", text))
        .transpose()?;
    Ok((settings, dns_listen))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ValidatorAddr {
    /// Node id (hex, as `hm-node init` prints it).
    id: String,
    /// IPv6 socket address, e.g. "[::1]:7001".
    addr: String,
}

fn hex_decode(what: &str, text: &str) -> anyhow::Result<Vec<u8>> {
    let text = text.trim();
    if !text.len().is_multiple_of(2) {
        bail!("{what} is not hex: odd length {}", text.len());
    }
    (0..text.len())
        .step_by(2)
        .map(|at| {
            u8::from_str_radix(&text[at..at + 2], 16)
                .with_context(|| format!("{what} is not hex at character {at}"))
        })
        .collect()
}

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn init(data_dir: &Path, config: Option<&Path>, listen: &str) -> anyhow::Result<()> {
    let identity = create_identity(data_dir)?;
    println!("node_id {}", identity.node_id);
    println!("public_key {}", identity.public_key);
    println!(
        "api_token_file {}",
        data_dir.join(hm_host::http::TOKEN_FILE).display()
    );
    if let Some(config) = config {
        let listen = parse_v6("--listen", listen)?;
        let text = config_template(data_dir, listen);
        // The template must itself be a valid config.
        toml::from_str::<FileConfig>(&text).context("the config template does not parse")?;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(config)
            .with_context(|| {
                format!(
                    "cannot create {} (it must not exist yet; init never overwrites a config)",
                    config.display()
                )
            })?;
        std::io::Write::write_all(&mut file, text.as_bytes())
            .with_context(|| format!("cannot write {}", config.display()))?;
        println!("config {}", config.display());
    }
    Ok(())
}

/// A config for a node listening on `listen`, every key explained; the
/// chain sections are there, commented out, to fill in from a genesis.
fn config_template(data_dir: &Path, listen: SocketAddrV6) -> String {
    let api_port = listen.port().wrapping_add(100);
    let dns_port = listen.port().wrapping_add(200);
    let ip = listen.ip();
    format!(
        r#"# hm-node config (hm-node run --config THIS_FILE). Every key is checked at
# start; an unknown key or a bad value stops the node with the key's name.

# Where the node keeps its database (RocksDB), identity, API token and status.
data_dir = "{data_dir}"
# IPv6 address and UDP port for STOQ (QUIC): peers, chain, API clients.
listen = "{listen}"
# Phase-0 peers to join through, e.g. ["[2001:db8::1]:7000"]; empty for the first node.
seeds = []
# Local HTTP API (JSON under /v1, Prometheus /metrics, bearer token in
# <data_dir>/api-token); remove to switch it off.
api_listen = "[{ip}]:{api_port}"
# Log filter (HM_LOG overrides), e.g. "info" or "info,hm_node=debug".
# log = "info"
# Status snapshot (JSON, every 500 ms); default <data_dir>/status.json.
# status_file = "{data_dir}/status.json"

# A chain: validators and followers need the network's genesis (from
# `hm-node genesis`) and every genesis validator's id and address.
# [chain]
# genesis = "genesis.bin"            # relative to this file
# validators = [{{ id = "<node id hex>", addr = "[2001:db8::1]:7000" }}]
# block_interval_ms = 500            # pause after a commit before the next proposal
# propose_timeout_ms = 1000          # consensus step timeout (grows per round)
# workload_interval_ms = 0           # test load: a key-value transaction every N ms
# role = "replica"                   # or "light": verified headers only, state asked of
#                                    # full nodes with proofs (needs [chain.trust]; a light
#                                    # node sets none of the three replica keys above)
# full_nodes = ["[2001:db8::1]:7000"] # a light node's full nodes (their STOQ addresses);
#                                    # without it, it asks the validators

# TrustChain: bootstrap phases 0-3, certificates, a name, DNS.
# [chain.trust]
# zone = "mesh"                      # the same on every node
# name = "node0.mesh"                # this node's name under the zone
# certificate_validity_s = 86400     # at most 30 days; renewed at renew_at of it
# renew_at = 0.5
# chain_live_window_s = 30           # the chain is live while its last commit is this recent
# dns_listen = "[{ip}]:{dns_port}"   # standard DNS for the zone (UDP and TCP)
"#,
        data_dir = data_dir.display(),
    )
}

/// A node's identity as `init` prints it (hex).
struct Identity {
    node_id: String,
    public_key: String,
}

/// Creates (or loads) the node identity in `data_dir` and its API token.
fn create_identity(data_dir: &Path) -> anyhow::Result<Identity> {
    let env = HostEnv::open(data_dir, hm_node::COLUMN_FAMILIES)
        .with_context(|| format!("cannot open the data dir {}", data_dir.display()))?;
    let key = hm_node::load_or_create_identity(&env)?;
    let public = key.verifying_key();
    hm_host::http::load_or_create_token(data_dir)?;
    Ok(Identity {
        node_id: public.fingerprint().to_hex(),
        public_key: hex_encode(public.as_bytes()),
    })
}

fn genesis(
    out: &Path,
    chain_name: &str,
    validators: &[String],
    params: &str,
) -> anyhow::Result<()> {
    if validators.len() > GENESIS_VALIDATORS_MAX {
        bail!(
            "{} validators; at most {GENESIS_VALIDATORS_MAX}",
            validators.len()
        );
    }
    let params = match params {
        "production" => ProofParams::production(),
        "simulation" => ProofParams::for_simulation(),
        other => bail!("--params {other:?}: use `production` or `simulation`"),
    };
    let members = validators
        .iter()
        .map(|entry| {
            let (key, stake) = entry
                .rsplit_once(':')
                .with_context(|| format!("--validator {entry:.16}…: write PUBLIC_KEY_HEX:STAKE"))?;
            let key = VerifyingKey::from_bytes(&hex_decode("the public key", key)?)
                .context("the public key is not a FALCON-1024 key; copy it from `hm-node init`")?;
            let stake: u64 = stake
                .parse()
                .with_context(|| format!("stake {stake:?} is not a whole number"))?;
            Ok((key, stake))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let chain_id = write_genesis(out, chain_name, &members, params)?;
    println!("chain_id {chain_id}");
    Ok(())
}

/// Plots, checks and writes a genesis; its chain id (hex).
fn write_genesis(
    out: &Path,
    chain_name: &str,
    members: &[(VerifyingKey, u64)],
    params: ProofParams,
) -> anyhow::Result<String> {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or(0);
    let (genesis, _) = Genesis::with_plots(chain_name, now_ms, members, params)
        .context("cannot plot a validator's space")?;
    genesis.check().context("the genesis is invalid")?;
    std::fs::write(out, hm_wire::encode(&genesis))
        .with_context(|| format!("cannot write {}", out.display()))?;
    Ok(genesis.chain_id().to_hex())
}

/// Checks that the `[chain]` settings fit the node's `role`; returns the
/// full nodes a light node asks (none for a replica).
fn check_role(chain: &ChainFileConfig) -> anyhow::Result<Vec<SocketAddrV6>> {
    match chain.role {
        NodeRole::Replica => {
            if !chain.full_nodes.is_empty() {
                bail!(
                    "`chain.full_nodes` is for light nodes, and this node is a replica (`chain.role` is \"replica\", the default): a replica syncs from the validators and its peers. Remove `full_nodes`, or set `role = \"light\"` in [chain]"
                );
            }
            Ok(Vec::new())
        }
        NodeRole::Light => {
            // Settings only a replica acts on: a light node proposes,
            // executes and generates nothing.
            let replica_only = [
                ("block_interval_ms", chain.block_interval_ms.is_some()),
                ("propose_timeout_ms", chain.propose_timeout_ms.is_some()),
                ("workload_interval_ms", chain.workload_interval_ms != 0),
            ];
            if let Some((key, _)) = replica_only.iter().find(|(_, set)| *set) {
                bail!(
                    "`chain.{key}` is a replica's (a validator's) setting, and this node is a light node (`chain.role` = \"light\"), which proposes and executes no blocks; remove `{key}`, or set `role = \"replica\"` to run a full node"
                );
            }
            let Some(trust) = &chain.trust else {
                bail!(
                    "a light node (`chain.role` = \"light\") needs a [chain.trust] section: it climbs the bootstrap phases on proven answers from full nodes; add [chain.trust] with at least `zone` (e.g. zone = \"mesh\"), or set `role = \"replica\"`"
                );
            };
            if trust.dns_listen.is_some() {
                bail!(
                    "`chain.trust.dns_listen` needs the zone's committed state, which a light node (`chain.role` = \"light\") does not hold; remove `dns_listen` and ask a replica's DNS front-end"
                );
            }
            if chain.full_nodes.len() > FULL_NODES_MAX {
                bail!(
                    "`chain.full_nodes` lists {} addresses; at most {FULL_NODES_MAX}",
                    chain.full_nodes.len()
                );
            }
            if chain.full_nodes.is_empty() && chain.validators.is_empty() {
                bail!(
                    "a light node (`chain.role` = \"light\") needs full nodes to ask: list their API (STOQ) addresses in `chain.full_nodes`, e.g. [\"[::1]:7000\"], or the validators in `chain.validators`"
                );
            }
            chain
                .full_nodes
                .iter()
                .map(|addr| parse_v6("chain.full_nodes[]", addr))
                .collect()
        }
    }
}

/// A validator must replicate: it proposes and votes on blocks, which a
/// light node does not hold. Refuses a light node whose key the genesis
/// names as a validator.
fn check_light_is_no_validator(chain: &ChainConfig, node_id: &Hash) -> Result<(), RefusedConfig> {
    if chain.role == NodeRole::Light && chain.genesis.space_root(node_id).is_some() {
        return Err(RefusedConfig(format!(
            "this node ({}) is a validator of the genesis, and a validator must replicate the chain (it proposes and votes on blocks); `chain.role` = \"light\" is refused: set `role = \"replica\"` (or remove it), or run the light node with an identity of its own (another data_dir)",
            node_id.to_hex()
        )));
    }
    Ok(())
}

/// A configuration the node refuses the same way on every start (exit 2,
/// which the systemd unit does not restart).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct RefusedConfig(String);

fn load_chain(
    config_path: &Path,
    chain: &ChainFileConfig,
) -> anyhow::Result<(ChainConfig, Option<DnsFrontEnd>)> {
    let full_nodes = check_role(chain)?;
    // A relative genesis path is relative to the config file.
    let genesis_path = config_path
        .parent()
        .map_or(chain.genesis.clone(), |dir| dir.join(&chain.genesis));
    let bytes = std::fs::read(&genesis_path)
        .with_context(|| format!("cannot read the genesis {}", genesis_path.display()))?;
    if bytes.len() > GENESIS_BYTES_MAX {
        bail!("{} is larger than a genesis may be", genesis_path.display());
    }
    let genesis = Genesis::decode(&bytes)
        .with_context(|| format!("{} is not a valid genesis", genesis_path.display()))?;
    let mut addrs = Vec::new();
    for validator in &chain.validators {
        let id = Hash::from_hex(&validator.id)
            .with_context(|| format!("chain.validators id {:?} is not a node id", validator.id))?;
        if genesis.space_root(&id).is_none() {
            bail!(
                "chain.validators id {} is not a validator of this genesis",
                validator.id
            );
        }
        addrs.push((id, parse_v6("chain.validators[].addr", &validator.addr)?));
    }
    let mut config = ChainConfig::new(genesis, addrs);
    config.role = chain.role;
    config.full_nodes = full_nodes;
    config.workload_interval_ms = chain.workload_interval_ms;
    if let Some(interval) = chain.block_interval_ms {
        config.replica.block_interval_ms = interval;
    }
    if let Some(propose) = chain.propose_timeout_ms {
        let consensus = &mut config.replica.consensus;
        consensus.propose_timeout_base_ms = propose;
        consensus.propose_timeout_delta_ms = propose / 2;
        consensus.prevote_timeout_base_ms = (propose / 3).max(1);
        consensus.prevote_timeout_delta_ms = propose / 6;
        consensus.precommit_timeout_base_ms = (propose / 3).max(1);
        consensus.precommit_timeout_delta_ms = propose / 6;
        consensus.rebroadcast_timeout_base_ms = propose * 2;
    }
    let mut dns = None;
    if let Some(trust) = &chain.trust {
        let (settings, dns_listen) = load_trust(trust)?;
        dns = dns_listen.map(|listen| DnsFrontEnd {
            listen,
            zone: settings.zone.clone(),
            name: settings.name.clone(),
        });
        config.trust = Some(settings);
    }
    Ok((config, dns))
}

/// Where and for which zone the node answers standard DNS.
#[derive(Debug)]
struct DnsFrontEnd {
    listen: SocketAddrV6,
    zone: DnsName,
    /// The node's own name: the zone's primary server in its SOA.
    name: Option<DnsName>,
}

/// Everything `run` needs from the config file.
struct LoadedConfig {
    node: NodeConfig,
    data_dir: PathBuf,
    status_file: PathBuf,
    log: Option<String>,
    dns: Option<DnsFrontEnd>,
    api_listen: Option<SocketAddrV6>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    /// Where the node keeps its database; created if missing.
    data_dir: PathBuf,
    /// IPv6 socket address to listen on, e.g. "[::1]:7000".
    listen: String,
    /// Phase-0 peers: IPv6 socket addresses.
    #[serde(default)]
    seeds: Vec<String>,
    /// Where to write the status snapshot (default: <data_dir>/status.json).
    #[serde(default)]
    status_file: Option<PathBuf>,
    /// Log filter, e.g. "info" or "hm_node=debug" (default "info"; HM_LOG overrides).
    #[serde(default)]
    log: Option<String>,
    /// Serve the local HTTP API (JSON under /v1, Prometheus /metrics) on
    /// this IPv6 TCP address, e.g. "[::1]:8080"; none by default. Requests
    /// need the bearer token in <data_dir>/api-token.
    #[serde(default)]
    api_listen: Option<String>,
    /// Run a chain (see `ChainFileConfig`).
    #[serde(default)]
    chain: Option<ChainFileConfig>,
}

fn parse_v6(what: &str, text: &str) -> anyhow::Result<SocketAddrV6> {
    let addr: SocketAddr = text.parse().with_context(|| {
        format!("`{what}` = {text:?} is not a socket address; write it like \"[::1]:7000\"")
    })?;
    match addr {
        SocketAddr::V6(v6) if v6.ip().to_ipv4_mapped().is_none() => Ok(v6),
        _ => bail!("`{what}` = {text:?} is IPv4; HyperMesh is IPv6-only, use e.g. \"[::1]:7000\""),
    }
}

fn load_config(path: &Path) -> anyhow::Result<LoadedConfig> {
    let metadata = std::fs::metadata(path)
        .with_context(|| format!("cannot read the config file {}", path.display()))?;
    if metadata.len() > CONFIG_BYTES_MAX {
        bail!(
            "{} is {} bytes; a config is at most {CONFIG_BYTES_MAX}",
            path.display(),
            metadata.len()
        );
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the config file {}", path.display()))?;
    let file: FileConfig =
        toml::from_str(&text).map_err(|error| anyhow::anyhow!("{}: {error}", path.display()))?;
    if file.seeds.len() > SEEDS_MAX {
        bail!(
            "{}: {} seeds; at most {SEEDS_MAX}",
            path.display(),
            file.seeds.len()
        );
    }
    let listen = parse_v6("listen", &file.listen)?;
    let seeds = file
        .seeds
        .iter()
        .map(|seed| parse_v6("seeds[]", seed))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let status_file = file
        .status_file
        .clone()
        .unwrap_or_else(|| file.data_dir.join("status.json"));
    let mut config = NodeConfig::new(listen, seeds);
    let mut dns = None;
    if let Some(chain) = &file.chain {
        let (chain, dns_front_end) = load_chain(path, chain)?;
        config.chain = Some(chain);
        dns = dns_front_end;
    }
    if let Some(dns) = &dns {
        let shared_ip = dns.listen.ip() == listen.ip()
            || dns.listen.ip().is_unspecified()
            || listen.ip().is_unspecified();
        if shared_ip && dns.listen.port() == listen.port() {
            bail!(
                "`chain.trust.dns_listen` = \"{}\" takes the node's own `listen` port (STOQ is UDP too); pick another port, e.g. {}",
                dns.listen,
                listen.port().wrapping_add(100)
            );
        }
    }
    let api_listen = file
        .api_listen
        .as_deref()
        .map(|text| parse_v6("api_listen", text))
        .transpose()?;
    if let (Some(api), Some(dns)) = (api_listen, &dns)
        && api.port() == dns.listen.port()
        && (api.ip() == dns.listen.ip()
            || api.ip().is_unspecified()
            || dns.listen.ip().is_unspecified())
    {
        bail!(
            "`api_listen` = \"{api}\" takes the DNS front-end's TCP port (`chain.trust.dns_listen`); pick another port"
        );
    }
    Ok(LoadedConfig {
        node: config,
        data_dir: file.data_dir,
        status_file,
        log: file.log,
        dns,
        api_listen,
    })
}

/// Writes the status snapshot atomically (temp file + rename), so readers
/// never see half a file.
fn write_status(path: &Path, status: &StatusHandle) -> std::io::Result<()> {
    let json = serde_json::to_vec_pretty(&status.snapshot()).map_err(std::io::Error::other)?;
    let temp = path.with_extension("json.tmp");
    std::fs::write(&temp, json)?;
    std::fs::rename(&temp, path)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let log_format = cli.log_format;
    let config_path = match (cli.command, cli.config) {
        (
            Some(Command::Init {
                data_dir,
                config,
                listen,
            }),
            _,
        ) => return report(init(&data_dir, config.as_deref(), &listen)),
        (
            Some(Command::Genesis {
                out,
                chain_name,
                validators,
                params,
            }),
            _,
        ) => return report(genesis(&out, &chain_name, &validators, &params)),
        (Some(Command::Submit { to, puts, random }), _) => {
            return report(submit(&to, puts, random));
        }
        (Some(Command::Get { to, key }), _) => {
            return report(with_stdout(|out| {
                hm_cli::ops::kv_get(&key, &to, false, out)
            }));
        }
        (Some(Command::Head { to }), _) => {
            return report(with_stdout(|out| hm_cli::ops::chain_head(&to, false, out)));
        }
        (
            Some(Command::Devnet {
                dir, stop: true, ..
            }),
            _,
        ) => return report(devnet::stop(&dir)),
        (
            Some(Command::Devnet {
                nodes,
                light,
                dir,
                base_port,
                detach,
                timeout_s,
                stop: false,
            }),
            _,
        ) => {
            return report(devnet::devnet(&devnet::DevnetArgs {
                nodes,
                light,
                dir,
                base_port,
                detach,
                timeout_s,
                log_format: match log_format {
                    LogFormat::Human => "human",
                    LogFormat::Json => "json",
                },
            }));
        }
        (Some(Command::Run { config }), _) | (None, Some(config)) => config,
        (None, None) => {
            eprintln!(
                "hm-node: say what to do: `hm-node --config node.toml`, `hm-node init`, or `hm-node genesis` (see --help)"
            );
            return ExitCode::from(2);
        }
    };
    run(&config_path, log_format)
}

/// Runs one of the `hm` CLI's commands, printing to stdout: hm-node's
/// client commands are the same code as `hm tx submit`, `hm kv get` and
/// `hm chain head`.
fn with_stdout(
    command: impl FnOnce(&mut dyn std::io::Write) -> Result<(), hm_cli::CliError>,
) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    command(&mut out)?;
    Ok(())
}

/// Keys the `--random` test workload spreads its puts over.
const RANDOM_KEYS: u64 = 1_024;
/// Random bytes in each `--random` put's value.
const RANDOM_VALUE_BYTES: usize = 32;

/// `hm-node submit`: `hm tx submit` with `--random N` more puts (a test
/// workload: random keys among [`RANDOM_KEYS`], random values).
fn submit(to: &str, mut puts: Vec<String>, random: usize) -> anyhow::Result<()> {
    for _ in 0..random {
        let key = OsEntropy.next_u64() % RANDOM_KEYS;
        let mut value = [0u8; RANDOM_VALUE_BYTES];
        OsEntropy.fill_bytes(&mut value);
        let value: String = value.iter().map(|byte| format!("{byte:02x}")).collect();
        puts.push(format!("random-{key}={value}"));
    }
    if puts.is_empty() {
        bail!("nothing to submit: give --put KEY=VALUE or --random N");
    }
    with_stdout(|out| hm_cli::ops::tx_submit(&puts, to, None, false, out))
}

/// A configuration the node refuses (membership, genesis, zone, role)
/// fails the same way on every start: exit 2, which the systemd unit does
/// not restart (RestartPreventExitStatus=2); anything else exits 1.
fn failure_code(error: &anyhow::Error) -> ExitCode {
    let refused_config = error.downcast_ref::<RefusedConfig>().is_some()
        || error
            .downcast_ref::<hm_node::NodeError>()
            .is_some_and(hm_node::NodeError::is_refused_configuration);
    ExitCode::from(if refused_config { 2 } else { 1 })
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("hm-node: {error:#}");
            failure_code(&error)
        }
    }
}

fn run(config_path: &Path, log_format: LogFormat) -> ExitCode {
    let LoadedConfig {
        node: config,
        data_dir,
        status_file,
        log,
        dns,
        api_listen,
    } = match load_config(config_path) {
        Ok(loaded) => loaded,
        Err(error) => {
            eprintln!("hm-node: {error:#}");
            return ExitCode::from(2);
        }
    };
    // hickory-server logs every DNS request at info; the node's default
    // keeps its warnings only.
    let filter = tracing_subscriber::EnvFilter::try_from_env("HM_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(log.as_deref().unwrap_or(DEFAULT_LOG_FILTER))
    });
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match log_format {
        LogFormat::Human => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => logs.json().with_current_span(false).init(),
    }

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("hm-node: cannot start the async runtime: {error}");
            return ExitCode::from(1);
        }
    };
    let result: anyhow::Result<()> = runtime.block_on(async move {
        let env = HostEnv::open(&data_dir, hm_node::COLUMN_FAMILIES)
            .with_context(|| format!("cannot open the data dir {}", data_dir.display()))?;
        if let Some(chain) = &config.chain {
            let node_id = hm_node::load_or_create_identity(&env)?
                .verifying_key()
                .fingerprint();
            check_light_is_no_validator(chain, &node_id)?;
        }
        let status = StatusHandle::default();
        {
            let status = status.clone();
            let status_file = status_file.clone();
            tokio::spawn(async move {
                loop {
                    if let Err(error) = write_status(&status_file, &status) {
                        tracing::warn!(path = %status_file.display(), %error, "cannot write the status file");
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            });
        }
        if let Some(dns) = &dns {
            serve_dns(dns, status.clone())?;
        }
        if let Some(listen) = api_listen {
            serve_http(listen, &data_dir, status.clone(), env.net().traffic()).await?;
        }
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .context("cannot listen for SIGTERM")?;
        let signal = tokio::select! {
            result = hm_node::run(env.clone(), config, status.clone()) => {
                return result.context("the node stopped");
            }
            _ = tokio::signal::ctrl_c() => "SIGINT",
            _ = terminate.recv() => "SIGTERM",
        };
        // The node's work stopped with its future; make everything it wrote
        // durable before the runtime and the database close.
        tracing::info!(signal, "stopping: flushing and syncing the database");
        env.disk()
            .flush_all()
            .context("cannot flush the database on the way out; the next start replays its log")?;
        if let Err(error) = write_status(&status_file, &status) {
            tracing::warn!(path = %status_file.display(), %error, "cannot write the last status");
        }
        tracing::info!(signal, "stopped cleanly");
        Ok(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("hm-node: {error:#}");
            failure_code(&error)
        }
    }
}

/// The log filter when neither `log` nor `HM_LOG` gives one.
const DEFAULT_LOG_FILTER: &str = "info,hickory_server=warn,hickory_net=warn";

/// Starts the HTTP API on `listen` (token from the data dir, made if
/// missing); it runs as long as the runtime.
async fn serve_http(
    listen: SocketAddrV6,
    data_dir: &Path,
    status: StatusHandle,
    traffic: hm_host::NetTraffic,
) -> anyhow::Result<()> {
    let token = hm_host::http::load_or_create_token(data_dir)?;
    let router = hm_host::http::router(status, &token, data_dir, traffic);
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| {
        format!("cannot serve the HTTP API on `api_listen` = \"{listen}\"; pick a free port or remove api_listen")
    })?;
    tracing::info!(%listen, "serving the HTTP API (JSON under /v1, /metrics)");
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, router).await {
            tracing::error!(%error, "the HTTP API stopped; the node runs on without it");
        }
    });
    Ok(())
}

/// Starts the DNS front-end on `dns.listen`, answering from the node's
/// committed state (through `status`); it runs as long as the runtime.
fn serve_dns(dns: &DnsFrontEnd, status: StatusHandle) -> anyhow::Result<()> {
    let authority = ZoneAuthority::new(&dns.zone, dns.name.as_ref(), status)
        .with_context(|| format!("cannot serve the zone {}", dns.zone))?;
    let server = DnsServer::bind(dns.listen, authority).with_context(|| {
        format!(
            "cannot serve DNS on `chain.trust.dns_listen` = \"{}\"; pick a free port or remove dns_listen",
            dns.listen
        )
    })?;
    tracing::info!(listen = %server.local_addr(), zone = %dns.zone, "serving DNS for the zone");
    tokio::spawn(async move {
        if let Err(error) = server.run().await {
            tracing::error!(%error, "the DNS front-end stopped; the node runs on without it");
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trust(text: &str) -> anyhow::Result<(TrustSettings, Option<SocketAddrV6>)> {
        let file: TrustFileConfig = toml::from_str(text)?;
        load_trust(&file)
    }

    fn error(text: &str) -> String {
        format!("{:#}", trust(text).expect_err("refused"))
    }

    #[test]
    fn trust_section_defaults_and_mapping() {
        let (settings, dns) = trust("").expect("defaults");
        assert_eq!(settings.zone.as_str(), hm_node::DEFAULT_ZONE);
        assert_eq!(settings.name, None);
        assert_eq!(settings.certificate_validity_ms, 86_400_000);
        assert_eq!(settings.renew_at_per_mille, 500);
        assert_eq!(settings.chain_live_window_ms, 30_000);
        assert_eq!(dns, None);
        let (settings, dns) = trust(
            "zone = \"Mesh\"\nname = \"node0.mesh.\"\ncertificate_validity_s = 120\nrenew_at = 0.25\nchain_live_window_s = 5\ndns_listen = \"[::1]:5353\"\n",
        )
        .expect("valid");
        assert_eq!(settings.zone.as_str(), "mesh");
        assert_eq!(
            settings.name.as_ref().map(DnsName::as_str),
            Some("node0.mesh")
        );
        assert_eq!(settings.certificate_validity_ms, 120_000);
        assert_eq!(settings.renew_at_per_mille, 250);
        assert_eq!(settings.chain_live_window_ms, 5_000);
        assert_eq!(dns.map(|addr| addr.port()), Some(5353));
    }

    #[test]
    fn trust_section_errors_name_the_key_and_what_is_expected() {
        assert!(error("zone = \"a_b\"").contains("`chain.trust.zone`"));
        let outside = error("name = \"node0.other\"");
        assert!(
            outside.contains("`chain.trust.name`") && outside.contains("not under the zone"),
            "{outside}"
        );
        assert!(error("certificate_validity_s = 0").contains("between 1 and 2592000"));
        assert!(error("certificate_validity_s = 2592001").contains("certificate_validity_s"));
        for renew_at in ["0.0", "1.0", "-0.5", "nan"] {
            let message = error(&format!("renew_at = {renew_at}"));
            assert!(message.contains("`chain.trust.renew_at`"), "{message}");
        }
        assert!(error("chain_live_window_s = 0").contains("chain_live_window_s"));
        assert!(error("dns_listen = \"127.0.0.1:53\"").contains("IPv6-only"));
        assert!(error("dns_listen = \"nowhere\"").contains("`chain.trust.dns_listen`"));
        assert!(error("dns_port = 53").contains("unknown field `dns_port`"));
    }

    fn config(text: &str) -> anyhow::Result<LoadedConfig> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("node.toml");
        std::fs::write(&path, text)?;
        load_config(&path)
    }

    #[test]
    fn the_init_template_is_a_valid_commented_config() {
        let listen: SocketAddrV6 = "[::1]:7000".parse().expect("addr");
        let text = config_template(Path::new("/var/lib/hm/node0"), listen);
        let file: FileConfig = toml::from_str(&text).expect("the template parses");
        assert_eq!(file.listen, "[::1]:7000");
        assert_eq!(file.api_listen.as_deref(), Some("[::1]:7100"));
        assert!(file.chain.is_none());
        // Uncommenting the chain sections gives a config that parses too.
        let uncommented: String = text
            .lines()
            .map(|line| {
                let key_or_table = line.trim_start_matches("# ");
                let starts = |prefix: &str| key_or_table.starts_with(prefix);
                if line.starts_with("# ")
                    && (starts("[chain")
                        || [
                            "genesis",
                            "validators",
                            "block_",
                            "propose_",
                            "workload_",
                            "role ",
                            "zone",
                            "name ",
                            "certificate_",
                            "renew_at",
                            "chain_live",
                            "dns_listen",
                        ]
                        .iter()
                        .any(|key| starts(key)))
                {
                    key_or_table.to_string()
                } else {
                    line.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        let file: FileConfig = toml::from_str(&uncommented).expect("the chain sections parse");
        let chain = file.chain.expect("a chain section");
        assert!(chain.trust.is_some(), "{uncommented}");
    }

    /// A directory with a one-validator genesis (`genesis.bin`); the
    /// validator's node id.
    fn chain_dir() -> (tempfile::TempDir, Hash) {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = hm_wire::SigningKey::generate(&OsEntropy).verifying_key();
        write_genesis(
            &dir.path().join("genesis.bin"),
            "role-test",
            &[(key.clone(), 1)],
            ProofParams::for_simulation(),
        )
        .expect("genesis");
        (dir, key.fingerprint())
    }

    /// Loads a config with a `[chain]` section: `chain` is its body after
    /// `genesis` and `validators`; `trust` the `[chain.trust]` body, if any.
    fn chain_config(
        dir: &Path,
        validator: &Hash,
        chain: &str,
        trust: Option<&str>,
    ) -> anyhow::Result<LoadedConfig> {
        let trust = trust.map_or(String::new(), |trust| format!("[chain.trust]\n{trust}\n"));
        let text = format!(
            "data_dir = \"d\"\nlisten = \"[::1]:7000\"\n\n[chain]\ngenesis = \"genesis.bin\"\nvalidators = [{{ id = \"{}\", addr = \"[::1]:7001\" }}]\n{chain}\n{trust}",
            validator.to_hex()
        );
        let path = dir.join("node.toml");
        std::fs::write(&path, text)?;
        load_config(&path)
    }

    fn chain_error(dir: &Path, validator: &Hash, chain: &str, trust: Option<&str>) -> String {
        format!(
            "{:#}",
            chain_config(dir, validator, chain, trust)
                .err()
                .expect("refused")
        )
    }

    #[test]
    fn role_defaults_to_replica_and_a_light_node_takes_its_full_nodes() {
        let (dir, validator) = chain_dir();
        let loaded = chain_config(dir.path(), &validator, "", None).expect("a replica");
        let chain = loaded.node.chain.expect("a chain");
        assert_eq!(chain.role, NodeRole::Replica);
        assert!(chain.full_nodes.is_empty());
        let loaded = chain_config(
            dir.path(),
            &validator,
            "role = \"replica\"\nblock_interval_ms = 200",
            None,
        )
        .expect("a replica, said");
        let chain = loaded.node.chain.expect("a chain");
        assert_eq!(chain.role, NodeRole::Replica);
        assert_eq!(chain.replica.block_interval_ms, 200);

        let loaded = chain_config(
            dir.path(),
            &validator,
            "role = \"light\"\nfull_nodes = [\"[::1]:7001\", \"[2001:db8::1]:7000\"]",
            Some("zone = \"mesh\"\nname = \"light0.mesh\""),
        )
        .expect("a light node");
        let chain = loaded.node.chain.expect("a chain");
        assert_eq!(chain.role, NodeRole::Light);
        assert_eq!(
            chain.full_nodes,
            vec![
                "[::1]:7001".parse::<SocketAddrV6>().expect("addr"),
                "[2001:db8::1]:7000".parse().expect("addr"),
            ]
        );
        assert!(chain.trust.is_some());
        // Without full_nodes it asks the validators (the node library's
        // default): the config is valid as it is.
        let loaded = chain_config(
            dir.path(),
            &validator,
            "role = \"light\"",
            Some("zone = \"mesh\""),
        )
        .expect("a light node asking the validators");
        let chain = loaded.node.chain.expect("a chain");
        assert!(chain.full_nodes.is_empty());
        assert_eq!(chain.validator_addrs.len(), 1);
    }

    #[test]
    fn role_errors_say_what_is_wrong_and_what_to_do() {
        let (dir, validator) = chain_dir();
        let dir = dir.path();
        let trust = Some("zone = \"mesh\"");
        let unknown = chain_error(dir, &validator, "role = \"archive\"", trust);
        assert!(
            unknown.contains("archive")
                && unknown.contains("`replica`")
                && unknown.contains("`light`"),
            "{unknown}"
        );
        let no_trust = chain_error(dir, &validator, "role = \"light\"", None);
        assert!(
            no_trust.contains("needs a [chain.trust] section")
                && no_trust.contains("zone = \"mesh\""),
            "{no_trust}"
        );
        for key in [
            "block_interval_ms = 200",
            "propose_timeout_ms = 1000",
            "workload_interval_ms = 50",
        ] {
            let message = chain_error(dir, &validator, &format!("role = \"light\"\n{key}"), trust);
            let name = key.split(' ').next().expect("a key");
            assert!(
                message.contains(&format!("`chain.{name}` is a replica's"))
                    && message.contains(&format!("remove `{name}`")),
                "{message}"
            );
        }
        let dns = chain_error(
            dir,
            &validator,
            "role = \"light\"",
            Some("zone = \"mesh\"\ndns_listen = \"[::1]:5353\""),
        );
        assert!(
            dns.contains("`chain.trust.dns_listen`") && dns.contains("remove `dns_listen`"),
            "{dns}"
        );
        let ipv4 = chain_error(
            dir,
            &validator,
            "role = \"light\"\nfull_nodes = [\"127.0.0.1:7000\"]",
            trust,
        );
        assert!(
            ipv4.contains("`chain.full_nodes[]`") && ipv4.contains("IPv6-only"),
            "{ipv4}"
        );
        let replica = chain_error(dir, &validator, "full_nodes = [\"[::1]:7001\"]", trust);
        assert!(
            replica.contains("`chain.full_nodes` is for light nodes")
                && replica.contains("role = \"light\""),
            "{replica}"
        );
    }

    #[test]
    fn a_genesis_validator_cannot_run_as_a_light_node() {
        let (dir, validator) = chain_dir();
        let light = chain_config(
            dir.path(),
            &validator,
            "role = \"light\"",
            Some("zone = \"mesh\""),
        )
        .expect("the config itself is valid")
        .node
        .chain
        .expect("a chain");
        let refusal = check_light_is_no_validator(&light, &validator)
            .expect_err("a validator must replicate")
            .to_string();
        assert!(
            refusal.contains("a validator must replicate")
                && refusal.contains(&validator.to_hex())
                && refusal.contains("role = \"replica\""),
            "{refusal}"
        );
        // Refused configurations exit 2 (the systemd unit does not restart).
        assert_eq!(
            failure_code(&anyhow::Error::new(RefusedConfig(refusal))),
            ExitCode::from(2)
        );
        let other = hm_wire::SigningKey::generate(&OsEntropy)
            .verifying_key()
            .fingerprint();
        assert!(check_light_is_no_validator(&light, &other).is_ok());
        let replica = chain_config(dir.path(), &validator, "", None)
            .expect("valid")
            .node
            .chain
            .expect("a chain");
        assert!(check_light_is_no_validator(&replica, &validator).is_ok());
    }

    #[test]
    fn api_listen_is_an_ipv6_address_apart_from_dns() {
        let base = "data_dir = \"d\"\nlisten = \"[::1]:7000\"\n";
        assert_eq!(config(base).expect("valid").api_listen, None);
        let loaded = config(&format!("{base}api_listen = \"[::1]:8080\"\n")).expect("valid");
        assert_eq!(loaded.api_listen.map(|addr| addr.port()), Some(8080));
        let ipv4 = format!(
            "{:#}",
            config(&format!("{base}api_listen = \"127.0.0.1:8080\"\n"))
                .err()
                .expect("refused")
        );
        assert!(
            ipv4.contains("`api_listen`") && ipv4.contains("IPv6-only"),
            "{ipv4}"
        );
        let junk = format!(
            "{:#}",
            config(&format!("{base}api_listen = \"web\"\n"))
                .err()
                .expect("refused")
        );
        assert!(junk.contains("`api_listen`"), "{junk}");
    }
}
