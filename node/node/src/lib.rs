#![doc = include_str!("../README.md")]

pub mod membership;
mod node;
mod status;

pub use membership::{MembershipConfig, NodeId};
pub use node::{COLUMN_FAMILIES, MEMBERSHIP_MESSAGE_BYTES_MAX, NodeConfig, NodeError, run};
pub use status::{NodeStatus, StatusHandle};
