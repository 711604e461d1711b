//! The node's local HTTP API (`api_listen`): versioned JSON under `/v1`,
//! Prometheus text at `/metrics` and an OpenAPI document at
//! `/v1/openapi.json`, every path behind one bearer token.
//!
//! The token is 32 random bytes in hex, made by `hm-node init` in
//! `<data_dir>/api-token` (mode 0600); a request without
//! `Authorization: Bearer <token>` gets 401. Bodies are capped at
//! [`BODY_BYTES_MAX`] (413 beyond), malformed JSON gets 400, unknown paths
//! 404 — each with a JSON `{"error": "..."}` saying what to do. Everything
//! served is read from the node's status snapshot and committed state; the
//! API never blocks the node.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hm_env::Entropy as _;
use hm_node::{COMMIT_LATENCY_BUCKETS_MS, StatusHandle};

use crate::net::{NetTraffic, TrafficTotals};
use hm_trustchain::name::DnsName;
use serde::{Deserialize, Serialize};

/// Largest request body accepted.
pub const BODY_BYTES_MAX: usize = 64 << 10;
/// The token file inside the data dir.
pub const TOKEN_FILE: &str = "api-token";
/// Bytes of randomness in a token (hex doubles them).
pub const TOKEN_BYTES: usize = 32;
/// The Prometheus text format version `/metrics` speaks.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Files walked to sum the data dir's size for `/metrics`.
const DISK_USAGE_FILES_MAX: usize = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error(
        "cannot read the API token {path}: {source}; run `hm-node init --data-dir <dir>` to create one"
    )]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write the API token {path}: {source}; check the data dir's permissions")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the API token {path} is not {} hex digits; delete it and run `hm-node init` again", TOKEN_BYTES * 2)]
    Malformed { path: PathBuf },
}

/// Reads `<data_dir>/api-token`, creating it (0600) when missing.
pub fn load_or_create_token(data_dir: &Path) -> Result<String, TokenError> {
    let path = data_dir.join(TOKEN_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let token = text.trim().to_string();
            if token.len() != TOKEN_BYTES * 2 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(TokenError::Malformed { path });
            }
            Ok(token)
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let mut bytes = [0u8; TOKEN_BYTES];
            crate::entropy::OsEntropy.fill_bytes(&mut bytes);
            let token: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
            write_private(&path, token.as_bytes())
                .map_err(|source| TokenError::Write { path, source })?;
            Ok(token)
        }
        Err(source) => Err(TokenError::Read { path, source }),
    }
}

/// Creates `path` readable by its owner only, and syncs it.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

mod chain;

pub use chain::{Put, Renewing, SubmitOutcome, SubmitRequest};

#[derive(Clone)]
struct ApiState {
    status: StatusHandle,
    /// The node's UDP traffic (STOQ on the wire), for `/metrics`.
    traffic: NetTraffic,
    token: Arc<str>,
    data_dir: Arc<Path>,
}

/// The API's routes over `status`, guarded by `token`; `data_dir` is
/// measured for `/metrics`.
pub fn router(status: StatusHandle, token: &str, data_dir: &Path, traffic: NetTraffic) -> Router {
    let state = ApiState {
        status,
        traffic,
        token: Arc::from(token),
        data_dir: Arc::from(data_dir),
    };
    Router::new()
        .route("/v1/status", get(status_json))
        .route("/v1/chain/head", get(chain_head))
        .route("/v1/dns/{name}", get(dns_get))
        .route("/v1/dns/resolve", post(dns_resolve))
        .route("/v1/peers", get(chain::peers))
        .route("/v1/chain/block/{height}", get(chain::block))
        .route("/v1/cert", get(chain::own_certificate))
        .route("/v1/cert/{fingerprint}", get(chain::certificate))
        .route("/v1/cert/renew", post(chain::renew))
        .route("/v1/tx", post(chain::submit))
        .route("/v1/tx/{id}", get(chain::transaction))
        .route("/v1/openapi.json", get(openapi))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), require_token))
        .layer(DefaultBodyLimit::max(BODY_BYTES_MAX))
        .with_state(state)
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        Json(ErrorBody {
            error: message.into(),
        }),
    )
        .into_response()
}

/// Compares in time independent of where the first difference is.
fn token_matches(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
}

async fn require_token(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    match given {
        Some(token) if token_matches(token.trim().as_bytes(), state.token.as_bytes()) => {
            next.run(request).await
        }
        Some(_) => error(
            StatusCode::UNAUTHORIZED,
            "wrong bearer token; use the one in <data_dir>/api-token",
        ),
        None => error(
            StatusCode::UNAUTHORIZED,
            "no bearer token; send `Authorization: Bearer <token>` with the token from <data_dir>/api-token",
        ),
    }
}

async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "no such path; the API's paths are listed at /v1/openapi.json",
    )
}

async fn status_json(State(state): State<ApiState>) -> Response {
    Json(state.status.snapshot()).into_response()
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Head {
    pub height: u64,
    pub head: Option<String>,
}

async fn chain_head(State(state): State<ApiState>) -> Response {
    let head = state.status.with(|status| Head {
        height: status.chain.height,
        head: status.chain.head.map(|hash| hash.to_hex()),
    });
    Json(head).into_response()
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ResolveRequest {
    pub name: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct NameRecord {
    pub name: String,
    pub owner: String,
    pub addrs: Vec<std::net::Ipv6Addr>,
    pub certificate: String,
    pub sequence: u64,
    pub updated_height: u64,
}

fn resolve(state: &ApiState, name: &str) -> Response {
    let name = match DnsName::parse(name) {
        Ok(name) => name,
        Err(reason) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("{name:?} is not a DNS name: {reason}"),
            );
        }
    };
    let Some(trust) = state.status.trust() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the node has no TrustChain state yet (still starting, or no [chain.trust] section); retry shortly",
        );
    };
    let record = trust.read().record(&name);
    match record {
        Some(record) => Json(NameRecord {
            name: record.name.to_string(),
            owner: record.owner.to_hex(),
            addrs: record.addrs,
            certificate: record.certificate.to_hex(),
            sequence: record.sequence,
            updated_height: record.updated_height,
        })
        .into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            format!("{name} is not registered in the committed state"),
        ),
    }
}

async fn dns_get(State(state): State<ApiState>, UrlPath(name): UrlPath<String>) -> Response {
    resolve(&state, &name)
}

async fn dns_resolve(
    State(state): State<ApiState>,
    body: Result<Json<ResolveRequest>, JsonRejection>,
) -> Response {
    match body {
        Ok(Json(request)) => resolve(&state, &request.name),
        Err(rejection) => rejected(&rejection, r#"{"name": "node1.mesh"}"#),
    }
}

/// A JSON body axum could not take: 415 without the JSON content type,
/// 413 over [`BODY_BYTES_MAX`], 400 otherwise; the message shows `example`.
fn rejected(rejection: &JsonRejection, example: &str) -> Response {
    let status = match rejection {
        JsonRejection::MissingJsonContentType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        JsonRejection::BytesRejection(_) => StatusCode::PAYLOAD_TOO_LARGE,
        _ => StatusCode::BAD_REQUEST,
    };
    error(
        status,
        format!(
            "{}; send a JSON object like {example} with Content-Type: application/json, at most {BODY_BYTES_MAX} bytes",
            rejection.body_text()
        ),
    )
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI_JSON).into_response()
}

async fn metrics(State(state): State<ApiState>) -> Response {
    let data_dir = state.data_dir.clone();
    // Walking the data dir touches the filesystem: off the async threads.
    let disk_bytes = tokio::task::spawn_blocking(move || dir_bytes(&data_dir))
        .await
        .unwrap_or(0);
    let text = state
        .status
        .with(|status| render_metrics(status, disk_bytes, state.traffic.totals()));
    ([(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)], text).into_response()
}

/// Bytes of the regular files under `dir` (at most
/// [`DISK_USAGE_FILES_MAX`] files counted).
fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0u64;
    let mut seen = 0usize;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            seen += 1;
            if seen > DISK_USAGE_FILES_MAX {
                return total;
            }
            match entry.metadata() {
                Ok(meta) if meta.is_dir() => pending.push(entry.path()),
                Ok(meta) => total = total.saturating_add(meta.len()),
                Err(_) => {}
            }
        }
    }
    total
}

/// One metric family in Prometheus text format.
struct Family<'a> {
    out: &'a mut String,
}

impl Family<'_> {
    fn header(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    /// A summary without quantiles: its `_sum` (from milliseconds to
    /// seconds) and `_count`.
    fn summary(&mut self, name: &str, help: &str, sum_ms: u64, count: u64) {
        self.header(name, "summary", help);
        self.sample(&format!("{name}_sum"), &[], sum_ms as f64 / 1000.0);
        self.sample(&format!("{name}_count"), &[], count as f64);
    }

    /// A histogram over [`COMMIT_LATENCY_BUCKETS_MS`] from per-bucket
    /// (not cumulative) counts; a node that has not counted yet shows zeros.
    fn histogram(&mut self, name: &str, help: &str, buckets: &[u64], sum_ms: u64, count: u64) {
        self.header(name, "histogram", help);
        let bucket_name = format!("{name}_bucket");
        let mut cumulative = 0;
        for (index, bound_ms) in COMMIT_LATENCY_BUCKETS_MS.iter().enumerate() {
            cumulative += buckets.get(index).copied().unwrap_or(0);
            let le = (*bound_ms as f64 / 1000.0).to_string();
            self.sample(&bucket_name, &[("le", &le)], cumulative as f64);
        }
        // +Inf is the count itself, whatever the buckets say.
        self.sample(&bucket_name, &[("le", "+Inf")], count as f64);
        self.sample(&format!("{name}_sum"), &[], sum_ms as f64 / 1000.0);
        self.sample(&format!("{name}_count"), &[], count as f64);
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (index, (key, label)) in labels.iter().enumerate() {
                if index > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{key}=\"{}\"", escape_label(label));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    fn single(&mut self, name: &str, kind: &str, help: &str, value: f64) {
        self.header(name, kind, help);
        self.sample(name, &[], value);
    }
}

fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The node's metrics in Prometheus text format (version 0.0.4).
pub fn render_metrics(
    status: &hm_node::NodeStatus,
    disk_bytes: u64,
    traffic: TrafficTotals,
) -> String {
    let mut out = String::new();
    let mut family = Family { out: &mut out };
    let flag = |value: bool| if value { 1.0 } else { 0.0 };
    family.single(
        "hm_up",
        "gauge",
        "1 while the node runs.",
        flag(status.running),
    );
    family.single(
        "hm_bootstrap_phase",
        "gauge",
        "Bootstrap phase 0-3.",
        f64::from(status.trust.phase),
    );
    family.single(
        "hm_members_alive",
        "gauge",
        "Members the node believes alive, itself included.",
        status.alive_members.len() as f64,
    );
    family.single(
        "hm_peers_active",
        "gauge",
        "Peers in the membership active view.",
        status.active_peers.len() as f64,
    );
    family.single(
        "hm_peer_identity_rejections_total",
        "counter",
        "Connections refused because the peer's identity check failed.",
        status.identity_rejections as f64,
    );
    family.single(
        "hm_connections_dialed_total",
        "counter",
        "Outbound STOQ connections completed.",
        status.connections_dialed as f64,
    );
    family.header(
        "hm_membership_messages_total",
        "counter",
        "Membership messages, by direction.",
    );
    for (direction, value) in [
        ("sent", status.messages_sent),
        ("received", status.messages_received),
        ("dropped", status.messages_dropped),
    ] {
        family.sample(
            "hm_membership_messages_total",
            &[("direction", direction)],
            value as f64,
        );
    }
    let chain = &status.chain;
    family.single(
        "hm_chain_validator",
        "gauge",
        "1 when this node is a validator.",
        flag(chain.validator),
    );
    family.single(
        "hm_chain_height",
        "gauge",
        "Committed chain height.",
        chain.height as f64,
    );
    family.single(
        "hm_chain_mempool_transactions",
        "gauge",
        "Transactions waiting in the mempool.",
        chain.mempool as f64,
    );
    family.single(
        "hm_chain_links",
        "gauge",
        "Chain links to peers.",
        chain.links as f64,
    );
    family.single(
        "hm_chain_transactions_committed_total",
        "counter",
        "Transactions in committed blocks.",
        chain.transactions_committed as f64,
    );
    family.single(
        "hm_chain_evidence_committed_total",
        "counter",
        "Misbehaviour evidence in committed blocks.",
        chain.evidence_committed as f64,
    );
    family.single(
        "hm_chain_misbehaviour_reports_total",
        "counter",
        "Peer misbehaviour this node detected.",
        chain.misbehaviour_reports as f64,
    );
    family.header(
        "hm_chain_messages_sent_total",
        "counter",
        "Chain messages sent, by kind.",
    );
    for (kind, messages, _) in &chain.sent_by_kind {
        family.sample(
            "hm_chain_messages_sent_total",
            &[("kind", kind)],
            *messages as f64,
        );
    }
    family.header(
        "hm_chain_bytes_sent_total",
        "counter",
        "Chain message bytes sent over STOQ, by kind.",
    );
    for (kind, _, bytes) in &chain.sent_by_kind {
        family.sample(
            "hm_chain_bytes_sent_total",
            &[("kind", kind)],
            *bytes as f64,
        );
    }
    family.histogram(
        "hm_chain_own_commit_latency_seconds",
        "From deciding to propose a block to committing it, for this validator's own blocks.",
        &chain.own_commit_latency_buckets,
        chain.own_commit_latency_ms_total,
        chain.own_commits,
    );
    family.summary(
        "hm_chain_commit_interval_seconds",
        "Time between consecutive commits seen live.",
        chain.commit_interval_ms_total,
        chain.commit_intervals,
    );
    for (name, help, value) in [
        (
            "hm_stoq_datagrams_sent_total",
            "UDP datagrams the node's STOQ endpoint sent (QUIC packets, retransmissions included).",
            traffic.datagrams_sent,
        ),
        (
            "hm_stoq_bytes_sent_total",
            "UDP payload bytes the node's STOQ endpoint sent.",
            traffic.bytes_sent,
        ),
        (
            "hm_stoq_datagrams_received_total",
            "UDP datagrams the node's STOQ endpoint received.",
            traffic.datagrams_received,
        ),
        (
            "hm_stoq_bytes_received_total",
            "UDP payload bytes the node's STOQ endpoint received.",
            traffic.bytes_received,
        ),
    ] {
        family.single(name, "counter", help, value as f64);
    }
    family.single(
        "hm_disk_bytes",
        "gauge",
        "Bytes of files in the node's data dir.",
        disk_bytes as f64,
    );
    out
}

/// The API's OpenAPI 3.1 description.
pub const OPENAPI_JSON: &str = r##"{
  "openapi": "3.1.0",
  "info": {"title": "HyperMesh node API", "version": "1"},
  "components": {
    "securitySchemes": {"token": {"type": "http", "scheme": "bearer", "description": "The token in <data_dir>/api-token"}},
    "schemas": {
      "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
      "Head": {"type": "object", "required": ["height"], "properties": {"height": {"type": "integer"}, "head": {"type": ["string", "null"]}}},
      "NameRecord": {"type": "object", "properties": {"name": {"type": "string"}, "owner": {"type": "string"}, "addrs": {"type": "array", "items": {"type": "string"}}, "certificate": {"type": "string"}, "sequence": {"type": "integer"}, "updated_height": {"type": "integer"}}},
      "ResolveRequest": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}},
      "Peer": {"type": "object", "properties": {"node_id": {"type": "string"}, "member": {"type": "boolean"}, "overlay": {"type": "boolean"}, "chain_link": {"type": "boolean"}, "validator": {"type": "boolean"}}},
      "Block": {"type": "object", "properties": {"height": {"type": "integer"}, "hash": {"type": "string"}, "round": {"type": "integer"}, "previous_hash": {"type": "string"}, "timestamp_ms": {"type": "integer"}, "transactions": {"type": "integer"}, "evidence": {"type": "integer"}, "state_root": {"type": "string"}, "log_size": {"type": "integer"}, "encoded_bytes": {"type": "integer"}}},
      "Certificate": {"type": "object", "properties": {"fingerprint": {"type": "string"}, "subject": {"type": "string"}, "names": {"type": "array", "items": {"type": "string"}}, "not_before_ms": {"type": "integer"}, "not_after_ms": {"type": "integer"}, "authority": {"type": ["string", "null"]}, "issued_at_height": {"type": ["integer", "null"]}, "log_index": {"type": "integer"}, "revoked": {"type": "boolean"}, "issuer_revoked": {"type": "boolean"}}},
      "SubmitRequest": {"type": "object", "required": ["puts"], "properties": {"puts": {"type": "array", "minItems": 1, "items": {"type": "object", "required": ["key", "value"], "properties": {"key": {"type": "string", "minLength": 1}, "value": {"type": "string"}}}}}},
      "SubmitOutcome": {"type": "object", "properties": {"key": {"type": "string"}, "id": {"type": ["string", "null"]}, "refused": {"type": ["string", "null"]}}}
    },
    "responses": {
      "Unauthorized": {"description": "No or wrong bearer token", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
      "BadRequest": {"description": "Malformed path parameter or body; the error says what to send", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
      "NotFound": {"description": "No such block or certificate", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
      "Unavailable": {"description": "The chain service is starting, busy or absent; retry", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    }
  },
  "security": [{"token": []}],
  "paths": {
    "/v1/status": {"get": {"summary": "The node's status snapshot", "responses": {"200": {"description": "Status", "content": {"application/json": {}}}, "401": {"$ref": "#/components/responses/Unauthorized"}}}},
    "/v1/chain/head": {"get": {"summary": "Committed height and head hash", "responses": {"200": {"description": "Head", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Head"}}}}, "401": {"$ref": "#/components/responses/Unauthorized"}}}},
    "/v1/dns/{name}": {"get": {"summary": "A name's committed DNS record", "parameters": [{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}], "responses": {"200": {"description": "Record", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/NameRecord"}}}}, "400": {"description": "Not a DNS name"}, "404": {"description": "Not registered"}, "503": {"description": "No TrustChain state yet"}, "401": {"$ref": "#/components/responses/Unauthorized"}}}},
    "/v1/dns/resolve": {"post": {"summary": "A name's committed DNS record (JSON body)", "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ResolveRequest"}}}}, "responses": {"200": {"description": "Record", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/NameRecord"}}}}, "400": {"description": "Malformed JSON or not a DNS name"}, "404": {"description": "Not registered"}, "413": {"description": "Body over 64 KiB"}, "415": {"description": "Not application/json"}, "401": {"$ref": "#/components/responses/Unauthorized"}}}},
    "/v1/peers": {"get": {"summary": "Known peers: membership, overlay neighbours, chain links", "responses": {"200": {"description": "Peers", "content": {"application/json": {"schema": {"type": "array", "items": {"$ref": "#/components/schemas/Peer"}}}}}, "401": {"$ref": "#/components/responses/Unauthorized"}, "503": {"$ref": "#/components/responses/Unavailable"}}}},
    "/v1/chain/block/{height}": {"get": {"summary": "A committed block's header at a glance", "parameters": [{"name": "height", "in": "path", "required": true, "schema": {"type": "integer", "minimum": 1}}], "responses": {"200": {"description": "Block", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Block"}}}}, "400": {"$ref": "#/components/responses/BadRequest"}, "401": {"$ref": "#/components/responses/Unauthorized"}, "404": {"$ref": "#/components/responses/NotFound"}}}},
    "/v1/cert": {"get": {"summary": "The node's own current certificate", "responses": {"200": {"description": "Certificate", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Certificate"}}}}, "401": {"$ref": "#/components/responses/Unauthorized"}, "404": {"$ref": "#/components/responses/NotFound"}}}},
    "/v1/cert/{fingerprint}": {"get": {"summary": "A logged certificate by fingerprint", "parameters": [{"name": "fingerprint", "in": "path", "required": true, "schema": {"type": "string", "pattern": "^[0-9a-fA-F]{64}$"}}], "responses": {"200": {"description": "Certificate", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Certificate"}}}}, "400": {"$ref": "#/components/responses/BadRequest"}, "401": {"$ref": "#/components/responses/Unauthorized"}, "404": {"$ref": "#/components/responses/NotFound"}}}},
    "/v1/cert/renew": {"post": {"summary": "Renew the node's certificate through the chain now (from bootstrap phase 2)", "responses": {"200": {"description": "The fingerprint being replaced", "content": {"application/json": {"schema": {"type": "object", "properties": {"replacing": {"type": "string"}}}}}}, "401": {"$ref": "#/components/responses/Unauthorized"}, "409": {"$ref": "#/components/responses/BadRequest"}, "503": {"$ref": "#/components/responses/Unavailable"}}}},
    "/v1/tx/{id}": {"get": {"summary": "Where a submitted transaction stands: committed (final, with its height), pending (in this node's mempool, not durable) or unknown", "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string", "pattern": "^[0-9a-f]{64}$"}}], "responses": {"200": {"description": "The transaction's status", "content": {"application/json": {"schema": {"type": "object", "properties": {"status": {"type": "string", "enum": ["committed", "pending", "unknown"]}, "height": {"type": ["integer", "null"]}, "committed_height": {"type": "integer"}}}}}}, "400": {"$ref": "#/components/responses/BadRequest"}, "401": {"$ref": "#/components/responses/Unauthorized"}, "503": {"$ref": "#/components/responses/Unavailable"}}}},
    "/v1/tx": {"post": {"summary": "Submit key-value puts: admitted to this node's mempool and passed to the validators, not committed and not durable yet (GET /v1/tx/{id} tells when it is committed)", "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/SubmitRequest"}}}}, "responses": {"200": {"description": "Per put: its transaction id or why it was refused", "content": {"application/json": {"schema": {"type": "array", "items": {"$ref": "#/components/schemas/SubmitOutcome"}}}}}, "400": {"$ref": "#/components/responses/BadRequest"}, "401": {"$ref": "#/components/responses/Unauthorized"}, "413": {"$ref": "#/components/responses/BadRequest"}, "415": {"$ref": "#/components/responses/BadRequest"}, "503": {"$ref": "#/components/responses/Unavailable"}}}},
    "/v1/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI 3.1"}}}},
    "/metrics": {"get": {"summary": "Prometheus text format 0.0.4", "responses": {"200": {"description": "Metrics", "content": {"text/plain": {}}}, "401": {"$ref": "#/components/responses/Unauthorized"}}}}
  }
}"##;

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::HeaderMap;
    use axum::http::Request as HttpRequest;
    use tower::ServiceExt;

    const TOKEN: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    fn app() -> Router {
        let status = StatusHandle::default();
        status.update(|status| {
            status.running = true;
            status.chain.height = 7;
            status.chain.sent_by_kind = vec![("vote".into(), 3, 300), ("blocks".into(), 2, 2_000)];
            // Two commits within 5 ms, one within 50 ms, one beyond every bound.
            let mut buckets = vec![0; COMMIT_LATENCY_BUCKETS_MS.len() + 1];
            buckets[0] = 2;
            buckets[3] = 1;
            buckets[COMMIT_LATENCY_BUCKETS_MS.len()] = 1;
            status.chain.own_commit_latency_buckets = buckets;
            status.chain.own_commits = 4;
            status.chain.own_commit_latency_ms_total = 60_046;
        });
        router(
            status,
            TOKEN,
            Path::new("/nonexistent-data-dir"),
            NetTraffic::default(),
        )
    }

    async fn call(request: HttpRequest<Body>) -> (StatusCode, HeaderMap, Vec<u8>) {
        let response = app().oneshot(request).await.expect("the router answers");
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("a body under 1 MiB")
            .to_vec();
        (status, headers, body)
    }

    fn get_with(path: &str, authorization: Option<&str>) -> HttpRequest<Body> {
        let mut request = HttpRequest::get(path);
        if let Some(value) = authorization {
            request = request.header(header::AUTHORIZATION, value);
        }
        request.body(Body::empty()).expect("a valid request")
    }

    fn authorized(path: &str) -> HttpRequest<Body> {
        get_with(path, Some(&format!("Bearer {TOKEN}")))
    }

    fn post_json(path: &str, content_type: &str, body: Vec<u8>) -> HttpRequest<Body> {
        HttpRequest::post(path)
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .header(header::CONTENT_TYPE, content_type)
            .body(Body::from(body))
            .expect("a valid request")
    }

    fn error_text(body: &[u8]) -> String {
        serde_json::from_slice::<ErrorBody>(body)
            .unwrap_or_else(|_| panic!("not an error body: {}", String::from_utf8_lossy(body)))
            .error
    }

    #[tokio::test]
    async fn every_path_needs_the_token() {
        for path in [
            "/v1/status",
            "/v1/chain/head",
            "/v1/peers",
            "/v1/chain/block/1",
            "/v1/cert",
            "/metrics",
            "/v1/openapi.json",
            "/nope",
        ] {
            let (status, _, body) = call(get_with(path, None)).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
            assert!(
                error_text(&body).contains("Authorization: Bearer"),
                "{path}"
            );
            let (status, _, body) = call(get_with(path, Some("Bearer wrong"))).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
            assert!(error_text(&body).contains("wrong bearer token"));
            let (status, _, _) = call(get_with(path, Some(TOKEN))).await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{path}: no `Bearer ` scheme"
            );
        }
        let (status, _, body) = call(authorized("/v1/status")).await;
        assert_eq!(status, StatusCode::OK);
        let json: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(json["running"], true);
        assert_eq!(json["chain"]["height"], 7);
        let (status, _, body) = call(authorized("/v1/chain/head")).await;
        assert_eq!(status, StatusCode::OK);
        let head: Head = serde_json::from_slice(&body).expect("JSON");
        assert_eq!((head.height, head.head), (7, None));
        let (status, _, body) = call(authorized("/v1/nope")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(error_text(&body).contains("/v1/openapi.json"));
    }

    #[tokio::test]
    async fn bad_bodies_get_4xx_with_a_reason() {
        let path = "/v1/dns/resolve";
        let (status, _, body) =
            call(post_json(path, "application/json", b"{\"name\":".to_vec())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(error_text(&body).contains("send a JSON object"));
        let (status, _, _) = call(post_json(path, "application/json", b"[1,2]".to_vec())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let (status, _, _) = call(post_json(
            path,
            "text/plain",
            b"{\"name\":\"a.mesh\"}".to_vec(),
        ))
        .await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let mut oversized = b"{\"name\":\"".to_vec();
        oversized.extend(std::iter::repeat_n(b'a', BODY_BYTES_MAX));
        oversized.extend_from_slice(b"\"}");
        let (status, _, body) = call(post_json(path, "application/json", oversized)).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(error_text(&body).contains("at most"));
        let (status, _, body) = call(post_json(
            path,
            "application/json",
            b"{\"name\":\"not a name!\"}".to_vec(),
        ))
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(error_text(&body).contains("is not a DNS name"));
        // A well-formed request on a node without TrustChain state.
        let (status, _, body) = call(post_json(
            path,
            "application/json",
            b"{\"name\":\"node1.mesh\"}".to_vec(),
        ))
        .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(error_text(&body).contains("retry"));
    }

    /// Checks the Prometheus text format's rules that promtool checks too:
    /// every sample belongs to a family announced by HELP and TYPE before
    /// it, each family once, values are numbers, names are legal.
    fn check_exposition(text: &str) -> usize {
        let mut families: Vec<(String, String)> = Vec::new();
        let mut samples = 0;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().expect("a name");
                assert!(
                    families.iter().all(|(known, _)| known != name),
                    "{name} announced twice"
                );
                families.push((name.to_string(), String::new()));
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
                let last = families.last_mut().expect("TYPE before HELP");
                assert_eq!(last.0, name, "TYPE for another family than HELP");
                assert!(
                    ["gauge", "counter", "summary", "histogram"].contains(&kind),
                    "{kind}"
                );
                last.1 = kind.to_string();
            } else {
                let (series, value) = line.rsplit_once(' ').expect("series value");
                value.parse::<f64>().unwrap_or_else(|_| panic!("{line}"));
                let name = series.split('{').next().expect("a name");
                assert!(
                    name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                    "{name}"
                );
                let (family, kind) = families.last().expect("sample before HELP");
                let sum_or_count =
                    name == format!("{family}_sum") || name == format!("{family}_count");
                let suffix_ok = name == family
                    || (kind == "summary" && sum_or_count)
                    || (kind == "histogram"
                        && (sum_or_count
                            || (name == format!("{family}_bucket") && series.contains("le=\""))));
                assert!(suffix_ok, "{name} outside its family {family}");
                if kind == "counter" {
                    assert!(
                        family.ends_with("_total"),
                        "counter {family} without _total"
                    );
                }
                samples += 1;
            }
        }
        samples
    }

    #[tokio::test]
    async fn metrics_are_prometheus_text() {
        let (status, headers, body) = call(authorized("/metrics")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[header::CONTENT_TYPE], METRICS_CONTENT_TYPE);
        let text = String::from_utf8(body).expect("UTF-8");
        assert!(check_exposition(&text) > 20);
        assert!(text.contains("hm_chain_height 7\n"), "{text}");
        assert!(text.contains("hm_chain_bytes_sent_total{kind=\"blocks\"} 2000\n"));
        assert!(text.contains("hm_up 1\n"));
        // The histogram is cumulative, ends in +Inf = count, sums in seconds.
        let latency = "hm_chain_own_commit_latency_seconds";
        assert!(
            text.contains(&format!("{latency}_bucket{{le=\"0.005\"}} 2\n")),
            "{text}"
        );
        assert!(text.contains(&format!("{latency}_bucket{{le=\"0.025\"}} 2\n")));
        assert!(text.contains(&format!("{latency}_bucket{{le=\"0.05\"}} 3\n")));
        assert!(text.contains(&format!("{latency}_bucket{{le=\"30\"}} 3\n")));
        assert!(text.contains(&format!("{latency}_bucket{{le=\"+Inf\"}} 4\n")));
        assert!(text.contains(&format!("{latency}_sum 60.046\n")));
        assert!(text.contains(&format!("{latency}_count 4\n")));
    }

    #[test]
    fn label_values_are_escaped() {
        let mut status = hm_node::NodeStatus::default();
        status.chain.sent_by_kind = vec![("a\"b\\c\nd".into(), 1, 1)];
        let text = render_metrics(&status, 0, TrafficTotals::default());
        assert!(
            text.contains(r#"hm_chain_messages_sent_total{kind="a\"b\\c\nd"} 1"#),
            "{text}"
        );
        check_exposition(&text);
    }

    #[tokio::test]
    async fn the_openapi_document_lists_every_route() {
        let (status, _, body) = call(authorized("/v1/openapi.json")).await;
        assert_eq!(status, StatusCode::OK);
        let document: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        let paths = document["paths"].as_object().expect("paths");
        for path in [
            "/v1/status",
            "/v1/chain/head",
            "/v1/dns/{name}",
            "/v1/dns/resolve",
            "/v1/peers",
            "/v1/chain/block/{height}",
            "/v1/cert",
            "/v1/cert/{fingerprint}",
            "/v1/cert/renew",
            "/v1/tx",
            "/v1/tx/{id}",
            "/v1/openapi.json",
            "/metrics",
        ] {
            assert!(paths.contains_key(path), "{path} missing from the document");
        }
    }

    #[test]
    fn the_token_is_made_once_private_and_checked() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("temp dir");
        let token = load_or_create_token(dir.path()).expect("token");
        assert_eq!(token.len(), TOKEN_BYTES * 2);
        let path = dir.path().join(TOKEN_FILE);
        let mode = std::fs::metadata(&path)
            .expect("token file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(load_or_create_token(dir.path()).expect("token"), token);
        std::fs::write(&path, "not hex").expect("write");
        let error = load_or_create_token(dir.path())
            .expect_err("malformed token refused")
            .to_string();
        assert!(error.contains("hm-node init"), "{error}");
    }

    #[test]
    fn disk_usage_sums_files_below_the_dir() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("a"), [0u8; 100]).expect("write");
        std::fs::create_dir(dir.path().join("sub")).expect("mkdir");
        std::fs::write(dir.path().join("sub/b"), [0u8; 23]).expect("write");
        assert_eq!(dir_bytes(dir.path()), 123);
        assert_eq!(dir_bytes(&dir.path().join("missing")), 0);
    }

    #[tokio::test]
    async fn chain_paths_check_their_input_and_say_when_no_chain_answers() {
        // Malformed input is refused before the chain service is asked.
        let (status, _, body) = call(authorized("/v1/chain/block/x")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(error_text(&body).contains("not a block height"));
        let (status, _, body) = call(authorized("/v1/cert/abc")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(error_text(&body).contains("64 hex digits"));
        let (status, _, body) = call(post_json(
            "/v1/tx",
            "application/json",
            b"{\"puts\": []}".to_vec(),
        ))
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(error_text(&body).contains("1 to"), "{}", error_text(&body));
        let empty_key = br#"{"puts": [{"key": "", "value": "v"}]}"#.to_vec();
        let (status, _, body) = call(post_json("/v1/tx", "application/json", empty_key)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(error_text(&body).contains("empty key"));
        let (status, _, body) = call(post_json("/v1/tx", "application/json", b"{".to_vec())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(
            error_text(&body).contains("\"puts\""),
            "the example body is shown"
        );
        let (status, _, _) = call(post_json("/v1/tx", "text/plain", b"{}".to_vec())).await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        // Well-formed, but this router's status has no chain service.
        for request in [
            authorized("/v1/peers"),
            authorized("/v1/chain/block/1"),
            authorized("/v1/cert"),
            post_json("/v1/cert/renew", "application/json", Vec::new()),
            post_json(
                "/v1/tx",
                "application/json",
                br#"{"puts": [{"key": "k", "value": "v"}]}"#.to_vec(),
            ),
        ] {
            let (status, _, body) = call(request).await;
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
            assert!(error_text(&body).contains("runs no chain"));
        }
    }
}
