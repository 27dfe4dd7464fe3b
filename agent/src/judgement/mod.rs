//! Judgement: each smaps reading reconciled with the ledger (drift, what moved PSS/USS), the leak
//! verdicts, and the evidence a leak record carries (the pid's full smaps of the mapping); OOM
//! post-mortems.
pub mod cgroup;
pub mod cgroup_files;
pub mod cgroup_verdict;
pub mod evidence;
pub mod history;
pub mod memcg;
pub mod oom;
pub mod reconcile;
pub mod slow_leak;
pub mod span_mapping;
pub mod verdict;

pub use evidence::Evidence;
pub use reconcile::{Judge, Reading};
pub use verdict::Params;
