//! The agent's side of the symbolizer helper (`sandbox.rs`): start it, hand it open ELF files,
//! ask, and survive it. A helper that dies (a malformed ELF crashed it) or does not answer in
//! time (killed) is counted and started again at the next request; the file it was reading
//! when it died is not sent again, and what was asked of it stays unsymbolized.
use std::{
    collections::{BTreeMap, HashSet},
    io,
    os::{
        fd::{AsFd as _, AsRawFd as _, BorrowedFd, OwnedFd},
        unix::process::{CommandExt as _, ExitStatusExt as _},
    },
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use serde::Serialize;

use super::{
    sandbox,
    wire::{self, Request, Response},
    Resolved,
};

/// Spawn attempts in a row that may fail before the helper is given up for the run.
const MAX_SPAWN_FAILURES: u32 = 3;

/// What became of the helper over the run: the summary's `stacks.symbolizer`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct HelperStats {
    /// Requests made (those to a file that had killed a helper are not sent, and unanswered).
    pub requests: u64,
    /// Helpers that died while answering (a signal or an exit).
    pub crashes: u64,
    /// Helpers killed for taking longer than the timeout.
    pub timeouts: u64,
    /// Helpers started after the first.
    pub restarts: u64,
    /// Requests left unanswered: the helper died on them, or would not start, or the file had
    /// killed a helper before.
    pub unanswered: u64,
}

/// One running helper.
struct Running {
    child: Child,
    sock: OwnedFd,
    /// Files this helper was sent (a restarted one is sent them again).
    sent: HashSet<u64>,
}

pub struct Helper {
    exe: PathBuf,
    timeout: Duration,
    /// The helper's stderr is dropped (the fuzzer's crashes would flood it).
    quiet: bool,
    running: Option<Running>,
    /// Files a helper died reading.
    poisoned: HashSet<u64>,
    spawn_failures: u32,
    started: bool,
    pub stats: HelperStats,
    /// How lost helpers ended (`exit status: 101` is a panic, `signal 11` a crash, ...).
    pub endings: BTreeMap<String, u64>,
}

impl Helper {
    /// A helper run from `exe` (the agent binary), each request bounded by `timeout`.
    pub fn new(exe: PathBuf, timeout: Duration, quiet: bool) -> Helper {
        Helper {
            exe,
            timeout,
            quiet,
            running: None,
            poisoned: HashSet::new(),
            spawn_failures: 0,
            started: false,
            stats: HelperStats::default(),
            endings: BTreeMap::new(),
        }
    }

    /// Start the helper now (it is started on demand otherwise); the error says why it cannot.
    pub fn start(&mut self) -> io::Result<u32> {
        if self.running.is_none() {
            let r = self.spawn()?;
            self.running = Some(r);
        }
        Ok(self.running.as_ref().map_or(0, |r| r.child.id()))
    }

    /// The pid of the running helper, if one runs.
    pub fn pid(&self) -> Option<u32> {
        self.running.as_ref().map(|r| r.child.id())
    }

    fn spawn(&mut self) -> io::Result<Running> {
        let (ours, theirs) = wire::pair()?;
        let mut cmd = Command::new(&self.exe);
        cmd.args(["symbolizer", "--fd", &sandbox::SOCKET_FD.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(if self.quiet { Stdio::null() } else { Stdio::inherit() });
        let fd = theirs.as_raw_fd();
        // SAFETY: the closure only calls dup2/fcntl (async-signal-safe) on a descriptor that
        // stays open in the parent until spawn returns.
        unsafe {
            cmd.pre_exec(move || sandbox::install_socket(BorrowedFd::borrow_raw(fd)));
        }
        let child = cmd.spawn().map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", self.exe.display())))?;
        drop(theirs);
        let mut r = Running { child, sock: ours, sent: HashSet::new() };
        // It says it is ready once its privileges are gone.
        match self.answer(&mut r) {
            Ok(Response::Ready) => {
                if self.started {
                    self.stats.restarts += 1;
                }
                self.started = true;
                self.spawn_failures = 0;
                Ok(r)
            }
            other => {
                let _ = r.child.kill();
                let status = r.child.wait()?;
                let why = match other {
                    Ok(resp) => format!("unexpected {resp:?}"),
                    Err(e) => format!("{e} ({status})"),
                };
                Err(io::Error::other(format!("the symbolizer helper did not start: {why}")))
            }
        }
    }

    /// Wait for the helper's next message, up to the timeout.
    fn answer(&self, r: &mut Running) -> io::Result<Response> {
        let mut pfd = libc::pollfd { fd: r.sock.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        let ms = self.timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::TimedOut, format!("no answer within {:?}", self.timeout)));
        }
        match wire::recv::<Response>(r.sock.as_fd())? {
            Some((resp, _)) => Ok(resp),
            None => Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the helper exited")),
        }
    }

    /// Ask about `file` (open at `fd`); `None` when no answer came.
    pub fn ask(&mut self, file: u64, fd: BorrowedFd, req: &Request) -> Option<Response> {
        self.stats.requests += 1;
        if self.poisoned.contains(&file) {
            self.stats.unanswered += 1;
            return None;
        }
        if self.running.is_none() {
            if self.spawn_failures >= MAX_SPAWN_FAILURES {
                self.stats.unanswered += 1;
                return None;
            }
            match self.spawn() {
                Ok(r) => self.running = Some(r),
                Err(e) => {
                    self.spawn_failures += 1;
                    if self.spawn_failures == MAX_SPAWN_FAILURES {
                        log::warn!("{e}; stacks stay unsymbolized (module+offset)");
                    }
                    self.stats.unanswered += 1;
                    return None;
                }
            }
        }
        let mut r = self.running.take()?;
        let attach = (!r.sent.contains(&file)).then_some(fd);
        let res = wire::send(r.sock.as_fd(), req, attach).and_then(|()| self.answer(&mut r));
        match res {
            Ok(resp) => {
                r.sent.insert(file);
                self.running = Some(r);
                Some(resp)
            }
            Err(e) => {
                self.bury(r, &e);
                self.poisoned.insert(file);
                self.stats.unanswered += 1;
                None
            }
        }
    }

    /// Tell the helper to close `file` (no-op if this helper never had it).
    pub fn close(&mut self, file: u64) {
        self.poisoned.remove(&file);
        let Some(r) = self.running.as_mut() else { return };
        if !r.sent.remove(&file) {
            return;
        }
        let res = wire::send(r.sock.as_fd(), &Request::Close { file }, None);
        let mut r = self.running.take().expect("checked above");
        match res.and_then(|()| self.answer(&mut r)) {
            Ok(_) => self.running = Some(r),
            Err(e) => self.bury(r, &e),
        }
    }

    /// A helper that failed a request: kill it if it lives, reap it, count how it ended.
    fn bury(&mut self, mut r: Running, e: &io::Error) {
        let hung = e.kind() == io::ErrorKind::TimedOut;
        if hung {
            let _ = r.child.kill();
        }
        drop(r.sock);
        let status = r.child.wait();
        if hung {
            self.stats.timeouts += 1;
        } else {
            self.stats.crashes += 1;
        }
        let how = match status {
            Ok(s) => s.signal().map_or_else(|| format!("{s}"), |sig| format!("signal {sig}")),
            Err(e) => format!("{e}"),
        };
        let ending = if hung { "killed at the timeout".to_string() } else { how.clone() };
        *self.endings.entry(ending).or_default() += 1;
        let first = self.stats.crashes + self.stats.timeouts == 1;
        let msg = format!("the symbolizer helper failed on an ELF file ({e}; {how}): counted and restarted; that file's frames stay module+offset");
        if first && !self.quiet {
            log::warn!("{msg}");
        } else {
            log::debug!("{msg}");
        }
    }

    /// The names of `offsets` in `file`, one per offset; `None` when the helper gave none.
    pub fn symbolize(&mut self, file: u64, fd: BorrowedFd, offsets: &[u64]) -> Option<Vec<Option<Resolved>>> {
        match self.ask(file, fd, &Request::Symbolize { file, offsets: offsets.to_vec() })? {
            Response::Symbols(v) if v.len() == offsets.len() => Some(v),
            other => {
                log::debug!("the symbolizer helper could not read file {file}: {other:?}");
                None
            }
        }
    }

    /// The GNU build id of `file`, hex.
    pub fn build_id(&mut self, file: u64, fd: BorrowedFd) -> Option<String> {
        match self.ask(file, fd, &Request::BuildId { file })? {
            Response::BuildId(b) => b.filter(|b| b.len() <= 128 && b.bytes().all(|c| c.is_ascii_hexdigit())),
            _ => None,
        }
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        if let Some(mut r) = self.running.take() {
            drop(r.sock);
            let _ = r.child.kill();
            let _ = r.child.wait();
        }
    }
}
