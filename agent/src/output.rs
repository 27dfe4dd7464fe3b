//! The output stage: records to stdout, as JSON lines or human text. Logs go to stderr.
use std::{
    io::{BufWriter, Stdout, Write},
    time::Instant,
};

use crate::{
    human,
    record::{MemStat, Record, Stamped},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Human,
    Json,
}

pub struct Output {
    format: Format,
    start: Instant,
    out: BufWriter<Stdout>,
    page_kib: i64,
}

impl Output {
    pub fn new(format: Format, start: Instant) -> Output {
        // SAFETY: sysconf has no preconditions.
        let page_kib = (unsafe { libc::sysconf(libc::_SC_PAGESIZE) } / 1024).max(4) as i64;
        Output { format, start, out: BufWriter::new(std::io::stdout()), page_kib }
    }

    pub fn emit(&mut self, record: Record, mem: Option<&MemStat>) {
        let ts = (self.start.elapsed().as_secs_f64() * 1000.0).round() / 1000.0;
        let r = match self.format {
            Format::Json => serde_json::to_writer(&mut self.out, &Stamped { ts, record })
                .map_err(std::io::Error::from)
                .and_then(|()| self.out.write_all(b"\n")),
            Format::Human => match human::render(ts, &record, mem, self.page_kib) {
                Some(line) => writeln!(self.out, "{line}"),
                None => Ok(()),
            },
        };
        if let Err(e) = r {
            // stdout closed (e.g. piped into `head`): nothing more to say there.
            log::debug!("stdout: {e}");
        }
    }

    pub fn flush(&mut self) {
        let _ = self.out.flush();
    }
}
