//! `--smaps-budget` on real processes whose smaps reads are expensive (GiBs of page tables each),
//! and shared-segment growth flagged from the kernel's count while smaps reads are starved.
mod common;
use common::*;
use serde_json::Value;

/// The mem records of the process named `comm` at the end (its first readings may carry its
/// parent's name: a rename makes no event).
fn mems<'a>(recs: &'a [Value], comm: &str) -> Vec<&'a Value> {
    let pid = &proc_by_comm(recs, comm)["pid"];
    of_type(recs, "mem").into_iter().filter(|m| &m["pid"] == pid).collect()
}

#[test]
fn the_budget_holds_when_reads_are_expensive() {
    if !ebpf_available("smaps_budget_holds") {
        return;
    }
    // 4 mappers and 2 leakers over a 2 GiB segment: each read walks ~2 GiB of page tables
    // (15-50 ms of CPU here). At 0.5% of a CPU (0.3 s a minute) that is ~10 reads a minute,
    // where the schedule before the budget (every moved pid every 2 s, all every 10 s) would
    // take over 1 s a minute.
    let budget_pct = 0.5;
    let (recs, code) = watch_workload(
        &["--smaps-budget", &budget_pct.to_string()],
        &["seed", "--procs", "4", "--segment-mib", "2048", "--duration", "60", "--leak-kib-s", "512"],
    );
    assert_eq!(code, 0);
    let s = summary(&recs);
    let agent = &s["agent"];
    let (read_s, reads) = (agent["smaps_cpu_s"].as_f64().unwrap(), agent["smaps_reads"].as_u64().unwrap());
    let wall = s["duration_s"].as_f64().unwrap();
    // Over any 60 s: the whole run (about a minute) holds at most 1.2 budgets of a minute
    // (and more than a minute's runs at most 1.2 budgets of their length).
    let allowed = budget_pct / 100.0 * wall.max(60.0);
    eprintln!("smaps: {reads} reads, {read_s:.3} s over {wall:.1} s; allowed {allowed:.3} s; {agent}");
    assert!(read_s <= 1.2 * allowed, "smaps took {read_s:.3} s, budget {allowed:.3} s: {agent}");
    assert_eq!(agent["smaps_budget_pct"].as_f64(), Some(budget_pct));
    // The budget was spent (not an idle sampler): at least a third of it, on real reads.
    assert!(read_s >= allowed / 3.0, "smaps took only {read_s:.3} s of {allowed:.3} s");
    // Each read was expensive, so the budget, not the 2 s interval, set the pace: re-readings
    // of the big processes are far apart, and each says how old the previous one was.
    let names = ["seed-0", "seed-1", "seed-2", "seed-3", "priv-leaker", "shm-leaker"];
    let big: Vec<&Value> = names.iter().flat_map(|n| mems(&recs, n)).collect();
    let brief: Vec<String> =
        big.iter().map(|m| format!("{} {} {} {}", m["ts"], m["comm"], m["rss_kib"], m["prev_age_s"])).collect();
    let read: std::collections::BTreeSet<u64> = big.iter().map(|m| m["pid"].as_u64().unwrap()).collect();
    assert!(read.len() >= 2, "the big processes are read: {brief:?}");
    let ages: Vec<f64> = big.iter().filter_map(|m| m["prev_age_s"].as_f64()).collect();
    assert!(ages.iter().all(|&a| a >= 6.0), "no re-reading sooner than the budget allows: {brief:?}");
    assert!(big.len() < names.len() * 10, "far fewer readings than every 2 s: {brief:?}");
}

#[test]
fn shared_and_private_growth_are_flagged_from_kernel_counts_while_smaps_is_starved() {
    if !ebpf_available("shmem_leak_from_kernel_counts") {
        return;
    }
    // A budget near zero: no smaps reading at all in 45 s. The shmem leaker writes 1 MiB/s of
    // new pages in the shared segment (the kernel's count), the private leaker 1 MiB/s of anon
    // (the ledger's); the mappers only map the segment.
    let (recs, code) = watch_workload(
        &["--smaps-budget", "0.00001"],
        &[
            "seed",
            "--procs",
            "2",
            "--segment-mib",
            "64",
            "--duration",
            "45",
            "--leak-kib-s",
            "1024",
            "--leakers",
            "private,shmem",
        ],
    );
    assert_eq!(code, 0);
    let start = &of_type(&recs, "start")[0];
    assert!(
        start["hooks"].as_array().unwrap().iter().any(|h| h == "mod_memcg_lruvec_state"),
        "the kernel count's hook is attached: {start}"
    );
    assert!(of_type(&recs, "mem").is_empty(), "smaps was starved: no reading");
    let leaks = of_type(&recs, "leak");
    let flagged: std::collections::BTreeSet<&str> = leaks.iter().map(|l| l["comm"].as_str().unwrap()).collect();
    // The private leaker from the ledger's anon count; the mappers and the parent, which
    // made their pages once, not at all.
    assert_eq!(flagged, ["priv-leaker", "shm-leaker"].into_iter().collect(), "{leaks:?}");
    let p = leaks.iter().rfind(|l| l["comm"] == "priv-leaker").unwrap();
    assert_eq!(p["metric"], "faulted", "{p}");
    assert_within("private leak rate KiB/s", p["rate_kib_s"].as_f64().unwrap() as i64, 1024, 20.0);
    let l = leaks.iter().rfind(|l| l["comm"] == "shm-leaker").unwrap();
    assert_eq!(l["metric"], "shmem_created", "{l}");
    assert!(l["shared"] == true && l["mapping"].as_str().unwrap().starts_with("shmem-anon@"), "{l}");
    assert_within("shmem leak rate KiB/s", l["rate_kib_s"].as_f64().unwrap() as i64, 1024, 20.0);
    let first = leaks.iter().find(|l| l["comm"] == "shm-leaker").unwrap()["ts"].as_f64().unwrap();
    assert!(first < 35.0, "flagged within ~30 s: {first}");
    // The ledger's own count of its shmem faults agrees with the leak: ~45 MiB written.
    let p = proc_by_comm(&recs, "shm-leaker");
    assert!(p["leak"] == true, "{p}");
    let shmem_pages = p["pages"]["shmem"].as_i64().unwrap();
    assert_within("shm-leaker shmem pages", shmem_pages, 45 * MIB_PAGES as i64 + 64 * MIB_PAGES as i64, 10.0);
}

#[test]
fn without_the_memcg_tracepoint_shared_growth_falls_back_to_readings_and_start_says_so() {
    if !ebpf_available("shmem_count_missing") {
        return;
    }
    let load = agent::kernel::loader::LoadOptions {
        simulate_missing: vec!["memcg:mod_memcg_lruvec_state".into()],
        ..Default::default()
    };
    let args = ["--format", "json", "--smaps-interval", "0.5", "--", "sleep", "1.2"];
    let (code, recs) = watch_in_process(&args, load);
    assert_eq!(code, Ok(0));
    let start = &of_type(&recs, "start")[0];
    assert!(!start["hooks"].as_array().unwrap().iter().any(|h| h == "mod_memcg_lruvec_state"), "{start}");
    let missing: Vec<&str> = start["missing_hooks"].as_array().unwrap().iter().map(|m| m.as_str().unwrap()).collect();
    assert!(
        missing.iter().any(|m| m.starts_with("memcg:mod_memcg_lruvec_state")
            && m.ends_with("shared-segment growth is seen in smaps readings only")),
        "{missing:?}"
    );
    // The readings still come.
    assert!(!of_type(&recs, "mem").is_empty(), "smaps readings without the kernel count");
}
