//! The stages of one session and the path a record takes between them. Each handler is one
//! step: a ring batch through the ledger, an interval closed, a sweep started, readings judged.
use std::time::{Duration, Instant};

use agent_common::{counter, ProcEvent};
use bytes::Bytes;
use tokio::sync::mpsc;

use super::departures::{self, Departures};

#[path = "stages_cgroup.rs"]
mod cgroup;
#[path = "stages_sampling.rs"]
mod sampling_steps;
use crate::{
    attribution::Ledger,
    judgement::{self, Evidence, Judge},
    kernel::{
        bpf_maps::BpfMaps,
        events::{events, Event},
        loader,
        shmem_count::ShmemCount,
    },
    proc_facts,
    records::{ProgStat, Record},
    sampling::{smaps::Swept, Sampler},
    sinks::Sinks,
    stacks::Stacks,
    summary::{self, RingCounts},
};

/// The kernel side as the session holds it.
pub struct Kernel {
    /// The loaded programs; dropping them detaches every one.
    pub programs: Option<aya::Ebpf>,
    pub bpf: BpfMaps,
    /// With --bpf-stats: the kernel counts our programs' runs while this is open.
    pub stats: Option<std::os::fd::OwnedFd>,
    /// The perf fault source's events, detached with the programs.
    pub perf_faults: Option<crate::kernel::fault_source::PerfFaults>,
}

pub struct Pipeline {
    start: Instant,
    kernel: Kernel,
    /// `--cgroup`: the watched cgroups (see `stages_cgroup.rs`).
    cgroups: Option<cgroup::CgroupStage>,
    /// The labels of `proc` records (cgroup path, pod, container).
    labels: crate::targets::cgroup_labels::Labeler,
    /// The programs' run statistics, taken before they are detached.
    program_stats: Vec<ProgStat>,
    ledger: Ledger,
    /// With --stacks: the stack resolver.
    stacks: Option<Stacks>,
    sampler: Sampler,
    judge: Judge,
    evidence: Evidence,
    sinks: Sinks,
    /// A sink wants folded stacks in the summary.
    folded: bool,
    /// A sink wants profile samples in the summary.
    profile: bool,
    /// The start of the last ring poll whose batch the ledger has processed (ns since start).
    processed_ns: u64,
    /// The last interval closed.
    tick: u64,
    /// Live pids seen gone from /proc at the last tick: their exit record may still be queued.
    gone: Vec<u32>,
    /// Processes that exited: when to forget them, and the summary entries of retired ones.
    departures: Departures,
    lost_seen: u64,
    decode_errors: u64,
    /// Records read from the ring (decoded or not).
    received: u64,
    /// The kernel's count of shmem pages each pid created, when its hook is attached.
    shmem: Option<ShmemCount>,
}

/// The stages a pipeline is made of.
pub struct Stages {
    pub start: Instant,
    pub kernel: Kernel,
    pub ledger: Ledger,
    pub stacks: Option<Stacks>,
    pub judge: Judge,
    pub smaps_interval: Duration,
    pub sinks: Sinks,
    pub folded: bool,
    pub profile: bool,
}

impl Pipeline {
    /// The pipeline, and the channels its sweeps and evidence reads come back on.
    pub fn new(s: Stages) -> (Pipeline, mpsc::Receiver<Swept>, mpsc::UnboundedReceiver<Record>) {
        let (sampler, swept) = Sampler::new(s.smaps_interval, s.start);
        let (evidence, evidence_rx) = Evidence::new();
        let p = Pipeline {
            start: s.start,
            kernel: s.kernel,
            program_stats: Vec::new(),
            ledger: s.ledger,
            stacks: s.stacks,
            sampler,
            judge: s.judge,
            evidence,
            sinks: s.sinks,
            folded: s.folded,
            profile: s.profile,
            processed_ns: 0,
            tick: 0,
            departures: Departures::default(),
            gone: Vec::new(),
            lost_seen: 0,
            decode_errors: 0,
            received: 0,
            cgroups: None,
            labels: Default::default(),
            shmem: None,
        };
        (p, swept, evidence_rx)
    }

    pub fn start(&self) -> Instant {
        self.start
    }

    pub fn smaps_interval(&self) -> Duration {
        self.sampler.interval()
    }

    pub fn nothing_alive(&self) -> bool {
        // A watched cgroup may be empty for a while: it is watched until the end.
        self.cgroups.is_none() && self.ledger.live_pids().is_empty()
    }

    pub fn sampler_idle(&self) -> bool {
        self.sampler.idle()
    }

    pub fn readings_pending(&self) -> bool {
        self.sampler.has_pending()
    }

    pub fn processed_ns(&self) -> u64 {
        self.processed_ns
    }

    pub fn emit(&mut self, r: &Record) {
        self.sinks.emit(r);
    }

    /// A ring batch, record by record, through the ledger.
    pub fn on_batch(&mut self, at: (u64, u64), batch: Bytes) {
        self.ledger.set_poll(at);
        self.processed_ns = at.0;
        for ev in events(batch) {
            self.received += 1;
            let rec = match ev {
                Ok(Event::Rss(mut e)) => {
                    let mut fix = None;
                    if self.kernel.bpf.rss_delta(&mut e, &mut fix) {
                        self.ledger.on_rss(&e);
                    }
                    if let Some(fix) = fix {
                        self.ledger.on_rss(&fix);
                    }
                    None
                }
                Ok(Event::Syscall(e)) => {
                    self.ledger.on_syscall(&e);
                    None
                }
                Ok(Event::Area(e)) => {
                    self.ledger.on_area(&e);
                    None
                }
                Ok(Event::Fork(e)) => {
                    // A pid number used again while its process still looks alive: its exit
                    // record was lost (ring overflow). It exits here, before it is replaced.
                    if self.ledger.get(e.pid).is_some_and(|p| p.alive) {
                        if let Some(r) = self.on_exit(&ProcEvent { pid: e.pid, ..Default::default() }) {
                            self.sinks.emit(&r);
                        }
                    }
                    // The old process keeps its own summary entry.
                    self.retire(e.pid);
                    Some(self.ledger.on_fork(&e))
                }
                Ok(Event::Open(e)) => {
                    self.ledger.on_open(&e);
                    None
                }
                Ok(Event::Cow(e)) => {
                    self.ledger.on_cow(&e);
                    None
                }
                Ok(Event::Hugetlb(e)) => {
                    self.ledger.on_hugetlb(&e);
                    None
                }
                Ok(Event::Exec(e)) => {
                    let (r, left) = self.ledger.on_exec(&e);
                    self.kernel.bpf.forget_mms(e.pid, &left);
                    Some(r)
                }
                Ok(Event::Join(e)) => self.on_join(&e),
                Ok(Event::Leave(e)) => self.on_leave(&e),
                Ok(Event::ExecMm(e)) => {
                    self.ledger.on_exec_mm(&e);
                    None
                }
                Ok(Event::Exit(e)) => self.on_exit(&e),
                // Before its exit record (the kernel submitted it first): its state is all here.
                Ok(Event::Oom(e)) => {
                    Some(judgement::oom::post_mortem(&e, &self.ledger, &self.judge, self.stacks.as_mut()))
                }
                Err(e) => {
                    self.decode_errors += 1;
                    log::debug!("undecodable record: {e}");
                    None
                }
            };
            if let Some(r) = rec {
                self.emit_labelled(r);
            }
        }
    }

    fn on_exit(&mut self, e: &ProcEvent) -> Option<Record> {
        let r = self.ledger.on_exit(e)?;
        if let Some(n) = self.kernel.bpf.take_faults(e.pid) {
            self.ledger.final_faults(e.pid, n);
        }
        let mm_ids = self.ledger.get(e.pid).map(|p| p.mm_ids()).unwrap_or_default();
        self.departures.exited(e.pid, self.tick, mm_ids);
        Some(r)
    }

    /// Watch a process found after the start (`serve --comm`): into the ledger and the kernel's
    /// watched set, unless it is watched already, or its parent is (the kernel followed its
    /// fork: the record is on its way). False when it is gone or cannot be watched.
    pub fn adopt(&mut self, pid: u32) -> bool {
        let alive = |l: &Ledger, pid: u32| l.get(pid).is_some_and(|p| p.alive);
        let parent = proc_facts::facts(pid).map_or(0, |f| f.ppid);
        if alive(&self.ledger, pid) || alive(&self.ledger, parent) || self.ledger.add_existing(pid).is_none() {
            return false;
        }
        self.kernel.bpf.watch(pid).map_err(|e| log::warn!("cannot watch {pid}: {e}")).is_ok()
    }

    /// A daemon's pipeline: the processes taken out of the ledger are folded into their name's
    /// totals, not kept one by one.
    pub fn fold_exited(&mut self) {
        self.departures.fold.get_or_insert_with(Default::default);
    }

    /// A daemon's periodic give-back of the tables a burst of processes grew (the session then
    /// trims the heap: `fold::release_freed_heap`).
    pub fn shrink(&mut self) {
        self.ledger.shrink();
        self.judge.shrink();
        self.sampler.shrink();
        self.departures.shrink();
        self.kernel.bpf.shrink();
    }

    /// Take a dead process out of the ledger, keeping its summary entry (bounded).
    fn retire(&mut self, pid: u32) {
        let Some(mut s) = self.ledger.retire(pid) else { return };
        if let Some(st) = self.stacks.as_mut() {
            st.forget_pid(pid);
        }
        self.judge.retire(&mut s);
        self.departures.retired(s);
    }

    /// The end of a fault interval: faults records, lost records, and forgetting the dead.
    pub fn close_interval(&mut self, tick: u64, dt: f64) {
        // A process whose exit record was lost (ring overflow) is noticed here: gone at two
        // ticks in a row, so that its records still queued behind a busy pipeline (its exit; an
        // OOM post-mortem, which must come first) are processed before we give up on them.
        self.cgroup_poll();
        let gone_before = std::mem::take(&mut self.gone);
        for pid in self.ledger.live_pids() {
            if !proc_facts::exists(pid as i32) {
                if !gone_before.contains(&pid) {
                    self.gone.push(pid);
                    continue;
                }
                if let Some(r) = self.on_exit(&ProcEvent { pid, ..Default::default() }) {
                    self.emit_labelled(r);
                }
            }
        }
        if let Some(st) = self.stacks.as_mut() {
            st.resolve_new(&mut self.ledger);
        }
        let programs = match (&self.kernel.stats, &self.kernel.programs) {
            (Some(_), Some(ebpf)) => loader::program_stats(ebpf),
            _ => Vec::new(),
        };
        let lost = self.kernel.bpf.counters()[counter::LOST as usize];
        self.sinks.view(&crate::sinks::View { ledger: &self.ledger, judge: &self.judge, lost, programs: &programs });
        let faults = self.kernel.bpf.faults();
        let interval_s = (dt * 1000.0).round() / 1000.0;
        for mut r in self.ledger.close_interval(&faults, interval_s) {
            if let Record::Faults { pid, last_mem, .. } = &mut r {
                *last_mem = self.judge.last_mem(*pid).cloned();
            }
            self.sinks.emit(&r);
        }
        let lost = self.kernel.bpf.counters()[counter::LOST as usize];
        if lost > self.lost_seen {
            self.sinks.emit(&Record::Lost { events: lost - self.lost_seen });
            self.lost_seen = lost;
        }
        // Forget the kernel state of processes whose exit was seen before the previous tick:
        // their teardown events have arrived by now.
        self.tick = tick;
        for (pid, mm_ids) in self.departures.due(tick) {
            match self.ledger.get(pid).filter(|p| p.alive) {
                // The number is a new watched process's already (forked within two ticks): it
                // stays watched, and the mms it runs on keep their state.
                Some(p) => {
                    let now = p.mm_ids();
                    let old: Vec<u32> = mm_ids.into_iter().filter(|m| !now.contains(m)).collect();
                    self.kernel.bpf.forget_mms(pid, &old);
                }
                None => {
                    self.kernel.bpf.forget(pid, &mm_ids);
                    if let Some(s) = self.shmem.as_mut() {
                        s.forget(pid);
                    }
                }
            }
        }
        // A tree that forks a process per request must not grow the agent without bound.
        while let Some(pid) = self.departures.next_to_retire() {
            self.retire(pid);
        }
        self.sinks.flush();
    }

    /// With --bpf-stats: the programs' run statistics, while they are still attached.
    pub fn take_program_stats(&mut self) {
        if let (Some(_), Some(ebpf)) = (&self.kernel.stats, &self.kernel.programs) {
            self.program_stats = loader::program_stats(ebpf);
        }
    }

    /// The programs, to detach them by dropping.
    pub fn take_programs(&mut self) -> Option<aya::Ebpf> {
        drop(self.kernel.perf_faults.take());
        self.kernel.programs.take()
    }

    /// After the last drain: the last readings and verdicts, the last interval, the summary.
    /// Returns the number of leak verdicts standing at the end (exited processes included).
    pub async fn finish(&mut self, tick: u64, dt: f64, evidence: mpsc::UnboundedReceiver<Record>) -> u64 {
        self.settle(u64::MAX);
        for r in self.evidence.finish(evidence).await {
            self.publish_verdict(r);
        }
        self.close_interval(tick, dt);
        if self.decode_errors > 0 {
            log::warn!("{} ring records could not be decoded and were dropped", self.decode_errors);
        }
        if self.ledger.unseeded_dropped() > 0 {
            log::info!("{} first counter changes had no seed and were not attributed", self.ledger.unseeded_dropped());
        }
        if self.departures.dropped > 0 {
            log::warn!(
                "{} exited processes were left out of the summary (more than {})",
                self.departures.dropped,
                departures::MAX_RETIRED
            );
        }
        let counters = self.kernel.bpf.counters();
        let summary = summary::build(summary::Parts {
            elapsed_s: self.start.elapsed().as_secs_f64(),
            ring: RingCounts {
                lost: self.lost_seen,
                submitted: counters[counter::SUBMITTED as usize],
                received: self.received,
            },
            ledger: &self.ledger,
            retired: self.departures.take_retired(),
            exited: self.departures.take_exited(),
            judge: &self.judge,
            stacks: self.stacks.as_mut().map(|st| (st, counters[counter::STACK_ERRORS as usize])),
            folded: self.folded,
            profile: self.profile,
            programs: std::mem::take(&mut self.program_stats),
        });
        self.sinks.emit(&summary);
        self.sinks.flush();
        self.judge.leaks_standing() + self.cgroup_leaks_standing()
    }
}
