//! `--bpf-stats`: the agent reports what its own programs cost, from the kernel's run
//! statistics: one page_fault_user and one rss_stat run per page written, at least.
mod common;
use common::*;

#[test]
fn the_summary_has_each_programs_runs_and_time() {
    if !ebpf_available("bpf_stats") {
        return;
    }
    let mib = 16;
    let (recs, code) = watch_workload(&["--bpf-stats"], &["anon", "--mib", &mib.to_string(), "--hold", "0.2"]);
    assert_eq!(code, 0);
    let progs = summary(&recs)["agent"]["programs"].as_array().cloned().unwrap_or_default();
    let prog = |name: &str| {
        progs.iter().find(|p| p["name"] == name).unwrap_or_else(|| panic!("no {name} in {progs:?}")).clone()
    };
    let pages = mib * MIB_PAGES as i64;
    for name in ["page_fault_user", "rss_stat"] {
        let p = prog(name);
        let (runs, ns) = (p["runs"].as_i64().unwrap(), p["ns_per_run"].as_f64().unwrap());
        // Every fault on the machine runs it; the workload's own pages are a floor.
        assert!(runs >= pages, "{name}: {runs} runs for {pages} pages written");
        assert!(ns > 0.0 && ns < 100_000.0, "{name}: {ns} ns per run");
    }
    // Without the flag, nothing is reported.
    let (recs, _) = watch_workload(&[], &["anon", "--mib", "1", "--hold", "0.1"]);
    assert!(summary(&recs)["agent"]["programs"].is_null());
}
