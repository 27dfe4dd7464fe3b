//! JSON lines: one object per record, `type` and `ts` first (the `--format json` contract).
use std::io::{self, Write};

use super::Sink;
use crate::records::{Record, Stamped};

pub struct Json<W: Write + Send> {
    out: W,
}

impl<W: Write + Send> Json<W> {
    pub fn new(out: W) -> Json<W> {
        Json { out }
    }
}

impl<W: Write + Send> Sink for Json<W> {
    fn emit(&mut self, ts: f64, record: &Record) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, &Stamped { ts, record })?;
        self.out.write_all(b"\n")
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}
