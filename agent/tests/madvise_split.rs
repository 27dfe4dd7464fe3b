//! A flag-changing madvise splits a VMA the kernel had merged: the agent learns it (the exit of
//! madvise in `--syscall-hooks on`, the mmap lock's release in `off`), marks the map stale and
//! re-reads /proc/PID/maps before the next fault. Known answer: `wl-madvsplit` maps 511 pages (A),
//! then 64 MiB (B) right below them, merged by the kernel into one VMA; MADV_NOHUGEPAGE on B
//! splits them; then it writes every page of B and of A. B's 16384 pages belong to
//! `anon@<B>`, A's 511 to `anon@<A>` (B + 64 MiB; A is big enough to be in the summary's top 5). Before madvise was hooked, the agent kept one
//! region under A's name and counted B's pages there (the 2f4c640 `fault.rs` flake).
mod common;
use common::*;

#[test]
fn split_regions_keep_their_own_names() {
    if !ebpf_available("madvise_split") {
        return;
    }
    let (recs, code) = watch_workload(&[], &["madvsplit", "--hold", "0.3"]);
    match code {
        0 => {}
        3 => panic!("wl-madvsplit: the kernel did not honour the hint addresses (see its stderr)"),
        4 => panic!("wl-madvsplit: the kernel did not merge B with A, nothing to split (see its stderr)"),
        5 => panic!("wl-madvsplit: MADV_NOHUGEPAGE did not split the VMA (see its stderr)"),
        c => panic!("agent watch -- workloads madvsplit exited {c}"),
    }
    let p = proc_by_comm(&recs, "wl-madvsplit");
    let anon: Vec<(u64, i64)> = p["mappings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| {
            let addr = m["mapping"].as_str()?.strip_prefix("anon@0x")?;
            Some((u64::from_str_radix(addr, 16).ok()?, m["pages"].as_i64()?))
        })
        .collect();
    let shown: Vec<String> = anon.iter().map(|(s, n)| format!("anon@{s:#x}: {n}")).collect();
    eprintln!("madvise_split: anon mappings (pages) {shown:?}");
    let want_b = 64 * MIB_PAGES as i64;
    let &(b, b_pages) = anon
        .iter()
        .find(|&&(_, n)| n > want_b / 2)
        .unwrap_or_else(|| panic!("no anon mapping with B's ~{want_b} pages: {p}"));
    let a = b + 64 * 1024 * 1024;
    let a_pages = anon.iter().find(|&&(s, _)| s == a).map(|&(_, n)| n);
    assert!(
        a_pages.is_some(),
        "B's pages ({b_pages}) are under anon@{b:#x} and there is no anon@{a:#x} (A, 64 MiB above): \
         the agent kept the merged region under one name after the madvise split it: {p}"
    );
    assert_within("B's pages under anon@<B>", b_pages, want_b, 0.1);
    assert_within("A's pages under anon@<A>", a_pages.unwrap(), 511, 0.0);
}
