//! `mmap:vm_unmapped_area` (`--syscall-hooks off`): the kernel chose where a new mapping of a
//! watched process goes (an mmap, an mremap that moves, shmat, exec's own mappings), before it
//! is made. Not a syscall tracepoint, so no task is put on the traced-syscall path; it fires
//! only when an address is searched for (never for MAP_FIXED or an honoured hint).
//!
//! The area and the syscall that asked for it (number and arguments from the task's saved user
//! registers, as `sys_exit.rs` reads them) go to userspace, which learns the mapping when the
//! area is exactly the one asked for and otherwise forgets what it knew of that range (a miss
//! there then re-reads /proc/PID/maps).
use agent_common::{nr, AreaEvent, EventHeader, EventKind};
use aya_ebpf::{
    helpers::{bpf_get_current_task, bpf_probe_read_kernel},
    macros::tracepoint,
    programs::TracePointContext,
};

use crate::state::{field, g, in_ia32_syscall, is_watched, now, pid_tgid, reserve, submit_flags, user_regs};

macro_rules! global {
    ($name:ident, $default:expr) => {
        #[unsafe(no_mangle)]
        static $name: u32 = $default;
    };
}

// The record's `addr` and `length` offsets (this kernel's defaults; the loader writes the
// values of its tracefs format file).
global!(AREA_ADDR, 8);
global!(AREA_LEN, 32);
// Offsets from the kernel's BTF to find a file mmap's inode from its fd; `FILES_TASK` 0:
// unknown, no file identity sent.
global!(FILES_TASK, 0);
global!(FILES_FDT, 0);
global!(FDT_MAX_FDS, 0);
global!(FDT_FD, 0);
global!(FILE_INODE, 0);
global!(INODE_INO, 0);
global!(INODE_SB, 0);
global!(SB_DEV, 0);

const MAP_ANONYMOUS: u64 = 0x20;

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
    let (dev, ino) = match nr {
        nr::MMAP if args[3] & MAP_ANONYMOUS == 0 && g(&FILES_TASK) != 0 => file_of_fd(args[4]),
        _ => (0, 0),
    };
    let Some(mut e) = reserve::<AreaEvent>() else { return 0 };
    e.write(AreaEvent {
        hdr: EventHeader { kind: EventKind::Area as u32, tgid, tid, _pad: 0, ts_ns: now() },
        nr,
        args,
        addr,
        len,
        ino,
        dev,
        _pad: 0,
    });
    e.submit(submit_flags());
    0
}

#[inline(always)]
fn kread<T>(base: u64, off: &'static u32) -> Option<T> {
    if base == 0 {
        return None;
    }
    unsafe { bpf_probe_read_kernel((base as usize + g(off)) as *const T).ok() }
}

/// The (device, inode) of the current task's open file `fd`, as /proc/PID/maps shows a file
/// mapping (`inode->i_sb->s_dev`, `inode->i_ino`): userspace names the file from a maps line
/// that showed the same file, when this process is gone before its maps are read. (0, 0) if
/// any step fails.
#[inline(always)]
fn file_of_fd(fd: u64) -> (u32, u64) {
    let task = unsafe { bpf_get_current_task() };
    let Some(fdt) = kread::<u64>(task, &FILES_TASK).and_then(|files| kread::<u64>(files, &FILES_FDT)) else {
        return (0, 0);
    };
    let max = kread::<u32>(fdt, &FDT_MAX_FDS).unwrap_or(0) as u64;
    if fd >= max {
        return (0, 0);
    }
    let Some(arr) = kread::<u64>(fdt, &FDT_FD) else { return (0, 0) };
    let file = unsafe { bpf_probe_read_kernel((arr + fd * 8) as *const u64).unwrap_or(0) };
    let Some(inode) = kread::<u64>(file, &FILE_INODE) else { return (0, 0) };
    let ino = kread::<u64>(inode, &INODE_INO).unwrap_or(0);
    let dev = kread::<u64>(inode, &INODE_SB).and_then(|sb| kread::<u32>(sb, &SB_DEV)).unwrap_or(0);
    (dev, ino)
}
