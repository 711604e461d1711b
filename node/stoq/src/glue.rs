//! quinn on top of hm-env: [`EnvRuntime`] (timers, spawning, time) and
//! [`EnvSocket`] (datagrams). With these, quinn never touches an OS socket or
//! the OS clock, so the same transport runs on a host and inside madsim.

use std::fmt;
use std::future::Future;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use hm_env::{BoxSleep, Clock, DatagramSocket, Env};
use quinn::udp;
use quinn::{AsyncTimer, AsyncUdpSocket, Runtime, UdpPoller};

/// Most datagrams moved per `poll_recv` call. quinn asks for its own batch
/// size (a few dozen); this bounds the stack buffer the metadata is staged in.
pub const RECV_BATCH_MAX: usize = 64;

/// A [`Clock`] borrowed from an [`Env`] by owning a clone of the Env (Env is
/// cheap to clone; its clock has no `Clone` bound of its own).
pub struct EnvClock<E: Env>(pub E);

impl<E: Env> Clock for EnvClock<E> {
    fn now(&self) -> Instant {
        self.0.clock().now()
    }
    fn wall_ms(&self) -> u64 {
        self.0.clock().wall_ms()
    }
    fn sleep_until(&self, deadline: Instant) -> BoxSleep {
        self.0.clock().sleep_until(deadline)
    }
}

/// quinn's [`Runtime`] over an hm-env [`Clock`]. Tasks go to `tokio::spawn`,
/// which is madsim-tokio in this workspace: the current simulated node's task
/// set in the simulator, the ambient tokio runtime on a host.
pub struct EnvRuntime<C: Clock> {
    clock: Arc<C>,
}

impl<C: Clock> EnvRuntime<C> {
    pub fn new(clock: Arc<C>) -> Self {
        Self { clock }
    }
}

impl<C: Clock> fmt::Debug for EnvRuntime<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnvRuntime").finish_non_exhaustive()
    }
}

impl<C: Clock> Runtime for EnvRuntime<C> {
    fn new_timer(&self, deadline: Instant) -> Pin<Box<dyn AsyncTimer>> {
        Box::pin(EnvTimer {
            clock: self.clock.clone(),
            deadline,
            armed_at: deadline,
            sleep: Some(self.clock.sleep_until(deadline)),
        })
    }

    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>) {
        // quinn's driver tasks end when their endpoint/connection is dropped;
        // the join handle is not needed.
        drop(tokio::spawn(future));
    }

    // The trait names std's socket type; we never create or accept one.
    #[allow(clippy::disallowed_types)]
    fn wrap_udp_socket(&self, _socket: std::net::UdpSocket) -> io::Result<Arc<dyn AsyncUdpSocket>> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "hm-stoq runs quinn on hm_env::Net sockets only; OS sockets are never wrapped",
        ))
    }

    fn now(&self) -> Instant {
        self.clock.now()
    }
}

/// A resettable timer made of [`Clock::sleep_until`] futures.
///
/// quinn resets a connection's timer on nearly every packet, mostly to a
/// later deadline (the idle timeout and loss probe move on). A later
/// deadline keeps the armed sleep: when it fires early the timer re-arms
/// for the real deadline instead of firing. Only an earlier deadline
/// replaces the sleep.
struct EnvTimer<C: Clock> {
    clock: Arc<C>,
    /// When the timer fires.
    deadline: Instant,
    /// When the armed sleep ends (at or before `deadline`).
    armed_at: Instant,
    /// `None` once fired: a finished future must not be polled again (an
    /// `async` block would panic), and quinn polls fired timers.
    sleep: Option<BoxSleep>,
}

impl<C: Clock> fmt::Debug for EnvTimer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnvTimer")
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

impl<C: Clock> AsyncTimer for EnvTimer<C> {
    fn reset(self: Pin<&mut Self>, deadline: Instant) {
        let this = self.get_mut();
        this.deadline = deadline;
        if this.sleep.is_none() || deadline < this.armed_at {
            this.armed_at = deadline;
            this.sleep = Some(this.clock.sleep_until(deadline));
        }
    }

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        loop {
            let Some(sleep) = this.sleep.as_mut() else {
                return Poll::Ready(());
            };
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            if this.armed_at >= this.deadline {
                this.sleep = None;
                return Poll::Ready(());
            }
            // Fired early: the deadline moved on since this sleep was armed.
            this.armed_at = this.deadline;
            this.sleep = Some(this.clock.sleep_until(this.deadline));
        }
    }
}

/// quinn's [`AsyncUdpSocket`] over an hm-env [`DatagramSocket`]. Segmentation
/// offload sizes pass straight through, so a GSO/GRO-capable backend keeps
/// its batching.
pub struct EnvSocket<S: DatagramSocket> {
    inner: S,
}

impl<S: DatagramSocket> EnvSocket<S> {
    pub fn new(inner: S) -> Self {
        Self { inner }
    }

    pub fn inner(&self) -> &S {
        &self.inner
    }
}

impl<S: DatagramSocket> fmt::Debug for EnvSocket<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnvSocket")
            .field("inner", &self.inner)
            .finish()
    }
}

impl<S: DatagramSocket> AsyncUdpSocket for EnvSocket<S> {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(EnvPoller { socket: self })
    }

    fn try_send(&self, transmit: &udp::Transmit<'_>) -> io::Result<()> {
        let SocketAddr::V6(destination) = transmit.destination else {
            // Unreachable through the public API (dial addresses are checked);
            // refuse rather than invent a mapping.
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} is IPv4; hm-stoq sends to IPv6 addresses only",
                    transmit.destination
                ),
            ));
        };
        // ECN marks and source-address selection are not part of the Env
        // contract; quinn copes without them (as on a socket lacking them).
        self.inner.try_send(&hm_env::Transmit {
            destination,
            contents: transmit.contents,
            segment_size: transmit.segment_size,
        })
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [udp::RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let batch = bufs.len().min(meta.len()).min(RECV_BATCH_MAX);
        if batch == 0 {
            return Poll::Ready(Ok(0));
        }
        let mut staged = [hm_env::RecvMeta::default(); RECV_BATCH_MAX];
        let filled = match self
            .inner
            .poll_recv(cx, &mut bufs[..batch], &mut staged[..batch])
        {
            Poll::Ready(Ok(filled)) => filled,
            other => return other,
        };
        // A backend claiming more buffers than it was given is broken; never
        // index past what we own.
        let filled = filled.min(batch);
        for (out, got) in meta.iter_mut().zip(&staged[..filled]) {
            *out = udp::RecvMeta {
                addr: SocketAddr::V6(got.source),
                len: got.len,
                stride: if got.stride == 0 { got.len } else { got.stride },
                ecn: None,
                dst_ip: got.destination.map(|addr| (*addr.ip()).into()),
            };
        }
        Poll::Ready(Ok(filled))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(SocketAddr::V6(self.inner.local_addr()))
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments().max(1)
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments().max(1)
    }

    /// The Env contract has no IP fragmentation (the host backend sets
    /// IPV6_DONTFRAG), which lets quinn run path-MTU discovery.
    fn may_fragment(&self) -> bool {
        false
    }
}

/// Write-readiness for one quinn task. The backend's `poll_writable` may keep
/// a single waker; quinn sends from one driver task per endpoint, so that is
/// enough.
struct EnvPoller<S: DatagramSocket> {
    socket: Arc<EnvSocket<S>>,
}

impl<S: DatagramSocket> fmt::Debug for EnvPoller<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnvPoller").finish_non_exhaustive()
    }
}

impl<S: DatagramSocket> UdpPoller for EnvPoller<S> {
    fn poll_writable(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.socket.inner.poll_writable(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hm_env::mem::MemNet;
    use hm_env::{Net, RuntimeClock};
    use std::future::poll_fn;
    use std::net::{Ipv6Addr, SocketAddrV6};
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn timers_fire_at_their_deadline_reset_and_stay_fired() {
        let clock = Arc::new(RuntimeClock);
        let runtime = EnvRuntime::new(clock.clone());
        let start = runtime.now();
        let mut timer = runtime.new_timer(start + Duration::from_millis(50));
        timer.as_mut().reset(start + Duration::from_millis(100));
        poll_fn(|cx| timer.as_mut().poll(cx)).await;
        assert!(clock.now() - start >= Duration::from_millis(100));
        // quinn may poll a fired timer again; that must be Ready, not a panic.
        let again = poll_fn(|cx| Poll::Ready(timer.as_mut().poll(cx))).await;
        assert!(again.is_ready());
        // Re-armed into the future, it waits again.
        let later = clock.now() + Duration::from_millis(30);
        timer.as_mut().reset(later);
        let pending = poll_fn(|cx| Poll::Ready(timer.as_mut().poll(cx))).await;
        assert!(pending.is_pending());
        poll_fn(|cx| timer.as_mut().poll(cx)).await;
        assert!(clock.now() >= later);
    }

    #[tokio::test(start_paused = true)]
    async fn a_later_deadline_keeps_the_sleep_and_an_earlier_one_replaces_it() {
        let clock = Arc::new(RuntimeClock);
        let runtime = EnvRuntime::new(clock.clone());
        let start = runtime.now();
        // Later: the armed 10 ms sleep fires early and re-arms for 40 ms.
        let mut timer = runtime.new_timer(start + Duration::from_millis(10));
        timer.as_mut().reset(start + Duration::from_millis(25));
        timer.as_mut().reset(start + Duration::from_millis(40));
        poll_fn(|cx| timer.as_mut().poll(cx)).await;
        assert_eq!(clock.now() - start, Duration::from_millis(40));
        // Earlier: fires at the new deadline, not the old one.
        let start = clock.now();
        let mut timer = runtime.new_timer(start + Duration::from_millis(100));
        timer.as_mut().reset(start + Duration::from_millis(20));
        poll_fn(|cx| timer.as_mut().poll(cx)).await;
        assert_eq!(clock.now() - start, Duration::from_millis(20));
    }

    fn v6(host: u16) -> SocketAddrV6 {
        SocketAddrV6::new(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, host), 7000, 0, 0)
    }

    #[tokio::test]
    async fn sockets_pass_segments_and_metadata_through() {
        let net = MemNet::new();
        let a = EnvSocket::new(net.bind(v6(1)).expect("bind a"));
        let b = EnvSocket::new(net.bind(v6(2)).expect("bind b"));
        assert_eq!(b.local_addr().expect("addr"), SocketAddr::V6(v6(2)));
        a.try_send(&udp::Transmit {
            destination: SocketAddr::V6(v6(2)),
            ecn: None,
            contents: &[1, 1, 1, 2, 2, 2, 3],
            segment_size: Some(3),
            src_ip: None,
        })
        .expect("send");
        let mut storage = [[0u8; 16]; 4];
        let [s0, s1, s2, s3] = &mut storage;
        let mut bufs = [
            IoSliceMut::new(s0),
            IoSliceMut::new(s1),
            IoSliceMut::new(s2),
            IoSliceMut::new(s3),
        ];
        let mut meta = [udp::RecvMeta::default(); 4];
        let filled = poll_fn(|cx| b.poll_recv(cx, &mut bufs, &mut meta))
            .await
            .expect("recv");
        assert_eq!(filled, 3);
        let lens: Vec<usize> = meta[..3].iter().map(|m| m.len).collect();
        assert_eq!(lens, vec![3, 3, 1]);
        assert!(meta[..3].iter().all(|m| m.addr == SocketAddr::V6(v6(1))));
        assert_eq!(meta[0].dst_ip, Some((*v6(2).ip()).into()));
        assert_eq!(&storage[1][..3], &[2, 2, 2]);

        let v4 = udp::Transmit {
            destination: "127.0.0.1:7000".parse().expect("addr"),
            ecn: None,
            contents: b"x",
            segment_size: None,
            src_ip: None,
        };
        let error = a.try_send(&v4).expect_err("IPv4 refused");
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
    }
}
