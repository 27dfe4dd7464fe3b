//! A cgroup-level leak: a member appends 1 MiB/s to a tmpfs file it never maps. Its cgroup's
//! memory grows steadily and no member's pages explain it: a `leak` record with scope
//! `cgroup`, naming memory.stat's shmem line and the file; no pid is flagged.
mod cgroup_util;
mod common;
use std::{process::Command, time::Duration};

use cgroup_util::{watch, TestCgroup};
use common::*;

#[test]
fn unmapped_tmpfs_growth_is_a_cgroup_leak_while_no_pid_is_flagged() {
    if !ebpf_available("cgroup_leak") {
        return;
    }
    let cg = TestCgroup::v1_memory("leak");
    let shm = format!("/dev/shm/agent-test-cgroup-leak-{}", std::process::id());
    let args = ["--cgroup", cg.path(), "--smaps-interval", "1", "--duration", "38", "--fail-on-leak"];
    let (agent, _) = watch(&args);
    let st = Command::new(workloads())
        .args(["cgmember", "--join", cg.path(), "--tmpfs-file", &shm, "--grow-kib-s", "1024", "--grow-s", "40"])
        .args(["--hold-s", "0"])
        .status()
        .unwrap();
    assert!(st.success());
    let (recs, code) = agent.finish(Duration::from_secs(60));
    assert_eq!(code, 3, "--fail-on-leak counts a standing cgroup verdict");
    let leaks = of_type(&recs, "leak");
    assert!(leaks.iter().all(|l| l["scope"] == "cgroup"), "no pid is flagged: {leaks:?}");
    let l = leaks.iter().find(|l| l["state"] == "flagged").unwrap_or_else(|| panic!("no cgroup leak: {leaks:?}"));
    assert_eq!(l["path"], cg.path());
    assert_eq!(l["metric"], "memory.usage_in_bytes");
    assert!(l["stat_line"].as_str().unwrap().ends_with("shmem"), "{l}");
    assert_within("cgroup leak rate KiB/s", l["rate_kib_s"].as_f64().unwrap() as i64, 1024, 25.0);
    // Most of the growth is mapped by no member (the verdict wants half), and memory.stat's
    // shmem line grew by all of it.
    let growth = l["growth_kib"].as_f64().unwrap();
    assert!(l["unexplained_kib"].as_f64().unwrap() >= 0.5 * growth, "{l}");
    assert!(l["stat_growth_kib"].as_f64().unwrap() >= 0.9 * growth, "{l}");
    assert_eq!(l["files"][0], shm.as_str(), "{l}");
    assert!(summary(&recs)["procs"].as_array().unwrap().iter().all(|p| p["leak"] == false));
}
