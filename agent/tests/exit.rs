//! `exit.rs` and shutdown: SIGINT/SIGTERM detach and print the summary (exit 0); SIGKILL leaves
//! nothing attached either, because the links are owned by the agent's file descriptors.
mod common;
use std::time::Duration;

use common::*;

/// Names (as the kernel truncates them, 15 bytes) of the agent's programs still loaded.
fn our_programs() -> Vec<String> {
    const OURS: [&str; 8] = [
        "page_fault_user",
        "page_fault_kern",
        "rss_stat",
        "sched_process_f",
        "sched_process_e",
        "sys_enter",
        "sys_exit",
        "noop",
    ];
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter_map(|p| p.name_as_str().map(str::to_string))
        .filter(|n| OURS.iter().any(|o| n.starts_with(o)))
        .collect()
}

fn wait_gone() -> Vec<String> {
    // Program teardown after the last fd closes is asynchronous (RCU): give it a moment.
    for _ in 0..50 {
        let left = our_programs();
        if left.is_empty() {
            return left;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    our_programs()
}

fn signal_run(sig: i32) -> Option<(Vec<serde_json::Value>, i32)> {
    let mut target = start_workload(&["sleep", "--secs", "20"]);
    let mut agent = Running::start(&["watch", "-p", &target.id().to_string(), "--format", "json"]);
    agent.wait_for("start", Duration::from_secs(20));
    assert!(!our_programs().is_empty(), "the agent's programs are loaded while it runs");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(agent.child.id() as i32, sig) };
    let result = if sig == libc::SIGKILL {
        let _ = agent.child.wait();
        None
    } else {
        Some(agent.finish(Duration::from_secs(20)))
    };
    let _ = target.kill();
    let _ = target.wait();
    result
}

#[test]
fn sigterm_and_sigint_detach_and_print_the_summary() {
    if !ebpf_available("sigterm") {
        return;
    }
    assert!(wait_gone().is_empty(), "no agent programs before the test: {:?}", our_programs());
    for sig in [libc::SIGTERM, libc::SIGINT] {
        let (recs, code) = signal_run(sig).unwrap();
        assert_eq!(code, 0, "exit 0 on signal {sig}");
        assert_eq!(summary(&recs)["type"], "summary");
        let left = wait_gone();
        assert!(left.is_empty(), "programs left attached after signal {sig}: {left:?}");
    }
}

#[test]
fn sigkill_leaves_nothing_attached() {
    if !ebpf_available("sigkill") {
        return;
    }
    assert!(signal_run(libc::SIGKILL).is_none());
    let left = wait_gone();
    assert!(left.is_empty(), "programs left attached after SIGKILL: {left:?}");
}

#[test]
fn a_reused_pid_is_a_new_process() {
    if !ebpf_available("pid_reuse") {
        return;
    }
    for attempt in 0..5 {
        let out = std::process::Command::new(agent())
            .args(["watch", "--format", "json", "--interval", "0.5", "--"])
            .arg(agent())
            .args(["workload", "reuse"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let Some(pid) = stderr.lines().find_map(|l| l.strip_prefix("reused ")) else {
            eprintln!("attempt {attempt}: the pid was not reused ({stderr}), trying again");
            continue;
        };
        let pid: u64 = pid.trim().parse().unwrap();
        let recs = parse(&String::from_utf8(out.stdout).unwrap());
        let entries: Vec<_> =
            summary(&recs)["procs"].as_array().unwrap().iter().filter(|p| p["pid"] == pid).cloned().collect();
        assert_eq!(entries.len(), 2, "two processes had pid {pid}: {entries:?}");
        let by =
            |comm: &str| entries.iter().find(|p| p["comm"] == comm).unwrap_or_else(|| panic!("{comm}: {entries:?}"));
        let (a, _) = mapping_pages(by("wl-reuse-a"), "anon@");
        let (b, _) = mapping_pages(by("wl-reuse-b"), "anon@");
        assert_within("first process's pages", a, MIB_PAGES as i64, 5.0);
        assert_within("second process's pages", b, 2 * MIB_PAGES as i64, 5.0);
        return;
    }
    panic!("could not get a pid reused in 5 attempts");
}
