//! A chain message (proposal with its block, vote, evidence, transactions,
//! sync) as a node reads it from a STOQ stream. Never panic, bounded
//! memory, canonical: whatever decodes re-encodes to exactly the input.
#![no_main]

use hm_kernel::replica::ChainMessage;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = ChainMessage::decode(data) {
        assert_eq!(
            message.encode(),
            data,
            "non-canonical chain message accepted"
        );
        let _ = message.kind();
    }
});
