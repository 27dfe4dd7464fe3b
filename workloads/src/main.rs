//! `workloads`: the known-answer workloads of the tests and the benchmark's cost floor. Built
//! beside the agent (`cargo build -p workloads`), never part of it.
mod cgmember;
mod floor;
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
}

fn main() {
    let code = match Cli::parse().cmd {
        Cmd::Floor { bpf_stats } => floor::run(bpf_stats),
        Cmd::Workload(w) => workload::run(w),
        Cmd::Cgmember(a) => cgmember::run(a),
    };
    std::process::exit(code);
}
