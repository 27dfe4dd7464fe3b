//! The membership of watched cgroups over a watch: the kernel's map of watched cgroups (by
//! hierarchy and id: agent-ebpf `cgroup_attach.rs` joins and drops processes as they move,
//! `cgroup.rs` joins v2 members at fork and exec), and `cgroup.procs` re-read at every interval,
//! which finds what the kernel did not see.
//!
//! Front ends (`watch`, `serve`) build it with [`CgroupWatch::take`] after loading (the kernel
//! side needs [`CgroupWatch::level_mask`] before, in `LoadOptions::cgroup_levels`), seed with
//! [`CgroupWatch::seed`] and hand it to the pipeline (`Pipeline::set_cgroups`).
use std::collections::{BTreeSet, HashSet};

use agent_common::names;
use aya::{
    maps::{HashMap, MapData},
    Ebpf,
};

use super::cgroup::Cgroup;
use crate::{attribution::Ledger, kernel::bpf_maps::BpfMaps, proc_facts};

pub struct CgroupWatch {
    pub cgroups: Vec<Cgroup>,
    /// v2 cgroup ids in the kernel's map (None: no v2 cgroup, or the map is missing).
    kernel: Option<HashMap<MapData, u64, u32>>,
    ids: HashSet<u64>,
    /// Each cgroup's processes at the last poll.
    members: Vec<BTreeSet<u32>>,
}

/// What a poll found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Poll {
    /// In a watched cgroup and not watched yet: now watched.
    pub joined: Vec<u32>,
    /// Watched, alive, and in no watched cgroup any more.
    pub left: Vec<u32>,
}

/// The level mask of these cgroups for the loader (`LoadOptions::cgroup_levels`).
pub fn level_mask(cgroups: &[Cgroup]) -> u32 {
    cgroups.iter().fold(0, |m, c| m | c.level_mask())
}

/// Their hierarchies, for the loader (`LoadOptions::cgroup_roots`).
pub fn root_mask(cgroups: &[Cgroup]) -> u32 {
    cgroups.iter().fold(0, |m, c| m | c.root_mask())
}

impl CgroupWatch {
    /// Take the kernel's map of watched cgroups and fill it with the cgroups and their
    /// descendants.
    pub fn take(ebpf: &mut Ebpf, cgroups: Vec<Cgroup>) -> anyhow::Result<CgroupWatch> {
        let kernel = match ebpf.take_map(names::WATCHED_CGROUPS) {
            Some(m) => Some(HashMap::try_from(m)?),
            None => None,
        };
        let n = cgroups.len();
        let mut w = CgroupWatch { cgroups, kernel, ids: HashSet::new(), members: vec![BTreeSet::new(); n] };
        w.refresh_ids();
        Ok(w)
    }

    /// Descendant cgroups created since the last call join the kernel's map (at fork and exec
    /// the kernel also matches v2 ones through their ancestor at a watched level).
    fn refresh_ids(&mut self) {
        let Some(map) = self.kernel.as_mut() else { return };
        for c in &self.cgroups {
            for key in c.kernel_keys() {
                if self.ids.insert(key) {
                    if let Err(e) = map.insert(key, 1, 0) {
                        log::warn!(
                            "a cgroup under {} is not in the kernel's map ({e}): its joins are seen at the next interval",
                            c.dir.display()
                        );
                    }
                }
            }
        }
    }

    /// The kernel saw `pid` move out of the watched cgroups: is it in one still (a cgroup
    /// created under a watched one since the last refresh is not in the kernel's map)? If so,
    /// the new cgroups go into the map.
    pub fn still_member(&mut self, pid: u32) -> bool {
        let inside = self.cgroups.iter().any(|c| c.holds(pid));
        if inside {
            self.refresh_ids();
        }
        inside
    }

    /// Each cgroup's processes at the last poll.
    pub fn members(&self, i: usize) -> &BTreeSet<u32> {
        &self.members[i]
    }

    /// Is `pid` in a watched cgroup (as of the last poll)?
    pub fn is_member(&self, pid: u32) -> bool {
        self.members.iter().any(|m| m.contains(&pid))
    }

    /// Watch the processes in the cgroups now: the kernel's and the ledger's watched set. Twice,
    /// as for a pid tree: a process forked between the read and the map update is caught the
    /// second time.
    pub fn seed(&mut self, ledger: &mut Ledger, bpf: &mut BpfMaps) -> anyhow::Result<Vec<u32>> {
        let mut pids = Vec::new();
        for _ in 0..2 {
            self.read_members();
            for pid in self.members.iter().flatten().copied().collect::<BTreeSet<u32>>() {
                if !pids.contains(&pid) && ledger.add_existing(pid).is_some() {
                    bpf.watch(pid)?;
                    pids.push(pid);
                }
            }
        }
        Ok(pids)
    }

    /// Each cgroup's processes now, the agent itself left out (it may run inside one).
    fn read_members(&mut self) {
        let me = std::process::id();
        for (i, c) in self.cgroups.iter().enumerate() {
            self.members[i] = c.members();
            self.members[i].remove(&me);
        }
    }

    /// Re-read the cgroups: watch the members not watched yet, and report the watched processes
    /// that are in none of them any more (alive: an exit is the exit record's business).
    pub fn poll(&mut self, ledger: &mut Ledger, bpf: &mut BpfMaps) -> Poll {
        self.refresh_ids();
        self.read_members();
        let now: BTreeSet<u32> = self.members.iter().flatten().copied().collect();
        let mut out = Poll::default();
        for &pid in &now {
            if ledger.get(pid).is_some_and(|p| p.alive) {
                continue;
            }
            if ledger.add_existing(pid).is_some() {
                match bpf.watch(pid) {
                    Ok(()) => out.joined.push(pid),
                    Err(e) => log::warn!("cannot watch {pid}, which joined a watched cgroup: {e}"),
                }
            }
        }
        for pid in ledger.live_pids() {
            if !now.contains(&pid) && proc_facts::exists(pid as i32) && proc_facts::zombie_comm(pid).is_none() {
                out.left.push(pid);
            }
        }
        out
    }
}
