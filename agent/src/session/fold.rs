//! A daemon's dead (`serve`): each process taken out of the ledger is folded into its name's
//! totals (counters), not kept one by one as `watch`'s summary keeps them. Memory grows with
//! the names seen (at most `MAX_GROUPS`, then one `(other)` group), never with the processes.
use std::collections::HashMap;

use serde::Serialize;

use crate::records::{Pages, ProcSummary};

/// Names kept apart; the processes of any further name go to `OTHER`.
pub const MAX_GROUPS: usize = 4096;
pub const OTHER: &str = "(other)";

/// A daemon hands its freed heap back to the system every this many intervals.
pub const TRIM_EVERY_TICKS: u64 = 5;

/// Give the heap's free pages back to the system (glibc keeps them after a burst: a ring
/// backlog while the host storms), so the agent's RSS is what it holds, not its highest burst.
pub fn release_freed_heap() {
    // SAFETY: malloc_trim has no preconditions; 0 keeps no extra pad at the top.
    unsafe { libc::malloc_trim(0) };
}

/// What the exited processes of one name added up to.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct ExitedGroup {
    pub comm: String,
    pub processes: u64,
    pub faults: u64,
    /// Pages their faults added to RSS (and made private by copy-on-write), in all.
    pub pages: Pages,
    pub other_pages: i64,
    /// The highest USS any of them reached.
    pub peak_uss_kib: u64,
    /// Of them, the processes that exited while a leak verdict stood.
    pub leaks: u64,
}

#[derive(Debug, Default)]
pub struct Folded {
    groups: HashMap<String, ExitedGroup>,
}

impl Folded {
    /// Add one exited process to its name's totals.
    pub fn add(&mut self, s: &ProcSummary) {
        let key = if self.groups.len() < MAX_GROUPS || self.groups.contains_key(&s.comm) { &s.comm } else { OTHER };
        let g = self
            .groups
            .entry(key.to_string())
            .or_insert_with(|| ExitedGroup { comm: key.to_string(), ..ExitedGroup::default() });
        g.processes += 1;
        g.faults += s.faults;
        g.pages.anon += s.pages.anon;
        g.pages.file += s.pages.file;
        g.pages.shmem += s.pages.shmem;
        g.pages.cow += s.pages.cow;
        g.other_pages += s.other_pages;
        g.peak_uss_kib = g.peak_uss_kib.max(s.peak_uss_kib);
        g.leaks += u64::from(s.leak);
    }

    /// The totals, by name.
    pub fn take(&mut self) -> Vec<ExitedGroup> {
        let mut v: Vec<ExitedGroup> = std::mem::take(&mut self.groups).into_values().collect();
        v.sort_by(|a, b| a.comm.cmp(&b.comm));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc(pid: u32, comm: &str, anon: i64, leak: bool) -> ProcSummary {
        ProcSummary {
            pid,
            comm: comm.into(),
            faults: 1,
            pages: Pages { anon, ..Pages::default() },
            peak_uss_kib: anon as u64 * 4,
            leak,
            ..ProcSummary::default()
        }
    }

    #[test]
    fn a_million_exits_of_a_few_names_are_a_few_groups() {
        let mut f = Folded::default();
        for pid in 0..1_000_000u32 {
            f.add(&proc(pid, ["worker", "cron", "sh"][pid as usize % 3], 1 + (pid % 7) as i64, pid == 42));
        }
        let g = f.take();
        assert_eq!(g.iter().map(|g| g.comm.as_str()).collect::<Vec<_>>(), ["cron", "sh", "worker"]);
        assert_eq!(g.iter().map(|g| g.processes).sum::<u64>(), 1_000_000);
        let worker = &g[2];
        assert_eq!((worker.faults, worker.peak_uss_kib, worker.leaks), (333_334, 28, 1));
        assert_eq!(g.iter().map(|g| g.pages.anon).sum::<i64>(), (0..1_000_000).map(|p| 1 + (p % 7)).sum::<i64>());
    }

    #[test]
    fn a_daemons_departures_keep_no_entry_per_process() {
        let mut d = super::super::departures::Departures::default();
        d.fold = Some(Folded::default());
        for pid in 0..200_000 {
            d.retired(proc(pid, "wl-short", 1, false));
        }
        assert!(d.take_retired().is_empty() && d.dropped == 0);
        let g = d.take_exited();
        assert_eq!((g.len(), g[0].processes, g[0].pages.anon), (1, 200_000, 200_000));
    }

    #[test]
    fn names_past_the_bound_go_to_other_and_nothing_is_lost() {
        let mut f = Folded::default();
        for pid in 0..(MAX_GROUPS as u32 + 10) {
            f.add(&proc(pid, &format!("job-{pid}"), 2, false));
        }
        f.add(&proc(1, "job-1", 3, false));
        let g = f.take();
        assert_eq!(g.len(), MAX_GROUPS + 1);
        let other = g.iter().find(|g| g.comm == OTHER).unwrap();
        assert_eq!((other.processes, other.pages.anon), (10, 20));
        assert_eq!(g.iter().find(|g| g.comm == "job-1").unwrap().processes, 2, "a name kept stays kept");
        assert_eq!(g.iter().map(|g| g.processes).sum::<u64>(), MAX_GROUPS as u64 + 11);
    }
}
