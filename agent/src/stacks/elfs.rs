//! The ELF files behind a process's modules: where to read each from (its path, or the process's
//! own mapping of it when the path no longer names it), and their build ids.
use std::{
    collections::HashMap,
    fs::File,
    os::{fd::AsRawFd as _, unix::fs::MetadataExt as _},
    path::Path,
    sync::Arc,
};

/// Open ELF files of binaries whose path no longer names them, kept for the agent's lifetime.
#[derive(Default)]
pub struct Elfs {
    /// (pid, module as its maps name it) -> the path to read it from.
    by_module: HashMap<(u32, Arc<str>), Arc<str>>,
    /// (device, inode) -> the open file and its `/proc/self/fd/N` path.
    open: HashMap<(u64, u64), (File, Arc<str>)>,
    /// GNU build ids (hex) by the path we read the ELF from.
    build_ids: HashMap<Arc<str>, Option<Arc<str>>>,
}

/// Deleted or replaced binaries kept open at most.
const MAX_OPEN_ELFS: usize = 256;

impl Elfs {
    /// Forget what was learned of `pid`'s modules (the files kept open stay).
    pub fn forget_pid(&mut self, pid: u32) {
        self.by_module.retain(|(p, _), _| *p != pid);
    }

    /// The GNU build id of the ELF read at `elf`, hex.
    pub fn build_id(&mut self, elf: &Arc<str>) -> Option<Arc<str>> {
        if let Some(b) = self.build_ids.get(elf) {
            return b.clone();
        }
        let b = blazesym::helper::read_elf_build_id(Path::new(&**elf)).ok().flatten().map(|bytes| {
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            Arc::<str>::from(hex)
        });
        self.build_ids.insert(elf.clone(), b.clone());
        b
    }

    /// Where to read `module` of `pid` (mapped at `ip`) from: its path while that still names
    /// the mapped file, else the mapped file itself, opened through the process while it lives.
    pub fn path_of(&mut self, pid: u32, module: &Arc<str>, ip: u64) -> Arc<str> {
        if let Some(p) = self.by_module.get(&(pid, module.clone())) {
            return p.clone();
        }
        let path = self.capture(pid, module, ip).unwrap_or_else(|| module.clone());
        self.by_module.insert((pid, module.clone()), path.clone());
        path
    }

    fn capture(&mut self, pid: u32, module: &str, ip: u64) -> Option<Arc<str>> {
        let file = map_file(pid, ip)?;
        let meta = file.metadata().ok()?;
        let id = (meta.dev(), meta.ino());
        let same = std::fs::metadata(module).is_ok_and(|m| (m.dev(), m.ino()) == id);
        if same {
            return None;
        }
        if let Some((_, p)) = self.open.get(&id) {
            return Some(p.clone());
        }
        if self.open.len() >= MAX_OPEN_ELFS {
            log::debug!("{module} of pid {pid} was replaced or deleted; too many such files open to keep it");
            return None;
        }
        let path: Arc<str> = format!("/proc/self/fd/{}", file.as_raw_fd()).into();
        self.open.insert(id, (file, path.clone()));
        Some(path)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_id_of_this_test_binary_is_hex_and_a_non_elf_has_none() {
        let mut elfs = Elfs::default();
        let exe: Arc<str> = std::fs::read_link("/proc/self/exe").unwrap().to_string_lossy().into();
        let id = elfs.build_id(&exe).expect("the toolchain links a GNU build id");
        assert!(id.len() >= 16 && id.chars().all(|c| c.is_ascii_hexdigit()), "{id}");
        assert_eq!(elfs.build_id(&exe), Some(id), "cached");
        assert_eq!(elfs.build_id(&Arc::from("/proc/self/status")), None);
    }
}
