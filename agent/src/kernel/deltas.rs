//! rss_stat sizes -> deltas, in ring order. `kmem:rss_stat` carries each counter's absolute
//! size; the delta against the previous size of the same (mm, member) is taken here rather than
//! in the rss program, which saves a hash-map update on every fault. The ring is one buffer, so
//! its order is the order the programs reserved their records: the same order a kernel-side
//! map would have seen, and a record lost to a full ring folds into the next delta instead of
//! vanishing.
//!
//! Ring order is not counter order across CPUs: two threads of one mm faulting on two CPUs each
//! read the summed counter and then reserve a slot, and can do so crosswise (sizes 101, 102
//! arrive as 102, 101: deltas +2 and -1 instead of +1 and +1, and the counter's next record
//! makes the total whole again). Totals stay exact; a page can move between the mappings the
//! two threads fault. Measured (tests/thread_deltas.rs, two
//! threads writing 64 MiB each on 2 CPUs): 0 to 36 pages of 16384 moved, the sum exact.
use std::collections::HashMap;

use agent_common::{cause, last_size_key, rss_flags, RssEvent};

#[derive(Default)]
pub struct Deltas {
    last: HashMap<u64, i64>,
}

impl Deltas {
    /// As `Ledger::shrink`.
    pub fn shrink(&mut self) {
        self.last.shrink_to(self.last.len() * 2);
    }

    /// Fill `e.delta` (and `UNSEEDED` when no earlier size is known); false when the counter did
    /// not move, and the record carries nothing.
    pub fn apply(&mut self, e: &mut RssEvent) -> bool {
        if e.cause == cause::NEW_MM {
            // The first change of an mm a watched task builds (a fork's copy, exec's new image):
            // it starts from zero, whatever an mm freed before under the same id left.
            let first = e.flags & rss_flags::NEW_MM_FIRST != 0;
            for m in 0..4 {
                let k = last_size_key(e.mm_id, m);
                if first {
                    self.last.insert(k, 0);
                } else {
                    self.last.entry(k).or_insert(0);
                }
            }
        }
        let prev = self.last.insert(last_size_key(e.mm_id, e.member), e.size);
        e.delta = match prev {
            Some(p) => e.size - p,
            None => {
                e.flags |= rss_flags::UNSEEDED;
                e.size
            }
        };
        e.delta != 0
    }

    /// Forget an mm that is gone: its id is soon another mm's.
    pub fn forget(&mut self, mm_id: u32) {
        for m in 0..4 {
            self.last.remove(&last_size_key(mm_id, m));
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.last.len()
    }
}

#[cfg(test)]
mod tests {
    use agent_common::member;

    use super::*;

    fn ev(mm_id: u32, m: u32, why: u32, flags: u32, size: i64) -> RssEvent {
        RssEvent { mm_id, member: m, cause: why, flags, size, ..Default::default() }
    }

    #[test]
    fn deltas_follow_sizes_per_mm_and_member() {
        let mut d = Deltas::default();
        let mut e = ev(1, member::ANON, cause::FAULT, 0, 8192);
        assert!(d.apply(&mut e));
        assert_eq!((e.delta, e.flags & rss_flags::UNSEEDED), (8192, rss_flags::UNSEEDED));
        let mut e = ev(1, member::ANON, cause::FAULT, rss_flags::FIRST_OF_FAULT, 12288);
        assert!(d.apply(&mut e));
        assert_eq!((e.delta, e.flags), (4096, rss_flags::FIRST_OF_FAULT));
        // Another member and another mm have their own sizes.
        let mut e = ev(1, member::FILE, cause::FAULT, 0, 4096);
        assert!(d.apply(&mut e) && e.flags & rss_flags::UNSEEDED != 0);
        let mut e = ev(2, member::ANON, cause::SYSCALL, 0, 4096);
        assert!(d.apply(&mut e) && e.delta == 4096);
        // No move: nothing to report.
        let mut e = ev(1, member::ANON, cause::OTHER, 0, 12288);
        assert!(!d.apply(&mut e));
        let mut e = ev(1, member::ANON, cause::EXIT, 0, 0);
        assert!(d.apply(&mut e) && e.delta == -12288);
    }

    #[test]
    fn a_new_mm_starts_from_zero_and_a_forgotten_one_is_unseeded() {
        let mut d = Deltas::default();
        let mut old = ev(7, member::ANON, cause::FAULT, 0, 1 << 20);
        d.apply(&mut old);
        // The id comes back as a fork's copy: reset, then exact.
        let mut e = ev(7, member::ANON, cause::NEW_MM, rss_flags::NEW_MM_FIRST, 40960);
        assert!(d.apply(&mut e));
        assert_eq!((e.delta, e.flags & rss_flags::UNSEEDED), (40960, 0));
        let mut e = ev(7, member::FILE, cause::NEW_MM, 0, 4096);
        assert!(d.apply(&mut e) && e.delta == 4096 && e.flags & rss_flags::UNSEEDED == 0);
        // Without the first flag (built by a task without a slot): zero only where unknown.
        let mut e = ev(8, member::SHMEM, cause::NEW_MM, 0, 4096);
        assert!(d.apply(&mut e) && e.delta == 4096 && e.flags & rss_flags::UNSEEDED == 0);
        let mut e = ev(7, member::ANON, cause::NEW_MM, 0, 45056);
        assert!(d.apply(&mut e) && e.delta == 4096);
        d.forget(7);
        let mut e = ev(7, member::ANON, cause::FAULT, 0, 49152);
        assert!(d.apply(&mut e) && e.flags & rss_flags::UNSEEDED != 0);
        assert_eq!(d.len(), 4 + 1);
    }
}
