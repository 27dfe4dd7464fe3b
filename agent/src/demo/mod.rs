//! `agent demo`: the seed's scenario in miniature. A parent maps a shared segment and forks
//! children: one only maps it, one writes half, one writes all, one writes a private region,
//! and one leaks private memory at a steady rate. Run it under `agent watch -- agent demo`.
use std::time::{Duration, Instant};

pub mod procs;

use self::procs::{fork_child, map, set_name, touch, wait_all, MIB};

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// How long the demo runs, in seconds.
    #[arg(long, default_value_t = 30.0)]
    pub duration: f64,
    /// Size of the shared segment in MiB.
    #[arg(long, default_value_t = 256)]
    pub segment_mib: usize,
    /// Leak rate of the leaker, in MiB/s.
    #[arg(long, default_value_t = 2.0)]
    pub leak_mib_s: f64,
}

pub fn run(a: DemoArgs) -> i32 {
    set_name("demo");
    let total = Duration::from_secs_f64(a.duration);
    let len = a.segment_mib * MIB;
    let seg = map(len, true) as usize;
    let start = Instant::now();
    let rest = move || total.saturating_sub(start.elapsed());
    // Writers spread their work over the first third so the stream shows it happening.
    let spread = total / 3;
    let kids = vec![
        fork_child("mapper", move || std::thread::sleep(rest())),
        fork_child("half-writer", move || {
            touch(seg as *mut u8, len / 2, spread);
            std::thread::sleep(rest());
        }),
        fork_child("full-writer", move || {
            touch(seg as *mut u8, len, spread);
            std::thread::sleep(rest());
        }),
        fork_child("private", move || {
            let n = 64 * MIB;
            touch(map(n, false), n, spread);
            std::thread::sleep(rest());
        }),
        fork_child("leaker", move || {
            // 256 KiB chunks, never freed, at the configured rate.
            let chunk = 256 * 1024;
            let every = Duration::from_secs_f64(chunk as f64 / (a.leak_mib_s * MIB as f64));
            while !rest().is_zero() {
                let p = map(chunk, false);
                touch(p, chunk, Duration::ZERO);
                std::thread::sleep(every.min(rest()));
            }
        }),
    ];
    wait_all(&kids);
    0
}
