//! The node's client API (`hm/api/1`): request/response over STOQ on the
//! node's own endpoint. Clients submit transactions and read committed
//! key-value state and the chain head; the chain service answers.
//!
//! Every request is one STOQ request frame (STOQ bounds the frame; the
//! decoder then refuses more than [`API_REQUEST_BYTES_MAX`]); a connection is served one request at a
//! time, and at most [`API_CONNECTIONS_MAX`] clients are served at once.
//! A malformed request gets an [`ApiResponse::Error`] naming what was wrong
//! — the connection stays usable.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hm_env::Env;
use hm_kernel::block::{Height, Transaction};
use hm_stoq::{Connection, Endpoint};
use hm_wire::Hash;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

pub use crate::ids::API_PROTOCOL;
/// Largest encoded request or response.
pub const API_REQUEST_BYTES_MAX: usize = 1 << 20;
/// Transactions one `Submit` may carry.
pub const API_SUBMIT_TRANSACTIONS_MAX: usize = 256;
/// Clients served at once; more are refused with a reason. A full node
/// serves the light nodes that chose it (a few dozen each) besides its
/// operators' clients.
pub const API_CONNECTIONS_MAX: usize = 256;
/// API calls waiting for the chain service.
pub const API_CALL_QUEUE_MAX: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ApiRequest {
    /// Admit transactions to the mempool and pass them to the validators.
    Submit(Vec<Transaction>),
    /// A key of the committed key-value state.
    Get { key: Vec<u8> },
    /// The committed head.
    Head,
    /// Issue a certificate for this request (a genesis validator acting as
    /// a certificate authority, bootstrap phase 1).
    RequestCertificate(Box<hm_trustchain::cert::SignedRequest>),
    /// A logged certificate's inclusion proof, with the log head signed by
    /// the answering authority.
    CertificateProof { fingerprint: Hash },
    /// A name's record in HyperMesh DNS (committed state).
    Resolve { name: String },
    /// The answering authority's signed head of the certificate log (CT
    /// auditing: nodes compare what authorities sign with their own log).
    TreeHead,
    /// The node's bootstrap phase, certificate and chain position.
    Status,
    /// A committed block's header at a glance.
    Block { height: Height },
    /// The peers this node knows: members, overlay neighbours, chain links.
    Peers,
    /// A logged certificate and where it stands; `None`: the node's own
    /// current one.
    CertificateInfo { fingerprint: Option<Hash> },
    /// Renew the node's certificate through the chain now, whatever its
    /// renewal point.
    RenewCertificate,
    /// Where these transactions stand on this node (a client waiting for
    /// its submissions to commit).
    TransactionStatus { ids: Vec<Hash> },
    /// Committed headers from `from` on, each with its commit certificate:
    /// what a light client verifies. At most `count` (capped at
    /// [`API_HEADERS_MAX`] and by [`API_HEADERS_BYTES_MAX`]).
    Headers { from: Height, count: u16 },
    /// Keys of one module's committed state (the module's own keys,
    /// without the module byte), each with its proof against the state root
    /// of the committed header at the answered height (one height for all).
    /// 1 to [`API_PROVE_KEYS_MAX`] keys.
    ProveState { module: u8, keys: Vec<Vec<u8>> },
    /// The current, usable certificate of each subject, as this node's
    /// committed state has it: a hint a light client then proves
    /// (`ProveState` of the certificate's keys). At most
    /// [`API_SUBJECTS_MAX`] subjects.
    CurrentCertificates { subjects: Vec<Hash> },
    /// A logged certificate's inclusion proof in the log of size
    /// `tree_size` (the log head a certified header names), so a light
    /// client can check it against a header it trusts.
    InclusionAt { fingerprint: Hash, tree_size: u64 },
    /// Evidence that froze a light client: an encoded
    /// [`hm_kernel::light::Misbehaviour`] (two conflicting certified
    /// headers). A full node checks it against its own chain's validators
    /// and pools the double signers' votes for the chain to commit.
    ReportMisbehaviour { evidence: Vec<u8> },
}

/// Most keys one `ProveState` asks to prove.
pub const API_PROVE_KEYS_MAX: usize = 64;
/// Most subjects one `CurrentCertificates` asks about.
pub const API_SUBJECTS_MAX: usize = 256;

/// One proven key of a `ProvedState` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProvedEntry {
    /// The value (`None`: absent).
    pub value: Option<Vec<u8>>,
    pub proof: hm_kernel::state::ModuleProof,
}

/// Most headers one `Headers` answer carries.
pub const API_HEADERS_MAX: usize = 16;

/// A `Headers` answer stops before its headers and certificates would pass
/// this many encoded bytes (it always carries at least one), so it stays
/// within the response limit whatever the validator count.
pub const API_HEADERS_BYTES_MAX: usize = 768 << 10;

/// A committed header and the certificate that committed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertifiedHeader {
    pub header: hm_kernel::block::BlockHeader,
    pub commit: hm_kernel::block::CommitCertificate,
}

/// Most ids one `TransactionStatus` request asks about.
pub const API_STATUS_IDS_MAX: usize = 256;

/// Most peers one `Peers` answer lists.
pub const API_PEERS_MAX: usize = 1024;

/// What `Block` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockSummary {
    pub height: Height,
    pub hash: Hash,
    pub round: u32,
    pub previous_hash: Hash,
    /// The proposer's clock, ms since the Unix epoch.
    pub timestamp_ms: u64,
    pub transactions: u64,
    pub evidence: u64,
    pub state_root: Hash,
    /// Certificates in the transparency log after this block.
    pub log_size: u64,
    /// Encoded size of the whole block (header, body, proofs, commit).
    pub encoded_bytes: u64,
}

/// One peer of `Peers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerSummary {
    pub node_id: Hash,
    /// In this node's membership view.
    pub member: bool,
    /// An active overlay neighbour (gossip).
    pub overlay: bool,
    /// A chain link (blocks, votes, sync).
    pub chain_link: bool,
    pub validator: bool,
}

/// What `CertificateInfo` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateSummary {
    pub fingerprint: Hash,
    pub subject: Hash,
    pub names: Vec<String>,
    pub not_before_ms: u64,
    pub not_after_ms: u64,
    /// `Some(id)`: issued by that genesis authority; `None`: by the chain.
    pub authority: Option<Hash>,
    /// For chain-issued certificates, the height of the issuing block.
    pub issued_at_height: Option<Height>,
    pub log_index: u64,
    pub revoked: bool,
    pub issuer_revoked: bool,
    /// Set by a light node: the height and header its proof of this
    /// standing was checked against (a full node answers from its own
    /// committed state and leaves it empty).
    #[serde(default)]
    pub proven_at: Option<(Height, Hash)>,
}

/// What `Status` answers: one node at a glance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSummary {
    pub node_id: Hash,
    pub validator: bool,
    /// A light node: `height` is the latest header it verified, not a
    /// committed block.
    #[serde(default)]
    pub light: bool,
    pub height: Height,
    pub head: Option<Hash>,
    pub phase: u8,
    pub certificate: Option<Hash>,
    pub certificate_chain_issued: bool,
    pub missing_for_next_phase: Option<String>,
    pub log_size: u64,
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ApiResponse {
    /// Per submitted transaction, in order: its id, or why it was refused.
    Submitted(Vec<Result<Hash, String>>),
    Value {
        height: Height,
        value: Option<Vec<u8>>,
    },
    Head {
        height: Height,
        head: Option<Hash>,
        validator: bool,
    },
    Certificate(Box<hm_trustchain::cert::Certificate>),
    Proof {
        proof: Box<hm_trustchain::log::InclusionProof>,
        head: Box<hm_trustchain::log::SignedTreeHead>,
    },
    Record(Option<Box<hm_trustchain::dns::DnsRecord>>),
    TreeHead(Box<hm_trustchain::log::SignedTreeHead>),
    Status(Box<NodeSummary>),
    Error(String),
    Block(Box<BlockSummary>),
    Peers(Vec<PeerSummary>),
    CertificateInfo(Box<CertificateSummary>),
    /// A renewal is under way; this certificate will be replaced.
    Renewing {
        replacing: Hash,
    },
    /// Per asked id, in order; with the committed height.
    TransactionStatus {
        height: Height,
        statuses: Vec<hm_kernel::replica::TransactionStatus>,
    },
    /// Consecutive committed headers, lowest first.
    Headers(Vec<CertifiedHeader>),
    /// A module's value for each asked key, in order, at the committed
    /// `height`, each with its proof against that header's state root.
    ProvedState {
        height: Height,
        entries: Vec<ProvedEntry>,
    },
    /// Per asked subject, in order: its current certificate's fingerprint.
    CurrentCertificates(Vec<Option<Hash>>),
    /// A name's record (`None`: absent) as a light node proved it against
    /// the certified header `header_hash` at `height`.
    ProvenRecord {
        record: Option<Box<hm_trustchain::dns::DnsRecord>>,
        height: Height,
        header_hash: Hash,
    },
    Inclusion(Box<hm_trustchain::log::InclusionProof>),
    /// Misbehaviour evidence checked and taken: what conflicts, the
    /// validators proven to have double-signed and those who must account
    /// for signing both (a fork across rounds), and how many duplicate
    /// votes were newly pooled for the chain to commit.
    MisbehaviourTaken {
        conflict: String,
        convicted: Vec<Hash>,
        suspects: Vec<Hash>,
        pooled: u32,
    },
}

/// The name of an answer's kind, for errors.
pub fn response_kind(response: &ApiResponse) -> &'static str {
    match response {
        ApiResponse::Submitted(_) => "a submit receipt",
        ApiResponse::Value { .. } => "a value",
        ApiResponse::Head { .. } => "a chain head",
        ApiResponse::Certificate(_) => "a certificate",
        ApiResponse::Proof { .. } => "an inclusion proof",
        ApiResponse::Record(_) => "a DNS record",
        ApiResponse::TreeHead(_) => "a tree head",
        ApiResponse::Status(_) => "a status",
        ApiResponse::Error(_) => "an error",
        ApiResponse::Block(_) => "a block",
        ApiResponse::Peers(_) => "a peer list",
        ApiResponse::CertificateInfo(_) => "a certificate summary",
        ApiResponse::Renewing { .. } => "a renewal receipt",
        ApiResponse::TransactionStatus { .. } => "transaction statuses",
        ApiResponse::Headers(_) => "certified headers",
        ApiResponse::ProvedState { .. } => "proved state values",
        ApiResponse::CurrentCertificates(_) => "current certificates",
        ApiResponse::ProvenRecord { .. } => "a proven DNS record",
        ApiResponse::Inclusion(_) => "an inclusion proof at a log size",
        ApiResponse::MisbehaviourTaken { .. } => "a misbehaviour receipt",
    }
}

impl ApiRequest {
    pub fn decode(bytes: &[u8]) -> Result<ApiRequest, String> {
        let request: ApiRequest = hm_wire::decode(bytes, API_REQUEST_BYTES_MAX)
            .map_err(|error| format!("malformed API request: {error}"))?;
        if let ApiRequest::Submit(transactions) = &request
            && transactions.len() > API_SUBMIT_TRANSACTIONS_MAX
        {
            return Err(format!(
                "{} transactions in one submit; at most {API_SUBMIT_TRANSACTIONS_MAX}: split the batch",
                transactions.len()
            ));
        }
        if let ApiRequest::TransactionStatus { ids } = &request
            && ids.len() > API_STATUS_IDS_MAX
        {
            return Err(format!(
                "{} ids in one status request; at most {API_STATUS_IDS_MAX}: split it",
                ids.len()
            ));
        }
        if let ApiRequest::ProveState { keys, .. } = &request
            && !(1..=API_PROVE_KEYS_MAX).contains(&keys.len())
        {
            return Err(format!(
                "{} keys in one proof request; ask for 1 to {API_PROVE_KEYS_MAX}",
                keys.len()
            ));
        }
        if let ApiRequest::CurrentCertificates { subjects } = &request
            && subjects.len() > API_SUBJECTS_MAX
        {
            return Err(format!(
                "{} subjects in one request; at most {API_SUBJECTS_MAX}: split it",
                subjects.len()
            ));
        }
        Ok(request)
    }
}

/// One API request on its way to the chain service, with where to answer.
pub(crate) struct ApiCall {
    pub(crate) request: ApiRequest,
    pub(crate) reply: oneshot::Sender<ApiResponse>,
}

/// Serves API connections handed over by the node's accept loop.
pub(crate) struct ApiServer {
    calls: Option<mpsc::Sender<ApiCall>>,
    active: Arc<AtomicUsize>,
}

impl ApiServer {
    /// `calls` is `None` when the node runs no chain service.
    pub(crate) fn new(calls: Option<mpsc::Sender<ApiCall>>) -> ApiServer {
        ApiServer {
            calls,
            active: Arc::new(AtomicUsize::new(0)),
        }
    }

    pub(crate) fn serve(&self, connection: Connection) {
        if self.active.fetch_add(1, Ordering::AcqRel) >= API_CONNECTIONS_MAX {
            self.active.fetch_sub(1, Ordering::AcqRel);
            connection.close("api: too many clients; retry later");
            return;
        }
        let calls = self.calls.clone();
        let slot = Slot(self.active.clone());
        tokio::spawn(async move {
            // Frees the client slot however this task ends.
            let _slot = slot;
            while let Some(mut incoming) = connection.accept_request().await {
                let payload = incoming.take_payload();
                let response = match ApiRequest::decode(&payload) {
                    Ok(request) => call(calls.as_ref(), request).await,
                    Err(error) => ApiResponse::Error(error),
                };
                if incoming.respond(&hm_wire::encode(&response)).await.is_err() {
                    break;
                }
            }
        });
    }
}

/// One taken client slot of [`ApiServer`], given back on drop.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

pub(crate) async fn call(
    calls: Option<&mpsc::Sender<ApiCall>>,
    request: ApiRequest,
) -> ApiResponse {
    let Some(calls) = calls else {
        return ApiResponse::Error("this node runs no chain (no [chain] in its config)".into());
    };
    let (reply, answer) = oneshot::channel();
    if calls.try_send(ApiCall { request, reply }).is_err() {
        return ApiResponse::Error("the chain service is busy or stopped; retry later".into());
    }
    answer
        .await
        .unwrap_or_else(|_| ApiResponse::Error("the chain service stopped".into()))
}

#[derive(Debug, thiserror::Error)]
pub enum ApiClientError {
    #[error("cannot reach the node's API at {addr}")]
    Connect {
        addr: SocketAddr,
        source: hm_stoq::StoqError,
    },
    #[error("the API request failed")]
    Request(#[from] hm_stoq::StoqError),
    #[error("the node's answer is malformed")]
    Malformed(#[from] hm_wire::WireError),
}

/// A client of one node's API.
pub struct ApiClient {
    connection: Connection,
    timeout: Duration,
}

impl ApiClient {
    /// Connects from `endpoint` (any identity; its `StoqConfig::protocols`
    /// must include [`API_PROTOCOL`]) to the node at `addr`.
    pub async fn connect<E: Env>(
        endpoint: &Endpoint<E>,
        addr: SocketAddr,
        timeout: Duration,
    ) -> Result<ApiClient, ApiClientError> {
        let connection = endpoint
            .connect_protocol(addr, API_PROTOCOL, None)
            .await
            .map_err(|source| ApiClientError::Connect { addr, source })?;
        Ok(ApiClient {
            connection,
            timeout,
        })
    }

    pub async fn call(&self, request: &ApiRequest) -> Result<ApiResponse, ApiClientError> {
        let bytes = self
            .connection
            .request(&hm_wire::encode(request), self.timeout)
            .await?;
        Ok(hm_wire::decode(&bytes, API_REQUEST_BYTES_MAX)?)
    }

    pub fn close(&self) {
        self.connection.close("api client done");
    }

    /// The connection is closed (by either side, or idle): make another.
    pub fn is_closed(&self) -> bool {
        self.connection.close_reason().is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_oversized_batches_are_refused() {
        let request = ApiRequest::Submit(vec![Transaction(b"tx".to_vec())]);
        assert_eq!(
            ApiRequest::decode(&hm_wire::encode(&request)).expect("decodes"),
            request
        );
        let too_many = ApiRequest::Submit(vec![
            Transaction(b"t".to_vec());
            API_SUBMIT_TRANSACTIONS_MAX + 1
        ]);
        let error = ApiRequest::decode(&hm_wire::encode(&too_many)).expect_err("refused");
        assert!(error.contains("split the batch"), "{error}");
        let error = ApiRequest::decode(b"\xff\xff\xff").expect_err("garbage");
        assert!(error.starts_with("malformed API request"), "{error}");
    }
}
