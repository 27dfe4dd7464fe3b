//! `--folded FILE` and `--flamegraph FILE.svg`: faulted pages by stack, written when the summary
//! arrives. The files are created when the watch starts, so a path that cannot be written is
//! refused then, not found out at the end.
use std::{fs::File, io, path::PathBuf};

use super::Sink;
use crate::{records::Record, stacks};

/// An output file, created at start.
pub struct OutFile {
    pub path: PathBuf,
    pub file: File,
}

impl OutFile {
    pub fn create(path: &std::path::Path) -> Result<OutFile, crate::error::AgentError> {
        let file = File::create(path).map_err(|e| crate::error::AgentError::Output(path.display().to_string(), e))?;
        Ok(OutFile { path: path.to_path_buf(), file })
    }
}

pub struct StackFiles {
    pub folded: Option<OutFile>,
    pub flamegraph: Option<OutFile>,
}

impl Sink for StackFiles {
    fn emit(&mut self, _ts: f64, record: &Record) -> io::Result<()> {
        let Record::Summary { folded: lines, .. } = record else { return Ok(()) };
        if let Some(f) = &mut self.folded {
            if let Err(e) = io::Write::write_all(&mut f.file, (lines.join("\n") + "\n").as_bytes()) {
                log::error!("cannot write folded stacks to {}: {e}", f.path.display());
            }
        }
        if let Some(f) = &self.flamegraph {
            let out = io::BufWriter::new(&f.file);
            if let Err(e) = stacks::flamegraph(lines, "Pages faulted in, by user stack", out) {
                log::error!("cannot write the flamegraph to {}: {e:#}", f.path.display());
            }
        }
        Ok(())
    }
}
