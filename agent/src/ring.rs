//! The ring reader: a thread that copies records out of the BPF ring buffer into batches and
//! hands them to the pipeline. The programs submit without wakeups (they cost 3x on faults), so
//! the reader polls on a short timer and is woken early only when the ring fills past a mark.
use std::{
    os::fd::AsRawFd,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::Duration,
};

use aya::maps::{MapData, RingBuf};
use bytes::Bytes;
use tokio::sync::mpsc;

use crate::decode::BatchBuilder;

pub const POLL: Duration = Duration::from_millis(10);

pub fn spawn(mut ring: RingBuf<MapData>, tx: mpsc::Sender<Bytes>, stop: Arc<AtomicBool>) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name("ring-reader".into())
        .spawn(move || {
            let fd = ring.as_raw_fd();
            let mut batch = BatchBuilder::default();
            loop {
                let stopping = stop.load(Ordering::Acquire);
                let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
                // SAFETY: one valid pollfd.
                unsafe { libc::poll(&mut pfd, 1, POLL.as_millis() as i32) };
                while let Some(item) = ring.next() {
                    batch.push(&item);
                }
                if !batch.is_empty() && tx.blocking_send(batch.take()).is_err() {
                    return;
                }
                if stopping {
                    return;
                }
            }
        })
        .expect("spawn ring reader thread")
}
