//! Byzantine certificate authorities as decorators over what an honest
//! authority (a genesis validator) answers.
//!
//! The node runs its honest authority code; with an [`AuthorityFault`] its
//! shell passes each certificate it issues and each tree head it signs
//! through [`ByzantineAuthority`], which changes what leaves the node. The
//! authority signs with its real key: this is what the honest nodes'
//! monitors must catch and turn into findings on chain.

use std::net::SocketAddrV6;
use std::sync::Arc;

use hm_env::Entropy;
use hm_env::mem::SeededEntropy;
use hm_node::conduct::{
    AuthorityConduct, AuthorityConductFactory, AuthorityContext, AuthorityError, IssuanceDecision,
    IssuanceFacts, IssuanceRefusal, PresentationConduct, ProvedCertificate,
};
use hm_trustchain::log::LogHead;
use hm_trustchain::log::SignedTreeHead;
use hm_wire::{Hash, SigningKey};
use serde::{Deserialize, Serialize};

/// What a Byzantine authority does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuthorityFault {
    /// Issues certificates but never logs them, and answers proof requests
    /// with "not logged": its subjects must find another authority, and the
    /// unlogged certificate, once presented, is evidence against it.
    Unlogged,
    /// Logs honestly but signs tree heads whose root is not the log's: an
    /// equivocating log, caught by every node whose own log covers the size.
    FalseHeads,
    /// Certifies names to subjects that do not own them (for colluding
    /// nodes that present the certificates), without logging those; other
    /// requests it serves honestly, so only the forgeries give it away.
    Forge,
}

impl AuthorityFault {
    pub const ALL: [AuthorityFault; 3] = [
        AuthorityFault::Unlogged,
        AuthorityFault::FalseHeads,
        AuthorityFault::Forge,
    ];
}

/// One Byzantine authority's rewriter.
pub struct ByzantineAuthority<E: Entropy> {
    fault: AuthorityFault,
    key: SigningKey,
    entropy: E,
    /// Certificates issued without logging, false heads signed.
    pub misdeeds: u64,
}

impl<E: Entropy> ByzantineAuthority<E> {
    pub fn new(fault: AuthorityFault, key: SigningKey, entropy: E) -> Self {
        ByzantineAuthority {
            fault,
            key,
            entropy,
            misdeeds: 0,
        }
    }

    pub fn fault(&self) -> AuthorityFault {
        self.fault
    }

    /// Its issuance policy: it issues even after its revocation on chain;
    /// `Unlogged` never logs, `Forge` certifies stolen names unlogged (and
    /// serves other requests honestly), `FalseHeads` issues honestly.
    pub fn decide(&mut self, facts: &IssuanceFacts) -> IssuanceDecision {
        match (self.fault, &facts.stolen_name) {
            (AuthorityFault::Forge, Some(_)) => {
                self.misdeeds += 1;
                IssuanceDecision::Issue { log: false }
            }
            (_, Some(name)) => {
                IssuanceDecision::Refuse(IssuanceRefusal::NameTaken { name: name.clone() })
            }
            (AuthorityFault::Unlogged, None) => {
                self.misdeeds += 1;
                IssuanceDecision::Issue { log: false }
            }
            (AuthorityFault::Forge | AuthorityFault::FalseHeads, None) => {
                IssuanceDecision::Issue { log: true }
            }
        }
    }

    /// What to answer a proof request with, given the answer the node
    /// built (its head already went through [`Self::tree_head`]).
    pub fn proof(
        &mut self,
        fingerprint: &Hash,
        answer: Result<ProvedCertificate, AuthorityError>,
    ) -> Result<ProvedCertificate, AuthorityError> {
        match self.fault {
            AuthorityFault::Unlogged => Err(AuthorityError::NotLogged {
                fingerprint: *fingerprint,
            }),
            AuthorityFault::FalseHeads | AuthorityFault::Forge => answer,
        }
    }

    /// What to answer a request for the authority's signed tree head with,
    /// given the honest head.
    pub fn tree_head(&mut self, honest: SignedTreeHead) -> SignedTreeHead {
        if self.fault != AuthorityFault::FalseHeads || honest.head.size == 0 {
            return honest;
        }
        self.misdeeds += 1;
        let mut root = hm_wire::hash("hm/byzantine/false-head", honest.head.root.as_bytes());
        if root == honest.head.root {
            root = Hash([0xfa; 32]);
        }
        SignedTreeHead::sign(
            LogHead {
                size: honest.head.size,
                root,
            },
            &self.key,
            &self.entropy,
        )
    }
}

impl<E: Entropy + Send> AuthorityConduct for ByzantineAuthority<E> {
    fn decide(&mut self, facts: &IssuanceFacts) -> IssuanceDecision {
        ByzantineAuthority::decide(self, facts)
    }

    fn tree_head(&mut self, honest: SignedTreeHead) -> SignedTreeHead {
        ByzantineAuthority::tree_head(self, honest)
    }

    fn proof(
        &mut self,
        fingerprint: &Hash,
        honest: Result<ProvedCertificate, AuthorityError>,
    ) -> Result<ProvedCertificate, AuthorityError> {
        ByzantineAuthority::proof(self, fingerprint, honest)
    }
}

/// The conduct factory of a certificate authority with `fault`, for
/// `hm_node::conduct::Conduct::authority`.
pub fn authority_conduct(fault: AuthorityFault) -> AuthorityConductFactory {
    Arc::new(move |context: AuthorityContext| {
        tracing::warn!(?fault, "byzantine: this certificate authority misbehaves");
        Box::new(ByzantineAuthority::<SeededEntropy>::new(
            fault,
            context.key,
            context.entropy,
        ))
    })
}

/// A node colluding with a forging authority: it asks only that authority,
/// not before `after_ms` (monotone, since the node started), and presents
/// whatever it is issued at once, proven logged or not.
#[derive(Debug, Clone)]
pub struct ForgedPresentation {
    pub authority: (Hash, SocketAddrV6),
    pub after_ms: u64,
}

impl PresentationConduct for ForgedPresentation {
    fn authorities(&self, _all: Vec<(Hash, SocketAddrV6)>) -> Vec<(Hash, SocketAddrV6)> {
        vec![self.authority]
    }

    fn asks_at(&self, now_ms: u64) -> bool {
        now_ms >= self.after_ms
    }

    fn presents_unproven(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hm_env::mem::SeededEntropy;
    use hm_trustchain::cert::Authorities;
    use hm_trustchain::log::InclusionProof;

    fn authority(fault: AuthorityFault) -> (ByzantineAuthority<SeededEntropy>, Authorities) {
        let key = SigningKey::generate(&SeededEntropy::new(1, b"authority"));
        let authorities = Authorities::new([key.verifying_key()]);
        (
            ByzantineAuthority::new(fault, key, SeededEntropy::new(2, b"byzantine")),
            authorities,
        )
    }

    fn facts(stolen: Option<&str>) -> IssuanceFacts {
        IssuanceFacts {
            revoked: false,
            stolen_name: stolen.map(str::to_string),
        }
    }

    #[test]
    fn a_forged_presentation_asks_only_its_authority_when_due_and_presents_unproven() {
        let authority = (Hash([7; 32]), "[::1]:7000".parse().expect("addr"));
        let forged = ForgedPresentation {
            authority,
            after_ms: 5_000,
        };
        assert_eq!(
            forged.authorities(vec![(Hash([1; 32]), authority.1)]),
            vec![authority]
        );
        assert!(!forged.asks_at(4_999) && forged.asks_at(5_000));
        assert!(forged.presents_unproven());
    }

    fn honest_answer(byzantine: &ByzantineAuthority<SeededEntropy>) -> ProvedCertificate {
        let head = LogHead {
            size: 3,
            root: hm_wire::hash("test", b"root"),
        };
        (
            InclusionProof {
                leaf_index: 1,
                tree_size: 3,
                path: vec![],
            },
            SignedTreeHead::sign(head, &byzantine.key, &byzantine.entropy),
        )
    }

    #[test]
    fn false_heads_are_validly_signed_lies_about_the_same_size() {
        let (mut byzantine, authorities) = authority(AuthorityFault::FalseHeads);
        let honest = honest_answer(&byzantine);
        let head = byzantine.tree_head(honest.1.clone());
        head.verify(&authorities).expect("signed by the authority");
        assert_eq!(head.head.size, honest.1.head.size);
        assert_ne!(head.head.root, honest.1.head.root);
        assert_eq!(
            byzantine.decide(&facts(None)),
            IssuanceDecision::Issue { log: true },
            "it logs honestly"
        );
    }

    #[test]
    fn unlogging_and_forging_authorities_keep_certificates_out_of_the_log() {
        let (mut unlogged, _) = authority(AuthorityFault::Unlogged);
        let revoked = IssuanceFacts {
            revoked: true,
            stolen_name: None,
        };
        assert_eq!(
            unlogged.decide(&revoked),
            IssuanceDecision::Issue { log: false },
            "revoked, it still issues, and logs nothing"
        );
        assert_eq!(
            unlogged.decide(&facts(Some("n1.mesh"))),
            IssuanceDecision::Refuse(IssuanceRefusal::NameTaken {
                name: "n1.mesh".into()
            })
        );
        let honest = honest_answer(&unlogged);
        let fingerprint = Hash([7; 32]);
        assert_eq!(
            unlogged.proof(&fingerprint, Ok(honest)),
            Err(AuthorityError::NotLogged { fingerprint }),
            "an unlogging authority denies every proof"
        );
        let (mut forger_proofs, _) = authority(AuthorityFault::Forge);
        let honest = honest_answer(&forger_proofs);
        assert_eq!(
            forger_proofs
                .proof(&Hash([7; 32]), Ok(honest.clone()))
                .expect("answers")
                .1,
            honest.1,
            "a forger's heads are honest"
        );
        assert_eq!(unlogged.misdeeds, 1);

        let (mut forger, _) = authority(AuthorityFault::Forge);
        assert_eq!(
            forger.decide(&facts(None)),
            IssuanceDecision::Issue { log: true },
            "an honest request is served honestly"
        );
        assert_eq!(
            forger.decide(&facts(Some("n1.mesh"))),
            IssuanceDecision::Issue { log: false },
            "a stolen name is certified, unlogged"
        );
        assert_eq!(forger.misdeeds, 1);
    }
}
