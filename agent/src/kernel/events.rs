//! Ring-buffer records -> typed kernel events (not the output records of `records.rs`). Every length and discriminant is checked: a truncated or
//! unknown record is an error, never undefined behaviour.
use std::mem::size_of;

use agent_common::{
    AreaEvent, CowEvent, EventHeader, EventKind, ExecMmEvent, HugetlbEvent, OomEvent, OpenEvent, ProcEvent, RssEvent,
    SyscallEvent,
};
use bytes::{Buf, BufMut, Bytes, BytesMut};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    Rss(RssEvent),
    Syscall(SyscallEvent),
    Fork(ProcEvent),
    Exec(ProcEvent),
    Exit(ProcEvent),
    Oom(OomEvent),
    Open(OpenEvent),
    Cow(CowEvent),
    ExecMm(ExecMmEvent),
    Join(ProcEvent),
    Leave(ProcEvent),
    Hugetlb(HugetlbEvent),
    Area(AreaEvent),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {got} bytes is shorter than the {need}-byte {what}")]
    Truncated { what: &'static str, need: usize, got: usize },
    #[error("unknown record kind {0}")]
    UnknownKind(u32),
}

fn read<T: aya::Pod>(buf: &[u8], what: &'static str) -> Result<T, DecodeError> {
    if buf.len() < size_of::<T>() {
        return Err(DecodeError::Truncated { what, need: size_of::<T>(), got: buf.len() });
    }
    // SAFETY: T is Pod (any bit pattern is valid) and the length was checked above.
    Ok(unsafe { std::ptr::read_unaligned(buf.as_ptr().cast::<T>()) })
}

pub fn decode(buf: &[u8]) -> Result<Event, DecodeError> {
    let hdr: EventHeader = read(buf, "header")?;
    match EventKind::try_from(hdr.kind).map_err(DecodeError::UnknownKind)? {
        EventKind::Rss => read(buf, "rss event").map(Event::Rss),
        EventKind::Syscall => read(buf, "syscall event").map(Event::Syscall),
        EventKind::Fork => read(buf, "proc event").map(Event::Fork),
        EventKind::Exec => read(buf, "proc event").map(Event::Exec),
        EventKind::Exit => read(buf, "proc event").map(Event::Exit),
        EventKind::Oom => read(buf, "oom event").map(Event::Oom),
        EventKind::Open => read(buf, "open event").map(Event::Open),
        EventKind::Cow => read(buf, "cow event").map(Event::Cow),
        EventKind::ExecMm => read(buf, "exec mm event").map(Event::ExecMm),
        EventKind::Join => read(buf, "proc event").map(Event::Join),
        EventKind::Leave => read(buf, "proc event").map(Event::Leave),
        EventKind::Hugetlb => read(buf, "hugetlb event").map(Event::Hugetlb),
        EventKind::Area => read(buf, "area event").map(Event::Area),
    }
}

/// A batch of raw records as the ring reader copied them out: `u32` length, then the bytes.
/// The reader thread only copies; decoding happens in the pipeline.
#[derive(Default)]
pub struct BatchBuilder(BytesMut);

impl BatchBuilder {
    pub fn push(&mut self, rec: &[u8]) {
        self.0.reserve(4 + rec.len());
        self.0.put_u32_le(rec.len() as u32);
        self.0.put_slice(rec);
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// The records pushed so far. A buffer that grew past `KEEP` for a backlog burst is not
    /// kept for the next batch: it is freed with the batch it carries, so a one-off burst does
    /// not pin up to a ring's size of heap for the agent's whole life.
    pub fn take(&mut self) -> Bytes {
        const KEEP: usize = 1 << 20;
        let large = self.0.capacity() > KEEP;
        let batch = self.0.split().freeze();
        if large {
            self.0 = BytesMut::new();
        }
        batch
    }
}

/// Iterate the records of a batch; a batch cut short ends the iteration with an error.
pub fn events(mut batch: Bytes) -> impl Iterator<Item = Result<Event, DecodeError>> {
    std::iter::from_fn(move || {
        if !batch.has_remaining() {
            return None;
        }
        if batch.remaining() < 4 {
            let got = batch.remaining();
            batch.clear();
            return Some(Err(DecodeError::Truncated { what: "length prefix", need: 4, got }));
        }
        let len = batch.get_u32_le() as usize;
        if batch.remaining() < len {
            let got = batch.remaining();
            batch.clear();
            return Some(Err(DecodeError::Truncated { what: "record", need: len, got }));
        }
        let rec = batch.split_to(len);
        Some(decode(&rec))
    })
}

/// Printable comm from a NUL-padded kernel buffer.
pub fn comm_str(comm: &[u8]) -> String {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes_of<T: aya::Pod>(v: &T) -> Vec<u8> {
        unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
    }

    fn rss() -> RssEvent {
        RssEvent {
            hdr: EventHeader { kind: EventKind::Rss as u32, tgid: 7, tid: 8, _pad: 0, ts_ns: 9 },
            mm_id: 1,
            member: 1,
            cause: 1,
            flags: 1,
            size: 8192,
            delta: 4096,
            addr: 0x1000,
            aux: 6,
            stack_id: -1,
            _pad2: 0,
        }
    }

    #[test]
    fn decodes_each_kind() {
        assert_eq!(decode(&bytes_of(&rss())), Ok(Event::Rss(rss())));
        let p = ProcEvent {
            hdr: EventHeader { kind: EventKind::Exit as u32, tgid: 3, tid: 3, _pad: 0, ts_ns: 1 },
            pid: 3,
            ppid: 0,
            comm: *b"demo\0\0\0\0\0\0\0\0\0\0\0\0",
        };
        assert_eq!(decode(&bytes_of(&p)), Ok(Event::Exit(p)));
        assert_eq!(comm_str(&p.comm), "demo");
        let s = SyscallEvent {
            hdr: EventHeader { kind: EventKind::Syscall as u32, ..Default::default() },
            nr: 9,
            args: [0, 4096, 3, 0x22, u64::MAX, 0],
            ret: 0x7f00_0000_0000,
        };
        assert_eq!(decode(&bytes_of(&s)), Ok(Event::Syscall(s)));
        let o = OomEvent {
            hdr: EventHeader { kind: EventKind::Oom as u32, tgid: 5, tid: 5, _pad: 0, ts_ns: 2 },
            pid: 5,
            uid: 1000,
            comm: *b"wl-grow\0\0\0\0\0\0\0\0\0",
            anon_rss_kib: 65_280,
            oom_score_adj: -17,
            ..Default::default()
        };
        assert_eq!(decode(&bytes_of(&o)), Ok(Event::Oom(o)));
        assert!(matches!(decode(&bytes_of(&o)[..95]), Err(DecodeError::Truncated { what: "oom event", .. })));
        let c = CowEvent {
            hdr: EventHeader { kind: EventKind::Cow as u32, tgid: 5, tid: 6, _pad: 0, ts_ns: 0 },
            addr: 0x7f00_0000_1234,
            err: 7,
        };
        assert_eq!(decode(&bytes_of(&c)), Ok(Event::Cow(c)));
        assert!(matches!(decode(&bytes_of(&c)[..39]), Err(DecodeError::Truncated { what: "cow event", .. })));
        let x = ExecMmEvent {
            hdr: EventHeader { kind: EventKind::ExecMm as u32, tgid: 5, tid: 5, _pad: 0, ts_ns: 3 },
            start_code: 0x5555_0000_1000,
            at_base: 0x7f00_0000_0000,
            len: 10,
            ..Default::default()
        };
        assert_eq!(decode(&bytes_of(&x)), Ok(Event::ExecMm(x)));
        assert!(matches!(decode(&bytes_of(&x)[..375]), Err(DecodeError::Truncated { what: "exec mm event", .. })));
    }

    #[test]
    fn truncated_and_unknown_are_errors() {
        assert!(matches!(decode(&[]), Err(DecodeError::Truncated { what: "header", .. })));
        assert!(matches!(decode(&[1, 0, 0]), Err(DecodeError::Truncated { .. })));
        let full = bytes_of(&rss());
        for cut in [24, 40, 71, 79] {
            assert!(matches!(decode(&full[..cut]), Err(DecodeError::Truncated { what: "rss event", .. })));
        }
        let mut unknown = full.clone();
        unknown[0] = 42;
        assert_eq!(decode(&unknown), Err(DecodeError::UnknownKind(42)));
        // Kind 0 and huge values too.
        unknown[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode(&unknown), Err(DecodeError::UnknownKind(u32::MAX)));
    }

    #[test]
    fn a_burst_does_not_pin_its_buffer() {
        let mut b = BatchBuilder::default();
        let rec = vec![7u8; 4096];
        for _ in 0..1024 {
            b.push(&rec);
        }
        let big = b.take();
        assert_eq!(big.len(), 1024 * (4 + 4096));
        assert_eq!(b.0.capacity(), 0, "the 4 MiB buffer goes with its batch");
        b.push(&rec);
        let small = b.take();
        drop(big);
        b.push(&rec);
        assert!(b.0.capacity() < 1 << 20);
        assert_eq!(events(small).count(), 1);
    }

    #[test]
    fn batch_round_trip_and_cut_batch() {
        let mut b = BatchBuilder::default();
        b.push(&bytes_of(&rss()));
        b.push(&[5, 0, 0, 0]);
        let batch = b.take();
        let got: Vec<_> = events(batch.clone()).collect();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0], Ok(Event::Rss(rss())));
        assert!(got[1].is_err());
        let cut = batch.slice(..batch.len() - 1);
        let got: Vec<_> = events(cut).collect();
        assert!(matches!(got[1], Err(DecodeError::Truncated { what: "record", .. })));
        assert!(events(Bytes::from_static(&[1, 0])).next().unwrap().is_err());
    }
}

#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Any bytes: an event or an error, never a panic. Run long with PROPTEST_CASES.
        #[test]
        fn decode_never_panics(buf in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&buf);
        }

        /// A valid header kind followed by random bytes of any length.
        #[test]
        fn decode_known_kinds_with_random_bodies(kind in 0u32..11, body in proptest::collection::vec(any::<u8>(), 0..120)) {
            let mut buf = kind.to_le_bytes().to_vec();
            buf.extend(body);
            match decode(&buf) {
                // Every kind the ABI knows decodes (new kinds need no change here).
                Ok(_) => prop_assert!(EventKind::try_from(kind).is_ok()),
                Err(DecodeError::UnknownKind(k)) => prop_assert_eq!(k, kind),
                Err(DecodeError::Truncated { need, got, .. }) => prop_assert!(got < need),
            }
        }

        /// Random batches: iteration ends, never panics.
        #[test]
        fn batches_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..400)) {
            let n = events(Bytes::from(buf)).count();
            prop_assert!(n <= 400);
        }
    }
}
