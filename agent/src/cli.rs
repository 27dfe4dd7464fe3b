//! Command line.
use clap::{Args, Parser, Subcommand};

use crate::{
    demo::DemoArgs,
    sinks::Format,
    snapshot::{DiffArgs, SnapshotArgs},
};

#[derive(Parser, Debug)]
#[command(
    name = "agent",
    version,
    about = "Which process is growing, in which mapping, from page faults (eBPF) and smaps PSS/USS"
)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Watch a process tree: `agent watch -p PID` or `agent watch -- CMD ARGS`.
    Watch(WatchArgs),
    /// PSS, USS, RSS, swap and hugetlb of every process now, from smaps (like smem; no eBPF,
    /// no root needed for your own processes).
    Snapshot(SnapshotArgs),
    /// What grew between two saved snapshots (`agent snapshot --save FILE`), by process and by
    /// mapping.
    Diff(DiffArgs),
    /// The built-in demo workload (run it under `agent watch -- agent demo`).
    Demo(DemoArgs),
    /// The unprivileged ELF symbolizer `--stacks` starts (internal: it reads its socket at --fd).
    #[command(hide = true)]
    Symbolizer {
        #[arg(long)]
        fd: i32,
    },
    /// Malformed ELF files through the symbolizer helper (`cargo xtask fuzz`).
    #[command(hide = true)]
    FuzzSymbolizer(crate::stacks::fuzz::FuzzArgs),
    /// Run as a daemon: watch `-p PID` trees, `--comm NAME` or `--all`, and serve Prometheus
    /// metrics (memory and faults by group, leak verdicts) on `--listen`.
    Serve(crate::serve::ServeArgs),
    /// Write shell completions and man pages (what `cargo xtask dist` ships).
    #[command(hide = true)]
    Dist(crate::dist::DistArgs),
}

#[derive(Args, Debug)]
pub struct WatchArgs {
    /// Watch this process and all its descendants, existing and future.
    #[arg(short = 'p', long = "pid", conflicts_with = "cmd")]
    pub pid: Option<i32>,
    /// Watch the processes of this cgroup directory and of its descendants, existing and
    /// future, and explain its memory: v2 (e.g. /sys/fs/cgroup/unified/NAME) or a v1
    /// controller's (e.g. /sys/fs/cgroup/memory/NAME). Repeatable.
    #[arg(long = "cgroup", value_name = "PATH", conflicts_with_all = ["pid", "cmd"])]
    pub cgroup: Vec<std::path::PathBuf>,
    /// Seconds between fault reports.
    #[arg(long, default_value_t = 1.0, value_parser = positive)]
    pub interval: f64,
    /// Seconds between smaps_rollup readings of each watched process.
    #[arg(long, default_value_t = 2.0, value_parser = positive)]
    pub smaps_interval: f64,
    /// smaps reads may take PERCENT of one CPU over any 60 s; spent first on the pids that
    /// changed, that a verdict is weighing, and whose PSS a sibling made stale.
    #[arg(long, value_name = "PERCENT", default_value_t = 1.0, value_parser = percent)]
    pub smaps_budget: f64,
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
    /// Write the records to FILE instead of stdout (stdout then stays the spawned command's).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<std::path::PathBuf>,
    /// Stop after this many seconds (default: when the tree is gone, or at Ctrl-C).
    #[arg(long, value_parser = positive)]
    pub duration: Option<f64>,
    /// Longest span of readings the leak verdict looks at, seconds. Beyond 300 s the
    /// long-window verdict judges down-sampled history, for slow leaks (`serve`: 6 h).
    #[arg(long, default_value_t = 300.0, value_parser = positive)]
    pub leak_window: f64,
    /// Slowest sustained growth called a leak, KiB/s [default: 32; 2 with a --leak-window
    /// over 300 s].
    #[arg(long, value_parser = positive)]
    pub leak_min_rate: Option<f64>,
    /// Shortest span of sustained growth called a leak, seconds [default: 20; 720 with a
    /// --leak-window over 300 s].
    #[arg(long, value_parser = positive)]
    pub leak_min_span: Option<f64>,
    /// Exit 3 if a leak verdict still stands at the end (withdrawn verdicts do not count; a
    /// process that exited while flagged does), for CI pipelines that run a service under the agent.
    #[arg(long)]
    pub fail_on_leak: bool,
    /// Record the user stack of every fault that adds pages, and show where memory came from.
    #[arg(long)]
    pub stacks: bool,
    /// Write folded stacks (`comm;frame;frame pages`) of faulted pages to FILE (implies --stacks).
    #[arg(long, value_name = "FILE")]
    pub folded: Option<std::path::PathBuf>,
    /// Write an SVG flamegraph of faulted pages to FILE (implies --stacks).
    #[arg(long, value_name = "FILE.svg")]
    pub flamegraph: Option<std::path::PathBuf>,
    /// Write a gzipped pprof profile of faulted pages by (pid, user stack) to FILE (implies
    /// --stacks): `go tool pprof`, Pyroscope and Parca read it.
    #[arg(long, value_name = "FILE.pb.gz")]
    pub pprof: Option<std::path::PathBuf>,
    /// Measure the agent's own eBPF programs: turn on the kernel's BPF run-time statistics
    /// while watching and report each program's runs and nanoseconds in the summary.
    #[arg(long)]
    pub bpf_stats: bool,
    /// Where user page faults come from: `tracepoint` (exceptions:page_fault_user, x86 only;
    /// sees copy-on-write) or `perf` (the software page-faults perf event, any architecture;
    /// no copy-on-write counts). Default: the tracepoint where present, else perf.
    #[arg(long, value_enum, env = "AGENT_FAULT_SOURCE")]
    pub fault_source: Option<crate::kernel::fault_source::FaultSource>,
    /// `on`: hook the exits of the mapping syscalls (exact mapping names). `off`: hook no
    /// syscall at all (any syscall tracepoint slows every syscall on the host ~1.25x): new
    /// mappings from mmap:vm_unmapped_area and /proc/PID/maps re-reads (see the README's limits).
    #[arg(long, value_enum, default_value_t, env = "AGENT_SYSCALL_HOOKS")]
    pub syscall_hooks: crate::kernel::syscall_hooks::SyscallHooks,
    /// The command to spawn and watch (after `--`).
    #[arg(last = true, value_name = "CMD")]
    pub cmd: Vec<String>,
}

impl WatchArgs {
    /// The arguments of `agent watch ARGS...` (what the library's callers and tests build).
    pub fn parse_from<I: IntoIterator<Item = S>, S: Into<std::ffi::OsString> + Clone>(
        args: I,
    ) -> Result<WatchArgs, clap::Error> {
        #[derive(Parser)]
        struct One {
            #[command(flatten)]
            w: WatchArgs,
        }
        One::try_parse_from(std::iter::once(std::ffi::OsString::from("watch")).chain(args.into_iter().map(Into::into)))
            .map(|o| o.w)
    }
}

pub(crate) fn percent(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 100.0 => Ok(v),
        _ => Err(format!("{s}: expected a percentage of one CPU, above 0 and at most 100")),
    }
}

fn positive(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(v),
        _ => Err(format!("{s}: expected a positive number of seconds")),
    }
}
