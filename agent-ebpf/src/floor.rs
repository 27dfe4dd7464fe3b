//! The bench floor, a separate object from the agent's: one program that does nothing,
//! attached by `workloads floor` (for `cargo xtask bench`) to the agent's tracepoints to measure what
//! the hooks cost before any agent logic runs. Not shipped in the agent's object.
#![no_std]
#![no_main]

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};

#[tracepoint]
pub fn noop(_ctx: TracePointContext) -> u32 {
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
