//! The watched set: a thread storm does not grow it, and a process outside the tree never
//! appears, however hard it faults.
mod common;
use common::*;

#[test]
fn a_thread_storm_is_one_process() {
    if !ebpf_available("thread_storm") {
        return;
    }
    let (recs, code) = watch_workload(&[], &["threads", "--threads", "2000"]);
    assert_eq!(code, 0);
    let forks = of_type(&recs, "proc").into_iter().filter(|r| r["event"] == "fork").count();
    assert_eq!(forks, 0, "threads are not processes");
    let procs = summary(&recs)["procs"].as_array().unwrap().len();
    assert_eq!(procs, 1, "one process in the summary");
    let p = proc_by_comm(&recs, "wl-threads");
    // Each thread wrote one page of its own mapping (plus its stack).
    assert!(p["pages"]["anon"].as_i64().unwrap() >= 2000, "{p}");
}

#[test]
fn a_process_outside_the_tree_never_appears() {
    if !ebpf_available("tree_boundary") {
        return;
    }
    let outside = std::process::Command::new(workloads())
        .args(["storm", "--mib", "512", "--passes", "2"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (recs, _) = watch_workload(&[], &["anon", "--mib", "16", "--hold", "1"]);
    let outside_pid = outside.id() as u64;
    let mut outside = outside;
    let _ = outside.wait();
    let start = &of_type(&recs, "start")[0];
    let mut tree: Vec<u64> = start["targets"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
    tree.extend(of_type(&recs, "proc").iter().filter(|r| r["event"] == "fork").map(|r| r["pid"].as_u64().unwrap()));
    for r in &recs {
        if let Some(pid) = r["pid"].as_u64() {
            assert!(tree.contains(&pid) && pid != outside_pid, "a pid outside the tree appeared: {r}");
        }
    }
    for p in summary(&recs)["procs"].as_array().unwrap() {
        assert!(tree.contains(&p["pid"].as_u64().unwrap()), "{p}");
    }
}

#[test]
fn a_fork_storm_keeps_every_process_in_the_summary() {
    if !ebpf_available("fork_storm") {
        return;
    }
    // More short-lived children than the agent keeps in full (1024): the oldest are reduced
    // to their summary entries, none is lost.
    let n = 1500;
    let (recs, code) = watch_workload(&[], &["forks", "--n", &n.to_string()]);
    assert_eq!(code, 0);
    let forks: Vec<u64> =
        of_type(&recs, "proc").iter().filter(|r| r["event"] == "fork").map(|r| r["pid"].as_u64().unwrap()).collect();
    assert_eq!(forks.len(), n);
    let procs = summary(&recs)["procs"].as_array().unwrap();
    assert_eq!(procs.len(), n + 1, "every process in the summary");
    let mut pids: Vec<u64> = procs.iter().map(|p| p["pid"].as_u64().unwrap()).collect();
    pids.sort_unstable();
    pids.dedup();
    assert_eq!(pids.len(), n + 1, "no process twice");
    let children = procs.iter().filter(|p| p["comm"].as_str().unwrap().starts_with("wl-fork-")).count();
    assert_eq!(children, n, "each child under its own name");
}
