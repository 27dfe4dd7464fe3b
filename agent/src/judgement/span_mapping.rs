//! Which mapping a leak grew in: the one whose pages grew over the span the verdict flagged,
//! in both of its halves, so a one-off fill just before (or at the start of) that span is not
//! named for a leak that runs elsewhere. Each pid keeps the cumulative growth (the ledger's
//! pages added by its faults and copy-on-write, hugetlb included) of the few mappings growing
//! fastest (the ledger's ~30 s rate) at a fixed number of checkpoints, thinned so they lie
//! about geometrically in age (dense recently, sparse back to the window): memory per pid is
//! fixed, never one entry per reading, whatever the window.
use std::collections::VecDeque;

use super::verdict::Params;
use crate::attribution::MappingId;

/// Checkpoints kept per pid.
const KEPT: usize = 24;
/// Mappings followed per pid.
const TRACKED: usize = 6;
/// Closest checkpoints, in shortest spans of the verdict.
const MIN_GAP_SPANS: f64 = 0.1;
/// A checkpoint taken before the mapping was followed.
const UNKNOWN: i64 = i64::MIN;

/// One followed mapping: its growth at each checkpoint (`UNKNOWN` before it was followed).
#[derive(Clone, Debug)]
struct Tracked {
    id: MappingId,
    growth: VecDeque<i64>,
}

impl Tracked {
    /// Its growth at checkpoint `i` (None: now), given `now`: where it was not followed yet,
    /// the first value known after (it grew by no less since).
    fn at(&self, i: Option<usize>, now: i64) -> i64 {
        i.and_then(|i| self.growth.range(i..).copied().find(|&g| g != UNKNOWN)).unwrap_or(now)
    }
}

/// One pid's checkpoints.
#[derive(Clone, Debug)]
pub struct SpanMapping {
    /// Checkpoint times, oldest first.
    times: VecDeque<f64>,
    tracked: Vec<Tracked>,
    min_gap: f64,
    window: f64,
}

/// Push, growing by doubling up to `KEPT + 1`, no further: a pid seen once holds a few.
fn push<T>(d: &mut VecDeque<T>, v: T) {
    if d.len() == d.capacity() {
        d.reserve_exact((d.len() * 2).clamp(4, KEPT + 1) - d.len());
    }
    d.push_back(v);
}

impl Default for SpanMapping {
    fn default() -> SpanMapping {
        SpanMapping::new(&Params::default())
    }
}

impl SpanMapping {
    pub fn new(p: &Params) -> SpanMapping {
        SpanMapping {
            times: VecDeque::new(),
            tracked: Vec::new(),
            min_gap: p.min_span_s * MIN_GAP_SPANS,
            window: p.window_s,
        }
    }

    /// A checkpoint at `t` (seconds, never going back) unless the last one is closer than the
    /// smallest gap: the mappings growing fastest now (`rates`) are followed from here on (in
    /// place of the slowest followed ones), and each followed one's cumulative `growth` kept.
    pub fn record<'a>(
        &mut self,
        t: f64,
        rates: impl Iterator<Item = (&'a MappingId, f64)>,
        growth: impl Fn(&MappingId) -> i64,
    ) {
        if self.times.back().is_some_and(|&c| t - c < self.min_gap) {
            return;
        }
        let mut fast: Vec<(&MappingId, f64)> = rates.filter(|r| r.1 > 0.0).collect();
        let by_rate = |a: &(&MappingId, f64), b: &(&MappingId, f64)| b.1.total_cmp(&a.1).then(a.0.cmp(b.0));
        if fast.len() > TRACKED {
            fast.select_nth_unstable_by(TRACKED - 1, by_rate);
            fast.truncate(TRACKED);
        }
        let rate = |id: &MappingId| fast.iter().find(|f| f.0 == id).map_or(0.0, |f| f.1);
        for &(id, r) in &fast {
            if self.tracked.iter().any(|k| &k.id == id) {
                continue;
            }
            let fresh = Tracked { id: id.clone(), growth: self.times.iter().map(|_| UNKNOWN).collect() };
            if self.tracked.len() < TRACKED {
                self.tracked.push(fresh);
                continue;
            }
            // The slowest followed one gives way, if slower.
            let (slowest, r0) = self
                .tracked
                .iter()
                .enumerate()
                .map(|(i, k)| (i, rate(&k.id)))
                .min_by(|a, b| a.1.total_cmp(&b.1))
                .expect("TRACKED > 0");
            if r0 < r {
                self.tracked[slowest] = fresh;
            }
        }
        push(&mut self.times, t);
        for k in &mut self.tracked {
            push(&mut k.growth, growth(&k.id));
        }
        // One at or before the window's start is kept (the longest span starts there).
        while self.times.get(1).is_some_and(|&c| c <= t - self.window) {
            self.remove(0);
        }
        while self.times.len() > KEPT {
            self.thin(t);
        }
    }

    fn remove(&mut self, i: usize) {
        self.times.remove(i);
        for k in &mut self.tracked {
            k.growth.remove(i);
        }
    }

    /// Drop the inner checkpoint whose loss leaves the smallest gap for its age: a lookup in
    /// that gap lands at most that share of its age late.
    fn thin(&mut self, now: f64) {
        let c = &self.times;
        let cost = |i: usize| (c[i + 1] - c[i - 1]) / (now - c[i - 1]).max(1e-9);
        let drop = (1..c.len() - 1).min_by(|&a, &b| cost(a).total_cmp(&cost(b))).expect("more than KEPT");
        self.remove(drop);
    }

    /// The first checkpoint at or after `t` (None: none is; the values now stand for it).
    fn at(&self, t: f64) -> Option<usize> {
        let i = self.times.partition_point(|&c| c < t - 1e-6);
        (i < self.times.len()).then_some(i)
    }

    /// The mapping that grew over the span of `span_s` seconds ending at `now`, of those
    /// followed, given each one's cumulative `growth` now: the most growth in the span's weaker
    /// half (steady growth grows in both; a fill that stopped, in one), ties to the larger
    /// growth over the span; else the one that grew most over the span. None when none grew.
    ///
    /// Each half is read from the first checkpoint at or after its start, so a fill that
    /// ended before the span's middle never counts in its second half.
    pub fn grown_most(&self, now: f64, span_s: f64, growth: impl Fn(&MappingId) -> i64) -> Option<MappingId> {
        let (c0, c1) = (self.at(now - span_s), self.at(now - span_s / 2.0));
        let best = self
            .tracked
            .iter()
            .map(|k| {
                let g = growth(&k.id);
                let (g0, g1) = (k.at(c0, g), k.at(c1, g));
                ((g1 - g0).min(g - g1).max(0), g - g0, &k.id)
            })
            .max_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)).then(b.2.cmp(a.2)))?;
        (best.1 > 0).then(|| best.2.clone())
    }

    /// Checkpoints held (for the bound's test).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.times.len()
    }
}

#[cfg(test)]
mod tests {
    //! Accelerated time: a pid's mappings as cumulative growth functions of simulated time,
    //! recorded at every reading (each 1 s or 2 s) as the judge records them.
    use super::*;

    fn id(name: &str, shared: bool) -> MappingId {
        MappingId { name: name.into(), shared }
    }

    type Growth = Box<dyn Fn(f64) -> i64>;

    /// Record `maps` every `every` s up to `until` (the rate: what each grew over the last
    /// 30 s, as the ledger's smoothed rate tells); then the mapping named for a span of `span`
    /// ending there.
    fn named(p: &Params, every: f64, until: f64, span: f64, maps: &[(MappingId, Growth)]) -> Option<MappingId> {
        let mut log = SpanMapping::new(p);
        let growth = |t: f64| move |id: &MappingId| maps.iter().find(|m| &m.0 == id).map_or(0, |m| m.1(t));
        let mut t = 0.0;
        while t <= until + 1e-9 {
            let rates = maps.iter().map(|(m, f)| (m, (f(t) - f(t - 30.0)) as f64));
            log.record(t, rates, growth(t));
            t += every;
        }
        log.grown_most(until, span, growth(until))
    }

    /// Some libraries, faulted in once at the start.
    fn libs() -> Vec<(MappingId, Growth)> {
        (0..8i64)
            .map(|i| (id(&format!("/usr/lib/lib{i}.so"), false), Box::new(move |_| 200 + 10 * i) as Growth))
            .collect()
    }

    /// `pages` faulted between `from` and `from + secs`, then nothing.
    fn fill(from: f64, secs: f64, pages: i64) -> Growth {
        Box::new(move |t| (pages as f64 * ((t - from) / secs).clamp(0.0, 1.0)) as i64)
    }

    /// `per_s` pages a second from `from` on.
    fn leak(from: f64, per_s: f64) -> Growth {
        Box::new(move |t| (per_s * (t - from).max(0.0)) as i64)
    }

    #[test]
    fn a_shared_fill_before_the_span_is_not_named_for_a_private_leak() {
        // The seed's case: 4 GiB of a shared segment faulted in over 3 s, then 1 MiB/s of
        // private anon; the verdict flags 21 s later over its shortest span (20 s).
        let mut maps = libs();
        maps.push((id("/memfd:seg (deleted)", true), fill(10.0, 3.0, 1 << 20)));
        maps.push((id("anon@0x7f0000000000", false), leak(13.0, 256.0)));
        let p = Params::default();
        assert_eq!(named(&p, 1.0, 34.0, 20.0, &maps), Some(id("anon@0x7f0000000000", false)));
        // Also when the flagged span reaches back into the fill (its first half holds it).
        assert_eq!(named(&p, 1.0, 30.0, 20.0, &maps), Some(id("anon@0x7f0000000000", false)));
        // And over the longest span, which holds all of it.
        assert_eq!(named(&p, 1.0, 300.0, 300.0, &maps), Some(id("anon@0x7f0000000000", false)));
    }

    #[test]
    fn a_hugetlb_leak_after_a_fill_is_named() {
        // One 2 MiB page (512 base pages) every 2 s after a 1 GiB shared fill: a staircase.
        let mut maps = libs();
        maps.push((id("/memfd:seg (deleted)", true), fill(5.0, 1.0, 262_144)));
        maps.push((id("/memfd:huge (deleted)", true), Box::new(|t: f64| 512 * ((t - 6.0).max(0.0) / 2.0) as i64)));
        assert_eq!(named(&Params::default(), 1.0, 28.0, 20.0, &maps), Some(id("/memfd:huge (deleted)", true)));
    }

    #[test]
    fn a_leak_into_the_filled_segment_itself_is_named() {
        // The segment filled, then grown steadily: it is where the leak goes.
        let mut maps = libs();
        maps.push((
            id("/dev/shm/seg", true),
            Box::new(|t: f64| if t < 5.0 { 0 } else { 65_536 + 256 * (t - 6.0).max(0.0) as i64 }),
        ));
        maps.push((id("[heap]", false), leak(0.0, 2.0)));
        assert_eq!(named(&Params::default(), 1.0, 40.0, 20.0, &maps), Some(id("/dev/shm/seg", true)));
    }

    #[test]
    fn a_fill_inside_the_span_does_not_beat_steady_growth() {
        // The fill lies wholly inside the flagged span, early or late: it grew in one half only.
        for fill_at in [22.0, 33.0] {
            let mut maps = libs();
            maps.push((id("shmem-anon@0x7f1000000000", true), fill(fill_at, 2.0, 500_000)));
            maps.push((id("anon@0x7f2000000000", false), leak(0.0, 64.0)));
            let got = named(&Params::default(), 2.0, 40.0, 20.0, &maps);
            assert_eq!(got, Some(id("anon@0x7f2000000000", false)), "fill at {fill_at}");
        }
    }

    #[test]
    fn the_faster_of_two_steady_leaks_is_named_and_growth_in_one_half_is_the_fallback() {
        let mut maps = libs();
        maps.push((id("anon@0x1000", false), leak(0.0, 100.0)));
        maps.push((id("anon@0x9000", false), leak(0.0, 300.0)));
        assert_eq!(named(&Params::default(), 1.0, 60.0, 40.0, &maps), Some(id("anon@0x9000", false)));
        // A leak that moved from one mapping to another halfway: neither grew in both halves;
        // the one that grew more over the span is named.
        let mut maps = libs();
        maps.push((id("anon@0x1000", false), Box::new(|t: f64| 100 * t.min(30.0) as i64)));
        maps.push((id("anon@0x9000", false), leak(30.0, 150.0)));
        assert_eq!(named(&Params::default(), 1.0, 50.0, 40.0, &maps), Some(id("anon@0x9000", false)));
        // Nothing grew in the span: none.
        assert_eq!(named(&Params::default(), 1.0, 100.0, 40.0, &libs()), None);
    }

    #[test]
    fn a_leak_smaller_than_many_static_mappings_is_named() {
        // Many mappings far larger than the leak, faulted in once: never followed, never named.
        let mut maps: Vec<(MappingId, Growth)> =
            (0..12i64).map(|i| (id(&format!("/big{i}"), false), Box::new(move |_| 50_000 + i) as Growth)).collect();
        maps.push((id("/memfd:seg", true), fill(0.0, 1.0, 1 << 20)));
        maps.push((id("anon@0x5000", false), leak(60.0, 256.0)));
        assert_eq!(named(&Params::default(), 1.0, 90.0, 20.0, &maps), Some(id("anon@0x5000", false)));
    }

    #[test]
    fn the_long_window_names_the_slow_leak_after_a_large_fill() {
        // serve: 6 h window, 12-min shortest span. A 64 GiB shared fill at 1 h, an 8 KiB/s
        // (2 pages/s) private leak from then on, flagged over spans from 12 min to 6 h.
        let p = crate::judgement::slow_leak::params(6.0 * 3600.0, None, None);
        let mut maps = libs();
        maps.push((id("/SYSV00000000 (shmid 3)", true), fill(3600.0, 30.0, 16 << 20)));
        maps.push((id("anon@0x7f3000000000", false), leak(3630.0, 2.0)));
        let leak_id = Some(id("anon@0x7f3000000000", false));
        for (until, span) in [(3630.0 + 800.0, 720.0), (3630.0 + 3000.0, 2880.0), (3600.0 * 8.0, 21_600.0)] {
            assert_eq!(named(&p, 5.0, until, span, &maps), leak_id, "{span} s span at {until}");
        }
    }

    #[test]
    fn checkpoints_are_a_fixed_number_spread_over_the_window() {
        for p in [Params::default(), crate::judgement::slow_leak::params(6.0 * 3600.0, None, None)] {
            // Two days of readings every 2 s, a mapping more every hour.
            let mut log = SpanMapping::new(&p);
            let names: Vec<MappingId> = (0..64).map(|i| id(&format!("anon@{i:#x}"), false)).collect();
            let days = 2 * 24 * 3600;
            for s in (0..days).step_by(2) {
                let n = (s / 3600 + 1).min(names.len());
                // Each grows, the newest fastest.
                let rates = names[..n].iter().enumerate().map(|(i, m)| (m, 1.0 + i as f64));
                log.record(s as f64, rates, |_| s as i64);
                assert!(log.len() <= KEPT && log.tracked.len() <= TRACKED);
            }
            assert!(log.times.capacity() <= KEPT + 1);
            assert!(log.tracked.iter().all(|k| k.growth.len() == log.len() && k.growth.capacity() <= KEPT + 1));
            // Every age from 3 smallest gaps (the last checkpoint may be one gap old) to the
            // window is read from a checkpoint less than a third of that age late.
            let now = (days - 2) as f64;
            let mut age = 3.0 * log.min_gap;
            while age <= p.window_s {
                let c = log.at(now - age);
                let late = c.map_or(age, |c| log.times[c] - (now - age));
                assert!(late <= age / 3.0 + 1e-6, "{:?}: age {age}: {late} s late", p.window_s);
                age *= 1.1;
            }
        }
    }
}
