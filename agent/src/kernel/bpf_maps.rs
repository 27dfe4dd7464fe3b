//! Userspace handles on the kernel-side maps: the watched set, fault counters, loss counters,
//! and the per-mm state to forget once a process is gone.
use std::collections::HashMap as StdHashMap;

use agent_common::{counter, last_size_key, names, RssEvent, TaskSlot};
use aya::{
    maps::{Array, HashMap, MapData, PerCpuArray, PerCpuHashMap},
    Ebpf,
};

pub struct BpfMaps {
    watched: HashMap<MapData, u32, u32>,
    /// Userspace's watch-set generation (`WATCH_GEN[1]`), bumped after each insert into
    /// `watched`: the programs' cached "not watched" answers from before it no longer hold.
    watch_gen: (Array<MapData, u64>, u64),
    faults: PerCpuHashMap<MapData, u32, u64>,
    counters: PerCpuArray<MapData, u64>,
    mm_owner: HashMap<MapData, u32, u32>,
    /// The kernel's last sizes, kept with --stacks only (to take stacks of page-adding faults).
    last_size: HashMap<MapData, u64, i64>,
    /// Sizes -> deltas of the rss records, in ring order.
    deltas: super::deltas::Deltas,
    tasks: HashMap<MapData, u32, TaskSlot>,
}

fn take<T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>>(ebpf: &mut Ebpf, name: &str) -> anyhow::Result<T> {
    let map = ebpf.take_map(name).ok_or_else(|| anyhow::anyhow!("map {name} missing from the eBPF object"))?;
    Ok(T::try_from(map)?)
}

impl BpfMaps {
    /// As `Ledger::shrink`.
    pub fn shrink(&mut self) {
        self.deltas.shrink();
    }

    pub fn take(ebpf: &mut Ebpf) -> anyhow::Result<BpfMaps> {
        Ok(BpfMaps {
            watched: take(ebpf, names::WATCHED)?,
            watch_gen: (take(ebpf, names::WATCH_GEN)?, 0),
            faults: take(ebpf, names::FAULTS)?,
            counters: take(ebpf, names::COUNTERS)?,
            mm_owner: take(ebpf, names::MM_OWNER)?,
            last_size: take(ebpf, names::LAST_SIZE)?,
            deltas: Default::default(),
            tasks: take(ebpf, names::TASKS)?,
        })
    }

    /// An rss record's delta from its size (see `deltas.rs`); false: the counter did not move.
    /// `fix`: a correction record to apply too, when this one repaired a race.
    pub fn rss_delta(&mut self, e: &mut RssEvent, fix: &mut Option<RssEvent>) -> bool {
        self.deltas.apply(e, fix)
    }

    pub fn watch(&mut self, pid: u32) -> anyhow::Result<()> {
        self.watched.insert(pid, 1, 0)?;
        let (map, gen) = &mut self.watch_gen;
        if let Err(e) = map.set(1, *gen + 1, 0) {
            // Not watched after all: a cached "not watched" could hide it.
            let _ = self.watched.remove(&pid);
            return Err(e.into());
        }
        *gen += 1;
        Ok(())
    }

    /// Cumulative user faults per watched pid: its exited threads' (summed over CPUs) plus its
    /// live threads' own counts.
    pub fn faults(&self) -> StdHashMap<u32, u64> {
        let mut out: StdHashMap<u32, u64> =
            self.faults.iter().filter_map(Result::ok).map(|(pid, per_cpu)| (pid, per_cpu.iter().sum())).collect();
        for (_, slot) in self.tasks.iter().filter_map(Result::ok) {
            *out.entry(slot.tgid).or_default() += slot.faults;
        }
        out
    }

    /// Counter values (index `agent_common::counter::*`), summed over CPUs.
    pub fn counters(&self) -> [u64; counter::N as usize] {
        let mut out = [0; counter::N as usize];
        for (i, o) in out.iter_mut().enumerate() {
            if let Ok(v) = self.counters.get(&(i as u32), 0) {
                *o = v.iter().sum();
            }
        }
        out
    }

    /// Read and drop the fault counter of a process that exited, before its pid number can
    /// be reused.
    pub fn take_faults(&mut self, pid: u32) -> Option<u64> {
        let n = self.faults.get(&pid, 0).ok().map(|v| v.iter().sum());
        let _ = self.faults.remove(&pid);
        n
    }

    /// Forget a process that exited: its watched entry and its mms' state (its fault count was
    /// taken at exit by `take_faults`).
    pub fn forget(&mut self, pid: u32, mm_ids: &[u32]) {
        let _ = self.watched.remove(&pid);
        self.forget_mms(pid, mm_ids);
    }

    /// Drop the thread slots of `tgid`, a process that stays alive but is no longer watched
    /// (`--cgroup`: it left): a thread with a slot is taken for a watched one.
    pub fn forget_tasks(&mut self, tgid: u32) {
        let tids: Vec<u32> =
            self.tasks.iter().filter_map(Result::ok).filter(|(_, s)| s.tgid == tgid).map(|(tid, _)| tid).collect();
        for tid in tids {
            let _ = self.tasks.remove(&tid);
        }
    }

    /// Forget the state of mms `pid` owned and no longer runs on (left at exec, or at exit):
    /// a freed mm's id is soon another process's, whose changes would be charged to `pid`.
    pub fn forget_mms(&mut self, pid: u32, mm_ids: &[u32]) {
        for &mm in mm_ids {
            if self.mm_owner.get(&mm, 0).is_ok_and(|owner| owner == pid) {
                let _ = self.mm_owner.remove(&mm);
                for m in 0..4 {
                    let _ = self.last_size.remove(&last_size_key(mm, m));
                }
                self.deltas.forget(mm);
            }
        }
    }
}
