//! Reconcile and flag: each smaps reading is checked against the eBPF ledger (RSS drift) and fed
//! to the pid's leak detector together with the pages its own faults added.
use std::collections::HashMap;

use crate::{
    ledger::Ledger,
    record::{MemStat, Record},
    verdict::{Detector, Params, Sample, Trend},
};

pub struct Reconciler {
    params: Params,
    detectors: HashMap<u32, Detector>,
    pub leaks_flagged: u64,
}

impl Reconciler {
    pub fn new(params: Params) -> Reconciler {
        Reconciler {
            params,
            detectors: HashMap::new(),
            leaks_flagged: 0,
        }
    }

    /// A fresh smaps reading of `pid` at `t` seconds: its mem record, and a leak record when
    /// the verdict is new or its rate changed.
    pub fn on_mem(&mut self, ledger: &mut Ledger, pid: u32, sweep: u64, t: f64, mem: MemStat) -> Vec<Record> {
        let Some(p) = ledger.procs.get_mut(&pid) else {
            return vec![];
        };
        p.peak_uss_kib = p.peak_uss_kib.max(mem.uss_kib);
        p.mem = Some(mem.clone());
        let ledger_rss_kib = p.ledger_rss_kib();
        let drift_kib = ledger_rss_kib.map(|l| l - mem.rss_kib as i64);
        let mut out = vec![Record::Mem {
            pid,
            comm: p.comm.clone(),
            sweep,
            mem,
            ledger_rss_kib,
            drift_kib,
        }];
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
        })
    }

    pub fn flagged(&self, pid: u32) -> Option<Trend> {
        self.detectors.get(&pid)?.flagged
    }
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}
