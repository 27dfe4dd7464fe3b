//! Why the OOM killer ran, for a post-mortem: a memory cgroup's limit (`memcg`) or the machine
//! (`global`), which cgroup, and its limit.
//!
//! The victim has been sent SIGKILL before `oom:mark_victim` fires, and the agent itself reaps
//! the command it spawned, so by the time the record is handled `/proc/PID` is usually gone.
//! The decision therefore rests, in order, on:
//!
//! 1. **The kernel log** (`/dev/kmsg`, root): the OOM killer's own lines. `Memory cgroup out of
//!    memory: Killed process PID` versus `Out of memory: Killed process PID` is printed for
//!    every kill (not rate-limited) and settles the constraint. The rate-limited dump before it
//!    names the cgroup (`oom-kill:constraint=CONSTRAINT_MEMCG,...,oom_memcg=/A,task_memcg=/B,
//!    ...,pid=PID,`) and, for a memcg, its limit at that moment (`memory: usage NkB, limit NkB`).
//! 2. **The cgroup files**, when the log says nothing (no access, or overwritten): the
//!    victim's memory cgroup from `/proc/PID/cgroup` (v1 `memory` line, else v2 `0::`), if it is
//!    still readable; the smallest limit below MemTotal on it and its ancestors
//!    (`memory.limit_in_bytes` v1, `memory.max` v2). It is `memcg` when that cgroup's peak usage
//!    (`memory.max_usage_in_bytes` v1, `memory.peak` v2) reached the limit (within 2%) or, on v2,
//!    `memory.events` counts an `oom`; else `global`. A cgroup that hit its limit earlier and
//!    then saw a global OOM is misread as `memcg`: the log is the authority.
//! 3. Neither: `unknown`.
//!
//! The limit is the log's when it has one, else read from the cgroup (if it still exists).
use std::{
    fs,
    io::Read as _,
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
};

/// The constraint of one OOM kill and the cgroup it concerns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cause {
    pub constraint: &'static str,
    pub source: &'static str,
    /// For `memcg`, the cgroup whose limit was hit; otherwise the victim's.
    pub memcg: Option<String>,
    pub limit_kib: Option<u64>,
}

/// What the OOM killer's log lines say about the kill of one pid (the latest such kill).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogLines {
    /// From `...: Killed process PID (comm)`: `memcg` or `global`.
    pub killed: Option<&'static str>,
    /// From the `oom-kill:constraint=...` summary.
    pub constraint: Option<&'static str>,
    pub oom_memcg: Option<String>,
    pub task_memcg: Option<String>,
    /// From `memory: usage NkB, limit NkB, ...` of the same dump (memcg kills only).
    pub limit_kib: Option<u64>,
}

/// Find the lines of the latest kill of `pid` among kernel log messages (oldest first).
pub fn parse_log<'a>(messages: impl IntoIterator<Item = &'a str>, pid: u32) -> LogLines {
    let (mut found, mut pending, mut limit) = (LogLines::default(), LogLines::default(), None);
    let summary_pid = format!(",pid={pid},");
    let killed_pid = format!("Killed process {pid} (");
    for m in messages {
        if m.contains(" invoked oom-killer: ") {
            limit = None;
        } else if let Some(rest) = m.strip_prefix("memory: usage ") {
            limit = rest.split(", ").find_map(|f| f.strip_prefix("limit ")?.strip_suffix("kB")?.parse().ok());
        } else if let Some(rest) = m.strip_prefix("oom-kill:") {
            if !m.contains(&summary_pid) {
                continue;
            }
            let field = |k: &str| rest.split(',').find_map(|f| f.strip_prefix(k)).map(str::to_string);
            pending = LogLines {
                killed: None,
                constraint: field("constraint=").map(|c| match c.as_str() {
                    "CONSTRAINT_MEMCG" => "memcg",
                    "CONSTRAINT_CPUSET" => "cpuset",
                    "CONSTRAINT_MEMORY_POLICY" => "mempolicy",
                    _ => "global",
                }),
                oom_memcg: field("oom_memcg="),
                task_memcg: field("task_memcg="),
                limit_kib: limit.take(),
            };
        } else if m.contains(&killed_pid) {
            found = std::mem::take(&mut pending);
            found.killed = Some(if m.starts_with("Memory cgroup out of memory") { "memcg" } else { "global" });
        }
    }
    // A summary with no kill line after it yet (the kill line follows it closely).
    if pending.constraint.is_some() {
        pending
    } else {
        found
    }
}

/// The kernel log's messages that matter here (the OOM killer's), oldest first. `None`
/// without access to /dev/kmsg.
fn read_kmsg() -> Option<Vec<String>> {
    let mut f = fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open("/dev/kmsg").ok()?;
    let mut buf = vec![0u8; 8192];
    let mut out = Vec::new();
    // Bounded: a log written faster than we read must not keep us here.
    for _ in 0..1_000_000 {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                // `prio,seq,ts,flags;message\n` then optional ` KEY=VALUE` lines.
                let rec = String::from_utf8_lossy(&buf[..n]);
                let Some((_, msg)) = rec.split_once(';') else { continue };
                let msg = msg.split('\n').next().unwrap_or("");
                if msg.contains("oom") || msg.starts_with("memory: usage ") || msg.contains("Killed process ") {
                    out.push(msg.to_string());
                }
            }
            // A record overwritten while we read: the next read goes on from the oldest kept.
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
            Err(_) => break, // EAGAIN: the end of the log
        }
    }
    Some(out)
}

/// The memory controller's hierarchy: a v1 `memory` mount, else a v2 mount with the memory
/// controller enabled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hierarchy {
    pub mount: PathBuf,
    /// The mount's root inside the hierarchy (not `/` in some containers).
    pub root: String,
    pub v2: bool,
}

impl Hierarchy {
    pub fn find(mountinfo: &str, v2_has_memory: impl Fn(&Path) -> bool) -> Option<Hierarchy> {
        let mut v2 = None;
        for line in mountinfo.lines() {
            let Some((pre, post)) = line.split_once(" - ") else { continue };
            let pre: Vec<&str> = pre.split(' ').collect();
            let post: Vec<&str> = post.split(' ').collect();
            let (Some(&root), Some(&mount), Some(&fstype)) = (pre.get(3), pre.get(4), post.first()) else { continue };
            let h = Hierarchy { mount: mount.into(), root: root.into(), v2: fstype == "cgroup2" };
            if fstype == "cgroup" && post.get(2).is_some_and(|o| o.split(',').any(|o| o == "memory")) {
                return Some(h);
            }
            if h.v2 && v2.is_none() && v2_has_memory(&h.mount) {
                v2 = Some(h);
            }
        }
        v2
    }

    fn dir(&self, cg: &str) -> PathBuf {
        let rel = cg.strip_prefix(self.root.trim_end_matches('/')).unwrap_or(cg);
        self.mount.join(rel.trim_start_matches('/'))
    }

    fn read_u64(&self, cg: &str, file: &str) -> Option<u64> {
        fs::read_to_string(self.dir(cg).join(file)).ok()?.trim().parse().ok()
    }

    /// The cgroup's own limit in bytes (None: unlimited or unreadable).
    pub fn limit(&self, cg: &str) -> Option<u64> {
        self.read_u64(cg, if self.v2 { "memory.max" } else { "memory.limit_in_bytes" })
    }

    /// The smallest limit below `mem_total` bytes on `cg` and its ancestors: (cgroup, bytes).
    pub fn effective_limit(&self, cg: &str, mem_total: u64) -> Option<(String, u64)> {
        let mut best: Option<(String, u64)> = None;
        let mut at = cg.to_string();
        loop {
            if let Some(l) = self.limit(&at).filter(|&l| l < mem_total) {
                if best.as_ref().is_none_or(|(_, b)| l < *b) {
                    best = Some((at.clone(), l));
                }
            }
            match at.rfind('/') {
                Some(0) if at.len() > 1 => at = "/".into(),
                Some(i) if i > 0 => at.truncate(i),
                _ => return best,
            }
        }
    }

    /// The cgroup shows that it reached `limit`: its peak usage got there, or (v2) it counted
    /// an OOM.
    pub fn reached(&self, cg: &str, limit: u64) -> bool {
        let peak = self.read_u64(cg, if self.v2 { "memory.peak" } else { "memory.max_usage_in_bytes" });
        let oom = self.v2
            && fs::read_to_string(self.dir(cg).join("memory.events")).ok().is_some_and(|t| {
                t.lines()
                    .any(|l| l.strip_prefix("oom ").and_then(|n| n.trim().parse::<u64>().ok()).is_some_and(|n| n > 0))
            });
        oom || peak.is_some_and(|p| p >= limit - limit / 50)
    }
}

/// The victim's memory cgroup from its `/proc/PID/cgroup`.
pub fn memcg_of(proc_cgroup: &str, v2: bool) -> Option<String> {
    proc_cgroup.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (id, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
        let wanted = if v2 { id == "0" && ctrls.is_empty() } else { ctrls.split(',').any(|c| c == "memory") };
        wanted.then(|| path.to_string())
    })
}

fn mem_total() -> u64 {
    let t = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let kib =
        t.lines().find_map(|l| l.strip_prefix("MemTotal:")?.trim().strip_suffix("kB")?.trim().parse::<u64>().ok());
    kib.map_or(u64::MAX, |k| k * 1024)
}

/// Why `pid` was killed, from the kernel log and the cgroup files.
pub fn cause(pid: u32) -> Cause {
    let mut log = read_kmsg().map(|m| parse_log(m.iter().map(String::as_str), pid));
    if log.as_ref().is_some_and(|l| l.killed.is_none()) {
        // The kill line is printed just after the tracepoint fires: give it a moment.
        std::thread::sleep(std::time::Duration::from_millis(20));
        log = read_kmsg().map(|m| parse_log(m.iter().map(String::as_str), pid));
    }
    let hier = fs::read_to_string("/proc/self/mountinfo").ok().and_then(|m| Hierarchy::find(&m, has_memory_controller));
    let proc_memcg =
        hier.as_ref().and_then(|h| memcg_of(&fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?, h.v2));
    decide(&log.unwrap_or_default(), hier.as_ref(), proc_memcg, mem_total())
}

fn has_memory_controller(mount: &Path) -> bool {
    fs::read_to_string(mount.join("cgroup.controllers")).is_ok_and(|c| c.split_whitespace().any(|c| c == "memory"))
}

pub fn decide(log: &LogLines, hier: Option<&Hierarchy>, proc_memcg: Option<String>, mem_total: u64) -> Cause {
    let victim_cg = log.task_memcg.clone().or(proc_memcg);
    let limit_of = |cg: &str| hier.and_then(|h| h.effective_limit(cg, mem_total)).map(|(_, l)| l / 1024);
    if let Some(constraint) = log.killed.or(log.constraint) {
        let memcg = if constraint == "memcg" { log.oom_memcg.clone().or(victim_cg) } else { victim_cg };
        let from_log = log.limit_kib.filter(|_| constraint == "memcg");
        let limit_kib = from_log.or_else(|| memcg.as_deref().and_then(limit_of));
        return Cause { constraint, source: "kernel log", memcg, limit_kib };
    }
    let (Some(h), Some(cg)) = (hier, victim_cg.clone()) else {
        return Cause { constraint: "unknown", source: "none", memcg: victim_cg, limit_kib: None };
    };
    match h.effective_limit(&cg, mem_total) {
        Some((at, limit)) if h.reached(&at, limit) => {
            Cause { constraint: "memcg", source: "cgroup limits", memcg: Some(at), limit_kib: Some(limit / 1024) }
        }
        other => Cause {
            constraint: "global",
            source: "cgroup limits",
            memcg: Some(cg),
            limit_kib: other.map(|(_, l)| l / 1024),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEMCG_KILL: &[&str] = &[
        "python3 invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0",
        "memory: usage 65536kB, limit 65536kB, failcnt 104",
        "memory+swap: usage 65536kB, limit 9007199254740988kB, failcnt 0",
        "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/agent-oom-1,task_memcg=/agent-oom-1/leaf,task=wl-grow,pid=3119,uid=0",
        "Memory cgroup out of memory: Killed process 3119 (wl-grow) total-vm:78064kB, anon-rss:65280kB",
    ];

    #[test]
    fn log_lines_of_a_memcg_kill() {
        let l = parse_log(MEMCG_KILL.iter().copied(), 3119);
        assert_eq!(l.killed, Some("memcg"));
        assert_eq!(l.constraint, Some("memcg"));
        assert_eq!(l.oom_memcg.as_deref(), Some("/agent-oom-1"));
        assert_eq!(l.task_memcg.as_deref(), Some("/agent-oom-1/leaf"));
        assert_eq!(l.limit_kib, Some(65536));
        let c = decide(&l, None, None, 1 << 40);
        assert_eq!(
            c,
            Cause {
                constraint: "memcg",
                source: "kernel log",
                memcg: Some("/agent-oom-1".into()),
                limit_kib: Some(65536)
            }
        );
        // Another pid's kill says nothing about this one.
        assert_eq!(parse_log(MEMCG_KILL.iter().copied(), 311), LogLines::default());
    }

    #[test]
    fn the_latest_kill_of_a_pid_wins_and_the_kill_line_alone_suffices() {
        // An old memcg kill of the same pid number, then a global one whose dump was
        // rate-limited away: only its kill line remains.
        let mut log = MEMCG_KILL.to_vec();
        log.push("Out of memory: Killed process 3119 (other) total-vm:1kB");
        let l = parse_log(log.iter().copied(), 3119);
        assert_eq!((l.killed, l.constraint, l.limit_kib), (Some("global"), None, None));
        assert_eq!(decide(&l, None, Some("/".into()), 1 << 40).constraint, "global");
    }

    #[test]
    fn proc_cgroup_lines() {
        let hybrid = "9:name=systemd:/\n4:memory:/process_api/x\n1:cpu,cpuacct:/\n0::/\n";
        assert_eq!(memcg_of(hybrid, false).as_deref(), Some("/process_api/x"));
        assert_eq!(memcg_of("0::/system.slice/a.service\n", true).as_deref(), Some("/system.slice/a.service"));
        assert_eq!(memcg_of("4:cpu:/\n", false), None);
    }

    #[test]
    fn hierarchy_from_mountinfo() {
        let mi = "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
                  41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        let h = Hierarchy::find(mi, |_| true).unwrap();
        assert_eq!((h.mount.to_str().unwrap(), h.v2), ("/sys/fs/cgroup/memory", false));
        let v2only = "41 31 0:38 /docker/abc /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        let h = Hierarchy::find(v2only, |_| true).unwrap();
        assert!(h.v2);
        assert_eq!(h.dir("/docker/abc/inner"), PathBuf::from("/sys/fs/cgroup/inner"));
        assert_eq!(Hierarchy::find(v2only, |_| false), None);
    }

    /// A fake v1 hierarchy: /a limited to 64 MiB (peak reached), /a/b unlimited.
    fn fake_tree(peak: u64) -> (Hierarchy, PathBuf) {
        let dir = std::env::temp_dir().join(format!("agent-memcg-test-{}-{peak}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("a/b")).unwrap();
        let unlimited = "9223372036854771712\n";
        fs::write(dir.join("memory.limit_in_bytes"), unlimited).unwrap();
        fs::write(dir.join("a/memory.limit_in_bytes"), format!("{}\n", 64 << 20)).unwrap();
        fs::write(dir.join("a/memory.max_usage_in_bytes"), format!("{peak}\n")).unwrap();
        fs::write(dir.join("a/b/memory.limit_in_bytes"), unlimited).unwrap();
        (Hierarchy { mount: dir.clone(), root: "/".into(), v2: false }, dir)
    }

    #[test]
    fn without_the_log_the_limits_decide() {
        let total = 24 << 30;
        let (h, dir) = fake_tree(64 << 20);
        assert_eq!(h.effective_limit("/a/b", total), Some(("/a".into(), 64 << 20)));
        let c = decide(&LogLines::default(), Some(&h), Some("/a/b".into()), total);
        assert_eq!(
            c,
            Cause { constraint: "memcg", source: "cgroup limits", memcg: Some("/a".into()), limit_kib: Some(65536) }
        );
        let _ = fs::remove_dir_all(&dir);
        // Far below its limit: the machine ran out.
        let (h, dir) = fake_tree(10 << 20);
        let c = decide(&LogLines::default(), Some(&h), Some("/a/b".into()), total);
        assert_eq!((c.constraint, c.memcg.as_deref(), c.limit_kib), ("global", Some("/a/b"), Some(65536)));
        let _ = fs::remove_dir_all(&dir);
        assert_eq!(decide(&LogLines::default(), None, None, total).constraint, "unknown");
    }
}
