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
    fn of(self, s: &Sample) -> f64 {
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
    let confidence = (monotonic * own_share * (span / 60.0).clamp(0.5, 1.0) * 100.0).round() / 100.0;
    Some(Trend { metric, rate_kib_s: rate, span_s: span, growth_kib: growth, monotonic, own_share, confidence })
}

/// The verdict state of one pid: its recent readings and what was last reported.
#[derive(Debug, Default)]
pub struct Detector {
    samples: VecDeque<Sample>,
    reported: Option<Trend>,
    pub flagged: Option<Trend>,
}

/// Suffix spans tried (multiples of the minimum span), shortest first.
const SPANS: [f64; 5] = [1.0, 2.0, 4.0, 8.0, 15.0];

impl Detector {
    /// Add a reading; returns a trend to report when a leak is first seen, or when its rate
    /// changed by more than a third since the last report.
    pub fn observe(&mut self, s: Sample, p: &Params) -> Option<Trend> {
        self.samples.push_back(s);
        while self.samples.front().is_some_and(|f| s.t - f.t > p.window_s) {
            self.samples.pop_front();
        }
        let best = self.assess_recent(p)?;
        self.flagged = Some(best);
        let material = match self.reported {
            None => true,
            Some(r) => r.metric != best.metric || (best.rate_kib_s / r.rate_kib_s - 1.0).abs() > 1.0 / 3.0,
        };
        material.then(|| {
            self.reported = Some(best);
            best
        })
    }

    fn assess_recent(&self, p: &Params) -> Option<Trend> {
        let v: Vec<Sample> = self.samples.iter().copied().collect();
        let now = v.last()?.t;
        let mut best = None;
        for mult in SPANS {
            let span = (p.min_span_s * mult).min(p.window_s);
            let from = v.partition_point(|s| now - s.t > span);
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
}
