//! `workloads madvsplit`: a flag-changing madvise that splits a VMA the kernel merged
//! (tests/madvise_split.rs). Region A (511 anonymous private pages at a free hint address: under 2 MiB, no THP; enough to
//! rank in the summary's top mappings), then a
//! 64 MiB region B hinted directly below A: the kernel merges them into one VMA (checked in
//! /proc/self/maps). MADV_NOHUGEPAGE on B splits them again (checked), then every page of B and
//! of A is written. Known answer: B's 16384 pages under B's own name (`anon@<B start>`), A's
//! 511 under `anon@<A start>`.
//!
//! Exit codes: 0 done; 3 a hint was not honoured; 4 the kernel did not merge A and B; 5 the
//! madvise did not split them.
use std::time::Duration;

use agent::demo::procs::{page_size, set_name, MIB};

#[derive(clap::Args, Debug)]
pub struct MadvSplit {
    /// Seconds to hold before exiting.
    #[arg(long, default_value_t = 0.3)]
    hold: f64,
}

/// Far below the mmap base and far above a PIE binary's heap: free in a fresh process.
const A_HINT: usize = 0x10_0000_0000;
const B_LEN: usize = 64 * MIB;
const A_PAGES: usize = 511;

fn map_at(hint: usize, len: usize) -> usize {
    let (prot, flags) = (libc::PROT_READ | libc::PROT_WRITE, libc::MAP_ANONYMOUS | libc::MAP_PRIVATE);
    // SAFETY: a fresh anonymous mapping at a hint (no MAP_FIXED: nothing is replaced).
    let p = unsafe { libc::mmap(hint as *mut libc::c_void, len, prot, flags, -1, 0) };
    assert!(p != libc::MAP_FAILED, "mmap {len}: {}", std::io::Error::last_os_error());
    p as usize
}

/// The (start, end) of the /proc/self/maps line that holds `addr`.
fn vma_of(addr: usize) -> Option<(usize, usize)> {
    let maps = std::fs::read_to_string("/proc/self/maps").expect("read /proc/self/maps");
    maps.lines().find_map(|l| {
        let (s, e) = l.split_whitespace().next()?.split_once('-')?;
        let (s, e) = (usize::from_str_radix(s, 16).ok()?, usize::from_str_radix(e, 16).ok()?);
        (s <= addr && addr < e).then_some((s, e))
    })
}

pub fn run(a: MadvSplit) -> i32 {
    set_name("wl-madvsplit");
    let page = page_size();
    let a_len = A_PAGES * page;
    let a_start = map_at(A_HINT, a_len);
    let b_start = map_at(a_start - B_LEN, B_LEN);
    if a_start != A_HINT || b_start != a_start - B_LEN {
        eprintln!("madvsplit: hints not honoured: A at {a_start:#x} (asked {A_HINT:#x}), B at {b_start:#x}");
        return 3;
    }
    let merged = vma_of(a_start);
    if merged != Some((b_start, a_start + a_len)) {
        eprintln!("madvsplit: the kernel did not merge B and A into one VMA: {merged:x?}");
        return 4;
    }
    // SAFETY: B is a mapping of ours.
    let rc = unsafe { libc::madvise(b_start as *mut libc::c_void, B_LEN, libc::MADV_NOHUGEPAGE) };
    assert_eq!(rc, 0, "madvise: {}", std::io::Error::last_os_error());
    let (vb, va) = (vma_of(b_start), vma_of(a_start));
    if vb != Some((b_start, a_start)) || va != Some((a_start, a_start + a_len)) {
        eprintln!("madvsplit: MADV_NOHUGEPAGE did not split the VMA: B {vb:x?}, A {va:x?}");
        return 5;
    }
    eprintln!("madvsplit: A at {a_start:#x}, B at {b_start:#x}");
    // SAFETY: writes inside B and A, both ours and writable.
    unsafe {
        for off in (0..B_LEN).step_by(page) {
            std::ptr::write_volatile((b_start + off) as *mut u8, 1);
        }
        for off in (0..a_len).step_by(page) {
            std::ptr::write_volatile((a_start + off) as *mut u8, 1);
        }
    }
    std::thread::sleep(Duration::from_secs_f64(a.hold));
    0
}
