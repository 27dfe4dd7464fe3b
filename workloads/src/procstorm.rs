//! `workloads procstorm`: --n short-lived processes, one after another (each named `wl-short`,
//! writes one page and exits), for the bounded-memory soak (`cargo xtask soak serve`). At each
//! of --marks processes it prints `procstorm: N` on stderr and holds still for --pause-s, so
//! that the agent's memory can be read while nothing moves.
use std::{io::Write as _, time::Duration};

use agent::demo::procs::{fork_child, map, page_size, set_name, touch, wait_all};
use clap::Args;

#[derive(Args, Debug)]
pub struct ProcStorm {
    #[arg(long, default_value_t = 200_000)]
    n: usize,
    #[arg(long, value_delimiter = ',', default_value = "10000,100000,200000")]
    marks: Vec<usize>,
    #[arg(long, default_value_t = 5.0)]
    pause_s: f64,
}

pub fn run(a: ProcStorm) -> i32 {
    set_name("wl-procstorm");
    for i in 1..=a.n {
        let kid = fork_child("wl-short", || touch(map(page_size(), false), page_size(), Duration::ZERO));
        wait_all(&[kid]);
        if a.marks.contains(&i) {
            let _ = writeln!(std::io::stderr(), "procstorm: {i}");
            std::thread::sleep(Duration::from_secs_f64(a.pause_s));
        }
    }
    0
}
