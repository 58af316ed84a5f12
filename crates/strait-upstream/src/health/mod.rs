//! Active health checking: probes each host of a cluster on the control thread and flips the
//! host's `FAILED_ACTIVE_HC` flag; workers see the result in the next snapshot.
//!
//! One task per host runs the probe ([`Prober`]: HTTP, TCP, gRPC or Redis) every interval and
//! feeds the result to its [`Session`], which applies Envoy's thresholds. A supervisor task
//! per cluster follows membership. Hosts start failed (`FAILED_ACTIVE_HC`) and the first
//! result decides at once, as in Envoy.

mod event;
mod grpc;
mod http;
mod redis;
mod session;
mod tcp;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use strait_config::cluster::health::{CheckKind, HealthCheckSpec};
use strait_config::route::matcher::random_u64;
use strait_stats::{Counter, Gauge, Store};
use tokio::sync::Notify;

use crate::health_flag;
use crate::{Cluster, Host};
pub use session::{FailureType, Session, Transition, next_interval};

/// Envoy's `cluster.<name>.health_check.*` stats.
#[derive(Debug)]
pub struct Stats {
    pub attempt: Counter,
    pub success: Counter,
    pub failure: Counter,
    pub network_failure: Counter,
    pub passive_failure: Counter,
    pub verify_cluster: Counter,
    pub healthy: Gauge,
    pub degraded: Gauge,
}

impl Stats {
    pub fn new(store: &Store, cluster: &str) -> Stats {
        let p = format!("cluster.{cluster}.health_check.");
        let c = |n: &str| store.counter(&format!("{p}{n}"));
        Stats {
            attempt: c("attempt"),
            success: c("success"),
            failure: c("failure"),
            network_failure: c("network_failure"),
            passive_failure: c("passive_failure"),
            verify_cluster: c("verify_cluster"),
            healthy: store.gauge(&format!("{p}healthy")),
            degraded: store.gauge(&format!("{p}degraded")),
        }
    }
}

/// What a host's health-check task listens to from other threads.
#[derive(Debug, Default)]
pub struct HostHook {
    wake: OnceLock<Arc<Notify>>,
    /// A worker saw `x-envoy-immediate-health-check-fail` from this host.
    passive_fail: AtomicBool,
    /// The first check of this host has completed.
    first_done: AtomicBool,
}

/// Wakes whoever waits in [`initialized`] when a host completes its first check.
static FIRST_CHECKS: Notify = Notify::const_new();

/// The outcome of one probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Healthy {
        degraded: bool,
    },
    /// The host answered, wrongly (Envoy's `ACTIVE` failure).
    Failed {
        retriable: bool,
        /// HTTP status, 0 when not HTTP.
        status: u16,
        /// The response carried `x-envoy-immediate-health-check-fail`.
        immediate: bool,
    },
    /// Connecting or the exchange failed (`NETWORK`).
    Network,
}

/// A new host of a cluster with health checks starts failed until its first check passes
/// (Envoy). Discovery calls this for hosts it adds, before publishing them.
pub fn prepare_new_host(cluster: &Cluster, host: &Host) {
    prepare_host(&cluster.spec, host);
}

/// [`prepare_new_host`] for a cluster being built.
pub fn prepare_host(spec: &strait_config::model::ClusterSpec, host: &Host) {
    if !spec.health_checks.is_empty() {
        host.set_health_flag(health_flag::FAILED_ACTIVE_HC, true);
    }
}

/// The router saw `x-envoy-immediate-health-check-fail` in a response from `host`: with
/// active health checking the host is excluded at once and fails (Envoy's passive failure).
/// Cheap on a worker: an atomic flag and a wake-up; the control task does the rest.
pub fn on_immediate_fail(cluster: &Cluster, host: &Host) {
    if cluster.spec.health_checks.is_empty() {
        return;
    }
    host.set_health_flag(health_flag::EXCLUDED_VIA_IMMEDIATE_HC_FAIL, true);
    host.health_check
        .passive_fail
        .store(true, Ordering::Release);
    if let Some(w) = host.health_check.wake.get() {
        w.notify_one();
    }
}

/// Resolves once every current host of `cluster` has completed its first health check (at
/// once without health checks): Envoy holds server initialization until then.
pub async fn initialized(cluster: &Cluster) {
    if cluster.spec.health_checks.is_empty() {
        return;
    }
    loop {
        let notified = FIRST_CHECKS.notified();
        if cluster
            .hosts()
            .iter()
            .all(|h| h.health_check.first_done.load(Ordering::Acquire))
        {
            return;
        }
        // Hosts can also change without a check completing: look again now and then.
        let _ = tokio::time::timeout(Duration::from_millis(100), notified).await;
    }
}

/// Starts health checking of `cluster` on the current (control) runtime, if it has
/// `health_checks`.
pub fn start(cluster: &Arc<Cluster>) {
    let Some(spec) = cluster.spec.health_checks.first().cloned() else {
        return;
    };
    let shared = Arc::new(Shared {
        stats: Stats::new(cluster.stats.store(), &cluster.name),
        events: spec
            .event_log_path
            .as_deref()
            .and_then(|p| event::EventLog::open(p, &cluster.name)),
        spec,
    });
    for h in cluster.hosts() {
        prepare_new_host(cluster, &h);
    }
    cluster.refresh();
    let weak = Arc::downgrade(cluster);
    tokio::spawn(supervise(weak, shared));
}

/// What every host task of one cluster shares.
struct Shared {
    spec: HealthCheckSpec,
    stats: Stats,
    events: Option<event::EventLog>,
}

/// Starts a task per host and stops it when the host leaves the cluster.
async fn supervise(weak: Weak<Cluster>, shared: Arc<Shared>) {
    let mut tasks: HashMap<u64, tokio::task::JoinHandle<()>> = HashMap::new();
    loop {
        let Some(cluster) = weak.upgrade() else {
            break;
        };
        let hosts = cluster.hosts();
        drop(cluster);
        tasks.retain(|id, t| {
            let keep = hosts.iter().any(|h| h.id == *id);
            if !keep {
                t.abort();
            }
            keep
        });
        for h in hosts {
            tasks
                .entry(h.id)
                .or_insert_with(|| tokio::spawn(run_host(weak.clone(), h.clone(), shared.clone())));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    for (_, t) in tasks {
        t.abort();
    }
}

fn random_below(n: u64) -> u64 {
    if n == 0 { 0 } else { random_u64() % n }
}

fn had_traffic(c: &Cluster) -> bool {
    let s = &c.stats;
    s.upstream_cx_total.used()
        || s.upstream_cx_tx_bytes_total.used()
        || s.upstream_cx_rx_bytes_total.used()
}

/// One host's checks, forever (aborted by the supervisor when the host goes away).
async fn run_host(weak: Weak<Cluster>, host: Arc<Host>, shared: Arc<Shared>) {
    let spec = &shared.spec;
    let wake = host
        .health_check
        .wake
        .get_or_init(|| Arc::new(Notify::new()))
        .clone();
    let mut session = Session::new(&host, &shared.stats);
    let mut prober = match weak.upgrade() {
        Some(c) => Prober::new(spec, &c, &host),
        None => return,
    };
    let jitter = spec.initial_jitter.as_millis() as u64;
    let mut delay = if jitter == 0 {
        Duration::ZERO
    } else {
        Duration::from_millis(random_below(jitter).max(1))
    };
    loop {
        let deadline = tokio::time::Instant::now() + delay;
        // Wait for the next check; a passive failure reported by a worker is applied on
        // the way without moving the timer (as Envoy).
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => break,
                _ = wake.notified() => {
                    if host.health_check.passive_fail.swap(false, Ordering::AcqRel) {
                        let mut out = session.on_failure(&host, spec, &shared.stats, FailureType::Passive, false);
                        // The exclusion flag set by the worker is published even when the
                        // host was already failed.
                        out.transition = Transition::Changed;
                        apply(&weak, &host, &shared, &out);
                    }
                }
            }
        }
        shared.stats.attempt.inc();
        let verdict = match tokio::time::timeout(spec.timeout, prober.probe(&shared.stats)).await {
            Ok(v) => Some(v),
            Err(_) => {
                prober.reset();
                None
            }
        };
        let out = match verdict {
            Some(Verdict::Healthy { degraded }) => {
                session.on_success(&host, spec, &shared.stats, degraded)
            }
            Some(Verdict::Failed {
                retriable,
                status,
                immediate,
            }) => {
                if immediate {
                    host.set_health_flag(health_flag::EXCLUDED_VIA_IMMEDIATE_HC_FAIL, true);
                }
                let mut o =
                    session.on_failure(&host, spec, &shared.stats, FailureType::Active, retriable);
                o.http_status = status;
                o
            }
            Some(Verdict::Network) => {
                session.on_failure(&host, spec, &shared.stats, FailureType::Network, false)
            }
            None => session.on_failure(
                &host,
                spec,
                &shared.stats,
                FailureType::NetworkTimeout,
                false,
            ),
        };
        if !host.health_check.first_done.swap(true, Ordering::AcqRel) {
            FIRST_CHECKS.notify_waiters();
        }
        let traffic = match weak.upgrade() {
            Some(c) => had_traffic(&c),
            None => return,
        };
        apply(&weak, &host, &shared, &out);
        delay = next_interval(
            spec,
            traffic,
            out.healthy_result,
            out.transition,
            random_below,
        );
    }
}

/// Publishes a session result: events, outlier unejection, snapshot rebuild.
fn apply(weak: &Weak<Cluster>, host: &Arc<Host>, shared: &Shared, out: &session::Output) {
    if let Some(log) = &shared.events {
        for e in &out.events {
            log.write(shared.spec.kind.type_name(), host, e, out.http_status);
        }
    }
    if out.healthy_result {
        crate::outlier::on_active_hc_success(host);
    }
    if out.transition == Transition::Changed
        && let Some(c) = weak.upgrade()
    {
        c.refresh();
    }
}

/// A probe of one host, with the connection it may keep between checks.
enum Prober {
    Http(http::Prober),
    Tcp(tcp::Prober),
    Grpc(grpc::Prober),
    Redis(redis::Prober),
}

impl Prober {
    fn new(spec: &HealthCheckSpec, cluster: &Cluster, host: &Host) -> Prober {
        let reuse = spec.reuse_connection;
        match &spec.kind {
            CheckKind::Http(h) => Prober::Http(http::Prober::new(
                h.clone(),
                &cluster.name,
                host.address,
                reuse,
            )),
            CheckKind::Tcp(t) => Prober::Tcp(tcp::Prober::new(t.clone(), host.address, reuse)),
            CheckKind::Grpc(g) => Prober::Grpc(grpc::Prober::new(
                g.clone(),
                &cluster.name,
                host.address,
                reuse,
                spec.timeout,
            )),
            CheckKind::Redis(r) => {
                Prober::Redis(redis::Prober::new(r.clone(), host.address, reuse))
            }
        }
    }

    async fn probe(&mut self, stats: &Stats) -> Verdict {
        match self {
            Prober::Http(p) => p.probe(stats).await,
            Prober::Tcp(p) => p.probe().await,
            Prober::Grpc(p) => p.probe().await,
            Prober::Redis(p) => p.probe().await,
        }
    }

    /// Drops the connection (after a timeout, as Envoy closes it).
    fn reset(&mut self) {
        match self {
            Prober::Http(p) => p.reset(),
            Prober::Tcp(p) => p.reset(),
            Prober::Grpc(p) => p.reset(),
            Prober::Redis(p) => p.reset(),
        }
    }
}
