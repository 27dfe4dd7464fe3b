//! `sched:sched_process_exec`: a watched process replaced its image; userspace re-reads its maps.
//!
//! With the kernel's BTF offsets (the `MM_*` globals, 0 when userspace found none), it also
//! sends the new image's layout from the task's mm ([`ExecMmEvent`]): exec maps the binary,
//! the interpreter and the stack with no mmap syscall, and a short-lived process is gone before
//! its `/proc/PID/maps` is read. A cold path (once per exec), so it reads one field per helper
//! call.
use agent_common::{EventHeader, EventKind, ExecMmEvent, AUXV_PAIRS};
use aya_ebpf::{
    helpers::{bpf_get_current_task, bpf_probe_read_kernel, bpf_probe_read_kernel_str_bytes},
    macros::tracepoint,
    programs::TracePointContext,
    EbpfContext as _,
};

use crate::{
    cgroup, comm_join, proc_event,
    state::{field, g, is_watched, now, pid_tgid, reserve, submit_flags},
};

macro_rules! global {
    ($name:ident, $default:expr) => {
        #[unsafe(no_mangle)]
        pub static $name: u32 = $default;
    };
}

// The tracepoint's `filename` (__data_loc), from the tracefs format.
global!(EXEC_FILENAME, 8);
// Offsets from the kernel's BTF; `TASK_MM` 0: unknown, no ExecMm record.
global!(TASK_MM, 0);
global!(MM_START_CODE, 0);
global!(MM_END_CODE, 0);
global!(MM_START_DATA, 0);
global!(MM_END_DATA, 0);
global!(MM_START_BRK, 0);
global!(MM_START_STACK, 0);
global!(MM_ENV_END, 0);
global!(MM_SAVED_AUXV, 0);

const AT_PHDR: u64 = 3;
const AT_BASE: u64 = 7;
const AT_ENTRY: u64 = 9;
const AT_SYSINFO_EHDR: u64 = 33;

#[tracepoint]
pub fn sched_process_exec(ctx: TracePointContext) -> u32 {
    let (tgid, tid) = pid_tgid();
    // `--cgroup` (v2): a process in a watched cgroup joins at its exec; `serve --comm`: one
    // that execs under a watched name.
    if !is_watched(tgid) && !cgroup::joins(tgid, tid) && !comm_join::joins(tgid, tid) {
        return 0;
    }
    proc_event::emit(EventKind::Exec, tgid, tid, tgid, 0);
    if g(&TASK_MM) != 0 {
        emit_mm(&ctx, tgid, tid);
    }
    0
}

#[inline(always)]
fn kread(base: u64, off: &'static u32) -> u64 {
    unsafe { bpf_probe_read_kernel((base as usize + g(off)) as *const u64).unwrap_or(0) }
}

#[inline(always)]
fn emit_mm(ctx: &TracePointContext, tgid: u32, tid: u32) {
    let task = unsafe { bpf_get_current_task() };
    let mm = kread(task, &TASK_MM);
    if mm == 0 {
        return;
    }
    let Some(mut e) = reserve::<ExecMmEvent>() else { return };
    let p = e.as_mut_ptr();
    unsafe {
        (*p).hdr = EventHeader { kind: EventKind::ExecMm as u32, tgid, tid, _pad: 0, ts_ns: now() };
        (*p).start_code = kread(mm, &MM_START_CODE);
        (*p).end_code = kread(mm, &MM_END_CODE);
        (*p).start_data = kread(mm, &MM_START_DATA);
        (*p).end_data = kread(mm, &MM_END_DATA);
        (*p).start_brk = kread(mm, &MM_START_BRK);
        (*p).start_stack = kread(mm, &MM_START_STACK);
        (*p).env_end = kread(mm, &MM_ENV_END);
        (*p).at_base = 0;
        (*p).at_phdr = 0;
        (*p).at_entry = 0;
        (*p).at_sysinfo_ehdr = 0;
        (*p)._pad = 0;
        let auxv = mm as usize + g(&MM_SAVED_AUXV);
        for i in 0..AUXV_PAIRS as usize {
            let Ok(kv) = bpf_probe_read_kernel((auxv + i * 16) as *const [u64; 2]) else { break };
            match kv[0] {
                0 => break,
                AT_PHDR => (*p).at_phdr = kv[1],
                AT_BASE => (*p).at_base = kv[1],
                AT_ENTRY => (*p).at_entry = kv[1],
                AT_SYSINFO_EHDR => (*p).at_sysinfo_ehdr = kv[1],
                _ => {}
            }
        }
        (*p).len = match field::<u32>(ctx, &EXEC_FILENAME) {
            Some(loc) => {
                let src = (ctx.as_ptr() as *const u8).wrapping_add((loc & 0xffff) as usize);
                match bpf_probe_read_kernel_str_bytes(src, &mut (*p).filename) {
                    Ok(s) => s.len() as i32 + 1,
                    Err(err) => err as i32,
                }
            }
            None => -1,
        };
    }
    e.submit(submit_flags());
}
