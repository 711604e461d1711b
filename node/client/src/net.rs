//! Real IPv6 UDP sockets with segmentation offload (GSO) on send and receive
//! offload (GRO) on receive, driven the way quinn drives them on tokio, so
//! that QUIC on top of [`hm_env::Net`] runs as fast as quinn's own runtime.

use std::io::{self, IoSliceMut};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use hm_env::{DatagramSocket, Net, RecvMeta, Transmit};
use tokio::io::Interest;

/// Most datagram buffers filled by one `poll_recv`: quinn-udp's `recvmmsg`
/// batch, past which it would ignore the extra buffers anyway.
pub const RECV_BATCH_MAX: usize = quinn_udp::BATCH_SIZE;

/// Opens real UDP sockets. IPv6 only: HyperMesh has no IPv4 addresses, and a
/// dual-stack socket would hand the node IPv4-mapped peers it cannot name.
#[derive(Debug, Clone, Default)]
pub struct HostNet {
    traffic: NetTraffic,
}

/// UDP traffic of every socket one [`HostNet`] bound: what STOQ put on the
/// wire and took off it (QUIC headers, handshakes and retransmissions
/// included), for `/metrics`. Cheap to clone; clones share the counters.
#[derive(Debug, Clone, Default)]
pub struct NetTraffic(Arc<TrafficCounters>);

#[derive(Debug, Default)]
struct TrafficCounters {
    datagrams_sent: AtomicU64,
    bytes_sent: AtomicU64,
    datagrams_received: AtomicU64,
    bytes_received: AtomicU64,
}

/// A reading of [`NetTraffic`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrafficTotals {
    pub datagrams_sent: u64,
    pub bytes_sent: u64,
    pub datagrams_received: u64,
    pub bytes_received: u64,
}

impl NetTraffic {
    pub fn totals(&self) -> TrafficTotals {
        let counters = &self.0;
        TrafficTotals {
            datagrams_sent: counters.datagrams_sent.load(Ordering::Relaxed),
            bytes_sent: counters.bytes_sent.load(Ordering::Relaxed),
            datagrams_received: counters.datagrams_received.load(Ordering::Relaxed),
            bytes_received: counters.bytes_received.load(Ordering::Relaxed),
        }
    }

    /// `bytes` in buffers of `stride`-byte datagrams (GSO/GRO batches).
    fn count(&self, sent: bool, bytes: usize, stride: usize) {
        let datagrams = bytes.div_ceil(stride.max(1)) as u64;
        let counters = &self.0;
        let (count, total) = if sent {
            (&counters.datagrams_sent, &counters.bytes_sent)
        } else {
            (&counters.datagrams_received, &counters.bytes_received)
        };
        count.fetch_add(datagrams, Ordering::Relaxed);
        total.fetch_add(bytes as u64, Ordering::Relaxed);
    }
}

impl HostNet {
    /// The traffic counters of every socket this `HostNet` binds.
    pub fn traffic(&self) -> NetTraffic {
        self.traffic.clone()
    }

    /// Binds `addr` given in either family, for callers that parse a
    /// configuration; an IPv4 address is rejected with
    /// `ErrorKind::InvalidInput`.
    pub fn bind_socket_addr(&self, addr: SocketAddr) -> io::Result<HostSocket> {
        match addr {
            SocketAddr::V6(addr) => HostSocket::bind(addr, self.traffic.clone()),
            SocketAddr::V4(addr) => Err(ipv4_rejected(&addr.to_string())),
        }
    }
}

impl Net for HostNet {
    type Socket = HostSocket;

    /// Binds a non-blocking, IPv6-only UDP socket to `addr` (`[::]:port` or a
    /// specific address; port 0 picks a free port). Must be called inside a
    /// tokio runtime, which then drives the socket's readiness.
    fn bind(&self, addr: SocketAddrV6) -> io::Result<HostSocket> {
        HostSocket::bind(addr, self.traffic.clone())
    }
}

fn ipv4_rejected(addr: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "cannot bind {addr}: HyperMesh sockets are IPv6 only; listen on [::]:port or a specific IPv6 address"
        ),
    )
}

/// A bound UDP socket: tokio watches readiness, quinn-udp does the system
/// calls (`sendmsg` with `UDP_SEGMENT`, `recvmmsg` with `UDP_GRO`).
#[derive(Debug)]
pub struct HostSocket {
    io: tokio::net::UdpSocket,
    state: quinn_udp::UdpSocketState,
    local_addr: SocketAddrV6,
    traffic: NetTraffic,
}

impl HostSocket {
    fn bind(addr: SocketAddrV6, traffic: NetTraffic) -> io::Result<Self> {
        if addr.ip().to_ipv4_mapped().is_some() {
            return Err(ipv4_rejected(&addr.to_string()));
        }
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(io::Error::other(format!(
                "cannot bind {addr}: no tokio runtime is running; bind sockets from inside the node's runtime"
            )));
        }
        let socket = socket2::Socket::new(
            socket2::Domain::IPV6,
            socket2::Type::DGRAM,
            Some(socket2::Protocol::UDP),
        )?;
        // Before bind: `[::]` would otherwise also accept IPv4 (mapped) traffic.
        socket.set_only_v6(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&SocketAddr::V6(addr).into()).map_err(|error| {
            io::Error::new(error.kind(), format!("cannot bind {addr}: {error}"))
        })?;
        let socket = std::net::UdpSocket::from(socket);
        let state = quinn_udp::UdpSocketState::new((&socket).into())?;
        let io = tokio::net::UdpSocket::from_std(socket)?;
        let local_addr = match io.local_addr()? {
            SocketAddr::V6(local) => local,
            SocketAddr::V4(local) => {
                return Err(io::Error::other(format!(
                    "an IPv6 socket reported the IPv4 local address {local}"
                )));
            }
        };
        assert!(
            addr.port() == 0 || local_addr.port() == addr.port(),
            "the kernel bound port {} instead of the requested {}",
            local_addr.port(),
            addr.port()
        );
        Ok(Self {
            io,
            state,
            local_addr,
            traffic,
        })
    }

    /// Checks what the kernel would reject with an opaque `EINVAL` (which
    /// quinn-udp would log and drop), so a caller's mistake surfaces as an error.
    fn check_transmit(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        let Some(segment_size) = transmit.segment_size else {
            return Ok(());
        };
        if segment_size == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a transmit's segment_size must be at least 1 byte",
            ));
        }
        let segments = transmit.contents.len().div_ceil(segment_size);
        let segments_max = self.max_transmit_segments();
        if segments > segments_max {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "a transmit of {segments} segments exceeds this socket's limit of {segments_max}; \
                     split it by max_transmit_segments()"
                ),
            ));
        }
        Ok(())
    }
}

/// Maps an address quinn-udp reports into the IPv6-only world. On an
/// IPv6-only socket a V4 address cannot occur; mapping keeps it total anyway.
fn to_v6(addr: SocketAddr) -> SocketAddrV6 {
    match addr {
        SocketAddr::V6(addr) => addr,
        SocketAddr::V4(addr) => SocketAddrV6::new(addr.ip().to_ipv6_mapped(), addr.port(), 0, 0),
    }
}

fn ip_to_v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V6(ip) => ip,
        IpAddr::V4(ip) => ip.to_ipv6_mapped(),
    }
}

impl DatagramSocket for HostSocket {
    fn local_addr(&self) -> SocketAddrV6 {
        self.local_addr
    }

    /// Errors other than `WouldBlock` (unreachable networks, oversized
    /// datagrams) drop the datagram and are logged by quinn-udp at most once a
    /// minute, as UDP and quinn's own runtime do: QUIC retransmits, and an
    /// error here would otherwise tear down every connection on the endpoint.
    fn try_send(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        self.check_transmit(transmit)?;
        let transmit = quinn_udp::Transmit {
            destination: SocketAddr::V6(transmit.destination),
            ecn: None,
            contents: transmit.contents,
            segment_size: transmit.segment_size,
            src_ip: None,
        };
        self.io.try_io(Interest::WRITABLE, || {
            self.state.send((&self.io).into(), &transmit)
        })?;
        let stride = transmit.segment_size.unwrap_or(transmit.contents.len());
        self.traffic.count(true, transmit.contents.len(), stride);
        Ok(())
    }

    fn poll_writable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.io.poll_send_ready(cx)
    }

    /// Returns at most [`RECV_BATCH_MAX`] buffers per call. With GRO one
    /// buffer may hold several datagrams of `stride` bytes: size buffers as
    /// `max_receive_segments() * DATAGRAM_BYTES_MAX` to avoid truncation.
    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let batch = bufs.len().min(meta.len()).min(RECV_BATCH_MAX);
        if batch == 0 {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "poll_recv needs at least one buffer and one metadata slot",
            )));
        }
        let mut raw = [quinn_udp::RecvMeta::default(); RECV_BATCH_MAX];
        loop {
            ready!(self.io.poll_recv_ready(cx))?;
            let received = self.io.try_io(Interest::READABLE, || {
                self.state
                    .recv((&self.io).into(), &mut bufs[..batch], &mut raw[..batch])
            });
            match received {
                Ok(count) => {
                    assert!(count <= batch, "recvmmsg filled more buffers than given");
                    for raw in &raw[..count] {
                        self.traffic.count(false, raw.len, raw.stride);
                    }
                    for (out, raw) in meta.iter_mut().zip(&raw[..count]) {
                        *out = RecvMeta {
                            source: to_v6(raw.addr),
                            len: raw.len,
                            stride: raw.stride,
                            destination: raw.dst_ip.map(|ip| {
                                SocketAddrV6::new(ip_to_v6(ip), self.local_addr.port(), 0, 0)
                            }),
                        };
                    }
                    return Poll::Ready(Ok(count));
                }
                // Readiness was spurious: tokio cleared it, so the next
                // poll_recv_ready either registers the waker or finds new data.
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
                Err(error) => return Poll::Ready(Err(error)),
            }
        }
    }

    fn max_transmit_segments(&self) -> usize {
        self.state.max_gso_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.state.gro_segments()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hm_env::net::DATAGRAM_BYTES_MAX;
    use hm_env::{recv_from, send_to};
    use std::future::poll_fn;
    use std::net::{Ipv4Addr, SocketAddrV4};

    fn loopback(port: u16) -> SocketAddrV6 {
        SocketAddrV6::new(Ipv6Addr::LOCALHOST, port, 0, 0)
    }

    #[tokio::test]
    async fn a_datagram_sent_on_loopback_arrives_intact_with_its_source() {
        let net = HostNet::default();
        let a = net.bind(loopback(0)).expect("bind a");
        let b = net.bind(loopback(0)).expect("bind b");
        send_to(&a, b.local_addr(), b"hello over ::1")
            .await
            .expect("send");
        let mut buf = [0u8; 1500];
        let (len, source) = recv_from(&b, &mut buf).await.expect("recv");
        assert_eq!(&buf[..len], b"hello over ::1");
        assert_eq!(source, a.local_addr());
        // Both sockets came from `net`: one datagram each way counted.
        let totals = net.traffic().totals();
        assert_eq!((totals.datagrams_sent, totals.bytes_sent), (1, 14));
        assert_eq!((totals.datagrams_received, totals.bytes_received), (1, 14));
        assert_eq!(
            HostNet::default().traffic().totals(),
            TrafficTotals::default()
        );
    }

    #[tokio::test]
    async fn port_zero_picks_a_distinct_free_port() {
        let net = HostNet::default();
        let a = net.bind(loopback(0)).expect("bind a");
        let b = net.bind(loopback(0)).expect("bind b");
        assert_ne!(a.local_addr().port(), 0);
        assert_ne!(b.local_addr().port(), 0);
        assert_ne!(a.local_addr().port(), b.local_addr().port());
        // The port is really taken: binding it again fails.
        let again = net.bind(a.local_addr());
        assert_eq!(
            again.expect_err("port in use").kind(),
            io::ErrorKind::AddrInUse
        );
    }

    #[tokio::test]
    async fn unspecified_address_binds_and_receives_from_loopback() {
        let net = HostNet::default();
        let any = net
            .bind(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, 0, 0, 0))
            .expect("bind [::]");
        let sender = net.bind(loopback(0)).expect("bind sender");
        send_to(&sender, loopback(any.local_addr().port()), b"x")
            .await
            .expect("send");
        let mut buf = [0u8; 16];
        let (len, source) = recv_from(&any, &mut buf).await.expect("recv");
        assert_eq!((len, source), (1, sender.local_addr()));
    }

    #[tokio::test]
    async fn ipv4_addresses_are_rejected() {
        let net = HostNet::default();
        let v4 = net.bind_socket_addr(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0)));
        let error = v4.expect_err("IPv4 must be rejected");
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
        assert!(error.to_string().contains("IPv6 only"), "{error}");

        let mapped = SocketAddrV6::new(Ipv4Addr::LOCALHOST.to_ipv6_mapped(), 0, 0, 0);
        let error = net.bind(mapped).expect_err("IPv4-mapped must be rejected");
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);

        let v6 = net.bind_socket_addr(SocketAddr::V6(loopback(0)));
        assert!(v6.is_ok(), "IPv6 through bind_socket_addr: {v6:?}");
    }

    #[test]
    fn binding_outside_a_runtime_is_an_error_not_a_panic() {
        let error = HostNet::default()
            .bind(loopback(0))
            .expect_err("no runtime");
        assert!(error.to_string().contains("runtime"), "{error}");
    }

    /// Sends `contents` as one transmit, waiting while the socket is full.
    async fn send_transmit(socket: &HostSocket, transmit: Transmit<'_>) {
        loop {
            match socket.try_send(&transmit) {
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    poll_fn(|cx| socket.poll_writable(cx))
                        .await
                        .expect("writable");
                }
                other => return other.expect("send"),
            }
        }
    }

    /// Receives until `expected` datagrams arrived, splitting GRO buffers by stride.
    async fn recv_datagrams(socket: &HostSocket, expected: usize) -> Vec<Vec<u8>> {
        let buf_len = socket.max_receive_segments() * DATAGRAM_BYTES_MAX;
        let mut storage = vec![vec![0u8; buf_len]; 4];
        let mut out = Vec::new();
        while out.len() < expected {
            let mut meta = [RecvMeta::default(); 4];
            let mut bufs: Vec<IoSliceMut<'_>> =
                storage.iter_mut().map(|b| IoSliceMut::new(b)).collect();
            let count = poll_fn(|cx| socket.poll_recv(cx, &mut bufs, &mut meta))
                .await
                .expect("recv");
            assert!(count >= 1);
            for (meta, buf) in meta.iter().zip(&bufs).take(count) {
                assert!(meta.stride >= 1 && meta.stride <= meta.len);
                assert_eq!(
                    meta.destination.map(|d| d.port()),
                    Some(socket.local_addr().port())
                );
                for datagram in buf[..meta.len].chunks(meta.stride) {
                    out.push(datagram.to_vec());
                }
            }
        }
        out
    }

    #[tokio::test]
    async fn a_segmented_transmit_arrives_as_that_many_datagrams() {
        let net = HostNet::default();
        let a = net.bind(loopback(0)).expect("bind a");
        let b = net.bind(loopback(0)).expect("bind b");
        let segment_bytes = 1200;
        // Four full segments and a short tail, each segment tagged by its index.
        let segments = a.max_transmit_segments().min(5);
        let mut contents = Vec::new();
        for index in 0..segments {
            let len = if index + 1 == segments {
                300
            } else {
                segment_bytes
            };
            contents.extend(std::iter::repeat_n(index as u8, len));
        }
        let transmit = Transmit {
            destination: b.local_addr(),
            contents: &contents,
            segment_size: Some(segment_bytes),
        };
        send_transmit(&a, transmit).await;
        let received = recv_datagrams(&b, segments).await;
        assert_eq!(received.len(), segments);
        let expected: Vec<Vec<u8>> = transmit.datagrams().map(<[u8]>::to_vec).collect();
        assert_eq!(received, expected);
        if segments > 1 {
            assert_eq!(received[0].len(), segment_bytes);
            assert_eq!(received[segments - 1], vec![(segments - 1) as u8; 300]);
        }
    }

    #[tokio::test]
    async fn gso_is_available_on_linux_loopback() {
        let a = HostNet::default().bind(loopback(0)).expect("bind");
        // Linux ≥ 4.18 has UDP GSO; if this fails the fast path is off and
        // QUIC throughput will drop, which deserves a loud test failure here.
        assert!(
            a.max_transmit_segments() > 1,
            "GSO unavailable: {}",
            a.max_transmit_segments()
        );
        assert!(a.max_receive_segments() >= 1);
    }

    #[tokio::test]
    async fn malformed_transmits_are_rejected_before_the_kernel() {
        let a = HostNet::default().bind(loopback(0)).expect("bind");
        let contents = vec![0u8; 100];
        let zero = Transmit {
            destination: loopback(9),
            contents: &contents,
            segment_size: Some(0),
        };
        assert_eq!(
            a.try_send(&zero).expect_err("zero").kind(),
            io::ErrorKind::InvalidInput
        );
        let too_many = vec![0u8; a.max_transmit_segments() + 1];
        let over = Transmit {
            destination: loopback(9),
            contents: &too_many,
            segment_size: Some(1),
        };
        assert_eq!(
            a.try_send(&over).expect_err("too many segments").kind(),
            io::ErrorKind::InvalidInput
        );
    }

    #[tokio::test]
    async fn many_datagrams_arrive_in_batches_without_loss_on_loopback() {
        let a = HostNet::default().bind(loopback(0)).expect("bind a");
        let b = HostNet::default().bind(loopback(0)).expect("bind b");
        // Small enough to fit the default receive buffer: this checks batching
        // and order, not the kernel's drop policy.
        let count: u32 = 64;
        for index in 0..count {
            send_to(&a, b.local_addr(), &index.to_le_bytes())
                .await
                .expect("send");
        }
        let received = recv_datagrams(&b, count as usize).await;
        let indices: Vec<u32> = received
            .iter()
            .map(|d| u32::from_le_bytes(d[..4].try_into().expect("4 bytes")))
            .collect();
        assert_eq!(indices, (0..count).collect::<Vec<_>>());
    }
}
