//! `hm-sim shrink` (part of the binary, not the library): the shell around
//! the pure search in `hm_sim::shrink`. It runs the original and every
//! candidate in its own `hm-sim run --json` process (one madsim runtime per
//! process, as `sweep` does), turns each report into a verdict, prints
//! progress, and writes the smallest failing scenario.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitCode, ExitStatus};
use std::thread::JoinHandle;

use hm_sim::outcome::RunOutcome;
use hm_sim::report::build_prefix;
use hm_sim::scenario::{PROPERTY_NAMES, Scenario};
use hm_sim::shrink::{Candidate, Decision, Limits, ShrinkError, Shrinker, Verdict, render};
use hm_sim::wall::wall_now_ms;

/// Most candidate runs at once.
pub const JOBS_MAX: usize = 64;
/// Most candidate runs one search may be given.
pub const RUNS_MAX_LIMIT: u32 = 10_000;
/// The original run may take this long (a 1,000-node headline takes ~10 min).
const ORIGINAL_TIMEOUT_S: f64 = 3.0 * 3600.0;
/// A candidate may take this many times the original's wall time (and at
/// least [`CANDIDATE_TIMEOUT_S_MIN`]) before it counts as broken, unless
/// `--timeout-s` says otherwise; candidates are smaller, so they should
/// take less.
const CANDIDATE_TIMEOUT_FACTOR: f64 = 4.0;
const CANDIDATE_TIMEOUT_S_MIN: f64 = 60.0;
/// How often running children are looked at.
const POLL_MS: u64 = 50;

/// `hm-sim shrink`'s arguments.
#[derive(clap::Args)]
pub struct Args {
    pub scenario: PathBuf,
    /// Seed of the failing run (default: the scenario's `seed`).
    #[arg(long)]
    pub seed: Option<u64>,
    /// The property that must keep failing (default: the first one the
    /// original run fails).
    #[arg(long)]
    pub property: Option<String>,
    /// Most candidate runs.
    #[arg(long, default_value_t = hm_sim::shrink::RUNS_MAX_DEFAULT)]
    pub max_runs: u32,
    /// Candidate runs at once, each in its own process (the result does
    /// not depend on it).
    #[arg(long, default_value_t = 2)]
    pub jobs: usize,
    /// Where to write the smallest failing scenario (default:
    /// `<name>-shrunk-seed<N>.toml` in the current directory).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// A candidate running longer than this counts as not reproducing
    /// (default: 4x the original run, at least 60 s).
    #[arg(long)]
    pub timeout_s: Option<f64>,
}

/// What one child run gave.
enum Ran {
    Report(Box<RunOutcome>),
    /// It crashed, produced no report, or timed out.
    Broken(String),
}

impl Ran {
    fn failed(&self) -> Vec<String> {
        match self {
            Ran::Report(outcome) => outcome
                .properties
                .iter()
                .filter(|property| !property.passed)
                .map(|property| property.name.clone())
                .collect(),
            Ran::Broken(_) => Vec::new(),
        }
    }

    fn detail(&self, property: &str) -> Option<String> {
        match self {
            Ran::Report(outcome) => outcome
                .properties
                .iter()
                .find(|p| p.name == property && !p.passed)
                .map(|p| p.detail.clone()),
            Ran::Broken(_) => None,
        }
    }

    fn verdict(&self, property: &str) -> Verdict {
        if self.failed().iter().any(|name| name == property) {
            Verdict::Reproduces
        } else {
            Verdict::DoesNotReproduce
        }
    }

    /// What the run showed, for the progress line.
    fn shown(&self, property: &str) -> String {
        match self {
            Ran::Broken(reason) => format!("run broken ({reason}): does not count"),
            Ran::Report(outcome) => {
                let failed = self.failed();
                if failed.iter().any(|name| name == property) {
                    format!("still fails {property}")
                } else if failed.is_empty() {
                    "passes every property".into()
                } else {
                    format!(
                        "passes {property} (fails {}){}",
                        failed.join(", "),
                        outcome
                            .panic
                            .as_ref()
                            .map_or(String::new(), |panic| format!(": {panic}"))
                    )
                }
            }
        }
    }
}

/// A child `hm-sim run` with its output being read (a report is larger
/// than a pipe holds, so it must be drained while the child runs).
struct Running {
    child: Child,
    stdout: JoinHandle<Vec<u8>>,
    stderr: JoinHandle<Vec<u8>>,
    started_ms: f64,
}

fn drain(pipe: Option<impl Read + Send + 'static>) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        bytes
    })
}

fn start(scenario: &Path, seed: u64) -> Result<Running, String> {
    let mut child = crate::cli::run_in_child(scenario, seed)
        .spawn()
        .map_err(|error| format!("cannot start hm-sim: {error}"))?;
    Ok(Running {
        stdout: drain(child.stdout.take()),
        stderr: drain(child.stderr.take()),
        child,
        started_ms: wall_now_ms(),
    })
}

/// Waits for every run (killing those past `timeout_s`) and returns what
/// each gave, in order.
fn finish(running: Vec<Running>, timeout_s: f64) -> Vec<(Ran, f64)> {
    let mut running: Vec<Option<Running>> = running.into_iter().map(Some).collect();
    let mut results: Vec<Option<(Ran, f64)>> = running.iter().map(|_| None).collect();
    while running.iter().any(Option::is_some) {
        for (slot, result) in running.iter_mut().zip(results.iter_mut()) {
            let Some(run) = slot.as_mut() else { continue };
            let elapsed_s = (wall_now_ms() - run.started_ms) / 1000.0;
            let status: Result<Option<ExitStatus>, String> = match run.child.try_wait() {
                Ok(Some(status)) => Ok(Some(status)),
                Ok(None) if elapsed_s > timeout_s => {
                    let _ = run.child.kill();
                    let _ = run.child.wait();
                    Err(format!("timed out after {timeout_s:.0} s"))
                }
                Ok(None) => Ok(None),
                Err(error) => Err(format!("cannot wait for it: {error}")),
            };
            if let Ok(None) = status {
                continue;
            }
            let Some(run) = slot.take() else { continue };
            let stdout = run.stdout.join().unwrap_or_default();
            let stderr = run.stderr.join().unwrap_or_default();
            let ran = match status {
                Ok(Some(status)) => crate::cli::child_outcome(std::process::Output {
                    status,
                    stdout,
                    stderr,
                })
                .and_then(|value| {
                    serde_json::from_value::<RunOutcome>(value).map_err(|error| error.to_string())
                })
                .map_or_else(
                    |error| Ran::Broken(one_line(&error)),
                    |outcome| Ran::Report(Box::new(outcome)),
                ),
                Ok(None) => Ran::Broken("no exit status".into()),
                Err(reason) => Ran::Broken(reason),
            };
            *result = Some((ran, elapsed_s));
        }
        if running.iter().any(Option::is_some) {
            std::thread::sleep(std::time::Duration::from_millis(POLL_MS));
        }
    }
    results.into_iter().flatten().collect()
}

/// A child's error for a progress line: its first line, and the last line
/// of what follows (the child's stderr ends with its reason).
fn one_line(error: &str) -> String {
    let mut lines = error.lines().map(str::trim).filter(|line| !line.is_empty());
    let first = lines.next().unwrap_or("no reason given").to_string();
    match lines.next_back() {
        Some(last) => format!("{first} … {last}"),
        None => first,
    }
}

/// Runs every candidate of a batch at once, each from its own file in
/// `dir`, and returns what each gave, in the batch's order.
fn run_batch(batch: &[Candidate], dir: &Path, seed: u64, timeout_s: f64) -> Vec<(Ran, f64)> {
    let mut running = Vec::with_capacity(batch.len());
    let mut start_errors = Vec::with_capacity(batch.len());
    for candidate in batch {
        let path = dir.join(format!("run-{}.toml", candidate.run));
        let started = render(&candidate.scenario, &[])
            .map_err(|error| error.to_string())
            .and_then(|text| {
                std::fs::write(&path, text)
                    .map_err(|error| format!("cannot write {}: {error}", path.display()))
            })
            .and_then(|()| start(&path, seed));
        match started {
            Ok(run) => {
                running.push(run);
                start_errors.push(None);
            }
            Err(error) => start_errors.push(Some(error)),
        }
    }
    let mut finished = finish(running, timeout_s).into_iter();
    start_errors
        .into_iter()
        .map(|error| match error {
            Some(error) => (Ran::Broken(error), 0.0),
            None => finished
                .next()
                .unwrap_or((Ran::Broken("no result".into()), 0.0)),
        })
        .collect()
}

/// Removes the candidates' directory however the search ends.
struct WorkDir(PathBuf);

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `<name>-shrunk-seed<N>.toml`, with the name cut down to safe characters.
fn default_out(name: &str, seed: u64) -> PathBuf {
    let safe: String = name
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    PathBuf::from(format!("{safe}-shrunk-seed{seed}.toml"))
}

fn fail(error: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {error}");
    ExitCode::from(2)
}

pub fn shrink(args: Args, original: Scenario) -> ExitCode {
    let wall_start_ms = wall_now_ms();
    let seed = args.seed.unwrap_or(original.seed);
    if let Some(property) = &args.property
        && !PROPERTY_NAMES.contains(&property.as_str())
    {
        return fail(ShrinkError::UnknownProperty(property.clone()));
    }
    if args.jobs == 0 || args.jobs > JOBS_MAX {
        return fail(format!("--jobs {}: give 1 to {JOBS_MAX}", args.jobs));
    }
    if args.max_runs > RUNS_MAX_LIMIT {
        return fail(format!(
            "--max-runs {}: give at most {RUNS_MAX_LIMIT}",
            args.max_runs
        ));
    }
    if let Some(timeout_s) = args.timeout_s
        && !(timeout_s.is_finite() && timeout_s >= 1.0)
    {
        return fail(format!("--timeout-s {timeout_s}: give at least 1 second"));
    }

    // The original run: it must fail, and it names the property.
    let shown = args.scenario.display().to_string();
    let (ran, original_wall_s) = match start(&args.scenario, seed) {
        Ok(run) => finish(vec![run], ORIGINAL_TIMEOUT_S)
            .pop()
            .unwrap_or((Ran::Broken("no result".into()), 0.0)),
        Err(error) => return fail(error),
    };
    if let Ran::Broken(reason) = &ran {
        return fail(ShrinkError::OriginalBroken(reason.clone()));
    }
    let failed = ran.failed();
    let property = match (&args.property, failed.first()) {
        (_, None) => return fail(ShrinkError::NothingToShrink { seed }),
        (Some(property), _) if !failed.contains(property) => {
            return fail(ShrinkError::PropertyPassed {
                seed,
                property: property.clone(),
                failed: failed.join(", "),
            });
        }
        (Some(property), _) => property.clone(),
        (None, Some(first)) => first.clone(),
    };
    let mut detail = ran.detail(&property).unwrap_or_default();
    eprintln!(
        "[original] {shown} seed {seed}: fails {} ({original_wall_s:.1} s wall); shrinking {property}",
        failed.join(", ")
    );

    // The seed goes into the file, so a plain `cargo sim run` replays it
    // (the runner takes the seed from the command line; the field is only
    // its default), and the description says what the file is (no run
    // reads it). The name stays: the chain's genesis is derived from it.
    let mut start_scenario = original;
    start_scenario.seed = seed;
    start_scenario.description = format!(
        "shrunk by hm-sim shrink from {shown} seed {seed} (fails {property}); originally: {}",
        start_scenario.description
    );
    let limits = Limits {
        runs_max: args.max_runs,
        ..Limits::default()
    };
    let mut shrinker = match Shrinker::new(start_scenario, limits) {
        Ok(shrinker) => shrinker,
        Err(error) => return fail(error),
    };
    let timeout_s = args
        .timeout_s
        .unwrap_or((original_wall_s * CANDIDATE_TIMEOUT_FACTOR).max(CANDIDATE_TIMEOUT_S_MIN));
    let work = WorkDir(std::env::temp_dir().join(format!("hm-shrink-{}", std::process::id())));
    if let Err(error) = std::fs::create_dir_all(&work.0) {
        return fail(format!("cannot create {}: {error}", work.0.display()));
    }
    let mut broken = 0;
    let mut not_reproduced = 0;
    let mut also_reproduced = 0;
    loop {
        let batch = shrinker.next_batch(args.jobs);
        if batch.is_empty() {
            break;
        }
        let results = run_batch(&batch, &work.0, seed, timeout_s);
        let verdicts: Vec<Verdict> = results
            .iter()
            .map(|(ran, _)| ran.verdict(&property))
            .collect();
        let decisions = shrinker.record(&verdicts);
        let mut taken_run = None;
        for ((candidate, (ran, wall_s)), decision) in batch.iter().zip(&results).zip(decisions) {
            let outcome = match decision {
                Decision::Taken => {
                    taken_run = Some(candidate.run);
                    detail = ran.detail(&property).unwrap_or_default();
                    format!("{}: taken ({})", ran.shown(&property), candidate.size)
                }
                Decision::AlsoReproduces => {
                    also_reproduced += 1;
                    format!(
                        "{}, but run {} came first: not taken",
                        ran.shown(&property),
                        taken_run.unwrap_or(0)
                    )
                }
                Decision::DoesNotReproduce => {
                    if matches!(ran, Ran::Broken(_)) {
                        broken += 1;
                    } else {
                        not_reproduced += 1;
                    }
                    ran.shown(&property)
                }
            };
            eprintln!(
                "[run {}/{}] {} → {outcome} · {wall_s:.1} s",
                candidate.run, args.max_runs, candidate.what
            );
        }
    }

    let out = args
        .out
        .unwrap_or_else(|| default_out(&shrinker.best().name, seed));
    let reproduce = format!(
        "{}cargo sim run {} --seed {seed}",
        build_prefix(),
        out.display()
    );
    let stop = shrinker
        .stop()
        .map_or_else(String::new, |stop| stop.to_string());
    let (before, after) = (shrinker.original_size(), shrinker.best_size());
    let header = [
        format!("A smaller scenario that still fails `{property}`, found by `hm-sim shrink`."),
        format!("Shrunk from {shown}, seed {seed}."),
        format!("Original: {before}"),
        format!("This:     {after}"),
        format!("It fails: {property}: {detail}"),
        format!("Reproduce: {reproduce}"),
        "Every key is written out, defaults included, so the file keeps failing if defaults change.".into(),
    ];
    let written = render(shrinker.best(), &header)
        .map_err(|error| error.to_string())
        .and_then(|text| {
            std::fs::write(&out, text)
                .map_err(|error| format!("cannot write {}: {error}", out.display()))
        })
        .and_then(|()| Scenario::load(&out).map_err(|error| error.to_string()));
    match written {
        Ok(back) if back == *shrinker.best() => {}
        Ok(_) => return fail(ShrinkError::RoundTrip(out.display().to_string())),
        Err(error) => return fail(error),
    }
    let wall_s = (wall_now_ms() - wall_start_ms) / 1000.0;
    let verdict = if after == before {
        "no smaller failing scenario found"
    } else {
        "shrunk"
    };
    println!(
        "hm-sim shrink · {} · seed {seed} · {property} · {verdict}",
        shrinker.best().name
    );
    println!("  original  {before}");
    println!("  smallest  {after}");
    println!(
        "  {} runs ({} taken, {also_reproduced} reproduced but came later in a batch, {not_reproduced} did not reproduce, {broken} broken) in {wall_s:.1} s wall; stopped: {stop}",
        shrinker.runs(),
        shrinker.taken(),
    );
    println!(
        "  {} {}; {} reductions not run (invalid, not smaller, already tried, or beyond the fault bound)",
        shrinker.passes(),
        if shrinker.passes() == 1 {
            "pass"
        } else {
            "passes"
        },
        shrinker.skipped()
    );
    println!("  written   {}", out.display());
    println!("  reproduce {reproduce}");
    ExitCode::SUCCESS
}
