//! `mmap:vm_unmapped_area` (`--syscall-hooks off`): the kernel chose where a new mapping of a
//! watched process goes (an mmap, an mremap that moves, shmat, exec's own mappings), before it
//! is made. Not a syscall tracepoint, so no task is put on the traced-syscall path; it fires
//! only when an address is searched for (never for MAP_FIXED or an honoured hint).
//!
//! The area and the syscall that asked for it (number and arguments from the task's saved user
//! registers, as `sys_exit.rs` reads them) go to userspace, which learns the mapping when the
//! area is exactly the one asked for and otherwise forgets what it knew of that range (a miss
//! there then re-reads /proc/PID/maps).
use agent_common::{AreaEvent, EventHeader, EventKind};
use aya_ebpf::{macros::tracepoint, programs::TracePointContext};

use crate::state::{field, in_ia32_syscall, is_watched, now, pid_tgid, reserve, submit_flags, user_regs};

// The record's `addr` and `length` offsets (this kernel's defaults; the loader writes the
// values of its tracefs format file).
#[unsafe(no_mangle)]
static AREA_ADDR: u32 = 8;
#[unsafe(no_mangle)]
static AREA_LEN: u32 = 32;

#[tracepoint]
pub fn vm_unmapped_area(ctx: TracePointContext) -> u32 {
    let (tgid, tid) = pid_tgid();
    if !is_watched(tgid) {
        return 0;
    }
    let Some(addr) = field::<u64>(&ctx, &AREA_ADDR) else { return 0 };
    let Some(len) = field::<u64>(&ctx, &AREA_LEN) else { return 0 };
    // A failed search carries -errno as its address.
    if addr >= (-4095i64) as u64 {
        return 0;
    }
    let r = user_regs();
    // An ia32 task's orig_ax is an ia32 number: no syscall named (the area is forgotten).
    let nr = if in_ia32_syscall() { u64::MAX } else { unsafe { (*r).orig_rax } };
    let args = unsafe { [(*r).rdi, (*r).rsi, (*r).rdx, (*r).r10, (*r).r8, (*r).r9] };
    let Some(mut e) = reserve::<AreaEvent>() else { return 0 };
    e.write(AreaEvent {
        hdr: EventHeader { kind: EventKind::Area as u32, tgid, tid, _pad: 0, ts_ns: now() },
        nr,
        args,
        addr,
        len,
    });
    e.submit(submit_flags());
    0
}
