//! `mmap_lock:mmap_lock_released` (`--syscall-hooks off`): a watched process released its mm's
//! lock taken for writing inside a syscall that changes VMAs without searching for a new area
//! (munmap, mprotect, mremap in place, madvise, mlock, a MAP_FIXED or hinted mmap...): its
//! known mappings may be stale (a region split or trimmed is named by each piece's start), so
//! userspace re-reads /proc/PID/maps before naming its next fault. An `AreaEvent` of length 0.
//!
//! Not a syscall tracepoint. It fires at every mmap_lock release on the host while enabled
//! (page faults take a per-VMA lock instead, mostly); write releases only go further.
use agent_common::{nr, AreaEvent, EventHeader, EventKind};
use aya_ebpf::{macros::tracepoint, programs::TracePointContext};

use crate::state::{field, in_ia32_syscall, is_watched, now, pid_tgid, reserve, submit_flags, user_regs};

// The record's `write` offset (this kernel's default; the loader writes its format's).
#[unsafe(no_mangle)]
static MMAP_LOCK_WRITE: u32 = 24;

const MAP_FIXED: u64 = 0x10;
const EXIT: u64 = 60;
const EXIT_GROUP: u64 = 231;

#[tracepoint]
pub fn mmap_lock_released(ctx: TracePointContext) -> u32 {
    if field::<u8>(&ctx, &MMAP_LOCK_WRITE) != Some(1) {
        return 0;
    }
    let (tgid, tid) = pid_tgid();
    if !is_watched(tgid) {
        return 0;
    }
    let r = user_regs();
    let nr = if in_ia32_syscall() { u64::MAX - 1 } else { unsafe { (*r).orig_rax } };
    let args = unsafe { [(*r).rdi, (*r).rsi, (*r).rdx, (*r).r10, (*r).r8, (*r).r9] };
    let quiet = match nr {
        // A fault (stack growth: [stack] keeps its name), brk (the heap grows or shrinks as one
        // region), the calls that build or drop a whole mm.
        u64::MAX | nr::BRK | nr::CLONE | nr::CLONE3 | nr::FORK | nr::VFORK | nr::EXECVE | nr::EXECVEAT => true,
        EXIT | EXIT_GROUP => true,
        // An mmap the kernel placed itself sent its area (unmapped_area.rs).
        nr::MMAP => args[3] & MAP_FIXED == 0 && args[0] == 0,
        _ => false,
    };
    if quiet {
        return 0;
    }
    let Some(mut e) = reserve::<AreaEvent>() else { return 0 };
    e.write(AreaEvent {
        hdr: EventHeader { kind: EventKind::Area as u32, tgid, tid, _pad: 0, ts_ns: now() },
        nr,
        args,
        addr: 0,
        len: 0,
        ino: 0,
        dev: 0,
        _pad: 0,
    });
    e.submit(submit_flags());
    0
}
