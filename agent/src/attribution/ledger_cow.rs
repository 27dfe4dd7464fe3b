//! Copy-on-write: pages a process makes private by writing pages it shares with a fork partner.
//!
//! An anonymous page inherited at fork is mapped read-only in both processes; the first write
//! copies it (USS +1 in the writer) and changes no rss counter, so the rss ledger never sees it.
//! `fault.rs` sends every user write fault on a present page (`CowEvent`, at fault entry).
//! Here `cow` counts, per process and mapping:
//! - only private mappings (a write to a present page of a shared mapping is dirty tracking,
//!   not a copy);
//! - each page once per interval (a fault taken again on the same page, e.g. two threads
//!   racing, or a fault retried after the page table changed under it, is not a second copy);
//! - only copies no rss counter showed: a COW that adds an anonymous page to RSS (the zero
//!   page, or a private file page: file -1, anon +1) is already in the fault's `pages`. Its
//!   rss change follows the `CowEvent` in the ring (same task, later reservation) and takes the
//!   page back out of `cow`, so nothing is counted twice.
//!
//! Known overcounts (the tracepoint cannot tell them from a copy): a write to an inherited page
//! whose partner already let go of it (the kernel reuses the page, no copy; e.g. a parent
//! writing after its child exited); NUMA-balancing hinting faults and write-protect tracking
//! (soft-dirty, userfaultfd-wp, mprotect-based GC barriers) on private pages. And a COW made by
//! the kernel on the process's behalf (`read()` into an inherited buffer) is not counted.
use agent_common::CowEvent;

use super::{proc_entry, Ledger, MappingId, Proc};

/// `error_code` bits of a write to a present page.
pub(super) const PROT_WRITE: u64 = 1 | 2;

impl Ledger {
    /// A write fault on a present page (at its entry).
    pub fn on_cow(&mut self, e: &CowEvent) {
        let page_mask = !(self.page_size as u64 - 1);
        let (facts, poll_end) = (self.facts.as_ref(), self.batch_at.1);
        let p = proc_entry(&mut self.procs, facts, e.hdr.tgid);
        let id = p.mapping_at(e.addr, poll_end, facts);
        if id.shared {
            return;
        }
        let page = e.addr & page_mask;
        if p.cow_seen.contains_key(&page) {
            return;
        }
        p.cow_seen.insert(page, true);
        p.count_cow(id, 1);
        // USS moves while RSS does not: the pid must be re-read.
        p.dirty = true;
    }
}

impl Proc {
    /// The fault at `addr` that this interval counted as a COW added an anonymous page to RSS:
    /// RSS shows that copy, so `cow` does not.
    pub(super) fn cow_shown(&mut self, addr: u64, page_size: i64, id: &MappingId) {
        let page = addr & !(page_size as u64 - 1);
        if let Some(counted) = self.cow_seen.get_mut(&page).filter(|c| **c) {
            *counted = false;
            self.count_cow(id.clone(), -1);
        }
    }

    fn count_cow(&mut self, id: MappingId, n: i64) {
        self.own_cow += n;
        self.interval.cow += n;
        self.interval.by_mapping.entry(id).or_default().cow += n;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use agent_common::{cause, member, rss_flags, EventHeader, EventKind, RssEvent};

    use super::*;
    use crate::{
        attribution::{mappings::MappingMap, FakeProc},
        records::Record,
    };

    const PID: u32 = 77;
    const PAGE: i64 = 4096;
    const HEAP: u64 = 0x10_0000;
    const SEG: u64 = 0x40_0000;

    fn ledger() -> Ledger {
        let mut l = Ledger::new(Box::new(FakeProc::default()));
        let mut maps = MappingMap::default();
        maps.map(HEAP, HEAP + 0x10_0000, MappingId { name: "anon@0x100000".into(), shared: false }, true);
        maps.map(SEG, SEG + 0x10_0000, MappingId { name: "/dev/shm/seg".into(), shared: true }, false);
        l.add(PID, 1, "w".into(), maps, Some([0, PAGE * 100, 0, 0]));
        l
    }

    fn cow(addr: u64) -> CowEvent {
        CowEvent {
            hdr: EventHeader { kind: EventKind::Cow as u32, tgid: PID, tid: PID, _pad: 0, ts_ns: 0 },
            addr,
            err: 7,
        }
    }

    /// The anon +1 a COW of the zero page (or of a private file page) shows in RSS.
    fn anon_added(addr: u64, size: i64) -> RssEvent {
        RssEvent {
            hdr: EventHeader { kind: EventKind::Rss as u32, tgid: PID, tid: PID, _pad: 0, ts_ns: 0 },
            mm_id: 9,
            member: member::ANON,
            cause: cause::FAULT,
            flags: rss_flags::FIRST_OF_FAULT,
            size,
            delta: PAGE,
            addr,
            aux: 7,
            stack_id: -1,
            _pad2: 0,
        }
    }

    fn close(l: &mut Ledger) -> (i64, Vec<crate::records::MappingStat>) {
        match l.close_interval(&HashMap::from([(PID, 100)]), 1.0).pop() {
            Some(Record::Faults { pages, mappings, .. }) => (pages.cow, mappings),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn private_copies_count_once_per_page_and_shared_writes_not_at_all() {
        let mut l = ledger();
        for i in 0..8 {
            l.on_cow(&cow(HEAP + i * 4096 + 12));
        }
        // The same page again (a second thread, a retried fault): not a second copy.
        l.on_cow(&cow(HEAP + 100));
        // Write-protect faults of a shared mapping (dirty tracking): no copy.
        l.on_cow(&cow(SEG + 4096));
        let (cow_pages, maps) = close(&mut l);
        assert_eq!(cow_pages, 8);
        assert_eq!((maps[0].mapping.as_str(), maps[0].pages, maps[0].cow), ("anon@0x100000", 0, 8));
        assert_eq!(l.get(PID).unwrap().own_cow_kib(PAGE), 32);
        // A new interval: the same page copied again (after another fork) counts again.
        l.on_cow(&cow(HEAP));
        assert_eq!(close(&mut l).0, 1);
        assert_eq!(l.get(PID).unwrap().summary().pages.cow, 9);
    }

    #[test]
    fn a_cow_that_rss_shows_is_not_counted_twice() {
        let mut l = ledger();
        // The zero page copied: the fault's rss change (anon +1) follows its CowEvent.
        l.on_cow(&cow(HEAP + 8192));
        l.on_rss(&anon_added(HEAP + 8192, PAGE * 101));
        // An anonymous page shared with the parent copied: no rss change.
        l.on_cow(&cow(HEAP + 4096 * 5));
        let p = l.get(PID).unwrap();
        assert_eq!((p.own_cow_kib(PAGE), p.own_fault_kib(PAGE)), (4, 4), "one page each way");
        let (cow_pages, maps) = close(&mut l);
        assert_eq!(cow_pages, 1);
        assert_eq!((maps[0].pages, maps[0].cow), (1, 1));
    }
}
