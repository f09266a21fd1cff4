//! The node's own system actors (the `/troupe/system` subtree).
//!
//! `sampler` refreshes gauges that nothing else updates — process memory and file descriptors, uptime,
//! breaker states — and runs the Prometheus recorder's upkeep, on a fixed interval.

use std::time::{Duration, Instant};

use metrics_exporter_prometheus::PrometheusHandle;
use troupe_actors::ractor::{self, Actor, ActorProcessingErr, ActorRef};
use troupe_actors::{ChildSpec, Registry};

/// How often the sampler runs.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// Sampler messages.
pub enum SamplerMsg {
    /// Take a sample now.
    Tick,
}
impl ractor::Message for SamplerMsg {}

/// Periodic gauge sampler.
#[derive(Clone)]
pub struct Sampler {
    registry: Registry,
    prometheus: Option<PrometheusHandle>,
    started: Instant,
}

/// The sampler's running state: its interval timer.
pub struct SamplerState {
    timer: tokio::task::JoinHandle<()>,
}

impl Sampler {
    /// A child spec for the sampler.
    pub fn spec(registry: Registry, prometheus: Option<PrometheusHandle>) -> ChildSpec {
        ChildSpec::new("sampler", Self { registry, prometheus, started: Instant::now() }, || ())
    }

    fn sample(&self) {
        self.registry.publish_gauges();
        metrics::gauge!("troupe_uptime_seconds").set(self.started.elapsed().as_secs_f64());
        if let Some(rss) = resident_bytes() {
            metrics::gauge!("troupe_process_resident_memory_bytes").set(rss as f64);
        }
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            metrics::gauge!("troupe_process_open_fds").set(fds.count() as f64);
        }
        if let Some(h) = &self.prometheus {
            h.run_upkeep();
        }
    }
}

/// Resident set size from `/proc/self/statm` (Linux); `None` elsewhere.
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

impl Actor for Sampler {
    type Msg = SamplerMsg;
    type State = SamplerState;
    type Arguments = ();

    async fn pre_start(&self, myself: ActorRef<SamplerMsg>, _: ()) -> Result<SamplerState, ActorProcessingErr> {
        self.sample();
        Ok(SamplerState { timer: myself.send_interval(SAMPLE_EVERY, || SamplerMsg::Tick) })
    }

    async fn handle(
        &self,
        _: ActorRef<SamplerMsg>,
        msg: SamplerMsg,
        _: &mut SamplerState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SamplerMsg::Tick => self.sample(),
        }
        Ok(())
    }

    async fn post_stop(&self, _: ActorRef<SamplerMsg>, state: &mut SamplerState) -> Result<(), ActorProcessingErr> {
        state.timer.abort();
        Ok(())
    }
}
