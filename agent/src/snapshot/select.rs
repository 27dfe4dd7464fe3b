//! Which processes a snapshot reads: all of them, a process tree (`-p`), or a cgroup and its
//! descendants (`--cgroup`, v2 or v1).
use std::path::{Path, PathBuf};

use crate::{error::AgentError, proc_facts};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    All,
    Tree(i32),
    /// A cgroup directory (resolved, it holds `cgroup.procs`).
    Cgroup(PathBuf),
}

impl Scope {
    /// The scope of the arguments, checked: the pid exists, the cgroup is one.
    pub fn new(pid: Option<i32>, cgroup: Option<&Path>) -> Result<Scope, AgentError> {
        match (pid, cgroup) {
            (Some(pid), _) if !proc_facts::exists(pid) => Err(AgentError::NoSuchProcess(pid)),
            (Some(pid), _) => Ok(Scope::Tree(pid)),
            (None, Some(dir)) => cgroup_dir(dir, Path::new("/sys/fs/cgroup")).map(Scope::Cgroup),
            (None, None) => Ok(Scope::All),
        }
    }

    /// The pids to read, ascending.
    pub fn pids(&self) -> Vec<u32> {
        let mut pids = match self {
            Scope::All => all_pids(),
            Scope::Tree(pid) => proc_facts::tree(*pid as u32),
            Scope::Cgroup(dir) => cgroup_pids(dir),
        };
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// For the saved snapshot's header: `all`, `pid 123`, `cgroup /sys/fs/cgroup/...`.
    pub fn describe(&self) -> String {
        match self {
            Scope::All => "all".into(),
            Scope::Tree(pid) => format!("pid {pid}"),
            Scope::Cgroup(dir) => format!("cgroup {}", dir.display()),
        }
    }
}

/// Every process: the numeric entries of /proc.
fn all_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|d| d.flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).collect())
        .unwrap_or_default()
}

/// The cgroup directory `arg` names: a directory with `cgroup.procs` as given, else the same
/// path under `root` (`/system.slice/x.service`, as /proc/PID/cgroup shows it), under the v2
/// mount first, then under the v1 hierarchies that track every process.
pub fn cgroup_dir(arg: &Path, root: &Path) -> Result<PathBuf, AgentError> {
    let rel = arg.strip_prefix("/").unwrap_or(arg);
    let mut candidates = vec![arg.to_path_buf()];
    for sub in ["", "unified", "memory", "pids", "systemd"] {
        candidates.push(root.join(sub).join(rel));
    }
    candidates
        .into_iter()
        .find(|d| d.join("cgroup.procs").is_file())
        .ok_or_else(|| AgentError::Usage(format!("no such cgroup: {} (a directory with cgroup.procs)", arg.display())))
}

/// The pids in `dir`'s cgroup.procs and in its descendants'.
pub fn cgroup_pids(dir: &Path) -> Vec<u32> {
    let mut pids = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        if let Ok(text) = std::fs::read_to_string(d.join("cgroup.procs")) {
            pids.extend(parse_procs(&text));
        }
        if let Ok(entries) = std::fs::read_dir(&d) {
            todo.extend(entries.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())).map(|e| e.path()));
        }
    }
    pids
}

/// The pids of a `cgroup.procs` file: one per line.
pub fn parse_procs(text: &str) -> impl Iterator<Item = u32> + '_ {
    text.lines().filter_map(|l| l.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_procs_lines() {
        assert_eq!(parse_procs("12\n 7\n\nx\n4000000\n").collect::<Vec<_>>(), [12, 7, 4000000]);
    }

    #[test]
    fn a_cgroup_and_its_descendants_by_path_or_by_its_name_under_the_mount() {
        let root = std::env::temp_dir().join(format!("agent-cg-test-{}", std::process::id()));
        let cg = root.join("memory/app.slice");
        std::fs::create_dir_all(cg.join("a/b")).unwrap();
        std::fs::write(cg.join("cgroup.procs"), "10\n11\n").unwrap();
        std::fs::write(cg.join("a/cgroup.procs"), "").unwrap();
        std::fs::write(cg.join("a/b/cgroup.procs"), "12\n").unwrap();
        // As a v1 hierarchy: found by its path under the mount, as /proc/PID/cgroup names it.
        assert_eq!(cgroup_dir(Path::new("/app.slice"), &root).unwrap(), root.join("memory/app.slice"));
        assert_eq!(cgroup_dir(&cg, &root).unwrap(), cg);
        assert!(cgroup_dir(Path::new("/nope"), &root).is_err());
        let mut pids = cgroup_pids(&cg);
        pids.sort();
        assert_eq!(pids, [10, 11, 12]);
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn a_tree_needs_its_root() {
        assert_eq!(Scope::new(None, None).unwrap(), Scope::All);
        assert!(matches!(Scope::new(Some(0x3fff_fff0), None), Err(AgentError::NoSuchProcess(_))));
        let me = std::process::id();
        assert_eq!(Scope::new(Some(me as i32), None).unwrap().pids()[0], me);
        assert!(Scope::All.pids().contains(&me));
    }
}
