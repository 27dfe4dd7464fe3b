//! rss_stat sizes -> deltas, in ring order. `kmem:rss_stat` carries each counter's absolute
//! size; the delta against the previous size of the same (mm, member) is taken here rather than
//! in the rss program, which saves a hash-map update on every fault. The ring is one buffer, so
//! its order is the order the programs reserved their records: the same order a kernel-side
//! map would have seen, and a record lost to a full ring folds into the next delta instead of
//! vanishing.
//!
//! Two threads of one mm faulting on two CPUs race: each adds to the per-CPU counter, then the
//! tracepoint sums it (under the counter's lock), then the program reserves a ring slot.
//! - **Both added before either summed** (most races; ~700 per 128 MiB written by two threads
//!   on this 2-CPU VM): both records say 102 where the sizes were 100 before, so the first gets
//!   +2 and the second 0. A page-adding fault whose sum equals a recent record's had its page
//!   taken by that record: it gets one page back (exact when that record said +2: each added
//!   at least one).
//! - **Reserved crosswise** (a few per run): sizes 101 and 102 arrive as 102, 101 (+2, then -1).
//!   The smaller size was the earlier sum: the second gets `101 - 100`, the first keeps the rest,
//!   and the counter stays at 102. Exact whatever the sizes (a THP's 512 included).
//! - **Late** (a task preempted between its sum and its slot, under load): the same, with other
//!   faults of the counter in between; the last few page-adding faults of a counter are kept as
//!   donors until a record of another kind ends the run.
//!
//! A repair is a correction record (the donor's fault, its delta negative) that the ledger
//! applies like any other, so the donor's mapping and stack give the page back. Totals were
//! exact before; with the repairs the split between the threads' mappings is too
//! (tests/thread_deltas.rs). Left as they come: a tie with a record of 512 pages or more (a THP
//! and a 4 KiB fault: which took what is not known), and races of file pages (fault-around maps
//! 0 to 16 pages per fault, so a zero is no sign of a lost page).
use std::collections::HashMap;

use agent_common::{cause, last_size_key, member, rss_flags, RssEvent};

/// `h`'s fault gives back `delta` (negative): the ledger takes it from that fault's mapping and
/// stack. Not a fault of its own; `size` is the counter's size now.
fn correction(h: &RssEvent, delta: i64, size: i64) -> RssEvent {
    RssEvent { delta, size, flags: 0, ..*h }
}

pub struct Deltas {
    last: HashMap<u64, i64>,
    /// Per counter in a run of page-adding faults, its recent faults whose delta may hold a
    /// racing fault's pages (see the module doc); dropped at the counter's first record of
    /// another kind, so it holds a few entries at most.
    held: HashMap<u64, Vec<RssEvent>>,
    page: i64,
}

impl Default for Deltas {
    fn default() -> Self {
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as i64;
        Deltas { last: HashMap::new(), held: HashMap::new(), page }
    }
}

/// Pages of a THP: a zero after a delta this large is not repaired.
const THP_PAGES: i64 = 512;

/// Recent faults kept per counter as donors: a record preempted between its sum and its ring
/// slot comes a few records late.
const RUN_DONORS: usize = 4;

/// A fault that adds pages one folio at a time (not fault-around's 0 to 16).
fn adds_pages(e: &RssEvent) -> bool {
    const WRITE: u64 = 2;
    matches!(e.cause, cause::FAULT | cause::KERNEL_FAULT)
        && e.flags & rss_flags::FIRST_OF_FAULT != 0
        && (e.member == member::ANON || (e.member == member::SHMEM && e.aux & WRITE != 0))
}

impl Deltas {
    /// As `Ledger::shrink`.
    pub fn shrink(&mut self) {
        self.last.shrink_to(self.last.len() * 2);
        self.held.shrink_to(self.held.len() * 2);
    }

    /// Fill `e.delta` (and `UNSEEDED` when no earlier size is known); false when the counter did
    /// not move, and the record carries nothing. `fix` receives a correction record to apply
    /// too when this record repaired a race with the one before it.
    pub fn apply(&mut self, e: &mut RssEvent, fix: &mut Option<RssEvent>) -> bool {
        if e.cause == cause::NEW_MM {
            // The first change of an mm a watched task builds (a fork's copy, exec's new image):
            // it starts from zero, whatever an mm freed before under the same id left.
            let first = e.flags & rss_flags::NEW_MM_FIRST != 0;
            for m in 0..4 {
                let k = last_size_key(e.mm_id, m);
                if first {
                    self.last.insert(k, 0);
                    self.held.remove(&k);
                } else {
                    self.last.entry(k).or_insert(0);
                }
            }
        }
        let key = last_size_key(e.mm_id, e.member);
        let prev = self.last.insert(key, e.size);
        e.delta = match prev {
            Some(p) => e.size - p,
            None => {
                e.flags |= rss_flags::UNSEEDED;
                e.size
            }
        };
        if let (Some(top), false) = (prev, e.cause == cause::NEW_MM) {
            self.repair(key, e, top, fix);
        }
        e.delta != 0
    }

    /// The races of the module doc: `e`, a page-adding fault whose sum is not above the size
    /// before it (`top`), read its sum before a record that came earlier in the ring, or at the
    /// same time; the recent record whose sum covers `e`'s (its donor) gives `e` its pages.
    fn repair(&mut self, key: u64, e: &mut RssEvent, top: i64, fix: &mut Option<RssEvent>) {
        let page = self.page;
        let adds = adds_pages(e);
        let run = if self.held.is_empty() { None } else { self.held.get_mut(&key) };
        let Some(run) = run else {
            if adds && e.delta > page {
                self.held.insert(key, vec![*e]);
            }
            return;
        };
        if !adds {
            // A change of another kind: the run of faults is over.
            self.held.remove(&key);
            return;
        }
        if e.size <= top {
            // The newest donor whose sum equals e's (both added before either summed: e's page
            // is one of its delta's) or whose range holds e's (e summed first, reserved later).
            // Only another thread's fault: one thread sums and reserves before its next fault,
            // so its own records are never out of order (a late record there is a decrease
            // reserved late, e.g. reclaim's). And only a folio's worth of pages: more is a
            // decrease that came late, not a fault.
            let found = run.iter().rposition(|d| {
                let before = d.size - d.delta;
                let folio =
                    |n: i64| n > 0 && n % page == 0 && ((n / page) as u64).is_power_of_two() && n <= THP_PAGES * page;
                d.hdr.tid != e.hdr.tid
                    && ((d.size == e.size && d.delta < THP_PAGES * page)
                        || (before < e.size && e.size < d.size && folio(e.size - before)))
            });
            if let Some(i) = found {
                let d = &mut run[i];
                let mine = if d.size == e.size { page } else { e.size - (d.size - d.delta) };
                *fix = Some(correction(d, -mine, top));
                d.delta -= mine;
                e.delta = mine;
                e.size = top;
                self.last.insert(key, top);
                run.retain(|d| d.delta > page);
                if run.is_empty() {
                    self.held.remove(&key);
                }
                return;
            }
        }
        if e.delta > page {
            if run.len() == RUN_DONORS {
                run.remove(0);
            }
            run.push(*e);
        }
    }

    /// Forget an mm that is gone: its id is soon another mm's.
    pub fn forget(&mut self, mm_id: u32) {
        for m in 0..4 {
            self.last.remove(&last_size_key(mm_id, m));
            self.held.remove(&last_size_key(mm_id, m));
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.last.len()
    }
}

#[cfg(test)]
mod tests {
    use agent_common::member;

    use super::*;

    fn ev(mm_id: u32, m: u32, why: u32, flags: u32, size: i64) -> RssEvent {
        RssEvent { mm_id, member: m, cause: why, flags, size, ..Default::default() }
    }

    #[test]
    fn deltas_follow_sizes_per_mm_and_member() {
        let mut d = Deltas::default();
        let mut e = ev(1, member::ANON, cause::FAULT, 0, 8192);
        assert!(d.apply(&mut e, &mut None));
        assert_eq!((e.delta, e.flags & rss_flags::UNSEEDED), (8192, rss_flags::UNSEEDED));
        let mut e = ev(1, member::ANON, cause::FAULT, rss_flags::FIRST_OF_FAULT, 12288);
        assert!(d.apply(&mut e, &mut None));
        assert_eq!((e.delta, e.flags), (4096, rss_flags::FIRST_OF_FAULT));
        // Another member and another mm have their own sizes.
        let mut e = ev(1, member::FILE, cause::FAULT, 0, 4096);
        assert!(d.apply(&mut e, &mut None) && e.flags & rss_flags::UNSEEDED != 0);
        let mut e = ev(2, member::ANON, cause::SYSCALL, 0, 4096);
        assert!(d.apply(&mut e, &mut None) && e.delta == 4096);
        // No move: nothing to report.
        let mut e = ev(1, member::ANON, cause::OTHER, 0, 12288);
        assert!(!d.apply(&mut e, &mut None));
        let mut e = ev(1, member::ANON, cause::EXIT, 0, 0);
        assert!(d.apply(&mut e, &mut None) && e.delta == -12288);
    }

    #[test]
    fn a_new_mm_starts_from_zero_and_a_forgotten_one_is_unseeded() {
        let mut d = Deltas::default();
        let mut old = ev(7, member::ANON, cause::FAULT, 0, 1 << 20);
        d.apply(&mut old, &mut None);
        // The id comes back as a fork's copy: reset, then exact.
        let mut e = ev(7, member::ANON, cause::NEW_MM, rss_flags::NEW_MM_FIRST, 40960);
        assert!(d.apply(&mut e, &mut None));
        assert_eq!((e.delta, e.flags & rss_flags::UNSEEDED), (40960, 0));
        let mut e = ev(7, member::FILE, cause::NEW_MM, 0, 4096);
        assert!(d.apply(&mut e, &mut None) && e.delta == 4096 && e.flags & rss_flags::UNSEEDED == 0);
        // Without the first flag (built by a task without a slot): zero only where unknown.
        let mut e = ev(8, member::SHMEM, cause::NEW_MM, 0, 4096);
        assert!(d.apply(&mut e, &mut None) && e.delta == 4096 && e.flags & rss_flags::UNSEEDED == 0);
        let mut e = ev(7, member::ANON, cause::NEW_MM, 0, 45056);
        assert!(d.apply(&mut e, &mut None) && e.delta == 4096);
        d.forget(7);
        let mut e = ev(7, member::ANON, cause::FAULT, 0, 49152);
        assert!(d.apply(&mut e, &mut None) && e.flags & rss_flags::UNSEEDED != 0);
        assert_eq!(d.len(), 4 + 1);
    }

    /// A fault of thread `addr` (each test thread faults its own address).
    fn fault(m: u32, size_pages: i64, addr: u64) -> RssEvent {
        RssEvent {
            hdr: agent_common::EventHeader { tid: addr as u32, ..Default::default() },
            mm_id: 3,
            member: m,
            cause: cause::FAULT,
            flags: rss_flags::FIRST_OF_FAULT,
            size: size_pages * 4096,
            addr,
            aux: 2,
            ..Default::default()
        }
    }

    /// Apply `e`; (its delta in pages, the correction's (addr, delta in pages)).
    fn step(d: &mut Deltas, mut e: RssEvent) -> (i64, Option<(u64, i64)>) {
        let mut fix = None;
        d.apply(&mut e, &mut fix);
        assert!(fix.is_none_or(|f| f.flags & rss_flags::FIRST_OF_FAULT == 0), "a correction is no fault");
        (e.delta / 4096, fix.map(|f| (f.addr, f.delta / 4096)))
    }

    #[test]
    fn both_added_before_either_summed_gives_the_page_back() {
        let mut d = Deltas { page: 4096, ..Default::default() };
        step(&mut d, fault(member::ANON, 100, 0xa));
        // Threads A (0xa) and B (0xb) each add one; both sums say 102.
        assert_eq!(step(&mut d, fault(member::ANON, 102, 0xa)), (2, None));
        assert_eq!(step(&mut d, fault(member::ANON, 102, 0xb)), (1, Some((0xa, -1))));
        // Nothing held any more: the next is plain.
        assert_eq!(step(&mut d, fault(member::ANON, 103, 0xb)), (1, None));
        // Three CPUs: +3, 0, 0.
        assert_eq!(step(&mut d, fault(member::ANON, 106, 0xa)), (3, None));
        assert_eq!(step(&mut d, fault(member::ANON, 106, 0xb)), (1, Some((0xa, -1))));
        assert_eq!(step(&mut d, fault(member::ANON, 106, 0xc)), (1, Some((0xa, -1))));
        // After a THP's 512 (+1 of a racer), a zero is left: which took what is not known.
        assert_eq!(step(&mut d, fault(member::ANON, 619, 0xa)), (513, None));
        assert_eq!(step(&mut d, fault(member::ANON, 619, 0xb)), (0, None));
        // Another record of the counter in between: nothing to repair.
        assert_eq!(step(&mut d, fault(member::ANON, 621, 0xa)), (2, None));
        let unmap = RssEvent { cause: cause::SYSCALL, flags: 0, ..fault(member::ANON, 620, 0) };
        assert_eq!(step(&mut d, unmap), (-1, None));
        assert_eq!(step(&mut d, fault(member::ANON, 620, 0xb)), (0, None));
        // File pages: fault-around may add none, a zero is no sign.
        step(&mut d, fault(member::FILE, 10, 0xa));
        assert_eq!(step(&mut d, fault(member::FILE, 12, 0xa)), (2, None));
        assert_eq!(step(&mut d, fault(member::FILE, 12, 0xb)), (0, None));
    }

    #[test]
    fn a_record_preempted_before_its_slot_comes_late_and_still_gets_its_page() {
        let mut d = Deltas { page: 4096, ..Default::default() };
        step(&mut d, fault(member::ANON, 100, 0xa));
        // A and B add, both sum 102; B is preempted before its slot, A faults once more.
        assert_eq!(step(&mut d, fault(member::ANON, 102, 0xa)), (2, None));
        assert_eq!(step(&mut d, fault(member::ANON, 103, 0xa)), (1, None));
        assert_eq!(step(&mut d, fault(member::ANON, 102, 0xb)), (1, Some((0xa, -1))));
        // The counter stays at 103.
        assert_eq!(step(&mut d, fault(member::ANON, 104, 0xb)), (1, None));
        // Late and crosswise: B summed 105 before A's 107 (A +2 from 105... B's add in it).
        assert_eq!(step(&mut d, fault(member::ANON, 107, 0xa)), (3, None));
        assert_eq!(step(&mut d, fault(member::ANON, 108, 0xa)), (1, None));
        assert_eq!(step(&mut d, fault(member::ANON, 105, 0xb)), (1, Some((0xa, -1))));
        assert_eq!(step(&mut d, fault(member::ANON, 109, 0xb)), (1, None));
    }

    #[test]
    fn records_reserved_crosswise_take_their_own_sums() {
        let mut d = Deltas { page: 4096, ..Default::default() };
        step(&mut d, fault(member::ANON, 100, 0xa));
        // A summed 101, B 102; B's record came first.
        assert_eq!(step(&mut d, fault(member::ANON, 102, 0xb)), (2, None));
        assert_eq!(step(&mut d, fault(member::ANON, 101, 0xa)), (1, Some((0xb, -1))));
        // The counter stays at the larger sum.
        assert_eq!(step(&mut d, fault(member::ANON, 103, 0xa)), (1, None));
        // A THP (B) and a page (A): exact too.
        assert_eq!(step(&mut d, fault(member::ANON, 616, 0xb)), (513, None));
        assert_eq!(step(&mut d, fault(member::ANON, 104, 0xa)), (1, Some((0xb, -1))));
        assert_eq!(step(&mut d, fault(member::ANON, 617, 0xa)), (1, None));
    }

    #[test]
    fn a_decrease_reserved_late_is_no_race() {
        let mut d = Deltas { page: 4096, ..Default::default() };
        step(&mut d, fault(member::ANON, 100, 0xa));
        // A's THP; a madvise of 200 pages sums 412 and reserves late; B's fault sums 413.
        assert_eq!(step(&mut d, fault(member::ANON, 612, 0xa)), (512, None));
        assert_eq!(step(&mut d, fault(member::ANON, 413, 0xb)), (-199, None), "313 pages are no folio");
        // One thread cannot race with itself: its next fault after a late decrease stays as is.
        step(&mut d, fault(member::ANON, 100, 0xa));
        assert_eq!(step(&mut d, fault(member::ANON, 102, 0xa)), (2, None));
        assert_eq!(step(&mut d, fault(member::ANON, 102, 0xa)), (0, None));
        assert_eq!(step(&mut d, fault(member::ANON, 101, 0xa)), (-1, None));
    }

    #[test]
    fn a_new_mm_drops_the_old_ones_donors() {
        let mut d = Deltas { page: 4096, ..Default::default() };
        step(&mut d, fault(member::ANON, 100, 0xa));
        assert_eq!(step(&mut d, fault(member::ANON, 102, 0xa)), (2, None));
        let new_mm = RssEvent { cause: cause::NEW_MM, flags: rss_flags::NEW_MM_FIRST, ..fault(member::ANON, 4, 0xc) };
        step(&mut d, new_mm);
        assert_eq!(step(&mut d, fault(member::ANON, 6, 0xb)), (2, None));
        assert_eq!(step(&mut d, fault(member::ANON, 6, 0xc)), (1, Some((0xb, -1))));
    }
}
