#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use super::*;

#[test]
fn the_node_id_is_created_once_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let id = load_or_create_node_id(dir.path()).unwrap();
    assert!(uuid::Uuid::parse_str(&id).is_ok());
    assert_eq!(load_or_create_node_id(dir.path()).unwrap(), id, "a restart keeps the id");
    std::fs::write(dir.path().join(NODE_ID_FILE), "not a uuid").unwrap();
    let e = load_or_create_node_id(dir.path()).unwrap_err();
    assert!(matches!(e, ClusterError::NodeId { .. }) && e.to_string().contains("not a UUID"), "{e}");
    let e = load_or_create_node_id(&dir.path().join("missing/dir")).unwrap_err();
    assert!(matches!(e, ClusterError::NodeId { .. }), "{e}");
}

#[test]
fn settings_come_from_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let http: SocketAddr = "127.0.0.1:8080".parse().unwrap();
    let mut cfg = NodeConfig::default();
    cfg.node.data_dir = dir.path().to_path_buf();
    assert!(ClusterSettings::from_config(&cfg, http).unwrap().is_none(), "no cluster.addr: single node");
    cfg.cluster.addr = Some("10.0.0.1:4000".parse().unwrap());
    cfg.cluster.cookie = Some(troupe_config::Secret::new("c"));
    cfg.cluster.seeds = vec!["10.0.0.2:4000".parse().unwrap()];
    let s = ClusterSettings::from_config(&cfg, http).unwrap().unwrap();
    assert_eq!((s.advertise.as_str(), s.advertise_host()), ("10.0.0.1:4000", "10.0.0.1".to_owned()));
    assert_eq!(s.seeds, ["10.0.0.2:4000"]);
    assert_eq!(s.http_addr, "127.0.0.1:8080");
    assert_eq!(s.detector, DetectorConfig::default());
    assert!(s.tls.is_none());
    cfg.cluster.advertise_addr = Some("[fd00::1]:4000".parse().unwrap());
    cfg.cluster.tls_cert = Some("/c".into());
    cfg.cluster.tls_key = Some("/k".into());
    cfg.cluster.tls_ca = Some("/ca".into());
    let s = ClusterSettings::from_config(&cfg, http).unwrap().unwrap();
    assert_eq!(s.advertise_host(), "fd00::1");
    assert_eq!(s.tls.unwrap().ca, std::path::PathBuf::from("/ca"));
}

#[test]
fn ping_verdicts_need_a_mesh_majority() {
    assert!(mesh_quorum(0, 0), "two nodes: the only peer is judged");
    assert!(mesh_quorum(1, 1) && mesh_quorum(1, 2) && mesh_quorum(2, 3));
    assert!(!mesh_quorum(0, 1), "cut off from the only other peer: judge by the store only");
    assert!(!mesh_quorum(1, 3) && !mesh_quorum(0, 2));
}

#[test]
fn the_probe_is_ready_only_when_up() {
    let view = Arc::new(RwLock::new(ClusterView::default()));
    let probe = ClusterProbe { view: view.clone() };
    let h = probe.health();
    assert_eq!((h.name.as_str(), h.status, h.critical), ("cluster", ComponentStatus::Down, true));
    for (status, expected) in [
        (NodeStatus::Joining, ComponentStatus::Down),
        (NodeStatus::Up, ComponentStatus::Up),
        (NodeStatus::Suspect, ComponentStatus::Degraded),
        (NodeStatus::Leaving, ComponentStatus::Down),
        (NodeStatus::Down, ComponentStatus::Down),
    ] {
        view.write().unwrap().status = Some(status);
        let h = probe.health();
        assert_eq!(h.status, expected, "{status}");
        assert_eq!(h.blocks_readiness(), expected == ComponentStatus::Down);
    }
}

/// Real store (fjall), real mesh listener, short real-time bounds.
async fn single_node() -> (ClusterHandle, MembershipTable, ClusterSettings, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let backend = troupe_storage::FjallBackend::open(dir.path().join("store")).await.unwrap();
    let store = Store::new(Arc::new(backend), Arc::new(troupe_storage::SystemClock));
    let table = MembershipTable::new(store.clone());
    let settings = ClusterSettings {
        node_id: load_or_create_node_id(dir.path()).unwrap(),
        name: "n1".into(),
        listen: "127.0.0.1:0".parse().unwrap(),
        advertise: "127.0.0.1:1".into(),
        http_addr: "127.0.0.1:2".into(),
        cookie: "c".into(),
        seeds: vec![],
        heartbeat_interval: Duration::from_millis(40),
        detector: DetectorConfig { suspect_after: Duration::from_millis(150), down_after: Duration::from_millis(300) },
        tls: None,
    };
    // A member that died without a trace: `up`, never heartbeating again.
    let ghost = Member {
        node_id: "ghost".into(),
        name: "ghost".into(),
        incarnation: 1,
        cluster_addr: "127.0.0.1:9".into(),
        http_addr: String::new(),
        status: NodeStatus::Up,
        heartbeat: 5,
        last_heartbeat_ms: 0,
        reason: "joined".into(),
    };
    table.write(&ghost, None).await.unwrap();
    let handle = ClusterHandle::start(settings.clone(), store).await.unwrap();
    (handle, table, settings, dir)
}

async fn until(limit: Duration, mut f: impl FnMut() -> bool) {
    let t0 = std::time::Instant::now();
    while !f() {
        assert!(t0.elapsed() < limit, "condition not met within {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_node_buries_a_dead_member_joins_refutes_rejoins_and_leaves() {
    let (handle, table, settings, _dir) = single_node().await;
    let me = settings.node_id.clone();
    let first = handle.view();
    assert_eq!(first.status, Some(NodeStatus::Joining), "a live-looking up member exists: wait for it");
    let inc1 = first.incarnation;

    // The ghost's heartbeat never moves: marked down by the store signal, then this node is the first up.
    until(Duration::from_secs(5), || handle.view().status == Some(NodeStatus::Up)).await;
    let ghost = table.get("ghost").await.unwrap().unwrap().member;
    assert_eq!(ghost.status, NodeStatus::Down);
    assert!(ghost.reason.contains(&me) && ghost.reason.contains("store heartbeat"), "{}", ghost.reason);
    let row = table.get(&me).await.unwrap().unwrap().member;
    assert_eq!((row.status, row.reason.as_str()), (NodeStatus::Up, "first node up"));
    assert!(handle.probe().health().status == ComponentStatus::Up);

    // A peer suspects it: refuted on the next heartbeat, same incarnation.
    let current = table.get(&me).await.unwrap().unwrap();
    let mut suspected = current.member.clone();
    suspected.status = NodeStatus::Suspect;
    suspected.reason = "suspect by someone".into();
    table.write(&suspected, Some(current.version)).await.unwrap().unwrap();
    until(Duration::from_secs(5), || {
        let v = handle.view();
        v.members[0].reason.contains("refuted") && v.status == Some(NodeStatus::Up)
    })
    .await;
    assert_eq!(handle.view().incarnation, inc1);

    // A peer declares it down: it rejoins with a greater incarnation and comes back up.
    let current = table.get(&me).await.unwrap().unwrap();
    let mut buried = current.member.clone();
    buried.status = NodeStatus::Down;
    buried.reason = "down by someone".into();
    table.write(&buried, Some(current.version)).await.unwrap().unwrap();
    until(Duration::from_secs(5), || {
        let v = handle.view();
        v.incarnation > inc1 && v.status == Some(NodeStatus::Up)
    })
    .await;
    let row = table.get(&me).await.unwrap().unwrap().member;
    assert!(row.incarnation > inc1 && row.status == NodeStatus::Up);
    let view = handle.view();
    assert_eq!(view.members.len(), 2);
    assert!(view.members[0].is_self);
    assert_eq!(view.members[1].node_id, "ghost");

    // Graceful leave: the row ends `down` with reason "left".
    handle.leave(Duration::from_secs(5)).await;
    let row = table.get(&me).await.unwrap().unwrap().member;
    assert_eq!((row.status, row.reason.as_str()), (NodeStatus::Down, "left"));
    assert_eq!(handle.view().status, Some(NodeStatus::Down));
}
