//! What a machine has and how busy it is: the raw material of asset registration.

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GpuInfo {
    pub model: String,
    pub memory_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HardwareInventory {
    pub cpu_model: String,
    pub cpu_cores: u32,
    pub memory_bytes: u64,
    pub storage_bytes: u64,
    pub network_bits_per_second: u64,
    pub gpus: Vec<GpuInfo>,
}

/// One usage sample. Counters (`*_total`) only grow; gauges are instantaneous.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UsageSample {
    /// CPU busy time over the last interval, in thousandths of all cores.
    pub cpu_busy_permille: u32,
    pub memory_used_bytes: u64,
    pub storage_used_bytes: u64,
    pub net_rx_bytes_total: u64,
    pub net_tx_bytes_total: u64,
}

pub trait Hardware: Send + Sync + 'static {
    fn inventory(&self) -> HardwareInventory;
    fn sample(&self) -> UsageSample;
}
