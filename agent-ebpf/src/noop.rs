//! A program that does nothing, attached by `cargo xtask bench` to the agent's tracepoints to
//! measure the floor: what the hooks cost before any agent logic runs.
use aya_ebpf::{macros::tracepoint, programs::TracePointContext};

#[tracepoint]
pub fn noop(_ctx: TracePointContext) -> u32 {
    0
}
