//! Sinks: where records go. Every sink sees every record, in order, the summary last; each
//! keeps what it needs (a line on stdout, a file written at the summary, later a metrics
//! registry). Logs go to stderr through `log`, never through a sink.
pub mod human;
pub mod json;
pub mod pprof;
mod pprof_proto;
pub mod stack_files;

use std::{io, time::Instant};

use crate::records::Record;

/// One destination of the record stream.
pub trait Sink: Send {
    /// A record, `ts` seconds after the watch began.
    fn emit(&mut self, ts: f64, record: &Record) -> io::Result<()>;
    /// Records emitted so far must reach their destination (end of an interval, and at exit).
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Human,
    Json,
}

/// The record stream on stdout in `format` (leak lines highlighted on a terminal).
pub fn stdout(format: Format) -> Box<dyn Sink> {
    let color = io::IsTerminal::is_terminal(&io::stdout());
    stream(io::BufWriter::new(io::stdout()), format, color)
}

/// The record stream into `out` in `format`.
pub fn stream(out: impl io::Write + Send + 'static, format: Format, color: bool) -> Box<dyn Sink> {
    match format {
        Format::Human => Box::new(human::Human::new(out, color)),
        Format::Json => Box::new(json::Json::new(out)),
    }
}

/// Every sink of a session, fed in the order they were given.
pub struct Sinks {
    start: Instant,
    sinks: Vec<Box<dyn Sink>>,
}

impl Sinks {
    pub fn new(start: Instant, sinks: Vec<Box<dyn Sink>>) -> Sinks {
        Sinks { start, sinks }
    }

    pub fn emit(&mut self, record: &Record) {
        let ts = (self.start.elapsed().as_secs_f64() * 1000.0).round() / 1000.0;
        for s in &mut self.sinks {
            if let Err(e) = s.emit(ts, record) {
                // stdout closed (e.g. piped into `head`): nothing more to say there.
                log::debug!("sink: {e}");
            }
        }
    }

    pub fn flush(&mut self) {
        for s in &mut self.sinks {
            let _ = s.flush();
        }
    }
}

/// Records collected in memory as their JSON values (with `ts`): what a test or an embedding
/// program reads back.
#[derive(Clone, Default)]
pub struct Collect(pub std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>);

impl Sink for Collect {
    fn emit(&mut self, ts: f64, record: &Record) -> io::Result<()> {
        let v = serde_json::to_value(crate::records::Stamped { ts, record })?;
        self.0.lock().expect("collect lock").push(v);
        Ok(())
    }
}
