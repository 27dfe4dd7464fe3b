//! `sched:sched_process_fork`: a watched process's new child joins the watched set before it
//! first runs, so grandchildren are followed too. New threads (CLONE_THREAD) are not processes:
//! they neither grow the watched set nor produce a record. The clone flags are read from the
//! parent's saved user registers (the syscall's arguments), so no syscall is hooked for them.
use agent_common::{counter, nr, EventKind};
use aya_ebpf::{helpers::bpf_probe_read_user, macros::tracepoint, programs::TracePointContext};
use aya_log_ebpf::error;

use crate::{
    cgroup, proc_event,
    state::{count, field, is_watched, pid_tgid, user_regs, watch, FORK_CHILD_PID},
};

const CLONE_THREAD: u64 = 0x0001_0000;

#[tracepoint]
pub fn sched_process_fork(ctx: TracePointContext) -> u32 {
    let (tgid, tid) = pid_tgid();
    // `--cgroup` (v2): a parent in a watched cgroup joins here (agent-ebpf cgroup.rs), and its
    // child with it.
    if !is_watched(tgid) && !cgroup::joins(tgid, tid) {
        return 0;
    }
    let Some(child) = field::<i32>(&ctx, &FORK_CHILD_PID) else {
        return 0;
    };
    if clone_flags() & CLONE_THREAD != 0 {
        return 0;
    }
    if watch(child as u32).is_err() {
        cold_watched_full(child as u32, tgid);
    }
    proc_event::emit(EventKind::Fork, child as u32, tid, child as u32, tgid);
    0
}

/// The flags of the clone in progress: clone's first argument, or the first u64 of clone3's
/// `struct clone_args`; 0 for fork and vfork.
#[inline(always)]
fn clone_flags() -> u64 {
    let regs = user_regs();
    let (sys, arg0) = unsafe { ((*regs).orig_rax, (*regs).rdi) };
    match sys {
        nr::CLONE => arg0,
        nr::CLONE3 => unsafe { bpf_probe_read_user(arg0 as *const u64) }.unwrap_or(0),
        _ => 0,
    }
}

/// Cold: the child cannot join WATCHED (counted in MAP_FULL). One line per lost child: forks
/// are rare next to faults, and each line names a process the watch misses.
#[inline(never)]
#[unsafe(no_mangle)]
pub extern "C" fn cold_watched_full(child: u32, parent: u32) -> u32 {
    count(counter::MAP_FULL);
    error!(&(), "WATCHED map full: child pid {} of {} is not followed; raise WATCHED's max_entries", child, parent);
    0
}
