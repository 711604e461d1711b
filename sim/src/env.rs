//! `SimEnv`: one simulated node's Env bundle.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use hm_env::mem::{MemDisk, SeededEntropy, StaticHardware};
use hm_env::{BoxSleep, Clock, Disk, DiskError, Entries, Entropy, Env, WriteBatch};

use crate::net::{SimNet, SimNetwork};
use crate::world::{Auditor, EventKind, lock};

/// A node's wall-clock error as a function of virtual time (TigerBeetle's
/// clock model): a constant step, a linear drift and a periodic swing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ClockOffset {
    pub step_ms: i64,
    /// Parts per million the clock runs fast (positive) or slow (negative).
    pub drift_ppm: i64,
    /// Peak of a triangle wave added to the offset.
    pub periodic_amplitude_ms: i64,
    pub periodic_period_ms: u64,
    /// Virtual milliseconds at which the drift started.
    pub since_ms: u64,
}

impl ClockOffset {
    /// Offset in ms at `elapsed_ms` of virtual time since the start.
    pub fn offset_ms(&self, elapsed_ms: u64) -> i64 {
        let running_ms =
            i64::try_from(elapsed_ms.saturating_sub(self.since_ms)).unwrap_or(i64::MAX);
        let drift = running_ms.saturating_mul(self.drift_ppm) / 1_000_000;
        let periodic = if self.periodic_period_ms > 0 && self.periodic_amplitude_ms != 0 {
            let period = self.periodic_period_ms;
            let phase = i64::try_from(elapsed_ms % period).unwrap_or(0);
            let half = i64::try_from(period / 2).unwrap_or(1).max(1);
            // Triangle wave in [-A, A].
            let ramp = if phase < half {
                phase
            } else {
                2 * half - phase
            };
            self.periodic_amplitude_ms * (2 * ramp - half) / half
        } else {
            0
        };
        self.step_ms.saturating_add(drift).saturating_add(periodic)
    }
}

/// Virtual time, with this node's wall-clock offset applied to `wall_ms`.
#[derive(Debug, Clone)]
pub struct SimClock {
    offset: Arc<Mutex<ClockOffset>>,
    auditor: Arc<Auditor>,
    start: Instant,
    node: u32,
}

/// Wall time at virtual start: 2026-01-01T00:00:00Z, fixed so runs replay.
pub const EPOCH_WALL_MS: u64 = 1_767_225_600_000;

impl Clock for SimClock {
    #[allow(clippy::disallowed_methods)] // virtual time: madsim intercepts the OS clock
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn wall_ms(&self) -> u64 {
        let elapsed_ms =
            u64::try_from(self.now().duration_since(self.start).as_millis()).unwrap_or(u64::MAX);
        let offset = lock(&self.offset).offset_ms(elapsed_ms);
        EPOCH_WALL_MS
            .saturating_add(elapsed_ms)
            .saturating_add_signed(offset)
    }

    fn sleep_until(&self, deadline: Instant) -> BoxSleep {
        let auditor = self.auditor.clone();
        let start = self.start;
        let node = self.node;
        Box::pin(async move {
            SimSleep::until(deadline).await;
            let at_ns = u64::try_from(deadline.saturating_duration_since(start).as_nanos())
                .unwrap_or(u64::MAX);
            auditor.record(EventKind::Timer, at_ns, &[&node.to_le_bytes()]);
        })
    }
}

/// A node's disk: the crash-aware `MemDisk` (it outlives restarts; the runner
/// crashes it when the node is killed), with every operation in the digest.
#[derive(Debug, Clone)]
pub struct SimDisk {
    pub(crate) inner: MemDisk,
    auditor: Arc<Auditor>,
    start: Instant,
    node: u32,
}

impl SimDisk {
    fn record(&self, op: &[u8], cf: &str, key: &[u8]) {
        #[allow(clippy::disallowed_methods)] // virtual time
        let at_ns = u64::try_from(
            Instant::now()
                .saturating_duration_since(self.start)
                .as_nanos(),
        )
        .unwrap_or(u64::MAX);
        self.auditor.record(
            EventKind::DiskOp,
            at_ns,
            &[&self.node.to_le_bytes(), op, cf.as_bytes(), key],
        );
    }
}

impl Disk for SimDisk {
    fn column_families(&self) -> &[&'static str] {
        self.inner.column_families()
    }

    fn get(&self, cf: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>, DiskError> {
        self.record(b"get", cf, key);
        self.inner.get(cf, key)
    }

    fn write(&self, batch: WriteBatch) -> Result<(), DiskError> {
        let first_key = batch
            .ops
            .first()
            .map(|op| op.key().to_vec())
            .unwrap_or_default();
        self.record(
            b"write",
            batch.ops.first().map_or("", |op| op.cf()),
            &first_key,
        );
        self.inner.write(batch)
    }

    fn sync(&self) -> Result<(), DiskError> {
        self.record(b"sync", "", b"");
        self.inner.sync()
    }

    fn scan_prefix(
        &self,
        cf: &'static str,
        prefix: &[u8],
        limit: usize,
    ) -> Result<Entries, DiskError> {
        self.record(b"scan", cf, prefix);
        self.inner.scan_prefix(cf, prefix, limit)
    }
}

/// Entropy derived from (scenario seed, node, boot number), recorded in the digest.
#[derive(Debug, Clone)]
pub struct SimEntropy {
    inner: Arc<SeededEntropy>,
    auditor: Arc<Auditor>,
    node: u32,
}

impl Entropy for SimEntropy {
    fn fill_bytes(&self, dest: &mut [u8]) {
        self.inner.fill_bytes(dest);
        self.auditor.record(
            EventKind::EntropyDraw,
            0,
            &[&self.node.to_le_bytes(), &(dest.len() as u64).to_le_bytes()],
        );
    }
}

/// What survives a node's restarts: its disk and its clock model.
#[derive(Debug, Clone)]
pub struct NodeHardwareState {
    pub disk: MemDisk,
    pub clock_offset: Arc<Mutex<ClockOffset>>,
    pub hardware: StaticHardware,
}

#[derive(Debug, Clone)]
pub struct SimEnv {
    clock: SimClock,
    net: SimNet,
    disk: SimDisk,
    hardware: StaticHardware,
    entropy: SimEntropy,
}

impl SimEnv {
    /// The Env of node `node` in its `boot`-th life.
    pub fn new(
        seed: u64,
        node: u32,
        boot: u32,
        state: &NodeHardwareState,
        network: Arc<SimNetwork>,
        auditor: Arc<Auditor>,
        start: Instant,
    ) -> Self {
        let stream = format!("node-{node}-boot-{boot}");
        Self {
            clock: SimClock {
                offset: state.clock_offset.clone(),
                auditor: auditor.clone(),
                start,
                node,
            },
            net: SimNet { network, node },
            disk: SimDisk {
                inner: state.disk.clone(),
                auditor: auditor.clone(),
                start,
                node,
            },
            hardware: state.hardware.clone(),
            entropy: SimEntropy {
                inner: Arc::new(SeededEntropy::new(seed, stream.as_bytes())),
                auditor,
                node,
            },
        }
    }
}

impl Env for SimEnv {
    type Clock = SimClock;
    type Net = SimNet;
    type Disk = SimDisk;
    type Hardware = StaticHardware;
    type Entropy = SimEntropy;

    fn clock(&self) -> &SimClock {
        &self.clock
    }
    fn net(&self) -> &SimNet {
        &self.net
    }
    fn disk(&self) -> &SimDisk {
        &self.disk
    }
    fn hardware(&self) -> &StaticHardware {
        &self.hardware
    }
    fn entropy(&self) -> &SimEntropy {
        &self.entropy
    }
}

/// Virtual milliseconds since `start`.
pub fn elapsed_ms(start: Instant) -> u64 {
    #[allow(clippy::disallowed_methods)] // virtual time
    let now = Instant::now();
    u64::try_from(now.saturating_duration_since(start).as_millis()).unwrap_or(u64::MAX)
}

pub fn duration_ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

/// madsim's `Sleep` adds a timer to the simulation every time it is polled
/// while pending, and a timer stays until its deadline, then wakes the
/// task. A sleep polled on every packet (quinn's connection timers, a
/// socket waiting for its next datagram, `timeout` around a stream write)
/// thus piled up timers that each woke its task again for nothing. This
/// one registers once per waker.
pub(crate) struct SimSleep {
    sleep: madsim::time::Sleep,
    registered: Option<Waker>,
}

impl SimSleep {
    pub(crate) fn until(deadline: Instant) -> SimSleep {
        SimSleep {
            sleep: madsim::time::sleep_until(deadline),
            registered: None,
        }
    }
}

impl Future for SimSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if let Some(waker) = &this.registered
            && waker.will_wake(cx.waker())
            && !this.sleep.is_elapsed()
        {
            // Our timer is in the simulation and will wake this waker.
            return Poll::Pending;
        }
        match Pin::new(&mut this.sleep).poll(cx) {
            Poll::Pending => {
                this.registered = Some(cx.waker().clone());
                Poll::Pending
            }
            Poll::Ready(()) => Poll::Ready(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_offset_combines_step_drift_and_a_bounded_swing() {
        let offset = ClockOffset {
            step_ms: 100,
            drift_ppm: 1_000,
            periodic_amplitude_ms: 50,
            periodic_period_ms: 10_000,
            since_ms: 0,
        };
        // 1000 ppm over 60 s is 60 ms of drift.
        let at_60s = offset.offset_ms(60_000);
        assert!(
            (100 + 60 - 50..=100 + 60 + 50).contains(&at_60s),
            "{at_60s}"
        );
        for t in (0..100_000).step_by(250) {
            let swing = offset.offset_ms(t) - 100 - (t as i64) / 1_000;
            assert!((-50..=50).contains(&swing), "swing {swing} at {t}");
        }
        assert_eq!(ClockOffset::default().offset_ms(123_456), 0);
    }
}
