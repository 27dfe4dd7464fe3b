//! The pipeline's `--cgroup` steps, and the labels of `proc` records:
//! - at each interval's end, membership: processes that joined a watched cgroup without a fork
//!   or exec the kernel saw are watched, processes that left are no longer (a `proc` record with
//!   `event: "left"`), their kernel state dropped;
//! - a `Join` record from the kernel (a member forked or exec'd, or moved in) puts the process
//!   in the ledger; a thread moved alone (v1 `tasks`, v2 `cgroup.threads`) is no process: the
//!   move tracepoint has no threadgroup field, so its tid is checked against its Tgid here;
//! - at each smaps sweep, a `cgroup` record per watched cgroup, and its cgroup-level verdict.
use agent_common::ProcEvent;

use super::Pipeline;
use crate::{
    judgement::{
        cgroup::{self as cg, CgroupRecord},
        cgroup_files,
        cgroup_verdict::CgroupDetector,
        Params,
    },
    records::Record,
    targets::cgroup_watch::CgroupWatch,
};

/// The thread group of task `tid` (`Tgid:` of `/proc/TID/status`); None when it is gone.
fn tgid_of(tid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("Tgid:"))?.trim().parse().ok()
}

/// The watched cgroups and their verdict state.
pub struct CgroupStage {
    watch: CgroupWatch,
    detectors: Vec<CgroupDetector>,
    params: Params,
    /// The memory cgroup each was last read from: kept while it has no member (what they left
    /// behind, a tmpfs file, is still charged there).
    memory_dirs: Vec<Option<std::path::PathBuf>>,
}

impl Pipeline {
    /// Watch these cgroups' membership (seeded already) and explain their memory, judging them
    /// with the pids' leak parameters.
    pub fn set_cgroups(&mut self, watch: CgroupWatch, params: Params) {
        let detectors = watch.cgroups.iter().map(|_| CgroupDetector::default()).collect();
        let memory_dirs = vec![None; watch.cgroups.len()];
        self.cgroups = Some(CgroupStage { watch, detectors, params, memory_dirs });
    }

    /// Cgroup-level leak verdicts standing.
    pub(super) fn cgroup_leaks_standing(&self) -> u64 {
        self.cgroups.as_ref().map_or(0, |c| c.detectors.iter().filter(|d| d.standing()).count() as u64)
    }

    /// A `proc` record gets its process's labels, then goes out.
    pub(super) fn emit_labelled(&mut self, mut r: Record) {
        if let Record::Proc { pid, ppid, event, labels, .. } = &mut r {
            *labels = self.labels.label(*pid, *ppid, event);
        }
        self.sinks.emit(&r);
    }

    /// The kernel's `Join` record: a process of a watched v2 cgroup forked or exec'd.
    pub(super) fn on_join(&mut self, e: &ProcEvent) -> Option<Record> {
        // The agent itself, inside a watched cgroup, starting a thread: never watched (its own
        // faults would feed its own ring).
        if e.pid == std::process::id() {
            self.kernel.bpf.forget(e.pid, &[]);
            self.kernel.bpf.forget_tasks(e.pid);
            return None;
        }
        // A thread moved alone: the kernel took its tid for a process. Not one (its process
        // joins when cgroup.procs lists it, at the next poll).
        if tgid_of(e.pid).is_some_and(|tgid| tgid != e.pid) {
            self.kernel.bpf.forget(e.pid, &[]);
            return None;
        }
        self.ledger.on_join(e)
    }

    /// The kernel's `Leave` record: a watched process moved out of the watched cgroups (the
    /// kernel dropped it from its watched set). One still inside (a cgroup created under a
    /// watched one since the map was filled) is watched again.
    pub(super) fn on_leave(&mut self, e: &ProcEvent) -> Option<Record> {
        let c = self.cgroups.as_mut()?;
        if !self.ledger.get(e.pid).is_some_and(|p| p.alive) {
            return None;
        }
        if c.watch.still_member(e.pid) {
            let _ = self.kernel.bpf.watch(e.pid);
            return None;
        }
        self.left(e.pid);
        None
    }

    /// Membership at an interval's end: joins the kernel did not see, and departures.
    pub(super) fn cgroup_poll(&mut self) {
        let Some(c) = self.cgroups.as_mut() else { return };
        let poll = c.watch.poll(&mut self.ledger, &mut self.kernel.bpf);
        for pid in poll.joined {
            if let Some(p) = self.ledger.get(pid) {
                let r =
                    Record::Proc { pid, ppid: p.ppid, comm: p.comm.clone(), event: "join", labels: Default::default() };
                self.emit_labelled(r);
            }
        }
        for pid in poll.left {
            self.left(pid);
        }
    }

    /// A process left the watched cgroups: out of the kernel's watched set now (its threads'
    /// slots too), so nothing more of it is attributed; its mms' state goes when an exited
    /// process's would. Its record: `proc` with `event: "left"`.
    fn left(&mut self, pid: u32) {
        self.kernel.bpf.forget(pid, &[]);
        self.kernel.bpf.forget_tasks(pid);
        if let Some(mut r) = self.on_exit(&ProcEvent { pid, ..Default::default() }) {
            if let Record::Proc { event, .. } = &mut r {
                *event = "left";
            }
            self.emit_labelled(r);
        }
    }

    /// A `cgroup` record per watched cgroup, and its verdict.
    pub(super) fn cgroup_sweep(&mut self) {
        let Some(c) = self.cgroups.as_mut() else { return };
        let t = self.start.elapsed().as_secs_f64();
        for (i, cgroup) in c.watch.cgroups.iter().enumerate() {
            let members: Vec<u32> =
                c.watch.members(i).iter().copied().filter(|&p| self.ledger.get(p).is_some_and(|p| p.alive)).collect();
            let dir = match cg::memory_dir(cgroup, members.iter().copied()) {
                Err(cg::NoMemory::NoMember) => c.memory_dirs[i].take().ok_or(cg::NoMemory::NoMember),
                dir => dir,
            };
            let mem = dir.as_deref().ok().and_then(cg::read_memory);
            let explained = cg::explained(&members, &self.ledger, &self.judge);
            let files = cgroup_files::top_unmapped(&members);
            let mut rec: CgroupRecord = cg::record(cgroup, members.len(), mem.as_ref(), explained, files);
            if mem.is_none() {
                rec.no_memory_cgroup =
                    Some(dir.as_ref().err().map_or("its memory files could not be read", |e| e.reason()));
            }
            c.memory_dirs[i] = dir.ok();
            let verdict = c.detectors[i].observe(t, &rec, &c.params);
            self.sinks.emit(&Record::Cgroup(rec));
            if let Some(l) = verdict {
                self.sinks.emit(&Record::CgroupLeak(l));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::tgid_of;

    #[test]
    fn a_threads_tgid_is_its_process() {
        let me = std::process::id();
        assert_eq!(tgid_of(me), Some(me));
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            let link = std::fs::read_link("/proc/thread-self").unwrap();
            tid_tx.send(link.file_name().unwrap().to_str().unwrap().parse::<u32>().unwrap()).unwrap();
            let _ = done_rx.recv();
        });
        let tid = tid_rx.recv().unwrap();
        assert_ne!(tid, me);
        assert_eq!(tgid_of(tid), Some(me), "thread {tid} taken for a process");
        drop(done_tx);
        t.join().unwrap();
    }
}
