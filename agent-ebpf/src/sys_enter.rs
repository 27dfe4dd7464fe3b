//! `raw_syscalls:sys_enter`: mark the syscall a watched task is in, so the rss changes it makes
//! (MAP_POPULATE, munmap, madvise, mlock...) are attributed to it and not to an earlier fault.
//! Keeps the arguments the mapping syscalls and clone need at exit/fork time.
use agent_common::nr;
use aya_ebpf::{helpers::bpf_probe_read_user, macros::tracepoint, programs::TracePointContext};

use crate::state::{field, g, is_watched, pid_tgid, task_slot, SYS_ARGS, SYS_ID};

#[tracepoint]
pub fn sys_enter(ctx: TracePointContext) -> u32 {
    let (tgid, tid) = pid_tgid();
    if !is_watched(tgid) {
        return 0;
    }
    let Some(id) = field::<i64>(&ctx, &SYS_ID) else {
        return 0;
    };
    let Some(slot) = task_slot(tid) else { return 0 };
    let slot = unsafe { &mut *slot };
    slot.sys_nr = id;
    slot.fault_cause = 0;
    slot.fault_fresh = 0;
    let id = id as u64;
    if matches!(
        id,
        nr::MMAP
            | nr::MUNMAP
            | nr::BRK
            | nr::MREMAP
            | nr::MPROTECT
            | nr::CLONE
            | nr::CLONE3
            | nr::OPEN
            | nr::OPENAT
            | nr::OPENAT2
    ) {
        let base = g(&SYS_ARGS);
        for i in 0..6 {
            slot.args[i] = unsafe { ctx.read_at::<u64>(base + i * 8) }.unwrap_or(0);
        }
        if id == nr::CLONE3 {
            // clone3(struct clone_args *uargs, size): flags is its first u64.
            slot.args[0] = unsafe { bpf_probe_read_user(slot.args[0] as *const u64) }.unwrap_or(0);
        }
    }
    0
}
