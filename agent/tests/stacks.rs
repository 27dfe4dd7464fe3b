//! `--stacks`: the user stacks of faults, symbolized, in the summary, folded and as a flamegraph.
mod common;
use common::*;

#[test]
fn top_stacks_name_the_functions_that_faulted_the_pages() {
    if !ebpf_available("stacks") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("agent-stacks-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (folded, svg) = (dir.join("pages.folded"), dir.join("pages.svg"));
    let mib = 8;
    let (recs, code) = watch_workload(
        &["--folded", folded.to_str().unwrap(), "--flamegraph", svg.to_str().unwrap()],
        &["stacks", "--mib", &mib.to_string(), "--hold", "0.2"],
    );
    assert_eq!(code, 0);
    // The process exited before the summary: its stacks are still symbolized.
    let p = proc_by_comm(&recs, "wl-stacks");
    let stacks = p["stacks"].as_array().unwrap_or_else(|| panic!("no stacks: {p}"));
    let has = |s: &serde_json::Value, f: &str| {
        s["frames"].as_array().unwrap().iter().any(|x| x.as_str().unwrap().contains(f))
    };
    let n = mib * MIB_PAGES as i64;
    assert!(has(&stacks[0], "grow_cache"), "top stack: {}", stacks[0]);
    assert_within("grow_cache pages", stacks[0]["pages"].as_i64().unwrap(), 3 * n, 5.0);
    assert!(has(&stacks[1], "grow_index"), "second stack: {}", stacks[1]);
    assert_within("grow_index pages", stacks[1]["pages"].as_i64().unwrap(), n, 5.0);
    let depths = &summary(&recs)["stacks"]["depths"];
    let counted: u64 = depths.as_array().unwrap().iter().map(|b| b["stacks"].as_u64().unwrap()).sum();
    assert!(counted >= 2, "{depths}");

    // Folded: `comm;frames... pages`, every line parses, grow_cache's pages are there.
    let text = std::fs::read_to_string(&folded).unwrap();
    let mut cache_pages = 0;
    for line in text.lines() {
        let (stack, pages) = line.rsplit_once(' ').unwrap_or_else(|| panic!("folded line: {line}"));
        let pages: i64 = pages.parse().unwrap_or_else(|_| panic!("folded count: {line}"));
        if stack.starts_with("wl-stacks;") && stack.contains("grow_cache") {
            cache_pages += pages;
        }
    }
    assert_within("folded grow_cache pages", cache_pages, 3 * n, 5.0);
    // The flamegraph is an SVG document naming the functions.
    let svg = std::fs::read_to_string(&svg).unwrap();
    assert!(svg.starts_with("<?xml") && svg.trim_end().ends_with("</svg>"), "not an SVG document");
    assert!(svg.contains("grow_cache") && svg.contains("grow_index"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_binary_deleted_while_it_runs_is_still_symbolized() {
    if !ebpf_available("stacks of a deleted binary") {
        return;
    }
    // A copy of the workload binary that deletes itself before it faults: its path then names
    // nothing, and the agent must read the ELF the process still maps.
    let copy = std::env::temp_dir().join(format!("agent-deleted-{}", std::process::id()));
    std::fs::copy(workloads(), &copy).unwrap();
    let out = std::process::Command::new(agent())
        .args(["watch", "--format", "json", "--interval", "0.5", "--stacks", "--"])
        .arg(&copy)
        .args(["stacks", "--mib", "4", "--hold", "1.2", "--unlink-exe"])
        .stderr(std::process::Stdio::inherit())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(!copy.exists(), "the workload deleted its binary");
    let recs = parse(&String::from_utf8(out.stdout).unwrap());
    let p = proc_by_comm(&recs, "wl-stacks");
    let top = &p["stacks"][0];
    let frames: Vec<&str> = top["frames"].as_array().unwrap().iter().map(|f| f.as_str().unwrap()).collect();
    assert!(frames.iter().any(|f| f.starts_with("workloads::workload::grow_cache")), "top stack: {frames:?}");
}
