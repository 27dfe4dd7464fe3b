//! Sampling: the smaps scheduler and its readings. Each sweep spends the `--smaps-budget` (a
//! share of one CPU, held over any 60 s) where a reading matters most: pids never read, pids the
//! verdict is weighing, pids whose ledger moved, pids whose PSS a sibling's growth in a shared
//! segment made stale, then the rest as they get old; each priced by what its reads cost
//! (`budget.rs`). Reads run on the blocking pool; the readings wait here until the ledger has
//! been fed past the window they were taken in, then go to the judgement.
pub mod budget;
pub mod candidates;
pub mod smaps;

use std::{
    collections::{HashMap, VecDeque},
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use tokio::sync::mpsc;

use self::budget::{Budget, CostModel};
pub use self::candidates::{candidates, Candidate};
use crate::judgement::Reading;

/// A pid nothing happened to is re-read when its reading is this many sweeps old.
const UNCHANGED_EVERY: f64 = 5.0;
/// The default `--smaps-budget`, percent of one CPU.
pub const DEFAULT_BUDGET_PCT: f64 = 1.0;

/// How long after a read the ledger's values still count as "during" it: a record submitted
/// during the read reaches a poll that began at most two polls later; and munmap takes a
/// region out of what smaps sees before it zaps the pages (the counters, and so the ledger,
/// follow the zap: ~0.1 s per GiB here), so smaps can be that far ahead of the counters.
const READ_SLACK_NS: u64 = 300_000_000;

/// smaps readings of one chunk, taken from `from` to `to` (ns since the watch start).
struct Chunk {
    sweep: u64,
    from: u64,
    to: u64,
    samples: Vec<(u32, crate::records::MemStat, Option<f64>)>,
}

/// What the scheduler keeps of one pid.
#[derive(Default)]
struct PidState {
    /// When its last reading was taken (s since the start), and when it was first a candidate.
    read_at: Option<f64>,
    seen_at: f64,
    /// Its ledger moved since its last read was scheduled.
    moved: bool,
}

pub struct Sampler {
    interval: Duration,
    epoch: Instant,
    sweeping: bool,
    sweeps: u64,
    pending: VecDeque<Chunk>,
    tx: mpsc::Sender<smaps::Swept>,
    budget: Budget,
    cost: CostModel,
    pids: HashMap<u32, PidState>,
    /// Seconds of reading that may still be spent before the window's check (a bucket filled
    /// at the budget's rate, emptied by what reads took; negative after an overrun).
    tokens: f64,
    last_sweep_t: f64,
    /// smaps::READ_CPU_NS already charged to the budget.
    charged_ns: u64,
}

/// Whom a sweep reads, and whom it carries forward.
pub struct Sweep {
    /// Seconds since the watch start.
    pub t: f64,
    /// Not re-read: their last reading still holds at `t`.
    pub carried: Vec<u32>,
}

impl Sampler {
    /// As `Ledger::shrink`.
    pub fn shrink(&mut self) {
        self.pids.shrink_to(self.pids.len() * 2);
        self.cost.shrink();
    }

    /// The sampler, and the channel its sweeps' chunks come back on (for `on_swept`).
    pub fn new(interval: Duration, epoch: Instant) -> (Sampler, mpsc::Receiver<smaps::Swept>) {
        let (tx, rx) = mpsc::channel(8);
        let s = Sampler {
            interval,
            epoch,
            sweeping: false,
            sweeps: 0,
            pending: VecDeque::new(),
            tx,
            budget: Budget::new(DEFAULT_BUDGET_PCT),
            cost: CostModel::default(),
            pids: HashMap::new(),
            tokens: 0.2 * Budget::new(DEFAULT_BUDGET_PCT).per_window(),
            last_sweep_t: 0.0,
            charged_ns: smaps::READ_CPU_NS.load(Ordering::Relaxed),
        };
        smaps::set_budget_pct(DEFAULT_BUDGET_PCT);
        (s, rx)
    }

    /// `--smaps-budget`: PERCENT of one CPU for smaps reads over any 60 s.
    pub fn set_budget(&mut self, percent: f64) {
        self.budget = Budget::new(percent);
        self.tokens = 0.2 * self.budget.per_window();
        smaps::set_budget_pct(percent);
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// A sweep can start (the previous one is done).
    pub fn idle(&self) -> bool {
        !self.sweeping
    }

    /// Start a sweep: choose among `cands` (the live pids) what the budget allows, most
    /// valuable reading per second of reading first. Must run inside the tokio runtime.
    pub fn start_sweep(&mut self, cands: Vec<Candidate>) -> Sweep {
        self.sweeping = true;
        self.sweeps += 1;
        let t = self.epoch.elapsed().as_secs_f64();
        let read_ns = smaps::READ_CPU_NS.load(Ordering::Relaxed);
        // Every smaps second since the last sweep (this sampler's reads and the evidence's).
        let spent = read_ns.saturating_sub(self.charged_ns) as f64 / 1e9;
        self.charged_ns = read_ns;
        self.budget.spend(t, spent);
        let plan = self.plan(t, cands, spent);
        self.last_sweep_t = t;
        let order: Vec<u32> = plan.read.iter().map(|&(pid, _)| pid).collect();
        tokio::spawn(smaps::sweep(order, self.interval / 2, self.tx.clone()));
        Sweep { t, carried: plan.carried }
    }

    /// Which candidates to read now (best first, with their predicted cost) and which to carry.
    fn plan(&mut self, t: f64, cands: Vec<Candidate>, spent: f64) -> Plan {
        let dt = self.interval.as_secs_f64();
        self.pids.retain(|pid, _| cands.iter().any(|c| c.pid == *pid));
        let mut scored = Vec::new();
        let mut carried = Vec::new();
        for c in cands {
            let st = self.pids.entry(c.pid).or_insert_with(|| PidState { seen_at: t, ..Default::default() });
            st.moved |= c.moved;
            let age = t - st.read_at.unwrap_or(st.seen_at);
            let weight = match () {
                _ if st.read_at.is_none() => 16.0,
                _ if c.weighing => 8.0,
                _ if st.moved => 4.0,
                _ if c.sibling_stale => 2.0,
                _ if age >= UNCHANGED_EVERY * dt - 1e-3 => 1.0,
                _ => {
                    carried.push(c.pid);
                    continue;
                }
            };
            let cost = self.cost.predict(c.pid, c.rss_kib);
            scored.push((c.pid, cost, weight * (age + dt) / cost.max(1e-4)));
        }
        scored.sort_by(|a, b| b.2.total_cmp(&a.2));
        // The bucket fills at the budget's rate, up to a fifth of the window's budget or the
        // best candidate's cost, whichever is more (a read bigger than a sweep's share waits
        // for its turn instead of never fitting).
        let cap = (0.2 * self.budget.per_window()).max(scored.first().map_or(0.0, |s| s.1));
        self.tokens = (self.tokens + self.budget.per(t - self.last_sweep_t) - spent).min(cap);
        let window = self.budget.available(t);
        let mut read = Vec::new();
        let mut planned = 0.0;
        for (pid, cost, _) in scored {
            let fits = planned + cost <= self.tokens.min(window);
            // A read that costs more than the whole window's budget goes alone, after a window
            // with no reading at all.
            let alone = read.is_empty() && self.tokens >= cost.min(cap) && self.budget.idle(t);
            if fits || alone {
                planned += cost;
                read.push((pid, cost));
                self.pids.get_mut(&pid).expect("scored").moved = false;
            } else {
                carried.push(pid);
            }
        }
        Plan { read, carried }
    }

    pub fn on_swept(&mut self, swept: smaps::Swept) {
        match swept {
            smaps::Swept::Chunk(from, to, samples) => {
                let ns = |i: Instant| i.saturating_duration_since(self.epoch).as_nanos() as u64;
                let t = ns(from) as f64 / 1e9;
                let samples = samples
                    .into_iter()
                    .map(|(pid, mem, secs)| {
                        self.cost.observe(pid, secs, mem.rss_kib);
                        let st = self.pids.entry(pid).or_default();
                        let prev = st.read_at.replace(t);
                        (pid, mem, prev.map(|p| ((t - p) * 100.0).round() / 100.0))
                    })
                    .collect();
                self.pending.push_back(Chunk { sweep: self.sweeps, from: ns(from), to: ns(to), samples });
            }
            smaps::Swept::Done => self.sweeping = false,
        }
    }

    /// Readings are waiting for the ledger to catch up.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// The readings whose window the ledger has been fed past (`done_ns`, ns since the start).
    pub fn settled(&mut self, done_ns: u64) -> Vec<Reading> {
        let mut out = Vec::new();
        while let Some(c) = self.pending.pop_front_if(|c| c.to + READ_SLACK_NS <= done_ns) {
            let t = c.from as f64 / 1e9;
            let window = (c.from, c.to + READ_SLACK_NS);
            out.extend(c.samples.into_iter().map(|(pid, mem, prev_age_s)| Reading {
                pid,
                sweep: c.sweep,
                t,
                window,
                mem,
                prev_age_s,
            }));
        }
        out
    }
}

struct Plan {
    read: Vec<(u32, f64)>,
    carried: Vec<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sweeps every 2 s for `secs` over pids of `rss` KiB each (reads cost 7 ms per GiB);
    /// `moved(pid, t)` says whose ledger moved. Returns (t, seconds read) per sweep and the
    /// reads per pid.
    fn simulate(
        pct: f64,
        rss: &[u64],
        secs: f64,
        moved: impl Fn(u32, f64) -> bool,
    ) -> (Vec<(f64, f64)>, HashMap<u32, u32>) {
        let (mut s, _rx) = Sampler::new(Duration::from_secs(2), Instant::now());
        s.set_budget(pct);
        let cost = |kib: u64| 0.0002 + 0.007 * kib as f64 / (1 << 20) as f64;
        let (mut spent, mut log, mut reads) = (0.0, Vec::new(), HashMap::new());
        let mut t = 2.0;
        while t <= secs {
            let cands = rss
                .iter()
                .enumerate()
                .map(|(i, &kib)| Candidate {
                    pid: i as u32,
                    rss_kib: Some(kib),
                    moved: moved(i as u32, t),
                    ..Default::default()
                })
                .collect();
            s.budget.spend(t, spent);
            let plan = s.plan(t, cands, spent);
            s.last_sweep_t = t;
            spent = 0.0;
            for &(pid, _) in &plan.read {
                let c = cost(rss[pid as usize]);
                spent += c;
                s.cost.observe(pid, c, rss[pid as usize]);
                s.pids.get_mut(&pid).unwrap().read_at = Some(t);
                *reads.entry(pid).or_default() += 1;
            }
            log.push((t, spent));
            t += 2.0;
        }
        (log, reads)
    }

    fn worst_window(log: &[(f64, f64)]) -> f64 {
        log.iter()
            .map(|&(t0, _)| log.iter().filter(|&&(t, _)| t >= t0 && t < t0 + 60.0).map(|x| x.1).sum())
            .fold(0.0, f64::max)
    }

    #[test]
    fn expensive_reads_stay_within_the_budget_over_any_minute() {
        // 8 pids of 6 GiB (42 ms a read), all moving all the time, at 1%: 0.6 s a minute, so
        // ~14 reads a minute where a read of each every sweep would be 240.
        let (log, reads) = simulate(1.0, &[6 << 20; 8], 600.0, |_, _| true);
        let worst = worst_window(&log);
        assert!(worst <= 0.6 * 1.2, "worst 60 s: {worst:.3} s");
        let total: f64 = log.iter().map(|x| x.1).sum();
        assert!(total >= 0.6 * 10.0 * 0.7, "budget mostly used: {total:.3} s over 10 min");
        // Spread over all of them, none starved.
        assert_eq!(reads.len(), 8, "{reads:?}");
        assert!(reads.values().all(|&n| n >= 10), "{reads:?}");
    }

    #[test]
    fn a_read_bigger_than_the_whole_budget_still_goes_alone() {
        // One 100 GiB process (0.7 s a read) at 1% (0.6 s a minute): read about once a minute
        // or so, never twice within a minute.
        let (log, reads) = simulate(1.0, &[100 << 20], 600.0, |_, _| true);
        let times: Vec<f64> = log.iter().filter(|x| x.1 > 0.0).map(|x| x.0).collect();
        assert!(times.windows(2).all(|w| w[1] - w[0] >= 60.0), "{times:?}");
        assert!(reads[&0] >= 6, "{reads:?}");
    }

    #[test]
    fn changed_pids_are_read_first_and_quiet_ones_still_age_in() {
        // 20 pids of 2 GiB; pid 0 moves all the time, the others never.
        let (log, reads) = simulate(1.0, &[2 << 20; 20], 600.0, |pid, _| pid == 0);
        assert!(worst_window(&log) <= 0.72);
        let quiet_max = (1..20).map(|p| reads.get(&p).copied().unwrap_or(0)).max().unwrap();
        let quiet_min = (1..20).map(|p| reads.get(&p).copied().unwrap_or(0)).min().unwrap();
        // Weight 4 against 1: read about 3-4 times as often.
        assert!(reads[&0] * 2 > 5 * quiet_max, "{reads:?}");
        assert!(quiet_min >= 2, "every quiet pid re-read as it ages: {reads:?}");
    }

    #[test]
    fn a_small_tree_is_read_as_before() {
        // 5 pids of 64 MiB, all moving, at the default budget: every pid every sweep.
        let (_, reads) = simulate(1.0, &[64 << 10; 5], 60.0, |_, _| true);
        assert!(reads.values().all(|&n| n == 30), "{reads:?}");
    }
}
