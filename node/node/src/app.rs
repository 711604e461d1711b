//! The node's application: the chain's state machine composed from modules
//! (like ABCI/Cosmos routing). Each transaction names its module in its
//! first byte; each module owns the state keys that start with its byte.
//!
//! * [`MODULE_KV`] — the kernel's key-value module (test workloads, `put`).
//! * [`MODULE_TRUST`] — TrustChain: certificates, the CT log, DNS, findings.
//! * [`MODULE_ASSETS`] — the asset registry: assets, leases (who may lease
//!   is read from TrustChain's committed state: [`TrustStandings`]).
//!
//! The composed state root is a hash over the modules' roots
//! ([`hm_kernel::state::modules_root`]), each module's an authenticated tree,
//! so any key of any module has a compact proof ([`NodeApp::prove`]); the
//! block's log head is TrustChain's. Modules are independent, so a block's
//! transactions run per module in block order, and results come back in the
//! block's order.
//!
//! TrustChain's state is shared (`SharedTrust`) with the readers that need it
//! between blocks: the API (proofs, resolution), the phase-aware certificate
//! validator on every STOQ handshake, the monitor. Only this router writes it
//! (in `commit`), so readers always see a committed state.

use std::sync::{Arc, RwLock, RwLockReadGuard};

use hm_assets::{AssetApp, Standing, Standings};
use hm_kernel::app::{
    Application, BlockContext, CommitError, CommitHint, Execution, KvApp, TxError,
};
use hm_kernel::block::{Height, LogHead, STATE_KEY_BYTES_MAX, StateUpdate, Transaction};
use hm_kernel::state::ModuleProof;
use hm_trustchain::app::TrustApp;
use hm_wire::Hash;

/// First byte of a key-value transaction and of its state keys.
pub const MODULE_KV: u8 = 0;
/// First byte of a TrustChain transaction and of its state keys.
pub const MODULE_TRUST: u8 = 1;
/// First byte of an asset-registry transaction and of its state keys.
pub const MODULE_ASSETS: u8 = 2;

/// Block executions remembered process-wide when memos are on (see
/// [`hm_env::memo`]; the simulator turns them on: every node executes each
/// block on the same parent state).
static EXECUTIONS: hm_env::memo::Memo<Execution> = hm_env::memo::Memo::new(1 << 12, 256 << 20);

fn execution_weight(execution: &Execution) -> usize {
    execution
        .updates
        .iter()
        .map(|update| update.key.len() + update.value.as_ref().map_or(0, Vec::len) + 64)
        .sum::<usize>()
        + execution.results.len() * 32
}

/// TrustChain's committed state, readable from any task of the node.
#[derive(Clone)]
pub struct SharedTrust(Arc<RwLock<TrustApp>>);

impl SharedTrust {
    pub fn new(app: TrustApp) -> SharedTrust {
        SharedTrust(Arc::new(RwLock::new(app)))
    }

    /// Read access to the committed state. A poisoned lock means a panic in
    /// a commit, which already took the node down; reading on is safe
    /// because commits replace state only after they succeed.
    pub fn read(&self) -> RwLockReadGuard<'_, TrustApp> {
        hm_env::sync::read(&self.0)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, TrustApp> {
        hm_env::sync::write(&self.0)
    }
}

/// TrustChain's empty state for the chain of `genesis`: its validators are
/// the certificate authorities and the committee whose evidence it checks.
pub fn trust_app_for(
    genesis: &hm_kernel::genesis::Genesis,
    zone: hm_trustchain::name::DnsName,
) -> Result<TrustApp, hm_kernel::genesis::GenesisError> {
    let validators = genesis.validator_set()?;
    Ok(TrustApp::new(hm_trustchain::app::TrustConfig {
        zone,
        authorities: hm_trustchain::cert::Authorities::from_validators(&validators),
        chain_id: genesis.chain_id(),
        validators,
    }))
}

/// Who the asset registry admits, from TrustChain's committed state: a
/// subject with a usable certificate of this network is a member.
/// Execution reads it before the block commits, so every replica sees the
/// same parent state.
pub struct TrustStandings(pub SharedTrust);

impl Standings for TrustStandings {
    fn standing(&self, id: &Hash, now_ms: u64) -> Standing {
        if self.0.read().current_certificate(id, now_ms).is_some() {
            Standing::Member
        } else {
            Standing::Uncertified
        }
    }
}

/// What a block's execution leaves each hinted module for its commit.
struct NodeHint {
    trust: CommitHint,
    assets: CommitHint,
}

/// Wraps a module's transaction bytes for the chain.
pub fn module_tx(module: u8, inner: Vec<u8>) -> Transaction {
    let mut bytes = Vec::with_capacity(inner.len() + 1);
    bytes.push(module);
    bytes.extend_from_slice(&inner);
    Transaction(bytes)
}

/// A key-value transaction as the node's chain expects it.
pub fn kv_tx(tx: Transaction) -> Transaction {
    module_tx(MODULE_KV, tx.0)
}

/// A key-value put as the node's chain expects it. `nonce` keeps two puts
/// of the same pair apart (the chain drops a transaction it has seen).
pub fn kv_put(key: &[u8], value: &[u8], nonce: u64) -> Transaction {
    let tx = hm_kernel::app::KvTx {
        op: hm_kernel::app::KvOp::Put {
            key: key.to_vec(),
            value: value.to_vec(),
        },
        nonce,
    };
    kv_tx(tx.to_transaction())
}

/// A TrustChain transaction as the node's chain expects it.
pub fn trust_tx(tx: &hm_trustchain::tx::TrustTx) -> Transaction {
    module_tx(MODULE_TRUST, tx.encode())
}

/// An asset-registry transaction as the node's chain expects it.
pub fn asset_tx(tx: &hm_assets::AssetTx) -> Transaction {
    module_tx(MODULE_ASSETS, tx.encode())
}

/// The composed application.
pub struct NodeApp {
    kv: KvApp,
    trust: SharedTrust,
    assets: AssetApp,
}

fn split(tx: &Transaction) -> Result<(u8, Transaction), TxError> {
    match tx.0.split_first() {
        Some((module, rest)) => Ok((*module, Transaction(rest.to_vec()))),
        None => Err(TxError::Malformed("empty transaction".into())),
    }
}

fn unknown_module(module: u8) -> TxError {
    TxError::Malformed(format!(
        "unknown module {module} (0 is key-value, 1 is TrustChain, 2 is assets)"
    ))
}

impl NodeApp {
    pub fn new(trust: SharedTrust) -> NodeApp {
        let chain_id = trust.read().config().chain_id;
        NodeApp {
            kv: KvApp::new(),
            assets: AssetApp::new(chain_id, std::sync::Arc::new(TrustStandings(trust.clone()))),
            trust,
        }
    }

    pub fn assets(&self) -> &AssetApp {
        &self.assets
    }

    pub fn kv(&self) -> &KvApp {
        &self.kv
    }

    pub fn trust(&self) -> &SharedTrust {
        &self.trust
    }

    /// Everything a block's execution depends on: the committed state (its
    /// root and log head), the chain and zone the modules are configured
    /// for, the block's context and its transactions.
    fn execution_id(&self, block: BlockContext, transactions: &[Transaction]) -> [u8; 32] {
        let state_root = self.state_root();
        let (chain_id, zone, log_head) = {
            let trust = self.trust.read();
            (
                trust.config().chain_id,
                trust.zone().clone(),
                trust.log_head(),
            )
        };
        let numbers = [log_head.size, block.height, block.timestamp_ms].map(u64::to_le_bytes);
        let mut parts: Vec<&[u8]> = vec![
            state_root.as_bytes(),
            chain_id.as_bytes(),
            zone.as_str().as_bytes(),
            log_head.root.as_bytes(),
        ];
        parts.extend(numbers.iter().map(|bytes| bytes.as_slice()));
        // The transactions' root, when the kernel checked it, stands for
        // them (collision-resistant as the key itself); hashing megabytes
        // of certificates again per node is what the memo is to save.
        match &block.transactions_root {
            Some(root) => {
                parts.push(root.as_bytes());
                hm_env::memo::memo_id("hm/memo/node-app-execution/rooted", &parts)
            }
            None => {
                parts.extend(transactions.iter().map(|tx| tx.0.as_slice()));
                hm_env::memo::memo_id("hm/memo/node-app-execution", &parts)
            }
        }
    }

    fn execute_uncached(&self, block: BlockContext, transactions: &[Transaction]) -> Execution {
        let mut results: Vec<Result<(), TxError>> = Vec::with_capacity(transactions.len());
        // (module, position in the block) of each transaction a module runs.
        let mut kv_txs = Vec::new();
        let mut kv_slots = Vec::new();
        let mut trust_txs = Vec::new();
        let mut trust_slots = Vec::new();
        let mut asset_txs = Vec::new();
        let mut asset_slots = Vec::new();
        for (slot, tx) in transactions.iter().enumerate() {
            results.push(Ok(()));
            match split(tx) {
                Ok((MODULE_KV, inner)) => match check_kv(&inner) {
                    Ok(()) => {
                        kv_slots.push(slot);
                        kv_txs.push(inner);
                    }
                    Err(error) => results[slot] = Err(error),
                },
                Ok((MODULE_TRUST, inner)) => {
                    trust_slots.push(slot);
                    trust_txs.push(inner);
                }
                Ok((MODULE_ASSETS, inner)) => {
                    asset_slots.push(slot);
                    asset_txs.push(inner);
                }
                Ok((other, _)) => results[slot] = Err(unknown_module(other)),
                Err(error) => results[slot] = Err(error),
            }
        }
        // Each module runs a part of the transactions: not the root's.
        let block = BlockContext {
            transactions_root: None,
            ..block
        };
        let kv = self.kv.execute_block(block, &kv_txs);
        let trust = self.trust.read().execute_block(block, &trust_txs);
        // Every block runs the registry (leases end at block time).
        let assets = self.assets.execute_block(block, &asset_txs);
        for (slot, result) in kv_slots.into_iter().zip(kv.results) {
            results[slot] = result;
        }
        for (slot, result) in trust_slots.into_iter().zip(trust.results) {
            results[slot] = result;
        }
        for (slot, result) in asset_slots.into_iter().zip(assets.results) {
            results[slot] = result;
        }
        // Prefixing by the module byte keeps the write set sorted: every
        // key-value key sorts before every TrustChain key, and those before
        // every asset key.
        let mut updates =
            Vec::with_capacity(kv.updates.len() + trust.updates.len() + assets.updates.len());
        for (module, module_updates) in [
            (MODULE_KV, kv.updates),
            (MODULE_TRUST, trust.updates),
            (MODULE_ASSETS, assets.updates),
        ] {
            for update in module_updates {
                let mut key = Vec::with_capacity(update.key.len() + 1);
                key.push(module);
                key.extend_from_slice(&update.key);
                updates.push(StateUpdate {
                    key,
                    value: update.value,
                });
            }
        }
        debug_assert!(updates.windows(2).all(|pair| pair[0].key < pair[1].key));
        Execution {
            updates,
            state_root: Self::root_of(&kv.state_root, &trust.state_root, &assets.state_root),
            log_head: trust.log_head,
            results,
            // The key-value module has no hint; TrustChain's and the
            // registry's are kept (their write sets are prefixed here, so
            // not their updates roots).
            hint: CommitHint::new(NodeHint {
                trust: trust.hint.app_part(),
                assets: assets.hint.app_part(),
            }),
        }
    }

    /// Splits a write set by module and commits each part.
    fn commit_split(
        &mut self,
        height: Height,
        updates: &[StateUpdate],
        hint: &CommitHint,
    ) -> Result<(), CommitError> {
        let mut kv_updates = Vec::new();
        let mut trust_updates = Vec::new();
        let mut asset_updates = Vec::new();
        for update in updates {
            let Some((module, key)) = update.key.split_first() else {
                continue; // never written by execute_block
            };
            let stripped = StateUpdate {
                key: key.to_vec(),
                value: update.value.clone(),
            };
            match *module {
                MODULE_KV => kv_updates.push(stripped),
                MODULE_TRUST => trust_updates.push(stripped),
                MODULE_ASSETS => asset_updates.push(stripped),
                _ => {} // never written by execute_block
            }
        }
        let none = CommitHint::default();
        let hints = hint.get::<NodeHint>();
        self.kv.commit(height, &kv_updates)?;
        self.trust.write().commit_with_hint(
            height,
            &trust_updates,
            hints.map_or(&none, |hints| &hints.trust),
        )?;
        self.assets.commit_with_hint(
            height,
            &asset_updates,
            hints.map_or(&none, |hints| &hints.assets),
        )
    }

    /// The state root over the modules' roots, in module order (the
    /// module byte is the index).
    fn root_of(kv_root: &Hash, trust_root: &Hash, assets_root: &Hash) -> Hash {
        hm_kernel::state::modules_root(&[*kv_root, *trust_root, *assets_root])
    }

    /// A module's committed value for `key` (the module's own key, without
    /// the module byte) with its proof against the committed state root;
    /// `None` for an unknown module.
    pub fn prove(&self, module: u8, key: &[u8]) -> Option<(Option<Vec<u8>>, ModuleProof)> {
        let trust = self.trust.read();
        let module_roots = vec![
            self.kv.state_root(),
            trust.state_root(),
            self.assets.state_root(),
        ];
        let (value, proof) = match module {
            MODULE_KV => self.kv.prove(key),
            MODULE_TRUST => trust.prove(key),
            MODULE_ASSETS => self.assets.prove(key),
            _ => return None,
        };
        Some((
            value,
            ModuleProof {
                module,
                module_roots,
                proof,
            },
        ))
    }
}

/// Module-prefixed state keys must stay within the kernel's key limit, so a
/// module's own keys get one byte less.
fn check_kv(tx: &Transaction) -> Result<(), TxError> {
    let decoded = hm_kernel::app::KvTx::decode(tx)?;
    let key = match &decoded.op {
        hm_kernel::app::KvOp::Put { key, .. } | hm_kernel::app::KvOp::Delete { key } => key,
    };
    if key.len() >= STATE_KEY_BYTES_MAX {
        return Err(TxError::FieldTooLarge {
            what: "key",
            len: key.len(),
            max: STATE_KEY_BYTES_MAX - 1,
        });
    }
    Ok(())
}

impl Application for NodeApp {
    fn check_tx(&self, tx: &Transaction) -> Result<(), TxError> {
        let (module, inner) = split(tx)?;
        match module {
            MODULE_KV => {
                check_kv(&inner)?;
                self.kv.check_tx(&inner)
            }
            MODULE_TRUST => self.trust.read().check_tx(&inner),
            MODULE_ASSETS => self.assets.check_tx(&inner),
            other => Err(unknown_module(other)),
        }
    }

    fn execute_block(&self, block: BlockContext, transactions: &[Transaction]) -> Execution {
        EXECUTIONS.get_or_compute(
            || self.execution_id(block, transactions),
            execution_weight,
            || self.execute_uncached(block, transactions),
        )
    }

    fn commit(&mut self, height: Height, updates: &[StateUpdate]) -> Result<(), CommitError> {
        self.commit_split(height, updates, &CommitHint::default())
    }

    fn commit_execution(
        &mut self,
        height: Height,
        execution: &Execution,
    ) -> Result<(), CommitError> {
        self.commit_split(height, &execution.updates, &execution.hint)
    }

    fn state_root(&self) -> Hash {
        Self::root_of(
            &self.kv.state_root(),
            &self.trust.read().state_root(),
            &self.assets.state_root(),
        )
    }

    fn committed_height(&self) -> Height {
        self.kv.committed_height()
    }

    fn log_head(&self) -> LogHead {
        self.trust.read().log_head()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hm_env::mem::SeededEntropy;
    use hm_kernel::validators::ValidatorSet;
    use hm_wire::SigningKey;

    fn app() -> NodeApp {
        let key = SigningKey::generate(&SeededEntropy::new(1, b"app-validator"));
        let validators = ValidatorSet::new([(key.verifying_key(), 1)]).expect("one validator");
        NodeApp::new(SharedTrust::new(TrustApp::new(
            hm_trustchain::app::TrustConfig {
                zone: hm_trustchain::name::DnsName::parse("hm").expect("a valid zone"),
                authorities: hm_trustchain::cert::Authorities::from_validators(&validators),
                chain_id: Hash([0xc1; 32]),
                validators,
            },
        )))
    }

    #[test]
    fn every_module_key_is_proven_against_the_committed_state_root() {
        let mut app = app();
        let block = BlockContext::new(1, 1_000);
        let execution = app.execute_block(block, &[kv_put(b"a", b"1", 1)]);
        app.commit_execution(1, &execution).expect("commits");
        let root = app.state_root();
        assert_eq!(root, execution.state_root);
        let (value, proof) = app.prove(MODULE_KV, b"a").expect("a module");
        assert_eq!(value.as_deref(), Some(&b"1"[..]));
        assert_eq!(proof.verify(&root, MODULE_KV, b"a", Some(b"1")), Ok(()));
        // The same key claimed in TrustChain's module, or with another
        // value, is refused; TrustChain proves it absent.
        assert!(proof.verify(&root, MODULE_TRUST, b"a", Some(b"1")).is_err());
        assert!(proof.verify(&root, MODULE_KV, b"a", Some(b"2")).is_err());
        let (nothing, absence) = app.prove(MODULE_TRUST, b"a").expect("a module");
        assert_eq!(nothing, None);
        assert_eq!(absence.verify(&root, MODULE_TRUST, b"a", None), Ok(()));
        assert!(app.prove(7, b"a").is_none());
    }

    /// The asset registry runs as module 2: its keys are proven under the
    /// composed root, a tenant without a certificate is refused a lease
    /// with the reason (TrustChain's state is what `TrustStandings` reads),
    /// and a replay of the write set without the hint gives the same root.
    #[test]
    fn the_asset_registry_is_a_module_whose_standings_come_from_trustchain() {
        let mut node = app();
        let mut replayed = app();
        let provider = SigningKey::generate(&SeededEntropy::new(2, b"app-provider"));
        let tenant = SigningKey::generate(&SeededEntropy::new(3, b"app-tenant"));
        let chain_id = Hash([0xc1; 32]);
        let entropy = SeededEntropy::new(4, b"app-asset-txs");
        let spec = hm_assets::AssetSpec {
            name: "cpu0".into(),
            kind: hm_assets::AssetKind::Cpu,
            capacity: 4_000,
            attributes: hm_assets::Attributes::new(),
            privacy: hm_assets::Privacy::Network,
            price_per_quantum_hour: 1,
        };
        let register = hm_assets::AssetTx::sign(
            &chain_id,
            &provider,
            1,
            hm_assets::AssetOp::Register(spec),
            &entropy,
        );
        let tenant_id = tenant.verifying_key().fingerprint();
        let request = hm_assets::AssetTx::sign(
            &chain_id,
            &tenant,
            1,
            hm_assets::AssetOp::RequestLease(hm_assets::LeaseRequest {
                tenant: tenant_id,
                items: vec![hm_assets::RequestItem {
                    kind: hm_assets::AssetKind::Cpu,
                    amount: 1_000,
                    constraints: Vec::new(),
                }],
                widest_privacy: hm_assets::PrivacyLevel::Public,
                colocate: false,
                max_price_per_hour: u64::MAX,
                duration_ms: 60_000,
            }),
            &entropy,
        );
        let transactions = [asset_tx(&register), asset_tx(&request)];
        for tx in &transactions {
            assert_eq!(node.check_tx(tx), Ok(()));
        }
        let execution = node.execute_block(BlockContext::new(1, 1_000), &transactions);
        assert_eq!(execution.results, vec![Ok(()), Ok(())]);
        assert!(
            execution
                .updates
                .iter()
                .all(|update| update.key.first() == Some(&MODULE_ASSETS))
        );
        node.commit_execution(1, &execution).expect("commits");
        replayed.commit(1, &execution.updates).expect("commits");
        assert_eq!(replayed.state_root(), node.state_root());

        let root = node.state_root();
        let asset = hm_assets::asset_id(&provider.verifying_key().fingerprint(), "cpu0");
        let key = hm_assets::AssetApp::asset_key(&asset);
        let (value, proof) = node.prove(MODULE_ASSETS, &key).expect("a module");
        assert!(value.is_some());
        assert_eq!(
            proof.verify(&root, MODULE_ASSETS, &key, value.as_deref()),
            Ok(())
        );
        match node.assets().lease(&hm_assets::lease_id(&tenant_id, 1)) {
            Some(hm_assets::LeaseRecord::Refused { reason, .. }) => {
                assert!(reason.contains("certificate"), "{reason}")
            }
            other => panic!("an uncertified tenant is refused, got {other:?}"),
        }
    }

    /// hm-node's unit tests run as a real node does: memos are off, so every
    /// execution is computed and none is remembered (tests/memo.rs runs
    /// them on, in a process of its own).
    #[test]
    fn a_real_node_remembers_no_execution() {
        assert!(!hm_env::memo::enabled());
        let app = app();
        let block = BlockContext::new(1, 1_000);
        let transactions = [kv_put(b"a", b"1", 1)];
        let execution = app.execute_block(block, &transactions);
        assert_eq!(app.execute_block(block, &transactions), execution);
        assert_eq!(EXECUTIONS.hits_and_misses(), (0, 0));
        assert!(EXECUTIONS.is_empty());
    }
}
