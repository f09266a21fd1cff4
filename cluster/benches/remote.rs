//! Cross-node messaging: raw ractor_cluster vs Troupe links, two nodes on loopback as two processes.
//!
//! `cargo bench -p troupe-cluster --bench remote` starts this binary, which re-executes itself as the
//! peer node (env `TROUPE_BENCH_REMOTE_PEER=<port>`), connects the two over ractor_cluster (cookie,
//! Isolated mode, plain TCP) and measures, in the same run:
//! (a) raw remote tell: 16-byte casts to a remotable actor with a derived cluster message, one
//!     ractor_cluster message each, timed until the peer has counted them all;
//! (b) link tell: 16-byte [`Links::tell`]s (bounded queue, batched frames, flow control), same timing;
//! (c) call latency, sequential 16-byte echo calls: raw ractor_cluster remote call vs [`Links::call`].
//! Every figure is repeated `TROUPE_BENCH_RUNS` times (default 3); medians and ratios are printed.
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used, reason = "a benchmark main")]

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::{NodeServer, NodeServerMessage, RactorClusterMessage};
use troupe_cluster::{ClusterError, LinkConfig, Links};

const PEER_ENV: &str = "TROUPE_BENCH_REMOTE_PEER";
const COOKIE: &str = "bench-cookie";
const RAW_GROUP: &str = "bench.raw";
const PEER: &str = "peer";
const PAYLOAD: [u8; 16] = [7; 16];

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The raw remotable actor's messages (derived cluster serialization, one network message each).
#[derive(RactorClusterMessage)]
enum RawMsg {
    Tell(Vec<u8>),
    #[rpc]
    Count(RpcReplyPort<u64>),
    #[rpc]
    Echo(Vec<u8>, RpcReplyPort<Vec<u8>>),
}

struct RawSink;

impl Actor for RawSink {
    type Msg = RawMsg;
    type State = u64;
    type Arguments = ();

    async fn pre_start(&self, me: ActorRef<RawMsg>, (): ()) -> Result<u64, ActorProcessingErr> {
        ractor::pg::join(RAW_GROUP.to_owned(), vec![me.get_cell()]);
        Ok(0)
    }

    async fn handle(&self, _: ActorRef<RawMsg>, msg: RawMsg, count: &mut u64) -> Result<(), ActorProcessingErr> {
        match msg {
            RawMsg::Tell(_) => *count += 1,
            RawMsg::Count(reply) => {
                let _ = reply.send(*count);
            }
            RawMsg::Echo(bytes, reply) => {
                let _ = reply.send(bytes);
            }
        }
        Ok(())
    }
}

async fn node_server(name: &str, port: u16) -> ActorRef<NodeServerMessage> {
    let server = NodeServer::new(
        port,
        COOKIE.to_owned(),
        name.to_owned(),
        "127.0.0.1".to_owned(),
        None,
        Some(ractor_cluster::node::NodeConnectionMode::Isolated),
    )
    .with_listen_addr("127.0.0.1".parse().unwrap());
    Actor::spawn(None, server, ()).await.unwrap().0
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The peer process: node server, raw sink, links with a counting sink and an echo; runs until its
/// stdin closes (the parent exited).
async fn peer(port: u16) {
    let _server = node_server(PEER, port).await;
    let _sink = Actor::spawn(None, RawSink, ()).await.unwrap();
    let links = Links::start(PEER, LinkConfig::default()).await.unwrap();
    let count = Arc::new(AtomicU64::new(0));
    let c = count.clone();
    links.register("sink", move |_, _| {
        c.fetch_add(1, Ordering::Relaxed);
    });
    links.register_call("count", move |req| {
        let n = count.load(Ordering::Relaxed);
        req.reply(Bytes::from(n.to_be_bytes().to_vec()));
    });
    links.register_call("echo", |req| {
        let payload = req.payload.clone();
        req.reply(payload);
    });
    println!("ready");
    std::io::stdout().flush().unwrap();
    tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        while std::io::stdin().read_line(&mut line).is_ok_and(|n| n > 0) {}
    })
    .await
    .unwrap();
}

async fn raw_count(cell: &ActorCell) -> u64 {
    match ractor::rpc::call::<RawMsg, u64, _>(cell, RawMsg::Count, Some(Duration::from_secs(120))).await.unwrap() {
        ractor::rpc::CallResult::Success(n) => n,
        other => panic!("raw count call failed: {other:?}"),
    }
}

async fn link_count(links: &Links) -> u64 {
    let b = links.call(PEER, "count", Bytes::new(), Duration::from_secs(120)).await.unwrap();
    u64::from_be_bytes(b[..].try_into().unwrap())
}

/// (a) raw tells per second.
async fn raw_tell(cell: &ActorCell, n: u64) -> f64 {
    let before = raw_count(cell).await;
    let started = Instant::now();
    for _ in 0..n {
        cell.send_message(RawMsg::Tell(PAYLOAD.to_vec())).unwrap();
    }
    let after = raw_count(cell).await;
    assert_eq!(after - before, n, "the raw sink lost messages");
    n as f64 / started.elapsed().as_secs_f64()
}

/// (b) link tells per second (a full link makes the producer yield and retry: backpressure).
async fn link_tell(links: &Links, n: u64) -> (f64, u64) {
    let before = link_count(links).await;
    let payload = Bytes::from_static(&PAYLOAD);
    let mut full = 0;
    let started = Instant::now();
    for _ in 0..n {
        loop {
            match links.tell(PEER, "sink", payload.clone()) {
                Ok(()) => break,
                Err(ClusterError::LinkFull { .. }) => {
                    full += 1;
                    tokio::task::yield_now().await;
                }
                Err(e) => panic!("link tell failed: {e}"),
            }
        }
    }
    let after = link_count(links).await;
    assert_eq!(after - before, n, "the link sink lost messages");
    (n as f64 / started.elapsed().as_secs_f64(), full)
}

fn micros(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64
}

/// (c) sequential call latencies in µs.
async fn raw_calls(cell: &ActorCell, n: usize) -> Histogram<u64> {
    let mut h = Histogram::<u64>::new(3).unwrap();
    for _ in 0..n {
        let started = Instant::now();
        let r = ractor::rpc::call::<RawMsg, Vec<u8>, _>(
            cell,
            |reply| RawMsg::Echo(PAYLOAD.to_vec(), reply),
            Some(Duration::from_secs(5)),
        )
        .await
        .unwrap();
        assert!(matches!(r, ractor::rpc::CallResult::Success(_)));
        h.record(started.elapsed().as_micros() as u64).unwrap();
    }
    h
}

async fn link_calls(links: &Links, n: usize) -> Histogram<u64> {
    let mut h = Histogram::<u64>::new(3).unwrap();
    let payload = Bytes::from_static(&PAYLOAD);
    for _ in 0..n {
        let started = Instant::now();
        links.call(PEER, "echo", payload.clone(), Duration::from_secs(5)).await.unwrap();
        h.record(started.elapsed().as_micros() as u64).unwrap();
    }
    h
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

async fn main_node() {
    let runs = env_usize("TROUPE_BENCH_RUNS", 3);
    let raw_n = env_usize("TROUPE_BENCH_RAW_TELLS", 200_000) as u64;
    let link_n = env_usize("TROUPE_BENCH_LINK_TELLS", 2_000_000) as u64;
    let calls = env_usize("TROUPE_BENCH_CALLS", 5_000);

    let peer_port = free_port();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env(PEER_ENV, peer_port.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "ready");

    let server = node_server("main", free_port()).await;
    let links = Links::start("main", LinkConfig::default()).await.unwrap();
    ractor_cluster::client_connect(&server, format!("127.0.0.1:{peer_port}")).await.unwrap();
    let started = Instant::now();
    let cell = loop {
        let raw = ractor::pg::get_members(&RAW_GROUP.to_owned()).into_iter().find(|c| !c.get_id().is_local());
        if let Some(cell) = raw
            && links.peers() == [PEER.to_owned()]
        {
            break cell;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "the peer never appeared");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Warm up both paths.
    raw_tell(&cell, 10_000).await;
    link_tell(&links, 100_000).await;
    raw_calls(&cell, 200).await;
    link_calls(&links, 200).await;

    println!("remote bench: {runs} runs; raw tells {raw_n}, link tells {link_n}, calls {calls} (16-byte payloads)");
    println!("run | raw tell msg/s | link tell msg/s (full retries) | raw call p50/p99 us | link call p50/p99 us");
    let (mut rt, mut lt, mut rp50, mut rp99, mut lp50, mut lp99) = (vec![], vec![], vec![], vec![], vec![], vec![]);
    for run in 1..=runs {
        let raw = raw_tell(&cell, raw_n).await;
        let (link, full) = link_tell(&links, link_n).await;
        let rc = raw_calls(&cell, calls).await;
        let lc = link_calls(&links, calls).await;
        println!(
            "{run} | {raw:.0} | {link:.0} ({full}) | {:.0}/{:.0} | {:.0}/{:.0}",
            micros(&rc, 0.5),
            micros(&rc, 0.99),
            micros(&lc, 0.5),
            micros(&lc, 0.99)
        );
        rt.push(raw);
        lt.push(link);
        rp50.push(micros(&rc, 0.5));
        rp99.push(micros(&rc, 0.99));
        lp50.push(micros(&lc, 0.5));
        lp99.push(micros(&lc, 0.99));
    }
    let (rt, lt) = (median(rt), median(lt));
    let (rp50, rp99, lp50, lp99) = (median(rp50), median(rp99), median(lp50), median(lp99));
    println!("median | {rt:.0} | {lt:.0} | {rp50:.0}/{rp99:.0} | {lp50:.0}/{lp99:.0}");
    println!(
        "ratios: link/raw tell throughput {:.1}x; link/raw call p50 {:.2}x, p99 {:.2}x",
        lt / rt,
        lp50 / rp50,
        lp99 / rp99
    );
    links.stop();
    drop(child.stdin.take());
    let _ = child.wait();
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    match std::env::var(PEER_ENV).ok().and_then(|p| p.parse::<u16>().ok()) {
        Some(port) => rt.block_on(peer(port)),
        // `cargo test --benches` runs bench binaries with `--bench` absent: skip the measurement there.
        None if std::env::args().any(|a| a == "--bench") => rt.block_on(main_node()),
        None => println!("remote bench: run with `cargo bench -p troupe-cluster --bench remote`"),
    }
}
