//! Shmem pages each watched process created, counted in the kernel (`agent-ebpf/src/shmem_new.rs`
//! on `memcg:mod_memcg_lruvec_state`): the growth of a shared segment without an smaps read.
//! `NR_SHMEM`'s value comes from the kernel's BTF (`enum node_stat_item`); without it, or without
//! the tracepoint, shared growth is seen in smaps readings only (said in the `start` record).
use std::collections::HashMap;

use agent_common::names;
use aya::{
    maps::{MapData, PerCpuHashMap},
    Ebpf,
};

use super::btf::Btf;

/// The program's name in the object (and in the loader's hook table).
pub const PROGRAM: &str = "shmem_new";

/// What a `start` record's `missing_hooks` says when the count is off.
pub const FALLBACK: &str = "shared-segment growth is seen in smaps readings only";

/// The program reads bytes 8..24 of the record (the tracepoint's whole record here: a program
/// that reads past a tracepoint's record is refused at attach, EACCES).
pub fn offsets_ok(offsets: &[(&str, u32)]) -> bool {
    offsets.iter().all(|&(_, o)| (8..24).contains(&o) && o % 4 == 0)
}

/// `NR_SHMEM` of this kernel's `enum node_stat_item`, or why it is unknown.
pub fn nr_shmem(btf: Option<&Btf>) -> Result<u32, String> {
    let btf = btf.ok_or("no kernel BTF (/sys/kernel/btf/vmlinux)")?;
    let v = btf.enum_value("NR_SHMEM").ok_or("NR_SHMEM is not in the kernel's BTF")?;
    u32::try_from(v).map_err(|_| format!("NR_SHMEM is {v} in the kernel's BTF"))
}

/// The SHMEM_PAGES map: tgid -> net shmem pages it created, per CPU.
pub struct ShmemCount {
    map: PerCpuHashMap<MapData, u32, i64>,
}

impl ShmemCount {
    /// The map, when the program was attached (`hooks` holds the attached tracepoints' names).
    pub fn take(ebpf: &mut Ebpf, hooks: &[String]) -> Option<ShmemCount> {
        if !hooks.iter().any(|h| h == "mod_memcg_lruvec_state") {
            return None;
        }
        let map = ebpf.take_map(names::SHMEM_PAGES)?;
        PerCpuHashMap::try_from(map).ok().map(|map| ShmemCount { map })
    }

    /// Net shmem pages created so far by each pid that created any.
    pub fn pages(&self) -> HashMap<u32, i64> {
        self.map.iter().filter_map(Result::ok).map(|(pid, per_cpu)| (pid, per_cpu.iter().sum())).collect()
    }

    /// Forget a process that is gone (its pid number can be reused).
    pub fn forget(&mut self, pid: u32) {
        let _ = self.map.remove(&pid);
    }
}
