//! Sinks: where records go. Every sink sees every record, in order, the summary last; each
//! keeps what it needs (a line on stdout, a file written at the summary, later a metrics
//! registry). Logs go to stderr through `log`, never through a sink.
pub mod human;
mod human_cgroup;
pub mod json;
pub mod pprof;
mod pprof_proto;
pub mod stack_files;

use std::{
    io,
    sync::{Arc, OnceLock},
    time::Instant,
};

use crate::records::Record;

/// One destination of the record stream.
pub trait Sink: Send {
    /// A record, `ts` seconds after the watch began.
    fn emit(&mut self, ts: f64, record: &Record) -> io::Result<()>;
    /// Records emitted so far must reach their destination (end of an interval, and at exit).
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
    /// The pipeline's state at the end of an interval, before its records: for sinks that keep
    /// a live view rather than a stream (`serve`'s metrics).
    fn view(&mut self, _view: &View) {}
}

/// What the pipeline holds at the end of an interval.
pub struct View<'a> {
    pub ledger: &'a crate::attribution::Ledger,
    pub judge: &'a crate::judgement::Judge,
    /// Records lost to a full ring since the start.
    pub lost: u64,
    /// With --bpf-stats: the programs' kernel run statistics so far.
    pub programs: &'a [crate::records::ProgStat],
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

/// Every sink of a session, fed in the order they were given. The first is the record stream
/// (stdout or `-o FILE`): its first write error is kept, the session stops on it, and from then
/// on only the summary is written, to the fallback (stderr, in the stream's format) if any.
pub struct Sinks {
    start: Instant,
    sinks: Vec<Box<dyn Sink>>,
    fallback: Option<Box<dyn Sink>>,
    failed: StreamFailure,
}

/// The record stream's first write error, shared with the session, which stops on it.
#[derive(Clone, Debug, Default)]
pub struct StreamFailure(Arc<OnceLock<io::ErrorKind>>);

impl StreamFailure {
    pub fn get(&self) -> Option<io::ErrorKind> {
        self.0.get().copied()
    }
}

impl Sinks {
    pub fn new(start: Instant, sinks: Vec<Box<dyn Sink>>) -> Sinks {
        Sinks { start, sinks, fallback: None, failed: StreamFailure::default() }
    }

    /// Where the summary goes when the record stream has failed.
    pub fn with_fallback(mut self, fallback: Box<dyn Sink>) -> Sinks {
        self.fallback = Some(fallback);
        self
    }

    /// The record stream's first write error (stdout closed, disk full), as it will be known.
    pub fn failure(&self) -> StreamFailure {
        self.failed.clone()
    }

    pub fn emit(&mut self, record: &Record) {
        let ts = (self.start.elapsed().as_secs_f64() * 1000.0).round() / 1000.0;
        for (i, s) in self.sinks.iter_mut().enumerate() {
            if i == 0 && self.failed.get().is_some() {
                continue;
            }
            if let Err(e) = s.emit(ts, record) {
                Self::fail(&self.failed, i, e);
            }
        }
        if self.failed.get().is_some() && matches!(record, Record::Summary { .. }) {
            if let Some(f) = self.fallback.as_mut() {
                let _ = f.emit(ts, record);
            }
        }
    }

    pub fn view(&mut self, view: &View) {
        for s in &mut self.sinks {
            s.view(view);
        }
    }

    pub fn flush(&mut self) {
        for (i, s) in self.sinks.iter_mut().enumerate() {
            if i == 0 && self.failed.get().is_some() {
                continue;
            }
            if let Err(e) = s.flush() {
                Self::fail(&self.failed, i, e);
            }
        }
        if let Some(f) = self.fallback.as_mut() {
            let _ = f.flush();
        }
    }

    fn fail(failed: &StreamFailure, i: usize, e: io::Error) {
        if i == 0 && failed.0.set(e.kind()).is_ok() {
            log::warn!("the record stream failed ({e}): stopping");
        } else {
            log::debug!("sink {i}: {e}");
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
