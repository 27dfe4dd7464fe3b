//! Stops and streams: a signal to the agent alone stops it within two seconds in `-- CMD` mode
//! (the command gets the signal); a closed stdout stops it (summary on stderr, exit 141); the
//! command's stdout never shares a stream with the records.
mod common;
use std::{
    io::{BufRead, BufReader, Read},
    os::unix::process::CommandExt,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::*;

/// `agent watch --format json -- workloads ARGS`, in a process group of its own (so that it is
/// never the terminal's foreground group: a SIGINT is one sent by `kill`, not by Ctrl-C).
fn watch_command(workload: &[&str]) -> Running {
    let mut cmd = Command::new(agent());
    cmd.args(["watch", "--format", "json", "--interval", "0.5", "--"]).arg(workloads()).args(workload);
    cmd.stdin(Stdio::null()).process_group(0);
    Running::spawn(cmd)
}

fn alive(pid: u64) -> bool {
    // A zombie is gone for our purpose: it runs no more.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

/// Kills the command if the test fails with it still running (the agent may be gone).
struct KillOnDrop(u64);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if alive(self.0) {
            // SAFETY: signalling the command this test started.
            unsafe { libc::kill(self.0 as i32, libc::SIGKILL) };
        }
    }
}

/// Signal the agent alone while its command runs: it exits within ~2 s, with the summary and
/// exit 0, and the command got the signal.
fn signal_agent_alone(sig: i32, workload: &[&str], wait_for: &str) {
    let mut agent = watch_command(workload);
    let start = agent.wait_for("start", Duration::from_secs(20));
    let child = start["targets"][0].as_u64().unwrap();
    let _cleanup = KillOnDrop(child);
    agent.wait_for(wait_for, Duration::from_secs(20));
    let t = Instant::now();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(agent.child.id() as i32, sig) };
    let (recs, code) = agent.finish(Duration::from_secs(20));
    let took = t.elapsed();
    assert!(took < Duration::from_millis(2500), "signal {sig}: the agent took {took:?} to exit");
    assert_eq!(code, 0, "signal {sig}: exit 0");
    summary(&recs);
    // The command got the signal (forwarded) and its exit was seen before the summary.
    let exits: Vec<_> =
        of_type(&recs, "proc").into_iter().filter(|r| r["event"] == "exit" && r["pid"] == child).collect();
    assert_eq!(exits.len(), 1, "signal {sig}: the command's exit is in the records");
    for _ in 0..20 {
        if !alive(child) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("signal {sig}: the command {child} is still running");
}

#[test]
fn sigterm_to_the_agent_alone_stops_it_and_its_command() {
    if !ebpf_available("stop_sigterm") {
        return;
    }
    signal_agent_alone(libc::SIGTERM, &["sleep", "--secs", "12"], "faults");
}

#[test]
fn sigint_to_the_agent_alone_stops_it_during_a_fault_storm() {
    if !ebpf_available("stop_sigint_storm") {
        return;
    }
    signal_agent_alone(libc::SIGINT, &["storm", "--mib", "64", "--passes", "100000"], "faults");
}

#[test]
fn a_closed_stdout_stops_the_agent_with_the_summary_on_stderr() {
    if !ebpf_available("stop_epipe") {
        return;
    }
    let mut storm = Command::new(workloads()).args(["storm", "--mib", "64", "--passes", "100000"]).spawn().unwrap();
    let mut agent = Command::new(agent())
        .args(["watch", "--format", "json", "-p", &storm.id().to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = agent.stderr.take().unwrap();
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    // `| head -n 3`: read three records, then close the pipe.
    let mut out = BufReader::new(agent.stdout.take().unwrap());
    for _ in 0..3 {
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        parse(&line);
    }
    drop(out);
    let t = Instant::now();
    let status = loop {
        if let Some(st) = agent.try_wait().unwrap() {
            break st;
        }
        if t.elapsed() > Duration::from_secs(10) {
            let _ = agent.kill();
            let _ = storm.kill();
            panic!("the agent still runs 10 s after its stdout was closed");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = storm.kill();
    let _ = storm.wait();
    let took = t.elapsed();
    let stderr = err.join().unwrap();
    assert_eq!(status.code(), Some(141), "exit 141 on a closed stdout: {stderr}");
    assert!(took < Duration::from_secs(3), "the agent took {took:?} to stop");
    let summary = stderr.lines().find(|l| l.starts_with('{') && l.contains(r#""type":"summary""#));
    let summary = parse(summary.unwrap_or_else(|| panic!("no JSON summary on stderr: {stderr}")));
    assert_eq!(summary[0]["type"], "summary");
}

#[test]
fn the_commands_stdout_never_shares_the_record_stream() {
    if !ebpf_available("stop_child_stdout") {
        return;
    }
    let out = Command::new(agent())
        .args(["watch", "--format", "json", "--", "sh", "-c", "echo X; printf Y"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    // stdout (a pipe, not a terminal) holds only records; the command's output went to stderr.
    let recs = parse(&String::from_utf8(out.stdout).unwrap());
    assert_eq!(recs[0]["type"], "start");
    summary(&recs);
    assert!(stderr.contains("X\nY"), "the command's output is on stderr: {stderr:?}");
}
