//! A membership message as the node reads it from a STOQ stream. Never
//! panic; whatever decodes re-encodes to exactly the input.
#![no_main]

use hm_node::MEMBERSHIP_MESSAGE_BYTES_MAX;
use hm_node::membership::Message;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = hm_wire::decode::<Message>(data, MEMBERSHIP_MESSAGE_BYTES_MAX) {
        assert_eq!(hm_wire::encode(&message), data);
    }
});
