//! What smaps reads cost and how much of it we may spend: a per-pid cost model (seconds per read,
//! and per GiB of RSS, smoothed) and the `--smaps-budget` account (smaps seconds over the last
//! 60 s against PERCENT of one CPU). Pure: times are seconds since the watch start.
use std::collections::{HashMap, VecDeque};

/// The span the budget is held over, seconds.
pub const WINDOW_S: f64 = 60.0;
/// The share of the budget reads are planned against (the rest absorbs mispredictions).
const TARGET: f64 = 0.85;
/// Weight of the newest read in a smoothed cost.
const ALPHA: f64 = 0.3;
/// Before any read was timed: 6 ms per GiB of RSS (5-7 measured on this kind of VM) and the
/// fixed part of a read (open, parse).
const PRIOR_S_PER_GIB: f64 = 0.006;
const FIXED_S: f64 = 0.000_2;

fn ewma(old: Option<f64>, new: f64) -> f64 {
    old.map_or(new, |o| o + ALPHA * (new - o))
}

/// Seconds per smaps_rollup read: per pid, and per GiB of RSS over all pids.
#[derive(Debug, Default)]
pub struct CostModel {
    /// Seconds per read, by pid.
    per_pid: HashMap<u32, (f64, f64)>,
    /// Seconds per GiB of RSS read, over every read of a pid with at least 64 MiB.
    per_gib: Option<f64>,
}

impl CostModel {
    /// As `Ledger::shrink`.
    pub fn shrink(&mut self) {
        self.per_pid.shrink_to(self.per_pid.len() * 2);
    }

    /// A read of `pid` took `secs` and found `rss_kib`.
    pub fn observe(&mut self, pid: u32, secs: f64, rss_kib: u64) {
        let e = self.per_pid.entry(pid).or_insert((secs, rss_kib as f64));
        *e = (ewma(Some(e.0), secs), rss_kib as f64);
        let gib = rss_kib as f64 / (1 << 20) as f64;
        if gib >= 1.0 / 16.0 {
            self.per_gib = Some(ewma(self.per_gib, (secs - FIXED_S).max(0.0) / gib));
        }
    }

    /// Seconds per GiB of RSS, as measured (the prior until a big enough read was timed).
    pub fn s_per_gib(&self) -> f64 {
        self.per_gib.unwrap_or(PRIOR_S_PER_GIB)
    }

    /// What a read of `pid` will cost now that its RSS is `rss_kib` (the ledger's): its own
    /// smoothed cost scaled by how its RSS moved since, or the per-GiB model for a new pid.
    pub fn predict(&self, pid: u32, rss_kib: Option<u64>) -> f64 {
        let by_gib = |kib: f64| FIXED_S + self.s_per_gib() * kib / (1 << 20) as f64;
        match (self.per_pid.get(&pid), rss_kib) {
            (Some(&(s, then)), Some(now)) if then > 0.0 => (s * now as f64 / then).max(by_gib(now as f64) * 0.5),
            (Some(&(s, _)), _) => s,
            (None, Some(now)) => by_gib(now as f64),
            (None, None) => by_gib(0.0),
        }
    }

    pub fn forget(&mut self, pid: u32) {
        self.per_pid.remove(&pid);
    }
}

/// The smaps seconds spent over the last `WINDOW_S`, against PERCENT of one CPU.
#[derive(Debug)]
pub struct Budget {
    /// Fraction of one CPU.
    frac: f64,
    /// (when, seconds spent) of past spending, oldest first.
    spent: VecDeque<(f64, f64)>,
}

impl Budget {
    pub fn new(percent: f64) -> Budget {
        Budget { frac: percent / 100.0, spent: VecDeque::new() }
    }

    pub fn percent(&self) -> f64 {
        self.frac * 100.0
    }

    /// Seconds allowed over any `WINDOW_S`.
    pub fn per_window(&self) -> f64 {
        self.frac * WINDOW_S
    }

    /// Seconds allowed per `dt` seconds of watching (a sweep's fair share).
    pub fn per(&self, dt: f64) -> f64 {
        self.frac * dt
    }

    /// `secs` of smaps reading were spent, at `now` at the latest.
    pub fn spend(&mut self, now: f64, secs: f64) {
        if secs > 0.0 {
            self.spent.push_back((now, secs));
        }
    }

    /// Seconds spent within the last `WINDOW_S` before `now`.
    pub fn used(&mut self, now: f64) -> f64 {
        while self.spent.front().is_some_and(|&(t, _)| now - t >= WINDOW_S) {
            self.spent.pop_front();
        }
        self.spent.iter().map(|s| s.1).sum()
    }

    /// Seconds that can be spent from `now` on, so that no `WINDOW_S` holds more than allowed:
    /// every window that holds reads started now also holds everything spent in the last
    /// `WINDOW_S` (spending is stamped when it is known, after the reads). Planned against
    /// `TARGET` of the budget: a read costs what it costs, and a process that grows while it
    /// is read costs more than predicted.
    pub fn available(&mut self, now: f64) -> f64 {
        (TARGET * self.per_window() - self.used(now)).max(0.0)
    }

    /// Nothing was spent in the last `WINDOW_S`: one read costing more than the whole window's
    /// budget may go (it could never fit otherwise; the window then holds that read alone).
    pub fn idle(&mut self, now: f64) -> bool {
        self.used(now) == 0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn costs_scale_with_rss_and_new_pids_use_the_per_gib_model() {
        let mut m = CostModel::default();
        // Before any read: the prior.
        assert!((m.predict(1, Some(4 << 20)) - (FIXED_S + 4.0 * PRIOR_S_PER_GIB)).abs() < 1e-9);
        // 4 GiB read in 28 ms: 7 ms per GiB.
        m.observe(1, 0.028, 4 << 20);
        assert!((m.s_per_gib() - (0.028 - FIXED_S) / 4.0).abs() < 1e-9);
        // The same pid at 8 GiB: twice its own cost.
        assert!((m.predict(1, Some(8 << 20)) - 0.056).abs() < 1e-9);
        // A new pid of 2 GiB: from the per-GiB model.
        assert!((m.predict(2, Some(2 << 20)) - (FIXED_S + 2.0 * m.s_per_gib())).abs() < 1e-9);
        // Smoothed: one slow read moves the estimate by ALPHA of the difference.
        m.observe(1, 0.128, 4 << 20);
        assert!((m.predict(1, Some(4 << 20)) - (0.028 + ALPHA * 0.1)).abs() < 1e-9);
        // Small processes do not teach the per-GiB model (their fixed cost dominates).
        let before = m.s_per_gib();
        m.observe(3, 0.001, 1024);
        assert_eq!(m.s_per_gib(), before);
        m.forget(1);
        assert!((m.predict(1, Some(4 << 20)) - (FIXED_S + 4.0 * before)).abs() < 1e-9);
    }

    #[test]
    fn spending_leaves_the_window_after_sixty_seconds() {
        let mut b = Budget::new(1.0);
        assert!((b.per_window() - 0.6).abs() < 1e-9 && (b.per(2.0) - 0.02).abs() < 1e-9);
        assert!(b.idle(0.0));
        b.spend(1.0, 0.5);
        b.spend(30.0, 0.05);
        // Planned against TARGET of the budget: 0.55 s spent leaves nothing.
        assert_eq!(b.available(30.0), 0.0);
        assert!(!b.idle(30.0));
        // At 61 s the first spending is out of the window.
        assert!((b.available(61.0) - (0.6 * TARGET - 0.05)).abs() < 1e-9);
        assert!(b.idle(90.0));
        // Overspent (one read bigger than the window's budget): nothing available, not negative.
        b.spend(91.0, 2.0);
        assert_eq!(b.available(92.0), 0.0);
    }
}
