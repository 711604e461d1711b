//! `cargo sim …` — the simulator without having to remember how it is built.
//!
//! The simulator needs `RUSTFLAGS="--cfg madsim"`, which changes every crate's
//! build, so it lives in its own target dir (`<target>/madsim`) and must never
//! share artifacts with the real build. This launcher (a dependency-free crate,
//! reached through the `sim` alias in `.cargo/config.toml`) applies both and
//! then runs the `hm-sim` binary with the remaining arguments:
//!
//! ```text
//! cargo sim run scenarios/smoke.toml          # build (if needed) and run hm-sim
//! cargo sim sweep scenarios/smoke.toml --seeds 1..5
//! cargo sim shrink scenarios/consensus-churn.toml --seed 1   # a smaller failing scenario
//! cargo sim test                              # the simulator's own tests under madsim
//! cargo sim clippy                            # lint the madsim build
//! cargo sim install                           # put a plain `hm-sim` binary in ~/.cargo/bin
//! cargo sim path                              # print where the hm-sim binary is
//! HM_SIM_FEATURES=broken-skip-lock-check cargo sim run …  # a deliberately broken build
//! ```
#![allow(clippy::disallowed_methods)] // a build tool: it runs cargo and execs processes

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

const PROFILE: &str = "sim";

/// The checkout to build. `cargo run` passes the package's directory at run
/// time; prefer it over the one baked in at compile time, because a target
/// dir shared between checkouts (CI's warm cache) may hold a launcher built
/// from another clone, which would otherwise build and run *that* clone.
fn workspace_root() -> PathBuf {
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    let root = manifest_dir.join("../..");
    root.canonicalize().unwrap_or(root)
}

/// `HM_SIM_FEATURES`: extra hm-sim features (e.g. `broken-skip-lock-check`).
/// They share the simulator's target dir: a feature changes the hash of the
/// crates it touches, so both variants stay cached side by side (switching
/// rebuilds nothing, and the dependencies — quinn, rustls, aws-lc — are
/// built once, not once per feature set: a cold CI run saves a whole
/// simulator build). Cargo links the variant it just built to
/// `<target>/madsim/sim/hm-sim` on every build, fresh or not, so each
/// `cargo sim run` runs the build it asked for.
fn sim_features() -> Option<String> {
    std::env::var("HM_SIM_FEATURES")
        .ok()
        .map(|features| features.trim().to_string())
        .filter(|features| !features.is_empty())
}

fn sim_target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("madsim")
}

fn cargo(root: &Path, subcommand: &str) -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    let mut rustflags = std::env::var("RUSTFLAGS").unwrap_or_default();
    if !rustflags.split_whitespace().any(|flag| flag == "madsim") {
        rustflags = format!("{rustflags} --cfg madsim").trim().to_string();
    }
    command
        .arg(subcommand)
        .current_dir(root)
        .env("RUSTFLAGS", rustflags)
        .env("CARGO_TARGET_DIR", sim_target_dir(root));
    command
}

/// Adds `--features` from `HM_SIM_FEATURES` (every subcommand that builds).
fn with_features(command: &mut Command) {
    if let Some(features) = sim_features() {
        eprintln!("cargo sim: building hm-sim with features: {features}");
        command.args(["--features", &features]);
    }
}

fn status_code(status: std::io::Result<std::process::ExitStatus>, what: &str) -> ExitCode {
    match status {
        Ok(status) if status.success() => ExitCode::SUCCESS,
        Ok(status) => ExitCode::from(u8::try_from(status.code().unwrap_or(1)).unwrap_or(1)),
        Err(error) => {
            eprintln!("cargo sim: could not run {what}: {error}");
            ExitCode::from(2)
        }
    }
}

fn build(root: &Path) -> Result<PathBuf, ExitCode> {
    let mut command = cargo(root, "build");
    command.args([
        "--quiet",
        "--profile",
        PROFILE,
        "-p",
        "hm-sim",
        "--bin",
        "hm-sim",
    ]);
    with_features(&mut command);
    let code = status_code(command.status(), "cargo build");
    if code != ExitCode::SUCCESS {
        eprintln!("cargo sim: building the simulator failed (see the errors above)");
        return Err(code);
    }
    Ok(sim_target_dir(root).join(PROFILE).join("hm-sim"))
}

/// `--real` runs the production node: build it the ordinary way (no
/// `--cfg madsim`, the normal target dir).
fn build_hm_node(root: &Path) -> Result<PathBuf, ExitCode> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--quiet", "-p", "hm-host", "--bin", "hm-node"])
        .current_dir(root)
        .env_remove("RUSTFLAGS")
        .status();
    let code = status_code(status, "cargo build --bin hm-node");
    if code != ExitCode::SUCCESS {
        eprintln!("cargo sim: building hm-node for --real failed (see the errors above)");
        return Err(code);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    Ok(target.join("debug").join("hm-node"))
}

fn main() -> ExitCode {
    let root = workspace_root();
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    // Invoked as `cargo sim …` through the alias, or as `cargo-sim sim …`.
    if args.first().map(String::as_str) == Some("sim") {
        args.remove(0);
    }
    let Some(first) = args.first().cloned() else {
        eprintln!(
            "usage: cargo sim <run|sweep|shrink|test|clippy|install|path> [args…]\n       e.g. cargo sim run scenarios/smoke.toml"
        );
        return ExitCode::from(2);
    };
    match first.as_str() {
        "test" | "clippy" | "check" => {
            let mut command = cargo(&root, &first);
            command.args(["--profile", PROFILE, "-p", "hm-sim"]);
            with_features(&mut command);
            if first == "clippy" {
                command.arg("--all-targets");
            }
            command.args(&args[1..]);
            status_code(command.status(), &format!("cargo {first}"))
        }
        "install" => {
            let mut command = cargo(&root, "install");
            command.args([
                "--profile",
                PROFILE,
                "--locked",
                "--path",
                "sim",
                "--bin",
                "hm-sim",
            ]);
            with_features(&mut command);
            command.args(&args[1..]);
            status_code(command.status(), "cargo install")
        }
        "path" => match build(&root) {
            Ok(binary) => {
                println!("{}", binary.display());
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        _ => match build(&root) {
            Ok(binary) => {
                let mut args = args;
                if args.iter().any(|arg| arg == "--real")
                    && !args.iter().any(|arg| arg.starts_with("--hm-node"))
                {
                    match build_hm_node(&root) {
                        Ok(hm_node) => {
                            args.push("--hm-node".into());
                            args.push(hm_node.display().to_string());
                        }
                        Err(code) => return code,
                    }
                }
                status_code(
                    Command::new(&binary).args(&args).status(),
                    &binary.display().to_string(),
                )
            }
            Err(code) => code,
        },
    }
}
