//! `watch -p`: a tree that was running before the agent started is found by a /proc scan and
//! its later faults are attributed.
mod common;
use std::time::Duration;

use common::*;

#[test]
fn watch_p_on_an_already_running_tree() {
    if !ebpf_available("watch_p") {
        return;
    }
    let mib = 32;
    let mut wl =
        start_workload(&["shared", "--mib", &mib.to_string(), "--fractions", "1,0.5", "--wait-stdin", "--hold", "0.5"]);
    let root = wl.id();
    // Let the children exist before the agent starts.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while children_of(root).len() < 2 {
        assert!(std::time::Instant::now() < deadline, "workload children did not appear");
        std::thread::sleep(Duration::from_millis(20));
    }
    let kids = children_of(root);
    let mut agent = Running::start(&["watch", "-p", &root.to_string(), "--format", "json", "--interval", "0.5"]);
    let start = agent.wait_for("start", Duration::from_secs(20));
    let targets: Vec<u64> = start["targets"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
    assert!(targets.contains(&(root as u64)), "{start}");
    for k in &kids {
        assert!(targets.contains(&(*k as u64)), "child {k} is a target: {start}");
    }
    go(&mut wl, 2);
    let (recs, code) = agent.finish(Duration::from_secs(30));
    let _ = wl.wait();
    assert_eq!(code, 0);
    let full = mib * MIB_PAGES as i64;
    for (comm, want) in [("wl-shared-0", full), ("wl-shared-1", full / 2)] {
        let (pages, shared) = mapping_pages(proc_by_comm(&recs, comm), "shmem-anon@");
        assert!(shared);
        assert_within(&format!("{comm} segment pages"), pages, want, 5.0);
    }
}

fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect()
}
