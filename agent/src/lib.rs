//! The agent as a library: a pipeline of stages, sources in and sinks out.
//!
//! ```text
//! targets ─► kernel ─► attribution ─► sampling ─► judgement ─► sinks
//! ```
//! `session` wires them; `watch` (and later `serve`, `snapshot`) are thin front ends that pick
//! targets and sinks. See ARCHITECTURE.md.
pub mod attribution;
pub mod cli;
pub mod demo;
pub mod dist;
pub mod error;
pub mod judgement;
pub mod kernel;
pub mod proc_facts;
pub mod records;
pub mod sampling;
pub mod serve;
pub mod session;
pub mod sinks;
pub mod snapshot;
pub mod stacks;
pub mod summary;
pub mod targets;
pub mod watch;
