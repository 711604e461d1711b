#![doc = include_str!("../README.md")]

pub mod app;
pub mod cert;
pub mod dns;
pub mod error;
mod keys;
pub mod log;
pub mod monitor;
pub mod name;
pub mod proven;
pub mod tx;

#[cfg(test)]
mod testkit;

pub use app::{CERTIFICATES_PER_SUBJECT_MAX, CertStatus, TrustApp, TrustConfig, WRITES_PER_TX_MAX};
pub use cert::{Authorities, CertError, Certificate, CertificateRequest, Issuer, SignedRequest};
pub use dns::{
    AdaptiveResolver, DnsRecord, NameLookup, Resolution, SignedNameClaim, StaticTable,
    TraditionalResolver,
};
pub use error::{CertificateFault, HeadFault, Lapsed, NotLogged, RuleError};
pub use log::{
    CertificateLog, ConsistencyProof, HeadWitness, InclusionProof, LogError, LogHead,
    SignedTreeHead,
};
pub use monitor::{HeadVerdict, Monitor, MonitorConfig, MonitorStats, Verdict};
pub use name::{DnsName, NameError};
pub use tx::{
    Finding, FindingKind, Report, Revocation, SignedRevocation, TrustTx, UNLOGGED_GRACE_MS,
};
