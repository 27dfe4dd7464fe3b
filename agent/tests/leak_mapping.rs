//! A leak record names the mapping that grew over the span its verdict flagged, not a large
//! shared segment the process faulted in just before it started leaking elsewhere. Three
//! leakers each fill 256 MiB of a MAP_SHARED memfd in one go (their own, written; or the
//! parent's, read into their page tables, as the seed's mappers do), then leak 1 MiB/s: two
//! into private anon, one into a hugetlb memfd. One run, ~35 s.
mod common;
mod huge_pages;
use common::*;
use huge_pages::Setting;
use serde_json::Value;

#[test]
fn a_leak_after_a_shared_fill_is_named_after_where_it_grows() {
    if !ebpf_available("leak_mapping") {
        return;
    }
    // fill-huge: 1 MiB/s in 2 MiB pages for 35 s (19 pages, all reserved at its mmap).
    let (_huge, got) = Setting::huge_pages(2048, 24);
    assert!(got >= 19, "the kernel reserved {got} of 24 2 MiB huge pages: free memory first");
    let (recs, code) = watch_workload(
        &["--smaps-interval", "1", "--fail-on-leak"],
        &["fillleak", "--fill-mib", "256", "--kib-s", "1024", "--duration", "35", "--leakers", "private,reader,huge"],
    );
    assert_eq!(code, 3, "--fail-on-leak exits 3 when a leak was flagged");
    let leaks = of_type(&recs, "leak");
    let flagged: Vec<&Value> = leaks.iter().copied().filter(|l| l["state"] == "flagged").collect();
    let comms: std::collections::BTreeSet<&str> = flagged.iter().map(|l| l["comm"].as_str().unwrap()).collect();
    // The parent filled its segment once and held it: not a leak.
    assert_eq!(comms, ["fill-huge", "fill-private", "fill-reader"].into_iter().collect(), "{leaks:?}");
    let start = |comm: &str| {
        let seen = of_type(&recs, "proc").into_iter().chain(of_type(&recs, "faults")).filter(|r| r["comm"] == comm);
        seen.map(|r| r["ts"].as_f64().unwrap()).fold(f64::MAX, f64::min)
    };
    for (comm, fill, prefix, shared) in [
        ("fill-private", "/memfd:wl-fill ", "anon@", false),
        ("fill-reader", "/memfd:wl-fill-parent", "anon@", false),
        ("fill-huge", "/memfd:wl-fill ", "/memfd:wl-fill-huge", true),
    ] {
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
            "leak_mapping: {comm} flagged {:.1} s after its start over {} s, named {} ({} records)",
            first["ts"].as_f64().unwrap() - start(comm),
            first["window_s"],
            first["mapping"],
            mine.len()
        );
        // Its evidence is that mapping's (full smaps): it holds the growth.
        let ev = &first["smaps_mapping"];
        let held = if shared { ev["hugetlb_kib"].as_f64() } else { ev["uss_kib"].as_f64() };
        let held = held.unwrap_or_else(|| panic!("{comm}: no evidence: {first}"));
        assert!(held >= 0.9 * first["growth_kib"].as_f64().unwrap(), "{comm}: {first}");
        assert!(held < (fill_pages * 4) as f64 / 2.0, "{comm}: the evidence is the segment's: {first}");
    }
}
