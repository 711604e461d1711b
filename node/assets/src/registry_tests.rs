//! The registry driven block by block: signed transactions from provider
//! nodes and tenants, leases granted, refused, renewed, released and
//! expired, and a replica rebuilt from the committed write sets alone.

use std::collections::BTreeSet;

use hm_env::mem::SeededEntropy;
use proptest::prelude::*;

use super::*;
use crate::model::{PrivacyLevel, RequestItem};

const CHAIN: Hash = Hash([3; 32]);
const T0_MS: u64 = 1_700_000_000_000;
const BLOCK_MS: u64 = 1_000;
const HOUR_MS: u64 = 3_600_000;

fn key(n: u64) -> &'static SigningKey {
    hm_testkit::signing_key("assets-registry", n)
}

fn node(n: u64) -> Hash {
    key(n).verifying_key().fingerprint()
}

/// Keys 0..10 are members; 10.. are not certified.
struct Members;

impl Standings for Members {
    fn standing(&self, id: &Hash, _now_ms: u64) -> Standing {
        if (0..10).any(|n| node(n) == *id) {
            Standing::Member
        } else {
            Standing::Uncertified
        }
    }
}

fn app() -> AssetApp {
    AssetApp::new(CHAIN, Arc::new(Members))
}

fn cpu(name: &str, millicores: u64) -> AssetSpec {
    AssetSpec {
        name: name.into(),
        kind: AssetKind::Cpu,
        capacity: millicores,
        attributes: Attributes::new(),
        privacy: Privacy::Network,
        price_per_quantum_hour: 100,
    }
}

fn lease_request(tenant: u64, millicores: u64, duration_ms: u64) -> LeaseRequest {
    LeaseRequest {
        tenant: node(tenant),
        items: vec![RequestItem {
            kind: AssetKind::Cpu,
            amount: millicores,
            constraints: Vec::new(),
        }],
        widest_privacy: PrivacyLevel::Public,
        colocate: false,
        max_price_per_hour: u64::MAX,
        duration_ms,
    }
}

/// A chain of one module: blocks executed and committed in order, with
/// every write set kept for a replay.
struct Chain {
    app: AssetApp,
    height: Height,
    time_ms: u64,
    nonces: BTreeMap<u64, u64>,
    entropy: SeededEntropy,
    write_sets: Vec<Vec<StateUpdate>>,
}

impl Chain {
    fn new() -> Chain {
        Chain {
            app: app(),
            height: 0,
            time_ms: T0_MS,
            nonces: BTreeMap::new(),
            entropy: SeededEntropy::new(1, b"assets-registry"),
            write_sets: Vec::new(),
        }
    }

    fn tx(&mut self, signer: u64, op: AssetOp) -> Transaction {
        let nonce = self.nonces.entry(signer).or_insert(0);
        *nonce += 1;
        let tx = AssetTx::sign(&CHAIN, key(signer), *nonce, op, &self.entropy);
        Transaction(tx.encode())
    }

    /// Executes and commits one block `after_ms` after the last; returns
    /// each transaction's result.
    fn block(&mut self, after_ms: u64, txs: &[Transaction]) -> Vec<Result<(), TxError>> {
        self.height += 1;
        self.time_ms += after_ms;
        let execution = self
            .app
            .execute_block(BlockContext::new(self.height, self.time_ms), txs);
        self.app
            .commit_execution(self.height, &execution)
            .expect("in order");
        assert_eq!(self.app.state_root(), execution.state_root);
        self.app
            .scheduler()
            .check()
            .expect("invariants after every block");
        self.write_sets.push(execution.updates);
        execution.results
    }

    fn lease(&self, tenant: u64, nonce: u64) -> Option<LeaseRecord> {
        self.app.lease(&lease_id(&node(tenant), nonce))
    }

    /// A fresh replica fed only the committed write sets (a restart
    /// replaying its disk): the same root and the same scheduler.
    fn assert_replay_matches(&self) {
        let mut replica = app();
        for (at, updates) in self.write_sets.iter().enumerate() {
            replica.commit(at as u64 + 1, updates).expect("in order");
        }
        assert_eq!(replica.state_root(), self.app.state_root());
        let ours = self.app.scheduler();
        let theirs = replica.scheduler();
        assert_eq!(theirs.assets_len(), ours.assets_len());
        assert_eq!(theirs.leases_len(), ours.leases_len());
        for n in 0..20 {
            for name in ["cpu0", "cpu1"] {
                let id = asset_id(&node(n), name);
                assert_eq!(theirs.reserved(&id), ours.reserved(&id));
                assert_eq!(theirs.is_withdrawn(&id), ours.is_withdrawn(&id));
            }
        }
    }
}

fn ok(results: &[Result<(), TxError>]) {
    for (at, result) in results.iter().enumerate() {
        assert!(result.is_ok(), "transaction {at}: {result:?}");
    }
}

#[test]
fn a_lease_is_granted_proven_renewed_and_expires_at_its_time() {
    let mut chain = Chain::new();
    let register = chain.tx(1, AssetOp::Register(cpu("cpu0", 8_000)));
    ok(&chain.block(BLOCK_MS, &[register]));
    let request = chain.tx(2, AssetOp::RequestLease(lease_request(2, 3_000, HOUR_MS)));
    ok(&chain.block(BLOCK_MS, &[request]));
    let granted_at_ms = chain.time_ms;
    let Some(LeaseRecord::Active(lease)) = chain.lease(2, 1) else {
        panic!("granted: {:?}", chain.lease(2, 1));
    };
    let asset = asset_id(&node(1), "cpu0");
    assert_eq!(lease.placement.parts[0].asset, asset);
    assert_eq!(lease.expires_ms, granted_at_ms + HOUR_MS);
    assert_eq!(chain.app.scheduler().reserved(&asset), Some(3_000));

    // The tenant proves its lease against the module's root.
    let lease_key = AssetApp::lease_key(&lease_id(&node(2), 1));
    let (value, proof) = chain.app.prove(&lease_key);
    let value = value.expect("present");
    assert_eq!(
        proof.verify(&chain.app.state_root(), &lease_key, Some(&value)),
        Ok(())
    );
    let mut forged = value.clone();
    forged[0] ^= 1;
    assert!(
        proof
            .verify(&chain.app.state_root(), &lease_key, Some(&forged))
            .is_err()
    );

    // Renewed by its tenant for half an hour more; another may not.
    let renew = chain.tx(
        2,
        AssetOp::RenewLease {
            lease: lease_id(&node(2), 1),
            extend_ms: HOUR_MS / 2,
        },
    );
    let stranger = chain.tx(
        3,
        AssetOp::ReleaseLease {
            lease: lease_id(&node(2), 1),
        },
    );
    let results = chain.block(BLOCK_MS, &[renew, stranger]);
    assert!(results[0].is_ok(), "{:?}", results[0]);
    assert!(
        matches!(&results[1], Err(TxError::Rejected(reason)) if reason.contains("tenant")),
        "{:?}",
        results[1]
    );
    // Still active just before its new end, ended at the first block after.
    let to_end = granted_at_ms + HOUR_MS + HOUR_MS / 2 - chain.time_ms;
    chain.block(to_end - 1, &[]);
    assert!(matches!(chain.lease(2, 1), Some(LeaseRecord::Active(_))));
    chain.block(1, &[]);
    assert!(matches!(chain.lease(2, 1), Some(LeaseRecord::Ended { .. })));
    assert_eq!(chain.app.scheduler().reserved(&asset), Some(0));
    // Its record is pruned a day later.
    chain.block(LEASE_RECORD_KEEP_MS, &[]);
    assert_eq!(chain.lease(2, 1), None);
    chain.assert_replay_matches();
}

#[test]
fn refusals_are_recorded_with_their_reason_and_replays_and_forgeries_do_nothing() {
    let mut chain = Chain::new();
    let register = chain.tx(1, AssetOp::Register(cpu("cpu0", 2_000)));
    ok(&chain.block(BLOCK_MS, &[register]));
    // Too big: refused, the reason kept for the tenant.
    let big = chain.tx(2, AssetOp::RequestLease(lease_request(2, 4_000, HOUR_MS)));
    // Uncertified tenant: refused at the privacy filter.
    let outsider = chain.tx(12, AssetOp::RequestLease(lease_request(12, 1_000, HOUR_MS)));
    ok(&chain.block(BLOCK_MS, &[big.clone(), outsider]));
    match chain.lease(2, 1) {
        Some(LeaseRecord::Refused { reason, .. }) => {
            assert!(reason.contains("largest free is 2000"), "{reason}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    match chain.lease(12, 1) {
        Some(LeaseRecord::Refused { reason, .. }) => {
            assert!(reason.contains("certificate"), "{reason}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // The same signed request again: its nonce is spent.
    let results = chain.block(BLOCK_MS, &[big]);
    assert!(
        matches!(&results[0], Err(TxError::Rejected(reason)) if reason.contains("nonce")),
        "{results:?}"
    );
    // Signed for another chain: refused, nothing written.
    let root = chain.app.state_root();
    let elsewhere = AssetTx::sign(
        &Hash([4; 32]),
        key(2),
        9,
        AssetOp::RequestLease(lease_request(2, 1_000, HOUR_MS)),
        &chain.entropy,
    );
    let results = chain.block(BLOCK_MS, &[Transaction(elsewhere.encode())]);
    assert!(
        matches!(&results[0], Err(TxError::Rejected(reason)) if reason.contains("signature")),
        "{results:?}"
    );
    assert_eq!(chain.app.state_root(), root);
    // Garbage bytes: malformed, in the mempool check and in a block.
    let garbage = Transaction(vec![7; 40]);
    assert!(matches!(
        chain.app.check_tx(&garbage),
        Err(TxError::Malformed(_))
    ));
    assert!(matches!(
        chain.block(BLOCK_MS, &[garbage])[0],
        Err(TxError::Malformed(_))
    ));
    chain.assert_replay_matches();
}

#[test]
fn a_withdrawn_asset_drains_its_leases_and_a_restart_rebuilds_it_draining() {
    let mut chain = Chain::new();
    let txs = [
        chain.tx(1, AssetOp::Register(cpu("cpu0", 4_000))),
        chain.tx(1, AssetOp::Register(cpu("cpu1", 4_000))),
    ];
    ok(&chain.block(BLOCK_MS, &txs));
    let request = chain.tx(2, AssetOp::RequestLease(lease_request(2, 3_000, HOUR_MS)));
    ok(&chain.block(BLOCK_MS, &[request]));
    let Some(LeaseRecord::Active(lease)) = chain.lease(2, 1) else {
        panic!("granted");
    };
    let leased = lease.placement.parts[0].asset;
    let name = if leased == asset_id(&node(1), "cpu0") {
        "cpu0"
    } else {
        "cpu1"
    };
    let withdraw = chain.tx(1, AssetOp::Withdraw { name: name.into() });
    ok(&chain.block(BLOCK_MS, &[withdraw]));
    assert!(chain.app.scheduler().is_withdrawn(&leased));
    assert!(
        chain
            .app
            .asset(&leased)
            .is_some_and(|record| record.withdrawn)
    );
    // A restart now: the asset comes back draining, its lease held.
    chain.assert_replay_matches();
    // A new request goes to the other CPU.
    let again = chain.tx(3, AssetOp::RequestLease(lease_request(3, 3_000, HOUR_MS)));
    ok(&chain.block(BLOCK_MS, &[again]));
    let Some(LeaseRecord::Active(other)) = chain.lease(3, 1) else {
        panic!("granted on the other asset");
    };
    assert_ne!(other.placement.parts[0].asset, leased);
    // The tenant releases: the withdrawn asset goes with its last lease.
    let release = chain.tx(
        2,
        AssetOp::ReleaseLease {
            lease: lease_id(&node(2), 1),
        },
    );
    ok(&chain.block(BLOCK_MS, &[release]));
    assert_eq!(chain.app.asset(&leased), None);
    assert!(chain.app.scheduler().asset(&leased).is_none());
    chain.assert_replay_matches();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Random blocks of registrations, updates, withdrawals, requests,
    /// renewals and releases from a few providers and tenants, with time
    /// jumping past expiries: the invariants hold after every block (the
    /// chain asserts them), every active lease's record matches the
    /// scheduler, and replaying the write sets rebuilds the same state.
    #[test]
    fn any_sequence_keeps_reservations_within_capacity_and_replays_identically(
        blocks in prop::collection::vec(
            (
                prop::collection::vec((0u8..6, 0u64..4, 0u64..2, 1u64..6_000), 0..5),
                prop_oneof![Just(BLOCK_MS), Just(HOUR_MS / 2), Just(2 * HOUR_MS)],
            ),
            1..16,
        ),
    ) {
        let mut chain = Chain::new();
        let mut granted: Vec<(u64, u64)> = Vec::new();
        for (ops, after_ms) in blocks {
            let mut txs = Vec::new();
            for (op, who, which, amount) in ops {
                let name = ["cpu0", "cpu1"][which as usize].to_string();
                let tx = match op {
                    0 => chain.tx(who, AssetOp::Register(cpu(&name, amount))),
                    1 => chain.tx(who, AssetOp::Update(cpu(&name, amount))),
                    2 => chain.tx(who, AssetOp::Withdraw { name }),
                    3 => {
                        let nonce = chain.nonces.get(&(who + 4)).copied().unwrap_or(0) + 1;
                        granted.push((who + 4, nonce));
                        chain.tx(who + 4, AssetOp::RequestLease(lease_request(who + 4, amount, HOUR_MS)))
                    }
                    4 | 5 => {
                        let Some(&(tenant, nonce)) = granted.get(amount as usize % granted.len().max(1)) else {
                            continue;
                        };
                        let lease = lease_id(&node(tenant), nonce);
                        if op == 4 {
                            chain.tx(tenant, AssetOp::RenewLease { lease, extend_ms: HOUR_MS })
                        } else {
                            chain.tx(tenant, AssetOp::ReleaseLease { lease })
                        }
                    }
                    _ => unreachable!(),
                };
                txs.push(tx);
            }
            chain.block(after_ms, &txs);
            for (tenant, nonce) in &granted {
                let id = lease_id(&node(*tenant), *nonce);
                let in_scheduler = chain.app.scheduler().lease(&id).cloned();
                match chain.app.lease(&id) {
                    Some(LeaseRecord::Active(lease)) => {
                        prop_assert_eq!(in_scheduler, Some(lease.placement.clone()));
                        prop_assert!(lease.expires_ms > chain.time_ms);
                    }
                    _ => prop_assert_eq!(in_scheduler, None),
                }
            }
        }
        let assets: BTreeSet<AssetId> = (0..4)
            .flat_map(|n| ["cpu0", "cpu1"].map(|name| asset_id(&node(n), name)))
            .collect();
        for id in assets {
            let record = chain.app.asset(&id);
            prop_assert_eq!(record.is_some(), chain.app.scheduler().asset(&id).is_some());
        }
        chain.assert_replay_matches();
    }
}
