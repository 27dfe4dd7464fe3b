//! A leak into each kind of shared backing is flagged, and its mapping names the segment:
//! hugetlb memfd (`/memfd:NAME`), SysV shm (`SYSV<key> (shmid N)`), THP shmem (2 MiB pages, as
//! many as the kernel gave: the workload reports them), a MAP_SHARED file on ext4 (its path), a
//! memfd (its name). A memfd filled once and held is not flagged. One run of all the leakers,
//! ~30 s.
mod common;
mod huge_pages;
use common::*;
use huge_pages::{compact_memory, Setting};

#[test]
fn a_leak_into_each_backing_is_flagged_and_named() {
    if !ebpf_available("backings") {
        return;
    }
    // huge-leaker: 1 MiB/s in 2 MiB pages for 30 s (15 pages; its memfd, 20, reserved at mmap).
    let (_huge, got) = Setting::huge_pages(2048, 24);
    assert!(got >= 16, "the kernel reserved {got} of 24 2 MiB huge pages: free memory first");
    let _thp = Setting::shmem_thp("advise");
    // thp-leaker's 2 MiB pages come only if the kernel finds free 2 MiB blocks at each fault:
    // ask for them now; the workload reports what it got (the known answer).
    eprintln!("backings: compact_memory took {:?}", compact_memory());
    let report = std::env::temp_dir().join(format!("agent-backings-thp-{}.txt", std::process::id()));
    let (recs, code) = watch_workload(
        &["--smaps-interval", "1", "--fail-on-leak"],
        &["backings", "--duration", "30", "--kib-s", "1024", "--dir", "/var/tmp", "--report", report.to_str().unwrap()],
    );
    let thp_got = std::fs::read_to_string(&report)
        .unwrap_or_else(|e| panic!("thp-leaker's report {}: {e}", report.display()))
        .trim()
        .to_string();
    let _ = std::fs::remove_file(&report);
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
    // THP shmem: a step that got a 2 MiB page is one fault and 512 pages, one the kernel
    // served in 4 KiB pages (no free 2 MiB block then) 512 faults: the agent's count is the
    // kernel's, step by step, and at least one step must have been a 2 MiB page.
    let thp = proc_by_comm(&recs, "thp-leaker");
    let m = thp["mappings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mapping"].as_str().unwrap().starts_with("shmem-anon@"))
        .unwrap();
    let reported = |k: &str| -> i64 {
        let v = thp_got.split_whitespace().find_map(|kv| kv.strip_prefix(k)?.strip_prefix('='));
        v.and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("no {k}= in thp-leaker's report: {thp_got}"))
    };
    let (steps, huge, small_faults) = (reported("steps"), reported("huge"), reported("small_faults"));
    eprintln!("backings: thp-leaker got {thp_got}");
    assert!(steps >= 14, "thp-leaker made {steps} 2 MiB steps in 30 s, not 15: {thp_got}");
    assert!(
        huge >= 1,
        "the kernel gave thp-leaker no 2 MiB page in its {steps} 2 MiB steps ({thp_got}), even after compaction: \
         memory too fragmented (see /proc/buddyinfo) or transparent_hugepage/shmem_enabled changed under the test; \
         free memory and run it again"
    );
    assert_within(&format!("thp-leaker pages ({thp_got}; {m})"), m["pages"].as_i64().unwrap(), 512 * steps, 1.0);
    assert_within(
        &format!("thp-leaker faults ({thp_got}; {m})"),
        m["faults"].as_i64().unwrap(),
        huge + small_faults,
        1.0,
    );
    // hugetlb: counted as its own kind; the leak's evidence (full smaps of the mapping) holds
    // the growth in hugetlb_kib.
    assert!(proc_by_comm(&recs, "huge-leaker")["pages"]["hugetlb"].as_i64().unwrap() >= 12 * 512);
    let huge = leaks.iter().rfind(|l| l["comm"] == "huge-leaker" && l["state"] == "flagged").unwrap();
    let ev = huge["smaps_mapping"]["hugetlb_kib"].as_f64().unwrap_or_else(|| panic!("{huge}"));
    assert!(ev >= 0.9 * huge["growth_kib"].as_f64().unwrap(), "{huge}");
    assert!(!proc_by_comm(&recs, "steady")["leak"].as_bool().unwrap());
}
