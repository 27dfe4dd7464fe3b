//! `cargo xtask test`'s second pass: the known-answer tests about fault attribution again with
//! the perf fault source (`AGENT_FAULT_SOURCE=perf`, which every `agent watch` they start reads
//! as its `--fault-source`). The first pass ran them with the default (the tracepoint on x86).
use anyhow::Result;

use crate::{cargo, status};

/// The test binaries (agent/tests/NAME.rs) whose answers depend on where faults come from
/// (about 110 s here).
/// `cow` is left out: the perf source cannot see copy-on-write (the agent says so, and
/// `fault.rs` checks that it does).
const TESTS: &[&str] = &[
    "fault",
    "rss",
    "fork",
    "exit",
    "boundary",
    "names",
    "shared_mm",
    "sys_exit",
    "attach_pid",
    "pss",
    "stacks",
    // The hugetlb check runs after every fault that changed no rss counter under perf (no
    // error code to tell a present page), after first-touch ones only under the tracepoint.
    "hugetlb",
];

pub fn run(args: &[String]) -> Result<()> {
    let mut c = cargo();
    // The first pass's package selection, so that the same test binaries (agent built with the
    // `floor` feature workloads turns on) are run again, not rebuilt.
    c.env("AGENT_FAULT_SOURCE", "perf").args(["test", "--workspace", "--exclude", "agent-ebpf", "--no-fail-fast"]);
    for t in TESTS {
        c.args(["--test", t]);
    }
    c.arg("--").arg("--test-threads=1").args(args);
    eprintln!("xtask: the fault-attribution tests again with the perf fault source: AGENT_FAULT_SOURCE=perf cargo test --workspace --exclude agent-ebpf --test {} -- --test-threads=1", TESTS.join(" --test "));
    status(c, "cargo test (AGENT_FAULT_SOURCE=perf)")
}
