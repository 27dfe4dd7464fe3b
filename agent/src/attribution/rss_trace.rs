//! The ledger's recent RSS values per process, stamped with the ring poll that brought them, so
//! that an smaps reading is compared with what the ledger held *while it was taken*. A process
//! that swings by megabytes every few milliseconds otherwise shows a drift that is only timing.
//! Each poll also keeps the pid's own page counts at its end, so the PSS/USS change between two
//! readings is explained by the ledger as it stood at those readings, not at their processing.
use std::collections::VecDeque;

/// Polls that began within this span (ns) of an entry's first one share the entry: under a
/// storm the reader drains the ring in many small polls, and a reading needs ~1 s of history,
/// not every poll.
const BUCKET_NS: u64 = 20_000_000;
/// Entries kept: older than this (ns) is trimmed, and at most `MAX_ENTRIES` per process (enough
/// for `KEEP_NS` of buckets: the cap only guards memory).
const KEEP_NS: u64 = 3_000_000_000;
const MAX_ENTRIES: usize = 160;

/// A ring poll: it began reading the ring at `.0` and ended at `.1` (ns since the watch
/// start). Its records were submitted before `.1`; any submitted before `.0` is in it or an
/// earlier poll.
pub type Poll = (u64, u64);

#[derive(Clone, Copy, Debug)]
struct Entry {
    /// The first poll's start and the last poll's end.
    at: Poll,
    min: i64,
    max: i64,
    end: i64,
    /// The pid's own pages (see `Own`) at the end of the poll.
    own: Own,
}

/// Pages so far, net: added by own faults to private and to shared mappings, and changed by
/// other causes.
pub type Own = [i64; 3];

#[derive(Default, Debug)]
pub struct RssTrace {
    entries: VecDeque<Entry>,
    /// The value and own pages at the end of the newest trimmed entry.
    base: Option<(i64, Own)>,
}

impl RssTrace {
    /// The ledger's RSS became `kib` in the ring poll `at`.
    pub fn note(&mut self, at: Poll, kib: i64, own: Own) {
        match self.entries.back_mut() {
            Some(e) if at.0 < e.at.0 + BUCKET_NS => {
                e.at.1 = e.at.1.max(at.1);
                e.min = e.min.min(kib);
                e.max = e.max.max(kib);
                e.end = kib;
                e.own = own;
            }
            _ => self.entries.push_back(Entry { at, min: kib, max: kib, end: kib, own }),
        }
        while self.entries.len() > MAX_ENTRIES || self.entries.front().is_some_and(|e| e.at.1 + KEEP_NS < at.0) {
            self.base = self.entries.pop_front().map(|e| (e.end, e.own));
        }
    }

    /// The lowest and highest values the ledger held from just before `from` to `to` (ns), or
    /// None when nothing is known of that window (then the current value is all there is):
    /// the value after the last poll that ended before `from`, and every value of the polls
    /// that may hold records of the window (ended after `from`, began by `to`).
    pub fn range(&self, from: u64, to: u64) -> Option<(i64, i64)> {
        let (before, inside) = self.window(from, to);
        let mut r = before.map(|(v, _)| (v, v));
        for e in inside {
            r = Some(r.map_or((e.min, e.max), |(lo, hi)| (lo.min(e.min), hi.max(e.max))));
        }
        r
    }

    /// The own pages at the poll boundary of the window whose RSS is nearest `smaps_kib` (the
    /// latest of equals): the ledger's best guess of where it stood when smaps was read.
    pub fn own_near(&self, from: u64, to: u64, smaps_kib: i64) -> Option<Own> {
        let (before, inside) = self.window(from, to);
        let mut best: Option<(i64, Own)> = None;
        for (v, own) in before.into_iter().chain(inside.map(|e| (e.end, e.own))) {
            let d = (v - smaps_kib).abs();
            if best.is_none_or(|(bd, _)| d <= bd) {
                best = Some((d, own));
            }
        }
        best.map(|(_, own)| own)
    }

    fn window(&self, from: u64, to: u64) -> (Option<(i64, Own)>, impl Iterator<Item = &Entry>) {
        let before = self.entries.iter().rev().find(|e| e.at.1 < from).map(|e| (e.end, e.own)).or(self.base);
        (before, self.entries.iter().filter(move |e| e.at.1 >= from && e.at.0 <= to))
    }
}

/// The ledger value closest to `smaps_kib` within `lo..=hi`: the drift is what no instant of
/// the window explains.
pub fn nearest(smaps_kib: i64, (lo, hi): (i64, i64)) -> i64 {
    smaps_kib.clamp(lo, hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A poll from `a` to `b` milliseconds.
    fn ms(a: u64, b: u64) -> Poll {
        (a * 1_000_000, b * 1_000_000)
    }

    #[test]
    fn a_swing_during_the_read_is_no_drift_a_steady_gap_is() {
        let mut t = RssTrace::default();
        t.note(ms(90, 100), 1000, [0; 3]);
        t.note(ms(190, 200), 9000, [2048, 0, 0]); // +8 MiB during the read
        t.note(ms(190, 200), 1000, [2048, 0, -2048]); // and back, within the same poll
        t.note(ms(390, 400), 1000, [2048, 0, -2048]);
        let r = t.range(ms(150, 250).0, ms(150, 250).1).unwrap();
        assert_eq!(r, (1000, 9000));
        assert_eq!(nearest(5000, r), 5000);
        // Steady from 300 to 350: only the value before counts.
        assert_eq!(t.range(ms(300, 0).0, ms(0, 350).1), Some((1000, 1000)));
        assert_eq!(nearest(1400, (1000, 1000)) - 1400, -400);
    }

    #[test]
    fn polls_close_together_share_an_entry_and_keep_its_extremes() {
        let mut t = RssTrace::default();
        for i in 0..100 {
            // A poll every 0.1 ms, as a reader draining a storm does: 1000 -> 1099 -> 1050.
            t.note((i * 100_000, i * 100_000 + 50_000), 1000 + i as i64, [0; 3]);
        }
        t.note((10_000_000, 10_050_000), 1050, [0; 3]);
        assert_eq!(t.entries.len(), 1);
        assert_eq!(t.range(0, 20_000_000), Some((1000, 1099)));
        t.note(ms(30, 31), 2000, [0; 3]);
        assert_eq!(t.entries.len(), 2);
        assert_eq!(t.range(ms(25, 0).0, ms(0, 40).1), Some((1050, 2000)));
    }

    #[test]
    fn own_pages_are_taken_where_the_ledger_matched_the_reading() {
        let mut t = RssTrace::default();
        t.note(ms(0, 10), 1000, [0; 3]);
        t.note(ms(30, 40), 9000, [2048, 0, 0]);
        t.note(ms(60, 70), 1000, [2048, 0, -2048]);
        // smaps read 9000 during (15, 65) ms: the ledger stood at 9000 after the second poll.
        assert_eq!(t.own_near(ms(15, 0).0, ms(0, 65).1, 9000), Some([2048, 0, 0]));
        // smaps read 1000: the latest poll that ended at 1000.
        assert_eq!(t.own_near(ms(15, 0).0, ms(0, 65).1, 1000), Some([2048, 0, -2048]));
        assert_eq!(RssTrace::default().own_near(0, 1, 5), None);
    }

    #[test]
    fn nothing_known_is_none_and_trimming_keeps_the_last_value() {
        let mut t = RssTrace::default();
        assert_eq!(t.range(0, 10), None);
        t.note((0, 1), 5, [0; 3]);
        t.note((KEEP_NS + 10, KEEP_NS + 11), 7, [0; 3]);
        assert_eq!(t.entries.len(), 1);
        assert_eq!(t.range(2, 3), Some((5, 5)));
        // A poll that ended after the read began may hold records of it: its values count.
        assert_eq!(t.range(KEEP_NS + 11, KEEP_NS + 12), Some((5, 7)));
        for i in 0..1000 {
            t.note((KEEP_NS + i * BUCKET_NS, KEEP_NS + i * BUCKET_NS + 1), i as i64, [0; 3]);
        }
        assert!(t.entries.len() <= MAX_ENTRIES);
    }
}
