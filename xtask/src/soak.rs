//! `cargo xtask soak serve`: days of process churn in minutes. The release agent serves
//! `--all` while `workloads procstorm` runs --procs short-lived processes one after another;
//! at 10k, 100k and the last, while the storm holds still, the agent's resident memory is read
//! from /proc. The dead are folded into their group's totals, so it must stay flat. At the end:
//! what a scrape of /metrics weighs and takes, and the storm's processes as the metrics count
//! them. Not in CI (minutes of forks); run it as root, under `nice` on a shared machine.
use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use crate::bench_run::{agent, workloads};

/// Where the soak's agent listens (away from the default port, so that an installed agent
/// does not answer instead).
const LISTEN: &str = "127.0.0.1:19464";

/// `targets`: what `agent serve` watches (`--all`; `--comm wl-procstorm` leaves the host's
/// other processes out, to tell the storm's cost from theirs).
pub fn serve(procs: usize, targets: &str) -> Result<()> {
    let marks: Vec<usize> = [10_000, 100_000, procs].into_iter().filter(|&m| m <= procs).collect();
    let mut agent = Command::new(agent())
        .arg("serve")
        .args(targets.split_whitespace())
        .args(["--listen", LISTEN])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("start agent serve")?;
    let res = storm(&agent, procs, &marks);
    let _ = Command::new("kill").args(["-TERM", &agent.id().to_string()]).status();
    let code = agent.wait()?;
    let figures = res?;
    if !code.success() {
        bail!("agent serve exited with {code} at SIGTERM");
    }
    figures.print(procs, targets);
    Ok(())
}

struct Figures {
    storm_s: f64,
    /// (processes so far, agent VmRSS KiB, its VmHWM KiB, where it is)
    rss: Vec<(usize, u64, u64, Parts)>,
    scrape_bytes: usize,
    scrape_ms: Vec<f64>,
    /// agent_faulted_bytes_total{kind="anon"} of the storm's group, pages: each of its
    /// processes writes one page (they keep their parent's name, `wl-procstorm`).
    faulted_pages: f64,
}

impl Figures {
    fn print(&self, procs: usize, targets: &str) {
        println!("soak serve: {procs} short-lived processes through `agent serve {targets}` in {:.0} s", self.storm_s);
        let mib = |k: u64| k as f64 / 1024.0;
        for (n, rss, hwm, p) in &self.rss {
            println!(
                "soak serve agent rss at {}k: {:.1} MiB (peak {:.1}; ring map {:.1}, heap and arenas {:.1}, largest other anon {:.1}, rest {:.1})",
                n / 1000,
                mib(*rss),
                mib(*hwm),
                mib(p.ring),
                mib(p.heap),
                mib(p.largest_anon),
                mib(rss.saturating_sub(p.ring + p.heap + p.largest_anon)),
            );
        }
        let (first, last) = (self.rss[0].1 as f64, self.rss[self.rss.len() - 1].1 as f64);
        println!("soak serve rss last/first: {:.3}", last / first);
        let mut ms = self.scrape_ms.clone();
        ms.sort_by(f64::total_cmp);
        println!(
            "soak serve scrape: {} bytes, {:.2} ms median of {} (range {:.2}-{:.2})",
            self.scrape_bytes,
            ms[ms.len() / 2],
            ms.len(),
            ms[0],
            ms[ms.len() - 1]
        );
        println!("soak serve wl-procstorm anon pages faulted: {:.0} (one per process)", self.faulted_pages);
    }
}

fn storm(agent: &Child, procs: usize, marks: &[usize]) -> Result<Figures> {
    wait_healthy(Duration::from_secs(60))?;
    let start = Instant::now();
    let marks_arg = marks.iter().map(|m| m.to_string()).collect::<Vec<_>>().join(",");
    let mut wl = Command::new(workloads())
        .args(["procstorm", "--n", &procs.to_string(), "--marks", &marks_arg, "--pause-s", "8"])
        .stderr(Stdio::piped())
        .spawn()
        .context("start workloads procstorm")?;
    let mut rss = Vec::new();
    for line in BufReader::new(wl.stderr.take().context("procstorm stderr")?).lines() {
        let line = line?;
        let Some(n) = line.strip_prefix("procstorm: ").and_then(|n| n.trim().parse::<usize>().ok()) else {
            eprintln!("{line}");
            continue;
        };
        // While the storm holds still: the last exits seen and folded, the backlog drained
        // and a heap trim past (every 5 intervals).
        std::thread::sleep(Duration::from_secs(6));
        let (now, peak) = rss_kib(agent.id())?;
        // Which of its mappings hold it (to tell a heap that grows from a ring that filled).
        let smaps = std::fs::read_to_string(format!("/proc/{}/smaps", agent.id())).unwrap_or_default();
        let _ = std::fs::write(crate::workspace_root().join(format!("target/soak-serve-smaps-{n}.txt")), &smaps);
        let parts = Parts::of(&smaps);
        eprintln!("soak: {n} processes, agent rss {now} KiB (peak {peak} KiB)");
        rss.push((n, now, peak, parts));
    }
    let st = wl.wait()?;
    if !st.success() {
        bail!("workloads procstorm failed ({st})");
    }
    let storm_s = start.elapsed().as_secs_f64() - 8.0 * marks.len() as f64;
    std::thread::sleep(Duration::from_secs(3));
    let mut scrape_ms = Vec::new();
    let mut body = String::new();
    for _ in 0..7 {
        let t = Instant::now();
        body = get("/metrics")?;
        scrape_ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let saved = crate::workspace_root().join("target/soak-serve-metrics.txt");
    std::fs::write(&saved, &body).with_context(|| format!("write {}", saved.display()))?;
    let faulted_pages = body
        .lines()
        .filter(|l| l.starts_with("agent_faulted_bytes_total{group=\"wl-procstorm\",kind=\"anon\"}"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>()
        / 4096.0;
    if rss.len() != marks.len() {
        bail!("the storm reached {} of its {} marks", rss.len(), marks.len());
    }
    Ok(Figures { storm_s, rss, scrape_bytes: body.len(), scrape_ms, faulted_pages })
}

/// Where the agent's resident memory is, KiB: the ring buffer's mapping (bpf-map), the heap
/// and malloc's 64 MiB-aligned arenas, and the largest other anonymous mapping (one big
/// allocation of its own).
#[derive(Default)]
struct Parts {
    ring: u64,
    heap: u64,
    largest_anon: u64,
}

impl Parts {
    fn of(smaps: &str) -> Parts {
        let mut p = Parts::default();
        let mut cur: Option<(u64, String)> = None;
        for l in smaps.lines() {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.first().is_some_and(|a| a.contains('-') && !a.ends_with(':')) {
                let start = u64::from_str_radix(f[0].split('-').next().unwrap_or("0"), 16).unwrap_or(1);
                cur = Some((start, f.get(5).copied().unwrap_or("").to_string()));
            } else if let (Some((start, name)), ["Rss:", kib, ..]) = (&cur, f.as_slice()) {
                let kib: u64 = kib.parse().unwrap_or(0);
                match name.as_str() {
                    "anon_inode:bpf-map" => p.ring += kib,
                    "[heap]" => p.heap += kib,
                    "" if start % (64 << 20) == 0 => p.heap += kib,
                    "" => p.largest_anon = p.largest_anon.max(kib),
                    _ => {}
                }
            }
        }
        p
    }
}

/// VmRSS and VmHWM of a process, KiB.
fn rss_kib(pid: u32) -> Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).context("the agent is gone")?;
    let field = |name: &str| {
        status.lines().find_map(|l| l.strip_prefix(name)?.trim().strip_suffix("kB")?.trim().parse().ok()).unwrap_or(0)
    };
    Ok((field("VmRSS:"), field("VmHWM:")))
}

fn wait_healthy(limit: Duration) -> Result<()> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if get("/healthz").is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    bail!("agent serve did not answer /healthz on {LISTEN} within {limit:?}")
}

/// A plain HTTP/1.0 GET of `path` on the soak's agent: the body of a 200.
fn get(path: &str) -> Result<String> {
    let mut s = TcpStream::connect(LISTEN)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {LISTEN}\r\n\r\n")?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let (head, body) = resp.split_once("\r\n\r\n").context("no HTTP header")?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        bail!("GET {path}: {}", head.lines().next().unwrap_or(""));
    }
    Ok(body.to_string())
}
