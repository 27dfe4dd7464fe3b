//! A leak into each kind of shared backing is flagged, and its mapping names the segment:
//! hugetlb memfd (`/memfd:NAME`), SysV shm (`SYSV<key> (shmid N)`), THP shmem (whole 2 MiB
//! pages), a MAP_SHARED file on ext4 (its path), a memfd (its name). A memfd filled once and
//! held is not flagged. One run of all the leakers, ~30 s.
mod common;
mod huge_pages;
use common::*;
use huge_pages::Setting;

#[test]
fn a_leak_into_each_backing_is_flagged_and_named() {
    if !ebpf_available("backings") {
        return;
    }
    // huge-leaker: 1 MiB/s in 2 MiB pages for 30 s (15 pages; its memfd, 20, reserved at mmap).
    let (_huge, got) = Setting::huge_pages(2048, 24);
    assert!(got >= 16, "the kernel reserved {got} of 24 2 MiB huge pages: free memory first");
    let _thp = Setting::shmem_thp("advise");
    let (recs, code) = watch_workload(
        &["--smaps-interval", "1", "--fail-on-leak"],
        &["backings", "--duration", "30", "--kib-s", "1024", "--dir", "/var/tmp"],
    );
    assert_eq!(code, 3, "--fail-on-leak exits 3 when a leak was flagged");
    let leaks = of_type(&recs, "leak");
    let flagged: std::collections::BTreeSet<&str> =
        leaks.iter().filter(|l| l["state"] == "flagged").map(|l| l["comm"].as_str().unwrap()).collect();
    let want = ["file-leaker", "huge-leaker", "memfd-leaker", "sysv-leaker", "thp-leaker"];
    assert_eq!(flagged, want.into_iter().collect(), "{leaks:?}");
    for (comm, prefix, shared) in [
        ("huge-leaker", "/memfd:wl-leak-huge", true),
        ("sysv-leaker", "SYSV5a5a", true),
        ("thp-leaker", "shmem-anon@", true),
        ("file-leaker", "/var/tmp/agent-backings-", true),
        ("memfd-leaker", "/memfd:wl-leak-memfd", true),
    ] {
        let l = leaks.iter().rfind(|l| l["comm"] == comm).unwrap();
        let mapping = l["mapping"].as_str().unwrap();
        assert!(mapping.starts_with(prefix) && l["shared"] == shared, "{comm}: {l}");
        assert_within(&format!("{comm} rate KiB/s"), l["rate_kib_s"].as_f64().unwrap() as i64, 1024, 40.0);
        // The summary's mapping of that name holds the pages (hugetlb ones in base pages).
        let (pages, _) = mapping_pages(proc_by_comm(&recs, comm), prefix);
        assert!(pages >= 16 * 256, "{comm}: {pages} pages in {mapping}");
    }
    // SysV: the key and the segment's id.
    let sysv = leaks.iter().rfind(|l| l["comm"] == "sysv-leaker").unwrap()["mapping"].as_str().unwrap();
    assert!(sysv.contains(" (shmid "), "{sysv}");
    // THP shmem: whole huge pages, one fault each.
    let thp = proc_by_comm(&recs, "thp-leaker");
    let m = thp["mappings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mapping"].as_str().unwrap().starts_with("shmem-anon@"))
        .unwrap();
    assert!(m["pages"].as_i64().unwrap() >= 512 * m["faults"].as_i64().unwrap(), "not 2 MiB pages: {m}");
    // hugetlb: counted as its own kind; the leak's evidence (full smaps of the mapping) holds
    // the growth in hugetlb_kib.
    assert!(proc_by_comm(&recs, "huge-leaker")["pages"]["hugetlb"].as_i64().unwrap() >= 12 * 512);
    let huge = leaks.iter().rfind(|l| l["comm"] == "huge-leaker" && l["state"] == "flagged").unwrap();
    let ev = huge["smaps_mapping"]["hugetlb_kib"].as_f64().unwrap_or_else(|| panic!("{huge}"));
    assert!(ev >= 0.9 * huge["growth_kib"].as_f64().unwrap(), "{huge}");
    assert!(!proc_by_comm(&recs, "steady")["leak"].as_bool().unwrap());
}
