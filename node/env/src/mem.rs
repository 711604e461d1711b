//! In-memory doubles for unit tests: a crash-aware disk, a loopback network,
//! seeded entropy, fixed hardware, and a [`TestEnv`] bundling them.
//!
//! `MemDisk` is also the storage model the simulator builds on, so its crash
//! semantics are the contract of [`crate::Disk`] made executable.

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, IoSliceMut};
use std::net::SocketAddrV6;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use sha2::{Digest, Sha256};

use crate::disk::{BatchOp, Disk, DiskError, Entries, SCAN_ENTRIES_MAX, WriteBatch, key_hex};
use crate::hardware::{Hardware, HardwareInventory, UsageSample};
use crate::net::{DATAGRAM_BYTES_MAX, DatagramSocket, Net, RecvMeta, Transmit};
use crate::{Entropy, Env, RuntimeClock};

use crate::sync::lock;

// ---------------------------------------------------------------- disk

/// A stored value: shared bytes (identical values written by many
/// simulated nodes are one allocation, see `crate::intern`; durable and
/// current tables share too) and the checksum taken when written.
#[derive(Debug, Clone, PartialEq, Eq)]
struct StoredValue {
    bytes: Arc<[u8]>,
    checksum: u64,
    /// Untouched since written: the bytes are the ones checksummed (shared
    /// values are immutable, and [`MemDisk::corrupt`] clears this), so a
    /// read need not hash them again.
    pristine: bool,
}

impl StoredValue {
    fn new(bytes: &[u8]) -> Self {
        let (bytes, checksum) = crate::intern::intern_with_checksum(bytes);
        Self {
            bytes,
            checksum,
            pristine: true,
        }
    }

    fn is_intact(&self) -> bool {
        self.pristine || crate::intern::checksum(&self.bytes) == self.checksum
    }
}

type Table = BTreeMap<(&'static str, Vec<u8>), StoredValue>;

#[derive(Debug, Default)]
struct DiskState {
    /// What survives a crash.
    durable: Table,
    /// Batches written since the last sync, oldest first, their values
    /// already interned and checksummed (a sync or crash replays them
    /// without hashing every value again).
    unsynced: Vec<StoredBatch>,
    /// `durable` with `unsynced` applied: what reads see.
    current: Table,
    /// The next this many operations fail with an I/O error.
    io_errors_pending: u32,
    ops_total: u64,
}

/// A written batch as the disk keeps it: `None` deletes the key.
type StoredBatch = Vec<((&'static str, Vec<u8>), Option<StoredValue>)>;

fn stored_batch(batch: WriteBatch) -> StoredBatch {
    batch
        .ops
        .into_iter()
        .map(|op| match op {
            BatchOp::Put { cf, key, value } => ((cf, key), Some(StoredValue::new(&value))),
            BatchOp::Delete { cf, key } => ((cf, key), None),
        })
        .collect()
}

fn apply(table: &mut Table, batch: &StoredBatch) {
    for (key, value) in batch {
        match value {
            Some(value) => {
                table.insert(key.clone(), value.clone());
            }
            None => {
                table.remove(key);
            }
        }
    }
}

/// An in-memory [`Disk`] with crash semantics: unsynced batches can be lost
/// (whole, in suffix order), I/O errors can be injected, and every value is
/// checksummed so injected corruption is detected on read.
#[derive(Debug, Clone)]
pub struct MemDisk {
    column_families: Arc<Vec<&'static str>>,
    state: Arc<Mutex<DiskState>>,
}

impl MemDisk {
    pub fn new(column_families: &[&'static str]) -> Self {
        Self {
            column_families: Arc::new(column_families.to_vec()),
            state: Arc::new(Mutex::new(DiskState::default())),
        }
    }

    /// Simulates power loss: keeps the durable state plus the oldest
    /// `unsynced_batches_kept` unsynced batches, drops the rest.
    pub fn crash(&self, unsynced_batches_kept: usize) {
        let mut state = lock(&self.state);
        let kept = unsynced_batches_kept.min(state.unsynced.len());
        let batches: Vec<StoredBatch> = state.unsynced.drain(..).take(kept).collect();
        let mut table = state.durable.clone();
        for batch in &batches {
            apply(&mut table, batch);
        }
        state.durable = table.clone();
        state.current = table;
    }

    /// How many batches a crash right now could lose.
    pub fn unsynced_batches(&self) -> usize {
        lock(&self.state).unsynced.len()
    }

    /// The next `count` operations (reads, writes, syncs, scans) fail.
    pub fn inject_io_errors(&self, count: u32) {
        lock(&self.state).io_errors_pending += count;
    }

    /// Drops injected errors not yet consumed, returning how many: an
    /// outside reader (the simulator's auditor) reads the stored bytes,
    /// not through the node's failing I/O path.
    pub fn clear_io_errors(&self) -> u32 {
        std::mem::take(&mut lock(&self.state).io_errors_pending)
    }

    /// Flips one bit of the stored value (durable and current), as a bad
    /// sector would. Returns false when the key does not exist.
    pub fn corrupt(&self, cf: &'static str, key: &[u8], byte_index: usize) -> bool {
        let mut state = lock(&self.state);
        let mut found = false;
        let state = &mut *state;
        for table in [&mut state.durable, &mut state.current] {
            if let Some(value) = table.get_mut(&(cf, key.to_vec())) {
                value.pristine = false;
                if value.bytes.is_empty() {
                    value.checksum ^= 1;
                } else {
                    // Copy on write: other holders of these bytes keep
                    // theirs intact.
                    let mut bytes = value.bytes.to_vec();
                    let index = byte_index % bytes.len();
                    bytes[index] ^= 0x01;
                    value.bytes = Arc::from(bytes);
                }
                found = true;
            }
        }
        found
    }

    /// Total operations served (for the simulator's statistics).
    pub fn ops_total(&self) -> u64 {
        lock(&self.state).ops_total
    }

    fn begin_op(&self) -> Result<MutexGuard<'_, DiskState>, DiskError> {
        let mut state = lock(&self.state);
        state.ops_total += 1;
        if state.io_errors_pending > 0 {
            state.io_errors_pending -= 1;
            return Err(DiskError::Io("injected I/O error".to_string()));
        }
        Ok(state)
    }

    fn check_cf(&self, cf: &'static str) -> Result<(), DiskError> {
        if self.column_families.contains(&cf) {
            Ok(())
        } else {
            Err(DiskError::UnknownColumnFamily(cf.to_string()))
        }
    }
}

impl Disk for MemDisk {
    fn column_families(&self) -> &[&'static str] {
        &self.column_families
    }

    fn get(&self, cf: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>, DiskError> {
        self.check_cf(cf)?;
        let state = self.begin_op()?;
        match state.current.get(&(cf, key.to_vec())) {
            None => Ok(None),
            Some(value) if value.is_intact() => Ok(Some(value.bytes.to_vec())),
            Some(_) => Err(DiskError::Corrupted {
                cf: cf.to_string(),
                key_hex: key_hex(key),
            }),
        }
    }

    fn write(&self, batch: WriteBatch) -> Result<(), DiskError> {
        batch.validate(&self.column_families)?;
        let mut state = self.begin_op()?;
        let batch = stored_batch(batch);
        apply(&mut state.current, &batch);
        state.unsynced.push(batch);
        Ok(())
    }

    fn sync(&self) -> Result<(), DiskError> {
        let mut state = self.begin_op()?;
        let state = &mut *state;
        for batch in state.unsynced.drain(..) {
            apply(&mut state.durable, &batch);
        }
        Ok(())
    }

    fn scan_prefix(
        &self,
        cf: &'static str,
        prefix: &[u8],
        limit: usize,
    ) -> Result<Entries, DiskError> {
        self.check_cf(cf)?;
        let state = self.begin_op()?;
        let limit = limit.min(SCAN_ENTRIES_MAX);
        let mut out = Vec::new();
        for ((_, key), value) in state
            .current
            .range((cf, prefix.to_vec())..)
            .take_while(|((entry_cf, key), _)| *entry_cf == cf && key.starts_with(prefix))
            .take(limit)
        {
            if !value.is_intact() {
                return Err(DiskError::Corrupted {
                    cf: cf.to_string(),
                    key_hex: key_hex(key),
                });
            }
            out.push((key.clone(), value.bytes.to_vec()));
        }
        Ok(out)
    }
}

// ---------------------------------------------------------------- entropy

/// Deterministic entropy: SHA-256 in counter mode over a seed. Not for keys
/// that must stay secret outside tests and the simulator.
#[derive(Debug)]
pub struct SeededEntropy {
    state: Mutex<(Vec<u8>, u64)>,
}

impl SeededEntropy {
    pub fn new(seed: u64, stream: &[u8]) -> Self {
        let mut key = seed.to_le_bytes().to_vec();
        key.extend_from_slice(stream);
        Self {
            state: Mutex::new((key, 0)),
        }
    }
}

impl Entropy for SeededEntropy {
    fn fill_bytes(&self, dest: &mut [u8]) {
        let mut state = lock(&self.state);
        for chunk in dest.chunks_mut(32) {
            let mut hasher = Sha256::new();
            hasher.update(b"hm-env/seeded-entropy/v1");
            hasher.update(&state.0);
            hasher.update(state.1.to_le_bytes());
            state.1 += 1;
            let block = hasher.finalize();
            chunk.copy_from_slice(&block[..chunk.len()]);
        }
    }
}

// ---------------------------------------------------------------- hardware

/// Hardware that never changes: a profile in, the same answers out.
#[derive(Debug, Clone, Default)]
pub struct StaticHardware {
    pub inventory: HardwareInventory,
    pub usage: UsageSample,
}

impl Hardware for StaticHardware {
    fn inventory(&self) -> HardwareInventory {
        self.inventory.clone()
    }

    fn sample(&self) -> UsageSample {
        self.usage
    }
}

// ---------------------------------------------------------------- network

/// Most datagrams queued at one socket; more are dropped, as a full UDP
/// receive buffer would.
pub const MEM_SOCKET_QUEUE_MAX: usize = 4096;

#[derive(Debug, Default)]
struct Inbox {
    queue: VecDeque<(SocketAddrV6, Vec<u8>)>,
    waker: Option<Waker>,
}

type SharedInbox = Arc<Mutex<Inbox>>;

#[derive(Debug, Default)]
struct MemNetState {
    sockets: BTreeMap<SocketAddrV6, SharedInbox>,
    next_port: u16,
    dropped_total: u64,
}

/// A lossless in-process network: datagrams arrive immediately, in order.
/// For unit tests of code above `Net`; the simulator has the real model.
#[derive(Debug, Clone, Default)]
pub struct MemNet {
    state: Arc<Mutex<MemNetState>>,
}

impl MemNet {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn dropped_total(&self) -> u64 {
        lock(&self.state).dropped_total
    }
}

#[derive(Debug)]
pub struct MemSocket {
    addr: SocketAddrV6,
    inbox: Arc<Mutex<Inbox>>,
    net: MemNet,
}

impl Drop for MemSocket {
    fn drop(&mut self) {
        lock(&self.net.state).sockets.remove(&self.addr);
    }
}

impl Net for MemNet {
    type Socket = MemSocket;

    fn bind(&self, mut addr: SocketAddrV6) -> io::Result<MemSocket> {
        let mut state = lock(&self.state);
        if addr.port() == 0 {
            for _ in 0..u16::MAX {
                state.next_port = state.next_port.wrapping_add(1).max(1024);
                let candidate = SocketAddrV6::new(*addr.ip(), state.next_port, 0, 0);
                if !state.sockets.contains_key(&candidate) {
                    addr = candidate;
                    break;
                }
            }
        }
        if state.sockets.contains_key(&addr) || addr.port() == 0 {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("{addr} is already bound"),
            ));
        }
        let inbox = Arc::new(Mutex::new(Inbox::default()));
        state.sockets.insert(addr, inbox.clone());
        Ok(MemSocket {
            addr,
            inbox,
            net: self.clone(),
        })
    }
}

impl DatagramSocket for MemSocket {
    fn local_addr(&self) -> SocketAddrV6 {
        self.addr
    }

    fn try_send(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        let inbox = lock(&self.net.state)
            .sockets
            .get(&transmit.destination)
            .cloned();
        let Some(inbox) = inbox else {
            return Ok(()); // nobody listening: UDP drops silently
        };
        let mut inbox = lock(&inbox);
        let mut dropped = 0;
        for datagram in transmit.datagrams() {
            if datagram.len() > DATAGRAM_BYTES_MAX || inbox.queue.len() >= MEM_SOCKET_QUEUE_MAX {
                dropped += 1;
                continue;
            }
            inbox.queue.push_back((self.addr, datagram.to_vec()));
        }
        if let Some(waker) = inbox.waker.take() {
            waker.wake();
        }
        drop(inbox);
        if dropped > 0 {
            lock(&self.net.state).dropped_total += dropped;
        }
        Ok(())
    }

    fn poll_writable(&self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let mut inbox = lock(&self.inbox);
        let mut filled = 0;
        while filled < bufs.len().min(meta.len()) {
            let Some((source, datagram)) = inbox.queue.pop_front() else {
                break;
            };
            meta[filled] = RecvMeta::fill_one(&mut bufs[filled], &datagram, source, self.addr);
            filled += 1;
        }
        if filled > 0 {
            return Poll::Ready(Ok(filled));
        }
        inbox.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

// ---------------------------------------------------------------- bundle

/// Column families the test bundle's disk is opened with.
pub const TEST_COLUMN_FAMILIES: &[&str] = &["default", "meta", "identity", "membership"];

/// An [`Env`] for unit tests: runtime clock, in-process network, crash-aware
/// memory disk, seeded entropy, static hardware.
#[derive(Debug, Clone)]
pub struct TestEnv {
    pub clock: RuntimeClock,
    pub net: MemNet,
    pub disk: MemDisk,
    pub hardware: StaticHardware,
    pub entropy: Arc<SeededEntropy>,
}

impl TestEnv {
    /// A node on `net` whose randomness is derived from `seed` and `name`.
    pub fn new(net: &MemNet, seed: u64, name: &str) -> Self {
        Self {
            clock: RuntimeClock,
            net: net.clone(),
            disk: MemDisk::new(TEST_COLUMN_FAMILIES),
            hardware: StaticHardware::default(),
            entropy: Arc::new(SeededEntropy::new(seed, name.as_bytes())),
        }
    }
}

impl Entropy for Arc<SeededEntropy> {
    fn fill_bytes(&self, dest: &mut [u8]) {
        self.as_ref().fill_bytes(dest);
    }
}

impl Env for TestEnv {
    type Clock = RuntimeClock;
    type Net = MemNet;
    type Disk = MemDisk;
    type Hardware = StaticHardware;
    type Entropy = Arc<SeededEntropy>;

    fn clock(&self) -> &RuntimeClock {
        &self.clock
    }
    fn net(&self) -> &MemNet {
        &self.net
    }
    fn disk(&self) -> &MemDisk {
        &self.disk
    }
    fn hardware(&self) -> &StaticHardware {
        &self.hardware
    }
    fn entropy(&self) -> &Arc<SeededEntropy> {
        &self.entropy
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CF: &str = "default";

    fn put(disk: &MemDisk, key: &[u8], value: &[u8]) {
        let mut batch = WriteBatch::new();
        batch.put(CF, key, value);
        disk.write(batch).expect("write");
    }

    #[test]
    fn synced_writes_survive_a_crash_and_unsynced_ones_do_not() {
        let disk = MemDisk::new(&[CF]);
        put(&disk, b"a", b"1");
        disk.sync().expect("sync");
        put(&disk, b"b", b"2");
        assert_eq!(disk.get(CF, b"b").expect("get"), Some(b"2".to_vec()));
        disk.crash(0);
        assert_eq!(disk.get(CF, b"a").expect("get"), Some(b"1".to_vec()));
        assert_eq!(disk.get(CF, b"b").expect("get"), None);
    }

    #[test]
    fn corruption_is_detected_not_returned() {
        let disk = MemDisk::new(&[CF]);
        put(&disk, b"k", b"value");
        assert!(disk.corrupt(CF, b"k", 2));
        assert!(matches!(
            disk.get(CF, b"k"),
            Err(DiskError::Corrupted { .. })
        ));
        assert!(!disk.corrupt(CF, b"missing", 0));
    }

    #[test]
    fn injected_io_errors_fail_exactly_that_many_operations() {
        let disk = MemDisk::new(&[CF]);
        disk.inject_io_errors(2);
        assert!(matches!(disk.get(CF, b"x"), Err(DiskError::Io(_))));
        assert!(matches!(disk.sync(), Err(DiskError::Io(_))));
        assert_eq!(disk.get(CF, b"x"), Ok(None));
    }

    #[test]
    fn unknown_column_family_and_oversized_key_are_rejected() {
        let disk = MemDisk::new(&[CF]);
        let mut batch = WriteBatch::new();
        batch.put("nope", b"k".to_vec(), b"v".to_vec());
        assert_eq!(
            disk.write(batch),
            Err(DiskError::UnknownColumnFamily("nope".into()))
        );
        let mut batch = WriteBatch::new();
        batch.put(CF, vec![0u8; crate::disk::KEY_BYTES_MAX + 1], b"v".to_vec());
        assert!(matches!(disk.write(batch), Err(DiskError::TooLarge { .. })));
    }

    #[test]
    fn scan_returns_only_the_prefix_in_key_order() {
        let disk = MemDisk::new(&[CF, "other"]);
        for key in [&b"p/2"[..], b"p/1", b"q/1", b"p/3"] {
            put(&disk, key, key);
        }
        let mut batch = WriteBatch::new();
        batch.put("other", b"p/0".to_vec(), b"x".to_vec());
        disk.write(batch).expect("write");
        let keys: Vec<Vec<u8>> = disk
            .scan_prefix(CF, b"p/", 10)
            .expect("scan")
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(
            keys,
            vec![b"p/1".to_vec(), b"p/2".to_vec(), b"p/3".to_vec()]
        );
        assert_eq!(disk.scan_prefix(CF, b"p/", 2).expect("scan").len(), 2);
    }

    proptest! {
        /// After a crash keeping `kept` unsynced batches, the disk holds exactly
        /// the synced batches plus that prefix of the unsynced ones: whole
        /// batches, never a torn one, never a later one without an earlier one.
        #[test]
        fn crash_keeps_a_prefix_of_whole_batches(
            batches in prop::collection::vec(prop::collection::vec((0u8..8, any::<u8>()), 1..5), 0..12),
            synced in 0usize..12,
            kept in 0usize..12,
        ) {
            let disk = MemDisk::new(&[CF]);
            let mut model: BTreeMap<u8, u8> = BTreeMap::new();
            let synced = synced.min(batches.len());
            let mut expected = BTreeMap::new();
            for (index, ops) in batches.iter().enumerate() {
                let mut batch = WriteBatch::new();
                for (key, value) in ops {
                    batch.put(CF, vec![*key], vec![*value]);
                    model.insert(*key, *value);
                }
                disk.write(batch).expect("write");
                if index + 1 == synced {
                    disk.sync().expect("sync");
                }
                if index < synced + kept {
                    expected = model.clone();
                }
            }
            if batches.is_empty() { expected.clear(); }
            disk.crash(kept);
            for key in 0u8..8 {
                let got = disk.get(CF, &[key]).expect("get");
                prop_assert_eq!(got, expected.get(&key).map(|v| vec![*v]));
            }
        }
    }

    #[test]
    fn seeded_entropy_replays_per_seed_and_stream() {
        let a = SeededEntropy::new(7, b"node-1");
        let b = SeededEntropy::new(7, b"node-1");
        let c = SeededEntropy::new(7, b"node-2");
        let (x, y, z): ([u8; 48], [u8; 48], [u8; 48]) = (a.array(), b.array(), c.array());
        assert_eq!(x, y);
        assert_ne!(x, z);
        assert!((0..1000).all(|_| a.below(10) < 10));
    }

    #[tokio::test]
    async fn mem_net_delivers_in_order_and_drops_to_nobody() {
        let net = MemNet::new();
        let any = SocketAddrV6::new(std::net::Ipv6Addr::LOCALHOST, 0, 0, 0);
        let a = net.bind(any).expect("bind a");
        let b = net.bind(any).expect("bind b");
        assert!(net.bind(a.local_addr()).is_err());
        for i in 0..3u8 {
            crate::send_to(&a, b.local_addr(), &[i])
                .await
                .expect("send");
        }
        let mut buf = [0u8; 16];
        for i in 0..3u8 {
            let (len, from) = crate::recv_from(&b, &mut buf).await.expect("recv");
            assert_eq!((&buf[..len], from), (&[i][..], a.local_addr()));
        }
        let gone = b.local_addr();
        drop(b);
        crate::send_to(&a, gone, b"lost")
            .await
            .expect("send to nobody is not an error");
    }
}
