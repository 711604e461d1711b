//! Transactions waiting for a block: bounded in count and bytes,
//! de-duplicated by transaction id, admitted only after the application's
//! `check_tx`, reaped in arrival order.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use hm_wire::Hash;

use crate::app::{Application, TxError};
use crate::block::{BLOCK_TRANSACTION_BYTES_MAX, TRANSACTIONS_PER_BLOCK_MAX, Transaction};

/// Transactions held at most (a flood beyond this is refused, not queued).
pub const MEMPOOL_TRANSACTIONS_MAX: usize = 20_000;
/// Bytes held at most.
pub const MEMPOOL_BYTES_MAX: usize = 64 << 20;
/// Ids of recently committed transactions remembered to refuse replays that
/// arrive after their block (older replays are the application's job: KV
/// nonces, account sequence numbers).
pub const RECENTLY_COMMITTED_MAX: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MempoolError {
    #[error("transaction {id} is already in the mempool")]
    Duplicate { id: Hash },
    #[error("transaction {id} was committed recently")]
    AlreadyCommitted { id: Hash },
    #[error("mempool is full ({count} transactions, {bytes} bytes); retry later")]
    Full { count: usize, bytes: usize },
    #[error(transparent)]
    Invalid(#[from] TxError),
    #[error(
        "transaction {id} is in this node's mempool and on its way to the validators, but the \
         node could not save it to disk ({reason}): a restart of this node would lose it; submit \
         it to another node too"
    )]
    Unsaved { id: Hash, reason: String },
    #[error(
        "this node keeps {count} client transactions that are not committed yet, its limit; \
         retry once some commit"
    )]
    TooManyUnsaved { count: usize },
}

#[derive(Debug, Default)]
pub struct Mempool {
    order: VecDeque<Hash>,
    transactions: BTreeMap<Hash, Transaction>,
    bytes: usize,
    committed: BTreeSet<Hash>,
    committed_order: VecDeque<Hash>,
}

impl Mempool {
    pub fn new() -> Mempool {
        Mempool::default()
    }

    pub fn len(&self) -> usize {
        self.transactions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.transactions.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn contains(&self, id: &Hash) -> bool {
        self.transactions.contains_key(id)
    }

    pub fn get(&self, id: &Hash) -> Option<&Transaction> {
        self.transactions.get(id)
    }

    /// Admits `tx` after the application's check. Returns its id.
    pub fn insert<A: Application + ?Sized>(
        &mut self,
        app: &A,
        tx: Transaction,
    ) -> Result<Hash, MempoolError> {
        let id = tx.id();
        if self.transactions.contains_key(&id) {
            return Err(MempoolError::Duplicate { id });
        }
        if self.committed.contains(&id) {
            return Err(MempoolError::AlreadyCommitted { id });
        }
        if self.transactions.len() >= MEMPOOL_TRANSACTIONS_MAX
            || self.bytes + tx.0.len() > MEMPOOL_BYTES_MAX
        {
            return Err(MempoolError::Full {
                count: self.transactions.len(),
                bytes: self.bytes,
            });
        }
        app.check_tx(&tx)?;
        self.bytes += tx.0.len();
        self.order.push_back(id);
        self.transactions.insert(id, tx);
        Ok(id)
    }

    /// The oldest transactions that fit in one block, without removing
    /// them (they leave when their block commits).
    pub fn reap(&self, count_max: usize, bytes_max: usize) -> Vec<Transaction> {
        let count_max = count_max.min(TRANSACTIONS_PER_BLOCK_MAX);
        let bytes_max = bytes_max.min(BLOCK_TRANSACTION_BYTES_MAX);
        let mut reaped = Vec::new();
        let mut bytes = 0;
        for id in &self.order {
            if reaped.len() == count_max {
                break;
            }
            let Some(tx) = self.transactions.get(id) else {
                continue;
            };
            if bytes + tx.0.len() > bytes_max {
                break;
            }
            bytes += tx.0.len();
            reaped.push(tx.clone());
        }
        reaped
    }

    /// Forgets committed transactions, by id ([`Transaction::id`]), and
    /// remembers them so late copies are not admitted again.
    pub fn remove_committed(&mut self, ids: &[Hash]) {
        for &id in ids {
            if let Some(removed) = self.transactions.remove(&id) {
                self.bytes -= removed.0.len();
            }
            if self.committed.insert(id) {
                self.committed_order.push_back(id);
            }
        }
        while self.committed_order.len() > RECENTLY_COMMITTED_MAX {
            if let Some(old) = self.committed_order.pop_front() {
                self.committed.remove(&old);
            }
        }
        // Drop ids of removed transactions from the arrival order lazily:
        // compact when most entries are stale.
        if self.order.len() > 2 * self.transactions.len() + 64 {
            self.order.retain(|id| self.transactions.contains_key(id));
        }
        debug_assert!(self.transactions.len() <= self.order.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::{KvApp, KvOp, KvTx};

    fn tx(nonce: u64) -> Transaction {
        KvTx {
            op: KvOp::Put {
                key: b"k".to_vec(),
                value: vec![1; 10],
            },
            nonce,
        }
        .to_transaction()
    }

    #[test]
    fn deduplicates_and_refuses_committed_replays() {
        let app = KvApp::new();
        let mut pool = Mempool::new();
        let id = pool.insert(&app, tx(1)).expect("admitted");
        assert_eq!(
            pool.insert(&app, tx(1)),
            Err(MempoolError::Duplicate { id })
        );
        pool.remove_committed(&[tx(1).id()]);
        assert!(pool.is_empty());
        assert_eq!(pool.bytes(), 0);
        assert_eq!(
            pool.insert(&app, tx(1)),
            Err(MempoolError::AlreadyCommitted { id })
        );
    }

    #[test]
    fn refuses_invalid_and_reaps_in_order_within_limits() {
        let app = KvApp::new();
        let mut pool = Mempool::new();
        assert!(matches!(
            pool.insert(&app, Transaction(vec![9; 3])),
            Err(MempoolError::Invalid(_))
        ));
        for nonce in 0..10 {
            pool.insert(&app, tx(nonce)).expect("admitted");
        }
        let reaped = pool.reap(4, usize::MAX);
        assert_eq!(reaped, (0..4).map(tx).collect::<Vec<_>>());
        let one_size = tx(0).0.len();
        assert_eq!(pool.reap(100, one_size * 3 + 1).len(), 3);
        pool.remove_committed(&reaped.iter().map(Transaction::id).collect::<Vec<_>>());
        assert_eq!(pool.reap(1, usize::MAX), vec![tx(4)]);
    }

    #[test]
    fn full_pool_refuses() {
        let app = KvApp::new();
        let mut pool = Mempool::new();
        for nonce in 0..MEMPOOL_TRANSACTIONS_MAX as u64 {
            pool.insert(&app, tx(nonce)).expect("room left");
        }
        assert!(matches!(
            pool.insert(&app, tx(u64::MAX)),
            Err(MempoolError::Full { .. })
        ));
    }
}
