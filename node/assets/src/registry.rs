//! The asset registry as a chain application module. Signed transactions
//! register, update and withdraw assets and request, renew and release
//! leases; every replica executes them in block order against the
//! committed state, the [`Scheduler`] decides each placement, and all of
//! it lives under the module's authenticated root, so a provider or a
//! tenant that runs a light client checks its assets and leases by proof.
//!
//! * **Who signs.** Each transaction is signed by its signer's FALCON key
//!   over the chain id, a nonce and the operation. The nonce must be above
//!   the signer's last one (kept in state): a transaction cannot be
//!   replayed, on this chain or another. A node registers what it holds:
//!   an asset's node is its signer, and so is its owner.
//! * **Leases.** A request is placed and reserved in the same step; the
//!   lease's id is its tenant and nonce hashed, its record says granted
//!   (with the placement and expiry) or refused (with the reason), so the
//!   tenant reads the outcome from state, proven. A lease ends when its
//!   tenant releases it or its time passes (at the first block at or after
//!   its expiry); ended and refused records are pruned a day later.
//! * **Restart.** The scheduler is derived state: on a commit without the
//!   hint its execution left (a replay from disk, a sync), it is rebuilt
//!   from the committed assets and leases, never lost.
//!
//! Must not know: who is certified (the caller's [`Standings`] says), the
//! other modules, connections, clocks (block time arrives in the context).

use std::collections::BTreeMap;
use std::sync::Arc;

use hm_kernel::app::{Application, BlockContext, CommitError, CommitHint, Execution, TxError};
use hm_kernel::block::{Height, StateUpdate, TRANSACTION_BYTES_MAX, Transaction};
use hm_kernel::state::StateProof;
use hm_kernel::store::{PreparedWrites, Store};
use hm_wire::{Hash, Signature, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::model::{
    ATTRIBUTE_BYTES_MAX, Asset, AssetError, AssetId, AssetKind, Attributes, LeaseRequest, NodeId,
    Privacy, Standing, Tenant,
};
use crate::scheduler::{LeaseId, Placement, Scheduler, Withdrawal};

/// Domain of every asset transaction's signature.
pub const ASSET_TX_DOMAIN: &str = "hm/asset-tx/v1";
/// How long an ended or refused lease's record stays readable.
pub const LEASE_RECORD_KEEP_MS: u64 = 24 * 3_600_000;
/// Lease records (expiries and prunes) one block processes; the rest wait
/// for the next block, so a burst of expiries cannot make one block slow.
pub const LEASE_EVENTS_PER_BLOCK_MAX: usize = 4_096;

const ASSET_KEY: &[u8] = b"a/";
const LEASE_KEY: &[u8] = b"l/";
const EVENT_KEY: &[u8] = b"e/";
const NONCE_KEY: &[u8] = b"n/";

/// What the chain's trust services say of an identity at a time (the node
/// implements it over TrustChain's committed state).
pub trait Standings: Send + Sync {
    fn standing(&self, id: &Hash, now_ms: u64) -> Standing;
}

/// An asset as its owner describes it; the registry derives its id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssetSpec {
    /// The owner's name for it, unique per node (e.g. `gpu0`).
    pub name: String,
    pub kind: AssetKind,
    pub capacity: u64,
    pub attributes: Attributes,
    pub privacy: Privacy,
    pub price_per_quantum_hour: u64,
}

/// An asset's id: network → node → asset, so the same name on two nodes
/// is two assets and an id says where it lives.
pub fn asset_id(node: &NodeId, name: &str) -> AssetId {
    hm_wire::hash_parts("hm/asset-id/v1", &[node.as_bytes(), name.as_bytes()])
}

/// A lease's id: its tenant and the nonce of the request.
pub fn lease_id(tenant: &Hash, nonce: u64) -> LeaseId {
    hm_wire::hash_parts("hm/lease-id/v1", &[tenant.as_bytes(), &nonce.to_le_bytes()])
}

/// What an asset transaction does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AssetOp {
    Register(AssetSpec),
    Update(AssetSpec),
    Withdraw { name: String },
    RequestLease(LeaseRequest),
    RenewLease { lease: LeaseId, extend_ms: u64 },
    ReleaseLease { lease: LeaseId },
}

/// A signed asset transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssetTx {
    pub signer: VerifyingKey,
    pub nonce: u64,
    pub op: AssetOp,
    pub signature: Signature,
}

fn signing_bytes(chain_id: &Hash, signer: &Hash, nonce: u64, op: &AssetOp) -> Vec<u8> {
    hm_wire::encode(&(chain_id, signer, nonce, op))
}

impl AssetTx {
    pub fn sign<E: hm_env::Entropy + ?Sized>(
        chain_id: &Hash,
        key: &SigningKey,
        nonce: u64,
        op: AssetOp,
        entropy: &E,
    ) -> AssetTx {
        let signer = key.verifying_key();
        let bytes = signing_bytes(chain_id, &signer.fingerprint(), nonce, &op);
        AssetTx {
            signature: key.sign(ASSET_TX_DOMAIN, &bytes, entropy),
            signer,
            nonce,
            op,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        hm_wire::encode(self)
    }

    /// Decodes a transaction from untrusted bytes (bounded, canonical);
    /// the signature is checked at execution.
    pub fn decode(bytes: &[u8]) -> Result<AssetTx, TxError> {
        hm_wire::decode(bytes, TRANSACTION_BYTES_MAX)
            .map_err(|error| TxError::Malformed(format!("asset transaction: {error}")))
    }

    fn check_limits(&self) -> Result<(), AssetError> {
        match &self.op {
            AssetOp::Register(spec) | AssetOp::Update(spec) => {
                check_name(&spec.name)?;
                spec.to_asset(&self.signer.fingerprint()).check()
            }
            AssetOp::Withdraw { name } => check_name(name),
            AssetOp::RequestLease(request) => request.check(),
            AssetOp::RenewLease { .. } | AssetOp::ReleaseLease { .. } => Ok(()),
        }
    }
}

fn check_name(name: &str) -> Result<(), AssetError> {
    if name.is_empty() || name.len() > ATTRIBUTE_BYTES_MAX {
        return Err(AssetError::BadAttribute {
            key: name.chars().take(ATTRIBUTE_BYTES_MAX).collect(),
        });
    }
    Ok(())
}

impl AssetSpec {
    /// The asset this spec describes on `node` (its signer and owner).
    pub fn to_asset(&self, node: &NodeId) -> Asset {
        Asset {
            id: asset_id(node, &self.name),
            owner: *node,
            node: *node,
            kind: self.kind,
            capacity: self.capacity,
            attributes: self.attributes.clone(),
            privacy: self.privacy.clone(),
            price_per_quantum_hour: self.price_per_quantum_hour,
        }
    }
}

/// An asset as the registry keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssetRecord {
    pub asset: Asset,
    /// Withdrawn, still draining its leases.
    pub withdrawn: bool,
}

/// A lease's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LeaseRecord {
    Active(Lease),
    /// The request could not be met, and why (from [`crate::Unmet`]).
    Refused {
        reason: String,
        at_height: Height,
    },
    /// Released by its tenant or expired.
    Ended {
        lease: Lease,
        at_height: Height,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub tenant: Hash,
    pub placement: Placement,
    pub granted_height: Height,
    /// Block time at which it ends unless renewed.
    pub expires_ms: u64,
}

/// The registry's committed state and the scheduler derived from it.
#[derive(Clone)]
pub struct AssetApp {
    chain_id: Hash,
    standings: Arc<dyn Standings>,
    store: Store,
    scheduler: Scheduler,
    height: Height,
}

/// What execution leaves for commit: the hashed write set and the
/// scheduler after the block.
struct Prepared {
    store: PreparedWrites,
    scheduler: Option<Scheduler>,
}

impl AssetApp {
    pub fn new(chain_id: Hash, standings: Arc<dyn Standings>) -> AssetApp {
        AssetApp {
            chain_id,
            standings,
            store: Store::new(),
            scheduler: Scheduler::new(),
            height: 0,
        }
    }

    pub fn scheduler(&self) -> &Scheduler {
        &self.scheduler
    }

    pub fn asset_key(id: &AssetId) -> Vec<u8> {
        [ASSET_KEY, id.as_bytes()].concat()
    }

    pub fn lease_key(id: &LeaseId) -> Vec<u8> {
        [LEASE_KEY, id.as_bytes()].concat()
    }

    pub fn asset(&self, id: &AssetId) -> Option<AssetRecord> {
        decode(self.store.get(&Self::asset_key(id))?)
    }

    pub fn lease(&self, id: &LeaseId) -> Option<LeaseRecord> {
        decode(self.store.get(&Self::lease_key(id))?)
    }

    /// A key's committed value and its proof against the module's root.
    pub fn prove(&self, key: &[u8]) -> (Option<Vec<u8>>, StateProof) {
        (
            self.store.get(key).map(<[u8]>::to_vec),
            self.store.prove(key),
        )
    }

    /// Rebuilds the scheduler from the committed assets and leases.
    fn rebuild_scheduler(&mut self) {
        let mut scheduler = Scheduler::new();
        let mut withdrawn = Vec::new();
        for (_, bytes) in self.store.prefix_range(ASSET_KEY) {
            let record: AssetRecord = decode(bytes).unwrap_or_else(|| {
                panic!("a committed asset record does not decode: the state is corrupted")
            });
            if record.withdrawn {
                withdrawn.push(record.asset.id);
            }
            let registered = scheduler.register(record.asset);
            assert!(
                registered.is_ok(),
                "committed assets register: {registered:?}"
            );
        }
        for (key, bytes) in self.store.prefix_range(LEASE_KEY) {
            if let Some(LeaseRecord::Active(lease)) = decode(bytes) {
                let id = Hash::from_slice(&key[LEASE_KEY.len()..])
                    .expect("lease keys hold a 32-byte id");
                let reserved = scheduler.reserve(id, &lease.placement);
                assert!(reserved.is_ok(), "committed leases fit: {reserved:?}");
            }
        }
        for id in withdrawn {
            let drained = scheduler.withdraw(&id);
            assert!(
                matches!(drained, Ok(Withdrawal::Draining { .. })),
                "a withdrawn asset in state still has leases: {drained:?}"
            );
        }
        self.scheduler = scheduler;
    }
}

fn decode<T: serde::de::DeserializeOwned + Serialize>(bytes: &[u8]) -> Option<T> {
    hm_wire::decode(bytes, hm_kernel::block::STATE_VALUE_BYTES_MAX).ok()
}

/// One block's execution: writes over the committed state, and the
/// scheduler copied on the first change.
struct Run<'a> {
    app: &'a AssetApp,
    block: BlockContext,
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    scheduler: Option<Scheduler>,
}

impl<'a> Run<'a> {
    fn get(&self, key: &[u8]) -> Option<&[u8]> {
        match self.writes.get(key) {
            Some(value) => value.as_deref(),
            None => self.app.store.get(key),
        }
    }

    fn read<T: serde::de::DeserializeOwned + Serialize>(&self, key: &[u8]) -> Option<T> {
        decode(self.get(key)?)
    }

    fn put<T: Serialize>(&mut self, key: Vec<u8>, value: &T) {
        self.writes.insert(key, Some(hm_wire::encode(value)));
    }

    fn delete(&mut self, key: Vec<u8>) {
        self.writes.insert(key, None);
    }

    fn scheduler(&self) -> &Scheduler {
        self.scheduler.as_ref().unwrap_or(&self.app.scheduler)
    }

    fn scheduler_mut(&mut self) -> &mut Scheduler {
        self.scheduler
            .get_or_insert_with(|| self.app.scheduler.clone())
    }

    fn event_key(at_ms: u64, lease: &LeaseId) -> Vec<u8> {
        [EVENT_KEY, &at_ms.to_be_bytes(), lease.as_bytes()].concat()
    }

    /// Ends leases whose time has come and prunes old records, up to
    /// [`LEASE_EVENTS_PER_BLOCK_MAX`].
    fn lease_events(&mut self) {
        let now_ms = self.block.timestamp_ms;
        let due: Vec<(Vec<u8>, LeaseId)> = self
            .app
            .store
            .prefix_range(EVENT_KEY)
            .take(LEASE_EVENTS_PER_BLOCK_MAX)
            .filter_map(|(key, _)| {
                let at = key.get(EVENT_KEY.len()..EVENT_KEY.len() + 8)?;
                let at_ms = u64::from_be_bytes(at.try_into().ok()?);
                let lease = Hash::from_slice(key.get(EVENT_KEY.len() + 8..)?).ok()?;
                (at_ms <= now_ms).then(|| (key.clone(), lease))
            })
            .collect();
        for (event, lease) in due {
            self.delete(event);
            let key = AssetApp::lease_key(&lease);
            match self.read::<LeaseRecord>(&key) {
                Some(LeaseRecord::Active(active)) => self.end_lease(lease, active),
                Some(LeaseRecord::Refused { .. } | LeaseRecord::Ended { .. }) => self.delete(key),
                None => {}
            }
        }
    }

    fn end_lease(&mut self, id: LeaseId, lease: Lease) {
        let released = self.scheduler_mut().release(&id);
        debug_assert!(released.is_some(), "an active lease is reserved");
        for part in &lease.placement.parts {
            // A withdrawn asset goes with its last lease.
            if self.scheduler().asset(&part.asset).is_none() {
                self.delete(AssetApp::asset_key(&part.asset));
            }
        }
        let prune_at = self.block.timestamp_ms.saturating_add(LEASE_RECORD_KEEP_MS);
        self.put(Self::event_key(prune_at, &id), &());
        self.put(
            AssetApp::lease_key(&id),
            &LeaseRecord::Ended {
                lease,
                at_height: self.block.height,
            },
        );
    }

    fn execute(&mut self, tx: &AssetTx) -> Result<(), String> {
        let signer = tx.signer.fingerprint();
        let nonce_key = [NONCE_KEY, signer.as_bytes()].concat();
        let last_nonce: u64 = self.read(&nonce_key).unwrap_or(0);
        if tx.nonce <= last_nonce {
            return Err(format!(
                "nonce {} is not above the signer's last {last_nonce}; sign with a higher one",
                tx.nonce
            ));
        }
        tx.signer
            .verify(
                ASSET_TX_DOMAIN,
                &signing_bytes(&self.app.chain_id, &signer, tx.nonce, &tx.op),
                &tx.signature,
            )
            .map_err(|_| {
                "the signature does not verify for its signer and this chain".to_string()
            })?;
        tx.check_limits().map_err(|error| error.to_string())?;
        // From here the nonce is spent, whatever the operation's outcome: a
        // refused request is not replayed once capacity frees.
        self.put(nonce_key, &tx.nonce);
        match &tx.op {
            AssetOp::Register(spec) | AssetOp::Update(spec) => {
                let asset = spec.to_asset(&signer);
                let scheduler = self.scheduler_mut();
                let done = if matches!(tx.op, AssetOp::Register(_)) {
                    scheduler.register(asset.clone())
                } else {
                    scheduler.update(asset.clone())
                };
                done.map_err(|error| error.to_string())?;
                self.put(
                    AssetApp::asset_key(&asset.id),
                    &AssetRecord {
                        asset,
                        withdrawn: false,
                    },
                );
                Ok(())
            }
            AssetOp::Withdraw { name } => {
                let id = asset_id(&signer, name);
                match self
                    .scheduler_mut()
                    .withdraw(&id)
                    .map_err(|error| error.to_string())?
                {
                    Withdrawal::Removed => self.delete(AssetApp::asset_key(&id)),
                    Withdrawal::Draining { .. } => {
                        let mut record: AssetRecord = self
                            .read(&AssetApp::asset_key(&id))
                            .ok_or("the asset's record is missing")?;
                        record.withdrawn = true;
                        self.put(AssetApp::asset_key(&id), &record);
                    }
                }
                Ok(())
            }
            AssetOp::RequestLease(request) => {
                let id = lease_id(&signer, tx.nonce);
                let tenant = Tenant {
                    id: signer,
                    standing: self
                        .app
                        .standings
                        .standing(&signer, self.block.timestamp_ms),
                };
                let placed = self.scheduler().place(request, &tenant);
                let record = match placed {
                    Ok(placement) => {
                        let reserved = self.scheduler_mut().reserve(id, &placement);
                        debug_assert!(reserved.is_ok(), "placed on this very state");
                        reserved.map_err(|error| error.to_string())?;
                        let expires_ms =
                            self.block.timestamp_ms.saturating_add(request.duration_ms);
                        self.put(Self::event_key(expires_ms, &id), &());
                        LeaseRecord::Active(Lease {
                            tenant: signer,
                            placement,
                            granted_height: self.block.height,
                            expires_ms,
                        })
                    }
                    Err(unmet) => {
                        let prune_at = self.block.timestamp_ms.saturating_add(LEASE_RECORD_KEEP_MS);
                        self.put(Self::event_key(prune_at, &id), &());
                        LeaseRecord::Refused {
                            reason: unmet.to_string(),
                            at_height: self.block.height,
                        }
                    }
                };
                self.put(AssetApp::lease_key(&id), &record);
                Ok(())
            }
            AssetOp::RenewLease { lease, extend_ms } => {
                let mut active = self.active_lease(lease, &signer)?;
                let expires_ms = active.expires_ms.saturating_add(*extend_ms);
                let longest = self
                    .block
                    .timestamp_ms
                    .saturating_add(crate::model::LEASE_DURATION_MAX_MS);
                if expires_ms > longest {
                    return Err(format!(
                        "a lease may run at most {} ms ahead; renew later or for less",
                        crate::model::LEASE_DURATION_MAX_MS
                    ));
                }
                self.delete(Self::event_key(active.expires_ms, lease));
                self.put(Self::event_key(expires_ms, lease), &());
                active.expires_ms = expires_ms;
                self.put(AssetApp::lease_key(lease), &LeaseRecord::Active(active));
                Ok(())
            }
            AssetOp::ReleaseLease { lease } => {
                let active = self.active_lease(lease, &signer)?;
                self.delete(Self::event_key(active.expires_ms, lease));
                self.end_lease(*lease, active);
                Ok(())
            }
        }
    }

    fn active_lease(&self, lease: &LeaseId, signer: &Hash) -> Result<Lease, String> {
        match self.read::<LeaseRecord>(&AssetApp::lease_key(lease)) {
            Some(LeaseRecord::Active(active)) if active.tenant == *signer => Ok(active),
            Some(LeaseRecord::Active(_)) => Err("only the lease's tenant may change it".into()),
            Some(_) => Err(format!("lease {lease} has ended or was refused")),
            None => Err(format!("lease {lease} is unknown")),
        }
    }
}

impl Application for AssetApp {
    /// Decoding and limits; signatures, nonces and state rules are checked
    /// at execution.
    fn check_tx(&self, tx: &Transaction) -> Result<(), TxError> {
        let decoded = AssetTx::decode(&tx.0)?;
        decoded
            .check_limits()
            .map_err(|error| TxError::Rejected(error.to_string()))
    }

    fn execute_block(&self, block: BlockContext, transactions: &[Transaction]) -> Execution {
        let mut run = Run {
            app: self,
            block,
            writes: BTreeMap::new(),
            scheduler: None,
        };
        run.lease_events();
        let results = transactions
            .iter()
            .map(|tx| {
                let decoded = AssetTx::decode(&tx.0)?;
                run.execute(&decoded).map_err(TxError::Rejected)
            })
            .collect();
        if let Some(scheduler) = &run.scheduler
            && let Err(violation) = scheduler.check()
        {
            // Σ reserved ≤ capacity, and reservations = leases: a bug here
            // would over-allocate on every replica alike; stop instead.
            panic!(
                "asset invariants broken at height {}: {violation}",
                block.height
            );
        }
        let prepared = self.store.prepare(&run.writes);
        let state_root = prepared.root;
        let updates = run
            .writes
            .into_iter()
            .map(|(key, value)| StateUpdate { key, value })
            .collect();
        Execution {
            updates,
            state_root,
            log_head: hm_kernel::block::LogHead::empty(),
            results,
            hint: CommitHint::new(Prepared {
                store: prepared,
                scheduler: run.scheduler,
            }),
        }
    }

    fn commit_execution(
        &mut self,
        height: Height,
        execution: &Execution,
    ) -> Result<(), CommitError> {
        self.commit_with_hint(height, &execution.updates, &execution.hint)
    }

    fn commit(&mut self, height: Height, updates: &[StateUpdate]) -> Result<(), CommitError> {
        self.commit_with_hint(height, updates, &CommitHint::default())
    }

    fn state_root(&self) -> Hash {
        self.store.root()
    }

    fn committed_height(&self) -> Height {
        self.height
    }
}

impl AssetApp {
    /// Commits `updates`, reusing `hint` when execution made it for this
    /// very state and write set; otherwise (a replay from disk, a sync)
    /// applies them and rebuilds the scheduler from the committed state.
    pub fn commit_with_hint(
        &mut self,
        height: Height,
        updates: &[StateUpdate],
        hint: &CommitHint,
    ) -> Result<(), CommitError> {
        self.check_order(height)?;
        match hint.get::<Prepared>() {
            Some(prepared) if self.store.apply_prepared(updates, &prepared.store) => {
                if let Some(scheduler) = &prepared.scheduler {
                    self.scheduler = scheduler.clone();
                }
            }
            _ => {
                self.store.apply(updates);
                self.rebuild_scheduler();
            }
        }
        self.height = height;
        Ok(())
    }

    fn check_order(&self, height: Height) -> Result<(), CommitError> {
        if height != self.height + 1 {
            return Err(CommitError::OutOfOrder {
                committed: self.height,
                got: height,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "registry_tests.rs"]
mod tests;
