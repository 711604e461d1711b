//! Byzantine certificate authorities as decorators over what an honest
//! authority (a genesis validator) answers.
//!
//! The node runs its honest authority code; with an [`AuthorityFault`] its
//! shell passes each certificate it issues and each tree head it signs
//! through [`ByzantineAuthority`], which changes what leaves the node. The
//! authority signs with its real key: this is what the honest nodes'
//! monitors must catch and turn into findings on chain.

use hm_env::Entropy;
use hm_trustchain::log::LogHead;
use hm_trustchain::log::{InclusionProof, SignedTreeHead};
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

/// What the authority does with a certificate it issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Issuance {
    /// Submit it to the log (honest: always).
    pub log: bool,
    /// Check that the requested names are the subject's (honest: always).
    pub check_names: bool,
    /// Issue even after its authority was revoked on chain (honest: never).
    pub ignore_revocation: bool,
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

    /// How to issue the next certificate; `stolen` says whether the request
    /// names a name another subject owns.
    pub fn issuance(&mut self, stolen: bool) -> Issuance {
        let honest = Issuance {
            log: true,
            check_names: true,
            ignore_revocation: true,
        };
        match self.fault {
            AuthorityFault::Unlogged => {
                self.misdeeds += 1;
                Issuance {
                    log: false,
                    ..honest
                }
            }
            AuthorityFault::Forge if stolen => {
                self.misdeeds += 1;
                Issuance {
                    log: false,
                    check_names: false,
                    ..honest
                }
            }
            AuthorityFault::Forge | AuthorityFault::FalseHeads => honest,
        }
    }

    /// What to answer a proof request with, given the answer the node
    /// built (its head already went through [`Self::tree_head`]).
    pub fn proof(
        &mut self,
        answer: Result<(InclusionProof, SignedTreeHead), String>,
    ) -> Result<(InclusionProof, SignedTreeHead), String> {
        match self.fault {
            AuthorityFault::Unlogged => Err("not logged yet; ask again later".into()),
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

#[cfg(test)]
mod tests {
    use super::*;
    use hm_env::mem::SeededEntropy;
    use hm_trustchain::cert::Authorities;

    fn authority(fault: AuthorityFault) -> (ByzantineAuthority<SeededEntropy>, Authorities) {
        let key = SigningKey::generate(&SeededEntropy::new(1, b"authority"));
        let authorities = Authorities::new([key.verifying_key()]);
        (
            ByzantineAuthority::new(fault, key, SeededEntropy::new(2, b"byzantine")),
            authorities,
        )
    }

    fn honest_answer(
        byzantine: &ByzantineAuthority<SeededEntropy>,
    ) -> (InclusionProof, SignedTreeHead) {
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
        assert!(byzantine.issuance(false).log, "it logs honestly");
    }

    #[test]
    fn unlogging_and_forging_authorities_keep_certificates_out_of_the_log() {
        let (mut unlogged, _) = authority(AuthorityFault::Unlogged);
        let issuance = unlogged.issuance(false);
        assert!(!issuance.log && issuance.check_names && issuance.ignore_revocation);
        let honest = honest_answer(&unlogged);
        assert!(unlogged.proof(Ok(honest)).is_err());
        let (mut forger_proofs, _) = authority(AuthorityFault::Forge);
        let honest = honest_answer(&forger_proofs);
        assert_eq!(
            forger_proofs.proof(Ok(honest.clone())).expect("answers").1,
            honest.1,
            "a forger's heads are honest"
        );
        assert_eq!(unlogged.misdeeds, 1);

        let (mut forger, _) = authority(AuthorityFault::Forge);
        let fair = forger.issuance(false);
        assert!(
            fair.log && fair.check_names,
            "an honest request is served honestly"
        );
        let forged = forger.issuance(true);
        assert!(
            !forged.log && !forged.check_names,
            "a stolen name is certified, unlogged"
        );
        assert_eq!(forger.misdeeds, 1);
    }
}
