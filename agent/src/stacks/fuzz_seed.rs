//! A small, valid ELF64 the fuzzer starts from: one loadable segment, `.text` with two
//! functions in `.symtab`, and DWARF 4 (`.debug_abbrev`, `.debug_info`, `.debug_line`) naming
//! them with their lines, an inlined call included. Built in code, so the fuzzer needs no file and no compiler, and its
//! mutations reach the symbol table and DWARF parsers, not only the header checks.

/// Where the file is loaded (file offset 0).
pub const BASE: u64 = 0x40_0000;
/// File offset and size of `.text`; `seed_main` is its first half, `seed_helper` the second.
pub const TEXT_OFF: u64 = 0x100;
pub const TEXT_LEN: u64 = 0x80;

struct Section {
    name: &'static str,
    kind: u32,
    flags: u64,
    data: Vec<u8>,
    link: u32,
    info: u32,
    entsize: u64,
}

fn u16le(v: &mut Vec<u8>, x: u16) {
    v.extend_from_slice(&x.to_le_bytes());
}
fn u32le(v: &mut Vec<u8>, x: u32) {
    v.extend_from_slice(&x.to_le_bytes());
}
fn u64le(v: &mut Vec<u8>, x: u64) {
    v.extend_from_slice(&x.to_le_bytes());
}

fn cstr(v: &mut Vec<u8>, s: &str) {
    v.extend_from_slice(s.as_bytes());
    v.push(0);
}

/// `.debug_abbrev`: 1 compile unit, 2 subprogram (children), 3 inlined subroutine.
fn abbrev() -> Vec<u8> {
    const ADDR: u8 = 0x01;
    const DATA8: u8 = 0x07;
    const STRING: u8 = 0x08;
    const REF4: u8 = 0x13;
    const SEC_OFFSET: u8 = 0x17;
    let mut v = vec![1, 0x11, 1, 0x03, STRING, 0x11, ADDR, 0x12, DATA8, 0x10, SEC_OFFSET, 0, 0];
    v.extend_from_slice(&[2, 0x2e, 1, 0x03, STRING, 0x11, ADDR, 0x12, DATA8, 0, 0]);
    v.extend_from_slice(&[3, 0x1d, 0, 0x31, REF4, 0x11, ADDR, 0x12, DATA8, 0, 0]);
    v.push(0);
    v
}

/// `.debug_info`: one unit, `seed_main` with `seed_helper` inlined into it, then `seed_helper`.
fn info() -> Vec<u8> {
    let mut d = Vec::new();
    d.push(1);
    cstr(&mut d, "seed.c");
    u64le(&mut d, BASE + TEXT_OFF);
    u64le(&mut d, TEXT_LEN);
    u32le(&mut d, 0); // DW_AT_stmt_list: the line program
    let header = 11u32; // unit_length excluded: version 2, abbrev offset 4, address size 1 ... + 4
    d.push(2);
    cstr(&mut d, "seed_main");
    u64le(&mut d, BASE + TEXT_OFF);
    u64le(&mut d, TEXT_LEN / 2);
    let inlined_at = d.len();
    d.push(3);
    u32le(&mut d, 0); // patched: seed_helper's DIE
    u64le(&mut d, BASE + TEXT_OFF + 0x10);
    u64le(&mut d, 0x10);
    d.push(0); // end of seed_main's children
    let helper_at = header + d.len() as u32;
    d.push(2);
    cstr(&mut d, "seed_helper");
    u64le(&mut d, BASE + TEXT_OFF + TEXT_LEN / 2);
    u64le(&mut d, TEXT_LEN / 2);
    d.push(0); // seed_helper has no children
    d.push(0); // end of the unit's children
    d[inlined_at + 1..inlined_at + 5].copy_from_slice(&helper_at.to_le_bytes());
    let mut v = Vec::new();
    u32le(&mut v, (7 + d.len()) as u32);
    u16le(&mut v, 4);
    u32le(&mut v, 0);
    v.push(8);
    v.extend_from_slice(&d);
    v
}

/// `.debug_line` (version 4): `/seed/seed.c`, lines 10, 20, 15 and 30 at .text +0, +0x10,
/// +0x20 and +0x40.
fn line() -> Vec<u8> {
    let mut hdr = vec![1, 1, 1, (-5i8) as u8, 14, 13, 0, 1, 1, 1, 1, 0, 0, 0, 1, 0, 0, 1];
    cstr(&mut hdr, "/seed");
    hdr.push(0);
    cstr(&mut hdr, "seed.c");
    hdr.extend_from_slice(&[1, 0, 0, 0]); // directory 1, no time, no length; end of files
    let mut prog = vec![0, 9, 2]; // DW_LNE_set_address
    u64le(&mut prog, BASE + TEXT_OFF);
    // advance_line (3), copy (1), advance_pc (2); a line of -5 is the SLEB128 byte 0x7b.
    prog.extend_from_slice(&[3, 9, 1, 2, 0x10, 3, 10, 1, 2, 0x10, 3, 0x7b, 1, 2, 0x20, 3, 15, 1]);
    prog.extend_from_slice(&[2, 0x40, 0, 1, 1]); // to the end, DW_LNE_end_sequence
    let mut v = Vec::new();
    u32le(&mut v, (2 + 4 + hdr.len() + prog.len()) as u32);
    u16le(&mut v, 4);
    u32le(&mut v, hdr.len() as u32);
    v.extend_from_slice(&hdr);
    v.extend_from_slice(&prog);
    v
}

fn symtab(strtab: &mut Vec<u8>) -> Vec<u8> {
    let mut v = vec![0u8; 24]; // the null symbol
    for (name, at) in [("seed_main", 0), ("seed_helper", TEXT_LEN / 2)] {
        u32le(&mut v, strtab.len() as u32);
        cstr(strtab, name);
        v.push(0x12); // global function
        v.push(0);
        u16le(&mut v, 1); // .text
        u64le(&mut v, BASE + TEXT_OFF + at);
        u64le(&mut v, TEXT_LEN / 2);
    }
    v
}

/// The seed ELF's bytes.
pub fn elf() -> Vec<u8> {
    let mut strtab = vec![0u8];
    let sym = symtab(&mut strtab);
    let sections = [
        Section { name: ".text", kind: 1, flags: 6, data: vec![0xc3; TEXT_LEN as usize], link: 0, info: 0, entsize: 0 },
        Section { name: ".symtab", kind: 2, flags: 0, data: sym, link: 3, info: 1, entsize: 24 },
        Section { name: ".strtab", kind: 3, flags: 0, data: strtab, link: 0, info: 0, entsize: 0 },
        Section { name: ".debug_abbrev", kind: 1, flags: 0, data: abbrev(), link: 0, info: 0, entsize: 0 },
        Section { name: ".debug_info", kind: 1, flags: 0, data: info(), link: 0, info: 0, entsize: 0 },
        Section { name: ".debug_line", kind: 1, flags: 0, data: line(), link: 0, info: 0, entsize: 0 },
    ];
    let mut shstr = vec![0u8];
    let mut out = vec![0u8; TEXT_OFF as usize];
    let mut headers = vec![0u8; 64]; // the null section header
    for s in &sections {
        let name = shstr.len() as u32;
        cstr(&mut shstr, s.name);
        let off = out.len() as u64;
        out.extend_from_slice(&s.data);
        u32le(&mut headers, name);
        u32le(&mut headers, s.kind);
        u64le(&mut headers, s.flags);
        u64le(&mut headers, if s.flags & 2 != 0 { BASE + off } else { 0 });
        u64le(&mut headers, off);
        u64le(&mut headers, s.data.len() as u64);
        u32le(&mut headers, s.link);
        u32le(&mut headers, s.info);
        u64le(&mut headers, 1);
        u64le(&mut headers, s.entsize);
    }
    let shstr_name = shstr.len() as u32;
    cstr(&mut shstr, ".shstrtab");
    let shstr_off = out.len() as u64;
    out.extend_from_slice(&shstr);
    u32le(&mut headers, shstr_name);
    u32le(&mut headers, 3);
    headers.extend_from_slice(&[0; 16]);
    u64le(&mut headers, shstr_off);
    u64le(&mut headers, shstr.len() as u64);
    headers.extend_from_slice(&[0; 24]);
    while !out.len().is_multiple_of(8) {
        out.push(0);
    }
    let shoff = out.len() as u64;
    out.extend_from_slice(&headers);
    let shnum = (sections.len() + 2) as u16;
    // The ELF header, then one PT_LOAD program header mapping the whole file at BASE.
    let mut h = vec![0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    u16le(&mut h, 2); // executable
    u16le(&mut h, 62); // x86-64
    u32le(&mut h, 1);
    u64le(&mut h, BASE + TEXT_OFF); // entry
    u64le(&mut h, 64); // phoff
    u64le(&mut h, shoff);
    u32le(&mut h, 0);
    for x in [64u16, 56, 1, 64, shnum, shnum - 1] {
        u16le(&mut h, x); // ehsize, phentsize, phnum, shentsize, shnum, shstrndx
    }
    u32le(&mut h, 1); // PT_LOAD
    u32le(&mut h, 5); // R+X
    u64le(&mut h, 0);
    u64le(&mut h, BASE);
    u64le(&mut h, BASE);
    u64le(&mut h, out.len() as u64);
    u64le(&mut h, out.len() as u64);
    u64le(&mut h, 0x1000);
    out[..h.len()].copy_from_slice(&h);
    out
}
