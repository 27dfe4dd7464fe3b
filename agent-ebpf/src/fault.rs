//! `exceptions:page_fault_user`: note in the task's slot that it is inside a fault at `address`.
//! The rss changes that follow in this task are that fault's pages (see `rss.rs`).
use agent_common::cause;
use aya_ebpf::{macros::tracepoint, programs::TracePointContext};

use crate::state::{field, is_watched, pid_tgid, task_slot, FAULTS, PF_ADDR, PF_ERR};

#[tracepoint]
pub fn page_fault_user(ctx: TracePointContext) -> u32 {
    let (tgid, tid) = pid_tgid();
    if !is_watched(tgid) {
        return 0;
    }
    match FAULTS.get_ptr_mut(tgid) {
        Some(n) => unsafe { *n += 1 },
        None => {
            let _ = FAULTS.insert(tgid, 1, 0);
        }
    }
    let Some(slot) = task_slot(tid) else { return 0 };
    let slot = unsafe { &mut *slot };
    // A user-mode fault means no syscall is in progress in this task.
    slot.sys_nr = -1;
    slot.fault_addr = field::<u64>(&ctx, &PF_ADDR).unwrap_or(0);
    slot.fault_err = field::<u64>(&ctx, &PF_ERR).unwrap_or(0);
    slot.fault_cause = cause::FAULT;
    slot.fault_fresh = 1;
    0
}
