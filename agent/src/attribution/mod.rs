//! Attribution: pages per process × mapping × cause, from the kernel's events alone.
//!
//! Pure: nothing here reads /proc. What the ledger must learn from outside (a process's maps on
//! a lookup miss, the seeds of a process that existed before the watch, a name) comes through
//! [`ProcSource`], answered by [`crate::proc_facts::Procfs`] in the agent and by a fake in the
//! unit tests.
pub mod activity;
pub mod exec_image;
pub mod ledger;
pub mod mappings;
pub mod process;
pub mod rss_trace;

pub use ledger::Ledger;
pub use mappings::{MappingId, MappingMap};
pub use process::Proc;

/// The /proc facts the ledger asks for. Every answer may be `None`: the process can be gone.
///
/// Calls are synchronous on purpose: a lookup miss must be answered before the next record of
/// that process is attributed, or pages would land in a mapping the answer would have named.
pub trait ProcSource: Send {
    /// Parent pid and name.
    fn facts(&self, pid: u32) -> Option<(u32, String)>;
    /// Its mappings now.
    fn maps(&self, pid: u32) -> Option<MappingMap>;
    /// Bytes per rss member (FILE, ANON, SWAPENTS, SHMEM) now, to seed the first kernel delta.
    fn rss_seed(&self, pid: u32) -> Option<[i64; 4]>;
    /// Its name if it is a zombie (exited, not reaped): never a new process's under that number.
    fn zombie_comm(&self, pid: u32) -> Option<String>;
    /// Its name now (prctl renames make no event).
    fn comm(&self, pid: u32) -> Option<String>;
    /// An absolute path with its symlinks resolved, as `/proc/PID/maps` names a mapped file.
    fn real_path(&self, path: &str) -> Option<String>;
    /// An ELF file's loadable segments and interpreter (see [`exec_image::parse`]).
    fn elf_image(&self, path: &str) -> Option<exec_image::ElfImage>;
    /// Bytes of the vDSO exec maps (the same image in every process of this kernel).
    fn vdso_len(&self) -> Option<u64>;
    /// The hugetlb pages it maps now, in base pages (`/proc/PID/status` HugetlbPages).
    fn hugetlb_pages(&self, _pid: u32) -> Option<i64> {
        None
    }
    /// Its VMAs that hold hugetlb pages: (start, base pages), from `/proc/PID/smaps`.
    fn hugetlb_vmas(&self, _pid: u32) -> Option<Vec<(u64, i64)>> {
        None
    }
    /// The path of the file (kernel `dev_t`, inode) as a maps line of any process showed it.
    fn file_name(&self, _dev: u32, _ino: u64) -> Option<std::sync::Arc<str>> {
        None
    }
}

/// A /proc for unit tests: the maps a test put there for a pid, nothing else; and how often the
/// ledger asked for maps.
#[cfg(test)]
#[derive(Clone, Default)]
pub struct FakeProc {
    pub maps: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<u32, MappingMap>>>,
    pub asked: std::sync::Arc<std::sync::Mutex<u32>>,
    /// ELF images by path.
    pub elfs: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, exec_image::ElfImage>>>,
}

#[cfg(test)]
impl ProcSource for FakeProc {
    fn facts(&self, _: u32) -> Option<(u32, String)> {
        None
    }
    fn maps(&self, pid: u32) -> Option<MappingMap> {
        *self.asked.lock().unwrap() += 1;
        self.maps.lock().unwrap().get(&pid).cloned()
    }
    fn rss_seed(&self, _: u32) -> Option<[i64; 4]> {
        None
    }
    fn zombie_comm(&self, _: u32) -> Option<String> {
        None
    }
    fn comm(&self, _: u32) -> Option<String> {
        None
    }
    fn real_path(&self, _: &str) -> Option<String> {
        None
    }
    fn elf_image(&self, path: &str) -> Option<exec_image::ElfImage> {
        self.elfs.lock().unwrap().get(path).cloned()
    }
    fn vdso_len(&self) -> Option<u64> {
        Some(0x2000)
    }
}
