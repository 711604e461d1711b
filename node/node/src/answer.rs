//! API answering: what each `hm/api/1` request gets. Sans-I/O: the answer
//! is decided from a view of the node ([`ApiNode`]) and the few actions a
//! request may start (submit, issue, prove, renew). The chain service
//! implements the view over its replica, trust state and agent; the tests
//! below drive [`answer`] with a fake node.
//!
//! Owns the answers' shape, bounds and wording (a refusal says what to do
//! next). Must not know about connections, tasks or time: the API server
//! (`api.rs`) moves the bytes, the chain service owns the state.

use std::collections::BTreeSet;

use hm_kernel::block::{Block, Height, Transaction};
use hm_kernel::chain::ChainError;
use hm_kernel::light::Misbehaviour;
use hm_kernel::replica::{MisbehaviourVerdict, TransactionStatus};
use hm_kernel::state::ModuleProof;
use hm_trustchain::app::CertStatus;
use hm_trustchain::cert::{Certificate, Issuer, SignedRequest};
use hm_trustchain::dns::DnsRecord;
use hm_trustchain::log::{InclusionProof, SignedTreeHead};
use hm_trustchain::name::DnsName;
use hm_wire::Hash;

use crate::api::{
    API_HEADERS_BYTES_MAX, API_HEADERS_MAX, API_PEERS_MAX, ApiRequest, ApiResponse, BlockSummary,
    CertificateSummary, CertifiedHeader, NodeSummary, PeerSummary,
};
use crate::conduct::ProvedCertificate;
use crate::error::AuthorityError;
use crate::trust::AgentStatus;

/// The peers a node knows, by what it knows them as.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct KnownPeers {
    /// Alive in the membership view.
    pub members: BTreeSet<Hash>,
    /// Active overlay neighbours.
    pub overlay: BTreeSet<Hash>,
    /// Open chain links.
    pub chain_links: BTreeSet<Hash>,
    /// The chain's validators.
    pub validators: BTreeSet<Hash>,
}

/// What answering needs of a node: reads of its committed state, and the
/// actions a request may start. Errors of the actions are the sentence
/// the client is shown.
pub(crate) trait ApiNode {
    fn node_id(&self) -> Hash;
    /// The committed height (0 before the first block).
    fn height(&self) -> Height;
    /// The committed head's hash; only asked when the height is above 0.
    fn head_hash(&self) -> Hash;
    fn is_validator(&self) -> bool;
    /// The bootstrap phase the node's trust state is in (0..=3).
    fn phase(&self) -> u8;
    /// The DNS name the node claims, if configured.
    fn name(&self) -> Option<String>;
    /// A key of the committed key-value state.
    fn value(&self, key: &[u8]) -> Option<Vec<u8>>;
    /// A module's committed value for `key` with its proof against the
    /// committed state root; `None` for an unknown module.
    fn prove_state(&self, module: u8, key: &[u8]) -> Option<(Option<Vec<u8>>, ModuleProof)>;
    /// A committed block from the node's store.
    fn block(&self, height: Height) -> Result<Option<Block>, ChainError>;
    /// A committed block's header and commit certificate from the node's
    /// store.
    fn certified_header(&self, height: Height) -> Result<Option<CertifiedHeader>, ChainError>;
    fn transaction_status(&self, id: &Hash) -> TransactionStatus;
    /// The subject's current, usable certificate in the committed state.
    fn current_certificate(&self, subject: &Hash) -> Option<Hash>;
    /// A logged certificate's inclusion proof in the log of `tree_size`, or
    /// the sentence saying why there is none.
    fn inclusion_at(&self, fingerprint: &Hash, tree_size: u64) -> Result<InclusionProof, String>;
    /// A certificate of the committed log, with where it stands.
    fn certificate(&self, fingerprint: &Hash) -> Option<(Certificate, CertStatus)>;
    /// A name's committed DNS record.
    fn record(&self, name: &DnsName) -> Option<DnsRecord>;
    /// Certificates in the committed transparency log.
    fn log_size(&self) -> u64;
    /// The TrustChain agent's status; `None` when the node runs no agent.
    fn agent(&self) -> Option<AgentStatus>;
    fn peers(&self) -> KnownPeers;

    /// Admits transactions; per transaction its id or why it was refused.
    fn submit(&mut self, transactions: Vec<Transaction>) -> Vec<Result<Hash, String>>;
    /// Issues a certificate (a node acting as an authority).
    fn issue_certificate(&mut self, request: SignedRequest) -> Result<Certificate, AuthorityError>;
    /// A logged certificate's inclusion proof and the head it is proved to.
    fn prove_certificate(
        &mut self,
        fingerprint: &Hash,
    ) -> Result<ProvedCertificate, AuthorityError>;
    /// The log head, signed by this node as an authority.
    fn signed_head(&mut self) -> Result<SignedTreeHead, AuthorityError>;
    /// Starts renewing the node's certificate: the one it replaces, or why
    /// not; `None` when the node runs no agent.
    fn renew_certificate(&mut self) -> Option<Result<Hash, &'static str>>;
    /// Checks a light client's misbehaviour evidence against the node's
    /// own chain and pools what the chain can commit; the error is the
    /// sentence the client is shown.
    fn report_misbehaviour(
        &mut self,
        evidence: &Misbehaviour,
    ) -> Result<MisbehaviourVerdict, String>;
}

/// The answer to `request`.
pub(crate) fn answer(node: &mut impl ApiNode, request: ApiRequest) -> ApiResponse {
    match request {
        ApiRequest::Submit(transactions) => ApiResponse::Submitted(node.submit(transactions)),
        ApiRequest::Get { key } => ApiResponse::Value {
            height: node.height(),
            value: node.value(&key),
        },
        ApiRequest::Head => ApiResponse::Head {
            height: node.height(),
            head: head(node),
            validator: node.is_validator(),
        },
        ApiRequest::RequestCertificate(request) => match node.issue_certificate(*request) {
            Ok(certificate) => ApiResponse::Certificate(Box::new(certificate)),
            Err(error) => ApiResponse::Error(error.to_string()),
        },
        ApiRequest::CertificateProof { fingerprint } => {
            match node.prove_certificate(&fingerprint) {
                Ok((proof, head)) => ApiResponse::Proof {
                    proof: Box::new(proof),
                    head: Box::new(head),
                },
                Err(error) => ApiResponse::Error(error.to_string()),
            }
        }
        ApiRequest::TreeHead => match node.signed_head() {
            Ok(head) => ApiResponse::TreeHead(Box::new(head)),
            Err(error) => ApiResponse::Error(error.to_string()),
        },
        ApiRequest::Resolve { name } => match DnsName::parse(&name) {
            Ok(parsed) => ApiResponse::Record(node.record(&parsed).map(Box::new)),
            Err(error) => ApiResponse::Error(format!("{name:?} is not a DNS name: {error}")),
        },
        ApiRequest::Status => ApiResponse::Status(Box::new(node_summary(node))),
        ApiRequest::Block { height } => block_answer(node, height),
        ApiRequest::Headers { from, count } => headers_answer(node, from, count),
        ApiRequest::ProveState { module, keys } => prove_answer(node, module, &keys),
        ApiRequest::CurrentCertificates { subjects } => ApiResponse::CurrentCertificates(
            subjects
                .iter()
                .map(|subject| node.current_certificate(subject))
                .collect(),
        ),
        ApiRequest::InclusionAt {
            fingerprint,
            tree_size,
        } => match node.inclusion_at(&fingerprint, tree_size) {
            Ok(proof) => ApiResponse::Inclusion(Box::new(proof)),
            Err(error) => ApiResponse::Error(error),
        },
        ApiRequest::Peers => ApiResponse::Peers(peer_summaries(node.node_id(), &node.peers())),
        ApiRequest::CertificateInfo { fingerprint } => certificate_answer(node, fingerprint),
        ApiRequest::TransactionStatus { ids } => ApiResponse::TransactionStatus {
            height: node.height(),
            statuses: ids.iter().map(|id| node.transaction_status(id)).collect(),
        },
        ApiRequest::RenewCertificate => match node.renew_certificate() {
            None => ApiResponse::Error(
                "this node runs no TrustChain agent (no [chain.trust] in its config)".into(),
            ),
            Some(Ok(replacing)) => ApiResponse::Renewing { replacing },
            Some(Err(reason)) => ApiResponse::Error(reason.into()),
        },
        ApiRequest::ReportMisbehaviour { evidence } => match Misbehaviour::decode(&evidence) {
            Ok(evidence) => match node.report_misbehaviour(&evidence) {
                Ok(verdict) => ApiResponse::MisbehaviourTaken {
                    conflict: verdict.conflict.to_string(),
                    convicted: verdict.convicted,
                    suspects: verdict.suspects,
                    pooled: u32::try_from(verdict.pooled).unwrap_or(u32::MAX),
                },
                Err(error) => ApiResponse::Error(error),
            },
            Err(error) => ApiResponse::Error(format!(
                "{error}; send the evidence the light client kept, encoded whole"
            )),
        },
    }
}

/// Every asked key proven at one height (a direct call with more keys than
/// the wire allows is refused the same way).
fn prove_answer(node: &impl ApiNode, module: u8, keys: &[Vec<u8>]) -> ApiResponse {
    if !(1..=crate::api::API_PROVE_KEYS_MAX).contains(&keys.len()) {
        return ApiResponse::Error(format!(
            "{} keys in one proof request; ask for 1 to {}",
            keys.len(),
            crate::api::API_PROVE_KEYS_MAX
        ));
    }
    let mut entries = Vec::with_capacity(keys.len());
    for key in keys {
        match node.prove_state(module, key) {
            Some((value, proof)) => entries.push(crate::api::ProvedEntry { value, proof }),
            None => {
                return ApiResponse::Error(format!(
                    "this node has no state module {module} (0 is key-value, 1 is TrustChain)"
                ));
            }
        }
    }
    ApiResponse::ProvedState {
        height: node.height(),
        entries,
    }
}

fn head(node: &impl ApiNode) -> Option<Hash> {
    (node.height() > 0).then(|| node.head_hash())
}

fn node_summary(node: &impl ApiNode) -> NodeSummary {
    let agent = node.agent();
    NodeSummary {
        node_id: node.node_id(),
        validator: node.is_validator(),
        light: false,
        height: node.height(),
        head: head(node),
        phase: node.phase(),
        certificate: agent.as_ref().and_then(|agent| agent.certificate),
        certificate_chain_issued: agent.as_ref().is_some_and(|agent| agent.chain_issued),
        missing_for_next_phase: agent
            .as_ref()
            .and_then(|agent| agent.missing)
            .map(str::to_string),
        log_size: node.log_size(),
        name: node.name(),
    }
}

fn block_answer(node: &impl ApiNode, height: Height) -> ApiResponse {
    let top = node.height();
    if height == 0 || height > top {
        return ApiResponse::Error(if top == 0 {
            format!("no block at height {height}; nothing is committed yet")
        } else {
            format!("no block at height {height}; committed heights are 1..={top}")
        });
    }
    match node.block(height) {
        Ok(Some(block)) => ApiResponse::Block(Box::new(block_summary(height, &block))),
        Ok(None) => ApiResponse::Error(format!(
            "block {height} is not stored on this node (pruned or not yet synced); ask a validator"
        )),
        Err(error) => ApiResponse::Error(format!(
            "cannot read block {height} from this node's disk: {error}; its operator should check the disk"
        )),
    }
}

fn headers_answer(node: &impl ApiNode, from: Height, count: u16) -> ApiResponse {
    let top = node.height();
    if from == 0 || from > top {
        return ApiResponse::Error(if top == 0 {
            format!("no header at height {from}; nothing is committed yet")
        } else {
            format!("no header at height {from}; committed heights are 1..={top}")
        });
    }
    let wanted = usize::from(count).clamp(1, API_HEADERS_MAX) as u64;
    let last = top.min(from.saturating_add(wanted - 1));
    let mut headers = Vec::new();
    let mut bytes = 0;
    for height in from..=last {
        let certified = match node.certified_header(height) {
            Ok(Some(certified)) => certified,
            Ok(None) if headers.is_empty() => {
                return ApiResponse::Error(format!(
                    "block {height} is not stored on this node (pruned or not yet synced); ask another full node"
                ));
            }
            Err(error) if headers.is_empty() => {
                return ApiResponse::Error(format!(
                    "cannot read block {height} from this node's disk: {error}; its operator should check the disk"
                ));
            }
            // What was read so far is still a valid answer.
            Ok(None) | Err(_) => break,
        };
        bytes += hm_wire::encoded_len(&certified);
        if !headers.is_empty() && bytes > API_HEADERS_BYTES_MAX {
            break;
        }
        headers.push(certified);
    }
    ApiResponse::Headers(headers)
}

fn block_summary(height: Height, block: &Block) -> BlockSummary {
    BlockSummary {
        height,
        hash: block.header.hash(),
        round: block.header.round,
        previous_hash: block.header.previous_hash,
        timestamp_ms: block.header.timestamp_ms,
        transactions: block.body.transactions.len() as u64,
        evidence: block.body.evidence.len() as u64,
        state_root: block.header.state_root,
        log_size: block.header.log_head.size,
        encoded_bytes: hm_wire::encoded_len(block) as u64,
    }
}

/// Every peer the node knows but itself, in id order, at most
/// [`API_PEERS_MAX`].
fn peer_summaries(me: Hash, peers: &KnownPeers) -> Vec<PeerSummary> {
    let mut ids: BTreeSet<Hash> = peers.members.union(&peers.overlay).copied().collect();
    ids.extend(peers.chain_links.iter().copied());
    ids.remove(&me);
    ids.into_iter()
        .take(API_PEERS_MAX)
        .map(|node_id| PeerSummary {
            node_id,
            member: peers.members.contains(&node_id),
            overlay: peers.overlay.contains(&node_id),
            chain_link: peers.chain_links.contains(&node_id),
            validator: peers.validators.contains(&node_id),
        })
        .collect()
}

fn certificate_answer(node: &impl ApiNode, fingerprint: Option<Hash>) -> ApiResponse {
    let fingerprint = match fingerprint {
        Some(fingerprint) => fingerprint,
        None => match node.agent() {
            None => {
                return ApiResponse::Error(
                    "this node runs no TrustChain agent (no [chain.trust] in its config), so it holds no certificate; name one by fingerprint".into(),
                );
            }
            Some(agent) => match agent.certificate {
                Some(fingerprint) => fingerprint,
                None => {
                    return ApiResponse::Error(
                        "this node holds no logged certificate yet (bootstrap phase 0); ask again once it reaches phase 1".into(),
                    );
                }
            },
        },
    };
    let Some((certificate, status)) = node.certificate(&fingerprint) else {
        return ApiResponse::Error(format!(
            "no certificate {fingerprint} in this node's committed log"
        ));
    };
    let (authority, issued_at_height) = match certificate.issuer {
        Issuer::Authority(id) => (Some(id), None),
        Issuer::Chain { height } => (None, Some(height)),
    };
    ApiResponse::CertificateInfo(Box::new(CertificateSummary {
        fingerprint,
        subject: certificate.subject(),
        names: certificate
            .dns_names()
            .iter()
            .map(ToString::to_string)
            .collect(),
        not_before_ms: certificate.not_before_ms,
        not_after_ms: certificate.not_after_ms,
        authority,
        issued_at_height,
        log_index: status.log_index,
        revoked: status.revoked,
        issuer_revoked: status.issuer_revoked,
        proven_at: None,
    }))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use hm_env::DiskError;
    use hm_env::mem::SeededEntropy;
    use hm_trustchain::cert::CertificateRequest;

    use super::*;

    /// A node whose state is whatever the test sets; actions are recorded.
    #[derive(Default)]
    struct FakeNode {
        me: Hash,
        height: Height,
        validator: bool,
        phase: u8,
        kv: BTreeMap<Vec<u8>, Vec<u8>>,
        /// Heights the store holds; a height in `unreadable` fails to read.
        stored: BTreeSet<Height>,
        unreadable: BTreeSet<Height>,
        committed: BTreeMap<Hash, Height>,
        pending: BTreeSet<Hash>,
        certificates: BTreeMap<Hash, (Certificate, CertStatus)>,
        agent: Option<AgentStatus>,
        peers: KnownPeers,
        submitted: Vec<Transaction>,
        renewals: usize,
        /// What `certified_header` returns per height.
        headers: BTreeMap<Height, CertifiedHeader>,
        /// Module trees for `prove_state` (module 0 holds `kv`).
        proved: BTreeMap<u8, hm_kernel::state::StateTree>,
        /// Misbehaviour evidence that reached the node.
        misbehaviour_reported: usize,
    }

    impl ApiNode for FakeNode {
        fn node_id(&self) -> Hash {
            self.me
        }
        fn height(&self) -> Height {
            self.height
        }
        fn head_hash(&self) -> Hash {
            assert!(self.height > 0, "the head is only asked for above height 0");
            Hash([self.height as u8; 32])
        }
        fn is_validator(&self) -> bool {
            self.validator
        }
        fn phase(&self) -> u8 {
            self.phase
        }
        fn name(&self) -> Option<String> {
            Some("n1.mesh".into())
        }
        fn value(&self, key: &[u8]) -> Option<Vec<u8>> {
            self.kv.get(key).cloned()
        }
        fn current_certificate(&self, subject: &Hash) -> Option<Hash> {
            self.certificates
                .iter()
                .find(|(_, (certificate, status))| {
                    certificate.subject() == *subject && status.is_usable()
                })
                .map(|(fingerprint, _)| *fingerprint)
        }
        fn inclusion_at(
            &self,
            fingerprint: &Hash,
            tree_size: u64,
        ) -> Result<InclusionProof, String> {
            match self.certificates.get(fingerprint) {
                Some((_, status)) if status.log_index < tree_size => Ok(InclusionProof {
                    leaf_index: status.log_index,
                    tree_size,
                    path: Vec::new(),
                }),
                _ => Err(format!(
                    "certificate {fingerprint} is not in this node's log"
                )),
            }
        }
        fn block(&self, height: Height) -> Result<Option<Block>, ChainError> {
            if self.unreadable.contains(&height) {
                return Err(ChainError::Disk(DiskError::Corrupted {
                    cf: "blocks".into(),
                    key_hex: format!("{height:016x}"),
                }));
            }
            // No stored block is needed by these tests: a summary of a real
            // block is exercised by the real-process tests (`hm block`).
            assert!(!self.stored.contains(&height), "tests store no blocks");
            Ok(None)
        }
        fn certified_header(&self, height: Height) -> Result<Option<CertifiedHeader>, ChainError> {
            if self.unreadable.contains(&height) {
                return Err(ChainError::Disk(DiskError::Corrupted {
                    cf: "blocks".into(),
                    key_hex: format!("{height:016x}"),
                }));
            }
            Ok(self.headers.get(&height).cloned())
        }
        fn prove_state(&self, module: u8, key: &[u8]) -> Option<(Option<Vec<u8>>, ModuleProof)> {
            let tree = self.proved.get(&module)?;
            let module_roots = self.proved.values().map(|tree| tree.root()).collect();
            let value = self.kv.get(key).filter(|_| module == 0).cloned();
            Some((
                value,
                ModuleProof {
                    module,
                    module_roots,
                    proof: tree.prove(key),
                },
            ))
        }
        fn transaction_status(&self, id: &Hash) -> TransactionStatus {
            match self.committed.get(id) {
                Some(&height) => TransactionStatus::Committed { height },
                None if self.pending.contains(id) => TransactionStatus::Pending,
                None => TransactionStatus::Unknown,
            }
        }
        fn certificate(&self, fingerprint: &Hash) -> Option<(Certificate, CertStatus)> {
            self.certificates.get(fingerprint).cloned()
        }
        fn record(&self, _name: &DnsName) -> Option<DnsRecord> {
            None
        }
        fn log_size(&self) -> u64 {
            self.certificates.len() as u64
        }
        fn agent(&self) -> Option<AgentStatus> {
            self.agent.clone()
        }
        fn peers(&self) -> KnownPeers {
            self.peers.clone()
        }
        fn submit(&mut self, transactions: Vec<Transaction>) -> Vec<Result<Hash, String>> {
            let outcomes = transactions
                .iter()
                .map(|transaction| {
                    if transaction.0.is_empty() {
                        Err("empty transaction".to_string())
                    } else {
                        Ok(transaction.id())
                    }
                })
                .collect();
            self.submitted.extend(transactions);
            outcomes
        }
        fn issue_certificate(
            &mut self,
            _request: SignedRequest,
        ) -> Result<Certificate, AuthorityError> {
            Err(AuthorityError::NotAnAuthority)
        }
        fn prove_certificate(
            &mut self,
            fingerprint: &Hash,
        ) -> Result<ProvedCertificate, AuthorityError> {
            Err(AuthorityError::NotLogged {
                fingerprint: *fingerprint,
            })
        }
        fn signed_head(&mut self) -> Result<SignedTreeHead, AuthorityError> {
            Err(AuthorityError::NotAnAuthority)
        }
        fn renew_certificate(&mut self) -> Option<Result<Hash, &'static str>> {
            self.renewals += 1;
            let agent = self.agent.as_ref()?;
            Some(agent.certificate.ok_or("no certificate to renew yet"))
        }
        fn report_misbehaviour(
            &mut self,
            evidence: &Misbehaviour,
        ) -> Result<MisbehaviourVerdict, String> {
            // The fake judges only the headers; the replica's own check is
            // tested with real signatures in hm-kernel.
            let conflict = evidence
                .conflict()
                .ok_or("the two headers do not conflict")?;
            self.misbehaviour_reported += 1;
            Ok(MisbehaviourVerdict {
                conflict,
                convicted: vec![id(7)],
                suspects: Vec::new(),
                pooled: 1,
            })
        }
    }

    fn id(byte: u8) -> Hash {
        Hash([byte; 32])
    }

    fn error_of(response: ApiResponse) -> String {
        match response {
            ApiResponse::Error(error) => error,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn reads_answer_from_committed_state_and_show_no_head_before_the_first_block() {
        let mut node = FakeNode {
            me: id(1),
            validator: true,
            ..FakeNode::default()
        };
        node.kv.insert(b"k".to_vec(), b"v".to_vec());
        assert_eq!(
            answer(&mut node, ApiRequest::Head),
            ApiResponse::Head {
                height: 0,
                head: None,
                validator: true
            }
        );
        node.height = 9;
        assert_eq!(
            answer(&mut node, ApiRequest::Head),
            ApiResponse::Head {
                height: 9,
                head: Some(id(9)),
                validator: true
            }
        );
        assert_eq!(
            answer(&mut node, ApiRequest::Get { key: b"k".to_vec() }),
            ApiResponse::Value {
                height: 9,
                value: Some(b"v".to_vec())
            }
        );
        assert_eq!(
            answer(&mut node, ApiRequest::Get { key: b"x".to_vec() }),
            ApiResponse::Value {
                height: 9,
                value: None
            }
        );
    }

    #[test]
    fn submit_passes_every_transaction_on_and_answers_per_transaction_in_order() {
        let mut node = FakeNode::default();
        let good = Transaction(b"put".to_vec());
        let empty = Transaction(vec![]);
        let response = answer(
            &mut node,
            ApiRequest::Submit(vec![good.clone(), empty.clone()]),
        );
        assert_eq!(
            response,
            ApiResponse::Submitted(vec![Ok(good.id()), Err("empty transaction".into())])
        );
        assert_eq!(node.submitted, vec![good, empty]);
    }

    #[test]
    fn transaction_status_answers_each_id_in_order_with_the_height() {
        let mut node = FakeNode {
            height: 12,
            ..FakeNode::default()
        };
        node.committed.insert(id(1), 4);
        node.pending.insert(id(2));
        let response = answer(
            &mut node,
            ApiRequest::TransactionStatus {
                ids: vec![id(3), id(1), id(2)],
            },
        );
        assert_eq!(
            response,
            ApiResponse::TransactionStatus {
                height: 12,
                statuses: vec![
                    TransactionStatus::Unknown,
                    TransactionStatus::Committed { height: 4 },
                    TransactionStatus::Pending,
                ],
            }
        );
    }

    #[test]
    fn a_block_outside_the_committed_heights_missing_or_unreadable_is_refused_with_the_reason() {
        let mut node = FakeNode::default();
        let error = error_of(answer(&mut node, ApiRequest::Block { height: 1 }));
        assert!(error.contains("nothing is committed yet"), "{error}");
        node.height = 5;
        for height in [0, 6] {
            let error = error_of(answer(&mut node, ApiRequest::Block { height }));
            assert_eq!(
                error,
                format!("no block at height {height}; committed heights are 1..=5")
            );
        }
        let error = error_of(answer(&mut node, ApiRequest::Block { height: 3 }));
        assert!(error.contains("not stored on this node"), "{error}");
        node.unreadable.insert(4);
        let error = error_of(answer(&mut node, ApiRequest::Block { height: 4 }));
        assert!(
            error.contains("cannot read block 4") && error.contains("failed its checksum"),
            "{error}"
        );
    }

    fn certified(height: Height, signatures: usize) -> CertifiedHeader {
        let signature = hm_testkit::signing_key("answer-headers", 0).sign(
            "hm/test/v1",
            b"a precommit",
            &SeededEntropy::new(1, b"answer-headers"),
        );
        CertifiedHeader {
            header: hm_kernel::block::BlockHeader {
                version: hm_kernel::block::BLOCK_VERSION,
                chain_id: Hash([1; 32]),
                height,
                round: 0,
                previous_hash: Hash([height as u8 - 1; 32]),
                transactions_root: Hash::ZERO,
                updates_root: Hash::ZERO,
                evidence_root: Hash::ZERO,
                state_root: Hash::ZERO,
                log_head: hm_kernel::block::LogHead::empty(),
                validators_hash: Hash([2; 32]),
                next_validators_hash: Hash([2; 32]),
                timestamp_ms: height * 1_000,
                difficulty: 0,
                time_output: Hash::ZERO,
                time_ticks: 0,
                proposer: Hash::ZERO,
            },
            commit: hm_kernel::block::CommitCertificate {
                height,
                round: 0,
                block_hash: Hash([height as u8; 32]),
                signatures: (0..signatures as u16)
                    .map(|index| (index, signature.clone()))
                    .collect(),
            },
        }
    }

    #[test]
    fn misbehaviour_evidence_is_decoded_bounded_and_handed_to_the_node() {
        let mut node = FakeNode::default();
        let a = certified(3, 3);
        let b = CertifiedHeader {
            header: hm_kernel::block::BlockHeader {
                state_root: Hash([9; 32]),
                ..a.header.clone()
            },
            ..a.clone()
        };
        let evidence = Misbehaviour {
            header_a: a.header.clone(),
            certificate_a: a.commit.clone(),
            header_b: b.header,
            certificate_b: b.commit,
        };
        let encoded = evidence.encode();
        assert_eq!(
            answer(
                &mut node,
                ApiRequest::ReportMisbehaviour {
                    evidence: encoded.clone()
                }
            ),
            ApiResponse::MisbehaviourTaken {
                conflict: "two certified headers at height 3".into(),
                convicted: vec![id(7)],
                suspects: Vec::new(),
                pooled: 1,
            }
        );
        assert_eq!(node.misbehaviour_reported, 1);

        // Cut short or padded, the bytes are refused before the node sees them.
        for bytes in [
            encoded[..encoded.len() - 1].to_vec(),
            [encoded.as_slice(), &[0]].concat(),
            Vec::new(),
        ] {
            let error = error_of(answer(
                &mut node,
                ApiRequest::ReportMisbehaviour { evidence: bytes },
            ));
            assert!(error.contains("does not decode"), "{error}");
            assert!(error.contains("encoded whole"), "{error}");
        }
        // Headers that do not conflict: the node's refusal is the answer.
        let same = Misbehaviour {
            header_b: a.header.clone(),
            certificate_b: a.commit.clone(),
            ..evidence
        };
        let error = error_of(answer(
            &mut node,
            ApiRequest::ReportMisbehaviour {
                evidence: same.encode(),
            },
        ));
        assert!(error.contains("do not conflict"), "{error}");
        assert_eq!(node.misbehaviour_reported, 1);
    }

    #[test]
    fn headers_come_in_order_bounded_in_count_and_bytes_and_never_empty() {
        let mut node = FakeNode::default();
        let error = error_of(answer(&mut node, ApiRequest::Headers { from: 1, count: 4 }));
        assert!(error.contains("nothing is committed yet"), "{error}");
        node.height = 40;
        node.headers = (1..=40)
            .map(|height| (height, certified(height, 2)))
            .collect();
        let heights = |response: ApiResponse| match response {
            ApiResponse::Headers(headers) => headers
                .iter()
                .map(|certified| certified.header.height)
                .collect::<Vec<_>>(),
            other => panic!("expected headers, got {other:?}"),
        };
        assert_eq!(
            heights(answer(&mut node, ApiRequest::Headers { from: 3, count: 4 })),
            vec![3, 4, 5, 6]
        );
        // Capped at the head, at API_HEADERS_MAX, and at least one.
        assert_eq!(
            heights(answer(
                &mut node,
                ApiRequest::Headers { from: 39, count: 9 }
            )),
            vec![39, 40]
        );
        assert_eq!(
            heights(answer(
                &mut node,
                ApiRequest::Headers {
                    from: 1,
                    count: u16::MAX
                }
            ))
            .len(),
            API_HEADERS_MAX
        );
        assert_eq!(
            heights(answer(&mut node, ApiRequest::Headers { from: 7, count: 0 })),
            vec![7]
        );
        let error = error_of(answer(
            &mut node,
            ApiRequest::Headers { from: 41, count: 1 },
        ));
        assert_eq!(
            error,
            "no header at height 41; committed heights are 1..=40"
        );
        // Large certificates: the answer stops at the byte budget.
        node.headers = (1..=40)
            .map(|height| (height, certified(height, 200)))
            .collect();
        let answered = answer(&mut node, ApiRequest::Headers { from: 1, count: 16 });
        let count = heights(answered.clone()).len();
        assert!(
            (1..16).contains(&count),
            "{count} headers of 200 signatures"
        );
        assert!(hm_wire::encoded_len(&answered) <= API_HEADERS_BYTES_MAX + (1 << 10));
        // A missing or unreadable block ends the answer, or names itself
        // when it is the first.
        node.headers.remove(&10);
        assert_eq!(
            heights(answer(&mut node, ApiRequest::Headers { from: 9, count: 3 })),
            vec![9]
        );
        let error = error_of(answer(
            &mut node,
            ApiRequest::Headers { from: 10, count: 3 },
        ));
        assert!(error.contains("not stored on this node"), "{error}");
        node.unreadable.insert(12);
        let error = error_of(answer(
            &mut node,
            ApiRequest::Headers { from: 12, count: 3 },
        ));
        assert!(error.contains("cannot read block 12"), "{error}");
    }

    #[test]
    fn state_answers_carry_a_proof_against_the_committed_root() {
        let mut node = FakeNode {
            height: 3,
            kv: BTreeMap::from([(b"k".to_vec(), b"v".to_vec())]),
            ..FakeNode::default()
        };
        let kv = hm_kernel::state::StateTree::new().updated(&[(
            hm_kernel::state::key_hash(b"k"),
            Some(hm_kernel::state::value_digest(b"v")),
        )]);
        node.proved = BTreeMap::from([(0, kv), (1, hm_kernel::state::StateTree::new())]);
        let root =
            hm_kernel::state::modules_root(&[node.proved[&0].root(), node.proved[&1].root()]);
        match answer(
            &mut node,
            ApiRequest::ProveState {
                module: 0,
                keys: vec![b"k".to_vec(), b"absent".to_vec()],
            },
        ) {
            ApiResponse::ProvedState { height, entries } => {
                assert_eq!(height, 3);
                let [present, absent] = entries.as_slice() else {
                    panic!("one entry per key, got {entries:?}");
                };
                assert_eq!(present.value.as_deref(), Some(&b"v"[..]));
                assert_eq!(present.proof.verify(&root, 0, b"k", Some(b"v")), Ok(()));
                assert_eq!(absent.value, None);
                assert_eq!(absent.proof.verify(&root, 0, b"absent", None), Ok(()));
            }
            other => panic!("expected proved values, got {other:?}"),
        }
        let error = error_of(answer(
            &mut node,
            ApiRequest::ProveState {
                module: 9,
                keys: vec![vec![]],
            },
        ));
        assert!(error.contains("no state module 9"), "{error}");
        // Nothing to prove, or more than the limit, is refused by name.
        let error = error_of(answer(
            &mut node,
            ApiRequest::ProveState {
                module: 0,
                keys: vec![],
            },
        ));
        assert!(error.contains("0 keys"), "{error}");
        let too_many = vec![b"k".to_vec(); crate::api::API_PROVE_KEYS_MAX + 1];
        let error = error_of(answer(
            &mut node,
            ApiRequest::ProveState {
                module: 0,
                keys: too_many.clone(),
            },
        ));
        assert!(error.contains("65 keys"), "{error}");
        let wire = hm_wire::encode(&ApiRequest::ProveState {
            module: 0,
            keys: too_many,
        });
        let refused = ApiRequest::decode(&wire).expect_err("refused at the wire");
        assert!(refused.contains("65 keys"), "{refused}");
    }

    #[test]
    fn peers_lists_everyone_known_but_itself_with_how_it_is_known_bounded() {
        let mut node = FakeNode {
            me: id(1),
            ..FakeNode::default()
        };
        node.peers.members = [id(1), id(2), id(3)].into();
        node.peers.overlay = [id(3), id(4)].into();
        node.peers.chain_links = [id(5)].into();
        node.peers.validators = [id(1), id(5), id(9)].into();
        let ApiResponse::Peers(peers) = answer(&mut node, ApiRequest::Peers) else {
            panic!("Peers answers peers");
        };
        let flags: Vec<(u8, bool, bool, bool, bool)> = peers
            .iter()
            .map(|peer| {
                (
                    peer.node_id.0[0],
                    peer.member,
                    peer.overlay,
                    peer.chain_link,
                    peer.validator,
                )
            })
            .collect();
        assert_eq!(
            flags,
            vec![
                (2, true, false, false, false),
                (3, true, true, false, false),
                (4, false, true, false, false),
                (5, false, false, true, true),
            ],
            "validator 9 is neither a member nor linked, and the node itself is not listed"
        );

        let many: BTreeSet<Hash> = (0..API_PEERS_MAX as u32 + 10)
            .map(|index| {
                let mut bytes = [0xff; 32];
                bytes[..4].copy_from_slice(&index.to_be_bytes());
                Hash(bytes)
            })
            .collect();
        node.peers.members = many;
        let ApiResponse::Peers(peers) = answer(&mut node, ApiRequest::Peers) else {
            panic!("Peers answers peers");
        };
        assert_eq!(peers.len(), API_PEERS_MAX);
    }

    #[test]
    fn resolve_refuses_what_is_not_a_dns_name_and_answers_none_for_an_unknown_one() {
        let mut node = FakeNode::default();
        let error = error_of(answer(
            &mut node,
            ApiRequest::Resolve {
                name: "no spaces allowed".into(),
            },
        ));
        assert!(
            error.starts_with("\"no spaces allowed\" is not a DNS name"),
            "{error}"
        );
        assert_eq!(
            answer(
                &mut node,
                ApiRequest::Resolve {
                    name: "n7.mesh".into()
                }
            ),
            ApiResponse::Record(None)
        );
    }

    fn certificate(height: Height) -> Certificate {
        let key = hm_testkit::signing_key("answer-test", 1);
        let kem = hm_testkit::kem_public_key("answer-test", 1).clone();
        let request = CertificateRequest {
            subject_key: key.verifying_key(),
            kem_key: kem,
            dns_names: vec![DnsName::parse("n1.mesh").expect("name")],
            validity_ms: 60_000,
            requested_at_ms: 1_000,
            nonce: 7,
        };
        Certificate {
            request: SignedRequest::sign(request, key, &SeededEntropy::new(1, b"sign")),
            not_before_ms: 1_000,
            not_after_ms: 61_000,
            issuer: Issuer::Chain { height },
            issuer_signature: None,
        }
    }

    #[test]
    fn certificate_info_names_the_node_own_certificate_or_says_why_there_is_none() {
        let mut node = FakeNode::default();
        let error = error_of(answer(
            &mut node,
            ApiRequest::CertificateInfo { fingerprint: None },
        ));
        assert!(error.contains("no [chain.trust]"), "{error}");
        node.agent = Some(AgentStatus::default());
        let error = error_of(answer(
            &mut node,
            ApiRequest::CertificateInfo { fingerprint: None },
        ));
        assert!(error.contains("bootstrap phase 0"), "{error}");

        let certificate = certificate(7);
        let fingerprint = certificate.fingerprint();
        let status = CertStatus {
            log_index: 3,
            revoked: true,
            issuer_revoked: false,
        };
        node.certificates
            .insert(fingerprint, (certificate.clone(), status));
        node.agent = Some(AgentStatus {
            certificate: Some(fingerprint),
            ..AgentStatus::default()
        });
        let ApiResponse::CertificateInfo(summary) =
            answer(&mut node, ApiRequest::CertificateInfo { fingerprint: None })
        else {
            panic!("the node's own certificate is logged");
        };
        assert_eq!(summary.fingerprint, fingerprint);
        assert_eq!(summary.subject, certificate.subject());
        assert_eq!(summary.names, vec!["n1.mesh".to_string()]);
        assert_eq!(summary.authority, None);
        assert_eq!(summary.issued_at_height, Some(7));
        assert_eq!((summary.log_index, summary.revoked), (3, true));
        assert_eq!(
            (summary.not_before_ms, summary.not_after_ms),
            (1_000, 61_000)
        );

        let error = error_of(answer(
            &mut node,
            ApiRequest::CertificateInfo {
                fingerprint: Some(id(9)),
            },
        ));
        assert!(
            error.contains("no certificate") && error.contains("committed log"),
            "{error}"
        );
    }

    #[test]
    fn status_summarises_the_node_and_its_agent() {
        let mut node = FakeNode {
            me: id(1),
            height: 3,
            phase: 2,
            agent: Some(AgentStatus {
                certificate: Some(id(8)),
                chain_issued: true,
                missing: Some("a chain-issued certificate"),
                ..AgentStatus::default()
            }),
            ..FakeNode::default()
        };
        let ApiResponse::Status(summary) = answer(&mut node, ApiRequest::Status) else {
            panic!("Status answers a summary");
        };
        assert_eq!(
            *summary,
            NodeSummary {
                node_id: id(1),
                validator: false,
                light: false,
                height: 3,
                head: Some(id(3)),
                phase: 2,
                certificate: Some(id(8)),
                certificate_chain_issued: true,
                missing_for_next_phase: Some("a chain-issued certificate".into()),
                log_size: 0,
                name: Some("n1.mesh".into()),
            }
        );
    }

    #[test]
    fn renewing_needs_an_agent_and_passes_its_refusal_on() {
        let mut node = FakeNode::default();
        let error = error_of(answer(&mut node, ApiRequest::RenewCertificate));
        assert!(error.contains("no [chain.trust]"), "{error}");
        node.agent = Some(AgentStatus::default());
        assert_eq!(
            error_of(answer(&mut node, ApiRequest::RenewCertificate)),
            "no certificate to renew yet"
        );
        node.agent = Some(AgentStatus {
            certificate: Some(id(4)),
            ..AgentStatus::default()
        });
        assert_eq!(
            answer(&mut node, ApiRequest::RenewCertificate),
            ApiResponse::Renewing { replacing: id(4) }
        );
        assert_eq!(node.renewals, 3);
    }

    #[test]
    fn authority_calls_pass_the_authority_refusal_on_as_the_error() {
        let mut node = FakeNode::default();
        let error = error_of(answer(&mut node, ApiRequest::TreeHead));
        assert_eq!(
            error,
            "this node is not a certificate authority; ask a genesis validator"
        );
        let error = error_of(answer(
            &mut node,
            ApiRequest::CertificateProof { fingerprint: id(2) },
        ));
        assert_eq!(
            error,
            format!(
                "certificate {} is not logged (yet); ask again after the next block",
                id(2)
            )
        );
    }
}
