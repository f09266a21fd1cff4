//! Troupe's actor layer against raw ractor, measured side by side in one run so the ratios are fair on a
//! noisy machine: tell throughput, ask latency (1 and 2 concurrent callers), spawn cost and restart cost.
//!
//! Every criterion group holds the raw-ractor baseline and the Troupe variant; `troupe_actor_ref`
//! variants send with a plain `ActorRef` to the *supervised* actor, which separates the cost of the
//! per-message wrapper (`Instrumented`) from the cost of the `ServiceRef` path (breaker, admission gate,
//! slot). Every routine runs in a task on a multi-thread tokio runtime (one worker per core).
//!
//! After criterion, a paired pass alternates the variants round by round (tell batches, single calls,
//! spawns, restarts) and prints percentiles and p50 ratios; its tell part adds ablations (`Ablated`:
//! ractor plus one piece of Troupe's per-message bookkeeping, a copy of all of it, and the copy with
//! the clock sampled) to attribute the gap. Last, a global metrics recorder is installed and tell/ask
//! are measured again with live metric handles, as in the node.
//!
//! Run: `cargo bench -p troupe-actors --bench actors`; criterion's per-bench estimates (median of
//! sample means) are in `$CARGO_TARGET_DIR/criterion/<group>/<bench>/new/estimates.json`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "benchmark harness"
)]

use std::hint::black_box;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{Bencher, BenchmarkGroup, Criterion, Throughput, criterion_group};
use tokio::runtime::Runtime;
use tracing::Instrument;
use troupe_actors::breaker::BreakerConfig;
use troupe_actors::ractor::concurrency::JoinHandle;
use troupe_actors::ractor::{self, Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort};
use troupe_actors::{Backoff, ChildSpec, Registry, RootHandle, ServiceRef, Supervisor, SupervisorSpec};

/// Messages per tell-throughput iteration.
const N: u64 = 100_000;
/// Deadline of every call (never reached).
const TIMEOUT: Duration = Duration::from_secs(5);

enum Msg {
    /// Count one.
    Inc,
    /// Reply with the count: sent after a batch of `Inc`, it returns once the batch is handled (FIFO).
    Count(RpcReplyPort<u64>),
    /// Reply with the incarnation's id.
    Ping(RpcReplyPort<ActorId>),
    /// Make the handler fail (the actor exits abnormally).
    Fail,
}
impl ractor::Message for Msg {}

/// The actor under test: the same type runs raw and supervised.
#[derive(Clone, Copy)]
struct Counter;

impl Actor for Counter {
    type Msg = Msg;
    type State = u64;
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<Msg>, _: ()) -> Result<u64, ActorProcessingErr> {
        Ok(0)
    }

    async fn handle(&self, myself: ActorRef<Msg>, msg: Msg, count: &mut u64) -> Result<(), ActorProcessingErr> {
        match msg {
            Msg::Inc => *count += 1,
            Msg::Count(reply) => {
                let _ = reply.send(*count);
            }
            Msg::Ping(reply) => {
                let _ = reply.send(myself.get_id());
            }
            Msg::Fail => return Err("told to fail".into()),
        }
        Ok(())
    }
}

/// What an [`Ablated`] actor adds to `Counter`, to attribute the tell gap to pieces of the bookkeeping
/// `Instrumented` and `ServiceRef` do per message.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Extra {
    /// Two clock reads around the handler, nothing else.
    Clock,
    /// The approximate depth counter: sender `fetch_add`, actor saturating CAS, nothing else.
    Depth,
    /// All of `Instrumented`'s per-message work, copied: depth counter and mailbox gauge, a debug span
    /// entered around the handler, two clock reads, handler histogram and message counter.
    Replica,
    /// `Replica` with the clock read (and histogram record) on 1 message in 16: the proposed fix.
    Sampled,
    /// `Sampled` without the per-message depth counter and mailbox gauge (depth published by the
    /// sampler instead): both proposed fixes.
    Lean,
}

/// Shared between the sender and the actor, like a `Slot`.
struct Bookkeeping {
    depth: AtomicI64,
    /// Messages handled; written by the actor only.
    seq: AtomicU64,
    messages: metrics::Counter,
    handler_seconds: metrics::Histogram,
    mailbox: metrics::Gauge,
}

impl Bookkeeping {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            depth: AtomicI64::new(0),
            seq: AtomicU64::new(0),
            messages: metrics::counter!("bench_messages_total"),
            handler_seconds: metrics::histogram!("bench_handler_seconds"),
            mailbox: metrics::gauge!("bench_mailbox_depth"),
        })
    }
}

#[derive(Clone)]
struct Ablated {
    extra: Extra,
    bk: Arc<Bookkeeping>,
}

impl Actor for Ablated {
    type Msg = Msg;
    type State = u64;
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<Msg>, _: ()) -> Result<u64, ActorProcessingErr> {
        Ok(0)
    }

    async fn handle(&self, myself: ActorRef<Msg>, msg: Msg, count: &mut u64) -> Result<(), ActorProcessingErr> {
        let bk = &*self.bk;
        let full = matches!(self.extra, Extra::Replica | Extra::Sampled | Extra::Lean);
        if matches!(self.extra, Extra::Depth | Extra::Replica | Extra::Sampled) {
            let prev = bk.depth.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| (v > 0).then(|| v - 1));
            if prev.is_ok() && full {
                bk.mailbox.decrement(1.0);
            }
        }
        let timed = match self.extra {
            Extra::Clock | Extra::Replica => true,
            Extra::Sampled | Extra::Lean => bk.seq.fetch_add(1, Ordering::Relaxed).is_multiple_of(16),
            Extra::Depth => false,
        };
        let started = timed.then(Instant::now);
        let result = if full {
            let span = tracing::debug_span!("actor.handle", actor = "/bench/ablated", kind = "Ablated");
            Counter.handle(myself, msg, count).instrument(span).await
        } else {
            Counter.handle(myself, msg, count).await
        };
        if let Some(t) = started {
            let secs = t.elapsed().as_secs_f64();
            if full {
                bk.handler_seconds.record(secs);
            } else {
                black_box(secs);
            }
        }
        if full {
            bk.messages.increment(1);
        }
        result
    }
}

/// `tell_raw` plus the sender's share of the bookkeeping (`Slot::mailbox_enqueued`).
async fn tell_counted(actor: &ActorRef<Msg>, bk: &Bookkeeping, gauge: bool) -> u64 {
    for _ in 0..N {
        bk.depth.fetch_add(1, Ordering::Relaxed);
        if gauge {
            bk.mailbox.increment(1.0);
        }
        actor.send_message(Msg::Inc).expect("send");
    }
    count(actor).await
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime")
}

/// A root with one `Counter` child named `counter`, production defaults except as given.
fn one_child(name: &str) -> SupervisorSpec {
    SupervisorSpec::new(name).child(ChildSpec::new("counter", Counter, || ()))
}

/// For the restart bench: no backoff, no escalation, and a breaker that never opens, so only the
/// restart path itself is timed.
fn restart_spec(name: &str) -> SupervisorSpec {
    one_child(name).backoff(Backoff::NONE).intensity(u32::MAX, Duration::from_secs(1)).breaker(BreakerConfig {
        consecutive_failures: u32::MAX,
        failure_rate: 1.0,
        min_calls: u32::MAX,
        window: Duration::from_secs(1),
        cooldown: Duration::from_millis(1),
    })
}

struct Fixture {
    raw: ActorRef<Msg>,
    raw_join: JoinHandle<()>,
    root: RootHandle,
    svc: ServiceRef<Msg>,
    /// A plain `ActorRef` to the supervised (instrumented) incarnation.
    supervised: ActorRef<Msg>,
}

impl Fixture {
    fn start(rt: &Runtime, spec: SupervisorSpec) -> Self {
        rt.block_on(async {
            let (raw, raw_join) = Actor::spawn(None, Counter, ()).await.expect("spawn raw");
            let registry = Registry::new();
            let root = Supervisor::start_root(spec, registry.clone()).await.expect("start tree");
            let svc = registry.service::<Msg>("counter").expect("service");
            let supervised = registry.actor_ref::<Msg>("counter").expect("actor ref");
            Self { raw, raw_join, root, svc, supervised }
        })
    }

    fn stop(self, rt: &Runtime) {
        rt.block_on(async {
            self.raw.stop_and_wait(None, Some(TIMEOUT)).await.expect("stop raw");
            let _ = self.raw_join.await;
            assert!(self.root.shutdown(TIMEOUT).await, "graceful shutdown");
        });
    }
}

// ---------------------------------------------------------------------------------------------------
// The measured operations (shared by criterion and the paired pass).

async fn tell_raw(actor: &ActorRef<Msg>) -> u64 {
    for _ in 0..N {
        actor.send_message(Msg::Inc).expect("send");
    }
    count(actor).await
}

async fn tell_troupe(svc: &ServiceRef<Msg>) -> u64 {
    for _ in 0..N {
        svc.tell(Msg::Inc).expect("tell");
    }
    svc.call(Msg::Count).await.expect("count")
}

async fn count(actor: &ActorRef<Msg>) -> u64 {
    actor.call(Msg::Count, Some(TIMEOUT)).await.expect("send").expect("count")
}

async fn ask_raw(actor: &ActorRef<Msg>) -> ActorId {
    actor.call(Msg::Ping, Some(TIMEOUT)).await.expect("send").expect("reply")
}

async fn ask_troupe(svc: &ServiceRef<Msg>) -> ActorId {
    svc.call(Msg::Ping).await.expect("call")
}

/// Two callers on two tasks, `iters` calls each; the wall time of the whole.
async fn ask_two<F, Fut>(iters: u64, call: F) -> Duration
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ActorId> + Send,
{
    let start = Instant::now();
    let callers: Vec<_> = (0..2)
        .map(|_| {
            let call = call.clone();
            tokio::spawn(async move {
                for _ in 0..iters {
                    black_box(call().await);
                }
            })
        })
        .collect();
    for c in callers {
        c.await.expect("caller");
    }
    start.elapsed()
}

async fn spawn_raw() {
    let (a, join) = Actor::spawn(None, Counter, ()).await.expect("spawn");
    a.stop_and_wait(None, Some(TIMEOUT)).await.expect("stop");
    join.await.expect("join");
}

/// A parent that, unlike ractor's default, keeps running when a linked child exits.
#[derive(Clone, Copy)]
struct Parent;

impl Actor for Parent {
    type Msg = Msg;
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<Msg>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _: ActorRef<Msg>,
        _: ractor::SupervisionEvent,
        _: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        Ok(())
    }
}

/// The structural floor of a one-child tree: a parent actor and a child linked to it, stopped child
/// first.
async fn spawn_raw_pair() {
    let (parent, pjoin) = Actor::spawn(None, Parent, ()).await.expect("spawn parent");
    let (child, cjoin) = Actor::spawn_linked(None, Counter, (), parent.get_cell()).await.expect("spawn child");
    child.stop_and_wait(None, Some(TIMEOUT)).await.expect("stop child");
    cjoin.await.expect("join child");
    parent.stop_and_wait(None, Some(TIMEOUT)).await.expect("stop parent");
    pjoin.await.expect("join parent");
}

async fn spawn_troupe() {
    let root = Supervisor::start_root(one_child("spawnbench"), Registry::new()).await.expect("start tree");
    assert!(root.shutdown(TIMEOUT).await, "graceful shutdown");
}

type Incarnation = Arc<Mutex<Option<(ActorRef<Msg>, JoinHandle<()>)>>>;

/// Hand-rolled restart with raw ractor, the floor: make the actor fail, wait for its exit, spawn a
/// fresh one, and call it.
async fn restart_raw(slot: &Incarnation) -> ActorId {
    let (old, join) = slot.lock().expect("lock").take().expect("incarnation");
    old.send_message(Msg::Fail).expect("send fail");
    join.await.expect("join");
    let (new, join) = Actor::spawn(None, Counter, ()).await.expect("spawn");
    let id = ask_raw(&new).await;
    *slot.lock().expect("lock") = Some((new, join));
    id
}

/// Troupe's restart path: make the supervised child fail, then call through the `ServiceRef` until the
/// new incarnation answers (between incarnations calls fail fast with `Unavailable`/`Stopped`).
async fn restart_troupe(svc: &ServiceRef<Msg>, prev: &Mutex<ActorId>) -> u32 {
    let old = *prev.lock().expect("lock");
    svc.tell(Msg::Fail).expect("tell fail");
    let mut refused = 0;
    loop {
        match svc.call(Msg::Ping).await {
            Ok(id) if id != old => {
                *prev.lock().expect("lock") = id;
                return refused;
            }
            Ok(_) => unreachable!("the failed incarnation handled a message after failing"),
            Err(_) => {
                refused += 1;
                tokio::task::yield_now().await;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// Criterion groups. Every routine runs in a task on the runtime's workers, as real callers do (a caller
// blocked on the bench thread would add two thread wake-ups to every round trip).

fn configure(g: &mut BenchmarkGroup<'_, WallTime>) {
    g.sample_size(20).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(4));
}

/// Time `iters` sequential runs of `op(input.clone())` inside one task on the runtime.
fn on_worker<T, F, Fut>(b: &mut Bencher<'_, WallTime>, rt: &Runtime, input: T, op: F)
where
    T: Clone + Send + 'static,
    F: Fn(T) -> Fut + Clone + Send + 'static,
    Fut: Future + Send,
{
    b.to_async(rt).iter_custom(|iters| {
        let (input, op) = (input.clone(), op.clone());
        async move {
            tokio::spawn(async move {
                let start = Instant::now();
                for _ in 0..iters {
                    black_box(op(input.clone()).await);
                }
                start.elapsed()
            })
            .await
            .expect("bench task")
        }
    });
}

fn bench_tell(c: &mut Criterion) {
    let rt = runtime();
    let fx = Fixture::start(&rt, one_child("tell"));
    let mut g = c.benchmark_group("tell_100k");
    configure(&mut g);
    g.throughput(Throughput::Elements(N));
    g.bench_function("ractor", |b| on_worker(b, &rt, fx.raw.clone(), |a| async move { tell_raw(&a).await }));
    g.bench_function("troupe_actor_ref", |b| {
        on_worker(b, &rt, fx.supervised.clone(), |a| async move { tell_raw(&a).await })
    });
    g.bench_function("troupe", |b| on_worker(b, &rt, fx.svc.clone(), |s| async move { tell_troupe(&s).await }));
    g.finish();
    fx.stop(&rt);
}

fn bench_ask(c: &mut Criterion) {
    let rt = runtime();
    let fx = Fixture::start(&rt, one_child("ask"));
    let mut g = c.benchmark_group("ask");
    configure(&mut g);
    g.throughput(Throughput::Elements(1));
    g.bench_function("ractor", |b| on_worker(b, &rt, fx.raw.clone(), |a| async move { ask_raw(&a).await }));
    g.bench_function("troupe_actor_ref", |b| {
        on_worker(b, &rt, fx.supervised.clone(), |a| async move { ask_raw(&a).await })
    });
    g.bench_function("troupe", |b| on_worker(b, &rt, fx.svc.clone(), |s| async move { ask_troupe(&s).await }));
    g.finish();

    let mut g = c.benchmark_group("ask_2_callers");
    configure(&mut g);
    g.throughput(Throughput::Elements(2));
    g.bench_function("ractor", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let a = fx.raw.clone();
            ask_two(iters, move || {
                let a = a.clone();
                async move { ask_raw(&a).await }
            })
        })
    });
    g.bench_function("troupe", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let s = fx.svc.clone();
            ask_two(iters, move || {
                let s = s.clone();
                async move { ask_troupe(&s).await }
            })
        })
    });
    g.finish();
    fx.stop(&rt);
}

fn bench_spawn(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("spawn_stop");
    configure(&mut g);
    g.bench_function("ractor", |b| on_worker(b, &rt, (), |()| spawn_raw()));
    g.bench_function("ractor_linked_pair", |b| on_worker(b, &rt, (), |()| spawn_raw_pair()));
    g.bench_function("troupe_one_child_tree", |b| on_worker(b, &rt, (), |()| spawn_troupe()));
    g.finish();
}

fn bench_restart(c: &mut Criterion) {
    let rt = runtime();
    let fx = Fixture::start(&rt, restart_spec("restart"));
    let raw: Incarnation =
        Arc::new(Mutex::new(Some(rt.block_on(async { Actor::spawn(None, Counter, ()).await.expect("spawn") }))));
    let prev = Arc::new(Mutex::new(rt.block_on(ask_troupe(&fx.svc))));
    let mut g = c.benchmark_group("restart");
    configure(&mut g);
    g.bench_function("ractor_manual", |b| on_worker(b, &rt, raw.clone(), |r| async move { restart_raw(&r).await }));
    g.bench_function("troupe", |b| {
        let svc = fx.svc.clone();
        on_worker(b, &rt, prev.clone(), move |p| {
            let svc = svc.clone();
            async move { restart_troupe(&svc, &p).await }
        })
    });
    g.finish();
    rt.block_on(async {
        let taken = raw.lock().expect("lock").take();
        if let Some((a, j)) = taken {
            a.stop(None);
            let _ = j.await;
        }
    });
    fx.stop(&rt);
}

criterion_group!(benches, bench_tell, bench_ask, bench_spawn, bench_restart);

// ---------------------------------------------------------------------------------------------------
// Paired pass: baseline and Troupe alternate, so both see the same machine noise.

fn pct(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// One interleaved measurement: `rounds` rounds, each timing every variant once (in order), the first
/// `warmup` rounds dropped. Returns per-variant samples in seconds.
async fn interleave<const V: usize, F, Fut>(rounds: usize, warmup: usize, mut op: F) -> [Vec<f64>; V]
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut out: [Vec<f64>; V] = std::array::from_fn(|_| Vec::with_capacity(rounds));
    for round in 0..rounds + warmup {
        for (v, samples) in out.iter_mut().enumerate() {
            let t = Instant::now();
            op(v).await;
            let dt = t.elapsed().as_secs_f64();
            if round >= warmup {
                samples.push(dt);
            }
        }
    }
    for v in &mut out {
        v.sort_by(f64::total_cmp);
    }
    out
}

fn report(title: &str, unit: &str, scale: f64, names: &[&str], samples: &[Vec<f64>]) {
    println!("{title:<46} {:>9} {:>9} {:>9} {:>9}", "p50", "p10", "p90", "p99");
    for (name, v) in names.iter().zip(samples) {
        println!(
            "  {name:<44} {:>9.3} {:>9.3} {:>9.3} {:>9.3}  {unit}",
            pct(v, 0.5) * scale,
            pct(v, 0.1) * scale,
            pct(v, 0.9) * scale,
            pct(v, 0.99) * scale
        );
    }
    let base = pct(&samples[0], 0.5);
    for (name, v) in names.iter().zip(samples).skip(1) {
        println!("  p50 ratio {name} / {}: {:.3}", names[0], pct(v, 0.5) / base);
    }
}

const TELL_NAMES: [&str; 8] = [
    "ractor send_message",
    "  ablation: ractor + 2 clock reads/msg",
    "  ablation: ractor + shared depth atomic",
    "  ablation: ractor + Instrumented replica",
    "  ablation: replica, clock on 1 msg in 16",
    "  ablation: same, no per-msg depth/gauge",
    "ActorRef to supervised (Instrumented)",
    "troupe ServiceRef::tell",
];
const ASK_NAMES: [&str; 3] =
    ["ractor ActorRef::call", "ActorRef::call to supervised (Instrumented)", "troupe ServiceRef::call"];

/// Batches per second → Melem/s, ascending.
fn rates(times: &[Vec<f64>]) -> Vec<Vec<f64>> {
    times.iter().map(|v| v.iter().rev().map(|t| N as f64 / t / 1e6).collect()).collect()
}

fn paired_tell_ask(rt: &Runtime, fx: &Fixture, batches: usize, calls: usize) -> ([Vec<f64>; 8], [Vec<f64>; 3]) {
    let (raw, sup, svc) = (fx.raw.clone(), fx.supervised.clone(), fx.svc.clone());
    rt.block_on(rt.spawn(async move {
        let mut ablated = Vec::new();
        for extra in [Extra::Clock, Extra::Depth, Extra::Replica, Extra::Sampled, Extra::Lean] {
            let bk = Bookkeeping::new();
            let (a, _join) = Actor::spawn(None, Ablated { extra, bk: bk.clone() }, ()).await.expect("spawn");
            ablated.push((a, bk));
        }
        let ablated = Arc::new(ablated);
        let tell = interleave::<8, _, _>(batches, 3, |v| {
            let (raw, sup, svc, ablated) = (raw.clone(), sup.clone(), svc.clone(), ablated.clone());
            async move {
                black_box(match v {
                    0 => tell_raw(&raw).await,
                    1 => tell_raw(&ablated[0].0).await,
                    2 => tell_counted(&ablated[1].0, &ablated[1].1, false).await,
                    3 | 4 => tell_counted(&ablated[v - 1].0, &ablated[v - 1].1, true).await,
                    5 => tell_raw(&ablated[4].0).await,
                    6 => tell_raw(&sup).await,
                    _ => tell_troupe(&svc).await,
                });
            }
        })
        .await;
        for (a, _) in ablated.iter() {
            a.stop(None);
        }
        let ask = interleave::<3, _, _>(calls, calls / 10, |v| {
            let (raw, sup, svc) = (raw.clone(), sup.clone(), svc.clone());
            async move {
                black_box(match v {
                    0 => ask_raw(&raw).await,
                    1 => ask_raw(&sup).await,
                    _ => ask_troupe(&svc).await,
                });
            }
        })
        .await;
        (tell, ask)
    }))
    .expect("paired task")
}

fn paired() {
    let rt = runtime();
    println!("\n== paired pass: variants alternate round by round, in one task on the runtime ==");
    println!("-- no metrics recorder installed (handles are no-ops) --");
    let fx = Fixture::start(&rt, one_child("paired"));
    let (tell, ask) = paired_tell_ask(&rt, &fx, 25, 50_000);
    fx.stop(&rt);
    report("tell 100k msgs/batch, 25 batches (Melem/s)", "Melem/s", 1.0, &TELL_NAMES, &rates(&tell));
    report("tell 100k, time per batch (ms)", "ms", 1e3, &TELL_NAMES, &tell);
    report("ask, 50k calls each (µs)", "µs", 1e6, &ASK_NAMES, &ask);

    let rfx = Fixture::start(&rt, restart_spec("paired-restart"));
    let rsvc = rfx.svc.clone();
    let (spawn, restart) = rt
        .block_on(rt.spawn(async move {
            let spawn = interleave::<3, _, _>(3_000, 300, |v| async move {
                match v {
                    0 => spawn_raw().await,
                    1 => spawn_raw_pair().await,
                    _ => spawn_troupe().await,
                }
            })
            .await;
            let incarnation: Incarnation =
                Arc::new(Mutex::new(Some(Actor::spawn(None, Counter, ()).await.expect("spawn"))));
            let prev = Mutex::new(ask_troupe(&rsvc).await);
            let restart = interleave::<2, _, _>(3_000, 300, |v| {
                let (incarnation, rsvc, prev) = (incarnation.clone(), rsvc.clone(), &prev);
                async move {
                    match v {
                        0 => {
                            black_box(restart_raw(&incarnation).await);
                        }
                        _ => {
                            black_box(restart_troupe(&rsvc, prev).await);
                        }
                    }
                }
            })
            .await;
            let taken = incarnation.lock().expect("lock").take();
            if let Some((a, j)) = taken {
                a.stop(None);
                let _ = j.await;
            }
            (spawn, restart)
        }))
        .expect("paired task");
    rfx.stop(&rt);
    report(
        "spawn + stop, 3k each (µs)",
        "µs",
        1e6,
        &["ractor spawn+stop", "ractor linked pair", "troupe one-child tree start+shutdown"],
        &spawn,
    );
    report(
        "restart until answered, 3k each (µs)",
        "µs",
        1e6,
        &["ractor manual (fail, join, spawn, call)", "troupe supervisor (Backoff::NONE)"],
        &restart,
    );

    // Last, because a global recorder cannot be removed: the same tell/ask with live metric handles.
    if metrics::set_global_recorder(AtomicRecorder).is_err() {
        println!("(a metrics recorder was already installed; recorder pass skipped)");
        return;
    }
    println!("\n-- with a metrics recorder (atomic counters/gauges as in metrics-exporter-prometheus) --");
    let fx = Fixture::start(&rt, one_child("paired-recorder"));
    let (tell, ask) = paired_tell_ask(&rt, &fx, 15, 20_000);
    fx.stop(&rt);
    report("tell 100k msgs/batch, 15 batches (Melem/s)", "Melem/s", 1.0, &TELL_NAMES, &rates(&tell));
    report("ask, 20k calls each (µs)", "µs", 1e6, &ASK_NAMES, &ask);
}

/// A recorder with the storage metrics-exporter-prometheus uses for counters and gauges (one
/// `AtomicU64` each; gauges are f64 bits updated by CAS); histograms keep an atomic count and sum
/// (Prometheus appends each value to a lock-free bucket, no cheaper).
struct AtomicRecorder;

struct AtomicHistogram {
    count: AtomicU64,
    sum: AtomicU64,
}

impl metrics::HistogramFn for AtomicHistogram {
    fn record(&self, value: f64) {
        self.count.fetch_add(1, Ordering::Relaxed);
        let _ = self
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| Some((f64::from_bits(b) + value).to_bits()));
    }
}

impl metrics::Recorder for AtomicRecorder {
    fn describe_counter(&self, _: metrics::KeyName, _: Option<metrics::Unit>, _: metrics::SharedString) {}
    fn describe_gauge(&self, _: metrics::KeyName, _: Option<metrics::Unit>, _: metrics::SharedString) {}
    fn describe_histogram(&self, _: metrics::KeyName, _: Option<metrics::Unit>, _: metrics::SharedString) {}
    fn register_counter(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        metrics::Counter::from_arc(Arc::new(AtomicU64::new(0)))
    }
    fn register_gauge(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        metrics::Gauge::from_arc(Arc::new(AtomicU64::new(0)))
    }
    fn register_histogram(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Histogram {
        metrics::Histogram::from_arc(Arc::new(AtomicHistogram { count: AtomicU64::new(0), sum: AtomicU64::new(0) }))
    }
}

fn main() {
    // `cargo bench` passes `--bench`; under `cargo test --benches` criterion runs each bench once and
    // the paired pass is skipped.
    let benching = std::env::args().any(|a| a == "--bench");
    let filter: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    benches();
    if benching && (filter.is_empty() || filter.iter().any(|f| "paired".contains(f.as_str()))) {
        paired();
    }
    Criterion::default().configure_from_args().final_summary();
}
