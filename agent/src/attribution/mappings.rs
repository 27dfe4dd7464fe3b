//! Per-process address -> mapping interval map: seeded from `/proc/PID/maps`, kept current from
//! the mmap/munmap/mremap/brk events, and asked "which mapping holds address A?" per fault.
use std::{collections::BTreeMap, sync::Arc};

use procfs::process::{MMPermissions, MMapPath, MemoryMap};

/// What a user sees of a mapping: its name the way `/proc/PID/maps` names it, and whether it is
/// MAP_SHARED.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MappingId {
    pub name: Arc<str>,
    pub shared: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Region {
    end: u64,
    id: MappingId,
    /// Anonymous regions merge with a neighbour like the kernel merges VMAs.
    anon: bool,
    /// PROT_READ | PROT_WRITE | PROT_EXEC: VMAs with different protections never merge.
    prot: u8,
    /// File offset of the region's start, for a file mapping (symbolizing its addresses).
    file_off: Option<u64>,
}

impl Region {
    /// The part of this region from `at` on (for a split): its file offset moves along; an
    /// anonymous piece is a VMA of its own now, named by its start as `/proc/PID/maps` would.
    fn tail(&self, start: u64, at: u64) -> Region {
        let id = if self.anon && at != start {
            MappingId { name: anon_name(at, self.id.shared), shared: self.id.shared }
        } else {
            self.id.clone()
        };
        Region { id, file_off: self.file_off.map(|o| o + (at - start)), ..self.clone() }
    }
}

#[derive(Clone, Debug, Default)]
pub struct MappingMap {
    regions: BTreeMap<u64, Region>,
    /// Start of the heap, learned from the first brk while there is no [heap] region.
    brk_start: Option<u64>,
}

/// `PROT_*` bits as mmap/mprotect take them.
pub mod prot {
    pub const READ: u8 = 1;
    pub const WRITE: u8 = 2;
    pub const EXEC: u8 = 4;
}

/// Name of an anonymous mapping: by start address, so two segments stay apart.
pub fn anon_name(start: u64, shared: bool) -> Arc<str> {
    if shared {
        format!("shmem-anon@{start:#x}").into()
    } else {
        format!("anon@{start:#x}").into()
    }
}

impl MappingMap {
    pub fn from_proc_maps<'a>(maps: impl IntoIterator<Item = &'a MemoryMap>) -> Self {
        let mut m = Self::default();
        for map in maps {
            let (start, end) = map.address;
            let shared = map.perms.contains(MMPermissions::SHARED);
            let (name, anon): (Arc<str>, bool) = match &map.pathname {
                MMapPath::Path(p) => {
                    let s = p.to_string_lossy();
                    if s.starts_with("/dev/zero") {
                        (anon_name(start, shared), true)
                    } else {
                        (s.into(), false)
                    }
                }
                MMapPath::Heap => ("[heap]".into(), false),
                MMapPath::Stack => ("[stack]".into(), false),
                MMapPath::TStack(t) => (format!("[stack:{t}]").into(), false),
                MMapPath::Vdso => ("[vdso]".into(), false),
                MMapPath::Vvar => ("[vvar]".into(), false),
                MMapPath::Vsyscall => ("[vsyscall]".into(), false),
                // The key (00000000: IPC_PRIVATE) and the segment's id (its inode in maps).
                MMapPath::Vsys(key) => (format!("SYSV{key:08x} (shmid {})", map.inode).into(), false),
                MMapPath::Other(o) => (format!("[{o}]").into(), false),
                MMapPath::Anonymous | MMapPath::Rollup => (anon_name(start, shared), true),
            };
            let file_off = matches!(map.pathname, MMapPath::Path(_)).then_some(map.offset).filter(|_| !anon);
            let prot = [
                (MMPermissions::READ, prot::READ),
                (MMPermissions::WRITE, prot::WRITE),
                (MMPermissions::EXECUTE, prot::EXEC),
            ]
            .iter()
            .filter(|(perm, _)| map.perms.contains(*perm))
            .fold(0, |acc, (_, bit)| acc | bit);
            m.regions.insert(start, Region { end, id: MappingId { name, shared }, anon, prot, file_off });
        }
        m
    }

    /// For a code address: the mapping's name and, for a file mapping, the file offset.
    pub fn resolve(&self, addr: u64) -> Option<(&MappingId, Option<u64>)> {
        let (&s, r) = self.regions.range(..=addr).next_back()?;
        (addr < r.end).then(|| (&r.id, r.file_off.map(|o| o + (addr - s))))
    }

    /// The bounds `[start, end)` of the region that holds `addr`.
    pub fn bounds(&self, addr: u64) -> Option<(u64, u64)> {
        let (&s, r) = self.regions.range(..=addr).next_back()?;
        (addr < r.end).then_some((s, r.end))
    }

    /// The address ranges the mapping `id` covers.
    pub fn ranges_of(&self, id: &MappingId) -> Vec<(u64, u64)> {
        self.regions.iter().filter(|(_, r)| &r.id == id).map(|(&s, r)| (s, r.end)).collect()
    }

    /// The region that is exactly [start, end), if there is one, is named `id`.
    pub fn rename_exact(&mut self, start: u64, end: u64, id: MappingId) {
        if let Some(r) = self.regions.get_mut(&start).filter(|r| r.end == end) {
            r.id = id;
        }
    }

    /// Something is mapped somewhere in [start, end).
    pub fn overlaps(&self, start: u64, end: u64) -> bool {
        self.regions.range(..end).next_back().is_some_and(|(_, r)| r.end > start)
    }

    pub fn lookup(&self, addr: u64) -> Option<&MappingId> {
        let (_, r) = self.regions.range(..=addr).next_back()?;
        (addr < r.end).then_some(&r.id)
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.regions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.regions.is_empty()
    }

    /// It maps something MAP_SHARED.
    pub fn any_shared(&self) -> bool {
        self.regions.values().any(|r| r.id.shared)
    }

    /// The largest region /proc/PID/maps named as anonymous hugetlb memory (MAP_HUGETLB).
    pub fn hugetlb_region(&self) -> Option<MappingId> {
        let huge = self.regions.iter().filter(|(_, r)| r.id.name.starts_with("/anon_hugepage"));
        huge.max_by_key(|(&s, r)| r.end - s).map(|(_, r)| r.id.clone())
    }

    /// Remove [start, end), splitting regions that straddle the edges.
    pub fn unmap(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        // A region starting before `start` that reaches into the range: keep its head, and its
        // tail if it reaches past `end`.
        if let Some((&s, r)) = self.regions.range(..start).next_back() {
            if r.end > start {
                let r = r.clone();
                self.regions.get_mut(&s).expect("present").end = start;
                if r.end > end {
                    self.regions.insert(end, r.tail(s, end));
                }
            }
        }
        let inside: Vec<u64> = self.regions.range(start..end).map(|(&s, _)| s).collect();
        for s in inside {
            let r = self.regions.remove(&s).expect("present");
            if r.end > end {
                self.regions.insert(end, r.tail(s, end));
            }
        }
    }

    /// Map [start, end) as `id`, read-write (see [`MappingMap::map_prot`]).
    pub fn map(&mut self, start: u64, end: u64, id: MappingId, anon: bool) {
        self.map_prot(start, end, id, anon, prot::READ | prot::WRITE);
    }

    /// Map [start, end) as `id` with protections `prot`, replacing what was there (MAP_FIXED
    /// semantics). An anonymous region adjacent to an anonymous region with the same sharing
    /// and protections joins it, as the kernel merges the VMAs, and keeps the older name, so a
    /// heap that grows by mmap stays one mapping. Different protections stay apart, as they do
    /// in the kernel (and so in `/proc/PID/maps`, which seeds a `-p` watch).
    pub fn map_prot(&mut self, start: u64, end: u64, id: MappingId, anon: bool, prot: u8) {
        self.unmap(start, end);
        self.insert_merging(start, Region { end, id, anon, prot, file_off: None });
    }

    /// A file mapping at file offset `off`.
    pub fn map_file(&mut self, start: u64, end: u64, id: MappingId, prot: u8, off: u64) {
        self.unmap(start, end);
        self.regions.insert(start, Region { end, id, anon: false, prot, file_off: Some(off) });
    }

    /// mprotect: [start, end) gets `prot`; the regions it covers split at its edges, and an
    /// anonymous piece joins an equal neighbour like the kernel merges them.
    pub fn protect(&mut self, start: u64, end: u64, prot: u8) {
        let pieces: Vec<(u64, Region)> = self
            .regions
            .range(..end)
            .rev()
            .take_while(|(_, r)| r.end > start)
            .map(|(&s, r)| {
                let (s2, e2) = (s.max(start), r.end.min(end));
                (s2, Region { end: e2, prot, ..r.tail(s, s2) })
            })
            .collect();
        for (s, r) in pieces.into_iter().rev() {
            self.unmap(s, r.end);
            self.insert_merging(s, r);
        }
    }

    /// After a re-read of /proc/PID/maps replaced `old`: an anonymous region that covers an old
    /// one (the same, or the kernel merged a neighbour into it) keeps the old one's name, as
    /// merging keeps it between re-reads; a piece split off (inside an old region) keeps the
    /// kernel's name. A MAP_HUGETLB region (`/anon_hugepage` in /proc) keeps its `anon@` name
    /// too, as the mmap's exit gave it.
    pub fn keep_merged_names(&mut self, old: &MappingMap) {
        let anon = |r: &Region| r.anon || r.id.name.starts_with("/anon_hugepage");
        for (&s, r) in self.regions.iter_mut().filter(|(_, r)| anon(r)) {
            let grown = old
                .regions
                .range(s..r.end)
                .chain(old.regions.range(..s).next_back())
                .find(|(&os, o)| o.anon && o.id.shared == r.id.shared && os >= s && o.end <= r.end);
            if let Some((_, o)) = grown {
                r.id = o.id.clone();
            }
        }
    }

    fn insert_merging(&mut self, start: u64, r: Region) {
        let Region { end, id, anon, prot, file_off } = r;
        let (mut start, mut end, mut id) = (start, end, id);
        let shared = id.shared;
        let joins = move |r: &Region| r.anon && r.id.shared == shared && r.prot == prot;
        if anon {
            let mut merged_below = false;
            if let Some((&s, r)) = self.regions.range(..start).next_back() {
                if r.end == start && joins(r) {
                    id = r.id.clone();
                    start = s;
                    merged_below = true;
                }
            }
            let above = self.regions.get(&end).is_some_and(joins);
            if above {
                let r = self.regions.remove(&end).expect("present");
                if !merged_below {
                    // The new region grew downwards onto an older one: keep the older name.
                    id = r.id;
                }
                end = r.end;
            }
        }
        self.regions.insert(start, Region { end, id, anon, prot, file_off });
    }

    /// Move [old, old+old_len) to new (mremap); grows or shrinks to new_len.
    pub fn remap(&mut self, old: u64, old_len: u64, new: u64, new_len: u64) {
        let Some(id) = self.lookup(old).cloned() else { return };
        let (anon, prot) = self.regions.range(..=old).next_back().map_or((false, 0), |(_, r)| (r.anon, r.prot));
        if new == old {
            if new_len < old_len {
                self.unmap(old + new_len, old + old_len);
            } else {
                self.map_prot(old, old + new_len, id, anon, prot);
            }
            return;
        }
        self.unmap(old, old + old_len);
        self.map_prot(new, new + new_len, id, anon, prot);
    }

    /// brk returned `new_end`. The first brk (glibc's `brk(0)`) tells where the heap starts
    /// when /proc/PID/maps had no [heap] yet.
    pub fn set_brk(&mut self, new_end: u64) {
        let heap_id = || MappingId { name: "[heap]".into(), shared: false };
        let heap = self.regions.iter().find(|(_, r)| &*r.id.name == "[heap]").map(|(&s, r)| (s, r.end));
        match (heap, self.brk_start) {
            (Some((s, end)), _) if new_end > end => self.map(s, new_end, heap_id(), false),
            (Some((s, end)), _) if new_end < end && new_end >= s => self.unmap(new_end, end),
            (Some(_), _) => {}
            (None, None) => self.brk_start = Some(new_end),
            (None, Some(start)) if new_end > start => self.map(start, new_end, heap_id(), false),
            (None, Some(_)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(name: &str) -> MappingId {
        MappingId { name: name.into(), shared: false }
    }

    #[test]
    fn a_reread_keeps_the_name_of_a_region_the_kernel_grew_by_merging() {
        let mut old = MappingMap::default();
        old.map(0x5000, 0x8000, id("anon@0x5000"), true);
        old.map(0x10000, 0x20000, id("anon@0x10000"), true);
        let mut new = MappingMap::default();
        // Grown downwards by a merge; and split in two by an mprotect.
        new.map(0x3000, 0x8000, id("anon@0x3000"), true);
        new.map_prot(0x10000, 0x18000, id("anon@0x10000"), true, prot::READ);
        new.map_prot(0x18000, 0x20000, id("anon@0x18000"), true, prot::READ | prot::WRITE);
        new.keep_merged_names(&old);
        assert_eq!(new.lookup(0x3000), Some(&id("anon@0x5000")));
        // The same range again: the name it had (it may have grown by merging before).
        let mut again = MappingMap::default();
        again.map(0x3000, 0x8000, id("anon@0x3000"), true);
        again.keep_merged_names(&new);
        assert_eq!(again.lookup(0x3000), Some(&id("anon@0x5000")));
        assert_eq!(new.lookup(0x18000), Some(&id("anon@0x18000")));
        assert_eq!(new.lookup(0x10000), Some(&id("anon@0x10000")));
        // A MAP_HUGETLB region as the mmap's exit named it, and as /proc does.
        old.map(0x40000, 0x60000, id("anon@0x40000"), true);
        let mut huge = MappingMap::default();
        huge.map(0x40000, 0x60000, id("/anon_hugepage (deleted)"), false);
        huge.keep_merged_names(&old);
        assert_eq!(huge.lookup(0x40000), Some(&id("anon@0x40000")));
    }

    #[test]
    fn lookup_inside_and_outside() {
        let mut m = MappingMap::default();
        m.map(0x1000, 0x3000, id("a"), false);
        m.map(0x5000, 0x6000, id("b"), false);
        assert_eq!(m.lookup(0x1000).unwrap().name.as_ref(), "a");
        assert_eq!(m.lookup(0x2fff).unwrap().name.as_ref(), "a");
        assert!(m.lookup(0x3000).is_none());
        assert!(m.lookup(0xfff).is_none());
        assert_eq!(m.lookup(0x5800).unwrap().name.as_ref(), "b");
    }

    #[test]
    fn unmap_splits_a_region() {
        let mut m = MappingMap::default();
        m.map(0x1000, 0x9000, id("a"), false);
        m.unmap(0x3000, 0x5000);
        assert_eq!(m.len(), 2);
        assert!(m.lookup(0x3000).is_none());
        assert!(m.lookup(0x4fff).is_none());
        assert_eq!(m.lookup(0x2fff).unwrap().name.as_ref(), "a");
        assert_eq!(m.lookup(0x5000).unwrap().name.as_ref(), "a");
    }

    #[test]
    fn unmap_across_several_regions() {
        let mut m = MappingMap::default();
        m.map(0x1000, 0x2000, id("a"), false);
        m.map(0x2000, 0x3000, id("b"), false);
        m.map(0x3000, 0x4000, id("c"), false);
        m.unmap(0x1800, 0x3800);
        assert_eq!(m.lookup(0x1000).unwrap().name.as_ref(), "a");
        assert!(m.lookup(0x2000).is_none());
        assert_eq!(m.lookup(0x3800).unwrap().name.as_ref(), "c");
    }

    #[test]
    fn fixed_map_replaces() {
        let mut m = MappingMap::default();
        m.map(0x1000, 0x4000, id("a"), false);
        m.map(0x2000, 0x3000, id("b"), false);
        assert_eq!(m.lookup(0x1000).unwrap().name.as_ref(), "a");
        assert_eq!(m.lookup(0x2000).unwrap().name.as_ref(), "b");
        assert_eq!(m.lookup(0x3000).unwrap().name.as_ref(), "a");
    }

    #[test]
    fn adjacent_anon_merges_keeping_older_name() {
        let mut m = MappingMap::default();
        m.map(0x10000, 0x20000, MappingId { name: anon_name(0x10000, false), shared: false }, true);
        // Grows downwards (top-down mmap), like glibc's big allocations.
        m.map(0x8000, 0x10000, MappingId { name: anon_name(0x8000, false), shared: false }, true);
        assert_eq!(m.len(), 1);
        assert_eq!(m.lookup(0x8000).unwrap().name.as_ref(), "anon@0x10000");
        // And upwards.
        m.map(0x20000, 0x30000, MappingId { name: anon_name(0x20000, false), shared: false }, true);
        assert_eq!(m.len(), 1);
        assert_eq!(m.lookup(0x2ffff).unwrap().name.as_ref(), "anon@0x10000");
        // A shared one next to it stays apart.
        m.map(0x30000, 0x40000, MappingId { name: anon_name(0x30000, true), shared: true }, true);
        assert_eq!(m.len(), 2);
    }

    #[test]
    fn different_protections_stay_apart_and_mprotect_splits_like_the_kernel() {
        let anon = |s: u64| MappingId { name: anon_name(s, false), shared: false };
        let (rw, rwx) = (prot::READ | prot::WRITE, prot::READ | prot::WRITE | prot::EXEC);
        let mut m = MappingMap::default();
        // Top-down, alternating: the kernel keeps four VMAs, /proc/PID/maps names each by its start.
        for (i, s) in [0x40000u64, 0x30000, 0x20000, 0x10000].into_iter().enumerate() {
            m.map_prot(s, s + 0x10000, anon(s), true, if i % 2 == 0 { rw } else { rwx });
        }
        assert_eq!(m.len(), 4);
        assert_eq!(m.lookup(0x20000).unwrap().name.as_ref(), "anon@0x20000");
        // One mapping split by mprotect: three VMAs, the pieces named by their starts.
        let mut m = MappingMap::default();
        m.map_prot(0x10000, 0x40000, anon(0x10000), true, rw);
        m.protect(0x20000, 0x30000, rwx);
        assert_eq!(m.len(), 3);
        assert_eq!(m.lookup(0x10000).unwrap().name.as_ref(), "anon@0x10000");
        assert_eq!(m.lookup(0x20000).unwrap().name.as_ref(), "anon@0x20000");
        assert_eq!(m.lookup(0x30000).unwrap().name.as_ref(), "anon@0x30000");
        // Protected back: the kernel merges them again, under the oldest name.
        m.protect(0x20000, 0x30000, rw);
        assert_eq!(m.len(), 1);
        assert_eq!(m.lookup(0x3ffff).unwrap().name.as_ref(), "anon@0x10000");
    }

    #[test]
    fn remap_moves_and_brk_grows() {
        let mut m = MappingMap::default();
        m.map(0x1000, 0x2000, id("[heap]"), false);
        m.set_brk(0x5000);
        assert_eq!(m.lookup(0x4fff).unwrap().name.as_ref(), "[heap]");
        m.set_brk(0x3000);
        assert!(m.lookup(0x3000).is_none());
        // No [heap] yet: brk(0) gives the start, the next brk grows it.
        let mut fresh = MappingMap::default();
        fresh.set_brk(0x50000);
        assert!(fresh.lookup(0x50000).is_none());
        fresh.set_brk(0x71000);
        assert_eq!(fresh.lookup(0x70fff).unwrap().name.as_ref(), "[heap]");
        m.map(0x10000, 0x11000, id("f"), false);
        m.remap(0x10000, 0x1000, 0x20000, 0x3000);
        assert!(m.lookup(0x10000).is_none());
        assert_eq!(m.lookup(0x22fff).unwrap().name.as_ref(), "f");
    }

    #[test]
    fn from_proc_maps_names() {
        let text = "\
55d0c0000000-55d0c0021000 rw-p 00000000 00:00 0                          [heap]
7f0000000000-7f0010000000 rw-s 00000000 00:01 1234                       /dev/zero (deleted)
7f0010000000-7f0010100000 rw-p 00000000 00:00 0 
7f0020000000-7f0020001000 r--p 00000000 fd:01 42                         /usr/lib/libc.so.6
";
        let maps = <procfs::process::MemoryMaps as procfs::FromBufRead>::from_buf_read(text.as_bytes()).unwrap();
        let m = MappingMap::from_proc_maps(maps.iter());
        assert_eq!(m.lookup(0x55d0c0000100).unwrap().name.as_ref(), "[heap]");
        let seg = m.lookup(0x7f0000001000).unwrap();
        assert_eq!(seg.name.as_ref(), "shmem-anon@0x7f0000000000");
        assert!(seg.shared);
        assert_eq!(m.lookup(0x7f0010000000).unwrap().name.as_ref(), "anon@0x7f0010000000");
        assert_eq!(m.lookup(0x7f0020000000).unwrap().name.as_ref(), "/usr/lib/libc.so.6");
        assert_eq!(m.resolve(0x7f0020000010).unwrap().1, Some(0x10));
        assert_eq!(m.resolve(0x7f0010000010).unwrap().1, None, "anon has no file offset");
    }
}

#[cfg(test)]
mod fuzz {
    use procfs::FromBufRead;
    use proptest::prelude::*;

    use super::*;

    const PAGES: u64 = 64;
    const P: u64 = 0x1000;

    #[derive(Debug, Clone)]
    enum Op {
        Map(u64, u64, u8),
        Unmap(u64, u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..PAGES, 1..16u64, 0..4u8).prop_map(|(s, n, name)| Op::Map(s, n, name)),
            (0..PAGES, 1..16u64).prop_map(|(s, n)| Op::Unmap(s, n)),
        ]
    }

    proptest! {
        /// Named (file) mappings against a page-by-page model: every lookup agrees.
        #[test]
        fn interval_map_matches_a_model(ops in proptest::collection::vec(op(), 1..40)) {
            let mut m = MappingMap::default();
            let mut model: Vec<Option<u8>> = vec![None; (PAGES + 16) as usize];
            for op in ops {
                match op {
                    Op::Map(s, n, name) => {
                        m.map(s * P, (s + n) * P, MappingId { name: format!("f{name}").into(), shared: false }, false);
                        for pg in s..s + n { model[pg as usize] = Some(name); }
                    }
                    Op::Unmap(s, n) => {
                        m.unmap(s * P, (s + n) * P);
                        for pg in s..s + n { model[pg as usize] = None; }
                    }
                }
            }
            for (pg, want) in model.iter().enumerate() {
                let got = m.lookup(pg as u64 * P + 7).map(|id| id.name.to_string());
                prop_assert_eq!(got, want.map(|n| format!("f{n}")), "page {}", pg);
            }
        }

        /// Arbitrary text as /proc/PID/maps: parsed or refused, never a panic.
        #[test]
        fn maps_parser_never_panics(text in "\\PC{0,300}") {
            if let Ok(maps) = procfs::process::MemoryMaps::from_buf_read(text.as_bytes()) {
                let m = MappingMap::from_proc_maps(maps.iter());
                let _ = m.lookup(0x1000);
            }
        }
    }
}
