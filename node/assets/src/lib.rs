#![doc = include_str!("../README.md")]

pub mod model;
pub mod registry;
pub mod scheduler;

pub use model::{
    Asset, AssetError, AssetId, AssetKind, Attributes, Constraint, LeaseRequest, NodeId, Privacy,
    PrivacyLevel, RequestItem, Standing, Tenant,
};
pub use registry::{
    AssetApp, AssetOp, AssetRecord, AssetSpec, AssetTx, Lease, LeaseRecord, Standings, asset_id,
    lease_id,
};
pub use scheduler::{
    Filter, LeaseId, Part, Placement, ReserveError, Reserved, Scheduler, SchedulerError, Unmet,
};
