//! hm-wire with memos on, as the simulator runs it. A process of its own:
//! the switch (`hm_env::memo::enable`) is process-wide and never turns off,
//! and hm-wire's unit tests run as a real node does, with memos off.

use hm_env::mem::SeededEntropy;
use hm_wire::SigningKey;
use hm_wire::compress::{compress, compress_named, decompress};

/// A remembered verdict never leaks to another message, domain or key.
#[test]
fn the_verify_memo_keeps_verdicts_apart() {
    hm_env::memo::enable();
    let entropy = SeededEntropy::new(9, b"verify-cache");
    let key = SigningKey::generate(&entropy);
    let other = SigningKey::generate(&entropy);
    let signature = key.sign("test/cache", b"message", &entropy);
    for _ in 0..2 {
        key.verifying_key()
            .verify("test/cache", b"message", &signature)
            .expect("valid, first from the check, then from the memo");
        assert!(
            key.verifying_key()
                .verify("test/cache", b"massage", &signature)
                .is_err()
        );
        assert!(
            key.verifying_key()
                .verify("test/other", b"message", &signature)
                .is_err()
        );
        assert!(
            other
                .verifying_key()
                .verify("test/cache", b"message", &signature)
                .is_err()
        );
    }
}

/// Named content is produced once, and what the memo hands back is what
/// compressing the bytes gives.
#[test]
fn named_content_is_produced_at_most_once() {
    hm_env::memo::enable();
    let content = b"named named named content".repeat(50);
    let mut produced = 0;
    for _ in 0..2 {
        let packed = compress_named(
            || vec![b"test/named".to_vec(), b"1".to_vec()],
            || {
                produced += 1;
                content.clone()
            },
        );
        assert_eq!(packed, compress(&content));
        assert_eq!(decompress(&packed, content.len()), Ok(content.clone()));
    }
    assert_eq!(produced, 1);
    // The decompression cap is part of the key: a remembered success does
    // not answer a smaller cap.
    let packed = compress(&content);
    assert_eq!(decompress(&packed, content.len()), Ok(content.clone()));
    assert!(decompress(&packed, content.len() - 1).is_err());
}
