//! `agent serve`'s endpoint: what a scraper gets (content negotiation, the classic format that
//! the real `promtool check metrics` passes clean, OpenMetrics), `/healthz`, a SIGTERM while
//! being scraped, the bad inputs a user can give, and the shipped alert rules checked and
//! unit-tested by the real promtool.
mod cgroup_util;
mod common;
mod serve_util;

use std::{
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use serve_util::{alive, get, promtool, refused, run_with_input, scrape_for, scrape_until, value, Serving};

const RULES_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../packaging/prometheus");

#[test]
fn shipped_rules_pass_promtool_check_and_their_unit_tests() {
    let Some(promtool) = promtool("shipped_rules_pass_promtool_check_and_their_unit_tests") else { return };
    for args in [["check", "rules", "agent-rules.yml"], ["test", "rules", "agent-rules.test.yml"]] {
        let out = Command::new(&promtool).args(args).current_dir(RULES_DIR).output().expect("run promtool");
        let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
        assert!(text.contains("SUCCESS"), "promtool {args:?}:\n{text}");
    }
}

#[test]
fn bad_input_is_one_line_naming_the_fix_and_exit_1() {
    let me = std::process::id().to_string();
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = held.local_addr().unwrap().to_string();
    let cases: [(&[&str], &str); 5] = [
        (&["-p", &me, "--group-by", "user"], "--group-by user: unknown grouping; use comm, cgroup or tree"),
        (&["-p", &me, "--listen", &busy], "another process listens there"),
        // TEST-NET-1: on no interface of this host.
        (&["-p", &me, "--listen", "192.0.2.1:9464"], "no interface of this host has that address"),
        (&["-p", &me, "--listen", "localhost"], "not an ADDR:PORT"),
        (&[], "nothing to serve: give -p PID, --comm NAME or --all"),
    ];
    for (args, want) in cases {
        let (code, err) = refused(args);
        assert_eq!(code, 1, "agent serve {args:?}: exit {code}, stderr {err:?}");
        assert_eq!(err.lines().count(), 1, "one line for {args:?}: {err:?}");
        assert!(err.starts_with("agent: ") && err.contains(want), "agent serve {args:?}: {err:?}, want {want:?}");
    }
}

#[test]
fn scrape_negotiates_formats_passes_promtool_and_survives_sigterm() {
    if !common::ebpf_available("scrape_negotiates_formats_passes_promtool_and_survives_sigterm") {
        return;
    }
    let Some(promtool) = promtool("scrape_negotiates_formats_passes_promtool_and_survives_sigterm") else { return };
    // A known answer: 16 MiB of private anonymous memory written once the agent watches.
    let mut target = Command::new(common::workloads())
        .args(["anon", "--mib", "16", "--hold", "60", "--wait-stdin"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("workload");
    let pid = target.id().to_string();
    let mut serve = Serving::start(&["-p", &pid, "--interval", "0.5", "--smaps-interval", "0.5", "--bpf-stats"]);
    std::io::Write::write_all(target.stdin.as_mut().unwrap(), b"g").unwrap();

    // Its faults are counted at the interval's end, its memory at the next reading after.
    let anon = "agent_faulted_bytes_total{group=\"wl-anon\",kind=\"anon\"}";
    let uss = "agent_memory_bytes{group=\"wl-anon\",kind=\"uss\"}";
    let classic =
        scrape_for(serve.port, Duration::from_secs(20), Duration::from_millis(250), "no 16 MiB of wl-anon", |r| {
            let full = |series| value(&r.body, series).is_some_and(|v| v >= 16.0 * 1048576.0);
            (full(anon) && full(uss)).then(|| r.clone())
        });
    let mib = |v: f64| v / 1048576.0;
    let (faulted, own) = (mib(value(&classic.body, anon).unwrap()), mib(value(&classic.body, uss).unwrap()));
    assert!(faulted < 16.5, "faulted {faulted:.2} MiB of anon for 16 MiB written");
    // Its USS is the 16 MiB and its own small private rest (stack, heap, the binary's data).
    assert!(own < 20.0, "USS {own:.2} MiB for 16 MiB written");
    assert_eq!(classic.status, 200);
    assert_eq!(classic.header("content-type"), Some("text/plain; version=0.0.4; charset=utf-8"));
    for name in [
        "agent_processes{group=\"wl-anon\"} 1",
        "# TYPE agent_faulted_bytes_total counter",
        "# TYPE agent_events_lost_total counter",
        "# TYPE agent_cpu_seconds_total counter",
        "# TYPE agent_smaps_read_seconds_total counter",
        "# TYPE agent_resident_bytes gauge",
        "agent_ebpf_run_seconds_total{program=\"rss_stat\"}",
    ] {
        assert!(classic.body.contains(name), "no {name} in the scrape:\n{}", classic.body);
    }
    assert!(!classic.body.contains("pid=\""), "a pid label with no leak flagged:\n{}", classic.body);
    let (code, text) = run_with_input(
        {
            let mut c = Command::new(&promtool);
            c.args(["check", "metrics"]);
            c
        },
        &classic.body,
    );
    assert!(
        code == 0 && text.trim().is_empty(),
        "promtool check metrics (exit {code}):\n{text}\n---\n{}",
        classic.body
    );

    let om = get(
        serve.port,
        "/metrics",
        &[("Accept", "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5")],
    )
    .unwrap();
    assert_eq!(om.header("content-type"), Some("application/openmetrics-text; version=1.0.0; charset=utf-8"));
    assert!(om.body.ends_with("# EOF\n") && om.body.contains("# TYPE agent_faulted_bytes counter\n"), "{}", om.body);
    let plain = get(serve.port, "/metrics", &[("Accept", "text/plain")]).unwrap();
    assert!(plain.header("content-type").unwrap().starts_with("text/plain; version=0.0.4"));
    assert!(!plain.body.contains("# EOF"));
    assert_eq!(get(serve.port, "/healthz", &[]).unwrap().status, 200);
    assert_eq!(get(serve.port, "/nope", &[]).unwrap().status, 404);

    // SIGTERM while a scraper hammers it: every scrape is answered or refused, none hangs
    // (`get` panics after 5 s without an answer), and the agent exits 0.
    let stop = Arc::new(AtomicBool::new(false));
    let scraper = {
        let (stop, port) = (stop.clone(), serve.port);
        std::thread::spawn(move || {
            let (mut ok, mut refused) = (0, 0);
            while !stop.load(Ordering::Relaxed) {
                match get(port, "/metrics", &[]) {
                    Ok(r) if r.status == 200 => ok += 1,
                    Ok(r) => panic!("scrape during shutdown: status {}", r.status),
                    Err(_) => refused += 1,
                }
            }
            (ok, refused)
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(serve.child.id() as i32, libc::SIGTERM) };
    // /healthz stops saying 200 as soon as the stop begins (503, then refused).
    loop {
        match get(serve.port, "/healthz", &[]) {
            Ok(r) if r.status == 200 => {
                assert!(t.elapsed() < Duration::from_millis(500), "/healthz still 200 {:?} after SIGTERM", t.elapsed())
            }
            Ok(r) => {
                assert_eq!(r.status, 503);
                break;
            }
            Err(_) => break,
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let code = serve.wait(Duration::from_secs(10));
    let took = t.elapsed();
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    let (ok, refused) = scraper.join().expect("scraper");
    eprintln!("stopped in {took:?}; scrapes answered {ok}, refused {refused}");
    assert_eq!(code, 0, "exit code after SIGTERM");
    assert!(ok > 0 && refused > 0, "answered {ok}, refused {refused}");
    assert!(get(serve.port, "/metrics", &[]).is_err(), "the port is closed after the exit");
    let _ = target.kill();
    let _ = target.wait();
}

#[test]
fn comm_target_takes_in_a_process_named_later_grouped_by_tree() {
    if !common::ebpf_available("comm_target_takes_in_a_process_named_later_grouped_by_tree") {
        return;
    }
    // Nothing of that name runs yet: serve keeps running, and takes it in when it appears.
    let mut serve =
        Serving::start(&["--comm", "wl-anon", "--group-by", "tree", "--interval", "0.5", "--smaps-interval", "0.5"]);
    let mut w = Command::new(common::workloads())
        .args(["anon", "--mib", "8", "--hold", "30", "--wait-stdin"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("workload");
    let group = format!("wl-anon:{}", w.id());
    scrape_until(serve.port, &format!("agent_processes{{group=\"{group}\"}}"), |v| v == 1.0);
    // Watched now: its 8 MiB are its faults', in its tree's group.
    std::io::Write::write_all(w.stdin.as_mut().unwrap(), b"g").unwrap();
    let series = format!("agent_faulted_bytes_total{{group=\"{group}\",kind=\"anon\"}}");
    let body = scrape_until(serve.port, &series, |v| v >= 8.0 * 1048576.0);
    let mib = value(&body, &series).unwrap() / 1048576.0;
    assert!(mib < 8.5, "{mib:.2} MiB faulted for 8 MiB written");
    let _ = w.kill();
    let _ = w.wait();
    // Gone: its group leaves the gauges.
    let gauge = format!("agent_processes{{group=\"{group}\"}}");
    let what = format!("{group} still has processes after its exit");
    scrape_for(serve.port, Duration::from_secs(10), Duration::from_millis(200), &what, |r| {
        (!r.body.contains(&gauge)).then_some(())
    });
    assert_eq!(serve.stop(Duration::from_secs(10)), 0);
}

#[test]
fn group_by_cgroup_names_the_process_cgroup() {
    if !common::ebpf_available("group_by_cgroup_names_the_process_cgroup") {
        return;
    }
    let mut w = Command::new(common::workloads()).args(["sleep", "--secs", "30"]).spawn().expect("workload");
    let text = std::fs::read_to_string(format!("/proc/{}/cgroup", w.id())).unwrap();
    let path = text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .or_else(|| text.lines().find_map(|l| l.split_once(":memory:").map(|(_, p)| p)))
        .expect("a cgroup path")
        .to_string();
    let mut serve = Serving::start(&["-p", &w.id().to_string(), "--group-by", "cgroup", "--interval", "0.5"]);
    scrape_until(serve.port, &format!("agent_processes{{group=\"{path}\"}}"), |v| v == 1.0);
    assert_eq!(serve.stop(Duration::from_secs(10)), 0);
    let _ = w.kill();
    let _ = w.wait();
}

#[test]
fn a_withdrawn_verdict_takes_its_series_away_while_the_process_lives() {
    if !common::ebpf_available("a_withdrawn_verdict_takes_its_series_away_while_the_process_lives") {
        return;
    }
    // Ramps of 2 MiB/s for 35 s, all unmapped at the end of each: flagged on the first ramp,
    // withdrawn at its drop (fell back), not flagged again on the second.
    let mut w = Command::new(common::workloads())
        .args(["sawtooth", "--ramp-s", "35", "--mib-s", "2", "--cycles", "2"])
        .spawn()
        .expect("workload");
    let root = w.id();
    let mut serve =
        Serving::start(&["-p", &root.to_string(), "--interval", "0.5", "--smaps-interval", "1", "--leak-window", "60"]);
    let leak_line = |body: &str| {
        body.lines()
            .find(|l| l.starts_with("agent_leak_bytes_per_second{") && l.contains("comm=\"sawtooth\""))
            .map(str::to_string)
    };
    let t = Instant::now();
    let every = Duration::from_millis(250);
    let line =
        scrape_for(serve.port, Duration::from_secs(45), every, "the sawtooth was not flagged", |r| leak_line(&r.body));
    let pid = serve_util::children_named(root, "sawtooth");
    assert_eq!(pid.len(), 1);
    assert!(line.contains(&format!("pid=\"{}\"", pid[0])), "{line}");
    // Within 60 s of the start of the wait for its flag.
    let left = Duration::from_secs(60).saturating_sub(t.elapsed());
    let body = scrape_for(serve.port, left, every, "the sawtooth's series stayed after its drop", |r| {
        leak_line(&r.body).is_none().then(|| r.body.clone())
    });
    assert!(alive(pid[0]), "withdrawn while the sawtooth lives, not at its exit");
    assert!(!body.contains("pid=\""), "no pid label left:\n{body}");
    assert_eq!(value(&body, "agent_leak_verdicts_total{group=\"sawtooth\"}"), Some(1.0), "{body}");
    assert_eq!(serve.stop(Duration::from_secs(10)), 0);
    let _ = w.kill();
    let _ = w.wait();
}

#[test]
fn cgroup_target_serves_its_members_grouped_by_cgroup() {
    if !common::ebpf_available("cgroup_target_serves_its_members_grouped_by_cgroup") {
        return;
    }
    let cg = cgroup_util::TestCgroup::v2("serve");
    // A member moved in before the start (the shell moves itself in, then execs).
    let script = format!(
        "echo $$ > {}/cgroup.procs && exec {} anon --mib 8 --hold 30 --wait-stdin",
        cg.path(),
        common::workloads().display()
    );
    let mut w = Command::new("sh").args(["-c", &script]).stdin(Stdio::piped()).spawn().expect("member");
    let t = Instant::now();
    while !cg.procs().contains(&(w.id() as i32)) {
        assert!(t.elapsed() < Duration::from_secs(5), "the member did not join {}", cg.path());
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut serve = Serving::start(&["--cgroup", cg.path(), "--group-by", "cgroup", "--interval", "0.5"]);
    scrape_until(serve.port, &format!("agent_processes{{group=\"{}\"}}", cg.rel), |v| v == 1.0);
    std::io::Write::write_all(w.stdin.as_mut().unwrap(), b"g").unwrap();
    let series = format!("agent_faulted_bytes_total{{group=\"{}\",kind=\"anon\"}}", cg.rel);
    let body = scrape_until(serve.port, &series, |v| v >= 8.0 * 1048576.0);
    let mib = value(&body, &series).unwrap() / 1048576.0;
    assert!(mib < 8.5, "{mib:.2} MiB faulted for 8 MiB written");
    assert_eq!(serve.stop(Duration::from_secs(10)), 0);
    let _ = w.kill();
    let _ = w.wait();
}

#[test]
fn comm_target_counts_a_process_that_execs_under_the_name_and_exits_within_an_interval() {
    if !common::ebpf_available("comm_target_counts_a_process_that_execs_under_the_name_and_exits_within_an_interval") {
        return;
    }
    // It execs as `workloads` (the kernel's comm at exec), writes 8 MiB and exits at once: well
    // within one 2 s interval, so only the kernel's join at exec can see it.
    let mut serve = Serving::start(&["--comm", "workloads", "--group-by", "tree", "--interval", "2"]);
    let mut w =
        Command::new(common::workloads()).args(["anon", "--mib", "8", "--hold", "0"]).spawn().expect("workload");
    let pid = w.id();
    assert!(w.wait().unwrap().success());
    // Its tree's group is `comm:pid` of the workload.
    let suffix = format!(":{pid}\",kind=\"anon\"}} ");
    let what = format!("no faults of the short-lived workload {pid}");
    let line = scrape_for(serve.port, Duration::from_secs(10), Duration::from_millis(200), &what, |r| {
        r.body.lines().find(|l| l.starts_with("agent_faulted_bytes_total{") && l.contains(&suffix)).map(str::to_string)
    });
    let mib = line.rsplit(' ').next().unwrap().parse::<f64>().unwrap() / 1048576.0;
    // The 8 MiB, and what the process's start wrote since its exec (loader, runtime, heap).
    assert!((8.0..10.0).contains(&mib), "{mib:.2} MiB faulted for 8 MiB written: {line}");
    assert_eq!(serve.stop(Duration::from_secs(10)), 0);
}

#[test]
fn the_units_capabilities_are_enough_to_serve() {
    if !common::ebpf_available("the_units_capabilities_are_enough_to_serve") {
        return;
    }
    // The capabilities packaging/agent.service keeps, and nothing else (no CAP_SYS_ADMIN), with
    // no_new_privs: what the unit runs the agent with.
    let unit = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../packaging/agent.service")).unwrap();
    let caps: Vec<String> = unit
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("the unit bounds its capabilities")
        .split_whitespace()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_ascii_lowercase()))
        .collect();
    assert_eq!(caps.len(), 4, "{caps:?}");
    let bounding = format!("-all,{}", caps.join(","));
    let mut w = Command::new(common::workloads())
        .args(["anon", "--mib", "16", "--hold", "30", "--wait-stdin"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("workload");
    let pid = w.id().to_string();
    let mut serve = Serving::start_under(
        &["setpriv", "--bounding-set", &bounding, "--no-new-privs"],
        &["-p", &pid, "--interval", "0.5", "--smaps-interval", "0.5"],
    );
    let status = std::fs::read_to_string(format!("/proc/{}/status", serve.child.id())).unwrap();
    let eff = status.lines().find_map(|l| l.strip_prefix("CapEff:")).unwrap().trim().to_string();
    let eff = u64::from_str_radix(&eff, 16).unwrap();
    assert_eq!(eff & (1 << 21), 0, "CAP_SYS_ADMIN is not among the agent's capabilities: {eff:x}");
    std::io::Write::write_all(w.stdin.as_mut().unwrap(), b"g").unwrap();
    let anon = "agent_faulted_bytes_total{group=\"wl-anon\",kind=\"anon\"}";
    scrape_until(serve.port, anon, |v| v >= 16.0 * 1048576.0);
    scrape_until(serve.port, "agent_memory_bytes{group=\"wl-anon\",kind=\"uss\"}", |v| v >= 16.0 * 1048576.0);
    assert_eq!(serve.stop(Duration::from_secs(10)), 0);
    let _ = w.kill();
    let _ = w.wait();
}
