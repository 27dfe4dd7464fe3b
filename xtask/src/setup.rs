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

/// The real clients the tests check our outputs with, from Debian: the program each package
/// puts on PATH, and the package.
const CLIENTS: &[(&str, &str)] = &[
    ("go", "golang-go"),
    ("smem", "smem"),
    ("promtool", "prometheus"),
    // The bench's real server (`cargo xtask bench`: redis-benchmark against redis-server).
    ("redis-server", "redis-server"),
    ("redis-benchmark", "redis-tools"),
];

/// Install the test clients that are missing (root only; as a user, say what to run). Fast
/// when they are all there: one PATH lookup each.
pub fn ensure_clients() -> Result<()> {
    let missing: Vec<&str> = CLIENTS.iter().filter(|(bin, _)| !on_path(bin)).map(|&(_, pkg)| pkg).collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !crate::is_root() {
        eprintln!("xtask setup: tests against real clients need: sudo apt-get install {}", missing.join(" "));
        return Ok(());
    }
    eprintln!("xtask setup: installing the test clients {}", missing.join(", "));
    let mut update = Command::new("apt-get");
    update.args(["update", "-qq"]);
    status(update, "apt-get update")?;
    let mut c = Command::new("apt-get");
    c.args(["install", "-y", "-qq", "--no-install-recommends"]).args(&missing).env("DEBIAN_FRONTEND", "noninteractive");
    status(c, "apt-get install")
}

fn on_path(bin: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
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
