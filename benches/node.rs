//! Node benchmark: the real `troupe` binary against a bare axum server (`examples/bare_axum.rs`), each
//! started 15 times, alternating: time from spawn to the ready log line and to the first
//! `GET /health/ready` → 200 (polled every 1 ms), resident memory after 2 s idle (`VmRSS`), and time
//! from SIGTERM to exit. Prints medians, p90 and the troupe/bare ratio, and checks the issue's targets
//! (start-to-ready ≤ 300 ms, idle RSS ≤ 30 MB).
//!
//! It builds nothing itself. `troupe` comes from `CARGO_BIN_EXE_troupe` (cargo builds it for the bench);
//! the baseline must be built first, into the same target dir:
//!
//! ```sh
//! cargo build --release --example bare_axum && cargo bench --bench node
//! ```
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "benchmark harness"
)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Measured runs per server (after one discarded warm-up run each).
const RUNS: usize = 15;
/// Idle time before reading the resident set size.
const IDLE: Duration = Duration::from_secs(2);
/// Give up on a run after this long.
const LIMIT: Duration = Duration::from_secs(30);

const TARGET_READY_MS: f64 = 300.0;
const TARGET_RSS_MB: f64 = 30.0;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Server {
    Troupe,
    Bare,
}

impl Server {
    fn name(self) -> &'static str {
        match self {
            Server::Troupe => "troupe",
            Server::Bare => "bare_axum",
        }
    }
}

struct Sample {
    /// Spawn → the ready log line (address known).
    log_ready: Duration,
    /// Spawn → first `/health/ready` 200.
    http_ready: Duration,
    /// `startup_ms` as the node logs it (troupe only).
    self_reported_ms: Option<f64>,
    /// VmRSS after `IDLE`, in bytes.
    rss: u64,
    /// `kill -TERM` issued → process reaped (includes running the `kill` command).
    exit: Duration,
    /// The `kill` command's own run time (part of `exit`).
    kill_cmd: Duration,
    exit_code: Option<i32>,
}

fn troupe_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_troupe"))
}

/// `target/<profile>/examples/bare_axum`, next to the `troupe` binary cargo built for this bench.
fn bare_bin() -> PathBuf {
    let troupe = troupe_bin();
    troupe.parent().unwrap_or(Path::new(".")).join("examples").join("bare_axum")
}

fn temp_dir(tag: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().subsec_nanos();
    let p = std::env::temp_dir().join(format!("troupe-bench-{tag}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&p).expect("create temp dir");
    p
}

/// One HTTP/1.1 request on a fresh connection; the status code, if any answer came.
fn get_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.set_nodelay(true).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").ok()?;
    let mut head = [0u8; 16];
    let mut got = 0;
    while got < 12 {
        match s.read(&mut head[got..]) {
            Ok(0) | Err(_) => return None,
            Ok(n) => got += n,
        }
    }
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn command(server: Server, data: &Path) -> Command {
    let (bin, mut args) = match server {
        Server::Troupe => (troupe_bin(), vec!["run".to_owned()]),
        Server::Bare => (bare_bin(), Vec::new()),
    };
    args.extend(["--http-addr", "127.0.0.1:0", "--log-format", "json"].map(str::to_owned));
    if server == Server::Troupe {
        args.extend(["--data-dir".to_owned(), data.display().to_string()]);
    }
    let mut cmd = Command::new(bin);
    cmd.args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    for (k, _) in std::env::vars() {
        if k.starts_with("TROUPE_") || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    cmd
}

fn kill_quietly(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

fn run_once(server: Server) -> Result<Sample, String> {
    let data = temp_dir(server.name());
    let result = measure(server, &data);
    let _ = std::fs::remove_dir_all(&data);
    result
}

fn measure(server: Server, data: &Path) -> Result<Sample, String> {
    let t0 = Instant::now();
    let mut child = command(server, data).spawn().map_err(|e| format!("spawn {}: {e}", server.name()))?;
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });

    // 1. The ready line gives the address.
    let (addr, self_reported_ms, log_ready) = loop {
        let left = LIMIT.saturating_sub(t0.elapsed());
        let Ok(line) = rx.recv_timeout(left) else {
            kill_quietly(&mut child);
            return Err(format!("{}: no ready log line within {LIMIT:?}", server.name()));
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
        let is_ready = v["message"].as_str().or(v["fields"]["message"].as_str()).is_some_and(|m| m.ends_with("ready"));
        if let (true, Some(addr)) = (is_ready, v["addr"].as_str().or(v["fields"]["addr"].as_str())) {
            let addr: SocketAddr = addr.parse().map_err(|e| format!("address {addr:?}: {e}"))?;
            break (addr, v["startup_ms"].as_f64(), t0.elapsed());
        }
    };

    // 2. Poll readiness every 1 ms.
    let http_ready = loop {
        if get_status(addr, "/health/ready") == Some(200) {
            break t0.elapsed();
        }
        if t0.elapsed() > LIMIT {
            kill_quietly(&mut child);
            return Err(format!("{}: /health/ready not 200 within {LIMIT:?}", server.name()));
        }
        std::thread::sleep(Duration::from_millis(1));
    };

    // 3. Idle, then resident memory.
    std::thread::sleep(IDLE);
    let rss = rss_bytes(child.id()).ok_or("cannot read VmRSS")?;

    // 4. SIGTERM (the `kill` command keeps this free of unsafe FFI) → exit.
    let t = Instant::now();
    let sent = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let kill_cmd = t.elapsed();
    if !sent.is_ok_and(|s| s.success()) {
        kill_quietly(&mut child);
        return Err("kill -TERM failed".to_owned());
    }
    let status = child.wait().map_err(|e| format!("wait: {e}"))?;
    let exit = t.elapsed();
    Ok(Sample { log_ready, http_ready, self_reported_ms, rss, exit, kill_cmd, exit_code: status.code() })
}

/// Nearest-rank percentile of an ascending slice.
fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn stats(samples: &[Sample], f: impl Fn(&Sample) -> f64) -> (f64, f64) {
    let mut v: Vec<f64> = samples.iter().map(f).collect();
    v.sort_by(f64::total_cmp);
    (pct(&v, 0.5), pct(&v, 0.9))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() -> ExitCode {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not: then only say what would run.
    if !std::env::args().any(|a| a == "--bench") {
        println!("node bench: run with `cargo bench --bench node` (skipped under cargo test)");
        return ExitCode::SUCCESS;
    }
    let (troupe, bare) = (troupe_bin(), bare_bin());
    if !bare.exists() {
        eprintln!(
            "node bench: baseline {} not found; build it first:\n  cargo build --release --example bare_axum",
            bare.display()
        );
        return ExitCode::FAILURE;
    }
    println!("node bench: {} runs each, alternating, after one warm-up run each", RUNS);
    println!("  troupe:    {}", troupe.display());
    println!("  bare_axum: {}", bare.display());

    let mut results: [Vec<Sample>; 2] = [Vec::new(), Vec::new()];
    for round in 0..=RUNS {
        for (i, server) in [Server::Troupe, Server::Bare].into_iter().enumerate() {
            match run_once(server) {
                Ok(s) if round > 0 => results[i].push(s),
                Ok(_) => {}
                Err(e) => {
                    eprintln!("node bench: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
    }
    let [t, b] = &results;

    type Metric<'a> = (&'a str, &'a str, Box<dyn Fn(&Sample) -> f64>);
    let metrics: Vec<Metric<'_>> = vec![
        ("spawn → ready log line", "ms", Box::new(|s| ms(s.log_ready))),
        ("spawn → /health/ready 200", "ms", Box::new(|s| ms(s.http_ready))),
        ("idle RSS after 2 s", "MB", Box::new(|s| s.rss as f64 / 1e6)),
        ("SIGTERM → exit (incl. kill cmd)", "ms", Box::new(|s| ms(s.exit))),
        ("  of which the kill command", "ms", Box::new(|s| ms(s.kill_cmd))),
    ];
    println!(
        "\n{:<34} {:>6} {:>10} {:>10} {:>10} {:>10} {:>8}",
        "metric", "unit", "troupe p50", "p90", "bare p50", "p90", "ratio"
    );
    for (name, unit, f) in &metrics {
        let (tm, tp) = stats(t, f);
        let (bm, bp) = stats(b, f);
        println!("{name:<34} {unit:>6} {tm:>10.2} {tp:>10.2} {bm:>10.2} {bp:>10.2} {:>8.2}", tm / bm);
    }
    let self_reported: Vec<f64> = t.iter().filter_map(|s| s.self_reported_ms).collect();
    if !self_reported.is_empty() {
        let mut v = self_reported;
        v.sort_by(f64::total_cmp);
        println!("troupe's own startup_ms (log field): p50 {:.2} ms, p90 {:.2} ms", pct(&v, 0.5), pct(&v, 0.9));
    }
    let codes: Vec<Option<i32>> = t.iter().chain(b).map(|s| s.exit_code).collect();
    let clean = codes.iter().all(|c| *c == Some(0));
    println!("exit codes all 0: {clean}");

    let (ready, _) = stats(t, |s| ms(s.http_ready));
    let (rss, _) = stats(t, |s| s.rss as f64 / 1e6);
    println!("\ntargets (troupe medians):");
    println!(
        "  start-to-ready {ready:.1} ms ≤ {TARGET_READY_MS} ms: {}",
        if ready <= TARGET_READY_MS { "met" } else { "MISSED" }
    );
    println!("  idle RSS {rss:.1} MB ≤ {TARGET_RSS_MB} MB: {}", if rss <= TARGET_RSS_MB { "met" } else { "MISSED" });
    if clean { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
