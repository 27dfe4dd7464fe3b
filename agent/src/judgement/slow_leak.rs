//! The long-window leak verdict (`--leak-window` over 5 min; `serve`'s 6 h): slow leaks judged
//! on the pid's down-sampled history (`history.rs`), with the short verdict's criteria
//! (`verdict::assess`: robust trend, sustained over each third, mostly upward, above the
//! noise, the pid's own faults) over spans from `--leak-min-span` (10 min) doubling up to the
//! window, plus one more: the growth still runs at half its rate over the last third of the
//! span (a cache that filled and plateaus does not). The same flag / withdraw life as the
//! short verdict (`Change`, `Episode`, `Reason`), judged once per finest bucket (30 s).
//! Confidence grows with the span the trend holds over.
use super::{
    history::History,
    verdict::{assess, theil_sen, Change, Episode, Episodes, Metric, Params, Reason, Sample, Trend},
};

/// The longest span the short verdict looks at (its longest suffix span, 15 x 20 s): a
/// `--leak-window` beyond it selects the long-window verdict.
pub const SHORT_REACH: f64 = 300.0;
/// The long-window verdict's defaults: shortest span judged, slowest rate, least growth.
pub const LONG_MIN_SPAN: f64 = 720.0;
pub const LONG_MIN_RATE: f64 = 2.0;
pub const LONG_MIN_GROWTH: f64 = 4096.0;
/// Finest buckets per shortest span.
const POINTS_PER_MIN_SPAN: f64 = 20.0;
/// Episodes kept per pid (the most recent).
const MAX_EPISODES: usize = 8;
/// Span (in shortest spans) at which the evidence term of the confidence reaches one half:
/// 20 min at the default 12-min shortest span.
const HALF_CONFIDENCE_SPANS: f64 = 5.0 / 3.0;

/// Does this window select the long-window verdict?
pub fn is_long(p: &Params) -> bool {
    p.window_s > SHORT_REACH
}

/// The verdict's parameters for `--leak-window`, `--leak-min-rate` and `--leak-min-span`: the
/// short verdict's defaults up to `SHORT_REACH`, the long one's beyond.
pub fn params(window_s: f64, min_rate: Option<f64>, min_span: Option<f64>) -> Params {
    let short = Params::default();
    let p = Params { window_s, ..short };
    if !is_long(&p) {
        return Params {
            min_rate_kib_s: min_rate.unwrap_or(short.min_rate_kib_s),
            min_span_s: min_span.unwrap_or(short.min_span_s),
            ..p
        };
    }
    Params {
        min_rate_kib_s: min_rate.unwrap_or(LONG_MIN_RATE),
        min_span_s: min_span.unwrap_or(LONG_MIN_SPAN).min(window_s),
        min_growth_kib: LONG_MIN_GROWTH,
        ..p
    }
}

/// The long-window verdict state of one pid.
#[derive(Debug)]
pub struct SlowDetector {
    history: History,
    /// The standing verdict; `None` before a flag and after a withdrawal.
    pub flagged: Option<Trend>,
    reported: Option<Trend>,
    /// The standing verdict's metric, its level at the start of its flagged span, its peak.
    levels: Option<(Metric, f64, f64)>,
    /// The verdicts so far and, after a withdrawal, the level a new one must pass.
    episodes: Episodes,
}

impl SlowDetector {
    pub fn new(p: &Params) -> SlowDetector {
        SlowDetector {
            history: History::new(p.min_span_s / POINTS_PER_MIN_SPAN, p.window_s),
            flagged: None,
            reported: None,
            levels: None,
            episodes: Episodes::default(),
        }
    }

    pub fn episodes(&self) -> impl Iterator<Item = &Episode> {
        self.episodes.list.iter()
    }

    /// Buckets of history held (bounded by the window, not the uptime).
    pub fn buckets(&self) -> usize {
        self.history.buckets()
    }

    /// Add a reading; once per finest bucket, what it changed in the verdict.
    pub fn step(&mut self, s: Sample, p: &Params) -> Option<Change> {
        if !self.history.push(s) {
            return None;
        }
        let best = self.assess_recent(p);
        if let Some(e) = self.withdrawal(best.is_some(), p) {
            return Some(Change::Withdrawn(e));
        }
        let best = best?;
        let last = self.history.last()?;
        if self.flagged.is_none() && !self.episodes.open(best, &Sample { t: s.t, ..last }, MAX_EPISODES) {
            return None;
        }
        let base = self.history.points(best.span_s).first().map_or(0.0, |f| best.metric.of(f));
        self.levels = match self.levels {
            Some((m, b, peak)) if m == best.metric => Some((m, b.min(base), peak.max(best.metric.of(&last)))),
            _ => Some((best.metric, base, best.metric.of(&last))),
        };
        if let Some(e) = self.episodes.list.back_mut() {
            e.trend = best;
        }
        self.flagged = Some(best);
        // Reported again when the rate changed by a third, or the confidence grew by 0.15.
        let material = self.reported.is_none_or(|r| {
            r.metric != best.metric
                || (best.rate_kib_s / r.rate_kib_s - 1.0).abs() > 1.0 / 3.0
                || best.confidence >= r.confidence + 0.15
        });
        material.then(|| {
            self.reported = Some(best);
            Change::Flagged(best)
        })
    }

    /// The best trend now: over the longest span (from the shortest, doubling, up to the
    /// window) whose rate still matches the shortest one found.
    fn assess_recent(&self, p: &Params) -> Option<Trend> {
        // Bucket means span a little less than the span asked (up to a bucket at each end).
        let inner = Params { min_span_s: p.min_span_s * (1.0 - 2.0 / POINTS_PER_MIN_SPAN), ..*p };
        let mut best: Option<Trend> = None;
        let mut span = p.min_span_s;
        while span <= p.window_s && self.history.covered() >= span {
            let pts = self.history.points(span);
            let found = [Metric::Uss, Metric::Pss]
                .into_iter()
                .find_map(|m| judge(&pts, m, &inner, self.history.swing(m), p.min_span_s));
            match (best, found) {
                (None, None) => {}
                (None, f) => best = f,
                (Some(b), Some(f)) if (f.rate_kib_s / b.rate_kib_s - 1.0).abs() <= 1.0 / 3.0 => best = Some(f),
                (Some(_), _) => break,
            }
            if span >= p.window_s {
                break;
            }
            span = (span * 2.0).min(p.window_s);
        }
        best
    }

    /// Withdraw the standing verdict if its growth was given back (below its base plus half
    /// its growth), or, with no trend found now, stalled: over the last span as long as the
    /// flagged one (at least the shortest), less than half of what the slowest leak adds.
    fn withdrawal(&mut self, trend_holds: bool, p: &Params) -> Option<Episode> {
        let t = self.flagged?;
        let (metric, base, peak) = self.levels.as_mut()?;
        let last = self.history.last()?;
        let v = metric.of(&last);
        *peak = peak.max(v);
        let reason = if v < *base + 0.5 * (*peak - *base) {
            Reason::FellBack
        } else if !trend_holds {
            let span = t.span_s.max(p.min_span_s).min(p.window_s);
            let pts = self.history.points(span);
            let grew = pts.first().map_or(0.0, |f| v - metric.of(f));
            if grew >= 0.5 * p.min_growth_kib.max(p.min_rate_kib_s * span) {
                return None;
            }
            Reason::Stalled
        } else {
            return None;
        };
        let (m, base, peak) = self.levels.take()?;
        self.episodes.ceiling = Some((m, peak + (0.25 * (peak - base)).max(p.min_growth_kib)));
        (self.flagged, self.reported) = (None, None);
        let e = self.episodes.list.back_mut()?;
        e.withdrawn = Some((last.t, reason));
        Some(*e)
    }
}

/// The short verdict's criteria on bucket means, the growth larger than the pid's own swing
/// within a bucket (a churner drifting within its alloc/free amplitude is not leaking), still
/// running over the last third of the span, and a confidence that grows with the span.
fn judge(pts: &[Sample], metric: Metric, p: &Params, swing: f64, min_span: f64) -> Option<Trend> {
    let t = assess(pts, metric, p)?;
    if metric.of(pts.last()?) - metric.of(&pts[0]) < swing {
        return None;
    }
    let now = pts.last()?.t;
    let recent: Vec<(f64, f64)> =
        pts.iter().filter(|s| s.t >= now - t.span_s / 3.0 - 1e-6).map(|s| (s.t, metric.of(s))).collect();
    if recent.len() >= 3 && theil_sen(&recent) < 0.5 * t.rate_kib_s {
        return None;
    }
    let evidence = t.span_s / (t.span_s + HALF_CONFIDENCE_SPANS * min_span);
    let confidence = (t.monotonic * t.own_share * evidence * 100.0).round() / 100.0;
    Some(Trend { confidence, ..t })
}

#[cfg(test)]
mod tests {
    //! Accelerated time: readings every 2 s of simulated time, fed as the pipeline feeds them
    //! (one per sweep; USS, PSS and the pid's cumulative own faulted KiB).
    use super::*;

    const HOUR: f64 = 3600.0;

    fn serve() -> Params {
        params(6.0 * HOUR, None, None)
    }

    /// A reading every 2 s for `secs` of (USS, PSS, own KiB) = `f(t, noise)`, where `noise`
    /// is a deterministic uniform draw in [-1, 1).
    fn run(secs: f64, f: impl Fn(f64, f64) -> (f64, f64, f64)) -> (SlowDetector, Vec<(f64, Change)>) {
        let p = serve();
        let mut d = SlowDetector::new(&p);
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut out = Vec::new();
        for i in 0..=(secs / 2.0) as usize {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let t = i as f64 * 2.0;
            let (uss, pss, own) = f(t, (x % 20_000) as f64 / 10_000.0 - 1.0);
            if let Some(c) = d.step(Sample { t, uss_kib: uss, pss_kib: pss, own_kib: own }, &p) {
                out.push((t, c));
            }
        }
        (d, out)
    }

    /// USS = PSS = `v(t)`, own faults following it.
    fn private(v: impl Fn(f64, f64) -> f64) -> impl Fn(f64, f64) -> (f64, f64, f64) {
        move |t, n| {
            let v = v(t, n);
            (v, v, v)
        }
    }

    fn flags(c: &[(f64, Change)]) -> Vec<(f64, Trend)> {
        c.iter()
            .filter_map(|(t, c)| match c {
                Change::Flagged(tr) => Some((*t, *tr)),
                _ => None,
            })
            .collect()
    }

    fn withdrawals(c: &[(f64, Change)]) -> Vec<(f64, Reason)> {
        c.iter()
            .filter_map(|(_, c)| match c {
                Change::Withdrawn(e) => e.withdrawn,
                _ => None,
            })
            .collect()
    }

    fn assert_never_flagged(name: &str, secs: f64, f: impl Fn(f64, f64) -> (f64, f64, f64)) {
        let (d, c) = run(secs, f);
        assert!(c.is_empty() && d.episodes().count() == 0, "{name}: {c:?}");
    }

    #[test]
    fn a_leak_of_8_kib_s_is_flagged_within_15_minutes() {
        for (name, noise_kib) in [("clean", 0.0), ("with 1 MiB of malloc noise", 512.0)] {
            let (d, c) = run(2.0 * HOUR, private(|t, n| 200_000.0 + 8.0 * t + noise_kib * n));
            let f = flags(&c);
            let (at, first) = f.first().copied().unwrap_or_else(|| panic!("{name}: never flagged"));
            assert!(at <= 900.0, "{name}: flagged at {at} s");
            assert!((first.rate_kib_s - 8.0).abs() <= 0.8, "{name}: {first:?}");
            assert_eq!(first.metric, Metric::Uss);
            assert!(withdrawals(&c).is_empty() && d.flagged.is_some(), "{name}: {c:?}");
            let last = d.flagged.unwrap();
            assert!((last.rate_kib_s - 8.0).abs() <= 0.4 && last.span_s >= HOUR, "{name}: {last:?}");
        }
    }

    #[test]
    fn confidence_grows_with_the_evidence() {
        let (d, c) = run(6.0 * HOUR, private(|t, n| 50_000.0 + 8.0 * t + 256.0 * n));
        let f = flags(&c);
        let conf: Vec<f64> = f.iter().map(|(_, t)| t.confidence).collect();
        assert!(conf.windows(2).all(|w| w[1] > w[0]), "{conf:?}");
        assert!(conf[0] < 0.5 && *conf.last().unwrap() >= 0.85, "{conf:?}");
        assert!(f.len() <= 8, "{} reports", f.len());
        assert!(d.flagged.unwrap().span_s >= 5.0 * HOUR, "{:?}", d.flagged);
    }

    #[test]
    fn rates_at_the_floor_and_fast_leaks() {
        // 2 KiB/s (the floor, 7 MiB/h): 4 MiB takes 34 min.
        let (_, c) = run(2.0 * HOUR, private(|t, _| 10_000.0 + 2.0 * t));
        let at = flags(&c).first().map(|f| f.0);
        assert!(at.is_some_and(|a| a <= HOUR), "{at:?}");
        // 1 KiB/s is below it.
        assert_never_flagged("1 KiB/s", 3.0 * HOUR, private(|t, _| 10_000.0 + t));
        // 1 MiB/s: at the shortest span.
        let (_, c) = run(1800.0, private(|t, _| 10_000.0 + 1024.0 * t));
        let (at, t) = flags(&c)[0];
        assert!(at <= 800.0 && (t.rate_kib_s - 1024.0).abs() < 50.0, "{at} {t:?}");
    }

    #[test]
    fn churn_is_not_a_leak() {
        // Alloc/free of 8 MiB, read at random phases of the cycle; own faults grow by 8 MiB a
        // cycle (every 2 s).
        assert_never_flagged("alloc/free", 3.0 * HOUR, |t, n| {
            let v = 40_000.0 + 4096.0 * (n + 1.0);
            (v, v, 4096.0 * t)
        });
        // Longer cycles: 32 MiB built up over 5 min, then freed.
        assert_never_flagged("5-min cycles", 3.0 * HOUR, |t, _| {
            let v = 40_000.0 + 32_768.0 * (t % 300.0) / 300.0;
            (v, v, 32_768.0 * (t / 300.0).floor() + v)
        });
    }

    #[test]
    fn churn_with_a_lucky_drift_is_not_a_leak() {
        // The mean of an 8 MiB churner's readings drifts up by chance (the high phase read more
        // often for half an hour), and back: by up to 5 MiB, within its own swing.
        for k in 1..=5 {
            let drift = 1024.0 * k as f64;
            assert_never_flagged(&format!("drift {drift}"), 3.0 * HOUR, |t, n| {
                let bias = drift * (std::f64::consts::PI * t / HOUR).sin().max(0.0);
                let v = 40_000.0 + 8192.0 * (n + 1.0) / 2.0 + bias;
                (v, v, 8192.0 * t)
            });
        }
    }

    #[test]
    fn a_leak_inside_churn_is_flagged_once_it_outgrows_the_swing() {
        // 8 KiB/s under an 8 MiB alloc/free churn: 8 MiB of growth takes 17 min.
        let (d, c) = run(2.0 * HOUR, |t, n| {
            let v = 40_000.0 + 4096.0 * (n + 1.0) + 8.0 * t;
            (v, v, 4096.0 * t)
        });
        let at = flags(&c).first().map(|f| f.0);
        assert!(at.is_some_and(|a| (1000.0..=1800.0).contains(&a)), "{at:?}");
        assert!((d.flagged.unwrap().rate_kib_s - 8.0).abs() <= 1.0, "{:?}", d.flagged);
    }

    #[test]
    fn a_one_off_fill_is_not_a_leak() {
        assert_never_flagged(
            "128 MiB at once",
            3.0 * HOUR,
            private(|t, _| 30_000.0 + if t < 1200.0 { 0.0 } else { 131_072.0 }),
        );
        // 64 MiB over 2 min.
        assert_never_flagged(
            "64 MiB over 2 min",
            3.0 * HOUR,
            private(|t, n| 30_000.0 + 65_536.0 * ((t - 600.0) / 120.0).clamp(0.0, 1.0) + 64.0 * n),
        );
    }

    #[test]
    fn a_cache_that_grows_then_plateaus_is_not_a_leak() {
        // 64 KiB/s up to its 30 MiB cap (8 min), then full.
        assert_never_flagged("linear to a cap", 3.0 * HOUR, private(|t, n| 30_000.0 + 64.0 * t.min(480.0) + 128.0 * n));
        // An LRU filling towards 64 MiB (time constant 3 min): fast at first, then ever slower.
        assert_never_flagged(
            "saturating",
            3.0 * HOUR,
            private(|t, n| 30_000.0 + 65_536.0 * (1.0 - (-t / 180.0).exp()) + 128.0 * n),
        );
        // A warm-up that comes back every hour: refilled to the same level.
        assert_never_flagged("hourly refill", 3.0 * HOUR, private(|t, _| 30_000.0 + 64.0 * (t % HOUR).min(400.0)));
    }

    #[test]
    fn a_siblings_exit_is_not_a_leak() {
        // 8 processes share 256 MiB; one exits every 5 min: this one's PSS share rises from
        // 32 MiB to 256 MiB, its USS and its own faults do not move.
        assert_never_flagged("siblings exit", 3.0 * HOUR, |t, n| {
            let left = (8.0 - (t / 300.0).floor()).max(1.0);
            (5000.0 + 16.0 * n, 5000.0 + 262_144.0 / left, 5000.0)
        });
    }

    #[test]
    fn a_leak_among_exiting_siblings_is_flagged_on_uss() {
        let (d, c) = run(HOUR, |t, _| {
            let left = (8.0 - (t / 300.0).floor()).max(1.0);
            (5000.0 + 8.0 * t, 5000.0 + 262_144.0 / left + 8.0 * t, 8.0 * t)
        });
        assert!(flags(&c).first().is_some_and(|f| f.0 <= 900.0), "{c:?}");
        assert_eq!(d.flagged.unwrap().metric, Metric::Uss);
    }

    #[test]
    fn a_leak_that_stops_is_withdrawn_and_a_freed_one_falls_back() {
        // 8 KiB/s for an hour, then flat: withdrawn as stalled, once.
        let (d, c) = run(3.0 * HOUR, private(|t, _| 10_000.0 + 8.0 * t.min(HOUR)));
        let w = withdrawals(&c);
        assert_eq!(w.len(), 1, "{c:?}");
        assert_eq!(w[0].1, Reason::Stalled);
        assert!(w[0].0 > HOUR && w[0].0 <= 2.0 * HOUR, "{w:?}");
        assert!(d.flagged.is_none() && d.episodes().count() == 1);
        // 8 KiB/s for 30 min, then all of it freed: fell back at the next bucket.
        let (_, c) = run(HOUR, private(|t, _| 10_000.0 + if t < 1800.0 { 8.0 * t } else { 0.0 }));
        let w = withdrawals(&c);
        assert!(w.len() == 1 && w[0].1 == Reason::FellBack && w[0].0 <= 1800.0 + 70.0, "{c:?}");
        assert_eq!(flags(&c).len(), flags(&c).iter().filter(|f| f.0 < 1800.0).count(), "not flagged again");
    }

    #[test]
    fn memory_per_pid_is_a_fixed_size_summary() {
        // A week of an 8 KiB/s leak that stops and restarts every 6 hours.
        let (d, _) = run(7.0 * 24.0 * HOUR, private(|t, _| 10_000.0 + 8.0 * (t % (6.0 * HOUR)).min(3.0 * HOUR)));
        assert!(d.buckets() <= 4 * (crate::judgement::history::PER_LEVEL + 1), "{}", d.buckets());
        assert!(d.episodes().count() <= MAX_EPISODES);
    }

    #[test]
    fn the_window_selects_the_path() {
        let short = params(300.0, None, None);
        assert!(!is_long(&short) && short == Params::default());
        let long = serve();
        assert!(is_long(&long));
        assert_eq!((long.min_span_s, long.min_rate_kib_s, long.min_growth_kib), (720.0, 2.0, 4096.0));
        let scaled = params(1800.0, Some(32.0), Some(60.0));
        assert_eq!((scaled.min_span_s, scaled.min_rate_kib_s), (60.0, 32.0));
        assert_eq!(params(400.0, None, None).min_span_s, 400.0, "no longer than the window");
    }
}
