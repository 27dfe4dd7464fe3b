//! Unit tests of the ledger on synthetic kernel events (no root, no /proc: a fake answers).
use agent_common::{nr, EventHeader, EventKind, OpenEvent, ProcEvent, SyscallEvent};

use super::*;
use crate::{
    attribution::FakeProc,
    records::{MappingStat, Pages},
};

const PID: u32 = 4242;
const PAGE: i64 = 4096;

fn ledger_with_maps() -> Ledger {
    ledger_on(FakeProc::default())
}

fn ledger_on(facts: FakeProc) -> Ledger {
    let mut l = Ledger::new(Box::new(facts));
    let mut maps = MappingMap::default();
    maps.map(0x10_0000, 0x20_0000, MappingId { name: "anon@0x100000".into(), shared: false }, true);
    maps.map(0x40_0000, 0x80_0000, MappingId { name: "/dev/shm/seg".into(), shared: true }, false);
    l.add(PID, 1, "t".into(), maps, Some([PAGE * 10, PAGE * 20, 0, 0]));
    l
}

fn rss(member: u32, cause: u32, flags: u32, size: i64, delta: i64, addr: u64) -> RssEvent {
    RssEvent {
        hdr: EventHeader { kind: EventKind::Rss as u32, tgid: PID, tid: PID, _pad: 0, ts_ns: 0 },
        mm_id: 9,
        member,
        cause,
        flags,
        size,
        delta,
        addr,
        aux: 0,
        stack_id: -1,
        _pad2: 0,
    }
}

#[test]
fn fault_pages_go_to_the_mapping_of_the_address() {
    let mut l = ledger_with_maps();
    for i in 0..8 {
        let f = rss_flags::FIRST_OF_FAULT;
        l.on_rss(&rss(member::ANON, cause::FAULT, f, PAGE * (21 + i), PAGE, 0x10_0000 + i as u64 * 4096));
    }
    // One fault that maps four pages of a shared file (fault-around).
    l.on_rss(&rss(member::SHMEM, cause::FAULT, rss_flags::FIRST_OF_FAULT, PAGE * 4, PAGE * 4, 0x40_1000));
    // Not a fault: munmap released two pages.
    l.on_rss(&rss(member::ANON, cause::SYSCALL, 0, PAGE * 27, -PAGE * 2, 0));
    let recs = l.close_interval(&HashMap::from([(PID, 9)]), 1.0);
    let Record::Faults { faults, pages, mappings, .. } = &recs[0] else { panic!("{recs:?}") };
    assert_eq!(*faults, 9);
    assert_eq!(*pages, Pages { anon: 8, file: 0, shmem: 4, cow: 0, hugetlb: 0 });
    assert_eq!(
        mappings[0],
        MappingStat { mapping: "anon@0x100000".into(), shared: false, faults: 8, pages: 8, cow: 0 }
    );
    assert_eq!(mappings[1], MappingStat { mapping: "/dev/shm/seg".into(), shared: true, faults: 1, pages: 4, cow: 0 });
    let p = &l.procs[&PID];
    assert_eq!(p.total.other[cause::SYSCALL as usize], -2);
    assert_eq!(p.mms[0].rss[member::ANON as usize], PAGE * 27, "the ledger keeps the absolute counter");
    // The next interval starts empty; the kernel count is cumulative.
    assert!(l.close_interval(&HashMap::from([(PID, 9)]), 1.0).is_empty());
}

#[test]
fn unseeded_first_delta_uses_the_status_seed_or_is_dropped() {
    let mut l = ledger_with_maps();
    // The kernel had no previous size: delta = size. The seed says 20 anon pages before.
    l.on_rss(&rss(member::ANON, cause::FAULT, rss_flags::UNSEEDED, PAGE * 21, PAGE * 21, 0x10_0000));
    assert_eq!(l.procs[&PID].interval.pages[member::ANON as usize], 1);
    // No seed (a process learned late): dropped and counted, never a bogus jump.
    l.procs.get_mut(&PID).unwrap().seed = None;
    l.on_rss(&rss(member::FILE, cause::FAULT, rss_flags::UNSEEDED, PAGE * 500, PAGE * 500, 0x10_0000));
    assert_eq!(l.procs[&PID].interval.pages[member::FILE as usize], 0);
    assert_eq!(l.unseeded_dropped, 1);
}

#[test]
fn a_lookup_miss_asks_proc_for_the_maps_once_and_then_finds_the_mapping() {
    let facts = FakeProc::default();
    let mut l = ledger_on(facts.clone());
    // A file the process mapped without our seeing the mmap (say, before a lost record).
    let mut now = l.get(PID).unwrap().maps().clone();
    now.map(0x90_0000, 0x91_0000, MappingId { name: "/usr/lib/libx.so".into(), shared: false }, false);
    facts.maps.lock().unwrap().insert(PID, now);
    l.on_rss(&rss(member::FILE, cause::FAULT, rss_flags::FIRST_OF_FAULT, PAGE, PAGE, 0x90_2000));
    l.on_rss(&rss(member::FILE, cause::FAULT, rss_flags::FIRST_OF_FAULT, PAGE * 2, PAGE, 0x90_3000));
    assert_eq!(*facts.asked.lock().unwrap(), 1, "one re-read, then the mapping is known");
    assert_eq!(l.get(PID).unwrap().interval.top(5)[0].mapping, "/usr/lib/libx.so");
}

#[test]
fn munmap_then_fault_is_unmapped_and_fork_copies_maps() {
    let mut l = ledger_with_maps();
    let child = ProcEvent {
        hdr: EventHeader { kind: EventKind::Fork as u32, ..Default::default() },
        pid: PID + 1,
        ppid: PID,
        comm: *b"child\0\0\0\0\0\0\0\0\0\0\0",
    };
    let rec = l.on_fork(&child);
    assert_eq!(
        rec,
        Record::Proc { pid: PID + 1, ppid: PID, comm: "child".into(), event: "fork", labels: Default::default() }
    );
    let unmap = SyscallEvent {
        hdr: EventHeader { kind: EventKind::Syscall as u32, tgid: PID, ..Default::default() },
        nr: nr::MUNMAP,
        args: [0x10_0000, 0x10_0000, 0, 0, 0, 0],
        ret: 0,
    };
    l.on_syscall(&unmap);
    l.on_rss(&rss(member::ANON, cause::FAULT, 0, PAGE, PAGE, 0x10_0000));
    assert_eq!(l.procs[&PID].interval.top(5)[0].mapping, "[unmapped]");
    // The child still has the mapping it inherited.
    let mut e = rss(member::ANON, cause::FAULT, 0, PAGE, PAGE, 0x10_0000);
    e.hdr.tgid = PID + 1;
    l.on_rss(&e);
    assert_eq!(l.procs[&(PID + 1)].interval.top(5)[0].mapping, "anon@0x100000");
}

#[test]
fn anon_mmap_event_names_the_new_region_and_exit_is_reported_once() {
    let mut l = ledger_with_maps();
    let mmap = SyscallEvent {
        hdr: EventHeader { kind: EventKind::Syscall as u32, tgid: PID, ..Default::default() },
        nr: nr::MMAP,
        args: [0, 8192, 3, (libc::MAP_SHARED | libc::MAP_ANONYMOUS) as u64, u64::MAX, 0],
        ret: 0x90_0000,
    };
    l.on_syscall(&mmap);
    l.on_rss(&rss(member::SHMEM, cause::FAULT, 0, PAGE, PAGE, 0x90_1000));
    let top = l.procs[&PID].interval.top(5);
    assert_eq!((top[0].mapping.as_str(), top[0].shared), ("shmem-anon@0x900000", true));
    let exit = ProcEvent { pid: PID, ..Default::default() };
    assert!(l.on_exit(&exit).is_some());
    assert!(l.on_exit(&exit).is_none());
    assert!(l.live_pids().is_empty());
}

#[test]
fn a_forked_childs_ledger_starts_from_what_the_fork_copy_gave_it() {
    let mut l = ledger_with_maps();
    let mut copy = rss(member::ANON, cause::NEW_MM, rss_flags::NEW_MM_FIRST, PAGE * 100, PAGE * 100, 0);
    copy.hdr.tgid = 0;
    copy.mm_id = 77;
    l.on_rss(&copy);
    let child = ProcEvent {
        hdr: EventHeader { kind: EventKind::Fork as u32, ..Default::default() },
        pid: PID + 1,
        ppid: PID,
        comm: *b"child\0\0\0\0\0\0\0\0\0\0\0",
    };
    l.on_fork(&child);
    let mut own = rss(member::FILE, cause::FAULT, rss_flags::FIRST_OF_FAULT, PAGE * 16, PAGE * 16, 0x40_0000);
    own.hdr.tgid = PID + 1;
    own.mm_id = 77;
    l.on_rss(&own);
    assert_eq!(l.procs[&(PID + 1)].ledger_rss_kib(), Some(116 * 4));
    // Its exit teardown begins: smaps may still show the pages, so the ledger claims nothing.
    let mut gone = rss(member::ANON, cause::EXIT, 0, PAGE * 40, -PAGE * 60, 0);
    gone.hdr.tgid = PID + 1;
    gone.mm_id = 77;
    l.on_rss(&gone);
    assert_eq!(l.procs[&(PID + 1)].ledger_rss_kib(), None);
}

#[test]
fn a_process_seen_gone_before_its_exit_record_gets_the_name_it_exited_under() {
    let mut l = ledger_with_maps();
    // The /proc liveness check first: no name to be had.
    assert!(l.on_exit(&ProcEvent { pid: PID, ..Default::default() }).is_some());
    // Then the kernel's record, with the name a prctl gave it.
    let mut comm = [0u8; 16];
    comm[..7].copy_from_slice(b"renamed");
    assert!(l.on_exit(&ProcEvent { pid: PID, comm, ..Default::default() }).is_none());
    assert_eq!(l.procs[&PID].comm, "renamed");
}

#[test]
fn a_dead_process_keeps_its_maps_until_its_exit_record_is_in() {
    let mut l = ledger_with_maps();
    // The liveness check sees it gone while its last fault is still in the ring.
    l.on_exit(&ProcEvent { pid: PID, ..Default::default() });
    l.close_interval(&HashMap::new(), 1.0);
    l.on_rss(&rss(member::ANON, cause::FAULT, rss_flags::FIRST_OF_FAULT, PAGE * 21, PAGE, 0x10_0000));
    let Record::Faults { mappings, .. } = &l.close_interval(&HashMap::new(), 1.0)[0] else { panic!() };
    assert_eq!(mappings[0].mapping, "anon@0x100000", "the late fault still lands in its mapping");
    // The kernel's record: nothing of its faults comes after it, so its maps can go.
    let exit = ProcEvent {
        hdr: EventHeader { kind: EventKind::Exit as u32, ..Default::default() },
        pid: PID,
        ..Default::default()
    };
    l.on_exit(&exit);
    l.close_interval(&HashMap::new(), 1.0);
    assert!(l.procs[&PID].maps().lookup(0x10_0000).is_none());
}

#[test]
fn stack_pages_are_kept_per_stack_and_per_mapping() {
    let mut l = ledger_with_maps();
    let with_stack = |mut e: RssEvent, id: i32| {
        e.stack_id = id;
        e
    };
    let f = rss_flags::FIRST_OF_FAULT;
    l.on_rss(&with_stack(rss(member::ANON, cause::FAULT, f, PAGE * 21, PAGE * 3, 0x10_0000), 7));
    l.on_rss(&with_stack(rss(member::SHMEM, cause::FAULT, f, PAGE, PAGE, 0x40_0000), 7));
    l.on_rss(&with_stack(rss(member::ANON, cause::FAULT, f, PAGE * 23, PAGE * 2, 0x10_8000), 8));
    let p = &l.procs[&PID];
    assert_eq!(p.stacks, HashMap::from([(7, 4), (8, 2)]));
    let anon = MappingId { name: "anon@0x100000".into(), shared: false };
    let shm = MappingId { name: "/dev/shm/seg".into(), shared: true };
    assert_eq!(p.stack_mappings, HashMap::from([((7, anon.clone()), 3), ((7, shm), 1), ((8, anon), 2)]));
}

#[test]
fn processes_on_one_mm_hold_its_whole_counters_and_their_own_faults() {
    let mut l = ledger_with_maps();
    let child = PID + 1;
    l.on_fork(&ProcEvent {
        hdr: EventHeader { kind: EventKind::Fork as u32, tgid: child, tid: PID, _pad: 0, ts_ns: 0 },
        pid: child,
        ppid: PID,
        comm: [0; 16],
    });
    // The parent's first change (seeded), then the child (clone(CLONE_VM)) writes 8 pages of the
    // same mm, then the parent 4.
    l.on_rss(&rss(member::ANON, cause::FAULT, rss_flags::UNSEEDED, PAGE * 21, PAGE * 21, 0x10_0000));
    let mut e = rss(member::ANON, cause::FAULT, 0, PAGE * 29, PAGE * 8, 0x10_1000);
    e.hdr.tgid = child;
    l.on_rss(&e);
    l.on_rss(&rss(member::ANON, cause::FAULT, 0, PAGE * 33, PAGE * 4, 0x10_9000));
    let kib = |pid| l.get(pid).unwrap().ledger_rss_kib().unwrap();
    assert_eq!(kib(PID), kib(child), "both hold the mm's counters");
    assert_eq!(kib(PID), (10 + 33) * PAGE / 1024);
    assert_eq!(l.mm_shared_with(PID), vec![child]);
    assert_eq!(l.mm_shared_with(child), vec![PID]);
    assert_eq!(l.get(child).unwrap().interval.pages[member::ANON as usize], 8, "the child's own faults");
    assert_eq!(l.get(PID).unwrap().interval.pages[member::ANON as usize], 1 + 4);
}

#[test]
fn what_exec_mapped_is_named_from_its_layout_record_once_proc_is_gone() {
    use agent_common::{ExecMmEvent, ProcEvent};

    use crate::attribution::exec_image;
    let facts = FakeProc::default();
    let img = exec_image::parse(&exec_image::tests::elf()).unwrap();
    facts.elfs.lock().unwrap().extend([("/bin/x".to_string(), img.clone()), ("/ld.so".to_string(), img)]);
    let mut l = ledger_on(facts);
    let hdr = |kind: EventKind| EventHeader { kind: kind as u32, tgid: PID, tid: PID, _pad: 0, ts_ns: 0 };
    let f = rss_flags::FIRST_OF_FAULT;
    // Exec zeroes the binary's bss tail before its record: a kernel fault nothing names yet.
    l.on_rss(&rss(member::FILE, cause::KERNEL_FAULT, f, PAGE * 11, PAGE, 0x5555_0000_4100));
    assert_eq!(l.unnamed_pages(), 1);
    let _ = l.on_exec(&ProcEvent {
        hdr: hdr(EventKind::Exec),
        pid: PID,
        ppid: 0,
        comm: *b"x\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0",
    });
    let mut e = ExecMmEvent {
        hdr: hdr(EventKind::ExecMm),
        start_code: 0x5555_0000_1000,
        start_brk: 0x5555_0001_0000,
        start_stack: 0x7ffc_0000_0f00,
        env_end: 0x7ffc_0000_1ff0,
        at_base: 0x7f00_0000_0000,
        at_sysinfo_ehdr: 0x7f00_0001_0000,
        len: 7,
        ..Default::default()
    };
    e.filename[..7].copy_from_slice(b"/bin/x\0");
    l.on_exec_mm(&e);
    assert_eq!(l.unnamed_pages(), 0, "the early kernel fault is named now");
    for (addr, name) in [
        (0x5555_0000_1000u64, "/bin/x"),
        (0x5555_0000_6000, "anon@0x555500005000"),
        (0x7f00_0000_4000, "/ld.so"),
        (0x7f00_0001_0020, "[vdso]"),
        (0x7ffc_0000_0100, "[stack]"),
        (0x7ffb_ff90_0000, "[stack]"),
    ] {
        l.on_rss(&rss(member::FILE, cause::FAULT, f, PAGE * 12, PAGE, addr));
        let p = &l.procs[&PID];
        assert_eq!(p.maps.lookup(addr).map(|id| id.name.to_string()).as_deref(), Some(name), "{addr:#x}");
    }
    assert_eq!(l.unnamed_pages(), 0);
    let recs = l.close_interval(&HashMap::from([(PID, 8)]), 1.0);
    let Record::Faults { mappings, .. } = &recs[0] else { panic!("{recs:?}") };
    let bin = mappings.iter().find(|m| m.mapping == "/bin/x").unwrap();
    assert_eq!((bin.faults, bin.pages), (2, 2), "{mappings:?}");
    assert!(mappings.iter().all(|m| m.mapping != "[unmapped]"), "{mappings:?}");
    // Heap from the first brk past start_brk.
    l.on_syscall(&SyscallEvent { hdr: hdr(EventKind::Syscall), nr: nr::BRK, args: [0; 6], ret: 0x5555_0002_0000 });
    assert_eq!(l.procs[&PID].maps.lookup(0x5555_0001_0000).unwrap().name.as_ref(), "[heap]");
}

#[test]
fn the_exec_layout_never_replaces_what_proc_gave() {
    use agent_common::ExecMmEvent;
    let mut l = ledger_with_maps();
    let e = ExecMmEvent {
        hdr: EventHeader { kind: EventKind::ExecMm as u32, tgid: PID, tid: PID, _pad: 0, ts_ns: 0 },
        start_stack: 0x18_0000,
        env_end: 0x18_0100,
        ..Default::default()
    };
    l.on_exec_mm(&e);
    assert_eq!(l.procs[&PID].maps.lookup(0x10_0000).unwrap().name.as_ref(), "anon@0x100000");
    assert!(l.procs[&PID].maps.lookup(0x30_0000).is_none());
}

#[test]
fn a_file_mmap_proc_no_longer_shows_is_named_from_its_open() {
    // /proc answers with maps read after the process unmapped the file again (ld.so's
    // ld.so.cache): the mmap record still places it, under the path its fd was opened as.
    let facts = FakeProc::default();
    let mut later = MappingMap::default();
    later.map(0x10_0000, 0x20_0000, MappingId { name: "anon@0x100000".into(), shared: false }, true);
    facts.maps.lock().unwrap().insert(PID, later);
    let mut l = ledger_on(facts);
    let hdr = |kind: EventKind| EventHeader { kind: kind as u32, tgid: PID, tid: PID, _pad: 0, ts_ns: 0 };
    let mut open = OpenEvent { hdr: hdr(EventKind::Open), fd: 3, len: 15, ..Default::default() };
    open.path[..15].copy_from_slice(b"/etc/ld.so.cach");
    l.on_open(&open);
    l.on_syscall(&SyscallEvent {
        hdr: hdr(EventKind::Syscall),
        nr: nr::MMAP,
        args: [0, 0x9000, 1, 2, 3, 0],
        ret: 0x7f00_0000_0000,
    });
    assert_eq!(l.procs[&PID].maps.lookup(0x7f00_0000_8000).unwrap().name.as_ref(), "/etc/ld.so.cach");
}

#[test]
fn a_zombies_empty_maps_do_not_wipe_the_ledgers() {
    // The process exited but is not reaped: /proc/PID/maps reads empty. A lookup miss then must
    // not replace the map every later fault of its records is named by.
    let facts = FakeProc::default();
    facts.maps.lock().unwrap().insert(PID, MappingMap::default());
    let mut l = ledger_on(facts);
    l.on_rss(&rss(member::ANON, cause::FAULT, 0, PAGE * 21, PAGE, 0x90_0000));
    l.on_rss(&rss(member::ANON, cause::FAULT, 0, PAGE * 22, PAGE, 0x10_0000));
    let anon = MappingId { name: "anon@0x100000".into(), shared: false };
    assert_eq!(l.procs[&PID].interval.by_mapping.get(&anon).map(|s| s.pages), Some(1));
}

#[test]
fn a_madvise_that_splits_vmas_rereads_the_map_even_in_a_poll_read_already() {
    // wl-madvsplit (tests/madvise_split.rs): B mmapped right below A, merged by the kernel,
    // split again by MADV_NOHUGEPAGE. This poll read the map already (a miss): the read shows
    // the split, but B's older mmap fed after it merged the ledger's regions again.
    let facts = FakeProc::default();
    let mut l = ledger_on(facts.clone());
    let mut now = l.get(PID).unwrap().maps().clone();
    // Read-only only so this fake read keeps two regions (the kernel's differ in VM_NOHUGEPAGE,
    // a flag the ledger does not keep).
    now.map_prot(0x0c_0000, 0x10_0000, MappingId { name: "anon@0xc0000".into(), shared: false }, true, 1);
    facts.maps.lock().unwrap().insert(PID, now);
    let syscall = |nr, args| SyscallEvent {
        hdr: EventHeader { kind: EventKind::Syscall as u32, tgid: PID, ..Default::default() },
        nr,
        args,
        ret: 0,
    };
    let fault = |l: &mut Ledger, addr, size| {
        l.on_rss(&rss(member::ANON, cause::FAULT, rss_flags::FIRST_OF_FAULT, size, PAGE, addr));
        l.get(PID).unwrap().maps().lookup(addr).map(|m| m.name.to_string())
    };
    l.set_poll((10, 20));
    assert_eq!(fault(&mut l, 0x90_0000, 21 * PAGE), None, "a miss: the poll's read");
    let mut mmap = syscall(nr::MMAP, [0x0c_0000, 0x4_0000, 3, (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64, 0, 0]);
    mmap.ret = 0x0c_0000;
    l.on_syscall(&mmap);
    assert_eq!(fault(&mut l, 0x0c_1000, 22 * PAGE).as_deref(), Some("anon@0x100000"), "merged again");
    l.on_syscall(&syscall(nr::MADVISE, [0x0c_0000, 0x4_0000, libc::MADV_NOHUGEPAGE as u64, 0, 0, 0]));
    assert_eq!(fault(&mut l, 0x0c_2000, 23 * PAGE).as_deref(), Some("anon@0xc0000"));
    assert_eq!(*facts.asked.lock().unwrap(), 2, "one more read for the madvise");
    // An advice that splits nothing marks nothing.
    l.set_poll((30, 40));
    l.on_syscall(&syscall(nr::MADVISE, [0x0c_0000, 0x4_0000, libc::MADV_DONTNEED as u64, 0, 0, 0]));
    assert_eq!(fault(&mut l, 0x0c_3000, 24 * PAGE).as_deref(), Some("anon@0xc0000"));
    assert_eq!(*facts.asked.lock().unwrap(), 2);
}
