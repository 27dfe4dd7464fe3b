//! The session: wires the stages with bounded channels, owns signals and shutdown, and nothing
//! else. The logic lives in the stages (`Pipeline`, in `stages.rs`).
//!
//! ```text
//! ring reader thread ─batches─► Pipeline::on_batch ─► ledger ─► sinks (proc, faults records)
//! smaps sweeps (blocking pool) ─readings─► Sampler ─settled─► Judge ─► sinks (mem, leak)
//!                                                                └─► Evidence (full smaps) ─► sinks
//! ```
mod departures;
pub mod fold;
mod stages;

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use aya::maps::{MapData, RingBuf};
use tokio::{
    signal::unix::{signal, Signal, SignalKind},
    sync::mpsc,
};

pub use self::stages::{Kernel, Pipeline, Stages};
use crate::{kernel::ring, records::Record, sampling::smaps::Swept, sinks::StreamFailure, targets::spawn};

/// SIGINT and SIGTERM, taken before loading so that a signal while loading still gets a
/// summary. Must be called inside the runtime.
pub struct Signals(Signal, Signal);

impl Signals {
    pub fn take() -> std::io::Result<Signals> {
        Ok(Signals(signal(SignalKind::interrupt())?, signal(SignalKind::terminate())?))
    }

    /// The next signal: SIGINT or SIGTERM.
    pub async fn recv(&mut self) -> i32 {
        tokio::select! {
            _ = self.0.recv() => libc::SIGINT,
            _ = self.1.recv() => libc::SIGTERM,
        }
    }
}

/// How long a stop waits for the spawned command to exit after passing the signal on.
const CHILD_GRACE: Duration = Duration::from_millis(1500);

/// Exit code when the record stream's reader went away (`| head`): 128 + SIGPIPE, what a shell
/// shows for a writer killed by it. Any other write error on the stream: 1.
pub const EXIT_STREAM_CLOSED: i32 = 128 + libc::SIGPIPE;

/// How the session runs, besides its stages.
pub struct Settings {
    /// Between fault reports.
    pub interval: Duration,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Exit 3 if a leak verdict still stands at the end.
    pub fail_on_leak: bool,
    /// The record stream's write error: stop on it.
    pub stream: StreamFailure,
    /// Keep running when nothing watched is alive (`serve`: until a signal or the duration).
    pub forever: bool,
    /// Called at each interval's end: processes to watch from now on (`serve --comm`).
    pub discover: Option<Box<dyn FnMut() -> Vec<u32> + Send>>,
}

/// Run the pipeline until the watched tree is gone, the duration ends, a signal comes or the
/// record stream fails; then detach, drain, and emit the summary. On a signal or a failed
/// stream, a spawned command still running gets the signal (SIGTERM for the stream; not a
/// SIGINT that the terminal already sent it, Ctrl-C) and up to `CHILD_GRACE` to exit; it is
/// never waited for beyond that. The exit code: 141 (`EXIT_STREAM_CLOSED`) or 1 if the stream
/// failed, else 3 with `fail_on_leak` and a standing leak verdict, else 0 after a signal, else the command's.
pub async fn run(
    (mut p, mut swept_rx, mut evidence_rx): (Pipeline, mpsc::Receiver<Swept>, mpsc::UnboundedReceiver<Record>),
    ring: RingBuf<MapData>,
    mut signals: Signals,
    mut settings: Settings,
    child: Option<u32>,
) -> anyhow::Result<i32> {
    let start = p.start();
    // A daemon runs for weeks: its dead are folded into their name's totals, not kept.
    if settings.forever {
        p.fold_exited();
    }
    let (tx, mut rx) = mpsc::channel::<ring::Batch>(1024);
    let shared = Arc::new(ring::Shared { stop: AtomicBool::new(false), polled_ns: AtomicU64::new(0), epoch: start });
    let reader = ring::spawn(ring, tx, shared.clone());
    let mut child_exit = child.map(|pid| tokio::task::spawn_blocking(move || spawn::wait_exit_code(pid)));
    let mut exit_code = None;
    // Set once stopping: the command has been passed the signal and is given until then.
    let mut grace: Option<tokio::time::Instant> = None;
    let mut signalled = false;

    let mut tick = every(settings.interval);
    tick.tick().await;
    let mut smaps_tick = every(p.smaps_interval());
    // smaps readings wait until the ring has been read past the window they were taken in; a
    // timer checks.
    let mut settle = every(ring::POLL);
    let mut ticks = 0u64;
    let mut last_tick = Instant::now();
    let deadline = settings.duration.map(|d| start + d);

    loop {
        if grace.is_none() && settings.stream.get().is_some() {
            match stop(child, &child_exit, exit_code, libc::SIGTERM) {
                Some(until) => grace = Some(until),
                None => break,
            }
        }
        tokio::select! {
            Some((at, batch)) = rx.recv() => p.on_batch(at, batch),
            _ = tick.tick() => {
                ticks += 1;
                let dt = last_tick.elapsed().as_secs_f64();
                last_tick = Instant::now();
                if let Some(discover) = settings.discover.as_mut() {
                    for pid in discover() {
                        p.adopt(pid);
                    }
                }
                p.close_interval(ticks, dt);
                if settings.forever && ticks.is_multiple_of(fold::TRIM_EVERY_TICKS) {
                    p.shrink();
                    fold::release_freed_heap();
                }
                if (p.nothing_alive() && !settings.forever) || deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
            }
            _ = smaps_tick.tick(), if p.sampler_idle() => p.start_sweep(),
            Some(swept) = swept_rx.recv() => p.on_swept(swept),
            Some(r) = evidence_rx.recv() => p.publish_verdict(r),
            _ = settle.tick(), if p.readings_pending() => {
                // Every record submitted before `done` has been fed to the ledger: the start
                // of the last poll we processed, or of the reader's last poll when nothing
                // is queued after it (read before looking at the queue: it is stored after
                // the poll's batch is sent).
                let polled = shared.polled_ns.load(Ordering::Acquire);
                let done = if rx.is_empty() { polled.max(p.processed_ns()) } else { p.processed_ns() };
                p.settle(done);
            }
            Some(code) = async { match child_exit.as_mut() { Some(h) => h.await.ok(), None => None } }, if exit_code.is_none() => {
                exit_code = Some(code);
                if grace.is_some() {
                    break; // its exit record is drained below
                }
            }
            _ = async { tokio::time::sleep_until(grace.unwrap_or_else(tokio::time::Instant::now)).await }, if grace.is_some() => break,
            // --duration ends the watch on time, whatever the interval.
            _ = async { tokio::time::sleep_until(deadline.map_or_else(tokio::time::Instant::now, Into::into)).await }, if deadline.is_some() => break,
            sig = signals.recv() => {
                signalled = true;
                // A second signal while the command is given its grace: stop waiting for it.
                match (grace, stop(child, &child_exit, exit_code, sig)) {
                    (None, Some(until)) => grace = Some(until),
                    _ => break,
                }
            }
        }
    }

    // A second Ctrl-C or SIGTERM while we finish: leave at once (the programs go with our
    // file descriptors), rather than swallow it.
    tokio::spawn(async move {
        signals.recv().await;
        eprintln!("agent: signalled again while stopping: exiting now, without the summary");
        std::process::exit(130);
    });
    // The exit teardown of the last processes is still on its way: give it one poll. Then
    // detach every program (the maps we hold stay), so that nothing is submitted after the
    // final drain and the summary's counts add up, and drain what is left.
    tokio::time::sleep(ring::POLL * 3).await;
    p.take_program_stats();
    // Detaching takes a while per program (RCU), and the hooks still fire meanwhile: keep
    // feeding the ledger so the records do not pile up in memory.
    let programs = p.take_programs();
    let mut detach = tokio::task::spawn_blocking(move || drop(programs));
    loop {
        tokio::select! {
            Some((at, batch)) = rx.recv() => p.on_batch(at, batch),
            _ = &mut detach => break,
        }
    }
    shared.stop.store(true, Ordering::Release);
    // Drain until the reader has made its last poll and hung up: joining it first would
    // deadlock when it is blocked on a full channel.
    while let Some((at, batch)) = rx.recv().await {
        p.on_batch(at, batch);
    }
    let _ = tokio::task::spawn_blocking(move || reader.join()).await;
    let leaks = p.finish(ticks + 1, last_tick.elapsed().as_secs_f64(), evidence_rx).await;
    // A command still running past its grace is not waited for (nor is its waitpid task: the
    // runtime is shut down without it).
    let code = match (exit_code, child_exit) {
        (Some(c), _) => c,
        (None, Some(h)) if h.is_finished() => h.await.unwrap_or(0),
        _ => 0,
    };
    Ok(match settings.stream.get() {
        Some(std::io::ErrorKind::BrokenPipe) => EXIT_STREAM_CLOSED,
        Some(_) => 1,
        None if settings.fail_on_leak && leaks > 0 => 3,
        None if signalled => 0,
        None => code,
    })
}

/// Stopping: pass `sig` on to the spawned command if it still runs, and return until when to
/// wait for it; `None` when there is nothing to wait for. A SIGINT while the agent is in the
/// terminal's foreground is Ctrl-C, which the command got from the terminal already.
fn stop(
    child: Option<u32>,
    exit: &Option<tokio::task::JoinHandle<i32>>,
    code: Option<i32>,
    sig: i32,
) -> Option<tokio::time::Instant> {
    let pid = child?;
    if code.is_some() || exit.as_ref().is_none_or(|h| h.is_finished()) {
        return None; // exited (and reaped: its pid may be another process's by now)
    }
    if !(sig == libc::SIGINT && spawn::in_foreground()) {
        spawn::signal(pid, sig);
    }
    Some(tokio::time::Instant::now() + CHILD_GRACE)
}

fn every(period: Duration) -> tokio::time::Interval {
    let mut i = tokio::time::interval(period);
    i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    i
}
