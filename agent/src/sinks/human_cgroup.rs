//! The human format of the `cgroup` records (a short table under the process lines) and of
//! cgroup-level leak verdicts.
use std::fmt::Write as _;

use super::human::size_kib;
use crate::judgement::{cgroup::CgroupRecord, cgroup_verdict::CgroupLeak};

fn size(bytes: u64) -> String {
    size_kib((bytes / 1024) as i64)
}

/// ```text
///   3.1s cgroup /sys/fs/cgroup/unified/app: 3 members, 120.0 MiB (memory.usage_in_bytes of /sys/fs/cgroup/memory/app)
///                      ANON     SHMEM      FILE    KERNEL
///          mapped   16.0 MiB     0 KiB   1.2 MiB         -
///          not mapped      -  64.0 MiB     0 KiB   1.0 MiB
///          unmapped files: /dev/shm/cache 64.0 MiB
/// ```
pub fn table(t: &str, c: &CgroupRecord) -> String {
    let pad = " ".repeat(t.len());
    let usage = match (c.memory_current_bytes, c.usage_in_bytes, &c.memory_source) {
        (Some(b), _, Some(src)) => format!("{} (memory.current of {src})", size(b)),
        (_, Some(b), Some(src)) => format!("{} (memory.usage_in_bytes of {src})", size(b)),
        _ => format!("memory unknown ({})", c.no_memory_cgroup.unwrap_or("no memory cgroup found for its members")),
    };
    let mut s = format!("{t} cgroup {}: {} members, {usage}", c.path, c.members);
    let (e, u) = (&c.explained, &c.unmapped);
    let _ = write!(s, "\n{pad}                 {:>10}{:>10}{:>10}{:>10}", "ANON", "SHMEM", "FILE", "KERNEL");
    let _ = write!(
        s,
        "\n{pad}   mapped        {:>10}{:>10}{:>10}{:>10}",
        size(e.anon_bytes),
        size(e.shmem_bytes),
        size(e.file_bytes),
        "-"
    );
    if c.memory_source.is_some() {
        let _ = write!(
            s,
            "\n{pad}   not mapped    {:>10}{:>10}{:>10}{:>10}",
            "-",
            size(u.shmem_bytes),
            size(u.file_bytes),
            size(u.kernel_bytes)
        );
    }
    if !c.files.is_empty() {
        let files: Vec<String> = c.files.iter().map(|f| format!("{} {}", f.path, size(f.bytes))).collect();
        let _ = write!(s, "\n{pad}   unmapped files: {}", files.join(", "));
    }
    s
}

pub fn leak(t: &str, l: &CgroupLeak) -> String {
    if l.state == "withdrawn" {
        return format!("{t} cgroup {}: leak verdict withdrawn (no growth for {:.0}s)", l.path, l.window_s);
    }
    let mut s = format!(
        "{t} cgroup {}: LEAK {}/s of {} for {:.0}s (+{}), {} of it mapped by no member; {} grew {}, confidence {:.2}",
        l.path,
        size_kib(l.rate_kib_s as i64),
        l.metric,
        l.window_s,
        size_kib(l.growth_kib),
        size_kib(l.unexplained_kib),
        l.stat_line,
        size_kib(l.stat_growth_kib),
        l.confidence
    );
    if !l.files.is_empty() {
        let _ = write!(s, "\n{} unmapped files: {}", " ".repeat(t.len()), l.files.join(", "));
    }
    s
}
