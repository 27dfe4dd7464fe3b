//! hugetlb pages, which never fire `kmem:rss_stat`: each huge page a fault maps is attributed
//! to the pid and the mapping, as the kind `hugetlb`, in base pages (2 MiB = 512), once (a
//! second write to the same page adds nothing); the smaps reading carries them, and the ledger
//! agrees with it.
mod common;
mod huge_pages;
use common::*;
use huge_pages::{HugetlbFs, Setting};

/// `workloads hugetlb` under the agent: the summary entry and mem records of `wl-hugetlb`.
fn run(args: &[&str]) -> (serde_json::Value, Vec<serde_json::Value>) {
    run_with(&[], args)
}

fn run_with(agent_args: &[&str], args: &[&str]) -> (serde_json::Value, Vec<serde_json::Value>) {
    let mut w = vec!["hugetlb"];
    w.extend_from_slice(args);
    let mut a = vec!["--smaps-interval", "1"];
    a.extend_from_slice(agent_args);
    let (recs, code) = watch_workload(&a, &w);
    assert_eq!(code, 0, "{recs:?}");
    let p = proc_by_comm(&recs, "wl-hugetlb").clone();
    let mems = of_type(&recs, "mem").into_iter().filter(|m| m["comm"] == "wl-hugetlb").cloned().collect();
    (p, mems)
}

#[test]
fn hugetlb_pages_are_counted_exactly_in_their_mapping() {
    if !ebpf_available("hugetlb_pages") {
        return;
    }
    let (_guard, got) = Setting::huge_pages(2048, 16);
    assert!(got >= 8, "the kernel reserved {got} of 16 2 MiB huge pages: free memory first");

    // A hugetlb memfd, 8 huge pages each written twice, an ordinary fault after the last.
    let (p, mems) = run(&["--pages", "8", "--tail", "--hold", "2.5"]);
    assert_eq!(p["pages"]["hugetlb"], 8 * 512, "{p}");
    let (pages, shared) = mapping_pages(&p, "/memfd:wl-huge");
    assert_eq!((pages, shared), (8 * 512, true), "{p}");
    // Not in RSS: the fault pages of the other kinds stay small.
    assert!(p["pages"]["shmem"].as_i64().unwrap() < 512, "{p}");
    // smaps carries them (a sole mapper's pages are private), and the ledger agrees.
    let full = mems
        .iter()
        .find(|m| m["hugetlb_kib"] == 16384)
        .unwrap_or_else(|| panic!("no reading with 16 MiB hugetlb: {mems:?}"));
    assert_eq!((&full["private_hugetlb_kib"], &full["shared_hugetlb_kib"]), (&16384.into(), &0.into()), "{full}");
    assert!(mems.iter().any(|m| m["hugetlb_kib"] == 16384 && m["ledger_hugetlb_kib"] == 16384), "{mems:?}");

    // Private anonymous MAP_HUGETLB memory (no fault after the last huge page: the interval
    // audit finds it).
    let (p, _) = run(&["--pages", "5", "--backing", "anon", "--hold", "1.5"]);
    assert_eq!(p["pages"]["hugetlb"], 5 * 512, "{p}");
    // Anonymous memory: named by its start when the ledger saw it mapped, as /proc names it
    // otherwise.
    let m = p["mappings"].as_array().unwrap().iter().find(|m| m["pages"] == 5 * 512).unwrap_or_else(|| panic!("{p}"));
    let name = m["mapping"].as_str().unwrap();
    assert!(name.starts_with("anon@") || name.starts_with("/anon_hugepage"), "{m}");
    assert_eq!(m["shared"], false, "{m}");
}

#[test]
fn pages_mapped_without_a_user_fault_are_counted() {
    if !ebpf_available("hugetlb_populate") {
        return;
    }
    let (_guard, got) = Setting::huge_pages(2048, 8);
    assert!(got >= 4, "the kernel reserved {got} of 8 2 MiB huge pages: free memory first");
    // mmap(MAP_HUGETLB|MAP_POPULATE), as DPDK does: the kernel maps them in the mmap, no user
    // fault follows. The MAP_HUGETLB mmap makes the process audited; its region takes them.
    let (p, _) = run(&["--pages", "4", "--backing", "anon", "--populate", "--hold", "2"]);
    assert_eq!(p["pages"]["hugetlb"], 4 * 512, "{p}");
    let m = p["mappings"].as_array().unwrap().iter().find(|m| m["pages"] == 4 * 512).unwrap_or_else(|| panic!("{p}"));
    assert!(m["mapping"].as_str().unwrap().starts_with("anon@"), "{m}");
    // A hugetlb memfd populated (MAP_SHARED|MAP_POPULATE): only its smaps reading tells it
    // maps hugetlb pages; its full smaps, in which mapping.
    let (p, _) = run(&["--pages", "3", "--populate", "--hold", "3"]);
    assert_eq!(p["pages"]["hugetlb"], 3 * 512, "{p}");
    assert_eq!(mapping_pages(&p, "/memfd:wl-huge"), (3 * 512, true), "{p}");
}

#[test]
fn one_gib_pages_count_as_262144() {
    if !ebpf_available("hugetlb_1g") {
        return;
    }
    let (_guard, got) = Setting::huge_pages(1 << 20, 1);
    if got == 0 {
        // Not an eBPF limit: the kernel found no free, contiguous GiB to reserve now.
        eprintln!("SKIP hugetlb_1g: the kernel could not reserve a 1 GiB huge page (memory too fragmented)");
        return;
    }
    let (p, _) = run(&["--pages", "1", "--size-mib", "1024", "--hold", "1.5"]);
    assert_eq!(p["pages"]["hugetlb"], 262_144, "{p}");
    assert_eq!(mapping_pages(&p, "/memfd:wl-huge"), (262_144, true), "{p}");
}

#[test]
fn sysv_and_hugetlbfs_segments_are_named_and_counted() {
    if !ebpf_available("hugetlb_segments") {
        return;
    }
    let (_guard, got) = Setting::huge_pages(2048, 8);
    assert!(got >= 4, "the kernel reserved {got} of 8 2 MiB huge pages: free memory first");
    // shmget(SHM_HUGETLB): named by its key (0x5a5b....) and id.
    let (p, _) = run(&["--pages", "4", "--backing", "sysv", "--hold", "1.5"]);
    assert_eq!(p["pages"]["hugetlb"], 4 * 512, "{p}");
    let (pages, shared) = mapping_pages(&p, "SYSV5a5b");
    assert_eq!((pages, shared), (4 * 512, true), "{p}");
    // A file on a hugetlbfs mount: its path.
    let fs = HugetlbFs::mount();
    let file = fs.0.join("wl-huge-file");
    let (p, _) = run(&["--pages", "3", "--backing", "file", "--path", file.to_str().unwrap(), "--hold", "1.5"]);
    assert_eq!(p["pages"]["hugetlb"], 3 * 512, "{p}");
    assert_eq!(mapping_pages(&p, file.to_str().unwrap()), (3 * 512, true), "{p}");
}

#[test]
fn the_perf_fault_source_counts_them_too() {
    if !ebpf_available("hugetlb_perf_source") {
        return;
    }
    let (_guard, got) = Setting::huge_pages(2048, 8);
    assert!(got >= 6, "the kernel reserved {got} of 8 2 MiB huge pages: free memory first");
    // No error code there: every fault that changed no rss counter is looked at.
    let (p, _) = run_with(&["--fault-source", "perf"], &["--pages", "6", "--hold", "1.5"]);
    assert_eq!(p["pages"]["hugetlb"], 6 * 512, "{p}");
    assert_eq!(mapping_pages(&p, "/memfd:wl-huge"), (6 * 512, true), "{p}");
}
