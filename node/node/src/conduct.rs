//! A node's conduct at the points where a node could misbehave, as
//! capabilities its caller injects: what it presents in STOQ handshakes,
//! what leaves it on the chain protocol, how it seeks and presents its
//! certificate, and — when it is a certificate authority — how it decides
//! on requests and what heads and proofs it signs.
//!
//! [`Conduct::default()`] is the honest node, and the only conduct
//! `hm-node` and every real-node test run: the honest pieces are here and
//! in `hm-stoq`; misbehaving ones live in `hm-faults`, and the simulator
//! passes them in per node (commonware's mocks around an honest engine are
//! the model). No honest code branches on a fault.
//!
//! The certificate authority's issuance policy is a sans-I/O decision
//! ([`AuthorityConduct::decide`]): the shell gathers the facts, the policy
//! says refuse or issue (and whether to log), the shell carries it out.

use std::net::SocketAddrV6;
use std::sync::Arc;

use hm_env::mem::SeededEntropy;
use hm_kernel::block::ProposedBlock;
use hm_kernel::replica::{ChainMessage, Destination};
use hm_kernel::validators::ValidatorSet;
use hm_trustchain::log::{InclusionProof, SignedTreeHead};
use hm_wire::{Hash, SigningKey};

pub use crate::error::{AuthorityError, IssuanceRefusal};

/// A logged certificate's inclusion proof and the signed head it is proved
/// against: what an authority answers a proof request with.
pub type ProvedCertificate = (InclusionProof, SignedTreeHead);

/// Everything a node's conduct is made of; `default()` is honest.
#[derive(Clone)]
pub struct Conduct {
    /// Whose exporter value the node's STOQ identity bindings sign.
    pub presenter: Arc<dyn hm_stoq::Presenter>,
    /// Builds the chain conduct once the chain knows its committee;
    /// `None`: every chain message leaves as the replica made it.
    pub chain: Option<ChainConductFactory>,
    /// Builds the authority conduct of a certificate authority; `None`:
    /// [`HonestAuthority`].
    pub authority: Option<AuthorityConductFactory>,
    /// How the node seeks and presents its certificate.
    pub presentation: Arc<dyn PresentationConduct>,
    /// Builds what a full node's API answers instead of the honest
    /// answers; `None`: the honest answers.
    pub api: Option<ApiConductFactory>,
}

pub type ApiConductFactory = Arc<dyn Fn() -> Box<dyn ApiConduct> + Send + Sync>;

/// What a node's API answers, given the request and the honest answer (a
/// lying full node, in the simulator).
pub trait ApiConduct: Send {
    fn answer(
        &mut self,
        request: &crate::api::ApiRequest,
        honest: crate::api::ApiResponse,
    ) -> crate::api::ApiResponse;
}

impl Default for Conduct {
    fn default() -> Self {
        Conduct {
            presenter: Arc::new(hm_stoq::HonestPresenter),
            chain: None,
            authority: None,
            presentation: Arc::new(HonestPresentation),
            api: None,
        }
    }
}

impl std::fmt::Debug for Conduct {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conduct")
            .field("chain", &self.chain.is_some())
            .field("authority", &self.authority.is_some())
            .field("api", &self.api.is_some())
            .finish_non_exhaustive()
    }
}

/// What a chain conduct is built from: the node's consensus key and the
/// committee, and entropy of its own (drawn from the node's, so a seeded
/// run stays deterministic).
pub struct ChainContext {
    pub key: SigningKey,
    pub chain_id: Hash,
    pub committee: ValidatorSet,
    pub entropy: SeededEntropy,
}

pub type ChainConductFactory = Arc<dyn Fn(ChainContext) -> Box<dyn ChainConduct> + Send + Sync>;

/// A node's conduct on the chain protocol, around an honest replica.
pub trait ChainConduct: Send {
    /// What to send instead of the replica's `message` to `to`. `twin`
    /// builds another valid block for the same height and round as the
    /// given one (only the replica can prove blocks).
    fn outgoing(
        &mut self,
        to: Destination,
        message: ChainMessage,
        twin: &mut dyn FnMut(&ProposedBlock) -> Option<ProposedBlock>,
    ) -> Vec<(Destination, ChainMessage)>;

    /// Sees a message before the replica does; what it returns is sent.
    fn incoming(&mut self, _message: &ChainMessage) -> Vec<(Destination, ChainMessage)> {
        Vec::new()
    }
}

/// What an authority conduct is built from.
pub struct AuthorityContext {
    pub key: SigningKey,
    pub entropy: SeededEntropy,
}

pub type AuthorityConductFactory =
    Arc<dyn Fn(AuthorityContext) -> Box<dyn AuthorityConduct> + Send + Sync>;

/// The facts about one certificate request an authority decides on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuanceFacts {
    /// This authority was revoked on chain.
    pub revoked: bool,
    /// A name in the request that another subject owns.
    pub stolen_name: Option<String>,
}

/// An authority's decision on a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IssuanceDecision {
    /// Refuse, with the reason the requester is told.
    Refuse(IssuanceRefusal),
    /// Issue; `log`: submit it to the certificate log.
    Issue { log: bool },
}

/// A certificate authority's conduct: its issuance policy, and the tree
/// heads and proofs it hands out.
pub trait AuthorityConduct: Send {
    fn decide(&mut self, facts: &IssuanceFacts) -> IssuanceDecision;

    /// The signed head to answer with, given the honest one.
    fn tree_head(&mut self, honest: SignedTreeHead) -> SignedTreeHead {
        honest
    }

    /// The answer to a proof request for `fingerprint`, given the honest
    /// one.
    fn proof(
        &mut self,
        _fingerprint: &Hash,
        honest: Result<ProvedCertificate, AuthorityError>,
    ) -> Result<ProvedCertificate, AuthorityError> {
        honest
    }
}

/// The honest issuance policy: a revoked authority issues nothing, a name
/// is certified only to its owner, and every certificate is logged.
#[derive(Debug, Clone, Copy, Default)]
pub struct HonestAuthority;

impl AuthorityConduct for HonestAuthority {
    fn decide(&mut self, facts: &IssuanceFacts) -> IssuanceDecision {
        if facts.revoked {
            return IssuanceDecision::Refuse(IssuanceRefusal::AuthorityRevoked);
        }
        if let Some(name) = &facts.stolen_name {
            return IssuanceDecision::Refuse(IssuanceRefusal::NameTaken { name: name.clone() });
        }
        IssuanceDecision::Issue { log: true }
    }
}

/// How a node seeks its certificate and when it presents one.
pub trait PresentationConduct: Send + Sync {
    /// The authorities to ask (honest: every one given).
    fn authorities(&self, all: Vec<(Hash, SocketAddrV6)>) -> Vec<(Hash, SocketAddrV6)> {
        all
    }

    /// Whether to ask for a certificate at `now_ms` (honest: whenever one
    /// is needed).
    fn asks_at(&self, _now_ms: u64) -> bool {
        true
    }

    /// Present an issued certificate before its authority proved it logged
    /// (honest: never).
    fn presents_unproven(&self) -> bool {
        false
    }
}

/// Asks every authority, presents only proven certificates.
#[derive(Debug, Clone, Copy, Default)]
pub struct HonestPresentation;

impl PresentationConduct for HonestPresentation {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_honest_authority_refuses_when_revoked_or_for_a_stolen_name_and_logs_what_it_issues() {
        let mut policy = HonestAuthority;
        let clean = IssuanceFacts {
            revoked: false,
            stolen_name: None,
        };
        assert_eq!(policy.decide(&clean), IssuanceDecision::Issue { log: true });
        let revoked = IssuanceFacts {
            revoked: true,
            ..clean.clone()
        };
        assert_eq!(
            policy.decide(&revoked),
            IssuanceDecision::Refuse(IssuanceRefusal::AuthorityRevoked)
        );
        let stolen = IssuanceFacts {
            stolen_name: Some("n3.mesh".into()),
            ..clean
        };
        assert_eq!(
            policy.decide(&stolen),
            IssuanceDecision::Refuse(IssuanceRefusal::NameTaken {
                name: "n3.mesh".into()
            })
        );
    }

    #[test]
    fn honest_presentation_asks_everyone_always_and_presents_only_proven_certificates() {
        let presentation = HonestPresentation;
        let all = vec![(Hash([1; 32]), "[::1]:7000".parse().expect("addr"))];
        assert_eq!(presentation.authorities(all.clone()), all);
        assert!(presentation.asks_at(0));
        assert!(!presentation.presents_unproven());
    }
}
