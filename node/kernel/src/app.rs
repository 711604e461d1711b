//! The application interface blocks execute through, and the key-value
//! module consensus is tested with until the real modules (TrustChain, DNS,
//! Caesar, ...) register their own transaction types.
//!
//! Execution is deterministic: the same state and transactions give the same
//! write set and state root on every node, whatever the platform. That is why
//! state lives in ordered maps and roots are Merkle roots over sorted entries.

use std::any::Any;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, OnceLock};

use hm_env::Entropy;
use hm_wire::Hash;
use serde::{Deserialize, Serialize};

use crate::state::{self, StateProof, StateTree, TreeWrite};

use crate::block::{
    Height, LogHead, STATE_KEY_BYTES_MAX, STATE_VALUE_BYTES_MAX, StateUpdate,
    TRANSACTION_BYTES_MAX, Transaction,
};

/// What executing a block produced, before it is committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Execution {
    /// The write set, sorted by key, one entry per key.
    pub updates: Vec<StateUpdate>,
    /// The state root after applying `updates`.
    pub state_root: Hash,
    /// The application's transparency-log head after applying `updates`
    /// ([`LogHead::empty`] for an application without a log).
    pub log_head: LogHead,
    /// Per transaction: `Ok` or why it had no effect. A rejected transaction
    /// still occupies its place in the block (the proposer pays for it).
    pub results: Vec<Result<(), TxError>>,
    /// What the application worked out while executing that committing
    /// this write set can reuse.
    pub hint: CommitHint,
}

impl Execution {
    /// [`crate::block::updates_root`] of the write set, computed once and
    /// shared by every clone of this execution (a simulator's nodes share
    /// one execution of each block). The write set must not change after.
    pub fn updates_root(&self) -> Hash {
        *self
            .hint
            .updates_root
            .get_or_init(|| crate::block::updates_root(&self.updates))
    }
}

/// Work done while executing a block that its commit of the same write set
/// can reuse instead of redoing: for the application, hashes of the written
/// entries and shared copies of the values (opaque to the kernel); for the
/// kernel, the write set's root. Only a cache — the same state is committed
/// with or without it — so it takes no part in equality. Clones share it.
#[derive(Clone, Default)]
pub struct CommitHint {
    app: Option<Arc<dyn Any + Send + Sync>>,
    updates_root: Arc<OnceLock<Hash>>,
}

impl CommitHint {
    pub fn new<T: Any + Send + Sync>(value: T) -> CommitHint {
        CommitHint {
            app: Some(Arc::new(value)),
            updates_root: Arc::default(),
        }
    }

    /// The application's part alone, for an execution with another write
    /// set (a composed application wrapping a module's execution).
    pub fn app_part(&self) -> CommitHint {
        CommitHint {
            app: self.app.clone(),
            updates_root: Arc::default(),
        }
    }

    /// The application's hint, if there is one of type `T`.
    pub fn get<T: Any>(&self) -> Option<&T> {
        self.app.as_deref()?.downcast_ref::<T>()
    }
}

impl fmt::Debug for CommitHint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.app.is_some() {
            "CommitHint(..)"
        } else {
            "CommitHint(none)"
        })
    }
}

impl PartialEq for CommitHint {
    fn eq(&self, _other: &CommitHint) -> bool {
        true
    }
}

impl Eq for CommitHint {}

/// What a block tells the application besides its transactions: where it
/// sits and the proposer's timestamp (agreed by consensus, so the same on
/// every node: the only clock an application may read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockContext {
    pub height: Height,
    pub timestamp_ms: u64,
    /// The Merkle root of the transactions being executed, when the caller
    /// has checked it ([`crate::block::BlockBody::transactions_root`]): a
    /// digest of them an application may key caches by.
    pub transactions_root: Option<Hash>,
}

impl BlockContext {
    pub fn new(height: Height, timestamp_ms: u64) -> BlockContext {
        BlockContext {
            height,
            timestamp_ms,
            transactions_root: None,
        }
    }

    /// With the transactions' root, which the caller guarantees is the
    /// root of the transactions it executes.
    pub fn with_transactions_root(self, root: Hash) -> BlockContext {
        BlockContext {
            transactions_root: Some(root),
            ..self
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxError {
    #[error("transaction does not decode: {0}")]
    Malformed(String),
    #[error("transaction is {len} bytes, more than {TRANSACTION_BYTES_MAX}")]
    TooLarge { len: usize },
    #[error("{what} is {len} bytes, more than {max}")]
    FieldTooLarge {
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error("transaction rejected: {0}")]
    Rejected(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommitError {
    #[error("commit of height {got} does not follow the committed height {committed}")]
    OutOfOrder { committed: Height, got: Height },
}

/// A deterministic state machine the chain drives.
pub trait Application: Send + 'static {
    /// Stateless-ish admission check for the mempool: decodes and checks
    /// limits. Must not change state.
    fn check_tx(&self, tx: &Transaction) -> Result<(), TxError>;

    /// Executes `transactions` on top of the committed state without
    /// changing it.
    fn execute_block(&self, block: BlockContext, transactions: &[Transaction]) -> Execution;

    /// Applies a committed block's write set. Heights arrive in order.
    fn commit(&mut self, height: Height, updates: &[StateUpdate]) -> Result<(), CommitError>;

    /// Applies the write set of `execution`, which [`Application::execute_block`]
    /// produced on the state committed now; an application may reuse
    /// `execution.hint`. The same state results as from `commit`.
    fn commit_execution(
        &mut self,
        height: Height,
        execution: &Execution,
    ) -> Result<(), CommitError> {
        self.commit(height, &execution.updates)
    }

    /// Root over the committed state.
    fn state_root(&self) -> Hash;

    /// Head of the committed transparency log; an application without one
    /// keeps the default.
    fn log_head(&self) -> LogHead {
        LogHead::empty()
    }

    /// Height of the last committed block (0 before the first).
    fn committed_height(&self) -> Height;
}

/// Key-value transactions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvOp {
    Put { key: Vec<u8>, value: Vec<u8> },
    Delete { key: Vec<u8> },
}

/// A key-value transaction. The nonce makes equal operations distinct
/// transactions (the mempool de-duplicates by transaction id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvTx {
    pub op: KvOp,
    pub nonce: u64,
}

impl KvTx {
    pub fn to_transaction(&self) -> Transaction {
        Transaction(hm_wire::encode(self))
    }

    pub fn decode(tx: &Transaction) -> Result<KvTx, TxError> {
        if tx.0.len() > TRANSACTION_BYTES_MAX {
            return Err(TxError::TooLarge { len: tx.0.len() });
        }
        let decoded: KvTx = hm_wire::decode(&tx.0, TRANSACTION_BYTES_MAX)
            .map_err(|error| TxError::Malformed(error.to_string()))?;
        let key = match &decoded.op {
            KvOp::Put { key, value } => {
                field("value", value.len(), STATE_VALUE_BYTES_MAX)?;
                key
            }
            KvOp::Delete { key } => key,
        };
        field("key", key.len(), STATE_KEY_BYTES_MAX)?;
        if key.is_empty() {
            return Err(TxError::Rejected("the key is empty".into()));
        }
        Ok(decoded)
    }
}

fn field(what: &'static str, len: usize, max: usize) -> Result<(), TxError> {
    if len > max {
        return Err(TxError::FieldTooLarge { what, len, max });
    }
    Ok(())
}

/// The key-value module: an ordered map under an authenticated root
/// ([`StateTree`]), so every key has a compact proof.
#[derive(Debug, Clone, Default)]
pub struct KvApp {
    state: BTreeMap<Vec<u8>, Vec<u8>>,
    tree: StateTree,
    height: Height,
}

impl KvApp {
    pub fn new() -> KvApp {
        KvApp::default()
    }

    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.state.get(key).map(Vec::as_slice)
    }

    pub fn len(&self) -> usize {
        self.state.len()
    }

    pub fn is_empty(&self) -> bool {
        self.state.is_empty()
    }

    /// The committed value of `key` (or `None`) with its proof against the
    /// module's root.
    pub fn prove(&self, key: &[u8]) -> (Option<Vec<u8>>, StateProof) {
        (self.get(key).map(<[u8]>::to_vec), self.tree.prove(key))
    }
}

/// The tree writes of a write set.
fn tree_writes(updates: &[StateUpdate]) -> Vec<TreeWrite> {
    state::sorted_writes(
        updates
            .iter()
            .map(|update| {
                (
                    state::key_hash(&update.key),
                    update.value.as_deref().map(state::value_digest),
                )
            })
            .collect(),
    )
}

fn apply(state: &mut BTreeMap<Vec<u8>, Vec<u8>>, updates: &[StateUpdate]) {
    for update in updates {
        match &update.value {
            Some(value) => {
                state.insert(update.key.clone(), value.clone());
            }
            None => {
                state.remove(&update.key);
            }
        }
    }
}

impl Application for KvApp {
    fn check_tx(&self, tx: &Transaction) -> Result<(), TxError> {
        KvTx::decode(tx).map(|_| ())
    }

    fn execute_block(&self, _block: BlockContext, transactions: &[Transaction]) -> Execution {
        // The write set: last write per key wins, as sequential execution.
        let mut writes: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
        let results = transactions
            .iter()
            .map(|tx| {
                let decoded = KvTx::decode(tx)?;
                match decoded.op {
                    KvOp::Put { key, value } => writes.insert(key, Some(value)),
                    KvOp::Delete { key } => writes.insert(key, None),
                };
                Ok(())
            })
            .collect();
        let updates: Vec<StateUpdate> = writes
            .into_iter()
            .map(|(key, value)| StateUpdate { key, value })
            .collect();
        let state_root = self.tree.updated(&tree_writes(&updates)).root();
        Execution {
            updates,
            state_root,
            log_head: LogHead::empty(),
            results,
            hint: CommitHint::default(),
        }
    }

    fn commit(&mut self, height: Height, updates: &[StateUpdate]) -> Result<(), CommitError> {
        if height != self.height + 1 {
            return Err(CommitError::OutOfOrder {
                committed: self.height,
                got: height,
            });
        }
        apply(&mut self.state, updates);
        self.tree.apply(&tree_writes(updates));
        self.height = height;
        Ok(())
    }

    fn state_root(&self) -> Hash {
        self.tree.root()
    }

    fn committed_height(&self) -> Height {
        self.height
    }
}

/// Generates key-value transactions for tests and scenarios: puts and
/// deletes over a bounded key space so state size stays bounded too.
#[derive(Debug, Clone)]
pub struct KvWorkload {
    keys: u32,
    value_bytes: usize,
    next_nonce: u64,
}

impl KvWorkload {
    /// `keys` distinct keys, values of `value_bytes` bytes (capped at the
    /// state value limit). `nonce_base` separates generators on different
    /// nodes so their transactions never collide.
    pub fn new(keys: u32, value_bytes: usize, nonce_base: u64) -> KvWorkload {
        KvWorkload {
            keys: keys.max(1),
            value_bytes: value_bytes.min(STATE_VALUE_BYTES_MAX),
            next_nonce: nonce_base,
        }
    }

    pub fn next_tx<E: Entropy + ?Sized>(&mut self, entropy: &E) -> Transaction {
        let key_index = entropy.below(u64::from(self.keys));
        let key = format!("key-{key_index}").into_bytes();
        // One in eight operations deletes, so keys come and go.
        let op = if entropy.below(8) == 0 {
            KvOp::Delete { key }
        } else {
            let mut value = vec![0u8; self.value_bytes];
            entropy.fill_bytes(&mut value);
            KvOp::Put { key, value }
        };
        let nonce = self.next_nonce;
        self.next_nonce += 1;
        KvTx { op, nonce }.to_transaction()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hm_env::mem::SeededEntropy;
    use proptest::prelude::*;

    fn put(key: &str, value: &str, nonce: u64) -> Transaction {
        KvTx {
            op: KvOp::Put {
                key: key.into(),
                value: value.into(),
            },
            nonce,
        }
        .to_transaction()
    }

    #[test]
    fn execution_does_not_change_state_until_commit() {
        let mut app = KvApp::new();
        let empty_root = app.state_root();
        let execution = app.execute_block(
            BlockContext::new(1, 0),
            &[put("a", "1", 0), put("b", "2", 1)],
        );
        assert_eq!(app.state_root(), empty_root);
        assert_ne!(execution.state_root, empty_root);
        app.commit(1, &execution.updates).expect("in order");
        assert_eq!(app.state_root(), execution.state_root);
        assert_eq!(app.get(b"a"), Some(&b"1"[..]));
        assert_eq!(app.committed_height(), 1);
    }

    #[test]
    fn last_write_wins_and_bad_transactions_have_no_effect() {
        let app = KvApp::new();
        let garbage = Transaction(vec![0xff; 7]);
        let delete = KvTx {
            op: KvOp::Delete { key: "a".into() },
            nonce: 2,
        }
        .to_transaction();
        let execution = app.execute_block(
            BlockContext::new(1, 0),
            &[put("a", "1", 0), garbage, put("a", "3", 1)],
        );
        assert_eq!(execution.results.len(), 3);
        assert!(execution.results[1].is_err());
        assert_eq!(
            execution.updates,
            vec![StateUpdate {
                key: b"a".to_vec(),
                value: Some(b"3".to_vec())
            }]
        );
        let deleted = app.execute_block(BlockContext::new(1, 0), &[put("a", "1", 0), delete]);
        assert_eq!(deleted.updates[0].value, None);
        assert_eq!(deleted.state_root, KvApp::new().state_root());
    }

    #[test]
    fn commits_must_be_in_order() {
        let mut app = KvApp::new();
        assert_eq!(
            app.commit(2, &[]),
            Err(CommitError::OutOfOrder {
                committed: 0,
                got: 2
            })
        );
    }

    #[test]
    fn check_tx_rejects_oversized_fields() {
        let app = KvApp::new();
        let big_key = KvTx {
            op: KvOp::Delete {
                key: vec![1; STATE_KEY_BYTES_MAX + 1],
            },
            nonce: 0,
        };
        assert!(matches!(
            app.check_tx(&big_key.to_transaction()),
            Err(TxError::FieldTooLarge { what: "key", .. })
        ));
        assert!(
            app.check_tx(&Transaction(vec![0; TRANSACTION_BYTES_MAX + 1]))
                .is_err()
        );
    }

    proptest! {
        #[test]
        fn random_transaction_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let app = KvApp::new();
            let tx = Transaction(bytes);
            let _ = app.check_tx(&tx);
            let execution = app.execute_block(BlockContext::new(1, 0), std::slice::from_ref(&tx));
            prop_assert_eq!(execution.results.len(), 1);
        }

        #[test]
        fn same_transactions_same_root_on_two_nodes(seed in any::<u64>(), count in 0usize..40) {
            let entropy = SeededEntropy::new(seed, b"workload");
            let mut workload = KvWorkload::new(16, 8, 0);
            let txs: Vec<Transaction> = (0..count).map(|_| workload.next_tx(&entropy)).collect();
            let (mut one, mut two) = (KvApp::new(), KvApp::new());
            for (height, chunk) in txs.chunks(5).enumerate() {
                let height = height as u64 + 1;
                let a = one.execute_block(BlockContext::new(height, 0), chunk);
                let b = two.execute_block(BlockContext::new(height, 0), chunk);
                prop_assert_eq!(&a, &b);
                one.commit(height, &a.updates).expect("in order");
                two.commit(height, &b.updates).expect("in order");
            }
            prop_assert_eq!(one.state_root(), two.state_root());
            // Replaying the write sets alone reaches the same state: what
            // crash recovery relies on.
            prop_assert!(one.len() <= 16);
        }
    }
}
