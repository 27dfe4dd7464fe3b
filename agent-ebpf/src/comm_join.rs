//! `serve --comm NAME`: a process that is not watched joins the watched set at its exec when the
//! name it execs under (its new comm) is one userspace watches. From then on the kernel follows
//! its forks like any watched process. (A `prctl(PR_SET_NAME)` rename makes no event; userspace
//! finds those by a scan at each interval's end.)
//!
//! Not a program: exec.rs calls [`joins`] for an unwatched process: one hash lookup per exec of
//! an unwatched process, in a cold global function; the map is empty without `--comm`.
use agent_common::{counter, EventKind};
use aya_ebpf::{helpers::bpf_get_current_comm, macros::map, maps::HashMap};

use crate::{proc_event, state::count};

/// Watched names (the kernel's 16-byte comm, NUL-padded) -> 1. Userspace fills it.
#[map]
pub static WATCHED_COMMS: HashMap<[u8; 16], u32> = HashMap::with_max_entries(64, 0);

/// True when `tgid` (not watched) execs under a watched name: it is now in WATCHED, and a `Join`
/// record went to userspace before the caller's own record.
#[inline(always)]
pub fn joins(tgid: u32, tid: u32) -> bool {
    cold_comm_join(tgid, tid) != 0
}

#[inline(never)]
#[unsafe(no_mangle)]
pub extern "C" fn cold_comm_join(tgid: u32, tid: u32) -> u32 {
    let Ok(comm) = bpf_get_current_comm() else { return 0 };
    if unsafe { WATCHED_COMMS.get(&comm) }.is_none() {
        return 0;
    }
    if crate::state::watch(tgid).is_err() {
        count(counter::MAP_FULL);
        return 0;
    }
    proc_event::emit(EventKind::Join, tgid, tid, tgid, 0);
    1
}
