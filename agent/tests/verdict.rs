//! Leak verdicts on real processes: only the two growers (private and /dev/shm) are flagged,
//! with their rates; a churner, a one-off fill and a stable holder are not.
mod common;
use common::*;

#[test]
fn only_the_growers_are_flagged_with_their_rates() {
    if !ebpf_available("leak_verdicts") {
        return;
    }
    let (recs, code) = watch_workload(&["--smaps-interval", "1", "--fail-on-leak"], &["leakmix", "--duration", "40"]);
    assert_eq!(code, 3, "--fail-on-leak exits 3 when a leak was flagged");
    let leaks = of_type(&recs, "leak");
    let flagged: std::collections::BTreeSet<&str> = leaks.iter().map(|l| l["comm"].as_str().unwrap()).collect();
    assert_eq!(flagged, ["leaker", "shm-grower"].into_iter().collect(), "{leaks:?}");
    let last = |comm: &str| *leaks.iter().rfind(|l| l["comm"] == comm).unwrap();
    let first_ts = |comm: &str| leaks.iter().find(|l| l["comm"] == comm).unwrap()["ts"].as_f64().unwrap();

    let l = last("leaker");
    assert_within("leaker rate KiB/s", l["rate_kib_s"].as_f64().unwrap() as i64, 2048, 25.0);
    assert_eq!(l["metric"], "uss");
    assert!(l["mapping"].as_str().unwrap().starts_with("anon@") && l["shared"] == false, "{l}");
    assert!(first_ts("leaker") < 35.0, "flagged within 30 s of its start: {}", first_ts("leaker"));
    // The kernel's own accounting of that mapping (full smaps) holds at least the growth.
    let vma = |l: &serde_json::Value, k: &str| l["smaps_mapping"][k].as_i64().unwrap_or_else(|| panic!("{l}"));
    assert!(vma(l, "uss_kib") as f64 >= 0.9 * l["growth_kib"].as_f64().unwrap(), "{l}");

    let s = last("shm-grower");
    assert_within("shm grower rate KiB/s", s["rate_kib_s"].as_f64().unwrap() as i64, 1024, 25.0);
    assert!(s["mapping"].as_str().unwrap().starts_with("/dev/shm/agent-leakmix-") && s["shared"] == true, "{s}");
    assert!(vma(s, "rss_kib") as f64 >= 0.9 * s["growth_kib"].as_f64().unwrap(), "{s}");

    // The summary marks exactly those two.
    let procs = summary(&recs)["procs"].as_array().unwrap();
    for p in procs {
        let should = matches!(p["comm"].as_str().unwrap(), "leaker" | "shm-grower");
        assert_eq!(p["leak"].as_bool().unwrap(), should, "{p}");
    }
    // The eBPF ledger agrees with smaps on RSS: each reading is compared with the values the
    // ledger held while it was taken, so this holds even for the churner, which swings by
    // 8 MiB every 50 ms, and for the filler while it fills.
    let mut checked = 0;
    for m in of_type(&recs, "mem") {
        let rss = m["rss_kib"].as_i64().unwrap();
        if let Some(d) = m["drift_kib"].as_i64() {
            checked += 1;
            assert!(d.abs() <= 256.max(rss / 100), "ledger vs smaps drift: {m}");
        }
    }
    assert!(checked >= 100, "{checked} readings checked for drift");
}
