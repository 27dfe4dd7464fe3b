//! `raw_syscalls:sys_exit`: report successful mapping syscalls (mmap, munmap, mremap, brk,
//! mprotect) and opens (the path and the fd, to name file mmaps after the process is gone) with
//! their arguments so userspace keeps each process's address -> mapping map current without
//! re-reading /proc/PID/maps; then mark the task idle again.
use agent_common::{nr, EventHeader, EventKind, OpenEvent, SyscallEvent};
use aya_ebpf::{helpers::bpf_probe_read_user_str_bytes, macros::tracepoint, programs::TracePointContext};

use crate::state::{field, is_watched, now, pid_tgid, reserve, submit_flags, SYS_RET, TASKS};

#[tracepoint]
pub fn sys_exit(ctx: TracePointContext) -> u32 {
    let (tgid, tid) = pid_tgid();
    if !is_watched(tgid) {
        return 0;
    }
    let Some(slot) = TASKS.get_ptr_mut(tid) else { return 0 };
    let slot = unsafe { &mut *slot };
    let id = slot.sys_nr as u64;
    let args = slot.args;
    slot.sys_nr = -1;
    slot.fault_cause = 0;
    slot.fault_fresh = 0;
    if !matches!(id, nr::MMAP | nr::MUNMAP | nr::BRK | nr::MREMAP | nr::MPROTECT | nr::OPEN | nr::OPENAT | nr::OPENAT2)
    {
        return 0;
    }
    let ret = field::<i64>(&ctx, &SYS_RET).unwrap_or(-1);
    // Errors are -4095..-1 (mmap returns addresses, which are never in that range).
    if (-4095..0).contains(&ret) {
        return 0;
    }
    if matches!(id, nr::OPEN | nr::OPENAT | nr::OPENAT2) {
        let path = if id == nr::OPEN { args[0] } else { args[1] };
        return emit_open(tgid, tid, ret as i32, path as *const u8);
    }
    let Some(mut e) = reserve::<SyscallEvent>() else {
        return 0;
    };
    e.write(SyscallEvent {
        hdr: EventHeader { kind: EventKind::Syscall as u32, tgid, tid, _pad: 0, ts_ns: now() },
        nr: id,
        args,
        ret,
    });
    e.submit(submit_flags());
    0
}

/// An open that returned `fd`: the path as the process passed it, read from its memory now.
#[inline(always)]
fn emit_open(tgid: u32, tid: u32, fd: i32, path: *const u8) -> u32 {
    let Some(mut e) = reserve::<OpenEvent>() else { return 0 };
    let p = e.as_mut_ptr();
    unsafe {
        (*p).hdr = EventHeader { kind: EventKind::Open as u32, tgid, tid, _pad: 0, ts_ns: now() };
        (*p).fd = fd;
        (*p).len = match bpf_probe_read_user_str_bytes(path, &mut (*p).path) {
            Ok(s) => s.len() as i32 + 1,
            Err(err) => err as i32,
        };
    }
    e.submit(submit_flags());
    0
}
