//! Clusters and hosts as workers see them: immutable after construction, so a worker reads
//! them without locks. Per-worker load-balancer state lives in per-slot cells.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use arc_swap::{ArcSwap, Guard};

use strait_config::model::{ClusterSpec, Config};
use strait_stats::{Counter, Gauge, Histogram, HistogramUnit, StatusCounters, Store};

use crate::circuit::{CircuitBreakers, Priority, Resources};
use crate::discovery::DiscoveryState;
use crate::host::{Host, HostHealth};
use crate::lb::{HostSnapshot, LbContext, LbStats};

/// Envoy's cluster stats (`cluster.<name>.*`).
#[derive(Debug)]
pub struct ClusterStats {
    pub upstream_cx_total: Counter,
    pub upstream_cx_active: Gauge,
    pub upstream_cx_connect_fail: Counter,
    pub upstream_cx_connect_timeout: Counter,
    pub upstream_cx_http1_total: Counter,
    pub upstream_cx_http2_total: Counter,
    pub upstream_cx_destroy: Counter,
    pub upstream_cx_idle_timeout: Counter,
    pub upstream_cx_rx_bytes_total: Counter,
    pub upstream_cx_tx_bytes_total: Counter,
    pub upstream_rq_total: Counter,
    pub upstream_rq_active: Gauge,
    pub upstream_rq_completed: Counter,
    pub upstream_rq_timeout: Counter,
    pub upstream_rq_pending_total: Counter,
    pub upstream_rq_pending_failure_eject: Counter,
    pub upstream_rq_rx_reset: Counter,
    pub upstream_rq_tx_reset: Counter,
    pub upstream_cx_none_healthy: Counter,
    pub upstream_cx_protocol_error: Counter,
    pub upstream_rq_per_try_timeout: Counter,
    pub upstream_rq_per_try_idle_timeout: Counter,
    pub upstream_rq_retry: Counter,
    pub upstream_rq_retry_success: Counter,
    pub upstream_rq_retry_overflow: Counter,
    pub upstream_rq_retry_limit_exceeded: Counter,
    pub upstream_rq_retry_backoff_exponential: Counter,
    pub upstream_rq_retry_backoff_ratelimited: Counter,
    pub retry_or_shadow_abandoned: Counter,
    pub upstream_internal_redirect_succeeded_total: Counter,
    pub upstream_internal_redirect_failed_total: Counter,
    pub upstream_rq_time: Histogram,
    pub upstream_cx_length_ms: Histogram,
    pub upstream_cx_connect_ms: Histogram,
    pub membership_healthy: Gauge,
    pub membership_degraded: Gauge,
    pub membership_total: Gauge,
    /// Envoy sets it only when discovery updates a dynamic host list (STRICT_DNS, EDS):
    /// a STATIC, LOGICAL_DNS or ORIGINAL_DST cluster shows 0 whatever its weights. STRICT_DNS
    /// sets it in `discovery::dns`; EDS would use [`ClusterStats::set_max_host_weight`].
    pub max_host_weight: Gauge,
    /// Requests cancelled while waiting for a connection (the request-wide timeout fired or
    /// the client went away before the pool gave one).
    pub upstream_rq_cancelled: Counter,
    /// How connections ended, for the pool to count next to `upstream_cx_destroy`
    /// ([`ClusterStats::record_cx_destroy`]) and `Connection: close` / GOAWAY closes.
    pub upstream_cx_destroy_local: Counter,
    pub upstream_cx_destroy_remote: Counter,
    pub upstream_cx_destroy_with_active_rq: Counter,
    pub upstream_cx_destroy_local_with_active_rq: Counter,
    pub upstream_cx_destroy_remote_with_active_rq: Counter,
    pub upstream_cx_close_notify: Counter,
    /// `default.total_match_count`: hosts given the default transport socket (Envoy resolves
    /// a host's transport socket match once, when the host is created; Strait has no
    /// `transport_socket_matches`, so every host matches `default`). Counted for the
    /// configured hosts by [`ClusterManager::new`], by discovery for the hosts it creates.
    pub default_total_match_count: Counter,
    /// Stats of features Strait does not have (EDS leases, HTTP/3 and 0-RTT,
    /// source-address binding, preconnect, maintenance mode, TCP connect
    /// attempts, queue policies, warming, a cluster's `max_stream_duration`): Envoy shows
    /// them at 0 for such a cluster, so Strait does too, and dashboards and alerts written
    /// for Envoy find them.
    pub assignment_stale: Counter,
    pub assignment_timeout_received: Counter,
    pub assignment_use_cached: Counter,
    pub bind_errors: Counter,
    pub upstream_cx_http3_total: Counter,
    pub upstream_http3_broken: Counter,
    pub upstream_cx_connect_with_0_rtt: Counter,
    pub upstream_rq_0rtt: Counter,
    pub upstream_cx_preconnect_skipped: Counter,
    pub upstream_rq_maintenance_mode: Counter,
    pub upstream_rq_max_duration_reached: Counter,
    pub upstream_cx_connect_attempts_exceeded: Counter,
    pub upstream_queue_overloaded: Gauge,
    pub warming_state: Gauge,
    /// `upstream_rq_<class>xx` and `upstream_rq_<code>`, created on first use (as Envoy).
    codes: StatusCounters,
    /// `external.*`, `internal.*` and `canary.*` response stats (Envoy's code stats by
    /// origin), created on first use.
    external: OriginStats,
    internal: OriginStats,
    canary: OriginStats,
    /// `retry.upstream_rq_<code>`, `retry.upstream_rq_<class>xx`, `retry.upstream_rq_completed`:
    /// the responses that were retried, created on first use like Envoy's.
    retry_codes: StatusCounters,
    retry_completed: OnceLock<Counter>,
    store: Store,
    prefix: String,
}

impl ClusterStats {
    fn new(store: &Store, name: &str) -> Self {
        let p = format!("cluster.{name}.");
        let c = |n: &str| store.counter(&format!("{p}{n}"));
        let g = |n: &str| store.gauge(&format!("{p}{n}"));
        let h = |n: &str| store.histogram(&format!("{p}{n}"), HistogramUnit::Milliseconds);
        ClusterStats {
            upstream_cx_total: c("upstream_cx_total"),
            upstream_cx_active: g("upstream_cx_active"),
            upstream_cx_connect_fail: c("upstream_cx_connect_fail"),
            upstream_cx_connect_timeout: c("upstream_cx_connect_timeout"),
            upstream_cx_http1_total: c("upstream_cx_http1_total"),
            upstream_cx_http2_total: c("upstream_cx_http2_total"),
            upstream_cx_destroy: c("upstream_cx_destroy"),
            upstream_cx_idle_timeout: c("upstream_cx_idle_timeout"),
            upstream_cx_rx_bytes_total: c("upstream_cx_rx_bytes_total"),
            upstream_cx_tx_bytes_total: c("upstream_cx_tx_bytes_total"),
            upstream_rq_total: c("upstream_rq_total"),
            upstream_rq_active: g("upstream_rq_active"),
            upstream_rq_completed: c("upstream_rq_completed"),
            upstream_rq_timeout: c("upstream_rq_timeout"),
            upstream_rq_pending_total: c("upstream_rq_pending_total"),
            upstream_rq_pending_failure_eject: c("upstream_rq_pending_failure_eject"),
            upstream_rq_rx_reset: c("upstream_rq_rx_reset"),
            upstream_rq_tx_reset: c("upstream_rq_tx_reset"),
            upstream_cx_none_healthy: c("upstream_cx_none_healthy"),
            upstream_cx_protocol_error: c("upstream_cx_protocol_error"),
            upstream_rq_per_try_timeout: c("upstream_rq_per_try_timeout"),
            upstream_rq_per_try_idle_timeout: c("upstream_rq_per_try_idle_timeout"),
            upstream_rq_retry: c("upstream_rq_retry"),
            upstream_rq_retry_success: c("upstream_rq_retry_success"),
            upstream_rq_retry_overflow: c("upstream_rq_retry_overflow"),
            upstream_rq_retry_limit_exceeded: c("upstream_rq_retry_limit_exceeded"),
            upstream_rq_retry_backoff_exponential: c("upstream_rq_retry_backoff_exponential"),
            upstream_rq_retry_backoff_ratelimited: c("upstream_rq_retry_backoff_ratelimited"),
            retry_or_shadow_abandoned: c("retry_or_shadow_abandoned"),
            upstream_internal_redirect_succeeded_total: c(
                "upstream_internal_redirect_succeeded_total",
            ),
            upstream_internal_redirect_failed_total: c("upstream_internal_redirect_failed_total"),
            upstream_rq_time: h("upstream_rq_time"),
            upstream_cx_length_ms: h("upstream_cx_length_ms"),
            upstream_cx_connect_ms: h("upstream_cx_connect_ms"),
            membership_healthy: g("membership_healthy"),
            membership_degraded: g("membership_degraded"),
            membership_total: g("membership_total"),
            max_host_weight: g("max_host_weight"),
            upstream_rq_cancelled: c("upstream_rq_cancelled"),
            upstream_cx_destroy_local: c("upstream_cx_destroy_local"),
            upstream_cx_destroy_remote: c("upstream_cx_destroy_remote"),
            upstream_cx_destroy_with_active_rq: c("upstream_cx_destroy_with_active_rq"),
            upstream_cx_destroy_local_with_active_rq: c("upstream_cx_destroy_local_with_active_rq"),
            upstream_cx_destroy_remote_with_active_rq: c(
                "upstream_cx_destroy_remote_with_active_rq",
            ),
            upstream_cx_close_notify: c("upstream_cx_close_notify"),
            default_total_match_count: c("default.total_match_count"),
            assignment_stale: c("assignment_stale"),
            assignment_timeout_received: c("assignment_timeout_received"),
            assignment_use_cached: c("assignment_use_cached"),
            bind_errors: c("bind_errors"),
            upstream_cx_http3_total: c("upstream_cx_http3_total"),
            upstream_http3_broken: c("upstream_http3_broken"),
            upstream_cx_connect_with_0_rtt: c("upstream_cx_connect_with_0_rtt"),
            upstream_rq_0rtt: c("upstream_rq_0rtt"),
            upstream_cx_preconnect_skipped: c("upstream_cx_preconnect_skipped"),
            upstream_rq_maintenance_mode: c("upstream_rq_maintenance_mode"),
            upstream_rq_max_duration_reached: c("upstream_rq_max_duration_reached"),
            upstream_cx_connect_attempts_exceeded: c("upstream_cx_connect_attempts_exceeded"),
            upstream_queue_overloaded: g("upstream_queue_overloaded"),
            warming_state: g("warming_state"),
            codes: StatusCounters::new(store, &p),
            external: OriginStats::new(store, &format!("{p}external.")),
            internal: OriginStats::new(store, &format!("{p}internal.")),
            canary: OriginStats::new(store, &format!("{p}canary.")),
            retry_codes: StatusCounters::new(store, &format!("{p}retry.")),
            retry_completed: OnceLock::new(),
            store: store.clone(),
            prefix: p,
        }
    }

    /// The stats store, for stats a cluster's control tasks create (`health_check.*`,
    /// `outlier_detection.*`).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Counts the response status a request ended with (`upstream_rq_2xx`,
    /// `upstream_rq_200`), and by origin as Envoy's router does: `external.*` or
    /// `internal.*` (`upstream_rq_completed`, class, code), plus `canary.*` for a canary host.
    pub fn record_status(&self, status: u16, origin: RqOrigin) {
        self.codes.record(status);
        self.origin(origin.internal).record_status(status);
        if origin.canary {
            self.canary.record_status(status);
        }
    }

    /// Records a request's upstream time in `upstream_rq_time` and its origin's histograms.
    pub fn record_time(&self, ms: u64, origin: RqOrigin) {
        self.upstream_rq_time.record(ms);
        self.origin(origin.internal).record_time(ms);
        if origin.canary {
            self.canary.record_time(ms);
        }
    }

    fn origin(&self, internal: bool) -> &OriginStats {
        if internal {
            &self.internal
        } else {
            &self.external
        }
    }

    /// Counts how a connection ended, next to `upstream_cx_destroy` (which the caller counts):
    /// `local` when Strait closed it, `active_rq` when requests were still on it.
    pub fn record_cx_destroy(&self, local: bool, active_rq: bool) {
        if local {
            self.upstream_cx_destroy_local.inc();
        } else {
            self.upstream_cx_destroy_remote.inc();
        }
        if active_rq {
            self.upstream_cx_destroy_with_active_rq.inc();
            if local {
                self.upstream_cx_destroy_local_with_active_rq.inc();
            } else {
                self.upstream_cx_destroy_remote_with_active_rq.inc();
            }
        }
    }

    /// `max_host_weight` after discovery replaced a dynamic host list: the largest weight
    /// among the `hosts` of that update, at least 1 (Envoy's `updateDynamicHostList`).
    pub fn set_max_host_weight(&self, hosts: &[Arc<Host>]) {
        let w = hosts.iter().map(|h| h.weight).max().unwrap_or(1).max(1);
        self.max_host_weight.set(i64::from(w));
    }

    /// Counts an upstream response that was retried instead of being sent downstream, as
    /// Envoy's router does (`retry.upstream_rq_503`, `retry.upstream_rq_5xx`,
    /// `retry.upstream_rq_completed`); `upstream_rq_<code>` only counts the final response.
    pub fn record_retried_status(&self, status: u16) {
        self.retry_codes.record(status);
        self.retry_completed
            .get_or_init(|| {
                self.store
                    .counter(&format!("{}retry.upstream_rq_completed", self.prefix))
            })
            .inc();
    }
}

/// Where a request came from, for the `internal.` / `external.` / `canary.` code stats.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RqOrigin {
    /// The request carried `x-envoy-internal: true` (Envoy's internal request).
    pub internal: bool,
    /// The upstream host is a canary (`envoy.lb` metadata `canary: true`).
    pub canary: bool,
}

impl RqOrigin {
    /// Envoy's internal-request test: the request carries `x-envoy-internal: true`.
    pub fn is_internal(h: &http::HeaderMap) -> bool {
        h.get("x-envoy-internal")
            .is_some_and(|v| v.as_bytes() == b"true")
    }
}

/// One origin's response stats (`<prefix>upstream_rq_completed`, `..._<class>xx`,
/// `..._<code>`, `..._time`), created on first use like Envoy's.
#[derive(Debug)]
struct OriginStats {
    codes: StatusCounters,
    completed: OnceLock<Counter>,
    time: OnceLock<Histogram>,
    store: Store,
    prefix: String,
}

impl OriginStats {
    fn new(store: &Store, prefix: &str) -> Self {
        OriginStats {
            codes: StatusCounters::new(store, prefix),
            completed: OnceLock::new(),
            time: OnceLock::new(),
            store: store.clone(),
            prefix: prefix.to_string(),
        }
    }

    fn record_status(&self, status: u16) {
        self.completed
            .get_or_init(|| {
                self.store
                    .counter(&format!("{}upstream_rq_completed", self.prefix))
            })
            .inc();
        self.codes.record(status);
    }

    fn record_time(&self, ms: u64) {
        self.time
            .get_or_init(|| {
                self.store.histogram(
                    &format!("{}upstream_rq_time", self.prefix),
                    HistogramUnit::Milliseconds,
                )
            })
            .record(ms);
    }
}

#[derive(Debug)]
pub struct Cluster {
    pub spec: Arc<ClusterSpec>,
    pub name: Arc<str>,
    pub stats: ClusterStats,
    /// The hosts and their load balancer, swapped whole when membership or health changes.
    snapshot: ArcSwap<HostSnapshot>,
    /// Worker slots, for per-worker load-balancer state.
    slots: usize,
    /// Load-balancer stats, shared by every snapshot.
    lb_stats: Arc<LbStats>,
    /// The outlier detector's success-rate figures, for `/clusters`.
    pub outlier_rates: Arc<crate::outlier::ClusterRates>,
    /// Circuit breakers (`circuit_breakers`) and their overflow stats.
    pub breakers: CircuitBreakers,
    /// Discovery stats and state (ORIGINAL_DST's host map).
    pub discovery: DiscoveryState,
}

impl Cluster {
    pub fn new(spec: Arc<ClusterSpec>, store: &Store, slots: usize) -> Self {
        let stats = ClusterStats::new(store, &spec.name);
        // DNS and ORIGINAL_DST clusters start empty: discovery adds their hosts.
        let hosts: Vec<Arc<Host>> = if spec.discovery.hosts_from_config() {
            spec.endpoints
                .iter()
                .map(|e| {
                    let h = Arc::new(Host::new(e, e.address, store));
                    crate::health::prepare_host(&spec, &h);
                    h
                })
                .collect()
        } else {
            Vec::new()
        };
        let breakers = CircuitBreakers::new(&spec.circuit_breakers, store, &spec.name);
        let discovery = DiscoveryState::new(&spec, store);
        let lb_stats = Arc::new(LbStats::new(
            store,
            &spec.name,
            slots,
            spec.subset.is_some(),
        ));
        let snapshot = HostSnapshot::build(hosts, &spec, slots).with_stats(lb_stats.clone());
        lb_stats.record_rebuild(None, &snapshot);
        let c = Cluster {
            name: Arc::from(spec.name.as_str()),
            spec,
            stats,
            snapshot: ArcSwap::from_pointee(snapshot),
            slots,
            outlier_rates: Arc::default(),
            lb_stats,
            breakers,
            discovery,
        };
        c.publish_membership_stats(&c.snapshot.load());
        if !c.snapshot.load().hosts.is_empty() {
            // Envoy counts a STATIC cluster's initial hosts as one membership change.
            c.discovery.stats.membership_change.inc();
        }
        c
    }

    /// The current hosts (a cheap, lock-free load; hold it only briefly).
    pub fn snapshot(&self) -> Guard<Arc<HostSnapshot>> {
        self.snapshot.load()
    }

    /// Every host of the current snapshot, in discovery order.
    pub fn hosts(&self) -> Vec<Arc<Host>> {
        self.snapshot.load().hosts.clone()
    }

    /// Replaces the host set (discovery found new membership). Hosts that stay should be
    /// passed as the same `Arc`s so their stats and health carry over.
    pub fn set_hosts(&self, hosts: Vec<Arc<Host>>) {
        let snap =
            HostSnapshot::build(hosts, &self.spec, self.slots).with_stats(self.lb_stats.clone());
        self.lb_stats
            .record_rebuild(Some(&self.snapshot.load()), &snap);
        self.publish_membership_stats(&snap);
        self.snapshot.store(Arc::new(snap));
    }

    /// Rebuilds the snapshot after a host's health flags changed.
    pub fn refresh(&self) {
        self.set_hosts(self.hosts());
    }

    fn publish_membership_stats(&self, snap: &HostSnapshot) {
        let s = &self.stats;
        s.membership_total.set(snap.hosts.len() as i64);
        s.membership_healthy.set(
            snap.hosts
                .iter()
                .filter(|h| h.health() == HostHealth::Healthy)
                .count() as i64,
        );
        s.membership_degraded.set(
            snap.hosts
                .iter()
                .filter(|h| h.health() == HostHealth::Degraded)
                .count() as i64,
        );
    }

    /// The circuit-breaker resources of a routing priority.
    pub fn resources(&self, p: Priority) -> &Resources {
        self.breakers.get(p)
    }

    /// Takes a slot of the cluster's retry circuit breaker (`max_retries` or
    /// `retry_budget`, DEFAULT priority). `false` when it is full: the retry overflows
    /// (`upstream_rq_retry_overflow`).
    pub fn try_start_retry(&self) -> bool {
        self.try_start_retry_at(Priority::Default)
    }

    /// [`Cluster::try_start_retry`] for the route's priority.
    pub fn try_start_retry_at(&self, p: Priority) -> bool {
        match self.resources(p).try_retry() {
            Some(slot) => {
                slot.forget();
                true
            }
            None => false,
        }
    }

    /// Gives back a slot taken by [`Cluster::try_start_retry`].
    pub fn end_retry(&self) {
        self.end_retry_at(Priority::Default);
    }

    /// Gives back a slot taken by [`Cluster::try_start_retry_at`].
    pub fn end_retry_at(&self, p: Priority) {
        self.resources(p).end_retry();
    }

    /// Retries currently holding a circuit-breaker slot (DEFAULT priority).
    pub fn retries_active(&self) -> u32 {
        self.resources(Priority::Default).retries_active() as u32
    }

    /// Picks a host for a request. No lock, no allocation (one reference-count increment;
    /// an ORIGINAL_DST cluster allocates once per new destination).
    pub fn choose_host(&self, ctx: &LbContext<'_>) -> Option<Arc<Host>> {
        if let Some(od) = &self.discovery.original_dst {
            return ctx.original_dst.and_then(|dst| od.choose(self, dst));
        }
        self.snapshot.load().choose(ctx).cloned()
    }

    /// Waits until the cluster knows its first host set (Envoy's cluster initialization:
    /// a DNS cluster after every name's first resolution, success or failure; others at
    /// once). Envoy starts its listeners only after every cluster initialized.
    pub async fn initialized(&self) {
        self.discovery.init.wait().await;
    }

    /// The destination an ORIGINAL_DST cluster would use for a request (`None` for other
    /// cluster types): fill [`LbContext::original_dst`] with it.
    pub fn original_dst(
        &self,
        headers: &http::HeaderMap,
        restored_local: Option<std::net::SocketAddr>,
    ) -> Option<std::net::SocketAddr> {
        self.discovery
            .original_dst
            .as_ref()
            .and_then(|od| od.destination(self, headers, restored_local))
    }
}

/// Every cluster of one config version, by name.
#[derive(Debug, Default)]
pub struct ClusterManager {
    pub clusters: HashMap<Arc<str>, Arc<Cluster>>,
    /// Config order, for `/clusters`.
    pub order: Vec<Arc<Cluster>>,
}

impl ClusterManager {
    pub fn new(config: &Config, store: &Store, slots: usize) -> Self {
        let mut cm = ClusterManager::default();
        for spec in &config.clusters {
            let c = Arc::new(Cluster::new(spec.clone(), store, slots));
            c.stats
                .default_total_match_count
                .add(c.hosts().len() as u64);
            cm.clusters.insert(c.name.clone(), c.clone());
            cm.order.push(c);
        }
        store
            .gauge("cluster_manager.active_clusters")
            .set(cm.order.len() as i64);
        // The rest of Envoy's cluster manager stats: static clusters are added once; CDS
        // (modify, remove, merged updates) and warming do not exist in Strait.
        store
            .counter("cluster_manager.cluster_added")
            .add(cm.order.len() as u64);
        for n in [
            "cluster_modified",
            "cluster_removed",
            "cluster_updated",
            "cluster_updated_via_merge",
            "update_merge_cancelled",
            "update_out_of_merge_window",
        ] {
            store.counter(&format!("cluster_manager.{n}"));
        }
        store.gauge("cluster_manager.warming_clusters");
        cm
    }

    /// Starts every cluster's control work (discovery, active health checking, outlier
    /// detection) on the current runtime: call it on the control thread.
    pub fn start_control_tasks(&self) {
        for c in &self.order {
            crate::discovery::start(c);
            crate::health::start(c);
            crate::outlier::start(c);
        }
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Cluster>> {
        self.clusters.get(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(store: &Store) -> Cluster {
        let spec = ClusterSpec::static_http1(
            "c",
            &[
                "127.0.0.1:1".parse().expect("addr"),
                "127.0.0.1:2".parse().expect("addr"),
            ],
        );
        Cluster::new(Arc::new(spec), store, 1)
    }

    #[test]
    fn codes_are_counted_by_origin_and_created_on_first_use() {
        let store = Store::new(1);
        let c = cluster(&store);
        let v = |n: &str| store.counter_value(&format!("cluster.c.{n}"));
        assert_eq!(v("upstream_rq_2xx"), None);
        c.stats.record_status(200, RqOrigin::default());
        c.stats.record_status(
            503,
            RqOrigin {
                internal: true,
                canary: true,
            },
        );
        assert_eq!(v("upstream_rq_200"), Some(1));
        assert_eq!(v("upstream_rq_5xx"), Some(1));
        assert_eq!(v("upstream_rq_4xx"), None);
        assert_eq!(v("external.upstream_rq_200"), Some(1));
        assert_eq!(v("external.upstream_rq_completed"), Some(1));
        assert_eq!(v("external.upstream_rq_503"), None);
        assert_eq!(v("internal.upstream_rq_503"), Some(1));
        assert_eq!(v("internal.upstream_rq_5xx"), Some(1));
        assert_eq!(v("canary.upstream_rq_503"), Some(1));
        assert_eq!(v("canary.upstream_rq_completed"), Some(1));
    }

    #[test]
    fn connection_ends_split_by_side_and_active_requests() {
        let store = Store::new(1);
        let c = cluster(&store);
        c.stats.record_cx_destroy(true, false);
        c.stats.record_cx_destroy(false, true);
        let v = |n: &str| store.counter_value(&format!("cluster.c.{n}"));
        assert_eq!(v("upstream_cx_destroy_local"), Some(1));
        assert_eq!(v("upstream_cx_destroy_remote"), Some(1));
        assert_eq!(v("upstream_cx_destroy_with_active_rq"), Some(1));
        assert_eq!(v("upstream_cx_destroy_local_with_active_rq"), Some(0));
        assert_eq!(v("upstream_cx_destroy_remote_with_active_rq"), Some(1));
    }

    #[test]
    fn max_host_weight_is_only_set_by_discovery() {
        let store = Store::new(1);
        let c = cluster(&store);
        // A STATIC cluster: 0, whatever the weights (Envoy's value).
        assert_eq!(store.gauge_value("cluster.c.max_host_weight"), Some(0));
        c.refresh();
        assert_eq!(store.gauge_value("cluster.c.max_host_weight"), Some(0));
        c.stats.set_max_host_weight(&c.hosts());
        assert_eq!(store.gauge_value("cluster.c.max_host_weight"), Some(1));
    }
}
