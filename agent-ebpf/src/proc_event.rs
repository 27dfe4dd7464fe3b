//! Emitting a [`ProcEvent`], shared by fork, exec and exit.
use agent_common::{EventHeader, EventKind, ProcEvent};

use crate::state::{now, reserve, submit_flags};

#[inline(always)]
pub fn emit(kind: EventKind, tgid: u32, tid: u32, pid: u32, ppid: u32) {
    let comm = aya_ebpf::helpers::bpf_get_current_comm().unwrap_or([0; 16]);
    let Some(mut e) = reserve::<ProcEvent>() else { return };
    e.write(ProcEvent { hdr: EventHeader { kind: kind as u32, tgid, tid, _pad: 0, ts_ns: now() }, pid, ppid, comm });
    e.submit(submit_flags());
}
