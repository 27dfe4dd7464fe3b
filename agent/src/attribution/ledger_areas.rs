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
//! What no event shows, and stays stale until a miss: munmap (the range stays known; harmless
//! until something is mapped there by MAP_FIXED or an honoured hint, which also send no event),
//! mprotect splits of a readable anonymous region (named by its first start), a brk or an
//! in-place mremap that grows (the first fault past the old end misses: one re-read).
use agent_common::{nr, AreaEvent, SyscallEvent};

use super::{proc_entry, Ledger};

const PROT_MASK: u64 = 0x7;
const MREMAP_FIXED: u64 = 2;
const MREMAP_DONTUNMAP: u64 = 4;

impl Ledger {
    pub fn on_area(&mut self, e: &AreaEvent) {
        let page = self.page_size as u64;
        let round = |len: u64| len.div_ceil(page) * page;
        let a = e.args;
        let exact = match e.nr {
            nr::MMAP => e.len == round(a[1]) && a[2] & PROT_MASK != 0,
            nr::MREMAP => e.len == round(a[2]) && a[3] & (MREMAP_FIXED | MREMAP_DONTUNMAP) == 0,
            _ => false,
        };
        if exact {
            let hdr = e.hdr;
            self.on_syscall(&SyscallEvent { hdr, nr: e.nr, args: a, ret: e.addr as i64 });
            return;
        }
        let p = proc_entry(&mut self.procs, self.facts.as_ref(), e.hdr.tgid);
        p.maps.unmap(e.addr, e.addr.saturating_add(e.len));
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
        AreaEvent { hdr, nr, args, addr, len }
    }

    /// The mapping a one-page anon fault at `addr` is counted to.
    fn fault_at(l: &mut Ledger, addr: u64, size: i64) -> String {
        fault_at_ts(l, addr, size, 0)
    }

    fn fault_at_ts(l: &mut Ledger, addr: u64, size: i64, ts_ns: u64) -> String {
        let hdr = EventHeader { kind: EventKind::Rss as u32, tgid: PID, tid: PID, _pad: 0, ts_ns };
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
        // A THP-aligned request (len 2 MiB) searched with 2 MiB of padding: where it lands in
        // the area is the kernel's to say. The stale region under it is forgotten.
        l.on_area(&area(nr::MMAP, [0, 0x20_0000, 3, MAP_PRIVATE_ANON, u64::MAX, 0], 0x10_0000, 0x40_0000));
        assert_eq!(fault_at(&mut l, 0x12_0000, PAGE), "anon@0x120000");
        assert_eq!(*facts.asked.lock().unwrap(), 1);
        // A PROT_NONE reservation is not learned: its first fault comes after an mprotect.
        l.on_area(&area(nr::MMAP, [0, 0x1_0000, 0, MAP_PRIVATE_ANON, u64::MAX, 0], 0x30_0000, 0x1_0000));
        assert_eq!(fault_at(&mut l, 0x30_0000, 2 * PAGE), "[unmapped]");
        assert_eq!(*facts.asked.lock().unwrap(), 2);
    }

    #[test]
    fn a_miss_older_than_the_last_reread_does_not_read_again() {
        let facts = FakeProc::default();
        let mut l = ledger(&facts);
        let mut now = MappingMap::default();
        now.map(0x10_0000, 0x20_0000, id("anon@0x100000"), true);
        facts.maps.lock().unwrap().insert(PID, now);
        let t0 = crate::proc_facts::monotonic_ns();
        // Faults into a region gone before their records were read: one re-read, not one each.
        assert_eq!(fault_at_ts(&mut l, 0x50_0000, PAGE, t0), "[unmapped]");
        assert_eq!(fault_at_ts(&mut l, 0x50_1000, 2 * PAGE, t0 + 1), "[unmapped]");
        assert_eq!(*facts.asked.lock().unwrap(), 1);
        // A fault made after that read may be in a mapping made since: read again.
        let t1 = crate::proc_facts::monotonic_ns();
        assert_eq!(fault_at_ts(&mut l, 0x50_2000, 3 * PAGE, t1), "[unmapped]");
        assert_eq!(*facts.asked.lock().unwrap(), 2);
    }
}
