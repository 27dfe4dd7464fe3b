//! Cgroup-level leak verdicts: the cgroup's counter (`memory.current` / `usage_in_bytes`) grows
//! steadily while its members' pages do not explain the growth (a tmpfs file written and never
//! mapped; page cache a process keeps dirtying; kernel memory). The same robust trend as a pid's
//! verdict (`verdict::assess`), on the counter, with "own" growth being the unexplained part:
//! at least half of the counter's growth must be unexplained. The record names the line of
//! memory.stat that grew with it.
use std::collections::{BTreeMap, VecDeque};

use serde::Serialize;

use super::{
    cgroup::CgroupRecord,
    verdict::{assess, Metric, Params, Sample, Trend},
};

/// Lines of memory.stat a growth is named by, most specific first (v2, then v1's hierarchical
/// totals, then v1's own).
const LINES: &[&str] = &[
    "shmem",
    "file_dirty",
    "kernel_stack",
    "pagetables",
    "slab",
    "sock",
    "percpu",
    "kernel",
    "anon",
    "file",
    "total_shmem",
    "total_dirty",
    "total_rss",
    "total_cache",
];

/// A cgroup-level `leak` record (`scope: "cgroup"`).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct CgroupLeak {
    pub scope: &'static str,
    /// The watched cgroup directory.
    pub path: String,
    /// `memory.current` (v2) or `memory.usage_in_bytes` (v1): the counter that grows.
    pub metric: &'static str,
    pub rate_kib_s: f64,
    pub window_s: f64,
    pub growth_kib: i64,
    /// Of that growth, what no member's pages account for.
    pub unexplained_kib: i64,
    /// The memory.stat line that grew most with it, and by how much.
    pub stat_line: String,
    pub stat_growth_kib: i64,
    pub confidence: f64,
    /// `flagged`, or `withdrawn` (no such growth for as long as it was flagged on).
    pub state: &'static str,
    /// The biggest unmapped files named at that reading.
    pub files: Vec<String>,
}

struct Point {
    t: f64,
    usage_kib: f64,
    unexplained_kib: f64,
    stat: BTreeMap<String, u64>,
}

/// The verdict state of one watched cgroup.
#[derive(Default)]
pub struct CgroupDetector {
    points: VecDeque<Point>,
    /// When it was flagged and the last time its trend held.
    flagged: Option<(f64, f64)>,
}

impl CgroupDetector {
    /// One record at `t` (seconds since start): a `leak` record when a verdict is flagged or
    /// withdrawn.
    pub fn observe(&mut self, t: f64, r: &CgroupRecord, p: &Params) -> Option<CgroupLeak> {
        let usage = r.usage()? as f64 / 1024.0;
        let e = &r.explained;
        let explained = (e.anon_bytes + e.shmem_bytes + e.file_bytes) as f64 / 1024.0;
        self.points.push_back(Point { t, usage_kib: usage, unexplained_kib: usage - explained, stat: r.stat.clone() });
        while self.points.front().is_some_and(|f| t - f.t > p.window_s) {
            self.points.pop_front();
        }
        let samples: Vec<Sample> = self
            .points
            .iter()
            .map(|x| Sample { t: x.t, uss_kib: x.unexplained_kib, pss_kib: x.usage_kib, own_kib: x.unexplained_kib })
            .collect();
        match (assess(&samples, Metric::Pss, p), self.flagged) {
            (Some(trend), None) => {
                self.flagged = Some((t, t));
                Some(self.leak(r, &trend, "flagged"))
            }
            (Some(_), Some((at, _))) => {
                self.flagged = Some((at, t));
                None
            }
            (None, Some((at, last))) if t - last >= (last - at).max(p.min_span_s) => {
                self.flagged = None;
                let trend = Trend {
                    metric: Metric::Pss,
                    rate_kib_s: 0.0,
                    span_s: t - at,
                    growth_kib: 0.0,
                    monotonic: 0.0,
                    own_share: 0.0,
                    confidence: 0.0,
                };
                Some(self.leak(r, &trend, "withdrawn"))
            }
            _ => None,
        }
    }

    pub fn standing(&self) -> bool {
        self.flagged.is_some()
    }

    fn leak(&self, r: &CgroupRecord, trend: &Trend, state: &'static str) -> CgroupLeak {
        let (first, last) = (self.points.front().expect("observed"), self.points.back().expect("observed"));
        let grew = |k: &str| {
            let v = |p: &Point| p.stat.get(k).copied().unwrap_or(0) as i64;
            (v(last) - v(first)) / 1024
        };
        let usage_growth = (last.usage_kib - first.usage_kib) as i64;
        // The most specific line that grew by half the counter's growth, else the one that grew most.
        let line = LINES
            .iter()
            .find(|k| r.stat.contains_key(**k) && grew(k) * 2 >= usage_growth && usage_growth > 0)
            .or_else(|| LINES.iter().filter(|k| r.stat.contains_key(**k)).max_by_key(|k| grew(k)))
            .map_or("", |k| k);
        let round1 = |v: f64| (v * 10.0).round() / 10.0;
        CgroupLeak {
            scope: "cgroup",
            path: r.path.clone(),
            metric: if r.memory_current_bytes.is_some() { "memory.current" } else { "memory.usage_in_bytes" },
            rate_kib_s: round1(trend.rate_kib_s),
            window_s: round1(trend.span_s),
            growth_kib: trend.growth_kib as i64,
            unexplained_kib: (last.unexplained_kib - first.unexplained_kib) as i64,
            stat_line: line.to_string(),
            stat_growth_kib: grew(line),
            confidence: trend.confidence,
            state,
            files: r.files.iter().map(|f| f.path.clone()).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judgement::cgroup::{Explained, Unmapped};

    fn rec(usage_kib: u64, shmem_kib: u64, explained_anon_kib: u64) -> CgroupRecord {
        let stat: BTreeMap<String, u64> = [
            ("total_shmem", shmem_kib * 1024),
            ("total_rss", explained_anon_kib * 1024),
            ("total_cache", shmem_kib * 1024),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        CgroupRecord {
            path: "/sys/fs/cgroup/memory/t".into(),
            members: 1,
            memory_source: None,
            no_memory_cgroup: None,
            memory_current_bytes: None,
            usage_in_bytes: Some(usage_kib * 1024),
            stat,
            explained: Explained { anon_bytes: explained_anon_kib * 1024, ..Explained::default() },
            unmapped: Unmapped::default(),
            files: Vec::new(),
        }
    }

    #[test]
    fn unmapped_shmem_growth_is_flagged_with_its_line() {
        let (mut d, p) = (CgroupDetector::default(), Params::default());
        let mut flagged = None;
        for i in 0..30 {
            // 1 MiB/s of shmem nobody maps, 8 MiB of mapped anon, stable.
            let r = rec(8192 + 1024 * i, 1024 * i, 8192);
            if let Some(l) = d.observe(i as f64, &r, &p) {
                flagged.get_or_insert(l);
            }
        }
        let l = flagged.expect("flagged");
        assert_eq!((l.state, l.scope, l.stat_line.as_str()), ("flagged", "cgroup", "total_shmem"));
        assert!((l.rate_kib_s - 1024.0).abs() < 1.0, "{l:?}");
        assert!(l.unexplained_kib >= 20 * 1024, "{l:?}");
    }

    #[test]
    fn growth_the_members_explain_is_not_a_cgroup_leak() {
        let (mut d, p) = (CgroupDetector::default(), Params::default());
        for i in 0..40 {
            // A member's own anon grows: mapped, explained.
            let r = rec(8192 + 1024 * i, 0, 8192 + 1024 * i);
            assert_eq!(d.observe(i as f64, &r, &p), None);
        }
        assert!(!d.standing());
    }

    #[test]
    fn a_verdict_is_withdrawn_when_the_growth_stops() {
        let (mut d, p) = (CgroupDetector::default(), Params::default());
        let mut states = Vec::new();
        for i in 0..120u64 {
            let v = 1024 * i.min(40);
            if let Some(l) = d.observe(i as f64, &rec(8192 + v, v, 8192), &p) {
                states.push(l.state);
            }
        }
        assert_eq!(states, ["flagged", "withdrawn"]);
    }
}
