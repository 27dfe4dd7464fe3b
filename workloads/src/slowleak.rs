//! `workloads slowleak`: the long-window verdict's real scenario. A `slow-leaker` child leaks
//! --kib-s of private anon, a page at a time, evenly; a `steady` child faults 32 MiB once and
//! then churns 4 MiB (mapped, written, unmapped) every half second: many own faults, flat
//! memory. Both run for --duration.
use std::time::{Duration, Instant};

use agent::demo::procs::{fork_child, map, page_size, set_name, touch, wait_all, MIB};
use clap::Args;

#[derive(Args, Debug)]
pub struct SlowLeak {
    /// The leaker's rate, KiB/s.
    #[arg(long, default_value_t = 96.0)]
    kib_s: f64,
    /// Seconds both children run.
    #[arg(long, default_value_t = 180.0)]
    duration: f64,
}

pub fn run(a: SlowLeak) -> i32 {
    set_name("wl-slowleak");
    let total = Duration::from_secs_f64(a.duration);
    let start = Instant::now();
    let page = page_size();
    let leaker = fork_child("slow-leaker", move || {
        let len = ((a.kib_s * 1024.0 * a.duration) as usize).next_multiple_of(page) + page;
        let p = map(len, false);
        let every = Duration::from_secs_f64(page as f64 / (a.kib_s * 1024.0));
        let mut i = 0;
        while start.elapsed() < total && (i + 1) * page <= len {
            touch(p.wrapping_add(i * page), page, Duration::ZERO);
            i += 1;
            if let Some(wait) = (every * i as u32).checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    });
    let steady = fork_child("steady", move || {
        touch(map(32 * MIB, false), 32 * MIB, Duration::ZERO);
        while start.elapsed() < total {
            let n = 4 * MIB;
            let p = map(n, false);
            touch(p, n, Duration::ZERO);
            // SAFETY: unmapping what we mapped.
            unsafe { libc::munmap(p.cast(), n) };
            std::thread::sleep(Duration::from_millis(500));
        }
    });
    wait_all(&[leaker, steady]);
    0
}
