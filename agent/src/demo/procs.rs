//! Process primitives of the demo, and of the test workloads that build on them: name a process,
//! map and touch memory page by page, fork children and wait for them.
use std::time::{Duration, Instant};

pub const MIB: usize = 1 << 20;

pub fn set_name(name: &str) {
    let c = std::ffi::CString::new(name).expect("no NUL");
    // SAFETY: PR_SET_NAME with a valid C string.
    unsafe { libc::prctl(libc::PR_SET_NAME, c.as_ptr() as libc::c_ulong, 0, 0, 0) };
}

/// mmap `len` bytes; `shared` for MAP_SHARED|MAP_ANONYMOUS. THP off so a page is a page.
pub fn map(len: usize, shared: bool) -> *mut u8 {
    let flags = libc::MAP_ANONYMOUS | if shared { libc::MAP_SHARED } else { libc::MAP_PRIVATE };
    // SAFETY: anonymous mapping, checked below.
    let p = unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, flags, -1, 0) };
    assert!(p != libc::MAP_FAILED, "mmap {len}: {}", std::io::Error::last_os_error());
    unsafe { libc::madvise(p, len, libc::MADV_NOHUGEPAGE) };
    p.cast()
}

/// Write one byte in each page of [p, p+len), optionally spread over `over`.
#[expect(clippy::not_unsafe_ptr_arg_deref, reason = "`p` is always a mapping `map` returned, `len` within it")]
pub fn touch(p: *mut u8, len: usize, over: Duration) {
    let pages = len / page_size();
    let start = Instant::now();
    for i in 0..pages {
        // SAFETY: inside the mapping.
        unsafe { std::ptr::write_volatile(p.add(i * page_size()), 1) };
        if !over.is_zero() && i % 256 == 255 {
            let due = over.mul_f64((i + 1) as f64 / pages as f64);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    }
}

pub fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

/// Fork; the child runs `f` and exits 0. Returns the child's pid.
pub fn fork_child(name: &str, f: impl FnOnce()) -> i32 {
    // SAFETY: the workloads are single-threaded when they fork.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        set_name(name);
        f();
        // SAFETY: leave the child without running the parent's atexit handlers.
        unsafe { libc::_exit(0) };
    }
    pid
}

pub fn wait_all(pids: &[i32]) {
    for &p in pids {
        let mut st = 0;
        // SAFETY: waiting on our own children.
        unsafe { libc::waitpid(p, &mut st, 0) };
    }
}
