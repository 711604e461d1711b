//! Real (wall-clock) time and memory for the summary.
//!
//! Inside a madsim run `clock_gettime` is intercepted and returns virtual
//! time, so wall time is read with the raw system call.

#[allow(unsafe_code)] // two plain syscalls with stack-allocated out-parameters
pub fn wall_now_ms() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_clock_gettime,
            libc::CLOCK_MONOTONIC,
            &mut ts as *mut libc::timespec,
        )
    };
    if rc != 0 {
        return 0.0;
    }
    ts.tv_sec as f64 * 1000.0 + ts.tv_nsec as f64 / 1e6
}

/// Peak resident memory of this process, in bytes.
#[allow(unsafe_code)]
pub fn peak_rss_bytes() -> u64 {
    // SAFETY: getrusage writes into a zeroed, properly sized struct we own.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    if rc != 0 {
        return 0;
    }
    u64::try_from(usage.ru_maxrss).unwrap_or(0) * 1024
}
