//! `agent snapshot` and `agent diff`: smem done right, no eBPF, no root for your own processes.
use std::path::PathBuf;

use crate::sinks::Format;

#[derive(clap::Args, Debug, Clone)]
pub struct SnapshotArgs {
    /// Per mapping: the full smaps, summed by mapping name across processes (like `smem -m`).
    #[arg(short = 'm', long)]
    pub mappings: bool,
    /// Per user (like `smem -u`).
    #[arg(short = 'u', long, conflicts_with = "mappings")]
    pub users: bool,
    /// Only the processes of this cgroup (v2 or v1 directory, descendants included).
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<PathBuf>,
    /// Only this process and its descendants.
    #[arg(short = 'p', long = "pid")]
    pub pid: Option<i32>,
    /// Sort by this column, largest first.
    #[arg(long, value_enum, default_value_t = SortKey::Pss)]
    pub sort: SortKey,
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
    /// Also write the snapshot (JSON lines) to FILE, for `agent diff`.
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
}

pub fn run(_args: SnapshotArgs) -> anyhow::Result<i32> {
    anyhow::bail!("agent snapshot: not built yet")
}

pub fn diff(_args: DiffArgs) -> anyhow::Result<i32> {
    anyhow::bail!("agent diff: not built yet")
}
