//! Reconcile and flag: each smaps reading is checked against the eBPF ledger (RSS drift) and fed
//! to the pid's leak detector together with the pages its own faults added. The judgement owns
//! what it learned of each pid: its last reading, its peak USS, its detector.
use std::collections::HashMap;

use super::verdict::{Detector, Params, Sample};
use crate::{
    attribution::Ledger,
    records::{Explain, MemStat, ProcSummary, Record},
};

/// What the judgement knows of one pid.
#[derive(Default)]
struct Judged {
    /// Its latest reading, and the ledger's own split (private, shared, released KiB) then.
    last: Option<(MemStat, (i64, i64, i64))>,
    peak_uss_kib: u64,
    detector: Detector,
}

/// One smaps reading of a pid, with the window it was taken in (ns since the watch start).
#[derive(Clone, Debug)]
pub struct Reading {
    pub pid: u32,
    pub sweep: u64,
    /// When it began, seconds since the watch start.
    pub t: f64,
    pub window: (u64, u64),
    pub mem: MemStat,
}

pub struct Judge {
    params: Params,
    procs: HashMap<u32, Judged>,
    leaks_flagged: u64,
}

impl Judge {
    pub fn new(params: Params) -> Judge {
        Judge { params, procs: HashMap::new(), leaks_flagged: 0 }
    }

    /// Leak records emitted so far (new verdicts and material rate changes).
    pub fn leaks_flagged(&self) -> u64 {
        self.leaks_flagged
    }

    /// The latest smaps reading of `pid`.
    pub fn last_mem(&self, pid: u32) -> Option<&MemStat> {
        self.procs.get(&pid)?.last.as_ref().map(|(m, _)| m)
    }

    /// The leak verdict of `pid`, if one was flagged (its last trend).
    pub fn leak_verdict(&self, pid: u32) -> Option<&super::verdict::Trend> {
        self.procs.get(&pid)?.detector.flagged.as_ref()
    }

    /// A fresh reading: its mem record, and a leak record when the verdict is new or its rate
    /// changed.
    pub fn on_reading(&mut self, ledger: &Ledger, r: Reading) -> Vec<Record> {
        let Some(p) = ledger.get(r.pid) else {
            return vec![];
        };
        let (mem, (from, to)) = (r.mem, r.window);
        let ledger_rss_kib = p.ledger_rss_near_kib(mem.rss_kib as i64, from, to);
        let drift_kib = ledger_rss_kib.map(|l| l - mem.rss_kib as i64);
        let own = p.own_split_near_kib(ledger.page_size(), mem.rss_kib as i64, from, to);
        let j = self.procs.entry(r.pid).or_default();
        j.peak_uss_kib = j.peak_uss_kib.max(mem.uss_kib);
        let explain = j.last.replace((mem.clone(), own)).map(|(prev, prev_own)| explain(&prev, prev_own, &mem, own));
        let comm = p.comm.clone();
        let mut out = vec![Record::Mem { pid: r.pid, comm, sweep: r.sweep, mem, ledger_rss_kib, drift_kib, explain }];
        out.extend(self.observe(ledger, r.pid, r.t));
        out
    }

    /// A pid not re-read this sweep because nothing of its own changed: its last reading
    /// still holds, and the detector sees it at `t`.
    pub fn carry_forward(&mut self, ledger: &Ledger, pid: u32, t: f64) -> Option<Record> {
        self.observe(ledger, pid, t)
    }

    fn observe(&mut self, ledger: &Ledger, pid: u32, t: f64) -> Option<Record> {
        let p = ledger.get(pid)?;
        let j = self.procs.get_mut(&pid)?;
        let (mem, _) = j.last.as_ref()?;
        let sample = Sample {
            t,
            uss_kib: mem.uss_kib as f64,
            pss_kib: mem.pss_kib as f64,
            own_kib: p.own_fault_kib(ledger.page_size()) as f64,
        };
        let trend = j.detector.observe(sample, &self.params)?;
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

    /// What the judgement adds to a pid's summary entry: peak USS, last PSS, its verdict.
    pub fn fill_summary(&self, s: &mut ProcSummary) {
        if let Some(j) = self.procs.get(&s.pid) {
            fill(s, j);
        }
    }

    /// Fill `s` from the state of its pid and drop that state: the process is gone for good.
    pub fn retire(&mut self, s: &mut ProcSummary) {
        if let Some(j) = self.procs.remove(&s.pid) {
            fill(s, &j);
        }
    }
}

fn fill(s: &mut ProcSummary, j: &Judged) {
    s.peak_uss_kib = j.peak_uss_kib;
    s.last_pss_kib = j.last.as_ref().map_or(0, |(m, _)| m.pss_kib);
    if let Some(t) = j.detector.flagged {
        s.leak = true;
        s.leak_rate_kib_s = Some(round2(t.rate_kib_s));
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
