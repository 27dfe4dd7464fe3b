//! `rss.rs` (with `fault.rs`): the in-kernel join of rss_stat with the fault in progress gives
//! exact pages per pid and mapping.
mod common;
use common::*;

#[test]
fn private_anon_pages_go_to_the_writer_and_its_mapping() {
    if !ebpf_available("private_anon_pages") {
        return;
    }
    let mib = 64;
    let (recs, code) = watch_workload(&[], &["anon", "--mib", &mib.to_string(), "--hold", "0.3"]);
    assert_eq!(code, 0);
    let p = proc_by_comm(&recs, "wl-anon");
    let want = mib * MIB_PAGES as i64;
    let (pages, shared) = mapping_pages(p, "anon@");
    assert_within("pages in the anon mapping", pages, want, 5.0);
    assert!(!shared);
    assert_eq!(p["mappings"][0]["mapping"].as_str().unwrap().split('@').next(), Some("anon"), "top mapping");
    assert_within("anon pages of the pid", p["pages"]["anon"].as_i64().unwrap(), want, 5.0);
    assert!(p["pages"]["shmem"].as_i64().unwrap() < 16);
    assert_eq!(summary(&recs)["lost_events"], 0);
}

#[test]
fn shared_segment_writers_get_shmem_pages_and_a_mere_mapper_none() {
    if !ebpf_available("shared_segment") {
        return;
    }
    let mib = 64;
    let (recs, code) =
        watch_workload(&[], &["shared", "--mib", &mib.to_string(), "--fractions", "1,0.5,0", "--hold", "0.3"]);
    assert_eq!(code, 0);
    let full = mib * MIB_PAGES as i64;
    for (comm, want) in [("wl-shared-0", full), ("wl-shared-1", full / 2)] {
        let p = proc_by_comm(&recs, comm);
        let (pages, shared) = mapping_pages(p, "shmem-anon@");
        assert_within(&format!("{comm} pages in the segment"), pages, want, 5.0);
        assert!(shared, "{comm}: the segment is MAP_SHARED");
        assert_within(&format!("{comm} shmem pages"), p["pages"]["shmem"].as_i64().unwrap(), want, 5.0);
    }
    let mapper = proc_by_comm(&recs, "wl-shared-2");
    assert!(mapper["pages"]["shmem"].as_i64().unwrap() <= full / 100, "a mere mapper faults ~0: {mapper}");
}
