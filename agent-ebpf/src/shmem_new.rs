//! `memcg:mod_memcg_lruvec_state`: shmem pages a watched process brought into existence. When a
//! new shmem page is charged (first touch of a segment's page, a tmpfs write) the kernel adds to
//! `NR_SHMEM` in the task that created it, and takes it back in the task that frees it. Summed per
//! tgid in SHMEM_PAGES: "pages this pid created in shared segments", net of those it tore down.
//!
//! The tracepoint fires for every memcg statistic (~3.8 times per private anon fault here), for
//! every task on the machine: the item test comes first, before any map lookup.
use aya_ebpf::{
    macros::{map, tracepoint},
    maps::PerCpuHashMap,
    programs::TracePointContext,
};

use crate::state::{g, is_watched, pid_tgid};

/// tgid -> net shmem pages it created (per CPU; userspace sums and forgets exited pids).
#[map]
pub static SHMEM_PAGES: PerCpuHashMap<u32, i64> = PerCpuHashMap::with_max_entries(65536, 0);

/// Tracepoint field offsets (from tracefs) and `NR_SHMEM`'s value in `enum node_stat_item`
/// (from the kernel's BTF). All set by the loader; `u32::MAX` matches no item.
#[unsafe(no_mangle)]
pub static MEMCG_ITEM: u32 = 16;
#[unsafe(no_mangle)]
pub static MEMCG_VAL: u32 = 20;
#[unsafe(no_mangle)]
pub static NR_SHMEM: u32 = u32::MAX;

#[tracepoint]
pub fn shmem_new(ctx: TracePointContext) -> u32 {
    // Direct loads of bytes 8..24 (the whole record: a program that reads past it is refused
    // at attach); the loader checks that both fields lie there.
    let p = aya_ebpf::EbpfContext::as_ptr(&ctx) as *const u64;
    let words = unsafe { [core::ptr::read_volatile(p.add(1)), core::ptr::read_volatile(p.add(2))] };
    let at = |off: &'static u32| {
        let o = g(off);
        let w = if o < 16 { words[0] } else { words[1] };
        (w >> ((o & 4) * 8)) as u32
    };
    if at(&MEMCG_ITEM) != unsafe { core::ptr::read_volatile(&NR_SHMEM) } {
        return 0;
    }
    let val = at(&MEMCG_VAL) as i32 as i64;
    let (tgid, _) = pid_tgid();
    match SHMEM_PAGES.get_ptr_mut(tgid) {
        // Per-CPU: no atomic needed.
        Some(n) => unsafe { *n += val },
        None if is_watched(tgid) => {
            let _ = SHMEM_PAGES.insert(tgid, val, 0);
        }
        None => {}
    }
    0
}
