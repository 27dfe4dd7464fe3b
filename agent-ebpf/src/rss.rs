//! `kmem:rss_stat`: join the counter change with what the task was doing (fault at an address,
//! a syscall, exit) so userspace gets "pid P added N pages at address A" instead of a fault
//! count. The record carries the counter's absolute size; userspace turns it into a delta per
//! (mm, member), in ring order (`agent/src/kernel/deltas.rs`).
use agent_common::{
    cause, counter, last_size_key, nr, rss_flags, EventHeader, EventKind, RssEvent, TaskSlot, STACK_LEAF_SKIPPED,
};
use aya_ebpf::{
    bindings::{BPF_F_USER_STACK, BPF_NOEXIST},
    helpers::bpf_get_stack,
    macros::tracepoint,
    programs::{tracing::StackIdContext, TracePointContext},
    EbpfContext as _,
};
use aya_log_ebpf::{info, warn};

use crate::state::{
    count, count_first, current_syscall, first_on_cpu, g, in_ia32_syscall, is_watched, known_unwatched, once, pid_tgid,
    reserve, submit_flags, syscall_invocation, Raw, LAST_SIZE, MM_OWNER, RSS_CURR, RSS_MEMBER, RSS_MM_ID, RSS_SIZE,
    STACKS, STACKS_ON, TASKS,
};

#[tracepoint]
pub fn rss_stat(ctx: TracePointContext) -> u32 {
    let (cur_tgid, tid) = pid_tgid();
    let Some(raw) = Raw::read(&ctx) else { return 0 };
    let mm_id = raw.u32_at(&RSS_MM_ID);
    let curr = raw.u32_at(&RSS_CURR);
    let member = raw.u32_at(&RSS_MEMBER);
    let size = raw.u64_at(&RSS_SIZE) as i64;

    let mut flags = 0;
    let mut slot_ptr: Option<*mut TaskSlot> = None;
    let (tgid, why, addr, aux, f) = if curr == 1 {
        if known_unwatched(cur_tgid) {
            return 0;
        }
        // A task with a slot belongs to a watched process: skip the watched-set lookup.
        let slot = TASKS.get_ptr_mut(tid);
        if slot.is_none() && !is_watched(cur_tgid) {
            return 0;
        }
        slot_ptr = slot;
        let register_owner = || {
            if MM_OWNER.get_ptr(mm_id).is_none() {
                // First owner wins: a vfork child briefly shares its parent's mm.
                let _ = MM_OWNER.insert(mm_id, cur_tgid, 0);
            }
        };
        match slot {
            Some(slot) => {
                let slot = unsafe { &mut *slot };
                if slot.owner_mm != mm_id {
                    register_owner();
                    slot.owner_mm = mm_id;
                }
                // The fault in the slot is still in progress: a user fault while no syscall
                // is (the task's registers say so); a kernel fault until its first change (one
                // page, or a THP's 512 in one change), made in the call of the syscall it came
                // in. No hook sees a fault end: unbounded, a kernel fault that mapped nothing
                // (the zero page) would own its syscall's later changes, such as pages pinned
                // without an exception (O_DIRECT, process_vm_writev). Otherwise the fault is
                // over and this change is the syscall's.
                let sys = current_syscall();
                let in_fault = match slot.fault_cause {
                    cause::FAULT => sys < 0,
                    cause::KERNEL_FAULT => {
                        slot.fault_fresh != 0 && sys == slot.sys_nr && syscall_invocation() == slot.sys_key
                    }
                    _ => false,
                };
                if in_fault {
                    let first = if slot.fault_fresh != 0 { rss_flags::FIRST_OF_FAULT } else { 0 };
                    slot.fault_fresh = 0;
                    // It mapped an rss page: not a hugetlb fault (see hugetlb.rs).
                    slot.quiet = 0;
                    (cur_tgid, slot.fault_cause, slot.fault_addr, slot.fault_err, first)
                } else if sys >= 0 {
                    (cur_tgid, cause::SYSCALL, 0, syscall_nr(sys), 0)
                } else {
                    (cur_tgid, cause::OTHER, 0, 0, 0)
                }
            }
            None => {
                register_owner();
                match current_syscall() {
                    sys if sys >= 0 => (cur_tgid, cause::SYSCALL, 0, syscall_nr(sys), 0),
                    _ => (cur_tgid, cause::OTHER, 0, 0, 0),
                }
            }
        }
    } else {
        // In a fork or exec, a watched task changes an mm that is not its own: the one it is
        // building (the child's copy, the new image). Its id may be an old mm's (same address):
        // reset what we knew under it at its first change. (A process known not watched has
        // no slot: no lookup.)
        let slot = if known_unwatched(cur_tgid) { None } else { TASKS.get_ptr_mut(tid) };
        if let Some(slot) = slot {
            let slot = unsafe { &mut *slot };
            let nr = current_syscall() as u64;
            let (forking, execing) = if in_ia32_syscall() {
                (
                    matches!(nr, ia32::CLONE | ia32::CLONE3 | ia32::FORK | ia32::VFORK),
                    matches!(nr, ia32::EXECVE | ia32::EXECVEAT),
                )
            } else {
                (matches!(nr, nr::CLONE | nr::CLONE3 | nr::FORK | nr::VFORK), matches!(nr, nr::EXECVE | nr::EXECVEAT))
            };
            let execing = execing && slot.owner_mm != mm_id;
            if forking || execing {
                if slot.new_mm != mm_id {
                    slot.new_mm = mm_id;
                    let _ = MM_OWNER.remove(mm_id);
                    for m in 0..4u32 {
                        let _ = LAST_SIZE.insert(last_size_key(mm_id, m), 0, 0);
                    }
                    flags |= rss_flags::NEW_MM_FIRST;
                }
                return emit(&ctx, None, mm_id, member, size, 0, tid, cause::NEW_MM, 0, 0, flags);
            }
        }
        match MM_OWNER.get_ptr(mm_id) {
            Some(owner) => {
                let owner = unsafe { *owner };
                // The owner changing its own mm while current->mm is gone: exit_mmap at exit,
                // or the old image released at exec.
                let why = if owner == cur_tgid { cause::EXIT } else { cause::REMOTE };
                (owner, why, 0, 0, 0)
            }
            None => {
                if !is_watched(cur_tgid) {
                    count(counter::UNOWNED);
                    return 0;
                }
                // A watched task without a slot building an mm it does not run on yet. Such an
                // mm starts from zero.
                let key = last_size_key(mm_id, member);
                if LAST_SIZE.get_ptr(key).is_none() {
                    for m in 0..4u32 {
                        let _ = LAST_SIZE.insert(last_size_key(mm_id, m), 0, BPF_NOEXIST as u64);
                    }
                }
                (0, cause::NEW_MM, 0, 0, 0)
            }
        }
    };
    emit(&ctx, slot_ptr, mm_id, member, size, tgid, tid, why, addr, aux, flags | f)
}

const PAGE: u64 = 4096;

/// ia32 syscall numbers (`syscall_32.tbl`) of the calls that build a new mm.
mod ia32 {
    pub const FORK: u64 = 2;
    pub const EXECVE: u64 = 11;
    pub const CLONE: u64 = 120;
    pub const VFORK: u64 = 190;
    pub const EXECVEAT: u64 = 358;
    pub const CLONE3: u64 = 435;
}

/// A syscall cause's number: none (`u64::MAX`) for an ia32 syscall, whose number names another
/// call in the x86_64 table.
#[inline(always)]
fn syscall_nr(sys: i64) -> u64 {
    if in_ia32_syscall() {
        u64::MAX
    } else {
        sys as u64
    }
}

/// The full user stack's id in STACKS, or the helper's error (counted). When the stack's bucket
/// holds another stack (-EEXIST, a hash collision), the stack without its leaf frame is taken
/// instead: it hashes elsewhere, and the id says so (STACK_LEAF_SKIPPED).
#[inline(always)]
fn stack_id(ctx: &TracePointContext) -> i32 {
    let e = match ctx.get_stackid(&STACKS, BPF_F_USER_STACK as u64) {
        Ok(id) => return id as i32,
        Err(e) => e,
    };
    let e = if e == -17 {
        match ctx.get_stackid(&STACKS, BPF_F_USER_STACK as u64 | 1) {
            Ok(id) => return id as i32 | STACK_LEAF_SKIPPED,
            Err(e) => e,
        }
    } else {
        e
    };
    cold_stack_error(e);
    e.min(-2)
}

/// Cold: `bpf_get_stackid` failed (counted in STACK_ERRORS; logged when this CPU's count goes
/// 0 -> 1, with the error).
#[inline(never)]
#[unsafe(no_mangle)]
pub extern "C" fn cold_stack_error(e: i32) -> u32 {
    // Info, not warn: the summary reports the stacks not taken, and the map's size is not a
    // user's knob; the line is there for `RUST_LOG=info` when the count looks high.
    if count_first(counter::STACK_ERRORS) {
        info!(
            &(),
            "bpf_get_stackid failed with {} (logged once per CPU, STACK_ERRORS counts them all): -17 EEXIST = a STACKS bucket holds another stack, raise STACKS' max_entries; -14 EFAULT = no readable user stack",
            e
        );
    }
    0
}

/// Cold: `kmem:rss_stat` reported a member past the four this agent knows (a newer kernel).
#[inline(never)]
#[unsafe(no_mangle)]
pub extern "C" fn cold_unknown_member(member: u32) -> u32 {
    if first_on_cpu(once::UNKNOWN_MEMBER) {
        warn!(
            &(),
            "rss_stat member {} is unknown to this agent (it knows 0 FILE, 1 ANON, 2 SWAPENTS, 3 SHMEM): its changes are left out of every RSS figure (logged once per CPU)",
            member
        );
    }
    0
}

/// Faults of a run given its stack id before its top frames are read again: a change of code
/// path inside a run of neighbouring pages is seen at most this many pages minus one late.
const RUN_CHECK_EVERY: i64 = 16;

/// A fault on the page next to the task's previous one, with the same top four user frames,
/// is the same run of code: reuse its stack id. Otherwise take the whole stack. The top frames
/// are read on every RUN_CHECK_EVERY-th fault of a run only (the faults since, in the high
/// half of `last_stack`): reading them was most of --stacks' cost per fault in a storm.
#[inline(always)]
fn stack_of_run(ctx: &TracePointContext, slot: &mut TaskSlot, addr: u64) -> i32 {
    let neighbour = addr.wrapping_sub(slot.last_addr).wrapping_add(PAGE) <= 2 * PAGE;
    slot.last_addr = addr;
    if neighbour && slot.last_stack >= 0 && (slot.last_stack >> 32) < RUN_CHECK_EVERY - 1 {
        slot.last_stack += 1 << 32;
        return slot.last_stack as i32;
    }
    let mut top = [0u64; 4];
    let n = unsafe { bpf_get_stack(ctx.as_ptr(), top.as_mut_ptr().cast(), 32, BPF_F_USER_STACK as u64) };
    if n > 0 && neighbour && slot.last_stack >= 0 && top == slot.last_top {
        slot.last_stack &= 0xffff_ffff;
        return slot.last_stack as i32;
    }
    let id = stack_id(ctx);
    slot.last_top = top;
    slot.last_stack = id as i64;
    id
}

/// `size` minus the last size of (mm, member) in LAST_SIZE, which it replaces (all of `size` the
/// first time). Kept with --stacks only.
#[inline(always)]
fn kernel_delta(mm_id: u32, member: u32, size: i64) -> i64 {
    let key = last_size_key(mm_id, member);
    match LAST_SIZE.get_ptr_mut(key) {
        Some(prev) => unsafe {
            let d = size - *prev;
            *prev = size;
            d
        },
        None => {
            let _ = LAST_SIZE.insert(key, size, 0);
            size
        }
    }
}

/// Send the record (its delta is taken in userspace, see `kernel/deltas.rs`).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn emit(
    ctx: &TracePointContext,
    slot: Option<*mut TaskSlot>,
    mm_id: u32,
    member: u32,
    size: i64,
    tgid: u32,
    tid: u32,
    why: u32,
    addr: u64,
    aux: u64,
    flags: u32,
) -> u32 {
    if member >= 4 {
        cold_unknown_member(member);
    }
    // With --stacks, the user stack of a fault that added pages: where the memory came from.
    // Only then is the delta taken here (to know it added pages); userspace takes every
    // record's delta from its size (kernel/deltas.rs), so the default path keeps no per-mm map.
    let stack_id = if g(&STACKS_ON) != 0 && matches!(why, cause::FAULT | cause::KERNEL_FAULT) {
        match (kernel_delta(mm_id, member, size) > 0, slot) {
            (false, _) => -1,
            (true, Some(slot)) => stack_of_run(ctx, unsafe { &mut *slot }, addr),
            (true, None) => stack_id(ctx),
        }
    } else {
        if g(&STACKS_ON) != 0 {
            kernel_delta(mm_id, member, size);
        }
        -1
    };

    let Some(mut e) = reserve::<RssEvent>() else { return 0 };
    e.write(RssEvent {
        // No timestamp: on this hot path bpf_ktime_get_ns costs ~65 ns, a third of the program.
        hdr: EventHeader { kind: EventKind::Rss as u32, tgid, tid, _pad: 0, ts_ns: 0 },
        mm_id,
        member,
        cause: why,
        flags,
        size,
        delta: 0,
        addr,
        aux,
        stack_id,
        _pad2: 0,
    });
    e.submit(submit_flags());
    0
}
