//! The workloads with more than a few lines to them: several processes on a schedule (leakmix,
//! scale, sawtooth, prefork), many mappings (vmas), two processes on one mm (clonevm).
use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use agent::demo::procs::{fork_child, map, map_alone, page_size, set_name, touch, wait_all, MIB};

use crate::workload::{hold, wait_go, Common};

/// Call `step(i)` every `every` until `total` has passed since `start`.
pub(crate) fn paced(start: Instant, total: Duration, every: Duration, mut step: impl FnMut(usize)) {
    let mut i = 0;
    while start.elapsed() < total {
        step(i);
        i += 1;
        if let Some(wait) = (every * i as u32).checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
    }
}

pub fn leakmix(total: Duration) {
    let start = Instant::now();
    let rest = move || std::thread::sleep(total.saturating_sub(start.elapsed()));
    let chunk = 256 * 1024;
    let shm = format!("/dev/shm/agent-leakmix-{}", std::process::id());
    let shm_child = shm.clone();
    let kids = vec![
        fork_child("leaker", move || {
            paced(start, total, Duration::from_millis(125), |_| touch(map(chunk, false), chunk, Duration::ZERO))
        }),
        fork_child("churner", move || {
            let n = 8 * MIB;
            paced(start, total, Duration::from_millis(50), |_| {
                let p = map(n, false);
                touch(p, n, Duration::ZERO);
                // SAFETY: unmapping what we mapped.
                unsafe { libc::munmap(p.cast(), n) };
            })
        }),
        fork_child("filler", move || {
            std::thread::sleep(total / 2);
            let n = 128 * MIB;
            touch(map(n, false), n, Duration::ZERO);
            rest();
        }),
        fork_child("holder", move || {
            let n = 64 * MIB;
            touch(map(n, false), n, Duration::ZERO);
            rest();
        }),
        fork_child("shm-grower", move || {
            use std::os::fd::AsRawFd;
            let max = 512 * MIB;
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&shm_child)
                .expect("create the /dev/shm file");
            f.set_len(max as u64).expect("size the /dev/shm file");
            // SAFETY: shared mapping of a file we own, checked below.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    max,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    f.as_raw_fd(),
                    0,
                )
            };
            assert!(p != libc::MAP_FAILED);
            let step = 128 * 1024;
            paced(start, total, Duration::from_millis(125), |i| {
                if (i + 1) * step <= max {
                    // SAFETY: inside the mapping.
                    touch(unsafe { p.cast::<u8>().add(i * step) }, step, Duration::ZERO)
                }
            });
        }),
    ];
    wait_all(&kids);
    let _ = std::fs::remove_file(&shm);
}

pub fn scale(procs: usize, len: usize, growers: usize, total: Duration) {
    let start = Instant::now();
    let seg = map(len, true) as usize;
    let slice = (len / procs.max(1)) / page_size() * page_size();
    let kids: Vec<i32> = (0..procs)
        .map(|i| {
            let name = if i < growers { format!("grower-{i}") } else { format!("member-{i}") };
            fork_child(&name, move || {
                touch((seg + i * slice) as *mut u8, slice, Duration::ZERO);
                if i < growers {
                    let chunk = 64 * 1024;
                    paced(start, total, Duration::from_millis(125), |_| {
                        touch(map(chunk, false), chunk, Duration::ZERO)
                    });
                } else {
                    std::thread::sleep(total.saturating_sub(start.elapsed()));
                }
            })
        })
        .collect();
    wait_all(&kids);
}

pub fn vmas(n: usize, by_mprotect: bool, pages_per: usize, c: &Common) {
    set_name("wl-vmas");
    let pg = page_size() * pages_per;
    let (rw, rwx) = (libc::PROT_READ | libc::PROT_WRITE, libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC);
    let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
    // SAFETY: fresh anonymous mappings, checked; mprotect within the one just made.
    let pages: Vec<*mut u8> = unsafe {
        if by_mprotect {
            let p = libc::mmap(std::ptr::null_mut(), n * pg, rw, flags, -1, 0);
            assert!(p != libc::MAP_FAILED, "mmap: {}", std::io::Error::last_os_error());
            let p = p.cast::<u8>();
            for i in (1..n).step_by(2) {
                assert_eq!(libc::mprotect(p.add(i * pg).cast(), pg, rwx), 0);
            }
            (0..n).map(|i| p.add(i * pg)).collect()
        } else {
            (0..n)
                .map(|i| {
                    let p = libc::mmap(std::ptr::null_mut(), pg, if i % 2 == 0 { rw } else { rwx }, flags, -1, 0);
                    assert!(p != libc::MAP_FAILED, "mmap: {}", std::io::Error::last_os_error());
                    p.cast::<u8>()
                })
                .collect()
        }
    };
    for p in &pages {
        eprintln!("wl-vmas: {:#x}", *p as usize);
    }
    wait_go(c);
    for &p in &pages {
        touch(p, pg, Duration::ZERO);
    }
    hold(c.hold);
}

pub fn clonevm(child_mib: usize, c: &Common) {
    set_name("wl-clonevm");
    const STACK: usize = 256 * 1024;
    extern "C" fn child(arg: *mut libc::c_void) -> libc::c_int {
        // SAFETY: arg points at the parent's (mib, hold), alive until we are reaped.
        let (mib, hold_s) = unsafe { *arg.cast::<(usize, f64)>() };
        // prctl only: the mm (and so its name tables) is the parent's, the comm is ours.
        set_name("wl-clonevm-c");
        let p = map(mib * MIB, false);
        touch(p, mib * MIB, Duration::ZERO);
        hold(hold_s);
        // SAFETY: leave without running the parent's atexit handlers.
        unsafe { libc::_exit(0) }
    }
    let mut args = (child_mib, c.hold);
    let stack = map(STACK, false);
    // SAFETY: the child runs on its own stack and only touches `args` and its own mapping.
    let pid =
        unsafe { libc::clone(child, stack.add(STACK).cast(), libc::CLONE_VM | libc::SIGCHLD, (&raw mut args).cast()) };
    assert!(pid > 0, "clone: {}", std::io::Error::last_os_error());
    // The child first, then the parent: the bug gave the child's ledger only its own pages.
    hold(0.5);
    let p = map(c.mib * MIB, false);
    touch(p, c.mib * MIB, Duration::ZERO);
    wait_all(&[pid]);
}

pub fn sawtooth(ramp: Duration, mib_s: f64, cycles: u32, leaker_mib_s: f64) {
    let (start, every, tail) = (Instant::now(), Duration::from_millis(125), Duration::from_secs(2));
    let per_step = |mib_s: f64| ((mib_s * MIB as f64 / 8.0) as usize).next_multiple_of(page_size());
    let mut kids = vec![fork_child("sawtooth", move || {
        let (step, len) = (per_step(mib_s), (mib_s * ramp.as_secs_f64()) as usize * MIB);
        for _ in 0..cycles {
            let p = map(len, false);
            paced(Instant::now(), ramp, every, |i| {
                if (i + 1) * step <= len {
                    touch(p.wrapping_add(i * step), step, Duration::ZERO)
                }
            });
            // SAFETY: unmapping what we mapped.
            unsafe { libc::munmap(p.cast(), len) };
        }
        std::thread::sleep(tail);
    })];
    if leaker_mib_s > 0.0 {
        let step = per_step(leaker_mib_s);
        kids.push(fork_child("leaker", move || {
            paced(start, ramp * cycles + tail, every, |_| touch(map(step, false), step, Duration::ZERO))
        }));
    }
    wait_all(&kids);
}

pub fn prefork(heap_len: usize, workers: usize, rate_mib_s: f64, once: usize, total: Duration) {
    // A VMA of its own: no neighbour the parent writes after the fork shares its mapping.
    let heap = map_alone(heap_len);
    touch(heap, heap_len, Duration::ZERO);
    let (start, heap) = (Instant::now(), heap as usize);
    let step = ((rate_mib_s * MIB as f64 / 8.0) as usize).next_multiple_of(page_size());
    let kids: Vec<i32> = (0..workers)
        .map(|i| {
            fork_child(&format!("wl-worker-{i}"), move || {
                let heap = heap as *mut u8;
                if i == 0 && step > 0 {
                    paced(start, total, Duration::from_millis(125), |k| {
                        if (k + 1) * step <= heap_len {
                            touch(heap.wrapping_add(k * step), step, Duration::ZERO)
                        }
                    });
                } else {
                    touch(heap, once.min(heap_len), Duration::ZERO);
                    std::thread::sleep(total.saturating_sub(start.elapsed()));
                }
            })
        })
        .collect();
    wait_all(&kids);
}

/// The fault storm (`Workload::Storm`); 1 if its report could not be written.
pub fn storm(mib: usize, passes: usize, parallel: usize, report: Option<PathBuf>) -> i32 {
    set_name("wl-storm");
    let len = mib * MIB;
    let storm = move || {
        for _ in 0..passes {
            let p = map(len, false);
            touch(p, len, Duration::ZERO);
            // SAFETY: unmapping what we mapped.
            unsafe { libc::munmap(p.cast(), len) };
        }
    };
    let t = Instant::now();
    if parallel > 1 {
        let kids: Vec<i32> = (0..parallel).map(|i| fork_child(&format!("wl-storm-{i}"), storm)).collect();
        wait_all(&kids);
    } else {
        storm();
    }
    let who = if parallel > 1 { libc::RUSAGE_CHILDREN } else { libc::RUSAGE_SELF };
    let wall_s = t.elapsed().as_secs_f64();
    let (cpu_s, _) = agent::proc_facts::rusage(who);
    if let Some(path) = report {
        let faults = (parallel * passes * len / page_size()) as u64;
        let json = serde_json::json!({ "wall_s": wall_s, "cpu_s": cpu_s, "faults": faults });
        if let Err(e) = std::fs::write(&path, format!("{json}\n")) {
            eprintln!("workloads storm: writing the report {}: {e}", path.display());
            return 1;
        }
    }
    0
}

/// Create a file of `c.mib`, then mmap it and read every page (`Workload::File`).
pub fn file(c: &Common, path: &Path) {
    set_name("wl-file");
    let len = c.mib * MIB;
    std::fs::write(path, vec![7u8; len]).expect("write the test file");
    wait_go(c);
    let f = std::fs::File::open(path).expect("open the test file");
    // SAFETY: read-only private file mapping of a file we just wrote, checked below.
    let p = unsafe {
        use std::os::fd::AsRawFd;
        libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_PRIVATE, f.as_raw_fd(), 0)
    };
    assert!(p != libc::MAP_FAILED);
    let mut sum = 0u64;
    for i in 0..len / page_size() {
        // SAFETY: inside the mapping.
        sum += unsafe { std::ptr::read_volatile(p.cast::<u8>().add(i * page_size())) } as u64;
    }
    assert_eq!(sum, 7 * (len / page_size()) as u64);
    hold(c.hold);
    let _ = std::fs::remove_file(path);
}
