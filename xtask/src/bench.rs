//! `cargo xtask bench`: the fault storm (1 GiB of private anon written one byte per page, twice:
//! ~524k faults) timed under each variant, alternated A/B/C over several rounds, medians
//! compared in one run. Variants: bare (nothing attached), floor (do-nothing programs on exactly
//! the agent's tracepoints: the hooks' own cost), agent (default mode). Then the syscall paths
//! (`bench_syscall.rs`: a getppid storm, redis). Results are printed and written to
//! BENCHMARKS.md with the machine and date (`BENCH_SYSCALL_ONLY=1`: the syscall paths alone; `=storm`: the syscall storm alone;
//! `cargo xtask bench ebpf-ns`: the eBPF time per fault alone).
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

/// The programs' total run time in a `--bpf-stats` list (the floor's, or a summary's
/// `agent.programs`).
fn total_run_ns(v: &serde_json::Value) -> f64 {
    v.as_array().map_or(0.0, |a| a.iter().filter_map(|p| p["run_ns"].as_f64()).sum())
}

/// Nanoseconds of eBPF program time per storm fault, from the kernel's run statistics: the
/// floor's noop, the agent's programs (all of them, on every hook) watching the storm, with
/// `--stacks`, and watching another process while the storm runs unwatched (what every other
/// process of the host pays per fault). One storm each per round, alternated; per variant, the
/// runs. Steadier than wall time on a noisy VM, and the part of the cost the agent's code decides.
fn program_ns_per_fault(rounds: usize) -> Result<Vec<(&'static str, Vec<f64>)>> {
    let mut out: Vec<(&'static str, Vec<f64>)> =
        ["floor", "agent", "agent --stacks", "agent, storm unwatched"].iter().map(|n| (*n, vec![])).collect();
    for round in 0..rounds {
        let (storm, stats) = under_floor(true)?;
        out[0].1.push(total_run_ns(&stats.unwrap_or_default()["programs"]) / storm.faults as f64);
        for (i, extra) in [(1, &["--bpf-stats"][..]), (2, &["--bpf-stats", "--stacks"][..])] {
            let (run, storm) = under_agent(extra)?;
            let stdout = String::from_utf8_lossy(&run.stdout);
            let summary: serde_json::Value =
                serde_json::from_str(stdout.lines().last().context("no summary")?).context("summary JSON")?;
            out[i].1.push(total_run_ns(&summary["agent"]["programs"]) / storm.faults as f64);
        }
        out[3].1.push(ns_per_unwatched_fault()?);
        let now: Vec<String> = out.iter().map(|(n, v)| format!("{n} {:.0}", v[round])).collect();
        eprintln!("bench: round {} ebpf ns per fault: {}", round + 1, now.join(", "));
    }
    Ok(out)
}

/// One storm run bare while `agent watch --bpf-stats` watches a shell waiting on its stdin:
/// the agent's programs' time per fault of a process they do not watch.
fn ns_per_unwatched_fault() -> Result<f64> {
    let mut agent = Command::new(agent())
        .args(["watch", "--format", "json", "--bpf-stats", "--", "sh", "-c", "read _; exit 0"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("running agent watch")?;
    let mut lines = BufReader::new(agent.stdout.take().unwrap()).lines();
    // Its programs are attached once it says `start`.
    loop {
        let line = lines.next().context("the agent exited before its start record")??;
        if line.contains("\"type\":\"start\"") {
            break;
        }
    }
    let storm = storm();
    // End of input: the shell exits, and the agent with it, printing its summary last.
    drop(agent.stdin.take());
    let last = lines.map_while(Result::ok).last().context("the agent printed no summary")?;
    agent.wait()?;
    let summary: serde_json::Value = serde_json::from_str(&last).context("summary JSON")?;
    Ok(total_run_ns(&summary["agent"]["programs"]) / storm?.faults as f64)
}

/// The per-fault table (median and range of each variant, and its median over the floor's) and
/// the floor's median.
fn ns_table(per_fault: &[(&str, Vec<f64>)], rounds: usize) -> (String, f64) {
    let floor_ns = median(&per_fault[0].1);
    let mut table = format!(
        "\neBPF program time per storm fault (kernel BPF run statistics, all hooks; median and range of \
         {rounds} alternated storms each):\n\n| variant | ns per fault | range | vs floor |\n|---|---|---|---|\n"
    );
    for (name, v) in per_fault {
        let (lo, hi) = v.iter().fold((f64::MAX, 0.0f64), |(lo, hi), &t| (lo.min(t), hi.max(t)));
        table += &format!("| {name} | {:.0} | {lo:.0}-{hi:.0} | {:.2} |\n", median(v), median(v) / floor_ns);
    }
    (table, floor_ns)
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

/// `cargo xtask bench ebpf-ns`: the eBPF time per fault alone (printed, BENCHMARKS.md left as
/// it is).
pub fn run_ns_only() -> Result<()> {
    let rounds: usize = std::env::var("BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let per_fault = program_ns_per_fault(rounds)?;
    let (table, floor_ns) = ns_table(&per_fault, rounds);
    println!("{table}");
    println!("ebpf ns per unwatched fault agent/floor: {:.2}", median(&per_fault[3].1) / floor_ns);
    println!("ebpf ns per fault agent/floor: {:.2}", median(&per_fault[1].1) / floor_ns);
    Ok(())
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
        println!(
            "syscall-storm {}/bare cpu: {:.2}",
            bench_syscall::NOSYS,
            cpu.median(bench_syscall::NOSYS) / cpu.median("bare")
        );
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
    let per_fault = program_ns_per_fault(rounds)?;
    let (ns, floor_ns) = ns_table(&per_fault, rounds);
    table += &ns;
    let (agent_ns, bare_ns) = (median(&per_fault[1].1), bare / 524_288.0 * 1e9);
    table += &format!(
        "\nThe agent's programs add {:.0} ns per fault over the floor's, against {bare_ns:.0} ns of bare fault \
         loop per fault ({:.1}%).\n",
        agent_ns - floor_ns,
        (agent_ns - floor_ns) / bare_ns * 100.0
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
        format!("ebpf ns per fault agent/floor: {:.2}", agent_ns / floor_ns),
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
