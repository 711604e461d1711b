//! The HTTP paths the chain service answers: peers, blocks, certificates
//! and transaction submission. They go through [`StatusHandle::call_api`]
//! (`hm_node::StatusHandle`), the same queue, limits and answers as the
//! STOQ API that `hm` uses, without dialing the node's own port.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hm_env::Entropy as _;
use hm_node::api::API_SUBMIT_TRANSACTIONS_MAX;
use hm_node::{ApiRequest, ApiResponse};
use hm_wire::Hash;
use serde::{Deserialize, Serialize};

use super::{ApiState, error, rejected};

/// An `ApiResponse::Error`: 503 when the chain service cannot answer now,
/// 404 when what was asked for does not exist.
fn refused(message: String) -> Response {
    let unavailable = ["busy", "stopped", "runs no chain"]
        .iter()
        .any(|word| message.contains(word));
    let status = if unavailable {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::NOT_FOUND
    };
    error(status, message)
}

fn unexpected(answer: &ApiResponse) -> Response {
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("the chain service answered out of turn ({answer:?}); report this"),
    )
}

pub(super) async fn peers(State(state): State<ApiState>) -> Response {
    match state.status.call_api(ApiRequest::Peers).await {
        ApiResponse::Peers(peers) => Json(peers).into_response(),
        ApiResponse::Error(message) => refused(message),
        other => unexpected(&other),
    }
}

pub(super) async fn block(
    State(state): State<ApiState>,
    UrlPath(height): UrlPath<String>,
) -> Response {
    let Ok(height) = height.parse::<u64>() else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("{height:?} is not a block height; use a whole number from 1"),
        );
    };
    match state.status.call_api(ApiRequest::Block { height }).await {
        ApiResponse::Block(block) => Json(block).into_response(),
        ApiResponse::Error(message) => refused(message),
        other => unexpected(&other),
    }
}

async fn certificate_info(state: &ApiState, fingerprint: Option<Hash>) -> Response {
    match state
        .status
        .call_api(ApiRequest::CertificateInfo { fingerprint })
        .await
    {
        ApiResponse::CertificateInfo(certificate) => Json(certificate).into_response(),
        ApiResponse::Error(message) => refused(message),
        other => unexpected(&other),
    }
}

pub(super) async fn own_certificate(State(state): State<ApiState>) -> Response {
    certificate_info(&state, None).await
}

pub(super) async fn certificate(
    State(state): State<ApiState>,
    UrlPath(fingerprint): UrlPath<String>,
) -> Response {
    match Hash::from_hex(&fingerprint) {
        Ok(fingerprint) => certificate_info(&state, Some(fingerprint)).await,
        Err(_) => error(
            StatusCode::BAD_REQUEST,
            format!("{fingerprint:?} is not a certificate fingerprint (64 hex digits)"),
        ),
    }
}

/// What `GET /v1/tx/{id}` answers.
#[derive(Debug, Serialize, Deserialize)]
pub struct TransactionState {
    /// "committed" (final, at `height`), "pending" (in this node's
    /// mempool: admitted, not durable) or "unknown" (never seen here,
    /// dropped, or committed longer ago than the node remembers).
    pub status: String,
    pub height: Option<u64>,
    /// The node's committed height when it answered.
    pub committed_height: u64,
}

/// `GET /v1/tx/{id}`: where a submitted transaction stands.
pub(super) async fn transaction(
    State(state): State<ApiState>,
    UrlPath(id): UrlPath<String>,
) -> Response {
    use hm_kernel::replica::TransactionStatus;
    let Ok(id) = Hash::from_hex(&id) else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("{id:?} is not a transaction id (64 hex digits, as POST /v1/tx answers)"),
        );
    };
    match state
        .status
        .call_api(ApiRequest::TransactionStatus { ids: vec![id] })
        .await
    {
        ApiResponse::TransactionStatus { height, statuses } if statuses.len() == 1 => {
            let (status, at) = match statuses[0] {
                TransactionStatus::Committed { height } => ("committed", Some(height)),
                TransactionStatus::Pending => ("pending", None),
                TransactionStatus::Unknown => ("unknown", None),
            };
            Json(TransactionState {
                status: status.into(),
                height: at,
                committed_height: height,
            })
            .into_response()
        }
        ApiResponse::Error(message) => refused(message),
        other => unexpected(&other),
    }
}

/// What `POST /v1/cert/renew` answers.
#[derive(Debug, Serialize, Deserialize)]
pub struct Renewing {
    /// The certificate the renewal replaces once committed.
    pub replacing: Hash,
}

pub(super) async fn renew(State(state): State<ApiState>) -> Response {
    match state.status.call_api(ApiRequest::RenewCertificate).await {
        ApiResponse::Renewing { replacing } => Json(Renewing { replacing }).into_response(),
        // A node not yet in phase 2, or without a certificate: not now.
        ApiResponse::Error(message) if !message.contains("runs no chain") => {
            error(StatusCode::CONFLICT, message)
        }
        ApiResponse::Error(message) => refused(message),
        other => unexpected(&other),
    }
}

/// `POST /v1/tx`: key-value puts.
#[derive(Debug, Serialize, Deserialize)]
pub struct SubmitRequest {
    pub puts: Vec<Put>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Put {
    pub key: String,
    pub value: String,
}

/// Per put, in order: its transaction id, or why the node refused it.
#[derive(Debug, Serialize, Deserialize)]
pub struct SubmitOutcome {
    pub key: String,
    pub id: Option<Hash>,
    pub refused: Option<String>,
}

pub(super) async fn submit(
    State(state): State<ApiState>,
    body: Result<Json<SubmitRequest>, JsonRejection>,
) -> Response {
    let request = match body {
        Ok(Json(request)) => request,
        Err(rejection) => {
            return rejected(
                &rejection,
                r#"{"puts": [{"key": "greeting", "value": "hello"}]}"#,
            );
        }
    };
    if request.puts.is_empty() || request.puts.len() > API_SUBMIT_TRANSACTIONS_MAX {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "{} puts; send 1 to {API_SUBMIT_TRANSACTIONS_MAX} per request",
                request.puts.len()
            ),
        );
    }
    if let Some(put) = request.puts.iter().find(|put| put.key.is_empty()) {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "a put has an empty key (value {:?}); every put needs a key",
                put.value
            ),
        );
    }
    let transactions = request
        .puts
        .iter()
        .map(|put| {
            let mut nonce = [0u8; 8];
            crate::entropy::OsEntropy.fill_bytes(&mut nonce);
            hm_node::app::kv_put(
                put.key.as_bytes(),
                put.value.as_bytes(),
                u64::from_le_bytes(nonce),
            )
        })
        .collect();
    match state
        .status
        .call_api(ApiRequest::Submit(transactions))
        .await
    {
        ApiResponse::Submitted(outcomes) => {
            let outcomes: Vec<SubmitOutcome> = request
                .puts
                .into_iter()
                .zip(outcomes)
                .map(|(put, outcome)| SubmitOutcome {
                    key: put.key,
                    id: outcome.as_ref().ok().copied(),
                    refused: outcome.err(),
                })
                .collect();
            Json(outcomes).into_response()
        }
        ApiResponse::Error(message) => refused(message),
        other => unexpected(&other),
    }
}
