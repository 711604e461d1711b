//! [`hm_env::Hardware`] from Linux procfs and sysfs.
//!
//! The parsers are pure functions of the file text so they can be tested on
//! samples and random input; the kernel's text is treated as untrusted input:
//! a missing or odd file yields zeros and a `debug` log, never a panic.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use hm_env::{Hardware, HardwareInventory, UsageSample};

/// Most network interfaces inspected for link speed: bounds the sysfs walk on
/// hosts with thousands of virtual interfaces (containers).
pub const INTERFACES_MAX: usize = 256;

/// Largest procfs/sysfs file read, in bytes. `/proc/cpuinfo` on a 256-core
/// machine is ~400 KB; anything far larger is not what we think it is.
pub const PROC_FILE_BYTES_MAX: u64 = 4 * 1024 * 1024;

/// Reads inventory and usage from `/proc`, `/sys` and the data dir's filesystem.
#[derive(Debug)]
pub struct HostHardware {
    proc_root: PathBuf,
    sys_root: PathBuf,
    data_dir: PathBuf,
    /// The previous `/proc/stat` sample: CPU busy is a rate between samples.
    previous_cpu: Mutex<CpuTimes>,
}

impl HostHardware {
    /// Storage numbers describe the filesystem holding `data_dir`.
    pub fn new(data_dir: &Path) -> Self {
        Self::with_roots(Path::new("/proc"), Path::new("/sys"), data_dir)
    }

    /// Reads procfs and sysfs under other roots (tests, containers that mount
    /// the host's `/proc` elsewhere).
    pub fn with_roots(proc_root: &Path, sys_root: &Path, data_dir: &Path) -> Self {
        Self {
            proc_root: proc_root.to_path_buf(),
            sys_root: sys_root.to_path_buf(),
            data_dir: data_dir.to_path_buf(),
            // Zero: the first sample reports the average since boot.
            previous_cpu: Mutex::new(CpuTimes::default()),
        }
    }

    fn read_proc(&self, name: &str) -> String {
        read_text(&self.proc_root.join(name))
    }

    /// Sum of the link speeds of physical interfaces (those with a `device`
    /// link in sysfs; bridges, veths and tunnels have none).
    fn network_bits_per_second(&self) -> u64 {
        let class_net = self.sys_root.join("class/net");
        let entries = match std::fs::read_dir(&class_net) {
            Ok(entries) => entries,
            Err(error) => {
                tracing::debug!(path = %class_net.display(), %error, "no network interfaces listed");
                return 0;
            }
        };
        let mut bits_per_second: u64 = 0;
        for entry in entries.take(INTERFACES_MAX).flatten() {
            let interface = entry.path();
            if !interface.join("device").exists() {
                continue;
            }
            let speed_mbps = parse_link_speed_mbps(&read_text(&interface.join("speed")));
            bits_per_second = bits_per_second.saturating_add(speed_mbps.saturating_mul(1_000_000));
        }
        bits_per_second
    }

    fn filesystem(&self) -> FsUsage {
        statvfs(&self.data_dir).unwrap_or_else(|error| {
            tracing::debug!(path = %self.data_dir.display(), %error, "statvfs failed");
            FsUsage::default()
        })
    }
}

/// Reads a small text file; a failure is logged and reads as empty, which
/// every parser turns into zeros.
fn read_text(path: &Path) -> String {
    use std::io::Read;
    let result = std::fs::File::open(path).and_then(|file| {
        let mut text = String::new();
        file.take(PROC_FILE_BYTES_MAX).read_to_string(&mut text)?;
        Ok(text)
    });
    result.unwrap_or_else(|error| {
        tracing::debug!(path = %path.display(), %error, "cannot read hardware file");
        String::new()
    })
}

impl Hardware for HostHardware {
    fn inventory(&self) -> HardwareInventory {
        let cpu = parse_cpuinfo(&self.read_proc("cpuinfo"));
        let memory = parse_meminfo(&self.read_proc("meminfo"));
        HardwareInventory {
            cpu_model: cpu.model,
            cpu_cores: cpu.cores,
            memory_bytes: memory.total_bytes,
            storage_bytes: self.filesystem().total_bytes,
            network_bits_per_second: self.network_bits_per_second(),
            // GPU discovery needs vendor interfaces (NVML, DRM); not yet.
            gpus: Vec::new(),
        }
    }

    fn sample(&self) -> UsageSample {
        let now = parse_proc_stat(&self.read_proc("stat")).unwrap_or_default();
        let cpu_busy_permille = {
            let mut previous = self
                .previous_cpu
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let permille = busy_permille(*previous, now);
            *previous = now;
            permille
        };
        let memory = parse_meminfo(&self.read_proc("meminfo"));
        let (net_rx_bytes_total, net_tx_bytes_total) = parse_net_dev(&self.read_proc("net/dev"));
        let filesystem = self.filesystem();
        UsageSample {
            cpu_busy_permille,
            memory_used_bytes: memory.used_bytes(),
            storage_used_bytes: filesystem.used_bytes(),
            net_rx_bytes_total,
            net_tx_bytes_total,
        }
    }
}

// ---------------------------------------------------------------- parsers

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CpuInfo {
    pub model: String,
    /// Logical CPUs (what the scheduler can run on).
    pub cores: u32,
}

/// `/proc/cpuinfo`: the first model name, and one core per `processor` entry.
pub fn parse_cpuinfo(text: &str) -> CpuInfo {
    let mut info = CpuInfo::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        match key {
            "processor" => info.cores = info.cores.saturating_add(1),
            // x86 says "model name"; some ARM kernels only "Hardware" or "cpu model".
            "model name" | "cpu model" | "Hardware" if info.model.is_empty() => {
                info.model = value.to_string();
            }
            _ => {}
        }
    }
    info
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemInfo {
    pub total_bytes: u64,
    pub available_bytes: u64,
}

impl MemInfo {
    pub fn used_bytes(&self) -> u64 {
        self.total_bytes.saturating_sub(self.available_bytes)
    }
}

/// `/proc/meminfo`: `MemTotal` and `MemAvailable` (kernels before 3.14 lack
/// the latter: free + buffers + cached approximates it).
pub fn parse_meminfo(text: &str) -> MemInfo {
    let mut fields: [Option<u64>; 5] = [None; 5];
    const NAMES: [&str; 5] = ["MemTotal", "MemAvailable", "MemFree", "Buffers", "Cached"];
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let Some(index) = NAMES.iter().position(|name| *name == key.trim()) else {
            continue;
        };
        let mut words = rest.split_whitespace();
        let Some(Ok(value)) = words.next().map(str::parse::<u64>) else {
            continue;
        };
        let multiplier = match words.next() {
            Some("kB") => 1024,
            None => 1,
            Some(_) => continue,
        };
        fields[index] = Some(value.saturating_mul(multiplier));
    }
    let [total, available, free, buffers, cached] = fields;
    let available = available.unwrap_or_else(|| {
        free.unwrap_or(0)
            .saturating_add(buffers.unwrap_or(0))
            .saturating_add(cached.unwrap_or(0))
    });
    let total_bytes = total.unwrap_or(0);
    MemInfo {
        total_bytes,
        available_bytes: available.min(total_bytes),
    }
}

/// Aggregate CPU time from `/proc/stat`, in clock ticks since boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuTimes {
    pub busy_ticks: u64,
    pub total_ticks: u64,
}

/// The `cpu ` line of `/proc/stat`: user nice system idle iowait irq softirq
/// steal (guest time is already inside user). Idle and iowait are not busy.
pub fn parse_proc_stat(text: &str) -> Option<CpuTimes> {
    let line = text.lines().find(|line| line.starts_with("cpu "))?;
    let mut ticks = [0u64; 8];
    let mut fields = 0;
    for (slot, word) in ticks.iter_mut().zip(line.split_whitespace().skip(1)) {
        *slot = word.parse().ok()?;
        fields += 1;
    }
    // user, nice, system, idle are in every kernel since 2.4.
    if fields < 4 {
        return None;
    }
    let total_ticks = ticks.iter().fold(0u64, |sum, t| sum.saturating_add(*t));
    let idle_ticks = ticks[3].saturating_add(ticks[4]);
    Some(CpuTimes {
        busy_ticks: total_ticks.saturating_sub(idle_ticks),
        total_ticks,
    })
}

/// Busy share between two samples, in thousandths. Zero when no time passed
/// or the counters went backwards (a different boot, a parse failure).
pub fn busy_permille(previous: CpuTimes, now: CpuTimes) -> u32 {
    let (Some(total), Some(busy)) = (
        now.total_ticks.checked_sub(previous.total_ticks),
        now.busy_ticks.checked_sub(previous.busy_ticks),
    ) else {
        return 0;
    };
    if total == 0 {
        return 0;
    }
    let permille = u128::from(busy.min(total)) * 1000 / u128::from(total);
    u32::try_from(permille).unwrap_or(1000)
}

/// `/proc/net/dev`: received and transmitted bytes summed over all
/// interfaces except loopback (node-to-node traffic on one host is not load).
pub fn parse_net_dev(text: &str) -> (u64, u64) {
    let mut rx_total: u64 = 0;
    let mut tx_total: u64 = 0;
    for line in text.lines() {
        let Some((name, counters)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if name == "lo" || name.contains('|') {
            continue;
        }
        let fields: Vec<&str> = counters.split_whitespace().collect();
        // 8 receive counters, then 8 transmit counters; bytes lead each group.
        let (Some(rx), Some(tx)) = (fields.first(), fields.get(8)) else {
            continue;
        };
        let (Ok(rx), Ok(tx)) = (rx.parse::<u64>(), tx.parse::<u64>()) else {
            continue;
        };
        rx_total = rx_total.saturating_add(rx);
        tx_total = tx_total.saturating_add(tx);
    }
    (rx_total, tx_total)
}

/// `/sys/class/net/<if>/speed` in Mbit/s; `-1` (link down, virtual NIC) or
/// anything unparsable is 0.
pub fn parse_link_speed_mbps(text: &str) -> u64 {
    text.trim().parse::<u64>().unwrap_or(0)
}

// ---------------------------------------------------------------- statvfs

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct FsUsage {
    total_bytes: u64,
    free_bytes: u64,
}

impl FsUsage {
    fn used_bytes(&self) -> u64 {
        self.total_bytes.saturating_sub(self.free_bytes)
    }
}

/// Size of the filesystem holding `path`. std has no statvfs, and one libc
/// call is smaller than a dependency.
#[allow(unsafe_code)]
// The field types are u64 on 64-bit Linux but narrower elsewhere.
#[allow(clippy::useless_conversion)]
fn statvfs(path: &Path) -> io::Result<FsUsage> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `c_path` is NUL-terminated and lives across the call; `stat`
    // points to writable memory of the right type and size.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), stat.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it filled the struct (which was already
    // a valid all-zero value of plain integers).
    let stat = unsafe { stat.assume_init() };
    let fragment_bytes = u64::from(stat.f_frsize);
    Ok(FsUsage {
        total_bytes: u64::from(stat.f_blocks).saturating_mul(fragment_bytes),
        free_bytes: u64::from(stat.f_bfree).saturating_mul(fragment_bytes),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CPUINFO: &str = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\n\
        cpu MHz\t\t: 2596.150\n\nprocessor\t: 1\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\n";
    const CPUINFO_ARM: &str = "processor\t: 0\nBogoMIPS\t: 48.00\n\nprocessor\t: 1\n\
        BogoMIPS\t: 48.00\n\nprocessor\t: 2\n\nprocessor\t: 3\nHardware\t: BCM2835\n";
    const MEMINFO: &str = "MemTotal:       24684092 kB\nMemFree:        22393152 kB\n\
        MemAvailable:   23626820 kB\nBuffers:           14056 kB\nCached:          1385596 kB\n\
        HugePages_Total:       0\n";
    const STAT: &str = "cpu  40448 0 5177 89350 431 0 44 40 0 0\n\
        cpu0 19963 0 2379 45334 51 0 9 19 0 0\nintr 12345\nctxt 999\n";
    const NET_DEV: &str = "Inter-|   Receive                                                |  Transmit\n \
        face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
        lo:    3193      29    0    0    0     0          0         0     3193      29    0    0    0     0       0          0\n  \
        eth0: 149009824    6150    0    0    0     0          0         0   399351    3872    0    0    0     0       0          0\n  \
        eth1:1000 1 0 0 0 0 0 0 24 1 0 0 0 0 0 0\n";

    #[test]
    fn cpuinfo_counts_processors_and_takes_the_first_model() {
        assert_eq!(
            parse_cpuinfo(CPUINFO),
            CpuInfo {
                model: "AMD EPYC 7B13".into(),
                cores: 2
            }
        );
        assert_eq!(
            parse_cpuinfo(CPUINFO_ARM),
            CpuInfo {
                model: "BCM2835".into(),
                cores: 4
            }
        );
        assert_eq!(parse_cpuinfo(""), CpuInfo::default());
    }

    #[test]
    fn meminfo_reads_kibibytes_and_falls_back_without_memavailable() {
        let info = parse_meminfo(MEMINFO);
        assert_eq!(info.total_bytes, 24_684_092 * 1024);
        assert_eq!(info.available_bytes, 23_626_820 * 1024);
        assert_eq!(info.used_bytes(), (24_684_092 - 23_626_820) * 1024);
        let old_kernel = "MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 20 kB\nCached: 30 kB\n";
        assert_eq!(parse_meminfo(old_kernel).available_bytes, 150 * 1024);
        // Available can never exceed total, even if the text claims so.
        let odd = "MemTotal: 10 kB\nMemAvailable: 99 kB\n";
        assert_eq!(parse_meminfo(odd).used_bytes(), 0);
        assert_eq!(parse_meminfo("MemTotal: lots kB\n"), MemInfo::default());
    }

    #[test]
    fn proc_stat_sums_the_aggregate_cpu_line() {
        let times = parse_proc_stat(STAT).expect("cpu line");
        assert_eq!(times.total_ticks, 40448 + 5177 + 89350 + 431 + 44 + 40);
        assert_eq!(times.busy_ticks, 40448 + 5177 + 44 + 40);
        assert_eq!(parse_proc_stat("cpu0 1 2 3 4\n"), None);
        assert_eq!(parse_proc_stat("cpu  1 2 x 4\n"), None);
        assert_eq!(parse_proc_stat("cpu  1 2 3\n"), None);
    }

    #[test]
    fn busy_permille_is_the_busy_share_between_samples() {
        let before = CpuTimes {
            busy_ticks: 100,
            total_ticks: 1000,
        };
        let after = CpuTimes {
            busy_ticks: 175,
            total_ticks: 1100,
        };
        assert_eq!(busy_permille(before, after), 750);
        assert_eq!(busy_permille(before, before), 0);
        assert_eq!(busy_permille(after, before), 0, "counters went backwards");
        assert_eq!(busy_permille(CpuTimes::default(), before), 100);
    }

    #[test]
    fn net_dev_sums_bytes_except_loopback() {
        assert_eq!(parse_net_dev(NET_DEV), (149_009_824 + 1000, 399_351 + 24));
        assert_eq!(parse_net_dev("eth0: 1 2 3\n"), (0, 0));
    }

    #[test]
    fn link_speed_ignores_down_links() {
        assert_eq!(parse_link_speed_mbps("10000\n"), 10_000);
        assert_eq!(parse_link_speed_mbps("-1\n"), 0);
        assert_eq!(parse_link_speed_mbps(""), 0);
    }

    #[test]
    fn a_fake_proc_tree_is_read_and_cpu_busy_is_a_rate() {
        let root = tempfile::tempdir().expect("tempdir");
        let proc_root = root.path().join("proc");
        let sys_root = root.path().join("sys");
        let eth0 = sys_root.join("class/net/eth0");
        let veth = sys_root.join("class/net/veth1");
        std::fs::create_dir_all(proc_root.join("net")).expect("mkdir");
        std::fs::create_dir_all(eth0.join("device")).expect("mkdir");
        std::fs::create_dir_all(&veth).expect("mkdir");
        std::fs::write(eth0.join("speed"), "1000\n").expect("write");
        std::fs::write(veth.join("speed"), "10000\n").expect("write");
        std::fs::write(proc_root.join("cpuinfo"), CPUINFO).expect("write");
        std::fs::write(proc_root.join("meminfo"), MEMINFO).expect("write");
        std::fs::write(proc_root.join("net/dev"), NET_DEV).expect("write");
        std::fs::write(proc_root.join("stat"), "cpu  100 0 0 900 0 0 0 0\n").expect("write");
        let hardware = HostHardware::with_roots(&proc_root, &sys_root, root.path());

        let inventory = hardware.inventory();
        assert_eq!(inventory.cpu_cores, 2);
        assert_eq!(inventory.memory_bytes, 24_684_092 * 1024);
        // Only eth0 has a device: the veth's 10 Gbit/s is not capacity.
        assert_eq!(inventory.network_bits_per_second, 1_000_000_000);
        assert!(inventory.storage_bytes > 0);

        let first = hardware.sample();
        assert_eq!(
            first.cpu_busy_permille, 100,
            "since boot: 100 of 1000 ticks"
        );
        std::fs::write(proc_root.join("stat"), "cpu  400 0 0 1000 0 0 0 0\n").expect("write");
        let second = hardware.sample();
        assert_eq!(second.cpu_busy_permille, 750, "300 busy of 400 new ticks");
        assert_eq!(second.net_rx_bytes_total, 149_009_824 + 1000);
        assert!(second.storage_used_bytes <= inventory.storage_bytes);
    }

    #[test]
    fn missing_files_read_as_zeros() {
        let root = tempfile::tempdir().expect("tempdir");
        let missing = root.path().join("absent");
        let hardware = HostHardware::with_roots(&missing, &missing, &missing);
        let inventory = hardware.inventory();
        assert_eq!(inventory, HardwareInventory::default());
        assert_eq!(hardware.sample(), UsageSample::default());
    }

    #[test]
    fn the_real_host_reports_plausible_numbers() {
        let hardware = HostHardware::new(Path::new("/"));
        let inventory = hardware.inventory();
        assert!(inventory.cpu_cores >= 1, "{inventory:?}");
        assert!(inventory.memory_bytes > 0, "{inventory:?}");
        assert!(inventory.storage_bytes > 0, "{inventory:?}");
        let sample = hardware.sample();
        assert!(sample.cpu_busy_permille <= 1000);
        assert!(sample.memory_used_bytes <= inventory.memory_bytes);
    }

    proptest! {
        #[test]
        fn parsers_never_panic_on_random_text(text in ".{0,400}") {
            let _ = parse_cpuinfo(&text);
            let memory = parse_meminfo(&text);
            prop_assert!(memory.available_bytes <= memory.total_bytes);
            let _ = parse_proc_stat(&text);
            let _ = parse_net_dev(&text);
            let _ = parse_link_speed_mbps(&text);
        }

        #[test]
        fn parsers_never_panic_on_near_miss_text(
            lines in proptest::collection::vec(
                (
                    prop_oneof![Just("cpu "), Just("MemTotal:"), Just("eth0:"), Just("processor:"), Just("lo:")],
                    proptest::collection::vec(prop_oneof![Just("18446744073709551615".to_string()), "[0-9]{1,12}", "[a-z:|-]{0,3}"], 0..20),
                ),
                0..10,
            )
        ) {
            let text: String = lines
                .iter()
                .map(|(head, words)| format!("{head} {}\n", words.join(" ")))
                .collect();
            let _ = parse_cpuinfo(&text);
            let _ = parse_meminfo(&text);
            if let Some(times) = parse_proc_stat(&text) {
                prop_assert!(times.busy_ticks <= times.total_ticks);
            }
            let _ = parse_net_dev(&text);
        }

        #[test]
        fn net_dev_totals_are_the_sums_of_the_interface_counters(
            counters in proptest::collection::vec((0u64..1 << 40, 0u64..1 << 40), 0..8),
        ) {
            let mut text = String::from("Inter-|   Receive |  Transmit\n face |bytes packets|bytes packets\n");
            for (index, (rx, tx)) in counters.iter().enumerate() {
                text.push_str(&format!("  eth{index}: {rx} 1 0 0 0 0 0 0 {tx} 1 0 0 0 0 0 0\n"));
            }
            text.push_str("    lo: 5 1 0 0 0 0 0 0 5 1 0 0 0 0 0 0\n");
            let rx: u64 = counters.iter().map(|(rx, _)| rx).sum();
            let tx: u64 = counters.iter().map(|(_, tx)| tx).sum();
            prop_assert_eq!(parse_net_dev(&text), (rx, tx));
        }

        #[test]
        fn busy_permille_stays_within_a_thousand(
            a in any::<(u64, u64)>(), b in any::<(u64, u64)>(),
        ) {
            let permille = busy_permille(
                CpuTimes { busy_ticks: a.0, total_ticks: a.1 },
                CpuTimes { busy_ticks: b.0, total_ticks: b.1 },
            );
            prop_assert!(permille <= 1000);
        }
    }
}
