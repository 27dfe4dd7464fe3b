//! The ledger: every rss change the kernel joined with its cause lands here, per process and
//! per mapping. Fault-caused pages go to the mapping that holds the faulting address; other
//! causes (syscalls, exit teardown, reclaim) are kept apart. Mapping syscalls keep each
//! process's interval map current.
use std::collections::HashMap;

use agent_common::{cause, member, rss_flags, RssEvent};

use super::{
    mappings::{MappingId, MappingMap},
    process::{MmCounters, Proc},
    rss_trace, ProcSource,
};
use crate::records::{ProcSummary, Record};

/// Bound on mms built but never run on (a vfork child that exited, say).
const MAX_NEW_MMS: usize = 4096;

pub struct Ledger {
    procs: HashMap<u32, Proc>,
    page_size: i64,
    /// Where /proc facts come from (the real /proc, or a test's fake).
    facts: Box<dyn ProcSource>,
    /// Sizes of mms built under the watch, until their owner's first own change.
    new_mms: HashMap<u32, [i64; 4]>,
    /// Unseeded first deltas that had no seed and were dropped.
    unseeded_dropped: u64,
    /// The ring poll the records being fed now came from.
    batch_at: rss_trace::Poll,
    /// Opened paths -> the name `/proc/PID/maps` would give them (see `ledger_names.rs`).
    paths: HashMap<String, std::sync::Arc<str>>,
    /// mm_id -> the processes that ran on it together (see `ledger_shared.rs`).
    sharing: HashMap<u32, Vec<u32>>,
    /// Pages faults added to mappings nothing could name (`[file]`, `[unmapped]`).
    unnamed_pages: i64,
}

impl Ledger {
    /// Give back the table space a burst of processes left (hash tables keep their capacity
    /// when emptied): a daemon's memory follows what it holds, not its highest burst.
    pub fn shrink(&mut self) {
        self.procs.shrink_to(self.procs.len() * 2);
        self.new_mms.shrink_to(self.new_mms.len() * 2);
        self.sharing.shrink_to(self.sharing.len() * 2);
    }

    pub fn new(facts: Box<dyn ProcSource>) -> Ledger {
        // SAFETY: sysconf has no preconditions.
        let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as i64;
        Ledger {
            procs: HashMap::new(),
            page_size,
            facts,
            new_mms: HashMap::new(),
            unseeded_dropped: 0,
            batch_at: Default::default(),
            paths: HashMap::new(),
            sharing: HashMap::new(),
            unnamed_pages: 0,
        }
    }

    /// A process watched from the start (a `-p` target and its tree, or the spawned command):
    /// its maps and rss seeds come from /proc.
    pub fn add_existing(&mut self, pid: u32) -> Option<()> {
        let (ppid, comm) = self.facts.facts(pid)?;
        let (maps, seed) = (self.facts.maps(pid).unwrap_or_default(), self.facts.rss_seed(pid));
        self.add(pid, ppid, comm, maps, seed);
        // Its hugetlb pages now are a seed too, not its faults'.
        let huge = self.facts.hugetlb_pages(pid).unwrap_or(0);
        self.procs.get_mut(&pid).expect("added").hugetlb.accounted = huge;
        Some(())
    }

    pub fn page_size(&self) -> i64 {
        self.page_size
    }

    /// Pages (net) faults added to mappings that stayed unnamed: `[file]` (a file mmap whose
    /// process was gone before /proc named it and whose open was not seen) and `[unmapped]`
    /// (an address in no mapping the ledger knew, e.g. what exec mapped in a process gone
    /// before /proc could be read).
    pub fn unnamed_pages(&self) -> i64 {
        self.unnamed_pages
    }

    /// First counter changes that had no seed and could not be attributed.
    pub fn unseeded_dropped(&self) -> u64 {
        self.unseeded_dropped
    }

    pub fn get(&self, pid: u32) -> Option<&Proc> {
        self.procs.get(&pid)
    }

    pub fn procs(&self) -> impl Iterator<Item = &Proc> {
        self.procs.values()
    }

    /// The kernel's last fault count of `pid`, taken at its exit.
    pub fn final_faults(&mut self, pid: u32, n: u64) {
        if let Some(p) = self.procs.get_mut(&pid) {
            p.final_faults(n);
        }
    }

    /// The records fed next came from the ring poll `at`.
    pub fn set_poll(&mut self, at: rss_trace::Poll) {
        self.batch_at = at;
    }

    /// Did `pid`'s rss ledger change since the last call?
    pub fn take_dirty(&mut self, pid: u32) -> bool {
        self.procs.get_mut(&pid).is_some_and(|p| std::mem::take(&mut p.dirty))
    }

    /// Stack ids seen since the last call, by pid, to resolve while the mappings are current.
    pub fn take_new_stacks(&mut self) -> Vec<(u32, Vec<i32>)> {
        self.procs
            .values_mut()
            .filter(|p| !p.new_stacks.is_empty())
            .map(|p| (p.pid, std::mem::take(&mut p.new_stacks)))
            .collect()
    }

    /// The address ranges a live process maps `mapping` at (for its full smaps evidence).
    pub fn ranges_of(&self, pid: u32, mapping: &MappingId) -> Option<Vec<(u64, u64)>> {
        self.procs.get(&pid).filter(|p| p.alive).map(|p| p.maps().ranges_of(mapping))
    }

    fn add(&mut self, pid: u32, ppid: u32, comm: String, maps: MappingMap, seed: Option<[i64; 4]>) {
        let mut p = Proc::new(pid, ppid, comm, maps);
        p.seed = seed;
        self.procs.insert(pid, p);
    }

    pub fn live_pids(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.procs.values().filter(|p| p.alive).map(|p| p.pid).collect();
        v.sort_unstable();
        v
    }

    pub fn on_rss(&mut self, e: &RssEvent) {
        let at = self.batch_at;
        if let Some(p) = self.apply_rss(e) {
            if let Some(kib) = p.ledger_rss_kib() {
                p.rss_trace.note(at, kib, p.own_pages);
            }
        }
        if !self.sharing.is_empty() {
            self.share_counter(e, at);
        }
    }

    /// Apply one rss change; the process it changed, if any.
    fn apply_rss(&mut self, e: &RssEvent) -> Option<&mut Proc> {
        let (page, poll_end) = (self.page_size, self.batch_at.1);
        if e.cause == cause::NEW_MM {
            // Sizes a fork copy or an exec gave an mm before its owner ran on it.
            if self.new_mms.len() > MAX_NEW_MMS {
                self.new_mms.clear();
            }
            if e.flags & rss_flags::NEW_MM_FIRST != 0 {
                self.new_mms.remove(&e.mm_id);
            }
            if let Some(v) = self.new_mms.entry(e.mm_id).or_default().get_mut(e.member as usize) {
                *v = e.size;
            }
            return None;
        }
        let joined = self.join_shared_mm(e.hdr.tgid, e.mm_id);
        let facts = self.facts.as_ref();
        let p = proc_entry(&mut self.procs, facts, e.hdr.tgid);
        let m = e.member as usize;
        if m >= 4 {
            return Some(p);
        }
        let unseeded = e.flags & rss_flags::UNSEEDED != 0;
        let idx = match p.mms.iter().position(|c| c.mm_id == e.mm_id) {
            Some(i) => i,
            None => {
                let c = match (unseeded, p.mms.is_empty(), p.seed) {
                    // An mm a live watched process runs on too: its counters are the mm's.
                    _ if joined.is_some() => joined.expect("some"),
                    // The mm the process had when the watch began: /proc/PID/status seeded it.
                    (true, true, Some(seed)) => MmCounters { mm_id: e.mm_id, rss: seed, known: [true; 4], torn: false },
                    (true, _, _) => MmCounters { mm_id: e.mm_id, rss: [0; 4], known: [false; 4], torn: false },
                    // Created under the watch (fork, exec): the kernel tracked it from zero,
                    // and told us what the copy put in it.
                    (false, _, _) => MmCounters {
                        mm_id: e.mm_id,
                        rss: self.new_mms.remove(&e.mm_id).unwrap_or([0; 4]),
                        known: [true; 4],
                        torn: false,
                    },
                };
                p.mms.push(c);
                p.mms.len() - 1
            }
        };
        let prev = p.mms[idx].rss[m];
        p.mms[idx].rss[m] = e.size;
        p.mms[idx].known[m] = true;
        p.mms[idx].torn |= e.cause == cause::EXIT;
        if !matches!(e.cause, cause::EXIT | cause::REMOTE) {
            p.cur_mm = Some(e.mm_id);
        }
        let delta = if unseeded {
            match p.seed {
                Some(_) if p.mms.len() == 1 => e.size - prev,
                _ => {
                    self.unseeded_dropped += 1;
                    return Some(p);
                }
            }
        } else {
            e.delta
        };
        p.dirty = true;
        let pages = delta / page;
        if e.member == member::SWAPENTS {
            return Some(p);
        }
        match e.cause {
            cause::FAULT | cause::KERNEL_FAULT => {
                let id = p.mapping_at(e.addr, poll_end, facts);
                let first = e.flags & rss_flags::FIRST_OF_FAULT != 0;
                self.unnamed_pages += p.note_unnamed(&id, e.addr, pages, e.cause == cause::KERNEL_FAULT, first);
                p.own_pages[usize::from(id.shared)] += pages;
                p.interval.pages[m] += pages;
                if e.cause == cause::FAULT
                    && e.aux & cow::PROT_WRITE == cow::PROT_WRITE
                    && e.member == member::ANON
                    && pages > 0
                {
                    p.cow_shown(e.addr, page, &id);
                }
                if e.stack_id >= 0 {
                    let n = p.stacks.entry(e.stack_id).or_default();
                    if *n == 0 {
                        p.new_stacks.push(e.stack_id);
                    }
                    *n += pages;
                    *p.stack_mappings.entry((e.stack_id, id.clone())).or_default() += pages;
                }
                let s = p.interval.by_mapping.entry(id).or_default();
                s.pages += pages;
                if e.flags & rss_flags::FIRST_OF_FAULT != 0 {
                    s.faults += 1;
                }
            }
            c => {
                p.own_pages[2] += pages;
                p.interval.other[(c as usize).min(5)] += pages;
            }
        }
        Some(p)
    }

    /// Close an interval: `faults` holds the kernel's cumulative fault count per pid. Returns a
    /// faults record per process with activity.
    pub fn close_interval(&mut self, faults: &HashMap<u32, u64>, interval_s: f64) -> Vec<Record> {
        let mut out = Vec::new();
        self.audit_hugetlb();
        let mut pids: Vec<u32> = self.procs.keys().copied().collect();
        pids.sort_unstable();
        for pid in pids {
            let facts = self.facts.as_ref();
            let p = self.procs.get_mut(&pid).expect("listed");
            if let Some(&n) = faults.get(&pid) {
                p.interval.faults = n.saturating_sub(p.kernel_faults);
                p.kernel_faults = n;
            }
            let a = std::mem::take(&mut p.interval);
            p.cow_seen = HashMap::new();
            p.age_mapping_rates(&a, interval_s);
            if a.is_empty() {
                continue;
            }
            p.total.merge(&a);
            if p.alive {
                // prctl(PR_SET_NAME) makes no event: refresh the name of the active ones.
                if let Some(c) = facts.comm(pid) {
                    p.comm = c;
                }
            }
            if a.faults == 0 && a.pages == [0; 4] && a.cow == 0 && a.hugetlb == 0 {
                continue;
            }
            out.push(Record::Faults {
                pid,
                comm: p.comm.clone(),
                interval_s,
                faults: a.faults,
                pages: a.pages(),
                mappings: a.top(super::process::TOP_MAPPINGS),
                last_mem: None,
            });
        }
        out
    }

    /// Take a dead process out of the ledger (its pid number is being reused, or too many dead
    /// ones are kept): its summary entry.
    pub fn retire(&mut self, pid: u32) -> Option<ProcSummary> {
        if self.procs.get(&pid).is_none_or(|p| p.alive) {
            return None;
        }
        let mut p = self.procs.remove(&pid)?;
        // What it did since the last interval closed counts too.
        let last = std::mem::take(&mut p.interval);
        p.total.merge(&last);
        Some(p.summary())
    }

    pub fn summary(&self) -> Vec<ProcSummary> {
        let mut v: Vec<&Proc> = self.procs.values().collect();
        v.sort_by_key(|p| p.pid);
        v.into_iter().map(Proc::summary).collect()
    }
}

fn proc_entry<'a>(procs: &'a mut HashMap<u32, Proc>, facts: &dyn ProcSource, pid: u32) -> &'a mut Proc {
    procs.entry(pid).or_insert_with(|| {
        // An event for a process we were not told about (its fork record was lost): learn
        // it from /proc.
        let (ppid, comm) = facts.facts(pid).unwrap_or((0, String::from("?")));
        Proc::new(pid, ppid, comm, facts.maps(pid).unwrap_or_default())
    })
}

#[path = "ledger_areas.rs"]
mod areas;
#[path = "ledger_cow.rs"]
mod cow;
#[path = "ledger_hugetlb.rs"]
pub mod hugetlb;
#[path = "ledger_lifecycle.rs"]
mod lifecycle;
#[path = "ledger_names.rs"]
mod names;
#[path = "ledger_shared.rs"]
mod shared;
#[cfg(test)]
#[path = "ledger_tests.rs"]
mod tests;
