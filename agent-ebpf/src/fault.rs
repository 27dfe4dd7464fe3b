//! `exceptions:page_fault_user`: note in the task's slot that it is inside a fault at `address`.
//! The rss changes that follow in this task are that fault's pages (see `rss.rs`).
//!
//! A write to a present page (error bits protection + write) is, in a private mapping, a
//! copy-on-write: a page shared with a fork partner copied, which no rss counter shows. Those
//! faults are sent as a `CowEvent` (userspace keeps the private mappings' ones). The fault storm
//! takes first-touch faults only (page not present): it pays one test and branch.
//!
//! [`user_fault`] is the bookkeeping every fault source shares (`fault_perf.rs` is the other).
use agent_common::{cause, counter, CowEvent, EventHeader, EventKind};
use aya_ebpf::{macros::tracepoint, programs::TracePointContext};

use crate::state::{
    count, is_watched, known_unwatched, pid_tgid, submit_flags, task_slot_unlogged, Raw, EVENTS, PF_ADDR, PF_ERR, TASKS,
};

/// `error_code` bits: the page was present (a protection fault), and the access was a write.
const PF_PROT_WRITE: u64 = 1 | 2;

#[tracepoint]
pub fn page_fault_user(ctx: TracePointContext) -> u32 {
    user_fault(|| Raw::read(&ctx).map(|raw| (raw.u64_at(&PF_ADDR), raw.u64_at(&PF_ERR))))
}

/// A user-mode fault of the current task: `addr_err` gives the faulting address and the x86
/// `error_code` (0 from a source that has none: no copy-on-write is then reported). It is
/// called only for a watched task. An unwatched fault costs no lookup once its process is
/// cached as not watched on this CPU (`state::is_watched`), two hash lookups before.
#[inline(always)]
pub fn user_fault(addr_err: impl FnOnce() -> Option<(u64, u64)>) -> u32 {
    let (tgid, tid) = pid_tgid();
    if known_unwatched(tgid) {
        return 0;
    }
    // A task with a slot belongs to a watched process (slots are made only for those and
    // dropped at thread exit): one lookup instead of two on the hot path.
    let slot = match TASKS.get_ptr_mut(tid) {
        Some(s) => s,
        // No logging code in this program (see task_slot_unlogged).
        None if is_watched(tgid) => match task_slot_unlogged(tid) {
            Some(s) => s,
            None => return 0,
        },
        None => return 0,
    };
    let Some((addr, err)) = addr_err() else { return 0 };
    let slot = unsafe { &mut *slot };
    // Its previous fault (page not present) changed no rss counter: a hugetlb page? (rss.rs
    // clears `quiet` at a fault's first rss change, so the storm pays this test only.)
    if slot.quiet != 0 {
        crate::hugetlb::hugetlb_after_quiet_fault(tgid, tid, slot.fault_addr);
    }
    slot.quiet = u32::from(err & 1 == 0);
    // Counted in the slot (already at hand); added to FAULTS when the thread exits.
    slot.faults += 1;
    // A user-mode fault means no syscall is in progress in this task.
    slot.sys_nr = -1;
    slot.fault_addr = addr;
    slot.fault_err = err;
    slot.fault_cause = cause::FAULT;
    slot.fault_fresh = 1;
    if err & PF_PROT_WRITE == PF_PROT_WRITE {
        // Submitted at fault entry, so before the fault's rss changes (if any): userspace pairs
        // them. Reserved here and not through `state::reserve`, whose full-ring path logs: this
        // program carries no logging code (see `task_slot_unlogged`); a loss is still counted.
        match EVENTS.reserve::<CowEvent>(0) {
            Some(mut e) => {
                count(counter::SUBMITTED);
                let hdr = EventHeader { kind: EventKind::Cow as u32, tgid, tid, _pad: 0, ts_ns: 0 };
                e.write(CowEvent { hdr, addr, err });
                e.submit(submit_flags());
            }
            None => count(counter::LOST),
        }
    }
    0
}
