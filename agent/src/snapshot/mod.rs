//! `agent snapshot` and `agent diff`: smem done right, no eBPF, no root for your own processes.
//! Every process's RSS, PSS, USS, swap and hugetlb from `smaps_rollup`, read on a few threads;
//! summed by mapping (`-m`, the full smaps) or by user (`-u`); saved as JSON lines and compared
//! (`agent diff`).
pub mod aggregate;
pub mod diff;
pub mod mem;
pub mod read;
pub mod report;
pub mod save;
pub mod select;
pub mod table;
pub mod users;

use std::{io::Write, path::PathBuf};

use serde::Serialize;

use self::{aggregate::Row, read::Taken, save::Header, select::Scope};
use crate::{error::AgentError, sinks::Format};

#[derive(clap::Args, Debug, Clone)]
pub struct SnapshotArgs {
    /// Per mapping: the full smaps, summed by mapping name across processes (like `smem -m`).
    #[arg(short = 'm', long)]
    pub mappings: bool,
    /// Per user (like `smem -u`).
    #[arg(short = 'u', long, conflicts_with = "mappings")]
    pub users: bool,
    /// Only the processes of this cgroup and its descendants: a v2 or v1 directory, or its path
    /// under /sys/fs/cgroup as /proc/PID/cgroup shows it.
    #[arg(long, value_name = "PATH", conflicts_with = "pid")]
    pub cgroup: Option<PathBuf>,
    /// Only this process and its descendants.
    #[arg(short = 'p', long = "pid")]
    pub pid: Option<i32>,
    /// Sort by this column: sizes largest first, pid and comm ascending (with -m, `pid` puts
    /// the mappings most processes map first; with -u, it sorts by uid).
    #[arg(long, value_enum, default_value_t = SortKey::Pss)]
    pub sort: SortKey,
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
    /// Also write the snapshot to FILE (JSON lines, with each process's mappings), for
    /// `agent diff`.
    #[arg(long, value_name = "FILE")]
    pub save: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SortKey {
    Pid,
    Rss,
    Pss,
    Uss,
    Swap,
    Hugetlb,
    Comm,
}

#[derive(clap::Args, Debug, Clone)]
pub struct DiffArgs {
    /// The earlier snapshot (`agent snapshot --save A.json`).
    pub before: PathBuf,
    /// The later snapshot.
    pub after: PathBuf,
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
    /// Rows per table in the human format (0: all; JSON has every row).
    #[arg(long, default_value_t = 20)]
    pub top: usize,
}

/// `agent snapshot`: read, save if asked, print. Exit 0.
pub fn run(args: SnapshotArgs) -> anyhow::Result<i32> {
    let scope = Scope::new(args.pid, args.cgroup.as_deref())?;
    let out_err = |p: &PathBuf| {
        let p = p.display().to_string();
        move |e| AgentError::Output(p, e)
    };
    // Created before the reads: an unwritable path fails at once.
    let save = match &args.save {
        Some(p) => Some((p, std::fs::File::create(p).map_err(out_err(p))?)),
        None => None,
    };
    // -m shows only mappings: their smaps suffice. A saved snapshot has both.
    let depth = match (args.mappings, save.is_some()) {
        (_, true) => read::Depth::Both,
        (true, false) => read::Depth::Smaps,
        (false, false) => read::Depth::Rollup,
    };
    let header = Header::now(scope.describe(), depth == read::Depth::Both);
    let mut taken = read::read_all(&scope.pids(), depth);
    let mut users = users::Users::default();
    for p in &mut taken.procs {
        p.user = users.name(p.uid).to_string();
    }
    if taken.denied > 0 {
        let n = table::count(taken.denied, "process", "processes");
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            eprintln!("{n} not readable even as root (permission denied: more capabilities than ours)");
        } else {
            eprintln!("{n} not readable: run as root to see them");
        }
    }
    if let Some((path, mut f)) = save {
        let mut text = save::line("snapshot", &header);
        text.extend(taken.procs.iter().map(save::saved_proc));
        text += &save::line("total", &aggregate::total(&taken.procs, taken.procs.len(), taken.denied, taken.gone));
        f.write_all(text.as_bytes()).map_err(out_err(path))?;
    }
    print(&render(&args, Header { mappings: false, ..header }, taken))
}

/// The table `args` ask for, human or JSON lines (after a header line).
fn render(args: &SnapshotArgs, header: Header, taken: Taken) -> String {
    let counts = (taken.procs.len(), taken.denied, taken.gone);
    let out = if args.format == Format::Json { save::line("snapshot", &header) } else { String::new() };
    out + &if args.mappings {
        emit(aggregate::by_mapping(&taken.procs), args, "mapping", counts, table::mappings)
    } else if args.users {
        emit(aggregate::by_user(&taken.procs), args, "user", counts, table::users)
    } else {
        emit(taken.procs, args, "process", counts, table::procs)
    }
}

fn emit<T: Row + Serialize>(
    mut rows: Vec<T>,
    args: &SnapshotArgs,
    ty: &str,
    (procs, denied, gone): (usize, usize, usize),
    human: fn(&[T], &aggregate::Total) -> String,
) -> String {
    aggregate::sort(&mut rows, args.sort);
    let total = aggregate::total(&rows, procs, denied, gone);
    match args.format {
        Format::Human => human(&rows, &total),
        Format::Json => rows.iter().map(|r| save::line(ty, r)).chain([save::line("total", &total)]).collect(),
    }
}

/// Write `text` to stdout; a closed stdout (`| head`) is not an error.
fn print(text: &str) -> anyhow::Result<i32> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(AgentError::Output("stdout".into(), e).into()),
        _ => Ok(0),
    }
}

/// `agent diff A B`: what grew between two saved snapshots. Exit 0.
pub fn diff(args: DiffArgs) -> anyhow::Result<i32> {
    let (before, after) = (save::load(&args.before)?, save::load(&args.after)?);
    let procs = diff::procs(&before, &after);
    let maps = diff::mappings(&before, &after);
    let (bp, ap) = (args.before.display().to_string(), args.after.display().to_string());
    let d = report::Diffed {
        before_path: &bp,
        after_path: &ap,
        before: &before,
        after: &after,
        procs: &procs,
        maps: &maps,
    };
    print(&report::render(&d, args.format, args.top))
}
