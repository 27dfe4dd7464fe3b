//! Workloads on every kind of shared backing (issue 9): hugetlb pages with a known count, and a
//! leaker into each backing (hugetlb memfd, SysV shm, THP shmem, a MAP_SHARED file on ext4, a
//! memfd). The tests reserve the huge pages and set `shmem_enabled` themselves.
use std::{
    ffi::CString,
    time::{Duration, Instant},
};

use agent::demo::procs::{fork_child, page_size, set_name, wait_all, MIB};
use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum BackingWorkload {
    /// `wl-hugetlb`: map --pages huge pages of --size-mib (2 or 1024) from --backing, write
    /// every huge page twice (the second pass maps nothing new), hold --hold seconds. Backings:
    /// `memfd` (`wl-huge`), `anon` (MAP_PRIVATE|MAP_HUGETLB), `sysv` (shmget SHM_HUGETLB, key
    /// 0x5a5b0000 + pid low bits), `file` (--path, a file on a hugetlbfs mount). With --tail, a
    /// fault on an ordinary page follows the last huge page (else the agent's interval audit
    /// finds it). With --populate (memfd, anon) the mmap maps them all (MAP_POPULATE, as DPDK
    /// does) and nothing is written: no user fault.
    Hugetlb {
        #[arg(long, default_value_t = 8)]
        pages: usize,
        #[arg(long, default_value_t = 2)]
        size_mib: usize,
        #[arg(long, default_value = "memfd")]
        backing: String,
        #[arg(long)]
        path: Option<std::path::PathBuf>,
        #[arg(long)]
        tail: bool,
        #[arg(long)]
        populate: bool,
        #[arg(long, default_value_t = 1.5)]
        hold: f64,
    },
    /// `wl-zeroread`: read one byte of each page of a fresh private anonymous mapping of --mib,
    /// --passes times (a new mapping each): every fault maps the zero page and changes no rss
    /// counter, the worst case of the hugetlb check (each fault after the first looks).
    Zeroread {
        #[arg(long, default_value_t = 512)]
        mib: usize,
        #[arg(long, default_value_t = 2)]
        passes: usize,
    },
    /// One leaker child per backing, each adding --kib-s KiB per second (in 125 ms steps; THP
    /// shmem in whole 2 MiB pages) until --duration: `huge-leaker` (hugetlb memfd
    /// `wl-leak-huge`, 2 MiB pages, 20 at most: reserve them), `sysv-leaker` (shmget key 0x5a5a0000 + pid low bits),
    /// `thp-leaker` (MAP_SHARED|MAP_ANONYMOUS with MADV_HUGEPAGE), `file-leaker` (a file under
    /// --dir, MAP_SHARED, written), `memfd-leaker` (memfd `wl-leak-memfd`); and `steady`, which
    /// fills a memfd once and holds it. --only names the leakers to run (default: all). With
    /// --report FILE, thp-leaker writes there, before it exits, what the kernel gave it (the
    /// test's known answer: 2 MiB pages depend on free memory): `steps=S huge=H small_faults=F
    /// pmd_kib=P rss_kib=R`, its 2 MiB steps, how many got a 2 MiB page (one fault), the minor
    /// faults (getrusage) of the others, and its mapping's ShmemPmdMapped and Rss (smaps).
    Backings {
        #[arg(long, default_value_t = 30.0)]
        duration: f64,
        #[arg(long, default_value_t = 1024)]
        kib_s: usize,
        #[arg(long, default_value = "/var/tmp")]
        dir: std::path::PathBuf,
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        #[arg(long)]
        report: Option<std::path::PathBuf>,
    },
}

pub fn run(b: BackingWorkload) -> i32 {
    match b {
        BackingWorkload::Hugetlb { pages, size_mib, backing, path, tail, populate, hold } => {
            set_name("wl-hugetlb");
            let huge = size_mib * MIB;
            let len = pages * huge;
            let populate = if populate { libc::MAP_POPULATE } else { 0 };
            let p = match backing.as_str() {
                "anon" => map_huge_anon(len, size_mib, populate),
                "sysv" => sysv(0x5a5b_0000, len, libc::SHM_HUGETLB),
                "file" => {
                    use std::os::fd::IntoRawFd;
                    let path = path.expect("--backing file needs --path");
                    let mut f = std::fs::OpenOptions::new();
                    f.read(true).write(true).create(true).truncate(true);
                    let fd = f.open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).into_raw_fd();
                    map_fd(fd, len, 0)
                }
                _ => map_fd(memfd("wl-huge", size_mib), len, populate),
            };
            for _ in 0..if populate != 0 { 0 } else { 2 } {
                for i in 0..pages {
                    // SAFETY: inside the mapping.
                    unsafe { std::ptr::write_volatile(p.add(i * huge), 1) };
                }
            }
            if tail {
                // A fault that adds an ordinary page after the last huge one.
                let small = agent::demo::procs::map(page_size(), false);
                // SAFETY: one page we mapped.
                unsafe { std::ptr::write_volatile(small, 1) };
            }
            std::thread::sleep(Duration::from_secs_f64(hold));
        }
        BackingWorkload::Zeroread { mib, passes } => {
            set_name("wl-zeroread");
            let t = Instant::now();
            let mut sum = 0u64;
            for _ in 0..passes {
                let len = mib * MIB;
                let p = agent::demo::procs::map(len, false);
                for off in (0..len).step_by(page_size()) {
                    // SAFETY: inside the mapping.
                    sum += u64::from(unsafe { std::ptr::read_volatile(p.add(off)) });
                }
                // SAFETY: unmapping what we mapped.
                unsafe { libc::munmap(p.cast(), len) };
            }
            eprintln!("wl-zeroread: {:.3} s ({sum})", t.elapsed().as_secs_f64());
        }
        BackingWorkload::Backings { duration, kib_s, dir, only, report } => {
            leakers(Duration::from_secs_f64(duration), kib_s, &dir, &only, report)
        }
    }
    0
}

fn leakers(total: Duration, kib_s: usize, dir: &std::path::Path, only: &[String], report: Option<std::path::PathBuf>) {
    let start = Instant::now();
    let step = kib_s * 1024 / 8;
    let max = 1024 * MIB;
    let want = |n: &str| only.is_empty() || only.iter().any(|o| o == n);
    let mut kids = Vec::new();
    // Grows `p` (`cap` bytes) by `chunk` bytes every `every` until the end.
    let grow = move |p: *mut u8, cap: usize, chunk: usize, every: Duration| {
        let mut i = 0;
        while start.elapsed() < total && (i + 1) * chunk <= cap {
            for off in (i * chunk..(i + 1) * chunk).step_by(page_size()) {
                // SAFETY: inside the mapping (checked against `cap`).
                unsafe { std::ptr::write_volatile(p.add(off), 1) };
            }
            i += 1;
            if let Some(w) = (every * i as u32).checked_sub(start.elapsed()) {
                std::thread::sleep(w);
            }
        }
        std::thread::sleep(total.saturating_sub(start.elapsed()));
    };
    let every = Duration::from_millis(125);
    if want("huge-leaker") {
        // Whole 2 MiB pages, as often as the rate allows (1 MiB/s: one every 2 s).
        let per = Duration::from_secs_f64(2048.0 / kib_s as f64);
        // 20 pages (40 MiB): a shared hugetlb mapping reserves all its pages at mmap.
        kids.push(fork_child("huge-leaker", move || {
            grow(map_fd(memfd("wl-leak-huge", 2), 40 * MIB, 0), 40 * MIB, 2 * MIB, per)
        }));
    }
    if want("sysv-leaker") {
        kids.push(fork_child("sysv-leaker", move || grow(sysv(0x5a5a_0000, max, 0), max, step, every)));
    }
    if want("thp-leaker") {
        let per = Duration::from_secs_f64(2048.0 / kib_s as f64);
        kids.push(fork_child("thp-leaker", move || {
            // 2 MiB-aligned, so each 2 MiB step is one huge page.
            let p = agent::demo::procs::map(max + 2 * MIB, true);
            let p = ((p as usize + 2 * MIB - 1) & !(2 * MIB - 1)) as *mut u8;
            // SAFETY: advising our own mapping.
            unsafe { libc::madvise(p.cast(), max, libc::MADV_HUGEPAGE) };
            // grow's steps, with the minor faults each one's writes took (the kernel's count): a
            // step that got a 2 MiB page took one in the mapping (any other is the child's own
            // first write to a stack page), one that fell back to 4 KiB pages took 512.
            let write = |from: usize, to: usize| {
                let before = minor_faults();
                for off in (from..to).step_by(page_size()) {
                    // SAFETY: inside the mapping (checked against `max`).
                    unsafe { std::ptr::write_volatile(p.add(off), 1) };
                }
                minor_faults() - before
            };
            write(0, 0); // its stack pages, written once before the count
            let (mut steps, mut huge, mut small_faults) = (0, 0, 0);
            while start.elapsed() < total && (steps + 1) * 2 * MIB <= max {
                match write(steps * 2 * MIB, (steps + 1) * 2 * MIB) {
                    f if f < 512 => huge += 1,
                    f => small_faults += f,
                }
                steps += 1;
                if let Some(w) = (per * steps as u32).checked_sub(start.elapsed()) {
                    std::thread::sleep(w);
                }
            }
            std::thread::sleep(total.saturating_sub(start.elapsed()));
            if let Some(path) = report {
                let (pmd, rss) = smaps_of(p as usize, &["ShmemPmdMapped:", "Rss:"]);
                let line =
                    format!("steps={steps} huge={huge} small_faults={small_faults} pmd_kib={pmd} rss_kib={rss}\n");
                std::fs::write(&path, line).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            }
        }));
    }
    if want("file-leaker") {
        let path = dir.join(format!("agent-backings-{}.dat", std::process::id()));
        let path2 = path.clone();
        kids.push(fork_child("file-leaker", move || {
            use std::os::fd::IntoRawFd;
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path2)
                .expect("create the file");
            f.set_len(max as u64).expect("size the file");
            grow(map_fd(f.into_raw_fd(), max, 0), max, step, every)
        }));
        eprintln!("file-leaker: {}", path.display());
        kids_cleanup_later(path);
    }
    if want("memfd-leaker") {
        kids.push(fork_child("memfd-leaker", move || {
            grow(map_fd(memfd("wl-leak-memfd", 0), max, 0), max, step, every)
        }));
    }
    if want("steady") {
        kids.push(fork_child("steady", move || {
            let n = 32 * MIB;
            grow(map_fd(memfd("wl-steady", 0), n, 0), n, n, total)
        }));
    }
    wait_all(&kids);
    for p in CLEANUP.lock().unwrap().drain(..) {
        let _ = std::fs::remove_file(p);
    }
}

/// This process's minor faults so far (the kernel's count).
fn minor_faults() -> i64 {
    // SAFETY: getrusage into a zeroed struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    ru.ru_minflt
}

/// The KiB of two `fields` of the /proc/self/smaps entry of the mapping holding `addr`.
fn smaps_of(addr: usize, fields: &[&str; 2]) -> (u64, u64) {
    let smaps = std::fs::read_to_string("/proc/self/smaps").expect("read /proc/self/smaps");
    let mut inside = false;
    let mut got = [0u64; 2];
    for l in smaps.lines() {
        // A mapping's header starts `start-end `, in hex; its fields follow it.
        let range = l.split_once(' ').and_then(|(r, _)| r.split_once('-'));
        let hex = |h: &str| usize::from_str_radix(h, 16).ok();
        if let Some((a, b)) = range.and_then(|(a, b)| Some((hex(a)?, hex(b)?))) {
            inside = (a..b).contains(&addr);
        } else if inside {
            for (i, f) in fields.iter().enumerate() {
                if let Some(v) = l.strip_prefix(f) {
                    got[i] = v.trim().trim_end_matches("kB").trim().parse().unwrap_or(0);
                }
            }
        }
    }
    (got[0], got[1])
}

static CLEANUP: std::sync::Mutex<Vec<std::path::PathBuf>> = std::sync::Mutex::new(Vec::new());

fn kids_cleanup_later(p: std::path::PathBuf) {
    CLEANUP.lock().unwrap().push(p);
}

/// A memfd named `name`; `huge_mib` 2 or 1024: backed by hugetlb pages of that size.
pub(crate) fn memfd(name: &str, huge_mib: usize) -> i32 {
    let flags = match huge_mib {
        0 => 0,
        1024 => libc::MFD_HUGETLB | libc::MFD_HUGE_1GB,
        _ => libc::MFD_HUGETLB | libc::MFD_HUGE_2MB,
    };
    let c = CString::new(name).expect("no NUL");
    // SAFETY: a valid C string.
    let fd = unsafe { libc::memfd_create(c.as_ptr(), flags) };
    assert!(fd >= 0, "memfd_create({name}): {}", std::io::Error::last_os_error());
    fd
}

/// MAP_SHARED (| `flags`) of `len` bytes of `fd` (sized to `len` first).
pub(crate) fn map_fd(fd: i32, len: usize, flags: i32) -> *mut u8 {
    // SAFETY: plain syscalls on our own fd, checked.
    unsafe {
        assert!(libc::ftruncate(fd, len as i64) == 0, "ftruncate: {}", std::io::Error::last_os_error());
        let p =
            libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED | flags, fd, 0);
        assert!(p != libc::MAP_FAILED, "mmap {len}: {}", std::io::Error::last_os_error());
        p.cast()
    }
}

fn map_huge_anon(len: usize, size_mib: usize, populate: i32) -> *mut u8 {
    let size = if size_mib == 1024 { libc::MAP_HUGE_1GB } else { libc::MAP_HUGE_2MB };
    let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_HUGETLB | size | populate;
    // SAFETY: anonymous mapping, checked.
    let p = unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, flags, -1, 0) };
    assert!(p != libc::MAP_FAILED, "mmap MAP_HUGETLB {len}: {}", std::io::Error::last_os_error());
    p.cast()
}

/// A SysV segment of `len` bytes (`flags`: SHM_HUGETLB or 0), key `base` + our pid's low 16
/// bits, attached and marked for removal (it goes when we detach).
fn sysv(base: i32, len: usize, flags: i32) -> *mut u8 {
    let key = base | (std::process::id() as i32 & 0xffff);
    // SAFETY: plain syscalls, checked.
    unsafe {
        let id = libc::shmget(key, len, libc::IPC_CREAT | libc::IPC_EXCL | flags | 0o600);
        assert!(id >= 0, "shmget: {}", std::io::Error::last_os_error());
        let p = libc::shmat(id, std::ptr::null(), 0);
        assert!(p as isize != -1, "shmat: {}", std::io::Error::last_os_error());
        libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut());
        eprintln!("sysv: key {key:#010x} id {id}");
        p.cast()
    }
}
