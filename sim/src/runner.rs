//! Runs one scenario under one seed: builds the universe, boots the nodes,
//! applies the fault schedule, checks properties while it runs, and stops as
//! soon as every property is decided.

use std::collections::{BTreeSet, VecDeque};
use std::net::{IpAddr, SocketAddrV6};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hm_env::mem::{MemDisk, StaticHardware};
use hm_env::{GpuInfo, HardwareInventory};
use hm_faults::GarbageEnv;
use hm_kernel::validators::ValidatorSet;
use hm_node::{NodeConfig, NodeId, StatusHandle};
use hm_trustchain::name::DnsName;
use madsim::rand::Rng;

use crate::chain::{Audit, ChainChecker, ChainSetup, ChainView, audit_chain};
use crate::client::{ClientLog, ClientPlan, acked_property, committed_transactions};
use crate::env::{ClockOffset, NodeHardwareState, SimEnv};
use crate::fork::{NodeDisk, accountable_property, find_fork};
use crate::html::Timeline;
use crate::light::LightChecker;
use crate::net::{NODE_PORT, SimNetwork, node_ip};
use crate::outcome::{
    PropertyResult, RunOutcome, Traffic, accept_expected_not_exercised, add_buckets, expect_fork,
};
use crate::scenario::Scenario;
use crate::timeline::{Action, link_of, seconds_to_ms, timeline};
use crate::trust::{TrustChecker, TrustView, reached_height};
use crate::wall::{peak_rss_bytes, wall_now_ms};
use crate::world::{Auditor, Counters, EventKind};

/// Stack of the thread a run executes on (madsim polls deep future trees).
pub const RUN_STACK_BYTES: usize = 64 << 20;
/// How often (simulated) properties are checked and progress is reported.
pub const CHECK_INTERVAL_MS: u64 = 1_000;

struct SimNode {
    madsim_id: madsim::task::NodeId,
    hardware: NodeHardwareState,
    status: StatusHandle,
    alive: bool,
    byzantine: bool,
    /// A light node (`NodeRole::Light`): it commits nothing.
    light: bool,
    /// Forges its identity: never a legitimate member.
    forger: bool,
    /// Presents a forged certificate: a real identity, but nodes in phase 3
    /// refuse it as a member, so the converged views leave it out.
    unwelcome: bool,
    /// What the node's supervisor did (see [`Supervisor`]).
    supervisor: Supervisor,
    /// The scenario injected disk errors into this node.
    disk_faulted: bool,
}

/// Restart delay of the simulated supervisor: `RestartSec` of
/// `node/host/dist/hm-node.service`.
const SUPERVISOR_RESTART_MS: u64 = 5_000;
/// `StartLimitBurst` starts within `StartLimitIntervalSec`: past it the
/// supervisor gives up and the node stays down, reported.
const SUPERVISOR_BURST_MAX: usize = 10;
const SUPERVISOR_WINDOW_MS: u64 = 600_000;

/// systemd's `Restart=on-failure` for one simulated node: a node that stops
/// with an error (its process exits; nothing is lost that its disk kept)
/// is started again after [`SUPERVISOR_RESTART_MS`], at most
/// [`SUPERVISOR_BURST_MAX`] times in [`SUPERVISOR_WINDOW_MS`].
#[derive(Debug, Default)]
struct Supervisor {
    /// When it restarts the node next (the node is down meanwhile).
    restart_at_ms: Option<u64>,
    /// Its restarts within the window, oldest first.
    recent_ms: VecDeque<u64>,
    restarts: u32,
    /// The errors the node stopped with (the first few).
    errors: Vec<String>,
    /// It stopped restarting the node: the last error.
    gave_up: Option<String>,
}

/// Errors kept per node for the report.
const SUPERVISED_ERRORS_SHOWN_MAX: usize = 3;

fn node_config(scenario: &Scenario, index: u32) -> NodeConfig {
    let listen = SocketAddrV6::new(node_ip(index), NODE_PORT, 0, 0);
    let seeds = (0..scenario.nodes.seeds)
        .filter(|seed| *seed != index)
        .map(|seed| SocketAddrV6::new(node_ip(seed), NODE_PORT, 0, 0))
        .collect();
    let mut config = NodeConfig::new(listen, seeds);
    // Validated to 1200..=65527 when the scenario was loaded.
    config.max_udp_payload_bytes = u16::try_from(scenario.network.max_udp_payload_bytes)
        .unwrap_or(hm_stoq::config::UDP_PAYLOAD_BYTES_DEFAULT);
    let tuning = &scenario.membership;
    let membership = &mut config.membership;
    if let Some(value) = tuning.gossip_interval_ms {
        membership.gossip_interval_ms = value;
    }
    if let Some(value) = tuning.probe_interval_ms {
        membership.probe_interval_ms = value;
    }
    if let Some(value) = tuning.suspicion_timeout_ms {
        membership.suspicion_timeout_ms = value;
    }
    if let Some(value) = tuning.anti_entropy_interval_ms {
        membership.anti_entropy_interval_ms = value;
    }
    if let Some(value) = tuning.active_view_max {
        membership.active_view_max = value;
    }
    config
}

fn hardware_of(scenario: &Scenario) -> StaticHardware {
    let profile = &scenario.nodes.hardware;
    StaticHardware {
        inventory: HardwareInventory {
            cpu_model: profile.cpu_model.clone(),
            cpu_cores: profile.cpu_cores,
            memory_bytes: profile.memory_gib << 30,
            storage_bytes: profile.storage_gib << 30,
            network_bits_per_second: profile.network_mbps * 1_000_000,
            gpus: Vec::<GpuInfo>::new(),
        },
        usage: Default::default(),
    }
}

/// What the checkers concluded at one instant.
struct Observation {
    live_honest: usize,
    converged: usize,
    unverified: Vec<String>,
    /// Up to DIVERGED_SHOWN_MAX nodes whose view differs, and how.
    diverged: Vec<String>,
}

/// Diverging views listed in a failed convergence property.
const DIVERGED_SHOWN_MAX: usize = 4;

fn observe(nodes: &[SimNode]) -> Observation {
    let mut known: BTreeSet<NodeId> = BTreeSet::new();
    let mut forgers: BTreeSet<NodeId> = BTreeSet::new();
    let mut live_ids: Vec<NodeId> = Vec::with_capacity(nodes.len());
    let mut all_booted = true;
    for node in nodes {
        match node.status.with(|status| status.node_id) {
            Some(id) if node.forger => {
                forgers.insert(id);
            }
            Some(id) => {
                known.insert(id);
                if node.alive && !node.unwelcome {
                    live_ids.push(id);
                }
            }
            None if node.alive => all_booted = false,
            None => {}
        }
    }
    live_ids.sort_unstable();
    let mut live_honest = 0;
    let mut converged = 0;
    let mut unverified = Vec::new();
    let mut diverged = Vec::new();
    let names: std::collections::BTreeMap<NodeId, usize> = nodes
        .iter()
        .enumerate()
        .filter_map(|(index, node)| {
            node.status
                .with(|status| status.node_id)
                .map(|id| (id, index))
        })
        .collect();
    for (index, node) in nodes.iter().enumerate() {
        if node.byzantine {
            continue;
        }
        node.status.with(|status| {
            for peer in &status.peers_accepted {
                if forgers.contains(peer) {
                    unverified.push(format!("n{index} accepted identity forger {peer:?}"));
                } else if !known.contains(peer) {
                    unverified.push(format!("n{index} accepted unknown peer {peer:?}"));
                }
            }
            if node.alive {
                live_honest += 1;
                if all_booted && status.running && status.alive_members == live_ids {
                    converged += 1;
                } else if diverged.len() < DIVERGED_SHOWN_MAX && all_booted {
                    let name = |id: &NodeId| {
                        names
                            .get(id)
                            .map_or_else(|| format!("{id:?}"), |index| format!("n{index}"))
                    };
                    let extra: Vec<String> = status
                        .alive_members
                        .iter()
                        .filter(|id| live_ids.binary_search(id).is_err())
                        .take(4)
                        .map(name)
                        .collect();
                    let missing: Vec<String> = live_ids
                        .iter()
                        .filter(|id| status.alive_members.binary_search(id).is_err())
                        .take(4)
                        .map(name)
                        .collect();
                    diverged.push(format!(
                        "n{index}{}: extra [{}] missing [{}]",
                        if status.running { "" } else { " (not running)" },
                        extra.join(" "),
                        missing.join(" ")
                    ));
                }
            }
        });
    }
    Observation {
        live_honest,
        converged,
        unverified,
        diverged,
    }
}

struct Progress {
    enabled: bool,
    interactive: bool,
    last_print_ms: f64,
}

impl Progress {
    fn report(&mut self, line: &str, force: bool) {
        if !self.enabled {
            return;
        }
        let now = wall_now_ms();
        let every_ms = if self.interactive { 500.0 } else { 10_000.0 };
        if !force && now - self.last_print_ms < every_ms {
            return;
        }
        self.last_print_ms = now;
        if self.interactive {
            eprint!("\r\x1b[2K{line}");
        } else {
            eprintln!("{line}");
        }
    }

    fn finish(&self) {
        if self.enabled && self.interactive {
            eprintln!();
        }
    }
}

/// Every node's supervisor: a node that stopped with an error is taken
/// down (its process exited: no unsynced write is lost, unlike power loss)
/// and started again after the restart delay, within the start limit.
fn supervise(
    nodes: &mut [SimNode],
    handle: &madsim::runtime::Handle,
    network: &SimNetwork,
    now_ms: u64,
) {
    for (index, node) in nodes.iter_mut().enumerate() {
        let supervisor = &mut node.supervisor;
        if node.alive
            && supervisor.restart_at_ms.is_none()
            && let Some(error) = node.status.snapshot().error
        {
            handle.kill(node.madsim_id);
            network.unbind_node(index as u32);
            node.status.mark_down();
            node.alive = false;
            if supervisor.errors.len() < SUPERVISED_ERRORS_SHOWN_MAX {
                supervisor.errors.push(error.clone());
            }
            while supervisor
                .recent_ms
                .front()
                .is_some_and(|at| now_ms.saturating_sub(*at) >= SUPERVISOR_WINDOW_MS)
            {
                supervisor.recent_ms.pop_front();
            }
            if supervisor.recent_ms.len() >= SUPERVISOR_BURST_MAX {
                supervisor.gave_up = Some(error);
            } else {
                supervisor.restart_at_ms = Some(now_ms + SUPERVISOR_RESTART_MS);
            }
        }
        if let Some(at) = supervisor.restart_at_ms
            && now_ms >= at
        {
            supervisor.restart_at_ms = None;
            if !node.alive {
                supervisor.recent_ms.push_back(now_ms);
                supervisor.restarts += 1;
                // The error belongs to the life that ended; the new one
                // reports its own.
                node.status.update(|status| status.error = None);
                handle.restart(node.madsim_id);
                node.alive = true;
            }
        }
    }
}

/// `no-node-errors`: no node stopped with an error, except nodes whose disk
/// the scenario made fail, and those only if their supervisor brought them
/// back (a disk that keeps failing leaves the node down: reported by name).
fn node_errors_property(nodes: &[SimNode]) -> PropertyResult {
    let mut unexpected = Vec::new();
    let mut down_for_good = Vec::new();
    let mut recovered = 0u32;
    let mut restarts = 0u32;
    for (index, node) in nodes.iter().enumerate() {
        let supervisor = &node.supervisor;
        let mut errors = supervisor.errors.clone();
        if node.alive
            && let Some(error) = node.status.snapshot().error
            && errors.len() < SUPERVISED_ERRORS_SHOWN_MAX
        {
            errors.push(error);
        }
        if errors.is_empty() {
            continue;
        }
        restarts += supervisor.restarts;
        if let Some(error) = &supervisor.gave_up {
            down_for_good.push(format!(
                "n{index} stayed down: its supervisor gave up after {} restarts (last error: {error})",
                supervisor.restarts
            ));
        } else if !node.disk_faulted {
            unexpected.push(format!("n{index}: {}", errors.join(" / then: ")));
        } else {
            recovered += 1;
        }
    }
    let mut problems: Vec<String> = down_for_good
        .into_iter()
        .chain(unexpected)
        .take(8)
        .collect();
    let passed = problems.is_empty();
    PropertyResult {
        name: "no-node-errors".into(),
        passed,
        detail: if passed && recovered == 0 {
            "no node stopped with an error".into()
        } else if passed {
            format!(
                "{recovered} nodes stopped on their injected disk errors and their supervisor restarted them ({restarts} restarts); none stopped otherwise"
            )
        } else {
            problems.dedup();
            problems.join("; ")
        },
    }
}

/// `membership-converges`: the live honest nodes saw exactly the live set
/// within the bound after the last fault. Converging later than the bound
/// fails like never converging (the run's deadline is stretched past the
/// bound, so a late convergence is observable).
fn membership_property(
    converged_after_s: Option<f64>,
    bound_s: f64,
    observation: &Observation,
    live_nodes: usize,
    observed_after_faults_s: u64,
) -> PropertyResult {
    let detail = match converged_after_s {
        Some(after) if after <= bound_s => format!(
            "all {} live honest nodes see exactly the {live_nodes} live nodes, {after:.1} s after the last fault (bound {bound_s} s)",
            observation.live_honest,
        ),
        Some(after) => format!(
            "the {} live honest nodes saw exactly the {live_nodes} live nodes only {after:.1} s after the last fault, past the bound of {bound_s} s",
            observation.live_honest,
        ),
        None => format!(
            "only {} of {} live honest nodes see exactly the live set {observed_after_faults_s} s after the last fault (bound {bound_s} s); {}",
            observation.converged,
            observation.live_honest,
            observation.diverged.join("; ")
        ),
    };
    PropertyResult {
        name: "membership-converges".into(),
        passed: converged_after_s.is_some_and(|after| after <= bound_s),
        detail,
    }
}

/// What [`World::judge`] concluded; [`run`] makes the [`RunOutcome`] of it.
struct SimResult {
    timeline: Timeline,
    properties: Vec<PropertyResult>,
    simulated_s: f64,
    converged_after_faults_s: Option<f64>,
    counters: Counters,
    traffic: Traffic,
    digest: String,
}

/// Runs one scenario in the madsim runtime it is called in: builds the
/// world, applies the fault schedule while observing the nodes, and judges
/// the properties.
async fn simulate(scenario: Scenario, seed: u64, progress: bool, wall_start_ms: f64) -> SimResult {
    let mut world = World::build(scenario, seed);
    world.run_schedule(progress, wall_start_ms).await;
    world.judge()
}

/// What every simulated host is wired to: the run's seed, the virtual
/// instant it started at, the auditor (the digest and the counters), the
/// network, and the runtime that creates, kills and restarts the hosts.
struct Fabric {
    seed: u64,
    start: Instant,
    auditor: Arc<Auditor>,
    network: Arc<SimNetwork>,
    handle: madsim::runtime::Handle,
}

/// The fault schedule and the instants the run is held to.
struct Schedule {
    /// The timed actions, in the order they apply.
    actions: Vec<(u64, Action)>,
    /// The first action not applied yet.
    next_action: usize,
    /// When the last fault ends.
    faults_end_ms: u64,
    /// With a client: when its transactions must have been committed.
    client_settle_ms: Option<u64>,
    /// When the run stops, whether or not every property is decided.
    deadline_ms: u64,
}

/// What the checkers saw while the schedule ran; [`World::judge`] reads it.
struct Observers {
    chain: ChainChecker,
    /// Also keeps the timeline (phases, heights, faults) for the report.
    trust: TrustChecker,
    /// What honest light nodes trusted, accepted and resolved.
    light: LightChecker,
    /// Each node's group in the timeline.
    group_of: Vec<usize>,
    /// The unverified peers honest nodes accepted (distinct, the first 16).
    unverified: Vec<String>,
    /// Since when, the faults over, every live honest node has seen exactly
    /// the live set.
    converged_at_ms: Option<u64>,
}

/// The simulated world of one run: built by [`World::build`], driven
/// through its schedule by [`World::run_schedule`] (which observes it as
/// it goes), and judged by [`World::judge`].
struct World {
    scenario: Scenario,
    fabric: Fabric,
    nodes: Vec<SimNode>,
    /// `nodes[i].byzantine`, by node.
    byzantine_flags: Vec<bool>,
    chain_setup: Option<ChainSetup>,
    /// Validator `i`'s key fingerprint (node `i`), and the genesis validators.
    validator_ids: Vec<hm_wire::Hash>,
    validator_set: Option<ValidatorSet>,
    /// The client's log, when the scenario runs a client.
    client_log: Option<Arc<Mutex<ClientLog>>>,
    schedule: Schedule,
    observers: Observers,
    /// Simulated time reached, since `fabric.start`.
    now_ms: u64,
}

/// What the observers concluded at one check.
struct Tick {
    live_honest: usize,
    converged: usize,
    /// One live honest node whose view differs, and how (shown in the
    /// progress line once the faults are over).
    disagreeing: Option<String>,
    /// Every fault applied and over.
    quiet: bool,
    /// The chain's and trust's checkers have nothing left to wait for.
    settled: bool,
}

impl World {
    /// Builds the world in the current runtime: the network, the chain's
    /// keys and genesis, the nodes' hosts (each boots after its spread
    /// delay), the fault schedule (its nodes drawn from the seed after the
    /// nodes are created and before the client is: the digest depends on
    /// that order), the client, the deadlines and the observers.
    fn build(scenario: Scenario, seed: u64) -> World {
        #[allow(clippy::disallowed_methods)] // virtual time
        let start = Instant::now();
        let auditor = Arc::new(Auditor::default());
        let network = Arc::new(SimNetwork::new(auditor.clone(), start, link_of(&scenario)));
        let fabric = Fabric {
            seed,
            start,
            auditor,
            network,
            handle: madsim::runtime::Handle::current(),
        };
        let hardware = hardware_of(&scenario);
        let chain_setup = scenario
            .chain
            .as_ref()
            .map(|chain| ChainSetup::new(&scenario, chain, seed));
        let nodes = fabric.spawn_nodes(&scenario, &hardware, chain_setup.as_ref());
        let actions = timeline(&scenario);
        let faults_end_ms = seconds_to_ms(scenario.faults_end_s());
        let client_log = fabric.spawn_client(&scenario, &nodes, hardware, faults_end_ms);
        let schedule = Schedule::new(&scenario, actions, faults_end_ms, client_log.is_some());
        let byzantine_flags: Vec<bool> = nodes.iter().map(|node| node.byzantine).collect();
        let (groups, group_of) = crate::trust::groups(&scenario, &byzantine_flags);
        let observers = Observers {
            chain: ChainChecker::default(),
            trust: TrustChecker::new(Timeline {
                interval_ms: CHECK_INTERVAL_MS,
                groups,
                samples: Vec::new(),
                bands: crate::trust::bands(&scenario),
                markers: Vec::new(),
            }),
            group_of,
            light: LightChecker::default(),
            unverified: Vec::new(),
            converged_at_ms: None,
        };
        let validator_ids: Vec<hm_wire::Hash> = chain_setup
            .as_ref()
            .map(|setup| {
                setup
                    .keys
                    .iter()
                    .map(|key| key.verifying_key().fingerprint())
                    .collect()
            })
            .unwrap_or_default();
        let validator_set = chain_setup
            .as_ref()
            .and_then(|setup| setup.genesis.validator_set().ok());
        World {
            scenario,
            fabric,
            nodes,
            byzantine_flags,
            chain_setup,
            validator_ids,
            validator_set,
            client_log,
            schedule,
            observers,
            now_ms: 0,
        }
    }

    /// Runs the schedule: at every check interval of simulated time it
    /// applies the actions due, lets the supervisors take down and restart
    /// nodes, observes the nodes and reports progress. Stops at the deadline,
    /// or as soon as every property is decided.
    async fn run_schedule(&mut self, progress: bool, wall_start_ms: f64) {
        let mut progress = Progress {
            enabled: progress,
            interactive: std::io::IsTerminal::is_terminal(&std::io::stderr()),
            last_print_ms: 0.0,
        };
        loop {
            self.apply_due_actions();
            supervise(
                &mut self.nodes,
                &self.fabric.handle,
                &self.fabric.network,
                self.now_ms,
            );
            let tick = self.observe_tick();
            self.report_progress(&mut progress, &tick, wall_start_ms);
            if self.now_ms >= self.schedule.deadline_ms
                || (tick.quiet
                    && self.observers.converged_at_ms.is_some()
                    && tick.settled
                    && self
                        .schedule
                        .client_settle_ms
                        .is_none_or(|at| self.now_ms >= at))
            {
                break;
            }
            self.now_ms += CHECK_INTERVAL_MS;
            madsim::time::sleep_until(self.fabric.start + Duration::from_millis(self.now_ms)).await;
        }
        progress.finish();
    }

    /// Applies every action of the schedule due by now, each recorded in the
    /// digest first.
    fn apply_due_actions(&mut self) {
        let now_ms = self.now_ms;
        let Fabric {
            start,
            auditor,
            network,
            handle,
            ..
        } = &self.fabric;
        let nodes = &mut self.nodes;
        let schedule = &mut self.schedule;
        while let Some((at_ms, action)) = schedule.actions.get(schedule.next_action) {
            if *at_ms > now_ms {
                break;
            }
            schedule.next_action += 1;
            auditor.record(
                EventKind::Fault,
                at_ms * 1_000_000,
                &[format!("{action:?}").as_bytes()],
            );
            match action {
                Action::SetPartition(partition) => {
                    if let Some(validators) = &self.validator_set {
                        let heights: Vec<u64> = nodes
                            .iter()
                            .map(|node| {
                                node.status
                                    .with(|status| reached_height(status, node.light))
                            })
                            .collect();
                        let light: Vec<bool> = nodes.iter().map(|node| node.light).collect();
                        match partition {
                            Some(partition) => self.observers.trust.partition_began(
                                &partition.group_of,
                                validators,
                                &self.validator_ids,
                                &heights,
                                &light,
                            ),
                            None => self.observers.trust.partition_ended(
                                &heights,
                                &self.byzantine_flags.iter().map(|b| !b).collect::<Vec<_>>(),
                                &light,
                            ),
                        }
                    }
                    network.set_partition(partition.clone())
                }
                Action::SetLink(link) => network.set_link(*link),
                Action::Kill(node) => {
                    let sim_node = &mut nodes[*node as usize];
                    // Power loss: whatever the supervisor had planned is off.
                    sim_node.supervisor.restart_at_ms = None;
                    if sim_node.alive {
                        handle.kill(sim_node.madsim_id);
                        network.unbind_node(*node);
                        let unsynced = sim_node.hardware.disk.unsynced_batches();
                        let kept = madsim::rand::thread_rng().gen_range(0..=unsynced);
                        sim_node.hardware.disk.crash(kept);
                        sim_node.status.mark_down();
                        sim_node.alive = false;
                    }
                }
                Action::Restart(node) => {
                    let sim_node = &mut nodes[*node as usize];
                    if !sim_node.alive {
                        handle.restart(sim_node.madsim_id);
                        sim_node.alive = true;
                    }
                }
                Action::Clog { node, duration_ms } => {
                    network.clog(*node, *start + Duration::from_millis(now_ms + duration_ms));
                }
                Action::SetClock { node, offset } => {
                    *crate::world::lock(&nodes[*node as usize].hardware.clock_offset) = *offset;
                }
                Action::DiskErrors { node, count } => {
                    nodes[*node as usize].hardware.disk.inject_io_errors(*count);
                    nodes[*node as usize].disk_faulted = true;
                }
                Action::ClearDiskErrors(node) => {
                    nodes[*node as usize].hardware.disk.clear_io_errors();
                }
            }
        }
    }

    /// One check: the membership views (convergence must hold once the
    /// faults are over, and a later divergence resets it), the peers honest
    /// nodes accepted, the chain, and trust's phases.
    fn observe_tick(&mut self) -> Tick {
        let now_ms = self.now_ms;
        let scenario = &self.scenario;
        let nodes = &self.nodes;
        let observers = &mut self.observers;
        let observation = observe(nodes);
        for violation in observation.unverified {
            if observers.unverified.len() < 16 && !observers.unverified.contains(&violation) {
                observers.unverified.push(violation);
            }
        }
        let quiet = now_ms >= self.schedule.faults_end_ms
            && self.schedule.next_action >= self.schedule.actions.len();
        let all_converged = observation.converged == observation.live_honest;
        if quiet && all_converged && observers.converged_at_ms.is_none() {
            observers.converged_at_ms = Some(now_ms);
        }
        if !all_converged {
            // Convergence must hold, not flicker: a later divergence resets it.
            observers.converged_at_ms = None;
        }
        let chain_settled = match &scenario.chain {
            Some(_) => {
                observers.chain.observe(
                    nodes.iter().enumerate().map(|(index, node)| ChainView {
                        index,
                        status: &node.status,
                        alive: node.alive,
                        honest: !node.byzantine,
                        light: node.light,
                    }),
                    now_ms,
                    quiet,
                );
                observers.chain.settled(scenario)
            }
            None => true,
        };
        let views = || {
            nodes.iter().enumerate().map(|(index, node)| TrustView {
                index,
                status: &node.status,
                alive: node.alive,
                honest: !node.byzantine,
                light: node.light,
                group: observers.group_of[index],
            })
        };
        observers.trust.observe(now_ms, views());
        if scenario.light_count() > 0 {
            observers.light.observe(views());
        }
        // Phase 3 is a property to wait for: a run with `[trust]` is not
        // over before every honest node got there (or the bound passed).
        let trust_settled = scenario.trust.is_none()
            || observers.trust.phase3_holds()
            || now_ms as f64 >= scenario.properties.phase3_within_s * 1000.0;
        Tick {
            live_honest: observation.live_honest,
            converged: observation.converged,
            disagreeing: observation.diverged.first().cloned(),
            quiet,
            settled: chain_settled && trust_settled,
        }
    }

    /// The progress line: simulated and wall time, agreement, the chain's
    /// heights and trust's phases.
    fn report_progress(&self, progress: &mut Progress, tick: &Tick, wall_start_ms: f64) {
        let counters = self.fabric.auditor.counters();
        let wall_s = (wall_now_ms() - wall_start_ms) / 1000.0;
        let phase_progress = if self.scenario.trust.is_some() {
            let latest = self.observers.trust.timeline.samples.last();
            let counts = latest.map_or([0; 4], |sample| {
                let mut counts = [0u32; 4];
                for group in &sample.groups {
                    for (total, count) in counts.iter_mut().zip(group.phase_counts) {
                        *total += count;
                    }
                }
                counts
            });
            format!(
                " · phases 0/1/2/3: {}/{}/{}/{}",
                counts[0], counts[1], counts[2], counts[3]
            )
        } else {
            String::new()
        };
        let chain_progress = if self.scenario.chain.is_some() {
            format!(
                " · chain heights {}..{}",
                self.observers.chain.min_height(),
                self.observers.chain.max_height()
            )
        } else {
            String::new()
        };
        let disagreeing = match &tick.disagreeing {
            Some(view) if tick.quiet => format!(" · e.g. {view}"),
            _ => String::new(),
        };
        progress.report(
            &format!(
                "[{:>6.1}/{:.0} s simulated, {:>5.1} s wall] {} live honest, {} agree{chain_progress}{phase_progress} · {} datagrams{disagreeing}",
                self.now_ms as f64 / 1000.0,
                self.schedule.deadline_ms as f64 / 1000.0,
                wall_s,
                tick.live_honest,
                tick.converged,
                counters.datagrams_delivered
            ),
            false,
        );
    }

    /// Judges the properties from the last observation, what the observers
    /// gathered and (with a chain) what the honest disks hold; sums the
    /// traffic; takes the counters and the digest.
    fn judge(self) -> SimResult {
        let nodes = &self.nodes;
        let scenario = &self.scenario;
        let faults_end_ms = self.schedule.faults_end_ms;
        let observation = observe(nodes);
        let mut properties = Vec::new();
        let converged_after = self
            .observers
            .converged_at_ms
            .map(|at| at.saturating_sub(faults_end_ms) as f64 / 1000.0);
        properties.push(membership_property(
            converged_after,
            scenario.properties.membership_converges_within_s,
            &observation,
            nodes
                .iter()
                .filter(|node| node.alive && !node.forger && !node.unwelcome)
                .count(),
            self.schedule.deadline_ms.saturating_sub(faults_end_ms) / 1000,
        ));
        if scenario.properties.only_verified_peers {
            let unverified = &self.observers.unverified;
            let rejections: u64 = nodes
                .iter()
                .map(|node| node.status.snapshot().identity_rejections)
                .sum();
            properties.push(PropertyResult {
                name: "only-verified-peers".into(),
                passed: unverified.is_empty(),
                detail: if unverified.is_empty() {
                    format!("no honest node accepted an unverified peer ({rejections} identity checks failed and were refused)")
                } else {
                    unverified.join("; ")
                },
            });
        }
        if let Some(setup) = &self.chain_setup {
            self.judge_chain(setup, &mut properties);
        }
        let traffic = traffic(nodes);
        properties.push(node_errors_property(nodes));
        accept_expected_not_exercised(&mut properties, &scenario.properties.not_exercised_ok);
        SimResult {
            timeline: self.observers.trust.timeline,
            properties,
            simulated_s: self.now_ms as f64 / 1000.0,
            converged_after_faults_s: converged_after,
            counters: self.fabric.auditor.counters(),
            traffic,
            digest: self.fabric.auditor.digest_hex(),
        }
    }

    /// The chain's properties, judged from what the honest disks hold; who
    /// forked it, if it forked; the client's acknowledged transactions; what
    /// a minority committed; and trust's properties.
    fn judge_chain(&self, setup: &ChainSetup, properties: &mut Vec<PropertyResult>) {
        let nodes = &self.nodes;
        let scenario = &self.scenario;
        // The auditor reads what the disks hold, as an outside reader would:
        // injected errors not yet consumed belong to the nodes' own I/O.
        for node in nodes {
            node.hardware.disk.clear_io_errors();
        }
        // Audit the chain of an honest validator that is up (its disk holds
        // what it committed); agreement ties every other node to it. A
        // light node's disk holds no block.
        let auditee = nodes
            .iter()
            .take(setup.keys.len())
            .find(|node| node.alive && !node.byzantine)
            .or_else(|| nodes.iter().find(|node| !node.byzantine && !node.light));
        let zone = ChainSetup::zone(scenario);
        let validity = match auditee {
            Some(node) => audit_chain(&setup.genesis, &zone, &node.hardware.disk, None),
            None => Err("no honest node to audit".into()),
        };
        let equivocators: Vec<hm_wire::Hash> = scenario
            .chain
            .iter()
            .flat_map(|chain| {
                (0..chain.validators)
                    .filter(|index| {
                        ChainSetup::fault_of(chain, *index)
                            == Some(hm_faults::chain::ChainFault::Equivocate)
                    })
                    .map(|index| setup.keys[index as usize].verifying_key().fingerprint())
            })
            .collect();
        properties.extend(self.observers.chain.properties(
            scenario,
            self.schedule.faults_end_ms,
            &validity,
            &equivocators,
        ));
        let agreement_failed = properties
            .iter()
            .any(|property| property.name == "chain-agreement" && !property.passed);
        if scenario.properties.expect_fork || agreement_failed {
            properties.push(self.fork_property(setup));
        }
        if scenario.properties.expect_fork {
            expect_fork(properties);
        }
        if let Some(client_log) = &self.client_log {
            let committed = match auditee {
                Some(node) => committed_transactions(&setup.genesis, &node.hardware.disk),
                None => Err("no honest node to audit".into()),
            };
            properties.push(acked_property(
                &crate::world::lock(client_log),
                &committed,
                scenario.properties.acked_commit_within_s,
            ));
        }
        if scenario.properties.minority_commits_nothing {
            properties.push(self.observers.trust.minority_property());
        }
        if scenario.trust.is_some() {
            properties.extend(self.trust_properties(setup, auditee, &zone, &validity));
        }
        if scenario.light_count() > 0 {
            properties.push(self.observers.light.property(&validity));
        }
    }

    /// Trust's properties: the nodes' phases and what names resolve to, in
    /// the TrustChain state rebuilt from the audited chain.
    fn trust_properties(
        &self,
        setup: &ChainSetup,
        auditee: Option<&SimNode>,
        zone: &DnsName,
        validity: &Result<Audit, String>,
    ) -> Vec<PropertyResult> {
        let nodes = &self.nodes;
        let scenario = &self.scenario;
        let views: Vec<TrustView<'_>> = nodes
            .iter()
            .enumerate()
            .map(|(index, node)| TrustView {
                index,
                status: &node.status,
                alive: node.alive,
                honest: !node.byzantine,
                light: node.light,
                group: self.observers.group_of[index],
            })
            .collect();
        let audited = match validity {
            Ok(audit) => audit
                .trust
                .as_ref()
                .ok_or_else(|| "the audit rebuilt no TrustChain state".to_string()),
            Err(error) => Err(error.clone()),
        };
        // Names must resolve in the state every live honest node holds:
        // the chain up to the lowest live honest height (a light node's:
        // the height of the latest header it trusts).
        let held_height = self
            .observers
            .light
            .trusted_min()
            .map_or(self.observers.chain.min_height(), |light| {
                light.min(self.observers.chain.min_height())
            });
        let held = match auditee {
            Some(node) => audit_chain(&setup.genesis, zone, &node.hardware.disk, Some(held_height))
                .and_then(|audit| {
                    audit
                        .trust
                        .ok_or_else(|| "the audit rebuilt no TrustChain state".to_string())
                }),
            None => Err("no honest node to audit".into()),
        };
        let byzantine_authorities: Vec<(usize, hm_wire::Hash)> = (0..scenario.nodes.count)
            .filter(|index| ChainSetup::authority_fault_of(scenario, *index).is_some())
            .filter_map(|index| {
                setup
                    .validator_addrs
                    .get(index as usize)
                    .map(|(id, _)| (index as usize, *id))
            })
            .collect();
        self.observers.trust.properties(
            scenario,
            &views,
            audited,
            held.as_ref()
                .map(|held| (held, held_height))
                .map_err(Clone::clone),
            &byzantine_authorities,
            &self.observers.light.names_resolved(),
        )
    }

    /// `fork-accountable`: who forked the chain, from two conflicting
    /// certificates on honest disks (their injected errors cleared).
    fn fork_property(&self, setup: &ChainSetup) -> PropertyResult {
        let nodes = &self.nodes;
        let disks: Vec<NodeDisk<'_>> = nodes
            .iter()
            .enumerate()
            .filter(|(_, node)| !node.byzantine && !node.light)
            .map(|(index, node)| NodeDisk {
                index,
                disk: &node.hardware.disk,
            })
            .collect();
        let fork = find_fork(&setup.genesis, &disks);
        let validator_nodes: Vec<Option<usize>> = self
            .validator_set
            .as_ref()
            .map(|set| {
                set.iter()
                    .map(|(_, validator)| {
                        self.validator_ids.iter().position(|id| *id == validator.id)
                    })
                    .collect()
            })
            .unwrap_or_default();
        accountable_property(
            &fork,
            &setup.genesis,
            &|index| validator_nodes.get(usize::from(index)).copied().flatten(),
            &|node| nodes.get(node).is_some_and(|node| node.byzantine),
        )
    }
}

impl Fabric {
    /// Creates every node's host: its disk, clock and hardware, its config
    /// and conduct ([`node_setup`]), and an init that runs the node (after
    /// its spread delay on the first boot, at once on a restart) and keeps
    /// the error it stops with.
    fn spawn_nodes(
        &self,
        scenario: &Scenario,
        hardware: &StaticHardware,
        chain_setup: Option<&ChainSetup>,
    ) -> Vec<SimNode> {
        let Fabric {
            seed,
            start,
            auditor,
            network,
            handle,
        } = self;
        let (seed, start) = (*seed, *start);
        let n = scenario.nodes.count;
        let garbage_from = n - scenario.byzantine.garbage_senders;
        let forgers_from = garbage_from - scenario.byzantine.identity_forgers;
        let mut nodes = Vec::with_capacity(n as usize);
        for index in 0..n {
            let state = NodeHardwareState {
                disk: MemDisk::new(hm_node::COLUMN_FAMILIES),
                clock_offset: Arc::new(Mutex::new(ClockOffset::default())),
                hardware: hardware.clone(),
            };
            let status = StatusHandle::default();
            let garbage = index >= garbage_from;
            let forger = (forgers_from..garbage_from).contains(&index);
            let byzantine_validator = scenario
                .chain
                .as_ref()
                .is_some_and(|chain| ChainSetup::fault_of(chain, index).is_some())
                || ChainSetup::authority_fault_of(scenario, index).is_some()
                || ChainSetup::forged_presenters(scenario).contains(&index);
            let boots = Arc::new(AtomicU32::new(0));
            let boot_delay = Duration::from_secs_f64(
                scenario.nodes.boot_spread_s * f64::from(index) / f64::from(n.max(1)),
            );
            let (config, conduct) = node_setup(scenario, chain_setup, index, forger, &state.disk);
            let garbage_every_nth = scenario.byzantine.garbage_every_nth;
            let init = {
                let (state, status, network, auditor) = (
                    state.clone(),
                    status.clone(),
                    network.clone(),
                    auditor.clone(),
                );
                move || {
                    let boot = boots.fetch_add(1, Ordering::Relaxed);
                    let env = SimEnv::new(
                        seed,
                        index,
                        boot,
                        &state,
                        network.clone(),
                        auditor.clone(),
                        start,
                    );
                    let config = config.clone();
                    let conduct = conduct.clone();
                    let status = status.clone();
                    let auditor = auditor.clone();
                    async move {
                        if boot == 0 {
                            madsim::time::sleep(boot_delay).await;
                        }
                        auditor.record(
                            EventKind::Boot,
                            0,
                            &[&index.to_le_bytes(), &boot.to_le_bytes()],
                        );
                        let result = if garbage {
                            hm_node::run_with_conduct(
                                GarbageEnv::new(env, garbage_every_nth),
                                config,
                                status.clone(),
                                conduct,
                            )
                            .await
                        } else {
                            hm_node::run_with_conduct(env, config, status.clone(), conduct).await
                        };
                        if let Err(error) = result {
                            tracing::warn!(node = index, %error, "node stopped with an error");
                            status.set_error(error.to_string());
                        }
                    }
                }
            };
            let node = handle
                .create_node()
                .name(format!("n{index}"))
                .ip(IpAddr::V6(node_ip(index)))
                .init(init)
                .build();
            nodes.push(SimNode {
                madsim_id: node.id(),
                hardware: state,
                status,
                alive: true,
                byzantine: garbage
                    || forger
                    || byzantine_validator
                    || scenario.lie_of(index).is_some(),
                light: scenario.is_light(index),
                forger,
                unwelcome: ChainSetup::forged_presenters(scenario).contains(&index),
                supervisor: Supervisor::default(),
                disk_faulted: false,
            });
        }
        nodes
    }

    /// The scenario's client, if it runs one: host `n`, outside the node
    /// numbering so that no fault picks it, sending transactions to the
    /// honest nodes until the faults end. Returns its log.
    fn spawn_client(
        &self,
        scenario: &Scenario,
        nodes: &[SimNode],
        hardware: StaticHardware,
        faults_end_ms: u64,
    ) -> Option<Arc<Mutex<ClientLog>>> {
        let chain = scenario
            .chain
            .as_ref()
            .filter(|chain| chain.client_interval_ms > 0)?;
        let (seed, start) = (self.seed, self.start);
        let n = scenario.nodes.count;
        let client_log = Arc::new(Mutex::new(ClientLog::default()));
        // Light nodes keep no mempool: the client asks replicas only.
        let targets: Vec<(u32, SocketAddrV6)> = (0..n)
            .filter(|index| !nodes[*index as usize].byzantine && !nodes[*index as usize].light)
            .map(|index| (index, SocketAddrV6::new(node_ip(index), NODE_PORT, 0, 0)))
            .collect();
        // The client is host `n`: outside the node numbering, so no fault
        // picks it.
        let state = NodeHardwareState {
            disk: MemDisk::new(hm_node::COLUMN_FAMILIES),
            clock_offset: Arc::new(Mutex::new(ClockOffset::default())),
            hardware,
        };
        let interval_ms = chain.client_interval_ms;
        let (network, auditor, log) = (
            self.network.clone(),
            self.auditor.clone(),
            client_log.clone(),
        );
        self.handle
            .create_node()
            .name("client")
            .ip(IpAddr::V6(node_ip(n)))
            .init(move || {
                let env = SimEnv::new(seed, n, 0, &state, network.clone(), auditor.clone(), start);
                let plan = ClientPlan {
                    targets: targets.clone(),
                    interval_ms,
                    stop_at_ms: faults_end_ms,
                    start,
                };
                crate::client::run(
                    env,
                    SocketAddrV6::new(node_ip(n), NODE_PORT, 0, 0),
                    plan,
                    log.clone(),
                )
            })
            .build();
        Some(client_log)
    }
}

impl Schedule {
    /// The schedule of `actions`, and when the run may stop: once the
    /// faults are over, it waits for the longest bound it judges against
    /// (membership, the chain's resumption, the client's commits, phase 3),
    /// and never past the scenario's duration.
    fn new(
        scenario: &Scenario,
        actions: Vec<(u64, Action)>,
        faults_end_ms: u64,
        client: bool,
    ) -> Schedule {
        let client_settle_ms = client
            .then(|| faults_end_ms + seconds_to_ms(scenario.properties.acked_commit_within_s));
        let mut bound_s = scenario.properties.membership_converges_within_s;
        if scenario.chain.is_some() {
            bound_s = bound_s.max(scenario.properties.chain_resumes_within_s);
        }
        let bound_ms = seconds_to_ms(bound_s);
        let mut settle_ms = faults_end_ms + bound_ms;
        if let Some(client_settle_ms) = client_settle_ms {
            settle_ms = settle_ms.max(client_settle_ms);
        }
        if scenario.trust.is_some() {
            settle_ms = settle_ms.max(seconds_to_ms(scenario.properties.phase3_within_s));
        }
        let deadline_ms = seconds_to_ms(scenario.duration_s).min(settle_ms);
        Schedule {
            actions,
            next_action: 0,
            faults_end_ms,
            client_settle_ms,
            deadline_ms,
        }
    }
}

/// Node `index`'s config and conduct: the scenario's tuning and
/// misbehaviour and, with a chain, its chain settings and conduct (its
/// identity key provisioned on its `disk`).
fn node_setup(
    scenario: &Scenario,
    chain_setup: Option<&ChainSetup>,
    index: u32,
    forger: bool,
    disk: &MemDisk,
) -> (NodeConfig, hm_node::conduct::Conduct) {
    let mut config = node_config(scenario, index);
    // Misbehaviour is injected into the honest node as its conduct.
    let mut conduct = hm_node::conduct::Conduct::default();
    if forger {
        conduct.presenter = Arc::new(hm_faults::ForgedBinding);
    }
    if let (Some(setup), Some(chain)) = (chain_setup, &scenario.chain) {
        if let Some(key) = setup.keys.get(index as usize) {
            hm_node::provision_identity(disk, key)
                .expect("a fresh memory disk accepts the identity");
        }
        let mut chain_config = setup.config(chain, index);
        chain_config.trust = setup.trust_settings(scenario, index);
        if scenario.is_light(index) {
            chain_config.role = hm_node::NodeRole::Light;
            // Light nodes ask the full replicas (the validators only when
            // the scenario has none).
            chain_config.full_nodes = (0..scenario.nodes.count)
                .filter(|other| scenario.role_of(*other) == crate::scenario::Role::Full)
                .map(|other| SocketAddrV6::new(node_ip(other), NODE_PORT, 0, 0))
                .collect();
        }
        config.chain = Some(chain_config);
        let presenter = conduct.presenter.clone();
        conduct = setup.conduct(scenario, index);
        conduct.presenter = presenter;
    }
    (config, conduct)
}

/// Protocol traffic summed over every node.
fn traffic(nodes: &[SimNode]) -> Traffic {
    let mut traffic = Traffic::default();
    let mut by_kind = vec![0u64; hm_node::membership::MESSAGE_KINDS];
    for node in nodes {
        node.status.with(|status| {
            for (total, count) in by_kind.iter_mut().zip(&status.membership_sent_by_kind) {
                *total += count;
            }
            traffic.membership_updates_sent += status.membership_updates_sent;
            traffic.connections_dialed += status.connections_dialed;
            if status.chain.validator {
                traffic.own_commits += status.chain.own_commits;
                traffic.own_commit_latency_ms_total += status.chain.own_commit_latency_ms_total;
                add_buckets(
                    &mut traffic.own_commit_latency_buckets,
                    &status.chain.own_commit_latency_buckets,
                );
                traffic.commit_intervals += status.chain.commit_intervals;
                traffic.commit_interval_ms_total += status.chain.commit_interval_ms_total;
            }
            for (kind, messages, bytes) in &status.chain.sent_by_kind {
                let total = traffic.chain_sent_by_kind.entry(kind.clone()).or_default();
                total.0 += messages;
                total.1 += bytes;
            }
        });
    }
    traffic.membership_sent_by_kind = hm_node::membership::Message::KIND_NAMES
        .iter()
        .zip(by_kind)
        .map(|(name, count)| (name.to_string(), count))
        .collect();
    traffic
}

/// Runs `scenario` under `seed`. Never panics: a panic inside the simulated
/// world becomes a failed run with the panic message.
pub fn run(scenario: &Scenario, scenario_path: &str, seed: u64, progress: bool) -> RunOutcome {
    let wall_start_ms = wall_now_ms();
    let mut config = madsim::Config::default();
    // Our SimNetwork models the network; madsim's own net is unused.
    config.net.packet_loss_rate = 0.0;
    let owned = scenario.clone();
    // Each run gets a fresh thread: std seeds HashMap keys once per thread, and
    // madsim can only make them deterministic before the thread's first map.
    // Without this a second run in the same process would not replay the first.
    let worker = std::thread::Builder::new()
        .name(format!("hm-sim-seed-{seed}"))
        .stack_size(RUN_STACK_BYTES)
        .spawn(move || {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let runtime = madsim::runtime::Runtime::with_seed_and_config(seed, config);
                runtime.block_on(simulate(owned, seed, progress, wall_start_ms))
            }))
        });
    let result = match worker {
        Ok(handle) => handle.join().unwrap_or_else(Err),
        Err(error) => Err(
            Box::new(format!("cannot start the simulation thread: {error}"))
                as Box<dyn std::any::Any + Send>,
        ),
    };
    let wall_s = (wall_now_ms() - wall_start_ms) / 1000.0;
    match result {
        Ok(result) => {
            let events_total = result.counters.events_total();
            RunOutcome {
                scenario: scenario.name.clone(),
                scenario_path: scenario_path.to_string(),
                seed,
                passed: result.properties.iter().all(|property| property.passed),
                properties: result.properties,
                nodes: scenario.nodes.count,
                simulated_s: result.simulated_s,
                wall_s,
                peak_rss_bytes: peak_rss_bytes(),
                network_latency_ms: scenario.network.latency_ms,
                counters: result.counters,
                events_total,
                events_per_wall_s: events_total as f64 / wall_s.max(1e-9),
                digest: result.digest,
                converged_after_faults_s: result.converged_after_faults_s,
                traffic: result.traffic,
                panic: None,
                timeline: Some(result.timeline),
            }
        }
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            RunOutcome {
                scenario: scenario.name.clone(),
                scenario_path: scenario_path.to_string(),
                seed,
                passed: false,
                properties: vec![PropertyResult {
                    name: "no-panic".into(),
                    passed: false,
                    detail: message.clone(),
                }],
                nodes: scenario.nodes.count,
                simulated_s: 0.0,
                wall_s,
                peak_rss_bytes: peak_rss_bytes(),
                network_latency_ms: scenario.network.latency_ms,
                counters: Counters::default(),
                events_total: 0,
                events_per_wall_s: 0.0,
                digest: String::new(),
                converged_after_faults_s: None,
                traffic: Traffic::default(),
                panic: Some(message),
                timeline: None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TINY: &str = r#"
        name = "tiny"
        duration_s = 60
        [nodes]
        count = 6
        seeds = 2
        boot_spread_s = 2
        [properties]
        membership_converges_within_s = 30
        [[faults]]
        kind = "crash"
        at_s = 5
        fraction = 0.2
        restart_after_s = 5
    "#;

    /// Replay across processes is checked end to end by
    /// `hm-sim run --check-determinism` (CI runs it). Within one process a
    /// second run does not yet replay the first: some library keeps global
    /// state across madsim runtimes (see ARCHITECTURE.md, known gaps), so
    /// this test only checks that a run passes and that the seed matters.
    #[test]
    fn a_tiny_run_passes_and_its_digest_depends_on_the_seed() {
        let scenario = Scenario::parse("tiny.toml", TINY).expect("scenario");
        let first = run(&scenario, "tiny.toml", 3, false);
        let other = run(&scenario, "tiny.toml", 4, false);
        assert!(first.passed, "{:?}", first.properties);
        assert!(first.counters.datagrams_delivered > 0);
        assert!(first.counters.timers_fired > 0 && first.counters.disk_ops > 0);
        assert_eq!(first.digest.len(), 64);
        assert_ne!(first.digest, other.digest);
    }

    #[test]
    fn a_fault_schedule_expands_into_timed_actions() {
        let scenario = Scenario::parse("tiny.toml", TINY).expect("scenario");
        let actions = madsim::runtime::Runtime::with_seed_and_config(1, madsim::Config::default())
            .block_on(async { timeline(&scenario) });
        // 20 % of 6 nodes: one kill at 5 s and its restart at 10 s.
        let times: Vec<u64> = actions.iter().map(|(at_ms, _)| *at_ms).collect();
        assert_eq!(times, vec![5_000, 10_000]);
        assert!(matches!(actions[0].1, Action::Kill(_)));
        assert!(matches!(actions[1].1, Action::Restart(_)));
    }

    #[test]
    fn membership_convergence_after_its_bound_fails() {
        let observation = Observation {
            live_honest: 5,
            converged: 5,
            unverified: Vec::new(),
            diverged: Vec::new(),
        };
        let on_time = membership_property(Some(29.5), 30.0, &observation, 6, 40);
        assert!(on_time.passed, "{}", on_time.detail);
        let late = membership_property(Some(31.0), 30.0, &observation, 6, 40);
        assert!(!late.passed, "converging past the bound must fail");
        assert!(late.detail.contains("past the bound"), "{}", late.detail);
        let never = membership_property(None, 30.0, &observation, 6, 40);
        assert!(!never.passed);
    }
}
