//! `agent symbolizer` (hidden): the unprivileged helper that parses ELF and DWARF.
//!
//! The binaries it reads come from the watched processes, containers included: input written
//! by someone we do not trust, parsed by code (blazesym, gimli) that was not written to resist
//! it. So before reading any of it the helper gives up everything root gave it: no new
//! privileges, no capabilities in any set (bounding and ambient included), the `nobody` user
//! and group with no supplementary groups, no descriptors but stdio and its socket, limits on
//! memory and core dumps, a syscall filter (`seccomp.rs`), and a watchdog alarm on each
//! request. It then reads ELF files only
//! through the descriptors the agent opened and sent it, and answers over the socket
//! (`wire.rs`). A malformed ELF can crash it or make it spin; the agent counts that, kills and
//! restarts it (`helper.rs`).
use std::{
    collections::HashMap,
    io,
    os::fd::{AsFd as _, AsRawFd as _, BorrowedFd, OwnedFd},
    path::PathBuf,
};

use blazesym::symbolize::{
    source::{Elf, Source},
    Input, Symbolized, Symbolizer,
};

use super::{
    wire::{self, Request, Response},
    Resolved, Symbol,
};

/// The unprivileged user and group (`nobody`, `nogroup`).
pub const NOBODY: u32 = 65534;
/// Seconds one request may take before the helper's own alarm ends it.
const WATCHDOG_S: u32 = 10;
/// Address space the helper may use: a bomb of huge section counts runs out, not the host.
const MAX_ADDRESS_SPACE: u64 = 4 << 30;
/// Frames and name lengths answered per address, whatever the DWARF claims.
const MAX_INLINED: usize = 64;
const MAX_NAME: usize = 512;

/// Run the helper on the socket at descriptor `fd`: drop privileges, then serve until the
/// agent closes its end. Returns the exit code.
pub fn run(fd: i32) -> i32 {
    // A panic on a malformed file is expected: one line on the agent's stderr, no backtrace.
    std::panic::set_hook(Box::new(|info| eprintln!("agent symbolizer: {}", info.to_string().replace('\n', " "))));
    if let Err(e) = drop_privileges() {
        eprintln!("agent symbolizer: cannot drop privileges, refusing to parse ELF files: {e}");
        return 2;
    }
    // SAFETY: the agent passed this descriptor for us to own; nothing else in this fresh
    // process refers to it.
    let sock: OwnedFd = unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) };
    if let Err(e) = wire::send(sock.as_fd(), &Response::Ready, None) {
        eprintln!("agent symbolizer: {e}");
        return 1;
    }
    let mut files = HashMap::new();
    loop {
        let (req, fd) = match wire::recv::<Request>(sock.as_fd()) {
            Ok(Some(m)) => m,
            Ok(None) => return 0,
            Err(e) => {
                eprintln!("agent symbolizer: {e}");
                return 1;
            }
        };
        // SAFETY: alarm has no preconditions; SIGALRM's default action ends the process.
        unsafe { libc::alarm(WATCHDOG_S) };
        let resp = serve(&mut files, req, fd);
        // SAFETY: as above (cancels the alarm).
        unsafe { libc::alarm(0) };
        if let Err(e) = wire::send(sock.as_fd(), &resp, None) {
            eprintln!("agent symbolizer: {e}");
            return 1;
        }
    }
}

/// An ELF handed to us: its descriptor and the path blazesym reads it by.
pub(super) struct Handed {
    _fd: OwnedFd,
    path: PathBuf,
    symbolizer: Symbolizer,
}

pub(super) fn serve(files: &mut HashMap<u64, Handed>, req: Request, fd: Option<OwnedFd>) -> Response {
    let id = match &req {
        Request::Symbolize { file, .. } | Request::BuildId { file } | Request::Close { file } => *file,
    };
    if let Some(fd) = fd {
        match readable(fd) {
            Ok(fd) => {
                let path = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
                files.insert(id, Handed { _fd: fd, path, symbolizer: Symbolizer::new() });
            }
            Err(e) => return Response::Error(format!("file {id}: {e}")),
        }
    }
    if let Request::Close { file } = req {
        files.remove(&file);
        return Response::Closed;
    }
    let Some(h) = files.get(&id) else {
        return Response::Error(format!("file {id} was never sent"));
    };
    match req {
        Request::Symbolize { offsets, .. } => match symbolize(h, &offsets) {
            Ok(v) => Response::Symbols(v),
            Err(e) => Response::Error(e),
        },
        Request::BuildId { .. } => match blazesym::helper::read_elf_build_id(&h.path) {
            Ok(b) => Response::BuildId(b.map(|b| b.iter().map(|b| format!("{b:02x}")).collect())),
            Err(e) => Response::Error(format!("{e}")),
        },
        Request::Close { .. } => unreachable!("handled above"),
    }
}

/// Largest file copied for us when we may not open it ourselves.
const MAX_COPY: u64 = 1 << 30;

/// A descriptor whose `/proc/self/fd/N` we can open (blazesym reads by path): the one sent,
/// when our credentials may read its file (a reopen checks them), else a copy of its bytes in
/// a memfd of ours (a root-only binary: the agent, root, opened it; we read it through its
/// descriptor).
fn readable(fd: OwnedFd) -> io::Result<OwnedFd> {
    let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    match std::fs::File::open(&path) {
        Ok(_) => return Ok(fd),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {}
        Err(e) => return Err(e),
    }
    let src = std::fs::File::from(fd);
    let len = src.metadata()?.len();
    if len > MAX_COPY {
        return Err(io::Error::other(format!("unreadable to us and {len} bytes, over the copy limit")));
    }
    // SAFETY: a constant name; the descriptor returned is new and ours.
    let m = unsafe { libc::memfd_create(c"elf".as_ptr(), libc::MFD_CLOEXEC) };
    if m < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: just created, owned by nobody else.
    let mut copy = std::fs::File::from(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(m) });
    let (mut buf, mut at) = (vec![0u8; 1 << 20], 0u64);
    loop {
        let n = std::os::unix::fs::FileExt::read_at(&src, &mut buf, at)?;
        if n == 0 {
            break;
        }
        std::io::Write::write_all(&mut copy, &buf[..n])?;
        at += n as u64;
    }
    Ok(copy.into())
}

fn symbolize(h: &Handed, offsets: &[u64]) -> Result<Vec<Option<Resolved>>, String> {
    let src = Source::Elf(Elf::new(&h.path));
    let syms = h.symbolizer.symbolize(&src, Input::FileOffset(offsets)).map_err(|e| format!("{e}"))?;
    Ok(syms.iter().map(resolved).collect())
}

fn resolved(s: &Symbolized) -> Option<Resolved> {
    let Symbolized::Sym(sym) = s else { return None };
    let text = match &sym.code_info {
        Some(ci) => match ci.line {
            Some(line) => format!("{} ({}:{line})", sym.name, ci.file.to_string_lossy()),
            None => format!("{} ({})", sym.name, ci.file.to_string_lossy()),
        },
        None => sym.name.to_string(),
    };
    // blazesym lists inlined functions outermost first, each with its own line.
    let mut symbols: Vec<Symbol> =
        sym.inlined.iter().rev().take(MAX_INLINED).map(|f| Symbol::new(&f.name, f.code_info.as_ref())).collect();
    symbols.push(Symbol::new(&sym.name, sym.code_info.as_deref()));
    for s in &mut symbols {
        clip(&mut s.name);
        s.file.as_mut().map(clip);
    }
    let mut r = Resolved { text, symbols };
    clip(&mut r.text);
    Some(r)
}

fn clip(s: &mut String) {
    if s.len() > MAX_NAME {
        let mut end = MAX_NAME;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

fn check(r: libc::c_int, what: &str) -> io::Result<()> {
    if r == 0 {
        Ok(())
    } else {
        let e = io::Error::last_os_error();
        Err(io::Error::new(e.kind(), format!("{what}: {e}")))
    }
}

/// Give up every privilege, then verify in /proc/self/status that none is left.
pub fn drop_privileges() -> io::Result<()> {
    // SAFETY: each call below is a plain syscall on this single-threaded process's own
    // credentials and limits; none touches memory we own except the structs passed by pointer.
    let was_root = unsafe { libc::geteuid() } == 0;
    // SAFETY: as above.
    unsafe {
        // No descriptor but stdio and the socket (3) survives from the agent (one by one on a
        // kernel before close_range, 5.9).
        if libc::syscall(libc::SYS_close_range, 4u32, u32::MAX, 0u32) != 0 {
            for fd in 4..libc::sysconf(libc::_SC_OPEN_MAX).clamp(4, 1 << 20) as i32 {
                libc::close(fd);
            }
        }
        // Nothing of the agent's working directory.
        check(libc::chdir(c"/".as_ptr()), "chdir(/)")?;
        let core = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        check(libc::setrlimit(libc::RLIMIT_CORE, &core), "no core dumps")?;
        let mem = libc::rlimit { rlim_cur: MAX_ADDRESS_SPACE, rlim_max: MAX_ADDRESS_SPACE };
        check(libc::setrlimit(libc::RLIMIT_AS, &mem), "address-space limit")?;
        check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "PR_SET_NO_NEW_PRIVS")?;
        if was_root {
            // The bounding set can only shrink while we still hold CAP_SETPCAP.
            for cap in 0..64 {
                if libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 {
                    if io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
                        break; // past the kernel's last capability
                    }
                    check(-1, "PR_CAPBSET_DROP")?;
                }
            }
            check(libc::setgroups(0, std::ptr::null()), "setgroups([])")?;
            check(libc::setresgid(NOBODY, NOBODY, NOBODY), "setresgid(nobody)")?;
            check(libc::setresuid(NOBODY, NOBODY, NOBODY), "setresuid(nobody)")?;
        }
        let r = libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
        check(r, "PR_CAP_AMBIENT_CLEAR_ALL")?;
        // Effective and permitted went with root; the inheritable set goes here.
        #[repr(C)]
        struct Header {
            version: u32,
            pid: i32,
        }
        let hdr = Header { version: 0x2008_0522, pid: 0 }; // _LINUX_CAPABILITY_VERSION_3
        let data = [0u32; 6]; // two {effective, permitted, inheritable}, all empty
        check(libc::syscall(libc::SYS_capset, &hdr, data.as_ptr()) as libc::c_int, "capset(0)")?;
    }
    let status = std::fs::read_to_string("/proc/self/status")?;
    verify(&status, was_root).map_err(io::Error::other)?;
    super::seccomp::install()
}

/// What /proc/PID/status must show of a dropped process: no capability in any set, no new
/// privileges, and not root. Started by a user other than root (`was_root` false), the
/// bounding set cannot shrink, nor matter: no new privileges means no exec gains any.
pub fn verify(status: &str, was_root: bool) -> Result<(), String> {
    let field = |name: &str| -> Option<&str> {
        status.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(':')).map(str::trim)
    };
    for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        match field(set) {
            Some(_) if set == "CapBnd" && !was_root => {}
            Some(v) if v.bytes().all(|b| b == b'0') => {}
            v => return Err(format!("{set} is {v:?}, not all zero")),
        }
    }
    if field("NoNewPrivs") != Some("1") {
        return Err(format!("NoNewPrivs is {:?}, not 1", field("NoNewPrivs")));
    }
    for ids in ["Uid", "Gid"] {
        let v = field(ids).unwrap_or("0");
        if v.split_whitespace().any(|id| id == "0") {
            return Err(format!("{ids} is {v}: still root"));
        }
    }
    Ok(())
}

/// The descriptor the agent passes the socket at.
pub const SOCKET_FD: i32 = 3;

/// Make `sock` the child's descriptor 3, inheritable (run between fork and exec).
pub fn install_socket(sock: BorrowedFd) -> io::Result<()> {
    // SAFETY: dup2 and fcntl are async-signal-safe and act on descriptors only.
    unsafe {
        if sock.as_raw_fd() == SOCKET_FD {
            check(libc::fcntl(SOCKET_FD, libc::F_SETFD, 0), "fcntl")
        } else if libc::dup2(sock.as_raw_fd(), SOCKET_FD) < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_refuses_any_capability_root_or_missing_no_new_privs() {
        let good = "Uid:\t65534\t65534\t65534\t65534\nGid:\t65534\t65534\t65534\t65534\nCapInh:\t0000000000000000\n\
                    CapPrm:\t0000000000000000\nCapEff:\t0000000000000000\nCapBnd:\t0000000000000000\n\
                    CapAmb:\t0000000000000000\nNoNewPrivs:\t1\n";
        assert_eq!(verify(good, true), Ok(()));
        let bad = good.replace("CapBnd:\t0000000000000000", "CapBnd:\t000001ffffffffff");
        assert!(verify(&bad, true).unwrap_err().contains("CapBnd"));
        assert_eq!(verify(&bad, false), Ok(()), "a user's helper keeps the bounding set it cannot drop");
        assert!(verify(&good.replace("NoNewPrivs:\t1", "NoNewPrivs:\t0"), true).unwrap_err().contains("NoNewPrivs"));
        assert!(verify(&good.replace("Uid:\t65534\t65534", "Uid:\t65534\t0"), true).unwrap_err().contains("root"));
        assert!(verify(&good.replace("CapEff:\t0000000000000000\n", ""), true).unwrap_err().contains("CapEff"));
    }
}
