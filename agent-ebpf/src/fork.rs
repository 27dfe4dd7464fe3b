//! `sched:sched_process_fork`: a watched process's new child joins the watched set before it
//! first runs, so grandchildren are followed too. New threads (CLONE_THREAD) are not processes:
//! they neither grow the watched set nor produce a record.
use agent_common::{counter, nr, EventKind};
use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use aya_log_ebpf::error;

use crate::{
    cgroup, proc_event,
    state::{count, field, is_watched, pid_tgid, FORK_CHILD_PID, TASKS, WATCHED},
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
    // sys_enter.rs kept the clone flags (for clone3, read from its user struct) in args[0].
    if let Some(slot) = TASKS.get_ptr(tid) {
        let slot = unsafe { &*slot };
        let sys = slot.sys_nr as u64;
        if (sys == nr::CLONE || sys == nr::CLONE3) && slot.args[0] & CLONE_THREAD != 0 {
            return 0;
        }
    }
    if WATCHED.insert(child as u32, 1, 0).is_err() {
        cold_watched_full(child as u32, tgid);
    }
    proc_event::emit(EventKind::Fork, child as u32, tid, child as u32, tgid);
    0
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
