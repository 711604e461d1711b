//! `hm-node` — the production HyperMesh node on real backends.
//!
//! ```text
//! hm-node init --data-dir DIR            # create the identity, print node id and public key
//! hm-node genesis --out genesis.bin --chain-name NAME --validator PUBKEY_HEX:STAKE ...
//! hm-node --config node.toml             # run (also: hm-node run --config node.toml)
//! hm-node submit --to [::1]:7001 --put KEY=VALUE [--random N]   # through the node's API
//! hm-node get --to [::1]:7001 --key KEY  # committed key-value state
//! hm-node head --to [::1]:7001           # committed height and head hash
//! ```
//!
//! The config names the data dir, the IPv6 listen address and the seed list,
//! and optionally a `[chain]` section (genesis file, validator addresses).
//! The node keeps its identity and incarnation in the data dir's RocksDB and
//! writes a status snapshot (JSON) to `status_file` twice a second, which the
//! integration tests and, for now, operators read.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // a binary on the real OS

use std::net::{SocketAddr, SocketAddrV6};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use hm_host::HostEnv;
use hm_host::entropy::OsEntropy;
use hm_kernel::app::{KvOp, KvTx, KvWorkload};
use hm_kernel::genesis::{GENESIS_BYTES_MAX, Genesis, ProofParams};
use hm_node::{ApiClient, ApiRequest, ApiResponse, ChainConfig, NodeConfig, StatusHandle};
use hm_stoq::{Endpoint, SelfSignedVerifier, StoqConfig};
use hm_wire::{Hash, SigningKey, VerifyingKey};
use serde::Deserialize;
use std::sync::Arc;

/// Largest config file read.
const CONFIG_BYTES_MAX: u64 = 1 << 20;
/// Most seeds a config may list.
const SEEDS_MAX: usize = 1024;

#[derive(Parser)]
#[command(name = "hm-node", about = "Run a HyperMesh node")]
struct Cli {
    /// The node's TOML config file (runs the node).
    #[arg(long)]
    config: Option<PathBuf>,
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
}

/// How long a client waits for a node's API.
const API_TIMEOUT: Duration = Duration::from_secs(10);

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

fn init(data_dir: &Path) -> anyhow::Result<()> {
    let env = HostEnv::open(data_dir, hm_node::COLUMN_FAMILIES)
        .with_context(|| format!("cannot open the data dir {}", data_dir.display()))?;
    let key = hm_node::load_or_create_identity(&env)?;
    let public = key.verifying_key();
    println!("node_id {}", public.fingerprint().to_hex());
    println!("public_key {}", hex_encode(public.as_bytes()));
    Ok(())
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
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or(0);
    let (genesis, _) = Genesis::with_plots(chain_name, now_ms, &members, params)
        .context("cannot plot a validator's space")?;
    genesis.check().context("the genesis is invalid")?;
    std::fs::write(out, hm_wire::encode(&genesis))
        .with_context(|| format!("cannot write {}", out.display()))?;
    println!("chain_id {}", genesis.chain_id().to_hex());
    Ok(())
}

fn load_chain(config_path: &Path, chain: &ChainFileConfig) -> anyhow::Result<ChainConfig> {
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
    Ok(config)
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

fn load_config(path: &Path) -> anyhow::Result<(NodeConfig, PathBuf, PathBuf, Option<String>)> {
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
    if let Some(chain) = &file.chain {
        config.chain = Some(load_chain(path, chain)?);
    }
    Ok((config, file.data_dir, status_file, file.log))
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
    let config_path = match (cli.command, cli.config) {
        (Some(Command::Init { data_dir }), _) => return report(init(&data_dir)),
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
            return report(client(&to, |client| submit(client, puts, random)));
        }
        (Some(Command::Get { to, key }), _) => {
            return report(client(&to, |client| get(client, key)));
        }
        (Some(Command::Head { to }), _) => return report(client(&to, head)),
        (Some(Command::Run { config }), _) | (None, Some(config)) => config,
        (None, None) => {
            eprintln!(
                "hm-node: say what to do: `hm-node --config node.toml`, `hm-node init`, or `hm-node genesis` (see --help)"
            );
            return ExitCode::from(2);
        }
    };
    run(&config_path)
}

/// Connects to the API at `to` with a throwaway identity and runs `work`.
fn client<F, Fut>(to: &str, work: F) -> anyhow::Result<()>
where
    F: FnOnce(ApiClient) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let addr = parse_v6("--to", to)?;
    // A client keeps nothing: its database lives in a fresh temp dir,
    // removed once the runtime (and with it every handle on the database)
    // is gone.
    let data_dir = tempfile::Builder::new()
        .prefix("hm-node-client-")
        .tempdir()
        .context("cannot create a temp dir for the client")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(async {
        let env = HostEnv::open(data_dir.path(), hm_node::COLUMN_FAMILIES)
            .with_context(|| format!("cannot open {}", data_dir.path().display()))?;
        let key = SigningKey::generate(&OsEntropy);
        let bind = SocketAddrV6::new(std::net::Ipv6Addr::UNSPECIFIED, 0, 0, 0);
        let mut config = StoqConfig::new(bind);
        config.protocols = vec![hm_node::API_PROTOCOL.to_vec()];
        let endpoint = Endpoint::bind(&env, key, config, Arc::new(SelfSignedVerifier))
            .context("cannot open a STOQ endpoint")?;
        let client = ApiClient::connect(&endpoint, SocketAddr::V6(addr), API_TIMEOUT)
            .await
            .context("is the node running, and is --to its listen address?")?;
        let result = work(client).await;
        endpoint.close();
        result
    });
    drop(runtime);
    drop(data_dir);
    result
}

async fn submit(client: ApiClient, puts: Vec<String>, random: usize) -> anyhow::Result<()> {
    let base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos() as u64)
        .unwrap_or(0);
    let mut transactions = Vec::new();
    for (index, put) in puts.iter().enumerate() {
        let (key, value) = put
            .split_once('=')
            .with_context(|| format!("--put {put:?}: write KEY=VALUE"))?;
        let tx = KvTx {
            op: KvOp::Put {
                key: key.as_bytes().to_vec(),
                value: value.as_bytes().to_vec(),
            },
            nonce: base.wrapping_add(index as u64),
        };
        transactions.push(hm_node::app::kv_tx(tx.to_transaction()));
    }
    let mut workload = KvWorkload::new(1_024, 32, base ^ 0x5eed);
    for _ in 0..random {
        transactions.push(hm_node::app::kv_tx(workload.next_tx(&OsEntropy)));
    }
    if transactions.is_empty() {
        bail!("nothing to submit: give --put KEY=VALUE or --random N");
    }
    let mut refused = 0;
    for batch in transactions.chunks(hm_node::api::API_SUBMIT_TRANSACTIONS_MAX) {
        match client.call(&ApiRequest::Submit(batch.to_vec())).await? {
            ApiResponse::Submitted(outcomes) => {
                for outcome in outcomes {
                    match outcome {
                        Ok(id) => println!("submitted {}", id.to_hex()),
                        Err(reason) => {
                            refused += 1;
                            println!("refused {reason}");
                        }
                    }
                }
            }
            ApiResponse::Error(reason) => bail!("the node refused the submit: {reason}"),
            other => bail!("unexpected answer to a submit: {other:?}"),
        }
    }
    client.close();
    if refused > 0 {
        bail!("{refused} of {} transactions refused", transactions.len());
    }
    Ok(())
}

async fn get(client: ApiClient, key: String) -> anyhow::Result<()> {
    let answer = client
        .call(&ApiRequest::Get {
            key: key.into_bytes(),
        })
        .await?;
    client.close();
    match answer {
        ApiResponse::Value { height, value } => {
            match value {
                Some(value) => println!("value {}", String::from_utf8_lossy(&value)),
                None => println!("value (none)"),
            }
            println!("height {height}");
            Ok(())
        }
        ApiResponse::Error(reason) => bail!("the node refused: {reason}"),
        other => bail!("unexpected answer to a get: {other:?}"),
    }
}

async fn head(client: ApiClient) -> anyhow::Result<()> {
    let answer = client.call(&ApiRequest::Head).await?;
    client.close();
    match answer {
        ApiResponse::Head {
            height,
            head,
            validator,
        } => {
            println!("height {height}");
            println!(
                "head {}",
                head.map_or_else(|| "(genesis)".to_string(), |hash| hash.to_hex())
            );
            println!("validator {validator}");
            Ok(())
        }
        ApiResponse::Error(reason) => bail!("the node refused: {reason}"),
        other => bail!("unexpected answer to a head query: {other:?}"),
    }
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("hm-node: {error:#}");
            ExitCode::from(1)
        }
    }
}

fn run(config_path: &Path) -> ExitCode {
    let (config, data_dir, status_file, log) = match load_config(config_path) {
        Ok(loaded) => loaded,
        Err(error) => {
            eprintln!("hm-node: {error:#}");
            return ExitCode::from(2);
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("HM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(log.as_deref().unwrap_or("info")));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();

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
        tokio::select! {
            result = hm_node::run(env, config, status.clone()) => result.context("the node stopped"),
            _ = tokio::signal::ctrl_c() => {
                tracing::info!("interrupted; stopping");
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("hm-node: {error:#}");
            ExitCode::from(1)
        }
    }
}
