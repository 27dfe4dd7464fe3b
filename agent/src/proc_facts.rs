//! Reading what /proc says about a process: its tree, its rss seeds, its maps. A process that is
//! gone by the time we read is not an error: callers get `None`. [`Procfs`] answers the
//! ledger's questions ([`ProcSource`]) from here.
use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::atomic::{AtomicU64, Ordering},
};

use procfs::process::Process;

use crate::attribution::{exec_image, MappingMap, ProcSource};

/// The real /proc.
pub struct Procfs;

impl ProcSource for Procfs {
    fn facts(&self, pid: u32) -> Option<(u32, String)> {
        facts(pid).map(|f| (f.ppid, f.comm))
    }
    fn maps(&self, pid: u32) -> Option<MappingMap> {
        maps(pid)
    }
    fn rss_seed(&self, pid: u32) -> Option<[i64; 4]> {
        rss_seed(pid)
    }
    fn file_name(&self, dev: u32, ino: u64) -> Option<std::sync::Arc<str>> {
        FILE_NAMES.lock().ok()?.get_or_insert_with(seed_file_names).get(&(dev, ino)).cloned()
    }
    fn hugetlb_pages(&self, pid: u32) -> Option<i64> {
        // KiB to base pages, as the kernel's hugetlb counter counts.
        let kib = Process::new(pid as i32).ok()?.status().ok()?.hugetlbpages?;
        Some(kib as i64 * 1024 / crate::demo::procs::page_size() as i64)
    }
    fn hugetlb_vmas(&self, pid: u32) -> Option<Vec<(u64, i64)>> {
        use crate::sampling::smaps::kib;
        let page = crate::demo::procs::page_size() as i64;
        let smaps = Process::new(pid as i32).ok()?.smaps().ok()?;
        let huge = smaps.iter().map(|m| (m.address.0, (kib(m, "Shared_Hugetlb") + kib(m, "Private_Hugetlb")) as i64));
        Some(huge.filter(|&(_, k)| k > 0).map(|(s, k)| (s, k * 1024 / page)).collect())
    }
    fn zombie_comm(&self, pid: u32) -> Option<String> {
        zombie_comm(pid)
    }
    fn comm(&self, pid: u32) -> Option<String> {
        comm(pid)
    }
    fn real_path(&self, path: &str) -> Option<String> {
        Some(std::fs::canonicalize(path).ok()?.to_string_lossy().into_owned())
    }
    fn elf_image(&self, path: &str) -> Option<exec_image::ElfImage> {
        use std::io::Read;
        let mut head = Vec::with_capacity(exec_image::HEAD_BYTES);
        std::fs::File::open(path).ok()?.take(exec_image::HEAD_BYTES as u64).read_to_end(&mut head).ok()?;
        exec_image::parse(&head)
    }
    fn vdso_len(&self) -> Option<u64> {
        // Our own: the kernel maps one vDSO image into every process.
        static LEN: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
        *LEN.get_or_init(|| {
            let maps = Process::myself().ok()?.maps().ok()?;
            let m = maps.iter().find(|m| matches!(m.pathname, procfs::process::MMapPath::Vdso))?;
            Some(m.address.1 - m.address.0)
        })
    }
}

pub struct ProcFacts {
    pub ppid: u32,
    pub comm: String,
}

pub fn facts(pid: u32) -> Option<ProcFacts> {
    let stat = Process::new(pid as i32).ok()?.stat().ok()?;
    Some(ProcFacts { ppid: stat.ppid as u32, comm: stat.comm })
}

/// The name of `pid` if it is a zombie (exited, not yet reaped): the process whose exit we
/// saw, not a new one that got its number since.
pub fn zombie_comm(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (head, rest) = stat.rsplit_once(')')?;
    let state = rest.trim_start().chars().next()?;
    let comm = head.split_once('(')?.1;
    matches!(state, 'Z' | 'X').then(|| comm.to_string())
}

pub fn comm(pid: u32) -> Option<String> {
    let c = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    Some(c.trim_end_matches('\n').to_string())
}

/// CPU seconds (user + system) and peak RSS in KiB of `who` (RUSAGE_SELF, RUSAGE_CHILDREN).
pub fn rusage(who: i32) -> (f64, u64) {
    // SAFETY: getrusage into a zeroed struct.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(who, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (tv(ru.ru_utime) + tv(ru.ru_stime), ru.ru_maxrss as u64)
}

pub fn exists(pid: i32) -> bool {
    pid > 0 && std::path::Path::new(&format!("/proc/{pid}/stat")).exists()
}

/// Bytes per rss member (FILE, ANON, SWAPENTS, SHMEM), from /proc/PID/status, to seed the
/// first kernel delta of a process that existed before the watch.
pub fn rss_seed(pid: u32) -> Option<[i64; 4]> {
    let st = Process::new(pid as i32).ok()?.status().ok()?;
    let kib = |v: Option<u64>| v.unwrap_or(0) as i64 * 1024;
    Some([kib(st.rssfile), kib(st.rssanon), kib(st.vmswap), kib(st.rssshmem)])
}

/// `/proc/PID/maps` reads so far and the wall time they took (the summary's agent cost).
pub static MAPS_READS: AtomicU64 = AtomicU64::new(0);
pub static MAPS_READ_NS: AtomicU64 = AtomicU64::new(0);

pub fn maps(pid: u32) -> Option<MappingMap> {
    let t = std::time::Instant::now();
    let maps = Process::new(pid as i32).ok().and_then(|p| p.maps().ok());
    MAPS_READS.fetch_add(1, Ordering::Relaxed);
    MAPS_READ_NS.fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
    let maps = maps?;
    learn_file_names(&maps);
    Some(MappingMap::from_proc_maps(maps.iter()))
}

/// Files by (kernel `dev_t`, inode), as maps lines showed them: names a file mmap of a process
/// gone before its own maps were read (`--syscall-hooks off` sees no open). Bounded.
static FILE_NAMES: std::sync::Mutex<Option<FileNames>> = std::sync::Mutex::new(None);

/// (kernel `dev_t`, inode) -> path.
type FileNames = HashMap<(u32, u64), std::sync::Arc<str>>;

/// Files a process maps and unmaps before anyone can read its maps, so that no maps line
/// shows them: the dynamic loader's cache, mapped by every dynamically linked program.
fn seed_file_names() -> FileNames {
    use std::os::linux::fs::MetadataExt;
    let mut names = HashMap::new();
    for path in ["/etc/ld.so.cache"] {
        if let Ok(m) = std::fs::metadata(path) {
            // st_dev is the userspace encoding; the kernel's is major << 20 | minor.
            let dev = (libc::major(m.st_dev()) << 20) | libc::minor(m.st_dev());
            names.insert((dev, m.st_ino()), path.into());
        }
    }
    names
}

fn learn_file_names(maps: &procfs::process::MemoryMaps) {
    const MAX: usize = 16_384;
    let Ok(mut names) = FILE_NAMES.lock() else { return };
    let names = names.get_or_insert_with(seed_file_names);
    for m in maps.iter().filter(|m| m.inode != 0) {
        if let procfs::process::MMapPath::Path(p) = &m.pathname {
            // /proc/PID/maps prints MAJOR:MINOR of the kernel's dev_t (major << 20 | minor).
            let dev = ((m.dev.0 as u32) << 20) | m.dev.1 as u32;
            if names.len() >= MAX && !names.contains_key(&(dev, m.inode)) {
                names.clear();
            }
            names.insert((dev, m.inode), p.to_string_lossy().into());
        }
    }
}

/// `root` and all its live descendants (threads excluded), from one scan of /proc.
pub fn tree(root: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(all) = procfs::process::all_processes() {
        for p in all.flatten() {
            if let Ok(stat) = p.stat() {
                children.entry(stat.ppid as u32).or_default().push(stat.pid as u32);
            }
        }
    }
    let mut out = vec![root];
    let mut seen: HashSet<u32> = out.iter().copied().collect();
    let mut queue: VecDeque<u32> = VecDeque::from([root]);
    while let Some(p) = queue.pop_front() {
        for &c in children.get(&p).map(Vec::as_slice).unwrap_or(&[]) {
            if seen.insert(c) {
                out.push(c);
                queue.push_back(c);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_zombie_has_a_name_a_live_process_or_a_free_number_none() {
        assert_eq!(super::zombie_comm(std::process::id()), None);
        assert_eq!(super::zombie_comm(0x3fff_fff0), None);
        // SAFETY: the child only calls _exit.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            unsafe { libc::_exit(0) };
        }
        // Not reaped yet: a zombie once it has exited.
        let mut name = None;
        for _ in 0..200 {
            name = super::zombie_comm(pid as u32);
            if name.is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
        assert!(name.is_some_and(|n| !n.is_empty()));
    }
}
