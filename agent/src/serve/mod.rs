//! `agent serve`: the long-running front end. The same pipeline as `watch` (targets, kernel,
//! attribution, sampling, judgement), with a metrics sink instead of a record stream, and an
//! HTTP endpoint Prometheus scrapes.
//!
//! ```text
//! pipeline ─records─► ServeSink (state.rs: per pid, per group) ─► metric families (metrics.rs)
//!          ─view at each interval's end─┘                               ▲
//!                                  GET /metrics, /healthz (http.rs) ────┘ encode, never /proc
//! ```
pub mod http;
pub mod metrics;
pub mod state;
pub mod targets;

use std::{
    path::PathBuf,
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant},
};

use agent_common::names;
use anyhow::Context as _;
use aya::maps::{MapData, RingBuf};

use self::{
    state::{GroupBy, Health, ServeSink},
    targets::ServeTargets,
};
use crate::{
    attribution::Ledger,
    error::AgentError,
    judgement::{Judge, Params},
    kernel::{
        bpf_maps::BpfMaps,
        ebpf_log,
        loader::{self, LoadOptions},
    },
    proc_facts::Procfs,
    records::Record,
    session::{self, Pipeline, Settings, Signals},
    sinks::{self, stack_files::OutFile, Format, Sink, Sinks},
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
    /// Serve /metrics and /healthz on this address (beyond loopback only when you ask).
    #[arg(long, default_value = "127.0.0.1:9464", value_name = "ADDR:PORT")]
    pub listen: String,
    /// What a series' `group` label is: the process name (comm), its cgroup path (cgroup), or
    /// the watched tree it belongs to (tree: `comm:pid` of the tree's root).
    #[arg(long, default_value = "comm", value_name = "comm|cgroup|tree")]
    pub group_by: String,
    /// Seconds between fault intervals (the metrics' freshness).
    #[arg(long, default_value_t = 1.0, value_parser = positive)]
    pub interval: f64,
    /// Seconds between smaps_rollup readings of each process whose memory moved.
    #[arg(long, default_value_t = 5.0, value_parser = positive)]
    pub smaps_interval: f64,
    /// Longest span of readings the leak verdict looks at, seconds (6 h).
    #[arg(long, default_value_t = 21600.0, value_parser = positive)]
    pub leak_window: f64,
    /// Slowest sustained growth called a leak, KiB/s.
    #[arg(long, default_value_t = 32.0, value_parser = positive)]
    pub leak_min_rate: f64,
    /// Export agent_ebpf_run_seconds_total{program} (turns on the kernel's BPF statistics).
    #[arg(long)]
    pub bpf_stats: bool,
    /// Also write the records (JSON lines, as `watch --format json`) to FILE.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Stop after this many seconds (default: at SIGTERM or Ctrl-C).
    #[arg(long, value_parser = positive)]
    pub duration: Option<f64>,
}

fn positive(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(v),
        _ => Err(format!("{s}: expected a positive number of seconds")),
    }
}

/// The verdict's parameters from the command line.
fn params(args: &ServeArgs) -> Params {
    Params { window_s: args.leak_window, min_rate_kib_s: args.leak_min_rate, ..Params::default() }
}

/// `agent serve` as the command line asks. Everything a user can get wrong is refused before
/// anything is loaded: the grouping, the targets, the listen address, the output file.
pub fn run(args: ServeArgs) -> anyhow::Result<i32> {
    let by = GroupBy::parse(&args.group_by).map_err(AgentError::Usage)?;
    let shortest = Params::default().min_span_s;
    if args.leak_window < shortest {
        return Err(AgentError::Usage(format!(
            "--leak-window {} is shorter than the shortest growth the verdict judges ({shortest} s)",
            args.leak_window
        ))
        .into());
    }
    let targets = ServeTargets { pids: args.pids.clone(), comms: args.comms.clone(), all: args.all };
    targets.check()?;
    let listener = http::bind(&args.listen)?;
    let mut extra: Vec<Box<dyn Sink>> = Vec::new();
    if let Some(path) = &args.output {
        let f = OutFile::create(path)?;
        extra.push(sinks::stream(std::io::BufWriter::new(f.file), Format::Json, false));
    }

    let start = Instant::now();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let signals = {
        let _ctx = rt.enter();
        Signals::take()?
    };
    let mut loaded = loader::load(&LoadOptions::default())?;
    let _ebpf_log = {
        let _ctx = rt.enter();
        ebpf_log::forward(&mut loaded.ebpf)
    };
    let ring: RingBuf<MapData> = RingBuf::try_from(loaded.ebpf.take_map(names::EVENTS).context("EVENTS map missing")?)?;
    let mut bpf = BpfMaps::take(&mut loaded.ebpf)?;
    let mut ledger = Ledger::new(Box::new(Procfs));
    let (pids, roots) = targets.start(&mut ledger, &mut bpf)?;

    let (metrics, registry) = metrics::Metrics::register(args.bpf_stats);
    let health = Arc::new(Health::new());
    let stale_ms = ((args.interval * 3.0).max(3.0) * 1000.0) as u64;
    let shared = Arc::new(http::Shared { registry, health: health.clone(), stale_ms });
    let sink = ServeSink::new(by, roots, metrics, health.clone());
    // The metrics sink is the "stream": it never fails, so the session never stops on it.
    let mut all: Vec<Box<dyn Sink>> = vec![Box::new(sink)];
    all.extend(extra);
    let mut sinks = Sinks::new(start, all);
    sinks.emit(&Record::Start {
        targets: pids,
        hooks: loaded.hooks,
        missing_hooks: loaded.missing,
        cgroups: Vec::new(),
    });
    sinks.flush();
    let stream = sinks.failure();
    let stats = args.bpf_stats.then(loader::enable_stats).flatten();
    let pipeline = Pipeline::new(session::Stages {
        start,
        kernel: session::Kernel { programs: Some(loaded.ebpf), bpf, stats, perf_faults: loaded.perf_faults },
        ledger,
        stacks: None,
        judge: Judge::new(params(&args)),
        smaps_interval: Duration::from_secs_f64(args.smaps_interval),
        sinks,
        folded: false,
        profile: false,
    });
    let discover: Option<Box<dyn FnMut() -> Vec<u32> + Send>> =
        (!targets.comms.is_empty()).then(|| Box::new(move || targets.named()) as Box<dyn FnMut() -> Vec<u32> + Send>);
    let settings = Settings {
        interval: Duration::from_secs_f64(args.interval),
        duration: args.duration.map(Duration::from_secs_f64),
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
