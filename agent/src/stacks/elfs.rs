//! The ELF files behind a process's modules, opened by the agent (root) for the symbolizer
//! helper, which may not open them itself: each is the file the process has mapped, opened
//! through `/proc/PID/map_files` (right for a deleted or replaced binary, and for a path that
//! names another file in the agent's mount namespace than in a container's), else by its path.
use std::{
    collections::{HashMap, VecDeque},
    fs::File,
    os::{
        fd::{AsFd as _, BorrowedFd},
        unix::fs::MetadataExt as _,
    },
    sync::Arc,
};

use super::helper::Helper;

/// ELF files kept open at most; the oldest is closed to open another.
const MAX_OPEN_ELFS: usize = 256;

/// The agent's number for one open ELF file (never reused).
pub type ElfId = u64;

#[derive(Default)]
pub struct Elfs {
    /// (pid, module as its maps name it) -> the file (none: it could not be opened).
    by_module: HashMap<(u32, Arc<str>), Option<ElfId>>,
    /// (device, inode) -> the file's number, so one binary mapped by many is opened once.
    by_inode: HashMap<(u64, u64), ElfId>,
    files: HashMap<ElfId, (File, (u64, u64))>,
    /// Open files, oldest first.
    order: VecDeque<ElfId>,
    next: ElfId,
    /// GNU build ids (hex) by file.
    build_ids: HashMap<ElfId, Option<Arc<str>>>,
}

impl Elfs {
    /// Forget what was learned of `pid`'s modules (the files kept open stay).
    pub fn forget_pid(&mut self, pid: u32) {
        self.by_module.retain(|(p, _), _| *p != pid);
    }

    /// The open file of `id`, while it is open.
    pub fn fd(&self, id: ElfId) -> Option<BorrowedFd<'_>> {
        self.files.get(&id).map(|(f, _)| f.as_fd())
    }

    /// The GNU build id of file `id`, hex, read by the helper.
    pub fn build_id(&mut self, id: ElfId, helper: &mut Helper) -> Option<Arc<str>> {
        if let Some(b) = self.build_ids.get(&id) {
            return b.clone();
        }
        let fd = self.fd(id)?;
        let b = helper.build_id(id, fd).map(Arc::<str>::from);
        self.build_ids.insert(id, b.clone());
        b
    }

    /// The file `module` of `pid` (mapped at `ip`) is read from: opened now if not yet. A file
    /// closed to make room is closed in the helper too.
    pub fn file_of(&mut self, pid: u32, module: &Arc<str>, ip: u64, helper: &mut Helper) -> Option<ElfId> {
        if let Some(&id) = self.by_module.get(&(pid, module.clone())) {
            if id.is_none_or(|id| self.files.contains_key(&id)) {
                return id;
            }
        }
        let id = self.open(pid, module, ip, helper);
        self.by_module.insert((pid, module.clone()), id);
        id
    }

    fn open(&mut self, pid: u32, module: &str, ip: u64, helper: &mut Helper) -> Option<ElfId> {
        // The process's own mapping; once it is gone, the path (as before the helper).
        let Some(file) = map_file(pid, ip).or_else(|| File::open(module).ok()) else {
            log::debug!("{module} of pid {pid}: neither its mapping nor its path can be opened");
            return None;
        };
        let meta = file.metadata().ok()?;
        if !meta.is_file() {
            return None;
        }
        let inode = (meta.dev(), meta.ino());
        if let Some(&id) = self.by_inode.get(&inode) {
            return Some(id);
        }
        if self.files.len() >= MAX_OPEN_ELFS {
            if let Some(old) = self.order.pop_front() {
                if let Some((_, ino)) = self.files.remove(&old) {
                    self.by_inode.remove(&ino);
                }
                self.build_ids.remove(&old);
                helper.close(old);
            }
        }
        let id = self.next;
        self.next += 1;
        self.files.insert(id, (file, inode));
        self.by_inode.insert(inode, id);
        self.order.push_back(id);
        Some(id)
    }
}

/// The file `pid` has mapped at `ip`, opened through `/proc/PID/map_files`.
pub fn map_file(pid: u32, ip: u64) -> Option<File> {
    let dir = format!("/proc/{pid}/map_files");
    for e in std::fs::read_dir(&dir).ok()?.flatten() {
        let name = e.file_name();
        let (s, t) = name.to_str()?.split_once('-')?;
        let (s, t) = (u64::from_str_radix(s, 16).ok()?, u64::from_str_radix(t, 16).ok()?);
        if (s..t).contains(&ip) {
            return File::open(e.path()).ok();
        }
    }
    None
}
