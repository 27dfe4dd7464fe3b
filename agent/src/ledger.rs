//! Attribution: every rss change the kernel joined with its cause lands here, per process and
//! per mapping. Fault-caused pages go to the mapping that holds the faulting address; other
//! causes (syscalls, exit teardown, reclaim) are kept apart. Mapping syscalls keep each
//! process's interval map current.
use std::collections::HashMap;

use agent_common::{cause, member, nr, rss_flags, EventKind, ProcEvent, RssEvent, SyscallEvent};

use crate::{
    activity::Activity,
    decode::comm_str,
    maps::{anon_name, MappingId, MappingMap},
    procinfo,
    record::{Causes, MemStat, ProcSummary, Record},
    rss_trace::{self, RssTrace},
};

const MAP_SHARED_TYPE: u64 = 0x03;
const MAP_ANONYMOUS: u64 = 0x20;
/// Bound on mms built but never run on (a vfork child that exited, say).
const MAX_NEW_MMS: usize = 4096;
/// Time constant of the per-mapping growth rate, seconds.
const MAPPING_RATE_TAU_S: f64 = 30.0;
/// Top mappings per faults record.
pub const TOP_MAPPINGS: usize = 5;

/// Last absolute value (bytes) of each rss member of one mm, and which are known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MmCounters {
    pub mm_id: u32,
    pub rss: [i64; 4],
    known: [bool; 4],
    /// Its teardown has begun (exit, or the old image at exec): smaps and the ledger are then
    /// read at different points of a fast release, so no drift is reported against it.
    torn: bool,
}

pub struct Proc {
    pub pid: u32,
    pub ppid: u32,
    pub comm: String,
    pub alive: bool,
    maps: MappingMap,
    /// Bytes per member at the watch start, for the first (unseeded) kernel delta.
    seed: Option<[i64; 4]>,
    /// The rss ledger: the counters of each mm this process had (a new one at exec).
    pub mms: Vec<MmCounters>,
    /// The mm it runs on now (the last one its own events changed).
    cur_mm: Option<u32>,
    kernel_faults: u64,
    pub interval: Activity,
    pub total: Activity,
    pub mem: Option<MemStat>,
    pub peak_uss_kib: u64,
    /// Pages per interval each mapping gained, smoothed over ~30 s: where growth goes now.
    mapping_rate: HashMap<MappingId, f64>,
    /// The rss ledger changed since the last smaps reading.
    pub dirty: bool,
    /// Its recent ledger RSS values, by ring poll.
    rss_trace: RssTrace,
    /// Own pages so far (see `rss_trace::Own`), kept as the records come.
    own_pages: rss_trace::Own,
    /// Seen gone without learning its last name (a prctl rename makes no event).
    comm_at_exit_unknown: bool,
    /// The kernel's exit record was processed: every record of its faults came before it.
    exit_record_seen: bool,
    /// With --stacks: pages added per user stack id, and ids not yet resolved.
    pub stacks: HashMap<i32, i64>,
    new_stacks: Vec<i32>,
}

impl Proc {
    fn new(pid: u32, ppid: u32, comm: String, maps: MappingMap) -> Proc {
        Proc {
            pid,
            ppid,
            comm,
            alive: true,
            maps,
            seed: None,
            mms: Vec::new(),
            cur_mm: None,
            kernel_faults: 0,
            interval: Activity::default(),
            total: Activity::default(),
            mem: None,
            peak_uss_kib: 0,
            mapping_rate: HashMap::new(),
            dirty: true,
            rss_trace: RssTrace::default(),
            comm_at_exit_unknown: false,
            exit_record_seen: false,
            own_pages: [0; 3],
            stacks: HashMap::new(),
            new_stacks: Vec::new(),
        }
    }

    /// Re-read /proc/PID/maps. Only rss changes reach a lookup, and the kernel only changes rss
    /// for pages that are mapped, so a miss means our map is behind: re-reading is always right.
    fn reload_maps(&mut self) -> bool {
        match procinfo::maps(self.pid) {
            Some(m) => {
                self.maps = m;
                true
            }
            None => false,
        }
    }

    /// The ledger's RSS (file + anon + shmem) of the current mm in KiB, once every member is
    /// known and while the mm is not being torn down.
    pub fn ledger_rss_kib(&self) -> Option<i64> {
        let m = [member::FILE, member::ANON, member::SHMEM].map(|m| m as usize);
        let (rss, known) = match self.cur_mm.and_then(|id| self.mms.iter().find(|c| c.mm_id == id)) {
            Some(c) if c.torn => return None,
            Some(c) => (c.rss, c.known),
            None => (self.seed?, [true; 4]),
        };
        m.iter().all(|&i| known[i]).then(|| m.iter().map(|&i| rss[i]).sum::<i64>() / 1024)
    }

    /// The ledger's RSS nearest to `smaps_kib` among the values it held from `from` to `to` (ns
    /// since the watch start), i.e. while that smaps reading was taken.
    pub fn ledger_rss_near_kib(&self, smaps_kib: i64, from: u64, to: u64) -> Option<i64> {
        let now = self.ledger_rss_kib()?;
        Some(rss_trace::nearest(smaps_kib, self.rss_trace.range(from, to).unwrap_or((now, now))))
    }

    pub fn mm_ids(&self) -> Vec<u32> {
        self.mms.iter().map(|c| c.mm_id).collect()
    }

    /// KiB added to RSS by this process's own faults so far (net).
    pub fn own_fault_kib(&self, page: i64) -> i64 {
        (self.own_pages[0] + self.own_pages[1]) * page / 1024
    }

    /// KiB so far, net: added by own faults into private and into shared mappings, and
    /// changed by other causes (munmap, madvise, exit teardown, reclaim), as the ledger stood
    /// when an smaps reading of `smaps_kib` RSS was taken between `from` and `to` (ns since
    /// the watch start).
    pub fn own_split_near_kib(&self, page: i64, smaps_kib: i64, from: u64, to: u64) -> (i64, i64, i64) {
        own_kib(self.rss_trace.own_near(from, to, smaps_kib).unwrap_or(self.own_pages), page)
    }

    /// The kernel's last fault count of this process, taken at its exit.
    pub fn final_faults(&mut self, n: u64) {
        self.interval.faults += n.saturating_sub(self.kernel_faults);
        self.kernel_faults = n;
    }

    pub fn maps(&self) -> &MappingMap {
        &self.maps
    }

    /// Stack ids seen since the last call, to resolve while the mappings are current.
    pub fn take_new_stacks(&mut self) -> Vec<i32> {
        std::mem::take(&mut self.new_stacks)
    }

    /// The mapping growing fastest now, else the one that grew most overall.
    pub fn growing_mapping(&self) -> Option<MappingId> {
        self.mapping_rate
            .iter()
            .max_by(|a, b| a.1.total_cmp(b.1).then(b.0.cmp(a.0)))
            .map(|(id, _)| id.clone())
            .or_else(|| self.total.by_mapping.iter().max_by_key(|(_, s)| s.pages).map(|(id, _)| id.clone()))
    }

    fn mapping_of(&mut self, addr: u64) -> MappingId {
        if let Some(id) = self.maps.lookup(addr) {
            return id.clone();
        }
        if self.reload_maps() {
            if let Some(id) = self.maps.lookup(addr) {
                return id.clone();
            }
        }
        MappingId { name: "[unmapped]".into(), shared: false }
    }
}

#[derive(Default)]
pub struct Ledger {
    pub procs: HashMap<u32, Proc>,
    pub page_size: i64,
    /// Sizes of mms built under the watch, until their owner's first own change.
    new_mms: HashMap<u32, [i64; 4]>,
    /// Unseeded first deltas that had no seed and were dropped.
    pub unseeded_dropped: u64,
    /// The ring poll the records being fed now came from.
    pub batch_at: rss_trace::Poll,
}

impl Ledger {
    pub fn new() -> Ledger {
        // SAFETY: sysconf has no preconditions.
        let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as i64;
        Ledger { page_size, ..Default::default() }
    }

    /// A process watched from the start (a `-p` target and its tree, or the spawned command):
    /// its maps and rss seeds come from /proc.
    pub fn add_existing(&mut self, pid: u32) -> Option<()> {
        let f = procinfo::facts(pid)?;
        self.add(pid, f.ppid, f.comm, procinfo::maps(pid).unwrap_or_default(), procinfo::rss_seed(pid));
        Some(())
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

    fn proc_mut(&mut self, pid: u32) -> &mut Proc {
        proc_entry(&mut self.procs, pid)
    }

    pub fn on_rss(&mut self, e: &RssEvent) {
        let at = self.batch_at;
        if let Some(p) = self.apply_rss(e) {
            if let Some(kib) = p.ledger_rss_kib() {
                p.rss_trace.note(at, kib, p.own_pages);
            }
        }
    }

    /// Apply one rss change; the process it changed, if any.
    fn apply_rss(&mut self, e: &RssEvent) -> Option<&mut Proc> {
        let page = self.page_size;
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
        let p = proc_entry(&mut self.procs, e.hdr.tgid);
        let m = e.member as usize;
        if m >= 4 {
            return Some(p);
        }
        let unseeded = e.flags & rss_flags::UNSEEDED != 0;
        let idx = match p.mms.iter().position(|c| c.mm_id == e.mm_id) {
            Some(i) => i,
            None => {
                let c = match (unseeded, p.mms.is_empty(), p.seed) {
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
                let id = p.mapping_of(e.addr);
                p.own_pages[usize::from(id.shared)] += pages;
                p.interval.pages[m] += pages;
                let s = p.interval.by_mapping.entry(id).or_default();
                s.pages += pages;
                if e.flags & rss_flags::FIRST_OF_FAULT != 0 {
                    s.faults += 1;
                }
                if e.stack_id >= 0 {
                    let n = p.stacks.entry(e.stack_id).or_default();
                    if *n == 0 {
                        p.new_stacks.push(e.stack_id);
                    }
                    *n += pages;
                }
            }
            c => {
                p.own_pages[2] += pages;
                p.interval.other[(c as usize).min(5)] += pages;
            }
        }
        Some(p)
    }

    pub fn on_syscall(&mut self, e: &SyscallEvent) {
        let page = self.page_size as u64;
        let round = |len: u64| len.div_ceil(page) * page;
        let p = self.proc_mut(e.hdr.tgid);
        let a = e.args;
        match e.nr {
            nr::MMAP => {
                let (start, flags) = (e.ret as u64, a[3]);
                let end = start + round(a[1]);
                let shared = matches!(flags & MAP_SHARED_TYPE, 0x01 | 0x03);
                if flags & MAP_ANONYMOUS != 0 {
                    p.maps.map(start, end, MappingId { name: anon_name(start, shared), shared }, true);
                } else {
                    // A file mapping: /proc/PID/maps has its name. Force the re-read.
                    if !p.reload_maps() {
                        p.maps.map(start, end, MappingId { name: "[file]".into(), shared }, false);
                    }
                }
            }
            nr::MUNMAP => p.maps.unmap(a[0], a[0] + round(a[1])),
            nr::MREMAP => p.maps.remap(a[0], round(a[1]), e.ret as u64, round(a[2])),
            nr::BRK => p.maps.set_brk(e.ret as u64),
            _ => {}
        }
    }

    pub fn on_fork(&mut self, e: &ProcEvent) -> Record {
        debug_assert!(self.procs.get(&e.pid).is_none_or(|p| !p.alive), "a live pid forked again");
        let maps = self.procs.get(&e.ppid).map(|p| p.maps.clone()).unwrap_or_default();
        let comm = comm_str(&e.comm);
        // The kernel tracked the child's counters from zero (fork copy), so no seed is needed.
        self.procs.insert(e.pid, Proc::new(e.pid, e.ppid, comm.clone(), maps));
        Record::Proc { pid: e.pid, ppid: e.ppid, comm, event: "fork" }
    }

    pub fn on_exec(&mut self, e: &ProcEvent) -> Record {
        let comm = comm_str(&e.comm);
        let p = self.proc_mut(e.pid);
        p.comm = comm.clone();
        // The seed described the old image's mm; the kernel tracks the new one from zero.
        p.seed = None;
        let cur = p.cur_mm;
        p.mms.retain(|c| Some(c.mm_id) == cur);
        if !p.reload_maps() {
            p.maps = MappingMap::default();
        }
        Record::Proc { pid: e.pid, ppid: p.ppid, comm, event: "exec" }
    }

    /// The exit of a process; `None` if it was already seen gone (the /proc liveness check can
    /// beat the kernel's record).
    pub fn on_exit(&mut self, e: &ProcEvent) -> Option<Record> {
        let p = self.proc_mut(e.pid);
        p.exit_record_seen |= e.hdr.kind == EventKind::Exit as u32;
        if !p.alive {
            // The liveness check saw it gone first, when /proc no longer had its name: the
            // kernel's record has the name it exited under.
            if e.comm[0] != 0 && p.comm_at_exit_unknown {
                p.comm = comm_str(&e.comm);
                p.comm_at_exit_unknown = false;
            }
            return None;
        }
        p.alive = false;
        // It will not be read again: its trace is dead weight while it waits to be retired.
        p.rss_trace = RssTrace::default();
        // Its last name: prctl(PR_SET_NAME) makes no event. When the last thread out is the
        // leader, the record has it; else /proc has the zombie leader's name, as long as the
        // number is not already another process's; the exiting thread's own name is the
        // fallback.
        let named = e.comm[0] != 0;
        if named && e.hdr.tid == e.pid {
            p.comm = comm_str(&e.comm);
        } else if let Some(c) = procinfo::zombie_comm(e.pid) {
            p.comm = c;
        } else if named {
            p.comm = comm_str(&e.comm);
        } else {
            p.comm_at_exit_unknown = true;
        }
        Some(Record::Proc { pid: e.pid, ppid: p.ppid, comm: p.comm.clone(), event: "exit" })
    }

    /// Close an interval: `faults` holds the kernel's cumulative fault count per pid. Returns a
    /// faults record per process with activity.
    pub fn close_interval(&mut self, faults: &HashMap<u32, u64>, interval_s: f64) -> Vec<Record> {
        let mut out = Vec::new();
        let mut pids: Vec<u32> = self.procs.keys().copied().collect();
        pids.sort_unstable();
        for pid in pids {
            let p = self.procs.get_mut(&pid).expect("listed");
            if let Some(&n) = faults.get(&pid) {
                p.interval.faults = n.saturating_sub(p.kernel_faults);
                p.kernel_faults = n;
            }
            let a = std::mem::take(&mut p.interval);
            if p.alive {
                let decay = (-interval_s / MAPPING_RATE_TAU_S).exp();
                p.mapping_rate.retain(|_, r| {
                    *r *= decay;
                    *r >= 0.5
                });
                for (id, st) in &a.by_mapping {
                    if st.pages > 0 {
                        *p.mapping_rate.entry(id.clone()).or_default() += st.pages as f64;
                    }
                }
            } else if p.exit_record_seen {
                // Dead, no fault record of it still to come (they precede its exit record), and
                // its stacks resolved by now (the watch loop resolves them first): its maps and
                // growth rates are dead weight until it is retired. (The /proc liveness check
                // can see it gone while its last faults are still in the ring.)
                p.maps = MappingMap::default();
                p.mapping_rate = HashMap::new();
            }
            if a.is_empty() {
                continue;
            }
            p.total.merge(&a);
            if p.alive {
                // prctl(PR_SET_NAME) makes no event: refresh the name of the active ones.
                if let Some(c) = procinfo::comm(pid) {
                    p.comm = c;
                }
            }
            if a.faults == 0 && a.pages == [0; 4] {
                continue;
            }
            out.push(Record::Faults {
                pid,
                comm: p.comm.clone(),
                interval_s,
                faults: a.faults,
                pages: a.pages(),
                mappings: a.top(TOP_MAPPINGS),
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
        Some(summarize(&p))
    }

    pub fn summary(&self) -> Vec<ProcSummary> {
        let mut v: Vec<&Proc> = self.procs.values().collect();
        v.sort_by_key(|p| p.pid);
        v.into_iter().map(summarize).collect()
    }
}

/// The summary entry of one process.
fn summarize(p: &Proc) -> ProcSummary {
    ProcSummary {
        pid: p.pid,
        comm: p.comm.clone(),
        faults: p.total.faults,
        pages: p.total.pages(),
        other_pages: p.total.other.iter().sum(),
        causes: Causes {
            syscall: p.total.other[cause::SYSCALL as usize],
            exit: p.total.other[cause::EXIT as usize],
            remote: p.total.other[cause::REMOTE as usize],
            other: p.total.other[cause::OTHER as usize],
        },
        peak_uss_kib: p.peak_uss_kib,
        last_pss_kib: p.mem.as_ref().map_or(0, |m| m.pss_kib),
        mappings: p.total.top(TOP_MAPPINGS),
        leak: false,
        leak_rate_kib_s: None,
        stacks: Vec::new(),
    }
}

fn proc_entry(procs: &mut HashMap<u32, Proc>, pid: u32) -> &mut Proc {
    procs.entry(pid).or_insert_with(|| {
        // An event for a process we were not told about (its fork record was lost): learn
        // it from /proc.
        let f = procinfo::facts(pid);
        let (ppid, comm) = f.map(|f| (f.ppid, f.comm)).unwrap_or((0, String::from("?")));
        Proc::new(pid, ppid, comm, procinfo::maps(pid).unwrap_or_default())
    })
}

fn own_kib(own: rss_trace::Own, page: i64) -> (i64, i64, i64) {
    let kib = |pages: i64| pages * page / 1024;
    (kib(own[0]), kib(own[1]), kib(own[2]))
}

#[cfg(test)]
#[path = "ledger_tests.rs"]
mod tests;
