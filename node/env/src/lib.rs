#![doc = include_str!("../README.md")]

pub mod clock;
pub mod disk;
pub mod entropy;
pub mod hardware;
pub mod intern;
pub mod mem;
pub mod memo;
pub mod net;
pub mod sync;

pub use clock::{BoxSleep, Clock, Elapsed, RuntimeClock, timeout};
pub use disk::{BatchOp, Disk, DiskError, Entries, WriteBatch};
pub use entropy::Entropy;
pub use hardware::{GpuInfo, Hardware, HardwareInventory, UsageSample};
pub use net::{DatagramSocket, Net, RecvMeta, Transmit, recv_from, send_to};

/// The bundle a node runs on. Node code is generic over `E: Env` (static
/// dispatch); `hm-host` provides the real bundle and `hm-sim` the simulated one.
///
/// Tasks are spawned with `tokio::spawn`, which is madsim-tokio in this
/// workspace: the current node's task set inside the simulator.
pub trait Env: Clone + Send + Sync + 'static {
    type Clock: Clock;
    type Net: Net;
    type Disk: Disk;
    type Hardware: Hardware;
    type Entropy: Entropy;

    fn clock(&self) -> &Self::Clock;
    fn net(&self) -> &Self::Net;
    fn disk(&self) -> &Self::Disk;
    fn hardware(&self) -> &Self::Hardware;
    fn entropy(&self) -> &Self::Entropy;
}

/// An Env's disk as an owned value, for components that hold a `Disk` by
/// value (a chain store, a signer) while the node keeps the Env.
#[derive(Clone)]
pub struct EnvDisk<E: Env>(pub E);

impl<E: Env> Disk for EnvDisk<E> {
    fn column_families(&self) -> &[&'static str] {
        self.0.disk().column_families()
    }

    fn get(&self, cf: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>, DiskError> {
        self.0.disk().get(cf, key)
    }

    fn write(&self, batch: WriteBatch) -> Result<(), DiskError> {
        self.0.disk().write(batch)
    }

    fn sync(&self) -> Result<(), DiskError> {
        self.0.disk().sync()
    }

    fn scan_prefix(
        &self,
        cf: &'static str,
        prefix: &[u8],
        limit: usize,
    ) -> Result<Entries, DiskError> {
        self.0.disk().scan_prefix(cf, prefix, limit)
    }
}

impl<E: Env> std::fmt::Debug for EnvDisk<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EnvDisk")
    }
}

/// An Env's entropy as an owned value (see [`EnvDisk`]).
#[derive(Clone)]
pub struct EnvEntropy<E: Env>(pub E);

impl<E: Env> Entropy for EnvEntropy<E> {
    fn fill_bytes(&self, dest: &mut [u8]) {
        self.0.entropy().fill_bytes(dest);
    }
}

impl<E: Env> std::fmt::Debug for EnvEntropy<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EnvEntropy")
    }
}
