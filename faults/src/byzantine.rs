//! Byzantine behaviours as Env decorators around an honest node.

use std::io::{self, IoSliceMut};
use std::net::SocketAddrV6;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use hm_env::{DatagramSocket, Entropy, Env, Net, RecvMeta, Transmit};

/// Longest garbage datagram sent; some exceed a QUIC MTU on purpose.
pub const GARBAGE_BYTES_MAX: usize = 2_048;

/// Counters a garbage sender keeps (shared by all its sockets).
#[derive(Debug, Default)]
pub struct GarbageStats {
    pub datagrams_sent: AtomicU64,
}

/// An Env whose network interface, besides carrying the honest node's
/// traffic unchanged, sends a malformed datagram after one in `every_nth`
/// honest ones, to the same destination: random bytes, truncated QUIC-looking
/// long headers, and oversized datagrams.
#[derive(Debug, Clone)]
pub struct GarbageEnv<E: Env> {
    inner: E,
    net: GarbageNet<E>,
}

impl<E: Env> GarbageEnv<E> {
    pub fn new(inner: E, every_nth: u64) -> Self {
        let net = GarbageNet {
            env: inner.clone(),
            every_nth: every_nth.max(1),
            stats: Arc::new(GarbageStats::default()),
        };
        Self { inner, net }
    }

    pub fn stats(&self) -> Arc<GarbageStats> {
        self.net.stats.clone()
    }
}

impl<E: Env> Env for GarbageEnv<E> {
    type Clock = E::Clock;
    type Net = GarbageNet<E>;
    type Disk = E::Disk;
    type Hardware = E::Hardware;
    type Entropy = E::Entropy;

    fn clock(&self) -> &E::Clock {
        self.inner.clock()
    }
    fn net(&self) -> &GarbageNet<E> {
        &self.net
    }
    fn disk(&self) -> &E::Disk {
        self.inner.disk()
    }
    fn hardware(&self) -> &E::Hardware {
        self.inner.hardware()
    }
    fn entropy(&self) -> &E::Entropy {
        self.inner.entropy()
    }
}

#[derive(Debug, Clone)]
pub struct GarbageNet<E: Env> {
    env: E,
    every_nth: u64,
    stats: Arc<GarbageStats>,
}

impl<E: Env> Net for GarbageNet<E> {
    type Socket = GarbageSocket<E>;

    fn bind(&self, addr: SocketAddrV6) -> io::Result<Self::Socket> {
        Ok(GarbageSocket {
            inner: self.env.net().bind(addr)?,
            env: self.env.clone(),
            every_nth: self.every_nth,
            stats: self.stats.clone(),
        })
    }
}

pub struct GarbageSocket<E: Env> {
    inner: <E::Net as Net>::Socket,
    env: E,
    every_nth: u64,
    stats: Arc<GarbageStats>,
}

impl<E: Env> std::fmt::Debug for GarbageSocket<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GarbageSocket")
            .field("inner", &self.inner)
            .finish()
    }
}

impl<E: Env> GarbageSocket<E> {
    fn garbage(&self) -> Vec<u8> {
        let entropy = self.env.entropy();
        let len = 1 + entropy.below(GARBAGE_BYTES_MAX as u64) as usize;
        let mut bytes = vec![0u8; len];
        entropy.fill_bytes(&mut bytes);
        match entropy.below(3) {
            // A QUIC v1 long header (Initial) followed by noise.
            0 if len > 5 => {
                bytes[0] = 0xc0 | (bytes[0] & 0x0f);
                bytes[1..5].copy_from_slice(&1u32.to_be_bytes());
            }
            // A short header with a plausible fixed bit.
            1 => bytes[0] = 0x40 | (bytes[0] & 0x3f),
            _ => {}
        }
        bytes
    }
}

impl<E: Env> DatagramSocket for GarbageSocket<E> {
    fn local_addr(&self) -> SocketAddrV6 {
        self.inner.local_addr()
    }

    fn try_send(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        self.inner.try_send(transmit)?;
        if self.env.entropy().below(self.every_nth) == 0 {
            let garbage = self.garbage();
            // Best effort, like any UDP send; a full socket just skips it.
            let _ = self.inner.try_send(&Transmit {
                destination: transmit.destination,
                contents: &garbage,
                segment_size: None,
            });
            self.stats.datagrams_sent.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    fn poll_writable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.inner.poll_writable(cx)
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        self.inner.poll_recv(cx, bufs, meta)
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hm_env::mem::{MemNet, TestEnv};

    #[tokio::test]
    async fn honest_traffic_passes_and_garbage_follows_it() {
        let net = MemNet::new();
        let honest = TestEnv::new(&net, 1, "honest");
        let byzantine = GarbageEnv::new(TestEnv::new(&net, 1, "byzantine"), 1);
        let any = SocketAddrV6::new(std::net::Ipv6Addr::LOCALHOST, 0, 0, 0);
        let receiver = honest.net().bind(any).expect("bind");
        let sender = byzantine.net().bind(any).expect("bind");
        hm_env::send_to(&sender, receiver.local_addr(), b"hello")
            .await
            .expect("send");
        let mut buf = vec![0u8; 4096];
        let (len, _) = hm_env::recv_from(&receiver, &mut buf).await.expect("recv");
        assert_eq!(&buf[..len], b"hello");
        let (len, _) = hm_env::recv_from(&receiver, &mut buf).await.expect("recv");
        assert!((1..=GARBAGE_BYTES_MAX).contains(&len));
        assert_eq!(byzantine.stats().datagrams_sent.load(Ordering::Relaxed), 1);
    }
}
