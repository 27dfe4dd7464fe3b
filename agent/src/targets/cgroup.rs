//! `--cgroup PATH`: the processes of a cgroup directory and of its descendants, existing and
//! future, on either hierarchy.
//!
//! - **Moves** (a write to `cgroup.procs`: `docker exec`, `systemd-run --scope`), on either
//!   hierarchy: `cgroup:cgroup_attach_task` names the destination's hierarchy and id, and the
//!   kernel joins or drops the process as it moves (agent-ebpf `cgroup_attach.rs`).
//! - **v2** (a `cgroup2` mount, here `/sys/fs/cgroup/unified`): also at fork and exec, by the
//!   task's cgroup id or an ancestor's at a watched level (agent-ebpf `cgroup.rs`), which covers
//!   cgroups created under a watched one since the map was filled. BPF has no such id for a v1
//!   hierarchy at fork and exec.
//! - Both: `cgroup.procs` re-read at every interval (descendants included), for what the kernel
//!   did not see (the hook missing, a map full) and departures; [`Cgroup::kernel_keys`] fills
//!   the kernel's map.
//!
//! Pure parsing (mountinfo, `/proc/PID/cgroup`) is kept apart from the reads, and tested.
use std::{
    collections::BTreeSet,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use crate::error::AgentError;

/// Directories walked under one watched cgroup at most (a runaway tree must not stall a tick).
const MAX_DIRS: usize = 4096;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hierarchy {
    /// The unified hierarchy; `memory`: it has the memory controller (`memory.current`).
    V2 { memory: bool },
    /// A v1 hierarchy with these controllers (`memory`, `cpu`, `name=systemd`...).
    V1 { controllers: Vec<String> },
}

/// A cgroup directory as the agent watches it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cgroup {
    /// The directory, symlinks resolved.
    pub dir: PathBuf,
    /// Its path inside its hierarchy (`/` for the root), as `/proc/PID/cgroup` writes it.
    pub rel: String,
    /// Where its hierarchy is mounted.
    pub mount: PathBuf,
    pub hierarchy: Hierarchy,
    /// Its hierarchy's id, as `/proc/PID/cgroup` and the kernel number it (0: v2).
    pub hierarchy_id: u32,
}

/// One cgroup mount of `/proc/self/mountinfo`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupMount {
    pub point: PathBuf,
    /// The root of the hierarchy this mount shows (`/` unless a namespace or bind mount).
    pub root: String,
    pub hierarchy: Hierarchy,
}

/// The cgroup mounts in a mountinfo text.
pub fn parse_mountinfo(text: &str) -> Vec<CgroupMount> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else { continue };
        let l: Vec<&str> = left.split(' ').collect();
        let r: Vec<&str> = right.split(' ').collect();
        if l.len() < 5 || r.len() < 3 {
            continue;
        }
        let point = PathBuf::from(unescape(l[4]));
        let root = unescape(l[3]);
        let hierarchy = match r[0] {
            "cgroup2" => {
                let memory = std::fs::read_to_string(point.join("cgroup.controllers"))
                    .is_ok_and(|c| c.split_whitespace().any(|x| x == "memory"));
                Hierarchy::V2 { memory }
            }
            "cgroup" => Hierarchy::V1 {
                controllers: r[2]
                    .split(',')
                    .filter(|o| !matches!(*o, "rw" | "ro" | "relatime" | "noatime" | "nosuid" | "nodev" | "noexec"))
                    .filter(|o| !o.starts_with("release_agent=") && !o.starts_with("clone_children"))
                    .map(str::to_string)
                    .collect(),
            },
            _ => continue,
        };
        out.push(CgroupMount { point, root, hierarchy });
    }
    out
}

/// mountinfo escapes spaces and the like as `\040`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `/proc/PID/cgroup` lines: (hierarchy id, controllers, path). The v2 line is `0::PATH`.
pub fn parse_proc_cgroup(text: &str) -> Vec<(u32, Vec<String>, String)> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ':');
            let id = it.next()?.parse().ok()?;
            let ctl = it.next()?;
            let path = it.next()?.to_string();
            let ctl = if ctl.is_empty() { Vec::new() } else { ctl.split(',').map(str::to_string).collect() };
            Some((id, ctl, path))
        })
        .collect()
}

/// The cgroup mounts this process sees.
pub fn mounts() -> Vec<CgroupMount> {
    parse_mountinfo(&std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default())
}

impl Cgroup {
    /// The cgroup at `path`, refused with one line naming the fix when it is not one.
    pub fn resolve(path: &Path) -> Result<Cgroup, AgentError> {
        let dir = std::fs::canonicalize(path).map_err(|e| {
            AgentError::Usage(format!(
                "--cgroup {}: {e}: give a cgroup directory, e.g. /sys/fs/cgroup/unified/NAME (v2) or /sys/fs/cgroup/memory/NAME (v1)",
                path.display()
            ))
        })?;
        let m = mounts()
            .into_iter()
            .filter(|m| dir.starts_with(&m.point))
            .max_by_key(|m| m.point.as_os_str().len())
            .filter(|_| dir.join("cgroup.procs").exists())
            .ok_or_else(|| {
                AgentError::Usage(format!(
                    "--cgroup {}: not a cgroup directory (no cgroup.procs under a cgroup mount): see `grep cgroup /proc/self/mounts`",
                    path.display()
                ))
            })?;
        let inside = dir.strip_prefix(&m.point).expect("under the mount");
        let base = m.root.trim_end_matches('/');
        let rel = format!("{base}/{}", inside.display());
        let rel = if rel.len() > 1 { rel.trim_end_matches('/').to_string() } else { rel };
        let own = parse_proc_cgroup(&std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default());
        let hierarchy_id = hierarchy_id(&m.hierarchy, &own).ok_or_else(|| {
            AgentError::Usage(format!("--cgroup {}: its hierarchy is not in /proc/self/cgroup", path.display()))
        })?;
        Ok(Cgroup { dir, rel, mount: m.point, hierarchy: m.hierarchy, hierarchy_id })
    }

    pub fn is_v2(&self) -> bool {
        matches!(self.hierarchy, Hierarchy::V2 { .. })
    }

    /// [`Cgroup::describe_with`] when the kernel reports moves between cgroups (the usual case:
    /// `cgroup:cgroup_attach_task` is attached).
    pub fn describe(&self) -> String {
        self.describe_with(true)
    }

    /// The cgroup, its hierarchy and how its membership is followed, for `start`; `moves`: the
    /// kernel reports moves between cgroups (`cgroup:cgroup_attach_task` is attached).
    pub fn describe_with(&self, moves: bool) -> String {
        let how = match (&self.hierarchy, moves) {
            (Hierarchy::V2 { .. }, true) => {
                "v2: moves in and out followed in the kernel as they happen, joins also at fork and exec".to_string()
            }
            (Hierarchy::V2 { .. }, false) => "v2: joins followed in the kernel at fork and exec".to_string(),
            (Hierarchy::V1 { controllers }, true) => {
                format!("v1 {}: moves in and out followed in the kernel as they happen", controllers.join(","))
            }
            (Hierarchy::V1 { controllers }, false) => {
                format!("v1 {}: no BPF cgroup id at fork and exec on v1", controllers.join(","))
            }
        };
        format!("{} ({how}; cgroup.procs re-read every interval)", self.dir.display())
    }

    /// This cgroup's directory and its descendants', with their depth below the hierarchy root.
    fn dirs(&self) -> Vec<(PathBuf, u32)> {
        let depth0 = self.rel.split('/').filter(|c| !c.is_empty()).count() as u32;
        let mut out = vec![(self.dir.clone(), depth0)];
        let mut i = 0;
        while i < out.len() && out.len() < MAX_DIRS {
            let (d, depth) = out[i].clone();
            if let Ok(rd) = std::fs::read_dir(&d) {
                for e in rd.flatten() {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        out.push((e.path(), depth + 1));
                    }
                }
            }
            i += 1;
        }
        out
    }

    /// The processes in it and in its descendants now.
    pub fn members(&self) -> BTreeSet<u32> {
        let mut out = BTreeSet::new();
        for (d, _) in self.dirs() {
            if let Ok(s) = std::fs::read_to_string(d.join("cgroup.procs")) {
                out.extend(s.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
            }
        }
        out
    }

    /// The kernel map's keys (`agent_common::cgroup_key`: hierarchy and cgroup id) of it and
    /// its descendants.
    pub fn kernel_keys(&self) -> Vec<u64> {
        let ids = self.dirs().into_iter().filter_map(|(d, _)| Some(std::fs::metadata(d).ok()?.ino()));
        ids.map(|id| agent_common::cgroup_key(self.hierarchy_id, id)).collect()
    }

    /// Is this cgroup, or one below it, `pid`'s (its `/proc/PID/cgroup` line of this hierarchy)?
    pub fn holds(&self, pid: u32) -> bool {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/cgroup")) else { return false };
        let below = format!("{}/", self.rel);
        parse_proc_cgroup(&text)
            .iter()
            .any(|(id, _, p)| *id == self.hierarchy_id && (self.rel == "/" || *p == self.rel || p.starts_with(&below)))
    }

    /// Bit R for its hierarchy id R (see agent-ebpf `cgroup_attach.rs`).
    pub fn root_mask(&self) -> u32 {
        if self.hierarchy_id < 32 {
            1 << self.hierarchy_id
        } else {
            0
        }
    }

    /// v2: bit L set for the level L of this cgroup (see agent-ebpf `cgroup.rs`); 0 on v1.
    pub fn level_mask(&self) -> u32 {
        if !self.is_v2() {
            return 0;
        }
        let level = self.rel.split('/').filter(|c| !c.is_empty()).count() as u32;
        if level < 32 {
            1 << level
        } else {
            0
        }
    }
}

/// The id of a mount's hierarchy among `/proc/PID/cgroup` lines: 0 for v2, else the line whose
/// controllers are the mount's.
pub fn hierarchy_id(h: &Hierarchy, lines: &[(u32, Vec<String>, String)]) -> Option<u32> {
    match h {
        Hierarchy::V2 { .. } => Some(0),
        Hierarchy::V1 { controllers } => lines
            .iter()
            .find(|(id, c, _)| *id != 0 && !c.is_empty() && c.iter().all(|x| controllers.contains(x)))
            .map(|l| l.0),
    }
}

/// Where a process's memory is accounted: the memory cgroup directory of `pid` (the v2
/// cgroup if the unified hierarchy has the memory controller, else the v1 `memory` one).
pub fn memory_dir_of(pid: u32) -> Option<PathBuf> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    memory_dir_in(&parse_proc_cgroup(&text), &mounts())
}

/// [`memory_dir_of`] on parsed `/proc/PID/cgroup` lines and mounts.
pub fn memory_dir_in(lines: &[(u32, Vec<String>, String)], mounts: &[CgroupMount]) -> Option<PathBuf> {
    let v2_memory = mounts.iter().find(|m| m.hierarchy == Hierarchy::V2 { memory: true });
    let (mount, path) = match v2_memory {
        Some(m) => (m, lines.iter().find(|(id, _, _)| *id == 0)?.2.as_str()),
        None => {
            let m = mounts.iter().find(
                |m| matches!(&m.hierarchy, Hierarchy::V1 { controllers } if controllers.iter().any(|c| c == "memory")),
            )?;
            (m, lines.iter().find(|(_, c, _)| c.iter().any(|c| c == "memory"))?.2.as_str())
        }
    };
    let root = mount.root.trim_end_matches('/');
    let inside = path.strip_prefix(root).unwrap_or(path).trim_start_matches('/');
    Some(mount.point.join(inside))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/name\\040x rw,relatime - cgroup cgroup rw,name=systemd
40 31 0:37 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn mountinfo_finds_both_hierarchies() {
        let m = parse_mountinfo(MOUNTINFO);
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].point, PathBuf::from("/sys/fs/cgroup/memory"));
        assert_eq!(m[0].hierarchy, Hierarchy::V1 { controllers: vec!["memory".into()] });
        assert_eq!(m[1].point, PathBuf::from("/sys/fs/cgroup/name x"));
        assert!(matches!(m[2].hierarchy, Hierarchy::V2 { .. }));
    }

    #[test]
    fn memory_dir_is_the_v1_memory_line_on_a_hybrid_machine() {
        let lines = parse_proc_cgroup("9:name=systemd:/\n4:memory:/process_api/abc\n0::/agent-test\n");
        assert_eq!(lines[1], (4, vec!["memory".to_string()], "/process_api/abc".to_string()));
        let mut mounts = parse_mountinfo(MOUNTINFO);
        mounts[2].hierarchy = Hierarchy::V2 { memory: false };
        assert_eq!(memory_dir_in(&lines, &mounts), Some(PathBuf::from("/sys/fs/cgroup/memory/process_api/abc")));
        // Pure v2 with the memory controller: the 0:: line.
        mounts[2].hierarchy = Hierarchy::V2 { memory: true };
        assert_eq!(memory_dir_in(&lines, &mounts), Some(PathBuf::from("/sys/fs/cgroup/unified/agent-test")));
    }

    #[test]
    fn hierarchy_ids_as_proc_cgroup_numbers_them() {
        let lines = parse_proc_cgroup("9:name=systemd:/\n4:memory:/a\n2:cpu,cpuacct:/\n0::/b\n");
        let v1 = |c: &[&str]| Hierarchy::V1 { controllers: c.iter().map(|s| s.to_string()).collect() };
        assert_eq!(hierarchy_id(&v1(&["memory"]), &lines), Some(4));
        assert_eq!(hierarchy_id(&v1(&["cpu", "cpuacct"]), &lines), Some(2));
        assert_eq!(hierarchy_id(&v1(&["name=systemd"]), &lines), Some(9));
        assert_eq!(hierarchy_id(&Hierarchy::V2 { memory: false }, &lines), Some(0));
        assert_eq!(hierarchy_id(&v1(&["pids"]), &lines), None);
    }

    #[test]
    fn resolve_refuses_what_is_not_a_cgroup() {
        let e = Cgroup::resolve(Path::new("/nonexistent/cg")).unwrap_err().to_string();
        assert!(e.contains("--cgroup /nonexistent/cg") && e.contains("cgroup directory"), "{e}");
        let e = Cgroup::resolve(Path::new("/tmp")).unwrap_err().to_string();
        assert!(e.contains("not a cgroup directory"), "{e}");
    }

    #[test]
    fn our_own_cgroups_hold_us_and_key_by_hierarchy() {
        let me = std::process::id();
        let own = parse_proc_cgroup(&std::fs::read_to_string("/proc/self/cgroup").unwrap());
        for m in mounts() {
            let Some(id) = hierarchy_id(&m.hierarchy, &own) else { continue };
            let rel = &own.iter().find(|l| l.0 == id).unwrap().2;
            let dir = m.point.join(rel.trim_start_matches('/'));
            let Ok(c) = Cgroup::resolve(&dir) else { continue };
            assert_eq!(c.hierarchy_id, id);
            assert!(c.holds(me), "{} holds us", dir.display());
            assert!(c.members().contains(&me));
            let ino = std::fs::metadata(&dir).unwrap().ino();
            assert_eq!(c.kernel_keys()[0], agent_common::cgroup_key(id, ino));
            assert_eq!(c.root_mask(), 1 << id);
        }
    }

    #[test]
    fn resolve_reads_this_machines_root_cgroups() {
        for m in mounts() {
            let c = Cgroup::resolve(&m.point).expect("a cgroup mount's root is a cgroup");
            assert_eq!(c.rel, m.root.trim_end_matches('/').to_string() + if m.root == "/" { "/" } else { "" });
            assert_eq!(c.is_v2(), matches!(m.hierarchy, Hierarchy::V2 { .. }));
        }
    }
}
