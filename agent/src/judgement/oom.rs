//! OOM post-mortems: when the OOM killer picks a watched process, everything the agent knows of
//! it in one record, written before its exit record (its state is still all here): why it was
//! killed (`memcg.rs`), the kernel's figures, its last smaps reading, the mappings its faults
//! grew, its top stacks and any leak verdict it had.
use agent_common::OomEvent;

use super::{memcg, reconcile::round2, Judge};
use crate::{
    attribution::Ledger,
    kernel::events::comm_str,
    records::{LeakVerdict, OomKernel, Record},
    stacks::Stacks,
};

/// Mappings and stacks in a post-mortem.
const TOP_MAPPINGS: usize = 5;
const TOP_STACKS: usize = 3;

/// The `oom` record of the victim of `e`. Reads the kernel log and cgroup files (a cold path:
/// once per kill).
pub fn post_mortem(e: &OomEvent, ledger: &Ledger, judge: &Judge, stacks: Option<&mut Stacks>) -> Record {
    let pid = e.hdr.tgid;
    let cause = memcg::cause(pid);
    build(e, cause, ledger, judge, stacks)
}

fn build(e: &OomEvent, cause: memcg::Cause, ledger: &Ledger, judge: &Judge, stacks: Option<&mut Stacks>) -> Record {
    let pid = e.hdr.tgid;
    let proc = ledger.get(pid);
    // The kernel's name at the kill (a prctl rename makes no event), else the ledger's.
    let comm = match comm_str(&e.comm) {
        c if !c.is_empty() => c,
        _ => proc.map_or_else(String::new, |p| p.comm.clone()),
    };
    let stacks = match (stacks, proc) {
        (Some(st), Some(p)) => st.top(pid, &p.stacks, p.maps(), TOP_STACKS),
        _ => Vec::new(),
    };
    Record::Oom {
        pid,
        comm,
        constraint: cause.constraint,
        constraint_source: cause.source,
        memcg: cause.memcg,
        limit_kib: cause.limit_kib,
        kernel: OomKernel {
            total_vm_kib: e.total_vm_kib,
            anon_rss_kib: e.anon_rss_kib,
            file_rss_kib: e.file_rss_kib,
            shmem_rss_kib: e.shmem_rss_kib,
            pgtables_kib: e.pgtables_kib,
            uid: e.uid,
            oom_score_adj: e.oom_score_adj,
        },
        last_mem: judge.last_mem(pid).cloned(),
        // The whole watch, this unfinished interval included (it joins `total` at its end).
        mappings: proc
            .map(|p| {
                let mut a = p.total.clone();
                a.merge(&p.interval);
                a.top(TOP_MAPPINGS)
            })
            .unwrap_or_default(),
        stacks,
        leak: judge.leak_verdict(pid).map(|t| LeakVerdict {
            rate_kib_s: round2(t.rate_kib_s),
            metric: t.metric.name(),
            window_s: round2(t.span_s),
            growth_kib: t.growth_kib.round() as i64,
        }),
    }
}

#[cfg(test)]
mod tests {
    use agent_common::{EventHeader, EventKind};

    use super::*;
    use crate::judgement::Params;

    #[test]
    fn an_unknown_victim_still_gets_the_kernels_figures() {
        let ledger = Ledger::new(Box::new(crate::attribution::FakeProc::default()));
        let judge = Judge::new(Params::default());
        let e = OomEvent {
            hdr: EventHeader { kind: EventKind::Oom as u32, tgid: 42, tid: 42, _pad: 0, ts_ns: 1 },
            pid: 42,
            comm: *b"wl-grow\0\0\0\0\0\0\0\0\0",
            anon_rss_kib: 65_280,
            oom_score_adj: 500,
            ..Default::default()
        };
        let cause = memcg::Cause {
            constraint: "memcg",
            source: "kernel log",
            memcg: Some("/x".into()),
            limit_kib: Some(65536),
        };
        let Record::Oom { pid, comm, constraint, limit_kib, kernel, last_mem, mappings, leak, .. } =
            build(&e, cause, &ledger, &judge, None)
        else {
            panic!("not an oom record")
        };
        assert_eq!((pid, comm.as_str(), constraint, limit_kib), (42, "wl-grow", "memcg", Some(65536)));
        assert_eq!((kernel.anon_rss_kib, kernel.oom_score_adj), (65_280, 500));
        assert!(last_mem.is_none() && mappings.is_empty() && leak.is_none());
    }

    #[test]
    fn the_human_block_names_the_limit_and_what_grew() {
        let rec = Record::Oom {
            pid: 7,
            comm: "wl-grow".into(),
            constraint: "memcg",
            constraint_source: "kernel log",
            memcg: Some("/jobs/a".into()),
            limit_kib: Some(65536),
            kernel: OomKernel { anon_rss_kib: 65_280, ..Default::default() },
            last_mem: None,
            mappings: vec![crate::records::MappingStat {
                mapping: "anon@0x7f00".into(),
                shared: false,
                faults: 15_360,
                pages: 15_360,
                cow: 0,
            }],
            stacks: Vec::new(),
            leak: Some(LeakVerdict { rate_kib_s: 2048.0, metric: "uss", window_s: 20.0, growth_kib: 40_960 }),
        };
        let text = crate::sinks::human::render(4.0, &rec, 4).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].ends_with("OOM KILLED pid 7 wl-grow (memcg limit 64.0 MiB, cgroup /jobs/a)"), "{text}");
        assert!(lines[1].contains("kernel at the kill: anon 63.8 MiB"), "{text}");
        assert!(lines[2].ends_with("last reading: none"), "{text}");
        assert!(lines[3].ends_with("grew most: anon@0x7f00 (private) +60.0 MiB"), "{text}");
        assert!(lines[4].ends_with("leak verdict: 2.0 MiB/s of USS for 20s (+40.0 MiB)"), "{text}");
    }
}
