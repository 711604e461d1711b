//! The shipped systemd unit (`node/host/dist/hm-node.service`) is one
//! systemd accepts, runs the binary's real `run --config` command, and
//! restarts the node on failure but not on a refused configuration.
#![allow(clippy::disallowed_methods, clippy::unwrap_used)] // reads a repo file, runs a tool

const UNIT: &str = include_str!("../dist/hm-node.service");

fn setting<'a>(key: &str) -> &'a str
where
    'static: 'a,
{
    UNIT.lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("{key}= missing from the unit"))
}

#[test]
fn the_unit_restarts_on_failure_with_a_limit_and_not_on_a_bad_config() {
    assert_eq!(setting("Restart"), "on-failure");
    assert_eq!(setting("RestartPreventExitStatus"), "2");
    assert!(setting("StartLimitBurst").parse::<u32>().unwrap() > 1);
    assert!(setting("RestartSec").ends_with('s'));
    assert_eq!(setting("KillSignal"), "SIGTERM");
    // The command line is one the binary takes.
    let exec = setting("ExecStart");
    let args: Vec<&str> = exec.split_whitespace().skip(1).collect();
    assert_eq!(&args[..2], &["run", "--config"]);
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_hm-node"))
        .args(["run", "--help"])
        .output()
        .unwrap();
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("--config"));
}

#[test]
fn systemd_accepts_the_unit() {
    let Ok(probe) = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
    else {
        eprintln!("systemd-analyze not installed: the unit is checked by its settings only");
        return;
    };
    assert!(probe.status.success());
    // Verify a copy whose ExecStart points at the binary just built (the
    // installed path does not exist here).
    let dir = tempfile::tempdir().unwrap();
    let unit = UNIT.replace("/usr/local/bin/hm-node", env!("CARGO_BIN_EXE_hm-node"));
    let path = dir.path().join("hm-node.service");
    std::fs::write(&path, unit).unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let complaints = String::from_utf8_lossy(&out.stderr);
    // Unknown users/groups are the installer's job; anything else about
    // this unit is a mistake in it.
    let ours: Vec<&str> = complaints
        .lines()
        .filter(|line| {
            line.contains("hm-node.service") && !line.contains("User") && !line.contains("Group")
        })
        .collect();
    assert!(ours.is_empty(), "systemd-analyze verify: {complaints}");
}
