//! What `serve` keeps of the pipeline: a state per watched pid and per group, updated from the
//! record stream (faults, readings, verdicts) and from the pipeline's view at each interval's
//! end (who is alive, under which name). A scrape encodes the metric families this keeps
//! current; it never reads /proc.
//!
//! The seam for longer-lived judgement: `PidState` and `GroupState` are the per-pid and
//! per-group state, `ServeSink::departed` is where a process leaves (fold it into its group
//! there), and `ServeSink::view` runs once per interval with the ledger and the judge.
use std::{
    collections::{HashMap, HashSet},
    io,
    sync::{atomic::Ordering, Arc},
};

use super::{
    groups::{cgroup_of, GroupBy},
    health::Health,
    metrics::{self, Group, GroupKind, Leak, Metrics, Program},
};
use crate::{
    records::{MemStat, Record},
    sinks::{Sink, View},
};

/// One watched process as serve keeps it.
#[derive(Clone, Debug)]
pub struct PidState {
    pub group: String,
    pub comm: String,
    /// Its latest smaps reading.
    pub mem: Option<MemStat>,
    /// The series of its standing leak verdict.
    pub leak: Option<Leak>,
    /// The interval at which it was seen gone (kept one interval for its last records).
    pub gone_at: Option<u64>,
}

/// One group's sums over its live processes, recomputed at each interval's end.
#[derive(Clone, Debug, Default)]
pub struct GroupState {
    pub processes: i64,
    /// Processes of the group with a reading (the memory gauges wait for the first).
    pub read: i64,
    /// Bytes of each of `metrics::MEMORY_KINDS`.
    pub memory: [i64; metrics::MEMORY_KINDS.len()],
}

/// The metrics sink: the pipeline's state as serve keeps it.
pub struct ServeSink {
    by: GroupBy,
    /// Tree roots named by the targets (`-p` pids, `--comm` matches); with `--all`, any
    /// process whose parent is not watched or is pid 1.
    roots: HashSet<u32>,
    metrics: Metrics,
    health: Arc<Health>,
    pub pids: HashMap<u32, PidState>,
    pub groups: HashMap<String, GroupState>,
    /// Groups with counters and no live process: since which interval. Their counters go after
    /// `FORGET_IDLE_S`, so that a host's series stay bounded when group names churn (tree roots,
    /// cgroups of finished jobs).
    idle_since: HashMap<String, u64>,
    /// Seconds between views (`--interval`).
    interval_s: f64,
    page: i64,
    views: u64,
}

/// A group with no live process for this long loses its counter series (a later process of the
/// same group starts them again from 0, which Prometheus's rate() reads as a counter reset).
pub const FORGET_IDLE_S: f64 = 3600.0;

impl ServeSink {
    pub fn new(by: GroupBy, roots: impl IntoIterator<Item = u32>, metrics: Metrics, health: Arc<Health>) -> ServeSink {
        ServeSink {
            by,
            roots: roots.into_iter().collect(),
            metrics,
            health,
            pids: HashMap::new(),
            groups: HashMap::new(),
            idle_since: HashMap::new(),
            interval_s: 1.0,
            page: 4096,
            views: 0,
        }
    }

    /// Seconds between intervals, for `FORGET_IDLE_S`.
    pub fn with_interval(mut self, interval_s: f64) -> ServeSink {
        self.interval_s = interval_s;
        self
    }

    /// The group of a process first seen now.
    fn group_of(&self, view: &View, pid: u32, comm: &str) -> String {
        match self.by {
            GroupBy::Comm => comm.to_string(),
            GroupBy::Cgroup => cgroup_of(pid).unwrap_or_else(|| "unknown".into()),
            GroupBy::Tree => {
                // Up the watched ancestry to a root; a parent already grouped names the tree.
                let mut cur = (pid, comm.to_string());
                for _ in 0..64 {
                    if let Some(s) = self.pids.get(&cur.0).filter(|_| cur.0 != pid) {
                        return s.group.clone();
                    }
                    let parent = view.ledger.get(cur.0).map(|p| p.ppid).unwrap_or(0);
                    let parent_proc = view.ledger.get(parent).filter(|_| parent > 1);
                    match parent_proc {
                        Some(pp) if !self.roots.contains(&cur.0) => cur = (parent, pp.comm.clone()),
                        _ => break,
                    }
                }
                format!("{}:{}", cur.1, cur.0)
            }
        }
    }

    /// A process seen born (forked, or joined at exec) in the record stream: grouped now, so
    /// that one that lives less than an interval is counted in its group. A tree's child is in
    /// its parent's group.
    fn born(&mut self, pid: u32, ppid: u32, comm: &str) {
        if self.pids.get(&pid).is_some_and(|s| s.gone_at.is_none()) {
            return;
        }
        let group = match self.by {
            GroupBy::Comm => comm.to_string(),
            GroupBy::Cgroup => cgroup_of(pid).unwrap_or_else(|| "unknown".into()),
            GroupBy::Tree => match self.pids.get(&ppid).filter(|_| ppid > 1 && !self.roots.contains(&pid)) {
                Some(parent) => parent.group.clone(),
                None => format!("{comm}:{pid}"),
            },
        };
        if let Some(old) = self.pids.remove(&pid) {
            self.departed(pid, old);
        }
        self.pids.insert(pid, PidState { group, comm: comm.to_string(), mem: None, leak: None, gone_at: None });
    }

    /// Its exit record: its leak series goes now; it is kept until the view after the next for
    /// the records of its last interval.
    fn exited(&mut self, pid: u32) {
        let next = self.views + 1;
        if let Some(s) = self.pids.get_mut(&pid) {
            s.gone_at.get_or_insert(next);
            if let Some(l) = s.leak.take() {
                self.metrics.leak_rate.remove(&l);
            }
        }
    }

    /// A process left (exited, or its number went to another process): its series go. The
    /// place to fold what it leaves behind into its group.
    fn departed(&mut self, _pid: u32, s: PidState) {
        if let Some(l) = s.leak {
            self.metrics.leak_rate.remove(&l);
        }
    }

    fn on_leak(&mut self, pid: u32, comm: &str, rate_kib_s: f64, mapping: &str, metric: &'static str, flagged: bool) {
        let group = self.pids.get(&pid).map_or_else(|| comm.to_string(), |s| s.group.clone());
        let labels = Leak { group: group.clone(), pid, comm: comm.to_string(), mapping: mapping.to_string(), metric };
        let Some(s) = self.pids.get_mut(&pid) else { return };
        let old = s.leak.take();
        if let Some(old) = &old {
            self.metrics.leak_rate.remove(old);
        }
        if flagged {
            if old.is_none() {
                self.metrics.leak_verdicts.get_or_create(&Group { group }).inc();
            }
            self.metrics.leak_rate.get_or_create(&labels).set(rate_kib_s * 1024.0);
            s.leak = Some(labels);
        }
    }

    fn on_faults(&mut self, pid: u32, comm: &str, pages: [i64; metrics::FAULT_KINDS.len()]) {
        let group = self.pids.get(&pid).map_or_else(|| comm.to_string(), |s| s.group.clone());
        if !self.groups.contains_key(&group) {
            // Counted, but no live process at the last view (a short-lived one).
            self.idle_since.entry(group.clone()).or_insert(self.views);
        }
        for (kind, n) in metrics::FAULT_KINDS.into_iter().zip(pages) {
            if n > 0 {
                self.metrics
                    .faulted
                    .get_or_create(&GroupKind { group: group.clone(), kind })
                    .inc_by((n * self.page) as u64);
            }
        }
    }

    /// The groups' sums over their live processes, into the gauges; groups with no live
    /// process leave the gauges (their counters stay).
    fn publish_groups(&mut self) {
        let mut groups: HashMap<String, GroupState> = HashMap::new();
        for s in self.pids.values().filter(|s| s.gone_at.is_none()) {
            let g = groups.entry(s.group.clone()).or_default();
            g.processes += 1;
            if let Some(m) = &s.mem {
                g.read += 1;
                let kib = [m.rss_kib, m.pss_kib, m.uss_kib, m.swap_kib, m.hugetlb_kib];
                for (sum, v) in g.memory.iter_mut().zip(kib) {
                    *sum += v as i64 * 1024;
                }
            }
        }
        for (name, g) in &groups {
            self.metrics.processes.get_or_create(&Group { group: name.clone() }).set(g.processes);
            for (kind, v) in metrics::MEMORY_KINDS.into_iter().zip(g.memory) {
                let labels = GroupKind { group: name.clone(), kind };
                if g.read > 0 {
                    self.metrics.memory.get_or_create(&labels).set(v);
                } else {
                    self.metrics.memory.remove(&labels);
                }
            }
        }
        for name in self.groups.keys().filter(|n| !groups.contains_key(*n)) {
            self.metrics.processes.remove(&Group { group: name.clone() });
            for kind in metrics::MEMORY_KINDS {
                self.metrics.memory.remove(&GroupKind { group: name.clone(), kind });
            }
            self.idle_since.insert(name.clone(), self.views);
        }
        self.groups = groups;
        self.forget_idle();
    }

    /// Counters of groups idle for `FORGET_IDLE_S` go.
    fn forget_idle(&mut self) {
        let live = &self.groups;
        self.idle_since.retain(|name, _| !live.contains_key(name));
        let horizon = (FORGET_IDLE_S / self.interval_s).ceil() as u64;
        let now = self.views;
        let old: Vec<String> = self
            .idle_since
            .iter()
            .filter(|(_, since)| now.saturating_sub(**since) >= horizon)
            .map(|(n, _)| n.clone())
            .collect();
        for name in old {
            for kind in metrics::FAULT_KINDS {
                self.metrics.faulted.remove(&GroupKind { group: name.clone(), kind });
            }
            self.metrics.leak_verdicts.remove(&Group { group: name.clone() });
            self.idle_since.remove(&name);
        }
    }

    /// The agent's own figures.
    fn publish_self(&self, view: &View) {
        let m = &self.metrics;
        let lost = view.lost.saturating_sub(m.events_lost.get());
        m.events_lost.inc_by(lost);
        let smaps_s = crate::sampling::smaps::READ_NS.load(Ordering::Relaxed) as f64 / 1e9;
        metrics::raise_to(&m.smaps_read_seconds, smaps_s);
        metrics::raise_to(&m.cpu_seconds, crate::proc_facts::rusage(libc::RUSAGE_SELF).0);
        m.resident.set(own_resident_bytes() as i64);
        for p in view.programs {
            let c = m.ebpf_run_seconds.get_or_create(&Program { program: p.name.clone() });
            metrics::raise_to(&c, p.run_ns as f64 / 1e9);
        }
    }
}

impl Sink for ServeSink {
    fn emit(&mut self, _ts: f64, record: &Record) -> io::Result<()> {
        match record {
            Record::Faults { pid, comm, pages, .. } => {
                self.on_faults(*pid, comm, [pages.anon, pages.file, pages.shmem, pages.hugetlb])
            }
            Record::Mem { pid, mem, .. } => {
                if let Some(s) = self.pids.get_mut(pid) {
                    s.mem = Some(mem.clone());
                }
            }
            Record::Leak { pid, comm, rate_kib_s, mapping, metric, state, .. } => {
                self.on_leak(*pid, comm, *rate_kib_s, mapping, metric, *state == "flagged")
            }
            Record::Proc { pid, ppid, comm, event: "fork" | "join", .. } => self.born(*pid, *ppid, comm),
            Record::Proc { pid, event: "exit", .. } => self.exited(*pid),
            Record::Summary { .. } => self.health.stopping.store(true, Ordering::Release),
            _ => {}
        }
        Ok(())
    }

    fn view(&mut self, view: &View) {
        self.views += 1;
        self.page = view.ledger.page_size();
        // Gone since the last view: kept one more interval for records still to come.
        let tick = self.views;
        let done: Vec<u32> =
            self.pids.iter().filter(|(_, s)| s.gone_at.is_some_and(|t| t < tick)).map(|(p, _)| *p).collect();
        for pid in done {
            let s = self.pids.remove(&pid).expect("listed");
            self.departed(pid, s);
        }
        let mut alive = HashSet::new();
        for p in view.ledger.procs().filter(|p| p.alive) {
            alive.insert(p.pid);
            match self.pids.get_mut(&p.pid) {
                // A comm group follows the name (exec renames a forked child).
                Some(s) if s.gone_at.is_none() => {
                    if s.comm != p.comm {
                        s.comm = p.comm.clone();
                        if self.by == GroupBy::Comm {
                            s.group = p.comm.clone();
                        }
                    }
                }
                _ => {
                    let group = self.group_of(view, p.pid, &p.comm);
                    if let Some(old) = self.pids.remove(&p.pid) {
                        self.departed(p.pid, old);
                    }
                    let s = PidState { group, comm: p.comm.clone(), mem: None, leak: None, gone_at: None };
                    self.pids.insert(p.pid, s);
                }
            }
        }
        for (pid, s) in self.pids.iter_mut() {
            if s.gone_at.is_none() && !alive.contains(pid) {
                s.gone_at = Some(tick);
                if let Some(l) = s.leak.take() {
                    self.metrics.leak_rate.remove(&l);
                }
            }
        }
        self.publish_groups();
        self.publish_self(view);
        self.health.beat();
    }
}

/// The agent's resident memory now (its own statm).
fn own_resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_groups_counters_go_after_it_is_idle_for_an_hour() {
        let (m, r) = Metrics::register(false);
        let mut s = ServeSink::new(GroupBy::Comm, [], m, Arc::new(Health::new())).with_interval(10.0);
        // A short-lived process: counted, never live at a view.
        s.on_faults(7, "cronjob", [256, 0, 0, 0]);
        let has = |r: &prometheus_client::registry::Registry| metrics::openmetrics(r).contains("group=\"cronjob\"");
        assert!(has(&r));
        for _ in 0..359 {
            s.views += 1;
            s.publish_groups();
        }
        assert!(has(&r), "kept for the hour");
        s.views += 1;
        s.publish_groups();
        assert!(!has(&r), "gone after an hour idle");
        assert!(s.idle_since.is_empty());
    }
}
