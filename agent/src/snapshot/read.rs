//! Reading the processes of a snapshot, a few threads at once: `smaps_rollup` for the figures,
//! `stat` for the name, parent and start time, `cmdline`, the owner of `/proc/PID`; and, when
//! asked, the full `smaps` summed by mapping name. A process we may not read (another user's,
//! without root) or that is gone by the time we read it is skipped and counted; one without
//! memory (a kernel thread, a zombie) is skipped quietly, as smem does.
use std::{
    collections::BTreeMap,
    sync::atomic::{AtomicUsize, Ordering},
};

use procfs::{
    process::{MemoryMaps, Process},
    ProcError,
};
use serde::{Deserialize, Serialize};

use super::mem::{mapping_name, Mem};

/// One process of a snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proc {
    pub pid: u32,
    pub ppid: u32,
    pub comm: String,
    pub uid: u32,
    /// The owner's name (the uid's number when it has none).
    #[serde(default)]
    pub user: String,
    /// Clock ticks after boot (field 22 of /proc/PID/stat): with the pid, who this process is.
    pub start_time: u64,
    /// Its arguments joined by spaces (empty if it has none, or we could not read them).
    pub cmdline: String,
    #[serde(flatten)]
    pub mem: Mem,
    /// Its smaps summed by mapping name, when the snapshot read the full smaps (`-m`, `--save`).
    #[serde(skip)]
    pub maps: Vec<MapMem>,
}

/// One mapping name's VMAs in one process (or, summed, across processes).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapMem {
    pub mapping: String,
    pub vmas: u32,
    #[serde(flatten)]
    pub mem: Mem,
}

/// What reading one pid gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Read(Box<Proc>),
    /// No address space: a kernel thread or a zombie.
    NoMemory,
    /// Permission denied (another user's process, and we are not root).
    Denied,
    /// Gone before or while we read it.
    Gone,
}

/// The processes read, by pid, and how many were skipped.
#[derive(Debug, Default)]
pub struct Taken {
    pub procs: Vec<Proc>,
    pub denied: usize,
    pub gone: usize,
}

/// `flags` of /proc/PID/stat: a kernel thread.
const PF_KTHREAD: u32 = 0x0020_0000;

fn failed(e: ProcError) -> Outcome {
    match e {
        ProcError::PermissionDenied(_) => Outcome::Denied,
        _ => Outcome::Gone,
    }
}

/// Sum a process's VMAs by mapping name, sorted by name.
pub fn by_name(maps: &MemoryMaps) -> Vec<MapMem> {
    let mut by: BTreeMap<String, MapMem> = BTreeMap::new();
    for m in maps.iter() {
        let name = mapping_name(&m.pathname);
        let e = by.entry(name).or_insert_with_key(|k| MapMem { mapping: k.clone(), ..MapMem::default() });
        e.vmas += 1;
        e.mem += Mem::of(m);
    }
    by.into_values().collect()
}

/// What to read of each process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Depth {
    /// `smaps_rollup` only: the process's figures.
    Rollup,
    /// The full `smaps` only, its mappings; the process's figures are their sums, as smem's
    /// are (PSS lower than the rollup's by under 1 KiB per VMA: the kernel truncates each).
    Smaps,
    /// Both: the rollup's figures and the mappings (a saved snapshot).
    Both,
}

/// Read one process as deep as asked.
pub fn read_one(pid: u32, depth: Depth) -> Outcome {
    let Ok(p) = Process::new(pid as i32) else { return Outcome::Gone };
    let Ok(stat) = p.stat() else { return Outcome::Gone };
    // A kernel thread's or a zombie's smaps are empty, or an error (ESRCH) on recent kernels.
    if stat.flags & PF_KTHREAD != 0 || matches!(stat.state, 'Z' | 'X') {
        return Outcome::NoMemory;
    }
    let mem = if depth == Depth::Smaps {
        None
    } else {
        match p.smaps_rollup() {
            Ok(r) => match r.memory_map_rollup.iter().next() {
                Some(m) => Some(Mem::of(m)),
                None => return Outcome::NoMemory,
            },
            Err(e) => return failed(e),
        }
    };
    let maps = match depth {
        Depth::Rollup => Vec::new(),
        Depth::Smaps | Depth::Both => match p.smaps() {
            Ok(m) if !m.0.is_empty() => by_name(&m),
            Ok(_) => return Outcome::NoMemory,
            Err(e) => return failed(e),
        },
    };
    Outcome::Read(Box::new(Proc {
        pid,
        ppid: stat.ppid as u32,
        comm: stat.comm,
        uid: p.uid().unwrap_or(u32::MAX),
        user: String::new(),
        start_time: stat.starttime,
        cmdline: p.cmdline().map(|a| a.join(" ")).unwrap_or_default(),
        mem: mem.unwrap_or_else(|| maps.iter().map(|m| m.mem).sum()),
        maps,
    }))
}

/// How many threads read at once: one per CPU, at most 8.
fn threads(pids: usize) -> usize {
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    cpus.clamp(1, 8).min(pids).max(1)
}

/// Read `pids` on a few threads (each takes the next pid from a shared counter).
pub fn read_all(pids: &[u32], depth: Depth) -> Taken {
    let next = AtomicUsize::new(0);
    let work = || {
        let mut out = Vec::new();
        while let Some(&pid) = pids.get(next.fetch_add(1, Ordering::Relaxed)) {
            out.push(read_one(pid, depth));
        }
        out
    };
    let outcomes: Vec<Outcome> = std::thread::scope(|s| {
        let workers: Vec<_> = (1..threads(pids.len())).map(|_| s.spawn(work)).collect();
        let mut all = work();
        for w in workers {
            all.extend(w.join().expect("a snapshot reader thread panicked"));
        }
        all
    });
    tally(outcomes)
}

/// The processes read, sorted by pid, and the counts of those skipped.
pub fn tally(outcomes: Vec<Outcome>) -> Taken {
    let mut t = Taken::default();
    for o in outcomes {
        match o {
            Outcome::Read(p) => t.procs.push(*p),
            Outcome::NoMemory => {}
            Outcome::Denied => t.denied += 1,
            Outcome::Gone => t.gone += 1,
        }
    }
    t.procs.sort_by_key(|p| p.pid);
    t
}

#[cfg(test)]
mod tests {
    use procfs::FromBufRead;

    use super::*;

    #[test]
    fn vmas_are_summed_by_name() {
        let text = "\
00400000-00401000 r-xp 00000000 08:01 12 /usr/bin/app
Rss:                   4 kB
Pss:                   2 kB
Shared_Clean:          4 kB
00600000-00601000 rw-p 00001000 08:01 12 /usr/bin/app
Rss:                   4 kB
Pss:                   4 kB
Private_Dirty:         4 kB
7f0000000000-7f0000100000 rw-p 00000000 00:00 0 
Rss:                1024 kB
Pss:                1024 kB
Private_Dirty:      1024 kB
7f0000200000-7f0000300000 rw-p 00000000 00:00 0 
Rss:                   8 kB
Pss:                   8 kB
Private_Clean:         8 kB
Swap:                 12 kB
";
        let maps = MemoryMaps::from_buf_read(text.as_bytes()).unwrap();
        let by = by_name(&maps);
        assert_eq!(
            by,
            vec![
                MapMem {
                    mapping: "/usr/bin/app".into(),
                    vmas: 2,
                    mem: Mem { rss_kib: 8, pss_kib: 6, uss_kib: 4, ..Mem::default() }
                },
                MapMem {
                    mapping: "<anonymous>".into(),
                    vmas: 2,
                    mem: Mem { rss_kib: 1032, pss_kib: 1032, uss_kib: 1032, swap_kib: 12, hugetlb_kib: 0 }
                },
            ]
        );
    }

    #[test]
    fn skipped_processes_are_counted_and_the_rest_sorted_by_pid() {
        let p = |pid| Outcome::Read(Box::new(Proc { pid, ..Proc::default() }));
        let t = tally(vec![p(30), Outcome::Denied, Outcome::NoMemory, p(7), Outcome::Gone, Outcome::Denied]);
        assert_eq!(t.procs.iter().map(|p| p.pid).collect::<Vec<_>>(), [7, 30]);
        assert_eq!((t.denied, t.gone), (2, 1));
    }

    #[test]
    fn reads_itself_a_free_pid_is_gone_a_kernel_thread_has_no_memory() {
        let me = std::process::id();
        let Outcome::Read(p) = read_one(me, Depth::Both) else { panic!("own process unreadable") };
        assert!(p.mem.rss_kib > 0 && p.mem.pss_kib > 0 && p.mem.uss_kib > 0 && p.start_time > 0);
        assert!(!p.cmdline.is_empty() && !p.maps.is_empty());
        // The mappings add up to the rollup, give or take what moved between the two reads.
        let rss: u64 = p.maps.iter().map(|m| m.mem.rss_kib).sum();
        assert!(rss.abs_diff(p.mem.rss_kib) < p.mem.rss_kib / 4, "{rss} vs {}", p.mem.rss_kib);
        let Outcome::Read(q) = read_one(me, Depth::Smaps) else { panic!("own process unreadable") };
        assert_eq!(q.mem.rss_kib, q.maps.iter().map(|m| m.mem.rss_kib).sum::<u64>());
        assert_eq!(read_one(0x3fff_fff0, Depth::Rollup), Outcome::Gone);
        // kthreadd is pid 2 where there is a kernel (not in every container's pid namespace).
        if crate::proc_facts::comm(2).as_deref() == Some("kthreadd") {
            assert_eq!(read_one(2, Depth::Rollup), Outcome::NoMemory);
        }
        let t = read_all(&[me, 0x3fff_fff0, me], Depth::Rollup);
        assert_eq!((t.procs.len(), t.gone), (2, 1));
    }
}
