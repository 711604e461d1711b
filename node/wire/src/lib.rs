#![doc = include_str!("../README.md")]

pub mod codec;
pub mod compress;
mod error;
pub mod hash;
pub mod merkle;
mod rng;
pub mod seal;
mod serde_bytes;
pub mod sign;

pub use codec::{decode, encode, encoded_len, try_encode};
pub use error::WireError;
pub use hash::{Hash, hash, hash_parts};
pub use seal::{KemPublicKey, KemSecretKey, open, seal};
pub use sign::{Signature, SigningKey, VerifyingKey};
