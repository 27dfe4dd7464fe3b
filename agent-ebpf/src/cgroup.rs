//! `--cgroup` on the v2 (unified) hierarchy: a process that is not watched yet joins the watched
//! set at its next fork or exec when its cgroup, or an ancestor of it, is one userspace watches.
//! So a process moved into the cgroup (`docker exec`, `systemd-run --scope`, a write to
//! `cgroup.procs`) is watched from its first fork or exec on, and a child it forks right after
//! joining is watched from its first fault.
//!
//! Not a program: fork.rs and exec.rs call [`joins`] for an unwatched process. Without `--cgroup` ([`CGROUP_LEVELS`] 0) that costs
//! one global load; with it, the lookups run in a cold global function, once per fork or exec
//! of an unwatched process.
use agent_common::{counter, EventKind};
use aya_ebpf::{
    helpers::{bpf_get_current_ancestor_cgroup_id, bpf_get_current_cgroup_id},
    macros::map,
    maps::HashMap,
};

use crate::{
    proc_event,
    state::{count, g},
};

/// Bit L set: a watched cgroup sits at level L of the v2 hierarchy (the root is level 0). 0: no
/// `--cgroup` on v2. Set by the loader.
#[unsafe(no_mangle)]
pub static CGROUP_LEVELS: u32 = 0;

/// Watched cgroups -> 1, by [`key`] of their hierarchy and id (the directory's inode number).
/// Userspace fills it.
#[map]
pub static WATCHED_CGROUPS: HashMap<u64, u32> = HashMap::with_max_entries(4096, 0);

/// The key of a cgroup in [`WATCHED_CGROUPS`]: its id, with its hierarchy (0 for v2) in the top
/// byte (agent-common `cgroup_key`).
#[inline(always)]
pub fn key(root: u32, id: u64) -> u64 {
    agent_common::cgroup_key(root, id)
}

/// True when `tgid` (not watched) belongs to a watched cgroup: it is now in WATCHED, and a
/// `Join` record went to userspace before the caller's own record.
#[inline(always)]
pub fn joins(tgid: u32, tid: u32) -> bool {
    g(&CGROUP_LEVELS) != 0 && cold_cgroup_join(tgid, tid) != 0
}

/// Cold: the cgroup lookups of an unwatched fork or exec. Its own cgroup first, then its
/// ancestors at the levels where watched cgroups are (a cgroup created under a watched one after
/// the start is covered without userspace).
#[inline(never)]
#[unsafe(no_mangle)]
pub extern "C" fn cold_cgroup_join(tgid: u32, tid: u32) -> u32 {
    let levels = g(&CGROUP_LEVELS) as u32;
    let mut found = WATCHED_CGROUPS.get_ptr(unsafe { bpf_get_current_cgroup_id() }).is_some();
    let mut level = 0;
    while !found && level < 32 {
        if levels & (1 << level) != 0 {
            let id = unsafe { bpf_get_current_ancestor_cgroup_id(level as i32) };
            found = id != 0 && WATCHED_CGROUPS.get_ptr(id).is_some();
        }
        level += 1;
    }
    if !found {
        return 0;
    }
    if crate::state::watch(tgid).is_err() {
        count(counter::MAP_FULL);
        return 0;
    }
    proc_event::emit(EventKind::Join, tgid, tid, tgid, 0);
    1
}
