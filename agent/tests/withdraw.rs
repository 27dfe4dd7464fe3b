//! Verdicts are withdrawn when the growth no longer holds: a sawtooth (ramps of 2 MiB/s that
//! drop back to the floor) is flagged on its first ramp, withdrawn at its first drop and not
//! flagged again; a steady leaker in the same run stays flagged, and `--fail-on-leak` counts
//! only it.
mod common;
use common::*;

/// Each ramp: long enough to be flagged (the verdict needs 20 s of readings).
const RAMP_S: f64 = 28.0;

#[test]
fn a_sawtooth_is_withdrawn_and_a_real_leaker_stays_flagged() {
    if !ebpf_available("withdraw") {
        return;
    }
    let ramp = RAMP_S.to_string();
    let (recs, code) = watch_workload(
        &["--smaps-interval", "1", "--fail-on-leak"],
        &["sawtooth", "--ramp-s", &ramp, "--mib-s", "2", "--cycles", "2", "--leaker-mib-s", "1"],
    );
    assert_eq!(code, 3, "--fail-on-leak exits 3: the leaker's verdict stands at the end");
    let leaks = of_type(&recs, "leak");
    let of = |comm: &str, state: &str| -> Vec<&serde_json::Value> {
        leaks.iter().copied().filter(|l| l["comm"] == comm && l["state"] == state).collect()
    };
    let ts = |l: &serde_json::Value| l["ts"].as_f64().unwrap();

    // The sawtooth: flagged during its first ramp, withdrawn within one cycle of its first drop
    // (the reading after it), never flagged again.
    let flagged = of("sawtooth", "flagged");
    let withdrawn = of("sawtooth", "withdrawn");
    assert!(!flagged.is_empty(), "the first ramp is flagged: {leaks:?}");
    assert!(ts(flagged[0]) < RAMP_S + 2.0, "flagged during the first ramp: {}", flagged[0]);
    assert_eq!(withdrawn.len(), 1, "{leaks:?}");
    let w = withdrawn[0];
    assert!(ts(w) > ts(flagged[0]) && ts(w) < 2.0 * RAMP_S, "withdrawn within a cycle of the first drop: {w}");
    assert_eq!(w["reason"], "fell_back", "{w}");
    assert_within("withdrawn verdict's last rate KiB/s", w["rate_kib_s"].as_f64().unwrap() as i64, 2048, 25.0);
    assert!(w["flagged_at"].as_f64().unwrap() < ts(flagged[0]), "{w}");
    assert!(flagged.iter().all(|l| ts(l) < ts(w)), "not flagged again after the withdrawal: {leaks:?}");

    // The leaker: flagged, never withdrawn.
    assert!(!of("leaker", "flagged").is_empty() && of("leaker", "withdrawn").is_empty(), "{leaks:?}");

    // The summary: the leaker's verdict stands; the sawtooth's is listed as withdrawn.
    let saw = proc_by_comm(&recs, "sawtooth");
    assert_eq!(saw["leak"], false, "{saw}");
    let v = saw["verdicts"].as_array().unwrap_or_else(|| panic!("{saw}"));
    assert_eq!(v.len(), 1, "{saw}");
    assert_eq!((v[0]["withdrawn_at"].is_f64(), &v[0]["reason"]), (true, &serde_json::json!("fell_back")), "{saw}");
    let leaker = proc_by_comm(&recs, "leaker");
    assert_eq!(leaker["leak"], true, "{leaker}");
    assert!(leaker["verdicts"][0]["withdrawn_at"].is_null(), "{leaker}");
    assert_eq!(proc_by_comm(&recs, "wl-sawtooth")["leak"], false);
}
