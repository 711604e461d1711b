//! Memos switched on: a process of its own, because the switch
//! (`hm_env::memo::enable`) is process-wide and never turns off, and the
//! unit tests of this crate run with memos off.

use hm_env::memo::{self, Memo, memo_id};

#[test]
fn computes_once_per_key_and_keeps_the_bounds() {
    memo::enable();
    assert!(memo::enabled());
    let memo: Memo<Vec<u8>> = Memo::new(3, 100);
    let mut calls = 0;
    for _ in 0..2 {
        let value = memo.get_or_compute(
            || memo_id("t", &[b"a"]),
            Vec::len,
            || {
                calls += 1;
                vec![1; 10]
            },
        );
        assert_eq!(value, vec![1; 10]);
    }
    assert_eq!(calls, 1);
    assert_eq!(memo.hits_and_misses(), (1, 1));
    // Entry bound: the oldest goes first.
    for key in [b"b", b"c", b"d"] {
        memo.get_or_compute(|| memo_id("t", &[key]), Vec::len, || vec![2; 10]);
    }
    assert_eq!(memo.len(), 3);
    memo.get_or_compute(
        || memo_id("t", &[b"a"]),
        Vec::len,
        || {
            calls += 1;
            vec![1; 10]
        },
    );
    assert_eq!(calls, 2, "the oldest entry was evicted");
    // Weight bound: a heavy value evicts until the total fits; one
    // heavier than the whole budget is returned but not kept.
    memo.get_or_compute(|| memo_id("t", &[b"e"]), Vec::len, || vec![3; 95]);
    assert!(memo.len() <= 1);
    let huge = memo.get_or_compute(|| memo_id("t", &[b"f"]), Vec::len, || vec![4; 101]);
    assert_eq!(huge.len(), 101);
    let (_, misses) = memo.hits_and_misses();
    memo.get_or_compute(|| memo_id("t", &[b"f"]), Vec::len, || vec![4; 101]);
    assert_eq!(memo.hits_and_misses().1, misses + 1, "never kept");
}
