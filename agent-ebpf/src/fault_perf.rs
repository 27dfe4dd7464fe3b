//! `perf_event` on the software event `PERF_COUNT_SW_PAGE_FAULTS` (sample_period 1, one event
//! per online CPU, `exclude_kernel`): the fault source where `exceptions:page_fault_user` does
//! not exist (every architecture but x86), or with `--fault-source perf`.
//!
//! The kernel raises it in the architecture's fault handler before the fault is handled (x86
//! `do_user_addr_fault`, arm64 `do_page_fault`), in the faulting task, with the faulting address
//! in the sample (`bpf_perf_event_data.addr`): the same moment and task as the tracepoint, so
//! the slot bookkeeping is `fault::user_fault`'s. `exclude_kernel` drops the events whose
//! registers are kernel-mode (perf_exclude_event: `!user_mode(regs)`), which are the kernel's
//! own faults on user addresses (copy_to_user): those stay `page_fault_kernel`'s, as with the
//! tracepoint.
//!
//! What it cannot see: the fault's error code. The registers in the context are the user
//! registers at the fault, and on x86 the entry code has already replaced the error code saved
//! in `orig_ax` with -1; the sample carries no access type. So a write to a present page (a
//! copy-on-write) cannot be told from any other fault, and no `CowEvent` is sent: pages made
//! private by copy-on-write are not counted (the agent says so in its `start` record).
use aya_ebpf::{macros::perf_event, programs::PerfEventContext};

use crate::fault::user_fault;

#[perf_event]
pub fn page_fault_perf(ctx: PerfEventContext) -> u32 {
    // A direct context load: the verifier rewrites it to the sample's address. Its offset is
    // past the architecture's register block (aya-ebpf's bindings of the build's target arch).
    user_fault(|| Some((unsafe { (*ctx.ctx).addr }, 0)))
}
