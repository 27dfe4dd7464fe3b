//! `workloads afterfault`: syscalls that drop pages right after faults that are over, the case
//! the rss program must not charge to the fault (it reads the syscall from the task's registers):
//! two --mib regions filled by MAP_POPULATE (pages of the mmap syscall); a `read()` into a fresh
//! page (a kernel fault that adds one page), then munmap of the first region; a read of a fresh
//! anonymous page (a user fault that maps the zero page: no rss change), then munmap of the
//! second. Known answer: the syscalls' pages net to zero, and no mapping loses pages to a fault.
use std::time::Duration;

use agent::demo::procs::{map, page_size, set_name, MIB};

#[derive(clap::Args, Debug)]
pub struct AfterFault {
    #[arg(long, default_value_t = 16)]
    mib: usize,
    /// Seconds to hold before exiting.
    #[arg(long, default_value_t = 0.3)]
    hold: f64,
}

fn populated(len: usize) -> *mut libc::c_void {
    let flags = libc::MAP_ANONYMOUS | libc::MAP_PRIVATE | libc::MAP_POPULATE;
    // SAFETY: a fresh anonymous mapping, checked below.
    let p = unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, flags, -1, 0) };
    assert!(p != libc::MAP_FAILED, "mmap: {}", std::io::Error::last_os_error());
    p
}

pub fn run(a: AfterFault) -> i32 {
    set_name("wl-afterfault");
    let len = a.mib * MIB;
    let (first, second) = (populated(len), populated(len));
    let zero = std::fs::File::open("/dev/zero").expect("open /dev/zero");
    let buf = map(page_size(), false);
    // SAFETY: reading one page into a page we mapped; unmapping a region we mapped.
    unsafe {
        use std::os::fd::AsRawFd;
        assert_eq!(libc::read(zero.as_raw_fd(), buf.cast(), page_size()), page_size() as isize);
        assert_eq!(libc::munmap(first, len), 0);
    }
    let fresh = map(page_size(), false);
    // SAFETY: a read of a page we mapped (the zero page: no rss change); then as above.
    unsafe {
        std::hint::black_box(std::ptr::read_volatile(fresh));
        assert_eq!(libc::munmap(second, len), 0);
    }
    std::thread::sleep(Duration::from_secs_f64(a.hold));
    0
}
