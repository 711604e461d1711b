//! A sealed private block from a peer or the disk: decode, then open with
//! the owner's key. Never panic; decoded envelopes are canonical; opening a
//! forged envelope fails instead of yielding a block.
#![no_main]

use std::sync::OnceLock;

use hm_env::mem::SeededEntropy;
use hm_kernel::chain::SealedBlock;
use hm_wire::KemSecretKey;
use libfuzzer_sys::fuzz_target;

fn owner() -> &'static KemSecretKey {
    static OWNER: OnceLock<KemSecretKey> = OnceLock::new();
    OWNER.get_or_init(|| KemSecretKey::generate(&SeededEntropy::new(1, b"fuzz-owner")))
}

fuzz_target!(|data: &[u8]| {
    if let Ok(sealed) = SealedBlock::decode(data) {
        assert_eq!(
            hm_wire::encode(&sealed),
            data,
            "non-canonical sealed block accepted"
        );
        // Only the seed corpus's envelopes (sealed to this owner) may open;
        // whatever opens must match its anchor (open checks it).
        if let Ok(block) = sealed.open(owner()) {
            assert_eq!(block.header.hash(), sealed.anchor.header_hash);
        }
    }
});
