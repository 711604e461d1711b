#![doc = include_str!("../README.md")]

pub mod config;
pub mod connection;
pub mod endpoint;
pub mod error;
pub mod frame;
pub mod glue;
pub mod identity;
pub mod keys;
pub mod tls;

#[cfg(test)]
mod tests;

pub use config::StoqConfig;
pub use connection::{Connection, ConnectionStats, IncomingRequest, close_code, stream_code};
pub use endpoint::{Endpoint, EndpointStats};
pub use error::{ConfigError, IdentityError, StoqError};
pub use glue::{EnvClock, EnvRuntime, EnvSocket};
pub use identity::{
    AllowListVerifier, HonestPresenter, NodeId, NotAllowed, PeerIdentity, PeerRefused,
    PeerVerifier, Presenter, Role, SelfSignedVerifier, node_id_hex,
};
/// quinn, for matching on [`quinn::ConnectionError`] inside [`StoqError`].
pub use quinn;
