//! `wsload`: measures WebSocket fan-out of Troupe's gateway.
//!
//! - `wsload serve`: a server with the gateway's `/ws` and channel routes over a channel hub (tokens:
//!   `admin`, or any other string = that user id; `public:` channels are open to all).
//! - `wsload fanout`: opens N subscribers on one channel from several 127.0.0.x source addresses, then
//!   publishes at stepped rates through `POST /api/v1/channels/{name}/publish` with a timestamp in each
//!   message and reports deliveries/s, delivery latency percentiles, the server's CPU-seconds per million
//!   deliveries and its RSS per idle connection (`--server-pid`). `--server A,B,C` spreads the
//!   subscribers over several nodes of a cluster (publishing to the first; `--token` for a real node's
//!   JWT; `cluster.sh` starts three nodes and runs it). `--procs P` spreads the subscribers over P child
//!   processes (one process holds at most ~19k sockets here), which report their latency histograms
//!   back; the figures are summed histograms, not averaged percentiles.
//! - `wsload mem-probe`: RSS per idle tokio task vs per idle ractor actor, to choose the connection design.
//!
//! Collaborators: troupe-gateway (the server side), tokio-tungstenite (clients), reqwest (publisher).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use futures::{SinkExt, StreamExt};
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use troupe_actors::channels::{Hub, HubConfig};
use troupe_gateway::ws::{PrefixPolicy, WsAuthError, WsAuthenticator, WsConfig, WsIdentity, WsState, json_encoder};
use troupe_gateway::{GatewayConfig, GatewayState, router};

#[derive(Parser)]
#[command(about = "WebSocket fan-out load tool for Troupe")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a bench server (gateway /ws over a hub).
    Serve {
        #[arg(long, default_value = "127.0.0.1:9000")]
        addr: SocketAddr,
        /// Per-connection queue capacity (frames).
        #[arg(long, default_value_t = 256)]
        queue: usize,
        /// Messages of history per channel.
        #[arg(long, default_value_t = 16)]
        history: usize,
        /// Set TCP_NODELAY on accepted sockets.
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        nodelay: bool,
        /// WebSocket read buffer per connection (bytes).
        #[arg(long, default_value_t = 4096)]
        read_buffer: usize,
        /// Tokio worker threads (0 = one per core).
        #[arg(long, default_value_t = 0)]
        threads: usize,
        /// Threads one publish's fan-out is spread over (HubConfig::fanout_threads).
        #[arg(long, default_value_t = 1)]
        fanout_threads: usize,
        /// Publishers write frames straight to idle sockets (WsConfig::direct_writes).
        #[arg(long, default_value_t = false, action = clap::ArgAction::Set)]
        direct_writes: bool,
        /// Listen backlog (the node's `http.listen_backlog`; 128 is what `TcpListener::bind` asks for).
        #[arg(long, default_value_t = 4096)]
        backlog: u32,
    },
    /// Open subscribers, publish at stepped rates, report rates and latencies.
    Fanout {
        #[command(flatten)]
        args: FanoutArgs,
        /// Client processes holding the subscribers (0 = this process). Each holds conns/procs sockets,
        /// so one process stays under `ulimit -n`, and reports its latency histogram to this one.
        #[arg(long, default_value_t = 0)]
        procs: usize,
    },
    /// (Internal) one client process of `fanout --procs`: opens subscribers, answers `snap`/`reset` on
    /// stdin with its counters on stdout.
    #[command(hide = true)]
    SubWorker {
        #[arg(long, value_delimiter = ',')]
        server: Vec<SocketAddr>,
        #[arg(long)]
        token: Option<String>,
        #[arg(long)]
        first: usize,
        #[arg(long)]
        conns: usize,
        #[arg(long)]
        sources: u8,
        #[arg(long)]
        channel: String,
        #[arg(long)]
        connect_concurrency: usize,
    },
    /// In-process hub fan-out cost, no sockets: publish to N subscriber queues.
    HubBench {
        #[arg(long, default_value_t = 15_000)]
        subs: usize,
        /// Publishes per round (queues are drained between rounds).
        #[arg(long, default_value_t = 100)]
        per_round: usize,
        #[arg(long, default_value_t = 20)]
        rounds: usize,
    },
    /// RSS of N idle tokio tasks or N idle ractor actors.
    MemProbe {
        #[arg(long, default_value_t = 20_000)]
        n: usize,
        /// `task` or `actor`.
        #[arg(long, default_value = "task")]
        kind: String,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let threads = match &cli.cmd {
        Cmd::Serve { threads, .. } if *threads > 0 => *threads,
        _ => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2),
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build()?;
    rt.block_on(async move {
        match cli.cmd {
            Cmd::Serve {
                addr, queue, history, read_buffer, nodelay, fanout_threads, direct_writes, backlog, ..
            } => {
                let hub = HubConfig { history_len: history, fanout_threads, ..HubConfig::default() };
                let ws = WsConfig {
                    queue_capacity: queue,
                    read_buffer_bytes: read_buffer,
                    direct_writes,
                    ..WsConfig::default()
                };
                serve(addr, ws, hub, nodelay, backlog).await
            }
            Cmd::Fanout { args, procs } => fanout(args, procs).await,
            Cmd::SubWorker { server, token, first, conns, sources, channel, connect_concurrency } => {
                let args = FanoutArgs {
                    server,
                    conns,
                    sources,
                    channel,
                    rates: Vec::new(),
                    secs: 0,
                    server_pid: Vec::new(),
                    token,
                    pad: 0,
                    idle_only: false,
                    settle: 0,
                    connect_concurrency,
                };
                sub_worker(args, first).await
            }
            Cmd::MemProbe { n, kind } => mem_probe(n, &kind).await,
            Cmd::HubBench { subs, per_round, rounds } => hub_bench(subs, per_round, rounds).await,
        }
    })
}

// --------------------------------------------------------------------------------------------------
// Server.

struct BenchAuth;

impl WsAuthenticator for BenchAuth {
    fn authenticate(&self, token: &str) -> Result<WsIdentity, WsAuthError> {
        Ok(WsIdentity { user_id: token.to_owned(), is_admin: token == "admin" })
    }
}

async fn serve(addr: SocketAddr, cfg: WsConfig, hub: HubConfig, nodelay: bool, backlog: u32) -> Result<()> {
    let hub = Hub::new(hub, json_encoder());
    let policy = PrefixPolicy { public_prefixes: vec!["public:".into()] };
    let ws = WsState::new(cfg, hub, Arc::new(BenchAuth), Arc::new(policy));
    let gw = GatewayConfig {
        node_name: "wsload".into(),
        version: env!("CARGO_PKG_VERSION"),
        request_timeout: Duration::from_secs(30),
        max_body_bytes: 1 << 20,
        allow_kill: false,
    };
    let state = GatewayState::new(&gw, troupe_actors::Registry::new(), None).with_ws(ws);
    let listener = troupe_gateway::listen(addr, backlog).await.with_context(|| format!("bind {addr}"))?;
    eprintln_line(&format!("wsload server pid {} on {}", std::process::id(), listener.local_addr()?));
    let listener = axum::serve::ListenerExt::tap_io(listener, move |tcp: &mut tokio::net::TcpStream| {
        let _ = tcp.set_nodelay(nodelay);
    });
    // As the node serves it (src/node.rs): per-connection service clones stay cheap, and the rate
    // limiter sees the peer address.
    axum::serve(listener, router(&gw, state).into_make_service_with_connect_info::<SocketAddr>()).await?;
    Ok(())
}

#[allow(clippy::print_stderr, reason = "a command-line tool reports on stderr")]
fn eprintln_line(s: &str) {
    eprintln!("{s}");
}

#[allow(clippy::print_stdout, reason = "a command-line tool reports on stdout")]
fn report(s: &str) {
    println!("{s}");
}

// --------------------------------------------------------------------------------------------------
// Measurements from /proc.

/// Summed RSS of `pids` (None if there are none or one is gone).
fn rss_sum(pids: &[u32]) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|&p| rss_kib(p)).sum()
}

/// Summed CPU time of `pids`.
fn cpu_sum(pids: &[u32]) -> Option<f64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|&p| cpu_secs(p)).sum()
}

fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// utime + stime in seconds (clock ticks of 1/100 s).
fn cpu_secs(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

fn now_micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

// --------------------------------------------------------------------------------------------------
// Latency histogram: log buckets of 5 %, from 1 µs.

const BUCKETS: usize = 420;

struct Hist {
    b: Vec<AtomicU64>,
}

impl Hist {
    fn new() -> Self {
        Self { b: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect() }
    }
    fn record(&self, micros: u64) {
        let i = ((micros.max(1) as f64).ln() / 1.05f64.ln()) as usize;
        self.b[i.min(BUCKETS - 1)].fetch_add(1, Ordering::Relaxed);
    }
    fn reset(&self) {
        for b in &self.b {
            b.store(0, Ordering::Relaxed);
        }
    }
    fn counts(&self) -> Vec<u64> {
        self.b.iter().map(|b| b.load(Ordering::Relaxed)).collect()
    }
}

/// The `q` quantile (ms) of a histogram's bucket counts (summed over processes).
fn quantile(counts: &[u64], q: f64) -> f64 {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return 0.0;
    }
    let want = (total as f64 * q).ceil() as u64;
    let mut seen = 0;
    for (i, c) in counts.iter().enumerate() {
        seen += c;
        if seen >= want {
            return 1.05f64.powi(i as i32 + 1) / 1000.0;
        }
    }
    f64::INFINITY
}

// --------------------------------------------------------------------------------------------------
// Fan-out client.

#[derive(clap::Args)]
struct FanoutArgs {
    /// Server addresses (host:port, comma separated): subscriber i connects to server i mod n;
    /// publishes go to the first (the others receive them over the cluster's relay).
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:9000")]
    server: Vec<SocketAddr>,
    /// Subscribers to open.
    #[arg(long, default_value_t = 1000)]
    conns: usize,
    /// Source addresses 127.0.0.2 … 127.0.0.(1+sources).
    #[arg(long, default_value_t = 4)]
    sources: u8,
    #[arg(long, default_value = "public:bench")]
    channel: String,
    /// Publishes per second, one step each (comma separated).
    #[arg(long, value_delimiter = ',', default_value = "10,20,40")]
    rates: Vec<u32>,
    /// Seconds per step.
    #[arg(long, default_value_t = 5)]
    secs: u64,
    /// Pids of the servers (comma separated), to read their summed RSS and CPU time from /proc.
    #[arg(long, value_delimiter = ',')]
    server_pid: Vec<u32>,
    /// Bearer token of every subscriber and of the publisher (a real node's JWT, from an admin's
    /// login); unset = the bench server's tokens (`u{i}` per subscriber, `admin` to publish).
    #[arg(long)]
    token: Option<String>,
    /// Bytes of padding in each message.
    #[arg(long, default_value_t = 0)]
    pad: usize,
    /// Only connect, measure RSS per idle connection, and exit.
    #[arg(long)]
    idle_only: bool,
    /// Seconds after connecting at which the idle RSS is read (the allocator returns the burst's
    /// freed pages lazily); RSS is also read 2 s after connecting.
    #[arg(long, default_value_t = 15)]
    settle: u64,
    /// Handshakes each client process has in flight at most (0 = all at once: a reconnect storm).
    #[arg(long, default_value_t = 256)]
    connect_concurrency: usize,
}

struct Shared {
    hist: Hist,
    delivered: AtomicU64,
    ready: AtomicUsize,
    closed: AtomicUsize,
}

/// The timestamp after `"t":` in a frame, without parsing the JSON.
fn stamp(frame: &str) -> Option<u64> {
    let i = frame.find("\"t\":")? + 4;
    let digits: &str = &frame[i..];
    let end = digits.find(|c: char| !c.is_ascii_digit()).unwrap_or(digits.len());
    digits[..end].parse().ok()
}

async fn subscriber(
    i: usize,
    a: Arc<FanoutArgs>,
    shared: Arc<Shared>,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
) -> Result<()> {
    let src = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + (i % usize::from(a.sources.max(1))) as u8));
    let sock = TcpSocket::new_v4()?;
    sock.bind(SocketAddr::new(src, 0))?;
    let server = a.server.get(i % a.server.len().max(1)).copied().context("no server address")?;
    let stream = sock.connect(server).await?;
    let url = match &a.token {
        Some(t) => format!("ws://{server}/ws?token={t}"),
        None => format!("ws://{server}/ws?token=u{i}"),
    };
    let cfg = WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0);
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(cfg)).await?;
    ws.send(Message::text(format!(r#"{{"op":"subscribe","channel":"{}"}}"#, a.channel))).await?;
    let mut acks = 0;
    while acks < 2 {
        match ws.next().await {
            Some(Ok(Message::Text(t))) if t.as_str().contains("\"subscribed\"") => acks += 1,
            Some(Ok(_)) => {}
            _ => bail!("closed before subscribing"),
        }
    }
    shared.ready.fetch_add(1, Ordering::Relaxed);
    drop(permit);
    while let Some(msg) = ws.next().await {
        match msg {
            Ok(Message::Text(t)) => {
                if let Some(t0) = stamp(t.as_str()) {
                    shared.hist.record(now_micros().saturating_sub(t0));
                    shared.delivered.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => {}
        }
    }
    shared.closed.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// Opens subscribers `first .. first + a.conns` in this process and waits until each is subscribed or
/// failed; at most `a.connect_concurrency` are between connecting and subscribed at once (0 = no bound).
async fn connect_all(a: &Arc<FanoutArgs>, shared: &Arc<Shared>, first: usize) {
    let bound = if a.connect_concurrency == 0 { tokio::sync::Semaphore::MAX_PERMITS } else { a.connect_concurrency };
    let gate = Arc::new(tokio::sync::Semaphore::new(bound));
    for i in first..first + a.conns {
        let (a, shared, gate) = (a.clone(), shared.clone(), gate.clone());
        tokio::spawn(async move {
            // The permit goes with the subscriber, which drops it once subscribed (or failed).
            let permit = gate.acquire_owned().await.ok();
            if let Err(e) = subscriber(i, a, shared.clone(), permit).await {
                shared.closed.fetch_add(1, Ordering::Relaxed);
                eprintln_line(&format!("subscriber {i}: {e:#}"));
            }
        });
    }
    while shared.ready.load(Ordering::Relaxed) + shared.closed.load(Ordering::Relaxed) < a.conns {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn new_shared() -> Arc<Shared> {
    Arc::new(Shared {
        hist: Hist::new(),
        delivered: AtomicU64::new(0),
        ready: AtomicUsize::new(0),
        closed: AtomicUsize::new(0),
    })
}

/// `fanout --procs`: one client process, driven over its stdin/stdout.
async fn sub_worker(args: FanoutArgs, first: usize) -> Result<()> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let a = Arc::new(args);
    let shared = new_shared();
    connect_all(&a, &shared, first).await;
    let mut out = tokio::io::stdout();
    let ready = shared.ready.load(Ordering::Relaxed);
    out.write_all(format!("ready {ready}\n").as_bytes()).await?;
    out.flush().await?;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let reply = match line.trim() {
            "reset" => {
                shared.hist.reset();
                shared.delivered.store(0, Ordering::Relaxed);
                "ok".to_owned()
            }
            "snap" => {
                let counts = shared.hist.counts();
                let mut s = format!(
                    "snap {} {}",
                    shared.delivered.load(Ordering::Relaxed),
                    shared.closed.load(Ordering::Relaxed)
                );
                for c in counts {
                    s.push(' ');
                    s.push_str(&c.to_string());
                }
                s
            }
            _ => continue,
        };
        out.write_all(format!("{reply}\n").as_bytes()).await?;
        out.flush().await?;
    }
    Ok(())
}

/// One child process of `fanout --procs`.
struct Worker {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl Worker {
    async fn ask(&mut self, cmd: &str) -> Result<String> {
        use tokio::io::AsyncWriteExt;
        self.stdin.write_all(format!("{cmd}\n").as_bytes()).await?;
        self.stdin.flush().await?;
        self.lines.next_line().await?.context("worker exited")
    }
}

/// Where the subscribers live: this process, or child processes reporting their counters.
enum Subs {
    Local(Arc<Shared>),
    Procs(Vec<Worker>),
}

/// Delivered, closed, histogram bucket counts.
type Snapshot = (u64, usize, Vec<u64>);

impl Subs {
    async fn reset(&mut self) -> Result<()> {
        match self {
            Subs::Local(shared) => {
                shared.hist.reset();
                shared.delivered.store(0, Ordering::Relaxed);
            }
            Subs::Procs(workers) => {
                for w in workers {
                    w.ask("reset").await?;
                }
            }
        }
        Ok(())
    }

    async fn snapshot(&mut self) -> Result<Snapshot> {
        match self {
            Subs::Local(shared) => Ok((
                shared.delivered.load(Ordering::Relaxed),
                shared.closed.load(Ordering::Relaxed),
                shared.hist.counts(),
            )),
            Subs::Procs(workers) => {
                let mut total = (0u64, 0usize, vec![0u64; BUCKETS]);
                for w in workers {
                    let line = w.ask("snap").await?;
                    let nums: Vec<u64> = line.split_whitespace().skip(1).filter_map(|n| n.parse().ok()).collect();
                    if nums.len() != 2 + BUCKETS {
                        bail!("bad worker reply {line:?}");
                    }
                    total.0 += nums[0];
                    total.1 += nums[1] as usize;
                    for (t, n) in total.2.iter_mut().zip(&nums[2..]) {
                        *t += n;
                    }
                }
                Ok(total)
            }
        }
    }
}

async fn start_workers(a: &FanoutArgs, procs: usize) -> Result<(Vec<Worker>, usize)> {
    use tokio::io::AsyncBufReadExt;
    let exe = std::env::current_exe()?;
    let mut workers = Vec::new();
    let per = a.conns.div_ceil(procs);
    let servers = a.server.iter().map(ToString::to_string).collect::<Vec<_>>().join(",");
    for p in 0..procs {
        let first = p * per;
        let conns = per.min(a.conns.saturating_sub(first));
        if conns == 0 {
            break;
        }
        let mut child = tokio::process::Command::new(&exe)
            .args(["sub-worker", "--server", &servers, "--first", &first.to_string()])
            .args(a.token.iter().flat_map(|t| ["--token", t.as_str()]))
            .args(["--conns", &conns.to_string(), "--sources", &a.sources.to_string(), "--channel", &a.channel])
            .args(["--connect-concurrency", &a.connect_concurrency.to_string()])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stdin = child.stdin.take().context("worker stdin")?;
        let stdout = child.stdout.take().context("worker stdout")?;
        let lines = tokio::io::BufReader::new(stdout).lines();
        workers.push(Worker { child, stdin, lines });
    }
    let mut ready = 0;
    for w in &mut workers {
        let line = w.lines.next_line().await?.context("worker exited before its subscribers were ready")?;
        ready += line.strip_prefix("ready ").and_then(|n| n.trim().parse::<usize>().ok()).unwrap_or(0);
    }
    Ok((workers, ready))
}

async fn fanout(args: FanoutArgs, procs: usize) -> Result<()> {
    let a = Arc::new(args);
    let rss0 = rss_sum(&a.server_pid);
    let started = Instant::now();
    let (mut subs, ready) = if procs == 0 {
        let shared = new_shared();
        connect_all(&a, &shared, 0).await;
        let ready = shared.ready.load(Ordering::Relaxed);
        (Subs::Local(shared), ready)
    } else {
        let (workers, ready) = start_workers(&a, procs).await?;
        (Subs::Procs(workers), ready)
    };
    let where_ = if procs == 0 { "1 process".to_owned() } else { format!("{procs} client processes") };
    report(&format!("connected {ready}/{} subscribers ({where_}) in {:.1}s", a.conns, started.elapsed().as_secs_f64()));
    if let Some(r0) = rss0 {
        let per_conn = |r1: u64| (r1.saturating_sub(r0)) as f64 / ready.max(1) as f64;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let burst = rss_sum(&a.server_pid).unwrap_or(0);
        tokio::time::sleep(Duration::from_secs(a.settle.saturating_sub(2))).await;
        let idle = rss_sum(&a.server_pid).unwrap_or(0);
        report(&format!(
            "server RSS {r0} KiB → {burst} KiB 2 s after connecting ({:.2} KiB per connection) → {idle} KiB after \
             {}s ({:.2} KiB per idle subscribed connection, {ready} connections)",
            per_conn(burst),
            a.settle.max(2),
            per_conn(idle)
        ));
    }
    if a.idle_only {
        return Ok(());
    }
    let http = reqwest::Client::new();
    let first = a.server.first().context("no server address")?;
    let url = format!("http://{first}/api/v1/channels/{}/publish", a.channel);
    let publisher = a.token.clone().unwrap_or_else(|| "admin".to_owned());
    let pad = "x".repeat(a.pad);
    for &rate in &a.rates {
        subs.reset().await?;
        let cpu0 = cpu_sum(&a.server_pid);
        let t0 = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate.max(1))));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut sent = 0u64;
        let inflight = Arc::new(tokio::sync::Semaphore::new(64));
        let failed = Arc::new(AtomicU64::new(0));
        while t0.elapsed() < Duration::from_secs(a.secs) {
            tick.tick().await;
            let body = format!(r#"{{"data":{{"t":{},"pad":"{pad}"}}}}"#, now_micros());
            let req = http.post(&url).bearer_auth(&publisher).header("content-type", "application/json").body(body);
            let permit = inflight.clone().acquire_owned().await?;
            let failed = failed.clone();
            tokio::spawn(async move {
                if !req.send().await.is_ok_and(|r| r.status().is_success()) {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                drop(permit);
            });
            sent += 1;
        }
        let _ = inflight.acquire_many(64).await?;
        let (_, closed, _) = subs.snapshot().await?;
        let alive = ready - closed.min(ready);
        let want = sent * alive as u64;
        let wait = Instant::now();
        let mut snap = subs.snapshot().await?;
        while snap.0 < want && wait.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(50)).await;
            snap = subs.snapshot().await?;
        }
        let elapsed = t0.elapsed().as_secs_f64();
        let (got, closed, counts) = snap;
        let cpu = match (cpu0, cpu_sum(&a.server_pid)) {
            (Some(c0), Some(c1)) => format!("{:.2}", (c1 - c0) / (got.max(1) as f64 / 1e6)),
            _ => "-".into(),
        };
        report(&format!(
            "rate {rate}/s × {alive} subs: sent {sent} ({} failed), delivered {got}/{want} in {elapsed:.1}s = {:.0} deliveries/s; \
             latency ms p50 {:.2} p90 {:.2} p99 {:.2} p99.9 {:.2}; server CPU-s per 1M deliveries {cpu}; closed {closed}",
            failed.load(Ordering::Relaxed),
            got as f64 / elapsed,
            quantile(&counts, 0.5),
            quantile(&counts, 0.9),
            quantile(&counts, 0.99),
            quantile(&counts, 0.999),
        ));
    }
    if let Subs::Procs(workers) = subs {
        for mut w in workers {
            drop(w.stdin);
            let _ = w.child.kill().await;
        }
    }
    Ok(())
}

// --------------------------------------------------------------------------------------------------
// Memory probe.

#[derive(Clone)]
struct Idle;

impl ractor::Actor for Idle {
    type Msg = ();
    type State = ();
    type Arguments = ();
    async fn pre_start(&self, _: ractor::ActorRef<()>, _: ()) -> Result<(), ractor::ActorProcessingErr> {
        Ok(())
    }
}

async fn mem_probe(n: usize, kind: &str) -> Result<()> {
    let pid = std::process::id();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let r0 = rss_kib(pid).unwrap_or(0);
    let stop = Arc::new(tokio::sync::Notify::new());
    let mut keep = Vec::with_capacity(n);
    match kind {
        "task" => {
            for _ in 0..n {
                let stop = stop.clone();
                keep.push(tokio::spawn(async move { stop.notified().await }));
            }
        }
        "actor" => {
            let mut actors = Vec::with_capacity(n);
            for _ in 0..n {
                let (a, h) = ractor::Actor::spawn(None, Idle, ()).await?;
                actors.push(a);
                keep.push(h);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            let r1 = rss_kib(pid).unwrap_or(0);
            report(&format!("{n} idle ractor actors: {:.2} KiB each", (r1 - r0) as f64 / n as f64));
            for a in actors {
                a.stop(None);
            }
            return Ok(());
        }
        other => bail!("unknown kind {other}: task or actor"),
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r1 = rss_kib(pid).unwrap_or(0);
    report(&format!("{n} idle tokio tasks: {:.2} KiB each", (r1 - r0) as f64 / n as f64));
    stop.notify_waiters();
    Ok(())
}

// --------------------------------------------------------------------------------------------------
// Hub-only fan-out cost.

async fn hub_bench(subs: usize, per_round: usize, rounds: usize) -> Result<()> {
    let hub = Hub::new(HubConfig { history_len: 16, ..HubConfig::default() }, json_encoder());
    let subscribers: Vec<troupe_actors::channels::Subscriber> =
        (0..subs).map(|i| troupe_actors::channels::Subscriber::new(i as u64, "u", per_round + 16)).collect();
    for s in &subscribers {
        hub.subscribe("public:bench", s, None);
    }
    let data = bytes::Bytes::from_static(br#"{"t":1700000000000000,"pad":""}"#);
    let mut spent = Duration::ZERO;
    let mut buf = Vec::new();
    for _ in 0..rounds {
        let t0 = Instant::now();
        for _ in 0..per_round {
            hub.publish("public:bench", data.clone());
        }
        spent += t0.elapsed();
        for s in &subscribers {
            buf.clear();
            s.next_batch(&mut buf).await;
        }
    }
    let deliveries = (subs * per_round * rounds) as f64;
    report(&format!(
        "hub only: {} publishes to {subs} subscribers: {:.1} ns per delivery, {:.2} M deliveries/s on one thread, {:.2} ms per publish; slow {}",
        per_round * rounds,
        spent.as_nanos() as f64 / deliveries,
        deliveries / spent.as_secs_f64() / 1e6,
        spent.as_secs_f64() * 1e3 / (per_round * rounds) as f64,
        hub.slow_consumers()
    ));
    Ok(())
}
