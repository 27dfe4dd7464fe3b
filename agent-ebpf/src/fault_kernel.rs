//! `exceptions:page_fault_kernel`: a kernel-mode fault on a user address (copy_to_user into a
//! fresh buffer, e.g. `read()`): the pages it adds belong to that address, not to the syscall.
use agent_common::cause;
use aya_ebpf::{macros::tracepoint, programs::TracePointContext};

use crate::state::{pid_tgid, Raw, PF_ADDR, PF_ERR, TASKS};

/// Top of the x86_64 user address space.
const USER_TOP: u64 = 0x0000_8000_0000_0000;

#[tracepoint]
pub fn page_fault_kernel(ctx: TracePointContext) -> u32 {
    // Only in a watched task inside a syscall: its slot exists from sys_enter (and a slot
    // exists only for watched tasks, so it is the watched check too).
    let (_, tid) = pid_tgid();
    let Some(slot) = TASKS.get_ptr_mut(tid) else { return 0 };
    // Same layout as page_fault_user: the loader checked its offsets for these direct loads.
    let Some(raw) = Raw::read(&ctx) else { return 0 };
    let addr = raw.u64_at(&PF_ADDR);
    if addr >= USER_TOP {
        return 0;
    }
    let slot = unsafe { &mut *slot };
    slot.fault_addr = addr;
    slot.fault_err = raw.u64_at(&PF_ERR);
    slot.fault_cause = cause::KERNEL_FAULT;
    slot.fault_fresh = 1;
    0
}
