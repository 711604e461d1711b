//! A throwaway client of a node's API (`hm/api/1`), shared by the
//! `hm-node` client commands (submit/get/head) and the `hm` CLI.
//!
//! A client keeps nothing: it makes a fresh FALCON identity, runs its STOQ
//! endpoint on a [`ClientEnv`] (whose disk is memory) and accepts any node
//! identity ([`SelfSignedVerifier`]): it only reads and submits, and what
//! it reads is the node's own word.

use std::future::Future;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::sync::Arc;
use std::time::Duration;

use hm_node::{ApiClient, ApiClientError};
use hm_stoq::{Endpoint, SelfSignedVerifier, StoqConfig};
use hm_wire::SigningKey;

use crate::{ClientEnv, OsEntropy};

/// How long a client waits for one API answer.
pub const API_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client waits for a node to accept its connection (QUIC and
/// STOQ identity handshake); a node that is not running never answers.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("cannot open a STOQ endpoint for the client: {0}")]
    Endpoint(#[source] hm_stoq::StoqError),
    #[error(
        "cannot reach {addr}: is the node running, and is this its `listen` address? start it with `hm-node run --config <file>`"
    )]
    Unreachable {
        addr: SocketAddrV6,
        /// Why the connection failed (`None`: no answer within
        /// [`CONNECT_TIMEOUT`]).
        #[source]
        source: Option<Box<ApiClientError>>,
    },
    #[error("{addr} did not answer the request: {source}; check the node's log")]
    Call {
        addr: SocketAddrV6,
        #[source]
        source: Box<ApiClientError>,
    },
}

/// The client's STOQ endpoint: connects to nodes' APIs.
pub struct ApiEndpoint {
    endpoint: Endpoint<ClientEnv>,
}

impl ApiEndpoint {
    /// Connects to the API of the node listening on `addr`, waiting at most
    /// [`CONNECT_TIMEOUT`]; answers are awaited up to [`API_TIMEOUT`].
    pub async fn connect(&self, addr: SocketAddrV6) -> Result<ApiClient, ClientError> {
        let connect = ApiClient::connect(&self.endpoint, SocketAddr::V6(addr), API_TIMEOUT);
        match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
            Ok(Ok(client)) => Ok(client),
            Ok(Err(source)) => Err(ClientError::Unreachable {
                addr,
                source: Some(Box::new(source)),
            }),
            Err(_elapsed) => Err(ClientError::Unreachable { addr, source: None }),
        }
    }

    /// One request to `client` (connected to `addr`), its errors named
    /// after the node.
    pub async fn call(
        client: &ApiClient,
        addr: SocketAddrV6,
        request: &hm_node::ApiRequest,
    ) -> Result<hm_node::ApiResponse, ClientError> {
        client
            .call(request)
            .await
            .map_err(|source| ClientError::Call {
                addr,
                source: Box::new(source),
            })
    }
}

/// Runs `work` on a fresh client endpoint inside a current-thread runtime,
/// then closes the endpoint. `work`'s error type takes [`ClientError`]s (as
/// `anyhow::Error` does).
pub fn with_api_endpoint<T, E, F, Fut>(work: F) -> Result<T, E>
where
    F: FnOnce(ApiEndpoint) -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: From<ClientError>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ClientError::Runtime)?;
    runtime.block_on(async {
        let env = ClientEnv::new();
        let key = SigningKey::generate(&OsEntropy);
        let mut config = StoqConfig::new(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, 0, 0, 0));
        config.protocols = vec![hm_node::API_PROTOCOL.to_vec()];
        let endpoint = Endpoint::bind(&env, key, config, Arc::new(SelfSignedVerifier))
            .map_err(ClientError::Endpoint)?;
        let result = work(ApiEndpoint {
            endpoint: endpoint.clone(),
        })
        .await;
        endpoint.close();
        result
    })
}

/// [`with_api_endpoint`] for one node: connects to `addr` and runs `work`
/// with the client.
pub fn with_api_client<T, E, F, Fut>(addr: SocketAddrV6, work: F) -> Result<T, E>
where
    F: FnOnce(ApiClient) -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: From<ClientError>,
{
    with_api_endpoint(|endpoint| async move {
        let client = endpoint.connect(addr).await?;
        work(client).await
    })
}
