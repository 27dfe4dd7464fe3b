//! `--cgroup` on a v1 path (the memory controller's). The kernel reports moves between cgroups
//! on any hierarchy (`cgroup:cgroup_attach_task`): a process that moves itself in is watched at
//! once, so the child it forks next is followed from its first fault, and one that moves out is
//! dropped at once: a `left` record, and none of what it does after. Without that hook, joins and
//! departures come from cgroup.procs, re-read every interval (and `start` says which). A path
//! that is not a cgroup is one line.
mod cgroup_util;
mod common;
use std::{process::Command, time::Duration};

use agent::kernel::loader::LoadOptions;
use cgroup_util::{own_memory_cgroup, watch, watch_args, TestCgroup, MEMORY};
use common::*;
use serde_json::Value;

/// The workload: joins `cg`, its child writes 16 MiB after `delay` s, leaves after 0.5 s more,
/// waits `wait` s, writes 32 MiB outside, holds 2 s.
fn member(cg: &TestCgroup, delay: &str, wait: &str) -> Command {
    let back = format!("{MEMORY}{}", own_memory_cgroup());
    let mut c = Command::new(workloads());
    c.args(["cgmember", "--join", cg.path(), "--delay-s", delay, "--anon-mib", "16", "--leave-to", &back]).args([
        "--leave-after-s",
        "0.5",
        "--after-leave-wait-s",
        wait,
        "--after-leave-mib",
        "32",
        "--hold-s",
        "2",
    ]);
    c
}

/// The child left: a `left` record, no faults record of it after the interval that closes next
/// (that one holds what it did before it left), and only its 16 MiB inside (4096 pages) in its
/// summary.
fn check_left(recs: &[Value]) {
    let procs = of_type(recs, "proc");
    let child = proc_by_comm(recs, "wl-cg-child");
    let pid = child["pid"].as_u64().unwrap();
    let left = procs.iter().find(|p| p["event"] == "left" && p["pid"] == pid).unwrap_or_else(|| panic!("{procs:?}"));
    let left_ts = left["ts"].as_f64().unwrap();
    let late: Vec<_> = of_type(recs, "faults")
        .into_iter()
        .filter(|f| f["pid"] == pid && f["ts"].as_f64().unwrap() > left_ts + 0.6)
        .collect();
    assert!(late.is_empty(), "faults after it left at {left_ts}: {late:?}");
    assert_within("child anon pages (the 16 MiB inside only)", child["pages"]["anon"].as_i64().unwrap(), 4096, 5.0);
    // The parent stayed: reported until its exit.
    assert!(procs.iter().any(|p| p["event"] == "exit" && p["comm"] == "wl-cg-parent"), "{procs:?}");
}

#[test]
fn v1_moves_in_and_out_are_followed_in_the_kernel() {
    if !ebpf_available("cgroup_v1_moves") {
        return;
    }
    let cg = TestCgroup::v1_memory("moves");
    let (agent, start) = watch(&watch_args(&cg, "7"));
    assert!(start["cgroups"][0].as_str().unwrap().contains("moves in and out followed in the kernel"), "{start}");
    // No delay: the child forked right after the move writes at once; and writes 32 MiB right
    // after it moved out.
    assert!(member(&cg, "0", "0").status().unwrap().success());
    let (recs, code) = agent.finish(Duration::from_secs(30));
    assert_eq!(code, 0);
    let procs = of_type(&recs, "proc");
    let join =
        procs.iter().position(|p| p["event"] == "join" && p["comm"] == "wl-cg-parent").expect("the parent joined");
    let fork = procs.iter().position(|p| p["event"] == "fork" && p["ppid"] == procs[join]["pid"]).expect("its fork");
    assert!(join < fork, "{procs:?}");
    check_left(&recs);
}

#[test]
fn without_the_move_hook_v1_membership_is_polled() {
    if !ebpf_available("cgroup_v1_polled") {
        return;
    }
    let cg = TestCgroup::v1_memory("polled");
    let args = watch_args(&cg, "9");
    let load = LoadOptions { simulate_missing: vec!["cgroup:cgroup_attach_task".into()], ..LoadOptions::default() };
    // The child writes 1.5 s after joining (a poll has found it by then), and 1.5 s after
    // leaving (a poll has seen it go).
    let run = std::thread::spawn({
        let mut c = member(&cg, "1.5", "1.5");
        move || {
            std::thread::sleep(Duration::from_secs(2));
            c.status().unwrap()
        }
    });
    let (res, recs) = watch_in_process(&args, load);
    assert!(run.join().unwrap().success());
    assert_eq!(res, Ok(0));
    let start = &of_type(&recs, "start")[0];
    assert!(start["cgroups"][0].as_str().unwrap().contains("no BPF cgroup id at fork and exec on v1"), "{start}");
    let procs = of_type(&recs, "proc");
    let joined: Vec<&str> =
        procs.iter().filter(|p| p["event"] == "join").map(|p| p["comm"].as_str().unwrap()).collect();
    assert!(joined.contains(&"wl-cg-child"), "joins found by polling: {procs:?}");
    check_left(&recs);
}

#[test]
fn a_path_that_is_not_a_cgroup_is_one_line() {
    if !ebpf_available("cgroup_not_a_cgroup") {
        return;
    }
    let out = Command::new(agent()).args(["watch", "--cgroup", "/tmp"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("--cgroup /tmp: not a cgroup directory"), "{err}");
}

/// A container's own tmpfs: a member in a mount namespace of its own writes a 32 MiB file there
/// and closes it. No member maps it or holds it open; the record still names it (its mounts are
/// walked) under unmapped shmem, as the member sees it.
#[test]
fn a_closed_file_on_a_members_private_tmpfs_is_named() {
    if !ebpf_available("cgroup_private_tmpfs") {
        return;
    }
    let cg = TestCgroup::v1_memory("tmpfs");
    let dir = std::env::temp_dir().join(format!("agent-test-cgroup-tmpfs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("cache.bin");
    let (agent, _) = watch(&watch_args(&cg, "6"));
    let st = Command::new(workloads())
        .args(["cgmember", "--join", cg.path(), "--private-tmpfs", dir.to_str().unwrap()])
        .args(["--tmpfs-file", file.to_str().unwrap(), "--tmpfs-mib", "32", "--close-file", "--hold-s", "4"])
        .status()
        .unwrap();
    let (recs, _) = agent.finish(Duration::from_secs(30));
    let _ = std::fs::remove_dir(&dir);
    assert!(st.success());
    let named: Vec<_> = of_type(&recs, "cgroup")
        .into_iter()
        .filter(|c| c["files"].as_array().unwrap().iter().any(|f| f["path"] == file.to_str().unwrap()))
        .collect();
    let c = named.last().unwrap_or_else(|| panic!("{} never named: {:?}", file.display(), of_type(&recs, "cgroup")));
    let f = &c["files"][0];
    assert_eq!(
        (f["path"].as_str(), f["bytes"].as_u64(), f["via"].as_str()),
        (file.to_str(), Some(32 << 20), Some("mount"))
    );
    assert_within("unmapped shmem pages", c["unmapped"]["shmem_bytes"].as_i64().unwrap() / 4096, 8192, 5.0);
}

/// Moves a thread back to this process's memory cgroup when dropped (before its test cgroup,
/// whose removal kills whatever is left in it: here, this test process).
struct ThreadBack(u32);

impl Drop for ThreadBack {
    fn drop(&mut self) {
        let back = format!("{MEMORY}{}/tasks", own_memory_cgroup());
        let _ = std::fs::write(back, self.0.to_string());
    }
}

/// A thread moved alone (a write of 0 to v1 `tasks` by that thread) is no process: the move
/// tracepoint reports its tid, which is never joined (no record names it); its process joins
/// when cgroup.procs lists it, at the next poll.
#[test]
fn a_thread_moved_alone_is_not_joined_as_a_process() {
    if !ebpf_available("cgroup_v1_thread") {
        return;
    }
    let cg = TestCgroup::v1_memory("thread");
    let (agent, _) = watch(&watch_args(&cg, "4"));
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let tasks = cg.dir.join("tasks");
    let t = std::thread::spawn(move || {
        let tid: u32 =
            std::fs::read_link("/proc/thread-self").unwrap().file_name().unwrap().to_str().unwrap().parse().unwrap();
        let _back = ThreadBack(tid);
        std::fs::write(&tasks, "0").unwrap();
        tid_tx.send(tid).unwrap();
        let _ = done_rx.recv();
    });
    let tid = tid_rx.recv().unwrap();
    std::thread::sleep(Duration::from_secs(2));
    drop(done_tx);
    t.join().unwrap();
    let (recs, code) = agent.finish(Duration::from_secs(30));
    assert_eq!(code, 0);
    let me = std::process::id();
    assert_ne!(tid, me);
    let procs = of_type(&recs, "proc");
    assert!(procs.iter().all(|p| p["pid"] != tid), "thread {tid} taken for a process: {procs:?}");
    assert!(of_type(&recs, "faults").iter().all(|f| f["pid"] != tid), "{recs:?}");
    assert!(procs.iter().any(|p| p["event"] == "join" && p["pid"] == me), "its process joined: {procs:?}");
}
