//! `cargo xtask bench`: the fault storm (1 GiB of private anon written one byte per page, twice:
//! ~524k faults) timed under each variant, alternated A/B/C over several rounds, medians
//! compared in one run. Variants: bare (nothing attached), floor (do-nothing programs on exactly
//! the agent's tracepoints: the hooks' own cost), agent (default mode). Results are printed and
//! written to BENCHMARKS.md with the machine and date.
use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
};

use anyhow::{bail, Context as _, Result};

use crate::workspace_root;

struct Variant {
    name: &'static str,
    times: Vec<f64>,
}

fn agent() -> std::path::PathBuf {
    workspace_root().join("target/release/agent")
}

/// The storm prints `storm_s SECONDS ...` (its fault loop's wall time) on stderr.
fn storm_seconds(stdout: &str) -> Result<f64> {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("storm_s ")?.split_whitespace().next())
        .context("the storm printed no storm_s line")?
        .trim()
        .parse()
        .context("storm_s value")
}

fn run_bare() -> Result<f64> {
    let out = Command::new(agent()).args(["workload", "storm"]).output()?;
    storm_seconds(&String::from_utf8_lossy(&out.stderr))
}

fn run_floor() -> Result<f64> {
    let mut floor = Command::new(agent()).arg("floor").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn()?;
    let mut line = String::new();
    BufReader::new(floor.stdout.take().unwrap()).read_line(&mut line)?;
    if !line.starts_with("attached:") {
        let _ = floor.kill();
        bail!("the floor programs did not attach: {line}");
    }
    let t = run_bare();
    drop(floor.stdin.take());
    floor.wait()?;
    t
}

fn run_agent() -> Result<f64> {
    let out = Command::new(agent())
        .args(["watch", "--format", "json", "--"])
        .arg(agent())
        .args(["workload", "storm"])
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lost: u64 = stdout
        .lines()
        .filter(|l| l.contains("\"type\":\"summary\""))
        .filter_map(|l| l.split("\"lost_events\":").nth(1)?.split(',').next()?.parse::<u64>().ok())
        .sum();
    if lost > 0 {
        eprintln!("bench: the agent lost {lost} events in this run");
    }
    storm_seconds(&String::from_utf8_lossy(&out.stderr))
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub fn run() -> Result<()> {
    let rounds: usize = std::env::var("BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let mut vs: Vec<(Variant, fn() -> Result<f64>)> = vec![
        (Variant { name: "bare", times: vec![] }, run_bare),
        (Variant { name: "floor", times: vec![] }, run_floor),
        (Variant { name: "agent", times: vec![] }, run_agent),
    ];
    for round in 0..rounds {
        // Rotate the order each round so no variant always runs first.
        let n = vs.len();
        for i in 0..n {
            let (v, f) = &mut vs[(i + round) % n];
            let t = f().with_context(|| format!("variant {}", v.name))?;
            eprintln!("bench: round {} {:<6} {t:.3}s", round + 1, v.name);
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
    let line = format!("fault-storm agent/floor: {:.2}", med("agent") / floor);
    println!("{table}\n{line}");
    let doc = format!("# Benchmarks\n\nWritten by `cargo xtask bench`.\n\n{table}\n`{line}`\n");
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
