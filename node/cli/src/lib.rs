#![doc = include_str!("../README.md")]

use std::ffi::OsString;
use std::io::Write;
use std::net::{SocketAddr, SocketAddrV6};

use clap::{Parser, Subcommand};
use hm_client::api::{ApiEndpoint, ClientError, with_api_endpoint};
use hm_node::api::NodeSummary;
use hm_node::{ApiRequest, ApiResponse};
use hm_trustchain::dns::DnsRecord;
use hm_trustchain::name::DnsName;
use hm_wire::Hash;
use serde::Serialize;

pub mod ops;
mod proven;

/// Nodes one `hm status` may ask (each gets its own connection).
pub const STATUS_NODES_MAX: usize = 256;
/// Hex characters shown of a node id or fingerprint.
const SHORT_HEX: usize = 12;

#[derive(Parser)]
#[command(
    name = "hm",
    version,
    about = "The HyperMesh command-line client: ask running nodes through their API"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// One line per node: id, role, bootstrap phase, chain height,
    /// certificate, name, and what it lacks for the next phase.
    Status {
        /// A node's listen address, e.g. "[::1]:7000" (repeatable).
        #[arg(long = "to", value_name = "ADDR", required = true)]
        to: Vec<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// HyperMesh DNS.
    Dns {
        #[command(subcommand)]
        command: DnsCommand,
    },
    /// The peers a node knows: membership, overlay neighbours, chain links.
    Peers {
        /// The node to ask, e.g. "[::1]:7000".
        #[arg(long = "to", value_name = "ADDR")]
        to: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The committed chain.
    Chain {
        #[command(subcommand)]
        command: ChainCommand,
    },
    /// Transactions.
    Tx {
        #[command(subcommand)]
        command: TxCommand,
    },
    /// The committed key-value state.
    Kv {
        #[command(subcommand)]
        command: KvCommand,
    },
    /// Certificates in the node's committed transparency log.
    Cert {
        #[command(subcommand)]
        command: CertCommand,
    },
}

#[derive(Subcommand)]
enum ChainCommand {
    /// The committed height and head hash.
    Head {
        #[arg(long = "to", value_name = "ADDR")]
        to: String,
        #[arg(long)]
        json: bool,
    },
    /// A committed block's header at a glance.
    Block {
        /// The height, from 1.
        height: u64,
        #[arg(long = "to", value_name = "ADDR")]
        to: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum TxCommand {
    /// Submit key-value puts. "submitted" means the node admitted them to
    /// its mempool and passed them to the validators: not committed, and
    /// not durable (a crash of that node may lose them). `--wait` waits
    /// until each is in a committed block and prints the height.
    Submit {
        /// `KEY=VALUE` (repeatable).
        #[arg(long = "put", value_name = "KEY=VALUE", required = true)]
        puts: Vec<String>,
        #[arg(long = "to", value_name = "ADDR")]
        to: String,
        /// Wait until every admitted put is committed (or give up after
        /// `--timeout-s`, naming the ones still pending).
        #[arg(long)]
        wait: bool,
        #[arg(long = "timeout-s", value_name = "SECONDS", default_value_t = 60)]
        timeout_s: u64,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum KvCommand {
    /// A key's committed value, and the height it was read at.
    Get {
        #[arg(long)]
        key: String,
        #[arg(long = "to", value_name = "ADDR")]
        to: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum CertCommand {
    /// Renew the node's certificate through the chain now (from bootstrap
    /// phase 2); `hm cert show` shows the new one once it is committed.
    Renew {
        #[arg(long = "to", value_name = "ADDR")]
        to: String,
        #[arg(long)]
        json: bool,
    },
    /// A certificate: names, validity, issuer, log index, revocation.
    Show {
        /// The certificate's fingerprint (default: the node's own current one).
        #[arg(long)]
        fingerprint: Option<String>,
        #[arg(long = "to", value_name = "ADDR")]
        to: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum DnsCommand {
    /// A name's record in the node's committed state.
    Resolve {
        /// The name, e.g. "node2.mesh".
        name: String,
        /// The node to ask, e.g. "[::1]:7000".
        #[arg(long = "to", value_name = "ADDR")]
        to: String,
        /// Trust only this genesis (the network's genesis.bin): act as a
        /// light client, verify the node's headers by their commit
        /// certificates and accept the record only with a state proof.
        #[arg(long, value_name = "FILE")]
        genesis: Option<std::path::PathBuf>,
        /// With --genesis: refuse an answer whose proving header is older
        /// than this (a stale state served as current).
        #[arg(
            long,
            value_name = "SECONDS",
            default_value_t = 60,
            requires = "genesis"
        )]
        max_age_s: u64,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// Why a command failed; `Display` is the one sentence shown to the user.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad arguments, `--help` or `--version`: clap prints and exits.
    #[error("{0}")]
    Usage(clap::Error),
    #[error("{0}")]
    Client(#[from] ClientError),
    #[error("`{flag}` {text:?} is not an IPv6 socket address; write it like \"[::1]:7000\"")]
    BadAddress { flag: &'static str, text: String },
    #[error("{count} nodes given; `hm status` asks at most {STATUS_NODES_MAX} at once")]
    TooManyNodes { count: usize },
    #[error("{0}")]
    Arguments(String),
    #[error("{name:?} is not a DNS name ({reason}); write it like \"node2.mesh\"")]
    BadName { name: String, reason: String },
    #[error("{addr} refused: {reason}")]
    Refused { addr: SocketAddrV6, reason: String },
    #[error(
        "{addr} answered with {what}, not what was asked; is it a HyperMesh node of this version?"
    )]
    Unexpected {
        addr: SocketAddrV6,
        what: &'static str,
    },
    #[error(
        "{name} has no committed record on {addr}; check the name, or wait until the node that owns it registers it (bootstrap phase 2)"
    )]
    NotRegistered { name: DnsName, addr: SocketAddrV6 },
    #[error("{addr}'s answer is not proven, so it was not accepted: {why}. Ask another full node")]
    Unproven { addr: SocketAddrV6, why: String },
    #[error(
        "{name} has no record: proven absent at height {height}; check the name, or wait until its owner registers it (bootstrap phase 2)"
    )]
    ProvenAbsent { name: DnsName, height: u64 },
    #[error("{first}{}", more_nodes(*.more))]
    NodesFailed { first: Box<CliError>, more: usize },
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
    #[error("cannot encode the output as JSON: {0}")]
    Json(#[from] serde_json::Error),
}

fn more_nodes(more: usize) -> String {
    match more {
        0 => String::new(),
        1 => " (and 1 more node failed; see the table)".to_string(),
        more => format!(" (and {more} more nodes failed; see the table)"),
    }
}

/// Runs `hm` with `args` (the program name first), writing to `out`.
pub fn run<I, T>(args: I, out: &mut dyn Write) -> Result<(), CliError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = Cli::try_parse_from(args).map_err(CliError::Usage)?;
    match cli.command {
        Command::Status { to, json } => status(&to, json, out),
        Command::Dns {
            command:
                DnsCommand::Resolve {
                    name,
                    to,
                    genesis,
                    max_age_s,
                    json,
                },
        } => match genesis {
            Some(genesis) => proven::resolve_proven(
                &parse_name(&name)?,
                parse_addr("--to", &to)?,
                &genesis,
                max_age_s.saturating_mul(1_000),
                json,
                out,
            ),
            None => resolve(&name, &to, json, out),
        },
        Command::Peers { to, json } => ops::peers(&to, json, out),
        Command::Chain {
            command: ChainCommand::Head { to, json },
        } => ops::chain_head(&to, json, out),
        Command::Chain {
            command: ChainCommand::Block { height, to, json },
        } => ops::chain_block(height, &to, json, out),
        Command::Tx {
            command:
                TxCommand::Submit {
                    puts,
                    to,
                    wait,
                    timeout_s,
                    json,
                },
        } => ops::tx_submit(
            &puts,
            &to,
            wait.then_some(std::time::Duration::from_secs(timeout_s)),
            json,
            out,
        ),
        Command::Kv {
            command: KvCommand::Get { key, to, json },
        } => ops::kv_get(&key, &to, json, out),
        Command::Cert {
            command:
                CertCommand::Show {
                    fingerprint,
                    to,
                    json,
                },
        } => ops::cert_show(fingerprint.as_deref(), &to, json, out),
        Command::Cert {
            command: CertCommand::Renew { to, json },
        } => ops::cert_renew(&to, json, out),
    }
}

pub(crate) fn parse_addr(flag: &'static str, text: &str) -> Result<SocketAddrV6, CliError> {
    match text.trim().parse::<SocketAddr>() {
        Ok(SocketAddr::V6(addr)) if addr.ip().to_ipv4_mapped().is_none() => Ok(addr),
        _ => Err(CliError::BadAddress {
            flag,
            text: text.to_string(),
        }),
    }
}

pub(crate) fn short(hash: &Hash) -> String {
    let mut hex = hash.to_hex();
    hex.truncate(SHORT_HEX);
    hex
}

/// The name of an answer's kind, for errors.
pub(crate) fn kind(response: &ApiResponse) -> &'static str {
    hm_node::api::response_kind(response)
}

/// One request to the node at `addr` on its own connection.
pub(crate) async fn ask(
    endpoint: &ApiEndpoint,
    addr: SocketAddrV6,
    request: &ApiRequest,
) -> Result<ApiResponse, CliError> {
    let client = endpoint.connect(addr).await?;
    let answer = ApiEndpoint::call(&client, addr, request).await;
    client.close();
    match answer? {
        ApiResponse::Error(reason) => Err(CliError::Refused { addr, reason }),
        answer => Ok(answer),
    }
}

async fn ask_status(endpoint: &ApiEndpoint, addr: SocketAddrV6) -> Result<NodeSummary, CliError> {
    match ask(endpoint, addr, &ApiRequest::Status).await? {
        ApiResponse::Status(summary) => Ok(*summary),
        other => Err(CliError::Unexpected {
            addr,
            what: kind(&other),
        }),
    }
}

/// `hm status --json`: one object per node asked, in the order given.
#[derive(Debug, Serialize)]
struct StatusJson {
    addr: String,
    /// Why the node could not be asked (then every other field is null).
    error: Option<String>,
    node_id: Option<String>,
    validator: Option<bool>,
    phase: Option<u8>,
    height: Option<u64>,
    head: Option<String>,
    certificate: Option<String>,
    certificate_chain_issued: Option<bool>,
    name: Option<String>,
    missing_for_next_phase: Option<String>,
    log_size: Option<u64>,
}

impl StatusJson {
    fn new(addr: SocketAddrV6, answer: &Result<NodeSummary, CliError>) -> StatusJson {
        let summary = answer.as_ref().ok();
        StatusJson {
            addr: addr.to_string(),
            error: answer.as_ref().err().map(ToString::to_string),
            node_id: summary.map(|summary| summary.node_id.to_hex()),
            validator: summary.map(|summary| summary.validator),
            phase: summary.map(|summary| summary.phase),
            height: summary.map(|summary| summary.height),
            head: summary.and_then(|summary| summary.head.map(|head| head.to_hex())),
            certificate: summary.and_then(|summary| summary.certificate.map(|cert| cert.to_hex())),
            certificate_chain_issued: summary.map(|summary| summary.certificate_chain_issued),
            name: summary.and_then(|summary| summary.name.clone()),
            missing_for_next_phase: summary
                .and_then(|summary| summary.missing_for_next_phase.clone()),
            log_size: summary.map(|summary| summary.log_size),
        }
    }
}

const STATUS_HEADER: [&str; 8] = [
    "ADDRESS",
    "NODE",
    "ROLE",
    "PHASE",
    "HEIGHT",
    "CERTIFICATE",
    "NAME",
    "MISSING FOR NEXT PHASE",
];

/// One table row: the columns of [`STATUS_HEADER`].
fn status_row(addr: SocketAddrV6, answer: &Result<NodeSummary, CliError>) -> Vec<String> {
    let summary = match answer {
        Ok(summary) => summary,
        Err(CliError::Client(ClientError::Unreachable { .. })) => {
            return row_without_summary(addr, "unreachable".into());
        }
        Err(error) => return row_without_summary(addr, format!("error: {error}")),
    };
    let certificate = match &summary.certificate {
        Some(fingerprint) if summary.certificate_chain_issued => {
            format!("{} (chain)", short(fingerprint))
        }
        Some(fingerprint) => format!("{} (authority)", short(fingerprint)),
        None => "-".into(),
    };
    vec![
        addr.to_string(),
        short(&summary.node_id),
        if summary.validator {
            "validator"
        } else if summary.light {
            "light"
        } else {
            "follower"
        }
        .into(),
        summary.phase.to_string(),
        summary.height.to_string(),
        certificate,
        summary.name.clone().unwrap_or_else(|| "-".into()),
        summary
            .missing_for_next_phase
            .clone()
            .unwrap_or_else(|| "-".into()),
    ]
}

fn row_without_summary(addr: SocketAddrV6, note: String) -> Vec<String> {
    let mut row = vec![addr.to_string()];
    row.extend(std::iter::repeat_n(
        "-".to_string(),
        STATUS_HEADER.len() - 2,
    ));
    row.push(note);
    row
}

/// Left-aligned columns two spaces apart; the last column is not padded.
pub(crate) fn write_table(out: &mut dyn Write, rows: &[Vec<String>]) -> std::io::Result<()> {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|column| {
            rows.iter()
                .filter_map(|row| row.get(column))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        let mut line = String::new();
        for (column, cell) in row.iter().enumerate() {
            if column + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  ", width = widths[column]));
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

fn status(to: &[String], json: bool, out: &mut dyn Write) -> Result<(), CliError> {
    if to.len() > STATUS_NODES_MAX {
        return Err(CliError::TooManyNodes { count: to.len() });
    }
    let addrs = to
        .iter()
        .map(|text| parse_addr("--to", text))
        .collect::<Result<Vec<_>, _>>()?;
    let answers: Vec<Result<NodeSummary, CliError>> = with_api_endpoint(|endpoint| {
        let addrs = addrs.clone();
        async move {
            let asks = addrs.iter().map(|addr| ask_status(&endpoint, *addr));
            Ok::<_, CliError>(futures::future::join_all(asks).await)
        }
    })?;
    if json {
        let rows: Vec<StatusJson> = addrs
            .iter()
            .zip(&answers)
            .map(|(addr, answer)| StatusJson::new(*addr, answer))
            .collect();
        serde_json::to_writer_pretty(&mut *out, &rows)?;
        writeln!(out)?;
    } else {
        let mut rows = vec![STATUS_HEADER.iter().map(ToString::to_string).collect()];
        rows.extend(
            addrs
                .iter()
                .zip(&answers)
                .map(|(addr, answer)| status_row(*addr, answer)),
        );
        write_table(out, &rows)?;
    }
    let mut failures = answers.into_iter().filter_map(Result::err);
    match failures.next() {
        None => Ok(()),
        Some(first) => Err(CliError::NodesFailed {
            first: Box::new(first),
            more: failures.count(),
        }),
    }
}

/// `hm dns resolve --json`.
#[derive(Debug, Serialize)]
pub(crate) struct RecordJson {
    name: String,
    found: bool,
    addrs: Vec<String>,
    owner: Option<String>,
    certificate: Option<String>,
    sequence: Option<u64>,
    updated_height: Option<u64>,
    registered_ms: Option<u64>,
}

impl RecordJson {
    pub(crate) fn new(name: &DnsName, record: Option<&DnsRecord>) -> RecordJson {
        RecordJson {
            name: name.to_string(),
            found: record.is_some(),
            addrs: record.map_or_else(Vec::new, |record| {
                record.addrs.iter().map(ToString::to_string).collect()
            }),
            owner: record.map(|record| record.owner.to_hex()),
            certificate: record.map(|record| record.certificate.to_hex()),
            sequence: record.map(|record| record.sequence),
            updated_height: record.map(|record| record.updated_height),
            registered_ms: record.map(|record| record.registered_ms),
        }
    }
}

fn parse_name(name: &str) -> Result<DnsName, CliError> {
    DnsName::parse(name).map_err(|error| CliError::BadName {
        name: name.to_string(),
        reason: error.to_string(),
    })
}

fn resolve(name: &str, to: &str, json: bool, out: &mut dyn Write) -> Result<(), CliError> {
    let name = parse_name(name)?;
    let addr = parse_addr("--to", to)?;
    let request = ApiRequest::Resolve {
        name: name.to_string(),
    };
    // A full node answers from its committed state; a light node proves
    // the record against a certified header first and says which.
    let (record, proven) = with_api_endpoint(|endpoint| async move {
        match ask(&endpoint, addr, &request).await? {
            ApiResponse::Record(record) => Ok((record.map(|record| *record), None)),
            ApiResponse::ProvenRecord {
                record,
                height,
                header_hash,
            } => Ok((record.map(|record| *record), Some((height, header_hash)))),
            other => Err(CliError::Unexpected {
                addr,
                what: kind(&other),
            }),
        }
    })?;
    if json {
        let mut value = serde_json::to_value(RecordJson::new(&name, record.as_ref()))?;
        if let (Some((height, header_hash)), Some(object)) = (proven, value.as_object_mut()) {
            object.insert("proven_height".into(), height.into());
            object.insert("proven_header".into(), header_hash.to_hex().into());
        }
        serde_json::to_writer_pretty(&mut *out, &value)?;
        writeln!(out)?;
    }
    let Some(record) = record else {
        return Err(CliError::NotRegistered { name, addr });
    };
    if !json {
        write_record(out, &record)?;
        if let Some((height, header_hash)) = proven {
            writeln!(
                out,
                "proven by the light node: state proof against header {} at height {height}",
                short(&header_hash)
            )?;
        }
    }
    Ok(())
}

/// A record as `hm dns resolve` prints it: its addresses, then its owner.
pub(crate) fn write_record(out: &mut dyn Write, record: &DnsRecord) -> std::io::Result<()> {
    for ip in &record.addrs {
        writeln!(out, "{} AAAA {ip}", record.name)?;
    }
    writeln!(
        out,
        "owner {}  certificate {}  sequence {}  height {}",
        short(&record.owner),
        short(&record.certificate),
        record.sequence,
        record.updated_height
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_text(args: &[&str]) -> (Result<(), CliError>, String) {
        let mut out = Vec::new();
        let result = run(args.iter().copied(), &mut out);
        (result, String::from_utf8(out).expect("utf-8"))
    }

    #[test]
    fn arguments_are_checked_before_any_network_use() {
        let (result, _) = run_text(&["hm", "status", "--to", "127.0.0.1:7000"]);
        let error = result.expect_err("IPv4 refused").to_string();
        assert!(error.contains("[::1]:7000"), "{error}");
        let (result, _) = run_text(&["hm", "dns", "resolve", "bad_name", "--to", "[::1]:7000"]);
        let error = result.expect_err("bad name").to_string();
        assert!(error.contains("not a DNS name"), "{error}");
        let (result, _) = run_text(&["hm", "status"]);
        assert!(matches!(result, Err(CliError::Usage(_))));
        // The newer commands check their own arguments the same way.
        for (args, expected) in [
            (
                &["hm", "tx", "submit", "--put", "nokey", "--to", "[::1]:1"][..],
                "has no `=`",
            ),
            (
                &["hm", "tx", "submit", "--put", "=v", "--to", "[::1]:1"][..],
                "empty key",
            ),
            (
                &[
                    "hm",
                    "cert",
                    "show",
                    "--fingerprint",
                    "zz",
                    "--to",
                    "[::1]:1",
                ][..],
                "not 64 hex digits",
            ),
            (&["hm", "peers", "--to", "localhost"][..], "[::1]:7000"),
            (
                &["hm", "chain", "head", "--to", "10.0.0.1:1"][..],
                "[::1]:7000",
            ),
        ] {
            let (result, _) = run_text(args);
            let error = result.expect_err("refused before the network").to_string();
            assert!(error.contains(expected), "{args:?}: {error}");
        }
        let (result, _) = run_text(&["hm", "chain", "block", "x", "--to", "[::1]:1"]);
        assert!(matches!(result, Err(CliError::Usage(_))));
    }

    #[test]
    #[allow(clippy::disallowed_types)] // finds a free port on the real OS
    fn an_unreachable_node_is_one_sentence_that_says_what_to_do() {
        // A port nobody listens on: the QUIC handshake gets no answer.
        let socket = std::net::UdpSocket::bind("[::1]:0").expect("bind");
        let port = socket.local_addr().expect("addr").port();
        drop(socket);
        let to = format!("[::1]:{port}");
        let (result, out) = run_text(&["hm", "status", "--to", &to]);
        let error = result.expect_err("nobody there").to_string();
        assert!(
            error.starts_with(&format!("cannot reach {to}: is the node running")),
            "{error}"
        );
        assert!(error.contains("hm-node run --config"), "{error}");
        assert!(out.contains("unreachable"), "{out}");
    }

    #[test]
    fn the_table_lines_up() {
        let mut out = Vec::new();
        let rows = vec![
            vec!["A".to_string(), "BB".into(), "last".into()],
            vec!["CCC".to_string(), "D".into(), "x".into()],
        ];
        write_table(&mut out, &rows).expect("write");
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            "A    BB  last\nCCC  D   x\n"
        );
    }
}
