//! hugetlb pages in the ledger: the kind `hugetlb`, next to anon/file/shmem, in base pages (a
//! 2 MiB page is 512). The kernel never fires `kmem:rss_stat` for them; it sends the mm's
//! hugetlb counter (absolute) after a fault that changed no rss counter (agent-ebpf
//! `hugetlb.rs`), with that fault's address. What the counter gained since the ledger last
//! accounted it goes to the mapping holding that address; a page mapped twice moves nothing.
//!
//! The record comes at the task's next fault; a process that faults a huge page and then only
//! sleeps would keep it unseen, and pages mapped without a user fault (MAP_POPULATE,
//! MADV_POPULATE_WRITE, a read() into a fresh buffer: kernel faults) make no record at all. So
//! each interval's end reads `/proc/PID/status` HugetlbPages (the same counter, ~0.1 ms) of the
//! processes that may map hugetlb pages: that showed some (a record, the seed), that mapped a
//! MAP_HUGETLB region, or whose smaps reading showed hugetlb KiB (`audit`). What is not yet
//! accounted goes to the VMA whose hugetlb pages grew most per a full `/proc/PID/smaps` read
//! (/proc/PID/maps does not tell which mapping of a hugetlbfs file, memfd or SysV segment is
//! hugetlb), else to the mapping of its last hugetlb fault, else to the MAP_HUGETLB region it
//! mapped last, else to an `/anon_hugepage` region of its maps, else to `[hugetlb]`. The
//! fault's own record, when it comes, finds nothing left.
use agent_common::HugetlbEvent;

use super::{proc_entry, Ledger};
use crate::attribution::{mappings::MappingId, process::Proc, ProcSource};

/// What the ledger knows of one process's hugetlb pages.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HugetlbState {
    /// The mm's hugetlb counter (base pages) as far as attributed. A process watched from the
    /// start begins at its /proc value; one forked or exec'd under the watch at 0 (a new mm;
    /// a fork's copy of private hugetlb pages is counted at the child's first hugetlb record).
    pub(in crate::attribution) accounted: i64,
    /// The mapping its last hugetlb fault went to: the audit's remainder goes there.
    pub(in crate::attribution) last: Option<MappingId>,
    /// Net base pages its own faults mapped (a release counts down).
    pub(in crate::attribution) own: i64,
    /// Audits in a row that found nothing new since its counter last moved.
    pub(in crate::attribution) still: u32,
    /// The MAP_HUGETLB region it mapped last (the audit's target when no fault named one).
    pub(in crate::attribution) vma: Option<MappingId>,
    /// An smaps reading showed hugetlb pages in its mm.
    pub(in crate::attribution) shown: bool,
    /// Its hugetlb VMAs (start, base pages) at the audit's last full smaps read.
    pub(in crate::attribution) vmas: Vec<(u64, i64)>,
}

impl HugetlbState {
    /// It may map hugetlb pages: the interval audit reads its counter.
    fn audited(&self) -> bool {
        self.last.is_some() || self.vma.is_some() || self.shown || self.accounted != 0
    }
}

/// Audits while a process's hugetlb counter moved within this many intervals; after that, one
/// every `AUDIT_EVERY` (a last fault seen late rather than 0.1 ms per mapper per interval: the
/// seed's 600 mappers of one hugetlb segment would cost 60 ms a second).
const AUDIT_RECENT: u32 = 10;
const AUDIT_EVERY: u32 = 30;

impl Ledger {
    pub fn on_hugetlb(&mut self, e: &HugetlbEvent) {
        let (facts, poll_end) = (self.facts.as_ref(), self.batch_at.1);
        let p = proc_entry(&mut self.procs, facts, e.hdr.tgid);
        p.hugetlb.still = 0;
        if e.pages < p.hugetlb.accounted {
            // Either a record older than the audit's /proc reading (that already counted its
            // pages: taking it would count them down and up again) or pages released since.
            // The next audit (now due: `still` 0) settles it from /proc.
            return;
        }
        let pages = e.pages - p.hugetlb.accounted;
        p.hugetlb.accounted = e.pages;
        if pages > 0 {
            let id = p.mapping_at(e.addr, poll_end, facts);
            credit(p, id, pages);
        }
    }

    /// A MAP_HUGETLB region mapped at `start` (its id in the maps): audited from now on.
    pub(super) fn hugetlb_mapped(p: &mut Proc, id: MappingId) {
        p.hugetlb.vma = Some(id);
        p.hugetlb.still = 0;
    }

    /// An smaps reading of `pid` with `kib` of hugetlb pages: a mapper, audited from now on.
    pub fn on_hugetlb_reading(&mut self, pid: u32, kib: u64) {
        if let Some(p) = self.procs.get_mut(&pid).filter(|p| kib > 0 && !p.hugetlb.shown) {
            p.hugetlb.shown = true;
            p.hugetlb.still = 0;
        }
    }

    /// Each interval's end: the hugetlb counter of the live processes that may map hugetlb
    /// pages (each interval while it moves, then now and then), from /proc, for the pages of a
    /// fault whose record has not come yet or that no user fault mapped.
    pub(super) fn audit_hugetlb(&mut self) {
        let facts = self.facts.as_ref();
        for p in self.procs.values_mut().filter(|p| p.alive && p.hugetlb.audited()) {
            let h = &mut p.hugetlb;
            h.still = h.still.saturating_add(1);
            if h.still > AUDIT_RECENT && h.still % AUDIT_EVERY != 0 {
                continue;
            }
            let Some(now) = facts.hugetlb_pages(p.pid) else { continue };
            let pages = now - p.hugetlb.accounted;
            p.hugetlb.accounted = now;
            if pages != 0 {
                p.hugetlb.still = 0;
            }
            if pages > 0 {
                // A fault whose record has not come (it will find nothing left), or none.
                let id = audit_target(p, facts);
                credit(p, id, pages);
            } else if pages < 0 {
                released(p, pages);
            }
        }
    }
}

/// Where the audit's gain goes (see the module's doc).
fn audit_target(p: &mut Proc, facts: &dyn ProcSource) -> MappingId {
    // The VMA whose hugetlb pages grew most since the last full smaps read (the largest at the
    // first), from /proc/PID/smaps (~1 ms; read only when the audit finds a gain).
    if let Some(now) = facts.hugetlb_vmas(p.pid) {
        let before = |s: u64| p.hugetlb.vmas.iter().find(|v| v.0 == s).map_or(0, |v| v.1);
        let grown = now.iter().map(|&(s, n)| (n - before(s), s)).filter(|g| g.0 > 0).max();
        p.hugetlb.vmas = now;
        if let Some((_, start)) = grown {
            return p.mapping_of(start, facts);
        }
    }
    let h = &p.hugetlb;
    h.last
        .clone()
        .or_else(|| h.vma.clone())
        .or_else(|| p.maps().hugetlb_region())
        .unwrap_or_else(|| MappingId { name: "[hugetlb]".into(), shared: false })
}

fn credit(p: &mut Proc, id: MappingId, pages: i64) {
    p.dirty = true;
    p.hugetlb.own += pages;
    p.interval.hugetlb += pages;
    let s = p.interval.by_mapping.entry(id.clone()).or_default();
    s.pages += pages;
    s.faults += 1;
    p.hugetlb.last = Some(id);
}

/// Pages unmapped (munmap, a segment detached): the counter says how many, not where.
fn released(p: &mut Proc, pages: i64) {
    p.dirty = true;
    p.hugetlb.own += pages;
    p.interval.hugetlb += pages;
}

#[cfg(test)]
mod tests {
    use agent_common::{EventHeader, EventKind};

    use super::*;
    use crate::attribution::{FakeProc, MappingMap};

    const PID: u32 = 42;
    const SEG: u64 = 0x7f00_0000_0000;

    fn ledger() -> (Ledger, FakeProc) {
        let fake = FakeProc::default();
        let mut m = MappingMap::default();
        m.map(SEG, SEG + (64 << 20), MappingId { name: "/memfd:wl-huge (deleted)".into(), shared: true }, false);
        m.map(0x1000_0000, 0x2000_0000, MappingId { name: "anon@0x10000000".into(), shared: false }, true);
        fake.maps.lock().unwrap().insert(PID, m);
        let mut l = Ledger::new(Box::new(fake.clone()));
        l.on_fork(&agent_common::ProcEvent { pid: PID, ppid: 1, ..Default::default() });
        (l, fake)
    }

    fn ev(addr: u64, pages: i64) -> HugetlbEvent {
        HugetlbEvent {
            hdr: EventHeader { kind: EventKind::Hugetlb as u32, tgid: PID, tid: PID, _pad: 0, ts_ns: 0 },
            addr,
            pages,
            delta: 0,
        }
    }

    #[test]
    fn each_new_huge_page_goes_to_its_mapping_once() {
        let (mut l, _) = ledger();
        // Three 2 MiB pages, one record each; then a record whose counter did not move (a
        // page mapped twice) and one for a page unmapped.
        for i in 0..3 {
            l.on_hugetlb(&ev(SEG + i * (2 << 20), 512 * (i as i64 + 1)));
        }
        l.on_hugetlb(&ev(SEG, 1536));
        let p = l.get(PID).unwrap();
        assert_eq!(p.interval.hugetlb, 1536);
        let s = p.interval.by_mapping[&MappingId { name: "/memfd:wl-huge (deleted)".into(), shared: true }];
        assert_eq!((s.pages, s.faults), (1536, 3));
        assert_eq!(p.own_fault_kib(4096), 1536 * 4);
        // A lower count is left to the audit (a release, or a record older than its reading).
        l.on_hugetlb(&ev(SEG, 1024));
        let p = l.get(PID).unwrap();
        assert_eq!((p.interval.hugetlb, p.hugetlb.own, p.hugetlb.accounted), (1536, 1536, 1536));
    }

    /// FakeProc with a /proc/PID/status HugetlbPages to give.
    /// (and its hugetlb VMAs, when `VMAS` holds some for the test's thread).
    struct Status(FakeProc, std::sync::Arc<std::sync::Mutex<Option<i64>>>);

    thread_local! {
        static VMAS: std::cell::RefCell<Option<Vec<(u64, i64)>>> = const { std::cell::RefCell::new(None) };
    }

    impl crate::attribution::ProcSource for Status {
        fn facts(&self, pid: u32) -> Option<(u32, String)> {
            self.0.facts(pid)
        }
        fn maps(&self, pid: u32) -> Option<MappingMap> {
            self.0.maps(pid)
        }
        fn rss_seed(&self, pid: u32) -> Option<[i64; 4]> {
            self.0.rss_seed(pid)
        }
        fn zombie_comm(&self, pid: u32) -> Option<String> {
            self.0.zombie_comm(pid)
        }
        fn comm(&self, pid: u32) -> Option<String> {
            self.0.comm(pid)
        }
        fn real_path(&self, path: &str) -> Option<String> {
            self.0.real_path(path)
        }
        fn elf_image(&self, path: &str) -> Option<crate::attribution::exec_image::ElfImage> {
            self.0.elf_image(path)
        }
        fn vdso_len(&self) -> Option<u64> {
            self.0.vdso_len()
        }
        fn hugetlb_pages(&self, _: u32) -> Option<i64> {
            *self.1.lock().unwrap()
        }
        fn hugetlb_vmas(&self, _: u32) -> Option<Vec<(u64, i64)>> {
            VMAS.with(|v| v.borrow().clone())
        }
    }

    fn audited_ledger() -> (Ledger, std::sync::Arc<std::sync::Mutex<Option<i64>>>) {
        let (_, fake) = ledger();
        let status = std::sync::Arc::new(std::sync::Mutex::new(None));
        let mut l = Ledger::new(Box::new(Status(fake, status.clone())));
        l.on_fork(&agent_common::ProcEvent { pid: PID, ppid: 1, ..Default::default() });
        (l, status)
    }

    const MEMFD: &str = "/memfd:wl-huge (deleted)";

    #[test]
    fn a_record_older_than_the_audit_counts_nothing_twice() {
        let (mut l, status) = audited_ledger();
        l.on_hugetlb(&ev(SEG, 512));
        // Two more pages mapped; the audit reads 1536 before their records are read.
        *status.lock().unwrap() = Some(1536);
        l.close_interval(&Default::default(), 1.0);
        // Then the older record (1024) in one interval, the newest (1536) in the next: no
        // -512 then +512 (the serve metric counts each interval's gain: 512 twice).
        l.on_hugetlb(&ev(SEG + (2 << 20), 1024));
        assert!(l.close_interval(&Default::default(), 1.0).is_empty());
        l.on_hugetlb(&ev(SEG + (4 << 20), 1536));
        assert!(l.close_interval(&Default::default(), 1.0).is_empty());
        let p = l.get(PID).unwrap();
        assert_eq!((p.total.hugetlb, p.hugetlb.own), (1536, 1536));
        let s = &p.total.by_mapping[&MappingId { name: MEMFD.into(), shared: true }];
        assert_eq!((s.pages, s.faults), (1536, 2));
        // A real release seen first in a record: the next audit counts it down, once.
        l.on_hugetlb(&ev(SEG, 512));
        *status.lock().unwrap() = Some(512);
        l.close_interval(&Default::default(), 1.0);
        l.close_interval(&Default::default(), 1.0);
        assert_eq!((l.get(PID).unwrap().total.hugetlb, l.get(PID).unwrap().hugetlb.own), (512, 512));
    }

    #[test]
    fn pages_no_user_fault_mapped_are_audited_into_their_mapping() {
        use agent_common::{nr, SyscallEvent};
        let (mut l, status) = audited_ledger();
        // mmap(MAP_PRIVATE|MAP_ANONYMOUS|MAP_HUGETLB|MAP_POPULATE) of 3 huge pages: no fault.
        let hdr = EventHeader { kind: EventKind::Syscall as u32, tgid: PID, tid: PID, _pad: 0, ts_ns: 0 };
        let args = [0, 6 << 20, 3, 0x02 | 0x20 | 0x40000 | 0x8000, u64::MAX, 0];
        l.on_syscall(&SyscallEvent { hdr, nr: nr::MMAP, args, ret: 0x3000_0000 });
        *status.lock().unwrap() = Some(3 * 512);
        l.close_interval(&Default::default(), 1.0);
        let p = l.get(PID).unwrap();
        assert_eq!(p.total.hugetlb, 3 * 512);
        assert_eq!(p.total.by_mapping[&MappingId { name: "anon@0x30000000".into(), shared: false }].pages, 3 * 512);
        // Another process: a hugetlb memfd populated (no record, no MAP_HUGETLB), seen by
        // smaps only: audited from then on, into `[hugetlb]`; a reading without any, not.
        let (mut l, status) = audited_ledger();
        *status.lock().unwrap() = Some(1024);
        l.on_hugetlb_reading(PID, 0);
        l.close_interval(&Default::default(), 1.0);
        assert_eq!(l.get(PID).unwrap().total.hugetlb, 0, "not a hugetlb mapper yet");
        l.on_hugetlb_reading(PID, 2048);
        l.close_interval(&Default::default(), 1.0);
        let p = l.get(PID).unwrap();
        assert_eq!(p.total.hugetlb, 1024);
        assert_eq!(p.total.by_mapping[&MappingId { name: "[hugetlb]".into(), shared: false }].pages, 1024);
        // With smaps per VMA: the one whose hugetlb pages grew (the largest at the first read),
        // before the last audit's mapping.
        VMAS.with(|v| *v.borrow_mut() = Some(vec![(SEG, 1024)]));
        *status.lock().unwrap() = Some(2048);
        l.close_interval(&Default::default(), 1.0);
        VMAS.with(|v| *v.borrow_mut() = Some(vec![(SEG, 1024), (0x1000_0000, 512)]));
        *status.lock().unwrap() = Some(2560);
        l.close_interval(&Default::default(), 1.0);
        let p = l.get(PID).unwrap();
        assert_eq!(p.total.hugetlb, 2560);
        assert_eq!(p.total.by_mapping[&MappingId { name: MEMFD.into(), shared: true }].pages, 1024);
        assert_eq!(p.total.by_mapping[&MappingId { name: "anon@0x10000000".into(), shared: false }].pages, 512);
    }

    #[test]
    fn the_audit_takes_a_last_fault_once() {
        let (mut l, status) = audited_ledger();
        // Never showed hugetlb pages: not audited, whatever /proc says.
        *status.lock().unwrap() = Some(512);
        l.close_interval(&Default::default(), 1.0);
        assert_eq!(l.get(PID).unwrap().total.hugetlb, 0);
        // Its first page's record came (at its second fault), then a third page was mapped
        // that no record told yet: the audit gives it to the same mapping, and the record
        // that comes later adds nothing.
        l.on_hugetlb(&ev(SEG, 1024));
        *status.lock().unwrap() = Some(1536);
        l.close_interval(&Default::default(), 1.0);
        l.on_hugetlb(&ev(SEG + (4 << 20), 1536));
        l.close_interval(&Default::default(), 1.0);
        let p = l.get(PID).unwrap();
        assert_eq!(p.total.hugetlb, 1536);
        let s = p.total.by_mapping[&MappingId { name: "/memfd:wl-huge (deleted)".into(), shared: true }];
        assert_eq!((s.pages, s.faults), (1536, 2));
        // Unmapped since: counted down.
        *status.lock().unwrap() = Some(0);
        l.close_interval(&Default::default(), 1.0);
        assert_eq!((l.get(PID).unwrap().total.hugetlb, l.get(PID).unwrap().hugetlb_kib(4096)), (0, Some(0)));
        // Still for long: audited once every AUDIT_EVERY intervals only.
        for _ in 0..AUDIT_RECENT {
            l.close_interval(&Default::default(), 1.0);
        }
        *status.lock().unwrap() = Some(512);
        l.close_interval(&Default::default(), 1.0);
        assert_eq!(l.get(PID).unwrap().total.hugetlb, 0, "not audited when still");
        for _ in 0..AUDIT_EVERY {
            l.close_interval(&Default::default(), 1.0);
        }
        assert_eq!(l.get(PID).unwrap().total.hugetlb, 512, "audited now and then");
    }
}
