//! Real (wall-clock) time and memory: readings for the summary, and the
//! allocator's settings for a run.
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

/// Tunes glibc's allocator for a simulation: one thread allocates and
/// frees many buffers of a few megabytes each (blocks and their encodings,
/// once per simulated node). By default glibc serves each of those with a
/// fresh `mmap` and gives it back on free, so every one costs page faults
/// and the kernel zeroing its pages (~5 % of a 1,000-node run), and it
/// trims freed heap top eagerly only to grow it again. Here large blocks
/// come from the heap and freed memory stays for reuse: the 1,000-node
/// headline's first 13 simulated seconds ran 7 % faster. Call it first
/// thing in `main`, before other threads exist (it does not change what a
/// run computes, only where its memory comes from).
#[allow(unsafe_code)]
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const MMAP_THRESHOLD_BYTES: libc::c_int = 32 << 20; // glibc's maximum
        const TRIM_THRESHOLD_BYTES: libc::c_int = 1 << 30;
        const TOP_PAD_BYTES: libc::c_int = 256 << 20;
        // SAFETY: mallopt only sets allocator parameters; it is called
        // before this process starts other threads. Its result (1 = set)
        // is advisory: on refusal glibc keeps its defaults.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES);
            libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES);
            libc::mallopt(libc::M_TOP_PAD, TOP_PAD_BYTES);
        }
    }
}
