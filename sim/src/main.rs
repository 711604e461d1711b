//! `hm-sim`: run scenarios in the deterministic simulator.
#![allow(clippy::disallowed_methods)] // the CLI reads files and spawns its own processes

#[cfg(not(madsim))]
fn main() -> std::process::ExitCode {
    eprintln!(
        "hm-sim must be built with `--cfg madsim`. Run it through cargo:\n  cargo sim run scenarios/smoke.toml\nor install a plain binary with:\n  cargo sim install"
    );
    std::process::ExitCode::from(2)
}

#[cfg(madsim)]
fn main() -> std::process::ExitCode {
    cli::main()
}

#[cfg(madsim)]
mod cli_shrink;

#[cfg(madsim)]
mod cli {
    use std::path::PathBuf;
    use std::process::{Command, ExitCode, Stdio};

    use clap::{Parser, Subcommand};
    use hm_sim::outcome::RunOutcome;
    use hm_sim::report::{summary, sweep_summary};
    use hm_sim::runner::run;
    use hm_sim::scenario::Scenario;

    #[derive(Parser)]
    #[command(
        name = "hm-sim",
        about = "Run HyperMesh scenarios in the deterministic simulator"
    )]
    struct Cli {
        #[command(subcommand)]
        command: Commands,
    }

    #[derive(Subcommand)]
    enum Commands {
        /// Run one scenario under one seed.
        Run {
            scenario: PathBuf,
            /// Seed (default: the scenario's `seed`).
            #[arg(long)]
            seed: Option<u64>,
            /// Print the JSON report instead of the summary.
            #[arg(long)]
            json: bool,
            /// Also write the JSON report to this file.
            #[arg(long)]
            report_json: Option<PathBuf>,
            /// Write a self-contained HTML report (summary, phase timeline,
            /// fault bands, commit heights) to this file.
            #[arg(long = "report")]
            report_html: Option<PathBuf>,
            /// Run twice more in two separate processes and compare digests.
            #[arg(long)]
            check_determinism: bool,
            /// No progress line on stderr.
            #[arg(long)]
            no_progress: bool,
            /// Run the scenario's faults against real `hm-node` processes in
            /// network namespaces instead of the simulator (root; small
            /// scenarios only: the run says what it cannot do).
            #[arg(long, conflicts_with_all = ["check_determinism", "report_html"])]
            real: bool,
            /// The hm-node binary for --real (default: $HM_NODE, or the one
            /// `cargo sim run --real` builds).
            #[arg(long, requires = "real")]
            hm_node: Option<PathBuf>,
            /// Where --real keeps data dirs, configs and node logs (default:
            /// a new directory under the system's temp dir).
            #[arg(long, requires = "real")]
            work_dir: Option<PathBuf>,
        },
        /// Run scenarios over a range of seeds, several processes at once.
        Sweep {
            #[arg(required = true)]
            scenarios: Vec<PathBuf>,
            /// Seeds as A..B (inclusive), e.g. 1..20.
            #[arg(long, default_value = "1..5")]
            seeds: String,
            /// Processes at once (default: number of CPUs).
            #[arg(long)]
            jobs: Option<usize>,
            /// Run only the K-th of N slices of the runs (0-based), e.g. 0/4.
            #[arg(long)]
            shard: Option<String>,
            /// Write all JSON results to this file (merge shards by concatenating arrays).
            #[arg(long)]
            json: Option<PathBuf>,
        },
        /// Search for a smaller scenario that still fails the same property
        /// (fewer and shorter faults, fewer Byzantine actors, nodes and
        /// validators, a shorter duration) and write it as a TOML file.
        Shrink(crate::cli_shrink::Args),
    }

    fn parse_range(text: &str) -> Result<(u64, u64), String> {
        let (a, b) = text
            .split_once("..")
            .ok_or_else(|| format!("--seeds `{text}`: expected A..B, e.g. 1..20"))?;
        let a: u64 = a
            .trim()
            .parse()
            .map_err(|_| format!("--seeds `{text}`: `{a}` is not a number"))?;
        let b: u64 = b
            .trim()
            .trim_start_matches('=')
            .parse()
            .map_err(|_| format!("--seeds `{text}`: `{b}` is not a number"))?;
        if b < a || b - a >= 100_000 {
            return Err(format!(
                "--seeds `{text}`: need A <= B and at most 100000 seeds"
            ));
        }
        Ok((a, b))
    }

    fn parse_shard(text: &str) -> Result<(usize, usize), String> {
        let (k, n) = text
            .split_once('/')
            .ok_or_else(|| format!("--shard `{text}`: expected K/N, e.g. 0/4"))?;
        let k: usize = k.parse().map_err(|_| format!("--shard `{text}`: bad K"))?;
        let n: usize = n.parse().map_err(|_| format!("--shard `{text}`: bad N"))?;
        if n == 0 || k >= n {
            return Err(format!("--shard `{text}`: need 0 <= K < N"));
        }
        Ok((k, n))
    }

    /// Runs `hm-sim run … --json` in a child process and parses its report.
    pub(crate) fn run_in_child(scenario: &std::path::Path, seed: u64) -> Command {
        let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("hm-sim"));
        let mut command = Command::new(exe);
        command
            .arg("run")
            .arg(scenario)
            .args(["--seed", &seed.to_string(), "--json", "--no-progress"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    }

    pub(crate) fn child_outcome(output: std::process::Output) -> Result<serde_json::Value, String> {
        serde_json::from_slice(&output.stdout).map_err(|error| {
            format!(
                "child run produced no report ({error}); its stderr:\n{}",
                String::from_utf8_lossy(&output.stderr)
                    .lines()
                    .rev()
                    .take(20)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        })
    }

    /// `hm-sim run --real`: exit 0 on pass or skip (the reason printed),
    /// 1 on a failed property, 2 when the run could not be set up.
    fn run_real(
        scenario: &Scenario,
        shown: &str,
        seed: u64,
        hm_node: Option<PathBuf>,
        work_dir: Option<PathBuf>,
        json: bool,
        progress: bool,
    ) -> ExitCode {
        use hm_sim::real::{RealOutcome, real_summary, run_real};
        let hm_node = hm_node
            .or_else(|| std::env::var_os("HM_NODE").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("hm-node"));
        let work_dir = work_dir.unwrap_or_else(|| {
            std::env::temp_dir().join(format!(
                "hm-real-{}-seed{seed}-{}",
                scenario.name,
                std::process::id()
            ))
        });
        match run_real(
            scenario,
            shown,
            seed,
            &hm_node,
            &work_dir,
            progress && !json,
        ) {
            Ok(RealOutcome::Skipped(reason)) => {
                println!("hm-sim --real · {} · SKIPPED: {reason}", scenario.name);
                ExitCode::SUCCESS
            }
            Ok(RealOutcome::Ran(report)) => {
                if json {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&report).unwrap_or_default()
                    );
                } else {
                    print!("{}", real_summary(&report));
                }
                if report.passed {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                }
            }
            Err(error) => {
                eprintln!("error: hm-sim --real: {error}");
                ExitCode::from(2)
            }
        }
    }

    fn load(path: &std::path::Path) -> Result<Scenario, ExitCode> {
        let scenario = Scenario::load(path).map_err(|error| {
            eprintln!("error: {error}");
            ExitCode::from(2)
        })?;
        if let Some(warning) = scenario.fault_bound_warning() {
            eprintln!("warning: {warning}");
        }
        Ok(scenario)
    }

    pub fn main() -> ExitCode {
        hm_sim::wall::tune_allocator();
        // Every simulated node lives in this process and repeats the same
        // pure work (signature checks, Brotli, block execution): remember
        // each answer once for all of them. Memos change no result, only
        // the work done. The children this binary spawns (--check-determinism,
        // sweep, shrink) run this same main, so they remember too.
        hm_env::memo::enable();
        // Logging only on request: madsim opens a span per node and task, and
        // with a subscriber installed every one of them costs a registry entry.
        if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_env("HM_LOG") {
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .init();
        }
        let cli = Cli::parse();
        match cli.command {
            Commands::Run {
                scenario,
                seed,
                json,
                report_json,
                report_html,
                check_determinism,
                no_progress,
                real,
                hm_node,
                work_dir,
            } => {
                let loaded = match load(&scenario) {
                    Ok(loaded) => loaded,
                    Err(code) => return code,
                };
                let seed = seed.unwrap_or(loaded.seed);
                let shown = scenario.display().to_string();
                if real {
                    return run_real(&loaded, &shown, seed, hm_node, work_dir, json, !no_progress);
                }
                let outcome = run(&loaded, &shown, seed, !no_progress && !json);
                let report = serde_json::to_string_pretty(&outcome).unwrap_or_default();
                if json {
                    println!("{report}");
                } else {
                    print!("{}", summary(&outcome));
                }
                if let Some(path) = report_json
                    && let Err(error) = std::fs::write(&path, &report)
                {
                    eprintln!("error: cannot write {}: {error}", path.display());
                    return ExitCode::from(2);
                }
                if let Some(path) = report_html {
                    let page = hm_sim::html::render(
                        &outcome,
                        outcome.timeline.as_ref().unwrap_or(&Default::default()),
                        &hm_sim::report::reproduce_command(&outcome),
                    );
                    if let Err(error) = std::fs::write(&path, page) {
                        eprintln!("error: cannot write {}: {error}", path.display());
                        return ExitCode::from(2);
                    }
                    eprintln!("report written to {}", path.display());
                }
                let mut passed = outcome.passed;
                if check_determinism {
                    passed &= determinism(&scenario, seed, &outcome);
                }
                if passed {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                }
            }
            Commands::Sweep {
                scenarios,
                seeds,
                jobs,
                shard,
                json,
            } => {
                let (first, last) = match parse_range(&seeds) {
                    Ok(range) => range,
                    Err(error) => {
                        eprintln!("error: {error}");
                        return ExitCode::from(2);
                    }
                };
                let (shard_k, shard_n) = match shard.as_deref().map(parse_shard).transpose() {
                    Ok(shard) => shard.unwrap_or((0, 1)),
                    Err(error) => {
                        eprintln!("error: {error}");
                        return ExitCode::from(2);
                    }
                };
                for path in &scenarios {
                    if let Err(code) = load(path) {
                        return code;
                    }
                }
                let runs: Vec<(PathBuf, u64)> = scenarios
                    .iter()
                    .flat_map(|path| (first..=last).map(move |seed| (path.clone(), seed)))
                    .enumerate()
                    .filter(|(index, _)| index % shard_n == shard_k)
                    .map(|(_, run)| run)
                    .collect();
                let jobs = jobs
                    .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
                    .max(1);
                sweep(runs, jobs, json)
            }
            Commands::Shrink(args) => match load(&args.scenario) {
                Ok(loaded) => crate::cli_shrink::shrink(args, loaded),
                Err(code) => code,
            },
        }
    }

    fn determinism(scenario: &std::path::Path, seed: u64, first: &RunOutcome) -> bool {
        eprintln!("determinism: running seed {seed} again in two separate processes…");
        let children: Vec<_> = (0..2)
            .map(|_| run_in_child(scenario, seed).spawn())
            .collect();
        let mut digests = vec![first.digest.clone()];
        for child in children {
            let outcome = child
                .map_err(|error| error.to_string())
                .and_then(|child| child.wait_with_output().map_err(|error| error.to_string()))
                .and_then(child_outcome);
            match outcome {
                Ok(value) => digests.push(value["digest"].as_str().unwrap_or("").to_string()),
                Err(error) => {
                    eprintln!("determinism: FAIL — {error}");
                    return false;
                }
            }
        }
        if digests
            .iter()
            .all(|digest| *digest == digests[0] && !digest.is_empty())
        {
            println!(
                "determinism: PASS — 3 runs (2 in separate processes), digest {}",
                digests[0]
            );
            true
        } else {
            println!(
                "determinism: FAIL — digests differ: {}",
                digests.join(" / ")
            );
            println!(
                "  the run is not a function of its seed; look for HashMap iteration, OS time or RNG outside Env"
            );
            false
        }
    }

    fn sweep(runs: Vec<(PathBuf, u64)>, jobs: usize, json: Option<PathBuf>) -> ExitCode {
        let total = runs.len();
        let mut pending = runs.into_iter();
        let mut running: Vec<(PathBuf, u64, std::process::Child)> = Vec::new();
        let mut outcomes: Vec<RunOutcome> = Vec::new();
        let mut values: Vec<serde_json::Value> = Vec::new();
        let mut broken = 0;
        loop {
            while running.len() < jobs {
                let Some((path, seed)) = pending.next() else {
                    break;
                };
                match run_in_child(&path, seed).spawn() {
                    Ok(child) => running.push((path, seed, child)),
                    Err(error) => {
                        eprintln!("error: cannot start a run: {error}");
                        return ExitCode::from(2);
                    }
                }
            }
            if running.is_empty() {
                break;
            }
            // Wait for the oldest run; runs take similar time, so this keeps
            // all slots busy without polling.
            let (path, seed, child) = running.remove(0);
            let result = child
                .wait_with_output()
                .map_err(|error| error.to_string())
                .and_then(child_outcome)
                .and_then(|value| {
                    serde_json::from_value::<RunOutcome>(value.clone())
                        .map(|outcome| (outcome, value))
                        .map_err(|error| error.to_string())
                });
            match result {
                Ok((outcome, value)) => {
                    let done = outcomes.len() + 1;
                    eprintln!(
                        "[{done}/{total}] {} seed {seed}: {} ({:.1} s wall)",
                        path.display(),
                        if outcome.passed { "pass" } else { "FAIL" },
                        outcome.wall_s
                    );
                    outcomes.push(outcome);
                    values.push(value);
                }
                Err(error) => {
                    broken += 1;
                    eprintln!("{} seed {seed}: the run crashed: {error}", path.display());
                    eprintln!(
                        "  reproduce: cargo sim run {} --seed {seed}",
                        path.display()
                    );
                }
            }
        }
        print!("{}", sweep_summary(&outcomes));
        if let Some(path) = json {
            let text = serde_json::to_string_pretty(&values).unwrap_or_default();
            if let Err(error) = std::fs::write(&path, text) {
                eprintln!("error: cannot write {}: {error}", path.display());
                return ExitCode::from(2);
            }
        }
        if broken == 0 && outcomes.iter().all(|outcome| outcome.passed) {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        }
    }
}
