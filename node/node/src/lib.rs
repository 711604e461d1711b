#![doc = include_str!("../README.md")]

pub mod anchors;
mod answer;
pub mod api;
pub mod app;
pub mod bootstrap;
pub mod chain;
pub mod conduct;
pub mod error;
pub mod ids;
pub mod light_agent;
mod light_service;
mod link;
pub mod links;
pub mod membership;
mod node;
pub mod proven;
mod status;
#[cfg(test)]
mod test_chain;
pub mod trust;

pub use api::{API_PROTOCOL, ApiClient, ApiClientError, ApiRequest, ApiResponse};
pub use chain::NodeRole;
pub use chain::{CHAIN_PROTOCOL, ChainConfig};
pub use membership::{MembershipConfig, NodeId};
pub use node::{
    COLUMN_FAMILIES, DEFAULT_ZONE, MEMBERSHIP_MESSAGE_BYTES_MAX, MEMBERSHIP_PROTOCOL, NodeConfig,
    NodeError, load_or_create_identity, provision_identity, run, run_with_conduct,
};
pub use status::{
    AcceptedAnswer, COMMIT_LATENCY_BUCKETS_MS, ChainStatus, LIGHT_ANSWERS_SHOWN_MAX,
    LIGHT_HEADERS_SHOWN_MAX, LightStatus, NodeStatus, StatusHandle, TrustStatus,
    latency_quantile_ms,
};
