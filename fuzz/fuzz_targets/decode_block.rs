//! A committed block as it arrives from block sync or is read from disk:
//! Brotli-compressed canonical bytes. Never panic, never allocate past the
//! caps, and whatever decodes re-encodes to exactly the input.
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
    if let Ok(bytes) = hm_wire::compress::decompress(data, BLOCK_BYTES_MAX) {
        assert!(bytes.len() <= BLOCK_BYTES_MAX);
        if let Ok(block) = Block::decode(&bytes) {
            assert_eq!(block.encode(), bytes);
        }
    }
});
