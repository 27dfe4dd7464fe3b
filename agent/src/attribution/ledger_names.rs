//! Naming, the ledger's part: mapping syscalls keep each process's interval map current (with
//! the protections, so anonymous regions merge and split as the kernel's VMAs do), and the files
//! a process opened name its file mmaps when `/proc/PID/maps` can no longer be read (a
//! short-lived process is often gone by the time its records are read).
use std::sync::Arc;

use agent_common::{madvise_splits, nr, ExecMmEvent, OpenEvent, SyscallEvent};

use super::{proc_entry, Ledger};
use crate::attribution::{
    exec_image,
    mappings::{anon_name, MappingId},
};

pub(super) const MAP_SHARED_TYPE: u64 = 0x03;
pub(super) const MAP_ANONYMOUS: u64 = 0x20;
const MAP_HUGETLB: u64 = 0x40000;
pub(super) const PROT_MASK: u64 = 0x7;
const PROT_READ_EXEC: u8 = 0x5;
/// Distinct opened paths remembered (their resolved names), a bound on a long watch.
const MAX_PATHS: usize = 16_384;

impl Ledger {
    pub fn on_syscall(&mut self, e: &SyscallEvent) {
        let page = self.page_size as u64;
        let round = |len: u64| len.div_ceil(page) * page;
        let facts = self.facts.as_ref();
        let p = proc_entry(&mut self.procs, facts, e.hdr.tgid);
        let a = e.args;
        match e.nr {
            nr::MMAP => {
                let (start, prot, flags) = (e.ret as u64, (a[2] & PROT_MASK) as u8, a[3]);
                let end = start + round(a[1]);
                let shared = matches!(flags & MAP_SHARED_TYPE, 0x01 | 0x03);
                if flags & MAP_ANONYMOUS != 0 {
                    let id = MappingId { name: anon_name(start, shared), shared };
                    if flags & MAP_HUGETLB != 0 {
                        // Its pages may come without a user fault (MAP_POPULATE): audited.
                        Ledger::hugetlb_mapped(p, id.clone());
                    }
                    p.maps.map_prot(start, end, id, true, prot);
                } else if !p.reload_maps(facts) || p.maps.lookup(start).is_none() {
                    // A file mapping: /proc/PID/maps has its name, if the process is still there
                    // and has not unmapped it since; else the path it opened the fd under.
                    let name = p.fds.get(&(a[4] as i32)).cloned().unwrap_or_else(|| "[file]".into());
                    p.maps.map_file(start, end, MappingId { name, shared }, prot, a[5]);
                }
            }
            nr::MPROTECT => p.maps.protect(a[0], a[0] + round(a[1]), (a[2] & PROT_MASK) as u8),
            nr::MUNMAP => p.maps.unmap(a[0], a[0] + round(a[1])),
            nr::MREMAP => p.maps.remap(a[0], round(a[1]), e.ret as u64, round(a[2])),
            nr::BRK => p.maps.set_brk(e.ret as u64),
            // An advice that changed VMA flags split (or merged) VMAs: re-read before the next
            // fault (`Proc::mapping_at`). If this poll read the map already, that read showed
            // the split, but this poll's older mmaps fed after it merged the ledger's regions
            // again (the kernel had merged them before the madvise split them): the read is
            // forgotten, so the next fault reads again (one read per such madvise at most).
            nr::MADVISE if madvise_splits(a[2]) => {
                if p.maps_read_poll == self.batch_at.1 {
                    p.maps_read_poll = 0;
                }
                p.maps_stale = true;
            }
            _ => {}
        }
    }

    /// The new image's layout, right after its exec record. When `/proc/PID/maps` could not be
    /// read at exec (the process is gone: its map is empty), place what exec mapped: the binary
    /// (the exec'd path) and its interpreter (`PT_INTERP`, at `AT_BASE`) over their program
    /// headers, the vDSO, the stack, and the heap's start. Nothing /proc gave is replaced. Then
    /// the kernel faults exec itself took before its record (left `[unmapped]`) are named.
    pub fn on_exec_mm(&mut self, e: &ExecMmEvent) {
        let page = self.page_size as u64;
        let facts = self.facts.as_ref();
        let Some(p) = self.procs.get_mut(&e.hdr.tgid) else { return };
        if p.maps.is_empty() {
            let len = usize::try_from(e.len).unwrap_or(0).min(e.filename.len());
            let raw = &e.filename[..len];
            let raw = &raw[..raw.iter().position(|&b| b == 0).unwrap_or(raw.len())];
            // A relative path is relative to a cwd we do not know: the binary stays unnamed.
            let binary = (raw.first() == Some(&b'/')).then(|| String::from_utf8_lossy(raw).into_owned());
            let resolve = |path: &str| -> Option<(Arc<str>, exec_image::ElfImage)> {
                let name = facts.real_path(path).unwrap_or_else(|| path.to_string());
                let img = facts.elf_image(&name)?;
                Some((name.into(), img))
            };
            let mut interp = None;
            if let Some((name, img)) = binary.as_deref().and_then(resolve) {
                if let Some(bias) = img.bias_from_start_code(e.start_code) {
                    img.place(&mut p.maps, bias, &name, page);
                    interp = img.interp.clone();
                }
            }
            if let Some((name, img)) = interp.filter(|_| e.at_base != 0).as_deref().and_then(resolve) {
                img.place(&mut p.maps, e.at_base, &name, page);
            }
            if let (Some(len), true) = (facts.vdso_len(), e.at_sysinfo_ehdr != 0) {
                let id = MappingId { name: "[vdso]".into(), shared: false };
                p.maps.map_prot(e.at_sysinfo_ehdr, e.at_sysinfo_ehdr + len, id, false, PROT_READ_EXEC);
            }
            if let Some((lo, hi)) = exec_image::stack_range(e.start_stack, e.env_end, page) {
                // The mmap area (the interpreter, the vDSO) sits a stack gap lower: no overlap.
                p.maps.map(lo, hi, MappingId { name: "[stack]".into(), shared: false }, false);
            }
            if e.start_brk != 0 {
                p.maps.set_brk(e.start_brk);
            }
        }
        // Still in this interval's activity (its records came in the same batch) or left as is.
        let unmapped = MappingId { name: "[unmapped]".into(), shared: false };
        for (addr, pages, first) in std::mem::take(&mut p.exec_faults) {
            let Some(id) = p.maps.lookup(addr).cloned() else { continue };
            let Some(s) = p.interval.by_mapping.get_mut(&unmapped).filter(|s| s.pages >= pages) else { continue };
            s.pages -= pages;
            s.faults -= u64::from(first && s.faults > 0);
            if s.pages == 0 && s.faults == 0 {
                p.interval.by_mapping.remove(&unmapped);
            }
            let t = p.interval.by_mapping.entry(id).or_default();
            t.pages += pages;
            t.faults += u64::from(first);
            self.unnamed_pages -= pages;
        }
    }

    /// A file opened: remember the fd's path (resolved the way `/proc/PID/maps` shows it) for
    /// a later mmap of it. A relative or unreadable path is not kept: it would name wrongly.
    pub fn on_open(&mut self, e: &OpenEvent) {
        let facts = self.facts.as_ref();
        let len = usize::try_from(e.len).unwrap_or(0).min(e.path.len());
        let raw = &e.path[..len];
        let raw = &raw[..raw.iter().position(|&b| b == 0).unwrap_or(raw.len())];
        let p = proc_entry(&mut self.procs, facts, e.hdr.tgid);
        if raw.first() != Some(&b'/') {
            p.fds.remove(&e.fd);
            return;
        }
        let path = String::from_utf8_lossy(raw);
        if self.paths.len() > MAX_PATHS {
            self.paths.clear();
        }
        let name = match self.paths.get(path.as_ref()) {
            Some(n) => n.clone(),
            None => {
                let n: Arc<str> = facts.real_path(&path).unwrap_or_else(|| path.to_string()).into();
                self.paths.insert(path.to_string(), n.clone());
                n
            }
        };
        p.fds.insert(e.fd, name);
    }
}
