//! `sys_exit.rs`: mapping syscalls keep the address map current, so a file mmap'd after start is
//! named by its path; `rss.rs`: rss changes inside a syscall go to the syscall (its number from
//! the task's registers), and a kernel fault's to the faulting address.
mod common;
use common::*;

#[test]
fn file_pages_land_in_the_named_file_mapping() {
    if !ebpf_available("file_pages") {
        return;
    }
    let mib = 16;
    let path = std::env::temp_dir().join(format!("agent-test-file-{}", std::process::id()));
    let path_s = path.to_str().unwrap();
    let (recs, code) = watch_workload(&[], &["file", "--mib", &mib.to_string(), "--path", path_s, "--hold", "0.2"]);
    let _ = std::fs::remove_file(&path);
    assert_eq!(code, 0);
    let p = proc_by_comm(&recs, "wl-file");
    let (pages, shared) = mapping_pages(p, path_s);
    assert!(!shared);
    assert_within("file pages in the mapping", pages, mib * MIB_PAGES as i64, 5.0);
}

#[test]
fn map_populate_pages_go_to_the_syscall_not_to_a_fault() {
    if !ebpf_available("map_populate") {
        return;
    }
    let mib = 32;
    let (recs, _) = watch_workload(&[], &["populate", "--mib", &mib.to_string(), "--hold", "0.2"]);
    let p = proc_by_comm(&recs, "wl-populate");
    let want = mib * MIB_PAGES as i64;
    let faulted_anon = p["pages"]["anon"].as_i64().unwrap();
    assert!(faulted_anon < want / 10, "MAP_POPULATE pages are not fault pages: {faulted_anon}");
    let by_syscall = p["causes"]["syscall"].as_i64().unwrap();
    assert_within("pages added inside the mmap syscall", by_syscall, want, 5.0);
    let exit = p["causes"]["exit"].as_i64().unwrap();
    assert!(exit <= -want, "the exit teardown releases them: {exit}");
}

#[test]
fn read_into_a_fresh_buffer_is_a_kernel_fault_on_that_buffer() {
    if !ebpf_available("kernel_fault") {
        return;
    }
    let mib = 16;
    let (recs, _) = watch_workload(&[], &["read", "--mib", &mib.to_string(), "--hold", "0.2"]);
    let p = proc_by_comm(&recs, "wl-read");
    let (pages, _) = mapping_pages(p, "anon@");
    assert_within("pages read() into the buffer", pages, mib * MIB_PAGES as i64, 5.0);
}
