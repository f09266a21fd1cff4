//! End-to-end tests of cluster sharding and the cluster-wide outbox drain with real `troupe` processes
//! on 127.0.0.1/2/3 sharing a PostgreSQL store (one fresh schema per test). Entities are driven from
//! outside through the built-in `presence` entity kind (`GET`/`POST /api/v1/cluster/presence/{user}`,
//! answered with the owner node, shard and fencing token). Skipped (with a printed reason) when
//! PostgreSQL is unreachable, unless `TROUPE_REQUIRE_SERVICES=1`.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
#![allow(clippy::print_stderr, reason = "tests explain why they skip and what they saw")]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::cluster::*;
use common::{Node, eventually, http};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const SHARDS: usize = 64;
/// The tests drive many admin requests from one IP: no rate limiting.
const ENVS: [(&str, &str); 1] = [("TROUPE_GATEWAY_RATE_LIMIT_ENABLED", "false")];
const USERS: usize = 48;

async fn form(c: &reqwest::Client, nodes: &[&Node], token: &str) -> Vec<String> {
    let ids = eventually(Duration::from_secs(40), || async {
        let mut ids = Vec::new();
        for n in nodes {
            let v = view(c, n, token).await?;
            (statuses(&v).iter().filter(|s| *s == "up").count() == nodes.len()).then_some(())?;
            ids.push(v["node_id"].as_str()?.to_owned());
        }
        Some(ids)
    })
    .await;
    ids.expect("the nodes did not all list each other up within 40 s")
}

/// The shards each live node says it owns now (its own entry of its view).
async fn owned(c: &reqwest::Client, nodes: &[&Node], token: &str) -> Option<Vec<BTreeSet<u64>>> {
    let mut out = Vec::new();
    for n in nodes {
        let v = view(c, n, token).await?;
        let me = v["members"].as_array()?.iter().find(|m| m["is_self"] == true)?;
        out.push(me["owned_shards"].as_array()?.iter().filter_map(Value::as_u64).collect());
    }
    Some(out)
}

/// Whether `sets` partition all shards (each owned exactly once).
fn partition(sets: &[BTreeSet<u64>]) -> bool {
    let total: usize = sets.iter().map(BTreeSet::len).sum();
    let union: BTreeSet<u64> = sets.iter().flatten().copied().collect();
    total == SHARDS && union.len() == SHARDS
}

/// Polls until the live `nodes` own every shard exactly once; the time it took.
async fn until_partitioned(c: &reqwest::Client, nodes: &[&Node], token: &str, limit: Duration) -> Duration {
    let t0 = Instant::now();
    loop {
        if let Some(sets) = owned(c, nodes, token).await
            && partition(&sets)
        {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < limit,
            "shards not owned exactly once within {limit:?}: {:?}",
            owned(c, nodes, token).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn presence(c: &reqwest::Client, node: &Node, token: &str, user: &str, change: Option<bool>) -> Value {
    let url = node.url(&format!("/api/v1/cluster/presence/{user}"));
    let r = match change {
        Some(connected) => c.post(url).json(&json!({"node": "edge-1", "connected": connected})),
        None => c.get(url),
    };
    let r = r.bearer_auth(token).send().await.expect("presence request");
    assert_eq!(r.status(), 200, "presence of {user}: {}", r.text().await.unwrap_or_default());
    r.json().await.unwrap()
}

fn connections(v: &Value) -> u64 {
    v["nodes"]["edge-1"].as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_spread_move_on_kill_sigstop_and_drain_without_losing_acknowledged_state() {
    let Some(pg) = fresh_schema().await else { return };
    let c = http();
    let specs = [Spec::new("127.0.0.1"), Spec::new("127.0.0.2"), Spec::new("127.0.0.3")];
    let seeds = specs[0].cluster_addr.clone();
    let a = specs[0].start_env(&pg, &seeds, COOKIE, &ENVS);
    let mut b = specs[1].start_env(&pg, &seeds, COOKIE, &ENVS);
    let mut node_c = specs[2].start_env(&pg, &seeds, COOKIE, &ENVS);
    let token = common::token_for(&c, &a, ADMIN).await;
    let ids = form(&c, &[&a, &b, &node_c], &token).await;
    let (a_id, b_id, c_id) = (ids[0].clone(), ids[1].clone(), ids[2].clone());

    // 1. Shards spread over all three, each owned exactly once; entities live on their shard's owner.
    let sets = eventually(Duration::from_secs(30), || async {
        let sets = owned(&c, &[&a, &b, &node_c], &token).await?;
        (partition(&sets) && sets.iter().all(|s| !s.is_empty())).then_some(sets)
    })
    .await
    .expect("the shards did not spread over the three nodes, each owned once, within 30 s");
    let mut first_owner = BTreeMap::new();
    for i in 0..USERS {
        let user = format!("user-{i}");
        let v = presence(&c, &a, &token, &user, Some(true)).await;
        assert_eq!(connections(&v), 1, "{v}");
        let owner = v["owner"].as_str().unwrap().to_owned();
        let shard = v["shard"].as_u64().unwrap();
        let k = ids.iter().position(|id| *id == owner).unwrap();
        assert!(sets[k].contains(&shard), "{user} lives on the owner of shard {shard}");
        first_owner.insert(user, (owner, v["token"].as_u64().unwrap()));
    }
    let hosts: BTreeSet<&String> = first_owner.values().map(|(o, _)| o).collect();
    assert_eq!(hosts.len(), 3, "entities on all three nodes");
    // The nodes view and the CLI show owned shards for every member.
    let v = view(&c, &b, &token).await.unwrap();
    let listed: usize =
        v["members"].as_array().unwrap().iter().map(|m| m["owned_shards"].as_array().map_or(0, Vec::len)).sum();
    assert_eq!(listed, SHARDS, "{v:#}");

    // 2. kill -9 C: its shards are owned by A and B within 5 s, and every acknowledged write is there.
    node_c.signal("KILL");
    let _ = node_c.wait_exit(Duration::from_secs(5));
    let took = until_partitioned(&c, &[&a, &b], &token, Duration::from_secs(20)).await;
    eprintln!("kill -9: C's shards owned elsewhere after {took:?}");
    assert!(took <= DETECTION_BOUND, "C's shards moved after {took:?}");
    for (user, (owner, _)) in &first_owner {
        let v = presence(&c, &b, &token, user, None).await;
        assert_eq!(connections(&v), 1, "acknowledged state of {user} survived: {v}");
        if *owner == c_id {
            assert_ne!(v["owner"], c_id.as_str());
        }
    }

    // 3. SIGSTOP B: A owns everything once B is down; A writes to B's former entities. SIGCONT B: it
    //    rejoins, drops the shards it lost without acting on them, and serves A's writes, not its own
    //    stale state.
    let b_shards = owned(&c, &[&b], &token).await.unwrap().remove(0);
    let b_users: Vec<&String> = first_owner.keys().filter(|u| b_shards.contains(&shard_of(u))).collect();
    b.signal("STOP");
    let took = until_partitioned(&c, &[&a], &token, Duration::from_secs(20)).await;
    eprintln!("SIGSTOP: B's shards owned by A after {took:?}");
    assert!(took <= DETECTION_BOUND + Duration::from_secs(1), "B's shards moved after {took:?}");
    let mut after = BTreeMap::new();
    for i in 0..USERS {
        let user = format!("user-{i}");
        let v = presence(&c, &a, &token, &user, Some(true)).await;
        assert_eq!(connections(&v), 2, "{v}");
        assert_eq!(v["owner"], a_id.as_str());
        after.insert(user, v["token"].as_u64().unwrap());
    }
    b.signal("CONT");
    wait_for(&c, &[&a, &b], &token, &b_id, "up", |_| true, Duration::from_secs(20)).await;
    until_partitioned(&c, &[&a, &b], &token, Duration::from_secs(20)).await;
    for user in first_owner.keys() {
        let v = presence(&c, &b, &token, user, None).await;
        assert_eq!(connections(&v), 2, "B serves the successor's state of {user}, not its stale one: {v}");
        if v["owner"] == b_id.as_str() {
            assert!(v["token"].as_u64().unwrap() > after[user], "B acts under a newer lease: {v}");
        }
    }
    let metrics = c.get(b.url("/metrics")).send().await.unwrap().text().await.unwrap();
    if !b_users.is_empty() {
        assert!(metrics.contains("troupe_cluster_shard_moves_total{op=\"lost\"}"), "B dropped the shards it lost");
    }

    // 4. Drain B (asked through A): its shards move to A, its WebSocket clients are told to reconnect
    //    elsewhere (1012), it leaves and exits 0; no acknowledged write is lost.
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws?token={token}", b.addr)).await.unwrap();
    let r = c.post(a.url(&format!("/api/v1/cluster/nodes/{b_id}/drain"))).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap_or_default());
    let close = tokio::time::timeout(Duration::from_secs(15), async {
        while let Some(m) = ws.next().await {
            if let Ok(Message::Close(f)) = m {
                return f.map(|f| u16::from(f.code));
            }
        }
        None
    })
    .await
    .expect("the WebSocket client was not closed");
    assert_eq!(close, Some(1012), "reconnect elsewhere");
    assert!(b.wait_exit(Duration::from_secs(20)).success(), "a drained node exits 0");
    wait_for(&c, &[&a], &token, &b_id, "down", |_| true, Duration::from_secs(10)).await;
    until_partitioned(&c, &[&a], &token, Duration::from_secs(10)).await;
    for user in first_owner.keys() {
        assert_eq!(connections(&presence(&c, &a, &token, user, None).await), 2);
    }
    let r = c.post(a.url(&format!("/api/v1/cluster/nodes/{b_id}/drain"))).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 409, "a down member cannot be drained");
    let r = c.post(a.url("/api/v1/cluster/nodes/nope/drain")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 404);
    drop(a);
}

/// A user's shard (placement is stable: every node and this test compute the same).
fn shard_of(user: &str) -> u64 {
    troupe_cluster::placement::shard_of(user.as_bytes(), SHARDS as u32).into()
}

async fn metric(c: &reqwest::Client, node: &Node, name: &str) -> Option<f64> {
    let text = c.get(node.url("/metrics")).send().await.ok()?.text().await.ok()?;
    text.lines().find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))?.rsplit(' ').next()?.parse().ok()
}

/// Three nodes on 127.0.0.1/2/3 (the first is the seed), formed; with an admin token.
async fn three_formed(pg: &Pg, c: &reqwest::Client) -> ([Spec; 3], Vec<Node>, String) {
    let specs = [Spec::new("127.0.0.1"), Spec::new("127.0.0.2"), Spec::new("127.0.0.3")];
    let seeds = specs[0].cluster_addr.clone();
    let nodes: Vec<Node> = specs.iter().map(|s| s.start_env(pg, &seeds, COOKIE, &ENVS)).collect();
    let token = common::token_for(c, &nodes[0], ADMIN).await;
    form(c, &nodes.iter().collect::<Vec<_>>(), &token).await;
    (specs, nodes, token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_events_written_while_the_drainer_is_killed_are_all_delivered() {
    let Some(pg) = fresh_schema().await else { return };
    let c = http();
    let (_specs, mut nodes, _token) = three_formed(&pg, &c).await;
    let author_token = common::token_for(&c, &nodes[0], "author@example.com").await;
    let fan_token = common::token_for(&c, &nodes[0], "fan@example.com").await;
    let me: Value =
        c.get(nodes[0].url("/api/v1/users/me")).bearer_auth(&author_token).send().await.unwrap().json().await.unwrap();
    let author_id = me["id"].as_str().expect("author id").to_owned();
    let r = c
        .post(nodes[1].url(&format!("/api/v1/users/{author_id}/follow")))
        .bearer_auth(&fan_token)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());

    // Exactly one node drains the outbox.
    let holder = eventually(Duration::from_secs(15), || async {
        let mut open = Vec::new();
        for (i, n) in nodes.iter().enumerate() {
            if metric(&c, n, "troupe_bus_draining").await == Some(1.0) {
                open.push(i);
            }
        }
        (open.len() == 1).then(|| open[0])
    })
    .await
    .expect("exactly one node drains the outbox");
    let other = (holder + 1) % 3;

    // Posts through another node; the drainer is killed in the middle. Every acknowledged post is notified.
    let mut posted = 0;
    for i in 0..30 {
        if i == 10 {
            nodes[holder].signal("KILL");
            let _ = nodes[holder].wait_exit(Duration::from_secs(5));
        }
        let r = c
            .post(nodes[other].url("/api/v1/content"))
            .bearer_auth(&author_token)
            .json(&json!({"title": format!("post {i}"), "body": "during a drainer kill", "tags": []}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        posted += 1;
    }
    let t0 = Instant::now();
    let delivered = eventually(Duration::from_secs(30), || async {
        let r = c.get(nodes[other].url("/api/v1/notifications?limit=100")).bearer_auth(&fan_token).send().await.ok()?;
        let page: Value = r.json().await.ok()?;
        let n = page["items"].as_array()?.iter().filter(|n| n["type"] == "content.created").count();
        (n >= posted).then_some(n)
    })
    .await;
    eprintln!("outbox: all {posted} notified {:?} after the last post", t0.elapsed());
    assert_eq!(delivered, Some(posted), "every acknowledged event is delivered, none twice");
    let survivors: Vec<&Node> = nodes.iter().enumerate().filter(|(i, _)| *i != holder).map(|(_, n)| n).collect();
    let mut open = 0;
    for n in survivors {
        if metric(&c, n, "troupe_bus_draining").await == Some(1.0) {
            open += 1;
        }
    }
    assert_eq!(open, 1, "one survivor took the outbox over");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_of_all_three_under_load_loses_no_acknowledged_write() {
    let Some(pg) = fresh_schema().await else { return };
    let c = http();
    let (specs, mut nodes, token) = three_formed(&pg, &c).await;

    // Load: presence changes through whichever node is next, each naming a distinct edge; a write
    // counts as acknowledged only when answered 200.
    let urls = std::sync::Arc::new(std::sync::Mutex::new(nodes.iter().map(|n| n.url("")).collect::<Vec<_>>()));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (c, urls, stop, token) = (c.clone(), urls.clone(), stop.clone(), token.clone());
        tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let base = urls.lock().unwrap()[(i % 3) as usize].clone();
                let user = format!("user-{}", i % 16);
                let r = c
                    .post(format!("{base}/api/v1/cluster/presence/{user}"))
                    .bearer_auth(&token)
                    .json(&json!({"node": format!("edge-{i}"), "connected": true}))
                    .send()
                    .await;
                if r.is_ok_and(|r| r.status() == 200) {
                    acked.push((user, i));
                }
                i += 1;
            }
            (acked, i)
        })
    };

    // Restart each node in turn (SIGTERM, then the same data dir again), waiting for the shards to
    // spread over all three before the next.
    for k in 0..3 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        nodes[k].signal("TERM");
        let status = tokio::task::block_in_place(|| nodes[k].wait_exit(Duration::from_secs(20)));
        assert!(status.success(), "node {k} stopped cleanly");
        let data = nodes[k].take_data();
        let args = ["--cluster-addr", specs[k].cluster_addr.as_str(), "--join", specs[0].cluster_addr.as_str()];
        let mut envs = vec![
            ("TROUPE_STORE_BACKEND", "postgres"),
            ("TROUPE_STORE_URL", pg.url.as_str()),
            ("TROUPE_CLUSTER_COOKIE", COOKIE),
            ("TROUPE_AUTH_JWT_SECRET", SECRET),
            ("TROUPE_AUTH_ADMIN_EMAILS", ADMIN),
        ];
        envs.extend_from_slice(&ENVS);
        let http_addr = format!("{}:0", specs[k].ip);
        nodes[k] = tokio::task::block_in_place(|| Node::start_with(data, &http_addr, &args, &envs));
        urls.lock().unwrap()[k] = nodes[k].url("");
        let all: Vec<&Node> = nodes.iter().collect();
        eventually(Duration::from_secs(40), || async {
            let sets = owned(&c, &all, &token).await?;
            (partition(&sets) && sets.iter().all(|s| !s.is_empty())).then_some(())
        })
        .await
        .unwrap_or_else(|| panic!("shards did not spread again after restarting node {k}"));
        eprintln!("rolling restart: node {k} back, shards spread");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (acked, sent) = load.await.unwrap();
    eprintln!("rolling restart: {} of {sent} writes acknowledged", acked.len());
    assert!(acked.len() > 16, "the load made progress: {} of {sent}", acked.len());
    let mut states = BTreeMap::new();
    for (user, i) in &acked {
        if !states.contains_key(user) {
            states.insert(user.clone(), presence(&c, &nodes[0], &token, user, None).await);
        }
        let v = &states[user];
        assert!(v["nodes"][format!("edge-{i}")].as_u64().is_some(), "acknowledged edge-{i} of {user} is kept: {v}");
    }
}

/// `ip` with `args`; whether it succeeded (its output is dropped).
fn ip(args: &[&str]) -> bool {
    std::process::Command::new("ip")
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A network namespace joined to this one by a veth pair (`host_ip` on this side, `ns_ip` inside),
/// removed on drop. Taking the host side down cuts the namespace off.
struct Netns {
    name: String,
    host_if: String,
    host_ip: String,
    ns_ip: String,
}

impl Netns {
    /// `None` when namespaces cannot be made here (not root, no `ip`, no veth support).
    fn create() -> Option<Netns> {
        let tag = format!("{:06x}", fastrand_u64() & 0xff_ffff);
        let octet = 20 + fastrand_u64() % 200;
        let ns = Netns {
            name: format!("trp{tag}"),
            host_if: format!("trh{tag}"),
            host_ip: format!("10.213.{octet}.1"),
            ns_ip: format!("10.213.{octet}.2"),
        };
        let ns_if = format!("trn{tag}");
        let ok = ip(&["netns", "add", &ns.name])
            && ip(&["link", "add", &ns.host_if, "type", "veth", "peer", "name", &ns_if])
            && ip(&["link", "set", &ns_if, "netns", &ns.name])
            && ip(&["addr", "add", &format!("{}/24", ns.host_ip), "dev", &ns.host_if])
            && ip(&["link", "set", &ns.host_if, "up"])
            && ip(&["-n", &ns.name, "addr", "add", &format!("{}/24", ns.ns_ip), "dev", &ns_if])
            && ip(&["-n", &ns.name, "link", "set", &ns_if, "up"])
            && ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        ok.then_some(ns)
    }

    /// Cut the namespace off (`true`) or reconnect it.
    fn cut(&self, cut: bool) {
        assert!(ip(&["link", "set", &self.host_if, if cut { "down" } else { "up" }]), "ip link set");
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        ip(&["link", "del", &self.host_if]);
        ip(&["netns", "del", &self.name]);
    }
}

/// Forwards connections to `listen`'s address on to `to` (PostgreSQL for a namespaced node).
fn forward(listen: tokio::net::TcpListener, to: std::net::SocketAddr) {
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listen.accept().await {
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(to).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_by_a_network_partition_stops_owning_shards_and_rejoins() {
    let Some(pg) = fresh_schema().await else { return };
    // C runs in its own network namespace behind a veth pair; it reaches the store through a
    // forwarder on the host side, so the cut takes away both its peers and the store.
    let Some(ns) = Netns::create() else {
        eprintln!("skipping: cannot create a network namespace with a veth pair here (needs root and `ip`)");
        return;
    };
    let listener = tokio::net::TcpListener::bind((ns.host_ip.as_str(), 0)).await.unwrap();
    let proxy = listener.local_addr().unwrap();
    forward(listener, "127.0.0.1:5432".parse().unwrap());
    let pg_port = pg.url.split("127.0.0.1:").nth(1).map(|rest| rest.split('/').next().unwrap_or("5432"));
    assert_eq!(pg_port, Some("5432"), "the forwarder assumes PostgreSQL at 127.0.0.1:5432: {}", pg.url);
    let c_store = pg.url.replacen("127.0.0.1:5432", &proxy.to_string(), 1);

    let host: &'static str = Box::leak(ns.host_ip.clone().into_boxed_str());
    let inside: &'static str = Box::leak(ns.ns_ip.clone().into_boxed_str());
    let (sa, sb) = (Spec::new(host), Spec::new(host));
    // A fresh namespace has every port free.
    let sc = Spec { ip: inside, cluster_addr: format!("{inside}:7400") };
    let seeds = sa.cluster_addr.clone();
    let a = sa.start_env(&pg, &seeds, COOKIE, &ENVS);
    let b = sb.start_env(&pg, &seeds, COOKIE, &ENVS);
    let node_c = sc.start_wrapped(&["ip", "netns", "exec", &ns.name], &c_store, &seeds, COOKIE, &ENVS);
    let c = http();
    let token = common::token_for(&c, &a, ADMIN).await;
    let ids = form(&c, &[&a, &b, &node_c], &token).await;
    until_partitioned(&c, &[&a, &b, &node_c], &token, Duration::from_secs(20)).await;
    let before = owned(&c, &[&node_c], &token).await.unwrap();
    assert!(!before[0].is_empty(), "C owns shards before the cut");

    // The cut: the majority marks C down and owns every shard; C, unable to renew its leases, lets
    // its shards go (it cannot be asked while cut off: its metrics are read after the heal).
    ns.cut(true);
    let down = wait_for(&c, &[&a, &b], &token, &ids[2], "down", |_| true, Duration::from_secs(15)).await;
    let moved = until_partitioned(&c, &[&a, &b], &token, Duration::from_secs(15)).await;
    eprintln!("partition: C marked down after {down:?}, its shards owned by A and B {moved:?} later");

    ns.cut(false);
    let back = wait_for(&c, &[&a, &b, &node_c], &token, &ids[2], "up", |_| true, Duration::from_secs(40)).await;
    let lost = metric(&c, &node_c, "troupe_cluster_shard_moves_total{op=\"lost\"}").await.unwrap_or(0.0);
    assert!(lost >= before[0].len() as f64, "C dropped the {} shards it could not renew: lost {lost}", before[0].len());
    until_partitioned(&c, &[&a, &b, &node_c], &token, Duration::from_secs(20)).await;
    eprintln!("partition healed: C up again after {back:?}, every shard owned exactly once");
}
