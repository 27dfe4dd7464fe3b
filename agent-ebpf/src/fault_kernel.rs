//! `exceptions:page_fault_kernel`: a kernel-mode fault on a user address (copy_to_user into a
//! fresh buffer, e.g. `read()`): the pages it adds belong to that address, not to the syscall.
use agent_common::cause;
use aya_ebpf::{macros::tracepoint, programs::TracePointContext};

use crate::state::{
    current_syscall, is_watched, known_unwatched, pid_tgid, syscall_invocation, task_slot, Raw, PF_ADDR, PF_ERR, TASKS,
};

/// Top of the x86_64 user address space.
const USER_TOP: u64 = 0x0000_8000_0000_0000;

#[tracepoint]
pub fn page_fault_kernel(ctx: TracePointContext) -> u32 {
    let (tgid, tid) = pid_tgid();
    // Same layout as page_fault_user: the loader checked its offsets for these direct loads.
    let Some(raw) = Raw::read(&ctx) else { return 0 };
    let addr = raw.u64_at(&PF_ADDR);
    if addr >= USER_TOP || known_unwatched(tgid) {
        return 0;
    }
    // A slot exists only for watched tasks; a watched thread that never faulted in user mode
    // gets one here (logged if TASKS is full).
    let slot = match TASKS.get_ptr_mut(tid) {
        Some(s) => s,
        None if is_watched(tgid) => match task_slot(tid) {
            Some(s) => s,
            None => return 0,
        },
        None => return 0,
    };
    let slot = unsafe { &mut *slot };
    slot.fault_addr = addr;
    slot.fault_err = raw.u64_at(&PF_ERR);
    slot.fault_cause = cause::KERNEL_FAULT;
    slot.fault_fresh = 1;
    // The syscall this fault came in (-1: signal delivery after an interrupt) and which call of
    // it: the fault's rss change is the first one made in that call (rss.rs).
    slot.sys_nr = current_syscall();
    slot.sys_key = syscall_invocation();
    0
}
