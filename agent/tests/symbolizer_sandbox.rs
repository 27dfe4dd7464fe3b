//! `--stacks` symbolizes in an unprivileged helper: its privileges are gone (as
//! /proc/PID/status shows them), it still names the workload's functions, and malformed ELF
//! files crash or hang only the helper, never the agent.
mod common;
use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::*;

/// The helper of agent `agent`: its child running `agent symbolizer`.
fn helper_of(agent: u32) -> Option<u32> {
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let ppid = stat.rsplit_once(')').and_then(|(_, r)| r.split_whitespace().nth(1)?.parse::<u32>().ok());
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if ppid == Some(agent) && cmdline.split(|&b| b == 0).nth(1) == Some(b"symbolizer") {
            return Some(pid);
        }
    }
    None
}

fn status_field<'a>(status: &'a str, name: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {name} in status:\n{status}"))
}

#[test]
fn the_symbolizer_helper_has_no_privileges_and_still_names_the_workload_frames() {
    if !ebpf_available("symbolizer sandbox") {
        return;
    }
    let mut run = Running::start(&[
        "watch",
        "--format",
        "json",
        "--interval",
        "0.5",
        "--stacks",
        "--",
        workloads().to_str().unwrap(),
        "stacks",
        "--mib",
        "4",
        "--hold",
        "2",
    ]);
    run.wait_for("start", Duration::from_secs(20));
    let agent_pid = run.child.id();
    let deadline = Instant::now() + Duration::from_secs(10);
    let helper = loop {
        if let Some(p) = helper_of(agent_pid) {
            break p;
        }
        assert!(Instant::now() < deadline, "no `agent symbolizer` child of the agent ({agent_pid})");
        std::thread::sleep(Duration::from_millis(50));
    };
    let status = std::fs::read_to_string(format!("/proc/{helper}/status")).unwrap();
    for set in ["CapEff", "CapPrm", "CapInh", "CapBnd", "CapAmb"] {
        assert_eq!(status_field(&status, set), "0000000000000000", "{set} of the helper:\n{status}");
    }
    assert_eq!(status_field(&status, "NoNewPrivs"), "1", "{status}");
    assert_eq!(status_field(&status, "Seccomp"), "2", "a seccomp filter: {status}");
    for ids in ["Uid", "Gid"] {
        let v = status_field(&status, ids);
        assert!(v.split_whitespace().all(|id| id == "65534"), "{ids} of the helper: {v}");
    }
    assert_eq!(status_field(&status, "Groups"), "", "no supplementary groups");
    let cwd = std::fs::read_link(format!("/proc/{helper}/cwd")).unwrap();
    assert_eq!(cwd, std::path::Path::new("/"), "the helper's working directory");
    // Only stdio and its socket are open in the helper, whatever the agent had open.
    let fds: Vec<String> = std::fs::read_dir(format!("/proc/{helper}/fd"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(fds.iter().all(|f| ["0", "1", "2", "3"].contains(&f.as_str())), "helper fds at start: {fds:?}");

    let (recs, code) = run.finish(Duration::from_secs(30));
    assert_eq!(code, 0);
    let p = proc_by_comm(&recs, "wl-stacks");
    let frames = p["stacks"][0]["frames"].to_string();
    assert!(frames.contains("workloads::workload::grow_cache"), "top stack: {frames}");
    let st = &summary(&recs)["stacks"]["symbolizer"];
    assert!(st["requests"].as_u64().unwrap() > 0, "{st}");
    assert_eq!(st["crashes"], 0, "{st}");
    assert_eq!(st["timeouts"], 0, "{st}");
    let deadline = Instant::now() + Duration::from_secs(3);
    while std::path::Path::new(&format!("/proc/{helper}/status")).exists() {
        assert!(Instant::now() < deadline, "the helper {helper} outlived the agent");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn malformed_elf_files_crash_only_the_helper_and_are_counted() {
    if !ebpf_available("symbolizer fuzz") {
        return;
    }
    // A short run of `cargo xtask fuzz`: the same helper, the same protocol.
    let n = 2000;
    let out = Command::new(agent())
        .args(["fuzz-symbolizer", "--iterations", &n.to_string(), "--seed", "11", "--timeout-ms", "3000"])
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "the fuzzing agent itself must survive");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let rep: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    eprintln!("fuzz report: {rep}");
    assert_eq!(rep["inputs"], n, "{rep}");
    let h = &rep["helper"];
    let (crashes, timeouts, restarts) =
        (h["crashes"].as_u64().unwrap(), h["timeouts"].as_u64().unwrap(), h["restarts"].as_u64().unwrap());
    // Every helper lost was replaced (the one lost on the last input may not have been yet).
    assert!(restarts + 1 >= crashes + timeouts && restarts <= crashes + timeouts, "{rep}");
    // Each input was answered, or its helper was lost on it.
    let answered = rep["answered"].as_u64().unwrap();
    assert!(answered <= n && answered + crashes + timeouts >= n, "{rep}");
    // The mutations leave many inputs readable: the parsers behind the header checks ran.
    assert!(rep["named"].as_u64().unwrap() > n / 10, "{rep}");
}

/// The section `name` of an ELF64 file: (offset, size).
fn section(elf: &[u8], name: &str) -> (usize, usize) {
    let rd = |at: usize, n: usize| elf[at..at + n].iter().rev().fold(0usize, |a, &b| (a << 8) | b as usize);
    let (shoff, shnum, stridx) = (rd(40, 8), rd(60, 2), rd(62, 2));
    let strs = rd(shoff + stridx * 64 + 24, 8);
    (0..shnum)
        .map(|i| shoff + i * 64)
        .find(|&h| {
            let at = strs + rd(h, 4);
            elf[at..].split(|&b| b == 0).next() == Some(name.as_bytes())
        })
        .map(|h| (rd(h + 24, 8), rd(h + 32, 8)))
        .unwrap_or_else(|| panic!("no {name} section"))
}

/// Empty the file table of every DWARF 4 line program (its first name's first byte zeroed):
/// the rows then name files that are not there, which blazesym 0.2.7 does not survive
/// (dwarf/lines.rs, an unwrap). The loader never reads debug sections: the program still runs.
fn break_line_tables(elf: &mut [u8]) -> usize {
    let (off, size) = section(elf, ".debug_line");
    let (mut at, mut broken) = (off, 0);
    while at + 4 <= off + size {
        let len = u32::from_le_bytes(elf[at..at + 4].try_into().unwrap()) as usize;
        let version = u16::from_le_bytes(elf[at + 4..at + 6].try_into().unwrap());
        assert_eq!(version, 4, "a DWARF {version} line table: this test knows version 4 only");
        let opcode_base = elf[at + 4 + 2 + 4 + 4] as usize; // after min_inst, max_ops, is_stmt, line_base, line_range
        let mut p = at + 4 + 2 + 4 + 5 + (opcode_base - 1) + 1;
        while elf[p] != 0 {
            p += elf[p..].iter().position(|&b| b == 0).unwrap() + 1; // include directories
        }
        p += 1;
        if elf[p] != 0 {
            elf[p] = 0;
            broken += 1;
        }
        at += 4 + len;
    }
    broken
}

#[test]
fn a_helper_killed_by_a_malformed_binary_is_counted_and_replaced() {
    if !ebpf_available("symbolizer crash") {
        return;
    }
    // A workload whose own binary crashes the symbolizer: its frames stay module+offset, the
    // helper is restarted, and the frames of libc (another file) are still named.
    let mut elf = std::fs::read(workloads()).unwrap();
    assert!(break_line_tables(&mut elf) > 0, "no line table broken");
    let copy = std::env::temp_dir().join(format!("agent-malformed-{}", std::process::id()));
    std::fs::write(&copy, &elf).unwrap();
    std::fs::set_permissions(&copy, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = Command::new(agent())
        .args(["watch", "--format", "json", "--interval", "0.5", "--stacks", "--"])
        .arg(&copy)
        .args(["stacks", "--mib", "4", "--hold", "1.2"])
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&copy);
    assert_eq!(out.status.code(), Some(0), "the agent survives its helper");
    let recs = parse(&String::from_utf8(out.stdout).unwrap());
    let st = &summary(&recs)["stacks"]["symbolizer"];
    assert!(st["crashes"].as_u64().unwrap() >= 1, "{st}");
    assert!(st["restarts"].as_u64().unwrap() >= 1, "{st}");
    assert!(st["unanswered"].as_u64().unwrap() >= 1, "{st}");
    let p = proc_by_comm(&recs, "wl-stacks");
    let frames: Vec<&str> = p["stacks"][0]["frames"].as_array().unwrap().iter().map(|f| f.as_str().unwrap()).collect();
    let name = copy.file_name().unwrap().to_str().unwrap();
    assert!(frames.iter().any(|f| f.starts_with(&format!("{name}+0x"))), "the binary's frames unnamed: {frames:?}");
    assert!(!frames.iter().any(|f| f.contains("grow_cache")), "{frames:?}");
    assert!(frames.iter().any(|f| f.contains("__libc_start")), "libc still named by the new helper: {frames:?}");
}

#[test]
fn a_helper_that_stops_answering_is_killed_at_the_timeout_and_replaced() {
    use std::os::fd::AsFd as _;

    use agent::stacks::helper::Helper;
    // The real helper, stopped (SIGSTOP) as a hang would leave it: the request times out, the
    // helper is killed and counted, and the next request is answered by a new one.
    let mut h = Helper::new(agent().into(), Duration::from_millis(500), true);
    let first = h.start().expect("the helper starts");
    let exe = std::fs::File::open(agent()).unwrap();
    assert!(h.build_id(1, exe.as_fd()).is_some(), "the agent binary has a build id");
    // SAFETY: a signal to the helper we started.
    assert_eq!(unsafe { libc::kill(first as i32, libc::SIGSTOP) }, 0);
    let t0 = Instant::now();
    let other = std::fs::File::open(workloads()).unwrap();
    assert_eq!(h.build_id(2, other.as_fd()), None, "no answer from a stopped helper");
    assert!(t0.elapsed() < Duration::from_secs(3), "bounded by the timeout: {:?}", t0.elapsed());
    assert_eq!((h.stats.timeouts, h.stats.crashes, h.stats.unanswered), (1, 0, 1), "{:?}", h.stats);
    assert!(!std::path::Path::new(&format!("/proc/{first}")).exists(), "the stopped helper was killed and reaped");
    // File 2 hung a helper: it is not sent again. File 1 is, to a new helper.
    assert_eq!(h.build_id(2, other.as_fd()), None);
    assert!(h.build_id(1, exe.as_fd()).is_some(), "a new helper answers");
    assert_eq!(h.stats.restarts, 1, "{:?}", h.stats);
    assert_ne!(h.pid(), Some(first));
}

#[test]
fn a_binary_only_root_may_read_is_still_read_by_the_unprivileged_helper() {
    use std::os::{fd::AsFd as _, unix::fs::PermissionsExt as _};

    use agent::stacks::helper::Helper;
    if !ebpf_available("symbolizer and a root-only binary") {
        return;
    }
    // Mode 0700, owned by root: `nobody` may not open it, even as /proc/self/fd/N. The helper
    // reads it through the descriptor the agent (root) opened.
    let copy = std::env::temp_dir().join(format!("agent-rootonly-{}", std::process::id()));
    std::fs::copy(workloads(), &copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o700)).unwrap();
    let file = std::fs::File::open(&copy).unwrap();
    let _ = std::fs::remove_file(&copy);
    let mut h = Helper::new(agent().into(), Duration::from_secs(20), false);
    h.start().expect("the helper starts");
    let id = h.build_id(1, file.as_fd());
    assert!(id.as_ref().is_some_and(|b| b.len() >= 16), "build id of a root-only binary: {id:?} {:?}", h.stats);
    assert_eq!((h.stats.crashes, h.stats.unanswered), (0, 0), "{:?}", h.stats);
}
