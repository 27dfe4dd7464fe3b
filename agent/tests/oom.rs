//! OOM post-mortems on a real kill: a process in a memory cgroup limited to 64 MiB grows until
//! the OOM killer takes it; the `oom` record names it, its cgroup and limit, and the mapping it
//! grew, before its exit record.
mod common;
use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use common::*;

const LIMIT_MIB: u64 = 64;

/// A memory cgroup made for this test, removed when dropped (even when the test fails).
struct Memcg {
    dir: PathBuf,
    /// Its path inside the hierarchy, as the agent reports it.
    path: String,
}

impl Memcg {
    /// A fresh cgroup limited to LIMIT_MIB, without swap: v1 `memory` hierarchy, else a v2 one
    /// with the memory controller. Err: why there is none.
    fn create() -> Result<Memcg, String> {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
        let name = format!("agent-oom-test-{}-{nanos}", std::process::id());
        let limit = (LIMIT_MIB << 20).to_string();
        let swap_on = fs::read_to_string("/proc/swaps").is_ok_and(|s| s.lines().count() > 1);
        let v1 = Path::new("/sys/fs/cgroup/memory");
        if v1.join("memory.limit_in_bytes").exists() {
            let cg = Memcg::make(v1, &name)?;
            write(&cg.dir, "memory.limit_in_bytes", &limit)?;
            if swap_on {
                // memsw (memory + swap) exists only with swap accounting; else keep anon in RAM.
                if cg.dir.join("memory.memsw.limit_in_bytes").exists() {
                    write(&cg.dir, "memory.memsw.limit_in_bytes", &limit)?;
                } else {
                    write(&cg.dir, "memory.swappiness", "0")?;
                }
            }
            return Ok(cg);
        }
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").map_err(|e| e.to_string())?;
        let v2 = mountinfo
            .lines()
            .filter_map(|l| l.split_once(" - ").filter(|(_, post)| post.starts_with("cgroup2 ")))
            .filter_map(|(pre, _)| pre.split(' ').nth(4).map(PathBuf::from))
            .find(|m| fs::read_to_string(m.join("cgroup.controllers")).is_ok_and(|c| c.contains("memory")))
            .ok_or("no memory cgroup controller on this machine (v1 or v2)")?;
        let _ = fs::write(v2.join("cgroup.subtree_control"), "+memory");
        let cg = Memcg::make(&v2, &name)?;
        write(&cg.dir, "memory.max", &limit)?;
        if cg.dir.join("memory.swap.max").exists() {
            write(&cg.dir, "memory.swap.max", "0")?;
        }
        Ok(cg)
    }

    fn make(root: &Path, name: &str) -> Result<Memcg, String> {
        let dir = root.join(name);
        fs::create_dir(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        Ok(Memcg { dir, path: format!("/{name}") })
    }
}

fn write(dir: &Path, file: &str, v: &str) -> Result<(), String> {
    fs::write(dir.join(file), v).map_err(|e| format!("{}/{file} = {v}: {e}", dir.display()))
}

impl Drop for Memcg {
    fn drop(&mut self) {
        // A process still in it (a failed run) goes back to the root first.
        for _ in 0..50 {
            let procs = fs::read_to_string(self.dir.join("cgroup.procs")).unwrap_or_default();
            for pid in procs.split_whitespace() {
                let _ = fs::write(self.dir.parent().unwrap().join("cgroup.procs"), pid);
            }
            if fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("could not remove the test cgroup {}", self.dir.display());
    }
}

#[test]
fn an_oom_kill_in_a_memcg_gets_a_post_mortem() {
    if !ebpf_available("oom_post_mortem") {
        return;
    }
    let cg = match Memcg::create() {
        Ok(cg) => cg,
        Err(why) if std::env::var("AGENT_REQUIRE_EBPF").is_ok_and(|v| v == "1") => panic!("oom_post_mortem: {why}"),
        Err(why) => {
            eprintln!("SKIP oom_post_mortem: {why}");
            return;
        }
    };
    // The shell joins the cgroup, then becomes the grower: 4 MiB every 200 ms, so it is read
    // a few times before the kill; --max-mib ends it if the limit somehow does not hold.
    let script = format!(
        "echo $$ > {}/cgroup.procs && exec {} grow --chunk-mib 4 --every-ms 200 --max-mib 512",
        cg.dir.display(),
        workloads().display()
    );
    let out = Command::new(agent())
        .args(["watch", "--format", "json", "--interval", "0.5", "--smaps-interval", "0.5", "--stacks"])
        .args(["--", "sh", "-c", &script])
        .stderr(Stdio::piped())
        .output()
        .expect("run agent");
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprint!("{stderr}");
    let recs = parse(&String::from_utf8(out.stdout).expect("utf-8 stdout"));
    assert_eq!(out.status.code(), Some(128 + 9), "the agent exits with the killed command's status");

    let pid = of_type(&recs, "start")[0]["targets"][0].as_u64().unwrap();
    let ooms = of_type(&recs, "oom");
    assert_eq!(ooms.len(), 1, "exactly one oom record: {ooms:?}");
    let o = ooms[0];
    eprintln!("oom record: {o}");
    assert_eq!(o["pid"].as_u64(), Some(pid), "{o}");
    assert_eq!(o["comm"], "wl-grow", "{o}");
    assert_eq!(o["constraint"], "memcg", "{o}");
    assert_eq!(o["memcg"].as_str(), Some(cg.path.as_str()), "{o}");
    assert_eq!(o["limit_kib"].as_u64(), Some(LIMIT_MIB << 10), "{o}");

    // Its top mapping is the region it grew, with most of the limit in it.
    let region = stderr
        .lines()
        .find_map(|l| l.strip_prefix("wl-grow: region "))
        .unwrap_or_else(|| panic!("the grower did not print its region: {stderr}"));
    let top = &o["mappings"][0];
    assert_eq!(top["mapping"].as_str(), Some(format!("anon@{region}").as_str()), "{o}");
    assert_eq!(top["shared"], false, "{o}");
    let pages = top["pages"].as_u64().unwrap();
    assert!((40 * MIB_PAGES..=LIMIT_MIB * MIB_PAGES).contains(&pages), "grown pages {pages}: {o}");
    // The kernel's own figure agrees: anon RSS near the limit.
    let anon = o["kernel"]["anon_rss_kib"].as_u64().unwrap();
    assert!((40 << 10..=LIMIT_MIB << 10).contains(&anon), "kernel anon_rss_kib {anon}: {o}");
    assert!(o["last_mem"]["rss_kib"].as_u64().is_some_and(|r| r > 0), "a last reading: {o}");
    // --stacks: the stack that grew it is the workload's touch loop.
    let frames = o["stacks"][0]["frames"].to_string();
    assert!(frames.contains("touch"), "top stack: {frames}");

    // Written before the victim's exit record.
    let at = |pred: &dyn Fn(&serde_json::Value) -> bool| recs.iter().position(pred).unwrap();
    let oom_at = at(&|r| r["type"] == "oom");
    let exit_at = at(&|r| r["type"] == "proc" && r["event"] == "exit" && r["pid"].as_u64() == Some(pid));
    assert!(oom_at < exit_at, "oom record at {oom_at}, exit at {exit_at}");
}

#[test]
fn without_mark_victim_the_watch_is_degraded_and_says_so() {
    if !ebpf_available("oom_missing_tracepoint") {
        return;
    }
    let load =
        agent::kernel::loader::LoadOptions { simulate_missing: vec!["oom:mark_victim".into()], ..Default::default() };
    let (code, recs) = watch_in_process(&["--format", "json", "--", "true"], load);
    assert_eq!(code, Ok(0));
    let start = &of_type(&recs, "start")[0];
    assert!(!start["hooks"].as_array().unwrap().iter().any(|h| h == "mark_victim"), "{start}");
    let missing = start["missing_hooks"].as_array().unwrap();
    assert!(missing.iter().any(|m| m.as_str().unwrap().starts_with("oom:mark_victim")), "{start}");
}
