//! What the kernel side's maps hold and how they are named and keyed: the per-thread
//! [`TaskSlot`], the counter indices, the map names, the keys.

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
    /// `[1]`: bumped by userspace after each insert into WATCHED (agent-ebpf `state::is_watched`).
    pub const WATCH_GEN: &str = "WATCH_GEN";
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
