//! eBPF side of the agent: one program per file, shared maps and globals in `state.rs`.
#![no_std]
#![no_main]
#![feature(asm_experimental_arch)]

mod state;

mod cgroup;
mod cgroup_attach;
mod comm_join;
mod exec;
mod exit;
mod fault;
mod fault_kernel;
mod fault_perf;
mod fork;
mod hugetlb;
mod mmap_lock;
mod oom;
mod proc_event;
mod rss;
mod shmem_new;
mod sys_exit;
mod unmapped_area;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
