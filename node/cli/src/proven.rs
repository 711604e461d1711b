//! `hm dns resolve --genesis`: the CLI as a light client. It trusts only the
//! genesis it is given (its validator set and chain id), verifies the
//! chain's first header and then the header of the answer's height by
//! their commit certificates, and accepts the record only with a proof
//! against that header's state root ([`hm_node::proven::ProvenQuery`]).

use std::io::Write;
use std::net::SocketAddrV6;
use std::path::Path;

use hm_client::api::{ApiEndpoint, with_api_endpoint};
use hm_env::Clock as _;
use hm_kernel::genesis::{GENESIS_BYTES_MAX, Genesis};
use hm_kernel::light::{LightClient, TrustParams, TrustRoot};
use hm_kernel::validators::ValidatorSet;
use hm_node::api::CertifiedHeader;
use hm_node::app::MODULE_TRUST;
use hm_node::proven::{Proven, ProvenQuery, Step};
use hm_node::{ApiRequest, ApiResponse};
use hm_trustchain::app::TrustApp;
use hm_trustchain::dns::DnsRecord;
use hm_trustchain::name::DnsName;

use crate::{CliError, kind, short};

/// How long a verified header vouches for the next ones. The validator
/// set is fixed by genesis today (no unbonding), so this only bounds how
/// stale a chain the CLI will follow from its first header.
const TRUSTING_PERIOD_MS: u64 = 30 * 24 * 3_600_000;
/// How far ahead of this machine's clock a header's time may be.
const MAX_CLOCK_DRIFT_MS: u64 = 10_000;

/// What the genesis file tells a light client.
struct Anchor {
    chain_id: hm_wire::Hash,
    validators: ValidatorSet,
}

fn anchor(path: &Path) -> Result<Anchor, CliError> {
    let unusable = |why: String| {
        CliError::Arguments(format!(
            "--genesis {}: {why}; pass the genesis.bin of the network the node belongs to",
            path.display()
        ))
    };
    // The user's file, read once by the CLI (the node's own state goes
    // through hm_env::Disk).
    #[allow(clippy::disallowed_methods)]
    let bytes = std::fs::read(path).map_err(|error| unusable(error.to_string()))?;
    if bytes.len() > GENESIS_BYTES_MAX {
        return Err(unusable(format!(
            "{} bytes, more than a genesis may be ({GENESIS_BYTES_MAX})",
            bytes.len()
        )));
    }
    let genesis = Genesis::decode(&bytes).map_err(|error| unusable(error.to_string()))?;
    let validators = genesis
        .validator_set()
        .map_err(|error| unusable(error.to_string()))?;
    Ok(Anchor {
        chain_id: genesis.chain_id(),
        validators,
    })
}

/// The proven record of `name` (or its proven absence), from the full node
/// at `addr`, trusting only `genesis`.
pub(crate) fn resolve_proven(
    name: &DnsName,
    addr: SocketAddrV6,
    genesis: &Path,
    max_age_ms: u64,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let anchor = anchor(genesis)?;
    let key = TrustApp::record_key(name);
    let proven = with_api_endpoint(|endpoint| async move {
        prove(&endpoint, addr, &anchor, MODULE_TRUST, key, max_age_ms).await
    })?;
    let height = proven.height;
    let header_hash = proven.header_hash;
    let record = match proven.into_value() {
        None => None,
        Some(bytes) => Some(
            DnsRecord::decode(&bytes).map_err(|error| CliError::Unproven {
                addr,
                why: format!("the proven value is not a DNS record ({error})"),
            })?,
        ),
    };
    if let Some(record) = &record
        && record.name != *name
    {
        return Err(CliError::Unproven {
            addr,
            why: format!("the proven record is for {}, not {name}", record.name),
        });
    }
    if json {
        let mut value = serde_json::to_value(crate::RecordJson::new(name, record.as_ref()))?;
        if let Some(object) = value.as_object_mut() {
            object.insert("proven_height".into(), height.into());
            object.insert("proven_header".into(), header_hash.to_hex().into());
        }
        serde_json::to_writer_pretty(&mut *out, &value)?;
        writeln!(out)?;
    }
    let Some(record) = record else {
        return Err(CliError::ProvenAbsent {
            name: name.clone(),
            height,
        });
    };
    if !json {
        crate::write_record(out, &record)?;
        writeln!(
            out,
            "proven: state proof against header {} at height {}, certified by the genesis validators",
            short(&header_hash),
            height
        )?;
    }
    Ok(())
}

/// Runs a proven query against one full node, starting the light client
/// from the chain's first header.
async fn prove(
    endpoint: &ApiEndpoint,
    addr: SocketAddrV6,
    anchor: &Anchor,
    module: u8,
    key: Vec<u8>,
    max_age_ms: u64,
) -> Result<Proven, CliError> {
    let client = endpoint.connect(addr).await?;
    let outcome = prove_on(&client, addr, anchor, module, key, max_age_ms).await;
    client.close();
    outcome
}

async fn prove_on(
    client: &hm_node::ApiClient,
    addr: SocketAddrV6,
    anchor: &Anchor,
    module: u8,
    key: Vec<u8>,
    max_age_ms: u64,
) -> Result<Proven, CliError> {
    let clock = hm_env::RuntimeClock;
    let first =
        match ApiEndpoint::call(client, addr, &ApiRequest::Headers { from: 1, count: 1 }).await? {
            ApiResponse::Headers(headers) => headers.into_iter().next(),
            ApiResponse::Error(reason) => return Err(CliError::Refused { addr, reason }),
            other => {
                return Err(CliError::Unexpected {
                    addr,
                    what: kind(&other),
                });
            }
        };
    let Some(CertifiedHeader { header, commit }) = first.filter(|first| first.header.height == 1)
    else {
        return Err(CliError::Unproven {
            addr,
            why: "it sent no header for height 1 to start from".into(),
        });
    };
    let mut light = LightClient::new(
        anchor.chain_id,
        TrustRoot {
            header,
            certificate: commit,
            validators: anchor.validators.clone(),
            next_validators: None,
        },
        TrustParams {
            trusting_period_ms: TRUSTING_PERIOD_MS,
            max_clock_drift_ms: MAX_CLOCK_DRIFT_MS,
        },
    )
    .map_err(|error| CliError::Unproven {
        addr,
        why: format!("its first header does not match the genesis: {error}"),
    })?;
    let (mut query, mut step) = ProvenQuery::new(module, vec![key], max_age_ms);
    // A proven read takes at most two requests; a bound anyway.
    for _ in 0..4 {
        match step {
            Step::Done(outcome) => {
                return outcome.map_err(|refusal| CliError::Unproven {
                    addr,
                    why: refusal.to_string(),
                });
            }
            Step::Ask(request) => {
                let answer = ApiEndpoint::call(client, addr, &request).await?;
                step = query.on_answer(&mut light, &anchor.validators, answer, clock.wall_ms());
            }
        }
    }
    Err(CliError::Unproven {
        addr,
        why: "the exchange did not end".into(),
    })
}
