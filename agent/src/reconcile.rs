//! Reconcile and flag: each smaps reading is checked against the eBPF ledger (RSS drift) and fed
//! to the pid's leak detector together with the pages its own faults added.
use std::collections::HashMap;

use crate::{
    ledger::Ledger,
    record::{Explain, MemStat, Record},
    verdict::{Detector, Params, Sample, Trend},
};

pub struct Reconciler {
    params: Params,
    detectors: HashMap<u32, Detector>,
    /// Per pid at its previous reading: PSS, USS and the ledger's own split.
    last: HashMap<u32, (MemStat, (i64, i64, i64))>,
    pub leaks_flagged: u64,
}

impl Reconciler {
    pub fn new(params: Params) -> Reconciler {
        Reconciler { params, detectors: HashMap::new(), last: HashMap::new(), leaks_flagged: 0 }
    }

    /// A fresh smaps reading of `pid` at `t` seconds, taken between `read_ns.0` and `read_ns.1`
    /// (ns since the watch start): its mem record, and a leak record when the verdict is new or
    /// its rate changed.
    pub fn on_mem(
        &mut self,
        ledger: &mut Ledger,
        pid: u32,
        sweep: u64,
        (t, read_ns): (f64, (u64, u64)),
        mem: MemStat,
    ) -> Vec<Record> {
        let Some(p) = ledger.procs.get_mut(&pid) else {
            return vec![];
        };
        p.peak_uss_kib = p.peak_uss_kib.max(mem.uss_kib);
        p.mem = Some(mem.clone());
        let ledger_rss_kib = p.ledger_rss_near_kib(mem.rss_kib as i64, read_ns.0, read_ns.1);
        let drift_kib = ledger_rss_kib.map(|l| l - mem.rss_kib as i64);
        let own = p.own_split_near_kib(ledger.page_size, mem.rss_kib as i64, read_ns.0, read_ns.1);
        let explain =
            self.last.insert(pid, (mem.clone(), own)).map(|(prev, prev_own)| explain(&prev, prev_own, &mem, own));
        let mut out = vec![Record::Mem { pid, comm: p.comm.clone(), sweep, mem, ledger_rss_kib, drift_kib, explain }];
        out.extend(self.observe(ledger, pid, t));
        out
    }

    /// A pid not re-read this sweep because nothing of its own changed: its last reading
    /// still holds, and the detector sees it at `t`.
    pub fn carry_forward(&mut self, ledger: &Ledger, pid: u32, t: f64) -> Option<Record> {
        self.observe(ledger, pid, t)
    }

    fn observe(&mut self, ledger: &Ledger, pid: u32, t: f64) -> Option<Record> {
        let p = ledger.procs.get(&pid)?;
        let mem = p.mem.as_ref()?;
        let sample = Sample {
            t,
            uss_kib: mem.uss_kib as f64,
            pss_kib: mem.pss_kib as f64,
            own_kib: p.own_fault_kib(ledger.page_size) as f64,
        };
        let trend = self.detectors.entry(pid).or_default().observe(sample, &self.params)?;
        self.leaks_flagged += 1;
        let mapping = p.growing_mapping();
        Some(Record::Leak {
            pid,
            comm: p.comm.clone(),
            rate_kib_s: round2(trend.rate_kib_s),
            window_s: round2(trend.span_s),
            growth_kib: trend.growth_kib.round() as i64,
            metric: trend.metric.name(),
            mapping: mapping.as_ref().map_or_else(|| "?".into(), |m| m.name.to_string()),
            shared: mapping.is_some_and(|m| m.shared),
            confidence: trend.confidence,
            smaps_mapping: None,
            stacks: Vec::new(),
        })
    }

    /// Drop the state of a pid whose process is gone for good; its verdict, if any.
    pub fn retire(&mut self, pid: u32) -> Option<Trend> {
        self.last.remove(&pid);
        self.detectors.remove(&pid)?.flagged
    }

    pub fn flagged(&self, pid: u32) -> Option<Trend> {
        self.detectors.get(&pid)?.flagged
    }
}

/// The PSS/USS change between two readings: the ledger says what the pid's own activity did,
/// and whatever PSS did that its RSS did not is sharing. RSS and PSS come from the same two
/// smaps readings, so no clock stands between them.
fn explain(prev: &MemStat, prev_own: (i64, i64, i64), now: &MemStat, own: (i64, i64, i64)) -> Explain {
    let d = |a: u64, b: u64| b as i64 - a as i64;
    let (delta_rss_kib, delta_pss_kib) = (d(prev.rss_kib, now.rss_kib), d(prev.pss_kib, now.pss_kib));
    Explain {
        delta_rss_kib,
        delta_pss_kib,
        delta_uss_kib: d(prev.uss_kib, now.uss_kib),
        faulted_private_kib: own.0 - prev_own.0,
        faulted_shared_kib: own.1 - prev_own.1,
        released_kib: own.2 - prev_own.2,
        sharing_kib: delta_pss_kib - delta_rss_kib,
    }
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem(rss: u64, pss: u64, uss: u64) -> MemStat {
        MemStat {
            rss_kib: rss,
            pss_kib: pss,
            uss_kib: uss,
            pss_anon_kib: 0,
            pss_file_kib: 0,
            pss_shmem_kib: 0,
            swap_kib: 0,
        }
    }

    #[test]
    fn a_siblings_exit_shows_as_sharing_not_as_own_growth() {
        // PSS +5 MiB, nothing of its own moved: all of it is sharing.
        let e = explain(&mem(20_480, 10_240, 100), (0, 0, 0), &mem(20_480, 15_360, 100), (0, 0, 0));
        assert_eq!((e.delta_pss_kib, e.sharing_kib, e.faulted_private_kib), (5120, 5120, 0));
    }

    #[test]
    fn own_faults_and_releases_explain_the_change() {
        // +8 MiB private faulted, -2 MiB munmapped, +4 MiB faulted into a segment shared with
        // one other process: RSS +10 MiB, PSS +8 MiB, the segment's half missing from PSS.
        let e = explain(&mem(0, 0, 0), (0, 0, 0), &mem(10_240, 8192, 6144), (8192, 4096, -2048));
        assert_eq!(e.faulted_private_kib, 8192);
        assert_eq!(e.faulted_shared_kib, 4096);
        assert_eq!(e.released_kib, -2048);
        assert_eq!(e.delta_rss_kib, 10_240);
        assert_eq!(e.sharing_kib, 8192 - 10_240);
        assert_eq!(e.delta_uss_kib, 6144);
    }
}
