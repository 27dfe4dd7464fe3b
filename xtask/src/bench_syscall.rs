//! The bench's syscall paths: a syscall storm (`workloads syscalls`: 5M getppid) bare, under the
//! floor (noop programs on exactly the agent's hooks), watched, and watched with
//! `--syscall-hooks off` (no syscall tracepoint); and a real server
//! (redis-server on a private port, `redis-benchmark -q -t get,set -n 200000`) bare and watched
//! (`agent watch -p`). Each variant alternated over rounds; medians and ranges.
use std::{
    io::{BufRead, BufReader},
    net::TcpListener,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use crate::bench_run::{agent, workloads};

/// The medians and ranges of one bench part's variants, in run order.
pub struct Figures(pub Vec<(&'static str, Vec<f64>)>);

impl Figures {
    pub fn median(&self, name: &str) -> f64 {
        let v = &self.0.iter().find(|(n, _)| *n == name).expect("a variant of this part").1;
        let mut v = v.clone();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    }

    /// `name median (lo-hi)` for each variant.
    pub fn ranges(&self, unit: &str) -> String {
        let one = |(n, v): &(&str, Vec<f64>)| {
            let (lo, hi) = v.iter().fold((f64::MAX, f64::MIN), |(lo, hi), &t| (lo.min(t), hi.max(t)));
            format!("{n} {:.3} ({lo:.3}-{hi:.3}) {unit}", self.median(n))
        };
        self.0.iter().map(one).collect::<Vec<_>>().join(", ")
    }
}

/// Run each variant once per round, rotating the order so none always runs first.
fn alternate(rounds: usize, what: &str, vs: &mut [(&'static str, &mut dyn FnMut() -> Result<f64>)]) -> Result<Figures> {
    let mut out: Vec<(&'static str, Vec<f64>)> = vs.iter().map(|(n, _)| (*n, Vec::new())).collect();
    for round in 0..rounds {
        for i in 0..vs.len() {
            let k = (i + round) % vs.len();
            let (name, f) = &mut vs[k];
            let v = f().with_context(|| format!("{what} {name}"))?;
            eprintln!("bench: {what} round {} {name:<8} {v:.3}", round + 1);
            out[k].1.push(v);
        }
    }
    Ok(Figures(out))
}

/// `workloads syscalls --report FILE`, its command line (program first) and the report's path.
fn syscalls_cmd() -> (Vec<std::ffi::OsString>, std::path::PathBuf) {
    let path = std::env::temp_dir().join(format!("agent-bench-syscalls-{}.json", std::process::id()));
    let _ = std::fs::remove_file(&path);
    (vec![workloads().into(), "syscalls".into(), "--report".into(), path.clone().into()], path)
}

/// The loop's wall time; its CPU time (user + sys) goes to `CPU` under the variant's name.
fn read_wall(path: &std::path::Path, variant: &'static str) -> Result<f64> {
    let text = std::fs::read_to_string(path).with_context(|| format!("no report {}", path.display()))?;
    let _ = std::fs::remove_file(path);
    let v: serde_json::Value = serde_json::from_str(&text)?;
    let cpu = v["cpu_s"].as_f64().context("report without cpu_s")?;
    CPU.lock().unwrap().push((variant, cpu));
    v["wall_s"].as_f64().context("report without wall_s")
}

/// CPU seconds of each syscall-storm run, by variant (the steadier figure on a busy machine).
static CPU: std::sync::Mutex<Vec<(&'static str, f64)>> = std::sync::Mutex::new(Vec::new());

fn storm_bare() -> Result<f64> {
    // Any syscall tracepoint held on the host (another agent with its syscall hooks) puts this
    // run on the traced-syscall path too: counted, so a ratio near 1 can be told from a clean one.
    let before = others_with_syscall_hooks();
    let t = storm_plain("bare");
    if before + others_with_syscall_hooks() > 0 {
        *TAINTED.lock().unwrap() += 1;
    }
    t
}

/// Bare runs during which another agent with syscall hooks was running.
static TAINTED: std::sync::Mutex<usize> = std::sync::Mutex::new(0);

/// Running `agent watch|serve` processes (any build) other than ours that hook syscalls (no
/// `--syscall-hooks off` on their command line; the env variable is not seen).
fn others_with_syscall_hooks() -> usize {
    let Ok(dir) = std::fs::read_dir("/proc") else { return 0 };
    dir.flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .filter(|c| {
            let args: Vec<&[u8]> = c.split(|&b| b == 0).collect();
            let agent = args.first().is_some_and(|a| a.ends_with(b"/agent") || *a == b"agent");
            let cmd = args.get(1).is_some_and(|a| *a == b"watch" || *a == b"serve");
            let off = args.windows(2).any(|w| w[0] == b"--syscall-hooks" && w[1] == b"off");
            agent && cmd && !off
        })
        .count()
}

fn storm_plain(variant: &'static str) -> Result<f64> {
    let (argv, path) = syscalls_cmd();
    let st = Command::new(&argv[0]).args(&argv[1..]).status()?;
    if !st.success() {
        bail!("workloads syscalls failed ({st})");
    }
    read_wall(&path, variant)
}

fn storm_floor() -> Result<f64> {
    let mut floor = Command::new(workloads()).arg("floor").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn()?;
    let line = BufReader::new(floor.stdout.take().unwrap()).lines().next().transpose()?.unwrap_or_default();
    if !line.starts_with("attached:") {
        let _ = floor.kill();
        bail!("the floor programs did not attach: {line}");
    }
    let t = storm_plain("floor");
    drop(floor.stdin.take());
    floor.wait()?;
    t
}

fn storm_agent() -> Result<f64> {
    storm_watched("agent", "on")
}

/// `agent watch --syscall-hooks off`: no syscall tracepoint, so no task on the traced path.
fn storm_agent_nosys() -> Result<f64> {
    storm_watched(NOSYS, "off")
}

/// The variant of `agent watch --syscall-hooks off`.
pub const NOSYS: &str = "agent(no syscall hooks)";

fn storm_watched(variant: &'static str, hooks: &str) -> Result<f64> {
    let (argv, path) = syscalls_cmd();
    let out = Command::new(agent())
        .args(["watch", "--format", "json", "--syscall-hooks", hooks, "--"])
        .args(&argv)
        .output()?;
    if !out.status.success() {
        bail!(
            "agent watch --syscall-hooks {hooks} -- workloads syscalls failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    read_wall(&path, variant)
}

/// The syscall storm: bare, floor, agent, agent with no syscall hooks; wall times, then the same
/// runs' CPU times.
pub fn syscall_storm(rounds: usize) -> Result<(Figures, Figures)> {
    CPU.lock().unwrap().clear();
    *TAINTED.lock().unwrap() = 0;
    let wall = alternate(
        rounds,
        "syscall-storm",
        &mut [
            ("bare", &mut storm_bare),
            ("floor", &mut storm_floor),
            ("agent", &mut storm_agent),
            (NOSYS, &mut storm_agent_nosys),
        ],
    )?;
    let tainted = *TAINTED.lock().unwrap();
    if tainted > 0 {
        eprintln!(
            "bench: WARNING: {tainted} of {rounds} bare syscall-storm runs had another agent with syscall hooks running \
             (its traced-syscall path slows them too): the syscall-storm ratios understate the cost"
        );
    }
    let cpu = CPU.lock().unwrap().clone();
    let by = |n: &'static str| (n, cpu.iter().filter(|(v, _)| *v == n).map(|&(_, c)| c).collect());
    Ok((wall, Figures(vec![by("bare"), by("floor"), by("agent"), by(NOSYS)])))
}

/// A redis-server on a free private port, killed when dropped.
struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    fn start() -> Result<Redis> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .context("redis-server is missing: run `cargo xtask setup` (installs redis-server, redis-tools)")?;
        let r = Redis { child, port };
        let t = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if t.elapsed() > Duration::from_secs(10) {
                bail!("redis-server did not listen on port {port} within 10 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(r)
    }

    /// `redis-benchmark -q -t get,set -n 200000`: the mean of its GET and SET requests/s.
    fn benchmark(&self) -> Result<f64> {
        let out = Command::new("redis-benchmark")
            .args(["-q", "-t", "get,set", "-n", "200000", "-p", &self.port.to_string()])
            .output()
            .context("redis-benchmark is missing: run `cargo xtask setup` (installs redis-tools)")?;
        let text = String::from_utf8_lossy(&out.stdout);
        // Lines like "SET: 81234.56 requests per second, p50=0.303 msec" (after \r progress).
        let rps: Vec<f64> = text
            .split(['\r', '\n'])
            .filter(|l| l.contains("requests per second"))
            .filter_map(|l| l.split_once(": ")?.1.split_whitespace().next()?.parse().ok())
            .collect();
        if rps.len() != 2 || !out.status.success() {
            bail!("redis-benchmark gave no GET and SET rates ({}): {text}", out.status);
        }
        Ok(rps.iter().sum::<f64>() / 2.0)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// redis-benchmark with the server watched: `agent watch -p` attached (its start record seen)
/// before the benchmark, SIGTERM after.
fn redis_watched(r: &Redis) -> Result<f64> {
    let mut a = Command::new(agent())
        .args(["watch", "--format", "json", "-p", &r.child.id().to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut lines = BufReader::new(a.stdout.take().unwrap()).lines();
    match lines.next().transpose()? {
        Some(l) if l.contains("\"type\":\"start\"") => {}
        other => {
            let _ = a.kill();
            bail!("agent watch -p redis-server did not start: {other:?}");
        }
    }
    // Keep reading its records so it never blocks on a full pipe.
    let drain = std::thread::spawn(move || lines.map_while(Result::ok).count());
    let rps = r.benchmark();
    Command::new("kill").args(["-TERM", &a.id().to_string()]).status()?;
    let st = a.wait()?;
    let _ = drain.join();
    if !st.success() {
        bail!("agent watch -p redis-server exited {st}");
    }
    rps
}

/// redis-benchmark beside a thread that only wakes every 10 ms, as the agent's ring reader
/// does: on this VM such wakeups alone raise redis-benchmark's rate (idle CPUs wake slower), so
/// this variant tells that effect from the agent's cost.
fn redis_poller(r: &Redis) -> Result<f64> {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s = stop.clone();
    let t = std::thread::spawn(move || {
        while !s.load(std::sync::atomic::Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    let rps = r.benchmark();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = t.join();
    rps
}

/// The real server: requests/s bare, beside a 10 ms poller, and watched.
pub fn redis(rounds: usize) -> Result<Figures> {
    let r = Redis::start()?;
    // A warm-up run: the server's first requests allocate its tables.
    r.benchmark()?;
    alternate(
        rounds,
        "redis",
        &mut [
            ("bare", &mut || r.benchmark()),
            ("poller", &mut || redis_poller(&r)),
            ("agent", &mut || redis_watched(&r)),
        ],
    )
}
