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

#[test]
fn a_siblings_exit_shows_as_sharing_not_as_own_growth() {
    if !ebpf_available("sibling_exit") {
        return;
    }
    // Two children write the whole segment; the first exits after 1 s, the second stays 3 s
    // more: its PSS doubles with no fault of its own.
    let mib = 64;
    let (recs, code) = watch_workload(
        &["--smaps-interval", "0.3"],
        &["shared", "--mib", &mib.to_string(), "--fractions", "1,1", "--holds", "1,3"],
    );
    assert_eq!(code, 0);
    let exit_ts = of_type(&recs, "proc")
        .into_iter()
        .find(|r| r["event"] == "exit" && r["comm"] == "wl-shared-0")
        .expect("the first writer's exit")["ts"]
        .as_f64()
        .unwrap();
    let survivor: Vec<&Value> =
        of_type(&recs, "mem").into_iter().filter(|r| r["comm"] == "wl-shared-1" && !r["explain"].is_null()).collect();
    let after: Vec<&Value> = survivor.iter().copied().filter(|r| r["ts"].as_f64().unwrap() > exit_ts).collect();
    let sharing: i64 = after.iter().map(|r| r["explain"]["sharing_kib"].as_i64().unwrap()).sum();
    let own: i64 = after
        .iter()
        .map(|r| {
            r["explain"]["faulted_private_kib"].as_i64().unwrap() + r["explain"]["faulted_shared_kib"].as_i64().unwrap()
        })
        .sum();
    assert_within("sharing after the sibling's exit (KiB)", sharing, mib * 1024 / 2, 10.0);
    assert!(own.abs() < 1024, "no own faults after the sibling's exit: {own} KiB; {after:?}");
    // And it is not a leak, nor own growth: nothing flagged.
    assert!(of_type(&recs, "leak").is_empty());
}
