//! Kernel settings the hugetlb and backing tests change, put back when the guard drops (a test
//! that fails or panics too).
#![allow(dead_code)]

use std::path::PathBuf;

/// A sysctl-like file set for the guard's life.
pub struct Setting {
    path: PathBuf,
    old: String,
}

impl Setting {
    fn read(path: &str) -> String {
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path}: {e}"))
    }

    fn set(path: &str, old: String, new: &str) -> Setting {
        std::fs::write(path, new).unwrap_or_else(|e| panic!("write {new} to {path}: {e}"));
        Setting { path: path.into(), old }
    }

    /// `count` more huge pages of `kib` KiB each reserved than there were; the guard and how
    /// many the kernel gave (it may give fewer: memory too fragmented for 1 GiB pages).
    pub fn huge_pages(kib: u64, count: u64) -> (Setting, u64) {
        let path = format!("/sys/kernel/mm/hugepages/hugepages-{kib}kB/nr_hugepages");
        let old = Setting::read(&path);
        let before: u64 = old.trim().parse().expect("a number");
        let free_path = format!("/sys/kernel/mm/hugepages/hugepages-{kib}kB/free_hugepages");
        let free_before: u64 = Setting::read(&free_path).trim().parse().expect("a number");
        let guard = Setting::set(&path, old, &(before + count).to_string());
        let free: u64 = Setting::read(&free_path).trim().parse().expect("a number");
        (guard, free.saturating_sub(free_before).min(count))
    }

    /// `/sys/kernel/mm/transparent_hugepage/shmem_enabled` set to `mode`.
    pub fn shmem_thp(mode: &str) -> Setting {
        let path = "/sys/kernel/mm/transparent_hugepage/shmem_enabled";
        let cur = Setting::read(path);
        // "always within_size advise [never] deny force": the bracketed one is in force.
        let old = cur.split(['[', ']']).nth(1).unwrap_or("never").to_string();
        Setting::set(path, old, mode)
    }
}

/// Ask the kernel to compact all memory now (`/proc/sys/vm/compact_memory`): free 2 MiB blocks
/// for transparent huge pages, which a fault gets only if one is free (or compaction finds one)
/// at that moment. Returns how long it took.
pub fn compact_memory() -> std::time::Duration {
    let t = std::time::Instant::now();
    std::fs::write("/proc/sys/vm/compact_memory", "1")
        .unwrap_or_else(|e| panic!("write /proc/sys/vm/compact_memory: {e}"));
    t.elapsed()
}

impl Drop for Setting {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(&self.path, self.old.trim()) {
            eprintln!("could not put {} back to {}: {e}", self.path.display(), self.old.trim());
        }
    }
}

/// A hugetlbfs mounted on a fresh directory, unmounted and removed when the guard drops.
pub struct HugetlbFs(pub PathBuf);

impl HugetlbFs {
    pub fn mount() -> HugetlbFs {
        let dir = std::env::temp_dir().join(format!("agent-hugetlbfs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the mount point");
        let st = std::process::Command::new("mount")
            .args(["-t", "hugetlbfs", "-o", "pagesize=2M", "none"])
            .arg(&dir)
            .status()
            .expect("run mount");
        assert!(st.success(), "mount -t hugetlbfs on {}: {st}", dir.display());
        HugetlbFs(dir)
    }
}

impl Drop for HugetlbFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}
