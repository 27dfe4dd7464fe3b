//! The smaps sampler: `/proc/PID/smaps_rollup` through procfs, turned into RSS/PSS/USS. Reads run
//! on tokio's blocking pool; a process that exits mid-read is skipped quietly.
use std::sync::atomic::{AtomicU64, Ordering};

use procfs::process::{MemoryMap, MemoryMaps, Process};

use crate::records::{MemStat, VmaStat};

/// A field of one smaps entry in KiB (procfs gives byte values), and its USS.
pub fn kib(m: &MemoryMap, key: &str) -> u64 {
    m.extension.map.get(key).copied().unwrap_or(0) / 1024
}

pub fn uss_kib(m: &MemoryMap) -> u64 {
    kib(m, "Private_Clean") + kib(m, "Private_Dirty")
}

/// RSS/PSS/USS from a parsed rollup.
pub fn mem_stat(rollup: &MemoryMaps) -> Option<MemStat> {
    let m = rollup.iter().next()?;
    let kib = |k: &str| kib(m, k);
    Some(MemStat {
        rss_kib: kib("Rss"),
        pss_kib: kib("Pss"),
        uss_kib: uss_kib(m),
        pss_anon_kib: kib("Pss_Anon"),
        pss_file_kib: kib("Pss_File"),
        pss_shmem_kib: kib("Pss_Shmem"),
        swap_kib: kib("Swap"),
        hugetlb_kib: kib("Shared_Hugetlb") + kib("Private_Hugetlb"),
        shared_hugetlb_kib: kib("Shared_Hugetlb"),
        private_hugetlb_kib: kib("Private_Hugetlb"),
    })
}

/// smaps_rollup reads done, and their total wall time in nanoseconds.
pub static READS: AtomicU64 = AtomicU64::new(0);
pub static READ_NS: AtomicU64 = AtomicU64::new(0);
/// The CPU time they took (the reading thread's: the page-table walks), what the budget holds.
pub static READ_CPU_NS: AtomicU64 = AtomicU64::new(0);

/// This thread's CPU time, ns.
pub fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid timespec to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
/// `--smaps-budget` (percent of one CPU, as f64 bits), for the summary.
static BUDGET_PCT: AtomicU64 = AtomicU64::new(0);

pub fn set_budget_pct(pct: f64) {
    BUDGET_PCT.store(pct.to_bits(), Ordering::Relaxed);
}

pub fn budget_pct() -> f64 {
    f64::from_bits(BUDGET_PCT.load(Ordering::Relaxed))
}

/// One read of `pid`'s /proc, counted in READS and READ_NS.
fn counted<T>(pid: u32, read: impl FnOnce(Process) -> procfs::ProcResult<T>) -> Option<T> {
    let (t, cpu) = (std::time::Instant::now(), thread_cpu_ns());
    let v = Process::new(pid as i32).ok().and_then(|p| read(p).ok());
    READS.fetch_add(1, Ordering::Relaxed);
    READ_NS.fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
    READ_CPU_NS.fetch_add(thread_cpu_ns().saturating_sub(cpu), Ordering::Relaxed);
    v
}

pub fn read(pid: u32) -> Option<MemStat> {
    mem_stat(&counted(pid, |p| p.smaps_rollup())?.memory_map_rollup)
}

/// The full smaps of `pid`, summed over the VMAs that overlap `ranges`: the kernel's view of
/// one mapping, read only for a pid whose leak is being reported.
pub fn read_vmas(pid: u32, ranges: &[(u64, u64)]) -> Option<VmaStat> {
    vma_stat(&counted(pid, |p| p.smaps())?, ranges)
}

pub fn vma_stat(maps: &MemoryMaps, ranges: &[(u64, u64)]) -> Option<VmaStat> {
    let mut st = VmaStat::default();
    for m in maps.iter().filter(|m| ranges.iter().any(|&(s, e)| m.address.0 < e && s < m.address.1)) {
        st.vmas += 1;
        st.size_kib += (m.address.1 - m.address.0) / 1024;
        st.rss_kib += kib(m, "Rss");
        st.pss_kib += kib(m, "Pss");
        st.uss_kib += uss_kib(m);
        st.swap_kib += kib(m, "Swap");
        st.hugetlb_kib += kib(m, "Shared_Hugetlb") + kib(m, "Private_Hugetlb");
    }
    (st.vmas > 0).then_some(st)
}

/// Pids read per blocking task.
const CHUNK: usize = 32;

/// What a sweep sends back: each chunk's readings (with the CPU seconds each took) as soon as
/// they are taken, with the instants the chunk's reads began and ended, so that they are
/// compared with what the ledger held in that window; then `Done`.
pub enum Swept {
    Chunk(std::time::Instant, std::time::Instant, Vec<(u32, MemStat, f64)>),
    Done,
}

/// One sweep over `pids` on the blocking pool, in chunks spread over `spread`, two chunks in
/// flight at most: a big tree does not turn into a burst of page-table walks.
pub async fn sweep(pids: Vec<u32>, spread: std::time::Duration, tx: tokio::sync::mpsc::Sender<Swept>) {
    let chunks: Vec<Vec<u32>> = pids.chunks(CHUNK).map(<[u32]>::to_vec).collect();
    let pause = spread / chunks.len().max(1) as u32;
    let mut in_flight = std::collections::VecDeque::new();
    let send = |r: Result<Swept, tokio::task::JoinError>| {
        let tx = tx.clone();
        async move {
            if let Ok(r) = r {
                let _ = tx.send(r).await;
            }
        }
    };
    for chunk in chunks {
        if in_flight.len() == 2 {
            let done: tokio::task::JoinHandle<Swept> = in_flight.pop_front().expect("two in flight");
            send(done.await).await;
            tokio::time::sleep(pause).await;
        }
        in_flight.push_back(tokio::task::spawn_blocking(move || {
            let t = std::time::Instant::now();
            // Priced in CPU time: what the budget holds (wall time adds waits for a busy CPU).
            let timed = |p: u32| {
                let cpu = thread_cpu_ns();
                read(p).map(|m| (p, m, thread_cpu_ns().saturating_sub(cpu) as f64 / 1e9))
            };
            let read = chunk.into_iter().filter_map(timed).collect();
            Swept::Chunk(t, std::time::Instant::now(), read)
        }));
    }
    for h in in_flight {
        send(h.await).await;
    }
    let _ = tx.send(Swept::Done).await;
}

#[cfg(test)]
mod tests {
    use procfs::FromBufRead;

    use super::*;

    const ROLLUP: &str = "\
55d0c0000000-7ffd5a5fe000 ---p 00000000 00:00 0                          [rollup]
Rss:              140680 kB
Pss:               70844 kB
Pss_Dirty:         68000 kB
Pss_Anon:          65536 kB
Pss_File:           1212 kB
Pss_Shmem:          4096 kB
Shared_Clean:       1200 kB
Shared_Dirty:      65536 kB
Private_Clean:       120 kB
Private_Dirty:     73824 kB
Referenced:       140680 kB
Anonymous:         73728 kB
KSM:                   0 kB
LazyFree:              0 kB
AnonHugePages:         0 kB
ShmemPmdMapped:        0 kB
FilePmdMapped:         0 kB
Shared_Hugetlb:     4096 kB
Private_Hugetlb:    2048 kB
Swap:                 16 kB
SwapPss:              16 kB
Locked:                0 kB
";

    #[test]
    fn parses_rollup_into_rss_pss_uss() {
        let maps = procfs::process::SmapsRollup::from_buf_read(ROLLUP.as_bytes()).unwrap();
        let m = mem_stat(&maps.memory_map_rollup).unwrap();
        assert_eq!(
            m,
            MemStat {
                rss_kib: 140680,
                pss_kib: 70844,
                uss_kib: 120 + 73824,
                pss_anon_kib: 65536,
                pss_file_kib: 1212,
                pss_shmem_kib: 4096,
                swap_kib: 16,
                hugetlb_kib: 6144,
                shared_hugetlb_kib: 4096,
                private_hugetlb_kib: 2048,
            }
        );
    }

    #[test]
    fn the_vmas_of_a_mapping_are_summed() {
        let text = "\
7f0000000000-7f0000400000 rw-p 00000000 00:00 0                          
Size:               4096 kB
Rss:                3072 kB
Pss:                3072 kB
Private_Clean:         0 kB
Private_Dirty:      3072 kB
Swap:                 64 kB
7f0000400000-7f0000500000 rw-s 00000000 00:01 7                          /dev/shm/seg
Size:               1024 kB
Rss:                1024 kB
Pss:                 512 kB
Shared_Dirty:       1024 kB
Private_Dirty:         0 kB
7f0000500000-7f0000600000 rw-p 00000000 00:00 0                          
Size:               1024 kB
Rss:                1024 kB
Pss:                1024 kB
Private_Dirty:      1024 kB
";
        let maps = procfs::process::MemoryMaps::from_buf_read(text.as_bytes()).unwrap();
        // Our anon mapping covers the first VMA and part of the third; the segment is apart.
        let st = vma_stat(&maps, &[(0x7f0000000000, 0x7f0000400000), (0x7f0000580000, 0x7f0000600000)]).unwrap();
        assert_eq!(
            st,
            VmaStat {
                vmas: 2,
                size_kib: 5120,
                rss_kib: 4096,
                pss_kib: 4096,
                uss_kib: 4096,
                swap_kib: 64,
                hugetlb_kib: 0
            }
        );
        let seg = vma_stat(&maps, &[(0x7f0000400000, 0x7f0000500000)]).unwrap();
        assert_eq!((seg.vmas, seg.pss_kib, seg.uss_kib), (1, 512, 0));
        assert!(vma_stat(&maps, &[(0x1000, 0x2000)]).is_none());
    }

    #[test]
    fn empty_rollup_is_none() {
        let maps = procfs::process::SmapsRollup::from_buf_read("".as_bytes()).unwrap();
        assert!(mem_stat(&maps.memory_map_rollup).is_none());
    }

    #[test]
    fn reads_own_process() {
        let m = read(std::process::id()).expect("own smaps_rollup");
        assert!(m.rss_kib > 0 && m.pss_kib > 0 && m.uss_kib > 0);
        assert!(read(u32::MAX / 2).is_none());
    }
}

#[cfg(test)]
mod fuzz {
    use procfs::FromBufRead;
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Arbitrary text as smaps_rollup: parsed or refused, never a panic.
        #[test]
        fn rollup_parser_never_panics(text in "\\PC{0,400}") {
            if let Ok(m) = procfs::process::SmapsRollup::from_buf_read(text.as_bytes()) {
                let _ = mem_stat(&m.memory_map_rollup);
            }
        }

        /// Rollup-shaped text with random keys and numbers.
        #[test]
        fn rollup_shaped_text(lines in proptest::collection::vec(("[A-Za-z_]{1,14}", 0u64..u64::MAX / 2048), 0..30)) {
            let mut text = String::from("00400000-7fff00000000 ---p 00000000 00:00 0   [rollup]\n");
            for (k, v) in &lines {
                text += &format!("{k}: {v} kB\n");
            }
            if let Ok(m) = procfs::process::SmapsRollup::from_buf_read(text.as_bytes()) {
                let _ = mem_stat(&m.memory_map_rollup);
            }
        }
    }
}
