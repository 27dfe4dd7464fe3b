//! Cgroups the `--cgroup` root tests create, and remove even when the test fails: every process
//! left in one is killed first. v1 memory cgroups are made under this process's own memory
//! cgroup (its limits still apply); v2 ones under the unified hierarchy's root.
#![allow(dead_code)]

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::common::Running;

pub const UNIFIED: &str = "/sys/fs/cgroup/unified";
pub const MEMORY: &str = "/sys/fs/cgroup/memory";

pub struct TestCgroup {
    pub dir: PathBuf,
    /// Its path inside its hierarchy, as /proc/PID/cgroup writes it.
    pub rel: String,
}

/// The watch arguments most of these tests share: `--cgroup` this one, fault intervals of 0.5 s,
/// smaps readings every second, stop after `secs`.
pub fn watch_args<'a>(cg: &'a TestCgroup, secs: &'a str) -> [&'a str; 8] {
    ["--cgroup", cg.path(), "--interval", "0.5", "--smaps-interval", "1", "--duration", secs]
}

/// `agent watch --format json ARGS...` running, once its start record came (within 30 s).
pub fn watch(args: &[&str]) -> (Running, Value) {
    let mut agent = Running::start(&[&["watch", "--format", "json"], args].concat());
    let start = agent.wait_for("start", Duration::from_secs(30));
    (agent, start)
}

/// This process's v1 memory cgroup (path inside the hierarchy).
pub fn own_memory_cgroup() -> String {
    let text = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    text.lines()
        .find_map(|l| {
            let mut it = l.splitn(3, ':');
            let (_, ctl, path) = (it.next()?, it.next()?, it.next()?);
            ctl.split(',').any(|c| c == "memory").then(|| path.to_string())
        })
        .expect("a v1 memory cgroup (this machine's hybrid layout)")
}

impl TestCgroup {
    fn make(mount: &str, parent_rel: &str, name: &str) -> TestCgroup {
        let rel = format!("{}/agent-test-{name}-{}", parent_rel.trim_end_matches('/'), std::process::id());
        let dir = Path::new(mount).join(rel.trim_start_matches('/'));
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        TestCgroup { dir, rel }
    }

    pub fn v2(name: &str) -> TestCgroup {
        TestCgroup::make(UNIFIED, "/", name)
    }

    pub fn v1_memory(name: &str) -> TestCgroup {
        TestCgroup::make(MEMORY, &own_memory_cgroup(), name)
    }

    /// A cgroup below this one (drop it before its parent).
    pub fn child(&self, name: &str) -> TestCgroup {
        TestCgroup::under(&self.dir, name)
    }

    /// A cgroup below the directory `parent` (drop it before its parent).
    pub fn under(parent: &Path, name: &str) -> TestCgroup {
        let dir = parent.join(name);
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        let mount = [UNIFIED, MEMORY].into_iter().find(|m| dir.starts_with(m)).expect("under a test hierarchy");
        let rel = format!("/{}", dir.strip_prefix(mount).unwrap().display());
        TestCgroup { dir, rel }
    }

    pub fn path(&self) -> &str {
        self.dir.to_str().unwrap()
    }

    pub fn procs(&self) -> Vec<i32> {
        let s = std::fs::read_to_string(self.dir.join("cgroup.procs")).unwrap_or_default();
        s.lines().filter_map(|l| l.trim().parse().ok()).collect()
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let procs = self.procs();
            for &p in &procs {
                // SAFETY: signalling a process of the test's own cgroup.
                unsafe { libc::kill(p, libc::SIGKILL) };
            }
            if (procs.is_empty() && std::fs::remove_dir(&self.dir).is_ok()) || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if self.dir.exists() {
            eprintln!("warning: could not remove test cgroup {}", self.dir.display());
        }
    }
}
