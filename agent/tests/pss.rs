//! The smaps sampler: the PSS of a segment's mappers adds up to the segment's resident size.
mod common;
use common::*;
use serde_json::Value;

#[test]
fn pss_of_the_segment_mappers_adds_up_to_its_resident_size() {
    if !ebpf_available("pss_sum") {
        return;
    }
    let mib = 64;
    // Child 0 writes all of it, child 1 half: every page is resident once, shared by 1 or 2.
    let (recs, code) = watch_workload(
        &["--smaps-interval", "0.3"],
        &["shared", "--mib", &mib.to_string(), "--fractions", "1,0.5,0", "--hold", "2.5"],
    );
    assert_eq!(code, 0);
    let mut sweeps: std::collections::BTreeMap<u64, Vec<&Value>> = Default::default();
    for r in of_type(&recs, "mem") {
        sweeps.entry(r["sweep"].as_u64().unwrap()).or_default().push(r);
    }
    let best = sweeps
        .values()
        .map(|s| s.iter().map(|m| m["pss_shmem_kib"].as_i64().unwrap()).sum::<i64>())
        .max()
        .expect("some mem sweeps");
    assert_within("sum of Pss_Shmem over the mappers (KiB)", best, mib * 1024, 5.0);
    // And USS does not see it as private: the half-shared pages are Shared in both writers.
    let m0 = recs
        .iter()
        .filter(|r| r["type"] == "mem" && r["comm"] == "wl-shared-0")
        .map(|r| r["uss_kib"].as_i64().unwrap())
        .max()
        .unwrap();
    assert!(m0 < mib * 1024 * 3 / 4, "writer 0's USS excludes the pages shared with writer 1: {m0}");
}
