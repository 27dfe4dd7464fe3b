//! `cargo xtask dist`: the release agent with its completions and man pages (generated from its
//! own clap definitions by `agent dist`), the systemd unit and the Prometheus rules, in
//! `target/dist/`. `cargo xtask install` puts them where root's tools look (`/usr/local/...`,
//! `/etc/systemd/system`), and `cargo xtask uninstall` takes them out again.
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};

use crate::{status, workspace_root};

/// Where each file of the dist goes under the install root, relative to it.
const PLACES: &[(&str, &str, u32)] = &[
    ("agent", "usr/local/bin/agent", 0o755),
    ("completions/agent.bash", "usr/local/share/bash-completion/completions/agent", 0o644),
    ("completions/_agent", "usr/local/share/zsh/site-functions/_agent", 0o644),
    ("completions/agent.fish", "usr/local/share/fish/vendor_completions.d/agent.fish", 0o644),
    ("agent.service", "etc/systemd/system/agent.service", 0o644),
    ("prometheus/agent-rules.yml", "usr/local/share/agent/prometheus/agent-rules.yml", 0o644),
];

/// Man pages go to this directory under the root.
const MAN_DIR: &str = "usr/local/share/man/man1";

pub fn dist() -> Result<PathBuf> {
    crate::build_release()?;
    let root = workspace_root();
    let out = root.join("target/dist");
    if out.exists() {
        std::fs::remove_dir_all(&out).with_context(|| format!("cannot clear {}", out.display()))?;
    }
    std::fs::create_dir_all(out.join("prometheus"))?;
    let agent = root.join("target/release/agent");
    let mut c = std::process::Command::new(&agent);
    c.args(["dist", "--out"]).arg(&out);
    status(c, "agent dist")?;
    copy(&agent, &out.join("agent"))?;
    copy(&root.join("packaging/agent.service"), &out.join("agent.service"))?;
    copy(&root.join("packaging/prometheus/agent-rules.yml"), &out.join("prometheus/agent-rules.yml"))?;
    eprintln!("xtask dist: {}", out.display());
    for f in files(&out)? {
        eprintln!("  {}", f.strip_prefix(&out).unwrap_or(&f).display());
    }
    Ok(out)
}

/// Install the dist under `root` (`/` by default; another root stages a package).
pub fn install(root: &Path) -> Result<()> {
    if root == Path::new("/") && !crate::is_root() {
        bail!("installing into /usr/local and /etc needs root: sudo -E cargo xtask install");
    }
    let dist = dist()?;
    for (from, to, mode) in PLACES {
        put(&dist.join(from), &root.join(to), *mode)?;
    }
    for page in std::fs::read_dir(dist.join("man"))?.flatten() {
        put(&page.path(), &root.join(MAN_DIR).join(page.file_name()), 0o644)?;
    }
    if root == Path::new("/") && Path::new("/run/systemd/system").exists() {
        let mut c = std::process::Command::new("systemctl");
        c.arg("daemon-reload");
        status(c, "systemctl daemon-reload")?;
    }
    eprintln!(
        "xtask install: done; start it with `systemctl enable --now agent` (systemd), or run `agent serve --all`"
    );
    Ok(())
}

/// Remove what `install` put under `root`.
pub fn uninstall(root: &Path) -> Result<()> {
    if root == Path::new("/") && !crate::is_root() {
        bail!("removing from /usr/local and /etc needs root: sudo -E cargo xtask uninstall");
    }
    let mut gone: Vec<PathBuf> = PLACES.iter().map(|(_, to, _)| root.join(to)).collect();
    if let Ok(dir) = std::fs::read_dir(root.join(MAN_DIR)) {
        gone.extend(dir.flatten().map(|e| e.path()).filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n == "agent.1" || n.starts_with("agent-"))
        }));
    }
    for p in gone.iter().filter(|p| p.exists()) {
        std::fs::remove_file(p).with_context(|| format!("cannot remove {}", p.display()))?;
        eprintln!("  removed {}", p.display());
    }
    let _ = std::fs::remove_dir_all(root.join("usr/local/share/agent"));
    Ok(())
}

fn put(from: &Path, to: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    if let Some(dir) = to.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    // A new file renamed over the old one: a running agent keeps its binary.
    let tmp = to.with_extension("xtask-new");
    copy(from, &tmp)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
    std::fs::rename(&tmp, to).with_context(|| format!("cannot install {}", to.display()))?;
    eprintln!("  {}", to.display());
    Ok(())
}

fn copy(from: &Path, to: &Path) -> Result<()> {
    std::fs::copy(from, to).with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
    Ok(())
}

fn files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)?.flatten() {
        if e.file_type()?.is_dir() {
            out.extend(files(&e.path())?);
        } else {
            out.push(e.path());
        }
    }
    out.sort();
    Ok(out)
}
