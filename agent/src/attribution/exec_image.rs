//! What exec mapped, rebuilt without /proc: an ELF's loadable segments (from its program
//! headers) placed at their load bias, the way `binfmt_elf` maps them. The ledger uses it when a
//! process is gone before its `/proc/PID/maps` was read (see `ledger_names.rs`).
use std::sync::Arc;

use super::mappings::{anon_name, prot, MappingId, MappingMap};

/// Bytes of an ELF file read for its program headers and interpreter path (both sit right
/// after the 64-byte header in every linker's output).
pub const HEAD_BYTES: usize = 16 << 10;

/// A `PT_LOAD` segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Load {
    pub vaddr: u64,
    pub memsz: u64,
    pub filesz: u64,
    pub offset: u64,
    /// `PF_X` 1, `PF_W` 2, `PF_R` 4.
    pub flags: u32,
}

/// The program headers exec cares about.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ElfImage {
    pub loads: Vec<Load>,
    /// `PT_INTERP`: the dynamic loader's path.
    pub interp: Option<String>,
}

const PT_LOAD: u32 = 1;
const PT_INTERP: u32 = 3;
const PF_X: u32 = 1;

/// Parse a 64-bit little-endian ELF's program headers from the file's first bytes; `None` when
/// it is not one or they lie beyond `head`.
pub fn parse(head: &[u8]) -> Option<ElfImage> {
    let u16_at = |o: usize| Some(u16::from_le_bytes(head.get(o..o + 2)?.try_into().ok()?));
    let u32_at = |o: usize| Some(u32::from_le_bytes(head.get(o..o + 4)?.try_into().ok()?));
    let u64_at = |o: usize| Some(u64::from_le_bytes(head.get(o..o + 8)?.try_into().ok()?));
    // Magic, ELFCLASS64, ELFDATA2LSB.
    if head.get(0..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let (phoff, phentsize, phnum) = (u64_at(0x20)? as usize, u16_at(0x36)? as usize, u16_at(0x38)? as usize);
    if phentsize < 56 {
        return None;
    }
    let mut img = ElfImage::default();
    for i in 0..phnum {
        let ph = phoff.checked_add(i.checked_mul(phentsize)?)?;
        let (kind, flags, offset) = (u32_at(ph)?, u32_at(ph + 4)?, u64_at(ph + 8)?);
        match kind {
            PT_LOAD => img.loads.push(Load {
                vaddr: u64_at(ph + 16)?,
                filesz: u64_at(ph + 32)?,
                memsz: u64_at(ph + 40)?,
                offset,
                flags,
            }),
            PT_INTERP => {
                let len = u64_at(ph + 32)? as usize;
                let raw = head.get(offset as usize..(offset as usize).checked_add(len)?)?;
                let raw = &raw[..raw.iter().position(|&b| b == 0).unwrap_or(raw.len())];
                img.interp = Some(String::from_utf8_lossy(raw).into_owned());
            }
            _ => {}
        }
    }
    Some(img)
}

impl ElfImage {
    /// The load bias of an image whose `mm->start_code` is `start_code`: binfmt_elf sets it to
    /// the lowest `p_vaddr` of the executable segments plus the bias.
    pub fn bias_from_start_code(&self, start_code: u64) -> Option<u64> {
        let low = self.loads.iter().filter(|l| l.flags & PF_X != 0).map(|l| l.vaddr).min()?;
        start_code.checked_sub(low)
    }

    /// Put the segments in `maps` at `bias`: the file-backed pages under `name` (with their file
    /// offsets), a segment's zero-fill tail past its last file page as anonymous memory, as
    /// `/proc/PID/maps` shows them.
    pub fn place(&self, maps: &mut MappingMap, bias: u64, name: &Arc<str>, page: u64) {
        let down = |v: u64| v & !(page - 1);
        let up = |v: u64| v.div_ceil(page) * page;
        for l in &self.loads {
            let at = bias.wrapping_add(l.vaddr);
            let p = [(4, prot::READ), (2, prot::WRITE), (1, prot::EXEC)]
                .iter()
                .filter(|(f, _)| l.flags & f != 0)
                .fold(0, |acc, (_, b)| acc | b);
            let (start, file_end, end) = (down(at), up(at + l.filesz), up(at + l.memsz));
            if l.filesz > 0 {
                maps.map_file(start, file_end, MappingId { name: name.clone(), shared: false }, p, down(l.offset));
            }
            if end > file_end.max(start) {
                let s = file_end.max(start);
                maps.map_prot(s, end, MappingId { name: anon_name(s, false), shared: false }, true, p);
            }
        }
    }
}

/// The stack exec built: from its top page (the one holding the end of the environment, or
/// `start_stack`'s) down as far as a default stack limit lets it grow.
pub fn stack_range(start_stack: u64, env_end: u64, page: u64) -> Option<(u64, u64)> {
    const GROWTH: u64 = 8 << 20;
    if start_stack == 0 {
        return None;
    }
    let top = env_end.max(start_stack).checked_add(1)?.div_ceil(page) * page;
    Some((top.saturating_sub(GROWTH), top))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A 64-bit ELF head: two PT_LOADs (r-x, rw- with a bss tail) and a PT_INTERP.
    pub fn elf() -> Vec<u8> {
        let mut b = vec![0u8; 0x200];
        b[..6].copy_from_slice(b"\x7fELF\x02\x01");
        b[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        b[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        b[0x38..0x3a].copy_from_slice(&3u16.to_le_bytes());
        let ph = |b: &mut Vec<u8>, i: usize, kind: u32, flags: u32, v: [u64; 4]| {
            let o = 64 + 56 * i;
            b[o..o + 4].copy_from_slice(&kind.to_le_bytes());
            b[o + 4..o + 8].copy_from_slice(&flags.to_le_bytes());
            b[o + 8..o + 16].copy_from_slice(&v[0].to_le_bytes());
            b[o + 16..o + 24].copy_from_slice(&v[1].to_le_bytes());
            b[o + 32..o + 40].copy_from_slice(&v[2].to_le_bytes());
            b[o + 40..o + 48].copy_from_slice(&v[3].to_le_bytes());
        };
        ph(&mut b, 0, PT_INTERP, 4, [0x180, 0, 8, 8]);
        ph(&mut b, 1, PT_LOAD, 5, [0, 0x1000, 0x1800, 0x1800]);
        ph(&mut b, 2, PT_LOAD, 6, [0x3000, 0x4000, 0x100, 0x5000]);
        b[0x180..0x188].copy_from_slice(b"/ld.so\0\0");
        b
    }

    #[test]
    fn parses_loads_and_interp() {
        let img = parse(&elf()).unwrap();
        assert_eq!(img.interp.as_deref(), Some("/ld.so"));
        assert_eq!(img.loads.len(), 2);
        assert_eq!(img.loads[1], Load { vaddr: 0x4000, memsz: 0x5000, filesz: 0x100, offset: 0x3000, flags: 6 });
        assert!(parse(&elf()[..100]).is_none(), "program headers cut off");
        assert!(parse(b"#!/bin/sh\n").is_none());
    }

    #[test]
    fn places_segments_at_the_bias() {
        let img = parse(&elf()).unwrap();
        let bias = img.bias_from_start_code(0x5555_0000_1000).unwrap();
        assert_eq!(bias, 0x5555_0000_0000);
        let mut m = MappingMap::default();
        let name: Arc<str> = "/bin/x".into();
        img.place(&mut m, bias, &name, 0x1000);
        assert_eq!(m.resolve(0x5555_0000_2800).map(|(id, off)| (&*id.name, off)), Some(("/bin/x", Some(0x1800))));
        assert_eq!(m.lookup(0x5555_0000_4000).unwrap().name.as_ref(), "/bin/x");
        assert_eq!(m.lookup(0x5555_0000_5000).unwrap().name.as_ref(), "anon@0x555500005000");
        assert_eq!(m.lookup(0x5555_0000_8fff).unwrap().name.as_ref(), "anon@0x555500005000");
        assert!(m.lookup(0x5555_0000_9000).is_none());
        assert!(m.lookup(0x5555_0000_3000).is_none(), "the gap between segments");
    }

    #[test]
    fn stack_from_its_top_page() {
        assert_eq!(stack_range(0x7ffc_0000_0f00, 0x7ffc_0000_1ff0, 0x1000), Some((0x7ffb_ff80_2000, 0x7ffc_0000_2000)));
        assert_eq!(stack_range(0, 0, 0x1000), None);
    }
}
