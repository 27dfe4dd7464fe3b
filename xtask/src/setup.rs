//! Idempotent setup of what the eBPF build needs on a fresh machine: the nightly toolchain's
//! rust-src (for `-Z build-std=core`) and bpf-linker 0.10.2 (newer releases want a system LLVM
//! and fail to link here; see shared/KERNEL.md). When both are present this takes well under 5 s.
use std::process::Command;

use anyhow::{Context as _, Result};

use crate::status;

const BPF_LINKER: &str = "0.10.2";

pub fn ensure() -> Result<()> {
    ensure_rust_src()?;
    ensure_bpf_linker()
}

fn ensure_rust_src() -> Result<()> {
    let sysroot = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--print", "sysroot"])
        .output()
        .context("rustup is needed to run the nightly toolchain")?;
    if sysroot.status.success() {
        let root = String::from_utf8_lossy(&sysroot.stdout).trim().to_string();
        if std::path::Path::new(&root).join("lib/rustlib/src/rust/library/core").is_dir() {
            return Ok(());
        }
        eprintln!("xtask setup: adding rust-src to the nightly toolchain");
        let mut c = Command::new("rustup");
        c.args(["component", "add", "rust-src", "--toolchain", "nightly"]);
        return status(c, "rustup component add rust-src");
    }
    eprintln!("xtask setup: installing the nightly toolchain with rust-src");
    let mut c = Command::new("rustup");
    c.args(["toolchain", "install", "nightly", "--profile", "minimal", "--component", "rust-src"]);
    status(c, "rustup toolchain install nightly")
}

fn ensure_bpf_linker() -> Result<()> {
    let have = Command::new("bpf-linker").arg("--version").output();
    if let Ok(out) = &have {
        if String::from_utf8_lossy(&out.stdout).contains(BPF_LINKER) {
            return Ok(());
        }
    }
    eprintln!("xtask setup: installing bpf-linker {BPF_LINKER} (about a minute)");
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.args(["install", &format!("bpf-linker@{BPF_LINKER}"), "--locked"]);
    status(c, "cargo install bpf-linker")
}
