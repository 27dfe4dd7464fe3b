//! `exceptions:page_fault_user`: note in the task's slot that it is inside a fault at `address`.
//! The rss changes that follow in this task are that fault's pages (see `rss.rs`).
use agent_common::cause;
use aya_ebpf::{macros::tracepoint, programs::TracePointContext};

use crate::state::{is_watched, pid_tgid, task_slot_unlogged, Raw, PF_ADDR, PF_ERR, TASKS};

#[tracepoint]
pub fn page_fault_user(ctx: TracePointContext) -> u32 {
    let (tgid, tid) = pid_tgid();
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
    let Some(raw) = Raw::read(&ctx) else { return 0 };
    let slot = unsafe { &mut *slot };
    // Counted in the slot (already at hand); added to FAULTS when the thread exits.
    slot.faults += 1;
    // A user-mode fault means no syscall is in progress in this task.
    slot.sys_nr = -1;
    slot.fault_addr = raw.u64_at(&PF_ADDR);
    slot.fault_err = raw.u64_at(&PF_ERR);
    slot.fault_cause = cause::FAULT;
    slot.fault_fresh = 1;
    0
}
