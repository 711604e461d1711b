//! The membership protocol's vocabulary: identities, member states, wire
//! messages, the actions the core asks its shell to perform, configuration
//! and counters. Everything here is plain data; the logic lives in `mod.rs`.

use std::fmt;
use std::net::SocketAddrV6;

use serde::{Deserialize, Serialize};

/// A node's identity: the hash of its public key, verified by the transport
/// (STOQ) before the core ever hears about a connection.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId(pub [u8; 32]);

impl fmt::Debug for NodeId {
    /// Short hex (the first 4 bytes): enough to tell nodes apart in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId(")?;
        for byte in &self.0[..4] {
            write!(f, "{byte:02x}")?;
        }
        write!(f, ")")
    }
}

/// SWIM status of a member. The discriminant order is the precedence at equal
/// incarnation: Dead > Suspect > Alive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Status {
    Alive,
    Suspect,
    Dead,
}

impl Status {
    pub fn rank(self) -> u8 {
        match self {
            Status::Alive => 0,
            Status::Suspect => 1,
            Status::Dead => 2,
        }
    }
}

/// What this node believes about one member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemberState {
    pub addr: SocketAddrV6,
    pub incarnation: u64,
    pub status: Status,
    /// Who reported the current status (the member itself for Alive).
    pub reporter: NodeId,
    /// Local virtual time (ms) at which this entry last changed.
    pub changed_ms: u64,
}

/// A membership update as disseminated by gossip and anti-entropy.
///
/// Suspect and Dead carry the address too, so that a node which first hears
/// of a member through a suspicion still knows where to find it (and a Dead
/// entry learned first still beats a stale Alive that arrives later).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Update {
    Alive {
        id: NodeId,
        addr: SocketAddrV6,
        incarnation: u64,
    },
    Suspect {
        id: NodeId,
        addr: SocketAddrV6,
        incarnation: u64,
        by: NodeId,
    },
    Dead {
        id: NodeId,
        addr: SocketAddrV6,
        incarnation: u64,
        by: NodeId,
    },
}

impl Update {
    pub fn id(&self) -> NodeId {
        match *self {
            Update::Alive { id, .. } | Update::Suspect { id, .. } | Update::Dead { id, .. } => id,
        }
    }

    pub fn addr(&self) -> SocketAddrV6 {
        match *self {
            Update::Alive { addr, .. }
            | Update::Suspect { addr, .. }
            | Update::Dead { addr, .. } => addr,
        }
    }

    pub fn incarnation(&self) -> u64 {
        match *self {
            Update::Alive { incarnation, .. }
            | Update::Suspect { incarnation, .. }
            | Update::Dead { incarnation, .. } => incarnation,
        }
    }

    pub fn status(&self) -> Status {
        match self {
            Update::Alive { .. } => Status::Alive,
            Update::Suspect { .. } => Status::Suspect,
            Update::Dead { .. } => Status::Dead,
        }
    }

    /// The member itself for Alive, the accuser otherwise.
    pub fn reporter(&self) -> NodeId {
        match *self {
            Update::Alive { id, .. } => id,
            Update::Suspect { by, .. } | Update::Dead { by, .. } => by,
        }
    }

    /// SWIM precedence key: compare keys of two updates for the same id; the
    /// larger one wins, equal keys are the same news.
    pub fn precedence(&self) -> (u64, u8) {
        (self.incarnation(), self.status().rank())
    }

    pub fn from_state(id: NodeId, state: &MemberState) -> Self {
        let (addr, incarnation, by) = (state.addr, state.incarnation, state.reporter);
        match state.status {
            Status::Alive => Update::Alive {
                id,
                addr,
                incarnation,
            },
            Status::Suspect => Update::Suspect {
                id,
                addr,
                incarnation,
                by,
            },
            Status::Dead => Update::Dead {
                id,
                addr,
                incarnation,
                by,
            },
        }
    }
}

/// A peer as named inside overlay messages (ForwardJoin, Shuffle).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Peer {
    pub id: NodeId,
    pub addr: SocketAddrV6,
}

/// Every message of the membership protocol. Sent over one transport
/// connection to one peer; the sender is the connection's verified identity.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub enum Message {
    /// HyParView JOIN: "add me to your active view and introduce me".
    /// Carries the sender's advertised listen address and incarnation.
    Join {
        addr: SocketAddrV6,
        incarnation: u64,
    },
    /// HyParView FORWARDJOIN random walk introducing `joiner`.
    ForwardJoin {
        joiner: Peer,
        ttl: u8,
    },
    /// HyParView NEIGHBOR request. High priority must be accepted (sent when
    /// the requester's active view is empty, or to finish a ForwardJoin).
    Neighbor {
        high_priority: bool,
        addr: SocketAddrV6,
        incarnation: u64,
    },
    NeighborReply {
        accepted: bool,
    },
    /// "You are no longer in my active view": a clean close, not a failure.
    Disconnect,
    /// Passive-view exchange with an active neighbour (one hop).
    Shuffle {
        peers: Vec<Peer>,
    },
    ShuffleReply {
        peers: Vec<Peer>,
    },
    /// A batch of membership updates.
    Gossip {
        updates: Vec<Update>,
    },
    /// Liveness probe, sent only when the link has been silent.
    Ping,
    Pong,
    /// Anti-entropy: a hash of the sender's table of (id, incarnation, status).
    Digest {
        hash: u64,
        members: u32,
        /// The same hash per id bucket (`DIGEST_BUCKETS` of them), so the
        /// answer carries only the buckets that differ.
        buckets: Vec<u64>,
    },
    /// One chunk of the sender's table restricted to the buckets in
    /// `buckets_mask` (bit b = bucket b), answering a Digest that did not match.
    Sync {
        updates: Vec<Update>,
        last: bool,
        buckets_mask: u32,
    },
    /// The entries the Sync sender lacked or had older (no further reply).
    SyncDiff {
        updates: Vec<Update>,
    },
}

/// Number of `Message` kinds (for per-kind counters).
pub const MESSAGE_KINDS: usize = 13;

impl Message {
    pub fn kind_index(&self) -> usize {
        match self {
            Message::Join { .. } => 0,
            Message::ForwardJoin { .. } => 1,
            Message::Neighbor { .. } => 2,
            Message::NeighborReply { .. } => 3,
            Message::Disconnect => 4,
            Message::Shuffle { .. } => 5,
            Message::ShuffleReply { .. } => 6,
            Message::Gossip { .. } => 7,
            Message::Ping => 8,
            Message::Pong => 9,
            Message::Digest { .. } => 10,
            Message::Sync { .. } => 11,
            Message::SyncDiff { .. } => 12,
        }
    }

    pub const KIND_NAMES: [&'static str; MESSAGE_KINDS] = [
        "join",
        "forward_join",
        "neighbor",
        "neighbor_reply",
        "disconnect",
        "shuffle",
        "shuffle_reply",
        "gossip",
        "ping",
        "pong",
        "digest",
        "sync",
        "sync_diff",
    ];
}

/// What the core asks its shell to do.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Open a transport connection; answer with `handle_connection_up` (with
    /// the verified NodeId) or `handle_connect_failed`.
    Connect { addr: SocketAddrV6 },
    /// Send one framed message over the connection to `to`.
    Send { to: NodeId, message: Message },
    /// Close the connection to `peer`.
    Disconnect { peer: NodeId },
}

/// Tunables. All nodes of one network should share the timing values: a
/// peer's silence limit (`probe_interval_ms + probe_timeout_ms`) must exceed
/// the other side's probe interval plus a round trip.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MembershipConfig {
    /// Active view size (open connections used for gossip). HyParView's
    /// `log10(N) + c`: 5 keeps 1,000–10,000 nodes connected with few links.
    pub active_view_max: usize,
    /// Passive view size (known addresses used to replace lost neighbours).
    pub passive_view_max: usize,
    /// HyParView ARWL: hops of a ForwardJoin walk.
    pub active_random_walk_len: u8,
    /// HyParView PRWL: the hop at which a ForwardJoin also lands in a passive view.
    pub passive_random_walk_len: u8,
    /// At most one gossip batch per active peer per this interval.
    pub gossip_interval_ms: u64,
    pub gossip_batch_updates_max: usize,
    /// Ping a neighbour that has been silent this long.
    pub probe_interval_ms: u64,
    /// After a ping, wait this long for any message before declaring the link down.
    pub probe_timeout_ms: u64,
    /// A Suspect that is not refuted within this becomes Dead.
    pub suspicion_timeout_ms: u64,
    pub anti_entropy_interval_ms: u64,
    pub shuffle_interval_ms: u64,
    /// Active peers and passive peers sent in one Shuffle.
    pub shuffle_active_count: usize,
    pub shuffle_passive_count: usize,
    /// Each node considers retrying one Dead member's address this often.
    pub dead_retry_interval_ms: u64,
    /// Cluster-wide expected number of dead-retry attempts per interval: a
    /// node attempts with probability `min(1, this / alive members)`, so the
    /// cost does not grow with the cluster while a healed partition is still
    /// found within about `dead_retry_interval_ms / this`.
    pub dead_retry_cluster_attempts: usize,
    /// First delay between attempts to refill a short active view; doubles
    /// per attempt up to `repair_backoff_max_ms`.
    pub repair_backoff_min_ms: u64,
    pub repair_backoff_max_ms: u64,
    /// Give up on a connect / neighbour handshake that got no answer.
    pub handshake_timeout_ms: u64,
    pub members_max: usize,
    pub sync_entries_max: usize,
}

impl Default for MembershipConfig {
    fn default() -> Self {
        Self {
            active_view_max: 5,
            passive_view_max: 30,
            active_random_walk_len: 6,
            passive_random_walk_len: 3,
            gossip_interval_ms: 500,
            gossip_batch_updates_max: 256,
            probe_interval_ms: 2_000,
            probe_timeout_ms: 2_000,
            suspicion_timeout_ms: 5_000,
            anti_entropy_interval_ms: 10_000,
            shuffle_interval_ms: 30_000,
            shuffle_active_count: 2,
            shuffle_passive_count: 4,
            dead_retry_interval_ms: 20_000,
            dead_retry_cluster_attempts: 8,
            repair_backoff_min_ms: 500,
            repair_backoff_max_ms: 30_000,
            handshake_timeout_ms: 5_000,
            members_max: 16_384,
            sync_entries_max: 256,
        }
    }
}

/// Upper bounds a configuration may not exceed: they bound the memory a
/// node commits and the size of messages it accepts.
pub const ACTIVE_VIEW_LIMIT: usize = 64;
pub const PASSIVE_VIEW_LIMIT: usize = 1_024;
pub const RANDOM_WALK_LIMIT: u8 = 16;
pub const BATCH_UPDATES_LIMIT: usize = 4_096;
pub const MEMBERS_LIMIT: usize = 1 << 20;
pub const SHUFFLE_PEERS_LIMIT: usize = 256;

/// A configuration value outside its allowed range.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MembershipConfigError {
    #[error(
        "membership config `{field}` = {value} is outside {min}..={max}; set it within that range"
    )]
    OutOfRange {
        field: &'static str,
        value: u64,
        min: u64,
        max: u64,
    },
    #[error(
        "membership config passive_random_walk_len ({passive}) must not exceed \
         active_random_walk_len ({active}); lower it or raise the active walk"
    )]
    WalkLengths { passive: u8, active: u8 },
}

impl MembershipConfig {
    /// Check every field; `Membership::new` clamps instead, so call this where
    /// the configuration is read and report the error to the operator.
    pub fn validate(&self) -> Result<(), MembershipConfigError> {
        let checks: [(&'static str, u64, u64, u64); 16] = [
            (
                "active_view_max",
                self.active_view_max as u64,
                1,
                ACTIVE_VIEW_LIMIT as u64,
            ),
            (
                "passive_view_max",
                self.passive_view_max as u64,
                1,
                PASSIVE_VIEW_LIMIT as u64,
            ),
            (
                "active_random_walk_len",
                self.active_random_walk_len.into(),
                0,
                RANDOM_WALK_LIMIT.into(),
            ),
            ("gossip_interval_ms", self.gossip_interval_ms, 1, 60_000),
            (
                "gossip_batch_updates_max",
                self.gossip_batch_updates_max as u64,
                1,
                BATCH_UPDATES_LIMIT as u64,
            ),
            ("probe_interval_ms", self.probe_interval_ms, 1, 600_000),
            ("probe_timeout_ms", self.probe_timeout_ms, 1, 600_000),
            (
                "suspicion_timeout_ms",
                self.suspicion_timeout_ms,
                1,
                3_600_000,
            ),
            (
                "anti_entropy_interval_ms",
                self.anti_entropy_interval_ms,
                1,
                3_600_000,
            ),
            (
                "shuffle_interval_ms",
                self.shuffle_interval_ms,
                1,
                3_600_000,
            ),
            (
                "dead_retry_interval_ms",
                self.dead_retry_interval_ms,
                1,
                3_600_000,
            ),
            (
                "repair_backoff_min_ms",
                self.repair_backoff_min_ms,
                1,
                600_000,
            ),
            (
                "repair_backoff_max_ms",
                self.repair_backoff_max_ms,
                self.repair_backoff_min_ms,
                3_600_000,
            ),
            (
                "handshake_timeout_ms",
                self.handshake_timeout_ms,
                1,
                600_000,
            ),
            (
                "members_max",
                self.members_max as u64,
                2,
                MEMBERS_LIMIT as u64,
            ),
            (
                "sync_entries_max",
                self.sync_entries_max as u64,
                1,
                BATCH_UPDATES_LIMIT as u64,
            ),
        ];
        for (field, value, min, max) in checks {
            if value < min || value > max {
                return Err(MembershipConfigError::OutOfRange {
                    field,
                    value,
                    min,
                    max,
                });
            }
        }
        let shuffle = self.shuffle_active_count + self.shuffle_passive_count + 1;
        if shuffle > SHUFFLE_PEERS_LIMIT {
            return Err(MembershipConfigError::OutOfRange {
                field: "shuffle_active_count + shuffle_passive_count",
                value: shuffle as u64,
                min: 0,
                max: SHUFFLE_PEERS_LIMIT as u64 - 1,
            });
        }
        if self.passive_random_walk_len > self.active_random_walk_len {
            return Err(MembershipConfigError::WalkLengths {
                passive: self.passive_random_walk_len,
                active: self.active_random_walk_len,
            });
        }
        Ok(())
    }

    /// The nearest valid configuration (used by `Membership::new`, which must
    /// not panic on operator input).
    pub fn clamped(mut self) -> Self {
        self.active_view_max = self.active_view_max.clamp(1, ACTIVE_VIEW_LIMIT);
        self.passive_view_max = self.passive_view_max.clamp(1, PASSIVE_VIEW_LIMIT);
        self.active_random_walk_len = self.active_random_walk_len.min(RANDOM_WALK_LIMIT);
        self.passive_random_walk_len = self
            .passive_random_walk_len
            .min(self.active_random_walk_len);
        self.gossip_interval_ms = self.gossip_interval_ms.clamp(1, 60_000);
        self.gossip_batch_updates_max = self.gossip_batch_updates_max.clamp(1, BATCH_UPDATES_LIMIT);
        self.probe_interval_ms = self.probe_interval_ms.clamp(1, 600_000);
        self.probe_timeout_ms = self.probe_timeout_ms.clamp(1, 600_000);
        self.suspicion_timeout_ms = self.suspicion_timeout_ms.clamp(1, 3_600_000);
        self.anti_entropy_interval_ms = self.anti_entropy_interval_ms.clamp(1, 3_600_000);
        self.shuffle_interval_ms = self.shuffle_interval_ms.clamp(1, 3_600_000);
        let shuffle_max = SHUFFLE_PEERS_LIMIT / 2 - 1;
        self.shuffle_active_count = self.shuffle_active_count.min(shuffle_max);
        self.shuffle_passive_count = self.shuffle_passive_count.min(shuffle_max);
        self.dead_retry_interval_ms = self.dead_retry_interval_ms.clamp(1, 3_600_000);
        self.repair_backoff_min_ms = self.repair_backoff_min_ms.clamp(1, 600_000);
        self.repair_backoff_max_ms = self
            .repair_backoff_max_ms
            .clamp(self.repair_backoff_min_ms, 3_600_000);
        self.handshake_timeout_ms = self.handshake_timeout_ms.clamp(1, 600_000);
        self.members_max = self.members_max.clamp(2, MEMBERS_LIMIT);
        self.sync_entries_max = self.sync_entries_max.clamp(1, BATCH_UPDATES_LIMIT);
        self
    }
}

/// Per-kind message counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MessageCounts(pub [u64; MESSAGE_KINDS]);

impl MessageCounts {
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    pub fn get(&self, kind_name: &str) -> u64 {
        Message::KIND_NAMES
            .iter()
            .position(|name| *name == kind_name)
            .map_or(0, |index| self.0[index])
    }

    pub(crate) fn count(&mut self, message: &Message) {
        self.0[message.kind_index()] += 1;
    }
}

/// Counters for the shell's metrics and the simulator's report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MembershipStats {
    pub sent: MessageCounts,
    pub received: MessageCounts,
    /// Updates carried inside Gossip/Sync/SyncDiff messages sent.
    pub updates_sent: u64,
    /// Updates that changed the table (new news).
    pub updates_applied: u64,
    /// Updates that were old news.
    pub updates_stale: u64,
    /// Updates or messages rejected as invalid (absurd incarnation, oversized,
    /// from a peer with no connection, table full, ...).
    pub rejected: u64,
    pub refutations: u64,
    pub suspicions_raised: u64,
    pub deaths_declared: u64,
    pub probe_timeouts: u64,
    pub connects_requested: u64,
    pub dead_retries: u64,
    /// Updates dropped from the gossip log before every peer got them
    /// (anti-entropy repairs the loss).
    pub gossip_log_overflows: u64,
    /// Actions dropped because the shell did not drain the queue.
    pub actions_dropped: u64,
}
