//! Where the records go (`-o FILE`), and outputs refused at start: a path that cannot be
//! written, or options that cannot work, fail in one line before anything is watched.
mod common;
use std::process::Command;

use common::*;

fn scratch(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("agent-output-{}-{name}", std::process::id()))
}

#[test]
fn records_go_to_the_file_and_the_commands_output_stays_on_stdout() {
    if !ebpf_available("output_file") {
        return;
    }
    let file = scratch("records.json");
    let out = Command::new(agent())
        .args(["watch", "--format", "json", "-o"])
        .arg(&file)
        .args(["--", "sh", "-c", "echo X; printf Y"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    // stdout is the command's, untouched; the file holds only records.
    assert_eq!(String::from_utf8_lossy(&out.stdout), "X\nY");
    let text = std::fs::read_to_string(&file).unwrap();
    let _ = std::fs::remove_file(&file);
    let recs = parse(&text);
    assert_eq!(recs[0]["type"], "start");
    summary(&recs);
}

#[test]
fn an_unwritable_output_fails_before_the_command_runs() {
    // Not root-only: nothing is loaded when the path is refused.
    let marker = scratch("ran");
    let touch = format!("touch {}", marker.display());
    for flag in ["-o", "--folded", "--flamegraph", "--pprof"] {
        let out = Command::new(agent())
            .args(["watch", flag, "/nonexistent-dir/out", "--", "sh", "-c", &touch])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{flag}: {stderr}");
        assert_eq!(stderr.trim(), "agent: cannot write /nonexistent-dir/out: No such file or directory (os error 2)");
        assert!(out.stdout.is_empty(), "{flag}: nothing on stdout");
        assert!(!marker.exists(), "{flag}: the command must not have run");
    }
}

#[test]
fn a_leak_window_the_verdict_cannot_use_is_refused() {
    let out = Command::new(agent()).args(["watch", "--leak-window", "5", "--", "true"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.trim().starts_with("agent: --leak-window 5 is shorter than"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1);
}
