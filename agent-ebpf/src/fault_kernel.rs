//! `exceptions:page_fault_kernel`: a kernel-mode fault on a user address (copy_to_user into a
//! fresh buffer, e.g. `read()`): the pages it adds belong to that address, not to the syscall.
use agent_common::cause;
use aya_ebpf::{macros::tracepoint, programs::TracePointContext};

use crate::state::{field, is_watched, pid_tgid, PF_ADDR, PF_ERR, TASKS};

/// Top of the x86_64 user address space.
const USER_TOP: u64 = 0x0000_8000_0000_0000;

#[tracepoint]
pub fn page_fault_kernel(ctx: TracePointContext) -> u32 {
    let (tgid, tid) = pid_tgid();
    if !is_watched(tgid) {
        return 0;
    }
    let addr = field::<u64>(&ctx, &PF_ADDR).unwrap_or(u64::MAX);
    if addr >= USER_TOP {
        return 0;
    }
    // Only inside a syscall we already track; the slot exists from sys_enter.
    let Some(slot) = TASKS.get_ptr_mut(tid) else { return 0 };
    let slot = unsafe { &mut *slot };
    slot.fault_addr = addr;
    slot.fault_err = field::<u64>(&ctx, &PF_ERR).unwrap_or(0);
    slot.fault_cause = cause::KERNEL_FAULT;
    slot.fault_fresh = 1;
    0
}
