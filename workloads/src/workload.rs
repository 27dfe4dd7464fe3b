//! Workloads with known answers, driven by the integration tests and `cargo xtask bench`. Real
//! processes doing real page faults; nothing here is simulated.
use std::time::Duration;

use agent::demo::procs::{fork_child, map, page_size, set_name, touch, wait_all, MIB};
use clap::{Args, Subcommand};

use crate::scenarios::{self, clonevm, leakmix, prefork, sawtooth, scale, vmas};

#[derive(Subcommand, Debug)]
pub enum Workload {
    /// Write every page of a private anonymous mapping.
    Anon(Common),
    /// A parent maps a MAP_SHARED segment; one child per --fractions entry writes that fraction.
    Shared {
        #[command(flatten)]
        common: Common,
        #[arg(long, value_delimiter = ',', default_value = "1,0.5,0")]
        fractions: Vec<f64>,
        /// Seconds each child holds the segment before it exits (default: --hold for all).
        #[arg(long, value_delimiter = ',')]
        holds: Vec<f64>,
    },
    /// A child that, after --delay-ms, forks a grandchild which writes --mib of private anon.
    Grandchild {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 300)]
        delay_ms: u64,
    },
    /// mmap --mib with MAP_POPULATE: the kernel fills it inside the syscall, no page fault.
    Populate(Common),
    /// read() --mib from /dev/zero into a fresh anonymous buffer: kernel-mode faults.
    Read(Common),
    /// The fault storm of `cargo xtask bench`: --passes times, map --mib of private anon (THP
    /// off), write one byte per page, unmap. With --report FILE, writes the fault loop's
    /// figures there as one JSON object `{"wall_s", "cpu_s", "faults"}` (CPU: user+sys time,
    /// which includes the eBPF programs run in its faults; with --parallel, of all the storms,
    /// and the wall time is the whole set's).
    Storm {
        #[arg(long, default_value_t = 1024)]
        mib: usize,
        #[arg(long, default_value_t = 2)]
        passes: usize,
        /// Run this many storms at once, each in its own child process.
        #[arg(long, default_value_t = 1)]
        parallel: usize,
        /// Write the storm's report (JSON) to this file.
        #[arg(long)]
        report: Option<std::path::PathBuf>,
    },
    /// Start --threads short-lived threads, each touching one page, a few at a time.
    Threads {
        #[arg(long, default_value_t = 2000)]
        threads: usize,
    },
    /// Known stacks: `grow_cache` writes 3x --mib, then `grow_index` the next --mib of the same
    /// mapping (frame pointers on).
    Stacks {
        #[command(flatten)]
        c: Common,
        /// Delete our own executable first (a binary deleted or replaced while it runs).
        #[arg(long)]
        unlink_exe: bool,
    },
    /// Fork --n short-lived children one after another, each writing one page.
    Forks {
        #[arg(long, default_value_t = 1500)]
        n: usize,
    },
    /// Pid reuse: a child writes 1 MiB and exits, then (root: through
    /// /proc/sys/kernel/ns_last_pid) a second child gets the same pid and writes 2 MiB. Prints
    /// `reused PID` or `not-reused A B` on stderr.
    Reuse,
    /// Sleep (a quiet target for `watch -p` and signal tests).
    Sleep {
        #[arg(long, default_value_t = 30.0)]
        secs: f64,
    },
    /// The seed's shape, scaled: a parent maps a --segment-mib MAP_SHARED segment and forks
    /// --procs children; each writes its own slice, and --growers of them keep adding private
    /// memory at 512 KiB/s, until --duration.
    Scale {
        #[arg(long, default_value_t = 600)]
        procs: usize,
        #[arg(long, default_value_t = 2048)]
        segment_mib: usize,
        #[arg(long, default_value_t = 3)]
        growers: usize,
        #[arg(long, default_value_t = 60.0)]
        duration: f64,
    },
    /// The leak-verdict scenario: a leaker (2 MiB/s private), a churner (alloc/free loop), a
    /// filler (one 128 MiB fill at mid-run), a holder (64 MiB, stable), and a grower of a
    /// /dev/shm file (1 MiB/s). Only the leaker and the shm grower leak.
    Leakmix {
        #[arg(long, default_value_t = 40.0)]
        duration: f64,
    },
    /// The withdrawn-verdict scenario: a `sawtooth` child writes --mib-s of private anon per
    /// second for --ramp-s, unmaps it all, --cycles times (then holds its floor for 2 s); with
    /// --leaker-mib-s, a `leaker` child leaks that much per second meanwhile.
    Sawtooth {
        #[arg(long, default_value_t = 30.0)]
        ramp_s: f64,
        #[arg(long, default_value_t = 1.0)]
        mib_s: f64,
        #[arg(long, default_value_t = 4)]
        cycles: u32,
        #[arg(long, default_value_t = 0.0)]
        leaker_mib_s: f64,
    },
    /// A pre-fork server (`wl-prefork`): writes a --heap-mib private heap, forks --workers
    /// (`wl-worker-N`) that share it copy-on-write. Worker 0 writes (unshares) --rate-mib-s of
    /// the heap per second, in 125 ms steps, until --duration; the others write --once-mib of
    /// it once, right after the fork, then sleep until --duration.
    Prefork {
        #[arg(long, default_value_t = 128)]
        heap_mib: usize,
        #[arg(long, default_value_t = 4)]
        workers: usize,
        #[arg(long, default_value_t = 1.0)]
        rate_mib_s: f64,
        #[arg(long, default_value_t = 16)]
        once_mib: usize,
        #[arg(long, default_value_t = 30.0)]
        duration: f64,
    },
    /// Create a file of --mib, then mmap it and read every page.
    File {
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        path: std::path::PathBuf,
    },
    /// Grow until killed (the OOM test): write --chunk-mib of one private anonymous mapping
    /// every --every-ms, never freed, as `wl-grow`; stops at --max-mib. Prints the mapping's
    /// start on stderr (`wl-grow: region 0x...`).
    Grow {
        #[arg(long, default_value_t = 4)]
        chunk_mib: usize,
        #[arg(long, default_value_t = 250)]
        every_ms: u64,
        #[arg(long, default_value_t = 4096)]
        max_mib: usize,
    },
    /// --n private anonymous VMAs of --pages the kernel keeps apart (protections alternate
    /// read-write / read-write-exec: --mprotect makes one mapping and splits it by mprotect),
    /// made before --wait-stdin; then every page written, as `wl-vmas`. Prints each VMA's
    /// start on stderr, `wl-vmas: 0x...`.
    Vmas {
        #[arg(long, default_value_t = 2000)]
        n: usize,
        #[arg(long)]
        mprotect: bool,
        /// Pages per VMA, all written.
        #[arg(long, default_value_t = 1)]
        pages: usize,
        #[command(flatten)]
        c: Common,
    },
    /// Two processes on one mm: the parent (`wl-clonevm`) clones a child (`wl-clonevm-c`,
    /// CLONE_VM without CLONE_THREAD) on its own stack; the child writes --child-mib, the
    /// parent --mib, both hold --hold seconds.
    Clonevm {
        #[arg(long, default_value_t = 32)]
        child_mib: usize,
        #[command(flatten)]
        c: Common,
    },
}

#[derive(Args, Debug, Clone)]
pub struct Common {
    #[arg(long, default_value_t = 16)]
    pub mib: usize,
    /// Seconds to hold the memory before exiting.
    #[arg(long, default_value_t = 0.5)]
    pub hold: f64,
    /// Wait for a byte on stdin before touching memory (for `watch -p` tests); in `shared`,
    /// each child waits for its own byte.
    #[arg(long)]
    pub wait_stdin: bool,
}

pub(crate) fn hold(s: f64) {
    std::thread::sleep(Duration::from_secs_f64(s));
}

/// Wait for one byte on stdin. A raw read, so that forked children sharing stdin each take
/// exactly one byte.
pub(crate) fn wait_go(c: &Common) {
    if c.wait_stdin {
        let mut b = [0u8; 1];
        // SAFETY: reading one byte into a local buffer.
        unsafe { libc::read(0, b.as_mut_ptr().cast(), 1) };
    }
}

pub fn run(w: Workload) -> i32 {
    match w {
        Workload::Anon(c) => {
            set_name("wl-anon");
            wait_go(&c);
            let p = map(c.mib * MIB, false);
            touch(p, c.mib * MIB, Duration::ZERO);
            hold(c.hold);
        }
        Workload::Shared { common: c, fractions, holds } => {
            set_name("wl-shared");
            let len = c.mib * MIB;
            let seg = map(len, true);
            let seg_addr = seg as usize;
            let kids: Vec<i32> = fractions
                .iter()
                .enumerate()
                .map(|(i, &f)| {
                    let c = c.clone();
                    let hold_s = holds.get(i).copied().unwrap_or(c.hold);
                    fork_child(&format!("wl-shared-{i}"), move || {
                        // The tree exists before the go signal, for `watch -p`.
                        wait_go(&c);
                        let n = ((len / page_size()) as f64 * f) as usize * page_size();
                        touch(seg_addr as *mut u8, n, Duration::ZERO);
                        hold(hold_s);
                    })
                })
                .collect();
            wait_all(&kids);
        }
        Workload::Grandchild { common: c, delay_ms } => {
            set_name("wl-gc-parent");
            wait_go(&c);
            let kid = fork_child("wl-gc-child", move || {
                std::thread::sleep(Duration::from_millis(delay_ms));
                let g = fork_child("wl-grandchild", move || {
                    let p = map(c.mib * MIB, false);
                    touch(p, c.mib * MIB, Duration::ZERO);
                    hold(c.hold);
                });
                wait_all(&[g]);
            });
            wait_all(&[kid]);
        }
        Workload::Populate(c) => {
            set_name("wl-populate");
            wait_go(&c);
            let len = c.mib * MIB;
            let flags = libc::MAP_ANONYMOUS | libc::MAP_PRIVATE | libc::MAP_POPULATE;
            // SAFETY: anonymous mapping, checked below.
            let p = unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, flags, -1, 0) };
            assert!(p != libc::MAP_FAILED);
            hold(c.hold);
        }
        Workload::Read(c) => {
            set_name("wl-read");
            wait_go(&c);
            let len = c.mib * MIB;
            let p = map(len, false);
            let f = std::fs::File::open("/dev/zero").expect("open /dev/zero");
            let mut done = 0;
            while done < len {
                use std::os::fd::AsRawFd;
                // SAFETY: reading into the mapping, within bounds.
                let n = unsafe { libc::read(f.as_raw_fd(), p.add(done).cast(), len - done) };
                assert!(n > 0, "read /dev/zero: {}", std::io::Error::last_os_error());
                done += n as usize;
            }
            hold(c.hold);
        }
        Workload::Storm { mib, passes, parallel, report } => return scenarios::storm(mib, passes, parallel, report),
        Workload::Threads { threads } => {
            set_name("wl-threads");
            for batch in (0..threads).collect::<Vec<_>>().chunks(16) {
                let hs: Vec<_> = batch
                    .iter()
                    .map(|_| {
                        std::thread::spawn(|| {
                            let p = map(page_size(), false);
                            touch(p, page_size(), Duration::ZERO);
                        })
                    })
                    .collect();
                hs.into_iter().for_each(|h| h.join().expect("thread"));
            }
        }
        Workload::Stacks { c, unlink_exe } => {
            set_name("wl-stacks");
            if unlink_exe {
                std::fs::remove_file(std::env::current_exe().expect("our path")).expect("delete our executable");
            }
            wait_go(&c);
            // One mapping: grow_index writes the pages right after grow_cache's, so a stack cache
            // keyed on neighbouring pages must still tell the two apart.
            let p = map(4 * c.mib * MIB, false);
            std::hint::black_box(grow_cache(p, c.mib));
            std::hint::black_box(grow_index(unsafe { p.add(3 * c.mib * MIB) }, c.mib));
            hold(c.hold);
        }
        Workload::Forks { n } => {
            set_name("wl-forks");
            for i in 0..n {
                let kid =
                    fork_child(&format!("wl-fork-{i}"), || touch(map(page_size(), false), page_size(), Duration::ZERO));
                wait_all(&[kid]);
            }
        }
        Workload::Reuse => {
            set_name("wl-reuse");
            let a = fork_child("wl-reuse-a", || touch(map(MIB, false), MIB, Duration::ZERO));
            wait_all(&[a]);
            // The next pid handed out is ns_last_pid + 1 (if nothing else forks in between).
            let _ = std::fs::write("/proc/sys/kernel/ns_last_pid", (a - 1).to_string());
            let b = fork_child("wl-reuse-b", || touch(map(2 * MIB, false), 2 * MIB, Duration::ZERO));
            wait_all(&[b]);
            if a == b {
                eprintln!("reused {a}");
            } else {
                eprintln!("not-reused {a} {b}");
            }
        }
        Workload::Sleep { secs } => {
            set_name("wl-sleep");
            hold(secs);
        }
        Workload::Scale { procs, segment_mib, growers, duration } => {
            set_name("wl-scale");
            scale(procs, segment_mib * MIB, growers, Duration::from_secs_f64(duration));
        }
        Workload::Leakmix { duration } => {
            set_name("wl-leakmix");
            leakmix(Duration::from_secs_f64(duration));
        }
        Workload::Grow { chunk_mib, every_ms, max_mib } => {
            set_name("wl-grow");
            let (chunk, len) = (chunk_mib * MIB, max_mib * MIB);
            let p = map(len, false);
            eprintln!("wl-grow: region {:#x}", p as usize);
            for off in (0..len / chunk).map(|i| i * chunk) {
                touch(p.wrapping_add(off), chunk, Duration::ZERO);
                hold(every_ms as f64 / 1000.0);
            }
        }
        Workload::Vmas { n, mprotect, pages, c } => vmas(n, mprotect, pages, &c),
        Workload::Clonevm { child_mib, c } => clonevm(child_mib, &c),
        Workload::Sawtooth { ramp_s, mib_s, cycles, leaker_mib_s } => {
            set_name("wl-sawtooth");
            sawtooth(Duration::from_secs_f64(ramp_s), mib_s, cycles, leaker_mib_s);
        }
        Workload::Prefork { heap_mib, workers, rate_mib_s, once_mib, duration } => {
            set_name("wl-prefork");
            prefork(heap_mib * MIB, workers, rate_mib_s, once_mib * MIB, Duration::from_secs_f64(duration));
        }
        Workload::File { common: c, path } => scenarios::file(&c, &path),
    }
    0
}

#[inline(never)]
fn grow_cache(p: *mut u8, mib: usize) -> *mut u8 {
    touch(p, 3 * mib * MIB, Duration::ZERO);
    p
}

#[inline(never)]
fn grow_index(p: *mut u8, mib: usize) -> *mut u8 {
    touch(p, mib * MIB, Duration::ZERO);
    p
}
