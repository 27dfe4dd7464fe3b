//! Reconcile and flag: each smaps reading is checked against the eBPF ledger (RSS drift) and fed
//! to the pid's leak detector together with the pages its own faults added. The judgement owns
//! what it learned of each pid: its last reading, its peak USS, its detector.
use std::collections::{HashMap, VecDeque};

use super::{
    slow_leak::{self, SlowDetector},
    span_mapping::SpanMapping,
    verdict::{Change, Detector, Episode, Params, Sample, Trend},
};
use crate::{
    attribution::Ledger,
    records::{Explain, MemStat, ProcSummary, Record, VerdictSpan},
};

/// What the judgement knows of one pid.
#[derive(Default)]
struct Judged {
    /// Its latest reading, and the ledger's own split (private, shared, released KiB) then.
    last: Option<(MemStat, (i64, i64, i64))>,
    peak_uss_kib: u64,
    detector: Detector,
    /// With a window beyond the short verdict's reach: the long-window verdict, in its place.
    slow: Option<Box<SlowDetector>>,
    /// The mapping its last leak record named (and whether shared), for a withdrawal.
    leak_mapping: Option<(String, bool)>,
    /// Its mappings' growth at checkpoints back to the window: which grew over a flagged span.
    span_mapping: SpanMapping,
    /// Its own COW KiB at its latest reading (for `explain`).
    last_cow_kib: i64,
    /// (t, own fault KiB, own COW KiB) at each observation within the leak window: which of
    /// the two made the growth over a flagged span (`cause`).
    own_hist: VecDeque<(f64, i64, i64)>,
    /// The cause its last flagged verdict named.
    leak_cause: &'static str,
    /// The kernel's count of shmem pages it created, at its last reading (or first sight), and
    /// when that reading was taken.
    shmem_base: Option<i64>,
    read_t: f64,
    /// The ledger's anon RSS and hugetlb KiB at its last reading (or first sight).
    ledger_base: Option<(i64, i64)>,
    /// Judged from counts before its first reading: what that reading adds to every later
    /// sample, taken off (its USS is not growth), so the samples stay continuous.
    offset_kib: (f64, f64),
}

impl Judged {
    fn new(p: &Params) -> Judged {
        Judged {
            slow: slow_leak::is_long(p).then(|| Box::new(SlowDetector::new(p))),
            span_mapping: SpanMapping::new(p),
            ..Judged::default()
        }
    }

    fn step(&mut self, s: Sample, p: &Params) -> Option<Change> {
        match &mut self.slow {
            Some(d) => d.step(s, p),
            None => self.detector.step(s, p),
        }
    }

    /// The standing verdict.
    fn flagged(&self) -> Option<&Trend> {
        self.slow.as_ref().map_or(self.detector.flagged.as_ref(), |d| d.flagged.as_ref())
    }

    fn episodes(&self) -> Box<dyn Iterator<Item = &Episode> + '_> {
        match &self.slow {
            Some(d) => Box::new(d.episodes()),
            None => Box::new(self.detector.episodes()),
        }
    }
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
    /// How old the pid's previous reading was at `t`, seconds.
    pub prev_age_s: Option<f64>,
}

pub struct Judge {
    params: Params,
    procs: HashMap<u32, Judged>,
    /// Processes that exited while a verdict stood.
    retired_standing: u64,
    /// The kernel's count of shmem pages each pid created (`kernel/shmem_count.rs`), as of the
    /// last sweep; `None` without the tracepoint.
    shmem_pages: Option<HashMap<u32, i64>>,
}

impl Judge {
    /// As `Ledger::shrink`.
    pub fn shrink(&mut self) {
        self.procs.shrink_to(self.procs.len() * 2);
    }

    pub fn new(params: Params) -> Judge {
        Judge { params, procs: HashMap::new(), retired_standing: 0, shmem_pages: None }
    }

    /// The kernel's shmem pages created per pid, read at a sweep's start.
    pub fn set_shmem_pages(&mut self, pages: HashMap<u32, i64>) {
        self.shmem_pages = Some(pages);
    }

    /// The verdict is weighing `pid`: a verdict stands, or its own faults grew by the least
    /// growth a leak needs over the last two minimum spans (its next readings decide).
    pub fn weighing(&self, pid: u32) -> bool {
        let Some(j) = self.procs.get(&pid) else { return false };
        let Some(&(now, f1, c1)) = j.own_hist.back() else { return false };
        let from = j.own_hist.iter().find(|h| h.0 >= now - 2.0 * self.params.min_span_s);
        j.flagged().is_some()
            || from.is_some_and(|&(_, f0, c0)| (f1 + c1 - f0 - c0) as f64 >= self.params.min_growth_kib)
    }

    /// Verdicts standing now: of live pids, and of pids that exited while theirs stood.
    pub fn leaks_standing(&self) -> u64 {
        self.retired_standing + self.procs.values().filter(|j| j.flagged().is_some()).count() as u64
    }

    /// The latest smaps reading of `pid`.
    pub fn last_mem(&self, pid: u32) -> Option<&MemStat> {
        self.procs.get(&pid)?.last.as_ref().map(|(m, _)| m)
    }

    /// The leak verdict of `pid`, if one stands (its last trend).
    pub fn leak_verdict(&self, pid: u32) -> Option<&super::verdict::Trend> {
        self.procs.get(&pid)?.flagged()
    }

    /// A fresh reading: its mem record, and a leak record when the verdict is new, its rate
    /// changed, or it was withdrawn.
    pub fn on_reading(&mut self, ledger: &Ledger, r: Reading) -> Vec<Record> {
        let Some(p) = ledger.get(r.pid) else {
            return vec![];
        };
        let (mem, (from, to)) = (r.mem, r.window);
        let ledger_rss_kib = p.ledger_rss_near_kib(mem.rss_kib as i64, from, to);
        let drift_kib = ledger_rss_kib.map(|l| l - mem.rss_kib as i64);
        let own = p.own_split_near_kib(ledger.page_size(), mem.rss_kib as i64, from, to);
        let j = self.procs.entry(r.pid).or_insert_with(|| Judged::new(&self.params));
        j.peak_uss_kib = j.peak_uss_kib.max(mem.uss_kib);
        let shmem_now = self.shmem_pages.as_ref().map(|m| m.get(&r.pid).copied().unwrap_or(0));
        let (anon, huge) = anon_huge_kib(p, ledger.page_size());
        if let (None, Some(s0), Some((a0, h0))) = (&j.last, j.shmem_base, j.ledger_base) {
            // The estimate so far began at 0: this reading continues it.
            let counted = (shmem_now.unwrap_or(s0) - s0) * ledger.page_size() / 1024 + (anon - a0) + (huge - h0);
            let total = |kib: u64| (kib + mem.private_hugetlb_kib) as f64 - counted as f64;
            j.offset_kib = (total(mem.uss_kib), total(mem.pss_kib));
        }
        j.shmem_base = shmem_now;
        j.read_t = r.t;
        j.ledger_base = Some((anon, huge));
        let explain = j.last.replace((mem.clone(), own)).map(|(prev, prev_own)| explain(&prev, prev_own, &mem, own));
        let cow_kib = p.own_cow_kib(ledger.page_size());
        let explain = explain.map(|e| Explain { cow_kib: cow_kib - j.last_cow_kib, ..e });
        j.last_cow_kib = cow_kib;
        let comm = p.comm.clone();
        let mut out = vec![Record::Mem {
            pid: r.pid,
            comm,
            sweep: r.sweep,
            prev_age_s: r.prev_age_s,
            mem,
            ledger_rss_kib,
            drift_kib,
            ledger_hugetlb_kib: p.hugetlb_kib(ledger.page_size()),
            explain,
            mm_shared_with: ledger.mm_shared_with(r.pid),
        }];
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
        let shmem_now = self.shmem_pages.as_ref().map(|m| m.get(&pid).copied().unwrap_or(0));
        let j = match shmem_now {
            Some(_) => self.procs.entry(pid).or_insert_with(|| Judged::new(&self.params)),
            None => self.procs.get_mut(&pid)?,
        };
        // Between readings, the shmem pages it created since its last one (the kernel's count)
        // are added to that reading's USS and PSS: a new page is in its page tables alone. So a
        // shared-segment leak does not wait for smaps; the next reading audits the estimate.
        let created_kib = shmem_now.map_or(0, |n| (n - *j.shmem_base.get_or_insert(n)) * ledger.page_size() / 1024);
        // Likewise the private anon and hugetlb pages its mm gained (the ledger's counters: a
        // new anon page is private; a churner's come and go): a private or hugetlb leak is
        // flagged when readings are rare, and each reading resets the estimate.
        let (anon, huge) = anon_huge_kib(p, ledger.page_size());
        let (anon0, huge0) = *j.ledger_base.get_or_insert((anon, huge));
        let faulted_kib = (anon - anon0) + (huge - huge0);
        let (uss_kib, pss_kib) = match &j.last {
            // hugetlb pages are in no smaps figure but their own: its private ones are its USS.
            Some((m, _)) => ((m.uss_kib + m.private_hugetlb_kib) as f64, (m.pss_kib + m.private_hugetlb_kib) as f64),
            None if shmem_now.is_some() => (0.0, 0.0),
            None => return None,
        };
        // Own growth: pages its faults added to RSS, and pages its COW writes made private.
        let (fault_kib, cow_kib) = (p.own_fault_kib(ledger.page_size()), p.own_cow_kib(ledger.page_size()));
        j.own_hist.push_back((t, fault_kib, cow_kib));
        j.span_mapping.record(t, p.mapping_rates(), |id| p.mapping_growth(id));
        // Bounded by the short verdict's reach: a long-window verdict's cause is that of its
        // last 5 minutes.
        while j.own_hist.front().is_some_and(|h| t - h.0 > self.params.window_s.min(slow_leak::SHORT_REACH)) {
            j.own_hist.pop_front();
        }
        let sample = Sample {
            t,
            uss_kib: uss_kib + (created_kib + faulted_kib) as f64 - j.offset_kib.0,
            pss_kib: pss_kib + (created_kib + faulted_kib) as f64 - j.offset_kib.1,
            own_kib: (fault_kib + cow_kib) as f64,
        };
        let (trend, state, withdrawn) = match j.step(sample, &self.params)? {
            Change::Flagged(tr) => {
                // Where its pages grew over the flagged span (else where they grow now).
                let grown = j.span_mapping.grown_most(t, tr.span_s, |id| p.mapping_growth(id));
                let m = grown.or_else(|| p.growing_mapping());
                let name = m.as_ref().map_or_else(|| "?".into(), |m| m.name.to_string());
                j.leak_mapping = Some((name, m.is_some_and(|m| m.shared)));
                j.leak_cause = cause_over(&j.own_hist, tr.span_s);
                (tr, "flagged", None)
            }
            Change::Withdrawn(e) => (e.trend, "withdrawn", e.withdrawn.map(|(_, r)| (r.name(), round2(e.flagged_at)))),
        };
        let (mapping, shared) = j.leak_mapping.clone().unwrap_or_else(|| ("?".into(), false));
        let mut rec = leak_record(pid, p.comm.clone(), &trend, (mapping, shared), state, withdrawn);
        // No smaps reading within the flagged span: all of its growth is the kernel's counts.
        let kernel_only = j.last.is_none() || j.read_t < t - trend.span_s;
        if let Record::Leak { cause, metric, .. } = &mut rec {
            *cause = j.leak_cause;
            if kernel_only && created_kib.max(faulted_kib) > 0 {
                *metric = if created_kib >= faulted_kib { "shmem_created" } else { "faulted" };
            }
        }
        Some(rec)
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
            self.retired_standing += u64::from(j.flagged().is_some());
        }
    }
}

/// The ledger's anon RSS of the mm `p` runs on, and the hugetlb it maps, KiB.
fn anon_huge_kib(p: &crate::attribution::Proc, page: i64) -> (i64, i64) {
    let anon = p.mms.last().map_or(0, |c| c.rss[agent_common::member::ANON as usize] / 1024);
    (anon, p.hugetlb_kib(page).unwrap_or(0))
}

/// A `leak` record: a verdict flagged, or withdrawn (`reason`, flagged at).
fn leak_record(
    pid: u32,
    comm: String,
    t: &Trend,
    (mapping, shared): (String, bool),
    state: &'static str,
    withdrawn: Option<(&'static str, f64)>,
) -> Record {
    Record::Leak {
        pid,
        comm,
        rate_kib_s: round2(t.rate_kib_s),
        window_s: round2(t.span_s),
        growth_kib: t.growth_kib.round() as i64,
        metric: t.metric.name(),
        mapping,
        shared,
        confidence: t.confidence,
        cause: "faults",
        state,
        reason: withdrawn.map(|w| w.0),
        flagged_at: withdrawn.map(|w| w.1),
        smaps_mapping: None,
        stacks: Vec::new(),
    }
}

fn fill(s: &mut ProcSummary, j: &Judged) {
    s.peak_uss_kib = j.peak_uss_kib;
    s.last_pss_kib = j.last.as_ref().map_or(0, |(m, _)| m.pss_kib);
    if let Some(t) = j.flagged() {
        s.leak = true;
        s.leak_rate_kib_s = Some(round2(t.rate_kib_s));
    }
    s.verdicts = j
        .episodes()
        .map(|e| VerdictSpan {
            flagged_at: round2(e.flagged_at),
            withdrawn_at: e.withdrawn.map(|(t, _)| round2(t)),
            reason: e.withdrawn.map(|(_, r)| r.name()),
            rate_kib_s: round2(e.trend.rate_kib_s),
        })
        .collect();
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
        cow_kib: 0,
        sharing_kib: delta_pss_kib - delta_rss_kib,
    }
}

/// What made the growth over the last `span_s` seconds of `hist` (t, own fault KiB, own COW
/// KiB): `cow` when its COW writes made more private than its faults added, else `faults`.
fn cause_over(hist: &VecDeque<(f64, i64, i64)>, span_s: f64) -> &'static str {
    let Some(&(now, f1, c1)) = hist.back() else { return "faults" };
    let (_, f0, c0) = hist.iter().find(|h| h.0 >= now - span_s - 1e-6).copied().unwrap_or((now, f1, c1));
    if c1 - c0 > f1 - f0 {
        "cow"
    } else {
        "faults"
    }
}

/// Two decimals, as the records carry rates and times.
pub(super) fn round2(v: f64) -> f64 {
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
            hugetlb_kib: 0,
            shared_hugetlb_kib: 0,
            private_hugetlb_kib: 0,
        }
    }

    #[test]
    fn the_cause_is_what_grew_most_over_the_flagged_span() {
        // A worker that first-touched 64 MiB long ago, then made 1 MiB/s private by COW.
        let hist: VecDeque<_> = (0..=60).map(|i| (i as f64, 65_536 + 8 * i, 1024 * (i - 30).max(0))).collect();
        assert_eq!(cause_over(&hist, 20.0), "cow");
        // Over the first 30 s it was only faults.
        let early: VecDeque<_> = hist.iter().copied().take(31).collect();
        assert_eq!(cause_over(&early, 20.0), "faults");
        assert_eq!(cause_over(&VecDeque::new(), 20.0), "faults");
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

    /// A judge whose pids saw `f(t)` (USS = PSS = own faults) every 2 s for `secs`.
    fn judged(judge: &mut Judge, pid: u32, secs: usize, f: impl Fn(f64) -> f64) {
        let j = judge.procs.entry(pid).or_default();
        for i in 0..=secs / 2 {
            let t = i as f64 * 2.0;
            j.detector.step(Sample { t, uss_kib: f(t), pss_kib: f(t), own_kib: f(t) }, &judge.params);
        }
    }

    fn entry(pid: u32) -> ProcSummary {
        ProcSummary {
            pid,
            comm: "p".into(),
            faults: 0,
            pages: Default::default(),
            other_pages: 0,
            causes: Default::default(),
            peak_uss_kib: 0,
            last_pss_kib: 0,
            mappings: vec![],
            leak: false,
            leak_rate_kib_s: None,
            verdicts: vec![],
            stacks: vec![],
        }
    }

    #[test]
    fn only_verdicts_standing_at_the_end_count_and_exits_while_flagged_do() {
        let mut judge = Judge::new(Params::default());
        let leak = |t: f64| 1024.0 * t;
        // Ramps of 30 s back to the floor.
        let saw = |t: f64| if t % 32.0 <= 30.0 { 1024.0 * (t % 32.0) } else { 0.0 };
        judged(&mut judge, 1, 100, leak);
        judged(&mut judge, 2, 100, saw);
        judged(&mut judge, 3, 100, leak);
        judged(&mut judge, 4, 100, saw);
        assert_eq!(judge.leaks_standing(), 2);
        // 3 exits while flagged: still counted; 4 exits withdrawn: not.
        let (mut s3, mut s4) = (entry(3), entry(4));
        judge.retire(&mut s3);
        judge.retire(&mut s4);
        assert_eq!(judge.leaks_standing(), 2);
        assert!(s3.leak && s3.verdicts.len() == 1 && s3.verdicts[0].withdrawn_at.is_none(), "{s3:?}");

        let mut s2 = entry(2);
        judge.fill_summary(&mut s2);
        assert!(!s2.leak && s2.leak_rate_kib_s.is_none(), "{s2:?}");
        let v = &s2.verdicts[0];
        assert_eq!((v.withdrawn_at, v.reason), (Some(32.0), Some("fell_back")), "{s2:?}");
        assert!(v.flagged_at < 30.0 && (v.rate_kib_s - 1024.0).abs() < 100.0, "{v:?}");
        let json = serde_json::to_value(&s2).unwrap();
        assert_eq!(json["leak"], false);
        assert_eq!(json["verdicts"][0]["withdrawn_at"], 32.0);
        // Never flagged: no list at all.
        assert!(serde_json::to_value(entry(9)).unwrap().get("verdicts").is_none());
    }
}
