//! The kernel side, seen from userspace: load and attach the programs (`loader`, with offsets
//! from `tracefs`), the BPF maps we hold (`bpf_maps`), the ring reader thread (`ring`) and the
//! decoding of its records into typed events (`events`); the programs' own diagnostics
//! (aya-log) forwarded into the agent's log (`ebpf_log`); all of it opened at once for a front
//! end (`opened`).
pub mod bpf_maps;
pub mod btf;
pub mod deltas;
pub mod ebpf_log;
pub mod events;
pub mod fault_source;
pub mod hugetlb;
pub mod loader;
pub mod opened;
pub mod ring;
pub mod shmem_count;
pub mod syscall_hooks;
pub mod tracefs;
