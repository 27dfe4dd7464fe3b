//! The output records: the JSON-lines contract (`--format json`) and what the human formatter
//! renders. Fields may be added; the ones here stay.
use serde::Serialize;

#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Pages {
    pub anon: i64,
    pub file: i64,
    pub shmem: i64,
    /// Pages of private mappings made private by the pid's own copy-on-write write faults
    /// that no rss counter showed (a page shared with a fork partner, copied): RSS unchanged,
    /// USS up. Not in `total` (which is RSS).
    pub cow: i64,
    /// hugetlb pages mapped, in base pages (a 2 MiB page is 512): never in RSS, so not in
    /// `total`.
    pub hugetlb: i64,
}

impl Pages {
    /// Pages added to RSS.
    pub fn total(&self) -> i64 {
        self.anon + self.file + self.shmem
    }
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct MappingStat {
    pub mapping: String,
    pub shared: bool,
    pub faults: u64,
    pub pages: i64,
    /// Pages made private by copy-on-write (see `Pages::cow`).
    pub cow: i64,
}

/// A user stack and the pages its faults added.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct StackStat {
    pub pages: i64,
    /// Leaf first: `fn (file:line)`, or `module+0xoffset` when it cannot be named.
    pub frames: Vec<String>,
}

/// Stack depth distribution (frames per stack: shallow stacks mean missing frame pointers).
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct StackSummary {
    /// Stacks per depth bucket, shallowest first.
    pub depths: Vec<DepthBucket>,
    pub errors: u64,
    /// The unprivileged symbolizer helper: requests, crashes, timeouts, restarts, unanswered.
    pub symbolizer: crate::stacks::helper::HelperStats,
}

#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct DepthBucket {
    pub frames: &'static str,
    pub stacks: u64,
}

/// The agent's own cost over the run.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct AgentCost {
    /// User + system CPU seconds, and per second of watching.
    pub cpu_s: f64,
    pub cpu_per_s: f64,
    pub max_rss_kib: u64,
    /// smaps_rollup reads and the wall time they took in all.
    pub smaps_reads: u64,
    pub smaps_read_s: f64,
    /// The CPU time of those reads (the page-table walks): what `--smaps-budget` holds.
    pub smaps_cpu_s: f64,
    /// `--smaps-budget` (percent of one CPU), the smaps CPU seconds it allowed over the run,
    /// and `smaps_cpu_s` / allowed (the schedule holds it under 1.2 over any 60 s).
    pub smaps_budget_pct: f64,
    pub smaps_allowed_s: f64,
    pub smaps_budget_used: f64,
    /// `/proc/PID/maps` reads (a process seen first, a lookup miss, a file mmap) and the wall
    /// time they took in all.
    pub maps_reads: u64,
    pub maps_read_s: f64,
    /// With --bpf-stats: each of the agent's eBPF programs, its runs and time in the kernel.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub programs: Vec<ProgStat>,
}

/// One eBPF program's kernel run statistics (BPF_ENABLE_STATS).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ProgStat {
    pub name: String,
    pub runs: u64,
    pub run_ns: u64,
    pub ns_per_run: f64,
}

/// Why a pid's PSS/USS moved between two readings.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Explain {
    pub delta_rss_kib: i64,
    pub delta_pss_kib: i64,
    pub delta_uss_kib: i64,
    /// Net KiB its own faults added to private mappings, and to shared ones (the ledger at the
    /// ring poll nearest each reading).
    pub faulted_private_kib: i64,
    pub faulted_shared_kib: i64,
    /// KiB its own copy-on-write write faults made private without adding to RSS (a page
    /// shared with a fork partner, copied): USS grows, RSS does not (the ledger when each
    /// reading was processed).
    pub cow_kib: i64,
    /// Net KiB of other own causes (negative: munmap, madvise, reclaim).
    pub released_kib: i64,
    /// PSS change that its own RSS change does not account for (delta PSS - delta RSS): other
    /// processes mapping or unmapping pages it shares (a sibling's exit raises it; a new sharer
    /// lowers it), and its own faults into pages others map (they add a page of RSS and a
    /// fraction of one to PSS).
    pub sharing_kib: i64,
}

/// Net pages by a cause other than a fault.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Causes {
    /// Inside a syscall: MAP_POPULATE, munmap, madvise, mlock...
    pub syscall: i64,
    /// The process's own mm teardown (exit, or the old image at exec).
    pub exit: i64,
    /// Another task changed this mm: reclaim, khugepaged...
    pub remote: i64,
    pub other: i64,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct MemStat {
    pub rss_kib: u64,
    pub pss_kib: u64,
    pub uss_kib: u64,
    pub pss_anon_kib: u64,
    pub pss_file_kib: u64,
    pub pss_shmem_kib: u64,
    pub swap_kib: u64,
    /// hugetlb pages mapped (`Shared_Hugetlb` + `Private_Hugetlb`): smaps leaves them out of
    /// Rss, Pss and the Private_* fields, so they are in none of the figures above.
    pub hugetlb_kib: u64,
    pub shared_hugetlb_kib: u64,
    pub private_hugetlb_kib: u64,
}

/// The kernel's own accounting (full `/proc/PID/smaps`) of the VMAs that hold a mapping.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct VmaStat {
    pub vmas: u32,
    pub size_kib: u64,
    pub rss_kib: u64,
    pub pss_kib: u64,
    pub uss_kib: u64,
    pub swap_kib: u64,
    /// hugetlb pages mapped there (in none of the figures above).
    pub hugetlb_kib: u64,
}

#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct ProcSummary {
    pub pid: u32,
    pub comm: String,
    pub faults: u64,
    pub pages: Pages,
    /// Pages added or removed by other causes (syscalls such as MAP_POPULATE/munmap/madvise,
    /// exit teardown, reclaim).
    pub other_pages: i64,
    /// `other_pages` by cause.
    pub causes: Causes,
    pub peak_uss_kib: u64,
    pub last_pss_kib: u64,
    pub mappings: Vec<MappingStat>,
    /// A leak verdict stands for this pid at the end (or stood when it exited); its last rate.
    pub leak: bool,
    pub leak_rate_kib_s: Option<f64>,
    /// Every verdict of this pid, oldest first: when it was flagged and, if it was, withdrawn.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub verdicts: Vec<VerdictSpan>,
    /// With --stacks, for flagged pids and the biggest faulters: their top stacks.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stacks: Vec<StackStat>,
}

/// One leak verdict of a pid (times in seconds since the watch start, of the readings that
/// flagged and withdrew it).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct VerdictSpan {
    pub flagged_at: f64,
    /// `null` while it stands.
    pub withdrawn_at: Option<f64>,
    /// Why it was withdrawn: `fell_back` or `stalled`.
    pub reason: Option<&'static str>,
    /// Its last rate.
    pub rate_kib_s: f64,
}

/// The OOM killer's victim as the kernel described it when it chose it (`oom:mark_victim`),
/// in KiB.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct OomKernel {
    pub total_vm_kib: u64,
    pub anon_rss_kib: u64,
    pub file_rss_kib: u64,
    pub shmem_rss_kib: u64,
    pub pgtables_kib: u64,
    pub uid: u32,
    pub oom_score_adj: i32,
}

/// A leak verdict a process had when it was killed (its last flagged trend).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct LeakVerdict {
    pub rate_kib_s: f64,
    pub metric: &'static str,
    pub window_s: f64,
    pub growth_kib: i64,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Record {
    Start {
        targets: Vec<u32>,
        hooks: Vec<String>,
        /// Optional hooks that could not be attached, with the reason.
        missing_hooks: Vec<String>,
        /// `--cgroup`: each watched cgroup, its hierarchy and how joins are followed.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        cgroups: Vec<String>,
    },
    Proc {
        pid: u32,
        ppid: u32,
        comm: String,
        /// `fork`, `exec`, `exit`; with `--cgroup`, `join` (it entered a watched cgroup) and
        /// `left` (it left them all: no longer watched).
        event: &'static str,
        /// Its cgroup path, and the pod uid / container id that path names.
        #[serde(flatten)]
        labels: crate::targets::cgroup_labels::Labels,
    },
    Faults {
        pid: u32,
        comm: String,
        interval_s: f64,
        faults: u64,
        pages: Pages,
        mappings: Vec<MappingStat>,
        /// The pid's latest smaps reading, for the human line (the JSON stream has it in `mem`
        /// records).
        #[serde(skip)]
        last_mem: Option<MemStat>,
    },
    Mem {
        pid: u32,
        comm: String,
        /// Which smaps sweep this reading belongs to (readings of one sweep are comparable).
        sweep: u64,
        /// How old this pid's previous reading was when this one was taken, seconds (absent on
        /// its first): the `--smaps-budget` schedule reads costly, quiet pids less often.
        #[serde(skip_serializing_if = "Option::is_none")]
        prev_age_s: Option<f64>,
        #[serde(flatten)]
        mem: MemStat,
        /// RSS by the eBPF ledger (the rss_stat counters), and its difference from smaps Rss.
        ledger_rss_kib: Option<i64>,
        drift_kib: Option<i64>,
        /// hugetlb KiB the ledger has from the kernel's hugetlb counter (to compare with this
        /// reading's `hugetlb_kib`), for a pid with hugetlb pages.
        #[serde(skip_serializing_if = "Option::is_none")]
        ledger_hugetlb_kib: Option<i64>,
        /// What moved PSS/USS since this pid's previous reading (absent on the first).
        #[serde(skip_serializing_if = "Option::is_none")]
        explain: Option<Explain>,
        /// Live watched processes on the same mm (`clone(CLONE_VM)` without `CLONE_THREAD`,
        /// vfork): smaps and the ledger both count the whole mm for each of them.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        mm_shared_with: Vec<u32>,
    },
    Leak {
        pid: u32,
        comm: String,
        rate_kib_s: f64,
        window_s: f64,
        growth_kib: i64,
        metric: &'static str,
        mapping: String,
        shared: bool,
        confidence: f64,
        /// What made the growth over the flagged span, whichever accounts for more of it:
        /// `faults` (pages its own faults added to RSS) or `cow` (pages its own copy-on-write
        /// writes made private, e.g. a pre-fork worker writing its parent's heap).
        cause: &'static str,
        /// `flagged` (a new verdict, or its rate changed by more than a third) or `withdrawn`
        /// (its growth no longer holds; the other fields are its last trend).
        state: &'static str,
        /// Withdrawn: why (`fell_back`: the growth was given back; `stalled`: no growth over
        /// as long a span as it was flagged on), and when it had been flagged.
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<&'static str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        flagged_at: Option<f64>,
        /// The growing mapping as the full smaps of this pid accounts it (read for this record).
        #[serde(skip_serializing_if = "Option::is_none")]
        smaps_mapping: Option<VmaStat>,
        /// With --stacks: the stacks that added the most pages to this pid.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        stacks: Vec<StackStat>,
    },
    /// The OOM killer chose a watched process: its post-mortem, emitted before its exit record.
    Oom {
        pid: u32,
        /// The victim's name as the kernel had it when it was chosen.
        comm: String,
        /// `memcg` (a memory cgroup's limit was hit), `global` (the machine ran out),
        /// `cpuset` / `mempolicy` (allowed nodes ran out), or `unknown`.
        constraint: &'static str,
        /// Where the constraint comes from: `kernel log` (the OOM killer's own lines in
        /// /dev/kmsg) or `cgroup limits` (no log line: a limit below MemTotal that the cgroup's
        /// peak usage reached), or `none`.
        constraint_source: &'static str,
        /// The memory cgroup (path in its hierarchy): for `memcg`, the one whose limit was hit;
        /// otherwise the victim's. Absent when it could not be learned.
        memcg: Option<String>,
        /// The limit that applies to that cgroup (the smallest of its own and its ancestors'
        /// below MemTotal), KiB; absent when unlimited or unknown.
        limit_kib: Option<u64>,
        /// The kernel's figures for the victim's mm (the tracepoint's, KiB).
        kernel: OomKernel,
        /// Its last smaps reading, if it had one.
        last_mem: Option<MemStat>,
        /// Its ledger by mapping over the whole watch: the mappings its faults grew most.
        mappings: Vec<MappingStat>,
        /// With --stacks: the three stacks that added the most pages to it.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        stacks: Vec<StackStat>,
        /// The leak verdict it had, if one was flagged.
        leak: Option<LeakVerdict>,
    },
    Lost {
        events: u64,
    },
    /// `--cgroup`: a watched cgroup's memory explained, once per smaps interval.
    Cgroup(crate::judgement::cgroup::CgroupRecord),
    /// A cgroup-level leak verdict (`scope: "cgroup"`): its memory grows and no member's pages
    /// explain it.
    #[serde(rename = "leak")]
    CgroupLeak(crate::judgement::cgroup_verdict::CgroupLeak),
    Summary {
        duration_s: f64,
        lost_events: u64,
        /// Records the kernel put in the ring buffer, and records the agent read from it.
        events_submitted: u64,
        events_received: u64,
        /// Pages faults added to mappings that stayed unnamed (`[file]`, `[unmapped]`): what a
        /// process gone before /proc was read had mapped, and the ledger could not name.
        unnamed_pages: i64,
        /// What watching cost the agent itself.
        agent: AgentCost,
        /// With --stacks: how deep the recorded stacks were, and the ones that could not be taken.
        #[serde(skip_serializing_if = "Option::is_none")]
        stacks: Option<StackSummary>,
        procs: Vec<ProcSummary>,
        /// `serve`: the processes taken out of the ledger, folded into their name's totals
        /// (`watch` keeps each one in `procs`).
        #[serde(skip_serializing_if = "Vec::is_empty")]
        exited: Vec<crate::session::fold::ExitedGroup>,
        /// With --stacks: folded stacks (`comm;frame;...;frame pages`) of every process, for the
        /// stack-file sinks.
        #[serde(skip)]
        folded: Vec<String>,
        /// With --pprof: the pages of every process by (stack, mapping), frames structured,
        /// for the pprof sink.
        #[serde(skip)]
        profile: Vec<crate::stacks::ProfileSample>,
    },
}

/// A record with its timestamp (seconds since the agent started).
#[derive(Clone, Debug, Serialize)]
pub struct Stamped<'a> {
    pub ts: f64,
    #[serde(flatten)]
    pub record: &'a Record,
}
