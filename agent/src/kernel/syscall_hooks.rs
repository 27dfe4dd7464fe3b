//! `--syscall-hooks on|off`: where a watched process's mapping changes come from.
//!
//! `on` (the default): the exits of the mapping syscalls and opens (agent-ebpf `sys_exit.rs`),
//! exact. But any enabled `syscalls:*` tracepoint puts every task of the host on the kernel's
//! traced-syscall path (TIF_SYSCALL_TRACEPOINT): a syscall-bound loop runs ~1.25x slower while
//! the agent runs, watched or not.
//!
//! `off`: no syscall tracepoint at all. New mappings come from `mmap:vm_unmapped_area`
//! (agent-ebpf `unmapped_area.rs`: the address the kernel chose, with the asking syscall's
//! arguments from the task's registers, and a file mmap's (dev, inode)); other VMA changes
//! (munmap, mprotect, madvise...) from `mmap:mmap_lock_released` (`mmap_lock.rs`), which mark
//! the map stale; /proc/PID/maps is then re-read before the next fault, and on a miss, at most
//! once per ring poll per process (see `attribution/ledger_areas.rs`).
use crate::kernel::loader::Hook;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SyscallHooks {
    /// The mapping syscalls' exits (mmap, munmap, mremap, brk, mprotect, madvise, open*): exact.
    #[default]
    On,
    /// No syscall tracepoint: mappings from mmap:vm_unmapped_area and /proc/PID/maps re-reads.
    Off,
}

/// The programs of `off` (in the loader's hook table): new areas, and VMAs changed otherwise.
pub const AREA_PROGRAM: &str = "vm_unmapped_area";
pub const LOCK_PROGRAM: &str = "mmap_lock_released";

/// What `off` gives up, in the `start` record's `missing_hooks`.
pub const OFF_LOSES: &str = "syscalls:sys_exit_* (--syscall-hooks off): mapping changes come from \
     mmap:vm_unmapped_area, mmap_lock:mmap_lock_released and /proc/PID/maps re-reads; opens are not \
     seen, so a file mmap of a process gone before its maps are read is named only if a maps line \
     showed that file (dev, inode) before, and faults made between a VMA change and the next \
     re-read of a short-lived process may keep the name the region had";

/// Whether `h` is attached in this mode: the syscall exits with `on`, vm_unmapped_area with
/// `off`, every other hook in both.
pub fn wanted(h: &Hook, mode: SyscallHooks) -> bool {
    match mode {
        SyscallHooks::On => h.program != AREA_PROGRAM && h.program != LOCK_PROGRAM,
        SyscallHooks::Off => h.category != "syscalls",
    }
}

/// Globals of `unmapped_area.rs`'s fd -> inode reads: (global, struct, member).
const FILE_FIELDS: &[(&str, &str, &str)] = &[
    ("FILES_TASK", "task_struct", "files"),
    ("FILES_FDT", "files_struct", "fdt"),
    ("FDT_MAX_FDS", "fdtable", "max_fds"),
    ("FDT_FD", "fdtable", "fd"),
    ("FILE_INODE", "file", "f_inode"),
    ("INODE_INO", "inode", "i_ino"),
    ("INODE_SB", "inode", "i_sb"),
    ("SB_DEV", "super_block", "s_dev"),
];

/// Those offsets from the kernel's BTF; empty (file mmaps of a process gone before its maps
/// are read stay unnamed, said once) when the BTF or a member is missing.
pub fn file_offsets(btf: Option<&crate::kernel::btf::Btf>) -> Vec<(&'static str, u32)> {
    btf.and_then(|b| b.member_offsets(FILE_FIELDS)).unwrap_or_else(|| {
        log::info!("no kernel BTF for task_struct.files .. super_block.s_dev: with --syscall-hooks off, file mmaps of a process gone before its maps are read stay unnamed");
        Vec::new()
    })
}
