//! Why each live pid might deserve an smaps read now: what the ledger and the verdict say of it.
use std::collections::HashSet;

use crate::{
    attribution::{Ledger, MappingId},
    judgement::Judge,
};

/// One live pid, as the sampler weighs it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Candidate {
    pub pid: u32,
    /// The ledger's RSS now (what a read will walk), when known.
    pub rss_kib: Option<u64>,
    /// Its ledger moved since the last sweep.
    pub moved: bool,
    /// The verdict is weighing it: a standing verdict, or recent own growth.
    pub weighing: bool,
    /// Another pid's pages grew in a shared segment it maps: its PSS is stale.
    pub sibling_stale: bool,
}

/// The live pids of `ledger` as candidates (takes the ledger's "moved" flags).
pub fn candidates(ledger: &mut Ledger, judge: &Judge) -> Vec<Candidate> {
    let live = ledger.live_pids();
    let mut out: Vec<Candidate> =
        live.iter().map(|&pid| Candidate { pid, moved: ledger.take_dirty(pid), ..Default::default() }).collect();
    // Shared segments that grew: the mapping each moved pid grows fastest, if shared.
    let grown: HashSet<MappingId> = out
        .iter()
        .filter(|c| c.moved)
        .filter_map(|c| ledger.get(c.pid)?.growing_mapping())
        .filter(|id| id.shared)
        .collect();
    for c in &mut out {
        let Some(p) = ledger.get(c.pid) else { continue };
        c.rss_kib = p.ledger_rss_kib().map(|k| k.max(0) as u64);
        c.weighing = judge.weighing(c.pid);
        c.sibling_stale = !c.moved && grown.iter().any(|id| !p.maps().ranges_of(id).is_empty());
    }
    out
}
