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
