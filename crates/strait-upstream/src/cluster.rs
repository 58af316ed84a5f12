//! Clusters and hosts as workers see them: immutable after construction, so a worker reads
//! them without locks. Per-worker load-balancer state lives in per-slot cells.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use strait_config::model::{ClusterSpec, Config};
use strait_stats::{Counter, Gauge, Histogram, HistogramUnit, Store};

static NEXT_HOST_ID: AtomicU64 = AtomicU64::new(1);

/// Envoy's default `max_retries` circuit-breaker threshold: retries in progress at once per
/// cluster (circuit breaker configuration belongs to the cluster-manager work; until then
/// every cluster has Envoy's default).
pub const DEFAULT_MAX_RETRIES: u32 = 3;

/// Stats of one host, shown by `/clusters`.
#[derive(Debug)]
pub struct HostStats {
    pub cx_total: Counter,
    pub cx_active: Gauge,
    pub cx_connect_fail: Counter,
    pub rq_total: Counter,
    pub rq_active: Gauge,
    pub rq_success: Counter,
    pub rq_error: Counter,
    pub rq_timeout: Counter,
}

#[derive(Debug)]
pub struct Host {
    /// Process-unique id: the key of this host's idle connections in a worker's pool.
    pub id: u64,
    pub address: SocketAddr,
    pub weight: u32,
    pub hostname: String,
    pub stats: HostStats,
}

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
    pub upstream_rq_time: Histogram,
    pub upstream_cx_length_ms: Histogram,
    pub upstream_cx_connect_ms: Histogram,
    pub membership_healthy: Gauge,
    pub membership_total: Gauge,
    pub max_host_weight: Gauge,
    rq_class: [Counter; 5],
    /// `upstream_rq_<code>`, created on first use per code (Envoy creates them lazily too).
    rq_code: Box<[OnceLock<Counter>]>,
    /// `retry.upstream_rq_<code>`, `retry.upstream_rq_<class>xx`, `retry.upstream_rq_completed`:
    /// the responses that were retried, created on first use like Envoy's.
    retry_code: Box<[OnceLock<Counter>]>,
    retry_class: [OnceLock<Counter>; 5],
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
            upstream_rq_time: h("upstream_rq_time"),
            upstream_cx_length_ms: h("upstream_cx_length_ms"),
            upstream_cx_connect_ms: h("upstream_cx_connect_ms"),
            membership_healthy: g("membership_healthy"),
            membership_total: g("membership_total"),
            max_host_weight: g("max_host_weight"),
            rq_class: [
                c("upstream_rq_1xx"),
                c("upstream_rq_2xx"),
                c("upstream_rq_3xx"),
                c("upstream_rq_4xx"),
                c("upstream_rq_5xx"),
            ],
            rq_code: (100..600).map(|_| OnceLock::new()).collect(),
            retry_code: (100..600).map(|_| OnceLock::new()).collect(),
            retry_class: Default::default(),
            retry_completed: OnceLock::new(),
            store: store.clone(),
            prefix: p,
        }
    }

    /// Counts a response status from the upstream (`upstream_rq_2xx`, `upstream_rq_200`).
    pub fn record_status(&self, status: u16) {
        if let Some(c) = (status / 100)
            .checked_sub(1)
            .and_then(|i| self.rq_class.get(i as usize))
        {
            c.inc();
        }
        if let Some(slot) = status
            .checked_sub(100)
            .and_then(|i| self.rq_code.get(i as usize))
        {
            slot.get_or_init(|| {
                self.store
                    .counter(&format!("{}upstream_rq_{status}", self.prefix))
            })
            .inc();
        }
    }

    /// Counts an upstream response that was retried instead of being sent downstream, as
    /// Envoy's router does (`retry.upstream_rq_503`, `retry.upstream_rq_5xx`,
    /// `retry.upstream_rq_completed`); `upstream_rq_<code>` only counts the final response.
    pub fn record_retried_status(&self, status: u16) {
        let p = &self.prefix;
        if let Some(i) = (status / 100).checked_sub(1).map(usize::from)
            && let Some(slot) = self.retry_class.get(i)
        {
            slot.get_or_init(|| {
                self.store
                    .counter(&format!("{p}retry.upstream_rq_{}xx", i + 1))
            })
            .inc();
        }
        if let Some(slot) = status
            .checked_sub(100)
            .and_then(|i| self.retry_code.get(i as usize))
        {
            slot.get_or_init(|| {
                self.store
                    .counter(&format!("{p}retry.upstream_rq_{status}"))
            })
            .inc();
        }
        self.retry_completed
            .get_or_init(|| {
                self.store
                    .counter(&format!("{p}retry.upstream_rq_completed"))
            })
            .inc();
    }
}

/// One worker slot's round-robin cursor, on its own cache line.
#[repr(align(64))]
#[derive(Debug, Default)]
struct Cursor(AtomicUsize);

#[derive(Debug)]
pub struct Cluster {
    pub spec: Arc<ClusterSpec>,
    pub name: Arc<str>,
    pub hosts: Vec<Arc<Host>>,
    pub stats: ClusterStats,
    /// Smooth weighted round-robin order of host indexes (one entry per host when the
    /// weights are equal). Each worker walks it with its own cursor.
    schedule: Vec<u32>,
    cursors: Box<[Cursor]>,
    /// Retries in progress (scheduled or running), for the `max_retries` circuit breaker.
    retries_active: AtomicU32,
}

impl Cluster {
    pub fn new(spec: Arc<ClusterSpec>, store: &Store, slots: usize) -> Self {
        let stats = ClusterStats::new(store, &spec.name);
        let hosts: Vec<Arc<Host>> = spec
            .endpoints
            .iter()
            .map(|e| {
                // Host stats are shown by /clusters, not /stats: kept out of the store.
                Arc::new(Host {
                    id: NEXT_HOST_ID.fetch_add(1, Ordering::Relaxed),
                    address: e.address,
                    weight: e.weight,
                    hostname: e.hostname.clone(),
                    stats: HostStats {
                        cx_total: store.unlisted_counter("cx_total"),
                        cx_active: store.unlisted_gauge("cx_active"),
                        cx_connect_fail: store.unlisted_counter("cx_connect_fail"),
                        rq_total: store.unlisted_counter("rq_total"),
                        rq_active: store.unlisted_gauge("rq_active"),
                        rq_success: store.unlisted_counter("rq_success"),
                        rq_error: store.unlisted_counter("rq_error"),
                        rq_timeout: store.unlisted_counter("rq_timeout"),
                    },
                })
            })
            .collect();
        stats.membership_total.set(hosts.len() as i64);
        stats.membership_healthy.set(hosts.len() as i64);
        stats
            .max_host_weight
            .set(hosts.iter().map(|h| h.weight).max().unwrap_or(0) as i64);
        let schedule =
            smooth_weighted_schedule(&hosts.iter().map(|h| h.weight).collect::<Vec<_>>());
        let cursors = (0..slots.max(1))
            .map(|i| Cursor(AtomicUsize::new(i)))
            .collect();
        Cluster {
            name: Arc::from(spec.name.as_str()),
            spec,
            hosts,
            stats,
            schedule,
            cursors,
            retries_active: AtomicU32::new(0),
        }
    }

    /// Takes a slot of the cluster's retry circuit breaker (`max_retries`, Envoy's default
    /// 3). `false` when it is full: the retry overflows (`upstream_rq_retry_overflow`).
    pub fn try_start_retry(&self) -> bool {
        self.retries_active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < DEFAULT_MAX_RETRIES).then_some(n + 1)
            })
            .is_ok()
    }

    /// Gives back a slot taken by [`Cluster::try_start_retry`].
    pub fn end_retry(&self) {
        let _ = self
            .retries_active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }

    /// Retries currently holding a circuit-breaker slot.
    pub fn retries_active(&self) -> u32 {
        self.retries_active.load(Ordering::Acquire)
    }

    /// Picks the next host for this worker. No lock, no allocation.
    pub fn choose_host(&self) -> Option<&Arc<Host>> {
        if self.schedule.is_empty() {
            return None;
        }
        let slot = strait_stats::thread_slot();
        let cursor = &self.cursors[slot % self.cursors.len()].0;
        // Only this worker writes its cursor: a relaxed load/store pair is enough.
        let i = cursor.load(Ordering::Relaxed);
        cursor.store(i.wrapping_add(1), Ordering::Relaxed);
        let h = self.schedule[i % self.schedule.len()] as usize;
        self.hosts.get(h)
    }

    /// Host selection for a retry with Envoy's `previous_hosts` predicate: picks up to
    /// `1 + extra_attempts` times and returns the first host not in `attempted` (host ids),
    /// or the last one picked when every pick was already attempted (as Envoy does).
    pub fn choose_host_avoiding(
        &self,
        attempted: &[u64],
        extra_attempts: u32,
    ) -> Option<&Arc<Host>> {
        let mut last = None;
        for _ in 0..=extra_attempts {
            let h = self.choose_host()?;
            if !attempted.contains(&h.id) {
                return Some(h);
            }
            last = Some(h);
        }
        last
    }
}

/// Nginx-style smooth weighted round robin, unrolled into a fixed schedule. Large weight
/// sums are scaled down to keep the schedule under 64 K entries.
fn smooth_weighted_schedule(weights: &[u32]) -> Vec<u32> {
    if weights.is_empty() {
        return Vec::new();
    }
    let first = weights[0];
    if weights.iter().all(|w| *w == first) {
        return (0..weights.len() as u32).collect();
    }
    let total: u64 = weights.iter().map(|w| *w as u64).sum();
    let scale = total.div_ceil(65_536).max(1);
    let w: Vec<i64> = weights
        .iter()
        .map(|x| ((*x as u64 / scale).max(1)) as i64)
        .collect();
    let total: i64 = w.iter().sum();
    let mut current = vec![0i64; w.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for i in 0..w.len() {
            current[i] += w[i];
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        out.push(best as u32);
    }
    out
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
            cm.clusters.insert(c.name.clone(), c.clone());
            cm.order.push(c);
        }
        store
            .gauge("cluster_manager.active_clusters")
            .set(cm.order.len() as i64);
        cm
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Cluster>> {
        self.clusters.get(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smooth_schedule_respects_weights() {
        let s = smooth_weighted_schedule(&[5, 1, 1]);
        assert_eq!(s.len(), 7);
        assert_eq!(s.iter().filter(|i| **i == 0).count(), 5);
        // Smooth: the heavy host is not picked five times in a row.
        assert_eq!(s, vec![0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(smooth_weighted_schedule(&[1, 1, 1]), vec![0, 1, 2]);
        assert!(smooth_weighted_schedule(&[]).is_empty());
    }

    #[test]
    fn huge_weights_are_scaled() {
        let s = smooth_weighted_schedule(&[1_000_000, 3_000_000]);
        assert!(s.len() <= 65_536);
        let zeros = s.iter().filter(|i| **i == 0).count() as f64;
        assert!((zeros / s.len() as f64 - 0.25).abs() < 0.01);
    }
}
