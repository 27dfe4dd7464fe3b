//! `/healthz`: the pipeline is alive while its intervals close and no stop has begun.
use std::{
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::Instant,
};

/// Whether the pipeline is alive, for `/healthz`.
#[derive(Debug)]
pub struct Health {
    epoch: Instant,
    /// Milliseconds since `epoch` of the last interval's view; `NEVER` until the first.
    last_view_ms: AtomicU64,
    /// Set when a stop begins (signal) or the session ended.
    pub stopping: AtomicBool,
}

impl Default for Health {
    fn default() -> Health {
        Health::new()
    }
}

/// No view yet: unhealthy until the ring has been read once.
const NEVER: u64 = u64::MAX;

impl Health {
    pub fn new() -> Health {
        Health { epoch: Instant::now(), last_view_ms: AtomicU64::new(NEVER), stopping: AtomicBool::new(false) }
    }

    pub fn beat(&self) {
        self.last_view_ms.store(self.epoch.elapsed().as_millis() as u64, Ordering::Release);
    }

    /// Healthy: not stopping, and an interval closed within `stale_ms` (the pipeline task runs
    /// and the ring is read).
    pub fn healthy(&self, stale_ms: u64) -> bool {
        let last = self.last_view_ms.load(Ordering::Acquire);
        let age = (self.epoch.elapsed().as_millis() as u64).saturating_sub(last);
        !self.stopping.load(Ordering::Acquire) && last != NEVER && age <= stale_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healthz_needs_a_recent_view_and_no_stop() {
        let h = Health::new();
        // Just started, nothing read yet: not healthy, however generous the staleness bound.
        assert!(!h.healthy(1000));
        assert!(!h.healthy(u64::MAX));
        h.beat();
        assert!(h.healthy(1000));
        h.stopping.store(true, Ordering::Release);
        assert!(!h.healthy(1000));
    }

    #[test]
    fn healthz_goes_stale_without_views() {
        let h = Health::new();
        h.beat();
        std::thread::sleep(std::time::Duration::from_millis(30));
        assert!(!h.healthy(5));
        assert!(h.healthy(10_000));
    }
}
