//! `--cgroup` on the v2 hierarchy: a process moved into a test cgroup after the watch started is
//! followed (the kernel joins it as it moves, so its child is watched from its first fault; a
//! process that moves in and execs is joined at its exec), its pages attributed; the cgroup record reconciles with memory.stat (on this hybrid machine the
//! v1 memory cgroup the members share): anon written by a member within 5% of memory.stat's,
//! and a 64 MiB tmpfs file written and never mapped under unmapped shmem within 5%, named.
mod cgroup_util;
mod common;
use std::{process::Command, time::Duration};

use agent::kernel::loader::LoadOptions;
use cgroup_util::{watch, watch_args, TestCgroup};
use common::*;
use serde_json::Value;

const MIB: u64 = 1 << 20;

#[test]
fn v2_member_moved_in_after_start_is_followed_and_its_memory_reconciled() {
    if !ebpf_available("cgroup_v2_join") {
        return;
    }
    let v2 = TestCgroup::v2("join");
    // Where its memory is charged: a fresh v1 memory cgroup (the v2 hierarchy here has no
    // memory controller), so memory.stat's values are the deltas of what the members did.
    let mem = TestCgroup::v1_memory("join");
    let shm = format!("/dev/shm/agent-test-cgroup-{}", std::process::id());
    let (agent, start) = watch(&watch_args(&v2, "11"));
    assert!(start["cgroups"][0].as_str().unwrap().contains("v2: moves in and out followed in the kernel"), "{start}");
    assert_eq!(start["targets"].as_array().unwrap().len(), 0, "the cgroup starts empty: {start}");
    // Moved in after the start (it writes its pid to cgroup.procs), then forks at once.
    let st = Command::new(workloads())
        .args(["cgmember", "--join", v2.path(), "--join", mem.path(), "--anon-mib", "64", "--tmpfs-file", &shm])
        .args(["--tmpfs-mib", "64", "--hold-s", "5"])
        .status()
        .unwrap();
    assert!(st.success());
    let (recs, code) = agent.finish(Duration::from_secs(30));
    assert_eq!(code, 0);

    // Followed: the parent joined in the kernel as it moved, the child was forked watched.
    let procs = of_type(&recs, "proc");
    let join = procs.iter().find(|p| p["event"] == "join").unwrap_or_else(|| panic!("no join record: {procs:?}"));
    assert_eq!(join["comm"], "wl-cg-parent");
    assert_eq!(join["cgroup"], v2.rel.as_str(), "labelled with its v2 path: {join}");
    let parent = join["pid"].as_u64().unwrap();
    let fork = procs.iter().find(|p| p["event"] == "fork" && p["ppid"] == parent).expect("its child's fork record");
    assert_eq!(fork["cgroup"], v2.rel.as_str(), "{fork}");
    let child = proc_by_comm(&recs, "wl-cg-child");
    assert_eq!(child["pid"], fork["pid"]);
    // Its first fault on: 64 MiB of anon (16384 pages), plus its libc's few.
    assert_within("child anon pages", child["pages"]["anon"].as_i64().unwrap(), 16384, 5.0);

    // The cgroup record once the child holds everything: memory from the v1 memory cgroup.
    let cgs = of_type(&recs, "cgroup");
    let full: Vec<&&Value> = cgs
        .iter()
        .filter(|c| c["members"] == 2 && c["stat"]["total_shmem"].as_u64().unwrap_or(0) >= 64 * MIB)
        .collect();
    assert!(full.len() >= 2, "cgroup records while the child held its memory: {cgs:?}");
    let c = full[full.len() - 1];
    assert_eq!(c["path"], v2.path());
    assert_eq!(c["memory_source"], mem.path(), "{c}");
    assert!(c["usage_in_bytes"].as_u64().unwrap() >= 128 * MIB, "{c}");
    let (anon_stat, anon_explained) =
        (c["stat"]["total_rss"].as_i64().unwrap(), c["explained"]["anon_bytes"].as_i64().unwrap());
    assert_within(
        "explained anon vs memory.stat total_rss (bytes / 4096)",
        anon_explained / 4096,
        anon_stat / 4096,
        5.0,
    );
    let unmapped_shmem = c["unmapped"]["shmem_bytes"].as_i64().unwrap();
    assert_within("unmapped shmem pages", unmapped_shmem / 4096, (64 * MIB / 4096) as i64, 5.0);
    let f = &c["files"][0];
    assert_eq!((f["path"].as_str(), f["bytes"].as_u64()), (Some(shm.as_str()), Some(64 * MIB)), "{c}");
    // No pid is flagged, and nothing else was watched: the members only.
    assert!(of_type(&recs, "leak").is_empty());
    let comms: Vec<&str> =
        summary(&recs)["procs"].as_array().unwrap().iter().map(|p| p["comm"].as_str().unwrap()).collect();
    assert_eq!(comms.len(), 2, "{comms:?}");
}

/// `docker exec`'s shape: a shell moves itself into the cgroup (here a child cgroup created after
/// the watch started: matched in the kernel through its watched ancestor), then execs the
/// program, which the kernel joins at that exec (no fork involved): its pages from its first
/// fault.
#[test]
fn v2_member_that_execs_after_joining_is_watched_from_its_exec() {
    if !ebpf_available("cgroup_v2_exec") {
        return;
    }
    let v2 = TestCgroup::v2("exec");
    // Without the move hook, so that the exec program is what finds it.
    let load = LoadOptions { simulate_missing: vec!["cgroup:cgroup_attach_task".into()], ..LoadOptions::default() };
    let args = watch_args(&v2, "5");
    let run = std::thread::spawn({
        let parent = v2.dir.clone();
        move || {
            std::thread::sleep(Duration::from_secs(2));
            let sub = TestCgroup::under(&parent, "sub");
            let script = format!(
                "echo $$ > {}/cgroup.procs && exec {} anon --mib 32 --hold 1",
                sub.path(),
                workloads().display()
            );
            (Command::new("sh").args(["-c", &script]).status().unwrap(), sub)
        }
    });
    let (res, recs) = watch_in_process(&args, load);
    let (st, sub) = run.join().unwrap();
    assert!(st.success());
    assert_eq!(res, Ok(0));
    let start = &of_type(&recs, "start")[0];
    assert!(
        start["cgroups"][0].as_str().unwrap().contains("v2: joins followed in the kernel at fork and exec"),
        "{start}"
    );
    let procs = of_type(&recs, "proc");
    let join = procs.iter().find(|p| p["event"] == "join").unwrap_or_else(|| panic!("no join record: {procs:?}"));
    let pid = &join["pid"];
    let exec = procs.iter().position(|p| p["event"] == "exec" && p["pid"] == *pid).expect("its exec record");
    assert!(procs.iter().position(|p| p["event"] == "join").unwrap() < exec, "joined at its exec: {procs:?}");
    assert_eq!(join["cgroup"], sub.rel.as_str(), "{join}");
    let p = proc_by_comm(&recs, "wl-anon");
    assert_eq!(p["pid"], *pid);
    // 32 MiB: 8192 pages, and the few its loader and libc add.
    assert_within("exec'd member anon pages", p["pages"]["anon"].as_i64().unwrap(), 8192, 5.0);
    drop(sub);
}

/// A v2 cgroup whose member sits in the v1 root memory cgroup (most processes on this machine,
/// PID 1 not being systemd): the memory hierarchy's root is the host's totals, never the
/// cgroup's. The start line says it once, each cgroup record has no memory source and says
/// why, and 64 MiB of tmpfs nobody maps (the host's unmapped shmem grows) flags no cgroup leak.
#[test]
fn v2_member_in_the_v1_root_memory_cgroup_reports_no_host_totals() {
    if !ebpf_available("cgroup_v2_root_memcg") {
        return;
    }
    let v2 = TestCgroup::v2("rootmem");
    let shm = format!("/dev/shm/agent-test-rootmem-{}", std::process::id());
    let args = ["cgmember", "--join", v2.path(), "--join", cgroup_util::MEMORY, "--delay-s", "2"];
    let mut member =
        start_workload(&[&args[..], &["--tmpfs-file", &shm, "--tmpfs-mib", "64", "--hold-s", "5"]].concat());
    let t = std::time::Instant::now();
    while v2.procs().is_empty() && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let (agent, start) = watch(&watch_args(&v2, "8"));
    assert!(start["cgroups"][0].as_str().unwrap().contains("memory: none of its own"), "{start}");
    assert!(member.wait().unwrap().success());
    let (recs, code) = agent.finish(Duration::from_secs(30));
    assert_eq!(code, 0);

    let cgs = of_type(&recs, "cgroup");
    assert!(cgs.iter().filter(|c| c["members"] == 2).count() >= 2, "cgroup records with both members: {cgs:?}");
    for c in &cgs {
        assert!(c["memory_source"].is_null() && c.get("usage_in_bytes").is_none(), "host totals read: {c}");
        // Once both exited: no member to find a memory cgroup of.
        let why = if c["members"] == 0 { "no member's" } else { "memory hierarchy's root" };
        assert!(c["no_memory_cgroup"].as_str().unwrap().contains(why), "{c}");
        assert_eq!(c["unmapped"]["shmem_bytes"], 0, "{c}");
    }
    // The file the child holds open is still named (found through its fds, not memory.stat).
    assert!(cgs.iter().any(|c| c["files"][0]["path"] == shm.as_str()), "{cgs:?}");
    let leaks = of_type(&recs, "leak");
    assert!(leaks.iter().all(|l| l["scope"] != "cgroup"), "{leaks:?}");
}
