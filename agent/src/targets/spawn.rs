//! `agent watch -- CMD`: fork the command, hold it at a gate until it is in the watched set, then
//! let it exec, so none of its faults is missed. Under sudo it runs as SUDO_UID/SUDO_GID.
use std::{
    ffi::CString,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::{ffi::OsStrExt, fs::PermissionsExt},
    },
    path::{Path, PathBuf},
};

use crate::error::AgentError;

/// Find CMD the way a shell does: a path if it has a '/', else the first match on $PATH.
pub fn resolve(cmd: &str) -> Result<PathBuf, AgentError> {
    let candidates: Vec<PathBuf> = if cmd.contains('/') {
        vec![PathBuf::from(cmd)]
    } else {
        std::env::var("PATH")
            .unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into())
            .split(':')
            .filter(|d| !d.is_empty())
            .map(|d| Path::new(d).join(cmd))
            .collect()
    };
    let mut found_not_exec = false;
    for c in candidates {
        if let Ok(md) = std::fs::metadata(&c) {
            if md.is_file() && md.permissions().mode() & 0o111 != 0 {
                return Ok(c);
            }
            found_not_exec = true;
        }
    }
    if found_not_exec {
        Err(AgentError::NotExecutable(cmd.into()))
    } else {
        Err(AgentError::CommandNotFound(cmd.into()))
    }
}

pub struct Gated {
    pub pid: u32,
    gate: OwnedFd,
    exec_err: OwnedFd,
}

fn pipe() -> Result<(OwnedFd, OwnedFd), AgentError> {
    let mut fds = [0; 2];
    // SAFETY: valid two-int array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(AgentError::Load(format!("pipe: {}", std::io::Error::last_os_error())));
    }
    // SAFETY: pipe2 returned two fresh fds that we now own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn sudo_ids() -> Option<(libc::uid_t, libc::gid_t)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let uid = std::env::var("SUDO_UID").ok()?.parse().ok()?;
    let gid = std::env::var("SUDO_GID").ok()?.parse().ok()?;
    Some((uid, gid))
}

/// Fork `argv`; the child waits at the gate. With `stdout_to_stderr` its stdout is the agent's
/// stderr (the records own stdout). Call this while the process is single-threaded.
pub fn spawn_gated(argv: &[String], stdout_to_stderr: bool) -> Result<Gated, AgentError> {
    let path = resolve(&argv[0])?;
    let cpath = CString::new(path.as_os_str().as_bytes()).map_err(|_| AgentError::CommandNotFound(argv[0].clone()))?;
    let cargs: Vec<CString> = argv.iter().map(|a| CString::new(a.as_bytes()).unwrap_or_default()).collect();
    let mut ptrs: Vec<*const libc::c_char> = cargs.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    let ids = sudo_ids();
    let (gate_r, gate_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    // SAFETY: fork; the child only calls async-signal-safe functions before exec or _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(AgentError::Load(format!("fork: {}", std::io::Error::last_os_error())));
    }
    if pid == 0 {
        unsafe {
            let mut b = [0u8; 1];
            if libc::read(gate_r.as_raw_fd(), b.as_mut_ptr().cast(), 1) != 1 {
                libc::_exit(1); // the agent went away before releasing us
            }
            if stdout_to_stderr && libc::dup2(2, 1) < 0 {
                let e = *libc::__errno_location();
                libc::write(err_w.as_raw_fd(), (&e as *const i32).cast(), 4);
                libc::_exit(126);
            }
            if let Some((uid, gid)) = ids {
                let groups = [gid];
                if libc::setgroups(1, groups.as_ptr()) != 0 || libc::setgid(gid) != 0 || libc::setuid(uid) != 0 {
                    let e = *libc::__errno_location();
                    libc::write(err_w.as_raw_fd(), (&e as *const i32).cast(), 4);
                    libc::_exit(126);
                }
            }
            libc::execv(cpath.as_ptr(), ptrs.as_ptr());
            let e = *libc::__errno_location();
            libc::write(err_w.as_raw_fd(), (&e as *const i32).cast(), 4);
            libc::_exit(127);
        }
    }
    drop(gate_r);
    drop(err_w);
    Ok(Gated { pid: pid as u32, gate: gate_w, exec_err: err_r })
}

impl Gated {
    /// Open the gate and wait for the exec to succeed or fail.
    pub fn release(self, cmd: &str) -> Result<(), AgentError> {
        // SAFETY: writing one byte from a valid buffer to our pipe.
        unsafe { libc::write(self.gate.as_raw_fd(), b"g".as_ptr().cast(), 1) };
        drop(self.gate);
        let mut e = [0u8; 4];
        // SAFETY: reading into a 4-byte buffer; returns 0 when exec closed the pipe.
        let n = unsafe { libc::read(self.exec_err.as_raw_fd(), e.as_mut_ptr().cast(), 4) };
        if n == 4 {
            let errno = i32::from_ne_bytes(e);
            return Err(match errno {
                libc::ENOENT => AgentError::CommandNotFound(cmd.into()),
                libc::EACCES | libc::EPERM => AgentError::NotExecutable(cmd.into()),
                _ => AgentError::Load(format!("{cmd}: {}", std::io::Error::from_raw_os_error(errno))),
            });
        }
        Ok(())
    }
}

/// Wait for `pid` (our child) and turn its status into a shell-style exit code.
pub fn wait_exit_code(pid: u32) -> i32 {
    let mut status = 0;
    // SAFETY: waiting on our own child.
    let r = unsafe { libc::waitpid(pid as i32, &mut status, 0) };
    if r < 0 {
        return 1;
    }
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        1
    }
}

/// Send `sig` to our child `pid` (not its group: the agent is in it).
pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill has no memory preconditions; `pid` is our unreaped child.
    unsafe { libc::kill(pid as i32, sig) };
}

/// The agent's process group is the foreground group of its controlling terminal: a SIGINT was
/// most likely Ctrl-C, which the terminal sent to the whole group, the command included.
pub fn in_foreground() -> bool {
    // SAFETY: opening a path with a NUL-terminated name; the fd is closed below.
    let fd = unsafe { libc::open(c"/dev/tty".as_ptr(), libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
    if fd < 0 {
        return false; // no controlling terminal (a service manager, a pipeline under setsid)
    }
    // SAFETY: fd is ours and open.
    let fg = unsafe { libc::tcgetpgrp(fd) == libc::getpgrp() };
    // SAFETY: closing our own fd.
    unsafe { libc::close(fd) };
    fg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_like_a_shell() {
        assert!(resolve("sh").unwrap().ends_with("sh"));
        assert!(matches!(resolve("no-such-command-xyz"), Err(AgentError::CommandNotFound(_))));
        let plain = std::env::temp_dir().join(format!("agent-spawn-test-{}", std::process::id()));
        std::fs::write(&plain, "x").unwrap();
        std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();
        let r = resolve(plain.to_str().unwrap());
        let _ = std::fs::remove_file(&plain);
        assert!(matches!(r, Err(AgentError::NotExecutable(_))), "{r:?}");
        assert!(matches!(resolve("./nope/nope"), Err(AgentError::CommandNotFound(_))));
    }
}
