//! `workloads`: the known-answer workloads of the tests and the benchmark's cost floor. Built
//! beside the agent (`cargo build -p workloads`), never part of it.
mod afterfault;
mod backings;
mod cgmember;
mod fillleak;
mod floor;
mod madvsplit;
mod procstorm;
mod scenarios;
mod seed;
mod slowleak;
mod syscalls;
mod threadmaps;
mod workload;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "workloads", about = "Known-answer workloads for the agent's tests and benchmarks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Attach do-nothing programs to the agent's tracepoints and hold them until stdin closes:
    /// the cost floor `cargo xtask bench` compares the agent with.
    Floor {
        /// Print the programs' kernel run statistics (JSON) when done.
        #[arg(long)]
        bpf_stats: bool,
    },
    #[command(flatten)]
    Workload(workload::Workload),
    /// Move into --join cgroups, then fork a child that writes known amounts (anon, an
    /// unmapped tmpfs file, its growth) and may leave (the `--cgroup` tests).
    Cgmember(cgmember::CgMember),
    #[command(flatten)]
    Backings(backings::BackingWorkload),
    /// The seed at this machine's size: mappers over one big shared segment, leakers (private,
    /// shmem, hugetlb) and a churner (the smaps budget's tests and `cargo xtask bench seed-scale`).
    Seed(seed::Seed),
    /// A slow leaker (--kib-s, a page at a time) beside a steady churner: the long-window
    /// verdict's root test.
    Slowleak(slowleak::SlowLeak),
    /// --n short-lived processes one after another, pausing at --marks: the bounded-memory soak.
    Procstorm(procstorm::ProcStorm),
    /// --n getppid() calls in a loop: what a syscall costs a watched process (the bench's
    /// syscall storm).
    Syscalls(syscalls::Syscalls),
    /// Syscalls that drop pages right after faults that are over (a kernel fault, a zero-page
    /// fault): their pages must stay the syscall's (tests/syscall_cause.rs).
    Afterfault(afterfault::AfterFault),
    /// --threads threads of one process each write their own private mapping of --mib, all at
    /// once: per-mapping pages under concurrent faults of one mm (tests/thread_deltas.rs).
    Threadmaps(threadmaps::ThreadMaps),
    /// Leakers that first fill a large MAP_SHARED segment, then leak private anon or hugetlb
    /// pages (tests/leak_mapping.rs: the leak is named after where it goes).
    Fillleak(fillleak::FillLeak),
    /// A 64 MiB region the kernel merged with a 3-page one above it, split again by
    /// MADV_NOHUGEPAGE, then written: each keeps its own name (tests/madvise_split.rs).
    Madvsplit(madvsplit::MadvSplit),
}

fn main() {
    let code = match Cli::parse().cmd {
        Cmd::Floor { bpf_stats } => floor::run(bpf_stats),
        Cmd::Workload(w) => workload::run(w),
        Cmd::Cgmember(a) => cgmember::run(a),
        Cmd::Backings(b) => backings::run(b),
        Cmd::Seed(s) => seed::run(s),
        Cmd::Slowleak(a) => slowleak::run(a),
        Cmd::Procstorm(a) => procstorm::run(a),
        Cmd::Syscalls(a) => syscalls::run(a),
        Cmd::Afterfault(a) => afterfault::run(a),
        Cmd::Threadmaps(a) => threadmaps::run(a),
        Cmd::Fillleak(a) => fillleak::run(a),
        Cmd::Madvsplit(a) => madvsplit::run(a),
    };
    std::process::exit(code);
}
