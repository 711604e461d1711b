//! Time: a monotonic clock, the node's belief about wall time, and timers.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

/// A boxed timer future; boxed so `Clock` stays object-free yet simple to implement.
pub type BoxSleep = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

pub trait Clock: Send + Sync + 'static {
    /// Monotonic time. Inside the simulator this is virtual time; it is never
    /// skewed (clock faults act on [`Clock::wall_ms`]).
    fn now(&self) -> Instant;

    /// Milliseconds since the Unix epoch as this node believes it. May be
    /// skewed, drift, or step backwards: protocol code must tolerate that.
    fn wall_ms(&self) -> u64;

    /// A future that completes at `deadline` (immediately if it has passed).
    fn sleep_until(&self, deadline: Instant) -> BoxSleep;

    fn sleep(&self, duration: Duration) -> BoxSleep {
        self.sleep_until(self.now() + duration)
    }
}

/// The deadline passed before the future completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("deadline of {timeout_ms} ms elapsed")]
pub struct Elapsed {
    pub timeout_ms: u64,
}

/// Runs `future` until it completes or `duration` passes on `clock`.
pub async fn timeout<C: Clock + ?Sized, F: Future>(
    clock: &C,
    duration: Duration,
    future: F,
) -> Result<F::Output, Elapsed> {
    let sleep = clock.sleep(duration);
    let mut future = std::pin::pin!(future);
    let mut sleep = sleep;
    std::future::poll_fn(|cx| {
        if let std::task::Poll::Ready(output) = future.as_mut().poll(cx) {
            return std::task::Poll::Ready(Ok(output));
        }
        match sleep.as_mut().poll(cx) {
            std::task::Poll::Ready(()) => std::task::Poll::Ready(Err(Elapsed {
                timeout_ms: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
            })),
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    })
    .await
}

/// The runtime's own clock: tokio's timers on a real host, madsim's virtual
/// time inside the simulator (the workspace's `tokio` is madsim-tokio).
///
/// This is one of the two places allowed to read the OS clock; everything else
/// goes through `Clock`.
#[derive(Debug, Clone, Copy, Default)]
pub struct RuntimeClock;

impl Clock for RuntimeClock {
    // `into` is a no-op under madsim, where tokio's Instant is std's.
    #[allow(clippy::disallowed_methods, clippy::useless_conversion)] // this *is* the clock backend
    fn now(&self) -> Instant {
        tokio::time::Instant::now().into()
    }

    #[allow(clippy::disallowed_methods)] // this *is* the clock backend
    fn wall_ms(&self) -> u64 {
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX)
    }

    #[allow(clippy::disallowed_methods, clippy::useless_conversion)] // as above
    fn sleep_until(&self, deadline: Instant) -> BoxSleep {
        Box::pin(tokio::time::sleep_until(deadline.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn timeout_fires_only_after_the_deadline() {
        let clock = RuntimeClock;
        let slow = clock.sleep(Duration::from_millis(50));
        let result = timeout(&clock, Duration::from_millis(10), slow).await;
        assert_eq!(result, Err(Elapsed { timeout_ms: 10 }));
        let fast = clock.sleep(Duration::from_millis(5));
        assert_eq!(
            timeout(&clock, Duration::from_millis(10), fast).await,
            Ok(())
        );
    }
}
