//! Maps and load-time globals shared by the programs.
//!
//! Tracepoint field offsets are globals that userspace overwrites before load with the values it
//! read from tracefs `format` files; the defaults are this kernel's layout.
//!
//! Diagnostics (aya-log-ebpf) are for rare, actionable conditions only. Each one lives in a
//! `cold_*` function called only from the branch that found the condition: never inlined, so a
//! hot program carries one call and not the record building; and global (`#[no_mangle] extern
//! "C"`, returning a scalar as the verifier wants of global functions), so the verifier checks it
//! once per program instead of once per call site (rss_stat: ~13k instructions processed instead
//! of ~40k). Conditions that can repeat per event log once per CPU ([`count_first`],
//! [`first_on_cpu`]). Records go through aya-log-ebpf's own ring (AYA_LOGS); its macros do not use
//! the context argument, hence `&()`.
use agent_common::{counter, TaskSlot};
use aya_ebpf::{
    bindings::{BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    macros::map,
    maps::{Array, HashMap, PerCpuArray, PerCpuHashMap, RingBuf, StackTrace},
    programs::TracePointContext,
};
use aya_log_ebpf::{error, warn};

macro_rules! global {
    ($name:ident, $default:expr) => {
        #[unsafe(no_mangle)]
        pub static $name: u32 = $default;
    };
}

global!(PF_ADDR, 8);
global!(PF_ERR, 24);
global!(RSS_MM_ID, 8);
global!(RSS_CURR, 12);
global!(RSS_MEMBER, 16);
global!(RSS_SIZE, 24);
global!(FORK_CHILD_PID, 20);
global!(EXIT_GROUP_DEAD, 32);
global!(SYS_ID, 8);
global!(SYS_RET, 16);
// 1: take the user stack of faults that add pages (`--stacks`).
global!(STACKS_ON, 0);
// Ring fill level (bytes) past which a submit wakes the reader; below it the reader polls.
global!(WAKEUP_BYTES, 1 << 20);

#[inline(always)]
pub fn g(v: &'static u32) -> usize {
    // Volatile so the compiler does not fold the default into the code: the loader rewrites it.
    unsafe { core::ptr::read_volatile(v) as usize }
}

#[inline(always)]
pub fn field<T>(ctx: &TracePointContext, off: &'static u32) -> Option<T> {
    unsafe { ctx.read_at::<T>(g(off)).ok() }
}

/// The first 32 bytes of a tracepoint record, read once instead of one helper call per field; fields are then picked at their load-time offsets (8-byte words, 4-byte halves).
pub struct Raw([u64; 4]);

impl Raw {
    #[inline(always)]
    pub fn read(ctx: &TracePointContext) -> Option<Raw> {
        // Direct loads from the tracepoint record (the verifier allows constant, aligned
        // offsets into it, past the 8-byte common header): cheaper than a helper call. Every
        // field we read is past the header.
        let p = aya_ebpf::EbpfContext::as_ptr(ctx) as *const u64;
        unsafe {
            Some(Raw([
                0,
                core::ptr::read_volatile(p.add(1)),
                core::ptr::read_volatile(p.add(2)),
                core::ptr::read_volatile(p.add(3)),
            ]))
        }
    }

    #[inline(always)]
    fn word(&self, off: usize) -> u64 {
        // A match, not an index: constant stack offsets keep the verifier simple.
        match (off >> 3) & 3 {
            0 => self.0[0],
            1 => self.0[1],
            2 => self.0[2],
            _ => self.0[3],
        }
    }

    #[inline(always)]
    pub fn u64_at(&self, off: &'static u32) -> u64 {
        self.word(g(off))
    }

    #[inline(always)]
    pub fn u32_at(&self, off: &'static u32) -> u32 {
        let o = g(off);
        (self.word(o) >> ((o & 4) * 8)) as u32
    }
}

#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(16 << 20, 0);

/// Watched processes (tgid -> 1). Userspace seeds it; fork adds children, exit removes.
#[map]
pub static WATCHED: HashMap<u32, u32> = HashMap::with_max_entries(65536, 0);

/// Per-thread attribution slot (tid -> TaskSlot), only for threads of watched processes.
#[map]
pub static TASKS: HashMap<u32, TaskSlot> = HashMap::with_max_entries(65536, 0);

/// User page faults of watched threads that exited, per tgid (live threads count in TASKS).
#[map]
pub static FAULTS: PerCpuHashMap<u32, u64> = PerCpuHashMap::with_max_entries(65536, 0);

/// mm_id -> owning tgid, learned from `curr=1` rss changes.
#[map]
pub static MM_OWNER: HashMap<u32, u32> = HashMap::with_max_entries(65536, 0);

/// (mm_id, member) -> last counter size seen, to turn sizes into deltas.
#[map]
pub static LAST_SIZE: HashMap<u64, i64> = HashMap::with_max_entries(262144, 0);

/// User stacks of page-adding faults, with `--stacks` (ids are hashes of the frames).
#[map]
pub static STACKS: StackTrace = StackTrace::with_max_entries(16384, 0);

#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::N, 0);

#[inline(always)]
pub fn count(idx: u32) {
    if let Some(p) = COUNTERS.get_ptr_mut(idx) {
        unsafe { *p += 1 };
    }
}

/// Count `idx`; true when this CPU's counter just went 0 -> 1. A rare condition then logs one
/// line per CPU, not one per occurrence (the counter keeps the total).
#[inline(always)]
pub fn count_first(idx: u32) -> bool {
    match COUNTERS.get_ptr_mut(idx) {
        Some(p) => unsafe {
            *p += 1;
            *p == 1
        },
        None => false,
    }
}

/// Bits of [`LOGGED`]: cold conditions that have no counter of their own to tell the first time.
pub mod once {
    pub const TASKS_FULL: u32 = 1;
    pub const UNKNOWN_MEMBER: u32 = 2;
}

/// Per-CPU bits of the [`once`] conditions already logged on that CPU. Touched only on cold paths.
#[map]
static LOGGED: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// True the first time `bit` is asked on this CPU.
#[inline(always)]
pub fn first_on_cpu(bit: u32) -> bool {
    match LOGGED.get_ptr_mut(0) {
        Some(p) => unsafe {
            let first = *p & bit == 0;
            *p |= bit;
            first
        },
        None => false,
    }
}

#[inline(always)]
pub fn pid_tgid() -> (u32, u32) {
    let v = aya_ebpf::helpers::bpf_get_current_pid_tgid();
    ((v >> 32) as u32, v as u32)
}

/// Whether process `tgid` is watched. A miss is cached per CPU ([`UNWATCHED`]) until the next
/// insert into WATCHED: most faults and rss changes on a host are unwatched processes', and a
/// hash lookup (a call, and its own calls, each paying the return thunk here) is most of what
/// they cost.
#[inline(always)]
pub fn is_watched(tgid: u32) -> bool {
    let gen = watch_gen();
    if cached_unwatched(tgid, gen) {
        return false;
    }
    if WATCHED.get_ptr(tgid).is_some() {
        return true;
    }
    if let Some(e) = UNWATCHED.get_ptr_mut(tgid & (UNWATCHED_WAYS - 1)) {
        unsafe { *e = Unwatched { tgid, _pad: 0, gen } };
    }
    false
}

/// Add `tgid` to WATCHED, then bump the generation that voids every cached "not watched".
/// Every insert into WATCHED goes through here (userspace's bump their own generation).
#[inline(always)]
pub fn watch(tgid: u32) -> Result<(), i64> {
    WATCHED.insert(tgid, 1, 0)?;
    if let Some(p) = WATCH_GEN.get_ptr_mut(0) {
        // Atomic: programs on several CPUs may insert at once, and a lost bump could leave a
        // stale "not watched" valid.
        // (core's atomics have no read-modify-write for this target: BPF_ATOMIC | BPF_ADD by hand.)
        unsafe { core::arch::asm!("lock *(u64 *)({p} + 0) += {one}", p = in(reg) p, one = in(reg) 1u64) };
    }
    Ok(())
}

/// Watch-set generations: `[0]` bumped by the programs after each insert into WATCHED ([`watch`]),
/// `[1]` by userspace after each of its own (a single writer, so it can write, not add). A
/// cached "not watched" holds while both are as they were when WATCHED was looked up.
#[map]
pub static WATCH_GEN: Array<u64> = Array::with_max_entries(2, 0);

/// Both generations in one value (each is monotonic, so the pair never repeats).
#[inline(always)]
fn watch_gen() -> u64 {
    let read = |i| WATCH_GEN.get_ptr(i).map_or(u64::MAX, |p| unsafe { core::ptr::read_volatile(p) });
    read(0) ^ read(1).rotate_left(32)
}

/// A process found not watched on this CPU, and the watch-set generation it was looked up in.
#[repr(C)]
#[derive(Clone, Copy)]
struct Unwatched {
    tgid: u32,
    _pad: u32,
    gen: u64,
}

const UNWATCHED_WAYS: u32 = 256;

/// Per CPU, direct-mapped by tgid: processes found not in WATCHED (see [`is_watched`]). Per-CPU
/// array lookups are inlined by the verifier: no call.
#[map]
static UNWATCHED: PerCpuArray<Unwatched> = PerCpuArray::with_max_entries(UNWATCHED_WAYS, 0);

/// `tgid` was found not watched on this CPU and WATCHED has had no insert since: it is not
/// watched, and none of its threads has a slot (slots are made for watched processes only, and
/// dropped when they leave). The hot programs test this before their TASKS lookup.
#[inline(always)]
pub fn known_unwatched(tgid: u32) -> bool {
    cached_unwatched(tgid, watch_gen())
}

#[inline(always)]
fn cached_unwatched(tgid: u32, gen: u64) -> bool {
    match UNWATCHED.get_ptr(tgid & (UNWATCHED_WAYS - 1)) {
        Some(e) => unsafe { (*e).tgid == tgid && (*e).gen == gen },
        None => false,
    }
}

/// The slot of `tid`, created idle if missing. None only when the map is full (counted, and
/// logged once per CPU).
#[inline(always)]
pub fn task_slot(tid: u32) -> Option<*mut TaskSlot> {
    slot_or_insert(tid, true)
}

/// [`task_slot`] for page_fault_user: a full map is counted, not logged. That program carries
/// no logging code at all: its JIT image is allocated just before rss_stat's, and growing it
/// (787 -> 3847 bytes with the log call) moved rss_stat to a placement where it measured ~7%
/// more ns per run for the same instructions. page_fault_kernel logs instead.
#[inline(always)]
pub fn task_slot_unlogged(tid: u32) -> Option<*mut TaskSlot> {
    slot_or_insert(tid, false)
}

#[inline(always)]
fn slot_or_insert(tid: u32, log_full: bool) -> Option<*mut TaskSlot> {
    if let Some(p) = TASKS.get_ptr_mut(tid) {
        return Some(p);
    }
    let tgid = (aya_ebpf::helpers::bpf_get_current_pid_tgid() >> 32) as u32;
    if TASKS.insert(tid, TaskSlot { tgid, ..TaskSlot::IDLE }, 0).is_err() {
        if log_full {
            cold_tasks_full(tid, tgid);
        } else {
            count(counter::MAP_FULL);
        }
        return None;
    }
    TASKS.get_ptr_mut(tid)
}

/// Cold: TASKS is full (counted; logged once per CPU, as it can repeat on every syscall).
#[inline(never)]
#[unsafe(no_mangle)]
pub extern "C" fn cold_tasks_full(tid: u32, tgid: u32) -> u32 {
    count(counter::MAP_FULL);
    if first_on_cpu(once::TASKS_FULL) {
        error!(
            &(),
            "TASKS map full: thread {} of pid {} gets no slot, its faults go uncounted and its page changes lose their cause; raise TASKS' max_entries (logged once per CPU)",
            tid,
            tgid
        );
    }
    0
}

/// Submit flags: no wakeup unless the ring is filling up, so the reader polls on a timer.
///
/// The fill level is asked (`bpf_ringbuf_query`, a helper call: ~5-7 ns of rss_stat's ~150 per
/// run on the 2-CPU VM) on every [`WAKEUP_CHECK_EVERY`]-th record of a CPU only, told by that
/// CPU's SUBMITTED count, which every submitter bumps just before: a ring past WAKEUP_BYTES
/// wakes the reader at most that many records (~2.5 KiB) per CPU late.
#[inline(always)]
pub fn submit_flags() -> u64 {
    let check = match COUNTERS.get_ptr(counter::SUBMITTED) {
        Some(n) => unsafe { *n % WAKEUP_CHECK_EVERY == 0 },
        None => true,
    };
    if !check {
        return BPF_RB_NO_WAKEUP as u64;
    }
    let avail = EVENTS.query(aya_ebpf::bindings::BPF_RB_AVAIL_DATA as u64);
    if avail >= g(&WAKEUP_BYTES) as u64 {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

/// See [`submit_flags`].
const WAKEUP_CHECK_EVERY: u64 = 32;

/// Reserve a record, or count it lost.
#[inline(always)]
pub fn reserve<T: 'static>() -> Option<aya_ebpf::maps::ring_buf::RingBufEntry<T>> {
    let e = EVENTS.reserve::<T>(0);
    if e.is_none() {
        cold_ring_full();
    } else {
        count(counter::SUBMITTED);
    }
    e
}

/// Cold: a reservation failed (counted in LOST; logged when this CPU's count goes 0 -> 1).
#[inline(never)]
#[unsafe(no_mangle)]
pub extern "C" fn cold_ring_full() -> u32 {
    if count_first(counter::LOST) {
        warn!(
            &(),
            "EVENTS ring full: records are being lost (logged once per CPU; the summary's lost_events counts them all)"
        );
    }
    0
}

/// The current task's user registers, saved at its entry into the kernel (`task_pt_regs`, which
/// the kernel computes: no stack layout assumed here). A BTF pointer: fields are direct loads.
#[inline(always)]
pub fn user_regs() -> *const aya_ebpf::bindings::pt_regs {
    unsafe {
        let task = aya_ebpf::helpers::bpf_get_current_task_btf();
        aya_ebpf::helpers::bpf_task_pt_regs(task) as *const aya_ebpf::bindings::pt_regs
    }
}

/// The syscall the current task is in, or -1: `orig_ax` of its user registers, which the entry
/// code sets to the syscall number and to -1 in an exception or interrupt from user mode (a
/// user page fault). Replaces hooking every syscall's entry and exit.
#[inline(always)]
pub fn current_syscall() -> i64 {
    unsafe { (*user_regs()).orig_rax as i64 }
}

/// Which invocation of its syscall the current task is in, as far as its saved registers tell:
/// its user return address, stack pointer and first four arguments, mixed (a syscall leaves
/// them as they were). Two calls from the same site with the same arguments look the same.
#[inline(always)]
pub fn syscall_invocation() -> u64 {
    let r = user_regs();
    unsafe {
        (*r).rip
            ^ (*r).rsp.rotate_left(13)
            ^ (*r).rdi.rotate_left(23)
            ^ (*r).rsi.rotate_left(37)
            ^ (*r).rdx.rotate_left(47)
            ^ (*r).r10.rotate_left(53)
    }
}

/// `__USER32_CS`: the code segment of a 32-bit (ia32) task's user registers.
const USER32_CS: u64 = 0x23;

/// The current task entered the kernel from 32-bit code (an ia32 syscall): its `orig_ax` is an
/// ia32 syscall number, not an x86_64 one.
#[inline(always)]
pub fn in_ia32_syscall() -> bool {
    unsafe { (*user_regs()).cs == USER32_CS }
}

#[inline(always)]
pub fn now() -> u64 {
    unsafe { aya_ebpf::helpers::bpf_ktime_get_ns() }
}
