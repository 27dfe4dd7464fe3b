//! `--folded FILE` and `--flamegraph FILE.svg`: faulted pages by stack, written when the summary
//! arrives. A file that cannot be written is reported, not fatal: the summary still goes out.
use std::{io, path::PathBuf};

use super::Sink;
use crate::{records::Record, stacks};

pub struct StackFiles {
    pub folded: Option<PathBuf>,
    pub flamegraph: Option<PathBuf>,
}

impl Sink for StackFiles {
    fn emit(&mut self, _ts: f64, record: &Record) -> io::Result<()> {
        let Record::Summary { folded: lines, .. } = record else { return Ok(()) };
        if let Some(path) = &self.folded {
            if let Err(e) = std::fs::write(path, lines.join("\n") + "\n") {
                log::error!("cannot write folded stacks to {}: {e}", path.display());
            }
        }
        if let Some(path) = &self.flamegraph {
            let r = std::fs::File::create(path).map_err(anyhow::Error::from).and_then(|f| {
                stacks::flamegraph(lines, "Pages faulted in, by user stack", std::io::BufWriter::new(f))
            });
            if let Err(e) = r {
                log::error!("cannot write the flamegraph to {}: {e:#}", path.display());
            }
        }
        Ok(())
    }
}
