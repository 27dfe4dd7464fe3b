//! `cargo xtask fuzz --iterations N`: malformed ELF files through the agent's symbolizer
//! helper (`agent fuzz-symbolizer`, release build), niced: the long run that CI's short one
//! (agent/tests/symbolizer_sandbox.rs, 2k inputs) stands for.
use std::process::Command;

use anyhow::Result;

use crate::{build_release, status, workspace_root};

pub fn run(iterations: u64, seed: u64) -> Result<()> {
    build_release()?;
    let agent = workspace_root().join("target/release/agent");
    let mut c = Command::new("nice");
    c.arg(&agent).args(["fuzz-symbolizer", "--iterations", &iterations.to_string(), "--seed", &seed.to_string()]);
    // A small real binary beside the built-in seed, when the machine has one.
    if std::path::Path::new("/usr/bin/true").exists() {
        c.args(["--corpus", "/usr/bin/true"]);
    }
    status(c, "agent fuzz-symbolizer")
}
