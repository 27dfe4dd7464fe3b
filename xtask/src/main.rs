//! `cargo xtask setup|build|test|demo`: everything a fresh machine needs, in one place.
mod bench;
mod bench_perf;
mod bench_run;
mod bench_scale;
mod bench_seed;
mod bench_syscall;
mod dist;
mod fuzz;
mod setup;
mod soak;
mod test_nosys;
mod test_perf;

use std::process::{Command, ExitCode};

use anyhow::{bail, Context as _, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Build, test and demo the memory-attribution agent")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what the build needs (nightly rust-src, bpf-linker) and the real clients the tests
    /// check against (go for `go tool pprof`, smem); fast when already there.
    Setup,
    /// Build the agent (release), eBPF programs included.
    Build,
    /// Unit tests and the root integration tests (real eBPF programs, real workloads).
    Test {
        /// Extra arguments for `cargo test` (after `--`: test name filters, etc.).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// The fault-storm benchmark: bare vs floor (noop programs) vs agent; writes BENCHMARKS.md.
    Bench {
        /// Run one part alone and print it: `seed-scale`, `fault-source`, `ebpf-ns`.
        part: Option<String>,
    },
    /// The release agent, its completions and man pages, the systemd unit and the Prometheus
    /// rules, in target/dist/.
    Dist,
    /// Install the dist: agent in /usr/local/bin, man pages, completions, the systemd unit in
    /// /etc/systemd/system, the rules in /usr/local/share/agent (root).
    Install {
        /// Install under this directory instead of / (to stage a package).
        #[arg(long, default_value = "/")]
        root: std::path::PathBuf,
    },
    /// Remove what `install` put in place.
    Uninstall {
        #[arg(long, default_value = "/")]
        root: std::path::PathBuf,
    },
    /// Build release and run `agent watch --stacks -- agent demo` (extra arguments go to
    /// `agent demo`).
    Demo {
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Malformed ELF files through the agent's unprivileged symbolizer helper (prints inputs,
    /// helper crashes, timeouts, restarts, wall time as JSON).
    Fuzz {
        #[arg(long, default_value_t = 1_000_000)]
        iterations: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Long runs, not in CI (root): `soak serve` runs --procs short-lived processes through
    /// `agent serve --all` and reports the agent's memory at 10k, 100k and the last, and a
    /// scrape's size and time.
    Soak {
        #[command(subcommand)]
        what: Soak,
    },
}

#[derive(Subcommand)]
enum Soak {
    Serve {
        #[arg(long, default_value_t = 200_000)]
        procs: usize,
        /// What the agent watches (`--comm wl-procstorm`: the storm alone).
        #[arg(long, default_value = "--all", allow_hyphen_values = true)]
        targets: String,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse().cmd) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cmd: Cmd) -> Result<()> {
    setup::ensure()?;
    match cmd {
        Cmd::Setup => setup::ensure_clients(),
        Cmd::Build => build_release(),
        Cmd::Test { args } => {
            setup::ensure_clients()?;
            // The integration tests run the workloads binary beside the agent's (dev profile,
            // as `cargo test` builds the agent); `cargo test` alone does not build it.
            let mut c = cargo();
            c.args(["build", "-p", "workloads"]);
            status(c, "cargo build -p workloads")?;
            // The root integration tests load the same kernel hooks: one test at a time.
            let mut c = cargo();
            c.args(["test", "--workspace", "--exclude", "agent-ebpf", "--no-fail-fast", "--"])
                .arg("--test-threads=1")
                .args(&args);
            let first = status(c, "cargo test");
            let perf = test_perf::run(&args);
            first.and(perf).and(test_nosys::run(&args))
        }
        Cmd::Bench { part } => {
            if !is_root() {
                bail!("the benchmark attaches eBPF programs: run it as root (sudo -E cargo xtask bench)");
            }
            // redis-server and redis-benchmark for the real-server part.
            setup::ensure_clients()?;
            build_release()?;
            // Its own invocation, so that the agent binary measured is the shipped one: in the
            // same one, the `floor` feature workloads turns on would be built into it too.
            let mut c = cargo();
            c.args(["build", "--release", "-p", "workloads"]);
            status(c, "cargo build --release -p workloads")?;
            match part.as_deref() {
                None => bench::run(),
                Some("seed-scale") => bench_seed::run_alone(),
                Some("fault-source") => bench_perf::run().map(|s| println!("{s}")),
                Some("ebpf-ns") => bench::run_ns_only(),
                Some(p) => bail!("no bench part {p}: the ones that run alone are seed-scale, fault-source and ebpf-ns"),
            }
        }
        Cmd::Dist => dist::dist().map(drop),
        Cmd::Install { root } => dist::install(&root),
        Cmd::Uninstall { root } => dist::uninstall(&root),
        Cmd::Demo { args } => {
            build_release()?;
            let agent = workspace_root().join("target/release/agent");
            let mut c = if is_root() {
                Command::new(&agent)
            } else {
                eprintln!("xtask: the agent loads eBPF programs and needs root: running it with sudo");
                let mut c = Command::new("sudo");
                c.arg(&agent);
                c
            };
            c.args(["watch", "--stacks", "--"]).arg(&agent).arg("demo").args(&args);
            status(c, "agent watch -- agent demo")
        }
        Cmd::Fuzz { iterations, seed } => fuzz::run(iterations, seed),
        Cmd::Soak { what: Soak::Serve { procs, targets } } => {
            if !is_root() {
                bail!("the soak attaches eBPF programs: run it as root (sudo -E cargo xtask soak serve)");
            }
            build_release()?;
            let mut c = cargo();
            c.args(["build", "--release", "-p", "workloads"]);
            status(c, "cargo build --release -p workloads")?;
            soak::serve(procs, &targets)
        }
    }
}

pub fn build_release() -> Result<()> {
    let mut c = cargo();
    c.args(["build", "--release", "-p", "agent"]);
    status(c, "cargo build")
}

pub fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(workspace_root());
    c
}

pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask is in the workspace").to_path_buf()
}

pub fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0\n")).unwrap_or(false)
}

pub fn status(mut c: Command, what: &str) -> Result<()> {
    let st = c.status().with_context(|| format!("running {what}"))?;
    if !st.success() {
        bail!("{what} failed ({st})");
    }
    Ok(())
}
