//! A watched cgroup's memory, explained line by line: once per smaps interval, the cgroup's own
//! counter (`memory.current` on v2, `memory.usage_in_bytes` on v1) and `memory.stat`, set
//! against what its member processes map (their smaps PSS by kind, else their ledger RSS). What
//! no member maps is the rest: shmem (tmpfs and `/dev/shm` files nobody maps), page cache
//! nobody maps, and kernel memory; the biggest such files are named where the kernel lets us
//! (`cgroup_files.rs`). A cgroup whose counter grows steadily while its members' pages do not
//! explain it gets a cgroup-level `leak` record (`cgroup_verdict.rs`).
//!
//! On a hybrid machine (v1 memory controller, v2 membership) the memory side of a v2 cgroup is
//! its members' v1 memory cgroup (from `/proc/PID/cgroup`): the record says which directory
//! was read. Never the memory hierarchy's root: members in the root memory cgroup (or in ones
//! that share only the root) leave the cgroup without memory counters of its own, which the
//! `start` line says once and each record says in `no_memory_cgroup` (no cgroup-level verdict:
//! the host's totals would blame the cgroup for unrelated processes).
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use serde::Serialize;

use super::Judge;
use crate::{
    attribution::Ledger,
    targets::{
        cgroup::{self, Cgroup, Hierarchy},
        cgroup_watch::CgroupWatch,
    },
};

/// Bytes of what the members map, by kind.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Explained {
    pub anon_bytes: u64,
    pub shmem_bytes: u64,
    pub file_bytes: u64,
}

/// Bytes the cgroup is charged for that no member maps.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Unmapped {
    pub shmem_bytes: u64,
    pub file_bytes: u64,
    pub kernel_bytes: u64,
}

/// A file charged to nobody's mappings: a tmpfs file of a member's mounts, or one it holds open.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct UnmappedFile {
    /// As the member sees it (its mount namespace), `(deleted)` when unlinked.
    pub path: String,
    /// Its pages in memory (tmpfs: blocks allocated).
    pub bytes: u64,
    /// `mount` (found walking a member's tmpfs mount) or `fd` (a member holds it open).
    pub via: &'static str,
}

/// The `cgroup` record.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct CgroupRecord {
    /// The watched cgroup directory.
    pub path: String,
    /// Live watched processes in it (descendant cgroups included).
    pub members: usize,
    /// The memory cgroup directory its counters were read from (itself, or on a hybrid machine
    /// its members' v1 memory cgroup); null when none could be found.
    pub memory_source: Option<String>,
    /// Why `memory_source` is null: no memory counters, no unmapped lines, no cgroup verdict.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub no_memory_cgroup: Option<&'static str>,
    /// v2: `memory.current`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_current_bytes: Option<u64>,
    /// v1: `memory.usage_in_bytes`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage_in_bytes: Option<u64>,
    /// `memory.stat`, by name.
    pub stat: BTreeMap<String, u64>,
    pub explained: Explained,
    pub unmapped: Unmapped,
    /// The biggest unmapped files that could be named, biggest first.
    pub files: Vec<UnmappedFile>,
}

impl CgroupRecord {
    /// The cgroup's counter: memory.current or usage_in_bytes.
    pub fn usage(&self) -> Option<u64> {
        self.memory_current_bytes.or(self.usage_in_bytes)
    }
}

/// A memory cgroup's counters as read.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MemoryFiles {
    pub dir: PathBuf,
    pub v2: bool,
    pub usage: u64,
    pub stat: BTreeMap<String, u64>,
    /// v1: `memory.kmem.usage_in_bytes`, when the kernel keeps it.
    pub kmem: Option<u64>,
}

pub fn parse_stat(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

fn read_u64(p: &Path) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

/// Read a memory cgroup's counters.
pub fn read_memory(dir: &Path) -> Option<MemoryFiles> {
    let stat = parse_stat(&std::fs::read_to_string(dir.join("memory.stat")).ok()?);
    if let Some(usage) = read_u64(&dir.join("memory.current")) {
        return Some(MemoryFiles { dir: dir.into(), v2: true, usage, stat, kmem: None });
    }
    let usage = read_u64(&dir.join("memory.usage_in_bytes"))?;
    Some(MemoryFiles {
        dir: dir.into(),
        v2: false,
        usage,
        stat,
        kmem: read_u64(&dir.join("memory.kmem.usage_in_bytes")),
    })
}

/// The lines of memory.stat the record reasons with, in bytes: (anon, shmem, file not shmem,
/// kernel). v1 counts descendants in its `total_*` lines.
pub fn kinds(m: &MemoryFiles) -> (u64, u64, u64, u64) {
    let get = |k: &str| m.stat.get(k).copied().unwrap_or(0);
    if m.v2 {
        let kernel = m.stat.get("kernel").copied().unwrap_or_else(|| {
            ["kernel_stack", "pagetables", "sec_pagetables", "percpu", "sock", "slab"].iter().map(|k| get(k)).sum()
        });
        (get("anon"), get("shmem"), get("file").saturating_sub(get("shmem")), kernel)
    } else {
        let v1 = |k: &str| m.stat.get(&format!("total_{k}")).or_else(|| m.stat.get(k)).copied().unwrap_or(0);
        let (anon, shmem, cache) = (v1("rss"), v1("shmem"), v1("cache"));
        let kernel = m.kmem.filter(|k| *k > 0).unwrap_or_else(|| m.usage.saturating_sub(anon + cache));
        (anon, shmem, cache.saturating_sub(shmem), kernel)
    }
}

/// Why a watched cgroup has no memory cgroup to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoMemory {
    /// No member's memory cgroup could be found (no live member): the last one read stands.
    NoMember,
    /// Its members share only the memory hierarchy's root: the host's totals, never read.
    HierarchyRoot,
}

impl NoMemory {
    pub fn reason(self) -> &'static str {
        match self {
            NoMemory::NoMember => "no member's memory cgroup found",
            NoMemory::HierarchyRoot => {
                "its members share no memory cgroup below the memory hierarchy's root (that would be the host's totals)"
            }
        }
    }
}

/// Where to read `c`'s memory: its own directory when its hierarchy has the memory controller,
/// else the memory cgroup its members share (the deepest directory above all of theirs).
pub fn memory_dir(c: &Cgroup, members: impl IntoIterator<Item = u32>) -> Result<PathBuf, NoMemory> {
    if has_memory(c) {
        return Ok(c.dir.clone());
    }
    let dirs: Vec<PathBuf> = members.into_iter().take(64).filter_map(cgroup::memory_dir_of).collect();
    let roots: Vec<PathBuf> = cgroup::mounts().into_iter().map(|m| m.point).collect();
    shared_memory_dir(&dirs, &roots)
}

fn has_memory(c: &Cgroup) -> bool {
    match &c.hierarchy {
        Hierarchy::V2 { memory } => *memory,
        Hierarchy::V1 { controllers } => controllers.iter().any(|x| x == "memory"),
    }
}

/// The deepest directory above all of `dirs`, unless that is a cgroup mount point (`roots`) or
/// above one.
pub fn shared_memory_dir(dirs: &[PathBuf], roots: &[PathBuf]) -> Result<PathBuf, NoMemory> {
    let first = dirs.first().ok_or(NoMemory::NoMember)?;
    let mut common: Vec<_> = first.components().collect();
    for d in &dirs[1..] {
        let n = common.iter().zip(d.components()).take_while(|(a, b)| **a == *b).count();
        common.truncate(n);
    }
    let common: PathBuf = common.iter().collect();
    match roots.iter().any(|r| common.starts_with(r) && common != *r) {
        true => Ok(common),
        false => Err(NoMemory::HierarchyRoot),
    }
}

/// The watched cgroups for `start`, each with a note when its members share no memory cgroup
/// of their own (said once here; each `cgroup` record says it again in `no_memory_cgroup`).
pub fn describe(w: &CgroupWatch, moves: bool) -> Vec<String> {
    w.cgroups
        .iter()
        .enumerate()
        .map(|(i, c)| match memory_dir(c, w.members(i).iter().copied()) {
            Err(NoMemory::HierarchyRoot) => format!(
                "{}; memory: none of its own, {}: no memory counters and no cgroup-level leak verdict",
                c.describe_with(moves),
                NoMemory::HierarchyRoot.reason()
            ),
            _ => c.describe_with(moves),
        })
        .collect()
}

/// What the members map, by kind: their last smaps reading (PSS, so a page two members share
/// counts once), else the ledger's RSS of their current mm.
pub fn explained(members: &[u32], ledger: &Ledger, judge: &Judge) -> Explained {
    let mut e = Explained::default();
    for &pid in members {
        if let Some(m) = judge.last_mem(pid) {
            e.anon_bytes += m.pss_anon_kib * 1024;
            e.shmem_bytes += m.pss_shmem_kib * 1024;
            e.file_bytes += m.pss_file_kib * 1024;
        } else if let Some(p) = ledger.get(pid) {
            // The mm it runs on is the last one it started using.
            let Some(c) = p.mms.last() else { continue };
            let b = |m: u32| c.rss[m as usize].max(0) as u64;
            e.anon_bytes += b(agent_common::member::ANON);
            e.shmem_bytes += b(agent_common::member::SHMEM);
            e.file_bytes += b(agent_common::member::FILE);
        }
    }
    e
}

/// The record of one cgroup from its memory files and its members' explained pages.
pub fn record(
    c: &Cgroup,
    members: usize,
    mem: Option<&MemoryFiles>,
    explained: Explained,
    files: Vec<UnmappedFile>,
) -> CgroupRecord {
    let mut r = CgroupRecord {
        path: c.dir.display().to_string(),
        members,
        memory_source: mem.map(|m| m.dir.display().to_string()),
        no_memory_cgroup: None,
        memory_current_bytes: mem.filter(|m| m.v2).map(|m| m.usage),
        usage_in_bytes: mem.filter(|m| !m.v2).map(|m| m.usage),
        stat: mem.map(|m| m.stat.clone()).unwrap_or_default(),
        explained,
        unmapped: Unmapped::default(),
        files,
    };
    if let Some(m) = mem {
        let (_, shmem, file, kernel) = kinds(m);
        r.unmapped = Unmapped {
            shmem_bytes: shmem.saturating_sub(r.explained.shmem_bytes),
            file_bytes: file.saturating_sub(r.explained.file_bytes),
            kernel_bytes: kernel,
        };
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(v2: bool, stat: &str, usage: u64, kmem: Option<u64>) -> MemoryFiles {
        MemoryFiles { dir: "/x".into(), v2, usage, stat: parse_stat(stat), kmem }
    }

    #[test]
    fn v2_kinds_take_shmem_out_of_file() {
        let m = files(true, "anon 100\nfile 700\nkernel 50\nshmem 300\nfile_mapped 10\n", 900, None);
        assert_eq!(kinds(&m), (100, 300, 400, 50));
        // An older kernel without the `kernel` line: its parts.
        let m = files(true, "anon 1\nfile 2\nkernel_stack 3\npagetables 4\nslab 5\nsock 6\npercpu 7\n", 0, None);
        assert_eq!(kinds(&m).3, 25);
    }

    #[test]
    fn v1_kinds_prefer_the_hierarchical_totals() {
        let m = files(false, "cache 0\nrss 0\nshmem 0\ntotal_cache 800\ntotal_rss 100\ntotal_shmem 300\n", 1000, None);
        assert_eq!(kinds(&m), (100, 300, 500, 100));
        let m = files(false, "cache 800\nrss 100\nshmem 300\n", 1000, Some(40));
        assert_eq!(kinds(&m), (100, 300, 500, 40));
    }

    #[test]
    fn members_memory_is_never_the_hierarchy_root() {
        let roots = [PathBuf::from("/sys/fs/cgroup/memory"), PathBuf::from("/sys/fs/cgroup/unified")];
        let p = |s: &str| PathBuf::from(s);
        // Members in one memory cgroup, or in two under a shared one: that directory.
        assert_eq!(shared_memory_dir(&[p("/sys/fs/cgroup/memory/app")], &roots), Ok(p("/sys/fs/cgroup/memory/app")));
        let two = [p("/sys/fs/cgroup/memory/app/a"), p("/sys/fs/cgroup/memory/app/b")];
        assert_eq!(shared_memory_dir(&two, &roots), Ok(p("/sys/fs/cgroup/memory/app")));
        // In the root memory cgroup, or in two whose only common ancestor is the root: none.
        let root = Err(NoMemory::HierarchyRoot);
        assert_eq!(shared_memory_dir(&[p("/sys/fs/cgroup/memory")], &roots), root);
        assert_eq!(shared_memory_dir(&[p("/sys/fs/cgroup/memory/a"), p("/sys/fs/cgroup/memory")], &roots), root);
        assert_eq!(shared_memory_dir(&[p("/sys/fs/cgroup/memory/a"), p("/sys/fs/cgroup/memory/b")], &roots), root);
        // Nothing under a cgroup mount at all (never expected): none either.
        assert_eq!(shared_memory_dir(&[p("/elsewhere/x")], &roots), root);
        assert_eq!(shared_memory_dir(&[], &roots), Err(NoMemory::NoMember));
    }

    #[test]
    fn a_record_without_memory_says_why_and_has_no_counters() {
        let c = Cgroup {
            dir: "/sys/fs/cgroup/unified/t".into(),
            rel: "/t".into(),
            mount: "/sys/fs/cgroup/unified".into(),
            hierarchy: Hierarchy::V2 { memory: false },
            hierarchy_id: 0,
        };
        let e = Explained { anon_bytes: 30, shmem_bytes: 20, file_bytes: 15 };
        let mut r = record(&c, 1, None, e, Vec::new());
        r.no_memory_cgroup = Some(NoMemory::HierarchyRoot.reason());
        assert_eq!((r.usage(), &r.unmapped), (None, &Unmapped::default()));
        let v = serde_json::to_value(&r).unwrap();
        assert!(v["memory_source"].is_null(), "{v}");
        assert!(v["no_memory_cgroup"].as_str().unwrap().contains("hierarchy's root"), "{v}");
        // The verdict needs a counter: none is ever flagged.
        let (mut d, p) =
            (crate::judgement::cgroup_verdict::CgroupDetector::default(), crate::judgement::Params::default());
        assert!((0..200).all(|t| d.observe(t as f64 * 10.0, &r, &p).is_none()));
    }

    #[test]
    fn unmapped_is_what_members_do_not_map() {
        let c = Cgroup {
            dir: "/sys/fs/cgroup/memory/t".into(),
            rel: "/t".into(),
            mount: "/sys/fs/cgroup/memory".into(),
            hierarchy: Hierarchy::V1 { controllers: vec!["memory".into()] },
            hierarchy_id: 4,
        };
        let m = files(false, "total_cache 80\ntotal_rss 30\ntotal_shmem 70\n", 120, Some(10));
        let e = Explained { anon_bytes: 30, shmem_bytes: 20, file_bytes: 15 };
        let r = record(&c, 2, Some(&m), e, Vec::new());
        assert_eq!(r.unmapped, Unmapped { shmem_bytes: 50, file_bytes: 0, kernel_bytes: 10 });
        assert_eq!((r.usage_in_bytes, r.memory_current_bytes, r.usage()), (Some(120), None, Some(120)));
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["stat"]["total_shmem"], 70);
        assert!(v.get("memory_current_bytes").is_none(), "{v}");
    }
}
