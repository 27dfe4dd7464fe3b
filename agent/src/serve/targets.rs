//! What `serve` watches: `-p PID` trees, `--comm NAME` (every process of that name, now and
//! later) and `--all` (every process of the host but the agent).
//!
//! The kernel follows forks of watched processes itself. A process that execs under a watched
//! name joins in the kernel at its exec (agent-ebpf `comm_join.rs`: the names are in its
//! `WATCHED_COMMS` map), so it is watched from its first fault after exec. One renamed by
//! `prctl(PR_SET_NAME)` makes no event: a scan of /proc/PID/stat every 2 s finds
//! it (its faults before that scan are not attributed; its RSS is, seeded from /proc).
use std::collections::HashSet;

use crate::{attribution::Ledger, error::AgentError, kernel::bpf_maps::BpfMaps, proc_facts};

#[derive(Clone, Debug, Default)]
pub struct ServeTargets {
    pub pids: Vec<i32>,
    pub comms: Vec<String>,
    pub all: bool,
}

impl ServeTargets {
    /// Refuse what cannot be watched, before anything is loaded.
    pub fn check(&self) -> Result<(), AgentError> {
        if self.pids.is_empty() && self.comms.is_empty() && !self.all {
            return Err(AgentError::Usage("nothing to serve: give -p PID, --comm NAME or --all".into()));
        }
        if let Some(c) = self.comms.iter().find(|c| c.is_empty() || c.len() > 15) {
            return Err(AgentError::Usage(format!(
                "--comm {c:?}: a process name is 1 to 15 bytes (the kernel's comm; see /proc/PID/comm)"
            )));
        }
        match self.pids.iter().find(|p| !proc_facts::exists(**p)) {
            Some(p) => Err(AgentError::NoSuchProcess(*p)),
            None => Ok(()),
        }
    }

    /// The processes to start with: each `-p` tree, the processes named `--comm`, or all.
    fn initial(&self) -> Vec<u32> {
        let me = std::process::id();
        let mut out: Vec<u32> = Vec::new();
        if self.all {
            out.extend(user_processes().into_iter().map(|(pid, _)| pid));
        } else {
            for root in &self.pids {
                out.extend(proc_facts::tree(*root as u32));
            }
            out.extend(self.named());
        }
        out.retain(|p| *p != me);
        out
    }

    /// Tell the kernel the `--comm` names, so that a process that execs under one of them joins
    /// at its exec. Before the start's scan: an exec in between is not missed.
    pub fn watch_names(&self, ebpf: &mut aya::Ebpf) -> anyhow::Result<()> {
        if self.comms.is_empty() {
            return Ok(());
        }
        let map = ebpf.map_mut("WATCHED_COMMS").ok_or_else(|| anyhow::anyhow!("WATCHED_COMMS map missing"))?;
        let mut names: aya::maps::HashMap<_, [u8; 16], u32> = aya::maps::HashMap::try_from(map)?;
        for c in &self.comms {
            let mut key = [0u8; 16];
            key[..c.len()].copy_from_slice(c.as_bytes());
            names.insert(key, 1, 0)?;
        }
        Ok(())
    }

    /// Live processes with one of the `--comm` names.
    pub fn named(&self) -> Vec<u32> {
        if self.comms.is_empty() {
            return Vec::new();
        }
        user_processes().into_iter().filter(|(_, comm)| self.comms.contains(comm)).map(|(pid, _)| pid).collect()
    }

    /// Put the targets' processes in the watched set (twice: a child forked between the scan
    /// and the map update is caught the second time). Returns the pids watched, and the roots
    /// of the trees they form (for `--group-by tree`).
    pub fn start(&self, ledger: &mut Ledger, bpf: &mut BpfMaps) -> anyhow::Result<(Vec<u32>, Vec<u32>)> {
        let mut pids: Vec<u32> = Vec::new();
        let mut seen: HashSet<u32> = HashSet::new();
        for _ in 0..2 {
            for pid in self.initial() {
                if seen.insert(pid) && ledger.add_existing(pid).is_some() {
                    bpf.watch(pid)?;
                    pids.push(pid);
                }
            }
        }
        if !self.all && self.comms.is_empty() && pids.is_empty() {
            return Err(AgentError::NoSuchProcess(self.pids[0]).into());
        }
        let mut roots: Vec<u32> = self.pids.iter().map(|p| *p as u32).collect();
        roots.extend(self.named());
        if self.all {
            // Trees hang under init: each child of pid 1 (and pid 1) is a root.
            roots.extend(pids.iter().filter(|p| ledger.get(**p).is_some_and(|pr| pr.ppid <= 1)));
        }
        Ok((pids, roots))
    }
}

/// (pid, comm) of every process but kernel threads (kthreadd, pid 2, and its children).
fn user_processes() -> Vec<(u32, String)> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let (head, rest) = stat.rsplit_once(')')?;
            let comm = head.split_once('(')?.1.to_string();
            let ppid: u32 = rest.split_whitespace().nth(1)?.parse().ok()?;
            (pid != 2 && ppid != 2).then_some((pid, comm))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_to_serve_and_bad_names_are_refused() {
        assert!(ServeTargets::default().check().unwrap_err().to_string().contains("-p PID, --comm NAME or --all"));
        let long = ServeTargets { comms: vec!["a-name-longer-than-15".into()], ..Default::default() };
        assert!(long.check().unwrap_err().to_string().contains("1 to 15 bytes"));
        let gone = ServeTargets { pids: vec![i32::MAX], ..Default::default() };
        assert!(matches!(gone.check(), Err(AgentError::NoSuchProcess(_))));
    }

    #[test]
    fn the_named_scan_finds_this_test_and_no_kernel_thread() {
        let me = std::process::id();
        let all = user_processes();
        let my_comm = all.iter().find(|(p, _)| *p == me).map(|(_, c)| c.clone()).expect("this process is listed");
        assert!(all.iter().all(|(p, _)| *p != 2), "kthreadd is not a user process");
        let t = ServeTargets { comms: vec![my_comm], ..Default::default() };
        assert!(t.named().contains(&me));
    }
}
