//! `oom:mark_victim`: the OOM killer chose its victim and has just sent it SIGKILL. When the
//! victim belongs to a watched process, tell userspace, which writes the post-mortem before the
//! victim's exit record (this record is submitted first, so it is read first).
//!
//! A cold path: it fires once per OOM kill, so it reads its fields one helper call at a time
//! and wakes the reader at once.
use agent_common::{EventHeader, EventKind, OomEvent, COMM_LEN};
use aya_ebpf::{
    bindings::BPF_RB_FORCE_WAKEUP, helpers::bpf_probe_read_kernel_str_bytes, macros::tracepoint,
    programs::TracePointContext, EbpfContext as _,
};

use crate::state::{field, is_watched, now, pid_tgid, reserve, TASKS};

// Field offsets of `oom:mark_victim`, overwritten by the loader from the tracefs format (the
// defaults are this kernel's layout).
#[unsafe(no_mangle)]
pub static OOM_PID: u32 = 8;
#[unsafe(no_mangle)]
pub static OOM_COMM: u32 = 12;
#[unsafe(no_mangle)]
pub static OOM_TOTAL_VM: u32 = 16;
#[unsafe(no_mangle)]
pub static OOM_ANON_RSS: u32 = 24;
#[unsafe(no_mangle)]
pub static OOM_FILE_RSS: u32 = 32;
#[unsafe(no_mangle)]
pub static OOM_SHMEM_RSS: u32 = 40;
#[unsafe(no_mangle)]
pub static OOM_UID: u32 = 48;
#[unsafe(no_mangle)]
pub static OOM_PGTABLES: u32 = 56;
#[unsafe(no_mangle)]
pub static OOM_SCORE_ADJ: u32 = 64;

#[tracepoint]
pub fn oom_mark_victim(ctx: TracePointContext) -> u32 {
    let Some(pid) = field::<i32>(&ctx, &OOM_PID) else { return 0 };
    let pid = pid as u32;
    // The victim is the task the killer picked, any thread of its process: a thread we have
    // seen has a slot naming its process.
    let tgid = if is_watched(pid) {
        pid
    } else {
        match TASKS.get_ptr(pid) {
            Some(slot) => unsafe { (*slot).tgid },
            None => return 0,
        }
    };
    if !is_watched(tgid) {
        return 0;
    }
    // comm is a __data_loc: the low 16 bits are the string's offset in the record.
    let mut comm = [0u8; COMM_LEN];
    if let Some(loc) = field::<u32>(&ctx, &OOM_COMM) {
        let src = (ctx.as_ptr() as *const u8).wrapping_add((loc & 0xffff) as usize);
        let _ = unsafe { bpf_probe_read_kernel_str_bytes(src, &mut comm) };
    }
    let kib = |off: &'static u32| field::<u64>(&ctx, off).unwrap_or(0);
    let ev = OomEvent {
        hdr: EventHeader { kind: EventKind::Oom as u32, tgid, tid: pid_tgid().1, _pad: 0, ts_ns: now() },
        pid,
        uid: field::<u32>(&ctx, &OOM_UID).unwrap_or(0),
        comm,
        total_vm_kib: kib(&OOM_TOTAL_VM),
        anon_rss_kib: kib(&OOM_ANON_RSS),
        file_rss_kib: kib(&OOM_FILE_RSS),
        shmem_rss_kib: kib(&OOM_SHMEM_RSS),
        pgtables_kib: kib(&OOM_PGTABLES),
        oom_score_adj: field::<i16>(&ctx, &OOM_SCORE_ADJ).unwrap_or(0) as i32,
        _pad: 0,
    };
    // A full ring: counted lost by `reserve`, like every other record.
    let Some(mut e) = reserve::<OomEvent>() else { return 0 };
    e.write(ev);
    e.submit(BPF_RB_FORCE_WAKEUP as u64);
    0
}
