//! What the bench's parts share: the release binaries they run, and one fault storm with its
//! typed report (`workloads storm --report FILE`).
use std::{
    ffi::OsString,
    path::PathBuf,
    sync::atomic::{AtomicUsize, Ordering},
};

use anyhow::{Context as _, Result};

use crate::workspace_root;

/// The agent under test (`cargo build --release -p agent`).
pub fn agent() -> PathBuf {
    workspace_root().join("target/release/agent")
}

/// The workloads and the cost floor (`cargo build --release -p workloads`).
pub fn workloads() -> PathBuf {
    workspace_root().join("target/release/workloads")
}

/// What `workloads storm --report FILE` writes: its fault loop's wall time, its CPU time
/// (user + sys, the eBPF programs run in its faults included; with `--parallel`, all the storms'
/// together) and the faults it made.
#[derive(serde::Deserialize, Debug)]
pub struct StormReport {
    pub wall_s: f64,
    #[allow(dead_code)] // in the contract; no bench figure uses it yet
    pub cpu_s: f64,
    pub faults: u64,
}

/// The report file of one storm: a fresh path under the temp directory, removed when dropped.
/// Not created here: the storm creates it, possibly as the sudo user the agent runs it as.
pub struct Report(PathBuf);

impl Report {
    pub fn new() -> Report {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("agent-bench-storm-{}-{n}.json", std::process::id()));
        let _ = std::fs::remove_file(&path);
        Report(path)
    }

    /// `workloads storm ARGS --report FILE`: the command line of the storm, program first.
    pub fn storm(&self, args: &[&str]) -> Vec<OsString> {
        let mut v: Vec<OsString> = vec![workloads().into(), "storm".into()];
        v.extend(args.iter().map(Into::into));
        v.extend(["--report".into(), self.0.clone().into()]);
        v
    }

    pub fn read(&self) -> Result<StormReport> {
        let text = std::fs::read_to_string(&self.0)
            .with_context(|| format!("the storm wrote no report ({})", self.0.display()))?;
        serde_json::from_str(&text).with_context(|| format!("the storm's report {}: {text}", self.0.display()))
    }
}

impl Drop for Report {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
