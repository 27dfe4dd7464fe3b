//! `kernel/ebpf_log.rs`: the eBPF programs' diagnostics reach the agent's log. With a WATCHED map
//! of one entry (a load option, set through the library), the spawned command fills it and the
//! fork of its child cannot be followed: the fork program must say so, at error level.
mod common;
use std::sync::Mutex;

use agent::{cli::WatchArgs, kernel::loader::LoadOptions, sinks::Collect, watch};
use common::*;

/// Every log record of this test process, as `[LEVEL target] message`.
static LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::Level::Warn
    }
    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            LINES.lock().unwrap().push(format!("[{} {}] {}", r.level(), r.target(), r.args()));
        }
    }
    fn flush(&self) {}
}

#[test]
fn a_full_watched_map_is_logged_by_the_fork_program() {
    if !ebpf_available("watched_full_log") {
        return;
    }
    log::set_logger(&Capture).expect("one logger");
    log::set_max_level(log::LevelFilter::Warn);
    let args = WatchArgs::parse_from(["--format", "json", "--", "sh", "-c", "sleep 0.3 & wait"]).unwrap();
    let load = LoadOptions { map_sizes: vec![("WATCHED".into(), 1)], ..Default::default() };
    let sink = Collect::default();
    let code = watch::run_with(args, load, vec![Box::new(sink.clone())]).expect("watch");
    assert_eq!(code, 0);
    let recs = sink.0.lock().unwrap().clone();
    // The kernel still reports the fork it could not follow: it names the pids of the line.
    let fork = of_type(&recs, "proc").into_iter().find(|r| r["event"] == "fork").expect("a fork record");
    let (child, parent) = (fork["pid"].as_u64().unwrap(), fork["ppid"].as_u64().unwrap());
    let want = format!(
        "[ERROR agent::fork] WATCHED map full: child pid {child} of {parent} is not followed; raise WATCHED's max_entries"
    );
    let lines = LINES.lock().unwrap().clone();
    let full: Vec<&String> = lines.iter().filter(|l| l.contains("WATCHED map full")).collect();
    assert_eq!(full.len(), 1, "one line for the one lost child: {lines:?}");
    assert_eq!(full[0], &want);
}
