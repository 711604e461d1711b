//! The universe one simulated run lives in: its seed, its digest, its counters.
//!
//! Everything here is touched from the single madsim thread; the mutexes only
//! satisfy `Send + Sync` and are never contended.

use std::sync::Mutex;

use sha2::{Digest, Sha256};

pub(crate) use hm_env::sync::lock;

/// What kind of event a digest entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum EventKind {
    Delivered = 1,
    Timer = 2,
    DiskOp = 3,
    EntropyDraw = 4,
    Fault = 5,
    Boot = 6,
}

/// Counters shown in the summary and the JSON report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counters {
    pub datagrams_sent: u64,
    pub datagrams_delivered: u64,
    pub datagrams_lost: u64,
    pub datagrams_partitioned: u64,
    pub datagrams_unroutable: u64,
    pub datagrams_duplicated: u64,
    pub datagram_bytes_delivered: u64,
    pub timers_fired: u64,
    pub disk_ops: u64,
    pub entropy_draws: u64,
    pub faults_applied: u64,
}

impl Counters {
    pub fn events_total(&self) -> u64 {
        self.datagrams_delivered + self.timers_fired + self.disk_ops + self.entropy_draws
    }
}

#[derive(Debug)]
struct Audit {
    digest: Sha256,
    counters: Counters,
}

/// The running SHA-256 digest of a run (commonware's Auditor is the model):
/// two runs with the same seed must end with the same digest.
#[derive(Debug)]
pub struct Auditor {
    audit: Mutex<Audit>,
}

impl Default for Auditor {
    fn default() -> Self {
        Self {
            audit: Mutex::new(Audit {
                digest: Sha256::new(),
                counters: Counters::default(),
            }),
        }
    }
}

impl Auditor {
    /// Folds one event into the digest. `at_ns` is virtual time since start.
    pub fn record(&self, kind: EventKind, at_ns: u64, fields: &[&[u8]]) {
        let mut audit = lock(&self.audit);
        audit.digest.update([kind as u8]);
        audit.digest.update(at_ns.to_le_bytes());
        for field in fields {
            audit.digest.update((field.len() as u64).to_le_bytes());
            audit.digest.update(field);
        }
        let counters = &mut audit.counters;
        match kind {
            EventKind::Delivered => counters.datagrams_delivered += 1,
            EventKind::Timer => counters.timers_fired += 1,
            EventKind::DiskOp => counters.disk_ops += 1,
            EventKind::EntropyDraw => counters.entropy_draws += 1,
            EventKind::Fault => counters.faults_applied += 1,
            EventKind::Boot => {}
        }
    }

    pub fn count(&self, update: impl FnOnce(&mut Counters)) {
        update(&mut lock(&self.audit).counters);
    }

    pub fn counters(&self) -> Counters {
        lock(&self.audit).counters
    }

    /// The digest so far, as lowercase hex.
    pub fn digest_hex(&self) -> String {
        let digest = lock(&self.audit).digest.clone().finalize();
        digest.iter().map(|byte| format!("{byte:02x}")).collect()
    }
}
