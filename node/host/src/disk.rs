//! [`hm_env::Disk`] on RocksDB.
//!
//! How the Disk contract maps onto RocksDB:
//! * `write` is one RocksDB `WriteBatch`: a single write-ahead-log record,
//!   applied all-or-nothing, also after a crash (a torn last record is dropped
//!   on recovery);
//! * writes do not sync; `sync` fsyncs the WAL (`flush_wal(true)`), so every
//!   batch written before it is durable once it returns, exactly the
//!   "durable at sync" promise of [`hm_env::Disk`]. A crash may lose a suffix
//!   of the batches since the last sync, never a middle one;
//! * RocksDB checksums every WAL record and SST block and paranoid checks are
//!   on, so corruption surfaces as [`DiskError::Corrupted`] instead of data.

use std::path::{Path, PathBuf};

use hm_env::disk::{SCAN_ENTRIES_MAX, key_hex};
use hm_env::{BatchOp, Disk, DiskError, Entries, WriteBatch};
use rocksdb::{
    ColumnFamilyDescriptor, DB, DBCompressionType, Direction, IteratorMode, Options, ReadOptions,
    WriteOptions,
};

/// RocksDB keeps at most this many of its own info-log files, so a long-running
/// node's data dir does not fill with logs.
const INFO_LOG_FILES_MAX: usize = 4;

/// Most column families a disk may declare: each costs RocksDB a memtable.
pub const COLUMN_FAMILIES_MAX: usize = 64;

/// A RocksDB database opened with a fixed set of column families.
pub struct RocksDisk {
    db: DB,
    column_families: Vec<&'static str>,
    path: PathBuf,
}

impl std::fmt::Debug for RocksDisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksDisk")
            .field("path", &self.path)
            .field("column_families", &self.column_families)
            .finish_non_exhaustive()
    }
}

fn options() -> Options {
    let mut options = Options::default();
    options.create_if_missing(true);
    options.create_missing_column_families(true);
    options.set_paranoid_checks(true);
    options.set_keep_log_file_num(INFO_LOG_FILES_MAX);
    // No codec is compiled in (see Cargo.toml); say so rather than rely on
    // RocksDB's fallback when Snappy is missing.
    options.set_compression_type(DBCompressionType::None);
    options
}

impl RocksDisk {
    /// Opens (creating if missing) the database at `path` with
    /// `column_families`, creating the ones that do not exist yet. Column
    /// families already in the database but not listed stay on disk untouched
    /// and are not reachable through this handle.
    pub fn open(path: &Path, column_families: &[&'static str]) -> Result<Self, DiskError> {
        if column_families.len() > COLUMN_FAMILIES_MAX {
            return Err(DiskError::TooLarge {
                what: "column families",
                len: column_families.len(),
                max: COLUMN_FAMILIES_MAX,
            });
        }
        for (index, name) in column_families.iter().enumerate() {
            if name.is_empty() || column_families[..index].contains(name) {
                return Err(DiskError::Io(format!(
                    "column family names must be non-empty and unique; `{name}` is not"
                )));
            }
        }
        let options = options();
        // RocksDB refuses to open a database without naming all of its column
        // families, so existing ones are opened too.
        let mut names: Vec<String> = if path.join("CURRENT").exists() {
            DB::list_cf(&options, path).map_err(|error| {
                DiskError::Io(format!(
                    "cannot list the column families of {}: {error}",
                    path.display()
                ))
            })?
        } else {
            Vec::new()
        };
        for name in column_families {
            if !names.iter().any(|existing| existing == name) {
                names.push((*name).to_string());
            }
        }
        let descriptors = names
            .into_iter()
            .map(|name| ColumnFamilyDescriptor::new(name, options.clone()));
        let db = DB::open_cf_descriptors(&options, path, descriptors).map_err(|error| {
            DiskError::Io(format!(
                "cannot open RocksDB at {}: {error}; check the data dir's permissions and that no other node uses it",
                path.display()
            ))
        })?;
        Ok(Self {
            db,
            column_families: column_families.to_vec(),
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Syncs the write-ahead log and writes every column family's memtable
    /// to its table files: what a graceful stop does, so nothing written is
    /// lost and the next start has no log to replay.
    pub fn flush_all(&self) -> Result<(), DiskError> {
        self.sync()?;
        for cf in &self.column_families {
            let handle = self.cf_handle(cf)?;
            self.db
                .flush_cf(handle)
                .map_err(|error| DiskError::Io(format!("flush of `{cf}` failed: {error}")))?;
        }
        Ok(())
    }

    fn cf_handle(&self, cf: &'static str) -> Result<&rocksdb::ColumnFamily, DiskError> {
        if !self.column_families.contains(&cf) {
            return Err(DiskError::UnknownColumnFamily(cf.to_string()));
        }
        // Every declared family was opened in `open`; a miss is a bug there,
        // but the error path costs nothing.
        self.db
            .cf_handle(cf)
            .ok_or_else(|| DiskError::UnknownColumnFamily(cf.to_string()))
    }
}

/// Maps a RocksDB error on `key` (or a scan's prefix) in `cf`.
fn map_error(cf: &'static str, key: &[u8], what: &str, error: rocksdb::Error) -> DiskError {
    match error.kind() {
        rocksdb::ErrorKind::Corruption => DiskError::Corrupted {
            cf: cf.to_string(),
            key_hex: key_hex(key),
        },
        _ => DiskError::Io(format!("{what} in `{cf}` failed: {error}")),
    }
}

/// The smallest key greater than every key starting with `prefix`, or `None`
/// when no such key exists (empty prefix or all `0xff`).
pub fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let last = prefix.iter().rposition(|byte| *byte != 0xff)?;
    let mut successor = prefix[..=last].to_vec();
    successor[last] += 1;
    Some(successor)
}

impl Disk for RocksDisk {
    fn column_families(&self) -> &[&'static str] {
        &self.column_families
    }

    fn get(&self, cf: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>, DiskError> {
        let handle = self.cf_handle(cf)?;
        self.db
            .get_cf(handle, key)
            .map_err(|error| map_error(cf, key, "get", error))
    }

    fn write(&self, batch: WriteBatch) -> Result<(), DiskError> {
        batch.validate(&self.column_families)?;
        let mut rocks_batch = rocksdb::WriteBatch::default();
        for op in &batch.ops {
            let handle = self.cf_handle(op.cf())?;
            match op {
                BatchOp::Put { key, value, .. } => rocks_batch.put_cf(handle, key, value),
                BatchOp::Delete { key, .. } => rocks_batch.delete_cf(handle, key),
            }
        }
        assert_eq!(rocks_batch.len(), batch.ops.len());
        let mut write_options = WriteOptions::default();
        // Durability comes from `sync`, once for many batches.
        write_options.set_sync(false);
        self.db
            .write_opt(rocks_batch, &write_options)
            .map_err(|error| DiskError::Io(format!("write of a batch failed: {error}")))
    }

    fn sync(&self) -> Result<(), DiskError> {
        self.db
            .flush_wal(true)
            .map_err(|error| DiskError::Io(format!("sync of the write-ahead log failed: {error}")))
    }

    fn scan_prefix(
        &self,
        cf: &'static str,
        prefix: &[u8],
        limit: usize,
    ) -> Result<Entries, DiskError> {
        let handle = self.cf_handle(cf)?;
        let limit = limit.min(SCAN_ENTRIES_MAX);
        let mut read_options = ReadOptions::default();
        // Bounds let RocksDB skip blocks past the prefix instead of reading
        // one entry beyond it.
        read_options.set_iterate_lower_bound(prefix.to_vec());
        if let Some(successor) = prefix_successor(prefix) {
            read_options.set_iterate_upper_bound(successor);
        }
        let iterator = self.db.iterator_cf_opt(
            handle,
            read_options,
            IteratorMode::From(prefix, Direction::Forward),
        );
        let mut entries = Entries::new();
        for item in iterator {
            if entries.len() >= limit {
                break;
            }
            let (key, value) = item.map_err(|error| map_error(cf, prefix, "prefix scan", error))?;
            if !key.starts_with(prefix) {
                break;
            }
            if let Some((previous, _)) = entries.last() {
                assert!(
                    previous.as_slice() < &*key,
                    "RocksDB iterated out of key order"
                );
            }
            entries.push((key.into_vec(), value.into_vec()));
        }
        Ok(entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CFS: &[&str] = &["blocks", "state"];

    fn open(dir: &Path) -> RocksDisk {
        RocksDisk::open(dir, CFS).expect("open")
    }

    #[test]
    fn synced_batches_survive_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let disk = open(dir.path());
            let mut batch = WriteBatch::new();
            batch.put("blocks", b"h1".to_vec(), b"block one".to_vec());
            batch.put("state", b"tip".to_vec(), b"h1".to_vec());
            disk.write(batch).expect("write");
            disk.sync().expect("sync");
            let mut batch = WriteBatch::new();
            batch.delete("state", b"tip".to_vec());
            disk.write(batch).expect("write delete");
            disk.sync().expect("sync");
        }
        let disk = open(dir.path());
        assert_eq!(
            disk.get("blocks", b"h1").expect("get"),
            Some(b"block one".to_vec())
        );
        assert_eq!(disk.get("state", b"tip").expect("get"), None);
        assert_eq!(disk.column_families(), CFS);
    }

    #[test]
    fn a_new_column_family_is_created_on_reopen_and_old_ones_keep_their_data() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let disk = open(dir.path());
            disk.put_synced("blocks", b"k", b"v").expect("put");
        }
        let disk = RocksDisk::open(dir.path(), &["blocks", "peers"]).expect("reopen");
        assert_eq!(disk.get("blocks", b"k").expect("get"), Some(b"v".to_vec()));
        assert_eq!(disk.get("peers", b"k").expect("get"), None);
        // `state` exists on disk but was not declared: unreachable here.
        assert_eq!(
            disk.get("state", b"k"),
            Err(DiskError::UnknownColumnFamily("state".into()))
        );
    }

    #[test]
    fn a_batch_is_all_or_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let disk = open(dir.path());
        disk.put_synced("state", b"a", b"old").expect("put");
        // One op names an undeclared family: nothing of the batch may land.
        let mut batch = WriteBatch::new();
        batch.put("state", b"a".to_vec(), b"new".to_vec());
        batch.put("state", b"b".to_vec(), b"new".to_vec());
        batch.put("missing", b"c".to_vec(), b"new".to_vec());
        assert_eq!(
            disk.write(batch),
            Err(DiskError::UnknownColumnFamily("missing".into()))
        );
        assert_eq!(disk.get("state", b"a").expect("get"), Some(b"old".to_vec()));
        assert_eq!(disk.get("state", b"b").expect("get"), None);
        // An over-long key anywhere in a batch rejects all of it too.
        let mut batch = WriteBatch::new();
        batch.put("state", b"a".to_vec(), b"new".to_vec());
        batch.put(
            "state",
            vec![0u8; hm_env::disk::KEY_BYTES_MAX + 1],
            b"x".to_vec(),
        );
        assert!(matches!(disk.write(batch), Err(DiskError::TooLarge { .. })));
        assert_eq!(disk.get("state", b"a").expect("get"), Some(b"old".to_vec()));
        // Ops apply in order: a put then a delete of the same key deletes it.
        let mut batch = WriteBatch::new();
        batch.put("state", b"z".to_vec(), b"1".to_vec());
        batch.delete("state", b"z".to_vec());
        batch.put("state", b"a".to_vec(), b"newer".to_vec());
        disk.write(batch).expect("write");
        assert_eq!(disk.get("state", b"z").expect("get"), None);
        assert_eq!(
            disk.get("state", b"a").expect("get"),
            Some(b"newer".to_vec())
        );
    }

    #[test]
    fn unknown_column_families_are_errors_everywhere() {
        let dir = tempfile::tempdir().expect("tempdir");
        let disk = open(dir.path());
        let unknown = DiskError::UnknownColumnFamily("nope".into());
        assert_eq!(disk.get("nope", b"k"), Err(unknown.clone()));
        assert_eq!(disk.scan_prefix("nope", b"", 10), Err(unknown.clone()));
        let mut batch = WriteBatch::new();
        batch.delete("nope", b"k".to_vec());
        assert_eq!(disk.write(batch), Err(unknown));
        // "default" always exists in RocksDB but was not declared.
        assert!(disk.get("default", b"k").is_err());
    }

    #[test]
    fn duplicate_column_family_names_are_rejected() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(RocksDisk::open(dir.path(), &["a", "a"]).is_err());
        assert!(RocksDisk::open(dir.path(), &[""]).is_err());
    }

    #[test]
    fn prefix_scans_are_in_key_order_bounded_and_stay_inside_the_prefix() {
        let dir = tempfile::tempdir().expect("tempdir");
        let disk = open(dir.path());
        let mut batch = WriteBatch::new();
        // Written out of order, with neighbours on both sides of the prefix
        // and the same keys in another family.
        for key in [
            &b"p\x02"[..],
            b"p\xff",
            b"p",
            b"o\xff",
            b"q",
            b"p\x01\x00",
            b"p\x01",
        ] {
            batch.put("state", key.to_vec(), [b"v:", key].concat());
            batch.put("blocks", key.to_vec(), b"other".to_vec());
        }
        disk.write(batch).expect("write");
        let keys =
            |entries: Entries| -> Vec<Vec<u8>> { entries.into_iter().map(|(k, _)| k).collect() };
        let all = disk.scan_prefix("state", b"p", 100).expect("scan");
        assert!(
            all.iter()
                .all(|(k, v)| *v == [b"v:", k.as_slice()].concat())
        );
        assert_eq!(
            keys(all),
            vec![
                b"p".to_vec(),
                b"p\x01".to_vec(),
                b"p\x01\x00".to_vec(),
                b"p\x02".to_vec(),
                b"p\xff".to_vec()
            ]
        );
        assert_eq!(
            keys(disk.scan_prefix("state", b"p", 2).expect("scan")),
            vec![b"p".to_vec(), b"p\x01".to_vec()]
        );
        assert!(disk.scan_prefix("state", b"p", 0).expect("scan").is_empty());
        assert_eq!(disk.scan_prefix("state", b"", 100).expect("scan").len(), 7);
        assert!(
            disk.scan_prefix("state", b"r", 100)
                .expect("scan")
                .is_empty()
        );
        // An all-0xff prefix has no upper bound.
        assert_eq!(
            keys(disk.scan_prefix("state", b"p\xff", 100).expect("scan")),
            vec![b"p\xff".to_vec()]
        );
    }

    #[test]
    fn a_flipped_byte_on_disk_reads_as_corrupted_not_as_data() {
        let dir = tempfile::tempdir().expect("tempdir");
        let value = vec![0x5a_u8; 4096];
        {
            let disk = open(dir.path());
            disk.put_synced("blocks", b"victim", &value).expect("put");
            // Move the value from the WAL into an SST file, the checksummed
            // block format that reads go through.
            let handle = disk.cf_handle("blocks").expect("cf");
            disk.db.flush_cf(handle).expect("flush");
        }
        let sst = std::fs::read_dir(dir.path())
            .expect("list db dir")
            .map(|entry| entry.expect("entry").path())
            .find(|path| path.extension().is_some_and(|ext| ext == "sst"))
            .expect("an SST file after flush");
        let mut bytes = std::fs::read(&sst).expect("read sst");
        // Inside the 4 KiB run of 0x5a: the value's own bytes in the data block.
        let at = bytes
            .windows(64)
            .position(|window| window.iter().all(|b| *b == 0x5a))
            .expect("the value is stored uncompressed");
        bytes[at + 10] ^= 0xff;
        std::fs::write(&sst, bytes).expect("write sst");

        let disk = open(dir.path());
        assert_eq!(
            disk.get("blocks", b"victim"),
            Err(DiskError::Corrupted {
                cf: "blocks".into(),
                key_hex: key_hex(b"victim"),
            })
        );
        assert!(matches!(
            disk.scan_prefix("blocks", b"vic", 10),
            Err(DiskError::Corrupted { .. })
        ));
    }

    #[test]
    fn prefix_successor_examples() {
        assert_eq!(prefix_successor(b""), None);
        assert_eq!(prefix_successor(b"\xff\xff"), None);
        assert_eq!(prefix_successor(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_successor(b"a\xff"), Some(b"b".to_vec()));
    }

    proptest! {
        #[test]
        fn prefix_successor_bounds_exactly_the_prefixed_keys(
            prefix in proptest::collection::vec(any::<u8>(), 0..6),
            key in proptest::collection::vec(any::<u8>(), 0..8),
        ) {
            let has_prefix = key.starts_with(&prefix);
            let in_range = key.as_slice() >= prefix.as_slice()
                && prefix_successor(&prefix).is_none_or(|end| key < end);
            prop_assert_eq!(has_prefix, in_range);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]
        /// Scans agree with a BTreeMap model over random writes and deletes.
        #[test]
        fn scans_match_a_sorted_model(
            ops in proptest::collection::vec(
                (any::<bool>(), proptest::collection::vec(0u8..4, 0..4), any::<u8>()),
                1..60,
            ),
            prefix in proptest::collection::vec(0u8..4, 0..3),
            limit in 0usize..20,
        ) {
            let dir = tempfile::tempdir().expect("tempdir");
            let disk = open(dir.path());
            let mut model = std::collections::BTreeMap::new();
            for (put, key, value) in ops {
                let mut batch = WriteBatch::new();
                if put {
                    batch.put("state", key.clone(), vec![value]);
                    model.insert(key, vec![value]);
                } else {
                    batch.delete("state", key.clone());
                    model.remove(&key);
                }
                disk.write(batch).expect("write");
            }
            let expected: Entries = model
                .into_iter()
                .filter(|(key, _)| key.starts_with(&prefix))
                .take(limit)
                .collect();
            prop_assert_eq!(disk.scan_prefix("state", &prefix, limit).expect("scan"), expected);
        }
    }
}
