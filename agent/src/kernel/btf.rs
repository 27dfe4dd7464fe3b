//! Member offsets of kernel structs from the kernel's BTF (`/sys/kernel/btf/vmlinux`): aya keeps
//! its own BTF lookups crate-private, and the exec program needs a few `task_struct` and
//! `mm_struct` offsets. Only what that needs: the type section walked once, structs found by
//! name, members found by name through anonymous struct/union members.
use std::collections::HashMap;

const MAGIC: u16 = 0xeb9f;
const KIND_INT: u32 = 1;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_ENUM64: u32 = 19;

struct Member {
    name_off: u32,
    type_id: u32,
    /// Bit offset.
    bits: u32,
}

struct Type {
    name_off: u32,
    kind: u32,
    members: Vec<Member>,
}

pub struct Btf {
    strings: Vec<u8>,
    /// Index = type id - 1.
    types: Vec<Type>,
    structs: HashMap<String, u32>,
    /// Every enumerator of every (32-bit) enum: (name offset, value).
    enumerators: Vec<(u32, i32)>,
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

impl Btf {
    pub fn from_sys() -> Option<Btf> {
        Btf::parse(&std::fs::read("/sys/kernel/btf/vmlinux").ok()?)
    }

    /// Parse a little-endian BTF blob; `None` if it is not one or is cut short.
    pub fn parse(b: &[u8]) -> Option<Btf> {
        if u16::from_le_bytes(b.get(0..2)?.try_into().ok()?) != MAGIC {
            return None;
        }
        let hdr_len = u32_at(b, 4)? as usize;
        let (type_off, type_len) = (u32_at(b, 8)? as usize, u32_at(b, 12)? as usize);
        let (str_off, str_len) = (u32_at(b, 16)? as usize, u32_at(b, 20)? as usize);
        let tb = b.get(hdr_len + type_off..hdr_len + type_off + type_len)?;
        let strings = b.get(hdr_len + str_off..hdr_len + str_off + str_len)?.to_vec();
        let mut types = Vec::new();
        let mut enumerators = Vec::new();
        let mut at = 0;
        while at < tb.len() {
            let (name_off, info) = (u32_at(tb, at)?, u32_at(tb, at + 4)?);
            let (vlen, kind, kflag) = ((info & 0xffff) as usize, (info >> 24) & 0x1f, info >> 31);
            at += 12;
            let mut members = Vec::new();
            let extra = match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION => {
                    for i in 0..vlen {
                        let m = at + 12 * i;
                        let off = u32_at(tb, m + 8)?;
                        let bits = if kflag == 1 { off & 0xff_ffff } else { off };
                        members.push(Member { name_off: u32_at(tb, m)?, type_id: u32_at(tb, m + 4)?, bits });
                    }
                    12 * vlen
                }
                KIND_ENUM => {
                    for i in 0..vlen {
                        enumerators.push((u32_at(tb, at + 8 * i)?, u32_at(tb, at + 8 * i + 4)? as i32));
                    }
                    8 * vlen
                }
                KIND_FUNC_PROTO => 8 * vlen,
                KIND_DATASEC | KIND_ENUM64 => 12 * vlen,
                _ => 0,
            };
            at += extra;
            types.push(Type { name_off, kind, members });
        }
        if at != tb.len() {
            return None;
        }
        let mut btf = Btf { strings, types, structs: HashMap::new(), enumerators };
        for (i, t) in btf.types.iter().enumerate() {
            if t.kind == KIND_STRUCT && t.name_off != 0 {
                let name = btf.name(t.name_off).to_string();
                btf.structs.entry(name).or_insert(i as u32 + 1);
            }
        }
        Some(btf)
    }

    fn name(&self, off: u32) -> &str {
        let s = self.strings.get(off as usize..).unwrap_or(&[]);
        std::str::from_utf8(&s[..s.iter().position(|&c| c == 0).unwrap_or(s.len())]).unwrap_or("")
    }

    fn get(&self, id: u32) -> Option<&Type> {
        self.types.get((id as usize).checked_sub(1)?)
    }

    /// The value of enumerator `name` (C enumerators are unique across the kernel's enums).
    pub fn enum_value(&self, name: &str) -> Option<i32> {
        self.enumerators.iter().find(|&&(off, _)| self.name(off) == name).map(|&(_, v)| v)
    }

    /// The offsets of a program's globals, `(global, struct, member)` each; None when a member
    /// is missing.
    pub fn member_offsets(&self, fields: &[(&'static str, &str, &str)]) -> Option<Vec<(&'static str, u32)>> {
        fields.iter().map(|&(g, s, m)| self.member_offset(s, m).map(|o| (g, o))).collect()
    }

    /// Byte offset of `member` in `struct strukt`, looking inside anonymous members.
    pub fn member_offset(&self, strukt: &str, member: &str) -> Option<u32> {
        self.find(*self.structs.get(strukt)?, member, 0).map(|bits| bits / 8)
    }

    fn find(&self, id: u32, member: &str, depth: u32) -> Option<u32> {
        let t = self.get(id)?;
        if depth > 8 || !matches!(t.kind, KIND_STRUCT | KIND_UNION) {
            return None;
        }
        for m in &t.members {
            if m.name_off != 0 && self.name(m.name_off) == member {
                return Some(m.bits);
            }
        }
        t.members
            .iter()
            .filter(|m| m.name_off == 0)
            .find_map(|m| self.find(m.type_id, member, depth + 1).map(|b| b + m.bits))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A blob: `struct mm { long a; struct { long b; union { long c; }; }; }` plus an INT,
    /// a FUNC_PROTO and an ENUM in between to check the walk's strides.
    fn blob() -> Vec<u8> {
        let strs = b"\0mm\0a\0b\0c\0long\0e\0".to_vec();
        let (mm, a, b_, c, long, e) = (1u32, 4, 6, 8, 10, 15);
        let mut t: Vec<u32> = Vec::new();
        let info = |kind: u32, vlen: u32, kflag: u32| (kflag << 31) | (kind << 24) | vlen;
        // 1: long
        t.extend([long, info(KIND_INT, 0, 0), 8, 64]);
        // 2: func_proto (void)(long)
        t.extend([0, info(KIND_FUNC_PROTO, 1, 0), 0, 0, 1]);
        // 3: enum with two values
        t.extend([e, info(KIND_ENUM, 2, 0), 4, a, 0, b_, 1]);
        // 4: union { long c; }
        t.extend([0, info(KIND_UNION, 1, 0), 8, c, 1, 0]);
        // 5: struct { long b; union; } (kind_flag: bitfield-style offsets)
        t.extend([0, info(KIND_STRUCT, 2, 1), 16, b_, 1, 0, 0, 4, 64]);
        // 6: struct mm { long a; struct 5; }
        t.extend([mm, info(KIND_STRUCT, 2, 0), 24, a, 1, 0, 0, 5, 64]);
        let types: Vec<u8> = t.iter().flat_map(|v| v.to_le_bytes()).collect();
        let mut out = Vec::new();
        out.extend(MAGIC.to_le_bytes());
        out.extend([1u8, 0]);
        for v in [24u32, 0, types.len() as u32, types.len() as u32, strs.len() as u32] {
            out.extend(v.to_le_bytes());
        }
        out.extend(types);
        out.extend(strs);
        out
    }

    #[test]
    fn finds_members_through_anonymous_members() {
        let btf = Btf::parse(&blob()).expect("parses");
        assert_eq!(btf.member_offset("mm", "a"), Some(0));
        assert_eq!(btf.member_offset("mm", "b"), Some(8));
        assert_eq!(btf.member_offset("mm", "c"), Some(16));
        assert_eq!(btf.member_offset("mm", "d"), None);
        assert_eq!(btf.member_offset("nope", "a"), None);
        // The enum's enumerators reuse the names "a" and "b" with values 0 and 1.
        assert_eq!((btf.enum_value("a"), btf.enum_value("b"), btf.enum_value("zz")), (Some(0), Some(1), None));
    }

    #[test]
    fn rejects_bad_or_cut_blobs() {
        let b = blob();
        assert!(Btf::parse(&b[..b.len() - 3]).is_none());
        let mut bad = b.clone();
        bad[0] = 0;
        assert!(Btf::parse(&bad).is_none());
        assert!(Btf::parse(&[]).is_none());
    }

    #[test]
    fn this_kernels_task_and_mm() {
        let Some(btf) = Btf::from_sys() else { return };
        let mm = btf.member_offset("task_struct", "mm").expect("task_struct.mm");
        assert!(mm > 0);
        let code = btf.member_offset("mm_struct", "start_code").expect("mm_struct.start_code");
        assert_eq!(btf.member_offset("mm_struct", "end_code"), Some(code + 8));
        assert!(btf.member_offset("mm_struct", "saved_auxv").is_some());
        assert!(btf.member_offset("mm_struct", "env_end").is_some());
        // enum node_stat_item: NR_SHMEM comes after NR_FILE_PAGES (its value moves between kernels).
        let shmem = btf.enum_value("NR_SHMEM").expect("NR_SHMEM");
        assert!(shmem > btf.enum_value("NR_FILE_PAGES").expect("NR_FILE_PAGES"));
    }
}
