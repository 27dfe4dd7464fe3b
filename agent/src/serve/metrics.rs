//! The metrics `agent serve` exports (their names and labels are a contract), registered once
//! with prometheus-client, and their two text formats: OpenMetrics, and the classic 0.0.4
//! format derived from it.
use std::sync::atomic::AtomicU64;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

/// `{group, kind}`: memory and faulted bytes of a group.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GroupKind {
    pub group: String,
    pub kind: &'static str,
}

/// `{group}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Group {
    pub group: String,
}

/// `{group, pid, comm, mapping, metric}`: the only series with a pid, present while it is
/// flagged.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Leak {
    pub group: String,
    pub pid: u32,
    pub comm: String,
    pub mapping: String,
    pub metric: &'static str,
}

/// `{program}`: one of the agent's eBPF programs.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Program {
    pub program: String,
}

pub type GaugeF = Gauge<f64, AtomicU64>;
pub type CounterF = Counter<f64, AtomicU64>;

/// The memory kinds of `agent_memory_bytes` (hugetlb: pages mapped, which smaps leaves out of
/// the other figures).
pub const MEMORY_KINDS: [&str; 5] = ["rss", "pss", "uss", "swap", "hugetlb"];
/// The fault kinds of `agent_faulted_bytes_total`.
pub const FAULT_KINDS: [&str; 4] = ["anon", "file", "shmem", "hugetlb"];

/// Every family, cheap to clone (each is shared with the registry).
#[derive(Clone, Default)]
pub struct Metrics {
    pub memory: Family<GroupKind, Gauge>,
    pub faulted: Family<GroupKind, Counter>,
    pub processes: Family<Group, Gauge>,
    pub leak_rate: Family<Leak, GaugeF>,
    pub leak_verdicts: Family<Group, Counter>,
    pub events_lost: Counter,
    pub smaps_read_seconds: CounterF,
    pub cpu_seconds: CounterF,
    pub resident: Gauge,
    pub host_memory: Gauge,
    pub ebpf_run_seconds: Family<Program, CounterF>,
}

impl Metrics {
    /// The families, and the registry a scrape encodes. `agent_ebpf_run_seconds_total` is
    /// registered only with `--bpf-stats`.
    pub fn register(bpf_stats: bool) -> (Metrics, Registry) {
        let m = Metrics::default();
        let mut r = Registry::default();
        r.register(
            "agent_memory_bytes",
            "Memory of the group's live processes, summed from their latest smaps_rollup readings",
            m.memory.clone(),
        );
        r.register(
            "agent_faulted_bytes",
            "Bytes the group's page faults added to RSS, by the kind of page",
            m.faulted.clone(),
        );
        r.register("agent_processes", "Live watched processes of the group", m.processes.clone());
        r.register(
            "agent_leak_bytes_per_second",
            "Growth rate of a process under a standing leak verdict, into its fastest-growing mapping",
            m.leak_rate.clone(),
        );
        r.register("agent_leak_verdicts", "Leak verdicts flagged in the group", m.leak_verdicts.clone());
        r.register("agent_events_lost", "Kernel records lost to a full ring buffer", m.events_lost.clone());
        r.register("agent_smaps_read_seconds", "Wall time the agent spent reading smaps", m.smaps_read_seconds.clone());
        r.register("agent_cpu_seconds", "CPU time (user and system) the agent used", m.cpu_seconds.clone());
        r.register("agent_resident_bytes", "The agent's own resident memory", m.resident.clone());
        r.register(
            "agent_host_memory_bytes",
            "The host's memory (MemTotal), what the predicted-OOM rule compares a group with",
            m.host_memory.clone(),
        );
        m.host_memory.set(mem_total_bytes() as i64);
        if bpf_stats {
            r.register(
                "agent_ebpf_run_seconds",
                "Time the kernel spent running each of the agent's eBPF programs",
                m.ebpf_run_seconds.clone(),
            );
        }
        (m, r)
    }
}

/// MemTotal of /proc/meminfo, read once at the start.
fn mem_total_bytes() -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let line = text.lines().find(|l| l.starts_with("MemTotal:")).unwrap_or("");
    line.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0) * 1024
}

/// Raise a counter to `total` (a running total kept elsewhere); never lowers it.
pub fn raise_to(c: &CounterF, total: f64) {
    let now = c.get();
    if total > now {
        c.inc_by(total - now);
    }
}

/// The registry in OpenMetrics text (ends with `# EOF`), each family's samples sorted (a
/// family keeps them in hash order): a scrape reads the same from one time to the next.
pub fn openmetrics(r: &Registry) -> String {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, r).expect("encoding into a String cannot fail");
    let mut out = String::with_capacity(text.len());
    let mut samples: Vec<&str> = Vec::new();
    for l in text.lines() {
        if l.starts_with('#') {
            samples.sort_unstable();
            for s in samples.drain(..) {
                out.push_str(s);
                out.push('\n');
            }
            out.push_str(l);
            out.push('\n');
        } else {
            samples.push(l);
        }
    }
    out
}

/// OpenMetrics text turned into the classic text format 0.0.4: a counter family is named by
/// its `_total` samples in `# HELP`/`# TYPE` (classic parsers such as promtool otherwise see
/// samples with no help and no type), `# UNIT` and `# EOF` go, and types the classic format
/// lacks become `untyped`.
pub fn classic(openmetrics: &str) -> String {
    let mut counters: Vec<String> = Vec::new();
    for l in openmetrics.lines() {
        if let Some((name, "counter")) = l.strip_prefix("# TYPE ").and_then(|r| r.split_once(' ')) {
            counters.push(name.to_string());
        }
    }
    let mut out = String::with_capacity(openmetrics.len());
    for l in openmetrics.lines() {
        if l == "# EOF" || l.starts_with("# UNIT ") {
            continue;
        }
        let desc = ["# HELP ", "# TYPE "].into_iter().find(|p| l.starts_with(p));
        match desc {
            Some(p) => {
                let (name, rest) = l[p.len()..].split_once(' ').unwrap_or((&l[p.len()..], ""));
                let name = if counters.iter().any(|c| c == name) { format!("{name}_total") } else { name.to_string() };
                let rest = match (p, rest) {
                    ("# TYPE ", "counter" | "gauge" | "histogram" | "summary") => rest,
                    ("# TYPE ", _) => "untyped",
                    _ => rest,
                };
                out.push_str(&format!("{p}{name} {rest}\n"));
            }
            None => {
                out.push_str(l);
                out.push('\n');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (Metrics, Registry) {
        let (m, r) = Metrics::register(true);
        m.memory.get_or_create(&GroupKind { group: "nginx".into(), kind: "pss" }).set(4096);
        m.faulted.get_or_create(&GroupKind { group: "nginx".into(), kind: "anon" }).inc_by(8192);
        m.leak_rate
            .get_or_create(&Leak {
                group: "nginx".into(),
                pid: 7,
                comm: "nginx".into(),
                mapping: "[heap]".into(),
                metric: "uss",
            })
            .set(1024.5);
        raise_to(&m.cpu_seconds, 1.25);
        raise_to(&m.cpu_seconds, 1.0);
        m.ebpf_run_seconds.get_or_create(&Program { program: "rss_stat".into() }).inc_by(0.5);
        (m, r)
    }

    #[test]
    fn openmetrics_names_counters_by_family_and_ends_with_eof() {
        let text = openmetrics(&sample().1);
        assert!(text.contains("# TYPE agent_faulted_bytes counter\n"), "{text}");
        assert!(text.contains("agent_faulted_bytes_total{group=\"nginx\",kind=\"anon\"} 8192\n"), "{text}");
        assert!(text.contains("agent_cpu_seconds_total 1.25\n"), "raise_to never lowers: {text}");
        assert!(text.contains("pid=\"7\""), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn samples_come_sorted_within_their_family() {
        let (m, r) = sample();
        for g in ["zsh", "bash", "nginx"] {
            m.processes.get_or_create(&Group { group: g.into() }).set(1);
        }
        let text = openmetrics(&r);
        let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("agent_processes{")).collect();
        assert_eq!(
            lines,
            [
                "agent_processes{group=\"bash\"} 1",
                "agent_processes{group=\"nginx\"} 1",
                "agent_processes{group=\"zsh\"} 1"
            ]
        );
    }

    #[test]
    fn classic_names_counters_by_their_samples_and_drops_eof() {
        let text = classic(&openmetrics(&sample().1));
        assert!(text.contains("# HELP agent_faulted_bytes_total Bytes"), "{text}");
        assert!(text.contains("# TYPE agent_faulted_bytes_total counter\n"), "{text}");
        assert!(text.contains("# TYPE agent_memory_bytes gauge\n"), "{text}");
        assert!(text.contains("agent_memory_bytes{group=\"nginx\",kind=\"pss\"} 4096\n"), "{text}");
        assert!(!text.contains("# EOF"), "{text}");
        // Every sample's family has a TYPE line under the sample's own name (or its _total).
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let name = l.split(['{', ' ']).next().unwrap();
            assert!(text.contains(&format!("# TYPE {name} ")), "no TYPE for {name}: {text}");
        }
    }

    #[test]
    fn without_bpf_stats_no_program_family() {
        let (_, r) = Metrics::register(false);
        assert!(!openmetrics(&r).contains("agent_ebpf_run_seconds"));
    }
}
