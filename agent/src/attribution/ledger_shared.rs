//! Processes that share one mm (`clone(CLONE_VM)` without `CLONE_THREAD`, vfork's window): the
//! kernel's counters are the mm's, so every sharer's ledger holds the mm's whole counters (what
//! its smaps reports), while the pages each one's faults added stay its own.
use agent_common::{cause, RssEvent};

use super::{rss_trace, Ledger};
use crate::attribution::process::MmCounters;

impl Ledger {
    /// `tgid` changes mm `mm_id` it has no counters for: if a live process runs on it (not
    /// being torn down), they share it and `tgid` starts from its counters.
    pub(super) fn join_shared_mm(&mut self, tgid: u32, mm_id: u32) -> Option<MmCounters> {
        if self.procs.get(&tgid).is_some_and(|p| p.mms.iter().any(|c| c.mm_id == mm_id)) {
            return None;
        }
        let mut with: Vec<u32> = self
            .procs
            .values()
            .filter(|q| q.pid != tgid && q.alive && q.cur_mm == Some(mm_id))
            .filter(|q| q.mms.iter().any(|c| c.mm_id == mm_id && !c.torn))
            .map(|q| q.pid)
            .collect();
        let from = self.procs.get(with.first()?)?.mms.iter().find(|c| c.mm_id == mm_id)?.clone();
        with.push(tgid);
        let set = self.sharing.entry(mm_id).or_default();
        set.extend(with);
        set.sort_unstable();
        set.dedup();
        Some(from)
    }

    /// The mm's counter changed: every other live sharer's ledger holds the new value too.
    pub(super) fn share_counter(&mut self, e: &RssEvent, at: rss_trace::Poll) {
        let m = e.member as usize;
        if m >= 4 || e.cause == cause::NEW_MM {
            return;
        }
        let Some(pids) = self.sharing.get(&e.mm_id) else { return };
        for pid in pids.clone() {
            let Some(q) = self.procs.get_mut(&pid).filter(|q| q.pid != e.hdr.tgid && q.alive) else { continue };
            if q.cur_mm != Some(e.mm_id) {
                continue;
            }
            if let Some(c) = q.mms.iter_mut().find(|c| c.mm_id == e.mm_id) {
                c.rss[m] = e.size;
                c.known[m] = true;
                q.dirty = true;
                if let Some(kib) = q.ledger_rss_kib() {
                    q.rss_trace.note(at, kib, q.own_pages);
                }
            }
        }
    }

    /// The live processes `pid` shares its current mm with (sorted; empty when it has it alone).
    pub fn mm_shared_with(&self, pid: u32) -> Vec<u32> {
        let Some(mm) = self.procs.get(&pid).and_then(|p| p.cur_mm) else { return Vec::new() };
        let live = |q: &u32| *q != pid && self.procs.get(q).is_some_and(|p| p.alive && p.cur_mm == Some(mm));
        self.sharing.get(&mm).map(|s| s.iter().copied().filter(live).collect()).unwrap_or_default()
    }

    /// `pid` left whatever mm it shared (exit, exec).
    pub(super) fn leave_shared_mms(&mut self, pid: u32) {
        if self.sharing.is_empty() {
            return;
        }
        let procs = &self.procs;
        self.sharing.retain(|_, set| {
            set.retain(|&q| q != pid && procs.get(&q).is_some_and(|p| p.alive));
            set.len() > 1
        });
    }
}
