//! The real engine: a Prometheus server (Debian's, on loopback, its own temp dir, scrape
//! interval 1 s) scrapes `agent serve -p` on the leak scenario (`workloads leakmix`: a leaker
//! at 2 MiB/s and a holder of 64 MiB that stays flat, among others), and its HTTP API must
//! show the verdict: `agent_leak_bytes_per_second` for the leaker's pid, never for the
//! holder's; and the holder's `agent_memory_bytes{kind="pss"}` equal to one of the agent's own
//! smaps readings of it (its JSON records, `-o`).
mod common;
mod serve_util;

use std::{
    collections::HashSet,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use serve_util::{children_named, free_port, get, Serving};

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The prometheus server binary, or a skip (a failure under AGENT_REQUIRE_EBPF=1).
fn prometheus_bin() -> Option<std::path::PathBuf> {
    serve_util::promtool("serve_prometheus")?;
    let p = std::path::PathBuf::from("/usr/bin/prometheus");
    if !p.is_file() {
        assert!(
            std::env::var("AGENT_REQUIRE_EBPF").map_or(true, |v| v != "1"),
            "the prometheus server is missing: `cargo xtask setup` installs Debian's prometheus package"
        );
        eprintln!("SKIP serve_prometheus: /usr/bin/prometheus is missing (sudo apt-get install prometheus)");
        return None;
    }
    Some(p)
}

/// An instant query through Prometheus's HTTP API: its result vector.
fn query(port: u16, promql: &str) -> Vec<Value> {
    let q: String = promql
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'.' | b'-' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let r = get(port, &format!("/api/v1/query?query={q}"), &[]).unwrap_or_else(|e| panic!("query prometheus: {e}"));
    // Prometheus answers with chunked encoding to HTTP/1.1: take the JSON object in the body.
    let body = &r.body[r.body.find('{').unwrap_or(0)..=r.body.rfind('}').unwrap_or(0)];
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{promql}: {e}: {}", r.body));
    assert_eq!(v["status"], "success", "{promql}: {v}");
    v["data"]["result"].as_array().cloned().unwrap_or_default()
}

#[test]
fn prometheus_sees_the_leak_verdict_of_the_leaker_only_and_the_agents_own_pss() {
    if !common::ebpf_available("serve_prometheus") {
        return;
    }
    let Some(prom) = prometheus_bin() else { return };
    let dir = std::env::temp_dir().join(format!("agent-serve-prometheus-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let records = dir.join("records.json");

    let mix = Killed(Command::new(common::workloads()).args(["leakmix", "--duration", "70"]).spawn().expect("leakmix"));
    let root = mix.0.id();
    // Its children are forked at once; named by prctl right after.
    let t = Instant::now();
    let (leaker, holder) = loop {
        if let ([l], [h]) = (&children_named(root, "leaker")[..], &children_named(root, "holder")[..]) {
            break (*l, *h);
        }
        assert!(t.elapsed() < Duration::from_secs(5), "leakmix's children did not appear");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut serve = Serving::start(&[
        "-p",
        &root.to_string(),
        "--interval",
        "0.5",
        "--smaps-interval",
        "1",
        "--leak-window",
        "60",
        "-o",
        records.to_str().unwrap(),
    ]);

    let prom_port = free_port();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: agent\n    static_configs:\n      - targets: ['127.0.0.1:{}']\n",
            serve.port
        ),
    )
    .unwrap();
    let _prom = Killed(
        Command::new(prom)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus"),
    );

    // Prometheus answers, and the scrape target is up as it sees it.
    let t = Instant::now();
    while get(prom_port, "/-/ready", &[]).map_or(true, |r| r.status != 200) {
        assert!(t.elapsed() < Duration::from_secs(30), "prometheus not ready within 30 s");
        std::thread::sleep(Duration::from_millis(200));
    }
    while query(prom_port, "up{job=\"agent\"} == 1").is_empty() {
        assert!(t.elapsed() < Duration::from_secs(30), "prometheus never scraped the agent successfully");
        std::thread::sleep(Duration::from_millis(500));
    }
    // The leaker is flagged about 20 s after it starts; give it 60.
    let flagged = format!("agent_leak_bytes_per_second{{pid=\"{leaker}\"}}");
    let t = Instant::now();
    let series = loop {
        let r = query(prom_port, &flagged);
        if !r.is_empty() {
            break r;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "no leak verdict for the leaker ({leaker}) in Prometheus after 60 s"
        );
        std::thread::sleep(Duration::from_secs(1));
    };
    let m = &series[0]["metric"];
    assert_eq!(m["comm"], "leaker", "{m}");
    assert_eq!(m["group"], "leaker", "--group-by comm: {m}");
    let rate: f64 = series[0]["value"][1].as_str().unwrap().parse().unwrap();
    assert!((1.5e6..3.0e6).contains(&rate), "leaker rate {rate} B/s, leaks 2 MiB/s");
    // The verdict counter of its group went up with it.
    assert!(!query(prom_port, "agent_leak_verdicts_total{group=\"leaker\"} >= 1").is_empty());

    // Never any series for the holder, over the whole run.
    let held = query(prom_port, &format!("count_over_time(agent_leak_bytes_per_second{{pid=\"{holder}\"}}[5m])"));
    assert!(held.is_empty(), "the holder ({holder}) was flagged: {held:?}");

    // The holder's PSS in Prometheus is one of the agent's own readings of it, exactly.
    let pss = query(prom_port, "agent_memory_bytes{group=\"holder\",kind=\"pss\"}");
    assert_eq!(pss.len(), 1, "{pss:?}");
    let prom_pss: u64 = pss[0]["value"][1].as_str().unwrap().parse::<f64>().unwrap() as u64;
    let readings: HashSet<u64> = std::fs::read_to_string(&records)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["type"] == "mem" && v["pid"] == holder)
        .map(|v| v["pss_kib"].as_u64().unwrap() * 1024)
        .collect();
    assert!(
        readings.contains(&prom_pss),
        "Prometheus's holder PSS {prom_pss} is none of the agent's readings {readings:?}"
    );
    assert!(prom_pss > 60 << 20, "the holder holds 64 MiB: {prom_pss}");
    assert_eq!(serve.stop(Duration::from_secs(10)), 0);
    let _ = std::fs::remove_dir_all(&dir);
}
