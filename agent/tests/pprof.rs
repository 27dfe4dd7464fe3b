//! `--pprof FILE.pb.gz`: faulted pages by stack as a pprof profile, read back by a real client,
//! `go tool pprof` (installed by `cargo xtask setup`).
mod common;
use std::process::Command;

use common::*;

/// `go tool pprof ARGS FILE`'s stdout; it must succeed.
fn go_pprof(args: &[&str], file: &std::path::Path) -> String {
    let out = Command::new("go")
        .args(["tool", "pprof", "-symbolize=none"])
        .args(args)
        .arg(file)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `go tool pprof` ({e}): install Go (cargo xtask setup does)"));
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "go tool pprof {args:?} failed:\n{stderr}\n{stdout}");
    stdout.into_owned()
}

/// The `cum` column of the `-top` row of the function whose name contains `name` (bytes with
/// `-unit=byte` carry a `B`).
fn cum_of(top: &str, name: &str) -> i64 {
    // Rows: flat flat% sum% cum cum% name...
    let row = top
        .lines()
        .find(|l| l.split_whitespace().nth(5).is_some_and(|f| f.contains(name)))
        .unwrap_or_else(|| panic!("no {name} row in:\n{top}"));
    let cum = row.split_whitespace().nth(3).unwrap().trim_end_matches('B');
    cum.parse().unwrap_or_else(|_| panic!("cum of {name}: {row}"))
}

#[test]
fn go_pprof_reads_the_pages_of_the_known_stacks() {
    if !ebpf_available("pprof") {
        return;
    }
    let file = std::env::temp_dir().join(format!("agent-pprof-{}.pb.gz", std::process::id()));
    let mib = 8;
    // --pprof alone: it implies --stacks.
    let (recs, code) =
        watch_workload(&["--pprof", file.to_str().unwrap()], &["stacks", "--mib", &mib.to_string(), "--hold", "0.2"]);
    assert_eq!(code, 0);
    assert!(proc_by_comm(&recs, "wl-stacks")["stacks"].is_array(), "--pprof implies --stacks");
    let gz = std::fs::read(&file).unwrap();
    assert_eq!(&gz[..2], [0x1f, 0x8b], "gzip");

    let top = go_pprof(&["-top", "-sample_index=faulted_pages", "-nodefraction=0"], &file);
    let (cache, index) = (cum_of(&top, "grow_cache"), cum_of(&top, "grow_index"));
    let n = mib * MIB_PAGES as i64;
    assert_within("grow_cache pages", cache, 3 * n, 5.0);
    assert_within("grow_index pages", index, n, 5.0);
    let ratio = cache as f64 / index as f64;
    assert!((ratio - 3.0).abs() <= 0.15, "grow_cache/grow_index = {ratio:.3}, want 3 ± 5%\n{top}");
    // The bytes sample type is pages times the page size.
    let bytes = go_pprof(&["-top", "-sample_index=faulted_space", "-nodefraction=0", "-unit=byte"], &file);
    assert_within("grow_cache bytes / page", cum_of(&bytes, "grow_cache") / PAGE as i64, cache, 0.0);

    // Labels: the pid (a number), comm and the mapping the pages went to.
    let tags = go_pprof(&["-tags", "-sample_index=faulted_pages"], &file);
    let pid = proc_by_comm(&recs, "wl-stacks")["pid"].as_u64().unwrap();
    for want in ["comm:", "wl-stacks", "mapping:", "anon@0x", "pid:", &pid.to_string()] {
        assert!(tags.contains(want), "no {want} in the tags:\n{tags}");
    }
    // Mappings carry their file and build id; the workload's is the first (the main binary).
    let raw = go_pprof(&["-raw"], &file);
    let mappings: Vec<&str> = raw.lines().skip_while(|l| !l.starts_with("Mappings")).skip(1).collect();
    let exe = workloads();
    let first = mappings.first().unwrap_or_else(|| panic!("no mappings:\n{raw}"));
    assert!(first.contains(exe.to_str().unwrap()), "mapping 1 is not the workload: {first}");
    let build_id = first.split_whitespace().nth(3).unwrap_or_default();
    assert!(build_id.len() >= 16 && build_id.chars().all(|c| c.is_ascii_hexdigit()), "build id: {first}");
    assert!(first.contains("[FN][FL][LN]"), "functions, files and lines: {first}");
    let _ = std::fs::remove_file(&file);
}
