//! UDP-like datagram sockets bound to IPv6 socket addresses.
//!
//! The shape follows what QUIC stacks need (batched receive, optional
//! segmentation offload on send) so that `hm-stoq` can put quinn on top of any
//! backend without copying: the real host maps it onto UDP sockets with
//! GSO/GRO, the simulator onto its modelled network.

use std::fmt::Debug;
use std::future::poll_fn;
use std::io::{self, IoSliceMut};
use std::net::SocketAddrV6;
use std::task::{Context, Poll};

/// Largest UDP payload we ever send or accept (IPv6 jumbograms are not used).
pub const DATAGRAM_BYTES_MAX: usize = 65_527;

/// One datagram to send, or with `segment_size` a batch of equally sized
/// datagrams (the last may be shorter) to the same destination.
#[derive(Debug, Clone, Copy)]
pub struct Transmit<'a> {
    pub destination: SocketAddrV6,
    pub contents: &'a [u8],
    pub segment_size: Option<usize>,
}

impl Transmit<'_> {
    /// Iterates the datagrams this transmit stands for.
    pub fn datagrams(&self) -> impl Iterator<Item = &[u8]> {
        let size = self
            .segment_size
            .unwrap_or(self.contents.len())
            .max(1)
            .min(self.contents.len().max(1));
        self.contents.chunks(size)
    }
}

/// Metadata of one received buffer: `len` bytes holding datagrams of `stride`
/// bytes each (the last may be shorter) from `source`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecvMeta {
    pub source: SocketAddrV6,
    pub len: usize,
    pub stride: usize,
    /// The local address the datagrams arrived on, when the backend knows it.
    pub destination: Option<SocketAddrV6>,
}

impl Default for RecvMeta {
    fn default() -> Self {
        Self {
            source: SocketAddrV6::new(std::net::Ipv6Addr::UNSPECIFIED, 0, 0, 0),
            len: 0,
            stride: 0,
            destination: None,
        }
    }
}

impl RecvMeta {
    /// Copies one whole datagram into a receive slot for a backend without
    /// receive offload (one datagram per buffer), truncating to the buffer as
    /// UDP does; returns the metadata to store beside it.
    pub fn fill_one(
        buf: &mut IoSliceMut<'_>,
        datagram: &[u8],
        source: SocketAddrV6,
        destination: SocketAddrV6,
    ) -> Self {
        let len = datagram.len().min(buf.len());
        buf[..len].copy_from_slice(&datagram[..len]);
        Self {
            source,
            len,
            stride: len,
            destination: Some(destination),
        }
    }
}

pub trait DatagramSocket: Send + Sync + Debug + 'static {
    fn local_addr(&self) -> SocketAddrV6;

    /// Sends without waiting. `ErrorKind::WouldBlock` means the socket is full:
    /// wait with [`DatagramSocket::poll_writable`]. Datagrams may be dropped
    /// silently, as UDP does.
    fn try_send(&self, transmit: &Transmit<'_>) -> io::Result<()>;

    /// Ready when a `try_send` is worth retrying.
    fn poll_writable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;

    /// Fills up to `bufs.len()` buffers; returns how many were filled and their
    /// metadata in `meta`. Datagrams larger than a buffer are truncated.
    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>>;

    /// How many datagrams one `Transmit` may carry (1 = no segmentation offload).
    fn max_transmit_segments(&self) -> usize {
        1
    }

    /// How many datagrams one receive buffer may carry (1 = no receive offload).
    fn max_receive_segments(&self) -> usize {
        1
    }
}

pub trait Net: Send + Sync + 'static {
    type Socket: DatagramSocket;

    /// Binds a socket. Only IPv6 exists in HyperMesh; port 0 picks a free port.
    fn bind(&self, addr: SocketAddrV6) -> io::Result<Self::Socket>;
}

/// Receives one datagram into `buf`; returns its length and source.
pub async fn recv_from<S: DatagramSocket + ?Sized>(
    socket: &S,
    buf: &mut [u8],
) -> io::Result<(usize, SocketAddrV6)> {
    poll_fn(|cx| {
        let mut meta = [RecvMeta::default()];
        let mut bufs = [IoSliceMut::new(&mut *buf)];
        match socket.poll_recv(cx, &mut bufs, &mut meta) {
            Poll::Ready(Ok(n)) => {
                debug_assert!(n >= 1, "poll_recv reported zero buffers");
                Poll::Ready(Ok((meta[0].len, meta[0].source)))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

/// Sends one datagram, waiting while the socket is full.
pub async fn send_to<S: DatagramSocket + ?Sized>(
    socket: &S,
    destination: SocketAddrV6,
    contents: &[u8],
) -> io::Result<()> {
    if contents.len() > DATAGRAM_BYTES_MAX {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "datagram of {} bytes exceeds the {DATAGRAM_BYTES_MAX}-byte limit",
                contents.len()
            ),
        ));
    }
    let transmit = Transmit {
        destination,
        contents,
        segment_size: None,
    };
    loop {
        match socket.try_send(&transmit) {
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                poll_fn(|cx| socket.poll_writable(cx)).await?;
            }
            other => return other,
        }
    }
}
