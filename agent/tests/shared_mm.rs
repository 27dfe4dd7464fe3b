//! Two processes on one mm (`clone(CLONE_VM)` without `CLONE_THREAD`): smaps reports the whole
//! mm for both, and so does the ledger; the mem records say the mm is shared.
mod common;
use std::{collections::HashMap, process::Command};

use common::*;
use serde_json::Value;

const ARGS: [&str; 7] = ["clonevm", "--child-mib", "32", "--mib", "16", "--hold", "6"];

#[test]
fn a_clone_vm_pair_has_no_drift_and_names_each_other() {
    if !ebpf_available("shared_mm") {
        return;
    }
    let (recs, code) = watch_workload(&[], &ARGS);
    assert_eq!(code, 0);
    let mut by_pid: HashMap<u64, Vec<&Value>> = HashMap::new();
    for m in of_type(&recs, "mem").into_iter().filter(|m| m["comm"].as_str().unwrap().starts_with("wl-clonevm")) {
        by_pid.entry(m["pid"].as_u64().unwrap()).or_default().push(m);
    }
    assert_eq!(by_pid.len(), 2, "readings of both processes: {by_pid:?}");
    for m in by_pid.values().flatten() {
        let (rss, drift) = (m["rss_kib"].as_i64().unwrap(), m["drift_kib"].as_i64().unwrap_or(0));
        assert!(drift.abs() <= 256.max(rss / 100), "drift beyond timing: {m}");
    }
    let pids: Vec<u64> = by_pid.keys().copied().collect();
    for (&pid, ms) in &by_pid {
        let other = pids.iter().find(|&&p| p != pid).unwrap();
        assert!(
            ms.iter().any(|m| m["mm_shared_with"].as_array().is_some_and(|a| a.iter().any(|p| p == other))),
            "{pid}'s mem records name {other} in mm_shared_with: {ms:?}"
        );
    }
    // The pages each one's faults added stay its own.
    let p = proc_by_comm(&recs, "wl-clonevm-c");
    assert_within("child's anon pages", p["pages"]["anon"].as_i64().unwrap(), 32 * MIB_PAGES as i64, 5.0);
}

#[test]
fn the_human_format_has_no_unexplained_drift_line_for_them() {
    if !ebpf_available("shared_mm_human") {
        return;
    }
    let out = Command::new(agent())
        .args(["watch", "--interval", "0.5", "--"])
        .arg(workloads())
        .args(ARGS)
        .output()
        .expect("run agent");
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.lines().any(|l| l.contains("!!")), "{text}");
}
