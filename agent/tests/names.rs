//! Mapping names follow the kernel's VMAs whichever way the agent attached, and a short-lived
//! process's file mappings are named from what it opened, after /proc has lost it.
mod common;
use std::{
    collections::HashSet,
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::Duration,
};

use common::*;
use serde_json::Value;

const N: usize = 64;
/// Pages per VMA: more than any other mapping of the workload, so they fill its top mappings.
const PAGES: i64 = 1024;

/// The VMA starts a `wl-vmas` printed on stderr.
fn starts(lines: impl Iterator<Item = String>) -> HashSet<u64> {
    lines.filter_map(|l| l.strip_prefix("wl-vmas: 0x").and_then(|h| u64::from_str_radix(h.trim(), 16).ok())).collect()
}

/// Each anonymous mapping named in `wl-vmas`'s entry is one of its VMAs and holds its pages:
/// the map did not merge VMAs the kernel keeps apart.
fn check(recs: &[Value], starts: &HashSet<u64>, how: &str) {
    assert_eq!(starts.len(), N, "{how}: the workload printed its VMAs");
    let p = proc_by_comm(recs, "wl-vmas");
    let anon: Vec<&Value> = p["mappings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["mapping"].as_str().unwrap().starts_with("anon@"))
        .collect();
    assert!(!anon.is_empty(), "{how}: anonymous mappings in {p}");
    for m in anon {
        let name = m["mapping"].as_str().unwrap();
        let at = u64::from_str_radix(name.trim_start_matches("anon@0x"), 16).unwrap();
        assert_within(&format!("{how}: {name}'s pages (one VMA's)"), m["pages"].as_i64().unwrap(), PAGES, 1.0);
        assert!(starts.contains(&at), "{how}: {name} is not a VMA start of the workload: {p}");
    }
    assert!(p["pages"]["anon"].as_i64().unwrap() >= N as i64 * PAGES, "{how}: every page: {p}");
}

fn under_command(extra: &[&str]) {
    let how = format!("watch -- vmas {extra:?}");
    let out = Command::new(agent())
        .args(["watch", "--format", "json", "--interval", "0.5", "--"])
        .arg(workloads())
        .args(["vmas", "--n", &N.to_string(), "--pages", &PAGES.to_string(), "--hold", "0.3"])
        .args(extra)
        .stderr(Stdio::piped())
        .output()
        .expect("run agent");
    assert_eq!(out.status.code(), Some(0), "{how}");
    let recs = parse(&String::from_utf8(out.stdout).unwrap());
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    check(&recs, &starts(err.lines().map(String::from)), &how);
}

fn under_pid(extra: &[&str]) {
    let how = format!("watch -p vmas {extra:?}");
    let mut wl = Command::new(workloads())
        .args(["vmas", "--n", &N.to_string(), "--pages", &PAGES.to_string(), "--hold", "0.3", "--wait-stdin"])
        .args(extra)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn workload");
    // Its VMAs exist once it printed them all: /proc/PID/maps seeds the watch.
    let lines: Vec<String> = BufReader::new(wl.stderr.take().unwrap()).lines().map_while(Result::ok).take(N).collect();
    let mut agent = Running::start(&["watch", "-p", &wl.id().to_string(), "--format", "json", "--interval", "0.5"]);
    agent.wait_for("start", Duration::from_secs(20));
    go(&mut wl, 1);
    let (recs, code) = agent.finish(Duration::from_secs(60));
    let _ = wl.wait();
    assert_eq!(code, 0, "{how}");
    check(&recs, &starts(lines.into_iter()), &how);
}

#[test]
fn vmas_with_alternating_protections_are_named_alike_under_both_attachments() {
    if !ebpf_available("names_vmas") {
        return;
    }
    for extra in [&[][..], &["--mprotect"][..]] {
        under_command(extra);
        under_pid(extra);
    }
}

#[test]
fn short_lived_processes_mappings_are_named_after_proc_is_gone() {
    if !ebpf_available("names_short_lived") {
        return;
    }
    let out = Command::new(agent())
        .args(["watch", "--format", "json", "--", "sh", "-c", "for i in $(seq 500); do /bin/true; done"])
        .stderr(Stdio::inherit())
        .output()
        .expect("run agent");
    assert_eq!(out.status.code(), Some(0));
    let recs = parse(&String::from_utf8(out.stdout).unwrap());
    let s = summary(&recs);
    let procs = s["procs"].as_array().unwrap();
    let trues: Vec<&Value> = procs.iter().filter(|p| p["comm"] == "true").collect();
    assert!(trues.len() >= 450, "the /bin/true runs are in the summary: {}", trues.len());
    // Each fork child's pre-exec mm is forgotten in the kernel at its exec: a freed mm's id,
    // soon another process's, must not charge that process's changes to a dead pid (which then
    // came back as a process the agent never saw fork, named "?").
    assert!(procs.iter().all(|p| p["comm"] != "?"), "no process learned from a stale mm owner");
    let total: i64 =
        procs.iter().map(|p| p["pages"]["anon"].as_i64().unwrap() + p["pages"]["file"].as_i64().unwrap()).sum();
    let unnamed = s["unnamed_pages"].as_i64().expect("unnamed_pages in the summary");
    // libc (the bulk of a /bin/true's pages) is mapped by ld.so from an fd it opened: named
    // from the open even when the process is gone before /proc is read. What exec itself
    // mapped (the binary, ld.so, the vDSO, the stack) is named from the exec layout record
    // (the mm's code start and auxv's AT_BASE, with the files' program headers), and exec's own
    // kernel faults before that record are named after it. Before the layout record, ~22% of
    // these pages stayed `[unmapped]`; now only a mapping no record described would.
    assert!((unnamed as f64) <= 0.01 * total as f64, "unnamed {unnamed} of {total} fault pages");
    let pages_in = |what: &dyn Fn(&str) -> bool| -> i64 {
        trues
            .iter()
            .flat_map(|p| p["mappings"].as_array().unwrap())
            .filter(|m| what(m["mapping"].as_str().unwrap()))
            .map(|m| m["pages"].as_i64().unwrap())
            .sum()
    };
    let binary = pages_in(&|m| m.ends_with("/true"));
    let ld = pages_in(&|m| m.contains("ld-linux"));
    assert!(binary >= trues.len() as i64, "the binary's pages are named: {binary}");
    assert!(ld >= 10 * trues.len() as i64, "ld.so's pages are named: {ld}");
    assert_eq!(pages_in(&|m| m == "[unmapped]"), 0, "no /bin/true page left unmapped");
    let libc: i64 = trues
        .iter()
        .flat_map(|p| p["mappings"].as_array().unwrap())
        .filter(|m| m["mapping"].as_str().unwrap().contains("libc.so"))
        .map(|m| m["pages"].as_i64().unwrap())
        .sum();
    assert!(libc as f64 > 0.5 * total as f64, "libc named: {libc} of {total}");
    for p in &trues {
        for m in p["mappings"].as_array().unwrap() {
            assert_ne!(m["mapping"], "[file]", "a file mapping stayed unnamed: {p}");
        }
    }
}
