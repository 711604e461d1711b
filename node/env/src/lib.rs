#![doc = include_str!("../README.md")]

pub mod clock;
pub mod disk;
pub mod entropy;
pub mod hardware;
pub mod mem;
pub mod net;

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
