//! The bench's fault-source part: the fault storm under `agent watch --fault-source tracepoint`
//! and `--fault-source perf`, alternated, wall-time medians and ranges; then one storm each with
//! `--bpf-stats` for the eBPF time per fault (all programs, and the fault program alone). The
//! perf source's wall and CPU time also hold the perf core's own work per event (software-event
//! lookup, sample setup), which the BPF statistics do not count; the storm's CPU time (user +
//! sys) is the steadier of the two on a shared machine.
use anyhow::{bail, Context as _, Result};

use crate::{bench::median, bench_run::StormReport};

const SOURCES: [&str; 2] = ["tracepoint", "perf"];

/// One storm under `agent watch --format json --fault-source SOURCE EXTRA`: its report and the
/// agent's summary.
fn storm_under(source: &str, extra: &[&str]) -> Result<(StormReport, serde_json::Value)> {
    let args: Vec<&str> = ["--fault-source", source].iter().chain(extra).copied().collect();
    let (out, report) = crate::bench::under_agent(&args)?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary = serde_json::from_str(stdout.lines().last().context("no summary")?).context("summary JSON")?;
    Ok((report, summary))
}

fn range(v: &[f64]) -> (f64, f64) {
    v.iter().fold((f64::MAX, 0.0f64), |(lo, hi), &t| (lo.min(t), hi.max(t)))
}

/// The section for BENCHMARKS.md, ending with the `fault-source perf/tracepoint` lines.
pub fn run() -> Result<String> {
    let rounds: usize = std::env::var("BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let mut walls = [Vec::new(), Vec::new()];
    let mut cpus = [Vec::new(), Vec::new()];
    let mut faults = [0u64; 2];
    for round in 0..rounds {
        for i in 0..2 {
            // Alternate which source goes first.
            let k = (i + round) % 2;
            let (storm, summary) = storm_under(SOURCES[k], &[])?;
            let lost = summary["lost_events"].as_u64().unwrap_or(0);
            eprintln!(
                "bench: round {} fault source {:<10} {:.3}s, CPU {:.3}s ({} faults, {lost} lost)",
                round + 1,
                SOURCES[k],
                storm.wall_s,
                storm.cpu_s,
                storm.faults
            );
            walls[k].push(storm.wall_s);
            cpus[k].push(storm.cpu_s);
            faults[k] = storm.faults;
        }
    }
    let mut out = format!(
        "\n## Fault sources\n\nThe fault storm under `agent watch --fault-source tracepoint` and `--fault-source perf` \
         (the software page-faults perf event, one per CPU), {rounds} alternated runs each.\n\n\
         | fault source | median s | range s | storm CPU s (median, range) | ns per fault, all programs | ns per fault, fault program |\n\
         |---|---|---|---|---|---|\n"
    );
    let mut ns = [(0.0, 0.0); 2];
    for k in 0..2 {
        let (storm, summary) = storm_under(SOURCES[k], &["--bpf-stats"])?;
        let progs = summary["agent"]["programs"].as_array().cloned().unwrap_or_default();
        let run_ns = |p: &serde_json::Value| p["run_ns"].as_f64().unwrap_or(0.0);
        let all: f64 = progs.iter().map(run_ns).sum();
        let fault_prog = if k == 0 { "page_fault_user" } else { "page_fault_perf" };
        let own: f64 = progs.iter().filter(|p| p["name"] == fault_prog).map(run_ns).sum();
        if own == 0.0 {
            bail!("--fault-source {}: no run statistics of {fault_prog} in {progs:?}", SOURCES[k]);
        }
        ns[k] = (all / storm.faults as f64, own / storm.faults as f64);
        let (lo, hi) = range(&walls[k]);
        let (clo, chi) = range(&cpus[k]);
        out += &format!(
            "| {} | {:.3} | {lo:.3}-{hi:.3} | {:.3} ({clo:.3}-{chi:.3}) | {:.0} | {:.0} |\n",
            SOURCES[k],
            median(&walls[k]),
            median(&cpus[k]),
            ns[k].0,
            ns[k].1
        );
    }
    out += &format!(
        "\nStorm faults per run: {} (tracepoint), {} (perf).\n\nfault-source perf/tracepoint wall: {:.2}\n\
         fault-source perf/tracepoint storm cpu: {:.2}\n\
         fault-source perf/tracepoint ebpf ns per fault: {:.2}\n",
        faults[0],
        faults[1],
        median(&walls[1]) / median(&walls[0]),
        median(&cpus[1]) / median(&cpus[0]),
        ns[1].0 / ns[0].0
    );
    Ok(out)
}
