//! The commands that ask one node about one thing: `hm peers`,
//! `hm chain head|block N`, `hm tx submit`, `hm cert show|renew`.

use std::io::Write;
use std::net::SocketAddrV6;

use hm_env::Entropy as _;
use hm_host::client::with_api_endpoint;
use hm_host::entropy::OsEntropy;
use hm_node::api::API_SUBMIT_TRANSACTIONS_MAX;
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

/// `hm tx submit --put KEY=VALUE …`: key-value transactions, each with a
/// random nonce (so the same put submitted twice is two transactions).
pub fn tx_submit(
    puts: &[String],
    to: &str,
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
    let outcomes: Vec<Result<Hash, String>> = with_api_endpoint(|endpoint| async move {
        let mut outcomes = Vec::with_capacity(transactions.len());
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
        Ok(outcomes)
    })?;
    let refused = outcomes.iter().filter(|outcome| outcome.is_err()).count();
    if json {
        #[derive(Serialize)]
        struct OutcomeJson {
            put: String,
            id: Option<String>,
            refused: Option<String>,
        }
        let rows: Vec<OutcomeJson> = puts
            .iter()
            .zip(&outcomes)
            .map(|(put, outcome)| OutcomeJson {
                put: put.clone(),
                id: outcome.as_ref().ok().map(Hash::to_hex),
                refused: outcome.as_ref().err().cloned(),
            })
            .collect();
        write_json(out, &rows)?;
    } else {
        for (put, outcome) in puts.iter().zip(&outcomes) {
            match outcome {
                Ok(id) => writeln!(out, "submitted {} {put}", id.to_hex())?,
                Err(reason) => writeln!(out, "refused {put}: {reason}")?,
            }
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
    Ok(())
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
