//! A leak record names the mapping that grew over the span its verdict flagged, not a large
//! shared segment the process faulted in just before it started leaking elsewhere. Three
//! leakers each fill 256 MiB of a MAP_SHARED memfd in one go (their own, written; or the
//! parent's, read into their page tables, as the seed's mappers do), then leak 1 MiB/s: two
//! into private anon, one into a hugetlb memfd. `watch` (its records) and `serve` (its metric's
//! `mapping` label, with a long window scaled down to a 20 s shortest span) watch the same run,
//! ~45 s (flagged 20-24 s in).
mod common;
mod huge_pages;
mod serve_util;
use std::{sync::atomic::Ordering, time::Duration};

use common::*;
use huge_pages::Setting;
use serde_json::Value;
use serve_util::{scrape_leaks, Serving};

/// (comm, the filled segment, the leak's mapping, shared)
const LEAKERS: [(&str, &str, &str, bool); 3] = [
    ("fill-private", "/memfd:wl-fill ", "anon@", false),
    ("fill-reader", "/memfd:wl-fill-parent", "anon@", false),
    ("fill-huge", "/memfd:wl-fill ", "/memfd:wl-fill-huge", true),
];

#[test]
fn a_leak_after_a_shared_fill_is_named_after_where_it_grows() {
    if !ebpf_available("leak_mapping") {
        return;
    }
    // fill-huge: 1 MiB/s in 2 MiB pages for 40 s (21 pages, all reserved at its mmap).
    let (_huge, got) = Setting::huge_pages(2048, 26);
    assert!(got >= 21, "the kernel reserved {got} of 26 2 MiB huge pages: free memory first");
    let mut wl = start_workload(&[
        "fillleak",
        "--fill-mib",
        "256",
        "--kib-s",
        "1024",
        "--duration",
        "40",
        "--leakers",
        "private,reader,huge",
        "--wait-stdin",
    ]);
    let root = wl.id().to_string();
    let long = ["--interval", "1", "--smaps-interval", "1", "--leak-window", "400", "--leak-min-span", "20"];
    let mut serve = Serving::start(&[&["-p", &root][..], &long[..]].concat());
    let mut watch = Running::start(&[
        "watch",
        "-p",
        &root,
        "--format",
        "json",
        "--interval",
        "0.5",
        "--smaps-interval",
        "1",
        "--fail-on-leak",
    ]);
    watch.wait_for("start", Duration::from_secs(30));
    // serve's leak series, scraped every second until the run ends.
    let (done, scraper) = scrape_leaks(serve.port);
    go(&mut wl, 1);
    let (recs, code) = watch.finish(Duration::from_secs(90));
    let _ = wl.wait();
    done.store(true, Ordering::Release);
    let series = scraper.join().unwrap();
    assert_eq!(serve.stop(Duration::from_secs(10)), 0, "serve stops cleanly");

    assert_eq!(code, 3, "--fail-on-leak exits 3 when a leak was flagged");
    let leaks = of_type(&recs, "leak");
    let flagged: Vec<&Value> = leaks.iter().copied().filter(|l| l["state"] == "flagged").collect();
    let comms: std::collections::BTreeSet<&str> = flagged.iter().map(|l| l["comm"].as_str().unwrap()).collect();
    // The parent filled its segment once and held it: not a leak.
    assert_eq!(comms, LEAKERS.iter().map(|l| l.0).collect(), "{leaks:?}");
    let start = |comm: &str| {
        let seen = of_type(&recs, "proc").into_iter().chain(of_type(&recs, "faults")).filter(|r| r["comm"] == comm);
        seen.map(|r| r["ts"].as_f64().unwrap()).fold(f64::MAX, f64::min)
    };
    for (comm, fill, prefix, shared) in LEAKERS {
        // The fill is there, and larger than all the leak added: what the smoothed rate named.
        let p = proc_by_comm(&recs, comm);
        let (fill_pages, _) = mapping_pages(p, fill);
        assert!(fill_pages >= 60_000, "{comm}: {fill_pages} pages faulted in {fill}: {p}");
        let (leak_pages, _) = mapping_pages(p, prefix);
        assert!(leak_pages >= 16 * 256 && leak_pages < fill_pages, "{comm}: {leak_pages} pages in {prefix}: {p}");
        // Every flagged record names where the leak goes, from the first one on.
        let mine: Vec<&&Value> = flagged.iter().filter(|l| l["comm"] == comm).collect();
        for l in &mine {
            let m = l["mapping"].as_str().unwrap();
            assert!(m.starts_with(prefix) && l["shared"] == shared, "{comm} named {m}, not {prefix}*: {l}");
            assert_within(&format!("{comm} rate KiB/s"), l["rate_kib_s"].as_f64().unwrap() as i64, 1024, 40.0);
        }
        let first = mine[0];
        eprintln!(
            "leak_mapping: watch flagged {comm} {:.1} s after its start over {} s, named {} ({} records)",
            first["ts"].as_f64().unwrap() - start(comm),
            first["window_s"],
            first["mapping"],
            mine.len()
        );
        // Its evidence is that mapping's (full smaps): it holds the growth, not the segment.
        let ev = &first["smaps_mapping"];
        let held = if shared { ev["hugetlb_kib"].as_f64() } else { ev["uss_kib"].as_f64() };
        let held = held.unwrap_or_else(|| panic!("{comm}: no evidence: {first}"));
        assert!(held >= 0.9 * first["growth_kib"].as_f64().unwrap(), "{comm}: {first}");
        assert!(held < (fill_pages * 4) as f64 / 2.0, "{comm}: the evidence is the segment's: {first}");

        // serve's series of it carry the same mapping, every scrape.
        let lines: Vec<&(f64, String)> = series.iter().filter(|l| l.1.contains(&format!("comm=\"{comm}\""))).collect();
        assert!(!lines.is_empty(), "serve never exported {comm}'s leak: {series:?}");
        let label = format!("mapping=\"{prefix}");
        assert!(lines.iter().all(|l| l.1.contains(&label)), "serve named another mapping of {comm}: {lines:?}");
        eprintln!("leak_mapping: serve exported it {:.0} s into the run: {}", lines[0].0, lines[0].1);
    }
}
