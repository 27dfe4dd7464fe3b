//! `cargo xtask test`'s third pass: the known-answer tests about naming mappings again with no
//! syscall hook (`AGENT_SYSCALL_HOOKS=off`, which every `agent watch` they start reads as its
//! `--syscall-hooks`): mapping changes then come from `mmap:vm_unmapped_area` and
//! /proc/PID/maps re-reads (agent `kernel/syscall_hooks.rs`).
use anyhow::Result;

use crate::{cargo, status};

/// The test binaries (agent/tests/NAME.rs) whose answers depend on where mapping changes come
/// from (about 42 s here): names (a short-lived process's file mmaps, mprotect splits),
/// sys_exit (file, MAP_POPULATE, read()), the mapping of every fault (rss, fork, attach_pid,
/// boundary, stacks), the syscall causes, and thread_deltas (an mmap, mprotects and two
/// threads' faults fed after a re-read of the same ring poll), madvise_split (a madvise that
/// splits a merged VMA: the mmap lock's release marks the map stale).
const TESTS: &[&str] = &[
    "names",
    "sys_exit",
    "rss",
    "fork",
    "attach_pid",
    "boundary",
    "stacks",
    "syscall_cause",
    "thread_deltas",
    "madvise_split",
];

pub fn run(args: &[String]) -> Result<()> {
    let mut c = cargo();
    // The first pass's package selection: the same test binaries, not rebuilt.
    c.env("AGENT_SYSCALL_HOOKS", "off").args(["test", "--workspace", "--exclude", "agent-ebpf", "--no-fail-fast"]);
    for t in TESTS {
        c.args(["--test", t]);
    }
    c.arg("--").arg("--test-threads=1").args(args);
    eprintln!(
        "xtask: the mapping tests again with no syscall hook: AGENT_SYSCALL_HOOKS=off cargo test --workspace --exclude agent-ebpf --test {} -- --test-threads=1",
        TESTS.join(" --test ")
    );
    status(c, "cargo test (AGENT_SYSCALL_HOOKS=off)")
}
