//! Sampling: the smaps scheduler and its readings. Each sweep reads `smaps_rollup` of the pids
//! that changed (all of them every few sweeps) on the blocking pool; the readings wait here until
//! the ledger has been fed past the window they were taken in, then go to the judgement.
pub mod smaps;

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

use tokio::sync::mpsc;

use crate::judgement::Reading;

/// Every this many sweeps, all pids are re-read; in between only those whose ledger moved.
const FULL_SWEEP_EVERY: u64 = 5;

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
    samples: Vec<(u32, crate::records::MemStat)>,
}

pub struct Sampler {
    interval: Duration,
    epoch: Instant,
    sweeping: bool,
    sweeps: u64,
    pending: VecDeque<Chunk>,
    tx: mpsc::Sender<smaps::Swept>,
}

/// Whom a sweep reads, and whom it carries forward.
pub struct Sweep {
    /// Seconds since the watch start.
    pub t: f64,
    /// Not re-read: their last reading still holds at `t`.
    pub carried: Vec<u32>,
}

impl Sampler {
    /// The sampler, and the channel its sweeps' chunks come back on (for `on_swept`).
    pub fn new(interval: Duration, epoch: Instant) -> (Sampler, mpsc::Receiver<smaps::Swept>) {
        let (tx, rx) = mpsc::channel(8);
        (Sampler { interval, epoch, sweeping: false, sweeps: 0, pending: VecDeque::new(), tx }, rx)
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// A sweep can start (the previous one is done).
    pub fn idle(&self) -> bool {
        !self.sweeping
    }

    /// Start a sweep over `live` pids. `needs_read(pid)` says a pid changed or has no reading
    /// yet; every few sweeps all are read anyway. Must run inside the tokio runtime.
    pub fn start_sweep(&mut self, live: Vec<u32>, mut needs_read: impl FnMut(u32) -> bool) -> Sweep {
        self.sweeping = true;
        self.sweeps += 1;
        let t = self.epoch.elapsed().as_secs_f64();
        let full = self.sweeps % FULL_SWEEP_EVERY == 1;
        let (mut read, mut carried) = (Vec::new(), Vec::new());
        for pid in live {
            // Asked for every pid, so its "changed" flag is cleared on a full sweep too.
            if needs_read(pid) || full {
                read.push(pid);
            } else {
                carried.push(pid);
            }
        }
        tokio::spawn(smaps::sweep(read, self.interval / 2, self.tx.clone()));
        Sweep { t, carried }
    }

    pub fn on_swept(&mut self, swept: smaps::Swept) {
        match swept {
            smaps::Swept::Chunk(from, to, samples) => {
                let ns = |i: Instant| i.saturating_duration_since(self.epoch).as_nanos() as u64;
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
            out.extend(c.samples.into_iter().map(|(pid, mem)| Reading { pid, sweep: c.sweep, t, window, mem }));
        }
        out
    }
}
