//! `fault.rs`: faults are counted per pid and, for the ones that added pages, per mapping.
mod common;
use common::*;

#[test]
fn one_fault_per_written_page() {
    if !ebpf_available("one_fault_per_written_page") {
        return;
    }
    let mib = 32;
    let (recs, _) = watch_workload(&[], &["anon", "--mib", &mib.to_string(), "--hold", "0.2"]);
    let p = proc_by_comm(&recs, "wl-anon");
    let want = mib * MIB_PAGES as i64;
    let m =
        p["mappings"].as_array().unwrap().iter().find(|m| m["mapping"].as_str().unwrap().starts_with("anon@")).unwrap();
    assert_within("faults in the anon mapping", m["faults"].as_i64().unwrap(), want, 5.0);
    let total = p["faults"].as_i64().unwrap();
    assert!(total >= want && total < want + want / 5, "faults of the pid: {total} for {want} pages");
    // The per-interval records add up to the summary.
    let per_interval: i64 =
        of_type(&recs, "faults").iter().filter(|f| f["comm"] == "wl-anon").map(|f| f["faults"].as_i64().unwrap()).sum();
    assert!(per_interval <= total && per_interval >= want, "interval faults {per_interval} vs total {total}");
}

/// `--fault-source perf` (the software page-faults perf event) gives the same known answer as
/// the tracepoint, says so in its `start` record with what it cannot see (copy-on-write), and
/// detaches with the programs. Run whatever AGENT_FAULT_SOURCE says (the flag wins).
#[test]
fn both_fault_sources_count_the_same_pages() {
    if !ebpf_available("both_fault_sources_count_the_same_pages") {
        return;
    }
    let mib = 16;
    let want = mib * MIB_PAGES as i64;
    for source in ["perf", "tracepoint"] {
        let (recs, code) =
            watch_workload(&["--fault-source", source], &["anon", "--mib", &mib.to_string(), "--hold", "0.2"]);
        assert_eq!(code, 0, "{source}");
        let start = &of_type(&recs, "start")[0];
        let hooks: Vec<&str> = start["hooks"].as_array().unwrap().iter().map(|h| h.as_str().unwrap()).collect();
        let missing = start["missing_hooks"].as_array().unwrap();
        let cow_line = missing.iter().any(|m| m.as_str().unwrap().starts_with("copy-on-write (the perf fault source"));
        match source {
            "perf" => {
                assert!(hooks.contains(&"perf:page-faults") && !hooks.contains(&"page_fault_user"), "{start}");
                assert!(cow_line, "the perf source says it cannot see copy-on-write: {start}");
            }
            _ => {
                assert!(hooks.contains(&"page_fault_user") && !hooks.contains(&"perf:page-faults"), "{start}");
                assert!(!cow_line, "{start}");
            }
        }
        let p = proc_by_comm(&recs, "wl-anon");
        let (pages, shared) = mapping_pages(p, "anon@");
        assert!(!shared);
        assert_within(&format!("{source}: pages of the anon mapping"), pages, want, 2.0);
        let m = p["mappings"].as_array().unwrap().iter().find(|m| m["mapping"].as_str().unwrap().starts_with("anon@"));
        assert_within(
            &format!("{source}: faults of the anon mapping"),
            m.unwrap()["faults"].as_i64().unwrap(),
            want,
            5.0,
        );
        let total = p["faults"].as_i64().unwrap();
        assert!(total >= want && total < want + want / 5, "{source}: faults of the pid: {total} for {want} pages");
        assert_eq!(summary(&recs)["lost_events"], 0, "{source}");
    }
}

/// The error line when the tracepoint source is asked for where it does not exist.
#[test]
fn a_missing_tracepoint_source_names_perf() {
    if !ebpf_available("a_missing_tracepoint_source_names_perf") {
        return;
    }
    let load = agent::kernel::loader::LoadOptions {
        simulate_missing: vec!["exceptions:page_fault_user".into()],
        ..Default::default()
    };
    let (code, _) = watch_in_process(&["--fault-source", "tracepoint", "--", "true"], load.clone());
    let (code, line) = code.expect_err("no tracepoint source without the tracepoint");
    assert_eq!(code, 1);
    assert!(line.contains("use --fault-source perf") && !line.contains('\n'), "{line}");
    // Without the flag (nor AGENT_FAULT_SOURCE=tracepoint) the agent falls back to perf, and
    // says nothing is missing but copy-on-write.
    if std::env::var("AGENT_FAULT_SOURCE").is_ok_and(|v| v == "tracepoint") {
        return;
    }
    let (code, recs) = watch_in_process(&["--format", "json", "--", "true"], load);
    assert_eq!(code, Ok(0));
    let start = &of_type(&recs, "start")[0];
    assert!(start["hooks"].as_array().unwrap().iter().any(|h| h == "perf:page-faults"), "{start}");
    let missing = start["missing_hooks"].as_array().unwrap();
    assert!(!missing.iter().any(|m| m.as_str().unwrap().contains("page_fault_user")), "{start}");
}

/// What the perf source loses, and only that: a forked worker writing 32 MiB of its parent's
/// heap (copy-on-write, no rss change) shows no `cow` pages under perf where the tracepoint
/// shows 8192 (cow.rs), while the parent's 64 MiB written before the fork are exact under both.
#[test]
fn the_perf_source_loses_copy_on_write_only() {
    if !ebpf_available("the_perf_source_loses_copy_on_write_only") {
        return;
    }
    let args = "prefork --heap-mib 64 --workers 1 --rate-mib-s 0 --once-mib 32 --duration 1";
    let args: Vec<&str> = args.split(' ').collect();
    let heap = |p: &serde_json::Value| -> (i64, i64) {
        let m = p["mappings"].as_array().unwrap().iter().find(|m| m["mapping"].as_str().unwrap().starts_with("anon@"));
        m.map_or((0, 0), |m| (m["pages"].as_i64().unwrap(), m["cow"].as_i64().unwrap()))
    };
    for source in ["perf", "tracepoint"] {
        let (recs, code) = watch_workload(&["--fault-source", source], &args);
        assert_eq!(code, 0, "{source}");
        let (parent_pages, parent_cow) = heap(proc_by_comm(&recs, "wl-prefork"));
        assert_eq!((parent_pages, parent_cow), (64 * MIB_PAGES as i64, 0), "{source}: the parent's heap");
        let w = proc_by_comm(&recs, "wl-worker-0");
        let (pages, cow) = heap(w);
        assert_eq!(pages, 0, "{source}: an anon->anon copy adds no page to RSS: {w}");
        match source {
            "perf" => assert_eq!((cow, w["pages"]["cow"].as_i64().unwrap()), (0, 0), "{source}: {w}"),
            _ => assert_within("tracepoint: cow pages in the heap", cow, 32 * MIB_PAGES as i64, 1.0),
        }
    }
}
