//! `sched:sched_process_exit`: drop the thread's slot; when the whole group is dead, leave the
//! watched set and tell userspace. The mm teardown that follows still reaches userspace through
//! MM_OWNER (curr=0, cause EXIT).
use agent_common::EventKind;
use aya_ebpf::{macros::tracepoint, programs::TracePointContext};

use crate::{
    proc_event,
    state::{field, is_watched, pid_tgid, EXIT_GROUP_DEAD, FAULTS, TASKS, WATCHED},
};

#[tracepoint]
pub fn sched_process_exit(ctx: TracePointContext) -> u32 {
    let (tgid, tid) = pid_tgid();
    if !is_watched(tgid) {
        return 0;
    }
    if let Some(slot) = TASKS.get_ptr(tid) {
        let n = unsafe { (*slot).faults };
        if n > 0 {
            match FAULTS.get_ptr_mut(tgid) {
                Some(total) => unsafe { *total += n },
                None => {
                    let _ = FAULTS.insert(tgid, n, 0);
                }
            }
        }
    }
    let _ = TASKS.remove(tid);
    let group_dead = field::<u8>(&ctx, &EXIT_GROUP_DEAD).unwrap_or(0) != 0;
    if group_dead {
        let _ = WATCHED.remove(tgid);
        // A reused pid must not find this process's hugetlb counter.
        let _ = crate::hugetlb::HUGETLB_SEEN.remove(&tgid);
        proc_event::emit(EventKind::Exit, tgid, tid, tgid, 0);
    }
    0
}
