//! One watched process as the ledger knows it: its mms' counters, its mappings, what it did
//! this interval and in all, and the traces the judgement reads back.
use std::collections::HashMap;

use agent_common::{cause, member};

use super::{
    activity::Activity,
    mappings::{MappingId, MappingMap},
    rss_trace::{self, RssTrace},
    ProcSource,
};
use crate::records::{Causes, ProcSummary};

/// Time constant of the per-mapping growth rate, seconds.
const MAPPING_RATE_TAU_S: f64 = 30.0;
/// Top mappings per faults record.
pub const TOP_MAPPINGS: usize = 5;

/// Last absolute value (bytes) of each rss member of one mm, and which are known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MmCounters {
    pub mm_id: u32,
    pub rss: [i64; 4],
    pub(super) known: [bool; 4],
    /// Its teardown has begun (exit, or the old image at exec): smaps and the ledger are then
    /// read at different points of a fast release, so no drift is reported against it.
    pub(super) torn: bool,
}

pub struct Proc {
    pub pid: u32,
    pub ppid: u32,
    pub comm: String,
    pub alive: bool,
    pub(super) maps: MappingMap,
    /// Bytes per member at the watch start, for the first (unseeded) kernel delta.
    pub(super) seed: Option<[i64; 4]>,
    /// The rss ledger: the counters of each mm this process had (a new one at exec).
    pub mms: Vec<MmCounters>,
    /// The mm it runs on now (the last one its own events changed).
    pub(super) cur_mm: Option<u32>,
    pub(super) kernel_faults: u64,
    pub interval: Activity,
    pub total: Activity,
    /// Pages per interval each mapping gained, smoothed over ~30 s: where growth goes now.
    pub(super) mapping_rate: HashMap<MappingId, f64>,
    /// The rss ledger changed since the last smaps reading.
    pub(super) dirty: bool,
    /// Its recent ledger RSS values, by ring poll.
    pub(super) rss_trace: RssTrace,
    /// Own pages so far (see `rss_trace::Own`), kept as the records come.
    pub(super) own_pages: rss_trace::Own,
    /// Seen gone without learning its last name (a prctl rename makes no event).
    pub(super) comm_at_exit_unknown: bool,
    /// The kernel's exit record was processed: every record of its faults came before it.
    pub(super) exit_record_seen: bool,
    /// With --stacks: pages added per user stack id, and ids not yet resolved.
    pub stacks: HashMap<i32, i64>,
    pub(super) new_stacks: Vec<i32>,
    /// With --stacks: the same pages per (user stack id, mapping they went to).
    pub stack_mappings: HashMap<(i32, MappingId), i64>,
    /// Files it opened under the watch, by fd: names its file mmaps once /proc is gone.
    pub(super) fds: HashMap<i32, std::sync::Arc<str>>,
    /// The ring poll (its end) whose records were being fed when /proc/PID/maps was last
    /// re-read for a fault (0: none), see [`Proc::mapping_at`].
    pub(super) maps_read_poll: u64,
    /// Its VMAs changed in a way no event described (`--syscall-hooks off`: a munmap, an
    /// mprotect...): re-read /proc/PID/maps before naming the next fault.
    pub(super) maps_stale: bool,
    /// The map as it was before the last such re-read: a fault whose mapping was gone by then
    /// (a process exiting) is still named from it.
    pub(super) maps_before: Option<MappingMap>,
    /// Pages its own copy-on-write faults made private so far (see `Activity::cow`).
    pub(super) own_cow: i64,
    /// This interval's COW pages (page address -> still counted in `cow`; see `ledger_cow.rs`).
    pub(super) cow_seen: HashMap<u64, bool>,
    /// Kernel faults at addresses no mapping held, (address, pages, first of its fault), until
    /// the next exec layout record names them: exec writes into the image it builds (the bss
    /// tails it zeroes, the stack's tables) before its record comes (see `ledger_names.rs`).
    pub(super) exec_faults: Vec<(u64, i64, bool)>,
    /// Its hugetlb pages (see `ledger_hugetlb.rs`).
    pub(super) hugetlb: super::ledger::hugetlb::HugetlbState,
}

impl Proc {
    pub(super) fn new(pid: u32, ppid: u32, comm: String, maps: MappingMap) -> Proc {
        Proc {
            pid,
            ppid,
            comm,
            alive: true,
            maps,
            seed: None,
            mms: Vec::new(),
            cur_mm: None,
            kernel_faults: 0,
            interval: Activity::default(),
            total: Activity::default(),
            mapping_rate: HashMap::new(),
            dirty: true,
            rss_trace: RssTrace::default(),
            comm_at_exit_unknown: false,
            exit_record_seen: false,
            own_pages: [0; 3],
            stacks: HashMap::new(),
            new_stacks: Vec::new(),
            stack_mappings: HashMap::new(),
            fds: HashMap::new(),
            maps_read_poll: 0,
            maps_stale: false,
            maps_before: None,
            own_cow: 0,
            cow_seen: HashMap::new(),
            exec_faults: Vec::new(),
            hugetlb: Default::default(),
        }
    }

    /// Re-read /proc/PID/maps. Only rss changes reach a lookup, and the kernel only changes rss
    /// for pages that are mapped, so a miss means our map is behind: re-reading is always right.
    pub(super) fn reload_maps(&mut self, facts: &dyn ProcSource) -> bool {
        match facts.maps(self.pid) {
            // An empty map is a zombie's (its mm is gone), never a live process's: keep ours.
            Some(m) if !m.is_empty() => {
                self.maps = m;
                true
            }
            _ => false,
        }
    }

    /// The ledger's RSS (file + anon + shmem) of the current mm in KiB, once every member is
    /// known and while the mm is not being torn down.
    pub fn ledger_rss_kib(&self) -> Option<i64> {
        let m = [member::FILE, member::ANON, member::SHMEM].map(|m| m as usize);
        let (rss, known) = match self.cur_mm.and_then(|id| self.mms.iter().find(|c| c.mm_id == id)) {
            Some(c) if c.torn => return None,
            Some(c) => (c.rss, c.known),
            None => (self.seed?, [true; 4]),
        };
        m.iter().all(|&i| known[i]).then(|| m.iter().map(|&i| rss[i]).sum::<i64>() / 1024)
    }

    /// The ledger's RSS nearest to `smaps_kib` among the values it held from `from` to `to` (ns
    /// since the watch start), i.e. while that smaps reading was taken.
    pub fn ledger_rss_near_kib(&self, smaps_kib: i64, from: u64, to: u64) -> Option<i64> {
        let now = self.ledger_rss_kib()?;
        Some(rss_trace::nearest(smaps_kib, self.rss_trace.range(from, to).unwrap_or((now, now))))
    }

    pub fn mm_ids(&self) -> Vec<u32> {
        self.mms.iter().map(|c| c.mm_id).collect()
    }

    /// KiB added to RSS by this process's own faults so far (net), and hugetlb pages they
    /// mapped (never in RSS).
    pub fn own_fault_kib(&self, page: i64) -> i64 {
        (self.own_pages[0] + self.own_pages[1] + self.hugetlb.own) * page / 1024
    }

    /// hugetlb KiB its mm maps as far as the ledger knows (None: it never showed any).
    pub fn hugetlb_kib(&self, page: i64) -> Option<i64> {
        self.hugetlb.last.is_some().then(|| self.hugetlb.accounted * page / 1024)
    }

    /// KiB its own copy-on-write faults made private so far without adding to RSS.
    pub fn own_cow_kib(&self, page: i64) -> i64 {
        self.own_cow * page / 1024
    }

    /// KiB so far, net: added by own faults into private and into shared mappings, and
    /// changed by other causes (munmap, madvise, exit teardown, reclaim), as the ledger stood
    /// when an smaps reading of `smaps_kib` RSS was taken between `from` and `to` (ns since
    /// the watch start).
    pub fn own_split_near_kib(&self, page: i64, smaps_kib: i64, from: u64, to: u64) -> (i64, i64, i64) {
        own_kib(self.rss_trace.own_near(from, to, smaps_kib).unwrap_or(self.own_pages), page)
    }

    /// The kernel's last fault count of this process, taken at its exit.
    pub fn final_faults(&mut self, n: u64) {
        self.interval.faults += n.saturating_sub(self.kernel_faults);
        self.kernel_faults = n;
    }

    pub fn maps(&self) -> &MappingMap {
        &self.maps
    }

    /// Pages `id` grew by so far (faults and copy-on-write, hugetlb included): the closed
    /// intervals' and the open one's.
    pub fn mapping_growth(&self, id: &MappingId) -> i64 {
        let of = |a: &Activity| a.by_mapping.get(id).map_or(0, |s| s.growth());
        of(&self.total) + of(&self.interval)
    }

    /// Each mapping's growth per interval, smoothed over ~30 s (those still growing).
    pub fn mapping_rates(&self) -> impl Iterator<Item = (&MappingId, f64)> {
        self.mapping_rate.iter().map(|(id, &r)| (id, r))
    }

    /// The mapping growing fastest now (~30 s), else the one that grew most overall: where a
    /// sibling's PSS goes stale, and a leak's mapping when its span tells nothing.
    pub fn growing_mapping(&self) -> Option<MappingId> {
        self.mapping_rate
            .iter()
            .max_by(|a, b| a.1.total_cmp(b.1).then(b.0.cmp(a.0)))
            .map(|(id, _)| id.clone())
            .or_else(|| self.total.by_mapping.iter().max_by_key(|(_, s)| s.growth()).map(|(id, _)| id.clone()))
    }

    /// Fold an interval's activity into the smoothed growth rate per mapping (~30 s); a dead
    /// process whose exit record is in sheds its maps and rates.
    pub(super) fn age_mapping_rates(&mut self, a: &Activity, interval_s: f64) {
        if self.alive {
            let decay = (-interval_s / MAPPING_RATE_TAU_S).exp();
            self.mapping_rate.retain(|_, r| {
                *r *= decay;
                *r >= 0.5
            });
            for (id, st) in &a.by_mapping {
                if st.growth() > 0 {
                    *self.mapping_rate.entry(id.clone()).or_default() += st.growth() as f64;
                }
            }
        } else if self.exit_record_seen {
            // Dead, no fault record of it still to come (they precede its exit record), and
            // its stacks resolved by now (the session resolves them first): its maps and
            // growth rates are dead weight until it is retired. (The /proc liveness check
            // can see it gone while its last faults are still in the ring.)
            self.maps = MappingMap::default();
            self.mapping_rate = HashMap::new();
        }
    }

    /// The summary entry of this process (the judgement fills in its readings and verdict).
    pub fn summary(&self) -> ProcSummary {
        ProcSummary {
            pid: self.pid,
            comm: self.comm.clone(),
            faults: self.total.faults,
            pages: self.total.pages(),
            other_pages: self.total.other.iter().sum(),
            causes: Causes {
                syscall: self.total.other[cause::SYSCALL as usize],
                exit: self.total.other[cause::EXIT as usize],
                remote: self.total.other[cause::REMOTE as usize],
                other: self.total.other[cause::OTHER as usize],
            },
            // The judgement's, filled in when the summary is built.
            peak_uss_kib: 0,
            last_pss_kib: 0,
            mappings: self.total.top(TOP_MAPPINGS),
            leak: false,
            leak_rate_kib_s: None,
            verdicts: Vec::new(),
            stacks: Vec::new(),
        }
    }

    /// Pages to count as unnamed (`[file]`, `[unmapped]`), else 0. An unmapped kernel fault is
    /// kept for the exec layout record to name (a bounded few: exec's own writes).
    pub(super) fn note_unnamed(&mut self, id: &MappingId, addr: u64, pages: i64, kernel: bool, first: bool) -> i64 {
        const KEPT: usize = 16;
        match &*id.name {
            "[unmapped]" if kernel && self.exec_faults.len() < KEPT => {
                self.exec_faults.push((addr, pages, first));
                pages
            }
            "[file]" | "[unmapped]" => pages,
            _ => 0,
        }
    }

    pub(super) fn mapping_of(&mut self, addr: u64, facts: &dyn ProcSource) -> MappingId {
        self.mapping_at(addr, 0, facts)
    }

    /// Re-read /proc/PID/maps for a fault while the records of the ring poll that ended at
    /// `poll_end` are fed (0: unknown). The read is newer than every record of that poll, those
    /// still to be fed too: it clears the stale mark, and `ledger_areas.rs` applies the poll's
    /// later mapping changes to the map before it, not over it. The read keeps the names of
    /// regions the kernel grew by merging (as the ledger's own merging does), and the map before
    /// it names what was gone by then.
    pub(super) fn reread_maps(&mut self, facts: &dyn ProcSource, poll_end: u64) -> bool {
        let before = self.maps.clone();
        if !self.reload_maps(facts) {
            return false;
        }
        self.maps.keep_merged_names(&before);
        self.maps_before = Some(before);
        self.maps_stale = false;
        if poll_end != 0 {
            self.maps_read_poll = poll_end;
        }
        true
    }

    /// The mapping of a fault at `addr` whose record came from the ring poll that ended at
    /// `poll_end` (0: unknown). A miss re-reads /proc/PID/maps, unless it was re-read already
    /// while this poll's records were fed: that read came after every fault of the poll, so
    /// what it missed was gone by then and reading again cannot bring it back (faults into a
    /// region unmapped before their records are read cost one re-read per poll, not one each).
    /// A map marked stale is re-read first, under the same once-per-poll rule.
    pub(super) fn mapping_at(&mut self, addr: u64, poll_end: u64, facts: &dyn ProcSource) -> MappingId {
        let fresh = |p: &Proc| poll_end == 0 || p.maps_read_poll != poll_end;
        if self.maps_stale && fresh(self) {
            self.reread_maps(facts, poll_end);
        }
        if let Some(id) = self.maps.lookup(addr) {
            return id.clone();
        }
        if fresh(self) && self.reread_maps(facts, poll_end) {
            if let Some(id) = self.maps.lookup(addr) {
                return id.clone();
            }
        }
        if let Some(id) = self.maps_before.as_ref().and_then(|m| m.lookup(addr)) {
            return id.clone();
        }
        MappingId { name: "[unmapped]".into(), shared: false }
    }
}

fn own_kib(own: rss_trace::Own, page: i64) -> (i64, i64, i64) {
    let kib = |pages: i64| pages * page / 1024;
    (kib(own[0]), kib(own[1]), kib(own[2]))
}
