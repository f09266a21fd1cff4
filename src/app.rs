//! The multi-service application on one node: config → the domain services (auth, users, content), the
//! notification service, the event bus draining the store outbox, the channel hub and the WebSocket
//! endpoint — and the small adapters that connect them (hub ↔ notifications, JWT ↔ WebSocket auth).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use troupe_actors::bus::{BusConfig, EventBus, RetryPolicy};
use troupe_actors::channels::{Hub, HubConfig};
use troupe_actors::{Backoff, ChildSpec, Registry};
use troupe_config::{JwtKeyMaterial, NodeConfig};
use troupe_gateway::ws::{PrefixPolicy, WsAuthError, WsAuthenticator, WsConfig, WsIdentity, WsState};
use troupe_gateway::{HttpSettings, Rate, RateLimitSettings};
use troupe_services::notifications::{
    self, NotificationConfig, NotificationHandler, NotificationService, NotificationSink,
};
use troupe_services::password::HashParams;
use troupe_services::tokens::jwks::JwksSettings;
use troupe_services::{AuthSettings, DomainServices, JwtKey, Role, Tokens};
use troupe_storage::Store;

/// What the node starts for the application and hands to the gateway.
pub struct App {
    pub tokens: Tokens,
    pub bus: EventBus,
    pub hub: Hub,
    pub ws: WsState,
    /// Children for the root supervisor, in start order.
    pub children: Vec<ChildSpec>,
}

/// The auth settings the config describes (key files were read and checked when the config loaded).
pub fn auth_settings(cfg: &NodeConfig) -> anyhow::Result<AuthSettings> {
    let a = &cfg.auth;
    let key = match a.jwt_key_material().context("auth key material")? {
        JwtKeyMaterial::Hs256 { secret } => JwtKey::Hs256 { secret: secret.expose().as_bytes().to_vec() },
        JwtKeyMaterial::Hs256Ephemeral => JwtKey::random_hs256(),
        JwtKeyMaterial::Rs256 { private_pem, public_pem } => JwtKey::Rs256 {
            private_pem: Some(private_pem.expose().as_bytes().to_vec()),
            public_pem: public_pem.into_bytes(),
        },
        JwtKeyMaterial::EdDsa { private_pem, public_pem } => JwtKey::EdDsa {
            private_pem: Some(private_pem.expose().as_bytes().to_vec()),
            public_pem: public_pem.into_bytes(),
        },
    };
    Ok(AuthSettings {
        issuer: a.issuer.clone(),
        audience: a.audience.clone(),
        key,
        access_ttl: a.access_token_ttl,
        refresh_ttl: a.refresh_token_ttl,
        admin_emails: a.admin_emails.clone(),
        hash_concurrency: a.password_hash_concurrency,
        hash_params: HashParams {
            m_cost_kib: a.password_hash_memory_kib,
            t_cost: a.password_hash_iterations,
            p_cost: a.password_hash_parallelism,
        },
        jwks: a.jwks_url.as_ref().map(|url| {
            let issuer = a.jwks_issuer.clone().unwrap_or_default();
            let audience = a.jwks_audience.clone().unwrap_or_else(|| a.audience.clone());
            JwksSettings {
                roles_claim: a.jwks_roles_claim.clone(),
                refresh_interval: a.jwks_refresh_interval,
                ..JwksSettings::new(url.clone(), issuer, audience)
            }
        }),
    })
}

fn bus_config(cfg: &NodeConfig) -> BusConfig {
    let b = &cfg.bus;
    BusConfig {
        poll_interval: b.poll_interval,
        page_size: b.page_size,
        max_in_flight: b.max_in_flight,
        retry: RetryPolicy {
            backoff: Backoff { initial: b.backoff_initial, max: b.backoff_max, jitter: b.backoff_jitter },
            max_attempts: b.max_attempts,
        },
        handler_timeout: b.handler_timeout,
        dead_letter_table: troupe_services::schema::DEAD_LETTERS.to_owned(),
    }
}

/// Pushes each new notification to the user's channel on this node's hub.
struct HubSink(Hub);

impl NotificationSink for HubSink {
    fn publish(&self, channel: &str, data: Bytes) {
        self.0.publish(channel, data);
    }
}

/// WebSocket auth = the same JWT verification as REST.
struct JwtWsAuth(Tokens);

impl WsAuthenticator for JwtWsAuth {
    fn authenticate(&self, token: &str) -> Result<WsIdentity, WsAuthError> {
        let p = self.0.verify(token).map_err(|e| WsAuthError::Invalid(e.to_string()))?;
        Ok(WsIdentity { is_admin: p.roles.contains(&Role::Admin), user_id: p.user_id })
    }
}

/// Builds the application over `store`; nothing runs until the returned children start.
/// With `links` (a clustered node), channel publishes are relayed to every other node.
pub fn build(
    cfg: &NodeConfig,
    store: &Store,
    registry: &Registry,
    links: Option<&troupe_cluster::Links>,
) -> anyhow::Result<App> {
    let settings = auth_settings(cfg)?;
    let services = DomainServices::new(store.clone(), settings).context("cannot build the services")?;
    let tokens = services.tokens();
    if let Some(links) = links {
        // Sessions revoked here are revoked on every node (and the others' on this one).
        let t = tokens.clone();
        tokens.on_revoke(troupe_cluster::relay_revocations(links, move |sid, at| t.apply_revocation(sid, at)));
    }
    if let Some(jwks) = tokens.jwks() {
        // Runs until the last `Tokens` clone is dropped (at node shutdown).
        jwks.spawn_refresher();
    }

    let w = &cfg.ws;
    let hub_cfg = HubConfig {
        history_len: w.history_messages,
        history_ttl: (!w.history_ttl.is_zero()).then_some(w.history_ttl),
        ..HubConfig::default()
    };
    let hub = match links {
        Some(links) => {
            let relay = troupe_cluster::ChannelRelay::new(links.clone());
            let hub = Hub::with_relay(hub_cfg, troupe_gateway::ws::json_encoder(), relay.clone());
            relay.attach(&hub);
            hub
        }
        None => Hub::new(hub_cfg, troupe_gateway::ws::json_encoder()),
    };
    let ws_cfg = WsConfig {
        queue_capacity: w.outbound_queue,
        ping_interval: w.ping_interval,
        max_message_bytes: w.max_message_bytes,
        read_buffer_bytes: w.read_buffer_bytes,
        ..WsConfig::default()
    };
    let ws = WsState::new(
        ws_cfg,
        hub.clone(),
        Arc::new(JwtWsAuth(tokens.clone())),
        Arc::new(PrefixPolicy { public_prefixes: w.public_channel_prefixes.clone() }),
    );

    let n = &cfg.notifications;
    let notification_cfg = NotificationConfig {
        fanout_page: n.fanout_page,
        fanout_concurrency: n.fanout_concurrency,
        deliver_timeout: n.deliver_timeout,
    };
    let bus = EventBus::new(store.clone(), bus_config(cfg)).context("cannot build the event bus")?;
    let notifier =
        NotificationService::new(store.clone(), Arc::new(HubSink(hub.clone())), notification_cfg).with_bus(&bus);
    notifications::subscribe(&bus, NotificationHandler::from_registry(registry.clone()))
        .context("cannot subscribe the notification service to the bus")?;
    // Stored notifications reach the hub through the outbox (a crash between the write and the push
    // delays the push, never loses it).
    notifications::subscribe_push(&bus, notifier.push_handler())
        .context("cannot subscribe the notification push to the bus")?;

    // The RabbitMQ bridge (a bus subscriber), when `rabbitmq.url` is set.
    let bridge = match troupe_amqp::BridgeConfig::from_section(&cfg.rabbitmq) {
        Some(config) => {
            let bridge = troupe_amqp::Bridge::new(config, registry.clone()).context("rabbitmq bridge")?;
            bridge.subscribe(&bus).context("cannot subscribe the rabbitmq bridge to the bus")?;
            registry.register_probe(bridge.probe());
            Some(bridge)
        }
        None => None,
    };

    // Start order: services, then notifications (a bus subscriber), then the bus that feeds it.
    let mut children = services.child_specs();
    children.push(notifier.child_spec());
    if let Some(bridge) = &bridge {
        children.push(bridge.child_spec("rabbitmq"));
    }
    children.push(bus.child_spec("bus"));
    Ok(App { tokens, bus, hub, ws, children })
}

/// The gateway's CORS, proxy and rate-limit settings from `[gateway]`.
pub fn http_settings(cfg: &NodeConfig) -> HttpSettings {
    let g = &cfg.gateway;
    let rate = |r: &troupe_config::RateLimit| Rate { per_second: r.per_second.get(), burst: r.burst.get() };
    HttpSettings {
        cors_origins: g.cors_allowed_origins.clone(),
        trusted_proxies: g.trusted_proxies.iter().map(ToString::to_string).collect(),
        rate_limits: RateLimitSettings {
            enabled: g.rate_limit.enabled,
            auth: rate(&g.rate_limit.auth),
            read: rate(&g.rate_limit.read),
            write: rate(&g.rate_limit.write),
            anonymous: rate(&g.rate_limit.per_ip),
        },
    }
}

/// How often the hub drops channels whose history expired and that nobody subscribes to.
pub const HUB_SWEEP: Duration = Duration::from_secs(30);
