//! `/healthz`: the pipeline is alive while its intervals close and no stop has begun.
use std::{
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::Instant,
};

/// Whether the pipeline is alive, for `/healthz`.
#[derive(Debug)]
pub struct Health {
    epoch: Instant,
    /// Milliseconds since `epoch` of the last interval's view.
    last_view_ms: AtomicU64,
    /// Set when a stop begins (signal) or the session ended.
    pub stopping: AtomicBool,
}

impl Default for Health {
    fn default() -> Health {
        Health::new()
    }
}

impl Health {
    pub fn new() -> Health {
        Health { epoch: Instant::now(), last_view_ms: AtomicU64::new(0), stopping: AtomicBool::new(false) }
    }

    pub fn beat(&self) {
        self.last_view_ms.store(self.epoch.elapsed().as_millis() as u64, Ordering::Release);
    }

    /// Healthy: not stopping, and an interval closed within `stale_ms` (the pipeline task runs
    /// and the ring is read).
    pub fn healthy(&self, stale_ms: u64) -> bool {
        let age = (self.epoch.elapsed().as_millis() as u64).saturating_sub(self.last_view_ms.load(Ordering::Acquire));
        !self.stopping.load(Ordering::Acquire) && age <= stale_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healthz_needs_a_recent_view_and_no_stop() {
        let h = Health::new();
        h.beat();
        assert!(h.healthy(1000));
        h.stopping.store(true, Ordering::Release);
        assert!(!h.healthy(1000));
    }
}
