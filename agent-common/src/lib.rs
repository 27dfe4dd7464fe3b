//! The event ABI shared by the eBPF programs (`agent-ebpf`) and userspace (`agent`).
//!
//! Every record in the ring buffer starts with [`EventHeader`]; its `kind` is an [`EventKind`]
//! discriminant. Each struct is `#[repr(C)]` with explicit padding and no `bool`, so both sides
//! agree byte for byte. Sizes and offsets are pinned by the tests at the bottom.
#![no_std]

/// Discriminator of a ring-buffer record. Decode it with `TryFrom<u32>`, never a transmute.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// An mm counter (`kmem:rss_stat`) moved; see [`RssEvent`].
    Rss = 1,
    /// A mapping syscall (mmap, munmap, mremap, brk) returned; see [`SyscallEvent`].
    Syscall = 2,
    /// A watched process forked a child process (threads are not reported); see [`ProcEvent`].
    Fork = 3,
    /// A watched process called exec; see [`ProcEvent`].
    Exec = 4,
    /// The last thread of a watched process exited; see [`ProcEvent`].
    Exit = 5,
    /// The OOM killer chose a watched process as its victim (`oom:mark_victim`); see
    /// [`OomEvent`]. It comes before the victim's exit record.
    Oom = 6,
    /// A watched process opened a file (open, openat, openat2 returned an fd); see
    /// [`OpenEvent`]. Names its later file mmaps when /proc is gone by then.
    Open = 7,
    /// A watched thread took a write fault on a present page (copy-on-write); see [`CowEvent`].
    Cow = 8,
    /// What exec mapped in a watched process's new image (code, data, brk, stack, the
    /// interpreter's base), sent right after its [`EventKind::Exec`] record; see [`ExecMmEvent`].
    ExecMm = 9,
    /// A process not watched yet joined the watched set at a fork or exec because its v2
    /// cgroup is watched (`--cgroup`); see [`ProcEvent`] (`pid` is the process). Comes before
    /// the fork or exec record that found it.
    Join = 10,
    /// A watched process was moved out of the watched cgroups (`--cgroup`,
    /// `cgroup:cgroup_attach_task`) and left the watched set; see [`ProcEvent`].
    Leave = 12,
    /// A watched process's hugetlb mappings changed (`mm->hugetlb_usage` moved) over a user
    /// fault that changed no rss counter; see [`HugetlbEvent`].
    Hugetlb = 11,
}

impl TryFrom<u32> for EventKind {
    type Error = u32;
    fn try_from(v: u32) -> Result<Self, u32> {
        Ok(match v {
            1 => Self::Rss,
            2 => Self::Syscall,
            3 => Self::Fork,
            4 => Self::Exec,
            5 => Self::Exit,
            6 => Self::Oom,
            7 => Self::Open,
            8 => Self::Cow,
            9 => Self::ExecMm,
            10 => Self::Join,
            12 => Self::Leave,
            11 => Self::Hugetlb,
            other => return Err(other),
        })
    }
}

/// The fixed header of every record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventHeader {
    pub kind: u32,
    /// Process the record is attributed to (for a remote rss change: the mm's owner).
    pub tgid: u32,
    /// Thread that was running when the record was made.
    pub tid: u32,
    pub _pad: u32,
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC); 0 in rss records, where reading the clock would
    /// cost a third of the program on every fault (userspace orders them by ring position).
    pub ts_ns: u64,
}

/// `kmem:rss_stat` members, as the kernel numbers them.
pub mod member {
    pub const FILE: u32 = 0;
    pub const ANON: u32 = 1;
    pub const SWAPENTS: u32 = 2;
    pub const SHMEM: u32 = 3;
}

/// Why an mm counter moved: what the task was doing when `kmem:rss_stat` fired.
pub mod cause {
    /// Nothing we track was in progress.
    pub const OTHER: u32 = 0;
    /// A user-mode page fault (`exceptions:page_fault_user`) at `addr`.
    pub const FAULT: u32 = 1;
    /// A kernel-mode fault on a user address (`exceptions:page_fault_kernel`), e.g. `read()`
    /// into a fresh buffer; `addr` is the user address.
    pub const KERNEL_FAULT: u32 = 2;
    /// A syscall was running; `aux` is its number (mmap+MAP_POPULATE, munmap, madvise, mlock...).
    pub const SYSCALL: u32 = 3;
    /// The owning process tore its mm down (exit, or the old image at exec).
    pub const EXIT: u32 = 4;
    /// Another task changed this mm (reclaim, khugepaged, process_vm_writev...).
    pub const REMOTE: u32 = 5;
    /// A watched task built an mm it does not run on yet (the child's copy at fork, the new
    /// image at exec). `tgid` is 0: the owner is learned from its first own change.
    pub const NEW_MM: u32 = 6;
}

/// Flags of [`RssEvent::flags`].
pub mod rss_flags {
    /// The first counter change since this fault began: count the fault once.
    pub const FIRST_OF_FAULT: u32 = 1;
    /// No earlier size was known for this (mm, member): `delta` is `size - 0` and userspace must
    /// seed it (from `/proc/PID/status`) or drop it.
    pub const UNSEEDED: u32 = 2;
    /// The first change of an mm just created (cause NEW_MM): forget anything known under its
    /// mm_id (an mm freed before may have had the same address, hence the same id).
    pub const NEW_MM_FIRST: u32 = 4;
}

/// Set in a stack id taken without its leaf frame: the whole stack's bucket in `STACKS` held
/// another stack (a hash collision), so the kernel was asked again one frame up, which hashes
/// elsewhere. The id in the map is the stack id without this bit.
pub const STACK_LEAF_SKIPPED: i32 = 1 << 30;

/// An mm counter change joined in the kernel with what caused it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RssEvent {
    pub hdr: EventHeader,
    /// `rss_stat.mm_id`: a hash of the mm pointer.
    pub mm_id: u32,
    /// One of [`member`].
    pub member: u32,
    /// One of [`cause`].
    pub cause: u32,
    /// [`rss_flags`].
    pub flags: u32,
    /// Absolute counter value in bytes after the change.
    pub size: i64,
    /// Change in bytes since the previous event of this (mm, member).
    pub delta: i64,
    /// Faulting user address for `FAULT`/`KERNEL_FAULT`, else 0.
    pub addr: u64,
    /// Syscall number for `SYSCALL`, fault error code for faults.
    pub aux: u64,
    /// With `--stacks`: the user stack of a fault that added pages, an id in the `STACKS` map
    /// (with [`STACK_LEAF_SKIPPED`] set when it was taken without its leaf frame); negative when
    /// none was taken (-1: not asked; other: the helper's error).
    pub stack_id: i32,
    pub _pad2: u32,
}

/// Syscall numbers (x86_64) of the calls that change mappings.
pub mod nr {
    pub const OPEN: u64 = 2;
    pub const MMAP: u64 = 9;
    pub const MPROTECT: u64 = 10;
    pub const MUNMAP: u64 = 11;
    pub const BRK: u64 = 12;
    pub const MREMAP: u64 = 25;
    pub const CLONE: u64 = 56;
    pub const FORK: u64 = 57;
    pub const VFORK: u64 = 58;
    pub const EXECVE: u64 = 59;
    pub const EXECVEAT: u64 = 322;
    pub const OPENAT: u64 = 257;
    pub const CLONE3: u64 = 435;
    pub const OPENAT2: u64 = 437;
}

/// A mapping syscall that returned successfully, with its arguments.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyscallEvent {
    pub hdr: EventHeader,
    pub nr: u64,
    pub args: [u64; 6],
    pub ret: i64,
}

/// Per-thread state of a watched task (the `TASKS` map): what it is doing right now, as far as
/// rss attribution cares, and its fault count. Userspace reads the counts.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskSlot {
    /// The syscall a kernel fault in progress came in (`orig_ax`, -1 outside one): that fault's
    /// rss changes are the ones made while it still runs. The syscall a task is in is read from
    /// its saved registers, not kept here.
    pub sys_nr: i64,
    /// Which invocation of `sys_nr` that kernel fault came in (`state::syscall_invocation`: a
    /// mix of its user return address, stack pointer and first four arguments). A later change
    /// made in another invocation of the same syscall is not the fault's.
    pub sys_key: u64,
    /// Address of the fault in progress (valid while `fault_cause != 0`).
    pub fault_addr: u64,
    pub fault_err: u64,
    /// `cause::FAULT`, `cause::KERNEL_FAULT` or 0.
    pub fault_cause: u32,
    /// Set at fault entry, cleared by the first rss change that fault makes. A kernel fault
    /// owns that first change only (see `rss.rs`).
    pub fault_fresh: u32,
    /// The mm whose owner this task already registered in MM_OWNER (saves a lookup per event).
    pub owner_mm: u32,
    /// The mm this task is building in a fork/exec syscall, once reset.
    pub new_mm: u32,
    /// With --stacks: the last fault's address, its top four user frames and its stack id, so
    /// a run of faults on neighbouring pages from the same code reuses the id instead of
    /// walking and hashing the whole stack again.
    pub last_addr: u64,
    pub last_top: [u64; 4],
    pub last_stack: i64,
    /// User faults this task took (added to `FAULTS` when it exits).
    pub faults: u64,
    pub tgid: u32,
    /// 1 from a fault entry on a page that was not present until that fault's first rss
    /// change: still 1 at the next fault, the fault mapped no rss page (a hugetlb page, the
    /// zero page, or nothing), and `hugetlb.rs` looks at the mm's hugetlb counter.
    pub quiet: u32,
}

impl TaskSlot {
    pub const IDLE: TaskSlot = TaskSlot {
        sys_nr: -1,
        sys_key: 0,
        fault_addr: 0,
        fault_err: 0,
        fault_cause: 0,
        fault_fresh: 0,
        owner_mm: 0,
        new_mm: 0,
        last_addr: 0,
        last_top: [0; 4],
        last_stack: -1,
        faults: 0,
        tgid: 0,
        quiet: 0,
    };
}

pub const COMM_LEN: usize = 16;

/// Fork, exec or exit of a watched process.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcEvent {
    pub hdr: EventHeader,
    /// Fork: the child's pid. Exec/exit: the process's pid.
    pub pid: u32,
    /// Fork: the parent's tgid. Others: 0.
    pub ppid: u32,
    pub comm: [u8; COMM_LEN],
}

/// A user write fault on a present page (`error_code` has both the protection and the write
/// bit): in a private mapping, a copy-on-write (a page shared with a fork partner, the zero
/// page, or a private file page made private). Sent at fault entry, before the rss changes the
/// fault makes (a COW of an anonymous page makes none). `hdr.ts_ns` is 0.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CowEvent {
    pub hdr: EventHeader,
    /// The faulting user address.
    pub addr: u64,
    /// The fault's error code.
    pub err: u64,
}

/// The OOM killer's victim, as `oom:mark_victim` describes it. `hdr.tgid` is the victim's
/// process, `hdr.tid` the thread that ran the OOM killer (often the victim itself).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OomEvent {
    pub hdr: EventHeader,
    /// The tracepoint's `pid`: the victim task (a thread of `hdr.tgid`).
    pub pid: u32,
    /// The victim's uid.
    pub uid: u32,
    pub comm: [u8; COMM_LEN],
    /// The kernel's figures for the victim's mm when it was chosen, in KiB (the tracepoint
    /// converts pages to KiB: its print format says kB).
    pub total_vm_kib: u64,
    pub anon_rss_kib: u64,
    pub file_rss_kib: u64,
    pub shmem_rss_kib: u64,
    pub pgtables_kib: u64,
    /// The victim's `oom_score_adj` (a `short` in the kernel).
    pub oom_score_adj: i32,
    pub _pad: u32,
}

/// Bytes of an opened path kept in [`OpenEvent`] (NUL-terminated; longer paths are cut).
pub const PATH_LEN: usize = 256;

/// A file a watched process opened, with the fd it got: the path as the process passed it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenEvent {
    pub hdr: EventHeader,
    pub fd: i32,
    /// Bytes of `path` read (with the NUL), or a negative error: unreadable.
    pub len: i32,
    pub path: [u8; PATH_LEN],
}

impl Default for OpenEvent {
    fn default() -> Self {
        OpenEvent { hdr: EventHeader::default(), fd: 0, len: 0, path: [0; PATH_LEN] }
    }
}

/// Pairs of `mm->saved_auxv` the exec program scans for [`ExecMmEvent`]'s entries.
pub const AUXV_PAIRS: u32 = 24;

/// The new image's layout at `sched:sched_process_exec`, read from the task's mm (offsets from
/// the kernel's BTF): exec maps the binary, the interpreter and the stack itself, with no mmap
/// syscall, so a process gone before `/proc/PID/maps` is read is named from this. A field the
/// kernel did not give is 0.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExecMmEvent {
    pub hdr: EventHeader,
    pub start_code: u64,
    pub end_code: u64,
    pub start_data: u64,
    pub end_data: u64,
    pub start_brk: u64,
    pub start_stack: u64,
    /// End of the environment strings: the stack's top page holds it.
    pub env_end: u64,
    /// auxv AT_BASE: the interpreter's load base (0: no interpreter).
    pub at_base: u64,
    /// auxv AT_PHDR and AT_ENTRY.
    pub at_phdr: u64,
    pub at_entry: u64,
    /// auxv AT_SYSINFO_EHDR: where the vDSO is mapped.
    pub at_sysinfo_ehdr: u64,
    /// Bytes of `filename` read (with the NUL), or a negative error.
    pub len: i32,
    pub _pad: u32,
    /// The tracepoint's `filename`: the path exec was given (NUL-terminated, cut at PATH_LEN).
    pub filename: [u8; PATH_LEN],
}

impl Default for ExecMmEvent {
    fn default() -> Self {
        ExecMmEvent {
            hdr: EventHeader::default(),
            start_code: 0,
            end_code: 0,
            start_data: 0,
            end_data: 0,
            start_brk: 0,
            start_stack: 0,
            env_end: 0,
            at_base: 0,
            at_phdr: 0,
            at_entry: 0,
            at_sysinfo_ehdr: 0,
            len: 0,
            _pad: 0,
            filename: [0; PATH_LEN],
        }
    }
}

/// The hugetlb pages a watched process maps, after a user fault that changed no rss counter
/// moved them (hugetlb faults never fire `kmem:rss_stat`). Sent at the task's next fault entry
/// (there is no fault-exit tracepoint): `addr` is the earlier fault's address. `pages` is the
/// mm's `hugetlb_usage`, absolute, in base pages (a 2 MiB page is 512).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HugetlbEvent {
    pub hdr: EventHeader,
    pub addr: u64,
    pub pages: i64,
    /// `pages` minus the last value the kernel saw for this process (all of `pages` the
    /// first time).
    pub delta: i64,
}

/// Indices of the per-CPU `COUNTERS` array.
pub mod counter {
    /// Ring-buffer reservations that failed: records lost.
    pub const LOST: u32 = 0;
    /// Task-slot or watched-set insertions refused because a map was full.
    pub const MAP_FULL: u32 = 1;
    /// Remote (curr=0) rss changes of an mm whose owner was never learned.
    pub const UNOWNED: u32 = 2;
    /// Records put in the ring buffer.
    pub const SUBMITTED: u32 = 3;
    /// `bpf_get_stackid` failures (hash collisions in a full map, unreadable stacks).
    pub const STACK_ERRORS: u32 = 4;
    pub const N: u32 = 5;
}

/// Map and global names, shared so neither side spells them twice.
pub mod names {
    pub const EVENTS: &str = "EVENTS";
    pub const WATCHED: &str = "WATCHED";
    pub const FAULTS: &str = "FAULTS";
    pub const COUNTERS: &str = "COUNTERS";
    pub const MM_OWNER: &str = "MM_OWNER";
    pub const LAST_SIZE: &str = "LAST_SIZE";
    pub const STACKS: &str = "STACKS";
    pub const TASKS: &str = "TASKS";
    pub const WATCHED_CGROUPS: &str = "WATCHED_CGROUPS";
    pub const SHMEM_PAGES: &str = "SHMEM_PAGES";
}

/// Key of `WATCHED_CGROUPS`: a cgroup's id (its directory's inode number) with its hierarchy id
/// (0 for v2, as `/proc/PID/cgroup` numbers them) in the top byte.
#[inline(always)]
pub const fn cgroup_key(root: u32, id: u64) -> u64 {
    id ^ ((root as u64) << 56)
}

/// Key of `LAST_SIZE`: (mm_id, member).
#[inline(always)]
pub const fn last_size_key(mm_id: u32, member: u32) -> u64 {
    ((mm_id as u64) << 32) | member as u64
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    unsafe impl aya::Pod for EventHeader {}
    unsafe impl aya::Pod for RssEvent {}
    unsafe impl aya::Pod for SyscallEvent {}
    unsafe impl aya::Pod for ProcEvent {}
    unsafe impl aya::Pod for OomEvent {}
    unsafe impl aya::Pod for OpenEvent {}
    unsafe impl aya::Pod for TaskSlot {}
    unsafe impl aya::Pod for CowEvent {}
    unsafe impl aya::Pod for ExecMmEvent {}
    unsafe impl aya::Pod for HugetlbEvent {}
}

#[cfg(test)]
mod tests {
    use core::mem::{offset_of, size_of};

    use super::*;

    #[test]
    fn header_layout() {
        assert_eq!(size_of::<EventHeader>(), 24);
        assert_eq!(offset_of!(EventHeader, kind), 0);
        assert_eq!(offset_of!(EventHeader, tgid), 4);
        assert_eq!(offset_of!(EventHeader, tid), 8);
        assert_eq!(offset_of!(EventHeader, ts_ns), 16);
    }

    #[test]
    fn rss_layout() {
        assert_eq!(size_of::<RssEvent>(), 80);
        assert_eq!(offset_of!(RssEvent, stack_id), 72);
        assert_eq!(offset_of!(RssEvent, mm_id), 24);
        assert_eq!(offset_of!(RssEvent, member), 28);
        assert_eq!(offset_of!(RssEvent, cause), 32);
        assert_eq!(offset_of!(RssEvent, flags), 36);
        assert_eq!(offset_of!(RssEvent, size), 40);
        assert_eq!(offset_of!(RssEvent, delta), 48);
        assert_eq!(offset_of!(RssEvent, addr), 56);
        assert_eq!(offset_of!(RssEvent, aux), 64);
    }

    #[test]
    fn syscall_and_proc_layout() {
        assert_eq!(size_of::<SyscallEvent>(), 88);
        assert_eq!(offset_of!(SyscallEvent, nr), 24);
        assert_eq!(offset_of!(SyscallEvent, args), 32);
        assert_eq!(offset_of!(SyscallEvent, ret), 80);
        assert_eq!(size_of::<ProcEvent>(), 48);
        assert_eq!(offset_of!(ProcEvent, pid), 24);
        assert_eq!(offset_of!(ProcEvent, ppid), 28);
        assert_eq!(offset_of!(ProcEvent, comm), 32);
    }

    #[test]
    fn cow_layout() {
        assert_eq!(size_of::<CowEvent>(), 40);
        assert_eq!(offset_of!(CowEvent, addr), 24);
        assert_eq!(offset_of!(CowEvent, err), 32);
        assert_eq!(EventKind::try_from(8), Ok(EventKind::Cow));
    }

    #[test]
    fn oom_layout() {
        assert_eq!(size_of::<OomEvent>(), 96);
        assert_eq!(offset_of!(OomEvent, pid), 24);
        assert_eq!(offset_of!(OomEvent, uid), 28);
        assert_eq!(offset_of!(OomEvent, comm), 32);
        assert_eq!(offset_of!(OomEvent, total_vm_kib), 48);
        assert_eq!(offset_of!(OomEvent, anon_rss_kib), 56);
        assert_eq!(offset_of!(OomEvent, file_rss_kib), 64);
        assert_eq!(offset_of!(OomEvent, shmem_rss_kib), 72);
        assert_eq!(offset_of!(OomEvent, pgtables_kib), 80);
        assert_eq!(offset_of!(OomEvent, oom_score_adj), 88);
    }

    #[test]
    fn open_layout() {
        assert_eq!(size_of::<OpenEvent>(), 288);
        assert_eq!(offset_of!(OpenEvent, fd), 24);
        assert_eq!(offset_of!(OpenEvent, len), 28);
        assert_eq!(offset_of!(OpenEvent, path), 32);
    }

    #[test]
    fn exec_mm_layout() {
        assert_eq!(size_of::<ExecMmEvent>(), 376);
        assert_eq!(offset_of!(ExecMmEvent, start_code), 24);
        assert_eq!(offset_of!(ExecMmEvent, start_stack), 64);
        assert_eq!(offset_of!(ExecMmEvent, env_end), 72);
        assert_eq!(offset_of!(ExecMmEvent, at_base), 80);
        assert_eq!(offset_of!(ExecMmEvent, at_entry), 96);
        assert_eq!(offset_of!(ExecMmEvent, at_sysinfo_ehdr), 104);
        assert_eq!(offset_of!(ExecMmEvent, len), 112);
        assert_eq!(offset_of!(ExecMmEvent, filename), 120);
        assert_eq!(EventKind::try_from(9), Ok(EventKind::ExecMm));
    }

    #[test]
    fn hugetlb_layout() {
        assert_eq!(size_of::<HugetlbEvent>(), 48);
        assert_eq!(offset_of!(HugetlbEvent, addr), 24);
        assert_eq!(offset_of!(HugetlbEvent, pages), 32);
        assert_eq!(offset_of!(HugetlbEvent, delta), 40);
        assert_eq!(EventKind::try_from(11), Ok(EventKind::Hugetlb));
    }

    #[test]
    fn task_slot_layout() {
        assert_eq!(size_of::<TaskSlot>(), 112);
        assert_eq!(offset_of!(TaskSlot, sys_key), 8);
        assert_eq!(offset_of!(TaskSlot, fault_addr), 16);
        assert_eq!(offset_of!(TaskSlot, fault_fresh), 36);
        assert_eq!(offset_of!(TaskSlot, last_top), 56);
        assert_eq!(offset_of!(TaskSlot, faults), 96);
        assert_eq!(offset_of!(TaskSlot, tgid), 104);
        assert_eq!(offset_of!(TaskSlot, quiet), 108);
    }

    #[test]
    fn kind_round_trip_and_unknown() {
        for k in [
            EventKind::Rss,
            EventKind::Syscall,
            EventKind::Fork,
            EventKind::Exec,
            EventKind::Exit,
            EventKind::Oom,
            EventKind::Open,
            EventKind::Cow,
            EventKind::ExecMm,
        ] {
            assert_eq!(EventKind::try_from(k as u32), Ok(k));
        }
        assert_eq!(EventKind::try_from(0), Err(0));
        assert_eq!(EventKind::try_from(99), Err(99));
    }

    #[test]
    fn last_size_key_packs() {
        assert_eq!(last_size_key(0xdead_beef, 3), 0xdead_beef_0000_0003);
    }
}
