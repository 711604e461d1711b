//! TimeProof (when): a sequential SHA-256 chain from the parent's output,
//! Proof-of-History style, and the header timestamp's bounds.
//!
//! ```text
//! state_0     = hash("hm/time-start/v1", parent.time_output, parent_hash)
//! state_{t+1} = hash("hm/tick/v1", state_t)
//! ```
//!
//! The proposer runs `time_ticks >= time_min_ticks` iterations and records
//! the state after every `time_checkpoint_interval_ticks` (the last segment
//! may be shorter; the last checkpoint is the header's `time_output`).
//! Each segment starts from the previous checkpoint, so a verifier
//! recomputes segments on separate cores and compares.
//!
//! What it proves: that `time_ticks` hash evaluations were done one after
//! another, after the parent block existed (the chain starts from its
//! hash). It does not prove how much wall-clock time passed — a faster CPU
//! ticks faster. Wall time enters only through the timestamp rules: after
//! the parent's, and not beyond the validator's own clock plus the allowed
//! drift.

use hm_wire::{Hash, hash, hash_parts};

use super::{ParentInfo, TIME_CHECKPOINTS_MAX, TimeProof};
use crate::block::BlockHeader;
use crate::genesis::ProofParams;

pub const TIME_START_DOMAIN: &str = "hm/time-start/v1";
/// Domain of one tick. Short on purpose: 0xFF, length byte, 10 bytes,
/// 8-byte part length and the 32-byte state make 52 bytes, so each tick is
/// exactly one SHA-256 compression (up to 55 bytes fit in one block).
pub const TIME_TICK_DOMAIN: &str = "hm/tick/v1";

/// A block's chain may be at most this many times `time_min_ticks` long.
/// Honest proposers run exactly the minimum; the cap bounds the work a
/// proposer can make every validator do.
pub const TIME_TICKS_MAX_FACTOR: u64 = 2;

/// Threads one verification uses at most, whatever the caller asks.
pub const TIME_VERIFY_THREADS_MAX: usize = 64;

/// Ticks a verification thread must have to be worth starting: 100,000
/// ticks are ~7 ms of hashing against ~50 µs to start and join a thread.
/// Shorter chains (the simulator's) are checked on the caller's thread.
pub const TIME_TICKS_PER_THREAD_MIN: u64 = 100_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    #[error(
        "the header's parent is {header_parent}, but the time chain is checked against parent {parent}"
    )]
    ParentMismatch { header_parent: Hash, parent: Hash },
    #[error("block timestamp {timestamp_ms} ms is not after its parent's {parent_timestamp_ms} ms")]
    TimestampNotAfterParent {
        timestamp_ms: u64,
        parent_timestamp_ms: u64,
    },
    #[error(
        "block timestamp {timestamp_ms} ms is more than {max_drift_ms} ms ahead of this node's clock ({local_now_ms} ms); the proposer's clock runs fast, or ours slow"
    )]
    TimestampTooFarAhead {
        timestamp_ms: u64,
        local_now_ms: u64,
        max_drift_ms: u64,
    },
    #[error("time chain has {ticks} ticks, fewer than the {min} required")]
    TooFewTicks { ticks: u64, min: u64 },
    #[error("time chain has {ticks} ticks, more than the {max} a validator will recompute")]
    TooManyTicks { ticks: u64, max: u64 },
    #[error("time proof has {got} checkpoints; {expected} expected for its tick count")]
    CheckpointCount { got: usize, expected: u64 },
    #[error("the last time checkpoint differs from the header's time_output")]
    OutputMismatch,
    #[error(
        "time checkpoint {index} does not follow from the previous one (the chain was not computed)"
    )]
    CheckpointMismatch { index: usize },
}

/// State 0 of the chain that follows `parent`.
pub fn time_start(parent: &ParentInfo) -> Hash {
    hash_parts(
        TIME_START_DOMAIN,
        &[parent.time_output.as_bytes(), parent.hash.as_bytes()],
    )
}

/// `ticks` sequential iterations from `state`.
pub fn run_ticks(mut state: Hash, ticks: u64) -> Hash {
    for _ in 0..ticks {
        state = hash(TIME_TICK_DOMAIN, state.as_bytes());
    }
    state
}

/// Runs the chain after `parent` for `ticks` iterations, recording a
/// checkpoint every `interval_ticks`. Returns the output and the proof.
pub fn prove_time(parent: &ParentInfo, ticks: u64, interval_ticks: u64) -> (Hash, TimeProof) {
    assert!(ticks > 0 && interval_ticks > 0, "a time chain has ticks");
    let mut state = time_start(parent);
    // Capacity capped: a caller asking for more checkpoints than a proof may
    // carry gets a proof validators refuse, not a huge allocation up front.
    let capacity = ticks
        .div_ceil(interval_ticks)
        .min(TIME_CHECKPOINTS_MAX as u64) as usize;
    let mut checkpoints = Vec::with_capacity(capacity);
    let mut done = 0;
    while done < ticks {
        let segment = interval_ticks.min(ticks - done);
        state = run_ticks(state, segment);
        checkpoints.push(state);
        done += segment;
    }
    (state, TimeProof { checkpoints })
}

pub fn check_time_limits(proof: &TimeProof) -> Result<(), TimeError> {
    if proof.checkpoints.len() > TIME_CHECKPOINTS_MAX {
        return Err(TimeError::CheckpointCount {
            got: proof.checkpoints.len(),
            expected: TIME_CHECKPOINTS_MAX as u64,
        });
    }
    Ok(())
}

/// Checks the header's timestamp and time chain against its parent. The
/// caller passes its own clock reading (`local_now_ms`); `parallelism` is
/// how many threads may recompute segments (1 = on this thread; the
/// simulator passes 1).
pub fn verify_time(
    proof: &TimeProof,
    header: &BlockHeader,
    parent: &ParentInfo,
    params: &ProofParams,
    local_now_ms: u64,
    parallelism: usize,
) -> Result<(), TimeError> {
    check_time_limits(proof)?;
    if header.previous_hash != parent.hash {
        return Err(TimeError::ParentMismatch {
            header_parent: header.previous_hash,
            parent: parent.hash,
        });
    }
    if header.timestamp_ms <= parent.timestamp_ms {
        return Err(TimeError::TimestampNotAfterParent {
            timestamp_ms: header.timestamp_ms,
            parent_timestamp_ms: parent.timestamp_ms,
        });
    }
    if header.timestamp_ms > local_now_ms.saturating_add(params.max_drift_ms) {
        return Err(TimeError::TimestampTooFarAhead {
            timestamp_ms: header.timestamp_ms,
            local_now_ms,
            max_drift_ms: params.max_drift_ms,
        });
    }
    let ticks = header.time_ticks;
    if ticks < params.time_min_ticks {
        return Err(TimeError::TooFewTicks {
            ticks,
            min: params.time_min_ticks,
        });
    }
    let max = params.time_min_ticks.saturating_mul(TIME_TICKS_MAX_FACTOR);
    if ticks > max {
        return Err(TimeError::TooManyTicks { ticks, max });
    }
    let interval = params.time_checkpoint_interval_ticks;
    assert!(interval > 0, "genesis checks the checkpoint interval");
    let expected = ticks.div_ceil(interval);
    if proof.checkpoints.len() as u64 != expected {
        return Err(TimeError::CheckpointCount {
            got: proof.checkpoints.len(),
            expected,
        });
    }
    if proof.checkpoints.last() != Some(&header.time_output) {
        return Err(TimeError::OutputMismatch);
    }
    let worth = usize::try_from(ticks / TIME_TICKS_PER_THREAD_MIN).unwrap_or(usize::MAX);
    let threads = parallelism.min(worth);
    match first_bad_segment(proof, time_start(parent), ticks, interval, threads) {
        Some(index) => Err(TimeError::CheckpointMismatch { index }),
        None => Ok(()),
    }
}

/// Recomputes every segment on up to `threads` threads; returns the first
/// whose end is not its checkpoint.
fn first_bad_segment(
    proof: &TimeProof,
    start: Hash,
    ticks: u64,
    interval: u64,
    threads: usize,
) -> Option<usize> {
    let checkpoints = &proof.checkpoints;
    let segment_ok = |index: usize| {
        let from = if index == 0 {
            start
        } else {
            checkpoints[index - 1]
        };
        let done = index as u64 * interval;
        run_ticks(from, interval.min(ticks - done)) == checkpoints[index]
    };
    let threads = threads
        .clamp(1, TIME_VERIFY_THREADS_MAX)
        .min(checkpoints.len());
    if threads <= 1 {
        return (0..checkpoints.len()).find(|index| !segment_ok(*index));
    }
    let per_thread = checkpoints.len().div_ceil(threads);
    // Pure computation over borrowed data, joined in order: the answer is
    // the same as the sequential loop's, whatever the scheduling. These
    // threads never touch the network, disk or clock, and they end before
    // this function returns, so nothing escapes the simulator's control
    // (which passes parallelism 1 anyway).
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|thread| {
                let range = thread * per_thread..((thread + 1) * per_thread).min(checkpoints.len());
                let segment_ok = &segment_ok;
                scope.spawn(move || range.into_iter().find(|index| !segment_ok(*index)))
            })
            .collect();
        let mut first_bad = None;
        for handle in handles {
            let bad = match handle.join() {
                Ok(bad) => bad,
                Err(panic) => std::panic::resume_unwind(panic),
            };
            first_bad = first_bad.or(bad);
        }
        first_bad
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> ProofParams {
        ProofParams {
            space_challenges: 4,
            space_leaves_log2: 6,
            work_difficulty_bits: 4,
            time_min_ticks: 1_000,
            time_checkpoint_interval_ticks: 128,
            max_drift_ms: 500,
        }
    }

    fn parent() -> ParentInfo {
        ParentInfo {
            hash: hash("test", b"parent"),
            time_output: hash("test", b"parent output"),
            timestamp_ms: 10_000,
        }
    }

    fn header(ticks: u64, output: Hash) -> BlockHeader {
        BlockHeader {
            version: crate::block::BLOCK_VERSION,
            chain_id: hash("test", b"chain"),
            height: 2,
            round: 0,
            previous_hash: parent().hash,
            transactions_root: Hash::ZERO,
            updates_root: Hash::ZERO,
            evidence_root: Hash::ZERO,
            state_root: Hash::ZERO,
            log_head: crate::block::LogHead::empty(),
            timestamp_ms: 11_000,
            difficulty: 4,
            time_output: output,
            time_ticks: ticks,
            proposer: Hash::ZERO,
            validators_hash: Hash::ZERO,
            next_validators_hash: Hash::ZERO,
        }
    }

    #[test]
    fn chain_matches_a_straight_run_and_verifies_at_any_parallelism() {
        let (output, proof) = prove_time(&parent(), 1_000, 128);
        assert_eq!(output, run_ticks(time_start(&parent()), 1_000));
        assert_eq!(proof.checkpoints.len(), 8);
        assert_eq!(proof.checkpoints[0], run_ticks(time_start(&parent()), 128));
        let header = header(1_000, output);
        for parallelism in [0, 1, 2, 3, 8, 1_000] {
            assert_eq!(
                verify_time(&proof, &header, &parent(), &params(), 11_000, parallelism),
                Ok(()),
                "parallelism {parallelism}"
            );
        }
    }

    #[test]
    fn flipped_checkpoints_are_found_at_any_parallelism() {
        let (output, proof) = prove_time(&parent(), 1_000, 128);
        let header = header(1_000, output);
        for index in 0..proof.checkpoints.len() - 1 {
            let mut tampered = proof.clone();
            tampered.checkpoints[index].0[0] ^= 1;
            for parallelism in [1, 2, 3] {
                assert_eq!(
                    verify_time(
                        &tampered,
                        &header,
                        &parent(),
                        &params(),
                        11_000,
                        parallelism
                    ),
                    Err(TimeError::CheckpointMismatch { index }),
                );
            }
        }
        let mut last = proof;
        let end = last.checkpoints.len() - 1;
        last.checkpoints[end].0[0] ^= 1;
        assert_eq!(
            verify_time(&last, &header, &parent(), &params(), 11_000, 2),
            Err(TimeError::OutputMismatch)
        );
    }

    #[test]
    fn tick_and_timestamp_rules() {
        let (output, proof) = prove_time(&parent(), 999, 128);
        assert!(matches!(
            verify_time(
                &proof,
                &header(999, output),
                &parent(),
                &params(),
                11_000,
                1
            ),
            Err(TimeError::TooFewTicks {
                ticks: 999,
                min: 1_000
            })
        ));
        let (output, proof) = prove_time(&parent(), 2_001, 128);
        assert!(matches!(
            verify_time(
                &proof,
                &header(2_001, output),
                &parent(),
                &params(),
                11_000,
                1
            ),
            Err(TimeError::TooManyTicks { .. })
        ));
        let (output, proof) = prove_time(&parent(), 1_000, 128);
        // Claiming more ticks than were run.
        assert!(matches!(
            verify_time(
                &proof,
                &header(1_200, output),
                &parent(),
                &params(),
                11_000,
                1
            ),
            Err(TimeError::CheckpointCount { .. })
        ));
        let mut header = header(1_000, output);
        header.timestamp_ms = parent().timestamp_ms;
        assert!(matches!(
            verify_time(&proof, &header, &parent(), &params(), 11_000, 1),
            Err(TimeError::TimestampNotAfterParent { .. })
        ));
        header.timestamp_ms = 11_501;
        assert!(matches!(
            verify_time(&proof, &header, &parent(), &params(), 11_000, 1),
            Err(TimeError::TimestampTooFarAhead { .. })
        ));
        header.timestamp_ms = 11_500;
        assert_eq!(
            verify_time(&proof, &header, &parent(), &params(), 11_000, 1),
            Ok(())
        );
        // A chain started from another parent does not verify here.
        let mut other = parent();
        other.hash = hash("test", b"other parent");
        header.previous_hash = other.hash;
        assert_eq!(
            verify_time(&proof, &header, &other, &params(), 11_000, 1),
            Err(TimeError::CheckpointMismatch { index: 0 })
        );
        assert!(matches!(
            verify_time(&proof, &header, &parent(), &params(), 11_000, 1),
            Err(TimeError::ParentMismatch { .. })
        ));
    }

    #[test]
    fn segments_split_over_threads_find_the_first_bad_one() {
        let (_, proof) = prove_time(&parent(), 1_000, 64);
        let start = time_start(&parent());
        for threads in [1, 2, 3, 5, 16, 100] {
            assert_eq!(first_bad_segment(&proof, start, 1_000, 64, threads), None);
            for bad in [0, 3, 7, 15] {
                let mut tampered = proof.clone();
                tampered.checkpoints[bad].0[31] ^= 0x80;
                // Flipping checkpoint `bad` breaks segments `bad` and
                // `bad + 1`; the first is reported whatever the split.
                assert_eq!(
                    first_bad_segment(&tampered, start, 1_000, 64, threads),
                    Some(bad),
                    "threads {threads}"
                );
            }
        }
    }

    #[test]
    fn long_chains_verify_on_several_threads() {
        let ticks = 2 * TIME_TICKS_PER_THREAD_MIN + 1;
        let params = ProofParams {
            time_min_ticks: ticks,
            time_checkpoint_interval_ticks: 10_000,
            ..params()
        };
        let (output, proof) = prove_time(&parent(), ticks, 10_000);
        let header = header(ticks, output);
        assert_eq!(
            verify_time(&proof, &header, &parent(), &params, 11_000, 2),
            Ok(())
        );
        let mut tampered = proof;
        tampered.checkpoints[12].0[0] ^= 1;
        assert_eq!(
            verify_time(&tampered, &header, &parent(), &params, 11_000, 2),
            Err(TimeError::CheckpointMismatch { index: 12 })
        );
    }

    #[test]
    fn last_segment_may_be_short() {
        let (output, proof) = prove_time(&parent(), 1_001, 128);
        assert_eq!(proof.checkpoints.len(), 8);
        assert_eq!(
            verify_time(
                &proof,
                &header(1_001, output),
                &parent(),
                &params(),
                11_000,
                2
            ),
            Ok(())
        );
    }
}
