//! The snapshot's tables: processes, mappings summed across processes (`-m`), users (`-u`),
//! their totals, and the order `--sort` asks for.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{mem::Mem, read::Proc, SortKey};

/// One mapping name across processes, like a line of `smem -m`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapRow {
    pub mapping: String,
    /// Processes that map it, and its VMAs in all of them.
    pub pids: u32,
    pub vmas: u32,
    #[serde(flatten)]
    pub mem: Mem,
}

/// One user's processes, like a line of `smem -u`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRow {
    pub uid: u32,
    pub user: String,
    pub processes: u32,
    #[serde(flatten)]
    pub mem: Mem,
}

/// The last line of a table: the sum of its rows, and the processes behind it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Total {
    pub processes: usize,
    pub rows: usize,
    #[serde(flatten)]
    pub mem: Mem,
    /// Processes skipped: not readable without root, and gone while we read.
    pub unreadable: usize,
    pub gone: usize,
}

/// The full smaps of `procs` summed by mapping name.
pub fn by_mapping<'a>(procs: impl IntoIterator<Item = &'a Proc>) -> Vec<MapRow> {
    let mut by: BTreeMap<&str, MapRow> = BTreeMap::new();
    for p in procs {
        for m in &p.maps {
            let row =
                by.entry(&m.mapping).or_insert_with(|| MapRow { mapping: m.mapping.clone(), ..MapRow::default() });
            row.pids += 1;
            row.vmas += m.vmas;
            row.mem += m.mem;
        }
    }
    by.into_values().collect()
}

/// `procs` summed by owner (`user` must be filled in).
pub fn by_user(procs: &[Proc]) -> Vec<UserRow> {
    let mut by: BTreeMap<u32, UserRow> = BTreeMap::new();
    for p in procs {
        let row = by.entry(p.uid).or_insert_with(|| UserRow { uid: p.uid, user: p.user.clone(), ..UserRow::default() });
        row.processes += 1;
        row.mem += p.mem;
    }
    by.into_values().collect()
}

/// What `--sort` needs of a row: its figures, its name, and the number `pid` sorts by.
pub trait Row {
    fn mem(&self) -> Mem;
    fn name(&self) -> &str;
    /// Ascending under `--sort pid`: the pid, the uid; for a mapping, the most mappers first.
    fn id(&self) -> u64;
}

impl Row for Proc {
    fn mem(&self) -> Mem {
        self.mem
    }
    fn name(&self) -> &str {
        &self.comm
    }
    fn id(&self) -> u64 {
        self.pid.into()
    }
}

impl Row for MapRow {
    fn mem(&self) -> Mem {
        self.mem
    }
    fn name(&self) -> &str {
        &self.mapping
    }
    fn id(&self) -> u64 {
        u64::MAX - u64::from(self.pids)
    }
}

impl Row for UserRow {
    fn mem(&self) -> Mem {
        self.mem
    }
    fn name(&self) -> &str {
        &self.user
    }
    fn id(&self) -> u64 {
        self.uid.into()
    }
}

/// Sizes largest first, `pid` and `comm` ascending; ties by id, then name.
pub fn sort<T: Row>(rows: &mut [T], key: SortKey) {
    let size = |m: Mem| match key {
        SortKey::Rss => m.rss_kib,
        SortKey::Pss => m.pss_kib,
        SortKey::Uss => m.uss_kib,
        SortKey::Swap => m.swap_kib,
        SortKey::Hugetlb => m.hugetlb_kib,
        SortKey::Pid | SortKey::Comm => 0,
    };
    rows.sort_by(|a, b| {
        let first = match key {
            SortKey::Pid => a.id().cmp(&b.id()),
            SortKey::Comm => a.name().cmp(b.name()),
            _ => size(b.mem()).cmp(&size(a.mem())),
        };
        first.then(a.id().cmp(&b.id())).then_with(|| a.name().cmp(b.name()))
    });
}

pub fn total<T: Row>(rows: &[T], processes: usize, unreadable: usize, gone: usize) -> Total {
    Total { processes, rows: rows.len(), mem: rows.iter().map(Row::mem).sum(), unreadable, gone }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::read::MapMem;

    fn mem(pss: u64, uss: u64) -> Mem {
        Mem { rss_kib: pss * 2, pss_kib: pss, uss_kib: uss, swap_kib: 0, hugetlb_kib: 0 }
    }

    fn proc(pid: u32, comm: &str, uid: u32, maps: &[(&str, u64)]) -> Proc {
        let maps: Vec<MapMem> =
            maps.iter().map(|&(n, pss)| MapMem { mapping: n.into(), vmas: 2, mem: mem(pss, pss / 2) }).collect();
        Proc {
            pid,
            comm: comm.into(),
            uid,
            user: format!("u{uid}"),
            mem: maps.iter().map(|m| m.mem).sum(),
            maps,
            ..Proc::default()
        }
    }

    #[test]
    fn mappings_sum_across_processes_and_count_mappers() {
        let procs = [proc(1, "a", 0, &[("libc.so", 100), ("[heap]", 40)]), proc(2, "b", 0, &[("libc.so", 60)])];
        let rows = by_mapping(&procs);
        assert_eq!(
            rows,
            vec![
                MapRow { mapping: "[heap]".into(), pids: 1, vmas: 2, mem: mem(40, 20) },
                MapRow { mapping: "libc.so".into(), pids: 2, vmas: 4, mem: mem(160, 80) },
            ]
        );
        let t = total(&rows, procs.len(), 3, 1);
        assert_eq!(t, Total { processes: 2, rows: 2, mem: mem(200, 100), unreadable: 3, gone: 1 });
    }

    #[test]
    fn users_sum_their_processes() {
        let procs = [proc(1, "a", 0, &[("x", 10)]), proc(5, "b", 1000, &[("x", 7)]), proc(9, "c", 0, &[("y", 3)])];
        let rows = by_user(&procs);
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].uid, rows[0].user.as_str(), rows[0].processes, rows[0].mem), (0, "u0", 2, mem(13, 6)));
        assert_eq!((rows[1].uid, rows[1].processes, rows[1].mem.pss_kib), (1000, 1, 7));
    }

    #[test]
    fn sorted_by_size_largest_first_by_pid_and_name_ascending() {
        let mut procs =
            vec![proc(3, "c", 0, &[("x", 10)]), proc(1, "b", 0, &[("x", 30)]), proc(2, "a", 0, &[("x", 10)])];
        let order = |p: &[Proc]| p.iter().map(|p| p.pid).collect::<Vec<_>>();
        sort(&mut procs, SortKey::Pss);
        assert_eq!(order(&procs), [1, 2, 3], "ties by pid");
        sort(&mut procs, SortKey::Comm);
        assert_eq!(order(&procs), [2, 1, 3]);
        sort(&mut procs, SortKey::Pid);
        assert_eq!(order(&procs), [1, 2, 3]);
        let mut rows = by_mapping(&[proc(1, "a", 0, &[("x", 1), ("y", 50)]), proc(2, "b", 0, &[("x", 1)])]);
        sort(&mut rows, SortKey::Pid);
        assert_eq!(rows[0].mapping, "x", "--sort pid: the most mapped first");
        sort(&mut rows, SortKey::Uss);
        assert_eq!(rows[0].mapping, "y");
    }
}
