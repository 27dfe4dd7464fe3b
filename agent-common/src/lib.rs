//! The event ABI shared by the eBPF programs (`agent-ebpf`) and userspace (`agent`).
//!
//! Every record in the ring buffer starts with [`EventHeader`]; its `kind` is an [`EventKind`]
//! discriminant. Each struct is `#[repr(C)]` with explicit padding and no `bool`, so both sides
//! agree byte for byte. Sizes and offsets are pinned by the tests at the bottom.
//!
//! Where things are (all re-exported here, so users write `agent_common::NAME`): the record
//! kinds and structs in `events.rs`, the numbers their fields carry (members, causes, flags,
//! syscall numbers) in `codes.rs`, the maps' slot type, counter indices, names and keys in
//! `maps.rs`.
#![no_std]

mod codes;
mod events;
mod maps;

pub use self::{codes::*, events::*, maps::*};

#[cfg(feature = "user")]
mod pod {
    use super::*;
    unsafe impl aya::Pod for EventHeader {}
    unsafe impl aya::Pod for RssEvent {}
    unsafe impl aya::Pod for SyscallEvent {}
    unsafe impl aya::Pod for AreaEvent {}
    unsafe impl aya::Pod for ProcEvent {}
    unsafe impl aya::Pod for OomEvent {}
    unsafe impl aya::Pod for OpenEvent {}
    unsafe impl aya::Pod for TaskSlot {}
    unsafe impl aya::Pod for CowEvent {}
    unsafe impl aya::Pod for ExecMmEvent {}
    unsafe impl aya::Pod for HugetlbEvent {}
}

#[cfg(test)]
mod tests {
    use core::mem::{offset_of, size_of};

    use super::*;

    #[test]
    fn header_layout() {
        assert_eq!(size_of::<EventHeader>(), 24);
        assert_eq!(offset_of!(EventHeader, kind), 0);
        assert_eq!(offset_of!(EventHeader, tgid), 4);
        assert_eq!(offset_of!(EventHeader, tid), 8);
        assert_eq!(offset_of!(EventHeader, ts_ns), 16);
    }

    #[test]
    fn rss_layout() {
        assert_eq!(size_of::<RssEvent>(), 80);
        assert_eq!(offset_of!(RssEvent, stack_id), 72);
        assert_eq!(offset_of!(RssEvent, mm_id), 24);
        assert_eq!(offset_of!(RssEvent, member), 28);
        assert_eq!(offset_of!(RssEvent, cause), 32);
        assert_eq!(offset_of!(RssEvent, flags), 36);
        assert_eq!(offset_of!(RssEvent, size), 40);
        assert_eq!(offset_of!(RssEvent, delta), 48);
        assert_eq!(offset_of!(RssEvent, addr), 56);
        assert_eq!(offset_of!(RssEvent, aux), 64);
    }

    #[test]
    fn syscall_and_proc_layout() {
        assert_eq!(size_of::<SyscallEvent>(), 88);
        assert_eq!(offset_of!(SyscallEvent, nr), 24);
        assert_eq!(offset_of!(SyscallEvent, args), 32);
        assert_eq!(offset_of!(SyscallEvent, ret), 80);
        assert_eq!(size_of::<AreaEvent>(), 112);
        assert_eq!(offset_of!(AreaEvent, ino), 96);
        assert_eq!(offset_of!(AreaEvent, dev), 104);
        assert_eq!(offset_of!(AreaEvent, nr), 24);
        assert_eq!(offset_of!(AreaEvent, addr), 80);
        assert_eq!(offset_of!(AreaEvent, len), 88);
        assert_eq!(size_of::<ProcEvent>(), 48);
        assert_eq!(offset_of!(ProcEvent, pid), 24);
        assert_eq!(offset_of!(ProcEvent, ppid), 28);
        assert_eq!(offset_of!(ProcEvent, comm), 32);
    }

    #[test]
    fn cow_layout() {
        assert_eq!(size_of::<CowEvent>(), 40);
        assert_eq!(offset_of!(CowEvent, addr), 24);
        assert_eq!(offset_of!(CowEvent, err), 32);
        assert_eq!(EventKind::try_from(8), Ok(EventKind::Cow));
    }

    #[test]
    fn oom_layout() {
        assert_eq!(size_of::<OomEvent>(), 96);
        assert_eq!(offset_of!(OomEvent, pid), 24);
        assert_eq!(offset_of!(OomEvent, uid), 28);
        assert_eq!(offset_of!(OomEvent, comm), 32);
        assert_eq!(offset_of!(OomEvent, total_vm_kib), 48);
        assert_eq!(offset_of!(OomEvent, anon_rss_kib), 56);
        assert_eq!(offset_of!(OomEvent, file_rss_kib), 64);
        assert_eq!(offset_of!(OomEvent, shmem_rss_kib), 72);
        assert_eq!(offset_of!(OomEvent, pgtables_kib), 80);
        assert_eq!(offset_of!(OomEvent, oom_score_adj), 88);
    }

    #[test]
    fn open_layout() {
        assert_eq!(size_of::<OpenEvent>(), 288);
        assert_eq!(offset_of!(OpenEvent, fd), 24);
        assert_eq!(offset_of!(OpenEvent, len), 28);
        assert_eq!(offset_of!(OpenEvent, path), 32);
    }

    #[test]
    fn exec_mm_layout() {
        assert_eq!(size_of::<ExecMmEvent>(), 376);
        assert_eq!(offset_of!(ExecMmEvent, start_code), 24);
        assert_eq!(offset_of!(ExecMmEvent, start_stack), 64);
        assert_eq!(offset_of!(ExecMmEvent, env_end), 72);
        assert_eq!(offset_of!(ExecMmEvent, at_base), 80);
        assert_eq!(offset_of!(ExecMmEvent, at_entry), 96);
        assert_eq!(offset_of!(ExecMmEvent, at_sysinfo_ehdr), 104);
        assert_eq!(offset_of!(ExecMmEvent, len), 112);
        assert_eq!(offset_of!(ExecMmEvent, filename), 120);
        assert_eq!(EventKind::try_from(9), Ok(EventKind::ExecMm));
    }

    #[test]
    fn hugetlb_layout() {
        assert_eq!(size_of::<HugetlbEvent>(), 48);
        assert_eq!(offset_of!(HugetlbEvent, addr), 24);
        assert_eq!(offset_of!(HugetlbEvent, pages), 32);
        assert_eq!(offset_of!(HugetlbEvent, delta), 40);
        assert_eq!(EventKind::try_from(11), Ok(EventKind::Hugetlb));
    }

    #[test]
    fn task_slot_layout() {
        assert_eq!(size_of::<TaskSlot>(), 112);
        assert_eq!(offset_of!(TaskSlot, sys_key), 8);
        assert_eq!(offset_of!(TaskSlot, fault_addr), 16);
        assert_eq!(offset_of!(TaskSlot, fault_fresh), 36);
        assert_eq!(offset_of!(TaskSlot, last_top), 56);
        assert_eq!(offset_of!(TaskSlot, faults), 96);
        assert_eq!(offset_of!(TaskSlot, tgid), 104);
        assert_eq!(offset_of!(TaskSlot, quiet), 108);
    }

    #[test]
    fn kind_round_trip_and_unknown() {
        assert_eq!(EventKind::ALL.len(), 13);
        for &k in EventKind::ALL {
            assert_eq!(EventKind::try_from(k as u32), Ok(k));
        }
        assert_eq!(EventKind::try_from(0), Err(0));
        assert_eq!(EventKind::try_from(99), Err(99));
    }

    #[test]
    fn last_size_key_packs() {
        assert_eq!(last_size_key(0xdead_beef, 3), 0xdead_beef_0000_0003);
    }
}
