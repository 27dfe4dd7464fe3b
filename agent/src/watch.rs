//! `agent watch`: load and attach, pick the targets, then run the pipeline
//! ring reader -> decode -> ledger (attribution) -> output, with the smaps sampler beside it.
use std::{
    collections::{HashMap, VecDeque},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use agent_common::{counter, names};
use anyhow::Context as _;
use aya::maps::{MapData, RingBuf};
use bytes::Bytes;
use tokio::{
    signal::unix::{signal, Signal, SignalKind},
    sync::mpsc,
};

use crate::{
    cli::WatchArgs,
    decode::{records, Event},
    error::AgentError,
    kmaps::KernelMaps,
    ledger::Ledger,
    loader,
    maps::MappingId,
    output::Output,
    procinfo,
    reconcile::Reconciler,
    record::{AgentCost, MemStat, ProcSummary, Record},
    ring, smaps, spawn,
    stacks::{self, Stacks},
    verdict::Params,
};

/// Dead processes kept in the ledger (with their maps, for stacks) before they are reduced to
/// their summary entry; and summary entries kept in all.
const MAX_DEAD: usize = 1024;
const MAX_RETIRED: usize = 100_000;
/// Every this many sweeps, all pids are re-read; in between only those whose ledger moved.
const FULL_SWEEP_EVERY: u64 = 5;

/// smaps readings of one chunk, taken from `from` to `to` (ns since the watch start).
struct Chunk {
    sweep: u64,
    from: u64,
    to: u64,
    samples: Vec<(u32, MemStat)>,
}

/// How long after a read the ledger's values still count as "during" it: a record submitted
/// during the read reaches a poll that began at most two polls later; and munmap takes a
/// region out of what smaps sees before it zaps the pages (the counters, and so the ledger,
/// follow the zap: ~0.1 s per GiB here), so smaps can be that far ahead of the counters.
const READ_SLACK_NS: u64 = 300_000_000;

/// What the pipeline needs once the targets are in the watched set.
struct Session {
    args: WatchArgs,
    start: Instant,
    kmaps: KernelMaps,
    ledger: Ledger,
    reconciler: Reconciler,
    /// With --stacks: the stack resolver.
    stacks: Option<Stacks>,
    /// The loaded programs; dropping them detaches every one.
    ebpf: Option<aya::Ebpf>,
    out: Output,
    /// The spawned command, whose exit status becomes ours.
    child: Option<u32>,
    /// pid -> tick at which its exit was seen, until its kernel state is forgotten.
    exits: HashMap<u32, u64>,
    /// Leak records come back here once the full smaps of their pid is read on the blocking
    /// pool (each read holds a clone; dropping this one lets the channel close when they end).
    evidence: Option<mpsc::UnboundedSender<Record>>,
    /// The start of the last ring poll whose batch the ledger has processed (ns since start).
    processed_ns: u64,
    /// With --bpf-stats: the kernel counts our programs' runs while this is open; their
    /// figures, taken before the programs are detached.
    bpf_stats: Option<std::os::fd::OwnedFd>,
    programs: Vec<crate::record::ProgStat>,
    /// The last interval closed.
    tick: u64,
    /// Dead processes still in the ledger, oldest exit first.
    dead: std::collections::VecDeque<u32>,
    /// Summaries of processes taken out of the ledger (pid reused, or too many dead kept).
    retired: Vec<ProcSummary>,
    retired_dropped: u64,
    lost_seen: u64,
    decode_errors: u64,
    /// Records read from the ring (decoded or not).
    received: u64,
}

pub fn run(mut args: WatchArgs) -> anyhow::Result<i32> {
    args.stacks |= args.folded.is_some() || args.flamegraph.is_some();
    if args.pid.is_none() && args.cmd.is_empty() {
        anyhow::bail!("nothing to watch: give `-p PID` or `-- CMD ARGS`");
    }
    if let Some(pid) = args.pid {
        if !procinfo::exists(pid) {
            return Err(AgentError::NoSuchProcess(pid).into());
        }
    } else {
        // Fail like a shell before loading anything.
        spawn::resolve(&args.cmd[0])?;
    }
    let start = Instant::now();
    // Signals are ours from here on: a SIGTERM while loading still gets a summary.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let signals = {
        let _ctx = rt.enter();
        (signal(SignalKind::interrupt())?, signal(SignalKind::terminate())?)
    };
    let mut loaded = loader::load(false, args.stacks)?;
    let ring: RingBuf<MapData> = RingBuf::try_from(loaded.ebpf.take_map(names::EVENTS).context("EVENTS map missing")?)?;
    let mut kmaps = KernelMaps::take(&mut loaded.ebpf)?;
    let stacks = if args.stacks { Some(Stacks::take(&mut loaded.ebpf)?) } else { None };
    let mut ledger = Ledger::new();

    let (targets, child) = match args.pid {
        Some(root) => {
            let mut targets = Vec::new();
            // Twice: a child forked between the scan and the map update is caught the second time
            // (after it, the kernel follows forks itself).
            for _ in 0..2 {
                for pid in procinfo::tree(root as u32) {
                    if !targets.contains(&pid) && ledger.add_existing(pid).is_some() {
                        kmaps.watch(pid)?;
                        targets.push(pid);
                    }
                }
            }
            if targets.is_empty() {
                return Err(AgentError::NoSuchProcess(root).into());
            }
            (targets, None)
        }
        None => {
            let gated = spawn::spawn_gated(&args.cmd)?;
            let pid = gated.pid;
            kmaps.watch(pid)?;
            ledger.add_existing(pid);
            gated.release(&args.cmd[0])?;
            (vec![pid], Some(pid))
        }
    };

    let mut out = Output::new(args.format, start);
    out.emit(Record::Start { targets, hooks: loaded.hooks, missing_hooks: loaded.missing }, None);
    out.flush();

    let params = Params { window_s: args.leak_window, min_rate_kib_s: args.leak_min_rate, ..Params::default() };
    let bpf_stats = args.bpf_stats.then(loader::enable_stats).flatten();
    let session = Session {
        args,
        start,
        kmaps,
        ledger,
        reconciler: Reconciler::new(params),
        stacks,
        ebpf: Some(loaded.ebpf),
        out,
        child,
        exits: HashMap::new(),
        evidence: None,
        processed_ns: 0,
        bpf_stats,
        programs: Vec::new(),
        tick: 0,
        dead: Default::default(),
        retired: Vec::new(),
        retired_dropped: 0,
        lost_seen: 0,
        decode_errors: 0,
        received: 0,
    };
    rt.block_on(session.pipeline(ring, signals))
}

impl Session {
    async fn pipeline(mut self, ring: RingBuf<MapData>, signals: (Signal, Signal)) -> anyhow::Result<i32> {
        let (tx, mut rx) = mpsc::channel::<ring::Batch>(1024);
        let shared =
            Arc::new(ring::Shared { stop: AtomicBool::new(false), polled_ns: AtomicU64::new(0), epoch: self.start });
        let reader = ring::spawn(ring, tx, shared.clone());
        let mut child_exit = self.child.map(|pid| tokio::task::spawn_blocking(move || spawn::wait_exit_code(pid)));
        let mut exit_code = None;

        let mut tick = tokio::time::interval(Duration::from_secs_f64(self.args.interval));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        let mut smaps_tick = tokio::time::interval(Duration::from_secs_f64(self.args.smaps_interval));
        smaps_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (mem_tx, mut mem_rx) = mpsc::channel(8);
        let (evidence_tx, mut evidence_rx) = mpsc::unbounded_channel();
        self.evidence = Some(evidence_tx);
        // smaps readings wait here until the ring has been read past the window they were
        // taken in; a timer checks.
        let mut pending = VecDeque::new();
        let mut settle = tokio::time::interval(ring::POLL);
        settle.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sweeping = false;
        let mut sweeps = 0u64;
        let (mut sigint, mut sigterm) = signals;
        let mut ticks = 0u64;
        let mut last_tick = Instant::now();
        let deadline = self.args.duration.map(|d| self.start + Duration::from_secs_f64(d));

        loop {
            tokio::select! {
                Some((at, batch)) = rx.recv() => self.on_batch(at, batch),
                _ = tick.tick() => {
                    ticks += 1;
                    let dt = last_tick.elapsed().as_secs_f64();
                    last_tick = Instant::now();
                    self.close_interval(ticks, dt);
                    if self.ledger.live_pids().is_empty() || deadline.is_some_and(|d| Instant::now() >= d) {
                        break;
                    }
                }
                _ = smaps_tick.tick(), if !sweeping => {
                    sweeping = true;
                    sweeps += 1;
                    let t = self.start.elapsed().as_secs_f64();
                    let full = sweeps % FULL_SWEEP_EVERY == 1;
                    let mut read = Vec::new();
                    for pid in self.ledger.live_pids() {
                        let p = self.ledger.procs.get_mut(&pid).expect("live pid");
                        if full || p.dirty || p.mem.is_none() {
                            p.dirty = false;
                            read.push(pid);
                        } else if let Some(r) = self.reconciler.carry_forward(&self.ledger, pid, t) {
                            self.emit_verdict(r);
                        }
                    }
                    let tx = mem_tx.clone();
                    let spread = Duration::from_secs_f64(self.args.smaps_interval / 2.0);
                    tokio::spawn(smaps::sweep(read, spread, tx));
                }
                Some(swept) = mem_rx.recv() => match swept {
                    smaps::Swept::Chunk(from, to, samples) => {
                        let ns = |i: Instant| i.saturating_duration_since(self.start).as_nanos() as u64;
                        pending.push_back(Chunk { sweep: sweeps, from: ns(from), to: ns(to), samples });
                    }
                    smaps::Swept::Done => sweeping = false,
                },
                Some(r) = evidence_rx.recv() => self.publish_verdict(r),
                _ = settle.tick(), if !pending.is_empty() => {
                    // Every record submitted before `done` has been fed to the ledger: the start
                    // of the last poll we processed, or of the reader's last poll when nothing
                    // is queued after it (read before looking at the queue: it is stored after
                    // the poll's batch is sent).
                    let polled = shared.polled_ns.load(Ordering::Acquire);
                    let done = if rx.is_empty() { polled.max(self.processed_ns) } else { self.processed_ns };
                    self.settle(&mut pending, done);
                }
                Some(code) = async { match child_exit.as_mut() { Some(h) => h.await.ok(), None => None } }, if exit_code.is_none() => {
                    exit_code = Some(code);
                }
                _ = sigint.recv() => { exit_code = Some(0); break; }
                _ = sigterm.recv() => { exit_code = Some(0); break; }
            }
        }

        // A second Ctrl-C or SIGTERM while we finish: leave at once (the programs go with our
        // file descriptors), rather than swallow it.
        tokio::spawn(async move {
            tokio::select! {
                _ = sigint.recv() => {}
                _ = sigterm.recv() => {}
            }
            eprintln!("agent: signalled again while stopping: exiting now, without the summary");
            std::process::exit(130);
        });
        // The exit teardown of the last processes is still on its way: give it one poll. Then
        // detach every program (the maps we hold stay), so that nothing is submitted after the
        // final drain and the summary's counts add up, and drain what is left.
        tokio::time::sleep(ring::POLL * 3).await;
        if let (Some(_), Some(ebpf)) = (&self.bpf_stats, &self.ebpf) {
            self.programs = loader::program_stats(ebpf);
        }
        // Detaching takes a while per program (RCU), and the hooks still fire meanwhile: keep
        // feeding the ledger so the records do not pile up in memory.
        let ebpf = self.ebpf.take();
        let mut detach = tokio::task::spawn_blocking(move || drop(ebpf));
        loop {
            tokio::select! {
                Some((at, batch)) = rx.recv() => self.on_batch(at, batch),
                _ = &mut detach => break,
            }
        }
        shared.stop.store(true, Ordering::Release);
        // Drain until the reader has made its last poll and hung up: joining it first would
        // deadlock when it is blocked on a full channel.
        while let Some((at, batch)) = rx.recv().await {
            self.on_batch(at, batch);
        }
        let _ = tokio::task::spawn_blocking(move || reader.join()).await;
        self.settle(&mut pending, u64::MAX);
        // The last verdicts' evidence: the channel closes when the reads in flight are done.
        self.evidence = None;
        while let Ok(Some(r)) = tokio::time::timeout(Duration::from_secs(5), evidence_rx.recv()).await {
            self.publish_verdict(r);
        }
        self.close_interval(ticks + 1, last_tick.elapsed().as_secs_f64());
        if self.decode_errors > 0 {
            log::warn!("{} ring records could not be decoded and were dropped", self.decode_errors);
        }
        if self.ledger.unseeded_dropped > 0 {
            log::info!("{} first counter changes had no seed and were not attributed", self.ledger.unseeded_dropped);
        }
        let mut procs = self.ledger.summary();
        if self.retired_dropped > 0 {
            log::warn!(
                "{} exited processes were left out of the summary (more than {MAX_RETIRED})",
                self.retired_dropped
            );
        }
        for p in &mut procs {
            if let Some(t) = self.reconciler.flagged(p.pid) {
                p.leak = true;
                p.leak_rate_kib_s = Some((t.rate_kib_s * 100.0).round() / 100.0);
            }
        }
        let mut stack_summary = None;
        if let Some(st) = self.stacks.as_mut() {
            st.fill_summary(&mut procs, &self.ledger, 5);
            stack_summary = Some(st.summary(self.kmaps.counters()[counter::STACK_ERRORS as usize]));
            write_stack_files(st, &self.ledger, &self.args);
        }
        let summary = Record::Summary {
            duration_s: (self.start.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
            lost_events: self.lost_seen,
            events_received: self.received,
            events_submitted: self.kmaps.counters()[counter::SUBMITTED as usize],
            agent: AgentCost {
                programs: std::mem::take(&mut self.programs),
                ..own_cost(self.start.elapsed().as_secs_f64())
            },
            stacks: stack_summary,
            procs: {
                procs.append(&mut self.retired);
                procs
            },
        };
        self.out.emit(summary, None);
        self.out.flush();
        let code = match (exit_code, child_exit) {
            (Some(c), _) => c,
            (None, Some(h)) if h.is_finished() => h.await.unwrap_or(0),
            _ => 0,
        };
        if self.args.fail_on_leak && self.reconciler.leaks_flagged > 0 {
            return Ok(3);
        }
        Ok(code)
    }

    /// A record from the reconciler. A leak record first gets the kernel's own accounting of
    /// its mapping: the pid's full smaps, read on the blocking pool (it walks page tables).
    fn emit_verdict(&mut self, mut r: Record) {
        if let (Record::Leak { pid, mapping, shared, .. }, Some(tx)) = (&r, &self.evidence) {
            if let Some(p) = self.ledger.procs.get(pid).filter(|p| p.alive) {
                let ranges = p.maps().ranges_of(&MappingId { name: mapping.as_str().into(), shared: *shared });
                let (pid, tx) = (*pid, tx.clone());
                tokio::task::spawn_blocking(move || {
                    if let Record::Leak { smaps_mapping, .. } = &mut r {
                        *smaps_mapping = smaps::read_vmas(pid, &ranges);
                    }
                    let _ = tx.send(r);
                });
                return;
            }
        }
        self.publish_verdict(r);
    }

    /// A verdict with its evidence: leak records get their top stacks.
    fn publish_verdict(&mut self, mut r: Record) {
        if let Some(st) = self.stacks.as_mut() {
            st.fill_leak(&mut r, &self.ledger);
        }
        self.out.emit(r, None);
    }

    fn on_exit(&mut self, e: &agent_common::ProcEvent) -> Option<Record> {
        let r = self.ledger.on_exit(e)?;
        if let (Some(n), Some(p)) = (self.kmaps.take_faults(e.pid), self.ledger.procs.get_mut(&e.pid)) {
            p.final_faults(n);
        }
        self.dead.push_back(e.pid);
        self.exits.insert(e.pid, self.tick);
        Some(r)
    }

    /// Take a dead process out of the ledger, keeping its summary entry (bounded).
    fn retire(&mut self, pid: u32) {
        let Some(mut s) = self.ledger.retire(pid) else { return };
        self.dead.retain(|&p| p != pid);
        if let Some(st) = self.stacks.as_mut() {
            st.forget_pid(pid);
        }
        if let Some(t) = self.reconciler.retire(pid) {
            s.leak = true;
            s.leak_rate_kib_s = Some((t.rate_kib_s * 100.0).round() / 100.0);
        }
        if self.retired.len() < MAX_RETIRED {
            self.retired.push(s);
        } else {
            self.retired_dropped += 1;
        }
    }

    /// Readings whose window the ledger has been fed past (`done_ns`): compare and judge.
    fn settle(&mut self, pending: &mut VecDeque<Chunk>, done_ns: u64) {
        while let Some(c) = pending.pop_front_if(|c| c.to + READ_SLACK_NS <= done_ns) {
            let t = c.from as f64 / 1e9;
            for (pid, mem) in c.samples {
                for r in
                    self.reconciler.on_mem(&mut self.ledger, pid, c.sweep, (t, (c.from, c.to + READ_SLACK_NS)), mem)
                {
                    self.emit_verdict(r);
                }
            }
        }
    }

    fn on_batch(&mut self, at: (u64, u64), batch: Bytes) {
        self.ledger.batch_at = at;
        self.processed_ns = at.0;
        for ev in records(batch) {
            self.received += 1;
            let rec = match ev {
                Ok(Event::Rss(e)) => {
                    self.ledger.on_rss(&e);
                    None
                }
                Ok(Event::Syscall(e)) => {
                    self.ledger.on_syscall(&e);
                    None
                }
                Ok(Event::Fork(e)) => {
                    // A pid number used again: the old process keeps its own summary entry.
                    self.retire(e.pid);
                    Some(self.ledger.on_fork(&e))
                }
                Ok(Event::Exec(e)) => Some(self.ledger.on_exec(&e)),
                Ok(Event::Exit(e)) => self.on_exit(&e),
                Err(e) => {
                    self.decode_errors += 1;
                    log::debug!("undecodable record: {e}");
                    None
                }
            };
            if let Some(r) = rec {
                self.out.emit(r, None);
            }
        }
    }

    fn close_interval(&mut self, tick: u64, dt: f64) {
        // A process whose exit record was lost (ring overflow) is noticed here.
        for pid in self.ledger.live_pids() {
            if !procinfo::exists(pid as i32) {
                if let Some(r) = self.on_exit(&agent_common::ProcEvent { pid, ..Default::default() }) {
                    self.out.emit(r, None);
                }
            }
        }
        if let Some(st) = self.stacks.as_mut() {
            st.resolve_new(&mut self.ledger);
        }
        let faults = self.kmaps.faults();
        let interval_s = (dt * 1000.0).round() / 1000.0;
        for r in self.ledger.close_interval(&faults, interval_s) {
            let mem = match &r {
                Record::Faults { pid, .. } => self.ledger.procs.get(pid).and_then(|p| p.mem.clone()),
                _ => None,
            };
            self.out.emit(r, mem.as_ref());
        }
        let lost = self.kmaps.counters()[counter::LOST as usize];
        if lost > self.lost_seen {
            self.out.emit(Record::Lost { events: lost - self.lost_seen }, None);
            self.lost_seen = lost;
        }
        // Forget the kernel state of processes whose exit was seen before the previous tick:
        // their teardown events have arrived by now.
        self.tick = tick;
        let due: Vec<u32> = self.exits.iter().filter(|&(_, &at)| at + 1 < tick).map(|(&pid, _)| pid).collect();
        for pid in due {
            self.exits.remove(&pid);
            let mm_ids = self.ledger.procs.get(&pid).map(|p| p.mm_ids()).unwrap_or_default();
            self.kmaps.forget(pid, &mm_ids);
        }
        // A tree that forks a process per request must not grow the agent without bound.
        while self.dead.len() > MAX_DEAD {
            let Some(pid) = self.dead.front().copied() else { break };
            if self.exits.contains_key(&pid) {
                break; // its kernel state is not forgotten yet
            }
            self.retire(pid);
        }
        self.out.flush();
    }
}

/// The agent's CPU time and peak RSS so far (getrusage), and its smaps reading cost.
fn own_cost(elapsed_s: f64) -> AgentCost {
    let (cpu_s, max_rss_kib) = procinfo::rusage(libc::RUSAGE_SELF);
    let r3 = |v: f64| (v * 1000.0).round() / 1000.0;
    AgentCost {
        cpu_s: r3(cpu_s),
        cpu_per_s: r3(cpu_s / elapsed_s.max(1e-3)),
        max_rss_kib,
        smaps_reads: smaps::READS.load(std::sync::atomic::Ordering::Relaxed),
        smaps_read_s: r3(smaps::READ_NS.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1e9),
        programs: Vec::new(),
    }
}

/// `--folded FILE` and `--flamegraph FILE.svg`: faulted pages by stack. A file that cannot be
/// written is reported, not fatal: the summary still goes out.
fn write_stack_files(st: &mut Stacks, ledger: &Ledger, args: &WatchArgs) {
    if args.folded.is_none() && args.flamegraph.is_none() {
        return;
    }
    let lines = st.folded(ledger);
    if let Some(path) = &args.folded {
        if let Err(e) = std::fs::write(path, lines.join("\n") + "\n") {
            log::error!("cannot write folded stacks to {}: {e}", path.display());
        }
    }
    if let Some(path) = &args.flamegraph {
        let r = std::fs::File::create(path)
            .map_err(anyhow::Error::from)
            .and_then(|f| stacks::flamegraph(&lines, "Pages faulted in, by user stack", std::io::BufWriter::new(f)));
        if let Err(e) = r {
            log::error!("cannot write the flamegraph to {}: {e:#}", path.display());
        }
    }
}
