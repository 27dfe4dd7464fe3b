//! `agent diff A B`: what grew between two saved snapshots, by process and by mapping, most
//! PSS growth first. A process is the same one in both when its pid and start time are (in the
//! same boot); a process left over on either side is then paired with one of the same name (a
//! restart); what remains is new or gone.
use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::Serialize;

use super::{
    aggregate::by_mapping,
    mem::{Delta, Mem},
    read::Proc,
    save::Saved,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Match {
    /// Same pid and start time.
    Pid,
    /// Same name, another process (restarted).
    Comm,
    New,
    Gone,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ProcDiff {
    /// The later process's pid (the earlier one's if it is gone).
    pub pid: u32,
    /// The earlier process's pid, when there is one.
    pub before_pid: Option<u32>,
    pub comm: String,
    #[serde(rename = "match")]
    pub matched: Match,
    pub delta: Delta,
    pub before: Mem,
    pub after: Mem,
    /// The mapping whose PSS grew most in this process, and by how much (when both snapshots
    /// hold mappings and one grew).
    pub top_mapping: Option<String>,
    pub top_mapping_delta_pss_kib: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MapDiff {
    pub mapping: String,
    pub pids_before: u32,
    pub pids_after: u32,
    pub delta: Delta,
    pub before: Mem,
    pub after: Mem,
}

/// The process pairs of two snapshots: (before, after) indices.
pub fn pair(before: &[Proc], after: &[Proc], same_boot: bool) -> Vec<(Option<usize>, Option<usize>, Match)> {
    let mut out = Vec::new();
    let mut left_before: Vec<bool> = vec![true; before.len()];
    let mut left_after = Vec::new();
    let by_id: HashMap<(u32, u64), usize> = if same_boot {
        before.iter().enumerate().map(|(i, p)| ((p.pid, p.start_time), i)).collect()
    } else {
        HashMap::new()
    };
    for (j, p) in after.iter().enumerate() {
        match by_id.get(&(p.pid, p.start_time)) {
            Some(&i) if left_before[i] => {
                left_before[i] = false;
                out.push((Some(i), Some(j), Match::Pid));
            }
            _ => left_after.push(j),
        }
    }
    let mut by_comm: HashMap<&str, VecDeque<usize>> = HashMap::new();
    for (i, p) in before.iter().enumerate().filter(|&(i, _)| left_before[i]) {
        by_comm.entry(&p.comm).or_default().push_back(i);
    }
    for j in left_after {
        match by_comm.get_mut(after[j].comm.as_str()).and_then(VecDeque::pop_front) {
            Some(i) => {
                left_before[i] = false;
                out.push((Some(i), Some(j), Match::Comm));
            }
            None => out.push((None, Some(j), Match::New)),
        }
    }
    out.extend((0..before.len()).filter(|&i| left_before[i]).map(|i| (Some(i), None, Match::Gone)));
    out
}

/// The mapping of `after` whose PSS grew most over `before`'s mapping of the same name.
fn top_mapping(before: Option<&Proc>, after: Option<&Proc>) -> Option<(String, i64)> {
    let mut by: BTreeMap<&str, i64> = BTreeMap::new();
    for m in after.map_or(&[][..], |p| &p.maps) {
        *by.entry(&m.mapping).or_default() += m.mem.pss_kib as i64;
    }
    for m in before.map_or(&[][..], |p| &p.maps) {
        *by.entry(&m.mapping).or_default() -= m.mem.pss_kib as i64;
    }
    let (name, d) = by.into_iter().max_by_key(|&(n, d)| (d, std::cmp::Reverse(n)))?;
    (d > 0).then(|| (name.to_string(), d))
}

/// Most PSS growth first, then most RSS growth, then by pid / name.
fn by_growth(a: &Delta, b: &Delta) -> std::cmp::Ordering {
    b.pss_kib.cmp(&a.pss_kib).then(b.rss_kib.cmp(&a.rss_kib))
}

/// The processes that changed (or came, or went), most PSS growth first.
pub fn procs(before: &Saved, after: &Saved) -> Vec<ProcDiff> {
    let same_boot = before.header.boot_id == after.header.boot_id;
    let mut out: Vec<ProcDiff> = pair(&before.procs, &after.procs, same_boot)
        .into_iter()
        .map(|(i, j, matched)| {
            let (b, a) = (i.map(|i| &before.procs[i]), j.map(|j| &after.procs[j]));
            let (bm, am) = (b.map_or(Mem::default(), |p| p.mem), a.map_or(Mem::default(), |p| p.mem));
            let top = top_mapping(b, a);
            let named = a.or(b).expect("a pair has a side");
            ProcDiff {
                pid: named.pid,
                before_pid: b.map(|p| p.pid),
                comm: named.comm.clone(),
                matched,
                delta: am.since(bm),
                before: bm,
                after: am,
                top_mapping_delta_pss_kib: top.as_ref().map(|t| t.1),
                top_mapping: top.map(|t| t.0),
            }
        })
        .filter(|d| d.matched != Match::Pid || !d.delta.is_zero())
        .collect();
    out.sort_by(|a, b| by_growth(&a.delta, &b.delta).then(a.pid.cmp(&b.pid)));
    out
}

/// The mappings (summed across processes) that changed, most PSS growth first.
pub fn mappings(before: &Saved, after: &Saved) -> Vec<MapDiff> {
    let mut by: BTreeMap<String, MapDiff> = BTreeMap::new();
    let empty = |name: &str| MapDiff {
        mapping: name.to_string(),
        pids_before: 0,
        pids_after: 0,
        delta: Delta::default(),
        before: Mem::default(),
        after: Mem::default(),
    };
    for r in by_mapping(&before.procs) {
        let e = by.entry(r.mapping.clone()).or_insert_with(|| empty(&r.mapping));
        (e.pids_before, e.before) = (r.pids, r.mem);
    }
    for r in by_mapping(&after.procs) {
        let e = by.entry(r.mapping.clone()).or_insert_with(|| empty(&r.mapping));
        (e.pids_after, e.after) = (r.pids, r.mem);
    }
    let mut out: Vec<MapDiff> = by
        .into_values()
        .map(|mut d| {
            d.delta = d.after.since(d.before);
            d
        })
        .filter(|d| !d.delta.is_zero() || d.pids_before != d.pids_after)
        .collect();
    out.sort_by(|a, b| by_growth(&a.delta, &b.delta).then_with(|| a.mapping.cmp(&b.mapping)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{read::MapMem, save::Header};

    fn proc(pid: u32, start: u64, comm: &str, maps: &[(&str, u64)]) -> Proc {
        let maps: Vec<MapMem> = maps
            .iter()
            .map(|&(n, pss)| MapMem {
                mapping: n.into(),
                vmas: 1,
                mem: Mem { rss_kib: pss, pss_kib: pss, uss_kib: pss, ..Mem::default() },
            })
            .collect();
        Proc {
            pid,
            start_time: start,
            comm: comm.into(),
            mem: maps.iter().map(|m| m.mem).sum(),
            maps,
            ..Proc::default()
        }
    }

    fn saved(boot: &str, procs: Vec<Proc>) -> Saved {
        Saved { header: Header { boot_id: boot.into(), ..Header::default() }, procs }
    }

    #[test]
    fn pairs_by_pid_and_start_then_by_name() {
        let before =
            [proc(1, 10, "init", &[]), proc(50, 100, "web", &[]), proc(60, 200, "db", &[]), proc(70, 5, "cron", &[])];
        // web restarted as 80; pid 60 now belongs to another db (new start time); cron is gone.
        let after =
            [proc(1, 10, "init", &[]), proc(60, 900, "db", &[]), proc(80, 800, "web", &[]), proc(90, 950, "new", &[])];
        let pairs = pair(&before, &after, true);
        assert_eq!(
            pairs,
            vec![
                (Some(0), Some(0), Match::Pid),
                (Some(2), Some(1), Match::Comm),
                (Some(1), Some(2), Match::Comm),
                (None, Some(3), Match::New),
                (Some(3), None, Match::Gone),
            ]
        );
        // Another boot: pids mean nothing, names pair them.
        let other = pair(&before, &after, false);
        assert_eq!(other[0], (Some(0), Some(0), Match::Comm));
        assert!(other.contains(&(Some(2), Some(1), Match::Comm)));
    }

    #[test]
    fn what_grew_by_process_and_by_mapping() {
        let before = saved(
            "b",
            vec![
                proc(1, 1, "steady", &[("libc", 100)]),
                proc(2, 2, "leaky", &[("libc", 100), ("[heap]", 1000)]),
                proc(3, 3, "quits", &[("libc", 50)]),
            ],
        );
        let after = saved(
            "b",
            vec![
                proc(1, 1, "steady", &[("libc", 100)]),
                proc(2, 2, "leaky", &[("libc", 80), ("[heap]", 33000)]),
                proc(4, 4, "starts", &[("libc", 70), ("<anonymous>", 500)]),
            ],
        );
        let p = procs(&before, &after);
        let rows: Vec<(u32, Match, i64)> = p.iter().map(|d| (d.pid, d.matched, d.delta.pss_kib)).collect();
        assert_eq!(
            rows,
            [(2, Match::Pid, 31980), (4, Match::New, 570), (3, Match::Gone, -50)],
            "unchanged steady left out"
        );
        assert_eq!((p[0].top_mapping.as_deref(), p[0].top_mapping_delta_pss_kib), (Some("[heap]"), Some(32000)));
        assert_eq!(p[0].before.pss_kib, 1100);
        assert_eq!(p[2].top_mapping, None, "nothing grew in a gone process");
        let m = mappings(&before, &after);
        let rows: Vec<(&str, i64, u32, u32)> =
            m.iter().map(|d| (d.mapping.as_str(), d.delta.pss_kib, d.pids_before, d.pids_after)).collect();
        assert_eq!(rows, [("[heap]", 32000, 1, 1), ("<anonymous>", 500, 0, 1)], "libc: 250 KiB in 3 processes in both");
        let total: i64 = p.iter().map(|d| d.delta.pss_kib).sum();
        assert_eq!(total, m.iter().map(|d| d.delta.pss_kib).sum::<i64>());
    }
}
