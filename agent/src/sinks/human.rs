//! The human format: aligned columns, sizes in KiB/MiB/GiB, one line per active pid per
//! interval with its latest smaps figures, and a summary table.
use std::fmt::Write as _;

use crate::records::Record;

pub fn size_kib(kib: i64) -> String {
    let a = kib.unsigned_abs() as f64;
    let sign = if kib < 0 { "-" } else { "" };
    if a >= 1024.0 * 1024.0 {
        format!("{sign}{:.1} GiB", a / (1024.0 * 1024.0))
    } else if a >= 1024.0 {
        format!("{sign}{:.1} MiB", a / 1024.0)
    } else {
        format!("{sign}{a:.0} KiB")
    }
}

/// The kernel's accounting of the leaking mapping, under a leak line.
fn vma_line(v: Option<&crate::records::VmaStat>) -> String {
    let Some(v) = v else { return String::new() };
    format!(
        "\n{:>17}smaps of that mapping: {} VMA{} of {}, RSS {}, PSS {}, USS {}, swap {}",
        "",
        v.vmas,
        if v.vmas == 1 { "" } else { "s" },
        size_kib(v.size_kib as i64),
        size_kib(v.rss_kib as i64),
        size_kib(v.pss_kib as i64),
        size_kib(v.uss_kib as i64),
        size_kib(v.swap_kib as i64),
    )
}

/// The top stack under a leak line, indented, leaf first.
fn stack_lines(st: Option<&crate::records::StackStat>, page_kib: i64) -> String {
    let Some(st) = st else { return String::new() };
    let mut s = format!("\n{:>17}top stack, +{}:", "", size_kib(st.pages * page_kib));
    for f in st.frames.iter().take(12) {
        let _ = write!(s, "\n{:>19}{f}", "");
    }
    if st.frames.len() > 12 {
        let _ = write!(s, "\n{:>19}... {} more frames", "", st.frames.len() - 12);
    }
    s
}

/// The lines under an OOM header: the kernel's figures, the last reading, the ledger's top
/// mappings, the top stack, the leak verdict.
fn oom_lines(rec: &Record, page_kib: i64) -> String {
    let Record::Oom { kernel: k, last_mem, mappings, stacks, leak, .. } = rec else { return String::new() };
    let pad = format!("\n{:>17}", "");
    let mut s = format!(
        "{pad}kernel at the kill: anon {}, file {}, shmem {}, total vm {}, page tables {}, oom_score_adj {}",
        size_kib(k.anon_rss_kib as i64),
        size_kib(k.file_rss_kib as i64),
        size_kib(k.shmem_rss_kib as i64),
        size_kib(k.total_vm_kib as i64),
        size_kib(k.pgtables_kib as i64),
        k.oom_score_adj,
    );
    match last_mem {
        Some(m) => {
            let kib = |v: u64| size_kib(v as i64);
            let _ = write!(
                s,
                "{pad}last reading: RSS {}, PSS {}, USS {}, swap {}",
                kib(m.rss_kib),
                kib(m.pss_kib),
                kib(m.uss_kib),
                kib(m.swap_kib)
            );
        }
        None => s.push_str(&format!("{pad}last reading: none")),
    }
    let top: Vec<String> = mappings
        .iter()
        .take(3)
        .map(|m| {
            format!("{} ({}) +{}", m.mapping, if m.shared { "shared" } else { "private" }, size_kib(m.pages * page_kib))
        })
        .collect();
    let _ = write!(s, "{pad}grew most: {}", if top.is_empty() { "-".into() } else { top.join(", ") });
    s += &stack_lines(stacks.first(), page_kib);
    match leak {
        Some(l) => {
            let _ = write!(
                s,
                "{pad}leak verdict: {}/s of {} for {:.0}s (+{})",
                size_kib(l.rate_kib_s.round() as i64),
                l.metric.to_uppercase(),
                l.window_s,
                size_kib(l.growth_kib)
            );
        }
        None => s.push_str(&format!("{pad}leak verdict: none")),
    }
    s
}

/// Drift (KiB) below which a mem reading stays folded into the fault lines (or 2% of RSS).
const DRIFT_SHOWN_KIB: i64 = 1024;

pub const HEADER: &str = "   TIME     PID COMM             FAULTS    +PAGES      ANON      FILE     SHMEM       RSS       PSS       USS  TOP MAPPING";

/// Render one record (a faults line shows the pid's latest smaps reading). `None` for records
/// the human format leaves out (mem readings are folded into the fault lines and the summary).
pub fn render(ts: f64, rec: &Record, page_kib: i64) -> Option<String> {
    let t = format!("{ts:>6.1}s");
    let kib = |pages: i64| size_kib(pages * page_kib);
    Some(match rec {
        Record::Start { targets, hooks, missing_hooks, cgroups } => {
            let what = match cgroups.is_empty() {
                true => targets.iter().map(|p| format!("pid {p}")).collect::<Vec<_>>().join(", "),
                false => format!("the {} processes of cgroup {}", targets.len(), cgroups.join(", cgroup ")),
            };
            let mut s = format!("{t} watching {what} (and descendants); hooks: {}", hooks.join(", "));
            if !missing_hooks.is_empty() {
                let _ = write!(s, "\n{t} degraded: without {}", missing_hooks.join("; "));
            }
            let _ = write!(s, "\n{HEADER}");
            s
        }
        Record::Cgroup(c) => super::human_cgroup::table(&t, c),
        Record::CgroupLeak(l) => super::human_cgroup::leak(&t, l),
        Record::Proc { pid, ppid, comm, event, .. } => match *event {
            "fork" => format!("{t} {pid:>7} {comm:<15} forked from {ppid}"),
            other => format!("{t} {pid:>7} {comm:<15} {other}"),
        },
        Record::Faults { pid, comm, faults, pages, mappings, last_mem, .. } => {
            let (rss, pss, uss) = match last_mem {
                Some(m) => (size_kib(m.rss_kib as i64), size_kib(m.pss_kib as i64), size_kib(m.uss_kib as i64)),
                None => ("-".into(), "-".into(), "-".into()),
            };
            let mut top = mappings
                .first()
                .map(|m| format!("{} {} +{}", m.mapping, if m.shared { "(shared)" } else { "(private)" }, kib(m.pages)))
                .unwrap_or_default();
            if pages.cow != 0 {
                // Made private by copy-on-write: USS grows, no rss column does.
                let _ = write!(top, "; COW +{}", kib(pages.cow));
            }
            if pages.hugetlb != 0 {
                // hugetlb pages: in no rss column (nor in smaps' RSS/PSS/USS).
                let _ = write!(top, "; HUGETLB {}{}", if pages.hugetlb > 0 { "+" } else { "" }, kib(pages.hugetlb));
            }
            format!(
                "{t} {pid:>7} {comm:<15.15} {faults:>7} {:>9} {:>9} {:>9} {:>9} {rss:>9} {pss:>9} {uss:>9}  {top}",
                kib(pages.total()),
                kib(pages.anon),
                kib(pages.file),
                kib(pages.shmem),
            )
        }
        // The eBPF ledger and smaps disagree beyond timing: worth a line of its own.
        Record::Mem { pid, comm, mem, ledger_rss_kib: Some(l), drift_kib: Some(d), .. }
            if d.abs() > DRIFT_SHOWN_KIB.max(mem.rss_kib as i64 / 50) =>
        {
            format!(
                "{t} {pid:>7} {comm:<15.15} !! smaps RSS {} but the eBPF ledger has {} ({}{} unexplained: lost events?)",
                size_kib(mem.rss_kib as i64),
                size_kib(*l),
                if *d > 0 { "+" } else { "" },
                size_kib(*d),
            )
        }
        Record::Mem { .. } => return None,
        Record::Leak { pid, comm, rate_kib_s, metric, state: "withdrawn", reason, flagged_at, .. } => {
            format!(
                "{t} {pid:>7} {comm:<15.15} leak withdrawn: {} (flagged at {:.0}s, last {}/s of {})",
                match *reason {
                    Some("fell_back") => "fell back below half its flagged growth",
                    Some("stalled") => "no growth over as long as it was flagged on",
                    _ => "its growth no longer holds",
                },
                flagged_at.unwrap_or_default(),
                size_kib(rate_kib_s.round() as i64),
                metric.to_uppercase(),
            )
        }
        Record::Leak {
            pid,
            comm,
            rate_kib_s,
            window_s,
            growth_kib,
            metric,
            mapping,
            shared,
            confidence,
            cause,
            smaps_mapping,
            stacks,
            ..
        } => {
            format!(
                "{t} {pid:>7} {comm:<15.15} LEAK {}/s of {} for {window_s:.0}s (+{}) into {mapping} ({}){}, confidence {confidence:.2}",
                size_kib(rate_kib_s.round() as i64),
                metric.to_uppercase(),
                size_kib(*growth_kib),
                match (*shared, *metric) {
                    (true, "uss") => "shared, sole mapper: counted as USS",
                    (true, _) => "shared",
                    _ => "private",
                },
                if *cause == "cow" { " made private by copy-on-write" } else { "" },
            ) + &vma_line(smaps_mapping.as_ref())
                + &stack_lines(stacks.first(), page_kib)
        }
        Record::Oom { pid, comm, constraint, memcg, limit_kib, .. } => {
            let why = match (*constraint, limit_kib) {
                ("memcg", Some(l)) => format!("memcg limit {}", size_kib(*l as i64)),
                ("global", _) => "global: the machine ran out".into(),
                (c, _) => c.to_string(),
            };
            let cg = memcg.as_deref().map(|c| format!(", cgroup {c}")).unwrap_or_default();
            format!("{t} {pid:>7} {comm:<15.15} OOM KILLED pid {pid} {comm} ({why}{cg})") + &oom_lines(rec, page_kib)
        }
        Record::Lost { events } => {
            format!("{t} !! lost {events} events: the ring buffer was full, counts in this interval are low")
        }
        Record::Summary { duration_s, lost_events, procs, agent, stacks, .. } => {
            let mut s = format!(
                "\nsummary after {duration_s:.1}s, {lost_events} events lost; agent used {:.2}s CPU ({:.1}%), {} peak RSS\n",
                agent.cpu_s,
                agent.cpu_per_s * 100.0,
                size_kib(agent.max_rss_kib as i64)
            );
            let _ = writeln!(
                s,
                "smaps: {} reads, {:.2}s CPU of the {:.2}s its {}% budget allowed ({:.2})",
                agent.smaps_reads,
                agent.smaps_cpu_s,
                agent.smaps_allowed_s,
                agent.smaps_budget_pct,
                agent.smaps_budget_used
            );
            if !agent.programs.is_empty() {
                let p: Vec<String> =
                    agent.programs.iter().map(|p| format!("{} {:.0} ns x {}", p.name, p.ns_per_run, p.runs)).collect();
                let _ = writeln!(s, "eBPF programs (kernel run stats): {}", p.join(", "));
            }
            if let Some(st) = stacks {
                let d: Vec<String> = st.depths.iter().map(|b| format!("{}: {}", b.frames, b.stacks)).collect();
                let _ = writeln!(s, "stack depths (frames: stacks) {}; {} stacks not taken", d.join(", "), st.errors);
                let h = &st.symbolizer;
                if h.crashes + h.timeouts + h.unanswered > 0 {
                    let _ = writeln!(
                        s,
                        "symbolizer helper: {} crashed, {} timed out, {} restarts; {} of {} requests unanswered (frames left as module+offset)",
                        h.crashes, h.timeouts, h.restarts, h.unanswered, h.requests
                    );
                }
            }
            let _ = writeln!(
                s,
                "    PID COMM             FAULTS  FAULTED(ANON/FILE/SHMEM)          PEAK USS  LAST PSS  TOP MAPPING"
            );
            for p in procs {
                let mut top =
                    p.mappings.first().map(|m| format!("{} +{}", m.mapping, kib(m.pages))).unwrap_or_default();
                if let Some(r) = p.leak_rate_kib_s {
                    top = format!("LEAK {}/s  {top}", size_kib(r.round() as i64));
                } else if let Some(w) = p.verdicts.last().and_then(|v| v.withdrawn_at) {
                    top = format!("(leak withdrawn at {w:.0}s)  {top}");
                }
                let _ = writeln!(
                    s,
                    "{:>7} {:<15.15} {:>7}  {:>9} {:>9} {:>9}  {:>9} {:>9}  {top}",
                    p.pid,
                    p.comm,
                    p.faults,
                    kib(p.pages.anon),
                    kib(p.pages.file),
                    kib(p.pages.shmem),
                    size_kib(p.peak_uss_kib as i64),
                    size_kib(p.last_pss_kib as i64),
                );
            }
            s
        }
    })
}

/// The human format as a sink; `color` highlights leak lines (for a terminal).
pub struct Human<W: std::io::Write + Send> {
    out: W,
    page_kib: i64,
    color: bool,
}

impl<W: std::io::Write + Send> Human<W> {
    pub fn new(out: W, color: bool) -> Human<W> {
        // SAFETY: sysconf has no preconditions.
        let page_kib = (unsafe { libc::sysconf(libc::_SC_PAGESIZE) } / 1024).max(4) as i64;
        Human { out, page_kib, color }
    }
}

impl<W: std::io::Write + Send> super::Sink for Human<W> {
    fn emit(&mut self, ts: f64, record: &Record) -> std::io::Result<()> {
        let Some(text) = render(ts, record, self.page_kib) else { return Ok(()) };
        if self.color && matches!(record, Record::Leak { state: "flagged", .. } | Record::Oom { .. }) {
            // The leak line itself in bold red; its evidence lines under it plain.
            let (first, rest) = text.split_once('\n').map_or((text.as_str(), ""), |(a, b)| (a, b));
            let sep = if rest.is_empty() { "" } else { "\n" };
            writeln!(self.out, "\x1b[1;31m{first}\x1b[0m{sep}{rest}")
        } else {
            writeln!(self.out, "{text}")
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{MappingStat, MemStat, Pages, ProcSummary};

    #[test]
    fn sizes() {
        assert_eq!(size_kib(0), "0 KiB");
        assert_eq!(size_kib(512), "512 KiB");
        assert_eq!(size_kib(1536), "1.5 MiB");
        assert_eq!(size_kib(-2048), "-2.0 MiB");
        assert_eq!(size_kib(3 * 1024 * 1024), "3.0 GiB");
    }

    #[test]
    fn fault_line_is_aligned_with_header() {
        let rec = Record::Faults {
            pid: 4242,
            comm: "demo-leaker".into(),
            interval_s: 1.0,
            faults: 256,
            pages: Pages { anon: 256, file: 0, shmem: 0, cow: 0, hugetlb: 0 },
            mappings: vec![MappingStat {
                mapping: "anon@0x7f00".into(),
                shared: false,
                faults: 256,
                pages: 256,
                cow: 0,
            }],
            last_mem: Some(MemStat {
                rss_kib: 4096,
                pss_kib: 2048,
                uss_kib: 3072,
                pss_anon_kib: 0,
                pss_file_kib: 0,
                pss_shmem_kib: 0,
                swap_kib: 0,
                hugetlb_kib: 0,
                shared_hugetlb_kib: 0,
                private_hugetlb_kib: 0,
            }),
        };
        let line = render(1.0, &rec, 4).unwrap();
        assert!(line.contains("4242 demo-leaker"), "{line}");
        assert!(line.ends_with("anon@0x7f00 (private) +1.0 MiB"), "{line}");
        // Columns end where the header's do.
        let col_end = |s: &str, pat: &str| s.find(pat).map(|i| i + pat.len()).unwrap();
        assert_eq!(col_end(&line, "4242"), col_end(HEADER, "PID"));
        assert_eq!(col_end(&line, "    256"), col_end(HEADER, "FAULTS"));
        assert_eq!(col_end(&line, "4.0 MiB"), col_end(HEADER, "RSS"));
        assert_eq!(col_end(&line, "2.0 MiB"), col_end(HEADER, "PSS"));
        assert_eq!(col_end(&line, "3.0 MiB"), col_end(HEADER, "USS"));
    }

    #[test]
    fn a_withdrawn_verdict_has_its_own_line() {
        let rec = Record::Leak {
            pid: 9,
            comm: "sawtooth".into(),
            rate_kib_s: 1021.7,
            window_s: 28.0,
            growth_kib: 28_659,
            metric: "uss",
            mapping: "anon@0x7f00".into(),
            shared: false,
            confidence: 0.5,
            cause: "faults",
            state: "withdrawn",
            reason: Some("fell_back"),
            flagged_at: Some(20.4),
            smaps_mapping: None,
            stacks: vec![],
        };
        let line = render(30.7, &rec, 4).unwrap();
        assert!(
            line.ends_with("9 sawtooth        leak withdrawn: fell back below half its flagged growth (flagged at 20s, last 1022 KiB/s of USS)"),
            "{line}"
        );
    }

    #[test]
    fn mem_is_folded_and_summary_lists_procs() {
        let mem = MemStat {
            rss_kib: 1,
            pss_kib: 1,
            uss_kib: 1,
            pss_anon_kib: 0,
            pss_file_kib: 0,
            pss_shmem_kib: 0,
            swap_kib: 0,
            hugetlb_kib: 0,
            shared_hugetlb_kib: 0,
            private_hugetlb_kib: 0,
        };
        assert!(render(
            0.0,
            &Record::Mem {
                pid: 1,
                comm: "x".into(),
                sweep: 1,
                prev_age_s: None,
                ledger_rss_kib: None,
                drift_kib: None,
                ledger_hugetlb_kib: None,
                explain: None,
                mm_shared_with: vec![],
                mem: mem.clone(),
            },
            4
        )
        .is_none());
        // 40 MiB that the ledger never saw: shown.
        let drifted = Record::Mem {
            pid: 1,
            comm: "x".into(),
            sweep: 1,
            prev_age_s: Some(2.0),
            ledger_rss_kib: Some(10_240),
            drift_kib: Some(-40_960),
            ledger_hugetlb_kib: None,
            explain: None,
            mm_shared_with: vec![],
            mem: MemStat { rss_kib: 51_200, ..mem },
        };
        let line = render(1.0, &drifted, 4).unwrap();
        assert!(line.contains("smaps RSS 50.0 MiB but the eBPF ledger has 10.0 MiB (-40.0 MiB unexplained"), "{line}");
        let s = render(
            2.0,
            &Record::Summary {
                duration_s: 2.0,
                lost_events: 0,
                events_submitted: 0,
                events_received: 0,
                unnamed_pages: 0,
                agent: Default::default(),
                stacks: None,
                procs: vec![ProcSummary {
                    pid: 7,
                    comm: "writer".into(),
                    faults: 10,
                    pages: Pages { anon: 0, file: 0, shmem: 10, cow: 0, hugetlb: 0 },
                    other_pages: 0,
                    causes: Default::default(),
                    peak_uss_kib: 40,
                    last_pss_kib: 20,
                    mappings: vec![],
                    leak: true,
                    leak_rate_kib_s: Some(2048.0),
                    verdicts: vec![],
                    stacks: vec![],
                }],
                exited: vec![],
                folded: vec![],
                profile: vec![],
            },
            4,
        )
        .unwrap();
        assert!(s.contains("summary after 2.0s, 0 events lost"));
        assert!(s.contains("      7 writer"), "{s}");
        assert!(s.contains("40 KiB"), "{s}");
        assert!(s.contains("LEAK 2.0 MiB/s"), "{s}");
    }
}
