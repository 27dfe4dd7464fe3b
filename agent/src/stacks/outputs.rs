//! What the stacks give the rest of the pipeline: the top stacks of leak records and of the
//! summary, folded lines and their flamegraph (`--folded`, `--flamegraph`), and the profile
//! samples of `--pprof`.
use super::{Frames, Stacks, DEPTH_BUCKETS};
use crate::{
    attribution::Ledger,
    records::{DepthBucket, ProcSummary, Record, StackSummary},
};

/// One profile sample: the pages a (pid, stack) faulted into one mapping.
#[derive(Clone, Debug, PartialEq)]
pub struct ProfileSample {
    pub pid: u32,
    pub comm: String,
    /// The mapping the pages went to, as the maps name it.
    pub mapping: String,
    pub pages: i64,
    pub bytes: i64,
    pub frames: Frames,
}

/// Folded stacks (`comm;root;...;leaf pages`), the input of flamegraph tools.
pub fn folded_line<S: AsRef<str>>(comm: &str, frames: &[S], pages: i64) -> String {
    let mut s = comm.replace(';', ":");
    for f in frames.iter().rev() {
        s.push(';');
        s.push_str(&f.as_ref().replace(';', ":"));
    }
    format!("{s} {pages}")
}

/// Render folded lines as an SVG flamegraph of pages.
pub fn flamegraph(lines: &[String], title: &str, out: impl std::io::Write) -> anyhow::Result<()> {
    let mut opts = inferno::flamegraph::Options::default();
    opts.title = title.to_string();
    opts.count_name = "pages".to_string();
    inferno::flamegraph::from_lines(&mut opts, lines.iter().map(String::as_str), out)?;
    Ok(())
}

/// Glue between the ledger and the stack resolver.
impl Stacks {
    /// Place the stacks seen since the last call, while each pid's mappings are current; they
    /// are named when first wanted (a verdict, the end).
    pub fn resolve_new(&mut self, ledger: &mut Ledger) {
        for (pid, ids) in ledger.take_new_stacks() {
            let Some(p) = ledger.get(pid) else { continue };
            for id in ids {
                self.place(pid, id, p.maps());
            }
        }
    }

    /// Put the pid's top stacks into a leak record.
    pub fn fill_leak(&mut self, rec: &mut Record, ledger: &Ledger) {
        if let Record::Leak { pid, stacks, .. } = rec {
            if let Some(p) = ledger.get(*pid) {
                *stacks = self.top(*pid, &p.stacks, p.maps(), 3);
            }
        }
    }

    /// Top stacks for the summary: flagged pids and the `n` biggest faulters.
    pub fn fill_summary(&mut self, procs: &mut [ProcSummary], ledger: &Ledger, n: usize) {
        let mut by_pages: Vec<(i64, u32)> = procs.iter().map(|p| (p.pages.total(), p.pid)).collect();
        by_pages.sort_unstable_by(|a, b| b.cmp(a));
        let big: Vec<u32> = by_pages.iter().take(n).map(|&(_, pid)| pid).collect();
        for s in procs.iter_mut().filter(|s| s.leak || big.contains(&s.pid)) {
            if let Some(p) = ledger.get(s.pid) {
                s.stacks = self.top(s.pid, &p.stacks, p.maps(), 3);
            }
        }
    }

    pub fn summary(&self, errors: u64) -> StackSummary {
        let depths =
            DEPTH_BUCKETS.iter().zip(self.depths).map(|(&frames, stacks)| DepthBucket { frames, stacks }).collect();
        StackSummary { depths, errors, symbolizer: self.helper.stats }
    }

    /// Folded lines of every pid's pages by stack.
    pub fn folded(&mut self, ledger: &Ledger) -> Vec<String> {
        let mut procs: Vec<_> = ledger.procs().collect();
        procs.sort_unstable_by_key(|p| p.pid);
        let mut out = Vec::new();
        for p in procs {
            let mut ids: Vec<(&i32, &i64)> = p.stacks.iter().filter(|(_, &n)| n > 0).collect();
            ids.sort_unstable();
            for (&id, &pages) in ids {
                let frames = self.resolve(p.pid, id, p.maps());
                out.push(folded_line(&p.comm, &frames, pages));
            }
        }
        out
    }

    /// Profile samples of every pid's pages by stack and mapping (`--pprof`).
    pub fn profile(&mut self, ledger: &Ledger) -> Vec<ProfileSample> {
        let page = ledger.page_size();
        let mut procs: Vec<_> = ledger.procs().collect();
        procs.sort_unstable_by_key(|p| p.pid);
        let mut out = Vec::new();
        for p in procs {
            let mut v: Vec<_> = p.stack_mappings.iter().filter(|(_, &n)| n > 0).collect();
            v.sort_unstable();
            for ((id, mapping), &pages) in v {
                out.push(ProfileSample {
                    pid: p.pid,
                    comm: p.comm.clone(),
                    mapping: mapping.name.to_string(),
                    pages,
                    bytes: pages * page,
                    frames: self.resolve(p.pid, *id, p.maps()),
                });
            }
        }
        out
    }
}
