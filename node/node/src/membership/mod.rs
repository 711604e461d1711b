//! Cluster membership: who is in the network, as a sans-I/O state machine.
//!
//! **Owns**: a HyParView-style bounded overlay (an *active view* of a few open
//! connections, a *passive view* of known addresses, JOIN / FORWARDJOIN random
//! walks, NEIGHBOR requests with priority, SHUFFLE), the full membership table
//! `NodeId -> {addr, incarnation, Alive|Suspect|Dead}` with SWIM precedence and
//! refutation, batched gossip of updates over the active view, failure
//! detection by overlay neighbours (connection loss, silent-link probes,
//! suspicion timeout), digest-based anti-entropy, and partition healing
//! (retrying short views with backoff, rarely retrying dead members).
//!
//! **Must not know**: sockets, async, clocks, the OS RNG, encodings or the
//! transport. Time arrives as `now_ms` arguments, randomness from a seed given
//! at construction, outputs are [`Action`]s the shell drains with
//! [`Membership::poll_action`] (quinn-proto's model). The shell maps
//! `Connect`/`Send`/`Disconnect` onto STOQ connections, reports their fate with
//! `handle_connection_up/down` and `handle_connect_failed`, keeps at most one
//! connection per peer, persists [`Membership::incarnation`] and passes
//! `persisted + 1` after a restart.
//!
//! Deviations from the papers, on purpose: SHUFFLE is one hop (with an active
//! neighbour, so the reply needs no extra connection) and the passive view is
//! also fed by sampling members learned through gossip; a silent link is
//! probed with Ping/Pong only when nothing was received for a probe interval;
//! a connection that succeeds to a member believed dead is used for a JOIN, so
//! two overlays that healed from a partition merge instead of staying apart.
//!
//! Peers are hostile: every message is size-checked, incarnations above
//! [`INCARNATION_MAX`] are refused, state is bounded by named constants, and
//! nothing a peer sends can make the core panic.

mod rng;
mod table;
mod types;

#[cfg(test)]
mod harness;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddrV6;

pub use table::INCARNATION_MAX;
pub use types::{
    Action, MESSAGE_KINDS, MemberState, MembershipConfig, MembershipConfigError, MembershipStats,
    Message, MessageCounts, NodeId, Peer, SHUFFLE_PEERS_LIMIT, Status, Update,
};

use rng::{SplitMix64, mix64};
use table::{Applied, DIGEST_BUCKETS, Table, bucket_of};

/// A Sync covering every digest bucket.
const ALL_BUCKETS: u32 = u32::MAX;

/// Outstanding `Connect` actions. Repair opens at most `active_view_max`
/// at a time; the rest are ForwardJoin acceptances and dead retries.
const PENDING_CONNECTS_MAX: usize = 64;
/// Connections beyond the active view (handshakes in progress, links being
/// closed, joiners not yet placed). A flood of inbound connections beyond
/// this is closed at once instead of growing state.
const CONNECTIONS_EXTRA_MAX: usize = 64;
/// Concurrent incoming full-table syncs (one per peer; normally only the
/// active neighbours and a joiner's contact).
const SYNC_SESSIONS_MAX: usize = 16;
/// Recent updates kept for gossip. Entries leave once every active neighbour
/// got them; overflow (a storm faster than the batch limit) is repaired by
/// anti-entropy.
const GOSSIP_LOG_MAX: usize = 8_192;
/// Actions not yet drained by the shell. The shell drains after every call,
/// so this is only reached by a broken shell; beyond it actions are dropped
/// and counted rather than growing without bound.
const ACTIONS_MAX: usize = 65_536;
/// A peer gets our full table at most this often (a hostile peer sending
/// Digests in a loop must not turn us into an amplifier).
const SYNC_RESPONSE_INTERVAL_MS_MIN: u64 = 1_000;
/// Seeds remembered from the configuration.
const SEEDS_MAX: usize = 64;
/// While the active view is empty, retry at least this often.
const REPAIR_BACKOFF_EMPTY_MS_MAX: u64 = 5_000;

#[derive(Clone, Copy, Debug)]
enum Purpose {
    /// Send JOIN (to a seed, or to a member we believed dead).
    Join,
    /// Send NEIGHBOR (promotion from the passive view, ForwardJoin acceptance).
    Neighbor { high_priority: bool },
    /// Send a DIGEST over a temporary connection to a random member outside
    /// the active view (closed again when idle).
    AntiEntropy,
}

/// One anti-entropy round in this many goes to a random member outside the
/// active view instead of an active peer. Active views can close into
/// small cliques that no gossip reaches (seen with an active view of 3: four
/// nodes whose three active peers were each other, missing every update
/// for good); a random member from the whole table bridges any such cut.
const ANTI_ENTROPY_RANDOM_MEMBER_EVERY: u64 = 3;

#[derive(Clone, Copy, Debug)]
struct PendingConnect {
    purpose: Purpose,
    expected: Option<NodeId>,
    since_ms: u64,
}

#[derive(Clone, Copy, Debug)]
struct ActiveLink {
    /// Sequence number of the next gossip-log entry to consider for this peer.
    gossip_cursor: u64,
    /// Earliest time of the next gossip batch (pacing).
    next_gossip_ms: u64,
}

#[derive(Clone, Debug)]
struct Conn {
    addr: SocketAddrV6,
    since_ms: u64,
    last_recv_ms: u64,
    ping_sent_ms: Option<u64>,
    active: Option<ActiveLink>,
    /// We sent NEIGHBOR and wait for the reply.
    neighbor_request_ms: Option<u64>,
    /// We sent DISCONNECT; the peer closes (or we do after the handshake timeout).
    closing_since_ms: Option<u64>,
    last_full_sync_ms: Option<u64>,
}

impl Conn {
    fn new(addr: SocketAddrV6, now_ms: u64) -> Self {
        Self {
            addr,
            since_ms: now_ms,
            last_recv_ms: now_ms,
            ping_sent_ms: None,
            active: None,
            neighbor_request_ms: None,
            closing_since_ms: None,
            last_full_sync_ms: None,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct LogEntry {
    seq: u64,
    update: Update,
    /// The peer we learned it from (never echoed back to it).
    from: Option<NodeId>,
}

/// An incoming full table, chunk by chunk, so we can answer with exactly the
/// entries the sender lacked.
#[derive(Debug, Default)]
struct SyncSession {
    seen: BTreeSet<NodeId>,
    ours_newer: BTreeSet<NodeId>,
    since_ms: u64,
}

/// The membership core. See the module documentation.
#[derive(Debug)]
pub struct Membership {
    config: MembershipConfig,
    me: NodeId,
    my_addr: SocketAddrV6,
    incarnation: u64,
    seeds: Vec<SocketAddrV6>,
    rng: SplitMix64,
    now_ms: u64,
    table: Table,
    conns: BTreeMap<NodeId, Conn>,
    passive: BTreeMap<NodeId, SocketAddrV6>,
    pending_connects: BTreeMap<SocketAddrV6, PendingConnect>,
    log: VecDeque<LogEntry>,
    log_next_seq: u64,
    sync_sessions: BTreeMap<NodeId, SyncSession>,
    actions: VecDeque<Action>,
    next_anti_entropy_ms: u64,
    /// Anti-entropy rounds started (every few go to a random member).
    anti_entropy_rounds: u64,
    next_shuffle_ms: u64,
    next_dead_retry_ms: u64,
    next_repair_ms: u64,
    repair_backoff_ms: u64,
    stats: MembershipStats,
}

impl Membership {
    /// `incarnation`: the persisted incarnation + 1 after a restart (0 for a
    /// brand-new identity). `rng_seed` comes from the shell's Entropy.
    pub fn new(
        config: MembershipConfig,
        me: NodeId,
        my_addr: SocketAddrV6,
        incarnation: u64,
        seeds: Vec<SocketAddrV6>,
        rng_seed: u64,
        now_ms: u64,
    ) -> Self {
        let config = config.clamped();
        let incarnation = incarnation.min(INCARNATION_MAX);
        let mut table = Table::new(config.members_max, config.suspicion_timeout_ms);
        table.set(
            me,
            MemberState {
                addr: my_addr,
                incarnation,
                status: Status::Alive,
                reporter: me,
                changed_ms: now_ms,
            },
        );
        let mut unique_seeds: Vec<SocketAddrV6> = Vec::new();
        for seed in seeds {
            if seed != my_addr && !unique_seeds.contains(&seed) && unique_seeds.len() < SEEDS_MAX {
                unique_seeds.push(seed);
            }
        }
        let id_mix = me.0.chunks(8).fold(0u64, |acc, chunk| {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            mix64(acc ^ u64::from_le_bytes(word))
        });
        let mut rng = SplitMix64::new(rng_seed ^ id_mix);
        // Random phases, so a cluster started at once does not tick in lockstep.
        let next_anti_entropy_ms =
            now_ms + rng.below(config.anti_entropy_interval_ms as usize) as u64;
        let next_shuffle_ms = now_ms + rng.below(config.shuffle_interval_ms as usize) as u64;
        let next_dead_retry_ms = now_ms + rng.below(config.dead_retry_interval_ms as usize) as u64;
        let repair_backoff_ms = config.repair_backoff_min_ms;
        Self {
            config,
            me,
            my_addr,
            incarnation,
            seeds: unique_seeds,
            rng,
            now_ms,
            table,
            conns: BTreeMap::new(),
            passive: BTreeMap::new(),
            pending_connects: BTreeMap::new(),
            log: VecDeque::new(),
            log_next_seq: 0,
            sync_sessions: BTreeMap::new(),
            actions: VecDeque::new(),
            next_anti_entropy_ms,
            anti_entropy_rounds: 0,
            next_shuffle_ms,
            next_dead_retry_ms,
            next_repair_ms: now_ms,
            repair_backoff_ms,
            stats: MembershipStats::default(),
        }
    }

    // ----- queries -------------------------------------------------------

    /// The view: every member believed Alive or Suspect, sorted, including self.
    pub fn alive_members(&self) -> Vec<NodeId> {
        self.table
            .iter()
            .filter(|(_, state)| state.status != Status::Dead)
            .map(|(id, _)| *id)
            .collect()
    }

    pub fn member(&self, id: &NodeId) -> Option<&MemberState> {
        self.table.get(id)
    }

    pub fn active_peers(&self) -> Vec<NodeId> {
        self.conns
            .iter()
            .filter(|(_, conn)| conn.active.is_some())
            .map(|(id, _)| *id)
            .collect()
    }

    pub fn passive_peers(&self) -> Vec<NodeId> {
        self.passive.keys().copied().collect()
    }

    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    pub fn id(&self) -> NodeId {
        self.me
    }

    /// Order-independent hash of the table's (id, incarnation, status).
    pub fn digest(&self) -> u64 {
        self.table.digest()
    }

    pub fn stats(&self) -> MembershipStats {
        self.stats
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The next time (ms) at which `handle_tick` has work.
    pub fn poll_timeout(&self) -> Option<u64> {
        let config = &self.config;
        let mut next = self
            .next_anti_entropy_ms
            .min(self.next_shuffle_ms)
            .min(self.next_dead_retry_ms);
        if self.active_len() < config.active_view_max {
            next = next.min(self.next_repair_ms);
        }
        if let Some(deadline) = self.table.next_suspect_deadline() {
            next = next.min(deadline);
        }
        for (conn_id, conn) in &self.conns {
            let deadline = match conn.active {
                Some(link) => {
                    let probe = match conn.ping_sent_ms {
                        Some(sent) => sent + config.probe_timeout_ms,
                        None => conn.last_recv_ms + self.probe_after_ms(conn_id),
                    };
                    if link.gossip_cursor < self.log_next_seq {
                        probe.min(link.next_gossip_ms)
                    } else {
                        probe
                    }
                }
                None => {
                    let start = conn
                        .neighbor_request_ms
                        .or(conn.closing_since_ms)
                        .unwrap_or(conn.since_ms.max(conn.last_recv_ms));
                    start + config.handshake_timeout_ms
                }
            };
            next = next.min(deadline);
        }
        for pending in self.pending_connects.values() {
            next = next.min(pending.since_ms + 2 * config.handshake_timeout_ms);
        }
        for session in self.sync_sessions.values() {
            next = next.min(session.since_ms + config.handshake_timeout_ms);
        }
        Some(next)
    }

    // ----- events --------------------------------------------------------

    pub fn handle_tick(&mut self, now_ms: u64) {
        self.advance(now_ms);
        self.expire_suspects();
        self.check_connections();
        self.expire_pending();
        let now = self.now_ms;
        if now >= self.next_anti_entropy_ms {
            self.next_anti_entropy_ms = now + self.jittered(self.config.anti_entropy_interval_ms);
            self.start_anti_entropy();
        }
        if now >= self.next_shuffle_ms {
            self.next_shuffle_ms = now + self.jittered(self.config.shuffle_interval_ms);
            self.start_shuffle();
        }
        if now >= self.next_dead_retry_ms {
            self.next_dead_retry_ms = now + self.jittered(self.config.dead_retry_interval_ms);
            self.retry_dead();
        }
        self.repair();
        self.flush_gossip();
    }

    /// A transport connection to `peer` is up (`outbound`: we opened it). A
    /// second ConnectionUp for a connected peer is harmless.
    pub fn handle_connection_up(
        &mut self,
        now_ms: u64,
        peer: NodeId,
        addr: SocketAddrV6,
        outbound: bool,
    ) {
        self.advance(now_ms);
        if peer == self.me {
            self.stats.rejected += 1;
            return;
        }
        let by_addr = if outbound {
            self.pending_connects.remove(&addr)
        } else {
            None
        };
        let pending = by_addr.or_else(|| {
            let key = self
                .pending_connects
                .iter()
                .find(|(_, pending)| pending.expected == Some(peer))
                .map(|(addr, _)| *addr)?;
            self.pending_connects.remove(&key)
        });
        if !self.conns.contains_key(&peer) {
            let limit = self.config.active_view_max + CONNECTIONS_EXTRA_MAX;
            if self.conns.len() >= limit && pending.is_none() {
                self.stats.rejected += 1;
                self.push_action(Action::Disconnect { peer });
                return;
            }
            self.conns.insert(peer, Conn::new(addr, self.now_ms));
        }
        if let Some(pending) = pending {
            self.run_purpose(peer, pending.purpose);
        }
        self.flush_gossip();
    }

    /// The connection to `peer` is gone (closed, timed out, reset).
    pub fn handle_connection_down(&mut self, now_ms: u64, peer: NodeId) {
        self.advance(now_ms);
        let Some(conn) = self.conns.remove(&peer) else {
            return;
        };
        self.sync_sessions.remove(&peer);
        if conn.active.is_some() {
            self.suspect(peer);
            self.schedule_repair_now();
        } else if conn.neighbor_request_ms.is_some() {
            self.schedule_repair_now();
        }
        self.flush_gossip();
    }

    /// A `Connect { addr }` was not attempted (the shell's own limit on
    /// dials in flight): nothing is known of the peer, so nothing is
    /// suspected; the core dials again on its own schedule.
    pub fn handle_connect_deferred(&mut self, now_ms: u64, addr: SocketAddrV6) {
        self.advance(now_ms);
        self.pending_connects.remove(&addr);
    }

    /// A `Connect { addr }` reached the peer, but the peer refused our
    /// identity (for instance, it cannot verify our certificate yet). The
    /// peer answered, so it is alive: suspecting it would start a
    /// suspicion and a refutation that every member gossips, for a peer
    /// that only disagrees with us about trust. It leaves the passive view,
    /// so repair prefers others.
    pub fn handle_connect_refused(&mut self, now_ms: u64, addr: SocketAddrV6) {
        self.advance(now_ms);
        if let Some(id) = self.dial_ended(addr) {
            self.passive.remove(&id);
        }
    }

    /// Forgets the pending dial of `addr`; the member it was meant to reach.
    fn dial_ended(&mut self, addr: SocketAddrV6) -> Option<NodeId> {
        self.pending_connects
            .remove(&addr)
            .and_then(|pending| pending.expected)
            .or_else(|| self.table.id_by_addr(&addr))
    }

    /// A `Connect { addr }` did not produce a connection: the peer did not
    /// answer, or we refused the identity it proved.
    pub fn handle_connect_failed(&mut self, now_ms: u64, addr: SocketAddrV6) {
        self.advance(now_ms);
        if let Some(id) = self.dial_ended(addr)
            && !self.conns.contains_key(&id)
        {
            self.passive.remove(&id);
            self.suspect(id);
        }
        self.flush_gossip();
    }

    pub fn handle_message(&mut self, now_ms: u64, from: NodeId, message: Message) {
        self.advance(now_ms);
        let now = self.now_ms;
        let Some(conn) = self.conns.get_mut(&from) else {
            // The shell only delivers over connections it reported; anything
            // else is a late message from a closed link, or forged.
            self.stats.rejected += 1;
            return;
        };
        conn.last_recv_ms = now;
        conn.ping_sent_ms = None;
        self.stats.received.count(&message);
        match message {
            Message::Join { addr, incarnation } => self.on_join(from, addr, incarnation),
            Message::ForwardJoin { joiner, ttl } => self.on_forward_join(from, joiner, ttl),
            Message::Neighbor {
                high_priority,
                addr,
                incarnation,
            } => self.on_neighbor(from, high_priority, addr, incarnation),
            Message::NeighborReply { accepted } => self.on_neighbor_reply(from, accepted),
            Message::Disconnect => self.on_disconnect(from),
            Message::Shuffle { peers } => self.on_shuffle(from, peers),
            Message::ShuffleReply { peers } => self.integrate_passive(from, &peers),
            Message::Gossip { updates } => {
                if updates.len() > self.config.gossip_batch_updates_max {
                    self.stats.rejected += 1;
                } else {
                    for update in updates {
                        self.learn(update, Some(from));
                    }
                }
            }
            Message::Ping => self.on_ping(from),
            Message::Pong => {}
            Message::Digest { hash, buckets, .. } => self.on_digest(from, hash, &buckets),
            Message::Sync {
                updates,
                last,
                buckets_mask,
            } => self.on_sync(from, updates, last, buckets_mask),
            Message::SyncDiff { updates } => {
                if updates.len() > self.config.sync_entries_max {
                    self.stats.rejected += 1;
                } else {
                    for update in updates {
                        self.learn(update, Some(from));
                    }
                }
            }
        }
        self.flush_gossip();
    }

    // ----- overlay (HyParView) ---------------------------------------------

    fn on_join(&mut self, from: NodeId, addr: SocketAddrV6, incarnation: u64) {
        self.learn(
            Update::Alive {
                id: from,
                addr,
                incarnation,
            },
            Some(from),
        );
        let was_active = self.is_active(&from);
        self.add_active(from);
        if was_active {
            return;
        }
        let joiner = Peer { id: from, addr };
        let ttl = self.config.active_random_walk_len;
        for peer in self.active_peers() {
            if peer != from {
                self.send(peer, Message::ForwardJoin { joiner, ttl });
            }
        }
    }

    fn on_forward_join(&mut self, from: NodeId, joiner: Peer, ttl: u8) {
        if joiner.id == self.me || joiner.id == from || joiner.addr == self.my_addr {
            self.stats.rejected += 1;
            return;
        }
        let ttl = ttl.min(self.config.active_random_walk_len);
        if ttl == 0 || self.active_len() <= 1 {
            self.accept_joiner(joiner);
            return;
        }
        if ttl == self.config.passive_random_walk_len {
            self.add_passive(joiner.id, joiner.addr);
        }
        match self.random_active_except(&[from, joiner.id]) {
            Some(next) => self.send(
                next,
                Message::ForwardJoin {
                    joiner,
                    ttl: ttl - 1,
                },
            ),
            None => self.accept_joiner(joiner),
        }
    }

    fn accept_joiner(&mut self, joiner: Peer) {
        if !self.is_active(&joiner.id) {
            self.connect_to(
                joiner.addr,
                Purpose::Neighbor {
                    high_priority: true,
                },
                Some(joiner.id),
            );
        }
    }

    fn on_neighbor(
        &mut self,
        from: NodeId,
        high_priority: bool,
        addr: SocketAddrV6,
        incarnation: u64,
    ) {
        self.learn(
            Update::Alive {
                id: from,
                addr,
                incarnation,
            },
            Some(from),
        );
        let accepted = self.is_active(&from)
            || high_priority
            || self.active_len() < self.config.active_view_max;
        if accepted {
            self.add_active(from);
        }
        self.send(from, Message::NeighborReply { accepted });
    }

    fn on_neighbor_reply(&mut self, from: NodeId, accepted: bool) {
        let Some(conn) = self.conns.get_mut(&from) else {
            return;
        };
        if conn.neighbor_request_ms.take().is_none() {
            return; // unsolicited or already settled (we accepted their request meanwhile)
        }
        if accepted {
            self.add_active(from);
            self.send_digest(from);
        } else {
            self.close(from);
        }
    }

    fn on_disconnect(&mut self, from: NodeId) {
        let Some(conn) = self.conns.remove(&from) else {
            return;
        };
        self.sync_sessions.remove(&from);
        self.push_action(Action::Disconnect { peer: from });
        if conn.active.is_some() {
            let addr = self.table.get(&from).map_or(conn.addr, |state| state.addr);
            self.add_passive(from, addr);
            self.schedule_repair_now();
        }
    }

    fn on_ping(&mut self, from: NodeId) {
        let Some(conn) = self.conns.get_mut(&from) else {
            return;
        };
        if conn.active.is_some() {
            self.send(from, Message::Pong);
        } else if conn.closing_since_ms.is_none() && conn.neighbor_request_ms.is_none() {
            // The peer believes we are neighbours and we do not: say so once,
            // so it stops probing instead of suspecting us later.
            conn.closing_since_ms = Some(self.now_ms);
            self.send(from, Message::Disconnect);
        }
    }

    fn on_shuffle(&mut self, from: NodeId, peers: Vec<Peer>) {
        if peers.len() > SHUFFLE_PEERS_LIMIT {
            self.stats.rejected += 1;
            return;
        }
        let reply = self.sample_passive(peers.len(), &[from]);
        self.send(from, Message::ShuffleReply { peers: reply });
        self.integrate_passive(from, &peers);
    }

    fn integrate_passive(&mut self, from: NodeId, peers: &[Peer]) {
        if peers.len() > SHUFFLE_PEERS_LIMIT {
            self.stats.rejected += 1;
            return;
        }
        for peer in peers {
            if peer.id != from {
                self.add_passive(peer.id, peer.addr);
            }
        }
    }

    fn start_shuffle(&mut self) {
        let Some(target) = self.random_active_except(&[]) else {
            return;
        };
        let mut peers = vec![Peer {
            id: self.me,
            addr: self.my_addr,
        }];
        let mut others: Vec<NodeId> = self.active_peers();
        others.retain(|id| *id != target);
        for _ in 0..self.config.shuffle_active_count.min(others.len()) {
            let id = others.swap_remove(self.rng.below(others.len()));
            let addr = self.table.get(&id).map(|state| state.addr);
            if let Some(addr) = addr {
                peers.push(Peer { id, addr });
            }
        }
        peers.extend(self.sample_passive(self.config.shuffle_passive_count, &[target]));
        self.send(target, Message::Shuffle { peers });
    }

    fn add_active(&mut self, peer: NodeId) {
        debug_assert!(peer != self.me);
        if self.is_active(&peer) || !self.conns.contains_key(&peer) {
            return;
        }
        if self.active_len() >= self.config.active_view_max
            && let Some(victim) = self.random_active_except(&[peer])
        {
            self.evict(victim);
        }
        let (now, cursor) = (self.now_ms, self.log_next_seq);
        if let Some(conn) = self.conns.get_mut(&peer) {
            conn.active = Some(ActiveLink {
                gossip_cursor: cursor,
                next_gossip_ms: now,
            });
            conn.neighbor_request_ms = None;
            conn.closing_since_ms = None;
            conn.ping_sent_ms = None;
            conn.last_recv_ms = now;
        }
        self.passive.remove(&peer);
        if self.active_len() >= self.config.active_view_max {
            self.repair_backoff_ms = self.config.repair_backoff_min_ms;
        }
        assert!(
            self.active_len() <= self.config.active_view_max,
            "active view over its bound"
        );
    }

    /// Drop an active peer cleanly: it hears DISCONNECT (so it does not
    /// suspect us) and closes the connection.
    fn evict(&mut self, peer: NodeId) {
        let now = self.now_ms;
        let Some(conn) = self.conns.get_mut(&peer) else {
            return;
        };
        conn.active = None;
        conn.closing_since_ms = Some(now);
        let addr = conn.addr;
        self.send(peer, Message::Disconnect);
        let addr = self.table.get(&peer).map_or(addr, |state| state.addr);
        self.add_passive(peer, addr);
    }

    /// Close a connection that is not (or no longer) an active link.
    fn close(&mut self, peer: NodeId) {
        if self.conns.remove(&peer).is_some() {
            self.sync_sessions.remove(&peer);
            self.push_action(Action::Disconnect { peer });
        }
    }

    fn add_passive(&mut self, id: NodeId, addr: SocketAddrV6) {
        if id == self.me || addr == self.my_addr || self.is_active(&id) {
            return;
        }
        if let Some(known) = self.passive.get_mut(&id) {
            *known = addr;
            return;
        }
        if self.passive.len() >= self.config.passive_view_max {
            let index = self.rng.below(self.passive.len());
            if let Some(victim) = self.passive.keys().nth(index).copied() {
                self.passive.remove(&victim);
            }
        }
        self.passive.insert(id, addr);
        debug_assert!(self.passive.len() <= self.config.passive_view_max);
    }

    fn sample_passive(&mut self, count: usize, exclude: &[NodeId]) -> Vec<Peer> {
        let mut candidates: Vec<Peer> = self
            .passive
            .iter()
            .filter(|(id, _)| !exclude.contains(id))
            .map(|(id, addr)| Peer {
                id: *id,
                addr: *addr,
            })
            .collect();
        let mut sample = Vec::new();
        while sample.len() < count && !candidates.is_empty() {
            sample.push(candidates.swap_remove(self.rng.below(candidates.len())));
        }
        sample
    }

    // ----- connections and repair -------------------------------------------

    fn connect_to(
        &mut self,
        addr: SocketAddrV6,
        purpose: Purpose,
        expected: Option<NodeId>,
    ) -> bool {
        if addr == self.my_addr || expected == Some(self.me) {
            return false;
        }
        if let Some(id) = expected
            && self.conns.contains_key(&id)
        {
            self.run_purpose(id, purpose);
            return true;
        }
        if self.pending_connects.contains_key(&addr)
            || self.pending_connects.len() >= PENDING_CONNECTS_MAX
        {
            return false;
        }
        self.pending_connects.insert(
            addr,
            PendingConnect {
                purpose,
                expected,
                since_ms: self.now_ms,
            },
        );
        self.stats.connects_requested += 1;
        self.push_action(Action::Connect { addr });
        true
    }

    fn run_purpose(&mut self, peer: NodeId, purpose: Purpose) {
        match purpose {
            Purpose::Join => {
                self.add_active(peer);
                let (addr, incarnation) = (self.my_addr, self.incarnation);
                self.send(peer, Message::Join { addr, incarnation });
                self.send_digest(peer);
            }
            Purpose::AntiEntropy => {
                let now = self.now_ms;
                if let Some(conn) = self.conns.get_mut(&peer)
                    && conn.active.is_none()
                    && conn.neighbor_request_ms.is_none()
                {
                    // Temporary: closed after the idle period.
                    conn.closing_since_ms.get_or_insert(now);
                }
                self.send_digest(peer);
            }
            Purpose::Neighbor { high_priority } => {
                if self.is_active(&peer) {
                    return;
                }
                let now = self.now_ms;
                if let Some(conn) = self.conns.get_mut(&peer) {
                    conn.neighbor_request_ms = Some(now);
                    conn.closing_since_ms = None;
                }
                let (addr, incarnation) = (self.my_addr, self.incarnation);
                self.send(
                    peer,
                    Message::Neighbor {
                        high_priority,
                        addr,
                        incarnation,
                    },
                );
            }
        }
    }

    fn schedule_repair_now(&mut self) {
        self.next_repair_ms = self.now_ms;
        self.repair_backoff_ms = self.config.repair_backoff_min_ms;
    }

    /// Refill a short active view: passive peers first, then seeds (when
    /// alone), then any known member; one attempt per backoff step.
    fn repair(&mut self) {
        let active = self.active_len();
        if self.now_ms < self.next_repair_ms || active >= self.config.active_view_max {
            return;
        }
        let in_flight = self.pending_connects.len()
            + self
                .conns
                .values()
                .filter(|conn| conn.neighbor_request_ms.is_some())
                .count();
        let backoff_max = if active == 0 {
            self.config
                .repair_backoff_max_ms
                .min(REPAIR_BACKOFF_EMPTY_MS_MAX)
        } else {
            self.config.repair_backoff_max_ms
        };
        self.next_repair_ms = self.now_ms + self.repair_backoff_ms;
        self.repair_backoff_ms = (self.repair_backoff_ms * 2).min(backoff_max);
        if active + in_flight >= self.config.active_view_max {
            return;
        }
        let high_priority = active == 0;
        let purpose = Purpose::Neighbor { high_priority };
        let candidates: Vec<(NodeId, SocketAddrV6)> = self
            .passive
            .iter()
            .filter(|(id, addr)| {
                !self.conns.contains_key(id) && !self.pending_connects.contains_key(addr)
            })
            .map(|(id, addr)| (*id, *addr))
            .collect();
        if !candidates.is_empty() {
            let (id, addr) = candidates[self.rng.below(candidates.len())];
            self.connect_to(addr, purpose, Some(id));
            return;
        }
        if active == 0 && !self.seeds.is_empty() {
            let seed = self.seeds[self.rng.below(self.seeds.len())];
            self.connect_to(seed, Purpose::Join, None);
            return;
        }
        if let Some((id, addr)) = self.random_member(|state| state.status != Status::Dead) {
            self.connect_to(addr, purpose, Some(id));
        }
    }

    /// A member not connected to us, not being connected, chosen uniformly
    /// among those matching `keep` (linear scan; repair is rate-limited).
    fn random_member(
        &mut self,
        keep: impl Fn(&MemberState) -> bool,
    ) -> Option<(NodeId, SocketAddrV6)> {
        let candidates: Vec<(NodeId, SocketAddrV6)> = self
            .table
            .iter()
            .filter(|(id, state)| {
                **id != self.me
                    && keep(state)
                    && !self.conns.contains_key(id)
                    && !self.pending_connects.contains_key(&state.addr)
            })
            .map(|(id, state)| (*id, state.addr))
            .collect();
        if candidates.is_empty() {
            return None;
        }
        Some(candidates[self.rng.below(candidates.len())])
    }

    /// Rarely try a member believed dead, or a seed that is not in the
    /// table: if it answers, a partition has healed (or we were wrong, or the
    /// cluster bootstrapped through different seeds) and JOIN merges the two
    /// overlays.
    fn retry_dead(&mut self) {
        if !self.rng.chance(
            self.config.dead_retry_cluster_attempts,
            self.table.alive_count(),
        ) {
            return;
        }
        let mut targets: Vec<(Option<NodeId>, SocketAddrV6)> = self
            .table
            .dead_ids()
            .iter()
            .filter(|id| !self.conns.contains_key(id))
            .filter_map(|id| self.table.get(id).map(|state| (Some(*id), state.addr)))
            .collect();
        if !self.seeds.is_empty() {
            let known: BTreeSet<SocketAddrV6> =
                self.table.iter().map(|(_, state)| state.addr).collect();
            targets.extend(
                self.seeds
                    .iter()
                    .filter(|seed| !known.contains(seed))
                    .map(|seed| (None, *seed)),
            );
        }
        if targets.is_empty() {
            return;
        }
        let (id, addr) = targets[self.rng.below(targets.len())];
        if self.connect_to(addr, Purpose::Join, id) {
            self.stats.dead_retries += 1;
        }
    }

    /// Probes, handshake timeouts and idle temporary connections.
    fn check_connections(&mut self) {
        let now = self.now_ms;
        let config = self.config.clone();
        let ids: Vec<NodeId> = self.conns.keys().copied().collect();
        for id in ids {
            let probe_after_ms = self.probe_after_ms(&id);
            let Some(conn) = self.conns.get_mut(&id) else {
                continue;
            };
            if conn.active.is_some() {
                match conn.ping_sent_ms {
                    Some(sent) if now >= sent + config.probe_timeout_ms => {
                        // Silent for a probe interval and the ping went
                        // unanswered: the same as the transport losing it.
                        self.stats.probe_timeouts += 1;
                        tracing::debug!(me = ?self.me, peer = ?id, "probe timed out");
                        self.conns.remove(&id);
                        self.sync_sessions.remove(&id);
                        self.push_action(Action::Disconnect { peer: id });
                        self.suspect(id);
                        self.schedule_repair_now();
                    }
                    None if now >= conn.last_recv_ms + probe_after_ms => {
                        conn.ping_sent_ms = Some(now);
                        self.send(id, Message::Ping);
                    }
                    _ => {}
                }
                continue;
            }
            let start = conn
                .neighbor_request_ms
                .or(conn.closing_since_ms)
                .unwrap_or(conn.since_ms.max(conn.last_recv_ms));
            if now >= start + config.handshake_timeout_ms {
                let was_request = conn.neighbor_request_ms.is_some();
                self.close(id);
                if was_request {
                    self.schedule_repair_now();
                }
            }
        }
    }

    fn expire_pending(&mut self) {
        let now = self.now_ms;
        let timeout = self.config.handshake_timeout_ms;
        // The shell should always answer a Connect; if it never does, forget
        // the attempt so repair can move on.
        self.pending_connects
            .retain(|_, pending| now < pending.since_ms + 2 * timeout);
        self.sync_sessions
            .retain(|_, session| now < session.since_ms + timeout);
    }

    // ----- membership table and dissemination ----------------------------------

    /// Apply an update; news goes to the gossip log.
    fn learn(&mut self, update: Update, from: Option<NodeId>) -> Applied {
        let id = update.id();
        if id == self.me {
            return self.learn_about_me(update);
        }
        let applied = self.table.apply(&update, self.now_ms);
        match applied {
            Applied::New => {
                self.stats.updates_applied += 1;
                self.log_push(update, from);
                match update.status() {
                    Status::Dead => {
                        self.passive.remove(&id);
                    }
                    Status::Alive if !self.conns.contains_key(&id) => {
                        // Feed the passive view with a near-uniform sample of
                        // the members we hear about.
                        let alive = self.table.alive_count().max(1);
                        if self.passive.len() < self.config.passive_view_max
                            || self.rng.chance(self.config.passive_view_max, alive)
                        {
                            self.add_passive(id, update.addr());
                        }
                    }
                    _ => {}
                }
            }
            Applied::Stale => self.stats.updates_stale += 1,
            Applied::Rejected => self.stats.rejected += 1,
        }
        applied
    }

    /// Only we decide our own state: news that we are suspect or dead (or
    /// alive at a newer incarnation than ours, e.g. before a restart whose
    /// incarnation was not persisted) is refuted with a higher incarnation.
    fn learn_about_me(&mut self, update: Update) -> Applied {
        let incarnation = update.incarnation();
        if incarnation >= INCARNATION_MAX {
            self.stats.rejected += 1;
            return Applied::Rejected;
        }
        let refute = match update.status() {
            Status::Alive => {
                incarnation > self.incarnation
                    || (incarnation == self.incarnation && update.addr() != self.my_addr)
            }
            Status::Suspect | Status::Dead => incarnation >= self.incarnation,
        };
        if !refute {
            self.stats.updates_stale += 1;
            return Applied::Stale;
        }
        self.incarnation = incarnation + 1;
        self.stats.refutations += 1;
        tracing::debug!(me = ?self.me, incarnation = self.incarnation, status = ?update.status(), "refuting");
        let state = MemberState {
            addr: self.my_addr,
            incarnation: self.incarnation,
            status: Status::Alive,
            reporter: self.me,
            changed_ms: self.now_ms,
        };
        self.table.set(self.me, state);
        let alive = Update::Alive {
            id: self.me,
            addr: self.my_addr,
            incarnation: self.incarnation,
        };
        self.log_push(alive, None);
        Applied::New
    }

    fn suspect(&mut self, id: NodeId) {
        if id == self.me {
            return;
        }
        let Some(state) = self.table.get(&id).copied() else {
            return;
        };
        if state.status != Status::Alive {
            return;
        }
        self.stats.suspicions_raised += 1;
        tracing::debug!(me = ?self.me, suspect = ?id, incarnation = state.incarnation, "suspecting member");
        let update = Update::Suspect {
            id,
            addr: state.addr,
            incarnation: state.incarnation,
            by: self.me,
        };
        self.learn(update, None);
    }

    fn expire_suspects(&mut self) {
        for id in self.table.expired_suspects(self.now_ms) {
            let Some(state) = self.table.get(&id).copied() else {
                continue;
            };
            debug_assert_eq!(state.status, Status::Suspect);
            self.stats.deaths_declared += 1;
            tracing::debug!(me = ?self.me, dead = ?id, incarnation = state.incarnation, "suspicion timed out");
            let update = Update::Dead {
                id,
                addr: state.addr,
                incarnation: state.incarnation,
                by: self.me,
            };
            self.learn(update, None);
        }
    }

    fn log_push(&mut self, update: Update, from: Option<NodeId>) {
        if self.active_len() == 0 {
            // Nobody to tell; a future neighbour gets our table by digest sync.
            return;
        }
        if self.log.len() >= GOSSIP_LOG_MAX {
            self.log.pop_front();
            self.stats.gossip_log_overflows += 1;
        }
        self.log.push_back(LogEntry {
            seq: self.log_next_seq,
            update,
            from,
        });
        self.log_next_seq += 1;
    }

    /// One batch per active peer per gossip interval, only with news for it.
    fn flush_gossip(&mut self) {
        let now = self.now_ms;
        let batch_max = self.config.gossip_batch_updates_max;
        let due: Vec<(NodeId, u64)> = self
            .conns
            .iter()
            .filter_map(|(id, conn)| {
                let link = conn.active?;
                (link.gossip_cursor < self.log_next_seq && link.next_gossip_ms <= now)
                    .then_some((*id, link.gossip_cursor))
            })
            .collect();
        for (peer, cursor) in due {
            let first_seq = self
                .log
                .front()
                .map_or(self.log_next_seq, |entry| entry.seq);
            let start = cursor.saturating_sub(first_seq) as usize;
            let mut next_cursor = cursor.max(first_seq);
            let mut batch = Vec::new();
            for entry in self.log.iter().skip(start) {
                if batch.len() >= batch_max {
                    break;
                }
                next_cursor = entry.seq + 1;
                if entry.from == Some(peer) {
                    continue;
                }
                let current = self.table.get(&entry.update.id());
                let superseded = current.is_none_or(|state| {
                    (state.incarnation, state.status.rank()) != entry.update.precedence()
                });
                if !superseded {
                    batch.push(entry.update);
                }
            }
            let sent = !batch.is_empty();
            if sent {
                self.send(peer, Message::Gossip { updates: batch });
            }
            if let Some(link) = self
                .conns
                .get_mut(&peer)
                .and_then(|conn| conn.active.as_mut())
            {
                link.gossip_cursor = next_cursor;
                if sent {
                    link.next_gossip_ms = now + self.config.gossip_interval_ms;
                }
            }
        }
        self.trim_log();
    }

    fn trim_log(&mut self) {
        let min_cursor = self
            .conns
            .values()
            .filter_map(|conn| conn.active.map(|link| link.gossip_cursor))
            .min();
        match min_cursor {
            None => self.log.clear(),
            Some(cursor) => {
                while self.log.front().is_some_and(|entry| entry.seq < cursor) {
                    self.log.pop_front();
                }
            }
        }
    }

    // ----- anti-entropy ------------------------------------------------------

    fn start_anti_entropy(&mut self) {
        self.anti_entropy_rounds += 1;
        if self
            .anti_entropy_rounds
            .is_multiple_of(ANTI_ENTROPY_RANDOM_MEMBER_EVERY)
            && let Some((id, addr)) = self.random_member(|state| state.status != Status::Dead)
        {
            self.connect_to(addr, Purpose::AntiEntropy, Some(id));
            return;
        }
        if let Some(peer) = self.random_active_except(&[]) {
            self.send_digest(peer);
        }
    }

    fn send_digest(&mut self, peer: NodeId) {
        let members = u32::try_from(self.table.len()).unwrap_or(u32::MAX);
        self.send(
            peer,
            Message::Digest {
                hash: self.table.digest(),
                members,
                buckets: self.table.bucket_digests().to_vec(),
            },
        );
    }

    fn on_digest(&mut self, from: NodeId, hash: u64, buckets: &[u64]) {
        if hash == self.table.digest() {
            return;
        }
        // Only the buckets that differ; a peer sending no (or malformed)
        // bucket hashes gets the whole table.
        let mut buckets_mask = if buckets.len() == DIGEST_BUCKETS {
            self.table
                .bucket_digests()
                .iter()
                .zip(buckets)
                .enumerate()
                .filter(|(_, (ours, theirs))| ours != theirs)
                .fold(0u32, |mask, (bucket, _)| mask | (1 << bucket))
        } else {
            ALL_BUCKETS
        };
        if buckets_mask == 0 {
            buckets_mask = ALL_BUCKETS;
        }
        let now = self.now_ms;
        let Some(conn) = self.conns.get_mut(&from) else {
            return;
        };
        if conn
            .last_full_sync_ms
            .is_some_and(|last| now < last + SYNC_RESPONSE_INTERVAL_MS_MIN)
        {
            self.stats.rejected += 1;
            return;
        }
        conn.last_full_sync_ms = Some(now);
        let entries: Vec<Update> = self
            .table
            .iter()
            .filter(|(id, _)| buckets_mask & (1 << bucket_of(id)) != 0)
            .map(|(id, state)| Update::from_state(*id, state))
            .collect();
        let chunks = entries.len().div_ceil(self.config.sync_entries_max).max(1);
        for index in 0..chunks {
            let start = (index * self.config.sync_entries_max).min(entries.len());
            let end = (start + self.config.sync_entries_max).min(entries.len());
            self.send(
                from,
                Message::Sync {
                    updates: entries[start..end].to_vec(),
                    last: index + 1 == chunks,
                    buckets_mask,
                },
            );
        }
    }

    fn on_sync(&mut self, from: NodeId, updates: Vec<Update>, last: bool, buckets_mask: u32) {
        if updates.len() > self.config.sync_entries_max {
            self.stats.rejected += 1;
            return;
        }
        let mut session = match self.sync_sessions.remove(&from) {
            Some(session) => session,
            None if self.sync_sessions.len() >= SYNC_SESSIONS_MAX => {
                self.stats.rejected += 1;
                return;
            }
            None => SyncSession {
                since_ms: self.now_ms,
                ..SyncSession::default()
            },
        };
        for update in updates {
            if session.seen.len() >= self.config.members_max {
                self.stats.rejected += 1; // more entries than any honest table holds
                break;
            }
            let id = update.id();
            session.seen.insert(id);
            if let Some(ours) = self.table.get(&id)
                && (ours.incarnation, ours.status.rank()) > update.precedence()
            {
                session.ours_newer.insert(id);
            }
            self.learn(update, Some(from));
        }
        if !last {
            self.sync_sessions.insert(from, session);
            return;
        }
        let diff: Vec<Update> = self
            .table
            .iter()
            .filter(|(id, _)| buckets_mask & (1 << bucket_of(id)) != 0)
            .filter(|(id, _)| !session.seen.contains(id) || session.ours_newer.contains(id))
            .map(|(id, state)| Update::from_state(*id, state))
            .collect();
        for chunk in diff.chunks(self.config.sync_entries_max) {
            self.send(
                from,
                Message::SyncDiff {
                    updates: chunk.to_vec(),
                },
            );
        }
    }

    // ----- helpers -----------------------------------------------------------

    fn advance(&mut self, now_ms: u64) {
        // A shell clock that steps back must not make deadlines fire twice.
        self.now_ms = self.now_ms.max(now_ms);
    }

    fn jittered(&mut self, interval_ms: u64) -> u64 {
        interval_ms / 2 + self.rng.below(interval_ms.max(1) as usize) as u64
    }

    /// Silence after which we ping a neighbour. The smaller id of a link
    /// pings after one probe interval, the larger only after one and a half:
    /// on a quiet link the smaller id's ping always arrives first, so a link
    /// costs one Ping + one Pong per interval instead of racing two pairs.
    fn probe_after_ms(&self, peer: &NodeId) -> u64 {
        let interval = self.config.probe_interval_ms;
        if self.me < *peer {
            interval
        } else {
            interval + interval / 2
        }
    }

    fn is_active(&self, peer: &NodeId) -> bool {
        self.conns
            .get(peer)
            .is_some_and(|conn| conn.active.is_some())
    }

    fn active_len(&self) -> usize {
        self.conns
            .values()
            .filter(|conn| conn.active.is_some())
            .count()
    }

    fn random_active_except(&mut self, exclude: &[NodeId]) -> Option<NodeId> {
        let candidates: Vec<NodeId> = self
            .active_peers()
            .into_iter()
            .filter(|id| !exclude.contains(id))
            .collect();
        if candidates.is_empty() {
            return None;
        }
        Some(candidates[self.rng.below(candidates.len())])
    }

    fn send(&mut self, to: NodeId, message: Message) {
        debug_assert!(to != self.me, "never send to self");
        self.stats.sent.count(&message);
        if let Message::Gossip { updates }
        | Message::Sync { updates, .. }
        | Message::SyncDiff { updates } = &message
        {
            self.stats.updates_sent += updates.len() as u64;
        }
        self.push_action(Action::Send { to, message });
    }

    fn push_action(&mut self, action: Action) {
        if self.actions.len() >= ACTIONS_MAX {
            self.stats.actions_dropped += 1;
            return;
        }
        self.actions.push_back(action);
    }

    /// Structural invariants (tests call this after every event).
    pub fn check_invariants(&self) {
        let active = self.active_len();
        assert!(
            active <= self.config.active_view_max,
            "active view {active} over bound"
        );
        assert!(
            self.passive.len() <= self.config.passive_view_max,
            "passive view over bound"
        );
        assert!(!self.conns.contains_key(&self.me), "connected to self");
        assert!(!self.passive.contains_key(&self.me), "self in passive view");
        for id in self.passive.keys() {
            assert!(!self.is_active(id), "{id:?} both active and passive");
        }
        assert!(
            self.table.len() <= self.config.members_max,
            "table over bound"
        );
        assert!(self.log.len() <= GOSSIP_LOG_MAX, "gossip log over bound");
        assert!(
            self.pending_connects.len() <= PENDING_CONNECTS_MAX,
            "pending connects over bound"
        );
        assert!(
            self.conns.len()
                <= self.config.active_view_max + CONNECTIONS_EXTRA_MAX + PENDING_CONNECTS_MAX,
            "connections over bound"
        );
        let own = self.table.get(&self.me).copied();
        assert!(
            own.is_some_and(
                |state| state.status == Status::Alive && state.incarnation == self.incarnation
            ),
            "own entry must be Alive at our incarnation: {own:?}"
        );
    }
}
