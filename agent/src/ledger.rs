//! Attribution: every rss change the kernel joined with its cause lands here, per process and
//! per mapping. Fault-caused pages go to the mapping that holds the faulting address; other
//! causes (syscalls, exit teardown, reclaim) are kept apart. Mapping syscalls keep each
//! process's interval map current.
use std::collections::HashMap;

use agent_common::{cause, member, nr, rss_flags, ProcEvent, RssEvent, SyscallEvent};

use crate::{
    decode::comm_str,
    maps::{anon_name, MappingId, MappingMap},
    procinfo,
    record::{Causes, MappingStat, MemStat, Pages, ProcSummary, Record},
};

const MAP_SHARED_TYPE: u64 = 0x03;
const MAP_ANONYMOUS: u64 = 0x20;
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
    /// Times /proc/PID/maps was re-read because the event stream had not told us of a mapping.
    pub maps_reloads: u64,
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
            maps_reloads: 0,
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

    /// Re-read /proc/PID/maps. Only rss changes reach a lookup, and the kernel only changes rss
    /// for pages that are mapped, so a miss means our map is behind: re-reading is always right.
    fn reload_maps(&mut self) -> bool {
        self.maps_reloads += 1;
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
    pub fn add_existing(&mut self, pid: u32) -> Option<()> {
        let f = procinfo::facts(pid)?;
        self.add(
            pid,
            f.ppid,
            f.comm,
            procinfo::maps(pid).unwrap_or_default(),
            procinfo::rss_seed(pid),
        );
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

    /// The exit of a process; `None` if it was already seen gone (the /proc liveness check can
    /// beat the kernel's record).
    pub fn on_exit(&mut self, e: &ProcEvent) -> Option<Record> {
        let p = self.proc_mut(e.pid);
        if !p.alive {
            return None;
        }
        p.alive = false;
        // Its last name: prctl(PR_SET_NAME) makes no event. /proc still has the zombie's leader
        // name; the exiting thread's own name is the fallback.
        match procinfo::comm(e.pid) {
            Some(c) => p.comm = c,
            None if e.comm[0] != 0 => p.comm = comm_str(&e.comm),
            None => {}
        }
        Some(Record::Proc {
            pid: e.pid,
            ppid: p.ppid,
            comm: p.comm.clone(),
            event: "exit",
        })
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

#[cfg(test)]
mod tests {
    use agent_common::{EventHeader, EventKind};

    use super::*;

    /// A pid no test machine has, so /proc lookups find nothing.
    const PID: u32 = 0x3fff_fff0;
    const PAGE: i64 = 4096;

    fn ledger_with_maps() -> Ledger {
        let mut l = Ledger::new();
        let mut maps = MappingMap::default();
        maps.map(
            0x10_0000,
            0x20_0000,
            MappingId {
                name: "anon@0x100000".into(),
                shared: false,
            },
            true,
        );
        maps.map(
            0x40_0000,
            0x80_0000,
            MappingId {
                name: "/dev/shm/seg".into(),
                shared: true,
            },
            false,
        );
        l.add(PID, 1, "t".into(), maps, Some([PAGE * 10, PAGE * 20, 0, 0]));
        l
    }

    fn rss(member: u32, cause: u32, flags: u32, size: i64, delta: i64, addr: u64) -> RssEvent {
        RssEvent {
            hdr: EventHeader {
                kind: EventKind::Rss as u32,
                tgid: PID,
                tid: PID,
                _pad: 0,
                ts_ns: 0,
            },
            mm_id: 9,
            member,
            cause,
            flags,
            size,
            delta,
            addr,
            aux: 0,
        }
    }

    #[test]
    fn fault_pages_go_to_the_mapping_of_the_address() {
        let mut l = ledger_with_maps();
        for i in 0..8 {
            let f = rss_flags::FIRST_OF_FAULT;
            l.on_rss(&rss(
                member::ANON,
                cause::FAULT,
                f,
                PAGE * (21 + i),
                PAGE,
                0x10_0000 + i as u64 * 4096,
            ));
        }
        // One fault that maps four pages of a shared file (fault-around).
        l.on_rss(&rss(
            member::SHMEM,
            cause::FAULT,
            rss_flags::FIRST_OF_FAULT,
            PAGE * 4,
            PAGE * 4,
            0x40_1000,
        ));
        // Not a fault: munmap released two pages.
        l.on_rss(&rss(member::ANON, cause::SYSCALL, 0, PAGE * 27, -PAGE * 2, 0));
        let recs = l.close_interval(&HashMap::from([(PID, 9)]), 1.0);
        let Record::Faults {
            faults,
            pages,
            mappings,
            ..
        } = &recs[0]
        else {
            panic!("{recs:?}")
        };
        assert_eq!(*faults, 9);
        assert_eq!(
            *pages,
            Pages {
                anon: 8,
                file: 0,
                shmem: 4
            }
        );
        assert_eq!(
            mappings[0],
            MappingStat {
                mapping: "anon@0x100000".into(),
                shared: false,
                faults: 8,
                pages: 8
            }
        );
        assert_eq!(
            mappings[1],
            MappingStat {
                mapping: "/dev/shm/seg".into(),
                shared: true,
                faults: 1,
                pages: 4
            }
        );
        let p = &l.procs[&PID];
        assert_eq!(p.total.other[cause::SYSCALL as usize], -2);
        assert_eq!(
            p.rss[member::ANON as usize],
            PAGE * 27,
            "the ledger keeps the absolute counter"
        );
        // The next interval starts empty; the kernel count is cumulative.
        assert!(l.close_interval(&HashMap::from([(PID, 9)]), 1.0).is_empty());
    }

    #[test]
    fn unseeded_first_delta_uses_the_status_seed_or_is_dropped() {
        let mut l = ledger_with_maps();
        // The kernel had no previous size: delta = size. The seed says 20 anon pages before.
        l.on_rss(&rss(
            member::ANON,
            cause::FAULT,
            rss_flags::UNSEEDED,
            PAGE * 21,
            PAGE * 21,
            0x10_0000,
        ));
        assert_eq!(l.procs[&PID].interval.pages[member::ANON as usize], 1);
        // No seed (a process learned late): dropped and counted, never a bogus jump.
        l.procs.get_mut(&PID).unwrap().seed = None;
        l.on_rss(&rss(
            member::FILE,
            cause::FAULT,
            rss_flags::UNSEEDED,
            PAGE * 500,
            PAGE * 500,
            0x10_0000,
        ));
        assert_eq!(l.procs[&PID].interval.pages[member::FILE as usize], 0);
        assert_eq!(l.unseeded_dropped, 1);
    }

    #[test]
    fn munmap_then_fault_is_unmapped_and_fork_copies_maps() {
        let mut l = ledger_with_maps();
        let child = ProcEvent {
            hdr: EventHeader {
                kind: EventKind::Fork as u32,
                ..Default::default()
            },
            pid: PID + 1,
            ppid: PID,
            comm: *b"child\0\0\0\0\0\0\0\0\0\0\0",
        };
        let rec = l.on_fork(&child);
        assert_eq!(
            rec,
            Record::Proc {
                pid: PID + 1,
                ppid: PID,
                comm: "child".into(),
                event: "fork"
            }
        );
        let unmap = SyscallEvent {
            hdr: EventHeader {
                kind: EventKind::Syscall as u32,
                tgid: PID,
                ..Default::default()
            },
            nr: nr::MUNMAP,
            args: [0x10_0000, 0x10_0000, 0, 0, 0, 0],
            ret: 0,
        };
        l.on_syscall(&unmap);
        l.on_rss(&rss(member::ANON, cause::FAULT, 0, PAGE, PAGE, 0x10_0000));
        assert_eq!(l.procs[&PID].interval.top(5)[0].mapping, "[unmapped]");
        // The child still has the mapping it inherited.
        let mut e = rss(member::ANON, cause::FAULT, 0, PAGE, PAGE, 0x10_0000);
        e.hdr.tgid = PID + 1;
        l.on_rss(&e);
        assert_eq!(l.procs[&(PID + 1)].interval.top(5)[0].mapping, "anon@0x100000");
    }

    #[test]
    fn anon_mmap_event_names_the_new_region_and_exit_is_reported_once() {
        let mut l = ledger_with_maps();
        let mmap = SyscallEvent {
            hdr: EventHeader {
                kind: EventKind::Syscall as u32,
                tgid: PID,
                ..Default::default()
            },
            nr: nr::MMAP,
            args: [0, 8192, 3, (libc::MAP_SHARED | libc::MAP_ANONYMOUS) as u64, u64::MAX, 0],
            ret: 0x90_0000,
        };
        l.on_syscall(&mmap);
        l.on_rss(&rss(member::SHMEM, cause::FAULT, 0, PAGE, PAGE, 0x90_1000));
        let top = l.procs[&PID].interval.top(5);
        assert_eq!((top[0].mapping.as_str(), top[0].shared), ("shmem-anon@0x900000", true));
        let exit = ProcEvent {
            pid: PID,
            ..Default::default()
        };
        assert!(l.on_exit(&exit).is_some());
        assert!(l.on_exit(&exit).is_none());
        assert!(l.live_pids().is_empty());
    }
}
