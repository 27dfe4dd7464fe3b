//! `exec.rs` and the spawn gate: the command is watched from before its exec, runs as the
//! sudo user, and its exit status becomes the agent's.
mod common;
use std::process::Command;

use common::*;

#[test]
fn the_command_runs_as_sudo_uid_and_its_exit_status_is_returned() {
    if !ebpf_available("exec_sudo_uid") {
        return;
    }
    let out = Command::new(agent())
        .args(["watch", "--format", "json", "--", "sh", "-c", "id -u; exit 7"])
        .env("SUDO_UID", "65534")
        .env("SUDO_GID", "65534")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(7), "the command's exit status");
    let stdout = String::from_utf8(out.stdout).unwrap();
    // Records on a pipe: the command's stdout goes to the agent's stderr, never into them.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.lines().any(|l| l == "65534"), "the command ran as SUDO_UID: {stderr}");
    let recs = parse(&stdout);
    let execs: Vec<_> = of_type(&recs, "proc").into_iter().filter(|r| r["event"] == "exec").collect();
    assert!(execs.len() >= 2, "sh and id both exec under watch: {execs:?}");
    assert_eq!(summary(&recs)["type"], "summary");
}
