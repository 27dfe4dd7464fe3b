//! `exit.rs` and shutdown: SIGINT/SIGTERM detach and print the summary (exit 0); SIGKILL leaves
//! nothing attached either, because the links are owned by the agent's file descriptors.
mod common;
use std::time::Duration;

use common::*;

/// Ids of the BPF programs the process `pid` holds open (its fdinfo says `prog_id:`).
fn programs_of(pid: u32) -> Vec<u32> {
    let mut ids = Vec::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/fdinfo")).unwrap().flatten() {
        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
        ids.extend(
            text.lines().filter_map(|l| l.strip_prefix("prog_id:")).filter_map(|v| v.trim().parse::<u32>().ok()),
        );
    }
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Which of `ids` are still loaded. Other agents on the machine (a concurrent test run, say)
/// do not count: only the programs this agent held.
fn still_loaded(ids: &[u32]) -> Vec<u32> {
    aya::programs::loaded_programs().filter_map(Result::ok).map(|p| p.id()).filter(|id| ids.contains(id)).collect()
}

fn wait_gone(ids: &[u32]) -> Vec<u32> {
    // Program teardown after the last fd closes is asynchronous (RCU): give it a moment.
    for _ in 0..50 {
        if still_loaded(ids).is_empty() {
            return Vec::new();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    still_loaded(ids)
}

/// Run the agent on a sleeping target, send it `sig`; its output (unless SIGKILL) and the ids
/// of the programs it had loaded.
fn signal_run(sig: i32) -> (Option<(Vec<serde_json::Value>, i32)>, Vec<u32>) {
    let mut target = start_workload(&["sleep", "--secs", "20"]);
    let mut agent = Running::start(&["watch", "-p", &target.id().to_string(), "--format", "json"]);
    agent.wait_for("start", Duration::from_secs(20));
    let ids = programs_of(agent.child.id());
    assert!(ids.len() >= 7, "the agent holds its programs while it runs: {ids:?}");
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
    (result, ids)
}

#[test]
fn sigterm_and_sigint_detach_and_print_the_summary() {
    if !ebpf_available("sigterm") {
        return;
    }
    for sig in [libc::SIGTERM, libc::SIGINT] {
        let (out, ids) = signal_run(sig);
        let (recs, code) = out.unwrap();
        assert_eq!(code, 0, "exit 0 on signal {sig}");
        assert_eq!(summary(&recs)["type"], "summary");
        let left = wait_gone(&ids);
        assert!(left.is_empty(), "programs left loaded after signal {sig}: {left:?} of {ids:?}");
    }
}

#[test]
fn sigkill_leaves_nothing_attached() {
    if !ebpf_available("sigkill") {
        return;
    }
    let (out, ids) = signal_run(libc::SIGKILL);
    assert!(out.is_none());
    let left = wait_gone(&ids);
    assert!(left.is_empty(), "programs left loaded after SIGKILL: {left:?} of {ids:?}");
}

#[test]
fn a_reused_pid_is_a_new_process() {
    if !ebpf_available("pid_reuse") {
        return;
    }
    for attempt in 0..5 {
        let out = std::process::Command::new(agent())
            .args(["watch", "--format", "json", "--interval", "0.5", "--"])
            .arg(workloads())
            .arg("reuse")
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
