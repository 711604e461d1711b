//! A deterministic in-memory world for membership cores: a virtual clock, one
//! event queue, connections with per-direction FIFO latency, partitions
//! (groups whose cross pairs cannot connect; their connections die), crashes
//! and restarts (same id, persisted incarnation + 1) and random loss of whole
//! connections. It plays the role of the async shell + STOQ: one connection
//! per pair of nodes, ConnectionUp on both sides once established.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv6Addr, SocketAddrV6};

use super::rng::{SplitMix64, mix64};
use super::{Action, MESSAGE_KINDS, Membership, MembershipConfig, Message, MessageCounts, NodeId};

/// Events in the queue at once; a scenario that exceeds it has a message
/// storm, which is a bug worth failing loudly on.
const EVENTS_MAX: usize = 5_000_000;

#[derive(Clone, Debug)]
pub(crate) struct WorldConfig {
    /// One-way latency of a message, uniform in this range (per-direction FIFO kept).
    pub latency_ms_min: u64,
    pub latency_ms_max: u64,
    /// How long a Connect to an unreachable address takes to fail.
    pub connect_fail_ms: u64,
    /// When the transport reports a connection that died by a fault (crash,
    /// partition, random loss). `None`: never — only the core's probes notice.
    pub down_notice_ms: Option<u64>,
    /// Check every core's invariants after each event (slow for big worlds).
    pub check_invariants: bool,
}

impl Default for WorldConfig {
    fn default() -> Self {
        Self {
            latency_ms_min: 5,
            latency_ms_max: 40,
            connect_fail_ms: 1_000,
            down_notice_ms: Some(1_000),
            check_invariants: true,
        }
    }
}

#[derive(Debug)]
enum Event {
    Start {
        node: usize,
    },
    Tick {
        node: usize,
        generation: u64,
    },
    Establish {
        from: usize,
        generation: u64,
        addr: SocketAddrV6,
    },
    ConnectFailed {
        node: usize,
        generation: u64,
        addr: SocketAddrV6,
    },
    Deliver {
        from: usize,
        to: usize,
        epoch: u64,
        message: Message,
    },
    CloseArrive {
        to: usize,
        from: usize,
        epoch: u64,
    },
    ConnDown {
        node: usize,
        peer: usize,
        epoch: u64,
    },
}

#[derive(Debug)]
struct Link {
    epoch: u64,
    closing: bool,
    /// Latest scheduled delivery per direction (index 0: low → high node).
    last_delivery_ms: [u64; 2],
}

pub(crate) struct SimNode {
    pub id: NodeId,
    pub addr: SocketAddrV6,
    pub core: Option<Membership>,
    generation: u64,
    persisted_incarnation: u64,
    next_tick_ms: Option<u64>,
    seeds: Vec<SocketAddrV6>,
}

pub(crate) struct World {
    pub now_ms: u64,
    pub config: WorldConfig,
    pub membership: MembershipConfig,
    rng: SplitMix64,
    seed: u64,
    pub nodes: Vec<SimNode>,
    by_addr: BTreeMap<SocketAddrV6, usize>,
    by_id: BTreeMap<NodeId, usize>,
    links: BTreeMap<(usize, usize), Link>,
    next_epoch: u64,
    /// Partition group per node; pairs in different groups are cut.
    groups: Vec<u32>,
    queue: BTreeMap<(u64, u64), Event>,
    next_seq: u64,
    pub sent: MessageCounts,
    pub dropped: u64,
    pub connects: u64,
    pub max_active_seen: usize,
    pub ticks: u64,
    pending_starts: usize,
}

pub(crate) fn node_id(index: usize) -> NodeId {
    let mut bytes = [0u8; 32];
    for (word, chunk) in bytes.chunks_mut(8).enumerate() {
        let value = mix64((index as u64) << 8 | word as u64);
        chunk.copy_from_slice(&value.to_le_bytes());
    }
    NodeId(bytes)
}

pub(crate) fn node_addr(index: usize) -> SocketAddrV6 {
    let ip = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, (index >> 16) as u16, index as u16);
    SocketAddrV6::new(ip, 4_433, 0, 0)
}

fn pair(a: usize, b: usize) -> (usize, usize) {
    if a < b { (a, b) } else { (b, a) }
}

impl World {
    /// `n` nodes that all know the seed nodes' addresses; none started yet.
    pub(crate) fn new(
        n: usize,
        seed_nodes: &[usize],
        config: WorldConfig,
        membership: MembershipConfig,
        seed: u64,
    ) -> Self {
        let seeds: Vec<SocketAddrV6> = seed_nodes.iter().map(|i| node_addr(*i)).collect();
        let nodes: Vec<SimNode> = (0..n)
            .map(|i| SimNode {
                id: node_id(i),
                addr: node_addr(i),
                core: None,
                generation: 0,
                persisted_incarnation: 0,
                next_tick_ms: None,
                seeds: seeds.clone(),
            })
            .collect();
        let by_addr = nodes
            .iter()
            .enumerate()
            .map(|(i, node)| (node.addr, i))
            .collect();
        let by_id = nodes
            .iter()
            .enumerate()
            .map(|(i, node)| (node.id, i))
            .collect();
        Self {
            now_ms: 0,
            config,
            membership,
            rng: SplitMix64::new(seed),
            seed,
            nodes,
            by_addr,
            by_id,
            links: BTreeMap::new(),
            next_epoch: 1,
            groups: vec![0; n],
            queue: BTreeMap::new(),
            next_seq: 0,
            sent: MessageCounts::default(),
            dropped: 0,
            connects: 0,
            max_active_seen: 0,
            ticks: 0,
            pending_starts: 0,
        }
    }

    /// Start every node at a random time within `spread_ms` from now.
    pub(crate) fn start_all(&mut self, spread_ms: u64) {
        for node in 0..self.nodes.len() {
            let at = self.now_ms + self.rng.below(spread_ms.max(1) as usize) as u64;
            self.push(at, Event::Start { node });
            self.pending_starts += 1;
        }
    }

    fn push(&mut self, at_ms: u64, event: Event) {
        assert!(
            self.queue.len() < EVENTS_MAX,
            "event queue exploded: message storm"
        );
        self.queue.insert((at_ms, self.next_seq), event);
        self.next_seq += 1;
    }

    fn latency(&mut self) -> u64 {
        let span = self.config.latency_ms_max - self.config.latency_ms_min + 1;
        self.config.latency_ms_min + self.rng.below(span as usize) as u64
    }

    fn reachable(&self, a: usize, b: usize) -> bool {
        self.nodes[a].core.is_some()
            && self.nodes[b].core.is_some()
            && self.groups[a] == self.groups[b]
    }

    pub(crate) fn is_live(&self, node: usize) -> bool {
        self.nodes[node].core.is_some()
    }

    // ----- faults ------------------------------------------------------------

    pub(crate) fn crash(&mut self, node: usize) {
        if let Some(core) = self.nodes[node].core.take() {
            self.nodes[node].persisted_incarnation = core.incarnation();
        }
        self.nodes[node].generation += 1;
        self.nodes[node].next_tick_ms = None;
        let doomed: Vec<(usize, usize)> = self
            .links
            .keys()
            .filter(|(a, b)| *a == node || *b == node)
            .copied()
            .collect();
        for key in doomed {
            self.kill_link(key);
        }
    }

    /// Restart with the same id and the persisted incarnation + 1.
    pub(crate) fn restart(&mut self, node: usize) {
        if self.nodes[node].core.is_some() {
            return;
        }
        let incarnation = self.nodes[node].persisted_incarnation + 1;
        self.boot(node, incarnation);
    }

    /// `groups[i]`: partition group of node i. Connections across groups die.
    pub(crate) fn partition(&mut self, groups: Vec<u32>) {
        assert_eq!(groups.len(), self.nodes.len());
        self.groups = groups;
        let doomed: Vec<(usize, usize)> = self
            .links
            .keys()
            .filter(|(a, b)| self.groups[*a] != self.groups[*b])
            .copied()
            .collect();
        for key in doomed {
            self.kill_link(key);
        }
    }

    pub(crate) fn heal(&mut self) {
        self.groups = vec![0; self.nodes.len()];
    }

    /// Kill one random established connection (a NAT rebinding, a reset).
    pub(crate) fn drop_random_link(&mut self) {
        if self.links.is_empty() {
            return;
        }
        let index = self.rng.below(self.links.len());
        if let Some(key) = self.links.keys().nth(index).copied() {
            self.kill_link(key);
        }
    }

    fn kill_link(&mut self, key: (usize, usize)) {
        let Some(link) = self.links.remove(&key) else {
            return;
        };
        if let Some(delay) = self.config.down_notice_ms {
            let at = self.now_ms + delay;
            self.push(
                at,
                Event::ConnDown {
                    node: key.0,
                    peer: key.1,
                    epoch: link.epoch,
                },
            );
            self.push(
                at,
                Event::ConnDown {
                    node: key.1,
                    peer: key.0,
                    epoch: link.epoch,
                },
            );
        }
    }

    // ----- running -------------------------------------------------------------

    pub(crate) fn run_until(&mut self, until_ms: u64) {
        while let Some(entry) = self.queue.first_entry() {
            let (at, _) = *entry.key();
            if at > until_ms {
                break;
            }
            let event = entry.remove();
            self.now_ms = self.now_ms.max(at);
            self.handle(event);
        }
        self.now_ms = self.now_ms.max(until_ms);
    }

    pub(crate) fn run_for(&mut self, duration_ms: u64) {
        self.run_until(self.now_ms + duration_ms);
    }

    /// Run until every live node's view equals the live set; returns the time
    /// it took, or None if `limit_ms` passed first.
    pub(crate) fn run_until_converged(&mut self, limit_ms: u64) -> Option<u64> {
        const STEP_MS: u64 = 250;
        let start = self.now_ms;
        loop {
            if self.converged() {
                return Some(self.now_ms - start);
            }
            if self.now_ms >= start + limit_ms {
                return None;
            }
            self.run_for(STEP_MS);
        }
    }

    pub(crate) fn live_set(&self) -> Vec<NodeId> {
        let mut live: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|node| node.core.is_some())
            .map(|node| node.id)
            .collect();
        live.sort();
        live
    }

    pub(crate) fn converged(&self) -> bool {
        if self.pending_starts > 0 {
            return false;
        }
        let live = self.live_set();
        self.nodes
            .iter()
            .filter_map(|node| node.core.as_ref())
            .all(|core| core.alive_members() == live)
    }

    /// A human summary of who disagrees (for assertion messages).
    pub(crate) fn divergence(&self) -> String {
        let live = self.live_set();
        let mut lines = Vec::new();
        for (i, node) in self.nodes.iter().enumerate() {
            let Some(core) = &node.core else { continue };
            let view = core.alive_members();
            if view != live {
                let missing: Vec<NodeId> = live
                    .iter()
                    .filter(|id| !view.contains(id))
                    .copied()
                    .collect();
                let extra: Vec<NodeId> = view
                    .iter()
                    .filter(|id| !live.contains(id))
                    .copied()
                    .collect();
                lines.push(format!(
                    "node {i} {:?}: active {} missing {missing:?} extra {extra:?}",
                    node.id,
                    core.active_peers().len()
                ));
            }
            if lines.len() >= 10 {
                break;
            }
        }
        format!(
            "seed {}: t={} ms, {} disagree:\n{}",
            self.seed,
            self.now_ms,
            lines.len(),
            lines.join("\n")
        )
    }

    fn boot(&mut self, node: usize, incarnation: u64) {
        let n = &self.nodes[node];
        let core = Membership::new(
            self.membership.clone(),
            n.id,
            n.addr,
            incarnation,
            n.seeds.clone(),
            self.seed ^ mix64(node as u64 + 1) ^ mix64(incarnation),
            self.now_ms,
        );
        self.nodes[node].core = Some(core);
        self.nodes[node].generation += 1;
        self.nodes[node].next_tick_ms = None;
        self.after(node);
    }

    fn handle(&mut self, event: Event) {
        let now = self.now_ms;
        match event {
            Event::Start { node } => {
                self.pending_starts -= 1;
                if self.nodes[node].core.is_none() {
                    self.boot(node, 0);
                }
            }
            Event::Tick { node, generation } => {
                let n = &mut self.nodes[node];
                if n.generation != generation || n.next_tick_ms != Some(now) {
                    return;
                }
                n.next_tick_ms = None;
                if let Some(core) = n.core.as_mut() {
                    self.ticks += 1;
                    core.handle_tick(now);
                    self.after(node);
                }
            }
            Event::Establish {
                from,
                generation,
                addr,
            } => {
                if self.nodes[from].generation != generation || self.nodes[from].core.is_none() {
                    return;
                }
                let target = self.by_addr.get(&addr).copied();
                match target {
                    Some(to) if to != from && self.reachable(from, to) => self.establish(from, to),
                    _ => {
                        let at = now + self.config.connect_fail_ms;
                        self.push(
                            at,
                            Event::ConnectFailed {
                                node: from,
                                generation,
                                addr,
                            },
                        );
                    }
                }
            }
            Event::ConnectFailed {
                node,
                generation,
                addr,
            } => {
                if self.nodes[node].generation != generation {
                    return;
                }
                if let Some(core) = self.nodes[node].core.as_mut() {
                    core.handle_connect_failed(now, addr);
                    self.after(node);
                }
            }
            Event::Deliver {
                from,
                to,
                epoch,
                message,
            } => {
                let key = pair(from, to);
                if self.links.get(&key).is_none_or(|link| link.epoch != epoch) {
                    self.dropped += 1;
                    return;
                }
                let from_id = self.nodes[from].id;
                if let Some(core) = self.nodes[to].core.as_mut() {
                    core.handle_message(now, from_id, message);
                    self.after(to);
                }
            }
            Event::CloseArrive { to, from, epoch } => {
                let key = pair(from, to);
                if self.links.get(&key).is_some_and(|link| link.epoch == epoch) {
                    self.links.remove(&key);
                    let from_id = self.nodes[from].id;
                    if let Some(core) = self.nodes[to].core.as_mut() {
                        core.handle_connection_down(now, from_id);
                        self.after(to);
                    }
                }
            }
            Event::ConnDown { node, peer, epoch } => {
                // The shell reports the death of the connection it had; if a
                // newer connection to the same peer exists, it keeps that one.
                if self
                    .links
                    .get(&pair(node, peer))
                    .is_some_and(|link| link.epoch != epoch)
                {
                    return;
                }
                let peer_id = self.nodes[peer].id;
                if let Some(core) = self.nodes[node].core.as_mut() {
                    core.handle_connection_down(now, peer_id);
                    self.after(node);
                }
            }
        }
    }

    fn establish(&mut self, from: usize, to: usize) {
        let now = self.now_ms;
        let key = pair(from, to);
        let reuse = self.links.get(&key).is_some_and(|link| !link.closing);
        if !reuse {
            let epoch = self.next_epoch;
            self.next_epoch += 1;
            self.links.insert(
                key,
                Link {
                    epoch,
                    closing: false,
                    last_delivery_ms: [now; 2],
                },
            );
        }
        let (from_id, to_id) = (self.nodes[from].id, self.nodes[to].id);
        let (from_addr, to_addr) = (self.nodes[from].addr, self.nodes[to].addr);
        if let Some(core) = self.nodes[from].core.as_mut() {
            core.handle_connection_up(now, to_id, to_addr, true);
        }
        if !reuse && let Some(core) = self.nodes[to].core.as_mut() {
            core.handle_connection_up(now, from_id, from_addr, false);
        }
        self.after(from);
        self.after(to);
    }

    /// Drain a node's actions into the world and reschedule its tick.
    fn after(&mut self, node: usize) {
        let now = self.now_ms;
        let generation = self.nodes[node].generation;
        let mut actions = Vec::new();
        let (next_tick, active) = {
            let Some(core) = self.nodes[node].core.as_mut() else {
                return;
            };
            while let Some(action) = core.poll_action() {
                actions.push(action);
            }
            if self.config.check_invariants {
                core.check_invariants();
            }
            (core.poll_timeout(), core.active_peers().len())
        };
        self.max_active_seen = self.max_active_seen.max(active);
        for action in actions {
            match action {
                Action::Connect { addr } => {
                    self.connects += 1;
                    let at = now + 2 * self.latency();
                    self.push(
                        at,
                        Event::Establish {
                            from: node,
                            generation,
                            addr,
                        },
                    );
                }
                Action::Send { to, message } => {
                    self.sent.0[message.kind_index()] += 1;
                    let Some(to) = self.by_id.get(&to).copied() else {
                        self.dropped += 1;
                        continue;
                    };
                    let key = pair(node, to);
                    let direction = usize::from(node > to);
                    let latency = self.latency();
                    let Some(link) = self.links.get_mut(&key).filter(|link| !link.closing) else {
                        self.dropped += 1;
                        continue;
                    };
                    let at = (now + latency).max(link.last_delivery_ms[direction]);
                    link.last_delivery_ms[direction] = at;
                    let epoch = link.epoch;
                    self.push(
                        at,
                        Event::Deliver {
                            from: node,
                            to,
                            epoch,
                            message,
                        },
                    );
                }
                Action::Disconnect { peer } => {
                    let Some(peer) = self.by_id.get(&peer).copied() else {
                        continue;
                    };
                    let key = pair(node, peer);
                    let direction = usize::from(node > peer);
                    let latency = self.latency();
                    let Some(link) = self.links.get_mut(&key).filter(|link| !link.closing) else {
                        continue;
                    };
                    link.closing = true;
                    let at = (now + latency).max(link.last_delivery_ms[direction]);
                    let epoch = link.epoch;
                    self.push(
                        at,
                        Event::CloseArrive {
                            to: peer,
                            from: node,
                            epoch,
                        },
                    );
                }
            }
        }
        let wanted = next_tick.unwrap_or(now + 1_000).max(now + 1);
        let n = &mut self.nodes[node];
        if n.next_tick_ms
            .is_none_or(|scheduled| wanted < scheduled || scheduled < now)
        {
            n.next_tick_ms = Some(wanted);
            self.push(wanted, Event::Tick { node, generation });
        }
    }

    // ----- measurement ------------------------------------------------------------

    pub(crate) fn messages_sent(&self) -> u64 {
        self.sent.total()
    }

    pub(crate) fn kind_breakdown(&self, since: &MessageCounts) -> String {
        (0..MESSAGE_KINDS)
            .filter(|k| self.sent.0[*k] > since.0[*k])
            .map(|k| format!("{}={}", Message::KIND_NAMES[k], self.sent.0[k] - since.0[k]))
            .collect::<Vec<_>>()
            .join(" ")
    }

    pub(crate) fn live_nodes(&self) -> BTreeSet<usize> {
        (0..self.nodes.len()).filter(|i| self.is_live(*i)).collect()
    }

    pub(crate) fn core(&self, node: usize) -> Option<&Membership> {
        self.nodes[node].core.as_ref()
    }
}
