//! One node, top to bottom: observability → data dir → store → listener → supervision tree → gateway;
//! stopped in reverse on SIGTERM/SIGINT within `shutdown.grace`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use troupe_actors::breaker::BreakerConfig;
use troupe_actors::{Backoff, CallLimits, ChildSpec, Registry, Strategy, Supervisor, SupervisorSpec};
use troupe_config::{LogFormat, NodeConfig};
use troupe_gateway::{GatewayConfig, GatewayState};

use crate::system::Sampler;

/// Buckets for handler and request latencies, in seconds (10 µs … 10 s).
const LATENCY_BUCKETS: &[f64] = &[0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0];

fn init_tracing(cfg: &NodeConfig) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&cfg.log.level)
        .map_err(|e| anyhow!("log.level {:?} is not a valid filter: {e}", cfg.log.level))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let installed = match cfg.log.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
    installed.map_err(|e| anyhow!("cannot install the logger: {e}"))
}

fn install_metrics() -> anyhow::Result<PrometheusHandle> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
        .context("metrics buckets")?
        .install_recorder()
        .context("cannot install the metrics recorder")
}

/// The data dir must exist (it is created) and be writable, before anything else starts.
fn check_data_dir(cfg: &NodeConfig) -> anyhow::Result<()> {
    let dir = &cfg.node.data_dir;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create data dir {}", dir.display()))?;
    let probe = dir.join(".troupe-write-check");
    std::fs::write(&probe, b"ok").with_context(|| format!("data dir {} is not writable", dir.display()))?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

fn root_spec(
    cfg: &NodeConfig,
    registry: &Registry,
    prometheus: &PrometheusHandle,
    app_children: Vec<ChildSpec>,
) -> SupervisorSpec {
    let s = &cfg.supervisor;
    let b = &cfg.breaker;
    let apply = |spec: SupervisorSpec| {
        spec.intensity(s.max_restarts, s.within)
            .backoff(Backoff { initial: s.backoff_initial, max: s.backoff_max, jitter: s.backoff_jitter })
            .breaker(BreakerConfig {
                consecutive_failures: b.consecutive_failures,
                failure_rate: b.failure_rate,
                min_calls: b.min_calls,
                window: b.window,
                cooldown: b.cooldown,
            })
            .calls(CallLimits { timeout: cfg.calls.timeout, max_in_flight: cfg.calls.max_in_flight })
    };
    let system = apply(SupervisorSpec::new("system"))
        .strategy(Strategy::OneForOne)
        .child(Sampler::spec(registry.clone(), Some(prometheus.clone())));
    let mut services = apply(SupervisorSpec::new("services")).strategy(Strategy::OneForOne);
    for child in app_children {
        services = services.child(child);
    }
    apply(SupervisorSpec::new("troupe"))
        .strategy(Strategy::OneForOne)
        .child(ChildSpec::supervisor(system))
        .child(ChildSpec::supervisor(services))
}

/// Installs the SIGTERM/SIGINT handlers now (not when first polled: a signal that arrives right after
/// "ready" is logged must already be caught) and resolves with the first signal's name.
fn shutdown_signal() -> impl std::future::Future<Output = &'static str> {
    #[cfg(unix)]
    let handlers = {
        use tokio::signal::unix::{SignalKind, signal};
        (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    };
    async move {
        #[cfg(unix)]
        {
            match handlers {
                (Ok(mut term), Ok(mut int)) => tokio::select! {
                    _ = term.recv() => "SIGTERM",
                    _ = int.recv() => "SIGINT",
                },
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                    "SIGINT"
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "ctrl-c"
        }
    }
}

/// Why the node stops when the cluster drained it (WebSocket clients then get 1012, not 1001).
const CLUSTER_DRAIN: &str = "cluster drain";

/// Run a node until a signal stops it (Ok) or its root supervisor gives up (Err).
pub async fn run(cfg: NodeConfig) -> anyhow::Result<()> {
    let started = Instant::now();
    init_tracing(&cfg)?;
    check_data_dir(&cfg)?;
    let store = troupe_storage::Store::open(&cfg.store, &cfg.node.data_dir).await.context("cannot open the store")?;
    let prometheus = install_metrics()?;
    let listener = troupe_gateway::listen(cfg.http.addr, cfg.http.listen_backlog)
        .await
        .with_context(|| format!("cannot listen on {}", cfg.http.addr))?;
    let addr: SocketAddr = listener.local_addr().context("listener address")?;

    for warning in cfg.warnings() {
        tracing::warn!(%warning, "configuration");
    }
    let registry = Registry::new();
    // Membership starts after the store and before the services: the node registers as `joining` and
    // readiness stays down (critical `cluster` probe) until a peer has answered it.
    // The links (bounded, batched cross-node messaging) carry the channel relay.
    let (cluster, links) = match troupe_cluster::ClusterSettings::from_config(&cfg, addr).context("cluster settings")? {
        Some(settings) => {
            let node_id = settings.node_id.clone();
            let handle = troupe_cluster::ClusterHandle::start(settings, store.clone())
                .await
                .context("cannot start cluster membership")?;
            registry.register_probe(handle.probe());
            let link_config = troupe_cluster::LinkConfig {
                max_queue_messages: cfg.cluster.link_queue_messages,
                max_queue_bytes: cfg.cluster.link_queue_bytes,
                max_frames_in_flight: cfg.cluster.link_frames_in_flight as usize,
                ..troupe_cluster::LinkConfig::default()
            };
            let links =
                troupe_cluster::Links::start(node_id, link_config).await.context("cannot start the cluster links")?;
            (Some(handle), Some(links))
        }
        None => (None, None),
    };
    let mut app = crate::app::build(&cfg, &store, &registry, links.as_ref())?;
    // Clustered: the outbox drain is a cluster singleton (the bus drains only while this node holds the
    // `bus.outbox` lease), and sharded entities (the `presence` kind) spread over the `up` members.
    let sharding = match &cluster {
        Some(c) => {
            use troupe_cluster::sharding::{presence, singleton};
            let settings = troupe_cluster::ShardSettings::from_config(&cfg);
            let (gate, _) =
                singleton::lease_gate(store.clone(), c.node_id(), singleton::BUS_OUTBOX_LEASE, c.up_set(), &settings);
            app.bus.set_drain_gate(gate).context("bus drain gate")?;
            let kinds = troupe_cluster::EntityKinds::new()
                .register(presence::PRESENCE_KIND, std::sync::Arc::new(presence::PresenceFactory));
            let sharding = troupe_cluster::Sharding::start(settings, store.clone(), c.node_id(), c.up_set(), kinds)
                .await
                .context("cannot start sharding")?;
            if let Some(l) = &links {
                sharding.use_links(l);
            }
            Some(sharding)
        }
        None => None,
    };
    let app_children = std::mem::take(&mut app.children);
    let mut root = Supervisor::start_root(root_spec(&cfg, &registry, &prometheus, app_children), registry.clone())
        .await
        .context("cannot start the supervision tree")?;

    let gw_cfg = GatewayConfig {
        node_name: cfg.node.name.clone(),
        version: env!("CARGO_PKG_VERSION"),
        request_timeout: cfg.http.request_timeout,
        max_body_bytes: cfg.http.max_body_bytes,
        allow_kill: cfg.admin.allow_kill,
    };
    let state = GatewayState::new(&gw_cfg, registry.clone(), Some(prometheus))
        .with_ws(app.ws.clone())
        .with_services(
            troupe_services::Clients::from_registry(&registry).context("service clients")?,
            app.tokens.clone(),
        )
        .with_notifications(
            troupe_services::notifications::NotificationClient::from_registry(&registry)
                .context("notification client")?,
        )
        .with_bus(app.bus.clone())
        .with_http(&crate::app::http_settings(&cfg))
        .context("gateway settings")?;
    let state = match &cluster {
        Some(c) => state.with_cluster(c.clone()),
        None => state,
    };
    let state = match &sharding {
        Some(s) => state.with_sharding(s.clone()),
        None => state,
    };
    let sweeper = app.hub.spawn_sweeper(crate::app::HUB_SWEEP);
    let router = troupe_gateway::router(&gw_cfg, state.clone());

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(async {
                let _ = stop_rx.await;
            })
            .await
    });
    let shutdown = shutdown_signal();
    tracing::info!(
        node = %cfg.node.name,
        addr = %addr,
        data_dir = %cfg.node.data_dir.display(),
        startup_ms = started.elapsed().as_secs_f64() * 1000.0,
        "troupe node ready"
    );

    // A drain (`POST /api/v1/cluster/nodes/{id}/drain`) stops the node like a signal: shards handed
    // over, WebSocket clients closed (1001, reconnect elsewhere), `leaving` then `down`, exit 0.
    let drain = async {
        let Some(mut rx) = cluster.as_ref().map(troupe_cluster::ClusterHandle::drain_requested) else {
            return std::future::pending().await;
        };
        while !*rx.borrow_and_update() {
            if rx.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    };
    let outcome = tokio::select! {
        signal = shutdown => Ok(signal),
        () = drain => Ok(CLUSTER_DRAIN),
        () = root.exited() => Err(anyhow!("the root supervisor gave up (restart intensity exceeded); see the log")),
    };
    let grace = cfg.shutdown.grace;
    let deadline = Instant::now() + grace;
    match &outcome {
        Ok(signal) => tracing::info!(%signal, grace_ms = grace.as_millis() as u64, "shutting down"),
        Err(e) => tracing::error!(error = %e, "shutting down"),
    }

    // 1. Stop accepting and let in-flight requests finish (readiness turns 503 first). A clustered node
    //    first leaves the membership (`leaving`, then `down`) so peers stop counting on it.
    state.start_draining();
    if let Some(s) = &sharding {
        // Entities checkpoint and stop, leases are released: the others take the shards at once.
        s.release_all(grace / 4).await;
    }
    if let Some(c) = &cluster {
        c.leave(grace / 2).await;
    }
    if let Some(l) = &links {
        l.stop();
    }
    let _ = stop_tx.send(());
    // WebSocket connections are long-lived: close them so the server can drain: 1012 "reconnect" (to
    // another node) when the cluster drains this node, else 1001 "going away".
    if matches!(outcome, Ok(CLUSTER_DRAIN)) {
        app.ws.drain();
    } else {
        app.ws.shutdown();
    }
    sweeper.abort();
    match tokio::time::timeout(grace, server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "http server stopped with an error"),
        Ok(Err(e)) => tracing::warn!(error = %e, "http server task failed"),
        Err(_) => tracing::warn!("http requests still running at the end of the grace period; dropped"),
    }
    // 2. Stop the supervision tree in reverse start order within what is left of the grace period.
    let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(100));
    let graceful = root.shutdown(left).await;
    // 3. Last, the store: every acknowledged write is already on disk; this releases the data dir.
    if let Err(e) = store.close().await {
        tracing::warn!(error = %e, "store did not close cleanly");
    }
    tracing::info!(
        graceful,
        elapsed_ms = (grace - deadline.saturating_duration_since(Instant::now())).as_millis() as u64,
        "stopped"
    );
    outcome.map(|_| ())
}
