//! The commands that ask one node about one thing: `hm peers`,
//! `hm chain head|block N`, `hm tx submit`, `hm kv get`, `hm cert
//! show|renew`. `hm-node submit|get|head` run these too.

use std::io::Write;
use std::net::SocketAddrV6;

use hm_client::OsEntropy;
use hm_client::api::with_api_endpoint;
use hm_env::Entropy as _;
use hm_node::api::{API_STATUS_IDS_MAX, API_SUBMIT_TRANSACTIONS_MAX};
use hm_node::{ApiRequest, ApiResponse};
use hm_wire::Hash;
use serde::Serialize;

use crate::{CliError, ask, kind, parse_addr, short, write_table};

/// Most `--put`s one `hm tx submit` takes.
pub const PUTS_MAX: usize = 1_000;

/// Asks the node at `to` one request and hands the answer to `accept`,
/// which picks the expected kind out of it.
fn ask_one<T>(
    to: &str,
    request: ApiRequest,
    accept: impl FnOnce(ApiResponse) -> Result<T, ApiResponse>,
) -> Result<(SocketAddrV6, T), CliError> {
    let addr = parse_addr("--to", to)?;
    let answer = with_api_endpoint(|endpoint| async move { ask(&endpoint, addr, &request).await })?;
    match accept(answer) {
        Ok(value) => Ok((addr, value)),
        Err(other) => Err(CliError::Unexpected {
            addr,
            what: kind(&other),
        }),
    }
}

fn write_json<T: Serialize>(out: &mut dyn Write, value: &T) -> Result<(), CliError> {
    serde_json::to_writer_pretty(&mut *out, value)?;
    writeln!(out)?;
    Ok(())
}

fn yes_no(value: bool) -> String {
    if value { "yes" } else { "-" }.to_string()
}

/// `hm peers`.
pub fn peers(to: &str, json: bool, out: &mut dyn Write) -> Result<(), CliError> {
    let (_, peers) = ask_one(to, ApiRequest::Peers, |answer| match answer {
        ApiResponse::Peers(peers) => Ok(peers),
        other => Err(other),
    })?;
    if json {
        return write_json(out, &peers);
    }
    let mut rows = vec![
        ["NODE", "ROLE", "MEMBER", "OVERLAY", "CHAIN LINK"]
            .map(String::from)
            .to_vec(),
    ];
    for peer in &peers {
        rows.push(vec![
            short(&peer.node_id),
            if peer.validator {
                "validator"
            } else {
                "follower"
            }
            .into(),
            yes_no(peer.member),
            yes_no(peer.overlay),
            yes_no(peer.chain_link),
        ]);
    }
    write_table(out, &rows)?;
    writeln!(out, "{} peers", peers.len())?;
    Ok(())
}

/// `hm chain head`.
pub fn chain_head(to: &str, json: bool, out: &mut dyn Write) -> Result<(), CliError> {
    let (_, (height, head, validator)) = ask_one(to, ApiRequest::Head, |answer| match answer {
        ApiResponse::Head {
            height,
            head,
            validator,
        } => Ok((height, head, validator)),
        other => Err(other),
    })?;
    if json {
        #[derive(Serialize)]
        struct HeadJson {
            height: u64,
            head: Option<String>,
            validator: bool,
        }
        return write_json(
            out,
            &HeadJson {
                height,
                head: head.map(|head| head.to_hex()),
                validator,
            },
        );
    }
    let head = head.map_or_else(|| "-".to_string(), |head| head.to_hex());
    writeln!(out, "height {height}\nhead {head}")?;
    Ok(())
}

/// `hm kv get`: prints `value <text>` (or `value (none)`) and `height N`.
pub fn kv_get(key: &str, to: &str, json: bool, out: &mut dyn Write) -> Result<(), CliError> {
    let request = ApiRequest::Get {
        key: key.as_bytes().to_vec(),
    };
    let (_, (height, value)) = ask_one(to, request, |answer| match answer {
        ApiResponse::Value { height, value } => Ok((height, value)),
        other => Err(other),
    })?;
    let value = value.map(|bytes| String::from_utf8_lossy(&bytes).into_owned());
    if json {
        #[derive(Serialize)]
        struct ValueJson<'a> {
            key: &'a str,
            value: Option<String>,
            height: u64,
        }
        return write_json(out, &ValueJson { key, value, height });
    }
    writeln!(
        out,
        "value {}\nheight {height}",
        value.as_deref().unwrap_or("(none)")
    )?;
    Ok(())
}

/// `hm chain block N`.
pub fn chain_block(height: u64, to: &str, json: bool, out: &mut dyn Write) -> Result<(), CliError> {
    let (_, block) = ask_one(to, ApiRequest::Block { height }, |answer| match answer {
        ApiResponse::Block(block) => Ok(*block),
        other => Err(other),
    })?;
    if json {
        return write_json(out, &block);
    }
    writeln!(out, "height {}  round {}", block.height, block.round)?;
    writeln!(out, "hash {}", block.hash.to_hex())?;
    writeln!(out, "previous {}", block.previous_hash.to_hex())?;
    writeln!(out, "state_root {}", block.state_root.to_hex())?;
    writeln!(
        out,
        "time_ms {}  transactions {}  evidence {}  log_size {}  bytes {}",
        block.timestamp_ms, block.transactions, block.evidence, block.log_size, block.encoded_bytes
    )?;
    Ok(())
}

/// How often `hm tx submit --wait` asks where its transactions stand.
const WAIT_POLL: std::time::Duration = std::time::Duration::from_millis(250);

/// Where one admitted transaction ended up after `--wait`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Waited {
    Committed(u64),
    /// Still in the node's mempool when the wait ran out.
    Pending,
    /// Gone from the node's mempool without a commit there (that node
    /// restarted, or dropped it): it may still commit through another
    /// node, but nothing holds it here.
    Dropped,
}

/// `hm tx submit --put KEY=VALUE … [--wait]`: key-value transactions, each
/// with a random nonce (so the same put submitted twice is two
/// transactions). Without `wait`, "submitted" means admitted to the node's
/// mempool: not committed and not durable. With it, the command returns
/// once every admitted transaction is committed, or fails after the
/// timeout naming those still pending or dropped.
pub fn tx_submit(
    puts: &[String],
    to: &str,
    wait: Option<std::time::Duration>,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    if puts.is_empty() {
        return Err(CliError::Arguments(
            "nothing to submit; give --put KEY=VALUE (repeatable)".into(),
        ));
    }
    if puts.len() > PUTS_MAX {
        return Err(CliError::Arguments(format!(
            "{} puts; one `hm tx submit` takes at most {PUTS_MAX}",
            puts.len()
        )));
    }
    let mut transactions = Vec::with_capacity(puts.len());
    for put in puts {
        let (key, value) = put.split_once('=').ok_or_else(|| {
            CliError::Arguments(format!(
                "--put {put:?} has no `=`; write it like greeting=hello"
            ))
        })?;
        if key.is_empty() {
            return Err(CliError::Arguments(format!(
                "--put {put:?} has an empty key; write it like greeting=hello"
            )));
        }
        let mut nonce = [0u8; 8];
        OsEntropy.fill_bytes(&mut nonce);
        transactions.push(hm_node::app::kv_put(
            key.as_bytes(),
            value.as_bytes(),
            u64::from_le_bytes(nonce),
        ));
    }
    let addr = parse_addr("--to", to)?;
    let (outcomes, waited) = with_api_endpoint(|endpoint| async move {
        let mut outcomes: Vec<Result<Hash, String>> = Vec::with_capacity(transactions.len());
        for batch in transactions.chunks(API_SUBMIT_TRANSACTIONS_MAX) {
            match ask(&endpoint, addr, &ApiRequest::Submit(batch.to_vec())).await? {
                ApiResponse::Submitted(answers) => outcomes.extend(answers),
                other => {
                    return Err(CliError::Unexpected {
                        addr,
                        what: kind(&other),
                    });
                }
            }
        }
        let waited = match wait {
            None => Vec::new(),
            Some(timeout) => {
                let ids: Vec<Hash> = outcomes
                    .iter()
                    .filter_map(|o| o.as_ref().ok())
                    .copied()
                    .collect();
                wait_for_commits(&endpoint, addr, &ids, timeout).await?
            }
        };
        Ok((outcomes, waited))
    })?;
    let refused = outcomes.iter().filter(|outcome| outcome.is_err()).count();
    // The wait's verdicts, in the order of the admitted puts.
    let mut verdicts = waited.iter().copied();
    let rows: Vec<(&String, &Result<Hash, String>, Option<Waited>)> = puts
        .iter()
        .zip(&outcomes)
        .map(|(put, outcome)| {
            let verdict = if outcome.is_ok() {
                verdicts.next()
            } else {
                None
            };
            (put, outcome, verdict)
        })
        .collect();
    if json {
        #[derive(Serialize)]
        struct OutcomeJson {
            put: String,
            id: Option<String>,
            /// "submitted" (in the node's mempool), "committed", "pending"
            /// (still in the mempool when the wait ran out), "dropped" or
            /// "refused".
            status: &'static str,
            height: Option<u64>,
            refused: Option<String>,
        }
        let rows: Vec<OutcomeJson> = rows
            .iter()
            .map(|(put, outcome, verdict)| OutcomeJson {
                put: (*put).clone(),
                id: outcome.as_ref().ok().map(Hash::to_hex),
                status: match (outcome, verdict) {
                    (Err(_), _) => "refused",
                    (Ok(_), None) => "submitted",
                    (Ok(_), Some(Waited::Committed(_))) => "committed",
                    (Ok(_), Some(Waited::Pending)) => "pending",
                    (Ok(_), Some(Waited::Dropped)) => "dropped",
                },
                height: match verdict {
                    Some(Waited::Committed(height)) => Some(*height),
                    _ => None,
                },
                refused: outcome.as_ref().err().cloned(),
            })
            .collect();
        write_json(out, &rows)?;
    } else {
        for (put, outcome, verdict) in &rows {
            match (outcome, verdict) {
                (Err(reason), _) => writeln!(out, "refused {put}: {reason}")?,
                (Ok(id), None) => writeln!(out, "submitted {} {put}", id.to_hex())?,
                (Ok(id), Some(Waited::Committed(height))) => {
                    writeln!(out, "committed {} {put} at height {height}", id.to_hex())?
                }
                (Ok(id), Some(Waited::Pending)) => {
                    writeln!(out, "pending {} {put} (not committed yet)", id.to_hex())?
                }
                (Ok(id), Some(Waited::Dropped)) => writeln!(
                    out,
                    "dropped {} {put} (no longer in the node's mempool, not committed there)",
                    id.to_hex()
                )?,
            }
        }
        if wait.is_none() && refused < outcomes.len() {
            writeln!(
                out,
                "submitted: in the node's mempool and passed to the validators, not committed yet (add --wait to wait for the commit)"
            )?;
        }
    }
    if refused > 0 {
        return Err(CliError::Refused {
            addr,
            reason: format!(
                "{refused} of {} transactions refused (see above); fix them and submit again",
                outcomes.len()
            ),
        });
    }
    let unfinished = waited
        .iter()
        .filter(|verdict| !matches!(verdict, Waited::Committed(_)))
        .count();
    if unfinished > 0 {
        return Err(CliError::Refused {
            addr,
            reason: format!(
                "{unfinished} of {} transactions did not commit within {} s (see above); \
                 check `hm chain head --to {addr}` moves, then submit the dropped ones again",
                waited.len(),
                wait.map_or(0, |timeout| timeout.as_secs())
            ),
        });
    }
    Ok(())
}

/// Asks `addr` where `ids` stand until all are committed, one is gone from
/// its mempool uncommitted for two answers in a row, or `timeout` passes.
#[allow(clippy::disallowed_methods)] // a client on the real OS: it waits in wall time
async fn wait_for_commits(
    endpoint: &hm_client::api::ApiEndpoint,
    addr: SocketAddrV6,
    ids: &[Hash],
    timeout: std::time::Duration,
) -> Result<Vec<Waited>, CliError> {
    use hm_kernel::replica::TransactionStatus;
    let started = std::time::Instant::now();
    let mut verdicts = vec![Waited::Pending; ids.len()];
    // An id is judged dropped only when two answers in a row do not know
    // it: the node removes a transaction from its mempool and indexes its
    // block in one step, but an answer may still race a restart.
    let mut unknown_before = vec![false; ids.len()];
    loop {
        let mut statuses = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(API_STATUS_IDS_MAX) {
            let request = ApiRequest::TransactionStatus {
                ids: chunk.to_vec(),
            };
            match ask(endpoint, addr, &request).await? {
                ApiResponse::TransactionStatus {
                    statuses: answer, ..
                } if answer.len() == chunk.len() => statuses.extend(answer),
                other => {
                    return Err(CliError::Unexpected {
                        addr,
                        what: kind(&other),
                    });
                }
            }
        }
        for (index, status) in statuses.into_iter().enumerate() {
            verdicts[index] = match status {
                TransactionStatus::Committed { height } => Waited::Committed(height),
                TransactionStatus::Pending => Waited::Pending,
                TransactionStatus::Unknown if unknown_before[index] => Waited::Dropped,
                TransactionStatus::Unknown => Waited::Pending,
            };
            unknown_before[index] = status == TransactionStatus::Unknown;
        }
        let done = verdicts
            .iter()
            .all(|verdict| !matches!(verdict, Waited::Pending));
        if done || started.elapsed() >= timeout {
            return Ok(verdicts);
        }
        tokio::time::sleep(WAIT_POLL).await;
    }
}

/// `hm cert show [--fingerprint F]`.
pub fn cert_show(
    fingerprint: Option<&str>,
    to: &str,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let fingerprint = fingerprint
        .map(|text| {
            Hash::from_hex(text.trim()).map_err(|_| {
                CliError::Arguments(format!(
                    "--fingerprint {text:?} is not 64 hex digits; copy it from `hm status --json`"
                ))
            })
        })
        .transpose()?;
    let (_, certificate) =
        ask_one(
            to,
            ApiRequest::CertificateInfo { fingerprint },
            |answer| match answer {
                ApiResponse::CertificateInfo(certificate) => Ok(*certificate),
                other => Err(other),
            },
        )?;
    if json {
        return write_json(out, &certificate);
    }
    let issuer = match (&certificate.authority, certificate.issued_at_height) {
        (Some(authority), _) => format!("authority {}", short(authority)),
        (None, Some(height)) => format!("the chain, at height {height}"),
        (None, None) => "unknown".into(),
    };
    let state = match (certificate.revoked, certificate.issuer_revoked) {
        (false, false) => "valid",
        (true, _) => "REVOKED",
        (false, true) => "issuer revoked",
    };
    writeln!(out, "certificate {}", certificate.fingerprint.to_hex())?;
    writeln!(out, "subject {}", certificate.subject.to_hex())?;
    writeln!(out, "names {}", certificate.names.join(" "))?;
    writeln!(
        out,
        "valid_ms {}..{}  ({} s)",
        certificate.not_before_ms,
        certificate.not_after_ms,
        certificate
            .not_after_ms
            .saturating_sub(certificate.not_before_ms)
            / 1000
    )?;
    writeln!(
        out,
        "issuer {issuer}  log_index {}  status {state}",
        certificate.log_index
    )?;
    if let Some((height, header_hash)) = certificate.proven_at {
        writeln!(
            out,
            "proven by the light node: state proof against header {} at height {height}",
            short(&header_hash)
        )?;
    }
    Ok(())
}

/// `hm cert renew`.
pub fn cert_renew(to: &str, json: bool, out: &mut dyn Write) -> Result<(), CliError> {
    let (_, replacing) = ask_one(to, ApiRequest::RenewCertificate, |answer| match answer {
        ApiResponse::Renewing { replacing } => Ok(replacing),
        other => Err(other),
    })?;
    if json {
        #[derive(Serialize)]
        struct RenewJson {
            replacing: Hash,
        }
        return write_json(out, &RenewJson { replacing });
    }
    writeln!(
        out,
        "renewing: {} will be replaced once the chain commits the new certificate (see `hm cert show`)",
        replacing.to_hex()
    )?;
    Ok(())
}
