//! Bad input gives one clear line and a shell-like exit code, never a panic.
mod common;
use std::process::Command;

use agent::kernel::loader::LoadOptions;
use common::*;

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(agent()).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn no_such_pid() {
    let (code, stdout, stderr) = run(&["watch", "-p", "999999999"]);
    assert_eq!(code, 1);
    assert_eq!(stderr.trim(), "agent: no such process: 999999999");
    assert!(stdout.is_empty());
}

#[test]
fn command_not_found_is_127() {
    let (code, _, stderr) = run(&["watch", "--", "no-such-command-xyz"]);
    assert_eq!(code, 127);
    assert_eq!(stderr.trim(), "agent: no-such-command-xyz: command not found");
}

#[test]
fn nothing_to_watch() {
    let (code, _, stderr) = run(&["watch"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("give `-p PID`, `--cgroup PATH` or `-- CMD ARGS`"), "{stderr}");
}

#[test]
fn not_root_says_sudo() {
    // As root, drop to nobody for this one run; as a user, run as is.
    let mut cmd = Command::new(agent());
    cmd.args(["watch", "--", "true"]);
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        use std::os::unix::process::CommandExt;
        cmd.uid(65534).gid(65534);
    }
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.trim().ends_with("run it with sudo"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
}

#[test]
fn a_missing_optional_tracepoint_degrades_and_says_so() {
    if !ebpf_available("missing_tracepoint") {
        return;
    }
    // The agent's own loader, told to treat the tracepoint as missing from this kernel.
    let missing = |tp: &str| LoadOptions { simulate_missing: vec![tp.into()], ..Default::default() };
    let (code, recs) = watch_in_process(&["--format", "json", "--", "true"], missing("exceptions:page_fault_kernel"));
    assert_eq!(code, Ok(0));
    let start = &of_type(&recs, "start")[0];
    assert!(!start["hooks"].as_array().unwrap().iter().any(|h| h == "page_fault_kernel"), "{start}");
    assert!(start["missing_hooks"][0].as_str().unwrap().starts_with("exceptions:page_fault_kernel"), "{start}");
    let (code, _) = watch_in_process(&["--", "true"], missing("kmem:rss_stat"));
    let (code, stderr) = code.expect_err("an essential tracepoint missing is an error");
    assert_eq!(code, 1);
    assert!(stderr.contains("tracepoint kmem:rss_stat is missing"), "{stderr}");
}
