//! `cgroup:cgroup_attach_task`: a process moved between cgroups (a write to `cgroup.procs`),
//! with `--cgroup`. Fired once per move, in the writer, for the moved process's leader. On any
//! hierarchy a watched cgroup is on (v1 too: the tracepoint names the hierarchy and the
//! destination's id), a process moved into a watched cgroup joins the watched set at once, and
//! a watched one moved out of them leaves it at once (its leader's slot goes with it; its
//! other threads' slots are dropped by userspace on the `Leave` record). Userspace checks each
//! departure against `/proc/PID/cgroup` (a cgroup created under a watched one since the last
//! interval is not in the map yet) and takes back a process that is still inside.
//!
//! It also fires for a thread moved alone (v1 `tasks`, v2 `cgroup.threads`), with the thread's
//! tid, and its format has no threadgroup field (nor is the moved task the current one). A
//! thread of a watched process (a slot in TASKS under another tgid) is skipped here; any other
//! is found out in userspace (`/proc/TID/status` Tgid) and its `Join` undone.
use agent_common::{counter, EventKind};
use aya_ebpf::{macros::tracepoint, programs::TracePointContext};

use crate::{
    cgroup::{key, WATCHED_CGROUPS},
    proc_event,
    state::{count, field, g, is_watched, TASKS, WATCHED},
};

/// Tracepoint field offsets, from the tracefs format.
#[unsafe(no_mangle)]
pub static ATTACH_ROOT: u32 = 8;
#[unsafe(no_mangle)]
pub static ATTACH_ID: u32 = 16;
#[unsafe(no_mangle)]
pub static ATTACH_PID: u32 = 24;

/// Bit R set: hierarchy R (0 is v2) holds a watched cgroup. 0: no `--cgroup`. Set by the loader.
#[unsafe(no_mangle)]
pub static CGROUP_ROOTS: u32 = 0;

#[tracepoint]
pub fn cgroup_attach(ctx: TracePointContext) -> u32 {
    let roots = g(&CGROUP_ROOTS) as u32;
    if roots == 0 {
        return 0;
    }
    let Some(root) = field::<i32>(&ctx, &ATTACH_ROOT) else { return 0 };
    if !(0..32).contains(&root) || roots & (1 << root) == 0 {
        return 0;
    }
    let (Some(id), Some(pid)) = (field::<u64>(&ctx, &ATTACH_ID), field::<i32>(&ctx, &ATTACH_PID)) else {
        return 0;
    };
    let pid = pid as u32;
    if TASKS.get_ptr(pid).is_some_and(|s| unsafe { (*s).tgid } != pid) {
        return 0;
    }
    let into_watched = WATCHED_CGROUPS.get_ptr(key(root as u32, id)).is_some();
    match (into_watched, is_watched(pid)) {
        (true, false) => {
            if crate::state::watch(pid).is_err() {
                count(counter::MAP_FULL);
                return 0;
            }
            proc_event::emit(EventKind::Join, pid, pid, pid, 0);
        }
        (false, true) => {
            let _ = WATCHED.remove(pid);
            let _ = TASKS.remove(pid);
            proc_event::emit(EventKind::Leave, pid, pid, pid, 0);
        }
        _ => {}
    }
    0
}
