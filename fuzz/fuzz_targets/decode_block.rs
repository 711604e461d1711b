//! A committed block as it arrives from block sync (canonical bytes) or is
//! read from disk (the stored form: a Brotli part and the certificate).
//! Never panic, never allocate past the caps; canonical bytes that decode
//! re-encode to exactly the input, a stored block that decodes stores and
//! reads back as the same block (Brotli itself has many encodings of one
//! content, so the stored bytes need not match).
#![no_main]

use hm_kernel::block::{BLOCK_BYTES_MAX, Block};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The raw encoding (gossip, sync responses).
    if let Ok(block) = Block::decode(data) {
        assert_eq!(
            block.encode(),
            data,
            "decode accepted a non-canonical block"
        );
        let _ = block.hash();
    }
    // The stored form: a Brotli bomb must stop at the cap.
    if let Ok(block) = hm_kernel::chain::decode_stored(data) {
        assert!(block.encode().len() <= BLOCK_BYTES_MAX);
        let stored = hm_kernel::chain::encode_stored(&block);
        assert_eq!(hm_kernel::chain::decode_stored(&stored), Ok(block));
    }
});
