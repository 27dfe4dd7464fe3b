//! Load and attach: one table of the programs and their tracepoints. Field offsets come from
//! tracefs `format` files and are written into the programs' globals before load. A missing
//! essential tracepoint is an error; a missing optional one is reported and skipped.
use std::path::Path;

use aya::{programs::TracePoint, Ebpf, EbpfLoader};

use crate::{
    error::AgentError,
    kernel::{
        btf,
        fault_source::{self, FaultSource},
        shmem_count,
        syscall_hooks::{self, SyscallHooks},
        tracefs::{self, Format},
    },
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
        fields: &[("EXEC_FILENAME", "filename")],
    },
    // The exits of the mapping syscalls and opens only (agent-ebpf sys_exit.rs): no program
    // runs on any other syscall (the rss changes a syscall makes take its number from the
    // task's registers).
    sys_exit("sys_exit_mmap"),
    sys_exit("sys_exit_munmap"),
    sys_exit("sys_exit_mremap"),
    sys_exit("sys_exit_brk"),
    sys_exit("sys_exit_mprotect"),
    sys_exit("sys_exit_madvise"),
    sys_exit("sys_exit_open"),
    sys_exit("sys_exit_openat"),
    sys_exit("sys_exit_openat2"),
    // `--syscall-hooks off` instead of the syscall exits (agent-ebpf unmapped_area.rs): where a
    // new mapping goes, from a tracepoint that puts no task on the traced-syscall path.
    Hook {
        program: syscall_hooks::AREA_PROGRAM,
        category: "mmap",
        name: "vm_unmapped_area",
        essential: false,
        fields: &[("AREA_ADDR", "addr"), ("AREA_LEN", "length")],
    },
    Hook {
        program: syscall_hooks::LOCK_PROGRAM,
        category: "mmap_lock",
        name: "mmap_lock_released",
        essential: false,
        fields: &[("MMAP_LOCK_WRITE", "write")],
    },
    // `--cgroup`: moves into and out of watched cgroups, on any hierarchy (agent-ebpf
    // cgroup_attach.rs; returns at once without --cgroup).
    Hook {
        program: "cgroup_attach",
        category: "cgroup",
        name: "cgroup_attach_task",
        essential: false,
        fields: &[("ATTACH_ROOT", "dst_root"), ("ATTACH_ID", "dst_id"), ("ATTACH_PID", "pid")],
    },
    Hook {
        program: "page_fault_kernel",
        category: "exceptions",
        name: "page_fault_kernel",
        essential: false,
        fields: &[],
    },
    Hook {
        program: "oom_mark_victim",
        category: "oom",
        name: "mark_victim",
        essential: false,
        fields: &[
            ("OOM_PID", "pid"),
            ("OOM_COMM", "comm"),
            ("OOM_TOTAL_VM", "total_vm"),
            ("OOM_ANON_RSS", "anon_rss"),
            ("OOM_FILE_RSS", "file_rss"),
            ("OOM_SHMEM_RSS", "shmem_rss"),
            ("OOM_UID", "uid"),
            ("OOM_PGTABLES", "pgtables"),
            ("OOM_SCORE_ADJ", "oom_score_adj"),
        ],
    },
    // Shmem pages each watched pid created (see kernel/shmem_count.rs); needs NR_SHMEM from BTF.
    Hook {
        program: shmem_count::PROGRAM,
        category: "memcg",
        name: "mod_memcg_lruvec_state",
        essential: false,
        fields: &[("MEMCG_ITEM", "item"), ("MEMCG_VAL", "val")],
    },
];

/// A `syscalls:sys_exit_*` hook of the sys_exit program (every such tracepoint has the same
/// two fields).
const fn sys_exit(name: &'static str) -> Hook {
    Hook {
        program: "sys_exit",
        category: "syscalls",
        name,
        essential: false,
        fields: &[("SYS_ID", "__syscall_nr"), ("SYS_RET", "ret")],
    }
}

/// Globals of fields the hot programs read directly from the first 32 bytes of the record.
const RAW_FIELDS: &[&str] = &["PF_ADDR", "PF_ERR", "RSS_MM_ID", "RSS_CURR", "RSS_MEMBER", "RSS_SIZE"];

/// What to load, and the knobs tests turn through the library (never the environment).
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Record the user stack of page-adding faults (`--stacks`).
    pub stacks: bool,
    /// Tracepoints (`category:name`) to treat as missing from this kernel: how a test checks
    /// that an optional hook degrades and an essential one refuses.
    pub simulate_missing: Vec<String>,
    /// Max entries of BPF maps by name: a one-page ring to force overflow, a tiny map to force
    /// a map-full diagnostic.
    pub map_sizes: Vec<(String, u32)>,
    /// `--fault-source`; None: the tracepoint where this kernel has it, else perf.
    pub fault_source: Option<FaultSource>,
    /// `--cgroup` on v2: bit L set when a watched cgroup is at level L (0: none; see agent-ebpf
    /// cgroup.rs).
    pub cgroup_levels: u32,
    /// `--cgroup`: bit R set when hierarchy R (0: v2) holds a watched cgroup (0: none; see
    /// agent-ebpf cgroup_attach.rs).
    pub cgroup_roots: u32,
    /// `--syscall-hooks`: the mapping syscalls' exits, or none (see kernel/syscall_hooks.rs).
    pub syscall_hooks: SyscallHooks,
}

pub struct Loaded {
    pub ebpf: Ebpf,
    pub hooks: Vec<String>,
    pub missing: Vec<String>,
    /// The perf fault source's events (dropping them detaches it); None with the tracepoint.
    pub perf_faults: Option<fault_source::PerfFaults>,
}

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/agent"));

/// Mount tracefs if needed, read the formats, load the object and attach every hook it can.
pub fn load(opts: &LoadOptions) -> Result<Loaded, AgentError> {
    load_object(OBJECT, opts, true, |h| h.program)
}

/// The cost floor of `cargo xtask bench`: a do-nothing program (its own object, not shipped in
/// the agent) attached to exactly the agent's tracepoints.
#[cfg(feature = "floor")]
pub fn load_floor() -> Result<Loaded, AgentError> {
    static FLOOR: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/floor"));
    load_object(FLOOR, &LoadOptions::default(), false, |_| "noop")
}

/// `own_globals`: the object is the agent's, and must have every global we set.
fn load_object(
    object: &[u8],
    opts: &LoadOptions,
    own_globals: bool,
    program: impl Fn(&Hook) -> &'static str,
) -> Result<Loaded, AgentError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(AgentError::NotRoot);
    }
    let root = tracefs::ensure_mounted()?;
    let mut present = Vec::new();
    let mut missing = Vec::new();
    let mut globals: Vec<(&'static str, u32)> = Vec::new();
    let mut source = FaultSource::Tracepoint;
    // Read and parsed once (5.5 MB here): every program that reads kernel structs takes its
    // offsets from it.
    let btf = btf::Btf::from_sys();
    let nr_shmem = shmem_count::nr_shmem(btf.as_ref());
    for h in HOOKS.iter().filter(|h| syscall_hooks::wanted(h, opts.syscall_hooks)) {
        if let (shmem_count::PROGRAM, Err(why)) = (h.program, &nr_shmem) {
            missing.push(format!("{}:{} ({why}): {}", h.category, h.name, shmem_count::FALLBACK));
            continue;
        }
        let simulated = opts.simulate_missing.iter().any(|t| *t == format!("{}:{}", h.category, h.name));
        let fmt = if simulated { None } else { Format::read(&root, h.category, h.name) };
        let offsets: Option<Vec<_>> = fmt
            .as_ref()
            .map(|f| h.fields.iter().map(|&(g, field)| f.offset(field).map(|o| (g, o))).collect())
            .unwrap_or(None);
        // page_fault_user is the fault source's to decide (its offsets still serve page_fault_kernel).
        let fault_tp = h.program == fault_source::TRACEPOINT_PROGRAM;
        if fault_tp {
            source = fault_source::choose(opts.fault_source, offsets.is_some(), &tracepoint_dir(&root, h))?;
        }
        match offsets {
            Some(o) if h.program == shmem_count::PROGRAM && !shmem_count::offsets_ok(&o) => missing.push(format!(
                "{}:{} (fields past the 24 bytes its program reads: {o:?}): {}",
                h.category,
                h.name,
                shmem_count::FALLBACK
            )),
            Some(o) => {
                globals.extend(o);
                if !(fault_tp && source == FaultSource::Perf) {
                    present.push(h);
                }
            }
            // Missing: the perf source stands in (fault_source::choose).
            None if fault_tp => {}
            None if h.essential => {
                return Err(AgentError::TracepointMissing(
                    format!("{}:{}", h.category, h.name),
                    tracepoint_dir(&root, h),
                ));
            }
            None if h.program == shmem_count::PROGRAM => missing.push(format!(
                "{}:{} (not in {}): {}",
                h.category,
                h.name,
                tracepoint_dir(&root, h),
                shmem_count::FALLBACK
            )),
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
        // One program on several tracepoints (sys_exit) reads one offset for all of them.
        if let Some((_, other)) = globals.iter().find(|(g2, o2)| g2 == g && o2 != off) {
            return Err(AgentError::Load(format!(
                "tracepoints sharing a program put field {g} at offsets {off} and {other}"
            )));
        }
    }
    let mut loader = EbpfLoader::new();
    let stacks_on = u32::from(opts.stacks);
    loader.override_global("STACKS_ON", &stacks_on, own_globals);
    loader.override_global("CGROUP_LEVELS", &opts.cgroup_levels, own_globals);
    loader.override_global("CGROUP_ROOTS", &opts.cgroup_roots, own_globals);
    for (name, entries) in &opts.map_sizes {
        loader.map_max_entries(name, *entries);
    }
    for (g, v) in &globals {
        loader.override_global(g, v, own_globals);
    }
    if let Ok(v) = &nr_shmem {
        loader.override_global("NR_SHMEM", v, own_globals);
    }
    // `--syscall-hooks off`: a file mmap's inode, read through its fd (agent-ebpf unmapped_area.rs).
    let file_offsets = match opts.syscall_hooks {
        SyscallHooks::Off if own_globals => syscall_hooks::file_offsets(btf.as_ref()),
        _ => Vec::new(),
    };
    for (g, v) in &file_offsets {
        loader.override_global(g, v, true);
    }
    let exec_mm = exec_mm_offsets(btf.as_ref());
    for (g, v) in &exec_mm {
        loader.override_global(g, v, own_globals);
    }
    // hugetlb pages (no rss_stat) are read from the mm after a quiet fault; it needs TASK_MM.
    let hugetlb_usage = crate::kernel::hugetlb::usage_offset(btf.as_ref().filter(|_| !exec_mm.is_empty()));
    if let Some(off) = &hugetlb_usage {
        loader.override_global("MM_HUGETLB_USAGE", off, own_globals);
    }
    drop(btf);
    let mut ebpf = loader.load(object).map_err(|e| AgentError::Load(format!("{e:#}")))?;
    let mut hooks = Vec::new();
    for h in present {
        let prog_name = program(h);
        let prog: &mut TracePoint = ebpf
            .program_mut(prog_name)
            .ok_or_else(|| AgentError::Load(format!("program {prog_name} not in the object")))?
            .try_into()
            .map_err(|e| AgentError::Load(format!("{prog_name}: {e}")))?;
        if prog.fd().is_err() {
            prog.load().map_err(|e| AgentError::Load(format!("{prog_name}: {e:#}")))?;
        }
        match prog.attach(h.category, h.name) {
            // Attached on demand, while a watched process maps a shared segment (see
            // kernel/shmem_count.rs): checked here, then detached until then.
            Ok(link) if h.program == shmem_count::PROGRAM => {
                let _ = prog.detach(link);
                hooks.push(h.name.to_string())
            }
            Ok(_) => hooks.push(h.name.to_string()),
            Err(e) if h.essential => {
                return Err(AgentError::Load(format!("attaching {}:{} failed: {e}", h.category, h.name)));
            }
            Err(e) if h.program == shmem_count::PROGRAM => {
                missing.push(format!("{}:{} ({e}): {}", h.category, h.name, shmem_count::FALLBACK))
            }
            Err(e) => missing.push(format!("{}:{} ({e})", h.category, h.name)),
        }
    }
    for m in &missing {
        log::warn!("optional tracepoint unavailable, going on without it: {m}");
    }
    if opts.syscall_hooks == SyscallHooks::Off {
        missing.push(syscall_hooks::OFF_LOSES.to_string());
    }
    let perf_faults = match source {
        FaultSource::Perf => Some(fault_source::attach_perf(&mut ebpf, &mut hooks, &mut missing)?),
        FaultSource::Tracepoint => None,
    };
    Ok(Loaded { ebpf, hooks, missing, perf_faults })
}

/// Globals of the exec program's mm reads: (global, struct, member).
const EXEC_MM_FIELDS: &[(&str, &str, &str)] = &[
    ("TASK_MM", "task_struct", "mm"),
    ("MM_START_CODE", "mm_struct", "start_code"),
    ("MM_END_CODE", "mm_struct", "end_code"),
    ("MM_START_DATA", "mm_struct", "start_data"),
    ("MM_END_DATA", "mm_struct", "end_data"),
    ("MM_START_BRK", "mm_struct", "start_brk"),
    ("MM_START_STACK", "mm_struct", "start_stack"),
    ("MM_ENV_END", "mm_struct", "env_end"),
    ("MM_SAVED_AUXV", "mm_struct", "saved_auxv"),
];

/// The exec program's struct offsets from the kernel's BTF; empty (the exec layout record off,
/// said once here) when the BTF or one of the members is missing.
fn exec_mm_offsets(btf: Option<&btf::Btf>) -> Vec<(&'static str, u32)> {
    let Some(btf) = btf else {
        log::info!(
            "no kernel BTF (/sys/kernel/btf/vmlinux): what exec maps is named only while /proc/PID/maps can be read"
        );
        return Vec::new();
    };
    btf.member_offsets(EXEC_MM_FIELDS).unwrap_or_else(|| {
        log::info!("kernel BTF lacks a task_struct/mm_struct member the exec program reads: what exec maps is named only while /proc/PID/maps can be read");
        Vec::new()
    })
}

/// Turn on the kernel's per-program run statistics for as long as the returned fd lives (they
/// cost two clock reads per program run, so they are opt-in).
pub fn enable_stats() -> Option<std::os::fd::OwnedFd> {
    aya::sys::enable_stats(aya::sys::Stats::RunTime)
        .map_err(|e| log::warn!("cannot enable BPF run-time statistics: {e}"))
        .ok()
}

/// Runs and run time of each loaded program (only counted while statistics are on).
pub fn program_stats(ebpf: &Ebpf) -> Vec<crate::records::ProgStat> {
    let mut v: Vec<_> = ebpf
        .programs()
        .filter_map(|(name, p)| {
            let i = p.info().ok()?;
            let (runs, run_ns) = (i.run_count(), i.run_time().as_nanos() as u64);
            let ns_per_run = if runs > 0 { (run_ns as f64 / runs as f64 * 10.0).round() / 10.0 } else { 0.0 };
            (runs > 0).then(|| crate::records::ProgStat { name: name.to_string(), runs, run_ns, ns_per_run })
        })
        .collect();
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v
}

fn tracepoint_dir(root: &Path, h: &Hook) -> String {
    root.join("events").join(h.category).join(h.name).display().to_string()
}
