//! The kernel side, seen from userspace: load and attach the programs (`loader`, with offsets
//! from `tracefs`), the BPF maps we hold (`bpf_maps`), the ring reader thread (`ring`) and the
//! decoding of its records into typed events (`events`).
pub mod bpf_maps;
pub mod events;
pub mod loader;
pub mod ring;
pub mod tracefs;
