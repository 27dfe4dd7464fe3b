//! The JSON-lines form of a snapshot: a `snapshot` header line (when, which boot, which host,
//! what was read), then one `process` line per process (with its `mappings` in a saved file),
//! and a `total` line; `-m` and `-u` print `mapping` and `user` lines instead of processes.
//! `agent diff` reads saved files back.
use std::io::BufRead;

use serde::{Deserialize, Serialize};

use super::read::{MapMem, Proc};

/// Bumped when a saved snapshot's lines change meaning.
pub const VERSION: u32 = 1;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Header {
    pub version: u32,
    /// When the reads began, seconds since the Unix epoch.
    pub time: f64,
    /// The kernel's boot id: pids and start times of two snapshots compare only within one boot.
    pub boot_id: String,
    pub host: String,
    /// Clock ticks per second (the unit of the processes' `start_time`).
    pub clk_tck: u64,
    /// `all`, `pid N` (that tree), or `cgroup DIR`.
    pub scope: String,
    /// Whether the process lines carry their mappings (the full smaps summed by name).
    pub mappings: bool,
}

fn proc_text(name: &str) -> String {
    std::fs::read_to_string(format!("/proc/sys/kernel/{name}")).map(|s| s.trim().to_string()).unwrap_or_default()
}

impl Header {
    pub fn now(scope: String, mappings: bool) -> Header {
        let time = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
        // SAFETY: sysconf has no preconditions.
        let clk_tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        Header {
            version: VERSION,
            time: (time * 1000.0).round() / 1000.0,
            boot_id: proc_text("random/boot_id"),
            host: proc_text("hostname"),
            clk_tck,
            scope,
            mappings,
        }
    }
}

#[derive(Serialize)]
struct Tagged<'a, T: Serialize> {
    #[serde(rename = "type")]
    ty: &'a str,
    #[serde(flatten)]
    v: &'a T,
}

/// One JSON line: `{"type": TY, ...v}`.
pub fn line<T: Serialize>(ty: &str, v: &T) -> String {
    let mut s = serde_json::to_string(&Tagged { ty, v }).expect("snapshot records serialize");
    s.push('\n');
    s
}

/// A process line of a saved snapshot: the process and its mappings.
#[derive(Serialize)]
struct WithMaps<'a> {
    #[serde(flatten)]
    p: &'a Proc,
    mappings: &'a [MapMem],
}

pub fn saved_proc(p: &Proc) -> String {
    line("process", &WithMaps { p, mappings: &p.maps })
}

#[derive(Deserialize)]
struct Loaded {
    #[serde(flatten)]
    p: Proc,
    #[serde(default)]
    mappings: Vec<MapMem>,
}

/// A snapshot read back.
#[derive(Debug, Default)]
pub struct Saved {
    pub header: Header,
    pub procs: Vec<Proc>,
}

/// Read a snapshot's lines: the header first, then process lines (other lines are skipped).
/// Errors name the line.
pub fn parse(r: impl BufRead) -> Result<Saved, String> {
    let mut lines = r.lines().enumerate();
    let not_ours = "not an agent snapshot (make one with `agent snapshot --save FILE`)";
    let (_, first) = lines.next().ok_or(format!("empty: {not_ours}"))?;
    let first = first.map_err(|e| e.to_string())?;
    let v: serde_json::Value = serde_json::from_str(&first).map_err(|_| not_ours.to_string())?;
    if v["type"] != "snapshot" {
        return Err(not_ours.into());
    }
    let header: Header = serde_json::from_value(v).map_err(|e| format!("line 1: {e}"))?;
    if header.version > VERSION {
        return Err(format!("snapshot version {} is newer than this agent's ({VERSION})", header.version));
    }
    let mut procs = Vec::new();
    for (i, l) in lines {
        let l = l.map_err(|e| e.to_string())?;
        let bad = |e: serde_json::Error| format!("line {}: {e}", i + 1);
        let v: serde_json::Value = serde_json::from_str(&l).map_err(bad)?;
        if v["type"] == "process" {
            let Loaded { mut p, mappings } = serde_json::from_value(v).map_err(bad)?;
            p.maps = mappings;
            procs.push(p);
        }
    }
    Ok(Saved { header, procs })
}

pub fn load(path: &std::path::Path) -> anyhow::Result<Saved> {
    let f = std::fs::File::open(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    parse(std::io::BufReader::new(f)).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::mem::Mem;

    #[test]
    fn saved_lines_read_back_with_their_mappings() {
        let p = Proc {
            pid: 7,
            ppid: 1,
            comm: "app".into(),
            uid: 1000,
            user: "me".into(),
            start_time: 12345,
            cmdline: "app --x".into(),
            mem: Mem { rss_kib: 10, pss_kib: 8, uss_kib: 6, swap_kib: 4, hugetlb_kib: 2 },
            maps: vec![MapMem { mapping: "[heap]".into(), vmas: 1, mem: Mem { rss_kib: 10, ..Mem::default() } }],
        };
        let h = Header::now("all".into(), true);
        assert!(h.time > 1e9 && h.clk_tck > 0 && !h.boot_id.is_empty());
        let text = line("snapshot", &h) + &saved_proc(&p) + "{\"type\":\"total\",\"processes\":1}\n";
        let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(first["type"], "snapshot");
        let line2: serde_json::Value = serde_json::from_str(text.lines().nth(1).unwrap()).unwrap();
        assert_eq!((line2["pss_kib"].as_u64(), line2["mappings"][0]["mapping"].as_str()), (Some(8), Some("[heap]")));
        let back = parse(text.as_bytes()).unwrap();
        assert_eq!(back.header, h);
        assert_eq!(back.procs, vec![p]);
    }

    #[test]
    fn other_files_are_refused_with_a_reason() {
        assert!(parse("".as_bytes()).unwrap_err().contains("not an agent snapshot"));
        assert!(parse("{\"type\":\"process\",\"pid\":1}\n".as_bytes()).unwrap_err().contains("not an agent snapshot"));
        assert!(parse("PID USER\n".as_bytes()).unwrap_err().contains("not an agent snapshot"));
        let h = line("snapshot", &Header::now("all".into(), false));
        assert!(parse((h.clone() + "{\"type\":\"process\"}\n").as_bytes()).unwrap_err().starts_with("line 2: "));
        let newer = h.replace("\"version\":1", "\"version\":99");
        assert!(parse(newer.as_bytes()).unwrap_err().contains("newer"));
    }
}
