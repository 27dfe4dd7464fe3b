//! `agent watch`: the first front end. It picks the targets (`-p PID` or `-- CMD`) and the sinks
//! (stdout in the chosen format, stack files), loads the kernel side and runs the session.
use std::time::{Duration, Instant};

use crate::{
    attribution::Ledger,
    cli::WatchArgs,
    error::AgentError,
    judgement::{Judge, Params},
    kernel::{
        loader::{self, LoadOptions},
        opened::{self, Opened},
    },
    proc_facts::Procfs,
    records::Record,
    session::{self, Pipeline, Settings, Signals},
    sinks::{
        self,
        stack_files::{OutFile, StackFiles},
        Sink, Sinks,
    },
    stacks::Stacks,
    targets::{
        cgroup::Cgroup,
        cgroup_watch::{self, CgroupWatch},
        Started, Target,
    },
};

type Piped = (
    Pipeline,
    tokio::sync::mpsc::Receiver<crate::sampling::smaps::Swept>,
    tokio::sync::mpsc::UnboundedReceiver<Record>,
);

/// `--cgroup`: the pipeline follows the cgroups' membership and explains their memory.
fn with_cgroups(mut p: Piped, watch: Option<CgroupWatch>, params: Params) -> Piped {
    if let Some(w) = watch {
        p.0.set_cgroups(w, params);
    }
    p
}

/// `agent watch` as the command line asks: records on stdout or `-o FILE`, stack files if asked.
/// Records and a spawned command's output never share a stream: when the records go to a stdout
/// that is not a terminal, the command's stdout is the agent's stderr. If the record stream
/// fails, the summary goes to stderr in the same format.
pub fn run(args: WatchArgs) -> anyhow::Result<i32> {
    use std::io::IsTerminal as _;
    let sinks = sinks_for(&args)?;
    let stderr = std::io::stderr();
    let color = stderr.is_terminal();
    let fallback = Some(sinks::stream(std::io::BufWriter::new(stderr), args.format, color));
    let child_stdout_to_stderr = args.session.output.is_none() && !std::io::stdout().is_terminal();
    run_to(args, LoadOptions::default(), Outputs { sinks, fallback, child_stdout_to_stderr })
}

/// Where a watch writes.
pub struct Outputs {
    /// The record stream first, then the other sinks.
    pub sinks: Vec<Box<dyn Sink>>,
    /// Where the summary goes if the record stream fails.
    pub fallback: Option<Box<dyn Sink>>,
    /// A spawned command writes its stdout to the agent's stderr.
    pub child_stdout_to_stderr: bool,
}

/// The sinks the command line asks for, their files created now: a path that cannot be written
/// fails here, before anything is loaded or spawned.
pub fn sinks_for(args: &WatchArgs) -> Result<Vec<Box<dyn Sink>>, AgentError> {
    let mut out = vec![match &args.session.output {
        Some(path) => {
            let f = OutFile::create(path)?;
            sinks::stream(std::io::BufWriter::new(f.file), args.format, false)
        }
        None => sinks::stdout(args.format),
    }];
    if args.folded.is_some() || args.flamegraph.is_some() {
        let folded = args.folded.as_deref().map(OutFile::create).transpose()?;
        let flamegraph = args.flamegraph.as_deref().map(OutFile::create).transpose()?;
        out.push(Box::new(StackFiles { folded, flamegraph }));
    }
    if let Some(path) = &args.pprof {
        out.push(Box::new(sinks::pprof::Pprof::new(OutFile::create(path)?)));
    }
    Ok(out)
}

/// Options that cannot work together, refused before anything starts.
fn check(args: &WatchArgs) -> Result<(), AgentError> {
    let shortest = Params::default().min_span_s;
    if args.session.leak_window < shortest {
        return Err(AgentError::Usage(format!(
            "--leak-window {} is shorter than the shortest growth the verdict judges ({shortest} s): no leak could be flagged",
            args.session.leak_window
        )));
    }
    Ok(())
}

/// A watch with these load options and sinks: the library's entry point (tests use it with a
/// collecting sink and options that force a condition).
pub fn run_with(args: WatchArgs, load: LoadOptions, sinks: Vec<Box<dyn Sink>>) -> anyhow::Result<i32> {
    run_to(args, load, Outputs { sinks, fallback: None, child_stdout_to_stderr: false })
}

/// A watch with these load options and outputs.
pub fn run_to(mut args: WatchArgs, mut load: LoadOptions, out: Outputs) -> anyhow::Result<i32> {
    check(&args)?;
    let folded = args.folded.is_some() || args.flamegraph.is_some();
    args.stacks |= folded || args.pprof.is_some();
    // `--cgroup PATH`: the cgroups' members instead of a pid tree or a command.
    let cgroups = args.cgroup.iter().map(|p| Cgroup::resolve(p)).collect::<Result<Vec<_>, _>>()?;
    let target = if cgroups.is_empty() { Some(Target::from_args(args.pid, &args.cmd)?) } else { None };
    if let Some(t) = &target {
        t.check()?;
    }
    let start = Instant::now();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    // Signals are ours from here on: a SIGTERM while loading still gets a summary.
    let signals = {
        let _ctx = rt.enter();
        Signals::take()?
    };
    load.stacks = args.stacks;
    load.cgroup_levels = cgroup_watch::level_mask(&cgroups);
    load.cgroup_roots = cgroup_watch::root_mask(&cgroups);
    load.fault_source = args.session.fault_source;
    load.syscall_hooks = args.session.syscall_hooks;
    // The programs' diagnostics are read by a task of the runtime for as long as it runs.
    let Opened { mut loaded, ring, mut bpf, shmem, log: _ebpf_log } = opened::open(&load, &rt)?;
    let stacks = if args.stacks { Some(Stacks::take(&mut loaded.ebpf)?) } else { None };
    let mut ledger = Ledger::new(Box::new(Procfs));
    let (started, cgroup_watch) = match &target {
        Some(t) => (t.start(&mut ledger, &mut bpf, out.child_stdout_to_stderr)?, None),
        None => {
            let mut w = CgroupWatch::take(&mut loaded.ebpf, cgroups.clone())?;
            let pids = w.seed(&mut ledger, &mut bpf)?;
            (Started { pids, child: None }, Some(w))
        }
    };

    let mut sinks = Sinks::new(start, out.sinks);
    if let Some(f) = out.fallback {
        sinks = sinks.with_fallback(f);
    }
    let moves = loaded.hooks.iter().any(|h| h == "cgroup_attach_task");
    sinks.emit(&Record::Start {
        targets: started.pids,
        hooks: loaded.hooks,
        missing_hooks: loaded.missing,
        cgroups: cgroup_watch.as_ref().map_or_else(Vec::new, |w| crate::judgement::cgroup::describe(w, moves)),
    });
    sinks.flush();
    let stream = sinks.failure();
    let params = args.session.params();
    let stats = args.session.bpf_stats.then(loader::enable_stats).flatten();
    let mut pipeline = Pipeline::new(session::Stages {
        start,
        kernel: session::Kernel { programs: Some(loaded.ebpf), bpf, stats, perf_faults: loaded.perf_faults },
        ledger,
        stacks,
        judge: Judge::new(params),
        smaps_interval: Duration::from_secs_f64(args.session.smaps_interval),
        sinks,
        folded,
        profile: args.pprof.is_some(),
    });
    pipeline.0.set_smaps_budget(args.session.smaps_budget, shmem);
    let pipeline = with_cgroups(pipeline, cgroup_watch, params);
    let settings = Settings {
        interval: Duration::from_secs_f64(args.session.interval),
        duration: args.session.duration.map(Duration::from_secs_f64),
        fail_on_leak: args.fail_on_leak,
        stream,
        forever: false,
        discover: None,
    };
    let code = rt.block_on(session::run(pipeline, ring, signals, settings, started.child));
    // Not waiting for the blocking pool: a command that outlived the stop still has its
    // waitpid task there.
    rt.shutdown_background();
    code
}
