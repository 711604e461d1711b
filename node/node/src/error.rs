//! Why a node stops: the one error type `hm_node::run` returns. A leaf
//! module (the node, chain and trust shells all return it). Each variant
//! reads as a sentence that tells the operator what to do next.

use hm_env::DiskError;
use hm_kernel::consensus::SignerError;
use hm_kernel::genesis::GenesisError;
use hm_kernel::mempool::MempoolError;
use hm_kernel::proof::SpaceError;
use hm_kernel::replica::ReplicaError;
use hm_stoq::StoqError;
use hm_trustchain::cert::CertError;
use hm_trustchain::name::NameError;
use hm_wire::Hash;

use crate::membership::MembershipConfigError;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(
        "the node's disk failed at boot ({0}); check the data directory's filesystem and permissions"
    )]
    Disk(#[from] DiskError),
    #[error(
        "the stored identity key is unreadable ({0}); restore the data directory from a backup or start with an empty one to create a new identity"
    )]
    Identity(String),
    #[error("the transport could not start: {0}")]
    Transport(#[from] StoqError),
    #[error("the membership configuration is invalid: {0}; fix the node's [membership] settings")]
    Membership(#[from] MembershipConfigError),
    #[error(
        "the genesis is invalid: {0}; start the node with the genesis file of the network it joins"
    )]
    Genesis(#[from] GenesisError),
    #[error("the TrustChain zone is not a DNS name: {0}; fix [chain.trust] zone in the config")]
    Zone(NameError),
    #[error(
        "this validator's space plot cannot be built: {0}; the genesis's proof parameters are out of range — use the network's genesis file"
    )]
    Plot(#[from] SpaceError),
    #[error("the consensus signer's state cannot be opened: {0}")]
    Signer(#[from] SignerError),
    /// The chain on this node's disk does not open or replay (a replay
    /// mismatch names the height and both roots).
    #[error("the chain service cannot start: {0}")]
    Chain(#[from] ReplicaError),
    #[error("{0}; its memory is ahead of its disk, so the chain service stops")]
    ReplicaFailed(String),
    #[error(
        "the chain service stopped: {0}; the node stops with it, so that its supervisor \
         (systemd's Restart=on-failure) starts it again from its disk"
    )]
    ChainStopped(String),
}

impl NodeError {
    /// A configuration the node refuses: starting again without changing
    /// it fails the same way, so a supervisor should not restart it.
    pub fn is_refused_configuration(&self) -> bool {
        matches!(
            self,
            NodeError::Membership(_)
                | NodeError::Genesis(_)
                | NodeError::Zone(_)
                | NodeError::Plot(_)
        )
    }
}

/// Why a certificate authority refused a call; the requester is shown the
/// sentence (over the API it travels as text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthorityError {
    #[error("this node is not a certificate authority; ask a genesis validator")]
    NotAnAuthority,
    #[error("certificate request refused: {0}")]
    BadRequest(#[from] CertError),
    /// The authority's issuance policy said no.
    #[error("{0}")]
    Refused(#[from] IssuanceRefusal),
    #[error("cannot log the certificate: {0}; ask again in a moment")]
    CannotLog(#[from] MempoolError),
    #[error("certificate {fingerprint} is not logged (yet); ask again after the next block")]
    NotLogged { fingerprint: Hash },
}

/// Why an issuance policy refuses a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IssuanceRefusal {
    #[error("this authority is revoked; ask another genesis validator")]
    AuthorityRevoked,
    #[error("{name} belongs to another node; request a name nobody holds")]
    NameTaken { name: String },
}
