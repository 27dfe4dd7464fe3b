//! The capacity and scale parts of `cargo xtask bench`.
//!
//! Capacity: N fault storms at once under the agent, N = 1, 2, 4: faults per second and records
//! lost. Scale (the seed's shape, scaled down): a parent maps a 2 GiB MAP_SHARED segment and
//! forks 600 children that each write a slice, 3 of which keep growing. Reports the agent's CPU
//! per second of watching, its peak RSS, the time until every pid has a smaps reading, the time
//! to flag the growers, and its smaps cost against a plain serial smaps_rollup sweep of all
//! pids (the way smem reads them).
use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, Result};
use serde_json::Value;

use crate::bench_run::{agent, workloads, Report};

pub struct Capacity {
    pub parallel: usize,
    pub faults_per_s: f64,
    pub lost: u64,
}

pub fn capacity() -> Result<Vec<Capacity>> {
    let mut out = Vec::new();
    for parallel in [1, 2, 4] {
        let report = Report::new();
        let res = Command::new(agent())
            .args(["watch", "--format", "json", "--"])
            .args(report.storm(&["--mib", "512", "--passes", "2", "--parallel", &parallel.to_string()]))
            .output()?;
        // One report for the whole set: the wall time from the first fork to the last exit.
        let storm = report.read()?;
        let (secs, faults) = (storm.wall_s, storm.faults as f64);
        let summary = String::from_utf8_lossy(&res.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["type"] == "summary")
            .context("no summary")?;
        let lost = summary["lost_events"].as_u64().unwrap_or(0);
        eprintln!("bench: capacity parallel={parallel} {:.0} faults/s lost={lost}", faults / secs);
        out.push(Capacity { parallel, faults_per_s: faults / secs, lost });
    }
    Ok(out)
}

pub struct Scale {
    pub procs: usize,
    pub watch_s: f64,
    pub cpu_per_s: f64,
    pub max_rss_kib: u64,
    pub all_read_after_s: f64,
    pub growers_flagged_after_s: Vec<f64>,
    /// Distinct pids flagged that are not growers (false positives).
    pub others_flagged: usize,
    pub agent_smaps_s: f64,
    pub agent_smaps_reads: u64,
    pub serial_sweep_s: f64,
    pub serial_sweeps_equivalent: f64,
    pub lost: u64,
}

fn serial_sweep(pids: &[u32]) -> f64 {
    let t = Instant::now();
    for &pid in pids {
        if let Ok(p) = procfs::process::Process::new(pid as i32) {
            let _ = p.smaps_rollup();
        }
    }
    t.elapsed().as_secs_f64()
}

pub fn scale() -> Result<Scale> {
    let (procs, duration, smaps_interval) = (600usize, 45.0, 2.0);
    let mut child = Command::new(agent())
        .args(["watch", "--format", "json", "--smaps-interval", &smaps_interval.to_string(), "--"])
        .arg(workloads())
        .args(["scale", "--procs", &procs.to_string(), "--segment-mib", "2048", "--growers", "3"])
        .args(["--duration", &duration.to_string()])
        .stdout(Stdio::piped())
        .spawn()?;
    let mut recs: Vec<Value> = Vec::new();
    let mut forked: Vec<u32> = Vec::new();
    let mut serial = Vec::new();
    let mut last_fork_ts = 0.0;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let v: Value = serde_json::from_str(&line?)?;
        if v["type"] == "proc" && v["event"] == "fork" {
            forked.push(v["pid"].as_u64().unwrap() as u32);
            last_fork_ts = v["ts"].as_f64().unwrap();
        }
        // Once the tree is up, time three serial sweeps of it while the agent watches.
        if forked.len() == procs && serial.is_empty() && v["ts"].as_f64().unwrap() > last_fork_ts + 5.0 {
            serial = (0..3).map(|_| serial_sweep(&forked)).collect();
        }
        recs.push(v);
    }
    child.wait()?;
    serial.sort_by(f64::total_cmp);
    let serial_sweep_s = *serial.get(1).context("the scale run ended before the serial sweeps")?;
    let summary = recs.last().context("no output")?;
    let agent = &summary["agent"];
    // The first time every pid of the tree had a smaps reading.
    let mut seen: BTreeMap<u64, f64> = BTreeMap::new();
    let mut all_read_at = f64::NAN;
    for r in recs.iter().filter(|r| r["type"] == "mem") {
        seen.entry(r["pid"].as_u64().unwrap()).or_insert(r["ts"].as_f64().unwrap());
        if seen.len() > procs && all_read_at.is_nan() {
            all_read_at = r["ts"].as_f64().unwrap();
        }
    }
    // The first leak record of each grower (re-emits on a rate change are not new verdicts).
    let mut first: BTreeMap<u64, f64> = BTreeMap::new();
    for r in recs.iter().filter(|r| r["type"] == "leak" && r["comm"].as_str().is_some_and(|c| c.starts_with("grower-")))
    {
        first.entry(r["pid"].as_u64().unwrap()).or_insert(r["ts"].as_f64().unwrap() - last_fork_ts);
    }
    let mut flagged: Vec<f64> = first.into_values().collect();
    flagged.sort_by(f64::total_cmp);
    let others_flagged = recs
        .iter()
        .filter(|r| r["type"] == "leak" && !r["comm"].as_str().is_some_and(|c| c.starts_with("grower-")))
        .filter_map(|r| r["pid"].as_u64())
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    let watch_s = summary["duration_s"].as_f64().unwrap_or(duration);
    let agent_smaps_s = agent["smaps_read_s"].as_f64().unwrap_or(0.0);
    Ok(Scale {
        procs,
        watch_s,
        cpu_per_s: agent["cpu_per_s"].as_f64().unwrap_or(0.0),
        max_rss_kib: agent["max_rss_kib"].as_u64().unwrap_or(0),
        all_read_after_s: all_read_at - last_fork_ts,
        growers_flagged_after_s: flagged,
        others_flagged,
        agent_smaps_s,
        agent_smaps_reads: agent["smaps_reads"].as_u64().unwrap_or(0),
        serial_sweep_s,
        // What a serial sweep of every pid at each smaps interval would have cost instead.
        serial_sweeps_equivalent: serial_sweep_s * (watch_s / smaps_interval).floor(),
        lost: summary["lost_events"].as_u64().unwrap_or(0),
    })
}
