//! What `agent diff` prints: a heading, the processes and the mappings that changed, most PSS
//! growth first, and the total change; in the human format (the first `--top` rows of each
//! table) or as JSON lines (every row).
use serde::Serialize;

use super::{
    diff::{MapDiff, Match, ProcDiff},
    mem::{Delta, Mem},
    save::{line, Saved},
    table::{count, signed, size, Align, Table},
};
use crate::sinks::Format;

/// The first line of a diff: which files, how far apart.
#[derive(Serialize)]
struct Heading<'a> {
    before: &'a str,
    after: &'a str,
    /// Seconds between the two snapshots.
    seconds: f64,
    /// Whether both were taken in the same boot (else processes pair by name only).
    same_boot: bool,
    before_processes: usize,
    after_processes: usize,
    /// Whether both files hold per-process mappings (else there is no "by mapping").
    mappings: bool,
}

#[derive(Serialize)]
struct TotalDiff {
    delta: Delta,
    before: Mem,
    after: Mem,
}

pub struct Diffed<'a> {
    pub before_path: &'a str,
    pub after_path: &'a str,
    pub before: &'a Saved,
    pub after: &'a Saved,
    pub procs: &'a [ProcDiff],
    pub maps: &'a [MapDiff],
}

pub fn render(d: &Diffed, format: Format, top: usize) -> String {
    let total = |s: &Saved| s.procs.iter().map(|p| p.mem).sum::<Mem>();
    let (tb, ta) = (total(d.before), total(d.after));
    let heading = Heading {
        before: d.before_path,
        after: d.after_path,
        seconds: ((d.after.header.time - d.before.header.time) * 1000.0).round() / 1000.0,
        same_boot: d.before.header.boot_id == d.after.header.boot_id,
        before_processes: d.before.procs.len(),
        after_processes: d.after.procs.len(),
        mappings: d.before.header.mappings && d.after.header.mappings,
    };
    let tot = TotalDiff { delta: ta.since(tb), before: tb, after: ta };
    match format {
        Format::Json => {
            let mut out = line("diff", &heading);
            out.extend(d.procs.iter().map(|p| line("process", p)));
            out.extend(d.maps.iter().map(|m| line("mapping", m)));
            out + &line("total", &tot)
        }
        Format::Human => human(&heading, d, &tot, top),
    }
}

const DELTA_HEADS: [(&str, Align); 5] = [
    ("ΔPSS", Align::Right),
    ("ΔUSS", Align::Right),
    ("ΔRSS", Align::Right),
    ("ΔSWAP", Align::Right),
    ("ΔHUGETLB", Align::Right),
];

fn delta_cells(d: Delta) -> Vec<String> {
    [d.pss_kib, d.uss_kib, d.rss_kib, d.swap_kib, d.hugetlb_kib].into_iter().map(signed).collect()
}

/// The rows shown of `n`: all with `top` 0.
fn shown(n: usize, top: usize) -> usize {
    if top == 0 {
        n
    } else {
        n.min(top)
    }
}

fn more(n: usize, top: usize, what: &str) -> String {
    let hidden = n - shown(n, top);
    if hidden == 0 {
        String::new()
    } else {
        format!("… and {hidden} more {what} (--top 0 shows all)\n")
    }
}

fn human(h: &Heading, d: &Diffed, tot: &TotalDiff, top: usize) -> String {
    let mut out = format!(
        "{} → {}: {:.1} s apart, {} → {}{}\n\n",
        h.before,
        h.after,
        h.seconds,
        count(h.before_processes, "process", "processes"),
        count(h.after_processes, "process", "processes"),
        if h.same_boot { "" } else { " (another boot: processes paired by name)" },
    );
    let heads = [
        &[("PID", Align::Right), ("COMM", Align::Left)][..],
        &DELTA_HEADS,
        &[("PSS NOW", Align::Right), ("MATCH", Align::Left), ("TOP MAPPING", Align::Left)],
    ]
    .concat();
    let mut t = Table::new(&heads);
    for p in &d.procs[..shown(d.procs.len(), top)] {
        let matched = match (p.matched, p.before_pid) {
            (Match::Comm, Some(was)) => format!("was {was}"),
            (m, _) => format!("{m:?}").to_lowercase(),
        };
        let top_map = match (&p.top_mapping, p.top_mapping_delta_pss_kib) {
            (Some(m), Some(k)) => format!("{m} {}", signed(k)),
            _ => String::new(),
        };
        let row = [
            vec![p.pid.to_string(), p.comm.clone()],
            delta_cells(p.delta),
            vec![size(p.after.pss_kib), matched, top_map],
        ];
        t.push(row.concat());
    }
    t.push(
        [
            vec![String::new(), "TOTAL".into()],
            delta_cells(tot.delta),
            vec![size(tot.after.pss_kib), String::new(), String::new()],
        ]
        .concat(),
    );
    out += "by process, most PSS growth first:\n";
    out += &t.render();
    out += &more(d.procs.len(), top, "processes");
    if !h.mappings {
        out += "\nby mapping: not in these files (save snapshots with `agent snapshot --save FILE`)\n";
        return out;
    }
    if d.maps.is_empty() {
        return out + "\nby mapping: no change\n";
    }
    let heads =
        [&DELTA_HEADS[..], &[("PSS NOW", Align::Right), ("PIDS", Align::Right), ("MAPPING", Align::Left)]].concat();
    let mut t = Table::new(&heads);
    for m in &d.maps[..shown(d.maps.len(), top)] {
        let pids = if m.pids_before == m.pids_after {
            m.pids_after.to_string()
        } else {
            format!("{}→{}", m.pids_before, m.pids_after)
        };
        t.push([delta_cells(m.delta), vec![size(m.after.pss_kib), pids, m.mapping.clone()]].concat());
    }
    out += "\nby mapping, most PSS growth first:\n";
    out += &t.render();
    out + &more(d.maps.len(), top, "mappings")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{read::Proc, save::Header};

    #[test]
    fn a_diff_in_both_formats() {
        let m = |pss| Mem { pss_kib: pss, rss_kib: pss, ..Mem::default() };
        let saved = |t: f64, pss| Saved {
            header: Header { time: t, boot_id: "b".into(), mappings: true, ..Header::default() },
            procs: vec![Proc { pid: 9, comm: "app".into(), mem: m(pss), ..Proc::default() }],
        };
        let (b, a) = (saved(100.0, 1024), saved(112.5, 5120));
        let procs = vec![ProcDiff {
            pid: 9,
            before_pid: Some(9),
            comm: "app".into(),
            matched: Match::Pid,
            delta: m(5120).since(m(1024)),
            before: m(1024),
            after: m(5120),
            top_mapping: Some("[heap]".into()),
            top_mapping_delta_pss_kib: Some(4096),
        }];
        let d = Diffed { before_path: "a.json", after_path: "b.json", before: &b, after: &a, procs: &procs, maps: &[] };
        let human = render(&d, Format::Human, 20);
        assert!(human.starts_with("a.json → b.json: 12.5 s apart, 1 process → 1 process\n"), "{human}");
        let row: Vec<&str> = human.lines().find(|l| l.contains(" app ")).unwrap().split_whitespace().collect();
        assert_eq!(row[..4], ["9", "app", "+4.0", "MiB"], "{human}");
        assert_eq!(row[row.len() - 4..], ["pid", "[heap]", "+4.0", "MiB"][..], "{human}");
        assert!(human.ends_with("by mapping: no change\n"), "{human}");
        let json: Vec<serde_json::Value> =
            render(&d, Format::Json, 20).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(json[0]["type"], "diff");
        assert_eq!(json[0]["seconds"], 12.5);
        assert_eq!((json[1]["type"].as_str(), json[1]["match"].as_str()), (Some("process"), Some("pid")));
        assert_eq!(json[1]["delta"]["pss_kib"], 4096);
        assert_eq!(json[2]["type"], "total");
        assert_eq!(json[2]["after"]["pss_kib"], 5120);
    }
}
