//! The programs cache "this process is not watched" per CPU (agent-ebpf `state::is_watched`),
//! voided by every insert into the watched set. A process that faulted while the programs were
//! loaded but before it was watched (`watch -p` on a busy process: its faults between the load
//! and the watch are cached as not watched on the CPUs it ran on) must be counted from the
//! watch on: without the void, its every later fault would be skipped.
mod common;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn a_process_faulting_before_it_is_watched_is_counted_after() {
    if !ebpf_available("a_process_faulting_before_it_is_watched_is_counted_after") {
        return;
    }
    // Faults without pause: 64 MiB mapped, written page by page, unmapped, again.
    let mut storm = Killed(start_workload(&["storm", "--mib", "64", "--passes", "1000000"]));
    let pid = storm.0.id();
    // Faulting before the programs load, so it is faulting while they attach.
    std::thread::sleep(Duration::from_millis(300));
    let mut agent = Running::start(&["watch", "-p", &pid.to_string(), "--format", "json", "--interval", "0.5"]);
    agent.wait_for("start", Duration::from_secs(20));
    // Watched now, with some of its faults cached as not watched before: wait for two 64 MiB
    // passes (16384 faults each) counted after the watch, however slow the loaded machine is.
    let want = 2 * MIB_PAGES as i64 * 64;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut counted = 0;
    while counted < want {
        assert!(Instant::now() < deadline, "{counted} faults counted in 60 s of storm after the watch");
        assert!(storm.0.try_wait().unwrap().is_none(), "the storm ended early");
        let f = agent.wait_for("faults", deadline.saturating_duration_since(Instant::now()));
        if f["pid"] == pid {
            counted += f["faults"].as_i64().unwrap();
        }
    }
    drop(storm);
    let (recs, code) = agent.finish(Duration::from_secs(30));
    assert_eq!(code, 0);
    let s = summary(&recs);
    let p =
        s["procs"].as_array().unwrap().iter().find(|p| p["pid"] == pid).unwrap_or_else(|| panic!("no storm in {s}"));
    let faults = p["faults"].as_i64().unwrap();
    assert!(faults >= counted, "{faults} faults in the summary, {counted} in the intervals: {p}");
    // And each counted fault added its page: the faults were attributed, not only counted.
    let added: i64 = p["mappings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["mapping"].as_str().unwrap().starts_with("anon@"))
        .map(|m| m["faults"].as_i64().unwrap())
        .sum();
    assert_within("faults in the storm's anon mappings", added, faults, 2.0);
}

/// The storm, killed when dropped: a failed assertion must not leave it faulting forever.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
