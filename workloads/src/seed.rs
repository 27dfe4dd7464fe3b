//! The seed at the size this machine holds (issue 9, `--smaps-budget`): many processes over one
//! big MAP_SHARED segment, each with its page tables filled (so every smaps read walks GiBs),
//! three leakers (private, shmem, hugetlb) and a churner.
use std::time::{Duration, Instant};

use agent::demo::procs::{fork_child, map, page_size, set_name, touch, wait_all, MIB};
use clap::Args;

#[derive(Args, Debug, Clone)]
pub struct Seed {
    /// Mappers (`seed-N`) besides the leakers and the churner.
    #[arg(long, default_value_t = 4)]
    pub procs: usize,
    /// The segment's size: the parent writes all of it, every child reads every page of it.
    #[arg(long, default_value_t = 1024)]
    pub segment_mib: usize,
    /// Seconds the children run after the segment is mapped in each.
    #[arg(long, default_value_t = 60.0)]
    pub duration: f64,
    /// Leak rate of each leaker, KiB/s (125 ms steps).
    #[arg(long, default_value_t = 1024)]
    pub leak_kib_s: usize,
    /// Leakers to run among `private`, `shmem`, `hugetlb` (default: private and shmem; hugetlb
    /// needs huge pages reserved: /proc/sys/vm/nr_hugepages).
    #[arg(long, value_delimiter = ',', default_value = "private,shmem")]
    pub leakers: Vec<String>,
    /// Also run `churner`: 32 MiB of private anon and a 16 MiB memfd made and freed every
    /// 250 ms.
    #[arg(long)]
    pub churner: bool,
    /// Seconds the leakers wait before leaking (the mappers' page tables fill meanwhile).
    #[arg(long, default_value_t = 0.0)]
    pub leak_after: f64,
}

/// Read one byte of every page: fills this process's page tables over the segment (read faults
/// map 16 pages each around the one asked for).
fn read_all(p: *mut u8, len: usize) -> u64 {
    let mut sum = 0u64;
    for i in (0..len).step_by(page_size()) {
        // SAFETY: inside the mapping.
        sum += u64::from(unsafe { std::ptr::read_volatile(p.add(i)) });
    }
    sum
}

/// Call `step(i)` every 125 ms until `total` has passed since `start`.
fn every_eighth(start: Instant, total: Duration, mut step: impl FnMut(usize)) {
    let mut i = 0;
    while start.elapsed() < total {
        step(i);
        i += 1;
        if let Some(wait) = (Duration::from_millis(125) * i as u32).checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
    }
}

/// Say when a leaker starts (seconds since the epoch), for the bench's time to flag.
fn leaking(name: &str) {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    eprintln!("wl-seed: {name} leaking from {:.3}", now.as_secs_f64());
}

fn memfd(name: &str, flags: u32) -> i32 {
    let c = std::ffi::CString::new(name).expect("no NUL");
    // SAFETY: a valid C string.
    let fd = unsafe { libc::memfd_create(c.as_ptr(), flags) };
    assert!(fd >= 0, "memfd_create({name}): {}", std::io::Error::last_os_error());
    fd
}

fn map_fd(fd: i32, len: usize) -> *mut u8 {
    // SAFETY: plain syscalls on our own fd, checked.
    unsafe {
        assert!(libc::ftruncate(fd, len as i64) == 0, "ftruncate: {}", std::io::Error::last_os_error());
        let p = libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd, 0);
        assert!(p != libc::MAP_FAILED, "mmap {len}: {}", std::io::Error::last_os_error());
        p.cast()
    }
}

pub fn run(s: Seed) -> i32 {
    set_name("wl-seed");
    let seg_len = s.segment_mib * MIB;
    let total = Duration::from_secs_f64(s.duration);
    let step = s.leak_kib_s * 1024 / 8 / page_size() * page_size();
    // The shmem leaker's room after the segment: every step it writes new pages there.
    let room = (step * (s.duration * 8.0) as usize + MIB).next_multiple_of(page_size());
    let seg = map(seg_len + room, true);
    touch(seg, seg_len, Duration::ZERO);
    eprintln!("wl-seed: segment {} MiB written", s.segment_mib);
    let seg_addr = seg as usize;
    let start_leak = Duration::from_secs_f64(s.leak_after);
    let mut kids: Vec<i32> = (0..s.procs)
        .map(|i| {
            fork_child(&format!("seed-{i}"), move || {
                read_all(seg_addr as *mut u8, seg_len);
                std::thread::sleep(total);
            })
        })
        .collect();
    let leaker = |name: &'static str, f: Box<dyn Fn(usize)>| {
        fork_child(name, move || {
            read_all(seg_addr as *mut u8, seg_len);
            std::thread::sleep(start_leak);
            leaking(name);
            every_eighth(Instant::now(), total.saturating_sub(start_leak), f);
        })
    };
    for l in &s.leakers {
        kids.push(match l.as_str() {
            "private" => leaker("priv-leaker", Box::new(move |_| touch(map(step, false), step, Duration::ZERO))),
            "shmem" => leaker(
                "shm-leaker",
                Box::new(move |i| touch((seg_addr + seg_len + i * step) as *mut u8, step, Duration::ZERO)),
            ),
            "hugetlb" => {
                // 2 MiB pages, one whenever the leak rate has added up to one.
                let huge = 2 * MIB;
                let max = (s.leak_kib_s * 1024 * s.duration as usize).next_multiple_of(huge) + huge;
                let per = huge / step.max(1);
                fork_child("huge-leaker", move || {
                    read_all(seg_addr as *mut u8, seg_len);
                    let p = map_fd(memfd("seed-huge", libc::MFD_HUGETLB | libc::MFD_HUGE_2MB), max);
                    std::thread::sleep(start_leak);
                    leaking("huge-leaker");
                    every_eighth(Instant::now(), total.saturating_sub(start_leak), |i| {
                        if i % per.max(1) == 0 && (i / per.max(1) + 1) * huge <= max {
                            // SAFETY: inside the mapping.
                            unsafe { std::ptr::write_volatile(p.add(i / per.max(1) * huge), 1) };
                        }
                    });
                })
            }
            other => {
                eprintln!("wl-seed: unknown leaker {other}");
                return 2;
            }
        });
    }
    if s.churner {
        kids.push(fork_child("churner", move || {
            read_all(seg_addr as *mut u8, seg_len);
            let start = Instant::now();
            while start.elapsed() < total {
                let n = 32 * MIB;
                let p = map(n, false);
                touch(p, n, Duration::ZERO);
                let fd = memfd("seed-churn", 0);
                let q = map_fd(fd, 16 * MIB);
                touch(q, 16 * MIB, Duration::ZERO);
                // SAFETY: unmapping and closing what we made.
                unsafe {
                    libc::munmap(p.cast(), n);
                    libc::munmap(q.cast(), 16 * MIB);
                    libc::close(fd);
                }
                std::thread::sleep(Duration::from_millis(250));
            }
        }));
    }
    wait_all(&kids);
    0
}
