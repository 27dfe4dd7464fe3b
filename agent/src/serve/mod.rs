//! `agent serve`: the long-running front end. The same pipeline as `watch` (targets, kernel,
//! attribution, sampling, judgement), with a metrics sink instead of a record stream, and an
//! HTTP endpoint Prometheus scrapes.
//!
//! ```text
//! pipeline ─records─► ServeSink (state.rs: per pid, per group) ─► metric families (metrics.rs)
//!          ─view at each interval's end─┘                               ▲
//!                                  GET /metrics, /healthz (http.rs) ────┘ encode, never /proc
//! ```
pub mod groups;
pub mod health;
pub mod http;
pub mod metrics;
pub mod state;
pub mod targets;

use std::{
    path::PathBuf,
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant},
};

use self::{groups::GroupBy, health::Health, state::ServeSink, targets::ServeTargets};
use crate::{
    attribution::Ledger,
    cli::{Serve, SessionArgs},
    error::AgentError,
    judgement::{Judge, Params},
    kernel::{
        loader::{self, LoadOptions},
        opened::{self, Opened},
    },
    proc_facts::Procfs,
    records::Record,
    session::{self, Pipeline, Settings, Signals},
    sinks::{self, stack_files::OutFile, Format, Sink, Sinks},
    targets::{
        cgroup::Cgroup,
        cgroup_watch::{self, CgroupWatch},
    },
};

#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// Watch this process and all its descendants (repeatable).
    #[arg(short = 'p', long = "pid", value_name = "PID")]
    pub pids: Vec<i32>,
    /// Watch every process of this name (its comm), now and later, with its descendants
    /// (repeatable).
    #[arg(long = "comm", value_name = "NAME")]
    pub comms: Vec<String>,
    /// Watch every process of the host (but the agent).
    #[arg(long)]
    pub all: bool,
    /// Watch the processes of this cgroup directory and its descendants, existing and future
    /// (as `watch --cgroup`; repeatable). Not with -p, --comm or --all.
    #[arg(long = "cgroup", value_name = "PATH", conflicts_with_all = ["pids", "comms", "all"])]
    pub cgroups: Vec<PathBuf>,
    /// Serve /metrics and /healthz on this address (beyond loopback only when you ask).
    #[arg(long, default_value = "127.0.0.1:9464", value_name = "ADDR:PORT")]
    pub listen: String,
    /// What a series' `group` label is: the process name (comm), its cgroup path (cgroup), or
    /// the watched tree it belongs to (tree: `comm:pid` of the tree's root).
    #[arg(long, default_value = "comm", value_name = "comm|cgroup|tree")]
    pub group_by: String,
    #[command(flatten)]
    pub session: SessionArgs<Serve>,
}

/// Seconds between the /proc scans for processes renamed to a `--comm` name.
const RENAME_SCAN_S: f64 = 2.0;

/// `agent serve` as the command line asks. Everything a user can get wrong is refused before
/// anything is loaded: the grouping, the targets, the listen address, the output file.
pub fn run(args: ServeArgs) -> anyhow::Result<i32> {
    let by = GroupBy::parse(&args.group_by).map_err(AgentError::Usage)?;
    let shortest = Params::default().min_span_s;
    if args.session.leak_window < shortest {
        return Err(AgentError::Usage(format!(
            "--leak-window {} is shorter than the shortest growth the verdict judges ({shortest} s)",
            args.session.leak_window
        ))
        .into());
    }
    let targets = ServeTargets { pids: args.pids.clone(), comms: args.comms.clone(), all: args.all };
    let cgroups = args.cgroups.iter().map(|p| Cgroup::resolve(p)).collect::<Result<Vec<_>, _>>()?;
    if cgroups.is_empty() {
        targets.check()?;
    }
    let listener = http::bind(&args.listen)?;
    let mut extra: Vec<Box<dyn Sink>> = Vec::new();
    if let Some(path) = &args.session.output {
        let f = OutFile::create(path)?;
        extra.push(sinks::stream(std::io::BufWriter::new(f.file), Format::Json, false));
    }

    let start = Instant::now();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let signals = {
        let _ctx = rt.enter();
        Signals::take()?
    };
    let load = LoadOptions {
        cgroup_levels: cgroup_watch::level_mask(&cgroups),
        fault_source: args.session.fault_source,
        syscall_hooks: args.session.syscall_hooks,
        ..LoadOptions::default()
    };
    // The programs' diagnostics are read by a task of the runtime for as long as it runs.
    let Opened { mut loaded, ring, mut bpf, shmem, log: _ebpf_log } = opened::open(&load, &rt)?;
    let mut ledger = Ledger::new(Box::new(Procfs));
    let (pids, roots, cgroup_watch) = if cgroups.is_empty() {
        targets.watch_names(&mut loaded.ebpf)?;
        let (pids, roots) = targets.start(&mut ledger, &mut bpf)?;
        (pids, roots, None)
    } else {
        let mut w = CgroupWatch::take(&mut loaded.ebpf, cgroups.clone())?;
        let pids = w.seed(&mut ledger, &mut bpf)?;
        (pids, Vec::new(), Some(w))
    };

    let (metrics, registry) = metrics::Metrics::register(args.session.bpf_stats);
    let health = Arc::new(Health::new());
    let stale_ms = ((args.session.interval * 3.0).max(3.0) * 1000.0) as u64;
    let shared = Arc::new(http::Shared { registry, health: health.clone(), stale_ms });
    let sink = ServeSink::new(by, roots, metrics, health.clone()).with_interval(args.session.interval);
    // The metrics sink is the "stream": it never fails, so the session never stops on it.
    let mut all: Vec<Box<dyn Sink>> = vec![Box::new(sink)];
    all.extend(extra);
    let mut sinks = Sinks::new(start, all);
    sinks.emit(&Record::Start {
        targets: pids,
        hooks: loaded.hooks,
        missing_hooks: loaded.missing,
        cgroups: cgroup_watch.as_ref().map_or_else(Vec::new, |w| crate::judgement::cgroup::describe(w, true)),
    });
    sinks.flush();
    let stream = sinks.failure();
    let stats = args.session.bpf_stats.then(loader::enable_stats).flatten();
    let mut pipeline = Pipeline::new(session::Stages {
        start,
        kernel: session::Kernel { programs: Some(loaded.ebpf), bpf, stats, perf_faults: loaded.perf_faults },
        ledger,
        stacks: None,
        judge: Judge::new(args.session.params()),
        smaps_interval: Duration::from_secs_f64(args.session.smaps_interval),
        sinks,
        folded: false,
        profile: false,
    });
    pipeline.0.set_smaps_budget(args.session.smaps_budget, shmem);
    if let Some(w) = cgroup_watch {
        pipeline.0.set_cgroups(w, args.session.params());
    }
    // Renames to a watched name (prctl: no event) are found by a scan of /proc every
    // `RENAME_SCAN_S` (execs under one join in the kernel at once).
    let every = (RENAME_SCAN_S / args.session.interval).round().max(1.0) as u64;
    let mut ticks = 0u64;
    let discover: Option<Box<dyn FnMut() -> Vec<u32> + Send>> = (!targets.comms.is_empty()).then(|| {
        Box::new(move || {
            ticks += 1;
            if ticks.is_multiple_of(every) {
                targets.named()
            } else {
                Vec::new()
            }
        }) as Box<dyn FnMut() -> Vec<u32> + Send>
    });
    let settings = Settings {
        interval: Duration::from_secs_f64(args.session.interval),
        duration: args.session.duration.map(Duration::from_secs_f64),
        fail_on_leak: false,
        stream,
        forever: true,
        discover,
    };
    eprintln!("agent: serving http://{}/metrics", args.listen);
    let code = rt.block_on(async {
        let server = http::spawn(listener, shared)?;
        // /healthz fails as soon as a stop begins (the session takes its own signals too).
        let mut stop_signals = Signals::take()?;
        let h = health.clone();
        let flag = tokio::spawn(async move {
            stop_signals.recv().await;
            h.stopping.store(true, Ordering::Release);
        });
        let code = session::run(pipeline, ring, signals, settings, None).await;
        health.stopping.store(true, Ordering::Release);
        flag.abort();
        server.stop().await;
        code
    });
    rt.shutdown_background();
    code
}
