//! The summary, built in one place from the stages' state and handed to every sink.
use std::sync::atomic::Ordering;

use crate::{
    attribution::Ledger,
    judgement::Judge,
    proc_facts,
    records::{AgentCost, ProcSummary, ProgStat, Record},
    sampling::smaps,
    stacks::Stacks,
};

/// What crossed the ring over the run.
#[derive(Clone, Copy, Debug, Default)]
pub struct RingCounts {
    /// Records the programs could not reserve (ring full), as the kernel counted them.
    pub lost: u64,
    /// Records the programs put in the ring.
    pub submitted: u64,
    /// Records the agent read from it (decoded or not).
    pub received: u64,
}

/// Everything the summary is made of.
pub struct Parts<'a> {
    pub elapsed_s: f64,
    pub ring: RingCounts,
    pub ledger: &'a Ledger,
    /// Entries of processes already taken out of the ledger.
    pub retired: Vec<ProcSummary>,
    /// `serve`: the exited processes folded into their name's totals.
    pub exited: Vec<crate::session::fold::ExitedGroup>,
    pub judge: &'a Judge,
    /// With --stacks: the resolver and the kernel's count of stacks it could not take.
    pub stacks: Option<(&'a mut Stacks, u64)>,
    /// Folded stacks are wanted (a stack-file sink).
    pub folded: bool,
    /// Profile samples are wanted (the pprof sink).
    pub profile: bool,
    /// With --bpf-stats: the programs' kernel run statistics.
    pub programs: Vec<ProgStat>,
}

pub fn build(p: Parts) -> Record {
    let mut procs = p.ledger.summary();
    for s in &mut procs {
        p.judge.fill_summary(s);
    }
    let (mut stack_summary, mut folded, mut profile) = (None, Vec::new(), Vec::new());
    if let Some((st, errors)) = p.stacks {
        st.fill_summary(&mut procs, p.ledger, 5);
        stack_summary = Some(st.summary(errors));
        if p.folded {
            folded = st.folded(p.ledger);
        }
        if p.profile {
            profile = st.profile(p.ledger);
        }
    }
    procs.extend(p.retired);
    Record::Summary {
        duration_s: (p.elapsed_s * 1000.0).round() / 1000.0,
        lost_events: p.ring.lost,
        events_received: p.ring.received,
        events_submitted: p.ring.submitted,
        unnamed_pages: p.ledger.unnamed_pages(),
        agent: AgentCost { programs: p.programs, ..own_cost(p.elapsed_s) },
        stacks: stack_summary,
        procs,
        exited: p.exited,
        folded,
        profile,
    }
}

/// The agent's CPU time and peak RSS so far (getrusage), and its smaps reading cost.
pub fn own_cost(elapsed_s: f64) -> AgentCost {
    let (cpu_s, max_rss_kib) = proc_facts::rusage(libc::RUSAGE_SELF);
    let r3 = |v: f64| (v * 1000.0).round() / 1000.0;
    let read_s = smaps::READ_NS.load(Ordering::Relaxed) as f64 / 1e9;
    let smaps_cpu_s = smaps::READ_CPU_NS.load(Ordering::Relaxed) as f64 / 1e9;
    let allowed_s = smaps::budget_pct() / 100.0 * elapsed_s;
    AgentCost {
        cpu_s: r3(cpu_s),
        cpu_per_s: r3(cpu_s / elapsed_s.max(1e-3)),
        max_rss_kib,
        smaps_reads: smaps::READS.load(Ordering::Relaxed),
        smaps_read_s: r3(read_s),
        smaps_budget_pct: smaps::budget_pct(),
        smaps_allowed_s: r3(allowed_s),
        smaps_cpu_s: r3(smaps_cpu_s),
        maps_reads: proc_facts::MAPS_READS.load(Ordering::Relaxed),
        maps_read_s: r3(proc_facts::MAPS_READ_NS.load(Ordering::Relaxed) as f64 / 1e9),
        smaps_budget_used: if allowed_s > 0.0 { (smaps_cpu_s / allowed_s * 100.0).round() / 100.0 } else { 0.0 },
        programs: Vec::new(),
    }
}
