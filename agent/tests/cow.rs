//! Copy-on-write: pages a forked process makes private by writing memory it inherited change no
//! rss counter, yet they are its growth. `fault.rs` sends write faults on present pages; the
//! ledger counts them as `cow` per pid and mapping, and the verdict counts them as own growth.
mod common;
use common::*;
use serde_json::Value;

/// `cow` pages of a summary entry in its mapping named `anon@*` (the heap), and in all.
fn heap_cow(p: &Value) -> (i64, i64, i64) {
    let m = p["mappings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mapping"].as_str().unwrap().starts_with("anon@"))
        .unwrap_or_else(|| panic!("no anon mapping in {p}"));
    (m["cow"].as_i64().unwrap(), m["pages"].as_i64().unwrap(), p["pages"]["cow"].as_i64().unwrap())
}

#[test]
fn a_child_writing_inherited_memory_shows_its_pages_as_cow() {
    if !ebpf_available("a_child_writing_inherited_memory_shows_its_pages_as_cow") {
        return;
    }
    let mib = 32;
    let args = format!("prefork --heap-mib 64 --workers 1 --rate-mib-s 0 --once-mib {mib} --duration 1");
    let (recs, code) = watch_workload(&[], &args.split(' ').collect::<Vec<_>>());
    assert_eq!(code, 0);
    let want = mib * MIB_PAGES as i64;
    let w = proc_by_comm(&recs, "wl-worker-0");
    let (cow, pages, total_cow) = heap_cow(w);
    // Every written page was copied once; none of them moved an rss counter.
    assert_within("cow pages in the heap", cow, want, 1.0);
    assert_eq!(pages, 0, "an anon->anon copy adds no page to RSS: {w}");
    assert!(total_cow >= cow && total_cow < cow + 64, "cow elsewhere is a few pages (stack, libc data): {w}");
    // The interval records add up to the summary.
    let per_interval: i64 = of_type(&recs, "faults")
        .iter()
        .filter(|f| f["comm"] == "wl-worker-0")
        .map(|f| f["pages"]["cow"].as_i64().unwrap())
        .sum();
    assert_eq!(per_interval, total_cow);
    // The parent wrote its heap before the fork: first-touch faults, added to RSS, no copy.
    let (parent_cow, parent_pages, _) = heap_cow(proc_by_comm(&recs, "wl-prefork"));
    assert_eq!((parent_cow, parent_pages), (0, 64 * MIB_PAGES as i64));
}

#[test]
fn a_worker_unsharing_its_parents_heap_steadily_is_flagged_with_cause_cow() {
    if !ebpf_available("a_worker_unsharing_its_parents_heap_steadily_is_flagged_with_cause_cow") {
        return;
    }
    let secs = 32.0;
    let (recs, _) = watch_workload(&["--smaps-interval", "1"], &["prefork", "--duration", &secs.to_string()]);
    let leaks: Vec<&Value> = of_type(&recs, "leak").into_iter().filter(|l| l["state"] != "withdrawn").collect();
    let flagged: std::collections::BTreeSet<&str> = leaks.iter().map(|l| l["comm"].as_str().unwrap()).collect();
    assert_eq!(flagged, ["wl-worker-0"].into_iter().collect(), "{leaks:?}");
    let l = leaks.last().unwrap();
    assert_eq!(l["cause"], "cow", "{l}");
    assert_eq!(l["metric"], "uss", "{l}");
    assert!(l["mapping"].as_str().unwrap().starts_with("anon@") && l["shared"] == false, "{l}");
    assert_within("worker 0 rate KiB/s", l["rate_kib_s"].as_f64().unwrap() as i64, 1024, 25.0);
    assert!(leaks[0]["ts"].as_f64().unwrap() < secs + 2.0, "flagged while it ran: {}", leaks[0]);

    // Worker 0 wrote 128 KiB every 125 ms from the start (~8 steps a second, one more at 0).
    let steps = (secs * 8.0) as i64 + 1;
    let (cow, pages, _) = heap_cow(proc_by_comm(&recs, "wl-worker-0"));
    assert_within("worker 0 cow pages", cow, steps * 32, 3.0);
    assert_eq!(pages, 0);
    // The others unshared 16 MiB once.
    for i in 1..4 {
        let p = proc_by_comm(&recs, &format!("wl-worker-{i}"));
        assert_within("a one-off unsharing", heap_cow(p).0, 16 * MIB_PAGES as i64, 1.0);
        assert_eq!(p["leak"], false, "{p}");
    }
    // `explain` says where worker 0's USS growth came from.
    let explained: i64 = of_type(&recs, "mem")
        .iter()
        .filter(|m| m["comm"] == "wl-worker-0")
        .filter_map(|m| m["explain"]["cow_kib"].as_i64())
        .sum();
    assert!(explained as f64 >= 0.8 * (cow * 4) as f64, "explain cow_kib {explained} of {} KiB", cow * 4);
}
