//! Shmem pages each watched process created, counted in the kernel (`agent-ebpf/src/shmem_new.rs`
//! on `memcg:mod_memcg_lruvec_state`): the growth of a shared segment without an smaps read.
//! `NR_SHMEM`'s value comes from the kernel's BTF (`enum node_stat_item`); without it, or without
//! the tracepoint, shared growth is seen in smaps readings only (said in the `start` record).
use std::collections::HashMap;

use agent_common::names;
use aya::{
    maps::{MapData, PerCpuHashMap},
    programs::{trace_point::TracePointLinkId, TracePoint},
    Ebpf,
};

use super::btf::Btf;

/// The program's name in the object (and in the loader's hook table), and its tracepoint.
pub const PROGRAM: &str = "shmem_new";
const CATEGORY: &str = "memcg";
const NAME: &str = "mod_memcg_lruvec_state";

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

/// Sweeps with no watched process mapping anything shared before the program is detached.
const DETACH_AFTER_SWEEPS: u32 = 5;

/// The SHMEM_PAGES map: tgid -> net shmem pages it created, per CPU; and the program's link
/// while it is attached.
pub struct ShmemCount {
    map: PerCpuHashMap<MapData, u32, i64>,
    link: Option<TracePointLinkId>,
    /// Sweeps in a row that found nothing shared mapped.
    idle: u32,
}

impl ShmemCount {
    /// The map, when the program was attached (`hooks` holds the attached tracepoints' names).
    pub fn take(ebpf: &mut Ebpf, hooks: &[String]) -> Option<ShmemCount> {
        if !hooks.iter().any(|h| h == NAME) {
            return None;
        }
        let map = ebpf.take_map(names::SHMEM_PAGES)?;
        PerCpuHashMap::try_from(map).ok().map(|map| ShmemCount { map, link: None, idle: 0 })
    }

    /// The tracepoint fires for every memcg statistic of every task (~4.4 times per private
    /// anon fault here): attached only while a watched process maps something shared (its
    /// pages are the only ones it counts), detached after a few sweeps without.
    pub fn attach_while(&mut self, shared_mapped: bool, ebpf: Option<&mut Ebpf>) {
        self.idle = if shared_mapped { 0 } else { self.idle + 1 };
        let want = shared_mapped || (self.link.is_some() && self.idle < DETACH_AFTER_SWEEPS);
        if want == self.link.is_some() {
            return;
        }
        let Some(prog) = ebpf.and_then(|e| e.program_mut(PROGRAM)).and_then(|p| <&mut TracePoint>::try_from(p).ok())
        else {
            return;
        };
        match self.link.take() {
            Some(link) => {
                let _ = prog.detach(link);
            }
            None => match prog.attach(CATEGORY, NAME) {
                Ok(link) => self.link = Some(link),
                Err(e) => log::warn!("attaching {CATEGORY}:{NAME} failed ({e}): {FALLBACK}"),
            },
        }
    }

    /// The program is attached now.
    pub fn attached(&self) -> bool {
        self.link.is_some()
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
