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

/// [`map`] (private) as a VMA of its own: a `PROT_NONE` reservation with a guard page on each
/// side, its middle made writable, so no neighbour can share its VMA. A plain mmap is merged by
/// the kernel with an adjacent anonymous rw neighbour, and `map`'s MADV_NOHUGEPAGE then splits
/// them apart again, which the agent did not see before madvise was hooked: it kept one region
/// under the neighbour's name (tests/madvise_split.rs). In `prefork` (1 run in ~50: ld.so's 3-page TLS block started
/// right above the 2 MiB-aligned heap) the parent's post-fork write to its TLS, a real COW, was
/// counted in its heap mapping.
pub fn map_alone(len: usize) -> *mut u8 {
    let page = page_size();
    let (flags, none) = (libc::MAP_ANONYMOUS | libc::MAP_PRIVATE, libc::PROT_NONE);
    // SAFETY: anonymous mapping, checked below.
    let p = unsafe { libc::mmap(std::ptr::null_mut(), len + 2 * page, none, flags, -1, 0) };
    assert!(p != libc::MAP_FAILED, "mmap {len}: {}", std::io::Error::last_os_error());
    // SAFETY: the middle of the reservation just made.
    let heap = unsafe { p.cast::<u8>().add(page) };
    let rw = libc::PROT_READ | libc::PROT_WRITE;
    // SAFETY: as above.
    let ok = unsafe { libc::mprotect(heap.cast(), len, rw) } == 0;
    assert!(ok, "mprotect {len}: {}", std::io::Error::last_os_error());
    unsafe { libc::madvise(heap.cast(), len, libc::MADV_NOHUGEPAGE) };
    heap
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The VMA of `map_alone` is exactly the bytes asked for, and `PROT_NONE` pages fence it on
    /// both sides (no rw neighbour can merge with it), as /proc/self/maps shows it.
    #[test]
    fn map_alone_is_a_vma_of_its_own() {
        let (len, page) = (3 * MIB, page_size() as u64);
        let p = map_alone(len) as u64;
        touch(p as *mut u8, len, Duration::ZERO);
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let vma_at = |a: u64| -> (u64, u64, String) {
            maps.lines()
                .find_map(|l| {
                    let (range, rest) = l.split_once(' ')?;
                    let (s, e) = range.split_once('-')?;
                    let (s, e) = (u64::from_str_radix(s, 16).ok()?, u64::from_str_radix(e, 16).ok()?);
                    (s <= a && a < e).then(|| (s, e, rest[..4].to_string()))
                })
                .unwrap_or_else(|| panic!("{a:#x} unmapped in\n{maps}"))
        };
        assert_eq!(vma_at(p), (p, p + len as u64, "rw-p".into()), "{maps}");
        assert_eq!(vma_at(p - page).2, "---p", "{maps}");
        assert_eq!(vma_at(p + len as u64).2, "---p", "{maps}");
        // SAFETY: unmapping the reservation made above.
        unsafe { libc::munmap((p - page) as *mut libc::c_void, len + 2 * page as usize) };
    }
}
