//! `workloads afterfault`: syscalls that drop pages right after faults that are over, the case
//! the rss program must not charge to the fault (it reads the syscall from the task's registers):
//! two --mib regions filled by MAP_POPULATE (pages of the mmap syscall); a `read()` into a fresh
//! page (a kernel fault that adds one page), then munmap of the first region; a read of a fresh
//! anonymous page (a user fault that maps the zero page: no rss change), then munmap of the
//! second. Then a kernel fault and pages pinned without an exception in two calls of one syscall
//! (`process_vm_writev` to itself): the first call's copy from an untouched page of a private
//! file mapping (a kernel fault that adds that file page); the second call writes --mib into a
//! fresh region (pinned, faulted in without an exception: the syscall's pages), all unmapped
//! after. Known answer: the syscalls' pages net to zero (-1), and no mapping loses pages to a
//! fault.
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
    pinned_after_kernel_fault(len);
    std::thread::sleep(Duration::from_secs_f64(a.hold));
    0
}

/// One `process_vm_writev` to this process from `local` into `remote`, `len` bytes.
fn write_to_self(local: *mut libc::c_void, remote: *mut libc::c_void, len: usize) {
    let l = libc::iovec { iov_base: local, iov_len: len };
    let r = libc::iovec { iov_base: remote, iov_len: len };
    // SAFETY: both ranges are mappings of this process, `len` within them.
    let n = unsafe { libc::process_vm_writev(libc::getpid(), &l, 1, &r, 1, 0) };
    assert_eq!(n, len as isize, "process_vm_writev: {}", std::io::Error::last_os_error());
}

/// A kernel fault in one call of process_vm_writev, then pages pinned in the next call.
fn pinned_after_kernel_fault(len: usize) {
    let page = page_size();
    let src = populated(len);
    let exe = std::fs::File::open("/proc/self/exe").expect("open /proc/self/exe");
    // SAFETY: a private read-only mapping of one page of our own executable, checked below.
    let file = unsafe {
        use std::os::fd::AsRawFd;
        libc::mmap(std::ptr::null_mut(), page, libc::PROT_READ, libc::MAP_PRIVATE, exe.as_raw_fd(), 0)
    };
    assert!(file != libc::MAP_FAILED, "mmap /proc/self/exe: {}", std::io::Error::last_os_error());
    // Copied from the untouched file page: a kernel fault maps it (+1 file page, the fault's).
    write_to_self(file, src, page);
    // Into a fresh region: pinned pages, faulted in without an exception (the syscall's).
    let target = map(len, false).cast::<libc::c_void>();
    write_to_self(src, target, len);
    // SAFETY: unmapping regions we mapped.
    unsafe {
        assert_eq!(libc::munmap(target, len), 0);
        assert_eq!(libc::munmap(src, len), 0);
        assert_eq!(libc::munmap(file, page), 0);
    }
}
