//! A pid's smaps readings kept down-sampled for the long-window leak verdict: a fixed number of
//! levels of fixed-size rings of buckets, each level's buckets 4x as wide as the level below
//! (30 s, 2 min, 8 min, 32 min, ... by default). Every reading goes into the open bucket of
//! each level; a level keeps its last `PER_LEVEL` closed buckets. Memory per pid is bounded by
//! the levels the window needs, whatever the uptime: never one entry per reading.
use std::collections::VecDeque;

use super::verdict::{Metric, Sample};

/// Closed buckets kept per level (the open one besides).
pub const PER_LEVEL: usize = 32;
/// Each level's buckets are this many times wider than the level below's.
pub const RATIO: f64 = 4.0;
/// Levels at most (the 5th covers 2.8 days at the default resolution).
pub const MAX_LEVELS: usize = 5;

/// The mean of the readings of one span of time (the last reading's own KiB).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Bucket {
    /// Which bucket of its level: floor(t / width).
    idx: u64,
    n: u32,
    t: f64,
    uss: f64,
    pss: f64,
    own: f64,
    /// Lowest and highest USS, then PSS, read in it.
    lo: [f32; 2],
    hi: [f32; 2],
}

impl Bucket {
    fn add(&mut self, s: &Sample) {
        for (i, v) in [s.uss_kib as f32, s.pss_kib as f32].into_iter().enumerate() {
            (self.lo[i], self.hi[i]) = if self.n == 0 { (v, v) } else { (self.lo[i].min(v), self.hi[i].max(v)) };
        }
        self.n += 1;
        let k = 1.0 / self.n as f64;
        self.t += (s.t - self.t) * k;
        self.uss += (s.uss_kib - self.uss) * k;
        self.pss += (s.pss_kib - self.pss) * k;
        self.own = s.own_kib;
    }

    fn sample(&self) -> Sample {
        Sample { t: self.t, uss_kib: self.uss, pss_kib: self.pss, own_kib: self.own }
    }
}

#[derive(Debug)]
struct Level {
    width: f64,
    /// Closed buckets, oldest first, then the open one last.
    buckets: VecDeque<Bucket>,
}

#[derive(Debug)]
pub struct History {
    levels: Vec<Level>,
    /// The first and the latest reading's times.
    first_t: Option<f64>,
    last_t: f64,
}

impl History {
    /// Buckets of `width0` seconds at the finest level, and as many coarser levels as it takes
    /// to cover `window_s` (at most `MAX_LEVELS`).
    pub fn new(width0: f64, window_s: f64) -> History {
        let mut levels = Vec::new();
        let mut width = width0;
        while levels.len() < MAX_LEVELS {
            levels.push(Level { width, buckets: VecDeque::new() });
            if width * PER_LEVEL as f64 >= window_s {
                break;
            }
            width *= RATIO;
        }
        History { levels, first_t: None, last_t: 0.0 }
    }

    /// Add a reading (time never going back); true when it closed a bucket of the finest
    /// level (a new point to judge).
    pub fn push(&mut self, s: Sample) -> bool {
        self.first_t.get_or_insert(s.t);
        self.last_t = s.t;
        let mut closed0 = false;
        for (i, l) in self.levels.iter_mut().enumerate() {
            let idx = (s.t / l.width).floor().max(0.0) as u64;
            match l.buckets.back_mut() {
                Some(b) if b.idx >= idx => b.add(&s),
                open => {
                    closed0 |= i == 0 && open.is_some();
                    if l.buckets.len() > PER_LEVEL {
                        l.buckets.pop_front();
                    }
                    // Grown by doubling up to its bound, no further: a pid seen once holds
                    // a few buckets, a long-lived one exactly its rings.
                    if l.buckets.len() == l.buckets.capacity() {
                        let want = (l.buckets.len() * 2).clamp(4, PER_LEVEL + 1);
                        l.buckets.reserve_exact(want - l.buckets.len());
                    }
                    let mut b = Bucket { idx, ..Bucket::default() };
                    b.add(&s);
                    l.buckets.push_back(b);
                }
            }
        }
        closed0
    }

    /// Seconds from the first reading to the last.
    pub fn covered(&self) -> f64 {
        self.first_t.map_or(0.0, |f| self.last_t - f)
    }

    /// The mean of the latest closed bucket of the finest level (the open one while none is
    /// closed).
    pub fn last(&self) -> Option<Sample> {
        let b = &self.levels[0].buckets;
        b.len().checked_sub(2).and_then(|i| b.get(i)).or(b.back()).map(Bucket::sample)
    }

    /// Bucket means over the last `span` seconds (oldest first), at the finest level that
    /// still holds that span (at least `PER_LEVEL / RATIO` points when it is covered). The
    /// open bucket is left out: it is partial.
    pub fn points(&self, span: f64) -> Vec<Sample> {
        let level = self
            .levels
            .iter()
            .find(|l| l.width * PER_LEVEL as f64 >= span)
            .unwrap_or(&self.levels[self.levels.len() - 1]);
        let closed = level.buckets.len().saturating_sub(1);
        let Some(now) = closed.checked_sub(1).and_then(|i| level.buckets.get(i)).map(|b| b.t) else {
            return Vec::new();
        };
        level.buckets.iter().take(closed).filter(|b| b.t >= now - span).map(Bucket::sample).collect()
    }

    /// How far the metric swings within a finest bucket (the median over the ones held): a
    /// churner's alloc/free amplitude; a steady leak's is its rate times the bucket.
    pub fn swing(&self, metric: Metric) -> f64 {
        let i = usize::from(metric == Metric::Pss);
        let b = &self.levels[0].buckets;
        let mut r: Vec<f32> = b.iter().take(b.len().saturating_sub(1)).map(|b| b.hi[i] - b.lo[i]).collect();
        if r.is_empty() {
            return 0.0;
        }
        let mid = r.len() / 2;
        f64::from(*r.select_nth_unstable_by(mid, f32::total_cmp).1)
    }

    /// Buckets held in all (for the bound's test).
    pub fn buckets(&self) -> usize {
        self.levels.iter().map(|l| l.buckets.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(t: f64, v: f64) -> Sample {
        Sample { t, uss_kib: v, pss_kib: v, own_kib: v }
    }

    #[test]
    fn memory_stays_bounded_whatever_the_uptime() {
        // A week of readings every 2 s: 302,400 readings.
        let mut h = History::new(30.0, 6.0 * 3600.0);
        for i in 0..302_400 {
            h.push(reading(i as f64 * 2.0, i as f64));
        }
        // 4 levels cover 6 h (30 s, 2 min, 8 min, 32 min buckets: 17 h).
        assert_eq!(h.levels.len(), 4);
        assert_eq!(h.buckets(), 4 * (PER_LEVEL + 1));
        assert!(
            h.levels.iter().all(|l| l.buckets.capacity() <= PER_LEVEL + 8),
            "{:?}",
            h.levels.iter().map(|l| l.buckets.capacity()).collect::<Vec<_>>()
        );
        // A pid read once holds a few buckets per level.
        let mut once = History::new(30.0, 6.0 * 3600.0);
        once.push(reading(0.0, 1.0));
        assert!(once.levels.iter().all(|l| l.buckets.capacity() <= 8));
    }

    #[test]
    fn a_long_span_is_read_at_a_coarse_level_and_a_short_one_at_the_finest() {
        let mut h = History::new(30.0, 6.0 * 3600.0);
        for i in 0..=(4 * 3600 / 2) {
            let t = i as f64 * 2.0;
            h.push(reading(t, 10.0 * t));
        }
        let short = h.points(600.0);
        assert!((19..=21).contains(&short.len()), "{}", short.len());
        // Means of 30 s buckets: t and value agree (the line goes through them).
        for p in &short {
            assert!((p.uss_kib - 10.0 * p.t).abs() < 1e-6, "{p:?}");
        }
        let long = h.points(3.0 * 3600.0);
        assert!((20..=24).contains(&long.len()), "8-min buckets over 3 h: {}", long.len());
        assert!(long[0].t >= 3600.0 - 1.0 && long.last().unwrap().t < 4.0 * 3600.0);
        assert!((h.covered() - 4.0 * 3600.0).abs() < 1e-6);
    }

    #[test]
    fn a_bucket_closes_when_a_reading_falls_in_the_next() {
        let mut h = History::new(30.0, 3600.0);
        assert!(!h.push(reading(0.0, 1.0)));
        assert!(!h.push(reading(29.0, 3.0)));
        assert!(h.push(reading(31.0, 5.0)));
        assert_eq!(h.last().unwrap().uss_kib, 2.0, "mean of the closed bucket");
        assert_eq!(h.points(600.0).len(), 1, "the open bucket is not a point");
        assert!(h.points(3600.0).is_empty(), "2-min buckets: none closed yet");
    }
}
