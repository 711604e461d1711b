//! The light node's shell (`NodeRole::Light`): runs a [`LightAgent`] over
//! API calls to full nodes and authorities, and publishes what it trusts.
//!
//! Only plumbing lives here: calls go to the full nodes in turn (a liar is
//! asked again only after the others), over one kept connection per full
//! node; answers come back to the agent's event loop. A light node keeps no
//! chain links (it closes any offered) and serves its own API from what it
//! holds (status), refusing what needs the chain's state.

use std::collections::BTreeMap;
use std::net::SocketAddrV6;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hm_env::{Clock, Disk, Env, EnvEntropy};
use hm_stoq::Endpoint;
use hm_wire::{Hash, SigningKey};
use tokio::sync::mpsc;

use crate::anchors::AnchorHeads;
use crate::api::{ApiCall, ApiClient, ApiRequest, ApiResponse, NodeSummary};
use crate::chain::{ChainConfig, ChainInbound};
use crate::conduct::Conduct;
use crate::error::NodeError;
use crate::ids::{KEY_PHASE, KEY_PRESENTED, TRUST_CF};
use crate::light_agent::{
    CallTo, FullNodes, LIGHT_CALL_TIMEOUT_MS, LIGHT_CLIENT_CALLS_MAX, LightAction, LightAgent,
};
use crate::status::StatusHandle;
use crate::trust::{AgentNow, TrustShared};
use hm_trustchain::name::DnsName;

/// Where a light node keeps the anchor heads it verified.
pub const KEY_ANCHORS: &[u8] = b"light-anchors";
/// How often the agent steps.
pub const LIGHT_TICK_MS: u64 = 500;
/// Calls in flight whose full node is remembered (far above the agent's
/// own bound on calls in flight).
pub const LIGHT_ASKED_KEPT_MAX: usize = 1_024;
/// Events waiting for the light loop.
pub const LIGHT_EVENT_QUEUE_MAX: usize = 1_024;

enum LightEvent {
    Answer {
        call: u64,
        answer: Result<ApiResponse, String>,
    },
    Api(ApiCall),
}

/// Connections to full nodes and authorities, kept between calls.
type Clients = Arc<Mutex<BTreeMap<SocketAddrV6, Arc<ApiClient>>>>;

#[allow(clippy::too_many_arguments)] // the same as `run_chain`'s
pub(crate) async fn run_light<E: Env>(
    env: E,
    endpoint: Endpoint<E>,
    signing_key: &SigningKey,
    config: ChainConfig,
    inbound: ChainInbound,
    status: StatusHandle,
    trust: TrustShared,
    conduct: Conduct,
) -> Result<(), NodeError> {
    let Some(settings) = config.trust.clone() else {
        return Err(NodeError::ChainStopped(
            "a light node needs [chain.trust] settings: it follows the chain to reach phase 3"
                .into(),
        ));
    };
    let me = signing_key.verifying_key().fingerprint();
    let genesis = config.genesis.clone();
    let validators = genesis.validator_set()?;
    if validators.index_of(&me).is_some() {
        return Err(NodeError::ChainStopped(
            "this node's key is a genesis validator's, and a validator must replicate the chain; set role = \"replica\" (or give the light node a key of its own)"
                .into(),
        ));
    }
    let start = env.clock().now();
    let mono_ms = |env: &E| {
        u64::try_from(
            env.clock()
                .now()
                .saturating_duration_since(start)
                .as_millis(),
        )
        .unwrap_or(u64::MAX)
    };
    // What the node verified before a restart stays trusted.
    if let Some(bytes) = env.disk().get(TRUST_CF, KEY_ANCHORS)? {
        match AnchorHeads::decode(&bytes) {
            Ok(heads) => *hm_env::sync::lock(&trust.anchors) = heads,
            Err(error) => {
                tracing::warn!(%error, "light: persisted anchor heads unreadable; fetching them again")
            }
        }
    }
    let kem = crate::chain::load_or_create_kem_key(&env)?;
    let persisted = crate::chain::load_phase(&env)?;
    trust.set_phase(persisted);
    let mut agent = LightAgent::new(
        signing_key.duplicate(),
        kem.public_key(),
        EnvEntropy(env.clone()),
        settings,
        endpoint.local_addr(),
        genesis.chain_id(),
        validators,
        config.validator_addrs.clone(),
        persisted,
        trust.anchors.clone(),
        conduct.presentation.clone(),
        AgentNow {
            mono_ms: 0,
            wall_ms: env.clock().wall_ms(),
        },
    );
    let full_nodes: Vec<SocketAddrV6> = if config.full_nodes.is_empty() {
        config
            .validator_addrs
            .iter()
            .map(|(_, addr)| *addr)
            .collect()
    } else {
        config.full_nodes.clone()
    };
    if full_nodes.is_empty() {
        return Err(NodeError::ChainStopped(
            "a light node needs full nodes to ask (chain.full_nodes, or validators)".into(),
        ));
    }
    let (events, mut inbox) = mpsc::channel(LIGHT_EVENT_QUEUE_MAX);
    let mut shell = Shell {
        env: env.clone(),
        endpoint,
        trust: trust.clone(),
        clients: Clients::default(),
        // A place of its own, so light nodes spread over the full nodes.
        full_nodes: FullNodes::new(
            full_nodes,
            u64::from_le_bytes(me.0[..8].try_into().unwrap_or([0; 8])),
        ),
        asked: BTreeMap::new(),
        events: events.clone(),
        replies: BTreeMap::new(),
        next_ticket: 0,
    };
    let ChainInbound {
        mut accepted,
        mut api_calls,
    } = inbound;
    tokio::spawn(async move {
        while let Some(connection) = accepted.recv().await {
            connection.close("light node: it keeps no chain links; sync from a full node");
        }
    });
    {
        let events = events.clone();
        tokio::spawn(async move {
            while let Some(call) = api_calls.recv().await {
                if events.send(LightEvent::Api(call)).await.is_err() {
                    break;
                }
            }
        });
    }
    status.update(|status| {
        status.chain.enabled = true;
        status.chain.validator = false;
        status.chain.boots += 1;
        status.chain.committed.clear();
        status.chain.height = 0;
        status.chain.light = Some(Default::default());
        status.trust.enabled = true;
    });
    let tick = Duration::from_millis(LIGHT_TICK_MS);
    let mut next_tick = start;
    loop {
        let now = env.clock().now();
        let agent_now = AgentNow {
            mono_ms: mono_ms(&env),
            wall_ms: env.clock().wall_ms(),
        };
        let mut actions = Vec::new();
        if now >= next_tick {
            actions = agent.tick(agent_now);
            publish(&agent, &trust, &status);
            next_tick = now + tick;
        }
        for action in actions {
            shell.perform(action);
        }
        tokio::select! {
            event = inbox.recv() => match event {
                Some(LightEvent::Answer { call, answer }) => {
                    let agent_now = AgentNow {
                        mono_ms: mono_ms(&env),
                        wall_ms: env.clock().wall_ms(),
                    };
                    let actions = match answer {
                        Ok(answer) => agent.on_answer(agent_now, call, answer),
                        Err(error) => {
                            tracing::debug!(node = %shell.endpoint.local_addr(), %error, call, "light: call failed");
                            if let Some(addr) = shell.asked.get(&call).copied() {
                                shell.full_nodes.distrust(addr);
                            }
                            agent.on_failed(call)
                        }
                    };
                    // A `Distrust` among them still finds whom it was.
                    for action in actions {
                        shell.perform(action);
                    }
                    shell.asked.remove(&call);
                }
                Some(LightEvent::Api(call)) => {
                    let agent_now = AgentNow {
                        mono_ms: mono_ms(&env),
                        wall_ms: env.clock().wall_ms(),
                    };
                    for action in shell.answer_api(&mut agent, agent_now, me, call) {
                        shell.perform(action);
                    }
                }
                None => return Ok(()),
            },
            () = env.clock().sleep_until(next_tick.max(now)) => {}
        }
    }
}

fn publish<E: hm_env::Entropy>(agent: &LightAgent<E>, trust: &TrustShared, status: &StatusHandle) {
    let agent_status = agent.status();
    let light = agent.light_status().clone();
    let record = trust.record();
    let log_head = agent.log_head();
    trust.set_phase(agent_status.phase);
    status.update(|status| {
        status.chain.light = Some(light);
        let view = &mut status.trust;
        view.enabled = true;
        view.phase = agent_status.phase.number();
        view.phase_entered_ms = agent_status.phase_entered_ms;
        view.missing_for_next_phase = agent_status.missing.map(str::to_string);
        view.certificate = agent_status.certificate;
        view.certificate_chain_issued = agent_status.chain_issued;
        view.certificate_requests = agent_status.certificate_requests;
        view.renewals = agent_status.renewals;
        view.name_claims = agent_status.name_claims;
        if log_head.is_some() {
            view.log_head = log_head;
        }
        view.accepted_certificates = record.accepted;
        view.refused_certificates = record.refused;
        view.pending_certificates = record.pending;
        view.uncertified_refused = record.uncertified_refused;
    });
}

/// What the loop needs to carry out the agent's actions.
struct Shell<E: Env> {
    env: E,
    endpoint: Endpoint<E>,
    trust: TrustShared,
    clients: Clients,
    full_nodes: FullNodes,
    /// Which full node each call in flight went to.
    asked: BTreeMap<u64, SocketAddrV6>,
    events: mpsc::Sender<LightEvent>,
    /// Clients waiting for a proven answer, by ticket.
    replies: BTreeMap<u64, tokio::sync::oneshot::Sender<ApiResponse>>,
    next_ticket: u64,
}

impl<E: Env> Shell<E> {
    /// Answers a client of this node: what it holds at once, a name once
    /// it is proven (the reply waits for [`LightAction::Reply`]).
    fn answer_api<R: hm_env::Entropy>(
        &mut self,
        agent: &mut LightAgent<R>,
        now: AgentNow,
        me: Hash,
        call: ApiCall,
    ) -> Vec<LightAction> {
        let status = agent.status();
        let light = agent.light_status();
        let answer = match &call.request {
            ApiRequest::Resolve { name } => match DnsName::parse(name) {
                Ok(name) => {
                    if self.replies.len() >= LIGHT_CLIENT_CALLS_MAX {
                        let _ = call.reply.send(ApiResponse::Error(
                            "this light node is busy proving other answers; retry shortly".into(),
                        ));
                        return Vec::new();
                    }
                    let ticket = self.next_ticket;
                    self.next_ticket += 1;
                    self.replies.insert(ticket, call.reply);
                    return agent.resolve(now, name, ticket);
                }
                Err(error) => ApiResponse::Error(format!("{name:?} is not a DNS name: {error}")),
            },
            ApiRequest::Status => ApiResponse::Status(Box::new(NodeSummary {
                node_id: me,
                validator: false,
                light: true,
                height: light.trusted_height,
                head: light.trusted_hash,
                phase: status.phase.number(),
                certificate: status.certificate,
                certificate_chain_issued: status.chain_issued,
                missing_for_next_phase: status.missing.map(str::to_string),
                log_size: agent.log_head().map_or(0, |head| head.size),
                name: agent.proven_name().map(|name| name.to_string()),
            })),
            ApiRequest::CertificateInfo { fingerprint } => match agent.own_certificate() {
                Some(own) if fingerprint.is_none_or(|asked| asked == own.fingerprint) => {
                    ApiResponse::CertificateInfo(Box::new(own))
                }
                Some(_) => ApiResponse::Error(
                    "a light node proves only its own certificate; ask a full node about others"
                        .into(),
                ),
                None => ApiResponse::Error(
                    "this light node has not proven a certificate of its own yet (bootstrap phase 0); ask again once it reaches phase 2"
                        .into(),
                ),
            },
            ApiRequest::Head => ApiResponse::Head {
                height: light.trusted_height,
                head: light.trusted_hash,
                validator: false,
            },
            _ => ApiResponse::Error(
                "this is a light node: it stores no chain state; ask a full node (with --genesis, `hm dns resolve` proves the answer)"
                    .into(),
            ),
        };
        let _ = call.reply.send(answer);
        Vec::new()
    }

    fn perform(&mut self, action: LightAction) {
        match action {
            LightAction::Distrust { call } => {
                if let Some(addr) = self.asked.remove(&call) {
                    tracing::info!(%addr, "light: a full node's answer was refused; asking others");
                    self.full_nodes.distrust(addr);
                }
            }
            LightAction::Reply { ticket, answer } => {
                if let Some(reply) = self.replies.remove(&ticket) {
                    let _ = reply.send(answer);
                }
            }
            LightAction::Call { call, to, request } => {
                let addr = match to {
                    CallTo::Authority { addr, .. } => addr,
                    CallTo::FullNode => {
                        let addr = self.full_nodes.pick();
                        if self.asked.len() < LIGHT_ASKED_KEPT_MAX {
                            self.asked.insert(call, addr);
                        }
                        addr
                    }
                };
                spawn_call(
                    &self.env,
                    &self.endpoint,
                    &self.clients,
                    addr,
                    call,
                    request,
                    self.events.clone(),
                );
            }
            LightAction::Present(bytes) => {
                let disk = self.env.disk();
                if let Err(error) = disk.put_synced(TRUST_CF, KEY_PRESENTED, &bytes) {
                    tracing::warn!(%error, "light: cannot persist the presented certificate");
                }
                if let Err(error) = self.endpoint.present(bytes) {
                    tracing::warn!(%error, "light: cannot present the certificate");
                }
            }
            LightAction::PersistPhase(phase) => {
                let disk = self.env.disk();
                if let Err(error) = disk.put_synced(TRUST_CF, KEY_PHASE, &[phase.number()]) {
                    tracing::warn!(%error, "light: cannot persist the phase");
                }
                self.trust.set_phase(phase);
            }
            LightAction::PersistAnchors(bytes) => {
                // Not synced: anchors lost in a crash are fetched again.
                let mut batch = hm_env::WriteBatch::new();
                batch.put(TRUST_CF, KEY_ANCHORS.to_vec(), bytes);
                if let Err(error) = self.env.disk().write(batch) {
                    tracing::warn!(%error, "light: cannot persist the anchor heads");
                }
            }
        }
    }
}

fn spawn_call<E: Env>(
    env: &E,
    endpoint: &Endpoint<E>,
    clients: &Clients,
    addr: SocketAddrV6,
    call: u64,
    request: ApiRequest,
    events: mpsc::Sender<LightEvent>,
) {
    let endpoint = endpoint.clone();
    let clients = clients.clone();
    let env = env.clone();
    tokio::spawn(async move {
        let timeout = Duration::from_millis(LIGHT_CALL_TIMEOUT_MS);
        let attempt = async {
            // A kept connection may have gone idle and closed without our
            // noticing yet: one failure on it is retried on a fresh one.
            let kept = hm_env::sync::lock(&clients)
                .get(&addr)
                .filter(|client| !client.is_closed())
                .cloned();
            if let Some(client) = kept {
                match client.call(&request).await {
                    Ok(answer) => return Ok(answer),
                    Err(_) => {
                        hm_env::sync::lock(&clients).remove(&addr);
                        client.close();
                    }
                }
            }
            let client = ApiClient::connect(&endpoint, std::net::SocketAddr::V6(addr), timeout)
                .await
                .map_err(|error| match std::error::Error::source(&error) {
                    Some(source) => format!("{error}: {source}"),
                    None => error.to_string(),
                })?;
            let client = Arc::new(client);
            hm_env::sync::lock(&clients).insert(addr, client.clone());
            let answer = client.call(&request).await;
            if answer.is_err() {
                hm_env::sync::lock(&clients).remove(&addr);
                client.close();
            }
            answer.map_err(|error| format!("{error} ({addr})"))
        };
        let answer = match hm_env::timeout(env.clock(), timeout, attempt).await {
            Ok(answer) => answer,
            Err(_) => Err(format!("{addr} did not answer in time")),
        };
        let _ = events.send(LightEvent::Answer { call, answer }).await;
    });
}
