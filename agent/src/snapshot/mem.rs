//! The figures of a snapshot: one process, one mapping's VMAs, in KiB; their differences; and
//! the names of mappings (smem's, so that `agent snapshot -m` and `smem -m` line up).
use procfs::process::{MMapPath, MemoryMap};
use serde::{Deserialize, Serialize};

use crate::sampling::smaps::{kib, uss_kib};

/// RSS, PSS, USS (Private_Clean + Private_Dirty), swap and hugetlb (Shared_Hugetlb +
/// Private_Hugetlb, which the kernel keeps out of Rss) in KiB.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mem {
    pub rss_kib: u64,
    pub pss_kib: u64,
    pub uss_kib: u64,
    pub swap_kib: u64,
    pub hugetlb_kib: u64,
}

impl Mem {
    /// The figures of one smaps entry (a VMA, or the whole rollup).
    pub fn of(m: &MemoryMap) -> Mem {
        Mem {
            rss_kib: kib(m, "Rss"),
            pss_kib: kib(m, "Pss"),
            uss_kib: uss_kib(m),
            swap_kib: kib(m, "Swap"),
            hugetlb_kib: kib(m, "Shared_Hugetlb") + kib(m, "Private_Hugetlb"),
        }
    }

    /// `self - before`, field by field.
    pub fn since(self, before: Mem) -> Delta {
        let d = |a: u64, b: u64| a as i64 - b as i64;
        Delta {
            rss_kib: d(self.rss_kib, before.rss_kib),
            pss_kib: d(self.pss_kib, before.pss_kib),
            uss_kib: d(self.uss_kib, before.uss_kib),
            swap_kib: d(self.swap_kib, before.swap_kib),
            hugetlb_kib: d(self.hugetlb_kib, before.hugetlb_kib),
        }
    }
}

impl std::ops::AddAssign for Mem {
    fn add_assign(&mut self, o: Mem) {
        self.rss_kib += o.rss_kib;
        self.pss_kib += o.pss_kib;
        self.uss_kib += o.uss_kib;
        self.swap_kib += o.swap_kib;
        self.hugetlb_kib += o.hugetlb_kib;
    }
}

impl std::iter::Sum for Mem {
    fn sum<I: Iterator<Item = Mem>>(it: I) -> Mem {
        it.fold(Mem::default(), |mut a, m| {
            a += m;
            a
        })
    }
}

/// What a [`Mem`] gained (negative: lost) between two snapshots.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delta {
    pub rss_kib: i64,
    pub pss_kib: i64,
    pub uss_kib: i64,
    pub swap_kib: i64,
    pub hugetlb_kib: i64,
}

impl Delta {
    pub fn is_zero(&self) -> bool {
        *self == Delta::default()
    }
}

impl std::ops::AddAssign for Delta {
    fn add_assign(&mut self, o: Delta) {
        self.rss_kib += o.rss_kib;
        self.pss_kib += o.pss_kib;
        self.uss_kib += o.uss_kib;
        self.swap_kib += o.swap_kib;
        self.hugetlb_kib += o.hugetlb_kib;
    }
}

/// The name a VMA is summed under, as smem names it: the file's path (without the kernel's
/// ` (deleted)`), `[heap]`, `[stack]`, `[vdso]`, `[anon:NAME]`, `/SYSV0000abcd` for a SysV
/// segment, and `<anonymous>` for an anonymous region.
pub fn mapping_name(p: &MMapPath) -> String {
    match p {
        MMapPath::Path(p) => {
            let s = p.to_string_lossy();
            s.strip_suffix(" (deleted)").unwrap_or(&s).to_string()
        }
        MMapPath::Heap => "[heap]".into(),
        MMapPath::Stack => "[stack]".into(),
        MMapPath::TStack(tid) => format!("[stack:{tid}]"),
        MMapPath::Vdso => "[vdso]".into(),
        MMapPath::Vvar => "[vvar]".into(),
        MMapPath::Vsyscall => "[vsyscall]".into(),
        MMapPath::Rollup => "[rollup]".into(),
        MMapPath::Anonymous => "<anonymous>".into(),
        MMapPath::Vsys(key) => format!("/SYSV{:08x}", *key as u32),
        MMapPath::Other(s) => format!("[{s}]"),
        // MMapPath is non-exhaustive.
        #[allow(unreachable_patterns)]
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use procfs::{process::MemoryMaps, FromBufRead};

    use super::*;

    const SMAPS: &str = "\
7f0000000000-7f0000400000 rw-p 00000000 00:00 0                          
Size:               4096 kB
Rss:                3072 kB
Pss:                3072 kB
Private_Clean:         4 kB
Private_Dirty:      3068 kB
Swap:                 64 kB
7f0000400000-7f0000600000 rw-s 00000000 00:0f 7                          /dev/zero (deleted)
Size:               2048 kB
Rss:                   0 kB
Pss:                   0 kB
Shared_Hugetlb:     2048 kB
Private_Hugetlb:       0 kB
7f0000600000-7f0000601000 rw-s 00000000 00:01 32769                      /SYSV0000abcd (deleted)
Size:                  4 kB
Rss:                   4 kB
Pss:                   2 kB
Shared_Dirty:          4 kB
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0                          [stack]
Rss:                  12 kB
7ffd00100000-7ffd00101000 rw-p 00000000 00:00 0                          [anon:jit cache]
Rss:                   4 kB
";

    #[test]
    fn one_vma_in_kib_with_uss_and_hugetlb() {
        let maps = MemoryMaps::from_buf_read(SMAPS.as_bytes()).unwrap();
        let v: Vec<Mem> = maps.iter().map(Mem::of).collect();
        assert_eq!(v[0], Mem { rss_kib: 3072, pss_kib: 3072, uss_kib: 3072, swap_kib: 64, hugetlb_kib: 0 });
        assert_eq!(v[1], Mem { hugetlb_kib: 2048, ..Mem::default() });
        let total: Mem = v.iter().copied().sum();
        assert_eq!(total, Mem { rss_kib: 3092, pss_kib: 3074, uss_kib: 3072, swap_kib: 64, hugetlb_kib: 2048 });
    }

    #[test]
    fn names_like_smem() {
        let maps = MemoryMaps::from_buf_read(SMAPS.as_bytes()).unwrap();
        let names: Vec<String> = maps.iter().map(|m| mapping_name(&m.pathname)).collect();
        assert_eq!(names, ["<anonymous>", "/dev/zero", "/SYSV0000abcd", "[stack]", "[anon:jit cache]"]);
    }

    #[test]
    fn delta_is_after_minus_before() {
        let a = Mem { rss_kib: 10, pss_kib: 5, uss_kib: 1, swap_kib: 0, hugetlb_kib: 2048 };
        let b = Mem { rss_kib: 30, pss_kib: 4, uss_kib: 1, swap_kib: 8, hugetlb_kib: 0 };
        let d = b.since(a);
        assert_eq!(d, Delta { rss_kib: 20, pss_kib: -1, uss_kib: 0, swap_kib: 8, hugetlb_kib: -2048 });
        assert!(!d.is_zero() && a.since(a).is_zero());
    }
}
