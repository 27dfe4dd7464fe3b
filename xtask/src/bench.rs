//! `cargo xtask bench`: the fault storm (1 GiB of private anon written one byte per page, twice:
//! ~524k faults) timed under each variant, alternated A/B/C over several rounds, medians
//! compared in one run. Variants: bare (nothing attached), floor (do-nothing programs on exactly
//! the agent's tracepoints: the hooks' own cost), agent (default mode). Then the syscall paths
//! (`bench_syscall.rs`: a getppid storm, redis). Results are printed and written to
//! BENCHMARKS.md with the machine and date (`BENCH_SYSCALL_ONLY=1`: the syscall paths alone; `=storm`: the syscall storm alone).
use std::{
    io::{BufRead, BufReader},
    process::{Command, Output, Stdio},
};

use anyhow::{bail, Context as _, Result};

use crate::{
    bench_run::{agent, workloads, Report, StormReport},
    bench_scale, bench_syscall, workspace_root,
};

struct Variant {
    name: &'static str,
    times: Vec<f64>,
}

/// One storm with nothing attached by us (the bare run, or inside the floor): its report.
fn storm() -> Result<StormReport> {
    let report = Report::new();
    let argv = report.storm(&[]);
    let st = Command::new(&argv[0]).args(&argv[1..]).status().context("running workloads storm")?;
    if !st.success() {
        bail!("workloads storm failed ({st})");
    }
    report.read()
}

/// One storm under the floor's noop programs; with `stats`, their kernel run statistics too.
fn under_floor(stats: bool) -> Result<(StormReport, Option<serde_json::Value>)> {
    let mut floor = Command::new(workloads())
        .arg("floor")
        .args(stats.then_some("--bpf-stats"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut lines = BufReader::new(floor.stdout.take().unwrap()).lines();
    let line = lines.next().transpose()?.unwrap_or_default();
    if !line.starts_with("attached:") {
        let _ = floor.kill();
        bail!("the floor programs did not attach: {line}");
    }
    let storm = storm();
    drop(floor.stdin.take());
    let stats = match stats {
        true => Some(serde_json::from_str(&lines.next().context("floor: no statistics")??)?),
        false => None,
    };
    floor.wait()?;
    Ok((storm?, stats))
}

/// One storm under `agent watch --format json EXTRA`: the agent's output (JSON lines on
/// stdout) and the storm's report.
pub(crate) fn under_agent(extra: &[&str]) -> Result<(Output, StormReport)> {
    let report = Report::new();
    let out = Command::new(agent())
        .args(["watch", "--format", "json"])
        .args(extra)
        .arg("--")
        .args(report.storm(&[]))
        .output()?;
    if !out.status.success() {
        bail!(
            "agent watch -- workloads storm failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok((out, report.read()?))
}

/// Nanoseconds of eBPF program time per storm fault, from the kernel's run statistics: the
/// floor's noop and the agent's programs (all of them, on every hook), one storm each. Steadier
/// than wall time on a noisy VM, and the part of the cost the agent's code decides.
fn program_ns_per_fault() -> Result<Vec<(&'static str, f64)>> {
    let total = |v: &serde_json::Value| -> f64 {
        v.as_array().map_or(0.0, |a| a.iter().filter_map(|p| p["run_ns"].as_f64()).sum())
    };
    let (storm, stats) = under_floor(true)?;
    let mut out = vec![("floor", total(&stats.unwrap_or_default()["programs"]) / storm.faults as f64)];
    for (name, extra) in [("agent", &["--bpf-stats"][..]), ("agent --stacks", &["--bpf-stats", "--stacks"][..])] {
        let (run, storm) = under_agent(extra)?;
        let stdout = String::from_utf8_lossy(&run.stdout);
        let summary: serde_json::Value =
            serde_json::from_str(stdout.lines().last().context("no summary")?).context("summary JSON")?;
        out.push((name, total(&summary["agent"]["programs"]) / storm.faults as f64));
    }
    Ok(out)
}

fn run_bare() -> Result<f64> {
    Ok(storm()?.wall_s)
}

fn run_floor() -> Result<f64> {
    Ok(under_floor(false)?.0.wall_s)
}

fn run_agent() -> Result<f64> {
    run_agent_with(&[])
}

fn run_agent_stacks() -> Result<f64> {
    run_agent_with(&["--stacks"])
}

fn run_agent_with(extra: &[&str]) -> Result<f64> {
    let (out, storm) = under_agent(extra)?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lost: u64 = stdout
        .lines()
        .filter(|l| l.contains("\"type\":\"summary\""))
        .filter_map(|l| l.split("\"lost_events\":").nth(1)?.split(',').next()?.parse::<u64>().ok())
        .sum();
    if lost > 0 {
        eprintln!("bench: the agent lost {lost} events in this run");
    }
    Ok(storm.wall_s)
}

pub(crate) fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub fn run() -> Result<()> {
    let rounds: usize = std::env::var("BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    if std::env::var("BENCH_SYSCALL_ONLY").is_ok() {
        // The syscall paths alone (their figures printed, BENCHMARKS.md left as it is).
        let (sys, cpu) = bench_syscall::syscall_storm(rounds)?;
        println!("wall {}\ncpu {}", sys.ranges("s"), cpu.ranges("s"));
        println!("syscall-storm agent/bare cpu: {:.2}", cpu.median("agent") / cpu.median("bare"));
        println!("syscall-storm agent/bare: {:.2}", sys.median("agent") / sys.median("bare"));
        println!("syscall-storm agent/floor: {:.2}", sys.median("agent") / sys.median("floor"));
        let nosys = sys.median(bench_syscall::NOSYS) / sys.median("bare");
        println!("syscall-storm {}/bare cpu: {:.2}", bench_syscall::NOSYS, cpu.median(bench_syscall::NOSYS) / cpu.median("bare"));
        println!("syscall-storm {}/bare: {nosys:.2}", bench_syscall::NOSYS);
        // BENCH_SYSCALL_ONLY=storm: the storm alone.
        if std::env::var("BENCH_SYSCALL_ONLY").is_ok_and(|v| v == "storm") {
            return Ok(());
        }
        let redis = bench_syscall::redis(rounds)?;
        println!("{}", redis.ranges("req/s"));
        println!("redis agent/bare rps: {:.2}", redis.median("agent") / redis.median("bare"));
        println!("redis agent/poller rps: {:.2}", redis.median("agent") / redis.median("poller"));
        return Ok(());
    }
    type Run = fn() -> Result<f64>;
    let mut vs: Vec<(Variant, Run)> = vec![
        (Variant { name: "bare", times: vec![] }, run_bare),
        (Variant { name: "floor", times: vec![] }, run_floor),
        (Variant { name: "agent", times: vec![] }, run_agent),
        (Variant { name: "agent --stacks", times: vec![] }, run_agent_stacks),
    ];
    for round in 0..rounds {
        // Rotate the order each round so no variant always runs first.
        let n = vs.len();
        for i in 0..n {
            let (v, f) = &mut vs[(i + round) % n];
            let t = f().with_context(|| format!("variant {}", v.name))?;
            eprintln!("bench: round {} {:<14} {t:.3}s", round + 1, v.name);
            v.times.push(t);
        }
    }
    let med = |name: &str| vs.iter().find(|(v, _)| v.name == name).map(|(v, _)| median(&v.times)).unwrap();
    let (bare, floor) = (med("bare"), med("floor"));
    let machine = format!(
        "{} on {}, {} CPUs, {}",
        sh("uname", &["-sr"]),
        sh("hostname", &[]),
        sh("nproc", &[]),
        sh("date", &["-u", "+%Y-%m-%d %H:%M UTC"])
    );
    let mut table = format!(
        "Fault storm: 1 GiB private anon, one write per 4 KiB page, twice (~524k faults), THP off.\n\
         Median of {rounds} alternated runs of the fault loop's wall time. {machine}.\n\n\
         | variant | median s | vs bare | vs floor |\n|---|---|---|---|\n"
    );
    for (v, _) in &vs {
        let m = median(&v.times);
        table += &format!("| {} | {m:.3} | {:.2} | {:.2} |\n", v.name, m / bare, m / floor);
    }
    let spread: Vec<String> = vs
        .iter()
        .map(|(v, _)| {
            let (lo, hi) = v.times.iter().fold((f64::MAX, 0.0f64), |(lo, hi), &t| (lo.min(t), hi.max(t)));
            format!("{} {lo:.3}-{hi:.3} s", v.name)
        })
        .collect();
    table += &format!("\nRange of the runs (this VM's noise): {}.\n", spread.join(", "));
    let per_fault = program_ns_per_fault()?;
    let floor_ns = per_fault[0].1;
    table += "\neBPF program time per storm fault (kernel BPF run statistics, one storm each, all hooks):\n\n\
              | variant | ns per fault | vs floor |\n|---|---|---|\n";
    for (name, ns) in &per_fault {
        table += &format!("| {name} | {ns:.0} | {:.2} |\n", ns / floor_ns);
    }
    let bare_ns = bare / 524_288.0 * 1e9;
    table += &format!(
        "\nThe agent's programs add {:.0} ns per fault over the floor's, against {bare_ns:.0} ns of bare fault \
         loop per fault ({:.1}%).\n",
        per_fault[1].1 - floor_ns,
        (per_fault[1].1 - floor_ns) / bare_ns * 100.0
    );
    let mut rest = String::new();
    if std::env::var("BENCH_STORM_ONLY").is_err() {
        let cap = bench_scale::capacity()?;
        rest += "\n## Event capacity\n\nConcurrent fault storms (512 MiB x 2 each) under the agent.\n\n\
                 | storms | faults/s | records lost |\n|---|---|---|\n";
        for c in &cap {
            rest += &format!("| {} | {:.0} | {} |\n", c.parallel, c.faults_per_s, c.lost);
        }
        let best = cap.iter().filter(|c| c.lost == 0).map(|c| c.faults_per_s).fold(0.0, f64::max);
        rest += &format!("\nHighest fault rate with zero loss: {best:.0} faults/s (2 CPUs: more storms than CPUs only share them).\n");
        let s = bench_scale::scale()?;
        rest += &format!(
            "\n## Scale\n\nA parent maps a 2 GiB MAP_SHARED segment and forks {} children, each writing its own \
             slice; 3 of them grow 512 KiB/s. Watched for {:.0} s with `--smaps-interval 2`.\n\n\
             | figure | value |\n|---|---|\n\
             | agent CPU per second of watching | {:.3} s ({:.1}%) |\n\
             | agent peak RSS | {:.1} MiB |\n\
             | every pid has a smaps reading, after the last fork | {:.1} s |\n\
             | growers flagged (of 3), after the last fork | {}: {} |\n\
             | other pids flagged (false positives) | {} |\n\
             | agent smaps_rollup reads / their total time | {} / {:.3} s |\n\
             | one serial smaps_rollup sweep of all pids (smem-style) | {:.3} s |\n\
             | serial sweeps every 2 s for the same run | {:.3} s |\n\
             | records lost | {} |\n",
            s.procs,
            s.watch_s,
            s.cpu_per_s,
            s.cpu_per_s * 100.0,
            s.max_rss_kib as f64 / 1024.0,
            s.all_read_after_s,
            s.growers_flagged_after_s.len(),
            s.growers_flagged_after_s.iter().map(|t| format!("{t:.1} s")).collect::<Vec<_>>().join(", "),
            s.others_flagged,
            s.agent_smaps_reads,
            s.agent_smaps_s,
            s.serial_sweep_s,
            s.serial_sweeps_equivalent,
            s.lost,
        );
    }
    rest += &crate::bench_perf::run()?;
    rest += &format!("\nfault-storm agent --stacks/agent: {:.2}\n", med("agent --stacks") / med("agent"));
    let ((sys, cpu), redis) = (bench_syscall::syscall_storm(rounds)?, bench_syscall::redis(rounds)?);
    rest += &format!(
        "\n## Syscall paths\n\n5M getppid() (`workloads syscalls`), wall time, median (range) of {rounds} alternated \
         runs: {}. syscall-storm agent/floor: {:.2}. The same runs' CPU time (user + sys): {}; agent/bare {:.2}.\n\n\
         redis-server on a private port, `redis-benchmark -q -t get,set -n 200000` (mean of GET and SET \
         requests/s), bare, beside a thread waking every 10 ms as the agent's reader does (`poller`: such wakeups \
         alone change this VM's rate), and under `agent watch -p`: {}; agent/poller {:.2}.\n",
        sys.ranges("s"),
        sys.median("agent") / sys.median("floor"),
        cpu.ranges("s"),
        cpu.median("agent") / cpu.median("bare"),
        redis.ranges("req/s"),
        redis.median("agent") / redis.median("poller"),
    );
    if std::env::var("BENCH_STORM_ONLY").is_err() {
        rest += &crate::bench_seed::run()?;
    }
    let line = [
        format!("syscall-storm agent/bare: {:.2}", sys.median("agent") / sys.median("bare")),
        format!(
            "syscall-storm {}/bare: {:.2}",
            bench_syscall::NOSYS,
            sys.median(bench_syscall::NOSYS) / sys.median("bare")
        ),
        format!("redis agent/bare rps: {:.2}", redis.median("agent") / redis.median("bare")),
        format!("ebpf ns per fault agent/floor: {:.2}", per_fault[1].1 / floor_ns),
        format!("fault-storm agent/floor: {:.2}", med("agent") / floor),
    ];
    println!("{table}{rest}\n{}", line.join("\n"));
    let line = line.map(|l| format!("`{l}`")).join("\n");
    let doc = format!("# Benchmarks\n\nWritten by `cargo xtask bench`.\n\n## Fault storm\n\n{table}{rest}\n{line}\n");
    std::fs::write(workspace_root().join("BENCHMARKS.md"), doc)?;
    Ok(())
}

fn sh(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}
