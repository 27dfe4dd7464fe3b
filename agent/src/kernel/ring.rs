//! The ring reader: a thread that copies records out of the BPF ring buffer into batches and
//! hands them to the pipeline. The programs submit without wakeups (they cost 3x on faults), so
//! the reader polls on a short timer and is woken early only when the ring fills past a mark.
use std::{
    os::fd::AsRawFd,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use aya::maps::{MapData, RingBuf};
use bytes::Bytes;
use tokio::sync::mpsc;

use crate::kernel::events::BatchBuilder;

pub const POLL: Duration = Duration::from_millis(10);

/// A batch of records and when its poll began and ended reading the ring, in ns since `epoch`.
pub type Batch = ((u64, u64), Bytes);

/// What the reader shares besides its batches.
pub struct Shared {
    pub stop: AtomicBool,
    /// The start (ns since `epoch`) of the newest poll whose batch is already sent.
    pub polled_ns: AtomicU64,
    pub epoch: Instant,
}

pub fn spawn(mut ring: RingBuf<MapData>, tx: mpsc::Sender<Batch>, shared: Arc<Shared>) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name("ring-reader".into())
        .spawn(move || {
            let fd = ring.as_raw_fd();
            let mut batch = BatchBuilder::default();
            loop {
                let stopping = shared.stop.load(Ordering::Acquire);
                let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
                // SAFETY: one valid pollfd.
                unsafe { libc::poll(&mut pfd, 1, POLL.as_millis() as i32) };
                let at = shared.epoch.elapsed().as_nanos() as u64;
                while let Some(item) = ring.next() {
                    batch.push(&item);
                }
                let end = shared.epoch.elapsed().as_nanos() as u64;
                if !batch.is_empty() && tx.blocking_send(((at, end), batch.take())).is_err() {
                    return;
                }
                shared.polled_ns.store(at, Ordering::Release);
                if stopping {
                    return;
                }
            }
        })
        .expect("spawn ring reader thread")
}
