//! `workloads cgmember`: a process that moves itself into cgroups (a write of its pid to each
//! --join directory's `cgroup.procs`, as `docker exec` or `systemd-run --scope` do) and then
//! forks a child (`wl-cg-child`) that writes known amounts: --anon-mib of private anon, a
//! --tmpfs-mib file written with write() and never mapped, --grow-kib-s appended to it for
//! --grow-s; with --leave-to, after --leave-after-s the child moves itself there and, after
//! --after-leave-wait-s, writes --after-leave-mib more private anon. The parent (`wl-cg-parent`) waits for it.
use std::{io::Write as _, path::PathBuf, time::Duration};

use agent::demo::procs::{fork_child, map, set_name, touch, wait_all, MIB};
use clap::Args;

#[derive(Args, Debug)]
pub struct CgMember {
    /// Cgroup directories to move into first (their cgroup.procs).
    #[arg(long)]
    join: Vec<PathBuf>,
    /// Wait for a byte on stdin first (the test moves us, or starts the agent, meanwhile).
    #[arg(long)]
    wait_stdin: bool,
    /// The child sleeps this long before writing (seconds).
    #[arg(long, default_value_t = 0.0)]
    delay_s: f64,
    #[arg(long, default_value_t = 0)]
    anon_mib: usize,
    /// A file on a tmpfs the child writes and never maps.
    #[arg(long)]
    tmpfs_file: Option<PathBuf>,
    #[arg(long, default_value_t = 0)]
    tmpfs_mib: usize,
    /// The child first mounts a tmpfs of its own here, in a mount namespace of its own (a
    /// container's private tmpfs), before it writes --tmpfs-file.
    #[arg(long)]
    private_tmpfs: Option<PathBuf>,
    /// Close --tmpfs-file once written (else it is held open until the child exits).
    #[arg(long)]
    close_file: bool,
    /// Appended to --tmpfs-file per second, in 4 steps a second, for --grow-s.
    #[arg(long, default_value_t = 0)]
    grow_kib_s: usize,
    #[arg(long, default_value_t = 0.0)]
    grow_s: f64,
    /// Cgroup directories the child moves to after --leave-after-s.
    #[arg(long)]
    leave_to: Vec<PathBuf>,
    #[arg(long, default_value_t = 0.0)]
    leave_after_s: f64,
    /// Seconds between leaving and writing --after-leave-mib.
    #[arg(long, default_value_t = 0.0)]
    after_leave_wait_s: f64,
    #[arg(long, default_value_t = 0)]
    after_leave_mib: usize,
    /// Seconds the child holds everything before it exits (the tmpfs file is removed then).
    #[arg(long, default_value_t = 1.0)]
    hold_s: f64,
}

fn join(dirs: &[PathBuf]) {
    for d in dirs {
        let path = d.join("cgroup.procs");
        std::fs::write(&path, format!("{}\n", std::process::id()))
            .unwrap_or_else(|e| panic!("cannot join {}: {e}", path.display()));
    }
}

/// A mount namespace of our own (no propagation back) with a fresh tmpfs at `dir`.
fn private_tmpfs(dir: &std::path::Path) {
    use std::ffi::CString;
    let c = |s: &str| CString::new(s).unwrap();
    let target = c(dir.to_str().expect("utf-8 path"));
    // SAFETY: plain syscalls with NUL-terminated strings; failures are checked.
    unsafe {
        assert_eq!(libc::unshare(libc::CLONE_NEWNS), 0, "unshare: {}", std::io::Error::last_os_error());
        let root = c("/");
        let none = c("none");
        assert_eq!(
            libc::mount(
                none.as_ptr(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null()
            ),
            0
        );
        let tmpfs = c("tmpfs");
        let r = libc::mount(tmpfs.as_ptr(), target.as_ptr(), tmpfs.as_ptr(), 0, std::ptr::null());
        assert_eq!(r, 0, "mount tmpfs on {}: {}", dir.display(), std::io::Error::last_os_error());
    }
}

fn sleep(s: f64) {
    std::thread::sleep(Duration::from_secs_f64(s));
}

pub fn run(a: CgMember) -> i32 {
    set_name("wl-cg-parent");
    if a.wait_stdin {
        let mut b = [0u8; 1];
        // SAFETY: reading one byte into a local buffer.
        unsafe { libc::read(0, b.as_mut_ptr().cast(), 1) };
    }
    join(&a.join);
    let child = fork_child("wl-cg-child", || {
        sleep(a.delay_s);
        if a.anon_mib > 0 {
            touch(map(a.anon_mib * MIB, false), a.anon_mib * MIB, Duration::ZERO);
        }
        if let Some(dir) = &a.private_tmpfs {
            private_tmpfs(dir);
        }
        let mut file = a.tmpfs_file.as_ref().map(|p| std::fs::File::create(p).expect("create the tmpfs file"));
        if let Some(f) = file.as_mut() {
            let chunk = vec![7u8; MIB];
            for _ in 0..a.tmpfs_mib {
                f.write_all(&chunk).expect("write the tmpfs file");
            }
            let step = vec![7u8; a.grow_kib_s * 1024 / 4];
            for _ in 0..(a.grow_s * 4.0) as usize {
                sleep(0.25);
                f.write_all(&step).expect("grow the tmpfs file");
            }
        }
        if a.close_file {
            drop(file.take());
        }
        if !a.leave_to.is_empty() {
            sleep(a.leave_after_s);
            join(&a.leave_to);
            sleep(a.after_leave_wait_s);
            if a.after_leave_mib > 0 {
                touch(map(a.after_leave_mib * MIB, false), a.after_leave_mib * MIB, Duration::ZERO);
            }
        }
        sleep(a.hold_s);
        drop(file);
        if let Some(p) = &a.tmpfs_file {
            let _ = std::fs::remove_file(p);
        }
    });
    wait_all(&[child]);
    0
}
