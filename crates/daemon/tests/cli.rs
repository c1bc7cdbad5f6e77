//! The CLI's contract: help, version, and refusing bad arguments.
#![allow(clippy::unwrap_used)]

use std::process::Command;

fn drainguard(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_drainguard"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn lists_its_commands() {
    let out = drainguard(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for cmd in ["run", "watch", "engine", "replay", "sim", "check-config"] {
        assert!(help.contains(cmd), "{cmd} missing from --help");
    }
}

#[test]
fn sim_refuses_unknown_presets_and_bad_volumes() {
    let out = drainguard(&["sim", "--preset", "heist"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown preset \"heist\""));
    let out = drainguard(&["sim", "--volume", "0"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--volume"));
}

#[test]
fn sim_is_deterministic_for_a_seed() {
    let a = drainguard(&["sim", "--preset", "normal", "--seed", "5", "--hours", "1"]);
    let b = drainguard(&["sim", "--preset", "normal", "--seed", "5", "--hours", "1"]);
    assert!(a.status.success());
    assert!(a.stdout.len() > 10_000);
    assert_eq!(a.stdout, b.stdout);
}
