//! Shared helpers of the root integration tests: run the real agent binary with its real eBPF
//! programs on a workload with a known answer (the `workloads` binary), and read its JSON-lines
//! output.
#![allow(dead_code)]

use std::{
    io::{BufRead, BufReader, Write},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use agent::{cli::WatchArgs, error::AgentError, kernel::loader::LoadOptions, sinks::Collect, watch};
use serde_json::Value;

pub const PAGE: u64 = 4096;
pub const MIB_PAGES: u64 = (1 << 20) / PAGE;

pub fn agent() -> &'static str {
    env!("CARGO_BIN_EXE_agent")
}

/// The `workloads` binary, built beside the agent's (`cargo test` does not build it).
pub fn workloads() -> PathBuf {
    let path = std::path::Path::new(agent()).parent().expect("the agent binary's directory").join("workloads");
    if !path.exists() {
        panic!("{} does not exist: build it first: cargo build -p workloads (cargo xtask test does)", path.display());
    }
    path
}

/// True when the kernel side can run. Outside CI a missing privilege skips the test with a
/// printed reason; with AGENT_REQUIRE_EBPF=1 it fails it.
pub fn ebpf_available(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var("AGENT_REQUIRE_EBPF").is_ok_and(|v| v == "1") {
        panic!("{test}: AGENT_REQUIRE_EBPF=1 but not running as root: the eBPF tests cannot be skipped");
    }
    eprintln!("SKIP {test}: needs root to load eBPF programs (run `sudo cargo xtask test`)");
    false
}

/// Parse the agent's stdout: every line must be a JSON object with `type` and `ts`.
pub fn parse(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {l}"));
            assert!(v["type"].is_string() && v["ts"].is_f64(), "record without type/ts: {l}");
            v
        })
        .collect()
}

/// `agent watch --format json [extra] -- workloads ARGS`, to completion.
pub fn watch_workload(extra: &[&str], workload: &[&str]) -> (Vec<Value>, i32) {
    let out = Command::new(agent())
        .args(["watch", "--format", "json", "--interval", "0.5"])
        .args(extra)
        .arg("--")
        .arg(workloads())
        .args(workload)
        .stderr(Stdio::inherit())
        .output()
        .expect("run agent");
    let stdout = String::from_utf8(out.stdout).expect("utf-8 stdout");
    (parse(&stdout), out.status.code().unwrap_or(-1))
}

/// `agent watch ARGS` in this process, through the library, with load options that force a
/// condition the real binary never meets (a missing tracepoint, a tiny map). Returns the exit
/// code, or the exit code and the one line the binary would print on an error; and the records
/// the JSON sink would have written (checked as `parse` checks them).
pub fn watch_in_process(args: &[&str], load: LoadOptions) -> (Result<i32, (i32, String)>, Vec<Value>) {
    let args = WatchArgs::parse_from(args).unwrap_or_else(|e| panic!("watch arguments {args:?}: {e}"));
    let sink = Collect::default();
    let res = watch::run_with(args, load, vec![Box::new(sink.clone())])
        .map_err(|e| (e.downcast_ref::<AgentError>().map_or(1, AgentError::exit_code), format!("agent: {e:#}")));
    let recs = sink.0.lock().unwrap().clone();
    for v in &recs {
        assert!(v["type"].is_string() && v["ts"].is_f64(), "record without type/ts: {v}");
    }
    (res, recs)
}

pub fn of_type<'a>(recs: &'a [Value], ty: &str) -> Vec<&'a Value> {
    recs.iter().filter(|r| r["type"] == ty).collect()
}

pub fn summary(recs: &[Value]) -> &Value {
    let last = recs.last().expect("some output");
    assert_eq!(last["type"], "summary", "the last record is the summary");
    last
}

/// The summary entry of the process named `comm`.
pub fn proc_by_comm<'a>(recs: &'a [Value], comm: &str) -> &'a Value {
    let s = summary(recs);
    s["procs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["comm"] == comm)
        .unwrap_or_else(|| panic!("no process {comm} in the summary: {s}"))
}

/// Pages a summary entry attributes to mappings whose name starts with `prefix`.
pub fn mapping_pages(p: &Value, prefix: &str) -> (i64, bool) {
    let m = p["mappings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mapping"].as_str().unwrap().starts_with(prefix))
        .unwrap_or_else(|| panic!("no mapping {prefix}* in {p}"));
    (m["pages"].as_i64().unwrap(), m["shared"].as_bool().unwrap())
}

pub fn assert_within(what: &str, got: i64, want: i64, pct: f64) {
    let tol = (want as f64 * pct / 100.0).max(2.0);
    assert!((got - want).abs() as f64 <= tol, "{what}: got {got}, want {want} ± {pct}% ({tol:.0})");
}

/// A running agent whose stdout we read line by line.
pub struct Running {
    pub child: Child,
    lines: std::sync::mpsc::Receiver<String>,
    pub seen: Vec<Value>,
}

impl Running {
    pub fn start(args: &[&str]) -> Running {
        let mut cmd = Command::new(agent());
        cmd.args(args).stderr(Stdio::inherit());
        Running::spawn(cmd)
    }

    /// Read records until one of type `ty` arrives.
    pub fn wait_for(&mut self, ty: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).unwrap_or_else(|_| panic!("no {ty} record within {timeout:?}"));
            let v = parse(&line).remove(0);
            self.seen.push(v.clone());
            if v["type"] == ty {
                return v;
            }
        }
    }

    /// Wait for the agent to exit; returns all records and the exit code.
    pub fn finish(mut self, timeout: Duration) -> (Vec<Value>, i32) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
                    self.seen.extend(parse(&line));
                }
                return (self.seen, st.code().unwrap_or(-1));
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("agent did not exit within {timeout:?}");
            }
            while let Ok(line) = self.lines.try_recv() {
                self.seen.extend(parse(&line));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A workload started outside the agent (for `watch -p`), waiting for bytes on stdin.
pub fn start_workload(args: &[&str]) -> Child {
    Command::new(workloads()).args(args).stdin(Stdio::piped()).spawn().expect("spawn workload")
}

pub fn go(child: &mut Child, n: usize) {
    child.stdin.as_mut().unwrap().write_all(&vec![b'g'; n]).unwrap();
}

impl Running {
    /// A running agent from a command of the caller's making (its stdout is taken here).
    pub fn spawn(mut cmd: Command) -> Running {
        let mut child = cmd.stdout(Stdio::piped()).spawn().expect("spawn agent");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running { child, lines: rx, seen: Vec::new() }
    }
}
