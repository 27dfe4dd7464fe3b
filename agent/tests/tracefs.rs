//! tracefs is not mounted at boot on our machines: the agent mounts it itself.
mod common;
use common::*;

#[test]
fn the_agent_mounts_tracefs_when_it_is_not_mounted() {
    if !ebpf_available("tracefs_mount") {
        return;
    }
    // Unmount it if it is mounted (the agent mounted it in an earlier test); lazily, so a busy
    // mount does not fail the test.
    let _ = std::process::Command::new("umount").args(["-l", "/sys/kernel/tracing"]).status();
    let (recs, code) = watch_workload(&[], &["anon", "--mib", "4", "--hold", "0.1"]);
    assert_eq!(code, 0);
    assert!(of_type(&recs, "start")[0]["hooks"].as_array().unwrap().iter().any(|h| h == "rss_stat"));
    assert!(std::path::Path::new("/sys/kernel/tracing/events/kmem/rss_stat/format").exists());
}
