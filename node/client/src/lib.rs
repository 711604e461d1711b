#![doc = include_str!("../README.md")]
// This crate is a real OS backend: with hm-host (and the simulator) it alone
// may touch sockets and the OS RNG. The lints stay on everywhere else.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

#[cfg(madsim)]
compile_error!(
    "hm-client is a real-OS backend and cannot be built with --cfg madsim; build the simulator with -p hm-sim"
);

pub mod api;
pub mod entropy;
pub mod net;

use hm_env::mem::{MemDisk, StaticHardware};
use hm_env::{Env, RuntimeClock};

pub use entropy::OsEntropy;
pub use net::{HostNet, HostSocket, NetTraffic, TrafficTotals};

/// The Env a client's endpoint runs on: real clock, sockets and RNG; a
/// disk in memory that nothing writes, and no hardware to report.
#[derive(Clone)]
pub struct ClientEnv {
    clock: RuntimeClock,
    net: HostNet,
    disk: MemDisk,
    hardware: StaticHardware,
    entropy: OsEntropy,
}

impl ClientEnv {
    pub fn new() -> ClientEnv {
        ClientEnv {
            clock: RuntimeClock,
            net: HostNet::default(),
            // STOQ keeps nothing on disk; no column family is ever asked for.
            disk: MemDisk::new(&[]),
            hardware: StaticHardware::default(),
            entropy: OsEntropy,
        }
    }
}

impl Default for ClientEnv {
    fn default() -> ClientEnv {
        ClientEnv::new()
    }
}

impl Env for ClientEnv {
    type Clock = RuntimeClock;
    type Net = HostNet;
    type Disk = MemDisk;
    type Hardware = StaticHardware;
    type Entropy = OsEntropy;

    fn clock(&self) -> &RuntimeClock {
        &self.clock
    }

    fn net(&self) -> &HostNet {
        &self.net
    }

    fn disk(&self) -> &MemDisk {
        &self.disk
    }

    fn hardware(&self) -> &StaticHardware {
        &self.hardware
    }

    fn entropy(&self) -> &OsEntropy {
        &self.entropy
    }
}
