//! The scenario's client: a host outside the mesh that submits
//! transactions through nodes' APIs, as `hm tx submit` does, and remembers
//! which ones a node acknowledged. At the end `acked-transactions-commit`
//! checks that every acknowledged transaction is in the audited chain: a
//! node that says "submitted" must not lose the transaction to a crash of
//! itself or of a quorum of validators.
//!
//! The client never crashes and is never partitioned from anyone (it is
//! outside the node numbering); it stops submitting when the faults stop,
//! so what it sent has the property's bound to commit.

use std::collections::BTreeSet;
use std::net::{SocketAddr, SocketAddrV6};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hm_env::mem::MemDisk;
use hm_env::{Clock, Entropy, Env};
use hm_kernel::chain::ChainStore;
use hm_kernel::genesis::Genesis;
use hm_node::api::{ApiClient, ApiRequest, ApiResponse};
use hm_stoq::{Endpoint, SelfSignedVerifier, StoqConfig};
use hm_wire::{Hash, SigningKey};

use crate::outcome::PropertyResult;
use crate::world::lock;

/// Acknowledged transactions remembered (the property names the first
/// missing ones; the count covers all).
pub const ACKED_KEPT_MAX: usize = 100_000;
/// Missing transactions named in the property's detail.
const MISSING_SHOWN_MAX: usize = 6;
/// How long one submission may take, connection included.
const SUBMIT_TIMEOUT_MS: u64 = 3_000;

/// One acknowledged transaction.
#[derive(Debug, Clone)]
pub struct Acked {
    pub id: Hash,
    pub node: u32,
    pub at_ms: u64,
}

/// What the client did.
#[derive(Debug, Default)]
pub struct ClientLog {
    pub acked: Vec<Acked>,
    /// Submissions a node answered with an error (not acknowledged).
    pub refused: u64,
    /// Submissions that reached no node, or got no answer in time.
    pub unreachable: u64,
}

/// The client's plan: whom to send to, how often, until when.
pub struct ClientPlan {
    /// API addresses of the nodes it sends to, in turn.
    pub targets: Vec<(u32, SocketAddrV6)>,
    pub interval_ms: u64,
    pub stop_at_ms: u64,
    pub start: Instant,
}

/// The client's loop: one transaction every `interval_ms` to the next
/// target, each a unique put (`client/<n>`).
pub async fn run<E: Env>(env: E, bind: SocketAddrV6, plan: ClientPlan, log: Arc<Mutex<ClientLog>>) {
    let key = SigningKey::generate(env.entropy());
    let mut config = StoqConfig::new(bind);
    config.protocols = vec![hm_node::API_PROTOCOL.to_vec()];
    let endpoint = match Endpoint::bind(&env, key, config, Arc::new(SelfSignedVerifier)) {
        Ok(endpoint) => endpoint,
        Err(error) => {
            tracing::error!(%error, "the scenario's client cannot bind its endpoint");
            return;
        }
    };
    let nonce_base = env.entropy().next_u64();
    let mut sequence: u64 = 0;
    loop {
        let now_ms = ms_since(plan.start, env.clock().now());
        if now_ms >= plan.stop_at_ms || plan.targets.is_empty() {
            break;
        }
        let (node, addr) = plan.targets[(sequence % plan.targets.len() as u64) as usize];
        let tx = hm_node::app::kv_put(
            format!("client/{sequence}").as_bytes(),
            &sequence.to_le_bytes(),
            nonce_base.wrapping_add(sequence),
        );
        sequence += 1;
        let timeout = Duration::from_millis(SUBMIT_TIMEOUT_MS);
        let submit = async {
            let client = ApiClient::connect(&endpoint, SocketAddr::V6(addr), timeout)
                .await
                .ok()?;
            let answer = client.call(&ApiRequest::Submit(vec![tx])).await.ok();
            client.close();
            answer
        };
        let answer = hm_env::timeout(env.clock(), timeout, submit)
            .await
            .ok()
            .flatten();
        {
            let mut log = lock(&log);
            match answer {
                Some(ApiResponse::Submitted(results)) => match results.first() {
                    Some(Ok(id)) if log.acked.len() < ACKED_KEPT_MAX => log.acked.push(Acked {
                        id: *id,
                        node,
                        at_ms: ms_since(plan.start, env.clock().now()),
                    }),
                    Some(Ok(_)) => {}
                    _ => log.refused += 1,
                },
                Some(_) => log.refused += 1,
                None => log.unreachable += 1,
            }
        }
        env.clock()
            .sleep(Duration::from_millis(plan.interval_ms))
            .await;
    }
    endpoint.close();
}

fn ms_since(start: Instant, now: Instant) -> u64 {
    now.saturating_duration_since(start).as_millis() as u64
}

/// Ids of every transaction committed on `disk`'s chain.
pub fn committed_transactions(genesis: &Genesis, disk: &MemDisk) -> Result<BTreeSet<Hash>, String> {
    let mut ids = BTreeSet::new();
    if !ChainStore::exists(disk).map_err(|error| error.to_string())? {
        return Ok(ids);
    }
    let store =
        ChainStore::open(disk.clone(), genesis.chain_id()).map_err(|error| error.to_string())?;
    for height in 1..=store.height() {
        let block = store
            .block(height)
            .map_err(|error| format!("block {height}: {error}"))?
            .ok_or_else(|| format!("block {height} is missing below the head"))?;
        ids.extend(block.body.transaction_ids());
    }
    Ok(ids)
}

/// `acked-transactions-commit`: every transaction a node acknowledged is
/// in the audited chain by the end of the run (the faults' end plus the
/// scenario's bound).
pub fn acked_property(
    log: &ClientLog,
    committed: &Result<BTreeSet<Hash>, String>,
    bound_s: f64,
) -> PropertyResult {
    let name = "acked-transactions-commit".to_string();
    let committed = match committed {
        Ok(committed) => committed,
        Err(error) => {
            return PropertyResult {
                name,
                passed: false,
                detail: format!("the audited chain cannot be read: {error}"),
            };
        }
    };
    let missing: Vec<&Acked> = log
        .acked
        .iter()
        .filter(|acked| !committed.contains(&acked.id))
        .collect();
    let tried = log.acked.len() as u64 + log.refused + log.unreachable;
    PropertyResult {
        name,
        passed: missing.is_empty() && !log.acked.is_empty(),
        detail: if log.acked.is_empty() {
            format!(
                "{}: no node acknowledged any of the client's {tried} submissions ({} refused, {} unreachable)",
                crate::outcome::NOT_EXERCISED,
                log.refused,
                log.unreachable
            )
        } else if missing.is_empty() {
            format!(
                "all {} acknowledged transactions committed within {bound_s} s of the last fault ({} refused and {} unreachable submissions were not acknowledged)",
                log.acked.len(),
                log.refused,
                log.unreachable
            )
        } else {
            let shown: Vec<String> = missing
                .iter()
                .take(MISSING_SHOWN_MAX)
                .map(|acked| {
                    format!(
                        "{} (acked by n{} at {:.1} s)",
                        &acked.id.to_hex()[..12],
                        acked.node,
                        acked.at_ms as f64 / 1000.0
                    )
                })
                .collect();
            format!(
                "{} of {} acknowledged transactions never committed: {}",
                missing.len(),
                log.acked.len(),
                shown.join(", ")
            )
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{assert_fails, assert_passes};

    fn acked(n: u8, node: u32) -> Acked {
        Acked {
            id: Hash([n; 32]),
            node,
            at_ms: 1_000 * u64::from(n),
        }
    }

    #[test]
    fn every_acknowledged_transaction_committed_passes() {
        let log = ClientLog {
            acked: vec![acked(1, 0), acked(2, 7)],
            refused: 1,
            unreachable: 3,
        };
        let committed = Ok([Hash([1; 32]), Hash([2; 32]), Hash([9; 32])].into());
        assert_passes(&acked_property(&log, &committed, 60.0));
    }

    #[test]
    fn a_lost_acknowledged_transaction_fails_naming_the_node_that_acked_it() {
        let log = ClientLog {
            acked: vec![acked(1, 0), acked(2, 8)],
            ..ClientLog::default()
        };
        let committed = Ok([Hash([1; 32])].into());
        assert_fails(
            &acked_property(&log, &committed, 60.0),
            "1 of 2 acknowledged transactions never committed: 020202020202 (acked by n8 at 2.0 s)",
        );
    }

    #[test]
    fn nothing_acknowledged_is_not_exercised_and_an_unreadable_chain_fails() {
        let log = ClientLog {
            unreachable: 5,
            ..ClientLog::default()
        };
        assert_fails(
            &acked_property(&log, &Ok(BTreeSet::new()), 60.0),
            crate::outcome::NOT_EXERCISED,
        );
        let log = ClientLog {
            acked: vec![acked(1, 0)],
            ..ClientLog::default()
        };
        assert_fails(
            &acked_property(&log, &Err("disk I/O error".into()), 60.0),
            "cannot be read",
        );
    }
}
