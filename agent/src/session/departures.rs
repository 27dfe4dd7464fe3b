//! The bookkeeping of processes that exited: when each one's kernel state may be forgotten, which
//! dead ones are still kept in full (their maps, for stacks), and the summary entries of those
//! taken out of the ledger. Pure: the pipeline acts on what it says.
use std::collections::{HashMap, VecDeque};

use super::fold::{ExitedGroup, Folded};
use crate::records::ProcSummary;

/// Dead processes kept in the ledger (with their maps, for stacks) before they are reduced to
/// their summary entry; and summary entries kept in all.
const MAX_DEAD: usize = 1024;
pub const MAX_RETIRED: usize = 100_000;

#[derive(Default)]
pub struct Departures {
    /// pid -> the tick at which its exit was seen and the mms it had then, until its kernel
    /// state is forgotten.
    exits: HashMap<u32, (u64, Vec<u32>)>,
    /// Dead processes still in the ledger, oldest exit first.
    dead: VecDeque<u32>,
    /// Summaries of processes taken out of the ledger (pid reused, or too many dead kept).
    retired: Vec<ProcSummary>,
    /// Summary entries left out past MAX_RETIRED.
    pub dropped: u64,
    /// A daemon's: the retired folded into their name's totals instead of kept.
    pub fold: Option<Folded>,
}

impl Departures {
    /// As `Ledger::shrink`.
    pub fn shrink(&mut self) {
        self.exits.shrink_to(self.exits.len() * 2);
    }

    /// `pid` exited at `tick`, running on `mm_ids`. A number whose previous process is not
    /// forgotten yet keeps that one's mms too.
    pub fn exited(&mut self, pid: u32, tick: u64, mut mm_ids: Vec<u32>) {
        self.dead.push_back(pid);
        if let Some((_, earlier)) = self.exits.remove(&pid) {
            mm_ids.extend(earlier);
        }
        self.exits.insert(pid, (tick, mm_ids));
    }

    /// Processes whose exit was seen before the tick before `tick` (their teardown events have
    /// arrived by now), with their mms: their kernel state can be forgotten.
    pub fn due(&mut self, tick: u64) -> Vec<(u32, Vec<u32>)> {
        let due: Vec<u32> = self.exits.iter().filter(|&(_, (at, _))| at + 1 < tick).map(|(&pid, _)| pid).collect();
        due.into_iter().filter_map(|pid| self.exits.remove(&pid).map(|(_, mms)| (pid, mms))).collect()
    }

    /// The oldest dead process to reduce to its summary entry, while more than MAX_DEAD are
    /// kept and its kernel state is forgotten already.
    pub fn next_to_retire(&self) -> Option<u32> {
        let &pid = self.dead.front()?;
        (self.dead.len() > MAX_DEAD && !self.exits.contains_key(&pid)).then_some(pid)
    }

    /// `pid` left the ledger: keep its summary entry (bounded).
    pub fn retired(&mut self, s: ProcSummary) {
        self.dead.retain(|&p| p != s.pid);
        if let Some(f) = &mut self.fold {
            f.add(&s);
        } else if self.retired.len() < MAX_RETIRED {
            self.retired.push(s);
        } else {
            self.dropped += 1;
        }
    }

    pub fn take_retired(&mut self) -> Vec<ProcSummary> {
        std::mem::take(&mut self.retired)
    }

    /// The retired folded by name (a daemon's).
    pub fn take_exited(&mut self) -> Vec<ExitedGroup> {
        self.fold.as_mut().map(Folded::take).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forgotten_two_ticks_after_exit_with_the_mms_of_every_process_under_that_number() {
        let mut d = Departures::default();
        d.exited(7, 3, vec![1]);
        d.exited(7, 4, vec![2]);
        assert!(d.due(5).is_empty(), "seen at tick 4: not before tick 6");
        assert_eq!(d.due(6), vec![(7, vec![2, 1])]);
        assert!(d.due(7).is_empty());
    }

    #[test]
    fn the_oldest_dead_is_retired_only_past_the_bound_and_once_forgotten() {
        let mut d = Departures::default();
        for pid in 0..=MAX_DEAD as u32 {
            d.exited(pid, 0, vec![]);
        }
        assert_eq!(d.next_to_retire(), None, "its kernel state is not forgotten yet");
        assert_eq!(d.due(2).len(), MAX_DEAD + 1);
        assert_eq!(d.next_to_retire(), Some(0));
        d.retired(ProcSummary { pid: 0, ..Default::default() });
        assert_eq!(d.next_to_retire(), None, "back to the bound");
        assert_eq!(d.take_retired().len(), 1);
    }
}
