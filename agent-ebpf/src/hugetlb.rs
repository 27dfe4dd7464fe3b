//! hugetlb pages, which never fire `kmem:rss_stat`: after a user fault that changed no rss
//! counter, read the mm's `hugetlb_usage` (base pages; the counter `/proc/PID/status`
//! HugetlbPages shows) and send it when it moved since this process's last look.
//!
//! Called from the fault entry of a watched task whose previous fault (on a page that was not
//! present) made no rss change (`TaskSlot::quiet`): there is no fault-exit tracepoint, so the
//! fault that mapped the page is known at the next one, and its address is still in the slot.
//! A fault that adds an rss page (the fault storm's every fault) clears `quiet` in `rss.rs`, so
//! those pay one test and branch. The quiet ones that are not hugetlb (a read of the zero page,
//! a fault another thread already served) pay the two kernel reads, and a lookup once some
//! watched process has had hugetlb pages (`HUGETLB_ANY`).
//!
//! A global function: the verifier checks it once, and the fault program's image stays small.
use agent_common::{counter, EventHeader, EventKind, HugetlbEvent};
use aya_ebpf::{
    helpers::{bpf_get_current_task, bpf_probe_read_kernel},
    macros::map,
    maps::{Array, LruHashMap},
};

use crate::{
    exec::TASK_MM,
    state::{count, g, submit_flags, EVENTS},
};

/// `mm_struct.hugetlb_usage`'s offset from the kernel's BTF; 0: unknown (no hugetlb records).
#[unsafe(no_mangle)]
pub static MM_HUGETLB_USAGE: u32 = 0;

/// The last `hugetlb_usage` seen in one of a process's faults, and the mm it was read from.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Seen {
    mm: usize,
    pages: i64,
}

/// 1 once a fault of a watched process has read a nonzero `hugetlb_usage` (never reset). Until
/// then no HUGETLB_SEEN entry holds a nonzero count, so a quiet fault that reads 0 (a read of the
/// zero page, on a host that maps no hugetlb pages) has nothing to send and skips the lookup.
#[map]
static HUGETLB_ANY: Array<u32> = Array::with_max_entries(1, 0);

/// tgid -> the last counter seen in its faults. Keyed by tgid, held with its mm: after an
/// exec (a new mm) the old value does not count; `exit.rs` drops the entry when the group
/// dies, so a reused pid starts afresh (LRU: a bound, should an exit be missed).
#[map]
pub static HUGETLB_SEEN: LruHashMap<u32, Seen> = LruHashMap::with_max_entries(65536, 0);

/// The previous fault of `tid` (at `addr`) changed no rss counter: did it map hugetlb pages?
#[inline(never)]
#[unsafe(no_mangle)]
pub extern "C" fn hugetlb_after_quiet_fault(tgid: u32, tid: u32, addr: u64) -> u32 {
    let (off, task_mm) = (g(&MM_HUGETLB_USAGE), g(&TASK_MM));
    if off == 0 || task_mm == 0 {
        return 0;
    }
    let task = unsafe { bpf_get_current_task() } as usize;
    let Ok(mm) = (unsafe { bpf_probe_read_kernel((task + task_mm) as *const usize) }) else { return 0 };
    if mm == 0 {
        return 0;
    }
    let Ok(pages) = (unsafe { bpf_probe_read_kernel((mm + off) as *const i64) }) else { return 0 };
    let any = HUGETLB_ANY.get_ptr_mut(0);
    match any {
        // Set before any nonzero count is stored below.
        Some(any) if pages != 0 => unsafe { *any = 1 },
        Some(any) if unsafe { *any } == 0 => return 0,
        _ => {}
    }
    let delta = match HUGETLB_SEEN.get_ptr_mut(&tgid) {
        Some(seen) if unsafe { (*seen).mm } == mm => unsafe {
            if (*seen).pages == pages {
                return 0;
            }
            let d = pages - (*seen).pages;
            (*seen).pages = pages;
            d
        },
        // First look at this mm (a new process, or a new image after exec).
        _ => {
            let _ = HUGETLB_SEEN.insert(&tgid, &Seen { mm, pages }, 0);
            if pages == 0 {
                // Nothing mapped yet: remember that, send nothing.
                return 0;
            }
            pages
        }
    };
    // Not `state::reserve`, whose full-ring path logs: the fault program carries no logging
    // code (see `state::task_slot_unlogged`); a loss is still counted.
    let Some(mut e) = EVENTS.reserve::<HugetlbEvent>(0) else {
        count(counter::LOST);
        return 0;
    };
    count(counter::SUBMITTED);
    e.write(HugetlbEvent {
        hdr: EventHeader { kind: EventKind::Hugetlb as u32, tgid, tid, _pad: 0, ts_ns: 0 },
        addr,
        pages,
        delta,
    });
    e.submit(submit_flags());
    0
}
