//! Attribution: every rss change the kernel joined with its cause lands here, per process and
//! per mapping. Fault-caused pages go to the mapping that holds the faulting address; other
//! causes (syscalls, exit teardown, reclaim) are kept apart. Mapping syscalls keep each
//! process's interval map current.
use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use agent_common::{cause, member, nr, rss_flags, ProcEvent, RssEvent, SyscallEvent};

use crate::{
    decode::comm_str,
    maps::{anon_name, MappingId, MappingMap},
    procinfo,
    record::{Causes, MappingStat, MemStat, Pages, ProcSummary, Record},
};

const MAP_SHARED_TYPE: u64 = 0x03;
const MAP_ANONYMOUS: u64 = 0x20;
/// How often a process's maps may be re-read after a lookup miss.
const RELOAD_EVERY: Duration = Duration::from_millis(50);
/// Top mappings per faults record.
pub const TOP_MAPPINGS: usize = 5;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MapStat {
    pub faults: u64,
    pub pages: i64,
}

/// What one process did over some span (an interval, or the whole run).
#[derive(Clone, Debug, Default)]
pub struct Activity {
    pub faults: u64,
    /// Fault-caused pages per rss member (FILE, ANON, SWAPENTS, SHMEM).
    pub pages: [i64; 4],
    pub by_mapping: HashMap<MappingId, MapStat>,
    /// Net pages from causes other than faults, indexed by `agent_common::cause`.
    pub other: [i64; 6],
}

impl Activity {
    fn is_empty(&self) -> bool {
        self.faults == 0 && self.pages == [0; 4] && self.other == [0; 6]
    }
    fn merge(&mut self, o: &Activity) {
        self.faults += o.faults;
        for i in 0..4 {
            self.pages[i] += o.pages[i];
        }
        for i in 0..6 {
            self.other[i] += o.other[i];
        }
        for (k, v) in &o.by_mapping {
            let e = self.by_mapping.entry(k.clone()).or_default();
            e.faults += v.faults;
            e.pages += v.pages;
        }
    }
    pub fn pages(&self) -> Pages {
        Pages {
            anon: self.pages[member::ANON as usize],
            file: self.pages[member::FILE as usize],
            shmem: self.pages[member::SHMEM as usize],
        }
    }
    pub fn top(&self, n: usize) -> Vec<MappingStat> {
        let mut v: Vec<_> = self.by_mapping.iter().collect();
        v.sort_by(|a, b| {
            b.1.pages
                .cmp(&a.1.pages)
                .then(b.1.faults.cmp(&a.1.faults))
                .then(a.0.cmp(b.0))
        });
        v.into_iter()
            .take(n)
            .map(|(id, s)| MappingStat {
                mapping: id.name.to_string(),
                shared: id.shared,
                faults: s.faults,
                pages: s.pages,
            })
            .collect()
    }
}

pub struct Proc {
    pub pid: u32,
    pub ppid: u32,
    pub comm: String,
    pub alive: bool,
    maps: MappingMap,
    maps_read: Option<Instant>,
    /// Bytes per member at the watch start, for the first (unseeded) kernel delta.
    seed: Option<[i64; 4]>,
    pub mm_ids: Vec<u32>,
    /// The rss ledger: last absolute counter per member, in bytes.
    pub rss: [i64; 4],
    kernel_faults: u64,
    pub interval: Activity,
    pub total: Activity,
    pub mem: Option<MemStat>,
    pub peak_uss_kib: u64,
}

impl Proc {
    fn new(pid: u32, ppid: u32, comm: String, maps: MappingMap) -> Proc {
        Proc {
            pid,
            ppid,
            comm,
            alive: true,
            maps,
            maps_read: None,
            seed: None,
            mm_ids: Vec::new(),
            rss: [0; 4],
            kernel_faults: 0,
            interval: Activity::default(),
            total: Activity::default(),
            mem: None,
            peak_uss_kib: 0,
        }
    }

    fn reload_maps(&mut self) -> bool {
        if self.maps_read.is_some_and(|t| t.elapsed() < RELOAD_EVERY) {
            return false;
        }
        self.maps_read = Some(Instant::now());
        match procinfo::maps(self.pid) {
            Some(m) => {
                self.maps = m;
                true
            }
            None => false,
        }
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
        MappingId {
            name: "[unmapped]".into(),
            shared: false,
        }
    }
}

#[derive(Default)]
pub struct Ledger {
    pub procs: HashMap<u32, Proc>,
    page_size: i64,
    /// Unseeded first deltas that had no seed and were dropped.
    pub unseeded_dropped: u64,
}

impl Ledger {
    pub fn new() -> Ledger {
        // SAFETY: sysconf has no preconditions.
        let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as i64;
        Ledger {
            page_size,
            ..Default::default()
        }
    }

    /// A process watched from the start (a `-p` target and its tree, or the spawned command):
    /// its maps and rss seeds come from /proc.
    pub fn add_existing(&mut self, pid: u32) -> Option<Record> {
        let f = procinfo::facts(pid)?;
        let mut p = Proc::new(pid, f.ppid, f.comm, procinfo::maps(pid).unwrap_or_default());
        p.seed = procinfo::rss_seed(pid);
        let rec = Record::Proc {
            pid,
            ppid: p.ppid,
            comm: p.comm.clone(),
            event: "watch",
        };
        self.procs.insert(pid, p);
        Some(rec)
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
        let page = self.page_size;
        let p = proc_entry(&mut self.procs, e.hdr.tgid);
        if !p.mm_ids.contains(&e.mm_id) {
            p.mm_ids.push(e.mm_id);
        }
        let m = e.member as usize;
        if m >= 4 {
            return;
        }
        let delta = if e.flags & rss_flags::UNSEEDED != 0 {
            match p.seed {
                Some(seed) => e.size - seed[m],
                None => {
                    p.rss[m] = e.size;
                    self.unseeded_dropped += 1;
                    return;
                }
            }
        } else {
            e.delta
        };
        p.rss[m] = e.size;
        let pages = delta / page;
        if e.member == member::SWAPENTS {
            return;
        }
        match e.cause {
            cause::FAULT | cause::KERNEL_FAULT => {
                let id = p.mapping_of(e.addr);
                p.interval.pages[m] += pages;
                let s = p.interval.by_mapping.entry(id).or_default();
                s.pages += pages;
                if e.flags & rss_flags::FIRST_OF_FAULT != 0 {
                    s.faults += 1;
                }
            }
            c => p.interval.other[(c as usize).min(5)] += pages,
        }
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
                    p.maps.map(
                        start,
                        end,
                        MappingId {
                            name: anon_name(start, shared),
                            shared,
                        },
                        true,
                    );
                } else {
                    // A file mapping: /proc/PID/maps has its name. Force the re-read.
                    p.maps_read = None;
                    if !p.reload_maps() {
                        p.maps.map(
                            start,
                            end,
                            MappingId {
                                name: "[file]".into(),
                                shared,
                            },
                            false,
                        );
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
        let maps = self.procs.get(&e.ppid).map(|p| p.maps.clone()).unwrap_or_default();
        let comm = comm_str(&e.comm);
        // The kernel tracked the child's counters from zero (fork copy), so no seed is needed.
        self.procs.insert(e.pid, Proc::new(e.pid, e.ppid, comm.clone(), maps));
        Record::Proc {
            pid: e.pid,
            ppid: e.ppid,
            comm,
            event: "fork",
        }
    }

    pub fn on_exec(&mut self, e: &ProcEvent) -> Record {
        let comm = comm_str(&e.comm);
        let p = self.proc_mut(e.pid);
        p.comm = comm.clone();
        // The seed described the old image's mm; the kernel tracks the new one from zero.
        p.seed = None;
        p.maps_read = None;
        if !p.reload_maps() {
            p.maps = MappingMap::default();
        }
        Record::Proc {
            pid: e.pid,
            ppid: p.ppid,
            comm,
            event: "exec",
        }
    }

    pub fn on_exit(&mut self, e: &ProcEvent) -> Record {
        let p = self.proc_mut(e.pid);
        p.alive = false;
        // Its last name: prctl(PR_SET_NAME) makes no event. /proc still has the zombie's leader
        // name; the exiting thread's own name is the fallback.
        match procinfo::comm(e.pid) {
            Some(c) => p.comm = c,
            None if e.comm[0] != 0 => p.comm = comm_str(&e.comm),
            None => {}
        }
        Record::Proc {
            pid: e.pid,
            ppid: p.ppid,
            comm: p.comm.clone(),
            event: "exit",
        }
    }

    pub fn on_mem(&mut self, pid: u32, sweep: u64, mem: MemStat) -> Option<Record> {
        let p = self.procs.get_mut(&pid)?;
        p.peak_uss_kib = p.peak_uss_kib.max(mem.uss_kib);
        p.mem = Some(mem.clone());
        Some(Record::Mem {
            pid,
            comm: p.comm.clone(),
            sweep,
            mem,
        })
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

    /// Processes that exited, for the caller to forget in the kernel maps; they stay in the
    /// ledger for the summary.
    pub fn exited(&self) -> impl Iterator<Item = &Proc> {
        self.procs.values().filter(|p| !p.alive)
    }

    pub fn summary(&self) -> Vec<ProcSummary> {
        let mut v: Vec<&Proc> = self.procs.values().collect();
        v.sort_by_key(|p| p.pid);
        v.into_iter()
            .map(|p| ProcSummary {
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
            })
            .collect()
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
