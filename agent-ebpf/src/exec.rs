//! `sched:sched_process_exec`: a watched process replaced its image; userspace re-reads its maps.
use agent_common::EventKind;
use aya_ebpf::{macros::tracepoint, programs::TracePointContext};

use crate::{
    proc_event,
    state::{is_watched, pid_tgid},
};

#[tracepoint]
pub fn sched_process_exec(_ctx: TracePointContext) -> u32 {
    let (tgid, tid) = pid_tgid();
    if !is_watched(tgid) {
        return 0;
    }
    proc_event::emit(EventKind::Exec, tgid, tid, tgid, 0);
    0
}
