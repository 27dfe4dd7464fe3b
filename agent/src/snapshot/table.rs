//! The human format of snapshots and diffs: aligned columns, sizes as the rest of the agent
//! writes them (`size_kib`), a totals line.
use super::{
    aggregate::{MapRow, Total, UserRow},
    mem::Mem,
    read::Proc,
};
use crate::sinks::human::size_kib;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// A table whose columns are as wide as their widest cell; the last column is not padded.
pub struct Table {
    heads: Vec<(&'static str, Align)>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(heads: &[(&'static str, Align)]) -> Table {
        Table { heads: heads.to_vec(), rows: Vec::new() }
    }

    pub fn push(&mut self, row: Vec<String>) {
        debug_assert_eq!(row.len(), self.heads.len());
        self.rows.push(row);
    }

    pub fn render(&self) -> String {
        let width = |i: usize| {
            let cells = self.rows.iter().map(|r| r[i].chars().count());
            cells.chain([self.heads[i].0.chars().count()]).max().unwrap_or(0)
        };
        let widths: Vec<usize> = (0..self.heads.len()).map(width).collect();
        let line = |cells: Vec<&str>| {
            let last = cells.len() - 1;
            let mut s = String::new();
            for (i, c) in cells.into_iter().enumerate() {
                let pad = " ".repeat(widths[i] - c.chars().count());
                match self.heads[i].1 {
                    Align::Right => s += &format!("{pad}{c}"),
                    Align::Left if i == last => s += c,
                    Align::Left => s += &format!("{c}{pad}"),
                }
                if i < last {
                    s += "  ";
                }
            }
            s.trim_end().to_string() + "\n"
        };
        let mut out = line(self.heads.iter().map(|h| h.0).collect());
        for r in &self.rows {
            out += &line(r.iter().map(String::as_str).collect());
        }
        out
    }
}

pub fn size(kib: u64) -> String {
    size_kib(kib as i64)
}

/// A change: `+1.2 MiB`, `-4 KiB`, `0 KiB`.
pub fn signed(kib: i64) -> String {
    if kib > 0 {
        format!("+{}", size_kib(kib))
    } else {
        size_kib(kib)
    }
}

const MEM_HEADS: [(&str, Align); 5] = [
    ("RSS", Align::Right),
    ("PSS", Align::Right),
    ("USS", Align::Right),
    ("SWAP", Align::Right),
    ("HUGETLB", Align::Right),
];

fn mem_cells(m: Mem) -> Vec<String> {
    [m.rss_kib, m.pss_kib, m.uss_kib, m.swap_kib, m.hugetlb_kib].into_iter().map(size).collect()
}

fn heads(before: &[(&'static str, Align)], after: &[(&'static str, Align)]) -> Vec<(&'static str, Align)> {
    [before, &MEM_HEADS, after].concat()
}

/// At most `n` characters on one line (control characters as spaces), an ellipsis in place of
/// the rest.
pub fn clip(s: &str, n: usize) -> String {
    let one_line = s.chars().map(|c| if c.is_control() { ' ' } else { c });
    if s.chars().count() <= n {
        one_line.collect()
    } else {
        one_line.take(n - 1).chain(['…']).collect()
    }
}

/// Command lines are cut to this many characters in the table (JSON has them whole).
const COMMAND_CHARS: usize = 64;

/// `1 process`, `2 processes`.
pub fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

pub fn procs(procs: &[Proc], total: &Total) -> String {
    let mut t = Table::new(&heads(
        &[("PID", Align::Right), ("USER", Align::Left), ("COMM", Align::Left)],
        &[("COMMAND", Align::Left)],
    ));
    for p in procs {
        let cmd = if p.cmdline.is_empty() { format!("[{}]", p.comm) } else { clip(&p.cmdline, COMMAND_CHARS) };
        t.push([vec![p.pid.to_string(), p.user.clone(), p.comm.clone()], mem_cells(p.mem), vec![cmd]].concat());
    }
    t.push(
        [
            vec![String::new(), String::new(), "TOTAL".into()],
            mem_cells(total.mem),
            vec![count(total.processes, "process", "processes")],
        ]
        .concat(),
    );
    t.render()
}

pub fn mappings(rows: &[MapRow], total: &Total) -> String {
    let mut t = Table::new(&heads(&[("PIDS", Align::Right), ("VMAS", Align::Right)], &[("MAPPING", Align::Left)]));
    for r in rows {
        t.push([vec![r.pids.to_string(), r.vmas.to_string()], mem_cells(r.mem), vec![r.mapping.clone()]].concat());
    }
    let label = format!(
        "TOTAL: {} in {}",
        count(total.rows, "mapping", "mappings"),
        count(total.processes, "process", "processes")
    );
    t.push([vec![String::new(), String::new()], mem_cells(total.mem), vec![label]].concat());
    t.render()
}

pub fn users(rows: &[UserRow], total: &Total) -> String {
    let mut t = Table::new(&heads(&[("UID", Align::Right), ("USER", Align::Left), ("PROCS", Align::Right)], &[]));
    for r in rows {
        t.push([vec![r.uid.to_string(), r.user.clone(), r.processes.to_string()], mem_cells(r.mem)].concat());
    }
    t.push([vec![String::new(), "TOTAL".into(), total.processes.to_string()], mem_cells(total.mem)].concat());
    t.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_to_their_widest_cell() {
        let mut t =
            Table::new(&[("PID", Align::Right), ("COMM", Align::Left), ("PSS", Align::Right), ("CMD", Align::Left)]);
        t.push(vec!["1".into(), "systemd".into(), "12.0 MiB".into(), "/sbin/init".into()]);
        t.push(vec!["31337".into(), "sh".into(), "4 KiB".into(), "".into()]);
        assert_eq!(
            t.render(),
            "  PID  COMM          PSS  CMD\n    1  systemd  12.0 MiB  /sbin/init\n31337  sh          4 KiB\n"
        );
    }

    #[test]
    fn sizes_and_changes() {
        assert_eq!(size(64 * 1024), "64.0 MiB");
        assert_eq!(signed(2048), "+2.0 MiB");
        assert_eq!(signed(-4), "-4 KiB");
        assert_eq!(signed(0), "0 KiB");
        assert_eq!(clip("abcdef", 4), "abc…");
        assert_eq!(clip("abc", 4), "abc");
        assert_eq!(clip("sh -c \n\tx", 40), "sh -c   x");
    }

    #[test]
    fn process_table_has_a_totals_line() {
        let p = Proc {
            pid: 42,
            comm: "wl".into(),
            user: "root".into(),
            mem: Mem { rss_kib: 2048, pss_kib: 1024, uss_kib: 512, swap_kib: 0, hugetlb_kib: 0 },
            ..Proc::default()
        };
        let total = Total { processes: 1, rows: 1, mem: p.mem, ..Total::default() };
        let s = procs(&[p], &total);
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("PID  USER  COMM ") && lines[0].ends_with("HUGETLB  COMMAND"), "{s}");
        assert!(lines[1].contains(" 2.0 MiB  1.0 MiB  512 KiB") && lines[1].ends_with("[wl]"), "{s}");
        assert!(lines[2].contains("TOTAL") && lines[2].ends_with("1 process"), "{s}");
    }
}
