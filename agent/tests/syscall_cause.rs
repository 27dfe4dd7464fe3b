//! `rss.rs` takes the syscall an rss change happens in from the task's saved registers, not from
//! a syscall hook: a munmap right after a kernel fault (`read()` into a fresh page) or after a
//! user fault that changed no counter (a zero-page read) is the syscall's, never the fault's; so
//! are the pages a later call of the kernel fault's syscall pins without an exception
//! (`process_vm_writev` into a fresh region after one whose copy took a kernel fault).
mod common;
use common::*;

#[test]
fn munmap_after_a_finished_fault_is_the_syscalls() {
    if !ebpf_available("syscall_cause") {
        return;
    }
    let mib = 16;
    let (recs, code) = watch_workload(&[], &["afterfault", "--mib", &mib.to_string(), "--hold", "0.3"]);
    assert_eq!(code, 0);
    let p = proc_by_comm(&recs, "wl-afterfault");
    let want = 2 * mib * MIB_PAGES as i64;
    // Both regions were filled inside mmap and emptied inside munmap: the syscalls net to zero.
    // Charged to the faults instead, they would show +{want} here and -{want}/2 per mapping.
    // The pinned region (another {mib} MiB) too: charged to the kernel fault of the call before,
    // it would show -{want}/2 here and +{want}/2 anon fault pages.
    let syscall = p["causes"]["syscall"].as_i64().unwrap();
    assert!(syscall.abs() <= 32, "the munmaps' pages went elsewhere than the syscall: syscall {syscall}: {p}");
    for m in p["mappings"].as_array().unwrap() {
        let pages = m["pages"].as_i64().unwrap();
        assert!(pages >= -8, "a mapping lost pages to a fault that was over: {m} in {p}");
    }
    // The populated pages went to the syscall, not to faults.
    assert!(p["pages"]["anon"].as_i64().unwrap() < want / 10, "populate pages counted as faults: {p}");
}
