//! Durable key-value storage: named column families, atomic write batches,
//! explicit sync, prefix scans.
//!
//! Contract (what the simulator's crash model enforces and RocksDB gives):
//! * a `write` is atomic: after a crash, all of a batch or none of it is there;
//! * batches become durable, in order, at the next successful `sync`; a crash
//!   may lose any suffix of the batches written since the last sync;
//! * a value that cannot be read back intact is an error (`Corrupted`), never
//!   silently wrong data.

/// Longest key accepted, in bytes.
pub const KEY_BYTES_MAX: usize = 1024;
/// Largest value accepted, in bytes (blocks are bounded well below this).
pub const VALUE_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Most operations in one batch.
pub const BATCH_OPS_MAX: usize = 100_000;
/// Most entries one scan may return.
pub const SCAN_ENTRIES_MAX: usize = 1_000_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchOp {
    Put {
        cf: &'static str,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        cf: &'static str,
        key: Vec<u8>,
    },
}

impl BatchOp {
    pub fn cf(&self) -> &'static str {
        match self {
            BatchOp::Put { cf, .. } | BatchOp::Delete { cf, .. } => cf,
        }
    }

    pub fn key(&self) -> &[u8] {
        match self {
            BatchOp::Put { key, .. } | BatchOp::Delete { key, .. } => key,
        }
    }
}

/// Operations applied atomically, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteBatch {
    pub ops: Vec<BatchOp>,
}

impl WriteBatch {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn put(&mut self, cf: &'static str, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.ops.push(BatchOp::Put {
            cf,
            key: key.into(),
            value: value.into(),
        });
    }

    pub fn delete(&mut self, cf: &'static str, key: impl Into<Vec<u8>>) {
        self.ops.push(BatchOp::Delete {
            cf,
            key: key.into(),
        });
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Checks the batch against the limits and the disk's column families.
    pub fn validate(&self, column_families: &[&'static str]) -> Result<(), DiskError> {
        if self.ops.len() > BATCH_OPS_MAX {
            return Err(DiskError::TooLarge {
                what: "batch operations",
                len: self.ops.len(),
                max: BATCH_OPS_MAX,
            });
        }
        for op in &self.ops {
            if !column_families.contains(&op.cf()) {
                return Err(DiskError::UnknownColumnFamily(op.cf().to_string()));
            }
            if op.key().len() > KEY_BYTES_MAX {
                return Err(DiskError::TooLarge {
                    what: "key bytes",
                    len: op.key().len(),
                    max: KEY_BYTES_MAX,
                });
            }
            if let BatchOp::Put { value, .. } = op
                && value.len() > VALUE_BYTES_MAX
            {
                return Err(DiskError::TooLarge {
                    what: "value bytes",
                    len: value.len(),
                    max: VALUE_BYTES_MAX,
                });
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiskError {
    #[error("column family `{0}` does not exist; it must be declared when the disk is opened")]
    UnknownColumnFamily(String),
    #[error("{what}: {len} exceeds the limit of {max}")]
    TooLarge {
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error("stored value for key {key_hex} in `{cf}` failed its checksum: the data is corrupted")]
    Corrupted { cf: String, key_hex: String },
    #[error("disk I/O error: {0}")]
    Io(String),
}

/// Key-value pairs returned by a scan, in key order.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

pub trait Disk: Send + Sync + 'static {
    /// The column families this disk was opened with.
    fn column_families(&self) -> &[&'static str];

    fn get(&self, cf: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>, DiskError>;

    /// Applies `batch` atomically. Not durable until [`Disk::sync`].
    fn write(&self, batch: WriteBatch) -> Result<(), DiskError>;

    /// Makes every batch written so far durable.
    fn sync(&self) -> Result<(), DiskError>;

    /// Entries whose key starts with `prefix`, in key order, at most `limit`.
    fn scan_prefix(
        &self,
        cf: &'static str,
        prefix: &[u8],
        limit: usize,
    ) -> Result<Entries, DiskError>;

    /// Convenience: one put, written and synced.
    fn put_synced(&self, cf: &'static str, key: &[u8], value: &[u8]) -> Result<(), DiskError> {
        let mut batch = WriteBatch::new();
        batch.put(cf, key, value);
        self.write(batch)?;
        self.sync()
    }
}

/// Lowercase hex of at most the first 32 bytes, for error messages.
pub fn key_hex(key: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(64);
    for byte in key.iter().take(32) {
        let _ = write!(out, "{byte:02x}");
    }
    if key.len() > 32 {
        out.push('…');
    }
    out
}
