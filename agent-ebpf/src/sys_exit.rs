//! `syscalls:sys_exit_{mmap,munmap,mremap,brk,mprotect,madvise,open,openat,openat2}` (this one
//! program on each): report successful mapping syscalls with their arguments, so userspace keeps
//! each process's address -> mapping map current without re-reading /proc/PID/maps (a madvise
//! only when its advice splits VMAs: that marks the map stale), and opens (the path and the fd,
//! to name file mmaps after the process is gone). The arguments are read from
//! the task's saved user registers, which the syscall leaves as they were: no entry hook.
//!
//! Only these syscalls' exits are hooked: every other syscall runs no program (the rss changes a
//! syscall makes take its number from the registers in `rss.rs`).
use agent_common::{madvise_splits, nr, EventHeader, EventKind, OpenEvent, SyscallEvent};
use aya_ebpf::{helpers::bpf_probe_read_user_str_bytes, macros::tracepoint, programs::TracePointContext};

use crate::state::{field, is_watched, now, pid_tgid, reserve, submit_flags, user_regs, SYS_ID, SYS_RET};

#[tracepoint]
pub fn sys_exit(ctx: TracePointContext) -> u32 {
    let (tgid, tid) = pid_tgid();
    if !is_watched(tgid) {
        return 0;
    }
    let Some(id) = field::<i32>(&ctx, &SYS_ID) else { return 0 };
    let id = id as u64;
    let ret = field::<i64>(&ctx, &SYS_RET).unwrap_or(-1);
    // Errors are -4095..-1 (mmap returns addresses, which are never in that range).
    if (-4095..0).contains(&ret) {
        return 0;
    }
    let r = user_regs();
    let args = unsafe { [(*r).rdi, (*r).rsi, (*r).rdx, (*r).r10, (*r).r8, (*r).r9] };
    match id {
        nr::OPEN => emit_open(tgid, tid, ret as i32, args[0] as *const u8),
        nr::OPENAT | nr::OPENAT2 => emit_open(tgid, tid, ret as i32, args[1] as *const u8),
        nr::MMAP | nr::MUNMAP | nr::BRK | nr::MREMAP | nr::MPROTECT => emit_syscall(tgid, tid, id, args, ret),
        // Only an advice that splits VMAs (userspace then re-reads the process's maps).
        nr::MADVISE if madvise_splits(args[2]) => emit_syscall(tgid, tid, id, args, ret),
        _ => 0,
    }
}

#[inline(always)]
fn emit_syscall(tgid: u32, tid: u32, id: u64, args: [u64; 6], ret: i64) -> u32 {
    let Some(mut e) = reserve::<SyscallEvent>() else { return 0 };
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
