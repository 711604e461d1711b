//! The simulated network behind `hm_env::Net`.
//!
//! Datagrams are not carried by madsim's own endpoints: a send computes the
//! delivery time from the link model and puts the datagram straight into the
//! receiving socket's queue, ordered by (delivery time, send time, source,
//! sequence). The receiver arms one timer for the head of its queue. This keeps
//! quinn's pacing intact (madsim rounds sleeps up to 1 ms and orders equal
//! deadlines arbitrarily, see DESIGN §9) and costs one map insert per datagram.
// This is the simulated Net backend: `Instant::now` here is madsim's virtual
// time (it intercepts the OS clock), which is exactly what the backend needs.
#![allow(clippy::disallowed_methods)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, IoSliceMut};
use std::net::{Ipv6Addr, SocketAddrV6};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use hm_env::net::DATAGRAM_BYTES_MAX;
use hm_env::{DatagramSocket, Net, RecvMeta, Transmit};

use crate::world::{Auditor, EventKind, lock};

/// Most datagrams queued at one socket; later ones are dropped as a full
/// receive buffer would (quinn paces far below this).
pub const SOCKET_QUEUE_DATAGRAMS_MAX: usize = 16_384;

/// The port every simulated node listens on.
pub const NODE_PORT: u16 = 7000;

/// The simulated address of node `index`: `fd00::<index+1>`.
pub fn node_ip(index: u32) -> Ipv6Addr {
    let host = index + 1;
    Ipv6Addr::new(
        0xfd00,
        0,
        0,
        0,
        0,
        0,
        (host >> 16) as u16,
        (host & 0xffff) as u16,
    )
}

/// The inverse of [`node_ip`]; `None` for addresses outside the simulation.
pub fn node_of(ip: &Ipv6Addr) -> Option<u32> {
    let segments = ip.segments();
    if segments[..6] != [0xfd00, 0, 0, 0, 0, 0] {
        return None;
    }
    let host = (u32::from(segments[6]) << 16) | u32::from(segments[7]);
    host.checked_sub(1)
}

/// How a link behaves. One model for every link; faults change it over time.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct LinkModel {
    /// Fixed one-way delay.
    pub latency_us: u64,
    /// Extra delay drawn uniformly from `0..=jitter_us` per datagram.
    pub jitter_us: u64,
    /// Probability a datagram is lost.
    pub loss: f64,
    /// Probability a datagram is delivered twice.
    pub duplicate: f64,
    /// Probability a datagram may overtake earlier ones on its link; otherwise
    /// links are FIFO (real paths rarely reorder, and quinn reads reordering
    /// as loss).
    pub reorder: f64,
}

impl Default for LinkModel {
    fn default() -> Self {
        Self {
            latency_us: 5_000,
            jitter_us: 1_000,
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
        }
    }
}

/// Which node may talk to which while a partition stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// Group of each node index (nodes beyond the vector are in group 0).
    pub group_of: Vec<u16>,
    /// `None`: groups are cut both ways. `Some((from, to))`: only datagrams
    /// from group `from` to group `to` are dropped.
    pub one_way: Option<(u16, u16)>,
}

impl Partition {
    fn group(&self, node: u32) -> u16 {
        self.group_of.get(node as usize).copied().unwrap_or(0)
    }

    pub fn blocks(&self, from: u32, to: u32) -> bool {
        let (a, b) = (self.group(from), self.group(to));
        match self.one_way {
            None => a != b,
            Some((blocked_from, blocked_to)) => a == blocked_from && b == blocked_to,
        }
    }
}

type QueueKey = (Instant, Instant, SocketAddrV6, u64);

#[derive(Default)]
struct Inbox {
    queue: BTreeMap<QueueKey, Vec<u8>>,
    waker: Option<Waker>,
    timer: Option<(Instant, Pin<Box<crate::env::SimSleep>>)>,
}

impl std::fmt::Debug for Inbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbox")
            .field("queued", &self.queue.len())
            .finish()
    }
}

#[derive(Debug, Default)]
struct NetState {
    sockets: BTreeMap<SocketAddrV6, Arc<Mutex<Inbox>>>,
    link: LinkModel,
    partition: Option<Partition>,
    /// Nodes whose traffic (both ways) is held until the given instant.
    clogged_until: BTreeMap<u32, Instant>,
    /// Latest delivery time per (from, to) node pair, for FIFO links.
    link_tail: BTreeMap<(u32, u32), Instant>,
    next_sequence: u64,
    next_ephemeral_port: u16,
}

/// The simulated network shared by every node of a run.
#[derive(Debug)]
pub struct SimNetwork {
    state: Mutex<NetState>,
    auditor: Arc<Auditor>,
    start: Instant,
}

impl SimNetwork {
    pub fn new(auditor: Arc<Auditor>, start: Instant, link: LinkModel) -> Self {
        Self {
            state: Mutex::new(NetState {
                link,
                next_ephemeral_port: 49_152,
                ..NetState::default()
            }),
            auditor,
            start,
        }
    }

    pub fn link(&self) -> LinkModel {
        lock(&self.state).link
    }

    pub fn set_link(&self, link: LinkModel) {
        lock(&self.state).link = link;
    }

    pub fn set_partition(&self, partition: Option<Partition>) {
        lock(&self.state).partition = partition;
    }

    /// Drops every socket of `node` (it was killed: its tasks are gone, and
    /// a restart must be able to bind the same address at once).
    pub fn unbind_node(&self, node: u32) {
        let ip = node_ip(node);
        lock(&self.state).sockets.retain(|addr, _| *addr.ip() != ip);
    }

    pub fn clog(&self, node: u32, until: Instant) {
        lock(&self.state).clogged_until.insert(node, until);
    }

    fn at_ns(&self, instant: Instant) -> u64 {
        u64::try_from(instant.saturating_duration_since(self.start).as_nanos()).unwrap_or(u64::MAX)
    }

    fn route(&self, source: SocketAddrV6, transmit: &Transmit<'_>) {
        let now = Instant::now();
        let destination = transmit.destination;
        let mut state = lock(&self.state);
        for datagram in transmit.datagrams() {
            self.auditor.count(|c| c.datagrams_sent += 1);
            let (Some(from), Some(to)) = (node_of(source.ip()), node_of(destination.ip())) else {
                self.auditor.count(|c| c.datagrams_unroutable += 1);
                continue;
            };
            if datagram.len() > DATAGRAM_BYTES_MAX {
                self.auditor.count(|c| c.datagrams_unroutable += 1);
                continue;
            }
            if state.partition.as_ref().is_some_and(|p| p.blocks(from, to)) {
                self.auditor.count(|c| c.datagrams_partitioned += 1);
                continue;
            }
            let link = state.link;
            if link.loss > 0.0 && chance(link.loss) {
                self.auditor.count(|c| c.datagrams_lost += 1);
                continue;
            }
            let copies = if link.duplicate > 0.0 && chance(link.duplicate) {
                self.auditor.count(|c| c.datagrams_duplicated += 1);
                2
            } else {
                1
            };
            let Some(inbox) = state.sockets.get(&destination).cloned() else {
                self.auditor.count(|c| c.datagrams_unroutable += 1);
                continue;
            };
            for _ in 0..copies {
                let jitter = if link.jitter_us > 0 {
                    uniform(link.jitter_us + 1)
                } else {
                    0
                };
                let mut deliver_at = now + Duration::from_micros(link.latency_us + jitter);
                for node in [from, to] {
                    if let Some(until) = state.clogged_until.get(&node)
                        && *until > deliver_at
                    {
                        deliver_at = *until;
                    }
                }
                let fifo = !(link.reorder > 0.0 && chance(link.reorder));
                if fifo {
                    let tail = state.link_tail.entry((from, to)).or_insert(deliver_at);
                    if *tail > deliver_at {
                        deliver_at = *tail;
                    }
                    *tail = deliver_at;
                }
                let sequence = state.next_sequence;
                state.next_sequence += 1;
                let mut inbox = lock(&inbox);
                if inbox.queue.len() >= SOCKET_QUEUE_DATAGRAMS_MAX {
                    self.auditor.count(|c| c.datagrams_lost += 1);
                    continue;
                }
                let key = (deliver_at, now, source, sequence);
                let is_new_head = inbox
                    .queue
                    .first_key_value()
                    .is_none_or(|(head, _)| key < *head);
                inbox.queue.insert(key, datagram.to_vec());
                if is_new_head && let Some(waker) = inbox.waker.take() {
                    waker.wake();
                }
            }
        }
    }
}

fn chance(probability: f64) -> bool {
    use madsim::rand::Rng;
    madsim::rand::thread_rng().gen_bool(probability.clamp(0.0, 1.0))
}

fn uniform(bound: u64) -> u64 {
    use madsim::rand::Rng;
    madsim::rand::thread_rng().gen_range(0..bound)
}

/// One node's view of the network: binds sockets on that node's address.
#[derive(Debug, Clone)]
pub struct SimNet {
    pub(crate) network: Arc<SimNetwork>,
    pub(crate) node: u32,
}

impl Net for SimNet {
    type Socket = SimSocket;

    fn bind(&self, addr: SocketAddrV6) -> io::Result<SimSocket> {
        let own_ip = node_ip(self.node);
        let ip = if addr.ip().is_unspecified() {
            own_ip
        } else {
            *addr.ip()
        };
        if ip != own_ip {
            return Err(io::Error::new(
                io::ErrorKind::AddrNotAvailable,
                format!("{ip} is not an address of this node (it has {own_ip})"),
            ));
        }
        let mut state = lock(&self.network.state);
        let mut port = addr.port();
        if port == 0 {
            for _ in 0..16_384 {
                let candidate = state.next_ephemeral_port;
                state.next_ephemeral_port = candidate.checked_add(1).unwrap_or(49_152);
                if !state
                    .sockets
                    .contains_key(&SocketAddrV6::new(ip, candidate, 0, 0))
                {
                    port = candidate;
                    break;
                }
            }
        }
        let local = SocketAddrV6::new(ip, port, 0, 0);
        if port == 0 || state.sockets.contains_key(&local) {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("{local} is already bound"),
            ));
        }
        let inbox = Arc::new(Mutex::new(Inbox::default()));
        state.sockets.insert(local, inbox.clone());
        Ok(SimSocket {
            local,
            inbox,
            network: self.network.clone(),
        })
    }
}

#[derive(Debug)]
pub struct SimSocket {
    local: SocketAddrV6,
    inbox: Arc<Mutex<Inbox>>,
    network: Arc<SimNetwork>,
}

impl Drop for SimSocket {
    fn drop(&mut self) {
        let mut state = lock(&self.network.state);
        if state
            .sockets
            .get(&self.local)
            .is_some_and(|inbox| Arc::ptr_eq(inbox, &self.inbox))
        {
            state.sockets.remove(&self.local);
        }
    }
}

impl DatagramSocket for SimSocket {
    fn local_addr(&self) -> SocketAddrV6 {
        self.local
    }

    fn try_send(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        self.network.route(self.local, transmit);
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
        loop {
            let now = Instant::now();
            let mut filled = 0;
            while filled < bufs.len().min(meta.len()) {
                let Some(entry) = inbox.queue.first_entry() else {
                    break;
                };
                if entry.key().0 > now {
                    break;
                }
                let ((_, _, source, _), datagram) = entry.remove_entry();
                meta[filled] = RecvMeta::fill_one(&mut bufs[filled], &datagram, source, self.local);
                let len = meta[filled].len;
                let at_ns = self.network.at_ns(now);
                self.network.auditor.record(
                    EventKind::Delivered,
                    at_ns,
                    &[
                        &source.ip().octets(),
                        &source.port().to_le_bytes(),
                        &self.local.ip().octets(),
                        &self.local.port().to_le_bytes(),
                        &(len as u64).to_le_bytes(),
                    ],
                );
                self.network
                    .auditor
                    .count(|c| c.datagram_bytes_delivered += len as u64);
                filled += 1;
            }
            if filled > 0 {
                return Poll::Ready(Ok(filled));
            }
            inbox.waker = Some(cx.waker().clone());
            let Some(((head_at, ..), _)) = inbox.queue.first_key_value() else {
                return Poll::Pending;
            };
            let head_at = *head_at;
            let rearm = inbox.timer.as_ref().is_none_or(|(at, _)| *at != head_at);
            if rearm {
                inbox.timer = Some((head_at, Box::pin(crate::env::SimSleep::until(head_at))));
            }
            let Some((_, timer)) = inbox.timer.as_mut() else {
                return Poll::Pending;
            };
            match timer.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    inbox.timer = None;
                    // The head is due now: loop to deliver it.
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// The set of addresses currently bound (for tests and the garbage sender).
pub fn bound_addresses(network: &SimNetwork) -> BTreeSet<SocketAddrV6> {
    lock(&network.state).sockets.keys().copied().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::world::Auditor;

    fn addr(node: u32) -> SocketAddrV6 {
        SocketAddrV6::new(node_ip(node), 9000, 0, 0)
    }

    fn network(link: LinkModel) -> Arc<SimNetwork> {
        #[allow(clippy::disallowed_methods)] // virtual time
        let start = Instant::now();
        Arc::new(SimNetwork::new(Arc::new(Auditor::default()), start, link))
    }

    async fn try_recv_within(socket: &SimSocket, ms: u64) -> Option<Vec<u8>> {
        let mut buf = [0u8; 2048];
        let received = madsim::time::timeout(
            Duration::from_millis(ms),
            hm_env::recv_from(socket, &mut buf),
        )
        .await;
        match received {
            Ok(Ok((len, _))) => Some(buf[..len].to_vec()),
            _ => None,
        }
    }

    #[madsim::test]
    async fn a_datagram_arrives_after_the_link_latency_and_not_before() {
        let link = LinkModel {
            latency_us: 20_000,
            jitter_us: 0,
            ..LinkModel::default()
        };
        let network = network(link);
        let a = SimNet {
            network: network.clone(),
            node: 0,
        }
        .bind(addr(0))
        .expect("bind a");
        let b = SimNet {
            network: network.clone(),
            node: 1,
        }
        .bind(addr(1))
        .expect("bind b");
        #[allow(clippy::disallowed_methods)] // virtual time
        let sent_at = Instant::now();
        hm_env::send_to(&a, addr(1), b"ping").await.expect("send");
        assert_eq!(
            try_recv_within(&b, 19).await,
            None,
            "delivered before the latency"
        );
        assert_eq!(try_recv_within(&b, 5).await.as_deref(), Some(&b"ping"[..]));
        #[allow(clippy::disallowed_methods)] // virtual time
        let elapsed = Instant::now().duration_since(sent_at);
        assert!(elapsed >= Duration::from_millis(20), "{elapsed:?}");
        // Binding another node's address is refused.
        assert!(SimNet { network, node: 0 }.bind(addr(1)).is_err());
    }

    #[madsim::test]
    async fn partitions_cut_both_ways_or_one_way_and_heal() {
        let network = network(LinkModel::default());
        let a = SimNet {
            network: network.clone(),
            node: 0,
        }
        .bind(addr(0))
        .expect("bind a");
        let b = SimNet {
            network: network.clone(),
            node: 1,
        }
        .bind(addr(1))
        .expect("bind b");
        network.set_partition(Some(Partition {
            group_of: vec![0, 1],
            one_way: None,
        }));
        hm_env::send_to(&a, addr(1), b"x").await.expect("send");
        hm_env::send_to(&b, addr(0), b"y").await.expect("send");
        assert_eq!(try_recv_within(&b, 100).await, None);
        assert_eq!(try_recv_within(&a, 100).await, None);

        network.set_partition(Some(Partition {
            group_of: vec![0, 1],
            one_way: Some((0, 1)),
        }));
        hm_env::send_to(&a, addr(1), b"x").await.expect("send");
        hm_env::send_to(&b, addr(0), b"y").await.expect("send");
        assert_eq!(try_recv_within(&b, 100).await, None, "0 -> 1 is cut");
        assert_eq!(
            try_recv_within(&a, 100).await.as_deref(),
            Some(&b"y"[..]),
            "1 -> 0 flows"
        );

        network.set_partition(None);
        hm_env::send_to(&a, addr(1), b"x").await.expect("send");
        assert_eq!(try_recv_within(&b, 100).await.as_deref(), Some(&b"x"[..]));
    }

    #[madsim::test]
    async fn a_clogged_node_gets_its_traffic_late_not_never() {
        let network = network(LinkModel {
            latency_us: 1_000,
            jitter_us: 0,
            ..LinkModel::default()
        });
        let a = SimNet {
            network: network.clone(),
            node: 0,
        }
        .bind(addr(0))
        .expect("bind a");
        let b = SimNet {
            network: network.clone(),
            node: 1,
        }
        .bind(addr(1))
        .expect("bind b");
        #[allow(clippy::disallowed_methods)] // virtual time
        let now = Instant::now();
        network.clog(1, now + Duration::from_millis(500));
        hm_env::send_to(&a, addr(1), b"late").await.expect("send");
        assert_eq!(try_recv_within(&b, 400).await, None);
        assert_eq!(
            try_recv_within(&b, 200).await.as_deref(),
            Some(&b"late"[..])
        );
    }

    #[madsim::test]
    async fn links_are_fifo_unless_reordering_is_asked_for() {
        let network = network(LinkModel {
            latency_us: 5_000,
            jitter_us: 4_000,
            ..LinkModel::default()
        });
        let a = SimNet {
            network: network.clone(),
            node: 0,
        }
        .bind(addr(0))
        .expect("bind a");
        let b = SimNet { network, node: 1 }.bind(addr(1)).expect("bind b");
        for i in 0..50u8 {
            hm_env::send_to(&a, addr(1), &[i]).await.expect("send");
        }
        for i in 0..50u8 {
            assert_eq!(try_recv_within(&b, 100).await, Some(vec![i]));
        }
    }
}
