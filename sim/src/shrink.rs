//! Shrinking a failing run: the search for a smaller scenario that still
//! fails the same property.
//!
//! Sans-I/O: a [`Shrinker`] proposes candidate scenarios ([`Shrinker::next_batch`])
//! and takes one [`Verdict`] per candidate ([`Shrinker::record`]); it never
//! runs anything, reads no clock and touches no file. `hm-sim shrink` is the
//! shell that runs each candidate in its own process and feeds the verdicts
//! back; the tests drive it with a fake oracle.
//!
//! The search is greedy. Passes walk the reductions in a fixed order —
//! drop faults (all of them, then halves, quarters, … single faults, as in
//! delta debugging), fewer Byzantine actors of each kind, fewer followers,
//! fewer validators, a shorter duration, shorter faults — and take a
//! candidate as the new best when it still fails. After a taken candidate
//! the walk goes on from the same place in the reductions of the new best;
//! the search stops when a whole pass takes nothing, or at the run budget.
//!
//! A candidate is only proposed when it validates, is strictly smaller than
//! the best by [`Size`] (no component larger, one smaller), has not already
//! been run and failed to reproduce, and does not push the Byzantine
//! validators to a third of the stake or more when the original kept below
//! it (beyond BFT's fault bound a fork is expected, not a bug to shrink).
//!
//! Results do not depend on how many candidates run at once: a batch is
//! decided in candidate order (the first one that reproduces is taken, the
//! rest are dropped and proposed again from the new best), which is what a
//! one-at-a-time search would have done. Only the runs spent differ.

use std::fmt;

use hm_faults::Fault;

use crate::scenario::Scenario;

/// Candidate runs one search may spend, unless told otherwise.
pub const RUNS_MAX_DEFAULT: u32 = 60;
/// Passes over all reductions one search may make: every taken candidate
/// makes the scenario strictly smaller, so passes end, but a bound is stated.
pub const PASSES_MAX: u32 = 32;
/// Reductions proposed per kind and pass: a schedule of thousands of faults
/// would otherwise propose thousands of chunks (each a scenario clone).
pub const CHANGES_PER_STAGE_MAX: usize = 64;
/// Faults are not shortened below this, in seconds: shorter than a few
/// message delays and rounds, a fault no longer means what it says.
pub const FAULT_S_MIN: f64 = 0.1;

/// How big a scenario is, compared component by component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size {
    pub nodes: u32,
    pub validators: u32,
    /// Byzantine actors of every kind: chain validators, certificate
    /// authorities, forged presenters, garbage senders, identity forgers.
    pub byzantine: u32,
    pub faults: u32,
    /// Summed time the faults act (their end minus their start).
    pub fault_ms: u64,
    pub duration_ms: u64,
}

impl Size {
    pub fn of(scenario: &Scenario) -> Self {
        let nodes = scenario.nodes.count;
        let chain = scenario.chain.as_ref();
        let trust = scenario.trust.as_ref();
        let fault_s: f64 = scenario
            .faults
            .iter()
            .map(|fault| (fault.end_s(nodes as usize) - fault.at_s()).max(0.0))
            .sum();
        Self {
            nodes,
            validators: chain.map_or(0, |chain| chain.validators),
            byzantine: chain.map_or(0, |chain| chain.byzantine_validators)
                + trust.map_or(0, |trust| {
                    trust.byzantine_authorities + trust.forged_presenters
                })
                + scenario.byzantine.garbage_senders
                + scenario.byzantine.identity_forgers,
            faults: u32::try_from(scenario.faults.len()).unwrap_or(u32::MAX),
            fault_ms: seconds_to_ms(fault_s),
            duration_ms: seconds_to_ms(scenario.duration_s),
        }
    }

    /// No component above `other`'s, and at least one below.
    pub fn smaller_than(&self, other: &Size) -> bool {
        let at_most = self.nodes <= other.nodes
            && self.validators <= other.validators
            && self.byzantine <= other.byzantine
            && self.faults <= other.faults
            && self.fault_ms <= other.fault_ms
            && self.duration_ms <= other.duration_ms;
        at_most && self != other
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} nodes, {} validators, {} Byzantine, {} faults ({:.1} s of faults), {:.0} s",
            self.nodes,
            self.validators,
            self.byzantine,
            self.faults,
            self.fault_ms as f64 / 1000.0,
            self.duration_ms as f64 / 1000.0
        )
    }
}

fn seconds_to_ms(seconds: f64) -> u64 {
    (seconds * 1000.0).round().max(0.0) as u64
}

/// Who misbehaves; each kind is reduced on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByzantineKind {
    ChainValidators,
    Authorities,
    ForgedPresenters,
    GarbageSenders,
    IdentityForgers,
}

impl ByzantineKind {
    const ALL: [ByzantineKind; 5] = [
        ByzantineKind::ChainValidators,
        ByzantineKind::Authorities,
        ByzantineKind::ForgedPresenters,
        ByzantineKind::GarbageSenders,
        ByzantineKind::IdentityForgers,
    ];

    fn name(self) -> &'static str {
        match self {
            ByzantineKind::ChainValidators => "Byzantine validators",
            ByzantineKind::Authorities => "Byzantine authorities",
            ByzantineKind::ForgedPresenters => "forged presenters",
            ByzantineKind::GarbageSenders => "garbage senders",
            ByzantineKind::IdentityForgers => "identity forgers",
        }
    }

    fn get(self, scenario: &Scenario) -> u32 {
        match self {
            ByzantineKind::ChainValidators => scenario
                .chain
                .as_ref()
                .map_or(0, |chain| chain.byzantine_validators),
            ByzantineKind::Authorities => scenario
                .trust
                .as_ref()
                .map_or(0, |trust| trust.byzantine_authorities),
            ByzantineKind::ForgedPresenters => scenario
                .trust
                .as_ref()
                .map_or(0, |trust| trust.forged_presenters),
            ByzantineKind::GarbageSenders => scenario.byzantine.garbage_senders,
            ByzantineKind::IdentityForgers => scenario.byzantine.identity_forgers,
        }
    }

    fn set(self, scenario: &mut Scenario, value: u32) {
        match self {
            ByzantineKind::ChainValidators => {
                if let Some(chain) = scenario.chain.as_mut() {
                    chain.byzantine_validators = value;
                }
            }
            ByzantineKind::Authorities => {
                if let Some(trust) = scenario.trust.as_mut() {
                    trust.byzantine_authorities = value;
                }
            }
            ByzantineKind::ForgedPresenters => {
                if let Some(trust) = scenario.trust.as_mut() {
                    trust.forged_presenters = value;
                }
            }
            ByzantineKind::GarbageSenders => scenario.byzantine.garbage_senders = value,
            ByzantineKind::IdentityForgers => scenario.byzantine.identity_forgers = value,
        }
    }
}

/// One reduction of a scenario.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Drop `faults[start..end]`.
    DropFaults { start: usize, end: usize },
    /// Halve how long every fault acts.
    HalveFaults,
    /// Halve how long `faults[index]` acts.
    HalveFault { index: usize },
    /// Fewer Byzantine actors of one kind.
    Byzantine { kind: ByzantineKind, to: u32 },
    /// Fewer nodes, taken from the followers (validators, seeds and light
    /// nodes stay).
    Nodes { to: u32 },
    /// Fewer validators: the last ones become followers (a later pass
    /// may drop them as followers).
    Validators { to: u32 },
    /// A shorter `duration_s`.
    Duration { to_s: f64 },
}

impl Change {
    /// The scenario with this change made. The result may not validate;
    /// the shrinker checks before proposing it.
    pub fn apply(&self, before: &Scenario) -> Scenario {
        let mut after = before.clone();
        match self {
            Change::DropFaults { start, end } => {
                let end = (*end).min(after.faults.len());
                after.faults.drain((*start).min(end)..end);
            }
            Change::HalveFaults => {
                for fault in &mut after.faults {
                    halve(fault);
                }
            }
            Change::HalveFault { index } => {
                if let Some(fault) = after.faults.get_mut(*index) {
                    halve(fault);
                }
            }
            Change::Byzantine { kind, to } => kind.set(&mut after, *to),
            Change::Nodes { to } => {
                // Taken from the full replicas: the light nodes stay.
                if let Some(full) = after.nodes.full.as_mut() {
                    *full = full.saturating_sub(after.nodes.count.saturating_sub(*to));
                }
                after.nodes.count = *to;
            }
            Change::Validators { to } => {
                if let Some(chain) = after.chain.as_mut() {
                    // The validators dropped become full replicas.
                    if let Some(full) = after.nodes.full.as_mut() {
                        *full += chain.validators.saturating_sub(*to);
                    }
                    // Workload nodes that were all validators stay so.
                    if chain.workload_nodes <= chain.validators {
                        chain.workload_nodes = chain.workload_nodes.min(*to);
                    }
                    chain.validators = *to;
                    if !chain.stakes.is_empty() {
                        chain.stakes.truncate(*to as usize);
                    }
                }
            }
            Change::Duration { to_s } => after.duration_s = *to_s,
        }
        after
    }

    /// What the change does, in the words of the scenario file.
    pub fn describe(&self, before: &Scenario) -> String {
        let fault_name = |index: usize| {
            before.faults.get(index).map_or_else(
                || format!("fault {index}"),
                |fault| format!("fault {index} ({} at {} s)", fault.kind(), fault.at_s()),
            )
        };
        match self {
            Change::DropFaults { start, end } if end - start == 1 => {
                format!("drop {}", fault_name(*start))
            }
            Change::DropFaults { start, end } if *start == 0 && *end >= before.faults.len() => {
                format!("drop all {} faults", before.faults.len())
            }
            Change::DropFaults { start, end } => format!("drop faults {start}..{end}"),
            Change::HalveFaults => "halve every fault".into(),
            Change::HalveFault { index } => match before.faults.get(*index).and_then(acting_s) {
                Some(seconds) => format!(
                    "shorten {} from {seconds} s to {} s",
                    fault_name(*index),
                    halved(seconds)
                ),
                None => format!("shorten {}", fault_name(*index)),
            },
            Change::Byzantine { kind, to } => {
                format!("{} {} → {to}", kind.name(), kind.get(before))
            }
            Change::Nodes { to } => format!("nodes {} → {to} (followers)", before.nodes.count),
            Change::Validators { to } => {
                let from = before.chain.as_ref().map_or(0, |chain| chain.validators);
                format!("validators {from} → {to} (the others follow)")
            }
            Change::Duration { to_s } => format!("duration {} s → {to_s} s", before.duration_s),
        }
    }
}

/// How long a fault acts, for the faults that have a length to shorten.
fn acting_s(fault: &Fault) -> Option<f64> {
    match fault {
        Fault::Partition { duration_s, .. }
        | Fault::Loss { duration_s, .. }
        | Fault::Latency { duration_s, .. }
        | Fault::Clog { duration_s, .. } => Some(*duration_s),
        Fault::Crash {
            restart_after_s, ..
        } => *restart_after_s,
        Fault::DiskErrors { duration_s, .. } => *duration_s,
        Fault::Swizzle { step_s, .. } => Some(*step_s),
        Fault::Clock { .. } => None,
    }
}

/// Half of `seconds` in whole milliseconds, not below [`FAULT_S_MIN`]
/// (a fault already at or below it keeps its length).
fn halved(seconds: f64) -> f64 {
    if seconds <= FAULT_S_MIN {
        return seconds;
    }
    ((seconds * 500.0).round() / 1000.0).max(FAULT_S_MIN)
}

fn halve(fault: &mut Fault) {
    match fault {
        Fault::Partition { duration_s, .. }
        | Fault::Loss { duration_s, .. }
        | Fault::Latency { duration_s, .. }
        | Fault::Clog { duration_s, .. } => *duration_s = halved(*duration_s),
        Fault::Crash {
            restart_after_s: Some(seconds),
            ..
        }
        | Fault::DiskErrors {
            duration_s: Some(seconds),
            ..
        } => *seconds = halved(*seconds),
        Fault::Swizzle { step_s, .. } => *step_s = halved(*step_s),
        Fault::Crash { .. } | Fault::DiskErrors { .. } | Fault::Clock { .. } => {}
    }
}

/// The kinds of reduction, in the order a pass tries them: the ones that
/// remove the most (and make the following runs fastest) first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    DropFaults,
    FewerByzantine,
    FewerFollowers,
    FewerValidators,
    ShorterDuration,
    ShorterFaults,
}

const STAGES: [Stage; 6] = [
    Stage::DropFaults,
    Stage::FewerByzantine,
    Stage::FewerFollowers,
    Stage::FewerValidators,
    Stage::ShorterDuration,
    Stage::ShorterFaults,
];

/// Smaller values than `value` to try, boldest first: `least`, halfway,
/// and one less (without repeats).
fn smaller_values(value: u32, least: u32) -> Vec<u32> {
    let mut values = Vec::new();
    for to in [
        least,
        least + (value.saturating_sub(least)) / 2,
        value.saturating_sub(1),
    ] {
        if to < value && to >= least && !values.contains(&to) {
            values.push(to);
        }
    }
    values
}

/// The simulated time a run needs: the last fault's end plus the longest
/// bound the runner waits for after it (as the runner's `Schedule::new` computes
/// its deadline), in whole seconds.
pub fn duration_s_needed(scenario: &Scenario) -> f64 {
    let properties = &scenario.properties;
    let mut bound_s = properties.membership_converges_within_s;
    if scenario.chain.is_some() {
        bound_s = bound_s.max(properties.chain_resumes_within_s);
    }
    let mut needed_s = scenario.faults_end_s() + bound_s;
    if scenario.trust.is_some() {
        needed_s = needed_s.max(properties.phase3_within_s);
    }
    needed_s.ceil()
}

/// The reductions of one kind for `scenario`, at most [`CHANGES_PER_STAGE_MAX`].
/// With `keep_fault_bound`, validators are not reduced to where the
/// Byzantine ones hold a third of the stake.
fn changes(stage: Stage, scenario: &Scenario, keep_fault_bound: bool) -> Vec<Change> {
    let mut changes = Vec::new();
    match stage {
        Stage::DropFaults => {
            // Chunks of len, len/2, len/4, … 1 faults (delta debugging).
            let len = scenario.faults.len();
            let mut chunk = len;
            while chunk > 0 && changes.len() < CHANGES_PER_STAGE_MAX {
                for start in (0..len).step_by(chunk) {
                    changes.push(Change::DropFaults {
                        start,
                        end: (start + chunk).min(len),
                    });
                }
                chunk = if chunk == 1 { 0 } else { chunk.div_ceil(2) };
            }
        }
        Stage::FewerByzantine => {
            for kind in ByzantineKind::ALL {
                for to in smaller_values(kind.get(scenario), 0) {
                    changes.push(Change::Byzantine { kind, to });
                }
            }
        }
        Stage::FewerFollowers => {
            let trust = scenario.trust.as_ref();
            let validators = scenario.chain.as_ref().map_or(0, |chain| chain.validators);
            let least = scenario
                .nodes
                .seeds
                .max(validators + scenario.light_count())
                + scenario.byzantine.garbage_senders
                + scenario.byzantine.identity_forgers
                + trust.map_or(0, |trust| trust.forged_presenters);
            for to in smaller_values(scenario.nodes.count, least.max(1)) {
                changes.push(Change::Nodes { to });
            }
        }
        Stage::FewerValidators => {
            if let Some(chain) = &scenario.chain {
                let mut least = chain
                    .byzantine_validators
                    .max(
                        scenario
                            .trust
                            .as_ref()
                            .map_or(0, |t| t.byzantine_authorities),
                    )
                    .max(1);
                // The fewest that keep the Byzantine stake below a third
                // (at most 256 validators to look through).
                let beyond_bound = |to: u32| {
                    let change = Change::Validators { to };
                    change.apply(scenario).fault_bound_warning().is_some()
                };
                while keep_fault_bound && least < chain.validators && beyond_bound(least) {
                    least += 1;
                }
                for to in smaller_values(chain.validators, least) {
                    changes.push(Change::Validators { to });
                }
            }
        }
        Stage::ShorterDuration => {
            let needed_s = duration_s_needed(scenario);
            let halfway_s = (needed_s + (scenario.duration_s - needed_s) / 2.0).ceil();
            for to_s in [needed_s, halfway_s] {
                if to_s < scenario.duration_s && !changes.contains(&Change::Duration { to_s }) {
                    changes.push(Change::Duration { to_s });
                }
            }
        }
        Stage::ShorterFaults => {
            if scenario.faults.len() > 1 {
                changes.push(Change::HalveFaults);
            }
            for index in 0..scenario.faults.len() {
                changes.push(Change::HalveFault { index });
            }
        }
    }
    changes.truncate(CHANGES_PER_STAGE_MAX);
    changes
}

/// What a run of a candidate showed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It failed the property being shrunk.
    Reproduces,
    /// It passed that property — or failed only others, crashed, or timed
    /// out: none of which is the failure being shrunk.
    DoesNotReproduce,
}

/// What the shrinker made of a verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The candidate is the new smallest failing scenario.
    Taken,
    DoesNotReproduce,
    /// It reproduces too, but an earlier candidate of the same batch was
    /// taken (a one-at-a-time search would never have run this one).
    AlsoReproduces,
}

/// Why a search ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// A whole pass over every reduction took nothing.
    NothingLeft,
    /// The run budget is spent (more reductions might still work).
    Budget,
    /// [`PASSES_MAX`] passes were made.
    Passes,
}

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stop::NothingLeft => "no reduction left: a whole pass took nothing",
            Stop::Budget => "the run budget is spent (more runs might shrink it further)",
            Stop::Passes => "the pass limit is reached",
        })
    }
}

/// A scenario to run.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// 1-based number of this run in the search.
    pub run: u32,
    /// The reduction, in words.
    pub what: String,
    pub scenario: Scenario,
    pub size: Size,
}

#[derive(Debug, thiserror::Error)]
pub enum ShrinkError {
    #[error("the scenario to shrink is invalid: {0}")]
    Invalid(String),
    #[error(
        "nothing to shrink: seed {seed} passes every property (the build may differ from the one that failed: HM_SIM_FEATURES)"
    )]
    NothingToShrink { seed: u64 },
    #[error(
        "seed {seed} does not fail `{property}` (it fails: {failed}); name one of those with --property"
    )]
    PropertyPassed {
        seed: u64,
        property: String,
        failed: String,
    },
    #[error("`{0}` is no property; the properties are {names}", names = crate::scenario::PROPERTY_NAMES.join(", "))]
    UnknownProperty(String),
    #[error("the original run did not complete, so there is no failure to shrink: {0}")]
    OriginalBroken(String),
    #[error("the smallest scenario does not read back as itself: {0}")]
    RoundTrip(String),
}

/// Bounds of one search.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Candidate runs (the original run is not counted).
    pub runs_max: u32,
    pub passes_max: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            runs_max: RUNS_MAX_DEFAULT,
            passes_max: PASSES_MAX,
        }
    }
}

/// The greedy search over reductions of a failing scenario.
#[derive(Debug)]
pub struct Shrinker {
    original_size: Size,
    best: Scenario,
    best_size: Size,
    limits: Limits,
    /// The original kept the Byzantine stake below a third: so must every candidate.
    keep_fault_bound: bool,
    runs: u32,
    taken: u32,
    pass: u32,
    taken_in_pass: u32,
    /// Where the walk is: `STAGES[stage]`, `changes[position]` (of `best`).
    stage: usize,
    position: usize,
    changes: Vec<Change>,
    /// Candidates that ran and did not reproduce: never proposed again
    /// (at most `limits.runs_max` of them).
    tried: Vec<Scenario>,
    /// Candidates proposed and not yet decided, with where they came from.
    batch: Vec<(Candidate, usize, usize)>,
    /// Reductions not proposed (invalid, not smaller, already tried, or
    /// beyond the fault bound).
    skipped: u32,
    stop: Option<Stop>,
}

impl Shrinker {
    /// Starts a search from `original`, a scenario that fails.
    pub fn new(original: Scenario, limits: Limits) -> Result<Self, ShrinkError> {
        original.validate().map_err(ShrinkError::Invalid)?;
        let size = Size::of(&original);
        let keep_fault_bound = original.fault_bound_warning().is_none();
        Ok(Self {
            original_size: size,
            keep_fault_bound,
            changes: changes(STAGES[0], &original, keep_fault_bound),
            best: original,
            best_size: size,
            limits,
            runs: 0,
            taken: 0,
            pass: 1,
            taken_in_pass: 0,
            stage: 0,
            position: 0,
            tried: Vec::new(),
            batch: Vec::new(),
            skipped: 0,
            stop: None,
        })
    }

    /// The smallest scenario found so far that still fails.
    pub fn best(&self) -> &Scenario {
        &self.best
    }

    pub fn best_size(&self) -> Size {
        self.best_size
    }

    pub fn original_size(&self) -> Size {
        self.original_size
    }

    pub fn runs(&self) -> u32 {
        self.runs
    }

    /// Candidates taken as the new best.
    pub fn taken(&self) -> u32 {
        self.taken
    }

    pub fn passes(&self) -> u32 {
        self.pass
    }

    pub fn skipped(&self) -> u32 {
        self.skipped
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Why the search ended (`None` while it goes on).
    pub fn stop(&self) -> Option<Stop> {
        self.stop
    }

    /// Whether `scenario` may be proposed after `best`.
    fn admissible(&self, scenario: &Scenario) -> bool {
        Size::of(scenario).smaller_than(&self.best_size)
            && scenario.validate().is_ok()
            && (!self.keep_fault_bound || scenario.fault_bound_warning().is_none())
            && !self.tried.contains(scenario)
            && !self
                .batch
                .iter()
                .any(|(other, ..)| other.scenario == *scenario)
    }

    fn load_stage(&mut self, stage: usize) {
        self.stage = stage;
        self.position = 0;
        self.changes = STAGES.get(stage).map_or_else(Vec::new, |stage| {
            changes(*stage, &self.best, self.keep_fault_bound)
        });
    }

    /// Up to `jobs` candidates to run next (fewer near the end of a pass or
    /// of the budget). Empty once the search has ended: see [`Self::stop`].
    /// Every candidate needs a verdict ([`Self::record`]) before the next batch.
    pub fn next_batch(&mut self, jobs: usize) -> Vec<Candidate> {
        assert!(
            self.batch.is_empty(),
            "record the verdicts of the last batch first"
        );
        let jobs = jobs.max(1);
        while self.stop.is_none()
            && self.batch.len() < jobs
            && self.runs + (self.batch.len() as u32) < self.limits.runs_max
        {
            if self.stage >= STAGES.len() {
                if !self.batch.is_empty() {
                    break; // the pass ends once these are decided
                }
                if self.taken_in_pass == 0 {
                    self.stop = Some(Stop::NothingLeft);
                } else if self.pass >= self.limits.passes_max {
                    self.stop = Some(Stop::Passes);
                } else {
                    self.pass += 1;
                    self.taken_in_pass = 0;
                    self.load_stage(0);
                }
                continue;
            }
            let Some(change) = self.changes.get(self.position).cloned() else {
                self.load_stage(self.stage + 1);
                continue;
            };
            let position = self.position;
            self.position += 1;
            let scenario = change.apply(&self.best);
            if !self.admissible(&scenario) {
                self.skipped += 1;
                continue;
            }
            let candidate = Candidate {
                run: self.runs + self.batch.len() as u32 + 1,
                what: change.describe(&self.best),
                size: Size::of(&scenario),
                scenario,
            };
            self.batch.push((candidate, self.stage, position));
        }
        if self.batch.is_empty() && self.stop.is_none() {
            self.stop = Some(Stop::Budget);
        }
        self.batch
            .iter()
            .map(|(candidate, ..)| candidate.clone())
            .collect()
    }

    /// Takes the verdicts of the last batch, in its order, and says what was
    /// made of each. The first candidate that reproduces becomes the best.
    pub fn record(&mut self, verdicts: &[Verdict]) -> Vec<Decision> {
        assert_eq!(
            verdicts.len(),
            self.batch.len(),
            "one verdict per candidate of the last batch"
        );
        let batch = std::mem::take(&mut self.batch);
        self.runs += batch.len() as u32;
        let first = verdicts.iter().position(|v| *v == Verdict::Reproduces);
        let mut decisions = Vec::with_capacity(batch.len());
        for (index, ((candidate, stage, position), verdict)) in
            batch.into_iter().zip(verdicts).enumerate()
        {
            match (*verdict, Some(index) == first) {
                (Verdict::Reproduces, true) => {
                    assert!(candidate.size.smaller_than(&self.best_size));
                    self.best = candidate.scenario;
                    self.best_size = candidate.size;
                    self.taken += 1;
                    self.taken_in_pass += 1;
                    // Go on from the same reduction of the new best: it
                    // names the next chunk, or the same count once more.
                    self.load_stage(stage);
                    self.position = position;
                    decisions.push(Decision::Taken);
                }
                (Verdict::Reproduces, false) => decisions.push(Decision::AlsoReproduces),
                (Verdict::DoesNotReproduce, _) => {
                    self.tried.push(candidate.scenario);
                    decisions.push(Decision::DoesNotReproduce);
                }
            }
        }
        decisions
    }
}

/// The shrunk scenario as a file: `header` lines as TOML comments, then the
/// scenario. Reading it back gives the same scenario (checked).
pub fn render(scenario: &Scenario, header: &[String]) -> Result<String, ShrinkError> {
    let body =
        toml::to_string(scenario).map_err(|error| ShrinkError::RoundTrip(error.to_string()))?;
    let mut text = String::new();
    for line in header {
        for part in line.lines() {
            text.push_str("# ");
            text.push_str(part);
            text.push('\n');
        }
    }
    text.push_str(&body);
    let back = Scenario::parse("shrunk scenario", &text)
        .map_err(|error| ShrinkError::RoundTrip(error.to_string()))?;
    if back != *scenario {
        return Err(ShrinkError::RoundTrip(
            "a field changed between writing and reading".into(),
        ));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// consensus-churn's shape: 12 nodes, 7 validators (2 Byzantine),
    /// 12 short partitions.
    fn churn() -> Scenario {
        let mut text = String::from(
            "name = \"churn\"\nduration_s = 240\n[nodes]\ncount = 12\nseeds = 3\nboot_spread_s = 2\n\
             [chain]\nvalidators = 7\nbyzantine_validators = 2\nbyzantine_faults = [\"split\"]\nworkload_nodes = 3\n\
             [properties]\nchain_min_height = 15\n",
        );
        for index in 0..12 {
            text.push_str(&format!(
                "[[faults]]\nkind = \"partition\"\nat_s = {}\nduration_s = {}\nfractions = [0.25, 0.75]\n",
                12 + 3 * index,
                0.6 + 0.1 * f64::from(index % 5)
            ));
        }
        Scenario::parse("churn.toml", &text).expect("churn scenario")
    }

    /// The fault the fake bug needs: the partition that starts at 21 s.
    fn has_fault_3(scenario: &Scenario) -> bool {
        scenario.faults.iter().any(|fault| fault.at_s() == 21.0)
    }

    /// Runs a whole search against `oracle`, `jobs` candidates at a time,
    /// checking every candidate on the way.
    fn search(
        original: Scenario,
        limits: Limits,
        jobs: usize,
        oracle: impl Fn(&Scenario) -> bool,
    ) -> (Shrinker, Vec<Candidate>) {
        let mut shrinker = Shrinker::new(original, limits).expect("valid");
        let mut proposed = Vec::new();
        loop {
            let best_size = shrinker.best_size();
            let batch = shrinker.next_batch(jobs);
            if batch.is_empty() {
                break;
            }
            assert!(batch.len() <= jobs);
            for candidate in &batch {
                candidate
                    .scenario
                    .validate()
                    .expect("every candidate validates");
                assert!(
                    candidate.size.smaller_than(&best_size),
                    "{}: {} is not smaller than {best_size}",
                    candidate.what,
                    candidate.size
                );
                assert_eq!(candidate.size, Size::of(&candidate.scenario));
            }
            let verdicts: Vec<Verdict> = batch
                .iter()
                .map(|candidate| {
                    if oracle(&candidate.scenario) {
                        Verdict::Reproduces
                    } else {
                        Verdict::DoesNotReproduce
                    }
                })
                .collect();
            let decisions = shrinker.record(&verdicts);
            assert_eq!(
                decisions.iter().filter(|d| **d == Decision::Taken).count(),
                usize::from(verdicts.contains(&Verdict::Reproduces))
            );
            proposed.extend(batch);
        }
        (shrinker, proposed)
    }

    #[test]
    fn the_search_ends_with_exactly_what_the_bug_needs() {
        // Fails iff the partition at 21 s is there and there are 5 nodes or more.
        let oracle = |s: &Scenario| has_fault_3(s) && s.nodes.count >= 5;
        let (shrinker, _) = search(
            churn(),
            Limits {
                runs_max: 500,
                ..Limits::default()
            },
            1,
            oracle,
        );
        assert_eq!(shrinker.stop(), Some(Stop::NothingLeft));
        let best = shrinker.best();
        assert!(oracle(best), "the result still fails");
        assert_eq!(best.faults.len(), 1, "{:?}", best.faults);
        assert!(has_fault_3(best));
        assert_eq!(best.nodes.count, 5);
        let chain = best.chain.as_ref().expect("chain");
        assert_eq!(chain.byzantine_validators, 0);
        assert_eq!(chain.validators, 1, "validators go down to one");
        assert_eq!(chain.workload_nodes, 1);
        // The fault is as short as allowed, the duration as short as the
        // runner needs after it.
        assert_eq!(Size::of(best).fault_ms, 100);
        assert_eq!(best.duration_s, duration_s_needed(best));
        assert_eq!(best.duration_s, (21.1_f64 + 60.0).ceil());
    }

    #[test]
    fn a_candidate_never_crosses_the_fault_bound_the_original_kept() {
        // Fails whenever 2 validators are Byzantine: reducing validators
        // below 7 would give them a third of the stake, so it stops at 7.
        let oracle = |s: &Scenario| {
            s.chain
                .as_ref()
                .is_some_and(|c| c.byzantine_validators == 2)
        };
        let (shrinker, proposed) = search(
            churn(),
            Limits {
                runs_max: 500,
                ..Limits::default()
            },
            2,
            oracle,
        );
        for candidate in &proposed {
            assert_eq!(
                candidate.scenario.fault_bound_warning(),
                None,
                "{}",
                candidate.what
            );
        }
        let chain = shrinker.best().chain.as_ref().expect("chain");
        assert_eq!((chain.validators, chain.byzantine_validators), (7, 2));
        assert_eq!(shrinker.best().nodes.count, 7, "the followers go");
        assert!(shrinker.best().faults.is_empty());
    }

    #[test]
    fn the_result_does_not_depend_on_jobs() {
        let oracle = |s: &Scenario| {
            has_fault_3(s)
                && s.faults.len() >= 2
                && s.chain.as_ref().is_some_and(|c| c.validators >= 4)
        };
        let limits = Limits {
            runs_max: 1_000,
            ..Limits::default()
        };
        let (one, _) = search(churn(), limits, 1, oracle);
        let (two, _) = search(churn(), limits, 2, oracle);
        let (five, _) = search(churn(), limits, 5, oracle);
        assert_eq!(one.best(), two.best());
        assert_eq!(one.best(), five.best());
        assert!(one.runs() <= two.runs(), "batches only add runs");
        // And the same inputs give the same search, run for run.
        let (again, proposed_again) = search(churn(), limits, 2, oracle);
        let (_, proposed) = search(churn(), limits, 2, oracle);
        assert_eq!(again.best(), two.best());
        let whats = |c: &[Candidate]| c.iter().map(|c| c.what.clone()).collect::<Vec<_>>();
        assert_eq!(whats(&proposed), whats(&proposed_again));
    }

    #[test]
    fn the_budget_is_respected() {
        let never = |_: &Scenario| false;
        for (runs_max, jobs) in [(0, 2), (1, 2), (7, 2), (7, 3), (10, 1), (25, 4)] {
            for oracle in [&never as &dyn Fn(&Scenario) -> bool, &has_fault_3] {
                let limits = Limits {
                    runs_max,
                    ..Limits::default()
                };
                let (shrinker, proposed) = search(churn(), limits, jobs, oracle);
                assert_eq!(
                    proposed.len() as u32,
                    runs_max,
                    "runs_max {runs_max}, jobs {jobs}"
                );
                assert_eq!(shrinker.runs(), runs_max);
                assert_eq!(shrinker.stop(), Some(Stop::Budget));
            }
        }
    }

    #[test]
    fn nothing_reproducing_keeps_the_original() {
        let (shrinker, proposed) = search(
            churn(),
            Limits {
                runs_max: 500,
                ..Limits::default()
            },
            2,
            |_| false,
        );
        assert_eq!(shrinker.best(), &churn());
        assert_eq!(shrinker.stop(), Some(Stop::NothingLeft));
        assert_eq!(shrinker.taken(), 0);
        // Every candidate ran once.
        for (index, candidate) in proposed.iter().enumerate() {
            assert!(
                !proposed[..index]
                    .iter()
                    .any(|other| other.scenario == candidate.scenario),
                "{} proposed twice",
                candidate.what
            );
        }
    }

    #[test]
    fn fault_chunks_go_from_all_to_single() {
        let scenario = churn();
        let drops = changes(Stage::DropFaults, &scenario, true);
        assert_eq!(drops[0], Change::DropFaults { start: 0, end: 12 });
        assert_eq!(drops[1], Change::DropFaults { start: 0, end: 6 });
        assert_eq!(drops[2], Change::DropFaults { start: 6, end: 12 });
        assert_eq!(
            drops.last(),
            Some(&Change::DropFaults { start: 11, end: 12 })
        );
        assert_eq!(drops.len(), 1 + 2 + 4 + 6 + 12);
        assert_eq!(smaller_values(12, 7), vec![7, 9, 11]);
        assert_eq!(smaller_values(2, 0), vec![0, 1]);
        assert_eq!(smaller_values(1, 0), vec![0]);
        assert_eq!(smaller_values(3, 3), Vec::<u32>::new());
    }

    #[test]
    fn fewer_nodes_or_validators_keep_the_light_nodes() {
        let scenario = Scenario::parse(
            "light.toml",
            "[nodes]\ncount = 10\nseeds = 2\nfull = 3\nlight = 3\n[chain]\nvalidators = 4\n[trust]\n",
        )
        .expect("a scenario with light nodes");
        let fewer = Change::Nodes { to: 8 }.apply(&scenario);
        assert_eq!(fewer.validate(), Ok(()));
        assert_eq!((fewer.full_count(), fewer.light_count()), (1, 3));
        let fewer = Change::Validators { to: 2 }.apply(&scenario);
        assert_eq!(fewer.validate(), Ok(()));
        assert_eq!((fewer.full_count(), fewer.light_count()), (5, 3));
        // The light nodes are never taken: the least node count keeps them.
        let least = changes(Stage::FewerFollowers, &scenario, true)
            .iter()
            .filter_map(|change| match change {
                Change::Nodes { to } => Some(*to),
                _ => None,
            })
            .min();
        assert_eq!(least, Some(7));
    }

    #[test]
    fn the_written_file_reads_back_as_the_scenario() {
        let mut scenario = churn();
        scenario.faults.truncate(2);
        scenario.trust = None;
        let text = render(&scenario, &["shrunk\ntwo lines".into()]).expect("render");
        assert!(text.starts_with("# shrunk\n# two lines\n"), "{text}");
        assert_eq!(Scenario::parse("x.toml", &text).expect("parse"), scenario);
    }
}
