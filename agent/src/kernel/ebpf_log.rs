//! The eBPF programs' diagnostics (aya-log-ebpf `error!`/`warn!`... on their cold paths), forwarded
//! to the `log` crate: they appear in the agent's own log at their level, with the eBPF module as
//! target (`agent::fork`, `agent::state`, ...), so `RUST_LOG=agent=debug` covers both sides.
use aya_log::EbpfLogger;
use tokio::{
    io::{unix::AsyncFd, Interest},
    task::JoinHandle,
};

/// Start forwarding the log records of `ebpf`'s programs. Call it after the programs are loaded
/// (it takes the `AYA_LOGS` ring out of `ebpf`) and from inside a tokio runtime with its IO
/// driver on (`enable_all`/`enable_io`; without it tokio panics): it spawns a task that
/// reads the ring whenever the kernel wakes it, until the runtime shuts down or the handle is
/// aborted.
///
/// None, with a warning, when the object has no log ring (no program logs) or outside a
/// runtime; the agent then runs without the programs' diagnostics.
pub fn forward(ebpf: &mut aya::Ebpf) -> Option<JoinHandle<()>> {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        log::warn!("eBPF diagnostics not forwarded: not inside a tokio runtime");
        return None;
    };
    let logger = match EbpfLogger::init(ebpf) {
        Ok(l) => l,
        Err(e) => {
            log::warn!("eBPF diagnostics not forwarded: {e}");
            return None;
        }
    };
    // SAFETY: the logger owns the ring's map fd; it stays open, and is the one `as_raw_fd`
    // returns, for as long as the logger lives, which is as long as the AsyncFd holding it.
    let mut fd = match unsafe { AsyncFd::register_with_interest(logger, Interest::READABLE) } {
        Ok(fd) => fd,
        Err(e) => {
            log::warn!("eBPF diagnostics not forwarded: cannot poll the log ring: {e}");
            return None;
        }
    };
    Some(rt.spawn(async move {
        loop {
            match fd.readable_mut().await {
                Ok(mut guard) => {
                    guard.get_inner_mut().flush();
                    // Only clears the readiness seen when the guard was taken: a record that
                    // arrived during the flush wakes us again.
                    guard.clear_ready();
                }
                Err(e) => {
                    log::warn!("eBPF diagnostics no longer forwarded: {e}");
                    return;
                }
            }
        }
    }))
}
