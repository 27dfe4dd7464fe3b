//! A leak record's evidence: the kernel's own accounting of the growing mapping, the pid's full
//! `/proc/PID/smaps` summed over the VMAs that hold it. Read only for the pid being reported, on
//! the blocking pool (it walks page tables); the record comes back on a channel when the read is
//! done.
use std::time::Duration;

use tokio::sync::mpsc;

use crate::{records::Record, sampling::smaps};

pub struct Evidence {
    /// Each read in flight holds a clone; dropping this one lets the channel close when they end.
    tx: Option<mpsc::UnboundedSender<Record>>,
}

impl Evidence {
    /// The stage, and the channel its records come back on.
    pub fn new() -> (Evidence, mpsc::UnboundedReceiver<Record>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Evidence { tx: Some(tx) }, rx)
    }

    /// Read the smaps of `r`'s pid over `ranges` (where it maps the mapping) into the record.
    /// Must run inside the tokio runtime.
    pub fn gather(&self, mut r: Record, ranges: Vec<(u64, u64)>) {
        let (Record::Leak { pid, .. }, Some(tx)) = (&r, &self.tx) else { return };
        let (pid, tx) = (*pid, tx.clone());
        tokio::task::spawn_blocking(move || {
            if let Record::Leak { smaps_mapping, .. } = &mut r {
                *smaps_mapping = smaps::read_vmas(pid, &ranges);
            }
            let _ = tx.send(r);
        });
    }

    /// No more reads: the records still being read, once their reads end (5 s at most each).
    pub async fn finish(&mut self, mut rx: mpsc::UnboundedReceiver<Record>) -> Vec<Record> {
        self.tx = None;
        let mut out = Vec::new();
        while let Ok(Some(r)) = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
            out.push(r);
        }
        out
    }
}
