//! The records of the ring buffer: the header every one starts with, its kind, and each
//! kind's `#[repr(C)]` struct.

/// Declares [`EventKind`] and its `TryFrom<u32>` from one list, so that no kind is in one and
/// not the other.
macro_rules! event_kinds {
    ($($(#[$doc:meta])* $kind:ident = $value:literal,)*) => {
        /// Discriminator of a ring-buffer record. Decode it with `TryFrom<u32>`, never a transmute.
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum EventKind {
            $($(#[$doc])* $kind = $value,)*
        }

        impl EventKind {
            /// Every kind, as declared.
            pub const ALL: &'static [EventKind] = &[$(EventKind::$kind),*];
        }

        impl TryFrom<u32> for EventKind {
            type Error = u32;
            fn try_from(v: u32) -> Result<Self, u32> {
                match v {
                    $($value => Ok(Self::$kind),)*
                    other => Err(other),
                }
            }
        }
    };
}

event_kinds! {
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
    /// The kernel chose where a watched process's new mapping goes (`mmap:vm_unmapped_area`,
    /// `--syscall-hooks off`); see [`AreaEvent`].
    Area = 13,
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
    /// One of [`member`](crate::member).
    pub member: u32,
    /// One of [`cause`](crate::cause).
    pub cause: u32,
    /// [`rss_flags`](crate::rss_flags).
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

/// A mapping syscall that returned successfully, with its arguments.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyscallEvent {
    pub hdr: EventHeader,
    pub nr: u64,
    pub args: [u64; 6],
    pub ret: i64,
}

/// An address range the kernel found for a new mapping (before it is made), with the syscall
/// the task is in (`u64::MAX`: an ia32 task's, not named) and its arguments from its registers.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AreaEvent {
    pub hdr: EventHeader,
    pub nr: u64,
    pub args: [u64; 6],
    pub addr: u64,
    pub len: u64,
    /// A file mmap's file as /proc/PID/maps shows it (the inode and its superblock's kernel
    /// `dev_t`: major << 20 | minor), read through the fd argument; 0: not a file, or unknown.
    pub ino: u64,
    pub dev: u32,
    pub _pad: u32,
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
