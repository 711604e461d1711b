//! Test helper for `tests/crash.rs`: writes numbered batches to a RocksDisk
//! and prints progress, so the test can SIGKILL it at a known point.
//!
//! Usage: `hm-host-crash-writer <db-dir> <synced-batches>`
//! Output: `start <first>`, then `synced <i>` per synced batch, then `all-synced`.
//!
//! It continues after the last batch already in the database (`meta/last`),
//! so repeated kill/reopen rounds extend one sequence.
//!
//! Batch `i` puts `KEYS_PER_BATCH` keys `b{i:08}/k{j}` in `data` and sets
//! `meta/last` to `i`, all with value `i` (big-endian u64). The first
//! `synced-batches` batches are each synced before `synced <i>` is printed;
//! after `all-synced`, it keeps writing unsynced batches (large values, so
//! some are likely in flight when the kill lands) until killed.

use std::io::Write;
use std::path::PathBuf;

use hm_env::{Disk, WriteBatch};
use hm_host::RocksDisk;

/// Keys per batch: enough that a torn batch would show as a partial set.
const KEYS_PER_BATCH: u64 = 16;
/// Value bytes per key in the unsynced phase: larger values make a kill in
/// the middle of a WAL append likely.
const VALUE_BYTES_UNSYNCED: usize = 16 * 1024;
/// Upper bound of unsynced batches, so a writer that is never killed ends.
const UNSYNCED_BATCHES_MAX: u64 = 1_000_000;

fn batch(index: u64, value_bytes: usize) -> WriteBatch {
    let mut batch = WriteBatch::new();
    let mut value = index.to_be_bytes().to_vec();
    value.resize(value_bytes.max(8), 0xab);
    for key in 0..KEYS_PER_BATCH {
        batch.put("data", format!("b{index:08}/k{key:02}"), value.clone());
    }
    batch.put("meta", b"last".to_vec(), index.to_be_bytes().to_vec());
    batch
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().ok_or("missing <db-dir>")?);
    let synced: u64 = args.next().ok_or("missing <synced-batches>")?.parse()?;
    let disk = RocksDisk::open(&dir, &["data", "meta"])?;
    let first = match disk.get("meta", b"last")? {
        Some(last) => u64::from_be_bytes(last.as_slice().try_into()?) + 1,
        None => 0,
    };
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "start {first}")?;
    for index in first..first + synced {
        disk.write(batch(index, 8))?;
        disk.sync()?;
        writeln!(stdout, "synced {index}")?;
    }
    writeln!(stdout, "all-synced")?;
    stdout.flush()?;
    for index in first + synced..first + synced + UNSYNCED_BATCHES_MAX {
        disk.write(batch(index, VALUE_BYTES_UNSYNCED))?;
    }
    Ok(())
}
