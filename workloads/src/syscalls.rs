//! `workloads syscalls`: --n `getppid()` calls in a loop, the cheapest syscall there is: what a
//! syscall costs a watched process (`cargo xtask bench`'s syscall storm). With --report FILE,
//! writes the loop's wall time and the process's CPU time as JSON (`{"wall_s": S, "cpu_s": S,
//! "calls": N}`): on a busy machine the CPU time is the steadier of the two.
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct Syscalls {
    /// getppid() calls to make.
    #[arg(long, default_value_t = 5_000_000)]
    n: u64,
    /// Write the loop's report (JSON) to this file.
    #[arg(long)]
    report: Option<std::path::PathBuf>,
}

pub fn run(a: Syscalls) -> i32 {
    let t = Instant::now();
    let mut sum = 0i64;
    for _ in 0..a.n {
        // SAFETY: getppid has no preconditions. Summed so the calls are not optimized out.
        sum = sum.wrapping_add(i64::from(unsafe { libc::getppid() }));
    }
    let wall_s = t.elapsed().as_secs_f64();
    let (cpu_s, _) = agent::proc_facts::rusage(libc::RUSAGE_SELF);
    std::hint::black_box(sum);
    if let Some(path) = a.report {
        let json = serde_json::json!({ "wall_s": wall_s, "cpu_s": cpu_s, "calls": a.n });
        if let Err(e) = std::fs::write(&path, format!("{json}\n")) {
            eprintln!("workloads syscalls: writing the report {}: {e}", path.display());
            return 1;
        }
    }
    0
}
