//! Where user page faults come from: the x86 tracepoint `exceptions:page_fault_user`, or the
//! software perf event `PERF_COUNT_SW_PAGE_FAULTS` (every architecture), with the
//! `page_fault_perf` program on one event per online CPU. Both feed the same task-slot
//! bookkeeping (agent-ebpf `fault.rs`); the perf source cannot see copy-on-write (no error code
//! in its context), which the agent says in its `start` record.
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

use aya::{programs::PerfEvent, Ebpf};

use crate::error::AgentError;

/// `--fault-source`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FaultSource {
    /// `exceptions:page_fault_user` (x86 only): sees copy-on-write writes.
    Tracepoint,
    /// The software perf event page-faults, sample period 1, one per online CPU.
    Perf,
}

/// The program of the tracepoint source (in the loader's hook table).
pub const TRACEPOINT_PROGRAM: &str = "page_fault_user";
/// The program of the perf source.
pub const PERF_PROGRAM: &str = "page_fault_perf";
/// How the perf source shows in the `start` record's hooks.
pub const PERF_HOOK: &str = "perf:page-faults";
/// What the perf source cannot see, in the `start` record's `missing_hooks`.
pub const PERF_LOSES: &str =
    "copy-on-write (the perf fault source has no fault error code: a write that copies a page \
     shared with a fork partner is not told from other faults, so `cow` stays 0 and growth by copy-on-write alone is \
     not flagged; --fault-source tracepoint (x86) counts it)";

/// The source to use: the one asked for, else the tracepoint where this kernel has it.
/// `tracepoint_dir` is where the tracepoint would be, for the error line.
pub fn choose(
    asked: Option<FaultSource>,
    tracepoint_present: bool,
    tracepoint_dir: &str,
) -> Result<FaultSource, AgentError> {
    match asked {
        Some(FaultSource::Tracepoint) if !tracepoint_present => Err(AgentError::Usage(format!(
            "--fault-source tracepoint: exceptions:page_fault_user is missing from this kernel (no {tracepoint_dir}; \
             it exists on x86 only): use --fault-source perf"
        ))),
        Some(s) => Ok(s),
        None if tracepoint_present => Ok(FaultSource::Tracepoint),
        None => Ok(FaultSource::Perf),
    }
}

/// The perf events the program is attached to; dropping them detaches it.
#[derive(Debug)]
pub struct PerfFaults {
    _events: Vec<OwnedFd>,
}

/// Load `page_fault_perf` and attach it to a page-fault event on every online CPU; the
/// `start` record's hooks get [`PERF_HOOK`], its missing hooks what the source cannot see.
pub fn attach_perf(
    ebpf: &mut Ebpf,
    hooks: &mut Vec<String>,
    missing: &mut Vec<String>,
) -> Result<PerfFaults, AgentError> {
    let prog: &mut PerfEvent = ebpf
        .program_mut(PERF_PROGRAM)
        .ok_or_else(|| AgentError::Load(format!("program {PERF_PROGRAM} not in the object")))?
        .try_into()
        .map_err(|e| AgentError::Load(format!("{PERF_PROGRAM}: {e}")))?;
    prog.load().map_err(|e| AgentError::Load(format!("{PERF_PROGRAM}: {e:#}")))?;
    let prog_fd = prog.fd().map_err(|e| AgentError::Load(format!("{PERF_PROGRAM}: {e}")))?.as_fd().as_raw_fd();
    let cpus = aya::util::online_cpus().map_err(|(path, e)| AgentError::Load(format!("reading {path}: {e}")))?;
    let mut events = Vec::with_capacity(cpus.len());
    for cpu in cpus {
        let fd = open_page_faults(cpu)?;
        // SAFETY: ioctls on a perf event fd we own, with a program fd that stays open while
        // `ebpf` lives (the events are dropped with the loaded object, before it).
        unsafe {
            if libc::ioctl(fd.as_raw_fd(), PERF_EVENT_IOC_SET_BPF, prog_fd) != 0 {
                let e = std::io::Error::last_os_error();
                return Err(AgentError::Load(format!("attaching {PERF_PROGRAM} to CPU {cpu}'s page-fault event: {e}")));
            }
            if libc::ioctl(fd.as_raw_fd(), PERF_EVENT_IOC_ENABLE, 0) != 0 {
                let e = std::io::Error::last_os_error();
                return Err(AgentError::Load(format!("enabling CPU {cpu}'s page-fault event: {e}")));
            }
        }
        events.push(fd);
    }
    log::warn!("going on without {PERF_LOSES}");
    hooks.insert(0, PERF_HOOK.to_string());
    missing.push(PERF_LOSES.to_string());
    Ok(PerfFaults { _events: events })
}

/// `struct perf_event_attr` up to `config1` (PERF_ATTR_SIZE_VER0): the fields we set. aya 0.14's
/// `PerfEvent::attach` cannot set `exclude_kernel`, so the event is opened here.
#[repr(C)]
#[derive(Default)]
struct PerfEventAttr {
    type_: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    config1: u64,
}

const PERF_TYPE_SOFTWARE: u32 = 1;
const PERF_COUNT_SW_PAGE_FAULTS: u64 = 2;
const FLAG_DISABLED: u64 = 1 << 0;
const FLAG_EXCLUDE_KERNEL: u64 = 1 << 5;
const FLAG_EXCLUDE_HV: u64 = 1 << 6;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 1 << 3;
const PERF_EVENT_IOC_ENABLE: libc::c_ulong = 0x2400;
const PERF_EVENT_IOC_SET_BPF: libc::c_ulong = 0x4004_2408;

/// Every user page fault taken on `cpu`, by any task, each one a sample.
fn open_page_faults(cpu: u32) -> Result<OwnedFd, AgentError> {
    let attr = PerfEventAttr {
        type_: PERF_TYPE_SOFTWARE,
        size: std::mem::size_of::<PerfEventAttr>() as u32,
        config: PERF_COUNT_SW_PAGE_FAULTS,
        sample_period: 1,
        flags: FLAG_DISABLED | FLAG_EXCLUDE_KERNEL | FLAG_EXCLUDE_HV,
        ..Default::default()
    };
    // SAFETY: perf_event_open reads `attr` (its size given in the struct); pid -1 with a cpu is
    // every task on that cpu; no group.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            &attr as *const PerfEventAttr,
            -1,
            cpu as libc::c_int,
            -1,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(open_error(std::io::Error::last_os_error(), cpu));
    }
    // SAFETY: a fresh fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// One line naming the fix.
fn open_error(e: std::io::Error, cpu: u32) -> AgentError {
    let paranoid = std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid");
    let paranoid = paranoid.as_deref().map(str::trim).unwrap_or("unreadable");
    AgentError::Load(match e.raw_os_error() {
        Some(libc::EACCES | libc::EPERM) => format!(
            "perf_event_open of the page-fault event was refused ({e}; kernel.perf_event_paranoid = {paranoid}): run the \
             agent as root (it needs CAP_PERFMON for every task's events), or use --fault-source tracepoint on x86"
        ),
        Some(libc::ENOENT | libc::ENODEV | libc::EOPNOTSUPP | libc::ENOSYS) => format!(
            "this kernel has no software page-fault perf event ({e}; it needs CONFIG_PERF_EVENTS): use \
             --fault-source tracepoint on x86"
        ),
        Some(libc::EMFILE | libc::ENFILE) => {
            format!("perf_event_open for CPU {cpu}: {e}: raise the open-file limit (`ulimit -n`)")
        }
        _ => format!("perf_event_open of the page-fault event on CPU {cpu} failed: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tracepoint_is_the_default_where_present() {
        assert_eq!(choose(None, true, "d").unwrap(), FaultSource::Tracepoint);
        assert_eq!(choose(None, false, "d").unwrap(), FaultSource::Perf);
        assert_eq!(choose(Some(FaultSource::Perf), true, "d").unwrap(), FaultSource::Perf);
        let e = choose(Some(FaultSource::Tracepoint), false, "/t/events/exceptions/page_fault_user").unwrap_err();
        let line = e.to_string();
        assert!(line.contains("use --fault-source perf") && line.contains("/t/events"), "{line}");
        assert!(!line.contains('\n'));
    }

    #[test]
    fn the_attr_is_the_kernels_first_published_size() {
        // PERF_ATTR_SIZE_VER0
        assert_eq!(std::mem::size_of::<PerfEventAttr>(), 64);
    }

    #[test]
    fn a_refused_open_names_the_fix() {
        let line = open_error(std::io::Error::from_raw_os_error(libc::EACCES), 0).to_string();
        assert!(line.contains("run the agent as root") && line.contains("perf_event_paranoid"), "{line}");
        let line = open_error(std::io::Error::from_raw_os_error(libc::ENOENT), 0).to_string();
        assert!(line.contains("CONFIG_PERF_EVENTS"), "{line}");
    }
}
