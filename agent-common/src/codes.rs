//! The numbers records carry: rss members, causes, flags, syscall numbers.

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

/// Flags of [`RssEvent::flags`](crate::RssEvent::flags).
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

/// Syscall numbers (x86_64) of the calls that change mappings.
pub mod nr {
    pub const OPEN: u64 = 2;
    pub const MMAP: u64 = 9;
    pub const MPROTECT: u64 = 10;
    pub const MUNMAP: u64 = 11;
    pub const BRK: u64 = 12;
    pub const MREMAP: u64 = 25;
    pub const MADVISE: u64 = 28;
    pub const CLONE: u64 = 56;
    pub const FORK: u64 = 57;
    pub const VFORK: u64 = 58;
    pub const EXECVE: u64 = 59;
    pub const EXECVEAT: u64 = 322;
    pub const OPENAT: u64 = 257;
    pub const CLONE3: u64 = 435;
    pub const OPENAT2: u64 = 437;
}

/// A madvise advice that changes the range's VMA flags, so the kernel splits (or merges) VMAs at
/// its edges: NORMAL/RANDOM/SEQUENTIAL, DONTFORK/DOFORK, (UN)MERGEABLE, (NO)HUGEPAGE,
/// DONTDUMP/DODUMP, WIPEONFORK/KEEPONFORK. The others (DONTNEED, FREE, WILLNEED, COLD,
/// PAGEOUT, POPULATE_*, ...) drop or bring pages but leave the VMAs as they were.
#[inline(always)]
pub fn madvise_splits(advice: u64) -> bool {
    matches!(advice, 0..=2 | 10..=19)
}
