//! `hm-node` — the production HyperMesh node on real backends.
//!
//! ```text
//! hm-node --config node.toml
//! ```
//!
//! The config names the data dir, the IPv6 listen address and the seed list.
//! The node keeps its identity and incarnation in the data dir's RocksDB and
//! writes a status snapshot (JSON) to `status_file` twice a second, which the
//! integration tests and, for now, operators read.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // a binary on the real OS

use std::net::{SocketAddr, SocketAddrV6};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use hm_host::HostEnv;
use hm_node::{NodeConfig, StatusHandle};
use serde::Deserialize;

/// Largest config file read.
const CONFIG_BYTES_MAX: u64 = 1 << 20;
/// Most seeds a config may list.
const SEEDS_MAX: usize = 1024;

#[derive(Parser)]
#[command(name = "hm-node", about = "Run a HyperMesh node")]
struct Cli {
    /// The node's TOML config file.
    #[arg(long)]
    config: PathBuf,
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
    Ok((
        NodeConfig::new(listen, seeds),
        file.data_dir,
        status_file,
        file.log,
    ))
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
    let (config, data_dir, status_file, log) = match load_config(&cli.config) {
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
