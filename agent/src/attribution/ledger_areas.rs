//! Mapping changes without syscall hooks (`--syscall-hooks off`): an `AreaEvent` says where the
//! kernel placed a new mapping (`mmap:vm_unmapped_area`, agent-ebpf `unmapped_area.rs`) and
//! which syscall asked, with its arguments.
//!
//! - An mmap or a moving mremap whose area is exactly the length asked for is learned as the
//!   syscall exit would have taught it (the same code: [`Ledger::on_syscall`]).
//! - Anything else only makes the ledger forget what it knew of that range, so that a fault there
//!   misses and re-reads /proc/PID/maps: an area padded for a THP alignment (the mapping lands
//!   somewhere inside it), shmat, exec's own mappings, an ia32 task, and a `PROT_NONE` mmap
//!   (a reservation: thread stacks get their guard by mprotect, malloc arenas are opened piece
//!   by piece; no page can fault into it until its protections change, and then the miss
//!   re-reads the exact VMAs).
//!
//! - An `AreaEvent` of length 0 (agent-ebpf `mmap_lock.rs`: the mm's lock released after a
//!   write inside munmap, mprotect, an in-place mremap, madvise, mlock, a MAP_FIXED or hinted
//!   mmap...) marks the map stale: it is re-read before the next fault is named, at most once
//!   per ring poll (a read made while a poll's records are fed comes after all of them).
//! - So the poll's events fed after its read are older than the read: a stale mark is dropped,
//!   and an area is applied to the map as it was before the read (what the syscall exits would
//!   have made of it), whose names the read's anonymous regions take when they cover its own;
//!   the read gains the area only where it shows nothing (gone by then).
//!
//! A brk that grows the heap sends nothing: the first fault past the old end misses (one
//! re-read).
use agent_common::{nr, AreaEvent, SyscallEvent};

use super::{
    names::{MAP_ANONYMOUS, MAP_SHARED_TYPE, PROT_MASK},
    proc_entry, Ledger, MappingId,
};

const MREMAP_FIXED: u64 = 2;
const MREMAP_DONTUNMAP: u64 = 4;

impl Ledger {
    pub fn on_area(&mut self, e: &AreaEvent) {
        let (page, poll_end) = (self.page_size as u64, self.batch_at.1);
        let facts = self.facts.as_ref();
        let p = proc_entry(&mut self.procs, facts, e.hdr.tgid);
        // Re-read while this poll is fed: the read is newer than every record of the poll, so
        // what this one changed it shows already (and, for a change made and undone since, what
        // it became). Applied over it, an older change would take the map back in time.
        let read = poll_end != 0 && p.maps_read_poll == poll_end;
        if e.len == 0 {
            // VMAs changed with no area (agent-ebpf mmap_lock.rs): re-read before the next fault.
            p.maps_stale |= !read;
            return;
        }
        let round = |len: u64| len.div_ceil(page) * page;
        let a = e.args;
        let learned = match e.nr {
            nr::MMAP if a[2] & PROT_MASK != 0 => mmap_start(e, round(a[1])).map(|s| (s, s + round(a[1]))),
            nr::MREMAP if e.len == round(a[2]) && a[3] & (MREMAP_FIXED | MREMAP_DONTUNMAP) == 0 => {
                Some((e.addr, e.addr + e.len))
            }
            _ => None,
        };
        if e.nr == nr::MMAP && a[3] & MAP_ANONYMOUS == 0 && learned.is_some() {
            // No open is seen: the fd is named from a maps line that showed the same file
            // (used when this process is gone before its own maps are read).
            match (e.ino != 0).then(|| facts.file_name(e.dev, e.ino)).flatten() {
                Some(n) => p.fds.insert(a[4] as i32, n),
                None => p.fds.remove(&(a[4] as i32)),
            };
        }
        if !read {
            self.apply_area(e, learned, true);
            return;
        }
        // Older than this poll's read. The map before the read is brought forward with it (it is
        // what the syscall exits would have made of the poll) and names the read's anonymous
        // regions that cover its own, as merging keeps a name: two mmaps merged by the kernel
        // keep the first one's name, whether the read came before, between or after them in
        // the feed. The read itself gains the mapping only where it shows nothing (gone by
        // then: this poll's faults into it are still named); a move never.
        let pid = e.hdr.tgid;
        let gap = matches!(learned, Some((s, end)) if e.nr == nr::MMAP && !p.maps.overlaps(s, end));
        if let Some(mut before) = p.maps_before.take() {
            let p = self.procs.get_mut(&pid).expect("entered");
            std::mem::swap(&mut p.maps, &mut before);
            self.apply_area(e, learned, false);
            let p = self.procs.get_mut(&pid).expect("entered");
            std::mem::swap(&mut p.maps, &mut before);
            p.maps.keep_merged_names(&before);
            if let Some((s, end)) = learned.filter(|_| e.nr == nr::MMAP && a[3] & MAP_ANONYMOUS != 0) {
                // Shown as the same region: the exit's name (`anon@` for what /proc calls
                // `/anon_hugepage`, a MAP_HUGETLB region).
                if let Some(id) = before.lookup(s).cloned() {
                    p.maps.rename_exact(s, end, id);
                }
            }
            p.maps_before = Some(before);
        }
        if gap {
            self.apply_area(e, learned, false);
        }
    }

    /// Apply an area to the process's map: learn it (`learned`: its range, for an exact mmap or
    /// move), else forget what was under it. A file mmap is named from /proc/PID/maps, read now
    /// with `read_now`, else from its fd.
    fn apply_area(&mut self, e: &AreaEvent, learned: Option<(u64, u64)>, read_now: bool) {
        let (a, poll_end) = (e.args, self.batch_at.1);
        let facts = self.facts.as_ref();
        let p = proc_entry(&mut self.procs, facts, e.hdr.tgid);
        let Some((start, end)) = learned else {
            p.maps.unmap(e.addr, e.addr.saturating_add(e.len));
            return;
        };
        if e.nr == nr::MMAP && a[3] & MAP_ANONYMOUS == 0 {
            if read_now && p.reread_maps(facts, poll_end) && p.maps.lookup(start).is_some() {
                return;
            }
            let shared = matches!(a[3] & MAP_SHARED_TYPE, 0x01 | 0x03);
            let name = p.fds.get(&(a[4] as i32)).cloned().unwrap_or_else(|| "[file]".into());
            p.maps.map_file(start, end, MappingId { name, shared }, (a[2] & PROT_MASK) as u8, a[5]);
            return;
        }
        let hdr = e.hdr;
        self.on_syscall(&SyscallEvent { hdr, nr: e.nr, args: a, ret: start as i64 });
    }
}

/// Where an mmap of `len` (page-rounded) whose search found `e.addr` maps: there, when the
/// area is exactly that long; or, when it is one PMD longer, where the kernel's THP alignment
/// puts it inside (`__thp_get_unmapped_area`: a private anonymous mapping of a multiple of 2 MiB,
/// or a large file mapping: the start is moved up to the file offset's alignment, by a whole
/// PMD when already aligned in a top-down layout, x86's default). None: another padding
/// (shmem's), not knowable here.
fn mmap_start(e: &AreaEvent, len: u64) -> Option<u64> {
    const PMD: u64 = 2 << 20;
    if e.len == len {
        return Some(e.addr);
    }
    if e.len != len + PMD {
        return None;
    }
    let off = if e.args[3] & MAP_ANONYMOUS != 0 { 0 } else { e.args[5] };
    match off.wrapping_sub(e.addr) & (PMD - 1) {
        0 => Some(e.addr + PMD),
        sub => Some(e.addr + sub),
    }
}

#[cfg(test)]
mod tests {
    use agent_common::{cause, member, nr, AreaEvent, EventHeader, EventKind, RssEvent};

    use crate::attribution::{FakeProc, Ledger, MappingId, MappingMap};

    const PID: u32 = 77;
    const PAGE: i64 = 4096;
    const MAP_PRIVATE_ANON: u64 = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64;

    fn id(name: &str) -> MappingId {
        MappingId { name: name.into(), shared: false }
    }

    fn ledger(facts: &FakeProc) -> Ledger {
        let mut l = Ledger::new(Box::new(facts.clone()));
        let mut maps = MappingMap::default();
        maps.map(0x10_0000, 0x20_0000, id("anon@0x100000"), true);
        l.add(PID, 1, "t".into(), maps, Some([0; 4]));
        l
    }

    fn area(nr: u64, args: [u64; 6], addr: u64, len: u64) -> AreaEvent {
        let hdr = EventHeader { kind: EventKind::Area as u32, tgid: PID, tid: PID, _pad: 0, ts_ns: 0 };
        AreaEvent { hdr, nr, args, addr, len, ino: 0, dev: 0, _pad: 0 }
    }

    /// The mapping a one-page anon fault at `addr` is counted to.
    fn fault_at(l: &mut Ledger, addr: u64, size: i64) -> String {
        let hdr = EventHeader { kind: EventKind::Rss as u32, tgid: PID, tid: PID, _pad: 0, ts_ns: 0 };
        let e = RssEvent {
            hdr,
            mm_id: 9,
            member: member::ANON,
            cause: cause::FAULT,
            flags: 0,
            size,
            delta: PAGE,
            addr,
            aux: 0,
            stack_id: -1,
            _pad2: 0,
        };
        l.on_rss(&e);
        let recs = l.close_interval(&std::collections::HashMap::from([(PID, 9)]), 1.0);
        let crate::records::Record::Faults { mappings, .. } = &recs[0] else { panic!("{recs:?}") };
        mappings[0].mapping.clone()
    }

    #[test]
    fn an_exact_mmap_area_is_learned_without_a_reread() {
        let facts = FakeProc::default();
        let mut l = ledger(&facts);
        // glibc's large malloc: 1 MiB + a page, read-write, at the address the kernel chose.
        l.on_area(&area(
            nr::MMAP,
            [0, (1 << 20) + 16, 3, MAP_PRIVATE_ANON, u64::MAX, 0],
            0x90_0000,
            0x10_2000 - 0x1000,
        ));
        assert_eq!(fault_at(&mut l, 0x90_1000, PAGE), "anon@0x900000");
        // Freed (munmap: no event) and something else mapped over that range: learned again, exactly.
        l.on_area(&area(nr::MMAP, [0, 0x20_0000 - 0x1000, 1, MAP_PRIVATE_ANON, u64::MAX, 0], 0x80_0000, 0x1f_f000));
        assert_eq!(fault_at(&mut l, 0x90_1000, 2 * PAGE), "anon@0x800000");
        assert_eq!(*facts.asked.lock().unwrap(), 0, "no /proc/PID/maps read");
    }

    #[test]
    fn a_padded_or_prot_none_area_is_forgotten_and_a_fault_there_rereads() {
        let facts = FakeProc::default();
        let mut l = ledger(&facts);
        let mut now = MappingMap::default();
        now.map(0x12_0000, 0x14_0000, id("anon@0x120000"), true);
        facts.maps.lock().unwrap().insert(PID, now);
        // A padding not known here (shmem's: a PMD less a page): the stale region under the
        // area is forgotten, a fault there re-reads.
        let shared = (libc::MAP_SHARED | libc::MAP_ANONYMOUS) as u64;
        l.on_area(&area(nr::MMAP, [0, 0x20_0000, 3, shared, u64::MAX, 0], 0x10_0000, 0x3f_f000));
        assert_eq!(fault_at(&mut l, 0x12_0000, PAGE), "anon@0x120000");
        assert_eq!(*facts.asked.lock().unwrap(), 1);
        // A PROT_NONE reservation is not learned: its first fault comes after an mprotect.
        l.on_area(&area(nr::MMAP, [0, 0x1_0000, 0, MAP_PRIVATE_ANON, u64::MAX, 0], 0x30_0000, 0x1_0000));
        assert_eq!(fault_at(&mut l, 0x30_0000, 2 * PAGE), "[unmapped]");
        assert_eq!(*facts.asked.lock().unwrap(), 2);
    }

    #[test]
    fn a_miss_in_a_poll_already_reread_does_not_read_again() {
        let facts = FakeProc::default();
        let mut l = ledger(&facts);
        let mut now = MappingMap::default();
        now.map(0x10_0000, 0x20_0000, id("anon@0x100000"), true);
        facts.maps.lock().unwrap().insert(PID, now);
        // Faults into a region gone before their records were read: one re-read, not one each.
        l.set_poll((10, 20));
        assert_eq!(fault_at(&mut l, 0x50_0000, PAGE), "[unmapped]");
        assert_eq!(fault_at(&mut l, 0x50_1000, 2 * PAGE), "[unmapped]");
        assert_eq!(*facts.asked.lock().unwrap(), 1);
        // A later poll's fault may be in a mapping made since: read again.
        l.set_poll((30, 40));
        assert_eq!(fault_at(&mut l, 0x50_2000, 3 * PAGE), "[unmapped]");
        assert_eq!(*facts.asked.lock().unwrap(), 2);
    }

    #[test]
    fn a_change_fed_after_a_reread_of_its_poll_does_not_take_the_map_back() {
        // wl-threadmaps: one mmap of two 64 MiB areas with guard pages, mprotected, then two
        // threads fault. All in one poll, whose feed re-read the map (a stale mark) before these
        // records: the read already shows the pieces; the mmap applied over it made them one
        // region again, and the marks after it could not re-read in that poll.
        let facts = FakeProc::default();
        let mut l = ledger(&facts);
        let mut now = MappingMap::default();
        now.map(0x10_0000, 0x20_0000, id("anon@0x100000"), true);
        now.map_prot(0x40_0000, 0x40_1000, id("anon@0x400000"), true, 0);
        now.map_prot(0x40_1000, 0x50_0000, id("anon@0x401000"), true, 3);
        facts.maps.lock().unwrap().insert(PID, now);
        l.set_poll((10, 20));
        l.on_area(&area(nr::MPROTECT, [0x10_0000, 0x1000, 1, 0, 0, 0], 0, 0));
        assert_eq!(fault_at(&mut l, 0x10_0000, PAGE), "anon@0x100000");
        assert_eq!(*facts.asked.lock().unwrap(), 1, "the stale mark's re-read");
        l.on_area(&area(nr::MMAP, [0, 0x10_0000, 3, MAP_PRIVATE_ANON, u64::MAX, 0], 0x40_0000, 0x10_0000));
        l.on_area(&area(nr::MPROTECT, [0x40_0000, 0x1000, 0, 0, 0, 0], 0, 0));
        assert_eq!(fault_at(&mut l, 0x40_2000, 2 * PAGE), "anon@0x401000");
        // An older mapping the read does not show (unmapped by then) is still learned.
        l.on_area(&area(nr::MMAP, [0, 0x2000, 3, MAP_PRIVATE_ANON, u64::MAX, 0], 0x70_0000, 0x2000));
        assert_eq!(fault_at(&mut l, 0x70_1000, 3 * PAGE), "anon@0x700000");
        assert_eq!(*facts.asked.lock().unwrap(), 1, "one re-read in the poll");
        // The next poll's marks are newer than that read: re-read.
        l.set_poll((30, 40));
        l.on_area(&area(nr::MUNMAP, [0x70_0000, 0x2000, 0, 0, 0, 0], 0, 0));
        assert_eq!(fault_at(&mut l, 0x40_3000, 4 * PAGE), "anon@0x401000");
        assert_eq!(*facts.asked.lock().unwrap(), 2);
    }

    #[test]
    fn areas_fed_after_a_reread_name_the_reads_regions_as_the_syscall_exits_would() {
        let facts = FakeProc::default();
        let mut l = ledger(&facts);
        // By the read: anon@0x100000 unmapped and a larger mapping made over it; two mmaps of
        // one thread, back to back (top-down), merged by the kernel and named by its start.
        let mut now = MappingMap::default();
        now.map(0x0c_0000, 0x24_0000, id("anon@0xc0000"), true);
        now.map(0x50_0000, 0x70_0000, id("anon@0x500000"), true);
        now.map(0x80_0000, 0xa0_0000, id("/anon_hugepage (deleted)"), false);
        facts.maps.lock().unwrap().insert(PID, now);
        l.set_poll((10, 20));
        l.on_area(&area(nr::MPROTECT, [0x30_0000, 0x1000, 1, 0, 0, 0], 0, 0));
        // A fault from before the munmap: read, and named after the mapping it was in.
        assert_eq!(fault_at(&mut l, 0x10_0000, PAGE), "anon@0x100000");
        l.on_area(&area(nr::MUNMAP, [0x10_0000, 0x10_0000, 0, 0, 0, 0], 0, 0));
        let rw = [0, 0x18_0000, 3, MAP_PRIVATE_ANON, u64::MAX, 0];
        l.on_area(&area(nr::MMAP, rw, 0x0c_0000, 0x18_0000));
        assert_eq!(fault_at(&mut l, 0x10_1000, 2 * PAGE), "anon@0xc0000");
        let rw = [0, 0x10_0000, 3, MAP_PRIVATE_ANON, u64::MAX, 0];
        l.on_area(&area(nr::MMAP, rw, 0x60_0000, 0x10_0000));
        l.on_area(&area(nr::MMAP, rw, 0x50_0000, 0x10_0000));
        // With the syscall exits: the first mmap's name, the second merged into it.
        assert_eq!(fault_at(&mut l, 0x50_1000, 3 * PAGE), "anon@0x600000");
        // A MAP_HUGETLB region: /proc's `/anon_hugepage`, the exit's `anon@`.
        let huge = MAP_PRIVATE_ANON | libc::MAP_HUGETLB as u64;
        l.on_area(&area(nr::MMAP, [0, 0x20_0000, 3, huge, u64::MAX, 0], 0x80_0000, 0x20_0000));
        assert_eq!(fault_at(&mut l, 0x80_0000, 4 * PAGE), "anon@0x800000");
        assert_eq!(*facts.asked.lock().unwrap(), 1, "one re-read in the poll");
    }

    #[test]
    fn a_thp_padded_anonymous_area_is_learned_where_the_kernel_aligns_it() {
        let facts = FakeProc::default();
        let mut l = ledger(&facts);
        // 8 MiB asked, 10 MiB searched: an unaligned start moves up to the next 2 MiB boundary,
        // an aligned one by a whole 2 MiB (top-down).
        l.on_area(&area(nr::MMAP, [0, 8 << 20, 3, MAP_PRIVATE_ANON, u64::MAX, 0], 0x7f00_0012_3000, 10 << 20));
        assert_eq!(fault_at(&mut l, 0x7f00_0020_0000, PAGE), "anon@0x7f0000200000");
        l.on_area(&area(nr::MMAP, [0, 8 << 20, 3, MAP_PRIVATE_ANON, u64::MAX, 0], 0x7f10_0000_0000, 10 << 20));
        assert_eq!(fault_at(&mut l, 0x7f10_0020_0000, 2 * PAGE), "anon@0x7f1000200000");
        assert_eq!(*facts.asked.lock().unwrap(), 0, "no /proc/PID/maps read");
    }

    #[test]
    fn a_region_split_without_an_area_is_reread_before_its_next_fault() {
        let facts = FakeProc::default();
        let mut l = ledger(&facts);
        // mprotect split anon@0x100000 in two: the kernel names the upper piece by its start.
        let mut now = MappingMap::default();
        now.map_prot(0x10_0000, 0x18_0000, id("anon@0x100000"), true, 3);
        now.map_prot(0x18_0000, 0x20_0000, id("anon@0x180000"), true, 1);
        facts.maps.lock().unwrap().insert(PID, now);
        l.set_poll((10, 20));
        assert_eq!(fault_at(&mut l, 0x18_0000, PAGE), "anon@0x100000", "no event yet: the old name");
        l.on_area(&area(nr::MPROTECT, [0x18_0000, 0x8_0000, 1, 0, 0, 0], 0, 0));
        assert_eq!(fault_at(&mut l, 0x18_1000, 2 * PAGE), "anon@0x180000");
        assert_eq!(fault_at(&mut l, 0x18_2000, 3 * PAGE), "anon@0x180000");
        assert_eq!(*facts.asked.lock().unwrap(), 1, "one re-read");
    }
}
