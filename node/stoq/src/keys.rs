//! The node-identity key types STOQ uses, in one place: FALCON-1024 from
//! `hm-wire`. A node id is the fingerprint (SHA-256) of the verifying key.

pub use hm_wire::WireError;
pub use hm_wire::hash::Hash;
pub use hm_wire::sign::{Signature, SigningKey, VerifyingKey};
