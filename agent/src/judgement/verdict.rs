//! Leak verdicts: a robust trend (Theil–Sen slope) over recent smaps readings, backed by the
//! pid's own faulted pages, sustained across the span (a single step, a fill that plateaus, or
//! churn do not qualify), above a minimum rate and duration.
use std::collections::VecDeque;

/// One smaps reading of a pid, with the pages its own faults had added so far.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    pub t: f64,
    pub uss_kib: f64,
    pub pss_kib: f64,
    /// Cumulative net KiB added to RSS by this pid's own faults.
    pub own_kib: f64,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Params {
    /// Longest span looked at, seconds (`--leak-window`).
    pub window_s: f64,
    /// Slowest growth called a leak, KiB/s (`--leak-min-rate`).
    pub min_rate_kib_s: f64,
    /// Shortest span of sustained growth called a leak, seconds.
    pub min_span_s: f64,
    /// Least growth called a leak, KiB.
    pub min_growth_kib: f64,
}

impl Default for Params {
    fn default() -> Params {
        Params { window_s: 300.0, min_rate_kib_s: 32.0, min_span_s: 20.0, min_growth_kib: 1024.0 }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    Uss,
    Pss,
}

impl Metric {
    pub fn name(self) -> &'static str {
        match self {
            Metric::Uss => "uss",
            Metric::Pss => "pss",
        }
    }
    pub fn of(self, s: &Sample) -> f64 {
        match self {
            Metric::Uss => s.uss_kib,
            Metric::Pss => s.pss_kib,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Trend {
    pub metric: Metric,
    pub rate_kib_s: f64,
    pub span_s: f64,
    pub growth_kib: f64,
    /// Share of consecutive readings that did not go down.
    pub monotonic: f64,
    /// Own faulted KiB over the span, relative to the growth (capped at 1).
    pub own_share: f64,
    pub confidence: f64,
}

/// Median of the pairwise slopes.
pub fn theil_sen(points: &[(f64, f64)]) -> f64 {
    let mut slopes = Vec::with_capacity(points.len() * points.len() / 2);
    for (i, a) in points.iter().enumerate() {
        for b in &points[i + 1..] {
            let dt = b.0 - a.0;
            if dt > 0.0 {
                slopes.push((b.1 - a.1) / dt);
            }
        }
    }
    if slopes.is_empty() {
        return 0.0;
    }
    let mid = slopes.len() / 2;
    let (_, m, _) = slopes.select_nth_unstable_by(mid, f64::total_cmp);
    *m
}

/// Is `samples` (oldest first) sustained growth of `metric`?
pub fn assess(samples: &[Sample], metric: Metric, p: &Params) -> Option<Trend> {
    if samples.len() < 5 {
        return None;
    }
    let (first, last) = (samples[0], samples[samples.len() - 1]);
    let span = last.t - first.t;
    if span < p.min_span_s {
        return None;
    }
    let pts: Vec<(f64, f64)> = samples.iter().map(|s| (s.t, metric.of(s))).collect();
    let rate = theil_sen(&pts);
    let growth = rate * span;
    if rate < p.min_rate_kib_s || growth < p.min_growth_kib || metric.of(&last) - metric.of(&first) < growth / 2.0 {
        return None;
    }
    // Sustained: each third of the span grows by at least a quarter of its share. A single
    // step, or a fill that then plateaus, leaves a flat third.
    for k in 0..3 {
        let (t0, t1) = (first.t + span * k as f64 / 3.0, first.t + span * (k + 1) as f64 / 3.0);
        let at = |t: f64| {
            let s = samples.iter().min_by(|a, b| (a.t - t).abs().total_cmp(&(b.t - t).abs())).expect("non-empty");
            metric.of(s)
        };
        if at(t1) - at(t0) < 0.25 * rate * (t1 - t0) {
            return None;
        }
    }
    // Of the readings that moved, most went up (a leak's equal readings are between steps;
    // churn goes up as often as down).
    let ups = pts.windows(2).filter(|w| w[1].1 > w[0].1).count();
    let downs = pts.windows(2).filter(|w| w[1].1 < w[0].1).count();
    let monotonic = ups as f64 / (ups + downs).max(1) as f64;
    if monotonic < 0.75 {
        return None;
    }
    // The growth stands out of the noise around the trend (median absolute residual).
    let mut residuals: Vec<f64> =
        pts.iter().map(|&(t, v)| (v - (metric.of(&first) + rate * (t - first.t))).abs()).collect();
    let mid = residuals.len() / 2;
    let (_, mad, _) = residuals.select_nth_unstable_by(mid, f64::total_cmp);
    if growth < 4.0 * *mad {
        return None;
    }
    // The pid's own faults must account for the growth: PSS that rises because a sibling
    // exited, or pages someone else faulted, are not this pid's leak.
    let own = last.own_kib - first.own_kib;
    let own_share = (own / growth).min(1.0);
    if own_share < 0.5 {
        return None;
    }
    // ...and keep accounting for it: over the last two thirds of the span too. Own faults at
    // its start only (a heap filled, then shared by a fork: the children's copy-on-write
    // leaves the parent's pages to it alone, a USS rise of the parent's without a fault) do
    // not (seen when a loaded machine slowed the fill past the first reading).
    let third = first.t + span / 3.0;
    let late = samples.iter().min_by(|a, b| (a.t - third).abs().total_cmp(&(b.t - third).abs())).expect("non-empty");
    if last.own_kib - late.own_kib < 0.5 * (metric.of(&last) - metric.of(late)) {
        return None;
    }
    let confidence = (monotonic * own_share * (span / 60.0).clamp(0.5, 1.0) * 100.0).round() / 100.0;
    Some(Trend { metric, rate_kib_s: rate, span_s: span, growth_kib: growth, monotonic, own_share, confidence })
}

/// Why a standing verdict was withdrawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// The metric fell back below the start of the flagged span plus half the growth since:
    /// the growth was given back (a sawtooth's drop, a cache emptied).
    FellBack,
    /// Over the most recent span as long as the one flagged (at least 3 minimum spans), the
    /// metric did not grow by half of what the slowest leak would have added.
    Stalled,
}

impl Reason {
    pub fn name(self) -> &'static str {
        match self {
            Reason::FellBack => "fell_back",
            Reason::Stalled => "stalled",
        }
    }
}

/// One verdict of a pid: when it was flagged, when and why it was withdrawn (seconds since the
/// watch start), its last trend.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Episode {
    pub flagged_at: f64,
    pub withdrawn: Option<(f64, Reason)>,
    pub trend: Trend,
}

/// What a reading changed: a verdict to report (new, or its rate changed materially), or the
/// standing verdict withdrawn.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Change {
    Flagged(Trend),
    Withdrawn(Episode),
}

/// The levels of a standing verdict's metric: at the start of its flagged span, and its peak.
#[derive(Clone, Copy, Debug)]
struct Levels {
    metric: Metric,
    base: f64,
    peak: f64,
}

/// Episodes kept per pid (the most recent).
const MAX_EPISODES: usize = 32;

/// A pid's verdicts so far, and what a withdrawal left: kept alike by the short verdict and the
/// long window's (`slow_leak.rs`).
#[derive(Debug, Default)]
pub(crate) struct Episodes {
    /// After a withdrawal: the level of that metric a new verdict must pass (the withdrawn
    /// verdict's peak and a margin), so a sawtooth back to its floor is not flagged anew on
    /// every ramp.
    pub(crate) ceiling: Option<(Metric, f64)>,
    /// The most recent ones (as many as `open` is told to keep), oldest first.
    pub(crate) list: VecDeque<Episode>,
}

impl Episodes {
    /// Open an episode for a new verdict on `best`, whose metric stands at `now`; false (and
    /// nothing opened) while it has not passed the ceiling a withdrawal left. Keeps `keep`.
    pub(crate) fn open(&mut self, best: Trend, now: &Sample, keep: usize) -> bool {
        if let Some((m, level)) = self.ceiling {
            if m == best.metric && m.of(now) <= level {
                return false;
            }
        }
        self.ceiling = None;
        if self.list.len() >= keep {
            self.list.pop_front();
        }
        self.list.push_back(Episode { flagged_at: now.t, withdrawn: None, trend: best });
        true
    }
}

/// The verdict state of one pid: its recent readings and what was last reported.
#[derive(Debug, Default)]
pub struct Detector {
    samples: VecDeque<Sample>,
    reported: Option<Trend>,
    /// The standing verdict (its latest trend); `None` before a flag and after a withdrawal.
    pub flagged: Option<Trend>,
    levels: Option<Levels>,
    episodes: Episodes,
}

/// Suffix spans tried (multiples of the minimum span), shortest first.
const SPANS: [f64; 5] = [1.0, 2.0, 4.0, 8.0, 15.0];

impl Detector {
    /// Add a reading; returns a trend to report when a leak is first seen, or when its rate
    /// changed by more than a third since the last report.
    pub fn observe(&mut self, s: Sample, p: &Params) -> Option<Trend> {
        match self.step(s, p)? {
            Change::Flagged(t) => Some(t),
            Change::Withdrawn(_) => None,
        }
    }

    /// The verdicts so far, oldest first (the last may stand).
    pub fn episodes(&self) -> impl Iterator<Item = &Episode> {
        self.episodes.list.iter()
    }

    /// Add a reading; returns what it changed in the verdict, if anything worth a record.
    pub fn step(&mut self, s: Sample, p: &Params) -> Option<Change> {
        self.samples.push_back(s);
        while self.samples.front().is_some_and(|f| s.t - f.t > p.window_s) {
            self.samples.pop_front();
        }
        let best = self.assess_recent(p);
        if let Some(e) = self.withdrawal(best.is_some(), p) {
            return Some(Change::Withdrawn(e));
        }
        let best = best?;
        if self.flagged.is_none() && !self.episodes.open(best, &s, MAX_EPISODES) {
            return None;
        }
        self.note_levels(&best);
        if let Some(e) = self.episodes.list.back_mut() {
            e.trend = best;
        }
        self.flagged = Some(best);
        let material = match self.reported {
            None => true,
            Some(r) => r.metric != best.metric || (best.rate_kib_s / r.rate_kib_s - 1.0).abs() > 1.0 / 3.0,
        };
        material.then(|| {
            self.reported = Some(best);
            Change::Flagged(best)
        })
    }

    /// The standing verdict's base (the earliest start of a span it was flagged on) and peak.
    fn note_levels(&mut self, t: &Trend) {
        let now = self.samples.back().expect("a reading").t;
        let span = self.samples.iter().filter(|x| x.t >= now - t.span_s - 1e-6);
        let base = span.clone().next().map_or(0.0, |x| t.metric.of(x));
        let peak = span.map(|x| t.metric.of(x)).fold(base, f64::max);
        match &mut self.levels {
            Some(l) if l.metric == t.metric => (l.base, l.peak) = (l.base.min(base), l.peak.max(peak)),
            l => *l = Some(Levels { metric: t.metric, base, peak }),
        }
    }

    /// Withdraw the standing verdict if its growth no longer holds: given back (fell below
    /// its base plus half its growth), or, with no trend found now, stalled.
    fn withdrawal(&mut self, trend_holds: bool, p: &Params) -> Option<Episode> {
        let (t, l) = (self.flagged?, self.levels.as_mut()?);
        let last = *self.samples.back()?;
        let v = l.metric.of(&last);
        l.peak = l.peak.max(v);
        let reason = if v < l.base + 0.5 * (l.peak - l.base) {
            Reason::FellBack
        } else if !trend_holds && self.stalled(&t, p) {
            Reason::Stalled
        } else {
            return None;
        };
        let l = self.levels.take()?;
        self.episodes.ceiling = Some((l.metric, l.peak + (0.25 * (l.peak - l.base)).max(p.min_growth_kib)));
        (self.flagged, self.reported) = (None, None);
        let e = self.episodes.list.back_mut()?;
        e.withdrawn = Some((last.t, reason));
        Some(*e)
    }

    /// No growth over the most recent span as long as `t`'s (at least 3 minimum spans, at most
    /// the window): less than half of what the slowest leak (`--leak-min-rate`, 1 MiB at least)
    /// would have added.
    fn stalled(&self, t: &Trend, p: &Params) -> bool {
        let (first, last) = (self.samples[0], self.samples[self.samples.len() - 1]);
        let span = t.span_s.max(3.0 * p.min_span_s).min(p.window_s);
        if last.t - first.t < 0.9 * span {
            return false;
        }
        let then = self
            .samples
            .iter()
            .min_by(|a, b| (a.t - (last.t - span)).abs().total_cmp(&(b.t - (last.t - span)).abs()))
            .expect("non-empty");
        t.metric.of(&last) - t.metric.of(then) < 0.5 * p.min_growth_kib.max(p.min_rate_kib_s * span)
    }

    fn assess_recent(&self, p: &Params) -> Option<Trend> {
        let v: Vec<Sample> = self.samples.iter().copied().collect();
        let now = v.last()?.t;
        let mut best = None;
        for mult in SPANS {
            let span = (p.min_span_s * mult).min(p.window_s);
            // From the last reading at or before the span's start: readings a period apart
            // within exactly `span` cover a little less than it (a timer a hair fast: always).
            let from = v.partition_point(|s| now - s.t > span).saturating_sub(1);
            let tail = &v[from..];
            let found = assess(tail, Metric::Uss, p).or_else(|| assess(tail, Metric::Pss, p));
            // The longest span whose rate still matches the recent one: more evidence, same
            // rate. A leak that sped up reports its current rate, not the average.
            match (best, found) {
                (None, f) => best = f,
                (Some(b), Some(f)) if (f.rate_kib_s / b.rate_kib_s - 1.0).abs() <= 1.0 / 3.0 => best = Some(f),
                (Some(_), _) => break,
            }
            if span >= p.window_s {
                break;
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Readings every 2 s of `f(t)` (USS = PSS), with own faults following the metric by
    /// default.
    fn series(secs: f64, f: impl Fn(f64) -> f64) -> Vec<Sample> {
        (0..=(secs / 2.0) as usize)
            .map(|i| {
                let t = i as f64 * 2.0;
                Sample { t, uss_kib: f(t), pss_kib: f(t), own_kib: f(t) }
            })
            .collect()
    }

    /// Feed a series to a detector; the first report and the last flagged state.
    fn run(samples: &[Sample]) -> (Option<Trend>, Option<(f64, Trend)>) {
        let mut d = Detector::default();
        let p = Params::default();
        let mut first = None;
        for s in samples {
            if let Some(t) = d.observe(*s, &p) {
                first.get_or_insert((s.t, t));
            }
        }
        (d.flagged, first)
    }

    fn assert_rate(t: &Trend, want: f64) {
        assert!((t.rate_kib_s - want).abs() <= want * 0.10, "rate {} vs {want}", t.rate_kib_s);
    }

    #[test]
    fn theil_sen_ignores_an_outlier() {
        let mut pts: Vec<(f64, f64)> = (0..10).map(|i| (i as f64, 3.0 * i as f64)).collect();
        pts[5].1 = 1000.0;
        assert!((theil_sen(&pts) - 3.0).abs() < 1e-9);
    }

    #[test]
    fn linear_leak_of_1_mib_s_is_flagged_within_30_s() {
        let (flag, first) = run(&series(120.0, |t| 50_000.0 + 1024.0 * t));
        assert_rate(&flag.unwrap(), 1024.0);
        let (at, t) = first.unwrap();
        assert!(at <= 30.0, "flagged at {at}s");
        assert_eq!(t.metric, Metric::Uss);
        assert!(t.confidence > 0.4, "{t:?}");
    }

    #[test]
    fn readings_a_hair_under_a_second_apart_are_judged_over_the_shortest_span() {
        // A sweep timer a hair fast: 20 readings back lie 19.998 s back, so a window of exactly
        // the shortest span never covers it, and the next window holds the fill before the leak
        // (256 MiB, then 1 MiB/s). Seen on a real run: flagged only by chance, or never.
        let s: Vec<Sample> = (0..36)
            .map(|i| {
                let t = i as f64 * 0.9999;
                let v = if t < 2.5 { 30_000.0 } else { 292_144.0 + 1024.0 * (t - 2.5) };
                Sample { t, uss_kib: v, pss_kib: v, own_kib: v }
            })
            .collect();
        let (flag, first) = run(&s);
        let (at, t) = first.expect("flagged");
        assert!(at <= 24.0, "flagged at {at}");
        assert!(t.span_s >= 20.0 && t.span_s < 22.0, "{t:?}");
        assert_rate(&flag.unwrap(), 1024.0);
    }

    #[test]
    fn slow_leak_of_64_kib_s_is_flagged_within_5_minutes() {
        let (flag, first) = run(&series(400.0, |t| 80_000.0 + 64.0 * t));
        assert_rate(&flag.unwrap(), 64.0);
        assert!(first.unwrap().0 <= 300.0);
    }

    #[test]
    fn staircase_leak_is_flagged_with_its_average_rate() {
        // +5 MiB every 10 s.
        let (flag, _) = run(&series(120.0, |t| 10_000.0 + 5120.0 * (t / 10.0).floor()));
        assert_rate(&flag.unwrap(), 512.0);
    }

    #[test]
    fn a_single_step_is_not_a_leak() {
        let (flag, first) = run(&series(200.0, |t| if t < 100.0 { 20_000.0 } else { 150_000.0 }));
        assert!(flag.is_none() && first.is_none(), "{flag:?}");
    }

    #[test]
    fn a_fill_that_plateaus_is_not_a_leak() {
        // 128 MiB over 8 s, then flat.
        let (_, first) = run(&series(200.0, |t| 10_000.0 + 131_072.0 * ((t - 60.0) / 8.0).clamp(0.0, 1.0)));
        assert!(first.is_none(), "{first:?}");
    }

    #[test]
    fn churn_is_not_a_leak() {
        // Allocates and frees: many own faults, flat memory with a sawtooth.
        let s: Vec<Sample> = (0..100)
            .map(|i| {
                let t = i as f64 * 2.0;
                let v = 40_000.0 + if i % 2 == 0 { 0.0 } else { 8192.0 };
                Sample { t, uss_kib: v, pss_kib: v, own_kib: 8192.0 * i as f64 }
            })
            .collect();
        assert!(run(&s).1.is_none());
    }

    /// A churner read at random phases of its 8 MiB alloc/free cycle (uniform between the
    /// low and the high water mark), with the later readings a little higher by chance.
    fn churn_readings(seed: u64) -> Vec<Sample> {
        let mut x = seed;
        (0..40)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let t = i as f64;
                let u = (x % 10_000) as f64 / 10_000.0;
                let v = 2400.0 + 8192.0 * u.powf(1.6 - t / 40.0);
                Sample { t, uss_kib: v, pss_kib: v, own_kib: 8192.0 * t }
            })
            .collect()
    }

    #[test]
    fn churn_with_a_lucky_drift_is_not_a_leak() {
        for seed in 1..200u64 {
            let (_, first) = run(&churn_readings(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15)));
            assert!(first.is_none(), "seed {seed}: {first:?}");
        }
    }

    #[test]
    fn noise_is_not_a_leak() {
        // Deterministic pseudo-noise of ±2 MiB around a flat line.
        let (_, first) = run(&series(300.0, |t| 60_000.0 + 2048.0 * ((t * 12.9898).sin() * 43758.5453).fract()));
        assert!(first.is_none(), "{first:?}");
    }

    #[test]
    fn pss_rising_because_a_sibling_exited_is_not_a_leak() {
        // PSS creeps up as siblings exit one by one, USS flat, no own faults.
        let s: Vec<Sample> = (0..60)
            .map(|i| {
                let t = i as f64 * 2.0;
                Sample { t, uss_kib: 1000.0, pss_kib: 20_000.0 + 400.0 * t, own_kib: 500.0 }
            })
            .collect();
        assert!(run(&s).1.is_none());
    }

    #[test]
    fn a_parent_whose_own_faults_ended_before_its_uss_grew_is_not_flagged() {
        // A pre-fork parent still filling its heap at the first reading (a loaded machine),
        // then forks: its USS rises 1 MiB/s as a child's copy-on-write leaves pages to it
        // alone, with no fault of its own (tests/cow.rs saw it flagged, cause faults).
        let s: Vec<Sample> = (0..40)
            .map(|i| {
                let t = 1.0 + i as f64;
                let own = if i == 0 { 100_000.0 } else { 131_072.0 };
                Sample { t, uss_kib: 800.0 + 1024.0 * (t - 1.0).min(16.0), pss_kib: 32_000.0, own_kib: own }
            })
            .collect();
        assert!(run(&s).1.is_none(), "{:?}", run(&s).1);
        // The same USS growth from its own faults, after the same fill, is flagged.
        let s: Vec<Sample> = s.iter().map(|x| Sample { own_kib: 131_072.0 + x.uss_kib, ..*x }).collect();
        assert!(run(&s).1.is_some());
    }

    #[test]
    fn shared_growth_is_flagged_on_pss() {
        // Pages added to a segment others map too: USS flat, PSS and own faults grow.
        let s: Vec<Sample> = (0..40)
            .map(|i| {
                let t = i as f64 * 2.0;
                Sample { t, uss_kib: 900.0, pss_kib: 5000.0 + 256.0 * t, own_kib: 512.0 * t }
            })
            .collect();
        let (flag, _) = run(&s);
        let f = flag.unwrap();
        assert_eq!(f.metric, Metric::Pss);
        assert_rate(&f, 256.0);
    }

    #[test]
    fn reemits_only_when_the_rate_changes_materially() {
        let mut d = Detector::default();
        let p = Params::default();
        let mut reports = 0;
        for i in 0..150 {
            let t = i as f64 * 2.0;
            // 1 MiB/s, then 3 MiB/s from t=150.
            let v = if t < 150.0 { 1024.0 * t } else { 1024.0 * 150.0 + 3072.0 * (t - 150.0) };
            if d.observe(Sample { t, uss_kib: v, pss_kib: v, own_kib: v }, &p).is_some() {
                reports += 1;
            }
        }
        assert!((2..=4).contains(&reports), "{reports} reports");
        assert_rate(&d.flagged.unwrap(), 3072.0);
    }

    /// Feed a series; every change with the time of its reading.
    fn changes(samples: &[Sample]) -> (Detector, Vec<(f64, Change)>) {
        let mut d = Detector::default();
        let p = Params::default();
        let out = samples.iter().filter_map(|s| d.step(*s, &p).map(|c| (s.t, c))).collect();
        (d, out)
    }

    fn withdrawals(c: &[(f64, Change)]) -> Vec<(f64, Reason)> {
        c.iter()
            .filter_map(|(_, c)| match c {
                Change::Withdrawn(e) => e.withdrawn,
                _ => None,
            })
            .collect()
    }

    /// The sawtooth: +1 MiB/s for 30 s, all freed, 4 times.
    fn sawtooth(t: f64) -> f64 {
        let cycle = t % 31.0;
        8_000.0 + if t < 124.0 && cycle < 30.0 { 1024.0 * cycle } else { 0.0 }
    }

    #[test]
    fn a_sawtooth_is_withdrawn_at_its_first_drop_and_not_flagged_again() {
        let (d, c) = changes(&series(160.0, sawtooth));
        let (at, _) = c.iter().find(|(_, c)| matches!(c, Change::Flagged(_))).expect("the first ramp is flagged");
        assert!((20.0..30.0).contains(at), "flagged at {at}");
        assert_eq!(withdrawals(&c), [(30.0, Reason::FellBack)], "{c:?}");
        assert!(d.flagged.is_none());
        let e: Vec<_> = d.episodes().collect();
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!((e[0].flagged_at, e[0].withdrawn), (*at, Some((30.0, Reason::FellBack))));
        assert_rate(&e[0].trend, 1024.0);
    }

    #[test]
    fn a_sawtooth_whose_peaks_climb_is_flagged_again_past_the_old_peak() {
        // 40 MiB ramps over 40 s, down to a floor 16 MiB higher each cycle of 44 s.
        let ramp = |u: f64| if u <= 40.0 { 1024.0 * u } else { 0.0 };
        let f = |t: f64| 8_000.0 + 16_384.0 * (t / 44.0).floor() + ramp(t % 44.0);
        let (d, c) = changes(&series(200.0, f));
        let e: Vec<_> = d.episodes().collect();
        assert_eq!(e[0].withdrawn, Some((42.0, Reason::FellBack)), "{c:?}");
        // Not before its first ramp's peak plus a margin (a quarter of its growth): 34 s into
        // the second ramp.
        assert!(e.len() >= 2 && e[1].flagged_at >= 44.0 + 34.0, "{e:?}");
    }

    #[test]
    fn real_leaks_are_never_withdrawn() {
        for (name, f) in [
            ("linear", Box::new(|t: f64| 50_000.0 + 1024.0 * t) as Box<dyn Fn(f64) -> f64>),
            ("slow", Box::new(|t| 80_000.0 + 64.0 * t)),
            ("staircase, 10 s steps", Box::new(|t| 10_000.0 + 5120.0 * (t / 10.0).floor())),
            ("staircase, 30 s steps", Box::new(|t| 10_000.0 + 15_360.0 * (t / 30.0).floor())),
        ] {
            let (d, c) = changes(&series(600.0, f));
            assert!(withdrawals(&c).is_empty() && d.flagged.is_some(), "{name}: {c:?}");
            assert_eq!(d.episodes().count(), 1, "{name}");
        }
    }

    #[test]
    fn a_leak_with_a_dip_stays_flagged() {
        // 1 MiB/s; at 80 s a 16 MiB buffer is freed and refilled within one reading.
        let (d, c) = changes(&series(200.0, |t| 1024.0 * t - if t == 80.0 { 16_384.0 } else { 0.0 }));
        assert!(withdrawals(&c).is_empty() && d.flagged.is_some(), "{c:?}");
    }

    #[test]
    fn growth_that_stops_is_withdrawn_once_it_stalled_as_long_as_it_grew() {
        // 1 MiB/s for 100 s, then flat: withdrawn once it was flat for as long as the span of
        // its last trend (no sooner than 60 s).
        let (d, c) = changes(&series(400.0, |t| 10_000.0 + 1024.0 * t.min(100.0)));
        let w = withdrawals(&c);
        assert_eq!(w.len(), 1, "{c:?}");
        let (at, why) = w[0];
        assert_eq!(why, Reason::Stalled);
        let span = d.episodes().next().unwrap().trend.span_s;
        assert!(at - 100.0 >= 60.0 && (at - 100.0 - span).abs() <= 4.0, "withdrawn at {at}, span {span}");
        assert!(d.flagged.is_none());
    }
}
