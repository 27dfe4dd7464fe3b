//! Helpers of the `agent serve` tests: a free port, the real agent serving, plain HTTP GETs
//! (std only: what a scraper sends), and the real promtool.
#![allow(dead_code)]

use std::{
    io::{Read, Write},
    net::TcpStream,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

/// A loopback port nobody listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind :0").local_addr().unwrap().port()
}

/// The status line's code, the headers (lowercased names) and the body of one GET.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// `GET path` with these extra headers, `Connection: close`; an error for a refused or reset
/// connection, a panic if no answer comes within 5 s (a hang).
pub fn get(port: u16, path: &str, headers: &[(&str, &str)]) -> std::io::Result<Reply> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    if let Err(e) = s.read_to_end(&mut raw) {
        assert!(
            e.kind() != std::io::ErrorKind::WouldBlock && e.kind() != std::io::ErrorKind::TimedOut,
            "GET {path}: no answer within 5 s"
        );
        return Err(e);
    }
    let text = String::from_utf8(raw).expect("utf-8 reply");
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, format!("no complete reply: {text:?}")));
    };
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split_whitespace().nth(1)).and_then(|c| c.parse().ok()).unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(Reply { status, headers, body: body.to_string() })
}

/// `agent serve ARGS --listen 127.0.0.1:PORT`, stderr inherited.
pub struct Serving {
    pub child: Child,
    pub port: u16,
}

impl Serving {
    pub fn start(args: &[&str]) -> Serving {
        Serving::start_under(&[], args)
    }

    /// `PREFIX... agent serve ARGS`: under a wrapper such as `setpriv`.
    pub fn start_under(prefix: &[&str], args: &[&str]) -> Serving {
        let port = free_port();
        let mut c = match prefix {
            [] => Command::new(env!("CARGO_BIN_EXE_agent")),
            [wrapper, rest @ ..] => {
                let mut c = Command::new(wrapper);
                c.args(rest).arg(env!("CARGO_BIN_EXE_agent"));
                c
            }
        };
        let child = c
            .arg("serve")
            .args(args)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn agent serve");
        let mut s = Serving { child, port };
        s.wait_healthy(Duration::from_secs(30));
        s
    }

    /// Until `/healthz` answers 200 (programs attached, an interval closed).
    pub fn wait_healthy(&mut self, within: Duration) {
        let t = Instant::now();
        loop {
            if let Ok(r) = get(self.port, "/healthz", &[]) {
                if r.status == 200 {
                    return;
                }
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("agent serve exited ({st}) before it was healthy");
            }
            assert!(t.elapsed() < within, "agent serve not healthy within {within:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// SIGTERM, then its exit code (panics if it takes more than `within`).
    pub fn stop(&mut self, within: Duration) -> i32 {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.wait(within)
    }

    pub fn wait(&mut self, within: Duration) -> i32 {
        let t = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().expect("wait agent") {
                return st.code().unwrap_or(-1);
            }
            assert!(t.elapsed() < within, "agent serve still running {within:?} after SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The real promtool, or a skip with a reason (a failure under AGENT_REQUIRE_EBPF=1, where
/// `cargo xtask setup` has installed it).
pub fn promtool(test: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .and_then(|p| std::env::split_paths(&p).map(|d| d.join("promtool")).find(|p| p.is_file()));
    if found.is_none() {
        if std::env::var("AGENT_REQUIRE_EBPF").is_ok_and(|v| v == "1") {
            panic!("{test}: promtool is missing: `cargo xtask setup` installs Debian's prometheus package");
        }
        eprintln!("SKIP {test}: promtool is missing (sudo apt-get install prometheus, or cargo xtask setup)");
    }
    found
}

/// Run a child to completion with `input` on its stdin: (exit code, stdout + stderr).
pub fn run_with_input(mut c: Command, input: &str) -> (i32, String) {
    let mut child = c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    child.stdin.take().unwrap().write_all(input.as_bytes()).expect("write stdin");
    let out = child.wait_with_output().expect("wait");
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

/// The pids of `root`'s children named `comm`.
pub fn children_named(root: u32, comm: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let Some((head, rest)) = stat.rsplit_once(')') else { continue };
        let name = head.split_once('(').map(|(_, n)| n).unwrap_or("");
        let ppid: u32 = rest.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0);
        if ppid == root && name == comm {
            out.push(pid);
        }
    }
    out
}

/// `GET /metrics` every `every` until `found` picks something out of the reply; a panic naming
/// `what` (with the last body) if nothing was found within `within`.
pub fn scrape_for<T>(
    port: u16,
    within: Duration,
    every: Duration,
    what: &str,
    mut found: impl FnMut(&Reply) -> Option<T>,
) -> T {
    let t = Instant::now();
    loop {
        let r = get(port, "/metrics", &[]).expect("scrape");
        if let Some(v) = found(&r) {
            return v;
        }
        assert!(t.elapsed() < within, "{what} after {within:?}:\n{}", r.body);
        std::thread::sleep(every);
    }
}

/// The value of `series` (its full name and labels) in a classic scrape.
pub fn value(body: &str, series: &str) -> Option<f64> {
    body.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Scrape until `series` satisfies `ok`, or panic after 20 s.
pub fn scrape_until(port: u16, series: &str, ok: impl Fn(f64) -> bool) -> String {
    let what = format!("{series} not as expected");
    scrape_for(port, Duration::from_secs(20), Duration::from_millis(200), &what, |r| {
        value(&r.body, series).is_some_and(&ok).then(|| r.body.clone())
    })
}

/// `agent serve ARGS`, expected to fail before anything is loaded: its exit code and stderr.
pub fn refused(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_agent"))
        .arg("serve")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run agent");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).to_string())
}

/// `pid` exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| !s.rsplit_once(')').is_some_and(|(_, r)| r.trim_start().starts_with('Z')))
}

/// serve's leak series (`agent_leak_bytes_per_second{...}` lines, with the seconds since the
/// start), scraped every second on a thread until the returned flag is set; join for them.
pub fn scrape_leaks(port: u16) -> (Arc<AtomicBool>, std::thread::JoinHandle<Vec<(f64, String)>>) {
    let done = Arc::new(AtomicBool::new(false));
    let stop = done.clone();
    let scraper = std::thread::spawn(move || {
        let (t0, mut seen) = (std::time::Instant::now(), Vec::new());
        while !stop.load(Ordering::Acquire) {
            if let Ok(r) = get(port, "/metrics", &[]) {
                let leaks = r.body.lines().filter(|l| l.starts_with("agent_leak_bytes_per_second{"));
                seen.extend(leaks.map(|l| (t0.elapsed().as_secs_f64(), l.to_string())));
            }
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
        seen
    });
    (done, scraper)
}
