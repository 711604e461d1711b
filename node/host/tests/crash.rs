//! SIGKILL a process mid-write and check RocksDisk's durability contract:
//! every synced batch survives, no batch is torn, and the surviving batches
//! are a prefix of the written sequence (a crash loses only a suffix).
// A test may sleep a real moment to let the child write.
#![allow(clippy::disallowed_methods)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use hm_env::{Disk, disk::SCAN_ENTRIES_MAX};
use hm_host::RocksDisk;

const KEYS_PER_BATCH: usize = 16;
const SYNCED_BATCHES_PER_ROUND: u64 = 40;
/// Kill rounds on one database: later rounds recover a database that was
/// itself recovered from a crash, and extend the same sequence.
const ROUNDS: usize = 3;
/// How long the writer runs unsynced before the kill.
const UNSYNCED_RUN: Duration = Duration::from_millis(50);

/// The batch index stored at the front of every value.
fn index_of(value: &[u8]) -> u64 {
    u64::from_be_bytes(value[..8].try_into().expect("8-byte index"))
}

/// Runs the writer until it has synced its batches, lets it write unsynced
/// batches for a moment, SIGKILLs it; returns (first index, last synced index).
fn run_and_kill(db: &std::path::Path) -> (u64, u64) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hm-host-crash-writer"))
        .arg(db)
        .arg(SYNCED_BATCHES_PER_ROUND.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the writer");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut first = None;
    let mut last_synced = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("read the writer's output");
        if line == "all-synced" {
            break;
        }
        if let Some(start) = line.strip_prefix("start ") {
            first = Some(start.parse::<u64>().expect("start index"));
        } else if let Some(index) = line.strip_prefix("synced ") {
            last_synced = Some(index.parse::<u64>().expect("synced index"));
        } else {
            panic!("unexpected writer output {line:?}");
        }
    }
    let (Some(first), Some(last_synced)) = (first, last_synced) else {
        panic!("the writer died before syncing: {:?}", child.wait());
    };
    assert_eq!(last_synced, first + SYNCED_BATCHES_PER_ROUND - 1);
    std::thread::sleep(UNSYNCED_RUN);
    // `Child::kill` is SIGKILL on unix: no destructors, no flush, no close.
    child.kill().expect("SIGKILL the writer");
    let status = child.wait().expect("reap the writer");
    assert!(
        !status.success(),
        "the writer must die by the signal, got {status}"
    );
    (first, last_synced)
}

#[test]
fn sigkill_keeps_every_synced_batch_and_tears_none() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("db");
    let mut previous_survivors = 0u64;
    for round in 0..ROUNDS {
        let (first, last_synced) = run_and_kill(&db);
        assert_eq!(
            first, previous_survivors,
            "round {round}: the writer resumed elsewhere"
        );

        let disk = RocksDisk::open(&db, &["data", "meta"]).expect("reopen after the crash");
        let entries = disk
            .scan_prefix("data", b"b", SCAN_ENTRIES_MAX)
            .expect("scan");
        // Keys of one batch are contiguous in key order: group them.
        let mut batches: Vec<(u64, usize)> = Vec::new();
        for (key, value) in &entries {
            let index: u64 = std::str::from_utf8(&key[1..9])
                .expect("ascii key")
                .parse()
                .expect("numeric index");
            assert_eq!(index_of(value), index, "a value belongs to another batch");
            match batches.last_mut() {
                Some((last, count)) if *last == index => *count += 1,
                _ => batches.push((index, 1)),
            }
        }
        for (index, count) in &batches {
            assert_eq!(
                *count, KEYS_PER_BATCH,
                "round {round}: batch {index} is torn"
            );
        }
        // What survived is the gap-free prefix 0..n, and it holds every synced batch.
        let indices: Vec<u64> = batches.iter().map(|(index, _)| *index).collect();
        let survivors = indices.len() as u64;
        assert_eq!(
            indices,
            (0..survivors).collect::<Vec<_>>(),
            "round {round}: not a prefix"
        );
        assert!(
            survivors > last_synced,
            "round {round}: {survivors} batches survived but batch {last_synced} was synced"
        );
        // `meta/last` is written in every batch: it must name the last survivor.
        let last = disk.get("meta", b"last").expect("get").expect("meta/last");
        assert_eq!(
            index_of(&last),
            survivors - 1,
            "round {round}: meta from another batch"
        );
        eprintln!(
            "round {round}: {survivors} batches survive, {} unsynced ones among them",
            survivors - 1 - last_synced
        );
        previous_survivors = survivors;
    }
}
