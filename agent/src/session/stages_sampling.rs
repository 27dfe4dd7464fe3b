//! The pipeline's sampling and judgement steps: an smaps sweep started within the budget (and
//! the kernel's shmem count attached while anything maps a shared segment), readings judged
//! once the ledger has been fed past their window, verdicts through the evidence stage to the
//! sinks.
use super::Pipeline;
use crate::{
    attribution::MappingId,
    kernel::shmem_count::ShmemCount,
    records::Record,
    sampling::{self, smaps::Swept},
};

impl Pipeline {
    /// A new smaps sweep: pids whose ledger moved (or never read) are read; the others carry
    /// their last reading forward to the verdict.
    pub fn start_sweep(&mut self) {
        self.cgroup_sweep();
        if let Some(s) = self.shmem.as_mut() {
            let shared = self.ledger.procs().any(|p| p.alive && p.maps().any_shared());
            s.attach_while(shared, self.kernel.programs.as_mut());
            self.judge.set_shmem_pages(s.pages());
        }
        let sweep = self.sampler.start_sweep(sampling::candidates(&mut self.ledger, &self.judge));
        for pid in sweep.carried {
            if let Some(r) = self.judge.carry_forward(&self.ledger, pid, sweep.t) {
                self.emit_verdict(r);
            }
        }
    }

    /// `--smaps-budget`: PERCENT of one CPU for smaps reads; and the kernel's shmem count.
    pub fn set_smaps_budget(&mut self, percent: f64, shmem: Option<ShmemCount>) {
        self.sampler.set_budget(percent);
        self.shmem = shmem;
    }

    pub fn on_swept(&mut self, swept: Swept) {
        self.sampler.on_swept(swept);
    }

    /// Readings whose window the ledger has been fed past (`done_ns`): compare and judge.
    pub fn settle(&mut self, done_ns: u64) {
        for reading in self.sampler.settled(done_ns) {
            // hugetlb pages mapped without a user fault: the ledger audits such a process.
            self.ledger.on_hugetlb_reading(reading.pid, reading.mem.hugetlb_kib);
            for r in self.judge.on_reading(&self.ledger, reading) {
                self.emit_verdict(r);
            }
        }
    }

    /// A record from the judgement. A leak record first gets the kernel's own accounting of
    /// its mapping (the evidence stage), then comes back through `publish_verdict`.
    pub(super) fn emit_verdict(&mut self, r: Record) {
        if let Record::Leak { pid, mapping, shared, .. } = &r {
            let id = MappingId { name: mapping.as_str().into(), shared: *shared };
            if let Some(ranges) = self.ledger.ranges_of(*pid, &id) {
                self.evidence.gather(r, ranges);
                return;
            }
        }
        self.publish_verdict(r);
    }

    /// A verdict with its evidence: leak records get their top stacks.
    pub fn publish_verdict(&mut self, mut r: Record) {
        if let Some(st) = self.stacks.as_mut() {
            st.fill_leak(&mut r, &self.ledger);
        }
        self.sinks.emit(&r);
    }
}
