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
    #[command(flatten)]
    pub session: SessionArgs<Watch>,
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
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

/// The flags `agent watch` and `agent serve` share (`#[command(flatten)]` in each): their
/// intervals, the smaps budget, the leak verdict's window and thresholds, the kernel side's
/// choices, the output file and the duration. What differs between the two, their defaults and
/// how their help words a flag, is the [`Front`] parameter's.
#[derive(Args, Debug, Clone)]
pub struct SessionArgs<F: Front> {
    #[arg(long, default_value_t = 1.0, value_parser = positive, help = F::HELP.interval)]
    pub interval: f64,
    #[arg(long, default_value = F::SMAPS_INTERVAL, value_parser = positive, help = F::HELP.smaps_interval)]
    pub smaps_interval: f64,
    #[arg(long, value_name = "PERCENT", default_value_t = 1.0, value_parser = percent, help = F::HELP.smaps_budget)]
    pub smaps_budget: f64,
    #[arg(long, default_value = F::LEAK_WINDOW, value_parser = positive, help = F::HELP.leak_window)]
    pub leak_window: f64,
    #[arg(long, value_parser = positive, help = F::HELP.leak_min_rate)]
    pub leak_min_rate: Option<f64>,
    #[arg(long, value_parser = positive, help = F::HELP.leak_min_span)]
    pub leak_min_span: Option<f64>,
    #[arg(long, help = F::HELP.bpf_stats)]
    pub bpf_stats: bool,
    #[arg(long, value_enum, env = "AGENT_FAULT_SOURCE", help = F::HELP.fault_source)]
    pub fault_source: Option<crate::kernel::fault_source::FaultSource>,
    #[arg(long, value_enum, default_value_t, env = "AGENT_SYSCALL_HOOKS", help = F::HELP.syscall_hooks)]
    pub syscall_hooks: crate::kernel::syscall_hooks::SyscallHooks,
    #[arg(short = 'o', long = "output", value_name = "FILE", help = F::HELP.output)]
    pub output: Option<std::path::PathBuf>,
    #[arg(long, value_parser = positive, help = F::HELP.duration)]
    pub duration: Option<f64>,
    #[arg(skip)]
    front: std::marker::PhantomData<F>,
}

impl<F: Front> SessionArgs<F> {
    /// The leak verdict's parameters.
    pub fn params(&self) -> crate::judgement::Params {
        crate::judgement::slow_leak::params(self.leak_window, self.leak_min_rate, self.leak_min_span)
    }
}

/// A command that takes [`SessionArgs`]: the defaults that differ between the commands and its
/// help texts. Those defaults are strings, as clap parses them: `default_value_t` in a generic
/// struct caches one default for every command (keep it for the defaults they share).
pub trait Front: Clone + std::fmt::Debug + Send + Sync + 'static {
    const SMAPS_INTERVAL: &'static str;
    const LEAK_WINDOW: &'static str;
    const HELP: SessionHelp;
}

/// The help of each [`SessionArgs`] flag, as one command words it.
#[derive(Debug)]
pub struct SessionHelp {
    pub interval: &'static str,
    pub smaps_interval: &'static str,
    pub smaps_budget: &'static str,
    pub leak_window: &'static str,
    pub leak_min_rate: &'static str,
    pub leak_min_span: &'static str,
    pub bpf_stats: &'static str,
    pub fault_source: &'static str,
    pub syscall_hooks: &'static str,
    pub output: &'static str,
    pub duration: &'static str,
}

/// `agent watch`'s [`Front`].
#[derive(Clone, Debug)]
pub struct Watch;

impl Front for Watch {
    const SMAPS_INTERVAL: &'static str = "2";
    const LEAK_WINDOW: &'static str = "300";
    const HELP: SessionHelp = SessionHelp {
        interval: "Seconds between fault reports",
        smaps_interval: "Seconds between smaps_rollup readings of each watched process",
        smaps_budget: "smaps reads may take PERCENT of one CPU over any 60 s; spent first on the pids that changed, \
                       that a verdict is weighing, and whose PSS a sibling made stale",
        leak_window: "Longest span of readings the leak verdict looks at, seconds. Beyond 300 s the long-window \
                      verdict judges down-sampled history, for slow leaks (`serve`: 6 h)",
        leak_min_rate: "Slowest sustained growth called a leak, KiB/s [default: 32; 2 with a --leak-window over \
                        300 s]",
        leak_min_span: "Shortest span of sustained growth called a leak, seconds [default: 20; 720 with a \
                        --leak-window over 300 s]",
        bpf_stats: "Measure the agent's own eBPF programs: turn on the kernel's BPF run-time statistics while \
                    watching and report each program's runs and nanoseconds in the summary",
        fault_source: "Where user page faults come from: `tracepoint` (exceptions:page_fault_user, x86 only; sees \
                       copy-on-write) or `perf` (the software page-faults perf event, any architecture; no \
                       copy-on-write counts). Default: the tracepoint where present, else perf",
        syscall_hooks: "`on`: hook the exits of the mapping syscalls (exact mapping names). `off`: hook no syscall \
                        at all (any syscall tracepoint slows every syscall on the host ~1.25x): new mappings from \
                        mmap:vm_unmapped_area and /proc/PID/maps re-reads (see the README's limits)",
        output: "Write the records to FILE instead of stdout (stdout then stays the spawned command's)",
        duration: "Stop after this many seconds (default: when the tree is gone, or at Ctrl-C)",
    };
}

/// `agent serve`'s [`Front`].
#[derive(Clone, Debug)]
pub struct Serve;

impl Front for Serve {
    const SMAPS_INTERVAL: &'static str = "5";
    /// 6 h.
    const LEAK_WINDOW: &'static str = "21600";
    const HELP: SessionHelp = SessionHelp {
        interval: "Seconds between fault intervals (the metrics' freshness)",
        smaps_interval: "Seconds between smaps_rollup readings of each process whose memory moved",
        smaps_budget: "smaps reads may take PERCENT of one CPU over any 60 s, as `agent watch --smaps-budget`",
        leak_window: "Longest span of readings the leak verdict looks at, seconds (6 h). Beyond 300 s the \
                      long-window verdict judges down-sampled history (README: \"Slow leaks: the long window\")",
        leak_min_rate: "Slowest sustained growth called a leak, KiB/s [default: 2 over a long window, else 32]",
        leak_min_span: "Shortest span of sustained growth called a leak, seconds [default: 720 over a long window, \
                        else 20]",
        bpf_stats: "Export agent_ebpf_run_seconds_total{program} (turns on the kernel's BPF statistics)",
        fault_source: "Where user page faults come from, as `agent watch --fault-source`",
        syscall_hooks: "Where mapping changes come from, as `agent watch --syscall-hooks`",
        output: "Also write the records (JSON lines, as `watch --format json`) to FILE",
        duration: "Stop after this many seconds (default: at SIGTERM or Ctrl-C)",
    };
}

fn percent(s: &str) -> Result<f64, String> {
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

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    #[test]
    fn each_command_keeps_its_own_defaults() {
        let w = WatchArgs::parse_from(["--", "true"]).unwrap().session;
        let Cmd::Serve(s) = Cli::try_parse_from(["agent", "serve"]).unwrap().cmd else { panic!("not serve") };
        let s = s.session;
        assert_eq!((w.interval, w.smaps_interval, w.smaps_budget, w.leak_window), (1.0, 2.0, 1.0, 300.0));
        assert_eq!((s.interval, s.smaps_interval, s.smaps_budget, s.leak_window), (1.0, 5.0, 1.0, 21600.0));
        let w = WatchArgs::parse_from(["--leak-window", "600", "-o", "f", "--", "true"]).unwrap().session;
        assert_eq!((w.leak_window, w.output.as_deref()), (600.0, Some(std::path::Path::new("f"))));
    }

    #[test]
    fn each_command_words_its_own_help() {
        let cli = Cli::command();
        cli.clone().debug_assert();
        let help = |cmd: &str, arg: &str| {
            let c = cli.find_subcommand(cmd).unwrap();
            c.get_arguments().find(|a| a.get_id() == arg).unwrap().get_help().unwrap().to_string()
        };
        assert_eq!(help("watch", "leak_window"), Watch::HELP.leak_window);
        assert_eq!(help("serve", "leak_window"), Serve::HELP.leak_window);
        assert_eq!(help("serve", "output"), Serve::HELP.output);
    }
}
