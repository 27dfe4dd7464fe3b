//! `workloads fillleak`: leakers that first fill a large MAP_SHARED segment in one go, then leak
//! somewhere else at a steady rate (tests/leak_mapping.rs). The leak record must name where the
//! leak goes, not the segment the fill put in the page tables just before. `fill-private`
//! writes all of its own memfd `wl-fill`, then leaks private anon; `fill-reader` reads every
//! page of the parent's memfd `wl-fill-parent` (written before the fork: its pages go into the
//! child's page tables, shared, as the seed's mappers do), then leaks private anon; `fill-huge`
//! writes its own `wl-fill`, then leaks into the hugetlb memfd `wl-fill-huge` (2 MiB pages,
//! reserve them first). The parent holds its written segment: a one-off fill, no leak.
use std::time::{Duration, Instant};

use agent::demo::procs::{fork_child, map, page_size, set_name, touch, wait_all, MIB};
use clap::Args;

use crate::{
    backings::{map_fd, memfd},
    scenarios::paced,
};

#[derive(Args, Debug)]
pub struct FillLeak {
    /// Size of each filled segment, MiB.
    #[arg(long, default_value_t = 256)]
    fill_mib: usize,
    /// Each leaker's rate, KiB/s (125 ms steps; hugetlb in whole 2 MiB pages).
    #[arg(long, default_value_t = 1024)]
    kib_s: usize,
    /// Seconds the children run.
    #[arg(long, default_value_t = 35.0)]
    duration: f64,
    /// Leakers to run among `private`, `reader`, `huge`.
    #[arg(long, value_delimiter = ',', default_value = "private,reader")]
    leakers: Vec<String>,
    /// Wait for a byte on stdin before anything (for `watch -p` / `serve -p`).
    #[arg(long)]
    wait_stdin: bool,
}

/// A fresh shared memfd of `len` bytes, every page written.
fn filled(len: usize) -> *mut u8 {
    let p = map_fd(memfd("wl-fill", 0), len, 0);
    touch(p, len, Duration::ZERO);
    p
}

/// Leak `kib_s` of private anon in 125 ms steps into one mapping until `total` from `start`.
fn leak_private(start: Instant, total: Duration, kib_s: usize) {
    let step = (kib_s * 1024 / 8).next_multiple_of(page_size());
    let len = step * (total.as_secs_f64() * 8.0) as usize + step;
    let p = map(len, false);
    paced(start, total, Duration::from_millis(125), |i| {
        if (i + 1) * step <= len {
            touch(p.wrapping_add(i * step), step, Duration::ZERO);
        }
    });
}

pub fn run(a: FillLeak) -> i32 {
    set_name("wl-fillleak");
    if a.wait_stdin {
        let mut b = [0u8; 1];
        // SAFETY: reading one byte into a local buffer.
        unsafe { libc::read(0, b.as_mut_ptr().cast(), 1) };
    }
    let (len, total, kib_s) = (a.fill_mib * MIB, Duration::from_secs_f64(a.duration), a.kib_s);
    let parent_seg = if a.leakers.iter().any(|l| l == "reader") {
        let p = map_fd(memfd("wl-fill-parent", 0), len, 0);
        touch(p, len, Duration::ZERO);
        p as usize
    } else {
        0
    };
    let start = Instant::now();
    let mut kids = Vec::new();
    for l in &a.leakers {
        kids.push(match l.as_str() {
            "private" => fork_child("fill-private", move || {
                filled(len);
                leak_private(Instant::now(), total.saturating_sub(start.elapsed()), kib_s);
            }),
            "reader" => fork_child("fill-reader", move || {
                let mut sum = 0u64;
                for off in (0..len).step_by(page_size()) {
                    // SAFETY: inside the parent's mapping, inherited.
                    sum += u64::from(unsafe { std::ptr::read_volatile((parent_seg as *const u8).add(off)) });
                }
                assert_eq!(sum, (len / page_size()) as u64, "the parent wrote every page");
                leak_private(Instant::now(), total.saturating_sub(start.elapsed()), kib_s);
            }),
            "huge" => fork_child("fill-huge", move || {
                let huge = 2 * MIB;
                let pages = (kib_s * 1024 * total.as_secs() as usize).div_ceil(huge) + 1;
                // A shared hugetlb mapping reserves all its pages at mmap.
                let p = map_fd(memfd("wl-fill-huge", 2), pages * huge, 0);
                filled(len);
                let every = Duration::from_secs_f64(huge as f64 / (kib_s * 1024) as f64);
                paced(Instant::now(), total.saturating_sub(start.elapsed()), every, |i| {
                    if i < pages {
                        // SAFETY: inside the mapping.
                        unsafe { std::ptr::write_volatile(p.add(i * huge), 1) };
                    }
                });
            }),
            other => {
                eprintln!("wl-fillleak: unknown leaker {other}");
                return 2;
            }
        });
    }
    wait_all(&kids);
    0
}
