//! The ledger's side of a process's life: fork (the child inherits its parent's maps and open
//! files), exec (a new image: the old mm and its seed are left), exit (its last name; what it
//! no longer needs is dropped while it waits to be retired).
use agent_common::{EventKind, ProcEvent};

use super::{proc_entry, Ledger};
use crate::{
    attribution::{mappings::MappingMap, process::Proc, rss_trace::RssTrace},
    kernel::events::comm_str,
    records::Record,
};

impl Ledger {
    pub fn on_fork(&mut self, e: &ProcEvent) -> Record {
        debug_assert!(self.procs.get(&e.pid).is_none_or(|p| !p.alive), "a live pid forked again");
        let parent = self.procs.get(&e.ppid);
        let (maps, fds) = parent.map(|p| (p.maps.clone(), p.fds.clone())).unwrap_or_default();
        let comm = comm_str(&e.comm);
        // The kernel tracked the child's counters from zero (fork copy), so no seed is needed.
        let mut child = Proc::new(e.pid, e.ppid, comm.clone(), maps);
        child.fds = fds;
        self.procs.insert(e.pid, child);
        Record::Proc { pid: e.pid, ppid: e.ppid, comm, event: "fork", labels: Default::default() }
    }

    /// An exec: its record, and the mms the process left (their kernel state can go now: the
    /// old mm's teardown came before the exec record).
    pub fn on_exec(&mut self, e: &ProcEvent) -> (Record, Vec<u32>) {
        let comm = comm_str(&e.comm);
        let (facts, poll_end) = (self.facts.as_ref(), self.batch_at.1);
        let p = proc_entry(&mut self.procs, facts, e.pid);
        p.comm = comm.clone();
        // The seed described the old image's mm; the kernel tracks the new one from zero.
        p.seed = None;
        p.hugetlb = Default::default();
        let cur = p.cur_mm;
        let left = p.mms.iter().map(|c| c.mm_id).filter(|&id| Some(id) != cur).collect();
        p.mms.retain(|c| Some(c.mm_id) == cur);
        if p.reload_maps(facts) {
            // Newer than the poll's records (see `Proc::reread_maps`).
            p.maps_read_poll = poll_end;
        } else {
            p.maps = MappingMap::default();
        }
        // The old image's map names nothing of the new one.
        p.maps_before = Some(MappingMap::default());
        let ppid = p.ppid;
        // A vfork child ran on its parent's mm until now.
        self.leave_shared_mms(e.pid);
        (Record::Proc { pid: e.pid, ppid, comm, event: "exec", labels: Default::default() }, left)
    }

    /// A process that joined the watched set in the kernel (`--cgroup`: a member of a watched
    /// cgroup forked or exec'd); `None` if it is watched already. No seed: /proc is read after
    /// the kernel started counting, so each counter's first change is dropped (counted).
    pub fn on_join(&mut self, e: &ProcEvent) -> Option<Record> {
        if self.procs.get(&e.pid).is_some_and(|p| p.alive) {
            return None;
        }
        let (ppid, comm) = self.facts.facts(e.pid).unwrap_or_else(|| (0, comm_str(&e.comm)));
        let maps = self.facts.maps(e.pid).unwrap_or_default();
        self.add(e.pid, ppid, comm.clone(), maps, None);
        Some(Record::Proc { pid: e.pid, ppid, comm, event: "join", labels: Default::default() })
    }

    /// The exit of a process; `None` if it was already seen gone (the /proc liveness check can
    /// beat the kernel's record).
    pub fn on_exit(&mut self, e: &ProcEvent) -> Option<Record> {
        let facts = self.facts.as_ref();
        let p = proc_entry(&mut self.procs, facts, e.pid);
        p.exit_record_seen |= e.hdr.kind == EventKind::Exit as u32;
        if !p.alive {
            // The liveness check saw it gone first, when /proc no longer had its name: the
            // kernel's record has the name it exited under.
            if e.comm[0] != 0 && p.comm_at_exit_unknown {
                p.comm = comm_str(&e.comm);
                p.comm_at_exit_unknown = false;
            }
            return None;
        }
        p.alive = false;
        // It will not be read again: its trace and open files are dead weight while it waits
        // to be retired.
        p.rss_trace = RssTrace::default();
        p.fds = Default::default();
        // Its last name: prctl(PR_SET_NAME) makes no event. When the last thread out is the
        // leader, the record has it; else /proc has the zombie leader's name, as long as the
        // number is not already another process's; the exiting thread's own name is the
        // fallback.
        let named = e.comm[0] != 0;
        if named && e.hdr.tid == e.pid {
            p.comm = comm_str(&e.comm);
        } else if let Some(c) = facts.zombie_comm(e.pid) {
            p.comm = c;
        } else if named {
            p.comm = comm_str(&e.comm);
        } else {
            p.comm_at_exit_unknown = true;
        }
        let rec =
            Record::Proc { pid: e.pid, ppid: p.ppid, comm: p.comm.clone(), event: "exit", labels: Default::default() };
        self.leave_shared_mms(e.pid);
        Some(rec)
    }
}
