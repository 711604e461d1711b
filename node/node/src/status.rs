//! What a running node reports about itself.

use std::collections::BTreeSet;
use std::net::SocketAddrV6;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::api::{ApiCall, ApiRequest, ApiResponse};
use crate::app::SharedTrust;
use crate::membership::NodeId;

/// Upper bounds (ms) of the own-commit latency histogram's buckets.
pub const COMMIT_LATENCY_BUCKETS_MS: [u64; 12] = [
    5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000,
];

/// The upper bound (ms) of the latency bucket holding quantile `q` (0..=1)
/// of per-bucket counts laid out as `own_commit_latency_buckets`; `None`
/// without counts, `u64::MAX` when it falls beyond the last bound.
pub fn latency_quantile_ms(buckets: &[u64], q: f64) -> Option<u64> {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    // The rank of the quantile, 1-based: the median of 4 is the 2nd.
    let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
    let mut seen = 0;
    for (index, count) in buckets.iter().enumerate() {
        seen += count;
        if seen >= rank {
            return Some(
                COMMIT_LATENCY_BUCKETS_MS
                    .get(index)
                    .copied()
                    .unwrap_or(u64::MAX),
            );
        }
    }
    Some(u64::MAX)
}

/// A snapshot of a node, refreshed by the node a few times a second.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeStatus {
    /// True between a successful boot and the node stopping.
    pub running: bool,
    pub node_id: Option<NodeId>,
    pub listen: Option<SocketAddrV6>,
    pub incarnation: u64,
    /// The membership view: every member believed alive, self included, sorted.
    pub alive_members: Vec<NodeId>,
    pub active_peers: Vec<NodeId>,
    /// Every peer this node ever held a connection with (identity verified).
    pub peers_accepted: BTreeSet<NodeId>,
    /// Connections refused because the peer's identity check failed.
    pub identity_rejections: u64,
    pub messages_sent: u64,
    pub messages_received: u64,
    pub messages_dropped: u64,
    /// Membership messages sent, by kind (see `Message::KIND_NAMES`).
    pub membership_sent_by_kind: Vec<u64>,
    /// Membership updates carried in gossip/sync messages sent.
    pub membership_updates_sent: u64,
    /// Outbound connections the transport completed.
    pub connections_dialed: u64,
    /// The chain, when the node runs one.
    pub chain: ChainStatus,
    /// TrustChain and the bootstrap phase, when the node takes part.
    pub trust: TrustStatus,
    /// Why the node stopped, if it stopped on an error.
    pub error: Option<String>,
}

/// What the chain service reports.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChainStatus {
    pub enabled: bool,
    pub validator: bool,
    /// Committed height and its block hash.
    pub height: u64,
    pub head: Option<hm_wire::Hash>,
    /// The consensus round a validator is in.
    pub round: Option<u32>,
    pub mempool: usize,
    pub links: usize,
    /// Hash of every committed block, by height - 1, as this life of the
    /// node knows them: read from its own disk when the chain service
    /// starts (replacing whatever an earlier life published), then one more
    /// per commit; at most `chain::STATUS_COMMITTED_MAX` (for the checkers,
    /// which judge a block lost or replaced by a crash from it).
    pub committed: Vec<hm_wire::Hash>,
    /// How many times a chain service started on this status handle: 1 in
    /// a real node (one life per process); the simulator keeps one handle
    /// per node across its restarts, so there it numbers the node's lives.
    #[serde(default)]
    pub boots: u32,
    /// The committed height this life found on its disk when it started.
    #[serde(default)]
    pub boot_height: u64,
    pub transactions_committed: u64,
    pub evidence_committed: u64,
    /// Peers' misbehaviour this node detected (invalid blocks, rejected
    /// messages, malformed bytes).
    pub misbehaviour_reports: u64,
    /// Light clients' evidence of conflicting certified headers this node
    /// checked and took (its duplicate votes pooled for the chain).
    #[serde(default)]
    pub light_evidence_taken: u64,
    pub messages_sent: u64,
    pub messages_received: u64,
    pub messages_dropped: u64,
    /// `(message kind, messages, bytes)` sent, by kind.
    pub sent_by_kind: Vec<(String, u64, u64)>,
    /// Own proposals committed, and the summed time from deciding to
    /// propose each to committing it (consensus latency).
    pub own_commits: u64,
    pub own_commit_latency_ms_total: u64,
    /// The same own commits by latency: entry `i` counts those at most
    /// [`COMMIT_LATENCY_BUCKETS_MS`]`[i]` and above the bound before it;
    /// one last entry counts the slower ones (not cumulative).
    #[serde(default)]
    pub own_commit_latency_buckets: Vec<u64>,
    /// Intervals between consecutive commits seen live (not while catching
    /// up from disk), and their sum: the commit rate.
    pub commit_intervals: u64,
    pub commit_interval_ms_total: u64,
    /// What a light node (`NodeRole::Light`) verified; `None` on replicas.
    #[serde(default)]
    pub light: Option<LightStatus>,
}

/// What a light node reports: the headers it trusts, the answers it
/// accepted with their proofs (so a checker can verify each again against
/// the audited chain), and what it refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LightStatus {
    /// The latest header the light client verified, and its hash.
    pub trusted_height: u64,
    pub trusted_hash: Option<hm_wire::Hash>,
    /// Every header it verified, `(height, header hash)`, newest last; at
    /// most [`LIGHT_HEADERS_SHOWN_MAX`].
    pub verified_headers: Vec<(u64, hm_wire::Hash)>,
    pub headers_verified: u64,
    /// Answers accepted with a verified proof (all of them, counted) and
    /// the latest [`LIGHT_ANSWERS_SHOWN_MAX`] themselves.
    pub answers_accepted: u64,
    pub accepted: Vec<AcceptedAnswer>,
    /// Answers refused (forged, stale, unproven, wrongly proven), by reason.
    pub answers_refused: u64,
    pub refused_by_reason: Vec<(String, u64)>,
    /// Two validly certified conflicting headers froze the client.
    pub frozen: bool,
    /// Full nodes that took the evidence that froze it.
    #[serde(default)]
    pub misbehaviour_reported: u32,
    /// Names this node resolved with proofs: `(name, resolved address)`.
    pub names_resolved: Vec<(String, Option<std::net::Ipv6Addr>)>,
}

/// Headers a light node's status lists.
pub const LIGHT_HEADERS_SHOWN_MAX: usize = 256;
/// Accepted answers a light node's status keeps.
pub const LIGHT_ANSWERS_SHOWN_MAX: usize = 32;

/// One answer a light node accepted: the value it took for `key` of
/// `module` at `height`, and the proof it checked against that height's
/// trusted state root.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AcceptedAnswer {
    pub height: u64,
    /// The hash of the header whose state root the proof was checked against.
    pub header_hash: hm_wire::Hash,
    pub module: u8,
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
    pub proof: hm_kernel::state::ModuleProof,
}

/// What the TrustChain agent and certificate validator report.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TrustStatus {
    pub enabled: bool,
    /// Bootstrap phase 0..=3.
    pub phase: u8,
    /// When each phase was entered (ms since the node's chain service
    /// started).
    pub phase_entered_ms: [Option<u64>; 4],
    pub missing_for_next_phase: Option<String>,
    /// The certificate presented on connections.
    pub certificate: Option<hm_wire::Hash>,
    pub certificate_chain_issued: bool,
    pub certificate_requests: u64,
    pub renewals: u64,
    pub name_claims: u64,
    pub reports_submitted: u64,
    /// Committed log heads that did not extend the previous one.
    pub head_inconsistencies: u64,
    /// Authority-signed heads the node's own log contradicted.
    pub false_heads_seen: u64,
    /// The committed certificate-log head.
    pub log_head: Option<hm_kernel::block::LogHead>,
    pub findings: u64,
    /// Certificates this node accepted from peers (fingerprints).
    pub accepted_certificates: BTreeSet<hm_wire::Hash>,
    pub refused_certificates: u64,
    pub pending_certificates: u64,
    pub uncertified_refused: u64,
    pub monitor_reports_queued: u64,
}

/// Shared, cheaply cloned access to a node's status, and to the node's
/// committed TrustChain state once it runs a chain (for readers outside the
/// node such as the host's DNS server).
#[derive(Clone, Default)]
pub struct StatusHandle(
    Arc<Mutex<NodeStatus>>,
    Arc<std::sync::OnceLock<SharedTrust>>,
    /// The chain service's API queue, for in-process callers (the host's
    /// HTTP API) that would otherwise dial the node's own STOQ port.
    Arc<std::sync::OnceLock<tokio::sync::mpsc::Sender<ApiCall>>>,
);

impl std::fmt::Debug for StatusHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusHandle").finish_non_exhaustive()
    }
}

impl StatusHandle {
    fn lock(&self) -> MutexGuard<'_, NodeStatus> {
        hm_env::sync::lock(&self.0)
    }

    /// The node's committed TrustChain state (names, certificates, the CT
    /// log), once its chain service exists; read-only by contract.
    pub fn trust(&self) -> Option<SharedTrust> {
        self.1.get().cloned()
    }

    pub(crate) fn set_trust(&self, trust: SharedTrust) {
        // Set once per node life; a restarted node in the same process
        // (the simulator) keeps the first, which it never reads.
        let _ = self.1.set(trust);
    }

    pub(crate) fn set_api(&self, calls: tokio::sync::mpsc::Sender<ApiCall>) {
        let _ = self.2.set(calls);
    }

    /// Asks the node's chain service, in process, what a client would ask
    /// over the STOQ API; the same answers, the same queue and limits.
    pub async fn call_api(&self, request: ApiRequest) -> ApiResponse {
        crate::api::call(self.2.get(), request).await
    }

    pub fn snapshot(&self) -> NodeStatus {
        self.lock().clone()
    }

    /// Reads the status in place (no copy of the member list).
    pub fn with<R>(&self, read: impl FnOnce(&NodeStatus) -> R) -> R {
        read(&self.lock())
    }

    pub fn update(&self, change: impl FnOnce(&mut NodeStatus)) {
        change(&mut self.lock());
    }

    /// The node was killed: it holds no view and no connections any more.
    /// What it committed and accepted stays on record for the safety
    /// checkers until its next life's chain service starts and publishes
    /// what its disk holds.
    pub fn mark_down(&self) {
        self.update(|status| {
            status.running = false;
            status.alive_members.clear();
            status.active_peers.clear();
        });
    }

    pub fn set_error(&self, error: String) {
        self.update(|status| {
            status.running = false;
            status.error = Some(error);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_quantiles_come_from_the_bucket_bounds() {
        let mut buckets = vec![0; COMMIT_LATENCY_BUCKETS_MS.len() + 1];
        assert_eq!(latency_quantile_ms(&buckets, 0.5), None);
        buckets[0] = 2; // <= 5 ms
        buckets[2] = 1; // <= 25 ms
        buckets[COMMIT_LATENCY_BUCKETS_MS.len()] = 1; // beyond 30 s
        assert_eq!(latency_quantile_ms(&buckets, 0.5), Some(5));
        assert_eq!(latency_quantile_ms(&buckets, 0.75), Some(25));
        assert_eq!(latency_quantile_ms(&buckets, 1.0), Some(u64::MAX));
        assert_eq!(latency_quantile_ms(&buckets, 0.0), Some(5));
    }
}
