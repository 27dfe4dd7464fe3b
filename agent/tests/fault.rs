//! `fault.rs`: faults are counted per pid and, for the ones that added pages, per mapping.
mod common;
use common::*;

#[test]
fn one_fault_per_written_page() {
    if !ebpf_available("one_fault_per_written_page") {
        return;
    }
    let mib = 32;
    let (recs, _) = watch_workload(&[], &["anon", "--mib", &mib.to_string(), "--hold", "0.2"]);
    let p = proc_by_comm(&recs, "wl-anon");
    let want = mib * MIB_PAGES as i64;
    let m =
        p["mappings"].as_array().unwrap().iter().find(|m| m["mapping"].as_str().unwrap().starts_with("anon@")).unwrap();
    assert_within("faults in the anon mapping", m["faults"].as_i64().unwrap(), want, 5.0);
    let total = p["faults"].as_i64().unwrap();
    assert!(total >= want && total < want + want / 5, "faults of the pid: {total} for {want} pages");
    // The per-interval records add up to the summary.
    let per_interval: i64 =
        of_type(&recs, "faults").iter().filter(|f| f["comm"] == "wl-anon").map(|f| f["faults"].as_i64().unwrap()).sum();
    assert!(per_interval <= total && per_interval >= want, "interval faults {per_interval} vs total {total}");
}
