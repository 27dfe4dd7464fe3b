//! Load and attach: one table of the programs and their tracepoints. Field offsets come from
//! tracefs `format` files and are written into the programs' globals before load. A missing
//! essential tracepoint is an error; a missing optional one is reported and skipped.
use std::path::Path;

use aya::{programs::TracePoint, Ebpf, EbpfLoader};

use crate::{
    error::AgentError,
    tracefs::{self, Format},
};

pub struct Hook {
    pub program: &'static str,
    pub category: &'static str,
    pub name: &'static str,
    pub essential: bool,
    /// (global in the eBPF object, field of the tracepoint)
    pub fields: &'static [(&'static str, &'static str)],
}

pub const HOOKS: &[Hook] = &[
    Hook {
        program: "page_fault_user",
        category: "exceptions",
        name: "page_fault_user",
        essential: true,
        fields: &[("PF_ADDR", "address"), ("PF_ERR", "error_code")],
    },
    Hook {
        program: "rss_stat",
        category: "kmem",
        name: "rss_stat",
        essential: true,
        fields: &[("RSS_MM_ID", "mm_id"), ("RSS_CURR", "curr"), ("RSS_MEMBER", "member"), ("RSS_SIZE", "size")],
    },
    Hook {
        program: "sched_process_fork",
        category: "sched",
        name: "sched_process_fork",
        essential: true,
        fields: &[("FORK_CHILD_PID", "child_pid")],
    },
    Hook {
        program: "sched_process_exit",
        category: "sched",
        name: "sched_process_exit",
        essential: true,
        fields: &[("EXIT_GROUP_DEAD", "group_dead")],
    },
    Hook {
        program: "sched_process_exec",
        category: "sched",
        name: "sched_process_exec",
        essential: false,
        fields: &[],
    },
    Hook {
        program: "sys_enter",
        category: "raw_syscalls",
        name: "sys_enter",
        essential: false,
        fields: &[("SYS_ID", "id"), ("SYS_ARGS", "args")],
    },
    Hook {
        program: "sys_exit",
        category: "raw_syscalls",
        name: "sys_exit",
        essential: false,
        fields: &[("SYS_RET", "ret")],
    },
    Hook {
        program: "page_fault_kernel",
        category: "exceptions",
        name: "page_fault_kernel",
        essential: false,
        fields: &[],
    },
];

/// Globals of fields the hot programs read directly from the first 32 bytes of the record.
const RAW_FIELDS: &[&str] = &["PF_ADDR", "PF_ERR", "RSS_MM_ID", "RSS_CURR", "RSS_MEMBER", "RSS_SIZE"];

/// Test hook: `AGENT_TEST_MISSING_TRACEPOINT=cat:name` pretends that tracepoint does not exist.
const SIMULATE_MISSING: &str = "AGENT_TEST_MISSING_TRACEPOINT";
/// Test hook: `AGENT_RING_BYTES=N` sizes the ring buffer (a power of two, at least a page), to
/// force overflow and check that every lost record is counted.
const RING_BYTES: &str = "AGENT_RING_BYTES";

pub struct Loaded {
    pub ebpf: Ebpf,
    pub hooks: Vec<String>,
    pub missing: Vec<String>,
}

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/agent"));

fn simulated_missing(h: &Hook) -> bool {
    std::env::var(SIMULATE_MISSING).is_ok_and(|v| v.split(',').any(|t| t == format!("{}:{}", h.category, h.name)))
}

/// Mount tracefs if needed, read the formats, load the object and attach every hook it can.
/// `noop` attaches the do-nothing program to the same tracepoints instead (the cost floor).
pub fn load(noop: bool, stacks: bool) -> Result<Loaded, AgentError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(AgentError::NotRoot);
    }
    let root = tracefs::ensure_mounted()?;
    let mut present = Vec::new();
    let mut missing = Vec::new();
    let mut globals: Vec<(&'static str, u32)> = Vec::new();
    for h in HOOKS {
        let fmt = if simulated_missing(h) { None } else { Format::read(&root, h.category, h.name) };
        let offsets: Option<Vec<_>> = fmt
            .as_ref()
            .map(|f| h.fields.iter().map(|&(g, field)| f.offset(field).map(|o| (g, o))).collect())
            .unwrap_or(None);
        match offsets {
            Some(o) => {
                globals.extend(o);
                present.push(h);
            }
            None if h.essential => {
                return Err(AgentError::TracepointMissing(
                    format!("{}:{}", h.category, h.name),
                    tracepoint_dir(&root, h),
                ));
            }
            None => missing.push(format!("{}:{} (not in {})", h.category, h.name, tracepoint_dir(&root, h))),
        }
    }
    // These fields are read straight from the record (bytes 8..32, see agent-ebpf Raw); a
    // kernel that lays them out elsewhere is refused rather than misread.
    for (g, off) in &globals {
        if RAW_FIELDS.contains(g) && !(8..32).contains(off) {
            return Err(AgentError::Load(format!(
                "this kernel puts tracepoint field {g} at offset {off}; the agent reads these from bytes 8..32"
            )));
        }
    }
    let mut loader = EbpfLoader::new();
    let stacks_on = u32::from(stacks);
    loader.override_global("STACKS_ON", &stacks_on, true);
    if let Some(bytes) = std::env::var(RING_BYTES).ok().and_then(|v| v.parse::<u32>().ok()) {
        loader.map_max_entries(agent_common::names::EVENTS, bytes);
    }
    for (g, v) in &globals {
        loader.override_global(g, v, true);
    }
    let mut ebpf = loader.load(OBJECT).map_err(|e| AgentError::Load(format!("{e:#}")))?;
    let mut hooks = Vec::new();
    for h in present {
        let prog_name = if noop { "noop" } else { h.program };
        let prog: &mut TracePoint = ebpf
            .program_mut(prog_name)
            .ok_or_else(|| AgentError::Load(format!("program {prog_name} not in the object")))?
            .try_into()
            .map_err(|e| AgentError::Load(format!("{prog_name}: {e}")))?;
        if prog.fd().is_err() {
            prog.load().map_err(|e| AgentError::Load(format!("{prog_name}: {e:#}")))?;
        }
        match prog.attach(h.category, h.name) {
            Ok(_) => hooks.push(h.name.to_string()),
            Err(e) if h.essential => {
                return Err(AgentError::Load(format!("attaching {}:{} failed: {e}", h.category, h.name)));
            }
            Err(e) => missing.push(format!("{}:{} ({e})", h.category, h.name)),
        }
    }
    for m in &missing {
        log::warn!("optional tracepoint unavailable, going on without it: {m}");
    }
    Ok(Loaded { ebpf, hooks, missing })
}

/// Turn on the kernel's per-program run statistics for as long as the returned fd lives (they
/// cost two clock reads per program run, so they are opt-in).
pub fn enable_stats() -> Option<std::os::fd::OwnedFd> {
    aya::sys::enable_stats(aya::sys::Stats::RunTime)
        .map_err(|e| log::warn!("cannot enable BPF run-time statistics: {e}"))
        .ok()
}

/// Runs and run time of each loaded program (only counted while statistics are on).
pub fn program_stats(ebpf: &Ebpf) -> Vec<crate::record::ProgStat> {
    let mut v: Vec<_> = ebpf
        .programs()
        .filter_map(|(name, p)| {
            let i = p.info().ok()?;
            let (runs, run_ns) = (i.run_count(), i.run_time().as_nanos() as u64);
            let ns_per_run = if runs > 0 { (run_ns as f64 / runs as f64 * 10.0).round() / 10.0 } else { 0.0 };
            (runs > 0).then(|| crate::record::ProgStat { name: name.to_string(), runs, run_ns, ns_per_run })
        })
        .collect();
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v
}

fn tracepoint_dir(root: &Path, h: &Hook) -> String {
    root.join("events").join(h.category).join(h.name).display().to_string()
}
